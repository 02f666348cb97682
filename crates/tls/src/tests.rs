//! Handshakes against a real rustls server on 127.0.0.1 with certificates from a test CA.

use super::*;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Ca {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).expect("CA");
    Ca {
        pem: cert.pem(),
        issuer: rcgen::Issuer::new(p, key),
    }
}

/// (cert PEM, key PEM) for `cn`, valid for 127.0.0.1, signed by `ca`.
fn leaf(ca: &Ca, cn: &str, server: bool) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.extended_key_usages = vec![if server {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = p.signed_by(&key, &ca.issuer).expect("leaf");
    (cert.pem(), key.serialize_pem())
}

/// What the test server saw of a client: its certificate's presence and the ALPN protocol.
#[derive(Debug, Default, Clone, PartialEq)]
struct Seen {
    client_cert: bool,
    alpn: Option<Vec<u8>>,
}

/// A TLS server presenting (`cert`, `key`); with `client_ca`, it requires a client certificate
/// from that CA; with `alpn`, it speaks those protocols. Each connection is answered "ok".
async fn server(
    cert: &str,
    key: &str,
    client_ca: Option<&str>,
    alpn: &[&[u8]],
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.expect("CA")).expect("root");
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(certs, key).expect("server");
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (_, conn) = tls.get_ref();
                let _ = tx.send(Seen {
                    client_cert: conn.peer_certificates().is_some(),
                    alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                });
                let _ = tls.write_all(b"ok").await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, rx)
}

/// Connects to `addr` as `name` with `cfg` and reads the answer.
async fn call(
    cfg: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> Result<String, std::io::Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(cfg.clone())
        .connect(name, tcp)
        .await?;
    let mut out = String::new();
    tls.read_to_string(&mut out).await?;
    Ok(out)
}

/// The rustls error inside a failed connection's io::Error.
fn rustls_error(e: &std::io::Error) -> rustls::Error {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .cloned()
        .unwrap_or_else(|| panic!("not a rustls error: {e}"))
}

#[tokio::test]
async fn a_certificate_from_the_ca_is_verified() {
    let ca = ca("cluster-ca");
    let (cert, key) = leaf(&ca, "system:node:n1", true);
    let (addr, _) = server(&cert, &key, None, &[]).await;
    let cfg = ClientTls::verify_pem("the cluster CA", ca.pem.as_bytes())
        .expect("CA")
        .build()
        .expect("config");
    assert_eq!(call(&cfg, addr, "127.0.0.1").await.expect("verified"), "ok");
    // With the expected subject, fixed or per connection.
    let fixed = ClientTls::verify_pem("the cluster CA", ca.pem.as_bytes())
        .expect("CA")
        .with_expected_common_name("system:node:n1")
        .build()
        .expect("config");
    assert_eq!(call(&fixed, addr, "127.0.0.1").await.expect("fixed"), "ok");
    let per = ClientTls::verify_pem("the cluster CA", ca.pem.as_bytes())
        .expect("CA")
        .with_expected_common_name_per_connection()
        .build()
        .expect("config");
    let out = expecting_common_name("system:node:n1", call(&per, addr, "127.0.0.1")).await;
    assert_eq!(out.expect("per connection"), "ok");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let (ours, theirs) = (ca("cluster-ca"), ca("foreign-ca"));
    let (cert, key) = leaf(&theirs, "system:node:n1", true);
    let (addr, _) = server(&cert, &key, None, &[]).await;
    let cfg = ClientTls::verify_pem("the cluster CA", ours.pem.as_bytes())
        .expect("CA")
        .build()
        .expect("config");
    let err = call(&cfg, addr, "127.0.0.1").await.expect_err("foreign CA");
    assert_eq!(
        rustls_error(&err),
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        "{err}"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let ca = ca("cluster-ca");
    let (cert, key) = leaf(&ca, "system:node:n1", true);
    let (addr, _) = server(&cert, &key, None, &[]).await;
    let cfg = ClientTls::verify_pem("the cluster CA", ca.pem.as_bytes())
        .expect("CA")
        .build()
        .expect("config");
    let err = call(&cfg, addr, "kubelet.invalid").await.expect_err("name");
    assert!(
        matches!(
            rustls_error(&err),
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. }
                    | rustls::CertificateError::NotValidForName
            )
        ),
        "{err}"
    );
}

#[tokio::test]
async fn another_nodes_certificate_is_refused_with_both_names() {
    let ca = ca("cluster-ca");
    let (cert, key) = leaf(&ca, "system:node:n1", true);
    let (addr, _) = server(&cert, &key, None, &[]).await;
    let per = ClientTls::verify_pem("the cluster CA", ca.pem.as_bytes())
        .expect("CA")
        .with_expected_common_name_per_connection()
        .build()
        .expect("config");
    // First a call for n1 (a session the server would resume), then one for n2 at the same
    // address: a node that took n1's address must not pass for n2, resumed or not.
    let ok = expecting_common_name("system:node:n1", call(&per, addr, "127.0.0.1")).await;
    assert_eq!(ok.expect("n1"), "ok");
    let err = expecting_common_name("system:node:n2", call(&per, addr, "127.0.0.1"))
        .await
        .expect_err("n1's certificate for n2");
    assert!(
        err.to_string()
            .contains(r#"x509: certificate is for "system:node:n1", not "system:node:n2""#),
        "{err}"
    );
    let rustls::Error::Other(other) = rustls_error(&err) else {
        panic!("{err}");
    };
    assert_eq!(
        other.0.downcast_ref::<PeerError>(),
        Some(&PeerError::WrongSubject {
            expected: "system:node:n2".into(),
            found: "system:node:n1".into()
        })
    );
    // A fixed expected name refuses the same way.
    let fixed = ClientTls::verify_pem("the cluster CA", ca.pem.as_bytes())
        .expect("CA")
        .with_expected_common_name("system:node:n2")
        .build()
        .expect("config");
    let err = call(&fixed, addr, "127.0.0.1").await.expect_err("fixed n2");
    assert!(err.to_string().contains("certificate is for"), "{err}");
    // A per-connection configuration used without a scope knows no name: refused.
    let err = call(&per, addr, "127.0.0.1").await.expect_err("no scope");
    assert!(err.to_string().contains("no expected server name"), "{err}");
}

#[tokio::test]
async fn insecure_accepts_any_certificate() {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["pod.invalid".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let (addr, _) = server(&cert.pem(), &key.serialize_pem(), None, &[]).await;
    let cfg = ClientTls::insecure(Insecure::HttpProbe)
        .build()
        .expect("config");
    assert_eq!(call(&cfg, addr, "127.0.0.1").await.expect("insecure"), "ok");
    // The test kits' type does the same.
    let kit = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(danger::NoVerify(provider())))
        .with_no_client_auth();
    assert_eq!(
        call(&Arc::new(kit), addr, "127.0.0.1").await.expect("kit"),
        "ok"
    );
}

#[tokio::test]
async fn client_identity_and_alpn_reach_the_server() {
    let ca = ca("cluster-ca");
    let (cert, key) = leaf(&ca, "kubelet.test", true);
    let (client_cert, client_key) = leaf(&ca, "kube-apiserver-kubelet-client", false);
    let (addr, mut seen) = server(&cert, &key, Some(&ca.pem), &[b"h2", b"http/1.1"]).await;
    let cfg = ClientTls::verify_pem("the cluster CA", ca.pem.as_bytes())
        .expect("CA")
        .with_client_pem(
            "the kubelet client pair",
            client_cert.as_bytes(),
            client_key.as_bytes(),
        )
        .expect("pair")
        .with_alpn(&[b"http/1.1"])
        .build()
        .expect("config");
    assert_eq!(call(&cfg, addr, "127.0.0.1").await.expect("mutual"), "ok");
    assert_eq!(
        seen.recv().await,
        Some(Seen {
            client_cert: true,
            alpn: Some(b"http/1.1".to_vec())
        })
    );
    // Without the identity the server refuses the handshake.
    let anon = ClientTls::verify_pem("the cluster CA", ca.pem.as_bytes())
        .expect("CA")
        .build()
        .expect("config");
    assert!(call(&anon, addr, "127.0.0.1").await.is_err());
}

#[test]
fn bad_inputs_are_named_in_errors() {
    let e = ClientTls::verify_pem("spec.caBundle", b"").expect_err("empty");
    assert_eq!(
        e.to_string(),
        "spec.caBundle holds no CA certificate (expected one or more PEM `CERTIFICATE` blocks)"
    );
    let e = ClientTls::verify_pem(
        "--kubelet-certificate-authority",
        b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    )
    .expect_err("not base64");
    assert!(
        e.to_string()
            .starts_with("failed to parse --kubelet-certificate-authority: "),
        "{e}"
    );
    let ca = ca("cluster-ca");
    let (cert, _) = leaf(&ca, "c", false);
    let e = ClientTls::insecure(Insecure::ProxyTransport)
        .with_client_pem("client.pem", cert.as_bytes(), cert.as_bytes())
        .expect_err("no key");
    assert!(
        e.to_string()
            .starts_with("failed to parse the private key of client.pem: "),
        "{e}"
    );
    let e = ClientTls::insecure(Insecure::NoKubeletCa)
        .with_expected_common_name_per_connection()
        .build()
        .expect_err("a name without verification");
    assert_eq!(
        e.to_string(),
        "an expected server name needs verification, and this configuration skips it \
         (kube-apiserver without --kubelet-certificate-authority)"
    );
    let e = ClientTls::verify_roots_file(Path::new("/nonexistent/ca.crt")).expect_err("file");
    assert!(
        e.to_string()
            .starts_with("failed to read /nonexistent/ca.crt: "),
        "{e}"
    );
}
