//! OpenAPI v3 documents generated from the k8s-openapi types (via their
//! `schemars` implementations), one per group-version as kube-apiserver
//! serves them under /openapi/v3/<path>. Each kind's schema carries
//! `x-kubernetes-group-version-kind`, which `kubectl explain` looks up,
//! and every write operation declares the `fieldValidation` parameter,
//! which kubectl checks before relying on server-side field validation.
//!
//! Built-in group-versions are built once; those of CustomResourceDefinitions
//! (`openapi_custom.rs`) once per set of CRDs served, on the first request
//! that sees it, re-using the documents of unchanged group-versions.

use super::discovery;
use super::openapi_custom::{self, Part, SetCache, Spec};
use crate::registry::{ResourceDef, Resources};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// The schema (definition) name of a served kind.
pub(crate) fn schema_name_for(r: &ResourceDef) -> Option<String> {
    Some((r.typed.schema_name)())
}

/// Registers the schemas of `group`'s kinds (and what they refer to, and the
/// kinds their subresources take: `Scale`, `Binding`) in `gen`.
pub(crate) fn add_schemas(gen: &mut schemars::SchemaGenerator, group: &str) {
    let served: Vec<&ResourceDef> = builtin_versions(group)
        .into_iter()
        .flat_map(|v| discovery::served(&Default::default(), group, v))
        .collect();
    for r in &served {
        (r.typed.add_schema)(gen);
    }
    if served.iter().any(|r| r.subresources.contains(&"scale")) {
        gen.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
    }
    if group.is_empty() {
        gen.subschema_for::<k8s_openapi::api::core::v1::Binding>();
    }
}

/// The served versions of a built-in group, preferred first (autoscaling: v2, v1).
pub(crate) fn builtin_versions(group: &str) -> Vec<&'static str> {
    let v = Resources::default().versions_of(group);
    if v.is_empty() {
        // The review-only groups.
        vec![crate::registry::version_of(group)]
    } else {
        v
    }
}

/// The `patchStrategy`/`patchMergeKey` tags of the upstream Go types
/// (k8s.io/api, metav1.ObjectMeta) that kube-openapi publishes as
/// `x-kubernetes-patch-strategy`/`x-kubernetes-patch-merge-key`; k8s-openapi
/// drops them. (definition, property, strategy, merge key).
#[rustfmt::skip]
const PATCH_TAGS: &[(&str, &str, &str, &str)] = &[
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", "merge", ""),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", "merge", "uid"),
    ("io.k8s.api.core.v1.Container", "ports", "merge", "containerPort"),
    ("io.k8s.api.core.v1.Container", "env", "merge", "name"),
    ("io.k8s.api.core.v1.Container", "volumeMounts", "merge", "mountPath"),
    ("io.k8s.api.core.v1.Container", "volumeDevices", "merge", "devicePath"),
    ("io.k8s.api.core.v1.EphemeralContainer", "ports", "merge", "containerPort"),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", "merge", "name"),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", "merge", "mountPath"),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", "merge", "devicePath"),
    ("io.k8s.api.core.v1.ContainerStatus", "volumeMounts", "merge", "mountPath"),
    ("io.k8s.api.core.v1.ContainerStatus", "allocatedResourcesStatus", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", "name"),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip"),
    ("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", "merge", "topologyKey"),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", "merge,retainKeys", "name"),
    ("io.k8s.api.core.v1.PodStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "resourceClaimStatuses", "merge,retainKeys", "name"),
    ("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.ReplicationControllerStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port"),
    ("io.k8s.api.core.v1.ServiceStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", "merge", "name"),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", ""),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", "merge", "type"),
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", "retainKeys", ""),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "merge", "type"),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", "merge", "type"),
];

/// Adds the patch extensions of [`PATCH_TAGS`] to `schemas` (keyed by
/// definition name) — only where this server's strategic merge patch
/// (`patch.rs`) merges the same way: a client computes its patch from
/// them, so advertising a merge the server would do as a replacement
/// would lose list items. The others stay replacements on both sides.
pub(crate) fn add_patch_extensions(schemas: &mut Map<String, Value>) {
    use super::patch::{merge_keys_for, SET_LISTS};
    for (def, prop, strategy, key) in PATCH_TAGS {
        let agrees = if !strategy.contains("merge") {
            true
        } else if key.is_empty() {
            SET_LISTS.contains(prop)
        } else {
            merge_keys_for(prop, &[json!({ *key: 1 })])
                .and_then(|keys| keys.first())
                .is_some_and(|k| k == key)
        };
        let Some(p) = schemas
            .get_mut(*def)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|ps| ps.get_mut(*prop))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if !agrees {
            continue;
        }
        p.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        if !key.is_empty() {
            p.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
    }
}

fn op(r: &ResourceDef, verb: &str, action: &str) -> Value {
    let mut params = vec![
        json!({"name": "dryRun", "in": "query", "schema": {"type": "string"}}),
        json!({"name": "fieldManager", "in": "query", "schema": {"type": "string"}}),
    ];
    if matches!(verb, "post" | "put" | "patch") {
        params.push(json!({"name": "fieldValidation", "in": "query", "description": "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields.", "schema": {"type": "string", "uniqueItems": true}}));
    }
    if verb == "patch" {
        params.push(json!({"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}));
    }
    let mut op = json!({
        "operationId": format!("{verb}{}", r.kind),
        "parameters": params,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
        "responses": {"200": {"description": "OK"}},
    });
    if verb == "patch" {
        // kubectl apply reads the patch types a path takes from here before computing a
        // strategic merge patch from this document (without it, it falls back to v2).
        let patch = json!({"schema": {"$ref": format!("#/components/schemas/{PATCH_SCHEMA}")}});
        op["requestBody"] = json!({
            "content": {
                "application/apply-patch+yaml": patch,
                "application/json-patch+json": patch,
                "application/merge-patch+json": patch,
                "application/strategic-merge-patch+json": patch,
            },
            "required": true,
        });
    }
    op
}

/// metav1.Patch, the body schema of every PATCH operation.
const PATCH_SCHEMA: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

fn build(group: &str, version: &str) -> Value {
    let mut gen = schemars::generate::SchemaSettings::openapi3().into_generator();
    add_schemas(&mut gen, group);
    let mut schemas: Map<String, Value> = gen.take_definitions(true);
    add_patch_extensions(&mut schemas);
    schemas.insert(PATCH_SCHEMA.into(), openapi_custom::patch_schema());
    let mut paths = BTreeMap::new();
    for r in discovery::served(&Default::default(), group, version) {
        if let Some(name) = schema_name_for(r) {
            if let Some(s) = schemas.get_mut(&name) {
                s["x-kubernetes-group-version-kind"] =
                    json!([{"group": r.group, "kind": r.kind, "version": r.version}]);
            }
        }
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let coll = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        if discovery::is_review(r) {
            // Request/response only: nothing to get, list or delete.
            paths.insert(coll, json!({"post": op(r, "post", "post")}));
            continue;
        }
        paths.insert(coll.clone(), json!({"get": op(r, "get", "list"), "post": op(r, "post", "post"), "delete": op(r, "delete", "deletecollection")}));
        paths.insert(format!("{coll}/{{name}}"), json!({"get": op(r, "get", "get"), "put": op(r, "put", "put"), "patch": op(r, "patch", "patch"), "delete": op(r, "delete", "delete")}));
        for sub in r
            .subresources
            .iter()
            .filter(|s| matches!(**s, "status" | "scale" | "approval"))
        {
            paths.insert(format!("{coll}/{{name}}/{sub}"), json!({"get": op(r, "get", "get"), "put": op(r, "put", "put"), "patch": op(r, "patch", "patch")}));
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::VERSION_GIT},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// One /openapi/v3 document as served.
pub struct V3Doc {
    pub bytes: bytes::Bytes,
    /// kube-openapi's hash: SHA-512 of the document, upper-case hex (the
    /// index's `?hash=`, the ETag).
    pub hash: String,
}

impl V3Doc {
    fn new(doc: &Value) -> V3Doc {
        let bytes = serde_json::to_vec(doc).unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA512, &bytes);
        V3Doc {
            hash: digest.as_ref().iter().map(|b| format!("{b:02X}")).collect(),
            bytes: bytes.into(),
        }
    }
}

/// The built-in group-versions' documents, built once: path (as in
/// /openapi/v3/<path>) → document.
fn builtin() -> &'static BTreeMap<String, Arc<V3Doc>> {
    static DOCS: OnceLock<BTreeMap<String, Arc<V3Doc>>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut gvs: Vec<(&str, &str)> = vec![("", "v1")];
        for g in discovery::groups(&Default::default()) {
            gvs.extend(builtin_versions(g).into_iter().map(|v| (g, v)));
        }
        gvs.into_iter()
            .map(|(g, v)| {
                let path = if g.is_empty() {
                    format!("api/{v}")
                } else {
                    format!("apis/{g}/{v}")
                };
                (path, Arc::new(V3Doc::new(&build(g, v))))
            })
            .collect()
    })
}

/// The schemas custom resource documents refer to (ObjectMeta, ListMeta,
/// Status, DeleteOptions, Patch, Scale and theirs), built once.
fn common_schemas() -> &'static Map<String, Value> {
    static COMMON: OnceLock<Map<String, Value>> = OnceLock::new();
    COMMON.get_or_init(|| {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
        let mut gen = schemars::generate::SchemaSettings::openapi3().into_generator();
        gen.subschema_for::<meta::ObjectMeta>();
        gen.subschema_for::<meta::ListMeta>();
        gen.subschema_for::<meta::Status>();
        gen.subschema_for::<meta::DeleteOptions>();
        gen.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
        let mut schemas = gen.take_definitions(true);
        add_patch_extensions(&mut schemas);
        schemas.insert(PATCH_SCHEMA.into(), openapi_custom::patch_schema());
        schemas
    })
}

/// The documents of the custom group-versions of one set of CRDs, each with
/// the (sorted) definitions it was built from.
struct CustomDocs {
    docs: BTreeMap<String, (Vec<usize>, Arc<V3Doc>)>,
}

static CUSTOM: SetCache<Part, CustomDocs> = SetCache::new(|rd| openapi_custom::part(rd, Spec::V3));

fn custom_docs(res: &Resources) -> Option<Arc<CustomDocs>> {
    if res.custom().is_empty() {
        return None;
    }
    Some(CUSTOM.get(res.custom(), build_custom))
}

/// One document per custom group-version, re-using another kept set's
/// document of a group-version whose definitions did not change.
fn build_custom(parts: &[Arc<Part>], previous: &[Arc<CustomDocs>]) -> CustomDocs {
    let mut by_gv: BTreeMap<&str, Vec<&Part>> = BTreeMap::new();
    for p in parts {
        by_gv.entry(p.group_version.as_str()).or_default().push(p);
    }
    let mut docs = BTreeMap::new();
    for (gv, ps) in by_gv {
        let mut key: Vec<usize> = ps.iter().map(|p| p.def).collect();
        key.sort_unstable();
        let reused = previous.iter().find_map(|prev| {
            prev.docs
                .get(gv)
                .filter(|(k, _)| *k == key)
                .map(|(_, d)| d.clone())
        });
        let doc = match reused {
            Some(d) => d,
            None => Arc::new(V3Doc::new(&custom_document(gv, &ps))),
        };
        docs.insert(gv.to_string(), (key, doc));
    }
    CustomDocs { docs }
}

/// A custom group-version's document: its kinds and paths and the schemas
/// they refer to (merged into the built-in document of the same path, where
/// a CRD shares a built-in group-version: built-in entries win, as the
/// built-in resource does in the routes).
fn custom_document(gv: &str, parts: &[&Part]) -> Value {
    let mut doc = match builtin().get(gv) {
        Some(b) => serde_json::from_slice(&b.bytes).unwrap_or_else(|_| json!({})),
        None => json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
            "paths": {},
            "components": {"schemas": {}},
        }),
    };
    for p in parts {
        if let Some(paths) = doc["paths"].as_object_mut() {
            for (k, v) in &p.paths {
                paths.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
            for (k, v) in &p.schemas {
                schemas.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    let paths = doc["paths"].take();
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        openapi_custom::add_referenced(schemas, &paths, common_schemas(), "#/components/schemas/");
    }
    doc["paths"] = paths;
    doc
}

/// The document served at /openapi/v3/<path> now.
pub fn document(res: &Resources, path: &str) -> Option<Arc<V3Doc>> {
    custom_docs(res)
        .and_then(|c| c.docs.get(path).map(|(_, d)| d.clone()))
        .or_else(|| builtin().get(path).cloned())
}

/// The /openapi/v3 index: every built-in and custom group-version, each
/// with the hash of its current document (so a CRD change changes its URL).
pub fn index(res: &Resources) -> Value {
    let mut paths: Map<String, Value> = Map::new();
    let custom = custom_docs(res);
    let custom_docs = custom
        .iter()
        .flat_map(|c| c.docs.iter().map(|(p, (_, d))| (p, d)));
    for (p, doc) in builtin().iter().chain(custom_docs) {
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", doc.hash)}),
        );
    }
    json!({"paths": paths})
}
