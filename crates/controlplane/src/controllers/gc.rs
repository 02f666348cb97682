//! Garbage collector: deletes objects whose owners (ownerReferences) are
//! all gone, drops dangling references, and implements the `orphan` and
//! `foregroundDeletion` finalizers of owners being deleted.

use super::{deleting, Settings};
use crate::api::objects::{meta_str, Core, DeleteOptions, WriteCtx};
use crate::registry::{ResourceDef, Resources};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The resource a stored object belongs to, from its apiVersion and kind
/// (custom resources included).
fn rd_of(res: &Resources, o: &Value) -> Option<&'static ResourceDef> {
    let av = o.get("apiVersion")?.as_str()?;
    let kind = o.get("kind")?.as_str()?;
    let (group, version) = av.rsplit_once('/').unwrap_or(("", av));
    res.all()
        .find(|r| (r.group, r.version, r.kind) == (group, version, kind))
        .or_else(|| res.find_kind(group, kind))
}

fn remove_finalizer(core: &Core, rd: &ResourceDef, o: &Value, fin: &str) {
    let mut ctx = WriteCtx::controller("garbage-collector");
    let ns = meta_str(o, "namespace");
    let _ = core.modify(rd, Some(ns), meta_str(o, "name"), None, &mut ctx, |cur| {
        let mut cur = cur.clone();
        if let Some(a) = cur
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        {
            a.retain(|f| f != fin);
        }
        Ok(cur)
    });
}

pub fn pass(core: &Core, _s: &Settings) {
    let res = core.resources();
    let (all, _) = core.store.list("/registry/");
    // Everything below borrows from `all`: with tens of thousands of objects
    // a pass that copied every uid and key cost tens of milliseconds.
    let by_uid: HashMap<&str, &Arc<Value>> = all
        .iter()
        .map(|s| (meta_str(&s.object, "uid"), &s.object))
        .filter(|(u, _)| !u.is_empty())
        .collect();
    // Dependents per owner uid.
    let mut dependents: HashMap<&str, Vec<(&'static ResourceDef, &Arc<Value>)>> = HashMap::new();
    for o in by_uid.values().copied() {
        let refs = match o
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
        {
            Some(refs) if !refs.is_empty() => refs,
            _ => continue,
        };
        let Some(rd) = rd_of(&res, o) else { continue };
        for r in refs {
            if let Some(u) = r["uid"].as_str() {
                dependents.entry(u).or_default().push((rd, o));
            }
        }
        let alive: Vec<&Value> = refs
            .iter()
            .filter(|r| r["uid"].as_str().is_some_and(|u| by_uid.contains_key(u)))
            .collect();
        let ns = meta_str(o, "namespace");
        let name = meta_str(o, "name");
        if alive.is_empty() {
            if !deleting(o) {
                let _ = core.delete(
                    rd,
                    Some(ns),
                    name,
                    &DeleteOptions {
                        propagation: Some("Background".into()),
                        ..Default::default()
                    },
                );
            }
        } else if alive.len() != refs.len() {
            let keep: Vec<Value> = alive.into_iter().cloned().collect();
            let mut ctx = WriteCtx::controller("garbage-collector");
            let _ = core.modify(rd, Some(ns), name, None, &mut ctx, |cur| {
                let mut cur = cur.clone();
                cur["metadata"]["ownerReferences"] = json!(keep);
                Ok(cur)
            });
        }
    }
    for (u, o) in by_uid.iter() {
        if !deleting(o) {
            continue;
        }
        let Some(rd) = rd_of(&res, o) else { continue };
        let fins: Vec<&str> = o
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let deps = dependents.get(u).cloned().unwrap_or_default();
        if fins.contains(&"orphan") {
            for (drd, dep) in &deps {
                let mut ctx = WriteCtx::controller("garbage-collector");
                let _ = core.modify(
                    drd,
                    Some(meta_str(dep, "namespace")),
                    meta_str(dep, "name"),
                    None,
                    &mut ctx,
                    |cur| {
                        let mut cur = cur.clone();
                        if let Some(a) = cur
                            .pointer_mut("/metadata/ownerReferences")
                            .and_then(Value::as_array_mut)
                        {
                            a.retain(|r| r["uid"].as_str() != Some(*u));
                        }
                        Ok(cur)
                    },
                );
            }
            remove_finalizer(core, rd, o, "orphan");
        } else if fins.contains(&"foregroundDeletion") {
            if deps.is_empty() {
                remove_finalizer(core, rd, o, "foregroundDeletion");
            } else {
                for (drd, dep) in &deps {
                    if !deleting(dep) {
                        let _ = core.delete(
                            drd,
                            Some(meta_str(dep, "namespace")),
                            meta_str(dep, "name"),
                            &DeleteOptions {
                                propagation: Some("Foreground".into()),
                                ..Default::default()
                            },
                        );
                    }
                }
            }
        }
    }
}
