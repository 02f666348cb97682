//! `rktup controlplane`.

use clap::Args;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

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
    /// Service cluster IP range (SERVICE_CLUSTER_IP_RANGE); two, comma-separated, one per IP
    /// family, make a dual-stack cluster (kube-apiserver's --service-cluster-ip-range).
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
    /// Addresses for LoadBalancer Services, as a CIDR or FIRST-LAST (one per IP family,
    /// comma-separated, on a dual-stack cluster); without it they stay pending.
    #[arg(long, value_name = "CIDR|FIRST-LAST")]
    pub load_balancer_ip_range: Option<String>,
    /// The cluster DNS address (DNS_SERVER_IP): kube-system/kube-dns is kept on it.
    #[arg(long, value_name = "IP")]
    pub cluster_dns_ip: Option<std::net::Ipv4Addr>,
    /// Longest lifetime of certificates the CSR signer issues (kube-controller-manager's flag;
    /// Go duration such as 8760h0m0s, 30m, 90s).
    #[arg(long, value_name = "DURATION", value_parser = parse_go_duration, default_value = "8760h0m0s")]
    pub cluster_signing_duration: std::time::Duration,
    /// Verify kubelets' serving certificates against this CA file (kube-apiserver's flag);
    /// without it any serving certificate is accepted.
    #[arg(long, value_name = "FILE")]
    pub kubelet_certificate_authority: Option<std::path::PathBuf>,
    /// Verify kubelets' serving certificates against this control plane's own CA (the one in
    /// DATA_DIR/pki, which signs the kubelet-serving CSRs); what `rktup local up` uses, since the
    /// CA file does not exist before the first start.
    #[arg(long, conflicts_with = "kubelet_certificate_authority")]
    pub verify_kubelet_serving_certs: bool,
}

/// A Go `time.Duration` string of hours, minutes and seconds (`8760h0m0s`, `30m`, `90s`).
fn parse_go_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("invalid duration {s:?}: want e.g. 8760h0m0s, 30m or 90s");
    let (mut total, mut num) = (0u64, String::new());
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
            continue;
        }
        let unit = match ch {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

static TERM: AtomicBool = AtomicBool::new(false);
static TERM_SIGNAL: AtomicI32 = AtomicI32::new(0);
static TERM_SENDER: AtomicI32 = AtomicI32::new(0);

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

fn install_term_handler() {
    // SAFETY: the handler only stores to atomics.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_term as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

pub fn run_controlplane(args: ControlPlaneArgs) -> anyhow::Result<()> {
    install_term_handler();
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
        if args.verify_kubelet_serving_certs {
            builder = builder.verify_kubelet_serving_certs(true);
        }
        if let Some(f) = &args.kubelet_certificate_authority {
            let pem = std::fs::read_to_string(f)
                .with_context(|| format!("failed to read {}", f.display()))?;
            builder = builder.kubelet_certificate_authority(pem);
        }
        let handle = builder
            .data_dir(&args.data_dir)
            .bind(std::net::SocketAddr::new(ip, args.secure_port))
            .service_cidr(args.service_cluster_ip_range)
            .service_node_port_range(args.service_node_port_range)
            .csr_signing_duration(args.cluster_signing_duration)
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
        // Polled rather than awaited: tokio's signal streams do not tell who sent the signal,
        // and a control plane that exits on a stray SIGTERM must log its sender.
        while !TERM.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        tracing::info!("received {}: shutting down", term_cause());
        handle.shutdown().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn go_durations() {
        use std::time::Duration;
        let p = super::parse_go_duration;
        assert_eq!(p("8760h0m0s"), Ok(Duration::from_secs(8760 * 3600)));
        assert_eq!(p("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(p("1h30m5s"), Ok(Duration::from_secs(5405)));
        assert!(p("10").is_err() && p("1d").is_err() && p("0s").is_err() && p("").is_err());
    }
}
