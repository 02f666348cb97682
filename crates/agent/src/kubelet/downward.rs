//! Downward API values the kubelet half computes itself, with upstream's formats: pod fields
//! (`fieldRef`, kubelet's `fieldpath.ExtractFieldPathAsString` and
//! `podFieldSelectorRuntimeValue`) and container resources (`resourceFieldRef`, kubelet's
//! `ExtractResourceValueByContainerNameAndNodeAllocatable`).

use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

/// What the node contributes to downward API values.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    /// status.hostIP (--node-ip).
    pub ip: Option<String>,
    /// Node allocatable: the limit of a container that sets none (kubelet's
    /// `MergeContainerResourceLimits`).
    pub allocatable: BTreeMap<String, Quantity>,
}

/// `metadata.labels['key']` → ("metadata.labels", "key") (`SplitMaybeSubscriptedPath`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let s = path.strip_suffix("']")?;
    let (head, key) = s.split_once("['")?;
    (!head.is_empty()).then_some((head, key))
}

/// Go's `%q` of a string (what `fieldpath.FormatMap` writes values as).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32))
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `fieldpath.FormatMap`: `key="value"` lines sorted by key, no trailing newline.
pub fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The fields a downwardAPI volume item may name (`fieldpath.ExtractFieldPathAsString`):
/// metadata.name, namespace, uid, labels, annotations, and one label or annotation by key.
pub fn metadata_field(pod: &Pod, path: &str) -> Result<String, String> {
    let md = &pod.metadata;
    if let Some((head, key)) = split_subscript(path) {
        let map = match head {
            "metadata.annotations" => md.annotations.as_ref(),
            "metadata.labels" => md.labels.as_ref(),
            _ => return Err(format!("fieldPath {path:?} does not support subscript")),
        };
        return Ok(map.and_then(|m| m.get(key)).cloned().unwrap_or_default());
    }
    Ok(match path {
        "metadata.annotations" => format_map(md.annotations.as_ref()),
        "metadata.labels" => format_map(md.labels.as_ref()),
        "metadata.name" => md.name.clone().unwrap_or_default(),
        "metadata.namespace" => md.namespace.clone().unwrap_or_default(),
        "metadata.uid" => md.uid.clone().unwrap_or_default(),
        _ => return Err(format!("unsupported fieldPath: {path}")),
    })
}

/// An env `fieldRef`'s value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvField {
    Value(String),
    /// status.podIP(s) of a pod on the pod network: known once the runtime set the network up,
    /// so the runtime fills it in at start.
    Runtime(String),
}

/// An env `fieldRef` (`podFieldSelectorRuntimeValue`): the metadata fields, spec.nodeName,
/// spec.serviceAccountName, status.hostIP(s) and status.podIP(s) (the node's IP for a
/// host-network pod).
pub fn env_field(pod: &Pod, node: &NodeInfo, path: &str) -> Result<EnvField, String> {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let host_ip = node.ip.clone().unwrap_or_default();
    Ok(EnvField::Value(match path {
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| node.name.clone()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone().or(s.service_account.clone()))
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip,
        "status.podIP" | "status.podIPs" if host_network => host_ip,
        "status.podIP" | "status.podIPs" => return Ok(EnvField::Runtime(path.to_string())),
        p => metadata_field(pod, p)?,
    }))
}

/// A Kubernetes quantity as a number ("250m" → 0.25, "64Mi" → 67108864, "1e3" → 1000).
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suf) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suf {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// A `resourceFieldRef` of container `container` (env: the container itself; volumes: the
/// item's containerName). Unset requests default to the limits (as the API server defaults
/// them); unset cpu/memory/ephemeral-storage limits are the node's allocatable.
pub fn resource_value(
    sel: &ResourceFieldSelector,
    pod: &Pod,
    container: &str,
    node: &NodeInfo,
) -> Result<String, String> {
    let c =
        find_container(pod, container).ok_or_else(|| format!("container {container} not found"))?;
    let res = c.resources.as_ref();
    let limits = res.and_then(|r| r.limits.clone()).unwrap_or_default();
    let mut requests = res.and_then(|r| r.requests.clone()).unwrap_or_default();
    for (k, v) in &limits {
        requests.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let mut merged = limits;
    for k in ["cpu", "memory", "ephemeral-storage"] {
        let unset = merged
            .get(k)
            .and_then(|q| parse_quantity(&q.0))
            .is_none_or(|v| v == 0.0);
        if unset {
            if let Some(a) = node.allocatable.get(k) {
                merged.insert(k.to_string(), a.clone());
            }
        }
    }
    let divisor = match sel.divisor.as_ref().map(|d| d.0.trim()) {
        None | Some("") => 1.0,
        Some(d) => parse_quantity(d).ok_or_else(|| format!("invalid divisor {d:?}"))?,
    };
    let (kind, name) = sel
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource : {}", sel.resource))?;
    let map = match kind {
        "limits" => &merged,
        "requests" => &requests,
        _ => return Err(format!("unsupported container resource : {}", sel.resource)),
    };
    let is_cpu = name == "cpu";
    if !(is_cpu
        || name == "memory"
        || name == "ephemeral-storage"
        || name.starts_with("hugepages-"))
    {
        return Err(format!("unsupported container resource : {}", sel.resource));
    }
    let value = match map.get(name) {
        None => 0.0,
        Some(q) => parse_quantity(&q.0)
            .ok_or_else(|| format!("invalid quantity {:?} for {}", q.0, sel.resource))?,
    };
    // cpu: MilliValue() / divisor.MilliValue(); the others: Value() / divisor.Value();
    // both rounded up as Quantity rounds, the quotient rounded up.
    let (v, d) = if is_cpu {
        ((value * 1000.0).ceil(), (divisor * 1000.0).ceil())
    } else {
        (value.ceil(), divisor.ceil())
    };
    if d <= 0.0 {
        return Err(format!("invalid divisor for {}", sel.resource));
    }
    Ok(format!("{}", (v / d).ceil() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    #[test]
    fn labels_are_formatted_like_upstream() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1",
                         "labels": {"b": "2", "a": "x\"y\nz"},
                         "annotations": {"k": "v"}},
            "spec": {"containers": []}
        }));
        assert_eq!(
            metadata_field(&p, "metadata.labels").unwrap(),
            "a=\"x\\\"y\\nz\"\nb=\"2\""
        );
        assert_eq!(metadata_field(&p, "metadata.labels['b']").unwrap(), "2");
        assert_eq!(metadata_field(&p, "metadata.labels['nope']").unwrap(), "");
        assert_eq!(
            metadata_field(&p, "metadata.annotations").unwrap(),
            "k=\"v\""
        );
        assert_eq!(metadata_field(&p, "metadata.uid").unwrap(), "u-1");
        assert_eq!(
            metadata_field(&p, "status.podIP").unwrap_err(),
            "unsupported fieldPath: status.podIP"
        );
        assert_eq!(
            metadata_field(&p, "metadata.name['x']").unwrap_err(),
            "fieldPath \"metadata.name['x']\" does not support subscript"
        );
    }

    #[test]
    fn env_fields() {
        let node = NodeInfo {
            name: "n1".into(),
            ip: Some("10.0.0.5".into()),
            ..Default::default()
        };
        let mut p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n1", "serviceAccountName": "robot", "containers": []}
        }));
        let v = |p: &Pod, f: &str| env_field(p, &node, f).unwrap();
        assert_eq!(
            v(&p, "spec.serviceAccountName"),
            EnvField::Value("robot".into())
        );
        assert_eq!(v(&p, "status.hostIP"), EnvField::Value("10.0.0.5".into()));
        assert_eq!(
            v(&p, "status.podIP"),
            EnvField::Runtime("status.podIP".into())
        );
        if let Some(s) = p.spec.as_mut() {
            s.host_network = Some(true);
        }
        assert_eq!(v(&p, "status.podIP"), EnvField::Value("10.0.0.5".into()));
        assert!(env_field(&p, &node, "spec.nope").is_err());
    }

    #[test]
    fn resources_round_up_and_fall_back_to_allocatable() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "image": "i",
                 "resources": {"limits": {"cpu": "250m", "memory": "64Mi"},
                               "requests": {"memory": "1000"}}},
                {"name": "b", "image": "i"}
            ]}
        }));
        let node = NodeInfo {
            allocatable: BTreeMap::from([
                ("cpu".to_string(), Quantity("2".into())),
                ("memory".to_string(), Quantity("2Gi".into())),
            ]),
            ..Default::default()
        };
        let r = |c: &str, res: &str, div: Option<&str>| {
            let sel = ResourceFieldSelector {
                container_name: None,
                divisor: div.map(|d| Quantity(d.into())),
                resource: res.into(),
            };
            resource_value(&sel, &p, c, &node)
        };
        assert_eq!(r("a", "limits.cpu", None).unwrap(), "1");
        assert_eq!(r("a", "limits.cpu", Some("1m")).unwrap(), "250");
        assert_eq!(r("a", "limits.memory", Some("1Mi")).unwrap(), "64");
        assert_eq!(r("a", "limits.memory", None).unwrap(), "67108864");
        assert_eq!(r("a", "requests.cpu", Some("1m")).unwrap(), "250");
        assert_eq!(r("a", "requests.memory", Some("1k")).unwrap(), "1");
        assert_eq!(r("b", "limits.cpu", None).unwrap(), "2");
        assert_eq!(r("b", "limits.memory", Some("1Gi")).unwrap(), "2");
        assert_eq!(r("b", "requests.cpu", None).unwrap(), "0");
        assert_eq!(
            r("c", "limits.cpu", None).unwrap_err(),
            "container c not found"
        );
        assert_eq!(
            r("a", "limits.gpu", None).unwrap_err(),
            "unsupported container resource : limits.gpu"
        );
    }
}
