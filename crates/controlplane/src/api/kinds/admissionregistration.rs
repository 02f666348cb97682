//! Webhook configurations (admissionregistration.k8s.io/v1): the checks of upstream's
//! pkg/apis/admissionregistration/validation beyond the ones `networking.rs` already makes
//! (names, clientConfig presence, sideEffects and admissionReviewVersions presence,
//! failurePolicy, reinvocationPolicy; defaults are there too): sideEffects and
//! admissionReviewVersions values, timeoutSeconds, matchPolicy, the URL or service, rules.
//! They matter because `api/admission` calls what these objects say.

use crate::api::defaults::dns1123_subdomain;
use crate::api::error::{cause, Cause};
use crate::registry::ResourceDef;
use serde_json::{json, Value};

const URL_FORM: &str = "; desired format: https://host[/path]";

fn invalid(causes: &mut Vec<Cause>, field: &str, shown: String, msg: &str) {
    causes.push(cause(
        "FieldValueInvalid",
        field,
        format!("Invalid value: {shown}: {msg}"),
    ));
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// A `[]string` as Go's `%#v` prints it.
fn go_strings(list: &[&str]) -> String {
    let inner = list
        .iter()
        .map(|s| quoted(s))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[]string{{{inner}}}")
}

fn strings(v: Option<&Value>) -> Option<Vec<&str>> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().map(|s| s.as_str().unwrap_or("")).collect())
}

/// `webhook.ValidateWebhookURL` with https forced.
fn validate_url(url: &str, f: &str, causes: &mut Vec<Cause>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        causes.push(cause(
            "FieldValueRequired",
            f,
            format!("Required value: url must be a valid URL: parse {url:?}: missing protocol scheme{URL_FORM}"),
        ));
        return;
    };
    if scheme != "https" {
        invalid(
            causes,
            f,
            quoted(scheme),
            &format!("'https' is the only allowed URL scheme{URL_FORM}"),
        );
    }
    let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = rest.split('/').next().unwrap_or("");
    let (user, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if host.is_empty() {
        invalid(
            causes,
            f,
            quoted(host),
            &format!("host must be specified{URL_FORM}"),
        );
    }
    if let Some(u) = user {
        invalid(
            causes,
            f,
            quoted(u),
            "user information is not permitted in the URL",
        );
    }
    if !fragment.is_empty() {
        invalid(
            causes,
            f,
            quoted(fragment),
            "fragments are not permitted in the URL",
        );
    }
    if !query.is_empty() {
        invalid(
            causes,
            f,
            quoted(query),
            "query parameters are not permitted in the URL",
        );
    }
}

/// `webhook.ValidateWebhookService`.
fn validate_service(svc: &Value, f: &str, causes: &mut Vec<Cause>) {
    let s = |k: &str| svc.get(k).and_then(Value::as_str).unwrap_or("");
    if s("name").is_empty() {
        causes.push(cause(
            "FieldValueRequired",
            &format!("{f}.name"),
            "Required value: service name is required",
        ));
    }
    if s("namespace").is_empty() {
        causes.push(cause(
            "FieldValueRequired",
            &format!("{f}.namespace"),
            "Required value: service namespace is required",
        ));
    }
    if let Some(port) = svc.get("port").and_then(Value::as_i64) {
        if !(1..=65535).contains(&port) {
            invalid(
                causes,
                &format!("{f}.port"),
                port.to_string(),
                "port is not valid: must be between 1 and 65535, inclusive",
            );
        }
    }
    let path = s("path");
    if path.is_empty() || path == "/" {
        return;
    }
    let pf = format!("{f}.path");
    if path == "//" {
        invalid(causes, &pf, quoted(path), "segment[0] may not be empty");
        return;
    }
    if !path.starts_with('/') {
        invalid(causes, &pf, quoted(path), "must start with a '/'");
    }
    let check = path.strip_prefix('/').unwrap_or(path);
    let check = check.strip_suffix('/').unwrap_or(check);
    for (i, step) in check.split('/').enumerate() {
        if step.is_empty() {
            invalid(
                causes,
                &pf,
                quoted(path),
                &format!("segment[{i}] may not be empty"),
            );
        } else if let Some(msg) = dns1123_subdomain(step) {
            invalid(causes, &pf, quoted(path), &format!("segment[{i}]: {msg}"));
        }
    }
}

/// `validateResources`: wildcards may not be mixed with what they cover.
fn validate_resources(res: &[&str], f: &str, causes: &mut Vec<Cause>) {
    if res.is_empty() {
        causes.push(cause("FieldValueRequired", f, "Required value"));
    }
    let (mut double, mut single, mut plain) = (false, false, false);
    let mut res_wild = std::collections::BTreeSet::new();
    let mut sub_wild = std::collections::BTreeSet::new();
    for (i, rs) in res.iter().enumerate() {
        let fi = format!("{f}[{i}]");
        if rs.is_empty() {
            causes.push(cause("FieldValueRequired", &fi, "Required value"));
            continue;
        }
        double |= *rs == "*/*";
        single |= *rs == "*";
        let Some((r, s)) = rs.split_once('/') else {
            plain = *rs != "*";
            continue;
        };
        if res_wild.contains(r) {
            invalid(
                causes,
                &fi,
                quoted(rs),
                &format!("if '{r}/*' is present, must not specify {rs}"),
            );
        }
        if sub_wild.contains(s) {
            invalid(
                causes,
                &fi,
                quoted(rs),
                &format!("if '*/{s}' is present, must not specify {rs}"),
            );
        }
        if s == "*" {
            res_wild.insert(r);
        }
        if r == "*" {
            sub_wild.insert(s);
        }
    }
    if res.len() > 1 && double {
        invalid(
            causes,
            f,
            go_strings(res),
            "if '*/*' is present, must not specify other resources",
        );
    }
    if single && plain {
        invalid(
            causes,
            f,
            go_strings(res),
            "if '*' is present, must not specify other resources without subresources",
        );
    }
}

/// `validateRuleWithOperations`.
fn validate_rule(rule: &Value, f: &str, causes: &mut Vec<Cause>) {
    let required = |causes: &mut Vec<Cause>, field: String| {
        causes.push(cause("FieldValueRequired", &field, "Required value"))
    };
    let ops = strings(rule.get("operations")).unwrap_or_default();
    if ops.is_empty() {
        required(causes, format!("{f}.operations"));
    }
    if ops.len() > 1 && ops.contains(&"*") {
        invalid(
            causes,
            &format!("{f}.operations"),
            go_strings(&ops),
            "if '*' is present, must not specify other operations",
        );
    }
    for (i, op) in ops.iter().enumerate() {
        const OPS: [&str; 5] = ["*", "CONNECT", "CREATE", "DELETE", "UPDATE"];
        if !OPS.contains(op) {
            causes.push(super::unsupported(
                &format!("{f}.operations[{i}]"),
                op,
                &OPS,
            ));
        }
    }
    let groups = strings(rule.get("apiGroups")).unwrap_or_default();
    if groups.is_empty() {
        required(causes, format!("{f}.apiGroups"));
    }
    if groups.len() > 1 && groups.contains(&"*") {
        invalid(
            causes,
            &format!("{f}.apiGroups"),
            go_strings(&groups),
            "if '*' is present, must not specify other API groups",
        );
    }
    let versions = strings(rule.get("apiVersions")).unwrap_or_default();
    if versions.is_empty() {
        required(causes, format!("{f}.apiVersions"));
    }
    if versions.len() > 1 && versions.contains(&"*") {
        invalid(
            causes,
            &format!("{f}.apiVersions"),
            go_strings(&versions),
            "if '*' is present, must not specify other API versions",
        );
    }
    for (i, v) in versions.iter().enumerate() {
        if v.is_empty() {
            required(causes, format!("{f}.apiVersions[{i}]"));
        }
    }
    let res = strings(rule.get("resources")).unwrap_or_default();
    validate_resources(&res, &format!("{f}.resources"), causes);
    if let Some(scope) = rule.get("scope").and_then(Value::as_str) {
        const SCOPES: [&str; 3] = ["*", "Cluster", "Namespaced"];
        if !SCOPES.contains(&scope) {
            causes.push(super::unsupported(&format!("{f}.scope"), scope, &SCOPES));
        }
    }
}

/// `validateMatchConditions`: at most 64, names present and unique, expressions that compile
/// (with cel-rust, the library `api/admission` evaluates them with).
fn validate_match_conditions(w: &Value, f: &str, causes: &mut Vec<Cause>) {
    let Some(conds) = w.get("matchConditions").and_then(Value::as_array) else {
        return;
    };
    let mf = format!("{f}.matchConditions");
    if conds.len() > 64 {
        causes.push(cause(
            "FieldValueTooMany",
            &mf,
            format!("Too many: {}: must have at most 64 items", conds.len()),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, c) in conds.iter().enumerate() {
        let cf = format!("{mf}[{i}]");
        match c.get("name").and_then(Value::as_str).unwrap_or("") {
            "" => causes.push(cause(
                "FieldValueRequired",
                &format!("{cf}.name"),
                "Required value",
            )),
            n if !names.insert(n.to_string()) => causes.push(cause(
                "FieldValueDuplicate",
                &format!("{cf}.name"),
                format!("Duplicate value: \"{n}\""),
            )),
            _ => {}
        }
        match c.get("expression").and_then(Value::as_str).unwrap_or("") {
            "" => causes.push(cause(
                "FieldValueRequired",
                &format!("{cf}.expression"),
                "Required value",
            )),
            e => {
                if let Err(msg) = crate::api::admission::conditions::compile(e) {
                    invalid(causes, &format!("{cf}.expression"), quoted(e), &msg);
                }
            }
        }
    }
}

fn validate_webhook(w: &Value, f: &str, causes: &mut Vec<Cause>) {
    if let Some(se) = w.get("sideEffects").and_then(Value::as_str) {
        // v1 refuses the v1beta1 classes Unknown and Some.
        if !matches!(se, "None" | "NoneOnDryRun") {
            causes.push(super::unsupported(
                &format!("{f}.sideEffects"),
                se,
                &["None", "NoneOnDryRun"],
            ));
        }
    }
    if let Some(versions) = strings(w.get("admissionReviewVersions")).filter(|v| !v.is_empty()) {
        let af = format!("{f}.admissionReviewVersions");
        let mut seen = std::collections::BTreeSet::new();
        for (i, v) in versions.iter().enumerate() {
            if !seen.insert(*v) {
                invalid(
                    causes,
                    &format!("{af}[{i}]"),
                    quoted(v),
                    "duplicate version",
                );
            }
        }
        if !versions.iter().any(|v| matches!(*v, "v1" | "v1beta1")) {
            invalid(
                causes,
                &af,
                go_strings(&versions),
                "must include at least one of v1, v1beta1",
            );
        }
    }
    if let Some(t) = w.get("timeoutSeconds").and_then(Value::as_i64) {
        if !(1..=30).contains(&t) {
            invalid(
                causes,
                &format!("{f}.timeoutSeconds"),
                t.to_string(),
                "the timeout value must be between 1 and 30 seconds",
            );
        }
    }
    if let Some(p) = w.get("matchPolicy").and_then(Value::as_str) {
        if !matches!(p, "Equivalent" | "Exact") {
            causes.push(super::unsupported(
                &format!("{f}.matchPolicy"),
                p,
                &["Equivalent", "Exact"],
            ));
        }
    }
    validate_match_conditions(w, f, causes);
    let cc = w.get("clientConfig");
    match (
        cc.and_then(|c| c.get("url")).and_then(Value::as_str),
        cc.and_then(|c| c.get("service")),
    ) {
        (Some(url), None) => validate_url(url, &format!("{f}.clientConfig.url"), causes),
        (None, Some(svc)) => validate_service(svc, &format!("{f}.clientConfig.service"), causes),
        _ => {}
    }
    for (i, rule) in w
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        validate_rule(rule, &format!("{f}.rules[{i}]"), causes);
    }
}

/// A CEL expression field: required, and compiling (cel-rust parses; it does not type-check
/// against the object's schema as upstream does).
fn validate_cel(e: Option<&Value>, f: &str, required: bool, causes: &mut Vec<Cause>) {
    match e.and_then(Value::as_str).unwrap_or("") {
        "" if required => causes.push(cause("FieldValueRequired", f, "Required value")),
        "" => {}
        e => {
            if let Err(msg) = crate::api::admission::conditions::compile(e) {
                invalid(causes, f, quoted(e), &msg);
            }
        }
    }
}

/// `ValidateValidatingAdmissionPolicy`'s spec checks that decide what `api/admission/policy`
/// runs: failurePolicy, matchConstraints, validations, variables, matchConditions.
fn validate_policy(spec: &Value, causes: &mut Vec<Cause>) {
    if let Some(fp) = spec.get("failurePolicy").and_then(Value::as_str) {
        if !matches!(fp, "Fail" | "Ignore") {
            causes.push(super::unsupported(
                "spec.failurePolicy",
                fp,
                &["Fail", "Ignore"],
            ));
        }
    }
    match spec.get("matchConstraints") {
        None => causes.push(cause(
            "FieldValueRequired",
            "spec.matchConstraints",
            "Required value",
        )),
        Some(mc) => {
            if mc
                .get("resourceRules")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                causes.push(cause(
                    "FieldValueRequired",
                    "spec.matchConstraints.resourceRules",
                    "Required value",
                ));
            }
        }
    }
    let validations = spec.get("validations").and_then(Value::as_array);
    let audits = spec.get("auditAnnotations").and_then(Value::as_array);
    if validations.is_none_or(Vec::is_empty) && audits.is_none_or(Vec::is_empty) {
        causes.push(cause(
            "FieldValueRequired",
            "spec.validations",
            "Required value: validations or auditAnnotations must contain at least one item",
        ));
    }
    for (i, v) in validations.into_iter().flatten().enumerate() {
        let f = format!("spec.validations[{i}]");
        validate_cel(
            v.get("expression"),
            &format!("{f}.expression"),
            true,
            causes,
        );
        if let Some(r) = v.get("reason").and_then(Value::as_str) {
            const REASONS: [&str; 4] = [
                "Unauthorized",
                "Forbidden",
                "Invalid",
                "RequestEntityTooLarge",
            ];
            if !REASONS.contains(&r) {
                causes.push(super::unsupported(&format!("{f}.reason"), r, &REASONS));
            }
        }
        validate_cel(
            v.get("messageExpression"),
            &format!("{f}.messageExpression"),
            false,
            causes,
        );
    }
    for (i, v) in spec
        .get("variables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let f = format!("spec.variables[{i}]");
        if v.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            causes.push(cause(
                "FieldValueRequired",
                &format!("{f}.name"),
                "Required value",
            ));
        }
        validate_cel(
            v.get("expression"),
            &format!("{f}.expression"),
            true,
            causes,
        );
    }
    validate_match_conditions(spec, "spec", causes);
}

/// `ValidateValidatingAdmissionPolicyBinding`'s spec checks.
fn validate_binding(spec: &Value, causes: &mut Vec<Cause>) {
    if spec
        .get("policyName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        causes.push(cause(
            "FieldValueRequired",
            "spec.policyName",
            "Required value",
        ));
    }
    let actions = strings(spec.get("validationActions")).unwrap_or_default();
    if actions.is_empty() {
        causes.push(cause(
            "FieldValueRequired",
            "spec.validationActions",
            "Required value: at least one validation action is required",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, a) in actions.iter().enumerate() {
        let f = format!("spec.validationActions[{i}]");
        if !seen.insert(*a) {
            causes.push(cause(
                "FieldValueDuplicate",
                &f,
                format!("Duplicate value: \"{a}\""),
            ));
        } else if !matches!(*a, "Deny" | "Warn" | "Audit") {
            causes.push(super::unsupported(&f, a, &["Audit", "Deny", "Warn"]));
        }
    }
    if seen.contains("Deny") && seen.contains("Warn") {
        invalid(
            causes,
            "spec.validationActions",
            go_strings(&actions),
            "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
        );
    }
    if let Some(pr) = spec.get("paramRef") {
        let has = |k: &str| pr.get(k).is_some_and(|v| !v.is_null() && v != "");
        if has("name") && has("selector") {
            causes.push(cause(
                "FieldValueForbidden",
                "spec.paramRef.name",
                "Forbidden: name and selector are mutually exclusive",
            ));
        }
        if !has("name") && !has("selector") {
            causes.push(cause(
                "FieldValueRequired",
                "spec.paramRef",
                "Required value: one of name or selector must be specified",
            ));
        }
        match pr.get("parameterNotFoundAction").and_then(Value::as_str) {
            None => causes.push(cause(
                "FieldValueRequired",
                "spec.paramRef.parameterNotFoundAction",
                "Required value",
            )),
            Some("Allow" | "Deny") => {}
            Some(other) => causes.push(super::unsupported(
                "spec.paramRef.parameterNotFoundAction",
                other,
                &["Allow", "Deny"],
            )),
        }
    }
}

/// `SetDefaults_MatchResources` and `SetDefaults_Rule` (v1).
fn default_match_resources(mr: &mut Value) {
    let Some(m) = mr.as_object_mut() else {
        return;
    };
    m.entry("matchPolicy")
        .or_insert_with(|| json!("Equivalent"));
    m.entry("namespaceSelector").or_insert_with(|| json!({}));
    m.entry("objectSelector").or_insert_with(|| json!({}));
    for key in ["resourceRules", "excludeResourceRules"] {
        for rule in m
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object_mut)
        {
            rule.entry("scope").or_insert_with(|| json!("*"));
        }
    }
}

/// Defaults of admission policies and their bindings (webhook configurations' are in
/// `networking.rs`).
pub(super) fn defaults(rd: &ResourceDef, obj: &mut Value) {
    if rd.group != "admissionregistration.k8s.io" {
        return;
    }
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    match rd.kind {
        "ValidatingAdmissionPolicy" => {
            spec.entry("failurePolicy").or_insert_with(|| json!("Fail"));
            if let Some(mc) = spec.get_mut("matchConstraints") {
                default_match_resources(mc);
            }
        }
        "ValidatingAdmissionPolicyBinding" => {
            if let Some(mr) = spec.get_mut("matchResources") {
                default_match_resources(mr);
            }
        }
        _ => {}
    }
}

/// Validation of a webhook configuration or admission policy, on create and update.
pub(super) fn validate(rd: &ResourceDef, obj: &Value, causes: &mut Vec<Cause>) {
    if rd.group == "admissionregistration.k8s.io" {
        match rd.kind {
            "ValidatingAdmissionPolicy" => return validate_policy(&obj["spec"], causes),
            "ValidatingAdmissionPolicyBinding" => return validate_binding(&obj["spec"], causes),
            _ => {}
        }
    }
    if !matches!(
        (rd.group, rd.kind),
        (
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration"
        )
    ) {
        return;
    }
    for (i, w) in obj
        .get("webhooks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        validate_webhook(w, &format!("webhooks[{i}]"), causes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(w: Value) -> Vec<String> {
        let mut causes = Vec::new();
        validate_webhook(&w, "webhooks[0]", &mut causes);
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn upstream_texts() {
        assert_eq!(
            msgs(json!({"sideEffects": "Some", "timeoutSeconds": 31,
                "clientConfig": {"url": "http://x/y?z=1"}})),
            vec![
                "webhooks[0].sideEffects: Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\"",
                "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds",
                "webhooks[0].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme; desired format: https://host[/path]",
                "webhooks[0].clientConfig.url: Invalid value: \"z=1\": query parameters are not permitted in the URL",
            ]
        );
        assert_eq!(
            msgs(json!({"clientConfig": {"service": {"name": "s", "namespace": "n", "path": "validate", "port": 0}}})),
            vec![
                "webhooks[0].clientConfig.service.port: Invalid value: 0: port is not valid: must be between 1 and 65535, inclusive",
                "webhooks[0].clientConfig.service.path: Invalid value: \"validate\": must start with a '/'",
            ]
        );
        assert_eq!(
            msgs(json!({"admissionReviewVersions": ["v2"], "rules": [{"operations": ["*", "CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["*", "pods"]}]})),
            vec![
                "webhooks[0].admissionReviewVersions: Invalid value: []string{\"v2\"}: must include at least one of v1, v1beta1",
                "webhooks[0].rules[0].operations: Invalid value: []string{\"*\", \"CREATE\"}: if '*' is present, must not specify other operations",
                "webhooks[0].rules[0].resources: Invalid value: []string{\"*\", \"pods\"}: if '*' is present, must not specify other resources without subresources",
            ]
        );
        assert!(msgs(json!({"sideEffects": "None", "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"name": "s", "namespace": "n", "path": "/mutate-v1-pod", "port": 443}},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods", "pods/status"], "scope": "Namespaced"}]}))
        .is_empty());
    }
}
