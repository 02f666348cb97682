//! What a node registers with and pulls through: labels (kubelet's `--node-labels`), taints
//! (`--register-with-taints`, written as `kubectl taint` writes them) and registry mirrors
//! (`--registry-mirror`). Each type is parsed here only, so the cluster file's checks and the
//! agent's flags accept and refuse the same values with the same words.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A bad label, taint or mirror: the text and what would be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidNodeValue {
    pub text: String,
    pub expected: String,
}

impl fmt::Display for InvalidNodeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: expected {}", self.text, self.expected)
    }
}

impl std::error::Error for InvalidNodeValue {}

fn invalid(text: &str, expected: impl Into<String>) -> InvalidNodeValue {
    InvalidNodeValue {
        text: text.to_string(),
        expected: expected.into(),
    }
}

/// Kubernetes' qualified name (label and taint keys): `[prefix/]name`, the prefix a DNS
/// subdomain (at most 253 characters), the name at most 63 alphanumerics, `-`, `_`, `.`,
/// beginning and ending alphanumeric. Returns what is wrong.
pub fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if p.is_empty() || p.len() > 253 || !p.split('.').all(label_ok) {
            return Err(format!(
                "a prefix that is a DNS subdomain (lowercase letters, digits, '-', '.'), not {p:?}"
            ));
        }
    }
    check_label_value(name)?;
    if name.is_empty() {
        return Err("a name after the prefix (at most 63 characters)".into());
    }
    Ok(())
}

/// A label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`, beginning and ending
/// alphanumeric.
pub fn check_label_value(v: &str) -> Result<(), String> {
    let edge = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    if v.len() > 63
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || !edge(v.chars().next())
        || !edge(v.chars().last())
    {
        return Err(format!(
            "at most 63 letters, digits, '-', '_' or '.', beginning and ending with a letter or \
             digit (not {v:?})"
        ));
    }
    Ok(())
}

/// One node label, `key=value` (kubelet's `--node-labels` entries).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeLabel {
    pub key: String,
    pub value: String,
}

impl NodeLabel {
    pub fn new(key: &str, value: &str) -> Result<NodeLabel, InvalidNodeValue> {
        let text = format!("{key}={value}");
        check_qualified_name(key).map_err(|e| invalid(&text, format!("a label key: {e}")))?;
        check_label_value(value).map_err(|e| invalid(&text, format!("a label value: {e}")))?;
        Ok(NodeLabel {
            key: key.into(),
            value: value.into(),
        })
    }

    /// Whether NodeRestriction lets a node set this label on its own Node (kubelet refuses
    /// other `kubernetes.io`/`k8s.io` labels in `--node-labels` at start-up for that reason).
    pub fn node_may_set(&self) -> bool {
        let ns = self.key.split_once('/').map(|(n, _)| n).unwrap_or("");
        let under = |d: &str| ns == d || ns.ends_with(&format!(".{d}"));
        if under("node-restriction.kubernetes.io") {
            return false;
        }
        if !(under("kubernetes.io") || under("k8s.io")) {
            return true;
        }
        const KUBELET_LABELS: [&str; 9] = [
            "kubernetes.io/hostname",
            "kubernetes.io/instance-type",
            "kubernetes.io/os",
            "kubernetes.io/arch",
            "beta.kubernetes.io/instance-type",
            "beta.kubernetes.io/os",
            "beta.kubernetes.io/arch",
            "failure-domain.beta.kubernetes.io/zone",
            "failure-domain.beta.kubernetes.io/region",
        ];
        KUBELET_LABELS.contains(&self.key.as_str())
            || self.key.starts_with("topology.kubernetes.io/")
            || under("kubelet.kubernetes.io")
            || under("node.kubernetes.io")
    }
}

impl FromStr for NodeLabel {
    type Err = InvalidNodeValue;
    fn from_str(s: &str) -> Result<NodeLabel, InvalidNodeValue> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| invalid(s, "a label key=value"))?;
        NodeLabel::new(k, v)
    }
}

impl fmt::Display for NodeLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// A taint's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TaintEffect {
    pub const ALL: [TaintEffect; 3] = [
        TaintEffect::NoSchedule,
        TaintEffect::PreferNoSchedule,
        TaintEffect::NoExecute,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
    pub fn parse(s: &str) -> Option<TaintEffect> {
        TaintEffect::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// A node taint, `key[=value]:Effect` as `kubectl taint` and kubelet's
/// `--register-with-taints` write it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: TaintEffect,
}

/// What a taint should look like, for error messages.
pub const TAINT_FORMAT: &str =
    "key[=value]:Effect with Effect one of NoSchedule, PreferNoSchedule, NoExecute";

impl Taint {
    pub fn new(key: &str, value: Option<&str>, effect: &str) -> Result<Taint, InvalidNodeValue> {
        let text = match value {
            Some(v) => format!("{key}={v}:{effect}"),
            None => format!("{key}:{effect}"),
        };
        check_qualified_name(key).map_err(|e| invalid(&text, format!("a taint key: {e}")))?;
        if let Some(v) = value {
            check_label_value(v).map_err(|e| invalid(&text, format!("a taint value: {e}")))?;
        }
        let effect = TaintEffect::parse(effect).ok_or_else(|| {
            invalid(
                &text,
                format!("an effect of NoSchedule, PreferNoSchedule or NoExecute (not {effect:?})"),
            )
        })?;
        Ok(Taint {
            key: key.into(),
            value: value.map(str::to_string),
            effect,
        })
    }
}

impl FromStr for Taint {
    type Err = InvalidNodeValue;
    fn from_str(s: &str) -> Result<Taint, InvalidNodeValue> {
        let (kv, effect) = s.rsplit_once(':').ok_or_else(|| invalid(s, TAINT_FORMAT))?;
        match kv.split_once('=') {
            Some((k, v)) => Taint::new(k, Some(v), effect),
            None => Taint::new(kv, None, effect),
        }
    }
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={}:{}", self.key, v, self.effect.as_str()),
            None => write!(f, "{}:{}", self.key, self.effect.as_str()),
        }
    }
}

/// A registry as images name it: `host[:port]`, or `*` (every registry without a mirror of
/// its own, as k3s' registries.yaml has it). Returns what is wrong.
pub fn check_registry_host(r: &str) -> Result<(), String> {
    if r == "*" {
        return Ok(());
    }
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(
            "a registry host[:port] such as docker.io or 127.0.0.1:5000 (or * for every \
             registry)"
                .to_string(),
        )
    }
}

/// One mirror endpoint for a registry: `REGISTRY=http[s]://HOST[:PORT]` (`--registry-mirror`,
/// repeatable; a registry's endpoints are tried in the order given, then the registry itself
/// unless it is listed in `--registry-mirror-exclusive`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RegistryMirror {
    /// The registry images name (`docker.io`), or `*`.
    pub registry: String,
    /// `http://host:port` or `https://host[:port]`, no path.
    pub endpoint: String,
}

impl RegistryMirror {
    pub fn new(registry: &str, endpoint: &str) -> Result<RegistryMirror, InvalidNodeValue> {
        let text = format!("{registry}={endpoint}");
        check_registry_host(registry).map_err(|e| invalid(&text, e))?;
        check_mirror_endpoint(endpoint).map_err(|e| invalid(&text, e))?;
        Ok(RegistryMirror {
            registry: registry.into(),
            endpoint: endpoint.trim_end_matches('/').into(),
        })
    }

    /// `(plain HTTP, host[:port])` of the endpoint.
    pub fn host(&self) -> (bool, &str) {
        match self.endpoint.strip_prefix("http://") {
            Some(h) => (true, h),
            None => (
                false,
                self.endpoint
                    .strip_prefix("https://")
                    .unwrap_or(&self.endpoint),
            ),
        }
    }
}

/// A mirror endpoint: `http://host[:port]` or `https://host[:port]`, without a path.
pub fn check_mirror_endpoint(e: &str) -> Result<(), String> {
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"));
    let host = rest.map(|r| r.trim_end_matches('/'));
    match host {
        Some(h) if h != "*" && !h.contains('/') && check_registry_host(h).is_ok() => Ok(()),
        _ => Err(
            "a mirror endpoint http://HOST[:PORT] or https://HOST[:PORT] without a path"
                .to_string(),
        ),
    }
}

impl FromStr for RegistryMirror {
    type Err = InvalidNodeValue;
    fn from_str(s: &str) -> Result<RegistryMirror, InvalidNodeValue> {
        let (r, e) = s
            .split_once('=')
            .ok_or_else(|| invalid(s, "REGISTRY=http[s]://HOST[:PORT]"))?;
        RegistryMirror::new(r, e)
    }
}

impl fmt::Display for RegistryMirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.registry, self.endpoint)
    }
}

/// kind's `extraMounts` on a node that shares the host's filesystem (a local cluster's):
/// hostPath volumes at or under `node_path` are served from `host_path` (read-only mounts make
/// every container's mount of such a volume read-only). `--host-path-mount`, written
/// `HOST_PATH:NODE_PATH[:ro]` as `docker run -v`; neither path may hold a `:`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostPathMount {
    pub host_path: std::path::PathBuf,
    pub node_path: std::path::PathBuf,
    pub read_only: bool,
}

impl HostPathMount {
    pub fn new(
        host_path: &str,
        node_path: &str,
        read_only: bool,
    ) -> Result<HostPathMount, InvalidNodeValue> {
        let text = format!(
            "{host_path}:{node_path}{}",
            if read_only { ":ro" } else { "" }
        );
        let ok = |p: &str| p.starts_with('/') && !p.contains(':') && !p.contains('\0');
        if !ok(host_path) || !ok(node_path) || node_path == "/" {
            return Err(invalid(
                &text,
                "HOST_PATH:NODE_PATH[:ro], both absolute paths without ':' (NODE_PATH not /)",
            ));
        }
        Ok(HostPathMount {
            host_path: host_path.into(),
            node_path: node_path.into(),
            read_only,
        })
    }

    /// Where a hostPath volume's `path` is on the host under the first of `mounts` whose node
    /// path holds it (the longest node path wins), with whether that mount is read-only.
    pub fn resolve(
        mounts: &[HostPathMount],
        path: &std::path::Path,
    ) -> Option<(std::path::PathBuf, bool)> {
        mounts
            .iter()
            .filter_map(|m| Some((m, path.strip_prefix(&m.node_path).ok()?)))
            .max_by_key(|(m, _)| m.node_path.components().count())
            .map(|(m, rest)| {
                let host = if rest.as_os_str().is_empty() {
                    m.host_path.clone()
                } else {
                    m.host_path.join(rest)
                };
                (host, m.read_only)
            })
    }
}

impl FromStr for HostPathMount {
    type Err = InvalidNodeValue;
    fn from_str(s: &str) -> Result<HostPathMount, InvalidNodeValue> {
        let (rest, ro) = match s.strip_suffix(":ro") {
            Some(r) => (r, true),
            None => (s, false),
        };
        let (h, n) = rest.split_once(':').ok_or_else(|| {
            invalid(
                s,
                "HOST_PATH:NODE_PATH[:ro], both absolute paths without ':'",
            )
        })?;
        HostPathMount::new(h, n, ro)
    }
}

impl fmt::Display for HostPathMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.host_path.display(),
            self.node_path.display()
        )?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_as_kubectl_writes_them() {
        let t: Taint = "dedicated=gpu:NoSchedule".parse().unwrap();
        assert_eq!(t.to_string(), "dedicated=gpu:NoSchedule");
        let t: Taint = "example.com/x:NoExecute".parse().unwrap();
        assert_eq!((t.value, t.effect), (None, TaintEffect::NoExecute));
        let e = "a=b:Never".parse::<Taint>().unwrap_err().to_string();
        assert!(
            e.contains("NoSchedule, PreferNoSchedule or NoExecute"),
            "{e}"
        );
        assert!("a=b".parse::<Taint>().is_err());
        assert!("-a=b:NoSchedule".parse::<Taint>().is_err());
    }

    #[test]
    fn labels_and_what_a_node_may_set() {
        let l: NodeLabel = "tier=db".parse().unwrap();
        assert!(l.node_may_set());
        assert!("Tier/x=y".parse::<NodeLabel>().is_err());
        assert!("a=b c".parse::<NodeLabel>().is_err());
        assert!("a=".parse::<NodeLabel>().is_ok());
        let role: NodeLabel = "node-role.kubernetes.io/worker=".parse().unwrap();
        assert!(!role.node_may_set());
        let zone: NodeLabel = "topology.kubernetes.io/zone=a".parse().unwrap();
        assert!(zone.node_may_set());
        let own: NodeLabel = "node.kubernetes.io/pool=x".parse().unwrap();
        assert!(own.node_may_set());
    }

    #[test]
    fn host_path_mounts() {
        let m: HostPathMount = "/srv/data:/data:ro".parse().unwrap();
        assert_eq!(m.to_string(), "/srv/data:/data:ro");
        let n: HostPathMount = "/srv/x:/data/x".parse().unwrap();
        let all = [m, n];
        let r = |p: &str| HostPathMount::resolve(&all, std::path::Path::new(p));
        assert_eq!(r("/data"), Some(("/srv/data".into(), true)));
        assert_eq!(r("/data/a/b"), Some(("/srv/data/a/b".into(), true)));
        assert_eq!(r("/data/x/y"), Some(("/srv/x/y".into(), false)));
        assert_eq!(r("/database"), None);
        assert_eq!(r("/etc"), None);
        assert!("rel:/data".parse::<HostPathMount>().is_err());
        assert!("/a:/".parse::<HostPathMount>().is_err());
    }

    #[test]
    fn mirrors() {
        let m: RegistryMirror = "docker.io=http://127.0.0.1:5000/".parse().unwrap();
        assert_eq!(m.to_string(), "docker.io=http://127.0.0.1:5000");
        assert_eq!(m.host(), (true, "127.0.0.1:5000"));
        assert!("*=https://mirror.gcr.io".parse::<RegistryMirror>().is_ok());
        assert!("docker.io=127.0.0.1:5000"
            .parse::<RegistryMirror>()
            .is_err());
        assert!("docker.io=http://h/v2/x".parse::<RegistryMirror>().is_err());
        assert!("dock er=http://h".parse::<RegistryMirror>().is_err());
    }
}
