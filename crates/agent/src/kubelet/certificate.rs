//! The node's certificates from the certificates.k8s.io/v1 CSR API, as kubelet gets them
//! (pkg/kubelet/certificate): the client certificate (`--bootstrap-kubeconfig`, then
//! `--rotate-certificates`) and the kubelet port's serving certificate
//! (`--rotate-server-certificates`).
//!
//! - The private key is made here (ECDSA P-256) and never leaves the node: the CSR carries only
//!   the public key. Cert and key are kept together, mode 0600, as
//!   `<cert-dir>/kubelet-{client,server}-<YYYY-MM-DD-HH-MM-SS>.pem`, with the symlink
//!   `kubelet-{client,server}-current.pem` switched by one rename (kubelet's file store).
//! - [`CertSlot`] holds the pair in use; TLS reads it at each handshake (rustls resolvers for
//!   the API client and the kubelet port), so a renewed certificate is used without a restart.
//! - Renewal at a random point between 70 and 90 % of the certificate's lifetime (kubelet's
//!   `nextRotationDeadline`), with a new key and CSR made with the current credentials.

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tracing::{info, warn};

/// kubelet's client signer and usages (ECDSA keys: no key encipherment).
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const CLIENT_USAGES: [&str; 2] = ["digital signature", "client auth"];
/// kubelet's serving signer and usages.
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
pub const SERVING_USAGES: [&str; 2] = ["digital signature", "server auth"];

#[derive(Debug, thiserror::Error)]
pub enum CertError {
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
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("failed to make a key or CSR: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("certificate signing request {name}: {source}")]
    Api { name: String, source: kube::Error },
    #[error("certificate signing request {name} is denied, reason: {reason}, message: {message}")]
    Denied {
        name: String,
        reason: String,
        message: String,
    },
    #[error("certificate signing request {name} failed, reason: {reason}, message: {message}")]
    Failed {
        name: String,
        reason: String,
        message: String,
    },
    #[error("certificate signing request {name}: the watch ended before it was issued")]
    WatchEnded { name: String },
    #[error("certificate signing request {name}: not issued within {secs} s")]
    Timeout { name: String, secs: u64 },
    #[error("failed to read the kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
}

/// A certificate chain and its key, with the leaf's subject and validity.
#[derive(Clone)]
pub struct Pair {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
    pub not_before: i64,
    pub not_after: i64,
    pub common_name: String,
}

impl std::fmt::Debug for Pair {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair")
            .field("common_name", &self.common_name)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// The validity and subject of a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<(i64, i64, String, Vec<String>), String> {
    let (_, c) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let v = c.validity();
    let cn = c
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let orgs = c
        .subject()
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(String::from))
        .collect();
    Ok((v.not_before.timestamp(), v.not_after.timestamp(), cn, orgs))
}

impl Pair {
    /// Certificates (leaf first) and a private key from PEM (one file or two).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], path: &Path) -> Result<Pair, CertError> {
        let parse = |message: String| CertError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| parse(e.to_string()))?;
        let Some(leaf) = certs.first() else {
            return Err(parse("no certificate".into()));
        };
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| parse(e.to_string()))?;
        let (not_before, not_after, common_name, _) = cert_info(leaf).map_err(parse)?;
        Ok(Pair {
            certs,
            key: Arc::new(key),
            not_before,
            not_after,
            common_name,
        })
    }

    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now < self.not_after
    }

    fn certified(&self) -> Result<CertifiedKey, rustls::Error> {
        // The key through the one crypto provider of rktup's TLS (crates/tls).
        let signer = rktup_tls::provider()
            .key_provider
            .load_private_key(self.key.clone_key())?;
        Ok(CertifiedKey::new(self.certs.clone(), signer))
    }
}

pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A uniformly random fraction in [0, 1) from the kernel.
fn random_fraction() -> f64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    let v = if n == 8 {
        u64::from_ne_bytes(b)
    } else {
        // No entropy call: the clock's nanoseconds still spread nodes apart.
        jiff::Timestamp::now().subsec_nanosecond() as u64
    };
    (v >> 11) as f64 / (1u64 << 53) as f64
}

/// kubelet's nextRotationDeadline: notBefore + 70..90 % of the lifetime (jittered so a fleet
/// of nodes does not renew at once). When that point is already past at `now`, 70..90 % of
/// what remains: signers backdate notBefore (kube-controller-manager by 5 min, for clock
/// skew), so a short-lived certificate would be past its deadline when issued and renewed in a
/// loop (kubelet renews at once there).
pub fn rotation_deadline(not_before: i64, not_after: i64, now: i64) -> i64 {
    let f = random_fraction();
    let d = deadline_at(not_before, not_after, f);
    if d > now {
        d
    } else {
        deadline_at(now.min(not_after), not_after, f)
    }
}

fn deadline_at(not_before: i64, not_after: i64, fraction: f64) -> i64 {
    let total = (not_after - not_before).max(0) as f64;
    not_before + (total * (0.7 + 0.2 * fraction)) as i64
}

/// The pair in use, read by TLS at each handshake; `generation` counts replacements (the API
/// client closes connections made with an older one, as kubelet does after a rotation).
#[derive(Debug, Default)]
pub struct CertSlot {
    current: RwLock<Option<(Pair, Arc<CertifiedKey>)>>,
    generation: AtomicU64,
    wakers: std::sync::Mutex<std::collections::HashMap<u64, std::task::Waker>>,
    next_conn: AtomicU64,
}

impl CertSlot {
    pub fn new() -> Arc<CertSlot> {
        Arc::new(CertSlot::default())
    }

    pub fn set(&self, pair: Pair) -> Result<(), rustls::Error> {
        let ck = Arc::new(pair.certified()?);
        if let Ok(mut c) = self.current.write() {
            *c = Some((pair, ck));
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        // Wake every connection's reader so that those of the old pair close now.
        let wakers: Vec<_> = self
            .wakers
            .lock()
            .map(|mut w| w.drain().map(|(_, w)| w).collect())
            .unwrap_or_default();
        for w in wakers {
            w.wake();
        }
        Ok(())
    }

    pub fn pair(&self) -> Option<Pair> {
        self.current
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|(p, _)| p.clone()))
    }

    pub fn certified(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|(_, k)| k.clone()))
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub(crate) fn register(&self, id: u64, w: &std::task::Waker) {
        if let Ok(mut m) = self.wakers.lock() {
            m.insert(id, w.clone());
        }
    }

    pub(crate) fn forget(&self, id: u64) {
        if let Ok(mut m) = self.wakers.lock() {
            m.remove(&id);
        }
    }

    pub(crate) fn conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::SeqCst)
    }
}

impl rustls::client::ResolvesClientCert for CertSlot {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.certified()
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// The kubelet port's serving certificate: the CSR-issued one once there is one, until then
/// `fallback` (the self-signed or given pair).
#[derive(Debug)]
pub struct ServingResolver {
    pub slot: Arc<CertSlot>,
    pub fallback: Arc<CertifiedKey>,
}

impl rustls::server::ResolvesServerCert for ServingResolver {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.slot
                .certified()
                .unwrap_or_else(|| self.fallback.clone()),
        )
    }
}

/// kubelet's certificate file store: `<dir>/<prefix>-current.pem` → the newest pair.
#[derive(Debug, Clone)]
pub struct FileStore {
    pub dir: PathBuf,
    pub prefix: &'static str,
}

impl FileStore {
    pub fn client(dir: &Path) -> FileStore {
        FileStore {
            dir: dir.to_path_buf(),
            prefix: "kubelet-client",
        }
    }

    pub fn server(dir: &Path) -> FileStore {
        FileStore {
            dir: dir.to_path_buf(),
            prefix: "kubelet-server",
        }
    }

    pub fn current_path(&self) -> PathBuf {
        self.dir.join(format!("{}-current.pem", self.prefix))
    }

    /// The current pair, if there is one that parses.
    pub fn load(&self) -> Option<Pair> {
        let p = self.current_path();
        let pem = std::fs::read(&p).ok()?;
        match Pair::from_pem(&pem, &pem, &p) {
            Ok(pair) => Some(pair),
            Err(e) => {
                warn!("certificate store: {e}");
                None
            }
        }
    }

    /// Write cert + key (0600, created with that mode) and point `-current.pem` at them.
    pub fn store(&self, cert_pem: &str, key_pem: &str) -> Result<Pair, CertError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CertError::Write { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(werr(&self.dir))?;
        let stamp = jiff::Zoned::now()
            .with_time_zone(jiff::tz::TimeZone::UTC)
            .strftime("%Y-%m-%d-%H-%M-%S")
            .to_string();
        let name = format!("{}-{stamp}.pem", self.prefix);
        let file = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let data = format!("{}\n{}", cert_pem.trim_end(), key_pem);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(data.as_bytes()).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &file))
            .map_err(werr(&file))?;
        let pair = Pair::from_pem(data.as_bytes(), data.as_bytes(), &file)?;
        let link_tmp = self.dir.join(format!(".{}-current.tmp", self.prefix));
        let _ = std::fs::remove_file(&link_tmp);
        std::os::unix::fs::symlink(&name, &link_tmp)
            .and_then(|()| std::fs::rename(&link_tmp, self.current_path()))
            .map_err(werr(&self.current_path()))?;
        Ok(pair)
    }
}

/// What a CSR asks for.
#[derive(Debug, Clone)]
pub struct Request {
    pub signer: &'static str,
    pub usages: &'static [&'static str],
    pub node_name: String,
    /// Serving certificates: DNS names and IP addresses (strings rcgen tells apart).
    pub sans: Vec<String>,
    /// Bootstrap CSRs are named by a digest of what they ask (a retry finds the same one);
    /// rotations use generateName `csr-`.
    pub digest_name: bool,
}

impl Request {
    pub fn client(node_name: &str, digest_name: bool) -> Request {
        Request {
            signer: CLIENT_SIGNER,
            usages: &CLIENT_USAGES,
            node_name: node_name.to_string(),
            sans: vec![],
            digest_name,
        }
    }

    pub fn serving(node_name: &str, sans: Vec<String>) -> Request {
        Request {
            signer: SERVING_SIGNER,
            usages: &SERVING_USAGES,
            node_name: node_name.to_string(),
            sans,
            digest_name: false,
        }
    }
}

/// A new private key (ECDSA P-256) and the PEM CSR for it: subject `CN=system:node:<name>,
/// O=system:nodes`, the SANs of `req`. Returns (key PEM, CSR PEM).
pub fn make_csr(req: &Request) -> Result<(String, String), CertError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(req.sans.clone())?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "system:nodes");
    dn.push(
        rcgen::DnType::CommonName,
        format!("system:node:{}", req.node_name),
    );
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// Create the CSR and wait until it is issued (the signed certificate's PEM), denied or failed.
pub async fn request_certificate(
    client: &kube::Client,
    req: &Request,
    csr_pem: &str,
) -> Result<String, CertError> {
    use sha2::Digest;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let mut meta = ObjectMeta::default();
    if req.digest_name {
        let mut h = sha2::Sha256::new();
        h.update(csr_pem.as_bytes());
        h.update(req.signer.as_bytes());
        let d = h.finalize();
        let hex: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
        meta.name = Some(format!("node-csr-{hex}"));
    } else {
        meta.generate_name = Some("csr-".into());
    }
    let csr = CertificateSigningRequest {
        metadata: meta,
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem.as_bytes().to_vec()),
            signer_name: req.signer.to_string(),
            usages: Some(req.usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    let wanted = csr.metadata.name.clone().unwrap_or_default();
    let created = match api.create(&PostParams::default(), &csr).await {
        Ok(c) => c,
        // A retry of a bootstrap request: the same request, already there.
        Err(kube::Error::Api(s)) if s.code == 409 && req.digest_name => {
            api.get(&wanted).await.map_err(|source| CertError::Api {
                name: wanted.clone(),
                source,
            })?
        }
        Err(source) => {
            return Err(CertError::Api {
                name: wanted,
                source,
            })
        }
    };
    let name = created.metadata.name.clone().unwrap_or(wanted);
    info!(
        "certificate: requested {} for system:node:{} ({name})",
        req.signer, req.node_name
    );
    // kubelet's certificateWaitTimeout: then a new request (a pending one may never be approved).
    tokio::time::timeout(WAIT_TIMEOUT, wait_issued(&api, &name))
        .await
        .unwrap_or(Err(CertError::Timeout {
            name,
            secs: WAIT_TIMEOUT.as_secs(),
        }))
}

/// How long a CSR is waited for (kubelet: 15 min).
const WAIT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The outcome a CSR's status says, if it says one.
fn outcome(name: &str, csr: &CertificateSigningRequest) -> Option<Result<String, CertError>> {
    let st = csr.status.as_ref()?;
    for c in st.conditions.iter().flatten() {
        let (reason, message) = (
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default(),
        );
        match c.type_.as_str() {
            "Denied" => {
                return Some(Err(CertError::Denied {
                    name: name.into(),
                    reason,
                    message,
                }))
            }
            "Failed" => {
                return Some(Err(CertError::Failed {
                    name: name.into(),
                    reason,
                    message,
                }))
            }
            _ => {}
        }
    }
    let cert = st.certificate.as_ref().filter(|c| !c.0.is_empty())?;
    Some(Ok(String::from_utf8_lossy(&cert.0).into_owned()))
}

async fn wait_issued(
    api: &Api<CertificateSigningRequest>,
    name: &str,
) -> Result<String, CertError> {
    use futures_util::StreamExt;
    use kube::runtime::watcher;
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = std::pin::pin!(watcher::watcher(api.clone(), cfg));
    while let Some(ev) = stream.next().await {
        let objs = match ev {
            Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => vec![o],
            Ok(_) => continue,
            Err(e) => {
                warn!("certificate: watching {name}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for o in objs {
            if let Some(r) = outcome(name, &o) {
                return r;
            }
        }
    }
    Err(CertError::WatchEnded { name: name.into() })
}

/// Ask for a new pair and keep it in `store`.
pub async fn obtain(
    client: &kube::Client,
    req: &Request,
    store: &FileStore,
) -> Result<Pair, CertError> {
    let (key_pem, csr_pem) = make_csr(req)?;
    let cert_pem = request_certificate(client, req, &csr_pem).await?;
    store.store(&cert_pem, &key_pem)
}

/// Keep `slot` renewed before expiry: at each rotation deadline a new key and CSR, made with
/// `client` (the node's current credentials). When that fails and the certificate has expired
/// (the node was down past its end), `bootstrap` (the bootstrap credentials, if any) asks
/// instead, as a kubelet restarted on an expired certificate bootstraps again. Runs until
/// dropped.
pub async fn rotate(
    client: kube::Client,
    req: Request,
    store: FileStore,
    slot: Arc<CertSlot>,
    bootstrap: Option<kube::Client>,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        let wait = match slot.pair() {
            Some(p) => {
                let deadline = rotation_deadline(p.not_before, p.not_after, now());
                info!(
                    "certificate: {} ({}) expires at {}, rotating at {}",
                    store.prefix, p.common_name, p.not_after, deadline
                );
                (deadline - now()).max(0) as u64
            }
            None => 0,
        };
        tokio::time::sleep(Duration::from_secs(wait)).await;
        loop {
            let expired = slot.pair().is_some_and(|p| !p.valid_at(now()));
            let r = match (&bootstrap, expired) {
                (Some(b), true) => {
                    let req = Request {
                        digest_name: true,
                        ..req.clone()
                    };
                    obtain(b, &req, &store).await
                }
                _ => obtain(&client, &req, &store).await,
            };
            match r {
                Ok(p) => {
                    let what = if slot.pair().is_some() {
                        "rotated"
                    } else {
                        "issued"
                    };
                    info!(
                        "certificate: {} {what}, valid until {}",
                        store.prefix, p.not_after
                    );
                    if let Err(e) = slot.set(p) {
                        warn!("certificate: {e}");
                    }
                    delay = Duration::from_secs(1);
                    break;
                }
                Err(e) => {
                    warn!("certificate: renewing {}: {e}; retrying", store.prefix);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_and_failed_conditions_are_errors_in_kubelets_words() {
        let csr = |cond: serde_json::Value| -> CertificateSigningRequest {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "csr-1"},
                "spec": {"request": "", "signerName": CLIENT_SIGNER},
                "status": cond,
            }))
            .expect("csr")
        };
        let denied = csr(
            serde_json::json!({"conditions": [{"type": "Denied", "status": "True",
            "reason": "NotMine", "message": "no"}]}),
        );
        let e = outcome("csr-1", &denied)
            .expect("outcome")
            .expect_err("denied");
        assert_eq!(
            e.to_string(),
            "certificate signing request csr-1 is denied, reason: NotMine, message: no"
        );
        let failed = csr(
            serde_json::json!({"conditions": [{"type": "Failed", "status": "True",
            "reason": "SignerError", "message": "bad"}]}),
        );
        assert!(matches!(
            outcome("csr-1", &failed),
            Some(Err(CertError::Failed { .. }))
        ));
        // Approved but not yet issued: keep waiting.
        let approved = csr(serde_json::json!({"conditions": [{"type": "Approved",
            "status": "True"}]}));
        assert!(outcome("csr-1", &approved).is_none());
        let issued = csr(serde_json::json!({"certificate": "UEVN"}));
        assert_eq!(
            outcome("csr-1", &issued).expect("issued").expect("cert"),
            "PEM"
        );
    }

    #[test]
    fn deadline_is_between_70_and_90_percent() {
        assert_eq!(deadline_at(1000, 2000, 0.0), 1700);
        assert_eq!(deadline_at(1000, 2000, 0.999_999), 1899);
        for _ in 0..100 {
            let d = rotation_deadline(0, 100_000, 0);
            assert!((70_000..=90_000).contains(&d), "{d}");
            // Backdated by 300 s, 20 s to live: not at once, but within what remains.
            let d = rotation_deadline(1000 - 300, 1020, 1000);
            assert!((1014..=1018).contains(&d), "{d}");
        }
    }

    #[test]
    fn csr_names_the_node_and_holds_no_private_key() {
        use x509_parser::prelude::FromDer;
        let (key, csr) = make_csr(&Request::serving(
            "n1",
            vec!["n1".into(), "10.0.0.1".into()],
        ))
        .expect("csr");
        assert!(key.contains("PRIVATE KEY"));
        assert!(csr.contains("CERTIFICATE REQUEST") && !csr.contains("PRIVATE"));
        let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
            .expect("der");
        let (_, parsed) =
            x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
                .expect("parse");
        let subject = parsed.certification_request_info.subject.to_string();
        assert!(subject.contains("CN=system:node:n1"), "{subject}");
        assert!(subject.contains("O=system:nodes"), "{subject}");
    }

    #[test]
    fn store_writes_0600_and_switches_current() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let store = FileStore::client(dir.path());
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec![]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        let cert = params.self_signed(&key).expect("cert");
        let pair = store
            .store(&cert.pem(), &key.serialize_pem())
            .expect("store");
        assert_eq!(pair.common_name, "system:node:n1");
        let target = std::fs::canonicalize(store.current_path()).expect("link");
        let mode = std::fs::metadata(&target).expect("md").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(store.load().is_some());
    }
}
