//! The kubelet port (10250): HTTPS with client certificates, as upstream kubelet serves it to the
//! API server (`kubectl logs` goes API server → `GET /containerLogs/...` here).
//!
//! - TLS (rustls, http/1.1) with `--tls-cert-file`/`--tls-private-key-file`, or a self-signed
//!   serving certificate generated once into `<root-dir>/pki/kubelet.crt|key` (SANs: the node
//!   name and IP) and reused on restart.
//! - Client authentication by x509 certificate: a certificate must be signed by
//!   `--client-ca-file` (default: the CA of the `--kubeconfig`); one signed by another CA fails
//!   the handshake, a request without a certificate gets 401 (anonymous auth off) unless
//!   `--authentication-token-webhook` accepts its bearer token (`authn`). Authenticated
//!   clients are authorized for everything (kubelet's `--authorization-mode=AlwaysAllow`), or
//!   with `Webhook` by a SubjectAccessReview per request (`authz`).
//! - With `--rotate-server-certificates` the serving certificate is the one the
//!   `kubernetes.io/kubelet-serving` signer issued (a resolver reads it per handshake, so a
//!   renewed one is served at once).
//! - `GET /healthz` → `ok`; `GET /containerLogs/{namespace}/{pod}/{container}` (see
//!   `container_logs`), streamed with chunked encoding; `GET /exec/{namespace}/{pod}/{container}`
//!   upgraded to a WebSocket (see `exec`); `/portForward/{namespace}/{pod}` upgraded to SPDY/3.1,
//!   SPDY inside a WebSocket, or WebSocket channels (see `portforward`, `spdy`);
//!   `/attach/{namespace}/{pod}/{container}`: the container's live output (see `attach`).
//!   exec and attach also take SPDY/3.1 (`v4.channel.k8s.io`) from older clients, and POST.
//!
//! Pods are found by namespace/name among the runtime pods the kubelet half runs: API pods by
//! the uid of the API object of that name (from the pod watch's store), static pods by the name
//! of their mirror pod (`<name>-<node>`).

pub mod attach;
pub mod authn;
pub mod authz;
pub mod container_logs;
pub mod context;
pub mod exec;
pub mod metrics;
pub mod portforward;
pub mod spdy;
pub mod stats;
pub mod tls;
pub mod upgrade;

pub use context::Context;
pub use tls::{
    check_key_files, check_private, client_cas, serving_cert, tls_config, ServerConfig, ServerError,
};

use bytes::Bytes;
use container_logs::{LogOptions, QueryError};
use context::{locate, text, Body};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;
use rktup_runtime::runtime::{PodEntry, Runtime};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, error, info, warn};

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
                warn!("kubelet server: accept: {e}");
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
                        debug!("kubelet server: TLS handshake with {peer}: {e}");
                        return;
                    }
                    Err(_) => return,
                };
            // A certificate that is there was verified against the client CA in the handshake.
            let user = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| authz::User::from_cert(c.as_ref()));
            let svc = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                let user = user.clone();
                async move { Ok::<_, Infallible>(handle(req, user, ctx).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}

/// `user`: None without a client certificate; Some(None) for a verified certificate without a
/// subject name.
async fn handle<B: Send + 'static>(
    req: Request<B>,
    user: Option<Option<authz::User>>,
    ctx: Arc<Context>,
) -> Response<Body> {
    // Without a certificate, a bearer token when tokens are accepted.
    let user = match (user, &ctx.token_authenticator, authn::bearer(req.headers())) {
        (Some(u), _, _) => Some(u),
        (None, Some(a), Some(token)) => match a.authenticate(token).await {
            Ok(u) => u.map(Some),
            Err(e) => {
                warn!("kubelet server: reviewing a bearer token: {e}");
                None
            }
        },
        (None, _, _) => None,
    };
    let Some(user) = user else {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
    };
    if let Some(a) = &ctx.authorizer {
        let Some(user) = user else {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        };
        let (verb, sub) = authz::attributes(req.method(), req.uri().path());
        match a.authorize(&user, verb, sub).await {
            Ok(true) => {}
            Ok(false) => {
                debug!(
                    "kubelet server: {} {}: forbidden",
                    user.name,
                    req.uri().path()
                );
                return text(
                    StatusCode::FORBIDDEN,
                    authz::forbidden_message(&user, verb, sub),
                );
            }
            Err(e) => {
                warn!("kubelet server: authorizing {}: {e}", user.name);
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "Authorization error (user={}, verb={verb}, resource=nodes, \
                         subresource={sub})",
                        user.name
                    ),
                );
            }
        }
    }
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let known = matches!(segs.as_slice(), ["healthz"] | ["containerLogs", _, _, _]);
    // Streaming endpoints take POST too: SPDY clients (kubectl before 1.30) post.
    let streaming = matches!(
        segs.as_slice(),
        ["exec", _, _, _] | ["attach", _, _, _] | ["portForward", _, _] | ["portForward", _, _, _]
    );
    if (known && req.method() != Method::GET)
        || (streaming && !matches!(*req.method(), Method::GET | Method::POST))
    {
        return text(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed");
    }
    match segs.as_slice() {
        ["healthz"] => text(StatusCode::OK, "ok"),
        // kubelet routes the summary for GET and POST; its metrics handler takes any method.
        ["stats", "summary"] if !matches!(*req.method(), Method::GET | Method::POST) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed")
        }
        ["stats", "summary"] | ["metrics", "resource"] => {
            let only = stats::only_cpu_and_memory(req.uri().query());
            let metrics = segs[0] == "metrics";
            let c = ctx.clone();
            // Reading cgroups and /proc blocks.
            let s = tokio::task::spawn_blocking(move || {
                stats::summary(&c.rt, &c.node_name, only || metrics)
            })
            .await;
            match s {
                Ok(s) if metrics => typed(metrics::CONTENT_TYPE, metrics::render(&s).into()),
                Ok(s) => typed("application/json", stats::to_json(&s).into()),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        ["portForward", ns, pod] | ["portForward", ns, pod, _]
            if !ns.is_empty() && !pod.is_empty() =>
        {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            portforward::portforward(ctx, req, ns, pod).await
        }
        ["attach", ns, pod, container]
            if !ns.is_empty() && !pod.is_empty() && !container.is_empty() =>
        {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            attach::attach(ctx, req, ns, pod, container).await
        }
        ["exec", ns, pod, container]
            if !ns.is_empty() && !pod.is_empty() && !container.is_empty() =>
        {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            exec::exec(ctx, req, ns, pod, container).await
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

/// A 200 with `body` of `content_type`.
fn typed(content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

/// A request for logs resolved to one run of one container.
struct Resolved {
    entry: PodEntry,
    container: String,
    run: u32,
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
            debug!("kubelet server: logs of {ns}/{pod}: {msg}");
            return text(status, msg);
        }
    };
    debug!(
        "kubelet server: logs of {ns}/{pod}/{} run {} (k8s_{}){}",
        r.container,
        r.run,
        r.entry.plan.uuid,
        if opts.follow { ", following" } else { "" }
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let rt = ctx.rt.clone();
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
            warn!(
                "kubelet server: reading the log of {ns}/{pod}/{}: {e}",
                r.container
            );
        } else if opts.follow {
            debug!(
                "kubelet server: stopped following {ns}/{pod}/{}",
                r.container
            );
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

/// The API client SubjectAccessReviews are sent with: the node's own credentials.
async fn webhook_client(
    w: &authz::WebhookConfig,
) -> Result<kube::Client, crate::kubelet::credentials::CredentialsError> {
    let Some(kc) = &w.kubeconfig else {
        return Err(crate::kubelet::credentials::CredentialsError::Kubeconfig {
            path: Default::default(),
            message: "webhook authentication and authorization need --kubeconfig".into(),
        });
    };
    crate::kubelet::credentials::client(kc, w.api_server.as_deref(), w.client_slot.as_ref()).await
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
                    error!("kubelet server: failed to start the async runtime: {e}");
                    return;
                }
            };
            tokio_rt.block_on(async move {
                let addr = cfg.bind_addr();
                // A bootstrapping node has its kubeconfig (and with it the client CA) only
                // once its client certificate is issued.
                let cas = loop {
                    // An expired kubeconfig from before is about to be replaced: wait for it.
                    let stale = cfg.wait_for_kubeconfig
                        && !cfg
                            .kubeconfig
                            .as_deref()
                            .is_some_and(crate::kubelet::credentials::kubeconfig_valid);
                    match client_cas(&cfg).await {
                        Ok(_) if stale => {
                            if term.load(Ordering::SeqCst) {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Ok(c) => break Ok(c),
                        Err(e) if cfg.wait_for_kubeconfig && cfg.client_ca_file.is_none() => {
                            debug!("kubelet server: waiting for the kubeconfig: {e}");
                            if term.load(Ordering::SeqCst) {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => break Err(e),
                    }
                };
                let setup = async {
                    let (certs, key) = serving_cert(&cfg)?;
                    tls_config(cas?, certs, key, cfg.serving_slot.clone())
                };
                let tls = match setup.await {
                    Ok(t) => t,
                    Err(e) => {
                        error!("kubelet server: not serving {addr}: {e}");
                        return;
                    }
                };
                let listener = match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        error!("kubelet server: failed to listen on {addr}: {e}");
                        return;
                    }
                };
                let authorizer = match &cfg.webhook {
                    None => None,
                    Some(w) => match webhook_client(w).await {
                        Ok(c) => Some(authz::Authorizer::new(c, cfg.node_name.clone())),
                        Err(e) => {
                            // Fail closed: no port rather than one that allows everything.
                            error!("kubelet server: not serving {addr}: webhook authorization: {e}");
                            return;
                        }
                    },
                };
                let token_authenticator = match &cfg.token_webhook {
                    None => None,
                    Some(w) => match webhook_client(w).await {
                        Ok(c) => Some(authn::TokenAuthenticator::new(c)),
                        Err(e) => {
                            error!("kubelet server: not serving {addr}: token webhook: {e}");
                            return;
                        }
                    },
                };
                info!(
                    "kubelet server: serving https on {addr} (authorization {}{})",
                    if authorizer.is_some() { "Webhook" } else { "AlwaysAllow" },
                    if token_authenticator.is_some() { ", bearer tokens reviewed" } else { "" }
                );
                let ctx = Arc::new(Context {
                    rt,
                    pods,
                    node_name: cfg.node_name.clone(),
                    authorizer,
                    token_authenticator,
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
