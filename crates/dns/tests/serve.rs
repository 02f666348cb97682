//! The DNS server end to end: the embedded control plane in-process, Services and
//! EndpointSlices created with kube-rs, `serve` on loopback, queries with the real `dig`
//! (Debian's bind9-dnsutils), and a test upstream on loopback (hickory-proto, UDP and TCP) for
//! forwarded names.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rktup_controlplane::{ControlPlane, Handle};
use rktup_dns::{serve, DnsConfig, DnsServer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const DIG: &str = "/usr/bin/dig";

struct Plane {
    handle: Handle,
    _dir: tempfile::TempDir,
}

async fn control_plane() -> Plane {
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = ControlPlane::builder()
        .data_dir(dir.path())
        .bind("127.0.0.1:0".parse().expect("addr"))
        .start()
        .await
        .expect("control plane starts");
    Plane { handle, _dir: dir }
}

async fn admin(p: &Plane) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(p.handle.admin_kubeconfig()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

/// A test upstream: `*.upstream.test` A 192.0.2.<number of labels>; `big.upstream.test` is
/// truncated over UDP and has 40 addresses over TCP; anything else is NXDOMAIN. Both transports
/// count what they answered.
struct Upstream {
    addr: SocketAddr,
    tcp_queries: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn upstream_answer(query: &[u8], udp: bool) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    let q = req.queries.first()?.clone();
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.add_query(q.clone());
    let name = q.name().to_lowercase().to_ascii();
    let zone = Name::from_ascii("upstream.test.").ok()?;
    if !zone.zone_of(&q.name().to_lowercase()) {
        resp.metadata.response_code = ResponseCode::NXDomain;
    } else if name == "big.upstream.test." {
        if udp {
            resp.metadata.truncation = true;
        } else if q.query_type() == RecordType::A {
            for i in 1..=40u8 {
                resp.add_answer(Record::from_rdata(
                    q.name().clone(),
                    60,
                    RData::A(A(Ipv4Addr::new(198, 51, 100, i))),
                ));
            }
        }
    } else if q.query_type() == RecordType::A {
        resp.add_answer(Record::from_rdata(
            q.name().clone(),
            60,
            RData::A(A(Ipv4Addr::new(192, 0, 2, q.name().num_labels()))),
        ));
    }
    resp.to_vec().ok()
}

async fn start_upstream() -> Upstream {
    let udp = UdpSocket::bind("127.0.0.1:0").await.expect("upstream udp");
    let addr = udp.local_addr().expect("addr");
    let tcp = TcpListener::bind(addr).await.expect("upstream tcp");
    let tcp_queries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            if let Some(a) = upstream_answer(&buf[..n], true) {
                let _ = udp.send_to(&a, from).await;
            }
        }
    });
    let count = tcp_queries.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut len = [0u8; 2];
                while s.read_exact(&mut len).await.is_ok() {
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if s.read_exact(&mut q).await.is_err() {
                        return;
                    }
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(a) = upstream_answer(&q, false) else {
                        return;
                    };
                    let mut framed = (a.len() as u16).to_be_bytes().to_vec();
                    framed.extend(a);
                    if s.write_all(&framed).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Upstream { addr, tcp_queries }
}

/// `dig` against the server; returns its whole output (`+noall +answer +authority +comments`
/// plus `extra`).
async fn dig(server: SocketAddr, name: &str, qtype: &str, extra: &[&str]) -> String {
    let mut args: Vec<String> = vec![
        format!("@{}", server.ip()),
        "-p".into(),
        server.port().to_string(),
        "+noall".into(),
        "+comments".into(),
        "+answer".into(),
        "+authority".into(),
        "+additional".into(),
        "+tries=1".into(),
        "+time=5".into(),
        name.into(),
        qtype.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || Command::new(DIG).args(&args).output())
        .await
        .expect("join")
        .expect("dig runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(out: &str) -> &str {
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("?")
}

/// The data of the answer records of `rtype` (the last field(s) of each line), sorted.
fn answers(out: &str, rtype: &str) -> Vec<String> {
    let mut section = "";
    let mut v = Vec::new();
    for line in out.lines() {
        if let Some(s) = line.strip_prefix(";; ") {
            section = s;
            continue;
        }
        if line.starts_with(';') || line.trim().is_empty() || !section.starts_with("ANSWER") {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 5 && f[3] == rtype {
            v.push(f[4..].join(" "));
        }
    }
    v.sort();
    v
}

fn section_has(out: &str, section: &str, needle: &str) -> bool {
    let mut cur = "";
    out.lines().any(|line| {
        if let Some(s) = line.strip_prefix(";; ") {
            cur = s;
            return false;
        }
        cur.starts_with(section) && line.contains(needle)
    })
}

/// The in-addr.arpa name of an IPv4 address.
fn arpa(ip: &str) -> String {
    let mut o: Vec<&str> = ip.split('.').collect();
    o.reverse();
    format!("{}.in-addr.arpa", o.join("."))
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", rktup_testkit::unique())
}

async fn create_ns(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

async fn create_svc(client: &kube::Client, ns: &str, v: serde_json::Value) -> Service {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc: Service = serde_json::from_value(v).expect("service");
    api.create(&PostParams::default(), &svc)
        .await
        .expect("create service")
}

fn slice_json(ns: &str, svc: &str, name: &str, ips: &[(&str, Option<&str>)]) -> serde_json::Value {
    let endpoints: Vec<serde_json::Value> = ips
        .iter()
        .map(|(ip, host)| {
            let mut e = json!({"addresses": [ip], "conditions": {"ready": true}});
            if let Some(h) = host {
                e["hostname"] = json!(h);
            }
            e
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {
            "kubernetes.io/service-name": svc,
            "endpointslice.kubernetes.io/managed-by": "rktup-dns-test"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

/// A control plane, its admin client and a fresh namespace named after `prefix`.
async fn plane_with_ns(prefix: &str) -> (Plane, kube::Client, String) {
    let plane = control_plane().await;
    let client = admin(&plane).await;
    let ns = unique(prefix);
    create_ns(&client, &ns).await;
    (plane, client, ns)
}

async fn create_slice(client: &kube::Client, ns: &str, v: serde_json::Value) {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let slice: EndpointSlice = serde_json::from_value(v).expect("slice");
    api.create(&PostParams::default(), &slice)
        .await
        .expect("create endpointslice");
}

/// `serve` on a free loopback port.
async fn serve_on_loopback(
    client: &kube::Client,
    domain: &str,
    upstreams: Vec<SocketAddr>,
) -> DnsServer {
    serve(
        client.clone(),
        DnsConfig {
            listen: vec!["127.0.0.1:0".parse().expect("addr")],
            cluster_domain: domain.into(),
            upstreams,
            upstream_netns: None,
        },
    )
    .await
    .expect("serve")
}

fn can_dig(test: &str) -> bool {
    let missing = (!std::path::Path::new(DIG).exists()).then_some("dig (bind9-dnsutils)");
    rktup_testkit::can_run(test, missing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_names_forwarding_and_watch_updates_through_dig() {
    if !can_dig("cluster_names_forwarding_and_watch_updates_through_dig") {
        return;
    }
    let (plane, client, ns) = plane_with_ns("dns").await;
    let upstream = start_upstream().await;

    let web = create_svc(
        &client,
        &ns,
        json!({"metadata": {"name": "web"},
               "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
    )
    .await;
    let web_ip: IpAddr = web
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("cluster IP allocated")
        .parse()
        .expect("cluster IP parses");
    create_svc(
        &client,
        &ns,
        json!({"metadata": {"name": "db"},
               "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
    )
    .await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    create_slice(
        &client,
        &ns,
        slice_json(
            &ns,
            "db",
            "db-1",
            &[("10.244.1.5", Some("db-0")), ("10.244.2.6", None)],
        ),
    )
    .await;
    create_svc(
        &client,
        &ns,
        json!({"metadata": {"name": "ext"},
               "spec": {"type": "ExternalName", "externalName": "www.upstream.test"}}),
    )
    .await;

    // Created before `serve`: the first query must already see them (serve waits for the sync).
    let server = serve_on_loopback(&client, "cluster.local", vec![upstream.addr]).await;
    let dns = server.local_addrs()[0];
    assert_ne!(dns.port(), 0);

    let fqdn = |n: &str| format!("{n}.{ns}.svc.cluster.local");

    // ClusterIP service, over UDP and TCP, case-insensitively, TTL 5, authoritative.
    let out = dig(dns, &fqdn("web"), "A", &[]).await;
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert_eq!(answers(&out, "A"), vec![web_ip.to_string()], "{out}");
    assert!(out.contains(" aa"), "authoritative: {out}");
    assert!(
        out.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 5 && f[0] == format!("{}.", fqdn("web")) && f[1] == "5" && f[3] == "A"
        }),
        "TTL 5: {out}"
    );
    let out = dig(dns, &fqdn("web"), "A", &["+tcp"]).await;
    assert_eq!(answers(&out, "A"), vec![web_ip.to_string()], "tcp: {out}");
    let out = dig(dns, &fqdn("WeB").replace("svc", "SVC"), "A", &[]).await;
    assert_eq!(answers(&out, "A"), vec![web_ip.to_string()], "{out}");

    // SRV for a named port, with the address in the additional section.
    let out = dig(dns, &format!("_http._tcp.{}", fqdn("web")), "SRV", &[]).await;
    assert_eq!(
        answers(&out, "SRV"),
        vec![format!("0 100 80 {}.", fqdn("web"))],
        "{out}"
    );
    assert!(
        section_has(&out, "ADDITIONAL", &web_ip.to_string()),
        "{out}"
    );

    // Headless: the endpoints, per-endpoint names, SRV per endpoint.
    let out = dig(dns, &fqdn("db"), "A", &[]).await;
    assert_eq!(
        answers(&out, "A"),
        vec!["10.244.1.5", "10.244.2.6"],
        "{out}"
    );
    let out = dig(dns, &format!("db-0.{}", fqdn("db")), "A", &[]).await;
    assert_eq!(answers(&out, "A"), vec!["10.244.1.5"], "{out}");
    let out = dig(dns, &format!("_pg._tcp.{}", fqdn("db")), "SRV", &[]).await;
    assert_eq!(
        answers(&out, "SRV"),
        vec![
            format!("0 50 5432 10-244-2-6.{}.", fqdn("db")),
            format!("0 50 5432 db-0.{}.", fqdn("db")),
        ],
        "{out}"
    );

    // PTR of the ClusterIP and of an endpoint.
    let out = dig(dns, &arpa(&web_ip.to_string()), "PTR", &[]).await;
    assert_eq!(
        answers(&out, "PTR"),
        vec![format!("{}.", fqdn("web"))],
        "{out}"
    );
    let out = dig(dns, &arpa("10.244.1.5"), "PTR", &[]).await;
    assert_eq!(
        answers(&out, "PTR"),
        vec![format!("db-0.{}.", fqdn("db"))],
        "{out}"
    );

    // ExternalName: the CNAME, then its target's address from upstream.
    let out = dig(dns, &fqdn("ext"), "A", &[]).await;
    assert_eq!(answers(&out, "CNAME"), vec!["www.upstream.test."], "{out}");
    assert_eq!(answers(&out, "A"), vec!["192.0.2.3"], "{out}");

    // Pod records.
    let out = dig(dns, &format!("10-1-2-3.{ns}.pod.cluster.local"), "A", &[]).await;
    assert_eq!(answers(&out, "A"), vec!["10.1.2.3"], "{out}");

    // NXDOMAIN and NODATA carry the zone's SOA.
    let out = dig(dns, &fqdn("nope"), "A", &[]).await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(
        section_has(
            &out,
            "AUTHORITY",
            "SOA\tns.dns.cluster.local. hostmaster.cluster.local."
        ),
        "{out}"
    );
    let out = dig(dns, &fqdn("web"), "AAAA", &[]).await;
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(answers(&out, "AAAA").is_empty(), "{out}");
    assert!(section_has(&out, "AUTHORITY", "SOA"), "{out}");

    // Forwarded names: answered by the upstream, over UDP and TCP; its NXDOMAIN relayed.
    let out = dig(dns, "a.b.upstream.test", "A", &[]).await;
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert_eq!(answers(&out, "A"), vec!["192.0.2.4"], "{out}");
    assert!(
        !out.contains(" aa"),
        "not authoritative for forwarded names: {out}"
    );
    let out = dig(dns, "x.upstream.test", "A", &["+tcp"]).await;
    assert_eq!(answers(&out, "A"), vec!["192.0.2.3"], "{out}");
    let out = dig(dns, "elsewhere.example", "A", &[]).await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    // Truncated upstream answer: retried over TCP, relayed whole to a TCP client.
    let before = upstream
        .tcp_queries
        .load(std::sync::atomic::Ordering::SeqCst);
    let out = dig(dns, "big.upstream.test", "A", &["+tcp"]).await;
    assert_eq!(answers(&out, "A").len(), 40, "{out}");
    assert!(
        upstream
            .tcp_queries
            .load(std::sync::atomic::Ordering::SeqCst)
            > before
    );

    // Watch events change the answers: an endpoint added, the service deleted.
    let patch = slice_json(
        &ns,
        "db",
        "db-1",
        &[
            ("10.244.1.5", Some("db-0")),
            ("10.244.2.6", None),
            ("10.244.3.7", None),
        ],
    );
    slices
        .patch("db-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch endpointslice");
    rktup_testkit::eventually(
        "the third endpoint in DNS",
        Duration::from_secs(20),
        || async {
            let out = dig(dns, &fqdn("db"), "A", &[]).await;
            (answers(&out, "A").len() == 3).then_some(())
        },
    )
    .await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete service");
    rktup_testkit::eventually("web gone from DNS", Duration::from_secs(20), || async {
        let out = dig(dns, &fqdn("web"), "A", &[]).await;
        (status(&out) == "NXDOMAIN").then_some(())
    })
    .await;

    server.shutdown().await;
    plane.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_upstream_is_servfail_and_the_domain_is_configurable() {
    if !can_dig("no_upstream_is_servfail_and_the_domain_is_configurable") {
        return;
    }
    let (plane, client, ns) = plane_with_ns("dnsb").await;
    // A port nothing answers on: the forward times out.
    let dead = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let server = serve_on_loopback(
        &client,
        "corp.internal.",
        vec![dead.local_addr().expect("addr")],
    )
    .await;
    let dns = server.local_addrs()[0];

    // Created after `serve`: seen through the watch.
    create_svc(
        &client,
        &ns,
        json!({"metadata": {"name": "api"},
               "spec": {"clusterIP": "None", "ports": [{"port": 1}]}}),
    )
    .await;
    let mut s = slice_json(&ns, "api", "api-1", &[("10.9.8.7", None)]);
    s["ports"] = json!([]);
    create_slice(&client, &ns, s).await;
    let name = format!("api.{ns}.svc.corp.internal");
    rktup_testkit::eventually("api in DNS", Duration::from_secs(20), || async {
        let out = dig(dns, &name, "A", &[]).await;
        (answers(&out, "A") == vec!["10.9.8.7".to_string()]).then_some(())
    })
    .await;
    // cluster.local is not this cluster's domain: it is forwarded, and with no upstream
    // answering the client gets SERVFAIL.
    let out = dig(dns, &format!("api.{ns}.svc.cluster.local"), "A", &[]).await;
    assert_eq!(status(&out), "SERVFAIL", "{out}");

    server.shutdown().await;
    plane.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_address_is_a_typed_bind_error() {
    let plane = control_plane().await;
    let client = admin(&plane).await;
    let taken = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let err = serve(
        client,
        DnsConfig {
            listen: vec![taken.local_addr().expect("addr")],
            cluster_domain: "cluster.local".into(),
            upstreams: vec![],
            upstream_netns: None,
        },
    )
    .await
    .expect_err("the address is taken");
    assert!(
        matches!(err, rktup_dns::DnsError::Bind { proto: "udp", .. }),
        "{err}"
    );
    plane.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    if !can_dig("large_answers_truncate_over_udp_and_come_whole_over_tcp") {
        return;
    }
    let (plane, client, ns) = plane_with_ns("dnsc").await;
    create_svc(
        &client,
        &ns,
        json!({"metadata": {"name": "many"},
               "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
    )
    .await;
    let ips: Vec<String> = (1..=60).map(|i| format!("10.77.0.{i}")).collect();
    let eps: Vec<(&str, Option<&str>)> = ips.iter().map(|ip| (ip.as_str(), None)).collect();
    create_slice(&client, &ns, slice_json(&ns, "many", "many-1", &eps)).await;
    let server = serve_on_loopback(&client, "cluster.local", vec![]).await;
    let dns = server.local_addrs()[0];
    let name = format!("many.{ns}.svc.cluster.local");

    // 60 addresses do not fit 512 bytes: without EDNS the UDP answer is cut and flagged TC.
    let out = dig(dns, &name, "A", &["+noedns", "+ignore"]).await;
    assert!(out.contains(" tc"), "{out}");
    assert!(answers(&out, "A").len() < 60, "{out}");
    // dig then retries over TCP and gets everything; with EDNS (1232 bytes) UDP suffices.
    let out = dig(dns, &name, "A", &["+noedns"]).await;
    assert_eq!(answers(&out, "A").len(), 60, "{out}");
    let out = dig(dns, &name, "A", &[]).await;
    assert_eq!(answers(&out, "A").len(), 60, "{out}");
    assert!(!out.contains(" tc"), "{out}");

    server.shutdown().await;
    plane.handle.shutdown().await;
}

/// The whole chain as in a cluster: a Service with a selector, a pod with an IP (status written
/// as the node would), the control plane's EndpointSlice controller, the watch, DNS — including
/// the pod's `hostname`/`subdomain` record and the API server's own `kubernetes` Service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_made_slices_and_the_kubernetes_service() {
    if !can_dig("controller_made_slices_and_the_kubernetes_service") {
        return;
    }
    let (plane, client, ns) = plane_with_ns("dnsd").await;
    let server = serve_on_loopback(&client, "cluster.local", vec![]).await;
    let dns = server.local_addrs()[0];

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let kubernetes_ip = services
        .get("kubernetes")
        .await
        .expect("the kubernetes Service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("its ClusterIP");
    let out = dig(dns, "kubernetes.default.svc.cluster.local", "A", &[]).await;
    assert_eq!(answers(&out, "A"), vec![kubernetes_ip], "{out}");
    let out = dig(
        dns,
        "_https._tcp.kubernetes.default.svc.cluster.local",
        "SRV",
        &[],
    )
    .await;
    assert_eq!(
        answers(&out, "SRV"),
        vec!["0 100 443 kubernetes.default.svc.cluster.local."],
        "{out}"
    );

    create_svc(
        &client,
        &ns,
        json!({"metadata": {"name": "web"},
               "spec": {"clusterIP": "None", "selector": {"app": "web"},
                        "ports": [{"name": "http", "port": 80}]}}),
    )
    .await;
    // The controller lists pods only on nodes that exist.
    let node = unique("node");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": node}})).expect("node"),
        )
        .await
        .expect("create node");
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    let pod = serde_json::from_value(json!({
        "metadata": {"name": "web-0", "labels": {"app": "web"}},
        "spec": {"hostname": "web-0", "subdomain": "web", "nodeName": node,
                 "containers": [{"name": "c", "image": "busybox"}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    pods.patch_status(
        "web-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "10.55.0.9",
            "podIPs": [{"ip": "10.55.0.9"}],
            "conditions": [{"type": "Ready", "status": "True"}]}})),
    )
    .await
    .expect("pod status");
    let name = format!("web-0.web.{ns}.svc.cluster.local");
    rktup_testkit::eventually(
        "the pod's hostname record",
        Duration::from_secs(30),
        || async {
            let out = dig(dns, &name, "A", &[]).await;
            (answers(&out, "A") == vec!["10.55.0.9".to_string()]).then_some(())
        },
    )
    .await;
    let out = dig(dns, &format!("web.{ns}.svc.cluster.local"), "A", &[]).await;
    assert_eq!(answers(&out, "A"), vec!["10.55.0.9"], "{out}");
    let out = dig(dns, &arpa("10.55.0.9"), "PTR", &[]).await;
    assert_eq!(answers(&out, "PTR"), vec![format!("{name}.")], "{out}");

    // Not ready any more: gone from the headless answer (the controller marks it not ready).
    pods.patch_status(
        "web-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})),
    )
    .await
    .expect("pod status");
    rktup_testkit::eventually(
        "the unready pod out of DNS",
        Duration::from_secs(30),
        || async {
            let out = dig(dns, &name, "A", &[]).await;
            (status(&out) == "NXDOMAIN").then_some(())
        },
    )
    .await;

    server.shutdown().await;
    plane.handle.shutdown().await;
}

/// A local node's DNS runs in the node's namespace but asks this machine's resolvers from the
/// host's (`upstream_netns`). Here the roles are mirrored: the server runs in the test's namespace
/// and the upstream listens on the loopback of a namespace of its own, which only
/// `upstream_netns` reaches (without it the same address is this namespace's loopback: SERVFAIL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_queries_leave_from_the_upstream_namespace() {
    if !can_dig("upstream_queries_leave_from_the_upstream_namespace")
        || !rktup_testkit::can_run_as_root(
            "upstream_queries_leave_from_the_upstream_namespace",
            "a network namespace",
        )
    {
        return;
    }
    // The upstream's thread: a new network namespace with its loopback up, serving there.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: unshare on this thread only; nothing else runs on it.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            let _ = tx.send(Err(std::io::Error::last_os_error().to_string()));
            return;
        }
        // A child inherits this thread's namespace.
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        if !up.is_ok_and(|s| s.success()) {
            let _ = tx.send(Err("ip link set lo up failed".into()));
            return;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let upstream = start_upstream().await;
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let ns = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
            let _ = tx.send(Ok((upstream.addr, ns)));
            std::future::pending::<()>().await
        });
    });
    let (addr, ns) = rx.recv().expect("upstream thread").expect("upstream");

    let plane = control_plane().await;
    let client = admin(&plane).await;
    let start = |netns: Option<std::path::PathBuf>| {
        serve(
            client.clone(),
            DnsConfig {
                listen: vec!["127.0.0.1:0".parse().expect("addr")],
                cluster_domain: "cluster.local".into(),
                upstreams: vec![addr],
                upstream_netns: netns,
            },
        )
    };
    let through = start(Some(ns.into())).await.expect("serve");
    let out = dig(through.local_addrs()[0], "www.upstream.test", "A", &[]).await;
    assert_eq!(answers(&out, "A"), vec!["192.0.2.3".to_string()], "{out}");
    // Truncated over UDP: the TCP retry leaves from that namespace too.
    let out = dig(through.local_addrs()[0], "big.upstream.test", "A", &[]).await;
    assert_eq!(answers(&out, "A").len(), 40, "{out}");

    let here = start(None).await.expect("serve");
    let out = dig(here.local_addrs()[0], "www.upstream.test", "A", &[]).await;
    assert_eq!(status(&out), "SERVFAIL", "{out}");

    through.shutdown().await;
    here.shutdown().await;
    plane.handle.shutdown().await;
}
