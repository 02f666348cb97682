//! What the kubelet half adds to a pod from cluster Services and DNS:
//! - [`Services`]: a watch cache of every Service (a kube-rs reflector, as kubelet's service
//!   informer), so building a pod's environment costs no API call;
//! - [`service_env`]: the Docker-link style variables kubelet injects (`getServiceEnvVarMap`,
//!   `envvars.FromServices`): `{SVC}_SERVICE_HOST`, `{SVC}_SERVICE_PORT[_{PORT}]`, `{SVC}_PORT`,
//!   `{SVC}_PORT_{port}_{PROTO}[_PROTO|_PORT|_ADDR]`;
//! - [`record_warnings`]: the Warning events kubelet records while forming a pod's DNS
//!   (`MissingClusterDNS`, `DNSConfigForming`). The DNS configuration itself is planned by the
//!   runtime (`rktup_runtime::manifest::dns`), for static pods too.

use super::events;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use rktup_runtime::manifest::dns::DnsWarning;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::warn;

/// Services always injected from the `default` namespace, whatever `enableServiceLinks` says
/// (kubelet's `masterServices`): in-cluster clients find the API server by them.
const MASTER_SERVICES: &[&str] = &["kubernetes"];

/// kubelet's wording when the cache has not listed Services yet (the pod waits, with
/// CreateContainerConfigError, rather than start without `KUBERNETES_SERVICE_HOST`).
pub const NOT_SYNCED: &str =
    "services have not yet been read at least once, cannot construct envvars";

/// Every Service of the cluster, kept by a watch.
#[derive(Clone)]
pub struct Services {
    store: reflector::Store<Service>,
}

impl Services {
    /// Start watching (on the current tokio runtime); the cache fills in the background.
    pub fn watch(client: kube::Client) -> Services {
        let (store, writer) = reflector::store();
        let api: Api<Service> = Api::all(client);
        let stream = reflector(
            writer,
            watcher(api, watcher::Config::default()).default_backoff(),
        );
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                if let Err(e) = ev {
                    warn!("kubelet: service watch: {e}");
                }
            }
        });
        Services { store }
    }

    /// The Services, once the first list has arrived (waiting up to `wait` for it).
    pub async fn list(&self, wait: Duration) -> Option<Vec<std::sync::Arc<Service>>> {
        tokio::time::timeout(wait, self.store.wait_until_ready())
            .await
            .ok()?
            .ok()?;
        Some(self.store.state())
    }
}

/// kubelet's `IsServiceIPSet`: a ClusterIP that is neither empty nor "None" (headless and
/// ExternalName Services get no variables).
fn has_cluster_ip(s: &Service) -> bool {
    s.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty() && ip != "None")
}

/// `my-svc` → `MY_SVC` (kubelet's `makeEnvVariableName`).
fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

/// `host:port`, IPv6 in brackets (Go's `net.JoinHostPort`).
fn join_host_port(host: &str, port: i32) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{host}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// The variables of one Service, in kubelet's order.
fn one_service(s: &Service) -> Vec<(String, String)> {
    let mut out = vec![];
    let Some(spec) = s.spec.as_ref() else {
        return out;
    };
    let ip = spec.cluster_ip.clone().unwrap_or_default();
    let prefix = env_name(s.metadata.name.as_deref().unwrap_or_default());
    let ports = spec.ports.as_deref().unwrap_or_default();
    out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
    // API validation requires ports of a Service with a ClusterIP; one without gets the host
    // variable only (kubelet would index an empty list).
    let Some(first) = ports.first() else {
        return out;
    };
    let svc_port = format!("{prefix}_SERVICE_PORT");
    out.push((svc_port.clone(), first.port.to_string()));
    for p in ports {
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((format!("{svc_port}_{}", env_name(n)), p.port.to_string()));
        }
    }
    for (i, p) in ports.iter().enumerate() {
        let proto = p
            .protocol
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("TCP");
        let url = format!("{}://{}", proto.to_lowercase(), join_host_port(&ip, p.port));
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
        out.push((pp.clone(), url));
        out.push((format!("{pp}_PROTO"), proto.to_lowercase()));
        out.push((format!("{pp}_PORT"), p.port.to_string()));
        out.push((format!("{pp}_ADDR"), ip.clone()));
    }
    out
}

/// The service variables a pod in `namespace` gets (kubelet's `getServiceEnvVarMap`): the
/// master services of `default` always, every Service of its own namespace when
/// `enable_service_links`; a Service of the pod's namespace wins over a master service of the
/// same name. Ordered by Service name (kubelet's order is a map's, i.e. random).
pub fn service_env<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    namespace: &str,
    enable_service_links: bool,
) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<&str, &Service> = BTreeMap::new();
    for s in services {
        if !has_cluster_ip(s) {
            continue;
        }
        let name = s.metadata.name.as_deref().unwrap_or_default();
        let ns = s.metadata.namespace.as_deref().unwrap_or_default();
        if ns == "default" && MASTER_SERVICES.contains(&name) {
            chosen.entry(name).or_insert(s);
        } else if ns == namespace && enable_service_links {
            chosen.insert(name, s);
        }
    }
    let mut out: Vec<(String, String)> = vec![];
    for s in chosen.values() {
        for (k, v) in one_service(s) {
            out.retain(|(x, _)| *x != k);
            out.push((k, v));
        }
    }
    out
}

static NODE_WARNED: AtomicBool = AtomicBool::new(false);

/// Record the warnings of forming `pod`'s DNS as kubelet does: each as a Warning event on the
/// pod; `MissingClusterDNS` also once on the Node (kubelet repeats it per pod, which its event
/// recorder folds into one).
pub async fn record_warnings(
    client: &kube::Client,
    node: &str,
    pod: &Pod,
    warnings: &[DnsWarning],
) {
    for w in warnings {
        events::record(client, node, pod, "Warning", w.reason, &w.message).await;
        if w.reason == "MissingClusterDNS" && !NODE_WARNED.swap(true, Ordering::SeqCst) {
            let msg = w
                .message
                .split_once(". ")
                .map(|(_, m)| m)
                .unwrap_or(&w.message);
            node_event(client, node, w.reason, msg).await;
        }
    }
}

/// A Warning event about the Node itself (kubelet's node reference: namespace "default").
async fn node_event(client: &kube::Client, node: &str, reason: &str, message: &str) {
    let now = Time(jiff::Timestamp::now());
    let ev = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{node}.")),
            namespace: Some("default".into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("Node".into()),
            name: Some(node.into()),
            uid: Some(node.into()),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some("Warning".into()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.into()),
        }),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        warn!("kubelet: failed to record event {reason} on node {node}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": ports}
        }))
        .expect("service")
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn variables_of_one_service_as_kubelet_names_them() {
        // kubelet_pods_test.go's TestMakeEnvironmentVariables "api server = Y, kubelet = Y"
        // (test-service in test1) and envvars_test.go's multi-port service.
        let s = svc(
            "test1",
            "test-service",
            "1.2.3.3",
            serde_json::json!([{"protocol": "TCP", "port": 8083}]),
        );
        let env = service_env([&s], "test1", true);
        let want: Vec<(String, String)> = [
            ("TEST_SERVICE_SERVICE_HOST", "1.2.3.3"),
            ("TEST_SERVICE_SERVICE_PORT", "8083"),
            ("TEST_SERVICE_PORT", "tcp://1.2.3.3:8083"),
            ("TEST_SERVICE_PORT_8083_TCP", "tcp://1.2.3.3:8083"),
            ("TEST_SERVICE_PORT_8083_TCP_PROTO", "tcp"),
            ("TEST_SERVICE_PORT_8083_TCP_PORT", "8083"),
            ("TEST_SERVICE_PORT_8083_TCP_ADDR", "1.2.3.3"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(env, want);
        let s = svc(
            "ns",
            "super-ipv6",
            "2001:db8::1",
            serde_json::json!([{"name": "u-d-p", "protocol": "UDP", "port": 8084},
                               {"name": "t-c-p", "protocol": "TCP", "port": 8083}]),
        );
        let env = service_env([&s], "ns", true);
        assert_eq!(get(&env, "SUPER_IPV6_SERVICE_PORT"), Some("8084"));
        assert_eq!(get(&env, "SUPER_IPV6_SERVICE_PORT_U_D_P"), Some("8084"));
        assert_eq!(get(&env, "SUPER_IPV6_SERVICE_PORT_T_C_P"), Some("8083"));
        assert_eq!(
            get(&env, "SUPER_IPV6_PORT"),
            Some("udp://[2001:db8::1]:8084")
        );
        assert_eq!(
            get(&env, "SUPER_IPV6_PORT_8083_TCP"),
            Some("tcp://[2001:db8::1]:8083")
        );
        assert_eq!(get(&env, "SUPER_IPV6_PORT_8084_UDP_PROTO"), Some("udp"));
        assert_eq!(
            get(&env, "SUPER_IPV6_PORT_8083_TCP_ADDR"),
            Some("2001:db8::1")
        );
        // HOST, SERVICE_PORT and its two named ports, PORT, four per port.
        assert_eq!(env.len(), 4 + 1 + 2 * 4);
    }

    #[test]
    fn which_services_a_pod_sees() {
        let p80 = serde_json::json!([{"port": 80}]);
        let all = [
            svc(
                "default",
                "kubernetes",
                "10.0.0.1",
                serde_json::json!([{"name": "https", "port": 443}]),
            ),
            svc("default", "web", "10.0.0.2", p80.clone()),
            svc("shop", "cart", "10.0.0.3", p80.clone()),
            svc("shop", "headless", "None", p80.clone()),
            svc("shop", "ext", "", p80.clone()),
            svc("other", "kubernetes", "10.0.0.9", p80.clone()),
        ];
        let names = |env: Vec<(String, String)>| -> Vec<String> {
            env.into_iter()
                .filter(|(k, _)| k.ends_with("_SERVICE_HOST"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        };
        assert_eq!(
            names(service_env(&all, "shop", true)),
            [
                "CART_SERVICE_HOST=10.0.0.3",
                "KUBERNETES_SERVICE_HOST=10.0.0.1"
            ]
        );
        // enableServiceLinks: false keeps the master service only.
        let env = service_env(&all, "shop", false);
        assert_eq!(names(env.clone()), ["KUBERNETES_SERVICE_HOST=10.0.0.1"]);
        assert_eq!(get(&env, "KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get(&env, "KUBERNETES_PORT"), Some("tcp://10.0.0.1:443"));
        assert_eq!(
            names(service_env(&all, "default", true)),
            [
                "KUBERNETES_SERVICE_HOST=10.0.0.1",
                "WEB_SERVICE_HOST=10.0.0.2"
            ]
        );
        // A `kubernetes` Service in the pod's own namespace wins over default's.
        assert_eq!(
            names(service_env(&all, "other", true)),
            ["KUBERNETES_SERVICE_HOST=10.0.0.9"]
        );
    }
}
