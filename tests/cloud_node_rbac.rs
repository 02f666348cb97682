//! Issue 14 on cloud masters: what the agent's service proxy and cluster DNS read under the
//! node's identity is granted by the RBAC objects the master applies at first boot
//! (`/etc/kubernetes/bootstrap/node-services.yaml`), and nothing more.
//!
//! Upstream kube-apiserver (`--authorization-mode=Node,RBAC`, as the rendered master runs it)
//! gives a node only kubelet's rules through the Node authorizer; everything else is RBAC on
//! the group `system:nodes`. The embedded control plane's Node authorizer is broader on reads
//! (local clusters need no bindings), so the RBAC half is judged on its own here: a user the
//! Node authorizer ignores (`cloud-rbac-probe`) in group `system:nodes` gets exactly what a
//! cloud node gets from RBAC. The rendered master's files are applied to a real `rktup
//! controlplane` with the real kubectl, as the master's `node-bootstrap` static pod applies
//! them (`kubectl apply --validate=false --filename=/etc/kubernetes/bootstrap/`), and judged
//! by `kubectl auth can-i` (SelfSubjectAccessReview under impersonation) and real lists.

use rktup_config::{GlobalArgs, Provider};
use rktup_provider::boot::{render_boot, PkiOrigin};
use rktup_provider::state::apiserver_names;
use rktup_provider::ClusterProvider;
use rktup_render::{Pki, Role, Templates};
use rktup_testkit::{can_run, spawn_listening, unique, wait_for, KUBECTL};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

/// What the agent reads for Services (verb, resource as `kubectl auth can-i` names it), from
/// the watches the code starts:
/// - crates/proxy `run`: Services, EndpointSlices (all namespaces), its own Node (a
///   `metadata.name` field selector: a list + watch of nodes);
/// - crates/dns `watch::start`: Services, EndpointSlices, Namespaces.
const READS: [(&str, &str); 9] = [
    ("list", "services"),
    ("watch", "services"),
    ("list", "endpointslices.discovery.k8s.io"),
    ("watch", "endpointslices.discovery.k8s.io"),
    ("list", "nodes"),
    ("watch", "nodes"),
    ("get", "nodes"),
    ("list", "namespaces"),
    ("watch", "namespaces"),
];

/// What no node may do through these bindings.
const NEVER: [(&str, &str); 12] = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("create", "secrets"),
    ("list", "configmaps"),
    ("create", "services"),
    ("delete", "services"),
    ("update", "endpointslices.discovery.k8s.io"),
    ("create", "pods/exec"),
    ("delete", "namespaces"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("impersonate", "users"),
    ("list", "serviceaccounts"),
];

/// A `rktup controlplane` process, killed when dropped.
struct ControlPlane {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ControlPlane {
    fn start() -> ControlPlane {
        ControlPlane::start_with(None, &[])
    }

    /// A control plane whose CA is `ca` (`ca.crt`, `ca.key` PEM) when given — the rendered
    /// PKI's, so the rendered master's client certificates are this control plane's users — with
    /// `extra` arguments.
    fn start_with(ca: Option<(&str, &str)>, extra: &[String]) -> ControlPlane {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("cp");
        if let Some((crt, key)) = ca {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data.join("pki"))
                .unwrap();
            for (name, text) in [("ca.crt", crt), ("ca.key", key)] {
                std::fs::OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .mode(0o600)
                    .open(data.join("pki").join(name))
                    .unwrap()
                    .write_all(text.as_bytes())
                    .unwrap();
            }
        }
        let log = dir.path().join("controlplane.log");
        let (child, port) = spawn_listening("rktup controlplane", Duration::from_secs(60), |p| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_rktup"));
            cmd.arg("controlplane")
                .arg("--data-dir")
                .arg(&data)
                .arg("--secure-port")
                .arg(p.to_string())
                .args(extra)
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::create(&log).unwrap());
            cmd
        });
        let cp = ControlPlane { child, dir, port };
        wait_for(
            "the control plane's /readyz",
            Duration::from_secs(60),
            || {
                (cp.admin().exists() && cp.kubectl(&["get", "--raw", "/readyz"]).status.success())
                    .then_some(())
            },
        );
        cp
    }

    fn admin(&self) -> std::path::PathBuf {
        self.dir.path().join("cp/admin.kubeconfig")
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(self.admin())
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// `kubectl auth can-i VERB RESOURCE` as `user` in `system:nodes` (all namespaces).
    fn can_i(&self, user: &str, verb: &str, resource: &str) -> bool {
        self.can_i_in(user, Some("system:nodes"), verb, resource)
    }

    /// `kubectl auth can-i VERB RESOURCE` as `user`, in `group` if given (all namespaces). A
    /// `resource/subresource` is asked with `--subresource` (kubectl reads `TYPE/NAME`
    /// otherwise).
    fn can_i_in(&self, user: &str, group: Option<&str>, verb: &str, resource: &str) -> bool {
        let (resource, sub) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (resource, None),
        };
        let mut args = vec![
            "auth".to_string(),
            "can-i".into(),
            verb.into(),
            resource.into(),
            "--all-namespaces".into(),
            format!("--as={user}"),
        ];
        args.extend(sub.map(|s| format!("--subresource={s}")));
        args.extend(group.map(|g| format!("--as-group={g}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = self.kubectl(&args);
        let answer = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert!(
            answer == "yes" || answer == "no",
            "can-i {verb} {resource} as {user}: {answer:?} {}",
            String::from_utf8_lossy(&o.stderr)
        );
        answer == "yes"
    }
}

/// The master's first-boot objects as `rktup render gce --role master` writes them.
fn rendered_bootstrap_dir(into: &Path) -> Vec<String> {
    rendered_cluster(into).files
}

/// What `rktup render gce` makes for one cluster: the master's first-boot objects written
/// into `into` (their names in `files`), the master's and a node's rendering, the PKI.
struct Rendered {
    files: Vec<String>,
    master: rktup_render::NodeConfig,
    node: rktup_render::NodeConfig,
    gce: rktup_gce::Gce,
    pki: Pki,
}

fn rendered_cluster(into: &Path) -> Rendered {
    let state = tempfile::tempdir().unwrap();
    let env: BTreeMap<&str, String> = [
        ("RKTUP_STATE_DIR", state.path().display().to_string()),
        ("RKTUP_BINARY_URL", "https://example.invalid/rktup".into()),
        ("RKTUP_BINARY_SHA256", "0".repeat(64)),
        ("PROJECT", "rbac-project".into()),
    ]
    .into_iter()
    .collect();
    let lookup = |k: &str| env.get(k).cloned();
    let settings = rktup_config::load(
        Provider::Gce,
        &GlobalArgs::default(),
        &BTreeMap::new(),
        &lookup,
    )
    .unwrap();
    let gce = rktup_gce::Gce::new(settings);
    let names = apiserver_names(gce.settings(), &gce.master_endpoint().name, &[]);
    let pki = Pki::generate("rbac", &names).unwrap();
    let templates = Templates::embedded().unwrap();
    let boot = render_boot(&gce, &templates, Role::Master, &pki, PkiOrigin::Ephemeral).unwrap();
    // The static pod that applies them, and what it applies.
    let apply = boot
        .config
        .files
        .iter()
        .find(|f| f.path == "/etc/kubernetes/manifests/node-bootstrap.yaml")
        .expect("the node-bootstrap static pod");
    assert!(
        apply
            .content
            .contains("--filename=/etc/kubernetes/bootstrap/"),
        "{}",
        apply.content
    );
    std::fs::create_dir_all(into).unwrap();
    let mut written = Vec::new();
    for f in &boot.config.files {
        if let Some(name) = f.path.strip_prefix("/etc/kubernetes/bootstrap/") {
            // The master's first boot writes the bootstrap token's expiry (a day on) where the
            // rendering has a placeholder; so does this.
            let content = if f.content.contains("@BOOTSTRAP_TOKEN_EXPIRATION@") {
                let day = Command::new("date")
                    .args(["-u", "-d", "+24 hours", "+%Y-%m-%dT%H:%M:%SZ"])
                    .output()
                    .expect("date");
                f.content.replace(
                    "@BOOTSTRAP_TOKEN_EXPIRATION@",
                    String::from_utf8_lossy(&day.stdout).trim(),
                )
            } else {
                f.content.clone()
            };
            std::fs::write(into.join(name), content).unwrap();
            written.push(name.to_string());
        }
    }
    written.sort();
    let node = render_boot(&gce, &templates, Role::Node, &pki, PkiOrigin::Ephemeral).unwrap();
    Rendered {
        files: written,
        master: boot.config,
        node: node.config,
        gce,
        pki,
    }
}

#[test]
fn cloud_nodes_read_what_proxy_and_dns_need_and_no_more() {
    if !can_run(
        "cloud_nodes_read_what_proxy_and_dns_need_and_no_more",
        (!Path::new(KUBECTL).exists()).then_some("kubectl at /usr/bin/kubectl"),
    ) {
        return;
    }
    let cp = ControlPlane::start();
    let probe = "cloud-rbac-probe";

    // Before the master's objects: RBAC alone gives group system:nodes none of it.
    for (verb, resource) in [
        ("list", "endpointslices.discovery.k8s.io"),
        ("watch", "namespaces"),
        ("list", "nodes"),
    ] {
        assert!(
            !cp.can_i(probe, verb, resource),
            "{verb} {resource} granted before any binding"
        );
    }

    let dir = cp.dir.path().join("bootstrap");
    let files = rendered_bootstrap_dir(&dir);
    assert_eq!(
        files,
        [
            "apiserver-kubelet.yaml",
            "node-bootstrap.yaml",
            "node-services.yaml"
        ]
    );
    let o = cp.kubectl(&[
        "apply",
        "--validate=false",
        &format!("--filename={}/", dir.display()),
    ]);
    assert!(
        o.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let applied = String::from_utf8_lossy(&o.stdout);
    for object in [
        "clusterrole.rbac.authorization.k8s.io/system:coredns",
        "clusterrolebinding.rbac.authorization.k8s.io/rktup:node-proxier",
        "clusterrolebinding.rbac.authorization.k8s.io/rktup:node-dns",
    ] {
        assert!(applied.contains(object), "{object} in {applied}");
    }

    // RBAC alone (the probe) and a node's own identity (Node authorizer, then RBAC) both read
    // everything the proxy and DNS watch, and neither may do what a node must not.
    for user in [probe, "system:node:n1"] {
        for (verb, resource) in READS {
            assert!(
                cp.can_i(user, verb, resource),
                "{user} may not {verb} {resource}"
            );
        }
        for (verb, resource) in NEVER {
            assert!(
                !cp.can_i(user, verb, resource),
                "{user} may {verb} {resource}"
            );
        }
    }

    // And the lists themselves, as the watches start them.
    for resource in [
        "services",
        "endpointslices.discovery.k8s.io",
        "namespaces",
        "nodes",
    ] {
        let o = cp.kubectl(&[
            "get",
            resource,
            "--all-namespaces",
            &format!("--as={probe}"),
            "--as-group=system:nodes",
        ]);
        assert!(
            o.status.success(),
            "list {resource}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = cp.kubectl(&[
        "get",
        "secrets",
        "--all-namespaces",
        &format!("--as={probe}"),
        "--as-group=system:nodes",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "User \"{probe}\" cannot list resource \"secrets\""
        )),
        "{err}"
    );
}

/// An HTTPS request to a kubelet port with curl, verifying its serving certificate against
/// `ca` and presenting `client` (certificate and key files) if given: the status code and body,
/// or curl's error (a TLS failure, say).
fn kubelet_call(
    port: u16,
    method: &str,
    path: &str,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<(u16, String), String> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        "--request",
        method,
    ])
    .arg("--cacert")
    .arg(ca)
    .args(["--write-out", "\n%{http_code}"]);
    if let Some((crt, key)) = client {
        cmd.arg("--cert").arg(crt).arg("--key").arg(key);
    }
    let o = cmd
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("run curl");
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').ok_or_else(|| out.clone())?;
    Ok((
        code.trim().parse().map_err(|_| out.clone())?,
        body.to_string(),
    ))
}

/// A `rktup agent` process, killed when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 16 on cloud kubelets: the node's agent, started with the rendered flags
/// (`--authorization-mode=Webhook`, `--authentication-token-webhook`, the cluster CA as client
/// CA, TLS bootstrap with the rendered token, a kubelet-serving certificate), serves the API
/// server's kubelet client — whose rendered certificate has no group and whose rights come
/// from the master's rendered `system:kubelet-api-admin` binding — and refuses any other
/// certificate of the cluster CA (403) and callers without one (401). The control plane runs
/// with the rendered PKI's CA (the rendered master's client certificates are its users) and
/// verifies the kubelet's serving certificate (`--kubelet-certificate-authority`), as kubectl's
/// way to a kubelet goes.
#[test]
fn cloud_kubelet_port_serves_the_api_servers_kubelet_client_and_no_other() {
    let name = "cloud_kubelet_port_serves_the_api_servers_kubelet_client_and_no_other";
    if !can_run(
        name,
        (!Path::new(KUBECTL).exists()).then_some("kubectl at /usr/bin/kubectl"),
    ) || !rktup_testkit::can_run_as_root(name, "a node agent")
    {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let r = rendered_cluster(&work.path().join("bootstrap"));
    let pki_dir = work.path().join("pki");
    std::fs::create_dir_all(&pki_dir).unwrap();
    let file = |n: &str| -> std::path::PathBuf {
        use std::os::unix::fs::OpenOptionsExt;
        let p = pki_dir.join(n);
        if !p.exists() {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&p)
                .unwrap()
                .write_all(r.pki.get(n).as_bytes())
                .unwrap();
        }
        p
    };
    let ca = file("ca.crt");
    let pair = |n: &str| (file(&format!("{n}.crt")), file(&format!("{n}.key")));

    // The rendered API server's kubelet client: CN kube-apiserver-kubelet-client, no group.
    let apiserver = r
        .master
        .files
        .iter()
        .find(|f| f.path == "/etc/kubernetes/manifests/kube-apiserver.yaml")
        .expect("kube-apiserver.yaml");
    for flag in [
        "--kubelet-client-certificate=/etc/kubernetes/pki/apiserver-kubelet-client.crt",
        "--kubelet-client-key=/etc/kubernetes/pki/apiserver-kubelet-client.key",
    ] {
        assert!(apiserver.content.contains(flag), "{flag}");
    }
    let subject = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(file("apiserver-kubelet-client.crt"))
        .output()
        .expect("openssl");
    assert_eq!(
        String::from_utf8_lossy(&subject.stdout).trim(),
        "subject=CN=kube-apiserver-kubelet-client",
        "{}",
        String::from_utf8_lossy(&subject.stderr)
    );

    let cp = ControlPlane::start_with(
        Some((r.pki.get("ca.crt"), r.pki.get("ca.key"))),
        &[format!("--kubelet-certificate-authority={}", ca.display())],
    );
    // The control plane's own binding for this user goes: only the rendered one may grant.
    let o = cp.kubectl(&[
        "delete",
        "clusterrolebinding",
        "kube-apiserver-kubelet-api-admin",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let client = "kube-apiserver-kubelet-client";
    assert!(!cp.can_i_in(client, None, "get", "nodes/proxy"));
    let o = cp.kubectl(&[
        "apply",
        "--validate=false",
        &format!("--filename={}/", work.path().join("bootstrap").display()),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let applied = String::from_utf8_lossy(&o.stdout);
    assert!(
        applied.contains(
            "clusterrolebinding.rbac.authorization.k8s.io/kube-apiserver-kubelet-api-admin created"
        ),
        "{applied}"
    );
    // What the API server does on kubelets: logs, exec/attach/port-forward (create on
    // nodes/proxy), stats, metrics — and nothing of system:masters.
    for (verb, resource) in [
        ("get", "nodes/proxy"),
        ("create", "nodes/proxy"),
        ("get", "nodes/log"),
        ("get", "nodes/stats"),
        ("get", "nodes/metrics"),
    ] {
        assert!(
            cp.can_i_in(client, None, verb, resource),
            "{client} may not {verb} {resource}"
        );
    }
    for (verb, resource) in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("create", "pods"),
        ("create", "pods/exec"),
        ("delete", "nodes"),
        ("impersonate", "users"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ] {
        assert!(
            !cp.can_i_in(client, None, verb, resource),
            "{client} may {verb} {resource}"
        );
    }
    // The master's agent is a node like the others (TLS bootstrap, `system:node:<master>`),
    // plus the serving approver's role: read CSRs and approve for the kubelet-serving signer
    // only (upstream kube-controller-manager never approves those). Other nodes may not.
    assert!(
        applied.contains(
            "clusterrolebinding.rbac.authorization.k8s.io/rktup:kubelet-serving-approver created"
        ),
        "{applied}"
    );
    let master = format!("system:node:{}", r.gce.master_endpoint().name);
    let other_node = "system:node:rbac-other-node";
    // A SubjectAccessReview of `approve` on signers/<signer> (what the API server asks when
    // an approval names the signer). Not `kubectl auth can-i`: no server lists `signers` in
    // discovery, so kubectl would send the resource without its group.
    let approve = |user: &str, signer: &str| {
        let review = work.path().join(format!("sar-{}.json", unique()));
        let sar = serde_json::json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": ["system:nodes", "system:authenticated"],
                     "resourceAttributes": {"group": "certificates.k8s.io", "resource": "signers",
                                            "verb": "approve", "name": signer}}
        });
        std::fs::write(&review, sar.to_string()).unwrap();
        let o = cp.kubectl(&[
            "create",
            "-f",
            &review.display().to_string(),
            "-o",
            "jsonpath={.status.allowed}",
        ]);
        let answer = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert!(
            o.status.success(),
            "review of approve {signer} as {user}: {answer:?} {}",
            String::from_utf8_lossy(&o.stderr)
        );
        answer == "true"
    };
    assert!(approve(&master, "kubernetes.io/kubelet-serving"));
    assert!(!approve(
        &master,
        "kubernetes.io/kube-apiserver-client-kubelet"
    ));
    assert!(!approve(other_node, "kubernetes.io/kubelet-serving"));
    for (verb, resource) in [
        (
            "update",
            "certificatesigningrequests.certificates.k8s.io/approval",
        ),
        ("list", "certificatesigningrequests.certificates.k8s.io"),
    ] {
        assert!(
            cp.can_i(&master, verb, resource),
            "{master}: {verb} {resource}"
        );
    }
    assert!(!cp.can_i(
        other_node,
        "update",
        "certificatesigningrequests.certificates.k8s.io/approval"
    ));
    for (verb, resource) in NEVER {
        assert!(
            !cp.can_i(&master, verb, resource),
            "{master} may {verb} {resource}"
        );
    }
    // No shared `kubelet` identity any more: neither a certificate nor a binding.
    assert!(r.pki.get("kubelet.key").is_empty());
    assert!(
        !applied.contains("master-kubelet-auth-delegator"),
        "{applied}"
    );

    // With the rendered certificate itself (not impersonated): no Secret.
    let (crt, key) = pair("apiserver-kubelet-client");
    let kc = work.path().join("kubelet-client.kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
            cp.port,
            ca.display(),
            crt.display(),
            key.display()
        ),
    )
    .unwrap();
    let o = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["get", "secrets", "--all-namespaces"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains(&format!(
                "User \"{client}\" cannot list resource \"secrets\""
            )),
        "{err}"
    );

    // The node's agent with the rendered flags; only this machine's paths, the control plane's
    // address and a node in the host's network namespace (no pod network, proxy or DNS address)
    // differ from the cloud node's.
    let mut a =
        rktup_render::node_agent_config(r.gce.settings(), Role::Node, &r.gce.master_endpoint());
    assert_eq!(a.authorization_mode, "Webhook");
    assert!(
        a.authentication_token_webhook && a.rotate_certificates && a.rotate_server_certificates
    );
    assert_eq!(
        a.client_ca_file.as_deref(),
        Some(Path::new("/etc/kubernetes/pki/ca.crt"))
    );
    let unit = r
        .node
        .units
        .iter()
        .find(|u| u.name == "kubelet.service")
        .expect("kubelet.service");
    for arg in a.to_args() {
        assert!(unit.content.contains(&arg), "{arg} in {}", unit.content);
    }
    let bootstrap = r
        .node
        .files
        .iter()
        .find(|f| Some(Path::new(&f.path)) == a.bootstrap_kubeconfig.as_deref())
        .expect("the node's bootstrap kubeconfig");
    let master_url = r.gce.master_endpoint().url();
    assert!(bootstrap.content.contains(&master_url));
    let cp_url = format!("https://127.0.0.1:{}", cp.port);
    let node_dir = work.path().join("node");
    let bootstrap_kc = node_dir.join("bootstrap-kubeconfig");
    std::fs::create_dir_all(node_dir.join("manifests")).unwrap();
    std::fs::create_dir_all(node_dir.join("net.d")).unwrap();
    std::fs::write(
        &bootstrap_kc,
        bootstrap
            .content
            .replace(&master_url, &cp_url)
            .replace("/etc/kubernetes/pki/ca.crt", &ca.display().to_string()),
    )
    .unwrap();
    let node_name = format!("cloud-{}", rktup_testkit::unique());
    let kubelet_port = rktup_testkit::free_port();
    a.root_dir = node_dir.join("root");
    a.pod_manifest_path = node_dir.join("manifests");
    a.kubeconfig = Some(node_dir.join("kubelet.kubeconfig"));
    a.bootstrap_kubeconfig = Some(bootstrap_kc);
    a.client_ca_file = Some(ca.clone());
    a.api_servers = Some(cp_url);
    a.network_plugin = "".parse().unwrap();
    a.network_plugin_dir = None;
    a.cni_conf_dir = Some(node_dir.join("net.d"));
    a.rkt_path = None;
    a.rkt_api_endpoint = Some(format!("127.0.0.1:{}", rktup_testkit::free_port()));
    a.kubelet_port = kubelet_port;
    a.hostname_override = Some(node_name.clone());
    a.node_ip = Some("127.0.0.1".into());
    a.proxy_mode = "none".into();
    a.serve_cluster_dns = false;
    a.verbosity = 4;
    let log = node_dir.join("agent.log");
    let _agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_rktup"))
            .arg("agent")
            .args(a.to_args())
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start rktup agent"),
    );
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // The serving certificate comes from the kubelet-serving signer (the self-signed one the
    // agent serves until then fails curl's verification against the cluster CA).
    let api_client = (crt.as_path(), key.as_path());
    let (code, body) = wait_for(
        "the kubelet port with a serving certificate of the cluster CA",
        Duration::from_secs(90),
        || kubelet_call(kubelet_port, "GET", "/healthz", &ca, Some(api_client)).ok(),
    );
    assert_eq!((code, body.as_str()), (200, "ok"), "{}", agent_log());
    for path in ["/stats/summary", "/metrics/resource"] {
        let (code, body) = kubelet_call(kubelet_port, "GET", path, &ca, Some(api_client)).unwrap();
        assert_eq!(code, 200, "{path}: {body}");
    }
    // exec (POST: create on nodes/proxy) is authorized; the pod does not exist.
    let (code, body) = kubelet_call(
        kubelet_port,
        "POST",
        "/exec/default/nopod/c?command=true&output=1",
        &ca,
        Some(api_client),
    )
    .unwrap();
    assert_ne!(code, 403, "{body}");
    assert_ne!(code, 401, "{body}");

    // Another certificate of the cluster CA: kube-controller-manager's.
    for (who, user) in [("controller-manager", "system:kube-controller-manager")] {
        let (crt, key) = pair(who);
        for (method, path, verb, sub) in [
            ("GET", "/healthz", "get", "proxy"),
            ("GET", "/stats/summary", "get", "stats"),
            (
                "POST",
                "/exec/default/nopod/c?command=true&output=1",
                "create",
                "proxy",
            ),
        ] {
            let (code, body) =
                kubelet_call(kubelet_port, method, path, &ca, Some((&crt, &key))).unwrap();
            assert_eq!(code, 403, "{who} {method} {path}: {body}");
            assert_eq!(
                body,
                format!(
                    "Forbidden (user={user}, verb={verb}, resource=nodes, subresource(s)=[{sub}])"
                ),
                "{who} {method} {path}"
            );
        }
    }
    let (code, _) = kubelet_call(kubelet_port, "GET", "/healthz", &ca, None).unwrap();
    assert_eq!(code, 401);

    // The way kubectl reaches a kubelet: the API server's kubelet client, the serving
    // certificate verified against the cluster CA.
    let o = cp.kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node_name}/proxy/healthz"),
    ]);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout) == "ok",
        "{} {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        agent_log()
    );
}
