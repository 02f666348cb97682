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

pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    full(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
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
