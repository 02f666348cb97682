//! OpenAPI v2 (`GET /openapi/v2`), the one Swagger 2.0 document
//! kube-apiserver serves for all groups, built from the same k8s-openapi
//! schemas as the v3 documents (`openapi.rs`).
//!
//! Older clients need it: kubectl up to 1.26 and Helm validate manifests
//! against it (`definitions` found through `x-kubernetes-group-version-kind`)
//! and `kubectl apply` computes its strategic merge patches from the
//! `x-kubernetes-patch-strategy`/`-merge-key` extensions; kubectl 1.20–1.26
//! also look in `paths` for the `dryRun`/`fieldValidation` parameters of a
//! kind's PATCH operation. client-go's `OpenAPISchema()` asks only for
//! protobuf — gnostic's `openapi_v2.Document`, which is written here from the
//! JSON document by a small encoder (only the messages and fields the
//! document uses), so both forms hold the same document.
//!
//! Negotiation, ETag and `304` are kube-openapi's: JSON or protobuf by the
//! Accept header (first matching clause by quality, `*/*` is JSON, nothing
//! acceptable is `406`), one ETag (SHA-512 of the JSON, as hex) for both
//! forms with `Vary: Accept`, and `If-None-Match` answered with `304`.

use super::openapi_custom::{self, SetCache, Spec};
use super::{discovery, openapi};
use crate::registry::Resources;
use bytes::Bytes;
use prost::encoding::{encode_key, encode_varint, WireType};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

/// The protobuf media type kube-openapi answers with.
pub const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
/// The protobuf subtypes accepted: the current one and the older spelling
/// client-go ≤ 1.26 sends (`...spec.v2@v1.0+protobuf`).
const PROTOBUF_SUBTYPES: [&str; 2] = [
    "com.github.proto-openapi.spec.v2.v1.0+protobuf",
    "com.github.proto-openapi.spec.v2@v1.0+protobuf",
];

/// The document in both forms.
pub struct Document {
    pub json: Bytes,
    pub protobuf: Bytes,
    /// Unquoted (the `ETag` header quotes it).
    pub etag: String,
    /// HTTP date of the build (`Last-Modified`).
    pub last_modified: String,
}

impl Document {
    fn new(json: Vec<u8>, protobuf: Vec<u8>) -> Document {
        let digest = ring::digest::digest(&ring::digest::SHA512, &json);
        let etag = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        let last_modified = jiff::Timestamp::now()
            .strftime("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        Document {
            json: json.into(),
            protobuf: protobuf.into(),
            etag,
            last_modified,
        }
    }
}

/// The form a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Protobuf,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Protobuf => PROTOBUF,
        }
    }
}

/// The built-in document, built once, and its pieces the documents with
/// custom resources are put together from: the entries of `definitions`
/// and `paths`, as JSON (between the braces) and as protobuf (the repeated
/// fields of gnostic's `Definitions` and `Paths`).
struct Base {
    doc: Arc<Document>,
    definitions_json: Vec<u8>,
    paths_json: Vec<u8>,
    definitions_pb: Vec<u8>,
    paths_pb: Vec<u8>,
    info: Value,
    definition_names: HashSet<String>,
    path_names: HashSet<String>,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let doc = build();
        let inner = |v: &Value| {
            let mut b = serde_json::to_vec(v).unwrap_or_default();
            // `{...}` → `...`
            b.pop();
            if !b.is_empty() {
                b.remove(0);
            }
            b
        };
        let empty = Map::new();
        let defs = doc["definitions"].as_object().unwrap_or(&empty);
        let paths = doc["paths"].as_object().unwrap_or(&empty);
        Base {
            doc: Arc::new(Document::new(
                serde_json::to_vec(&doc).unwrap_or_default(),
                to_protobuf(&doc),
            )),
            definitions_json: inner(&doc["definitions"]),
            paths_json: inner(&doc["paths"]),
            definitions_pb: definitions_entries(defs.iter()).0,
            paths_pb: paths_entries(paths.iter()).0,
            info: doc["info"].clone(),
            definition_names: defs.keys().cloned().collect(),
            path_names: paths.keys().cloned().collect(),
        }
    })
}

/// A custom resource version's definitions and paths, each entry encoded
/// once in both forms: (name, `"name":value` JSON, protobuf `Named…`
/// field), so a document with many CRDs is put together by copying.
struct Encoded {
    definitions: Vec<(String, Vec<u8>, Vec<u8>)>,
    paths: Vec<(String, Vec<u8>, Vec<u8>)>,
}

fn encode(rd: &'static crate::registry::ResourceDef) -> Option<Encoded> {
    let part = openapi_custom::part(rd, Spec::V2)?;
    let json_entry = |k: &str, v: &Value| {
        let mut out = serde_json::to_vec(k).unwrap_or_default();
        out.push(b':');
        let _ = serde_json::to_writer(&mut out, v);
        out
    };
    Some(Encoded {
        definitions: part
            .schemas
            .iter()
            .map(|(k, v)| {
                let pb = definitions_entries(std::iter::once((k, v))).0;
                (k.clone(), json_entry(k, v), pb)
            })
            .collect(),
        paths: part
            .paths
            .iter()
            .map(|(k, v)| {
                let pb = paths_entries(std::iter::once((k, v))).0;
                (k.clone(), json_entry(k, v), pb)
            })
            .collect(),
    })
}

static CUSTOM: SetCache<Encoded, Document> = SetCache::new(encode);

/// The document served now: the built-in one, or, with custom resources,
/// the one built for this set of CRDs (on the first request that sees it).
pub fn document(res: &Resources) -> Arc<Document> {
    let base = base();
    if res.custom().is_empty() {
        return base.doc.clone();
    }
    CUSTOM.get(res.custom(), |parts, _| with_custom(base, parts))
}

/// The built-in document with the custom resources' definitions and paths
/// added (entries of the built-in document win over custom ones of the same
/// name, as built-in resources do in the routes; among custom ones the
/// first).
fn with_custom(base: &Base, parts: &[Arc<Encoded>]) -> Document {
    // JSON: the keys of each map are no longer sorted across the two halves,
    // which no reader of a JSON object minds.
    let mut json = Vec::with_capacity(base.doc.json.len() + 64 * 1024);
    let mut pb_paths = Msg(base.paths_pb.clone());
    let mut pb_defs = Msg(base.definitions_pb.clone());
    let add = |json: &mut Vec<u8>,
               pb: &mut Msg,
               base_json: &[u8],
               base_names: &HashSet<String>,
               entries: &mut dyn Iterator<Item = &(String, Vec<u8>, Vec<u8>)>| {
        json.extend_from_slice(base_json);
        let mut seen = HashSet::new();
        for (name, j, p) in entries {
            if base_names.contains(name) || !seen.insert(name) {
                continue;
            }
            if !(base_json.is_empty() && seen.len() == 1) {
                json.push(b',');
            }
            json.extend_from_slice(j);
            pb.0.extend_from_slice(p);
        }
    };
    json.extend_from_slice(b"{\"definitions\":{");
    add(
        &mut json,
        &mut pb_defs,
        &base.definitions_json,
        &base.definition_names,
        &mut parts.iter().flat_map(|p| p.definitions.iter()),
    );
    json.extend_from_slice(b"},\"info\":");
    let _ = serde_json::to_writer(&mut json, &base.info);
    json.extend_from_slice(b",\"paths\":{");
    add(
        &mut json,
        &mut pb_paths,
        &base.paths_json,
        &base.path_names,
        &mut parts.iter().flat_map(|p| p.paths.iter()),
    );
    json.extend_from_slice(b"},\"swagger\":\"2.0\"}");
    let protobuf = document_pb(&base.info, pb_paths, pb_defs, None);
    Document::new(json, protobuf)
}

/// Picks the form for an Accept header as kube-openapi does: clauses sorted
/// by quality, then specific before wildcard; the first one matching JSON or
/// protobuf wins. `None`: nothing acceptable (406).
pub fn negotiate(accept: &str) -> Option<Format> {
    let accept = if accept.trim().is_empty() {
        "*/*"
    } else {
        accept
    };
    let mut clauses: Vec<(f32, &str, &str)> = accept
        .split(',')
        .filter_map(|c| {
            let mut parts = c.split(';');
            let (ty, sub) = parts.next()?.trim().split_once('/')?;
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            Some((q, ty.trim(), sub.trim()))
        })
        .filter(|(q, _, _)| *q > 0.0)
        .collect();
    // Stable: equal clauses keep the client's order.
    clauses.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then((a.1 == "*").cmp(&(b.1 == "*")))
            .then((a.2 == "*").cmp(&(b.2 == "*")))
    });
    for (_, ty, sub) in clauses {
        if ty != "application" && ty != "*" {
            continue;
        }
        if sub == "json" || sub == "*" {
            return Some(Format::Json);
        }
        if PROTOBUF_SUBTYPES.contains(&sub) {
            return Some(Format::Protobuf);
        }
    }
    None
}

/// Whether an `If-None-Match` header matches `etag` (unquoted) — Go's
/// `http.ServeContent` rules: `*`, or any listed tag equal under weak
/// comparison.
pub fn not_modified(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t).trim_matches('"') == etag)
}

/// Definitions whose `metadata` upstream requires (`json:"metadata"`
/// without `omitempty` in k8s.io/api).
const METADATA_REQUIRED: &[&str] = &["io.k8s.api.core.v1.Event", "io.k8s.api.events.v1.Event"];

/// The Swagger 2.0 document as JSON.
pub fn build() -> Value {
    let mut gen = schemars::generate::SchemaSettings::draft07()
        .with(|s| {
            s.definitions_path = "/definitions".into();
            s.meta_schema = None;
            s.transforms = Vec::new();
        })
        .into_generator();
    let groups: Vec<&str> = std::iter::once("")
        .chain(discovery::groups(&Default::default()))
        .collect();
    for g in &groups {
        openapi::add_schemas(&mut gen, g);
    }
    // What custom resources' operations refer to.
    {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
        gen.subschema_for::<meta::ListMeta>();
        gen.subschema_for::<meta::Status>();
        gen.subschema_for::<meta::DeleteOptions>();
        gen.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
    }
    let mut defs = gen.take_definitions(true);
    defs.insert(openapi_custom::PATCH.into(), openapi_custom::patch_schema());
    for (name, d) in defs.iter_mut() {
        to_v2_schema(d);
        // k8s-openapi lists `metadata` as required in every top-level kind
        // (its Rust field is not optional); upstream only where the Go field
        // lacks `omitempty` (the two Events). kubectl ≤ 1.26 validates
        // `required` client-side, so a manifest without metadata (a
        // TokenReview) would be refused.
        if !METADATA_REQUIRED.contains(&name.as_str()) {
            if let Some(Value::Array(req)) = d.get_mut("required") {
                req.retain(|r| r != "metadata");
                if req.is_empty() {
                    d.as_object_mut().map(|o| o.remove("required"));
                }
            }
        }
    }
    openapi::add_patch_extensions(&mut defs);
    let mut paths = Map::new();
    for g in &groups {
        let served = openapi::builtin_versions(g)
            .into_iter()
            .flat_map(|v| discovery::served(&Default::default(), g, v));
        for r in served {
            let schema = openapi::schema_name_for(r);
            if let Some(s) = schema.as_ref().and_then(|n| defs.get_mut(n)) {
                s["x-kubernetes-group-version-kind"] =
                    json!([{"group": r.group, "kind": r.kind, "version": r.version}]);
            }
            add_paths(&mut paths, r, schema.as_deref());
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": crate::VERSION_GIT},
        "paths": paths,
        "definitions": defs,
    })
}

/// What Swagger 2.0 lacks from the JSON Schema k8s-openapi writes:
/// int-or-string (and Quantity) schemas have no `type` there, upstream's v2
/// says `string` with format `int-or-string`; one `type`, never a list or
/// `null`; `items` a schema, never a boolean; no `oneOf`/`anyOf` (Swagger 2.0
/// has neither: upstream's v2 describes the CRD schema's "X or Y" types —
/// `JSONSchemaPropsOrArray`, `…OrBool`, `…OrStringArray` — by their
/// description alone).
fn to_v2_schema(v: &mut Value) {
    let Value::Object(m) = v else { return };
    m.remove("oneOf");
    m.remove("anyOf");
    if m.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) && !m.contains_key("type") {
        m.insert("type".into(), json!("string"));
        m.insert("format".into(), json!("int-or-string"));
    }
    if let Some(Value::Array(types)) = m.get("type") {
        let first = types.iter().find(|t| t.as_str() != Some("null")).cloned();
        match first {
            Some(t) => m.insert("type".into(), t),
            None => m.remove("type"),
        };
    }
    m.remove("nullable");
    if let Some(Value::Bool(_)) = m.get("items") {
        m.insert("items".into(), json!({}));
    }
    for k in ["properties", "patternProperties"] {
        if let Some(Value::Object(ps)) = m.get_mut(k) {
            ps.values_mut().for_each(to_v2_schema);
        }
    }
    for k in ["items", "additionalProperties"] {
        if let Some(s) = m.get_mut(k) {
            to_v2_schema(s);
        }
    }
    if let Some(Value::Array(all)) = m.get_mut("allOf") {
        all.iter_mut().for_each(to_v2_schema);
    }
}

fn query_param(name: &str, ty: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "type": ty, "uniqueItems": true, "description": description})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "type": "string", "uniqueItems": true, "description": description})
}

/// One operation, with the `x-kubernetes-action` and GVK extensions and the
/// query parameters kubectl checks for (`dryRun`, `fieldValidation`).
fn op(r: &crate::registry::ResourceDef, verb: &str, action: &str, schema: Option<&str>) -> Value {
    let kind_ref = |n: &str| json!({"$ref": format!("#/definitions/{n}")});
    let mut params = Vec::new();
    if matches!(verb, "post" | "put" | "patch") {
        let body_schema = match (verb, schema) {
            ("patch", _) | (_, None) => json!({"type": "object"}),
            (_, Some(n)) => kind_ref(n),
        };
        params.push(json!({"name": "body", "in": "body", "required": true, "schema": body_schema}));
        params.push(query_param(
            "dryRun",
            "string",
            "When present, indicates that modifications should not be persisted.",
        ));
        params.push(query_param("fieldManager", "string", "fieldManager is a name associated with the actor or entity that is making these changes."));
        params.push(query_param("fieldValidation", "string", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields."));
    }
    if verb == "patch" {
        params.push(query_param(
            "force",
            "boolean",
            "Force is going to \"force\" Apply requests.",
        ));
    }
    if verb == "delete" {
        params.push(query_param(
            "dryRun",
            "string",
            "When present, indicates that modifications should not be persisted.",
        ));
    }
    let mut response = json!({"description": "OK"});
    if let (Some(n), "get" | "put" | "patch" | "post") = (schema, action) {
        response["schema"] = kind_ref(n);
    }
    let mut o = json!({
        "operationId": format!("{action}{}", r.kind),
        "consumes": ["*/*"],
        "produces": ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"],
        "schemes": ["https"],
        "responses": {"200": response, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "kind": r.kind, "version": r.version},
    });
    if !params.is_empty() {
        o["parameters"] = Value::Array(params);
    }
    if verb == "patch" {
        o["consumes"] = json!([
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml"
        ]);
    }
    o
}

fn add_paths(
    paths: &mut Map<String, Value>,
    r: &crate::registry::ResourceDef,
    schema: Option<&str>,
) {
    let base = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let (coll, mut coll_params) = if r.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", r.plural),
            vec![path_param(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            )],
        )
    } else {
        (format!("{base}/{}", r.plural), Vec::new())
    };
    coll_params.push(query_param(
        "pretty",
        "string",
        "If 'true', then the output is pretty printed.",
    ));
    if discovery::is_review(r) {
        // Request/response only: nothing to get, list or delete.
        paths.insert(
            coll,
            json!({"post": op(r, "post", "post", schema), "parameters": coll_params}),
        );
        return;
    }
    let mut item_params = vec![path_param("name", &format!("name of the {}", r.kind))];
    item_params.extend(coll_params.iter().cloned());
    paths.insert(
        coll.clone(),
        json!({
            "get": op(r, "get", "list", None),
            "post": op(r, "post", "post", schema),
            "delete": op(r, "delete", "deletecollection", None),
            "parameters": coll_params,
        }),
    );
    paths.insert(
        format!("{coll}/{{name}}"),
        json!({
            "get": op(r, "get", "get", schema),
            "put": op(r, "put", "put", schema),
            "patch": op(r, "patch", "patch", schema),
            "delete": op(r, "delete", "delete", None),
            "parameters": item_params,
        }),
    );
    for sub in r.subresources.iter().filter(|s| **s == "status") {
        paths.insert(
            format!("{coll}/{{name}}/{sub}"),
            json!({
                "get": op(r, "get", "get", schema),
                "put": op(r, "put", "put", schema),
                "patch": op(r, "patch", "patch", schema),
                "parameters": item_params,
            }),
        );
    }
}

/// A protobuf message being written (proto3: zero scalars are left out,
/// sub-messages are always written, since their presence matters).
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn bytes(&mut self, field: u32, b: &[u8]) {
        encode_key(field, WireType::LengthDelimited, &mut self.0);
        encode_varint(b.len() as u64, &mut self.0);
        self.0.extend_from_slice(b);
    }
    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }
    fn msg(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }
    fn boolean(&mut self, field: u32, b: bool) {
        if b {
            encode_key(field, WireType::Varint, &mut self.0);
            encode_varint(1, &mut self.0);
        }
    }
    fn int64(&mut self, field: u32, v: i64) {
        if v != 0 {
            encode_key(field, WireType::Varint, &mut self.0);
            encode_varint(v as u64, &mut self.0);
        }
    }
    fn double(&mut self, field: u32, v: f64) {
        if v != 0.0 {
            encode_key(field, WireType::SixtyFourBit, &mut self.0);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }
    /// A repeated string field from a JSON string or list of strings.
    fn strings(&mut self, field: u32, v: Option<&Value>) {
        match v {
            Some(Value::String(s)) => self.bytes(field, s.as_bytes()),
            Some(Value::Array(items)) => {
                for s in items.iter().filter_map(Value::as_str) {
                    self.bytes(field, s.as_bytes());
                }
            }
            _ => {}
        }
    }
}

/// gnostic's `Any`: the value as YAML text (field 2), which is what
/// kube-openapi reads vendor extensions, defaults and enums from.
fn any(v: &Value) -> Msg {
    let mut m = Msg::default();
    m.string(2, &serde_yaml_ng::to_string(v).unwrap_or_default());
    m
}

/// `NamedAny` vendor extensions (every `x-` key of `obj`) into `field`.
fn vendor_extensions(out: &mut Msg, field: u32, obj: &Map<String, Value>) {
    for (k, v) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
        let mut named = Msg::default();
        named.string(1, k);
        named.msg(2, any(v));
        out.msg(field, named);
    }
}

/// A `NamedX` message: name (1) and value (2).
fn named(name: &str, value: Msg) -> Msg {
    let mut m = Msg::default();
    m.string(1, name);
    m.msg(2, value);
    m
}

/// gnostic `Document` (fields: swagger 1, info 2, paths 8, definitions 9).
pub fn to_protobuf(doc: &Value) -> Vec<u8> {
    let empty = Map::new();
    let paths = paths_entries(doc["paths"].as_object().unwrap_or(&empty).iter());
    let defs = definitions_entries(doc["definitions"].as_object().unwrap_or(&empty).iter());
    document_pb(&doc["info"], paths, defs, doc.as_object())
}

/// The `Document` message around its `Paths` and `Definitions` contents
/// (vendor extensions, field 16, from `top`'s `x-` keys).
fn document_pb(info: &Value, paths: Msg, defs: Msg, top: Option<&Map<String, Value>>) -> Vec<u8> {
    let mut d = Msg::default();
    d.string(1, "2.0");
    let mut i = Msg::default();
    i.string(1, info["title"].as_str().unwrap_or(""));
    i.string(2, info["version"].as_str().unwrap_or(""));
    d.msg(2, i);
    d.msg(8, paths);
    d.msg(9, defs);
    if let Some(obj) = top {
        vendor_extensions(&mut d, 16, obj);
    }
    d.0
}

/// `Paths` contents: a `NamedPathItem` (field 2) per path.
fn paths_entries<'a, K: AsRef<str>>(ps: impl Iterator<Item = (K, &'a Value)>) -> Msg {
    let mut paths = Msg::default();
    for (p, item) in ps {
        paths.msg(2, named(p.as_ref(), path_item(item)));
    }
    paths
}

/// `Definitions` contents: a `NamedSchema` (field 1) per definition.
fn definitions_entries<'a, K: AsRef<str>>(ds: impl Iterator<Item = (K, &'a Value)>) -> Msg {
    let mut defs = Msg::default();
    for (n, s) in ds {
        defs.msg(1, named(n.as_ref(), schema(s)));
    }
    defs
}

/// `PathItem`: get 2, put 3, post 4, delete 5, patch 8, parameters 9.
fn path_item(item: &Value) -> Msg {
    let mut m = Msg::default();
    for (verb, field) in [
        ("get", 2),
        ("put", 3),
        ("post", 4),
        ("delete", 5),
        ("patch", 8),
    ] {
        if let Some(o) = item.get(verb) {
            m.msg(field, operation(o));
        }
    }
    for p in item["parameters"].as_array().into_iter().flatten() {
        m.msg(9, parameters_item(p));
    }
    m
}

/// `Operation`: tags 1, description 3, operationId 5, produces 6, consumes
/// 7, parameters 8, responses 9, schemes 10, vendor extensions 13.
fn operation(o: &Value) -> Msg {
    let mut m = Msg::default();
    m.strings(1, o.get("tags"));
    m.string(3, o["description"].as_str().unwrap_or(""));
    m.string(5, o["operationId"].as_str().unwrap_or(""));
    m.strings(6, o.get("produces"));
    m.strings(7, o.get("consumes"));
    for p in o["parameters"].as_array().into_iter().flatten() {
        m.msg(8, parameters_item(p));
    }
    let mut responses = Msg::default();
    for (code, r) in o["responses"].as_object().into_iter().flatten() {
        // ResponseValue.response (1): Response{description 1, schema 2 (SchemaItem.schema 1)}.
        let mut resp = Msg::default();
        resp.string(1, r["description"].as_str().unwrap_or(""));
        if let Some(s) = r.get("schema") {
            let mut item = Msg::default();
            item.msg(1, schema(s));
            resp.msg(2, item);
        }
        let mut value = Msg::default();
        value.msg(1, resp);
        responses.msg(1, named(code, value));
    }
    m.msg(9, responses);
    m.strings(10, o.get("schemes"));
    if let Some(obj) = o.as_object() {
        vendor_extensions(&mut m, 13, obj);
    }
    m
}

/// `ParametersItem.parameter` (1) → `Parameter`: a body parameter (1) or a
/// non-body one (2) whose query (3) or path (4) sub-schema holds it.
fn parameters_item(p: &Value) -> Msg {
    let s = |k: &str| p[k].as_str().unwrap_or("");
    let b = |k: &str| p[k].as_bool().unwrap_or(false);
    let mut param = Msg::default();
    match s("in") {
        "body" => {
            let mut body = Msg::default();
            body.string(1, s("description"));
            body.string(2, s("name"));
            body.string(3, "body");
            body.boolean(4, b("required"));
            if let Some(sc) = p.get("schema") {
                body.msg(5, schema(sc));
            }
            param.msg(1, body);
        }
        kind @ ("query" | "path") => {
            // Both sub-schemas start required 1, in 2, description 3, name 4;
            // then query has allowEmptyValue 5, type 6, format 7, uniqueItems
            // 20; path type 5, format 6, uniqueItems 19.
            let mut sub = Msg::default();
            sub.boolean(1, b("required"));
            sub.string(2, kind);
            sub.string(3, s("description"));
            sub.string(4, s("name"));
            let (ty, fmt, unique, which) = if kind == "query" {
                (6, 7, 20, 3)
            } else {
                (5, 6, 19, 4)
            };
            sub.string(ty, s("type"));
            sub.string(fmt, s("format"));
            sub.boolean(unique, b("uniqueItems"));
            let mut non_body = Msg::default();
            non_body.msg(which, sub);
            param.msg(2, non_body);
        }
        _ => {}
    }
    let mut item = Msg::default();
    item.msg(1, param);
    item
}

/// gnostic `Schema`.
fn schema(v: &Value) -> Msg {
    let mut m = Msg::default();
    let Some(o) = v.as_object() else {
        return m;
    };
    let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("");
    let f = |k: &str| o.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let i = |k: &str| o.get(k).and_then(Value::as_i64).unwrap_or(0);
    let b = |k: &str| o.get(k).and_then(Value::as_bool).unwrap_or(false);
    m.string(1, s("$ref"));
    m.string(2, s("format"));
    m.string(3, s("title"));
    m.string(4, s("description"));
    if let Some(d) = o.get("default") {
        m.msg(5, any(d));
    }
    m.double(6, f("multipleOf"));
    m.double(7, f("maximum"));
    m.boolean(8, b("exclusiveMaximum"));
    m.double(9, f("minimum"));
    m.boolean(10, b("exclusiveMinimum"));
    m.int64(11, i("maxLength"));
    m.int64(12, i("minLength"));
    m.string(13, s("pattern"));
    m.int64(14, i("maxItems"));
    m.int64(15, i("minItems"));
    m.boolean(16, b("uniqueItems"));
    m.int64(17, i("maxProperties"));
    m.int64(18, i("minProperties"));
    m.strings(19, o.get("required"));
    for e in o
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.msg(20, any(e));
    }
    match o.get("additionalProperties") {
        // AdditionalPropertiesItem: schema 1 | boolean 2.
        Some(Value::Bool(ap)) => {
            let mut item = Msg::default();
            encode_key(2, WireType::Varint, &mut item.0);
            encode_varint(u64::from(*ap), &mut item.0);
            m.msg(21, item);
        }
        Some(ap @ Value::Object(_)) => {
            let mut item = Msg::default();
            item.msg(1, schema(ap));
            m.msg(21, item);
        }
        _ => {}
    }
    if o.contains_key("type") {
        let mut ty = Msg::default();
        ty.strings(1, o.get("type"));
        m.msg(22, ty);
    }
    match o.get("items") {
        Some(Value::Array(items)) => {
            let mut it = Msg::default();
            items.iter().for_each(|x| it.msg(1, schema(x)));
            m.msg(23, it);
        }
        Some(x @ Value::Object(_)) => {
            let mut it = Msg::default();
            it.msg(1, schema(x));
            m.msg(23, it);
        }
        _ => {}
    }
    for a in o
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.msg(24, schema(a));
    }
    if let Some(ps) = o.get("properties").and_then(Value::as_object) {
        let mut props = Msg::default();
        for (n, p) in ps {
            props.msg(1, named(n, schema(p)));
        }
        m.msg(25, props);
    }
    m.string(26, s("discriminator"));
    m.boolean(27, b("readOnly"));
    if let Some(e) = o.get("example") {
        m.msg(30, any(e));
    }
    vendor_extensions(&mut m, 31, o);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_as_kube_openapi() {
        let pb = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
        assert_eq!(negotiate(pb), Some(Format::Protobuf));
        assert_eq!(negotiate(PROTOBUF), Some(Format::Protobuf));
        assert_eq!(negotiate(""), Some(Format::Json));
        assert_eq!(negotiate("*/*"), Some(Format::Json));
        assert_eq!(negotiate("application/json"), Some(Format::Json));
        assert_eq!(
            negotiate(&format!("application/json;q=0.9, {pb}")),
            Some(Format::Protobuf)
        );
        assert_eq!(negotiate(&format!("*/*, {pb}")), Some(Format::Protobuf));
        assert_eq!(negotiate("text/html"), None);
        assert_eq!(negotiate("application/yaml"), None);
    }

    #[test]
    fn if_none_match() {
        assert!(not_modified("\"AB\"", "AB"));
        assert!(not_modified("W/\"AB\"", "AB"));
        assert!(not_modified("\"x\", \"AB\"", "AB"));
        assert!(not_modified("*", "AB"));
        assert!(!not_modified("", "AB"));
        assert!(!not_modified("\"ABC\"", "AB"));
    }

    #[test]
    fn document_is_swagger_2() {
        let doc = build();
        assert_eq!(doc["swagger"], "2.0");
        let defs = doc["definitions"].as_object().expect("definitions");
        let deploy = &defs["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deploy["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        let containers = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(
            containers["items"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.Container"
        );
        assert!(deploy.get("required").is_none(), "{:?}", deploy["required"]);
        assert_eq!(
            defs["io.k8s.api.authentication.v1.TokenReview"]["required"],
            json!(["spec"])
        );
        assert_eq!(
            defs["io.k8s.api.core.v1.Event"]["required"],
            json!(["involvedObject", "metadata"])
        );
        let ios = &defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(
            (&ios["type"], &ios["format"]),
            (&json!("string"), &json!("int-or-string"))
        );
        // Every reference resolves and no schema is left in a form the v2
        // parsers (kube-openapi's proto package) refuse.
        fn walk(v: &Value, defs: &Map<String, Value>) {
            match v {
                Value::Object(m) => {
                    if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                        let name = r.strip_prefix("#/definitions/").expect("v2 ref");
                        assert!(defs.contains_key(name), "dangling {r}");
                    }
                    assert!(!m.get("type").is_some_and(Value::is_array), "{m:?}");
                    if m.get("type") == Some(&json!("array")) {
                        assert!(m.get("items").is_some_and(Value::is_object), "{m:?}");
                    }
                    m.values().for_each(|x| walk(x, defs));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, defs)),
                _ => {}
            }
        }
        walk(&doc, defs);
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(patch["parameters"]
            .as_array()
            .expect("params")
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
    }

    #[test]
    fn server_side_merge_agrees_with_advertised_keys() {
        // Lists upstream merges but this server's patch replaces are not advertised.
        let doc = build();
        let status = &doc["definitions"]["io.k8s.api.core.v1.PodStatus"]["properties"];
        assert!(status["podIPs"]
            .get("x-kubernetes-patch-strategy")
            .is_none());
        assert_eq!(status["conditions"]["x-kubernetes-patch-merge-key"], "type");
        let meta =
            &doc["definitions"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"];
        assert_eq!(meta["finalizers"]["x-kubernetes-patch-strategy"], "merge");
        let svc = &doc["definitions"]["io.k8s.api.core.v1.ServiceSpec"]["properties"];
        assert_eq!(svc["ports"]["x-kubernetes-patch-merge-key"], "port");
    }
}
