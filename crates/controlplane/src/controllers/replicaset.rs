//! ReplicaSet controller: keeps `spec.replicas` active pods that the
//! ReplicaSet controls (adopting matching orphans), and reports
//! replicas/ready/available in status.

use super::{
    controller_uid, create_pod_from_template, deleting, i64_at, list, pod_active, pod_ready, rd,
    record_event, set_status, uid, Settings,
};
use crate::api::objects::{meta_str, Core, DeleteOptions, WriteCtx};
use crate::api::selector::LabelSelector;
use crate::registry;
use serde_json::{json, Value};

pub fn pass(core: &Core, _s: &Settings) {
    let rss = list(core, "apps", "replicasets", None);
    for rs in rss.iter() {
        if deleting(rs) {
            continue;
        }
        sync(core, rs);
    }
}

fn sync(core: &Core, rs: &Value) {
    let ns = meta_str(rs, "namespace");
    let sel = LabelSelector::from_object(rs.pointer("/spec/selector").unwrap_or(&Value::Null));
    if sel.is_empty() {
        return;
    }
    let pods = list(core, "", "pods", Some(ns));
    let my_uid = uid(rs);
    let mut owned: Vec<&Value> = Vec::new();
    for p in pods.iter() {
        match controller_uid(p) {
            Some(u) if u == my_uid => owned.push(p),
            None if sel.matches(p) && pod_active(p) => {
                // Adopt orphans that match the selector.
                let mut ctx = WriteCtx::controller("replicaset-controller");
                let oref = super::owner_ref(rs, "ReplicaSet", "apps/v1");
                let _ = core.modify(
                    registry::pods(),
                    Some(ns),
                    meta_str(p, "name"),
                    None,
                    &mut ctx,
                    |o| {
                        let mut o = o.clone();
                        let mut refs = o
                            .pointer("/metadata/ownerReferences")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        refs.push(oref.clone());
                        o["metadata"]["ownerReferences"] = json!(refs);
                        Ok(o)
                    },
                );
                owned.push(p);
            }
            _ => {}
        }
    }
    let active: Vec<&Value> = owned.iter().copied().filter(|p| pod_active(p)).collect();
    let want = i64_at(rs, "/spec/replicas");
    let diff = want - active.len() as i64;
    if diff > 0 {
        let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
        // Slow start like upstream: batches of 1, 2, 4, ... up to 500 per pass.
        let mut created = 0;
        for _ in 0..diff.min(500) {
            if !create_pod_from_template(
                core,
                rs,
                "ReplicaSet",
                "apps/v1",
                &template,
                &[],
                None,
                "replicaset-controller",
            ) {
                break;
            }
            created += 1;
        }
        if created > 0 {
            record_event(
                core,
                rs,
                "ReplicaSet",
                "Normal",
                "SuccessfulCreate",
                &format!("Created {created} pod(s)"),
                "replicaset-controller",
            );
        }
    } else if diff < 0 {
        // Delete the least useful pods first: unscheduled, pending, not ready, newest.
        let mut victims = active.clone();
        victims.sort_by_key(|p| {
            let scheduled = !p
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty();
            let running = p.pointer("/status/phase").and_then(Value::as_str) == Some("Running");
            (
                scheduled,
                running,
                pod_ready(p),
                std::cmp::Reverse(meta_str(p, "creationTimestamp").to_string()),
            )
        });
        for p in victims.into_iter().take((-diff) as usize) {
            let _ = core.delete(
                registry::pods(),
                Some(ns),
                meta_str(p, "name"),
                &DeleteOptions::default(),
            );
            record_event(
                core,
                rs,
                "ReplicaSet",
                "Normal",
                "SuccessfulDelete",
                &format!("Deleted pod: {}", meta_str(p, "name")),
                "replicaset-controller",
            );
        }
    }
    let pods_now = list(core, "", "pods", Some(ns));
    let mine: Vec<&Value> = pods_now
        .iter()
        .map(|p| &**p)
        .filter(|p| controller_uid(p) == Some(my_uid) && pod_active(p))
        .collect();
    let ready = mine.iter().filter(|p| pod_ready(p)).count() as i64;
    let labeled = mine.iter().filter(|p| sel.matches(p)).count() as i64;
    let mut status = json!({
        "replicas": mine.len(),
        "fullyLabeledReplicas": labeled,
        "observedGeneration": i64_at(rs, "/metadata/generation"),
    });
    if ready > 0 {
        status["readyReplicas"] = json!(ready);
        status["availableReplicas"] = json!(ready);
    }
    set_status(
        core,
        rd("apps", "replicasets"),
        rs,
        status,
        "replicaset-controller",
    );
}
