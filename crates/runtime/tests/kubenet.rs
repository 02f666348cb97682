//! The in-process kubenet datapath, with no binary at all (no `ip`, `iptables`, `nft` or CNI
//! plugin): a node namespace, two pod namespaces and a "metadata server" namespace made with
//! rktup-netlink; `kubenet::add` for both pods (one with a hostPort); real TCP between them
//! (pod to pod, node to pod, hostPort from the node — on its address and on 127.0.0.1 —, from
//! another pod and from the pod itself),
//! the metadata address reachable from the node (hostNetwork) but not from a pod; then DEL leaves
//! no veth, no address reservation and no nftables table. A dual-stack node gives its pods an
//! IPv6 address too, and they talk over it. Needs root; touches nothing outside its own
//! namespaces.

use rktup_netlink::{netns, nft::sock::Socket, route::Rtnl};
use rktup_runtime::kubenet;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Namespaces that go when the test ends, whatever happened.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = netns::delete(n);
        }
    }
}

/// A TCP server in namespace `ns` answering every connection with `body`, until dropped.
struct Server(Arc<AtomicBool>);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn serve(ns: &str, port: u16, body: &'static str) -> Server {
    serve_on(ns, "0.0.0.0", port, body)
}

/// [`serve`] on address `on` ("::" for IPv6).
fn serve_on(ns: &str, on: &'static str, port: u16, body: &'static str) -> Server {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let path = netns::path(ns);
    let s = stop.clone();
    std::thread::spawn(move || {
        netns::enter(&path).expect("enter the server's namespace");
        let l = TcpListener::bind((on, port)).expect("listen");
        l.set_nonblocking(true).expect("nonblocking");
        tx.send(()).expect("ready");
        while !s.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut c, _)) => {
                    let _ = c.set_nonblocking(false);
                    let _ = c.write_all(body.as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    rx.recv().expect("server started");
    Server(stop)
}

/// What a connection from namespace `ns` to `to` reads (an error when it cannot connect).
fn fetch(ns: &str, to: SocketAddr) -> std::io::Result<String> {
    netns::run_in(&netns::path(ns), move || {
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        c.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut s = String::new();
        c.read_to_string(&mut s)?;
        Ok(s)
    })?
}

fn lo_up(ns: &str) {
    netns::run_in(&netns::path(ns), || {
        let mut rt = Rtnl::open()?;
        let lo = rt.index("lo")?;
        rt.set_up(lo)
    })
    .expect("thread")
    .expect("lo up");
}

fn plugin_conf(cidr: &str, dir: &std::path::Path, ports: Value) -> Value {
    let mut p = kubenet::conflist(cidr, dir)["plugins"][0].clone();
    p["name"] = json!("kubenet");
    p["cniVersion"] = json!("1.0.0");
    p["runtimeConfig"] = json!({ "portMappings": ports });
    p
}

fn in_node<T: Send + 'static>(node: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    netns::run_in(&netns::path(node), f).expect("enter the node namespace")
}

#[test]
fn pods_reach_each_other_and_host_ports_metadata_is_blocked_and_del_cleans_up() {
    if !rktup_testkit::can_run_as_root("kubenet datapath", "network namespaces") {
        return;
    }
    let u = rktup_testkit::unique();
    let name = |role: &str| format!("rktup-kn{u}-{role}");
    let (node, a, b, md) = (name("node"), name("a"), name("b"), name("md"));
    let _cleanup = Namespaces(vec![node.clone(), a.clone(), b.clone(), md.clone()]);
    for n in [&node, &a, &b, &md] {
        netns::create(n).expect("create namespace");
        lo_up(n);
    }
    let cidr = format!("10.{}.{}.0/24", 200 + (u % 40), (u / 40) % 250);
    let gw: Ipv4Addr = cidr.replace(".0/24", ".1").parse().unwrap();
    let data = tempfile::tempdir().unwrap();
    let dir: PathBuf = data.path().join("ipam");

    // The metadata server: its own namespace on a veth from the node, 169.254.169.254.
    {
        let md2 = md.clone();
        in_node(&node, move || -> std::io::Result<()> {
            let mut rt = Rtnl::open()?;
            let f = std::fs::File::open(netns::path(&md2))?;
            rt.add_veth("md0", "eth0", Some(std::os::fd::AsFd::as_fd(&f)), None)?;
            let i = rt.index("md0")?;
            rt.replace_addr(i, "169.254.169.1/24".parse().unwrap())?;
            rt.set_up(i)
        })
        .expect("metadata veth");
        netns::run_in(&netns::path(&md), || -> std::io::Result<()> {
            let mut rt = Rtnl::open()?;
            let i = rt.index("eth0")?;
            rt.replace_addr(i, "169.254.169.254/24".parse().unwrap())?;
            rt.set_up(i)?;
            rt.replace_route(
                "0.0.0.0/0".parse().unwrap(),
                &[(Some("169.254.169.1".parse().unwrap()), i)],
            )
        })
        .expect("thread")
        .expect("metadata address");
    }
    let _metadata = serve(&md, 80, "metadata");

    // ADD both pods: a with hostPort 18080 -> 8080, b with none.
    let add = |pod: &str, ports: Value| -> Value {
        let conf = plugin_conf(&cidr, &dir, ports);
        let (id, ns) = (format!("id-{pod}"), netns::path(pod).display().to_string());
        in_node(&node, move || {
            kubenet::add(
                &conf,
                &kubenet::Attachment {
                    container_id: &id,
                    netns: &ns,
                    ifname: "eth0",
                },
            )
        })
        .unwrap_or_else(|e| panic!("ADD {pod}: {e}"))
    };
    let ports_a = json!([{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]);
    let ra = add(&a, ports_a.clone());
    let rb = add(&b, json!([]));
    let ip = |r: &Value| -> Ipv4Addr {
        let s = r["ips"][0]["address"].as_str().expect("address");
        s.split('/').next().unwrap().parse().unwrap()
    };
    let (ip_a, ip_b) = (ip(&ra), ip(&rb));
    assert_ne!(ip_a, ip_b);
    assert_eq!(ra["ips"][0]["gateway"], json!(gw.to_string()));
    let _web = serve(&a, 8080, "pod-a");

    let at = |ip: Ipv4Addr, port: u16| SocketAddr::from((ip, port));
    assert_eq!(fetch(&b, at(ip_a, 8080)).expect("pod b -> pod a"), "pod-a");
    assert_eq!(
        fetch(&node, at(ip_a, 8080)).expect("node -> pod a"),
        "pod-a"
    );
    assert_eq!(
        fetch(&node, at(gw, 18080)).expect("node -> hostPort"),
        "pod-a"
    );
    // On the node's loopback too (kind and kubelet's portmap serve hostPorts on 127.0.0.1).
    assert_eq!(
        fetch(&node, at(Ipv4Addr::LOCALHOST, 18080)).expect("node -> hostPort on 127.0.0.1"),
        "pod-a"
    );
    assert_eq!(
        fetch(&b, at(gw, 18080)).expect("pod b -> hostPort of pod a"),
        "pod-a"
    );
    assert_eq!(
        fetch(&a, at(gw, 18080)).expect("pod a -> its own hostPort (hairpin)"),
        "pod-a"
    );
    // Metadata: the node (and so hostNetwork pods) reach it, pods do not.
    let meta = at(kubenet::METADATA_ADDR, 80);
    assert_eq!(fetch(&node, meta).expect("node -> metadata"), "metadata");
    let blocked = fetch(&b, meta);
    assert!(
        blocked.is_err(),
        "a pod reached the metadata server: {blocked:?}"
    );

    // It is the rule that blocks it: ADD again (same pod: same address, new veth) without it.
    let mut conf = plugin_conf(&cidr, &dir, json!([]));
    conf["blockMetadata"] = json!(false);
    let (id_b, ns_b) = (format!("id-{b}"), netns::path(&b).display().to_string());
    let again = in_node(&node, move || {
        kubenet::add(
            &conf,
            &kubenet::Attachment {
                container_id: &id_b,
                netns: &ns_b,
                ifname: "eth0",
            },
        )
    })
    .expect("ADD b again");
    assert_eq!(ip(&again), ip_b, "a repeated ADD keeps the pod's address");
    assert_eq!(
        fetch(&b, meta).expect("pod -> metadata without the rule"),
        "metadata"
    );
    let _ = add(&b, json!([]));
    assert!(fetch(&b, meta).is_err(), "the rule is back");
    assert_eq!(fetch(&b, at(ip_a, 8080)).expect("pod b -> pod a"), "pod-a");

    // A second pod asking for the same hostPort is refused, naming it, and leaves nothing.
    let conf = plugin_conf(&cidr, &dir, ports_a.clone());
    let ns_b = netns::path(&b).display().to_string();
    let taken = in_node(&node, move || {
        kubenet::add(
            &conf,
            &kubenet::Attachment {
                container_id: "id-dup",
                netns: &ns_b,
                ifname: "eth1",
            },
        )
    });
    let e = taken.expect_err("a hostPort mapped twice");
    assert!(e.to_string().contains("18080/tcp"), "{e}");

    // DEL: veths, reservations and (with the last pod) the table go; DEL again is fine.
    for (pod, ports) in [(&a, ports_a.clone()), (&b, json!([])), (&a, ports_a)] {
        let conf = plugin_conf(&cidr, &dir, ports);
        let (id, ns) = (format!("id-{pod}"), netns::path(pod).display().to_string());
        in_node(&node, move || {
            kubenet::del(
                &conf,
                &kubenet::Attachment {
                    container_id: &id,
                    netns: &ns,
                    ifname: "eth0",
                },
            )
        })
        .unwrap_or_else(|e| panic!("DEL {pod}: {e}"));
    }
    let veths = [kubenet::host_veth("id-a"), kubenet::host_veth("id-b")];
    let (left, table) = in_node(&node, move || {
        let mut rt = Rtnl::open().unwrap();
        let left: Vec<String> = veths
            .iter()
            .filter(|v| rt.link_index(v).unwrap().is_some())
            .cloned()
            .collect();
        let table = Socket::open()
            .unwrap()
            .table_exists("rktup-kubenet")
            .unwrap();
        (left, table)
    });
    assert!(left.is_empty(), "veths left: {left:?}");
    assert!(!table, "table inet rktup-kubenet left after the last pod");
    let reserved: Vec<String> = std::fs::read_dir(dir.join("kubenet"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("10."))
        .collect();
    assert!(
        reserved.is_empty(),
        "addresses still reserved: {reserved:?}"
    );
}

/// A dual-stack node (an IPv6 pod CIDR beside the IPv4 one): each pod gets both addresses (the
/// IPv6 one at its IPv4 offset), the CNI result lists both with their gateways and default
/// routes, and pods and the node reach a pod over IPv6 right after ADD (no duplicate address
/// detection wait), and a hostPort answers on the node's IPv6 address; DEL takes the IPv6 side
/// along.
#[test]
fn dual_stack_pods_reach_each_other_over_ipv6() {
    if !rktup_testkit::can_run_as_root("kubenet dual-stack datapath", "network namespaces") {
        return;
    }
    let u = rktup_testkit::unique();
    let name = |role: &str| format!("rktup-kn6{u}-{role}");
    let (node, a, b) = (name("node"), name("a"), name("b"));
    let _cleanup = Namespaces(vec![node.clone(), a.clone(), b.clone()]);
    for n in [&node, &a, &b] {
        netns::create(n).expect("create namespace");
        lo_up(n);
    }
    let v4 = format!("10.{}.{}.0/24", 200 + (u % 40), (u / 40) % 250);
    let v6 = format!("fd00:10:{:x}:{:x}::/64", 200 + (u % 40), (u / 40) % 250);
    let cidrs = format!("{v4},{v6}");
    let data = tempfile::tempdir().unwrap();
    let dir: PathBuf = data.path().join("ipam");
    let ports_a = json!([{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]);
    let add = |pod: &str, ports: Value| -> Value {
        let conf = plugin_conf(&cidrs, &dir, ports);
        let (id, ns) = (format!("id-{pod}"), netns::path(pod).display().to_string());
        in_node(&node, move || {
            kubenet::add(
                &conf,
                &kubenet::Attachment {
                    container_id: &id,
                    netns: &ns,
                    ifname: "eth0",
                },
            )
        })
        .unwrap_or_else(|e| panic!("ADD {pod}: {e}"))
    };
    let (ra, rb) = (add(&a, ports_a.clone()), add(&b, json!([])));
    let addr = |r: &Value, i: usize| -> std::net::IpAddr {
        let s = r["ips"][i]["address"].as_str().expect("address");
        s.split('/').next().unwrap().parse().unwrap()
    };
    let (a4, a6) = (addr(&ra, 0), addr(&ra, 1));
    assert!(a4.is_ipv4() && a6.is_ipv6(), "{ra}");
    let net6: ipnet::Ipv6Net = v6.parse().unwrap();
    let (std::net::IpAddr::V4(a4), std::net::IpAddr::V6(a6)) = (a4, a6) else {
        panic!("{ra}")
    };
    let net4: ipnet::Ipv4Net = v4.parse().unwrap();
    assert_eq!(
        u128::from(a6) - u128::from(net6.network()),
        u128::from(u32::from(a4) - u32::from(net4.network())),
        "the IPv6 address mirrors the IPv4 offset: {ra}"
    );
    let gw6 = std::net::Ipv6Addr::from(u128::from(net6.network()) + 1);
    assert_eq!(ra["ips"][1]["gateway"], json!(gw6.to_string()));
    assert!(
        ra["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "::/0"),
        "{ra}"
    );
    let b6 = addr(&rb, 1);
    assert_ne!(std::net::IpAddr::V6(a6), b6);

    let _web = serve_on(&a, "::", 8080, "pod-a over IPv6");
    let to_a = SocketAddr::from((a6, 8080));
    assert_eq!(
        fetch(&b, to_a).expect("pod b -> pod a over IPv6"),
        "pod-a over IPv6"
    );
    assert_eq!(
        fetch(&node, to_a).expect("node -> pod a over IPv6"),
        "pod-a over IPv6"
    );
    // The hostPort on the node's IPv6 address (the bridge's), from the node and from pod b.
    let hp6 = SocketAddr::from((gw6, 18080));
    assert_eq!(
        fetch(&node, hp6).expect("node -> hostPort over IPv6"),
        "pod-a over IPv6"
    );
    assert_eq!(
        fetch(&b, hp6).expect("pod b -> hostPort of pod a over IPv6"),
        "pod-a over IPv6"
    );
    // IPv4 still works beside it.
    assert_eq!(
        fetch(&b, SocketAddr::from((a4, 8080))).expect("pod b -> pod a over IPv4"),
        "pod-a over IPv6"
    );

    for (pod, ports) in [(&a, ports_a.clone()), (&b, json!([]))] {
        let conf = plugin_conf(&cidrs, &dir, ports);
        let (id, ns) = (format!("id-{pod}"), netns::path(pod).display().to_string());
        in_node(&node, move || {
            kubenet::del(
                &conf,
                &kubenet::Attachment {
                    container_id: &id,
                    netns: &ns,
                    ifname: "eth0",
                },
            )
        })
        .unwrap_or_else(|e| panic!("DEL {pod}: {e}"));
    }
    assert!(
        fetch(&node, to_a).is_err(),
        "pod a still answers on its IPv6 address after DEL"
    );
}
