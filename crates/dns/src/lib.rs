//! Cluster DNS for every node agent (issue 14 §2).
//!
//! A DNS server on the cluster DNS address with the semantics of CoreDNS's `kubernetes` plugin
//! as kubeadm configures it (`pods insecure`, reverse zones with fallthrough, TTL 5): Services,
//! headless endpoints, SRV for named ports, PTR, ExternalName CNAMEs and pod records are answered
//! from a watch cache of Services, EndpointSlices (discovery.k8s.io/v1) and Namespaces; every
//! other name goes to the node's upstream resolvers. The wire format and the UDP/TCP serving are
//! hickory's.
//!
//! - `cache.rs` — the pure record cache and the lookup rules (no IO; unit-tested).
//! - `watch.rs` — kube-rs watchers that keep the cache current.
//! - `forward.rs` — the upstream exchange (UDP, TCP on truncation).
//! - `handler.rs` — hickory's request handler: cache first, then upstream.
//! - `resolv.rs` — upstreams from a resolv.conf.

mod cache;
mod forward;
mod handler;
mod resolv;
mod watch;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

pub use resolv::upstreams_from_resolv_conf;

/// How long `serve` waits for the first complete list of Services, EndpointSlices and
/// Namespaces before giving up (an unreachable API server must not hang the agent forever).
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle TCP connections are closed after this long (CoreDNS's read timeout is of this order).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What the node's DNS server listens on and answers for.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// UDP and TCP on each (e.g. 10.0.0.10:53). Port 0 picks a free port (see `local_addrs`).
    pub listen: Vec<SocketAddr>,
    /// The cluster domain, e.g. "cluster.local" (DNS_DOMAIN, kubelet's --cluster-domain).
    pub cluster_domain: String,
    /// Where names outside the cluster go, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// The network namespace upstream queries are sent from (`/run/netns/...`), when the
    /// upstreams are reachable only from there: a local cluster's node lives in a namespace of
    /// its own, but this machine's resolvers (often on its loopback) answer in the host's, where
    /// the node also pulls images. `None`: this process's namespace.
    pub upstream_netns: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("invalid cluster domain {domain:?}: {reason}")]
    Domain { domain: String, reason: String },
    #[error("no listen address given")]
    NoListen,
    #[error("cannot bind DNS {proto} on {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the DNS caches did not sync within {0:?} ({1})")]
    Sync(Duration, String),
}

/// How often a UDP receive thread looks whether the server stops.
const UDP_STOP_CHECK: Duration = Duration::from_millis(250);

/// A running DNS server: listeners bound, caches being kept current by watches.
pub struct DnsServer {
    server: Server<handler::TcpHandler>,
    /// The watches.
    watches: Vec<JoinHandle<()>>,
    /// The UDP receive threads, and what tells them to end.
    udp: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    local: Vec<SocketAddr>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        // The UDP threads end within UDP_STOP_CHECK and close the sockets.
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("local", &self.local)
            .finish()
    }
}

/// Starts the DNS server: binds UDP and TCP on every listen address, starts the watches and
/// returns once their first lists are in the cache (so the first query is answered right).
pub async fn serve(client: kube::Client, cfg: DnsConfig) -> Result<DnsServer, DnsError> {
    if cfg.listen.is_empty() {
        return Err(DnsError::NoListen);
    }
    let cache = Arc::new(RwLock::new(cache::Cache::new(&cfg.cluster_domain)?));
    // Bind first so a taken address fails at once; serve only after the sync so that no query
    // is answered from an empty cache.
    let sockets = bind_all(&cfg.listen).await?;

    let (watches, synced) = watch::start(client, cache.clone());
    let why = match tokio::time::timeout(SYNC_TIMEOUT, synced).await {
        Ok(Ok(())) => None,
        Ok(Err(why)) => Some(why),
        Err(_) => Some(watch::pending(&cache)),
    };
    if let Some(why) = why {
        for w in &watches {
            w.abort();
        }
        return Err(DnsError::Sync(SYNC_TIMEOUT, why));
    }

    let handler = Arc::new(handler::Handler::new(
        cache,
        forward::Forwarder::new(cfg.upstreams.clone(), cfg.upstream_netns.clone()),
    ));
    let mut server = Server::new(handler::TcpHandler(handler.clone()));
    let mut local = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    let mut udp_threads = Vec::new();
    // One receive thread per UDP socket, blocking in recvfrom (handler::serve_udp says why).
    // Not one per core: every thread blocked on a socket wakes for each datagram, and a second
    // one cost throughput and doubled the median latency (BENCHMARKS.md).
    let rt = tokio::runtime::Handle::current();
    for (udp, tcp, addr) in sockets {
        let udp_err = |source| DnsError::Bind {
            proto: "udp",
            addr,
            source,
        };
        let udp = udp.into_std().map_err(udp_err)?;
        udp.set_nonblocking(false).map_err(udp_err)?;
        udp.set_read_timeout(Some(UDP_STOP_CHECK))
            .map_err(udp_err)?;
        let (udp, handler, rt, stop) = (Arc::new(udp), handler.clone(), rt.clone(), stop.clone());
        let t = std::thread::Builder::new()
            .name("dns-udp".into())
            .spawn(move || handler::serve_udp(udp, handler, rt, stop))
            .map_err(udp_err)?;
        udp_threads.push(t);
        server.register_listener(tcp, TCP_IDLE, 64);
        local.push(addr);
    }
    Ok(DnsServer {
        server,
        watches,
        udp: udp_threads,
        stop,
        local,
    })
}

async fn bind_all(
    listen: &[SocketAddr],
) -> Result<Vec<(UdpSocket, TcpListener, SocketAddr)>, DnsError> {
    let mut out = Vec::new();
    for addr in listen {
        out.push(bind_one(*addr).await?);
    }
    Ok(out)
}

/// UDP and TCP on one address. Port 0: TCP takes the port UDP got, so one address serves both,
/// as on :53; when another program holds that port for TCP, another port is picked.
async fn bind_one(addr: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr), DnsError> {
    let mut attempts = if addr.port() == 0 { 16 } else { 1 };
    loop {
        let udp_err = |source| DnsError::Bind {
            proto: "udp",
            addr,
            source,
        };
        let udp = UdpSocket::bind(addr).await.map_err(udp_err)?;
        let bound = udp.local_addr().map_err(udp_err)?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp, bound)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts > 1 => attempts -= 1,
            Err(source) => {
                return Err(DnsError::Bind {
                    proto: "tcp",
                    addr: bound,
                    source,
                })
            }
        }
    }
}

impl DnsServer {
    /// The addresses actually bound (UDP and TCP share each), in `listen` order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local.clone()
    }

    /// Stops the listeners and the watches.
    pub async fn shutdown(mut self) {
        for w in &self.watches {
            w.abort();
        }
        self.stop.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut self.udp);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        // Errors here are the listeners' own shutdown errors; nothing is left to clean up.
        let _ = self.server.shutdown_gracefully().await;
    }
}
