//! kube-aggregator's part of the API server (apiregistration.k8s.io/v1): requests under
//! `/apis/GROUP/VERSION` of an APIService with `spec.service` are proxied to that Service's
//! backend, and its discovery is merged into `/apis` (legacy and aggregated).
//!
//! As upstream:
//! - The aggregator authorizes nothing: the caller only has to be authenticated; the backend
//!   authorizes (SubjectAccessReview) the user it is told about.
//! - Identity towards the backend (the front proxy, `requestheader-*`): the client certificate
//!   `front-proxy-client` signed by the front-proxy CA, `X-Remote-User`, one `X-Remote-Group`
//!   per group, and no `Authorization` or `Impersonate-*` header (consumed here). Our users carry
//!   no uid and no extra, so no `X-Remote-Uid` / `X-Remote-Extra-*` is sent.
//! - The backend's serving certificate is verified against `spec.caBundle` for the name
//!   `<service>.<namespace>.svc`, unless `spec.insecureSkipTLSVerify`.
//! - An APIService whose `Available` condition is not True answers 503 `service unavailable`
//!   (text, as upstream's `http.Error`); a backend that cannot be reached also answers 503.
//! - The backend is dialled at a ready endpoint of the Service (EndpointSlices), as
//!   kube-apiserver's `--enable-aggregator-routing=true` does: the control plane runs on the
//!   host, outside the nodes' network namespaces where the service proxy's ClusterIP rules live.
//!   [`resolve_service`] is shared with the admission webhooks, which need the same.
//!
//! The availability controller (`controllers/apiservice.rs`) calls [`Aggregator::check`], which
//! refreshes the discovery cache this module merges from.

use super::auth::User;
use super::objects::{meta_str, Core};
use super::response::{full, Body};
use crate::controllers::rd;
use crate::pki::{CertPair, Pki, FRONT_PROXY_CLIENT_USER};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Why a Service could not be turned into an address to dial (upstream's resolver errors).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("service \"{name}\" not found")]
    ServiceNotFound { name: String },
    #[error("no service port {port} found for service \"{name}\"")]
    NoPort { name: String, port: i32 },
    #[error("no endpoints available for service \"{name}\"")]
    NoEndpoints { name: String },
    #[error("service \"{name}\" is of type ExternalName, which cannot be proxied to")]
    ExternalName { name: String },
}

/// A ready endpoint address of Service `ns/name` for its port `port` (the Service's port, not
/// the target port): the EndpointSlices labelled `kubernetes.io/service-name=name` are read for
/// the port of the same name, and one ready endpoint (`conditions.ready` true or unset) is
/// picked at random, as kube-apiserver's endpoint routing does.
pub(crate) fn resolve_service(
    core: &Core,
    ns: &str,
    name: &str,
    port: i32,
) -> Result<SocketAddr, ResolveError> {
    let svc = core
        .get_stored(rd("", "services"), Some(ns), name)
        .ok_or_else(|| ResolveError::ServiceNotFound { name: name.into() })?;
    let svc = &svc.object;
    if svc.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName") {
        return Err(ResolveError::ExternalName { name: name.into() });
    }
    let port_name = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["port"].as_i64() == Some(i64::from(port)))
        })
        .map(|p| p["name"].as_str().unwrap_or("").to_string())
        .ok_or_else(|| ResolveError::NoPort {
            name: name.into(),
            port,
        })?;
    let mut candidates: Vec<SocketAddr> = Vec::new();
    for slice in crate::controllers::list(core, "discovery.k8s.io", "endpointslices", Some(ns)) {
        if slice.pointer("/metadata/labels/kubernetes.io~1service-name") != Some(&json!(name)) {
            continue;
        }
        let Some(target) = slice
            .get("ports")
            .and_then(Value::as_array)
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p["name"].as_str().unwrap_or("") == port_name)
            })
            .and_then(|p| p["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in slice
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if ep.pointer("/conditions/ready") == Some(&Value::Bool(false)) {
                continue;
            }
            let addrs = ep.get("addresses").and_then(Value::as_array);
            if let Some(ip) = addrs
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                .and_then(|a| a.parse::<IpAddr>().ok())
            {
                candidates.push(SocketAddr::new(ip, target));
            }
        }
    }
    if candidates.is_empty() {
        return Err(ResolveError::NoEndpoints { name: name.into() });
    }
    Ok(candidates[rand::random_range(0..candidates.len())])
}

/// What an APIService's `spec.service` points at.
#[derive(Debug, Clone)]
struct ServiceRef {
    namespace: String,
    name: String,
    port: i32,
}

fn service_ref(apiservice: &Value) -> Option<ServiceRef> {
    let s = apiservice
        .pointer("/spec/service")
        .filter(|s| s.is_object())?;
    Some(ServiceRef {
        namespace: s["namespace"].as_str().unwrap_or("").to_string(),
        name: s["name"].as_str().unwrap_or("").to_string(),
        port: s["port"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(443),
    })
}

/// Whether the APIService's `Available` condition is True.
pub(crate) fn is_available(apiservice: &Value) -> bool {
    apiservice
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Available" && c["status"] == "True")
        })
}

/// The aggregator's state: its front-proxy identity and the discovery documents of the
/// aggregated group versions (by APIService name), as last fetched by the availability check.
#[derive(Default)]
pub struct Aggregator {
    front_proxy_client: Option<CertPair>,
    /// The data of `kube-system/extension-apiserver-authentication`.
    authentication: Option<Value>,
    discovery: RwLock<HashMap<String, Value>>,
}

/// Headers not passed on to the backend: hop-by-hop ones, the caller's credentials (consumed by
/// authentication and impersonation here) and any front-proxy header the caller sent itself.
fn dropped_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization"
            | "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
    ) || n.starts_with("impersonate-")
        || n.starts_with("x-remote-")
}

impl std::fmt::Debug for Aggregator {
    // No key material in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregator")
            .field("front_proxy_client", &self.front_proxy_client.is_some())
            .finish_non_exhaustive()
    }
}

/// upstream's `proxyError`: `http.Error`'s plain text.
fn text_error(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = full(
        status,
        "text/plain; charset=utf-8",
        format!("{message}\n").into_bytes(),
    );
    r.headers_mut().insert(
        "x-content-type-options",
        http::HeaderValue::from_static("nosniff"),
    );
    r
}

impl Aggregator {
    /// An aggregator presenting the PKI's `front-proxy-client` certificate to backends.
    pub fn new(pki: &Pki) -> Aggregator {
        let list = |v: &str| json!([v]).to_string();
        Aggregator {
            front_proxy_client: Some(pki.front_proxy_client.clone()),
            authentication: Some(json!({
                "client-ca-file": pki.ca.cert_pem,
                "requestheader-allowed-names": list(FRONT_PROXY_CLIENT_USER),
                "requestheader-client-ca-file": pki.front_proxy_ca.cert_pem,
                "requestheader-extra-headers-prefix": list("X-Remote-Extra-"),
                "requestheader-group-headers": list("X-Remote-Group"),
                "requestheader-username-headers": list("X-Remote-User"),
            })),
            discovery: RwLock::new(HashMap::new()),
        }
    }

    /// What `kube-system/extension-apiserver-authentication` holds (upstream's
    /// ClusterAuthenticationTrustController): the client CA that verifies users' certificates
    /// and the front proxy's `requestheader-*` settings, from which aggregated API servers learn
    /// to trust `X-Remote-*` headers only from `front-proxy-client`.
    pub(crate) fn authentication_data(&self) -> Option<Value> {
        self.authentication.clone()
    }

    /// The APIService serving a request path through a backend: `/apis/GROUP/VERSION[/...]` of
    /// an APIService named `VERSION.GROUP` with `spec.service`. Local ones (no service) are
    /// served by this server.
    pub(crate) fn target(&self, core: &Core, segs: &[&str]) -> Option<Value> {
        let ["apis", group, version, ..] = segs else {
            return None;
        };
        let stored = core.get_stored(
            rd("apiregistration.k8s.io", "apiservices"),
            None,
            &format!("{version}.{group}"),
        )?;
        service_ref(&stored.object).map(|_| (*stored.object).clone())
    }

    /// TLS towards the backend of `apiservice`: the front-proxy client certificate, and the
    /// serving certificate checked against `spec.caBundle` (the system's roots when it is
    /// empty, as client-go's) — or not at all when `spec.insecureSkipTLSVerify`, or when
    /// `availability` (the availability check, as upstream's).
    fn tls(
        &self,
        apiservice: &Value,
        availability: bool,
    ) -> Result<Arc<rustls::ClientConfig>, String> {
        use rktup_tls::{ClientTls, Insecure};
        let skip = apiservice
            .pointer("/spec/insecureSkipTLSVerify")
            .and_then(Value::as_bool)
            == Some(true);
        let b64 = apiservice
            .pointer("/spec/caBundle")
            .and_then(Value::as_str)
            .unwrap_or("");
        let tls = if availability {
            ClientTls::insecure(Insecure::ApiServiceAvailability)
        } else if skip {
            ClientTls::insecure(Insecure::ApiServiceSkipVerify)
        } else if b64.is_empty() {
            ClientTls::verify_system_roots().map_err(|e| e.to_string())?
        } else {
            use base64::Engine;
            let pem = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("spec.caBundle: {e}"))?;
            ClientTls::verify_pem("spec.caBundle", &pem).map_err(|e| e.to_string())?
        };
        let tls = match &self.front_proxy_client {
            Some(pair) => tls
                .with_client_pem(
                    "the front-proxy-client certificate",
                    pair.cert_pem.as_bytes(),
                    pair.key_pem.as_bytes(),
                )
                .map_err(|e| e.to_string())?,
            None => tls,
        };
        tls.build().map_err(|e| e.to_string())
    }

    /// Proxies `req` (any method; the body and the answer stream, so watches work) by `user`
    /// to the backend of `apiservice`.
    pub(crate) async fn proxy(
        &self,
        core: &Core,
        apiservice: &Value,
        user: &User,
        req: Request<Incoming>,
    ) -> Response<Body> {
        if !is_available(apiservice) {
            return text_error(StatusCode::SERVICE_UNAVAILABLE, "service unavailable");
        }
        let Some(svc) = service_ref(apiservice) else {
            return text_error(StatusCode::NOT_FOUND, "");
        };
        let addr = match resolve_service(core, &svc.namespace, &svc.name, svc.port) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("error resolving {}/{}: {e}", svc.namespace, svc.name);
                return text_error(StatusCode::SERVICE_UNAVAILABLE, "service unavailable");
            }
        };
        let tls = match self.tls(apiservice, false) {
            Ok(t) => t,
            Err(e) => return text_error(StatusCode::SERVICE_UNAVAILABLE, &e),
        };
        let (parts, body) = req.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let mut out = Request::builder()
            .method(parts.method.clone())
            .uri(path_and_query.as_str());
        for (name, value) in parts.headers.iter() {
            if !dropped_header(name.as_str()) {
                out = out.header(name, value);
            }
        }
        out = out.header(http::header::HOST, addr.to_string());
        out = front_proxy_headers(out, &user.name, &user.reported_groups());
        let out = match out.body(body) {
            Ok(r) => r,
            Err(e) => return text_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        let server_name = format!("{}.{}.svc", svc.name, svc.namespace);
        match send(&tls, addr, &server_name, out).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let mut resp =
                    Response::from_parts(parts, body.map_err(std::io::Error::other).boxed());
                for h in ["connection", "keep-alive", "transfer-encoding"] {
                    resp.headers_mut().remove(h);
                }
                resp
            }
            Err(e) => {
                tracing::warn!("error while proxying to {server_name} ({addr}): {e}");
                text_error(StatusCode::SERVICE_UNAVAILABLE, &e)
            }
        }
    }

    /// The availability controller's discovery check of a remote APIService: `GET
    /// /apis/GROUP/VERSION` on a ready endpoint, as `system:kube-aggregator` in
    /// `system:masters`, without verifying the serving certificate, five seconds at most (as
    /// upstream's). A 2xx answer caches the document for discovery; the error is the condition's
    /// message.
    pub(crate) async fn check(&self, core: &Core, apiservice: &Value) -> Result<(), String> {
        let svc = service_ref(apiservice).ok_or("not a remote APIService")?;
        let group = apiservice
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or("");
        let version = apiservice
            .pointer("/spec/version")
            .and_then(Value::as_str)
            .unwrap_or("");
        let path = if meta_str(apiservice, "name") == "v1." {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let addr = resolve_service(core, &svc.namespace, &svc.name, svc.port)
            .map_err(|e| e.to_string())?;
        let url = format!("https://{addr}{path}");
        let tls = self.tls(apiservice, true)?;
        let req = front_proxy_headers(
            Request::get(path.as_str()).header(http::header::HOST, addr.to_string()),
            "system:kube-aggregator",
            &["system:masters".to_string()],
        )
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
        let server_name = format!("{}.{}.svc", svc.name, svc.namespace);
        let exchange = async {
            let resp = send(&tls, addr, &server_name, req).await?;
            let status = resp.status();
            if !status.is_success() {
                return Err(format!("bad status from {url}: {}", status.as_u16()));
            }
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string())
        };
        let doc = match tokio::time::timeout(Duration::from_secs(5), exchange).await {
            Err(_) => return Err(format!("timed out waiting for {url}")),
            Ok(Err(e)) => return Err(format!("failing or missing response from {url}: {e}")),
            Ok(Ok(doc)) => doc,
        };
        if let Ok(mut cache) = self.discovery.write() {
            cache.insert(meta_str(apiservice, "name").to_string(), doc);
        }
        Ok(())
    }

    /// Forgets the discovery documents of APIServices that no longer exist or are local.
    pub(crate) fn retain_discovery(&self, remote: &[String]) {
        if let Ok(mut cache) = self.discovery.write() {
            cache.retain(|k, _| remote.contains(k));
        }
    }

    /// The remote APIServices, highest group priority first (then by name), as upstream
    /// orders aggregated groups.
    fn remote_apiservices(core: &Core) -> Vec<Arc<Value>> {
        let mut all: Vec<Arc<Value>> =
            crate::controllers::list(core, "apiregistration.k8s.io", "apiservices", None)
                .into_iter()
                .filter(|a| service_ref(a).is_some())
                .collect();
        all.sort_by(|a, b| {
            let prio = |o: &Value| {
                o.pointer("/spec/groupPriorityMinimum")
                    .and_then(Value::as_i64)
            };
            prio(b)
                .cmp(&prio(a))
                .then_with(|| meta_str(a, "name").cmp(meta_str(b, "name")))
        });
        all
    }

    /// Remote groups not already in `served` with their versions, ordered by
    /// `versionPriority` (highest first).
    fn remote_groups(core: &Core, served: &[String]) -> Vec<(String, Vec<Arc<Value>>)> {
        let mut groups: Vec<(String, Vec<Arc<Value>>)> = Vec::new();
        for a in Self::remote_apiservices(core) {
            let g = a
                .pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if g.is_empty() || served.contains(&g) {
                continue;
            }
            match groups.iter_mut().find(|(name, _)| *name == g) {
                Some((_, vs)) => vs.push(a),
                None => groups.push((g, vec![a])),
            }
        }
        for (_, vs) in groups.iter_mut() {
            vs.sort_by_key(|a| {
                std::cmp::Reverse(
                    a.pointer("/spec/versionPriority")
                        .and_then(Value::as_i64)
                        .unwrap_or(0),
                )
            });
        }
        groups
    }

    fn group_doc(group: &str, versions: &[Arc<Value>]) -> Value {
        let gvs: Vec<Value> = versions
            .iter()
            .map(|a| {
                let v = a
                    .pointer("/spec/version")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                json!({"groupVersion": format!("{group}/{v}"), "version": v})
            })
            .collect();
        json!({"name": group, "versions": gvs, "preferredVersion": gvs.first().cloned().unwrap_or(json!({}))})
    }

    /// Adds the aggregated groups to `/apis`' `APIGroupList` (every remote APIService's group,
    /// available or not, as upstream lists them).
    pub(crate) fn merge_group_list(&self, core: &Core, list: &mut Value) {
        let served: Vec<String> = group_names(list.get("groups"), "name");
        let Some(groups) = list.get_mut("groups").and_then(Value::as_array_mut) else {
            return;
        };
        for (g, versions) in Self::remote_groups(core, &served) {
            groups.push(Self::group_doc(&g, &versions));
        }
    }

    /// `/apis/GROUP` of an aggregated group.
    pub(crate) fn api_group(&self, core: &Core, group: &str) -> Option<Value> {
        let (g, versions) = Self::remote_groups(core, &[])
            .into_iter()
            .find(|(g, _)| g == group)?;
        let mut doc = Self::group_doc(&g, &versions);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        Some(doc)
    }

    /// Adds the aggregated groups to `/apis`' `APIGroupDiscoveryList`: each version whose
    /// discovery document was fetched, its resources converted from the backend's
    /// `APIResourceList`; `freshness` Stale once the APIService is no longer available.
    pub(crate) fn merge_aggregated(&self, core: &Core, list: &mut Value) {
        let served: Vec<String> = list
            .get("items")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.pointer("/metadata/name").and_then(Value::as_str))
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let Ok(cache) = self.discovery.read() else {
            return;
        };
        let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) else {
            return;
        };
        for (g, versions) in Self::remote_groups(core, &served) {
            let vs: Vec<Value> = versions
                .iter()
                .filter_map(|a| {
                    let doc = cache.get(meta_str(a, "name"))?;
                    let v = a
                        .pointer("/spec/version")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    Some(json!({
                        "version": v,
                        "resources": aggregated_resources(&g, v, doc),
                        "freshness": if is_available(a) { "Current" } else { "Stale" },
                    }))
                })
                .collect();
            if !vs.is_empty() {
                items.push(
                    json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": vs}),
                );
            }
        }
    }
}

fn group_names(groups: Option<&Value>, key: &str) -> Vec<String> {
    groups
        .and_then(Value::as_array)
        .map(|gs| {
            gs.iter()
                .filter_map(|g| g[key].as_str())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// A legacy `APIResourceList`'s resources in the aggregated form (`APIResourceDiscovery`), the
/// `plural/sub` entries folded into their parent's `subresources`.
fn aggregated_resources(group: &str, version: &str, doc: &Value) -> Vec<Value> {
    let list = doc
        .get("resources")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let kind_of = |r: &Value| {
        json!({
            "group": r["group"].as_str().unwrap_or(group),
            "version": r["version"].as_str().unwrap_or(version),
            "kind": r["kind"],
        })
    };
    let mut out: Vec<Value> = Vec::new();
    for r in list
        .iter()
        .filter(|r| !r["name"].as_str().unwrap_or("").contains('/'))
    {
        let mut e = json!({
            "resource": r["name"],
            "responseKind": kind_of(r),
            "scope": if r["namespaced"].as_bool() == Some(true) { "Namespaced" } else { "Cluster" },
            "singularResource": r["singularName"],
            "verbs": r.get("verbs").cloned().unwrap_or(json!([])),
        });
        for k in ["shortNames", "categories"] {
            if let Some(v) = r
                .get(k)
                .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
            {
                e[k] = v.clone();
            }
        }
        let name = r["name"].as_str().unwrap_or("");
        let subs: Vec<Value> = list
            .iter()
            .filter_map(|s| {
                let (parent, sub) = s["name"].as_str()?.split_once('/')?;
                (parent == name).then(|| {
                    json!({"subresource": sub, "responseKind": kind_of(s), "verbs": s.get("verbs").cloned().unwrap_or(json!([]))})
                })
            })
            .collect();
        if !subs.is_empty() {
            e["subresources"] = json!(subs);
        }
        out.push(e);
    }
    out
}

/// upstream's `SetAuthProxyHeaders`: the user and one `X-Remote-Group` per group.
fn front_proxy_headers(
    mut b: http::request::Builder,
    user: &str,
    groups: &[String],
) -> http::request::Builder {
    b = b.header("X-Remote-User", user);
    for g in groups {
        b = b.header("X-Remote-Group", g.as_str());
    }
    b
}

/// Sends `req` over a new TLS connection to `addr`, verifying the server as `server_name`.
async fn send<B>(
    tls: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    server_name: &str,
    req: Request<B>,
) -> Result<Response<Incoming>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let url = format!("https://{addr}{}", req.uri());
    let method = method_word(req.method());
    let wrap = |e: String| format!("{method} \"{url}\": {e}");
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| wrap("dial tcp: i/o timeout".into()))?
    .map_err(|e| wrap(format!("dial tcp {addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| wrap(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| wrap(format!("tls: {e}")))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| wrap(e.to_string()))?;
    tokio::spawn(conn);
    sender
        .send_request(req)
        .await
        .map_err(|e| wrap(e.to_string()))
}

/// Go's `http.Client` error prefix (`Get "https://…": …`).
fn method_word(m: &http::Method) -> String {
    let s = m.as_str().to_ascii_lowercase();
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_resources_become_aggregated_with_subresources() {
        let doc = json!({"kind": "APIResourceList", "groupVersion": "metrics.k8s.io/v1beta1", "resources": [
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"], "shortNames": []},
            {"name": "pods/status", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get"]},
        ]});
        let rs = aggregated_resources("metrics.k8s.io", "v1beta1", &doc);
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0]["resource"], "nodes");
        assert_eq!(rs[0]["scope"], "Cluster");
        assert_eq!(
            rs[0]["responseKind"],
            json!({"group": "metrics.k8s.io", "version": "v1beta1", "kind": "NodeMetrics"})
        );
        assert_eq!(rs[1]["scope"], "Namespaced");
        assert!(
            rs[1].get("shortNames").is_none(),
            "empty lists are left out"
        );
        assert_eq!(rs[1]["subresources"][0]["subresource"], "status");
    }

    #[test]
    fn credentials_and_front_proxy_headers_are_not_passed_on() {
        for h in [
            "Authorization",
            "Impersonate-User",
            "Impersonate-Extra-scopes",
            "X-Remote-User",
            "X-Remote-Group",
            "X-Remote-Extra-foo",
            "Connection",
            "Host",
        ] {
            assert!(dropped_header(h), "{h}");
        }
        for h in ["Accept", "Content-Type", "User-Agent", "Audit-ID"] {
            assert!(!dropped_header(h), "{h}");
        }
        assert_eq!(method_word(&http::Method::GET), "Get");
    }
}
