//! Job controller: runs pods until `completions` succeed (at most
//! `parallelism` at a time), fails the Job after `backoffLimit` failed
//! pods, and sets startTime/completionTime and Complete/Failed conditions.

use super::{
    controller_uid, create_pod_from_template, deleting, i64_at, list, pod_active, pod_ready, rd,
    set_status, uid, Settings,
};
use crate::api::objects::{meta_str, now, Core, DeleteOptions};
use crate::registry;
use serde_json::{json, Value};

pub fn pass(core: &Core, _s: &Settings) {
    for job in list(core, "batch", "jobs", None) {
        if deleting(&job) {
            continue;
        }
        let ns = meta_str(&job, "namespace");
        let conds = job
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let finished = conds
            .iter()
            .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True");
        let pods = list(core, "", "pods", Some(ns));
        let mine: Vec<&Value> = pods
            .iter()
            .map(|p| &**p)
            .filter(|p| controller_uid(p) == Some(uid(&job)))
            .collect();
        let phase = |p: &Value| {
            p.pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let succeeded = mine.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
        let failed = mine.iter().filter(|p| phase(p) == "Failed").count() as i64;
        let active: Vec<&Value> = mine.iter().copied().filter(|p| pod_active(p)).collect();
        let completions = job
            .pointer("/spec/completions")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let parallelism = i64_at(&job, "/spec/parallelism");
        let backoff = job
            .pointer("/spec/backoffLimit")
            .and_then(Value::as_i64)
            .unwrap_or(6);
        let suspended = job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
        let mut status = job.get("status").cloned().unwrap_or(json!({}));
        if status.get("startTime").is_none() && !suspended {
            status["startTime"] = json!(now());
        }
        let mut new_conds = conds.clone();
        if !finished {
            if failed > backoff {
                for p in &active {
                    let _ = core.delete(
                        registry::pods(),
                        Some(ns),
                        meta_str(p, "name"),
                        &DeleteOptions::default(),
                    );
                }
                new_conds.push(json!({"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now(), "lastTransitionTime": now()}));
                new_conds.push(json!({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now(), "lastTransitionTime": now()}));
            } else if succeeded >= completions {
                new_conds.push(json!({"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now(), "lastTransitionTime": now()}));
                new_conds.push(json!({"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now(), "lastTransitionTime": now()}));
                status["completionTime"] = json!(now());
            } else if !suspended {
                let want = parallelism.min(completions - succeeded) - active.len() as i64;
                let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
                for _ in 0..want.max(0) {
                    create_pod_from_template(
                        core,
                        &job,
                        "Job",
                        "batch/v1",
                        &template,
                        &[],
                        None,
                        "job-controller",
                    );
                }
            }
        }
        let active_now = list(core, "", "pods", Some(ns))
            .iter()
            .filter(|p| controller_uid(p) == Some(uid(&job)) && pod_active(p))
            .count();
        status["active"] = json!(active_now);
        status["succeeded"] = json!(succeeded);
        status["failed"] = json!(failed);
        status["ready"] = json!(active.iter().filter(|p| pod_ready(p)).count());
        status["terminating"] = json!(mine.iter().filter(|p| deleting(p)).count());
        if !new_conds.is_empty() {
            status["conditions"] = json!(new_conds);
        }
        if let Some(m) = status.as_object_mut() {
            m.retain(|k, v| {
                !(matches!(k.as_str(), "active" | "succeeded" | "failed") && v == &json!(0))
            });
        }
        set_status(core, rd("batch", "jobs"), &job, status, "job-controller");
    }
}
