//! The cluster file's kind-style parts: `nodes:` (labels, taints, extra mounts, port mappings),
//! `registries:` (mirrors and insecure registries, k3s' registries.yaml shape) and
//! `portMappings:`. Every problem is collected with its key path (`nodes[1].taints[0]`), so a
//! file with several mistakes is told about all of them at once.
//!
//! ```yaml
//! kind: Cluster                         # kind's header, accepted (`name:` is --name)
//! nodes:
//! - role: control-plane                 # kind's roles; every rktup node runs pods
//! - role: worker
//!   labels: { tier: db }
//!   taints: ["dedicated=db:NoSchedule"] # kubectl taint's spelling, or {key, value, effect}
//!   extraMounts:
//!   - { hostPath: /srv/data, containerPath: /data, readOnly: true }
//!   extraPortMappings:                  # to this node's address
//!   - { containerPort: 30080, hostPort: 8080 }
//! registries:
//!   mirrors:
//!     docker.io: ["http://127.0.0.1:5000"]           # short form
//!     quay.io: { endpoint: ["http://127.0.0.1:5001"], exclusive: true }   # k3s' form
//!   insecure: ["127.0.0.1:5000"]
//! portMappings:                         # to the first node's address
//! - { containerPort: 30443, hostPort: 8443, listenAddress: 127.0.0.1, protocol: TCP }
//! ```

use rktup_node_contract::{
    check_mirror_endpoint, check_registry_host, NodeLabel, RegistryMirror, Taint, TAINT_FORMAT,
};
use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The top-level keys this module reads (everything else is a setting name).
pub const LAYOUT_KEYS: [&str; 5] = ["nodes", "registries", "portMappings", "kind", "apiVersion"];

/// kind's and rktup's `apiVersion` values.
pub const API_VERSIONS: [&str; 2] = ["rktup.io/v1alpha1", "kind.x-k8s.io/v1alpha4"];

/// Nodes, mirrors and port mappings the cluster file describes; empty when it has none. A
/// local cluster's record keeps it (serialized), so later starts of its agents use it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterLayout {
    /// One entry per node, in order (node 1 first); empty: NUM_NODES plain nodes.
    pub nodes: Vec<NodeSpec>,
    pub registries: Registries,
    /// Host ports forwarded to a node's port (top-level `portMappings` go to node 1, a node's
    /// `extraPortMappings` to that node).
    pub port_mappings: Vec<PortMapping>,
}

impl ClusterLayout {
    pub fn is_empty(&self) -> bool {
        *self == ClusterLayout::default()
    }
}

/// kind's node roles. rktup's control plane runs on the host, not in a node, so both are nodes
/// that run pods (as a one-node kind cluster's control-plane node does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    ControlPlane,
    #[default]
    Worker,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub role: NodeRole,
    pub labels: Vec<NodeLabel>,
    pub taints: Vec<Taint>,
    pub extra_mounts: Vec<ExtraMount>,
}

/// kind's `extraMounts`: a host directory or file seen at `container_path` on the node. A
/// local node shares the host's filesystem, so it is the node's hostPath volumes that see it:
/// a pod's `hostPath: {path: <container_path>/...}` on this node is served from `host_path`
/// (read-only when `read_only`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraMount {
    pub host_path: PathBuf,
    pub container_path: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registries {
    /// Mirror endpoints, a registry's in the order written.
    pub mirrors: Vec<RegistryMirror>,
    /// Registries served by their mirrors only (`exclusive: true`).
    pub exclusive: Vec<String>,
    /// Registries reached over plain HTTP (host:port), as `--insecure-registry`.
    pub insecure: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// kind's `extraPortMappings` entry: `listen_address:host_port` on this machine forwarded to
/// the node's `container_port` (a NodePort, or a LoadBalancer Service's node port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Index of the node (0: the first).
    pub node: usize,
    pub container_port: u16,
    pub host_port: u16,
    pub listen_address: Ipv4Addr,
    pub protocol: Protocol,
}

/// One problem: key path, the value as written, what would be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub value: String,
    pub expected: String,
}

struct Parser {
    problems: Vec<Problem>,
    /// Key paths of the port mappings read, in the order they are added to the layout.
    port_paths: Vec<String>,
}

/// A value as the user wrote it, for messages.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => serde_yaml_ng::to_string(other)
            .map(|s| s.trim().replace('\n', " "))
            .unwrap_or_default(),
    }
}

fn key_name(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => shown(other),
    }
}

impl Parser {
    fn bad(&mut self, path: impl Into<String>, value: &Value, expected: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            value: shown(value),
            expected: expected.into(),
        });
    }

    fn mapping<'v>(&mut self, path: &str, v: &'v Value, what: &str) -> Option<&'v Mapping> {
        match v {
            Value::Mapping(m) => Some(m),
            _ => {
                self.bad(path, v, what.to_string());
                None
            }
        }
    }

    fn seq<'v>(&mut self, path: &str, v: &'v Value, what: &str) -> &'v [Value] {
        match v {
            Value::Sequence(s) => s,
            Value::Null => &[],
            _ => {
                self.bad(path, v, format!("a list of {what}"));
                &[]
            }
        }
    }

    /// Keys of `m` outside `known` are problems (a misspelt `readonly` must not be ignored).
    fn known_keys(&mut self, path: &str, m: &Mapping, known: &[&str]) {
        for (k, v) in m {
            let k = key_name(k);
            if !known.contains(&k.as_str()) {
                self.bad(
                    format!("{path}.{k}"),
                    v,
                    format!("one of the keys {}", known.join(", ")),
                );
            }
        }
    }

    fn string(&mut self, path: &str, v: &Value, what: &str) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                self.bad(path, v, what.to_string());
                None
            }
        }
    }

    fn boolean(&mut self, path: &str, v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            _ => {
                self.bad(path, v, "true or false");
                None
            }
        }
    }

    fn port(&mut self, path: &str, v: &Value) -> Option<u16> {
        match v.as_u64() {
            Some(p) if (1..=65535).contains(&p) => Some(p as u16),
            _ => {
                self.bad(path, v, "a port number from 1 to 65535");
                None
            }
        }
    }

    fn nodes(&mut self, v: &Value, layout: &mut ClusterLayout) {
        for (i, n) in self.seq("nodes", v, "nodes").iter().enumerate() {
            let path = format!("nodes[{i}]");
            let mut node = NodeSpec::default();
            if let Some(m) = self.mapping(
                &path,
                n,
                "a node: a mapping with role, labels, taints, extraMounts, extraPortMappings",
            ) {
                self.known_keys(
                    &path,
                    m,
                    &[
                        "role",
                        "labels",
                        "taints",
                        "extraMounts",
                        "extraPortMappings",
                    ],
                );
                for (k, v) in m {
                    let p = format!("{path}.{}", key_name(k));
                    match key_name(k).as_str() {
                        "role" => match v.as_str() {
                            Some("control-plane") => node.role = NodeRole::ControlPlane,
                            Some("worker") => node.role = NodeRole::Worker,
                            _ => self.bad(p, v, "control-plane or worker"),
                        },
                        "labels" => node.labels = self.labels(&p, v),
                        "taints" => node.taints = self.taints(&p, v),
                        "extraMounts" => node.extra_mounts = self.mounts(&p, v),
                        "extraPortMappings" => {
                            let pm = self.port_mappings(&p, v, i);
                            layout.port_mappings.extend(pm);
                        }
                        _ => {}
                    }
                }
            }
            layout.nodes.push(node);
        }
    }

    fn labels(&mut self, path: &str, v: &Value) -> Vec<NodeLabel> {
        let Some(m) = self.mapping(path, v, "a mapping of label keys to values") else {
            return vec![];
        };
        let mut out = vec![];
        for (k, val) in m {
            let key = key_name(k);
            let p = format!("{path}.{key}");
            let Some(value) = self.string(&p, val, "a label value (a string)") else {
                continue;
            };
            match NodeLabel::new(&key, &value) {
                Ok(l) if !l.node_may_set() => self.bad(
                    p,
                    val,
                    "a label a node may set on itself: NodeRestriction refuses kubernetes.io \
                     and k8s.io labels other than the kubelet's own (kubelet.kubernetes.io/, \
                     node.kubernetes.io/, topology.kubernetes.io/...), so kubelet refuses them \
                     in --node-labels; label the node with kubectl after `up` instead",
                ),
                Ok(l) => out.push(l),
                Err(e) => self.bad(p, val, e.expected),
            }
        }
        out
    }

    fn taints(&mut self, path: &str, v: &Value) -> Vec<Taint> {
        let mut out = vec![];
        for (i, t) in self.seq(path, v, "taints").iter().enumerate() {
            let p = format!("{path}[{i}]");
            let parsed = match t {
                Value::String(s) => s.parse::<Taint>(),
                Value::Mapping(m) => {
                    self.known_keys(&p, m, &["key", "value", "effect"]);
                    let get = |k: &str| m.get(k).and_then(Value::as_str);
                    Taint::new(
                        get("key").unwrap_or(""),
                        get("value"),
                        get("effect").unwrap_or(""),
                    )
                }
                _ => {
                    self.bad(&p, t, TAINT_FORMAT);
                    continue;
                }
            };
            match parsed {
                Ok(t) => out.push(t),
                Err(e) => self.bad(p, t, e.expected),
            }
        }
        out
    }

    fn mounts(&mut self, path: &str, v: &Value) -> Vec<ExtraMount> {
        let mut out = vec![];
        for (i, mv) in self.seq(path, v, "mounts").iter().enumerate() {
            let p = format!("{path}[{i}]");
            let Some(m) = self.mapping(&p, mv, "a mount: hostPath, containerPath, readOnly") else {
                continue;
            };
            self.known_keys(&p, m, &["hostPath", "containerPath", "readOnly"]);
            let abs = |s: &Option<String>| s.as_deref().is_some_and(|s| s.starts_with('/'));
            let host = m
                .get("hostPath")
                .and_then(Value::as_str)
                .map(str::to_string);
            let problems_before = self.problems.len();
            if !abs(&host) {
                let v = m.get("hostPath").cloned().unwrap_or(Value::Null);
                self.bad(
                    format!("{p}.hostPath"),
                    &v,
                    "an absolute path on this machine",
                );
            } else if let Some(h) = &host {
                if !std::path::Path::new(h).exists() {
                    self.bad(
                        format!("{p}.hostPath"),
                        &Value::String(h.clone()),
                        "an existing file or directory on this machine",
                    );
                }
            }
            let container = m
                .get("containerPath")
                .and_then(Value::as_str)
                .map(str::to_string);
            if !abs(&container) || container.as_deref() == Some("/") {
                let v = m.get("containerPath").cloned().unwrap_or(Value::Null);
                self.bad(
                    format!("{p}.containerPath"),
                    &v,
                    "an absolute path on the node other than /",
                );
            }
            let read_only = match m.get("readOnly") {
                Some(v) => self.boolean(&format!("{p}.readOnly"), v).unwrap_or(false),
                None => false,
            };
            if self.problems.len() > problems_before {
                continue;
            }
            if let (Some(h), Some(c)) = (host, container) {
                // The node contract's spelling (`HOST:NODE[:ro]`) must carry it.
                if let Err(e) = rktup_node_contract::HostPathMount::new(&h, &c, read_only) {
                    self.bad(&p, mv, e.expected);
                    continue;
                }
                out.push(ExtraMount {
                    host_path: h.into(),
                    container_path: c.into(),
                    read_only,
                });
            }
        }
        out
    }

    fn port_mappings(&mut self, path: &str, v: &Value, node: usize) -> Vec<PortMapping> {
        let mut out = vec![];
        for (i, pv) in self.seq(path, v, "port mappings").iter().enumerate() {
            let p = format!("{path}[{i}]");
            let Some(m) = self.mapping(
                &p,
                pv,
                "a port mapping: containerPort, hostPort, listenAddress, protocol",
            ) else {
                continue;
            };
            self.known_keys(
                &p,
                m,
                &["containerPort", "hostPort", "listenAddress", "protocol"],
            );
            let port = |s: &mut Self, k: &str| match m.get(k) {
                Some(v) => s.port(&format!("{p}.{k}"), v),
                None => {
                    s.bad(
                        format!("{p}.{k}"),
                        &Value::Null,
                        "a port number from 1 to 65535",
                    );
                    None
                }
            };
            let container_port = port(self, "containerPort");
            let host_port = port(self, "hostPort");
            let listen_address = match m.get("listenAddress") {
                None => Some(Ipv4Addr::UNSPECIFIED),
                Some(v) => match v.as_str().and_then(|s| s.parse::<Ipv4Addr>().ok()) {
                    Some(a) => Some(a),
                    None => {
                        self.bad(
                            format!("{p}.listenAddress"),
                            v,
                            "an IPv4 address of this machine (default 0.0.0.0: every address)",
                        );
                        None
                    }
                },
            };
            let protocol = match m.get("protocol").map(|v| (v, v.as_str())) {
                None => Some(Protocol::Tcp),
                Some((_, Some(s))) if s.eq_ignore_ascii_case("tcp") => Some(Protocol::Tcp),
                Some((_, Some(s))) if s.eq_ignore_ascii_case("udp") => Some(Protocol::Udp),
                Some((v, _)) => {
                    self.bad(format!("{p}.protocol"), v, "TCP or UDP (default TCP)");
                    None
                }
            };
            if let (Some(container_port), Some(host_port), Some(listen_address), Some(protocol)) =
                (container_port, host_port, listen_address, protocol)
            {
                self.port_paths.push(p.clone());
                out.push(PortMapping {
                    node,
                    container_port,
                    host_port,
                    listen_address,
                    protocol,
                });
            }
        }
        out
    }

    fn registries(&mut self, v: &Value, layout: &mut ClusterLayout) {
        let Some(m) = self.mapping("registries", v, "a mapping with mirrors and insecure") else {
            return;
        };
        self.known_keys("registries", m, &["mirrors", "insecure"]);
        let r = &mut layout.registries;
        if let Some(mv) = m.get("mirrors") {
            if let Some(mirrors) = self.mapping(
                "registries.mirrors",
                mv,
                "a mapping of registry names to mirror endpoints",
            ) {
                for (k, ev) in mirrors {
                    let registry = key_name(k);
                    let p = format!("registries.mirrors.{registry}");
                    if let Err(e) = check_registry_host(&registry) {
                        self.bad(&p, k, e);
                        continue;
                    }
                    // The short form (a list) or k3s' `{endpoint: [...]}`, plus `exclusive`.
                    let (endpoints, ep_path) = match ev {
                        Value::Mapping(em) => {
                            self.known_keys(&p, em, &["endpoint", "exclusive"]);
                            if let Some(x) = em.get("exclusive") {
                                if self.boolean(&format!("{p}.exclusive"), x) == Some(true) {
                                    r.exclusive.push(registry.clone());
                                }
                            }
                            let e = em.get("endpoint").cloned().unwrap_or(Value::Null);
                            (e, format!("{p}.endpoint"))
                        }
                        other => (other.clone(), p.clone()),
                    };
                    let list = self.seq(&ep_path, &endpoints, "endpoints (http[s]://HOST[:PORT])");
                    if list.is_empty() {
                        self.bad(
                            &ep_path,
                            &endpoints,
                            "at least one mirror endpoint http[s]://HOST[:PORT]",
                        );
                    }
                    for (i, e) in list.iter().enumerate() {
                        let ep = format!("{ep_path}[{i}]");
                        let Some(s) =
                            self.string(&ep, e, "a mirror endpoint http[s]://HOST[:PORT]")
                        else {
                            continue;
                        };
                        match check_mirror_endpoint(&s).and_then(|()| {
                            RegistryMirror::new(&registry, &s).map_err(|e| e.expected)
                        }) {
                            Ok(m) => r.mirrors.push(m),
                            Err(why) => self.bad(ep, e, why),
                        }
                    }
                }
            }
        }
        if let Some(iv) = m.get("insecure") {
            for (i, h) in self
                .seq("registries.insecure", iv, "registries (HOST:PORT)")
                .iter()
                .enumerate()
            {
                let p = format!("registries.insecure[{i}]");
                let Some(s) = self.string(&p, h, "a registry HOST[:PORT]") else {
                    continue;
                };
                match check_registry_host(&s) {
                    Ok(()) if s != "*" => r.insecure.push(s),
                    Ok(()) => self.bad(p, h, "a registry HOST[:PORT], not *"),
                    Err(e) => self.bad(p, h, e),
                }
            }
        }
    }

    /// Two mappings may not take the same host port on overlapping addresses.
    fn check_port_clashes(&mut self, layout: &ClusterLayout, paths: &[String]) {
        for (i, a) in layout.port_mappings.iter().enumerate() {
            for b in &layout.port_mappings[..i] {
                let overlap = a.listen_address == b.listen_address
                    || a.listen_address.is_unspecified()
                    || b.listen_address.is_unspecified();
                if a.protocol == b.protocol && a.host_port == b.host_port && overlap {
                    self.bad(
                        format!("{}.hostPort", paths[i]),
                        &Value::Number(a.host_port.into()),
                        format!(
                            "a host port no other mapping listens on ({} {} is taken)",
                            a.protocol.as_str(),
                            a.host_port
                        ),
                    );
                }
            }
        }
    }
}

/// Reads the layout keys of the file's top level (the others are left to the settings).
pub fn parse_layout(top: &Mapping) -> (ClusterLayout, Vec<Problem>) {
    let mut p = Parser {
        problems: vec![],
        port_paths: vec![],
    };
    let mut layout = ClusterLayout::default();
    for (k, v) in top {
        match key_name(k).as_str() {
            "nodes" if !is_scalar(v) => {
                p.nodes(v, &mut layout);
            }
            "registries" => p.registries(v, &mut layout),
            "portMappings" => {
                let pm = p.port_mappings("portMappings", v, 0);
                layout.port_mappings.extend(pm);
            }
            "kind" if v.as_str() != Some("Cluster") => p.bad("kind", v, "Cluster"),
            "apiVersion" if !v.as_str().is_some_and(|s| API_VERSIONS.contains(&s)) => p.bad(
                "apiVersion",
                v,
                format!("one of {}", API_VERSIONS.join(", ")),
            ),
            _ => {}
        }
    }
    let paths = std::mem::take(&mut p.port_paths);
    p.check_port_clashes(&layout, &paths);
    (layout, p.problems)
}

fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

#[cfg(test)]
mod tests {
    use crate::{load, ClusterFile, GlobalArgs, NodeRole, Protocol, Provider};
    use std::collections::BTreeMap;
    use std::path::Path;

    const FULL: &str = r#"
kind: Cluster
apiVersion: rktup.io/v1alpha1
NUM_NODES: 2
kube-version: v1.31.0
nodes:
- role: control-plane
- role: worker
  labels:
    tier: db
    example.com/pool: blue
  taints:
  - dedicated=db:NoSchedule
  - {key: example.com/gpu, effect: NoExecute}
  extraMounts:
  - {hostPath: /tmp, containerPath: /data, readOnly: true}
  extraPortMappings:
  - {containerPort: 30080, hostPort: 8080}
registries:
  mirrors:
    docker.io: ["http://127.0.0.1:5000", "https://mirror.gcr.io"]
    quay.io: {endpoint: ["http://127.0.0.1:5001"], exclusive: true}
  insecure: ["127.0.0.1:5002"]
portMappings:
- {containerPort: 30443, hostPort: 8443, listenAddress: 127.0.0.1, protocol: udp}
"#;

    fn settings(text: &str, env: &[(&str, &str)]) -> Result<crate::ClusterSettings, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.yaml");
        std::fs::write(&path, text).unwrap();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("RKTUP_STATE_DIR".into(), "/tmp/rktup-config-test".into())])
            .collect();
        let global = GlobalArgs {
            config: Some(path),
            ..Default::default()
        };
        load(Provider::Local, &global, &BTreeMap::new(), &|k| {
            env.get(k).cloned()
        })
        .map_err(|e| {
            e.to_string()
                .replace(&dir.path().display().to_string(), "DIR")
        })
    }

    #[test]
    fn a_full_file() {
        let s = settings(FULL, &[]).unwrap();
        assert_eq!(s.num_nodes, 2);
        assert_eq!(s.kube_version.tag, "v1.31.0");
        let l = &s.layout;
        assert_eq!(l.nodes.len(), 2);
        assert_eq!(l.nodes[0].role, NodeRole::ControlPlane);
        assert!(l.nodes[0].labels.is_empty());
        let n = &l.nodes[1];
        let labels: Vec<String> = n.labels.iter().map(|l| l.to_string()).collect();
        assert_eq!(labels, ["tier=db", "example.com/pool=blue"]);
        let taints: Vec<String> = n.taints.iter().map(|t| t.to_string()).collect();
        assert_eq!(
            taints,
            ["dedicated=db:NoSchedule", "example.com/gpu:NoExecute"]
        );
        assert_eq!(n.extra_mounts.len(), 1);
        assert!(n.extra_mounts[0].read_only);
        assert_eq!(n.extra_mounts[0].container_path, Path::new("/data"));
        let mirrors: Vec<String> = l.registries.mirrors.iter().map(|m| m.to_string()).collect();
        assert_eq!(
            mirrors,
            [
                "docker.io=http://127.0.0.1:5000",
                "docker.io=https://mirror.gcr.io",
                "quay.io=http://127.0.0.1:5001"
            ]
        );
        assert_eq!(l.registries.exclusive, ["quay.io"]);
        assert_eq!(l.registries.insecure, ["127.0.0.1:5002"]);
        // The node's mapping (to node 2) and the top-level one (to node 1).
        let pm: Vec<_> = l
            .port_mappings
            .iter()
            .map(|p| (p.node, p.host_port, p.container_port, p.protocol))
            .collect();
        assert!(pm.contains(&(1, 8080, 30080, Protocol::Tcp)), "{pm:?}");
        assert!(pm.contains(&(0, 8443, 30443, Protocol::Udp)), "{pm:?}");
        // Flat files keep working, and `nodes: 3` is still NUM_NODES.
        let s = settings("nodes: 3\ndns_domain: example.local\n", &[]).unwrap();
        assert_eq!((s.num_nodes, s.dns_domain.as_str()), (3, "example.local"));
        assert!(s.layout.is_empty());
    }

    #[test]
    fn the_nodes_list_sets_num_nodes() {
        let text = "nodes:\n- {}\n- {}\n- {}\n";
        assert_eq!(settings(text, &[]).unwrap().num_nodes, 3);
        // A NUM_NODES from the environment that disagrees is an error naming both.
        let e = settings(text, &[("NUM_NODES", "2")]).unwrap_err();
        assert!(
            e.contains("NUM_NODES: expected 3, the number of nodes the cluster file"),
            "{e}"
        );
    }

    #[test]
    fn every_error_at_once_with_key_paths() {
        let bad = r#"
kind: Pod
NUM_NODEZ: 2
DNS_SERVER_IP: not-an-ip
nodes:
- role: master
  labels: {"Bad Key": x, node-role.kubernetes.io/worker: ""}
  taints: ["dedicated=db:Never", "nocolon"]
  extraMounts:
  - {hostPath: relative, containerPath: /data, readonly: true}
- extraPortMappings:
  - {containerPort: 0, hostPort: 8080, protocol: SCTP}
  - {containerPort: 30080, hostPort: 8080, listenAddress: localhost}
registries:
  mirrors:
    docker.io: ["127.0.0.1:5000"]
    "bad host": ["http://x"]
  insecure: ["*"]
  configs: {}
portMappings:
- {containerPort: 30081, hostPort: 9090}
- {containerPort: 30082, hostPort: 9090, listenAddress: 127.0.0.1}
"#;
        let e = settings(bad, &[]).unwrap_err();
        let lines: Vec<&str> = e.lines().collect();
        for want in [
            "DIR/cluster.yaml (DNS_SERVER_IP): expected an IPv4 address such as 10.0.0.10, got \"not-an-ip\"",
            "DIR/cluster.yaml (kind): expected Cluster, got \"Pod\"",
            "DIR/cluster.yaml (NUM_NODEZ): expected a setting name",
            "DIR/cluster.yaml (nodes[0].role): expected control-plane or worker, got \"master\"",
            "DIR/cluster.yaml (nodes[0].labels.Bad Key): expected a label key",
            "DIR/cluster.yaml (nodes[0].labels.node-role.kubernetes.io/worker): expected a label a node may set",
            "DIR/cluster.yaml (nodes[0].taints[0]): expected an effect of NoSchedule, PreferNoSchedule or NoExecute",
            "DIR/cluster.yaml (nodes[0].taints[1]): expected key[=value]:Effect",
            "DIR/cluster.yaml (nodes[0].extraMounts[0].readonly): expected one of the keys hostPath, containerPath, readOnly",
            "DIR/cluster.yaml (nodes[0].extraMounts[0].hostPath): expected an absolute path",
            "DIR/cluster.yaml (nodes[1].extraPortMappings[0].containerPort): expected a port number from 1 to 65535, got \"0\"",
            "DIR/cluster.yaml (nodes[1].extraPortMappings[0].protocol): expected TCP or UDP",
            "DIR/cluster.yaml (nodes[1].extraPortMappings[1].listenAddress): expected an IPv4 address",
            "DIR/cluster.yaml (registries.mirrors.docker.io[0]): expected a mirror endpoint http://HOST[:PORT]",
            "DIR/cluster.yaml (registries.mirrors.bad host): expected a registry host[:port]",
            "DIR/cluster.yaml (registries.insecure[0]): expected a registry HOST[:PORT], not *",
            "DIR/cluster.yaml (registries.configs): expected one of the keys mirrors, insecure",
            "DIR/cluster.yaml (portMappings[1].hostPort): expected a host port no other mapping listens on (TCP 9090 is taken)",
        ] {
            assert!(
                lines.iter().any(|l| l.starts_with(want)),
                "missing {want:?} in:\n{e}"
            );
        }
        assert_eq!(lines.len(), 18, "{e}");
        // ClusterFile::parse alone refuses it too, with the file's own problems.
        let f = ClusterFile::parse(Path::new("c.yaml"), bad).unwrap_err();
        assert!(f.to_string().contains("c.yaml (nodes[0].role)"), "{f}");
    }

    #[test]
    fn only_local_clusters_read_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "registries:\n  insecure: [\"r:5000\"]\n").unwrap();
        let global = GlobalArgs {
            config: Some(path),
            ..Default::default()
        };
        let env = |k: &str| (k == "PROJECT").then(|| "my-project".to_string());
        let e = load(Provider::Gce, &global, &BTreeMap::new(), &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("(registries): expected no registries for the gce provider"),
            "{e}"
        );
    }
}
