//! httpGet probes: GET to the pod IP (or `host`) over HTTP, or HTTPS without certificate
//! verification (kubelet's InsecureSkipVerify); same-host redirects are followed; 200–399 is
//! success.

use super::tcp::{dial, join_host_port};
use super::{Outcome, MAX_OUTPUT, USER_AGENT};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// The parts of a probe URL kubelet builds (scheme://host:port/path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Path and query as given ("" is "/").
    pub path: String,
}

impl Url {
    fn request_target(&self) -> String {
        if self.path.starts_with('/') {
            self.path.clone()
        } else {
            format!("/{}", self.path)
        }
    }

    fn authority(&self) -> String {
        join_host_port(&self.host, self.port)
    }

    pub fn to_url_string(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme,
            self.authority(),
            self.request_target()
        )
    }

    /// Where a `Location` header points, relative to this URL.
    pub fn join(&self, location: &str) -> Option<Url> {
        if let Some((scheme, rest)) = location.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            let default = match scheme.as_str() {
                "http" => 80,
                "https" => 443,
                _ => return None,
            };
            let (auth, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let (host, port) = if let Some(r) = auth.strip_prefix('[') {
                let (h, p) = r.split_once(']')?;
                (h.to_string(), p.strip_prefix(':'))
            } else {
                match auth.rsplit_once(':') {
                    Some((h, p)) => (h.to_string(), Some(p)),
                    None => (auth.to_string(), None),
                }
            };
            let port = match port {
                Some(p) => p.parse().ok()?,
                None => default,
            };
            return Some(Url {
                scheme,
                host,
                port,
                path: path.to_string(),
            });
        }
        let path = if location.starts_with('/') {
            location.to_string()
        } else {
            let base = self.request_target();
            let base = base.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map(|i| i + 1).unwrap_or(0)];
            format!("{dir}{location}")
        };
        Some(Url {
            path,
            ..self.clone()
        })
    }
}

/// GET `url` (kubelet's DoHTTPProbe): 200–399 is success; redirects are followed on the same
/// host (at most 10), a redirect to another host ends in a warning (success).
pub async fn http_probe(url: Url, headers: &[(String, String)], timeout: Duration) -> Outcome {
    let first = url.to_url_string();
    let run = async {
        let mut url = url.clone();
        for hop in 0..=10 {
            let (code, location, body) = match http_get(&url, headers).await {
                Ok(r) => r,
                Err(e) => return Outcome::Failure(format!("Get {:?}: {e}", url.to_url_string())),
            };
            if (300..400).contains(&code) {
                if let Some(next) = location.as_deref().and_then(|l| url.join(l)) {
                    if next.host != url.host {
                        return Outcome::Warning(format!(
                            "Probe terminated redirects, Response body: {body}"
                        ));
                    }
                    if hop == 10 {
                        return Outcome::Failure(format!(
                            "Get {:?}: stopped after 10 redirects",
                            next.to_url_string()
                        ));
                    }
                    url = next;
                    continue;
                }
            }
            return if (200..400).contains(&code) {
                Outcome::Success
            } else {
                Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
            };
        }
        Outcome::Failure(format!("Get {first:?}: stopped after 10 redirects"))
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(o) => o,
        Err(_) => Outcome::Failure(format!(
            "Get {first:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

/// One GET: (status, Location, body up to 10 KiB).
pub(crate) async fn http_get(
    url: &Url,
    headers: &[(String, String)],
) -> Result<(u16, Option<String>, String), String> {
    let tcp = dial(&url.host, url.port).await?;
    if url.scheme == "https" {
        let tls = tokio_rustls::TlsConnector::from(insecure_tls());
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| format!("invalid host {:?}: {e}", url.host))?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        exchange(stream, url, headers).await
    } else {
        exchange(tcp, url, headers).await
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    url: &Url,
    headers: &[(String, String)],
) -> Result<(u16, Option<String>, String), String> {
    let (mut send, conn) = hyper::client::conn::http1::Builder::new()
        // Header names as Go's client writes them (User-Agent, not user-agent).
        .title_case_headers(true)
        .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(http::Method::GET)
        .uri(url.request_target());
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has("host") {
        // As Go's client sends it for kubelet's URLs: always with the port.
        req = req.header(http::header::HOST, url.authority());
    }
    if !has("user-agent") {
        req = req.header(http::header::USER_AGENT, USER_AGENT);
    }
    if !has("accept") {
        req = req.header(http::header::ACCEPT, "*/*");
    }
    req = req.header(http::header::CONNECTION, "close");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(http_body_util::Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = resp.into_body();
    let mut data = Vec::new();
    while data.len() < MAX_OUTPUT {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    let room = MAX_OUTPUT - data.len();
                    data.extend_from_slice(&d[..d.len().min(room)]);
                }
            }
            _ => break,
        }
    }
    conn.abort();
    Ok((code, location, String::from_utf8_lossy(&data).into_owned()))
}

/// HTTPS probes do not verify the server's certificate: that is upstream's behaviour
/// (pkg/probe/http sets `InsecureSkipVerify: true`), since a pod's serving certificate is made
/// for its clients, not for the kubelet; `rktup_tls::Insecure::HttpProbe` names it.
fn insecure_tls() -> Arc<rustls::ClientConfig> {
    static CFG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CFG.get_or_init(|| rktup_tls::ClientTls::insecure_config(rktup_tls::Insecure::HttpProbe))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::super::tcp::tcp_probe;
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn redirect_targets() {
        let u = Url {
            scheme: "http".into(),
            host: "10.0.0.5".into(),
            port: 8080,
            path: "a/b?x=1".into(),
        };
        assert_eq!(u.to_url_string(), "http://10.0.0.5:8080/a/b?x=1");
        assert_eq!(u.join("/c").map(|u| u.path), Some("/c".into()));
        assert_eq!(u.join("d").map(|u| u.path), Some("/a/d".into()));
        let abs = u.join("https://[fd00::1]/x").expect("absolute");
        assert_eq!(
            (abs.scheme.as_str(), abs.host.as_str(), abs.port),
            ("https", "fd00::1", 443)
        );
        assert_eq!(abs.to_url_string(), "https://[fd00::1]:443/x");
        assert_eq!(u.join("ftp://x/"), None);
    }

    #[tokio::test]
    async fn tcp_and_http_against_a_local_server() {
        use tokio::io::AsyncWriteExt;
        let (l, port) = super::super::local_listener().await;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                    let resp = match path.as_str() {
                        "/ok" => {
                            assert!(req.contains("User-Agent: kube-probe/"), "{req}");
                            assert!(req.contains("X-Probe: yes"), "{req}");
                            assert!(req.contains("Host: 127.0.0.1:"), "{req}");
                            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_string()
                        }
                        "/moved" => "HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n".into(),
                        "/away" => "HTTP/1.1 301 Moved\r\nLocation: http://elsewhere.invalid/\r\nContent-Length: 4\r\n\r\nbye!".into(),
                        _ => "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n".into(),
                    };
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        let t = Duration::from_secs(2);
        assert_eq!(tcp_probe("127.0.0.1", port, t).await, Outcome::Success);
        let url = |path: &str| Url {
            scheme: "http".into(),
            host: "127.0.0.1".into(),
            port,
            path: path.into(),
        };
        let h = vec![("x-probe".to_string(), "yes".to_string())];
        assert_eq!(http_probe(url("/ok"), &h, t).await, Outcome::Success);
        assert_eq!(http_probe(url("/moved"), &h, t).await, Outcome::Success);
        assert_eq!(
            http_probe(url("/away"), &h, t).await,
            Outcome::Warning("Probe terminated redirects, Response body: bye!".into())
        );
        assert_eq!(
            http_probe(url("/bad"), &h, t).await,
            Outcome::Failure("HTTP probe failed with statuscode: 503".into())
        );
        // Nothing listens on the port any more once the listener is gone: use a fresh one.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        assert_eq!(
            tcp_probe("127.0.0.1", closed, t).await,
            Outcome::Failure(format!(
                "dial tcp 127.0.0.1:{closed}: connect: connection refused"
            ))
        );
        match http_probe(url("/x").clone_with_port(closed), &[], t).await {
            Outcome::Failure(m) => assert_eq!(
                m,
                format!(
                    "Get \"http://127.0.0.1:{closed}/x\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
                )
            ),
            o => panic!("{o:?}"),
        }
    }

    #[tokio::test]
    async fn https_without_certificate_verification() {
        use tokio::io::AsyncWriteExt;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["probe.invalid".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let (l, port) = super::super::local_listener().await;
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(s).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                        .await;
                    let _ = s.shutdown().await;
                });
            }
        });
        let url = Url {
            scheme: "https".into(),
            host: "127.0.0.1".into(),
            port,
            path: "/healthz".into(),
        };
        assert_eq!(
            http_probe(url, &[], Duration::from_secs(5)).await,
            Outcome::Success
        );
    }

    impl Url {
        fn clone_with_port(&self, port: u16) -> Url {
            Url {
                port,
                ..self.clone()
            }
        }
    }
}
