//! CustomResourceDefinition: defaults (`SetDefaults_CustomResourceDefinition*`
//! of apiextensions v1), create preparation (status reset, `storedVersions`)
//! and validation (`rktup-apiextensions`, upstream's
//! ValidateCustomResourceDefinition).

use super::super::error::Cause;
use crate::registry::ResourceDef;
use serde_json::{json, Value};

fn is_crd(rd: &ResourceDef) -> bool {
    (rd.group, rd.kind) == ("apiextensions.k8s.io", "CustomResourceDefinition")
}

pub(super) fn defaults(rd: &ResourceDef, obj: &mut Value) {
    if !is_crd(rd) {
        return;
    }
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if names
            .get("singular")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            names.insert("singular".into(), json!(kind.to_ascii_lowercase()));
        }
        if names
            .get("listKind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
            && !kind.is_empty()
        {
            names.insert("listKind".into(), json!(format!("{kind}List")));
        }
    }
    if !spec.get("conversion").is_some_and(Value::is_object) {
        spec.insert("conversion".into(), json!({"strategy": "None"}));
    }
    if let Some(svc) = spec
        .get_mut("conversion")
        .and_then(|c| c.pointer_mut("/webhook/clientConfig/service"))
        .and_then(Value::as_object_mut)
    {
        svc.entry("port").or_insert(json!(443));
    }
}

/// PrepareForCreate: the status starts empty but for the storage version.
pub(super) fn prepare_create(rd: &ResourceDef, obj: &mut Value) {
    if !is_crd(rd) {
        return;
    }
    let storage: Vec<Value> = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == true)
        .map(|v| v["name"].clone())
        .collect();
    obj["status"] = json!({
        "acceptedNames": {"plural": "", "kind": ""},
        "storedVersions": storage,
    });
}

pub(super) fn validate(rd: &ResourceDef, obj: &Value, causes: &mut Vec<Cause>) {
    if !is_crd(rd) {
        return;
    }
    push(rktup_apiextensions::validate_crd(obj, None), causes);
}

fn push(errors: Vec<rktup_apiextensions::FieldError>, causes: &mut Vec<Cause>) {
    causes.extend(
        errors
            .into_iter()
            .map(|e| super::super::error::cause(e.reason, &e.field, e.message)),
    );
}

pub(super) fn validate_update(rd: &ResourceDef, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    if !is_crd(rd) {
        return;
    }
    // Only the update rules: the whole-object ones run in `validate` on update too.
    let base: Vec<(String, String)> = rktup_apiextensions::validate_crd(new, None)
        .into_iter()
        .map(|e| (e.field, e.message))
        .collect();
    let update_only = rktup_apiextensions::validate_crd(new, Some(old))
        .into_iter()
        .filter(|e| !base.contains(&(e.field.clone(), e.message.clone())))
        .collect();
    push(update_only, causes);
}
