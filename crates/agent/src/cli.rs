//! Command-line entry points the thin `rktup` binary dispatches to.

use crate::sync::{log, Agent};
use clap::Args;
use rktup_runtime::pod::Stage1Flavor;
use rktup_runtime::runtime::{NetworkMode, Runtime, RuntimeConfig};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `rktup agent`: the node agent (kubelet + rkt api-service) in the foreground.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Directory holding the agent's state (images, pods) and the rkt api-service's unix
    /// socket `<root-dir>/api.sock` (root only, every route).
    #[arg(long, default_value = rktup_runtime::cli::DEFAULT_ROOT_DIR)]
    pub root_dir: PathBuf,
    /// Static pod manifests (kubelet's --pod-manifest-path; the seed's --config).
    #[arg(long, alias = "config", default_value = "/etc/kubernetes/manifests")]
    pub pod_manifest_path: PathBuf,
    /// Also serve the rkt api-service read-only (pod list/status/logs, image list) on this
    /// loopback HOST:PORT (kubelet's flag; the seed used localhost:15441). Not given: the unix
    /// socket only.
    #[arg(long, value_name = "HOST:PORT")]
    pub rkt_api_endpoint: Option<String>,
    /// Node-wide stage1: coreos.com/rkt/stage1-coreos (default), stage1-fly, stage1-kvm
    /// (also KUBE_RKT_STAGE1_IMAGE or RKT_STAGE1_IMAGE).
    #[arg(long, env = "KUBE_RKT_STAGE1_IMAGE")]
    pub rkt_stage1_image: Option<String>,
    /// "" (rkt's contained network), cni, or kubenet.
    #[arg(long, default_value = "")]
    pub network_plugin: String,
    /// Where CNI plugin binaries are searched first (then /usr/lib/cni, /opt/cni/bin).
    #[arg(long)]
    pub network_plugin_dir: Option<PathBuf>,
    /// CNI configs (default /etc/rkt/net.d for the contained network, /etc/cni/net.d for cni).
    #[arg(long)]
    pub cni_conf_dir: Option<PathBuf>,
    /// The node's pod CIDR (kubenet).
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// Registries reached over plain HTTP (host:port), repeatable.
    #[arg(long = "insecure-registry")]
    pub insecure_registry: Vec<String>,
    /// Network namespace images are pulled from, e.g. the host's for a local cluster's nodes
    /// (which live in namespaces of their own), so registries on the host's loopback work.
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
    /// Log verbosity; >= 4 logs every runtime step (also LOG_LEVEL).
    #[arg(long = "v", env = "LOG_LEVEL", default_value_t = 2)]
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
    /// Node name reported to pods (spec.nodeName); default: the hostname.
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// The node's IP, reported to pods as status.hostIP (downward API env).
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
    pub address: Option<std::net::IpAddr>,
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
}

static TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERM.store(true, Ordering::SeqCst);
}

pub fn config_from_args(a: &AgentArgs) -> anyhow::Result<RuntimeConfig> {
    let stage1_name = a
        .rkt_stage1_image
        .clone()
        .or_else(|| std::env::var("RKT_STAGE1_IMAGE").ok())
        .filter(|s| !s.is_empty());
    let stage1 = match &stage1_name {
        None => Stage1Flavor::Coreos,
        Some(n) => Stage1Flavor::parse(n).ok_or_else(|| {
            anyhow::anyhow!("unknown --rkt-stage1-image {n:?} (known: coreos.com/rkt/stage1-coreos, stage1-fly, stage1-kvm)")
        })?,
    };
    let mut cfg = RuntimeConfig::new(&a.root_dir)
        .with_stage1(stage1)
        .with_network_mode(NetworkMode::parse(&a.network_plugin)?)
        .with_insecure_registries(a.insecure_registry.clone())
        .with_allow_privileged(a.allow_privileged)
        .with_backoff_ms(a.restart_backoff_ms, a.max_backoff_ms)
        .with_verbosity(a.verbosity)
        .with_log_rotation(a.container_log_max_size, a.container_log_max_files);
    if let Some(d) = &a.cni_conf_dir {
        cfg = cfg.with_cni_conf_dir(d);
    }
    if let Some(d) = &a.network_plugin_dir {
        cfg = cfg.with_network_plugin_dir(d);
    }
    if let Some(c) = &a.pod_cidr {
        cfg = cfg.with_pod_cidr(c);
    }
    if let Some(n) = &a.hostname_override {
        cfg.node_name = n.clone();
    }
    cfg.registry_config = a.registry_config.clone();
    cfg.image_pull_netns = a.image_pull_netns.clone();
    cfg.host_ip = a.node_ip.clone();
    Ok(cfg)
}

pub fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    let cfg = config_from_args(&args)?;
    let scfg = crate::kubelet::server::ServerConfig {
        port: args.kubelet_port,
        address: args.address,
        client_ca_file: args.client_ca_file.clone(),
        tls_cert_file: args.tls_cert_file.clone(),
        tls_private_key_file: args.tls_private_key_file.clone(),
        cert_dir: args.root_dir.join("pki"),
        kubeconfig: args.kubeconfig.clone(),
        node_name: cfg.node_name.clone(),
        node_ip: args.node_ip.clone(),
        verbosity: args.verbosity,
    };
    // Refuse at once (not later, in the kubelet port's thread) a key readable by others.
    crate::kubelet::server::check_key_files(&scfg)?;
    std::fs::create_dir_all(&args.root_dir)?;
    // SAFETY: handlers only store to an atomic.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_term as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    let tcp = match &args.rkt_api_endpoint {
        Some(e) => Some(rktup_runtime::api::bind(e)?),
        None => None,
    };
    let socket = rktup_runtime::api::socket_path(&args.root_dir);
    let unix = rktup_runtime::api::bind_unix(&socket)?;
    let socket_ino = std::fs::metadata(&socket).ok().map(|m| m.ino());
    let rt = Runtime::new(cfg.clone())?;
    let api_rt = Arc::new(Runtime::new(cfg)?);
    rktup_runtime::api::serve(
        rktup_runtime::api::Listeners {
            unix,
            socket: socket.clone(),
            tcp,
        },
        api_rt,
    )?;
    let node_name = rt.cfg.node_name.clone();
    let mut agent = Agent::new(rt, args.verbosity);
    let adopted = agent.adopt();
    let mut pod_store = None;
    if let Some(kubeconfig) = &args.kubeconfig {
        let kcfg = crate::kubelet::KubeletConfig {
            kubeconfig: kubeconfig.clone(),
            api_server: args.api_servers.clone(),
            node_name: node_name.clone(),
            node_ip: args.node_ip.clone(),
            pod_cidr: args.pod_cidr.clone(),
            heartbeat: Duration::from_secs(args.node_status_update_frequency.max(1)),
            verbosity: args.verbosity,
            kubelet_port: args.kubelet_port,
            sync_frequency: Duration::from_secs(args.sync_frequency.max(1)),
        };
        let (reader, writer) = kube::runtime::reflector::store();
        pod_store = Some(reader);
        crate::kubelet::spawn(kcfg, agent.rt.clone(), writer, &TERM)?;
    }
    crate::kubelet::server::spawn(scfg, agent.rt.clone(), pod_store, &TERM)?;
    log(&format!(
        "node agent up: root {}, manifests {}, api-service {}{}, {adopted} pod(s) re-adopted",
        args.root_dir.display(),
        args.pod_manifest_path.display(),
        socket.display(),
        args.rkt_api_endpoint
            .as_deref()
            .map(|e| format!(" (read-only also on {e})"))
            .unwrap_or_default()
    ));
    let period = Duration::from_millis(args.sync_period_ms.max(50));
    while !TERM.load(Ordering::SeqCst) {
        let t = Instant::now();
        agent.sync(&args.pod_manifest_path);
        while t.elapsed() < period && !TERM.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            rktup_runtime::runtime::reap_children();
        }
    }
    // Pods outlive the agent: nothing is stopped here. The socket goes (if it is still ours).
    if socket_ino.is_some() && std::fs::metadata(&socket).ok().map(|m| m.ino()) == socket_ino {
        let _ = std::fs::remove_file(&socket);
    }
    log("SIGTERM: agent exiting; pods keep running");
    Ok(())
}
