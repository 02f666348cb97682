//! Drives the control plane with the real kubectl (/usr/bin/kubectl).

use rktup_testkit::controlplane::*;
use std::time::Duration;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: p1
  labels: {app: demo}
spec:
  containers:
  - name: main
    image: busybox:1.36
    command: ["sleep", "3600"]
"#;

const DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  strategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        resources:
          requests: {cpu: 100m, memory: 64Mi}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_health_and_api_resources() {
    let c = start().await;
    let ns = c.ok(&["get", "ns"]).await;
    assert!(ns.starts_with("NAME"), "{ns}");
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(n), "{ns}");
    }
    let ar = c.ok(&["api-resources"]).await;
    for line in [
        "pods ",
        "deployments ",
        "replicasets ",
        "leases ",
        "events ",
    ] {
        assert!(ar.contains(line), "{ar}");
    }
    assert!(
        ar.lines()
            .any(|l| l.starts_with("pods") && l.contains(" po ") && l.contains("Pod")),
        "{ar}"
    );
    let all = c.ok(&["get", "all"]).await;
    assert!(all.contains("service/kubernetes"), "{all}");
    let v = c.ok(&["version", "-o", "json"]).await;
    assert!(v.contains("\"serverVersion\""), "{v}");
    let raw = c.ok(&["get", "--raw", "/readyz"]).await;
    assert_eq!(raw, "ok");
    let explain = c.ok(&["explain", "deployment.spec.replicas"]).await;
    assert!(
        explain.contains("replicas") && explain.contains("<integer>"),
        "{explain}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_crud_outputs_label_patch_describe_delete() {
    let c = start().await;
    let out = c.apply_stdin(&["create", "-f", "-"], POD).await;
    assert_eq!(out.trim(), "pod/p1 created");
    let table = c.ok(&["get", "po"]).await;
    let header = header_of(&table);
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert!(
        table.contains("p1") && table.contains("0/1") && table.contains("Pending"),
        "{table}"
    );
    let wide = c.ok(&["get", "po", "-o", "wide"]).await;
    assert!(
        wide.lines().next().unwrap_or("").contains("NOMINATED NODE"),
        "{wide}"
    );
    let yaml = c.ok(&["get", "po", "p1", "-o", "yaml"]).await;
    for want in [
        "restartPolicy: Always",
        "dnsPolicy: ClusterFirst",
        "terminationGracePeriodSeconds: 30",
        "uid:",
        "creationTimestamp:",
        "phase: Pending",
    ] {
        assert!(yaml.contains(want), "missing {want} in\n{yaml}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "po", "p1", "-o", "json"]).await).expect("json");
    assert_eq!(
        json["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(c.ok(&["get", "po", "-o", "name"]).await.trim(), "pod/p1");
    c.ok(&["label", "po", "p1", "tier=backend"]).await;
    c.ok(&["annotate", "po", "p1", "note=hello"]).await;
    let sel = c
        .ok(&[
            "get",
            "po",
            "-l",
            "tier in (backend,frontend),app=demo",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(sel.trim(), "pod/p1");
    let none = c
        .ok(&["get", "po", "-l", "tier!=backend", "-o", "name"])
        .await;
    assert_eq!(none.trim(), "");
    let fsel = c
        .ok(&[
            "get",
            "po",
            "--field-selector",
            "status.phase=Pending",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(fsel.trim(), "pod/p1");
    c.ok(&[
        "patch",
        "po",
        "p1",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"m":"1"}}}"#,
    ])
    .await;
    c.ok(&[
        "patch",
        "po",
        "p1",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/j","value":"2"}]"#,
    ])
    .await;
    c.ok(&[
        "patch",
        "po",
        "p1",
        "-p",
        r#"{"spec":{"containers":[{"name":"main","image":"busybox:1.37"}]}}"#,
    ])
    .await;
    let labels = c
        .ok(&[
            "get",
            "po",
            "p1",
            "-o",
            "jsonpath={.metadata.labels.m}{.metadata.labels.j}{.spec.containers[0].image}",
        ])
        .await;
    assert_eq!(labels, "12busybox:1.37");
    // Forbidden pod spec change: 422 Invalid from the server.
    let bad = c
        .kubectl(&[
            "patch",
            "po",
            "p1",
            "-p",
            r#"{"spec":{"restartPolicy":"Never"}}"#,
        ])
        .await;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("is invalid"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let desc = c.ok(&["describe", "po", "p1"]).await;
    assert!(
        desc.contains("Name:") && desc.contains("p1") && desc.contains("busybox:1.37"),
        "{desc}"
    );
    // Validation errors come back as 422 with causes.
    let invalid = c
        .kubectl_stdin(
            &["create", "-f", "-"],
            Some("apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec: {containers: []}\n"),
        )
        .await;
    assert!(
        String::from_utf8_lossy(&invalid.stderr).contains("spec.containers: Required value"),
        "{}",
        String::from_utf8_lossy(&invalid.stderr)
    );
    assert_eq!(
        c.ok(&["delete", "po", "p1", "--wait=true"]).await.trim(),
        "pod \"p1\" deleted"
    );
    let gone = c.kubectl(&["get", "po", "p1"]).await;
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_client_side_and_server_side() {
    let c = start().await;
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  labels: {a: b}\ndata:\n  k: v\n";
    assert_eq!(
        c.apply_stdin(&["apply", "-f", "-"], cm).await.trim(),
        "configmap/cfg created"
    );
    assert_eq!(
        c.apply_stdin(&["apply", "-f", "-"], cm).await.trim(),
        "configmap/cfg unchanged"
    );
    let cm2 = cm.replace("k: v", "k: v2\n  k2: x");
    assert_eq!(
        c.apply_stdin(&["apply", "-f", "-"], &cm2).await.trim(),
        "configmap/cfg configured"
    );
    // kubectl validates strictly on the server by default.
    let unknown = c
        .kubectl_stdin(
            &["apply", "-f", "-"],
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo}\ndatta: {k: v}\n"),
        )
        .await;
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("unknown field \"datta\""),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    // Chunked listing (limit/continue) returns everything.
    let chunked = c.ok(&["get", "cm", "--chunk-size=1", "-o", "name"]).await;
    assert!(chunked.contains("configmap/cfg"), "{chunked}");
    let data = c
        .ok(&["get", "cm", "cfg", "-o", "jsonpath={.data.k}{.data.k2}"])
        .await;
    assert_eq!(data, "v2x");
    // Removing a key from the applied config removes it (three-way merge).
    c.apply_stdin(&["apply", "-f", "-"], cm).await;
    assert_eq!(
        c.ok(&["get", "cm", "cfg", "-o", "jsonpath={.data}"]).await,
        r#"{"k":"v"}"#
    );

    let ssa = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: '1'\n";
    assert_eq!(
        c.apply_stdin(&["apply", "--server-side", "-f", "-"], ssa)
            .await
            .trim(),
        "configmap/ssa serverside-applied"
    );
    let mf = c
        .ok(&[
            "get",
            "cm",
            "ssa",
            "-o",
            "jsonpath={.metadata.managedFields[0].manager}/{.metadata.managedFields[0].operation}",
            "--show-managed-fields",
        ])
        .await;
    assert_eq!(mf, "kubectl/Apply");
    // A second manager changing the same field conflicts, unless forced.
    let other = ssa.replace("'1'", "'2'");
    let conflict = c
        .kubectl_stdin(
            &["apply", "--server-side", "--field-manager=other", "-f", "-"],
            Some(&other),
        )
        .await;
    assert!(!conflict.status.success());
    assert!(
        String::from_utf8_lossy(&conflict.stderr).contains("conflict"),
        "{}",
        String::from_utf8_lossy(&conflict.stderr)
    );
    c.apply_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &other,
    )
    .await;
    assert_eq!(
        c.ok(&["get", "cm", "ssa", "-o", "jsonpath={.data.a}"])
            .await,
        "2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rollout_scale_undo_and_cascading_delete() {
    let c = start().await;
    let _n1 = fake_node(&c, "n1", 10250).await;
    let _n2 = fake_node(&c, "n2", 10250).await;
    assert_eq!(
        c.apply_stdin(&["apply", "-f", "-"], DEPLOY).await.trim(),
        "deployment.apps/web created"
    );
    let status = c
        .ok(&["rollout", "status", "deploy/web", "--timeout=60s"])
        .await;
    assert!(status.contains("successfully rolled out"), "{status}");
    let table = c.ok(&["get", "deploy", "web"]).await;
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()[..4]
            == ["web", "3/3", "3", "3"],
        "{table}"
    );
    // Pods spread over both nodes.
    let nodes = c
        .ok(&[
            "get",
            "po",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ])
        .await;
    assert!(nodes.contains("n1") && nodes.contains("n2"), "{nodes}");
    c.ok(&[
        "wait",
        "--for=condition=Available",
        "deploy/web",
        "--timeout=30s",
    ])
    .await;
    c.ok(&["set", "image", "deploy/web", "nginx=nginx:1.26"])
        .await;
    let status = c
        .ok(&["rollout", "status", "deploy/web", "--timeout=60s"])
        .await;
    assert!(status.contains("successfully rolled out"), "{status}");
    // Old pods may still be terminating right after the rollout (as upstream); they go.
    let c = &c;
    wait_pod_images(c, "only new pods left", "app=web", "nginx:1.26", 3).await;
    let history = c.ok(&["rollout", "history", "deploy/web"]).await;
    assert!(
        history.contains("1 ") && history.contains("2 "),
        "{history}"
    );
    c.ok(&["rollout", "undo", "deploy/web"]).await;
    c.ok(&["rollout", "status", "deploy/web", "--timeout=60s"])
        .await;
    let image = c
        .ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .await;
    assert_eq!(image, "nginx:1.25");
    wait_pod_images(
        c,
        "old pods replaced after undo",
        "app=web",
        "nginx:1.25",
        3,
    )
    .await;
    c.ok(&["scale", "deploy/web", "--replicas=1"]).await;
    eventually("scaled to 1", Duration::from_secs(30), || async {
        let names = c.ok(&["get", "po", "-l", "app=web", "-o", "name"]).await;
        (names.lines().count() == 1).then_some(())
    })
    .await;
    let rs = c.ok(&["get", "rs", "-o", "name"]).await;
    assert_eq!(rs.lines().count(), 2, "{rs}");
    c.ok(&["delete", "deploy", "web"]).await;
    eventually("cascading delete", Duration::from_secs(30), || async {
        let left = c.ok(&["get", "rs,po", "-o", "name"]).await;
        left.trim().is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_proxied_to_the_node() {
    let c = start().await;
    let port = fake_kubelet().await;
    let _n = fake_node(&c, "logs-node", port).await;
    c.apply_stdin(&["create", "-f", "-"], POD).await;
    c.ok(&["wait", "--for=condition=Ready", "pod/p1", "--timeout=30s"])
        .await;
    let logs = c.ok(&["logs", "p1"]).await;
    assert_eq!(
        logs,
        "log line 1 from default/p1/main\nlog line 2 from default/p1/main\n"
    );
    let bad = c.kubectl(&["logs", "p1", "-c", "nope"]).await;
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("container nope is not valid"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_cluster_ips_and_endpoints() {
    let c = start().await;
    let _n = fake_node(&c, "n1", 10250).await;
    c.apply_stdin(&["create", "-f", "-"], POD).await;
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: demo}\nspec:\n  selector: {app: demo}\n  ports: [{port: 80, targetPort: 8080}]\n";
    c.apply_stdin(&["apply", "-f", "-"], svc).await;
    let table = c.ok(&["get", "svc", "demo"]).await;
    let cols: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(cols[1], "ClusterIP");
    // Anywhere in 10.96.0.0/12: allocation is random, as upstream's.
    let ip: std::net::Ipv4Addr = cols[2].parse().expect("cluster IP");
    assert!(
        u32::from(ip) >> 20 == u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0)) >> 20,
        "{table}"
    );
    assert_eq!(cols[4], "80/TCP");
    eventually("endpoints", Duration::from_secs(20), || async {
        let ep = c
            .ok(&[
                "get",
                "endpoints",
                "demo",
                "-o",
                "jsonpath={.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}",
            ])
            .await;
        (ep.starts_with("10.244.") && ep.ends_with(":8080")).then_some(())
    })
    .await;
    // Namespace deletion cascades to its content.
    c.apply_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: tmp}\n",
    )
    .await;
    c.apply_stdin(&["create", "-n", "tmp", "-f", "-"], POD)
        .await;
    c.ok(&["delete", "ns", "tmp", "--timeout=30s"]).await;
    let gone = c.kubectl(&["get", "ns", "tmp"]).await;
    assert!(!gone.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_and_daemonsets_cover_nodes() {
    let c = start().await;
    let _n1 = fake_node(&c, "d1", 10250).await;
    let _n2 = fake_node(&c, "d2", 10250).await;
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: once}\nspec:\n  completions: 2\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox, command: [\"true\"]}]\n";
    c.apply_stdin(&["apply", "-f", "-"], job).await;
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/once",
        "--timeout=60s",
    ])
    .await;
    let table = c.ok(&["get", "job", "once"]).await;
    let cols: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(&cols[..3], ["once", "Complete", "2/2"], "{table}");
    let ds = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec:\n      containers: [{name: c, image: agent:1}]\n";
    c.apply_stdin(&["apply", "-f", "-"], ds).await;
    let st = c
        .ok(&["rollout", "status", "ds/agent", "--timeout=60s"])
        .await;
    assert!(st.contains("successfully rolled out"), "{st}");
    let nodes = c
        .ok(&[
            "get",
            "po",
            "-l",
            "app=agent",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ])
        .await;
    let mut nodes: Vec<&str> = nodes.split_whitespace().collect();
    nodes.sort();
    assert_eq!(nodes, ["d1", "d2"]);
    c.ok(&["set", "image", "ds/agent", "c=agent:2"]).await;
    c.ok(&["rollout", "status", "ds/agent", "--timeout=60s"])
        .await;
    wait_pod_images(&c, "daemon pods updated", "app=agent", "agent:2", 2).await;
}

/// A daemon pod that turns Failed is deleted and replaced, after a back-off per node that grows
/// with each failure (upstream's failedPodsBackoff): failing it again and again never piles up
/// pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_daemon_pods_are_replaced_after_a_back_off() {
    let c = start().await;
    let _n1 = fake_node(&c, "f1", 10250).await;
    let ds = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: flaky}\nspec:\n  selector: {matchLabels: {app: flaky}}\n  template:\n    metadata: {labels: {app: flaky}}\n    spec:\n      containers: [{name: c, image: flaky:1}]\n";
    c.apply_stdin(&["apply", "-f", "-"], ds).await;
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..3 {
        // The one live pod (a new one after each failure).
        let pod = eventually(
            &format!("a live flaky pod (round {round})"),
            Duration::from_secs(30),
            || async {
                let out = c
                    .ok(&[
                        "get",
                        "po",
                        "-l",
                        "app=flaky",
                        "-o",
                        "jsonpath={range .items[*]}{.metadata.name} {.status.phase}{\"\\n\"}{end}",
                    ])
                    .await;
                let live: Vec<String> = out
                    .lines()
                    .filter(|l| !l.ends_with(" Failed"))
                    .filter_map(|l| l.split_whitespace().next().map(String::from))
                    .filter(|n| !seen.contains(n))
                    .collect();
                (live.len() == 1).then(|| live[0].clone())
            },
        )
        .await;
        seen.insert(pod.clone());
        // As its node would report a container that failed for good.
        c.ok(&[
            "patch",
            "pod",
            &pod,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Failed"}}"#,
        ])
        .await;
        // The failed pod goes (deleted by the controller), never kept beside its successor.
        eventually(
            &format!("failed pod {pod} deleted"),
            Duration::from_secs(30),
            || async {
                let out = c.ok(&["get", "po", "-l", "app=flaky", "-o", "name"]).await;
                (!out.contains(&pod)).then_some(())
            },
        )
        .await;
        let pods = c.ok(&["get", "po", "-l", "app=flaky", "-o", "name"]).await;
        assert!(
            pods.lines().count() <= 1,
            "at most one pod on the node: {pods}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_and_foreground_delete() {
    let c = start().await;
    c.apply_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ed}\ndata: {k: before}\n",
    )
    .await;
    let kc = c.handle.admin_kubeconfig().to_path_buf();
    let home = c.dir.path().join("home");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["edit", "cm", "ed"])
            .env("HOME", &home)
            .env("KUBE_EDITOR", "sed -i s/before/after/")
            .output()
            .expect("kubectl edit")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.ok(&["get", "cm", "ed", "-o", "jsonpath={.data.k}"]).await,
        "after"
    );
    c.apply_stdin(&["apply", "-f", "-"], DEPLOY).await;
    eventually("pods created", Duration::from_secs(20), || async {
        (c.ok(&["get", "po", "-o", "name"]).await.lines().count() == 3).then_some(())
    })
    .await;
    c.ok(&[
        "delete",
        "deploy",
        "web",
        "--cascade=foreground",
        "--timeout=60s",
    ])
    .await;
    assert!(c
        .ok(&["get", "deploy,rs,po", "-o", "name"])
        .await
        .trim()
        .is_empty());
}

const DAEMONSET: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: c
        image: agent:1
"#;

/// The daemon pods' images and `controller-revision-hash` labels.
async fn daemon_pods(c: &Cluster) -> Vec<(String, String)> {
    let out = c
        .ok(&[
            "get",
            "po",
            "-l",
            "app=agent",
            "-o",
            r#"jsonpath={range .items[*]}{.spec.containers[0].image} {.metadata.labels.controller-revision-hash}{"\n"}{end}"#,
        ])
        .await;
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(image, hash)| (image.to_string(), hash.to_string()))
        .collect()
}

/// `(revision, name, hash label)` of each ControllerRevision, by revision.
async fn revisions(c: &Cluster) -> Vec<(i64, String, String)> {
    let list: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "controllerrevisions", "-o", "json"]).await)
            .expect("json");
    let mut out: Vec<(i64, String, String)> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|cr| {
            (
                cr["revision"].as_i64().unwrap_or(-1),
                cr["metadata"]["name"].as_str().unwrap_or("").to_string(),
                cr["metadata"]["labels"]["controller-revision-hash"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Waits until every daemon pod runs `image` with the hash of the revision
/// numbered `revision`.
async fn wait_daemon_pods_at(c: &Cluster, image: &str, revision: i64) {
    c.ok(&["rollout", "status", "ds/agent", "--timeout=60s"])
        .await;
    eventually(
        &format!("daemon pods at {image}, revision {revision}"),
        Duration::from_secs(30),
        || async {
            let hash = revisions(c)
                .await
                .into_iter()
                .find(|(r, _, _)| *r == revision)?
                .2;
            let pods = daemon_pods(c).await;
            (pods.len() == 2 && pods.iter().all(|(i, h)| i == image && *h == hash)).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_revisions_history_and_undo() {
    let c = start().await;
    let _n1 = fake_node(&c, "h1", 10250).await;
    let _n2 = fake_node(&c, "h2", 10250).await;
    c.apply_stdin(&["apply", "-f", "-"], DAEMONSET).await;
    wait_daemon_pods_at(&c, "agent:1", 1).await;
    // A change-cause set before the change is copied into the new revision.
    c.ok(&[
        "annotate",
        "ds/agent",
        "kubernetes.io/change-cause=image agent:2",
    ])
    .await;
    c.ok(&["set", "image", "ds/agent", "c=agent:2"]).await;
    wait_daemon_pods_at(&c, "agent:2", 2).await;

    let revs = revisions(&c).await;
    assert_eq!(revs.len(), 2, "{revs:?}");
    for (_, name, hash) in &revs {
        assert_eq!(*name, format!("agent-{hash}"));
    }
    let cr: serde_json::Value = serde_json::from_str(
        &c.ok(&["get", "controllerrevision", &revs[1].1, "-o", "json"])
            .await,
    )
    .expect("json");
    let owner = &cr["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["name"], &owner["controller"]),
        (&"DaemonSet".into(), &"agent".into(), &true.into()),
        "{cr}"
    );
    assert_eq!(cr["metadata"]["labels"]["app"], "agent", "{cr}");
    assert_eq!(cr["data"]["spec"]["template"]["$patch"], "replace", "{cr}");
    assert_eq!(
        cr["data"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "agent:2"
    );
    let table = c.ok(&["get", "controllerrevisions"]).await;
    let header = header_of(&table);
    assert_eq!(header, ["NAME", "CONTROLLER", "REVISION", "AGE"], "{table}");
    assert!(
        table
            .lines()
            .skip(1)
            .all(|l| l.contains("daemonset.apps/agent")),
        "{table}"
    );

    let history = c.ok(&["rollout", "history", "daemonset/agent"]).await;
    let rows: Vec<Vec<&str>> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["REVISION", "CHANGE-CAUSE"],
            vec!["1", "<none>"],
            vec!["2", "image", "agent:2"]
        ],
        "{history}"
    );
    let one = c
        .ok(&["rollout", "history", "daemonset/agent", "--revision=1"])
        .await;
    assert!(
        one.contains("with revision #1") && one.contains("Image:\tagent:1"),
        "{one}"
    );

    // Undo goes back to revision 1's template, which becomes revision 3.
    let undo = c.ok(&["rollout", "undo", "daemonset/agent"]).await;
    assert_eq!(undo.trim(), "daemonset.apps/agent rolled back");
    let image = c
        .ok(&[
            "get",
            "ds",
            "agent",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .await;
    assert_eq!(image, "agent:1");
    wait_daemon_pods_at(&c, "agent:1", 3).await;
    let after = revisions(&c).await;
    assert_eq!(
        after.iter().map(|r| r.0).collect::<Vec<_>>(),
        [2, 3],
        "{after:?}"
    );
    assert_eq!(after[1].1, revs[0].1, "revision 1 renumbered, not copied");
    let history = c.ok(&["rollout", "history", "daemonset/agent"]).await;
    assert!(
        history.contains("\n2 ") && history.contains("\n3 ") && !history.contains("\n1 "),
        "{history}"
    );
    let gone = c
        .kubectl(&["rollout", "undo", "daemonset/agent", "--to-revision=1"])
        .await;
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("unable to find specified revision 1"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
    c.ok(&["rollout", "undo", "daemonset/agent", "--to-revision=2"])
        .await;
    wait_daemon_pods_at(&c, "agent:2", 4).await;
    let status: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "ds", "agent", "-o", "json"]).await).expect("json");
    assert_eq!(
        status["status"]["observedGeneration"], status["metadata"]["generation"],
        "{status}"
    );
    assert_eq!(status["status"]["updatedNumberScheduled"], 2, "{status}");
    // Undo to the revision already in place changes nothing, as kubectl
    // finds by comparing the revision with the DaemonSet it fetched.
    let same = c
        .ok(&["rollout", "undo", "daemonset/agent", "--to-revision=4"])
        .await;
    assert_eq!(
        same.trim(),
        "daemonset.apps/agent skipped rollback (current template already matches revision 4)"
    );

    // History is pruned to revisionHistoryLimit once no pod runs the old ones.
    c.ok(&[
        "patch",
        "ds/agent",
        "-p",
        r#"{"spec":{"revisionHistoryLimit":0}}"#,
    ])
    .await;
    eventually("old revisions pruned", Duration::from_secs(20), || async {
        let left = revisions(&c).await;
        (left.iter().map(|r| r.0).collect::<Vec<_>>() == [4]).then_some(())
    })
    .await;
    c.ok(&["delete", "ds", "agent"]).await;
    eventually(
        "revisions collected with their DaemonSet",
        Duration::from_secs(20),
        || async { revisions(&c).await.is_empty().then_some(()) },
    )
    .await;
}

const AGGREGATED_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

/// GETs `path` with `accept`; returns the Content-Type and the JSON body.
async fn get_with_accept(c: &Cluster, path: &str, accept: &str) -> (String, serde_json::Value) {
    let req = http::Request::get(path)
        .header(http::header::ACCEPT, accept)
        .body(kube::client::Body::from(Vec::new()))
        .expect("request");
    let resp = c.admin().await.send(req).await.expect("response");
    assert_eq!(resp.status(), 200, "{path}");
    let ct = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.into_body().collect_bytes().await.expect("body");
    (ct, serde_json::from_slice(&body).expect("json body"))
}

/// The paths of the GET requests in a `kubectl -v=8` log
/// (`"Request" verb="GET" url="https://host:port/path?query"`).
fn requested_paths(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(r#"verb="GET""#))
        .filter_map(|l| l.split_once(r#"url="https://"#)?.1.split('"').next())
        .filter_map(|url| url.split_once('/').map(|(_, p)| format!("/{p}")))
        .map(|p| p.split('?').next().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_discovery_documents_and_kubectl_use() {
    let c = start().await;
    // What kubectl asks for: the v2 document, one for the core group at
    // /api and one for all other groups at /apis.
    let (ct, core) = get_with_accept(&c, "/api", AGGREGATED_ACCEPT).await;
    assert_eq!(
        ct,
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2");
    assert_eq!(core["kind"], "APIGroupDiscoveryList");
    let items = core["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{core}");
    assert!(items[0]["metadata"].get("name").is_none(), "{core}");
    let v1 = &items[0]["versions"][0];
    assert_eq!(
        (&v1["version"], &v1["freshness"]),
        (&"v1".into(), &"Current".into())
    );
    let resource = |version: &serde_json::Value, name: &str| {
        version["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["resource"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {version}"))
    };
    let pods = resource(v1, "pods");
    assert!(
        pods["verbs"]
            .as_array()
            .expect("verbs")
            .contains(&"watch".into()),
        "{pods}"
    );
    assert_eq!(pods["shortNames"], serde_json::json!(["po"]));
    assert_eq!(pods["categories"], serde_json::json!(["all"]));
    assert_eq!(pods["scope"], "Namespaced");
    assert_eq!(pods["singularResource"], "pod");
    assert_eq!(
        pods["responseKind"],
        serde_json::json!({"group": "", "version": "v1", "kind": "Pod"})
    );
    let subs: Vec<&str> = pods["subresources"]
        .as_array()
        .expect("subresources")
        .iter()
        .filter_map(|s| s["subresource"].as_str())
        .collect();
    for s in ["status", "binding", "log", "eviction", "exec"] {
        assert!(subs.contains(&s), "{pods}");
    }
    assert_eq!(resource(v1, "nodes")["scope"], "Cluster");
    let token = resource(v1, "serviceaccounts")["subresources"][0].clone();
    assert_eq!(
        token["responseKind"],
        serde_json::json!({"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"}),
        "{token}"
    );

    let (_, groups) = get_with_accept(&c, "/apis", AGGREGATED_ACCEPT).await;
    let group = |name: &str| {
        groups["items"]
            .as_array()
            .and_then(|gs| gs.iter().find(|g| g["metadata"]["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no group {name} in {groups}"))
    };
    assert!(groups["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|g| g["metadata"]["name"] != ""));
    let apps = group("apps");
    let deployments = resource(&apps["versions"][0], "deployments");
    assert_eq!(deployments["shortNames"], serde_json::json!(["deploy"]));
    let scale = deployments["subresources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["subresource"] == "scale"))
        .cloned()
        .expect("deployments/scale");
    assert_eq!(
        scale["responseKind"],
        serde_json::json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
    );
    assert_eq!(
        scale["verbs"],
        serde_json::json!(["get", "patch", "update"])
    );
    let reviews = resource(
        &group("authentication.k8s.io")["versions"][0],
        "selfsubjectreviews",
    );
    assert_eq!(reviews["verbs"], serde_json::json!(["create"]));
    // Older clients get v2beta1; plain requests the legacy documents.
    let (ct, beta) = get_with_accept(
        &c,
        "/apis",
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
    )
    .await;
    assert!(ct.contains("v=v2beta1"), "{ct}");
    assert_eq!(beta["apiVersion"], "apidiscovery.k8s.io/v2beta1");
    assert_eq!(beta["items"], groups["items"]);
    let (ct, legacy) = get_with_accept(&c, "/apis", "application/json, */*").await;
    assert_eq!(ct, "application/json");
    assert_eq!(legacy["kind"], "APIGroupList");
    let (_, legacy) = get_with_accept(&c, "/api", "application/json").await;
    assert_eq!(legacy["kind"], "APIVersions");

    // kubectl discovers everything from the two aggregated documents: no
    // per-group-version GETs (each run with an empty discovery cache).
    let cache = |n: &str| c.dir.path().join(format!("cache-{n}"));
    for (n, args) in [
        ("get", vec!["get", "po"]),
        ("api-resources", vec!["api-resources"]),
        ("all", vec!["get", "all"]),
        (
            "explain",
            vec!["explain", "daemonset.spec.revisionHistoryLimit"],
        ),
    ] {
        let dir = cache(n);
        let mut argv = vec!["-v=8", "--cache-dir", dir.to_str().expect("utf-8 path")];
        argv.extend(args.iter().copied());
        let out = c.kubectl(&argv).await;
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kubectl {args:?}: {log}");
        let paths = requested_paths(&log);
        assert!(
            paths.iter().any(|p| p == "/api") && paths.iter().any(|p| p == "/apis"),
            "kubectl {args:?} requested {paths:?}"
        );
        let per_group: Vec<&String> = paths
            .iter()
            .filter(|p| {
                let segs: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
                matches!(segs[..], ["api", _] | ["apis", _] | ["apis", _, _])
            })
            .collect();
        assert!(
            per_group.is_empty(),
            "kubectl {args:?} fetched legacy discovery {per_group:?}"
        );
        assert!(
            log.contains("Content-Type: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"),
            "{log}"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        match n {
            "api-resources" => assert!(
                stdout.lines().any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols == ["pods", "po", "v1", "true", "Pod"]
                }) && stdout.contains("controllerrevisions")
                    && stdout.contains("selfsubjectreviews"),
                "{stdout}"
            ),
            "all" => assert!(stdout.contains("service/kubernetes"), "{stdout}"),
            "explain" => assert!(stdout.contains("<integer>"), "{stdout}"),
            _ => {}
        }
    }
}

/// The column names of a `kubectl get` table.
fn header_of(table: &str) -> Vec<&str> {
    table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect()
}

/// Waits up to 30 s until exactly `count` pods match `selector`, all running `image`.
async fn wait_pod_images(c: &Cluster, what: &str, selector: &str, image: &str, count: usize) {
    eventually(what, Duration::from_secs(30), || async {
        let images = c
            .ok(&[
                "get",
                "po",
                "-l",
                selector,
                "-o",
                "jsonpath={.items[*].spec.containers[0].image}",
            ])
            .await;
        (images.split_whitespace().collect::<Vec<_>>() == vec![image; count]).then_some(())
    })
    .await;
}

/// `kubectl create` then `apply --server-side` of the same Deployment: the applier shares the
/// fields (no conflict, as kube-apiserver), both managers listed; a different image is a
/// conflict on that one field, which `--force-conflicts` takes over.
#[tokio::test]
async fn server_side_apply_shares_fields_set_to_the_same_value() {
    let c = start().await;
    let deploy = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: shared, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: shared}}
  template:
    metadata: {labels: {app: shared}}
    spec:
      containers: [{name: c, image: "busybox:1.36", ports: [{containerPort: 80}]}]
"#;
    c.apply_stdin(&["create", "-f", "-"], deploy).await;
    let out = c
        .apply_stdin(&["apply", "--server-side", "-f", "-"], deploy)
        .await;
    assert!(out.contains("serverside-applied"), "{out}");
    let managers = c
        .ok(&[
            "get",
            "deploy",
            "shared",
            "--show-managed-fields",
            "-o",
            "jsonpath={range .metadata.managedFields[*]}{.manager}/{.operation} {end}",
        ])
        .await;
    assert!(
        managers.contains("kubectl-create/Update") && managers.contains("kubectl/Apply"),
        "{managers}"
    );
    let changed = deploy.replace("busybox:1.36", "busybox:1.37");
    let out = c
        .kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(&changed))
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a changed image must conflict");
    assert!(
        err.contains("Apply failed with 1 conflict: conflict with \"kubectl-create\" using apps/v1: .spec.template.spec.containers[name=\"c\"].image"),
        "{err}"
    );
    c.apply_stdin(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &changed,
    )
    .await;
    let image = c
        .ok(&[
            "get",
            "deploy",
            "shared",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .await;
    assert_eq!(image, "busybox:1.37");
    c.handle.shutdown().await;
}

/// Error bodies are byte for byte what kube-apiserver writes: metav1.Status's field order and
/// Go's trailing newline (clients that compare or log bodies see the same bytes).
#[tokio::test]
async fn status_bodies_have_upstream_key_order_and_newline() {
    let c = start().await;
    let req = http::Request::get("/api/v1/namespaces/default/pods/nope")
        .body(kube::client::Body::from(Vec::new()))
        .expect("request");
    let resp = c.admin().await.send(req).await.expect("response");
    assert_eq!(resp.status(), 404);
    let body = resp.into_body().collect_bytes().await.expect("body");
    assert_eq!(
        String::from_utf8_lossy(&body),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pods \\\"nope\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"nope\",\"kind\":\"pods\"},\"code\":404}\n"
    );
    let req = http::Request::post("/api/v1/namespaces")
        .header("content-type", "application/json")
        .body(kube::client::Body::from(
            br#"{"metadata":{"name":"Bad_Name"}}"#.to_vec(),
        ))
        .expect("request");
    let resp = c.admin().await.send(req).await.expect("response");
    assert_eq!(resp.status(), 422);
    let body = resp.into_body().collect_bytes().await.expect("body");
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.starts_with("{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Namespace \\\"Bad_Name\\\" is invalid: metadata.name: Invalid value: \\\"Bad_Name\\\": a lowercase RFC 1123 label")
            && text.contains("\"reason\":\"Invalid\",\"details\":{\"name\":\"Bad_Name\",\"kind\":\"Namespace\",\"causes\":[{\"reason\":\"FieldValueInvalid\",\"message\":\"Invalid value: \\\"Bad_Name\\\"")
            && text.ends_with("\"field\":\"metadata.name\"}]},\"code\":422}\n"),
        "{text}"
    );
    c.handle.shutdown().await;
}
