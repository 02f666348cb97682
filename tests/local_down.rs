//! `local down` and the pods' grace periods (issue 18): by default a cluster's pods are
//! SIGKILLed at once, so a pod's SIGTERM handler never runs; `--graceful` stops each pod with
//! SIGTERM and its grace period, so the handler runs and the pod exits on its own. Either way
//! nothing is left. Needs root (namespaces, bridges, mounts).

use rktup_testkit::{wait_for, Images, Registry};
use std::path::Path;
use std::time::Duration;

/// A pod whose shell traps SIGTERM and writes `term` into the host directory `out` (so what
/// the handler did is seen after the cluster is gone); `started` says the trap is set.
fn handler_pod(image: &str, out: &Path) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "handler"},
        "spec": {
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "c",
                "image": image,
                "command": ["sh", "-c",
                    "trap 'echo terminated > /out/term; exit 0' TERM; echo > /out/started; while true; do sleep 0.2; done"],
                "volumeMounts": [{"name": "out", "mountPath": "/out"}]
            }],
            "volumes": [{"name": "out",
                         "hostPath": {"path": out.display().to_string(), "type": "DirectoryOrCreate"}}]
        }
    })
    .to_string()
}

fn down_with_a_sigterm_handler(prefix: &str, graceful: bool) {
    if !rktup_testkit::can_run_as_root(&format!("local_down ({prefix})"), "`rktup local up`") {
        return;
    }
    let images = Images::build();
    let registry = Registry::start();
    let image = registry.push(&images.layout, "busybox", "down:1.0");
    let c = rktup_testkit::local_cluster!(prefix)
        .insecure_registry(&registry.addr)
        .build();
    c.up();
    let out = c.dir().join("out");
    c.kubectl_ok_in(&["apply", "-f", "-"], &handler_pod(&image, &out));
    wait_for("the pod's trap set", Duration::from_secs(120), || {
        out.join("started").exists().then_some(())
    });
    // The runtime's pod directories are named by the pods' ids, as are their cgroups.
    let pod_ids: Vec<String> = std::fs::read_dir(c.state_dir().join("nodes"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|n| {
            std::fs::read_dir(n.path().join("root/pods"))
                .into_iter()
                .flatten()
        })
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    assert!(
        !pod_ids.is_empty(),
        "no pod directory under {}",
        c.state_dir().display()
    );
    let mut args = vec!["local", "down", "--name", c.name()];
    if graceful {
        args.push("--graceful");
    }
    let said = c.rktup_ok(&args);
    assert!(
        said.lines()
            .any(|l| l.starts_with("deleted  pod ") && l.contains("(default/handler)")),
        "{said}"
    );
    let term = std::fs::read_to_string(out.join("term")).ok();
    if graceful {
        assert_eq!(
            term.as_deref(),
            Some("terminated\n"),
            "--graceful: the pod's SIGTERM handler did not run"
        );
    } else {
        assert_eq!(
            term, None,
            "down without --graceful sent the pod SIGTERM (its handler ran) instead of SIGKILL"
        );
    }
    c.assert_all_gone();
    // cgroup v2 (/sys/fs/cgroup/rktup) or each v1 hierarchy's (/sys/fs/cgroup/<ctrl>/rktup).
    let hierarchies = std::iter::once(std::path::PathBuf::from("/sys/fs/cgroup")).chain(
        std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path()),
    );
    let cgroups: Vec<String> = hierarchies
        .flat_map(|h| {
            let rktup = h.join("rktup");
            pod_ids
                .iter()
                .map(move |id| rktup.join(format!("k8s_{id}")))
        })
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    assert!(cgroups.is_empty(), "pod cgroups left: {cgroups:?}");
}

#[test]
fn down_kills_pods_without_running_their_sigterm_handlers() {
    down_with_a_sigterm_handler("dk", false);
}

#[test]
fn graceful_down_lets_pods_handle_sigterm() {
    down_with_a_sigterm_handler("dg", true);
}
