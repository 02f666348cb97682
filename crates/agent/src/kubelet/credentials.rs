//! The node's API credentials: kubelet's `--bootstrap-kubeconfig` flow (LoadClientCert) and
//! an API client whose client certificate can be replaced while it runs.
//!
//! - [`load_client_cert`]: keep `--kubeconfig` when its client certificate is valid (or it uses
//!   no certificate); else use `<cert-dir>/kubelet-client-current.pem` if valid; else ask for a
//!   certificate with the bootstrap credentials (a CSR named by its digest, so a retry after a
//!   crash finds the same one) and write `--kubeconfig` pointing at the stored pair, with the
//!   bootstrap kubeconfig's cluster (server, CA).
//! - [`client`]: a kube client. With a [`CertSlot`] and a kubeconfig whose user is a client
//!   certificate file, TLS takes the certificate from the slot at each handshake and
//!   connections made with a replaced one are closed (kubelet closes them after a rotation, as
//!   the API server checks a certificate's validity per request).

use crate::kubelet::certificate::{self, CertError, CertSlot, FileStore, Pair, Request};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use kube::client::ConfigExt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("failed to read kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("failed to build an API client: {0}")]
    Client(#[from] kube::Error),
    #[error("invalid --api-servers {0:?}")]
    ApiServer(String),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("failed to configure the API client's TLS: {0}")]
    Tls(#[from] rktup_tls::TlsError),
    #[error("failed to write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn kc_err(path: &Path) -> impl Fn(String) -> CredentialsError + '_ {
    move |message| CredentialsError::Kubeconfig {
        path: path.to_path_buf(),
        message,
    }
}

/// The current context's user and cluster of a kubeconfig.
fn current(
    kc: &kube::config::Kubeconfig,
) -> (
    Option<&kube::config::AuthInfo>,
    Option<&kube::config::Cluster>,
) {
    let ctx = kc
        .current_context
        .as_deref()
        .and_then(|n| kc.contexts.iter().find(|c| c.name == n))
        .or(kc.contexts.first())
        .and_then(|c| c.context.as_ref());
    let user = ctx.and_then(|c| c.user.as_deref()).and_then(|u| {
        kc.auth_infos
            .iter()
            .find(|a| a.name == u)
            .and_then(|a| a.auth_info.as_ref())
    });
    let cluster = ctx.map(|c| c.cluster.as_str()).and_then(|n| {
        kc.clusters
            .iter()
            .find(|c| c.name == n)
            .and_then(|c| c.cluster.as_ref())
    });
    (user, cluster)
}

/// The client certificate file a kubeconfig's user names (resolved against its directory).
fn client_cert_path(kubeconfig: &Path) -> Option<PathBuf> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).ok()?;
    let (user, _) = current(&kc);
    let p = PathBuf::from(user?.client_certificate.as_ref()?);
    Some(if p.is_relative() {
        kubeconfig.parent().unwrap_or(Path::new(".")).join(p)
    } else {
        p
    })
}

/// kubelet's isClientConfigStillValid: it parses, and a client certificate (if it names one)
/// is valid now.
pub fn kubeconfig_valid(kubeconfig: &Path) -> bool {
    let Ok(kc) = kube::config::Kubeconfig::read_from(kubeconfig) else {
        return false;
    };
    if current(&kc).0.is_none() {
        return false;
    }
    match client_cert_path(kubeconfig) {
        None => true,
        Some(p) => {
            let pem = std::fs::read(&p).unwrap_or_default();
            let key_ok = !pem.is_empty();
            let pair = Pair::from_pem(&pem, &pem, &p).ok();
            // The key may be in its own file: only the certificate's validity counts here.
            let valid = pair
                .map(|p| p.valid_at(certificate::now()))
                .or_else(|| {
                    use rustls::pki_types::{pem::PemObject, CertificateDer};
                    let der = CertificateDer::from_pem_slice(&pem).ok()?;
                    let (nb, na, _, _) = certificate::cert_info(&der).ok()?;
                    let now = certificate::now();
                    Some(nb <= now && now < na)
                })
                .unwrap_or(false);
            key_ok && valid
        }
    }
}

/// Write a kubeconfig using the stored client pair for `cluster` (kubelet's
/// writeKubeconfigFromBootstrapping), replacing the file in one rename, mode 0600.
fn write_kubeconfig(
    path: &Path,
    cluster: &kube::config::Cluster,
    pem: &Path,
) -> Result<(), CredentialsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pem = pem.display().to_string();
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default-cluster", "cluster": cluster}],
        "users": [{"name": "default-auth",
                   "user": {"client-certificate": pem, "client-key": pem}}],
        "contexts": [{"name": "default-context",
                      "context": {"cluster": "default-cluster", "user": "default-auth",
                                  "namespace": "default"}}],
        "current-context": "default-context",
    });
    let werr = |source| CredentialsError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(werr)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(doc.to_string().as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(werr)
}

/// kubelet's LoadClientCert (see the module doc). Waits (retrying) while the API server cannot
/// be reached; a denied or failed request is an error.
pub async fn load_client_cert(
    kubeconfig: &Path,
    bootstrap: &Path,
    cert_dir: &Path,
    node_name: &str,
    api_server: Option<&str>,
) -> Result<(), CredentialsError> {
    if kubeconfig_valid(kubeconfig) {
        return Ok(());
    }
    let bkc = kube::config::Kubeconfig::read_from(bootstrap)
        .map_err(|e| kc_err(bootstrap)(e.to_string()))?;
    let cluster = current(&bkc)
        .1
        .cloned()
        .ok_or_else(|| kc_err(bootstrap)("no cluster in the current context".into()))?;
    let store = FileStore::client(cert_dir);
    if store.load().is_some_and(|p| p.valid_at(certificate::now())) {
        info!("certificate: using the stored client certificate");
        return write_kubeconfig(kubeconfig, &cluster, &store.current_path());
    }
    info!(
        "certificate: {} has no valid client certificate; bootstrapping with {}",
        kubeconfig.display(),
        bootstrap.display()
    );
    let client = client(bootstrap, api_server, None).await?;
    let req = Request::client(node_name, true);
    // One key per bootstrap attempt series: a retry after a lost answer asks the same.
    let (key_pem, csr_pem) = certificate::make_csr(&req)?;
    let mut delay = Duration::from_millis(200);
    let cert_pem = loop {
        match certificate::request_certificate(&client, &req, &csr_pem).await {
            Ok(c) => break c,
            Err(e @ (CertError::Denied { .. } | CertError::Failed { .. })) => return Err(e.into()),
            Err(e) => {
                warn!("certificate: bootstrap request: {e}; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    let pair = store.store(&cert_pem, &key_pem)?;
    info!(
        "certificate: got client certificate {} valid until {}",
        pair.common_name, pair.not_after
    );
    write_kubeconfig(kubeconfig, &cluster, &store.current_path())
}

/// A kube client for `kubeconfig` (its server replaced by the first of `api_server`). With a
/// slot, a kubeconfig user with a client certificate file has it read from the slot (filled
/// from the file when empty).
pub async fn client(
    kubeconfig: &Path,
    api_server: Option<&str>,
    slot: Option<&Arc<CertSlot>>,
) -> Result<kube::Client, CredentialsError> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| kc_err(kubeconfig)(e.to_string()))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| kc_err(kubeconfig)(e.to_string()))?;
    if let Some(s) = api_server {
        // The seed passes a comma-separated list; the first one is used.
        let first = s.split(',').next().unwrap_or_default().trim();
        config.cluster_url = first
            .parse()
            .map_err(|_| CredentialsError::ApiServer(s.to_string()))?;
    }
    let rotating = match (slot, client_cert_path(kubeconfig)) {
        (Some(slot), Some(path)) => {
            let pem = std::fs::read(&path).map_err(|source| CertError::Read {
                path: path.clone(),
                source,
            })?;
            let pair = Pair::from_pem(&pem, &pem, &path)?;
            // The file's pair unless the slot already has a newer one (a renewal by another
            // client of the same slot).
            if slot.pair().is_none_or(|p| p.not_after < pair.not_after) {
                slot.set(pair)
                    .map_err(|e| kc_err(kubeconfig)(e.to_string()))?;
            }
            Some(slot.clone())
        }
        _ => None,
    };
    let Some(slot) = rotating else {
        return Ok(kube::Client::try_from(config)?);
    };
    // The kubeconfig's CA (client-go: the system's roots without one), or its
    // insecure-skip-tls-verify.
    let server = if config.accept_invalid_certs {
        rktup_tls::ClientTls::insecure(rktup_tls::Insecure::KubeconfigSkipVerify)
    } else {
        match &config.root_cert {
            Some(ders) => rktup_tls::ClientTls::verify_der(
                &format!("the certificate-authority of {}", kubeconfig.display()),
                ders.iter()
                    .map(|d| rustls::pki_types::CertificateDer::from(d.clone())),
            )?,
            None => rktup_tls::ClientTls::verify_system_roots()?,
        }
    };
    // A resumed TLS session keeps the client certificate it began with: after a renewal the
    // new connections must present the new one (Go's client, kubelet's, resumes nothing).
    let tls = server
        .with_client_resolver(slot.clone())
        .without_resumption()
        .build()?;
    let tls = Arc::unwrap_or_clone(tls);
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(Generational { inner: http, slot });
    let hyper_client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .map_err(tower::BoxError::from)
        .service(hyper_client);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// A TCP connector whose connections remember the slot's generation they were made in.
#[derive(Clone)]
struct Generational {
    inner: HttpConnector,
    slot: Arc<CertSlot>,
}

impl tower::Service<http::Uri> for Generational {
    type Response = GenConn;
    type Error = <HttpConnector as tower::Service<http::Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<GenConn, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let fut = self.inner.call(uri);
        let slot = self.slot.clone();
        Box::pin(async move {
            let born = slot.generation();
            let io = fut.await?;
            Ok(GenConn {
                io,
                born,
                id: slot.conn_id(),
                slot,
            })
        })
    }
}

/// A connection that ends (EOF to the reader, an error to the writer) once the client
/// certificate it was made with has been replaced.
struct GenConn {
    io: TokioIo<TcpStream>,
    born: u64,
    id: u64,
    slot: Arc<CertSlot>,
}

impl GenConn {
    fn stale(&self) -> bool {
        self.slot.generation() != self.born
    }
}

impl Drop for GenConn {
    fn drop(&mut self) {
        self.slot.forget(self.id);
    }
}

impl Connection for GenConn {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl hyper::rt::Read for GenConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.stale() {
            return Poll::Ready(Ok(()));
        }
        self.slot.register(self.id, cx.waker());
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for GenConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.stale() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "client certificate rotated",
            )));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
