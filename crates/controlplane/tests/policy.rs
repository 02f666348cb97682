//! Disruption budgets, quotas, limit ranges and priority (issue 15 §4) with the real kubectl:
//! `kubectl drain` blocked by a PodDisruptionBudget and done once it is relaxed, the eviction
//! subresource's Status bodies, PDB status, quota admission and counting (also under
//! concurrent creates), LimitRange defaults and limits, PriorityClass admission.

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use rktup_testkit::controlplane::*;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

async fn get_json(c: &Cluster, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    serde_json::from_str(&c.ok(&all).await).expect("kubectl prints JSON")
}

/// kubectl that must fail; returns stderr.
async fn refused(c: &Cluster, args: &[&str], stdin: Option<&str>) -> String {
    let out = c.kubectl_stdin(args, stdin).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "kubectl {args:?} succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// `refused`, whose stderr must contain `want`.
async fn refused_with(c: &Cluster, args: &[&str], stdin: Option<&str>, want: &str) {
    let err = refused(c, args, stdin).await;
    assert!(err.contains(want), "{err}");
}

/// A node that heartbeats and does nothing else: pods bound to it stay as the test sets
/// them, and a graceful deletion stays pending (terminating), as with a slow kubelet.
async fn quiet_node(c: &Cluster, name: &str) -> tokio::task::JoinHandle<()> {
    let client = c.node_client(name).await;
    let nodes: Api<Node> = Api::all(client);
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                   "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
    }))
    .expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("node registers");
    let name = name.to_string();
    tokio::spawn(async move {
        loop {
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            let _ = nodes
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready", "lastHeartbeatTime": now, "lastTransitionTime": now}]}})))
                .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// A bare pod bound to `node`, then marked Running (and Ready or not) as a kubelet would.
async fn bound_pod(c: &Cluster, name: &str, app: &str, node: &str, ready: bool) {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}});
    c.apply_stdin(&["create", "-f", "-"], &pod.to_string())
        .await;
    let pods: Api<Pod> = Api::default_namespaced(c.admin().await);
    let st = if ready { "True" } else { "False" };
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": st}, {"type": "ContainersReady", "status": st}]}})),
    )
    .await
    .expect("pod status");
}

/// POSTs an Eviction for `pod`; returns the HTTP status and the JSON answer.
async fn evict(c: &Cluster, pod: &str) -> (u16, Value) {
    use http_body_util::BodyExt;
    // kube-rs retries 429s by default; the test wants to see them.
    let kc = kube::config::Kubeconfig::read_from(c.handle.admin_kubeconfig()).expect("kubeconfig");
    let mut cfg =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("config");
    cfg.default_retry = false;
    let client = kube::Client::try_from(cfg).expect("client");
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": pod, "namespace": "default"}});
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("/api/v1/namespaces/default/pods/{pod}/eviction"))
        .header("content-type", "application/json")
        .body(kube::client::Body::from(body.to_string().into_bytes()))
        .expect("request");
    let resp = client.send(req).await.expect("response");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).expect("JSON answer"))
}

/// Waits until the PDB's status has `want`'s fields (and the condition's status/reason).
async fn pdb_status(c: &Cluster, name: &str, want: Value) -> Value {
    eventually(&format!("pdb {name} status {want}"), WAIT, || async {
        let pdb = get_json(c, &["pdb", name]).await;
        let st = &pdb["status"];
        let fields_match = want
            .as_object()?
            .iter()
            .all(|(k, v)| k == "condition" || st.get(k) == Some(v));
        let cond = st["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "DisruptionAllowed")?
            .clone();
        let cond_match = want
            .get("condition")
            .is_none_or(|w| cond["status"] == w[0] && cond["reason"] == w[1]);
        (fields_match && cond_match).then_some(pdb)
    })
    .await
}

/// kubectl drain blocks (retrying) while a PDB with minAvailable = replicas forbids every
/// eviction, and drains once the PDB is relaxed; the PDB's status follows the Deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_the_disruption_budget() {
    let c = start().await;
    let port = fake_kubelet().await;
    let _n = fake_node(&c, "pdb-node", port).await;
    c.running_deployment("web", 2).await;
    let pdb = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\nspec:\n  minAvailable: 2\n  selector:\n    matchLabels:\n      app: web\n";
    c.apply_stdin(&["apply", "-f", "-"], pdb).await;
    let st = pdb_status(
        &c,
        "web",
        json!({"expectedPods": 2, "currentHealthy": 2, "desiredHealthy": 2, "disruptionsAllowed": 0,
               "observedGeneration": 1, "condition": ["False", "InsufficientPods"]}),
    )
    .await;
    assert_eq!(
        st["status"]["conditions"][0]["observedGeneration"], 1,
        "{st}"
    );
    let before = c.ok_line("get po -l app=web -o name").await;

    let out = c
        .kubectl(&["drain", "pdb-node", "--ignore-daemonsets", "--timeout=10s"])
        .await;
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "drain must not finish: {all}");
    assert!(
        all.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{all}"
    );
    assert!(all.contains("will retry after 5s"), "{all}");
    assert_eq!(
        c.ok_line("get po -l app=web -o name").await,
        before,
        "no pod was evicted"
    );

    // A percentage resolves against the Deployment's replicas: 50% of 2 may go.
    c.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":null,"maxUnavailable":"50%"}}"#,
    ])
    .await;
    pdb_status(
        &c,
        "web",
        json!({"expectedPods": 2, "desiredHealthy": 1, "disruptionsAllowed": 1,
               "observedGeneration": 2, "condition": ["True", "SufficientPods"]}),
    )
    .await;

    // Drain again, and relax the budget fully while it waits for the second pod.
    let drain = {
        let kc = c.handle.admin_kubeconfig().to_path_buf();
        let home = c.dir.path().join("home");
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(KUBECTL)
                .arg("--kubeconfig")
                .arg(&kc)
                .args(["drain", "pdb-node", "--ignore-daemonsets", "--timeout=120s"])
                .env("HOME", &home)
                .env("KUBECACHEDIR", home.join("cache"))
                .output()
                .expect("kubectl runs")
        })
    };
    eventually("one web pod evicted", WAIT, || async {
        let pods = get_json(&c, &["po", "-l", "app=web"]).await;
        let old_left = pods["items"]
            .as_array()?
            .iter()
            .filter(|p| before.contains(p["metadata"]["name"].as_str().unwrap_or("?")))
            .count();
        (old_left == 1).then_some(())
    })
    .await;
    c.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"maxUnavailable":"100%"}}"#,
    ])
    .await;
    let out = drain.await.expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for pod in before.lines() {
        let name = pod.trim_start_matches("pod/");
        assert!(stdout.contains(&format!("pod/{name} evicted")), "{stdout}");
    }
    assert!(stdout.contains("node/pdb-node drained"), "{stdout}");
}

/// The eviction subresource as upstream: the budget is taken and the pod recorded in
/// `disruptedPods` in one write, then the pod gets `DisruptionTarget` and is deleted; with no
/// disruption left, 429 with upstream's Status body; two budgets: 500; an unready pod goes
/// when the budget is healthy; a pod's PDB with integer minAvailable counts bare pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_honours_the_budget() {
    let c = start().await;
    let _n = quiet_node(&c, "slow").await;
    for p in ["bare-1", "bare-2", "bare-3"] {
        bound_pod(&c, p, "bare", "slow", true).await;
    }
    let pdb = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: bare\nspec:\n  minAvailable: 2\n  selector:\n    matchLabels:\n      app: bare\n";
    c.apply_stdin(&["create", "-f", "-"], pdb).await;
    pdb_status(
        &c,
        "bare",
        json!({"expectedPods": 3, "currentHealthy": 3, "desiredHealthy": 2, "disruptionsAllowed": 1,
               "condition": ["True", "SufficientPods"]}),
    )
    .await;

    // Watch the PDB to see the eviction's own write.
    let admin = c.admin().await;
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::default_namespaced(admin.clone());
    let rv = pdbs
        .get("bare")
        .await
        .expect("pdb")
        .metadata
        .resource_version
        .expect("rv");
    let (code, body) = evict(&c, "bare-1").await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["status"], "Success", "{body}");
    use futures_util::StreamExt;
    let mut events = pdbs
        .watch(
            &kube::api::WatchParams::default().fields("metadata.name=bare"),
            &rv,
        )
        .await
        .expect("watch")
        .boxed();
    let first = tokio::time::timeout(WAIT, events.next())
        .await
        .expect("an event")
        .expect("event")
        .expect("ok");
    let kube::api::WatchEvent::Modified(taken) = first else {
        panic!("{first:?}");
    };
    let st = taken.status.expect("status");
    assert_eq!(st.disruptions_allowed, 0);
    assert!(
        st.disrupted_pods.is_some_and(|d| d.contains_key("bare-1")),
        "the eviction records the pod with the decrement"
    );
    let pod = get_json(&c, &["po", "bare-1"]).await;
    assert!(pod["metadata"]["deletionTimestamp"].is_string(), "{pod}");
    let target = pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionTarget").cloned())
        .expect("DisruptionTarget condition");
    assert_eq!(target["reason"], "EvictionByEvictionAPI");
    assert_eq!(target["message"], "Eviction API: evicting");

    // The terminating pod no longer counts: 2 healthy, 2 needed.
    pdb_status(
        &c,
        "bare",
        json!({"currentHealthy": 2, "desiredHealthy": 2, "disruptionsAllowed": 0, "expectedPods": 3,
               "condition": ["False", "InsufficientPods"]}),
    )
    .await;
    let (code, body) = evict(&c, "bare-2").await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "Cannot evict pod as it would violate the pod's disruption budget.",
               "reason": "TooManyRequests",
               "details": {"causes": [{"reason": "DisruptionBudget",
                   "message": "The disruption budget bare needs 2 healthy pods and has 2 currently"}]},
               "code": 429})
    );
    assert!(get_json(&c, &["po", "bare-2"]).await["metadata"]["deletionTimestamp"].is_null());

    // An unready pod may go while the budget is met (IfHealthyBudget), never when it is not;
    // AlwaysAllow lets it go regardless.
    bound_pod(&c, "bare-4", "bare", "slow", false).await;
    pdb_status(&c, "bare", json!({"currentHealthy": 2, "expectedPods": 4})).await;
    let (code, body) = evict(&c, "bare-4").await;
    assert_eq!(code, 201, "healthy budget, unready pod: {body}");
    bound_pod(&c, "lone", "lone", "slow", false).await;
    let lone = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: lone\nspec:\n  minAvailable: 1\n  selector:\n    matchLabels:\n      app: lone\n";
    c.apply_stdin(&["create", "-f", "-"], lone).await;
    pdb_status(
        &c,
        "lone",
        json!({"currentHealthy": 0, "desiredHealthy": 1, "expectedPods": 1}),
    )
    .await;
    let (code, body) = evict(&c, "lone").await;
    assert_eq!(code, 429, "{body}");
    c.ok(&[
        "patch",
        "pdb",
        "lone",
        "--type=merge",
        "-p",
        r#"{"spec":{"unhealthyPodEvictionPolicy":"AlwaysAllow"}}"#,
    ])
    .await;
    let (code, body) = evict(&c, "lone").await;
    assert_eq!(code, 201, "AlwaysAllow: {body}");

    // A second budget over the same pod: the subresource does not choose.
    let dup = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: bare-too\nspec:\n  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app: bare\n";
    c.apply_stdin(&["create", "-f", "-"], dup).await;
    let (code, body) = evict(&c, "bare-3").await;
    assert_eq!(code, 500, "{body}");
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
               "code": 500})
    );
}

/// Upstream's PDB validation texts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdb_validation() {
    let c = start().await;
    let both = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: both\nspec:\n  minAvailable: 1\n  maxUnavailable: 1\n  selector: {}\n";
    refused_with(
        &c,
        &["create", "-f", "-"],
        Some(both),
        "minAvailable and maxUnavailable cannot be both set",
    )
    .await;
    let pct = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: pct\nspec:\n  maxUnavailable: 150%\n";
    refused_with(&c, &["create", "-f", "-"], Some(pct), "spec.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"150%\"}: must not be greater than 100%").await;
    let neg = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: neg\nspec:\n  minAvailable: -1\n";
    refused_with(
        &c,
        &["create", "-f", "-"],
        Some(neg),
        "spec.minAvailable: Invalid value: -1: must be greater than or equal to 0",
    )
    .await;
}

/// Quota: pods beyond the limit refused with upstream's text, `describe quota` shows
/// used/hard, a compute quota requires the resources it limits, and concurrent creates
/// never take more than the quota allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_quota_admission_and_status() {
    let c = start().await;
    let quota = "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: pod-quota\nspec:\n  hard:\n    pods: \"2\"\n    configmaps: \"20\"\n";
    c.apply_stdin(&["create", "-f", "-"], quota).await;
    c.ok_line("create configmap one").await;
    for p in ["p1", "p2"] {
        c.ok_line(&format!("run {p} --image=busybox")).await;
    }
    refused_with(&c, &["run", "p3", "--image=busybox"], None, "pods \"p3\" is forbidden: exceeded quota: pod-quota, requested: pods=1, used: pods=2, limited: pods=2").await;
    eventually("quota status", WAIT, || async {
        let q = get_json(&c, &["quota", "pod-quota"]).await;
        (q["status"]["used"]["pods"] == "2" && q["status"]["hard"]["pods"] == "2").then_some(())
    })
    .await;
    let described = c.ok_line("describe quota pod-quota").await;
    let row = |name: &str, used: &str, hard: &str| {
        described
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == [name, used, hard])
    };
    assert!(row("pods", "2", "2"), "{described}");
    // `one` and the root CA publisher's `kube-root-ca.crt`, as upstream counts them.
    assert!(row("configmaps", "2", "20"), "{described}");
    // A deleted pod frees its slot.
    c.ok_line("delete pod p1 --wait=false").await;
    eventually("slot freed", WAIT, || async {
        c.kubectl(&["run", "p3", "--image=busybox"])
            .await
            .status
            .success()
            .then_some(())
    })
    .await;

    // Compute quota in its own namespace.
    c.ok_line("create namespace compute").await;
    let compute = "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: compute\nspec:\n  hard:\n    limits.cpu: \"1\"\n    requests.memory: 1Gi\n";
    c.apply_stdin(&["-n", "compute", "create", "-f", "-"], compute)
        .await;
    refused_with(
        &c,
        &["-n", "compute", "run", "bare", "--image=busybox"],
        None,
        "pods \"bare\" is forbidden: failed quota: compute: must specify limits.cpu for: bare; requests.memory for: bare",
    )
    .await;
    let sized = |name: &str, cpu: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [
            {"name": "c", "image": "busybox", "resources": {"limits": {"cpu": cpu, "memory": "256Mi"}}}]}})
        .to_string()
    };
    c.apply_stdin(&["-n", "compute", "create", "-f", "-"], &sized("a", "600m"))
        .await;
    refused_with(
        &c,
        &["-n", "compute", "create", "-f", "-"],
        Some(&sized("b", "500m")),
        "exceeded quota: compute, requested: limits.cpu=500m, used: limits.cpu=600m, limited: limits.cpu=1",
    )
    .await;
    eventually("compute used", WAIT, || async {
        let q = get_json(&c, &["-n", "compute", "quota", "compute"]).await;
        (q["status"]["used"] == json!({"limits.cpu": "600m", "requests.memory": "256Mi"}))
            .then_some(())
    })
    .await;

    // Services and claims.
    c.ok_line("create namespace svc").await;
    let svcq = "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: svc\nspec:\n  hard:\n    services.nodeports: \"1\"\n    requests.storage: 1Gi\n";
    c.apply_stdin(&["-n", "svc", "create", "-f", "-"], svcq)
        .await;
    c.ok_line("-n svc create service nodeport a --tcp=80:80")
        .await;
    c.ok_line("-n svc create service clusterip b --tcp=80:80")
        .await;
    refused_with(
        &c,
        &[
            "-n",
            "svc",
            "create",
            "service",
            "nodeport",
            "c",
            "--tcp=80:80",
        ],
        None,
        "services \"c\" is forbidden: exceeded quota: svc, requested: services.nodeports=1, used: services.nodeports=1, limited: services.nodeports=1",
    )
    .await;
    // An update that adds usage is charged too.
    refused_with(
        &c,
        &[
            "-n",
            "svc",
            "patch",
            "service",
            "b",
            "-p",
            r#"{"spec":{"type":"NodePort"}}"#,
        ],
        None,
        "services \"b\" is forbidden: exceeded quota: svc, requested: services.nodeports=1, used: services.nodeports=1, limited: services.nodeports=1",
    )
    .await;
    c.ok_line("-n svc label service a x=y").await;
    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "big"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}});
    refused_with(
        &c,
        &["-n", "svc", "create", "-f", "-"],
        Some(&pvc.to_string()),
        "persistentvolumeclaims \"big\" is forbidden: exceeded quota: svc, requested: requests.storage=2Gi, used: requests.storage=0, limited: requests.storage=1Gi",
    )
    .await;

    // Twelve concurrent creates against a quota of five: exactly five get through.
    c.ok_line("create namespace race").await;
    let race = "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: race\nspec:\n  hard:\n    count/configmaps: \"5\"\n";
    c.apply_stdin(&["-n", "race", "create", "-f", "-"], race)
        .await;
    let client = c.admin().await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, "race");
    let mut tasks = Vec::new();
    for i in 0..12 {
        let cms = cms.clone();
        tasks.push(tokio::spawn(async move {
            let cm: k8s_openapi::api::core::v1::ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": format!("cm-{i}")}}))
                    .expect("cm");
            cms.create(&PostParams::default(), &cm).await
        }));
    }
    let mut refusals = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.expect("join") {
            refusals.push(e.to_string());
        }
    }
    let stored = cms
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .len();
    assert_eq!(stored, 5, "refusals: {refusals:?}");
    assert!(
        refusals.iter().all(|r| r.contains("exceeded quota: race")),
        "{refusals:?}"
    );
}

/// LimitRange: defaults land in a created pod (with LimitRanger's annotation), a request
/// below the minimum is refused with upstream's text, the LimitRange itself is defaulted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_range_defaults_and_minimums() {
    let c = start().await;
    let lr = "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: limits\nspec:\n  limits:\n  - type: Container\n    default:\n      cpu: 500m\n      memory: 256Mi\n    defaultRequest:\n      cpu: 100m\n    min:\n      cpu: 50m\n    max:\n      cpu: \"2\"\n";
    c.apply_stdin(&["create", "-f", "-"], lr).await;
    let stored = get_json(&c, &["limitrange", "limits"]).await;
    assert_eq!(
        stored["spec"]["limits"][0]["defaultRequest"],
        json!({"cpu": "100m", "memory": "256Mi"}),
        "the default request follows the default limit"
    );
    c.ok_line("run plain --image=busybox").await;
    let pod = get_json(&c, &["po", "plain"]).await;
    let res = &pod["spec"]["containers"][0]["resources"];
    assert_eq!(
        res["requests"],
        json!({"cpu": "100m", "memory": "256Mi"}),
        "{pod}"
    );
    assert_eq!(
        res["limits"],
        json!({"cpu": "500m", "memory": "256Mi"}),
        "{pod}"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container plain; cpu, memory limit for container plain"
    );
    assert_eq!(pod["status"]["qosClass"], "Burstable");

    let small = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "small"}, "spec": {"containers": [
        {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "20m"}}}]}});
    refused_with(
        &c,
        &["create", "-f", "-"],
        Some(&small.to_string()),
        "pods \"small\" is forbidden: minimum cpu usage per Container is 50m, but request is 20m",
    )
    .await;
    let big = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"}, "spec": {"containers": [
        {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "20m"}, "limits": {"cpu": "3"}}}]}});
    refused_with(&c, &["create", "-f", "-"], Some(&big.to_string()), "pods \"big\" is forbidden: [minimum cpu usage per Container is 50m, but request is 20m, maximum cpu usage per Container is 2, but limit is 3]").await;
    let bad = "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: bad\nspec:\n  limits:\n  - type: Container\n    min:\n      cpu: \"1\"\n    max:\n      cpu: 500m\n";
    refused_with(
        &c,
        &["create", "-f", "-"],
        Some(bad),
        "min value 1 is greater than max value 500m",
    )
    .await;
}

/// PriorityClass: the system classes exist, pods get their class's priority, unknown classes
/// and a mismatching priority are refused, one global default at most, user values capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_classes() {
    let c = start().await;
    assert_eq!(
        c.ok(&[
            "get",
            "priorityclass",
            "system-node-critical",
            "-o",
            "jsonpath={.value}"
        ])
        .await,
        "2000001000"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "priorityclass",
            "system-cluster-critical",
            "-o",
            "jsonpath={.value}"
        ])
        .await,
        "2000000000"
    );
    let high = "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: high\nvalue: 1000\npreemptionPolicy: Never\n";
    c.apply_stdin(&["create", "-f", "-"], high).await;
    let pod = |name: &str, extra: Value| {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
            .to_string()
    };
    c.apply_stdin(
        &["create", "-f", "-"],
        &pod("hi", json!({"priorityClassName": "high"})),
    )
    .await;
    let hi = get_json(&c, &["po", "hi"]).await;
    assert_eq!(hi["spec"]["priority"], 1000);
    assert_eq!(hi["spec"]["preemptionPolicy"], "Never");
    // A replace that leaves the admitted fields out keeps them.
    let mut replaced = hi.clone();
    if let Some(spec) = replaced["spec"].as_object_mut() {
        spec.remove("priority");
        spec.remove("preemptionPolicy");
    }
    c.apply_stdin(&["replace", "-f", "-"], &replaced.to_string())
        .await;
    assert_eq!(get_json(&c, &["po", "hi"]).await["spec"]["priority"], 1000);
    c.ok_line("run plain --image=busybox").await;
    let plain = get_json(&c, &["po", "plain"]).await;
    assert_eq!(plain["spec"]["priority"], 0);
    assert_eq!(plain["spec"]["preemptionPolicy"], "PreemptLowerPriority");
    let crit = pod("crit", json!({"priorityClassName": "system-node-critical"}));
    c.apply_stdin(&["-n", "kube-system", "create", "-f", "-"], &crit)
        .await;
    assert_eq!(
        get_json(&c, &["-n", "kube-system", "po", "crit"]).await["spec"]["priority"],
        2000001000
    );

    refused_with(
        &c,
        &["create", "-f", "-"],
        Some(&pod("x", json!({"priorityClassName": "foo"}))),
        "pods \"x\" is forbidden: no PriorityClass with name foo was found",
    )
    .await;
    refused_with(
        &c,
        &["create", "-f", "-"],
        Some(&pod(
            "y",
            json!({"priorityClassName": "high", "priority": 5}),
        )),
        "pods \"y\" is forbidden: the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name",
    )
    .await;

    let huge = "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: huge\nvalue: 2000000000\n";
    refused_with(
        &c,
        &["create", "-f", "-"],
        Some(huge),
        "value: Forbidden: maximum allowed value of a user defined priority is 1000000000",
    )
    .await;
    let sys = "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: system-mine\nvalue: 10\n";
    refused_with(&c, &["create", "-f", "-"], Some(sys), "priority class names with 'system-' prefix are reserved for system use only. error: name system-mine is not a known system priority class").await;

    let d1 = "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: d1\nvalue: 7\nglobalDefault: true\n";
    c.apply_stdin(&["create", "-f", "-"], d1).await;
    let d2 = d1.replace("d1", "d2");
    refused_with(
        &c,
        &["create", "-f", "-"],
        Some(&d2),
        "PriorityClass d1 is already marked as default. Only one default can exist",
    )
    .await;
    refused_with(
        &c,
        &[
            "patch",
            "priorityclass",
            "high",
            "--type=merge",
            "-p",
            r#"{"globalDefault":true}"#,
        ],
        None,
        "PriorityClass d1 is already marked as default. Only one default can exist",
    )
    .await;
    c.ok_line("run defaulted --image=busybox").await;
    let p = get_json(&c, &["po", "defaulted"]).await;
    assert_eq!(p["spec"]["priority"], 7);
    assert_eq!(p["spec"]["priorityClassName"], "d1");
    refused_with(
        &c,
        &[
            "patch",
            "priorityclass",
            "high",
            "--type=merge",
            "-p",
            r#"{"value":5}"#,
        ],
        None,
        "value: Forbidden: may not be changed in an update.",
    )
    .await;
}
