//! Mirrors `events.k8s.io/v1` Events into core/v1 Events (same name), so
//! events recorded with the new API (kube-rs' `Recorder` uses it) show in
//! `kubectl get events` and `kubectl describe`. Upstream serves both
//! versions from one storage with this conversion
//! (pkg/apis/events/v1 conversions); here they are stored separately and
//! the core copy follows the new one.

use super::{list, rd, Settings};
use crate::api::objects::{meta_str, Core, WriteCtx};
use serde_json::{json, Map, Value};

/// events.k8s.io/v1 → core/v1 field mapping.
fn to_core(ev: &Value) -> Value {
    let mut out = Map::new();
    let mut meta = ev.get("metadata").cloned().unwrap_or(json!({}));
    if let Some(m) = meta.as_object_mut() {
        for f in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "generation",
        ] {
            m.remove(f);
        }
    }
    out.insert("metadata".into(), meta);
    let copy = |out: &mut Map<String, Value>, from: &str, to: &str| {
        if let Some(v) = ev.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    };
    copy(&mut out, "regarding", "involvedObject");
    copy(&mut out, "related", "related");
    copy(&mut out, "note", "message");
    copy(&mut out, "reason", "reason");
    copy(&mut out, "type", "type");
    copy(&mut out, "action", "action");
    copy(&mut out, "eventTime", "eventTime");
    copy(&mut out, "series", "series");
    copy(&mut out, "reportingController", "reportingComponent");
    copy(&mut out, "reportingInstance", "reportingInstance");
    copy(&mut out, "deprecatedCount", "count");
    copy(&mut out, "deprecatedFirstTimestamp", "firstTimestamp");
    copy(&mut out, "deprecatedLastTimestamp", "lastTimestamp");
    let source = ev
        .get("deprecatedSource")
        .cloned()
        .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()))
        .unwrap_or_else(
            || json!({"component": ev.get("reportingController").cloned().unwrap_or(Value::Null)}),
        );
    out.insert("source".into(), source);
    if !out.contains_key("involvedObject") {
        out.insert("involvedObject".into(), json!({}));
    }
    Value::Object(out)
}

pub fn pass(core: &Core, _s: &Settings) {
    let core_rd = rd("", "events");
    for ev in list(core, "events.k8s.io", "events", None) {
        let ns = meta_str(&ev, "namespace");
        let name = meta_str(&ev, "name");
        let want = to_core(&ev);
        let mut ctx = WriteCtx::controller("event-mirror");
        match core.get(core_rd, Some(ns), name) {
            Ok(cur) => {
                let differs = [
                    "message",
                    "count",
                    "series",
                    "lastTimestamp",
                    "reason",
                    "type",
                ]
                .iter()
                .any(|f| cur.get(*f) != want.get(*f));
                if differs {
                    let _ = core.modify(core_rd, Some(ns), name, None, &mut ctx, |o| {
                        let mut o = o.clone();
                        for (k, v) in want.as_object().into_iter().flatten() {
                            if k != "metadata" {
                                o[k.as_str()] = v.clone();
                            }
                        }
                        Ok(o)
                    });
                }
            }
            Err(_) => {
                let _ = core.create(core_rd, Some(ns), want, &mut ctx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_events_map_to_core_fields() {
        let ev = json!({"metadata": {"name": "e", "namespace": "d", "uid": "x"}, "regarding": {"kind": "Pod", "name": "p"}, "note": "pulled", "reason": "Pulled", "type": "Normal", "reportingController": "rktup-agent", "reportingInstance": "n1", "eventTime": "2026-01-01T00:00:00.000000Z"});
        let c = to_core(&ev);
        assert_eq!(c["involvedObject"]["name"], "p");
        assert_eq!(c["message"], "pulled");
        assert_eq!(c["source"]["component"], "rktup-agent");
        assert_eq!(c["reportingComponent"], "rktup-agent");
        assert!(c["metadata"].get("uid").is_none());
    }
}
