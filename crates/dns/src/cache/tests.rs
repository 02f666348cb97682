//! The lookup rules from a pure cache: every record type, NXDOMAIN/NODATA with the SOA,
//! case-insensitivity, updates and deletions.

use super::*;
use serde_json::json;

fn svc(v: serde_json::Value) -> K8sService {
    serde_json::from_value(v).expect("service")
}

fn slice(v: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(v).expect("slice")
}

fn ns(name: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace")
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("name")
}

/// A cluster with: ClusterIP `web` (ports http/80, dns/53 UDP, dual-stack), headless `db`
/// (two ready endpoints, one with a hostname, one not ready), headless `raw` publishing
/// not-ready addresses, ExternalName `ext` (outside) and `alias` (into the zone).
fn cluster() -> Cache {
    let mut c = Cache::new("cluster.local").expect("cache");
    c.apply_namespace(&ns("default"));
    c.apply_namespace(&ns("prod"));
    c.apply_service(&svc(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00::20"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                           {"name": "dns", "port": 53, "protocol": "UDP"}]}
    })));
    c.apply_service(&svc(json!({
        "metadata": {"name": "db", "namespace": "prod"},
        "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}
    })));
    c.apply_slice(&slice(json!({
        "metadata": {"name": "db-abcde", "namespace": "prod",
                     "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.244.2.6"], "conditions": {}},
            {"addresses": ["10.244.3.7"], "conditions": {"ready": false}}
        ]
    })));
    c.apply_service(&svc(json!({
        "metadata": {"name": "raw", "namespace": "prod"},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": true}
    })));
    c.apply_slice(&slice(json!({
        "metadata": {"name": "raw-1", "namespace": "prod",
                     "labels": {"kubernetes.io/service-name": "raw"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.4.8"], "conditions": {"ready": false}}]
    })));
    c.apply_service(&svc(json!({
        "metadata": {"name": "ext", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "example.org"}
    })));
    c.apply_service(&svc(json!({
        "metadata": {"name": "alias", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}
    })));
    c
}

fn ask(c: &Cache, q: &str, t: RecordType) -> Answer {
    match c.lookup(&name(q), t) {
        Outcome::Answer(a) => a,
        Outcome::Forward => panic!("{q} {t} was forwarded"),
    }
}

fn data(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

fn assert_soa(a: &Answer) {
    let soa = a.soa.as_ref().expect("SOA in authority");
    assert_eq!(soa.name, name("cluster.local."));
    assert_eq!(soa.ttl, TTL);
    let RData::SOA(s) = &soa.data else {
        panic!("not an SOA: {soa:?}")
    };
    assert_eq!(&s.mname, &name("ns.dns.cluster.local."));
    assert_eq!(&s.rname, &name("hostmaster.cluster.local."));
    assert_eq!(
        (s.refresh, s.retry, s.expire, s.minimum),
        (7200, 1800, 86400, 5)
    );
    assert!(s.serial > 1_600_000_000, "serial is a Unix time");
}

fn assert_nxdomain(c: &Cache, q: &str, t: RecordType) {
    let a = ask(c, q, t);
    assert_eq!(a.rcode, ResponseCode::NXDomain, "{q} {t}: {a:?}");
    assert!(a.answers.is_empty());
    assert_soa(&a);
}

fn assert_nodata(c: &Cache, q: &str, t: RecordType) {
    let a = ask(c, q, t);
    assert_eq!(a.rcode, ResponseCode::NoError, "{q} {t}: {a:?}");
    assert!(a.answers.is_empty(), "{q} {t}: {a:?}");
    assert_soa(&a);
}

#[test]
fn cluster_ip_service_a_and_aaaa() {
    let c = cluster();
    let a = ask(&c, "web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(a.rcode, ResponseCode::NoError);
    // One A per address, not per port.
    assert_eq!(data(&a.answers), vec!["10.96.0.20"]);
    assert_eq!(a.answers[0].ttl, 5);
    assert!(a.soa.is_none());
    let aaaa = ask(&c, "web.default.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(data(&aaaa.answers), vec!["fd00::20"]);
    // A name that exists, asked for a type it has not: NODATA with the SOA.
    assert_nodata(&c, "web.default.svc.cluster.local.", RecordType::MX);
    assert_nodata(&c, "web.default.svc.cluster.local.", RecordType::TXT);
}

#[test]
fn names_match_case_insensitively_and_keep_the_query_spelling() {
    let c = cluster();
    let a = ask(&c, "WEB.Default.SVC.Cluster.LOCAL.", RecordType::A);
    assert_eq!(data(&a.answers), vec!["10.96.0.20"]);
    assert_eq!(
        a.answers[0].name.to_ascii(),
        "WEB.Default.SVC.Cluster.LOCAL."
    );
    // A name without the trailing dot is taken as absolute.
    let a = ask(&c, "web.default.svc.cluster.local", RecordType::A);
    assert_eq!(data(&a.answers), vec!["10.96.0.20"]);
}

#[test]
fn missing_names_are_nxdomain_with_the_soa() {
    let c = cluster();
    assert_nxdomain(&c, "nope.default.svc.cluster.local.", RecordType::A);
    assert_nxdomain(&c, "web.nons.svc.cluster.local.", RecordType::A);
    assert_nxdomain(&c, "web.default.what.cluster.local.", RecordType::A);
    assert_nxdomain(&c, "a.b.c.web.default.svc.cluster.local.", RecordType::A);
    // A ClusterIP service has no endpoint names.
    assert_nxdomain(&c, "x.web.default.svc.cluster.local.", RecordType::A);
    // An unknown port name.
    assert_nxdomain(
        &c,
        "_nope._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    // Intermediate names exist: NODATA (namespaces only when they exist).
    assert_nodata(&c, "default.svc.cluster.local.", RecordType::A);
    assert_nxdomain(&c, "nons.svc.cluster.local.", RecordType::A);
    assert_nodata(&c, "svc.cluster.local.", RecordType::A);
    assert_nodata(&c, "pod.cluster.local.", RecordType::A);
}

#[test]
fn zone_apex_soa_ns_and_dns_version() {
    let c = cluster();
    let a = ask(&c, "cluster.local.", RecordType::SOA);
    assert_eq!(a.answers.len(), 1);
    assert_eq!(a.answers[0].record_type(), RecordType::SOA);
    let a = ask(&c, "cluster.local.", RecordType::NS);
    assert_eq!(data(&a.answers), vec!["ns.dns.cluster.local."]);
    assert_nodata(&c, "cluster.local.", RecordType::A);
    let a = ask(&c, "dns-version.cluster.local.", RecordType::TXT);
    assert_eq!(data(&a.answers), vec!["1.1.0"]);
}

#[test]
fn headless_service_returns_ready_endpoints_and_their_names() {
    let c = cluster();
    let a = ask(&c, "db.prod.svc.cluster.local.", RecordType::A);
    // The not-ready endpoint is left out; no condition means ready.
    assert_eq!(data(&a.answers), vec!["10.244.1.5", "10.244.2.6"]);
    let a = ask(&c, "db-0.db.prod.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&a.answers), vec!["10.244.1.5"]);
    // Without a hostname an endpoint is named by its dashed address.
    let a = ask(&c, "10-244-2-6.db.prod.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&a.answers), vec!["10.244.2.6"]);
    assert_nxdomain(&c, "10-244-3-7.db.prod.svc.cluster.local.", RecordType::A);
    assert_nxdomain(&c, "db-9.db.prod.svc.cluster.local.", RecordType::A);
    // IPv4 only: AAAA is NODATA.
    assert_nodata(&c, "db.prod.svc.cluster.local.", RecordType::AAAA);
}

#[test]
fn publish_not_ready_addresses_includes_unready_endpoints() {
    let c = cluster();
    let a = ask(&c, "raw.prod.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&a.answers), vec!["10.244.4.8"]);
    // A slice without ports gives addresses but no SRV.
    assert_nodata(&c, "raw.prod.svc.cluster.local.", RecordType::SRV);
}

#[test]
fn headless_without_endpoints_is_nxdomain_as_in_coredns() {
    let mut c = cluster();
    c.apply_service(&svc(json!({
        "metadata": {"name": "empty", "namespace": "prod"},
        "spec": {"clusterIP": "None", "ports": [{"port": 1}]}
    })));
    assert_nxdomain(&c, "empty.prod.svc.cluster.local.", RecordType::A);
}

#[test]
fn srv_for_named_ports_of_a_cluster_ip_service() {
    let c = cluster();
    let a = ask(
        &c,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    // Dual-stack: two results share the weight, one SRV per target and port.
    assert_eq!(
        data(&a.answers),
        vec!["0 50 80 web.default.svc.cluster.local."]
    );
    assert_eq!(data(&a.additionals), vec!["10.96.0.20", "fd00::20"]);
    assert_eq!(
        a.additionals[0].name,
        name("web.default.svc.cluster.local.")
    );
    let a = ask(
        &c,
        "_dns._udp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        data(&a.answers),
        vec!["0 50 53 web.default.svc.cluster.local."]
    );
    // The protocol must match.
    assert_nxdomain(
        &c,
        "_dns._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    // SRV of the bare name: every port.
    let a = ask(&c, "web.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        data(&a.answers),
        vec![
            "0 25 53 web.default.svc.cluster.local.",
            "0 25 80 web.default.svc.cluster.local."
        ]
    );
}

#[test]
fn srv_of_a_headless_service_names_each_endpoint() {
    let c = cluster();
    let a = ask(&c, "_pg._tcp.db.prod.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        data(&a.answers),
        vec![
            "0 50 5432 10-244-2-6.db.prod.svc.cluster.local.",
            "0 50 5432 db-0.db.prod.svc.cluster.local."
        ]
    );
    let extra: Vec<String> = {
        let mut v: Vec<String> = a
            .additionals
            .iter()
            .map(|r| format!("{} {}", r.name, r.data))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        extra,
        vec![
            "10-244-2-6.db.prod.svc.cluster.local. 10.244.2.6",
            "db-0.db.prod.svc.cluster.local. 10.244.1.5"
        ]
    );
}

#[test]
fn external_name_is_a_cname_chased_upstream_or_in_the_zone() {
    let c = cluster();
    let a = ask(&c, "ext.default.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&a.answers), vec!["example.org."]);
    assert_eq!(a.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(a.chase, Some(name("example.org.")));
    let a = ask(&c, "ext.default.svc.cluster.local.", RecordType::CNAME);
    assert_eq!(data(&a.answers), vec!["example.org."]);
    assert_eq!(a.chase, None);
    // Into the zone: followed here, nothing asked upstream.
    let a = ask(&c, "alias.default.svc.cluster.local.", RecordType::A);
    let got: Vec<String> = a.answers.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(got, vec!["web.default.svc.cluster.local.", "10.96.0.20"]);
    assert_eq!(a.chase, None);
    // No ports or endpoints under an ExternalName.
    assert_nxdomain(
        &c,
        "_http._tcp.ext.default.svc.cluster.local.",
        RecordType::SRV,
    );
}

#[test]
fn ptr_for_cluster_ips_and_endpoints_and_fallthrough() {
    let c = cluster();
    let a = ask(&c, "20.0.96.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(data(&a.answers), vec!["web.default.svc.cluster.local."]);
    let v6 = "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
    let a = ask(&c, v6, RecordType::PTR);
    assert_eq!(data(&a.answers), vec!["web.default.svc.cluster.local."]);
    let a = ask(&c, "5.1.244.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(data(&a.answers), vec!["db-0.db.prod.svc.cluster.local."]);
    let a = ask(&c, "6.2.244.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        data(&a.answers),
        vec!["10-244-2-6.db.prod.svc.cluster.local."]
    );
    // Unknown addresses, not-ready endpoints and partial names fall through to upstream.
    for q in [
        "1.1.168.192.in-addr.arpa.",
        "7.3.244.10.in-addr.arpa.",
        "244.10.in-addr.arpa.",
    ] {
        assert!(matches!(
            c.lookup(&name(q), RecordType::PTR),
            Outcome::Forward
        ));
    }
}

#[test]
fn pod_records_from_dashed_addresses() {
    let c = cluster();
    let a = ask(&c, "10-244-1-5.default.pod.cluster.local.", RecordType::A);
    assert_eq!(data(&a.answers), vec!["10.244.1.5"]);
    let a = ask(&c, "fd00--1.prod.pod.cluster.local.", RecordType::AAAA);
    assert_eq!(data(&a.answers), vec!["fd00::1"]);
    assert_nodata(
        &c,
        "10-244-1-5.default.pod.cluster.local.",
        RecordType::AAAA,
    );
    assert_nxdomain(&c, "not-an-ip.default.pod.cluster.local.", RecordType::A);
    assert_nxdomain(&c, "10-244-1-5.nons.pod.cluster.local.", RecordType::A);
}

#[test]
fn names_outside_the_zone_are_forwarded() {
    let c = cluster();
    for q in ["example.org.", "cluster.local.example.org.", "local."] {
        assert!(matches!(
            c.lookup(&name(q), RecordType::A),
            Outcome::Forward
        ));
    }
}

#[test]
fn the_configured_domain_is_honoured() {
    let mut c = Cache::new("Corp.Example.").expect("cache");
    c.apply_namespace(&ns("default"));
    c.apply_service(&svc(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.0.0.9", "ports": [{"port": 80}]}
    })));
    let a = match c.lookup(&name("web.default.svc.corp.example."), RecordType::A) {
        Outcome::Answer(a) => a,
        Outcome::Forward => panic!("forwarded"),
    };
    assert_eq!(data(&a.answers), vec!["10.0.0.9"]);
    assert!(matches!(
        c.lookup(&name("web.default.svc.cluster.local."), RecordType::A),
        Outcome::Forward
    ));
    assert!(Cache::new("").is_err());
    assert!(Cache::new("a..b").is_err());
}

#[test]
fn updates_and_deletions_change_the_answers() {
    let mut c = cluster();
    // The endpoint becomes not ready, another one appears.
    c.apply_slice(&slice(json!({
        "metadata": {"name": "db-abcde", "namespace": "prod",
                     "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432}],
        "endpoints": [
            {"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": false}},
            {"addresses": ["10.244.9.9"], "conditions": {"ready": true}}
        ]
    })));
    let a = ask(&c, "db.prod.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&a.answers), vec!["10.244.9.9"]);
    assert!(matches!(
        c.lookup(&name("6.2.244.10.in-addr.arpa."), RecordType::PTR),
        Outcome::Forward
    ));
    // A second slice of the same service adds to it.
    c.apply_slice(&slice(json!({
        "metadata": {"name": "db-fghij", "namespace": "prod",
                     "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432}],
        "endpoints": [{"addresses": ["10.244.8.8"]}]
    })));
    let a = ask(&c, "db.prod.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&a.answers), vec!["10.244.8.8", "10.244.9.9"]);
    c.delete_slice(&slice(json!({
        "metadata": {"name": "db-abcde", "namespace": "prod"}, "addressType": "IPv4", "endpoints": []
    })));
    let a = ask(&c, "db.prod.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&a.answers), vec!["10.244.8.8"]);

    // The ClusterIP changes (re-created) and then the service goes.
    c.apply_service(&svc(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.99", "ports": [{"name": "http", "port": 80}]}
    })));
    let a = ask(&c, "web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&a.answers), vec!["10.96.0.99"]);
    assert!(matches!(
        c.lookup(&name("20.0.96.10.in-addr.arpa."), RecordType::PTR),
        Outcome::Forward
    ));
    c.delete_service(&svc(
        json!({"metadata": {"name": "web", "namespace": "default"}}),
    ));
    assert_nxdomain(&c, "web.default.svc.cluster.local.", RecordType::A);
    assert!(matches!(
        c.lookup(&name("99.0.96.10.in-addr.arpa."), RecordType::PTR),
        Outcome::Forward
    ));

    // A re-list replaces everything.
    c.replace_services(&[]);
    assert_nxdomain(&c, "db.prod.svc.cluster.local.", RecordType::A);
    c.replace_namespaces(&[ns("other")]);
    assert_nxdomain(&c, "10-1-1-1.default.pod.cluster.local.", RecordType::A);
}
