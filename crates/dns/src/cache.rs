//! The record cache and CoreDNS's `kubernetes` plugin rules, without IO.
//!
//! Services, EndpointSlices and Namespaces are kept in the compact form a lookup needs; a query
//! reads them under a read lock and builds its records (no API call per query). The rules follow
//! CoreDNS (plugin/kubernetes: parse.go, kubernetes.go findServices/findPods, reverse.go; and
//! plugin/backend_lookup.go for A/AAAA/SRV/SOA) with kubeadm's Corefile: `pods insecure`,
//! `in-addr.arpa ip6.arpa` with fallthrough, `ttl 5`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Namespace, Service as K8sService};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::DnsError;

/// CoreDNS's default TTL for the kubernetes plugin (and kubeadm's Corefile).
pub(crate) const TTL: u32 = 5;

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// How many in-cluster CNAMEs (ExternalName pointing into the zone) are followed.
const MAX_CNAME_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Port {
    name: String,
    protocol: String,
    /// -1: an EndpointSlice without ports (CoreDNS's sentinel: A records, no SRV).
    port: i32,
}

#[derive(Debug, Clone)]
struct Service {
    cluster_ips: Vec<IpAddr>,
    headless: bool,
    /// Set for type ExternalName.
    external_name: Option<String>,
    ports: Vec<Port>,
    publish_not_ready: bool,
}

#[derive(Debug, Clone)]
struct Endpoint {
    ips: Vec<IpAddr>,
    hostname: Option<String>,
    ready: bool,
}

#[derive(Debug, Clone)]
struct Slice {
    service: String,
    ports: Vec<Port>,
    endpoints: Vec<Endpoint>,
}

type Key = (String, String);

/// What to do with a query.
// Returned once per query and consumed at once: boxing the answer would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Answered from the cluster zone (or a reverse name the cache knows).
    Answer(Answer),
    /// Not ours: the upstreams answer it.
    Forward,
}

#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The zone's SOA in the authority section (NXDOMAIN and NODATA).
    pub soa: Option<Record>,
    /// An ExternalName's target outside the zone: its records of the query type are asked
    /// upstream and appended after the CNAME, as CoreDNS's upstream lookup does.
    pub chase: Option<Name>,
}

/// One result of CoreDNS's findServices: an address or a name (ExternalName), a port (-1: none),
/// and the owner name SRV targets use.
#[derive(Debug)]
struct Found {
    host: Host,
    port: i32,
    key: Name,
}

#[derive(Debug)]
enum Host {
    Ip(IpAddr),
    Name(Name),
}

pub(crate) struct Cache {
    /// Lower-case, fully qualified (e.g. `cluster.local.`).
    zone: Name,
    zone_labels: usize,
    services: HashMap<Key, Service>,
    /// (namespace, slice name) → slice.
    slices: HashMap<Key, Slice>,
    /// (namespace, service name) → its slices' names.
    by_service: HashMap<Key, BTreeSet<String>>,
    /// ClusterIP → services, for PTR.
    cluster_ip_index: HashMap<IpAddr, BTreeSet<Key>>,
    /// Endpoint address → slices holding it, for PTR.
    endpoint_ip_index: HashMap<IpAddr, BTreeSet<Key>>,
    namespaces: HashSet<String>,
    /// The SOA serial: the Unix time of the last change, as CoreDNS's `Modified`.
    serial: u32,
    /// The kinds whose first list is in.
    synced: HashSet<&'static str>,
    /// Counts writes: answers kept by the UDP threads are good while it stays the same.
    generation: u64,
}

impl Cache {
    pub(crate) fn new(domain: &str) -> Result<Self, DnsError> {
        let err = |reason: String| DnsError::Domain {
            domain: domain.to_string(),
            reason,
        };
        let trimmed = domain.trim().trim_end_matches('.');
        if trimmed.is_empty() {
            return Err(err("empty".into()));
        }
        let mut zone = Name::from_ascii(trimmed).map_err(|e| err(e.to_string()))?;
        zone.set_fqdn(true);
        let zone = zone.to_lowercase();
        Ok(Cache {
            zone_labels: usize::from(zone.num_labels()),
            zone,
            services: HashMap::new(),
            slices: HashMap::new(),
            by_service: HashMap::new(),
            cluster_ip_index: HashMap::new(),
            endpoint_ip_index: HashMap::new(),
            namespaces: HashSet::new(),
            serial: now_serial(),
            generation: 0,
            synced: HashSet::new(),
        })
    }

    /// Bumped by every writer (`watch::write`).
    pub(crate) fn bump_generation(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn mark_synced(&mut self, kind: &'static str) {
        self.synced.insert(kind);
    }

    pub(crate) fn synced_kinds(&self) -> HashSet<&'static str> {
        self.synced.clone()
    }

    fn touch(&mut self) {
        self.serial = now_serial().max(self.serial);
    }

    // ---- updates from the watches -------------------------------------------------------

    pub(crate) fn apply_service(&mut self, svc: &K8sService) {
        let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
            return;
        };
        let key = (ns.clone(), name.clone());
        self.remove_service_key(&key);
        let spec = svc.spec.clone().unwrap_or_default();
        let external_name = if spec.type_.as_deref() == Some("ExternalName") {
            spec.external_name
                .clone()
                .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        } else {
            None
        };
        let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
        if ips.is_empty() {
            ips.extend(spec.cluster_ip.clone());
        }
        let headless = external_name.is_none() && ips.iter().any(|ip| ip == "None");
        let cluster_ips: Vec<IpAddr> = if external_name.is_some() {
            Vec::new()
        } else {
            ips.iter().filter_map(|ip| ip.parse().ok()).collect()
        };
        let ports = spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| Port {
                name: p.name.unwrap_or_default().to_ascii_lowercase(),
                protocol: p.protocol.unwrap_or_else(|| "TCP".into()),
                port: p.port,
            })
            .collect();
        for ip in &cluster_ips {
            self.cluster_ip_index
                .entry(*ip)
                .or_default()
                .insert(key.clone());
        }
        self.services.insert(
            key,
            Service {
                cluster_ips,
                headless,
                external_name,
                ports,
                publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
            },
        );
        self.touch();
    }

    pub(crate) fn delete_service(&mut self, svc: &K8sService) {
        if let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) {
            self.remove_service_key(&(ns.clone(), name.clone()));
            self.touch();
        }
    }

    fn remove_service_key(&mut self, key: &Key) {
        if let Some(old) = self.services.remove(key) {
            for ip in old.cluster_ips {
                if let Some(set) = self.cluster_ip_index.get_mut(&ip) {
                    set.remove(key);
                    if set.is_empty() {
                        self.cluster_ip_index.remove(&ip);
                    }
                }
            }
        }
    }

    pub(crate) fn apply_slice(&mut self, es: &EndpointSlice) {
        let (Some(ns), Some(name)) = (&es.metadata.namespace, &es.metadata.name) else {
            return;
        };
        let key = (ns.clone(), name.clone());
        self.remove_slice_key(&key);
        let Some(service) = es
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned()
        else {
            // Not a Service's slice: CoreDNS indexes it under no Service either.
            self.touch();
            return;
        };
        let mut ports: Vec<Port> = es
            .ports
            .iter()
            .flatten()
            .map(|p| Port {
                name: p.name.clone().unwrap_or_default().to_ascii_lowercase(),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port: p.port.unwrap_or(-1),
            })
            .collect();
        if ports.is_empty() {
            ports.push(Port {
                name: String::new(),
                protocol: String::new(),
                port: -1,
            });
        }
        let endpoints: Vec<Endpoint> = es
            .endpoints
            .iter()
            .map(|e| Endpoint {
                // FQDN slices carry names, not addresses; they give no records (as in CoreDNS).
                ips: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                hostname: e.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
                ready: e.conditions.as_ref().and_then(|c| c.ready) != Some(false),
            })
            .collect();
        for ep in &endpoints {
            for ip in &ep.ips {
                self.endpoint_ip_index
                    .entry(*ip)
                    .or_default()
                    .insert(key.clone());
            }
        }
        self.by_service
            .entry((ns.clone(), service.clone()))
            .or_default()
            .insert(name.clone());
        self.slices.insert(
            key,
            Slice {
                service,
                ports,
                endpoints,
            },
        );
        self.touch();
    }

    pub(crate) fn delete_slice(&mut self, es: &EndpointSlice) {
        if let (Some(ns), Some(name)) = (&es.metadata.namespace, &es.metadata.name) {
            self.remove_slice_key(&(ns.clone(), name.clone()));
            self.touch();
        }
    }

    fn remove_slice_key(&mut self, key: &Key) {
        let Some(old) = self.slices.remove(key) else {
            return;
        };
        for ip in old.endpoints.iter().flat_map(|e| &e.ips) {
            if let Some(set) = self.endpoint_ip_index.get_mut(ip) {
                set.remove(key);
                if set.is_empty() {
                    self.endpoint_ip_index.remove(ip);
                }
            }
        }
        let svc_key = (key.0.clone(), old.service);
        if let Some(set) = self.by_service.get_mut(&svc_key) {
            set.remove(&key.1);
            if set.is_empty() {
                self.by_service.remove(&svc_key);
            }
        }
    }

    pub(crate) fn apply_namespace(&mut self, ns: &Namespace) {
        if let Some(name) = &ns.metadata.name {
            self.namespaces.insert(name.clone());
            self.touch();
        }
    }

    pub(crate) fn delete_namespace(&mut self, ns: &Namespace) {
        if let Some(name) = &ns.metadata.name {
            self.namespaces.remove(name);
            self.touch();
        }
    }

    /// Replaces every Service (a watch's re-list).
    pub(crate) fn replace_services(&mut self, all: &[K8sService]) {
        let keys: Vec<Key> = self.services.keys().cloned().collect();
        for k in keys {
            self.remove_service_key(&k);
        }
        for s in all {
            self.apply_service(s);
        }
        self.touch();
    }

    pub(crate) fn replace_slices(&mut self, all: &[EndpointSlice]) {
        let keys: Vec<Key> = self.slices.keys().cloned().collect();
        for k in keys {
            self.remove_slice_key(&k);
        }
        for s in all {
            self.apply_slice(s);
        }
        self.touch();
    }

    pub(crate) fn replace_namespaces(&mut self, all: &[Namespace]) {
        self.namespaces.clear();
        for n in all {
            self.apply_namespace(n);
        }
        self.touch();
    }

    // ---- lookups ---------------------------------------------------------------------------

    /// The answer to `qname`/`qtype`. Owner names of the answers keep the query's spelling;
    /// the match is case-insensitive.
    pub(crate) fn lookup(&self, qname: &Name, qtype: RecordType) -> Outcome {
        let mut qname = qname.clone();
        qname.set_fqdn(true);
        let lower = qname.to_lowercase();
        if self.zone.zone_of(&lower) {
            return Outcome::Answer(self.zone_answer(&qname, &lower, qtype, 0));
        }
        if qtype == RecordType::PTR {
            if let Some(a) = self.reverse(&qname, &lower) {
                return Outcome::Answer(a);
            }
        }
        // Reverse zones fall through (kubeadm's `fallthrough in-addr.arpa ip6.arpa`), and
        // everything else is outside the cluster.
        Outcome::Forward
    }

    fn soa(&self) -> Record {
        let mname = self.child(&["ns", "dns"]);
        let rname = self.child(&["hostmaster"]);
        Record::from_rdata(
            self.zone.clone(),
            TTL,
            RData::SOA(SOA::new(mname, rname, self.serial, 7200, 1800, 86400, TTL)),
        )
    }

    /// `labels` (leftmost first) prepended to the zone.
    fn child(&self, labels: &[&str]) -> Name {
        let mut name = self.zone.clone();
        for l in labels.iter().rev() {
            // Labels come from API object names (DNS-1123) or fixed words; a label that does
            // not fit leaves the name as it is rather than failing the query.
            if let Ok(n) = name.prepend_label(*l) {
                name = n;
            }
        }
        name
    }

    fn nxdomain(&self) -> Answer {
        Answer {
            rcode: ResponseCode::NXDomain,
            soa: Some(self.soa()),
            ..Answer::default()
        }
    }

    fn nodata(&self) -> Answer {
        Answer {
            soa: Some(self.soa()),
            ..Answer::default()
        }
    }

    fn zone_answer(&self, qname: &Name, lower: &Name, qtype: RecordType, depth: usize) -> Answer {
        // Labels below the zone, leftmost first.
        let n = usize::from(lower.num_labels()).saturating_sub(self.zone_labels);
        let mut segs: Vec<&str> = Vec::with_capacity(n);
        for label in lower.iter().take(n) {
            match std::str::from_utf8(label) {
                Ok(s) => segs.push(s),
                Err(_) => return self.nxdomain(),
            }
        }

        match segs.as_slice() {
            [] => return self.apex(qname, qtype),
            ["dns-version"] => {
                if qtype == RecordType::TXT {
                    let txt = TXT::new(vec!["1.1.0".into()]);
                    return answer(vec![Record::from_rdata(
                        qname.clone(),
                        TTL,
                        RData::TXT(txt),
                    )]);
                }
                return self.nodata();
            }
            _ => {}
        }

        // parse.go: [endpoint | _port._proto].service.namespace.(svc|pod)
        let Some((&kind, rest)) = segs.split_last() else {
            return self.nodata();
        };
        if kind != "svc" && kind != "pod" {
            return self.nxdomain();
        }
        let Some((&namespace, rest)) = rest.split_last() else {
            return self.nodata();
        };
        let Some((&service, rest)) = rest.split_last() else {
            return if self.namespaces.contains(namespace) {
                self.nodata()
            } else {
                self.nxdomain()
            };
        };
        let (endpoint, port, protocol) = match rest {
            [] => (None, None, None),
            [endpoint] => (Some(*endpoint), None, None),
            [port, proto] => (
                None,
                Some(port.strip_prefix('_').unwrap_or(port)),
                Some(proto.strip_prefix('_').unwrap_or(proto)),
            ),
            _ => return self.nxdomain(),
        };
        if !self.namespaces.contains(namespace) {
            return self.nxdomain();
        }

        let found = if kind == "pod" {
            // `pods insecure`: the name is the address; only the namespace must exist.
            if !rest.is_empty() {
                return self.nxdomain();
            }
            match pod_ip(service) {
                Some(ip) => vec![Found {
                    host: Host::Ip(ip),
                    port: -1,
                    key: lower.clone(),
                }],
                None => return self.nxdomain(),
            }
        } else {
            match self.find_services(namespace, service, endpoint, port, protocol) {
                Some(f) => f,
                None => return self.nxdomain(),
            }
        };
        self.records(qname, qtype, &found, depth)
    }

    fn apex(&self, qname: &Name, qtype: RecordType) -> Answer {
        match qtype {
            RecordType::SOA => {
                let mut soa = self.soa();
                soa.name = qname.clone();
                answer(vec![soa])
            }
            RecordType::NS => answer(vec![Record::from_rdata(
                qname.clone(),
                TTL,
                RData::NS(NS(self.child(&["ns", "dns"]))),
            )]),
            _ => self.nodata(),
        }
    }

    /// CoreDNS's findServices; None is its errNoItems (NXDOMAIN).
    fn find_services(
        &self,
        ns: &str,
        name: &str,
        endpoint: Option<&str>,
        port: Option<&str>,
        protocol: Option<&str>,
    ) -> Option<Vec<Found>> {
        let key = (ns.to_string(), name.to_string());
        let svc = self.services.get(&key)?;
        let svc_name = self.child(&[name, ns, "svc"]);
        let port_ok = |p: &Port| {
            port.is_none_or(|want| want == p.name)
                && protocol.is_none_or(|want| want.eq_ignore_ascii_case(&p.protocol))
        };

        if let Some(target) = &svc.external_name {
            // No endpoints and no port/protocol names under an ExternalName; an address given
            // as externalName is no CNAME target, and CoreDNS answers nothing for it.
            if endpoint.is_some() || port.is_some() || target.parse::<IpAddr>().is_ok() {
                return None;
            }
            let mut target = Name::from_ascii(target).ok()?;
            target.set_fqdn(true);
            return Some(vec![Found {
                host: Host::Name(target),
                port: 0,
                key: svc_name,
            }]);
        }

        if svc.headless || endpoint.is_some() {
            let mut out = Vec::new();
            for slice_name in self.by_service.get(&key).into_iter().flatten() {
                let Some(slice) = self.slices.get(&(ns.to_string(), slice_name.clone())) else {
                    continue;
                };
                for ep in &slice.endpoints {
                    if !ep.ready && !svc.publish_not_ready {
                        continue;
                    }
                    for ip in &ep.ips {
                        let host = endpoint_hostname(ep, ip);
                        if endpoint.is_some_and(|want| want != host) {
                            continue;
                        }
                        for p in slice.ports.iter().filter(|p| port_ok(p)) {
                            out.push(Found {
                                host: Host::Ip(*ip),
                                port: p.port,
                                key: self.child(&[&host, name, ns, "svc"]),
                            });
                        }
                    }
                }
            }
            return if out.is_empty() { None } else { Some(out) };
        }

        let mut out = Vec::new();
        for p in svc.ports.iter().filter(|p| port_ok(p)) {
            for ip in &svc.cluster_ips {
                out.push(Found {
                    host: Host::Ip(*ip),
                    port: p.port,
                    key: svc_name.clone(),
                });
            }
        }
        if out.is_empty() {
            None
        } else {
            Some(out)
        }
    }

    /// Records of `qtype` from what was found (backend_lookup.go A/AAAA/SRV/CNAME); an
    /// existing name without records of the type is NODATA.
    fn records(&self, qname: &Name, qtype: RecordType, found: &[Found], depth: usize) -> Answer {
        let mut out = Answer::default();
        match qtype {
            RecordType::A | RecordType::AAAA => {
                let mut seen = HashSet::new();
                for f in found {
                    match &f.host {
                        Host::Ip(ip) => {
                            if let Some(rd) = addr_rdata(*ip, qtype) {
                                if seen.insert(*ip) {
                                    out.answers.push(Record::from_rdata(qname.clone(), TTL, rd));
                                }
                            }
                        }
                        Host::Name(target) => {
                            out.answers.push(cname(qname, target));
                            self.follow(target, qtype, depth, &mut out);
                        }
                    }
                }
            }
            RecordType::CNAME => {
                for f in found {
                    if let Host::Name(target) = &f.host {
                        out.answers.push(cname(qname, target));
                    }
                }
            }
            RecordType::SRV => {
                // Weight: 100 shared equally among the results (CoreDNS divides by the count
                // before dropping port-less results and duplicates), at least 1.
                let weight = u16::try_from(100 / found.len().max(1)).unwrap_or(1).max(1);
                let mut seen_srv = HashSet::new();
                let mut seen_extra = HashSet::new();
                for f in found {
                    if f.port < 0 {
                        continue;
                    }
                    let port = u16::try_from(f.port).unwrap_or(0);
                    let target = match &f.host {
                        Host::Ip(_) => f.key.clone(),
                        Host::Name(n) => n.clone(),
                    };
                    if seen_srv.insert((target.clone(), port)) {
                        out.answers.push(Record::from_rdata(
                            qname.clone(),
                            TTL,
                            RData::SRV(SRV::new(0, weight, port, target.clone())),
                        ));
                    }
                    if let Host::Ip(ip) = f.host {
                        if seen_extra.insert((target.clone(), ip)) {
                            let t = if ip.is_ipv4() {
                                RecordType::A
                            } else {
                                RecordType::AAAA
                            };
                            if let Some(rd) = addr_rdata(ip, t) {
                                out.additionals.push(Record::from_rdata(target, TTL, rd));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        if out.answers.is_empty() {
            return self.nodata();
        }
        out
    }

    /// An ExternalName's target: inside the zone it is looked up here (CoreDNS resolves
    /// internal names itself); outside, the upstreams are asked.
    fn follow(&self, target: &Name, qtype: RecordType, depth: usize, out: &mut Answer) {
        let lower = target.to_lowercase();
        if !self.zone.zone_of(&lower) {
            out.chase = Some(target.clone());
            return;
        }
        if depth >= MAX_CNAME_DEPTH {
            return;
        }
        let inner = self.zone_answer(target, &lower, qtype, depth + 1);
        out.answers.extend(inner.answers);
        out.chase = out.chase.take().or(inner.chase);
    }

    /// PTR for a ClusterIP (the Service's name) or an endpoint address (its hostname under the
    /// Service); None when neither is known (the query then falls through to upstream).
    fn reverse(&self, qname: &Name, lower: &Name) -> Option<Answer> {
        let ip = arpa_ip(lower)?;
        if let Some(keys) = self.cluster_ip_index.get(&ip) {
            if let Some((ns, name)) = keys.iter().next() {
                let target = self.child(&[name, ns, "svc"]);
                return Some(answer(vec![ptr(qname, target)]));
            }
        }
        let mut targets = BTreeSet::new();
        for key in self.endpoint_ip_index.get(&ip).into_iter().flatten() {
            let Some(slice) = self.slices.get(key) else {
                continue;
            };
            let publish = self
                .services
                .get(&(key.0.clone(), slice.service.clone()))
                .is_some_and(|s| s.publish_not_ready);
            for ep in &slice.endpoints {
                if ep.ips.contains(&ip) && (ep.ready || publish) {
                    let host = endpoint_hostname(ep, &ip);
                    targets.insert(self.child(&[&host, &slice.service, &key.0, "svc"]));
                }
            }
        }
        if targets.is_empty() {
            return None;
        }
        Some(answer(targets.into_iter().map(|t| ptr(qname, t)).collect()))
    }
}

fn answer(answers: Vec<Record>) -> Answer {
    Answer {
        answers,
        ..Answer::default()
    }
}

fn cname(owner: &Name, target: &Name) -> Record {
    Record::from_rdata(owner.clone(), TTL, RData::CNAME(CNAME(target.clone())))
}

fn ptr(owner: &Name, target: Name) -> Record {
    Record::from_rdata(owner.clone(), TTL, RData::PTR(PTR(target)))
}

fn addr_rdata(ip: IpAddr, qtype: RecordType) -> Option<RData> {
    match (ip, qtype) {
        (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(v4))),
        (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(v6))),
        _ => None,
    }
}

/// CoreDNS's endpointHostname: the endpoint's hostname, else its address with dashes
/// (`10-0-0-1`, `2001-db8--1`; a trailing `-` of IPv6 gets a `0`).
fn endpoint_hostname(ep: &Endpoint, ip: &IpAddr) -> String {
    if let Some(h) = &ep.hostname {
        if !h.is_empty() {
            return h.clone();
        }
    }
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => {
            let mut s = v6.to_string().replace(':', "-");
            if s.ends_with('-') {
                s.push('0');
            }
            s
        }
    }
}

/// A pod label as an address: `1-2-3-4` (exactly three dashes, none doubled) is IPv4,
/// anything else has its dashes read as colons (findPods).
fn pod_ip(label: &str) -> Option<IpAddr> {
    let text = if label.matches('-').count() == 3 && !label.contains("--") {
        label.replace('-', ".")
    } else {
        label.replace('-', ":")
    };
    text.parse().ok()
}

/// The full address of an `in-addr.arpa.`/`ip6.arpa.` name (None for partial names).
fn arpa_ip(lower: &Name) -> Option<IpAddr> {
    let net = lower.parse_arpa_name().ok()?;
    if net.prefix_len() != net.max_prefix_len() {
        return None;
    }
    Some(net.addr())
}

fn now_serial() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
