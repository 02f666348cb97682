//! Upstream resolvers from a resolv.conf, as kubelet's `--resolv-conf` and CoreDNS's
//! `forward . /etc/resolv.conf` read it.

use std::net::{IpAddr, SocketAddr};

/// The `nameserver` addresses of a resolv.conf, on port 53, in file order, without duplicates.
/// Comments (`#`, `;`) and other options are ignored, as is a nameserver that is not an IP
/// address (an IPv6 link-local one with a `%zone` cannot be reached without its interface).
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        let addr = SocketAddr::new(ip, 53);
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_in_order_without_comments_or_junk() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver  2001:db8::53 # v6\n\
                    ;nameserver 9.9.9.9\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:2\n\
                    nameserver 10.0.0.2\n  nameserver\t192.168.1.1\n";
        assert_eq!(
            upstreams_from_resolv_conf(text),
            vec![
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap(),
                "192.168.1.1:53".parse().unwrap(),
            ]
        );
        assert!(upstreams_from_resolv_conf("").is_empty());
    }
}
