//! `rktup local list` and `rktup local export logs` (issue 18's CI conveniences) against a real
//! two-node local cluster: a pod that prints a known line, a pod that never becomes Ready, and
//! what the export holds — with the API answering, and read through a `--kubeconfig` whose
//! server does not answer (then what is on disk, and the export says so).

use rktup_testkit::local::LocalCluster;
use rktup_testkit::{unique, wait_for, Images, Registry};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn cluster(prefix: &str) -> LocalCluster {
    rktup_testkit::local_cluster!(prefix).build()
}

fn pod(c: &LocalCluster, name: &str) -> Value {
    c.json(&["get", "pod", name])
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// With no cluster under the state root, `list` prints nothing and `-o json` an empty array.
#[test]
fn list_without_clusters_is_empty() {
    let c = cluster("none");
    let text = c.rktup_ok(&["local", "list"]);
    assert_eq!(text, "");
    let json = c.rktup_ok(&["local", "list", "-o", "json"]);
    let v: Value = serde_json::from_str(&json).expect("list json");
    assert_eq!(v, serde_json::json!([]));
}

#[test]
fn list_and_export_logs_of_a_two_node_cluster() {
    if !rktup_testkit::can_run_as_root("local_export", "`rktup local up`") {
        return;
    }
    let images = Images::build();
    let registry = Registry::start();
    let image = registry.push(&images.layout, "busybox", "export:1.0");
    let c = rktup_testkit::local_cluster!("exp")
        .nodes(2)
        .insecure_registry(&registry.addr)
        .build();
    let name = c.name().to_string();
    c.up();
    let node2 = format!("{name}-node-2");

    // A pod on node 2 that prints a known line and ends; one that never becomes Ready.
    let marker = format!("export-marker-{}", unique());
    c.apply(
        "printer",
        &serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "printer"},
            "spec": {"nodeName": node2, "restartPolicy": "Never",
                     "containers": [{"name": "c", "image": image,
                                     "command": ["sh", "-c", format!("echo {marker}; echo to-stderr >&2")]}]}
        }),
    );
    c.apply(
        "crasher",
        &serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "crasher"},
            "spec": {"nodeName": format!("{name}-node-1"), "restartPolicy": "Always",
                     "containers": [{"name": "crash", "image": image,
                                     "command": ["sh", "-c", "echo crashing; exit 3"]}]}
        }),
    );
    let uid = wait_for("printer succeeded", Duration::from_secs(90), || {
        let p = pod(&c, "printer");
        (p["status"]["phase"] == "Succeeded").then(|| {
            p["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
    });
    wait_for("crasher restarted", Duration::from_secs(90), || {
        let p = pod(&c, "crasher");
        (p["status"]["containerStatuses"][0]["restartCount"].as_u64() >= Some(1)).then_some(())
    });

    // list: the name as text; the record and running processes as JSON.
    let text = c.rktup_ok(&["local", "list"]);
    assert_eq!(text.lines().collect::<Vec<_>>(), [name.as_str()], "{text}");
    let json: Value = serde_json::from_str(&c.rktup_ok(&["local", "list", "-o", "json"])).unwrap();
    let entry = &json[0];
    assert_eq!(json.as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(entry["name"], name.as_str());
    assert_eq!(
        entry["nodes"],
        serde_json::json!([format!("{name}-node-1"), node2.clone()])
    );
    assert_eq!(entry["running"], true, "{json}");
    assert_eq!(entry["controlplane_running"], true, "{json}");
    assert_eq!(
        entry["state_dir"].as_str(),
        Some(c.state_dir().to_str().unwrap())
    );
    let server = entry["server"].as_str().unwrap_or_default();
    let kc = read(&c.kubeconfig());
    assert!(
        server.starts_with("https://") && kc.contains(server),
        "server {server} not in the kubeconfig"
    );

    // export logs DIR, the API read through the user's kubeconfig.
    let out = c.dir().join("export");
    let o = c.rktup_ok(&[
        "local",
        "export",
        "logs",
        out.to_str().unwrap(),
        "--name",
        &name,
        "--kubeconfig",
        c.kubeconfig().to_str().unwrap(),
    ]);
    assert_eq!(o.trim(), out.to_str().unwrap());
    assert!(!out.join("api-unreachable.txt").exists());
    assert!(read(&out.join("controlplane.log")).len() > 100);
    for n in [format!("{name}-node-1"), node2.clone()] {
        assert!(
            !read(&out.join(&n).join("agent.log")).is_empty(),
            "{n} agent log"
        );
    }
    let log = read(
        &out.join(&node2)
            .join("pods")
            .join(format!("default_printer_{uid}"))
            .join("c")
            .join("0.log"),
    );
    assert!(log.contains(&format!(" stdout F {marker}\n")), "{log}");
    assert!(log.contains(" stderr F to-stderr\n"), "{log}");
    // Every run of the crashing container, each in its own file.
    let crash_dirs: Vec<PathBuf> = std::fs::read_dir(out.join(format!("{name}-node-1/pods")))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("default_crasher_"))
        .collect();
    assert_eq!(crash_dirs.len(), 1, "{crash_dirs:?}");
    for run in ["0.log", "1.log"] {
        let l = read(&crash_dirs[0].join("crash").join(run));
        assert!(l.contains(" stdout F crashing\n"), "{run}: {l}");
    }
    assert!(crash_dirs[0].join("runtime-status.json").is_file());
    assert!(read(&out.join(&node2).join("pods.txt")).contains("default/printer"));
    // Whatever the process supervisors recorded (exits, restarts) comes along.
    for e in std::fs::read_dir(c.state_dir().join("run"))
        .unwrap()
        .flatten()
    {
        let f = e.file_name();
        if f.to_string_lossy().ends_with(".json") {
            assert!(out.join("run").join(&f).is_file(), "{f:?} not exported");
        }
    }
    let pods = read(&out.join("pods.yaml"));
    assert!(
        pods.contains("name: printer") && pods.contains("name: crasher"),
        "{pods}"
    );
    assert!(read(&out.join("nodes.yaml")).contains(&node2));
    let events = read(&out.join("events.txt"));
    assert!(events.starts_with("NAMESPACE\tLAST SEEN\tTYPE\tREASON\tOBJECT\tMESSAGE\n"));
    assert!(events.contains("pod/crasher"), "{events}");
    let describe = read(&out.join("describe-pods.txt"));
    assert!(describe.contains("Name:         crasher"), "{describe}");
    assert!(!describe.contains("Name:         printer"), "{describe}");
    assert!(describe.contains("Restart Count:"), "{describe}");

    // Without DIR: a new directory, printed last.
    let o = c.rktup_ok(&["local", "export", "logs", "--name", &name]);
    let made = PathBuf::from(o.trim());
    assert!(
        made.join("controlplane.log").is_file(),
        "{}",
        made.display()
    );
    assert!(made.join("pods.yaml").is_file());
    let _ = std::fs::remove_dir_all(&made);

    // The API not answering (a kubeconfig whose server is a closed port): what is on disk is
    // exported, and the export says the rest is missing.
    let port = rktup_testkit::free_port();
    let dead = c.dir().join("dead-kubeconfig");
    std::fs::write(
        &dead,
        kc.replace(server, &format!("https://127.0.0.1:{port}")),
    )
    .unwrap();
    let out2 = c.dir().join("export-down");
    let o = c.rktup(&[
        "local",
        "export",
        "logs",
        out2.to_str().unwrap(),
        "--name",
        &name,
        "--kubeconfig",
        dead.to_str().unwrap(),
    ]);
    o.assert_ok(&c.logs());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("exported what is on disk only"), "{err}");
    assert!(read(&out2.join("api-unreachable.txt")).contains("could not be read"));
    assert!(!out2.join("pods.yaml").exists());
    assert!(out2.join("controlplane.log").is_file());
    let log = read(
        &out2
            .join(&node2)
            .join("pods")
            .join(format!("default_printer_{uid}"))
            .join("c")
            .join("0.log"),
    );
    assert!(log.contains(&marker), "{log}");

    // `status --kubeconfig` reads the API through that file's context too.
    let kc_arg = c.kubeconfig().display().to_string();
    let st: Value = serde_json::from_str(&c.rktup_ok(&[
        "local",
        "status",
        "--name",
        &name,
        "--kubeconfig",
        &kc_arg,
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(st["api"], "healthy", "{st}");
    let st: Value = serde_json::from_str(&c.rktup_ok(&[
        "local",
        "status",
        "--name",
        &name,
        "--kubeconfig",
        dead.to_str().unwrap(),
        "-o",
        "json",
    ]))
    .unwrap();
    assert!(
        st["api"]
            .as_str()
            .unwrap_or_default()
            .starts_with("unreachable"),
        "{st}"
    );

    // An unknown cluster is an error naming `local list`.
    let o = c.rktup(&["local", "export", "logs", "--name", "no-such-cluster"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("rktup local list"));
}
