//! Rule fragments in nft's own words (`ip saddr 10.0.0.0/8`, `oifname "eth0"`, `dnat ip to
//! a:p` …), each a short list of [`Expr`]s using the first 32-bit registers. A rule is the
//! concatenation of fragments, then a verdict or an action.

use super::msg::{CmpOp, Expr, MetaKey, Verdict, NFPROTO_IPV4, NFPROTO_IPV6, REG32_0};
use ipnet::{Ipv4Net, Ipv6Net};
use std::net::Ipv4Addr;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SCTP: u8 = 132;
/// RTN_LOCAL, what `fib … type local` compares with.
const RTN_LOCAL: u32 = 2;
/// IPS_DST_NAT, the conntrack status bit of a destination-NATed flow.
const IPS_DST_NAT: u32 = 0x20;

fn cmp(op: CmpOp, data: &[u8]) -> Expr {
    Expr::Cmp {
        sreg: REG32_0,
        op,
        data: data.to_vec(),
    }
}

/// `meta nfproto ipv4`: what an inet table's IPv4 nat rules start with.
pub fn ipv4() -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: MetaKey::NfProto,
            dreg: REG32_0,
        },
        cmp(CmpOp::Eq, &[NFPROTO_IPV4]),
    ]
}

/// `meta nfproto ipv6`.
pub fn ipv6() -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: MetaKey::NfProto,
            dreg: REG32_0,
        },
        cmp(CmpOp::Eq, &[NFPROTO_IPV6]),
    ]
}

fn addr6_in(offset: u32, net: Ipv6Net, negate: bool) -> Vec<Expr> {
    vec![
        Expr::Payload {
            base: 1,
            offset,
            len: 16,
            dreg: REG32_0,
        },
        Expr::Bitwise {
            sreg: REG32_0,
            dreg: REG32_0,
            mask: net.netmask().octets().to_vec(),
            xor: vec![0; 16],
        },
        cmp(
            if negate { CmpOp::Neq } else { CmpOp::Eq },
            &net.network().octets(),
        ),
    ]
}

/// `ip6 saddr <net>` (`!=` with `negate`).
pub fn saddr6_in(net: Ipv6Net, negate: bool) -> Vec<Expr> {
    addr6_in(8, net, negate)
}

/// `ip6 daddr <net>` (`!=` with `negate`).
pub fn daddr6_in(net: Ipv6Net, negate: bool) -> Vec<Expr> {
    addr6_in(24, net, negate)
}

fn addr_in(offset: u32, net: Ipv4Net, negate: bool) -> Vec<Expr> {
    vec![
        Expr::Payload {
            base: 1,
            offset,
            len: 4,
            dreg: REG32_0,
        },
        Expr::Bitwise {
            sreg: REG32_0,
            dreg: REG32_0,
            mask: net.netmask().octets().to_vec(),
            xor: vec![0; 4],
        },
        cmp(
            if negate { CmpOp::Neq } else { CmpOp::Eq },
            &net.network().octets(),
        ),
    ]
}

/// `ip saddr <net>` (`ip saddr != <net>` with `negate`).
pub fn saddr_in(net: Ipv4Net, negate: bool) -> Vec<Expr> {
    addr_in(12, net, negate)
}

/// `ip daddr <net>` (`ip daddr != <net>` with `negate`).
pub fn daddr_in(net: Ipv4Net, negate: bool) -> Vec<Expr> {
    addr_in(16, net, negate)
}

fn ifname(key: MetaKey, name: &str) -> Vec<Expr> {
    // The kernel compares the whole IFNAMSIZ buffer, NUL-padded.
    let mut data = [0u8; 16];
    let n = name.len().min(15);
    data[..n].copy_from_slice(&name.as_bytes()[..n]);
    vec![Expr::Meta { key, dreg: REG32_0 }, cmp(CmpOp::Eq, &data)]
}

/// `oifname "<name>"`.
pub fn oifname(name: &str) -> Vec<Expr> {
    ifname(MetaKey::OifName, name)
}

/// `iifname "<name>"`.
pub fn iifname(name: &str) -> Vec<Expr> {
    ifname(MetaKey::IifName, name)
}

/// `meta l4proto <proto>`.
pub fn l4proto(proto: u8) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: REG32_0,
        },
        cmp(CmpOp::Eq, &[proto]),
    ]
}

/// `th dport <port>` (after an `l4proto` match of a protocol with ports).
pub fn dport(port: u16) -> Vec<Expr> {
    vec![
        Expr::Payload {
            base: 2,
            offset: 2,
            len: 2,
            dreg: REG32_0,
        },
        cmp(CmpOp::Eq, &port.to_be_bytes()),
    ]
}

/// `fib daddr type local`: the packet is for one of this namespace's addresses.
pub fn daddr_local() -> Vec<Expr> {
    vec![
        Expr::FibDaddrType { dreg: REG32_0 },
        cmp(CmpOp::Eq, &RTN_LOCAL.to_ne_bytes()),
    ]
}

/// `ct status dnat`: the flow's destination was translated.
pub fn ct_dnat() -> Vec<Expr> {
    vec![
        Expr::CtStatus { dreg: REG32_0 },
        Expr::Bitwise {
            sreg: REG32_0,
            dreg: REG32_0,
            mask: IPS_DST_NAT.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        cmp(CmpOp::Neq, &[0; 4]),
    ]
}

/// `dnat ip to <ip>:<port>`.
pub fn dnat(ip: Ipv4Addr, port: u16) -> Vec<Expr> {
    vec![
        Expr::Immediate {
            dreg: REG32_0,
            data: ip.octets().to_vec(),
        },
        Expr::Immediate {
            dreg: REG32_0 + 1,
            data: port.to_be_bytes().to_vec(),
        },
        Expr::Dnat {
            family: NFPROTO_IPV4,
            reg_addr: REG32_0,
            reg_port: REG32_0 + 1,
        },
    ]
}

/// `dnat ip6 to [<ip>]:<port>`.
pub fn dnat6(ip: std::net::Ipv6Addr, port: u16) -> Vec<Expr> {
    vec![
        Expr::Immediate {
            dreg: REG32_0,
            data: ip.octets().to_vec(),
        },
        Expr::Immediate {
            dreg: REG32_0 + 4,
            data: port.to_be_bytes().to_vec(),
        },
        Expr::Dnat {
            family: NFPROTO_IPV6,
            reg_addr: REG32_0,
            reg_port: REG32_0 + 4,
        },
    ]
}

/// `masquerade`.
pub fn masquerade() -> Vec<Expr> {
    vec![Expr::Masquerade {
        fully_random: false,
    }]
}

pub fn verdict(v: Verdict) -> Vec<Expr> {
    vec![Expr::Verdict(v)]
}

/// The key of a `meta l4proto . th dport` map element: each part padded to a register.
pub fn proto_port_key(proto: u8, port: u16) -> Vec<u8> {
    let mut k = vec![proto, 0, 0, 0];
    k.extend_from_slice(&port.to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}

/// The lookup side of such a map: `meta l4proto . th dport vmap @<set>`.
pub fn proto_port_vmap(set: &str) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: REG32_0,
        },
        Expr::Payload {
            base: 2,
            offset: 2,
            len: 2,
            dreg: REG32_0 + 1,
        },
        Expr::Lookup {
            set: set.to_string(),
            sreg: REG32_0,
            dreg: Some(super::msg::REG_VERDICT),
            invert: false,
        },
    ]
}

/// nft's type ids for `inet_proto . inet_service` (the kernel only stores them, for `nft list`).
pub const TYPE_PROTO_PORT: u32 = (12 << 6) | 13;

/// A rule made of fragments.
pub fn rule(parts: &[Vec<Expr>]) -> Vec<Expr> {
    parts.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names_are_padded() {
        assert_eq!(proto_port_key(TCP, 80), vec![6, 0, 0, 0, 0, 80, 0, 0]);
        let Expr::Cmp { data, .. } = &oifname("eth0")[1] else {
            panic!("no cmp")
        };
        assert_eq!(data.len(), 16);
        assert_eq!(&data[..5], b"eth0\0");
        let n: Ipv4Net = "10.1.2.0/24".parse().unwrap();
        let Expr::Cmp { data, op, .. } = &saddr_in(n, true)[2] else {
            panic!("no cmp")
        };
        assert_eq!((data.as_slice(), *op), (&[10, 1, 2, 0][..], CmpOp::Neq));
    }
}
