//! The scheduler: binds pending pods to nodes that are Ready and
//! schedulable, tolerate-able (NoSchedule/NoExecute taints), match
//! nodeSelector and required node affinity, and have room for the pod's
//! requests (cpu, memory, pod count) within allocatable; among those it
//! picks the node running the fewest pods (spreading), as the default
//! profile's NodeResourcesFit + balanced scoring roughly does. Pods with
//! claims go through `Volumes` (upstream's VolumeBinding plugin, below).

use super::volumes::{
    best_match, claim_class, claim_is_for_pod, pod_claims, pv_fits_node, set_claim_ref,
};
use super::{list, pod_active, quantity, record_event, Settings};
use crate::api::objects::{meta_str, now, Core, WriteCtx};
use crate::registry;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

fn node_ready(n: &Value) -> bool {
    n.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

pub(crate) fn tolerates(pod: &Value, taint: &Value) -> bool {
    let tols = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    tols.iter().any(|t| {
        let effect_ok = t["effect"]
            .as_str()
            .is_none_or(|e| e.is_empty() || Some(e) == taint["effect"].as_str());
        let key = t["key"].as_str().unwrap_or("");
        match t["operator"].as_str().unwrap_or("Equal") {
            "Exists" => effect_ok && (key.is_empty() || Some(key) == taint["key"].as_str()),
            _ => {
                effect_ok
                    && Some(key) == taint["key"].as_str()
                    && t["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or("")
            }
        }
    })
}

pub(crate) fn match_expr(labels: Option<&Value>, e: &Value) -> bool {
    let key = e["key"].as_str().unwrap_or("");
    let val = labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    let vals: Vec<&str> = e["values"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match e["operator"].as_str().unwrap_or("") {
        "In" => val.is_some_and(|v| vals.contains(&v)),
        "NotIn" => val.is_none_or(|v| !vals.contains(&v)),
        "Exists" => val.is_some(),
        "DoesNotExist" => val.is_none(),
        "Gt" => val
            .and_then(|v| v.parse::<i64>().ok())
            .zip(vals.first().and_then(|x| x.parse::<i64>().ok()))
            .is_some_and(|(a, b)| a > b),
        "Lt" => val
            .and_then(|v| v.parse::<i64>().ok())
            .zip(vals.first().and_then(|x| x.parse::<i64>().ok()))
            .is_some_and(|(a, b)| a < b),
        _ => false,
    }
}

/// nodeSelector + requiredDuringSchedulingIgnoredDuringExecution.
pub(crate) fn node_matches(pod: &Value, node: &Value) -> bool {
    let labels = node.pointer("/metadata/labels");
    if let Some(sel) = pod.pointer("/spec/nodeSelector").and_then(Value::as_object) {
        for (k, v) in sel {
            if labels.and_then(|l| l.get(k)) != Some(v) {
                return false;
            }
        }
    }
    if let Some(terms) = pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
    {
        let name = json!({"metadata.name": meta_str(node, "name")});
        let any = terms.iter().any(|t| {
            let exprs_ok = t["matchExpressions"].as_array().is_none_or(|es| es.iter().all(|e| match_expr(labels, e)));
            let fields_ok = t["matchFields"].as_array().is_none_or(|es| es.iter().all(|e| match_expr(Some(&name), e)));
            exprs_ok && fields_ok
        });
        if !any {
            return false;
        }
    }
    true
}

fn requests(pod: &Value) -> (f64, f64) {
    let mut cpu = 0.0;
    let mut mem = 0.0;
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array);
    for c in containers.into_iter().flatten() {
        let resources = c.get("resources");
        let of = |kind: &str, r: &str| resources.and_then(|x| x.get(kind)).and_then(|m| m.get(r));
        let req = |r: &str| {
            of("requests", r)
                .or(of("limits", r))
                .map(quantity)
                .unwrap_or(0.0)
        };
        cpu += req("cpu");
        mem += req("memory");
    }
    (cpu, mem)
}

/// What the scheduler needs of a node, read once per pass rather than for
/// every pending pod (which re-parsed allocatable and cloned the taints
/// pods × nodes times).
struct NodeFacts<'a> {
    node: &'a Value,
    name: &'a str,
    ready: bool,
    unschedulable: bool,
    /// Only the taints that keep pods off (NoSchedule, NoExecute).
    blocking_taints: Vec<&'a Value>,
    cpu: f64,
    memory: f64,
    pods: f64,
}

impl<'a> NodeFacts<'a> {
    fn of(n: &'a Value) -> Self {
        let alloc = |r: &str, d: f64| {
            n.pointer("/status/allocatable")
                .and_then(|a| a.get(r))
                .map(quantity)
                .unwrap_or(d)
        };
        NodeFacts {
            node: n,
            name: meta_str(n, "name"),
            ready: node_ready(n),
            unschedulable: n.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true),
            blocking_taints: n
                .pointer("/spec/taints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|t| matches!(t["effect"].as_str(), Some("NoSchedule") | Some("NoExecute")))
                .collect(),
            cpu: alloc("cpu", f64::MAX),
            memory: alloc("memory", f64::MAX),
            pods: alloc("pods", 110.0),
        }
    }
}

pub fn pass(core: &Core, _s: &Settings) {
    let pods = list(core, "", "pods", None);
    let pending: Vec<&Value> = pods
        .iter()
        .map(|p| &**p)
        .filter(|p| {
            !meta_str(p, "name").is_empty()
                && p.pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
        })
        .filter(|p| {
            pod_active(p)
                && p.pointer("/spec/schedulerName")
                    .and_then(Value::as_str)
                    .unwrap_or("default-scheduler")
                    == "default-scheduler"
        })
        .collect();
    if pending.is_empty() {
        return;
    }
    let nodes = list(core, "", "nodes", None);
    let facts: Vec<NodeFacts> = nodes.iter().map(|n| NodeFacts::of(n)).collect();
    // Per-node usage: (cpu, memory, pod count).
    let mut usage: HashMap<String, (f64, f64, i64)> = HashMap::new();
    for p in pods.iter().filter(|p| pod_active(p)) {
        let n = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !n.is_empty() {
            let (c, m) = requests(p);
            let u = usage.entry(n.to_string()).or_default();
            u.0 += c;
            u.1 += m;
            u.2 += 1;
        }
    }
    let mut vols = Volumes::default();
    for pod in pending {
        let (cpu, mem) = requests(pod);
        let mut reasons: HashMap<&str, usize> = HashMap::new();
        let mut best: Option<(&Value, i64)> = None;
        let claims = match vols.claims_of(core, pod) {
            PodClaims::Wait => continue,
            PodClaims::Unschedulable(why) => {
                let msg = format!("0/{} nodes are available: {why}.", nodes.len());
                unschedulable(core, pod, &msg);
                continue;
            }
            PodClaims::Ready(c) => c,
        };
        for n in &facts {
            let reason = if !n.ready {
                Some("node(s) were not ready")
            } else if n.unschedulable {
                Some("node(s) were unschedulable")
            } else if n.blocking_taints.iter().any(|t| !tolerates(pod, t)) {
                Some("node(s) had untolerated taint(s)")
            } else if !node_matches(pod, n.node) {
                Some("node(s) didn't match Pod's node affinity/selector")
            } else if let Some(r) = claims.refuses(&vols, n.node) {
                Some(r)
            } else {
                let u = usage.get(n.name).copied().unwrap_or_default();
                if u.0 + cpu > n.cpu + 1e-9 {
                    Some("Insufficient cpu")
                } else if u.1 + mem > n.memory {
                    Some("Insufficient memory")
                } else if (u.2 + 1) as f64 > n.pods {
                    Some("Too many pods")
                } else {
                    if best.is_none_or(|(_, c)| u.2 < c) {
                        best = Some((n.node, u.2));
                    }
                    None
                }
            };
            if let Some(r) = reason {
                *reasons.entry(r).or_default() += 1;
            }
        }
        let pod_name = meta_str(pod, "name");
        let ns = meta_str(pod, "namespace");
        match best {
            Some((node, _)) if !claims.delayed.is_empty() => {
                // WaitForFirstConsumer: the claims get their volumes for this node first; the
                // pod is bound on a later pass, once they are bound (upstream's PreBind wait).
                claims.assume(core, &vols, node);
            }
            Some((node, _)) => {
                let node_name = meta_str(node, "name").to_string();
                let mut ctx = WriteCtx::controller("default-scheduler");
                let res = core.modify(registry::pods(), Some(ns), pod_name, None, &mut ctx, |o| {
                    if !o.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("").is_empty() {
                        return Err(crate::api::error::ApiError::conflict(registry::pods(), pod_name));
                    }
                    let mut o = o.clone();
                    o["spec"]["nodeName"] = json!(node_name);
                    let mut conds: Vec<Value> = o.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
                    conds.retain(|c| c["type"] != "PodScheduled");
                    conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now()}));
                    o["status"]["conditions"] = json!(conds);
                    Ok(o)
                });
                if res.is_ok() {
                    let u = usage.entry(node_name.clone()).or_default();
                    u.0 += cpu;
                    u.1 += mem;
                    u.2 += 1;
                    record_event(
                        core,
                        pod,
                        "Pod",
                        "Normal",
                        "Scheduled",
                        &format!("Successfully assigned {ns}/{pod_name} to {node_name}"),
                        "default-scheduler",
                    );
                }
            }
            None => {
                let mut parts: Vec<String> =
                    reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
                parts.sort();
                let msg = if nodes.is_empty() {
                    "no nodes available to schedule pods".to_string()
                } else {
                    format!(
                        "0/{} nodes are available: {}.",
                        nodes.len(),
                        parts.join(", ")
                    )
                };
                unschedulable(core, pod, &msg);
            }
        }
    }
}

/// Marks the pod unschedulable (PodScheduled False, once per message) with a FailedScheduling
/// event.
fn unschedulable(core: &Core, pod: &Value, msg: &str) {
    let pod_name = meta_str(pod, "name");
    let ns = meta_str(pod, "namespace");
    let already = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "PodScheduled" && c["message"] == json!(msg))
        });
    if already {
        return;
    }
    let mut ctx = WriteCtx::controller("default-scheduler");
    let _ = core.modify(registry::pods(), Some(ns), pod_name, Some("status"), &mut ctx, |o| {
        let mut o = o.clone();
        let mut conds: Vec<Value> = o.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
        conds.retain(|c| c["type"] != "PodScheduled");
        conds.push(json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg, "lastProbeTime": null, "lastTransitionTime": now()}));
        o["status"]["conditions"] = json!(conds);
        Ok(o)
    });
    record_event(
        core,
        pod,
        "Pod",
        "Warning",
        "FailedScheduling",
        msg,
        "default-scheduler",
    );
}

/// The volume side of scheduling (upstream's VolumeBinding plugin): the pod's claims must exist;
/// bound claims' volumes must admit the node (their node affinity); unbound claims of an
/// Immediate class keep the pod unschedulable until the binder binds them; unbound
/// WaitForFirstConsumer claims need a node where a fitting Available volume lies or where their
/// provisioner can make one, and are given their volume there (a static one pre-bound, else the
/// claim annotated `volume.kubernetes.io/selected-node`) before the pod is bound. Loaded once per
/// pass, and only when a pending pod uses claims.
#[derive(Default)]
struct Volumes {
    loaded: bool,
    pvs: Vec<Arc<Value>>,
    pvcs: Vec<Arc<Value>>,
    classes: Vec<Arc<Value>>,
}

/// What a pending pod's claims allow.
enum PodClaims {
    Ready(Claims),
    /// No node can take it (the reason, as upstream's message words it).
    Unschedulable(String),
    /// Its claims are being given their volumes: it is bound once they are bound.
    Wait,
}

#[derive(Default)]
struct Claims {
    /// The volumes of bound claims.
    bound: Vec<Arc<Value>>,
    /// Unbound claims of WaitForFirstConsumer classes.
    delayed: Vec<Arc<Value>>,
}

impl Volumes {
    fn load(&mut self, core: &Core) {
        if !self.loaded {
            self.pvs = list(core, "", "persistentvolumes", None);
            self.pvcs = list(core, "", "persistentvolumeclaims", None);
            self.classes = list(core, "storage.k8s.io", "storageclasses", None);
            self.loaded = true;
        }
    }

    fn class(&self, name: &str) -> Option<&Value> {
        self.classes
            .iter()
            .map(|c| &**c)
            .find(|c| meta_str(c, "name") == name)
    }

    fn claims_of(&mut self, core: &Core, pod: &Value) -> PodClaims {
        let names = pod_claims(pod);
        let mut out = Claims::default();
        if names.is_empty() {
            return PodClaims::Ready(out);
        }
        self.load(core);
        let ns = meta_str(pod, "namespace");
        let mut assumed = false;
        for claim in names {
            let name = claim.name.as_str();
            let Some(pvc) = self
                .pvcs
                .iter()
                .find(|c| meta_str(c, "namespace") == ns && meta_str(c, "name") == name)
            else {
                if claim.ephemeral {
                    return PodClaims::Unschedulable(format!("waiting for ephemeral volume controller to create the persistentvolumeclaim \"{name}\""));
                }
                return PodClaims::Unschedulable(format!(
                    "persistentvolumeclaim \"{name}\" not found"
                ));
            };
            if claim.ephemeral {
                if let Err(why) = claim_is_for_pod(pod, pvc) {
                    return PodClaims::Unschedulable(why);
                }
            }
            if super::deleting(pvc) {
                return PodClaims::Unschedulable(format!(
                    "persistentvolumeclaim \"{name}\" is being deleted"
                ));
            }
            let vol = pvc
                .pointer("/spec/volumeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !vol.is_empty() {
                match self.pvs.iter().find(|p| meta_str(p, "name") == vol) {
                    Some(pv) => out.bound.push(pv.clone()),
                    None => {
                        return PodClaims::Unschedulable(format!(
                            "pvc {name} bound to non-existent pv {vol}"
                        ))
                    }
                }
                continue;
            }
            let delayed = self.class(claim_class(pvc)).is_some_and(|c| {
                c.get("volumeBindingMode").and_then(Value::as_str) == Some("WaitForFirstConsumer")
            });
            if !delayed {
                return PodClaims::Unschedulable(
                    "pod has unbound immediate PersistentVolumeClaims".into(),
                );
            }
            let selected = pvc
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(super::volumes::SELECTED_NODE))
                .is_some();
            let pre_bound = self.pvs.iter().any(|p| {
                p.pointer("/spec/claimRef/uid").and_then(Value::as_str) == Some(super::uid(pvc))
            });
            if selected || pre_bound {
                assumed = true;
            } else {
                out.delayed.push(pvc.clone());
            }
        }
        if assumed && out.delayed.is_empty() {
            return PodClaims::Wait;
        }
        PodClaims::Ready(out)
    }
}

impl Claims {
    /// Why `node` cannot take the pod's volumes, if it cannot.
    fn refuses(&self, vols: &Volumes, node: &Value) -> Option<&'static str> {
        if self.bound.iter().any(|pv| !pv_fits_node(pv, node)) {
            return Some("node(s) had volume node affinity conflict");
        }
        for pvc in &self.delayed {
            if best_match(&vols.pvs, pvc, Some(node)).is_some() {
                continue;
            }
            let provisioner = vols
                .class(claim_class(pvc))
                .and_then(|c| c.get("provisioner"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let can_provision = match provisioner {
                "" | "kubernetes.io/no-provisioner" => false,
                super::volumes::LOCAL_PATH_PROVISIONER => node
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(super::volumes::LOCAL_PATH_ROOT_ANNOTATION))
                    .is_some(),
                _ => true,
            };
            if !can_provision {
                return Some("node(s) didn't find available persistent volumes to bind");
            }
        }
        None
    }

    /// Gives each delayed claim its volume on `node`: a fitting static volume pre-bound to it,
    /// else the node named for its provisioner.
    fn assume(&self, core: &Core, vols: &Volumes, node: &Value) {
        let node_name = meta_str(node, "name");
        for pvc in &self.delayed {
            if let Some(pv) = best_match(&vols.pvs, pvc, Some(node)) {
                if set_claim_ref(core, meta_str(pv, "name"), pvc, "default-scheduler") {
                    continue;
                }
            }
            super::volumes::edit_claim(core, pvc, "default-scheduler", |o| {
                o["metadata"]["annotations"][super::volumes::SELECTED_NODE] = json!(node_name);
            });
        }
    }
}
