//! rtnetlink: the links (bridges, veth pairs), IPv4 and IPv6 addresses and routes that `ip link`, `ip
//! addr` and `ip route` would make, as the same kernel messages (`linux/rtnetlink.h`,
//! `linux/if_link.h`). Everything acts in the network namespace of the thread that opened the
//! [`Rtnl`] handle; a veth's peer can be created straight into another namespace.

use crate::nft::msg::Buf;
use crate::socket::{attrs, message, NlSocket, NLM_F_ACK, NLM_F_DUMP};
use ipnet::{Ipv4Net, Ipv6Net};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;

const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_PROTINFO: u16 = 12;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFLA_BRPORT_MODE: u16 = 4;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
/// No duplicate address detection: the address is usable at once instead of "tentative" for
/// a second or more (pod and bridge addresses are handed out by one allocator).
const IFA_F_NODAD: u32 = 0x02;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;

const IFF_UP: u32 = 1;

/// The ifinfomsg header (family, type, index, flags, change mask).
fn ifinfo(family: u8, index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = family;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

/// One IPv4 route of the main table, as a dump lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Net,
    pub oif: Option<u32>,
    pub gateway: Option<Ipv4Addr>,
}

/// A route's next hops: one as `RTA_GATEWAY` (when it has a gateway) and `RTA_OIF`, several as
/// `RTA_MULTIPATH`, a list of rtnexthop (len, flags, hops, ifindex) each followed by its own
/// attributes. Gateways are an address's bytes (4 or 16).
fn next_hops<const N: usize>(b: &mut Buf, hops: &[(Option<[u8; N]>, u32)]) {
    match hops {
        [(gw, dev)] => {
            if let Some(g) = gw {
                b.attr(RTA_GATEWAY, g);
            }
            b.u32_ne(RTA_OIF, *dev);
        }
        many => {
            let mut mp = Vec::new();
            for (gw, dev) in many {
                let mut attrs = Buf::default();
                if let Some(g) = gw {
                    attrs.attr(RTA_GATEWAY, g);
                }
                let len = 8 + attrs.b.len();
                mp.extend_from_slice(&(len as u16).to_ne_bytes());
                mp.push(0);
                mp.push(0);
                mp.extend_from_slice(&dev.to_ne_bytes());
                mp.extend_from_slice(&attrs.b);
            }
            b.attr(RTA_MULTIPATH, &mp);
        }
    }
}

/// A NETLINK_ROUTE socket in the opening thread's network namespace.
pub struct Rtnl {
    nl: NlSocket,
}

impl Rtnl {
    pub fn open() -> io::Result<Rtnl> {
        Ok(Rtnl {
            nl: NlSocket::open(libc::NETLINK_ROUTE, 1 << 20)?,
        })
    }

    fn ack(
        &mut self,
        ty: u16,
        flags: u16,
        header: &[u8],
        body: impl Fn(&mut Buf),
    ) -> io::Result<()> {
        self.nl
            .request(false, 0, |seq| {
                message(ty, flags | NLM_F_ACK, seq, header, &body)
            })
            .map(|_| ())
    }

    /// The index of link `name`, or None when there is none.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        let r = self.nl.request(false, 0, |seq| {
            message(RTM_GETLINK, NLM_F_ACK, seq, &ifinfo(0, 0, 0, 0), |b| {
                b.str(IFLA_IFNAME, name)
            })
        });
        match r {
            Ok(replies) => Ok(replies.first().and_then(|p| {
                p.get(4..8)
                    .map(|i| u32::from_ne_bytes([i[0], i[1], i[2], i[3]]))
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The index of link `name`; an error naming it when there is none.
    pub fn index(&mut self, name: &str) -> io::Result<u32> {
        self.link_index(name)?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no network link {name:?}"))
        })
    }

    /// `ip link add name <name> type bridge [mtu <mtu>]`.
    pub fn add_bridge(&mut self, name: &str, mtu: Option<u32>) -> io::Result<()> {
        self.ack(
            RTM_NEWLINK,
            NLM_F_CREATE | NLM_F_EXCL,
            &ifinfo(0, 0, 0, 0),
            |b| {
                b.str(IFLA_IFNAME, name);
                if let Some(m) = mtu {
                    b.u32_ne(IFLA_MTU, m);
                }
                b.nest(IFLA_LINKINFO, |l| l.str(IFLA_INFO_KIND, "bridge"));
            },
        )
    }

    /// `ip link add <name> [mtu <mtu>] type veth peer name <peer> [netns <ns>]`: the peer is
    /// created straight in `peer_netns` when given.
    pub fn add_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_netns: Option<BorrowedFd>,
        mtu: Option<u32>,
    ) -> io::Result<()> {
        let ns = peer_netns.map(|f| f.as_raw_fd() as u32);
        self.ack(
            RTM_NEWLINK,
            NLM_F_CREATE | NLM_F_EXCL,
            &ifinfo(0, 0, 0, 0),
            |b| {
                b.str(IFLA_IFNAME, name);
                if let Some(m) = mtu {
                    b.u32_ne(IFLA_MTU, m);
                }
                b.nest(IFLA_LINKINFO, |l| {
                    l.str(IFLA_INFO_KIND, "veth");
                    l.nest(IFLA_INFO_DATA, |d| {
                        d.nest(VETH_INFO_PEER, |p| {
                            p.b.extend_from_slice(&ifinfo(0, 0, 0, 0));
                            p.str(IFLA_IFNAME, peer);
                            if let Some(m) = mtu {
                                p.u32_ne(IFLA_MTU, m);
                            }
                            if let Some(fd) = ns {
                                p.u32_ne(IFLA_NET_NS_FD, fd);
                            }
                        })
                    });
                });
            },
        )
    }

    /// `ip link set <index> up`.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        self.ack(RTM_NEWLINK, 0, &ifinfo(0, index, IFF_UP, IFF_UP), |_| {})
    }

    /// `ip link set <index> master <master>`.
    pub fn set_master(&mut self, index: u32, master: u32) -> io::Result<()> {
        self.ack(RTM_NEWLINK, 0, &ifinfo(0, index, 0, 0), |b| {
            b.u32_ne(IFLA_MASTER, master)
        })
    }

    /// `bridge link set dev <index> hairpin on|off`: a bridge port that may send a frame back
    /// out the port it came in (a pod reaching itself through a Service).
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> io::Result<()> {
        self.ack(
            RTM_SETLINK,
            0,
            &ifinfo(libc::AF_BRIDGE as u8, index, 0, 0),
            |b| b.nest(IFLA_PROTINFO, |p| p.attr(IFLA_BRPORT_MODE, &[on as u8])),
        )
    }

    /// `ip link delete <index>` (a veth's peer goes with it).
    pub fn del_link(&mut self, index: u32) -> io::Result<()> {
        self.ack(RTM_DELLINK, 0, &ifinfo(0, index, 0, 0), |_| {})
    }

    /// `ip addr replace <addr>/<prefix> dev <index>`.
    pub fn replace_addr(&mut self, index: u32, addr: Ipv4Net) -> io::Result<()> {
        let mut h = [0u8; 8];
        h[0] = libc::AF_INET as u8;
        h[1] = addr.prefix_len();
        h[3] = RT_SCOPE_UNIVERSE;
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        let ip = addr.addr().octets();
        self.ack(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &h, |b| {
            b.attr(IFA_LOCAL, &ip);
            b.attr(IFA_ADDRESS, &ip);
        })
    }

    /// `ip -6 addr replace <addr>/<prefix> dev <index> nodad`.
    pub fn replace_addr6(&mut self, index: u32, addr: Ipv6Net) -> io::Result<()> {
        let mut h = [0u8; 8];
        h[0] = libc::AF_INET6 as u8;
        h[1] = addr.prefix_len();
        h[3] = RT_SCOPE_UNIVERSE;
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        let ip = addr.addr().octets();
        self.ack(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &h, |b| {
            b.attr(IFA_LOCAL, &ip);
            b.attr(IFA_ADDRESS, &ip);
            b.u32_ne(IFA_FLAGS, IFA_F_NODAD);
        })
    }

    /// `ip -6 route replace <dst> [via <gw>] dev <dev>`.
    pub fn replace_route6(
        &mut self,
        dst: Ipv6Net,
        gw: Option<Ipv6Addr>,
        dev: u32,
    ) -> io::Result<()> {
        self.replace_route6_hops(dst, &[(gw, dev)])
    }

    /// [`Rtnl::replace_route6`] with several next hops (`nexthop via … dev …` for each).
    pub fn replace_route6_hops(
        &mut self,
        dst: Ipv6Net,
        hops: &[(Option<Ipv6Addr>, u32)],
    ) -> io::Result<()> {
        let dst = dst.trunc();
        let hops: Vec<_> = hops
            .iter()
            .map(|(g, d)| (g.map(|g| g.octets()), *d))
            .collect();
        self.new_route(
            libc::AF_INET6 as u8,
            (dst.network().octets(), dst.prefix_len()),
            &hops,
        )
    }

    /// `ip -6 route del <dst>` of the main table; an absent route is not an error.
    pub fn del_route6(&mut self, dst: Ipv6Net) -> io::Result<()> {
        let dst = dst.trunc();
        self.delete_route(
            libc::AF_INET6 as u8,
            (dst.network().octets(), dst.prefix_len()),
        )
    }

    /// `ip route replace <dst> via <gw> dev <dev>`, or with several next hops (`nexthop via …
    /// dev …` for each), or without a gateway (`dev <dev>`, scope link).
    pub fn replace_route(
        &mut self,
        dst: Ipv4Net,
        hops: &[(Option<Ipv4Addr>, u32)],
    ) -> io::Result<()> {
        let dst = dst.trunc();
        let hops: Vec<_> = hops
            .iter()
            .map(|(g, d)| (g.map(|g| g.octets()), *d))
            .collect();
        self.new_route(
            libc::AF_INET as u8,
            (dst.network().octets(), dst.prefix_len()),
            &hops,
        )
    }

    /// `ip route del <dst>` of the main table; an absent route is not an error.
    pub fn del_route(&mut self, dst: Ipv4Net) -> io::Result<()> {
        let dst = dst.trunc();
        self.delete_route(
            libc::AF_INET as u8,
            (dst.network().octets(), dst.prefix_len()),
        )
    }

    /// A route of the main table to `dst` (network bytes, prefix length) of `family` through
    /// `hops`: scope link when no hop has a gateway.
    fn new_route<const N: usize>(
        &mut self,
        family: u8,
        dst: ([u8; N], u8),
        hops: &[(Option<[u8; N]>, u32)],
    ) -> io::Result<()> {
        let scope = if hops.iter().all(|(gw, _)| gw.is_none()) {
            RT_SCOPE_LINK
        } else {
            RT_SCOPE_UNIVERSE
        };
        let h = Self::rtmsg(family, dst.1, scope);
        self.ack(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, &h, |b| {
            b.u32_ne(RTA_TABLE, RT_TABLE_MAIN as u32);
            if dst.1 > 0 {
                b.attr(RTA_DST, &dst.0);
            }
            next_hops(b, hops);
        })
    }

    /// Deletes the main table's route to `dst` of `family`; an absent route is not an error.
    fn delete_route<const N: usize>(&mut self, family: u8, dst: ([u8; N], u8)) -> io::Result<()> {
        let h = Self::rtmsg(family, dst.1, RT_SCOPE_UNIVERSE);
        let r = self.ack(RTM_DELROUTE, 0, &h, |b| {
            b.u32_ne(RTA_TABLE, RT_TABLE_MAIN as u32);
            if dst.1 > 0 {
                b.attr(RTA_DST, &dst.0);
            }
        });
        match r {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r,
        }
    }

    fn rtmsg(family: u8, prefix: u8, scope: u8) -> [u8; 12] {
        let mut h = [0u8; 12];
        h[0] = family;
        h[1] = prefix;
        h[4] = RT_TABLE_MAIN;
        h[5] = RTPROT_BOOT;
        h[6] = scope;
        h[7] = RTN_UNICAST;
        h
    }

    /// The IPv4 routes of the main table (`ip route show`).
    pub fn routes(&mut self) -> io::Result<Vec<Route>> {
        let mut h = [0u8; 12];
        h[0] = libc::AF_INET as u8;
        let replies = self.nl.request(true, 0, |seq| {
            message(RTM_GETROUTE, NLM_F_DUMP, seq, &h, |_| {})
        })?;
        let mut out = Vec::new();
        for r in replies {
            if r.len() < 12 {
                continue;
            }
            let (dst_len, mut table) = (r[1], r[4] as u32);
            let (mut dst, mut oif, mut gateway) = (Ipv4Addr::UNSPECIFIED, None, None);
            let ip = |v: &[u8]| (v.len() >= 4).then(|| Ipv4Addr::new(v[0], v[1], v[2], v[3]));
            let be =
                |v: &[u8]| (v.len() >= 4).then(|| u32::from_ne_bytes([v[0], v[1], v[2], v[3]]));
            for (ty, v) in attrs(&r[12..]) {
                match ty {
                    RTA_DST => dst = ip(v).unwrap_or(dst),
                    RTA_OIF => oif = be(v),
                    RTA_GATEWAY => gateway = ip(v),
                    RTA_TABLE => table = be(v).unwrap_or(table),
                    _ => {}
                }
            }
            if table != RT_TABLE_MAIN as u32 {
                continue;
            }
            if let Ok(dst) = Ipv4Net::new(dst, dst_len) {
                out.push(Route { dst, oif, gateway });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_carry_index_and_flags() {
        let h = ifinfo(7, 3, IFF_UP, IFF_UP);
        assert_eq!(h[0], 7);
        assert_eq!(u32::from_ne_bytes([h[4], h[5], h[6], h[7]]), 3);
        assert_eq!(u32::from_ne_bytes([h[12], h[13], h[14], h[15]]), IFF_UP);
        let r = Rtnl::rtmsg(libc::AF_INET as u8, 24, RT_SCOPE_LINK);
        assert_eq!((r[1], r[4], r[6]), (24, RT_TABLE_MAIN, RT_SCOPE_LINK));
    }
}
