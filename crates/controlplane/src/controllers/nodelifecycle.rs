//! Node lifecycle: a node whose Lease (kube-node-lease/<node>) and Ready
//! heartbeat are older than the grace period gets Ready=Unknown and the
//! `node.kubernetes.io/unreachable` taints; pods on such nodes that do not
//! tolerate the NoExecute taint are evicted, and pods terminating on them
//! or bound to nodes that no longer exist are removed (pod GC).

use super::{deleting, list, Settings};
use crate::api::objects::{meta_str, now, Core, DeleteOptions, WriteCtx};
use crate::registry;
use serde_json::{json, Value};

fn ts(v: Option<&Value>) -> Option<i64> {
    v.and_then(Value::as_str)
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
}

pub fn pass(core: &Core, s: &Settings) {
    let now_s = jiff::Timestamp::now().as_second();
    let grace = s.node_monitor_grace.as_secs() as i64;
    let nodes = list(core, "", "nodes", None);
    let leases = list(
        core,
        "coordination.k8s.io",
        "leases",
        Some("kube-node-lease"),
    );
    let nodes_rd = super::rd("", "nodes");
    let mut unreachable: Vec<String> = Vec::new();
    for n in nodes.iter() {
        let name = meta_str(n, "name");
        let lease = leases.iter().find(|l| meta_str(l, "name") == name);
        let conds = n
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ready = conds.iter().find(|c| c["type"] == "Ready");
        let beat = [
            ts(lease.and_then(|l| l.pointer("/spec/renewTime"))),
            ts(ready.and_then(|c| c.get("lastHeartbeatTime"))),
            ts(n.pointer("/metadata/creationTimestamp")),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(now_s);
        let stale = now_s - beat > grace;
        let is_ready = ready.is_some_and(|c| c["status"] == "True");
        let has_taint = n
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .is_some_and(|t| {
                t.iter()
                    .any(|t| t["key"] == "node.kubernetes.io/unreachable")
            });
        let mut ctx = WriteCtx::controller("node-controller");
        if stale {
            unreachable.push(name.to_string());
            if ready.is_none_or(|c| c["status"] != "Unknown") {
                let _ = core.modify(nodes_rd, None, name, Some("status"), &mut ctx, |o| {
                    let mut o = o.clone();
                    let mut cs: Vec<Value> = o.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
                    cs.retain(|c| c["type"] != "Ready");
                    cs.push(json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status.", "lastHeartbeatTime": ready.and_then(|c| c.get("lastHeartbeatTime")).cloned().unwrap_or(Value::Null), "lastTransitionTime": now()}));
                    o["status"]["conditions"] = json!(cs);
                    Ok(o)
                });
            }
            if !has_taint {
                let _ = core.modify(nodes_rd, None, name, None, &mut ctx, |o| {
                    let mut o = o.clone();
                    let mut t: Vec<Value> = o.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default();
                    t.push(json!({"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": now()}));
                    t.push(json!({"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": now()}));
                    o["spec"]["taints"] = json!(t);
                    Ok(o)
                });
            }
        } else if is_ready && has_taint {
            let _ = core.modify(nodes_rd, None, name, None, &mut ctx, |o| {
                let mut o = o.clone();
                if let Some(t) = o.pointer_mut("/spec/taints").and_then(Value::as_array_mut) {
                    t.retain(|t| t["key"] != "node.kubernetes.io/unreachable");
                }
                Ok(o)
            });
        }
    }
    let taint = json!({"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"});
    for p in list(core, "", "pods", None).iter() {
        let node = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if node.is_empty() {
            continue;
        }
        let ns = meta_str(p, "namespace");
        let name = meta_str(p, "name");
        let exists = nodes.iter().any(|n| meta_str(n, "name") == node);
        let gone = !exists || unreachable.iter().any(|u| u == node);
        if !gone {
            continue;
        }
        if !exists || deleting(p) {
            // Nobody will finish this pod's graceful deletion.
            let _ = core.delete(
                registry::pods(),
                Some(ns),
                name,
                &DeleteOptions {
                    grace_period: Some(0),
                    ..Default::default()
                },
            );
        } else if !super::scheduler::tolerates(p, &taint) {
            super::record_event(
                core,
                p,
                "Pod",
                "Normal",
                "TaintManagerEviction",
                &format!("Marking for deletion Pod {ns}/{name}"),
                "taint-eviction-controller",
            );
            let _ = core.delete(registry::pods(), Some(ns), name, &DeleteOptions::default());
        }
    }
}
