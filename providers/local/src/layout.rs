//! Where a local cluster lives on this machine. `up` chooses every name and address once and
//! records them in `<state>/cluster.json`; `down` removes exactly what the record names (and,
//! when the record is gone, what the naming rules below point at).

use ipnet::{Ipv4Net, Ipv6Net};
use rktup_config::ClusterLayout;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// One node: a network namespace with a veth on the cluster bridge, and its agent's state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeRecord {
    pub name: String,
    pub netns: String,
    pub host_veth: String,
    pub ip: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
    /// A dual-stack cluster's node: its IPv6 address on the bridge and its IPv6 pod CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr6: Option<Ipv6Net>,
}

/// What `up` made, with the addresses it chose.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterRecord {
    pub name: String,
    /// Host bridge joining the nodes' namespaces; its address is where agents reach the API.
    pub bridge: String,
    pub node_network: Ipv4Net,
    pub api_host: Ipv4Addr,
    pub api_port: u16,
    pub cluster_ip_range: Ipv4Net,
    /// The IPv6 pod range of a dual-stack cluster (CLUSTER_IP_RANGE's second part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ip_range_v6: Option<Ipv6Net>,
    pub nodes: Vec<NodeRecord>,
    /// The kubeconfig file holding the `rktup-<name>` context.
    pub kubeconfig: Option<PathBuf>,
    /// Registries the agents reach over plain HTTP (`--insecure-registry`), kept so agents
    /// restarted by a later `up` get them too.
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// The cluster file's nodes (labels, taints, extraMounts), registries and port mappings as
    /// the first `up` resolved them: every later start of an agent or of the port mappings (a
    /// later `up` without `--config`, the supervisors) uses these. None in records written
    /// before it was kept (the next `up` records its own).
    #[serde(default)]
    pub layout: Option<ClusterLayout>,
    /// The settings the control plane and every agent must agree on, as the first `up`
    /// resolved them (flag > env > cluster file > default); later starts use these.
    #[serde(default)]
    pub settings: Option<RecordedSettings>,
}

/// What a cluster keeps from the `up` that made it, so that agents started later (by a later
/// `up` given other settings, or none) agree with the control plane and the other nodes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordedSettings {
    pub service_cluster_ip_range: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_cluster_ip_range_v6: Option<Ipv6Net>,
    pub dns_server_ip: Ipv4Addr,
    pub dns_domain: String,
    pub network: rktup_config::NetworkProvider,
    pub stage1: rktup_config::Stage1,
}

impl RecordedSettings {
    /// `--service-cluster-ip-range`: the IPv4 range, and the IPv6 one after a comma.
    pub fn service_ranges(&self) -> String {
        dual(
            self.service_cluster_ip_range,
            self.service_cluster_ip_range_v6,
        )
    }

    pub fn of(s: &rktup_config::ClusterSettings) -> RecordedSettings {
        RecordedSettings {
            service_cluster_ip_range: s.service_cluster_ip_range,
            service_cluster_ip_range_v6: s.service_cluster_ip_range_v6,
            dns_server_ip: s.dns_server_ip,
            dns_domain: s.dns_domain.clone(),
            network: s.network,
            stage1: s.stage1,
        }
    }

    /// `(setting, kept, given)` for each setting `s` asks for that differs from the kept one.
    pub fn differences(
        &self,
        s: &rktup_config::ClusterSettings,
    ) -> Vec<(&'static str, String, String)> {
        let given = RecordedSettings::of(s);
        let mut d = vec![];
        let mut cmp = |name: &'static str, kept: String, now: String| {
            if kept != now {
                d.push((name, kept, now));
            }
        };
        cmp(
            "SERVICE_CLUSTER_IP_RANGE",
            self.service_ranges(),
            given.service_ranges(),
        );
        cmp(
            "DNS_SERVER_IP",
            self.dns_server_ip.to_string(),
            given.dns_server_ip.to_string(),
        );
        cmp("DNS_DOMAIN", self.dns_domain.clone(), given.dns_domain);
        cmp(
            "NETWORK_PROVIDER",
            self.network.to_string(),
            given.network.to_string(),
        );
        cmp(
            "KUBE_RKT_STAGE1_IMAGE",
            self.stage1.to_string(),
            given.stage1.to_string(),
        );
        d
    }
}

impl ClusterRecord {
    /// The bridge's own address: the first host of the node network.
    pub fn gateway(&self) -> Ipv4Addr {
        nth_host(self.node_network, 1)
    }

    /// The IPv6 node network of a dual-stack cluster: a unique local /64 named by the cluster
    /// (RFC 4193's fd00::/8 with a 40-bit id from the name); the bridge is its first address,
    /// node `i` its `i + 1`-th, as in the IPv4 node network.
    pub fn node_network_v6(&self) -> Option<Ipv6Net> {
        self.cluster_ip_range_v6?;
        let d = Sha256::digest(format!("rktup-local/{}", self.name).as_bytes());
        let mut o = [0u8; 16];
        o[0] = 0xfd;
        o[1..6].copy_from_slice(&d[..5]);
        Ipv6Net::new(Ipv6Addr::from(o), 64).ok()
    }

    /// The bridge's IPv6 address (dual-stack).
    pub fn gateway6(&self) -> Option<Ipv6Addr> {
        self.node_network_v6().map(|n| nth_host6(n, 1))
    }

    /// The API server as node agents reach it from their namespaces.
    pub fn node_api_url(&self) -> String {
        format!("https://{}:{}", self.gateway(), self.api_port)
    }

    /// LoadBalancer Service addresses: the top quarter of the node network (a /26 of the /24),
    /// routed from this machine through the nodes, whose service proxies answer them (as
    /// cloud-provider-kind and k3s' ServiceLB give kind and k3d clusters host-reachable
    /// addresses). Node addresses count up from the bottom and never reach it.
    pub fn load_balancer_pool(&self) -> Ipv4Net {
        let prefix = (self.node_network.prefix_len() + 2).min(32);
        let size = 1u32 << (32 - u32::from(prefix));
        let base = u32::from(self.node_network.broadcast()) + 1 - size;
        Ipv4Net::new(Ipv4Addr::from(base), prefix).unwrap_or(self.node_network)
    }

    /// A dual-stack cluster's IPv6 LoadBalancer addresses: the top /112 of its IPv6 node network
    /// (node addresses count up from the bottom).
    pub fn load_balancer_pool_v6(&self) -> Option<Ipv6Net> {
        let net = self.node_network_v6()?;
        let top = u128::from(net.network()) | 0xffff_ffff_ffff_0000;
        Ipv6Net::new(Ipv6Addr::from(top), 112).ok()
    }

    /// `--load-balancer-ip-range`: the IPv4 pool, and the IPv6 one after a comma (dual-stack).
    pub fn load_balancer_ranges(&self) -> String {
        dual(self.load_balancer_pool(), self.load_balancer_pool_v6())
    }

    /// The API server as this machine's users reach it.
    pub fn api_url(&self) -> String {
        format!("https://{}:{}", self.api_host, self.api_port)
    }
}

/// The cluster file's keys whose values differ between `was` (the record's) and `now`, in the
/// file's spelling: `nodes` (how many), `nodes[1].role`, `nodes[1].labels`, `nodes[1].taints`,
/// `nodes[1].extraMounts`, `registries.mirrors.<registry>`, `…<registry>.exclusive`,
/// `registries.insecure`, and the port mappings to each node (`portMappings` for the first
/// node, as top-level mappings go there, else `nodes[i].extraPortMappings`).
pub fn layout_differences(was: &ClusterLayout, now: &ClusterLayout) -> Vec<String> {
    let mut keys = vec![];
    if was.nodes.len() != now.nodes.len() {
        keys.push("nodes".to_string());
    }
    for (i, (a, b)) in was.nodes.iter().zip(&now.nodes).enumerate() {
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let labels =
            |n: &rktup_config::NodeSpec| sorted(n.labels.iter().map(|l| l.to_string()).collect());
        let taints =
            |n: &rktup_config::NodeSpec| sorted(n.taints.iter().map(|t| t.to_string()).collect());
        if a.role != b.role {
            keys.push(format!("nodes[{i}].role"));
        }
        if labels(a) != labels(b) {
            keys.push(format!("nodes[{i}].labels"));
        }
        if taints(a) != taints(b) {
            keys.push(format!("nodes[{i}].taints"));
        }
        if a.extra_mounts != b.extra_mounts {
            keys.push(format!("nodes[{i}].extraMounts"));
        }
    }
    let (ra, rb) = (&was.registries, &now.registries);
    // A registry's endpoints in order (tried in that order); registries in any order.
    fn mirrors(r: &rktup_config::Registries) -> std::collections::BTreeMap<&str, Vec<&str>> {
        let mut m = std::collections::BTreeMap::<&str, Vec<&str>>::new();
        for x in &r.mirrors {
            m.entry(&x.registry).or_default().push(&x.endpoint);
        }
        m
    }
    let (ma, mb) = (mirrors(ra), mirrors(rb));
    for r in ma
        .keys()
        .chain(mb.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if ma.get(r) != mb.get(r) {
            keys.push(format!("registries.mirrors.{r}"));
        }
    }
    let mut registries: Vec<&String> = ra.exclusive.iter().chain(&rb.exclusive).collect();
    registries.sort();
    registries.dedup();
    for r in registries {
        if ra.exclusive.contains(r) != rb.exclusive.contains(r) {
            keys.push(format!("registries.mirrors.{r}.exclusive"));
        }
    }
    let set = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    if set(&ra.insecure) != set(&rb.insecure) {
        keys.push("registries.insecure".to_string());
    }
    let nodes = was
        .port_mappings
        .iter()
        .chain(&now.port_mappings)
        .map(|m| m.node)
        .max();
    for node in 0..nodes.map_or(0, |n| n + 1) {
        let to = |l: &ClusterLayout| {
            let mut v: Vec<_> = l
                .port_mappings
                .iter()
                .filter(|m| m.node == node)
                .map(|m| (m.protocol, m.listen_address, m.host_port, m.container_port))
                .collect();
            v.sort();
            v
        };
        if to(was) != to(now) {
            keys.push(match node {
                0 => "portMappings (or nodes[0].extraPortMappings)".to_string(),
                n => format!("nodes[{n}].extraPortMappings"),
            });
        }
    }
    keys
}

/// Paths inside the cluster's state directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }
    pub fn record(&self) -> PathBuf {
        self.root.join("cluster.json")
    }
    pub fn controlplane_dir(&self) -> PathBuf {
        self.root.join("controlplane")
    }
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.controlplane_dir().join("admin.kubeconfig")
    }
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.root.join("nodes").join(node)
    }
    pub fn node_root(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("root")
    }
    pub fn node_manifests(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("manifests")
    }
    pub fn node_kubeconfig(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("kubeconfig")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn log(&self, component: &str) -> PathBuf {
        self.logs_dir().join(format!("{component}.log"))
    }
    pub fn pidfile(&self, component: &str) -> PathBuf {
        self.root.join("run").join(format!("{component}.pid"))
    }

    pub fn load(&self) -> Option<ClusterRecord> {
        let text = std::fs::read_to_string(self.record()).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn save(&self, rec: &ClusterRecord) -> std::io::Result<()> {
        private_dir(&self.root)?;
        let text = serde_json::to_string_pretty(rec).map_err(std::io::Error::other)?;
        write_private(&self.record(), text.as_bytes())
    }

    /// Every directory `up` makes (the state dir, its subdirectories, each node's): all 0700.
    pub fn dirs(&self, nodes: &[NodeRecord]) -> Vec<PathBuf> {
        let mut d = vec![
            self.root.clone(),
            self.controlplane_dir(),
            self.logs_dir(),
            self.root.join("run"),
            self.root.join("nodes"),
        ];
        for n in nodes {
            d.extend([
                self.node_dir(&n.name),
                self.node_root(&n.name),
                self.node_manifests(&n.name),
            ]);
        }
        d
    }
}

/// Creates `dir` (and missing parents) with mode 0700 from the start and tightens an existing
/// one: a cluster's state holds keys, tokens and the API's store.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes `path` atomically, mode 0600 from creation on (a new temp file, then rename).
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    std::fs::rename(&tmp, path)
}

/// Short, stable id of a cluster name for kernel interface names (at most 15 bytes).
pub fn short_id(cluster: &str) -> String {
    let d = Sha256::digest(cluster.as_bytes());
    d.iter().take(3).map(|b| format!("{b:02x}")).collect()
}

/// The host bridge of cluster `name`.
pub fn bridge_name(cluster: &str) -> String {
    format!("rktup-{}", short_id(cluster))
}

/// The host end of node `index`'s veth (1-based).
pub fn host_veth_name(cluster: &str, index: usize) -> String {
    format!("rk{}n{index}", short_id(cluster))
}

/// The network namespace of node `index` (1-based); the prefix finds them all.
pub fn netns_name(cluster: &str, index: usize) -> String {
    format!("{}{index}", netns_prefix(cluster))
}

/// The name `up` gives this machine's own network namespace (images are pulled there).
pub fn host_netns_name(cluster: &str) -> String {
    format!("rktup-{cluster}-host")
}

pub fn netns_prefix(cluster: &str) -> String {
    format!("rktup-{cluster}-node-")
}

/// Host number `n` of a network (1 is the first usable address).
pub fn nth_host(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + n)
}

/// A flag value with one item per IP family: `v4`, or `v4,v6` on a dual-stack cluster (as
/// kubelet's `--node-ip` and kube-apiserver's `--service-cluster-ip-range` take them).
pub fn dual(v4: impl std::fmt::Display, v6: Option<impl std::fmt::Display>) -> String {
    match v6 {
        Some(v6) => format!("{v4},{v6}"),
        None => v4.to_string(),
    }
}

/// Host number `n` of an IPv6 network.
pub fn nth_host6(net: Ipv6Net, n: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(net.network()) + u128::from(n))
}

/// The `index`-th (0-based) /64 of a dual-stack cluster's IPv6 pod range.
pub fn pod_cidr6(range: Ipv6Net, index: u32) -> Option<Ipv6Net> {
    if range.prefix_len() > 64 {
        return None;
    }
    range.subnets(64).ok()?.nth(index as usize)
}

/// The `index`-th (0-based) /24 of the cluster's pod range, as kube-controller-manager hands
/// out node pod CIDRs.
pub fn pod_cidr(range: Ipv4Net, index: u32) -> Option<Ipv4Net> {
    if range.prefix_len() > 24 {
        return None;
    }
    range.subnets(24).ok()?.nth(index as usize)
}

/// Where pod ranges come from when CLUSTER_IP_RANGE is left at its default: this machine routes
/// to every local cluster's pods (the control plane calls webhooks and aggregated APIs in pods),
/// so two clusters must not share pod addresses.
pub const POD_RANGE_POOL: &str = "10.244.0.0/14";

/// The first range of the pool that holds `nodes` /24s (at least 16, so a cluster can grow) and
/// overlaps nothing in `taken`.
pub fn free_pod_range(taken: &[Ipv4Net], nodes: u32) -> Option<Ipv4Net> {
    let pool: Ipv4Net = POD_RANGE_POOL.parse().ok()?;
    let bits = nodes.max(16).next_power_of_two().trailing_zeros() as u8;
    let prefix = 24u8.checked_sub(bits)?.max(pool.prefix_len());
    pool.subnets(prefix).ok()?.find(|n| {
        !taken
            .iter()
            .any(|t| t.contains(&n.network()) || n.contains(&t.network()))
    })
}

/// Where node networks come from: one /24 per cluster out of 10.250.0.0/16.
pub const NODE_NETWORK_POOL: &str = "10.250.0.0/16";

/// The first /24 of the pool that overlaps nothing in `taken`.
pub fn free_node_network(taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    let pool: Ipv4Net = NODE_NETWORK_POOL.parse().ok()?;
    pool.subnets(24).ok()?.find(|n| {
        !taken
            .iter()
            .any(|t| t.contains(&n.network()) || n.contains(&t.network()))
    })
}

/// Whether `path` lies inside `dir`.
pub fn is_within(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_fit_the_kernel_limit() {
        for name in ["a", "a-very-long-cluster-name-that-goes-on-and-on"] {
            assert!(bridge_name(name).len() <= 15);
            assert!(host_veth_name(name, 999).len() <= 15);
        }
        assert_ne!(bridge_name("one"), bridge_name("two"));
    }

    #[test]
    fn load_balancer_pool_is_the_top_of_the_node_network_above_every_node() {
        let rec = ClusterRecord {
            name: "t".into(),
            bridge: "b".into(),
            node_network: "10.250.7.0/24".parse().unwrap(),
            api_host: "127.0.0.1".parse().unwrap(),
            api_port: 6443,
            cluster_ip_range: "10.244.0.0/16".parse().unwrap(),
            cluster_ip_range_v6: None,
            nodes: vec![],
            kubeconfig: None,
            insecure_registries: vec![],
            layout: None,
            settings: None,
        };
        assert_eq!(rec.load_balancer_pool().to_string(), "10.250.7.192/26");
        // The last node `up` allows (189 nodes: .2 to .190) stays below it.
        assert!(!rec
            .load_balancer_pool()
            .contains(&nth_host(rec.node_network, 190)));
    }

    fn file(yaml: &str) -> ClusterLayout {
        let map: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(yaml).unwrap();
        let (layout, problems) = rktup_config::cluster::parse_layout(&map);
        assert!(problems.is_empty(), "{problems:?}");
        layout
    }

    #[test]
    fn the_cluster_file_round_trips_through_the_record_and_changes_are_named() {
        let was = file(
            "nodes:\n- role: control-plane\n- labels: {tier: db, b: x}\n  taints: [\"d=db:NoSchedule\"]\n  extraMounts: [{hostPath: /srv, containerPath: /data}]\n  extraPortMappings: [{containerPort: 30080, hostPort: 8080}]\nregistries:\n  mirrors:\n    docker.io: [\"http://127.0.0.1:5000\"]\n    quay.io: {endpoint: [\"http://127.0.0.1:5001\"], exclusive: true}\n  insecure: [\"127.0.0.1:5000\"]\nportMappings: [{containerPort: 30443, hostPort: 8443}]\n",
        );
        let text = serde_json::to_string(&was).unwrap();
        let back: ClusterLayout = serde_json::from_str(&text).unwrap();
        assert_eq!(back, was);
        // The same file written in another order: no difference.
        let same = file(
            "nodes:\n- role: control-plane\n- labels: {b: x, tier: db}\n  taints: [\"d=db:NoSchedule\"]\n  extraMounts: [{hostPath: /srv, containerPath: /data}]\n  extraPortMappings: [{containerPort: 30080, hostPort: 8080}]\nportMappings: [{containerPort: 30443, hostPort: 8443}]\nregistries:\n  insecure: [\"127.0.0.1:5000\"]\n  mirrors:\n    quay.io: {endpoint: [\"http://127.0.0.1:5001\"], exclusive: true}\n    docker.io: [\"http://127.0.0.1:5000\"]\n",
        );
        assert_eq!(layout_differences(&was, &same), Vec::<String>::new());
        let changed = file(
            "nodes:\n- role: worker\n- labels: {tier: web, b: x}\n  taints: []\n  extraMounts: [{hostPath: /srv, containerPath: /data}]\n  extraPortMappings: [{containerPort: 30080, hostPort: 8081}]\nregistries:\n  mirrors:\n    docker.io: [\"http://127.0.0.1:5002\"]\n    quay.io: [\"http://127.0.0.1:5001\"]\nportMappings: [{containerPort: 30443, hostPort: 8443}]\n",
        );
        assert_eq!(
            layout_differences(&was, &changed),
            [
                "nodes[0].role",
                "nodes[1].labels",
                "nodes[1].taints",
                "registries.mirrors.docker.io",
                "registries.mirrors.quay.io.exclusive",
                "registries.insecure",
                "nodes[1].extraPortMappings",
            ]
        );
        let more = file("nodes: [{}, {}, {}]\n");
        assert_eq!(
            layout_differences(&ClusterLayout::default(), &more),
            ["nodes"]
        );
    }

    #[test]
    fn pod_cidrs_are_consecutive_slash_24s() {
        let r: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        assert_eq!(pod_cidr(r, 0).unwrap().to_string(), "10.244.0.0/24");
        assert_eq!(pod_cidr(r, 2).unwrap().to_string(), "10.244.2.0/24");
        assert!(pod_cidr("10.0.0.0/25".parse().unwrap(), 0).is_none());
        assert!(pod_cidr("10.0.0.0/24".parse().unwrap(), 1).is_none());
    }

    #[test]
    fn pod_ranges_are_sized_for_the_nodes_and_skip_what_is_taken() {
        let net = |s: &str| -> Ipv4Net { s.parse().unwrap() };
        assert_eq!(free_pod_range(&[], 1), Some(net("10.244.0.0/20")));
        assert_eq!(free_pod_range(&[], 50), Some(net("10.244.0.0/18")));
        assert_eq!(free_pod_range(&[], 189), Some(net("10.244.0.0/16")));
        // Another cluster's pod route (a /24 of its range) and a whole range are skipped.
        let taken = [net("10.244.1.0/24"), net("10.244.16.0/20")];
        assert_eq!(free_pod_range(&taken, 3), Some(net("10.244.32.0/20")));
        assert_eq!(free_pod_range(&[net("10.244.0.0/14")], 1), None);
    }

    #[test]
    fn node_networks_skip_what_is_taken() {
        let first = free_node_network(&[]).unwrap();
        assert_eq!(first.to_string(), "10.250.0.0/24");
        let second = free_node_network(&[first, "10.250.1.0/24".parse().unwrap()]).unwrap();
        assert_eq!(second.to_string(), "10.250.2.0/24");
        // A wide route over the whole pool leaves nothing.
        assert!(free_node_network(&["10.0.0.0/8".parse().unwrap()]).is_none());
        assert_eq!(nth_host(first, 1).to_string(), "10.250.0.1");
    }
}
