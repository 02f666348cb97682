//! Garbage collector: deletes objects whose owners (ownerReferences) are
//! all gone, drops dangling references, and implements the `orphan` and
//! `foregroundDeletion` finalizers of owners being deleted.

use super::{deleting, Settings};
use crate::api::objects::{meta_str, Core, DeleteOptions, WriteCtx};
use crate::registry::{self, ResourceDef};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

fn rd_of(key: &str) -> Option<&'static ResourceDef> {
    // /registry/<group>/<plural>/...
    let mut parts = key.trim_start_matches("/registry/").split('/');
    let group = parts.next()?;
    let plural = parts.next()?;
    let group = if group == "core" { "" } else { group };
    registry::RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural)
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
    let (all, _) = core.store.list("/registry/");
    let mut by_uid: HashMap<String, (String, Arc<Value>)> = HashMap::new();
    for s in &all {
        let u = meta_str(&s.object, "uid");
        if !u.is_empty() {
            let key = format!("/registry/{}", key_tail(&s.object).unwrap_or_default());
            by_uid.insert(u.to_string(), (key, s.object.clone()));
        }
    }
    // Dependents per owner uid.
    let mut dependents: HashMap<String, Vec<(&'static ResourceDef, Arc<Value>)>> = HashMap::new();
    for (_, (key, o)) in by_uid.iter() {
        let Some(rd) = rd_of(key) else { continue };
        let refs = o
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if refs.is_empty() {
            continue;
        }
        for r in &refs {
            if let Some(u) = r["uid"].as_str() {
                dependents
                    .entry(u.to_string())
                    .or_default()
                    .push((rd, o.clone()));
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
    for (u, (key, o)) in by_uid.iter() {
        if !deleting(o) {
            continue;
        }
        let Some(rd) = rd_of(key) else { continue };
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
                            a.retain(|r| r["uid"].as_str() != Some(u.as_str()));
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

/// `<group>/<plural>/<ns>/<name>` of a stored object, from its apiVersion/kind.
fn key_tail(o: &Value) -> Option<String> {
    let av = o.get("apiVersion")?.as_str()?;
    let kind = o.get("kind")?.as_str()?;
    let group = av.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let rd = registry::find_kind(group, kind)?;
    let g = if rd.group.is_empty() {
        "core"
    } else {
        rd.group
    };
    let ns = meta_str(o, "namespace");
    Some(if rd.namespaced {
        format!("{g}/{}/{ns}/{}", rd.plural, meta_str(o, "name"))
    } else {
        format!("{g}/{}/{}", rd.plural, meta_str(o, "name"))
    })
}
