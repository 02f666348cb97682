//! The typed settings model every other room reads, built only from checked values.

use crate::cluster::ClusterLayout;
use crate::kind::{parse_bool, parse_version};
use crate::provider::Provider;
use crate::resolve::{RawValue, Source};
use crate::spec::SettingSpec;
use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// One bad input: which input, what it held and what would be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSetting {
    pub input: String,
    pub value: String,
    pub expected: String,
}

impl fmt::Display for InvalidSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, got {:?}",
            self.input, self.expected, self.value
        )
    }
}

/// Every bad input found; nothing is acted on when this is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSettings(pub Vec<InvalidSetting>);

impl fmt::Display for InvalidSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidSettings {}

/// One row of `rktup config`.
#[derive(Debug, Clone, Serialize)]
pub struct SettingRow {
    pub name: &'static str,
    pub value: String,
    pub source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The node-wide stage1 and the pod network: the node contract's types (its parsers are the
/// only ones of these names).
pub use rktup_node_contract::{NetworkMode as NetworkProvider, Stage1};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainedNetwork {
    Bridge,
    Flannel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeAgent {
    /// rktup's own agent, `/opt/bin/rktup agent`.
    Embedded,
    /// The 2016 recipe: upstream kubelet + rkt + `rkt api-service`.
    Kubelet,
}

/// What a cloud machine's user-data is (KUBE_NODE_BOOT_FORMAT): Flatcar reads both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootFormat {
    /// A `#cloud-config` document for coreos-cloudinit (kube-up's CoreOS recipe).
    CloudConfig,
    /// An Ignition spec 3 JSON config, applied once in the initramfs on first boot.
    Ignition,
}

#[derive(Debug, Clone, Serialize)]
pub struct KubeVersion {
    pub tag: String,
    pub major: u32,
    pub minor: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct GceSettings {
    pub project: String,
    pub zone: String,
    pub region: String,
    pub network: String,
    pub master_project: String,
    pub master_image: String,
    pub node_project: String,
    pub node_image: String,
    pub master_size: String,
    pub node_size: String,
    pub master_disk_size: String,
    pub master_disk_type: String,
    pub node_disk_size: String,
    pub node_disk_type: String,
    pub preemptible_node: bool,
    pub node_scopes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AwsSettings {
    pub zone: String,
    pub region: String,
    pub master_size: String,
    pub node_size: String,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    pub vpc_cidr: Ipv4Net,
    pub subnet_cidr: Ipv4Net,
    pub ssh_cidr: Ipv4Net,
    pub http_api_cidr: Ipv4Net,
    pub ssh_key: PathBuf,
    pub master_image: Option<String>,
    pub node_image: Option<String>,
    pub master_root_disk_size: u32,
    pub master_root_disk_type: String,
    pub node_root_disk_size: u32,
    pub node_root_disk_type: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LocalSettings {
    pub rkt_path: Option<PathBuf>,
    pub api_host: Ipv4Addr,
    pub api_port: u16,
    /// API_PORT was not set: `local up` may take the next free port so clusters sit side by side.
    pub api_port_is_default: bool,
    /// CLUSTER_IP_RANGE was not set: `local up` gives each cluster a pod range of its own, since
    /// this machine routes to every cluster's pods.
    pub cluster_ip_range_is_default: bool,
    pub net_plugin_dir: Option<PathBuf>,
    pub hostname_override: Option<String>,
}

/// Every resolved setting, typed.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSettings {
    pub provider: Provider,
    pub name: String,
    pub num_nodes: u32,
    pub kube_version: KubeVersion,
    pub master_os: String,
    pub node_os: String,
    pub rkt_version: String,
    pub stage1: Stage1,
    pub network: NetworkProvider,
    pub contained_network: ContainedNetwork,
    pub cluster_ip_range: Ipv4Net,
    /// The IPv6 pod range of a dual-stack (local) cluster: CLUSTER_IP_RANGE's second part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_ip_range_v6: Option<Ipv6Net>,
    pub service_cluster_ip_range: Ipv4Net,
    /// The IPv6 service range of a dual-stack cluster: SERVICE_CLUSTER_IP_RANGE's second part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_cluster_ip_range_v6: Option<Ipv6Net>,
    pub master_ip_range: Ipv4Net,
    pub dns_server_ip: Ipv4Addr,
    pub dns_domain: String,
    pub log_level: u8,
    pub allow_privileged: bool,
    pub node_agent: NodeAgent,
    /// The user-data format of cloud machines (local clusters: cloud-config, unused).
    pub boot_format: BootFormat,
    pub rkt_api_endpoint: String,
    pub binary_url: Option<String>,
    pub binary_sha256: Option<String>,
    /// The rktup file cloud `up` uploads for the nodes (RKTUP_NODE_BINARY); None: the running
    /// binary.
    pub node_binary: Option<PathBuf>,
    /// This cluster's state directory.
    pub state_dir: PathBuf,
    pub gce: Option<GceSettings>,
    pub aws: Option<AwsSettings>,
    pub local: Option<LocalSettings>,
    /// The cluster file's nodes, registries and port mappings (local clusters only).
    pub layout: ClusterLayout,
    /// Every setting as resolved, for `rktup config`.
    #[serde(skip)]
    pub rows: Vec<SettingRow>,
}

/// Checked values by key, with their sources for cross-checks' error messages.
pub(crate) struct Checked {
    values: BTreeMap<&'static str, (String, Source)>,
}

impl Checked {
    fn get(&self, key: &str) -> &str {
        self.values.get(key).map(|(v, _)| v.as_str()).unwrap_or("")
    }
    fn input(&self, key: &str) -> String {
        self.values
            .get(key)
            .map(|(_, s)| s.input_name(key))
            .unwrap_or_else(|| key.to_string())
    }
    fn opt(&self, key: &str) -> Option<String> {
        Some(self.get(key).to_string()).filter(|v| !v.is_empty())
    }
    fn num<T: std::str::FromStr + Default>(&self, key: &str) -> T {
        // Values were checked by their kind already, so this parse cannot fail.
        self.get(key).parse().unwrap_or_default()
    }
    /// The (first) IPv4 CIDR of `key`.
    fn net(&self, key: &str) -> Ipv4Net {
        self.get(key)
            .split(',')
            .next()
            .unwrap_or("")
            .trim()
            .parse()
            .unwrap_or_default()
    }
    /// The IPv6 CIDR after the comma of a dual-stack range.
    fn net6(&self, key: &str) -> Option<Ipv6Net> {
        self.get(key).split(',').nth(1)?.trim().parse().ok()
    }
    fn is_default(&self, key: &str) -> bool {
        self.values
            .get(key)
            .is_none_or(|(_, s)| matches!(s, Source::Default))
    }
    fn flag(&self, key: &str) -> bool {
        parse_bool(self.get(key)).unwrap_or(false)
    }
}

/// Values that are individually valid but never will be, whatever else is set.
fn refuse_known_bad(spec: &SettingSpec, value: &str) -> Option<String> {
    match (spec.key, value) {
        ("KUBE_CONTAINER_RUNTIME", v) if v.eq_ignore_ascii_case("docker") => Some(
            "rkt: rktup's nodes run pods with their embedded rkt runtime and have no Docker \
             engine (and kubelet dropped dockershim in v1.24)"
                .into(),
        ),
        ("KUBE_CONTAINER_RUNTIME", v)
            if v.eq_ignore_ascii_case("containerd") || v.eq_ignore_ascii_case("remote") =>
        {
            Some("rkt: rktup's nodes run pods with their embedded rkt runtime".into())
        }
        (
            "KUBE_MASTER_OS_DISTRIBUTION" | "KUBE_NODE_OS_DISTRIBUTION",
            "gci" | "cos" | "debian" | "ubuntu" | "trusty" | "wheezy" | "jessie",
        ) => {
            Some("coreos or flatcar: rktup renders Container Linux cloud-config, which only CoreOS's successor Flatcar boots".into())
        }
        ("KUBE_GCE_MASTER_PROJECT" | "KUBE_GCE_NODE_PROJECT", "coreos-cloud") => Some(
            "kinvolk-public (Flatcar's images): the coreos-cloud project no longer exists, \
             CoreOS Container Linux reached its end of life in 2020"
                .into(),
        ),
        _ => None,
    }
}

/// The cluster file's layout and the problems found reading it (reported with the settings').
#[derive(Debug, Clone, Default)]
pub(crate) struct FileParts {
    pub layout: ClusterLayout,
    pub problems: Vec<InvalidSetting>,
    /// How the file is named in messages: `<path>`.
    pub path: Option<PathBuf>,
}

pub(crate) fn build(
    provider: Provider,
    raw: Vec<(&'static SettingSpec, RawValue)>,
    state_root: PathBuf,
    file: FileParts,
) -> Result<ClusterSettings, InvalidSettings> {
    let mut errors = Vec::new();
    let mut values = BTreeMap::new();
    let mut rows = Vec::new();
    for (spec, rv) in raw {
        let checked = match refuse_known_bad(spec, rv.value.trim()) {
            Some(expected) => Err(expected),
            None => spec.kind.check(&rv.value),
        };
        match checked {
            Ok(v) => {
                let note = match (spec.key, v.as_str()) {
                    ("KUBE_MASTER_OS_DISTRIBUTION" | "KUBE_NODE_OS_DISTRIBUTION", "coreos") => {
                        spec.note.map(str::to_string)
                    }
                    ("KUBE_MASTER_OS_DISTRIBUTION" | "KUBE_NODE_OS_DISTRIBUTION", _) => None,
                    _ if rv.source == Source::Default => spec.note.map(str::to_string),
                    ("KUBE_RKT_STAGE1_IMAGE", v) if v != rv.value.trim() => {
                        Some(format!("normalised from {}", rv.value.trim()))
                    }
                    _ => None,
                };
                rows.push(SettingRow {
                    name: spec.key,
                    value: v.clone(),
                    source: rv.source.clone(),
                    note,
                });
                values.insert(spec.key, (v, rv.source));
            }
            Err(expected) => errors.push(InvalidSetting {
                input: rv.source.input_name(spec.key),
                value: rv.value,
                expected,
            }),
        }
    }
    if !errors.is_empty() {
        // One variable feeding two settings (KUBE_OS_DISTRIBUTION) is one mistake, said once.
        errors.dedup();
        // The file's own problems too: everything wrong is said at once.
        errors.extend(file.problems);
        return Err(InvalidSettings(errors));
    }
    let c = Checked { values };
    cross_check(provider, &c, &mut errors);
    layout_check(provider, &c, &file, &mut errors);
    errors.extend(file.problems);
    if !errors.is_empty() {
        return Err(InvalidSettings(errors));
    }
    let layout = file.layout;

    let version = parse_version(c.get("KUBE_VERSION")).unwrap_or_default();
    let name = c.get("INSTANCE_PREFIX").to_string();
    let gce = (provider == Provider::Gce).then(|| {
        let zone = c.get("KUBE_GCE_ZONE").to_string();
        GceSettings {
            project: c.get("PROJECT").to_string(),
            region: zone
                .rsplit_once('-')
                .map(|(r, _)| r.to_string())
                .unwrap_or_default(),
            zone,
            network: c.get("KUBE_GCE_NETWORK").to_string(),
            master_project: c.get("KUBE_GCE_MASTER_PROJECT").to_string(),
            master_image: c.get("KUBE_GCE_MASTER_IMAGE").to_string(),
            node_project: c.get("KUBE_GCE_NODE_PROJECT").to_string(),
            node_image: c.get("KUBE_GCE_NODE_IMAGE").to_string(),
            master_size: c.get("MASTER_SIZE").to_string(),
            node_size: c.get("NODE_SIZE").to_string(),
            master_disk_size: c.get("MASTER_DISK_SIZE").to_string(),
            master_disk_type: c.get("MASTER_DISK_TYPE").to_string(),
            node_disk_size: c.get("NODE_DISK_SIZE").to_string(),
            node_disk_type: c.get("NODE_DISK_TYPE").to_string(),
            preemptible_node: c.flag("PREEMPTIBLE_NODE"),
            node_scopes: c
                .get("NODE_SCOPES")
                .split(',')
                .map(str::to_string)
                .collect(),
        }
    });
    let aws = (provider == Provider::Aws).then(|| {
        let zone = c.get("KUBE_AWS_ZONE").to_string();
        AwsSettings {
            region: zone[..zone.len().saturating_sub(1)].to_string(),
            zone,
            master_size: c.get("MASTER_SIZE").to_string(),
            node_size: c.get("NODE_SIZE").to_string(),
            vpc_id: c.opt("VPC_ID"),
            subnet_id: c.opt("SUBNET_ID"),
            vpc_cidr: c.net("VPC_CIDR"),
            subnet_cidr: c.net("SUBNET_CIDR"),
            ssh_cidr: c.net("SSH_CIDR"),
            http_api_cidr: c.net("HTTP_API_CIDR"),
            ssh_key: expand_home(c.get("AWS_SSH_KEY")),
            master_image: c.opt("KUBE_MASTER_IMAGE"),
            node_image: c.opt("KUBE_NODE_IMAGE"),
            master_root_disk_size: c.num("MASTER_ROOT_DISK_SIZE"),
            master_root_disk_type: c.get("MASTER_ROOT_DISK_TYPE").to_string(),
            node_root_disk_size: c.num("NODE_ROOT_DISK_SIZE"),
            node_root_disk_type: c.get("NODE_ROOT_DISK_TYPE").to_string(),
        }
    });
    let local = (provider == Provider::Local).then(|| LocalSettings {
        rkt_path: c.opt("RKT_PATH").map(PathBuf::from),
        api_host: c.get("API_HOST").parse().unwrap_or(Ipv4Addr::LOCALHOST),
        api_port: c.num("API_PORT"),
        api_port_is_default: c.is_default("API_PORT"),
        cluster_ip_range_is_default: c.is_default("CLUSTER_IP_RANGE"),
        net_plugin_dir: c.opt("NET_PLUGIN_DIR").map(PathBuf::from),
        hostname_override: c.opt("HOSTNAME_OVERRIDE"),
    });
    let state_root = c
        .opt("RKTUP_STATE_DIR")
        .map(|d| expand_home(&d))
        .unwrap_or(state_root);
    Ok(ClusterSettings {
        provider,
        state_dir: state_root.join(format!("{provider}-{name}")),
        name,
        num_nodes: c.num("NUM_NODES"),
        kube_version: KubeVersion {
            tag: c.get("KUBE_VERSION").to_string(),
            major: version.0,
            minor: version.1,
        },
        master_os: c.get("KUBE_MASTER_OS_DISTRIBUTION").to_string(),
        node_os: c.get("KUBE_NODE_OS_DISTRIBUTION").to_string(),
        rkt_version: c.get("KUBE_RKT_VERSION").to_string(),
        stage1: Stage1::parse(c.get("KUBE_RKT_STAGE1_IMAGE")).unwrap_or_default(),
        network: NetworkProvider::parse(c.get("NETWORK_PROVIDER")).unwrap_or_default(),
        contained_network: match c.get("RKT_CONTAINED_NETWORK") {
            "flannel" => ContainedNetwork::Flannel,
            _ => ContainedNetwork::Bridge,
        },
        cluster_ip_range: c.net("CLUSTER_IP_RANGE"),
        cluster_ip_range_v6: c.net6("CLUSTER_IP_RANGE"),
        service_cluster_ip_range: c.net("SERVICE_CLUSTER_IP_RANGE"),
        service_cluster_ip_range_v6: c.net6("SERVICE_CLUSTER_IP_RANGE"),
        master_ip_range: c.net("MASTER_IP_RANGE"),
        dns_server_ip: c
            .get("DNS_SERVER_IP")
            .parse()
            .unwrap_or(Ipv4Addr::UNSPECIFIED),
        dns_domain: c.get("DNS_DOMAIN").to_string(),
        log_level: c.num("LOG_LEVEL"),
        allow_privileged: c.flag("ALLOW_PRIVILEGED"),
        node_agent: match c.get("KUBE_NODE_AGENT") {
            "kubelet" => NodeAgent::Kubelet,
            _ => NodeAgent::Embedded,
        },
        boot_format: match c.get("KUBE_NODE_BOOT_FORMAT") {
            "ignition" => BootFormat::Ignition,
            _ => BootFormat::CloudConfig,
        },
        rkt_api_endpoint: c.get("RKT_API_ENDPOINT").to_string(),
        binary_url: c.opt("RKTUP_BINARY_URL"),
        binary_sha256: c.opt("RKTUP_BINARY_SHA256"),
        node_binary: c.opt("RKTUP_NODE_BINARY").map(PathBuf::from),
        gce,
        aws,
        local,
        layout,
        rows,
    })
}

/// The cluster file's layout against the settings: only local clusters read it, and a
/// NUM_NODES given elsewhere must agree with its `nodes:` list.
fn layout_check(
    provider: Provider,
    c: &Checked,
    file: &FileParts,
    errors: &mut Vec<InvalidSetting>,
) {
    let l = &file.layout;
    let path = file
        .path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if provider != Provider::Local {
        let used: Vec<&str> = [
            ("nodes", !l.nodes.is_empty()),
            ("registries", l.registries != Default::default()),
            ("portMappings", !l.port_mappings.is_empty()),
        ]
        .into_iter()
        .filter_map(|(k, used)| used.then_some(k))
        .collect();
        for key in used {
            errors.push(InvalidSetting {
                input: format!("{path} ({key})"),
                value: String::new(),
                expected: format!(
                    "no {key} for the {provider} provider: nodes, registries and port mappings \
                     are read by `rktup local up` only"
                ),
            });
        }
        return;
    }
    if !l.nodes.is_empty() && c.num::<usize>("NUM_NODES") != l.nodes.len() {
        errors.push(InvalidSetting {
            input: c.input("NUM_NODES"),
            value: c.get("NUM_NODES").to_string(),
            expected: format!(
                "{}, the number of nodes the cluster file {path} lists (or leave NUM_NODES unset)",
                l.nodes.len()
            ),
        });
    }
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// Checks that involve more than one setting.
fn cross_check(provider: Provider, c: &Checked, errors: &mut Vec<InvalidSetting>) {
    let mut bad = |key: &str, expected: String| {
        errors.push(InvalidSetting {
            input: c.input(key),
            value: c.get(key).to_string(),
            expected,
        })
    };
    // Ranges that pods, services and the master's pods draw from must be disjoint.
    let ranges = [
        "CLUSTER_IP_RANGE",
        "SERVICE_CLUSTER_IP_RANGE",
        "MASTER_IP_RANGE",
    ];
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            if overlaps(c.net(a), c.net(b)) {
                bad(
                    b,
                    format!("a range that does not overlap {} ({})", a, c.get(a)),
                );
            }
        }
    }
    let dns: Ipv4Addr = c
        .get("DNS_SERVER_IP")
        .parse()
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let services = c.net("SERVICE_CLUSTER_IP_RANGE");
    if !services.contains(&dns) || dns == services.network() || dns == services.broadcast() {
        bad(
            "DNS_SERVER_IP",
            format!(
                "an address inside SERVICE_CLUSTER_IP_RANGE ({services}), not its first or last"
            ),
        );
    }
    // Dual-stack: local clusters, with an IPv6 range for pods and for Services alike.
    let (pods6, services6) = (
        c.net6("CLUSTER_IP_RANGE"),
        c.net6("SERVICE_CLUSTER_IP_RANGE"),
    );
    for (key, v6) in [
        ("CLUSTER_IP_RANGE", pods6),
        ("SERVICE_CLUSTER_IP_RANGE", services6),
    ] {
        if v6.is_some() && provider != Provider::Local {
            bad(
                key,
                "an IPv4 CIDR: a second, IPv6 range (dual-stack) is supported by local clusters \
                 only"
                    .into(),
            );
        }
    }
    if provider == Provider::Local && pods6.is_some() != services6.is_some() {
        let key = if pods6.is_none() {
            "CLUSTER_IP_RANGE"
        } else {
            "SERVICE_CLUSTER_IP_RANGE"
        };
        bad(
            key,
            "a dual-stack range too (IPv4,IPv6): CLUSTER_IP_RANGE and SERVICE_CLUSTER_IP_RANGE \
             are both dual-stack or both IPv4"
                .into(),
        );
    }
    if pods6.is_some_and(|n| n.prefix_len() > 64) {
        bad(
            "CLUSTER_IP_RANGE",
            "an IPv6 range of /64 or larger after the comma: each node takes a /64 of it".into(),
        );
    }
    if services6.is_some_and(|n| !(108..=126).contains(&n.prefix_len())) {
        bad(
            "SERVICE_CLUSTER_IP_RANGE",
            "an IPv6 range from /108 to /126 after the comma (kube-apiserver's limit of 2^20 \
             service addresses), such as fd00:10:96::/112"
                .into(),
        );
    }
    if c.net("CLUSTER_IP_RANGE").prefix_len() > 24 {
        bad(
            "CLUSTER_IP_RANGE",
            "a range of /24 or larger: each node takes a /24 of it".into(),
        );
    }
    let agent = c.get("KUBE_NODE_AGENT");
    if agent == "kubelet" {
        let (major, minor, _) = parse_version(c.get("KUBE_VERSION")).unwrap_or_default();
        if (major, minor) > (1, 10) {
            bad(
                "KUBE_NODE_AGENT",
                format!(
                    "embedded with KUBE_VERSION {}: the upstream kubelet dropped rkt in v1.11, so \
                     KUBE_NODE_AGENT=kubelet needs KUBE_VERSION v1.10.x or older",
                    c.get("KUBE_VERSION")
                ),
            );
        }
    }
    // The seed: use rkt's contained network with the KVM stage1.
    if Stage1::parse(c.get("KUBE_RKT_STAGE1_IMAGE")) == Some(Stage1::Kvm)
        && NetworkProvider::parse(c.get("NETWORK_PROVIDER")) != Some(NetworkProvider::Contained)
    {
        bad(
            "NETWORK_PROVIDER",
            "contained with the KVM stage1: the CNI plugin driver does not support the \
             hypervisor-based runtime (set NETWORK_PROVIDER=contained)"
                .into(),
        );
    }
    if provider == Provider::Aws {
        let vpc = c.net("VPC_CIDR");
        if !c.get("SUBNET_ID").is_empty() && c.get("VPC_ID").is_empty() {
            bad(
                "SUBNET_ID",
                "to be given together with VPC_ID (the VPC that holds the subnet)".into(),
            );
        }
        if c.get("VPC_ID").is_empty() || c.get("SUBNET_ID").is_empty() {
            let subnet = c.net("SUBNET_CIDR");
            if c.get("VPC_ID").is_empty() && !vpc.contains(&subnet) {
                bad("SUBNET_CIDR", format!("a range inside VPC_CIDR ({vpc})"));
            }
        }
        for key in ["CLUSTER_IP_RANGE", "SERVICE_CLUSTER_IP_RANGE"] {
            if c.get("VPC_ID").is_empty() && overlaps(c.net(key), vpc) {
                bad(
                    key,
                    format!("a range that does not overlap VPC_CIDR ({vpc})"),
                );
            }
        }
    }
    if let Some(path) = c.opt("RKT_PATH") {
        if !std::path::Path::new(&path).is_file() {
            bad(
                "RKT_PATH",
                "the path of an existing rkt binary, or empty for rktup's embedded runtime".into(),
            );
        }
    }
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}
