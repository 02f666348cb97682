//! The cluster's network on this machine, kubenet-style: a host bridge; per node a network
//! namespace joined to it by a veth, its own address, routes to every other node's pod CIDR,
//! IP forwarding and masquerading of pod traffic leaving the cluster. Only addresses inside
//! namespaces rktup made, and the bridge's own, are used.
//!
//! Everything is programmed in-process over netlink (`rktup-netlink`: rtnetlink for namespaces,
//! links, addresses and routes, nf_tables for the node's masquerade rule), so a fresh machine
//! needs no `ip`, `iptables` or `nft`. The one exception is a courtesy to hosts that already
//! filter bridged traffic with iptables (br_netfilter loaded and an `iptables` binary, as Docker
//! leaves them, often with a DROP forward policy): there the bridge's own traffic is let
//! through with an iptables rule, since an nftables accept cannot overrule iptables' drop.
//!
//! A dual-stack cluster (an IPv6 CLUSTER_IP_RANGE) adds the same in IPv6: the bridge's and each
//! node's address in the cluster's unique local node network, a default route, forwarding,
//! routes to the other nodes' (and, from this machine, to every node's) IPv6 pod CIDR and the
//! masquerade of IPv6 pod traffic leaving the cluster. Addresses skip duplicate address
//! detection, so they work at once.

use crate::layout::{ClusterRecord, NodeRecord};
use ipnet::{Ipv4Net, Ipv6Net};
use rktup_netlink::netns;
use rktup_netlink::nft::expr::{self, rule};
use rktup_netlink::nft::msg::{Batch, Hook};
use rktup_netlink::nft::sock::Socket;
use rktup_netlink::route::Rtnl;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What failed, and the kernel's (or the command's) answer.
#[derive(Debug, thiserror::Error)]
#[error("failed to {step}: {message}")]
pub struct NetError {
    pub step: String,
    pub message: String,
}

fn step(what: impl Into<String>) -> impl FnOnce(io::Error) -> NetError {
    let step = what.into();
    move |e| NetError {
        step,
        message: e.to_string(),
    }
}

/// The nftables table of a node's own rules (masquerade), in the node's namespace; it goes
/// with the namespace.
pub const NODE_TABLE: &str = "rktup-node";

pub fn netns_path(ns: &str) -> PathBuf {
    netns::path(ns)
}

/// Whether this machine (the caller's namespace) has link `name`.
pub fn link_exists(name: &str) -> bool {
    Rtnl::open()
        .and_then(|mut rt| rt.link_index(name))
        .is_ok_and(|i| i.is_some())
}

/// Networks already routed on this machine (but not the default route), so a new cluster's
/// node network overlaps none of them.
pub fn host_routes() -> Vec<Ipv4Net> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // /proc/net/route prints addresses in host (little-endian) order.
            let dest = std::net::Ipv4Addr::from(u32::from_be(dest.to_le()));
            let prefix = u32::from_be(mask.to_le()).count_ones() as u8;
            (prefix > 0)
                .then(|| Ipv4Net::new(dest, prefix).ok())
                .flatten()
        })
        .collect()
}

/// The bridge with the gateway address, up.
pub fn ensure_bridge(rec: &ClusterRecord) -> Result<(), NetError> {
    let br = rec.bridge.as_str();
    let mut rt = Rtnl::open().map_err(step("open a netlink socket"))?;
    if rt
        .link_index(br)
        .map_err(step(format!("look up bridge {br}")))?
        .is_none()
    {
        rt.add_bridge(br, None)
            .map_err(step(format!("create bridge {br}")))?;
    }
    let idx = rt.index(br).map_err(step(format!("look up bridge {br}")))?;
    let addr = Ipv4Net::new(rec.gateway(), rec.node_network.prefix_len())
        .map_err(|e| step("compute the gateway address")(io::Error::other(e)))?;
    rt.replace_addr(idx, addr)
        .map_err(step(format!("put {addr} on bridge {br}")))?;
    if let (Some(net6), Some(gw6)) = (rec.node_network_v6(), rec.gateway6()) {
        // No duplicate address detection: the link-local address neighbour discovery speaks
        // from is usable at once (a tentative one delays first packets by seconds).
        netns::sysctl(&format!("net.ipv6.conf.{br}.accept_dad"), "0").map_err(step(format!(
            "turn duplicate address detection off on {br}"
        )))?;
        let addr6 = Ipv6Net::new(gw6, net6.prefix_len())
            .map_err(|e| step("compute the IPv6 gateway address")(io::Error::other(e)))?;
        rt.replace_addr6(idx, addr6)
            .map_err(step(format!("put {addr6} on bridge {br}")))?;
    }
    rt.set_up(idx)
        .map_err(step(format!("set bridge {br} up")))?;
    // Hosts that filter bridged traffic (br_netfilter with a DROP forward policy, as Docker
    // leaves it) would drop node-to-node packets; let this bridge's own traffic through.
    if let Some(rule) = forward_rule(&rec.name, br) {
        rule.ensure("-I")?;
    }
    Ok(())
}

/// The `iptables` binary, when this machine has one (an executable file).
fn iptables_binary() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join("iptables"))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// An iptables rule in the host's filter table (only where iptables filters bridged traffic).
struct Rule {
    iptables: PathBuf,
    chain: &'static str,
    spec: Vec<String>,
}

impl Rule {
    fn run(&self, op: &str) -> Result<String, NetError> {
        let mut args = vec!["-t", "filter", op, self.chain];
        args.extend(self.spec.iter().map(String::as_str));
        let command = format!("{} {}", self.iptables.display(), args.join(" "));
        let out = Command::new(&self.iptables)
            .args(&args)
            .output()
            .map_err(step(format!("run `{command}`")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(NetError {
                step: format!("run `{command}`"),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    fn exists(&self) -> bool {
        self.run("-C").is_ok()
    }

    /// Adds the rule unless it is there: `-I` puts it first in the chain, `-A` last.
    fn ensure(&self, op: &str) -> Result<(), NetError> {
        if !self.exists() {
            self.run(op)?;
        }
        Ok(())
    }
}

/// The FORWARD accept for the bridge's own traffic, when iptables filters bridged frames here
/// (br_netfilter loaded and an `iptables` binary present); None otherwise.
fn forward_rule(cluster: &str, bridge: &str) -> Option<Rule> {
    if !Path::new("/proc/sys/net/bridge").exists() {
        return None;
    }
    let comment = format!("rktup cluster {cluster}");
    Some(Rule {
        iptables: iptables_binary()?,
        chain: "FORWARD",
        spec: [
            "-i",
            bridge,
            "-o",
            bridge,
            "-m",
            "comment",
            "--comment",
            &comment,
            "-j",
            "ACCEPT",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    })
}

/// A name for this machine's own network namespace, which agents pull images from, so
/// registries on the host's loopback serve the nodes too.
pub fn ensure_host_netns(ns: &str) -> Result<(), NetError> {
    netns::attach(ns, std::process::id())
        .map_err(step(format!("name this machine's network namespace {ns}")))
}

/// Node `node`'s namespace, veth, address, default route, IP forwarding and masquerading of
/// pod traffic leaving the cluster's pod range (kubenet's non-masquerade CIDR).
pub fn ensure_node(rec: &ClusterRecord, node: &NodeRecord) -> Result<(), NetError> {
    let ns = node.netns.as_str();
    netns::create(ns).map_err(step(format!("create network namespace {ns}")))?;
    if node.ip6.is_some() {
        // Links made in the node's namespace skip duplicate address detection (see
        // `ensure_bridge`).
        in_netns(ns, || {
            netns::sysctl("net.ipv6.conf.default.accept_dad", "0")
        })
        .map_err(step(format!("enter network namespace {ns}")))?
        .map_err(step(format!(
            "turn duplicate address detection off in {ns}"
        )))?;
    }
    let mut rt = Rtnl::open().map_err(step("open a netlink socket"))?;
    let veth = node.host_veth.as_str();
    if rt
        .link_index(veth)
        .map_err(step(format!("look up veth {veth}")))?
        .is_none()
    {
        let f = std::fs::File::open(netns_path(ns))
            .map_err(step(format!("open network namespace {ns}")))?;
        rt.add_veth(veth, "eth0", Some(std::os::fd::AsFd::as_fd(&f)), None)
            .map_err(step(format!("create veth {veth} / eth0 in {ns}")))?;
    }
    let vi = rt
        .index(veth)
        .map_err(step(format!("look up veth {veth}")))?;
    let br = rt
        .index(&rec.bridge)
        .map_err(step(format!("look up bridge {}", rec.bridge)))?;
    rt.set_master(vi, br)
        .map_err(step(format!("attach {veth} to bridge {}", rec.bridge)))?;
    rt.set_up(vi).map_err(step(format!("set {veth} up")))?;

    let addr = Ipv4Net::new(node.ip, rec.node_network.prefix_len())
        .map_err(|e| step("compute the node address")(io::Error::other(e)))?;
    let gw = rec.gateway();
    let (pod, cluster) = (node.pod_cidr, rec.cluster_ip_range);
    // Dual-stack: (node address, gateway, node pod CIDR, cluster range) in IPv6.
    let v6 = match (
        node.ip6,
        rec.node_network_v6(),
        rec.gateway6(),
        node.pod_cidr6,
        rec.cluster_ip_range_v6,
    ) {
        (Some(ip6), Some(net6), Some(gw6), Some(pod6), Some(cluster6)) => Some((
            Ipv6Net::new(ip6, net6.prefix_len())
                .map_err(|e| step("compute the node's IPv6 address")(io::Error::other(e)))?,
            gw6,
            pod6,
            cluster6,
        )),
        _ => None,
    };
    let owned = ns.to_string();
    in_netns(ns, move || -> Result<(), NetError> {
        let mut rt = Rtnl::open().map_err(step(format!("open a netlink socket in {owned}")))?;
        let eth0 = rt
            .index("eth0")
            .map_err(step(format!("look up eth0 in {owned}")))?;
        let lo = rt
            .index("lo")
            .map_err(step(format!("look up lo in {owned}")))?;
        rt.replace_addr(eth0, addr)
            .map_err(step(format!("put {addr} on eth0 in {owned}")))?;
        rt.set_up(eth0)
            .map_err(step(format!("set eth0 up in {owned}")))?;
        rt.set_up(lo)
            .map_err(step(format!("set lo up in {owned}")))?;
        rt.replace_route(Ipv4Net::default(), &[(Some(gw), eth0)])
            .map_err(step(format!("route default via {gw} in {owned}")))?;
        netns::sysctl("net.ipv4.ip_forward", "1")
            .map_err(step(format!("enable IPv4 forwarding in {owned}")))?;
        if let Some((addr6, gw6, _, _)) = v6 {
            rt.replace_addr6(eth0, addr6)
                .map_err(step(format!("put {addr6} on eth0 in {owned}")))?;
            rt.replace_route6(Ipv6Net::default(), Some(gw6), eth0)
                .map_err(step(format!("route default via {gw6} in {owned}")))?;
            netns::sysctl("net.ipv6.conf.all.forwarding", "1")
                .map_err(step(format!("enable IPv6 forwarding in {owned}")))?;
        }
        node_masquerade(pod, cluster, v6.map(|(_, _, p, c)| (p, c))).map_err(step(format!(
            "program nftables table inet {NODE_TABLE} in {owned}"
        )))
    })
    .map_err(step(format!("enter network namespace {ns}")))?
}

/// `inet rktup-node`: pod traffic leaving by eth0 for outside the cluster range is masqueraded
/// (what `iptables -t nat -A POSTROUTING -s <pods> ! -d <cluster> -o eth0 -j MASQUERADE` did).
/// Rebuilt whole in one transaction, so `up` again converges.
fn node_masquerade(
    pod: Ipv4Net,
    cluster: Ipv4Net,
    v6: Option<(Ipv6Net, Ipv6Net)>,
) -> io::Result<()> {
    let mut sock = Socket::open()?;
    let first = sock.next_seq(0);
    let mut b = Batch::new(first);
    b.add_table(NODE_TABLE);
    b.add_chain(
        NODE_TABLE,
        "postrouting",
        Some(("nat", Hook::Postrouting, 100)),
    );
    b.flush_chain(NODE_TABLE, "postrouting");
    b.add_rule(
        NODE_TABLE,
        "postrouting",
        &rule(&[
            expr::ipv4(),
            expr::saddr_in(pod, false),
            expr::daddr_in(cluster, true),
            expr::oifname("eth0"),
            expr::masquerade(),
        ]),
    );
    if let Some((pod6, cluster6)) = v6 {
        b.add_rule(
            NODE_TABLE,
            "postrouting",
            &rule(&[
                expr::ipv6(),
                expr::saddr6_in(pod6, false),
                expr::daddr6_in(cluster6, true),
                expr::oifname("eth0"),
                expr::masquerade(),
            ]),
        );
    }
    let _ = sock.next_seq(b.messages as u32 + 2);
    match sock.commit(b, first)? {
        Ok(()) => Ok(()),
        Err(nack) => Err(io::Error::from_raw_os_error(nack.errno)),
    }
}

/// In every node's namespace, a route to every other node's pod CIDR through that node.
pub fn ensure_routes(rec: &ClusterRecord) -> Result<(), NetError> {
    for node in &rec.nodes {
        let others: Vec<(Ipv4Net, std::net::Ipv4Addr)> = rec
            .nodes
            .iter()
            .filter(|o| o.name != node.name)
            .map(|o| (o.pod_cidr, o.ip))
            .collect();
        let others6: Vec<(Ipv6Net, std::net::Ipv6Addr)> = rec
            .nodes
            .iter()
            .filter(|o| o.name != node.name)
            .filter_map(|o| Some((o.pod_cidr6?, o.ip6?)))
            .collect();
        let ns = node.netns.clone();
        in_netns(&node.netns, move || -> Result<(), NetError> {
            let mut rt = Rtnl::open().map_err(step(format!("open a netlink socket in {ns}")))?;
            let eth0 = rt
                .index("eth0")
                .map_err(step(format!("look up eth0 in {ns}")))?;
            for (cidr, via) in others {
                rt.replace_route(cidr, &[(Some(via), eth0)])
                    .map_err(step(format!("route {cidr} via {via} in {ns}")))?;
            }
            for (cidr, via) in others6 {
                rt.replace_route6(cidr, Some(via), eth0)
                    .map_err(step(format!("route {cidr} via {via} in {ns}")))?;
            }
            Ok(())
        })
        .map_err(step(format!("enter network namespace {}", node.netns)))??;
    }
    Ok(())
}

/// On this machine, each node's pod CIDR routed through that node, so the control plane (which
/// runs here) reaches pods as kube-apiserver does on a cloud master: admission webhooks and
/// aggregated API servers running as pods, dialled at their endpoints' addresses. The routes
/// go with the bridge at `down`. A pod CIDR this machine already routes elsewhere (another
/// local cluster with the same CLUSTER_IP_RANGE) is left as it is: that cluster keeps it.
pub fn ensure_pod_routes(rec: &ClusterRecord) -> Result<(), NetError> {
    let mut rt = Rtnl::open().map_err(step("open a netlink socket"))?;
    let br = rt
        .index(&rec.bridge)
        .map_err(step(format!("look up bridge {}", rec.bridge)))?;
    let routes = rt.routes().map_err(step("list this machine's routes"))?;
    for node in &rec.nodes {
        let elsewhere = routes
            .iter()
            .any(|r| r.dst == node.pod_cidr && r.oif.is_some_and(|o| o != br));
        if elsewhere {
            continue;
        }
        rt.replace_route(node.pod_cidr, &[(Some(node.ip), br)])
            .map_err(step(format!(
                "route {} via {} dev {}",
                node.pod_cidr, node.ip, rec.bridge
            )))?;
    }
    for node in &rec.nodes {
        if let (Some(cidr), Some(via)) = (node.pod_cidr6, node.ip6) {
            rt.replace_route6(cidr, Some(via), br)
                .map_err(step(format!("route {cidr} via {via} dev {}", rec.bridge)))?;
        }
    }
    Ok(())
}

/// On this machine, the LoadBalancer pool routed through every node (a multipath route): each
/// node's service proxy forwards those addresses to the Service's endpoints. The route goes
/// with the bridge at `down`.
pub fn ensure_load_balancer_route(rec: &ClusterRecord) -> Result<(), NetError> {
    if rec.nodes.is_empty() {
        return Ok(());
    }
    let pool = rec.load_balancer_pool();
    let mut rt = Rtnl::open().map_err(step("open a netlink socket"))?;
    let br = rt
        .index(&rec.bridge)
        .map_err(step(format!("look up bridge {}", rec.bridge)))?;
    let hops: Vec<_> = rec.nodes.iter().map(|n| (Some(n.ip), br)).collect();
    rt.replace_route(pool, &hops)
        .map_err(step(format!("route {pool} through the nodes")))?;
    if let Some(pool6) = rec.load_balancer_pool_v6() {
        let hops: Vec<_> = rec
            .nodes
            .iter()
            .filter_map(|n| Some((Some(n.ip6?), br)))
            .collect();
        if !hops.is_empty() {
            rt.replace_route6_hops(pool6, &hops)
                .map_err(step(format!("route {pool6} through the nodes")))?;
        }
    }
    Ok(())
}

/// Runs `f` on a thread that has entered namespace `ns`; processes it starts are in `ns` too.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    netns::run_in(&netns_path(ns), f)
}

/// Network namespaces whose names start with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    netns::with_prefix(prefix)
}

/// Removes the namespaces (their veths and nftables tables go with them), the bridge (with the
/// routes through it) and the forward rule. Returns what could not be removed.
pub fn teardown(cluster: &str, bridge: &str, namespaces: &[String]) -> Vec<String> {
    // Every namespace at once: each unmount waits for an RCU grace period in the kernel, and
    // waits that overlap are shared.
    let mut left: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = namespaces
            .iter()
            .map(|ns| scope.spawn(move || netns::delete(ns).err().map(|e| (ns, e))))
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap_or(None))
            .map(|(ns, e)| format!("network namespace {ns}: {e}"))
            .collect()
    });
    let r = Rtnl::open().and_then(|mut rt| match rt.link_index(bridge)? {
        Some(i) => rt.del_link(i),
        None => Ok(()),
    });
    if let Err(e) = r {
        left.push(format!("bridge {bridge}: {e}"));
    }
    if let Some(rule) = forward_rule(cluster, bridge) {
        while rule.exists() {
            if let Err(e) = rule.run("-D") {
                left.push(format!("iptables rule: {e}"));
                break;
            }
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_routes_parse_proc_net_route() {
        // Whatever this machine has, the parse never yields the default route.
        assert!(host_routes().iter().all(|n| n.prefix_len() > 0));
    }
}
