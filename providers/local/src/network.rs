//! The cluster's network on this machine, kubenet-style: a host bridge; per node a network
//! namespace joined to it by a veth, its own address, routes to every other node's pod CIDR and
//! IP forwarding. Only addresses inside namespaces rktup made, and the bridge's own, are used.
//! Everything is done with iproute2 and iptables, as an administrator would by hand.

use crate::layout::{ClusterRecord, NodeRecord};
use ipnet::Ipv4Net;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed: {message}")]
pub struct NetError {
    pub command: String,
    pub message: String,
}

/// Runs a command, returning stdout, or its stderr as the error.
pub fn run(program: &str, args: &[&str]) -> Result<String, NetError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| NetError {
            command: command.clone(),
            message: format!("{e} (is {program} installed?)"),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetError {
            command,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

pub fn netns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
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
    if !link_exists(br) {
        run("ip", &["link", "add", "name", br, "type", "bridge"])?;
    }
    let addr = format!("{}/{}", rec.gateway(), rec.node_network.prefix_len());
    run("ip", &["addr", "replace", &addr, "dev", br])?;
    run("ip", &["link", "set", br, "up"])?;
    // Hosts that filter bridged traffic (br_netfilter with a DROP forward policy, as Docker
    // leaves it) would drop node-to-node packets; let this bridge's own traffic through.
    forward_rule(&rec.name, br).ensure("-I")
}

/// An iptables rule in the host's network namespace or in a node's.
struct Rule {
    netns: Option<String>,
    table: &'static str,
    chain: &'static str,
    spec: Vec<String>,
}

impl Rule {
    fn new(netns: Option<&str>, table: &'static str, chain: &'static str, spec: &[&str]) -> Rule {
        Rule {
            netns: netns.map(str::to_string),
            table,
            chain,
            spec: spec.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// `iptables -t <table> <op> <chain> <spec>`, through `ip netns exec` for a node's namespace.
    fn iptables(&self, op: &str) -> Result<String, NetError> {
        let mut args: Vec<&str> = Vec::new();
        if let Some(ns) = &self.netns {
            args.extend(["netns", "exec", ns, "iptables"]);
        }
        args.extend(["-t", self.table, op, self.chain]);
        args.extend(self.spec.iter().map(String::as_str));
        match self.netns {
            Some(_) => run("ip", &args),
            None => run("iptables", &args),
        }
    }

    fn exists(&self) -> bool {
        self.iptables("-C").is_ok()
    }

    /// Adds the rule unless it is there: `-I` puts it first in the chain, `-A` last.
    fn ensure(&self, op: &str) -> Result<(), NetError> {
        if !self.exists() {
            self.iptables(op)?;
        }
        Ok(())
    }
}

fn forward_rule(cluster: &str, bridge: &str) -> Rule {
    let comment = format!("rktup cluster {cluster}");
    Rule::new(
        None,
        "filter",
        "FORWARD",
        &[
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
        ],
    )
}

/// A name for this machine's own network namespace (`ip netns attach`), which agents pull
/// images from, so registries on the host's loopback serve the nodes too.
pub fn ensure_host_netns(ns: &str) -> Result<(), NetError> {
    if !netns_path(ns).exists() {
        run(
            "ip",
            &["netns", "attach", ns, &std::process::id().to_string()],
        )?;
    }
    Ok(())
}

/// Node `node`'s namespace, veth, address, default route, IP forwarding and masquerading of
/// pod traffic leaving the cluster's pod range (kubenet's non-masquerade CIDR).
pub fn ensure_node(rec: &ClusterRecord, node: &NodeRecord) -> Result<(), NetError> {
    let ns = node.netns.as_str();
    if !netns_path(ns).exists() {
        run("ip", &["netns", "add", ns])?;
    }
    if !link_exists(&node.host_veth) {
        run(
            "ip",
            &[
                "link",
                "add",
                &node.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            ],
        )?;
    }
    run(
        "ip",
        &["link", "set", &node.host_veth, "master", &rec.bridge, "up"],
    )?;
    let addr = format!("{}/{}", node.ip, rec.node_network.prefix_len());
    run("ip", &["-n", ns, "addr", "replace", &addr, "dev", "eth0"])?;
    run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
    run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
    let gw = rec.gateway().to_string();
    run(
        "ip",
        &[
            "-n", ns, "route", "replace", "default", "via", &gw, "dev", "eth0",
        ],
    )?;
    let owned = ns.to_string();
    in_netns(ns, move || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| NetError {
            command: format!("echo 1 > /proc/sys/net/ipv4/ip_forward (in {owned})"),
            message: e.to_string(),
        })
    })
    .map_err(|e| NetError {
        command: format!("setns {ns}"),
        message: e.to_string(),
    })??;
    let pod = node.pod_cidr.to_string();
    let cluster = rec.cluster_ip_range.to_string();
    Rule::new(
        Some(ns),
        "nat",
        "POSTROUTING",
        &[
            "-s",
            &pod,
            "!",
            "-d",
            &cluster,
            "-o",
            "eth0",
            "-j",
            "MASQUERADE",
        ],
    )
    .ensure("-A")?;
    Ok(())
}

/// In every node's namespace, a route to every other node's pod CIDR through that node.
pub fn ensure_routes(rec: &ClusterRecord) -> Result<(), NetError> {
    for node in &rec.nodes {
        for other in rec.nodes.iter().filter(|o| o.name != node.name) {
            run(
                "ip",
                &[
                    "-n",
                    &node.netns,
                    "route",
                    "replace",
                    &other.pod_cidr.to_string(),
                    "via",
                    &other.ip.to_string(),
                    "dev",
                    "eth0",
                ],
            )?;
        }
    }
    Ok(())
}

/// On this machine, each node's pod CIDR routed through that node, so the control plane (which
/// runs here) reaches pods as kube-apiserver does on a cloud master: admission webhooks and
/// aggregated API servers running as pods, dialled at their endpoints' addresses. The routes
/// go with the bridge at `down`. A pod CIDR this machine already routes elsewhere (another
/// local cluster with the same CLUSTER_IP_RANGE) is left as it is: that cluster keeps it.
pub fn ensure_pod_routes(rec: &ClusterRecord) -> Result<(), NetError> {
    let routed = host_routes();
    for node in &rec.nodes {
        if routed.contains(&node.pod_cidr) && !routes_via(&node.pod_cidr, &rec.bridge) {
            continue;
        }
        run(
            "ip",
            &[
                "route",
                "replace",
                &node.pod_cidr.to_string(),
                "via",
                &node.ip.to_string(),
                "dev",
                rec.bridge.as_str(),
            ],
        )?;
    }
    Ok(())
}

/// Whether this machine routes `net` through `dev`.
fn routes_via(net: &Ipv4Net, dev: &str) -> bool {
    run("ip", &["route", "show", "exact", &net.to_string()]).is_ok_and(|out| {
        out.split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w == ["dev", dev])
    })
}

/// On this machine, the LoadBalancer pool routed through every node (a multipath route): each
/// node's service proxy forwards those addresses to the Service's endpoints. The route goes
/// with the bridge at `down`.
pub fn ensure_load_balancer_route(rec: &ClusterRecord) -> Result<(), NetError> {
    if rec.nodes.is_empty() {
        return Ok(());
    }
    let pool = rec.load_balancer_pool().to_string();
    let mut args = vec!["route", "replace", pool.as_str()];
    let ips: Vec<String> = rec.nodes.iter().map(|n| n.ip.to_string()).collect();
    for ip in &ips {
        args.extend(["nexthop", "via", ip.as_str(), "dev", rec.bridge.as_str()]);
    }
    run("ip", &args).map(|_| ())
}

/// Runs `f` on a thread that has entered namespace `ns`; processes it starts are in `ns` too.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let path = netns_path(ns);
    std::thread::spawn(move || {
        enter_netns(&path)
            .map_err(|e| std::io::Error::other(format!("setns {}: {e}", path.display())))?;
        Ok(f())
    })
    .join()
    .map_err(|_| std::io::Error::other("namespace thread panicked"))?
}

/// Moves the calling thread into the network namespace bound at `path` (setns(2)).
fn enter_netns(path: &Path) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::File::open(path)?;
    // SAFETY: a valid fd for the call's duration; only this thread changes namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Network namespaces whose names start with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the namespaces (their veths go with them), the bridge and the forward rule.
/// Returns what could not be removed.
pub fn teardown(cluster: &str, bridge: &str, namespaces: &[String]) -> Vec<String> {
    let mut left = Vec::new();
    for ns in namespaces {
        if netns_path(ns).exists() {
            if let Err(e) = run("ip", &["netns", "delete", ns]) {
                left.push(format!("network namespace {ns}: {e}"));
            }
        }
    }
    if link_exists(bridge) {
        // Routes through the bridge (the LoadBalancer pool's) go with it.
        if let Err(e) = run("ip", &["link", "delete", bridge]) {
            left.push(format!("bridge {bridge}: {e}"));
        }
    }
    let rule = forward_rule(cluster, bridge);
    while rule.exists() {
        if let Err(e) = rule.iptables("-D") {
            left.push(format!("iptables rule: {e}"));
            break;
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
