//! ReplicaSet controller: keeps `spec.replicas` active pods that the
//! ReplicaSet controls (adopting matching orphans), and reports
//! replicas/ready/available in status. ReplicationControllers (core/v1) are
//! the same loop with a map selector, as upstream runs one controller for both.
//!
//! Pods are created as upstream's `slowStartBatch` does: batches of 1, 2,
//! 4, ... (at most `BURST_REPLICAS` per pass), stopping at the first batch
//! with an error, so a template the API refuses costs one request per pass,
//! not `replicas` of them. Only Failed/Succeeded (and terminating) pods are
//! replaced; a Pending pod — an image that cannot be pulled, a volume that
//! cannot be mounted — counts as a replica, as upstream. Beyond upstream,
//! replacing pods that turned Failed waits a per-ReplicaSet back-off (1 s
//! doubling to 5 min, reset once the set is fully ready), as the DaemonSet
//! controller's failed-pods back-off does: a node that fails every pod it is
//! given then costs a pod per back-off step, never a storm.

use super::{
    controller_uid, create_pod_from_template, deleting, i64_at, list, pod_active, pod_ready, rd,
    record_event, set_status, uid, FailedPods, Settings,
};
use crate::api::objects::{meta_str, Core, DeleteOptions};
use crate::api::selector::LabelSelector;
use crate::registry;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upstream's `burstReplicas`: the most pods one pass creates or deletes.
pub(super) const BURST_REPLICAS: i64 = 500;

/// Runs `count` calls of `f` in batches of 1, 2, 4, ... (upstream's
/// `slowStartBatch` with an initial batch of 1), stopping after the first
/// batch in which a call failed; returns how many succeeded. A batch is run
/// whole (upstream runs it in parallel and waits for all of it).
pub(super) fn slow_start_batch(count: i64, mut f: impl FnMut() -> bool) -> i64 {
    let mut remaining = count.max(0);
    let mut successes = 0;
    let mut batch = remaining.min(1);
    while batch > 0 {
        let ok = (0..batch).filter(|_| f()).count() as i64;
        successes += ok;
        if ok < batch {
            break;
        }
        remaining -= batch;
        batch = (2 * batch).min(remaining);
    }
    successes
}

/// Per ReplicaSet (by uid): its failed-pod back-off.
static FAILED: Mutex<Option<HashMap<String, FailedPods>>> = Mutex::new(None);

/// What differs between the two kinds this loop serves.
struct Kind {
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    api_version: &'static str,
    manager: &'static str,
}

const REPLICASET: Kind = Kind {
    group: "apps",
    plural: "replicasets",
    kind: "ReplicaSet",
    api_version: "apps/v1",
    manager: "replicaset-controller",
};

const REPLICATION_CONTROLLER: Kind = Kind {
    group: "",
    plural: "replicationcontrollers",
    kind: "ReplicationController",
    api_version: "v1",
    manager: "replication-controller",
};

pub fn pass(core: &Core, _s: &Settings) {
    let rss = list(core, "apps", "replicasets", None);
    let rcs = list(core, "", "replicationcontrollers", None);
    for (k, objs) in [(&REPLICASET, &rss), (&REPLICATION_CONTROLLER, &rcs)] {
        for rs in objs.iter() {
            if deleting(rs) {
                continue;
            }
            sync(core, rs, k);
        }
    }
    // Forget ReplicaSets that are gone.
    if let Ok(mut f) = FAILED.lock() {
        if let Some(m) = f.as_mut() {
            m.retain(|u, _| rss.iter().chain(rcs.iter()).any(|rs| uid(rs) == u));
        }
    }
}

fn sync(core: &Core, rs: &Value, k: &Kind) {
    let ns = meta_str(rs, "namespace");
    let sel_obj = rs.pointer("/spec/selector").unwrap_or(&Value::Null);
    let sel = if k.group.is_empty() {
        // A ReplicationController's selector is a plain map of labels.
        LabelSelector::from_object(&json!({"matchLabels": sel_obj}))
    } else {
        LabelSelector::from_object(sel_obj)
    };
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
                super::set_pod_owner(
                    core,
                    ns,
                    meta_str(p, "name"),
                    k.manager,
                    &super::owner_ref(rs, k.kind, k.api_version),
                    true,
                );
                owned.push(p);
            }
            _ => {}
        }
    }
    let active: Vec<&Value> = owned.iter().copied().filter(|p| pod_active(p)).collect();
    let want = i64_at(rs, "/spec/replicas");
    let diff = want - active.len() as i64;
    let failed = owned
        .iter()
        .filter(|p| {
            !deleting(p) && p.pointer("/status/phase").and_then(Value::as_str) == Some("Failed")
        })
        .count();
    let hold = FAILED
        .lock()
        .map(|mut f| {
            let m = f.get_or_insert_with(HashMap::new);
            let e = m.entry(my_uid.to_string()).or_default();
            let hold = e.observe(failed, Instant::now());
            let ready = active.iter().filter(|p| pod_ready(p)).count() as i64;
            if diff <= 0 && ready == want {
                // Fully ready: the next failure starts the back-off over.
                e.delay = Duration::ZERO;
            }
            hold
        })
        .unwrap_or(false);
    if diff > 0 && !hold {
        let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let created = slow_start_batch(diff.min(BURST_REPLICAS), || {
            create_pod_from_template(
                core,
                rs,
                k.kind,
                k.api_version,
                &template,
                &[],
                None,
                k.manager,
            )
        });
        if created > 0 {
            record_event(
                core,
                rs,
                k.kind,
                "Normal",
                "SuccessfulCreate",
                &format!("Created {created} pod(s)"),
                k.manager,
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
        for p in victims
            .into_iter()
            .take((-diff).min(BURST_REPLICAS) as usize)
        {
            let _ = core.delete(
                registry::pods(),
                Some(ns),
                meta_str(p, "name"),
                &DeleteOptions::default(),
            );
            record_event(
                core,
                rs,
                k.kind,
                "Normal",
                "SuccessfulDelete",
                &format!("Deleted pod: {}", meta_str(p, "name")),
                k.manager,
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
    set_status(core, rd(k.group, k.plural), rs, status, k.manager);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls of a slow start, recording the batch each call belongs to.
    fn batches(count: i64, fail_at: Option<usize>) -> (i64, Vec<usize>) {
        let mut calls = 0usize;
        let ok = slow_start_batch(count, || {
            calls += 1;
            Some(calls) != fail_at
        });
        // Batch boundaries: 1, 2, 4, ... calls.
        let mut sizes = vec![];
        let (mut left, mut b) = (calls, 1usize);
        while left > 0 {
            let n = b.min(left);
            sizes.push(n);
            left -= n;
            b *= 2;
        }
        (ok, sizes)
    }

    #[test]
    fn slow_start_doubles_its_batches() {
        assert_eq!(batches(0, None), (0, vec![]));
        assert_eq!(batches(1, None), (1, vec![1]));
        // 1 + 2 + 4 + 3 (the rest).
        assert_eq!(batches(10, None), (10, vec![1, 2, 4, 3]));
        assert_eq!(batches(500, None).0, 500);
    }

    #[test]
    fn slow_start_stops_after_the_first_failing_batch() {
        // The very first call fails: one request, not ten.
        assert_eq!(batches(10, Some(1)), (0, vec![1]));
        // A failure in the third batch (calls 4-7): that batch runs whole, no fourth.
        let (ok, sizes) = batches(100, Some(5));
        assert_eq!(sizes, vec![1, 2, 4]);
        assert_eq!(ok, 6);
    }

    #[test]
    fn failed_pods_back_off_grows_and_holds() {
        let t = Instant::now();
        let mut f = FailedPods::default();
        assert!(!f.observe(0, t), "no failures: no hold");
        assert!(f.observe(1, t), "a new failure holds replacements");
        assert!(!f.observe(1, t + Duration::from_secs(1)), "1 s later");
        assert!(f.observe(2, t + Duration::from_secs(1)));
        assert_eq!(f.delay, Duration::from_secs(2));
        for _ in 0..20 {
            f.seen = 0;
            f.observe(1, t);
        }
        assert_eq!(f.delay, super::super::FAILED_BACKOFF_MAX);
        // Failed pods deleted: no new failure, the hold only runs out.
        assert!(!f.observe(0, t + super::super::FAILED_BACKOFF_MAX));
    }
}
