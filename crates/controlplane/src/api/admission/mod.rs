//! Dynamic admission: MutatingWebhookConfiguration and ValidatingWebhookConfiguration
//! webhooks, called as kube-apiserver's `MutatingAdmissionWebhook` and
//! `ValidatingAdmissionWebhook` plugins call them (k8s.io/apiserver
//! `pkg/admission/plugin/webhook`): configurations in name order, webhooks in their order;
//! mutating ones one after the other (JSON patches applied, `reinvocationPolicy: IfNeeded`
//! honoured), validating ones in parallel; `failurePolicy`, `sideEffects` on dry-run,
//! `timeoutSeconds`, AdmissionReview v1 (or v1beta1 when that is all a webhook speaks), and
//! the error texts upstream returns.
//!
//! The object layer (`objects.rs`) calls [`mutating`] after defaulting and before
//! validation, and [`validating`] after validation and before the built-in quota check and
//! the store write; [`deleting`] before a delete.

mod client;
pub(crate) mod conditions;
mod policy;
pub(crate) mod rules;

use crate::api::auth::User;
use crate::api::error::{ApiError, ApiResult};
use crate::api::objects::{meta_str, Core};
use crate::registry::{self, ResourceDef};
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};

/// The admission operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// What admission knows of a write besides the objects.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub rd: &'a ResourceDef,
    pub subresource: Option<String>,
    pub op: Operation,
    /// The object's namespace; a Namespace's own name for Namespace objects.
    pub namespace: Option<String>,
    pub name: String,
    pub dry_run: bool,
    /// The requester; `None` for the control plane's own controllers.
    pub user: Option<User>,
    pub manager: String,
    /// `CreateOptions`, `UpdateOptions`, `PatchOptions` or `DeleteOptions`.
    pub options_kind: &'static str,
}

impl<'a> Request<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rd: &'a ResourceDef,
        subresource: Option<&str>,
        op: Operation,
        namespace: Option<&str>,
        name: &str,
        dry_run: bool,
        user: Option<&User>,
        manager: &str,
        options_kind: &'static str,
    ) -> Self {
        let is_namespace = rd.group.is_empty() && rd.plural == "namespaces";
        Request {
            rd,
            subresource: subresource.filter(|s| !s.is_empty()).map(String::from),
            op,
            namespace: if is_namespace {
                Some(name.to_string())
            } else {
                namespace.filter(|n| !n.is_empty()).map(String::from)
            },
            name: name.to_string(),
            dry_run,
            user: user.cloned(),
            manager: manager.to_string(),
            options_kind,
        }
    }
}

/// The webhooks of every configuration of `plural`, configurations in name order (as
/// upstream sorts them), each with its configuration's name.
fn webhooks(core: &Core, plural: &str) -> Vec<Value> {
    let Some(rd) = registry::find("admissionregistration.k8s.io", "v1", plural) else {
        return Vec::new();
    };
    let (mut configs, _) = core.store.list(&rd.key_prefix(None));
    if configs.is_empty() {
        return Vec::new();
    }
    configs.sort_by(|a, b| meta_str(&a.object, "name").cmp(meta_str(&b.object, "name")));
    configs
        .iter()
        .flat_map(|c| {
            c.object
                .get("webhooks")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

fn hook_name(hook: &Value) -> &str {
    hook.get("name").and_then(Value::as_str).unwrap_or("")
}

/// How calling one webhook failed.
enum HookError {
    /// The call failed (transport, bad answer): `failurePolicy` decides.
    Calling(String),
    /// Returned to the client as is (a rejection, a patch that does not apply, dry-run).
    Final(ApiError),
}

/// `admission webhook "x" does not support dry run` (400).
fn dry_run_unsupported(hook: &Value) -> Option<HookError> {
    let side = hook
        .get("sideEffects")
        .and_then(Value::as_str)
        .unwrap_or("");
    (side != "None" && side != "NoneOnDryRun").then(|| {
        HookError::Final(ApiError::bad_request(format!(
            "admission webhook \"{}\" does not support dry run",
            hook_name(hook)
        )))
    })
}

/// The status reasons a webhook may send back, as the `&'static str` [`ApiError`] keeps.
fn known_reason(r: &str) -> &'static str {
    const REASONS: &[&str] = &[
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "StoreReadError",
        "Timeout",
        "TooManyRequests",
        "BadRequest",
        "MethodNotAllowed",
        "NotAcceptable",
        "RequestEntityTooLarge",
        "UnsupportedMediaType",
        "InternalError",
        "Expired",
        "ServiceUnavailable",
    ];
    REASONS.iter().find(|x| **x == r).copied().unwrap_or("")
}

/// A rejection as upstream's `ToStatusErr`: the webhook's status with its message prefixed
/// by `admission webhook "x" denied the request`, never below 400.
fn denied(hook: &Value, status: Option<&Value>) -> ApiError {
    let by = format!(
        "admission webhook \"{}\" denied the request",
        hook_name(hook)
    );
    let st = status.cloned().unwrap_or(Value::Null);
    let text = |f: &str| st.get(f).and_then(Value::as_str).unwrap_or("").to_string();
    let (message, reason) = (text("message"), text("reason"));
    let message = if !message.is_empty() {
        format!("{by}: {message}")
    } else if !reason.is_empty() {
        format!("{by}: {reason}")
    } else {
        format!("{by} without explanation")
    };
    let code = st
        .get("code")
        .and_then(Value::as_u64)
        .filter(|c| *c >= 400 && *c < 600)
        .unwrap_or(400) as u16;
    let mut e = ApiError::new(code, known_reason(&reason), message);
    e.details = st.get("details").cloned();
    e
}

/// `Internal error occurred: <err>` (apierrors.NewInternalError).
fn internal(err: String) -> ApiError {
    let mut e = ApiError::internal(format!("Internal error occurred: {err}"));
    e.details = Some(json!({"causes": [{"message": err}]}));
    e
}

/// The AdmissionReview version a webhook is sent: the first it lists that is understood.
fn review_version(hook: &Value) -> &'static str {
    hook.get("admissionReviewVersions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|v| match v {
            "v1" => Some("v1"),
            "v1beta1" => Some("v1beta1"),
            _ => None,
        })
        .unwrap_or("v1")
}

/// The object as a webhook matched at `version` sees it (custom resources served at several
/// versions convert with strategy `None`: only `apiVersion` changes).
fn at_version(rd: &ResourceDef, obj: &Value, version: &str) -> Value {
    // A built-in kind served at several versions converts through its stored form
    // (an autoscaling/v1 HPA sent to a webhook registered for v2, and back).
    if version != rd.version {
        if let Some(other) = registry::find(rd.group, version, rd.plural)
            .filter(|o| rd.conversion.is_some() || o.conversion.is_some())
        {
            return other.view(&rd.to_storage(obj.clone())).into_owned();
        }
    }
    let mut o = obj.clone();
    if version != rd.version {
        o["apiVersion"] = json!(if rd.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", rd.group)
        });
    }
    o
}

/// Who an in-process writer is to a webhook: controllers as kube-controller-manager runs them
/// (`--use-service-account-credentials`: each controller's service account), the scheduler,
/// and the API server's own writes as its loopback identity.
fn in_process_user(manager: &str) -> (String, Vec<String>) {
    let groups = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match manager {
        "kube-apiserver" | "apiextensions-apiserver" => (
            "system:apiserver".into(),
            groups(&["system:authenticated", "system:masters"]),
        ),
        "kube-scheduler" | "default-scheduler" => (
            "system:kube-scheduler".into(),
            groups(&["system:authenticated"]),
        ),
        m if m.ends_with("-controller") => (
            format!("system:serviceaccount:kube-system:{m}"),
            groups(&[
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated",
            ]),
        ),
        _ => (
            "system:kube-controller-manager".into(),
            groups(&["system:authenticated"]),
        ),
    }
}

/// The AdmissionReview sent to a webhook, and its uid.
fn review(
    hook: &Value,
    req: &Request<'_>,
    version: &str,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> (Value, String) {
    let uid = uuid::Uuid::new_v4().to_string();
    let rd = req.rd;
    let (username, groups) = match &req.user {
        Some(u) => (u.name.clone(), u.groups.clone()),
        None => in_process_user(&req.manager),
    };
    let mut options = json!({"kind": req.options_kind, "apiVersion": "meta.k8s.io/v1"});
    if req.op != Operation::Delete && !req.manager.is_empty() && req.manager != "__apply__" {
        options["fieldManager"] = json!(req.manager);
    }
    if req.dry_run {
        options["dryRun"] = json!(["All"]);
    }
    let mut r = json!({
        "uid": uid,
        "kind": {"group": rd.group, "version": version, "kind": rd.kind},
        "resource": {"group": rd.group, "version": version, "resource": rd.plural},
        "requestKind": {"group": rd.group, "version": rd.version, "kind": rd.kind},
        "requestResource": {"group": rd.group, "version": rd.version, "resource": rd.plural},
        "operation": req.op.as_str(),
        "userInfo": {"username": username, "groups": groups},
        "object": obj.map(|o| at_version(rd, o, version)),
        "oldObject": old.map(|o| at_version(rd, o, version)),
        "dryRun": req.dry_run,
        "options": options,
    });
    if let Some(sub) = &req.subresource {
        r["subResource"] = json!(sub);
        r["requestSubResource"] = json!(sub);
    }
    if !req.name.is_empty() {
        r["name"] = json!(req.name);
    }
    if let Some(ns) = &req.namespace {
        r["namespace"] = json!(ns);
    }
    let av = format!("admission.k8s.io/{}", review_version(hook));
    (
        json!({"apiVersion": av, "kind": "AdmissionReview", "request": r}),
        uid,
    )
}

/// The parts of an answer the dispatchers use.
struct Answer {
    allowed: bool,
    status: Option<Value>,
    patch: Option<Vec<u8>>,
    warnings: Vec<String>,
}

/// Checks an AdmissionReview answer as upstream's `VerifyAdmissionResponse`; the error is
/// the part after `received invalid webhook response: `.
fn verify(body: &[u8], uid: &str, version: &str, mutating: bool) -> Result<Answer, String> {
    let review: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let av = review
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = review.get("kind").and_then(Value::as_str).unwrap_or("");
    let want = format!("admission.k8s.io/{version}");
    if av != want || kind != "AdmissionReview" {
        return Err(format!(
            "expected webhook response of {want}, Kind=AdmissionReview, got {av}, Kind={kind}"
        ));
    }
    let resp = review
        .get("response")
        .filter(|r| r.is_object())
        .ok_or("webhook response was absent")?;
    let got = resp.get("uid").and_then(Value::as_str).unwrap_or("");
    if got != uid {
        return Err(format!("expected response.uid=\"{uid}\", got \"{got}\""));
    }
    let patch = match resp.get("patch").and_then(Value::as_str) {
        Some(p) if !p.is_empty() => Some(
            base64::engine::general_purpose::STANDARD
                .decode(p)
                .map_err(|e| format!("illegal base64 data in response.patch: {e}"))?,
        ),
        _ => None,
    };
    let patch_type = resp.get("patchType").and_then(Value::as_str);
    if mutating {
        if patch.is_some() {
            match patch_type {
                None => {
                    return Err("webhook returned response.patch but not response.patchType".into())
                }
                Some("JSONPatch") => {}
                Some(other) => {
                    return Err(format!(
                        "webhook returned invalid response.patchType of \"{other}\""
                    ))
                }
            }
        }
    } else if patch.is_some() || patch_type.is_some() {
        return Err(
            "validating webhook may not return response.patch or response.patchType".into(),
        );
    }
    Ok(Answer {
        allowed: resp
            .get("allowed")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        status: resp.get("status").cloned(),
        patch,
        warnings: resp
            .get("warnings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
    })
}

/// Resolves and calls one webhook; the checked answer.
fn call(
    core: &Core,
    hook: &Value,
    body: &Value,
    uid: &str,
    mutating: bool,
) -> Result<Answer, HookError> {
    let calling = |e: String| HookError::Calling(format!("failed to call webhook: {e}"));
    let target = client::target(core, hook).map_err(calling)?;
    let bytes = Bytes::from(serde_json::to_vec(body).map_err(|e| calling(e.to_string()))?);
    let out = client::wait(client::post(target, bytes))
        .map_err(calling)?
        .map_err(calling)?;
    verify(&out, uid, review_version(hook), mutating)
        .map_err(|e| HookError::Calling(format!("received invalid webhook response: {e}")))
}

/// `failurePolicy`: an `Ignore` webhook that could not be called is skipped; otherwise the
/// request fails with upstream's internal error.
fn on_failure(hook: &Value, err: HookError) -> ApiResult<()> {
    match err {
        HookError::Final(e) => Err(e),
        HookError::Calling(msg) => {
            let full = format!("failed calling webhook \"{}\": {msg}", hook_name(hook));
            if hook.get("failurePolicy").and_then(Value::as_str) == Some("Ignore") {
                tracing::warn!("{full}; failure policy is Ignore");
                Ok(())
            } else {
                Err(internal(full))
            }
        }
    }
}

/// Applies a webhook's JSON patch to the object it was sent (at `version`); the object back
/// at the request's version, decoded and defaulted as a client's would be.
fn apply_patch(rd: &ResourceDef, sent: &Value, patch: &[u8]) -> ApiResult<Value> {
    let p: json_patch::Patch =
        serde_json::from_slice(patch).map_err(|e| internal(e.to_string()))?;
    let mut doc = sent.clone();
    json_patch::patch(&mut doc, &p).map_err(|e| internal(e.to_string()))?;
    let sent_version = sent.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if sent_version != rd.api_version() {
        let v = sent_version.rsplit('/').next().unwrap_or("");
        if let Some(other) = registry::find(rd.group, v, rd.plural)
            .filter(|o| rd.conversion.is_some() || o.conversion.is_some())
        {
            doc["apiVersion"] = json!(sent_version);
            doc = rd.view(&other.to_storage(doc)).into_owned();
        }
    }
    doc["apiVersion"] = json!(rd.api_version());
    let (mut out, _unknown) =
        crate::api::defaults::normalize(rd, &doc).map_err(|e| internal(e.message))?;
    crate::api::defaults::apply_defaults(rd, &mut out);
    Ok(out)
}

/// The identity fields a webhook may not change (restored after a patch).
const IDENTITY: [&str; 8] = [
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "resourceVersion",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

fn keep_identity(from: &Value, to: &mut Value) {
    if !to.get("metadata").is_some_and(Value::is_object) {
        to["metadata"] = json!({});
    }
    for f in IDENTITY {
        match from.pointer(&format!("/metadata/{f}")) {
            Some(v) => to["metadata"][f] = v.clone(),
            None => {
                if let Some(m) = to["metadata"].as_object_mut() {
                    m.remove(f);
                }
            }
        }
    }
}

/// `matchConditions`: `Ok(false)` skips the webhook; an evaluation error follows the failure
/// policy (`Ignore` skips it).
fn conditions_allow(hook: &Value, body: &Value) -> ApiResult<bool> {
    match conditions::matches(hook, &body["request"]) {
        Ok(m) => Ok(m),
        Err(e) => on_failure(
            hook,
            HookError::Calling(format!("failed to evaluate match conditions: {e}")),
        )
        .map(|()| false),
    }
}

/// Mutating admission: the matching mutating webhooks in order, each seeing the object as the
/// previous left it; then, once, the `reinvocationPolicy: IfNeeded` ones the object changed
/// after. `Some(new object)` when a webhook changed it.
pub(crate) fn mutating(
    core: &Core,
    req: &Request<'_>,
    obj: &Value,
    old: Option<&Value>,
    warnings: &mut Vec<String>,
) -> ApiResult<Option<Value>> {
    if rules::is_exempt(req.rd) {
        return Ok(None);
    }
    let hooks = webhooks(core, "mutatingwebhookconfigurations");
    if hooks.is_empty() {
        return Ok(None);
    }
    let mut cur = obj.clone();
    let mut changed = false;
    // Per webhook: the change count when it was last called.
    let mut seen: Vec<Option<usize>> = vec![None; hooks.len()];
    let mut changes = 0usize;
    for pass in 0..2 {
        for (i, hook) in hooks.iter().enumerate() {
            if pass == 1 {
                let again = hook.get("reinvocationPolicy").and_then(Value::as_str)
                    == Some("IfNeeded")
                    && seen[i].is_some_and(|at| at < changes);
                if !again {
                    continue;
                }
            }
            let Some(version) = rules::applies(core, hook, req, Some(&cur), old) else {
                continue;
            };
            let (body, uid) = review(hook, req, version, Some(&cur), old);
            if !conditions_allow(hook, &body)? {
                continue;
            }
            if req.dry_run {
                if let Some(e) = dry_run_unsupported(hook) {
                    on_failure(hook, e)?;
                }
            }
            seen[i] = Some(changes);
            let answer = match call(core, hook, &body, &uid, true) {
                Ok(a) => a,
                Err(e) => {
                    on_failure(hook, e)?;
                    continue;
                }
            };
            warnings.extend(answer.warnings);
            if !answer.allowed {
                return Err(denied(hook, answer.status.as_ref()));
            }
            let Some(patch) = answer.patch else {
                continue;
            };
            let sent = &body["request"]["object"];
            let mut next = apply_patch(req.rd, sent, &patch)?;
            keep_identity(&cur, &mut next);
            if next != cur {
                cur = next;
                changed = true;
                changes += 1;
                seen[i] = Some(changes);
            }
        }
        if changes == 0 {
            break;
        }
    }
    Ok(changed.then_some(cur))
}

/// Validating admission in kube-apiserver's plugin order: ValidatingAdmissionPolicy
/// bindings, then validating webhooks.
pub(crate) fn validating(
    core: &Core,
    req: &Request<'_>,
    obj: Option<&Value>,
    old: Option<&Value>,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    policy::admit(core, req, obj, old, warnings)?;
    validating_webhooks(core, req, obj, old, warnings)
}

/// Every matching validating webhook, called in parallel; the first refusal (in webhook
/// order) fails the request.
fn validating_webhooks(
    core: &Core,
    req: &Request<'_>,
    obj: Option<&Value>,
    old: Option<&Value>,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    if rules::is_exempt(req.rd) {
        return Ok(());
    }
    let hooks = webhooks(core, "validatingwebhookconfigurations");
    if hooks.is_empty() {
        return Ok(());
    }
    let mut calls = Vec::new();
    for hook in &hooks {
        let Some(version) = rules::applies(core, hook, req, obj, old) else {
            continue;
        };
        let (body, uid) = review(hook, req, version, obj, old);
        if !conditions_allow(hook, &body)? {
            continue;
        }
        if req.dry_run {
            if let Some(e) = dry_run_unsupported(hook) {
                on_failure(hook, e)?;
            }
        }
        let target = client::target(core, hook)
            .map_err(|e| HookError::Calling(format!("failed to call webhook: {e}")));
        calls.push((hook, body, uid, target));
    }
    if calls.is_empty() {
        return Ok(());
    }
    // The calls run together; their answers are read in webhook order.
    let futures: Vec<_> = calls
        .iter()
        .map(|(_, body, _, target)| {
            let target = target.as_ref().ok().cloned();
            let bytes = serde_json::to_vec(body).map(Bytes::from);
            async move {
                match (target, bytes) {
                    (Some(t), Ok(b)) => Some(client::post(t, b).await),
                    (_, Err(e)) => Some(Err(e.to_string())),
                    (None, _) => None,
                }
            }
        })
        .collect();
    let results = client::wait(futures_util::future::join_all(futures))
        .map_err(|e| internal(format!("failed to call webhooks: {e}")))?;
    for ((hook, _, uid, target), result) in calls.into_iter().zip(results) {
        let answer = match (target, result) {
            (Err(e), _) => Err(e),
            (Ok(_), Some(Ok(bytes))) => verify(&bytes, &uid, review_version(hook), false)
                .map_err(|e| HookError::Calling(format!("received invalid webhook response: {e}"))),
            (Ok(_), Some(Err(e))) => {
                Err(HookError::Calling(format!("failed to call webhook: {e}")))
            }
            (Ok(_), None) => Err(HookError::Calling("failed to call webhook".into())),
        };
        match answer {
            Ok(a) => {
                warnings.extend(a.warnings);
                if !a.allowed {
                    return Err(denied(hook, a.status.as_ref()));
                }
            }
            Err(e) => on_failure(hook, e)?,
        }
    }
    Ok(())
}

/// Admission of a delete: mutating webhooks (whose patches have nothing to apply to) then
/// validating webhooks, with the object being deleted as `oldObject`.
pub(crate) fn deleting(core: &Core, req: &Request<'_>, old: &Value) -> ApiResult<()> {
    let mut warnings = Vec::new();
    if !rules::is_exempt(req.rd) {
        for hook in webhooks(core, "mutatingwebhookconfigurations") {
            let Some(version) = rules::applies(core, &hook, req, None, Some(old)) else {
                continue;
            };
            let (body, uid) = review(&hook, req, version, None, Some(old));
            if !conditions_allow(&hook, &body)? {
                continue;
            }
            if req.dry_run {
                if let Some(e) = dry_run_unsupported(&hook) {
                    on_failure(&hook, e)?;
                }
            }
            match call(core, &hook, &body, &uid, true) {
                Ok(a) if !a.allowed => return Err(denied(&hook, a.status.as_ref())),
                Ok(_) => {}
                Err(e) => on_failure(&hook, e)?,
            }
        }
    }
    validating(core, req, None, Some(old), &mut warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An autoscaling/v1 HPA reaches a webhook registered for v2 as v2, and the
    /// webhook's patch (on v2's `metrics`) comes back as a v1 object.
    #[test]
    fn a_converted_kind_is_sent_and_patched_at_the_webhook_version() {
        let v1 = registry::find("autoscaling", "v1", "horizontalpodautoscalers").expect("v1");
        let obj = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h", "namespace": "default"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1,
                     "maxReplicas": 3, "targetCPUUtilizationPercentage": 50}});
        let sent = at_version(v1, &obj, "v2");
        assert_eq!(sent["apiVersion"], "autoscaling/v2");
        assert_eq!(
            sent["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        let patch = br#"[{"op": "replace", "path": "/spec/metrics/0/resource/target/averageUtilization", "value": 70}]"#;
        let back = apply_patch(v1, &sent, patch).expect("patched");
        assert_eq!(back["apiVersion"], "autoscaling/v1");
        assert_eq!(back["spec"]["targetCPUUtilizationPercentage"], 70);
        assert!(back["spec"].get("metrics").is_none());
        // The same version: untouched.
        assert_eq!(at_version(v1, &obj, "v1"), obj);
    }
}
