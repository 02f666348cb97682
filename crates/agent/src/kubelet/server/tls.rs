//! The kubelet port's TLS: its flags, the serving certificate (given, or self-signed once into
//! `<root-dir>/pki/kubelet.crt|key` and reused; the key must be private), and client
//! authentication by x509 certificates signed by `--client-ca-file` (default: the kubeconfig's
//! CA).

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// --rotate-server-certificates: serve the CSR-issued certificate in this slot (the
    /// self-signed one until there is one).
    pub serving_slot: Option<Arc<crate::kubelet::certificate::CertSlot>>,
    /// --authorization-mode=Webhook.
    pub webhook: Option<super::authz::WebhookConfig>,
    /// --authentication-token-webhook: bearer tokens checked with TokenReviews sent with these
    /// credentials.
    pub token_webhook: Option<super::authz::WebhookConfig>,
    /// The kubeconfig is written by the bootstrap (--bootstrap-kubeconfig): wait for it.
    pub wait_for_kubeconfig: bool,
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
/// optional at the TLS level (a request without one is answered 401). With a serving slot, its
/// certificate is served once it has one, `certs`/`key` until then.
pub fn tls_config(
    cas: Vec<CertificateDer<'static>>,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    serving_slot: Option<Arc<crate::kubelet::certificate::CertSlot>>,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let tls = |e: &dyn std::fmt::Display| ServerError::Tls(e.to_string());
    // rktup's one crypto provider (crates/tls), as the API client's.
    let provider = rktup_tls::provider();
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
    let cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier);
    let mut cfg = match serving_slot {
        None => cfg.with_single_cert(certs, key).map_err(|e| tls(&e))?,
        Some(slot) => {
            let signer = provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| tls(&e))?;
            let fallback = Arc::new(rustls::sign::CertifiedKey::new(certs, signer));
            cfg.with_cert_resolver(Arc::new(crate::kubelet::certificate::ServingResolver {
                slot,
                fallback,
            }))
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
