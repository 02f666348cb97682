//! Workload controllers with the real kubectl: StatefulSets (order, identity, claims, scaling,
//! partitioned rolling updates, history and undo), CronJobs (driven by a clock the test moves),
//! ReplicationControllers, and their validation.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use rktup_controlplane::controllers::Clock;
use rktup_controlplane::ControlPlane;
use rktup_testkit::controlplane::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

async fn start_with_clock(clock: &Clock) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = ControlPlane::builder()
        .data_dir(dir.path())
        .bind("127.0.0.1:0".parse().expect("addr"))
        .node_monitor_grace(Duration::from_secs(3))
        .clock(clock.clone())
        .start()
        .await
        .expect("control plane starts");
    Cluster { handle, dir }
}

async fn json(c: &Cluster, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&c.ok(&a).await).expect("kubectl prints JSON")
}

async fn raw(c: &Cluster, path: &str) -> Value {
    serde_json::from_str(&c.ok(&["get", "--raw", path]).await).expect("JSON")
}

fn sts(name: &str, replicas: u32, policy: &str, extra_spec: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}
spec:
  serviceName: {name}-svc
  replicas: {replicas}
  podManagementPolicy: {policy}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: c
        image: nginx:1.25
{extra_spec}"#
    )
}

/// Pods by name: (ready, terminating, image, revision label).
type Snapshot = BTreeMap<String, (bool, bool, String, String)>;

async fn snapshot(api: &Api<Pod>) -> Snapshot {
    let list = api.list(&ListParams::default()).await.expect("list pods");
    list.items
        .into_iter()
        .map(|p| {
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let image = p
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            let rev = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("controller-revision-hash").cloned())
                .unwrap_or_default();
            (
                p.metadata.name.unwrap_or_default(),
                (ready, p.metadata.deletion_timestamp.is_some(), image, rev),
            )
        })
        .collect()
}

fn ready_names(s: &Snapshot) -> Vec<String> {
    s.iter()
        .filter(|(_, v)| v.0 && !v.1)
        .map(|(k, _)| k.clone())
        .collect()
}

/// OrderedReady: in every snapshot, pod N+1 exists only once pod N is Ready; names and labels
/// are stable identities; a deleted pod comes back under its name; scaling down removes the
/// highest ordinal first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_ordered_identity_and_scale_down() {
    let c = start().await;
    let _node = fake_node(&c, "node-a", fake_kubelet().await).await;
    // The governing headless Service: its EndpointSlice names each pod by its hostname.
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web-svc}\nspec:\n  clusterIP: None\n  selector: {app: web}\n  ports: [{port: 80}]\n";
    c.apply_stdin(&["apply", "-f", "-"], svc).await;
    c.apply_stdin(&["apply", "-f", "-"], &sts("web", 3, "OrderedReady", ""))
        .await;
    let pods: Api<Pod> = Api::namespaced(c.admin().await, "default");
    // Checked in the first snapshot that shows each pod (later, a slow heartbeat could make
    // the node lifecycle controller mark pods not ready, which is not the point here).
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    eventually("3 ordered ready pods", WAIT, || async {
        let s = snapshot(&pods).await;
        let mut seen = seen.lock().expect("lock");
        for i in 1..3 {
            let name = format!("web-{i}");
            if s.contains_key(&name) && seen.insert(name) {
                let prev = s.get(&format!("web-{}", i - 1));
                assert!(
                    prev.is_some_and(|p| p.0),
                    "web-{i} exists before web-{} is Ready: {s:?}",
                    i - 1
                );
            }
        }
        (ready_names(&s) == ["web-0", "web-1", "web-2"]).then_some(())
    })
    .await;
    let p = json(&c, &["get", "pod", "web-1"]).await;
    assert_eq!(
        p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "web-1"
    );
    assert_eq!(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"], "1");
    let rev = p["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .expect("revision label");
    assert!(rev.starts_with("web-"), "the revision's name: {rev}");
    assert_eq!(p["spec"]["hostname"], "web-1");
    assert_eq!(p["spec"]["subdomain"], "web-svc");
    assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");

    // Status and the table.
    let s = eventually("status", WAIT, || async {
        let s = json(&c, &["get", "sts", "web"]).await;
        (s["status"]["readyReplicas"] == 3 && s["status"]["currentRevision"] == rev).then_some(s)
    })
    .await;
    assert_eq!(s["status"]["replicas"], 3);
    assert_eq!(s["status"]["updateRevision"], rev);
    assert_eq!(s["status"]["observedGeneration"], 1);
    assert_eq!(s["spec"]["podManagementPolicy"], "OrderedReady");
    assert_eq!(s["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(s["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 0);
    assert_eq!(
        s["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
        "Retain"
    );
    let table = c.ok(&["get", "sts"]).await;
    let head: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(head, ["NAME", "READY", "AGE"], "{table}");
    assert!(table.contains("web") && table.contains("3/3"), "{table}");
    let status = c
        .ok(&["rollout", "status", "sts/web", "--timeout=30s"])
        .await;
    assert!(
        status.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{status}"
    );

    eventually("hostnames in the Service's slice", WAIT, || async {
        let slices = json(
            &c,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web-svc",
            ],
        )
        .await;
        let mut hosts: Vec<String> = slices["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["hostname"].as_str().map(String::from))
            .collect();
        hosts.sort();
        (hosts == ["web-0", "web-1", "web-2"]).then_some(())
    })
    .await;

    // Stable names: a deleted pod comes back as itself.
    let old_uid = p["metadata"]["uid"].clone();
    c.ok(&["delete", "pod", "web-1", "--wait=false"]).await;
    eventually("web-1 back", WAIT, || async {
        let p = json(&c, &["get", "pods"]).await;
        let back = p["items"].as_array().and_then(|items| {
            items
                .iter()
                .find(|p| p["metadata"]["name"] == "web-1" && p["metadata"]["uid"] != old_uid)
        });
        back.is_some_and(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .then_some(())
    })
    .await;

    // Scale down (through the scale subresource): web-2 goes before web-1 is touched.
    c.ok(&["scale", "sts", "web", "--replicas=1"]).await;
    eventually("scaled to 1", WAIT, || async {
        let s = snapshot(&pods).await;
        if s.get("web-1").is_some_and(|p| p.1) {
            assert!(
                !s.contains_key("web-2"),
                "web-1 terminating while web-2 exists: {s:?}"
            );
        }
        (s.keys().collect::<Vec<_>>() == ["web-0"]).then_some(())
    })
    .await;
    let scale = raw(
        &c,
        "/apis/apps/v1/namespaces/default/statefulsets/web/scale",
    )
    .await;
    assert_eq!(scale["spec"]["replicas"], 1);
    assert_eq!(scale["status"]["selector"], "app=web");
}

/// Parallel: all pods at once (no node, so none is ever Ready); claims from
/// volumeClaimTemplates are created before their pod and outlive the StatefulSet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_parallel_and_claims() {
    let c = start().await;
    let claims = r#"  volumeClaimTemplates:
  - metadata:
      name: www
      labels: {tier: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests: {storage: 1Gi}
"#;
    c.apply_stdin(&["apply", "-f", "-"], &sts("db", 3, "Parallel", claims))
        .await;
    let pods: Api<Pod> = Api::namespaced(c.admin().await, "default");
    eventually("three pods though none is ready", WAIT, || async {
        let s = snapshot(&pods).await;
        (s.keys().filter(|k| k.starts_with("db-")).count() == 3).then_some(())
    })
    .await;
    // The same with OrderedReady: ord-0 never becomes Ready, so ord-1 never comes.
    c.apply_stdin(&["apply", "-f", "-"], &sts("ord", 3, "OrderedReady", ""))
        .await;
    eventually("ord's status observed", WAIT, || async {
        let s = json(&c, &["get", "sts", "ord"]).await;
        (s["status"]["replicas"] == 1).then_some(())
    })
    .await;
    let s = snapshot(&pods).await;
    let ord: Vec<&String> = s.keys().filter(|k| k.starts_with("ord-")).collect();
    assert_eq!(ord, ["ord-0"], "{s:?}");
    c.ok(&["delete", "sts", "ord"]).await;
    // spec.ordinals.start numbers the pods from there.
    c.apply_stdin(
        &["apply", "-f", "-"],
        &sts("five", 2, "Parallel", "  ordinals: {start: 5}\n"),
    )
    .await;
    eventually("five-5 and five-6", WAIT, || async {
        let s = snapshot(&pods).await;
        let five: Vec<&String> = s.keys().filter(|k| k.starts_with("five-")).collect();
        (five == ["five-5", "five-6"]).then_some(())
    })
    .await;
    let p = json(&c, &["get", "pod", "five-6"]).await;
    assert_eq!(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"], "6");
    c.ok(&["delete", "sts", "five"]).await;
    for i in 0..3 {
        let pvc = json(&c, &["get", "pvc", &format!("www-db-{i}")]).await;
        let pod = json(&c, &["get", "pod", &format!("db-{i}")]).await;
        assert_eq!(
            pvc["metadata"]["labels"]["app"], "db",
            "selector labels: {pvc}"
        );
        assert_eq!(
            pvc["metadata"]["labels"]["tier"], "data",
            "template labels: {pvc}"
        );
        assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "1Gi");
        assert!(
            pvc["metadata"].get("ownerReferences").is_none(),
            "Retain: not owned: {pvc}"
        );
        let rv = |o: &Value| {
            o["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .expect("resourceVersion")
        };
        assert!(rv(&pvc) < rv(&pod), "the claim is written before its pod");
        let vols = pod["spec"]["volumes"].as_array().expect("volumes");
        let www = vols
            .iter()
            .find(|v| v["name"] == "www")
            .expect("www volume");
        assert_eq!(
            www["persistentVolumeClaim"]["claimName"],
            format!("www-db-{i}")
        );
    }
    let s = json(&c, &["get", "sts", "db"]).await;
    assert_eq!(
        s["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"],
        "Filesystem"
    );
    c.ok(&["delete", "sts", "db"]).await;
    eventually("pods collected", WAIT, || async {
        snapshot(&pods).await.is_empty().then_some(())
    })
    .await;
    let pvcs = c.ok(&["get", "pvc", "-o", "name"]).await;
    for i in 0..3 {
        assert!(
            pvcs.contains(&format!("persistentvolumeclaim/www-db-{i}")),
            "{pvcs}"
        );
    }
}

/// RollingUpdate with a partition updates only ordinals ≥ partition, highest first; then the
/// rest; `rollout history` lists both revisions and `rollout undo` puts the old template back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_partitioned_rollout_history_and_undo() {
    let c = start().await;
    let _node = fake_node(&c, "node-a", fake_kubelet().await).await;
    c.apply_stdin(&["apply", "-f", "-"], &sts("app", 3, "Parallel", ""))
        .await;
    let pods: Api<Pod> = Api::namespaced(c.admin().await, "default");
    eventually("3 ready", WAIT, || async {
        (ready_names(&snapshot(&pods).await).len() == 3).then_some(())
    })
    .await;
    c.ok(&[
        "patch",
        "sts",
        "app",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}}}}"#,
    ])
    .await;
    c.ok(&["set", "image", "sts/app", "c=nginx:1.27"]).await;
    let s = eventually("app-2 updated", WAIT, || async {
        let s = snapshot(&pods).await;
        let new = s
            .get("app-2")
            .is_some_and(|p| p.0 && !p.1 && p.2 == "nginx:1.27");
        (new && ready_names(&s).len() == 3).then_some(s)
    })
    .await;
    assert_eq!(s["app-0"].2, "nginx:1.25", "below the partition: {s:?}");
    assert_eq!(s["app-1"].2, "nginx:1.25", "below the partition: {s:?}");
    let status = c
        .ok(&["rollout", "status", "sts/app", "--timeout=30s"])
        .await;
    assert!(
        status.contains("partitioned roll out complete: 1 new pods have been updated"),
        "{status}"
    );
    let st = json(&c, &["get", "sts", "app"]).await;
    assert_eq!(st["status"]["updatedReplicas"], 1);
    assert_eq!(st["status"]["currentReplicas"], 2);
    assert_ne!(
        st["status"]["currentRevision"],
        st["status"]["updateRevision"]
    );

    // Partition 0: the rest follow, one at a time, from app-1 down.
    c.ok(&[
        "patch",
        "sts",
        "app",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ])
    .await;
    eventually("all updated", WAIT, || async {
        let s = snapshot(&pods).await;
        if s.get("app-0").is_some_and(|p| p.2 == "nginx:1.27") {
            assert_eq!(
                s.get("app-1").map(|p| p.2.as_str()),
                Some("nginx:1.27"),
                "app-0 before app-1: {s:?}"
            );
        }
        (s.len() == 3 && s.values().all(|p| p.0 && p.2 == "nginx:1.27")).then_some(())
    })
    .await;
    let st = eventually("current = update", WAIT, || async {
        let st = json(&c, &["get", "sts", "app"]).await;
        (st["status"]["currentRevision"] == st["status"]["updateRevision"]
            && st["status"]["currentReplicas"] == 3)
            .then_some(st)
    })
    .await;
    assert_eq!(st["status"]["updatedReplicas"], 3);

    let history = c.ok(&["rollout", "history", "sts/app"]).await;
    assert!(history.contains("REVISION"), "{history}");
    let revs: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revs, ["1", "2"], "{history}");
    let r1 = c
        .ok(&["rollout", "history", "sts/app", "--revision=1"])
        .await;
    assert!(r1.contains("nginx:1.25"), "{r1}");

    let undo = c.ok(&["rollout", "undo", "sts/app"]).await;
    assert!(undo.contains("rolled back"), "{undo}");
    eventually("back on 1.25", WAIT, || async {
        let s = snapshot(&pods).await;
        (s.len() == 3 && s.values().all(|p| p.0 && !p.1 && p.2 == "nginx:1.25")).then_some(())
    })
    .await;
    let crs = c.ok(&["get", "controllerrevisions", "-o", "name"]).await;
    assert_eq!(
        crs.lines().count(),
        2,
        "the undone-to template reuses its revision: {crs}"
    );
    let again = c
        .ok(&["rollout", "undo", "sts/app", "--to-revision=3"])
        .await;
    assert!(again.contains("skipped rollback"), "{again}");
}

/// OnDelete leaves running pods alone and gives re-created ones the new template; a Failed pod
/// is re-created under its name; `whenScaled: Delete` removes a scaled-down ordinal's claim;
/// `delete --cascade=orphan` then re-creating the set adopts the pods (same uids);
/// `whenDeleted: Delete` makes the claims go with the set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_on_delete_failed_pods_orphans_and_claim_policies() {
    let c = start().await;
    let _node = fake_node(&c, "node-a", fake_kubelet().await).await;
    let extra = r#"  updateStrategy: {type: OnDelete}
  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Delete}
  volumeClaimTemplates:
  - metadata: {name: www}
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests: {storage: 1Gi}
"#;
    // The built-in provisioner makes volumes under the node's local-path root (which a real
    // agent announces): the claims bind once their pods are scheduled.
    c.ok(&[
        "annotate",
        "node",
        "node-a",
        "rktup.io/local-path-root=/var/lib/rktup/local-path",
    ])
    .await;
    let manifest = sts("od", 2, "Parallel", extra);
    c.apply_stdin(&["apply", "-f", "-"], &manifest).await;
    let pods: Api<Pod> = Api::namespaced(c.admin().await, "default");
    eventually("2 ready", WAIT, || async {
        (ready_names(&snapshot(&pods).await).len() == 2).then_some(())
    })
    .await;
    let pvc = json(&c, &["get", "pvc", "www-od-0"]).await;
    assert_eq!(
        pvc["metadata"]["ownerReferences"][0]["kind"], "StatefulSet",
        "{pvc}"
    );
    assert_eq!(pvc["metadata"]["ownerReferences"][0]["controller"], false);

    // OnDelete: the new template waits for someone to delete a pod.
    c.ok(&["set", "image", "sts/od", "c=nginx:1.27"]).await;
    eventually("generation 2 observed", WAIT, || async {
        let s = json(&c, &["get", "sts", "od"]).await;
        (s["status"]["observedGeneration"] == 2
            && s["status"]["updateRevision"] != s["status"]["currentRevision"])
            .then_some(())
    })
    .await;
    let s = snapshot(&pods).await;
    assert!(
        s.values().all(|p| p.2 == "nginx:1.25"),
        "OnDelete rolled: {s:?}"
    );
    c.ok(&["delete", "pod", "od-1", "--wait=false"]).await;
    eventually("od-1 on the new template", WAIT, || async {
        let s = snapshot(&pods).await;
        (s.get("od-1")
            .is_some_and(|p| p.0 && !p.1 && p.2 == "nginx:1.27"))
        .then_some(s)
    })
    .await;
    assert_eq!(snapshot(&pods).await["od-0"].2, "nginx:1.25");

    // A Failed pod is replaced under its name.
    let old_uid = json(&c, &["get", "pod", "od-0"]).await["metadata"]["uid"].clone();
    c.ok(&[
        "patch",
        "pod",
        "od-0",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Failed"}}"#,
    ])
    .await;
    eventually("od-0 re-created", WAIT, || async {
        let p = json(&c, &["get", "pods"]).await;
        p["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| {
                p["metadata"]["name"] == "od-0"
                    && p["metadata"]["uid"] != old_uid
                    && p["status"]["phase"] == "Running"
            })
            .then_some(())
    })
    .await;

    // whenScaled: Delete.
    c.ok(&["scale", "sts", "od", "--replicas=1"]).await;
    eventually("od-1 and its claim gone", WAIT, || async {
        let s = snapshot(&pods).await;
        let pvcs = json(&c, &["get", "pvc"]).await;
        let claim_left = pvcs["items"].as_array().into_iter().flatten().any(|p| {
            p["metadata"]["name"] == "www-od-1" && p["metadata"].get("deletionTimestamp").is_none()
        });
        (!s.contains_key("od-1") && !claim_left).then_some(())
    })
    .await;
    json(&c, &["get", "pvc", "www-od-0"]).await;

    // Orphaned, then adopted by a new set of the same name.
    let uid0 = json(&c, &["get", "pod", "od-0"]).await["metadata"]["uid"].clone();
    c.ok(&["delete", "sts", "od", "--cascade=orphan"]).await;
    eventually("od-0 orphaned", WAIT, || async {
        let p = json(&c, &["get", "pod", "od-0"]).await;
        p["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|a| a.is_empty())
            .then_some(())
    })
    .await;
    c.apply_stdin(
        &["apply", "-f", "-"],
        &manifest.replace("replicas: 2", "replicas: 1"),
    )
    .await;
    let new_sts = json(&c, &["get", "sts", "od"]).await["metadata"]["uid"].clone();
    eventually("od-0 adopted", WAIT, || async {
        let p = json(&c, &["get", "pod", "od-0"]).await;
        (p["metadata"]["ownerReferences"][0]["uid"] == new_sts).then_some(p)
    })
    .await;
    assert_eq!(
        json(&c, &["get", "pod", "od-0"]).await["metadata"]["uid"],
        uid0
    );
    // The kept claim is tied to the new set too.
    eventually("claim owned by the new set", WAIT, || async {
        let pvc = json(&c, &["get", "pvc", "www-od-0"]).await;
        (pvc["metadata"]["ownerReferences"][0]["uid"] == new_sts).then_some(())
    })
    .await;

    // whenDeleted: Delete.
    c.ok(&["delete", "sts", "od"]).await;
    eventually("claims collected with the set", WAIT, || async {
        let pvcs = json(&c, &["get", "pvc"]).await;
        let left = pvcs["items"].as_array().into_iter().flatten().any(|p| {
            p["metadata"]["name"] == "www-od-0" && p["metadata"].get("deletionTimestamp").is_none()
        });
        (!left).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_and_workload_validation() {
    let c = start().await;
    c.apply_stdin(&["apply", "-f", "-"], &sts("v", 0, "OrderedReady", ""))
        .await;
    let out = c
        .kubectl(&[
            "patch",
            "sts",
            "v",
            "-p",
            r#"{"spec":{"serviceName":"other"}}"#,
        ])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(r#"The StatefulSet "v" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"#),
        "{err}"
    );
    // Mutable ones pass.
    c.ok(&[
        "patch",
        "sts",
        "v",
        "-p",
        r#"{"spec":{"replicas":0,"minReadySeconds":5}}"#,
    ])
    .await;
    let bad = sts("w", 1, "Sometimes", "");
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(&bad)).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"spec.podManagementPolicy: Invalid value: "Sometimes": must be 'OrderedReady' or 'Parallel'"#),
        "{err}"
    );
    let mismatch = sts("m", 1, "Parallel", "").replace("labels: {app: m}", "labels: {app: other}");
    let out = c
        .kubectl_stdin(&["apply", "-f", "-"], Some(&mismatch))
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"spec.template.metadata.labels: Invalid value: map[string]string{"app":"other"}: `selector` does not match template `labels`"#),
        "{err}"
    );

    for (schedule, tz, want) in [
        (
            "bad",
            "",
            r#"spec.schedule: Invalid value: "bad": expected exactly 5 fields, found 1: [bad]"#,
        ),
        (
            "61 * * * *",
            "",
            r#"spec.schedule: Invalid value: "61 * * * *": end of range (61) above maximum (59): 61"#,
        ),
        (
            "@daily",
            "timeZone: Mars/Olympus",
            r#"spec.timeZone: Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus"#,
        ),
    ] {
        let cj = cronjob("cj", schedule, &format!("  {tz}\n"));
        let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(&cj)).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{schedule}: {err}"
        );
    }
    let cj = cronjob("cj", "@hourly", "  concurrencyPolicy: Sometimes\n");
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(&cj)).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"spec.concurrencyPolicy: Unsupported value: "Sometimes": supported values: "Allow", "Forbid", "Replace""#),
        "{err}"
    );
    // A real zone and a macro are accepted, with upstream's defaults.
    c.apply_stdin(
        &["apply", "-f", "-"],
        &cronjob("ok", "@daily", "  timeZone: Europe/Berlin\n"),
    )
    .await;
    let cj = json(&c, &["get", "cronjob", "ok"]).await;
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
    assert_eq!(cj["spec"]["suspend"], false);
    assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
    assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);

    let pt = "apiVersion: v1\nkind: PodTemplate\nmetadata: {name: pt}\ntemplate:\n  spec: {}\n";
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(pt)).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("template.spec.containers: Required value"),
        "{err}"
    );
    let rc = r#"
apiVersion: v1
kind: ReplicationController
metadata: {name: rc}
spec:
  selector: {app: one}
  template:
    metadata: {labels: {app: two}}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: nginx}]
"#;
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(rc)).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`selector` does not match template `labels`"),
        "{err}"
    );
    assert!(
        err.contains(r#"spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always""#),
        "{err}"
    );

    let hpa = r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: h}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 3
  maxReplicas: 2
"#;
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(hpa)).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"
        ),
        "{err}"
    );
    c.apply_stdin(
        &["apply", "-f", "-"],
        &hpa.replace("maxReplicas: 2", "maxReplicas: 5"),
    )
    .await;
    let h = json(&c, &["get", "hpa", "h"]).await;
    assert_eq!(h["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert_eq!(
        h["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        80
    );
}

fn cronjob(name: &str, schedule: &str, extra_spec: &str) -> String {
    format!(
        r#"
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {name}
spec:
  schedule: "{schedule}"
{extra_spec}  jobTemplate:
    metadata:
      labels: {{made-by: {name}}}
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: c
            image: busybox:1.36
            command: [date]
"#
    )
}

/// Our Jobs of CronJob `cj`, by name.
async fn jobs_of(c: &Cluster, cj: &str) -> BTreeMap<String, Value> {
    let list = json(c, &["get", "jobs"]).await;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|j| j["metadata"]["ownerReferences"][0]["name"] == cj)
        .map(|j| {
            (
                j["metadata"]["name"].as_str().unwrap_or("").to_string(),
                j.clone(),
            )
        })
        .collect()
}

/// A Job per schedule time (the clock moved an hour at a time), named by the scheduled minute,
/// annotated and owned; finished Jobs pruned to the history limit; status kept; suspend stops;
/// `kubectl create job --from=cronjob/..` works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_runs_on_schedule_with_history_and_suspend() {
    let clock = Clock::new();
    let c = start_with_clock(&clock).await;
    let _node = fake_node(&c, "node-a", fake_kubelet().await).await;
    c.apply_stdin(
        &["apply", "-f", "-"],
        &cronjob("tick", "0 * * * *", "  successfulJobsHistoryLimit: 2\n"),
    )
    .await;
    c.apply_stdin(&["apply", "-f", "-"], &cronjob("witness", "0 * * * *", ""))
        .await;
    let mut seen: Vec<String> = Vec::new();
    for round in 1..=3 {
        clock.advance(3600);
        let jobs = eventually("a job for this hour", WAIT, || async {
            let jobs = jobs_of(&c, "tick").await;
            let new: Vec<&String> = jobs.keys().filter(|n| !seen.contains(n)).collect();
            let done = jobs.values().all(|j| {
                j["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Complete"))
            });
            (new.len() == 1 && done).then_some(jobs)
        })
        .await;
        let new = jobs
            .keys()
            .find(|n| !seen.contains(n))
            .cloned()
            .expect("new job");
        let job = &jobs[&new];
        let minutes: i64 = new
            .strip_prefix("tick-")
            .and_then(|m| m.parse().ok())
            .expect("name is <cronjob>-<minutes>");
        assert_eq!(minutes % 60, 0, "on the hour: {new}");
        let stamp = job["metadata"]["annotations"]
            ["batch.kubernetes.io/cronjob-scheduled-timestamp"]
            .as_str()
            .expect("scheduled-timestamp annotation");
        let t: jiff::Timestamp = stamp.parse().expect("RFC 3339");
        assert_eq!(t.as_second(), minutes * 60, "{stamp}");
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
        assert_eq!(job["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(job["metadata"]["labels"]["made-by"], "tick");
        seen.push(new);
        if round == 3 {
            // Three finished, limit two: the oldest goes.
            eventually("history pruned to 2", WAIT, || async {
                let jobs = jobs_of(&c, "tick").await;
                (jobs.len() == 2 && !jobs.contains_key(&seen[0])).then_some(())
            })
            .await;
        }
    }
    let cj = eventually("status", WAIT, || async {
        let cj = json(&c, &["get", "cronjob", "tick"]).await;
        (cj["status"]["lastSuccessfulTime"].is_string() && cj["status"].get("active").is_none())
            .then_some(cj)
    })
    .await;
    let last: jiff::Timestamp = cj["status"]["lastScheduleTime"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("lastScheduleTime");
    let minutes: i64 = seen[2]
        .strip_prefix("tick-")
        .and_then(|m| m.parse().ok())
        .expect("minutes");
    assert_eq!(last.as_second(), minutes * 60);
    let ev = c
        .ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=tick",
        ])
        .await;
    assert!(
        ev.contains("SawCompletedJob") && ev.contains("SuccessfulCreate"),
        "{ev}"
    );
    let table = c.ok(&["get", "cronjobs"]).await;
    assert!(
        table.contains("tick") && table.contains("0 * * * *"),
        "{table}"
    );

    // Suspended: the witness gets its next job, `tick` does not.
    c.ok(&[
        "patch",
        "cronjob",
        "tick",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ])
    .await;
    let witness_before = jobs_of(&c, "witness").await.len();
    let tick_before = jobs_of(&c, "tick").await;
    clock.advance(3600);
    eventually("the witness ran", WAIT, || async {
        (jobs_of(&c, "witness").await.len() > witness_before).then_some(())
    })
    .await;
    // Passes run for all CronJobs together: `tick` was looked at in the same pass.
    let tick_after = jobs_of(&c, "tick").await;
    assert_eq!(
        tick_after.keys().collect::<Vec<_>>(),
        tick_before.keys().collect::<Vec<_>>(),
        "suspended"
    );

    // A Job made by hand from the CronJob's template.
    c.ok(&["create", "job", "manual", "--from=cronjob/tick"])
        .await;
    let j = json(&c, &["get", "job", "manual"]).await;
    assert_eq!(
        j["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(j["metadata"]["ownerReferences"][0]["name"], "tick");
    assert_eq!(
        j["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.36"
    );
}

/// The clock moved to 35 minutes past an hour (UTC), at least an hour ahead: a UTC hourly
/// schedule ran at the full hour, the same schedule in Asia/Kolkata (UTC+05:30) at half past
/// with the zone's offset in the annotation, and one with a 10 s starting deadline not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_time_zone_and_starting_deadline() {
    let clock = Clock::new();
    let c = start_with_clock(&clock).await;
    c.apply_stdin(&["apply", "-f", "-"], &cronjob("utc", "0 * * * *", ""))
        .await;
    c.apply_stdin(
        &["apply", "-f", "-"],
        &cronjob("ist", "0 * * * *", "  timeZone: Asia/Kolkata\n"),
    )
    .await;
    c.apply_stdin(
        &["apply", "-f", "-"],
        &cronjob("late", "0 * * * *", "  startingDeadlineSeconds: 10\n"),
    )
    .await;
    let now = jiff::Timestamp::now().as_second();
    clock.advance(3600 + (2100 - now % 3600).rem_euclid(3600));
    let (utc, ist) = eventually("utc and ist jobs", WAIT, || async {
        let u = jobs_of(&c, "utc").await;
        let i = jobs_of(&c, "ist").await;
        (u.len() == 1 && i.len() == 1).then(|| {
            (
                u.into_values().next().unwrap_or_default(),
                i.into_values().next().unwrap_or_default(),
            )
        })
    })
    .await;
    let minutes = |j: &Value, prefix: &str| -> i64 {
        j["metadata"]["name"]
            .as_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|m| m.parse().ok())
            .expect("<cronjob>-<minutes>")
    };
    assert_eq!(minutes(&utc, "utc-") % 60, 0);
    assert_eq!(minutes(&ist, "ist-") % 60, 30, "00 in +05:30 is :30 UTC");
    let stamp = ist["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .expect("annotation");
    assert!(stamp.ends_with(":00:00+05:30"), "{stamp}");
    let stamp = utc["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .expect("annotation");
    assert!(stamp.ends_with(":00:00Z"), "{stamp}");
    // One pass looks at all three: the deadline one was passed over.
    assert!(jobs_of(&c, "late").await.is_empty());
}

/// Without a node Jobs never finish: Forbid skips a time while one is active (and says so in
/// an event), Replace deletes the active Job and runs the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_concurrency_forbid_and_replace() {
    let clock = Clock::new();
    let c = start_with_clock(&clock).await;
    c.apply_stdin(
        &["apply", "-f", "-"],
        &cronjob("forbid", "0 * * * *", "  concurrencyPolicy: Forbid\n"),
    )
    .await;
    c.apply_stdin(
        &["apply", "-f", "-"],
        &cronjob("replace", "0 * * * *", "  concurrencyPolicy: Replace\n"),
    )
    .await;
    clock.advance(3600);
    let (f1, r1) = eventually("first jobs", WAIT, || async {
        let f = jobs_of(&c, "forbid").await;
        let r = jobs_of(&c, "replace").await;
        (f.len() == 1 && r.len() == 1).then(|| {
            (
                f.keys().next().cloned().unwrap_or_default(),
                r.keys().next().cloned().unwrap_or_default(),
            )
        })
    })
    .await;
    let cj = eventually("active in status", WAIT, || async {
        let cj = json(&c, &["get", "cronjob", "forbid"]).await;
        (cj["status"]["active"][0]["name"] == f1.as_str()).then_some(cj)
    })
    .await;
    assert_eq!(cj["status"]["active"][0]["kind"], "Job");
    clock.advance(3600);
    let r2 = eventually("replaced", WAIT, || async {
        let r = jobs_of(&c, "replace").await;
        let live: Vec<&String> = r
            .iter()
            .filter(|(_, j)| j["metadata"].get("deletionTimestamp").is_none())
            .map(|(n, _)| n)
            .collect();
        (live.len() == 1 && live[0] != &r1).then(|| live[0].clone())
    })
    .await;
    assert_ne!(r1, r2);
    eventually("Forbid said why it skipped", WAIT, || async {
        let ev = c
            .ok(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=forbid",
            ])
            .await;
        ev.contains("JobAlreadyActive").then_some(())
    })
    .await;
    let f = jobs_of(&c, "forbid").await;
    assert_eq!(
        f.keys().collect::<Vec<_>>(),
        [&f1],
        "Forbid: still only the first"
    );
    // The controller looks every second; the skip is reported once for its scheduled time.
    let ev = json(
        &c,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=forbid,reason=JobAlreadyActive",
        ],
    )
    .await;
    assert_eq!(ev["items"].as_array().map(Vec::len), Some(1), "{ev}");
}

/// ReplicationControllers: pods kept at the count, `kubectl scale rc`, `get rc`, cascade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_controller_scale_replace_and_cascade() {
    let c = start().await;
    let _node = fake_node(&c, "node-a", fake_kubelet().await).await;
    let rc = r#"
apiVersion: v1
kind: ReplicationController
metadata:
  name: rc1
spec:
  replicas: 2
  template:
    metadata:
      labels: {app: rc1}
    spec:
      containers:
      - name: c
        image: nginx:1.25
"#;
    c.apply_stdin(&["apply", "-f", "-"], rc).await;
    let got = json(&c, &["get", "rc", "rc1"]).await;
    assert_eq!(
        got["spec"]["selector"]["app"], "rc1",
        "selector defaulted from the template"
    );
    assert_eq!(got["metadata"]["labels"]["app"], "rc1");
    let pods: Api<Pod> = Api::namespaced(c.admin().await, "default");
    eventually("2 ready", WAIT, || async {
        (ready_names(&snapshot(&pods).await).len() == 2).then_some(())
    })
    .await;
    c.ok(&["scale", "rc", "rc1", "--replicas=3"]).await;
    let names = eventually("3 ready", WAIT, || async {
        let r = ready_names(&snapshot(&pods).await);
        (r.len() == 3).then_some(r)
    })
    .await;
    let p = json(&c, &["get", "pod", &names[0]]).await;
    assert_eq!(
        p["metadata"]["ownerReferences"][0]["kind"],
        "ReplicationController"
    );
    c.ok(&["delete", "pod", &names[0], "--wait=false"]).await;
    eventually("replaced", WAIT, || async {
        let r = ready_names(&snapshot(&pods).await);
        (r.len() == 3 && !r.contains(&names[0])).then_some(())
    })
    .await;
    let rc = eventually("rc status", WAIT, || async {
        let rc = json(&c, &["get", "rc", "rc1"]).await;
        (rc["status"]["readyReplicas"] == 3).then_some(rc)
    })
    .await;
    assert_eq!(rc["status"]["replicas"], 3);
    let table = c.ok(&["get", "rc"]).await;
    assert!(table.contains("rc1"), "{table}");
    let scale = raw(
        &c,
        "/api/v1/namespaces/default/replicationcontrollers/rc1/scale",
    )
    .await;
    assert_eq!(scale["status"]["selector"], "app=rc1");
    c.ok(&["delete", "rc", "rc1"]).await;
    eventually("pods collected", WAIT, || async {
        snapshot(&pods).await.is_empty().then_some(())
    })
    .await;
}
