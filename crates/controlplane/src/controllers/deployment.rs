//! Deployment controller: one ReplicaSet per pod template (named
//! `<deployment>-<pod-template-hash>`), rolled with RollingUpdate
//! (maxSurge/maxUnavailable) or Recreate, revision annotations for
//! `kubectl rollout history/undo`, and history trimmed to
//! revisionHistoryLimit.

use super::{
    controller_uid, deleting, i64_at, int_or_percent, list, pod_active, rd, record_event,
    set_status, template_hash, uid, Settings,
};
use crate::api::objects::{meta_str, now, Core, DeleteOptions, WriteCtx};
use serde_json::{json, Value};

const REVISION: &str = "deployment.kubernetes.io/revision";

fn revision(rs: &Value) -> i64 {
    rs.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn strip_hash(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove("pod-template-hash");
    }
    t
}

pub fn pass(core: &Core, _s: &Settings) {
    for d in list(core, "apps", "deployments", None).iter() {
        if deleting(d) {
            continue;
        }
        sync(core, d);
    }
}

fn scale_rs(core: &Core, rs: &Value, replicas: i64, extra_annotations: &[(&str, String)]) {
    let rsrd = rd("apps", "replicasets");
    let mut ctx = WriteCtx::controller("deployment-controller");
    let _ = core.modify(
        rsrd,
        Some(meta_str(rs, "namespace")),
        meta_str(rs, "name"),
        None,
        &mut ctx,
        |o| {
            let mut o = o.clone();
            o["spec"]["replicas"] = json!(replicas);
            for (k, v) in extra_annotations {
                if !o
                    .pointer("/metadata/annotations")
                    .is_some_and(Value::is_object)
                {
                    o["metadata"]["annotations"] = json!({});
                }
                o["metadata"]["annotations"][*k] = json!(v);
            }
            Ok(o)
        },
    );
}

fn sync(core: &Core, d: &Value) {
    let ns = meta_str(d, "namespace");
    let name = meta_str(d, "name");
    let my_uid = uid(d);
    let rsrd = rd("apps", "replicasets");
    let all_rs: Vec<Value> = list(core, "apps", "replicasets", Some(ns))
        .iter()
        .filter(|r| controller_uid(r) == Some(my_uid) && !deleting(r))
        .map(|r| (**r).clone())
        .collect();
    let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let want = i64_at(d, "/spec/replicas");
    let max_rev = all_rs.iter().map(revision).max().unwrap_or(0);
    let mut new_rs = all_rs
        .iter()
        .find(|r| {
            strip_hash(r.pointer("/spec/template").unwrap_or(&Value::Null)) == strip_hash(&template)
        })
        .cloned();
    if let Some(nrs) = &new_rs {
        // An old template becoming current again (rollout undo) gets the next revision.
        if revision(nrs) < max_rev {
            scale_rs(
                core,
                nrs,
                i64_at(nrs, "/spec/replicas"),
                &[(REVISION, (max_rev + 1).to_string())],
            );
            record_event(
                core,
                d,
                "Deployment",
                "Normal",
                "DeploymentRollback",
                &format!(
                    "Rolled back deployment \"{name}\" to revision {}",
                    revision(nrs)
                ),
                "deployment-controller",
            );
            return;
        }
    }
    if new_rs.is_none() {
        let hash = template_hash(&template);
        let mut t = template.clone();
        if !t.pointer("/metadata/labels").is_some_and(Value::is_object) {
            t["metadata"]["labels"] = json!({});
        }
        t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
        let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
        if !selector.get("matchLabels").is_some_and(Value::is_object) {
            selector["matchLabels"] = json!({});
        }
        selector["matchLabels"]["pod-template-hash"] = json!(hash);
        let mut labels = t.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
        labels["pod-template-hash"] = json!(hash);
        let surge = int_or_percent(
            d.pointer("/spec/strategy/rollingUpdate/maxSurge"),
            want,
            true,
        );
        let initial = if all_rs.is_empty() { want } else { 0 };
        let rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": format!("{name}-{hash}"), "namespace": ns, "labels": labels,
                "annotations": {REVISION: (max_rev + 1).to_string(), "deployment.kubernetes.io/desired-replicas": want.to_string(), "deployment.kubernetes.io/max-replicas": (want + surge).to_string()},
                "ownerReferences": [super::owner_ref(d, "Deployment", "apps/v1")],
            },
            "spec": {"replicas": initial, "selector": selector, "template": t, "minReadySeconds": i64_at(d, "/spec/minReadySeconds")},
        });
        let mut ctx = WriteCtx::controller("deployment-controller");
        match core.create(rsrd, Some(ns), rs, &mut ctx) {
            Ok(created) => {
                record_event(
                    core,
                    d,
                    "Deployment",
                    "Normal",
                    "ScalingReplicaSet",
                    &format!(
                        "Scaled up replica set {} from 0 to {initial}",
                        meta_str(&created, "name")
                    ),
                    "deployment-controller",
                );
                new_rs = Some(created);
            }
            Err(_) => return,
        }
    }
    let Some(new_rs) = new_rs else { return };
    let new_uid = uid(&new_rs).to_string();
    let olds: Vec<&Value> = all_rs.iter().filter(|r| uid(r) != new_uid).collect();
    let strategy = d
        .pointer("/spec/strategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate");
    let new_replicas = i64_at(&new_rs, "/spec/replicas");
    let old_total: i64 = olds.iter().map(|r| i64_at(r, "/spec/replicas")).sum();
    let paused = d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    if !paused {
        if strategy == "Recreate" {
            if old_total > 0 {
                for r in olds.iter().filter(|r| i64_at(r, "/spec/replicas") > 0) {
                    scale_rs(core, r, 0, &[]);
                }
            } else {
                let pods = list(core, "", "pods", Some(ns));
                let old_uids: Vec<&str> = olds.iter().map(|r| uid(r)).collect();
                let old_running = pods
                    .iter()
                    .any(|p| controller_uid(p).is_some_and(|u| old_uids.contains(&u)));
                if !old_running && new_replicas != want {
                    scale_rs(core, &new_rs, want, &[]);
                }
            }
        } else {
            let surge = int_or_percent(
                d.pointer("/spec/strategy/rollingUpdate/maxSurge"),
                want,
                true,
            );
            let mut unavail = int_or_percent(
                d.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
                want,
                false,
            );
            if surge == 0 && unavail == 0 {
                unavail = 1;
            }
            if old_total == 0 {
                if new_replicas != want {
                    scale_rs(core, &new_rs, want, &[]);
                }
            } else {
                // Scale up the new ReplicaSet within maxSurge.
                let total = new_replicas + old_total;
                let room = want + surge - total;
                if room > 0 && new_replicas < want {
                    scale_rs(core, &new_rs, (new_replicas + room).min(want), &[]);
                }
                // Scale down old ReplicaSets within maxUnavailable.
                let available: i64 = all_rs
                    .iter()
                    .map(|r| i64_at(r, "/status/availableReplicas"))
                    .sum();
                let min_available = want - unavail;
                let new_unavailable =
                    (new_replicas - i64_at(&new_rs, "/status/availableReplicas")).max(0);
                let mut budget = (total - min_available - new_unavailable).max(0);
                let mut healthy_budget = (available - min_available).max(0);
                let mut sorted = olds.clone();
                sorted.sort_by_key(|r| revision(r));
                for r in sorted {
                    let cur = i64_at(r, "/spec/replicas");
                    if budget <= 0 || cur == 0 {
                        continue;
                    }
                    // Unavailable old replicas go first: removing them costs no availability.
                    let unhealthy = (cur - i64_at(r, "/status/availableReplicas"))
                        .max(0)
                        .min(budget);
                    let healthy = (cur - unhealthy)
                        .min(healthy_budget)
                        .min(budget - unhealthy);
                    let down = unhealthy + healthy;
                    if down == 0 {
                        continue;
                    }
                    scale_rs(core, r, cur - down, &[]);
                    record_event(
                        core,
                        d,
                        "Deployment",
                        "Normal",
                        "ScalingReplicaSet",
                        &format!(
                            "Scaled down replica set {} from {cur} to {}",
                            meta_str(r, "name"),
                            cur - down
                        ),
                        "deployment-controller",
                    );
                    budget -= down;
                    healthy_budget -= healthy;
                }
            }
        }
    }
    // Trim history.
    let limit = d
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_i64)
        .unwrap_or(10);
    let mut idle: Vec<&Value> = olds
        .iter()
        .copied()
        .filter(|r| i64_at(r, "/spec/replicas") == 0 && i64_at(r, "/status/replicas") == 0)
        .collect();
    idle.sort_by_key(|r| revision(r));
    let extra = idle.len() as i64 - limit;
    for r in idle.into_iter().take(extra.max(0) as usize) {
        let _ = core.delete(
            rsrd,
            Some(ns),
            meta_str(r, "name"),
            &DeleteOptions::default(),
        );
    }
    // Status.
    let fresh: Vec<Value> = list(core, "apps", "replicasets", Some(ns))
        .iter()
        .filter(|r| controller_uid(r) == Some(my_uid))
        .map(|r| (**r).clone())
        .collect();
    let sum = |p: &str| fresh.iter().map(|r| i64_at(r, p)).sum::<i64>();
    let newest = fresh.iter().find(|r| uid(r) == new_uid);
    let updated = newest.map(|r| i64_at(r, "/status/replicas")).unwrap_or(0);
    let replicas = sum("/status/replicas");
    let available = sum("/status/availableReplicas");
    let ready = sum("/status/readyReplicas");
    let unavail = int_or_percent(
        d.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
        want,
        false,
    );
    let min_avail = if strategy == "Recreate" {
        want
    } else {
        want - unavail
    };
    let complete = updated == want && replicas == want && available == want;
    let old_conds = d
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let cond = |ty: &str, status: &str, reason: &str, message: String| {
        let prev = old_conds.iter().find(|c| c["type"] == ty);
        let same = prev.is_some_and(|c| c["status"] == status && c["reason"] == reason);
        let t = if same {
            prev.and_then(|c| c["lastTransitionTime"].as_str())
                .unwrap_or("")
                .to_string()
        } else {
            now()
        };
        let upd = if same {
            prev.and_then(|c| c["lastUpdateTime"].as_str())
                .unwrap_or("")
                .to_string()
        } else {
            now()
        };
        json!({"type": ty, "status": status, "reason": reason, "message": message, "lastTransitionTime": t, "lastUpdateTime": upd})
    };
    let new_name = newest
        .map(|r| meta_str(r, "name").to_string())
        .unwrap_or_default();
    let available_cond = if available >= min_avail {
        cond(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        cond(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    let progressing = if complete {
        cond(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        )
    } else {
        cond(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
        )
    };
    let mut status = json!({
        "observedGeneration": i64_at(d, "/metadata/generation"),
        "replicas": replicas,
        "updatedReplicas": updated,
        "conditions": [available_cond, progressing],
    });
    if ready > 0 {
        status["readyReplicas"] = json!(ready);
    }
    if available > 0 {
        status["availableReplicas"] = json!(available);
    }
    if replicas - available > 0 {
        status["unavailableReplicas"] = json!(replicas - available);
    }
    let rev = newest.map(revision).unwrap_or(0).to_string();
    if d.pointer(&format!(
        "/metadata/annotations/{}",
        REVISION.replace('/', "~1")
    ))
    .and_then(Value::as_str)
        != Some(rev.as_str())
    {
        let mut ctx = WriteCtx::controller("deployment-controller");
        let _ = core.modify(
            rd("apps", "deployments"),
            Some(ns),
            name,
            None,
            &mut ctx,
            |o| {
                let mut o = o.clone();
                if !o
                    .pointer("/metadata/annotations")
                    .is_some_and(Value::is_object)
                {
                    o["metadata"]["annotations"] = json!({});
                }
                o["metadata"]["annotations"][REVISION] = json!(rev);
                Ok(o)
            },
        );
        return; // status is written on the next pass, against the new object
    }
    let _ = pod_active;
    set_status(
        core,
        rd("apps", "deployments"),
        d,
        status,
        "deployment-controller",
    );
}
