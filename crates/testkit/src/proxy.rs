//! A node in a network namespace, as `rktup local` builds one: eth0 to a "client" namespace
//! (the outside world / another host), bridge cbr0 with pods in their own namespaces, no
//! br_netfilter (bridge-nf-call-iptables=0 in the node namespace). Dual-stack: every address
//! has an IPv6 twin (`fd00:250::/64` outside, `fd00:244::/64` on the bridge, pods answering on
//! theirs too). Every namespace and link is created inside namespaces this test owns; nothing
//! is added to the host.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
pub const NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x250, 0, 0, 0, 0, 0, 2);
pub const CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x250, 0, 0, 0, 0, 0, 1);
/// The IPv6 service range the client routes through the node.
pub const SERVICE_RANGE6: &str = "fd00:96::/112";
pub const TCP_PORT: u16 = 8080;
pub const UDP_PORT: u16 = 5353;

/// Runs `f` on a thread that has entered network namespace `ns`; sockets made there stay in it.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on this thread only, with a valid netns fd.
        let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("thread in netns")
}

/// Runs `ip <args>`, panicking with its output if it fails.
pub fn ip(args: &[&str]) {
    crate::sh(Command::new("ip").args(args));
}

fn sysctl(ns: &str, key: &str, val: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let val = val.to_string();
    let key = key.to_string();
    in_ns(ns, move || {
        // absent when the bridge module's netfilter half is not loaded at all: nothing to turn off
        if std::path::Path::new(&path).exists() || !key.starts_with("net.bridge") {
            std::fs::write(&path, val).unwrap_or_else(|e| panic!("sysctl {path}: {e}"));
        }
    })
}

/// No duplicate address detection on links made in `ns` from now on: link-local addresses
/// (what neighbour discovery speaks from) are usable at once, as the agent's kubenet makes them.
fn no_dad(ns: &str) {
    for scope in ["all", "default"] {
        sysctl(ns, &format!("net.ipv6.conf.{scope}.accept_dad"), "0");
    }
}

pub struct Topo {
    pub node: String,
    pub client: String,
    pub pods: Vec<(String, Ipv4Addr)>,
}

/// A pod's IPv6 address: its IPv4 one's last octet in `fd00:244::/64`.
pub fn pod_ip6(v4: Ipv4Addr) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x244, 0, 0, 0, 0, 0, u16::from(v4.octets()[3]))
}

impl Topo {
    /// `None` (after a SKIP/CI failure) when the machine cannot build namespaces.
    pub fn new(test: &str, pods: usize) -> Option<Topo> {
        if !crate::can_run_as_root(test, "network namespaces") {
            return None;
        }
        let tag = crate::unique();
        let node = format!("h3n{tag}");
        let client = format!("h3c{tag}");
        ip(&["netns", "add", &node]);
        ip(&["netns", "add", &client]);
        let t = Topo {
            node: node.clone(),
            client: client.clone(),
            pods: vec![],
        };
        for ns in [&node, &client] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            no_dad(ns);
        }
        ip(&[
            "-n", &node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
            &client,
        ]);
        ip(&["-n", &node, "addr", "add", "10.250.0.2/24", "dev", "eth0"]);
        ip(&["-n", &client, "addr", "add", "10.250.0.1/24", "dev", "eth0"]);
        ip(&["-n", &node, "link", "set", "eth0", "up"]);
        ip(&["-n", &client, "link", "set", "eth0", "up"]);
        ip(&["-n", &node, "route", "add", "default", "via", "10.250.0.1"]);
        // the client reaches pods and ClusterIPs through the node, as a host does with local up
        ip(&[
            "-n",
            &client,
            "route",
            "add",
            "10.244.0.0/24",
            "via",
            "10.250.0.2",
        ]);
        ip(&[
            "-n",
            &client,
            "route",
            "add",
            "10.96.0.0/12",
            "via",
            "10.250.0.2",
        ]);
        // IPv6 beside it: addresses without DAD, so they are usable at once
        ip(&[
            "-n",
            &node,
            "addr",
            "add",
            "fd00:250::2/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        ip(&[
            "-n",
            &client,
            "addr",
            "add",
            "fd00:250::1/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        ip(&[
            "-n",
            &node,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00:250::1",
        ]);
        for dst in ["fd00:244::/64", SERVICE_RANGE6] {
            ip(&[
                "-n",
                &client,
                "-6",
                "route",
                "add",
                dst,
                "via",
                "fd00:250::2",
            ]);
        }
        ip(&["-n", &node, "link", "add", "cbr0", "type", "bridge"]);
        ip(&["-n", &node, "addr", "add", "10.244.0.1/24", "dev", "cbr0"]);
        ip(&[
            "-n",
            &node,
            "addr",
            "add",
            "fd00:244::1/64",
            "dev",
            "cbr0",
            "nodad",
        ]);
        ip(&["-n", &node, "link", "set", "cbr0", "up"]);
        sysctl(&node, "net.ipv4.ip_forward", "1");
        sysctl(&node, "net.ipv6.conf.all.forwarding", "1");
        sysctl(&node, "net.bridge.bridge-nf-call-iptables", "0");
        // a server "on another node" (the client namespace, reachable only through routing)
        serve(&client, "remote".into());
        let mut t = t;
        for i in 0..pods {
            let pns = format!("h3p{tag}x{i}");
            let addr = Ipv4Addr::new(10, 244, 0, 10 + i as u8);
            ip(&["netns", "add", &pns]);
            no_dad(&pns);
            t.pods.push((pns.clone(), addr));
            let host_if = format!("veth{i}");
            ip(&[
                "-n", &node, "link", "add", &host_if, "type", "veth", "peer", "name", "eth0",
                "netns", &pns,
            ]);
            ip(&["-n", &node, "link", "set", &host_if, "master", "cbr0"]);
            ip(&[
                "-n",
                &node,
                "link",
                "set",
                &host_if,
                "type",
                "bridge_slave",
                "hairpin",
                "on",
            ]);
            ip(&["-n", &node, "link", "set", &host_if, "up"]);
            ip(&["-n", &pns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &pns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            let addr6 = format!("{}/64", pod_ip6(addr));
            ip(&["-n", &pns, "addr", "add", &addr6, "dev", "eth0", "nodad"]);
            ip(&["-n", &pns, "link", "set", "eth0", "up"]);
            ip(&["-n", &pns, "route", "add", "default", "via", "10.244.0.1"]);
            ip(&[
                "-n",
                &pns,
                "-6",
                "route",
                "add",
                "default",
                "via",
                "fd00:244::1",
            ]);
            serve(&pns, format!("pod{i}"));
            serve6(&pns, pod_ip6(addr), format!("pod{i}"));
        }
        Some(t)
    }

    pub fn pod_ns(&self, i: usize) -> &str {
        &self.pods[i].0
    }
    pub fn pod_ip(&self, i: usize) -> Ipv4Addr {
        self.pods[i].1
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        for ns in self
            .pods
            .iter()
            .map(|p| p.0.clone())
            .chain([self.node.clone(), self.client.clone()])
        {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// In a pod: TCP on 8080 answers "<name> <peer>\n" and closes; UDP on 5353 answers the same.
fn serve(ns: &str, name: String) {
    serve_on(ns, std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), name);
}

/// In a pod, on its IPv6 address: TCP on 8080 and UDP on 5353 answer as [`serve`]'s do.
fn serve6(ns: &str, addr: Ipv6Addr, name: String) {
    serve_on(ns, std::net::IpAddr::V6(addr), name);
}

/// [`serve`] on address `bind`.
fn serve_on(ns: &str, bind: std::net::IpAddr, name: String) {
    let (tcp, udp) = in_ns(ns, move || {
        (
            TcpListener::bind((bind, TCP_PORT)).expect("bind tcp"),
            UdpSocket::bind((bind, UDP_PORT)).expect("bind udp"),
        )
    });
    let n2 = name.clone();
    std::thread::spawn(move || {
        for c in tcp.incoming() {
            let Ok(mut c) = c else { continue };
            let peer = c
                .peer_addr()
                .map(|p| p.ip().to_string())
                .unwrap_or_default();
            let _ = c.write_all(format!("{n2} {peer}\n").as_bytes());
            // let the client close first, so TIME_WAIT stays on the client's side: a server-side
            // TIME_WAIT on a masqueraded tuple the NAT later reuses could reset a new connection
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = c.read(&mut [0u8; 16]);
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(format!("{name} {}\n", from.ip()).as_bytes(), from);
        }
    });
}

/// What a TCP connection from namespace `ns` to `to` got.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// (pod name, the source address the pod saw)
    Served(String, String),
    Refused,
    /// no answer at all (dropped)
    TimedOut,
    Other(String),
}

pub fn tcp(ns: &str, to: SocketAddr) -> Reply {
    in_ns(ns, move || tcp_here(to))
}

fn tcp_here(to: SocketAddr) -> Reply {
    // a connect bound on a deadline to tell "dropped" from "refused", not a speed check
    match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
        Ok(mut s) => {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut out = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut s), &mut out);
            let mut it = out.split_whitespace();
            match (it.next(), it.next()) {
                (Some(a), Some(b)) => Reply::Served(a.into(), b.into()),
                _ => Reply::Other(format!("short reply {out:?}")),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Reply::Refused,
        Err(e)
            if e.kind() == std::io::ErrorKind::TimedOut
                || e.kind() == std::io::ErrorKind::WouldBlock =>
        {
            Reply::TimedOut
        }
        Err(e) => Reply::Other(e.to_string()),
    }
}

/// `n` connections from `ns`; how many each pod served (other outcomes under their Debug text).
pub fn spread(ns: &str, to: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    in_ns(ns, move || {
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = match tcp_here(to) {
                Reply::Served(p, _) => p,
                r => format!("{r:?}"),
            };
            *m.entry(k).or_insert(0) += 1;
        }
        m
    })
}

/// Connections from `ns` to `to`, one after another, while `phase` is 1 (it waits while it is
/// 0; 2 ends it, so a phase that ran out before this thread looked is not waited for forever);
/// how many got each outcome ("served", else the Debug text of the [`Reply`]).
pub fn tcp_while(
    ns: &str,
    to: SocketAddr,
    phase: std::sync::Arc<std::sync::atomic::AtomicU8>,
) -> BTreeMap<String, usize> {
    in_ns(ns, move || {
        while phase.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let mut m = BTreeMap::new();
        while phase.load(Ordering::SeqCst) == 1 {
            let k = match tcp_here(to) {
                Reply::Served(..) => "served".to_string(),
                r => format!("{r:?}"),
            };
            *m.entry(k).or_insert(0) += 1;
        }
        m
    })
}

pub fn udp(ns: &str, to: SocketAddr) -> Option<String> {
    in_ns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        for _ in 0..3 {
            s.send_to(b"hi", to).ok()?;
            let mut buf = [0u8; 512];
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return Some(
                    String::from_utf8_lossy(&buf[..n])
                        .split_whitespace()
                        .next()?
                        .to_string(),
                );
            }
        }
        None
    })
}

/// A Service from JSON, as the API would return it.
pub fn service(v: serde_json::Value) -> Service {
    serde_json::from_value(v).expect("service json")
}

/// One EndpointSlice for service `svc` with port (name, number, protocol) and endpoints
/// (ip, node, ready, serving, terminating).
pub fn slice(
    ns: &str,
    svc: &str,
    ports: &[(&str, u16, &str)],
    eps: &[(Ipv4Addr, &str, bool, bool, bool)],
) -> EndpointSlice {
    let eps: Vec<_> = eps
        .iter()
        .map(|(ip, n, r, s, t)| (std::net::IpAddr::V4(*ip), *n, *r, *s, *t))
        .collect();
    slice_of(ns, svc, "abcde", ports, &eps)
}

/// [`slice`] of any family (its `addressType` from the first address), named `<svc>-<suffix>`.
pub fn slice_of(
    ns: &str,
    svc: &str,
    suffix: &str,
    ports: &[(&str, u16, &str)],
    eps: &[(std::net::IpAddr, &str, bool, bool, bool)],
) -> EndpointSlice {
    let family = if eps.first().is_some_and(|e| e.0.is_ipv6()) {
        "IPv6"
    } else {
        "IPv4"
    };
    let v = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-{suffix}"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": family,
        "ports": ports.iter().map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto})).collect::<Vec<_>>(),
        "endpoints": eps.iter().map(|(ip, node, r, s, t)| json!({
            "addresses": [ip.to_string()], "nodeName": node,
            "conditions": {"ready": r, "serving": s, "terminating": t}})).collect::<Vec<_>>(),
    });
    serde_json::from_value(v).expect("slice json")
}
