//! DaemonSet controller: one pod per eligible node (nodeSelector, required
//! node affinity, NoSchedule/NoExecute taints), bound directly to the node;
//! RollingUpdate replaces pods of an old template one node at a time
//! (maxUnavailable 1).

use super::{
    controller_uid, create_pod_from_template, deleting, i64_at, list, pod_active, pod_ready, rd,
    set_status, template_hash, uid, Settings,
};
use crate::api::objects::{meta_str, Core, DeleteOptions};
use crate::registry;
use serde_json::{json, Value};

pub fn pass(core: &Core, _s: &Settings) {
    let nodes = list(core, "", "nodes", None);
    for ds in list(core, "apps", "daemonsets", None) {
        if deleting(&ds) {
            continue;
        }
        let ns = meta_str(&ds, "namespace");
        let template = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let hash = template_hash(&template);
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
        let pods = list(core, "", "pods", Some(ns));
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
                create_pod_from_template(
                    core,
                    &ds,
                    "DaemonSet",
                    "apps/v1",
                    &template,
                    &[("controller-revision-hash", hash.clone())],
                    Some(node),
                    "daemonset-controller",
                );
            } else if !rolled
                && here.iter().all(|p| {
                    p.pointer("/metadata/labels/controller-revision-hash")
                        .and_then(Value::as_str)
                        != Some(hash.as_str())
                })
            {
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
            .filter(|p| {
                p.pointer("/metadata/labels/controller-revision-hash")
                    .and_then(Value::as_str)
                    == Some(hash.as_str())
            })
            .count();
        let status = json!({
            "desiredNumberScheduled": eligible.len(),
            "currentNumberScheduled": scheduled,
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": eligible.len().saturating_sub(ready),
            "updatedNumberScheduled": updated,
            "numberMisscheduled": mine.len().saturating_sub(scheduled),
            "observedGeneration": i64_at(&ds, "/metadata/generation"),
        });
        set_status(
            core,
            rd("apps", "daemonsets"),
            &ds,
            status,
            "daemonset-controller",
        );
    }
}
