//! `rktup local image import` on a real two-node cluster (issue 18's CI conveniences): a second
//! import of the same archive finds the image on each node by digest and says "already
//! present"; `--kubeconfig` on `image import` (the file's context must be this cluster's) and on
//! `list` (only the clusters whose context the file holds).

use rktup_testkit::{wait_for, Images};
use std::process::Command;
use std::time::Duration;

#[test]
fn image_import_skips_present_images_and_takes_kubeconfig() {
    if !rktup_testkit::can_run_as_root("local_image", "`rktup local up`") {
        return;
    }
    let c = rktup_testkit::local_cluster!("img").nodes(2).build();
    let name = c.name().to_string();
    c.up();
    let nodes = [format!("{name}-node-1"), format!("{name}-node-2")];

    // `up --wait` returned only once cluster DNS answers on every node (each agent serves it;
    // kube-dns has no endpoints to wait for): one question per node, no retry, is answered.
    let dns = c.kubectl_ok(&[
        "get",
        "svc",
        "-n",
        "kube-system",
        "kube-dns",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let api = c.kubectl_ok(&[
        "get",
        "svc",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    for i in 1..=2 {
        let o = Command::new("ip")
            .args(["netns", "exec", &format!("rktup-{name}-node-{i}"), "dig"])
            .args(["+short", "+time=1", "+tries=1", &format!("@{dns}")])
            .arg("kubernetes.default.svc.cluster.local")
            .output()
            .expect("run dig");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            api,
            "node {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let images = Images::build();
    let tar = c.dir().join("image.tar");
    images.docker_archive("busybox", &tar, "rktup.test/skip:1.0");
    let tar = tar.display().to_string();
    let kc = c.kubeconfig().display().to_string();

    // First import: every node copies it. Second: every node already has it.
    let first = c.rktup_ok(&["local", "image", "import", &tar, "--name", &name]);
    let again = c.rktup_ok(&[
        "local",
        "image",
        "import",
        &tar,
        "--name",
        &name,
        "--kubeconfig",
        &kc,
    ]);
    for n in &nodes {
        let line = |out: &str| {
            out.lines()
                .find(|l| l.starts_with(&format!("{n}: ")))
                .unwrap_or_else(|| panic!("no line for {n}: {out}"))
                .to_string()
        };
        assert!(line(&first).contains("rktup.test/skip:1.0"), "{first}");
        assert!(line(&first).ends_with(" imported"), "{first}");
        assert!(line(&again).ends_with(" already present"), "{again}");
    }

    // The image is usable on a node after the skipped import.
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "skipped"},
        "spec": {"nodeName": nodes[1], "restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "rktup.test/skip:1.0",
                                 "imagePullPolicy": "Never", "command": ["echo", "from-import"]}]}
    });
    c.apply("pod", &pod);
    wait_for(
        "pod from the imported image",
        Duration::from_secs(60),
        || {
            let phase = c.kubectl_ok(&["get", "pod", "skipped", "-o", "jsonpath={.status.phase}"]);
            assert_ne!(phase, "Failed");
            (phase == "Succeeded").then_some(())
        },
    );
    assert_eq!(c.kubectl_ok(&["logs", "skipped"]).trim(), "from-import");

    // --kubeconfig without this cluster's context: refused, nothing written.
    let other = c.dir().join("other-kubeconfig");
    std::fs::write(
        &other,
        "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\n",
    )
    .unwrap();
    let other = other.display().to_string();
    let o = c.rktup(&[
        "local",
        "image",
        "import",
        &tar,
        "--name",
        &name,
        "--kubeconfig",
        &other,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(&format!("has no context rktup-{name}")),
        "{err}"
    );

    // list --kubeconfig: only the clusters whose context the file holds.
    assert_eq!(
        c.rktup_ok(&["local", "list", "--kubeconfig", &kc]).trim(),
        name
    );
    assert_eq!(
        c.rktup_ok(&["local", "list", "--kubeconfig", &other])
            .trim(),
        ""
    );
    // Every local subcommand takes --kubeconfig.
    c.rktup_ok(&["local", "status", "--name", &name, "--kubeconfig", &kc]);
    c.rktup_ok(&["local", "down", "--name", &name, "--kubeconfig", &kc]);
    let after = std::fs::read_to_string(c.kubeconfig()).unwrap();
    assert!(!after.contains(&format!("rktup-{name}")), "{after}");
}
