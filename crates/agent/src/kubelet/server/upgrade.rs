//! The HTTP side of the kubelet port's streaming endpoints (exec, attach, port-forward): which
//! upgrade a request asks for, the look-ups before answering, and the `101 Switching
//! Protocols` answers.

use super::context::{text, Body};
use super::spdy;
use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tracing::warn;

/// The upgrade a streaming request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// `Upgrade: SPDY/3.1`, with the `X-Stream-Protocol-Version`s offered (best first).
    Spdy { protocols: Vec<String> },
    /// `Upgrade: websocket`, with its key and the subprotocols offered.
    WebSocket { key: String, protocols: Vec<String> },
}

/// Every value of header `name`, comma-separated lists split, in order.
pub fn header_values<B>(req: &Request<B>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

impl Upgrade {
    /// The upgrade `req` asks for, or None (not an upgrade, or to something else).
    pub fn of<B>(req: &Request<B>) -> Option<Upgrade> {
        let upgrade = header_values(req, "upgrade");
        let is = |p: &str| upgrade.iter().any(|u| u.eq_ignore_ascii_case(p));
        if is("websocket") {
            let key = header_values(req, "sec-websocket-key").into_iter().next()?;
            return Some(Upgrade::WebSocket {
                key,
                protocols: header_values(req, "sec-websocket-protocol"),
            });
        }
        if is(spdy::UPGRADE) {
            return Some(Upgrade::Spdy {
                protocols: header_values(req, "x-stream-protocol-version"),
            });
        }
        None
    }
}

/// Runs `f` (the runtime's blocking look-ups of the pod a request names) on the blocking pool:
/// its value, or the response refusing the request.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, (StatusCode, String)> + Send + 'static,
) -> Result<T, Response<Body>> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err((status, m))) => Err(text(status, m)),
        Err(e) => Err(text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// The connection once the `101` has gone out, or None (logged) when the upgrade failed.
pub async fn upgraded(
    on_upgrade: hyper::upgrade::OnUpgrade,
    what: &str,
) -> Option<TokioIo<Upgraded>> {
    match on_upgrade.await {
        Ok(up) => Some(TokioIo::new(up)),
        Err(e) => {
            warn!("kubelet server: {what} upgrade: {e}");
            None
        }
    }
}

/// `101` to a WebSocket with `protocol` (empty: none named).
pub fn websocket_accept(key: &str, protocol: &str) -> Response<Body> {
    let mut resp = switching();
    let h = resp.headers_mut();
    h.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("websocket"),
    );
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    if let Ok(v) = http::HeaderValue::from_str(&accept) {
        h.insert(http::header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Ok(v) = http::HeaderValue::from_str(protocol) {
        if !protocol.is_empty() {
            h.insert(http::header::SEC_WEBSOCKET_PROTOCOL, v);
        }
    }
    resp
}

/// `101` to SPDY/3.1 with the negotiated `X-Stream-Protocol-Version` (empty: the client offered
/// none, which upstream accepts as the protocol's first version).
pub fn spdy_accept(protocol: &str) -> Response<Body> {
    let mut resp = switching();
    let h = resp.headers_mut();
    h.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static(spdy::UPGRADE),
    );
    if let Ok(v) = http::HeaderValue::from_str(protocol) {
        if !protocol.is_empty() {
            h.insert("x-stream-protocol-version", v);
        }
    }
    resp
}

fn switching() -> Response<Body> {
    let mut resp = text(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let h = resp.headers_mut();
    h.remove(http::header::CONTENT_TYPE);
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_are_told_apart() {
        let req = Request::get("/")
            .header("Connection", "Upgrade")
            .header("Upgrade", "SPDY/3.1")
            .header("X-Stream-Protocol-Version", "v4.channel.k8s.io")
            .header(
                "X-Stream-Protocol-Version",
                "v3.channel.k8s.io, channel.k8s.io",
            )
            .body(())
            .unwrap();
        assert_eq!(
            Upgrade::of(&req),
            Some(Upgrade::Spdy {
                protocols: vec![
                    "v4.channel.k8s.io".into(),
                    "v3.channel.k8s.io".into(),
                    "channel.k8s.io".into()
                ]
            })
        );
        let req = Request::get("/")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Key", "k")
            .header("Sec-WebSocket-Protocol", "SPDY/3.1+portforward.k8s.io")
            .body(())
            .unwrap();
        assert_eq!(
            Upgrade::of(&req),
            Some(Upgrade::WebSocket {
                key: "k".into(),
                protocols: vec!["SPDY/3.1+portforward.k8s.io".into()]
            })
        );
        let plain = Request::get("/").body(()).unwrap();
        assert_eq!(Upgrade::of(&plain), None);
    }
}
