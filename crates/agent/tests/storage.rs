//! Persistent volumes on a real agent (issue 15 §3, node part), against the embedded control
//! plane: a claim of the default class (`standard`, local-path, WaitForFirstConsumer) is
//! provisioned on the node the scheduler picked, in the directory the node announced; a pod
//! writes to it, a second pod after the first is gone reads the data back (a read-only claim
//! mount cannot write); the claim's deletion deletes the volume and the node removes the
//! directory. A missing or unbound claim keeps its pod Pending with FailedMount, never Failed.

use k8s_openapi::api::core::v1::{
    Event, Node as NodeObj, PersistentVolume, PersistentVolumeClaim, Pod,
};
use kube::api::{Api, DeleteParams, ListParams, LogParams};
use rktup_testkit::agent::*;
use std::time::{Duration, Instant};

rktup_testkit::cluster_with_helpers!();

impl Cluster {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), "default")
    }

    fn run(mut self, f: impl FnOnce(&Cluster)) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&self)));
        self.finish(r);
    }

    fn wait_log(&self, name: &str, want: &str, secs: u64) -> String {
        let pods = self.pods();
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let l = self.rt.block_on(pods.logs(name, &LogParams::default()));
            if let Ok(l) = &l {
                if l.contains(want) {
                    return l.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {name} logging {want:?}; last read: {l:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The message of the first Event about `pod` with `reason` containing `text`.
    fn wait_event(&self, pod: &str, reason: &str, text: &str, secs: u64) -> String {
        let events: Api<Event> = Api::namespaced(self.admin.clone(), "default");
        let events = &events;
        self.rt.block_on(async {
            eventually(
                &format!("{reason} event for {pod} with {text:?}"),
                Duration::from_secs(secs),
                || async move {
                    let l = events.list(&ListParams::default()).await.ok()?;
                    l.items.into_iter().find_map(|e| {
                        let m = e.message.clone().unwrap_or_default();
                        (e.reason.as_deref() == Some(reason)
                            && e.involved_object.name.as_deref() == Some(pod)
                            && m.contains(text))
                        .then_some(m)
                    })
                },
            )
            .await
        })
    }

    fn phase(&self, pod: &str) -> String {
        self.rt
            .block_on(self.pods().get(pod))
            .expect("pod")
            .status
            .and_then(|s| s.phase)
            .unwrap_or_default()
    }
}

fn claim(name: &str, class: Option<&str>) -> serde_json::Value {
    let mut spec = serde_json::json!({"accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "16Mi"}}});
    if let Some(c) = class {
        spec["storageClassName"] = serde_json::json!(c);
    }
    serde_json::json!({"metadata": {"name": name}, "spec": spec})
}

fn pod(name: &str, image: &str, claim: &str, read_only: bool, script: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "restartPolicy": "Never",
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}],
            "containers": [{"name": "c", "image": image, "command": ["sh", "-c", script],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]
        }
    })
}

#[test]
fn local_path_claim_keeps_data_across_pods_and_goes_with_its_claim() {
    let test = "local_path_claim_keeps_data_across_pods_and_goes_with_its_claim";
    if !rktup_testkit::can_run_as_root(test, "the agent runs pods") {
        return;
    }
    let c = Cluster(ClusterNode::start("pvc", &[]));
    let (_bridge, _subnet) = c.node.bridge_net("0.4.0");
    c.run(|c| {
        // The node announces its local-path root.
        let nodes: Api<NodeObj> = Api::all(c.admin.clone());
        let root = c.rt.block_on(eventually(
            "local-path root announced",
            Duration::from_secs(30),
            || async {
                let n = nodes.get(&c.node_name).await.ok()?;
                n.metadata
                    .annotations?
                    .get("rktup.io/local-path-root")
                    .cloned()
            },
        ));
        let want_root = std::fs::canonicalize(c.node.root.join("local-path")).expect("root");
        assert_eq!(std::path::Path::new(&root), want_root);

        let _: PersistentVolumeClaim = c.create_json(claim("data", None));
        let _: Pod = c.create_json(pod(
            "writer",
            &c.node.busybox,
            "data",
            false,
            "echo kept > /data/hello && ls -ld /data && echo written && sleep 3600",
        ));
        c.wait_log("writer", "written", 90);
        let claims: Api<PersistentVolumeClaim> = c.api();
        let pvc = c.rt.block_on(claims.get("data")).expect("claim");
        let uid = pvc.metadata.uid.clone().expect("uid");
        assert_eq!(
            pvc.spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref()),
            Some("standard")
        );
        let dir = want_root.join(format!("pvc-{uid}_default_data"));
        assert_eq!(
            std::fs::read_to_string(dir.join("hello")).expect("file on the node"),
            "kept\n"
        );
        let p = c.rt.block_on(c.pods().get("writer")).expect("pod");
        assert_eq!(
            p.spec.and_then(|s| s.node_name).as_deref(),
            Some(c.node_name.as_str())
        );
        c.delete_and_wait("writer");

        // A new pod finds the data; its read-only mount cannot write.
        let _: Pod = c.create_json(pod(
            "reader",
            &c.node.busybox,
            "data",
            true,
            "cat /data/hello; (touch /data/x 2>/dev/null && echo rw) || echo ro; sleep 3600",
        ));
        let log = c.wait_log("reader", "ro", 90);
        assert!(log.starts_with("kept\n"), "{log}");
        assert!(!dir.join("x").exists());
        c.delete_and_wait("reader");

        // The claim goes: the volume (Delete) goes, and the node removes the directory.
        let pv_name = format!("pvc-{uid}");
        c.rt.block_on(claims.delete("data", &DeleteParams::default()))
            .expect("delete claim");
        let pvs: Api<PersistentVolume> = Api::all(c.admin.clone());
        c.rt.block_on(eventually(
            "volume deleted",
            Duration::from_secs(30),
            || async { pvs.get_opt(&pv_name).await.ok()?.is_none().then_some(()) },
        ));
        wait_gone(&dir);

        // A generic ephemeral volume: a claim made for the pod, on this node, gone with the pod.
        let _: Pod = c.create_json(serde_json::json!({
            "metadata": {"name": "scratch"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "volumes": [{"name": "tmp", "ephemeral": {"volumeClaimTemplate": {"spec": {
                    "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "8Mi"}}}}}}],
                "containers": [{"name": "c", "image": c.node.busybox,
                    "command": ["sh", "-c", "echo eph > /tmp/x/f && echo ready && sleep 3600"],
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp/x"}]}]
            }
        }));
        c.wait_log("scratch", "ready", 90);
        let eph = c.rt.block_on(claims.get("scratch-tmp")).expect("ephemeral claim");
        let eph_uid = eph.metadata.uid.clone().expect("uid");
        let eph_dir = want_root.join(format!("pvc-{eph_uid}_default_scratch-tmp"));
        assert_eq!(
            std::fs::read_to_string(eph_dir.join("f")).expect("ephemeral data"),
            "eph\n"
        );
        c.delete_and_wait("scratch");
        c.rt.block_on(eventually(
            "ephemeral claim collected",
            Duration::from_secs(30),
            || async { claims.get_opt("scratch-tmp").await.ok()?.is_none().then_some(()) },
        ));
        wait_gone(&eph_dir);
    });
}

fn wait_gone(dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while dir.exists() {
        assert!(
            Instant::now() < deadline,
            "{} still there after its volume was deleted",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn missing_or_unbound_claims_keep_pods_pending() {
    let test = "missing_or_unbound_claims_keep_pods_pending";
    if !rktup_testkit::can_run_as_root(test, "the agent runs pods") {
        return;
    }
    let c = Cluster(ClusterNode::start("pvcwait", &[]));
    let (_bridge, _subnet) = c.node.bridge_net("0.4.0");
    c.run(|c| {
        // Bound to the node directly, so the scheduler's own checks do not hold them back.
        let on_node = |mut p: serde_json::Value| {
            p["spec"]["nodeName"] = serde_json::json!(c.node_name);
            p
        };
        let _: Pod = c.create_json(on_node(pod(
            "nothing",
            &c.node.busybox,
            "nope",
            false,
            "true",
        )));
        let msg = c.wait_event(
            "nothing",
            "FailedMount",
            r#"persistentvolumeclaims "nope" not found"#,
            60,
        );
        assert!(
            msg.starts_with(r#"MountVolume.SetUp failed for volume "data" : "#),
            "{msg}"
        );
        let _: PersistentVolumeClaim = c.create_json(claim("loose", Some("")));
        let _: Pod = c.create_json(on_node(pod(
            "unbound",
            &c.node.busybox,
            "loose",
            false,
            "echo started; sleep 3600",
        )));
        c.wait_event("unbound", "FailedMount", "PVC is not bound", 60);
        assert_eq!(c.phase("nothing"), "Pending");
        assert_eq!(c.phase("unbound"), "Pending");
        // A volume appears: the claim binds and the waiting pod starts.
        let pvs: Api<PersistentVolume> = Api::all(c.admin.clone());
        let host_dir = c.node.dir.path().join("static-pv");
        std::fs::create_dir_all(&host_dir).expect("mkdir");
        let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("static-{}", c.node_name)},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "storageClassName": "", "hostPath": {"path": host_dir.display().to_string()}}
        }))
        .expect("pv");
        c.rt.block_on(pvs.create(&Default::default(), &pv))
            .expect("create pv");
        c.wait_log("unbound", "started", 90);
        assert_eq!(c.phase("nothing"), "Pending");
        // A volume that lives on another node cannot be mounted here.
        let far: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("far-{}", c.node_name)},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "storageClassName": "", "hostPath": {"path": host_dir.display().to_string()},
                     "claimRef": {"namespace": "default", "name": "far"},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/hostname", "operator": "In", "values": ["another-node"]}]}]}}}
        }))
        .expect("pv");
        c.rt.block_on(pvs.create(&Default::default(), &far))
            .expect("create far pv");
        let _: PersistentVolumeClaim = c.create_json(claim("far", Some("")));
        let _: Pod = c.create_json(on_node(pod("far-user", &c.node.busybox, "far", false, "true")));
        let msg = c.wait_event("far-user", "FailedMount", "NodeAffinity", 60);
        assert_eq!(
            msg,
            r#"MountVolume.NodeAffinity check failed for volume "data" : no matching NodeSelectorTerms"#
        );
        assert_eq!(c.phase("far-user"), "Pending");
        c.rt.block_on(pvs.delete(&format!("static-{}", c.node_name), &DeleteParams::default()))
            .expect("delete pv");
    });
}
