//! Pod failures as upstream (issue 15 §5), against the embedded control plane and a real agent
//! and registry: an image that cannot be pulled keeps its pod Pending (`ErrImagePull`, then
//! `ImagePullBackOff`, kubelet's events) until it can be pulled, and then the same pod runs; a
//! Deployment whose image cannot be pulled keeps exactly its replicas over several back-off
//! rounds (no storm); an unsupported volume type keeps its pod Pending with `FailedMount`,
//! retried; a restartPolicy-Never container that fails makes its pod Failed, and so does
//! running past `activeDeadlineSeconds`; a crash-looping container waits in `CrashLoopBackOff`
//! with the run that ended as its `lastState`; lifecycle hooks: postStart before the container
//! counts as started (a failing one is kubelet's event and kills the run), preStop before
//! SIGTERM.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rktup_testkit::agent::*;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `f` with a fresh control plane and agent; prints the agent's log when it panics.
fn with_cluster(prefix: &str, f: impl FnOnce(&ClusterNode)) {
    let mut cn = ClusterNode::start(prefix, &[]);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&cn)));
    if r.is_err() {
        eprintln!("agent log:\n{}", cn.node.agent_log());
    }
    // Every workload and pod deleted through the API, so the agent stops what it runs.
    cn.rt.block_on(async {
        let deps: Api<Deployment> = cn.api();
        let pods: Api<Pod> = cn.api();
        let dp = DeleteParams::default();
        for d in deps
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let _ = deps.delete(&d.metadata.name.unwrap_or_default(), &dp).await;
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            let l = pods.list(&ListParams::default()).await.map(|l| l.items);
            let l = l.unwrap_or_default();
            if l.is_empty() && cn.node.pods().is_empty() {
                break;
            }
            for p in l {
                let _ = pods.delete(&p.metadata.name.unwrap_or_default(), &dp).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    cn.node.wait_no_pods(30);
    cn.stop_control_plane();
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

/// The events about pod `name`, as (reason, type, message, count).
async fn events_of(events: &Api<Event>, name: &str) -> Vec<(String, String, String, i32)> {
    let l = events.list(&ListParams::default()).await.ok();
    l.map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.type_.unwrap_or_default(),
                e.message.unwrap_or_default(),
                e.count.unwrap_or(1),
            )
        })
        .collect()
}

/// The first container's waiting (reason, message) of a pod, if it waits.
fn waiting(p: &Pod) -> Option<(String, String)> {
    let w = p
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .clone()?;
    Some((w.reason.unwrap_or_default(), w.message.unwrap_or_default()))
}

/// Creates the pod `v` (JSON) through `pods`.
async fn create_pod(pods: &Api<Pod>, v: serde_json::Value) -> Pod {
    let pod: Pod = serde_json::from_value(v).expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create")
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

fn condition(p: &Pod, type_: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

/// Pod `name` once it is Ready (60 s at most).
async fn ready(pods: &Api<Pod>, name: &str) -> Pod {
    eventually(
        &format!("pod {name} Ready"),
        Duration::from_secs(60),
        || async {
            let p = pods.get(name).await.ok()?;
            (condition(&p, "Ready").as_deref() == Some("True")).then_some(p)
        },
    )
    .await
}

/// Copy the test busybox image to another name in the node's registry (the image "appears").
fn copy_image(cn: &ClusterNode, to: &str) {
    let r = &cn.node.registry.addr;
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{}", cn.node.busybox))
        .arg(format!("docker://{r}/{to}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unpullable_image_backs_off_and_runs_once_pushed() {
    if !rktup_testkit::can_run_as_root(
        "unpullable_image_backs_off_and_runs_once_pushed",
        "the agent runs pods",
    ) {
        return;
    }
    with_cluster("fi", |cn| {
        let image = format!(
            "{}/test/later-{}:1",
            cn.node.registry.addr,
            std::process::id()
        );
        let pods: Api<Pod> = cn.api();
        let events: Api<Event> = cn.api();
        let (pods, events) = (&pods, &events);
        cn.rt.block_on(async {
            let created = create_pod(
                pods,
                serde_json::json!({
                    "metadata": {"name": "later"},
                    "spec": {
                        "nodeName": cn.node_name,
                        "hostNetwork": true,
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{"name": "c", "image": image,
                                        "command": ["sleep", "1000"]}]
                    }
                }),
            )
            .await;
            let uid = created.metadata.uid.expect("uid");
            // ErrImagePull (the pull's error) and then ImagePullBackOff, Pending and not ready
            // all along.
            let mut seen = BTreeSet::new();
            let backoff_msg = format!("Back-off pulling image \"{image}\"");
            let deadline = Instant::now() + Duration::from_secs(60);
            while !(seen.contains("ErrImagePull") && seen.contains("ImagePullBackOff")) {
                assert!(Instant::now() < deadline, "reasons seen: {seen:?}");
                let p = pods.get("later").await.expect("get");
                if let Some((reason, msg)) = waiting(&p) {
                    match reason.as_str() {
                        "ErrImagePull" => assert!(!msg.is_empty(), "ErrImagePull message"),
                        "ImagePullBackOff" => assert_eq!(msg, backoff_msg),
                        _ => {}
                    }
                    if reason != "ContainerCreating" {
                        assert_eq!(phase(&p), "Pending", "{p:?}");
                        assert_eq!(condition(&p, "Ready").as_deref(), Some("False"));
                        assert_eq!(condition(&p, "ContainersReady").as_deref(), Some("False"));
                    }
                    seen.insert(reason);
                }
                assert_ne!(phase(&p), "Failed", "{p:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // kubelet's events for it.
            let evs = eventually("pull events", Duration::from_secs(30), || async move {
                let evs = events_of(events, "later").await;
                let has = |reason: &str, ty: &str, pre: &str| {
                    evs.iter()
                        .any(|e| e.0 == reason && e.1 == ty && e.2.starts_with(pre))
                };
                (has("Pulling", "Normal", "Pulling image \"")
                    && has("Failed", "Warning", "Failed to pull image \"")
                    && has("Failed", "Warning", "Error: ErrImagePull")
                    && has("BackOff", "Normal", "Back-off pulling image \"")
                    && has("Failed", "Warning", "Error: ImagePullBackOff"))
                .then_some(evs)
            })
            .await;
            assert!(!evs.iter().any(|e| e.0 == "Started"), "{evs:?}");

            // The image appears: the same pod runs (not a new one), with a Pulled event.
            copy_image(cn, image.split_once('/').expect("registry/name").1);
            let p = eventually("pod Running", Duration::from_secs(400), || async move {
                let p = pods.get_opt("later").await.ok().flatten()?;
                (phase(&p) == "Running").then_some(p)
            })
            .await;
            assert_eq!(p.metadata.uid.as_deref(), Some(uid.as_str()));
            eventually("Pulled event", Duration::from_secs(30), || async move {
                let evs = events_of(events, "later").await;
                evs.iter()
                    .any(|e| e.0 == "Pulled" && e.2.starts_with("Successfully pulled image"))
                    .then_some(())
            })
            .await;
        });
    });
}

/// A Deployment of 3 whose pods cannot start (`pod_spec`) keeps exactly its 3 pods, Pending,
/// over several back-off rounds: each pod's `retried` event counts up (the agent retries the
/// pod) instead of the ReplicaSet replacing pods. `waiting` is the containers' reason to wait for.
fn deployment_keeps_its_replicas(
    prefix: &str,
    pod_spec: impl Fn(&ClusterNode) -> serde_json::Value,
    waiting_for: &str,
    retried: &str,
) {
    with_cluster(prefix, |cn| {
        let pod_spec = pod_spec(cn);
        let pods: Api<Pod> = cn.api();
        let deps: Api<Deployment> = cn.api();
        let events: Api<Event> = cn.api();
        let (pods, events) = (&pods, &events);
        cn.rt.block_on(async {
            let d: Deployment = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "storm"},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "storm"}},
                    "template": {
                        "metadata": {"labels": {"app": "storm"}},
                        "spec": pod_spec
                    }
                }
            }))
            .expect("deployment");
            deps.create(&PostParams::default(), &d)
                .await
                .expect("create deployment");
            let lp = ListParams::default().labels("app=storm");
            let lp = &lp;
            eventually(
                &format!("3 pods waiting with {waiting_for}"),
                Duration::from_secs(90),
                || async move {
                    let l = pods.list(lp).await.ok()?;
                    (l.items.len() == 3
                        && l.items
                            .iter()
                            .all(|p| waiting(p).is_some_and(|w| w.0 == waiting_for)))
                    .then_some(())
                },
            )
            .await;
            // Over several back-off rounds (10 s, 20 s, ...): always the same 3 pods, Pending.
            let first: BTreeSet<String> = pods
                .list(lp)
                .await
                .expect("list")
                .items
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            assert_eq!(first.len(), 3);
            let until = Instant::now() + Duration::from_secs(45);
            while Instant::now() < until {
                let l = pods.list(lp).await.expect("list");
                let names: BTreeSet<String> = l
                    .items
                    .iter()
                    .filter_map(|p| p.metadata.name.clone())
                    .collect();
                assert_eq!(names, first, "pods changed");
                for p in &l.items {
                    assert_eq!(phase(p), "Pending", "{p:?}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            // Each pod was retried (its event counted up), not replaced.
            for name in &first {
                let evs = events_of(events, name).await;
                let n: i32 = evs.iter().filter(|e| e.0 == retried).map(|e| e.3).sum();
                assert!(n >= 2, "{name}: {evs:?}");
            }
            let all = pods.list(&ListParams::default()).await.expect("list all");
            assert_eq!(all.items.len(), 3, "pods in the namespace");
        });
    });
}

#[test]
fn deployment_with_unpullable_image_keeps_its_replica_count() {
    if !rktup_testkit::can_run_as_root(
        "deployment_with_unpullable_image_keeps_its_replica_count",
        "the agent runs pods",
    ) {
        return;
    }
    // The node's registry, where no image of this name is pushed.
    let spec = |cn: &ClusterNode| {
        let image = format!(
            "{}/test/never-{}:1",
            cn.node.registry.addr,
            std::process::id()
        );
        serde_json::json!({
            "hostNetwork": true,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": image, "command": ["sleep", "1000"]}]
        })
    };
    deployment_keeps_its_replicas("fd", spec, "ImagePullBackOff", "Pulling");
}

#[test]
fn deployment_with_unsupported_volume_keeps_its_replica_count() {
    if !rktup_testkit::can_run_as_root(
        "deployment_with_unsupported_volume_keeps_its_replica_count",
        "the agent runs pods",
    ) {
        return;
    }
    let spec = |cn: &ClusterNode| {
        serde_json::json!({
            "hostNetwork": true,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": cn.node.busybox,
                            "command": ["sleep", "1000"],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "nfs": {"server": "127.0.0.1", "path": "/exports"}}]
        })
    };
    deployment_keeps_its_replicas("fw", spec, "ContainerCreating", "FailedMount");
}

#[test]
fn unsupported_volume_type_stays_pending_with_failed_mount() {
    if !rktup_testkit::can_run_as_root(
        "unsupported_volume_type_stays_pending_with_failed_mount",
        "the agent runs pods",
    ) {
        return;
    }
    with_cluster("fv", |cn| {
        let pods: Api<Pod> = cn.api();
        let events: Api<Event> = cn.api();
        let (pods, events) = (&pods, &events);
        cn.rt.block_on(async {
            create_pod(
                pods,
                serde_json::json!({
                    "metadata": {"name": "nfsuser"},
                    "spec": {
                        "nodeName": cn.node_name,
                        "hostNetwork": true,
                        "containers": [{"name": "c", "image": cn.node.busybox,
                                        "command": ["sleep", "1000"],
                                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                        "volumes": [{"name": "data",
                                     "nfs": {"server": "127.0.0.1", "path": "/exports"}}]
                    }
                }),
            )
            .await;
            // FailedMount naming the volume and its type, retried (its count goes up), the pod
            // Pending all along.
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let p = pods.get("nfsuser").await.expect("get");
                assert_ne!(phase(&p), "Failed", "{p:?}");
                assert_ne!(phase(&p), "Running", "{p:?}");
                let evs = events_of(events, "nfsuser").await;
                let mount = evs.iter().find(|e| e.0 == "FailedMount");
                if let Some(m) = mount {
                    assert_eq!(m.1, "Warning");
                    assert!(
                        m.2.contains("volume \"data\"") && m.2.contains("nfs"),
                        "{m:?}"
                    );
                    if m.3 >= 2 && phase(&p) == "Pending" {
                        break;
                    }
                }
                assert!(Instant::now() < deadline, "{evs:?} {p:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    });
}

#[test]
fn never_restarted_failing_container_makes_the_pod_failed() {
    if !rktup_testkit::can_run_as_root(
        "never_restarted_failing_container_makes_the_pod_failed",
        "the agent runs pods",
    ) {
        return;
    }
    with_cluster("fn", |cn| {
        let pods: Api<Pod> = cn.api();
        let pods = &pods;
        cn.rt.block_on(async {
            create_pod(
                pods,
                serde_json::json!({
                    "metadata": {"name": "once"},
                    "spec": {
                        "nodeName": cn.node_name,
                        "hostNetwork": true,
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": cn.node.busybox,
                                        "command": ["sh", "-c", "exit 3"]}]
                    }
                }),
            )
            .await;
            let p = eventually("pod Failed", Duration::from_secs(90), || async move {
                let p = pods.get_opt("once").await.ok().flatten()?;
                (phase(&p) == "Failed").then_some(p)
            })
            .await;
            let t = p
                .status
                .and_then(|s| s.container_statuses)
                .and_then(|c| c.into_iter().next())
                .and_then(|c| c.state)
                .and_then(|s| s.terminated)
                .expect("terminated");
            assert_eq!(t.exit_code, 3);
            assert_eq!(t.reason.as_deref(), Some("Error"));
        });
    });
}

#[test]
fn crash_looping_container_waits_in_back_off_with_its_last_state() {
    if !rktup_testkit::can_run_as_root(
        "crash_looping_container_waits_in_back_off_with_its_last_state",
        "the agent runs pods",
    ) {
        return;
    }
    with_cluster("fc", |cn| {
        let pods: Api<Pod> = cn.api();
        let pod = cn.rt.block_on(create_pod(
            &pods,
            serde_json::json!({
                "metadata": {"name": "crash"},
                "spec": {
                    "nodeName": cn.node_name,
                    "hostNetwork": true,
                    "containers": [{"name": "c", "image": cn.node.busybox,
                                    "command": ["sh", "-c", "echo crashed; exit 3"]}]
                }
            }),
        ));
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        // Between runs, kubelet's shape: waiting CrashLoopBackOff with its back-off message,
        // the run that ended as lastState (the back-offs grow: one is long enough to see).
        let p = cn.rt.block_on(eventually(
            "waiting in CrashLoopBackOff",
            Duration::from_secs(90),
            || {
                let pods = pods.clone();
                async move {
                    let p = pods.get("crash").await.ok()?;
                    let (reason, _) = waiting(&p)?;
                    (reason == "CrashLoopBackOff").then_some(p)
                }
            },
        ));
        let (_, message) = waiting(&p).expect("waiting");
        assert!(
            message.starts_with("back-off ")
                && message.ends_with(&format!(
                    " restarting failed container=c pod=crash_default({uid})"
                )),
            "{message}"
        );
        let cs = p
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c.into_iter().next())
            .expect("container status");
        assert!(!cs.ready);
        let last = cs
            .last_state
            .and_then(|s| s.terminated)
            .expect("lastState.terminated");
        assert_eq!(last.exit_code, 3);
        assert_eq!(last.reason.as_deref(), Some("Error"));
        assert!(last.started_at.is_some() && last.finished_at.is_some());
        // Running again: the ended run stays lastState; kubectl describe shows it.
        let (kc, cache) = (cn.admin_kubeconfig(), cn.kubectl_cache());
        let shown = rktup_testkit::wait_for(
            "kubectl describe with a Last State",
            Duration::from_secs(60),
            || {
                let r = kubectl(&kc, &cache, &["describe", "pod", "crash"], None);
                r.stdout.contains("Last State:").then_some(r.stdout)
            },
        );
        assert!(
            shown.contains("Terminated") && shown.contains("Exit Code:    3"),
            "{shown}"
        );
    });
}

#[test]
fn lifecycle_hooks_run_around_the_container() {
    if !rktup_testkit::can_run_as_root(
        "lifecycle_hooks_run_around_the_container",
        "the agent runs pods",
    ) {
        return;
    }
    with_cluster("fh", |cn| {
        let pods: Api<Pod> = cn.api();
        let events: Api<Event> = cn.api();
        let host = tempfile::tempdir().expect("host dir");
        let log = host.path().join("log");
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        // postStart and preStop write to a host directory, as does the container on SIGTERM.
        let pod = cn.rt.block_on(create_pod(
            &pods,
            serde_json::json!({
                "metadata": {"name": "hooked"},
                "spec": {
                    "nodeName": cn.node_name,
                    "hostNetwork": true,
                    "terminationGracePeriodSeconds": 10,
                    "volumes": [{"name": "data", "hostPath": {"path": host.path()}}],
                    "containers": [{
                        "name": "c", "image": cn.node.busybox,
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        "command": ["sh", "-c", "trap 'echo term >> /data/log; exit 0' TERM; while :; do sleep 0.1; done"],
                        "lifecycle": {
                            "postStart": {"exec": {"command": ["sh", "-c", "sleep 1; echo post-start >> /data/log"]}},
                            "preStop": {"exec": {"command": ["sh", "-c", "echo pre-stop >> /data/log; sleep 1"]}}
                        }
                    }]
                }
            }),
        ));
        // Ready only once postStart has ended (kubelet's sync runs the hook before it is done).
        let p = cn.rt.block_on(ready(&pods, "hooked"));
        assert_eq!(read_log(), "post-start\n", "postStart ran before Ready");
        let uid = p.metadata.uid.clone().unwrap_or_default();
        cn.rt.block_on(async {
            pods.delete("hooked", &DeleteParams::default())
                .await
                .expect("delete");
        });
        let done = rktup_testkit::wait_for("the pod stopped", Duration::from_secs(60), || {
            read_log().contains("term").then(read_log)
        });
        assert_eq!(
            done, "post-start\npre-stop\nterm\n",
            "preStop ran before SIGTERM"
        );
        drop(pod);

        // A liveness kill runs preStop first too.
        let live_log = host.path().join("live");
        cn.rt.block_on(create_pod(
            &pods,
            serde_json::json!({
                "metadata": {"name": "live"},
                "spec": {
                    "nodeName": cn.node_name,
                    "hostNetwork": true,
                    "terminationGracePeriodSeconds": 10,
                    "volumes": [{"name": "data", "hostPath": {"path": host.path()}}],
                    "containers": [{
                        "name": "c", "image": cn.node.busybox,
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        "command": ["sh", "-c", "trap 'echo term >> /data/live; exit 0' TERM; while :; do sleep 0.1; done"],
                        "livenessProbe": {"exec": {"command": ["sh", "-c", "[ ! -e /data/unhealthy ]"]},
                                          "periodSeconds": 1, "failureThreshold": 1},
                        "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo pre-stop >> /data/live"]}}}
                    }]
                }
            }),
        ));
        cn.rt.block_on(ready(&pods, "live"));
        std::fs::write(host.path().join("unhealthy"), "").expect("make it unhealthy");
        let live = rktup_testkit::wait_for("the liveness kill", Duration::from_secs(60), || {
            let l = std::fs::read_to_string(&live_log).unwrap_or_default();
            l.contains("term").then_some(l)
        });
        assert!(live.starts_with("pre-stop\nterm\n"), "{live}");
        let _ = std::fs::remove_file(host.path().join("unhealthy"));

        // A deletion's own grace period wins over the spec's (kubectl delete --grace-period=1
        // of a pod whose process ignores SIGTERM and whose spec gives it 60 s).
        cn.rt.block_on(create_pod(
            &pods,
            serde_json::json!({
                "metadata": {"name": "slow"},
                "spec": {
                    "nodeName": cn.node_name,
                    "hostNetwork": true,
                    "terminationGracePeriodSeconds": 60,
                    "containers": [{"name": "c", "image": cn.node.busybox,
                                    "command": ["sleep", "100000"]}]
                }
            }),
        ));
        cn.rt.block_on(ready(&pods, "slow"));
        let (kc, cache) = (cn.admin_kubeconfig(), cn.kubectl_cache());
        let r = kubectl(
            &kc,
            &cache,
            &["delete", "pod", "slow", "--grace-period=1", "--wait=false"],
            None,
        );
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        cn.rt.block_on(eventually(
            "pod slow gone within its deletion's grace period, not the spec's 60 s",
            Duration::from_secs(30),
            || {
                let pods = pods.clone();
                async move { pods.get_opt("slow").await.ok()?.is_none().then_some(()) }
            },
        ));

        // A failing postStart: kubelet's event, and the run is killed and started again.
        cn.rt.block_on(create_pod(
            &pods,
            serde_json::json!({
                "metadata": {"name": "bad-hook"},
                "spec": {
                    "nodeName": cn.node_name,
                    "hostNetwork": true,
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "c", "image": cn.node.busybox,
                        "command": ["sleep", "1000"],
                        "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo nope; exit 3"]}}}
                    }]
                }
            }),
        ));
        let (msg, p) = cn.rt.block_on(eventually(
            "FailedPostStartHook and a restart",
            Duration::from_secs(90),
            || {
                let (pods, events) = (pods.clone(), events.clone());
                async move {
                    let ev = events_of(&events, "bad-hook").await;
                    let (_, type_, msg, _) =
                        ev.into_iter().find(|e| e.0 == "FailedPostStartHook")?;
                    assert_eq!(type_, "Warning");
                    let p = pods.get("bad-hook").await.ok()?;
                    let restarts = p
                        .status
                        .as_ref()?
                        .container_statuses
                        .as_ref()?
                        .first()?
                        .restart_count;
                    (restarts >= 1).then_some((msg, p))
                }
            },
        ));
        let uid2 = p.metadata.uid.clone().unwrap_or_default();
        assert_eq!(
            msg,
            format!(
                "Exec lifecycle hook ([sh -c echo nope; exit 3]) for Container \"c\" in Pod \"bad-hook_default({uid2})\" failed - error: command 'sh -c echo nope; exit 3' exited with a non-zero code, message: \"nope\\n\""
            )
        );
        assert_ne!(uid, uid2);
    });
}

#[test]
fn active_deadline_stops_the_pod_and_fails_it() {
    if !rktup_testkit::can_run_as_root(
        "active_deadline_stops_the_pod_and_fails_it",
        "the agent runs pods",
    ) {
        return;
    }
    with_cluster("fa", |cn| {
        let pods: Api<Pod> = cn.api();
        let events: Api<Event> = cn.api();
        let (pods, events) = (&pods, &events);
        cn.rt.block_on(async {
            create_pod(
                pods,
                serde_json::json!({
                    "metadata": {"name": "deadline"},
                    "spec": {
                        "nodeName": cn.node_name,
                        "hostNetwork": true,
                        "activeDeadlineSeconds": 8,
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{"name": "c", "image": cn.node.busybox,
                                        "command": ["sleep", "1000"]}]
                    }
                }),
            )
            .await;
            eventually("pod Running", Duration::from_secs(60), || async move {
                let p = pods.get_opt("deadline").await.ok().flatten()?;
                (phase(&p) == "Running").then_some(())
            })
            .await;
            let p = eventually("pod Failed", Duration::from_secs(60), || async move {
                let p = pods.get_opt("deadline").await.ok().flatten()?;
                (phase(&p) == "Failed").then_some(p)
            })
            .await;
            let st = p.status.expect("status");
            assert_eq!(st.reason.as_deref(), Some("DeadlineExceeded"));
            assert_eq!(
                st.message.as_deref(),
                Some("Pod was active on the node longer than the specified deadline")
            );
            eventually(
                "DeadlineExceeded event",
                Duration::from_secs(30),
                || async move {
                    let evs = events_of(events, "deadline").await;
                    evs.iter().any(|e| e.0 == "DeadlineExceeded").then_some(())
                },
            )
            .await;
            // Stopped and not started again (restartPolicy Always notwithstanding).
            tokio::time::sleep(Duration::from_secs(12)).await;
            let p = pods.get("deadline").await.expect("get");
            assert_eq!(phase(&p), "Failed");
            let rt_pods = cn.node.pods();
            assert!(
                rt_pods
                    .iter()
                    .filter(|r| r["name"] == "deadline")
                    .all(|r| r["status"]["state"] == "exited"),
                "{rt_pods:?}"
            );
        });
    });
}
