//! Calling a webhook: where it is (`clientConfig.url`, or `clientConfig.service` resolved to a
//! ready endpoint through its EndpointSlices), HTTPS verified against `caBundle` with the
//! server name upstream uses (`<svc>.<ns>.svc` for a service), a POST bounded by
//! `timeoutSeconds`, and failures worded as Go's HTTP client words them, since they reach the
//! user inside `failed calling webhook "x": failed to call webhook: Post "…": …`.
//!
//! The object layer is synchronous, so calls run on a small runtime of their own and the
//! writer waits for them (on a Tokio worker inside `block_in_place`, so the server's other
//! tasks move on meanwhile).

use crate::api::objects::Core;
use crate::registry;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::ServerName;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Where one webhook is reached.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The URL as the error messages show it (with `?timeout=Ns`, as client-go sends it).
    pub url: String,
    /// Host (name or address) and port to dial.
    pub dial_host: String,
    pub dial_port: u16,
    /// TLS server name: the URL's host, or `<svc>.<ns>.svc`.
    pub server_name: String,
    /// `Host` header value.
    pub authority: String,
    pub path_and_query: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub timeout: Duration,
}

/// The webhook's `timeoutSeconds` (default 10, at most 30).
pub(crate) fn timeout_of(hook: &Value) -> Duration {
    let secs = hook
        .get("timeoutSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(10)
        .clamp(1, 30);
    Duration::from_secs(secs)
}

/// Resolves a webhook's `clientConfig`. The error is the part after `failed to call webhook: `.
pub(crate) fn target(core: &Core, hook: &Value) -> Result<Target, String> {
    let cc = hook.get("clientConfig").cloned().unwrap_or(Value::Null);
    let timeout = timeout_of(hook);
    let query = format!("timeout={}s", timeout.as_secs());
    let tls = tls_config(cc.get("caBundle").and_then(Value::as_str).unwrap_or(""))?;
    if let Some(url) = cc.get("url").and_then(Value::as_str) {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        let host = uri
            .host()
            .unwrap_or("")
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let path = match uri.path() {
            "" => "/",
            p => p,
        };
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        return Ok(Target {
            url: format!("https://{authority}{path}?{query}"),
            dial_host: host.clone(),
            dial_port: port,
            server_name: host,
            authority,
            path_and_query: format!("{path}?{query}"),
            tls,
            timeout,
        });
    }
    let svc = cc.get("service").cloned().unwrap_or(Value::Null);
    let s = |f: &str| svc.get(f).and_then(Value::as_str).unwrap_or("").to_string();
    let (ns, name) = (s("namespace"), s("name"));
    let port = svc.get("port").and_then(Value::as_u64).unwrap_or(443) as u16;
    let path = match s("path") {
        p if p.is_empty() => "/".to_string(),
        p => p,
    };
    let host = format!("{name}.{ns}.svc");
    let authority = format!("{host}:{port}");
    let url = format!("https://{authority}{path}?{query}");
    let (dial_host, dial_port) =
        resolve_service(core, &ns, &name, port).map_err(|e| format!("Post {url:?}: {e}"))?;
    Ok(Target {
        url,
        dial_host,
        dial_port,
        server_name: host,
        authority,
        path_and_query: format!("{path}?{query}"),
        tls,
        timeout,
    })
}

/// A Service's port to a ready endpoint, as kube-apiserver's endpoint resolver
/// (`--enable-aggregator-routing`) does — the aggregator's resolver, shared. Upstream's default
/// dials the ClusterIP; here the control plane runs on the host, where ClusterIPs are not routed
/// (each node's service proxy translates them inside its own network namespace), so the endpoint
/// is dialed. An ExternalName Service is dialed at its name (webhooks allow it; the aggregator
/// does not).
fn resolve_service(core: &Core, ns: &str, name: &str, port: u16) -> Result<(String, u16), String> {
    use crate::api::aggregator::{resolve_service, ResolveError};
    match resolve_service(core, ns, name, i32::from(port)) {
        Ok(addr) => Ok((addr.ip().to_string(), addr.port())),
        Err(ResolveError::ExternalName { .. }) => {
            let svc_rd = registry::find("", "v1", "services").ok_or("services are not served")?;
            let ext = core
                .get_stored(svc_rd, Some(ns), name)
                .and_then(|s| {
                    s.object
                        .pointer("/spec/externalName")
                        .and_then(Value::as_str)
                        .map(String::from)
                })
                .unwrap_or_default();
            Ok((ext, port))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// TLS configs by CA bundle: building one parses the bundle, so they are kept.
fn tls_config(ca_b64: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<rustls::ClientConfig>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(ca_b64) {
        return Ok(c.clone());
    }
    let tls = if ca_b64.is_empty() {
        // No caBundle: the system's trust roots, as Go's TLS client would use.
        rktup_tls::ClientTls::verify_system_roots()
    } else {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(ca_b64.trim())
            .map_err(|e| format!("invalid caBundle: {e}"))?;
        rktup_tls::ClientTls::verify_pem("caBundle", &pem)
    };
    let cfg = tls
        .and_then(rktup_tls::ClientTls::build)
        .map_err(|e| e.to_string())?;
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() > 256 {
        cache.clear();
    }
    cache.insert(ca_b64.to_string(), cfg.clone());
    Ok(cfg)
}

/// Go's wording for a failed dial.
fn dial_error(addr: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            format!("dial tcp {addr}: connect: connection refused")
        }
        std::io::ErrorKind::TimedOut => format!("dial tcp {addr}: i/o timeout"),
        _ => {
            let msg = e.to_string();
            let msg = msg
                .split(" (os error")
                .next()
                .unwrap_or(&msg)
                .to_lowercase();
            format!("dial tcp {addr}: connect: {msg}")
        }
    }
}

/// Go's wording for a failed handshake.
fn tls_error(e: &std::io::Error) -> String {
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .cloned();
    match inner {
        Some(rustls::Error::InvalidCertificate(c)) => {
            let why = match c {
                rustls::CertificateError::UnknownIssuer => {
                    "x509: certificate signed by unknown authority".to_string()
                }
                rustls::CertificateError::Expired => {
                    "x509: certificate has expired or is not yet valid".to_string()
                }
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => {
                    "x509: certificate is not valid for the requested name".to_string()
                }
                other => format!("x509: {other:?}"),
            };
            format!("tls: failed to verify certificate: {why}")
        }
        Some(other) => format!("remote error: tls: {other}"),
        None => e.to_string(),
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Idle keep-alive connections by (address, port, server name, TLS config), as Go's
/// transport keeps them: a webhook called per write would otherwise pay a TCP and TLS
/// handshake each time.
fn idle() -> &'static Mutex<HashMap<String, Vec<Sender>>> {
    static IDLE: OnceLock<Mutex<HashMap<String, Vec<Sender>>>> = OnceLock::new();
    IDLE.get_or_init(Default::default)
}

fn pool_key(t: &Target) -> String {
    format!(
        "{}|{}|{}|{:p}",
        t.dial_host,
        t.dial_port,
        t.server_name,
        Arc::as_ptr(&t.tls)
    )
}

/// An idle connection that is still open, if any.
fn take_idle(key: &str) -> Option<Sender> {
    let mut idle = idle().lock().unwrap_or_else(|e| e.into_inner());
    let list = idle.get_mut(key)?;
    while let Some(s) = list.pop() {
        if !s.is_closed() && s.is_ready() {
            return Some(s);
        }
    }
    None
}

fn put_idle(key: String, s: Sender) {
    let mut idle = idle().lock().unwrap_or_else(|e| e.into_inner());
    let list = idle.entry(key).or_default();
    // A few per webhook: validating webhooks are called in parallel.
    if list.len() < 8 {
        list.push(s);
    }
}

/// A new connection: TCP, TLS against the CA bundle for the server name, HTTP/1.1.
async fn connect(t: &Target) -> Result<Sender, String> {
    let addr = if t.dial_host.contains(':') {
        format!("[{}]:{}", t.dial_host, t.dial_port)
    } else {
        format!("{}:{}", t.dial_host, t.dial_port)
    };
    let tcp = tokio::net::TcpStream::connect((t.dial_host.as_str(), t.dial_port))
        .await
        .map_err(|e| dial_error(&addr, &e))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(t.server_name.clone()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(t.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| tls_error(&e))?;
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

async fn exchange(
    t: &Target,
    mut send: Sender,
    body: Bytes,
) -> Result<(http::StatusCode, Bytes, Sender), (String, bool)> {
    let req = http::Request::post(t.path_and_query.as_str())
        .header(http::header::HOST, t.authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, */*")
        .header(http::header::USER_AGENT, "kube-apiserver-admission")
        .body(Full::new(body))
        .map_err(|e| (e.to_string(), false))?;
    // `true`: the request never left (a reused connection the server had closed).
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| (e.to_string(), e.is_canceled() || e.is_closed()))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| (e.to_string(), false))?
        .to_bytes();
    Ok((status, bytes, send))
}

/// One POST of `body` to the target, on a kept-alive connection when there is one; the
/// answer's body, or the error text (after `failed to call webhook: `).
pub(crate) async fn post(t: Target, body: Bytes) -> Result<Bytes, String> {
    let url = t.url.clone();
    let key = pool_key(&t);
    let call = async {
        if let Some(send) = take_idle(&key) {
            match exchange(&t, send, body.clone()).await {
                Ok(done) => return Ok(done),
                // Closed under us before the request went out: a fresh connection, once.
                Err((_, true)) => {}
                Err((e, false)) => return Err(e),
            }
        }
        let send = connect(&t).await?;
        exchange(&t, send, body).await.map_err(|(e, _)| e)
    };
    match tokio::time::timeout(t.timeout, call).await {
        Err(_) => Err(format!("Post {url:?}: context deadline exceeded")),
        Ok(Err(e)) => Err(format!("Post {url:?}: {e}")),
        Ok(Ok((status, bytes, send))) if status.is_success() => {
            put_idle(key, send);
            Ok(bytes)
        }
        // client-go's words for a non-2xx answer that is not a Status.
        Ok(Ok((status, bytes, _))) => Err(match status.as_u16() {
            404 => "the server could not find the requested resource".to_string(),
            code => {
                let text = String::from_utf8_lossy(&bytes);
                let text = text.trim();
                if code >= 500 {
                    format!(
                        "an error on the server ({text:?}) has prevented the request from succeeding"
                    )
                } else {
                    format!("the server rejected our request for an unknown reason ({text:?})")
                }
            }
        }),
    }
}

/// The runtime webhook calls run on.
fn runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("admission-webhook")
            .enable_all()
            .build()
            .ok()
    })
    .as_ref()
}

/// Runs `f` on the webhook runtime and waits for it from synchronous code.
pub(crate) fn wait<T: Send + 'static>(
    f: impl Future<Output = T> + Send + 'static,
) -> Result<T, String> {
    let rt = runtime().ok_or("the webhook client runtime could not start")?;
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    let recv = move || rx.recv().map_err(|e| e.to_string());
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(recv)
        }
        _ => recv(),
    }
}
