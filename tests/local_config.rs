//! `rktup local up --config FILE` (issue 18's cluster file): two nodes described kind-style
//! (the second labelled and tainted, with a read-only extra mount serving the web root and a
//! port mapping), `docker.io` mirrored to the test
//! kit's local registry, and a pod whose image is `docker.io/library/busybox:<tag>` exactly —
//! there is no internet here, so it running proves the pull went to the mirror. The Service's
//! NodePort answers on the mapped host port; `down` ends the mapping. A bad file is refused
//! with every problem at once, before anything is made.

use rktup_testkit::{free_port, unique, wait_for, Images, Registry};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

struct Cluster {
    name: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new(prefix: &str) -> Cluster {
        Cluster {
            name: format!("{prefix}{}", unique()),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn state_dir(&self) -> PathBuf {
        self.dir
            .path()
            .join("state")
            .join(format!("local-{}", self.name))
    }
    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }
    fn rktup(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_rktup"))
            .env("RKTUP_STATE_DIR", self.dir.path().join("state"))
            .env("KUBECONFIG", self.kubeconfig())
            .env_remove("API_PORT")
            .env_remove("NUM_NODES")
            .args(args)
            .output()
            .expect("run rktup")
    }
    fn rktup_ok(&self, args: &[&str]) -> Output {
        let o = self.rktup(args);
        assert!(
            o.status.success(),
            "rktup {args:?} failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            rktup_testkit::log_tails(&self.state_dir().join("logs"))
        );
        o
    }
    fn kubectl_ok(&self, args: &[&str]) -> String {
        let o = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--context")
            .arg(format!("rktup-{}", self.name))
            .args(args)
            .output()
            .expect("run kubectl");
        assert!(
            o.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    fn get(&self, what: &[&str]) -> Value {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&args)).expect("kubectl json")
    }
    fn apply(&self, name: &str, obj: Value) {
        let file = self.dir.path().join(format!("{name}.json"));
        std::fs::write(&file, obj.to_string()).unwrap();
        self.kubectl_ok(&["apply", "-f", &file.display().to_string()]);
    }
    fn write(&self, file: &str, text: &str) -> String {
        let p = self.dir.path().join(file);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.rktup(&["local", "down", "--name", &self.name]);
    }
}

/// `GET /` over plain TCP; the body, or None when nothing answers yet.
fn http_get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

#[test]
fn a_bad_cluster_file_is_refused_with_every_problem() {
    let c = Cluster::new("cfgbad");
    let file = c.write(
        "bad.yaml",
        "nodes:\n- role: master\n  taints: [\"a=b:Never\"]\nregistries:\n  mirrors:\n    docker.io: [\"127.0.0.1:5000\"]\nportMappings:\n- {containerPort: 30080}\n",
    );
    let o = c.rktup(&["local", "up", "--name", &c.name, "--config", &file]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    for want in [
        "(nodes[0].role): expected control-plane or worker",
        "(nodes[0].taints[0]): expected an effect of NoSchedule",
        "(registries.mirrors.docker.io[0]): expected a mirror endpoint",
        "(portMappings[0].hostPort): expected a port number",
    ] {
        assert!(err.contains(want), "missing {want:?}:\n{err}");
    }
    // Checked before anything acts: no state directory.
    assert!(!c.state_dir().exists());
}

#[test]
fn nodes_mirrors_and_port_mappings_from_the_cluster_file() {
    if !rktup_testkit::can_run_as_root("local_config", "`rktup local up`") {
        return;
    }
    let c = Cluster::new("cfg");
    let name = c.name.clone();
    let images = Images::build();
    let registry = Registry::start();
    // The image goes in under Docker Hub's name for busybox; pods name docker.io's.
    let tag = format!("cfg{}", unique());
    registry.push(&images.layout, "busybox", &format!("library/busybox:{tag}"));
    // The web root comes from this machine through the node's extraMounts, read-only.
    let www = c.dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "served-from-the-extra-mount\n").unwrap();
    let node_www = format!("/rktup-test-www-{}", unique());
    let host_port = free_port();
    let node_port = 30000 + (unique() % 2700) as u16;
    let file = c.write(
        "cluster.yaml",
        &format!(
            r#"kind: Cluster
apiVersion: rktup.io/v1alpha1
nodes:
- role: control-plane
- role: worker
  labels:
    tier: db
    example.com/pool: blue
  taints: ["dedicated=db:NoSchedule"]
  extraMounts:
  - {{hostPath: {www}, containerPath: {node_www}, readOnly: true}}
  extraPortMappings:
  - containerPort: {node_port}
    hostPort: {host_port}
    listenAddress: 127.0.0.1
registries:
  mirrors:
    docker.io: ["http://{reg}"]
"#,
            reg = registry.addr,
            www = www.display(),
        ),
    );
    c.rktup_ok(&[
        "local", "up", "--name", &name, "--config", &file, "--wait", "60s",
    ]);
    let (node1, node2) = (format!("{name}-node-1"), format!("{name}-node-2"));

    // Labels and taints registered by the agents, on node 2 only.
    let n2 = c.get(&["node", &node2]);
    assert_eq!(n2["metadata"]["labels"]["tier"], "db", "{n2}");
    assert_eq!(n2["metadata"]["labels"]["example.com/pool"], "blue", "{n2}");
    assert_eq!(
        n2["spec"]["taints"],
        serde_json::json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        "{n2}"
    );
    let n1 = c.get(&["node", &node1]);
    assert!(n1["metadata"]["labels"].get("tier").is_none(), "{n1}");
    assert!(n1["spec"].get("taints").is_none_or(Value::is_null), "{n1}");
    let shown = c.kubectl_ok(&["get", "nodes", "-l", "tier=db", "-o", "name"]);
    assert_eq!(shown.trim(), format!("node/{node2}"));

    // A web server from docker.io/library/busybox:<tag>, on the tainted node (selector and
    // toleration), behind a NodePort Service.
    let image = format!("docker.io/library/busybox:{tag}");
    c.apply(
        "web",
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "nodeSelector": {"tier": "db"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}],
                "volumes": [{"name": "www", "hostPath": {"path": node_www}}],
                "containers": [{"name": "web", "image": image,
                    "volumeMounts": [{"name": "www", "mountPath": "/www"}],
                    "command": ["sh", "-c", "(touch /www/probe && echo writable || echo read-only) > /tmp/mode; exec httpd -f -p 8080 -h /www"]}]
            }
        }),
    );
    // The same selector without the toleration: the taint keeps it off node 2, so unscheduled.
    c.apply(
        "intolerant",
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "intolerant"},
            "spec": {"nodeSelector": {"tier": "db"},
                     "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}]}
        }),
    );
    c.apply(
        "web-svc",
        serde_json::json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "selector": {"app": "web"},
                     "ports": [{"port": 80, "targetPort": 8080, "nodePort": node_port}]}
        }),
    );
    let pod = wait_for("the web pod Running", Duration::from_secs(90), || {
        let p = c.get(&["pod", "web"]);
        (p["status"]["phase"] == "Running").then_some(p)
    });
    assert_eq!(pod["spec"]["nodeName"], node2.as_str(), "{pod}");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["image"],
        image.as_str(),
        "{pod}"
    );
    let events = c.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
    ]);
    assert!(events.contains("Successfully pulled image"), "{events}");

    // The host port reaches the NodePort on node 2.
    let body = wait_for(
        "the port mapping to answer",
        Duration::from_secs(30),
        || http_get(host_port).filter(|b| b.contains("served-from-the-extra-mount")),
    );
    assert_eq!(body.trim(), "served-from-the-extra-mount");
    // The mount is read-only in the pod, and the node path was never made on this machine.
    let mode = c.kubectl_ok(&["exec", "web", "--", "cat", "/tmp/mode"]);
    assert_eq!(mode.trim(), "read-only");
    assert!(!www.join("probe").exists());
    assert!(!std::path::Path::new(&node_www).exists());
    let intolerant = c.get(&["pod", "intolerant"]);
    assert!(
        intolerant["spec"]
            .get("nodeName")
            .is_none_or(Value::is_null),
        "a pod without the toleration was bound to the tainted node: {intolerant}"
    );
    // The proxy is a supervised component like the agents (run/portmap.pid).
    assert!(c.state_dir().join("run/portmap.pid").is_file());

    // `down` takes the mapping with it.
    c.rktup_ok(&["local", "down", "--name", &name]);
    assert!(
        TcpStream::connect(("127.0.0.1", host_port)).is_err(),
        "host port {host_port} still answers after down"
    );
    assert!(!c.state_dir().exists());
}
