//! Aggregated APIs (issue 17 §3) with the real kubectl: APIService availability (`Local`,
//! `ServiceNotFound`, `EndpointsNotFound`, `MissingEndpoints`, `FailedDiscoveryCheck`,
//! `Passed`), requests proxied to a test aggregated API server that trusts only the front
//! proxy (client certificate from `requestheader-client-ca-file`, CN in
//! `requestheader-allowed-names`, read from `kube-system/extension-apiserver-authentication`)
//! and authorizes the `X-Remote-User`/`X-Remote-Group` it is told about with
//! SubjectAccessReviews; discovery (`/apis`, `/apis/metrics.k8s.io`, `kubectl api-resources`),
//! `kubectl top nodes|pods`, a user without RBAC refused by the backend, 503 once the backend
//! is down, and the group gone with its APIService.
//!
//! The test server (`metrics_apiserver` below) serves metrics.k8s.io/v1beta1 as metrics-server
//! does (APIResourceList, NodeMetrics and PodMetrics lists and gets). Its numbers are fixed
//! here: the stand-in nodes of this suite have no cgroups to read (the agent's
//! `/metrics/resource` is exercised with real nodes elsewhere).

mod common;

use base64::Engine;
use common::*;
use rktup_controlplane::pki::Credential;
use serde_json::Value;
use std::process::Output;
use std::time::Duration;

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A test aggregated API server for metrics.k8s.io/v1beta1.
mod metrics_apiserver {
    use super::Cluster;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
    use kube::api::{Api, ListParams, PostParams};
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    use serde_json::{json, Value};
    use std::sync::{Arc, Mutex};

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
    pub async fn start(c: &Cluster, server_name: &str, port: u16) -> Server {
        let client = c.admin().await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
        let cm = super::eventually(
            "the authentication ConfigMap",
            std::time::Duration::from_secs(20),
            || {
                let cms = cms.clone();
                async move {
                    cms.get_opt("extension-apiserver-authentication")
                        .await
                        .ok()
                        .flatten()
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
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(State {
            client,
            allowed,
            seen: seen.clone(),
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
            let items: Vec<Value> = list
                .iter()
                .filter(|n| name.is_none() || n.metadata.name.as_deref() == name)
                .map(|n| json!({
                    "metadata": {"name": n.metadata.name, "creationTimestamp": now(), "labels": n.metadata.labels},
                    "timestamp": now(), "window": "10s",
                    "usage": {"cpu": NODE_CPU, "memory": NODE_MEMORY},
                }))
                .collect();
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
            let items: Vec<Value> = list
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .filter(|p| name.is_none() || p.metadata.name.as_deref() == name)
                .map(|p| {
                    let containers: Vec<Value> = p.spec.as_ref().map(|s| s.containers.iter().map(|c| json!({"name": c.name, "usage": {"cpu": CONTAINER_CPU, "memory": CONTAINER_MEMORY}})).collect()).unwrap_or_default();
                    json!({
                        "metadata": {"name": p.metadata.name, "namespace": p.metadata.namespace, "creationTimestamp": now(), "labels": p.metadata.labels},
                        "timestamp": now(), "window": "10s", "containers": containers,
                    })
                })
                .collect();
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
    }
}

/// `.status.conditions[Available]` as "STATUS REASON: MESSAGE".
async fn availability(c: &Cluster, name: &str) -> String {
    let o = c.kubectl(&["get", "apiservice", name, "-o", "json"]).await;
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    v.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Available"))
        .map(|c| {
            format!(
                "{} {}: {}",
                c["status"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            )
        })
        .unwrap_or_default()
}

/// Waits until the APIService's condition starts with `want` ("False MissingEndpoints").
async fn wait_available(c: &Cluster, name: &str, want: &str) -> String {
    let mut last = String::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            last = availability(c, name).await;
            if last.starts_with(want) {
                return last.clone();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("APIService {name}: want {want:?}, last {last:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_apiservices_are_registered_and_available() {
    let c = start().await;
    for name in [
        "v1.",
        "v1.apps",
        "v1.authentication.k8s.io",
        "v1.apiregistration.k8s.io",
    ] {
        let got = wait_available(&c, name, "True Local").await;
        assert_eq!(got, "True Local: Local APIServices are always available");
    }
    let v: Value =
        serde_json::from_str(&c.ok_line("get apiservice v1.apps -o json").await).expect("json");
    assert_eq!(v["spec"]["groupPriorityMinimum"], 17800);
    assert_eq!(v["spec"]["versionPriority"], 15);
    assert_eq!(
        v["metadata"]["labels"]["kube-aggregator.kubernetes.io/automanaged"],
        "onstart"
    );
    assert!(v["spec"].get("service").is_none());
    // A CRD's group versions get local APIServices (upstream's crdRegistrationController),
    // removed with the CRD.
    c.apply_stdin(
        &["apply", "-f", "-"],
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.agg.example.com
spec:
  group: agg.example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
  - name: v1beta1
    served: false
    storage: false
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
",
    )
    .await;
    let got = wait_available(&c, "v1.agg.example.com", "True Local").await;
    assert_eq!(got, "True Local: Local APIServices are always available");
    let v: Value =
        serde_json::from_str(&c.ok_line("get apiservice v1.agg.example.com -o json").await)
            .expect("json");
    assert_eq!(v["spec"]["groupPriorityMinimum"], 1000);
    assert_eq!(v["spec"]["versionPriority"], 100);
    assert_eq!(
        v["metadata"]["labels"]["kube-aggregator.kubernetes.io/automanaged"],
        "true"
    );
    let o = c
        .kubectl(&["get", "apiservice", "v1beta1.agg.example.com"])
        .await;
    assert!(err(&o).contains("NotFound"), "not served: {}", err(&o));
    c.ok_line("delete crd widgets.agg.example.com").await;
    eventually(
        "the CRD's APIService to go",
        Duration::from_secs(30),
        || async {
            let o = c
                .kubectl(&["get", "apiservice", "v1.agg.example.com"])
                .await;
            err(&o).contains("NotFound").then_some(())
        },
    )
    .await;
    // The RBAC role aggregated servers are bound to, to read the ConfigMap.
    c.ok_line("get role extension-apiserver-authentication-reader -n kube-system")
        .await;
    c.handle.shutdown().await;
}

const APISERVICE: &str = "v1beta1.metrics.k8s.io";

fn apiservice_yaml(ca_pem: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: {APISERVICE}
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  caBundle: {b64}
  service:
    name: metrics-server
    namespace: kube-system
    port: 443
"
    )
}

fn slice_yaml(port: u16, ready: bool) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: metrics-server-manual
  namespace: kube-system
  labels:
    kubernetes.io/service-name: metrics-server
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: {ready}}}
ports:
- name: https
  port: {port}
  protocol: TCP
"
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aggregated_metrics_api_end_to_end() {
    let c = start().await;
    let _node = fake_node(&c, "agg-node-1", fake_kubelet().await).await;
    let backend = metrics_apiserver::start(&c, "metrics-server.kube-system.svc", 0).await;

    // Registered before its Service exists.
    c.apply_stdin(&["apply", "-f", "-"], &apiservice_yaml(&backend.ca_pem))
        .await;
    let got = wait_available(&c, APISERVICE, "False ServiceNotFound").await;
    assert_eq!(
        got,
        "False ServiceNotFound: service/metrics-server in \"kube-system\" is not present"
    );
    // Not available: 503 with upstream's text, the backend never called.
    let o = c
        .kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"])
        .await;
    assert!(!o.status.success());
    assert!(
        err(&o).contains("ServiceUnavailable") || err(&o).contains("service unavailable"),
        "{}",
        err(&o)
    );

    // A selector-less Service: its endpoints are the slice written below.
    c.apply_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1
kind: Service
metadata:
  name: metrics-server
  namespace: kube-system
spec:
  ports:
  - name: https
    port: 443
    targetPort: 4443
",
    )
    .await;
    let got = wait_available(&c, APISERVICE, "False EndpointsNotFound").await;
    assert_eq!(
        got,
        "False EndpointsNotFound: cannot find endpointslices for service/metrics-server in \"kube-system\""
    );
    let dead = free_port();
    // Created, then replaced (PUT): the slice's ports are an atomic list.
    c.apply_stdin(&["create", "-f", "-"], &slice_yaml(dead, false))
        .await;
    let got = wait_available(&c, APISERVICE, "False MissingEndpoints").await;
    assert_eq!(
        got,
        "False MissingEndpoints: endpointslices for service/metrics-server in \"kube-system\" have no addresses with port name \"https\""
    );
    // kubectl's columns (upstream's printer): the Service and `False (REASON)`.
    let table = c.ok_line(&format!("get apiservice {APISERVICE}")).await;
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(
        row[..4],
        [
            APISERVICE,
            "kube-system/metrics-server",
            "False",
            "(MissingEndpoints)"
        ],
        "{table}"
    );
    // Ready, but nothing listens there.
    c.apply_stdin(&["replace", "-f", "-"], &slice_yaml(dead, true))
        .await;
    let got = wait_available(&c, APISERVICE, "False FailedDiscoveryCheck").await;
    assert!(
        got.contains(&format!(
            "failing or missing response from https://127.0.0.1:{dead}/apis/metrics.k8s.io/v1beta1"
        )),
        "{got}"
    );
    // The backend.
    c.apply_stdin(&["replace", "-f", "-"], &slice_yaml(backend.port, true))
        .await;
    let got = wait_available(&c, APISERVICE, "True Passed").await;
    assert_eq!(got, "True Passed: all checks passed");
    {
        let seen = backend.seen.lock().expect("seen").clone();
        let check = seen
            .iter()
            .find(|s| s.path == "/apis/metrics.k8s.io/v1beta1")
            .expect("the discovery check reached the backend");
        assert_eq!(check.client_cn, "front-proxy-client");
        assert_eq!(check.user, "system:kube-aggregator");
        assert_eq!(check.groups, vec!["system:masters".to_string()]);
    }
    let table = c.ok_line(&format!("get apiservice {APISERVICE}")).await;
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().nth(2) == Some("True")),
        "{table}"
    );

    // Proxied as the caller, with the front proxy's certificate and headers only.
    let raw = c
        .ok_line("get --raw /apis/metrics.k8s.io/v1beta1/nodes")
        .await;
    let list: Value = serde_json::from_str(&raw).expect("json");
    assert_eq!(list["kind"], "NodeMetricsList");
    assert_eq!(list["items"][0]["metadata"]["name"], "agg-node-1");
    {
        let seen = backend.seen.lock().expect("seen").clone();
        let call = seen
            .iter()
            .rev()
            .find(|s| s.path == "/apis/metrics.k8s.io/v1beta1/nodes")
            .expect("proxied");
        assert_eq!(call.client_cn, "front-proxy-client");
        assert_eq!(call.user, "kubernetes-admin");
        assert_eq!(
            call.groups,
            vec![
                "system:masters".to_string(),
                "system:authenticated".to_string()
            ]
        );
        assert!(!call.credentials_leaked, "{call:?}");
    }
    // Impersonation: the backend is told about the impersonated user (who may not list).
    let o = c
        .kubectl(&[
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/nodes",
            "--as=bob",
        ])
        .await;
    assert!(!o.status.success());
    assert!(
        err(&o).contains("nodes.metrics.k8s.io is forbidden: User \"bob\" cannot list resource \"nodes\" in API group \"metrics.k8s.io\" at the cluster scope"),
        "{}",
        err(&o)
    );
    {
        let seen = backend.seen.lock().expect("seen").clone();
        let last = seen.last().expect("seen");
        assert_eq!(last.user, "bob");
        assert!(!last.credentials_leaked, "{last:?}");
    }

    // Discovery: the legacy group list, the group, and the aggregated form via kubectl.
    let apis: Value = serde_json::from_str(&c.ok_line("get --raw /apis").await).expect("json");
    let group = apis["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["name"] == "metrics.k8s.io"))
        .expect("metrics.k8s.io in /apis");
    assert_eq!(
        group["preferredVersion"]["groupVersion"],
        "metrics.k8s.io/v1beta1"
    );
    let g: Value =
        serde_json::from_str(&c.ok_line("get --raw /apis/metrics.k8s.io").await).expect("json");
    assert_eq!(g["kind"], "APIGroup");
    let resources = c.ok_line("api-resources --api-group=metrics.k8s.io").await;
    let rows: Vec<Vec<&str>> = resources
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["nodes", "metrics.k8s.io/v1beta1", "false", "NodeMetrics"],
            vec!["pods", "metrics.k8s.io/v1beta1", "true", "PodMetrics"],
        ],
        "{resources}"
    );

    // kubectl top, from the backend's numbers and the node's allocatable (4 CPUs, 8Gi).
    let top = c.ok_line("top nodes").await;
    let row: Vec<&str> = top
        .lines()
        .find(|l| l.starts_with("agg-node-1"))
        .expect("node row")
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        vec!["agg-node-1", "250m", "6%", "1024Mi", "12%"],
        "{top}"
    );
    c.ok_line("create namespace topns").await;
    c.ok_line("run web -n topns --image=busybox").await;
    let top = eventually("kubectl top pods", Duration::from_secs(30), || async {
        let o = c.kubectl(&["top", "pods", "-n", "topns"]).await;
        let text = out(&o);
        text.contains("web").then_some(text)
    })
    .await;
    let row: Vec<&str> = top
        .lines()
        .find(|l| l.starts_with("web"))
        .expect("pod row")
        .split_whitespace()
        .collect();
    assert_eq!(row, vec!["web", "5m", "10Mi"], "{top}");

    // A user with no grant is refused by the backend (its SubjectAccessReview), then allowed
    // once RBAC lets them.
    let alice = Credential::Cert(
        c.handle
            .issue_client_cert("alice", &["devs"])
            .expect("cert"),
    );
    let o = c.kubectl_as("alice", &alice, &["top", "nodes"]).await;
    assert!(!o.status.success());
    assert!(
        err(&o).contains(
            "User \"alice\" cannot list resource \"nodes\" in API group \"metrics.k8s.io\""
        ),
        "{}",
        err(&o)
    );
    c.ok_line(
        "create clusterrole metrics-reader --verb=get,list --resource=nodes.metrics.k8s.io,nodes",
    )
    .await;
    c.ok_line("create clusterrolebinding alice-metrics --clusterrole=metrics-reader --user=alice")
        .await;
    let o = c.kubectl_as("alice", &alice, &["top", "nodes"]).await;
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("agg-node-1"), "{}", out(&o));
    {
        let seen = backend.seen.lock().expect("seen").clone();
        let last = seen.last().expect("seen");
        assert_eq!(last.user, "alice");
        assert_eq!(
            last.groups,
            vec!["devs".to_string(), "system:authenticated".to_string()]
        );
    }
    // Callers that fail authentication never reach the backend.
    let before = backend.seen.lock().expect("seen").len();
    let o = c
        .kubectl_as(
            "nobody",
            &Credential::Token("not-a-token".into()),
            &["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"],
        )
        .await;
    assert!(err(&o).contains("Unauthorized"), "{}", err(&o));
    assert_eq!(backend.seen.lock().expect("seen").len(), before);

    // The backend goes away: the next check marks the APIService unavailable and calls answer
    // 503.
    backend.stop();
    let got = wait_available(&c, APISERVICE, "False FailedDiscoveryCheck").await;
    assert!(got.contains("failing or missing response"), "{got}");
    let o = c
        .kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"])
        .await;
    assert!(!o.status.success());
    assert!(
        err(&o).contains("the server is currently unable to handle the request")
            || err(&o).contains("service unavailable"),
        "{}",
        err(&o)
    );

    // Deleted: the group leaves discovery and its paths are the API server's again (404).
    c.ok_line(&format!("delete apiservice {APISERVICE}")).await;
    let apis = c.ok_line("get --raw /apis").await;
    assert!(!apis.contains("metrics.k8s.io"), "{apis}");
    let o = c
        .kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"])
        .await;
    assert!(err(&o).contains("NotFound"), "{}", err(&o));
    c.handle.shutdown().await;
}
