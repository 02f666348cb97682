//! Persistent volumes end to end on a two-node `rktup local up` cluster (issue 15 §3 and §4's
//! StatefulSet test), with real kubectl: a StatefulSet with `volumeClaimTemplates` of the default
//! class gets its pods in order, each with its own claim bound to a local-path volume made on the
//! pod's node (in the directory that node announced); a pod's data survives its deletion (the
//! replacement lands on the same node, following the volume's node affinity); deleting the claims
//! deletes the volumes and the nodes remove the directories. Needs root.

use rktup_testkit::{unique, wait_for, Images, Registry};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

struct Cluster {
    name: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn for_test(prefix: &str) -> Option<Cluster> {
        if !rktup_testkit::can_run_as_root(&format!("local_storage ({prefix})"), "`rktup local up`")
        {
            return None;
        }
        Some(Cluster {
            name: format!("{prefix}{}", unique()),
            dir: tempfile::tempdir().expect("tempdir"),
        })
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
            .args(args)
            .output()
            .expect("run rktup")
    }
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--context")
            .arg(format!("rktup-{}", self.name))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
            w.write_all(text.as_bytes()).expect("stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("kubectl")
    }
    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let o = self.kubectl(args, stdin);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    fn json(&self, args: &[&str]) -> Option<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let o = self.kubectl(&a, None);
        if !o.status.success() {
            return None;
        }
        serde_json::from_slice(&o.stdout).ok()
    }
    fn logs(&self) -> String {
        rktup_testkit::log_tails(&self.state_dir().join("logs"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.rktup(&["local", "down", "--name", &self.name]);
    }
}

const WAIT: Duration = Duration::from_secs(120);

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// The pod, once Running with its container started.
fn running(c: &Cluster, name: &str) -> Value {
    wait_for(&format!("pod {name} Running"), WAIT, || {
        let p = c.json(&["get", "pod", name])?;
        (str_at(&p, "/status/phase") == "Running").then_some(p)
    })
}

fn log_line(c: &Cluster, pod: &str) -> String {
    wait_for(&format!("{pod}'s ID line"), WAIT, || {
        let o = c.kubectl(&["logs", pod], None);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.lines()
            .find(|l| l.starts_with("ID "))
            .map(|l| l.trim_start_matches("ID ").to_string())
    })
}

#[test]
fn statefulset_claims_on_a_two_node_local_cluster() {
    let Some(c) = Cluster::for_test("sto") else {
        return;
    };
    let images = Images::build();
    let registry = Registry::start();
    let image = registry.push(&images.layout, "busybox", "store:1.0");
    let up = c.rktup(&[
        "local",
        "up",
        "--name",
        &c.name,
        "--num-nodes",
        "2",
        "--wait",
        "60s",
        "--insecure-registry",
        &registry.addr,
    ]);
    assert!(
        up.status.success(),
        "up: {}\n{}",
        String::from_utf8_lossy(&up.stderr),
        c.logs()
    );

    // Each node announces its own local-path root.
    let roots = wait_for("both nodes' local-path roots", WAIT, || {
        let nodes = c.json(&["get", "nodes"])?;
        let items = nodes["items"].as_array()?.clone();
        let roots: Vec<(String, String)> = items
            .iter()
            .filter_map(|n| {
                let r = n
                    .pointer("/metadata/annotations/rktup.io~1local-path-root")?
                    .as_str()?;
                Some((str_at(n, "/metadata/name").to_string(), r.to_string()))
            })
            .collect();
        (roots.len() == 2).then_some(roots)
    });
    assert_ne!(roots[0].1, roots[1].1, "{roots:?}");
    let sc = c
        .json(&["get", "storageclass", "standard"])
        .expect("standard");
    assert_eq!(
        str_at(
            &sc,
            "/metadata/annotations/storageclass.kubernetes.io~1is-default-class"
        ),
        "true"
    );

    let sts = format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  replicas: 2
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: {image}
        command: ["sh", "-c", "[ -f /data/id ] || echo \"$(hostname)-$$\" > /data/id; echo \"ID $(cat /data/id)\"; exec sleep 3600"]
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 16Mi}}}}
"#
    );
    c.ok(&["apply", "-f", "-"], Some(&sts));

    // In order: db-0 Running before db-1 exists (OrderedReady), then db-1.
    let p0 = running(&c, "db-0");
    let p1 = running(&c, "db-1");
    assert!(
        str_at(&p0, "/metadata/creationTimestamp") <= str_at(&p1, "/metadata/creationTimestamp")
    );
    let mut dirs = vec![];
    for (i, p) in [&p0, &p1].iter().enumerate() {
        let node = str_at(p, "/spec/nodeName").to_string();
        let claim = c
            .json(&["get", "pvc", &format!("data-db-{i}")])
            .expect("claim");
        assert_eq!(str_at(&claim, "/status/phase"), "Bound", "{claim}");
        assert_eq!(str_at(&claim, "/spec/storageClassName"), "standard");
        let pv_name = str_at(&claim, "/spec/volumeName").to_string();
        let pv = c.json(&["get", "pv", &pv_name]).expect("pv");
        assert_eq!(
            pv.pointer(
                "/spec/nodeAffinity/required/nodeSelectorTerms/0/matchExpressions/0/values/0"
            ),
            Some(&Value::from(node.clone())),
            "{pv}"
        );
        let root = &roots
            .iter()
            .find(|(n, _)| *n == node)
            .expect("node's root")
            .1;
        let path = str_at(&pv, "/spec/hostPath/path").to_string();
        assert!(
            path.starts_with(&format!("{root}/pvc-")),
            "{path} under {root}"
        );
        let id = log_line(&c, &format!("db-{i}"));
        assert_eq!(
            std::fs::read_to_string(format!("{path}/id")).expect("on the node's disk"),
            format!("{id}\n")
        );
        dirs.push((node, path, id));
    }
    assert_ne!(dirs[0].2, dirs[1].2, "each pod has its own volume");

    // db-0 deleted: the new db-0 follows its volume to the same node and finds its data.
    let old_uid = str_at(&p0, "/metadata/uid").to_string();
    c.ok(&["delete", "pod", "db-0"], None);
    let again = wait_for("a new db-0 Running", WAIT, || {
        let p = c.json(&["get", "pod", "db-0"])?;
        (str_at(&p, "/metadata/uid") != old_uid && str_at(&p, "/status/phase") == "Running")
            .then_some(p)
    });
    assert_eq!(str_at(&again, "/spec/nodeName"), dirs[0].0);
    assert_eq!(log_line(&c, "db-0"), dirs[0].2, "the data survived the pod");

    // The StatefulSet and then its claims go: volumes deleted, directories removed by the nodes.
    c.ok(&["delete", "statefulset", "db"], None);
    wait_for("the pods gone", WAIT, || {
        let l = c.json(&["get", "pods", "-l", "app=db"])?;
        l["items"].as_array()?.is_empty().then_some(())
    });
    c.ok(&["delete", "pvc", "data-db-0", "data-db-1"], None);
    wait_for("volumes deleted", WAIT, || {
        let l = c.json(&["get", "pv"])?;
        l["items"].as_array()?.is_empty().then_some(())
    });
    for (_, path, _) in &dirs {
        wait_for(&format!("{path} removed"), Duration::from_secs(60), || {
            (!std::path::Path::new(path).exists()).then_some(())
        });
    }
}
