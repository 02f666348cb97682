//! The kubelet port (10250): HTTPS with client certificates, as upstream kubelet serves it to the
//! API server (`kubectl logs` goes API server → `GET /containerLogs/...` here).
//!
//! - TLS (rustls, http/1.1) with `--tls-cert-file`/`--tls-private-key-file`, or a self-signed
//!   serving certificate generated once into `<root-dir>/pki/kubelet.crt|key` (SANs: the node
//!   name and IP) and reused on restart.
//! - Client authentication by x509 certificate: a certificate must be signed by
//!   `--client-ca-file` (default: the CA of the `--kubeconfig`); one signed by another CA fails
//!   the handshake, a request without a certificate gets 401 (anonymous auth off). Authenticated
//!   clients are authorized for everything (kubelet's `--authorization-mode=AlwaysAllow`).
//! - `GET /healthz` → `ok`; `GET /containerLogs/{namespace}/{pod}/{container}` (see
//!   `container_logs`), streamed with chunked encoding; `GET /exec/{namespace}/{pod}/{container}`
//!   upgraded to a WebSocket (see `exec`).
//!
//! Pods are found by namespace/name among the runtime pods the kubelet half runs: API pods by
//! the uid of the API object of that name (from the pod watch's store), static pods by the name
//! of their mirror pod (`<name>-<node>`).

use super::container_logs::{self, LogOptions, QueryError};
use crate::sync::log;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};
use rktup_runtime::runtime::{PodEntry, Runtime};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The kubelet port's flags.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// 0: no server.
    pub port: u16,
    /// Bind address (default: the node IP if given, else 0.0.0.0).
    pub address: Option<IpAddr>,
    pub client_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    /// Where the self-signed serving certificate is kept (`<root-dir>/pki`).
    pub cert_dir: PathBuf,
    /// The kubelet half's kubeconfig, whose CA authenticates clients without --client-ca-file.
    pub kubeconfig: Option<PathBuf>,
    pub node_name: String,
    pub node_ip: Option<String>,
    pub verbosity: u8,
}

impl ServerConfig {
    pub fn bind_addr(&self) -> SocketAddr {
        let ip = self
            .address
            .or_else(|| self.node_ip.as_deref().and_then(|s| s.parse().ok()))
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        SocketAddr::new(ip, self.port)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no certificate in {0}")]
    NoCert(PathBuf),
    #[error("invalid PEM in {path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("failed to read the kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error(
        "no client CA: give --client-ca-file, or a --kubeconfig with certificate-authority(-data)"
    )]
    NoClientCa,
    #[error("failed to generate the serving certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("--tls-cert-file and --tls-private-key-file go together")]
    HalfPair,
    #[error(
        "UNPROTECTED PRIVATE KEY FILE: {path} has mode {mode:04o}, so users other than its \
         owner can read it; refusing to use it. Fix: chmod 600 {path}"
    )]
    Unprotected { path: PathBuf, mode: u32 },
}

/// A key file must not be readable (or writable) by group or others, as ssh insists.
pub fn check_private(path: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(path).map_err(|source| ServerError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = md.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ServerError::Unprotected {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// The start-up check of the serving key the kubelet port will load (given, or the self-signed
/// one from an earlier run); the agent refuses to start when it is readable by others.
pub fn check_key_files(cfg: &ServerConfig) -> Result<(), ServerError> {
    if cfg.port == 0 {
        return Ok(());
    }
    let key = match &cfg.tls_private_key_file {
        Some(k) => k.clone(),
        None => cfg.cert_dir.join("kubelet.key"),
    };
    if cfg.tls_private_key_file.is_some() || key.exists() {
        check_private(&key)?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|source| ServerError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certs_from_pem(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(ServerError::NoCert(path.to_path_buf()));
    }
    Ok(certs)
}

/// The CA certificates that client certificates must chain to.
pub async fn client_cas(cfg: &ServerConfig) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    if let Some(p) = &cfg.client_ca_file {
        return certs_from_pem(&read(p)?, p);
    }
    let Some(kc) = &cfg.kubeconfig else {
        return Err(ServerError::NoClientCa);
    };
    let err = |message: String| ServerError::Kubeconfig {
        path: kc.clone(),
        message,
    };
    let parsed = kube::config::Kubeconfig::read_from(kc).map_err(|e| err(e.to_string()))?;
    let config =
        kube::Config::from_custom_kubeconfig(parsed, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| err(e.to_string()))?;
    match config.root_cert {
        Some(certs) if !certs.is_empty() => {
            Ok(certs.into_iter().map(CertificateDer::from).collect())
        }
        _ => Err(ServerError::NoClientCa),
    }
}

/// The serving certificate chain and key: the given files, or the self-signed pair in
/// `cert_dir` (generated the first time).
pub fn serving_cert(
    cfg: &ServerConfig,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ServerError> {
    let (cert_path, key_path) = match (&cfg.tls_cert_file, &cfg.tls_private_key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (None, None) => {
            let c = cfg.cert_dir.join("kubelet.crt");
            let k = cfg.cert_dir.join("kubelet.key");
            if !(c.exists() && k.exists()) {
                self_signed(cfg, &c, &k)?;
            }
            (c, k)
        }
        _ => return Err(ServerError::HalfPair),
    };
    let certs = certs_from_pem(&read(&cert_path)?, &cert_path)?;
    check_private(&key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&key_path)?).map_err(|e| ServerError::Pem {
        path: key_path.clone(),
        message: e.to_string(),
    })?;
    Ok((certs, key))
}

/// kubelet's self-signed serving certificate: CN `<node>@<unix time>`, SANs the node name and IP.
fn self_signed(cfg: &ServerConfig, cert: &Path, key: &Path) -> Result<(), ServerError> {
    let mut names = vec![cfg.node_name.clone()];
    if let Some(ip) = &cfg.node_ip {
        names.push(ip.clone());
    }
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("{}@{}", cfg.node_name, jiff::Timestamp::now().as_second()),
    );
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = jiff::Timestamp::now().as_second();
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + time_offset(now - 3600);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + time_offset(now + 365 * 86400);
    let pair = rcgen::KeyPair::generate()?;
    let c = params.self_signed(&pair)?;
    let dir = cert.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| ServerError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write_file(key, pair.serialize_pem().as_bytes(), 0o600)?;
    write_file(cert, c.pem().as_bytes(), 0o644)
}

fn time_offset(secs: i64) -> std::time::Duration {
    std::time::Duration::from_secs(secs.max(0) as u64)
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), ServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    // A leftover tmp would keep its old mode: create the file anew, with `mode` from the start.
    let _ = std::fs::remove_file(&tmp);
    let r = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| f.write_all(data))
        .and_then(|()| std::fs::rename(&tmp, path));
    r.map_err(|source| ServerError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// rustls server config: http/1.1, client certificates verified against `cas` when given and
/// optional at the TLS level (a request without one is answered 401).
pub fn tls_config(
    cas: Vec<CertificateDer<'static>>,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let tls = |e: &dyn std::fmt::Display| ServerError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in cas {
        roots.add(c).map_err(|e| tls(&e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| tls(&e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls(&e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// What requests are answered from.
pub struct Context {
    pub rt: Arc<Runtime>,
    /// The kubelet half's pod store (None without --kubeconfig: static pods only).
    pub pods: Option<Store<Pod>>,
    pub node_name: String,
    pub verbosity: u8,
}

pub(crate) type Body = BoxBody<Bytes, Infallible>;

pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Serve connections from `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctx: Arc<Context>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                log(&format!("kubelet server: accept: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        if ctx.verbosity >= 4 {
                            log(&format!("kubelet server: TLS handshake with {peer}: {e}"));
                        }
                        return;
                    }
                    Err(_) => return,
                };
            // A certificate that is there was verified against the client CA in the handshake.
            let authenticated = stream
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty());
            let svc = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(req, authenticated, ctx).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}

async fn handle<B: Send + 'static>(
    req: Request<B>,
    authenticated: bool,
    ctx: Arc<Context>,
) -> Response<Body> {
    if !authenticated {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
    }
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let known = matches!(
        segs.as_slice(),
        ["healthz"] | ["containerLogs", _, _, _] | ["exec", _, _, _]
    );
    if known && req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed");
    }
    match segs.as_slice() {
        ["healthz"] => text(StatusCode::OK, "ok"),
        ["exec", ns, pod, container]
            if !ns.is_empty() && !pod.is_empty() && !container.is_empty() =>
        {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            super::exec::exec(ctx, req, ns, pod, container).await
        }
        ["containerLogs", ns, pod, container]
            if !ns.is_empty() && !pod.is_empty() && !container.is_empty() =>
        {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            container_logs(ctx, ns, pod, container, req.uri().query()).await
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

/// A request for logs resolved to one run of one container.
struct Resolved {
    entry: PodEntry,
    container: String,
    run: u32,
}

/// The newest runtime pod for an API pod name whose spec has `container` (errors as upstream
/// words them).
pub(crate) fn locate(
    ctx: &Context,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<PodEntry, (StatusCode, String)> {
    let api_pod = ctx
        .pods
        .as_ref()
        .and_then(|s| s.get(&ObjectRef::new(pod).within(ns)));
    let is_mirror = api_pod.as_ref().is_some_and(|p| {
        p.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(super::pods::MIRROR_ANNOTATION))
    });
    let api_uid = api_pod
        .as_ref()
        .filter(|_| !is_mirror)
        .and_then(|p| p.metadata.uid.clone());
    let mut entries: Vec<PodEntry> = ctx
        .rt
        .list()
        .into_iter()
        .filter(|e| {
            e.plan.namespace == ns
                && match &e.plan.source {
                    None => e.plan.name == pod && api_uid.as_ref().is_none_or(|u| *u == e.plan.uid),
                    Some(_) => format!("{}-{}", e.plan.name, ctx.node_name) == pod,
                }
        })
        .collect();
    entries.sort_by_key(|e| e.plan.created_at);
    let newest = entries.pop();
    if api_pod.is_none() && newest.is_none() {
        return Err((StatusCode::NOT_FOUND, format!("pod {pod:?} does not exist")));
    }
    // The container must be in the pod's spec (init containers too).
    let in_spec = match (&api_pod, &newest) {
        (Some(p), _) => p.spec.as_ref().is_some_and(|s| {
            s.containers
                .iter()
                .map(|c| &c.name)
                .chain(s.init_containers.iter().flatten().map(|c| &c.name))
                .chain(s.ephemeral_containers.iter().flatten().map(|c| &c.name))
                .any(|n| n == container)
        }),
        (None, Some(e)) => e.plan.all_containers().any(|c| c.name == container),
        (None, None) => false,
    };
    if !in_spec {
        return Err((
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {pod:?}"),
        ));
    }
    newest.ok_or_else(|| {
        // Bound to this node but not started yet (image pull, back-off).
        (
            StatusCode::BAD_REQUEST,
            format!(
                "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
            ),
        )
    })
}

/// kubelet's getContainerLogs: pod, container, then the run (errors as upstream words them).
fn resolve(
    ctx: &Context,
    ns: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<Resolved, (StatusCode, String)> {
    let entry = locate(ctx, ns, pod, container)?;
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let Some(status) = entry
        .status
        .containers
        .iter()
        .chain(entry.status.init_containers.iter())
        .find(|c| c.name == container)
        .cloned()
    else {
        return Err(bad(format!(
            "container {container:?} in pod {pod:?} is not available"
        )));
    };
    let run = container_logs::select_run(&status, pod, previous, |k| {
        ctx.rt.has_log(&entry, container, k)
    })
    .map_err(bad)?;
    Ok(Resolved {
        entry,
        container: container.to_string(),
        run,
    })
}

async fn container_logs(
    ctx: Arc<Context>,
    ns: String,
    pod: String,
    container: String,
    query: Option<&str>,
) -> Response<Body> {
    let opts = match LogOptions::from_query(query) {
        Ok(o) => o,
        Err(QueryError::Decode) => {
            return text(
                StatusCode::BAD_REQUEST,
                r#"{"message": "Unable to decode query."}"#,
            )
        }
        Err(QueryError::Invalid) => {
            return text(
                StatusCode::UNPROCESSABLE_ENTITY,
                r#"{"message": "Invalid request."}"#,
            )
        }
    };
    let now = jiff::Timestamp::now();
    let c2 = ctx.clone();
    let previous = opts.previous;
    let resolved = tokio::task::spawn_blocking(move || {
        let r = resolve(&c2, &ns, &pod, &container, previous);
        (r, ns, pod)
    })
    .await;
    let (resolved, ns, pod) = match resolved {
        Ok(v) => v,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let r = match resolved {
        Ok(r) => r,
        Err((status, msg)) => {
            if ctx.verbosity >= 4 {
                log(&format!("kubelet server: logs of {ns}/{pod}: {msg}"));
            }
            return text(status, msg);
        }
    };
    if ctx.verbosity >= 4 {
        log(&format!(
            "kubelet server: logs of {ns}/{pod}/{} run {} (k8s_{}){}",
            r.container,
            r.run,
            r.entry.plan.uuid,
            if opts.follow { ", following" } else { "" }
        ));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let rt = ctx.rt.clone();
    let verbosity = ctx.verbosity;
    tokio::task::spawn_blocking(move || {
        let alive = || !tx.is_closed();
        let mut out = |b: &[u8]| tx.blocking_send(Bytes::copy_from_slice(b)).is_ok();
        let res = container_logs::read_logs(
            &rt,
            &r.entry,
            &r.container,
            r.run,
            &opts,
            now,
            &alive,
            &mut out,
        );
        if let Err(e) = res {
            log(&format!(
                "kubelet server: reading the log of {ns}/{pod}/{}: {e}",
                r.container
            ));
        } else if verbosity >= 4 && opts.follow {
            log(&format!(
                "kubelet server: stopped following {ns}/{pod}/{}",
                r.container
            ));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// Start the kubelet port on its own thread (with its own async runtime); returns None when the
/// port is 0. Failures to set it up are logged; the agent goes on without the port.
pub fn spawn(
    cfg: ServerConfig,
    rt: Arc<Runtime>,
    pods: Option<Store<Pod>>,
    term: &'static AtomicBool,
) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
    if cfg.port == 0 {
        return Ok(None);
    }
    std::thread::Builder::new()
        .name("kubelet-server".into())
        .spawn(move || {
            let tokio_rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .max_blocking_threads(64)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    log(&format!(
                        "kubelet server: failed to start the async runtime: {e}"
                    ));
                    return;
                }
            };
            tokio_rt.block_on(async move {
                let addr = cfg.bind_addr();
                let setup = async {
                    let cas = client_cas(&cfg).await?;
                    let (certs, key) = serving_cert(&cfg)?;
                    tls_config(cas, certs, key)
                };
                let tls = match setup.await {
                    Ok(t) => t,
                    Err(e) => {
                        log(&format!("kubelet server: not serving {addr}: {e}"));
                        return;
                    }
                };
                let listener = match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        log(&format!("kubelet server: failed to listen on {addr}: {e}"));
                        return;
                    }
                };
                log(&format!("kubelet server: serving https on {addr}"));
                let ctx = Arc::new(Context {
                    rt,
                    pods,
                    node_name: cfg.node_name.clone(),
                    verbosity: cfg.verbosity,
                });
                let stop = async {
                    while !term.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                };
                tokio::select! {
                    _ = serve(listener, tls, ctx) => {}
                    _ = stop => {}
                }
            });
            // Followers blocked on a log are not waited for.
            tokio_rt.shutdown_timeout(Duration::from_millis(100));
        })
        .map(Some)
}
