//! What a pod sees of cluster DNS and Services (issue 14), read back from real pods on a real
//! agent joined to the embedded control plane: /etc/resolv.conf per dnsPolicy (ClusterFirst,
//! ClusterFirstWithHostNet, ClusterFirst on the host network, Default, None + dnsConfig),
//! kubelet's managed /etc/hosts (the pod's own IP and FQDN with a subdomain, hostAliases; the
//! node's file for host-network pods), hostname/subdomain/setHostnameAsFQDN, an FQDN too long
//! for the kernel refused with kubelet's message, service link variables on and off (the pod's
//! own env winning), a static pod planned the same way, and an agent without --cluster-dns
//! falling back to Default with kubelet's `MissingClusterDNS` event.

use k8s_openapi::api::core::v1::{Event, Pod, Service};
use kube::api::{Api, ListParams, LogParams};
use rktup_testkit::agent::*;
use std::time::{Duration, Instant};

const CLUSTER_DNS: &str = "10.96.0.10";
/// The node's resolv.conf the agent gets with --resolv-conf (not the host's own, so the test
/// knows exactly what Default pods must see).
const NODE_RESOLV: &str = "# the node's resolver\nnameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example lab.example.\noptions timeout:2 attempts:3\n";

struct Cluster {
    c: ClusterNode,
    _dir: tempfile::TempDir,
}

/// The kit's [`ClusterNode`] methods (`api`, `create_json`) on this file's cluster.
impl std::ops::Deref for Cluster {
    type Target = ClusterNode;
    fn deref(&self) -> &ClusterNode {
        &self.c
    }
}

impl Cluster {
    /// An agent with `--cluster-dns` (unless `cluster_dns` is false), `--cluster-domain
    /// cluster.local` and `--resolv-conf` pointing at [`NODE_RESOLV`]; its own DNS server and
    /// service proxy are off (this test is about what pods are told, not who answers).
    fn start(prefix: &str, cluster_dns: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, NODE_RESOLV).expect("write resolv.conf");
        let resolv = resolv.display().to_string();
        let mut args = vec![
            "--cluster-domain",
            "cluster.local",
            "--resolv-conf",
            &resolv,
            "--serve-cluster-dns=false",
            "--proxy-mode",
            "none",
        ];
        if cluster_dns {
            args.extend(["--cluster-dns", CLUSTER_DNS]);
        }
        let c = ClusterNode::start(prefix, &args);
        Cluster { c, _dir: dir }
    }

    /// Run `f`; whatever happens, delete every pod and wait until the node has none left, then
    /// stop the control plane (printing the agent's log if `f` failed).
    fn run(mut self, f: impl FnOnce(&Cluster)) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&self)));
        self.c.finish(r);
    }

    /// A pod whose one container prints its resolv.conf, hosts, hostname and environment
    /// (sections split by `--- <name>` lines), then sleeps.
    fn show_pod(&self, name: &str, spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["terminationGracePeriodSeconds"] = 1.into();
        spec["containers"] = serde_json::json!([{
            "name": "c",
            "image": self.c.node.busybox,
            "command": ["sh", "-c", SHOW],
            "env": spec.get("env").cloned().unwrap_or_else(|| serde_json::json!([])),
        }]);
        if let Some(o) = spec.as_object_mut() {
            o.remove("env");
        }
        self.create_json(serde_json::json!({"metadata": {"name": name}, "spec": spec}))
    }

    /// What pod `name` printed (waiting until it printed everything).
    fn shown(&self, name: &str) -> Shown {
        let pods: Api<Pod> = self.api();
        let lp = LogParams::default();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let l = self.c.rt.block_on(pods.logs(name, &lp));
            if let Ok(l) = &l {
                if l.contains("--- end") {
                    return Shown(l.clone());
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {name}'s output; last read: {l:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn pod_ip(&self, name: &str) -> String {
        let pods: Api<Pod> = self.api();
        let pods = &pods;
        self.c.rt.block_on(eventually(
            &format!("{name}'s podIP"),
            Duration::from_secs(60),
            || async move { pods.get_opt(name).await.ok().flatten()?.status?.pod_ip },
        ))
    }

    /// The first Event with `reason` about object `name` (a pod, or the node).
    fn wait_event(&self, name: &str, reason: &str) -> Event {
        let events: Api<Event> = self.api();
        let events = &events;
        self.c.rt.block_on(eventually(
            &format!("{reason} event for {name}"),
            Duration::from_secs(60),
            || async move {
                let l = events.list(&ListParams::default()).await.ok()?;
                l.items.into_iter().find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.involved_object.name.as_deref() == Some(name)
                })
            },
        ))
    }
}

const SHOW: &str = "echo '--- resolv'; cat /etc/resolv.conf; echo '--- hosts'; cat /etc/hosts; \
echo '--- hostname'; hostname; echo '--- env'; env | sort; echo '--- end'; exec sleep 3600";

/// A pod's printout.
struct Shown(String);

impl Shown {
    fn section(&self, name: &str) -> &str {
        let start = format!("--- {name}\n");
        let s = self
            .0
            .split_once(&start)
            .map(|(_, rest)| rest)
            .unwrap_or_else(|| panic!("no section {name} in {:?}", self.0));
        s.split_once("--- ").map(|(a, _)| a).unwrap_or(s)
    }

    fn env(&self, var: &str) -> Option<&str> {
        self.section("env")
            .lines()
            .find_map(|l| l.strip_prefix(var)?.strip_prefix('='))
    }
}

/// The node's resolv.conf as a Default pod gets it (kubelet parses it: the last search line
/// without trailing dots; containerd writes search, nameservers, options).
const DEFAULT_RESOLV: &str = "search corp.example lab.example\nnameserver 192.0.2.53\nnameserver 192.0.2.54\noptions timeout:2 attempts:3\n";

const MANAGED_HEAD: &str = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n";

#[test]
fn pods_see_resolv_conf_hosts_hostname_and_service_variables_as_on_kubelet() {
    let c = Cluster::start("dns", true);
    let (_bridge, _subnet) = c.c.node.bridge_net("0.4.0");
    c.run(|c| {
        // Services exist before the pods: their variables are injected.
        let web: Service = c.create_json(serde_json::json!({
            "metadata": {"name": "web-front"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080},
                               {"name": "metrics", "port": 9090, "protocol": "TCP"}]}
        }));
        let web_ip = web.spec.and_then(|s| s.cluster_ip).expect("web clusterIP");
        let _: Service = c.create_json(serde_json::json!({
            "metadata": {"name": "headless"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
        }));
        let kube: Service = c.c.rt.block_on(eventually(
            "the kubernetes Service",
            Duration::from_secs(30),
            || async { c.api::<Service>().get_opt("kubernetes").await.ok().flatten() },
        ));
        let kube_ip = kube.spec.and_then(|s| s.cluster_ip).expect("kubernetes clusterIP");

        // ClusterFirst (the default) with hostname, subdomain, hostAliases and a dnsConfig.
        c.show_pod("cf", serde_json::json!({
            "hostname": "h1",
            "subdomain": "sub",
            "hostAliases": [{"ip": "203.0.113.7", "hostnames": ["foo.local", "bar.local"]}],
            "dnsConfig": {"searches": ["extra.example"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]},
            "env": [{"name": "WEB_FRONT_SERVICE_PORT", "value": "mine"},
                    {"name": "URL", "value": "http://$(WEB_FRONT_SERVICE_HOST):$(WEB_FRONT_SERVICE_PORT_HTTP)/"}]
        }));
        // setHostnameAsFQDN, service links off, ClusterFirstWithHostNet without hostNetwork.
        c.show_pod("fqdn", serde_json::json!({
            "hostname": "h2",
            "subdomain": "sub",
            "setHostnameAsFQDN": true,
            "enableServiceLinks": false,
            "dnsPolicy": "ClusterFirstWithHostNet"
        }));
        c.show_pod("dflt", serde_json::json!({"dnsPolicy": "Default"}));
        c.show_pod("none", serde_json::json!({
            "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"],
                          "searches": ["a.example"], "options": [{"name": "rotate"}]}
        }));
        c.show_pod("hn", serde_json::json!({
            "hostNetwork": true,
            "hostAliases": [{"ip": "203.0.113.8", "hostnames": ["hn.local"]}]
        }));
        c.show_pod("hnc", serde_json::json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}));
        // 40 + 1 + 29 characters: more than the kernel's 64.
        c.show_pod("toolong", serde_json::json!({
            "hostname": "h".repeat(40), "subdomain": "sub", "setHostnameAsFQDN": true
        }));
        // A static pod: planned by the same code, without the API.
        c.c.node.put(
            "static-dns.yaml",
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: static-dns, namespace: kube-system}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}\n    command: [sh, -c, {:?}]\n",
                c.c.node.busybox, SHOW
            ),
        );

        let cf = c.shown("cf");
        assert_eq!(
            cf.section("resolv"),
            "search default.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example extra.example\nnameserver 10.96.0.10\noptions ndots:2 edns0\n"
        );
        let ip = c.pod_ip("cf");
        assert_eq!(
            cf.section("hosts"),
            format!("{MANAGED_HEAD}{ip}\th1.sub.default.svc.cluster.local\th1\n\n# Entries added by HostAliases.\n203.0.113.7\tfoo.local\tbar.local\n")
        );
        assert_eq!(cf.section("hostname"), "h1\n");
        assert_eq!(cf.env("HOSTNAME"), Some("h1"));
        // Service links: kubelet's names and values; the pod's own variable wins.
        assert_eq!(cf.env("WEB_FRONT_SERVICE_HOST"), Some(web_ip.as_str()));
        assert_eq!(cf.env("WEB_FRONT_SERVICE_PORT"), Some("mine"));
        assert_eq!(cf.env("WEB_FRONT_SERVICE_PORT_HTTP"), Some("80"));
        assert_eq!(cf.env("WEB_FRONT_SERVICE_PORT_METRICS"), Some("9090"));
        let url = format!("tcp://{web_ip}:80");
        assert_eq!(cf.env("WEB_FRONT_PORT"), Some(url.as_str()));
        assert_eq!(cf.env("WEB_FRONT_PORT_80_TCP"), Some(url.as_str()));
        assert_eq!(cf.env("WEB_FRONT_PORT_80_TCP_PROTO"), Some("tcp"));
        assert_eq!(cf.env("WEB_FRONT_PORT_80_TCP_PORT"), Some("80"));
        assert_eq!(cf.env("WEB_FRONT_PORT_80_TCP_ADDR"), Some(web_ip.as_str()));
        assert_eq!(cf.env("WEB_FRONT_PORT_9090_TCP_PORT"), Some("9090"));
        let want_url = format!("http://{web_ip}:80/");
        assert_eq!(cf.env("URL"), Some(want_url.as_str()));
        assert_eq!(cf.env("KUBERNETES_SERVICE_HOST"), Some(kube_ip.as_str()));
        assert!(cf.env("KUBERNETES_PORT").is_some_and(|v| v.starts_with("tcp://")));
        assert_eq!(cf.env("HEADLESS_SERVICE_HOST"), None);

        let fqdn = c.shown("fqdn");
        assert_eq!(fqdn.section("hostname"), "h2.sub.default.svc.cluster.local\n");
        assert_eq!(fqdn.env("HOSTNAME"), Some("h2.sub.default.svc.cluster.local"));
        let ip = c.pod_ip("fqdn");
        assert_eq!(
            fqdn.section("hosts"),
            format!("{MANAGED_HEAD}{ip}\th2.sub.default.svc.cluster.local\th2\n")
        );
        assert!(fqdn.section("resolv").contains("nameserver 10.96.0.10\n"));
        // enableServiceLinks: false keeps only the master service.
        assert_eq!(fqdn.env("WEB_FRONT_SERVICE_HOST"), None);
        assert_eq!(fqdn.env("KUBERNETES_SERVICE_HOST"), Some(kube_ip.as_str()));

        let dflt = c.shown("dflt");
        assert_eq!(dflt.section("resolv"), DEFAULT_RESOLV);
        let ip = c.pod_ip("dflt");
        assert_eq!(dflt.section("hosts"), format!("{MANAGED_HEAD}{ip}\tdflt\n"));
        assert_eq!(dflt.section("hostname"), "dflt\n");

        let none = c.shown("none");
        assert_eq!(
            none.section("resolv"),
            "search a.example\nnameserver 198.51.100.1\nnameserver 198.51.100.2\nnameserver 198.51.100.3\noptions rotate\n"
        );
        let ev = c.wait_event("none", "DNSConfigForming");
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(
            ev.message.as_deref(),
            Some("Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: 198.51.100.1 198.51.100.2 198.51.100.3")
        );

        // The host network: plain ClusterFirst falls back to Default; the node's hosts file
        // and hostname.
        let hn = c.shown("hn");
        assert_eq!(hn.section("resolv"), DEFAULT_RESOLV);
        let node_hosts = std::fs::read_to_string("/etc/hosts").expect("host /etc/hosts");
        assert_eq!(
            hn.section("hosts"),
            format!("# Kubernetes-managed hosts file (host network).\n{node_hosts}\n# Entries added by HostAliases.\n203.0.113.8\thn.local\n")
        );
        let node_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
        assert_eq!(hn.section("hostname").trim(), node_hostname.trim());
        assert_eq!(hn.env("HOSTNAME"), Some(node_hostname.trim()));
        let hnc = c.shown("hnc");
        assert!(
            hnc.section("resolv").starts_with("search default.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\nnameserver 10.96.0.10\noptions ndots:5\n"),
            "{}",
            hnc.0
        );

        // kubelet's sandbox error, word for word.
        let ev = c.wait_event("toolong", "FailedCreatePodSandBox");
        let msg = ev.message.unwrap_or_default();
        let fqdn = format!("{}.sub.default.svc.cluster.local", "h".repeat(40));
        assert!(
            msg == format!("Failed to create pod sandbox: failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long (64 characters is the max, 70 characters requested)"),
            "{msg}"
        );

        // The static pod (its mirror pod carries its log): ClusterFirst in its namespace,
        // hostname from its name.
        let mirror = format!("static-dns-{}", c.c.node_name);
        let pods: Api<Pod> = Api::namespaced(c.c.admin.clone(), "kube-system");
        let pods = &pods;
        let mirror = mirror.as_str();
        let out = c.c.rt.block_on(eventually(
            "the static pod's output",
            Duration::from_secs(90),
            || async move {
                let l = pods.logs(mirror, &LogParams::default()).await.ok()?;
                l.contains("--- end").then_some(l)
            },
        ));
        let st = Shown(out);
        assert!(
            st.section("resolv").starts_with("search kube-system.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\nnameserver 10.96.0.10\noptions ndots:5\n"),
            "{}",
            st.0
        );
        assert_eq!(st.section("hostname"), "static-dns\n");
        assert!(st.section("hosts").contains("\tstatic-dns\n"), "{}", st.0);
    });
}

#[test]
fn without_cluster_dns_cluster_first_falls_back_to_default_with_kubelets_warning() {
    let c = Cluster::start("nodns", false);
    let (_bridge, _subnet) = c.c.node.bridge_net("0.4.0");
    c.run(|c| {
        let pod = c.show_pod("cf", serde_json::json!({}));
        let cf = c.shown("cf");
        assert_eq!(cf.section("resolv"), DEFAULT_RESOLV);
        let ev = c.wait_event("cf", "MissingClusterDNS");
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        let uid = pod.metadata.uid.unwrap_or_default();
        assert_eq!(
            ev.message.as_deref(),
            Some(format!("pod: \"cf_default({uid})\". kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.").as_str())
        );
        let ev = c.wait_event(&c.c.node_name, "MissingClusterDNS");
        assert_eq!(ev.involved_object.kind.as_deref(), Some("Node"));
    });
}
