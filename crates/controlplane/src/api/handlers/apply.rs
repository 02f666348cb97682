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
        let config = parse_body("application/yaml", c.body)?;
        let force = c.r.flag("force");
        let av = rd.api_version();
        ctx.manager = "__apply__".into();
        let defaults = |v: &mut serde_json::Value| crate::api::defaults::apply_defaults(rd, v);
        // Custom resources merge by their schema's list and map types, built-in kinds by field.
        let shapes = fields::Shapes::of(rd);
        if self.core.get_stored(rd, ns, name).is_none() {
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
