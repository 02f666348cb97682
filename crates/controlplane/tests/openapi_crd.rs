//! Custom resources in OpenAPI v3 and v2, as apiextensions-apiserver
//! publishes them: `kubectl explain` of a CRD's kinds at both served
//! versions (the CronTab example of the Kubernetes docs, "Versions in
//! CustomResourceDefinitions", kubernetes/website, CC BY 4.0, with status and
//! scale subresources and a v1beta1 schema using the constructs v2 cannot
//! hold), the v3 index and documents, the v2 document (JSON and protobuf) and
//! kubectl 1.20, which validates custom resources client-side against
//! /openapi/v2 and picks its patch type from it; deleting the CRD removes it
//! from both. A second test installs 52 real CRDs (the bundles fixture's,
//! under four groups) and checks both documents stay well formed, printing
//! how long the documents take to build and to serve from cache.

// `common` re-exports helpers this suite does not use.
#[allow(unused_imports)]
use rktup_testkit::controlplane::*;
use serde_json::{json, Map, Value};
use std::time::Instant;

/// The docs' CronTab CRD (the test kit's `crontab_crd`) as "Versions in
/// CustomResourceDefinitions" gives it, with descriptions, a required `cronSpec`, a `mode` enum
/// and a v1beta1 schema using the constructs v2 cannot hold.
fn crd() -> Value {
    let mut crd = crontab_crd();
    let v1 = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    v1["description"] = json!("CronTab runs an image on a cron schedule.");
    let spec = &mut v1["properties"]["spec"];
    spec["description"] = json!("What runs and when.");
    spec["required"] = json!(["cronSpec"]);
    let props = &mut spec["properties"];
    props["cronSpec"]["description"] =
        json!("The cron spec defining the interval a CronJob is run");
    props["image"]["description"] = json!("The image run by the CronJob");
    props["mode"] = json!({"type": "string", "enum": ["Once", "Repeat"]});
    crd["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"] = json!({
        "spec": {
            "type": "object",
            "properties": {
                "cronSpec": {"type": "string"},
                "image": {"type": "string", "nullable": true},
                "replicas": {"x-kubernetes-int-or-string": true},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "template": {
                    "type": "object",
                    "x-kubernetes-embedded-resource": true,
                    "x-kubernetes-preserve-unknown-fields": true
                },
                "tags": {
                    "type": "array",
                    "x-kubernetes-list-type": "set",
                    "items": {"type": "string"}
                }
            }
        }
    });
    crd
}

struct Got {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn get(client: &kube::Client, uri: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = http::Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(kube::client::Body::from(Vec::new()))
        .expect("request");
    let resp = client.send(req).await.expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect_bytes().await.expect("body");
    Got {
        status,
        headers,
        body: body.to_vec(),
    }
}

fn text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Every `$ref` resolves under `prefix` in `schemas`; no schema has a list
/// of types; in v2 every array has an items schema (kube-openapi's proto
/// parser, which kubectl ≤ 1.26 validates with, refuses both).
fn check_well_formed(v: &Value, prefix: &str, schemas: &Map<String, Value>, v2: bool) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                let name = r
                    .strip_prefix(prefix)
                    .unwrap_or_else(|| panic!("{r} not under {prefix}"));
                assert!(schemas.contains_key(name), "dangling {r}");
            }
            assert!(!m.get("type").is_some_and(Value::is_array), "{m:?}");
            if v2 && m.get("type") == Some(&json!("array")) {
                assert!(m.get("items").is_some_and(Value::is_object), "{m:?}");
            }
            if v2 {
                for k in ["oneOf", "anyOf", "not", "nullable"] {
                    assert!(!m.contains_key(k), "{k} in v2: {m:?}");
                }
            }
            for (k, x) in m {
                match (k.as_str(), x) {
                    // Names, not keywords: each value is a schema.
                    ("properties" | "definitions" | "schemas", Value::Object(named)) => named
                        .values()
                        .for_each(|x| check_well_formed(x, prefix, schemas, v2)),
                    _ => check_well_formed(x, prefix, schemas, v2),
                }
            }
        }
        Value::Array(a) => a
            .iter()
            .for_each(|x| check_well_formed(x, prefix, schemas, v2)),
        _ => {}
    }
}

/// The v3 document of a group-version, through the index's URL.
async fn v3_doc(client: &kube::Client, gv: &str) -> Option<(String, Value)> {
    let index = get(client, "/openapi/v3", &[]).await.json();
    let url = index["paths"][gv]["serverRelativeURL"]
        .as_str()?
        .to_string();
    let got = get(client, &url, &[]).await;
    assert_eq!(got.status, 200, "{url}");
    Some((url, got.json()))
}

/// A protobuf message's length-delimited fields: (number, bytes).
fn pb_fields(buf: &[u8]) -> Vec<(u64, &[u8])> {
    fn varint(buf: &[u8], pos: &mut usize) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = buf[*pos];
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos);
        match key & 7 {
            0 => {
                varint(buf, &mut pos);
            }
            1 => pos += 8,
            2 => {
                let n = varint(buf, &mut pos) as usize;
                out.push((key >> 3, &buf[pos..pos + n]));
                pos += n;
            }
            w => panic!("wire type {w}"),
        }
    }
    out
}

/// The names of gnostic's `Document.paths` (8: `NamedPathItem` 2) and
/// `Document.definitions` (9: `NamedSchema` 1) in the protobuf form.
fn pb_names(doc: &[u8]) -> (Vec<String>, Vec<String>) {
    let top = pb_fields(doc);
    let names = |field: u64, entry: u64| -> Vec<String> {
        top.iter()
            .filter(|(n, _)| *n == field)
            .flat_map(|(_, m)| pb_fields(m))
            .filter(|(n, _)| *n == entry)
            .filter_map(|(_, named)| {
                pb_fields(named)
                    .into_iter()
                    .find(|(n, _)| *n == 1)
                    .map(|(_, s)| String::from_utf8_lossy(s).into_owned())
            })
            .collect()
    };
    (names(8, 2), names(9, 1))
}

const PROTOBUF_ACCEPT: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

#[tokio::test]
async fn crontab_in_explain_openapi_v3_and_v2_and_kubectl_1_20() {
    let c = start().await;
    let admin = c.admin().await;
    let v2_before = get(&admin, "/openapi/v2", &[]).await;
    c.install_crd(&crd()).await;

    // kubectl explain (OpenAPI v3): the preferred version, then v1beta1.
    let explain = c.ok_line("explain crontabs.spec").await;
    for want in [
        "GROUP:      stable.example.com",
        "KIND:       CronTab",
        "VERSION:    v1",
        "FIELD: spec <Object>",
        "What runs and when.",
        "cronSpec\t<string> -required-",
        "The cron spec defining the interval a CronJob is run",
        "image\t<string>",
        "replicas\t<integer>",
        "mode\t<string>",
        "enum: Once, Repeat",
    ] {
        assert!(explain.contains(want), "{want:?} in:\n{explain}");
    }
    let explain = c
        .ok_line("explain crontab --api-version stable.example.com/v1beta1")
        .await;
    for want in [
        "KIND:       CronTab",
        "VERSION:    v1beta1",
        "apiVersion\t<string>",
        "kind\t<string>",
        "metadata\t<ObjectMeta>",
        "Standard object's metadata.",
        "spec\t<Object>",
    ] {
        assert!(explain.contains(want), "{want:?} in:\n{explain}");
    }
    let explain = c
        .ok_line("explain crontab.spec.template --api-version stable.example.com/v1beta1")
        .await;
    assert!(
        explain.contains("apiVersion\t<string> -required-")
            && explain.contains("metadata\t<ObjectMeta>"),
        "an embedded resource gets TypeMeta and ObjectMeta:\n{explain}"
    );
    let explain = c.ok_line("explain crontab.metadata.name").await;
    assert!(explain.contains("FIELD: name <string>"), "{explain}");

    // The v3 index and documents.
    let (url, v1) = v3_doc(&admin, "apis/stable.example.com/v1")
        .await
        .expect("v1 in the index");
    assert!(url.starts_with("/openapi/v3/apis/stable.example.com/v1?hash="));
    let schemas = v1["components"]["schemas"].as_object().expect("schemas");
    let kind = &schemas["com.example.stable.v1.CronTab"];
    assert_eq!(
        kind["x-kubernetes-group-version-kind"],
        json!([{"group": "stable.example.com", "kind": "CronTab", "version": "v1"}])
    );
    assert_eq!(
        kind["properties"]["metadata"]["$ref"],
        "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    assert_eq!(kind["properties"]["kind"]["type"], "string");
    assert_eq!(
        kind["properties"]["spec"]["properties"]["replicas"]["default"],
        1
    );
    assert_eq!(kind["properties"]["spec"]["required"], json!(["cronSpec"]));
    let list = &schemas["com.example.stable.v1.CronTabList"];
    assert_eq!(
        list["x-kubernetes-group-version-kind"][0]["kind"],
        "CronTabList"
    );
    assert_eq!(
        list["properties"]["items"]["items"]["$ref"],
        "#/components/schemas/com.example.stable.v1.CronTab"
    );
    for name in [
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
        "io.k8s.api.autoscaling.v1.Scale",
    ] {
        assert!(schemas.contains_key(name), "{name}");
    }
    check_well_formed(&v1, "#/components/schemas/", schemas, false);
    let paths = v1["paths"].as_object().expect("paths");
    let ns_path = "/apis/stable.example.com/v1/namespaces/{namespace}/crontabs";
    let mut want_paths: Vec<String> = vec![
        "/apis/stable.example.com/v1/crontabs".into(),
        ns_path.into(),
        format!("{ns_path}/{{name}}"),
        format!("{ns_path}/{{name}}/status"),
        format!("{ns_path}/{{name}}/scale"),
    ];
    want_paths.sort();
    assert_eq!(paths.keys().cloned().collect::<Vec<_>>(), want_paths);
    assert_eq!(
        paths["/apis/stable.example.com/v1/crontabs"]["get"]["operationId"],
        "listStableExampleComV1CronTabForAllNamespaces"
    );
    let item = &paths[&format!("{ns_path}/{{name}}")];
    let actions: Vec<&str> = ["get", "put", "patch", "delete"]
        .iter()
        .map(|m| item[*m]["x-kubernetes-action"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(actions, ["get", "put", "patch", "delete"]);
    assert_eq!(
        item["patch"]["operationId"],
        "patchStableExampleComV1NamespacedCronTab"
    );
    let patch_types: Vec<&String> = item["patch"]["requestBody"]["content"]
        .as_object()
        .expect("patch content")
        .keys()
        .collect();
    assert_eq!(
        patch_types,
        [
            "application/apply-patch+yaml",
            "application/json-patch+json",
            "application/merge-patch+json"
        ],
        "no strategic merge patch for custom resources"
    );
    let coll = &paths[ns_path];
    assert_eq!(coll["get"]["x-kubernetes-action"], "list");
    assert_eq!(coll["delete"]["x-kubernetes-action"], "deletecollection");
    assert!(coll["get"]["parameters"]
        .as_array()
        .expect("list params")
        .iter()
        .any(|p| p["name"] == "watch"));
    assert!(item["put"]["parameters"]
        .as_array()
        .expect("put params")
        .iter()
        .any(|p| p["name"] == "fieldValidation"));
    let scale = &paths[&format!("{ns_path}/{{name}}/scale")]["get"];
    assert_eq!(
        scale["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/io.k8s.api.autoscaling.v1.Scale"
    );
    assert_eq!(
        scale["operationId"],
        "readStableExampleComV1NamespacedCronTabScale"
    );

    let (beta_url, beta) = v3_doc(&admin, "apis/stable.example.com/v1beta1")
        .await
        .expect("v1beta1 in the index");
    let b = &beta["components"]["schemas"]["com.example.stable.v1beta1.CronTab"]["properties"]
        ["spec"]["properties"];
    assert_eq!(
        b["replicas"]["anyOf"],
        json!([{"type": "integer"}, {"type": "string"}]),
        "int-or-string unfolded in v3"
    );
    assert_eq!(b["image"]["nullable"], true);
    assert_eq!(b["template"]["required"], json!(["kind", "apiVersion"]));
    assert_eq!(b["tags"]["x-kubernetes-list-type"], "set");

    // Caching: a stale hash is redirected to the current document; the
    // current one may be cached for good.
    let got = get(&admin, &url, &[]).await;
    assert_eq!(got.header("cache-control"), "public, immutable");
    let hash = url.rsplit('=').next().unwrap_or_default().to_string();
    assert_eq!(got.header("etag"), format!("\"{hash}\""));
    let got = get(&admin, &url, &[("if-none-match", &format!("\"{hash}\""))]).await;
    assert_eq!(got.status, 304);

    // OpenAPI v2: the definitions converted for kubectl's validation, the
    // paths, both forms; the ETag moved with the CRD.
    let v2 = get(&admin, "/openapi/v2", &[]).await;
    assert_ne!(v2.header("etag"), v2_before.header("etag"));
    let doc = v2.json();
    let defs = doc["definitions"].as_object().expect("definitions");
    check_well_formed(&doc, "#/definitions/", defs, true);
    let kind = &defs["com.example.stable.v1.CronTab"];
    assert_eq!(
        kind["x-kubernetes-group-version-kind"],
        json!([{"group": "stable.example.com", "kind": "CronTab", "version": "v1"}])
    );
    assert_eq!(
        kind["properties"]["metadata"]["$ref"],
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    let spec = &kind["properties"]["spec"]["properties"];
    assert!(
        spec["replicas"].get("default").is_none(),
        "defaults pruned in v2"
    );
    assert_eq!(spec["mode"]["enum"], json!(["Once", "Repeat"]));
    let b = &defs["com.example.stable.v1beta1.CronTab"]["properties"]["spec"]["properties"];
    assert_eq!(b["replicas"], json!({"x-kubernetes-int-or-string": true}));
    assert_eq!(b["image"], json!({}), "nullable: untyped in v2");
    assert_eq!(
        b["extra"],
        json!({"x-kubernetes-preserve-unknown-fields": true})
    );
    assert!(
        b["template"].get("properties").is_none(),
        "{}",
        b["template"]
    );
    assert!(defs.contains_key("com.example.stable.v1.CronTabList"));
    let item = &doc["paths"][format!("{ns_path}/{{name}}")];
    assert_eq!(
        item["patch"]["consumes"],
        json!([
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml"
        ])
    );
    assert_eq!(
        item["patch"]["x-kubernetes-group-version-kind"]["kind"],
        "CronTab"
    );
    assert!(doc["paths"][format!("{ns_path}/{{name}}/scale")]["put"].is_object());
    let pb = get(&admin, "/openapi/v2", &[("accept", PROTOBUF_ACCEPT)]).await;
    assert_eq!(pb.header("etag"), v2.header("etag"));
    let (pb_paths, pb_defs) = pb_names(&pb.body);
    let mut json_paths: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    let mut json_defs: Vec<String> = defs.keys().cloned().collect();
    let (mut pb_paths, mut pb_defs) = (pb_paths, pb_defs);
    for v in [&mut json_paths, &mut json_defs, &mut pb_paths, &mut pb_defs] {
        v.sort();
    }
    assert_eq!(pb_paths, json_paths);
    assert_eq!(pb_defs, json_defs);

    // kubectl 1.20 validates against /openapi/v2 (protobuf) and picks its
    // patch type there.
    let ns = "crd-openapi";
    c.ok(&["create", "namespace", ns]).await;
    if let Some(bin) = kubectl_1_20() {
        let cr = format!(
            "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: nightly\n  namespace: {ns}\nspec:\n  cronSpec: \"0 2 * * *\"\n  image: backup:1\n  replicas: 2\n  mode: Repeat\n"
        );
        let out = c.kubectl_bin(&bin, &["apply", "-f", "-"], Some(&cr)).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "apply: {stdout}\n{stderr}");
        assert!(
            stdout.contains("crontab.stable.example.com/nightly created"),
            "{stdout}"
        );
        // A second apply is a JSON merge patch (the document offers no
        // strategic merge patch for it).
        let out = c
            .kubectl_bin(
                &bin,
                &["apply", "-v=8", "-f", "-"],
                Some(&cr.replace("backup:1", "backup:2")),
            )
            .await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "apply 2: {stdout}\n{stderr}");
        assert!(stdout.contains("configured"), "{stdout}");
        assert!(
            stderr.contains("application/merge-patch+json"),
            "merge patch sent: {stderr}"
        );
        let image = c
            .ok(&[
                "get",
                "ct",
                "nightly",
                "-n",
                ns,
                "-o",
                "jsonpath={.spec.image}",
            ])
            .await;
        assert_eq!(image, "backup:2");
        // The v1beta1 constructs pass its client-side validation.
        let beta = format!(
            "apiVersion: stable.example.com/v1beta1\nkind: CronTab\nmetadata:\n  name: weekly\n  namespace: {ns}\nspec:\n  cronSpec: \"0 3 * * 0\"\n  image: null\n  replicas: \"3\"\n  extra: {{anything: [1, two]}}\n  tags: [a, b]\n  template:\n    apiVersion: v1\n    kind: ConfigMap\n    metadata: {{name: x}}\n    data: {{k: v}}\n"
        );
        let out = c
            .kubectl_bin(&bin, &["apply", "-f", "-"], Some(&beta))
            .await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "apply v1beta1: {stdout}\n{stderr}");
        // And what the schema refuses is refused before it is sent.
        for (bad, replacement, want) in [
            ("  mode: Repeat\n", "  mode: Repeat\n  bogus: 1\n", "unknown field \"bogus\" in com.example.stable.v1.CronTab.spec"),
            ("  replicas: 2\n", "  replicas: two\n", "invalid type for com.example.stable.v1.CronTab.spec.replicas: got \"string\", expected \"integer\""),
            ("  cronSpec: \"0 2 * * *\"\n", "", "missing required field \"cronSpec\" in com.example.stable.v1.CronTab.spec"),
        ] {
            let doc = cr.replace("nightly", "refused").replace(bad, replacement);
            let out = c.kubectl_bin(&bin, &["apply", "-f", "-"], Some(&doc)).await;
            let (stdout, stderr) = text(&out);
            assert!(!out.status.success(), "refused: {stdout}");
            assert!(
                stderr.contains("ValidationError(") && stderr.contains(want),
                "{want:?} in {stderr}"
            );
        }
        let got = c.kubectl(&["get", "ct", "refused", "-n", ns]).await;
        assert!(!got.status.success(), "nothing was sent");
    } else {
        rktup_testkit::can_run(
            "crontab_in_explain_openapi_v3_and_v2_and_kubectl_1_20 (kubectl 1.20 part)",
            Some("kubectl 1.20 (RKTUP_KUBECTL_1_20 or /opt/kubectl-1.20/usr/bin/kubectl)"),
        );
    }

    // A change to one version moves that version's hash only; the old URL
    // now redirects to the new one.
    let mut changed = crd();
    changed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["description"] = json!("What runs, and when.");
    c.apply_stdin(&["apply", "-f", "-"], &changed.to_string())
        .await;
    let (new_url, _) = v3_doc(&admin, "apis/stable.example.com/v1")
        .await
        .expect("v1");
    assert_ne!(new_url, url);
    let (same_beta, _) = v3_doc(&admin, "apis/stable.example.com/v1beta1")
        .await
        .expect("v1beta1");
    assert_eq!(same_beta, beta_url);
    let got = get(&admin, &url, &[]).await;
    assert_eq!(
        (got.status, got.header("location")),
        (301, new_url.as_str())
    );
    let explain = c.ok_line("explain crontabs.spec").await;
    assert!(explain.contains("What runs, and when."), "{explain}");

    // Deleting the CRD removes it from both documents.
    c.ok_line("delete crd crontabs.stable.example.com").await;
    let index = get(&admin, "/openapi/v3", &[]).await.json();
    let left: Vec<&String> = index["paths"]
        .as_object()
        .expect("index")
        .keys()
        .filter(|k| k.contains("stable.example.com"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        get(&admin, "/openapi/v3/apis/stable.example.com/v1", &[])
            .await
            .status,
        404
    );
    let v2_after = get(&admin, "/openapi/v2", &[]).await;
    assert_eq!(v2_after.header("etag"), v2_before.header("etag"));
    let doc = v2_after.json();
    assert!(!doc["definitions"]
        .as_object()
        .expect("definitions")
        .keys()
        .any(|k| k.starts_with("com.example.stable")));
    assert!(!doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .any(|k| k.contains("stable.example.com")));
    let out = c.kubectl(&["explain", "crontabs"]).await;
    assert!(!out.status.success(), "{:?}", text(&out));
    c.handle.shutdown().await;
}

/// The CRDs of the bundles fixture (Argo CD, kube-prometheus).
fn bundle_crds() -> Vec<Value> {
    use std::io::Read;
    let mut out = Vec::new();
    for name in ["argo-cd", "kube-prometheus"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/bundles")
            .join(format!("{name}.yaml.gz"));
        let file = std::fs::File::open(&path).expect("bundle");
        let mut text = String::new();
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .expect("gunzip");
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).expect("YAML");
            if v["kind"] == "CustomResourceDefinition" {
                out.push(v);
            }
        }
    }
    out
}

#[tokio::test]
async fn fifty_real_crds_in_both_documents() {
    let c = start().await;
    let admin = c.admin().await;
    let crds_api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
        admin.clone(),
        &kube::api::ApiResource {
            group: "apiextensions.k8s.io".into(),
            version: "v1".into(),
            api_version: "apiextensions.k8s.io/v1".into(),
            kind: "CustomResourceDefinition".into(),
            plural: "customresourcedefinitions".into(),
        },
    );
    let t = Instant::now();
    get(&admin, "/openapi/v2", &[]).await;
    let builtin_v2 = t.elapsed();

    // 13 real CRDs under four groups each: 52.
    let base = bundle_crds();
    assert!(base.len() >= 13, "{}", base.len());
    let mut kinds = Vec::new();
    for copy in 0..4 {
        for crd in &base {
            let mut crd = crd.clone();
            let group = format!("{}{copy}", crd["spec"]["group"].as_str().expect("group"));
            let plural = crd["spec"]["names"]["plural"]
                .as_str()
                .expect("plural")
                .to_string();
            crd["spec"]["group"] = json!(group);
            crd["metadata"] = json!({"name": format!("{plural}.{group}")});
            let obj: kube::api::DynamicObject = serde_json::from_value(crd.clone()).expect("crd");
            crds_api
                .create(&Default::default(), &obj)
                .await
                .unwrap_or_else(|e| panic!("{plural}.{group}: {e}"));
            for v in crd["spec"]["versions"].as_array().expect("versions") {
                if v["served"] == true {
                    kinds.push((
                        group.clone(),
                        v["name"].as_str().unwrap_or("").to_string(),
                        crd["spec"]["names"]["kind"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                    ));
                }
            }
        }
    }
    // Timings below without the CRD controllers' work on the new CRDs.
    c.ok_line("wait --for condition=established --timeout=120s crd --all")
        .await;
    let t = Instant::now();
    let v2 = get(&admin, "/openapi/v2", &[]).await;
    let first_v2 = t.elapsed();
    let t = Instant::now();
    let again = get(&admin, "/openapi/v2", &[]).await;
    let cached_v2 = t.elapsed();
    assert_eq!(again.header("etag"), v2.header("etag"));
    let t = Instant::now();
    let pb = get(&admin, "/openapi/v2", &[("accept", PROTOBUF_ACCEPT)]).await;
    let cached_pb = t.elapsed();
    let doc = v2.json();
    let defs = doc["definitions"].as_object().expect("definitions");
    check_well_formed(&doc, "#/definitions/", defs, true);
    let (_, pb_defs) = pb_names(&pb.body);
    assert_eq!(pb_defs.len(), defs.len());
    let t = Instant::now();
    let index = get(&admin, "/openapi/v3", &[]).await.json();
    let first_v3_index = t.elapsed();
    for (group, version, kind) in &kinds {
        let name = format!(
            "{}.{version}.{kind}",
            group.split('.').rev().collect::<Vec<_>>().join(".")
        );
        assert!(defs.contains_key(&name), "{name} in v2");
        let gvk = &defs[&name]["x-kubernetes-group-version-kind"][0];
        assert_eq!((&gvk["group"], &gvk["kind"]), (&json!(group), &json!(kind)));
        assert!(
            index["paths"][format!("apis/{group}/{version}")].is_object(),
            "{group}/{version} in the v3 index"
        );
    }
    let mut v3_total = std::time::Duration::ZERO;
    let mut v3_docs = 0;
    for (gv, entry) in index["paths"].as_object().expect("index") {
        if !gv.contains(".coreos.com") && !gv.contains("argoproj.io") {
            continue;
        }
        let url = entry["serverRelativeURL"].as_str().expect("url");
        let t = Instant::now();
        let d = get(&admin, url, &[]).await.json();
        v3_total += t.elapsed();
        v3_docs += 1;
        let schemas = d["components"]["schemas"].as_object().expect("schemas");
        check_well_formed(&d, "#/components/schemas/", schemas, false);
    }
    // kubectl explain on a real CRD's kind.
    let explain = c
        .ok_line("explain prometheuses.monitoring.coreos.com2.spec.alerting")
        .await;
    assert!(
        explain.contains("alertmanagers\t<[]Object> -required-"),
        "{explain}"
    );

    // One CRD changed: the next request rebuilds once, from cached parts.
    let mut crd = base[0].clone();
    let group = format!("{}0", crd["spec"]["group"].as_str().unwrap_or(""));
    let plural = crd["spec"]["names"]["plural"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = format!("{plural}.{group}");
    let current = crds_api.get(&name).await.expect("crd");
    crd["spec"]["group"] = json!(group);
    crd["metadata"] = json!({"name": name, "resourceVersion": current.metadata.resource_version});
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = json!("changed");
    let obj: kube::api::DynamicObject = serde_json::from_value(crd).expect("crd");
    crds_api
        .replace(&name, &Default::default(), &obj)
        .await
        .expect("replace");
    c.ok_line("wait --for condition=established --timeout=120s crd --all")
        .await;
    let t = Instant::now();
    let changed = get(&admin, "/openapi/v2", &[]).await;
    let after_change_v2 = t.elapsed();
    assert_ne!(changed.header("etag"), v2.header("etag"));
    println!(
        "MEASURE openapi ({} build): built-in v2 first {builtin_v2:?}; with 52 CRDs: v2 first {first_v2:?} ({} bytes JSON, {} protobuf), cached JSON {cached_v2:?}, cached protobuf {cached_pb:?}; after one CRD changed {after_change_v2:?}; v3 index {first_v3_index:?}; {v3_docs} custom v3 documents {v3_total:?}",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        v2.body.len(),
        pb.body.len(),
    );
    c.handle.shutdown().await;
}
