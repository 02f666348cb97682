//! Endpoints controller: for each Service with a selector, the Endpoints of
//! the same name list the matching pods' IPs (ready and not ready) with the
//! service's ports resolved against the pods' container ports. As upstream,
//! these Endpoints carry `endpointslice.kubernetes.io/skip-mirror: "true"`
//! (the EndpointSlice controller serves those Services itself), and they go
//! when their Service goes.

use super::endpointslice::PodsByLabel;
use super::{list, pod_active, pod_ready, rd, Settings};
use crate::api::objects::{meta_str, Core, WriteCtx};
use crate::api::selector::LabelSelector;
use serde_json::{json, Map, Value};

fn resolve_port(pod: &Value, target: &Value) -> Option<i64> {
    match target {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => match s.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => pod
                .pointer("/spec/containers")?
                .as_array()?
                .iter()
                .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
                .find(|p| p["name"] == *s)
                .and_then(|p| p["containerPort"].as_i64()),
        },
        _ => None,
    }
}

const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";

pub fn pass(core: &Core, _s: &Settings) {
    let eprd = rd("", "endpoints");
    let services = list(core, "", "services", None);
    // Endpoints this controller wrote whose Service is gone.
    let names: std::collections::HashSet<(&str, &str)> = services
        .iter()
        .map(|s| (meta_str(s, "namespace"), meta_str(s, "name")))
        .collect();
    for ep in list(core, "", "endpoints", None) {
        let managed = ep
            .pointer("/metadata/labels")
            .and_then(|l| l.get(SKIP_MIRROR))
            == Some(&json!("true"))
            && ep
                .pointer("/metadata/managedFields")
                .and_then(Value::as_array)
                .is_some_and(|m| m.iter().any(|f| f["manager"] == "endpoint-controller"));
        if managed && !names.contains(&(meta_str(&ep, "namespace"), meta_str(&ep, "name"))) {
            let _ = core.delete(
                eprd,
                Some(meta_str(&ep, "namespace")),
                meta_str(&ep, "name"),
                &Default::default(),
            );
        }
    }
    // Each Service reads the pods of its rarest selector pair only, not
    // every pod of its namespace.
    let all_pods = list(core, "", "pods", None);
    let by_label = PodsByLabel::new(&all_pods);
    for svc in &services {
        let Some(sel) = svc.pointer("/spec/selector").and_then(Value::as_object) else {
            continue;
        };
        if sel.is_empty() {
            continue;
        }
        let ns = meta_str(svc, "namespace");
        let name = meta_str(svc, "name");
        let selector =
            LabelSelector::from_object(&json!({"matchLabels": Value::Object(sel.clone())}));
        let pods = by_label.candidates(svc);
        let ports = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut subsets: Vec<Value> = Vec::new();
        let publish = svc.pointer("/spec/publishNotReadyAddresses") == Some(&json!(true));
        for p in pods.iter().filter(|p| pod_active(p) && selector.matches(p)) {
            let Some(ip) = p.pointer("/status/podIP").and_then(Value::as_str) else {
                continue;
            };
            let mut eports = Vec::new();
            for sp in &ports {
                let target = sp
                    .get("targetPort")
                    .cloned()
                    .unwrap_or_else(|| sp["port"].clone());
                if let Some(port) = resolve_port(p, &target) {
                    let mut e = Map::new();
                    if let Some(n) = sp.get("name") {
                        e.insert("name".into(), n.clone());
                    }
                    e.insert("port".into(), json!(port));
                    e.insert(
                        "protocol".into(),
                        sp.get("protocol").cloned().unwrap_or(json!("TCP")),
                    );
                    eports.push(Value::Object(e));
                }
            }
            let mut addr = json!({"ip": ip, "nodeName": p.pointer("/spec/nodeName").cloned().unwrap_or(Value::Null), "targetRef": {"kind": "Pod", "namespace": ns, "name": meta_str(p, "name"), "uid": meta_str(p, "uid")}});
            let hostname = p
                .pointer("/spec/hostname")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !hostname.is_empty()
                && p.pointer("/spec/subdomain").and_then(Value::as_str) == Some(name)
            {
                addr["hostname"] = json!(hostname);
            }
            let field = if publish || pod_ready(p) {
                "addresses"
            } else {
                "notReadyAddresses"
            };
            match subsets.iter_mut().find(|s| s["ports"] == json!(eports)) {
                Some(s) => {
                    if !s.get(field).is_some_and(Value::is_array) {
                        s[field] = json!([]);
                    }
                    if let Some(a) = s[field].as_array_mut() {
                        a.push(addr);
                    }
                }
                None => {
                    let mut s = json!({"ports": eports});
                    s[field] = json!([addr]);
                    subsets.push(s);
                }
            }
        }
        let mut labels = svc
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        labels[SKIP_MIRROR] = json!("true");
        if svc.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None") {
            labels["service.kubernetes.io/headless"] = json!("");
        }
        let mut ctx = WriteCtx::controller("endpoint-controller");
        match core.get(eprd, Some(ns), name) {
            Ok(cur) => {
                let cur_subsets = cur.get("subsets").cloned().unwrap_or(json!([]));
                let cur_labels = cur
                    .pointer("/metadata/labels")
                    .cloned()
                    .unwrap_or(json!({}));
                if cur_subsets != json!(subsets) || cur_labels != labels {
                    let _ = core.modify(eprd, Some(ns), name, None, &mut ctx, |o| {
                        let mut o = o.clone();
                        o["metadata"]["labels"] = labels.clone();
                        if subsets.is_empty() {
                            if let Some(m) = o.as_object_mut() {
                                m.remove("subsets");
                            }
                        } else {
                            o["subsets"] = json!(subsets);
                        }
                        Ok(o)
                    });
                }
            }
            Err(_) => {
                let mut ep = json!({"metadata": {"name": name, "labels": labels}});
                if !subsets.is_empty() {
                    ep["subsets"] = json!(subsets);
                }
                let _ = core.create(eprd, Some(ns), ep, &mut ctx);
            }
        }
    }
}
