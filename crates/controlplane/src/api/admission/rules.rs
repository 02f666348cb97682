//! Which webhooks a request goes to, as k8s.io/apiserver's webhook `rules`, `namespace` and
//! `object` matchers decide: rules (operations, apiGroups, apiVersions, resources with
//! subresources, scope) under `matchPolicy`, then `namespaceSelector` and `objectSelector`.

use super::{Operation, Request};
use crate::api::objects::Core;
use crate::api::selector::LabelSelector;
use crate::registry::{self, ResourceDef};
use serde_json::Value;

/// The webhook configuration kinds and admission policies are never sent to webhooks, so a
/// broken webhook cannot lock its own configuration (upstream's
/// `IsExemptAdmissionConfigurationResource`).
pub(crate) fn is_exempt(rd: &ResourceDef) -> bool {
    rd.group == "admissionregistration.k8s.io"
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn has(list: &[&str], want: &str) -> bool {
    list.iter().any(|x| *x == "*" || *x == want)
}

/// One rule against the request at API version `version` (the request's own, or an
/// equivalent one under `matchPolicy: Equivalent`).
fn rule_matches(rule: &Value, req: &Request<'_>, version: &str) -> bool {
    let ops = strings(rule.get("operations"));
    if !has(&ops, req.op.as_str()) {
        return false;
    }
    if !has(&strings(rule.get("apiGroups")), req.rd.group)
        || !has(&strings(rule.get("apiVersions")), version)
    {
        return false;
    }
    // "pods" is the main resource only, "pods/*" every subresource, "*/status" every
    // resource's status, "*/*" everything.
    let sub = req.subresource.as_deref().unwrap_or("");
    let resource_ok = strings(rule.get("resources")).iter().any(|r| {
        let (res, rsub) = r.split_once('/').unwrap_or((r, ""));
        (res == "*" || res == req.rd.plural) && (rsub == "*" || rsub == sub)
    });
    if !resource_ok {
        return false;
    }
    let is_namespace = req.rd.group.is_empty() && req.rd.plural == "namespaces";
    match rule.get("scope").and_then(Value::as_str).unwrap_or("*") {
        // A Namespace object is cluster-scoped, whatever namespace its request carries.
        "Namespaced" => !is_namespace && req.rd.namespaced,
        "Cluster" => is_namespace || !req.rd.namespaced,
        _ => true,
    }
}

/// The version the webhook is called at, when its rules match the request: the request's
/// own, or under `Equivalent` (the default) another served version of the same resource
/// (custom resources may serve several; built-ins serve one per group here).
pub(crate) fn matched_version(
    hook: &Value,
    req: &Request<'_>,
    served: impl Fn(&str) -> Option<&'static ResourceDef>,
) -> Option<&'static str> {
    let rules = hook.get("rules").and_then(Value::as_array)?;
    if rules.iter().any(|r| rule_matches(r, req, req.rd.version)) {
        return Some(req.rd.version);
    }
    if hook.get("matchPolicy").and_then(Value::as_str) == Some("Exact") {
        return None;
    }
    for rule in rules {
        for v in strings(rule.get("apiVersions")) {
            if v == "*" || v == req.rd.version {
                continue;
            }
            if let Some(other) = served(v) {
                if rule_matches(rule, req, other.version) {
                    return Some(other.version);
                }
            }
        }
    }
    None
}

/// `namespaceSelector`: cluster-scoped requests (but for Namespaces) always match; a
/// Namespace matches on its own labels, anything else on its namespace's.
pub(crate) fn namespace_matches(
    core: &Core,
    hook: &Value,
    req: &Request<'_>,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> bool {
    let Some(sel) = hook.get("namespaceSelector") else {
        return true;
    };
    let sel = LabelSelector::from_object(sel);
    if sel.is_empty() {
        return true;
    }
    let is_namespace = req.rd.group.is_empty() && req.rd.plural == "namespaces";
    if is_namespace {
        let labels = obj.or(old).and_then(|o| o.pointer("/metadata/labels"));
        return sel.matches_labels(labels);
    }
    let Some(ns) = req.namespace.as_deref().filter(|n| !n.is_empty()) else {
        return true;
    };
    match core.get_stored(&registry::RESOURCES[0], None, ns) {
        Some(n) => sel.matches_labels(n.object.pointer("/metadata/labels")),
        None => false,
    }
}

/// `objectSelector`: matches the new object's or the old object's labels.
pub(crate) fn object_matches(hook: &Value, obj: Option<&Value>, old: Option<&Value>) -> bool {
    let Some(sel) = hook.get("objectSelector") else {
        return true;
    };
    let sel = LabelSelector::from_object(sel);
    if sel.is_empty() {
        return true;
    }
    [obj, old].into_iter().flatten().any(|o| sel.matches(o))
}

/// Whether a webhook applies to a request; `CONNECT` is never dispatched here.
pub(crate) fn applies(
    core: &Core,
    hook: &Value,
    req: &Request<'_>,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> Option<&'static str> {
    if req.op == Operation::Connect {
        return None;
    }
    // Served versions: built-in and this control plane's custom resources.
    let served = |v: &str| core.resources().find(req.rd.group, v, req.rd.plural);
    let v = matched_version(hook, req, served)?;
    (namespace_matches(core, hook, req, obj, old) && object_matches(hook, obj, old)).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(plural: &str, op: Operation, sub: Option<&str>) -> Request<'static> {
        let rd = registry::RESOURCES
            .iter()
            .find(|r| r.plural == plural)
            .expect("a served resource");
        Request {
            rd,
            subresource: sub.map(String::from),
            op,
            namespace: rd.namespaced.then(|| "default".to_string()),
            name: "x".into(),
            dry_run: false,
            user: None,
            manager: String::new(),
            options_kind: "CreateOptions",
        }
    }

    fn matched_version_b(hook: &Value, req: &Request<'_>) -> Option<&'static str> {
        matched_version(hook, req, |v| {
            registry::find(req.rd.group, v, req.rd.plural)
        })
    }

    fn hook(rules: Value) -> Value {
        json!({"name": "a.b.c", "rules": rules})
    }

    #[test]
    fn resources_and_subresources_match_as_upstream() {
        let pods = req("pods", Operation::Create, None);
        let status = req("pods", Operation::Update, Some("status"));
        let all = |res: &str| {
            hook(
                json!([{"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": [res]}]),
            )
        };
        assert!(matched_version_b(&all("pods"), &pods).is_some());
        assert!(matched_version_b(&all("pods"), &status).is_none());
        assert!(matched_version_b(&all("*"), &status).is_none());
        assert!(matched_version_b(&all("*/*"), &status).is_some());
        assert!(matched_version_b(&all("pods/*"), &status).is_some());
        assert!(matched_version_b(&all("*/status"), &status).is_some());
        assert!(matched_version_b(&all("*/status"), &pods).is_none());
        assert!(matched_version_b(&all("configmaps"), &pods).is_none());
    }

    #[test]
    fn operations_groups_versions_and_scope() {
        let pods = req("pods", Operation::Delete, None);
        let h = |ops: Value, groups: Value, versions: Value, scope: &str| {
            hook(
                json!([{"operations": ops, "apiGroups": groups, "apiVersions": versions, "resources": ["*"], "scope": scope}]),
            )
        };
        assert!(matched_version_b(
            &h(json!(["DELETE"]), json!([""]), json!(["v1"]), "*"),
            &pods
        )
        .is_some());
        assert!(matched_version_b(
            &h(json!(["CREATE"]), json!([""]), json!(["v1"]), "*"),
            &pods
        )
        .is_none());
        assert!(
            matched_version_b(&h(json!(["*"]), json!(["apps"]), json!(["*"]), "*"), &pods)
                .is_none()
        );
        assert!(
            matched_version_b(&h(json!(["*"]), json!(["*"]), json!(["v2"]), "*"), &pods).is_none()
        );
        assert!(matched_version_b(
            &h(json!(["*"]), json!(["*"]), json!(["*"]), "Namespaced"),
            &pods
        )
        .is_some());
        assert!(matched_version_b(
            &h(json!(["*"]), json!(["*"]), json!(["*"]), "Cluster"),
            &pods
        )
        .is_none());
        let ns = req("namespaces", Operation::Create, None);
        assert!(
            matched_version_b(&h(json!(["*"]), json!(["*"]), json!(["*"]), "Cluster"), &ns)
                .is_some()
        );
        assert!(matched_version_b(
            &h(json!(["*"]), json!(["*"]), json!(["*"]), "Namespaced"),
            &ns
        )
        .is_none());
    }

    #[test]
    fn object_selector_matches_old_or_new() {
        let h = json!({"objectSelector": {"matchLabels": {"a": "1"}}});
        let with = json!({"metadata": {"labels": {"a": "1"}}});
        let without = json!({"metadata": {}});
        assert!(object_matches(&h, Some(&with), None));
        assert!(object_matches(&h, Some(&without), Some(&with)));
        assert!(!object_matches(&h, Some(&without), None));
        assert!(object_matches(&json!({"objectSelector": {}}), None, None));
    }
}
