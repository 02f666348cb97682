//! Server-side apply: a PATCH with `application/apply-patch+yaml`, merged
//! by `fields.rs` (managedFields, conflicts, `force`); creates the object if
//! it does not exist.

use crate::api::error::{ApiError, ApiResult};
use crate::api::fields;
use crate::api::objects::WriteCtx;
use crate::api::request::{parse_body, Call};
use crate::api::response::{json_response, written, Body};
use crate::api::server::ApiServer;
use http::{Response, StatusCode};
use serde_json::json;

impl ApiServer {
    /// Called by `patch` once it is authorized.
    pub(crate) fn server_side_apply(
        &self,
        c: &Call,
        ctx: &mut WriteCtx,
    ) -> ApiResult<Response<Body>> {
        let (rd, ns, name) = (c.t.rd, c.t.ns, c.t.name);
        let manager = c.r.q("fieldManager").filter(|m| !m.is_empty()).ok_or_else(|| {
            ApiError::new(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
        })?;
        let mut config = parse_body("application/yaml", c.body)?;
        let sub = c.t.sub;
        let exists = self.core.get_stored(rd, ns, name).is_some();
        if !exists && sub.is_some() {
            // A subresource of an object that does not exist is not created by applying to it.
            return Err(ApiError::not_found(rd, name));
        }
        // The fields the write resets are neither applied nor owned (the strategies'
        // GetResetFields): status through the main resource when status is a subresource of
        // its own (on create only for custom resources: some built-in kinds, Nodes, are
        // created with their status), everything but status and metadata through /status.
        if let Some(m) = config.as_object_mut() {
            if sub == Some("status") {
                m.retain(|k, _| {
                    matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")
                });
            } else if sub.is_none()
                && crate::api::defaults::has_status_subresource(rd)
                && (exists || rd.custom.is_some())
            {
                m.remove("status");
            }
        }
        let manager = fields::Manager {
            name: manager,
            subresource: sub,
        };
        let force = c.r.flag("force");
        let av = rd.api_version();
        ctx.manager = "__apply__".into();
        let defaults = |v: &mut serde_json::Value| crate::api::defaults::apply_defaults(rd, v);
        // Custom resources merge by their schema's list and map types, built-in kinds by field.
        let shapes = fields::Shapes::of(rd);
        if !exists {
            let mut obj = fields::apply(None, &config, manager, force, &av, &defaults, shapes)?;
            obj["metadata"]["name"] = json!(name);
            let created = self.core.create(rd, ns, obj, ctx)?;
            return Ok(json_response(StatusCode::CREATED, &created));
        }
        let out = self.core.modify(rd, ns, name, c.t.sub, ctx, |cur| {
            let merged = fields::apply(Some(cur), &config, manager, force, &av, &defaults, shapes)?;
            Ok(merged)
        })?;
        // managedFields are kept from the merged object: write them through.
        Ok(written(StatusCode::OK, &out, &ctx.warnings))
    }
}
