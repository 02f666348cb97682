//! Drives the control plane with kube-rs, as the rktup agent does.

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::Status;
use rktup_controlplane::pki::Credential;
use rktup_testkit::controlplane::*;
use serde_json::json;
use std::time::Duration;

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": v}}))
        .expect("configmap")
}

fn api_error(e: kube::Error) -> Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_every_change_exactly_once_across_reconnect() {
    let c = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(c.admin().await, "default");
    cms.create(&PostParams::default(), &cm("w0", "0"))
        .await
        .expect("create");
    let list = cms.list(&ListParams::default()).await.expect("list");
    let start_rv = list.metadata.resource_version.clone().expect("list rv");

    // First connection: sees w1 created and w0 modified, then disconnects.
    let mut stream = cms
        .watch(&WatchParams::default().timeout(30), &start_rv)
        .await
        .expect("watch")
        .boxed();
    cms.create(&PostParams::default(), &cm("w1", "1"))
        .await
        .expect("create");
    cms.patch(
        "w0",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "changed"}})),
    )
    .await
    .expect("patch");
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut last_rv = start_rv.clone();
    while seen.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(30), stream.try_next())
            .await
            .expect("event in time")
            .expect("stream ok")
            .expect("not ended");
        match ev {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
                last_rv = o.metadata.resource_version.clone().expect("rv");
                seen.push((
                    o.metadata.name.clone().unwrap_or_default(),
                    o.data.unwrap_or_default()["v"].clone(),
                ));
            }
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    drop(stream);
    // Changes while disconnected.
    cms.delete("w1", &DeleteParams::default())
        .await
        .expect("delete");
    cms.create(&PostParams::default(), &cm("w2", "2"))
        .await
        .expect("create");
    // Reconnect from the last seen resourceVersion: exactly the missed events.
    let mut stream = cms
        .watch(&WatchParams::default().timeout(30), &last_rv)
        .await
        .expect("watch")
        .boxed();
    let mut after: Vec<String> = Vec::new();
    while after.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(30), stream.try_next())
            .await
            .expect("event in time")
            .expect("stream ok")
            .expect("not ended");
        match ev {
            WatchEvent::Added(o) => {
                after.push(format!("ADDED {}", o.metadata.name.unwrap_or_default()))
            }
            WatchEvent::Modified(o) => {
                after.push(format!("MODIFIED {}", o.metadata.name.unwrap_or_default()))
            }
            WatchEvent::Deleted(o) => {
                after.push(format!("DELETED {}", o.metadata.name.unwrap_or_default()))
            }
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            ("w1".to_string(), "1".to_string()),
            ("w0".to_string(), "changed".to_string())
        ]
    );
    assert_eq!(
        after,
        vec!["DELETED w1".to_string(), "ADDED w2".to_string()]
    );
    // Nothing else is pending.
    let extra = tokio::time::timeout(Duration::from_millis(500), stream.try_next()).await;
    assert!(extra.is_err(), "unexpected extra event: {extra:?}");

    // The kube-runtime watcher (list + watch) also works against it.
    let events = kube::runtime::watcher(cms.clone(), kube::runtime::watcher::Config::default());
    let mut objs = Box::pin(kube::runtime::WatchStreamExt::applied_objects(events));
    let first = tokio::time::timeout(Duration::from_secs(30), objs.try_next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("object");
    // (kube-root-ca.crt: the root CA publisher's, in every namespace.)
    assert!(
        ["w0", "w2", "kube-root-ca.crt"].contains(&first.metadata.name.as_deref().unwrap_or(""))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_compacted_revision_is_gone() {
    // A restarted server keeps no watch history (like kube-apiserver's
    // watch cache): any revision before the restart is 410 Gone.
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let c = Cluster {
            handle: start_in(dir.path()).await,
            dir: tempfile::tempdir().expect("tmp"),
        };
        let cms: Api<ConfigMap> = Api::namespaced(c.admin().await, "default");
        cms.create(&PostParams::default(), &cm("a", "1"))
            .await
            .expect("create");
        c.handle.shutdown().await;
    }
    let c = Cluster {
        handle: start_in(dir.path()).await,
        dir: tempfile::tempdir().expect("tmp"),
    };
    let cms: Api<ConfigMap> = Api::namespaced(c.admin().await, "default");
    let mut stream = cms
        .watch(&WatchParams::default().timeout(5), "1")
        .await
        .expect("watch")
        .boxed();
    match stream.try_next().await {
        Ok(Some(WatchEvent::Error(e))) => assert_eq!(e.code, 410, "{e:?}"),
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    // Watching from "0" (any) still works and starts with the current state.
    let mut stream = cms
        .watch(&WatchParams::default().timeout(5), "0")
        .await
        .expect("watch")
        .boxed();
    match stream.try_next().await {
        Ok(Some(WatchEvent::Added(o))) => assert!(o.metadata.name.is_some()),
        other => panic!("expected ADDED, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_update_is_409_and_no_credentials_is_401() {
    let c = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(c.admin().await, "default");
    let created = cms
        .create(&PostParams::default(), &cm("c", "1"))
        .await
        .expect("create");
    let mut newer = created.clone();
    newer.data = Some([("v".to_string(), "2".to_string())].into());
    cms.replace("c", &PostParams::default(), &newer)
        .await
        .expect("first update");
    let mut stale = created.clone();
    stale.data = Some([("v".to_string(), "3".to_string())].into());
    let err = api_error(
        cms.replace("c", &PostParams::default(), &stale)
            .await
            .expect_err("stale update must fail"),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    let dup = api_error(
        cms.create(&PostParams::default(), &cm("c", "1"))
            .await
            .expect_err("duplicate"),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    let missing = api_error(cms.get("nope").await.expect_err("missing"));
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));

    // A client with only the CA (no certificate, no token) is 401.
    let text = c
        .handle
        .kubeconfig_for("anon", &Credential::Token(String::new()))
        .replace("    token: \n", "    {}\n");
    let kc = kube::config::Kubeconfig::from_yaml(&text).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("config");
    let anon: Api<Pod> = Api::namespaced(kube::Client::try_from(cfg).expect("client"), "default");
    let err = api_error(
        anon.list(&ListParams::default())
            .await
            .expect_err("anonymous must fail"),
    );
    assert_eq!(err.code, 401);
    // A wrong token is 401 too.
    let bad = c
        .client_for("bad", &Credential::Token("not-a-token".into()))
        .await;
    let err = api_error(
        Api::<Pod>::namespaced(bad, "default")
            .list(&ListParams::default())
            .await
            .expect_err("bad token"),
    );
    assert_eq!(err.code, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_may_only_touch_its_own_pods_node_and_lease() {
    let c = start().await;
    let _a = fake_node(&c, "node-a", 10250).await;
    let _b = fake_node(&c, "node-b", 10250).await;
    let admin_pods: Api<Pod> = Api::namespaced(c.admin().await, "default");
    for (name, node) in [("on-a", "node-a"), ("on-b", "node-b")] {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}})).expect("pod");
        admin_pods
            .create(&PostParams::default(), &p)
            .await
            .expect("create pod");
    }
    let node_a = c.node_client("node-a").await;
    let pods_a: Api<Pod> = Api::namespaced(node_a.clone(), "default");
    let status = json!({"status": {"message": "from a"}});
    pods_a
        .patch_status(
            "on-a",
            &PatchParams::default(),
            &Patch::Merge(status.clone()),
        )
        .await
        .expect("own pod");
    let err = api_error(
        pods_a
            .patch_status("on-b", &PatchParams::default(), &Patch::Merge(status))
            .await
            .expect_err("other node's pod"),
    );
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert!(
        err.message.contains("system:node:node-a"),
        "{}",
        err.message
    );
    let nodes: Api<Node> = Api::all(node_a.clone());
    let err = api_error(
        nodes
            .patch(
                "node-b",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await
            .expect_err("other node"),
    );
    assert_eq!(err.code, 403);
    nodes
        .patch(
            "node-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect("own node");
    let secrets: Api<Secret> = Api::namespaced(node_a, "default");
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "s"}})).expect("secret");
    assert_eq!(
        api_error(
            secrets
                .create(&PostParams::default(), &s)
                .await
                .expect_err("node creating secrets")
        )
        .code,
        403
    );
    // A node identity from a client certificate gets the same treatment.
    let pair = c.handle.issue_node_cert("node-b").expect("cert");
    let cert_client = c.client_for("node-b-cert", &Credential::Cert(pair)).await;
    let pods_b: Api<Pod> = Api::namespaced(cert_client, "default");
    pods_b
        .patch_status(
            "on-b",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"message": "from b"}})),
        )
        .await
        .expect("own pod via cert");
    assert_eq!(
        api_error(
            pods_b
                .patch_status(
                    "on-a",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"message": "x"}}))
                )
                .await
                .expect_err("x")
        )
        .code,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collector_deletes_owned_objects() {
    let c = start().await;
    let client = c.admin().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let owner = cms
        .create(&PostParams::default(), &cm("owner", "1"))
        .await
        .expect("owner");
    let uid = owner.metadata.uid.clone().expect("uid");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    for name in ["dep1", "dep2"] {
        let s: Secret = serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]}})).expect("secret");
        secrets
            .create(&PostParams::default(), &s)
            .await
            .expect("dependent");
    }
    // Orphan: dependents stay, without the owner reference.
    let orphan_owner = cms
        .create(&PostParams::default(), &cm("owner2", "1"))
        .await
        .expect("owner2");
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "kept", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner2", "uid": orphan_owner.metadata.uid}]}})).expect("secret");
    secrets
        .create(&PostParams::default(), &s)
        .await
        .expect("dependent");
    cms.delete("owner", &DeleteParams::background())
        .await
        .expect("delete owner");
    cms.delete("owner2", &DeleteParams::orphan())
        .await
        .expect("delete owner2");
    eventually("dependents collected", Duration::from_secs(20), || async {
        let names: Vec<String> = secrets
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        (!names.iter().any(|n| n.starts_with("dep"))).then_some(())
    })
    .await;
    let kept = eventually(
        "orphaned dependent released",
        Duration::from_secs(20),
        || async {
            let s = secrets.get("kept").await.ok()?;
            s.metadata
                .owner_references
                .as_ref()
                .is_none_or(|r| r.is_empty())
                .then_some(s)
        },
    )
    .await;
    assert_eq!(kept.metadata.name.as_deref(), Some("kept"));
    eventually(
        "orphaning owner deleted",
        Duration::from_secs(20),
        || async { cms.get_opt("owner2").await.ok()?.is_none().then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rolls_out_to_new_replicaset_on_registered_nodes() {
    let c = start().await;
    let _n1 = fake_node(&c, "k1", 10250).await;
    let _n2 = fake_node(&c, "k2", 10250).await;
    let client = c.admin().await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}}, "spec": {"containers": [{"name": "c", "image": "img:1"}]}}}
    }))
    .expect("deployment");
    deps.create(&PostParams::default(), &d)
        .await
        .expect("create");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let wait_rollout = |image: &'static str| {
        let deps = deps.clone();
        let pods = pods.clone();
        async move {
            eventually("rollout", Duration::from_secs(60), || async {
                let d = deps.get("app").await.ok()?;
                let st = d.status?;
                let done = st.updated_replicas == Some(4)
                    && st.available_replicas == Some(4)
                    && st.replicas == Some(4)
                    && st.observed_generation == d.metadata.generation;
                if !done {
                    return None;
                }
                let list = pods
                    .list(&ListParams::default().labels("app=app"))
                    .await
                    .ok()?;
                let active: Vec<Pod> = list
                    .items
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                let ok = active.len() == 4
                    && active.iter().all(|p| {
                        p.spec.as_ref().is_some_and(|s| {
                            s.containers[0].image.as_deref() == Some(image) && s.node_name.is_some()
                        })
                    });
                ok.then_some(active)
            })
            .await
        }
    };
    let first = wait_rollout("img:1").await;
    let on_k1 = first
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("k1"))
        .count();
    assert_eq!(on_k1, 2, "pods spread evenly over the two nodes");
    deps.patch("app", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "img:2"}]}}}}))).await.expect("update image");
    wait_rollout("img:2").await;
    let rss: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(client, "default");
    let list = rss.list(&ListParams::default()).await.expect("rs list");
    assert_eq!(list.items.len(), 2);
    let mut revs: Vec<(String, i32)> = list
        .items
        .iter()
        .map(|r| {
            (
                r.metadata
                    .annotations
                    .clone()
                    .unwrap_or_default()
                    .get("deployment.kubernetes.io/revision")
                    .cloned()
                    .unwrap_or_default(),
                r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(-1),
            )
        })
        .collect();
    revs.sort();
    assert_eq!(revs, vec![("1".to_string(), 0), ("2".to_string(), 4)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rv_before;
    {
        let handle = start_in(dir.path()).await;
        let c = Cluster {
            handle,
            dir: tempfile::tempdir().expect("tmp"),
        };
        let cms: Api<ConfigMap> = Api::namespaced(c.admin().await, "default");
        for i in 0..20 {
            cms.create(
                &PostParams::default(),
                &cm(&format!("keep{i}"), &i.to_string()),
            )
            .await
            .expect("create");
        }
        cms.delete("keep3", &DeleteParams::default())
            .await
            .expect("delete");
        rv_before = cms
            .get("keep19")
            .await
            .expect("get")
            .metadata
            .resource_version;
        c.handle.shutdown().await;
    }
    let handle = start_in(dir.path()).await;
    let c = Cluster {
        handle,
        dir: tempfile::tempdir().expect("tmp"),
    };
    let cms: Api<ConfigMap> = Api::namespaced(c.admin().await, "default");
    let names: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .filter(|n| n.starts_with("keep"))
        .collect();
    assert_eq!(names.len(), 19);
    assert!(!names.contains(&"keep3".to_string()));
    let again = cms.get("keep19").await.expect("get");
    assert_eq!(again.metadata.resource_version, rv_before);
    assert_eq!(again.data.unwrap_or_default()["v"], "19");
    // New writes continue the revision sequence.
    let new = cms
        .create(&PostParams::default(), &cm("after", "x"))
        .await
        .expect("create");
    let before: u64 = rv_before.unwrap_or_default().parse().expect("rv");
    let after: u64 = new
        .metadata
        .resource_version
        .unwrap_or_default()
        .parse()
        .expect("rv");
    assert!(after > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_goes_not_ready_and_its_pods_are_evicted() {
    let c = start().await;
    let client = c.admin().await;
    // Registered with a Ready condition but never heartbeating afterwards.
    let nodes: Api<Node> = Api::all(c.node_client("quiet").await);
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let n: Node = serde_json::from_value(json!({"metadata": {"name": "quiet"}, "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": now, "lastTransitionTime": now}]}})).expect("node");
    nodes
        .create(&PostParams::default(), &n)
        .await
        .expect("register");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "victim"}, "spec": {"nodeName": "quiet", "containers": [{"name": "c", "image": "busybox"}]}})).expect("pod");
    pods.create(&PostParams::default(), &p).await.expect("pod");
    let admin_nodes: Api<Node> = Api::all(client.clone());
    let node = eventually("node NotReady", Duration::from_secs(20), || async {
        let n = admin_nodes.get("quiet").await.ok()?;
        let ready = n
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready")?
            .status
            .clone();
        (ready == "Unknown").then_some(n)
    })
    .await;
    let taints: Vec<String> = node
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .into_iter()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect();
    assert!(
        taints.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string()),
        "{taints:?}"
    );
    eventually("pod evicted", Duration::from_secs(20), || async {
        pods.get_opt("victim").await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_eviction_deletecollection_and_paging() {
    let c = start().await;
    let _n = fake_node(&c, "b1", 10250).await;
    let client = c.admin().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // A pod for another scheduler stays unbound until a binding is posted.
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "manual"}, "spec": {"schedulerName": "manual", "containers": [{"name": "c", "image": "busybox"}]}})).expect("pod");
    pods.create(&PostParams::default(), &p).await.expect("pod");
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "manual"}, "target": {"apiVersion": "v1", "kind": "Node", "name": "b1"}});
    let _: serde_json::Value = pods
        .create_subresource("binding", "manual", &PostParams::default(), &binding)
        .await
        .expect("bind");
    let bound = pods.get("manual").await.expect("get");
    assert_eq!(bound.spec.and_then(|s| s.node_name).as_deref(), Some("b1"));
    let again = pods
        .create_subresource::<_, serde_json::Value>(
            "binding",
            "manual",
            &PostParams::default(),
            &binding,
        )
        .await;
    assert_eq!(api_error(again.expect_err("already bound")).code, 409);
    // Eviction deletes (gracefully: the stand-in node finishes it).
    pods.evict("manual", &Default::default())
        .await
        .expect("evict");
    eventually("evicted pod gone", Duration::from_secs(20), || async {
        pods.get_opt("manual").await.ok()?.is_none().then_some(())
    })
    .await;
    // Paging with limit/continue sees every object once.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..7 {
        cms.create(&PostParams::default(), &cm(&format!("page{i}"), "x"))
            .await
            .expect("create");
    }
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(3).labels("");
    loop {
        let page = cms.list(&lp).await.expect("page");
        names.extend(
            page.items
                .into_iter()
                .filter_map(|c| c.metadata.name)
                .filter(|n| n.starts_with("page")),
        );
        match page.metadata.continue_ {
            Some(tok) if !tok.is_empty() => lp = lp.continue_token(&tok),
            _ => break,
        }
    }
    assert_eq!(names.len(), 7, "{names:?}");
    // deletecollection with a field selector.
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().fields("metadata.name=page3"),
    )
    .await
    .expect("deletecollection");
    assert!(cms.get_opt("page3").await.expect("get").is_none());
    assert!(cms.get_opt("page4").await.expect("get").is_some());
}

/// Every page of a paginated list shows the state at the first page's resourceVersion
/// (kube-apiserver reads later pages from etcd at that revision), so a watch from the list's
/// resourceVersion reports exactly what changed after it. Read from the current state, an
/// object created between pages whose name sorts before the page boundary was in no page and
/// in no watch event: kube-rs's watcher (pages of 500) then waited forever for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paginated_list_is_one_snapshot_and_a_watch_from_it_misses_nothing() {
    use kube::runtime::watcher;
    let c = start().await;
    c.kubectl(&["create", "namespace", "paged"]).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.admin().await, "paged");
    for i in 1..=6 {
        cms.create(&PostParams::default(), &cm(&format!("p{i}"), "old"))
            .await
            .expect("create");
    }
    let names = |l: &kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        l.items
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .filter(|n| n.starts_with('p') || n.starts_with('a'))
            .collect()
    };
    let first = cms
        .list(&ListParams::default().limit(4))
        .await
        .expect("page 1");
    let rv = first.metadata.resource_version.clone().expect("list rv");
    let token = first.metadata.continue_.clone().expect("continue token");
    // Between pages: one object added before the boundary, one deleted and one changed after it.
    cms.create(&PostParams::default(), &cm("a0", "new"))
        .await
        .expect("create a0");
    cms.delete("p6", &DeleteParams::default())
        .await
        .expect("delete p6");
    let mut p5 = cms.get("p5").await.expect("get p5");
    p5.data = Some([("v".to_string(), "changed".to_string())].into());
    cms.replace("p5", &PostParams::default(), &p5)
        .await
        .expect("update p5");
    let second = cms
        .list(&ListParams::default().limit(4).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(
        second.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    let mut listed = names(&first);
    listed.extend(names(&second));
    assert_eq!(
        listed,
        ["p1", "p2", "p3", "p4", "p5", "p6"],
        "one state across pages"
    );
    let p5_then = second
        .items
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("p5"))
        .and_then(|c| c.data.clone())
        .unwrap_or_default();
    assert_eq!(p5_then.get("v").map(String::as_str), Some("old"));
    // A watch from the list's resourceVersion brings the three changes, in order.
    let mut events = cms
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .expect("watch")
        .boxed();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let e = tokio::time::timeout(Duration::from_secs(20), events.try_next())
            .await
            .expect("an event within 20 s")
            .expect("watch")
            .expect("event");
        seen.push(match e {
            WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.unwrap_or_default()),
            WatchEvent::Modified(o) => format!("MODIFIED {}", o.metadata.name.unwrap_or_default()),
            WatchEvent::Deleted(o) => format!("DELETED {}", o.metadata.name.unwrap_or_default()),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(seen, ["ADDED a0", "DELETED p6", "MODIFIED p5"]);

    // kube-rs's watcher, paging by 3, with an object created while it is between pages.
    let mut watch = watcher(cms.clone(), watcher::Config::default().page_size(3)).boxed();
    let mut initial = 0;
    while initial < 3 {
        if let watcher::Event::InitApply(_) =
            watch.try_next().await.expect("watcher").expect("event")
        {
            initial += 1;
        }
    }
    cms.create(&PostParams::default(), &cm("a1", "new"))
        .await
        .expect("create a1");
    loop {
        let e = tokio::time::timeout(Duration::from_secs(20), watch.try_next())
            .await
            .expect("the watcher reports a1 within 20 s")
            .expect("watcher")
            .expect("event");
        if let watcher::Event::Apply(o) | watcher::Event::InitApply(o) = e {
            if o.metadata.name.as_deref() == Some("a1") {
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_service_account_token_authenticates_but_is_not_authorized() {
    let c = start().await;
    let secrets: Api<Secret> = Api::namespaced(c.admin().await, "default");
    let secret = eventually("default token secret", Duration::from_secs(20), || async {
        secrets.get_opt("default-token").await.ok()?
    })
    .await;
    let token =
        String::from_utf8(secret.data.unwrap_or_default()["token"].0.clone()).expect("utf8 token");
    let sa = c.client_for("sa", &Credential::Token(token)).await;
    let err = api_error(
        Api::<Pod>::namespaced(sa, "default")
            .list(&ListParams::default())
            .await
            .expect_err("no RBAC grants"),
    );
    assert_eq!(err.code, 403, "{}", err.message);
    assert!(
        err.message
            .contains("system:serviceaccount:default:default"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_k8s_io_events_show_in_core_events() {
    let c = start().await;
    let client = c.admin().await;
    let new: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "default");
    let ev: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": "pulled.1"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "regarding": {"kind": "Pod", "namespace": "default", "name": "p"},
        "reason": "Pulled", "note": "image pulled", "type": "Normal", "action": "Pull",
        "reportingController": "rktup.io/agent", "reportingInstance": "n1"
    }))
    .expect("event");
    new.create(&PostParams::default(), &ev)
        .await
        .expect("create events.k8s.io event");
    let core_events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, "default");
    let mirrored = eventually("core mirror", Duration::from_secs(20), || async {
        core_events.get_opt("pulled.1").await.ok()?
    })
    .await;
    assert_eq!(mirrored.message.as_deref(), Some("image pulled"));
    assert_eq!(mirrored.involved_object.name.as_deref(), Some("p"));
    let table = c.ok(&["get", "events"]).await;
    assert!(
        table.contains("image pulled") && table.contains("pod/p"),
        "{table}"
    );
}
