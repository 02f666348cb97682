//! kubenet, in-process: what kubelet's kubenet did with the CNI `bridge`, `host-local` and
//! `portmap` plugins, done by the runtime over netlink, so a node needs no plugin binaries (and
//! no `ip`/`iptables`). The pod network stays a CNI network: the agent writes
//! `kubenet/net.d/10-kubenet.conflist` whose one plugin has type [`PLUGIN_TYPE`], and
//! `cni::add/del/check` serve that type here instead of executing a binary. Real plugins stay
//! for `--network-plugin=cni` and the contained network.
//!
//! Per pod (ADD, in the node's network namespace):
//! - the bridge (`cbr0`) exists, is up and has the pod CIDR's first address (the gateway);
//!   IPv4 forwarding is on;
//! - an address from the pod CIDR, host-local style ([`ipam`]), persisted under the node root;
//! - on a dual-stack node (`subnet6`, the node's IPv6 pod CIDR) also an IPv6 address: the one at
//!   the same offset in the IPv6 CIDR as the IPv4 address in its own (so it needs no allocator
//!   state of its own and goes with the IPv4 reservation), the bridge holding the IPv6 gateway,
//!   IPv6 forwarding on and a default IPv6 route in the pod; addresses without duplicate
//!   address detection, so they are usable at once;
//! - a veth pair: `eth0` created straight in the pod's namespace with the address and a default
//!   route via the gateway, the host end on the bridge with hairpin on;
//! - the node's `inet rktup-kubenet` nftables table: hostPorts (DNAT of local destinations in
//!   prerouting and output through the `hostports` verdict map, one chain per pod), masquerade
//!   of DNATed pod-to-pod flows (a pod reaching another, or itself, through a hostPort) and of
//!   the node's own flows to a hostPort on 127.0.0.1 (the bridge has `route_localnet` for
//!   them, as upstream's portmap plugin sets it), and pod
//!   traffic to the cloud metadata address dropped (GKE's metadata concealment; hostNetwork
//!   pods do not cross the forward hook, so they keep it).
//!
//! DEL undoes the pod's part (veth, address, its hostPort chain and map elements); the table
//! goes with the node's last pod. Masquerade of traffic leaving the cluster is the node's
//! business (the local provider's node rules; a cloud's routing), as with kubelet's kubenet.

pub(crate) mod ipam;
mod table;

use ipnet::{Ipv4Net, Ipv6Net};
use rktup_netlink::{netns, route::Rtnl};
use serde_json::{json, Value};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::PathBuf;

/// The plugin type of the in-process kubenet network in a conflist.
pub const PLUGIN_TYPE: &str = "rktup-kubenet";

/// The address pods may not reach (the cloud metadata server).
pub const METADATA_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

#[derive(Debug, thiserror::Error)]
pub enum KubenetError {
    #[error("bad {PLUGIN_TYPE} config: {0}")]
    Config(String),
    #[error("failed to {step}: {source}")]
    Step { step: String, source: io::Error },
    #[error("hostPort {ports}: already mapped to another pod on this node")]
    HostPortTaken { ports: String },
    #[error("unsupported hostPort protocol {0:?} (valid: tcp, udp, sctp)")]
    Protocol(String),
}

pub(crate) fn step(what: impl Into<String>) -> impl FnOnce(io::Error) -> KubenetError {
    let step = what.into();
    move |source| KubenetError::Step { step, source }
}

/// The plugin's settings, as the conflist carries them.
#[derive(Debug, Clone)]
pub struct Config {
    pub network: String,
    pub bridge: String,
    pub mtu: Option<u32>,
    pub subnet: Ipv4Net,
    /// The node's IPv6 pod CIDR on a dual-stack node.
    pub subnet6: Option<Ipv6Net>,
    pub data_dir: PathBuf,
    pub hairpin: bool,
    pub block_metadata: bool,
}

impl Config {
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + 1)
    }

    /// The IPv6 gateway (the bridge's address), first of the IPv6 pod CIDR like the IPv4 one.
    pub fn gateway6(&self) -> Option<Ipv6Addr> {
        self.subnet6
            .map(|s| Ipv6Addr::from(u128::from(s.network()) + 1))
    }

    /// The pod's IPv6 address for its IPv4 one: the same offset into the IPv6 CIDR.
    pub fn ipv6_for(&self, ip: Ipv4Addr) -> Option<Ipv6Addr> {
        let offset = u32::from(ip) - u32::from(self.subnet.network());
        self.subnet6
            .map(|s| Ipv6Addr::from(u128::from(s.network()) + u128::from(offset)))
    }

    pub fn parse(conf: &Value) -> Result<Config, KubenetError> {
        let s = |k: &str| conf.get(k).and_then(Value::as_str);
        let subnet = s("subnet").ok_or_else(|| KubenetError::Config("no \"subnet\"".into()))?;
        let subnet: Ipv4Net = subnet.parse().map_err(|_| {
            KubenetError::Config(format!(
                "\"subnet\" {subnet:?} is not an IPv4 CIDR (e.g. 10.244.1.0/24)"
            ))
        })?;
        if subnet.prefix_len() > 30 {
            return Err(KubenetError::Config(format!(
                "\"subnet\" {subnet} is too small for pods (at most /30)"
            )));
        }
        let subnet6 = match s("subnet6") {
            None => None,
            Some(v6) => {
                let net: Ipv6Net = v6.parse().map_err(|_| {
                    KubenetError::Config(format!(
                        "\"subnet6\" {v6:?} is not an IPv6 CIDR (e.g. fd00:10:244:1::/64)"
                    ))
                })?;
                // Every IPv4 offset has its IPv6 twin.
                if 128 - u32::from(net.prefix_len()) < 32 - u32::from(subnet.prefix_len()) {
                    return Err(KubenetError::Config(format!(
                        "\"subnet6\" {net} is smaller than \"subnet\" {subnet}: it needs at \
                         least as many addresses (a /{} or larger)",
                        96 + subnet.prefix_len()
                    )));
                }
                Some(net.trunc())
            }
        };
        Ok(Config {
            network: s("name").unwrap_or("kubenet").to_string(),
            bridge: s("bridge").unwrap_or("cbr0").to_string(),
            mtu: conf.get("mtu").and_then(Value::as_u64).map(|m| m as u32),
            subnet: subnet.trunc(),
            subnet6,
            data_dir: s("dataDir")
                .map(PathBuf::from)
                .ok_or_else(|| KubenetError::Config("no \"dataDir\"".into()))?,
            hairpin: conf
                .get("hairpinMode")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            block_metadata: conf
                .get("blockMetadata")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        })
    }
}

/// The conflist the agent writes for `--network-plugin=kubenet`: `pod_cidr` is the node's
/// IPv4 pod CIDR, or it and the IPv6 one, comma-separated (a dual-stack node, as `podCIDRs`).
pub fn conflist(pod_cidr: &str, data_dir: &std::path::Path) -> Value {
    let mut cidrs = pod_cidr.split(',').map(str::trim);
    let v4 = cidrs.next().unwrap_or("");
    let mut plugin = json!({"type": PLUGIN_TYPE, "bridge": "cbr0", "mtu": 1460, "subnet": v4,
         "dataDir": data_dir, "hairpinMode": true, "blockMetadata": true,
         "capabilities": {"portMappings": true}});
    if let Some(v6) = cidrs.next() {
        plugin["subnet6"] = json!(v6);
    }
    json!({
        "cniVersion": "1.0.0",
        "name": "kubenet",
        "plugins": [plugin]
    })
}

/// The pod side of an attachment: CNI's CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    pub container_id: &'a str,
    /// the pod's network namespace (a bind-mounted nsfs file or /proc/<pid>/ns/net)
    pub netns: &'a str,
    pub ifname: &'a str,
}

/// One hostPort of the pod, from `runtimeConfig.portMappings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub proto: u8,
    pub host_port: u16,
    pub container_port: u16,
}

fn host_ports(conf: &Value) -> Result<Vec<HostPort>, KubenetError> {
    let mut out = Vec::new();
    let list = conf
        .pointer("/runtimeConfig/portMappings")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for m in list {
        let n = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0) as u16;
        let proto = m
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("tcp")
            .to_ascii_lowercase();
        let proto = match proto.as_str() {
            "tcp" => rktup_netlink::nft::expr::TCP,
            "udp" => rktup_netlink::nft::expr::UDP,
            "sctp" => rktup_netlink::nft::expr::SCTP,
            _ => return Err(KubenetError::Protocol(proto)),
        };
        if n("hostPort") == 0 {
            continue;
        }
        out.push(HostPort {
            proto,
            host_port: n("hostPort"),
            container_port: n("containerPort"),
        });
    }
    Ok(out)
}

/// The host end of a pod's veth: derived from the container id, so DEL finds it without state.
pub fn host_veth(container_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(container_id.as_bytes());
    let hex: String = h.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("veth{}", &hex[..11])
}

/// ADD: the pod's address, veth, routes and hostPorts. Returns a CNI 1.0.0 result.
pub fn add(conf: &Value, att: &Attachment) -> Result<Value, KubenetError> {
    let cfg = Config::parse(conf)?;
    let ports = host_ports(conf)?;
    // The lock covers the allocation only: the links, addresses and rules below are the pod's
    // own (or idempotent: bridge, sysctls, the table's base chains), so pods starting together
    // wire up side by side instead of one after another. A DEL that finds no address left
    // removes the table under the lock; an ADD allocates before it (re)makes the table, so the
    // two cannot cross.
    let ip = ipam::Store::lock(&cfg.data_dir, &cfg.network)
        .map_err(step("lock the IPAM store"))?
        .allocate(cfg.subnet, cfg.gateway(), att.container_id, att.ifname)
        .map_err(step(format!("allocate an address in {}", cfg.subnet)))?;
    let r = attach(&cfg, att, ip, &ports);
    if r.is_err() {
        // Leave nothing half-made: DEL would undo it too, but the address is ours to free now.
        if let Ok(store) = ipam::Store::lock(&cfg.data_dir, &cfg.network) {
            let _ = detach(&cfg, att, &store, &ports);
        }
    }
    r?;
    let gw = cfg.gateway().to_string();
    let mut ips = vec![
        json!({"address": format!("{ip}/{}", cfg.subnet.prefix_len()), "gateway": gw, "interface": 2}),
    ];
    let mut routes = vec![json!({"dst": "0.0.0.0/0", "gw": gw})];
    if let (Some(net6), Some(ip6), Some(gw6)) = (cfg.subnet6, cfg.ipv6_for(ip), cfg.gateway6()) {
        ips.push(json!({"address": format!("{ip6}/{}", net6.prefix_len()), "gateway": gw6.to_string(), "interface": 2}));
        routes.push(json!({"dst": "::/0", "gw": gw6.to_string()}));
    }
    Ok(json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": cfg.bridge},
            {"name": host_veth(att.container_id)},
            {"name": att.ifname, "sandbox": att.netns}
        ],
        "ips": ips,
        "routes": routes,
        "dns": {}
    }))
}

fn attach(
    cfg: &Config,
    att: &Attachment,
    ip: Ipv4Addr,
    ports: &[HostPort],
) -> Result<(), KubenetError> {
    let mut rt = Rtnl::open().map_err(step("open a netlink socket"))?;
    // The bridge, with the gateway address; forwarding on.
    let br = match rt
        .link_index(&cfg.bridge)
        .map_err(step("look up the bridge"))?
    {
        Some(i) => i,
        None => {
            match rt.add_bridge(&cfg.bridge, cfg.mtu) {
                Ok(()) => {}
                // another pod's ADD (or a second agent on the same bridge) made it meanwhile
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(step(format!("create bridge {}", cfg.bridge))(e)),
            }
            rt.index(&cfg.bridge)
                .map_err(step(format!("look up bridge {}", cfg.bridge)))?
        }
    };
    let gw_net = Ipv4Net::new(cfg.gateway(), cfg.subnet.prefix_len())
        .map_err(|e| KubenetError::Config(e.to_string()))?;
    rt.replace_addr(br, gw_net)
        .map_err(step(format!("put {gw_net} on bridge {}", cfg.bridge)))?;
    let v6 = match (cfg.subnet6, cfg.gateway6(), cfg.ipv6_for(ip)) {
        (Some(net), Some(gw), Some(addr)) => Some((net.prefix_len(), gw, addr)),
        _ => None,
    };
    if v6.is_some() {
        // No duplicate address detection on the pod network's links: their link-local
        // addresses, which neighbour discovery speaks from, are usable at once too (a tentative
        // one can leave a pod's first packets waiting seconds for a neighbour).
        no_dad(&cfg.bridge)?;
    }
    rt.set_up(br)
        .map_err(step(format!("set bridge {} up", cfg.bridge)))?;
    netns::sysctl("net.ipv4.ip_forward", "1").map_err(step("enable IPv4 forwarding"))?;
    if let Some((prefix, gw, _)) = v6 {
        let gw_net = Ipv6Net::new(gw, prefix).map_err(|e| KubenetError::Config(e.to_string()))?;
        rt.replace_addr6(br, gw_net)
            .map_err(step(format!("put {gw_net} on bridge {}", cfg.bridge)))?;
        netns::sysctl("net.ipv6.conf.all.forwarding", "1")
            .map_err(step("enable IPv6 forwarding"))?;
    }
    // hostPorts on 127.0.0.1: the DNATed flow leaves through the bridge with a loopback source
    // (then masqueraded, table.rs); without route_localnet the kernel drops it as martian.
    // Upstream's portmap plugin sets the same bit on the interface that routes to the pod.
    netns::sysctl(&format!("net.ipv4.conf.{}.route_localnet", cfg.bridge), "1").map_err(step(
        format!("enable route_localnet on bridge {}", cfg.bridge),
    ))?;

    // The veth: eth0 born in the pod's namespace, the host end on the bridge.
    let host = host_veth(att.container_id);
    if let Some(old) = rt
        .link_index(&host)
        .map_err(step("look up the pod's veth"))?
    {
        rt.del_link(old)
            .map_err(step(format!("remove stale veth {host}")))?;
    }
    let pod_ns = std::fs::File::open(att.netns).map_err(step(format!(
        "open the pod network namespace {}",
        att.netns
    )))?;
    rt.add_veth(&host, att.ifname, Some(pod_ns.as_fd()), cfg.mtu)
        .map_err(step(format!(
            "create veth {host} / {} (pod side)",
            att.ifname
        )))?;
    let hi = rt
        .index(&host)
        .map_err(step(format!("look up veth {host}")))?;
    rt.set_master(hi, br)
        .map_err(step(format!("attach {host} to bridge {}", cfg.bridge)))?;
    if cfg.hairpin {
        rt.set_hairpin(hi, true)
            .map_err(step(format!("turn hairpin on for {host}")))?;
    }
    if v6.is_some() {
        no_dad(&host)?;
    }
    rt.set_up(hi).map_err(step(format!("set {host} up")))?;

    // Inside the pod: address, link up, default route.
    let (ifname, prefix, gw) = (
        att.ifname.to_string(),
        cfg.subnet.prefix_len(),
        cfg.gateway(),
    );
    netns::run_in(
        std::path::Path::new(att.netns),
        move || -> io::Result<()> {
            let mut rt = Rtnl::open()?;
            let i = rt.index(&ifname)?;
            rt.replace_addr(i, Ipv4Net::new(ip, prefix).map_err(io::Error::other)?)?;
            if v6.is_some() {
                netns::sysctl(&format!("net.ipv6.conf.{ifname}.accept_dad"), "0")?;
            }
            rt.set_up(i)?;
            rt.replace_route(Ipv4Net::default(), &[(Some(gw), i)])?;
            if let Some((prefix6, gw6, addr6)) = v6 {
                rt.replace_addr6(i, Ipv6Net::new(addr6, prefix6).map_err(io::Error::other)?)?;
                rt.replace_route6(Ipv6Net::default(), Some(gw6), i)?;
            }
            Ok(())
        },
    )
    .and_then(|r| r)
    .map_err(step(format!(
        "configure {} in the pod's namespace ({ip}/{prefix} via {gw})",
        att.ifname
    )))?;

    table::ensure(cfg).map_err(step("program nftables table inet rktup-kubenet"))?;
    if !ports.is_empty() {
        table::add_pod(att.container_id, ip, v6.map(|(_, _, addr)| addr), ports)?;
    }
    Ok(())
}

/// `net.ipv6.conf.<link>.accept_dad=0`, before the link goes up.
fn no_dad(link: &str) -> Result<(), KubenetError> {
    netns::sysctl(&format!("net.ipv6.conf.{link}.accept_dad"), "0").map_err(step(format!(
        "turn duplicate address detection off on {link}"
    )))
}

fn detach(
    cfg: &Config,
    att: &Attachment,
    store: &ipam::Store,
    ports: &[HostPort],
) -> Result<(), KubenetError> {
    let mut first: Option<KubenetError> = None;
    if let Err(e) = table::remove_pod(att.container_id, ports) {
        first.get_or_insert(e);
    }
    let host = host_veth(att.container_id);
    let r = Rtnl::open().and_then(|mut rt| match rt.link_index(&host)? {
        Some(i) => rt.del_link(i),
        None => Ok(()),
    });
    if let Err(e) = r {
        first.get_or_insert(step(format!("remove veth {host}"))(e));
    }
    if let Err(e) = store.release(att.container_id) {
        first.get_or_insert(step("release the pod's address")(e));
    }
    if store.reserved().is_empty() {
        if let Err(e) = table::remove() {
            first.get_or_insert(step("remove nftables table inet rktup-kubenet")(e));
        }
    }
    let _ = cfg;
    first.map_or(Ok(()), Err)
}

/// DEL: everything of the pod goes; what is already gone is fine.
pub fn del(conf: &Value, att: &Attachment) -> Result<(), KubenetError> {
    let cfg = Config::parse(conf)?;
    let ports = host_ports(conf)?;
    let store =
        ipam::Store::lock(&cfg.data_dir, &cfg.network).map_err(step("lock the IPAM store"))?;
    detach(&cfg, att, &store, &ports)
}

/// CHECK: the pod still holds its address and its veth is on the bridge.
pub fn check(conf: &Value, att: &Attachment) -> Result<(), KubenetError> {
    let cfg = Config::parse(conf)?;
    let store =
        ipam::Store::lock(&cfg.data_dir, &cfg.network).map_err(step("lock the IPAM store"))?;
    if store.of(att.container_id).is_none() {
        return Err(step("find the pod's address")(io::Error::new(
            io::ErrorKind::NotFound,
            format!("none reserved for {}", att.container_id),
        )));
    }
    let host = host_veth(att.container_id);
    Rtnl::open()
        .and_then(|mut rt| rt.index(&host))
        .map(|_| ())
        .map_err(step(format!("find veth {host}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_ports_parse_with_clear_errors() {
        let c = conflist("10.244.1.0/24", std::path::Path::new("/x/ipam"));
        let mut p = c["plugins"][0].clone();
        let cfg = Config::parse(&p).unwrap();
        assert_eq!(cfg.gateway().to_string(), "10.244.1.1");
        assert_eq!((cfg.bridge.as_str(), cfg.mtu), ("cbr0", Some(1460)));
        p["runtimeConfig"] = json!({"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 53, "containerPort": 53, "protocol": "UDP"}]});
        assert_eq!(
            host_ports(&p).unwrap(),
            vec![
                HostPort {
                    proto: 6,
                    host_port: 8080,
                    container_port: 80
                },
                HostPort {
                    proto: 17,
                    host_port: 53,
                    container_port: 53
                }
            ]
        );
        p["runtimeConfig"]["portMappings"][0]["protocol"] = json!("icmp");
        assert!(host_ports(&p)
            .unwrap_err()
            .to_string()
            .contains("tcp, udp, sctp"));
        p["subnet"] = json!("fd00::/64");
        assert!(Config::parse(&p)
            .unwrap_err()
            .to_string()
            .contains("IPv4 CIDR"));
        // Dual-stack: the IPv6 CIDR rides along; a pod's IPv6 address mirrors its IPv4 offset.
        let c = conflist(
            "10.244.1.0/24, fd00:10:244:1::/64",
            std::path::Path::new("/x/ipam"),
        );
        let cfg = Config::parse(&c["plugins"][0]).unwrap();
        assert_eq!(cfg.gateway6().unwrap().to_string(), "fd00:10:244:1::1");
        assert_eq!(
            cfg.ipv6_for("10.244.1.37".parse().unwrap())
                .unwrap()
                .to_string(),
            "fd00:10:244:1::25"
        );
        let mut p = c["plugins"][0].clone();
        p["subnet6"] = json!("fd00::/121");
        assert!(Config::parse(&p)
            .unwrap_err()
            .to_string()
            .contains("needs at least as many addresses (a /120 or larger)"));
        p["subnet6"] = json!("10.1.0.0/16");
        assert!(Config::parse(&p)
            .unwrap_err()
            .to_string()
            .contains("not an IPv6 CIDR"));
        let v = host_veth("0b7c3a3e-1111-4222-8333-444455556666");
        assert!(v.len() <= 15 && v.starts_with("veth"), "{v}");
    }
}
