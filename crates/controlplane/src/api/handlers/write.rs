//! create, update, patch, delete and deletecollection.

use crate::api::auth::authz;
use crate::api::error::{ApiError, ApiResult};
use crate::api::objects::meta_str;
use crate::api::patch::{apply_patch, PatchType};
use crate::api::request::Call;
use crate::api::response::{json_response, list_response, written, Body};
use crate::api::server::ApiServer;
use http::{Response, StatusCode};
use serde_json::Value;

impl ApiServer {
    pub(crate) fn create(&self, c: &Call) -> ApiResult<Response<Body>> {
        let mut obj = c.authorize_body()?;
        // A CSR records who asked, from the request's user, never from the body.
        crate::api::kinds::certificates::set_requester(c.t.rd, &mut obj, &c.r.user);
        crate::api::kinds::certificates::admit_create(c.t.rd, &obj)?;
        authz::node_restriction(&c.r.user, c.t.rd, None, &obj)?;
        let mut ctx = c.r.write_ctx();
        let created = self.core.create(c.t.rd, c.t.ns, obj, &mut ctx)?;
        Ok(written(StatusCode::CREATED, &created, &ctx.warnings))
    }

    /// PUT of an object or of a subresource (`status`; a namespace's
    /// `finalize`, which writes the object).
    pub(crate) fn update(&self, c: &Call) -> ApiResult<Response<Body>> {
        let (rd, name) = (c.t.rd, c.t.name);
        let obj = c.authorize_body()?;
        authz::node_restriction(&c.r.user, c.t.rd, c.existing, &obj)?;
        let mut ctx = c.r.write_ctx();
        let sub = c.t.sub.filter(|s| *s != "finalize");
        let out = self.core.update(rd, c.t.ns, name, obj, sub, &mut ctx)?;
        if rd.kind == "Namespace"
            && rd.group.is_empty()
            && out.pointer("/metadata/deletionTimestamp").is_some()
            && out
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_none_or(|a| a.is_empty())
        {
            // Finalizing the last namespace finalizer removes it.
            let _ = self.core.store.delete(&rd.key(None, name), None);
        }
        Ok(written(StatusCode::OK, &out, &ctx.warnings))
    }

    /// PATCH of an object or of a subresource: JSON, merge or strategic
    /// merge patch, or server-side apply.
    pub(crate) fn patch(&self, c: &Call) -> ApiResult<Response<Body>> {
        let ty = PatchType::from_content_type(&c.r.content_type)?;
        if ty == PatchType::Strategic && c.t.rd.custom.is_some() {
            // Custom resources have no patch strategy tags: upstream takes the other three.
            return Err(ApiError::new(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"));
        }
        c.authorize(None)?;
        let mut ctx = c.r.write_ctx();
        if ty == PatchType::Apply {
            return self.server_side_apply(c, &mut ctx);
        }
        let out = self
            .core
            .modify(c.t.rd, c.t.ns, c.t.name, c.t.sub, &mut ctx, |cur| {
                let patched = apply_patch(cur, ty, c.body)?;
                authz::node_restriction(&c.r.user, c.t.rd, Some(cur), &patched)?;
                Ok(patched)
            })?;
        Ok(written(StatusCode::OK, &out, &ctx.warnings))
    }

    pub(crate) fn delete(&self, c: &Call) -> ApiResult<Response<Body>> {
        let (rd, ns, name) = (c.t.rd, c.t.ns, c.t.name);
        c.authorize(None)?;
        let opts = c.r.delete_options(c.body)?;
        let out = self.core.delete(rd, ns, name, &opts)?;
        let code = if out.pointer("/metadata/deletionTimestamp").is_some()
            && self.core.get_stored(rd, ns, name).is_some()
        {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        };
        Ok(json_response(code, &out))
    }

    pub(crate) fn delete_collection(&self, c: &Call) -> ApiResult<Response<Body>> {
        let rd = c.t.rd;
        c.authorize(None)?;
        let opts = c.r.delete_options(c.body)?;
        let (items, rev, _) = self.core.list(rd, c.t.ns, &c.r.list_options()?)?;
        let mut out = Vec::new();
        for it in items {
            match self.core.delete(
                rd,
                Some(meta_str(&it, "namespace")),
                meta_str(&it, "name"),
                &opts,
            ) {
                Ok(v) => out.push(v),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(list_response(rd, out, rev))
    }
}
