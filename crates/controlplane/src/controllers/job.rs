//! Job controller: runs pods until `completions` succeed (at most
//! `parallelism` at a time), fails the Job after `backoffLimit` failed
//! pods, and sets startTime/completionTime and Complete/Failed conditions.
//!
//! As upstream, a pod that failed is replaced only after the Job's pod
//! failure back-off (10 s doubling per failure, at most 6 min, counted from
//! when the failure was seen), and creations go in slow-start batches, so
//! even a huge `backoffLimit` cannot turn a failing template into a storm.

use super::replicaset::BURST_REPLICAS;
use super::{
    controller_uid, create_pod_from_template, deleting, i64_at, list, pod_active, pod_ready, rd,
    set_status, uid, Settings,
};
use crate::api::objects::{meta_str, now, Core, DeleteOptions};
use crate::registry;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upstream's `DefaultJobPodFailureBackOff` and `MaxJobPodFailureBackOff`.
const POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(360);

/// Per Job (by uid): failed pods seen, and when their count last grew.
static FAILURES: Mutex<Option<HashMap<String, (i64, Instant)>>> = Mutex::new(None);

/// How long after the last failure a replacement may be created: 10 s for
/// the first failure, doubling per further failure, at most 6 min.
fn failure_backoff(failed: i64) -> Duration {
    if failed <= 0 {
        return Duration::ZERO;
    }
    let exp = (failed - 1).min(16) as u32;
    (POD_FAILURE_BACKOFF * 2u32.pow(exp)).min(MAX_POD_FAILURE_BACKOFF)
}

/// Whether the Job with `uid` and `failed` failed pods is still backing off.
fn backing_off(uid: &str, failed: i64, now: Instant) -> bool {
    let Ok(mut g) = FAILURES.lock() else {
        return false;
    };
    let m = g.get_or_insert_with(HashMap::new);
    let e = m.entry(uid.to_string()).or_insert((0, now));
    if failed > e.0 {
        *e = (failed, now);
    } else if failed < e.0 {
        // Failed pods removed (not by us): keep the time, follow the count.
        e.0 = failed;
    }
    failed > 0 && now < e.1 + failure_backoff(failed)
}

pub fn pass(core: &Core, _s: &Settings) {
    let jobs = list(core, "batch", "jobs", None);
    if let Ok(mut g) = FAILURES.lock() {
        if let Some(m) = g.as_mut() {
            m.retain(|u, _| jobs.iter().any(|j| uid(j) == u));
        }
    }
    for job in jobs {
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
            } else if !suspended && !backing_off(uid(&job), failed, Instant::now()) {
                let want = parallelism.min(completions - succeeded) - active.len() as i64;
                let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
                super::replicaset::slow_start_batch(want.min(BURST_REPLICAS), || {
                    create_pod_from_template(
                        core,
                        &job,
                        "Job",
                        "batch/v1",
                        &template,
                        &[],
                        None,
                        "job-controller",
                    )
                });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_failure_backoff_doubles_to_six_minutes() {
        let secs: Vec<u64> = (0..8).map(|f| failure_backoff(f).as_secs()).collect();
        assert_eq!(secs, [0, 10, 20, 40, 80, 160, 320, 360]);
        assert_eq!(failure_backoff(i64::MAX).as_secs(), 360);
    }

    #[test]
    fn a_new_failure_holds_replacements() {
        let t = Instant::now();
        let u = "job-backoff-test-uid";
        assert!(!backing_off(u, 0, t));
        assert!(backing_off(u, 1, t));
        assert!(backing_off(u, 1, t + Duration::from_secs(9)));
        assert!(!backing_off(u, 1, t + Duration::from_secs(10)));
        // The second failure, seen at 10 s: 20 s from then.
        assert!(backing_off(u, 2, t + Duration::from_secs(10)));
        assert!(!backing_off(u, 2, t + Duration::from_secs(30)));
    }
}
