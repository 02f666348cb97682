//! The node's API client switches to a renewed client certificate without a restart: after
//! `CertSlot::set`, the next request is made on a new connection presenting the new certificate
//! (the pooled connection of the old one is closed, as kubelet closes its connections after a
//! rotation). A TLS server that answers each request with the CN of the connection's client
//! certificate tells which one was used. No root needed.

use rktup_agent::kubelet::certificate::{CertSlot, Pair};
use rktup_agent::kubelet::credentials;
use std::convert::Infallible;
use std::sync::Arc;

struct Ca {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn ca() -> Ca {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "test-ca");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).expect("ca");
    Ca {
        pem: cert.pem(),
        issuer: rcgen::Issuer::new(p, key),
    }
}

/// (cert PEM, key PEM) signed by `ca`.
fn leaf(ca: &Ca, cn: &str, sans: Vec<String>, server: bool) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(sans).expect("params");
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.extended_key_usages = vec![if server {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = p.signed_by(&key, &ca.issuer).expect("leaf");
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn a_renewed_client_certificate_is_used_by_the_next_request() {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let ca = ca();
    let (scert, skey) = leaf(&ca, "server", vec!["127.0.0.1".into()], true);
    let (acert, akey) = leaf(&ca, "system:node:a", vec![], false);
    let (bcert, bkey) = leaf(&ca, "system:node:b", vec![], false);

    // The server: client certificates of the CA; answers with the client's CN.
    let cas = vec![CertificateDer::from_pem_slice(ca.pem.as_bytes()).expect("ca der")];
    let certs = vec![CertificateDer::from_pem_slice(scert.as_bytes()).expect("server der")];
    let key = PrivateKeyDer::from_pem_slice(skey.as_bytes()).expect("server key");
    let tls = rktup_agent::kubelet::server::tls_config(cas, certs, key, None).expect("tls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let conns = connections.clone();
    tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            conns.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let cn = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| rktup_agent::kubelet::certificate::cert_info(c).ok())
                    .map(|i| i.2)
                    .unwrap_or_else(|| "anonymous".into());
                let svc = hyper::service::service_fn(move |_req| {
                    let cn = cn.clone();
                    async move {
                        Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(cn),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    // The node's files: pair A current, a kubeconfig naming it (as the bootstrap writes one).
    let dir = tempfile::tempdir().expect("tmp");
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.pem).expect("ca");
    let pem = dir.path().join("kubelet-client-current.pem");
    std::fs::write(&pem, format!("{acert}{akey}")).expect("pair");
    let kc = dir.path().join("kubeconfig");
    let doc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": format!("https://127.0.0.1:{port}"),
                      "certificate-authority": ca_file}}],
        "users": [{"name": "u", "user": {"client-certificate": pem, "client-key": pem}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    });
    std::fs::write(&kc, doc.to_string()).expect("kubeconfig");

    let slot = CertSlot::new();
    let client = credentials::client(&kc, None, Some(&slot))
        .await
        .expect("client");
    let whoami = |client: kube::Client| async move {
        let req = http::Request::get("/whoami").body(Vec::new()).expect("req");
        client.request_text(req).await.expect("request")
    };
    assert_eq!(whoami(client.clone()).await, "system:node:a");
    assert_eq!(whoami(client.clone()).await, "system:node:a");
    let before = connections.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(before, 1, "one kept-alive connection for A's requests");

    // Renewal: B goes into the slot (as `certificate::rotate` does).
    let b = format!("{bcert}{bkey}");
    let pair = Pair::from_pem(b.as_bytes(), b.as_bytes(), &pem).expect("pair B");
    slot.set(pair).expect("set");
    assert_eq!(whoami(client.clone()).await, "system:node:b");
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "a new connection for B"
    );
}
