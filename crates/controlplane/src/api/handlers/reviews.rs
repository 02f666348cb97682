//! The authentication API: SelfSubjectReview (`kubectl auth whoami`) and
//! TokenReview; the authorization API's access and rules reviews
//! (`kubectl auth can-i`).

use crate::api::auth::rbac::{Request, ResourceRequest};
use crate::api::auth::{authn, authz, Attributes, User};
use crate::api::discovery;
use crate::api::error::{cause, ApiError, ApiResult};
use crate::api::objects::now;
use crate::api::request::{has_body, Req};
use crate::api::response::{json_response, Body};
use crate::api::satoken;
use crate::api::server::ApiServer;
use crate::registry::ResourceDef;
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
    /// and auth proxies ask). Allowed to nodes (upstream's `system:node`
    /// role) and as RBAC allows (`system:auth-delegator`).
    pub(crate) fn token_review(&self, r: &Req, body: &[u8]) -> ApiResult<Response<Body>> {
        // Nodes may (upstream's `system:node` role); others as RBAC says.
        let node = r.user.groups.iter().any(|g| g == "system:nodes");
        review_resource(r, "tokenreviews", None, !node)?;
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

/// The authorization API's reviews (authorization.k8s.io/v1), which
/// `kubectl auth can-i` creates: whether a user may do something
/// (SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview)
/// and what it may do in a namespace (SelfSubjectRulesReview).
impl ApiServer {
    pub(crate) fn access_review(
        &self,
        r: &Req,
        plural: &str,
        ns: Option<&str>,
        body: &[u8],
    ) -> ApiResult<Response<Body>> {
        let rd = review_resource(r, plural, ns, true)?;
        let request = r.parse_body(body)?;
        ApiError::check_body_kind(&request, rd.kind)?;
        let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
        if rd.kind == "SelfSubjectRulesReview" {
            let ns = spec.get("namespace").and_then(Value::as_str).unwrap_or("");
            let status = rules_review(r, ns);
            return Ok(authz_review(rd.kind, None, spec, status));
        }
        let subject = match rd.kind {
            "SelfSubjectAccessReview" => r.user.clone(),
            _ => {
                let user = spec.get("user").and_then(Value::as_str).unwrap_or("");
                let groups: Vec<String> = spec
                    .get("groups")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g.as_str().map(String::from))
                    .collect();
                if user.is_empty() && groups.is_empty() {
                    return Err(ApiError::invalid(
                        rd,
                        "",
                        vec![cause(
                            "FieldValueInvalid",
                            "spec.user",
                            "Invalid value: \"\": at least one of user or group must be specified",
                        )],
                    ));
                }
                User {
                    name: user.to_string(),
                    groups,
                }
            }
        };
        // The caller is authenticated; a SubjectAccessReview's user has exactly
        // the groups it names (upstream adds none).
        let self_review = rd.kind == "SelfSubjectAccessReview";
        let decide = |req: &Request| {
            if self_review || subject.is_admin() {
                authz::decide(&r.rbac, &subject, req)
            } else {
                r.rbac.index().allows_as_given(&subject, req)
            }
        };
        let resource = spec.get("resourceAttributes").filter(|v| v.is_object());
        let non_resource = spec.get("nonResourceAttributes").filter(|v| v.is_object());
        let field = |v: &'_ Value, k: &str| -> String {
            v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
        };
        let allowed = match (resource, non_resource) {
            (Some(a), None) => {
                let a_ns = field(a, "namespace");
                if let Some(ns) = ns {
                    if a_ns != ns {
                        return Err(ApiError::bad_request(format!(
                            "spec.resourceAttributes.namespace must match namespace: {ns}"
                        )));
                    }
                }
                let (verb, group, res, sub, name) = (
                    field(a, "verb"),
                    field(a, "group"),
                    field(a, "resource"),
                    field(a, "subresource"),
                    field(a, "name"),
                );
                decide(&Request::Resource(ResourceRequest {
                    verb: &verb,
                    group: &group,
                    resource: &res,
                    subresource: Some(sub.as_str()).filter(|s| !s.is_empty()),
                    namespace: Some(a_ns.as_str()).filter(|s| !s.is_empty()),
                    name: &name,
                }))
            }
            (None, Some(a)) if ns.is_none() => {
                let (verb, path) = (field(a, "verb"), field(a, "path"));
                decide(&Request::NonResource {
                    verb: &verb,
                    path: &path,
                })
            }
            _ => {
                let msg = if ns.is_some() {
                    "disallowed on this kind of request"
                } else {
                    "exactly one of nonResourceAttributes or resourceAttributes must be specified"
                };
                let field = if ns.is_some() {
                    "spec.nonResourceAttributes"
                } else {
                    "spec.resourceAttributes"
                };
                return Err(ApiError::invalid(
                    rd,
                    "",
                    vec![cause(
                        "FieldValueInvalid",
                        field,
                        format!("Invalid value: \"null\": {msg}"),
                    )],
                ));
            }
        };
        let status = match allowed {
            Some(reason) if reason.is_empty() => json!({"allowed": true}),
            Some(reason) => json!({"allowed": true, "reason": reason}),
            None => json!({"allowed": false}),
        };
        Ok(authz_review(rd.kind, ns, spec, status))
    }
}

/// 201 with an authorization.k8s.io/v1 review: its request's spec and the status.
fn authz_review(kind: &str, ns: Option<&str>, spec: Value, status: Value) -> Response<Body> {
    let mut meta = json!({"creationTimestamp": null});
    if let Some(ns) = ns {
        meta["namespace"] = json!(ns);
    }
    json_response(
        StatusCode::CREATED,
        &json!({
            "kind": kind,
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": meta,
            "spec": spec,
            "status": status,
        }),
    )
}

/// SelfSubjectRulesReview's status: the caller's RBAC rules in `ns`
/// (cluster-wide ones included). A node's are incomplete: the Node
/// authorizer grants by relationship and lists no rules, as upstream.
fn rules_review(r: &Req, ns: &str) -> Value {
    let rules = r
        .rbac
        .index()
        .rules_for(&r.user, Some(ns).filter(|n| !n.is_empty()));
    let (mut resource, mut non_resource) = (Vec::new(), Vec::new());
    for rule in rules {
        if rule.non_resource_urls.is_empty() {
            let mut v = json!({"verbs": rule.verbs, "apiGroups": rule.api_groups, "resources": rule.resources});
            if !rule.resource_names.is_empty() {
                v["resourceNames"] = json!(rule.resource_names);
            }
            resource.push(v);
        } else {
            non_resource
                .push(json!({"verbs": rule.verbs, "nonResourceURLs": rule.non_resource_urls}));
        }
    }
    json!({
        "resourceRules": resource,
        "nonResourceRules": non_resource,
        "incomplete": r.user.node_name().is_some(),
    })
}

/// A review is a POST-only create of a virtual resource: checks the method and, when
/// `authorize`, the caller's right to `create` it.
fn review_resource(
    r: &Req,
    plural: &str,
    ns: Option<&str>,
    authorize: bool,
) -> ApiResult<&'static ResourceDef> {
    if r.method != Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    let rd = discovery::review_resource(plural).ok_or_else(ApiError::path_not_found)?;
    if authorize {
        authz::check(
            &r.rbac,
            &r.user,
            &Attributes {
                verb: "create",
                resource: rd,
                subresource: None,
                namespace: ns,
                name: "",
                existing: None,
                incoming: None,
                related: None,
            },
        )?;
    }
    Ok(rd)
}
