//! The authentication API: SelfSubjectReview (`kubectl auth whoami`) and
//! TokenReview.

use crate::api::auth::authn;
use crate::api::discovery;
use crate::api::error::{ApiError, ApiResult};
use crate::api::objects::now;
use crate::api::request::{has_body, Req};
use crate::api::response::{json_response, Body};
use crate::api::satoken;
use crate::api::server::ApiServer;
use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

/// 201 with a review of kind `kind`: its type and metadata, then `fields`.
fn review(kind: &str, fields: Value) -> Response<Body> {
    let mut v = json!({
        "kind": kind,
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": now()},
    });
    if let (Some(v), Value::Object(fields)) = (v.as_object_mut(), fields) {
        v.extend(fields);
    }
    json_response(StatusCode::CREATED, &v)
}

impl ApiServer {
    /// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews` (`kubectl auth
    /// whoami`): who the caller is authenticated as.
    pub(crate) fn self_subject_review(&self, r: &Req, body: &[u8]) -> ApiResult<Response<Body>> {
        if r.method != Method::POST {
            return Err(ApiError::method_not_allowed());
        }
        if has_body(body) {
            ApiError::check_body_kind(&r.parse_body(body)?, "SelfSubjectReview")?;
        }
        let groups = r.user.reported_groups();
        Ok(review(
            "SelfSubjectReview",
            json!({"status": {"userInfo": {"username": r.user.name, "groups": groups}}}),
        ))
    }

    /// `POST /apis/authentication.k8s.io/v1/tokenreviews`: whether a bearer
    /// token authenticates, and as whom (what webhook token authenticators
    /// and auth proxies ask). Allowed to admins and nodes, as upstream's
    /// `system:auth-delegator` and `system:node` roles allow it.
    pub(crate) fn token_review(&self, r: &Req, body: &[u8]) -> ApiResult<Response<Body>> {
        if r.method != Method::POST {
            return Err(ApiError::method_not_allowed());
        }
        let node = r.user.groups.iter().any(|g| g == "system:nodes");
        if !(r.user.is_admin() || node) {
            let rd =
                discovery::review_resource("tokenreviews").ok_or_else(ApiError::path_not_found)?;
            return Err(ApiError::forbidden(&r.user.name, "create", rd, None, ""));
        }
        let request = r.parse_body(body)?;
        ApiError::check_body_kind(&request, "TokenReview")?;
        let token = request
            .pointer("/spec/token")
            .and_then(Value::as_str)
            .unwrap_or("");
        if token.is_empty() {
            // Upstream's wording (pkg/registry/authentication/tokenreview).
            return Err(ApiError::bad_request(
                "token is required for TokenReview in authentication",
            ));
        }
        let wanted = satoken::requested_audiences(&request, "TokenReview")?;
        // Every token this server accepts is for its own audience (the issuer).
        let audience_ok = wanted.is_empty() || wanted.iter().any(|a| a == satoken::ISSUER);
        let status = match authn::token_user(token, &self.tokens, &self.signer, &self.core) {
            Ok(user) if audience_ok => json!({
                "authenticated": true,
                "user": {"username": user.name, "groups": user.reported_groups()},
                "audiences": [satoken::ISSUER],
            }),
            Ok(_) => json!({
                "user": {},
                "error": format!(
                    "token audiences [{:?}] is invalid for the target audiences {wanted:?}",
                    satoken::ISSUER
                ),
            }),
            Err(why) => json!({"user": {}, "error": why}),
        };
        let mut spec = json!({"token": token});
        if !wanted.is_empty() {
            spec["audiences"] = json!(wanted);
        }
        Ok(review(
            "TokenReview",
            json!({"spec": spec, "status": status}),
        ))
    }
}
