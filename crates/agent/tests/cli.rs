//! The seed's troubleshooting commands against a live agent: `rkt` through a link named rkt,
//! `rkt image list/rm/gc/import`, `rkt fetch`, and `rktup logs --follow` (on the agent's unix
//! socket, `--dir`; the access rules themselves are in api_service.rs).

use rktup_testkit::agent::*;
use std::io::Read;
use std::process::{Command, Stdio};

#[test]
fn image_commands_and_rkt_link() {
    let node = Node::new(&[]);
    let (_bridge, _) = node.bridge_net("0.4.0");
    // A pod keeps busybox in use.
    node.put(
        "user.yaml",
        &format!("metadata: {{name: user}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}\n    command: [sleep, '1000']\n", node.busybox),
    );
    node.wait_pod("user", "running", 60, |p| {
        p["status"]["containers"][0]["state"] == "running"
    });
    // Air-gapped import of a docker-archive and an oci-archive.
    let images = rktup_testkit::Images::build();
    let docker = node.dir.path().join("bb.tar");
    images.docker_archive("busybox", &docker, "example.com/air/bb:v1");
    let out = node.rkt_ok(&["rkt", "image", "import", docker.to_str().unwrap()]);
    assert!(out.contains("example.com/air/bb:v1"), "{out}");
    let oci = node.dir.path().join("multi.tar");
    images.oci_archive("multi", &oci);
    node.rkt_ok(&[
        "rkt",
        "image",
        "import",
        oci.to_str().unwrap(),
        "--name",
        "example.com/air/multi:v2",
    ]);
    // fetch writes the store itself (pull from the test registry), as import does.
    let fetched = node.rkt_ok(&[
        "rkt",
        "fetch",
        &node.multi,
        "--insecure-registry",
        &node.registry.addr,
    ]);
    assert!(fetched.starts_with("sha256-"), "{fetched}");
    // The link named rkt behaves as `rktup rkt` (here through the read-only loopback listener).
    let link = node.dir.path().join("rkt");
    std::os::unix::fs::symlink(rktup_bin(), &link).unwrap();
    let out = Command::new(&link)
        .args(["image", "list", "--rkt-api-endpoint", &node.endpoint])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    let header = list.lines().next().unwrap();
    for col in ["ID", "NAME", "SIZE", "IMPORT TIME", "LAST USED"] {
        assert!(header.contains(col), "{header}");
    }
    for n in [
        "example.com/air/bb:v1",
        "example.com/air/multi:v2",
        "test/busybox:1",
        "test/multi:1",
    ] {
        assert!(list.contains(n), "{n} in\n{list}");
    }
    // busybox is used by the running pod: rm refuses, gc keeps it.
    let (ok, _, err) = node.rktup(&["rkt", "image", "rm", &node.busybox]);
    assert!(!ok && err.contains("used by a pod"), "{err}");
    node.rkt_ok(&["rkt", "image", "rm", "example.com/air/multi:v2"]);
    let gc = node.rkt_ok(&["rkt", "image", "gc"]);
    assert!(gc.contains("removed image"), "{gc}");
    let after = node.rkt_ok(&["rkt", "image", "list", "--no-legend"]);
    assert!(after.contains("test/busybox:1"), "{after}");
    assert!(!after.contains("multi"), "{after}");
    // `rkt status` for an unknown id fails clearly.
    let (ok, _, err) = node.rktup(&["rkt", "status", "ffffffff"]);
    assert!(!ok && err.contains("not found"), "{err}");
    node.delete("user.yaml");
    node.wait_no_pods(30);
}

#[test]
fn logs_follow_until_the_container_exits() {
    let node = Node::new(&[]);
    let (_bridge, _) = node.bridge_net("0.4.0");
    node.put(
        "talk.yaml",
        &format!(
            "metadata: {{name: talk}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {}\n    command: [sh, -c, 'for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done']\n",
            node.busybox
        ),
    );
    let p = node.wait_pod("talk", "running", 60, |p| {
        p["status"]["containers"][0]["state"] == "running"
    });
    let short: String = uuid_of(&p).chars().take(8).collect();
    let mut child = Command::new(rktup_bin())
        .args([
            "logs",
            &format!("k8s_{short}"),
            "--follow",
            "--dir",
            node.root.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        out, "line 1\nline 2\nline 3\nline 4\nline 5\n",
        "followed to the end, then exited"
    );
    node.delete("talk.yaml");
    node.wait_no_pods(30);
}
