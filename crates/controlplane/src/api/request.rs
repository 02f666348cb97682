//! The request as handlers see it: [`Req`] (the authenticated user, the
//! query, the headers that matter and the options derived from them), body
//! reading and decoding, and [`Call`], one call on a resource.

use super::auth::{authz, Attributes, Rbac, User};
use super::error::{ApiError, ApiResult};
use super::objects::{DeleteOptions, FieldValidation, ListOptions, WriteCtx};
use super::protobuf;
use super::routes::{Action, Target};
use super::selector::{FieldSelector, LabelSelector};
use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// Largest request body accepted (kube-apiserver's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// A URI's query parameters (the last of repeated ones).
pub(crate) fn query(uri: &http::Uri) -> HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Whether query parameter `k` is `true` or `1`.
pub(crate) fn is_set(query: &HashMap<String, String>, k: &str) -> bool {
    matches!(query.get(k).map(String::as_str), Some("true") | Some("1"))
}

/// Parsed request context.
pub(crate) struct Req {
    pub method: Method,
    pub query: HashMap<String, String>,
    pub accept: String,
    pub content_type: String,
    pub user: User,
    /// The RBAC state the request is authorized against.
    pub rbac: Arc<Rbac>,
    pub user_agent: String,
    /// `If-None-Match` (cached documents answer 304).
    pub if_none_match: String,
}

impl Req {
    pub fn new(
        method: Method,
        headers: &HeaderMap,
        query: HashMap<String, String>,
        user: User,
        rbac: Arc<Rbac>,
    ) -> Req {
        let header = |h: http::header::HeaderName| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        Req {
            method,
            query,
            accept: header(http::header::ACCEPT),
            content_type: header(http::header::CONTENT_TYPE),
            user,
            rbac,
            user_agent: header(http::header::USER_AGENT),
            if_none_match: header(http::header::IF_NONE_MATCH),
        }
    }
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }
    pub fn flag(&self, k: &str) -> bool {
        is_set(&self.query, k)
    }
    pub fn wants_table(&self) -> bool {
        self.accept.split(',').any(|a| a.contains("as=Table"))
    }
    /// `includeObject` for Tables.
    pub fn include_object(&self) -> &str {
        self.q("includeObject").unwrap_or("Metadata")
    }
    /// The request body decoded by its Content-Type.
    pub fn parse_body(&self, body: &[u8]) -> ApiResult<Value> {
        parse_body(&self.content_type, body)
    }
    pub fn write_ctx(&self) -> WriteCtx {
        let manager = self
            .q("fieldManager")
            .map(String::from)
            .unwrap_or_else(|| self.user_agent.split('/').next().unwrap_or("").to_string());
        WriteCtx {
            manager,
            dry_run: self.q("dryRun").is_some_and(|v| v == "All"),
            validation: match self.q("fieldValidation") {
                Some("Strict") => FieldValidation::Strict,
                Some("Ignore") => FieldValidation::Ignore,
                _ => FieldValidation::Warn,
            },
            warnings: Vec::new(),
            user: Some(self.user.clone()),
        }
    }
    pub fn list_options(&self) -> ApiResult<ListOptions> {
        Ok(ListOptions {
            labels: LabelSelector::parse(self.q("labelSelector").unwrap_or(""))?,
            fields: FieldSelector::parse(self.q("fieldSelector").unwrap_or(""))?,
            limit: self.q("limit").and_then(|l| l.parse().ok()),
            continue_token: self
                .q("continue")
                .filter(|c| !c.is_empty())
                .map(String::from),
        })
    }
    /// DeleteOptions from the body (if any), then the query parameters.
    pub fn delete_options(&self, body: &[u8]) -> ApiResult<DeleteOptions> {
        let mut opts = if has_body(body) {
            DeleteOptions::from_value(&self.parse_body(body)?)
        } else {
            DeleteOptions::default()
        };
        if let Some(g) = self.q("gracePeriodSeconds").and_then(|g| g.parse().ok()) {
            opts.grace_period = Some(g);
        }
        if let Some(p) = self.q("propagationPolicy") {
            opts.propagation = Some(p.to_string());
        }
        if self.q("dryRun") == Some("All") {
            opts.dry_run = true;
        }
        opts.user = Some(self.user.clone());
        Ok(opts)
    }
}

/// Whether a body has anything but whitespace.
pub(crate) fn has_body(body: &[u8]) -> bool {
    body.iter().any(|b| !b.is_ascii_whitespace())
}

/// Decodes a body by Content-Type: YAML, JSON (also when none is given) or protobuf; else 415.
pub(crate) fn parse_body(ct: &str, body: &[u8]) -> ApiResult<Value> {
    let base = ct.split(';').next().unwrap_or("").trim();
    if base.contains("yaml") {
        serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else if base.is_empty() || base.contains("json") {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))
    } else if base.eq_ignore_ascii_case(protobuf::CONTENT_TYPE) {
        protobuf::decode_body(body)
    } else {
        Err(ApiError::unsupported_media(base))
    }
}

/// The whole body (400 if it cannot be read, 413 above 3 MiB).
pub(crate) async fn read_body(req: Request<Incoming>) -> ApiResult<Bytes> {
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("failed to read body: {e}")))?
        .to_bytes();
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            "Request entity too large",
        ));
    }
    Ok(body)
}

/// One call on a resource, as the routing table resolved it: what every
/// resource handler gets.
pub(crate) struct Call<'a> {
    pub r: &'a Req,
    pub t: &'a Target<'a>,
    pub action: Action,
    /// The stored object a call on one object names, if it exists.
    pub existing: Option<&'a Value>,
    pub body: &'a [u8],
}

impl Call<'_> {
    /// Authorization of the call (with `incoming`, the object in its body,
    /// for the decisions that depend on it); 403 if refused.
    pub fn authorize(&self, incoming: Option<&Value>) -> ApiResult<()> {
        let a = Attributes {
            verb: self.action.verb(),
            resource: self.t.rd,
            subresource: self.t.sub,
            namespace: self.t.ns,
            name: self.t.name,
            existing: self.existing,
            incoming,
            related: None,
        };
        authz::check(&self.r.rbac, &self.r.user, &a)?;
        if self.t.rd.group == super::auth::rbac::GROUP
            && matches!(self.action, Action::Create | Action::Update | Action::Patch)
        {
            if let Some(result) = self.rbac_result(incoming)? {
                authz::check_escalation(&self.r.rbac, &self.r.user, &a, &result)?;
            }
        }
        Ok(())
    }

    /// An RBAC object as a create, update or patch would store it, for the
    /// escalation check: the body (a bound role reference cannot change, so
    /// an update of a binding is checked with the stored one's), or the
    /// patch applied to the stored object (server-side apply: the applied
    /// configuration, whose `rules` replace the stored ones).
    fn rbac_result(&self, incoming: Option<&Value>) -> ApiResult<Option<Value>> {
        if let Some(obj) = incoming {
            let mut obj = obj.clone();
            if let Some(role_ref) = self.existing.and_then(|e| e.get("roleRef")) {
                obj["roleRef"] = role_ref.clone();
            }
            return Ok(Some(obj));
        }
        let ty = super::patch::PatchType::from_content_type(&self.r.content_type)?;
        Ok(match (self.existing, ty) {
            (Some(cur), super::patch::PatchType::Apply) => {
                let applied = self.r.parse_body(self.body)?;
                let mut obj = cur.clone();
                for k in ["rules", "aggregationRule"] {
                    if let Some(v) = applied.get(k) {
                        obj[k] = v.clone();
                    }
                }
                Some(obj)
            }
            (Some(cur), ty) => Some(super::patch::apply_patch(cur, ty, self.body)?),
            (None, super::patch::PatchType::Apply) => Some(self.r.parse_body(self.body)?),
            (None, _) => None,
        })
    }

    /// The body decoded, then the call authorized with it.
    pub fn authorize_body(&self) -> ApiResult<Value> {
        let obj = self.r.parse_body(self.body)?;
        self.authorize(Some(&obj))?;
        Ok(obj)
    }

    /// The stored object, or 404.
    pub fn existing(&self) -> ApiResult<&Value> {
        self.existing
            .ok_or_else(|| ApiError::not_found(self.t.rd, self.t.name))
    }
}
