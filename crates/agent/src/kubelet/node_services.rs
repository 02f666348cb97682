//! The node's share of cluster networking, started with the kubelet half (it needs the API):
//! the service proxy (`rktup-proxy`, kube-proxy's nftables mode) and cluster DNS (`rktup-dns`,
//! CoreDNS's kubernetes plugin) answering on `--cluster-dns` from this node. The DNS address is
//! put on the node's loopback so pods' queries to it are delivered here (NodeLocal DNSCache's
//! trick); the proxy is told to leave that address alone. Cloud and local nodes run the same code:
//! a local node's agent simply lives in the node's network namespace.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use tracing::{error, info};

/// What the node services need from the agent's flags.
#[derive(Debug, Clone)]
pub struct NodeServicesConfig {
    pub node_name: String,
    pub node_ip: Option<IpAddr>,
    /// Every address of the node (a dual-stack node's IPv6 one too): NodePorts answer on them.
    pub node_ips: Vec<IpAddr>,
    /// `--cluster-dns`: where pods send queries; served here when `serve_dns`.
    pub cluster_dns: Option<IpAddr>,
    pub cluster_domain: String,
    pub serve_dns: bool,
    /// `--proxy-mode=nftables` (false: `none`).
    pub proxy: bool,
    /// This node's static pods run the cluster's kube-controller-manager without a cloud
    /// provider (a cloud master): the proxy says on pending LoadBalancer Services that nothing
    /// assigns their address (`rktup_proxy::lb_notice`).
    pub load_balancer_notice: bool,
    pub cluster_cidrs: Vec<ipnet::IpNet>,
    /// Where names outside the cluster go (kubelet's `--resolv-conf`; None: `--resolv-conf=""`,
    /// no upstreams).
    pub resolv_conf: Option<PathBuf>,
    /// The network namespace those resolvers are asked from (a local node: the host's, as for
    /// its image pulls); `None`: the agent's own.
    pub upstream_netns: Option<PathBuf>,
}

/// The running proxy and DNS server; dropping it leaves them running until the process ends,
/// `shutdown` stops them and takes the DNS address and the proxy's table away.
pub struct NodeServices {
    proxy: Option<rktup_proxy::ServiceProxy>,
    dns: Option<(rktup_dns::DnsServer, Option<IpAddr>)>,
}

/// The nftables table the agent's proxy owns (one per network namespace, replaced atomically).
pub const PROXY_TABLE: &str = "rktup-proxy";

/// Whether the static pods in `manifest_dir` run kube-controller-manager without a cloud provider
/// and no cloud-controller-manager (a cloud master as rktup renders it): then nothing assigns
/// LoadBalancer addresses, and this node's proxy says so on each pending one.
pub fn load_balancer_notice(manifest_dir: &std::path::Path) -> bool {
    let static_pods: Vec<_> = crate::sync::read_manifests(manifest_dir)
        .into_iter()
        .filter_map(|m| m.pod.ok())
        .collect();
    rktup_proxy::lb_notice::no_service_controller(&static_pods)
}

/// Start what the configuration asks for. A part that fails to start is logged and left out:
/// pods still run (as kubelet runs pods without a working kube-proxy or CoreDNS).
pub async fn start(client: kube::Client, cfg: &NodeServicesConfig) -> NodeServices {
    let mut out = NodeServices {
        proxy: None,
        dns: None,
    };
    let dns_ip = cfg.cluster_dns.filter(|_| cfg.serve_dns);
    if cfg.proxy {
        let pcfg = rktup_proxy::ProxyConfig {
            node_name: cfg.node_name.clone(),
            node_ips: cfg.node_ips.clone(),
            cluster_cidrs: cfg.cluster_cidrs.clone(),
            table: PROXY_TABLE.to_string(),
            skip_cluster_ips: dns_ip.into_iter().collect(),
            load_balancer_notice: cfg.load_balancer_notice,
        };
        match rktup_proxy::run(client.clone(), pcfg).await {
            Ok(p) => {
                info!("service proxy: nftables table inet {PROXY_TABLE} programmed");
                out.proxy = Some(p);
            }
            Err(e) => error!("service proxy: not started: {e}"),
        }
    }
    if let Some(ip) = dns_ip {
        match start_dns(client, cfg, ip).await {
            Ok(d) => {
                info!("cluster DNS: answering {} on {ip}:53", cfg.cluster_domain);
                out.dns = Some(d);
            }
            Err(e) => error!("cluster DNS: not started on {ip}: {e}"),
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("adding {ip} to the loopback: {source}")]
    Address { ip: IpAddr, source: std::io::Error },
    #[error(transparent)]
    Dns(#[from] rktup_dns::DnsError),
}

async fn start_dns(
    client: kube::Client,
    cfg: &NodeServicesConfig,
    ip: IpAddr,
) -> Result<(rktup_dns::DnsServer, Option<IpAddr>), StartError> {
    // The address may already be local (a restarted agent, or a host that has it): only one
    // we added is removed again.
    let added = if loopback_addr::is_local(ip) {
        None
    } else {
        loopback_addr::add(ip).map_err(|source| StartError::Address { ip, source })?;
        Some(ip)
    };
    let resolv = cfg
        .resolv_conf
        .as_deref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let upstreams = rktup_dns::upstreams_from_resolv_conf(&resolv)
        .into_iter()
        // Our own address would loop.
        .filter(|u| u.ip() != ip)
        .collect();
    let dcfg = rktup_dns::DnsConfig {
        listen: vec![SocketAddr::new(ip, 53)],
        cluster_domain: cfg.cluster_domain.clone(),
        upstreams,
        upstream_netns: cfg.upstream_netns.clone(),
    };
    match rktup_dns::serve(client, dcfg).await {
        Ok(s) => Ok((s, added)),
        Err(e) => {
            if let Some(a) = added {
                let _ = loopback_addr::remove(a);
            }
            Err(e.into())
        }
    }
}

impl NodeServices {
    pub async fn shutdown(self) {
        if let Some(p) = self.proxy {
            p.shutdown().await;
        }
        if let Some((d, added)) = self.dns {
            d.shutdown().await;
            if let Some(ip) = added {
                if let Err(e) = loopback_addr::remove(ip) {
                    error!("cluster DNS: removing {ip} from the loopback: {e}");
                }
            }
        }
    }
}

/// A /32 (/128) on `lo` over rtnetlink: the kernel then delivers packets for it to this host.
mod loopback_addr {
    use std::io;
    use std::net::IpAddr;

    pub fn is_local(ip: IpAddr) -> bool {
        // Binding succeeds only for a local address (no IP_FREEBIND).
        std::net::UdpSocket::bind((ip, 0)).is_ok()
    }

    pub fn add(ip: IpAddr) -> io::Result<()> {
        request(libc::RTM_NEWADDR, libc::NLM_F_CREATE | libc::NLM_F_EXCL, ip)
    }

    pub fn remove(ip: IpAddr) -> io::Result<()> {
        request(libc::RTM_DELADDR, 0, ip)
    }

    fn push_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
        let len = 4 + data.len();
        buf.extend_from_slice(&(len as u16).to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(data);
        while !buf.len().is_multiple_of(4) {
            buf.push(0);
        }
    }

    fn request(kind: u16, extra_flags: libc::c_int, ip: IpAddr) -> io::Result<()> {
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        if lo == 0 {
            return Err(io::Error::last_os_error());
        }
        let (family, prefix, bytes) = match ip {
            IpAddr::V4(a) => (libc::AF_INET, 32u8, a.octets().to_vec()),
            IpAddr::V6(a) => (libc::AF_INET6, 128u8, a.octets().to_vec()),
        };
        // nlmsghdr (16) + ifaddrmsg (8) + attributes.
        let mut msg = vec![0u8; 16];
        msg.push(family as u8);
        msg.push(prefix);
        msg.push(0); // flags
        msg.push(libc::RT_SCOPE_HOST);
        msg.extend_from_slice(&lo.to_ne_bytes());
        push_attr(&mut msg, libc::IFA_LOCAL, &bytes);
        push_attr(&mut msg, libc::IFA_ADDRESS, &bytes);
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        msg[4..6].copy_from_slice(&kind.to_ne_bytes());
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | extra_flags) as u16;
        msg[6..8].copy_from_slice(&flags.to_ne_bytes());
        msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
        // SAFETY: plain socket calls on buffers we own; the fd is closed on every path.
        unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let r = (|| {
                if libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                let mut buf = [0u8; 4096];
                let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                // The ack: nlmsghdr of type NLMSG_ERROR, then the (negated) errno.
                if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == libc::NLMSG_ERROR as u16 {
                    let errno = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                }
                Ok(())
            })();
            libc::close(fd);
            r
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// In a network namespace of its own (a thread unshares it; no `unshare` or `ip`
        /// binary), so the host is not touched: the address becomes local, then goes.
        #[test]
        fn address_on_loopback_comes_and_goes() {
            if !rktup_testkit::can_run_as_root(
                "address_on_loopback_comes_and_goes",
                "a network namespace",
            ) {
                return;
            }
            let r = std::thread::spawn(move || -> io::Result<(bool, bool, bool)> {
                // SAFETY: unshares only this thread's network namespace; the thread ends here.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                lo_up()?;
                let ip: IpAddr = "10.96.0.10".parse().map_err(io::Error::other)?;
                let before = is_local(ip);
                add(ip)?;
                let during = is_local(ip);
                remove(ip)?;
                Ok((before, during, is_local(ip)))
            })
            .join();
            let (before, during, after) = r.expect("thread").expect("netlink");
            assert!(!before && during && !after, "{before} {during} {after}");
        }

        /// `ip link set lo up` (SIOCSIFFLAGS) in the calling thread's namespace.
        fn lo_up() -> io::Result<()> {
            // SAFETY: a datagram socket used for two interface ioctls on a zeroed ifreq naming
            // "lo"; closed on every path.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let mut req: libc::ifreq = std::mem::zeroed();
                for (i, b) in b"lo".iter().enumerate() {
                    req.ifr_name[i] = *b as libc::c_char;
                }
                let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
                if r == 0 {
                    req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
                    r = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
                }
                let e = io::Error::last_os_error();
                libc::close(fd);
                if r != 0 {
                    return Err(e);
                }
            }
            Ok(())
        }
    }
}
