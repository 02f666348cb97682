//! Issue 14: on a cloud cluster a LoadBalancer Service stays `<pending>` (no cloud controller
//! runs), and `kubectl describe svc` should say so. The rendered master runs upstream's
//! kube-controller-manager as a static pod without `--cloud-provider`; its agent reads that from
//! its manifest directory and turns on its proxy's `NoLoadBalancerController` notice
//! (crates/proxy `lb_notice`, tested against an API server in crates/proxy/tests/apiserver.rs).
//! Here: the decision on the static pods each provider's master and node really get.

use rktup_config::{GlobalArgs, Provider};
use rktup_provider::boot::{render_boot, PkiOrigin};
use rktup_provider::state::apiserver_names;
use rktup_provider::ClusterProvider;
use rktup_render::{Pki, Role, Templates};
use std::collections::BTreeMap;

const MANIFESTS: &str = "/etc/kubernetes/manifests/";

/// The static pod manifests `role` boots with on `provider`, written into a directory as the
/// machine's first boot writes them.
fn manifest_dir(provider: Provider, role: Role) -> tempfile::TempDir {
    let state = tempfile::tempdir().unwrap();
    let env: BTreeMap<&str, String> = [
        ("RKTUP_STATE_DIR", state.path().display().to_string()),
        ("RKTUP_BINARY_URL", "https://example.invalid/rktup".into()),
        ("RKTUP_BINARY_SHA256", "0".repeat(64)),
        ("PROJECT", "lb-project".into()),
    ]
    .into_iter()
    .collect();
    let lookup = |k: &str| env.get(k).cloned();
    let settings =
        rktup_config::load(provider, &GlobalArgs::default(), &BTreeMap::new(), &lookup).unwrap();
    let p: Box<dyn ClusterProvider> = match provider {
        Provider::Gce => Box::new(rktup_gce::Gce::new(settings)),
        Provider::Aws => Box::new(rktup_aws::Aws::new(settings)),
        other => panic!("not a cloud provider: {other:?}"),
    };
    let names = apiserver_names(p.settings(), &p.master_endpoint().name, &[]);
    let pki = Pki::generate("lb", &names).unwrap();
    let templates = Templates::embedded().unwrap();
    let boot = render_boot(p.as_ref(), &templates, role, &pki, PkiOrigin::Ephemeral).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for f in &boot.config.files {
        if let Some(name) = f.path.strip_prefix(MANIFESTS) {
            std::fs::write(dir.path().join(name), &f.content).unwrap();
        }
    }
    dir
}

#[test]
fn cloud_masters_say_nothing_assigns_load_balancer_addresses_and_nodes_do_not() {
    use rktup_agent::kubelet::node_services::load_balancer_notice;
    for provider in [Provider::Gce, Provider::Aws] {
        let master = manifest_dir(provider, Role::Master);
        assert!(
            master.path().join("kube-controller-manager.yaml").is_file(),
            "{provider:?}: the master runs kube-controller-manager as a static pod"
        );
        assert!(
            load_balancer_notice(master.path()),
            "{provider:?} master: kube-controller-manager without --cloud-provider"
        );
        let node = manifest_dir(provider, Role::Node);
        assert!(
            !load_balancer_notice(node.path()),
            "{provider:?} node: runs no controller manager, says nothing"
        );
    }
}
