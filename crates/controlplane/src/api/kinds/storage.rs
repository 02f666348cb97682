//! Storage: PersistentVolume, PersistentVolumeClaim (core/v1), StorageClass, CSIDriver, CSINode,
//! CSIStorageCapacity, VolumeAttachment (storage.k8s.io/v1).
//!
//! Defaults, validation and update rules as upstream's pkg/apis/core/validation (PV/PVC) and
//! pkg/apis/storage/validation, and the DefaultStorageClass admission plugin
//! (plugin/pkg/admission/storage/storageclass/setdefault).

use crate::api::error::{cause, ApiResult, Cause};
use crate::api::objects::Core;
use crate::registry::ResourceDef;
use serde_json::{json, Value};

const ACCESS_MODES: [&str; 4] = [
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

/// The volume sources a PersistentVolume may name (`PersistentVolumeSource`'s fields).
const PV_SOURCES: [&str; 22] = [
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "hostPath",
    "glusterfs",
    "nfs",
    "rbd",
    "quobyte",
    "iscsi",
    "cephfs",
    "cinder",
    "fc",
    "flocker",
    "flexVolume",
    "azureFile",
    "vsphereVolume",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "local",
    "storageos",
    "csi",
];

fn is(rd: &ResourceDef, group: &str, kind: &str) -> bool {
    rd.group == group && rd.kind == kind
}

fn default(obj: &mut Value, ptr_parent: &str, key: &str, v: Value) {
    let parent = if ptr_parent.is_empty() {
        Some(&mut *obj)
    } else {
        obj.pointer_mut(ptr_parent)
    };
    if let Some(m) = parent.and_then(Value::as_object_mut) {
        if m.get(key).is_none_or(Value::is_null) {
            m.insert(key.to_string(), v);
        }
    }
}

fn ensure_spec(obj: &mut Value) {
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
}

/// Defaults (create and update; status is put back after an update).
pub(super) fn defaults(rd: &ResourceDef, obj: &mut Value) {
    if is(rd, "", "PersistentVolume") {
        ensure_spec(obj);
        default(
            obj,
            "/spec",
            "persistentVolumeReclaimPolicy",
            json!("Retain"),
        );
        default(obj, "/spec", "volumeMode", json!("Filesystem"));
        default(obj, "/spec/hostPath", "type", json!(""));
    } else if is(rd, "", "PersistentVolumeClaim") {
        ensure_spec(obj);
        default(obj, "/spec", "volumeMode", json!("Filesystem"));
    } else if is(rd, "storage.k8s.io", "StorageClass") {
        default(obj, "", "reclaimPolicy", json!("Delete"));
        default(obj, "", "volumeBindingMode", json!("Immediate"));
    } else if is(rd, "storage.k8s.io", "CSIDriver") {
        ensure_spec(obj);
        default(obj, "/spec", "attachRequired", json!(true));
        default(obj, "/spec", "podInfoOnMount", json!(false));
        default(obj, "/spec", "storageCapacity", json!(false));
        default(obj, "/spec", "requiresRepublish", json!(false));
        default(obj, "/spec", "seLinuxMount", json!(false));
        default(
            obj,
            "/spec",
            "fsGroupPolicy",
            json!("ReadWriteOnceWithFSType"),
        );
        default(obj, "/spec", "volumeLifecycleModes", json!(["Persistent"]));
    }
}

/// Create-time preparation beyond defaults: PVs and PVCs start Pending (their strategies'
/// `PrepareForCreate`); the PV controller moves them on.
pub(super) fn prepare_create(rd: &ResourceDef, obj: &mut Value) {
    if is(rd, "", "PersistentVolume") {
        obj["status"] =
            json!({"phase": "Pending", "lastPhaseTransitionTime": crate::api::objects::now()});
    } else if is(rd, "", "PersistentVolumeClaim") {
        obj["status"] = json!({"phase": "Pending"});
    }
}

fn check_enum(obj: &Value, ptr: &str, field: &str, supported: &[&str], causes: &mut Vec<Cause>) {
    if let Some(v) = obj.pointer(ptr).and_then(Value::as_str) {
        if !supported.contains(&v) {
            causes.push(super::unsupported(field, v, supported));
        }
    }
}

/// `validateAccessModes` of PVs and PVCs (`field` is `spec.accessModes`).
fn validate_access_modes(spec: &Value, pvc: bool, causes: &mut Vec<Cause>) {
    let modes: Vec<&str> = spec
        .get("accessModes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if modes.is_empty() {
        let msg = if pvc {
            "Required value: at least 1 access mode is required"
        } else {
            "Required value"
        };
        causes.push(cause("FieldValueRequired", "spec.accessModes", msg));
        return;
    }
    for m in &modes {
        if !ACCESS_MODES.contains(m) {
            causes.push(super::unsupported("spec.accessModes", m, &ACCESS_MODES));
        }
    }
    if modes.contains(&"ReadWriteOncePod") && modes.len() > 1 {
        causes.push(cause(
            "FieldValueForbidden",
            "spec.accessModes",
            "Forbidden: may not use ReadWriteOncePod with other access modes",
        ));
    }
}

/// A storage quantity's text, and whether it is greater than zero.
fn positive_quantity(q: &Value) -> Option<(String, bool)> {
    let text = match q {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some((text, crate::controllers::quantity(q) > 0.0))
}

fn validate_pv(obj: &Value, causes: &mut Vec<Cause>) {
    let empty = json!({});
    let spec = obj.get("spec").unwrap_or(&empty);
    validate_access_modes(spec, false, causes);
    match spec.get("capacity").and_then(Value::as_object) {
        None => causes.push(cause(
            "FieldValueRequired",
            "spec.capacity",
            "Required value",
        )),
        Some(c) if c.is_empty() => causes.push(cause(
            "FieldValueRequired",
            "spec.capacity",
            "Required value",
        )),
        Some(c) => {
            if !c.contains_key("storage") || c.len() > 1 {
                let keys = c.keys().cloned().collect::<Vec<_>>().join(", ");
                causes.push(super::unsupported("spec.capacity", &keys, &["storage"]));
            }
            if let Some((text, false)) = c.get("storage").and_then(positive_quantity) {
                causes.push(cause(
                    "FieldValueInvalid",
                    "spec.capacity[storage]",
                    format!("Invalid value: \"{text}\": must be greater than zero"),
                ));
            }
        }
    }
    // Exactly one volume type, counted in upstream's order.
    let mut count = 0;
    for src in PV_SOURCES {
        if spec.get(src).is_some_and(|v| !v.is_null()) {
            count += 1;
            if count > 1 {
                causes.push(cause(
                    "FieldValueForbidden",
                    &format!("spec.{src}"),
                    "Forbidden: may not specify more than 1 volume type",
                ));
            }
        }
    }
    if count == 0 {
        causes.push(cause(
            "FieldValueRequired",
            "spec",
            "Required value: must specify a volume type",
        ));
    }
    if let Some(hp) = spec.get("hostPath") {
        if hp
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            causes.push(cause(
                "FieldValueRequired",
                "spec.hostPath.path",
                "Required value",
            ));
        }
        check_enum(
            spec,
            "/hostPath/type",
            "spec.hostPath.type",
            &[
                "",
                "BlockDevice",
                "CharDevice",
                "Directory",
                "DirectoryOrCreate",
                "File",
                "FileOrCreate",
                "Socket",
            ],
            causes,
        );
    }
    if let Some(l) = spec.get("local") {
        if l.get("path")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            causes.push(cause(
                "FieldValueRequired",
                "spec.local.path",
                "Required value",
            ));
        }
        if spec.get("nodeAffinity").is_none_or(Value::is_null) {
            causes.push(cause(
                "FieldValueRequired",
                "spec.nodeAffinity",
                "Required value: Local volume requires node affinity",
            ));
        }
    }
    check_enum(
        spec,
        "/persistentVolumeReclaimPolicy",
        "spec.persistentVolumeReclaimPolicy",
        &["Delete", "Recycle", "Retain"],
        causes,
    );
    check_volume_mode(spec, causes);
    if let Some(na) = spec.get("nodeAffinity").filter(|v| !v.is_null()) {
        let terms = na
            .pointer("/required/nodeSelectorTerms")
            .and_then(Value::as_array);
        if terms.is_none_or(|t| t.is_empty()) {
            causes.push(cause(
                "FieldValueRequired",
                "spec.nodeAffinity.required.nodeSelectorTerms",
                "Required value: must have at least one node selector term",
            ));
        }
    }
}

/// `spec.volumeMode` of volumes and claims (upstream's `ValidatePersistentVolumeMode` set).
fn check_volume_mode(spec: &Value, causes: &mut Vec<Cause>) {
    check_enum(
        spec,
        "/volumeMode",
        "spec.volumeMode",
        &["Block", "Filesystem"],
        causes,
    );
}

fn validate_pvc(obj: &Value, causes: &mut Vec<Cause>) {
    let empty = json!({});
    let spec = obj.get("spec").unwrap_or(&empty);
    validate_access_modes(spec, true, causes);
    match spec.pointer("/resources/requests/storage") {
        None | Some(Value::Null) => causes.push(cause(
            "FieldValueRequired",
            "spec.resources[storage]",
            "Required value",
        )),
        Some(q) => {
            if let Some((text, false)) = positive_quantity(q) {
                causes.push(cause(
                    "FieldValueInvalid",
                    "spec.resources[storage]",
                    format!("Invalid value: \"{text}\": must be greater than zero"),
                ));
            }
        }
    }
    check_volume_mode(spec, causes);
}

fn validate_storage_class(obj: &Value, causes: &mut Vec<Cause>) {
    if obj
        .get("provisioner")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        causes.push(cause("FieldValueRequired", "provisioner", "Required value"));
    }
    check_enum(
        obj,
        "/reclaimPolicy",
        "reclaimPolicy",
        &["Delete", "Retain"],
        causes,
    );
    check_enum(
        obj,
        "/volumeBindingMode",
        "volumeBindingMode",
        &["Immediate", "WaitForFirstConsumer"],
        causes,
    );
}

fn validate_volume_attachment(obj: &Value, causes: &mut Vec<Cause>) {
    for (ptr, field) in [
        ("/spec/attacher", "spec.attacher"),
        ("/spec/nodeName", "spec.nodeName"),
    ] {
        if obj
            .pointer(ptr)
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            causes.push(cause("FieldValueRequired", field, "Required value"));
        }
    }
    let src = obj.pointer("/spec/source");
    let pv = src
        .and_then(|s| s.get("persistentVolumeName"))
        .is_some_and(|v| !v.is_null());
    let inline = src
        .and_then(|s| s.get("inlineVolumeSpec"))
        .is_some_and(|v| !v.is_null());
    if pv == inline {
        causes.push(cause(
            "FieldValueRequired",
            "spec.source",
            "Required value: must specify exactly one of inlineVolumeSpec and persistentVolumeName",
        ));
    }
}

/// Validation of the whole object, on create and update.
pub(super) fn validate(rd: &ResourceDef, obj: &Value, causes: &mut Vec<Cause>) {
    if is(rd, "", "PersistentVolume") {
        validate_pv(obj, causes);
    } else if is(rd, "", "PersistentVolumeClaim") {
        validate_pvc(obj, causes);
    } else if is(rd, "storage.k8s.io", "StorageClass") {
        validate_storage_class(obj, causes);
    } else if is(rd, "storage.k8s.io", "VolumeAttachment") {
        validate_volume_attachment(obj, causes);
    } else if is(rd, "storage.k8s.io", "CSIDriver") {
        check_enum(
            obj,
            "/spec/fsGroupPolicy",
            "spec.fsGroupPolicy",
            &["File", "None", "ReadWriteOnceWithFSType"],
            causes,
        );
    }
}

fn pvc_update(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    let empty = json!({});
    let mut old_spec = old.get("spec").unwrap_or(&empty).clone();
    let mut new_spec = new.get("spec").unwrap_or(&empty).clone();
    let unset = |s: &Value, k: &str| s.get(k).is_none_or(|v| v.is_null() || v == "");
    // volumeName may be set once (the PV controller binds through it); a class may be
    // filled in once when there was none (retroactive default class assignment).
    if unset(&old_spec, "volumeName") {
        old_spec["volumeName"] = new_spec.get("volumeName").cloned().unwrap_or(Value::Null);
    }
    if old_spec.get("storageClassName").is_none_or(Value::is_null) {
        old_spec["storageClassName"] = new_spec
            .get("storageClassName")
            .cloned()
            .unwrap_or(Value::Null);
    }
    let bound = old.pointer("/status/phase").and_then(Value::as_str) == Some("Bound");
    if bound {
        if let Some(q) = old_spec.pointer("/resources/requests/storage").cloned() {
            if let Some(r) = new_spec
                .pointer_mut("/resources/requests")
                .and_then(Value::as_object_mut)
            {
                r.insert("storage".into(), q);
            }
        }
    }
    let strip_nulls = |v: &mut Value| {
        if let Some(m) = v.as_object_mut() {
            m.retain(|_, x| !x.is_null());
        }
    };
    strip_nulls(&mut old_spec);
    strip_nulls(&mut new_spec);
    if old_spec != new_spec {
        causes.push(cause(
            "FieldValueForbidden",
            "spec",
            "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
    let size = |o: &Value| {
        o.pointer("/spec/resources/requests/storage")
            .map(crate::controllers::quantity)
    };
    if let (Some(a), Some(b)) = (size(old), size(new)) {
        if b < a {
            causes.push(cause(
                "FieldValueForbidden",
                "spec.resources.requests.storage",
                "Forbidden: field can not be less than previous value",
            ));
        }
    }
}

fn pv_update(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    let source = |o: &Value| -> Vec<(String, Value)> {
        PV_SOURCES
            .iter()
            .filter_map(|s| {
                o.pointer(&format!("/spec/{s}"))
                    .filter(|v| !v.is_null())
                    .map(|v| (s.to_string(), v.clone()))
            })
            .collect()
    };
    if source(old) != source(new) {
        causes.push(cause(
            "FieldValueForbidden",
            "spec.persistentvolumesource",
            "Forbidden: spec.persistentvolumesource is immutable after creation",
        ));
    }
    super::immutable(old, new, "/spec/volumeMode", "volumeMode", causes);
    if old
        .pointer("/spec/nodeAffinity")
        .is_some_and(|v| !v.is_null())
    {
        super::immutable(old, new, "/spec/nodeAffinity", "nodeAffinity", causes);
    }
}

/// Update-only rules (immutable fields).
pub(super) fn validate_update(rd: &ResourceDef, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    if is(rd, "", "PersistentVolumeClaim") {
        pvc_update(old, new, causes);
    } else if is(rd, "", "PersistentVolume") {
        pv_update(old, new, causes);
    } else if is(rd, "storage.k8s.io", "StorageClass") {
        if old.get("parameters") != new.get("parameters") {
            causes.push(cause(
                "FieldValueForbidden",
                "parameters",
                "Forbidden: updates to parameters are forbidden.",
            ));
        }
        if old.get("provisioner") != new.get("provisioner") {
            causes.push(cause(
                "FieldValueForbidden",
                "provisioner",
                "Forbidden: updates to provisioner are forbidden.",
            ));
        }
        if old.get("reclaimPolicy") != new.get("reclaimPolicy") {
            causes.push(cause(
                "FieldValueForbidden",
                "reclaimPolicy",
                "Forbidden: updates to reclaimPolicy are forbidden.",
            ));
        }
        super::immutable(old, new, "/volumeBindingMode", "volumeBindingMode", causes);
    } else if is(rd, "storage.k8s.io", "CSIDriver") {
        for f in [
            "attachRequired",
            "podInfoOnMount",
            "volumeLifecycleModes",
            "fsGroupPolicy",
        ] {
            super::immutable(
                old,
                new,
                &format!("/spec/{f}"),
                &format!("spec.{f}"),
                causes,
            );
        }
    } else if is(rd, "storage.k8s.io", "VolumeAttachment") {
        super::immutable(old, new, "/spec", "spec", causes);
    }
}

use crate::controllers::volumes::{PVC_PROTECTION, PV_PROTECTION};

fn add_finalizer(obj: &mut Value, f: &str) {
    let meta = &mut obj["metadata"];
    if !meta.get("finalizers").is_some_and(Value::is_array) {
        meta["finalizers"] = json!([]);
    }
    if let Some(list) = meta["finalizers"].as_array_mut() {
        if !list.iter().any(|x| x == f) {
            list.push(json!(f));
        }
    }
}

/// Admission on create: StorageObjectInUseProtection (the protection finalizers) and
/// DefaultStorageClass (a claim that names no class — the field absent; `""` explicitly asks for
/// none — gets the default class, when there is one).
pub(super) fn admit_create(
    core: &Core,
    rd: &ResourceDef,
    _ns: Option<&str>,
    obj: &mut Value,
) -> ApiResult<()> {
    if is(rd, "", "PersistentVolume") {
        add_finalizer(obj, PV_PROTECTION);
    }
    if !is(rd, "", "PersistentVolumeClaim") {
        return Ok(());
    }
    add_finalizer(obj, PVC_PROTECTION);
    let has_class = obj
        .pointer("/spec/storageClassName")
        .is_some_and(|v| !v.is_null());
    let beta = obj
        .pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
        .is_some();
    if has_class || beta {
        return Ok(());
    }
    if let Some(name) = crate::controllers::volumes::default_class(core) {
        obj["spec"]["storageClassName"] = json!(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    fn rd(group: &str, plural: &str) -> &'static ResourceDef {
        registry::RESOURCES
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .expect("served")
    }

    fn msgs(causes: &[Cause]) -> Vec<String> {
        causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn pv_defaults_and_validation() {
        let pv = rd("", "persistentvolumes");
        let mut o = json!({"metadata": {"name": "a"}, "spec": {"capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/d"}}});
        defaults(pv, &mut o);
        assert_eq!(o["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(o["spec"]["volumeMode"], "Filesystem");
        assert_eq!(o["spec"]["hostPath"]["type"], "");
        let mut c = vec![];
        validate(pv, &o, &mut c);
        assert!(c.is_empty(), "{:?}", msgs(&c));
        let mut c = vec![];
        validate(
            pv,
            &json!({"spec": {"nfs": {"server": "x", "path": "/"}, "hostPath": {"path": "/d"}, "accessModes": ["Bogus"], "persistentVolumeReclaimPolicy": "Keep"}}),
            &mut c,
        );
        assert_eq!(
            msgs(&c),
            vec![
                "spec.accessModes: Unsupported value: \"Bogus\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"",
                "spec.capacity: Required value",
                "spec.nfs: Forbidden: may not specify more than 1 volume type",
                "spec.persistentVolumeReclaimPolicy: Unsupported value: \"Keep\": supported values: \"Delete\", \"Recycle\", \"Retain\"",
            ]
        );
        let mut c = vec![];
        validate(
            pv,
            &json!({"spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}}),
            &mut c,
        );
        assert_eq!(
            msgs(&c),
            vec!["spec: Required value: must specify a volume type"]
        );
    }

    #[test]
    fn pvc_update_rules() {
        let pvc = rd("", "persistentvolumeclaims");
        let old = json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "volumeMode": "Filesystem"}, "status": {"phase": "Pending"}});
        // Binding sets volumeName and a missing class once.
        let mut new = old.clone();
        new["spec"]["volumeName"] = json!("pv1");
        new["spec"]["storageClassName"] = json!("standard");
        let mut c = vec![];
        validate_update(pvc, &old, &new, &mut c);
        assert!(c.is_empty(), "{:?}", msgs(&c));
        // A bound claim may grow, not shrink, and nothing else changes.
        let mut bound = new.clone();
        bound["status"]["phase"] = json!("Bound");
        let mut grown = bound.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        let mut c = vec![];
        validate_update(pvc, &bound, &grown, &mut c);
        assert!(c.is_empty(), "{:?}", msgs(&c));
        let mut shrunk = bound.clone();
        shrunk["spec"]["resources"]["requests"]["storage"] = json!("1Mi");
        let mut c = vec![];
        validate_update(pvc, &bound, &shrunk, &mut c);
        assert_eq!(
            msgs(&c),
            vec!["spec.resources.requests.storage: Forbidden: field can not be less than previous value"]
        );
        let mut moved = bound.clone();
        moved["spec"]["volumeName"] = json!("pv2");
        let mut c = vec![];
        validate_update(pvc, &bound, &moved, &mut c);
        assert_eq!(msgs(&c), vec!["spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"]);
    }

    #[test]
    fn storage_class_rules() {
        let sc = rd("storage.k8s.io", "storageclasses");
        let mut o = json!({"metadata": {"name": "s"}, "provisioner": "x.io/p"});
        defaults(sc, &mut o);
        assert_eq!(o["reclaimPolicy"], "Delete");
        assert_eq!(o["volumeBindingMode"], "Immediate");
        let mut n = o.clone();
        n["provisioner"] = json!("y.io/p");
        n["volumeBindingMode"] = json!("WaitForFirstConsumer");
        let mut c = vec![];
        validate_update(sc, &o, &n, &mut c);
        assert_eq!(
            msgs(&c),
            vec![
                "provisioner: Forbidden: updates to provisioner are forbidden.",
                "volumeBindingMode: Invalid value: \"WaitForFirstConsumer\": field is immutable",
            ]
        );
        let mut c = vec![];
        validate(sc, &json!({"reclaimPolicy": "Recycle"}), &mut c);
        assert_eq!(
            msgs(&c),
            vec![
                "provisioner: Required value",
                "reclaimPolicy: Unsupported value: \"Recycle\": supported values: \"Delete\", \"Retain\"",
            ]
        );
    }
}
