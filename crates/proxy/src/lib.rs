//! rktup's service proxy: kube-proxy's nftables mode, embedded in the node agent. It watches
//! Services and EndpointSlices (discovery.k8s.io/v1) like kube-proxy, computes the wanted table
//! as a pure value ([`ruleset`]) and programs it over netlink in one transaction per change
//! ([`Programmer`]). See README.md for the datapath and the library choice.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::Notify;

pub mod lb_notice;
pub mod model;
pub mod nft;
mod program;

pub use model::{ruleset, source_ranges, NodeInfo, Ruleset, SOURCE_RANGES_ANNOTATION};
pub use program::Programmer;

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub node_name: String,
    /// NodePorts answer on these.
    pub node_ips: Vec<IpAddr>,
    /// Pod network, a CIDR per family; off-cluster traffic to ClusterIPs is masqueraded.
    pub cluster_cidrs: Vec<ipnet::IpNet>,
    /// The one table (family inet) the proxy owns wholly, e.g. "rktup-proxy".
    pub table: String,
    /// ClusterIPs never programmed (e.g. the node-local DNS address).
    pub skip_cluster_ips: Vec<IpAddr>,
    /// Nothing in the cluster assigns load balancer addresses (see [`lb_notice`]): post a
    /// `NoLoadBalancerController` Warning on each pending LoadBalancer Service.
    pub load_balancer_notice: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("nftables netlink socket: {0}")]
    Netlink(#[source] std::io::Error),
    #[error("the kernel refused the nftables transaction for table {table}: {} (message {message} of the batch); nothing was changed", std::io::Error::from_raw_os_error(*errno))]
    Rejected {
        errno: i32,
        message: u32,
        table: String,
    },
    #[error("no initial list of Services and EndpointSlices from the API server within {0:?}")]
    NotSynced(Duration),
}

/// How long watch events are gathered into one transaction: short, since the goal is an
/// endpoint change in the kernel well under 100 ms, yet a scale-up's burst becomes one batch.
const COALESCE: Duration = Duration::from_millis(10);
/// Check this often that the table is still what we programmed, and replace it whole if not
/// (someone flushed it): the role of kube-proxy's periodic sync.
const FULL_RESYNC: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_secs(1);
const INITIAL_SYNC: Duration = Duration::from_secs(120);

/// A running proxy; dropping it leaves its tables in place, [`ServiceProxy::shutdown`] removes
/// them.
pub struct ServiceProxy {
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<Vec<Programmer>>,
    watchers: Vec<tokio::task::JoinHandle<()>>,
}

/// The table of a dual-stack node's IPv6 Services, beside `table` (the IPv4 one): kube-proxy
/// likewise runs a proxier, and keeps a table, per family.
pub fn ipv6_table(table: &str) -> String {
    format!("{table}6")
}

/// One family's table and what builds it.
struct Proxier {
    cache: model::Cache,
    prog: Programmer,
    /// UDP endpoints and served destinations of the last applied table (conntrack cleanup).
    last_udp: (UdpDestinations, UdpDestinations),
}

/// (address, port) pairs of UDP flows.
type UdpDestinations = std::collections::BTreeSet<(std::net::IpAddr, u16)>;

impl Proxier {
    fn sync(
        &mut self,
        services: &Store<Service>,
        slices: &Store<EndpointSlice>,
        node: &NodeInfo,
    ) -> Result<(), ProxyError> {
        let want = compute(&mut self.cache, services, slices, node);
        let (udp_eps, udp_served) = (want.udp_endpoints.clone(), want.udp_served.clone());
        self.prog.apply(want)?;
        let gone = self.last_udp.0.difference(&udp_eps).copied().collect();
        let served = udp_served.difference(&self.last_udp.1).copied().collect();
        if let Err(e) = nft::conntrack::flush_udp(&gone, &served) {
            tracing::warn!("proxy: clearing stale UDP conntrack entries: {e}");
        }
        self.last_udp = (udp_eps, udp_served);
        Ok(())
    }
}

impl ServiceProxy {
    /// Stops watching and syncing, then deletes the table.
    pub async fn shutdown(self) {
        self.stop.notify_one();
        for w in &self.watchers {
            w.abort();
        }
        if let Ok(progs) = self.task.await {
            for mut prog in progs {
                if let Err(e) = prog.remove() {
                    tracing::warn!("proxy: removing table: {e}");
                }
            }
        }
    }
}

/// Deletes `table` in the calling thread's network namespace (no error if it is absent).
pub fn remove_table(table: &str) -> Result<(), ProxyError> {
    let mut sock = nft::sock::Socket::open().map_err(ProxyError::Netlink)?;
    program::remove_with(&mut sock, table)
}

/// The chain of every rule in `table`, from one kernel dump (`None`: no such table).
/// For tests and diagnostics.
pub fn table_rules(table: &str) -> Result<Option<Vec<String>>, ProxyError> {
    let mut sock = nft::sock::Socket::open().map_err(ProxyError::Netlink)?;
    sock.rules(table).map_err(ProxyError::Netlink)
}

fn spawn_watch<K>(
    api: Api<K>,
    wc: watcher::Config,
    wake: Arc<Notify>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde_de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, wc).default_backoff());
    let h = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                tracing::warn!("proxy: watch: {e}");
            }
            wake.notify_one();
        }
    });
    (reader, h)
}

mod serde_de {
    pub use k8s_openapi::serde::de::DeserializeOwned;
}

/// The node's pod CIDRs from its Node object (registered by the agent, maybe after we start).
fn pod_cidrs(nodes: &Store<Node>) -> Vec<ipnet::IpNet> {
    let Some(n) = nodes.state().first().cloned() else {
        return vec![];
    };
    let spec = n.spec.clone().unwrap_or_default();
    let mut all: Vec<String> = spec.pod_cidrs.unwrap_or_default();
    if all.is_empty() {
        all.extend(spec.pod_cidr);
    }
    all.iter().filter_map(|c| c.parse().ok()).collect()
}

fn compute(
    cache: &mut model::Cache,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    node: &NodeInfo,
) -> Ruleset {
    let (svcs, sls) = (services.state(), slices.state());
    model::ruleset_cached(
        cache,
        svcs.iter().map(|s| s.as_ref()),
        sls.iter().map(|s| s.as_ref()),
        node,
    )
}

/// Starts the proxy in the calling thread's network namespace; returns once the first full
/// table is in the kernel (both tables on a dual-stack node: one whose cluster CIDRs or
/// addresses include IPv6).
pub async fn run(client: kube::Client, cfg: ProxyConfig) -> Result<ServiceProxy, ProxyError> {
    let dual = cfg.cluster_cidrs.iter().any(|c| c.addr().is_ipv6())
        || cfg.node_ips.iter().any(|ip| ip.is_ipv6());
    let mut proxiers = vec![Proxier {
        cache: model::Cache::new(model::Family::V4),
        prog: Programmer::new(&cfg.table)?,
        last_udp: Default::default(),
    }];
    if dual {
        proxiers.push(Proxier {
            cache: model::Cache::new(model::Family::V6),
            prog: Programmer::new(&ipv6_table(&cfg.table))?,
            last_udp: Default::default(),
        });
    }
    let wake = Arc::new(Notify::new());
    let all = watcher::Config::default;
    let (services, w1) = spawn_watch::<Service>(Api::all(client.clone()), all(), wake.clone());
    let (slices, w2) = spawn_watch::<EndpointSlice>(Api::all(client.clone()), all(), wake.clone());
    let own = all().fields(&format!("metadata.name={}", cfg.node_name));
    let (nodes, w3) = spawn_watch::<Node>(Api::all(client.clone()), own, wake.clone());
    let mut watchers = vec![w1, w2, w3];
    let ready = async {
        let _ = services.wait_until_ready().await;
        let _ = slices.wait_until_ready().await;
        let _ = nodes.wait_until_ready().await;
    };
    if tokio::time::timeout(INITIAL_SYNC, ready).await.is_err() {
        for w in &watchers {
            w.abort();
        }
        return Err(ProxyError::NotSynced(INITIAL_SYNC));
    }
    let mut node = NodeInfo {
        name: cfg.node_name.clone(),
        ips: cfg.node_ips.clone(),
        cluster_cidrs: cfg.cluster_cidrs.clone(),
        pod_cidrs: vec![],
        skip_cluster_ips: cfg.skip_cluster_ips.clone(),
    };
    node.pod_cidrs = pod_cidrs(&nodes);
    for p in &mut proxiers {
        p.sync(&services, &slices, &node)?;
    }
    if cfg.load_balancer_notice {
        watchers.push(tokio::spawn(lb_notice::run(
            client.clone(),
            services.clone(),
            cfg.node_name.clone(),
        )));
    }
    let stop = Arc::new(Notify::new());
    let stop2 = stop.clone();
    let task = tokio::spawn(async move {
        let mut full = tokio::time::interval(FULL_RESYNC);
        full.tick().await;
        loop {
            tokio::select! {
                _ = stop2.notified() => return proxiers.into_iter().map(|p| p.prog).collect(),
                _ = wake.notified() => {
                    tokio::time::sleep(COALESCE).await;
                }
                _ = full.tick() => {
                    // only repair a table changed behind our back: a full resync is ~0.75 s of
                    // kernel time at 10,000 endpoints (BENCHMARKS.md)
                    let mut intact = true;
                    for p in &mut proxiers {
                        match p.prog.verify() {
                            Ok(true) => {}
                            Ok(false) => {
                                intact = false;
                                tracing::warn!("proxy: table differs from what was programmed; replacing it")
                            }
                            Err(e) => {
                                intact = false;
                                tracing::warn!("proxy: checking the table: {e}")
                            }
                        }
                    }
                    if intact {
                        continue;
                    }
                }
            }
            node.pod_cidrs = pod_cidrs(&nodes);
            for p in &mut proxiers {
                if let Err(e) = p.sync(&services, &slices, &node) {
                    tracing::warn!("proxy: sync: {e}; retrying");
                    tokio::time::sleep(RETRY).await;
                    wake.notify_one();
                }
            }
        }
    });
    Ok(ServiceProxy {
        stop,
        task,
        watchers,
    })
}
