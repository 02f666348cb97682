//! Local clusters' nodes join by TLS bootstrap, as cloud nodes do: `rktup local up` hands each
//! node only a bootstrap token; the node's agent makes its key in its own directory, gets
//! `system:node:<name>` through the CSR API, and writes its kubeconfig. Real `rktup local up`,
//! real kubectl. Needs root (namespaces, bridges, mounts).

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use rktup_testkit::mode;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every regular file under `dir` (symlinks not followed), except under `skip`.
fn files(dir: &Path, skip: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if skip.contains(&p) {
                continue;
            }
            if ft.is_dir() {
                todo.push(p);
            } else if ft.is_file() {
                out.push(p);
            }
        }
    }
    out
}

/// The first PEM block of `kind` in `text`, whole.
fn pem_block<'a>(text: &'a str, kind: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {kind}-----");
    let end = format!("-----END {kind}-----");
    let a = text.find(&begin)?;
    let b = text[a..].find(&end)? + a + end.len();
    Some(&text[a..b])
}

#[test]
fn local_nodes_join_with_only_a_bootstrap_token() {
    if !rktup_testkit::can_run_as_root("local_bootstrap", "`rktup local up`") {
        return;
    }
    let c = rktup_testkit::local_cluster!("boot")
        .nodes(2)
        .kubectl_limit(Duration::from_secs(60))
        .build();
    c.up();
    let name = c.name();
    {
        let cluster = c.state_dir();
        // kubectl prints a v1 List.
        let list: serde_json::Value = c.json(&["get", "csr"]);
        let items: Vec<CertificateSigningRequest> = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| serde_json::from_value(i.clone()).expect("CSR"))
            .collect();
        for i in 1..=2 {
            let node = format!("{name}-node-{i}");
            let ndir = cluster.join("nodes").join(&node);
            // What `up` gave the node: a token and the CA, no key.
            let bkc = ndir.join("bootstrap-kubeconfig");
            let text = std::fs::read_to_string(&bkc).expect("bootstrap kubeconfig");
            assert_eq!(mode(&bkc), 0o600);
            assert!(text.contains("token: "), "{text}");
            assert!(!text.contains("client-key") && !text.contains("PRIVATE KEY"));
            // What the agent made: its kubeconfig names its own pair in its own pki dir.
            let pki = ndir.join("root").join("pki");
            let current = pki.join("kubelet-client-current.pem");
            let own = std::fs::read_to_string(ndir.join("kubeconfig")).expect("kubeconfig");
            assert!(own.contains(&current.display().to_string()), "{own}");
            let pair = std::fs::read_to_string(&current).expect("pair");
            assert_eq!(
                mode(&std::fs::canonicalize(&current).expect("target")),
                0o600
            );
            let cert = pem_block(&pair, "CERTIFICATE").expect("certificate");
            let key = pem_block(&pair, "PRIVATE KEY").expect("key");
            // The certificate came from a CSR the bootstrap token made, approved and signed.
            let csr = items
                .iter()
                .find(|c| {
                    c.status
                        .as_ref()
                        .and_then(|s| s.certificate.as_ref())
                        .is_some_and(|b| String::from_utf8_lossy(&b.0).contains(cert))
                })
                .unwrap_or_else(|| panic!("no CSR issued {node}'s certificate"));
            assert_eq!(
                csr.spec.signer_name,
                "kubernetes.io/kube-apiserver-client-kubelet"
            );
            assert!(csr
                .spec
                .username
                .as_deref()
                .is_some_and(|u| u.starts_with("system:bootstrap:")));
            // The node's key is nowhere but in its pki dir: not in the state dir's other files
            // (the control plane's store included) nor in the API.
            let body: String = key.lines().skip(1).take(1).collect();
            assert!(body.len() > 20);
            for f in files(&cluster, std::slice::from_ref(&pki)) {
                let data = std::fs::read(&f).unwrap_or_default();
                assert!(
                    !String::from_utf8_lossy(&data).contains(&body),
                    "{node}'s key in {}",
                    f.display()
                );
            }
            for c in &items {
                let request = String::from_utf8_lossy(&c.spec.request.0).into_owned();
                assert!(!request.contains("PRIVATE KEY") && !request.contains(&body));
            }
            // Who the node is, asked with its own credentials.
            let who = c.kubectl_file(
                &ndir.join("kubeconfig"),
                &[
                    "auth",
                    "whoami",
                    "-o",
                    "jsonpath={.status.userInfo.username}",
                ],
                None,
            );
            who.assert_ok(&c.logs());
            let who = who.stdout();
            assert_eq!(who, format!("system:node:{node}"));
        }
    }
    c.down();
}
