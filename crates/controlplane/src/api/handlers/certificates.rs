//! The CSR's `approval` and `status` subresources (PUT and PATCH), as
//! upstream's approval and status strategies: `approval` changes only
//! `status.conditions` (what `kubectl certificate approve|deny` sends) and
//! needs, beyond RBAC's `update certificatesigningrequests/approval`, the
//! `approve` verb on the `signers` resource named by the CSR's signer (the
//! CertificateApproval admission plugin); `status` keeps the approval
//! conditions as they were and may set `status.certificate` once, with the
//! `sign` verb on the signer (CertificateSigning). Both keep the spec.

use crate::api::auth::authz;
use crate::api::auth::rbac::{Request, ResourceRequest};
use crate::api::error::{ApiError, ApiResult};
use crate::api::kinds::certificates::update_causes;
use crate::api::objects::{meta_str, now};
use crate::api::patch::{apply_patch, PatchType};
use crate::api::request::Call;
use crate::api::response::{written, Body};
use crate::api::routes::Action;
use crate::api::server::ApiServer;
use http::{Response, StatusCode};
use serde_json::{json, Value};

/// Whether the user may `verb` the signer `signer` (or `domain/*`), as upstream's
/// `IsAuthorizedForSignerName`.
fn may_use_signer(c: &Call, verb: &str, signer: &str) -> bool {
    let wildcard = signer
        .split_once('/')
        .map(|(d, _)| format!("{d}/*"))
        .unwrap_or_default();
    [signer, wildcard.as_str()].iter().any(|name| {
        let req = ResourceRequest {
            verb,
            group: "certificates.k8s.io",
            resource: "signers",
            subresource: None,
            namespace: None,
            name,
        };
        authz::decide(&c.r.rbac, &c.r.user, &Request::Resource(req)).is_some()
    })
}

/// Upstream's `populateConditionTimestamps`: a condition without times gets now, or keeps
/// the transition time of the same condition in `old`.
fn stamp(conditions: &mut Value, old: &Value) {
    let olds: Vec<Value> = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for c in conditions.as_array_mut().into_iter().flatten() {
        if c.get("lastUpdateTime").is_none_or(Value::is_null) {
            c["lastUpdateTime"] = json!(now());
        }
        if c.get("lastTransitionTime").is_none_or(Value::is_null) {
            let same = olds
                .iter()
                .find(|o| o["type"] == c["type"] && o["status"] == c["status"])
                .and_then(|o| o.get("lastTransitionTime").cloned())
                .filter(|t| !t.is_null());
            c["lastTransitionTime"] = same.unwrap_or_else(|| json!(now()));
        }
    }
}

/// The stored CSR after a write of `sub` whose body (or patched object) is `incoming`.
fn next(cur: &Value, incoming: &Value, sub: &str) -> Value {
    let mut out = cur.clone();
    let empty = json!([]);
    let new_conds = incoming
        .pointer("/status/conditions")
        .unwrap_or(&empty)
        .clone();
    if !out["status"].is_object() {
        out["status"] = json!({});
    }
    if sub == "approval" {
        out["status"]["conditions"] = new_conds;
    } else {
        // Approval conditions stay as stored; the rest of the status is the writer's.
        let is_approval = |c: &Value| matches!(c["type"].as_str(), Some("Approved" | "Denied"));
        let mut conds: Vec<Value> = cur
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| is_approval(c))
            .cloned()
            .collect();
        conds.extend(
            new_conds
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| !is_approval(c))
                .cloned(),
        );
        let mut status = incoming.get("status").cloned().unwrap_or_else(|| json!({}));
        status["conditions"] = json!(conds);
        out["status"] = status;
    }
    stamp(&mut out["status"]["conditions"], cur);
    if out["status"]["conditions"]
        .as_array()
        .is_some_and(|a| a.is_empty())
    {
        if let Some(m) = out["status"].as_object_mut() {
            m.remove("conditions");
        }
    }
    if let Some(rv) = incoming.pointer("/metadata/resourceVersion") {
        out["metadata"]["resourceVersion"] = rv.clone();
    }
    out
}

impl ApiServer {
    /// PUT or PATCH of a CSR's `approval` or `status`.
    pub(crate) fn csr_subresource(&self, c: &Call) -> ApiResult<Response<Body>> {
        let rd = c.t.rd;
        let sub = c.t.sub.unwrap_or("status");
        let body = match c.action {
            Action::CsrPatch => None,
            _ => Some(c.r.parse_body(c.body)?),
        };
        c.authorize(body.as_ref())?;
        let ty = match c.action {
            Action::CsrPatch => Some(PatchType::from_content_type(&c.r.content_type)?),
            _ => None,
        };
        let mut ctx = c.r.write_ctx();
        let out = self
            .core
            .modify(rd, None, c.t.name, Some("status"), &mut ctx, |cur| {
                let incoming = match (&body, ty) {
                    (Some(b), _) => b.clone(),
                    (None, Some(PatchType::Apply)) | (None, None) => {
                        return Err(ApiError::unsupported_media(&c.r.content_type))
                    }
                    (None, Some(ty)) => apply_patch(cur, ty, c.body)?,
                };
                let new = next(cur, &incoming, sub);
                let causes = update_causes(cur, &new, Some(sub));
                if !causes.is_empty() {
                    return Err(ApiError::invalid(rd, meta_str(cur, "name"), causes));
                }
                let signer = cur
                    .pointer("/spec/signerName")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let refuse = |what: &str| {
                    ApiError::new(
                        403,
                        "Forbidden",
                        format!(
                            "{}.{} {:?} is forbidden: user not permitted to {what} requests with signerName {signer:?}",
                            rd.plural,
                            rd.group,
                            meta_str(cur, "name")
                        ),
                    )
                };
                if sub == "approval"
                    && cur.pointer("/status/conditions") != new.pointer("/status/conditions")
                    && !may_use_signer(c, "approve", signer)
                {
                    return Err(refuse("approve"));
                }
                if sub == "status"
                    && cur.pointer("/status/certificate") != new.pointer("/status/certificate")
                    && !may_use_signer(c, "sign", signer)
                {
                    return Err(refuse("sign"));
                }
                Ok(new)
            })?;
        Ok(written(StatusCode::OK, &out, &ctx.warnings))
    }
}
