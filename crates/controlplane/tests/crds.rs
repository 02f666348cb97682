//! CustomResourceDefinitions through the real kubectl and kube-rs, as a user
//! installing an operator would: the CronTab example of the Kubernetes docs
//! ("Extend the Kubernetes API with CustomResourceDefinitions",
//! kubernetes/website, CC BY 4.0), with a second served version, status and
//! scale subresources, printer columns and a category added as the docs'
//! later sections do.

use rktup_testkit::controlplane::*;
use serde_json::{json, Value};
use std::time::Duration;

/// The docs' CronTab CRD (the test kit's `crontab_crd`) with what this suite adds: the `all`
/// category, a CEL rule on `spec`, printer columns, and a v1beta1 that keeps any field.
fn crd() -> Value {
    let mut crd = crontab_crd();
    crd["spec"]["names"]["categories"] = json!(["all"]);
    let v1 = &mut crd["spec"]["versions"][0];
    v1["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"] = json!([
        {"rule": "!has(self.image) || self.image != 'forbidden'",
         "message": "image must not be forbidden"}
    ]);
    v1["additionalPrinterColumns"] = json!([
        {"name": "Spec", "type": "string",
         "description": "The cron spec defining the interval a CronJob is run",
         "jsonPath": ".spec.cronSpec"},
        {"name": "Replicas", "type": "integer",
         "description": "The number of jobs launched by the CronJob",
         "jsonPath": ".spec.replicas"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    ]);
    crd["spec"]["versions"][1]["schema"]["openAPIV3Schema"]
        ["x-kubernetes-preserve-unknown-fields"] = json!(true);
    crd
}

/// [`crd`] in group `group`.
fn crd_in_group(group: &str) -> Value {
    let mut crd = crd();
    crd["metadata"]["name"] = json!(format!("crontabs.{group}"));
    crd["spec"]["group"] = json!(group);
    crd
}

const CRONTAB: &str = r#"
apiVersion: stable.example.com/v1
kind: CronTab
metadata:
  name: my-new-cron-object
  labels: {app: cron}
spec:
  cronSpec: "* * * * */5"
  image: my-awesome-cron-image
  replicas: 2
"#;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn install_crontab(c: &Cluster) {
    c.install_crd(&crd()).await;
}

#[tokio::test]
async fn crontab_lifecycle_through_kubectl() {
    let c = start().await;
    install_crontab(&c).await;
    // The CRD's conditions and accepted names, as the naming and establishing controllers set them.
    let crd: Value = serde_json::from_str(
        &c.ok_line("get crd crontabs.stable.example.com -o json")
            .await,
    )
    .expect("json");
    let conds = crd["status"]["conditions"].as_array().expect("conditions");
    for (ty, reason) in [
        ("NamesAccepted", "NoConflicts"),
        ("Established", "InitialNamesAccepted"),
    ] {
        let cond = conds.iter().find(|c| c["type"] == ty).expect(ty);
        assert_eq!(
            (cond["status"].as_str(), cond["reason"].as_str()),
            (Some("True"), Some(reason))
        );
    }
    assert_eq!(crd["status"]["acceptedNames"]["shortNames"], json!(["ct"]));
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    assert_eq!(crd["spec"]["names"]["listKind"], "CronTabList", "defaulted");
    assert_eq!(crd["spec"]["conversion"]["strategy"], "None", "defaulted");

    // Discovery: kubectl api-resources lists it with its short name, both versions are served.
    let res = c
        .ok_line("api-resources --api-group=stable.example.com")
        .await;
    assert!(
        res.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["crontabs", "ct", "stable.example.com/v1", "true", "CronTab"]),
        "{res}"
    );
    let versions = c.ok_line("api-versions").await;
    assert!(versions.contains("stable.example.com/v1\n"), "{versions}");
    assert!(
        versions.contains("stable.example.com/v1beta1\n"),
        "{versions}"
    );

    // Create; the printer columns; the `all` category; listing by label and in pages.
    c.apply_stdin(&["apply", "-f", "-"], CRONTAB).await;
    let table = c.ok_line("get ct").await;
    let mut lines = table.lines();
    assert_eq!(
        lines
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["NAME", "SPEC", "REPLICAS", "AGE"]),
        "{table}"
    );
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..7],
        ["my-new-cron-object", "*", "*", "*", "*", "*/5", "2"],
        "{table}"
    );
    let all = c.ok_line("get all -o name").await;
    assert!(
        all.contains("crontab.stable.example.com/my-new-cron-object"),
        "{all}"
    );
    c.apply_stdin(
        &["apply", "-f", "-"],
        &CRONTAB
            .replace("my-new-cron-object", "second")
            .replace("app: cron", "app: other"),
    )
    .await;
    let by_label = c.ok_line("get ct -l app=cron -o name").await;
    assert_eq!(
        by_label.trim(),
        "crontab.stable.example.com/my-new-cron-object"
    );
    let paged = c.ok_line("get ct --chunk-size=1 -o name").await;
    assert_eq!(paged.lines().count(), 2, "{paged}");

    // The other served version: the same object, its apiVersion converted (strategy None).
    let v1beta1 = c
        .ok_line(
            "get crontabs.v1beta1.stable.example.com my-new-cron-object -o jsonpath={.apiVersion}",
        )
        .await;
    assert_eq!(v1beta1, "stable.example.com/v1beta1");
    let listed = c
        .ok_line("get crontabs.v1beta1.stable.example.com -o jsonpath={.items[*].apiVersion}")
        .await;
    assert_eq!(
        listed,
        "stable.example.com/v1beta1 stable.example.com/v1beta1"
    );

    // Scale subresource: kubectl scale writes .spec.replicas through the CRD's paths.
    c.ok_line("scale ct my-new-cron-object --replicas=5").await;
    let replicas = c
        .ok_line("get ct my-new-cron-object -o jsonpath={.spec.replicas}")
        .await;
    assert_eq!(replicas, "5");
    let scale: Value = serde_json::from_str(
        &c.ok_line("get --raw /apis/stable.example.com/v1/namespaces/default/crontabs/my-new-cron-object/scale")
            .await,
    )
    .expect("scale json");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 5);

    // Status subresource: status writes go through it only; a main update keeps the status.
    c.ok(&[
        "patch",
        "ct",
        "my-new-cron-object",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":3,"labelSelector":"app=cron"}}"#,
    ])
    .await;
    c.ok(&[
        "patch",
        "ct",
        "my-new-cron-object",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":99},"spec":{"image":"other"}}"#,
    ])
    .await;
    let got: Value =
        serde_json::from_str(&c.ok_line("get ct my-new-cron-object -o json").await).expect("json");
    assert_eq!(
        got["status"]["replicas"], 3,
        "main resource updates ignore status"
    );
    assert_eq!(got["spec"]["image"], "other");
    assert_eq!(
        got["metadata"]["generation"], 3,
        "two spec changes after create"
    );
    assert_eq!(scale_selector(&c).await, "app=cron");

    // Strategic merge patch is refused for custom resources, as upstream; merge and JSON patch work.
    let smp = c
        .kubectl(&[
            "patch",
            "ct",
            "my-new-cron-object",
            "-p",
            r#"{"spec":{"image":"x"}}"#,
        ])
        .await;
    assert!(!smp.status.success());
    assert!(
        stderr(&smp).contains("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"),
        "{}",
        stderr(&smp)
    );
    c.ok(&[
        "patch",
        "ct",
        "my-new-cron-object",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/image","value":"json-patched"}]"#,
    ])
    .await;
    // Server-side apply of a CR.
    c.apply_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=ssa-test",
            "-f",
            "-",
        ],
        &CRONTAB.replace("my-new-cron-object", "applied"),
    )
    .await;
    let managers = c
        .ok_line("get ct applied -o jsonpath={.metadata.managedFields[*].manager}")
        .await;
    assert!(managers.contains("ssa-test"), "{managers}");

    // Deleting the CRD deletes its objects, then the CRD; the resource is no longer served.
    c.ok_line("delete crd crontabs.stable.example.com --timeout=20s")
        .await;
    let gone = c.kubectl(&["get", "crontabs.stable.example.com"]).await;
    assert!(!gone.status.success(), "still served");
    install_crontab(&c).await;
    let after = c.ok_line("get ct -A -o name").await;
    assert_eq!(after.trim(), "", "objects survived their CRD: {after}");
}

/// Structural schema at work: unknown fields pruned (with kubectl's warning), defaults set,
/// types/ranges/patterns and CEL rules enforced with kube-apiserver's messages; CRDs that
/// upstream refuses are refused.
#[tokio::test]
async fn schemas_prune_default_and_validate() {
    let c = start().await;
    install_crontab(&c).await;
    let out = c
        .kubectl_stdin(
            &["apply", "--validate=warn", "-f", "-"],
            Some("apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: pruned}\nspec: {cronSpec: \"* * * * */5\", image: i, foo: bar}\nextra: 1\n"),
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown field \"spec.foo\""),
        "{}",
        stderr(&out)
    );
    let got: Value = serde_json::from_str(&c.ok_line("get ct pruned -o json").await).expect("json");
    assert!(got["spec"].get("foo").is_none(), "pruned: {got}");
    assert!(got.get("extra").is_none(), "pruned: {got}");
    assert_eq!(got["spec"]["replicas"], 1, "defaulted");
    // Strict field validation (kubectl's default) refuses instead.
    let strict = c
        .kubectl_stdin(
            &["create", "--validate=strict", "-f", "-"],
            Some("apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: strict}\nspec: {foo: bar}\n"),
        )
        .await;
    assert!(!strict.status.success());
    assert!(
        stderr(&strict).contains("unknown field \"spec.foo\""),
        "{}",
        stderr(&strict)
    );

    for (spec, want) in [
        (
            r#"{"replicas": "two"}"#,
            r#"The CronTab "bad" is invalid: spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#,
        ),
        (
            r#"{"replicas": 20}"#,
            r#"The CronTab "bad" is invalid: spec.replicas: Invalid value: 20: spec.replicas in body should be less than or equal to 10"#,
        ),
        (
            r#"{"cronSpec": "every minute"}"#,
            r#"spec.cronSpec: Invalid value: "every minute": spec.cronSpec in body should match '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'"#,
        ),
        (
            r#"{"image": "forbidden"}"#,
            r#"The CronTab "bad" is invalid: spec: Invalid value: "object": image must not be forbidden"#,
        ),
    ] {
        let cr = format!(
            r#"{{"apiVersion":"stable.example.com/v1","kind":"CronTab","metadata":{{"name":"bad"}},"spec":{spec}}}"#
        );
        let out = c.kubectl_stdin(&["create", "-f", "-"], Some(&cr)).await;
        assert!(!out.status.success(), "{spec} accepted");
        assert!(
            stderr(&out).contains(want),
            "{spec}:\n{}\nwanted: {want}",
            stderr(&out)
        );
    }

    // CRDs upstream refuses.
    let mut two_storage = crd_in_group("two.example.com");
    two_storage["spec"]["versions"][1]["storage"] = json!(true);
    let two_storage = two_storage.to_string();
    let out = c
        .kubectl_stdin(&["create", "-f", "-"], Some(&two_storage))
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("must have exactly one version marked as storage version"),
        "{}",
        stderr(&out)
    );
    let mut bad_name = crd();
    bad_name["metadata"]["name"] = json!("crontab.stable.example.com");
    let bad_name = bad_name.to_string();
    let out = c
        .kubectl_stdin(&["create", "-f", "-"], Some(&bad_name))
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"metadata.name: Invalid value: "crontab.stable.example.com": must be spec.names.plural+"."+spec.group"#),
        "{}",
        stderr(&out)
    );
    let mut webhook = crd_in_group("hook.example.com");
    webhook["spec"]["conversion"] = json!({
        "strategy": "Webhook",
        "webhook": {
            "conversionReviewVersions": ["v1"],
            "clientConfig": {"url": "https://conv.example.com/convert"}
        }
    });
    let webhook = webhook.to_string();
    let out = c
        .kubectl_stdin(&["create", "-f", "-"], Some(&webhook))
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("conversion webhooks are not supported by rktup yet"),
        "{}",
        stderr(&out)
    );
}

async fn scale_selector(c: &Cluster) -> String {
    let scale: Value = serde_json::from_str(
        &c.ok_line("get --raw /apis/stable.example.com/v1/namespaces/default/crontabs/my-new-cron-object/scale")
            .await,
    )
    .expect("scale json");
    scale["status"]["selector"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn custom_resources_are_owned_collected_and_finalized_like_built_ins() {
    let c = start().await;
    install_crontab(&c).await;
    // Cluster-scoped CRD too.
    c.apply_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: clusterthings.stable.example.com}
spec:
  group: stable.example.com
  scope: Cluster
  names: {plural: clusterthings, kind: ClusterThing}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#,
    )
    .await;
    c.ok_line(
        "wait --for condition=established --timeout=10s crd/clusterthings.stable.example.com",
    )
    .await;
    c.apply_stdin(
        &["apply", "-f", "-"],
        "apiVersion: stable.example.com/v1\nkind: ClusterThing\nmetadata: {name: one}\nspec: {x: 1}\n",
    )
    .await;
    let thing = c
        .ok_line("get clusterthing one -o jsonpath={.metadata.namespace}")
        .await;
    assert_eq!(thing, "", "cluster-scoped");

    // A ConfigMap owned by a CR is collected when the CR goes.
    c.ok_line("create namespace crs").await;
    c.apply_stdin(&["apply", "-n", "crs", "-f", "-"], CRONTAB)
        .await;
    let uid = c
        .ok_line("get ct -n crs my-new-cron-object -o jsonpath={.metadata.uid}")
        .await;
    let owned = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "owned", "namespace": "crs", "ownerReferences": [{
            "apiVersion": "stable.example.com/v1", "kind": "CronTab",
            "name": "my-new-cron-object", "uid": uid}]},
    });
    c.apply_stdin(&["create", "-f", "-"], &owned.to_string())
        .await;
    c.ok_line("delete ct -n crs my-new-cron-object").await;
    eventually(
        "the owned ConfigMap collected",
        Duration::from_secs(15),
        || async {
            let o = c.kubectl(&["get", "cm", "-n", "crs", "owned"]).await;
            (!o.status.success()).then_some(())
        },
    )
    .await;

    // A CR with a finalizer holds its CRD in Terminating; no new objects meanwhile.
    c.apply_stdin(
        &["apply", "-n", "crs", "-f", "-"],
        &CRONTAB.replace("  labels: {app: cron}", "  finalizers: [example.com/hold]"),
    )
    .await;
    c.ok_line("delete crd crontabs.stable.example.com --wait=false")
        .await;
    eventually("CRD Terminating", Duration::from_secs(10), || async {
        let t = c
            .ok_line("get crd crontabs.stable.example.com -o jsonpath={.status.conditions[?(@.type==\"Terminating\")].status}")
            .await;
        (t == "True").then_some(())
    })
    .await;
    let refused = c
        .kubectl_stdin(
            &["create", "-n", "crs", "-f", "-"],
            Some(&CRONTAB.replace("my-new-cron-object", "late")),
        )
        .await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused)
            .contains("create not allowed while custom resource definition is terminating"),
        "{}",
        stderr(&refused)
    );
    c.ok(&[
        "patch",
        "ct",
        "-n",
        "crs",
        "my-new-cron-object",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])
    .await;
    eventually("CRD deleted", Duration::from_secs(15), || async {
        let o = c
            .kubectl(&["get", "crd", "crontabs.stable.example.com"])
            .await;
        (!o.status.success()).then_some(())
    })
    .await;

    // Namespace deletion takes custom resources with it.
    install_crontab(&c).await;
    c.apply_stdin(&["apply", "-n", "crs", "-f", "-"], CRONTAB)
        .await;
    c.ok_line("delete namespace crs --timeout=30s").await;
    let left = c.ok_line("get ct -A -o name").await;
    assert_eq!(left.trim(), "", "{left}");
}

#[tokio::test]
async fn conflicting_names_are_not_accepted() {
    let c = start().await;
    install_crontab(&c).await;
    // Another CRD of the group claiming the short name `ct`.
    c.apply_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: crontables.stable.example.com}
spec:
  group: stable.example.com
  scope: Namespaced
  names: {plural: crontables, kind: CronTable, shortNames: [ct]}
  versions:
  - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}
"#,
    )
    .await;
    eventually("NamesAccepted False", Duration::from_secs(10), || async {
        let crd: Value = serde_json::from_str(
            &c.ok_line("get crd crontables.stable.example.com -o json")
                .await,
        )
        .ok()?;
        let conds = crd["status"]["conditions"].as_array()?;
        let names = conds.iter().find(|c| c["type"] == "NamesAccepted")?;
        let est = conds.iter().find(|c| c["type"] == "Established")?;
        (names["status"] == "False"
            && names["reason"] == "ShortNamesConflict"
            && names["message"] == "\"ct\" is already in use"
            && est["status"] == "False")
            .then_some(())
    })
    .await;
    // Not served; the first CRD's short name still is.
    let o = c.kubectl(&["get", "crontables.stable.example.com"]).await;
    assert!(!o.status.success());
    c.ok_line("get ct").await;
}

/// A controller written with kube-rs (its runtime's `Controller`, over dynamic
/// objects of the CRD) reconciles CRs against the local control plane: each
/// CronTab gets a ConfigMap it owns, and its status says so.
#[tokio::test]
async fn a_kube_rs_controller_reconciles_custom_resources() {
    use futures_util::StreamExt;
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    use kube::runtime::controller::{Action, Controller};
    use kube::runtime::watcher;
    use std::sync::Arc;

    let c = start().await;
    install_crontab(&c).await;
    let client = c.admin().await;
    let gvk = GroupVersionKind::gvk("stable.example.com", "v1", "CronTab");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "crontabs");
    let crontabs: Api<DynamicObject> = Api::all_with(client.clone(), &ar);

    #[derive(Debug, thiserror::Error)]
    #[error(transparent)]
    struct Error(#[from] kube::Error);

    struct Ctx {
        client: kube::Client,
        ar: ApiResource,
    }
    async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, Error> {
        let ns = obj.metadata.namespace.clone().unwrap_or_default();
        let name = obj.metadata.name.clone().unwrap_or_default();
        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(ctx.client.clone(), &ns);
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("{name}-schedule"), "ownerReferences": [{
                "apiVersion": "stable.example.com/v1", "kind": "CronTab", "name": name,
                "uid": obj.metadata.uid, "controller": true}]},
            "data": {"schedule": obj.data["spec"]["cronSpec"]},
        });
        let pp = PatchParams::apply("crontab-controller").force();
        cms.patch(&format!("{name}-schedule"), &pp, &Patch::Apply(&cm))
            .await?;
        let crs: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ctx.ar);
        let status = json!({"status": {"replicas": obj.data["spec"]["replicas"], "labelSelector": format!("crontab={name}")}});
        crs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(Action::requeue(Duration::from_secs(300)))
    }
    fn error_policy(_: Arc<DynamicObject>, _: &Error, _: Arc<Ctx>) -> Action {
        Action::requeue(Duration::from_millis(200))
    }
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        ar: ar.clone(),
    });
    let controller = tokio::spawn(
        Controller::new_with(crontabs, watcher::Config::default(), ar.clone())
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {}),
    );
    c.apply_stdin(&["apply", "-f", "-"], CRONTAB).await;
    eventually(
        "the controller's ConfigMap and status",
        Duration::from_secs(20),
        || async {
            let data = c
                .ok_line("get cm my-new-cron-object-schedule -o jsonpath={.data.schedule}")
                .await;
            let sel = scale_selector(&c).await;
            (data == "* * * * */5" && sel == "crontab=my-new-cron-object").then_some(())
        },
    )
    .await;
    // A change is seen through the watch and reconciled again.
    c.ok(&[
        "patch",
        "ct",
        "my-new-cron-object",
        "--type=merge",
        "-p",
        r#"{"spec":{"cronSpec":"*/10 * * * *"}}"#,
    ])
    .await;
    eventually(
        "the controller reconciles the change",
        Duration::from_secs(20),
        || async {
            let data = c
                .ok_line("get cm my-new-cron-object-schedule -o jsonpath={.data.schedule}")
                .await;
            (data == "*/10 * * * *").then_some(())
        },
    )
    .await;
    controller.abort();
}

/// Benchmark (BENCHMARKS.md, `bench/crd.sh`): create throughput and watch latency of 10,000
/// CronTabs (schema-validated, with a CEL rule) against 10,000 ConfigMaps, both stored in one
/// control plane. The creates run in batches of 500 alternating between the kinds; the watch
/// latency samples (create one object, time until its ADDED event; `ROUNDS`, default 5,000 per
/// kind) alternate too, so a busy machine slows both alike and the ratios compare like with
/// like.
/// Release build; prints `crd-bench` lines.
#[tokio::test]
#[ignore]
async fn bench_custom_resources_vs_configmaps() {
    use futures_util::{StreamExt, TryStreamExt};
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
    use kube::runtime::{watcher, WatchStreamExt};
    use std::time::Instant;

    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (n, rounds) = (env("N", 10_000), env("ROUNDS", 5_000));
    let c = start().await;
    let client = c.admin().await;
    install_crontab(&c).await;
    let kinds = ["ConfigMap", "CronTab"];
    let api = |kind: &str| -> Api<DynamicObject> {
        let ar = if kind == "CronTab" {
            ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("stable.example.com", "v1", "CronTab"),
                "crontabs",
            )
        } else {
            ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("", "v1", "ConfigMap"),
                "configmaps",
            )
        };
        Api::namespaced_with(client.clone(), "default", &ar)
    };
    let object = |kind: &str, i: usize| -> DynamicObject {
        let v = if kind == "CronTab" {
            json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab",
                   "metadata": {"name": format!("o{i}")},
                   "spec": {"cronSpec": "* * * * */5", "image": "img", "replicas": 2}})
        } else {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": format!("o{i}")},
                   "data": {"cronSpec": "* * * * */5", "image": "img", "replicas": "2"}})
        };
        serde_json::from_value(v).expect("object")
    };
    // Creates in batches of 500, the kinds alternating batch by batch (and which goes first),
    // so a change of machine load hits both alike; each kind's rate is over its own batches.
    let mut busy = [0.0f64; 2];
    for (b, first) in (0..n).step_by(500).enumerate() {
        for k in [b % 2, 1 - b % 2] {
            let api = api(kinds[k]);
            let started = Instant::now();
            futures_util::stream::iter(first..(first + 500).min(n))
                .map(|i| {
                    let api = api.clone();
                    let o = object(kinds[k], i);
                    async move { api.create(&PostParams::default(), &o).await }
                })
                .buffer_unordered(16)
                .try_collect::<Vec<_>>()
                .await
                .expect("creates");
            busy[k] += started.elapsed().as_secs_f64();
        }
    }
    let rates = busy.map(|s| n as f64 / s);
    // One watch per kind, each past its initial list of n objects.
    let mut watches = Vec::new();
    for kind in kinds {
        let mut events = watcher(api(kind), watcher::Config::default())
            .applied_objects()
            .boxed();
        for _ in 0..n {
            events.try_next().await.expect("watch").expect("event");
        }
        watches.push(events);
    }
    let mut lat = [Vec::new(), Vec::new()];
    for r in 0..rounds {
        // Alternate which kind goes first, too.
        for k in [r % 2, 1 - r % 2] {
            let name = format!("o{}", n + r);
            let t = Instant::now();
            api(kinds[k])
                .create(&PostParams::default(), &object(kinds[k], n + r))
                .await
                .expect("create");
            loop {
                let o = watches[k].try_next().await.expect("watch").expect("event");
                if o.metadata.name.as_deref() == Some(name.as_str()) {
                    break;
                }
            }
            lat[k].push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    for (k, kind) in kinds.iter().enumerate() {
        let l = &mut lat[k];
        l.sort_by(|a, b| a.total_cmp(b));
        println!(
            "crd-bench kind={kind} n={n} creates_per_s={:.0} watch_p50_ms={:.3} watch_p99_ms={:.3} samples={}",
            rates[k],
            l[l.len() / 2],
            l[l.len() * 99 / 100],
            l.len()
        );
    }
    c.handle.shutdown().await;
}

/// The write path alone, without HTTP: `Core::create` of the benchmark's CronTab and ConfigMap
/// (N of each, default 20,000, in batches of 1,000 alternating between the kinds), ns per
/// create. What a CR create costs beyond a ConfigMap's shows here without the client's and
/// TLS's share. Release build; prints a `crd-core-bench` line.
///
///     N=20000 cargo test --release -p rktup-controlplane --test crds -- --ignored --nocapture --exact bench_core_create_custom_vs_configmaps
#[tokio::test]
#[ignore]
async fn bench_core_create_custom_vs_configmaps() {
    use rktup_controlplane::api::objects::WriteCtx;
    use std::time::Instant;

    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let c = start().await;
    install_crontab(&c).await;
    let core = c.handle.core().clone();
    let served = core.resources();
    let kinds = [
        served.find("", "v1", "configmaps").expect("configmaps"),
        served
            .find("stable.example.com", "v1", "crontabs")
            .expect("crontabs"),
    ];
    let object = |k: usize, i: usize| {
        if k == 1 {
            json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab",
                   "metadata": {"name": format!("o{i}")},
                   "spec": {"cronSpec": "* * * * */5", "image": "img", "replicas": 2}})
        } else {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": format!("o{i}")},
                   "data": {"cronSpec": "* * * * */5", "image": "img", "replicas": "2"}})
        }
    };
    let mut busy = [0.0f64; 2];
    for (b, first) in (0..n).step_by(1_000).enumerate() {
        for k in [b % 2, 1 - b % 2] {
            let objects: Vec<Value> = (first..(first + 1_000).min(n))
                .map(|i| object(k, i))
                .collect();
            let t = Instant::now();
            for o in objects {
                let mut ctx = WriteCtx {
                    manager: "bench".into(),
                    ..Default::default()
                };
                core.create(kinds[k], Some("default"), o, &mut ctx)
                    .expect("create");
            }
            busy[k] += t.elapsed().as_secs_f64();
        }
    }
    let ns = busy.map(|s| s * 1e9 / n as f64);
    println!(
        "crd-core-bench n={n} configmap_ns={:.0} crontab_ns={:.0} ratio={:.2}",
        ns[0],
        ns[1],
        ns[1] / ns[0]
    );
    c.handle.shutdown().await;
}

/// Custom resources are authorized by RBAC like any other resource: by group and plural,
/// subresources included, and aggregated roles pick up rules labelled for them.
#[tokio::test]
async fn custom_resources_are_authorized_by_rbac() {
    let c = start().await;
    install_crontab(&c).await;
    c.apply_stdin(&["apply", "-f", "-"], CRONTAB).await;
    c.apply_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: crontab-reader
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules:
- apiGroups: [stable.example.com]
  resources: [crontabs]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bob-view, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}]
"#,
    )
    .await;
    // `view` aggregates the new rule (clusterrole aggregation controller).
    eventually(
        "view aggregates crontabs",
        Duration::from_secs(10),
        || async {
            let o = c.kubectl(&["get", "ct", "--as=bob", "-o", "name"]).await;
            (o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("my-new-cron-object"))
            .then_some(())
        },
    )
    .await;
    let del = c
        .kubectl(&["delete", "ct", "my-new-cron-object", "--as=bob"])
        .await;
    assert!(!del.status.success());
    assert!(
        stderr(&del).contains(r#"crontabs.stable.example.com "my-new-cron-object" is forbidden: User "bob" cannot delete resource "crontabs" in API group "stable.example.com" in the namespace "default""#),
        "{}",
        stderr(&del)
    );
    let scale = c
        .kubectl(&[
            "scale",
            "ct",
            "my-new-cron-object",
            "--replicas=1",
            "--as=bob",
        ])
        .await;
    assert!(!scale.status.success());
    assert!(
        stderr(&scale).contains(r#"cannot patch resource "crontabs/scale""#),
        "{}",
        stderr(&scale)
    );
    let other_ns = c
        .kubectl(&["get", "ct", "-n", "kube-system", "--as=bob"])
        .await;
    assert!(!other_ns.status.success(), "only default is bound");
}
