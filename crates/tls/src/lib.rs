//! rktup's TLS client configurations, built in one place: the control plane's calls to
//! kubelets, webhooks and aggregated API servers, the agent's API client and its HTTPS probes.
//!
//! - One crypto provider: *ring* ([`provider`]), the one every rustls user in the workspace
//!   already compiles (kube, hyper-rustls, the cloud SDKs' HTTPS clients).
//! - A server certificate is verified by webpki against the CA certificates given
//!   ([`ClientTls::verify_pem`], [`ClientTls::verify_der`], [`ClientTls::verify_system_roots`]):
//!   the chain, validity and the name dialled.
//! - Optionally beyond that, the certificate's subject common name
//!   ([`ClientTls::with_expected_common_name`]; per connection with
//!   [`ClientTls::with_expected_common_name_per_connection`] and [`expecting_common_name`]):
//!   the API server checks that a kubelet's serving certificate is `system:node:<the node>`.
//! - Optionally a client identity: certificate and key PEM ([`ClientTls::with_client_pem`]) or a
//!   resolver read at each handshake ([`ClientTls::with_client_resolver`], rotating certificates).
//! - ALPN protocols, and session resumption off where each connection must present the current
//!   client certificate or be verified afresh.
//! - Verification is skipped only through [`ClientTls::insecure`], with an [`Insecure`] that
//!   names the upstream place that skips it.

mod error;
pub mod kubelet_csr;
mod verify;

pub use error::{PeerError, TlsError};
pub use verify::expecting_common_name;

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The crypto provider of every rktup TLS configuration: the clients built here, the API
/// server's and the kubelet port's server configurations, the agent's certificate keys. *ring*.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Debian's (and Flatcar's) bundle of the system's trust roots, which Go's TLS client reads.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where upstream Kubernetes skips verifying a server certificate, and so rktup does too. Each
/// variant is one such place; there is no unnamed way to skip verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insecure {
    /// kubelet's `httpGet` probes over HTTPS (pkg/probe/http: `InsecureSkipVerify: true`): a
    /// pod's serving certificate is for its clients, not for the kubelet.
    HttpProbe,
    /// An APIService's `spec.insecureSkipTLSVerify: true` (kube-aggregator's proxy handler).
    ApiServiceSkipVerify,
    /// kube-aggregator's availability check of an APIService's backend (its
    /// AvailableConditionController dials with `Insecure: true`).
    ApiServiceAvailability,
    /// The API server's calls to kubelets without `--kubelet-certificate-authority`
    /// (kube-apiserver then does not verify kubelets' serving certificates).
    NoKubeletCa,
    /// kube-apiserver's proxy transport (`nodes/proxy` to a port other than the kubelet's,
    /// over https): `CreateProxyTransport` sets `InsecureSkipVerify: true`.
    ProxyTransport,
    /// A kubeconfig's `insecure-skip-tls-verify: true` (client-go's `Insecure`).
    KubeconfigSkipVerify,
    /// metrics-server's `--kubelet-insecure-tls` (its kubelet client skips verifying the
    /// kubelets' serving certificates). rktup runs no metrics-server: the test kit's
    /// metrics.k8s.io server, which scrapes kubelets as metrics-server does, uses it.
    MetricsServerKubeletInsecureTls,
}

impl Insecure {
    /// The upstream place this mode stands for, for messages and logs.
    pub fn upstream(self) -> &'static str {
        match self {
            Insecure::HttpProbe => "kubelet's HTTPS probes (InsecureSkipVerify)",
            Insecure::ApiServiceSkipVerify => "the APIService's spec.insecureSkipTLSVerify",
            Insecure::ApiServiceAvailability => "kube-aggregator's availability check",
            Insecure::NoKubeletCa => "kube-apiserver without --kubelet-certificate-authority",
            Insecure::ProxyTransport => "kube-apiserver's proxy transport",
            Insecure::KubeconfigSkipVerify => "the kubeconfig's insecure-skip-tls-verify",
            Insecure::MetricsServerKubeletInsecureTls => "metrics-server's --kubelet-insecure-tls",
        }
    }
}

impl std::fmt::Display for Insecure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.upstream())
    }
}

/// What the server's certificate must carry beyond a valid chain for the name dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExpectedSubject {
    /// This subject common name, on every connection.
    CommonName(String),
    /// The one [`expecting_common_name`] sets around the connection; none set is a refusal.
    PerConnection,
}

#[derive(Debug)]
enum ServerCheck {
    Verify {
        /// What the roots came from, for errors.
        what: String,
        roots: RootCertStore,
    },
    Insecure(Insecure),
}

enum Identity {
    None,
    Pem {
        what: String,
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    },
    Resolver(Arc<dyn ResolvesClientCert>),
}

/// A TLS client configuration to build: how the server is checked (verified against CA
/// certificates, or one named [`Insecure`] mode), the client's identity, ALPN and resumption.
///
/// ```
/// # fn main() -> Result<(), rktup_tls::TlsError> {
/// # let ca_pem = "";
/// let probe = rktup_tls::ClientTls::insecure(rktup_tls::Insecure::HttpProbe).build()?;
/// let webhook = rktup_tls::ClientTls::verify_pem("caBundle", ca_pem.as_bytes());
/// assert!(webhook.is_err(), "no certificate in an empty bundle");
/// # let _ = probe;
/// # Ok(())
/// # }
/// ```
pub struct ClientTls {
    server: ServerCheck,
    subject: Option<ExpectedSubject>,
    identity: Identity,
    alpn: Vec<Vec<u8>>,
    resumption: bool,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let identity = match &self.identity {
            Identity::None => "none",
            Identity::Pem { .. } => "certificate and key",
            Identity::Resolver(_) => "resolver",
        };
        f.debug_struct("ClientTls")
            .field("server", &self.server)
            .field("subject", &self.subject)
            .field("identity", &identity)
            .field("alpn", &self.alpn)
            .field("resumption", &self.resumption)
            .finish()
    }
}

impl ClientTls {
    fn new(server: ServerCheck) -> ClientTls {
        ClientTls {
            server,
            subject: None,
            identity: Identity::None,
            alpn: Vec::new(),
            resumption: true,
        }
    }

    /// Verifies servers against the CA certificates in `pem` (one or more `CERTIFICATE`
    /// blocks); `what` names where they come from in errors (`spec.caBundle`,
    /// `--kubelet-certificate-authority`...).
    pub fn verify_pem(what: &str, pem: &[u8]) -> Result<ClientTls, TlsError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Pem {
                what: what.to_string(),
                source,
            })?;
        ClientTls::verify_der(what, certs)
    }

    /// Verifies servers against the DER CA certificates `certs`.
    pub fn verify_der(
        what: &str,
        certs: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<ClientTls, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots.add(cert).map_err(|source| TlsError::BadCa {
                what: what.to_string(),
                source,
            })?;
        }
        if roots.is_empty() {
            return Err(TlsError::NoCa {
                what: what.to_string(),
            });
        }
        Ok(ClientTls::new(ServerCheck::Verify {
            what: what.to_string(),
            roots,
        }))
    }

    /// Verifies servers against the system's trust roots ([`SYSTEM_ROOTS`]), as Go's client
    /// does with no CA configured. Certificates of the bundle that webpki cannot use are
    /// skipped, as Go's `AppendCertsFromPEM` skips them.
    pub fn verify_system_roots() -> Result<ClientTls, TlsError> {
        ClientTls::verify_roots_file(Path::new(SYSTEM_ROOTS))
    }

    fn verify_roots_file(path: &Path) -> Result<ClientTls, TlsError> {
        let pem = std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut roots = RootCertStore::empty();
        let (_, _) = roots
            .add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok));
        let what = path.display().to_string();
        if roots.is_empty() {
            return Err(TlsError::NoCa { what });
        }
        Ok(ClientTls::new(ServerCheck::Verify { what, roots }))
    }

    /// Accepts any server certificate, for the upstream place `why` names (handshake
    /// signatures are still checked, so the peer holds the key of the certificate it sent).
    pub fn insecure(why: Insecure) -> ClientTls {
        ClientTls::new(ServerCheck::Insecure(why))
    }

    /// The configuration of [`ClientTls::insecure`] with nothing else: no client certificate,
    /// no ALPN, no session resumption (Go's clients, whose places these are, keep no session
    /// cache either). It cannot fail (the one thing building could refuse, the protocol
    /// versions, is fixed: *ring* supports rustls's defaults), so it is returned as is.
    pub fn insecure_config(why: Insecure) -> Arc<rustls::ClientConfig> {
        match ClientTls::insecure(why).without_resumption().build() {
            Ok(cfg) => cfg,
            Err(e) => unreachable!("an insecure configuration is always built: {e}"),
        }
    }

    /// The server certificate's subject common name must also be `common_name`.
    pub fn with_expected_common_name(self, common_name: impl Into<String>) -> ClientTls {
        self.with_subject(ExpectedSubject::CommonName(common_name.into()))
    }

    /// The server certificate's subject common name must also be the one
    /// [`expecting_common_name`] sets around each connection (one configuration for many
    /// peers: the API server's kubelet client, `system:node:<node>`). A connection made
    /// outside that scope is refused. Session resumption is off: a resumed session is not
    /// verified again, and one made with another peer's expected name must not carry over.
    pub fn with_expected_common_name_per_connection(self) -> ClientTls {
        let mut t = self.with_subject(ExpectedSubject::PerConnection);
        t.resumption = false;
        t
    }

    /// With an [`Insecure`] mode, [`ClientTls::build`] refuses: a name cannot be checked on
    /// a certificate that is not verified.
    fn with_subject(mut self, subject: ExpectedSubject) -> ClientTls {
        self.subject = Some(subject);
        self
    }

    /// Presents the certificate chain and private key in `cert_pem` and `key_pem` (they may be
    /// the same file's text); `what` names them in errors.
    pub fn with_client_pem(
        mut self,
        what: &str,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<ClientTls, TlsError> {
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Pem {
                what: what.to_string(),
                source,
            })?;
        if certs.is_empty() {
            return Err(TlsError::NoClientCertificate {
                what: what.to_string(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::Key {
            what: what.to_string(),
            source,
        })?;
        self.identity = Identity::Pem {
            what: what.to_string(),
            certs,
            key,
        };
        Ok(self)
    }

    /// Presents what `resolver` holds at each handshake (a rotating client certificate).
    pub fn with_client_resolver(mut self, resolver: Arc<dyn ResolvesClientCert>) -> ClientTls {
        self.identity = Identity::Resolver(resolver);
        self
    }

    /// Offers these ALPN protocols, most preferred first (e.g. `[b"h2", b"http/1.1"]`).
    pub fn with_alpn(mut self, protocols: &[&[u8]]) -> ClientTls {
        self.alpn = protocols.iter().map(|p| p.to_vec()).collect();
        self
    }

    /// Resumes no TLS session: every connection presents the identity current at its
    /// handshake (Go's client, kubelet's, resumes nothing either).
    pub fn without_resumption(mut self) -> ClientTls {
        self.resumption = false;
        self
    }

    /// The rustls configuration.
    pub fn build(self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Versions)?;
        let builder = match self.server {
            ServerCheck::Insecure(why) => {
                if self.subject.is_some() {
                    return Err(TlsError::SubjectWithoutVerification(why));
                }
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verify::ServerVerifier::insecure(
                        provider, why,
                    )))
            }
            ServerCheck::Verify { what, roots } => {
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .build()
                .map_err(|source| TlsError::Verifier {
                    what: what.clone(),
                    source,
                })?;
                match self.subject {
                    None => builder.with_webpki_verifier(webpki),
                    Some(subject) => {
                        builder
                            .dangerous()
                            .with_custom_certificate_verifier(Arc::new(
                                verify::ServerVerifier::webpki(provider, webpki, subject),
                            ))
                    }
                }
            }
        };
        let mut cfg = match self.identity {
            Identity::None => builder.with_no_client_auth(),
            Identity::Pem { what, certs, key } => builder
                .with_client_auth_cert(certs, key)
                .map_err(|source| TlsError::ClientIdentity { what, source })?,
            Identity::Resolver(r) => builder.with_client_cert_resolver(r),
        };
        cfg.alpn_protocols = self.alpn;
        if !self.resumption {
            cfg.resumption = rustls::client::Resumption::disabled();
        }
        Ok(Arc::new(cfg))
    }
}

/// The accept-any verifier as a type, for this crate's tests that build their own rustls
/// configurations. Everything else uses [`ClientTls::insecure`], which names why.
#[cfg(test)]
pub(crate) mod danger {
    use super::verify::ServerVerifier;
    use super::Insecure;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::sync::Arc;

    /// Accepts any server certificate; handshake signatures are checked with the provider's
    /// algorithms. The API server without `--kubelet-certificate-authority` behaves so.
    #[derive(Debug)]
    pub struct NoVerify(pub Arc<CryptoProvider>);

    impl NoVerify {
        fn inner(&self) -> ServerVerifier {
            ServerVerifier::insecure(self.0.clone(), Insecure::NoKubeletCa)
        }
    }

    impl ServerCertVerifier for NoVerify {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            self.inner()
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner().verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner().verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner().supported_verify_schemes()
        }
    }
}

#[cfg(test)]
mod tests;
