//! Every CRD of the public install bundles the control plane's tests already carry (argo-cd,
//! kube-prometheus: see crates/controlplane/tests/fixtures/bundles/SOURCES.md) is accepted, and
//! each version's schema is structural; a few of their rules and columns are exercised.

use std::io::Read;

use rktup_apiextensions::{validate_crd, JsonPath, Structural};
use serde_json::{json, Value};

fn crds(bundle: &str) -> Vec<Value> {
    let path = format!(
        "{}/../controlplane/tests/fixtures/bundles/{bundle}.yaml.gz",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).expect("bundle fixture"))
        .read_to_string(&mut text)
        .expect("gzip");
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: Value = match serde::Deserialize::deserialize(doc) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if v.get("kind") == Some(&json!("CustomResourceDefinition")) {
            out.push(v);
        }
    }
    out
}

fn schema_of(crd: &Value, version: &str) -> Structural {
    let v = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .unwrap();
    Structural::from_schema(&v["schema"]["openAPIV3Schema"]).expect("structural")
}

#[test]
fn public_bundles_crds_are_accepted() {
    let mut count = 0;
    for bundle in ["argo-cd", "kube-prometheus"] {
        for crd in crds(bundle) {
            let name = crd["metadata"]["name"].as_str().unwrap_or("").to_string();
            let errs = validate_crd(&crd, None);
            assert!(errs.is_empty(), "{bundle} {name}: {errs:#?}");
            for v in crd["spec"]["versions"].as_array().unwrap() {
                let s = Structural::from_schema(&v["schema"]["openAPIV3Schema"]);
                assert!(s.is_ok(), "{name} {}: {:?}", v["name"], s.err());
            }
            count += 1;
        }
    }
    assert!(count >= 10, "only {count} CRDs found");
}

fn crd_named(bundle: &str, name: &str) -> Value {
    crds(bundle)
        .into_iter()
        .find(|c| c["metadata"]["name"] == name)
        .expect(name)
}

#[test]
fn prometheus_agent_cel_rules_are_enforced() {
    let crd = crd_named("kube-prometheus", "prometheusagents.monitoring.coreos.com");
    let s = schema_of(&crd, "v1alpha1");
    assert!(s.has_rules());
    let ok = json!({"apiVersion": "monitoring.coreos.com/v1alpha1", "kind": "PrometheusAgent",
        "metadata": {"name": "a"}, "spec": {"mode": "DaemonSet"}});
    assert_eq!(s.validate(&ok, None), vec![]);
    let bad = json!({"apiVersion": "monitoring.coreos.com/v1alpha1", "kind": "PrometheusAgent",
        "metadata": {"name": "a"}, "spec": {"mode": "DaemonSet", "replicas": 2}});
    let errs = s.validate(&bad, None);
    let texts: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        texts.contains(
            &"spec: Invalid value: \"object\": replicas cannot be set when mode is DaemonSet"
                .to_string()
        ),
        "{texts:#?}"
    );
    assert!(errs.iter().all(|e| e.reason == "FieldValueInvalid"));
}

#[test]
fn argo_application_prunes_and_prints_columns() {
    let crd = crd_named("argo-cd", "applications.argoproj.io");
    let s = schema_of(&crd, "v1alpha1");
    let mut app = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "guestbook", "namespace": "argocd", "bogus": 1},
        "spec": {"project": "default", "unknownThing": true,
            "source": {"repoURL": "https://github.com/argoproj/argocd-example-apps.git", "path": "guestbook", "targetRevision": "HEAD", "extra": "x"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "guestbook"}},
        "status": {"sync": {"status": "Synced", "revision": "abc"}, "health": {"status": "Healthy"}}});
    let pruned = s.prune(&mut app);
    assert_eq!(
        pruned,
        vec!["metadata.bogus", "spec.source.extra", "spec.unknownThing"]
    );
    assert!(app["spec"].get("unknownThing").is_none());
    assert_eq!(app["spec"]["source"]["path"], "guestbook");
    assert_eq!(s.validate(&app, None), vec![]);
    let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap();
    let cells: Vec<Value> = columns
        .iter()
        .map(|c| {
            JsonPath::parse(c["jsonPath"].as_str().unwrap())
                .unwrap()
                .cell(c["type"].as_str().unwrap(), &app)
        })
        .collect();
    assert_eq!(
        cells,
        vec![
            json!("Synced"),
            json!("Healthy"),
            json!("abc"),
            json!("default")
        ]
    );
}
