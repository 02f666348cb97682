//! The errors of building a configuration ([`TlsError`]) and of a refused peer ([`PeerError`]).

use std::path::PathBuf;

/// A client configuration that cannot be built; `what` names the input (a flag, a field, a
/// file).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to parse {what}: {source} (expected PEM `CERTIFICATE` blocks)")]
    Pem {
        what: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what} holds no CA certificate (expected one or more PEM `CERTIFICATE` blocks)")]
    NoCa { what: String },
    #[error("failed to use a CA certificate of {what}: {source}")]
    BadCa { what: String, source: rustls::Error },
    #[error("failed to read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} holds no client certificate (expected a PEM `CERTIFICATE` block)")]
    NoClientCertificate { what: String },
    #[error(
        "failed to parse the private key of {what}: {source} (expected a PEM `PRIVATE KEY`, \
         `EC PRIVATE KEY` or `RSA PRIVATE KEY` block)"
    )]
    Key {
        what: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("failed to use the client certificate and key of {what}: {source}")]
    ClientIdentity { what: String, source: rustls::Error },
    #[error("failed to build a certificate verifier for the CA certificates of {what}: {source}")]
    Verifier {
        what: String,
        source: rustls::client::VerifierBuilderError,
    },
    #[error("an expected server name needs verification, and this configuration skips it ({0})")]
    SubjectWithoutVerification(crate::Insecure),
    #[error("failed to select TLS protocol versions: {0}")]
    Versions(rustls::Error),
}

/// Why a handshake refused a server certificate that webpki accepted (carried to the caller
/// as `rustls::Error::Other`, so it can be downcast from the connection's error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The subject common name is not the expected one (Go's x509 wording).
    #[error("x509: certificate is for {found:?}, not {expected:?}")]
    WrongSubject { expected: String, found: String },
    /// The certificate did not parse as X.509 for its subject.
    #[error("x509: failed to read the certificate's subject: {0}")]
    Unparsable(String),
    /// A per-connection configuration used outside [`crate::expecting_common_name`].
    #[error(
        "no expected server name for this connection (a per-connection configuration is used \
         inside rktup_tls::expecting_common_name)"
    )]
    NoExpectedSubject,
}
