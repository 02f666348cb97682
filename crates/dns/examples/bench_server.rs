//! The DNS server for the benchmark (BENCHMARKS.md): against a running API server (kubeconfig),
//! optionally creates the benchmark's Services and EndpointSlices, serves, and writes the same
//! records as a dnsmasq hosts file so that dnsmasq can serve them for the comparison.
//!
//! ```text
//! cargo run --release -p rktup-dns --example bench_server -- KUBECONFIG LISTEN UPSTREAM \
//!     [--populate CLUSTERIP_SERVICES HEADLESS_SERVICES ENDPOINTS_EACH] [--hosts FILE]
//! ```
//! It prints `ready <addr>` once serving, and serves until stdin closes.

use std::fmt::Write as _;
use std::net::SocketAddr;

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

const NS: &str = "dnsbench";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!(
            "usage: bench_server KUBECONFIG LISTEN UPSTREAM [--populate N H E] [--hosts FILE]"
        );
        std::process::exit(2);
    }
    let kc = kube::config::Kubeconfig::read_from(&args[0]).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(cfg).expect("client");
    let listen: SocketAddr = args[1].parse().expect("listen address");
    let upstream: SocketAddr = args[2].parse().expect("upstream address");
    let mut populate = None;
    let mut hosts = None;
    let mut i = 3;
    while i < args.len() {
        match args[i].as_str() {
            "--populate" => {
                let n = |k: usize| args[i + k].parse::<usize>().expect("a number");
                populate = Some((n(1), n(2), n(3)));
                i += 4;
            }
            "--hosts" => {
                hosts = Some(args[i + 1].clone());
                i += 2;
            }
            other => panic!("unknown argument {other}"),
        }
    }

    if let Some((n, h, e)) = populate {
        create(&client, n, h, e).await;
    }
    let dns = rktup_dns::serve(
        client.clone(),
        rktup_dns::DnsConfig {
            listen: vec![listen],
            cluster_domain: "cluster.local".into(),
            upstreams: vec![upstream],
            upstream_netns: None,
        },
    )
    .await
    .expect("serve");
    if let Some(path) = hosts {
        std::fs::write(&path, hosts_file(&client).await).expect("write hosts file");
    }
    println!("ready {}", dns.local_addrs()[0]);
    let _ = tokio::task::spawn_blocking(|| {
        use std::io::Read;
        let mut sink = Vec::new();
        std::io::stdin().read_to_end(&mut sink)
    })
    .await;
    dns.shutdown().await;
}

async fn create(client: &kube::Client, n: usize, h: usize, e: usize) {
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).expect("ns");
    let _ = nss.create(&PostParams::default(), &ns).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), NS);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    for i in 0..n {
        let s: Service = serde_json::from_value(json!({
            "metadata": {"name": format!("svc-{i}")},
            "spec": {"ports": [{"name": "http", "port": 80}]}
        }))
        .expect("svc");
        let _ = svcs.create(&PostParams::default(), &s).await;
    }
    for i in 0..h {
        let s: Service = serde_json::from_value(json!({
            "metadata": {"name": format!("hl-{i}")},
            "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}
        }))
        .expect("svc");
        let _ = svcs.create(&PostParams::default(), &s).await;
        let endpoints: Vec<_> = (0..e)
            .map(|j| {
                json!({"addresses": [format!("10.200.{}.{}", i % 250, j + 1)],
                   "conditions": {"ready": true}})
            })
            .collect();
        let es: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": format!("hl-{i}-1"), "labels": {
                "kubernetes.io/service-name": format!("hl-{i}"),
                "endpointslice.kubernetes.io/managed-by": "bench"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
        .expect("slice");
        let _ = slices.create(&PostParams::default(), &es).await;
    }
}

/// `ip name` lines for every Service address and headless endpoint in the namespace: what
/// dnsmasq serves (A and PTR) for the same names.
async fn hosts_file(client: &kube::Client) -> String {
    let svcs: Api<Service> = Api::namespaced(client.clone(), NS);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let mut out = String::new();
    for s in svcs.list(&ListParams::default()).await.expect("list").items {
        let name = s.metadata.name.unwrap_or_default();
        let ip = s.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
        if ip != "None" && !ip.is_empty() {
            let _ = writeln!(out, "{ip} {name}.{NS}.svc.cluster.local");
        }
    }
    for es in slices
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
    {
        let Some(svc) = es
            .metadata
            .labels
            .and_then(|l| l.get("kubernetes.io/service-name").cloned())
        else {
            continue;
        };
        for ep in es.endpoints {
            for a in ep.addresses {
                let _ = writeln!(out, "{a} {svc}.{NS}.svc.cluster.local");
            }
        }
    }
    out
}
