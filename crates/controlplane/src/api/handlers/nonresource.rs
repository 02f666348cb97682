//! What is not a resource: health, readiness and version (public), and the
//! documents describing the API — discovery (`discovery.rs`), OpenAPI v3
//! (`openapi.rs`) and the service-account issuer's OIDC documents.

use crate::api::discovery;
use crate::api::error::{ApiError, ApiResult};
use crate::api::request::Req;
use crate::api::response::{full, json_response, Body};
use crate::api::routes::{Document, Public};
use crate::api::server::ApiServer;
use crate::api::{openapi, satoken};
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
        match d {
            Document::Root { core } => match discovery::aggregated_version(&r.accept) {
                Some(version) => {
                    let body = serde_json::to_vec(&discovery::aggregated(version, *core));
                    Ok(full(
                        StatusCode::OK,
                        &discovery::aggregated_content_type(version),
                        body.unwrap_or_default(),
                    ))
                }
                None if *core => ok(discovery::api_versions(&self.server_address)),
                None => ok(discovery::api_group_list()),
            },
            Document::Group(g) => ok(discovery::api_group(g).ok_or_else(ApiError::path_not_found)?),
            Document::Resources { group, version } => ok(
                discovery::resource_list(group, version).ok_or_else(ApiError::path_not_found)?
            ),
            Document::OpenApiIndex => ok(openapi::index()),
            Document::OpenApi(p) => {
                let (bytes, _) = openapi::documents()
                    .get(p)
                    .ok_or_else(ApiError::path_not_found)?;
                Ok(full(StatusCode::OK, "application/json", bytes.clone()))
            }
            Document::OpenIdConfiguration => {
                ok(satoken::openid_configuration(&self.server_address))
            }
            Document::Jwks => ok(self.signer.jwks()),
        }
    }
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
