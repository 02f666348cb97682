//! ValidatingAdmissionPolicy and its bindings (admissionregistration.k8s.io/v1), enforced as
//! kube-apiserver's `ValidatingAdmissionPolicy` plugin does (k8s.io/apiserver
//! `pkg/admission/plugin/policy/validating`): for each binding whose policy exists, the
//! policy's `matchConstraints` and the binding's `matchResources` (rules, resourceNames,
//! exclusions, namespace and object selectors), then per param object the `matchConditions`,
//! `variables` and `validations` in CEL with `object`, `oldObject`, `request`, `params`,
//! `namespaceObject` and `variables`. A false validation is a decision the binding's
//! `validationActions` act on: Deny refuses the request (reason `Invalid` unless the
//! validation says otherwise), Warn adds a warning, Audit does nothing (there is no audit
//! log here). Evaluation and configuration errors follow the policy's `failurePolicy`.
//! `authorizer` and `auditAnnotations` are not provided; variables are evaluated in order
//! before the validations rather than lazily (a variable that fails surfaces only when an
//! expression uses it, as upstream's lazy evaluation would show it).

use super::conditions;
use super::{rules, Operation, Request};
use crate::api::error::{ApiError, ApiResult};
use crate::api::objects::{meta_str, Core};
use crate::api::selector::LabelSelector;
use crate::registry;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// What one false (or failed) validation decided.
struct Decision {
    message: String,
    reason: &'static str,
}

fn text<'a>(v: &'a Value, f: &str) -> &'a str {
    v.get(f).and_then(Value::as_str).unwrap_or("")
}

fn stored(core: &Core, plural: &str) -> Vec<Value> {
    let Some(rd) = registry::find("admissionregistration.k8s.io", "v1", plural) else {
        return Vec::new();
    };
    let (mut items, _) = core.store.list(&rd.key_prefix(None));
    items.sort_by(|a, b| meta_str(&a.object, "name").cmp(meta_str(&b.object, "name")));
    items.into_iter().map(|s| (*s.object).clone()).collect()
}

/// The rules of `list` that apply to the request's name (`resourceNames`), as a webhook-shaped
/// value the shared rule matcher reads.
fn named_rules(list: Option<&Value>, req: &Request<'_>, policy: &str) -> Value {
    let rules: Vec<Value> = list
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| {
            let names: Vec<&str> = r
                .get("resourceNames")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            names.is_empty() || names.contains(&req.name.as_str())
        })
        .cloned()
        .collect();
    json!({"rules": rules, "matchPolicy": policy})
}

/// `MatchResources` against the request: the version it matched at, or `None`.
fn resources_match(
    core: &Core,
    mr: &Value,
    req: &Request<'_>,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> Option<&'static str> {
    if !rules::namespace_matches(core, mr, req, obj, old) || !rules::object_matches(mr, obj, old) {
        return None;
    }
    let policy = mr
        .get("matchPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Equivalent");
    let resources = core.resources();
    let served = |v: &str| resources.find(req.rd.group, v, req.rd.plural);
    let excluded = named_rules(mr.get("excludeResourceRules"), req, policy);
    if excluded["rules"].as_array().is_some_and(|r| !r.is_empty())
        && rules::matched_version(&excluded, req, served).is_some()
    {
        return None;
    }
    let any_rules = mr
        .get("resourceRules")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty());
    if !any_rules {
        return Some(req.rd.version);
    }
    let included = named_rules(mr.get("resourceRules"), req, policy);
    rules::matched_version(&included, req, served)
}

/// The param objects a binding selects, as upstream's `CollectParams`: `[null]` when the
/// policy has no `paramKind` or the binding no `paramRef`; the error (a configuration error,
/// under the failure policy) words upstream's.
fn params(
    core: &Core,
    policy: &Value,
    binding: &Value,
    req: &Request<'_>,
) -> Result<Vec<Value>, String> {
    let (Some(kind), Some(pref)) = (
        policy.pointer("/spec/paramKind"),
        binding.pointer("/spec/paramRef"),
    ) else {
        return Ok(vec![Value::Null]);
    };
    let api_version = text(kind, "apiVersion");
    let kind_name = text(kind, "kind");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let rd = core
        .resources()
        .find_kind(group, kind_name)
        .filter(|rd| rd.version == version)
        .ok_or_else(|| {
            format!(
                "paramKind kind `&ParamKind{{APIVersion:{api_version},Kind:{kind_name},}}` not known"
            )
        })?;
    let ns = match (rd.namespaced, text(pref, "namespace")) {
        (true, "") => match req.namespace.as_deref() {
            Some(n) => Some(n.to_string()),
            None => {
                return Err("cannot use namespaced paramRef in policy binding that matches cluster-scoped resources".into())
            }
        },
        (true, n) => Some(n.to_string()),
        (false, "") => None,
        (false, _) => {
            return Err(
                "paramRef.namespace must not be provided for a cluster-scoped `paramKind`".into(),
            )
        }
    };
    let name = text(pref, "name");
    let found: Vec<Value> = if !name.is_empty() {
        core.get_stored(rd, ns.as_deref(), name)
            .map(|s| rd.view(&s.object).into_owned())
            .into_iter()
            .collect()
    } else if let Some(sel) = pref.get("selector") {
        let sel = LabelSelector::from_object(sel);
        let (items, _) = core.store.list(&rd.key_prefix(ns.as_deref()));
        items
            .into_iter()
            .map(|s| rd.view(&s.object).into_owned())
            .filter(|o| sel.matches(o))
            .collect()
    } else {
        return Err("one of name or selector must be provided".into());
    };
    if found.is_empty() && text(pref, "parameterNotFoundAction") == "Deny" {
        return Err(
            "no params found for policy binding with `Deny` parameterNotFoundAction".into(),
        );
    }
    Ok(found)
}

fn run(expr: &str, ctx: &cel::Context) -> Result<cel::Value, String> {
    let prog = conditions::compile(expr)?;
    prog.execute(ctx)
        .map_err(|e| format!("expression '{expr}' resulted in error: {e}"))
}

fn cel_map(map: HashMap<cel::objects::Key, cel::Value>) -> cel::Value {
    cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
}

/// Upstream's `StatusReason` values a validation may name, with their codes.
fn reason_code(reason: &str) -> (&'static str, u16) {
    match reason {
        "Unauthorized" => ("Unauthorized", 401),
        "Forbidden" => ("Forbidden", 403),
        "RequestEntityTooLarge" => ("RequestEntityTooLarge", 413),
        "" | "Invalid" => ("Invalid", 422),
        other => (super::known_reason(other), 400),
    }
}

/// One policy under one param: its decisions (false or failed validations), or `Ok(empty)`
/// when a match condition is false.
fn evaluate(
    policy: &Value,
    request: &Value,
    param: &Value,
    namespace_object: &Value,
) -> Result<Vec<Decision>, String> {
    let spec = &policy["spec"];
    let fail = text(spec, "failurePolicy") != "Ignore";
    let mut ctx = cel::Context::with_env(conditions::env().clone());
    ctx.add_variable_from_value("object", conditions::to_cel(&request["object"]));
    ctx.add_variable_from_value("oldObject", conditions::to_cel(&request["oldObject"]));
    ctx.add_variable_from_value("request", conditions::to_cel(request));
    ctx.add_variable_from_value("params", conditions::to_cel(param));
    ctx.add_variable_from_value("namespaceObject", conditions::to_cel(namespace_object));
    let mut vars = HashMap::new();
    ctx.add_variable_from_value("variables", cel_map(vars.clone()));

    // matchConditions: any false skips the policy; otherwise an error is a failure.
    let mut cond_errors = Vec::new();
    for c in spec
        .get("matchConditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match run(text(c, "expression"), &ctx) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => return Ok(Vec::new()),
            Ok(_) => cond_errors.push(format!(
                "matchCondition '{}': expression must evaluate to bool",
                text(c, "name")
            )),
            Err(e) => cond_errors.push(format!("matchCondition '{}': {e}", text(c, "name"))),
        }
    }
    if !cond_errors.is_empty() {
        return Err(cond_errors.join(", "));
    }

    // Variables in order, each seeing the ones before it. A failed one is left out and its
    // error kept: upstream evaluates variables lazily, so the error is only seen by an
    // expression that uses the variable, and is reported as that expression's.
    let mut var_errors: Vec<(String, String)> = Vec::new();
    for v in spec
        .get("variables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = text(v, "name");
        let expr = text(v, "expression");
        let out = conditions::compile(expr).and_then(|p| match p.execute(&ctx) {
            Ok(val) => Ok(val),
            Err(e) => Err(e.to_string()),
        });
        match out {
            Ok(val) => {
                vars.insert(cel::objects::Key::String(Arc::new(name.to_string())), val);
                ctx.add_variable_from_value("variables", cel_map(vars.clone()));
            }
            Err(e) => var_errors.push((name.to_string(), e)),
        }
    }
    let explain = |expr: &str, e: String| -> String {
        var_errors
            .iter()
            .find(|(n, _)| expr.contains(&format!("variables.{n}")))
            .map(|(_, ve)| format!("expression '{expr}' resulted in error: {ve}"))
            .unwrap_or(e)
    };

    let mut out = Vec::new();
    for v in spec
        .get("validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let expr = text(v, "expression");
        let (reason, _) = reason_code(text(v, "reason"));
        match run(expr, &ctx) {
            Ok(cel::Value::Bool(true)) => {}
            // Anything but true denies (upstream's `EvalResult != celtypes.True`).
            Ok(_) => {
                let by_expr = text(v, "messageExpression");
                let computed = (!by_expr.is_empty())
                    .then(|| run(by_expr, &ctx).ok())
                    .flatten()
                    .and_then(|m| match m {
                        cel::Value::String(s) => Some(s.trim().to_string()),
                        _ => None,
                    })
                    // Empty, over 5 KiB or several lines: the static message instead.
                    .filter(|m| !m.is_empty() && m.len() <= 5 * 1024 && !m.contains('\n'));
                let message = computed.unwrap_or_else(|| match text(v, "message").trim() {
                    "" => format!("failed expression: {}", expr.trim()),
                    m => m.to_string(),
                });
                out.push(Decision { message, reason });
            }
            Err(e) => {
                if fail {
                    out.push(Decision {
                        message: explain(expr, e),
                        reason: "Invalid",
                    });
                }
            }
        }
    }
    Ok(out)
}

/// A refusal as upstream's dispatcher builds it: `admission.NewForbidden` with the
/// decision's reason (Invalid by default) and that reason's code.
fn denied(req: &Request<'_>, policy: &str, binding: &str, d: &Decision) -> ApiError {
    let message = format!(
        "ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: {}",
        d.message
    );
    let gr = req.rd.group_resource();
    let full = if req.name.is_empty() {
        format!("{gr} is forbidden: {message}")
    } else {
        format!("{gr} \"{}\" is forbidden: {message}", req.name)
    };
    let (reason, code) = reason_code(d.reason);
    let mut e = ApiError::new(code, reason, full);
    let mut details = json!({"name": req.name, "kind": req.rd.plural,
        "causes": [{"message": message}]});
    if !req.rd.group.is_empty() {
        details["group"] = json!(req.rd.group);
    }
    e.details = Some(details);
    e
}

/// Every binding of every policy against one write (`obj` absent on delete, `old` absent on
/// create); warnings of `Warn` bindings go to `warnings`; the first `Deny` decision refuses.
pub(crate) fn admit(
    core: &Core,
    req: &Request<'_>,
    obj: Option<&Value>,
    old: Option<&Value>,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    if rules::is_exempt(req.rd) || req.op == Operation::Connect {
        return Ok(());
    }
    let bindings = stored(core, "validatingadmissionpolicybindings");
    if bindings.is_empty() {
        return Ok(());
    }
    let policies: HashMap<String, Value> = stored(core, "validatingadmissionpolicies")
        .into_iter()
        .map(|p| (meta_str(&p, "name").to_string(), p))
        .collect();
    let mut first_denial: Option<ApiError> = None;
    for binding in &bindings {
        let bname = meta_str(binding, "name");
        let Some(policy) = policies.get(text(&binding["spec"], "policyName")) else {
            continue;
        };
        let pname = meta_str(policy, "name");
        let Some(version) = policy
            .pointer("/spec/matchConstraints")
            .and_then(|mc| resources_match(core, mc, req, obj, old))
        else {
            continue;
        };
        if let Some(mr) = binding.pointer("/spec/matchResources") {
            if resources_match(core, mr, req, obj, old).is_none() {
                continue;
            }
        }
        let fail = text(&policy["spec"], "failurePolicy") != "Ignore";
        let (review, _) = super::review(&json!({}), req, version, obj, old);
        let request = &review["request"];
        let namespace_object = match req.namespace.as_deref() {
            Some(ns) if req.rd.namespaced => core
                .get_stored(&registry::RESOURCES[0], None, ns)
                .map(|n| (*n.object).clone())
                .unwrap_or(Value::Null),
            _ => Value::Null,
        };
        let mut decisions = Vec::new();
        match params(core, policy, binding, req) {
            Err(e) => {
                if fail {
                    decisions.push(Decision {
                        message: format!("failed to configure binding: {e}"),
                        reason: "Invalid",
                    });
                }
            }
            Ok(list) => {
                for p in &list {
                    match evaluate(policy, request, p, &namespace_object) {
                        Ok(d) => decisions.extend(d),
                        Err(e) if fail => decisions.push(Decision {
                            message: e,
                            reason: "Invalid",
                        }),
                        Err(_) => {}
                    }
                }
            }
        }
        let actions: Vec<&str> = binding
            .pointer("/spec/validationActions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for d in &decisions {
            for a in &actions {
                match *a {
                    "Deny" if first_denial.is_none() => {
                        first_denial = Some(denied(req, pname, bname, d));
                    }
                    "Warn" => warnings.push(format!(
                        "Validation failed for ValidatingAdmissionPolicy '{pname}' with binding '{bname}': {}",
                        d.message
                    )),
                    // Audit: no audit log to annotate.
                    _ => {}
                }
            }
        }
    }
    match first_denial {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decisions(spec: Value, object: Value) -> Vec<(String, &'static str)> {
        let policy = json!({"metadata": {"name": "p"}, "spec": spec});
        let request = json!({"operation": "CREATE", "namespace": "ns",
                             "object": object, "oldObject": null});
        evaluate(
            &policy,
            &request,
            &json!({"max": 2}),
            &json!({"metadata": {"name": "ns"}}),
        )
        .expect("evaluates")
        .into_iter()
        .map(|d| (d.message, d.reason))
        .collect()
    }

    #[test]
    fn messages_reasons_and_failures_as_upstream() {
        let obj = json!({"spec": {"replicas": 3}});
        let v = |validation: Value| json!({"validations": [validation]});
        // No message: the trimmed expression; reason Invalid.
        assert_eq!(
            decisions(
                v(json!({"expression": " object.spec.replicas <= params.max "})),
                obj.clone()
            ),
            vec![(
                "failed expression: object.spec.replicas <= params.max".into(),
                "Invalid"
            )]
        );
        // messageExpression wins; an empty or failing one falls back to message.
        assert_eq!(
            decisions(
                v(
                    json!({"expression": "false", "reason": "Forbidden", "message": "static",
                         "messageExpression": "'at most ' + string(params.max)"})
                ),
                obj.clone()
            ),
            vec![("at most 2".into(), "Forbidden")]
        );
        for bad in ["'  '", "object.nope", "'a\\nb'", "1"] {
            assert_eq!(
                decisions(
                    v(
                        json!({"expression": "false", "message": " static ", "messageExpression": bad})
                    ),
                    obj.clone()
                ),
                vec![("static".into(), "Invalid")],
                "{bad}"
            );
        }
        // True admits; an error is a decision under Fail and nothing under Ignore.
        assert!(decisions(
            v(json!({"expression": "namespaceObject.metadata.name == request.namespace"})),
            obj.clone()
        )
        .is_empty());
        let err = decisions(
            v(json!({"expression": "object.spec.nope == 1"})),
            obj.clone(),
        );
        assert!(
            err[0]
                .0
                .starts_with("expression 'object.spec.nope == 1' resulted in error"),
            "{err:?}"
        );
        let mut spec = v(json!({"expression": "object.spec.nope == 1"}));
        spec["failurePolicy"] = json!("Ignore");
        assert!(decisions(spec, obj.clone()).is_empty());
        // A false match condition skips the validations.
        let mut spec = v(json!({"expression": "false"}));
        spec["matchConditions"] =
            json!([{"name": "never", "expression": "object.spec.replicas > 10"}]);
        assert!(decisions(spec, obj).is_empty());
    }
}
