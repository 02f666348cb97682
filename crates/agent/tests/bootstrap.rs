//! Node TLS bootstrap end to end, as kubelet does it: a real agent given only a bootstrap token
//! (`--bootstrap-kubeconfig`) makes its own key, gets `system:node:<name>` certificates for its
//! client and its kubelet port through the CSR API of the embedded control plane (which signs
//! and approves them), rotates them before expiry while the node stays Ready, and authorizes
//! its kubelet port with SubjectAccessReviews (`--authorization-mode=Webhook`).

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node as KNode, Pod};
use kube::api::{Api, ListParams};
use rktup_testkit::agent::*;
use rktup_testkit::{eventually, free_port, unique, wait_for};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A control plane signing for `signing` and an agent that has only a bootstrap token.
struct Boot {
    rt: tokio::runtime::Runtime,
    cp: Option<rktup_controlplane::Handle>,
    node: Node,
    node_name: String,
    port: u16,
    admin: kube::Client,
    kubeconfig: PathBuf,
    cert_dir: PathBuf,
    tmp: tempfile::TempDir,
}

impl Boot {
    fn start(prefix: &str, signing: Duration) -> Boot {
        Boot::start_with(prefix, signing, true)
    }

    /// `approves_serving`: off, the control plane leaves kubelet serving CSRs pending, as
    /// upstream kube-controller-manager does.
    fn start_with(prefix: &str, signing: Duration, approves_serving: bool) -> Boot {
        let rt = tokio::runtime::Runtime::new().expect("tokio");
        let tmp = tempfile::tempdir().expect("tempdir");
        let cp = rt
            .block_on(
                rktup_controlplane::ControlPlane::builder()
                    .data_dir(tmp.path().join("cp"))
                    .bind("127.0.0.1:0".parse().expect("addr"))
                    .csr_signing_duration(signing)
                    // The API server checks the kubelet port's certificate (CA, node address).
                    .verify_kubelet_serving_certs(true)
                    .approve_kubelet_serving_csrs(approves_serving)
                    .start(),
            )
            .expect("control plane");
        let token = cp
            .create_bootstrap_token(Duration::from_secs(3600))
            .expect("bootstrap token");
        let bkc = tmp.path().join("bootstrap.kubeconfig");
        std::fs::write(
            &bkc,
            cp.kubeconfig_for(
                "kubelet-bootstrap",
                &rktup_controlplane::pki::Credential::Token(token),
            ),
        )
        .expect("write bootstrap kubeconfig");
        let node_name = format!("{prefix}-{}", unique());
        let (node, kubeconfig, cert_dir, port) =
            bootstrapped_agent(tmp.path(), &bkc, &node_name, &[]);
        let admin = rt.block_on(admin_client(&cp));
        Boot {
            rt,
            cp: Some(cp),
            node,
            node_name,
            port,
            admin,
            kubeconfig,
            cert_dir,
            tmp,
        }
    }

    fn wait_ready(&self) {
        let nodes: Api<KNode> = Api::all(self.admin.clone());
        let (nodes, name) = (&nodes, self.node_name.as_str());
        self.rt.block_on(eventually(
            "the bootstrapped node Ready",
            Duration::from_secs(60),
            || async move {
                let n = nodes.get_opt(name).await.ok().flatten()?;
                n.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
                    .then_some(())
            },
        ));
    }

    fn csrs(&self) -> Vec<CertificateSigningRequest> {
        let api: Api<CertificateSigningRequest> = Api::all(self.admin.clone());
        self.rt
            .block_on(api.list(&ListParams::default()))
            .expect("list CSRs")
            .items
    }

    /// The end: pods deleted and gone from the node, the control plane stopped; the agent's log
    /// printed when anything failed.
    fn finish(&mut self, r: std::thread::Result<()>) {
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), "default");
        self.rt.block_on(async {
            if let Ok(l) = pods.list(&Default::default()).await {
                for p in l.items {
                    if let Some(n) = p.metadata.name {
                        let _ = pods.delete(&n, &Default::default()).await;
                    }
                }
            }
        });
        let cleaned =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.node.wait_no_pods(60)));
        if r.is_err() || cleaned.is_err() {
            eprintln!("agent log:\n{}", self.node.agent_log());
        }
        if let Some(cp) = self.cp.take() {
            self.rt.block_on(cp.shutdown());
        }
        if let Err(e) = r {
            std::panic::resume_unwind(e);
        }
        assert!(cleaned.is_ok(), "pods left on the node");
    }
}

/// An agent that has only the bootstrap kubeconfig `bkc`, named `node_name`, its files under
/// `dir/<node_name>`: (the agent, its kubeconfig, its cert dir, its kubelet port).
fn bootstrapped_agent(
    dir: &Path,
    bkc: &Path,
    node_name: &str,
    extra: &[&str],
) -> (Node, PathBuf, PathBuf, u16) {
    let kubeconfig = dir.join(node_name).join("kubelet.kubeconfig");
    let cert_dir = dir.join(node_name).join("pki");
    std::fs::create_dir_all(dir.join(node_name)).expect("agent dir");
    let port = free_port();
    let s = |p: &Path| p.display().to_string();
    let (bkc_s, kc_s, cd_s, port_s) = (s(bkc), s(&kubeconfig), s(&cert_dir), port.to_string());
    let mut args = vec![
        "--bootstrap-kubeconfig",
        &bkc_s,
        "--kubeconfig",
        &kc_s,
        "--cert-dir",
        &cd_s,
        "--rotate-certificates",
        "--rotate-server-certificates",
        "--authorization-mode=Webhook",
        "--hostname-override",
        node_name,
        "--node-ip",
        "127.0.0.1",
        "--node-status-update-frequency",
        "1",
        "--kubelet-port",
        &port_s,
    ];
    args.extend_from_slice(extra);
    (Node::new(&args), kubeconfig, cert_dir, port)
}

/// (DER certificates, PEM text) of a `<prefix>-current.pem`.
fn read_pair(dir: &Path, prefix: &str) -> Option<(Vec<CertificateDer<'static>>, String)> {
    let text = std::fs::read_to_string(dir.join(format!("{prefix}-current.pem"))).ok()?;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    (!certs.is_empty()).then_some((certs, text))
}

/// (CN, O's, notBefore, notAfter) of a DER certificate.
fn subject(der: &[u8]) -> (String, Vec<String>, i64, i64) {
    let (not_before, not_after, cn, o) =
        rktup_agent::kubelet::certificate::cert_info(der).expect("x509");
    (cn, o, not_before, not_after)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[test]
fn a_node_with_only_a_bootstrap_token_joins_with_its_own_key() {
    if !rktup_testkit::can_run_as_root("bootstrap", "pods and their networks") {
        return;
    }
    let mut b = Boot::start("tb", Duration::from_secs(24 * 3600));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        b.wait_ready();
        // The kubeconfig the agent wrote names its own pair, private to root.
        assert_eq!(mode(&b.kubeconfig), 0o600, "kubeconfig mode");
        let kc = std::fs::read_to_string(&b.kubeconfig).expect("kubeconfig");
        let current = b.cert_dir.join("kubelet-client-current.pem");
        assert!(kc.contains(&current.display().to_string()), "{kc}");
        let target = std::fs::canonicalize(&current).expect("current pair");
        assert_eq!(mode(&target), 0o600, "{} mode", target.display());
        let (certs, pem) = read_pair(&b.cert_dir, "kubelet-client").expect("client pair");
        let (cn, o, _, _) = subject(&certs[0]);
        assert_eq!(cn, format!("system:node:{}", b.node_name));
        assert_eq!(o, vec!["system:nodes".to_string()]);

        // The key never reached the API: the CSRs carry only requests, and no byte of the
        // key's DER (as base64 in any object) is in them.
        let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("key in the pair");
        let key_b64: String = pem
            .lines()
            .skip_while(|l| !l.contains("PRIVATE KEY"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----"))
            .collect();
        assert!(key_b64.len() > 40 && !key.secret_der().is_empty());
        let csrs = b.csrs();
        let all = serde_json::to_string(&csrs).expect("json");
        assert!(
            !all.contains(&key_b64[..40]),
            "the key's base64 is in the API"
        );
        let client_csr = csrs
            .iter()
            .find(|c| {
                c.spec.signer_name == "kubernetes.io/kube-apiserver-client-kubelet"
                    && c.spec
                        .username
                        .as_deref()
                        .is_some_and(|u| u.starts_with("system:bootstrap:"))
            })
            .unwrap_or_else(|| panic!("no bootstrap CSR in {all}"));
        let request = String::from_utf8_lossy(&client_csr.spec.request.0).into_owned();
        assert!(request.contains("BEGIN CERTIFICATE REQUEST"), "{request}");
        assert!(!request.contains("PRIVATE KEY"));
        assert_eq!(
            client_csr.spec.usages.clone().unwrap_or_default(),
            vec!["digital signature".to_string(), "client auth".into()]
        );
        assert!(client_csr
            .metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("node-csr-")));

        // The kubelet port serves the certificate the kubelet-serving signer issued to the
        // node (asked for with the node's own credentials).
        let (serving, _) = wait_for("the serving certificate", Duration::from_secs(60), || {
            read_pair(&b.cert_dir, "kubelet-server")
        });
        let (scn, so, _, _) = subject(&serving[0]);
        assert_eq!(scn, format!("system:node:{}", b.node_name));
        assert_eq!(so, vec!["system:nodes".to_string()]);
        assert!(b.csrs().iter().any(|c| {
            c.spec.signer_name == "kubernetes.io/kubelet-serving"
                && c.spec.username.as_deref() == Some(&format!("system:node:{}", b.node_name))
        }));
        let anon = wait_for(
            "the port serving the issued cert",
            Duration::from_secs(30),
            || {
                call(b.port, "GET", "/healthz", None)
                    .ok()
                    .filter(|a| a.server_cert == serving[0].as_ref())
            },
        );
        // No client certificate: 401, as kubelet with anonymous auth off.
        assert_eq!(anon.status, 401, "{}", anon.body);

        // An admin's kubectl logs and exec go through the API server's kubelet client, which
        // verifies this certificate and is authorized by the SubjectAccessReview.
        let busybox = b.node.busybox.clone();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "talk"},
            "spec": {
                "nodeName": b.node_name,
                "hostNetwork": true,
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": busybox,
                                "command": ["sh", "-c", "echo hello-bootstrap; exec sleep 1000"]}]
            }
        }))
        .expect("pod");
        run_pod(&b.rt, &b.admin, &pod);
        let admin_kc = b.cp.as_ref().expect("cp").admin_kubeconfig().to_path_buf();
        let cache = b.tmp.path().join("kubectl-cache");
        let logs = kubectl(&admin_kc, &cache, &["logs", "talk"], None);
        assert!(
            logs.ok() && logs.stdout.contains("hello-bootstrap"),
            "logs: {} {}",
            logs.stdout,
            logs.stderr
        );
        let exec = kubectl(
            &admin_kc,
            &cache,
            &["exec", "talk", "--", "echo", "exec-ok"],
            None,
        );
        assert!(
            exec.ok() && exec.stdout.contains("exec-ok"),
            "exec: {} {}",
            exec.stdout,
            exec.stderr
        );

        // Another node's identity (a valid certificate of the cluster CA) may not use this
        // node's kubelet port: kubelet's 403.
        let other = format!("other-{}", unique());
        let pair =
            b.cp.as_ref()
                .expect("cp")
                .issue_node_cert(&other)
                .expect("other node cert");
        for (method, path) in [
            ("GET", "/exec/default/talk/c?command=id&output=1"),
            ("POST", "/exec/default/talk/c?command=id&output=1"),
            ("GET", "/containerLogs/default/talk/c"),
        ] {
            let a =
                call(b.port, method, path, Some((&pair.cert_pem, &pair.key_pem))).expect("call");
            let verb = if method == "GET" { "get" } else { "create" };
            assert_eq!(a.status, 403, "{method} {path}: {}", a.body);
            assert_eq!(
                a.body,
                format!(
                    "Forbidden (user=system:node:{other}, verb={verb}, resource=nodes, \
                     subresource(s)=[proxy])"
                )
            );
        }
        // Nor unauthenticated.
        let a = call(
            b.port,
            "GET",
            "/exec/default/talk/c?command=id&output=1",
            None,
        )
        .expect("call");
        assert_eq!(a.status, 401, "{}", a.body);
    }));
    b.finish(r);
}

#[test]
fn certificates_rotate_while_the_node_stays_ready() {
    if !rktup_testkit::can_run_as_root("rotation", "pods and their networks") {
        return;
    }
    // 40 s certificates: renewed 28-36 s after they were issued.
    let mut b = Boot::start("tr", Duration::from_secs(40));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        b.wait_ready();
        let (first, _) = read_pair(&b.cert_dir, "kubelet-client").expect("client pair");
        let (serving, _) = wait_for("the serving certificate", Duration::from_secs(60), || {
            read_pair(&b.cert_dir, "kubelet-server")
        });
        let (_, _, nb, na) = subject(&first[0]);
        assert!(na - nb <= 40 + 300, "lifetime {}", na - nb);
        let (next, _) = wait_for(
            "a rotated client certificate",
            Duration::from_secs(90),
            || read_pair(&b.cert_dir, "kubelet-client").filter(|(c, _)| c[0] != first[0]),
        );
        let (cn, _, _, _) = subject(&next[0]);
        assert_eq!(cn, format!("system:node:{}", b.node_name));
        // Renewed with the node's own credentials (selfnodeclient), not the bootstrap token.
        let me = format!("system:node:{}", b.node_name);
        assert!(b.csrs().iter().any(|c| {
            c.spec.signer_name == "kubernetes.io/kube-apiserver-client-kubelet"
                && c.spec.username.as_deref() == Some(me.as_str())
        }));
        let (renewed, _) = wait_for(
            "a rotated serving certificate",
            Duration::from_secs(90),
            || read_pair(&b.cert_dir, "kubelet-server").filter(|(c, _)| c[0] != serving[0]),
        );
        // The port serves the renewed one at once (read per handshake).
        wait_for(
            "the port serving the renewed certificate",
            Duration::from_secs(10),
            || {
                call(b.port, "GET", "/healthz", None)
                    .ok()
                    .filter(|a| a.server_cert == renewed[0].as_ref())
            },
        );
        // After the old certificate expired, the node still heartbeats (its new certificate is
        // in use without a restart) and is Ready.
        let (_, _, _, first_end) = subject(&first[0]);
        let leases: Api<Lease> = Api::namespaced(b.admin.clone(), "kube-node-lease");
        let (leases, name) = (&leases, b.node_name.as_str());
        b.rt.block_on(eventually(
            "a Lease renewal after the first certificate expired",
            Duration::from_secs(90),
            || async move {
                let l = leases.get_opt(name).await.ok().flatten()?;
                let t = l.spec?.renew_time?.0.as_second();
                (t > first_end + 2).then_some(())
            },
        ));
        b.wait_ready();
        let agent = b.node.agent.as_mut().expect("agent");
        assert!(
            agent.try_wait().expect("agent status").is_none(),
            "the agent exited"
        );
        assert!(b.node.agent_log().contains("kubelet-client rotated"));
        // Renewed once per lifetime, not in a loop (the signer backdates notBefore by minutes,
        // which a 40 s certificate's 70-90 % point must not fall before).
        let renewals = b
            .csrs()
            .iter()
            .filter(|c| {
                c.spec.signer_name == "kubernetes.io/kube-apiserver-client-kubelet"
                    && c.spec.username.as_deref() == Some(me.as_str())
            })
            .count();
        assert!((1..=4).contains(&renewals), "{renewals} client renewals");
    }));
    b.finish(r);
}

#[test]
fn an_agent_restarted_after_its_certificate_expired_bootstraps_again() {
    if !rktup_testkit::can_run_as_root("re-bootstrap", "pods and their networks") {
        return;
    }
    let mut b = Boot::start("tx", Duration::from_secs(20));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        b.wait_ready();
        b.node.kill_agent();
        // Whatever the agent had by now (a renewal may have happened) runs out while it is down.
        let (had, _) = read_pair(&b.cert_dir, "kubelet-client").expect("client pair");
        let (_, _, _, end) = subject(&had[0]);
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default()
        };
        while now() <= end + 1 {
            std::thread::sleep(Duration::from_millis(250));
        }
        let bootstraps = |b: &Boot| {
            b.csrs()
                .iter()
                .filter(|c| {
                    c.spec
                        .username
                        .as_deref()
                        .is_some_and(|u| u.starts_with("system:bootstrap:"))
                })
                .count()
        };
        let before = bootstraps(&b);
        b.node.start_agent();
        let (fresh, _) = wait_for("a new client certificate", Duration::from_secs(60), || {
            read_pair(&b.cert_dir, "kubelet-client").filter(|(c, _)| c[0] != had[0])
        });
        let (cn, _, nb, na) = subject(&fresh[0]);
        assert_eq!(cn, format!("system:node:{}", b.node_name));
        assert!(
            nb <= now() && now() < na,
            "the new certificate is valid now"
        );
        // Asked for with the bootstrap token (the expired certificate cannot authenticate).
        assert_eq!(
            bootstraps(&b),
            before + 1,
            "one more bootstrap CSR: {:#?}\n{}",
            b.csrs()
                .iter()
                .map(|c| (c.metadata.name.clone(), c.spec.username.clone()))
                .collect::<Vec<_>>(),
            b.node.agent_log()
        );
        b.wait_ready();
    }));
    b.finish(r);
}

fn approved_by_rktup(c: &CertificateSigningRequest) -> bool {
    c.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "Approved"
                    && c.reason.as_deref() == Some("AutoApproved")
                    && c.message
                        .as_deref()
                        .is_some_and(|m| m.contains("own addresses"))
            })
        })
}

fn pending(c: &CertificateSigningRequest) -> bool {
    c.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_none_or(|cs| cs.is_empty())
}

/// Issue 16, the cloud master's shape: a control plane that, like upstream
/// kube-controller-manager, signs kubelet serving CSRs but never approves them; a node's kubelet
/// port then serves a self-signed certificate the API server (checking kubelets' certificates)
/// refuses. The master's agent (`--approve-kubelet-serving-csrs`, its node identity bound to the
/// approver's ClusterRole as the master's first boot binds it) approves the node's request for
/// its own addresses — and its own — and leaves a request for another address pending.
#[test]
fn the_master_agent_approves_serving_certificates_for_nodes_own_addresses_only() {
    if !rktup_testkit::can_run_as_root("serving approver", "pods and their networks") {
        return;
    }
    let mut b = Boot::start_with("tsa", Duration::from_secs(24 * 3600), false);
    let mut master: Option<Node> = None;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        b.wait_ready();
        let serving_of = |user: &str| {
            let user = user.to_string();
            move |c: &&CertificateSigningRequest| {
                c.spec.signer_name == "kubernetes.io/kubelet-serving"
                    && c.spec.username.as_deref() == Some(user.as_str())
            }
        };
        let node_user = format!("system:node:{}", b.node_name);
        wait_for("the node's serving CSR", Duration::from_secs(30), || {
            b.csrs().iter().find(serving_of(&node_user)).cloned()
        });
        // The node's identity asks for a certificate naming an address that is not its own.
        let cp = b.cp.as_ref().expect("cp");
        let node_cred = rktup_controlplane::pki::Credential::Cert(
            cp.issue_node_cert(&b.node_name).expect("node cert"),
        );
        let (_, foreign_csr) = rktup_agent::kubelet::certificate::make_csr(
            &rktup_agent::kubelet::certificate::Request::serving(
                &b.node_name,
                vec![b.node_name.clone(), "10.9.9.9".into()],
            ),
        )
        .expect("csr");
        let foreign = CertificateSigningRequest {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("foreign-{}", unique())),
                ..Default::default()
            },
            spec: k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec {
                signer_name: "kubernetes.io/kubelet-serving".into(),
                request: k8s_openapi::ByteString(foreign_csr.into_bytes()),
                usages: Some(vec!["digital signature".into(), "server auth".into()]),
                ..Default::default()
            },
            status: None,
        };
        let foreign_name = foreign.metadata.name.clone().expect("name");
        b.rt.block_on(async {
            let api: Api<CertificateSigningRequest> =
                Api::all(client_for(cp, &node_user, &node_cred).await);
            api.create(&Default::default(), &foreign)
                .await
                .expect("the node creates a CSR")
        });
        // Nobody approves yet: the control plane leaves serving CSRs to an approver.
        std::thread::sleep(Duration::from_secs(3));
        let now = b.csrs();
        assert!(
            now.iter().filter(serving_of(&node_user)).all(pending),
            "approved without an approver: {now:?}"
        );
        assert!(read_pair(&b.cert_dir, "kubelet-server").is_none());

        // The master's agent: a node identity like the others, bound to the approver's role
        // (templates/bootstrap/apiserver-kubelet.yaml.tera binds it on a cloud master).
        let master_name = format!("tsa-master-{}", unique());
        let admin = b.admin.clone();
        b.rt.block_on(async {
            use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
            let role: ClusterRole = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("approver-{master_name}")},
                "rules": [
                    {"apiGroups": ["certificates.k8s.io"],
                     "resources": ["certificatesigningrequests"], "verbs": ["get", "list", "watch"]},
                    {"apiGroups": ["certificates.k8s.io"],
                     "resources": ["certificatesigningrequests/approval"], "verbs": ["update", "patch"]},
                    {"apiGroups": ["certificates.k8s.io"], "resources": ["signers"],
                     "resourceNames": ["kubernetes.io/kubelet-serving"], "verbs": ["approve"]},
                    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}
                ]
            }))
            .expect("role");
            let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("approver-{master_name}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": format!("approver-{master_name}")},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                              "name": format!("system:node:{master_name}")}]
            }))
            .expect("binding");
            Api::<ClusterRole>::all(admin.clone())
                .create(&Default::default(), &role)
                .await
                .expect("role");
            Api::<ClusterRoleBinding>::all(admin.clone())
                .create(&Default::default(), &binding)
                .await
                .expect("binding");
        });
        let bkc = b.tmp.path().join("bootstrap.kubeconfig");
        let (m, _, master_certs, _) = bootstrapped_agent(
            b.tmp.path(),
            &bkc,
            &master_name,
            &["--approve-kubelet-serving-csrs"],
        );
        master = Some(m);

        // The node's request is approved (by the master's agent: its message) and signed; the
        // node's port serves the issued certificate, which the API server accepts.
        let (serving, _) = wait_for(
            "the node's serving certificate",
            Duration::from_secs(60),
            || read_pair(&b.cert_dir, "kubelet-server"),
        );
        assert_eq!(subject(&serving[0]).0, node_user);
        let csrs = b.csrs();
        assert!(
            csrs.iter()
                .filter(serving_of(&node_user))
                .any(approved_by_rktup),
            "{csrs:?}"
        );
        // The master's own request too.
        wait_for(
            "the master's serving certificate",
            Duration::from_secs(60),
            || read_pair(&master_certs, "kubelet-server"),
        );
        // The one naming another address stays pending: it was there before the approver's
        // first pass, which approved the node's own request.
        let foreign = b
            .csrs()
            .into_iter()
            .find(|c| c.metadata.name.as_deref() == Some(foreign_name.as_str()))
            .expect("the foreign CSR");
        assert!(pending(&foreign), "{foreign:?}");
        let healthz = wait_for(
            "the API server reaching the node's kubelet port",
            Duration::from_secs(30),
            || {
                b.rt.block_on(async {
                    let req =
                        http::Request::get(format!("/api/v1/nodes/{}/proxy/healthz", b.node_name))
                            .body(Vec::new())
                            .ok()?;
                    b.admin.request_text(req).await.ok()
                })
            },
        );
        assert_eq!(healthz, "ok");
    }));
    if let Some(mut m) = master.take() {
        if r.is_err() {
            eprintln!("master agent log:\n{}", m.agent_log());
        }
        m.kill_agent();
    }
    b.finish(r);
}
