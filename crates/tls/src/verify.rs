//! The one server-certificate verifier: webpki plus an expected subject common name, or a
//! named insecure mode. Handshake signatures are checked in both.

use crate::error::PeerError;
use crate::{ExpectedSubject, Insecure};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    /// The subject common name the connection being made must present (the verifier sees only
    /// the name dialled: for a kubelet, its address).
    static EXPECTED_CN: String;
}

/// Runs `connect` (a future that makes TLS connections) expecting the server certificate's
/// subject common name to be `common_name`, for configurations built with
/// [`crate::ClientTls::with_expected_common_name_per_connection`].
pub async fn expecting_common_name<F: Future>(
    common_name: impl Into<String>,
    connect: F,
) -> F::Output {
    EXPECTED_CN.scope(common_name.into(), connect).await
}

#[derive(Debug)]
enum Check {
    WebPki {
        inner: Arc<WebPkiServerVerifier>,
        subject: ExpectedSubject,
    },
    Insecure(#[expect(dead_code, reason = "named in the configuration's Debug output")] Insecure),
}

#[derive(Debug)]
pub(crate) struct ServerVerifier {
    provider: Arc<CryptoProvider>,
    check: Check,
}

impl ServerVerifier {
    pub(crate) fn insecure(provider: Arc<CryptoProvider>, why: Insecure) -> ServerVerifier {
        ServerVerifier {
            provider,
            check: Check::Insecure(why),
        }
    }

    pub(crate) fn webpki(
        provider: Arc<CryptoProvider>,
        inner: Arc<WebPkiServerVerifier>,
        subject: ExpectedSubject,
    ) -> ServerVerifier {
        ServerVerifier {
            provider,
            check: Check::WebPki { inner, subject },
        }
    }
}

/// The subject common name of `der` ("" when it has none).
fn common_name(der: &[u8]) -> Result<String, PeerError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PeerError::Unparsable(e.to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default();
    Ok(cn.to_string())
}

fn refuse(e: PeerError) -> rustls::Error {
    rustls::Error::Other(rustls::OtherError(Arc::new(e)))
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (inner, subject) = match &self.check {
            Check::Insecure(_) => return Ok(ServerCertVerified::assertion()),
            Check::WebPki { inner, subject } => (inner, subject),
        };
        let verified =
            inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        let expected = match subject {
            ExpectedSubject::CommonName(cn) => cn.clone(),
            ExpectedSubject::PerConnection => EXPECTED_CN
                .try_with(String::clone)
                .map_err(|_| refuse(PeerError::NoExpectedSubject))?,
        };
        let found = common_name(end_entity).map_err(refuse)?;
        if found != expected {
            return Err(refuse(PeerError::WrongSubject { expected, found }));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
