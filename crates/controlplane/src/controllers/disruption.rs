//! Disruption controller (upstream's pkg/controller/disruption) and the eviction subresource's
//! PDB rules (pkg/registry/core/pod/storage/eviction.go).
//!
//! The controller keeps each PodDisruptionBudget's status: the pods its selector matches
//! (an empty selector matches the whole namespace, a missing one nothing), how many are healthy
//! (Ready, not terminating, not just evicted), how many must be (`minAvailable`, or the expected
//! count minus `maxUnavailable`; percentages scale the pods' controllers' replicas), and so how
//! many disruptions are allowed now, with the `DisruptionAllowed` condition. Evictions
//! decrement `disruptionsAllowed` and record the pod in `disruptedPods` in one compare-and-swap
//! write; the controller writes with the resourceVersion it read, so neither can overwrite the
//! other's newer state.

use super::{deleting, i64_at, list, pod_ready, rd, record_event, Settings};
use crate::api::error::{ApiError, ApiResult};
use crate::api::objects::{meta_str, now, Core, DeleteOptions, WriteCtx};
use crate::api::selector::LabelSelector;
use crate::registry;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// How long an evicted pod is counted as going away before the controller assumes its
/// deletion failed (upstream's `DeletionTimeout`).
const DELETION_TIMEOUT_SECS: i64 = 120;
/// The eviction handler refuses once this many evictions wait for the controller.
const MAX_DISRUPTED_PODS: usize = 2000;
const MANAGER: &str = "disruption-controller";

pub fn pass(core: &Core, _s: &Settings) {
    // PDBs are read before the pods: an eviction in between changes their resourceVersion,
    // so the stale status below is refused (conflict) and recomputed next pass.
    let pdbs = list(core, "policy", "poddisruptionbudgets", None);
    if pdbs.is_empty() {
        return;
    }
    let pods = list(core, "", "pods", None);
    let mut by_ns: HashMap<&str, Vec<&Arc<Value>>> = HashMap::new();
    for p in &pods {
        by_ns.entry(meta_str(p, "namespace")).or_default().push(p);
    }
    for pdb in &pdbs {
        let ns = meta_str(pdb, "namespace");
        let selected = selected_pods(pdb, by_ns.get(ns).map(Vec::as_slice).unwrap_or(&[]));
        let status = match expected_pods(core, pdb, &selected) {
            Ok((expected, desired)) => healthy_status(pdb, &selected, expected, desired),
            Err(why) => {
                record_event(
                    core,
                    pdb,
                    "PodDisruptionBudget",
                    "Warning",
                    "CalculateExpectedPodCountFailed",
                    &format!("Failed to calculate the number of expected pods: {why}"),
                    MANAGER,
                );
                fail_safe(pdb, &why)
            }
        };
        write_status(core, pdb, status);
    }
}

fn selected_pods<'a>(pdb: &Value, pods: &[&'a Arc<Value>]) -> Vec<&'a Arc<Value>> {
    match pdb.pointer("/spec/selector").filter(|s| !s.is_null()) {
        None => Vec::new(),
        Some(sel) => {
            let sel = LabelSelector::from_object(sel);
            pods.iter().copied().filter(|p| sel.matches(p)).collect()
        }
    }
}

/// The PDBs of the pod's namespace whose selector matches it.
fn pdbs_for_pod(core: &Core, pod: &Value) -> Vec<Arc<Value>> {
    let ns = meta_str(pod, "namespace");
    list(core, "policy", "poddisruptionbudgets", Some(ns))
        .into_iter()
        .filter(|pdb| {
            pdb.pointer("/spec/selector")
                .filter(|s| !s.is_null())
                .is_some_and(|s| LabelSelector::from_object(s).matches(pod))
        })
        .collect()
}

/// (expectedPods, desiredHealthy), as `getExpectedPodCount`.
fn expected_pods(core: &Core, pdb: &Value, pods: &[&Arc<Value>]) -> Result<(i64, i64), String> {
    let spec = &pdb["spec"];
    let max_unavailable = spec.get("maxUnavailable").filter(|v| !v.is_null());
    let min_available = spec.get("minAvailable").filter(|v| !v.is_null());
    if let Some(mu) = max_unavailable {
        let expected = expected_scale(core, pods)?;
        let mu = scaled(mu, expected)?;
        return Ok((expected, (expected - mu).max(0)));
    }
    match min_available {
        Some(Value::Number(n)) => Ok((pods.len() as i64, n.as_i64().unwrap_or(0))),
        Some(v @ Value::String(_)) => {
            let expected = expected_scale(core, pods)?;
            Ok((expected, scaled(v, expected)?))
        }
        _ => Ok((0, 0)),
    }
}

/// `GetScaledValueFromIntOrPercent(v, total, roundUp=true)`.
fn scaled(v: &Value, total: i64) -> Result<i64, String> {
    match v {
        Value::Number(n) => Ok(n.as_i64().unwrap_or(0)),
        Value::String(s) => {
            let p: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            Ok((p * total + 99) / 100)
        }
        _ => Err("invalid value for IntOrString".into()),
    }
}

/// The sum of the scales of the pods' controllers (`getExpectedScale`): a ReplicaSet owned by a
/// Deployment counts as the Deployment; pods without a controller are left out.
fn expected_scale(core: &Core, pods: &[&Arc<Value>]) -> Result<i64, String> {
    let mut scales: HashMap<String, i64> = HashMap::new();
    for pod in pods {
        let Some(owner) = controller_ref(pod) else {
            continue;
        };
        let uid = owner["uid"].as_str().unwrap_or("").to_string();
        if scales.contains_key(&uid) {
            continue;
        }
        let ns = meta_str(pod, "namespace");
        match controller_scale(core, ns, owner) {
            Some((uid, scale)) => {
                scales.insert(uid, scale);
            }
            None => {
                return Err(format!(
                    "found no controllers for pod {:?}",
                    meta_str(pod, "name")
                ))
            }
        }
    }
    Ok(scales.values().sum())
}

fn controller_ref(o: &Value) -> Option<&Value> {
    o.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r["controller"].as_bool() == Some(true))
}

/// (uid, replicas) of the scalable controller `owner` names, as the finders look them up.
fn controller_scale(core: &Core, ns: &str, owner: &Value) -> Option<(String, i64)> {
    let kind = owner["kind"].as_str().unwrap_or("");
    let name = owner["name"].as_str().unwrap_or("");
    let uid = owner["uid"].as_str().unwrap_or("");
    let group = owner["apiVersion"]
        .as_str()
        .and_then(|v| v.split_once('/'))
        .map_or("", |(g, _)| g);
    let get = |group: &str, kind: &str, name: &str, uid: &str| -> Option<Arc<Value>> {
        let r = registry::find_kind(group, kind)?;
        let o = core.get_stored(r, Some(ns), name)?.object;
        (meta_str(&o, "uid") == uid).then_some(o)
    };
    let obj = match (group, kind) {
        ("apps", "ReplicaSet") => {
            let rs = get("apps", "ReplicaSet", name, uid)?;
            match controller_ref(&rs).filter(|r| r["kind"] == "Deployment") {
                Some(d) => get(
                    "apps",
                    "Deployment",
                    d["name"].as_str().unwrap_or(""),
                    d["uid"].as_str().unwrap_or(""),
                )?,
                None => rs,
            }
        }
        ("apps", "StatefulSet") | ("", "ReplicationController") => get(group, kind, name, uid)?,
        _ => {
            // Anything else with a scale subresource (upstream's generic scale finder).
            let r = registry::find_kind(group, kind)?;
            if !r.subresources.contains(&"scale") {
                return None;
            }
            get(group, kind, name, uid)?
        }
    };
    let replicas = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    Some((meta_str(&obj, "uid").to_string(), replicas))
}

fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    s.parse().ok()
}

/// The status from the selected pods: `disruptedPods` keeps the evicted pods that still exist,
/// are not terminating and were evicted less than two minutes ago; healthy pods are Ready,
/// not terminating and not among them.
fn healthy_status(pdb: &Value, pods: &[&Arc<Value>], expected: i64, desired: i64) -> Value {
    let now = jiff::Timestamp::now();
    let old = pdb
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut disrupted = Map::new();
    for p in pods {
        if deleting(p) {
            continue;
        }
        let name = meta_str(p, "name");
        if let Some(t) = old.get(name) {
            let fresh = t
                .as_str()
                .and_then(parse_time)
                .is_some_and(|t| t + jiff::SignedDuration::from_secs(DELETION_TIMEOUT_SECS) > now);
            if fresh {
                disrupted.insert(name.to_string(), t.clone());
            }
        }
    }
    let healthy = pods
        .iter()
        .filter(|p| !deleting(p) && !disrupted.contains_key(meta_str(p, "name")) && pod_ready(p))
        .count() as i64;
    let mut allowed = healthy - desired;
    if expected <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let generation = i64_at(pdb, "/metadata/generation");
    let mut status = json!({"observedGeneration": generation});
    if !disrupted.is_empty() {
        status["disruptedPods"] = Value::Object(disrupted);
    }
    status["disruptionsAllowed"] = json!(allowed);
    status["currentHealthy"] = json!(healthy);
    status["desiredHealthy"] = json!(desired);
    status["expectedPods"] = json!(expected);
    let (st, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    status["conditions"] = set_condition(pdb, st, reason, "", generation);
    status
}

/// `failSafe`: no disruptions allowed while the status cannot be computed.
fn fail_safe(pdb: &Value, why: &str) -> Value {
    let mut status = pdb.get("status").cloned().unwrap_or(json!({}));
    status["disruptionsAllowed"] = json!(0);
    let generation = i64_at(pdb, "/status/observedGeneration");
    status["conditions"] = set_condition(pdb, "False", "SyncFailed", why, generation);
    status
}

/// The PDB's conditions with `DisruptionAllowed` set (`SetStatusCondition`: the transition
/// time moves only when the status does).
fn set_condition(pdb: &Value, status: &str, reason: &str, message: &str, generation: i64) -> Value {
    let mut conds: Vec<Value> = pdb
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let prev = conds.iter().position(|c| c["type"] == "DisruptionAllowed");
    let since = prev
        .map(|i| &conds[i])
        .filter(|c| c["status"] == status)
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now()));
    let cond = json!({
        "type": "DisruptionAllowed",
        "status": status,
        "observedGeneration": generation,
        "lastTransitionTime": since,
        "reason": reason,
        "message": message,
    });
    match prev {
        Some(i) => conds[i] = cond,
        None => conds.push(cond),
    }
    Value::Array(conds)
}

/// Writes `status` with the resourceVersion the PDB was read at (a conflict waits for the next
/// pass, which starts from the newer state).
fn write_status(core: &Core, pdb: &Value, status: Value) {
    if pdb.get("status") == Some(&status) {
        return;
    }
    let mut new = pdb.clone();
    new["status"] = status;
    let mut ctx = WriteCtx::controller(MANAGER);
    let r = rd("policy", "poddisruptionbudgets");
    let ns = meta_str(pdb, "namespace");
    if let Err(e) = core.update(
        r,
        Some(ns),
        meta_str(pdb, "name"),
        new,
        Some("status"),
        &mut ctx,
    ) {
        if e.reason != "Conflict" && e.reason != "NotFound" {
            tracing::warn!(
                "poddisruptionbudget {ns}/{}: {}",
                meta_str(pdb, "name"),
                e.message
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Eviction
// ---------------------------------------------------------------------------

/// What an eviction came to, when it is not an error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Evicted {
    /// The pod is deleted (or its graceful deletion started).
    Deleted,
    /// More than one PDB covers the pod: upstream answers a bare 500 Status.
    ManyBudgets,
}

/// The message of [`Evicted::ManyBudgets`].
pub(crate) const MANY_BUDGETS: &str =
    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.";

fn too_many_requests(message: &str, retry_after: Option<i64>, cause: String) -> ApiError {
    let mut e = ApiError::new(429, "TooManyRequests", message);
    let mut d = json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]});
    if let Some(s) = retry_after {
        d["retryAfterSeconds"] = json!(s);
    }
    e.details = Some(d);
    e
}

/// `createTooManyRequestsError`: the PDB's status is not current yet.
fn still_processing(pdb: &str) -> ApiError {
    too_many_requests(
        "Cannot evict pod as it would violate the pod's disruption budget.",
        Some(10),
        format!("The disruption budget {pdb} is still being processed by the server."),
    )
}

fn pdb_forbidden(pdb: &str, why: &str) -> ApiError {
    let mut e = ApiError::new(
        403,
        "Forbidden",
        format!("poddisruptionbudget.policy \"{pdb}\" is forbidden: {why}"),
    );
    e.details = Some(json!({"name": pdb, "group": "policy", "kind": "poddisruptionbudget"}));
    e
}

/// Terminal, pending or terminating pods may go without asking their PDB (`canIgnorePDB`).
fn can_ignore_pdb(pod: &Value) -> bool {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    matches!(phase, "Succeeded" | "Failed" | "Pending") || deleting(pod)
}

/// Evicts pod `ns/name` as the eviction subresource does: pods that can ignore their PDB are
/// deleted; otherwise the one PDB covering it must allow a disruption, which is taken (and the
/// pod recorded in `disruptedPods`) before the pod is deleted with `opts`.
pub(crate) fn evict(core: &Core, ns: &str, name: &str, opts: &DeleteOptions) -> ApiResult<Evicted> {
    let pods = registry::pods();
    let rv_unset = opts.precondition_rv.is_none();
    let mut pod: Option<Arc<Value>> = None;
    for _ in 0..20 {
        let p = core
            .get_stored(pods, Some(ns), name)
            .ok_or_else(|| ApiError::not_found(pods, name))?
            .object;
        if !can_ignore_pdb(&p) {
            pod = Some(p);
            break;
        }
        let mut o = opts.clone();
        // A pending pod could turn ready meanwhile: delete exactly the version seen.
        let enforce = !matches!(
            p.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        ) && !deleting(&p);
        if enforce && rv_unset {
            o.precondition_rv = Some(meta_str(&p, "resourceVersion").to_string());
        }
        match mark_and_delete(core, ns, name, &o) {
            Err(e) if e.reason == "Conflict" && rv_unset => continue,
            Err(e) => return Err(e),
            Ok(()) => return Ok(Evicted::Deleted),
        }
    }
    let Some(pod) = pod else {
        return Err(ApiError::conflict(pods, name));
    };
    let pdbs = pdbs_for_pod(core, &pod);
    if pdbs.len() > 1 {
        return Ok(Evicted::ManyBudgets);
    }
    let Some(first) = pdbs.into_iter().next() else {
        mark_and_delete(core, ns, name, opts)?;
        return Ok(Evicted::Deleted);
    };
    let pdb_name = meta_str(&first, "name").to_string();
    let unhealthy_ok = !pod_ready(&pod)
        && (first
            .pointer("/spec/unhealthyPodEvictionPolicy")
            .and_then(Value::as_str)
            == Some("AlwaysAllow")
            || {
                let cur = i64_at(&first, "/status/currentHealthy");
                let want = i64_at(&first, "/status/desiredHealthy");
                cur >= want && want > 0
            });
    if !unhealthy_ok {
        let mut pdb = first;
        let mut done = false;
        for _ in 0..20 {
            match check_and_decrement(core, &pdb, name, opts.dry_run) {
                Err(e) if e.reason == "Conflict" => {
                    let r = rd("policy", "poddisruptionbudgets");
                    pdb = core
                        .get_stored(r, Some(ns), &pdb_name)
                        .ok_or_else(|| ApiError::not_found(r, &pdb_name))?
                        .object;
                }
                Err(e) => return Err(e),
                Ok(()) => {
                    done = true;
                    break;
                }
            }
        }
        if !done {
            return Err(ApiError::new(
                504,
                "Timeout",
                format!("couldn't update PodDisruptionBudget \"{pdb_name}\" due to conflicts"),
            ));
        }
    }
    let mut o = opts.clone();
    if unhealthy_ok && rv_unset {
        // The unready pod must not have turned ready since it was judged.
        o.precondition_rv = Some(meta_str(&pod, "resourceVersion").to_string());
    }
    match mark_and_delete(core, ns, name, &o) {
        Err(e) if e.reason == "Conflict" && unhealthy_ok && rv_unset => {
            Err(still_processing(&pdb_name))
        }
        Err(e) => Err(e),
        Ok(()) => Ok(Evicted::Deleted),
    }
}

/// `checkAndDecrement`: takes one allowed disruption from the PDB and records the pod in
/// `disruptedPods`, in one write with the PDB's resourceVersion (a conflict is retried by the
/// caller from a fresh read).
fn check_and_decrement(core: &Core, pdb: &Value, pod: &str, dry_run: bool) -> ApiResult<()> {
    let name = meta_str(pdb, "name");
    if i64_at(pdb, "/status/observedGeneration") < i64_at(pdb, "/metadata/generation") {
        return Err(still_processing(name));
    }
    let allowed = i64_at(pdb, "/status/disruptionsAllowed");
    if allowed < 0 {
        return Err(pdb_forbidden(name, "pdb disruptions allowed is negative"));
    }
    let disrupted = pdb
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, Map::len);
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(pdb_forbidden(
            name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(too_many_requests(
            "Cannot evict pod as it would violate the pod's disruption budget.",
            None,
            format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                i64_at(pdb, "/status/desiredHealthy"),
                i64_at(pdb, "/status/currentHealthy")
            ),
        ));
    }
    if dry_run {
        return Ok(());
    }
    let mut new = pdb.clone();
    new["status"]["disruptionsAllowed"] = json!(allowed - 1);
    if allowed - 1 == 0 {
        let generation = i64_at(pdb, "/status/observedGeneration");
        new["status"]["conditions"] =
            set_condition(pdb, "False", "InsufficientPods", "", generation);
    }
    if !new["status"]
        .get("disruptedPods")
        .is_some_and(Value::is_object)
    {
        new["status"]["disruptedPods"] = json!({});
    }
    new["status"]["disruptedPods"][pod] = json!(now());
    let mut ctx = WriteCtx::controller("kube-apiserver");
    core.update(
        rd("policy", "poddisruptionbudgets"),
        Some(meta_str(pdb, "namespace")),
        name,
        new,
        Some("status"),
        &mut ctx,
    )
    .map(|_| ())
}

/// Adds the pod's `DisruptionTarget` condition (reason `EvictionByEvictionAPI`) and deletes it;
/// a resourceVersion precondition is checked by the condition's write and carried to the
/// version that write made.
fn mark_and_delete(core: &Core, ns: &str, name: &str, opts: &DeleteOptions) -> ApiResult<()> {
    let pods = registry::pods();
    let mut opts = opts.clone();
    let marked = |p: &Value| {
        p.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "DisruptionTarget" && c["status"] == "True")
            })
    };
    let current = core.get_stored(pods, Some(ns), name).map(|s| s.object);
    // A pod evicted again keeps its condition (and transition time) as it is.
    if !opts.dry_run && !current.as_deref().is_some_and(marked) {
        let cur = core
            .get_stored(pods, Some(ns), name)
            .ok_or_else(|| ApiError::not_found(pods, name))?
            .object;
        if let Some(uid) = &opts.precondition_uid {
            if meta_str(&cur, "uid") != uid {
                return Err(ApiError::conflict(pods, name));
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            if meta_str(&cur, "resourceVersion") != rv {
                return Err(ApiError::conflict(pods, name));
            }
        }
        let mut new = (*cur).clone();
        let mut conds: Vec<Value> = new
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conds.retain(|c| c["type"] != "DisruptionTarget");
        conds.push(json!({
            "type": "DisruptionTarget",
            "status": "True",
            "lastProbeTime": null,
            "lastTransitionTime": now(),
            "reason": "EvictionByEvictionAPI",
            "message": "Eviction API: evicting",
        }));
        new["status"]["conditions"] = json!(conds);
        let mut ctx = WriteCtx::controller("kube-apiserver");
        let written = core.update(pods, Some(ns), name, new, Some("status"), &mut ctx)?;
        if opts.precondition_rv.is_some() {
            opts.precondition_rv = Some(meta_str(&written, "resourceVersion").to_string());
        }
    }
    core.delete(pods, Some(ns), name, &opts).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool) -> Arc<Value> {
        Arc::new(
            json!({"metadata": {"name": name, "namespace": "d", "labels": {"app": "a"}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}),
        )
    }

    #[test]
    fn status_counts_healthy_and_recent_evictions() {
        let pods = [pod("a", true), pod("b", true), pod("c", false)];
        let refs: Vec<&Arc<Value>> = pods.iter().collect();
        let pdb = json!({"metadata": {"generation": 2}, "spec": {"minAvailable": 1, "selector": {}},
            "status": {"disruptedPods": {"a": now(), "gone": now()}}});
        let st = healthy_status(&pdb, &refs, 3, 1);
        assert_eq!(st["currentHealthy"], 1, "{st}");
        assert_eq!(st["disruptionsAllowed"], 0);
        assert_eq!(st["observedGeneration"], 2);
        assert_eq!(st["disruptedPods"].as_object().map(Map::len), Some(1));
        assert_eq!(st["conditions"][0]["reason"], "InsufficientPods");
        let fresh = json!({"metadata": {"generation": 1}, "spec": {}});
        let st = healthy_status(&fresh, &refs, 3, 1);
        assert_eq!(st["disruptionsAllowed"], 1);
        assert_eq!(st["conditions"][0]["status"], "True");
        assert_eq!(st["conditions"][0]["reason"], "SufficientPods");
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&json!("50%"), 3), Ok(2));
        assert_eq!(scaled(&json!("100%"), 0), Ok(0));
        assert_eq!(scaled(&json!(2), 10), Ok(2));
        assert!(scaled(&json!("x"), 1).is_err());
    }
}
