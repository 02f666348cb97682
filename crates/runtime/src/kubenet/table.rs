//! The node's `inet rktup-kubenet` nftables table (what `portmap` and kubenet's iptables rules
//! did), in the namespace of the calling thread:
//!
//! ```text
//! map hostports { type inet_proto . inet_service : verdict }
//! chain prerouting  { type nat hook prerouting priority dstnat;   meta nfproto ipv4 fib daddr type local meta l4proto . th dport vmap @hostports }
//! chain output      { type nat hook output priority dstnat;       (the same) }
//! chain postrouting { type nat hook postrouting priority srcnat;  meta nfproto ipv4 ct status dnat ip saddr <pods> ip daddr <pods> masquerade
//!                     meta nfproto ipv4 ct status dnat ip saddr 127.0.0.0/8 ip daddr <pods> masquerade }
//! chain forward     { type filter hook forward priority filter;   meta nfproto ipv4 ip saddr <pods> ip daddr 169.254.169.254 drop }
//! chain pod-<id>    { meta l4proto tcp th dport <hostPort> dnat ip to <pod>:<containerPort> … }
//! ```
//!
//! A dual-stack node (`subnet6`) has the same in IPv6 beside it: hostPorts on the node's IPv6
//! addresses (DNAT to the pod's IPv6 address), the masquerade of DNATed pod-to-pod flows, and
//! pod traffic to the IPv6 metadata address (fd00:ec2::254) dropped. hostPorts on `::1` are
//! not served (IPv6 has no `route_localnet`).
//!
//! The base chains are flushed and refilled in one transaction on every ADD (so a changed pod
//! CIDR or a table edited behind our back is repaired); a pod's chain and map elements are
//! added, and removed, in one transaction each.

use super::{HostPort, KubenetError};
use rktup_netlink::nft::expr::{self, rule};
use rktup_netlink::nft::msg::{Batch, Hook, SetSpec, Verdict, SET_MAP};
use rktup_netlink::nft::sock::Socket;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The cloud metadata server's IPv6 address (EC2's IMDS).
const METADATA_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

pub const TABLE: &str = "rktup-kubenet";
const HOSTPORTS: &str = "hostports";

fn pod_chain(id: &str) -> String {
    format!("pod-{id}")
}

fn commit(sock: &mut Socket, batch: Batch) -> io::Result<()> {
    let n = batch.messages as u32 + 2;
    let first = sock.next_seq(0);
    let _ = sock.next_seq(n);
    match sock.commit(batch, first)? {
        Ok(()) => Ok(()),
        Err(nack) => Err(io::Error::from_raw_os_error(nack.errno)),
    }
}

/// The table, its base chains (refilled) and the hostPort map.
pub fn ensure(cfg: &super::Config) -> io::Result<()> {
    let mut sock = Socket::open()?;
    let mut b = Batch::new(sock.next_seq(0));
    b.add_table(TABLE);
    let bases = [
        ("prerouting", "nat", Hook::Prerouting, -100),
        ("output", "nat", Hook::Output, -100),
        ("postrouting", "nat", Hook::Postrouting, 100),
        ("forward", "filter", Hook::Forward, 0),
    ];
    for (name, ty, hook, prio) in bases {
        b.add_chain(TABLE, name, Some((ty, hook, prio)));
    }
    b.add_set(
        TABLE,
        &SetSpec {
            name: HOSTPORTS.into(),
            flags: SET_MAP,
            key_type: expr::TYPE_PROTO_PORT,
            key_len: 8,
            timeout_ms: None,
        },
        1,
    );
    for (name, ..) in bases {
        b.flush_chain(TABLE, name);
    }
    let to_hostports = rule(&[
        expr::ipv4(),
        expr::daddr_local(),
        expr::proto_port_vmap(HOSTPORTS),
    ]);
    b.add_rule(TABLE, "prerouting", &to_hostports);
    b.add_rule(TABLE, "output", &to_hostports);
    if let Some(subnet6) = cfg.subnet6 {
        let to_hostports6 = rule(&[
            expr::ipv6(),
            expr::daddr_local(),
            expr::proto_port_vmap(HOSTPORTS),
        ]);
        b.add_rule(TABLE, "prerouting", &to_hostports6);
        b.add_rule(TABLE, "output", &to_hostports6);
        b.add_rule(
            TABLE,
            "postrouting",
            &rule(&[
                expr::ipv6(),
                expr::ct_dnat(),
                expr::saddr6_in(subnet6, false),
                expr::daddr6_in(subnet6, false),
                expr::masquerade(),
            ]),
        );
        if cfg.block_metadata {
            let md = ipnet::Ipv6Net::new(METADATA_ADDR6, 128).map_err(io::Error::other)?;
            b.add_rule(
                TABLE,
                "forward",
                &rule(&[
                    expr::ipv6(),
                    expr::saddr6_in(subnet6, false),
                    expr::daddr6_in(md, false),
                    expr::verdict(Verdict::Drop),
                ]),
            );
        }
    }
    // DNATed flows into the pods are masqueraded when they come from a pod (hairpin) or from
    // 127.0.0.1: a hostPort reached on the node's loopback (the output hook DNATs it too) leaves
    // through the bridge with a loopback source, which the bridge's route_localnet lets out
    // (`attach`) and this rewrites to the bridge's address so the pod can answer, as upstream's
    // portmap plugin does for localhost (`snat`, its CNI-HOSTPORT-MASQ chain).
    let loopback =
        ipnet::Ipv4Net::new(std::net::Ipv4Addr::LOCALHOST, 8).map_err(io::Error::other)?;
    for source in [cfg.subnet, loopback] {
        b.add_rule(
            TABLE,
            "postrouting",
            &rule(&[
                expr::ipv4(),
                expr::ct_dnat(),
                expr::saddr_in(source, false),
                expr::daddr_in(cfg.subnet, false),
                expr::masquerade(),
            ]),
        );
    }
    if cfg.block_metadata {
        let md = ipnet::Ipv4Net::new(super::METADATA_ADDR, 32).map_err(io::Error::other)?;
        b.add_rule(
            TABLE,
            "forward",
            &rule(&[
                expr::ipv4(),
                expr::saddr_in(cfg.subnet, false),
                expr::daddr_in(md, false),
                expr::verdict(Verdict::Drop),
            ]),
        );
    }
    commit(&mut sock, b)
}

/// The pod's hostPorts: its chain of DNAT rules (per family: to `ip`, and to `ip6` on a
/// dual-stack node) and one map element per port.
pub fn add_pod(
    id: &str,
    ip: Ipv4Addr,
    ip6: Option<Ipv6Addr>,
    ports: &[HostPort],
) -> Result<(), KubenetError> {
    let chain = pod_chain(id);
    let mut sock = Socket::open().map_err(super::step("open a netfilter socket"))?;
    let mut b = Batch::new(sock.next_seq(0));
    b.add_chain(TABLE, &chain, None);
    b.flush_chain(TABLE, &chain);
    let mut elems = Vec::new();
    for p in ports {
        b.add_rule(
            TABLE,
            &chain,
            &rule(&[
                expr::ipv4(),
                expr::l4proto(p.proto),
                expr::dport(p.host_port),
                expr::dnat(ip, p.container_port),
            ]),
        );
        if let Some(ip6) = ip6 {
            b.add_rule(
                TABLE,
                &chain,
                &rule(&[
                    expr::ipv6(),
                    expr::l4proto(p.proto),
                    expr::dport(p.host_port),
                    expr::dnat6(ip6, p.container_port),
                ]),
            );
        }
        elems.push((
            expr::proto_port_key(p.proto, p.host_port),
            Some(Verdict::Goto(chain.clone())),
        ));
    }
    b.add_elements(TABLE, HOSTPORTS, &elems);
    match commit(&mut sock, b) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::EBUSY)) => {
            Err(KubenetError::HostPortTaken {
                ports: ports
                    .iter()
                    .map(|p| format!("{}/{}", p.host_port, proto_name(p.proto)))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
        Err(e) => Err(super::step(format!(
            "program the pod's hostPorts in table inet {TABLE}"
        ))(e)),
    }
}

fn proto_name(p: u8) -> &'static str {
    match p {
        expr::TCP => "tcp",
        expr::UDP => "udp",
        _ => "sctp",
    }
}

/// The pod's chain and map elements, if there are any.
pub fn remove_pod(id: &str, ports: &[HostPort]) -> Result<(), KubenetError> {
    let chain = pod_chain(id);
    let fail = |e| {
        super::step(format!(
            "remove the pod's hostPorts from table inet {TABLE}"
        ))(e)
    };
    let mut sock = Socket::open().map_err(fail)?;
    let Some((chains, _)) = sock.objects(TABLE).map_err(fail)? else {
        return Ok(());
    };
    if !chains.iter().any(|(c, _)| *c == chain) {
        return Ok(());
    }
    let keys: Vec<Vec<u8>> = ports
        .iter()
        .map(|p| expr::proto_port_key(p.proto, p.host_port))
        .collect();
    let mut b = Batch::new(sock.next_seq(0));
    if !keys.is_empty() {
        b.del_elements(TABLE, HOSTPORTS, &keys);
    }
    b.flush_chain(TABLE, &chain);
    b.del_chain(TABLE, &chain);
    commit(&mut sock, b).map_err(fail)
}

/// The whole table (the node's last pod is gone).
pub fn remove() -> io::Result<()> {
    let mut sock = Socket::open()?;
    if !sock.table_exists(TABLE)? {
        return Ok(());
    }
    let mut b = Batch::new(sock.next_seq(0));
    b.del_table(TABLE);
    commit(&mut sock, b)
}
