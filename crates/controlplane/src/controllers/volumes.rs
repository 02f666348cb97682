//! The PersistentVolume controller (upstream's pkg/controller/volume/persistentvolume) with a
//! built-in dynamic provisioner for local clusters (what kind and k3s ship as
//! local-path-provisioner).
//!
//! Binding: a claim naming a volume (`spec.volumeName`) or named by a volume's `claimRef` is bound
//! to it; otherwise, for `Immediate` classes, to the smallest Available volume of its class whose
//! access modes, capacity, volumeMode and the claim's selector fit. Both sides are written as
//! upstream writes them (`pv.spec.claimRef`, `pvc.spec.volumeName`, annotations
//! `pv.kubernetes.io/bind-completed` and `pv.kubernetes.io/bound-by-controller`, phases
//! Available/Bound/Released/Lost). A volume whose claim is gone is Released and then reclaimed:
//! `Retain` keeps it, `Delete` deletes the object.
//!
//! `WaitForFirstConsumer` claims wait (event `WaitForFirstConsumer`) until the scheduler picks a
//! node for a pod using them: it pre-binds a fitting static volume, or writes
//! `volume.kubernetes.io/selected-node` on the claim, and the provisioner below then makes the
//! volume. The `rktup.io/local-path` provisioner makes a `hostPath` volume (type
//! DirectoryOrCreate) at `<root>/pvc-<claim uid>_<namespace>_<claim>` with node affinity to that
//! node, where `<root>` is what the node's agent announced in its Node's
//! `rktup.io/local-path-root` annotation: the node owns the directories (it creates one when a pod
//! first mounts it and removes those whose volume was deleted under the Delete policy), the
//! control plane only the objects.

use super::scheduler::match_expr;
use super::{list, rd, record_event, set_status, uid, Settings};
use crate::api::error::ApiError;
use crate::api::objects::{meta_str, Core, DeleteOptions, WriteCtx};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The built-in provisioner's name (a StorageClass's `provisioner`).
pub const LOCAL_PATH_PROVISIONER: &str = "rktup.io/local-path";
/// Node annotation: the directory under which the node keeps its local-path volumes.
pub const LOCAL_PATH_ROOT_ANNOTATION: &str = "rktup.io/local-path-root";
/// The default StorageClass made at start.
pub const DEFAULT_CLASS: &str = "standard";
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The finalizers of upstream's StorageObjectInUseProtection admission (added on create): a claim
/// in use by a pod, or a bound volume, is not removed until this controller lets it go.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
const BETA_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
const MANAGER: &str = "persistentvolume-binder-controller";

/// Events already recorded, by (object uid, reason), so a waiting claim gets one of each rather
/// than one per pass.
static RECORDED: Mutex<Option<HashSet<(String, String)>>> = Mutex::new(None);

fn event_once(core: &Core, obj: &Value, kind: &str, ty: &str, reason: &str, msg: &str) {
    let key = (uid(obj).to_string(), format!("{reason}:{msg}"));
    if let Ok(mut g) = RECORDED.lock() {
        if !g.get_or_insert_with(HashSet::new).insert(key) {
            return;
        }
    }
    record_event(core, obj, kind, ty, reason, msg, MANAGER);
}

/// Makes the default StorageClass `standard` (local-path, WaitForFirstConsumer, Delete) when no
/// class of that name exists. A user's `standard` is left alone; when another class is already
/// the default, the new one is not marked default (two defaults would make the newest win).
pub(crate) fn ensure_default_class(core: &Core) {
    let r = rd("storage.k8s.io", "storageclasses");
    if core.get_stored(r, None, DEFAULT_CLASS).is_some() {
        return;
    }
    let other_default = list(core, "storage.k8s.io", "storageclasses", None)
        .iter()
        .any(|sc| is_default_class(sc));
    let mut meta = json!({"name": DEFAULT_CLASS});
    if !other_default {
        meta["annotations"] = json!({"storageclass.kubernetes.io/is-default-class": "true"});
    }
    let sc = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": meta,
        "provisioner": LOCAL_PATH_PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    });
    let mut ctx = WriteCtx::controller("kube-apiserver");
    if let Err(e) = core.create(r, None, sc, &mut ctx) {
        if e.reason != "AlreadyExists" {
            tracing::warn!("default storage class: {}", e.message);
        }
    }
}

/// Whether a StorageClass carries the default-class annotation.
pub(crate) fn is_default_class(sc: &Value) -> bool {
    [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|a| {
        sc.pointer("/metadata/annotations")
            .and_then(|m| m.get(*a))
            .and_then(Value::as_str)
            == Some("true")
    })
}

/// The default StorageClass's name: of several, the newest (then by name), as upstream's
/// `GetDefaultClass` since 1.26.
pub(crate) fn default_class(core: &Core) -> Option<String> {
    list(core, "storage.k8s.io", "storageclasses", None)
        .iter()
        .map(|s| &**s)
        .filter(|sc| is_default_class(sc))
        .max_by(|a, b| {
            meta_str(a, "creationTimestamp")
                .cmp(meta_str(b, "creationTimestamp"))
                .then_with(|| meta_str(b, "name").cmp(meta_str(a, "name")))
        })
        .map(|sc| meta_str(sc, "name").to_string())
}

fn annotation<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn str_at<'a>(o: &'a Value, ptr: &str) -> &'a str {
    o.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// A claim's class (`spec.storageClassName`, else the beta annotation; "" for none).
pub(crate) fn claim_class(pvc: &Value) -> &str {
    match pvc
        .pointer("/spec/storageClassName")
        .and_then(Value::as_str)
    {
        Some(c) => c,
        None => annotation(pvc, BETA_CLASS).unwrap_or(""),
    }
}

fn pv_class(pv: &Value) -> &str {
    match pv.pointer("/spec/storageClassName").and_then(Value::as_str) {
        Some(c) => c,
        None => annotation(pv, BETA_CLASS).unwrap_or(""),
    }
}

fn modes(o: &Value) -> Vec<&str> {
    o.pointer("/spec/accessModes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn volume_mode(o: &Value) -> &str {
    match str_at(o, "/spec/volumeMode") {
        "" => "Filesystem",
        m => m,
    }
}

fn requested(pvc: &Value) -> f64 {
    pvc.pointer("/spec/resources/requests/storage")
        .map(super::quantity)
        .unwrap_or(0.0)
}

fn capacity(pv: &Value) -> f64 {
    pv.pointer("/spec/capacity/storage")
        .map(super::quantity)
        .unwrap_or(0.0)
}

/// A label selector (matchLabels, matchExpressions) against `labels`.
fn selector_matches(sel: Option<&Value>, labels: Option<&Value>) -> bool {
    let Some(sel) = sel.filter(|s| !s.is_null()) else {
        return true;
    };
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            if labels.and_then(|l| l.get(k)) != Some(v) {
                return false;
            }
        }
    }
    sel.get("matchExpressions")
        .and_then(Value::as_array)
        .is_none_or(|es| es.iter().all(|e| match_expr(labels, e)))
}

/// Whether `pv` can serve `pvc` (upstream's `checkVolumeSatisfyClaim` plus the selector): same
/// class and volumeMode, enough capacity, every requested access mode.
fn satisfies(pv: &Value, pvc: &Value) -> Result<(), String> {
    if capacity(pv) < requested(pvc) {
        return Err("requested PV is too small".into());
    }
    if pv_class(pv) != claim_class(pvc) {
        return Err("storageClassName does not match".into());
    }
    if volume_mode(pv) != volume_mode(pvc) {
        return Err("incompatible volumeMode".into());
    }
    let have = modes(pv);
    if !modes(pvc).iter().all(|m| have.contains(m)) {
        return Err("incompatible accessMode".into());
    }
    Ok(())
}

/// Whether the volume's required node affinity admits `node` (none admits every node).
pub(crate) fn pv_fits_node(pv: &Value, node: &Value) -> bool {
    let Some(terms) = pv
        .pointer("/spec/nodeAffinity/required/nodeSelectorTerms")
        .and_then(Value::as_array)
    else {
        return true;
    };
    let labels = node.pointer("/metadata/labels");
    let fields = json!({"metadata.name": meta_str(node, "name")});
    terms.iter().any(|t| {
        t["matchExpressions"]
            .as_array()
            .is_none_or(|es| es.iter().all(|e| match_expr(labels, e)))
            && t["matchFields"]
                .as_array()
                .is_none_or(|es| es.iter().all(|e| match_expr(Some(&fields), e)))
    })
}

/// Whether the volume's claimRef names this claim (by namespace and name, and uid when set).
fn claim_ref_is(pv: &Value, pvc: &Value) -> bool {
    let r = pv.pointer("/spec/claimRef");
    let Some(r) = r.filter(|r| r.is_object()) else {
        return false;
    };
    str_at(r, "/namespace") == meta_str(pvc, "namespace")
        && str_at(r, "/name") == meta_str(pvc, "name")
        && (str_at(r, "/uid").is_empty() || str_at(r, "/uid") == uid(pvc))
}

fn has_claim_ref(pv: &Value) -> bool {
    pv.pointer("/spec/claimRef").is_some_and(Value::is_object)
}

/// The smallest Available volume that can serve the claim, optionally only those admitting
/// `node`.
pub(crate) fn best_match<'a>(
    pvs: &'a [Arc<Value>],
    pvc: &Value,
    node: Option<&Value>,
) -> Option<&'a Value> {
    let sel = pvc.pointer("/spec/selector");
    pvs.iter()
        .map(|p| &**p)
        .filter(|pv| !super::deleting(pv) && !has_claim_ref(pv))
        .filter(|pv| satisfies(pv, pvc).is_ok())
        .filter(|pv| selector_matches(sel, pv.pointer("/metadata/labels")))
        .filter(|pv| node.is_none_or(|n| pv_fits_node(pv, n)))
        .min_by(|a, b| capacity(a).total_cmp(&capacity(b)))
}

fn claim_ref_of(pvc: &Value) -> Value {
    json!({
        "kind": "PersistentVolumeClaim", "apiVersion": "v1",
        "namespace": meta_str(pvc, "namespace"), "name": meta_str(pvc, "name"),
        "uid": uid(pvc), "resourceVersion": meta_str(pvc, "resourceVersion"),
    })
}

/// Points `pv` at the claim (`claimRef`, marked bound-by-controller), unless it already does.
/// Used by the scheduler to pre-bind a WaitForFirstConsumer claim's volume, and by binding.
pub(crate) fn set_claim_ref(core: &Core, pv_name: &str, pvc: &Value, manager: &str) -> bool {
    let mut ctx = WriteCtx::controller(manager);
    core.modify(
        rd("", "persistentvolumes"),
        None,
        pv_name,
        None,
        &mut ctx,
        |cur| {
            if has_claim_ref(cur) && !claim_ref_is(cur, pvc) {
                return Err(ApiError::conflict(rd("", "persistentvolumes"), pv_name));
            }
            let mut o = cur.clone();
            if !claim_ref_is(cur, pvc) || str_at(cur, "/spec/claimRef/uid").is_empty() {
                if !claim_ref_is(cur, pvc) {
                    o["metadata"]["annotations"][BOUND_BY_CONTROLLER] = json!("yes");
                }
                o["spec"]["claimRef"] = claim_ref_of(pvc);
            }
            Ok(o)
        },
    )
    .is_ok()
}

/// Binds both sides: the volume's claimRef and phase, then the claim's volumeName,
/// annotations and status (capacity and access modes are the volume's).
fn bind(core: &Core, pv: &Value, pvc: &Value) {
    let pv_name = meta_str(pv, "name");
    if !set_claim_ref(core, pv_name, pvc, MANAGER) {
        return;
    }
    let pv_rd = rd("", "persistentvolumes");
    if let Some(cur) = core.get_stored(pv_rd, None, pv_name) {
        set_phase(core, "persistentvolumes", &cur.object, "Bound");
    }
    let pvc_rd = rd("", "persistentvolumeclaims");
    let ns = meta_str(pvc, "namespace");
    let mut ctx = WriteCtx::controller(MANAGER);
    let res = core.modify(
        pvc_rd,
        Some(ns),
        meta_str(pvc, "name"),
        None,
        &mut ctx,
        |cur| {
            if uid(cur) != uid(pvc) {
                return Err(ApiError::conflict(pvc_rd, meta_str(pvc, "name")));
            }
            let mut o = cur.clone();
            if str_at(cur, "/spec/volumeName").is_empty() {
                o["spec"]["volumeName"] = json!(pv_name);
                o["metadata"]["annotations"][BOUND_BY_CONTROLLER] = json!("yes");
            }
            o["metadata"]["annotations"][BIND_COMPLETED] = json!("yes");
            Ok(o)
        },
    );
    let Ok(cur) = res else { return };
    let mut st = cur.get("status").cloned().unwrap_or(json!({}));
    st["phase"] = json!("Bound");
    st["accessModes"] = pv
        .pointer("/spec/accessModes")
        .cloned()
        .unwrap_or(json!([]));
    st["capacity"] = pv.pointer("/spec/capacity").cloned().unwrap_or(json!({}));
    set_status(core, pvc_rd, &cur, st, MANAGER);
}

fn set_phase(core: &Core, plural: &str, obj: &Value, phase: &str) {
    if str_at(obj, "/status/phase") == phase {
        return;
    }
    let mut st = obj.get("status").cloned().unwrap_or(json!({}));
    st["phase"] = json!(phase);
    if plural == "persistentvolumes" {
        // Upstream stamps a volume's phase changes (GA in 1.31).
        st["lastPhaseTransitionTime"] = json!(crate::api::objects::now());
    }
    set_status(core, rd("", plural), obj, st, MANAGER);
}

/// Makes a local-path volume for the claim on `node_name`, pre-bound to the claim.
fn provision_local(core: &Core, pvc: &Value, sc: &Value, node_name: &str) {
    let pv_name = format!("pvc-{}", uid(pvc));
    if core
        .get_stored(rd("", "persistentvolumes"), None, &pv_name)
        .is_some()
    {
        return;
    }
    let fail = |msg: String| {
        event_once(
            core,
            pvc,
            "PersistentVolumeClaim",
            "Warning",
            "ProvisioningFailed",
            &msg,
        )
    };
    let wanted = modes(pvc);
    if wanted
        .iter()
        .any(|m| *m != "ReadWriteOnce" && *m != "ReadWriteOncePod")
    {
        return fail(format!("failed to provision volume with StorageClass \"{}\": NodePath only supports ReadWriteOnce and ReadWriteOncePod access modes", meta_str(sc, "name")));
    }
    // The selected node cannot hold the volume: the node choice is dropped so the scheduler
    // picks again (external-provisioner's reschedule).
    let reschedule = |msg: String| {
        fail(msg);
        edit_claim(core, pvc, MANAGER, |o| {
            if let Some(a) = o["metadata"]["annotations"].as_object_mut() {
                a.remove(SELECTED_NODE);
            }
        });
    };
    let Some(node) = core.get_stored(rd("", "nodes"), None, node_name) else {
        return reschedule(format!(
            "failed to provision volume with StorageClass \"{}\": node \"{node_name}\" not found",
            meta_str(sc, "name")
        ));
    };
    let node = &node.object;
    let Some(root) = annotation(node, LOCAL_PATH_ROOT_ANNOTATION).filter(|r| r.starts_with('/'))
    else {
        return reschedule(format!("failed to provision volume with StorageClass \"{}\": node \"{node_name}\" has no local-path root (annotation {LOCAL_PATH_ROOT_ANNOTATION}, set by its rktup agent)", meta_str(sc, "name")));
    };
    let hostname = node
        .pointer("/metadata/labels/kubernetes.io~1hostname")
        .and_then(Value::as_str)
        .unwrap_or(node_name);
    let ns = meta_str(pvc, "namespace");
    let path = format!(
        "{}/{pv_name}_{ns}_{}",
        root.trim_end_matches('/'),
        meta_str(pvc, "name")
    );
    let mut spec = json!({
        "capacity": {"storage": pvc.pointer("/spec/resources/requests/storage").cloned().unwrap_or(json!("0"))},
        "accessModes": wanted,
        "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy").cloned().unwrap_or(json!("Delete")),
        "storageClassName": meta_str(sc, "name"),
        "volumeMode": volume_mode(pvc),
        "hostPath": {"path": path, "type": "DirectoryOrCreate"},
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [hostname]}
        ]}]}},
        "claimRef": claim_ref_of(pvc),
    });
    if let Some(mo) = sc.get("mountOptions").filter(|m| !m.is_null()) {
        spec["mountOptions"] = mo.clone();
    }
    let pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "annotations": {
            PROVISIONED_BY: LOCAL_PATH_PROVISIONER,
            BOUND_BY_CONTROLLER: "yes",
            SELECTED_NODE: node_name,
        }},
        "spec": spec,
    });
    let mut ctx = WriteCtx::controller(MANAGER);
    match core.create(rd("", "persistentvolumes"), None, pv, &mut ctx) {
        Ok(_) => record_event(
            core,
            pvc,
            "PersistentVolumeClaim",
            "Normal",
            "ProvisioningSucceeded",
            &format!("Successfully provisioned volume {pv_name}"),
            MANAGER,
        ),
        Err(e) if e.reason == "AlreadyExists" => {}
        Err(e) => fail(format!(
            "failed to provision volume with StorageClass \"{}\": {}",
            meta_str(sc, "name"),
            e.message
        )),
    }
}

/// Rewrites the stored claim `pvc` with `edit`, as the controller `manager`; whether it was
/// written.
pub(crate) fn edit_claim(
    core: &Core,
    pvc: &Value,
    manager: &str,
    mut edit: impl FnMut(&mut Value),
) -> bool {
    let mut ctx = WriteCtx::controller(manager);
    core.modify(
        rd("", "persistentvolumeclaims"),
        Some(meta_str(pvc, "namespace")),
        meta_str(pvc, "name"),
        None,
        &mut ctx,
        |cur| {
            let mut o = cur.clone();
            edit(&mut o);
            Ok(o)
        },
    )
    .is_ok()
}

/// Writes `volume.kubernetes.io/storage-provisioner` (and the beta one) on the claim, as the
/// controller does before a provisioner acts.
fn set_provisioner_annotation(core: &Core, pvc: &Value, provisioner: &str) {
    if annotation(pvc, STORAGE_PROVISIONER) == Some(provisioner) {
        return;
    }
    edit_claim(core, pvc, MANAGER, |o| {
        o["metadata"]["annotations"][STORAGE_PROVISIONER] = json!(provisioner);
        o["metadata"]["annotations"][BETA_STORAGE_PROVISIONER] = json!(provisioner);
    });
}

/// A claim without a volume: bind, provision, or say why it waits.
fn sync_unbound_claim(
    core: &Core,
    pvc: &Value,
    pvs: &[Arc<Value>],
    classes: &[Arc<Value>],
    pods: &Pods,
) {
    let kind = "PersistentVolumeClaim";
    let wanted = str_at(pvc, "/spec/volumeName");
    if !wanted.is_empty() {
        let Some(pv) = pvs.iter().find(|p| meta_str(p, "name") == wanted) else {
            // Upstream waits for the named volume to appear.
            return set_phase(core, "persistentvolumeclaims", pvc, "Pending");
        };
        if has_claim_ref(pv) && !claim_ref_is(pv, pvc) {
            event_once(
                core,
                pvc,
                kind,
                "Warning",
                "FailedBinding",
                &format!("volume \"{wanted}\" already bound to a different claim."),
            );
            return set_phase(core, "persistentvolumeclaims", pvc, "Pending");
        }
        if let Err(why) = satisfies(pv, pvc) {
            event_once(
                core,
                pvc,
                kind,
                "Warning",
                "VolumeMismatch",
                &format!("Cannot bind to requested volume \"{wanted}\": {why}"),
            );
            return set_phase(core, "persistentvolumeclaims", pvc, "Pending");
        }
        return bind(core, pv, pvc);
    }
    // A volume pre-bound to this claim (by a user, the scheduler or the provisioner).
    if let Some(pv) = pvs
        .iter()
        .find(|p| !super::deleting(p) && claim_ref_is(p, pvc))
    {
        return bind(core, pv, pvc);
    }
    let class_name = claim_class(pvc);
    let sc = classes.iter().find(|c| meta_str(c, "name") == class_name);
    let delayed = sc.is_some_and(|c| str_at(c, "/volumeBindingMode") == "WaitForFirstConsumer");
    if !delayed {
        if let Some(pv) = best_match(pvs, pvc, None) {
            return bind(core, pv, pvc);
        }
    }
    set_phase(core, "persistentvolumeclaims", pvc, "Pending");
    // What the binder says when nothing will provision (no class, or a no-provisioner one).
    let no_volume = || {
        event_once(
            core,
            pvc,
            kind,
            "Normal",
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set",
        )
    };
    if class_name.is_empty() {
        return no_volume();
    }
    let Some(sc) = sc else {
        return event_once(
            core,
            pvc,
            kind,
            "Warning",
            "ProvisioningFailed",
            &format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
        );
    };
    let selected = annotation(pvc, SELECTED_NODE);
    if delayed && selected.is_none() {
        // A pod given its node directly (nodeName, bypassing the scheduler) is the first
        // consumer: its node is the one the volume must be on.
        if let Some(node) = pods.placed_user(pvc) {
            if let Some(pv) = core
                .get_stored(rd("", "nodes"), None, &node)
                .and_then(|n| best_match(pvs, pvc, Some(&n.object)).cloned())
            {
                return bind(core, &pv, pvc);
            }
            edit_claim(core, pvc, MANAGER, |o| {
                o["metadata"]["annotations"][SELECTED_NODE] = json!(node);
            });
            return;
        }
        return event_once(
            core,
            pvc,
            kind,
            "Normal",
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding",
        );
    }
    let provisioner = str_at(sc, "/provisioner");
    if provisioner == NO_PROVISIONER {
        return no_volume();
    }
    set_provisioner_annotation(core, pvc, provisioner);
    if provisioner != LOCAL_PATH_PROVISIONER {
        return event_once(core, pvc, kind, "Normal", "ExternalProvisioning", &format!("Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."));
    }
    match selected {
        Some(node) => provision_local(core, pvc, sc, node),
        None => event_once(
            core,
            pvc,
            kind,
            "Warning",
            "ProvisioningFailed",
            &format!("failed to provision volume with StorageClass \"{class_name}\": configuration error, no node was specified"),
        ),
    }
}

/// A volume: Available, Bound, or Released and then reclaimed.
fn sync_volume(core: &Core, pv: &Value, pvcs: &[Arc<Value>]) {
    if super::deleting(pv) {
        return;
    }
    if !has_claim_ref(pv) {
        return set_phase(core, "persistentvolumes", pv, "Available");
    }
    let ns = str_at(pv, "/spec/claimRef/namespace");
    let name = str_at(pv, "/spec/claimRef/name");
    let ref_uid = str_at(pv, "/spec/claimRef/uid");
    let claim = pvcs
        .iter()
        .find(|c| meta_str(c, "namespace") == ns && meta_str(c, "name") == name);
    if ref_uid.is_empty() {
        // Pre-bound by a user to a claim that may not exist yet.
        return set_phase(core, "persistentvolumes", pv, "Available");
    }
    match claim.filter(|c| uid(c) == ref_uid) {
        Some(c) => {
            let bound_here = str_at(c, "/spec/volumeName") == meta_str(pv, "name");
            let bound_elsewhere = !bound_here && !str_at(c, "/spec/volumeName").is_empty();
            if bound_here {
                set_phase(core, "persistentvolumes", pv, "Bound");
            } else if bound_elsewhere && annotation(pv, BOUND_BY_CONTROLLER) == Some("yes") {
                // The claim went to another volume: this one is free again.
                let mut ctx = WriteCtx::controller(MANAGER);
                let _ = core.modify(
                    rd("", "persistentvolumes"),
                    None,
                    meta_str(pv, "name"),
                    None,
                    &mut ctx,
                    |cur| {
                        let mut o = cur.clone();
                        if let Some(s) = o["spec"].as_object_mut() {
                            s.remove("claimRef");
                        }
                        if let Some(a) = o["metadata"]["annotations"].as_object_mut() {
                            a.remove(BOUND_BY_CONTROLLER);
                        }
                        Ok(o)
                    },
                );
            }
        }
        None => {
            // The claim is gone: Released, then the reclaim policy.
            set_phase(core, "persistentvolumes", pv, "Released");
            match str_at(pv, "/spec/persistentVolumeReclaimPolicy") {
                "Delete" => {
                    let r = core.delete(
                        rd("", "persistentvolumes"),
                        None,
                        meta_str(pv, "name"),
                        &DeleteOptions {
                            precondition_uid: Some(uid(pv).to_string()),
                            ..Default::default()
                        },
                    );
                    if let Err(e) = r {
                        if e.reason != "NotFound" {
                            event_once(
                                core,
                                pv,
                                "PersistentVolume",
                                "Warning",
                                "VolumeFailedDelete",
                                &e.message,
                            );
                        }
                    }
                }
                "Recycle" => event_once(
                    core,
                    pv,
                    "PersistentVolume",
                    "Warning",
                    "VolumeFailedRecycle",
                    "Recycle is not supported: use Delete with dynamic provisioning",
                ),
                _ => {}
            }
        }
    }
}

/// The pods, listed once per pass when a waiting claim needs them.
struct Pods<'a> {
    core: &'a Core,
    all: std::cell::OnceCell<Vec<Arc<Value>>>,
}

impl Pods<'_> {
    /// The node of an unfinished pod that uses the claim and is already on a node.
    fn all(&self) -> &[Arc<Value>] {
        self.all.get_or_init(|| list(self.core, "", "pods", None))
    }

    fn placed_user(&self, pvc: &Value) -> Option<String> {
        self.all()
            .iter()
            .filter(|p| claim_in_use(std::slice::from_ref(p), pvc))
            .map(|p| str_at(p, "/spec/nodeName"))
            .find(|n| !n.is_empty())
            .map(String::from)
    }
}

/// Besides its own kinds, the controller wakes when a pod comes (its ephemeral volumes' claims
/// are made) or goes (a deleted claim it used may go).
pub(crate) fn pod_added_or_deleted(ev: &crate::store::Event) -> bool {
    ev.kind != crate::store::EventType::Modified && ev.key.starts_with("/registry/core/pods/")
}

/// Removes `finalizer` from the object (the protection controllers' last step).
fn release(core: &Core, plural: &str, obj: &Value, finalizer: &str) {
    let mut ctx = WriteCtx::controller(MANAGER);
    let ns = meta_str(obj, "namespace");
    let _ = core.modify(
        rd("", plural),
        (!ns.is_empty()).then_some(ns),
        meta_str(obj, "name"),
        None,
        &mut ctx,
        |cur| {
            let mut o = cur.clone();
            if let Some(list) = o
                .pointer_mut("/metadata/finalizers")
                .and_then(Value::as_array_mut)
            {
                list.retain(|f| f != finalizer);
            }
            Ok(o)
        },
    );
}

fn has_finalizer(o: &Value, f: &str) -> bool {
    o.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|x| x == f))
}

/// Whether a pod that has not finished uses the claim (upstream's pvc-protection controller).
fn claim_in_use(pods: &[Arc<Value>], pvc: &Value) -> bool {
    pods.iter().any(|p| {
        let phase = str_at(p, "/status/phase");
        meta_str(p, "namespace") == meta_str(pvc, "namespace")
            && phase != "Succeeded"
            && phase != "Failed"
            && pod_claims(p)
                .iter()
                .any(|c| c.name == meta_str(pvc, "name"))
    })
}

/// A claim a pod's volume uses.
pub(crate) struct PodClaim {
    pub name: String,
    /// A generic ephemeral volume's claim (`<pod>-<volume>`, made for and owned by the pod).
    pub ephemeral: bool,
}

/// The claims of a pod's `persistentVolumeClaim` and `ephemeral` volumes.
pub(crate) fn pod_claims(pod: &Value) -> Vec<PodClaim> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            if let Some(c) = v
                .pointer("/persistentVolumeClaim/claimName")
                .and_then(Value::as_str)
            {
                return Some(PodClaim {
                    name: c.to_string(),
                    ephemeral: false,
                });
            }
            v.get("ephemeral")
                .filter(|e| e.is_object())
                .map(|_| PodClaim {
                    name: format!("{}-{}", meta_str(pod, "name"), str_at(v, "/name")),
                    ephemeral: true,
                })
        })
        .collect()
}

/// Whether `pvc` is owned by `pod` (an ephemeral volume's claim must be: upstream's
/// `ephemeral.VolumeIsForPod`), else upstream's error text.
pub(crate) fn claim_is_for_pod(pod: &Value, pvc: &Value) -> Result<(), String> {
    let owned = pvc
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|rs| rs.iter().any(|r| str_at(r, "/uid") == uid(pod)));
    if owned {
        Ok(())
    } else {
        Err(format!(
            "PVC {}/{} was not created for pod {}/{} (pod is not owner)",
            meta_str(pvc, "namespace"),
            meta_str(pvc, "name"),
            meta_str(pod, "namespace"),
            meta_str(pod, "name")
        ))
    }
}

/// The ephemeral volume controller (upstream's pkg/controller/volume/ephemeral): each
/// `ephemeral` volume of a pod gets its claim `<pod>-<volume>` from the volume's
/// `volumeClaimTemplate`, owned by the pod (so the garbage collector deletes it with the pod).
fn ephemeral_claims(core: &Core, pods: &[Arc<Value>], pvcs: &[Arc<Value>]) {
    for pod in pods.iter().filter(|p| super::pod_active(p)) {
        let ns = meta_str(pod, "namespace");
        for v in pod
            .pointer("/spec/volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(tmpl) = v.pointer("/ephemeral/volumeClaimTemplate") else {
                continue;
            };
            let name = format!("{}-{}", meta_str(pod, "name"), str_at(v, "/name"));
            if pvcs
                .iter()
                .any(|c| meta_str(c, "namespace") == ns && meta_str(c, "name") == name)
            {
                continue;
            }
            let mut meta = json!({
                "name": name, "namespace": ns,
                "ownerReferences": [super::owner_ref(pod, "Pod", "v1")],
            });
            for k in ["labels", "annotations"] {
                if let Some(m) = tmpl
                    .pointer(&format!("/metadata/{k}"))
                    .filter(|m| m.is_object())
                {
                    meta[k] = m.clone();
                }
            }
            let pvc = json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
                "spec": tmpl.get("spec").cloned().unwrap_or(json!({})),
            });
            let mut ctx = WriteCtx::controller("ephemeral-volume-controller");
            if let Err(e) = core.create(rd("", "persistentvolumeclaims"), Some(ns), pvc, &mut ctx) {
                if e.reason != "AlreadyExists" {
                    event_once(
                        core,
                        pod,
                        "Pod",
                        "Warning",
                        "FailedBinding",
                        &format!("create PVC {name}: {}", e.message),
                    );
                }
            }
        }
    }
}

/// The protection controllers: a deleted claim goes once no unfinished pod uses it, a deleted
/// volume once it is not Bound.
fn protection(core: &Core, pvs: &[Arc<Value>], pvcs: &[Arc<Value>]) {
    let deleting_claims: Vec<&Arc<Value>> = pvcs
        .iter()
        .filter(|c| super::deleting(c) && has_finalizer(c, PVC_PROTECTION))
        .collect();
    if !deleting_claims.is_empty() {
        let pods = list(core, "", "pods", None);
        for c in deleting_claims {
            if !claim_in_use(&pods, c) {
                release(core, "persistentvolumeclaims", c, PVC_PROTECTION);
            }
        }
    }
    for pv in pvs {
        if super::deleting(pv)
            && has_finalizer(pv, PV_PROTECTION)
            && str_at(pv, "/status/phase") != "Bound"
        {
            release(core, "persistentvolumes", pv, PV_PROTECTION);
        }
    }
}

pub fn pass(core: &Core, _s: &Settings) {
    let pvs = list(core, "", "persistentvolumes", None);
    let pvcs = list(core, "", "persistentvolumeclaims", None);
    protection(core, &pvs, &pvcs);
    let classes = list(core, "storage.k8s.io", "storageclasses", None);
    // Volumes first: their status writes come from this pass's snapshot, and binding below
    // re-reads what it changes.
    for pv in &pvs {
        sync_volume(core, pv, &pvcs);
    }
    let default = default_class(core);
    let pods = Pods {
        core,
        all: std::cell::OnceCell::new(),
    };
    ephemeral_claims(core, pods.all(), &pvcs);
    // Recorded events are forgotten with their objects.
    if let Ok(mut g) = RECORDED.lock() {
        if let Some(s) = g.as_mut() {
            let live: HashSet<&str> = pvcs
                .iter()
                .chain(pvs.iter())
                .chain(pods.all().iter())
                .map(|o| uid(o))
                .collect();
            s.retain(|(u, _)| live.contains(u.as_str()));
        }
    }
    for pvc in &pvcs {
        if super::deleting(pvc) {
            continue;
        }
        // Retroactive default class assignment (upstream since 1.28): a claim made before any
        // default class existed gets it, as long as it is unbound.
        let classless = pvc
            .pointer("/spec/storageClassName")
            .is_none_or(Value::is_null)
            && annotation(pvc, BETA_CLASS).is_none();
        if classless && str_at(pvc, "/spec/volumeName").is_empty() {
            if let Some(d) = &default {
                edit_claim(core, pvc, MANAGER, |o| {
                    if o.pointer("/spec/storageClassName")
                        .is_none_or(Value::is_null)
                    {
                        o["spec"]["storageClassName"] = json!(d);
                    }
                });
                continue;
            }
        }
        let vol = str_at(pvc, "/spec/volumeName");
        let completed = annotation(pvc, BIND_COMPLETED) == Some("yes");
        if completed && !vol.is_empty() {
            match pvs.iter().find(|p| meta_str(p, "name") == vol) {
                Some(pv) if claim_ref_is(pv, pvc) => {
                    if str_at(pvc, "/status/phase") != "Bound" {
                        bind(core, pv, pvc);
                    }
                }
                _ => {
                    if str_at(pvc, "/status/phase") != "Lost" {
                        set_phase(core, "persistentvolumeclaims", pvc, "Lost");
                        event_once(
                            core,
                            pvc,
                            "PersistentVolumeClaim",
                            "Warning",
                            "ClaimLost",
                            "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                        );
                    }
                }
            }
            continue;
        }
        sync_unbound_claim(core, pvc, &pvs, &classes, &pods);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_picks_the_smallest_fitting_volume() {
        let pv = |name: &str, size: &str, modes: Value, class: &str, labels: Value| {
            Arc::new(
                json!({"metadata": {"name": name, "labels": labels}, "spec": {
                "capacity": {"storage": size}, "accessModes": modes, "storageClassName": class,
                "volumeMode": "Filesystem", "hostPath": {"path": "/x"}}}),
            )
        };
        let pvs = vec![
            pv("big", "10Gi", json!(["ReadWriteOnce"]), "", json!({})),
            pv("small", "1Gi", json!(["ReadWriteOnce"]), "", json!({})),
            pv("tiny", "100Mi", json!(["ReadWriteOnce"]), "", json!({})),
            pv(
                "ro",
                "2Gi",
                json!(["ReadOnlyMany"]),
                "",
                json!({"tier": "gold"}),
            ),
            pv("fast", "1Gi", json!(["ReadWriteOnce"]), "fast", json!({})),
        ];
        let claim = |size: &str, modes: Value, class: Value, sel: Value| {
            json!({"metadata": {"name": "c", "namespace": "d", "uid": "u"}, "spec": {
                "accessModes": modes, "resources": {"requests": {"storage": size}},
                "storageClassName": class, "selector": sel, "volumeMode": "Filesystem"}})
        };
        let name = |v: Option<&Value>| v.map(|v| meta_str(v, "name").to_string());
        let c = claim("500Mi", json!(["ReadWriteOnce"]), json!(""), Value::Null);
        assert_eq!(name(best_match(&pvs, &c, None)).as_deref(), Some("small"));
        let c = claim("5Gi", json!(["ReadWriteOnce"]), json!(""), Value::Null);
        assert_eq!(name(best_match(&pvs, &c, None)).as_deref(), Some("big"));
        let c = claim("1Gi", json!(["ReadWriteOnce"]), json!("fast"), Value::Null);
        assert_eq!(name(best_match(&pvs, &c, None)).as_deref(), Some("fast"));
        let c = claim(
            "1Gi",
            json!(["ReadOnlyMany"]),
            json!(""),
            json!({"matchLabels": {"tier": "gold"}}),
        );
        assert_eq!(name(best_match(&pvs, &c, None)).as_deref(), Some("ro"));
        let c = claim("1Gi", json!(["ReadWriteMany"]), json!(""), Value::Null);
        assert_eq!(name(best_match(&pvs, &c, None)), None);
        let c = claim("100Gi", json!(["ReadWriteOnce"]), json!(""), Value::Null);
        assert_eq!(name(best_match(&pvs, &c, None)), None);
    }

    #[test]
    fn node_affinity_of_volumes() {
        let pv = json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}});
        let n1 = json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}}});
        let n2 = json!({"metadata": {"name": "n2", "labels": {"kubernetes.io/hostname": "n2"}}});
        assert!(pv_fits_node(&pv, &n1));
        assert!(!pv_fits_node(&pv, &n2));
        assert!(pv_fits_node(&json!({"spec": {}}), &n2));
    }
}
