//! `AgentConfig`: every `rktup agent` flag, typed; its clap parser and its `to_args()`.

use crate::names::{NetworkMode, Stage1, UnknownNetworkMode, UnknownStage1};
use crate::node::{HostPathMount, NodeLabel, RegistryMirror, Taint};
use clap::Args;
use std::net::IpAddr;
use std::path::PathBuf;

/// The agent's default `--root-dir` (also the `rkt` commands' default `--dir`).
pub const DEFAULT_ROOT_DIR: &str = "/var/lib/rktup/agent";
/// kubelet's default `--resolv-conf`.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
/// The agent's default `--pod-manifest-path`.
pub const DEFAULT_MANIFESTS: &str = "/etc/kubernetes/manifests";

/// The environment variables the agent reads, and what for. Clap reads the first two (they are
/// shown in `--help`); [`AgentConfig::with_env_fallbacks`] reads the seed's local-up spelling.
pub const ENV_STAGE1: &str = "KUBE_RKT_STAGE1_IMAGE";
pub const ENV_LOG_LEVEL: &str = "LOG_LEVEL";
pub const ENV_STAGE1_LOCAL: &str = "RKT_STAGE1_IMAGE";

/// `rktup agent`: the node agent (kubelet + rkt api-service) in the foreground.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct AgentConfig {
    /// Directory holding the agent's state (images, pods) and the rkt api-service's unix
    /// socket `<root-dir>/api.sock` (root only, every route).
    #[arg(long, default_value = DEFAULT_ROOT_DIR)]
    pub root_dir: PathBuf,
    /// Static pod manifests (kubelet's --pod-manifest-path; the seed's --config).
    #[arg(long, alias = "config", default_value = DEFAULT_MANIFESTS)]
    pub pod_manifest_path: PathBuf,
    /// Also serve the rkt api-service read-only (pod list/status/logs, image list) on this
    /// loopback HOST:PORT (kubelet's flag; the seed used localhost:15441). Not given: the unix
    /// socket only.
    #[arg(long, value_name = "HOST:PORT")]
    pub rkt_api_endpoint: Option<String>,
    /// Node-wide stage1: coreos.com/rkt/stage1-coreos (default), stage1-fly, stage1-kvm
    /// (also KUBE_RKT_STAGE1_IMAGE or RKT_STAGE1_IMAGE).
    #[arg(long, env = ENV_STAGE1, value_parser = stage1_flag)]
    pub rkt_stage1_image: Option<Stage1>,
    /// "" (rkt's contained network), cni, or kubenet.
    #[arg(long, default_value = "", value_parser = network_flag)]
    pub network_plugin: NetworkMode,
    /// Where CNI plugin binaries are searched first (then /usr/lib/cni, /opt/cni/bin).
    #[arg(long)]
    pub network_plugin_dir: Option<PathBuf>,
    /// CNI configs (default /etc/rkt/net.d for the contained network, /etc/cni/net.d for cni).
    #[arg(long)]
    pub cni_conf_dir: Option<PathBuf>,
    /// The node's pod CIDR (kubenet); an IPv4 and an IPv6 one, comma-separated, make the node
    /// dual-stack (its pods get an address of each family).
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// Registries reached over plain HTTP (host:port), repeatable.
    #[arg(long = "insecure-registry")]
    pub insecure_registry: Vec<String>,
    /// Mirror endpoints of a registry, `REGISTRY=http[s]://HOST[:PORT]` (REGISTRY `docker.io`,
    /// `127.0.0.1:5000`, or `*` for every registry without mirrors of its own); repeatable, a
    /// registry's endpoints tried in the order given, then the registry itself.
    #[arg(long = "registry-mirror", value_name = "REGISTRY=URL")]
    pub registry_mirror: Vec<RegistryMirror>,
    /// Registries whose images come from their mirrors only (no fall-back to the registry
    /// itself); repeatable.
    #[arg(long = "registry-mirror-exclusive", value_name = "REGISTRY")]
    pub registry_mirror_exclusive: Vec<String>,
    /// Network namespace images are pulled from and the node's DNS asks its upstream resolvers
    /// (--resolv-conf) from, e.g. the host's for a local cluster's nodes (which live in
    /// namespaces of their own), so registries and resolvers on the host's loopback work.
    #[arg(long, value_name = "PATH")]
    pub image_pull_netns: Option<PathBuf>,
    /// Docker config.json with registry credentials ({"auths":{host:{auth}}}).
    #[arg(long)]
    pub registry_config: Option<PathBuf>,
    /// Allow privileged containers (and with them the stage1 override); `--allow-privileged`
    /// alone or `--allow-privileged=true|false`, as kubelet took it.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false",
          action = clap::ArgAction::Set)]
    pub allow_privileged: bool,
    /// kubelet's --container-runtime; only rkt, the runtime embedded in this agent.
    #[arg(long, default_value = "rkt", value_parser = ["rkt"])]
    pub container_runtime: String,
    /// kubelet's --rkt-path. The runtime is embedded, so this only names the binary that the
    /// `rkt` troubleshooting commands run as (usually a link to rktup).
    #[arg(long)]
    pub rkt_path: Option<PathBuf>,
    /// Credentials for the Kubernetes API server (the kubelet half, which registers the node
    /// and runs the pods bound to it, reads them; static pods need none).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The seed's kubelet --api-servers: API server URL, used with --kubeconfig.
    #[arg(long)]
    pub api_servers: Option<String>,
    /// Cluster DNS server written into pods' /etc/resolv.conf by the kubelet half.
    #[arg(long)]
    pub cluster_dns: Option<String>,
    /// Cluster DNS domain (kubelet's --cluster-domain).
    #[arg(long)]
    pub cluster_domain: Option<String>,
    /// The resolver configuration pods with dnsPolicy Default get, and whose search domains
    /// ClusterFirst pods add after the cluster's (kubelet's --resolv-conf); "" for none.
    #[arg(long, default_value = DEFAULT_RESOLV_CONF)]
    pub resolv_conf: PathBuf,
    /// Answer cluster DNS on --cluster-dns from this node (the address is added to the node's
    /// loopback; kubelet + a node-local CoreDNS in one). `false` leaves DNS to something else.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "true",
          action = clap::ArgAction::Set)]
    pub serve_cluster_dns: bool,
    /// The service proxy built into the agent (kube-proxy's --proxy-mode): `nftables`, or
    /// `none` when another proxy runs on the node.
    #[arg(long, default_value = "nftables", value_parser = ["nftables", "none"])]
    pub proxy_mode: String,
    /// kube-proxy's --cluster-cidr: the pods' network (an IPv4 and an IPv6 CIDR,
    /// comma-separated, on a dual-stack cluster); traffic to Services from outside it is
    /// masqueraded.
    #[arg(long)]
    pub cluster_cidr: Option<String>,
    /// Log verbosity; >= 4 logs every runtime step (also LOG_LEVEL).
    #[arg(long = "v", env = ENV_LOG_LEVEL, default_value_t = 2)]
    pub verbosity: u8,
    /// How often the manifest directory is re-read.
    #[arg(long, default_value = "1000", hide = true)]
    pub sync_period_ms: u64,
    /// First container restart back-off (kubelet: 10s), doubling up to --max-backoff-ms.
    #[arg(long, default_value = "10000")]
    pub restart_backoff_ms: u64,
    #[arg(long, default_value = "300000")]
    pub max_backoff_ms: u64,
    /// Rotate a container's log file at this size.
    #[arg(long, default_value = "10485760")]
    pub container_log_max_size: u64,
    #[arg(long, default_value = "5")]
    pub container_log_max_files: usize,
    /// Labels the Node registers with (kubelet's --node-labels: `key=value`, comma-separated or
    /// repeated).
    #[arg(long, value_name = "KEY=VALUE", value_delimiter = ',')]
    pub node_labels: Vec<NodeLabel>,
    /// Taints the Node registers with (kubelet's --register-with-taints: `key[=value]:Effect`,
    /// comma-separated or repeated); set when the Node is created.
    #[arg(long, value_name = "KEY=VALUE:EFFECT", value_delimiter = ',')]
    pub register_with_taints: Vec<Taint>,
    /// kind's extraMounts for a node sharing the host's filesystem: hostPath volumes at or
    /// under NODE_PATH are served from HOST_PATH (`:ro`: mounted read-only); repeatable.
    #[arg(long, value_name = "HOST_PATH:NODE_PATH[:ro]")]
    pub host_path_mount: Vec<HostPathMount>,
    /// Node name reported to pods (spec.nodeName); default: the hostname.
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// The node's IP, reported to pods as status.hostIP (downward API env); a dual-stack node
    /// gives its IPv6 address after a comma (kubelet's `--node-ip=v4,v6`).
    #[arg(long)]
    pub node_ip: Option<String>,
    /// Seconds between Lease renewals and node status updates (kubelet's
    /// --node-status-update-frequency).
    #[arg(long, default_value = "10")]
    pub node_status_update_frequency: u64,
    /// Seconds between updates of running pods' configMap, secret, downwardAPI and projected
    /// volumes from the API server (kubelet's --sync-frequency).
    #[arg(long, default_value = "60")]
    pub sync_frequency: u64,
    /// The kubelet port (HTTPS: /healthz, /containerLogs for `kubectl logs`), advertised in the
    /// Node's status.daemonEndpoints; 0 disables it.
    #[arg(long, default_value = "10250")]
    pub kubelet_port: u16,
    /// Address the kubelet port binds (default: --node-ip if given, else 0.0.0.0).
    #[arg(long)]
    pub address: Option<IpAddr>,
    /// Clients of the kubelet port must present a certificate signed by this CA (PEM); default:
    /// the CA of --kubeconfig. Without a certificate a request gets 401.
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// Serving certificate of the kubelet port (PEM, with --tls-private-key-file); default: a
    /// self-signed one generated into <root-dir>/pki/kubelet.crt|key.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// kubelet's --bootstrap-kubeconfig: when --kubeconfig is missing or its client certificate
    /// is expired or unreadable, the agent makes its own key, asks for a client certificate
    /// (a CertificateSigningRequest for `kubernetes.io/kube-apiserver-client-kubelet`) with
    /// these credentials (a bootstrap token) and writes --kubeconfig pointing at the result.
    #[arg(long)]
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Where the client and serving certificates and keys are kept (kubelet's --cert-dir);
    /// default <root-dir>/pki.
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
    /// Renew the client certificate before it expires, with a new key and CSR made with the
    /// current one (kubelet's --rotate-certificates).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false",
          action = clap::ArgAction::Set)]
    pub rotate_certificates: bool,
    /// Serve the kubelet port with a certificate from the `kubernetes.io/kubelet-serving` signer
    /// (requested, and renewed, through the CSR API; kubelet's --rotate-server-certificates).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false",
          action = clap::ArgAction::Set)]
    pub rotate_server_certificates: bool,
    /// Who may use the kubelet port: `AlwaysAllow` (any client with a certificate of the client
    /// CA), or `Webhook` (each request checked with a SubjectAccessReview, kubelet's mapping
    /// of paths to `nodes/<subresource>`).
    #[arg(long, default_value = "AlwaysAllow", value_parser = ["AlwaysAllow", "Webhook"])]
    pub authorization_mode: String,
    /// Also accept `Authorization: Bearer` tokens on the kubelet port, checked with a
    /// TokenReview (kubelet's --authentication-token-webhook: what in-cluster scrapers such as
    /// metrics-server present, their service account token).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false",
          action = clap::ArgAction::Set)]
    pub authentication_token_webhook: bool,
    /// Approve other nodes' `kubernetes.io/kubelet-serving` CSRs when a node asks for its own
    /// addresses (and this agent's own request), which upstream kube-controller-manager never
    /// approves: set for the agent on a cloud master, whose API server then checks kubelets'
    /// serving certificates (--kubelet-certificate-authority). rktup's own flag.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false",
          action = clap::ArgAction::Set)]
    pub approve_kubelet_serving_csrs: bool,
}

/// `--rkt-stage1-image`: empty means the default (coreos), as it always did.
fn stage1_flag(s: &str) -> Result<Stage1, UnknownStage1> {
    if s.trim().is_empty() {
        return Ok(Stage1::default());
    }
    s.parse()
}

fn network_flag(s: &str) -> Result<NetworkMode, UnknownNetworkMode> {
    s.parse()
}

impl Default for AgentConfig {
    /// What `rktup agent` with no flags and no environment means.
    fn default() -> AgentConfig {
        AgentConfig {
            root_dir: PathBuf::from(DEFAULT_ROOT_DIR),
            pod_manifest_path: PathBuf::from(DEFAULT_MANIFESTS),
            rkt_api_endpoint: None,
            rkt_stage1_image: None,
            network_plugin: NetworkMode::Contained,
            network_plugin_dir: None,
            cni_conf_dir: None,
            pod_cidr: None,
            insecure_registry: vec![],
            registry_mirror: vec![],
            registry_mirror_exclusive: vec![],
            image_pull_netns: None,
            registry_config: None,
            allow_privileged: false,
            container_runtime: "rkt".into(),
            rkt_path: None,
            kubeconfig: None,
            api_servers: None,
            cluster_dns: None,
            cluster_domain: None,
            resolv_conf: PathBuf::from(DEFAULT_RESOLV_CONF),
            serve_cluster_dns: true,
            proxy_mode: "nftables".into(),
            cluster_cidr: None,
            verbosity: 2,
            sync_period_ms: 1000,
            restart_backoff_ms: 10_000,
            max_backoff_ms: 300_000,
            container_log_max_size: 10_485_760,
            container_log_max_files: 5,
            node_labels: vec![],
            register_with_taints: vec![],
            host_path_mount: vec![],
            hostname_override: None,
            node_ip: None,
            node_status_update_frequency: 10,
            sync_frequency: 60,
            kubelet_port: 10250,
            address: None,
            client_ca_file: None,
            tls_cert_file: None,
            tls_private_key_file: None,
            bootstrap_kubeconfig: None,
            cert_dir: None,
            rotate_certificates: false,
            rotate_server_certificates: false,
            authorization_mode: "AlwaysAllow".into(),
            authentication_token_webhook: false,
            approve_kubelet_serving_csrs: false,
        }
    }
}

impl AgentConfig {
    /// The stage1 in effect: the flag (or KUBE_RKT_STAGE1_IMAGE, or RKT_STAGE1_IMAGE after
    /// [`AgentConfig::with_env_fallbacks`]), else stage1-coreos.
    pub fn stage1(&self) -> Stage1 {
        self.rkt_stage1_image.unwrap_or_default()
    }

    /// Where certificates and keys are kept: --cert-dir, else `<root-dir>/pki`.
    pub fn cert_dir(&self) -> PathBuf {
        self.cert_dir
            .clone()
            .unwrap_or_else(|| self.root_dir.join("pki"))
    }

    /// The seed's local-up-cluster spelling `RKT_STAGE1_IMAGE`, read when neither
    /// `--rkt-stage1-image` nor `KUBE_RKT_STAGE1_IMAGE` (clap reads that one) gave a stage1. An
    /// empty variable counts as unset. `env` is the environment (`std::env::var(..).ok()` in the
    /// agent; a map in tests): this crate does no IO itself.
    pub fn with_env_fallbacks(
        mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<AgentConfig, UnknownStage1> {
        if self.rkt_stage1_image.is_none() {
            if let Some(v) = env(ENV_STAGE1_LOCAL).filter(|v| !v.is_empty()) {
                self.rkt_stage1_image = Some(v.parse()?);
            }
        }
        Ok(self)
    }

    /// The flags (`--name=value`, without the leading `agent`) that parse back to `self`.
    /// `--root-dir`, `--container-runtime`, `--network-plugin`, `--pod-manifest-path`,
    /// `--allow-privileged` and `--v` are always written (a node's unit says them even when
    /// they are the defaults, and they shadow LOG_LEVEL); every other flag only when it is set
    /// and not its default. The order is the node unit's, then the rest in `--help` order.
    pub fn to_args(&self) -> Vec<String> {
        let d = AgentConfig::default();
        let mut a = Vec::new();
        let mut push = |flag: &str, value: String| a.push(format!("--{flag}={value}"));
        let path = |p: &PathBuf| p.display().to_string();
        push("root-dir", path(&self.root_dir));
        push("container-runtime", self.container_runtime.clone());
        if let Some(e) = &self.rkt_api_endpoint {
            push("rkt-api-endpoint", e.clone());
        }
        if let Some(p) = &self.rkt_path {
            push("rkt-path", path(p));
        }
        if let Some(s) = self.rkt_stage1_image {
            push("rkt-stage1-image", s.image_name().to_string());
        }
        push(
            "network-plugin",
            self.network_plugin.kubelet_plugin().to_string(),
        );
        if let Some(p) = &self.network_plugin_dir {
            push("network-plugin-dir", path(p));
        }
        if let Some(p) = &self.cni_conf_dir {
            push("cni-conf-dir", path(p));
        }
        if let Some(p) = &self.kubeconfig {
            push("kubeconfig", path(p));
        }
        if let Some(s) = &self.api_servers {
            push("api-servers", s.clone());
        }
        push("pod-manifest-path", path(&self.pod_manifest_path));
        if let Some(s) = &self.cluster_dns {
            push("cluster-dns", s.clone());
        }
        if let Some(s) = &self.cluster_domain {
            push("cluster-domain", s.clone());
        }
        if self.resolv_conf != d.resolv_conf {
            push("resolv-conf", path(&self.resolv_conf));
        }
        push("allow-privileged", self.allow_privileged.to_string());
        push("v", self.verbosity.to_string());
        // The rest, in `--help` order.
        if !self.serve_cluster_dns {
            push("serve-cluster-dns", "false".into());
        }
        if self.proxy_mode != d.proxy_mode {
            push("proxy-mode", self.proxy_mode.clone());
        }
        if let Some(s) = &self.cluster_cidr {
            push("cluster-cidr", s.clone());
        }
        if let Some(s) = &self.pod_cidr {
            push("pod-cidr", s.clone());
        }
        for r in &self.insecure_registry {
            push("insecure-registry", r.clone());
        }
        for m in &self.registry_mirror {
            push("registry-mirror", m.to_string());
        }
        for r in &self.registry_mirror_exclusive {
            push("registry-mirror-exclusive", r.clone());
        }
        if let Some(p) = &self.image_pull_netns {
            push("image-pull-netns", path(p));
        }
        if let Some(p) = &self.registry_config {
            push("registry-config", path(p));
        }
        let mut num = |flag: &str, v: u64, default: u64| {
            if v != default {
                push(flag, v.to_string());
            }
        };
        num("sync-period-ms", self.sync_period_ms, d.sync_period_ms);
        num(
            "restart-backoff-ms",
            self.restart_backoff_ms,
            d.restart_backoff_ms,
        );
        num("max-backoff-ms", self.max_backoff_ms, d.max_backoff_ms);
        num(
            "container-log-max-size",
            self.container_log_max_size,
            d.container_log_max_size,
        );
        num(
            "container-log-max-files",
            self.container_log_max_files as u64,
            d.container_log_max_files as u64,
        );
        for l in &self.node_labels {
            push("node-labels", l.to_string());
        }
        for t in &self.register_with_taints {
            push("register-with-taints", t.to_string());
        }
        for m in &self.host_path_mount {
            push("host-path-mount", m.to_string());
        }
        if let Some(s) = &self.hostname_override {
            push("hostname-override", s.clone());
        }
        if let Some(s) = &self.node_ip {
            push("node-ip", s.clone());
        }
        let mut num = |flag: &str, v: u64, default: u64| {
            if v != default {
                push(flag, v.to_string());
            }
        };
        num(
            "node-status-update-frequency",
            self.node_status_update_frequency,
            d.node_status_update_frequency,
        );
        num("sync-frequency", self.sync_frequency, d.sync_frequency);
        num(
            "kubelet-port",
            self.kubelet_port.into(),
            d.kubelet_port.into(),
        );
        if let Some(ip) = &self.address {
            push("address", ip.to_string());
        }
        if let Some(p) = &self.client_ca_file {
            push("client-ca-file", path(p));
        }
        if let Some(p) = &self.tls_cert_file {
            push("tls-cert-file", path(p));
        }
        if let Some(p) = &self.tls_private_key_file {
            push("tls-private-key-file", path(p));
        }
        if let Some(p) = &self.bootstrap_kubeconfig {
            push("bootstrap-kubeconfig", path(p));
        }
        if let Some(p) = &self.cert_dir {
            push("cert-dir", path(p));
        }
        if self.rotate_certificates {
            push("rotate-certificates", "true".into());
        }
        if self.rotate_server_certificates {
            push("rotate-server-certificates", "true".into());
        }
        if self.authorization_mode != d.authorization_mode {
            push("authorization-mode", self.authorization_mode.clone());
        }
        if self.authentication_token_webhook {
            push("authentication-token-webhook", "true".into());
        }
        if self.approve_kubelet_serving_csrs {
            push("approve-kubelet-serving-csrs", "true".into());
        }
        a
    }
}
