//! HorizontalPodAutoscalers served at autoscaling/v1 beside autoscaling/v2
//! (stored as v2), through the real kubectl (1.32 and 1.20) and kube-rs:
//! creation at v1 read at v2 and back, a v2 object with metrics v1 cannot
//! express keeping them in the annotation and surviving a v1 write
//! unchanged, v1 defaults and validation, discovery, list and watch at v1.

use futures_util::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use rktup_testkit::controlplane::{kubectl_1_20, start, Cluster};
use serde_json::{json, Value};

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";

async fn get_json(c: &Cluster, what: &str, name: &str) -> Value {
    let out = c.ok(&["get", what, name, "-o", "json"]).await;
    serde_json::from_str(&out).expect("kubectl prints JSON")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn v1_objects_are_v2_objects_and_back() {
    let c = start().await;
    let versions = c.ok(&["api-versions"]).await;
    assert!(
        versions.lines().any(|l| l == "autoscaling/v1")
            && versions.lines().any(|l| l == "autoscaling/v2"),
        "{versions}"
    );
    let group: Value = serde_json::from_str(&c.ok(&["get", "--raw", "/apis/autoscaling"]).await)
        .expect("APIGroup");
    assert_eq!(group["preferredVersion"]["version"], "v2");
    assert_eq!(
        group["versions"],
        json!([{"groupVersion": "autoscaling/v2", "version": "v2"}, {"groupVersion": "autoscaling/v1", "version": "v1"}])
    );
    let v1_resources: Value =
        serde_json::from_str(&c.ok(&["get", "--raw", "/apis/autoscaling/v1"]).await)
            .expect("APIResourceList");
    let names: Vec<&str> = v1_resources["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "horizontalpodautoscalers",
            "horizontalpodautoscalers/status"
        ]
    );

    // OpenAPI v3 (and v2 for kubectl 1.20, below) describes the v1 kind.
    let explained = c
        .ok(&[
            "explain",
            "hpa.spec.targetCPUUtilizationPercentage",
            "--api-version=autoscaling/v1",
        ])
        .await;
    assert!(
        explained.contains("VERSION:    v1") && explained.contains("<integer>"),
        "{explained}"
    );

    // A manifest at autoscaling/v1: defaults (minReplicas 1) and the CPU target as a metric.
    c.apply_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  maxReplicas: 4
  targetCPUUtilizationPercentage: 60
"#,
    )
    .await;
    let v1 = get_json(&c, "horizontalpodautoscalers.v1.autoscaling", "web").await;
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["minReplicas"], 1);
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
    assert!(v1["metadata"]["annotations"].get(METRICS).is_none(), "{v1}");
    let v2 = get_json(&c, "horizontalpodautoscalers.v2.autoscaling", "web").await;
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(
        v2["spec"]["metrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}])
    );
    assert!(v2["spec"].get("targetCPUUtilizationPercentage").is_none());
    // The columns are the same at either version (upstream prints the internal object).
    let table = c
        .ok(&["get", "horizontalpodautoscalers.v1.autoscaling", "web"])
        .await;
    assert!(
        table.contains("REFERENCE")
            && table.contains("Deployment/web")
            && table.contains("cpu: <unknown>/60%"),
        "{table}"
    );
    // A second apply at v1 changes only what it says (last-applied is v1).
    c.apply_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  maxReplicas: 6
  targetCPUUtilizationPercentage: 60
"#,
    )
    .await;
    let v2 = get_json(&c, "horizontalpodautoscalers.v2.autoscaling", "web").await;
    assert_eq!(v2["spec"]["maxReplicas"], 6);
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        60
    );

    // Status written at v1 (as an autoscaling/v1 controller would): the CPU
    // percentage is v2's current metric, and TARGETS shows it.
    c.ok(&[
        "patch",
        "horizontalpodautoscalers.v1.autoscaling",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"currentReplicas":2,"desiredReplicas":3,"currentCPUUtilizationPercentage":33}}"#,
    ])
    .await;
    let v2 = get_json(&c, "horizontalpodautoscalers.v2.autoscaling", "web").await;
    assert_eq!(
        v2["status"]["currentMetrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 33}}}])
    );
    assert_eq!(v2["status"]["desiredReplicas"], 3);
    let v1 = get_json(&c, "horizontalpodautoscalers.v1.autoscaling", "web").await;
    assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 33);
    assert_eq!(
        v1["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/current-metrics"],
        r#"[{"type":"Resource","resource":{"name":"cpu","currentAverageUtilization":33,"currentAverageValue":"0"}}]"#
    );
    let table = c.ok(&["get", "hpa", "web"]).await;
    assert!(table.contains("cpu: 33%/60%"), "{table}");

    // No CPU target at v1: upstream's implicit 80 %.
    c.apply_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata: {name: bare}
spec:
  scaleTargetRef: {kind: Deployment, name: web}
  minReplicas: 2
  maxReplicas: 3
"#,
    )
    .await;
    let v2 = get_json(&c, "horizontalpodautoscalers.v2.autoscaling", "bare").await;
    assert_eq!(v2["spec"]["minReplicas"], 2);
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        80
    );
    let v1 = get_json(&c, "horizontalpodautoscalers.v1.autoscaling", "bare").await;
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 80);
    // A server-side dry run answers with the object as it would be stored, at v1.
    let out = c
        .kubectl_stdin(
            &["create", "--dry-run=server", "-o", "json", "-f", "-"],
            Some("apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: dry}\nspec:\n  scaleTargetRef: {kind: Deployment, name: web}\n  maxReplicas: 3\n"),
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let dry: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(dry["apiVersion"], "autoscaling/v1");
    assert_eq!(dry["spec"]["minReplicas"], 1);
    assert_eq!(dry["spec"]["targetCPUUtilizationPercentage"], 80);

    // Validation at v1 is v2's on the converted object; v1 has no `metrics` field.
    let bad = |body: &str| {
        format!("apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {{name: bad}}\nspec:\n  scaleTargetRef: {{kind: Deployment, name: web}}\n{body}")
    };
    let out = c
        .kubectl_stdin(
            &["create", "-f", "-"],
            Some(&bad("  minReplicas: 0\n  maxReplicas: 0\n")),
        )
        .await;
    let err = stderr(&out);
    assert!(
        err.contains("spec.minReplicas: Invalid value: 0: must be greater than or equal to 1")
            && err.contains("spec.maxReplicas: Invalid value: 0: must be greater than 0"),
        "{err}"
    );
    let out = c
        .kubectl_stdin(
            &["create", "-f", "-"],
            Some(&bad("  maxReplicas: 2\n  metrics: [{type: Resource}]\n")),
        )
        .await;
    let err = stderr(&out);
    assert!(err.contains(r#"unknown field "spec.metrics""#), "{err}");

    // kubectl 1.20's `autoscale` writes autoscaling/v1.
    if let Some(bin) = kubectl_1_20() {
        let out = c
            .kubectl_bin(
                &bin,
                &[
                    "autoscale",
                    "deployment",
                    "old",
                    "--max=5",
                    "--cpu-percent=70",
                ],
                None,
            )
            .await;
        // The Deployment does not exist: 1.20 looks it up first.
        assert!(!out.status.success());
        c.ok(&["create", "deployment", "old", "--image=busybox"])
            .await;
        let out = c
            .kubectl_bin(
                &bin,
                &[
                    "autoscale",
                    "deployment",
                    "old",
                    "--max=5",
                    "--cpu-percent=70",
                ],
                None,
            )
            .await;
        assert!(out.status.success(), "{}", stderr(&out));
        let v2 = get_json(&c, "horizontalpodautoscalers.v2.autoscaling", "old").await;
        assert_eq!(v2["spec"]["maxReplicas"], 5);
        assert_eq!(v2["spec"]["minReplicas"], 1);
        assert_eq!(v2["spec"]["scaleTargetRef"]["kind"], "Deployment");
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            70
        );
        let full: Value = serde_json::from_str(
            &c.ok(&[
                "get",
                "horizontalpodautoscalers.v2.autoscaling",
                "old",
                "-o",
                "json",
                "--show-managed-fields",
            ])
            .await,
        )
        .expect("JSON");
        let written_at = full["metadata"]["managedFields"]
            .as_array()
            .expect("managedFields")
            .iter()
            .map(|m| m["apiVersion"].as_str().unwrap_or_default())
            .collect::<Vec<_>>();
        assert_eq!(written_at, ["autoscaling/v1"]);
        // A v1 manifest applied by kubectl 1.20 (its OpenAPI v2 validation included).
        let out = c
            .kubectl_bin(
                &bin,
                &["apply", "-f", "-"],
                Some("apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: old20}\nspec:\n  scaleTargetRef: {kind: Deployment, name: old}\n  maxReplicas: 2\n  targetCPUUtilizationPercentage: 75\n"),
            )
            .await;
        assert!(out.status.success(), "{}", stderr(&out));
        let v2 = get_json(&c, "horizontalpodautoscalers.v2.autoscaling", "old20").await;
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            75
        );
        let out = c
            .kubectl_bin(&bin, &["apply", "-f", "-"], Some("apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: bad20}\nspec:\n  scaleTargetRef: {kind: Deployment, name: old}\n  maxReplicas: 2\n  metrics: []\n"))
            .await;
        assert!(stderr(&out).contains("metrics"), "{}", stderr(&out));
        let out = c
            .kubectl_bin(
                &bin,
                &[
                    "explain",
                    "hpa.spec.targetCPUUtilizationPercentage",
                    "--api-version=autoscaling/v1",
                ],
                None,
            )
            .await;
        let explained = String::from_utf8_lossy(&out.stdout);
        assert!(
            explained.contains("VERSION:  autoscaling/v1") && explained.contains("<integer>"),
            "{explained}{}",
            stderr(&out)
        );
        let out = c.kubectl_bin(&bin, &["get", "hpa", "old"], None).await;
        let table = String::from_utf8_lossy(&out.stdout);
        assert!(
            table.contains("Deployment/old") && table.contains("70%"),
            "{table}"
        );
    } else {
        rktup_testkit::can_run(
            "v1_objects_are_v2_objects_and_back (kubectl 1.20 autoscale)",
            Some("kubectl 1.20 (RKTUP_KUBECTL_1_20 or /opt/kubectl-1.20/usr/bin/kubectl)"),
        );
    }
}

#[tokio::test]
async fn v2_metrics_survive_a_v1_round_trip() {
    let c = start().await;
    c.apply_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: mixed, labels: {app: mixed}}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: mixed}
  minReplicas: 2
  maxReplicas: 8
  metrics:
  - type: Resource
    resource: {name: memory, target: {type: AverageValue, averageValue: 500Mi}}
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 120
      policies: [{type: Pods, value: 1, periodSeconds: 60}]
"#,
    )
    .await;
    let before = get_json(&c, "horizontalpodautoscalers.v2.autoscaling", "mixed").await;
    let v1 = get_json(&c, "horizontalpodautoscalers.v1.autoscaling", "mixed").await;
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
    let ann = &v1["metadata"]["annotations"];
    assert_eq!(
        ann[METRICS],
        r#"[{"type":"Resource","resource":{"name":"memory","targetAverageValue":"500Mi"}}]"#
    );
    let behavior: Value =
        serde_json::from_str(ann[BEHAVIOR].as_str().expect("behavior annotation")).expect("JSON");
    assert_eq!(behavior["ScaleDown"]["StabilizationWindowSeconds"], 120);
    assert_eq!(behavior["ScaleDown"]["Policies"][0]["Type"], "Pods");
    // The round-trip annotations are never stored.
    assert!(before["metadata"]
        .get("annotations")
        .is_none_or(|a| a.get(METRICS).is_none()));

    // A v1 client writes the object back with a label changed: nothing of v2 is lost.
    let mut edited = v1.clone();
    edited["metadata"]["labels"]["app"] = json!("edited");
    let out = c
        .kubectl_stdin(&["replace", "-f", "-"], Some(&edited.to_string()))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let after = get_json(&c, "horizontalpodautoscalers.v2.autoscaling", "mixed").await;
    assert_eq!(after["spec"], before["spec"]);
    assert_eq!(after["metadata"]["labels"]["app"], "edited");
    assert!(after["metadata"]
        .get("annotations")
        .is_none_or(|a| a.get(METRICS).is_none()));
    // And back at v1 the same view as before, but for the label.
    let again = get_json(&c, "horizontalpodautoscalers.v1.autoscaling", "mixed").await;
    assert_eq!(again["spec"], v1["spec"]);
    for k in [METRICS, BEHAVIOR] {
        assert_eq!(
            again["metadata"]["annotations"][k],
            v1["metadata"]["annotations"][k]
        );
    }

    // A JSON patch at v1 on the CPU target keeps the memory metric.
    c.ok(&[
        "patch",
        "horizontalpodautoscalers.v1.autoscaling",
        "mixed",
        "--type=merge",
        "-p",
        r#"{"spec":{"targetCPUUtilizationPercentage":65}}"#,
    ])
    .await;
    let after = get_json(&c, "horizontalpodautoscalers.v2.autoscaling", "mixed").await;
    assert_eq!(
        after["spec"]["metrics"],
        json!([
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "500Mi"}}},
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 65}}}
        ])
    );
    assert_eq!(after["spec"]["behavior"], before["spec"]["behavior"]);
}

#[tokio::test]
async fn list_and_watch_at_v1() {
    let c = start().await;
    c.apply_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: watched}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: w}
  maxReplicas: 3
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 40}}
"#,
    )
    .await;
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "autoscaling",
        "v1",
        "HorizontalPodAutoscaler",
    ));
    let api: Api<DynamicObject> = Api::namespaced_with(c.admin().await, "default", &ar);
    let list = api.list(&ListParams::default()).await.expect("list at v1");
    assert_eq!(list.items.len(), 1);
    let item = &list.items[0];
    assert_eq!(
        item.types.as_ref().map(|t| t.api_version.as_str()),
        Some("autoscaling/v1")
    );
    assert_eq!(item.data["spec"]["targetCPUUtilizationPercentage"], 40);
    let rv = list.metadata.resource_version.clone().expect("list rv");

    // A change written at v2 is seen by the v1 watch as a v1 object.
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch at v1")
        .boxed();
    let v2: Api<DynamicObject> = Api::namespaced_with(
        c.admin().await,
        "default",
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
        )),
    );
    v2.patch(
        "watched",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"maxReplicas": 7}})),
    )
    .await
    .expect("patch at v2");
    let ev = tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
        .await
        .expect("an event")
        .expect("stream open")
        .expect("event decodes");
    let WatchEvent::Modified(o) = ev else {
        panic!("expected Modified, got {ev:?}");
    };
    assert_eq!(
        o.types.as_ref().map(|t| t.api_version.as_str()),
        Some("autoscaling/v1")
    );
    assert_eq!(o.data["spec"]["maxReplicas"], 7);
    assert_eq!(o.data["spec"]["targetCPUUtilizationPercentage"], 40);
    assert!(o.data["spec"].get("metrics").is_none());
}
