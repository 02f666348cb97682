//! The kubelet half against the embedded control plane (over HTTPS, with a node bearer token, as
//! on a real cluster): node registration and Lease, an API pod run and reported back (phase,
//! podIP, hostIP, containerStatuses), events, and graceful
//! deletion ending in the pod object's removal.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node as KNode, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rktup_testkit::agent::*;
use std::time::Duration;

#[test]
fn node_registers_runs_bound_pods_and_deletes_them_gracefully() {
    let ClusterNode {
        rt,
        cp,
        node,
        node_name,
        kubelet_port: port,
        admin,
        tmp: _tmp,
    } = ClusterNode::start("kn", &[]);
    let cp = cp.expect("control plane");
    let (_bridge, subnet) = node.bridge_net("0.4.0");
    let busybox = node.busybox.clone();
    let log_on_panic = |r: std::thread::Result<()>| {
        if let Err(e) = r {
            eprintln!("agent log:\n{}", node.agent_log());
            std::panic::resume_unwind(e);
        }
    };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let nn = node_name.as_str();
            let nodes: Api<KNode> = Api::all(admin.clone());
            let nodes = &nodes;
            // Registered and Ready, with nodeInfo naming the embedded runtime.
            let n = eventually("node Ready", Duration::from_secs(30), || async move {
                nodes.get_opt(nn).await.ok().flatten().filter(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
            })
            .await;
            let st = n.status.expect("status");
            let info = st.node_info.expect("nodeInfo");
            assert!(
                info.container_runtime_version.starts_with("rkt://"),
                "{info:?}"
            );
            assert!(st.capacity.expect("capacity").contains_key("memory"));
            assert!(st
                .addresses
                .expect("addresses")
                .iter()
                .any(|a| a.type_ == "InternalIP" && a.address == "127.0.0.1"));
            // The kubelet port, where the API server proxies `kubectl logs` to.
            assert_eq!(
                st.daemon_endpoints
                    .and_then(|d| d.kubelet_endpoint)
                    .map(|k| k.port),
                Some(i32::from(port))
            );
            // Lease heartbeat.
            let leases: Api<Lease> = Api::namespaced(admin.clone(), "kube-node-lease");
            let leases = &leases;
            let l1 = eventually("lease", Duration::from_secs(30), || async move {
                leases.get_opt(nn).await.ok().flatten()
            })
            .await;
            let t1 = l1.spec.and_then(|s| s.renew_time).expect("renewTime");
            let t1 = &t1;
            eventually("lease renewed", Duration::from_secs(30), || async move {
                let l = leases.get_opt(nn).await.ok().flatten()?;
                let t = l.spec?.renew_time?;
                (t.0 > t1.0).then_some(())
            })
            .await;

            // A static pod from the manifest directory appears as a mirror pod `<name>-<node>`
            // (NodeRestriction lets the node create it), and goes when the manifest goes.
            node.put(
                "static.yaml",
                &format!(
                    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static\n  namespace: default\nspec:\n  hostNetwork: true\n  containers:\n  - name: c\n    image: {busybox}\n    command: [\"sleep\", \"1000\"]\n"
                ),
            );
            let spods: Api<Pod> = Api::namespaced(admin.clone(), "default");
            let spods = &spods;
            let mirror_name = format!("static-{nn}");
            let mirror_name = mirror_name.as_str();
            let m = eventually("mirror pod", Duration::from_secs(60), || async move {
                spods.get_opt(mirror_name).await.ok().flatten()
            })
            .await;
            assert!(
                m.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror")),
                "{m:?}"
            );
            assert_eq!(m.spec.as_ref().and_then(|s| s.node_name.as_deref()), Some(nn));
            node.delete("static.yaml");
            eventually("mirror pod removed", Duration::from_secs(60), || async move {
                spods
                    .get_opt(mirror_name)
                    .await
                    .ok()
                    .and_then(|p| p.is_none().then_some(()))
            })
            .await;

            // A pod bound to the node runs, and its status comes back.
            let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
            let pods = &pods;
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web"},
                "spec": {
                    "nodeName": node_name,
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{"name": "c", "image": busybox,
                                    "command": ["sleep", "1000"]}]
                }
            }))
            .expect("pod");
            pods.create(&PostParams::default(), &pod)
                .await
                .expect("create pod");
            let p = eventually("pod Running", Duration::from_secs(60), || async move {
                let p = pods.get_opt("web").await.ok().flatten()?;
                let s = p.status.clone()?;
                (s.phase.as_deref() == Some("Running")
                    && s.container_statuses
                        .as_ref()?
                        .iter()
                        .all(|c| c.ready && c.state.as_ref().is_some_and(|s| s.running.is_some())))
                .then_some(p)
            })
            .await;
            let s = p.status.expect("status");
            assert_eq!(s.host_ip.as_deref(), Some("127.0.0.1"));
            let ip = s.pod_ip.expect("podIP");
            let prefix = subnet.rsplit_once('.').expect("subnet").0;
            assert!(ip.starts_with(prefix), "{ip} in {subnet}");
            let cs = &s.container_statuses.expect("containerStatuses")[0];
            assert!(cs
                .container_id
                .as_deref()
                .is_some_and(|c| c.starts_with("rkt://")));
            assert!(cs.image_id.starts_with("sha256"), "{}", cs.image_id);
            assert_eq!(cs.restart_count, 0);
            assert!(s
                .conditions
                .expect("conditions")
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"));
            // The runtime runs it.
            assert!(node
                .pods()
                .iter()
                .any(|p| p["name"] == "web" && p["status"]["state"] == "running"));
            // A Started event.
            let events: Api<Event> = Api::namespaced(admin.clone(), "default");
            let events = &events;
            eventually("Started event", Duration::from_secs(30), || async move {
                let l = events.list(&ListParams::default()).await.ok()?;
                l.items
                    .into_iter()
                    .find(|e| {
                        e.reason.as_deref() == Some("Started")
                            && e.involved_object.name.as_deref() == Some("web")
                    })
                    .map(|_| ())
            })
            .await;

            // Pulling / Pulled events for the container's image (the static pod's run put it in
            // the store already, so it is "already present"), on the container's field path.
            eventually("Pulled event", Duration::from_secs(30), || async move {
                let l = events.list(&ListParams::default()).await.ok()?;
                l.items
                    .into_iter()
                    .find(|e| {
                        e.reason.as_deref() == Some("Pulled")
                            && e.involved_object.name.as_deref() == Some("web")
                            && e.involved_object.field_path.as_deref() == Some("spec.containers{c}")
                            && e.message.as_deref().is_some_and(|m| {
                                m.contains("already present on machine")
                                    || m.starts_with("Successfully pulled image")
                            })
                    })
                    .map(|_| ())
            })
            .await;

            // Graceful deletion: the container is stopped, then the object goes away.
            pods.delete("web", &DeleteParams::default())
                .await
                .expect("delete");
            eventually("pod object gone", Duration::from_secs(30), || async move {
                pods.get_opt("web")
                    .await
                    .ok()
                    .flatten()
                    .is_none()
                    .then_some(())
            })
            .await;
            assert!(
                !node.pods().iter().any(|p| p["name"] == "web"),
                "{:?}",
                node.pods()
            );
        })
    }));
    log_on_panic(r);
    node.wait_no_pods(30);
    rt.block_on(cp.shutdown());
}
