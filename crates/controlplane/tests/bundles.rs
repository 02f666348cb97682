//! Real public install bundles (tests/fixtures/bundles, sources in SOURCES.md) applied with the
//! real kubectl, as a new user would: every object of a built-in kind must be accepted and
//! stored, every CRD Established, and every custom resource whose CRD the bundle installs
//! accepted and stored too. A custom resource whose CRD is not in the bundle is refused with
//! kubectl's "no matches for kind", as against any cluster without that CRD.

use rktup_testkit::controlplane::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

/// One object of a bundle.
struct Doc {
    api_version: String,
    kind: String,
    namespace: Option<String>,
    name: String,
    text: String,
}

fn bundle(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bundles")
        .join(format!("{name}.yaml.gz"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .expect("gunzip");
    text
}

/// The objects of a multi-document YAML stream, `List` kinds expanded (kubectl does the same).
fn docs(stream: &str) -> Vec<Doc> {
    let mut out = Vec::new();
    for d in serde_yaml_ng::Deserializer::from_str(stream) {
        let v: Value = serde::Deserialize::deserialize(d).expect("bundle YAML parses");
        push_doc(v, &mut out);
    }
    out
}

fn push_doc(v: Value, out: &mut Vec<Doc>) {
    if v.is_null() {
        return;
    }
    let kind = v["kind"].as_str().unwrap_or_default().to_string();
    if kind.ends_with("List") {
        for item in v["items"].as_array().cloned().unwrap_or_default() {
            push_doc(item, out);
        }
        return;
    }
    out.push(Doc {
        api_version: v["apiVersion"].as_str().unwrap_or_default().to_string(),
        namespace: v
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(String::from),
        name: v
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        // JSON (valid YAML) keeps strings such as "no" or "off" strings for kubectl's YAML 1.1.
        text: serde_json::to_string(&v).expect("JSON"),
        kind,
    });
}

fn is_builtin(d: &Doc) -> bool {
    let group = d.api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let version = d.api_version.rsplit('/').next().unwrap_or_default();
    rktup_controlplane::registry::find_kind(group, &d.kind).is_some_and(|r| r.version == version)
}

fn join(docs: &[&Doc]) -> String {
    docs.iter().map(|d| format!("---\n{}\n", d.text)).collect()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Applies `name` (client-side or `--server-side`) to a fresh control plane and checks every
/// built-in object is stored, then every custom resource of the bundle's CRDs. Returns how
/// many built-in objects were applied.
async fn apply_bundle(name: &str, server_side: bool, kubectl: Option<&Path>) -> usize {
    let all = docs(&bundle(name));
    assert!(!all.is_empty(), "{name}: empty bundle");
    // kubernetes/examples defines some objects twice, differently (two guestbooks with a
    // `redis-replica`); a user applies one example at a time, so the first definition is kept.
    let mut seen = BTreeSet::new();
    let all: Vec<Doc> = all
        .into_iter()
        .filter(|d| seen.insert((d.kind.clone(), d.namespace.clone(), d.name.clone())))
        .collect();
    let (builtin, custom): (Vec<&Doc>, Vec<&Doc>) = all.iter().partition(|d| is_builtin(d));
    let c = start().await;
    // Namespaces the bundle puts objects in without creating them (a user creates them first:
    // `kubectl create namespace argocd`, the examples' `monitoring`).
    let created: BTreeSet<&str> = builtin
        .iter()
        .filter(|d| d.kind == "Namespace")
        .map(|d| d.name.as_str())
        .collect();
    let wanted: BTreeSet<&str> = builtin
        .iter()
        .filter_map(|d| d.namespace.as_deref())
        .collect();
    for ns in wanted.difference(&created) {
        if !["default", "kube-system", "kube-public"].contains(ns) {
            c.ok(&["create", "namespace", ns]).await;
        }
    }
    let mut args = vec!["apply", "-f", "-"];
    if server_side {
        args.push("--server-side");
    }
    let manifest = join(&builtin);
    let run = |args: Vec<&'static str>| {
        let manifest = manifest.clone();
        let c = &c;
        async move {
            match kubectl {
                Some(bin) => c.kubectl_bin(bin, &args, Some(&manifest)).await,
                None => c.kubectl_stdin(&args, Some(&manifest)).await,
            }
        }
    };
    let out = run(args.clone()).await;
    assert!(
        out.status.success(),
        "{name}: kubectl apply failed\n{}",
        text(&out)
    );
    // Applying again is accepted and writes nothing (kubectl may still print "configured"
    // where its three-way patch is not empty but changes nothing, e.g. `data: null` in a
    // ConfigMap, as it does against kube-apiserver). Compared: each object but its status and
    // resourceVersion, which controllers move meanwhile (a CRD's conditions, an APIService's
    // availability); a write by the apply shows in what is left (its managedFields included).
    let versions = || async {
        let out = c
            .kubectl_stdin(&["get", "-f", "-", "-o", "json"], Some(&manifest))
            .await;
        assert!(
            out.status.success(),
            "{name}: objects missing\n{}",
            text(&out)
        );
        let list: Value = serde_json::from_slice(&out.stdout).expect("kubectl get -o json");
        let items = list["items"].as_array().cloned().unwrap_or_default();
        items
            .into_iter()
            .map(|mut o| {
                let id = format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap_or("")
                );
                if let Some(m) = o.as_object_mut() {
                    m.remove("status");
                }
                if let Some(meta) = o["metadata"].as_object_mut() {
                    meta.remove("resourceVersion");
                    if let Some(Value::Array(mf)) = meta.get_mut("managedFields") {
                        mf.retain(|f| f["subresource"] != "status");
                    }
                }
                format!("{id}={o}")
            })
            .collect::<BTreeSet<String>>()
    };
    let before = versions().await;
    let again = run(args.clone()).await;
    assert!(
        again.status.success(),
        "{name}: second apply failed\n{}",
        text(&again)
    );
    let after = versions().await;
    let moved: Vec<&String> = after.difference(&before).collect();
    assert!(
        moved.is_empty(),
        "{name}: the second apply rewrote {moved:?}"
    );
    // Every built-in object is there (`get -f` fails naming any missing one).
    let got = c
        .kubectl_stdin(&["get", "-f", "-", "-o", "name"], Some(&manifest))
        .await;
    assert!(
        got.status.success(),
        "{name}: objects missing\n{}",
        text(&got)
    );
    let listed = String::from_utf8_lossy(&got.stdout).lines().count();
    assert_eq!(
        listed,
        builtin.len(),
        "{name}: kubectl get -f lists every object"
    );
    // Every CRD is Established (`kubectl wait` as install guides say), then the custom
    // resources of the bundle's CRDs are accepted and stored.
    let crds: Vec<(String, String)> = builtin
        .iter()
        .filter(|d| d.kind == "CustomResourceDefinition")
        .filter_map(|d| {
            let v: Value = serde_json::from_str(&d.text).ok()?;
            Some((
                v.pointer("/spec/group")?.as_str()?.to_string(),
                v.pointer("/spec/names/kind")?.as_str()?.to_string(),
            ))
        })
        .collect();
    if !crds.is_empty() {
        c.ok(&[
            "wait",
            "--for",
            "condition=established",
            "--timeout=30s",
            "crd",
            "--all",
        ])
        .await;
    }
    let (served, unserved): (Vec<&Doc>, Vec<&Doc>) = custom.iter().partition(|d| {
        let group = d.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        crds.iter().any(|(g, k)| g == group && *k == d.kind)
    });
    if !served.is_empty() {
        let crs = join(&served);
        let out = c.kubectl_stdin(&args, Some(&crs)).await;
        assert!(
            out.status.success(),
            "{name}: custom resources refused\n{}",
            text(&out)
        );
        let got = c
            .kubectl_stdin(&["get", "-f", "-", "-o", "name"], Some(&crs))
            .await;
        assert!(
            got.status.success(),
            "{name}: custom resources missing\n{}",
            text(&got)
        );
        assert_eq!(
            String::from_utf8_lossy(&got.stdout).lines().count(),
            served.len(),
            "{name}: kubectl get -f lists every custom resource"
        );
    }
    for d in &unserved {
        let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(&d.text)).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("no matches for kind"),
            "{name}: {} {} has no CRD in the bundle: expected \"no matches for kind\"\n{}",
            d.kind,
            d.name,
            text(&out)
        );
    }
    c.handle.shutdown().await;
    builtin.len()
}

#[tokio::test]
async fn local_path_provisioner_bundle_applies() {
    assert_eq!(apply_bundle("local-path-storage", false, None).await, 9);
}

#[tokio::test]
async fn ingress_nginx_bundle_applies() {
    assert_eq!(apply_bundle("ingress-nginx", false, None).await, 19);
}

#[tokio::test]
async fn metrics_server_bundles_apply() {
    assert_eq!(apply_bundle("metrics-server", false, None).await, 9);
    assert_eq!(apply_bundle("metrics-server-ha", false, None).await, 10);
}

#[tokio::test]
async fn argo_cd_bundle_applies_server_side() {
    assert_eq!(apply_bundle("argo-cd", true, None).await, 59);
}

#[tokio::test]
async fn kube_prometheus_bundle_applies_server_side() {
    // 10 CRDs and the built-in objects; its Prometheus, Alertmanager, ServiceMonitor and
    // PrometheusRule objects are the custom resources.
    let n = apply_bundle("kube-prometheus", true, None).await;
    assert!(n > 60, "kube-prometheus built-in objects: {n}");
}

#[tokio::test]
async fn kubernetes_examples_apply() {
    // 36 distinct built-in objects: Deployments, Services, ReplicationControllers, a
    // StatefulSet, PV/PVC, StorageClass, Ingress, HPAs (autoscaling/v2), RBAC, an APIService.
    assert_eq!(apply_bundle("kubernetes-examples", false, None).await, 36);
}

#[tokio::test]
async fn kubectl_1_20_applies_the_ingress_nginx_bundle() {
    let Some(bin) = kubectl_1_20() else {
        rktup_testkit::can_run(
            "kubectl_1_20_applies_the_ingress_nginx_bundle",
            Some("kubectl 1.20 (RKTUP_KUBECTL_1_20 or /opt/kubectl-1.20/usr/bin/kubectl)"),
        );
        return;
    };
    assert_eq!(apply_bundle("ingress-nginx", false, Some(&bin)).await, 19);
}

#[tokio::test]
async fn cert_manager_bundle_applies() {
    // cert-manager's release manifest, applied client-side as its docs say: 6 CRDs, RBAC,
    // three Deployments and Services, and two webhook configurations.
    assert_eq!(apply_bundle("cert-manager", false, None).await, 51);
}

/// What a user sees after installing cert-manager where its pods cannot run (no image here):
/// its validating webhook (failurePolicy Fail) refuses cert-manager objects, in
/// kube-apiserver's words, until the webhook has endpoints; in a namespace its
/// namespaceSelector leaves out, the objects are accepted and checked by the CRDs' schemas.
#[tokio::test]
async fn cert_manager_webhook_and_schemas_judge_its_objects() {
    let c = start().await;
    let manifest = join(&docs(&bundle("cert-manager")).iter().collect::<Vec<_>>());
    let out = c
        .kubectl_stdin(&["apply", "-f", "-"], Some(&manifest))
        .await;
    assert!(out.status.success(), "{}", text(&out));
    c.ok(&[
        "wait",
        "--for",
        "condition=established",
        "--timeout=30s",
        "crd",
        "--all",
    ])
    .await;
    let issuer = |ns: &str| {
        format!("apiVersion: cert-manager.io/v1\nkind: Issuer\nmetadata: {{name: selfsigned, namespace: {ns}}}\nspec: {{selfSigned: {{}}}}\n")
    };
    let refused = c
        .kubectl_stdin(&["create", "-f", "-"], Some(&issuer("default")))
        .await;
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("Internal error occurred: failed calling webhook \"webhook.cert-manager.io\": failed to call webhook: Post \"https://cert-manager-webhook.cert-manager.svc:443/validate?timeout=30s\""),
        "{err}"
    );
    c.ok(&["create", "namespace", "certs"]).await;
    c.ok(&[
        "label",
        "namespace",
        "certs",
        "cert-manager.io/disable-validation=true",
    ])
    .await;
    c.apply_stdin(&["create", "-f", "-"], &issuer("certs"))
        .await;
    // The Certificate CRD's schema: secretName is required.
    let bad = "apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: web, namespace: certs}\nspec: {dnsNames: [web.example.com], issuerRef: {name: selfsigned}}\n";
    let out = c.kubectl_stdin(&["create", "-f", "-"], Some(bad)).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("The Certificate \"web\" is invalid: spec.secretName: Required value"),
        "{err}"
    );
    let good = bad.replace("dnsNames:", "secretName: web-tls, dnsNames:");
    c.apply_stdin(&["create", "-f", "-"], &good).await;
    let printed = c.ok(&["get", "certificates", "-n", "certs"]).await;
    let header: Vec<&str> = printed
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "READY", "SECRET", "AGE"], "{printed}");
    c.handle.shutdown().await;
}
