//! StatefulSet controller (upstream pkg/controller/statefulset): pods with
//! stable identities `<sts>-<ordinal>` (labels
//! `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index`,
//! `controller-revision-hash` = the revision's name; `hostname` = the pod's
//! name and `subdomain` = `spec.serviceName`), each with its own PVCs
//! `<template>-<sts>-<ordinal>` from `volumeClaimTemplates`, created before
//! the pod and kept after it (unless the retention policy says Delete).
//!
//! OrderedReady creates one pod at a time in ordinal order, the next only
//! once the previous is Running and Ready, and removes surplus pods from the
//! highest ordinal down, one at a time; Parallel does both at once.
//! RollingUpdate replaces pods whose revision is not the update revision
//! from the highest ordinal down to `partition`, one at a time, each once
//! the others are Ready; OnDelete only gives pods deleted by someone else
//! the new template. A pod below the partition that is re-created gets the
//! current revision's template. History: ControllerRevisions as the
//! DaemonSet's (`revisions.rs`), so `kubectl rollout history|undo sts` work.

use super::revisions::{self, Parent, POD_LABEL};
use super::{controller_uid, deleting, i64_at, list, owner_ref, pod_ready, rd, record_event};
use super::{set_status, uid, Settings};
use crate::api::objects::{meta_str, Core, DeleteOptions, WriteCtx};
use crate::api::selector::LabelSelector;
use crate::registry;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

const MANAGER: &str = "statefulset-controller";
const KIND: &str = "StatefulSet";
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

fn parent(sts: &Value) -> Parent<'_> {
    Parent {
        obj: sts,
        kind: KIND,
        group: "apps",
        plural: "statefulsets",
        manager: MANAGER,
        cr_hash_label: "controller.kubernetes.io/hash",
        pods_carry_name: true,
    }
}

pub fn pass(core: &Core, _s: &Settings) {
    for sts in list(core, "apps", "statefulsets", None) {
        if deleting(&sts) {
            continue;
        }
        sync(core, &sts);
    }
}

/// The ordinal of `pod` if its name is `<sts>-<n>`.
fn ordinal(sts_name: &str, pod: &Value) -> Option<i64> {
    meta_str(pod, "name")
        .strip_prefix(sts_name)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

fn phase(p: &Value) -> &str {
    p.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn running_and_ready(p: &Value) -> bool {
    phase(p) == "Running" && pod_ready(p)
}

/// Ready for at least `min_ready` seconds (upstream's `isRunningAndAvailable`).
fn available(p: &Value, min_ready: i64, now: i64) -> bool {
    if !running_and_ready(p) {
        return false;
    }
    if min_ready <= 0 {
        return true;
    }
    let since = p
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["lastTransitionTime"].as_str())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    since.is_some_and(|t| t.as_second() + min_ready <= now)
}

fn sync(core: &Core, sts: &Value) {
    let ns = meta_str(sts, "namespace");
    let name = meta_str(sts, "name");
    let mut pods = list(core, "", "pods", Some(ns));
    if claim_pods(core, sts, &pods) {
        pods = list(core, "", "pods", Some(ns));
    }
    let p = parent(sts);
    let Some((update_rev, old)) = revisions::construct_history(core, &p, &pods) else {
        return;
    };
    let update_name = meta_str(&update_rev, "name").to_string();
    // The current revision: the one status names if it still exists, else the update revision.
    let cur_name = sts
        .pointer("/status/currentRevision")
        .and_then(Value::as_str)
        .filter(|c| old.iter().any(|cr| meta_str(cr, "name") == *c))
        .unwrap_or(&update_name)
        .to_string();
    let current_template = old
        .iter()
        .find(|cr| meta_str(cr, "name") == cur_name)
        .map(revisions::template_of);
    let update_template = sts.pointer("/spec/template").cloned().unwrap_or(json!({}));

    let mine: Vec<&Value> = pods
        .iter()
        .map(|p| &**p)
        .filter(|p| controller_uid(p) == Some(uid(sts)))
        .collect();
    let replicas = sts
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0);
    let start = i64_at(sts, "/spec/ordinals/start").max(0);
    let parallel = sts
        .pointer("/spec/podManagementPolicy")
        .and_then(Value::as_str)
        == Some("Parallel");
    let strategy = sts
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate");
    let partition = i64_at(sts, "/spec/updateStrategy/rollingUpdate/partition").max(0);

    // Pods by ordinal: the wanted range and the condemned rest.
    let mut slots: BTreeMap<i64, &Value> = BTreeMap::new();
    let mut condemned: Vec<(i64, &Value)> = Vec::new();
    for pod in &mine {
        match ordinal(name, pod) {
            Some(o) if o >= start && o < start + replicas => {
                slots.insert(o, pod);
            }
            Some(o) => condemned.push((o, pod)),
            None => {}
        }
    }
    condemned.sort_by_key(|(o, _)| std::cmp::Reverse(*o));

    let status = |core: &Core| write_status(core, sts, &update_name, &cur_name, strategy);
    // Creation, in ordinal order.
    for ord in start..start + replicas {
        match slots.get(&ord) {
            None => {
                // Below the partition a pod gets the current revision's template back.
                let (template, rev) = match (&current_template, strategy) {
                    (Some(t), "RollingUpdate") if ord < start + partition => (t, &cur_name),
                    _ => (&update_template, &update_name),
                };
                if !claims_ready(core, sts, ord) {
                    if !parallel {
                        return status(core);
                    }
                    continue;
                }
                create_pod(core, sts, ord, template, rev);
                if !parallel {
                    return status(core);
                }
            }
            Some(pod) if deleting(pod) => {
                if !parallel {
                    return status(core);
                }
            }
            Some(pod) if matches!(phase(pod), "Failed" | "Succeeded") => {
                // Upstream deletes a finished pod and creates it again.
                delete_pod(core, sts, pod, "delete");
                if !parallel {
                    return status(core);
                }
            }
            Some(pod) if !running_and_ready(pod) && !parallel => return status(core),
            Some(_) => {}
        }
    }
    maintain_claims(core, sts, start..start + replicas);
    // Scale down, from the highest ordinal.
    for (_, pod) in &condemned {
        if deleting(pod) {
            if !parallel {
                return status(core);
            }
            continue;
        }
        delete_pod(core, sts, pod, "delete");
        if !parallel {
            return status(core);
        }
    }
    if !condemned.is_empty() && !parallel {
        return status(core);
    }
    // Rolling update: from the highest ordinal down to the partition, one at a time.
    if strategy == "RollingUpdate" {
        let floor = start + partition;
        for (ord, pod) in slots.iter().rev() {
            if *ord < floor {
                break;
            }
            if revisions::label(pod, POD_LABEL) != Some(update_name.as_str()) && !deleting(pod) {
                delete_pod(core, sts, pod, "update");
                break;
            }
            if !running_and_ready(pod) {
                break;
            }
        }
    }
    status(core);
    // The current revision is live, as the update revision: not counted, never pruned.
    let old: Vec<Value> = old
        .into_iter()
        .filter(|cr| meta_str(cr, "name") != cur_name)
        .collect();
    revisions::cleanup_history(core, &p, old, &pods, Some(&cur_name));
}

/// Upstream's `ClaimPods`: orphans that match the selector and are named as this set's
/// members (`<sts>-<ordinal>`, e.g. left by `delete sts --cascade=orphan`) are adopted; pods of
/// ours that no longer match are released. Whether anything changed.
fn claim_pods(core: &Core, sts: &Value, pods: &[Arc<Value>]) -> bool {
    let sel = LabelSelector::from_object(sts.pointer("/spec/selector").unwrap_or(&Value::Null));
    if sel.is_empty() {
        return false;
    }
    let name = meta_str(sts, "name");
    let mut changed = false;
    for pod in pods {
        let ours = controller_uid(pod) == Some(uid(sts));
        let adopt = controller_uid(pod).is_none()
            && !deleting(pod)
            && sel.matches(pod)
            && ordinal(name, pod).is_some();
        let release = ours && !sel.matches(pod);
        if !adopt && !release {
            continue;
        }
        changed |= super::set_pod_owner(
            core,
            meta_str(sts, "namespace"),
            meta_str(pod, "name"),
            MANAGER,
            &owner_ref(sts, KIND, "apps/v1"),
            adopt,
        );
    }
    changed
}

/// Upstream's `createPersistentVolumeClaims`: each claim of pod `ord` exists (created if
/// missing); false while one cannot be created or is being deleted (the pod waits).
fn claims_ready(core: &Core, sts: &Value, ord: i64) -> bool {
    let Some(templates) = sts
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
    else {
        return true;
    };
    let ns = meta_str(sts, "namespace");
    let pvcs = rd("", "persistentvolumeclaims");
    let mut ok = true;
    let delete_with_set = sts
        .pointer("/spec/persistentVolumeClaimRetentionPolicy/whenDeleted")
        .and_then(Value::as_str)
        == Some("Delete");
    for t in templates {
        let claim = claim_name(sts, t, ord);
        if let Some(existing) = core.get_stored(pvcs, Some(ns), &claim) {
            if deleting(&existing.object) {
                ok = false;
            } else {
                claim_owner(core, sts, &existing.object, delete_with_set);
            }
            continue;
        }
        let mut meta = t.get("metadata").cloned().unwrap_or(json!({}));
        if !meta.get("labels").is_some_and(Value::is_object) {
            meta["labels"] = json!({});
        }
        if let Some(m) = sts
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
        {
            for (k, v) in m {
                meta["labels"][k] = v.clone();
            }
        }
        meta["name"] = json!(claim);
        meta["namespace"] = json!(ns);
        if let Some(m) = meta.as_object_mut() {
            m.remove("creationTimestamp");
            m.remove("resourceVersion");
            m.remove("uid");
        }
        // WhenDeleted: Delete makes the claim the StatefulSet's dependent, so the garbage
        // collector removes it with the set (upstream's claim owner reference).
        if delete_with_set {
            meta["ownerReferences"] = json!([claim_ref(sts)]);
        }
        let mut pvc =
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta});
        pvc["spec"] = t.get("spec").cloned().unwrap_or(json!({}));
        let mut ctx = WriteCtx::controller(MANAGER);
        match core.create(pvcs, Some(ns), pvc, &mut ctx) {
            Ok(_) => record_event(
                core,
                sts,
                KIND,
                "Normal",
                "SuccessfulCreate",
                &format!(
                    "create Claim {claim} Pod {}-{ord} in StatefulSet {} success",
                    meta_str(sts, "name"),
                    meta_str(sts, "name")
                ),
                MANAGER,
            ),
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => {
                record_event(
                    core,
                    sts,
                    KIND,
                    "Warning",
                    "FailedCreate",
                    &format!(
                        "create Claim {claim} for Pod {}-{ord} in StatefulSet {} failed error: {}",
                        meta_str(sts, "name"),
                        meta_str(sts, "name"),
                        e.message
                    ),
                    MANAGER,
                );
                ok = false;
            }
        }
    }
    ok
}

/// The claims of the pods in `ords` follow the retention policy's `whenDeleted`.
fn maintain_claims(core: &Core, sts: &Value, ords: std::ops::Range<i64>) {
    let Some(templates) = sts
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
    else {
        return;
    };
    let delete_with_set = sts
        .pointer("/spec/persistentVolumeClaimRetentionPolicy/whenDeleted")
        .and_then(Value::as_str)
        == Some("Delete");
    let pvcs = rd("", "persistentvolumeclaims");
    for ord in ords {
        for t in templates {
            let claim = claim_name(sts, t, ord);
            if let Some(c) = core.get_stored(pvcs, Some(meta_str(sts, "namespace")), &claim) {
                if !deleting(&c.object) {
                    claim_owner(core, sts, &c.object, delete_with_set);
                }
            }
        }
    }
}

/// The owner reference that ties a claim to its set (`whenDeleted: Delete`): not a controller.
fn claim_ref(sts: &Value) -> Value {
    let mut r = owner_ref(sts, KIND, "apps/v1");
    r["controller"] = json!(false);
    r
}

/// Keeps an existing claim's reference to the set as the retention policy says (upstream's
/// `updateClaimOwnerRefForSetAndPod`): added for `whenDeleted: Delete` (a claim kept from an
/// earlier set, or a changed policy), removed for Retain.
fn claim_owner(core: &Core, sts: &Value, claim: &Value, delete_with_set: bool) {
    let has = claim
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|rs| rs.iter().any(|r| r["uid"].as_str() == Some(uid(sts))));
    if has == delete_with_set {
        return;
    }
    let my_uid = uid(sts).to_string();
    let oref = claim_ref(sts);
    // The claim is in the set's namespace (read from there).
    super::volumes::edit_claim(core, claim, MANAGER, |o| {
        let mut refs = o
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        refs.retain(|r| r["uid"].as_str() != Some(my_uid.as_str()));
        if delete_with_set {
            refs.push(oref.clone());
        }
        if refs.is_empty() {
            if let Some(m) = o["metadata"].as_object_mut() {
                m.remove("ownerReferences");
            }
        } else {
            o["metadata"]["ownerReferences"] = json!(refs);
        }
    });
}

fn claim_name(sts: &Value, template: &Value, ord: i64) -> String {
    format!(
        "{}-{}-{ord}",
        meta_str(template, "name"),
        meta_str(sts, "name")
    )
}

/// Upstream's `newVersionedStatefulSetPod`: the pod of ordinal `ord` from `template`.
fn create_pod(core: &Core, sts: &Value, ord: i64, template: &Value, revision: &str) {
    let ns = meta_str(sts, "namespace");
    let pod_name = format!("{}-{ord}", meta_str(sts, "name"));
    let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
    if !meta.get("labels").is_some_and(Value::is_object) {
        meta["labels"] = json!({});
    }
    meta["labels"][POD_NAME_LABEL] = json!(pod_name);
    meta["labels"][POD_INDEX_LABEL] = json!(ord.to_string());
    meta["labels"][POD_LABEL] = json!(revision);
    meta["name"] = json!(pod_name);
    meta["namespace"] = json!(ns);
    meta["ownerReferences"] = json!([owner_ref(sts, KIND, "apps/v1")]);
    if let Some(m) = meta.as_object_mut() {
        m.remove("creationTimestamp");
        m.remove("generateName");
    }
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    spec["hostname"] = json!(pod_name);
    match sts.pointer("/spec/serviceName").and_then(Value::as_str) {
        Some(svc) if !svc.is_empty() => spec["subdomain"] = json!(svc),
        _ => {}
    }
    // Each claim template becomes the pod's volume of that name (replacing one the template
    // declares), pointing at this ordinal's claim.
    if let Some(templates) = sts
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
    {
        let mut volumes: Vec<Value> = spec
            .get("volumes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for t in templates {
            let vname = meta_str(t, "name");
            volumes.retain(|v| v["name"].as_str() != Some(vname));
            volumes.push(json!({"name": vname, "persistentVolumeClaim": {"claimName": claim_name(sts, t, ord)}}));
        }
        spec["volumes"] = json!(volumes);
    }
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec});
    let mut ctx = WriteCtx::controller(MANAGER);
    match core.create(registry::pods(), Some(ns), pod, &mut ctx) {
        Ok(_) => record_pod_event(core, sts, "create", "Create", &pod_name, None),
        // A pod of that name not ours (or not yet gone): wait for it.
        Err(e) if e.reason == "AlreadyExists" => {}
        Err(e) => record_pod_event(core, sts, "create", "Create", &pod_name, Some(&e.message)),
    }
}

fn delete_pod(core: &Core, sts: &Value, pod: &Value, why: &str) {
    let pod_name = meta_str(pod, "name");
    match core.delete(
        registry::pods(),
        Some(meta_str(sts, "namespace")),
        pod_name,
        &DeleteOptions::default(),
    ) {
        Ok(_) => record_pod_event(core, sts, why, "Delete", pod_name, None),
        Err(e) if e.reason == "NotFound" => {}
        Err(e) => record_pod_event(core, sts, why, "Delete", pod_name, Some(&e.message)),
    }
    if why == "delete" {
        scaled_claims(core, sts, pod);
    }
}

/// statefulset's `recordPodEvent`: `Successful<Action>` / `Failed<Action>` with
/// `<verb> Pod <pod> in StatefulSet <set> successful` or `... failed error: <err>`.
fn record_pod_event(
    core: &Core,
    sts: &Value,
    verb: &str,
    action: &str,
    pod_name: &str,
    err: Option<&str>,
) {
    let sts_name = meta_str(sts, "name");
    let (ty, reason, msg) = match err {
        None => (
            "Normal",
            format!("Successful{action}"),
            format!("{verb} Pod {pod_name} in StatefulSet {sts_name} successful"),
        ),
        Some(err) => (
            "Warning",
            format!("Failed{action}"),
            format!("{verb} Pod {pod_name} in StatefulSet {sts_name} failed error: {err}"),
        ),
    };
    record_event(core, sts, KIND, ty, &reason, &msg, MANAGER);
}

/// `persistentVolumeClaimRetentionPolicy.whenScaled: Delete`: a pod removed by a scale-down
/// takes its claims with it (upstream makes the pod their owner; deleting them here has the
/// same end).
fn scaled_claims(core: &Core, sts: &Value, pod: &Value) {
    if sts
        .pointer("/spec/persistentVolumeClaimRetentionPolicy/whenScaled")
        .and_then(Value::as_str)
        != Some("Delete")
    {
        return;
    }
    let Some(ord) = ordinal(meta_str(sts, "name"), pod) else {
        return;
    };
    let start = i64_at(sts, "/spec/ordinals/start").max(0);
    let replicas = sts
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    if ord >= start && ord < start + replicas {
        return;
    }
    for t in sts
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let _ = core.delete(
            rd("", "persistentvolumeclaims"),
            Some(meta_str(sts, "namespace")),
            &claim_name(sts, t, ord),
            &DeleteOptions::default(),
        );
    }
}

/// Upstream's `updateStatefulSetStatus` (+ `completeRollingUpdate`), from the pods as they are
/// after this pass's writes.
fn write_status(core: &Core, sts: &Value, update_name: &str, cur_name: &str, strategy: &str) {
    let ns = meta_str(sts, "namespace");
    let pods: Vec<Arc<Value>> = list(core, "", "pods", Some(ns))
        .into_iter()
        .filter(|p| controller_uid(p) == Some(uid(sts)))
        .collect();
    let mut replicas = 0;
    let mut ready = 0;
    let mut avail = 0;
    let mut current = 0;
    let mut updated = 0;
    let min_ready = i64_at(sts, "/spec/minReadySeconds");
    let now = jiff::Timestamp::now().as_second();
    for p in &pods {
        replicas += 1;
        if running_and_ready(p) {
            ready += 1;
        }
        if available(p, min_ready, now) {
            avail += 1;
        }
        if !deleting(p) {
            let rev = revisions::label(p, POD_LABEL);
            if rev == Some(cur_name) {
                current += 1;
            }
            if rev == Some(update_name) {
                updated += 1;
            }
        }
    }
    let mut cur_name = cur_name.to_string();
    // completeRollingUpdate: compared with the pods there are, as upstream.
    if strategy == "RollingUpdate" && updated == replicas && ready == replicas {
        cur_name = update_name.to_string();
        current = updated;
    }
    let mut status = json!({
        "observedGeneration": i64_at(sts, "/metadata/generation"),
        "replicas": replicas,
        "readyReplicas": ready,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "availableReplicas": avail,
        "currentRevision": cur_name,
        "updateRevision": update_name,
        "collisionCount": sts.pointer("/status/collisionCount").and_then(Value::as_i64).unwrap_or(0),
    });
    // Go's omitempty: zero counts are not written.
    if let Some(m) = status.as_object_mut() {
        m.retain(|k, v| {
            matches!(
                k.as_str(),
                "replicas" | "availableReplicas" | "collisionCount"
            ) || v != &json!(0)
        });
    }
    set_status(core, rd("apps", "statefulsets"), sts, status, MANAGER);
}
