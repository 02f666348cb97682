//! Custom resources: what kube-apiserver's apiextensions handler does with
//! an object of a CRD — metadata as ObjectMeta, the rest pruned, defaulted
//! and validated by the version's structural schema
//! (`rktup-apiextensions`), and the scale subresource read and written
//! through the CRD's paths.

use super::error::{cause, ApiError, ApiResult, Cause};
use crate::registry::{CustomDef, ResourceDef};
use serde_json::{json, Value};

/// The object decoded as a custom resource: `metadata` as ObjectMeta
/// (unknown metadata fields fall away, as for every kind), the rest pruned
/// to the schema. Returns the object and the dropped fields' paths.
pub(crate) fn normalize(
    rd: &ResourceDef,
    c: &CustomDef,
    obj: &Value,
) -> ApiResult<(Value, Vec<String>)> {
    let mut out = obj.clone();
    let mut unknown = Vec::new();
    if let Some(meta) = obj.get("metadata") {
        if !meta.is_object() {
            return Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: metadata must be an object",
                rd.kind, rd.version, rd.kind
            )));
        }
        let typed: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
            serde_json::from_value(meta.clone()).map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: {e}",
                    rd.kind, rd.version, rd.kind
                ))
            })?;
        let back = serde_json::to_value(typed).map_err(|e| ApiError::internal(e.to_string()))?;
        if let Some(m) = meta.as_object() {
            for k in m.keys() {
                if back.get(k).is_none() && !m[k].is_null() {
                    unknown.push(format!("metadata.{k}"));
                }
            }
        }
        out["metadata"] = back;
    }
    if let (Some(s), false) = (&c.structural, c.preserve_unknown_fields) {
        unknown.extend(s.prune(&mut out));
    }
    Ok((out, unknown))
}

/// The schema's defaults.
pub(crate) fn apply_defaults(c: &CustomDef, obj: &mut Value) {
    if let Some(s) = &c.structural {
        s.apply_defaults(obj);
    }
}

/// The schema's validation (with `old` for transition rules), as causes.
pub(crate) fn validate(c: &CustomDef, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let Some(s) = &c.structural else {
        return Vec::new();
    };
    s.validate(obj, old)
        .into_iter()
        .map(|e| cause(e.reason, &e.field, e.message))
        .collect()
}

/// A value at a CRD's JSON path (`.spec.replicas`).
fn at<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path.trim_start_matches('.').split('.') {
        cur = cur.get(seg)?;
    }
    Some(cur)
}

fn set(obj: &mut Value, path: &str, v: Value) {
    let mut cur = obj;
    let segs: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    for (i, seg) in segs.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        if i + 1 == segs.len() {
            cur[*seg] = v;
            return;
        }
        cur = &mut cur[*seg];
    }
}

/// The autoscaling/v1 Scale of a custom resource with a scale subresource.
pub(crate) fn scale_of(rd: &ResourceDef, obj: &Value) -> Option<Value> {
    let paths = rd.custom?.scale.as_ref()?;
    let meta = &obj["metadata"];
    let mut scale = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {},
        "status": {"replicas": at(obj, &paths.status_replicas).and_then(Value::as_i64).unwrap_or(0)},
    });
    if let Some(ns) = meta.get("namespace") {
        scale["metadata"]["namespace"] = ns.clone();
    }
    if let Some(r) = at(obj, &paths.spec_replicas).and_then(Value::as_i64) {
        scale["spec"]["replicas"] = json!(r);
    }
    if let Some(sel) = paths
        .label_selector
        .as_deref()
        .and_then(|p| at(obj, p))
        .and_then(Value::as_str)
    {
        scale["status"]["selector"] = json!(sel);
    }
    Some(scale)
}

/// Writes a Scale's `spec.replicas` into the custom resource.
pub(crate) fn set_replicas(rd: &ResourceDef, obj: &mut Value, replicas: i64) -> bool {
    let Some(paths) = rd.custom.and_then(|c| c.scale.as_ref()) else {
        return false;
    };
    set(obj, &paths.spec_replicas, json!(replicas));
    true
}

/// The printer columns of a custom resource: `additionalPrinterColumns`, or
/// `Age` when the CRD has none (apiextensions' table convertor).
fn printer_columns(c: &CustomDef) -> Vec<(Value, Option<rktup_apiextensions::JsonPath>)> {
    if c.printer_columns.is_empty() {
        return vec![(
            json!({
                "name": "Age",
                "type": "date",
                "jsonPath": ".metadata.creationTimestamp",
                "description": "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
            }),
            rktup_apiextensions::JsonPath::parse(".metadata.creationTimestamp").ok(),
        )];
    }
    c.printer_columns.clone()
}

/// Table column definitions: Name, then the printer columns.
pub(crate) fn table_columns(c: &CustomDef) -> Vec<Value> {
    let mut out = vec![json!({
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
        "priority": 0,
    })];
    for (col, _) in printer_columns(c) {
        out.push(json!({
            "name": col["name"],
            "type": col["type"],
            "format": col.get("format").cloned().unwrap_or(json!("")),
            "description": col.get("description").cloned().unwrap_or(json!("")),
            "priority": col.get("priority").cloned().unwrap_or(json!(0)),
        }));
    }
    out
}

/// A row's cells: the name, then each column's first value at its
/// jsonPath, typed by the column's type (`date` as an age, as kubectl
/// shows it); a missing value is null (`<none>`).
pub(crate) fn table_cells(c: &CustomDef, obj: &Value) -> Vec<Value> {
    let mut cells = vec![obj.pointer("/metadata/name").cloned().unwrap_or(json!(""))];
    for (col, path) in printer_columns(c) {
        let ty = col["type"].as_str().unwrap_or("string");
        let cell = path.map_or(Value::Null, |p| p.cell(ty, obj));
        cells.push(match (ty, cell) {
            ("date", Value::String(ts)) if ts != "<invalid>" => {
                json!(super::table::age_of(Some(ts.as_str())))
            }
            (_, cell) => cell,
        });
    }
    cells
}
