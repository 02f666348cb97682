//! Every setting rktup understands: its kube-up / local-up-cluster names, its flag, its default
//! and the kind of value it holds. The table is the single source for flag parsing, resolution,
//! validation, `rktup config` and the README's settings table.

use crate::kind::Kind;
use crate::provider::{Provider, Scope};

pub struct SettingSpec {
    /// Canonical name (the kube-up environment variable).
    pub key: &'static str,
    /// Environment variables read, in order, each for the providers in its scope.
    pub env: &'static [(&'static str, Scope)],
    /// Long flag, without the dashes.
    pub flag: Option<&'static str>,
    pub flag_aliases: &'static [&'static str],
    /// Providers this setting applies to.
    pub scope: Scope,
    /// Defaults per provider: the first whose scope holds the provider wins.
    pub defaults: &'static [(&'static str, Scope)],
    pub kind: Kind,
    pub help: &'static str,
    /// Why a default differs from kube-up's, or what a value means; shown by `rktup config`.
    pub note: Option<&'static str>,
}

impl SettingSpec {
    pub fn applies_to(&self, provider: Provider) -> bool {
        self.scope.contains(provider)
    }

    pub fn env_names(&self, provider: Provider) -> impl Iterator<Item = &'static str> + '_ {
        self.env
            .iter()
            .filter(move |(_, s)| s.contains(provider))
            .map(|(n, _)| *n)
    }

    pub fn default_for(&self, provider: Provider) -> &'static str {
        self.defaults
            .iter()
            .find(|(_, s)| s.contains(provider))
            .map(|(d, _)| *d)
            .unwrap_or("")
    }
}

const A: Scope = Scope::ALL;
const C: Scope = Scope::CLOUD;
const G: Scope = Scope::GCE;
const W: Scope = Scope::AWS;
const L: Scope = Scope::LOCAL;

pub const OS_DISTRIBUTIONS: &[(&str, &str)] = &[("coreos", "coreos"), ("flatcar", "flatcar")];
pub const CONTAINER_RUNTIMES: &[(&str, &str)] = &[("rkt", "rkt")];
pub const CONTAINED_NETWORKS: &[(&str, &str)] = &[("bridge", "bridge"), ("flannel", "flannel")];
pub const NODE_AGENTS: &[(&str, &str)] = &[("embedded", "embedded"), ("kubelet", "kubelet")];
pub const NODE_BOOT_FORMATS: &[(&str, &str)] =
    &[("cloud-config", "cloud-config"), ("ignition", "ignition")];
pub const GCE_DISK_TYPES: &[(&str, &str)] = &[
    ("pd-standard", "pd-standard"),
    ("pd-balanced", "pd-balanced"),
    ("pd-ssd", "pd-ssd"),
];
pub const AWS_VOLUME_TYPES: &[(&str, &str)] = &[
    ("gp2", "gp2"),
    ("gp3", "gp3"),
    ("io1", "io1"),
    ("io2", "io2"),
    ("st1", "st1"),
    ("sc1", "sc1"),
    ("standard", "standard"),
];

macro_rules! setting {
    ($key:literal, env: [$($env:literal @ $es:expr),* $(,)?], flag: $flag:expr, aliases: [$($al:literal),*],
     scope: $scope:expr, defaults: [$($d:literal @ $ds:expr),* $(,)?], kind: $kind:expr, help: $help:literal
     $(, note: $note:literal)? $(,)?) => {
        SettingSpec {
            key: $key,
            env: &[$(($env, $es)),*],
            flag: $flag,
            flag_aliases: &[$($al),*],
            scope: $scope,
            defaults: &[$(($d, $ds)),*],
            kind: $kind,
            help: $help,
            note: setting!(@note $($note)?),
        }
    };
    (@note $note:literal) => { Some($note) };
    (@note) => { None };
}

pub const SETTINGS: &[SettingSpec] = &[
    // ---- common ----
    setting!("INSTANCE_PREFIX",
        env: ["KUBE_GCE_INSTANCE_PREFIX" @ G, "KUBE_AWS_INSTANCE_PREFIX" @ W, "INSTANCE_PREFIX" @ A],
        flag: None, aliases: [], scope: A, defaults: ["kubernetes" @ A],
        kind: Kind::ClusterName,
        help: "Cluster name (--name); prefixes every resource and tags them for `down`"),
    setting!("NUM_NODES", env: ["NUM_NODES" @ A], flag: Some("num-nodes"), aliases: ["nodes"],
        scope: A, defaults: ["1" @ L, "3" @ C], kind: Kind::Uint { min: 0, max: 1000 },
        help: "Number of nodes (besides the master)"),
    setting!("KUBE_VERSION", env: ["KUBE_VERSION" @ A], flag: Some("kube-version"), aliases: [],
        scope: A, defaults: ["v1.32.4" @ A], kind: Kind::KubeVersion,
        help: "Kubernetes release of the master's upstream control-plane images (and of the legacy kubelet)"),
    setting!("KUBE_MASTER_OS_DISTRIBUTION",
        env: ["KUBE_MASTER_OS_DISTRIBUTION" @ C, "KUBE_OS_DISTRIBUTION" @ C],
        flag: Some("master-os-distribution"), aliases: ["os-distribution"], scope: C,
        defaults: ["coreos" @ C], kind: Kind::OneOf(OS_DISTRIBUTIONS),
        help: "Master OS (KUBE_OS_DISTRIBUTION sets master and nodes)",
        note: "coreos means Flatcar Container Linux, CoreOS Container Linux's maintained successor"),
    setting!("KUBE_NODE_OS_DISTRIBUTION",
        env: ["KUBE_NODE_OS_DISTRIBUTION" @ C, "KUBE_OS_DISTRIBUTION" @ C],
        flag: Some("node-os-distribution"), aliases: [], scope: C,
        defaults: ["coreos" @ C], kind: Kind::OneOf(OS_DISTRIBUTIONS),
        help: "Node OS (KUBE_OS_DISTRIBUTION sets master and nodes)",
        note: "coreos means Flatcar Container Linux, CoreOS Container Linux's maintained successor"),
    setting!("KUBE_CONTAINER_RUNTIME",
        env: ["CONTAINER_RUNTIME" @ L, "KUBE_CONTAINER_RUNTIME" @ A],
        flag: Some("container-runtime"), aliases: [], scope: A, defaults: ["rkt" @ A],
        kind: Kind::OneOf(CONTAINER_RUNTIMES),
        help: "Container runtime; rktup runs rkt-style pods only (local: CONTAINER_RUNTIME)"),
    setting!("KUBE_RKT_VERSION", env: ["KUBE_RKT_VERSION" @ A], flag: Some("rkt-version"), aliases: [],
        scope: A, defaults: ["1.9.1" @ A], kind: Kind::RktVersion,
        help: "rkt release downloaded by legacy (KUBE_NODE_AGENT=kubelet) nodes"),
    setting!("KUBE_RKT_STAGE1_IMAGE",
        env: ["RKT_STAGE1_IMAGE" @ L, "KUBE_RKT_STAGE1_IMAGE" @ A],
        flag: Some("rkt-stage1-image"), aliases: [], scope: A,
        defaults: ["coreos.com/rkt/stage1-coreos" @ A], kind: Kind::Stage1,
        help: "Node-wide stage1 isolation: stage1-coreos, stage1-fly or stage1-kvm (local: RKT_STAGE1_IMAGE)"),
    setting!("NETWORK_PROVIDER", env: ["NET_PLUGIN" @ L, "NETWORK_PROVIDER" @ A],
        flag: Some("network-provider"), aliases: ["net-plugin"], scope: A,
        defaults: ["kubenet" @ A], kind: Kind::Network,
        help: "Pod network: kubenet, cni, or contained (empty) for rkt's contained network (local: NET_PLUGIN)"),
    setting!("RKT_CONTAINED_NETWORK", env: ["RKT_CONTAINED_NETWORK" @ A],
        flag: Some("rkt-contained-network"), aliases: [], scope: A, defaults: ["bridge" @ A],
        kind: Kind::OneOf(CONTAINED_NETWORKS),
        help: "Which of the seed's /etc/rkt/net.d examples backs the contained network: bridge or flannel"),
    setting!("CLUSTER_IP_RANGE", env: ["CLUSTER_IP_RANGE" @ A], flag: Some("cluster-ip-range"),
        aliases: [], scope: A, defaults: ["10.244.0.0/16" @ A], kind: Kind::DualCidr,
        help: "Pod addresses; each node gets a /24 of it (and a /64 of an IPv6 range after a comma: dual-stack, local clusters)"),
    setting!("SERVICE_CLUSTER_IP_RANGE", env: ["SERVICE_CLUSTER_IP_RANGE" @ A],
        flag: Some("service-cluster-ip-range"), aliases: [], scope: A,
        defaults: ["10.0.0.0/16" @ A], kind: Kind::DualCidr,
        help: "Service cluster IPs (and an IPv6 range after a comma: dual-stack, local clusters)"),
    setting!("MASTER_IP_RANGE", env: ["MASTER_IP_RANGE" @ A], flag: Some("master-ip-range"),
        aliases: [], scope: A, defaults: ["10.246.0.0/24" @ A], kind: Kind::Cidr { optional: false },
        help: "Pod range of the master's own node"),
    setting!("DNS_SERVER_IP", env: ["DNS_SERVER_IP" @ A], flag: Some("dns-server-ip"), aliases: [],
        scope: A, defaults: ["10.0.0.10" @ A], kind: Kind::Ipv4,
        help: "Cluster DNS address, inside SERVICE_CLUSTER_IP_RANGE"),
    setting!("DNS_DOMAIN", env: ["DNS_DOMAIN" @ A], flag: Some("dns-domain"), aliases: [],
        scope: A, defaults: ["cluster.local" @ A], kind: Kind::DnsDomain, help: "Cluster DNS domain"),
    setting!("LOG_LEVEL", env: ["LOG_LEVEL" @ A], flag: None, aliases: [], scope: A,
        defaults: ["2" @ A], kind: Kind::Uint { min: 0, max: 10 },
        help: "Verbosity (-v/--verbosity); 4 or more logs every rkt runtime step"),
    setting!("ALLOW_PRIVILEGED", env: ["ALLOW_PRIVILEGED" @ A], flag: Some("allow-privileged"),
        aliases: [], scope: A, defaults: ["true" @ A], kind: Kind::Bool,
        help: "Allow privileged pods (needed for the stage1 override annotation)"),
    setting!("KUBE_NODE_AGENT", env: ["KUBE_NODE_AGENT" @ A], flag: Some("node-agent"), aliases: [],
        scope: A, defaults: ["embedded" @ A], kind: Kind::OneOf(NODE_AGENTS),
        help: "embedded: rktup's own agent; kubelet: the 2016 recipe (upstream kubelet + rkt), KUBE_VERSION ≤ v1.10 only"),
    setting!("KUBE_NODE_BOOT_FORMAT", env: ["KUBE_NODE_BOOT_FORMAT" @ C], flag: Some("boot-format"),
        aliases: [], scope: C, defaults: ["cloud-config" @ C], kind: Kind::OneOf(NODE_BOOT_FORMATS),
        help: "What the master's and nodes' user-data is: cloud-config (coreos-cloudinit, as kube-up's) or ignition (Ignition spec 3.4.0 JSON, Flatcar's first-boot provisioning); same files and units"),
    setting!("RKT_API_ENDPOINT", env: ["RKT_API_ENDPOINT" @ A], flag: Some("rkt-api-endpoint"),
        aliases: [], scope: A, defaults: ["localhost:15441" @ A], kind: Kind::HostPort,
        help: "Where the node's rkt api-service also listens, read-only (kubelet's --rkt-api-endpoint); all of it is on root's unix socket <root-dir>/api.sock"),
    setting!("RKTUP_BINARY_URL", env: ["RKTUP_BINARY_URL" @ A], flag: Some("binary-url"), aliases: [],
        scope: A, defaults: [], kind: Kind::Url,
        help: "Where nodes download rktup from; filled in by `up` (staging bucket) when empty"),
    setting!("RKTUP_BINARY_SHA256", env: ["RKTUP_BINARY_SHA256" @ A], flag: Some("binary-sha256"),
        aliases: [], scope: A, defaults: [], kind: Kind::Sha256,
        help: "sha256 nodes check the downloaded rktup against; filled in by `up` when empty"),
    setting!("RKTUP_STATE_DIR", env: ["RKTUP_STATE_DIR" @ A], flag: Some("state-dir"), aliases: [],
        scope: A, defaults: [], kind: Kind::Text,
        help: "Parent of every cluster's state directory (default: /var/lib/rktup as root, else ~/.local/state/rktup)"),
    setting!("RKTUP_NODE_BINARY", env: ["RKTUP_NODE_BINARY" @ C], flag: Some("node-binary"),
        aliases: [], scope: C, defaults: [], kind: Kind::Text,
        help: "The rktup file `up` uploads for the master and nodes, e.g. a node build (`--no-default-features --features node`, README \"A node build\"); default: the running binary"),
    setting!("BOOTSTRAP_TOKEN_TTL_HOURS", env: ["BOOTSTRAP_TOKEN_TTL_HOURS" @ C],
        flag: Some("bootstrap-token-ttl-hours"), aliases: [], scope: C, defaults: ["24" @ C],
        kind: Kind::Uint { min: 0, max: 8760 },
        help: "Hours the nodes' bootstrap token lives after the master's first boot (kubeadm's 24); 0: it never expires (Typhoon's way: replacements months later still join)"),
    setting!("RKTUP_KEEP_STATE", env: ["RKTUP_KEEP_STATE" @ C], flag: Some("keep-state"), aliases: [],
        scope: C, defaults: ["false" @ C], kind: Kind::Bool,
        help: "`down` keeps the cluster's state directory (its CA and admin keys) after every cloud resource is gone"),
    // ---- GCE ----
    setting!("PROJECT", env: ["PROJECT" @ G, "CLOUDSDK_CORE_PROJECT" @ G], flag: Some("project"),
        aliases: [], scope: G, defaults: [], kind: Kind::GceProject { optional: true },
        help: "Google Cloud project (default: gcloud's configured project)"),
    setting!("KUBE_GCE_ZONE", env: ["KUBE_GCE_ZONE" @ G, "ZONE" @ G], flag: Some("zone"), aliases: [],
        scope: G, defaults: ["us-central1-b" @ G], kind: Kind::GceZone, help: "Compute Engine zone"),
    setting!("KUBE_GCE_NETWORK", env: ["KUBE_GCE_NETWORK" @ G], flag: Some("network"), aliases: [],
        scope: G, defaults: ["default" @ G], kind: Kind::ClusterName,
        help: "VPC network (created if missing)"),
    setting!("KUBE_GCE_MASTER_PROJECT", env: ["KUBE_GCE_MASTER_PROJECT" @ G],
        flag: Some("master-project"), aliases: [], scope: G, defaults: ["kinvolk-public" @ G],
        kind: Kind::GceProject { optional: false }, help: "Project holding the master's image",
        note: "kube-up's coreos-cloud project no longer exists; kinvolk-public publishes Flatcar"),
    setting!("KUBE_GCE_MASTER_IMAGE", env: ["KUBE_GCE_MASTER_IMAGE" @ G], flag: Some("master-image"),
        aliases: [], scope: G, defaults: ["family/flatcar-stable" @ G], kind: Kind::Text,
        help: "Master image name, or family/NAME for an image family",
        note: "defaults to Flatcar's stable image family"),
    setting!("KUBE_GCE_NODE_PROJECT", env: ["KUBE_GCE_NODE_PROJECT" @ G], flag: Some("node-project"),
        aliases: [], scope: G, defaults: ["kinvolk-public" @ G],
        kind: Kind::GceProject { optional: false }, help: "Project holding the nodes' image",
        note: "kube-up's coreos-cloud project no longer exists; kinvolk-public publishes Flatcar"),
    setting!("KUBE_GCE_NODE_IMAGE", env: ["KUBE_GCE_NODE_IMAGE" @ G], flag: Some("node-image"),
        aliases: [], scope: G, defaults: ["family/flatcar-stable" @ G], kind: Kind::Text,
        help: "Node image name, or family/NAME for an image family",
        note: "defaults to Flatcar's stable image family"),
    setting!("MASTER_SIZE", env: ["MASTER_SIZE" @ C], flag: Some("master-size"), aliases: [],
        scope: C, defaults: ["n1-standard-1" @ G, "t3.medium" @ W], kind: Kind::MachineType,
        help: "Master machine type",
        note: "AWS: kube-up's m3.medium is a retired generation; t3.medium is its successor"),
    setting!("NODE_SIZE", env: ["NODE_SIZE" @ C], flag: Some("node-size"), aliases: [], scope: C,
        defaults: ["n1-standard-2" @ G, "t3.medium" @ W], kind: Kind::MachineType,
        help: "Node machine type",
        note: "AWS: kube-up's m3.medium is a retired generation; t3.medium is its successor"),
    setting!("MASTER_DISK_SIZE", env: ["MASTER_DISK_SIZE" @ G], flag: Some("master-disk-size"),
        aliases: [], scope: G, defaults: ["20GB" @ G], kind: Kind::GceDiskSize,
        help: "Master boot disk size"),
    setting!("MASTER_DISK_TYPE", env: ["MASTER_DISK_TYPE" @ G], flag: Some("master-disk-type"),
        aliases: [], scope: G, defaults: ["pd-ssd" @ G], kind: Kind::OneOf(GCE_DISK_TYPES),
        help: "Master boot disk type"),
    setting!("NODE_DISK_SIZE", env: ["NODE_DISK_SIZE" @ G], flag: Some("node-disk-size"),
        aliases: [], scope: G, defaults: ["100GB" @ G], kind: Kind::GceDiskSize,
        help: "Node boot disk size"),
    setting!("NODE_DISK_TYPE", env: ["NODE_DISK_TYPE" @ G], flag: Some("node-disk-type"),
        aliases: [], scope: G, defaults: ["pd-standard" @ G], kind: Kind::OneOf(GCE_DISK_TYPES),
        help: "Node boot disk type"),
    setting!("PREEMPTIBLE_NODE", env: ["PREEMPTIBLE_NODE" @ G], flag: Some("preemptible-node"),
        aliases: [], scope: G, defaults: ["false" @ G], kind: Kind::Bool,
        help: "Use preemptible VMs for nodes"),
    setting!("NODE_SCOPES", env: ["NODE_SCOPES" @ G], flag: Some("node-scopes"), aliases: [],
        scope: G, defaults: ["monitoring,logging-write,storage-ro" @ G], kind: Kind::WordList,
        help: "OAuth scopes of the nodes' service account"),
    setting!("KUBE_DELETE_NETWORK", env: ["KUBE_DELETE_NETWORK" @ G],
        flag: Some("delete-network"), aliases: [], scope: G, defaults: ["false" @ G],
        kind: Kind::Bool, help: "`down` also deletes KUBE_GCE_NETWORK (as kube-down did)"),
    setting!("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE",
        env: ["CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE" @ G], flag: Some("compute-endpoint"),
        aliases: [], scope: G, defaults: [], kind: Kind::Url,
        help: "Compute Engine API base URL ending in compute/v1/ (gcloud's override; tests, private endpoints)"),
    setting!("CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE",
        env: ["CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE" @ G], flag: Some("storage-endpoint"),
        aliases: [], scope: G, defaults: [], kind: Kind::Url,
        help: "Cloud Storage JSON API base URL ending in storage/v1/ (gcloud's override)"),
    setting!("CLOUDSDK_API_ENDPOINT_OVERRIDES_IAM",
        env: ["CLOUDSDK_API_ENDPOINT_OVERRIDES_IAM" @ G], flag: Some("iam-endpoint"),
        aliases: [], scope: G, defaults: [], kind: Kind::Url,
        help: "IAM API base URL ending in v1/ (gcloud's override): the master's service account"),
    // ---- AWS ----
    setting!("KUBE_AWS_ZONE", env: ["KUBE_AWS_ZONE" @ W], flag: Some("zone"), aliases: [], scope: W,
        defaults: ["us-west-2a" @ W], kind: Kind::AwsZone,
        help: "EC2 availability zone; the region is derived from it"),
    setting!("VPC_ID", env: ["VPC_ID" @ W], flag: Some("vpc-id"), aliases: [], scope: W,
        defaults: [], kind: Kind::AwsId("vpc"),
        help: "Use this VPC instead of creating one (never deleted by `down`)"),
    setting!("SUBNET_ID", env: ["SUBNET_ID" @ W], flag: Some("subnet-id"), aliases: [], scope: W,
        defaults: [], kind: Kind::AwsId("subnet"),
        help: "Use this subnet (with VPC_ID) instead of creating one (never deleted by `down`)"),
    setting!("VPC_CIDR", env: ["VPC_CIDR" @ W], flag: Some("vpc-cidr"), aliases: [], scope: W,
        defaults: ["172.20.0.0/16" @ W], kind: Kind::Cidr { optional: false },
        help: "CIDR of a VPC rktup creates"),
    setting!("SUBNET_CIDR", env: ["SUBNET_CIDR" @ W], flag: Some("subnet-cidr"), aliases: [],
        scope: W, defaults: ["172.20.0.0/24" @ W], kind: Kind::Cidr { optional: false },
        help: "CIDR of a subnet rktup creates, inside VPC_CIDR"),
    setting!("SSH_CIDR", env: ["SSH_CIDR" @ W], flag: Some("ssh-cidr"), aliases: [], scope: W,
        defaults: ["0.0.0.0/0" @ W], kind: Kind::Cidr { optional: false },
        help: "Who may reach port 22"),
    setting!("HTTP_API_CIDR", env: ["HTTP_API_CIDR" @ W], flag: Some("http-api-cidr"), aliases: [],
        scope: W, defaults: ["0.0.0.0/0" @ W], kind: Kind::Cidr { optional: false },
        help: "Who may reach the API server on 443"),
    setting!("AWS_SSH_KEY", env: ["AWS_SSH_KEY" @ W], flag: Some("ssh-key"), aliases: [], scope: W,
        defaults: ["~/.ssh/kube_aws_rsa" @ W], kind: Kind::Text,
        help: "Private key whose .pub is imported as the cluster's key pair"),
    setting!("KUBE_MASTER_IMAGE", env: ["KUBE_MASTER_IMAGE" @ W, "AWS_IMAGE" @ W],
        flag: Some("master-image"), aliases: [], scope: W, defaults: [], kind: Kind::AwsId("ami"),
        help: "Master AMI (default: Flatcar stable, looked up)"),
    setting!("KUBE_NODE_IMAGE", env: ["KUBE_NODE_IMAGE" @ W, "AWS_IMAGE" @ W],
        flag: Some("node-image"), aliases: [], scope: W, defaults: [], kind: Kind::AwsId("ami"),
        help: "Node AMI (default: Flatcar stable, looked up)"),
    setting!("MASTER_ROOT_DISK_SIZE", env: ["MASTER_ROOT_DISK_SIZE" @ W],
        flag: Some("master-root-disk-size"), aliases: [], scope: W, defaults: ["20" @ W],
        kind: Kind::Uint { min: 8, max: 16384 }, help: "Master root volume, GiB"),
    setting!("MASTER_ROOT_DISK_TYPE", env: ["MASTER_ROOT_DISK_TYPE" @ W],
        flag: Some("master-root-disk-type"), aliases: [], scope: W, defaults: ["gp3" @ W],
        kind: Kind::OneOf(AWS_VOLUME_TYPES), help: "Master root volume type",
        note: "kube-up used gp2; gp3 is cheaper and faster"),
    setting!("NODE_ROOT_DISK_SIZE", env: ["NODE_ROOT_DISK_SIZE" @ W],
        flag: Some("node-root-disk-size"), aliases: [], scope: W, defaults: ["32" @ W],
        kind: Kind::Uint { min: 8, max: 16384 }, help: "Node root volume, GiB"),
    setting!("NODE_ROOT_DISK_TYPE", env: ["NODE_ROOT_DISK_TYPE" @ W],
        flag: Some("node-root-disk-type"), aliases: [], scope: W, defaults: ["gp3" @ W],
        kind: Kind::OneOf(AWS_VOLUME_TYPES), help: "Node root volume type",
        note: "kube-up used gp2; gp3 is cheaper and faster"),
    // ---- local ----
    setting!("RKT_PATH", env: ["RKT_PATH" @ L], flag: Some("rkt-path"), aliases: [], scope: L,
        defaults: [], kind: Kind::Text,
        help: "rkt binary for the agent's --rkt-path (default: rktup itself, the embedded runtime)"),
    setting!("API_HOST", env: ["API_HOST" @ L], flag: Some("api-host"), aliases: [], scope: L,
        defaults: ["127.0.0.1" @ L], kind: Kind::Ipv4, help: "Address the API server listens on"),
    setting!("API_PORT", env: ["API_PORT" @ L], flag: Some("api-port"), aliases: [], scope: L,
        defaults: ["6443" @ L], kind: Kind::Port, help: "Port the API server listens on (HTTPS)",
        note: "local-up-cluster.sh served plain HTTP on 8080; rktup serves HTTPS only"),
    setting!("NET_PLUGIN_DIR", env: ["NET_PLUGIN_DIR" @ L], flag: Some("net-plugin-dir"),
        aliases: ["network-plugin-dir"], scope: L, defaults: [], kind: Kind::Text,
        help: "Extra directory searched for CNI plugins before /usr/lib/cni and /opt/cni/bin"),
    setting!("HOSTNAME_OVERRIDE", env: ["HOSTNAME_OVERRIDE" @ L], flag: Some("hostname-override"),
        aliases: [], scope: L, defaults: [], kind: Kind::Text,
        help: "Node name (default <name>-node-<n>); with several nodes, -<n> is appended"),
];

/// The settings that apply to `provider`, in table order.
pub fn settings_for(provider: Provider) -> impl Iterator<Item = &'static SettingSpec> {
    SETTINGS.iter().filter(move |s| s.applies_to(provider))
}

pub fn spec(key: &str) -> Option<&'static SettingSpec> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// The README's settings table, generated so it can never drift from the code.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| Environment | Flag | Providers | Default | Meaning |\n|---|---|---|---|---|\n",
    );
    for s in SETTINGS {
        let providers: Vec<&str> = Provider::ALL
            .iter()
            .filter(|p| s.applies_to(**p))
            .map(|p| p.as_str())
            .collect();
        let mut envs: Vec<String> = Vec::new();
        for (name, scope) in s.env {
            let only: Vec<&str> = Provider::ALL
                .iter()
                .filter(|p| scope.contains(**p) && s.applies_to(**p))
                .map(|p| p.as_str())
                .collect();
            let entry = if only.len() == providers.len() {
                format!("`{name}`")
            } else {
                format!("`{name}` ({})", only.join(", "))
            };
            if !envs.contains(&entry) {
                envs.push(entry);
            }
        }
        let flag = match (s.flag, crate::flags::global_flag_for(s.key)) {
            (Some(f), _) => {
                let mut all = vec![format!("`--{f}`")];
                all.extend(s.flag_aliases.iter().map(|a| format!("`--{a}`")));
                all.join(", ")
            }
            (None, Some(g)) => format!("`{g}`"),
            (None, None) => String::new(),
        };
        let shown = |d: &str| {
            if d.is_empty() {
                "(empty)".to_string()
            } else {
                format!("`{d}`")
            }
        };
        let applicable: Vec<Provider> = Provider::ALL
            .into_iter()
            .filter(|p| s.applies_to(*p))
            .collect();
        let mut distinct: Vec<&str> = applicable.iter().map(|p| s.default_for(*p)).collect();
        distinct.dedup();
        // Per-provider defaults are spelled out when they differ.
        let default = if distinct.len() == 1 {
            shown(distinct[0])
        } else {
            applicable
                .iter()
                .map(|p| format!("{p}: {}", shown(s.default_for(*p))))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let mut meaning = s.help.replace('|', "\\|");
        if let Some(n) = s.note {
            meaning.push_str(&format!(" — {n}"));
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            envs.join("<br>"),
            flag,
            providers.join(", "),
            default,
            meaning
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_for_every_provider() {
        for p in Provider::ALL {
            for s in settings_for(p) {
                let d = s.default_for(p);
                assert!(
                    s.kind.check(d).is_ok() || d.is_empty(),
                    "{} default {d:?} invalid for {p}",
                    s.key
                );
                assert!(
                    s.env_names(p).next().is_some(),
                    "{} has no env name for {p}",
                    s.key
                );
            }
        }
    }

    #[test]
    fn flags_are_unique_per_provider() {
        for p in Provider::ALL {
            let mut seen = std::collections::BTreeSet::new();
            for s in settings_for(p) {
                for f in s.flag.iter().chain(s.flag_aliases) {
                    assert!(seen.insert(*f), "flag --{f} twice for {p}");
                }
            }
        }
    }
}
