//! Persistent volumes (issue 15 §3, control-plane part) with the real kubectl: static binding
//! (smallest fit, `volumeName`, a claim that fits nothing), both sides written as upstream's PV
//! controller writes them, Released/Retain and Delete, the default StorageClass `standard` and
//! DefaultStorageClass admission, WaitForFirstConsumer provisioning on the pod's node through the
//! scheduler, volume node affinity, and the 422s of PV/PVC/StorageClass validation.

use rktup_testkit::controlplane::{eventually, fake_node, start, Cluster};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

async fn get(c: &Cluster, args: &[&str]) -> Option<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let out = c.kubectl(&a).await;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

async fn apply(c: &Cluster, obj: Value) {
    c.apply_stdin(&["apply", "-f", "-"], &obj.to_string()).await;
}

/// kubectl that must fail; returns stderr.
async fn refused(c: &Cluster, args: &[&str], stdin: Option<&str>) -> String {
    let out = c.kubectl_stdin(args, stdin).await;
    assert!(
        !out.status.success(),
        "kubectl {args:?} should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pv(name: &str, size: &str, policy: &str, extra: Value) -> Value {
    let mut v = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": policy, "storageClassName": "",
            "hostPath": {"path": format!("/tmp/rktup-test-pv/{name}")},
        },
    });
    if let (Some(s), Some(x)) = (v["spec"].as_object_mut(), extra.as_object()) {
        for (k, val) in x {
            s.insert(k.clone(), val.clone());
        }
    }
    v
}

fn pvc(name: &str, size: &str, extra: Value) -> Value {
    let mut v = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    });
    if let (Some(s), Some(x)) = (v["spec"].as_object_mut(), extra.as_object()) {
        for (k, val) in x {
            s.insert(k.clone(), val.clone());
        }
    }
    v
}

/// A busybox pod in default that mounts claim `claim` as volume `d`.
fn claim_pod(name: &str, claim: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}],
                 "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]}})
}

/// Waits for pod `name` to be given a node; returns it.
async fn scheduled(c: &Cluster, name: &str) -> Value {
    eventually(&format!("{name} scheduled"), WAIT, || async {
        get(c, &["pod", name])
            .await
            .filter(|p| p["spec"]["nodeName"].is_string())
    })
    .await
}

fn phase(o: &Value) -> &str {
    o.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

async fn wait_phase(c: &Cluster, kind: &str, name: &str, want: &str) -> Value {
    eventually(&format!("{kind}/{name} {want}"), WAIT, || async {
        get(c, &[kind, name]).await.filter(|o| phase(o) == want)
    })
    .await
}

/// The reasons and messages of the events about an object.
async fn events_of(c: &Cluster, name: &str) -> Vec<(String, String)> {
    let sel = format!("involvedObject.name={name}");
    get(c, &["events", "-A", "--field-selector", &sel])
        .await
        .and_then(|l| l["items"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn wait_event(c: &Cluster, name: &str, reason: &str, msg: &str) {
    eventually(&format!("{reason} event on {name}"), WAIT, || async {
        events_of(c, name)
            .await
            .iter()
            .any(|(r, m)| r == reason && m.contains(msg))
            .then_some(())
    })
    .await;
}

/// Static binding picks the smallest fitting volume, binds both sides with upstream's fields,
/// honours volumeName, leaves an unfittable claim Pending with FailedBinding; deleting claims
/// releases (Retain) or deletes (Delete) their volumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_binding_and_reclaim() {
    let c = start().await;
    apply(&c, pv("keep-1g", "1Gi", "Retain", json!({}))).await;
    apply(&c, pv("del-5g", "5Gi", "Delete", json!({}))).await;
    wait_phase(&c, "pv", "keep-1g", "Available").await;
    wait_phase(&c, "pv", "del-5g", "Available").await;

    apply(&c, pvc("small", "500Mi", json!({"storageClassName": ""}))).await;
    let claim = wait_phase(&c, "pvc", "small", "Bound").await;
    assert_eq!(claim["spec"]["volumeName"], "keep-1g", "the smallest fit");
    assert_eq!(
        claim["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"],
        "yes"
    );
    assert_eq!(
        claim["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"],
        "yes"
    );
    assert_eq!(claim["status"]["capacity"]["storage"], "1Gi");
    assert_eq!(claim["status"]["accessModes"], json!(["ReadWriteOnce"]));
    let vol = wait_phase(&c, "pv", "keep-1g", "Bound").await;
    assert!(
        vol["status"]["lastPhaseTransitionTime"].is_string(),
        "{vol}"
    );
    let r = &vol["spec"]["claimRef"];
    assert_eq!(
        (&r["kind"], &r["namespace"], &r["name"], &r["uid"]),
        (
            &json!("PersistentVolumeClaim"),
            &json!("default"),
            &json!("small"),
            &claim["metadata"]["uid"]
        )
    );
    assert_eq!(
        vol["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"],
        "yes"
    );

    apply(&c, pvc("big", "2Gi", json!({"storageClassName": ""}))).await;
    let big = wait_phase(&c, "pvc", "big", "Bound").await;
    assert_eq!(big["spec"]["volumeName"], "del-5g");

    // Nothing fits: Pending, with upstream's FailedBinding.
    apply(&c, pvc("huge", "50Gi", json!({"storageClassName": ""}))).await;
    wait_event(
        &c,
        "huge",
        "FailedBinding",
        "no persistent volumes available for this claim and no storage class is set",
    )
    .await;
    assert_eq!(
        phase(&get(&c, &["pvc", "huge"]).await.expect("huge")),
        "Pending"
    );

    // volumeName: the claim waits for its volume, then binds to it even though another fits.
    apply(
        &c,
        pvc(
            "named",
            "1Gi",
            json!({"storageClassName": "", "volumeName": "chosen"}),
        ),
    )
    .await;
    apply(&c, pv("spare", "1Gi", "Retain", json!({}))).await;
    wait_phase(&c, "pv", "spare", "Available").await;
    assert_eq!(
        phase(&get(&c, &["pvc", "named"]).await.expect("named")),
        "Pending"
    );
    apply(&c, pv("chosen", "3Gi", "Retain", json!({}))).await;
    let named = wait_phase(&c, "pvc", "named", "Bound").await;
    assert_eq!(named["spec"]["volumeName"], "chosen");
    assert!(
        named["metadata"]["annotations"]
            .get("pv.kubernetes.io/bound-by-controller")
            .is_none(),
        "the user set volumeName: {named}"
    );

    // A bound claim's spec is immutable except for growing its request.
    let err = refused(
        &c,
        &[
            "patch",
            "pvc",
            "small",
            "-p",
            r#"{"spec":{"accessModes":["ReadWriteMany"]}}"#,
        ],
        None,
    )
    .await;
    assert!(
        err.contains("spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"),
        "{err}"
    );
    let err = refused(
        &c,
        &[
            "patch",
            "pvc",
            "small",
            "-p",
            r#"{"spec":{"resources":{"requests":{"storage":"100Mi"}}}}"#,
        ],
        None,
    )
    .await;
    assert!(
        err.contains(
            "spec.resources.requests.storage: Forbidden: field can not be less than previous value"
        ),
        "{err}"
    );
    c.ok(&[
        "patch",
        "pvc",
        "small",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"1Gi"}}}}"#,
    ])
    .await;

    // Claims go: Retain keeps a Released volume, Delete deletes it.
    c.ok(&["delete", "pvc", "small", "big"]).await;
    let released = wait_phase(&c, "pv", "keep-1g", "Released").await;
    assert_eq!(released["spec"]["claimRef"]["name"], "small");
    eventually("del-5g deleted", WAIT, || async {
        get(&c, &["pv", "del-5g"]).await.is_none().then_some(())
    })
    .await;
    // A Released volume is not bound again.
    apply(&c, pvc("again", "500Mi", json!({"storageClassName": ""}))).await;
    let again = wait_phase(&c, "pvc", "again", "Bound").await;
    assert_eq!(again["spec"]["volumeName"], "spare");
    assert_eq!(
        again["metadata"]["finalizers"],
        json!(["kubernetes.io/pvc-protection"])
    );
    let spare = get(&c, &["pv", "spare"]).await.expect("spare");
    assert_eq!(
        spare["metadata"]["finalizers"],
        json!(["kubernetes.io/pv-protection"])
    );
    // A claim a pod uses is kept (Terminating) until the pod is gone.
    apply(&c, claim_pod("holder", "again")).await;
    c.ok(&["delete", "pvc", "again", "--wait=false"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = get(&c, &["pvc", "again"]).await.expect("still there");
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    assert_eq!(
        phase(&get(&c, &["pv", "spare"]).await.expect("spare")),
        "Bound"
    );
    c.ok(&["delete", "pod", "holder", "--grace-period=0", "--force"])
        .await;
    eventually("again gone", WAIT, || async {
        get(&c, &["pvc", "again"]).await.is_none().then_some(())
    })
    .await;
    wait_phase(&c, "pv", "spare", "Released").await;
    let out = c.ok(&["get", "pv,pvc"]).await;
    for name in ["keep-1g", "spare", "chosen", "named", "huge"] {
        assert!(out.contains(name), "{name} in {out}");
    }
}

/// The default class exists at start; a claim without a class gets it; StorageClass and PV
/// validation and immutability answer 422 with upstream's texts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_class_and_validation() {
    let c = start().await;
    let sc = get(&c, &["storageclass", "standard"])
        .await
        .expect("standard");
    assert_eq!(sc["provisioner"], "rktup.io/local-path");
    assert_eq!(sc["volumeBindingMode"], "WaitForFirstConsumer");
    assert_eq!(sc["reclaimPolicy"], "Delete");
    assert_eq!(
        sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
    let out = c.ok(&["get", "sc"]).await;
    assert!(out.contains("standard"), "{out}");

    apply(&c, pvc("classless", "1Gi", json!({}))).await;
    let got = get(&c, &["pvc", "classless"]).await.expect("claim");
    assert_eq!(got["spec"]["storageClassName"], "standard");
    assert_eq!(got["spec"]["volumeMode"], "Filesystem");
    assert_eq!(phase(&got), "Pending");
    wait_event(
        &c,
        "classless",
        "WaitForFirstConsumer",
        "waiting for first consumer to be created before binding",
    )
    .await;
    // "" asks for no class: left alone.
    apply(&c, pvc("none", "1Gi", json!({"storageClassName": ""}))).await;
    let none = get(&c, &["pvc", "none"]).await.expect("claim");
    assert_eq!(none["spec"]["storageClassName"], "");

    // StorageClass: provisioner required, enums, immutable fields.
    let err = refused(
        &c,
        &["create", "-f", "-"],
        Some(&json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "bad"}, "provisioner": "", "reclaimPolicy": "Recycle"}).to_string()),
    )
    .await;
    assert!(err.contains("provisioner: Required value"), "{err}");
    assert!(
        err.contains(
            r#"reclaimPolicy: Unsupported value: "Recycle": supported values: "Delete", "Retain""#
        ),
        "{err}"
    );
    let err = refused(
        &c,
        &[
            "patch",
            "sc",
            "standard",
            "-p",
            r#"{"provisioner":"other.io/x","volumeBindingMode":"Immediate"}"#,
        ],
        None,
    )
    .await;
    assert!(
        err.contains("provisioner: Forbidden: updates to provisioner are forbidden."),
        "{err}"
    );
    assert!(
        err.contains(r#"volumeBindingMode: Invalid value: "Immediate": field is immutable"#),
        "{err}"
    );

    // PV: one volume type, capacity, access modes; defaults.
    let err = refused(
        &c,
        &["create", "-f", "-"],
        Some(&json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "bad"}, "spec": {"accessModes": ["ReadWriteOnce"]}}).to_string()),
    )
    .await;
    assert!(err.contains("spec.capacity: Required value"), "{err}");
    assert!(
        err.contains("spec: Required value: must specify a volume type"),
        "{err}"
    );
    let err = refused(
        &c,
        &["create", "-f", "-"],
        Some(
            &pv(
                "two",
                "1Gi",
                "Retain",
                json!({"nfs": {"server": "10.0.0.1", "path": "/x"}}),
            )
            .to_string(),
        ),
    )
    .await;
    assert!(
        err.contains("may not specify more than 1 volume type"),
        "{err}"
    );
    let mut defaulted = pv("defaulted", "1Gi", "Retain", json!({}));
    if let Some(s) = defaulted["spec"].as_object_mut() {
        s.remove("persistentVolumeReclaimPolicy");
    }
    apply(&c, defaulted).await;
    let got = get(&c, &["pv", "defaulted"]).await.expect("pv");
    assert_eq!(got["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(got["spec"]["volumeMode"], "Filesystem");
    let err = refused(
        &c,
        &[
            "patch",
            "pv",
            "defaulted",
            "-p",
            r#"{"spec":{"hostPath":{"path":"/elsewhere"}}}"#,
        ],
        None,
    )
    .await;
    assert!(
        err.contains("spec.persistentvolumesource: Forbidden"),
        "{err}"
    );

    // PVC: access modes and a storage request.
    let err = refused(
        &c,
        &["create", "-f", "-"],
        Some(&json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "bad", "namespace": "default"}, "spec": {}}).to_string()),
    )
    .await;
    assert!(
        err.contains("spec.accessModes: Required value: at least 1 access mode is required"),
        "{err}"
    );
    assert!(
        err.contains("spec.resources[storage]: Required value"),
        "{err}"
    );
}

/// WaitForFirstConsumer: the claim waits; a pod using it is placed on a node that can hold a
/// local-path volume (the one whose agent announced a root), the claim is annotated with that
/// node, the volume is made there (hostPath under the root, node affinity) and bound, and only
/// then is the pod bound. A pod whose volume lives on another node follows it; a missing claim
/// keeps a pod unscheduled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_first_consumer_provisions_on_the_pods_node() {
    let c = start().await;
    let _n1 = fake_node(&c, "plain-node", 0).await;
    let _n2 = fake_node(&c, "disk-node", 0).await;
    c.ok(&[
        "annotate",
        "node",
        "disk-node",
        "rktup.io/local-path-root=/var/lib/rktup-test/local-path",
    ])
    .await;

    apply(&c, pvc("data", "64Mi", json!({}))).await;
    wait_event(
        &c,
        "data",
        "WaitForFirstConsumer",
        "waiting for first consumer",
    )
    .await;
    assert_eq!(
        phase(&get(&c, &["pvc", "data"]).await.expect("pvc")),
        "Pending"
    );
    assert!(get(&c, &["pv"]).await.expect("pvs")["items"]
        .as_array()
        .expect("items")
        .is_empty());

    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "volumeMounts": [{"name": "d", "mountPath": "/data"}]}],
                 "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}});
    apply(&c, pod).await;
    let claim = wait_phase(&c, "pvc", "data", "Bound").await;
    assert_eq!(
        claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        "disk-node"
    );
    assert_eq!(
        claim["metadata"]["annotations"]["volume.kubernetes.io/storage-provisioner"],
        "rktup.io/local-path"
    );
    let uid = claim["metadata"]["uid"].as_str().expect("uid").to_string();
    let pv_name = format!("pvc-{uid}");
    assert_eq!(claim["spec"]["volumeName"], json!(pv_name));
    let vol = wait_phase(&c, "pv", &pv_name, "Bound").await;
    assert_eq!(
        vol["spec"]["hostPath"]["path"],
        json!(format!(
            "/var/lib/rktup-test/local-path/{pv_name}_default_data"
        ))
    );
    assert_eq!(vol["spec"]["hostPath"]["type"], "DirectoryOrCreate");
    assert_eq!(vol["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(vol["spec"]["storageClassName"], "standard");
    assert_eq!(
        vol["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0],
        json!({"key": "kubernetes.io/hostname", "operator": "In", "values": ["disk-node"]})
    );
    assert_eq!(
        vol["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        "rktup.io/local-path"
    );
    wait_event(
        &c,
        "data",
        "ProvisioningSucceeded",
        &format!("Successfully provisioned volume {pv_name}"),
    )
    .await;
    let pod = scheduled(&c, "user").await;
    assert_eq!(pod["spec"]["nodeName"], "disk-node");

    // A second pod of the same claim follows the volume's node affinity.
    apply(&c, claim_pod("user2", "data")).await;
    let pod2 = scheduled(&c, "user2").await;
    assert_eq!(pod2["spec"]["nodeName"], "disk-node");

    // A missing claim: unschedulable with the scheduler's words.
    apply(&c, claim_pod("lost", "nope")).await;
    wait_event(
        &c,
        "lost",
        "FailedScheduling",
        r#"0/2 nodes are available: persistentvolumeclaim "nope" not found."#,
    )
    .await;
    // An unbound Immediate claim also holds the pod back.
    apply(&c, pvc("imm", "1Gi", json!({"storageClassName": ""}))).await;
    apply(&c, claim_pod("waits", "imm")).await;
    wait_event(
        &c,
        "waits",
        "FailedScheduling",
        "pod has unbound immediate PersistentVolumeClaims",
    )
    .await;
    // A volume for it appears: it binds, and the pod is scheduled.
    apply(&c, pv("late", "1Gi", "Retain", json!({}))).await;
    scheduled(&c, "waits").await;

    // A pod given its node directly is the first consumer too: its node gets the volume.
    apply(&c, pvc("pinned-data", "8Mi", json!({}))).await;
    let mut pinned = claim_pod("pinned", "pinned-data");
    pinned["spec"]["nodeName"] = json!("disk-node");
    apply(&c, pinned).await;
    let pinned_claim = wait_phase(&c, "pvc", "pinned-data", "Bound").await;
    assert_eq!(
        pinned_claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        "disk-node"
    );

    // A node chosen that cannot hold local-path volumes: the choice is dropped (reschedule).
    let mut resched = pvc("resched", "8Mi", json!({}));
    resched["metadata"]["annotations"] =
        json!({"volume.kubernetes.io/selected-node": "plain-node"});
    apply(&c, resched).await;
    wait_event(
        &c,
        "resched",
        "ProvisioningFailed",
        r#"node "plain-node" has no local-path root"#,
    )
    .await;
    eventually("selected-node dropped", WAIT, || async {
        get(&c, &["pvc", "resched"]).await.filter(|p| {
            p.pointer("/metadata/annotations/volume.kubernetes.io~1selected-node")
                .is_none()
        })
    })
    .await;

    // Static local volumes of a no-provisioner WaitForFirstConsumer class: the scheduler picks
    // the node whose volume fits and pre-binds it.
    apply(
        &c,
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "local-storage"}, "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "WaitForFirstConsumer"}),
    )
    .await;
    for (name, node) in [("local-plain", "plain-node"), ("local-disk", "disk-node")] {
        apply(
            &c,
            json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"], "storageClassName": "local-storage",
                "local": {"path": format!("/mnt/{name}")},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}}),
        )
        .await;
    }
    apply(
        &c,
        pvc(
            "local-claim",
            "100Mi",
            json!({"storageClassName": "local-storage"}),
        ),
    )
    .await;
    wait_event(
        &c,
        "local-claim",
        "WaitForFirstConsumer",
        "waiting for first consumer",
    )
    .await;
    apply(&c, claim_pod("local-user", "local-claim")).await;
    let local_claim = wait_phase(&c, "pvc", "local-claim", "Bound").await;
    let local_pod = scheduled(&c, "local-user").await;
    // The pod is on the node of the volume it got (either fits; spreading decides).
    let want = match local_pod["spec"]["nodeName"].as_str() {
        Some("plain-node") => "local-plain",
        _ => "local-disk",
    };
    assert_eq!(local_claim["spec"]["volumeName"], want, "{local_pod}");
    let other = if want == "local-plain" {
        "local-disk"
    } else {
        "local-plain"
    };
    assert_eq!(
        phase(&get(&c, &["pv", other]).await.expect("pv")),
        "Available"
    );

    // A generic ephemeral volume: its claim `<pod>-<volume>` is made for the pod (owned by it),
    // provisioned on the pod's node, and goes with the pod.
    let eph = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "eph", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}],
                 "volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
                     "metadata": {"labels": {"kind": "scratch"}},
                     "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "8Mi"}}}}}}]}});
    apply(&c, eph).await;
    let eph_claim = wait_phase(&c, "pvc", "eph-scratch", "Bound").await;
    let eph_pod = get(&c, &["pod", "eph"]).await.expect("eph");
    assert_eq!(
        eph_claim["metadata"]["ownerReferences"][0]["uid"],
        eph_pod["metadata"]["uid"]
    );
    assert_eq!(eph_claim["metadata"]["labels"]["kind"], "scratch");
    assert_eq!(eph_claim["spec"]["storageClassName"], "standard");
    eventually("eph bound to disk-node", WAIT, || async {
        get(&c, &["pod", "eph"])
            .await
            .filter(|p| p["spec"]["nodeName"] == "disk-node")
    })
    .await;
    let eph_pv = eph_claim["spec"]["volumeName"]
        .as_str()
        .expect("volume")
        .to_string();
    // A claim of that name not made for the pod keeps another pod off.
    apply(&c, pvc("impostor-scratch", "8Mi", json!({}))).await;
    let impostor = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "impostor", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}],
                 "volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
                     "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "8Mi"}}}}}}]}});
    apply(&c, impostor).await;
    wait_event(
        &c,
        "impostor",
        "FailedScheduling",
        "PVC default/impostor-scratch was not created for pod default/impostor (pod is not owner)",
    )
    .await;
    c.ok(&["delete", "pod", "eph", "impostor", "--wait=false"])
        .await;
    eventually("eph's claim and volume gone", WAIT, || async {
        (get(&c, &["pvc", "eph-scratch"]).await.is_none()
            && get(&c, &["pv", &eph_pv]).await.is_none())
        .then_some(())
    })
    .await;

    // The claim goes once its pods are gone: Delete removes the volume object.
    c.ok(&["delete", "pod", "user", "user2", "--wait=false"])
        .await;
    c.ok(&["delete", "pvc", "data", "--wait=false"]).await;
    eventually("provisioned volume deleted", WAIT, || async {
        get(&c, &["pv", &pv_name]).await.is_none().then_some(())
    })
    .await;
}
