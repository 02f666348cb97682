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
use rktup_testkit::{can_run, spawn_listening, wait_for, KUBECTL};
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
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ControlPlane {
    fn start() -> ControlPlane {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("cp");
        let log = dir.path().join("controlplane.log");
        let (child, _port) = spawn_listening("rktup controlplane", Duration::from_secs(60), |p| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_rktup"));
            cmd.arg("controlplane")
                .arg("--data-dir")
                .arg(&data)
                .arg("--secure-port")
                .arg(p.to_string())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::create(&log).unwrap());
            cmd
        });
        let cp = ControlPlane { child, dir };
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
        let o = self.kubectl(&[
            "auth",
            "can-i",
            verb,
            resource,
            "--all-namespaces",
            &format!("--as={user}"),
            "--as-group=system:nodes",
        ]);
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
            std::fs::write(into.join(name), &f.content).unwrap();
            written.push(name.to_string());
        }
    }
    written.sort();
    written
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
    assert_eq!(files, ["node-bootstrap.yaml", "node-services.yaml"]);
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
