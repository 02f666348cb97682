//! ControllerRevisions: the template history DaemonSets and StatefulSets keep, as upstream's
//! controllers do (pkg/controller/history, pkg/controller/daemon/update.go,
//! pkg/controller/statefulset/stateful_set_utils.go).
//!
//! Every template a workload has had is a ControllerRevision `<parent>-<hash>` owned by it,
//! labelled with the template's labels and the hash, carrying the parent's annotations
//! (`kubernetes.io/change-cause` is `kubectl rollout history`'s CHANGE-CAUSE) and, as `data`, the
//! strategic merge patch that puts the template back (what `kubectl rollout undo` applies). The
//! current template's revision has the highest `revision`; a template that becomes current again
//! (undo) is renumbered; old revisions no pod runs are pruned to `revisionHistoryLimit`.

use super::template_hash_with_collisions;
use super::{controller_uid, deleting, i64_at, list, owner_ref, rd, set_status, uid};
use crate::api::objects::{meta_str, Core, DeleteOptions, WriteCtx};
use crate::registry;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// The pod label naming the revision a pod was made from (upstream's
/// `ControllerRevisionHashLabelKey`).
pub(super) const POD_LABEL: &str = "controller-revision-hash";

/// The workload whose history this is, and how its kind names revisions.
pub(super) struct Parent<'a> {
    pub obj: &'a Value,
    pub kind: &'static str,
    pub group: &'static str,
    pub plural: &'static str,
    pub manager: &'static str,
    /// The revision's label holding its hash: `controller-revision-hash` for DaemonSets,
    /// `controller.kubernetes.io/hash` for StatefulSets (history.NewControllerRevision).
    pub cr_hash_label: &'static str,
    /// Whether pods carry the revision's name (StatefulSet) rather than its hash (DaemonSet)
    /// in [`POD_LABEL`].
    pub pods_carry_name: bool,
}

impl Parent<'_> {
    /// What a pod of `cr` carries in [`POD_LABEL`].
    pub(super) fn pod_value<'v>(&self, cr: &'v Value) -> Option<&'v str> {
        if self.pods_carry_name {
            Some(meta_str(cr, "name")).filter(|n| !n.is_empty())
        } else {
            label(cr, self.cr_hash_label)
        }
    }
}

pub(super) fn label<'v>(o: &'v Value, key: &str) -> Option<&'v str> {
    o.pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

pub(super) fn revision_number(cr: &Value) -> i64 {
    i64_at(cr, "/revision")
}

/// Upstream's `getPatch`: the revision data, a strategic merge patch that
/// replaces the whole pod template with this one.
///
/// kubectl decides "skipped rollback" by comparing these bytes with the
/// same patch made from the workload it fetched, after a round trip
/// through Go's typed structs. That round trip writes two fields Go never
/// omits (a null `creationTimestamp`, an empty `resources` per container),
/// so they are written here too; keys are sorted on both sides.
pub(super) fn revision_data(parent: &Value) -> Value {
    let mut template = parent
        .pointer("/spec/template")
        .filter(|t| t.is_object())
        .cloned()
        .unwrap_or(json!({}));
    as_go_writes_it(&mut template);
    template["$patch"] = json!("replace");
    json!({"spec": {"template": template}})
}

/// The pod template a revision holds (its `data` without the patch directive).
pub(super) fn template_of(cr: &Value) -> Value {
    let mut t = cr
        .pointer("/data/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    t
}

/// The fields of a PodTemplateSpec that Go's encoding/json writes even
/// when unset (struct-valued fields, which `omitempty` does not drop).
fn as_go_writes_it(template: &mut Value) {
    if !template.get("metadata").is_some_and(Value::is_object) {
        template["metadata"] = json!({});
    }
    if let Some(meta) = template["metadata"].as_object_mut() {
        meta.entry("creationTimestamp").or_insert(Value::Null);
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(containers) = template
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            c.entry("resources").or_insert(json!({}));
        }
    }
}

/// Upstream's `constructHistory`: the revision of the current template
/// (created if missing, renumbered to the highest revision if an old one
/// became current again, as after `rollout undo`) and the other revisions.
/// None when the revision could not be written; the next pass retries.
pub(super) fn construct_history(
    core: &Core,
    p: &Parent,
    pods: &[Arc<Value>],
) -> Option<(Value, Vec<Value>)> {
    let crrd = rd("apps", "controllerrevisions");
    let ns = meta_str(p.obj, "namespace");
    let data = revision_data(p.obj);
    let (mut current, old): (Vec<Value>, Vec<Value>) =
        list(core, "apps", "controllerrevisions", Some(ns))
            .iter()
            .filter(|cr| controller_uid(cr) == Some(uid(p.obj)) && !deleting(cr))
            .map(|cr| (**cr).clone())
            .partition(|cr| cr.get("data") == Some(&data));
    let next = old.iter().map(revision_number).max().unwrap_or(0) + 1;
    current.sort_by_key(revision_number);
    let cur = match current.pop() {
        None => return snapshot(core, p, data, next).map(|cur| (cur, old)),
        Some(cur) => cur,
    };
    // Same template twice (upstream's dedupCurHistories): keep the newest,
    // move the others' pods over to it so they are not rolled.
    for dup in &current {
        if let (Some(from), Some(to)) = (p.pod_value(dup), p.pod_value(&cur)) {
            relabel_pods(core, p, pods, from, to);
        }
        let _ = core.delete(
            crrd,
            Some(ns),
            meta_str(dup, "name"),
            &DeleteOptions::default(),
        );
    }
    if revision_number(&cur) >= next {
        return Some((cur, old));
    }
    let mut ctx = WriteCtx::controller(p.manager);
    let renumbered = core.modify(
        crrd,
        Some(ns),
        meta_str(&cur, "name"),
        None,
        &mut ctx,
        |o| {
            let mut o = o.clone();
            o["revision"] = json!(next);
            Ok(o)
        },
    );
    renumbered.ok().map(|cur| (cur, old))
}

fn relabel_pods(core: &Core, p: &Parent, pods: &[Arc<Value>], from: &str, to: &str) {
    for pod in pods.iter().filter(|pod| {
        controller_uid(pod) == Some(uid(p.obj)) && label(pod, POD_LABEL) == Some(from)
    }) {
        let mut ctx = WriteCtx::controller(p.manager);
        let _ = core.modify(
            registry::pods(),
            Some(meta_str(pod, "namespace")),
            meta_str(pod, "name"),
            None,
            &mut ctx,
            |o| {
                let mut o = o.clone();
                o["metadata"]["labels"][POD_LABEL] = json!(to);
                Ok(o)
            },
        );
    }
}

/// Upstream's `snapshot`: writes the current template as revision
/// `revision`, named by its hash. A clash with another template's revision
/// of that name counts up `status.collisionCount`, which changes the hash
/// the next pass uses.
fn snapshot(core: &Core, p: &Parent, data: Value, revision: i64) -> Option<Value> {
    let crrd = rd("apps", "controllerrevisions");
    let ns = meta_str(p.obj, "namespace");
    let template = p
        .obj
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    let collisions = p
        .obj
        .pointer("/status/collisionCount")
        .and_then(Value::as_i64);
    let hash = template_hash_with_collisions(&template, collisions);
    let name = format!("{}-{hash}", meta_str(p.obj, "name"));
    let mut labels = template
        .pointer("/metadata/labels")
        .filter(|l| l.is_object())
        .cloned()
        .unwrap_or(json!({}));
    labels[p.cr_hash_label] = json!(hash);
    let mut meta = json!({
        "name": name,
        "namespace": ns,
        "labels": labels,
        "ownerReferences": [owner_ref(p.obj, p.kind, "apps/v1")],
    });
    if let Some(a) = p
        .obj
        .pointer("/metadata/annotations")
        .filter(|a| a.is_object())
    {
        meta["annotations"] = a.clone();
    }
    let cr = json!({
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": meta,
        "data": data,
        "revision": revision,
    });
    let mut ctx = WriteCtx::controller(p.manager);
    match core.create(crrd, Some(ns), cr, &mut ctx) {
        Ok(created) => Some(created),
        Err(e) if e.reason == "AlreadyExists" => {
            let existing = core.get(crrd, Some(ns), &name).ok()?;
            if existing.get("data") == Some(&data) && controller_uid(&existing) == Some(uid(p.obj))
            {
                return Some(existing);
            }
            let mut status = p
                .obj
                .get("status")
                .filter(|s| s.is_object())
                .cloned()
                .unwrap_or(json!({}));
            status["collisionCount"] = json!(collisions.unwrap_or(0) + 1);
            set_status(core, rd(p.group, p.plural), p.obj, status, p.manager);
            None
        }
        Err(_) => None,
    }
}

/// Upstream's `cleanupHistory`/`truncateHistory`: deletes the oldest revisions beyond
/// `revisionHistoryLimit` that no pod (terminating ones included) runs and that are not in
/// `keep` (a StatefulSet's current revision).
pub(super) fn cleanup_history(
    core: &Core,
    p: &Parent,
    mut old: Vec<Value>,
    pods: &[Arc<Value>],
    keep: Option<&str>,
) {
    let limit = p
        .obj
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_i64)
        .unwrap_or(10);
    let mut excess = old.len() as i64 - limit;
    if excess <= 0 {
        return;
    }
    let live: HashSet<&str> = pods
        .iter()
        .filter(|pod| controller_uid(pod) == Some(uid(p.obj)))
        .filter_map(|pod| label(pod, POD_LABEL))
        .collect();
    old.sort_by_key(revision_number);
    for cr in &old {
        if excess <= 0 {
            break;
        }
        if p.pod_value(cr).is_some_and(|h| live.contains(h))
            || keep.is_some_and(|k| k == meta_str(cr, "name"))
        {
            continue;
        }
        let _ = core.delete(
            rd("apps", "controllerrevisions"),
            Some(meta_str(p.obj, "namespace")),
            meta_str(cr, "name"),
            &DeleteOptions::default(),
        );
        excess -= 1;
    }
}
