//! Services + EndpointSlices → the wanted nftables table, as a pure value (no kernel). The
//! layout follows kube-proxy's nftables mode (pkg/proxy/nftables): verdict maps from
//! destination to a per-service-port chain, a per-endpoint chain doing the DNAT, a mark for
//! masquerading applied in postrouting, and "no endpoints" maps checked in filter hooks where
//! REJECT is allowed. One table per IP family, as kube-proxy runs one proxier per family: the
//! same model builds either ([`Family`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

pub use rktup_netlink::nft::msg::NFPROTO_IPV6;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::nft::msg::{
    CmpOp, Expr, Hook, MetaKey, SetSpec, Verdict, REG32_0, SET_EVAL, SET_MAP, SET_TIMEOUT,
};

/// What the ruleset needs to know about the node it runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// NodePorts answer on these (IPv4 ones).
    pub ips: Vec<IpAddr>,
    /// Pod network of the whole cluster (one CIDR per family): traffic from outside it to a
    /// ClusterIP is masqueraded.
    pub cluster_cidrs: Vec<IpNet>,
    /// This node's pod CIDRs (Node.spec.podCIDRs): pods on the node's bridge. Their traffic to a
    /// local endpoint is masqueraded, because without br_netfilter the reply would go back over
    /// the bridge past conntrack (see README).
    pub pod_cidrs: Vec<IpNet>,
    /// ClusterIPs never programmed (the node-local DNS address, served by the agent itself).
    pub skip_cluster_ips: Vec<IpAddr>,
}

impl NodeInfo {
    /// The cluster's pod network of family `f`.
    fn cluster_cidr(&self, f: Family) -> Option<&IpNet> {
        self.cluster_cidrs.iter().find(|c| f.has(&c.addr()))
    }
}

/// A chain: base chains carry (type, hook, priority).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub base: Option<(&'static str, Hook, i32)>,
    pub rules: Vec<Rule>,
}

/// One rule; `NumgenVmap` is expanded by the programmer into an anonymous verdict map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    E(Expr),
    /// `numgen random mod N vmap { 0 : goto c0, … }`
    NumgenVmap(Vec<String>),
}
pub type Rule = Vec<Item>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    pub spec: SetSpec,
    pub elements: Vec<(Vec<u8>, Option<Verdict>)>,
}

/// The whole table the proxy owns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub chains: BTreeMap<String, Arc<Chain>>,
    pub sets: BTreeMap<String, Set>,
    /// UDP endpoints in use and UDP Service destinations that have endpoints (ip, port): not
    /// programmed, but what the conntrack cleanup compares between two rulesets.
    pub udp_endpoints: BTreeSet<(IpAddr, u16)>,
    pub udp_served: BTreeSet<(IpAddr, u16)>,
}

impl Ruleset {
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(|c| c.rules.len()).sum()
    }
}

/// The IP family a table serves: its packets, addresses, keys and registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Family {
    #[default]
    V4,
    V6,
}

impl Family {
    fn nfproto(self) -> u8 {
        match self {
            Family::V4 => crate::nft::msg::NFPROTO_IPV4,
            Family::V6 => NFPROTO_IPV6,
        }
    }
    /// Bytes of an address.
    fn addr_len(self) -> u32 {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }
    /// 32-bit registers an address fills.
    fn regs(self) -> u32 {
        self.addr_len() / 4
    }
    /// The nftables data type of an address (`ipv4_addr`, `ipv6_addr`).
    fn key_type(self) -> u32 {
        match self {
            Family::V4 => TYPE_IPV4,
            Family::V6 => TYPE_IPV6,
        }
    }
    /// Source and destination address offsets in the network header.
    fn addr_offsets(self) -> (u32, u32) {
        match self {
            Family::V4 => (12, 16),
            Family::V6 => (8, 24),
        }
    }
    pub fn has(self, ip: &IpAddr) -> bool {
        ip.is_ipv4() == (self == Family::V4)
    }
    /// The EndpointSlice `addressType` of this family.
    fn address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

fn octets(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

const MASQ_BIT: u32 = 0x4000;
const TYPE_IPV4: u32 = 7;
const TYPE_IPV6: u32 = 8;
const TYPE_PROTO: u32 = 12;
const TYPE_SERVICE: u32 = 13;

pub const SERVICE_IPS: &str = "service-ips";
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
pub const NO_EP_SERVICES: &str = "no-endpoint-services";
pub const NO_EP_NODEPORTS: &str = "no-endpoint-nodeports";
pub const CLUSTER_IPS: &str = "cluster-ips";
pub const NODEPORT_IPS: &str = "nodeport-ips";
/// LoadBalancer ingress destinations of Services with `loadBalancerSourceRanges`: verdict map
/// to the Service port's `firewall-…` chain (upstream's `firewall-ips`).
pub const FIREWALL_IPS: &str = "firewall-ips";
const FIREWALL_CHECK: &str = "firewall-check";
/// The annotation cloud providers read when `spec.loadBalancerSourceRanges` is empty.
pub const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
const MARK_MASQ: &str = "mark-for-masquerade";
const REJECT: &str = "reject-chain";

fn e(x: Expr) -> Item {
    Item::E(x)
}
fn goto(c: &str) -> Item {
    e(Expr::Verdict(Verdict::Goto(c.to_string())))
}
fn jump(c: &str) -> Item {
    e(Expr::Verdict(Verdict::Jump(c.to_string())))
}
fn ip_field(f: Family, offset: u32, reg: u32) -> Item {
    e(Expr::Payload {
        base: 1,
        offset,
        len: f.addr_len(),
        dreg: reg,
    })
}
fn saddr_to(f: Family, reg: u32) -> Item {
    ip_field(f, f.addr_offsets().0, reg)
}
fn daddr_to(f: Family, reg: u32) -> Item {
    ip_field(f, f.addr_offsets().1, reg)
}
fn dport_to(reg: u32) -> Item {
    e(Expr::Payload {
        base: 2,
        offset: 2,
        len: 2,
        dreg: reg,
    })
}
fn l4proto_to(reg: u32) -> Item {
    e(Expr::Meta {
        key: MetaKey::L4Proto,
        dreg: reg,
    })
}
fn eq(reg: u32, data: &[u8]) -> Item {
    e(Expr::Cmp {
        sreg: reg,
        op: CmpOp::Eq,
        data: data.to_vec(),
    })
}
fn family_only(f: Family) -> Vec<Item> {
    vec![
        e(Expr::Meta {
            key: MetaKey::NfProto,
            dreg: REG32_0,
        }),
        eq(REG32_0, &[f.nfproto()]),
    ]
}
fn ct_new() -> Vec<Item> {
    vec![
        e(Expr::CtState { dreg: REG32_0 }),
        e(Expr::Bitwise {
            sreg: REG32_0,
            dreg: REG32_0,
            mask: 8u32.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        }),
        e(Expr::Cmp {
            sreg: REG32_0,
            op: CmpOp::Neq,
            data: vec![0; 4],
        }),
    ]
}
/// `ip saddr <cidr>` (or `!=` with `neq`); None for a CIDR of the other family.
fn saddr_in(f: Family, net: &IpNet, neq: bool) -> Option<Vec<Item>> {
    if !f.has(&net.addr()) {
        return None;
    }
    Some(vec![
        saddr_to(f, REG32_0),
        e(Expr::Bitwise {
            sreg: REG32_0,
            dreg: REG32_0,
            mask: octets(&net.netmask()),
            xor: vec![0; f.addr_len() as usize],
        }),
        e(Expr::Cmp {
            sreg: REG32_0,
            op: if neq { CmpOp::Neq } else { CmpOp::Eq },
            data: octets(&net.network()),
        }),
    ])
}
fn fib_saddr_local() -> Vec<Item> {
    // RTN_LOCAL = 2, host byte order
    vec![
        e(Expr::FibSaddrType { dreg: REG32_0 }),
        eq(REG32_0, &2u32.to_ne_bytes()),
    ]
}

fn proto_num(p: &str) -> Option<u8> {
    match p {
        "TCP" => Some(6),
        "UDP" => Some(17),
        "SCTP" => Some(132),
        _ => None,
    }
}
fn key_ip_proto_port(ip: IpAddr, proto: u8, port: u16) -> Vec<u8> {
    let p = port.to_be_bytes();
    let mut k = octets(&ip);
    k.extend_from_slice(&[proto, 0, 0, 0, p[0], p[1], 0, 0]);
    k
}
fn key_proto_port(proto: u8, port: u16) -> Vec<u8> {
    let p = port.to_be_bytes();
    vec![proto, 0, 0, 0, p[0], p[1], 0, 0]
}

/// Short stable hash so chain names stay unique even if a Service name is reused oddly.
fn hash8(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{:08X}", (h >> 32) as u32 ^ h as u32)
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ep {
    ip: IpAddr,
    port: u16,
    local: bool,
    ready: bool,
    serving_terminating: bool,
}

/// Upstream's CategorizeEndpoints: ready ones, or if none, serving-and-terminating ones.
fn usable<'a>(eps: impl Iterator<Item = &'a Ep> + Clone) -> Vec<&'a Ep> {
    let ready: Vec<_> = eps.clone().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    eps.filter(|e| e.serving_terminating).collect()
}

fn base_chains(rs: &mut Ruleset, f: Family, have_nodeports: bool) {
    let mut add = |name: &str, base: Option<(&'static str, Hook, i32)>, rules: Vec<Rule>| {
        rs.chains
            .insert(name.to_string(), Arc::new(Chain { base, rules }));
    };
    let guarded = |tail: Vec<Item>, new_only: bool| -> Rule {
        let mut r = family_only(f);
        if new_only {
            r.extend(ct_new());
        }
        r.extend(tail);
        r
    };
    // nat: DNAT before routing (prerouting for traffic in, output for the node's own)
    add(
        "nat-prerouting",
        Some(("nat", Hook::Prerouting, -100)),
        vec![guarded(vec![jump("services")], false)],
    );
    add(
        "nat-output",
        Some(("nat", Hook::Output, -100)),
        vec![guarded(vec![jump("services")], false)],
    );
    add(
        "nat-postrouting",
        Some(("nat", Hook::Postrouting, 100)),
        vec![guarded(vec![jump("masquerading")], false)],
    );
    // loadBalancerSourceRanges: before DNAT (dstnat - 10), while the destination is still the
    // load balancer's address, as upstream's filter-prerouting and filter-output(-pre-dnat)
    for (name, hook) in [
        ("filter-prerouting", Hook::Prerouting),
        ("filter-output-pre-dnat", Hook::Output),
    ] {
        add(
            name,
            Some(("filter", hook, -110)),
            vec![guarded(vec![jump(FIREWALL_CHECK)], true)],
        );
    }
    // filter: after DNAT, so only connections no service chain rewrote are left to reject
    let mut input = vec![guarded(vec![jump("service-endpoints-check")], true)];
    if have_nodeports {
        input.push(guarded(vec![jump("nodeport-endpoints-check")], true));
    }
    add("filter-input", Some(("filter", Hook::Input, -10)), input);
    for (name, hook) in [
        ("filter-forward", Hook::Forward),
        ("filter-output", Hook::Output),
    ] {
        add(
            name,
            Some(("filter", hook, -10)),
            vec![
                guarded(vec![jump("service-endpoints-check")], true),
                guarded(vec![jump("cluster-ips-check")], true),
            ],
        );
    }
    let r = REG32_0;
    // the registers after the address's
    let a = f.regs();
    let mut services = vec![vec![
        daddr_to(f, r),
        l4proto_to(r + a),
        dport_to(r + a + 1),
        e(Expr::Lookup {
            set: SERVICE_IPS.into(),
            sreg: r,
            dreg: Some(0),
            invert: false,
        }),
    ]];
    let nodeport_lookup = |map: &str| -> Rule {
        vec![
            daddr_to(f, r),
            e(Expr::Lookup {
                set: NODEPORT_IPS.into(),
                sreg: r,
                dreg: None,
                invert: false,
            }),
            l4proto_to(r),
            dport_to(r + 1),
            e(Expr::Lookup {
                set: map.into(),
                sreg: r,
                dreg: Some(0),
                invert: false,
            }),
        ]
    };
    let mut np_check = vec![];
    if have_nodeports {
        services.push(nodeport_lookup(SERVICE_NODEPORTS));
        np_check.push(nodeport_lookup(NO_EP_NODEPORTS));
    }
    add("services", None, services);
    add(
        FIREWALL_CHECK,
        None,
        vec![vec![
            daddr_to(f, r),
            l4proto_to(r + a),
            dport_to(r + a + 1),
            e(Expr::Lookup {
                set: FIREWALL_IPS.into(),
                sreg: r,
                dreg: Some(0),
                invert: false,
            }),
        ]],
    );
    add(
        "service-endpoints-check",
        None,
        vec![vec![
            daddr_to(f, r),
            l4proto_to(r + a),
            dport_to(r + a + 1),
            e(Expr::Lookup {
                set: NO_EP_SERVICES.into(),
                sreg: r,
                dreg: Some(0),
                invert: false,
            }),
        ]],
    );
    if have_nodeports {
        add("nodeport-endpoints-check", None, np_check);
    }
    // a ClusterIP port nothing serves: refuse rather than let it wander off the node
    add(
        "cluster-ips-check",
        None,
        vec![vec![
            daddr_to(f, r),
            e(Expr::Lookup {
                set: CLUSTER_IPS.into(),
                sreg: r,
                dreg: None,
                invert: false,
            }),
            jump(REJECT),
        ]],
    );
    add(
        REJECT,
        None,
        vec![
            vec![
                l4proto_to(r),
                eq(r, &[6]),
                e(Expr::Reject { kind: 1, code: 0 }),
            ],
            vec![e(Expr::Reject { kind: 2, code: 1 })],
        ],
    );
    let mark = |mask: u32, xor: u32| -> Vec<Item> {
        vec![
            e(Expr::Meta {
                key: MetaKey::Mark,
                dreg: r,
            }),
            e(Expr::Bitwise {
                sreg: r,
                dreg: r,
                mask: mask.to_ne_bytes().to_vec(),
                xor: xor.to_ne_bytes().to_vec(),
            }),
        ]
    };
    let mut set_mark = mark(!MASQ_BIT, MASQ_BIT);
    set_mark.push(e(Expr::MetaSet {
        key: MetaKey::Mark,
        sreg: r,
    }));
    add(MARK_MASQ, None, vec![set_mark]);
    let mut unmarked = mark(MASQ_BIT, 0);
    unmarked.extend([eq(r, &[0; 4]), e(Expr::Verdict(Verdict::Return))]);
    let mut clear = mark(!0, MASQ_BIT);
    clear.push(e(Expr::MetaSet {
        key: MetaKey::Mark,
        sreg: r,
    }));
    add(
        "masquerading",
        None,
        vec![
            unmarked,
            clear,
            vec![e(Expr::Masquerade { fully_random: true })],
        ],
    );
}

fn set(name: &str, flags: u32, key_type: u32, key_len: u32) -> Set {
    Set {
        spec: SetSpec {
            name: name.into(),
            flags,
            key_type,
            key_len,
            timeout_ms: None,
        },
        elements: vec![],
    }
}

/// What one Service contributes: its chains, affinity sets and map entries.
#[derive(Debug, Default)]
struct Frag {
    chains: Vec<(String, Arc<Chain>)>,
    sets: Vec<(String, Set)>,
    service_ips: Vec<Elem>,
    no_ep_services: Vec<Elem>,
    service_nodeports: Vec<Elem>,
    no_ep_nodeports: Vec<Elem>,
    firewall_ips: Vec<Elem>,
    cip: Option<IpAddr>,
    udp_endpoints: Vec<(IpAddr, u16)>,
    udp_served: Vec<(IpAddr, u16)>,
}
type Elem = (Vec<u8>, Option<Verdict>);

impl Frag {
    fn chain(&mut self, name: String, c: Chain) {
        self.chains.push((name, Arc::new(c)));
    }
    fn set(&mut self, name: String, s: Set) {
        self.sets.push((name, s));
    }
}

fn service_frag(
    f: Family,
    svc: &Service,
    slices: &[&EndpointSlice],
    node: &NodeInfo,
    have_nodeports: bool,
) -> Frag {
    let mut frag = Frag::default();
    let Some(spec) = &svc.spec else { return frag };
    let labels = svc.metadata.labels.as_ref();
    // another proxy's service, as kube-proxy skips it
    if labels.is_some_and(|l| l.contains_key("service.kubernetes.io/service-proxy-name")) {
        return frag;
    }
    if spec.type_.as_deref() == Some("ExternalName") {
        return frag;
    }
    // this family's address of the Service (clusterIPs lists one per family)
    let Some(cip) = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|c| c.parse::<IpAddr>().ok())
        .find(|ip| f.has(ip))
    else {
        return frag; // headless ("None"), unset, or only the other family
    };
    if node.skip_cluster_ips.contains(&cip) {
        return frag;
    }
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    frag.cip = Some(cip);
    let ext_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let int_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .unwrap_or(10800)
            .max(1) as u64
    });
    let is_np = matches!(
        spec.type_.as_deref(),
        Some("NodePort") | Some("LoadBalancer")
    );
    let mut ext_ips: Vec<IpAddr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|i| i.parse().ok())
        .filter(|ip| f.has(ip))
        .collect();
    let mut lb_ips: Vec<IpAddr> = vec![];
    if spec.type_.as_deref() == Some("LoadBalancer") {
        for ing in svc
            .status
            .iter()
            .filter_map(|s| s.load_balancer.as_ref())
            .flat_map(|l| l.ingress.iter().flatten())
        {
            if let Some(ip) = ing
                .ip
                .as_deref()
                .and_then(|i| i.parse::<IpAddr>().ok())
                .filter(|ip| f.has(ip))
            {
                lb_ips.push(ip);
                ext_ips.push(ip);
            }
        }
    }
    let ranges = if lb_ips.is_empty() {
        vec![]
    } else {
        source_ranges_of(f, svc)
    };
    // upstream's allowFromNode: a load balancer address that is local to the node (VIP-style)
    // makes the node's own connections to it come from that address
    let allow_lb_ips = ranges
        .iter()
        .any(|r| node.ips.iter().any(|ip| r.contains(ip)));

    for sp in spec.ports.iter().flatten() {
        let pname = sp.name.clone().unwrap_or_default();
        let proto_s = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
        let Some(proto) = proto_num(&proto_s) else {
            continue;
        };
        let Ok(port) = u16::try_from(sp.port) else {
            continue;
        };
        // endpoints: the slices' port of the same name and protocol (the controller already
        // resolved a named targetPort per pod)
        let mut eps: BTreeMap<(IpAddr, u16), Ep> = BTreeMap::new();
        for sl in slices {
            let Some(epport) = sl.ports.iter().flatten().find(|p| {
                p.name.clone().unwrap_or_default() == pname
                    && p.protocol.as_deref().unwrap_or("TCP") == proto_s
            }) else {
                continue;
            };
            let Some(pnum) = epport.port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            for ep in &sl.endpoints {
                let Some(ip) = ep
                    .addresses
                    .first()
                    .and_then(|a| a.parse::<IpAddr>().ok())
                    .filter(|ip| f.has(ip))
                else {
                    continue;
                };
                let c = ep.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                let serving = c.and_then(|c| c.serving).unwrap_or(ready);
                let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                let local = ep.node_name.as_deref() == Some(node.name.as_str());
                eps.entry((ip, pnum)).or_insert(Ep {
                    ip,
                    port: pnum,
                    local,
                    ready,
                    serving_terminating: serving && terminating,
                });
            }
        }
        let cluster_eps = usable(eps.values());
        let local_eps = usable(eps.values().filter(|e| e.local));
        let internal = if int_local { &local_eps } else { &cluster_eps };

        let key = format!("{ns}/{name}/{}/{pname}", proto_s.to_lowercase());
        let h = hash8(&key);
        let svc_chain = format!("service-{h}-{key}");
        let ext_chain = format!("external-{h}-{key}");
        // kube-proxy's per-endpoint names: <kind>-<hash>-<key>__<ip>/<port>.
        let per_ep = |kind: &str, ep: &Ep| {
            format!(
                "{kind}-{}-{key}__{}/{}",
                hash8(&format!("{key}{}:{}", ep.ip, ep.port)),
                ep.ip,
                ep.port
            )
        };
        let ep_chain = |ep: &Ep| per_ep("endpoint", ep);
        let aff_set = |ep: &Ep| per_ep("affinity", ep);

        // endpoint chains for every endpoint any path uses
        let mut used: BTreeSet<&Ep> = internal.iter().copied().collect();
        used.extend(cluster_eps.iter().copied());
        used.extend(local_eps.iter().copied());
        if proto == 17 {
            frag.udp_endpoints
                .extend(used.iter().map(|e| (e.ip, e.port)));
        }
        for ep in &used {
            let mut rules: Vec<Rule> = vec![];
            // hairpin: a pod reaching itself through the service
            rules.push(vec![
                saddr_to(f, REG32_0),
                eq(REG32_0, &octets(&ep.ip)),
                jump(MARK_MASQ),
            ]);
            // on this node's bridge (by address, whatever the slice says): same-bridge clients
            // must be masqueraded or the reply skips conntrack over L2
            if node.pod_cidrs.iter().any(|pc| pc.contains(&ep.ip)) {
                for pc in &node.pod_cidrs {
                    if let Some(mut r) = saddr_in(f, pc, false) {
                        r.push(jump(MARK_MASQ));
                        rules.push(r);
                    }
                }
            }
            if let Some(t) = affinity {
                let s = aff_set(ep);
                let mut a = set(&s, SET_TIMEOUT | SET_EVAL, f.key_type(), f.addr_len());
                a.spec.timeout_ms = Some(t * 1000);
                frag.set(s.clone(), a);
                rules.push(vec![
                    saddr_to(f, REG32_0),
                    e(Expr::DynsetUpdate {
                        set: s,
                        sreg: REG32_0,
                        timeout_ms: None,
                    }),
                ]);
            }
            let p = ep.port.to_be_bytes();
            rules.push(vec![
                l4proto_to(REG32_0),
                eq(REG32_0, &[proto]),
                e(Expr::Immediate {
                    dreg: REG32_0,
                    data: octets(&ep.ip),
                }),
                e(Expr::Immediate {
                    dreg: REG32_0 + f.regs(),
                    data: p.to_vec(),
                }),
                e(Expr::Dnat {
                    family: f.nfproto(),
                    reg_addr: REG32_0,
                    reg_port: REG32_0 + f.regs(),
                }),
            ]);
            frag.chain(ep_chain(ep), Chain { base: None, rules });
        }
        // balancing over a set of endpoints, affinity first
        let balance = |eps: &[&Ep]| -> Vec<Rule> {
            let mut rules = vec![];
            if affinity.is_some() {
                for ep in eps {
                    rules.push(vec![
                        saddr_to(f, REG32_0),
                        e(Expr::Lookup {
                            set: aff_set(ep),
                            sreg: REG32_0,
                            dreg: None,
                            invert: false,
                        }),
                        goto(&ep_chain(ep)),
                    ]);
                }
            }
            if let Some(first) = eps.first() {
                rules.push(vec![Item::NumgenVmap(
                    eps.iter().map(|ep| ep_chain(ep)).collect(),
                )]);
                // Never reached from this table's own rules (numgen mod N always hits the
                // map). It exists for a packet that crosses the commit that replaces this
                // chain: such a packet runs the old rules (nft_do_chain read the generation
                // bit once), but its map lookup reads the new generation, in which the old
                // rule's anonymous map is already deactivated — a miss would leave the
                // connection without DNAT and the filter's cluster-ips check would reset it.
                // An endpoint of the old table is what it would have got a moment earlier.
                rules.push(vec![goto(&ep_chain(first))]);
            }
            rules
        };

        // the service chain: internal (ClusterIP) traffic
        let mut srules = vec![];
        if let Some(cc) = node.cluster_cidr(f) {
            if let Some(mut r) = saddr_in(f, cc, true) {
                // the destination after the source's registers
                r.insert(0, daddr_to(f, REG32_0 + f.regs()));
                r.insert(1, eq(REG32_0 + f.regs(), &octets(&cip)));
                r.push(jump(MARK_MASQ));
                srules.push(r);
            }
        }
        srules.extend(balance(internal));
        frag.chain(
            svc_chain.clone(),
            Chain {
                base: None,
                rules: srules,
            },
        );
        if !internal.is_empty() {
            if proto == 17 {
                frag.udp_served.push((cip, port));
            }
            frag.service_ips.push((
                key_ip_proto_port(cip, proto, port),
                Some(Verdict::Goto(svc_chain.clone())),
            ));
        } else {
            // iTP Local with endpoints elsewhere: drop, as upstream; none at all: refuse
            let v = if int_local && !cluster_eps.is_empty() {
                Verdict::Drop
            } else {
                Verdict::Goto(REJECT.into())
            };
            frag.no_ep_services
                .push((key_ip_proto_port(cip, proto, port), Some(v)));
        }

        // loadBalancerSourceRanges: the load balancer addresses (not externalIPs, not
        // NodePorts: upstream's "for better or for worse") only answer sources in the ranges,
        // whether or not there are endpoints
        if !ranges.is_empty() {
            let fw_chain = format!("firewall-{h}-{key}");
            let mut rules: Vec<Rule> = vec![];
            for r in &ranges {
                if let Some(mut rule) = saddr_in(f, r, false) {
                    rule.push(e(Expr::Verdict(Verdict::Return)));
                    rules.push(rule);
                }
            }
            if allow_lb_ips {
                for ip in &lb_ips {
                    rules.push(vec![
                        saddr_to(f, REG32_0),
                        eq(REG32_0, &octets(ip)),
                        e(Expr::Verdict(Verdict::Return)),
                    ]);
                }
            }
            rules.push(vec![e(Expr::Verdict(Verdict::Drop))]);
            frag.chain(fw_chain.clone(), Chain { base: None, rules });
            for ip in &lb_ips {
                frag.firewall_ips.push((
                    key_ip_proto_port(*ip, proto, port),
                    Some(Verdict::Goto(fw_chain.clone())),
                ));
            }
        }

        // external destinations: externalIPs, LoadBalancer ingress, NodePort
        let node_port = sp
            .node_port
            .filter(|_| is_np && have_nodeports)
            .and_then(|p| u16::try_from(p).ok());
        if ext_ips.is_empty() && node_port.is_none() {
            continue;
        }
        if cluster_eps.is_empty() {
            for ip in &ext_ips {
                frag.no_ep_services.push((
                    key_ip_proto_port(*ip, proto, port),
                    Some(Verdict::Goto(REJECT.into())),
                ));
            }
            if let Some(np) = node_port {
                frag.no_ep_nodeports.push((
                    key_proto_port(proto, np),
                    Some(Verdict::Goto(REJECT.into())),
                ));
            }
            continue;
        }
        let mut erules: Vec<Rule> = vec![];
        if !ext_local {
            erules.push(vec![jump(MARK_MASQ)]);
            erules.push(vec![goto(&svc_chain)]);
        } else {
            // pods and the node itself are "internal" even via an external address (upstream)
            if let Some(cc) = node.cluster_cidr(f) {
                if let Some(mut r) = saddr_in(f, cc, false) {
                    r.push(goto(&svc_chain));
                    erules.push(r);
                }
            }
            let mut r = fib_saddr_local();
            r.push(jump(MARK_MASQ));
            erules.push(r);
            let mut r = fib_saddr_local();
            r.push(goto(&svc_chain));
            erules.push(r);
            if local_eps.is_empty() {
                erules.push(vec![e(Expr::Verdict(Verdict::Drop))]);
            } else {
                let lchain = format!("local-{h}-{key}");
                frag.chain(
                    lchain.clone(),
                    Chain {
                        base: None,
                        rules: balance(&local_eps),
                    },
                );
                erules.push(vec![goto(&lchain)]);
            }
        }
        frag.chain(
            ext_chain.clone(),
            Chain {
                base: None,
                rules: erules,
            },
        );
        for ip in &ext_ips {
            frag.service_ips.push((
                key_ip_proto_port(*ip, proto, port),
                Some(Verdict::Goto(ext_chain.clone())),
            ));
        }
        if proto == 17 {
            frag.udp_served.extend(ext_ips.iter().map(|ip| (*ip, port)));
            if let Some(np) = node_port {
                frag.udp_served
                    .extend(node.ips.iter().filter(|ip| f.has(ip)).map(|ip| (*ip, np)));
            }
        }
        if let Some(np) = node_port {
            frag.service_nodeports.push((
                key_proto_port(proto, np),
                Some(Verdict::Goto(ext_chain.clone())),
            ));
        }
    }
    frag
}

/// The IPv4 `loadBalancerSourceRanges` of a Service, as kube-proxy reads them (entries
/// trimmed: the API allows space padding); when the field is empty, the
/// `service.beta.kubernetes.io/load-balancer-source-ranges` annotation (comma-separated), as
/// cloud providers read it (`GetLoadBalancerSourceRanges`) — here the nodes are the load
/// balancer. Entries of the other family are left out, as upstream's per-family proxier does;
/// none left means no firewall (the API refuses entries that are not CIDRs).
pub fn source_ranges(svc: &Service) -> Vec<ipnet::Ipv4Net> {
    source_ranges_of(Family::V4, svc)
        .into_iter()
        .filter_map(|n| match n {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        })
        .collect()
}

/// [`source_ranges`] of family `f`.
fn source_ranges_of(f: Family, svc: &Service) -> Vec<IpNet> {
    let from_spec: Vec<String> = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_source_ranges.clone())
        .unwrap_or_default();
    let raw: Vec<String> = if !from_spec.is_empty() {
        from_spec
    } else {
        svc.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SOURCE_RANGES_ANNOTATION))
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    };
    raw.iter()
        .filter_map(|r| r.trim().parse::<IpNet>().ok())
        .filter(|n| f.has(&n.addr()))
        .map(|n| n.trunc())
        .collect()
}

/// The wanted IPv4 table for these Services and EndpointSlices on this node.
pub fn ruleset(services: &[Service], slices: &[EndpointSlice], node: &NodeInfo) -> Ruleset {
    ruleset_cached(&mut Cache::default(), services.iter(), slices.iter(), node)
}

/// The wanted table of family `f`.
pub fn ruleset_for(
    f: Family,
    services: &[Service],
    slices: &[EndpointSlice],
    node: &NodeInfo,
) -> Ruleset {
    ruleset_cached(&mut Cache::new(f), services.iter(), slices.iter(), node)
}

/// Per-Service results of earlier builds, so a rebuild after one change only recomputes that
/// Service, and unchanged chains are shared (the programmer's diff then skips them by pointer).
#[derive(Default)]
pub struct Cache {
    /// The family whose table this cache builds (IPv4 by default).
    family: Family,
    entries: HashMap<(String, String), (InputKey, Arc<Frag>)>,
    node: Option<NodeInfo>,
}

impl Cache {
    pub fn new(family: Family) -> Cache {
        Cache {
            family,
            ..Cache::default()
        }
    }
}

/// What a Service's fragment was computed from: resourceVersions when the objects come from
/// the API (cheap), the objects themselves otherwise.
struct InputKey {
    svc: Service,
    slices: Vec<EndpointSlice>,
}

impl InputKey {
    fn of(svc: &Service, slices: &[&EndpointSlice]) -> InputKey {
        InputKey {
            svc: svc.clone(),
            slices: slices.iter().map(|s| (*s).clone()).collect(),
        }
    }
    fn matches(&self, svc: &Service, slices: &[&EndpointSlice]) -> bool {
        fn same<K: kube::Resource + PartialEq>(a: &K, b: &K) -> bool {
            let (ma, mb) = (a.meta(), b.meta());
            match (&ma.resource_version, &mb.resource_version) {
                (Some(x), Some(y)) => x == y && ma.uid == mb.uid && ma.name == mb.name,
                _ => a == b,
            }
        }
        same(&self.svc, svc)
            && self.slices.len() == slices.len()
            && self.slices.iter().zip(slices).all(|(a, b)| same(a, *b))
    }
}

/// [`ruleset`] reusing `cache` (the watch loop keeps one).
pub fn ruleset_cached<'a>(
    cache: &mut Cache,
    services: impl Iterator<Item = &'a Service>,
    slices: impl Iterator<Item = &'a EndpointSlice>,
    node: &NodeInfo,
) -> Ruleset {
    if cache.node.as_ref() != Some(node) {
        cache.entries.clear();
        cache.node = Some(node.clone());
    }
    let f = cache.family;
    let mut rs = Ruleset::default();
    let node_ips: Vec<IpAddr> = node.ips.iter().filter(|ip| f.has(ip)).copied().collect();
    let have_nodeports = !node_ips.is_empty();
    base_chains(&mut rs, f, have_nodeports);
    let ipk = (f.key_type() << 12) | (TYPE_PROTO << 6) | TYPE_SERVICE;
    let ipk_len = f.addr_len() + 8;
    let ppk = (TYPE_PROTO << 6) | TYPE_SERVICE;
    let mut service_ips = set(SERVICE_IPS, SET_MAP, ipk, ipk_len);
    let mut no_ep_services = set(NO_EP_SERVICES, SET_MAP, ipk, ipk_len);
    let mut service_nodeports = set(SERVICE_NODEPORTS, SET_MAP, ppk, 8);
    let mut no_ep_nodeports = set(NO_EP_NODEPORTS, SET_MAP, ppk, 8);
    let mut firewall_ips = set(FIREWALL_IPS, SET_MAP, ipk, ipk_len);
    let mut cluster_ips = set(CLUSTER_IPS, 0, f.key_type(), f.addr_len());
    let mut nodeport_ips = set(NODEPORT_IPS, 0, f.key_type(), f.addr_len());
    nodeport_ips.elements = node_ips.iter().map(|ip| (octets(ip), None)).collect();
    let mut cips = BTreeSet::new();

    // slices by service (namespace, name)
    let mut by_svc: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        if s.address_type != f.address_type() {
            continue;
        }
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        else {
            continue;
        };
        by_svc.entry((ns, svc.clone())).or_default().push(s);
    }

    // a stable order (stores hand objects out in hash order), so unchanged maps compare equal
    let mut services: Vec<&Service> = services.collect();
    services.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    for v in by_svc.values_mut() {
        v.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    }
    let mut live = HashSet::new();
    for svc in services {
        let key = (
            svc.metadata.namespace.clone().unwrap_or_default(),
            svc.metadata.name.clone().unwrap_or_default(),
        );
        let sl: &[&EndpointSlice] = by_svc.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        let frag = match cache.entries.get(&key) {
            Some((k, f)) if k.matches(svc, sl) => f.clone(),
            _ => {
                let frag = Arc::new(service_frag(f, svc, sl, node, have_nodeports));
                cache
                    .entries
                    .insert(key.clone(), (InputKey::of(svc, sl), frag.clone()));
                frag
            }
        };
        live.insert(key);
        for (n, c) in &frag.chains {
            rs.chains.insert(n.clone(), c.clone());
        }
        for (n, st) in &frag.sets {
            rs.sets.insert(n.clone(), st.clone());
        }
        service_ips
            .elements
            .extend(frag.service_ips.iter().cloned());
        no_ep_services
            .elements
            .extend(frag.no_ep_services.iter().cloned());
        service_nodeports
            .elements
            .extend(frag.service_nodeports.iter().cloned());
        no_ep_nodeports
            .elements
            .extend(frag.no_ep_nodeports.iter().cloned());
        firewall_ips
            .elements
            .extend(frag.firewall_ips.iter().cloned());
        cips.extend(frag.cip);
        rs.udp_endpoints.extend(frag.udp_endpoints.iter().copied());
        rs.udp_served.extend(frag.udp_served.iter().copied());
    }
    cache.entries.retain(|k, _| live.contains(k));
    cluster_ips.elements = cips.iter().map(|ip| (octets(ip), None)).collect();
    for mut s in [
        service_ips,
        no_ep_services,
        service_nodeports,
        no_ep_nodeports,
        firewall_ips,
        cluster_ips,
        nodeport_ips,
    ] {
        // a map may not hold a key twice (two Services claiming one externalIP): first wins
        let mut seen = BTreeSet::new();
        s.elements.retain(|(k, _)| seen.insert(k.clone()));
        if !have_nodeports
            && (s.spec.name == SERVICE_NODEPORTS
                || s.spec.name == NO_EP_NODEPORTS
                || s.spec.name == NODEPORT_IPS)
        {
            continue;
        }
        rs.sets.insert(s.spec.name.clone(), s);
    }
    rs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::net::Ipv4Addr;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }
    fn web(spec: serde_json::Value) -> Service {
        let mut base = json!({"clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": 80, "targetPort": "web"},
                      {"name": "metrics", "port": 9000, "targetPort": 9090}]});
        for (k, v) in spec.as_object().unwrap() {
            base[k] = v.clone();
        }
        svc(json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": base}))
    }
    fn slice(name: &str, eps: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "metrics", "port": 9090}],
            "endpoints": eps}))
        .unwrap()
    }
    fn node() -> NodeInfo {
        NodeInfo {
            name: "n1".into(),
            ips: vec!["10.250.0.2".parse().unwrap()],
            ..Default::default()
        }
    }
    /// (ip, port) every endpoint chain of a service port DNATs to
    fn dnats(rs: &Ruleset, port_name: &str) -> Vec<(Ipv4Addr, u16)> {
        let mut out = vec![];
        for (n, c) in &rs.chains {
            if !n.starts_with("endpoint-") || !n.contains(&format!("/{port_name}__")) {
                continue;
            }
            let last = c.rules.last().unwrap();
            let imm: Vec<&Vec<u8>> = last
                .iter()
                .filter_map(|i| match i {
                    Item::E(Expr::Immediate { data, .. }) => Some(data),
                    _ => None,
                })
                .collect();
            let ip = Ipv4Addr::new(imm[0][0], imm[0][1], imm[0][2], imm[0][3]);
            out.push((ip, u16::from_be_bytes([imm[1][0], imm[1][1]])));
        }
        out.sort();
        out
    }
    fn verdict(rs: &Ruleset, map: &str, key: &[u8]) -> Option<Verdict> {
        rs.sets[map]
            .elements
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.clone())
    }
    fn key(ip: [u8; 4], proto: u8, port: u16) -> Vec<u8> {
        key_ip_proto_port(ip.into(), proto, port)
    }

    #[test]
    fn named_ports_resolve_through_the_slice_and_duplicates_collapse() {
        let eps = json!([{"addresses": ["10.244.0.5"], "nodeName": "n1"}, {"addresses": ["10.244.1.5"], "nodeName": "n2"}]);
        let rs = ruleset(
            &[web(json!({}))],
            &[slice("a", eps.clone()), slice("b", eps)],
            &node(),
        );
        let want = vec![
            ("10.244.0.5".parse().unwrap(), 8080),
            ("10.244.1.5".parse().unwrap(), 8080),
        ];
        assert_eq!(dnats(&rs, "http"), want);
        assert_eq!(
            dnats(&rs, "metrics")
                .iter()
                .map(|d| d.1)
                .collect::<Vec<_>>(),
            vec![9090, 9090]
        );
        assert!(
            matches!(verdict(&rs, SERVICE_IPS, &key([10, 96, 0, 10], 6, 80)), Some(Verdict::Goto(c)) if c.starts_with("service-"))
        );
    }

    #[test]
    fn headless_external_name_foreign_and_skipped_services_get_no_rules() {
        let headless = web(json!({"clusterIP": "None"}));
        let mut ext = svc(json!({"metadata": {"name": "x", "namespace": "ns"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}}));
        ext.metadata.name = Some("x".into());
        let mut foreign = web(json!({"clusterIP": "10.96.0.11"}));
        foreign.metadata.labels = Some(
            [(
                "service.kubernetes.io/service-proxy-name".to_string(),
                "other".to_string(),
            )]
            .into(),
        );
        let dns = web(json!({"clusterIP": "10.96.0.53"}));
        let mut n = node();
        n.skip_cluster_ips = vec!["10.96.0.53".parse().unwrap()];
        let rs = ruleset(&[headless, ext, foreign, dns], &[], &n);
        assert!(
            rs.chains.keys().all(|c| !c.contains("-ns/")),
            "{:?}",
            rs.chains.keys()
        );
        assert!(rs.sets[CLUSTER_IPS].elements.is_empty());
        assert!(
            rs.sets[SERVICE_IPS].elements.is_empty() && rs.sets[NO_EP_SERVICES].elements.is_empty()
        );
    }

    #[test]
    fn no_endpoints_reject_and_internal_local_drop() {
        let rs = ruleset(&[web(json!({}))], &[], &node());
        assert_eq!(
            verdict(&rs, NO_EP_SERVICES, &key([10, 96, 0, 10], 6, 80)),
            Some(Verdict::Goto(REJECT.into()))
        );
        let remote = slice(
            "a",
            json!([{"addresses": ["10.244.1.5"], "nodeName": "n2"}]),
        );
        let rs = ruleset(
            &[web(json!({"internalTrafficPolicy": "Local"}))],
            &[remote],
            &node(),
        );
        assert_eq!(
            verdict(&rs, NO_EP_SERVICES, &key([10, 96, 0, 10], 6, 80)),
            Some(Verdict::Drop)
        );
    }

    #[test]
    fn terminating_endpoints_only_as_a_fallback() {
        let eps = json!([
            {"addresses": ["10.244.0.5"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.244.0.6"], "conditions": {"ready": true}},
            {"addresses": ["10.244.0.7"], "conditions": {"ready": false, "serving": false, "terminating": true}}]);
        let rs = ruleset(&[web(json!({}))], &[slice("a", eps)], &node());
        assert_eq!(
            dnats(&rs, "http"),
            vec![("10.244.0.6".parse().unwrap(), 8080)]
        );
        let eps = json!([
            {"addresses": ["10.244.0.5"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.244.0.7"], "conditions": {"ready": false, "serving": false, "terminating": true}}]);
        let rs = ruleset(&[web(json!({}))], &[slice("a", eps)], &node());
        assert_eq!(
            dnats(&rs, "http"),
            vec![("10.244.0.5".parse().unwrap(), 8080)]
        );
    }

    #[test]
    fn external_local_without_local_endpoints_drops() {
        let remote = slice(
            "a",
            json!([{"addresses": ["10.244.1.5"], "nodeName": "n2"}]),
        );
        let s = web(json!({"type": "NodePort", "externalTrafficPolicy": "Local",
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}));
        let rs = ruleset(&[s], &[remote], &node());
        let ext = rs
            .chains
            .iter()
            .find(|(n, _)| n.starts_with("external-"))
            .unwrap()
            .1;
        assert_eq!(
            ext.rules.last().unwrap(),
            &vec![Item::E(Expr::Verdict(Verdict::Drop))]
        );
        assert!(rs.sets[SERVICE_NODEPORTS]
            .elements
            .iter()
            .any(|(k, _)| k == &key_proto_port(6, 30080)));
    }

    #[test]
    fn every_numgen_map_is_followed_by_a_goto_to_one_of_its_endpoints() {
        // service and local chains (eTP Local with a local endpoint), with affinity rules
        let eps = slice(
            "a",
            json!([{"addresses": ["10.244.0.5"], "nodeName": "n1"},
                   {"addresses": ["10.244.1.5"], "nodeName": "n2"}]),
        );
        let s = web(json!({"type": "NodePort", "externalTrafficPolicy": "Local",
            "sessionAffinity": "ClientIP",
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}));
        let rs = ruleset(&[s], &[eps], &node());
        let mut seen = 0;
        for (name, c) in &rs.chains {
            for (i, r) in c.rules.iter().enumerate() {
                let Some(Item::NumgenVmap(targets)) = r.first() else {
                    continue;
                };
                seen += 1;
                // the fallback for a packet that runs this rule across the commit replacing it
                match c.rules.get(i + 1).map(|r| r.as_slice()) {
                    Some([Item::E(Expr::Verdict(Verdict::Goto(t)))]) => {
                        assert!(targets.contains(t), "{name}: goto {t} not in {targets:?}")
                    }
                    other => panic!("{name}: after the numgen map {other:?}"),
                }
            }
        }
        assert_eq!(seen, 2, "one service chain, one local chain");
    }

    #[test]
    fn source_ranges_guard_only_the_load_balancer_addresses() {
        let eps = slice(
            "a",
            json!([{"addresses": ["10.244.0.5"], "nodeName": "n1"}]),
        );
        let lb = |extra: serde_json::Value| {
            let mut s = web(
                json!({"type": "LoadBalancer", "externalIPs": ["10.96.200.2"],
                "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
            );
            for (k, v) in extra.as_object().unwrap() {
                let mut spec = serde_json::to_value(s.spec.take().unwrap()).unwrap();
                spec[k] = v.clone();
                s.spec = Some(serde_json::from_value(spec).unwrap());
            }
            s.status = Some(
                serde_json::from_value(
                    json!({"loadBalancer": {"ingress": [{"ip": "10.96.200.1"}]}}),
                )
                .unwrap(),
            );
            s
        };
        // ranges (space-padded, one IPv6 left out) not holding the node's address
        let rs = ruleset(
            &[lb(
                json!({"loadBalancerSourceRanges": [" 192.0.2.0/24", "2001:db8::/64"]}),
            )],
            std::slice::from_ref(&eps),
            &node(),
        );
        let fw = &rs.sets[FIREWALL_IPS].elements;
        assert_eq!(
            fw.len(),
            1,
            "only the ingress address, not externalIPs: {fw:?}"
        );
        assert_eq!(fw[0].0, key([10, 96, 200, 1], 6, 80));
        let Some(Verdict::Goto(chain)) = &fw[0].1 else {
            panic!("{fw:?}")
        };
        let c = &rs.chains[chain];
        assert_eq!(c.rules.len(), 2, "one range, then drop: {:?}", c.rules);
        assert_eq!(c.rules[1], vec![Item::E(Expr::Verdict(Verdict::Drop))]);
        // a range holding the node's address also lets the load balancer address itself in
        let rs = ruleset(
            &[lb(json!({"loadBalancerSourceRanges": ["10.250.0.0/16"]}))],
            std::slice::from_ref(&eps),
            &node(),
        );
        let chain = rs
            .chains
            .keys()
            .find(|c| c.starts_with("firewall-") && c.contains("-ns/web/"))
            .unwrap();
        assert_eq!(rs.chains[chain].rules.len(), 3);
        // the annotation when the field is empty; nothing when neither, or no ingress yet
        let mut a = lb(json!({}));
        a.metadata.annotations = Some(
            [(
                SOURCE_RANGES_ANNOTATION.to_string(),
                "192.0.2.0/24, 198.51.100.0/24".to_string(),
            )]
            .into(),
        );
        assert_eq!(source_ranges(&a).len(), 2);
        let rs = ruleset(
            std::slice::from_ref(&a),
            std::slice::from_ref(&eps),
            &node(),
        );
        assert_eq!(rs.sets[FIREWALL_IPS].elements.len(), 1);
        let rs = ruleset(&[lb(json!({}))], std::slice::from_ref(&eps), &node());
        assert!(rs.sets[FIREWALL_IPS].elements.is_empty());
        a.status = None;
        let rs = ruleset(&[a], &[eps], &node());
        assert!(rs.sets[FIREWALL_IPS].elements.is_empty());
        assert!(!rs
            .chains
            .keys()
            .any(|c| c.starts_with("firewall-") && c.contains("-ns/web/")));
    }

    #[test]
    fn the_cached_build_equals_a_fresh_one_after_changes() {
        let mut cache = Cache::default();
        let mut other = web(json!({"clusterIP": "10.96.0.11"}));
        other.metadata.name = Some("other".into());
        let svcs = vec![web(json!({"sessionAffinity": "ClientIP"})), other];
        let a = slice(
            "a",
            json!([{"addresses": ["10.244.0.5"], "nodeName": "n1"}]),
        );
        let b = slice(
            "a",
            json!([{"addresses": ["10.244.0.6"], "nodeName": "n1"}]),
        );
        for sl in [vec![a.clone()], vec![b], vec![], vec![a]] {
            let cached = ruleset_cached(&mut cache, svcs.iter(), sl.iter(), &node());
            assert_eq!(cached, ruleset(&svcs, &sl, &node()));
        }
        // a different node invalidates everything
        let mut n2 = node();
        n2.pod_cidrs = vec!["10.244.0.0/24".parse().unwrap()];
        assert_eq!(
            ruleset_cached(&mut cache, svcs.iter(), [].iter(), &n2),
            ruleset(&svcs, &[], &n2)
        );
    }
}
