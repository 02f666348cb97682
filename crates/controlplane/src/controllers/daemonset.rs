//! DaemonSet controller: one pod per eligible node (nodeSelector, required
//! node affinity, NoSchedule/NoExecute taints), bound directly to the node;
//! RollingUpdate replaces pods of an old template one node at a time
//! (maxUnavailable 1).
//!
//! Every template a DaemonSet has had is kept, as upstream's controller does
//! (pkg/controller/daemon/update.go), as a ControllerRevision
//! `<ds>-<hash>` whose `data` is the strategic merge patch that puts the
//! template back; `kubectl rollout history/undo ds` read and apply those.
//! The current template's revision has the highest `revision`, its hash is
//! the pods' `controller-revision-hash`, and old revisions no pod uses are
//! pruned to `spec.revisionHistoryLimit`.
//!
//! A pod of the DaemonSet that turned Failed on a node is deleted and replaced, after a back-off
//! per DaemonSet and node that doubles with each failure (upstream's failedPodsBackoff), so a node
//! that fails every pod never makes a storm.

use super::{
    controller_uid, create_pod_from_template, deleting, i64_at, list, owner_ref, pod_active,
    pod_ready, rd, set_status, template_hash_with_collisions, uid, FailedPods, Settings,
};
use crate::api::objects::{meta_str, Core, DeleteOptions, WriteCtx};
use crate::registry;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Per DaemonSet uid and node: the failed-pod back-off.
static FAILED: Mutex<Option<HashMap<(String, String), FailedPods>>> = Mutex::new(None);

/// Whether replacing the DaemonSet's Failed pods on `node` must still wait; when it need not,
/// those pods are deleted (upstream deletes a failed daemon pod, then creates its successor).
fn failed_pods_hold(core: &Core, ds: &Value, node: &str, pods: &[Arc<Value>]) -> bool {
    let failed: Vec<&Value> = pods
        .iter()
        .map(|p| &**p)
        .filter(|p| {
            controller_uid(p) == Some(uid(ds))
                && !deleting(p)
                && p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
                && p.pointer("/status/phase").and_then(Value::as_str) == Some("Failed")
        })
        .collect();
    let hold = FAILED
        .lock()
        .map(|mut f| {
            let e = f
                .get_or_insert_with(HashMap::new)
                .entry((uid(ds).to_string(), node.to_string()))
                .or_default();
            let hold = e.observe(failed.len(), Instant::now());
            if !hold && !failed.is_empty() {
                e.replaced();
            }
            hold
        })
        .unwrap_or(false);
    if !hold {
        for p in failed {
            let _ = core.delete(
                registry::pods(),
                Some(meta_str(ds, "namespace")),
                meta_str(p, "name"),
                &DeleteOptions::default(),
            );
        }
    }
    hold
}

const MANAGER: &str = "daemonset-controller";
/// The pod and revision label naming the revision (upstream's
/// `DefaultDaemonSetUniqueLabelKey`).
const HASH_LABEL: &str = "controller-revision-hash";

fn hash_label(o: &Value) -> Option<&str> {
    o.pointer("/metadata/labels")
        .and_then(|l| l.get(HASH_LABEL))
        .and_then(Value::as_str)
}

fn revision_number(cr: &Value) -> i64 {
    i64_at(cr, "/revision")
}

/// Upstream's `getPatch`: the revision data, a strategic merge patch that
/// replaces the whole pod template with this one.
///
/// kubectl decides "skipped rollback" by comparing these bytes with the
/// same patch made from the DaemonSet it fetched, after a round trip
/// through Go's typed structs. That round trip writes two fields Go never
/// omits (a null `creationTimestamp`, an empty `resources` per container),
/// so they are written here too; keys are sorted on both sides.
fn revision_data(ds: &Value) -> Value {
    let mut template = ds
        .pointer("/spec/template")
        .filter(|t| t.is_object())
        .cloned()
        .unwrap_or(json!({}));
    as_go_writes_it(&mut template);
    template["$patch"] = json!("replace");
    json!({"spec": {"template": template}})
}

/// The fields of a PodTemplateSpec that Go's encoding/json writes even
/// when unset (struct-valued fields, which `omitempty` does not drop).
fn as_go_writes_it(template: &mut Value) {
    if !template.get("metadata").is_some_and(Value::is_object) {
        template["metadata"] = json!({});
    }
    if let Some(meta) = template["metadata"].as_object_mut() {
        meta.entry("creationTimestamp").or_insert(Value::Null);
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(containers) = template
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            c.entry("resources").or_insert(json!({}));
        }
    }
}

/// Upstream's `constructHistory`: the revision of the current template
/// (created if missing, renumbered to the highest revision if an old one
/// became current again, as after `rollout undo`) and the other revisions.
/// None when the revision could not be written; the next pass retries.
fn construct_history(core: &Core, ds: &Value, pods: &[Arc<Value>]) -> Option<(Value, Vec<Value>)> {
    let crrd = rd("apps", "controllerrevisions");
    let ns = meta_str(ds, "namespace");
    let data = revision_data(ds);
    let (mut current, old): (Vec<Value>, Vec<Value>) =
        list(core, "apps", "controllerrevisions", Some(ns))
            .iter()
            .filter(|cr| controller_uid(cr) == Some(uid(ds)) && !deleting(cr))
            .map(|cr| (**cr).clone())
            .partition(|cr| cr.get("data") == Some(&data));
    let next = old.iter().map(revision_number).max().unwrap_or(0) + 1;
    current.sort_by_key(revision_number);
    let cur = match current.pop() {
        None => return snapshot(core, ds, data, next).map(|cur| (cur, old)),
        Some(cur) => cur,
    };
    // Same template twice (upstream's dedupCurHistories): keep the newest,
    // move the others' pods over to its hash so they are not rolled.
    for dup in &current {
        if let (Some(from), Some(to)) = (hash_label(dup), hash_label(&cur)) {
            relabel_pods(core, ds, pods, from, to);
        }
        let _ = core.delete(
            crrd,
            Some(ns),
            meta_str(dup, "name"),
            &DeleteOptions::default(),
        );
    }
    if revision_number(&cur) >= next {
        return Some((cur, old));
    }
    let mut ctx = WriteCtx::controller(MANAGER);
    let renumbered = core.modify(
        crrd,
        Some(ns),
        meta_str(&cur, "name"),
        None,
        &mut ctx,
        |o| {
            let mut o = o.clone();
            o["revision"] = json!(next);
            Ok(o)
        },
    );
    renumbered.ok().map(|cur| (cur, old))
}

fn relabel_pods(core: &Core, ds: &Value, pods: &[Arc<Value>], from: &str, to: &str) {
    for p in pods
        .iter()
        .filter(|p| controller_uid(p) == Some(uid(ds)) && hash_label(p) == Some(from))
    {
        let mut ctx = WriteCtx::controller(MANAGER);
        let _ = core.modify(
            registry::pods(),
            Some(meta_str(p, "namespace")),
            meta_str(p, "name"),
            None,
            &mut ctx,
            |o| {
                let mut o = o.clone();
                o["metadata"]["labels"][HASH_LABEL] = json!(to);
                Ok(o)
            },
        );
    }
}

/// Upstream's `snapshot`: writes the current template as revision
/// `revision`, named by its hash. A clash with another template's revision
/// of that name counts up `status.collisionCount`, which changes the hash
/// the next pass uses.
fn snapshot(core: &Core, ds: &Value, data: Value, revision: i64) -> Option<Value> {
    let crrd = rd("apps", "controllerrevisions");
    let ns = meta_str(ds, "namespace");
    let template = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let collisions = ds.pointer("/status/collisionCount").and_then(Value::as_i64);
    let hash = template_hash_with_collisions(&template, collisions);
    let name = format!("{}-{hash}", meta_str(ds, "name"));
    let mut labels = template
        .pointer("/metadata/labels")
        .filter(|l| l.is_object())
        .cloned()
        .unwrap_or(json!({}));
    labels[HASH_LABEL] = json!(hash);
    let mut meta = json!({
        "name": name,
        "namespace": ns,
        "labels": labels,
        "ownerReferences": [owner_ref(ds, "DaemonSet", "apps/v1")],
    });
    // The DaemonSet's annotations go along: `kubernetes.io/change-cause` is
    // the CHANGE-CAUSE column of `kubectl rollout history`.
    if let Some(a) = ds
        .pointer("/metadata/annotations")
        .filter(|a| a.is_object())
    {
        meta["annotations"] = a.clone();
    }
    let cr = json!({
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": meta,
        "data": data,
        "revision": revision,
    });
    let mut ctx = WriteCtx::controller(MANAGER);
    match core.create(crrd, Some(ns), cr, &mut ctx) {
        Ok(created) => Some(created),
        Err(e) if e.reason == "AlreadyExists" => {
            let existing = core.get(crrd, Some(ns), &name).ok()?;
            if existing.get("data") == Some(&data) && controller_uid(&existing) == Some(uid(ds)) {
                return Some(existing);
            }
            let mut status = ds
                .get("status")
                .filter(|s| s.is_object())
                .cloned()
                .unwrap_or(json!({}));
            status["collisionCount"] = json!(collisions.unwrap_or(0) + 1);
            set_status(core, rd("apps", "daemonsets"), ds, status, MANAGER);
            None
        }
        Err(_) => None,
    }
}

/// Upstream's `cleanupHistory`: deletes the oldest revisions beyond
/// `revisionHistoryLimit` that no pod (terminating ones included) runs.
fn cleanup_history(core: &Core, ds: &Value, mut old: Vec<Value>, pods: &[Arc<Value>]) {
    let limit = ds
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_i64)
        .unwrap_or(10);
    let mut excess = old.len() as i64 - limit;
    if excess <= 0 {
        return;
    }
    let live: HashSet<&str> = pods
        .iter()
        .filter(|p| controller_uid(p) == Some(uid(ds)))
        .filter_map(|p| hash_label(p))
        .collect();
    old.sort_by_key(revision_number);
    for cr in &old {
        if excess <= 0 {
            break;
        }
        if hash_label(cr).is_some_and(|h| live.contains(h)) {
            continue;
        }
        let _ = core.delete(
            rd("apps", "controllerrevisions"),
            Some(meta_str(ds, "namespace")),
            meta_str(cr, "name"),
            &DeleteOptions::default(),
        );
        excess -= 1;
    }
}

pub fn pass(core: &Core, _s: &Settings) {
    let nodes = list(core, "", "nodes", None);
    let daemonsets = list(core, "apps", "daemonsets", None);
    // Forget DaemonSets that are gone.
    if let Ok(mut f) = FAILED.lock() {
        if let Some(m) = f.as_mut() {
            m.retain(|(u, _), _| daemonsets.iter().any(|ds| uid(ds) == u));
        }
    }
    for ds in daemonsets {
        if deleting(&ds) {
            continue;
        }
        let ns = meta_str(&ds, "namespace");
        let template = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let pods = list(core, "", "pods", Some(ns));
        let Some((cur, old)) = construct_history(core, &ds, &pods) else {
            continue;
        };
        let hash = hash_label(&cur).unwrap_or_default().to_string();
        let probe = json!({"spec": template.get("spec").cloned().unwrap_or(json!({}))});
        let eligible: Vec<&str> = nodes
            .iter()
            .filter(|n| super::scheduler::node_matches(&probe, n))
            .filter(|n| {
                n.pointer("/spec/taints")
                    .and_then(Value::as_array)
                    .is_none_or(|ts| {
                        ts.iter().all(|t| {
                            !matches!(t["effect"].as_str(), Some("NoSchedule") | Some("NoExecute"))
                                || t["key"]
                                    .as_str()
                                    .is_some_and(|k| k.starts_with("node.kubernetes.io/"))
                                || super::scheduler::tolerates(&probe, t)
                        })
                    })
            })
            .map(|n| meta_str(n, "name"))
            .collect();
        let mine: Vec<&Value> = pods
            .iter()
            .map(|p| &**p)
            .filter(|p| controller_uid(p) == Some(uid(&ds)) && pod_active(p))
            .collect();
        let on = |node: &str| -> Vec<&Value> {
            mine.iter()
                .copied()
                .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
                .collect()
        };
        let mut rolled = false;
        for node in &eligible {
            let here: Vec<&Value> = on(node);
            if here.is_empty() {
                if failed_pods_hold(core, &ds, node, &pods) {
                    continue;
                }
                create_pod_from_template(
                    core,
                    &ds,
                    "DaemonSet",
                    "apps/v1",
                    &template,
                    &[(HASH_LABEL, hash.clone())],
                    Some(node),
                    MANAGER,
                );
            } else if !rolled && here.iter().all(|p| hash_label(p) != Some(hash.as_str())) {
                let all_ready = mine.iter().all(|p| pod_ready(p));
                if all_ready || !here.iter().any(|p| pod_ready(p)) {
                    for p in here {
                        let _ = core.delete(
                            registry::pods(),
                            Some(ns),
                            meta_str(p, "name"),
                            &DeleteOptions::default(),
                        );
                    }
                    rolled = true;
                }
            }
        }
        for p in &mine {
            let node = p
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !eligible.contains(&node) {
                let _ = core.delete(
                    registry::pods(),
                    Some(ns),
                    meta_str(p, "name"),
                    &DeleteOptions::default(),
                );
            }
        }
        let scheduled = eligible.iter().filter(|n| !on(n).is_empty()).count();
        let ready = mine.iter().filter(|p| pod_ready(p)).count();
        let updated = mine
            .iter()
            .filter(|p| hash_label(p) == Some(hash.as_str()))
            .count();
        let mut status = json!({
            "desiredNumberScheduled": eligible.len(),
            "currentNumberScheduled": scheduled,
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": eligible.len().saturating_sub(ready),
            "updatedNumberScheduled": updated,
            "numberMisscheduled": mine.len().saturating_sub(scheduled),
            "observedGeneration": i64_at(&ds, "/metadata/generation"),
        });
        if let Some(c) = ds.pointer("/status/collisionCount") {
            status["collisionCount"] = c.clone();
        }
        set_status(core, rd("apps", "daemonsets"), &ds, status, MANAGER);
        cleanup_history(core, &ds, old, &pods);
    }
}
