//! `nodes/NAME/proxy/PATH` (also `nodes/NAME:PORT/proxy/...` and
//! `nodes/SCHEME:NAME:PORT/proxy/...`), as kube-apiserver's node ProxyREST:
//! authorized as `nodes/proxy` with the verb of the method, then passed on to
//! the node — on its kubelet port (no port, or the kubelet's) over TLS as the
//! API server's kubelet client, whose serving certificate is verified as for
//! logs and exec (`kubelet.rs`); on any other port without credentials (plain
//! HTTP, or HTTPS unverified when asked for, as upstream's proxy transport).
//! Method, path, query, body and headers (less credentials and hop-by-hop
//! ones) go through; the answer comes back as the node gave it, streamed.
//! Upgrades (WebSocket) through nodes/proxy are not passed on.

use crate::api::error::{ApiError, ApiResult};
use crate::api::kubelet::{host_port, node_address, send_to_node};
use crate::api::request::{read_body, Call, Req};
use crate::api::response::Body;
use crate::api::routes::{Action, Target};
use crate::api::server::ApiServer;
use http::{HeaderName, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

/// Headers never passed on: hop-by-hop ones (RFC 9110), the client's credentials (the
/// API server authenticated it; the node gets the API server's own), and impersonation.
fn passed_on(h: &HeaderName) -> bool {
    let n = h.as_str();
    !matches!(
        n,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "authorization"
            | "content-length"
    ) && !n.starts_with("impersonate-")
}

/// Upstream's `SplitSchemeNamePort`: `name`, `name:port` or `scheme:name:port` (scheme
/// empty, `http` or `https`); `None` when malformed.
fn split_scheme_name_port(id: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => return None,
    };
    if name.is_empty() || !matches!(scheme, "" | "http" | "https") {
        return None;
    }
    Some((scheme, name, port))
}

impl ApiServer {
    /// `nodes/ID/proxy/...`: `req` is the client's request, its body unread.
    pub(crate) async fn node_proxy(
        &self,
        r: &Req,
        t: &Target<'_>,
        action: Action,
        req: Request<Incoming>,
    ) -> ApiResult<Response<Body>> {
        let stored = split_scheme_name_port(t.name)
            .and_then(|(_, name, _)| self.core.get_stored(t.rd, None, name));
        let c = Call {
            r,
            t,
            action,
            existing: stored.as_ref().map(|s| &*s.object),
            body: &[],
        };
        c.authorize(None)?;
        let (scheme, name, port_req) = split_scheme_name_port(t.name)
            .ok_or_else(|| ApiError::bad_request(format!("invalid node request {:?}", t.name)))?;
        let node = stored.ok_or_else(|| ApiError::not_found(t.rd, name))?;
        let (ip, kubelet_port) = node_address(&node.object)?;
        // The kubelet (its port, its credentials) unless another port is asked for.
        let (tls, port) = if port_req.is_empty() || port_req == kubelet_port.to_string() {
            (Some(self.kubelet_tls.clone()), kubelet_port)
        } else {
            let port = port_req
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| ApiError::bad_request(format!("invalid port {port_req:?}")))?;
            let tls = (scheme == "https").then(crate::api::kubelet::insecure_no_client_auth);
            (tls, port)
        };

        // What follows `/proxy` in the client's path (upstream joins it to the node's URL,
        // keeping a trailing slash), then the query as sent.
        let full = req.uri().path().to_string();
        let marker = format!("/nodes/{}/proxy", t.name);
        let rest = full
            .find(&marker)
            .map(|i| &full[i + marker.len()..])
            .unwrap_or("");
        let mut path = if rest.starts_with('/') {
            rest.to_string()
        } else {
            format!("/{rest}")
        };
        if let Some(q) = req.uri().query() {
            path = format!("{path}?{q}");
        }
        let method = req.method().clone();
        let headers = req.headers().clone();
        let body = read_body(req).await?;
        let mut out = Request::builder()
            .method(method)
            .uri(&path)
            .body(Full::new(body))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        for (k, v) in headers.iter().filter(|(k, _)| passed_on(k)) {
            out.headers_mut().append(k.clone(), v.clone());
        }
        let authority = host_port(&ip, port);
        if let Ok(h) = http::HeaderValue::from_str(&authority) {
            out.headers_mut().insert(http::header::HOST, h);
        }
        let node_name = node
            .object
            .pointer("/metadata/name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or(name)
            .to_string();
        let upstream = send_to_node(tls.as_ref(), &node_name, &ip, port, out)
            .await
            .map_err(|e| {
                // Upstream's proxy transport: the node could not be reached.
                ApiError::new(
                    503,
                    "ServiceUnavailable",
                    format!("error trying to reach service: {e}"),
                )
            })?;
        let (parts, incoming) = upstream.into_parts();
        let mut resp = Response::new(incoming.map_err(std::io::Error::other).boxed());
        *resp.status_mut() = parts.status;
        for (k, v) in parts
            .headers
            .iter()
            .filter(|(k, _)| passed_on(k) || *k == http::header::CONTENT_LENGTH)
        {
            resp.headers_mut().append(k.clone(), v.clone());
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::split_scheme_name_port as split;

    #[test]
    fn node_ids_as_upstream_splits_them() {
        assert_eq!(split("n1"), Some(("", "n1", "")));
        assert_eq!(split("n1:10255"), Some(("", "n1", "10255")));
        assert_eq!(split("https:n1:443"), Some(("https", "n1", "443")));
        assert_eq!(split("ftp:n1:21"), None);
        assert_eq!(split(":80"), None);
        assert_eq!(split("a:b:c:d"), None);
    }
}
