//! `rktup controlplane`.

use clap::Args;

#[derive(Debug, Args)]
pub struct ControlPlaneArgs {
    /// Where the store, PKI and admin.kubeconfig live.
    #[arg(long)]
    pub data_dir: std::path::PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: String,
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    /// More addresses (IP:PORT) to serve on, e.g. a local cluster's bridge address; repeatable.
    #[arg(long = "also-bind", value_name = "IP:PORT")]
    pub also_bind: Vec<std::net::SocketAddr>,
    /// Service cluster IP range (SERVICE_CLUSTER_IP_RANGE).
    #[arg(long, env = "SERVICE_CLUSTER_IP_RANGE", default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,
    /// Seconds without a node Lease renewal before the node is NotReady.
    #[arg(long, default_value_t = 40)]
    pub node_monitor_grace_period: u64,
    /// Log verbosity, kube-apiserver's glog scale: 3 adds request detail (also LOG_LEVEL).
    #[arg(long = "v", env = "LOG_LEVEL", default_value_t = 2)]
    pub verbosity: u8,
    /// Port range for NodePort Services (kube-apiserver's flag).
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// Addresses for LoadBalancer Services, as a CIDR or FIRST-LAST; without it they stay pending.
    #[arg(long, value_name = "CIDR|FIRST-LAST")]
    pub load_balancer_ip_range: Option<String>,
    /// The cluster DNS address (DNS_SERVER_IP): kube-system/kube-dns is kept on it.
    #[arg(long, value_name = "IP")]
    pub cluster_dns_ip: Option<std::net::Ipv4Addr>,
}

pub fn run_controlplane(args: ControlPlaneArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let ip: std::net::IpAddr = args
        .bind_address
        .parse()
        .with_context(|| format!("failed to parse --bind-address {}", args.bind_address))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    rt.block_on(async move {
        let mut builder = crate::ControlPlane::builder();
        for a in &args.also_bind {
            builder = builder.also_bind(*a);
        }
        if let Some(r) = &args.load_balancer_ip_range {
            builder = builder.load_balancer_ip_range(r);
        }
        if let Some(ip) = args.cluster_dns_ip {
            builder = builder.cluster_dns_ip(ip);
        }
        let handle = builder
            .data_dir(&args.data_dir)
            .bind(std::net::SocketAddr::new(ip, args.secure_port))
            .service_cidr(args.service_cluster_ip_range)
            .service_node_port_range(args.service_node_port_range)
            .node_monitor_grace(std::time::Duration::from_secs(
                args.node_monitor_grace_period,
            ))
            .start()
            .await
            .context("failed to start the control plane")?;
        tracing::info!(
            "control plane serving on {}; kubectl --kubeconfig {}",
            handle.server_url(),
            handle.admin_kubeconfig().display()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("failed to install SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        handle.shutdown().await;
        Ok(())
    })
}
