//! A test aggregated API server for metrics.k8s.io/v1beta1, as metrics-server serves it
//! (APIResourceList, NodeMetrics and PodMetrics lists and gets): it trusts only the front proxy
//! (a client certificate from `requestheader-client-ca-file` with a CN in
//! `requestheader-allowed-names`, read from `kube-system/extension-apiserver-authentication`)
//! and authorizes the `X-Remote-User`/`X-Remote-Group` it is told about with
//! SubjectAccessReviews. Its numbers are fixed ([`Usage::Fixed`]) or scraped from the nodes'
//! kubelet `/metrics/resource` as metrics-server does ([`Usage::Scrape`]: CPU as the rate
//! between two scrapes of the cumulative counters, memory as the working set).
//! Used by the control plane's `tests/aggregation.rs` and `tests/top_local.rs`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the numbers come from.
#[derive(Clone)]
pub enum Usage {
    /// 250m CPU and 1 GiB per node, 5m CPU and 10 MiB per container.
    Fixed,
    /// The nodes' kubelet `/metrics/resource` (InternalIP, kubelet port), called with this
    /// client certificate (PEM), the serving certificate not verified (metrics-server's
    /// `--kubelet-insecure-tls`).
    Scrape { cert_pem: String, key_pem: String },
    /// As metrics-server runs in a pod without `--kubelet-insecure-tls`: its ServiceAccount
    /// token as the bearer, the kubelet's serving certificate verified against the cluster CA
    /// (the pod's `ca.crt`) for the node's address.
    ScrapeWithToken { token: String, ca_pem: String },
}

/// What the backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    /// The client certificate's CN (empty: none).
    pub client_cn: String,
    pub user: String,
    pub groups: Vec<String>,
    /// Whether an `Authorization` or `Impersonate-*` header came along.
    pub credentials_leaked: bool,
}

pub struct Server {
    pub port: u16,
    /// PEM of the CA that signed the serving certificate (the APIService's caBundle).
    pub ca_pem: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Fixed usage: 250m CPU and 1 GiB per node, 5m CPU and 10 MiB per container.
const NODE_CPU: &str = "250m";
const NODE_MEMORY: &str = "1Gi";
const CONTAINER_CPU: &str = "5m";
const CONTAINER_MEMORY: &str = "10Mi";

/// Starts the server on `127.0.0.1:port` (0: any), serving as `SERVICE.NAMESPACE.svc`,
/// trusting the front proxy as the cluster's authentication ConfigMap says; `client` (it
/// must be allowed to create SubjectAccessReviews and read nodes and pods) is its own
/// identity towards the API server.
pub async fn start(client: kube::Client, server_name: &str, port: u16, usage: Usage) -> Server {
    start_on(
        client,
        server_name,
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        usage,
    )
    .await
}

/// [`start`] on any address (a pod's `0.0.0.0:10250`, as metrics-server's `--secure-port`).
pub async fn start_on(
    client: kube::Client,
    server_name: &str,
    addr: std::net::SocketAddr,
    usage: Usage,
) -> Server {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let cm = crate::eventually(
        "the authentication ConfigMap",
        std::time::Duration::from_secs(20),
        || {
            let cms = cms.clone();
            async move {
                match cms.get_opt("extension-apiserver-authentication").await {
                    Ok(cm) => cm,
                    Err(e) => {
                        // Seen in the pod's log when this runs in a pod.
                        eprintln!("metrics: reading the authentication ConfigMap: {e}");
                        None
                    }
                }
            }
        },
    )
    .await;
    let data = cm.data.unwrap_or_default();
    let requestheader_ca = data
        .get("requestheader-client-ca-file")
        .cloned()
        .expect("requestheader-client-ca-file");
    let allowed: Vec<String> = serde_json::from_str(
        data.get("requestheader-allowed-names")
            .map(String::as_str)
            .unwrap_or("[]"),
    )
    .expect("allowed names");
    assert_eq!(
        data.get("requestheader-username-headers")
            .map(String::as_str),
        Some(r#"["X-Remote-User"]"#)
    );
    assert_eq!(
        data.get("requestheader-group-headers").map(String::as_str),
        Some(r#"["X-Remote-Group"]"#)
    );
    assert!(data.contains_key("client-ca-file"));

    // Serving certificate for the Service's name, from a CA of its own.
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca");
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "metrics-test-ca");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).expect("issuer");
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec![server_name.to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("leaf");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(requestheader_ca.as_bytes()) {
        roots.add(c.expect("ca pem")).expect("root");
    }
    // Requests without the front proxy's certificate get through the handshake and are
    // answered 401, as an aggregated server with no other authenticator does.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .expect("verifier");
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key"),
        )
        .expect("tls");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (kubelet_tls, kubelet_token) = match &usage {
        Usage::Fixed => (None, None),
        Usage::Scrape { cert_pem, key_pem } => (Some(kubelet_client(cert_pem, key_pem)), None),
        Usage::ScrapeWithToken { token, ca_pem } => {
            (Some(kubelet_verifying(ca_pem)), Some(token.clone()))
        }
    };
    let state = Arc::new(State {
        client,
        allowed,
        seen: seen.clone(),
        kubelet_tls,
        kubelet_token,
    });
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, state) = (acceptor.clone(), state.clone());
            conns.spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let cn = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| common_name(c.as_ref()))
                    .unwrap_or_default();
                let svc = hyper::service::service_fn(move |req| {
                    let (state, cn) = (state.clone(), cn.clone());
                    async move { Ok::<_, std::convert::Infallible>(state.handle(&cn, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Server {
        port,
        ca_pem: ca_cert.pem(),
        seen,
        task,
    }
}

fn common_name(der: &[u8]) -> String {
    use x509_parser::prelude::FromDer;
    x509_parser::certificate::X509Certificate::from_der(der)
        .ok()
        .and_then(|(_, c)| {
            c.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok().map(String::from))
        })
        .unwrap_or_default()
}

struct State {
    client: kube::Client,
    allowed: Vec<String>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Scraping: the TLS client towards kubelets.
    kubelet_tls: Option<Arc<rustls::ClientConfig>>,
    /// Scraping with a ServiceAccount token: the bearer sent to kubelets.
    kubelet_token: Option<String>,
}

/// What one node's usage came to.
#[derive(Default)]
struct NodeUsage {
    /// Nanocores and bytes of the node.
    node: Option<(f64, f64)>,
    /// (namespace, pod, container) → nanocores and bytes.
    containers: HashMap<(String, String, String), (f64, f64)>,
}

type Resp = hyper::Response<Full<Bytes>>;

fn json_resp(code: u16, v: &Value) -> Resp {
    let mut r = hyper::Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = hyper::StatusCode::from_u16(code).expect("code");
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn status(code: u16, reason: &str, message: &str) -> Resp {
    json_resp(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl State {
    async fn handle(&self, cn: &str, req: hyper::Request<hyper::body::Incoming>) -> Resp {
        let h = req.headers();
        let user = h
            .get("x-remote-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let groups: Vec<String> = h
            .get_all("x-remote-group")
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect();
        let leaked = h.contains_key("authorization")
            || h.keys().any(|k| k.as_str().starts_with("impersonate-"));
        let path = req.uri().path().to_string();
        if let Ok(mut s) = self.seen.lock() {
            s.push(Seen {
                path: path.clone(),
                client_cn: cn.to_string(),
                user: user.clone(),
                groups: groups.clone(),
                credentials_leaked: leaked,
            });
        }
        let _ = req.into_body().collect().await;
        // The probes' paths answer anyone, as metrics-server's
        // `--authorization-always-allow-paths=/healthz,/readyz,/livez` default.
        if matches!(path.as_str(), "/livez" | "/readyz" | "/healthz") {
            let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
            *r.status_mut() = hyper::StatusCode::OK;
            return r;
        }
        // Only the front proxy may assert identities (requestheader-allowed-names).
        if cn.is_empty() || !self.allowed.iter().any(|a| a == cn) || user.is_empty() {
            return status(401, "Unauthorized", "Unauthorized");
        }
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let rest = match segs.as_slice() {
            ["apis", "metrics.k8s.io", "v1beta1", rest @ ..] => rest.to_vec(),
            _ => {
                return status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )
            }
        };
        let (ns, rest) = match rest.as_slice() {
            ["namespaces", ns, tail @ ..] if !tail.is_empty() => {
                (Some(ns.to_string()), tail.to_vec())
            }
            _ => (None, rest.clone()),
        };
        let (resource, name) = match rest.as_slice() {
            [] => ("", None),
            [r] => (*r, None),
            [r, n] => (*r, Some(n.to_string())),
            _ => {
                return status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )
            }
        };
        if !matches!(resource, "" | "nodes" | "pods") || (resource == "nodes" && ns.is_some()) {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
        let verb = if name.is_some() { "get" } else { "list" };
        let attrs = if resource.is_empty() {
            json!({"nonResourceAttributes": {"path": path, "verb": "get"}})
        } else {
            json!({"resourceAttributes": {"group": "metrics.k8s.io", "version": "v1beta1", "resource": resource, "verb": verb, "namespace": ns.clone().unwrap_or_default(), "name": name.clone().unwrap_or_default()}})
        };
        let mut spec = attrs;
        spec["user"] = json!(user);
        spec["groups"] = json!(groups);
        let sar: SubjectAccessReview = match serde_json::from_value(json!({"spec": spec})) {
            Ok(s) => s,
            Err(e) => return status(500, "InternalError", &e.to_string()),
        };
        let reviews: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let allowed = match reviews.create(&PostParams::default(), &sar).await {
            Ok(r) => r.status.is_some_and(|s| s.allowed),
            Err(e) => return status(500, "InternalError", &e.to_string()),
        };
        if !allowed {
            let msg = if resource.is_empty() {
                format!("forbidden: User \"{user}\" cannot get path \"{path}\"")
            } else {
                let scope = match &ns {
                    Some(ns) => format!("in the namespace \"{ns}\""),
                    None => "at the cluster scope".to_string(),
                };
                let subject = match &name {
                    Some(n) => format!("{resource}.metrics.k8s.io \"{n}\""),
                    None => format!("{resource}.metrics.k8s.io"),
                };
                format!("{subject} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"metrics.k8s.io\" {scope}")
            };
            return status(403, "Forbidden", &msg);
        }
        match resource {
            "" => json_resp(
                200,
                &json!({
                    "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "metrics.k8s.io/v1beta1",
                    "resources": [
                        {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
                        {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
                    ],
                }),
            ),
            "nodes" => self.nodes(name.as_deref()).await,
            _ => self.pods(ns.as_deref(), name.as_deref()).await,
        }
    }

    async fn nodes(&self, name: Option<&str>) -> Resp {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let list = nodes
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let mut items: Vec<Value> = Vec::new();
        for n in list
            .iter()
            .filter(|n| name.is_none() || n.metadata.name.as_deref() == name)
        {
            let usage = match &self.kubelet_tls {
                None => json!({"cpu": NODE_CPU, "memory": NODE_MEMORY}),
                // A node whose kubelet cannot be scraped is left out, as metrics-server does.
                Some(tls) => match self.scrape(tls, n).await.node {
                    Some((cpu, mem)) => quantities(cpu, mem),
                    None => continue,
                },
            };
            items.push(json!({
                "metadata": {"name": n.metadata.name, "creationTimestamp": now(), "labels": n.metadata.labels},
                "timestamp": now(), "window": "10s",
                "usage": usage,
            }));
        }
        match name {
            Some(n) => match items.into_iter().next() {
                Some(mut item) => {
                    item["kind"] = json!("NodeMetrics");
                    item["apiVersion"] = json!("metrics.k8s.io/v1beta1");
                    json_resp(200, &item)
                }
                None => status(
                    404,
                    "NotFound",
                    &format!("nodemetrics.metrics.k8s.io \"{n}\" not found"),
                ),
            },
            None => json_resp(
                200,
                &json!({"kind": "NodeMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}),
            ),
        }
    }

    async fn pods(&self, ns: Option<&str>, name: Option<&str>) -> Resp {
        let pods: Api<Pod> = match ns {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let list = pods
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        // Scraping: each node running one of the pods, once.
        let mut scraped: HashMap<String, NodeUsage> = HashMap::new();
        if let Some(tls) = &self.kubelet_tls {
            let nodes: Api<Node> = Api::all(self.client.clone());
            for p in &list {
                let node = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default();
                if node.is_empty() || scraped.contains_key(&node) {
                    continue;
                }
                if let Ok(n) = nodes.get(&node).await {
                    let u = self.scrape(tls, &n).await;
                    scraped.insert(node, u);
                }
            }
        }
        let mut items: Vec<Value> = Vec::new();
        for p in list
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter(|p| name.is_none() || p.metadata.name.as_deref() == name)
        {
            let (pns, pname) = (
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default(),
            );
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let mut containers: Vec<Value> = Vec::new();
            for c in p
                .spec
                .as_ref()
                .map(|s| s.containers.clone())
                .unwrap_or_default()
            {
                let usage = match &self.kubelet_tls {
                    None => json!({"cpu": CONTAINER_CPU, "memory": CONTAINER_MEMORY}),
                    Some(_) => match scraped.get(&node).and_then(|u| {
                        u.containers
                            .get(&(pns.clone(), pname.clone(), c.name.clone()))
                    }) {
                        Some((cpu, mem)) => quantities(*cpu, *mem),
                        None => continue,
                    },
                };
                containers.push(json!({"name": c.name, "usage": usage}));
            }
            if containers.is_empty() {
                continue;
            }
            items.push(json!({
                "metadata": {"name": pname, "namespace": pns, "creationTimestamp": now(), "labels": p.metadata.labels},
                "timestamp": now(), "window": "10s", "containers": containers,
            }));
        }
        match name {
            Some(n) => match items.into_iter().next() {
                Some(mut item) => {
                    item["kind"] = json!("PodMetrics");
                    item["apiVersion"] = json!("metrics.k8s.io/v1beta1");
                    json_resp(200, &item)
                }
                None => status(
                    404,
                    "NotFound",
                    &format!("podmetrics.metrics.k8s.io \"{n}\" not found"),
                ),
            },
            None => json_resp(
                200,
                &json!({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}),
            ),
        }
    }

    /// Two scrapes of the node's `/metrics/resource`, far enough apart for the cumulative CPU
    /// counters' timestamps to differ (the kubelet samples its cgroups periodically): CPU is
    /// the rate between them, memory the later working set.
    async fn scrape(&self, tls: &Arc<rustls::ClientConfig>, node: &Node) -> NodeUsage {
        let Some(addr) = kubelet_address(node) else {
            return NodeUsage::default();
        };
        let token = self.kubelet_token.as_deref();
        let first = match get_metrics(tls, token, &addr).await {
            Ok(text) => text,
            Err(e) => {
                // Seen in the pod's log (`kubectl logs`), as metrics-server logs its scrapes.
                eprintln!("metrics: scraping {addr}: {e}");
                return NodeUsage::default();
            }
        };
        let first = parse(&first);
        let node_time = |samples: &[Sample]| {
            samples
                .iter()
                .find(|s| s.name == "node_cpu_usage_seconds_total")
                .map(|s| s.timestamp_ms)
        };
        let mut second = Vec::new();
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Ok(text) = get_metrics(tls, token, &addr).await else {
                return NodeUsage::default();
            };
            second = parse(&text);
            if node_time(&second) > node_time(&first) {
                break;
            }
        }
        let rate = |name: &str, key: &dyn Fn(&Sample) -> bool| -> Option<f64> {
            let a = first.iter().find(|s| s.name == name && key(s))?;
            let b = second.iter().find(|s| s.name == name && key(s))?;
            let dt = (b.timestamp_ms - a.timestamp_ms) as f64 / 1000.0;
            (dt > 0.0).then(|| ((b.value - a.value) / dt * 1e9).max(0.0))
        };
        let mut u = NodeUsage::default();
        let any = |_: &Sample| true;
        let mem = second
            .iter()
            .find(|s| s.name == "node_memory_working_set_bytes")
            .map(|s| s.value);
        if let (Some(cpu), Some(mem)) = (rate("node_cpu_usage_seconds_total", &any), mem) {
            u.node = Some((cpu, mem));
        }
        for s in second
            .iter()
            .filter(|s| s.name == "container_memory_working_set_bytes")
        {
            let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            let key = (l("namespace"), l("pod"), l("container"));
            let same = |o: &Sample| {
                o.labels.get("namespace") == Some(&key.0)
                    && o.labels.get("pod") == Some(&key.1)
                    && o.labels.get("container") == Some(&key.2)
            };
            if let Some(cpu) = rate("container_cpu_usage_seconds_total", &same) {
                u.containers.insert(key, (cpu, s.value));
            }
        }
        u
    }
}

/// NodeMetrics/PodMetrics usage as metrics-server writes it: nanocores and KiB.
fn quantities(nanocores: f64, bytes: f64) -> Value {
    json!({"cpu": format!("{}n", nanocores.round() as u64), "memory": format!("{}Ki", (bytes / 1024.0).round() as u64)})
}

/// The node's InternalIP and kubelet port.
fn kubelet_address(node: &Node) -> Option<String> {
    let status = node.status.as_ref()?;
    let ip = status
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .clone();
    let port = status
        .daemon_endpoints
        .as_ref()
        .and_then(|d| d.kubelet_endpoint.as_ref())
        .map_or(10250, |e| e.port);
    Some(format!("{ip}:{port}"))
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
    timestamp_ms: i64,
}

/// The samples of a Prometheus text exposition (comments skipped; label values unescaped).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (name, labels, rest) = match line.find('{') {
            Some(i) => {
                let Some(j) = line.rfind('}') else { continue };
                (
                    &line[..i],
                    parse_labels(&line[i + 1..j]),
                    line[j + 1..].trim(),
                )
            }
            None => match line.split_once(' ') {
                Some((n, r)) => (n, HashMap::new(), r.trim()),
                None => continue,
            },
        };
        let mut parts = rest.split_whitespace();
        let Some(value) = parts.next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let timestamp_ms = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
            timestamp_ms,
        });
    }
    out
}

/// `k="v",k2="v2"` with Prometheus' escapes (`\\`, `\"`, `\n`).
fn parse_labels(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim().trim_start_matches(',').trim().to_string();
        if key.is_empty() || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(o) => value.push(o),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key, value);
    }
    out
}

/// `GET https://ADDR/metrics/resource`, with `token` as the bearer if given.
async fn get_metrics(
    tls: &Arc<rustls::ClientConfig>,
    token: Option<&str>,
    addr: &str,
) -> Result<String, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string();
    let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "dial timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get("/metrics/resource").header(hyper::header::HOST, addr);
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("{addr}: {}", resp.status()));
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A TLS client presenting `cert_pem`/`key_pem` that accepts any serving certificate
/// (metrics-server's `--kubelet-insecure-tls`).
fn kubelet_client(cert_pem: &str, key_pem: &str) -> Arc<rustls::ClientConfig> {
    rktup_tls::ClientTls::insecure(rktup_tls::Insecure::MetricsServerKubeletInsecureTls)
        .with_client_pem(
            "the scraping client",
            cert_pem.as_bytes(),
            key_pem.as_bytes(),
        )
        .and_then(|t| t.build())
        .expect("the scraping client's TLS configuration")
}

/// A TLS client that verifies the kubelet's serving certificate against `ca_pem` (for the
/// address dialed: kubelet serving certificates carry the node's IPs).
fn kubelet_verifying(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    rktup_tls::ClientTls::verify_pem("the pod's ca.crt", ca_pem.as_bytes())
        .and_then(|t| t.build())
        .expect("the scraping client's TLS configuration")
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn prometheus_text_is_parsed() {
        let text = "# HELP x y\n# TYPE x counter\ncontainer_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"web-\\\"x\\\"\"} 2.5 1764896123456\nnode_memory_working_set_bytes 1.5e+09 1764896123000\n";
        let s = parse(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels["pod"], "web-\"x\"");
        assert_eq!(s[0].labels["container"], "app");
        assert_eq!(s[0].value, 2.5);
        assert_eq!(s[1].value, 1.5e9);
        assert_eq!(s[1].timestamp_ms, 1764896123000);
    }
}
