//! DaemonSet controller: one pod per eligible node (nodeSelector, required
//! node affinity, NoSchedule/NoExecute taints), bound directly to the node;
//! RollingUpdate replaces pods of an old template one node at a time
//! (maxUnavailable 1).
//!
//! Every template a DaemonSet has had is kept, as upstream's controller does
//! (pkg/controller/daemon/update.go), as a ControllerRevision `<ds>-<hash>`
//! (`revisions.rs`, shared with the StatefulSet controller); `kubectl rollout
//! history/undo ds` read and apply those. The current revision's hash is the
//! pods' `controller-revision-hash`.
//!
//! A pod of the DaemonSet that turned Failed on a node is deleted and replaced, after a back-off
//! per DaemonSet and node that doubles with each failure (upstream's failedPodsBackoff), so a node
//! that fails every pod never makes a storm.

use super::revisions::{self, Parent};
use super::{
    controller_uid, create_pod_from_template, deleting, i64_at, list, pod_active, pod_ready, rd,
    set_status, uid, FailedPods, Settings,
};
use crate::api::objects::{meta_str, Core, DeleteOptions};
use crate::registry;
use serde_json::{json, Value};
use std::collections::HashMap;
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
const HASH_LABEL: &str = revisions::POD_LABEL;

fn hash_label(o: &Value) -> Option<&str> {
    revisions::label(o, HASH_LABEL)
}

fn parent(ds: &Value) -> Parent<'_> {
    Parent {
        obj: ds,
        kind: "DaemonSet",
        group: "apps",
        plural: "daemonsets",
        manager: MANAGER,
        cr_hash_label: HASH_LABEL,
        pods_carry_name: false,
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
        let Some((cur, old)) = revisions::construct_history(core, &parent(&ds), &pods) else {
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
        revisions::cleanup_history(core, &parent(&ds), old, &pods, None);
    }
}
