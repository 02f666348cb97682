//! Patch types: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and
//! strategic merge patch for the built-in kinds, using the
//! `patchMergeKey`/`patchStrategy` tags of the upstream Go types.

use super::error::{ApiError, ApiResult};
use serde_json::{Map, Value};

/// Lists merged as sets (`patchStrategy:"merge"` without a key).
pub const SET_LISTS: &[&str] = &["finalizers"];

/// The merge key(s) of a list field, from the `patchMergeKey` tags in
/// k8s.io/api (core/v1/types.go, meta/v1/types.go).
pub fn merge_keys_for(field: &str, items: &[Value]) -> Option<&'static [&'static str]> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "containerStatuses"
        | "initContainerStatuses" => &["name"],
        "volumeMounts" => &["mountPath"],
        "volumeDevices" => &["devicePath"],
        "conditions" | "addresses" => &["type"],
        "ownerReferences" => &["uid"],
        "hostAliases" => &["ip"],
        "topologySpreadConstraints" => &["topologyKey", "whenUnsatisfiable"],
        "ports" => {
            // ContainerPort is keyed by containerPort (+protocol in SSA),
            // ServicePort by port.
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                &["containerPort", "protocol"]
            } else {
                &["port", "protocol"]
            }
        }
        _ => return None,
    })
}

fn same_item(a: &Value, b: &Value, keys: &[&str]) -> bool {
    // SMP identifies items by the first (primary) key only.
    keys.first()
        .is_some_and(|k| a.get(*k).is_some() && a.get(*k) == b.get(*k))
}

fn merge_list(field: &str, orig: &[Value], patch: &[Value]) -> Value {
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Value::Array(
            patch
                .iter()
                .filter(|p| p.get("$patch").is_none())
                .cloned()
                .collect(),
        );
    }
    if SET_LISTS.contains(&field) {
        let mut out = orig.to_vec();
        for p in patch {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        return Value::Array(out);
    }
    let all: Vec<Value> = orig.iter().chain(patch.iter()).cloned().collect();
    let Some(keys) = merge_keys_for(field, &all) else {
        return Value::Array(patch.to_vec());
    };
    if !patch.iter().all(Value::is_object) {
        return Value::Array(patch.to_vec());
    }
    let mut out = orig.to_vec();
    for p in patch {
        let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
        match out.iter().position(|o| same_item(o, p, keys)) {
            Some(i) if delete => {
                out.remove(i);
            }
            Some(i) => out[i] = smp(&out[i], p, ""),
            None if delete => {}
            None => out.push(smp(&Value::Null, p, "")),
        }
    }
    Value::Array(out)
}

fn smp(orig: &Value, patch: &Value, field: &str) -> Value {
    match (orig, patch) {
        (_, Value::Object(pm)) => {
            if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut m = pm.clone();
                m.remove("$patch");
                return Value::Object(m);
            }
            let mut out: Map<String, Value> = orig.as_object().cloned().unwrap_or_default();
            let retain: Option<Vec<String>> =
                pm.get("$retainKeys").and_then(Value::as_array).map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                });
            for (k, pv) in pm {
                if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
                    continue;
                }
                if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
                    if let (Some(Value::Array(cur)), Some(del)) = (out.get_mut(list), pv.as_array())
                    {
                        cur.retain(|v| !del.contains(v));
                    }
                    continue;
                }
                if pv.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = match (out.get(k), pv) {
                    (Some(Value::Array(o)), Value::Array(p)) => merge_list(k, o, p),
                    (None, Value::Array(p)) => merge_list(k, &[], p),
                    (Some(o), p) => smp(o, p, k),
                    (None, p) => smp(&Value::Null, p, k),
                };
                out.insert(k.clone(), merged);
            }
            if let Some(keep) = retain {
                out.retain(|k, _| keep.contains(k));
            }
            let _ = field;
            Value::Object(out)
        }
        (_, p) => strip_directives(p),
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Applies a strategic merge patch.
pub fn strategic_merge(orig: &Value, patch: &Value) -> Value {
    smp(orig, patch, "")
}

/// The patch content types the API server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> ApiResult<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        Ok(match base {
            "application/json-patch+json" => PatchType::Json,
            "application/merge-patch+json" => PatchType::Merge,
            "application/strategic-merge-patch+json" => PatchType::Strategic,
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => PatchType::Apply,
            other => return Err(ApiError::unsupported_media(other)),
        })
    }
}

/// Applies a JSON, merge or strategic patch to `orig`.
pub fn apply_patch(orig: &Value, ty: PatchType, body: &[u8]) -> ApiResult<Value> {
    let parse = |b: &[u8]| -> ApiResult<Value> {
        serde_json::from_slice(b)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
    };
    match ty {
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut doc = orig.clone();
            json_patch::patch(&mut doc, &p).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
            Ok(doc)
        }
        PatchType::Merge => {
            let p = parse(body)?;
            let mut doc = orig.clone();
            json_patch::merge(&mut doc, &p);
            Ok(doc)
        }
        PatchType::Strategic => Ok(strategic_merge(orig, &parse(body)?)),
        PatchType::Apply => Err(ApiError::internal("apply is handled by server-side apply")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let orig = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}], "tolerations": [{"key": "x"}]}, "metadata": {"finalizers": ["f1"]}});
        let patch = json!({"spec": {"containers": [{"name": "b", "image": "3"}, {"name": "c", "image": "4"}], "tolerations": [{"key": "y"}]}, "metadata": {"finalizers": ["f2"], "labels": {"l": "v"}}});
        let out = strategic_merge(&orig, &patch);
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "image": "1"}, {"name": "b", "image": "3"}, {"name": "c", "image": "4"}])
        );
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "y"}]));
        assert_eq!(out["metadata"]["finalizers"], json!(["f1", "f2"]));
        let del = json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}, "$setElementOrder/x": []});
        let out2 = strategic_merge(&out, &del);
        assert_eq!(out2["spec"]["containers"].as_array().unwrap().len(), 2);
        let rm = strategic_merge(&out2, &json!({"metadata": {"labels": {"l": null}}}));
        assert_eq!(rm["metadata"]["labels"], json!({}));
    }

    #[test]
    fn json_and_merge_patches() {
        let orig = json!({"a": {"b": 1}, "c": [1]});
        let out = apply_patch(
            &orig,
            PatchType::Json,
            br#"[{"op":"replace","path":"/a/b","value":2},{"op":"add","path":"/c/-","value":2}]"#,
        )
        .unwrap();
        assert_eq!(out, json!({"a": {"b": 2}, "c": [1, 2]}));
        let out = apply_patch(&orig, PatchType::Merge, br#"{"a":null,"c":[3]}"#).unwrap();
        assert_eq!(out, json!({"c": [3]}));
        assert!(apply_patch(&orig, PatchType::Json, b"{").is_err());
    }
}
