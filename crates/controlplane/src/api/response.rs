//! Building responses: whole bodies, JSON, `Status` objects for errors and
//! successes, and `Warning` headers.

use super::error::ApiError;
use crate::registry::ResourceDef;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use serde_json::{json, Value};

/// A response body: whole (JSON, text) or streamed (watch, logs).
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A whole body.
pub(crate) fn bytes_body(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn full(status: StatusCode, ct: &str, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(bytes_body(body));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(ct) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// A JSON body as kube-apiserver writes it (Go's `json.Encoder`: a trailing
/// newline); a `Status` keeps metav1.Status's field order.
pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut body = if v.get("kind").and_then(Value::as_str) == Some("Status") {
        status_json(v)
    } else {
        serde_json::to_vec(v).unwrap_or_default()
    };
    body.push(b'\n');
    full(status, "application/json", body)
}

/// `v` written with the keys of `order` first, in that order (as Go writes
/// the struct's fields), then any others; `nested` writes a key's value.
fn ordered(v: &Value, order: &[&str], nested: &dyn Fn(&str, &Value) -> Vec<u8>) -> Vec<u8> {
    let Some(m) = v.as_object() else {
        return serde_json::to_vec(v).unwrap_or_default();
    };
    let mut keys: Vec<&str> = order
        .iter()
        .copied()
        .filter(|k| m.contains_key(*k))
        .collect();
    keys.extend(m.keys().map(String::as_str).filter(|k| !order.contains(k)));
    let mut out = vec![b'{'];
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend(serde_json::to_vec(k).unwrap_or_default());
        out.push(b':');
        out.extend(nested(k, &m[*k]));
    }
    out.push(b'}');
    out
}

/// A metav1.Status in Go's field order: kind, apiVersion, metadata, status,
/// message, reason, details (name, group, kind, uid, causes (reason, message,
/// field), retryAfterSeconds), code — what clients that compare bodies see
/// from kube-apiserver.
pub(crate) fn status_json(v: &Value) -> Vec<u8> {
    let plain = |_: &str, v: &Value| serde_json::to_vec(v).unwrap_or_default();
    let cause = |_: &str, c: &Value| ordered(c, &["reason", "message", "field"], &plain);
    let details = |k: &str, d: &Value| {
        if k != "details" {
            return plain(k, d);
        }
        ordered(
            d,
            &[
                "name",
                "group",
                "kind",
                "uid",
                "causes",
                "retryAfterSeconds",
            ],
            &|k: &str, v: &Value| match (k, v) {
                ("causes", Value::Array(cs)) => {
                    let items: Vec<Vec<u8>> = cs.iter().map(|c| cause("", c)).collect();
                    let mut out = vec![b'['];
                    out.extend(items.join(&b','));
                    out.push(b']');
                    out
                }
                _ => plain(k, v),
            },
        )
    };
    ordered(
        v,
        &[
            "kind",
            "apiVersion",
            "metadata",
            "status",
            "message",
            "reason",
            "details",
            "code",
        ],
        &details,
    )
}

/// `status` with `v` and the write's warnings (`Warning: 299 - "..."` headers).
pub(crate) fn written(status: StatusCode, v: &Value, warnings: &[String]) -> Response<Body> {
    let mut r = json_response(status, v);
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = http::HeaderValue::from_str(&text) {
            r.headers_mut().append("warning", v);
        }
    }
    r
}

pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_status(),
    )
}

/// 201 with a `Success` Status naming pod `name` (binding, eviction).
pub(crate) fn pod_success(name: &str) -> Response<Body> {
    json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {"name": name, "kind": "pods"}}),
    )
}

/// A `<Kind>List` of `items` at revision `rev`.
pub(crate) fn list_response(rd: &ResourceDef, items: Vec<Value>, rev: u64) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &json!({"kind": format!("{}List", rd.kind), "apiVersion": rd.api_version(), "metadata": {"resourceVersion": rev.to_string()}, "items": items}),
    )
}
