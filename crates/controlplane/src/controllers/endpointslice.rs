//! EndpointSlice controller and EndpointSlice mirroring, as
//! kube-controller-manager runs them (pkg/controller/endpointslice,
//! pkg/controller/endpointslicemirroring and k8s.io/endpointslice).
//!
//! - For every Service with a selector (not ExternalName): slices named
//!   `<svc>-<random>`, labelled `kubernetes.io/service-name` and
//!   `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`
//!   (plus the Service's own labels and `service.kubernetes.io/headless` for
//!   headless Services), owned by the Service; one group of slices per
//!   address family and per set of resolved ports, at most 100 endpoints a
//!   slice. Endpoints are the matching pods with an IP that are not
//!   finished, terminating ones included (`terminating: true`). With no
//!   endpoint at all one placeholder slice (no ports, no endpoints) is kept.
//! - For every Service without a selector whose Endpoints object the user
//!   writes: that Endpoints mirrored into slices managed by
//!   `endpointslicemirroring-controller.k8s.io`, owned by the Endpoints,
//!   unless it is labelled `endpointslice.kubernetes.io/skip-mirror: "true"`.
//!
//! Writes happen only when a slice's content differs from what is stored:
//! endpoints stay in the slice they are in, new ones fill the fullest slice
//! with room, so a pod's change rewrites one slice, not all of them.

use super::{deleting, list, pod_ready, rd, uid, Settings};
use crate::api::objects::{meta_str, Core, DeleteOptions, WriteCtx};
use crate::api::selector::LabelSelector;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
pub const CONTROLLER: &str = "endpointslice-controller.k8s.io";
pub const MIRRORING_CONTROLLER: &str = "endpointslicemirroring-controller.k8s.io";
/// `--max-endpoints-per-slice` default.
const MAX_PER_SLICE: usize = 100;
/// `--mirroring-max-endpoints-per-subset` default.
const MIRROR_MAX_PER_SLICE: usize = 1000;
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

/// One wanted group of endpoints: same address type, same ports.
struct Group {
    address_type: &'static str,
    ports: Vec<Value>,
    endpoints: Vec<Value>,
}

/// What every slice of one owner carries besides its endpoints.
struct SliceMeta {
    namespace: String,
    name_prefix: String,
    labels: Map<String, Value>,
    annotations: Map<String, Value>,
    owner: Value,
    owner_uid: String,
    manager: &'static str,
    max_per_slice: usize,
    /// Keep one empty slice when there is nothing to list (the
    /// EndpointSlice controller does, mirroring does not).
    placeholder: Option<&'static str>,
}

pub fn pass(core: &Core, _s: &Settings) {
    let services = list(core, "", "services", None);
    let slices = list(core, "discovery.k8s.io", "endpointslices", None);
    let pods = list(core, "", "pods", None);
    let nodes: HashMap<String, Arc<Value>> = list(core, "", "nodes", None)
        .into_iter()
        .map(|n| (meta_str(&n, "name").to_string(), n))
        .collect();
    let by_label = PodsByLabel::new(&pods);
    // Slices by (namespace, service name, manager).
    let mut by_owner: HashMap<(String, String, String), Vec<Arc<Value>>> = HashMap::new();
    for s in &slices {
        let labels = &s["metadata"]["labels"];
        let (Some(svc), Some(mgr)) = (
            labels[LABEL_SERVICE_NAME].as_str(),
            labels[LABEL_MANAGED_BY].as_str(),
        ) else {
            continue;
        };
        if mgr != CONTROLLER && mgr != MIRRORING_CONTROLLER {
            continue;
        }
        by_owner
            .entry((meta_str(s, "namespace").into(), svc.into(), mgr.into()))
            .or_default()
            .push(s.clone());
    }
    let mut handled: HashSet<(String, String, String)> = HashSet::new();

    for svc in &services {
        let ns = meta_str(svc, "namespace");
        let name = meta_str(svc, "name");
        let key = (ns.to_string(), name.to_string(), CONTROLLER.to_string());
        if deleting(svc) {
            // The garbage collector removes the slices with the Service.
            handled.insert(key);
            continue;
        }
        let Some(selector) = service_selector(svc) else {
            continue;
        };
        handled.insert(key.clone());
        let existing = by_owner.remove(&key).unwrap_or_default();
        let candidates = by_label.candidates(svc);
        let groups = service_groups(svc, &selector, candidates, &nodes);
        let meta = service_slice_meta(svc);
        sync_slices(core, &meta, existing, groups);
    }

    // Mirroring: Endpoints of selector-less Services.
    let svc_by_key: HashMap<(&str, &str), &Arc<Value>> = services
        .iter()
        .map(|s| ((meta_str(s, "namespace"), meta_str(s, "name")), s))
        .collect();
    for ep in list(core, "", "endpoints", None) {
        let ns = meta_str(&ep, "namespace");
        let name = meta_str(&ep, "name");
        let Some(svc) = svc_by_key.get(&(ns, name)) else {
            continue;
        };
        if !should_mirror(&ep, svc) {
            continue;
        }
        let key = (
            ns.to_string(),
            name.to_string(),
            MIRRORING_CONTROLLER.to_string(),
        );
        handled.insert(key.clone());
        let existing = by_owner.remove(&key).unwrap_or_default();
        sync_slices(core, &mirror_slice_meta(&ep), existing, mirror_groups(&ep));
    }

    // Slices of Services that no longer want them (gone, selector removed,
    // ExternalName, skip-mirror set): deleted, as their manager owns them.
    for (key, stale) in by_owner {
        if handled.contains(&key) {
            continue;
        }
        for s in stale {
            delete_slice(core, &s);
        }
    }
}

/// Pods by (namespace, label, value): a Service looks only at the pods
/// carrying the rarest of its selector's pairs, so a pass over S Services
/// and P pods costs about S + P, not S x P. Shared with the Endpoints
/// controller, which selects the same way.
pub(super) struct PodsByLabel<'a>(HashMap<(&'a str, &'a str, &'a str), Vec<&'a Value>>);

impl<'a> PodsByLabel<'a> {
    pub(super) fn new(pods: &'a [Arc<Value>]) -> Self {
        let mut by_label: HashMap<(&str, &str, &str), Vec<&Value>> = HashMap::new();
        for p in pods {
            let ns = meta_str(p, "namespace");
            for (k, v) in p
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                if let Some(v) = v.as_str() {
                    by_label.entry((ns, k, v)).or_default().push(p);
                }
            }
        }
        PodsByLabel(by_label)
    }

    /// The pods of the Service's namespace carrying its rarest selector
    /// pair: a superset of its pods (still to be matched against the whole
    /// selector); none without a selector.
    pub(super) fn candidates<'s>(&'s self, svc: &'s Value) -> &'s [&'s Value] {
        let ns = meta_str(svc, "namespace");
        svc.pointer("/spec/selector")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                self.0
                    .get(&(ns, k.as_str(), v.as_str().unwrap_or("")))
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
            })
            .min_by_key(|c| c.len())
            .unwrap_or(&[])
    }
}

/// The Service's selector, if it selects pods: not ExternalName and a
/// non-empty selector (an empty one is stored as none upstream).
fn service_selector(svc: &Value) -> Option<LabelSelector> {
    if svc.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName") {
        return None;
    }
    let sel = svc.pointer("/spec/selector")?.as_object()?;
    if sel.is_empty() {
        return None;
    }
    Some(LabelSelector::from_object(
        &json!({"matchLabels": Value::Object(sel.clone())}),
    ))
}

fn headless(svc: &Value) -> bool {
    match svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
        None | Some("") | Some("None") => true,
        Some(_) => false,
    }
}

fn service_slice_meta(svc: &Value) -> SliceMeta {
    let name = meta_str(svc, "name");
    // The Service's labels, except the reserved ones, which are set here.
    let mut labels: Map<String, Value> = svc
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.retain(|k, _| {
        ![LABEL_SERVICE_NAME, LABEL_MANAGED_BY, LABEL_HEADLESS].contains(&k.as_str())
    });
    if headless(svc) {
        labels.insert(LABEL_HEADLESS.into(), json!(""));
    }
    labels.insert(LABEL_SERVICE_NAME.into(), json!(name));
    labels.insert(LABEL_MANAGED_BY.into(), json!(CONTROLLER));
    SliceMeta {
        namespace: meta_str(svc, "namespace").into(),
        name_prefix: slice_prefix(name),
        labels,
        annotations: Map::new(),
        owner: json!({"apiVersion": "v1", "kind": "Service", "name": name, "uid": uid(svc), "controller": true, "blockOwnerDeletion": true}),
        owner_uid: uid(svc).into(),
        manager: "endpointslice-controller",
        max_per_slice: MAX_PER_SLICE,
        placeholder: Some(address_types(svc)[0]),
    }
}

/// `<name>-`, or `<name>` when the dash would make it too long.
fn slice_prefix(name: &str) -> String {
    if name.len() + 1 + 5 <= 253 {
        format!("{name}-")
    } else {
        name.to_string()
    }
}

/// `getAddressTypesForService`: the Service's IP families.
fn address_types(svc: &Value) -> Vec<&'static str> {
    let mut out = Vec::new();
    for f in svc
        .pointer("/spec/ipFamilies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match f.as_str() {
            Some("IPv4") if !out.contains(&"IPv4") => out.push("IPv4"),
            Some("IPv6") if !out.contains(&"IPv6") => out.push("IPv6"),
            _ => {}
        }
    }
    if out.is_empty() {
        match svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
            Some(ip) if ip.parse::<std::net::Ipv6Addr>().is_ok() => out.push("IPv6"),
            _ => out.push("IPv4"),
        }
    }
    out
}

fn family_of(ip: &str) -> Option<&'static str> {
    match ip.parse::<IpAddr>().ok()? {
        IpAddr::V4(_) => Some("IPv4"),
        IpAddr::V6(_) => Some("IPv6"),
    }
}

/// `FindPort`: a number is used as is; a name is looked up among the
/// pod's container ports (and restartable init containers') with the
/// Service port's protocol.
fn find_port(pod: &Value, svc_port: &Value) -> Option<i64> {
    let target = svc_port
        .get("targetPort")
        .filter(|t| !t.is_null())
        .unwrap_or(&svc_port["port"]);
    match target {
        Value::Number(n) => n.as_i64(),
        Value::String(name) => {
            if let Ok(n) = name.parse::<i64>() {
                return Some(n);
            }
            let proto = svc_port["protocol"].as_str().unwrap_or("TCP");
            let sidecars = pod
                .pointer("/spec/initContainers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|c| c["restartPolicy"] == "Always");
            pod.pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .chain(sidecars)
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .find(|p| p["name"] == *name && p["protocol"].as_str().unwrap_or("TCP") == proto)
                .and_then(|p| p["containerPort"].as_i64())
        }
        _ => None,
    }
}

/// `getEndpointPorts`: the Service's ports resolved for one pod; ports the
/// pod does not have are left out.
fn endpoint_ports(svc: &Value, pod: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for sp in svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(port) = find_port(pod, sp) else {
            continue;
        };
        let mut p = json!({
            "name": sp.get("name").and_then(Value::as_str).unwrap_or(""),
            "port": port,
            "protocol": sp.get("protocol").and_then(Value::as_str).unwrap_or("TCP"),
        });
        if let Some(ap) = sp.get("appProtocol").filter(|v| !v.is_null()) {
            p["appProtocol"] = ap.clone();
        }
        out.push(p);
    }
    out
}

/// Pods that belong in slices: not finished and with an IP (terminating
/// ones stay, marked so).
fn should_be_in_slices(pod: &Value) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return false;
    }
    let has_ip = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
        || pod
            .pointer("/status/podIPs")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    has_ip
}

fn pod_ips(pod: &Value) -> Vec<String> {
    let mut ips: Vec<String> = pod
        .pointer("/status/podIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p["ip"].as_str().map(String::from))
        .collect();
    if ips.is_empty() {
        if let Some(ip) = pod.pointer("/status/podIP").and_then(Value::as_str) {
            ips.push(ip.to_string());
        }
    }
    ips
}

/// `podToEndpoint`.
fn pod_endpoint(
    pod: &Value,
    node: Option<&Value>,
    svc: &Value,
    address_type: &str,
) -> Option<Value> {
    let addresses: Vec<String> = pod_ips(pod)
        .into_iter()
        .filter_map(|ip| {
            let parsed: IpAddr = ip.parse().ok()?;
            (family_of(&ip) == Some(address_type)).then(|| parsed.to_string())
        })
        .collect();
    if addresses.is_empty() {
        return None;
    }
    let serving = pod_ready(pod);
    let terminating = deleting(pod);
    let publish = svc.pointer("/spec/publishNotReadyAddresses") == Some(&json!(true));
    // Ready is never true for a terminating pod unless not-ready addresses are published.
    let ready = publish || (serving && !terminating);
    let mut ep = json!({
        "addresses": addresses,
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "targetRef": {"kind": "Pod", "namespace": meta_str(pod, "namespace"), "name": meta_str(pod, "name"), "uid": uid(pod)},
    });
    if let Some(n) = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        ep["nodeName"] = json!(n);
    }
    if let Some(zone) = node
        .and_then(|n| n.pointer("/metadata/labels"))
        .and_then(|l| l.get("topology.kubernetes.io/zone"))
        .and_then(Value::as_str)
        .filter(|z| !z.is_empty())
    {
        ep["zone"] = json!(zone);
    }
    // ShouldSetHostname: spec.hostname with spec.subdomain naming this Service.
    let hostname = pod
        .pointer("/spec/hostname")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !hostname.is_empty()
        && pod.pointer("/spec/subdomain").and_then(Value::as_str) == Some(meta_str(svc, "name"))
        && meta_str(pod, "namespace") == meta_str(svc, "namespace")
    {
        ep["hostname"] = json!(hostname);
    }
    Some(ep)
}

/// The wanted groups of one selector Service.
fn service_groups(
    svc: &Value,
    selector: &LabelSelector,
    pods: &[&Value],
    nodes: &HashMap<String, Arc<Value>>,
) -> Vec<Group> {
    let publish = svc.pointer("/spec/publishNotReadyAddresses") == Some(&json!(true));
    let mut groups: Vec<Group> = Vec::new();
    for address_type in address_types(svc) {
        let mut by_ports: BTreeMap<String, Group> = BTreeMap::new();
        for pod in pods.iter().copied() {
            if !selector.matches(pod) || !should_be_in_slices(pod) {
                continue;
            }
            let node_name = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            let node = nodes.get(node_name).map(|n| &**n);
            // A pod on a node that does not exist is left out (the pod GC
            // will remove it), unless not-ready addresses are published.
            if node.is_none() && !publish {
                continue;
            }
            let Some(ep) = pod_endpoint(pod, node, svc, address_type) else {
                continue;
            };
            let ports = endpoint_ports(svc, pod);
            by_ports
                .entry(ports_key(&ports))
                .or_insert_with(|| Group {
                    address_type,
                    ports,
                    endpoints: Vec::new(),
                })
                .endpoints
                .push(ep);
        }
        groups.extend(by_ports.into_values());
    }
    groups
}

fn should_mirror(ep: &Value, svc: &Value) -> bool {
    let skip = ep
        .pointer("/metadata/labels")
        .and_then(|l| l.get(LABEL_SKIP_MIRROR))
        == Some(&json!("true"));
    let leader = ep
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LEADER_ANNOTATION))
        .is_some();
    let no_selector = svc
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    !skip && !leader && no_selector && !deleting(ep)
}

fn mirror_slice_meta(ep: &Value) -> SliceMeta {
    let name = meta_str(ep, "name");
    let mut labels: Map<String, Value> = ep
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert(LABEL_SERVICE_NAME.into(), json!(name));
    labels.insert(LABEL_MANAGED_BY.into(), json!(MIRRORING_CONTROLLER));
    let mut annotations: Map<String, Value> = ep
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    annotations.remove("endpoints.kubernetes.io/last-change-trigger-time");
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    SliceMeta {
        namespace: meta_str(ep, "namespace").into(),
        name_prefix: slice_prefix(name),
        labels,
        annotations,
        owner: json!({"apiVersion": "v1", "kind": "Endpoints", "name": name, "uid": uid(ep), "controller": true, "blockOwnerDeletion": true}),
        owner_uid: uid(ep).into(),
        manager: "endpointslicemirroring-controller",
        max_per_slice: MIRROR_MAX_PER_SLICE,
        placeholder: None,
    }
}

/// The Endpoints' subsets as groups: per address family and port set,
/// `addresses` ready, `notReadyAddresses` not.
fn mirror_groups(ep: &Value) -> Vec<Group> {
    let mut by_key: BTreeMap<(String, &'static str), Group> = BTreeMap::new();
    for subset in ep
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ports: Vec<Value> = subset["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let mut out = json!({
                    "name": p.get("name").and_then(Value::as_str).unwrap_or(""),
                    "port": p["port"],
                    "protocol": p.get("protocol").and_then(Value::as_str).unwrap_or("TCP"),
                });
                if let Some(ap) = p.get("appProtocol").filter(|v| !v.is_null()) {
                    out["appProtocol"] = ap.clone();
                }
                out
            })
            .collect();
        let pk = ports_key(&ports);
        for (field, ready) in [("addresses", true), ("notReadyAddresses", false)] {
            for a in subset[field].as_array().into_iter().flatten() {
                let Some(ip) = a["ip"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) else {
                    continue;
                };
                let ip = ip.to_string();
                let Some(ty) = family_of(&ip) else { continue };
                let mut e = json!({"addresses": [ip], "conditions": {"ready": ready}});
                for f in ["targetRef", "nodeName", "hostname"] {
                    if let Some(v) = a.get(f).filter(|v| !v.is_null() && *v != "") {
                        e[f] = v.clone();
                    }
                }
                by_key
                    .entry((pk.clone(), ty))
                    .or_insert_with(|| Group {
                        address_type: ty,
                        ports: ports.clone(),
                        endpoints: Vec::new(),
                    })
                    .endpoints
                    .push(e);
            }
        }
    }
    by_key.into_values().collect()
}

/// Order-independent identity of a port set (`NewPortMapKey`).
fn ports_key(ports: &[Value]) -> String {
    let mut parts: Vec<String> = ports
        .iter()
        .map(|p| canonical_port(p).to_string())
        .collect();
    parts.sort();
    parts.join(";")
}

/// A port as stored (defaults applied), so stored and wanted ones compare equal.
fn canonical_port(p: &Value) -> Value {
    let mut out = json!({
        "name": p.get("name").and_then(Value::as_str).unwrap_or(""),
        "protocol": p.get("protocol").and_then(Value::as_str).unwrap_or("TCP"),
    });
    if let Some(n) = p.get("port").filter(|v| !v.is_null()) {
        out["port"] = n.clone();
    }
    if let Some(ap) = p.get("appProtocol").filter(|v| !v.is_null()) {
        out["appProtocol"] = ap.clone();
    }
    out
}

/// An endpoint's identity across passes: its addresses and target.
fn endpoint_key(e: &Value) -> String {
    format!(
        "{}|{}",
        e["addresses"],
        e.pointer("/targetRef/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
    )
}

fn slice_ports(s: &Value) -> Vec<Value> {
    s.get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn slice_endpoints(s: &Value) -> Vec<Value> {
    s.get("endpoints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn owned_by(s: &Value, owner_uid: &str) -> bool {
    s.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == owner_uid))
}

/// Brings one owner's slices to `groups`: endpoints stay in their slice
/// (updated in place when their conditions change), new ones go to the
/// slice closest to full that has room, then to new slices; emptied
/// slices go. Only slices whose content changes are written.
fn sync_slices(core: &Core, meta: &SliceMeta, existing: Vec<Arc<Value>>, groups: Vec<Group>) {
    let mut to_delete: Vec<Arc<Value>> = Vec::new();
    let mut by_group: HashMap<(String, String), Vec<Arc<Value>>> = HashMap::new();
    for s in existing {
        if deleting(&s) {
            continue;
        }
        if !owned_by(&s, &meta.owner_uid) {
            to_delete.push(s);
            continue;
        }
        let ty = s
            .get("addressType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        by_group
            .entry((ty, ports_key(&slice_ports(&s))))
            .or_default()
            .push(s);
    }
    let mut kept = 0usize;
    let mut created = 0usize;
    for g in groups {
        let key = (g.address_type.to_string(), ports_key(&g.ports));
        let mut slices = by_group.remove(&key).unwrap_or_default();
        slices.sort_by(|a, b| meta_str(a, "name").cmp(meta_str(b, "name")));
        let mut wanted: Vec<(String, Value)> = g
            .endpoints
            .into_iter()
            .map(|e| (endpoint_key(&e), e))
            .collect();
        let mut seen = HashSet::new();
        wanted.retain(|(k, _)| seen.insert(k.clone()));
        let mut placed: HashMap<String, Value> = wanted.iter().cloned().collect();
        // Existing slices keep the endpoints still wanted, in their order.
        let mut contents: Vec<(Arc<Value>, Vec<Value>)> = Vec::new();
        for s in slices {
            let eps: Vec<Value> = slice_endpoints(&s)
                .iter()
                .filter_map(|e| placed.remove(&endpoint_key(e)))
                .take(meta.max_per_slice)
                .collect();
            contents.push((s, eps));
        }
        // The rest, in the order wanted, into the fullest slice with room.
        let rest: Vec<Value> = wanted
            .into_iter()
            .filter_map(|(k, _)| placed.remove(&k))
            .collect();
        let mut new_slices: Vec<Vec<Value>> = Vec::new();
        for e in rest {
            let target = contents
                .iter_mut()
                .map(|(_, eps)| eps)
                .chain(new_slices.iter_mut())
                .filter(|eps| eps.len() < meta.max_per_slice)
                .max_by_key(|eps| eps.len());
            match target {
                Some(eps) => eps.push(e),
                None => new_slices.push(vec![e]),
            }
        }
        for (s, eps) in contents {
            if eps.is_empty() {
                to_delete.push(s);
            } else {
                kept += 1;
                update_slice(core, meta, &s, &g.ports, eps);
            }
        }
        for eps in new_slices {
            created += 1;
            create_slice(core, meta, g.address_type, &g.ports, eps);
        }
    }
    // Groups no longer wanted (ports or family changed).
    to_delete.extend(by_group.into_values().flatten());
    if let Some(ty) = meta.placeholder {
        if kept == 0 && created == 0 {
            // Nothing to list: one placeholder slice, kept if already there.
            let is_placeholder = |s: &Value| {
                slice_endpoints(s).is_empty()
                    && slice_ports(s).is_empty()
                    && s["addressType"] == ty
                    && owned_by(s, &meta.owner_uid)
            };
            match to_delete.iter().position(|s| is_placeholder(s)) {
                Some(i) => {
                    let s = to_delete.remove(i);
                    update_slice(core, meta, &s, &[], Vec::new());
                }
                None => create_slice(core, meta, ty, &[], Vec::new()),
            }
        }
    }
    for s in to_delete {
        delete_slice(core, &s);
    }
}

fn create_slice(
    core: &Core,
    meta: &SliceMeta,
    address_type: &str,
    ports: &[Value],
    eps: Vec<Value>,
) {
    let mut m = json!({
        "generateName": meta.name_prefix,
        "namespace": meta.namespace,
        "labels": meta.labels,
        "ownerReferences": [meta.owner],
    });
    if !meta.annotations.is_empty() {
        m["annotations"] = json!(meta.annotations);
    }
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": m,
        "addressType": address_type,
        "ports": ports,
        "endpoints": eps,
    });
    let mut ctx = WriteCtx::controller(meta.manager);
    let r = rd("discovery.k8s.io", "endpointslices");
    if let Err(e) = core.create(r, Some(&meta.namespace), slice, &mut ctx) {
        tracing::warn!(
            "{}: creating a slice in {}: {}",
            meta.manager,
            meta.namespace,
            e.message
        );
    }
}

/// Rewrites a slice's ports, endpoints, labels and annotations when any
/// differs from what is stored.
fn update_slice(core: &Core, meta: &SliceMeta, s: &Value, ports: &[Value], eps: Vec<Value>) {
    let want_ports: Vec<Value> = ports.iter().map(canonical_port).collect();
    let have_ports: Vec<Value> = slice_ports(s).iter().map(canonical_port).collect();
    let labels = s
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let annotations = s
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let want_eps = Value::Array(eps);
    let stored_eps = Value::Array(slice_endpoints(s));
    if want_ports == have_ports
        && want_eps == normalized_endpoints(&stored_eps)
        && labels == meta.labels
        && annotations == meta.annotations
    {
        return;
    }
    let mut ctx = WriteCtx::controller(meta.manager);
    let r = rd("discovery.k8s.io", "endpointslices");
    let res = core.modify(
        r,
        Some(&meta.namespace),
        meta_str(s, "name"),
        None,
        &mut ctx,
        |cur| {
            let mut cur = cur.clone();
            cur["ports"] = json!(want_ports);
            cur["endpoints"] = want_eps.clone();
            cur["metadata"]["labels"] = json!(meta.labels);
            if meta.annotations.is_empty() {
                if let Some(m) = cur["metadata"].as_object_mut() {
                    m.remove("annotations");
                }
            } else {
                cur["metadata"]["annotations"] = json!(meta.annotations);
            }
            Ok(cur)
        },
    );
    if let Err(e) = res {
        tracing::warn!(
            "{}: updating slice {}: {}",
            meta.manager,
            meta_str(s, "name"),
            e.message
        );
    }
}

/// Stored endpoints compared as wanted ones are built: the fields this
/// controller writes (a stored copy may carry defaults or hints).
fn normalized_endpoints(v: &Value) -> Value {
    let keep = [
        "addresses",
        "conditions",
        "targetRef",
        "nodeName",
        "zone",
        "hostname",
    ];
    Value::Array(
        v.as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let mut out = Map::new();
                for k in keep {
                    if let Some(x) = e.get(k).filter(|x| !x.is_null()) {
                        out.insert(k.into(), x.clone());
                    }
                }
                Value::Object(out)
            })
            .collect(),
    )
}

fn delete_slice(core: &Core, s: &Value) {
    let r = rd("discovery.k8s.io", "endpointslices");
    let _ = core.delete(
        r,
        Some(meta_str(s, "namespace")),
        meta_str(s, "name"),
        &DeleteOptions::default(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default", "uid": "svc-uid"}, "spec": spec})
    }

    fn pod(name: &str, ip: &str, ready: bool, extra: Value) -> Value {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        });
        if let (Some(m), Some(x)) = (p.as_object_mut(), extra.as_object()) {
            for (k, v) in x {
                match (m.get_mut(k), v) {
                    (Some(Value::Object(a)), Value::Object(b)) => {
                        for (k2, v2) in b {
                            a.insert(k2.clone(), v2.clone());
                        }
                    }
                    _ => {
                        m.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        p
    }

    /// A Core on a temp dir with a namespace, a node and a Service.
    fn core_with_service() -> (tempfile::TempDir, Arc<Core>) {
        use crate::api::objects::ServiceCidrs;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::FileStore::open(dir.path()).expect("store");
        let core = Core::new(store, ServiceCidrs::parse("10.96.0.0/12").expect("cidr"));
        let mut ctx = WriteCtx::controller("test");
        core.create(
            rd("", "namespaces"),
            None,
            json!({"metadata": {"name": "default"}}),
            &mut ctx,
        )
        .expect("ns");
        core.create(
            rd("", "nodes"),
            None,
            json!({"metadata": {"name": "n1"}}),
            &mut ctx,
        )
        .expect("node");
        core.create(
            rd("", "services"),
            Some("default"),
            json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}}),
            &mut ctx,
        )
        .expect("service");
        // Pods run as `default` (ServiceAccount admission); no controller makes it here.
        core.create(
            rd("", "serviceaccounts"),
            Some("default"),
            json!({"metadata": {"name": "default"}}),
            &mut ctx,
        )
        .expect("serviceaccount");
        (dir, core)
    }

    fn add_pod(core: &Core, i: usize) {
        let mut ctx = WriteCtx::controller("test");
        let name = format!("web-{i}");
        let p = pod(&name, "", true, json!({}));
        let body = json!({"metadata": {"name": name, "labels": {"app": "web"}}, "spec": p["spec"]});
        core.create(rd("", "pods"), Some("default"), body, &mut ctx)
            .expect("pod");
        let ip = format!("10.1.{}.{}", i / 200, i % 200 + 1);
        core.modify(rd("", "pods"), Some("default"), &name, Some("status"), &mut ctx, |o| {
            let mut o = o.clone();
            o["status"] = json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "conditions": [{"type": "Ready", "status": "True"}]});
            Ok(o)
        })
        .expect("status");
    }

    fn stored_slices(core: &Core) -> Vec<Arc<Value>> {
        let mut s = list(core, "discovery.k8s.io", "endpointslices", Some("default"));
        s.sort_by_key(|s| std::cmp::Reverse(slice_endpoints(s).len()));
        s
    }

    /// 150 endpoints: two slices of 100 and 50. Removing pods rewrites only
    /// the slices they were in; new ones fill the slice with room; a pass
    /// with no change writes nothing.
    #[test]
    fn slices_pack_to_100_and_change_only_where_needed() {
        let (_dir, core) = core_with_service();
        for i in 0..150 {
            add_pod(&core, i);
        }
        let settings = Settings::new(std::time::Duration::from_secs(40));
        pass(&core, &settings);
        let s = stored_slices(&core);
        let sizes: Vec<usize> = s.iter().map(|s| slice_endpoints(s).len()).collect();
        assert_eq!(sizes, vec![100, 50]);
        assert_eq!(
            s[0]["ports"],
            json!([{"name": "", "port": 8080, "protocol": "TCP"}])
        );
        let rev = core.store.revision();
        pass(&core, &settings);
        assert_eq!(core.store.revision(), rev, "an idle pass writes nothing");

        // Delete three pods of the 50-slice: only that slice changes.
        let small = meta_str(&s[1], "name").to_string();
        let big_rv = meta_str(&s[0], "resourceVersion").to_string();
        let victims: Vec<String> = slice_endpoints(&s[1])[..3]
            .iter()
            .map(|e| e["targetRef"]["name"].as_str().unwrap_or("").to_string())
            .collect();
        // At once (grace 0): a terminating pod would stay, marked terminating.
        let now = DeleteOptions {
            grace_period: Some(0),
            ..Default::default()
        };
        for v in &victims {
            core.delete(rd("", "pods"), Some("default"), v, &now)
                .expect("delete");
        }
        pass(&core, &settings);
        let s2 = stored_slices(&core);
        let big = s2
            .iter()
            .find(|x| meta_str(x, "name") != small)
            .expect("big");
        assert_eq!(meta_str(big, "resourceVersion"), big_rv);
        let small2 = s2
            .iter()
            .find(|x| meta_str(x, "name") == small)
            .expect("small");
        assert_eq!(slice_endpoints(small2).len(), 47);

        // Ten new pods go to the slice with room, no new slice.
        for i in 150..160 {
            add_pod(&core, i);
        }
        pass(&core, &settings);
        let sizes: Vec<usize> = stored_slices(&core)
            .iter()
            .map(|s| slice_endpoints(s).len())
            .collect();
        assert_eq!(sizes, vec![100, 57]);
    }

    #[test]
    fn named_target_port_resolves_per_protocol() {
        let p = pod("a", "10.0.0.1", true, json!({}));
        let sp = json!({"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"});
        assert_eq!(find_port(&p, &sp), Some(8080));
        let udp = json!({"port": 80, "targetPort": "http", "protocol": "UDP"});
        assert_eq!(find_port(&p, &udp), None);
        let num = json!({"port": 80, "targetPort": 9090});
        assert_eq!(find_port(&p, &num), Some(9090));
    }

    #[test]
    fn conditions_follow_upstream() {
        let s = svc(json!({"clusterIP": "10.96.0.5", "selector": {"app": "web"}}));
        let node =
            json!({"metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "z1"}}});
        let ready = pod_endpoint(
            &pod("a", "10.0.0.1", true, json!({})),
            Some(&node),
            &s,
            "IPv4",
        )
        .expect("endpoint");
        assert_eq!(
            ready["conditions"],
            json!({"ready": true, "serving": true, "terminating": false})
        );
        assert_eq!(ready["zone"], "z1");
        assert_eq!(ready["nodeName"], "n1");
        let term = pod(
            "b",
            "10.0.0.2",
            true,
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        );
        let t = pod_endpoint(&term, None, &s, "IPv4").expect("endpoint");
        assert_eq!(
            t["conditions"],
            json!({"ready": false, "serving": true, "terminating": true})
        );
        let publish = svc(json!({"clusterIP": "10.96.0.5", "publishNotReadyAddresses": true}));
        let nr = pod_endpoint(
            &pod("c", "10.0.0.3", false, json!({})),
            None,
            &publish,
            "IPv4",
        )
        .expect("endpoint");
        assert_eq!(
            nr["conditions"],
            json!({"ready": true, "serving": false, "terminating": false})
        );
        // No IPv6 address: no IPv6 endpoint.
        assert!(pod_endpoint(&pod("d", "10.0.0.4", true, json!({})), None, &s, "IPv6").is_none());
    }

    #[test]
    fn hostname_only_for_the_named_subdomain() {
        let s = svc(json!({"clusterIP": "None"}));
        let with = pod(
            "a",
            "10.0.0.1",
            true,
            json!({"spec": {"hostname": "h", "subdomain": "web"}}),
        );
        let other = pod(
            "b",
            "10.0.0.2",
            true,
            json!({"spec": {"hostname": "h", "subdomain": "db"}}),
        );
        assert_eq!(
            pod_endpoint(&with, None, &s, "IPv4").expect("ep")["hostname"],
            "h"
        );
        assert!(pod_endpoint(&other, None, &s, "IPv4")
            .expect("ep")
            .get("hostname")
            .is_none());
    }

    #[test]
    fn port_keys_ignore_order() {
        let a = vec![
            json!({"name": "a", "port": 1, "protocol": "TCP"}),
            json!({"name": "b", "port": 2, "protocol": "UDP"}),
        ];
        let b = vec![
            json!({"name": "b", "port": 2, "protocol": "UDP"}),
            json!({"name": "a", "port": 1}),
        ];
        assert_eq!(ports_key(&a), ports_key(&b));
    }

    #[test]
    fn mirrored_groups_split_by_family_and_readiness() {
        let ep = json!({"metadata": {"name": "ext", "namespace": "default"}, "subsets": [
            {"addresses": [{"ip": "192.0.2.1"}, {"ip": "2001:db8::1"}], "notReadyAddresses": [{"ip": "192.0.2.2"}], "ports": [{"port": 80}]}
        ]});
        let g = mirror_groups(&ep);
        assert_eq!(g.len(), 2);
        let v4 = g.iter().find(|g| g.address_type == "IPv4").expect("v4");
        assert_eq!(v4.endpoints.len(), 2);
        assert_eq!(v4.endpoints[1]["conditions"]["ready"], false);
        assert_eq!(
            v4.ports[0],
            json!({"name": "", "port": 80, "protocol": "TCP"})
        );
    }
}
