//! Benchmarks for crates/proxy/BENCHMARKS.md (root; builds its own network namespaces and
//! removes them):
//!
//!   cargo build --release -p rktup-proxy --example bench
//!   target/release/examples/bench [services=1000] [endpoints_per_service=10] [changes=300]
//!
//! 1. scale: N Services × M endpoints on one node — full replace time, the time from an
//!    endpoint change (a new EndpointSlice) to the kernel having committed it (rebuild of the
//!    whole ruleset from the object snapshot + the delta transaction), and RSS.
//! 2. latency: small TCP request/response through the ClusterIP vs straight to the pod IP,
//!    with the big table loaded; and through Service 0's load balancer address, which has 10
//!    `loadBalancerSourceRanges` (the client's is the last), so every new connection also
//!    passes the pre-DNAT firewall check and its chain.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rktup_proxy::model::{ruleset_cached, Cache};
use rktup_proxy::{ruleset, NodeInfo, Programmer};
use rktup_testkit::proxy::{in_ns, ip};
use serde_json::json;

fn svc(i: usize) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": format!("s{i}"), "namespace": "bench"},
        "spec": {"clusterIP": format!("10.96.{}.{}", i / 250, i % 250 + 1),
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))
    .expect("svc")
}

fn slice(i: usize, eps: &[Ipv4Addr]) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": format!("s{i}-x"), "namespace": "bench", "labels": {"kubernetes.io/service-name": format!("s{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps.iter().map(|e| json!({"addresses": [e.to_string()], "nodeName": "other"})).collect::<Vec<_>>()}))
    .expect("slice")
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (nsvc, neps, nchanges) = (
        args.first().copied().unwrap_or(1000),
        args.get(1).copied().unwrap_or(10),
        args.get(2).copied().unwrap_or(300),
    );
    let tag = std::process::id();
    let node = format!("h3bn{tag}");
    let pod_a = format!("h3ba{tag}");
    let pod_b = format!("h3bb{tag}");
    for ns in [&node, &pod_a, &pod_b] {
        ip(&["netns", "add", ns]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    ip(&["-n", &node, "link", "add", "cbr0", "type", "bridge"]);
    ip(&["-n", &node, "addr", "add", "10.244.0.1/24", "dev", "cbr0"]);
    ip(&["-n", &node, "link", "set", "cbr0", "up"]);
    for (i, ns, addr) in [(0, &pod_a, "10.244.0.10"), (1, &pod_b, "10.244.0.11")] {
        let v = format!("veth{i}");
        ip(&[
            "-n", &node, "link", "add", &v, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ]);
        ip(&["-n", &node, "link", "set", &v, "master", "cbr0"]);
        ip(&["-n", &node, "link", "set", &v, "up"]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "route", "add", "default", "via", "10.244.0.1"]);
    }
    in_ns(&node, || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("ip_forward")
    });

    let info = NodeInfo {
        name: "bench-node".into(),
        ips: vec![IpAddr::V4(Ipv4Addr::new(10, 250, 0, 2))],
        cluster_cidrs: vec!["10.244.0.0/16".parse().expect("cidr")],
        pod_cidrs: vec!["10.244.0.0/24".parse().expect("cidr")],
        skip_cluster_ips: vec![],
    };
    let rss0 = rss_kib();
    // service 0 is the real one (pod A), a LoadBalancer with source ranges; the others point
    // at addresses on "other" nodes
    let mut services: Vec<Service> = (0..nsvc).map(svc).collect();
    let mut ranges: Vec<String> = (0..9).map(|i| format!("192.0.{i}.0/24")).collect();
    ranges.push("10.244.0.0/24".into());
    services[0] = serde_json::from_value(json!({
        "metadata": {"name": "s0", "namespace": "bench"},
        "spec": {"clusterIP": "10.96.0.1", "type": "LoadBalancer", "loadBalancerSourceRanges": ranges,
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "10.96.250.250"}]}}}))
    .expect("svc 0");
    let ep =
        |i: usize, j: usize| Ipv4Addr::new(10, 245 + (i / 250) as u8, (i % 250) as u8, j as u8 + 1);
    let mut slices: Vec<EndpointSlice> = (0..nsvc)
        .map(|i| {
            if i == 0 {
                slice(0, &[Ipv4Addr::new(10, 244, 0, 10)])
            } else {
                slice(i, &(0..neps).map(|j| ep(i, j)).collect::<Vec<_>>())
            }
        })
        .collect();
    let total_eps: usize = slices.iter().map(|s| s.endpoints.len()).sum();
    services.truncate(nsvc);

    let report = in_ns(&node, move || {
        let mut out = String::new();
        let t = Instant::now();
        let rs = ruleset(&services, &slices, &info);
        let build = t.elapsed();
        out += &format!(
            "scale: {nsvc} services, {total_eps} endpoints: {} chains, {} rules, {} sets\n",
            rs.chains.len(),
            rs.rule_count(),
            rs.sets.len()
        );
        out += &format!("ruleset build (pure): {}\n", ms(build));
        let mut fulls = vec![];
        let mut p = Programmer::new("rktup-proxy-bench").expect("netlink");
        let mut cache = Cache::default();
        let _ = ruleset_cached(&mut cache, services.iter(), slices.iter(), &info);
        for _ in 0..5 {
            p.invalidate();
            let rs = rs.clone();
            let t = Instant::now();
            p.apply(rs).expect("full apply");
            fulls.push(t.elapsed());
        }
        let full_msgs = p.last_messages;
        out += &format!(
            "full replace ({full_msgs} netlink messages, one transaction): p50 {} max {}\n",
            ms(pct(&mut fulls, 0.5)),
            ms(pct(&mut fulls, 1.0))
        );
        // endpoint changes: one Service's slice gets one endpoint replaced, then the whole
        // ruleset is rebuilt from the snapshot (as the watch loop does) and the delta committed
        let mut total = vec![];
        let mut kernel = vec![];
        let (mut snap, mut build, mut encode) = (vec![], vec![], vec![]);
        let mut msgs = 0;
        for c in 0..nchanges {
            let i = 1 + (c * 7919) % (nsvc - 1).max(1);
            let t = Instant::now();
            let mut eps: Vec<Ipv4Addr> = (0..neps).map(|j| ep(i, j)).collect();
            eps[c % neps] = Ipv4Addr::new(10, 250, (c / 250) as u8, (c % 250) as u8 + 1);
            slices[i] = slice(i, &eps);
            // what the watch loop does: rebuild from the store snapshot with its per-Service
            // cache (only the changed Service is recomputed), apply the delta
            snap.push(t.elapsed());
            let tb = Instant::now();
            let rs = ruleset_cached(&mut cache, services.iter(), slices.iter(), &info);
            build.push(tb.elapsed());
            p.apply(rs).expect("delta apply");
            encode.push(p.last_encode);
            kernel.push(p.last_commit);
            total.push(t.elapsed());
            msgs += p.last_messages;
        }
        out += &format!(
            "endpoint change → committed in the kernel ({nchanges} changes, ~{} messages each): p50 {} p99 {} max {}\n  parts p50/p99: slice update {}/{}, ruleset rebuild {}/{}, diff+encode {}/{}, kernel transaction {}/{}\n",
            msgs / nchanges.max(1),
            ms(pct(&mut total, 0.5)),
            ms(pct(&mut total, 0.99)),
            ms(pct(&mut total, 1.0)),
            ms(pct(&mut snap, 0.5)),
            ms(pct(&mut snap, 0.99)),
            ms(pct(&mut build, 0.5)),
            ms(pct(&mut build, 0.99)),
            ms(pct(&mut encode, 0.5)),
            ms(pct(&mut encode, 0.99)),
            ms(pct(&mut kernel, 0.5)),
            ms(pct(&mut kernel, 0.99)),
        );
        out += &format!("RSS: {} MiB (objects + ruleset + last programmed state; {} MiB before building objects)\n", rss_kib() / 1024, rss0 / 1024);
        std::mem::forget(p); // keep the table for the latency run
        out
    });
    print!("{report}");

    // latency: server in pod A, client in pod B (same node), ClusterIP vs pod IP
    let listener = in_ns(&pod_a, || TcpListener::bind("0.0.0.0:8080").expect("bind"));
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut c = c;
                let mut b = [0u8; 64];
                if c.read(&mut b).is_ok() {
                    let _ = c.write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok");
                }
            });
        }
    });
    let n = 2000;
    let measure = |to: SocketAddr| -> (Duration, Duration) {
        let mut v = in_ns(&pod_b, move || {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let mut s = TcpStream::connect(to).expect("connect");
                s.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
                let mut r = Vec::new();
                s.read_to_end(&mut r).expect("read");
                v.push(t.elapsed());
            }
            v
        });
        (pct(&mut v, 0.5), pct(&mut v, 0.99))
    };
    // warm up both paths
    let _ = measure("10.244.0.10:8080".parse().expect("addr"));
    let (d50, d99) = measure("10.244.0.10:8080".parse().expect("addr"));
    let (c50, c99) = measure("10.96.0.1:80".parse().expect("addr"));
    let (l50, l99) = measure("10.96.250.250:80".parse().expect("addr"));
    let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
    println!("connect+request+response, {n} each, pod → pod on one node: direct pod IP p50 {} p99 {}; via ClusterIP p50 {} p99 {}; via the LB address with 10 source ranges p50 {} p99 {}", us(d50), us(d99), us(c50), us(c99), us(l50), us(l99));
    for ns in [&node, &pod_a, &pod_b] {
        let _ = Command::new("ip").args(["netns", "del", ns]).status();
    }
}
