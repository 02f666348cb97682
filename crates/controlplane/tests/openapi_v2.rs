//! OpenAPI v2 (`/openapi/v2`): the JSON and protobuf forms hold the same
//! document (the protobuf decoded here by a small decoder of its own, from
//! gnostic's OpenAPIv2.proto field numbers), negotiation, ETag and 304; and
//! what it is for: kubectl 1.20 (which only reads the protobuf form)
//! validating and applying with strategic merge by merge key, beside the
//! current kubectl.

// `common` re-exports helpers this suite does not use.
#[allow(unused_imports)]
use rktup_testkit::controlplane::*;
use serde_json::{json, Map, Value};
use std::path::Path;
use std::process::Output;

const PROTOBUF_ACCEPT: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

struct Got {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

async fn get(c: &Cluster, headers: &[(&str, &str)]) -> Got {
    let mut req = http::Request::get("/openapi/v2");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(kube::client::Body::from(Vec::new()))
        .expect("request");
    let resp = c.admin().await.send(req).await.expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect_bytes().await.expect("body");
    Got {
        status,
        headers,
        body: body.to_vec(),
    }
}

fn header<'a>(g: &'a Got, name: &str) -> &'a str {
    g.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A protobuf message's fields in order: (number, value).
#[derive(Debug)]
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = buf[*pos];
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return v;
        }
    }
    panic!("varint too long");
}

fn fields(buf: &[u8]) -> Vec<(u64, Field<'_>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos);
        let f = match key & 7 {
            0 => Field::Varint(varint(buf, &mut pos)),
            1 => {
                let v = u64::from_le_bytes(buf[pos..pos + 8].try_into().expect("8 bytes"));
                pos += 8;
                Field::Fixed64(v)
            }
            2 => {
                let n = varint(buf, &mut pos) as usize;
                pos += n;
                Field::Bytes(&buf[pos - n..pos])
            }
            w => panic!("unexpected wire type {w}"),
        };
        out.push((key >> 3, f));
    }
    out
}

fn bytes_of<'a>(fs: &[(u64, Field<'a>)], n: u64) -> Vec<&'a [u8]> {
    fs.iter()
        .filter_map(|(k, f)| match f {
            Field::Bytes(b) if *k == n => Some(*b),
            _ => None,
        })
        .collect()
}

fn str_of(fs: &[(u64, Field<'_>)], n: u64) -> Option<String> {
    bytes_of(fs, n)
        .last()
        .map(|b| String::from_utf8(b.to_vec()).expect("utf-8"))
}

/// `NamedX { name = 1; value = 2; }` → (name, value bytes).
fn named(b: &[u8]) -> (String, Vec<u8>) {
    let fs = fields(b);
    (
        str_of(&fs, 1).unwrap_or_default(),
        bytes_of(&fs, 2)
            .last()
            .map(|v| v.to_vec())
            .unwrap_or_default(),
    )
}

/// gnostic `Any` → the value its YAML (field 2) holds.
fn any(b: &[u8]) -> Value {
    let yaml = str_of(&fields(b), 2).expect("Any.yaml");
    serde_yaml_ng::from_str(&yaml).expect("Any.yaml is YAML")
}

/// gnostic `Schema` back into the JSON Schema it was written from (the
/// fields the document uses).
fn schema_json(b: &[u8]) -> Value {
    let fs = fields(b);
    let mut m = Map::new();
    for (n, key) in [
        (1, "$ref"),
        (2, "format"),
        (4, "description"),
        (13, "pattern"),
    ] {
        if let Some(s) = str_of(&fs, n) {
            m.insert(key.into(), json!(s));
        }
    }
    if let Some(d) = bytes_of(&fs, 5).last() {
        m.insert("default".into(), any(d));
    }
    for (n, f) in &fs {
        match (n, f) {
            (7 | 9, Field::Fixed64(v)) => {
                let key = if *n == 7 { "maximum" } else { "minimum" };
                m.insert(key.into(), json!(f64::from_bits(*v)));
            }
            (8 | 10 | 16, Field::Varint(v)) => {
                let key = match n {
                    8 => "exclusiveMaximum",
                    10 => "exclusiveMinimum",
                    _ => "uniqueItems",
                };
                m.insert(key.into(), json!(*v != 0));
            }
            (11 | 12 | 14 | 15 | 17 | 18, Field::Varint(v)) => {
                let key = match n {
                    11 => "maxLength",
                    12 => "minLength",
                    14 => "maxItems",
                    15 => "minItems",
                    17 => "maxProperties",
                    _ => "minProperties",
                };
                m.insert(key.into(), json!(*v as i64));
            }
            _ => {}
        }
    }
    let required: Vec<Value> = bytes_of(&fs, 19)
        .iter()
        .map(|b| json!(String::from_utf8_lossy(b)))
        .collect();
    if !required.is_empty() {
        m.insert("required".into(), Value::Array(required));
    }
    let enums: Vec<Value> = bytes_of(&fs, 20).iter().map(|b| any(b)).collect();
    if !enums.is_empty() {
        m.insert("enum".into(), Value::Array(enums));
    }
    if let Some(ap) = bytes_of(&fs, 21).last() {
        let ap = fields(ap);
        let v = match ap.first() {
            Some((1, Field::Bytes(s))) => schema_json(s),
            Some((2, Field::Varint(b))) => json!(*b != 0),
            other => panic!("AdditionalPropertiesItem {other:?}"),
        };
        m.insert("additionalProperties".into(), v);
    }
    if let Some(t) = bytes_of(&fs, 22).last() {
        let types: Vec<String> = bytes_of(&fields(t), 1)
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert_eq!(types.len(), 1, "one type per schema");
        m.insert("type".into(), json!(types[0]));
    }
    if let Some(items) = bytes_of(&fs, 23).last() {
        let items: Vec<Value> = bytes_of(&fields(items), 1)
            .iter()
            .map(|s| schema_json(s))
            .collect();
        assert_eq!(items.len(), 1, "one items schema");
        m.insert("items".into(), items[0].clone());
    }
    let all_of: Vec<Value> = bytes_of(&fs, 24).iter().map(|s| schema_json(s)).collect();
    if !all_of.is_empty() {
        m.insert("allOf".into(), Value::Array(all_of));
    }
    if let Some(props) = bytes_of(&fs, 25).last() {
        let mut ps = Map::new();
        for p in bytes_of(&fields(props), 1) {
            let (name, s) = named(p);
            ps.insert(name, schema_json(&s));
        }
        m.insert("properties".into(), Value::Object(ps));
    }
    for ext in bytes_of(&fs, 31) {
        let (name, value) = named(ext);
        m.insert(name, any(&value));
    }
    Value::Object(m)
}

/// The JSON form without what gnostic's Schema has no field for
/// (`patternProperties`), for comparison with the decoded protobuf.
fn comparable(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "patternProperties")
                .map(|(k, v)| {
                    // Property and definition names are data, not keywords.
                    let v = if k == "properties" {
                        Value::Object(
                            v.as_object()
                                .into_iter()
                                .flatten()
                                .map(|(n, s)| (n.clone(), comparable(s)))
                                .collect(),
                        )
                    } else {
                        comparable(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(comparable).collect()),
        // YAML round trip of integers written as floats in JSON Schema.
        Value::Number(n) if n.is_f64() && n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
            json!(n.as_f64().unwrap_or_default() as i64)
        }
        v => v.clone(),
    }
}

#[tokio::test]
async fn json_and_protobuf_forms_etag_and_304() {
    let c = start().await;

    // JSON: no Accept is */*, which kube-openapi serves as JSON.
    let j = get(&c, &[]).await;
    assert_eq!(j.status, 200);
    assert_eq!(header(&j, "content-type"), "application/json");
    assert_eq!(header(&j, "vary"), "Accept");
    let etag = header(&j, "etag").to_string();
    assert!(etag.starts_with('"') && etag.len() == 130, "{etag}");
    let doc: Value = serde_json::from_slice(&j.body).expect("JSON document");
    assert_eq!(doc["swagger"], "2.0");
    let defs = doc["definitions"].as_object().expect("definitions");
    for (name, gvk) in [
        (
            "io.k8s.api.apps.v1.Deployment",
            json!({"group": "apps", "kind": "Deployment", "version": "v1"}),
        ),
        (
            "io.k8s.api.core.v1.Service",
            json!({"group": "", "kind": "Service", "version": "v1"}),
        ),
        (
            "io.k8s.api.core.v1.ConfigMap",
            json!({"group": "", "kind": "ConfigMap", "version": "v1"}),
        ),
        (
            "io.k8s.api.batch.v1.Job",
            json!({"group": "batch", "kind": "Job", "version": "v1"}),
        ),
    ] {
        assert_eq!(
            defs[name]["x-kubernetes-group-version-kind"],
            json!([gvk]),
            "{name}"
        );
    }
    let container = &defs["io.k8s.api.core.v1.Container"]["properties"];
    for (prop, key) in [
        ("env", "name"),
        ("ports", "containerPort"),
        ("volumeMounts", "mountPath"),
    ] {
        assert_eq!(
            container[prop]["x-kubernetes-patch-strategy"], "merge",
            "{prop}"
        );
        assert_eq!(
            container[prop]["x-kubernetes-patch-merge-key"], key,
            "{prop}"
        );
    }
    assert_eq!(
        defs["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"]["x-kubernetes-patch-strategy"],
        "merge,retainKeys"
    );

    // Protobuf, as client-go's OpenAPISchema() asks (the older spelling).
    let p = get(&c, &[("accept", PROTOBUF_ACCEPT)]).await;
    assert_eq!(p.status, 200);
    assert_eq!(
        header(&p, "content-type"),
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    );
    assert_eq!(
        header(&p, "etag"),
        etag,
        "one ETag for both forms (Vary: Accept)"
    );
    let top = fields(&p.body);
    assert_eq!(str_of(&top, 1).as_deref(), Some("2.0"));
    let info = fields(bytes_of(&top, 2)[0]);
    assert_eq!(str_of(&info, 1).as_deref(), Some("Kubernetes"));
    // Every definition decodes to the JSON form's schema.
    let pdefs = fields(bytes_of(&top, 9)[0]);
    let mut decoded = Map::new();
    for d in bytes_of(&pdefs, 1) {
        let (name, s) = named(d);
        decoded.insert(name, schema_json(&s));
    }
    assert_eq!(decoded.len(), defs.len());
    for (name, s) in defs {
        assert_eq!(decoded.get(name), Some(&comparable(s)), "definition {name}");
    }
    // Paths: the same set, and each PATCH carries its GVK and the query
    // parameters kubectl looks for (dryRun, fieldValidation).
    let ppaths = fields(bytes_of(&top, 8)[0]);
    let names: Vec<String> = bytes_of(&ppaths, 2).iter().map(|b| named(b).0).collect();
    let json_names: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    assert_eq!(names, json_names);
    let deploy_path = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}";
    let item = bytes_of(&ppaths, 2)
        .into_iter()
        .map(named)
        .find(|(n, _)| n == deploy_path)
        .expect("deployment path")
        .1;
    let patch = fields(bytes_of(&fields(&item), 8)[0]);
    let exts: Map<String, Value> = bytes_of(&patch, 13)
        .into_iter()
        .map(|e| {
            let (n, v) = named(e);
            (n, any(&v))
        })
        .collect();
    assert_eq!(
        exts["x-kubernetes-group-version-kind"],
        json!({"group": "apps", "kind": "Deployment", "version": "v1"})
    );
    assert_eq!(exts["x-kubernetes-action"], "patch");
    let query_names: Vec<String> = bytes_of(&patch, 8)
        .into_iter()
        .filter_map(|pi| {
            // ParametersItem.parameter → Parameter.non_body_parameter →
            // NonBodyParameter.query_parameter_sub_schema → name (4).
            let param = fields(bytes_of(&fields(pi), 1).first()?);
            let non_body = fields(bytes_of(&param, 2).first()?);
            let query = fields(bytes_of(&non_body, 3).first()?);
            str_of(&query, 4)
        })
        .collect();
    for q in ["dryRun", "fieldManager", "fieldValidation", "force"] {
        assert!(query_names.iter().any(|n| n == q), "{q} in {query_names:?}");
    }

    // Negotiation: the quality order decides; wildcards are JSON.
    let q = get(
        &c,
        &[(
            "accept",
            &format!("application/json;q=0.5, {PROTOBUF_ACCEPT}"),
        )],
    )
    .await;
    assert_eq!(q.body, p.body);
    let star = get(&c, &[("accept", "*/*")]).await;
    assert_eq!(header(&star, "content-type"), "application/json");
    let none = get(&c, &[("accept", "text/html")]).await;
    assert_eq!(none.status, 406);

    // Conditional requests: the ETag (strong or weak) gives 304 without a body.
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
    ] {
        let nm = get(&c, &[("accept", PROTOBUF_ACCEPT), ("if-none-match", &inm)]).await;
        assert_eq!(nm.status, 304, "{inm}");
        assert!(nm.body.is_empty());
        assert_eq!(header(&nm, "etag"), etag);
    }
    let changed = get(&c, &[("if-none-match", "\"stale\"")]).await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.body, j.body);

    // kubectl reads it too (JSON through --raw).
    let raw = c.ok(&["get", "--raw", "/openapi/v2"]).await;
    let raw: Value = serde_json::from_str(&raw).expect("kubectl --raw JSON");
    assert_eq!(raw, doc);
    c.handle.shutdown().await;
}

async fn old_kubectl(c: &Cluster, bin: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    c.kubectl_bin(bin, args, stdin).await
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: NS
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: front
        image: nginx:1.25
        env:
        - {name: MODE, value: "one"}
      - name: side
        image: busybox:1.36
        command: ["sleep", "3600"]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: NS
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web
  namespace: NS
data: {greeting: hello}
"#;

async fn containers(c: &Cluster, ns: &str) -> Vec<Value> {
    let out = c
        .ok(&["get", "deploy", "web", "-n", ns, "-o", "json"])
        .await;
    let d: Value = serde_json::from_str(&out).expect("deployment JSON");
    d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .expect("containers")
}

fn env_names(c: &Value) -> Vec<String> {
    c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str().map(String::from))
        .collect()
}

#[tokio::test]
async fn kubectl_1_20_validates_and_applies_with_merge_keys() {
    let Some(bin) = kubectl_1_20() else {
        rktup_testkit::can_run(
            "kubectl_1_20_validates_and_applies_with_merge_keys",
            Some("kubectl 1.20 (RKTUP_KUBECTL_1_20 or /opt/kubectl-1.20/usr/bin/kubectl)"),
        );
        return;
    };
    let c = start().await;
    let version = old_kubectl(&c, &bin, &["version", "--client", "--short"], None).await;
    assert!(
        text(&version).0.contains("v1.20."),
        "not kubectl 1.20: {:?}",
        text(&version)
    );
    let ns = "h8-apply";
    c.ok(&["create", "namespace", ns]).await;
    let app = APP.replace("NS", ns);

    // 1. Create through apply: validation and apply both read /openapi/v2.
    let out = old_kubectl(&c, &bin, &["apply", "-f", "-"], Some(&app)).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "apply: {stdout}\n{stderr}");
    for line in [
        "deployment.apps/web created",
        "service/web created",
        "configmap/web created",
    ] {
        assert!(stdout.contains(line), "{line} in {stdout}");
    }

    // A change made by someone else (not in last-applied) to the second
    // container: a merge by name keeps it, a list replacement would lose it.
    c.ok(&[
        "set",
        "env",
        "deploy/web",
        "-n",
        ns,
        "-c",
        "side",
        "OUTSIDE=kept",
    ])
    .await;

    // 2. Apply a modified Deployment: a new image for one of the two
    // containers, an env entry added to the other.
    let changed = app.replace("busybox:1.36", "busybox:1.37").replace(
        "- {name: MODE, value: \"one\"}",
        "- {name: MODE, value: \"one\"}\n        - {name: EXTRA, value: \"two\"}",
    );
    let out = old_kubectl(&c, &bin, &["apply", "-v=8", "-f", "-"], Some(&changed)).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "apply 2: {stdout}\n{stderr}");
    assert!(
        stdout.contains("deployment.apps/web configured"),
        "{stdout}"
    );
    assert!(stdout.contains("service/web unchanged"), "{stdout}");
    assert!(stdout.contains("configmap/web unchanged"), "{stdout}");
    // kubectl 1.20 asked for the protobuf document and built a strategic
    // merge patch keyed by container name from it.
    assert!(
        stderr.contains("Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf"),
        "{stderr}"
    );
    assert!(stderr.contains("$setElementOrder/containers"), "{stderr}");
    assert!(
        !stderr.contains("warning: error calculating patch from openapi spec"),
        "{stderr}"
    );
    let cs = containers(&c, ns).await;
    assert_eq!(cs.len(), 2, "{cs:?}");
    assert_eq!(
        (cs[0]["name"].as_str(), cs[0]["image"].as_str()),
        (Some("front"), Some("nginx:1.25"))
    );
    assert_eq!(env_names(&cs[0]), ["MODE", "EXTRA"]);
    assert_eq!(
        (cs[1]["name"].as_str(), cs[1]["image"].as_str()),
        (Some("side"), Some("busybox:1.37"))
    );
    assert_eq!(env_names(&cs[1]), ["OUTSIDE"], "{:?}", cs[1]);

    // 3. Server dry run: kubectl 1.20 checks the PATCH operation's dryRun
    // parameter in /openapi/v2 before sending it.
    let dry = app.replace("greeting: hello", "greeting: dry");
    let out = old_kubectl(
        &c,
        &bin,
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&dry),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "dry run: {stdout}\n{stderr}");
    assert!(
        stdout.contains("configmap/web configured (server dry run)"),
        "{stdout}"
    );
    let data = c
        .ok(&[
            "get",
            "cm",
            "web",
            "-n",
            ns,
            "-o",
            "jsonpath={.data.greeting}",
        ])
        .await;
    assert_eq!(data, "hello");

    // 4. Client-side validation: unknown fields, at the top and nested.
    for (doc, field, def) in [
        (
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bad, namespace: {ns}}}\ndata: {{k: v}}\nbogus: 1\n"),
            "bogus",
            "io.k8s.api.core.v1.ConfigMap",
        ),
        (
            changed.split("---").next().unwrap_or_default().replace("name: web", "name: bad").replace("image: nginx:1.25", "image: nginx:1.25\n        imagePolicy: Always"),
            "imagePolicy",
            "io.k8s.api.core.v1.Container",
        ),
    ] {
        let out = old_kubectl(&c, &bin, &["create", "--validate=true", "-f", "-"], Some(&doc)).await;
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "accepted: {stdout}");
        assert!(
            stderr.contains("error validating data: ValidationError(")
                && stderr.contains(&format!("unknown field \"{field}\" in {def}")),
            "{stderr}"
        );
    }
    let gone = c.kubectl(&["get", "cm,deploy", "bad", "-n", ns]).await;
    assert!(!gone.status.success(), "nothing created");

    // A kind whose manifests carry no metadata validates (upstream requires
    // `metadata` only of Events) and is created.
    let review = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"not-a-token"}}"#;
    let out = old_kubectl(&c, &bin, &["create", "-o", "json", "-f", "-"], Some(review)).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "TokenReview: {stdout}\n{stderr}");
    let review: Value = serde_json::from_str(&stdout).expect("TokenReview JSON");
    assert_eq!(review["status"]["authenticated"], Value::Null, "{review}");
    assert_eq!(review["kind"], "TokenReview");

    // 5. The current kubectl (OpenAPI v3) still applies, merging by name too.
    let again = changed.replace("nginx:1.25", "nginx:1.26");
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(&again)).await;
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "current kubectl apply: {stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("deployment.apps/web configured"),
        "{stdout}"
    );
    let cs = containers(&c, ns).await;
    assert_eq!(cs[0]["image"], "nginx:1.26");
    assert_eq!(cs[1]["image"], "busybox:1.37");
    assert_eq!(env_names(&cs[1]), ["OUTSIDE"], "{:?}", cs[1]);
    c.handle.shutdown().await;
}
