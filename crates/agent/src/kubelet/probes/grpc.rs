//! grpc probes: grpc.health.v1.Health/Check over plaintext HTTP/2 with `service`; SERVING is
//! success.

use super::tcp::{dial, join_host_port};
use super::{Outcome, MAX_OUTPUT, USER_AGENT};
use http_body_util::BodyExt;
use std::time::Duration;

/// grpc.health.v1.HealthCheckResponse.ServingStatus names.
fn serving_status(n: u64) -> String {
    match n {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => n.to_string(),
    }
}

/// gRPC status code names (for "rpc error: code = ... desc = ...").
fn grpc_code(n: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES.get(n as usize).copied().unwrap_or("Unknown")
}

fn read_varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The `status` field (1) of a HealthCheckResponse message; absent is UNKNOWN (0).
fn health_status(msg: &[u8]) -> Option<u64> {
    let mut i = 0;
    let mut status = 0;
    while i < msg.len() {
        let key = read_varint(msg, &mut i)?;
        match key & 7 {
            0 => {
                let v = read_varint(msg, &mut i)?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            1 => i += 8,
            2 => {
                let n = read_varint(msg, &mut i)? as usize;
                i = i.checked_add(n)?;
            }
            5 => i += 4,
            _ => return None,
        }
    }
    (i == msg.len()).then_some(status)
}

/// kubelet's gRPC probe: grpc.health.v1.Health/Check over plaintext HTTP/2 to the pod IP;
/// success when the service answers SERVING. Outputs worded as kubelet's.
pub async fn grpc_probe(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    let addr = join_host_port(host, port);
    let secs = format!("{}s", timeout.as_secs());
    let deadline = tokio::time::Instant::now() + timeout;
    let connect = async {
        let tcp = dial(host, port).await?;
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, http_body_util::Full<bytes::Bytes>>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())
    };
    let (mut send, conn) = match tokio::time::timeout_at(deadline, connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Outcome::Failure(format!("error: failed to connect service at {addr:?}: {e}"))
        }
        Err(_) => {
            return Outcome::Failure(format!(
            "timeout: failed to connect service {addr:?} within {secs}: context deadline exceeded"
        ))
        }
    };
    let conn = tokio::spawn(conn);
    // HealthCheckRequest{service}, length-prefixed as a gRPC message.
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a);
        let mut n = service.len() as u64;
        while n >= 0x80 {
            msg.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        msg.push(n as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let rpc = async {
        let req = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .header(http::header::USER_AGENT, USER_AGENT)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let (parts, mut body) = resp.into_parts();
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(f) = body.frame().await {
            let f = f.map_err(|e| e.to_string())?;
            match f.into_data() {
                Ok(d) => {
                    if data.len() < MAX_OUTPUT {
                        data.extend_from_slice(&d);
                    }
                }
                Err(f) => {
                    if let Ok(t) = f.into_trailers() {
                        trailers = Some(t);
                    }
                }
            }
        }
        Ok::<_, String>((parts, data, trailers))
    };
    let r = tokio::time::timeout_at(deadline, rpc).await;
    conn.abort();
    let (parts, data, trailers) = match r {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return Outcome::Failure(format!(
                "error: health rpc probe failed: rpc error: code = Unavailable desc = {e}"
            ))
        }
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: health rpc did not complete within {secs}"
            ))
        }
    };
    // grpc-status is in the trailers, or in the headers of a trailers-only response.
    let field = |name: &str| {
        trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .or_else(|| parts.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let code: u32 = match (parts.status.as_u16(), field("grpc-status")) {
        (_, Some(c)) => c.trim().parse().unwrap_or(2),
        (200, None) => 2,
        // Not a gRPC server (HTTP status as grpc-go maps it).
        (_, None) => 14,
    };
    if code != 0 {
        let desc = field("grpc-message").unwrap_or_else(|| {
            format!(
                "unexpected HTTP status code received from server: {}",
                parts.status.as_u16()
            )
        });
        return Outcome::Failure(match code {
            12 => format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {desc}"
            ),
            4 => format!("timeout: health rpc did not complete within {secs}"),
            c => format!(
                "error: health rpc probe failed: rpc error: code = {} desc = {desc}",
                grpc_code(c)
            ),
        });
    }
    let status = data
        .get(5..)
        .filter(|_| data.first() == Some(&0))
        .and_then(health_status);
    match status {
        Some(1) => Outcome::Success,
        Some(s) => Outcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            serving_status(s)
        )),
        None => Outcome::Failure(
            "error: health rpc probe failed: rpc error: code = Internal desc = malformed response"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gRPC health server on HTTP/2: SERVING for "", NOT_SERVING for "down", Unimplemented
    /// (trailers-only) for "nohealth".
    #[tokio::test]
    async fn grpc_health_checks() {
        use http_body_util::{BodyExt, StreamBody};
        use hyper::body::Frame;
        let (l, port) = super::super::local_listener().await;
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                        let body = req.into_body().collect().await.expect("body").to_bytes();
                        let service =
                            String::from_utf8_lossy(body.get(7..).unwrap_or_default()).into_owned();
                        let frames: Vec<Result<Frame<bytes::Bytes>, std::convert::Infallible>> =
                            if service == "nohealth" {
                                vec![]
                            } else {
                                let status = if service == "down" { 2u8 } else { 1 };
                                let mut trailers = http::HeaderMap::new();
                                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                                vec![
                                    Ok(Frame::data(bytes::Bytes::from(vec![
                                        0, 0, 0, 0, 2, 8, status,
                                    ]))),
                                    Ok(Frame::trailers(trailers)),
                                ]
                            };
                        let mut resp = http::Response::new(StreamBody::new(
                            futures_util::stream::iter(frames),
                        ));
                        resp.headers_mut().insert(
                            "content-type",
                            http::HeaderValue::from_static("application/grpc"),
                        );
                        if service == "nohealth" {
                            resp.headers_mut()
                                .insert("grpc-status", http::HeaderValue::from_static("12"));
                            resp.headers_mut().insert(
                                "grpc-message",
                                http::HeaderValue::from_static("unknown service"),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc),
                );
            }
        });
        let t = Duration::from_secs(2);
        assert_eq!(grpc_probe("127.0.0.1", port, "", t).await, Outcome::Success);
        assert_eq!(
            grpc_probe("127.0.0.1", port, "down", t).await,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        assert_eq!(
            grpc_probe("127.0.0.1", port, "nohealth", t).await,
            Outcome::Failure(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service".into()
            )
        );
    }

    #[test]
    fn health_check_response_decoding() {
        assert_eq!(health_status(&[8, 1]), Some(1));
        assert_eq!(health_status(&[]), Some(0));
        assert_eq!(health_status(&[0x12, 1, b'x', 8, 2]), Some(2));
        assert_eq!(health_status(&[8]), None);
    }
}
