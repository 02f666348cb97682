//! CustomResourceDefinitions, as apiextensions-apiserver's naming,
//! establishing and finalizing controllers: names checked against the
//! group's other CRDs (`NamesAccepted`, `status.acceptedNames`), then
//! `Established`; a CRD being deleted has all its objects deleted before
//! its `customresourcecleanup.apiextensions.k8s.io` finalizer goes.

use super::{deleting, Settings};
use crate::api::objects::{
    meta_str, now, Core, DeleteOptions, WriteCtx, CRD_CLEANUP_FINALIZER as CLEANUP_FINALIZER,
};
use crate::registry::{self, ResourceDef};
use serde_json::{json, Value};
use std::sync::Arc;

fn crds_rd() -> Option<&'static ResourceDef> {
    registry::find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
}

pub fn pass(core: &Core, _s: &Settings) {
    let Some(rd) = crds_rd() else { return };
    let crds: Vec<Arc<Value>> = core
        .store
        .list(&rd.key_prefix(None))
        .0
        .into_iter()
        .map(|s| s.object)
        .collect();
    for crd in &crds {
        if deleting(crd) {
            finalize(core, rd, crd);
        } else {
            name_and_establish(core, rd, crd, &crds);
        }
    }
}

/// (plural, singular, shortNames, kind, listKind).
type Names = (String, String, Vec<String>, String, String);

/// The names a CRD asks for (or was given, from `status.acceptedNames`).
fn names(n: &Value) -> Names {
    let s = |k: &str| n.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let short = n["shortNames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect();
    (s("plural"), s("singular"), short, s("kind"), s("listKind"))
}

/// The naming controller's check: a name another CRD of the group has
/// already been given is refused, with upstream's reason and message.
fn conflict(crd: &Value, all: &[Arc<Value>]) -> Option<(&'static str, String)> {
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    let me = meta_str(crd, "name");
    let (plural, singular, short, kind, list_kind) = names(&crd["spec"]["names"]);
    let (a_plural, a_singular, a_short, a_kind, a_list) = names(&crd["status"]["acceptedNames"]);
    let others: Vec<_> = all
        .iter()
        .filter(|o| meta_str(o, "name") != me)
        .filter(|o| o.pointer("/spec/group").and_then(Value::as_str) == Some(group))
        .map(|o| names(&o["status"]["acceptedNames"]))
        .collect();
    let used = |f: &dyn Fn(&Names) -> Vec<String>, name: &str, accepted: &str| {
        !name.is_empty()
            && name != accepted
            && others.iter().any(|o| f(o).iter().any(|n| n == name))
    };
    let resource_names = |o: &Names| {
        let mut v = vec![o.0.clone(), o.1.clone()];
        v.extend(o.2.iter().cloned());
        v
    };
    let kinds = |o: &Names| vec![o.3.clone(), o.4.clone()];
    if used(&resource_names, &plural, &a_plural) {
        return Some(("PluralConflict", format!("\"{plural}\" is already in use")));
    }
    if used(&resource_names, &singular, &a_singular) {
        return Some((
            "SingularConflict",
            format!("\"{singular}\" is already in use"),
        ));
    }
    for s in &short {
        if !a_short.contains(s) && used(&resource_names, s, "") {
            return Some(("ShortNamesConflict", format!("\"{s}\" is already in use")));
        }
    }
    if used(&kinds, &kind, &a_kind) {
        return Some(("KindConflict", format!("\"{kind}\" is already in use")));
    }
    if used(&kinds, &list_kind, &a_list) {
        return Some((
            "ListKindConflict",
            format!("\"{list_kind}\" is already in use"),
        ));
    }
    None
}

/// Sets a condition, keeping its transition time when the status is unchanged.
fn set_condition(status: &mut Value, ty: &str, st: &str, reason: &str, message: &str) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let Some(conds) = status["conditions"].as_array_mut() else {
        return;
    };
    let new = |t: Value| json!({"type": ty, "status": st, "lastTransitionTime": t, "reason": reason, "message": message});
    match conds.iter_mut().find(|c| c["type"] == ty) {
        Some(c) if c["status"] == st => {
            let t = c["lastTransitionTime"].clone();
            *c = new(t);
        }
        Some(c) => *c = new(json!(now())),
        None => conds.push(new(json!(now()))),
    }
}

fn write_status(core: &Core, rd: &ResourceDef, crd: &Value, status: Value) {
    if crd.get("status") == Some(&status) {
        return;
    }
    let mut ctx = WriteCtx::controller("apiextensions-apiserver");
    let _ = core.modify(
        rd,
        None,
        meta_str(crd, "name"),
        Some("status"),
        &mut ctx,
        |cur| {
            let mut cur = cur.clone();
            cur["status"] = status.clone();
            Ok(cur)
        },
    );
}

fn name_and_establish(core: &Core, rd: &ResourceDef, crd: &Value, all: &[Arc<Value>]) {
    let mut status = crd.get("status").cloned().unwrap_or_else(|| json!({}));
    match conflict(crd, all) {
        None => {
            let mut accepted = crd["spec"]["names"].clone();
            if accepted
                .get("singular")
                .is_none_or(|s| s.as_str() == Some(""))
            {
                let kind = accepted["kind"].as_str().unwrap_or("").to_ascii_lowercase();
                accepted["singular"] = json!(kind);
            }
            status["acceptedNames"] = accepted;
            set_condition(
                &mut status,
                "NamesAccepted",
                "True",
                "NoConflicts",
                "no conflicts found",
            );
            set_condition(
                &mut status,
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            );
        }
        Some((reason, message)) => {
            set_condition(&mut status, "NamesAccepted", "False", reason, &message);
            if registry::custom::condition(crd, "Established") != Some("True") {
                set_condition(
                    &mut status,
                    "Established",
                    "False",
                    "NotAccepted",
                    "not all names are accepted",
                );
            }
        }
    }
    // Every storage version ever used stays listed until a client removes it.
    let storage = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["storage"] == true)
        .and_then(|v| v["name"].as_str());
    if !status["storedVersions"].is_array() {
        status["storedVersions"] = json!([]);
    }
    if let (Some(s), Some(list)) = (storage, status["storedVersions"].as_array_mut()) {
        if !list.iter().any(|v| v == s) {
            list.push(json!(s));
        }
    }
    write_status(core, rd, crd, status);
}

/// The finalizing controller: deletes every object of the CRD, then drops
/// the cleanup finalizer (the CRD is then deleted).
fn finalize(core: &Core, rd: &ResourceDef, crd: &Value) {
    let has_finalizer = crd["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == CLEANUP_FINALIZER));
    if !has_finalizer {
        return;
    }
    let name = meta_str(crd, "name");
    let served = core.resources();
    let Some(crd_rd) = served
        .custom()
        .iter()
        .copied()
        .find(|r| r.custom.is_some_and(|c| c.crd_name == name))
    else {
        // Nothing is served for it (names never accepted): no objects can exist.
        remove_finalizer(core, rd, name);
        return;
    };
    let objects = core.store.list(&crd_rd.key_prefix(None)).0;
    let mut status = crd.get("status").cloned().unwrap_or_else(|| json!({}));
    if objects.is_empty() {
        set_condition(
            &mut status,
            "Terminating",
            "False",
            "InstanceDeletionCompleted",
            "removed all instances",
        );
        write_status(core, rd, crd, status);
        remove_finalizer(core, rd, name);
        return;
    }
    set_condition(
        &mut status,
        "Terminating",
        "True",
        "InstanceDeletionInProgress",
        "CustomResource deletion is in progress",
    );
    write_status(core, rd, crd, status);
    for o in objects {
        if deleting(&o.object) {
            continue;
        }
        let ns = meta_str(&o.object, "namespace");
        let opts = DeleteOptions {
            propagation: Some("Background".into()),
            ..Default::default()
        };
        let _ = core.delete(
            crd_rd,
            Some(ns).filter(|n| !n.is_empty()),
            meta_str(&o.object, "name"),
            &opts,
        );
    }
}

fn remove_finalizer(core: &Core, rd: &ResourceDef, name: &str) {
    let mut ctx = WriteCtx::controller("apiextensions-apiserver");
    let _ = core.modify(rd, None, name, None, &mut ctx, |cur| {
        let mut cur = cur.clone();
        if let Some(f) = cur
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        {
            f.retain(|x| x != CLEANUP_FINALIZER);
        }
        Ok(cur)
    });
}
