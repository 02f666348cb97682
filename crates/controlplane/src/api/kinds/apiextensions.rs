//! CustomResourceDefinition: defaults (`SetDefaults_CustomResourceDefinition*`
//! of apiextensions v1) and create preparation (status reset,
//! `storedVersions`). Validation (`rktup_apiextensions::validate_crd`, with the
//! old CRD on update) is called from `defaults::validate_with_old`.

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
