//! Persistent volumes end to end on a two-node `rktup local up` cluster (issue 15 §3 and §4's
//! StatefulSet test), with real kubectl: a StatefulSet with `volumeClaimTemplates` of the default
//! class gets its pods in order, each with its own claim bound to a local-path volume made on the
//! pod's node (in the directory that node announced); a pod's data survives its deletion (the
//! replacement lands on the same node, following the volume's node affinity); deleting the claims
//! deletes the volumes and the nodes remove the directories. Needs root.

use rktup_testkit::local::LocalCluster as Cluster;
use rktup_testkit::{wait_for, Images, Registry};
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// The pod, once Running with its container started.
fn running(c: &Cluster, name: &str) -> Value {
    wait_for(&format!("pod {name} Running"), WAIT, || {
        let p = c.try_json(&["get", "pod", name])?;
        (str_at(&p, "/status/phase") == "Running").then_some(p)
    })
}

fn log_line(c: &Cluster, pod: &str) -> String {
    wait_for(&format!("{pod}'s ID line"), WAIT, || {
        let o = c.kubectl(&["logs", pod]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.lines()
            .find(|l| l.starts_with("ID "))
            .map(|l| l.trim_start_matches("ID ").to_string())
    })
}

#[test]
fn statefulset_claims_on_a_two_node_local_cluster() {
    if !rktup_testkit::can_run_as_root("local_storage (sto)", "`rktup local up`") {
        return;
    }
    let images = Images::build();
    let registry = Registry::start();
    let image = registry.push(&images.layout, "busybox", "store:1.0");
    let c = rktup_testkit::local_cluster!("sto")
        .nodes(2)
        .insecure_registry(&registry.addr)
        .build();
    c.up();

    // Each node announces its own local-path root.
    let roots = wait_for("both nodes' local-path roots", WAIT, || {
        let nodes = c.try_json(&["get", "nodes"])?;
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
        .try_json(&["get", "storageclass", "standard"])
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
    c.kubectl_ok_in(&["apply", "-f", "-"], &sts);

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
            .try_json(&["get", "pvc", &format!("data-db-{i}")])
            .expect("claim");
        assert_eq!(str_at(&claim, "/status/phase"), "Bound", "{claim}");
        assert_eq!(str_at(&claim, "/spec/storageClassName"), "standard");
        let pv_name = str_at(&claim, "/spec/volumeName").to_string();
        let pv = c.try_json(&["get", "pv", &pv_name]).expect("pv");
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
    c.kubectl_ok(&["delete", "pod", "db-0"]);
    let again = wait_for("a new db-0 Running", WAIT, || {
        let p = c.try_json(&["get", "pod", "db-0"])?;
        (str_at(&p, "/metadata/uid") != old_uid && str_at(&p, "/status/phase") == "Running")
            .then_some(p)
    });
    assert_eq!(str_at(&again, "/spec/nodeName"), dirs[0].0);
    assert_eq!(log_line(&c, "db-0"), dirs[0].2, "the data survived the pod");

    // The StatefulSet and then its claims go: volumes deleted, directories removed by the nodes.
    c.kubectl_ok(&["delete", "statefulset", "db"]);
    wait_for("the pods gone", WAIT, || {
        let l = c.try_json(&["get", "pods", "-l", "app=db"])?;
        l["items"].as_array()?.is_empty().then_some(())
    });
    c.kubectl_ok(&["delete", "pvc", "data-db-0", "data-db-1"]);
    wait_for("volumes deleted", WAIT, || {
        let l = c.try_json(&["get", "pv"])?;
        l["items"].as_array()?.is_empty().then_some(())
    });
    for (_, path, _) in &dirs {
        wait_for(&format!("{path} removed"), Duration::from_secs(60), || {
            (!std::path::Path::new(path).exists()).then_some(())
        });
    }
}
