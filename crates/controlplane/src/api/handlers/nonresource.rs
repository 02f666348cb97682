//! What is not a resource: health, readiness and version (public), and the
//! documents describing the API — discovery (`discovery.rs`), OpenAPI v3
//! (`openapi.rs`, `openapi_v2.rs`, with custom resources from
//! `openapi_custom.rs`) and the service-account issuer's OIDC documents.

use crate::api::discovery;
use crate::api::error::{ApiError, ApiResult};
use crate::api::request::Req;
use crate::api::response::{bytes_body, full, json_response, Body};
use crate::api::routes::{Document, Public};
use crate::api::server::ApiServer;
use crate::api::{openapi, openapi_v2, satoken};
use crate::registry::Resources;
use http::{Response, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

const TEXT: &str = "text/plain; charset=utf-8";

impl ApiServer {
    /// Served before authentication.
    pub(crate) fn public(&self, p: Public) -> Response<Body> {
        match p {
            Public::Health => full(StatusCode::OK, TEXT, b"ok".to_vec()),
            Public::Ready if self.ready.load(Ordering::Acquire) => {
                full(StatusCode::OK, TEXT, b"ok".to_vec())
            }
            Public::Ready => full(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                b"[-]poststarthook/controllers failed: not finished\nreadyz check failed".to_vec(),
            ),
            Public::Version => json_response(StatusCode::OK, &version_info()),
        }
    }

    pub(crate) fn document(&self, d: &Document, r: &Req) -> ApiResult<Response<Body>> {
        let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
        let res = self.core.resources();
        match d {
            Document::Root { core } => match discovery::aggregated_version(&r.accept) {
                Some(version) => {
                    let mut doc = discovery::aggregated(&res, version, *core);
                    if !*core {
                        self.aggregator.merge_aggregated(&self.core, &mut doc);
                    }
                    let body = serde_json::to_vec(&doc);
                    Ok(full(
                        StatusCode::OK,
                        &discovery::aggregated_content_type(version),
                        body.unwrap_or_default(),
                    ))
                }
                None if *core => ok(discovery::api_versions(&self.server_address)),
                None => {
                    let mut list = discovery::api_group_list(&res);
                    self.aggregator.merge_group_list(&self.core, &mut list);
                    ok(list)
                }
            },
            Document::Group(g) => ok(discovery::api_group(&res, g)
                .or_else(|| self.aggregator.api_group(&self.core, g))
                .ok_or_else(ApiError::path_not_found)?),
            Document::Resources { group, version } => {
                ok(discovery::resource_list(&res, group, version)
                    .ok_or_else(ApiError::path_not_found)?)
            }
            Document::OpenApiV2 => Ok(openapi_v2_response(r, &res)),
            Document::OpenApiIndex => ok(openapi::index(&res)),
            Document::OpenApi(p) => {
                let doc = openapi::document(&res, p).ok_or_else(ApiError::path_not_found)?;
                Ok(openapi_v3_response(r, p, &doc))
            }
            Document::OpenIdConfiguration => {
                ok(satoken::openid_configuration(&self.server_address))
            }
            Document::Jwks => ok(self.signer.jwks()),
        }
    }
}

/// `/openapi/v2` as kube-openapi serves it: the form by Accept (406 when
/// neither is acceptable), `Vary: Accept`, one ETag for both forms, 304 for
/// a matching `If-None-Match`.
fn openapi_v2_response(r: &Req, res: &Resources) -> Response<Body> {
    let Some(format) = openapi_v2::negotiate(&r.accept) else {
        return full(StatusCode::NOT_ACCEPTABLE, TEXT, Vec::new());
    };
    let doc = openapi_v2::document(res);
    let mut resp = if openapi_v2::not_modified(&r.if_none_match, &doc.etag) {
        let mut resp = Response::new(bytes_body(Vec::new()));
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        resp
    } else {
        let bytes = match format {
            openapi_v2::Format::Json => doc.json.clone(),
            openapi_v2::Format::Protobuf => doc.protobuf.clone(),
        };
        let mut resp = Response::new(bytes_body(bytes));
        if let Ok(v) = http::HeaderValue::from_str(format.content_type()) {
            resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
        }
        resp
    };
    let h = resp.headers_mut();
    h.insert(http::header::VARY, http::HeaderValue::from_static("Accept"));
    for (name, value) in [
        (http::header::ETAG, format!("\"{}\"", doc.etag)),
        (http::header::LAST_MODIFIED, doc.last_modified.clone()),
    ] {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    resp
}

/// `/openapi/v3/<path>` as kube-openapi's handler3 serves it: with the
/// index's `?hash=` the response may be cached for good (`Cache-Control:
/// public, immutable`, a year's `Expires`), and a stale hash (the CRDs
/// changed since the index was read) is redirected (301) to the current
/// document's URL; the hash is also the ETag (304 on `If-None-Match`).
fn openapi_v3_response(r: &Req, path: &str, doc: &openapi::V3Doc) -> Response<Body> {
    let mut headers: Vec<(http::header::HeaderName, String)> =
        vec![(http::header::ETAG, format!("\"{}\"", doc.hash))];
    if let Some(hash) = r.q("hash") {
        if hash != doc.hash {
            let mut resp = Response::new(bytes_body(Vec::new()));
            *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
            if let Ok(v) =
                http::HeaderValue::from_str(&format!("/openapi/v3/{path}?hash={}", doc.hash))
            {
                resp.headers_mut().insert(http::header::LOCATION, v);
            }
            return resp;
        }
        let expires = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(365 * 24))
            .unwrap_or_else(|_| jiff::Timestamp::now())
            .strftime("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        headers.extend([
            (http::header::VARY, "Accept".to_string()),
            (http::header::CACHE_CONTROL, "public, immutable".to_string()),
            (http::header::EXPIRES, expires),
        ]);
    }
    let mut resp = if openapi_v2::not_modified(&r.if_none_match, &doc.hash) {
        let mut resp = Response::new(bytes_body(Vec::new()));
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        resp
    } else {
        headers.push((http::header::CONTENT_TYPE, "application/json".into()));
        Response::new(bytes_body(doc.bytes.clone()))
    };
    for (name, value) in headers {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": crate::VERSION_MINOR,
        "gitVersion": crate::VERSION_GIT,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    })
}
