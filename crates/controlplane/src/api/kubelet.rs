//! The API server's proxy to node agents' kubelet port: `pods/log`
//! (`/containerLogs/...`) and the streaming subresources `pods/exec`,
//! `pods/attach` and `pods/portforward` (a WebSocket or SPDY upgrade to
//! `/exec/...`, `/attach/...`, `/portForward/...`), and its TLS client. It
//! authenticates as `kube-apiserver-kubelet-client` (a client certificate
//! from the cluster CA, allowed by RBAC's `system:kubelet-api-admin`). With
//! a CA for kubelets (kube-apiserver's `--kubelet-certificate-authority`) it
//! verifies the kubelet's serving certificate: signed by that CA, valid for
//! the node address it dials, and — beyond upstream — with the subject
//! `system:node:<the pod's node>`, so a node that rewrites its addresses to
//! another node's cannot steer calls meant for it to that node's kubelet.
//! Without one it accepts any serving certificate, as kube-apiserver without
//! the flag. Authorization is the caller's (`handlers/subresources.rs`).

use super::error::{ApiError, ApiResult};
use super::objects::{meta_str, Core};
use super::request::Req;
use super::response::{bytes_body, Body};
use crate::registry;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use rustls::pki_types::ServerName;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// TLS client config for talking to kubelets: the API server's client certificate, and the
/// serving certificates verified against `kubelet_ca` (PEM) when given — signed by it, for the
/// address dialled, with the subject `system:node:<node>` of the node each call is for (set
/// around the connection by [`connect_as_node`]). Without, any certificate is accepted, as
/// kube-apiserver without `--kubelet-certificate-authority`.
pub fn client_config(
    cert_pem: &str,
    key_pem: &str,
    kubelet_ca: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, rktup_tls::TlsError> {
    let tls = match kubelet_ca {
        Some(ca) => rktup_tls::ClientTls::verify_pem(KUBELET_CA, ca.as_bytes())?
            .with_expected_common_name_per_connection(),
        None => rktup_tls::ClientTls::insecure(rktup_tls::Insecure::NoKubeletCa),
    };
    tls.with_client_pem(
        "the kubelet client certificate (pki/apiserver-kubelet-client)",
        cert_pem.as_bytes(),
        key_pem.as_bytes(),
    )?
    .build()
}

/// What the kubelet CA is called in errors: kube-apiserver's flag.
const KUBELET_CA: &str = "--kubelet-certificate-authority";

/// Without a client certificate or verification: kube-apiserver's proxy transport
/// (`nodes/proxy` to a port other than the kubelet's, over https).
pub fn insecure_no_client_auth() -> Arc<rustls::ClientConfig> {
    static CFG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CFG.get_or_init(|| rktup_tls::ClientTls::insecure_config(rktup_tls::Insecure::ProxyTransport))
        .clone()
}

/// Makes the TLS connection of a call for `node`: a verifying kubelet config checks that the
/// serving certificate is `system:node:<node>`'s.
async fn connect_as_node<F: std::future::Future>(node: &str, connect: F) -> F::Output {
    rktup_tls::expecting_common_name(format!("system:node:{node}"), connect).await
}

/// The kubelet port of the node a pod runs on, as the API server's client.
pub struct Proxy<'a> {
    pub tls: &'a Arc<rustls::ClientConfig>,
    pub core: &'a Core,
}

impl Proxy<'_> {
    /// The container a pods/log or pods/exec request means: `container`, or the only one.
    fn pick_container(pod: &Value, r: &Req) -> ApiResult<String> {
        let name = meta_str(pod, "name");
        let containers: Vec<&str> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        match r.q("container").filter(|c| !c.is_empty()) {
            Some(c) => {
                if !containers.contains(&c) {
                    return Err(ApiError::bad_request(format!(
                        "container {c} is not valid for pod {name}"
                    )));
                }
                Ok(c.to_string())
            }
            None if containers.len() == 1 => Ok(containers[0].to_string()),
            None => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            ))),
        }
    }

    /// The kubelet running `pod` and the `NS/POD/CONTAINER` the request
    /// means.
    fn locate(&self, pod: &Value, r: &Req) -> ApiResult<Located> {
        let container = Self::pick_container(pod, r)?;
        let (ip, port) = self.kubelet_of(pod)?;
        Ok(Located {
            node: node_of(pod),
            ip,
            port,
            container: format!(
                "{}/{}/{container}",
                meta_str(pod, "namespace"),
                meta_str(pod, "name")
            ),
        })
    }

    /// The address and port of the kubelet running `pod`.
    fn kubelet_of(&self, pod: &Value) -> ApiResult<(String, u16)> {
        let name = meta_str(pod, "name");
        let node_name = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if node_name.is_empty() {
            return Err(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )));
        }
        let nodes = registry::find("", "v1", "nodes").ok_or_else(|| ApiError::internal("nodes"))?;
        let node = self.core.get(nodes, None, node_name)?;
        node_address(&node)
    }

    /// Proxies `pods/log` to the node's kubelet port (`/containerLogs/...`).
    pub async fn log(&self, pod: &Value, r: &Req) -> ApiResult<Response<Body>> {
        let at = self.locate(pod, r)?;
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for k in [
                "follow",
                "previous",
                "timestamps",
                "tailLines",
                "sinceSeconds",
                "sinceTime",
                "limitBytes",
            ] {
                if let Some(v) = r.q(k) {
                    q.append_pair(k, v);
                }
            }
            q.finish()
        };
        let upstream = at
            .get(self.tls, "containerLogs", &query, http::HeaderMap::new())
            .await?;
        let status = upstream.status();
        if !status.is_success() {
            return Err(kubelet_error(upstream).await);
        }
        let mut resp = Response::new(upstream.into_body().map_err(std::io::Error::other).boxed());
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        Ok(resp)
    }

    /// `pods/exec`, `pods/attach` or `pods/portforward` (`sub`) of `pod`: the client's upgrade
    /// `req` (WebSocket, or SPDY/3.1 from older clients, which also POST) is passed on to the
    /// node's kubelet port (`/exec/...`, `/attach/...`, `/portForward/...`, with
    /// kube-apiserver's parameter names), then bytes are copied both ways until either side
    /// closes — the API server does not read the streams.
    pub async fn stream(
        &self,
        sub: &str,
        pod: &Value,
        r: &Req,
        mut req: Request<Incoming>,
    ) -> ApiResult<Response<Body>> {
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if sub != "portforward" && matches!(phase, "Succeeded" | "Failed") {
            return Err(ApiError::bad_request(format!(
                "cannot {sub} into a container in a completed pod; current phase is {phase}"
            )));
        }
        let query = kubelet_query(sub, req.uri().query().unwrap_or(""));
        let (endpoint, at) = match sub {
            "portforward" => {
                let (ip, port) = self.kubelet_of(pod)?;
                let target = format!("{}/{}", meta_str(pod, "namespace"), meta_str(pod, "name"));
                let at = Located {
                    node: node_of(pod),
                    ip,
                    port,
                    container: target,
                };
                ("portForward", at)
            }
            "attach" => ("attach", self.locate(pod, r)?),
            _ => ("exec", self.locate(pod, r)?),
        };
        let mut handshake = http::HeaderMap::new();
        copy_headers(req.headers(), &mut handshake, &UPGRADE_REQUEST);
        let mut upstream = at.get(self.tls, endpoint, &query, handshake).await?;
        if upstream.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(kubelet_error(upstream).await);
        }
        let mut resp = Response::new(bytes_body(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        copy_headers(upstream.headers(), resp.headers_mut(), &UPGRADE_RESPONSE);
        let client_side = hyper::upgrade::on(&mut req);
        let node_side = hyper::upgrade::on(&mut upstream);
        tokio::spawn(async move {
            if let (Ok(client), Ok(node)) = tokio::join!(client_side, node_side) {
                let mut client = hyper_util::rt::TokioIo::new(client);
                let mut node = hyper_util::rt::TokioIo::new(node);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut node).await;
            }
        });
        Ok(resp)
    }
}

/// The handshake headers passed on to the kubelet: WebSocket's and SPDY's
/// (`X-Stream-Protocol-Version`, one per protocol offered).
const UPGRADE_REQUEST: [&str; 6] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// The kubelet's answer headers passed back to the client.
const UPGRADE_RESPONSE: [&str; 5] = [
    "connection",
    "upgrade",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// The kubelet's query for a streaming subresource, from the client's (kube-apiserver's
/// names: `stdin` → `input`, ...; `ports` → one `port` each, comma lists split). Repeated
/// `command` parameters keep their order.
fn kubelet_query(sub: &str, client: &str) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(client.as_bytes()) {
        let k = match (sub, k.as_ref()) {
            ("exec", "command") => "command",
            ("exec" | "attach", "stdin") => "input",
            ("exec" | "attach", "stdout") => "output",
            ("exec" | "attach", "stderr") => "error",
            ("exec" | "attach", "tty") => "tty",
            ("portforward", "ports") => {
                for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    q.append_pair("port", p);
                }
                continue;
            }
            _ => continue,
        };
        q.append_pair(k, &v);
    }
    q.finish()
}

/// The handshake's headers, from one side of the streaming proxy to the other (every value:
/// SPDY clients send one `X-Stream-Protocol-Version` per protocol).
fn copy_headers(from: &http::HeaderMap, to: &mut http::HeaderMap, names: &[&'static str]) {
    for &h in names {
        for v in from.get_all(h) {
            to.append(h, v.clone());
        }
    }
}

/// A kubelet's non-success answer as a Status kubectl prints (like kube-apiserver: the kubelet's
/// own words).
async fn kubelet_error(upstream: Response<Incoming>) -> ApiError {
    let status = upstream.status();
    let body = upstream
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_else(|| text.trim().to_string());
    let reason = match status.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        422 => "Invalid",
        _ => "InternalError",
    };
    ApiError::new(status.as_u16(), reason, message)
}

/// A container on a kubelet.
struct Located {
    /// The node's name, which its serving certificate must carry.
    node: String,
    ip: String,
    port: u16,
    /// `NS/POD/CONTAINER`.
    container: String,
}

impl Located {
    /// `GET /ENDPOINT/NS/POD/CONTAINER?QUERY` on the kubelet port over its own connection,
    /// with `headers` (upgrades allowed: pods/exec); a failure to reach the kubelet is an
    /// InternalError naming the URL.
    async fn get(
        &self,
        tls: &Arc<rustls::ClientConfig>,
        endpoint: &str,
        query: &str,
        headers: http::HeaderMap,
    ) -> ApiResult<Response<Incoming>> {
        let (ip, port) = (self.ip.as_str(), self.port);
        let path = format!("/{endpoint}/{}?{query}", self.container);
        connect_as_node(&self.node, kubelet_get(tls, ip, port, &path, headers)).await
    }
}

/// The address and kubelet port of `node`: the first of its addresses by kube-apiserver's
/// default `--kubelet-preferred-address-types` order (InternalIP first, as this control
/// plane's nodes report their reachable address there), and its kubelet endpoint's port
/// (10250 when unset). Without one, upstream's error.
pub(crate) fn node_address(node: &Value) -> ApiResult<(String, u16)> {
    let addrs = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .map_or(&[][..], |a| a);
    let ip = [
        "InternalIP",
        "ExternalIP",
        "Hostname",
        "InternalDNS",
        "ExternalDNS",
    ]
    .iter()
    .find_map(|t| {
        addrs
            .iter()
            .find(|a| a["type"] == *t)
            .and_then(|a| a["address"].as_str())
            .filter(|a| !a.is_empty())
            .map(String::from)
    })
    .ok_or_else(|| {
        // Go's `%v` of the []NodeAddress, as upstream's NoMatchError prints it.
        let known: Vec<String> = addrs
            .iter()
            .map(|a| {
                format!(
                    "{{{} {}}}",
                    a["type"].as_str().unwrap_or(""),
                    a["address"].as_str().unwrap_or("")
                )
            })
            .collect();
        ApiError::new(
            500,
            "",
            format!(
                "no preferred addresses found; known addresses: [{}]",
                known.join(" ")
            ),
        )
    })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(10250);
    Ok((ip, port))
}

/// Sends `req` to `ip:port` over its own connection: TLS with `tls` when given (a kubelet
/// client config verifies the serving certificate as node `node`'s), plain HTTP otherwise.
/// The error is the dial's or the exchange's, in Go's words where kubectl users know them
/// (`dial tcp IP:PORT: connect: connection refused`).
pub(crate) async fn send_to_node(
    tls: Option<&Arc<rustls::ClientConfig>>,
    node: &str,
    ip: &str,
    port: u16,
    req: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, String> {
    let dial = format!("dial tcp {}", host_port(ip, port));
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((ip, port)),
    )
    .await
    .map_err(|_| format!("{dial}: i/o timeout"))?
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => format!("{dial}: connect: connection refused"),
        _ => format!("{dial}: {e}"),
    })?;
    let Some(tls) = tls else {
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        return send.send_request(req).await.map_err(|e| e.to_string());
    };
    let server_name = ServerName::try_from(ip.to_string()).map_err(|e| e.to_string())?;
    let stream = connect_as_node(
        node,
        tokio_rustls::TlsConnector::from(tls.clone()).connect(server_name, tcp),
    )
    .await
    .map_err(|e| e.to_string())?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    send.send_request(req).await.map_err(|e| e.to_string())
}

/// `ip:port`, with an IPv6 address in brackets (Go's `net.JoinHostPort`).
pub(crate) fn host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn node_of(pod: &Value) -> String {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// `GET path` on a kubelet port over its own connection, with `headers`.
async fn kubelet_get(
    tls: &Arc<rustls::ClientConfig>,
    ip: &str,
    port: u16,
    path: &str,
    headers: http::HeaderMap,
) -> ApiResult<Response<Incoming>> {
    let exchange = async {
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect((ip, port)),
        )
        .await
        .map_err(|_| "dial timeout".to_string())?
        .map_err(|e| e.to_string())?;
        let server_name =
            rustls::pki_types::ServerName::try_from(ip.to_string()).map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(server_name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn.with_upgrades());
        let mut req = Request::get(path)
            .header(http::header::HOST, format!("{ip}:{port}"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        req.headers_mut().extend(headers);
        send.send_request(req).await.map_err(|e| e.to_string())
    };
    exchange
        .await
        .map_err(|e| ApiError::internal(format!("Get \"https://{ip}:{port}{path}\": {e}")))
}

#[cfg(test)]
mod tests {
    //! `pods/exec` through [`ApiServer::handle`] to a stand-in kubelet: the
    //! upgrade and the kubelet's query are passed on, bytes flow both ways,
    //! nodes are refused (the real exec path is `crates/agent/tests/exec.rs`).

    use super::super::auth::User;
    use super::super::objects::{Core, ServiceCidrs, WriteCtx};
    use super::super::server::ApiServer;
    use crate::registry;
    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::Full;
    use hyper::body::Incoming;
    use serde_json::json;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A kubelet that answers `/exec` with 101 and echoes upper-cased; the
    /// request line and key header it saw go to `seen`.
    async fn kubelet(seen: Arc<Mutex<Vec<String>>>) -> u16 {
        use rustls::pki_types::{pem::PemObject, PrivateKeyDer};
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let pk = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key");
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], pk)
        .expect("tls");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        listen(move |tcp| {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let key = req.headers().get("sec-websocket-key").cloned();
                    seen.lock().unwrap().push(format!(
                        "{} key={key:?}",
                        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
                    ));
                    let upgraded = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let Ok(io) = upgraded.await else { return };
                        let mut io = hyper_util::rt::TokioIo::new(io);
                        let mut buf = [0u8; 64];
                        while let Ok(n @ 1..) = io.read(&mut buf).await {
                            let _ = io.write_all(&buf[..n].to_ascii_uppercase()).await;
                        }
                    });
                    let resp = Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header("connection", "Upgrade")
                        .header("upgrade", "websocket")
                        .header("sec-websocket-accept", "accepted")
                        .header("sec-websocket-protocol", "v5.channel.k8s.io")
                        .body(Full::new(Bytes::new()));
                    async move { resp }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .with_upgrades()
                    .await;
            }
        })
        .await
    }

    /// Serves `server` over plain HTTP/1.1 as `user`; returns the port.
    async fn serve(server: Arc<ApiServer>, user: User) -> u16 {
        listen(move |tcp| {
            let (server, user) = (server.clone(), user.clone());
            let svc = hyper::service::service_fn(move |req| {
                let (server, user) = (server.clone(), user.clone());
                async move { Ok::<_, std::convert::Infallible>(server.handle(Some(user), req).await) }
            });
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .with_upgrades()
        })
        .await
    }

    /// Accepts connections on a free port, each served by `conn`; returns the port.
    async fn listen<F, Fut>(conn: F) -> u16
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let serving = conn(tcp);
                tokio::spawn(async move {
                    let _ = serving.await;
                });
            }
        });
        port
    }

    /// Sends an exec upgrade request; returns the stream and the response head.
    async fn exec(port: u16, query: &str) -> (tokio::net::TcpStream, String) {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let req = format!(
            "GET /api/v1/namespaces/default/pods/p/exec?{query} HTTP/1.1\r\nHost: x\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k3y\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.expect("write");
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(tcp.read(&mut b).await.expect("read"), 1, "{head:?}");
            head.push(b[0]);
        }
        (tcp, String::from_utf8_lossy(&head).to_lowercase())
    }

    #[test]
    fn kubelet_queries_use_the_kubelets_names() {
        use super::kubelet_query;
        assert_eq!(
            kubelet_query("portforward", "ports=80%2C1234&ports=8080&x=1"),
            "port=80&port=1234&port=8080"
        );
        assert_eq!(
            kubelet_query(
                "attach",
                "container=c&stdin=true&stdout=true&tty=true&command=x"
            ),
            "input=true&output=true&tty=true"
        );
        assert_eq!(
            kubelet_query("exec", "command=ls&command=-l&stderr=true"),
            "command=ls&command=-l&error=true"
        );
    }

    #[tokio::test]
    async fn exec_upgrade_is_passed_on_to_the_pods_kubelet() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = crate::store::FileStore::open(&dir.path().join("store")).expect("store");
        let core = Core::new(store, ServiceCidrs::parse("10.96.0.0/12").expect("cidr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kubelet_port = kubelet(seen.clone()).await;
        let mut ctx = WriteCtx::controller("test");
        let ns = registry::find("", "v1", "namespaces").expect("namespaces");
        core.create(ns, None, json!({"metadata": {"name": "default"}}), &mut ctx)
            .expect("namespace");
        let nodes = registry::find("", "v1", "nodes").expect("nodes");
        core.create(
            nodes,
            None,
            json!({"metadata": {"name": "n1"}, "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}}}}),
            &mut ctx,
        )
        .expect("node");
        // Pods run as `default` (ServiceAccount admission); no controller makes it here.
        core.create(
            registry::find("", "v1", "serviceaccounts").expect("serviceaccounts"),
            Some("default"),
            json!({"metadata": {"name": "default"}}),
            &mut ctx,
        )
        .expect("serviceaccount");
        core.create(
            registry::pods(),
            Some("default"),
            json!({"metadata": {"name": "p"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}}),
            &mut ctx,
        )
        .expect("pod");
        let server = Arc::new(ApiServer {
            rbac: super::super::auth::Rbac::new(core.store.clone()),
            core,
            tokens: Arc::new(super::super::auth::TokenStore::load(
                dir.path().join("t.json"),
            )),
            signer: Arc::new(
                super::super::satoken::TokenSigner::load_or_create(dir.path()).expect("signer"),
            ),
            server_address: "127.0.0.1:1".into(),
            kubelet_tls: super::insecure_no_client_auth(),
            ready: Default::default(),
            aggregator: Default::default(),
        });
        let admin = User {
            name: "admin".into(),
            groups: vec!["system:masters".into()],
        };
        let port = serve(server.clone(), admin).await;
        let (mut tcp, head) =
            exec(port, "command=echo&command=hi&stdout=true&stdin=true&x=y").await;
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("sec-websocket-accept: accepted"), "{head}");
        assert!(
            head.contains("sec-websocket-protocol: v5.channel.k8s.io"),
            "{head}"
        );
        assert_eq!(
            *seen.lock().unwrap(),
            ["/exec/default/p/c?command=echo&command=hi&output=true&input=true key=Some(\"k3y\")"]
        );
        tcp.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        tcp.read_exact(&mut buf).await.expect("echo");
        assert_eq!(&buf, b"PING");

        // A container the pod does not have, and a node (no pods/exec for nodes).
        let (_, head) = exec(port, "container=nope&command=ls").await;
        assert!(head.starts_with("http/1.1 400"), "{head}");
        let node = User {
            name: "system:node:n1".into(),
            groups: vec!["system:nodes".into()],
        };
        let port = serve(server, node).await;
        let (mut tcp, head) = exec(port, "command=ls").await;
        assert!(head.starts_with("http/1.1 403"), "{head}");
        // Nor attach or forward ports.
        for sub in ["attach", "portforward"] {
            let mut t = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let req = format!(
                "POST /api/v1/namespaces/default/pods/p/{sub}?ports=80 HTTP/1.1\r\nHost: x\r\n\
                 Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
                 X-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n"
            );
            t.write_all(req.as_bytes()).await.expect("write");
            let mut b = vec![0u8; 4096];
            let n = t.read(&mut b).await.expect("read");
            let text = String::from_utf8_lossy(&b[..n]);
            assert!(text.starts_with("HTTP/1.1 403"), "{text}");
            assert!(text.contains(&format!("pods/{sub}")), "{text}");
        }
        let mut body = vec![0u8; 4096];
        let n = tcp.read(&mut body).await.expect("body");
        let body = String::from_utf8_lossy(&body[..n]);
        assert!(
            body.contains(r#"pods \"p\" is forbidden: User \"system:node:n1\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"default\""#),
            "{body}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}
