//! list, watch and get.

use crate::api::error::{ApiError, ApiResult};
use crate::api::objects::meta_str;
use crate::api::request::Call;
use crate::api::response::{full, json_response, Body};
use crate::api::server::ApiServer;
use crate::api::{table, watch};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use std::time::Duration;

impl ApiServer {
    pub(crate) fn list(&self, c: &Call) -> ApiResult<Response<Body>> {
        c.authorize(None)?;
        let (r, rd) = (c.r, c.t.rd);
        let opts = r.list_options()?;
        if let Some(rv) = r
            .q("resourceVersion")
            .filter(|v| !v.is_empty() && *v != "0")
        {
            let want: u64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version \"{rv}\"")))?;
            if want > self.core.store.revision() {
                return Err(ApiError::new(
                    504,
                    "Timeout",
                    format!(
                        "Too large resource version: {want}, current: {}",
                        self.core.store.revision()
                    ),
                ));
            }
        }
        let (mut items, rev, cont) = self.core.list(rd, c.t.ns, &opts)?;
        if rd.converts() {
            // Stored at the CRD's (or the kind's) storage version: served at the requested one.
            for it in items.iter_mut() {
                if let std::borrow::Cow::Owned(v) = rd.view(it) {
                    *it = std::sync::Arc::new(v);
                }
            }
        }
        if r.wants_table() {
            let refs: Vec<&Value> = items.iter().map(|a| &**a).collect();
            let t = table::table(
                rd,
                &refs,
                &rev.to_string(),
                cont.as_deref(),
                r.include_object(),
                true,
            );
            return Ok(json_response(StatusCode::OK, &t));
        }
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if let Some(c) = cont {
            meta["continue"] = json!(c);
        }
        // Serialise items without cloning them into a Value tree.
        let mut out = Vec::with_capacity(256 + items.len() * 512);
        out.extend_from_slice(
            format!(
                "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
                rd.kind,
                rd.api_version(),
                meta
            )
            .as_bytes(),
        );
        for (i, it) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &**it)
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
        out.extend_from_slice(b"]}");
        Ok(full(StatusCode::OK, "application/json", out))
    }

    pub(crate) fn watch(&self, c: &Call) -> ApiResult<Response<Body>> {
        c.authorize(None)?;
        let r = c.r;
        let timeout = r
            .q("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(1800);
        let params = watch::WatchParams {
            resource_version: r.q("resourceVersion").unwrap_or("").to_string(),
            bookmarks: r.flag("allowWatchBookmarks"),
            send_initial_events: r.flag("sendInitialEvents"),
            timeout: Duration::from_secs(timeout),
            as_table: r.wants_table(),
        };
        let rx = watch::start(
            self.core.clone(),
            c.t.rd,
            c.t.ns.map(String::from),
            r.list_options()?,
            params,
        )?;
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
        });
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        let ct = if r.wants_table() {
            "application/json;as=Table;v=v1;g=meta.k8s.io"
        } else {
            "application/json"
        };
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(ct),
        );
        resp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache, private"),
        );
        Ok(resp)
    }

    /// GET of an object or of its `status` (or another subresource without its own handler).
    pub(crate) fn get(&self, c: &Call) -> ApiResult<Response<Body>> {
        c.authorize(None)?;
        let obj = c.existing()?;
        if c.r.wants_table() {
            let rv = meta_str(obj, "resourceVersion").to_string();
            return Ok(json_response(
                StatusCode::OK,
                &table::table(c.t.rd, &[obj], &rv, None, c.r.include_object(), true),
            ));
        }
        Ok(json_response(StatusCode::OK, obj))
    }
}
