//! Node TLS bootstrap, server side (issue 16): bootstrap tokens, the CSR
//! API with its approver and signer, the Node authorizer and NodeRestriction,
//! and the API server's calls to kubelets (its client identity, the
//! kubelet's serving certificate verified). Real kubectl and kube-rs.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use rktup_controlplane::pki::{CertPair, Credential};
use rktup_controlplane::ControlPlane;
use rktup_testkit::controlplane::*;
use serde_json::{json, Value};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const SERVING: &str = "kubernetes.io/kubelet-serving";
const WAIT: Duration = Duration::from_secs(30);

/// A control plane whose signer issues certificates for at most an hour.
async fn start_short(verify_kubelets: bool) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = ControlPlane::builder()
        .data_dir(dir.path())
        .bind("127.0.0.1:0".parse().expect("addr"))
        .csr_signing_duration(Duration::from_secs(3600))
        .verify_kubelet_serving_certs(verify_kubelets)
        .start()
        .await
        .expect("control plane starts");
    Cluster { handle, dir }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kubectl auth whoami -o json` presenting `cred`: the user info, or stderr.
async fn whoami(c: &Cluster, who: &str, cred: &Credential) -> Result<Value, String> {
    let out = c
        .kubectl_as(who, cred, &["auth", "whoami", "-o", "json"])
        .await;
    let (stdout, stderr) = text(&out);
    if out.status.success() {
        let v: Value = serde_json::from_str(&stdout).expect("whoami JSON");
        Ok(v["status"]["userInfo"].clone())
    } else {
        Err(stderr)
    }
}

/// A PEM CSR for `cn` in `orgs` with IP SANs `ips`, and its key.
fn csr_pem(cn: &str, orgs: &[&str], ips: &[&str]) -> (String, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut dn = rcgen::DistinguishedName::new();
    for o in orgs {
        dn.push(rcgen::DnType::OrganizationName, *o);
    }
    dn.push(rcgen::DnType::CommonName, cn);
    p.distinguished_name = dn;
    for ip in ips {
        p.subject_alt_names
            .push(rcgen::SanType::IpAddress(ip.parse().expect("ip")));
    }
    let pem = p.serialize_request(&key).expect("csr").pem().expect("pem");
    (pem, key)
}

fn csr_object(name: &str, pem: &str, signer: &str, usages: &[&str]) -> CertificateSigningRequest {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "request": base64_of(pem.as_bytes()),
            "signerName": signer,
            "usages": usages,
            // Never trusted: the server records the requester itself.
            "username": "system:admin",
            "groups": ["system:masters"],
        }
    }))
    .expect("CSR")
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

async fn create_csr(
    client: &kube::Client,
    name: &str,
    pem: &str,
    signer: &str,
    usages: &[&str],
) -> Result<CertificateSigningRequest, kube::Error> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &csr_object(name, pem, signer, usages),
    )
    .await
}

const CLIENT_USAGES: &[&str] = &["digital signature", "client auth"];
const SERVING_USAGES: &[&str] = &["digital signature", "server auth"];

/// Creates CSR `name` for a new key: `subject` is the CSR's common name,
/// organizations and IP SANs (as `csr_pem`); it must be accepted.
async fn submit_csr(
    client: &kube::Client,
    name: &str,
    subject: (&str, &[&str], &[&str]),
    signer: &str,
    usages: &[&str],
) {
    let (pem, _) = csr_pem(subject.0, subject.1, subject.2);
    create_csr(client, name, &pem, signer, usages)
        .await
        .expect("create");
}

/// A node client CSR (signer kube-apiserver-client-kubelet) named
/// `prefix`-unique; returns the name.
async fn client_csr(client: &kube::Client, prefix: &str, cn: &str, orgs: &[&str]) -> String {
    let name = unique(prefix);
    submit_csr(client, &name, (cn, orgs, &[]), CLIENT, CLIENT_USAGES).await;
    name
}

/// A kubelet serving CSR (in system:nodes, IP SANs `ips`) named
/// `prefix`-unique; returns the name.
async fn serving_csr(client: &kube::Client, prefix: &str, cn: &str, ips: &[&str]) -> String {
    let name = unique(prefix);
    let subject = (cn, &["system:nodes"][..], ips);
    submit_csr(client, &name, subject, SERVING, SERVING_USAGES).await;
    name
}

/// A CSR for `cn` to a signer nobody serves, named `prefix`-unique.
async fn other_signer_csr(client: &kube::Client, prefix: &str, cn: &str) -> String {
    let name = unique(prefix);
    let subject = (cn, &[][..], &[][..]);
    submit_csr(
        client,
        &name,
        subject,
        "example.com/signer",
        &["client auth"],
    )
    .await;
    name
}

fn conditions(csr: &CertificateSigningRequest) -> Vec<(String, String, String)> {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            (
                c.type_,
                c.reason.unwrap_or_default(),
                c.message.unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits for the CSR's certificate (PEM).
async fn certificate(admin: &kube::Client, name: &str) -> String {
    let api: Api<CertificateSigningRequest> = Api::all(admin.clone());
    eventually(&format!("CSR {name} signed"), WAIT, || async {
        let csr = api.get(name).await.ok()?;
        let cert = csr.status?.certificate?;
        Some(String::from_utf8(cert.0).expect("PEM"))
    })
    .await
}

async fn csr_get(admin: &kube::Client, name: &str) -> CertificateSigningRequest {
    let api: Api<CertificateSigningRequest> = Api::all(admin.clone());
    api.get(name).await.expect("CSR")
}

fn status_code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("not an API error: {other}"),
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", rktup_testkit::unique())
}

#[tokio::test]
async fn bootstrap_token_gets_a_node_client_certificate() {
    let c = start_short(false).await;
    let token = c
        .handle
        .create_bootstrap_token(Duration::from_secs(3600))
        .expect("token");
    let id = token.split('.').next().expect("id").to_string();
    let cred = Credential::Token(token.clone());

    // Who it is.
    let user = whoami(&c, "boot", &cred).await.expect("authenticated");
    assert_eq!(user["username"], format!("system:bootstrap:{id}"));
    let groups = user["groups"].to_string();
    for g in [
        "system:bootstrappers",
        "system:bootstrappers:kubeadm:default-node-token",
        "system:authenticated",
    ] {
        assert!(groups.contains(&format!("\"{g}\"")), "{groups}");
    }
    // A wrong secret, and an expired token, are 401.
    let wrong = format!("{id}.0000000000000000");
    let err = whoami(&c, "wrong", &Credential::Token(wrong))
        .await
        .expect_err("wrong secret");
    assert!(err.contains("Unauthorized"), "{err}");
    c.apply_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Secret\nmetadata: {name: bootstrap-token-abc123, namespace: kube-system}\n\
         type: bootstrap.kubernetes.io/token\nstringData: {token-id: abc123, token-secret: 0123456789abcdef, \
         usage-bootstrap-authentication: \"true\", expiration: \"2020-01-01T00:00:00Z\"}\n",
    )
    .await;
    let err = whoami(
        &c,
        "expired",
        &Credential::Token("abc123.0123456789abcdef".into()),
    )
    .await
    .expect_err("expired");
    assert!(err.contains("Unauthorized"), "{err}");

    // It may create CSRs and read them, nothing else.
    let boot = c.client_for("boot", &cred).await;
    let node = unique("boot-node");
    let (pem, key) = csr_pem(&format!("system:node:{node}"), &["system:nodes"], &[]);
    let name = unique("csr-boot");
    let created = create_csr(
        &boot,
        &name,
        &pem,
        CLIENT,
        &["digital signature", "client auth"],
    )
    .await
    .expect("a bootstrapper creates a CSR");
    let spec = created.spec.clone();
    assert_eq!(
        spec.username.as_deref(),
        Some(format!("system:bootstrap:{id}").as_str())
    );
    assert!(!spec
        .groups
        .unwrap_or_default()
        .contains(&"system:masters".to_string()));
    let csrs: Api<CertificateSigningRequest> = Api::all(boot.clone());
    csrs.get(&name).await.expect("gets its CSR");
    csrs.list(&ListParams::default()).await.expect("lists CSRs");
    for (what, res) in [
        (
            "list pods",
            Api::<k8s_openapi::api::core::v1::Pod>::default_namespaced(boot.clone())
                .list(&ListParams::default())
                .await
                .map(|_| ()),
        ),
        (
            "list secrets",
            Api::<Secret>::namespaced(boot.clone(), "kube-system")
                .list(&ListParams::default())
                .await
                .map(|_| ()),
        ),
        (
            "create configmap",
            Api::<ConfigMap>::default_namespaced(boot.clone())
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("cm"),
                )
                .await
                .map(|_| ()),
        ),
    ] {
        let e = res.expect_err(what);
        assert_eq!(status_code(&e), 403, "{what}: {e}");
    }

    // Approved by the approver, signed by the signer.
    let admin = c.admin().await;
    let cert = certificate(&admin, &name).await;
    let approved = csr_get(&admin, &name).await;
    assert!(
        conditions(&approved)
            .iter()
            .any(|(t, r, _)| t == "Approved" && r == "AutoApproved"),
        "{:?}",
        conditions(&approved)
    );
    let (_, parsed) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).expect("PEM");
    let x = parsed.parse_x509().expect("x509");
    let cn: Vec<&str> = x
        .subject()
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let o: Vec<&str> = x
        .subject()
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .collect();
    assert_eq!(cn, [format!("system:node:{node}")]);
    assert_eq!(o, ["system:nodes"]);
    let eku = x.extended_key_usage().expect("eku").expect("has eku").value;
    assert!(eku.client_auth && !eku.server_auth);
    let ku = x.key_usage().expect("ku").expect("has ku").value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    let life = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
    // The signer's one hour, from five minutes back.
    assert_eq!(life, 3600 + 300, "{:?}", x.validity());
    assert!(!x.is_ca());

    // The certificate authenticates as the node.
    let node_cred = Credential::Cert(CertPair {
        cert_pem: cert,
        key_pem: key.serialize_pem(),
    });
    let user = whoami(&c, "issued", &node_cred).await.expect("node cert");
    assert_eq!(user["username"], format!("system:node:{node}"));
    assert!(user["groups"].to_string().contains("\"system:nodes\""));
    c.handle.shutdown().await;
}

#[tokio::test]
async fn only_node_client_requests_are_approved_and_signed() {
    let c = start_short(false).await;
    let token = c
        .handle
        .create_bootstrap_token(Duration::from_secs(3600))
        .expect("token");
    let cred = Credential::Token(token);
    let boot = c.client_for("boot", &cred).await;
    let admin = c.admin().await;

    // A node name with system:masters: never approved by the approver...
    let masters = client_csr(
        &boot,
        "csr-masters",
        "system:node:x",
        &["system:nodes", "system:masters"],
    )
    .await;
    // ... and a serving request from a bootstrapper is not either (not the node itself).
    let serving = serving_csr(&boot, "csr-serving", "system:node:x", &["127.0.0.1"]).await;
    // A good one made after them is approved and signed: the approver has passed over both.
    let good = client_csr(&boot, "csr-good", "system:node:x", &["system:nodes"]).await;
    let signed = certificate(&admin, &good).await;
    // Metadata stays writable; the spec and status do not move with it.
    c.ok(&["label", "csr", &good, "team=x"]).await;
    assert_eq!(certificate(&admin, &good).await, signed);
    let table = c.ok(&["get", "csr", &good]).await;
    assert!(table.contains("Approved"), "{table}");
    for name in [&masters, &serving] {
        let csr = csr_get(&admin, name).await;
        assert!(
            conditions(&csr).is_empty(),
            "{name}: {:?}",
            conditions(&csr)
        );
        assert!(csr.status.and_then(|s| s.certificate).is_none());
    }

    // A node may not approve (RBAC: no certificatesigningrequests/approval).
    let node_token = c.handle.mint_node_token("x").expect("node token");
    let out = c
        .kubectl_as(
            "node-x",
            &Credential::Token(node_token),
            &["certificate", "approve", &masters],
        )
        .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("certificatesigningrequests.certificates.k8s.io \"{masters}\" is forbidden: User \"system:node:x\" cannot update resource \"certificatesigningrequests/approval\" in API group \"certificates.k8s.io\" at the cluster scope")),
        "{stderr}"
    );
    // Approving needs `approve` on the signer too (CertificateApproval admission).
    c.ok(&[
        "create",
        "clusterrole",
        "csr-approver",
        "--verb=get,list,update",
        "--resource=certificatesigningrequests,certificatesigningrequests/approval",
    ])
    .await;
    c.ok(&[
        "create",
        "clusterrolebinding",
        "csr-approver",
        "--clusterrole=csr-approver",
        "--user=jane",
    ])
    .await;
    let out = c
        .kubectl(&["certificate", "approve", &masters, "--as=jane"])
        .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("certificatesigningrequests.certificates.k8s.io \"{masters}\" is forbidden: user not permitted to approve requests with signerName \"{CLIENT}\"")),
        "{stderr}"
    );
    c.apply_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: csr-signer-approver}}\n\
             rules: [{{apiGroups: [certificates.k8s.io], resources: [signers], resourceNames: [\"{CLIENT}\"], verbs: [approve]}}]\n"
        ),
    )
    .await;
    c.ok(&[
        "create",
        "clusterrolebinding",
        "csr-signer-approver",
        "--clusterrole=csr-signer-approver",
        "--user=jane",
    ])
    .await;
    // Then a pending one is approved.
    // (not a node client request, so only a person approves it)
    let pending = client_csr(
        &admin,
        "csr-pending",
        "system:node:y",
        &["system:nodes", "x"],
    )
    .await;
    let out = c
        .kubectl(&["certificate", "approve", &pending, "--as=jane"])
        .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let csr = csr_get(&admin, &pending).await;
    assert!(
        conditions(&csr)
            .iter()
            .any(|(t, r, _)| t == "Approved" && r == "KubectlApprove"),
        "{:?}",
        conditions(&csr)
    );
    // A system:masters client certificate through kube-apiserver-client is refused outright.
    let (pem, _) = csr_pem("eve", &["system:masters"], &[]);
    let e = create_csr(
        &admin,
        &unique("csr-eve"),
        &pem,
        "kubernetes.io/kube-apiserver-client",
        &["digital signature", "client auth"],
    )
    .await
    .expect_err("masters");
    assert_eq!(status_code(&e), 403);
    assert!(
        e.to_string()
            .contains("use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"),
        "{e}"
    );

    // An admin approves it by hand: the signer refuses it (Failed), signs nothing.
    let out = c.ok(&["certificate", "approve", &masters]).await;
    assert!(out.contains("approved"), "{out}");
    let failed = eventually("the signer refuses", WAIT, || async {
        let csr = csr_get(&admin, &masters).await;
        conditions(&csr)
            .into_iter()
            .find(|(t, _, _)| t == "Failed")
            .map(|f| (f, csr))
    })
    .await;
    assert_eq!(failed.0 .1, "SignerValidationFailure");
    assert_eq!(failed.0 .2, "subject organization is not system:nodes");
    assert!(failed.1.status.and_then(|s| s.certificate).is_none());
    // Approval conditions cannot be taken back.
    let out = c
        .kubectl(&["certificate", "deny", "--force", &masters])
        .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");

    // Deny.
    let out = c.ok(&["certificate", "deny", &serving]).await;
    assert!(out.contains("denied"), "{out}");
    let csr = csr_get(&admin, &serving).await;
    assert!(conditions(&csr).iter().any(|(t, _, _)| t == "Denied"));
    let table = c.ok(&["get", "csr", &serving]).await;
    assert!(table.contains("Denied"), "{table}");

    // The status subresource cannot approve.
    let api: Api<CertificateSigningRequest> = Api::all(admin.clone());
    let other = other_signer_csr(&admin, "csr-other", "someone").await;
    let e = api
        .patch_status(
            &other,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"conditions": [{"type": "Approved", "status": "True"}]}}),
            ),
        )
        .await;
    // Upstream's status strategy keeps the stored approval conditions: nothing added.
    if let Ok(csr) = e {
        assert!(conditions(&csr).is_empty(), "{:?}", conditions(&csr));
    }

    // Validation: a request that is not a CSR, no usages, a short duration.
    let bad: CertificateSigningRequest = serde_json::from_value(json!({
        "metadata": {"name": unique("csr-bad")},
        "spec": {"request": base64_of(b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"),
                 "signerName": CLIENT, "usages": ["client auth", "client auth", "magic"],
                 "expirationSeconds": 60}
    }))
    .expect("csr");
    let e = api
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("invalid");
    let msg = e.to_string();
    assert_eq!(status_code(&e), 422, "{msg}");
    for want in [
        "spec.request: Invalid value: []byte{0x2d, 0x2d",
        "PEM block type must be CERTIFICATE REQUEST",
        "spec.usages[1]: Duplicate value: \"client auth\"",
        "spec.usages[2]: Unsupported value: \"magic\"",
        "spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 600 seconds (10 minutes)",
    ] {
        assert!(msg.contains(want), "{want}: {msg}");
    }
    c.handle.shutdown().await;
}

#[tokio::test]
async fn nodes_renew_only_their_own_client_certificates() {
    let c = start_short(false).await;
    let admin = c.admin().await;
    let pair = c.handle.issue_node_cert("n1").expect("cert");
    let n1 = c.client_for("n1", &Credential::Cert(pair)).await;
    let theirs = unique("csr-n2");
    submit_csr(
        &n1,
        &theirs,
        ("system:node:n2", &["system:nodes"], &[]),
        CLIENT,
        &["digital signature", "key encipherment", "client auth"],
    )
    .await;
    // Its own, asking for ten minutes (shorter than the signer's hour: honoured).
    let (pem, _) = csr_pem("system:node:n1", &["system:nodes"], &[]);
    let mine = unique("csr-n1");
    let mut obj = csr_object(
        &mine,
        &pem,
        CLIENT,
        &["digital signature", "key encipherment", "client auth"],
    );
    obj.spec.expiration_seconds = Some(600);
    Api::<CertificateSigningRequest>::all(n1.clone())
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
    let cert = certificate(&admin, &mine).await;
    let (_, parsed) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).expect("PEM");
    let x = parsed.parse_x509().expect("x509");
    let life = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
    assert_eq!(life, 600 + 300, "{:?}", x.validity());
    let ku = x.key_usage().expect("ku").expect("has ku").value;
    assert!(ku.digital_signature() && ku.key_encipherment());
    let csr = csr_get(&admin, &theirs).await;
    assert!(conditions(&csr).is_empty(), "{:?}", conditions(&csr));
    assert_eq!(csr.spec.username.as_deref(), Some("system:node:n1"));
    c.handle.shutdown().await;
}

#[tokio::test]
async fn node_authorizer_and_node_restriction() {
    let c = start().await;
    let admin = c.admin().await;
    // Registered, heartbeating nodes: pods bound to a missing or silent node would be collected.
    let _a = fake_node(&c, "a", 10250).await;
    let _b = fake_node(&c, "b", 10250).await;
    c.ok(&["create", "secret", "generic", "s", "--from-literal=k=v"])
        .await;
    c.ok(&["create", "configmap", "cm", "--from-literal=k=v"])
        .await;
    let pod = |name: &str, node: &str, refs: Value| {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}});
        for (k, v) in refs.as_object().expect("refs") {
            if k == "volumes" {
                p["spec"]["volumes"] = v.clone();
            } else {
                p["spec"]["containers"][0][k] = v.clone();
            }
        }
        p.to_string()
    };
    c.apply_stdin(
        &["apply", "-f", "-"],
        &pod(
            "on-b",
            "b",
            json!({"volumes": [{"name": "v", "secret": {"secretName": "s"}}]}),
        ),
    )
    .await;
    let a = c.node_client("a").await;
    let secrets: Api<Secret> = Api::default_namespaced(a.clone());
    let e = secrets.get("s").await.expect_err("not a's");
    assert_eq!(status_code(&e), 403);
    let kube::Error::Api(s) = &e else {
        unreachable!()
    };
    assert_eq!(
        s.message,
        "secrets \"s\" is forbidden: User \"system:node:a\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'a' and this object"
    );
    let cms: Api<ConfigMap> = Api::default_namespaced(a.clone());
    assert_eq!(status_code(&cms.get("cm").await.expect_err("cm")), 403);
    // Node b's pod uses it: b may read it.
    let b = c.node_client("b").await;
    Api::<Secret>::default_namespaced(b.clone())
        .get("s")
        .await
        .expect("b reads the secret its pod uses");
    // Once a pod bound to a uses it (env) and the config map (envFrom), a may too.
    c.apply_stdin(
        &["apply", "-f", "-"],
        &pod(
            "on-a",
            "a",
            json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                   "envFrom": [{"configMapRef": {"name": "cm"}}]}),
        ),
    )
    .await;
    secrets.get("s").await.expect("a reads it now");
    cms.get("cm").await.expect("and the config map");
    // A name no pod references but that does not exist: still 403, not 404.
    assert_eq!(
        status_code(&secrets.get("nope").await.expect_err("nope")),
        403
    );
    // Never lists or watches.
    let e = secrets
        .list(&ListParams::default())
        .await
        .expect_err("list");
    assert_eq!(status_code(&e), 403);
    assert!(
        e.to_string()
            .contains("can only get individual resources of this type"),
        "{e}"
    );
    // Still reads what its agent serves: pods, services, namespaces, endpoint slices.
    Api::<k8s_openapi::api::core::v1::Pod>::all(a.clone())
        .list(&ListParams::default())
        .await
        .expect("pods");
    Api::<k8s_openapi::api::core::v1::Service>::all(a.clone())
        .list(&ListParams::default())
        .await
        .expect("services");
    Api::<k8s_openapi::api::core::v1::Namespace>::all(a.clone())
        .list(&ListParams::default())
        .await
        .expect("namespaces");
    Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::all(a.clone())
        .list(&ListParams::default())
        .await
        .expect("endpointslices");

    // NodeRestriction: labels on its own Node.
    let r = c.node_client("r").await;
    let nodes: Api<Node> = Api::all(r.clone());
    let node = |labels: Value| -> Node {
        serde_json::from_value(json!({"metadata": {"name": "r", "labels": labels}})).expect("node")
    };
    let e = nodes
        .create(
            &PostParams::default(),
            &node(
                json!({"kubernetes.io/hostname": "r", "node-role.kubernetes.io/control-plane": ""}),
            ),
        )
        .await
        .expect_err("role label");
    assert_eq!(status_code(&e), 403);
    assert!(
        e.to_string().contains("nodes \"r\" is forbidden: is not allowed to set the following labels: node-role.kubernetes.io/control-plane"),
        "{e}"
    );
    nodes
        .create(
            &PostParams::default(),
            &node(json!({"kubernetes.io/hostname": "r", "node.kubernetes.io/instance-type": "local", "example.com/team": "x"})),
        )
        .await
        .expect("kubelet labels");
    let e = nodes
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"node-restriction.kubernetes.io/trusted": "yes"}}}),
            ),
        )
        .await
        .expect_err("restricted");
    assert!(
        e.to_string()
            .contains("is not allowed to modify labels: node-restriction.kubernetes.io/trusted"),
        "{e}"
    );
    nodes
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"example.com/team": "y"}}})),
        )
        .await
        .expect("other labels");
    // An admin may set them.
    Api::<Node>::all(admin.clone())
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"node-restriction.kubernetes.io/trusted": "yes"}}}),
            ),
        )
        .await
        .expect("admin");
    c.handle.shutdown().await;
}

/// A stand-in kubelet serving `/containerLogs/...` with `cert`/`key`, requiring a client
/// certificate from `ca`; the client CNs it saw go to `seen`. Returns its port.
async fn kubelet(cert: &str, key: &str, ca: &str, seen: Arc<Mutex<Vec<String>>>) -> u16 {
    use http_body_util::Full;
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.expect("ca")).expect("root");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .expect("pem");
    let pk = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, pk)
        .expect("tls");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Some(c) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                    if let Ok((_, x)) = x509_parser::parse_x509_certificate(c) {
                        let cn = x
                            .subject()
                            .iter_common_name()
                            .filter_map(|a| a.as_str().ok())
                            .collect::<Vec<_>>()
                            .join(",");
                        let orgs = x.subject().iter_organization().count();
                        seen.lock().expect("seen").push(format!("{cn} orgs={orgs}"));
                    }
                }
                let svc = hyper::service::service_fn(
                    |_req: hyper::Request<hyper::body::Incoming>| async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            bytes::Bytes::from("hello from the kubelet\n"),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    port
}

/// Node `node` asks for its serving certificate for 127.0.0.1 (its address): approved by the
/// local approver and signed. Returns (cert, key) PEM.
async fn serving_cert(c: &Cluster, node: &kube::Client, name: &str) -> (String, String) {
    let (pem, key) = csr_pem(
        &format!("system:node:{name}"),
        &["system:nodes"],
        &["127.0.0.1"],
    );
    let csr = unique(&format!("csr-serving-{name}"));
    create_csr(
        node,
        &csr,
        &pem,
        SERVING,
        &["digital signature", "server auth"],
    )
    .await
    .expect("serving CSR");
    let cert = certificate(&c.admin().await, &csr).await;
    (cert, key.serialize_pem())
}

#[tokio::test]
async fn kubelet_calls_use_their_identity_and_verify_the_kubelet() {
    let c = start_short(true).await;
    let ca = c.handle.ca_pem().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    // Register the nodes first (the serving approver checks their addresses): port set below.
    let k1 = c.node_client("k1").await;
    let k2 = c.node_client("k2").await;
    for (client, name) in [(&k1, "k1"), (&k2, "k2")] {
        let n: Node = serde_json::from_value(json!({"metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}}))
        .expect("node");
        Api::<Node>::all(client.clone())
            .create(&PostParams::default(), &n)
            .await
            .expect("register");
    }
    // A node may not get a serving certificate for an address that is not its own (checked
    // once a later CSR is signed: the approver has passed over this one).
    let foreign = serving_csr(&k1, "csr-foreign", "system:node:k1", &["10.9.9.9"]).await;
    let (k1_cert, k1_key) = serving_cert(&c, &k1, "k1").await;
    let (k2_cert, k2_key) = serving_cert(&c, &k2, "k2").await;

    let good = kubelet(&k1_cert, &k1_key, &ca, seen.clone()).await;
    let other_node = kubelet(&k2_cert, &k2_key, &ca, seen.clone()).await;
    let self_signed = {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:k1");
        let cert = p.self_signed(&key).expect("cert");
        kubelet(&cert.pem(), &key.serialize_pem(), &ca, seen.clone()).await
    };
    c.apply_stdin(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"nodeName": "k1", "containers": [{"name": "c", "image": "busybox"}]}})
        .to_string(),
    )
    .await;
    let set_port = |port: u16| {
        let k1 = k1.clone();
        async move {
            Api::<Node>::all(k1)
                .patch_status(
                    "k1",
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}}),
                    ),
                )
                .await
                .expect("port");
        }
    };

    set_port(good).await;
    let logs = c.ok(&["logs", "p"]).await;
    assert_eq!(logs, "hello from the kubelet\n");
    assert_eq!(
        seen.lock().expect("seen").as_slice(),
        ["kube-apiserver-kubelet-client orgs=0"],
        "the API server's kubelet client identity (no system:masters)"
    );

    for (port, why) in [
        (self_signed, "a serving certificate not from the cluster CA"),
        (other_node, "another node's serving certificate"),
    ] {
        set_port(port).await;
        let out = c.kubectl(&["logs", "p"]).await;
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{why}: {stdout}");
        assert!(
            stderr.contains("certificate") || stderr.contains("x509"),
            "{why}: {stderr}"
        );
        // nodes/proxy is verified the same way.
        let out = c
            .kubectl(&["get", "--raw", "/api/v1/nodes/k1/proxy/healthz"])
            .await;
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "nodes/proxy, {why}: {stdout}");
        assert!(
            stderr.contains("error trying to reach service") && stderr.contains("certificate"),
            "nodes/proxy, {why}: {stderr}"
        );
    }
    assert_eq!(
        seen.lock().expect("seen").len(),
        1,
        "no request reached a wrong kubelet"
    );

    let csr = csr_get(&c.admin().await, &foreign).await;
    assert!(conditions(&csr).is_empty(), "{:?}", conditions(&csr));
    c.handle.shutdown().await;
}

#[tokio::test]
async fn decided_requests_are_cleaned_up_as_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = rktup_controlplane::controllers::Clock::new();
    let handle = ControlPlane::builder()
        .data_dir(dir.path())
        .bind("127.0.0.1:0".parse().expect("addr"))
        .clock(clock.clone())
        .start()
        .await
        .expect("control plane starts");
    let c = Cluster { handle, dir };
    let admin = c.admin().await;
    let api: Api<CertificateSigningRequest> = Api::all(admin.clone());
    let issued = client_csr(&admin, "csr-issued", "system:node:z", &["system:nodes"]).await;
    certificate(&admin, &issued).await;
    let denied = serving_csr(&admin, "csr-denied", "system:node:z", &["127.0.0.1"]).await;
    c.ok(&["certificate", "deny", &denied]).await;
    let pending = other_signer_csr(&admin, "csr-pending", "someone").await;
    let names = |api: Api<CertificateSigningRequest>| async move {
        api.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect::<Vec<_>>()
    };
    // Two hours on: the decided ones go, the pending one stays (a day).
    clock.advance(2 * 3600);
    // A new CSR: an event that wakes the cleaner.
    other_signer_csr(&admin, "csr-trigger", "trigger").await;
    eventually("decided CSRs deleted", WAIT, || {
        let api = api.clone();
        let (issued, denied) = (issued.clone(), denied.clone());
        async move {
            let now = names(api).await;
            (!now.contains(&issued) && !now.contains(&denied)).then_some(())
        }
    })
    .await;
    assert!(names(api.clone()).await.contains(&pending));
    clock.advance(24 * 3600);
    // A new CSR: an event that wakes the cleaner.
    other_signer_csr(&admin, "csr-trigger", "trigger").await;
    eventually("the stale pending CSR deleted", WAIT, || {
        let (api, pending) = (api.clone(), pending.clone());
        async move { (!names(api).await.contains(&pending)).then_some(()) }
    })
    .await;
    c.handle.shutdown().await;
}
