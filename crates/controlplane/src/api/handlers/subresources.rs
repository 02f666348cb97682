//! The subresources with their own handlers: scale (get, update, patch),
//! binding, eviction, token (TokenRequest), and log and exec, authorized
//! here and proxied to the kubelet by `kubelet.rs`. `status` (and a
//! namespace's `finalize`) are the plain read/write handlers with the
//! subresource.

use crate::api::auth::{authz, Attributes};
use crate::api::error::{ApiError, ApiResult};
use crate::api::kubelet::Proxy;
use crate::api::objects::{meta_str, DeleteOptions, WriteCtx};
use crate::api::patch::{apply_patch, PatchType};
use crate::api::request::Call;
use crate::api::response::{json_response, pod_success, Body};
use crate::api::routes::Action;
use crate::api::satoken;
use crate::api::server::ApiServer;
use crate::controllers::disruption::{self, Evicted};
use crate::registry::{self, ResourceDef};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

impl ApiServer {
    pub(crate) fn get_scale(&self, c: &Call) -> ApiResult<Response<Body>> {
        c.authorize(None)?;
        Ok(json_response(
            StatusCode::OK,
            &scale_of(c.t.rd, c.existing()?),
        ))
    }

    /// PUT or PATCH of `scale`: sets `spec.replicas` (checking the Scale's
    /// resourceVersion, if it has one).
    pub(crate) fn write_scale(&self, c: &Call) -> ApiResult<Response<Body>> {
        let (rd, name) = (c.t.rd, c.t.name);
        c.authorize(None)?;
        let current = scale_of(rd, c.existing()?);
        let wanted = if c.action == Action::UpdateScale {
            c.r.parse_body(c.body)?
        } else {
            apply_patch(
                &current,
                PatchType::from_content_type(&c.r.content_type)?,
                c.body,
            )?
        };
        let replicas = wanted
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let rv = meta_str(&wanted, "resourceVersion").to_string();
        let mut ctx = c.r.write_ctx();
        // Written as the `scale` subresource: admission webhooks match it as `<resource>/scale`.
        let updated = self
            .core
            .modify(rd, c.t.ns, name, Some("scale"), &mut ctx, |o| {
                let mut o = o.clone();
                if !rv.is_empty() && meta_str(&o, "resourceVersion") != rv {
                    return Err(ApiError::conflict(rd, name));
                }
                if !crate::api::custom::set_replicas(rd, &mut o, replicas) {
                    o["spec"]["replicas"] = json!(replicas);
                }
                Ok(o)
            })?;
        Ok(json_response(StatusCode::OK, &scale_of(rd, &updated)))
    }

    pub(crate) fn binding(&self, c: &Call) -> ApiResult<Response<Body>> {
        let b = c.authorize_body()?;
        let node = b
            .pointer("/target/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        self.bind(c.t.rd, c.t.ns, c.t.name, node)?;
        Ok(pod_success(c.t.name))
    }

    /// `pods/eviction`: deletes the pod if its PodDisruptionBudget allows (upstream's
    /// EvictionREST; the PDB rules are in `controllers/disruption.rs`).
    pub(crate) fn eviction(&self, c: &Call) -> ApiResult<Response<Body>> {
        let ev = c.authorize_body()?;
        let body_name = meta_str(&ev, "name");
        if !body_name.is_empty() && body_name != c.t.name {
            return Err(ApiError::bad_request(
                "name in URL does not match name in Eviction object",
            ));
        }
        let mut opts = ev
            .get("deleteOptions")
            .map(DeleteOptions::from_value)
            .unwrap_or_default();
        opts.dry_run |= c.r.write_ctx().dry_run;
        let ns = c.t.ns.ok_or_else(ApiError::path_not_found)?;
        match disruption::evict(&self.core, ns, c.t.name, &opts)? {
            Evicted::Deleted => Ok(pod_success(c.t.name)),
            // Upstream returns this Status as the result, so it has no reason.
            Evicted::ManyBudgets => Ok(json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": disruption::MANY_BUDGETS, "code": 500}),
            )),
        }
    }

    /// TokenRequest (`serviceaccounts/token`): nodes only for pods bound to
    /// them (the pod the request binds to is looked up for the decision).
    pub(crate) fn token(&self, c: &Call) -> ApiResult<Response<Body>> {
        let ns = c.t.ns.ok_or_else(ApiError::path_not_found)?;
        let request = c.r.parse_body(c.body)?;
        let pod = request
            .pointer("/spec/boundObjectRef")
            .filter(|b| b.get("kind").and_then(Value::as_str) == Some("Pod"))
            .and_then(|b| b.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .and_then(|p| self.core.get_stored(registry::pods(), Some(ns), p));
        authz::check_token_request(
            &c.r.rbac,
            &c.r.user,
            &Attributes {
                verb: c.action.verb(),
                resource: c.t.rd,
                subresource: c.t.sub,
                namespace: Some(ns),
                name: c.t.name,
                existing: c.existing,
                incoming: Some(&request),
                related: pod.as_ref().map(|p| &*p.object),
            },
        )?;
        let out = satoken::token_request(&self.signer, &self.core, ns, c.existing()?, &request)?;
        Ok(json_response(StatusCode::CREATED, &out))
    }

    pub(crate) async fn log(&self, c: &Call<'_>) -> ApiResult<Response<Body>> {
        c.authorize(None)?;
        self.kubelet().log(c.existing()?, c.r).await
    }

    /// `pods/exec`, `pods/attach`, `pods/portforward`: `req` is the client's upgrade request,
    /// its body unread.
    pub(crate) async fn exec(
        &self,
        c: &Call<'_>,
        req: Request<Incoming>,
    ) -> ApiResult<Response<Body>> {
        c.authorize(None)?;
        let sub = c.t.sub.unwrap_or("exec");
        self.kubelet().stream(sub, c.existing()?, c.r, req).await
    }

    fn kubelet(&self) -> Proxy<'_> {
        Proxy {
            tls: &self.kubelet_tls,
            core: &self.core,
        }
    }

    /// Binds pod `name` to `node`, as the scheduler does.
    fn bind(
        &self,
        rd: &'static ResourceDef,
        ns: Option<&str>,
        name: &str,
        node: &str,
    ) -> ApiResult<Value> {
        if node.is_empty() {
            return Err(ApiError::invalid(
                rd,
                name,
                vec![crate::api::error::cause(
                    "FieldValueRequired",
                    "target.name",
                    "Required value",
                )],
            ));
        }
        let mut ctx = WriteCtx::controller("kube-scheduler");
        self.core.modify(rd, ns, name, None, &mut ctx, |o| {
            let cur = o.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
            if !cur.is_empty() {
                return Err(ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{cur}\"")));
            }
            if o.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is being deleted, cannot be assigned to a host")));
            }
            let mut o = o.clone();
            o["spec"]["nodeName"] = json!(node);
            let conds = o.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
            let mut conds: Vec<Value> = conds.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
            conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": crate::api::objects::now()}));
            o["status"]["conditions"] = json!(conds);
            Ok(o)
        })
    }
}

/// The autoscaling/v1 Scale view of a workload (or of a custom resource, by its CRD's paths).
fn scale_of(rd: &ResourceDef, obj: &Value) -> Value {
    if let Some(scale) = crate::api::custom::scale_of(rd, obj) {
        return scale;
    }
    let sel = obj.pointer("/spec/selector").map(selector_string);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta_str(obj, "name"),
            "namespace": meta_str(obj, "namespace"),
            "uid": meta_str(obj, "uid"),
            "resourceVersion": meta_str(obj, "resourceVersion"),
            "creationTimestamp": meta_str(obj, "creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {"replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0), "selector": sel.unwrap_or_default()},
    })
}

/// A workload's selector as a label selector string (`labels.Selector.String()`: requirements
/// sorted by key). A ReplicationController's selector is a plain map (all values strings); the
/// other kinds' is a `LabelSelector` with matchLabels and matchExpressions.
fn selector_string(s: &Value) -> String {
    let Some(m) = s.as_object() else {
        return String::new();
    };
    let mut parts: Vec<(String, String)> = Vec::new();
    let labels = if m.values().all(Value::is_string) {
        Some(m)
    } else {
        s.get("matchLabels").and_then(Value::as_object)
    };
    for (k, v) in labels.into_iter().flatten() {
        parts.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
    }
    for e in s
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let k = e["key"].as_str().unwrap_or("");
        let mut vals: Vec<&str> = e["values"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        vals.sort();
        let text = match e["operator"].as_str() {
            Some("In") => format!("{k} in ({})", vals.join(",")),
            Some("NotIn") => format!("{k} notin ({})", vals.join(",")),
            Some("Exists") => k.to_string(),
            Some("DoesNotExist") => format!("!{k}"),
            _ => continue,
        };
        parts.push((k.to_string(), text));
    }
    parts.sort();
    parts
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}
