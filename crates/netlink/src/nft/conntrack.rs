//! Stale UDP conntrack entries, removed over ctnetlink as kube-proxy does: UDP has no
//! connection end, so a flow DNATed to an endpoint that is gone keeps going there (and one that
//! met a Service with no endpoints keeps bypassing the DNAT) until its entry times out. Entries
//! are dumped and deleted one by one by their original tuple, which every kernel supports.
//! IPv4 and IPv6 alike (a dump per family that has something to clear).

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::sock::{attrs, Socket};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 9;
const UDP: u8 = 17;

/// (source, destination, protocol, source port, destination port) of one tuple.
fn tuple(b: &[u8]) -> Option<(IpAddr, IpAddr, u8, u16, u16)> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, None, None);
    for (ty, v) in attrs(b) {
        match ty {
            1 => {
                for (t, a) in attrs(v) {
                    // CTA_IP_V4_SRC/DST (1, 2), CTA_IP_V6_SRC/DST (3, 4)
                    let v4 = || (a.len() >= 4).then(|| Ipv4Addr::new(a[0], a[1], a[2], a[3]));
                    let v6 = || {
                        let o: [u8; 16] = a.get(..16)?.try_into().ok()?;
                        Some(Ipv6Addr::from(o))
                    };
                    match t {
                        1 => src = v4().map(IpAddr::V4),
                        2 => dst = v4().map(IpAddr::V4),
                        3 => src = v6().map(IpAddr::V6),
                        4 => dst = v6().map(IpAddr::V6),
                        _ => {}
                    }
                }
            }
            2 => {
                for (t, a) in attrs(v) {
                    match t {
                        1 => proto = a.first().copied(),
                        2 if a.len() >= 2 => sport = Some(u16::from_be_bytes([a[0], a[1]])),
                        3 if a.len() >= 2 => dport = Some(u16::from_be_bytes([a[0], a[1]])),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((src?, dst?, proto?, sport.unwrap_or(0), dport.unwrap_or(0)))
}

/// Deletes UDP conntrack entries whose reply comes from one of `gone_endpoints` (ip, port),
/// or whose original destination is one of `now_served` (ip, port) — a Service address that
/// had no endpoints before. Returns how many were deleted.
pub fn flush_udp(
    gone_endpoints: &BTreeSet<(IpAddr, u16)>,
    now_served: &BTreeSet<(IpAddr, u16)>,
) -> io::Result<usize> {
    let mut deleted = 0;
    for (family, v6) in [(libc::AF_INET as u8, false), (libc::AF_INET6 as u8, true)] {
        let of_family = |s: &BTreeSet<(IpAddr, u16)>| s.iter().any(|(ip, _)| ip.is_ipv6() == v6);
        if of_family(gone_endpoints) || of_family(now_served) {
            deleted += flush_family(family, gone_endpoints, now_served)?;
        }
    }
    Ok(deleted)
}

fn flush_family(
    family: u8,
    gone_endpoints: &BTreeSet<(IpAddr, u16)>,
    now_served: &BTreeSet<(IpAddr, u16)>,
) -> io::Result<usize> {
    let mut sock = Socket::open()?;
    let entries = sock
        .get_subsys(
            NFNL_SUBSYS_CTNETLINK,
            IPCTNL_MSG_CT_GET,
            family,
            true,
            |_| {},
        )?
        .map_err(io::Error::from_raw_os_error)?;
    let mut deleted = 0;
    for e in entries {
        let (mut orig_raw, mut orig, mut reply, mut zone) = (None, None, None, None);
        for (ty, v) in attrs(&e) {
            match ty {
                CTA_TUPLE_ORIG => {
                    orig_raw = Some(v.to_vec());
                    orig = tuple(v);
                }
                CTA_TUPLE_REPLY => reply = tuple(v),
                CTA_ZONE => zone = Some(v.to_vec()),
                _ => {}
            }
        }
        let (Some(raw), Some(o), Some(r)) = (orig_raw, orig, reply) else {
            continue;
        };
        if o.2 != UDP {
            continue;
        }
        // the reply tuple's source is the endpoint the flow was DNATed to
        let stale = gone_endpoints.contains(&(r.0, r.3)) || now_served.contains(&(o.1, o.4));
        if !stale {
            continue;
        }
        let res = sock.get_subsys(
            NFNL_SUBSYS_CTNETLINK,
            IPCTNL_MSG_CT_DELETE,
            family,
            false,
            |b| {
                b.nest(CTA_TUPLE_ORIG, |n| n.b.extend_from_slice(&raw));
                if let Some(z) = &zone {
                    b.attr(CTA_ZONE, z);
                }
            },
        )?;
        // ENOENT: it expired meanwhile
        match res {
            Ok(_) => deleted += 1,
            Err(e) if e == libc::ENOENT => {}
            Err(e) => return Err(io::Error::from_raw_os_error(e)),
        }
    }
    Ok(deleted)
}
