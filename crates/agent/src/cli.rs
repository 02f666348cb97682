//! Command-line entry points the thin `rktup` binary dispatches to.

use crate::sync::Agent;
use rktup_node_contract::AgentConfig;
use rktup_runtime::runtime::{Runtime, RuntimeConfig};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

/// `rktup agent`'s flags: the node contract's [`AgentConfig`] (every flag, typed; rktup renders
/// nodes' command lines from the same struct with `to_args()`).
pub type AgentArgs = AgentConfig;

static TERM: AtomicBool = AtomicBool::new(false);
/// The stop signal and its sender (SA_SIGINFO), logged on the way out: an agent that exits
/// on a signal nobody meant to send must say who sent it.
static TERM_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
static TERM_SENDER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_term(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; atomics only.
    let sender = unsafe { info.as_ref().map(|i| i.si_pid()).unwrap_or(0) };
    TERM_SENDER.store(sender, Ordering::SeqCst);
    TERM_SIGNAL.store(sig, Ordering::SeqCst);
    TERM.store(true, Ordering::SeqCst);
}

/// "SIGTERM from pid 42 (bash)", read when the signal is handled (the sender may be gone).
fn term_cause() -> String {
    let sig = match TERM_SIGNAL.load(Ordering::SeqCst) {
        libc::SIGINT => "SIGINT",
        _ => "SIGTERM",
    };
    let pid = TERM_SENDER.load(Ordering::SeqCst);
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| format!(" ({})", c.trim()))
        .unwrap_or_default();
    format!("{sig} from pid {pid}{comm}")
}

pub fn config_from_args(a: &AgentArgs) -> anyhow::Result<RuntimeConfig> {
    // The seed's RKT_STAGE1_IMAGE (KUBE_RKT_STAGE1_IMAGE and LOG_LEVEL were read by clap).
    let a = &a.clone().with_env_fallbacks(|k| std::env::var(k).ok())?;
    let mut cfg = RuntimeConfig::new(&a.root_dir)
        .with_stage1(a.stage1())
        .with_network_mode(a.network_plugin)
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
    cfg.registry_mirrors = a.registry_mirror.clone();
    cfg.registry_mirror_exclusive = a.registry_mirror_exclusive.clone();
    cfg.host_path_mounts = a.host_path_mount.clone();
    cfg.image_pull_netns = a.image_pull_netns.clone();
    cfg.host_ip = primary_node_ip(a);
    // Pods' resolv.conf, hostname and hosts file (kubelet's --cluster-dns/-domain, --resolv-conf).
    cfg.dns = rktup_runtime::manifest::dns::NodeDns::from_flags(
        a.cluster_dns.as_deref(),
        a.cluster_domain.as_deref(),
        &a.resolv_conf,
        primary_node_ip(a).as_deref(),
    )?;
    Ok(cfg)
}

/// The service proxy's and cluster DNS's settings from the agent's flags. The DNS address,
/// domain and resolv.conf are the ones pods are given (`dns`, parsed once by the runtime's
/// `NodeDns::from_flags`); a malformed --node-ip or --cluster-cidr fails the start, naming it.
fn node_services_config(
    a: &AgentArgs,
    dns: &rktup_runtime::manifest::dns::NodeDns,
    node_name: &str,
) -> anyhow::Result<crate::kubelet::node_services::NodeServicesConfig> {
    fn parse<T: std::str::FromStr>(
        flag: &str,
        v: &Option<String>,
        what: &str,
    ) -> anyhow::Result<Option<T>> {
        v.as_deref()
            .map(|s| {
                s.trim()
                    .parse::<T>()
                    .map_err(|_| anyhow::anyhow!("--{flag}={s:?} is not {what}"))
            })
            .transpose()
    }
    /// Each comma-separated item of a list flag (one value per IP family), parsed.
    fn parse_list<T: std::str::FromStr>(
        flag: &str,
        items: &[String],
        what: &str,
    ) -> anyhow::Result<Vec<T>> {
        items
            .iter()
            .map(|v| {
                v.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "--{flag}={v:?} is not {what} (or two, IPv4 and IPv6, comma-separated)"
                    )
                })
            })
            .collect()
    }
    Ok(crate::kubelet::node_services::NodeServicesConfig {
        node_name: node_name.to_string(),
        node_ip: parse("node-ip", &primary_node_ip(a), "an IP address")?,
        node_ips: parse_list("node-ip", &list(&a.node_ip), "an IP address")?,
        // kubelet takes a list; the first address is the one pods ask first.
        cluster_dns: dns.cluster_dns.first().copied(),
        cluster_domain: if dns.cluster_domain.is_empty() {
            "cluster.local".into()
        } else {
            dns.cluster_domain.clone()
        },
        serve_dns: a.serve_cluster_dns,
        proxy: a.proxy_mode == "nftables",
        load_balancer_notice: crate::kubelet::node_services::load_balancer_notice(
            &a.pod_manifest_path,
        ),
        // kube-proxy's --cluster-cidr: one CIDR, or one per family (dual-stack).
        cluster_cidrs: parse_list(
            "cluster-cidr",
            &list(&a.cluster_cidr),
            "a CIDR such as 10.244.0.0/16",
        )?,
        resolv_conf: dns.resolv_conf.clone(),
        // The namespace images are pulled from is where this machine's resolvers answer too.
        upstream_netns: a.image_pull_netns.clone(),
    })
}

/// The items of a comma-separated flag value (`--node-ip`, `--cluster-cidr`: one per IP family on
/// a dual-stack node), trimmed.
fn list(v: &Option<String>) -> Vec<String> {
    v.iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .collect()
}

/// The first address of `--node-ip` (a dual-stack node lists its IPv6 one after a comma):
/// the one pods get as `status.hostIP` and the kubelet port's certificate names.
fn primary_node_ip(a: &AgentArgs) -> Option<String> {
    list(&a.node_ip).into_iter().next()
}

pub fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    let cfg = config_from_args(&args)?;
    let certs = crate::kubelet::CertConfig {
        bootstrap_kubeconfig: args.bootstrap_kubeconfig.clone(),
        cert_dir: args.cert_dir(),
        rotate_client: args.rotate_certificates,
        client_slot: crate::kubelet::certificate::CertSlot::new(),
        // Given serving files win (kubelet: --tls-cert-file disables server rotation).
        serving_slot: (args.rotate_server_certificates && args.tls_cert_file.is_none())
            .then(crate::kubelet::certificate::CertSlot::new),
    };
    if args.bootstrap_kubeconfig.is_some() && args.kubeconfig.is_none() {
        anyhow::bail!("--bootstrap-kubeconfig needs --kubeconfig (the file it writes)");
    }
    let scfg = crate::kubelet::server::ServerConfig {
        port: args.kubelet_port,
        address: args.address,
        client_ca_file: args.client_ca_file.clone(),
        tls_cert_file: args.tls_cert_file.clone(),
        tls_private_key_file: args.tls_private_key_file.clone(),
        cert_dir: args.root_dir.join("pki"),
        kubeconfig: args.kubeconfig.clone(),
        node_name: cfg.node_name.clone(),
        node_ip: primary_node_ip(&args),
        serving_slot: certs.serving_slot.clone(),
        webhook: (args.authorization_mode == "Webhook").then(|| {
            crate::kubelet::server::authz::WebhookConfig {
                kubeconfig: args.kubeconfig.clone(),
                api_server: args.api_servers.clone(),
                client_slot: certs.slot().cloned(),
            }
        }),
        token_webhook: args.authentication_token_webhook.then(|| {
            crate::kubelet::server::authz::WebhookConfig {
                kubeconfig: args.kubeconfig.clone(),
                api_server: args.api_servers.clone(),
                client_slot: certs.slot().cloned(),
            }
        }),
        wait_for_kubeconfig: args.bootstrap_kubeconfig.is_some(),
    };
    // Refuse at once (not later, in the kubelet port's thread) a key readable by others.
    crate::kubelet::server::check_key_files(&scfg)?;
    std::fs::create_dir_all(&args.root_dir)?;
    // SAFETY: handlers only store to an atomic.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_term as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
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
    let mut agent = Agent::new(rt)?;
    let adopted = agent.adopt();
    let mut pod_store = None;
    if let Some(kubeconfig) = &args.kubeconfig {
        let kcfg = crate::kubelet::KubeletConfig {
            kubeconfig: kubeconfig.clone(),
            api_server: args.api_servers.clone(),
            node_name: node_name.clone(),
            node_ip: primary_node_ip(&args),
            extra_node_ips: list(&args.node_ip).into_iter().skip(1).collect(),
            pod_cidr: args.pod_cidr.clone(),
            labels: args.node_labels.clone(),
            taints: args.register_with_taints.clone(),
            heartbeat: Duration::from_secs(args.node_status_update_frequency.max(1)),
            kubelet_port: args.kubelet_port,
            sync_frequency: Duration::from_secs(args.sync_frequency.max(1)),
            services: Some(node_services_config(&args, &agent.rt.cfg.dns, &node_name)?),
            certs: Some(certs),
            approve_serving_csrs: args.approve_kubelet_serving_csrs,
        };
        let (reader, writer) = kube::runtime::reflector::store();
        pod_store = Some(reader);
        crate::kubelet::spawn(kcfg, agent.workers(), writer, &TERM)?;
    }
    crate::kubelet::server::spawn(scfg, agent.rt.clone(), pod_store, &TERM)?;
    info!(
        "node agent up: root {}, manifests {}, api-service {}{}, {adopted} pod(s) re-adopted",
        args.root_dir.display(),
        args.pod_manifest_path.display(),
        socket.display(),
        args.rkt_api_endpoint
            .as_deref()
            .map(|e| format!(" (read-only also on {e})"))
            .unwrap_or_default()
    );
    let period = Duration::from_millis(args.sync_period_ms.max(50));
    while !TERM.load(Ordering::SeqCst) {
        let t = Instant::now();
        agent.sync(&args.pod_manifest_path);
        while t.elapsed() < period && !TERM.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            rktup_runtime::runtime::reap_children();
        }
    }
    info!("received {}: stopping", term_cause());
    // Pods outlive the agent: nothing is stopped here. The socket goes (if it is still ours).
    if socket_ino.is_some() && std::fs::metadata(&socket).ok().map(|m| m.ino()) == socket_ino {
        let _ = std::fs::remove_file(&socket);
    }
    info!("agent exiting; pods keep running");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_root_dir_is_the_rkt_commands_default() {
        assert_eq!(
            rktup_node_contract::DEFAULT_ROOT_DIR,
            rktup_runtime::cli::DEFAULT_ROOT_DIR
        );
    }
}
