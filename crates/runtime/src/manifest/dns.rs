//! What a pod sees of DNS, decided as kubelet decides it (pkg/kubelet/network/dns/dns.go,
//! kubelet_pods.go `GeneratePodHostNameAndDomain`, kuberuntime's `GetNodenameForKernel`): its
//! /etc/resolv.conf per `dnsPolicy` and `dnsConfig`, its hostname and the domain its managed
//! /etc/hosts names. Static pods and API pods are planned here alike (kubelet treats them the
//! same), from the node's `--cluster-dns`, `--cluster-domain` and `--resolv-conf` ([`NodeDns`]).
//! Everything but reading the node's resolv.conf is pure; the warnings kubelet turns into
//! events are returned ([`DnsWarning`]) for the kubelet half to record.

use k8s_openapi::api::core::v1::Pod;
use std::net::IpAddr;
use std::path::PathBuf;

/// kubelet's `defaultDNSOptions`.
const DEFAULT_OPTIONS: &[&str] = &["ndots:5"];
/// API validation's limits (apis/core/validation): 3 nameservers (glibc's MAXNS), 32 search
/// paths, 2048 characters of search line (ExpandedDNSConfig, GA since 1.28).
pub const MAX_NAMESERVERS: usize = 3;
pub const MAX_SEARCH_PATHS: usize = 32;
pub const MAX_SEARCH_LIST_CHARS: usize = 2048;
/// A search path longer than a DNS subdomain makes some resolvers abort (glibc 2.28).
const MAX_SEARCH_PATH_CHARS: usize = 253;
/// kubelet reads at most this much of the node's resolv.conf.
const MAX_RESOLV_CONF: u64 = 10 << 20;
/// The kernel's nodename holds 64 characters (kubelet's `fqdnMaxLen`), a label 63.
const FQDN_MAX: usize = 64;
const HOSTNAME_MAX: usize = 63;

/// The node's DNS settings: kubelet's `--cluster-dns`, `--cluster-domain`, `--resolv-conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDns {
    /// Pods with a ClusterFirst policy use only these servers. Empty: such pods fall back to
    /// Default with a `MissingClusterDNS` warning.
    pub cluster_dns: Vec<IpAddr>,
    /// "" when not configured (then no cluster search paths are added).
    pub cluster_domain: String,
    /// The node resolv.conf that Default pods get and ClusterFirst pods take search paths from;
    /// None (`--resolv-conf=""`): a resolver on the node itself (127.0.0.1), search ".".
    pub resolv_conf: Option<PathBuf>,
    /// The node's IPs (an IPv6-only node gets ::1 for `--resolv-conf=""`).
    pub node_ips: Vec<IpAddr>,
}

impl Default for NodeDns {
    /// kubelet without DNS flags: no cluster DNS, no domain, the host's /etc/resolv.conf.
    fn default() -> NodeDns {
        NodeDns {
            cluster_dns: vec![],
            cluster_domain: String::new(),
            resolv_conf: Some(PathBuf::from("/etc/resolv.conf")),
            node_ips: vec![],
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsFlagError {
    #[error("invalid --cluster-dns {0:?}: not an IP address")]
    ClusterDns(String),
}

impl NodeDns {
    /// From the agent's flags: `--cluster-dns` is a comma-separated list of IPs (kubelet's),
    /// `--resolv-conf=""` means none.
    pub fn from_flags(
        cluster_dns: Option<&str>,
        cluster_domain: Option<&str>,
        resolv_conf: &std::path::Path,
        node_ip: Option<&str>,
    ) -> Result<NodeDns, DnsFlagError> {
        let cluster_dns = cluster_dns
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpAddr>()
                    .map_err(|_| DnsFlagError::ClusterDns(s.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NodeDns {
            cluster_dns,
            cluster_domain: cluster_domain
                .unwrap_or_default()
                .trim()
                .trim_end_matches('.')
                .to_string(),
            resolv_conf: (!resolv_conf.as_os_str().is_empty()).then(|| resolv_conf.to_path_buf()),
            node_ips: node_ip.and_then(|s| s.parse().ok()).into_iter().collect(),
        })
    }

    /// The node's resolv.conf, read as kubelet reads it (at most 10 MiB); None without one.
    pub fn read_resolv_conf(&self) -> Result<Option<String>, std::io::Error> {
        use std::io::Read;
        let Some(path) = &self.resolv_conf else {
            return Ok(None);
        };
        let mut text = String::new();
        std::fs::File::open(path)?
            .take(MAX_RESOLV_CONF)
            .read_to_string(&mut text)?;
        Ok(Some(text))
    }
}

/// A resolver configuration: containerd's CRI `DNSConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl DnsConfig {
    /// The file as containerd writes a sandbox's resolv.conf: `search`, then one `nameserver`
    /// line per server, then `options`; "" when all are empty (containerd then copies the
    /// host's file, see [`pod_resolv_conf`]).
    pub fn render(&self) -> String {
        let mut s = String::new();
        if !self.searches.is_empty() {
            s.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for ns in &self.servers {
            s.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            s.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        s
    }
}

/// Something kubelet reports as a Warning event (its reason and message as kubelet words them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsWarning {
    /// `MissingClusterDNS` or `DNSConfigForming`.
    pub reason: &'static str,
    pub message: String,
}

/// kubelet's `parseResolvConf`: nameserver lines accumulate; the last `search` and `options`
/// lines win; search domains lose a trailing dot.
pub fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut c = DnsConfig::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.first() {
            Some(&"nameserver") => c.servers.extend(f.get(1).map(|s| s.to_string())),
            Some(&"search") => {
                c.searches = f[1..]
                    .iter()
                    .map(|s| s.strip_suffix('.').unwrap_or(s).to_string())
                    .collect()
            }
            Some(&"options") => c.options = f[1..].iter().map(|s| s.to_string()).collect(),
            _ => {}
        }
    }
    c
}

fn omit_duplicates(v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.into_iter().filter(|s| seen.insert(s.clone())).collect()
}

/// `dnsConfig.options` over the base's: a name given again replaces the base's value in
/// place (kubelet merges through a map, so its order is random; this keeps first appearance).
fn merge_options(
    base: Vec<String>,
    extra: &[k8s_openapi::api::core::v1::PodDNSConfigOption],
) -> Vec<String> {
    let mut opts: Vec<(String, String)> = base
        .iter()
        .map(|o| match o.split_once(':') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (o.clone(), String::new()),
        })
        .collect();
    for o in extra {
        let name = o.name.clone().unwrap_or_default();
        let value = o.value.clone().unwrap_or_default();
        match opts.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => opts.push((name, value)),
        }
    }
    opts.into_iter()
        .map(|(k, v)| if v.is_empty() { k } else { format!("{k}:{v}") })
        .collect()
}

/// The search list cut to the limits (`formDNSSearchFitsLimits`).
fn fit_searches(mut s: Vec<String>, warnings: &mut Vec<DnsWarning>) -> Vec<String> {
    let mut exceeded = false;
    if s.len() > MAX_SEARCH_PATHS {
        s.truncate(MAX_SEARCH_PATHS);
        exceeded = true;
    }
    let before = s.len();
    s.retain(|d| d.len() <= MAX_SEARCH_PATH_CHARS);
    exceeded |= s.len() != before;
    while s.join(" ").len() > MAX_SEARCH_LIST_CHARS {
        s.pop();
        exceeded = true;
    }
    if exceeded {
        warnings.push(DnsWarning {
            reason: "DNSConfigForming",
            message: format!(
                "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
                s.join(" ")
            ),
        });
    }
    s
}

fn fit_servers(mut s: Vec<String>, warnings: &mut Vec<DnsWarning>) -> Vec<String> {
    if s.len() > MAX_NAMESERVERS {
        s.truncate(MAX_NAMESERVERS);
        warnings.push(DnsWarning {
            reason: "DNSConfigForming",
            message: format!(
                "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}",
                s.join(" ")
            ),
        });
    }
    s
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DnsType {
    Cluster,
    Host,
    None,
}

/// kubelet's `getPodDNSType`: ClusterFirst on the host network falls back to Default (only
/// ClusterFirstWithHostNet gives such pods cluster DNS); no policy is ClusterFirst (the API
/// server's default, which kubelet also applies to static pods); an unknown one is
/// ClusterFirst too, as kubelet logs and does.
fn dns_type(pod: &Pod) -> DnsType {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    match spec.and_then(|s| s.dns_policy.as_deref()) {
        Some("None") => DnsType::None,
        Some("Default") => DnsType::Host,
        Some("ClusterFirstWithHostNet") => DnsType::Cluster,
        Some("ClusterFirst") | None if host_network => DnsType::Host,
        _ => DnsType::Cluster,
    }
}

/// kubelet's `format.Pod`: `name_namespace(uid)` (its event messages name pods so).
pub fn pod_ref(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// kubelet's `GetPodDNS`: the pod's resolver configuration from the node's (`host`, the
/// parsed `--resolv-conf`, None without one) and the warnings kubelet records as events.
pub fn pod_dns(
    pod: &Pod,
    node: &NodeDns,
    host: Option<&DnsConfig>,
) -> (DnsConfig, Vec<DnsWarning>) {
    let mut warnings = vec![];
    let mut c = host.cloned().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut kind = dns_type(pod);
    match kind {
        DnsType::None => c = DnsConfig::default(),
        DnsType::Cluster if !node.cluster_dns.is_empty() => {
            // The cluster DNS is the only nameserver: it forwards what it cannot answer.
            c.servers = node.cluster_dns.iter().map(IpAddr::to_string).collect();
            if !node.cluster_domain.is_empty() {
                let d = &node.cluster_domain;
                let mut s = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
                s.append(&mut c.searches);
                c.searches = omit_duplicates(s);
            }
            c.options = DEFAULT_OPTIONS.iter().map(|s| s.to_string()).collect();
        }
        DnsType::Cluster => {
            let msg = "kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.";
            warnings.push(DnsWarning {
                reason: "MissingClusterDNS",
                message: format!("pod: {:?}. {msg}", pod_ref(pod)),
            });
            kind = DnsType::Host;
        }
        DnsType::Host => {}
    }
    if kind == DnsType::Host && node.resolv_conf.is_none() {
        // No node resolv.conf: "the nameserver on the local machine", as the bind docs put it.
        c.servers = node
            .node_ips
            .iter()
            .map(|ip| if ip.is_ipv6() { "::1" } else { "127.0.0.1" }.to_string())
            .collect();
        if c.servers.is_empty() {
            c.servers.push("127.0.0.1".into());
        }
        c.searches = vec![".".into()];
    }
    if let Some(dc) = spec.and_then(|s| s.dns_config.as_ref()) {
        c.servers.extend(dc.nameservers.iter().flatten().cloned());
        c.servers = omit_duplicates(std::mem::take(&mut c.servers));
        c.searches.extend(dc.searches.iter().flatten().cloned());
        c.searches = omit_duplicates(std::mem::take(&mut c.searches));
        c.options = merge_options(
            std::mem::take(&mut c.options),
            dc.options.as_deref().unwrap_or_default(),
        );
    }
    c.servers = fit_servers(c.servers, &mut warnings);
    c.searches = fit_searches(c.searches, &mut warnings);
    (c, warnings)
}

/// The pod's resolv.conf as the supervisor writes it: [`pod_dns`] from the node's file, or the
/// node's file itself when the result is empty (containerd copies the host's file then).
pub fn pod_resolv_conf(
    pod: &Pod,
    node: &NodeDns,
) -> Result<(String, Vec<DnsWarning>), std::io::Error> {
    let text = node.read_resolv_conf()?;
    let host = text.as_deref().map(parse_resolv_conf);
    let (c, warnings) = pod_dns(pod, node, host.as_ref());
    let out = c.render();
    if out.is_empty() {
        let copy = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        return Ok((copy, warnings));
    }
    Ok((out, warnings))
}

/// Whether `s` is an RFC 1123 label (what the API server requires of hostname and subdomain).
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// kubelet's `GeneratePodHostNameAndDomain`: the hostname (`spec.hostname`, else the pod's name,
/// cut to 63 characters without a trailing '-' or '.') and, with `spec.subdomain`, the domain
/// `<subdomain>.<namespace>.svc.<cluster domain>`.
pub fn pod_hostname_and_domain(
    pod: &Pod,
    cluster_domain: &str,
) -> Result<(String, Option<String>), String> {
    let spec = pod.spec.as_ref();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let mut hostname = name.to_string();
    if let Some(h) = spec
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
    {
        if !is_dns_label(h) {
            return Err(format!(
                "pod Hostname {h:?} is not a valid DNS label: {LABEL_MSG}"
            ));
        }
        hostname = h.to_string();
    }
    if hostname.len() > HOSTNAME_MAX {
        let cut = (0..=HOSTNAME_MAX)
            .rev()
            .find(|i| hostname.is_char_boundary(*i))
            .unwrap_or(0);
        hostname = hostname[..cut].trim_end_matches(['-', '.']).to_string();
        if hostname.is_empty() {
            return Err(format!("hostname for pod {name:?} was invalid: {name:?}"));
        }
    }
    let mut domain = None;
    if let Some(sd) = spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
    {
        if !is_dns_label(sd) {
            return Err(format!(
                "pod Subdomain {sd:?} is not a valid DNS label: {LABEL_MSG}"
            ));
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        domain = Some(format!("{sd}.{ns}.svc.{cluster_domain}"));
    }
    Ok((hostname, domain))
}

/// kuberuntime's `GetNodenameForKernel`: with `setHostnameAsFQDN` and a domain the kernel
/// hostname is the FQDN, which must fit the kernel's 64 characters.
pub fn kernel_hostname(
    hostname: &str,
    domain: Option<&str>,
    set_fqdn: bool,
) -> Result<String, String> {
    match domain.filter(|d| set_fqdn && !d.is_empty()) {
        Some(d) => {
            let fqdn = format!("{hostname}.{d}");
            if fqdn.len() > FQDN_MAX {
                return Err(format!("failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long ({FQDN_MAX} characters is the max, {} characters requested)", fqdn.len()));
            }
            Ok(fqdn)
        }
        None => Ok(hostname.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).expect("pod")
    }

    fn node(dns: &[&str], domain: &str) -> NodeDns {
        NodeDns {
            cluster_dns: dns.iter().map(|s| s.parse().expect("ip")).collect(),
            cluster_domain: domain.into(),
            resolv_conf: Some("/etc/resolv.conf".into()),
            node_ips: vec![],
        }
    }

    fn host() -> DnsConfig {
        parse_resolv_conf("# generated\nnameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example. lab.example\noptions edns0 timeout:2\n")
    }

    #[test]
    fn parses_resolv_conf_as_kubelet() {
        // dns_test.go's TestParseResolvConf cases: nameservers accumulate, last search/options win.
        let c = parse_resolv_conf("nameserver 1.2.3.4\nsearch foo\nsearch bar baz.\noptions ndots:5\noptions attempts:2 rotate\nnameserver 5.6.7.8\n#nameserver 9.9.9.9\nnameserver\n");
        assert_eq!(c.servers, ["1.2.3.4", "5.6.7.8"]);
        assert_eq!(c.searches, ["bar", "baz"]);
        assert_eq!(c.options, ["attempts:2", "rotate"]);
        assert_eq!(parse_resolv_conf(""), DnsConfig::default());
    }

    #[test]
    fn cluster_first_uses_cluster_dns_search_path_and_ndots() {
        let p = pod("metadata: {name: p, namespace: ns1}\nspec: {containers: []}\n");
        let (c, w) = pod_dns(&p, &node(&["10.0.0.10"], "cluster.local"), Some(&host()));
        assert!(w.is_empty());
        assert_eq!(
            c.render(),
            "search ns1.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\nnameserver 10.0.0.10\noptions ndots:5\n"
        );
        // The host's search list repeating a cluster domain is not repeated.
        let h = parse_resolv_conf("nameserver 1.1.1.1\nsearch cluster.local x\n");
        let (c, _) = pod_dns(
            &p,
            &node(&["10.0.0.10", "fd00::a"], "cluster.local"),
            Some(&h),
        );
        assert_eq!(
            c.searches,
            [
                "ns1.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "x"
            ]
        );
        assert_eq!(c.servers, ["10.0.0.10", "fd00::a"]);
        // No cluster domain: the host's search list only.
        let (c, _) = pod_dns(&p, &node(&["10.0.0.10"], ""), Some(&host()));
        assert_eq!(c.searches, ["corp.example", "lab.example"]);
    }

    #[test]
    fn host_network_needs_cluster_first_with_host_net() {
        let n = node(&["10.0.0.10"], "cluster.local");
        let hn = |policy: &str| {
            pod(&format!("metadata: {{name: p, namespace: d}}\nspec: {{hostNetwork: true, dnsPolicy: {policy}, containers: []}}\n"))
        };
        let (c, _) = pod_dns(&hn("ClusterFirst"), &n, Some(&host()));
        assert_eq!(c, host());
        let (c, _) = pod_dns(&hn("ClusterFirstWithHostNet"), &n, Some(&host()));
        assert_eq!(c.servers, ["10.0.0.10"]);
        assert_eq!(c.searches[0], "d.svc.cluster.local");
        // Without hostNetwork ClusterFirstWithHostNet is plain ClusterFirst.
        let p = pod("metadata: {name: p, namespace: d}\nspec: {dnsPolicy: ClusterFirstWithHostNet, containers: []}\n");
        assert_eq!(pod_dns(&p, &n, Some(&host())).0.servers, ["10.0.0.10"]);
    }

    #[test]
    fn default_policy_is_the_node_file_and_none_is_dns_config_only() {
        let n = node(&["10.0.0.10"], "cluster.local");
        let p = pod("metadata: {name: p}\nspec: {dnsPolicy: Default, containers: []}\n");
        let (c, _) = pod_dns(&p, &n, Some(&host()));
        assert_eq!(
            c.render(),
            "search corp.example lab.example\nnameserver 192.0.2.53\nnameserver 192.0.2.54\noptions edns0 timeout:2\n"
        );
        let p = pod("metadata: {name: p}\nspec:\n  dnsPolicy: None\n  dnsConfig:\n    nameservers: [203.0.113.1]\n    searches: [a.example, b.example]\n    options: [{name: ndots, value: '2'}, {name: edns0}]\n  containers: []\n");
        let (c, w) = pod_dns(&p, &n, Some(&host()));
        assert!(w.is_empty());
        assert_eq!(
            c.render(),
            "search a.example b.example\nnameserver 203.0.113.1\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn dns_config_merges_into_other_policies() {
        // dns_test.go's TestGetPodDNSCustom "ClusterFirst with dnsConfig": duplicates dropped,
        // options replaced by name.
        let n = node(&["10.0.0.10"], "cluster.local");
        let p = pod("metadata: {name: p, namespace: ns}\nspec:\n  dnsConfig:\n    nameservers: [10.0.0.10, 203.0.113.1]\n    searches: [svc.cluster.local, my.example]\n    options: [{name: ndots, value: '3'}, {name: debug}]\n  containers: []\n");
        let (c, _) = pod_dns(&p, &n, Some(&parse_resolv_conf("nameserver 1.1.1.1\n")));
        assert_eq!(c.servers, ["10.0.0.10", "203.0.113.1"]);
        assert_eq!(
            c.searches,
            [
                "ns.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "my.example"
            ]
        );
        assert_eq!(c.options, ["ndots:3", "debug"]);
        let p = pod("metadata: {name: p}\nspec:\n  dnsPolicy: Default\n  dnsConfig: {options: [{name: timeout, value: '5'}]}\n  containers: []\n");
        assert_eq!(
            pod_dns(&p, &n, Some(&host())).0.options,
            ["edns0", "timeout:5"]
        );
    }

    #[test]
    fn missing_cluster_dns_falls_back_to_default_with_a_warning() {
        let p = pod("metadata: {name: web, namespace: shop, uid: u-1}\nspec: {containers: []}\n");
        let (c, w) = pod_dns(&p, &node(&[], "cluster.local"), Some(&host()));
        assert_eq!(c, host());
        assert_eq!(
            w,
            [DnsWarning {
                reason: "MissingClusterDNS",
                message: "pod: \"web_shop(u-1)\". kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.".into()
            }]
        );
        // --resolv-conf="": the local machine's resolver.
        let mut n = node(&[], "");
        n.resolv_conf = None;
        n.node_ips = vec!["fd00::1".parse().expect("ip")];
        let p = pod("metadata: {name: p}\nspec: {dnsPolicy: Default, containers: []}\n");
        let (c, _) = pod_dns(&p, &n, None);
        assert_eq!(c.render(), "search .\nnameserver ::1\n");
    }

    #[test]
    fn limits_cut_and_warn_as_kubelet() {
        let n = node(&["10.0.0.10"], "cluster.local");
        let p = pod("metadata: {name: p}\nspec:\n  dnsPolicy: None\n  dnsConfig: {nameservers: [1.1.1.1, 2.2.2.2, 3.3.3.3, 4.4.4.4]}\n  containers: []\n");
        let (c, w) = pod_dns(&p, &n, None);
        assert_eq!(c.servers, ["1.1.1.1", "2.2.2.2", "3.3.3.3"]);
        assert_eq!(w[0].reason, "DNSConfigForming");
        assert_eq!(w[0].message, "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: 1.1.1.1 2.2.2.2 3.3.3.3");
        // 35 search paths: the first 32 are kept.
        let many: Vec<String> = (0..35).map(|i| format!("d{i}.example")).collect();
        let h = DnsConfig {
            servers: vec![],
            searches: many.clone(),
            options: vec![],
        };
        let p = pod("metadata: {name: p}\nspec: {dnsPolicy: Default, containers: []}\n");
        let (c, w) = pod_dns(&p, &n, Some(&h));
        assert_eq!(c.searches, many[..32]);
        assert_eq!(w.len(), 1);
        assert!(w[0].message.starts_with("Search Line limits were exceeded, some search paths have been omitted, the applied search line is: d0.example d1.example"), "{}", w[0].message);
        // A path over 253 characters is dropped; a line over 2048 loses paths from its end.
        let long = "a".repeat(254);
        let h = DnsConfig {
            servers: vec![],
            searches: vec!["x".into(), long, "y".into()],
            options: vec![],
        };
        assert_eq!(pod_dns(&p, &n, Some(&h)).0.searches, ["x", "y"]);
        let big: Vec<String> = (0..10).map(|i| format!("{i}{}", "b".repeat(249))).collect();
        let h = DnsConfig {
            servers: vec![],
            searches: big.clone(),
            options: vec![],
        };
        let (c, w) = pod_dns(&p, &n, Some(&h));
        assert_eq!(c.searches, big[..8]);
        assert_eq!(c.searches.join(" ").len(), 2007);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn hostnames_domains_and_fqdn_as_kubelet() {
        let p = pod("metadata: {name: web-0, namespace: shop}\nspec: {hostname: h1, subdomain: sub, containers: []}\n");
        assert_eq!(
            pod_hostname_and_domain(&p, "cluster.local").unwrap(),
            (
                "h1".to_string(),
                Some("sub.shop.svc.cluster.local".to_string())
            )
        );
        let p = pod(&format!(
            "metadata: {{name: {}-x, namespace: d}}\nspec: {{containers: []}}\n",
            "a".repeat(62)
        ));
        // 63 characters end in '-': kubelet trims it.
        assert_eq!(
            pod_hostname_and_domain(&p, "c").unwrap(),
            ("a".repeat(62), None)
        );
        let p = pod("metadata: {name: p}\nspec: {hostname: Bad_Name, containers: []}\n");
        let e = pod_hostname_and_domain(&p, "c").unwrap_err();
        assert!(
            e.starts_with(
                "pod Hostname \"Bad_Name\" is not a valid DNS label: a lowercase RFC 1123 label"
            ),
            "{e}"
        );
        let p = pod("metadata: {name: p}\nspec: {subdomain: -x, containers: []}\n");
        assert!(pod_hostname_and_domain(&p, "c")
            .unwrap_err()
            .starts_with("pod Subdomain \"-x\""));
        assert_eq!(
            kernel_hostname("h1", Some("sub.shop.svc.cluster.local"), true).unwrap(),
            "h1.sub.shop.svc.cluster.local"
        );
        assert_eq!(
            kernel_hostname("h1", Some("sub.shop.svc.cluster.local"), false).unwrap(),
            "h1"
        );
        assert_eq!(kernel_hostname("h1", None, true).unwrap(), "h1");
        let e =
            kernel_hostname(&"h".repeat(40), Some("sub.shop.svc.cluster.local"), true).unwrap_err();
        assert_eq!(e, format!("failed to construct FQDN from pod hostname and cluster domain, FQDN {}.sub.shop.svc.cluster.local is too long (64 characters is the max, 67 characters requested)", "h".repeat(40)));
    }

    #[test]
    fn flags_parse_as_kubelet_takes_them() {
        let n = NodeDns::from_flags(
            Some("10.0.0.10, fd00::a"),
            Some("cluster.local."),
            std::path::Path::new(""),
            Some("10.1.1.1"),
        )
        .unwrap();
        assert_eq!(n.cluster_dns.len(), 2);
        assert_eq!(n.cluster_domain, "cluster.local");
        assert_eq!(n.resolv_conf, None);
        assert_eq!(
            NodeDns::from_flags(
                Some("10.0.0.300"),
                None,
                std::path::Path::new("/etc/resolv.conf"),
                None
            )
            .unwrap_err()
            .to_string(),
            "invalid --cluster-dns \"10.0.0.300\": not an IP address"
        );
    }
}
