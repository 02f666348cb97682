//! Networking and the kinds stored without a controller here: Ingress, IngressClass,
//! NetworkPolicy, IPAddress, ServiceCIDR (networking.k8s.io/v1), RuntimeClass (node.k8s.io/v1),
//! FlowSchema and PriorityLevelConfiguration (flowcontrol.apiserver.k8s.io/v1), admission
//! webhook configurations, CRDs and APIServices (stored; serving them is issue 17).
//!
//! Defaults and the validation clients hit first, with the texts of upstream's
//! pkg/apis/{networking,node,flowcontrol,admissionregistration}/validation and their
//! `SetDefaults_*`. Enforcement (an ingress controller, network policies, priority and
//! fairness) is not done here.

use crate::api::defaults::{dns1123_label, dns1123_subdomain};
use crate::api::error::{cause, Cause};
use crate::registry::ResourceDef;
use serde_json::{json, Value};

/// Defaults (create and update; status is put back after an update).
pub(super) fn defaults(rd: &ResourceDef, obj: &mut Value) {
    match (rd.group, rd.kind) {
        ("networking.k8s.io", "NetworkPolicy") => {
            let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
                return;
            };
            // SetDefaults_NetworkPolicySpec: Ingress always, Egress when egress rules exist.
            if spec
                .get("policyTypes")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                let mut types = vec![json!("Ingress")];
                if spec
                    .get("egress")
                    .and_then(Value::as_array)
                    .is_some_and(|e| !e.is_empty())
                {
                    types.push(json!("Egress"));
                }
                spec.insert("policyTypes".into(), Value::Array(types));
            }
            for dir in ["ingress", "egress"] {
                for rule in spec
                    .get_mut(dir)
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    for port in rule
                        .get_mut("ports")
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_object_mut)
                    {
                        port.entry("protocol").or_insert_with(|| json!("TCP"));
                    }
                }
            }
        }
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration") => {
            // SetDefaults_LimitedPriorityLevelConfiguration / _QueuingConfiguration.
            let Some(limited) = obj
                .pointer_mut("/spec/limited")
                .and_then(Value::as_object_mut)
            else {
                return;
            };
            limited
                .entry("nominalConcurrencyShares")
                .or_insert_with(|| json!(30));
            limited.entry("lendablePercent").or_insert_with(|| json!(0));
            if let Some(q) = limited
                .get_mut("limitResponse")
                .filter(|r| r["type"] == "Queue")
                .and_then(|r| r.as_object_mut())
                .map(|r| r.entry("queuing").or_insert_with(|| json!({})))
                .and_then(Value::as_object_mut)
            {
                q.entry("queues").or_insert_with(|| json!(64));
                q.entry("handSize").or_insert_with(|| json!(8));
                q.entry("queueLengthLimit").or_insert_with(|| json!(50));
            }
        }
        ("flowcontrol.apiserver.k8s.io", "FlowSchema") => {
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.entry("matchingPrecedence")
                    .or_insert_with(|| json!(1000));
            }
        }
        (
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration",
        ) => {
            for w in obj
                .get_mut("webhooks")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                // SetDefaults_*Webhook (v1).
                w.entry("failurePolicy").or_insert_with(|| json!("Fail"));
                w.entry("matchPolicy")
                    .or_insert_with(|| json!("Equivalent"));
                w.entry("namespaceSelector").or_insert_with(|| json!({}));
                w.entry("objectSelector").or_insert_with(|| json!({}));
                w.entry("timeoutSeconds").or_insert_with(|| json!(10));
                if rd.kind == "MutatingWebhookConfiguration" {
                    w.entry("reinvocationPolicy")
                        .or_insert_with(|| json!("Never"));
                }
                if let Some(svc) = w
                    .get_mut("clientConfig")
                    .and_then(|c| c.get_mut("service"))
                    .and_then(Value::as_object_mut)
                {
                    svc.entry("port").or_insert_with(|| json!(443));
                }
                for rule in w
                    .get_mut("rules")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object_mut)
                {
                    rule.entry("scope").or_insert_with(|| json!("*"));
                }
            }
        }
        _ => {}
    }
}

/// Create-time preparation beyond defaults (none for these kinds).
pub(super) fn prepare_create(_rd: &ResourceDef, _obj: &mut Value) {}

fn required(causes: &mut Vec<Cause>, field: &str) {
    causes.push(cause("FieldValueRequired", field, "Required value"));
}

fn invalid(causes: &mut Vec<Cause>, field: &str, value: &str, msg: &str) {
    causes.push(cause(
        "FieldValueInvalid",
        field,
        format!("Invalid value: \"{value}\": {msg}"),
    ));
}

fn items<'a>(v: &'a Value, ptr: &str) -> impl Iterator<Item = (usize, &'a Value)> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

/// validateIngressBackend: exactly one of service and resource; a service needs a name and
/// exactly one of port name and number.
fn validate_backend(b: &Value, field: &str, causes: &mut Vec<Cause>) {
    match (b.get("service"), b.get("resource")) {
        (Some(_), Some(_)) => causes.push(cause(
            "FieldValueInvalid",
            field,
            "Invalid value: \"\": cannot set both resource and service backends",
        )),
        (None, None) => causes.push(cause(
            "FieldValueRequired",
            field,
            "Required value: resource or service backend is required",
        )),
        (Some(svc), None) => {
            match svc.get("name").and_then(Value::as_str) {
                None | Some("") => required(causes, &format!("{field}.service.name")),
                Some(n) => {
                    if let Some(msg) = dns1123_label(n) {
                        invalid(causes, &format!("{field}.service.name"), n, &msg);
                    }
                }
            }
            let port = svc.get("port");
            let has_name = port
                .and_then(|p| p.get("name"))
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            let has_number = port
                .and_then(|p| p.get("number"))
                .and_then(Value::as_i64)
                .is_some_and(|n| n != 0);
            let pf = format!("{field}.service.port");
            match (has_name, has_number) {
                (true, true) => causes.push(cause(
                    "FieldValueInvalid",
                    &pf,
                    "Invalid value: \"\": cannot set both port name & port number",
                )),
                (false, false) => causes.push(cause(
                    "FieldValueRequired",
                    &pf,
                    "Required value: port name or number is required",
                )),
                (false, true) => {
                    let n = port.and_then(|p| p["number"].as_i64()).unwrap_or_default();
                    if !(1..=65535).contains(&n) {
                        causes.push(cause(
                            "FieldValueInvalid",
                            &format!("{pf}.number"),
                            format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
                        ));
                    }
                }
                (true, false) => {}
            }
        }
        (None, Some(r)) => {
            if r.get("kind")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                required(causes, &format!("{field}.resource.kind"));
            }
            if r.get("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                required(causes, &format!("{field}.resource.name"));
            }
        }
    }
}

fn validate_ingress(obj: &Value, causes: &mut Vec<Cause>) {
    let rules = obj.pointer("/spec/rules").and_then(Value::as_array);
    let default_backend = obj.pointer("/spec/defaultBackend");
    if default_backend.is_none() && rules.is_none_or(Vec::is_empty) {
        causes.push(cause(
            "FieldValueInvalid",
            "spec",
            "Invalid value: \"null\": either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(b) = default_backend {
        validate_backend(b, "spec.defaultBackend", causes);
    }
    if let Some(class) = obj
        .pointer("/spec/ingressClassName")
        .and_then(Value::as_str)
    {
        if let Some(msg) = dns1123_subdomain(class) {
            invalid(causes, "spec.ingressClassName", class, &msg);
        }
    }
    for (i, rule) in items(obj, "/spec/rules") {
        if let Some(host) = rule.get("host").and_then(Value::as_str) {
            // A leading `*.` wildcard label is allowed.
            let bare = host.strip_prefix("*.").unwrap_or(host);
            if host.contains(':') || dns1123_subdomain(bare).is_some() {
                invalid(
                    causes,
                    &format!("spec.rules[{i}].host"),
                    host,
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                );
            }
        }
        let Some(http) = rule.get("http") else {
            continue;
        };
        let paths = http.get("paths").and_then(Value::as_array);
        if paths.is_none_or(Vec::is_empty) {
            required(causes, &format!("spec.rules[{i}].http.paths"));
        }
        for (j, p) in paths.into_iter().flatten().enumerate() {
            let f = format!("spec.rules[{i}].http.paths[{j}]");
            let path = p.get("path").and_then(Value::as_str).unwrap_or("");
            // k8s-openapi writes the required string as "" when it is missing.
            match p
                .get("pathType")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                None => causes.push(cause(
                    "FieldValueRequired",
                    &format!("{f}.pathType"),
                    "Required value: pathType must be specified",
                )),
                Some("Exact" | "Prefix") => {
                    if !path.starts_with('/') {
                        invalid(
                            causes,
                            &format!("{f}.path"),
                            path,
                            "must be an absolute path",
                        );
                    }
                }
                Some("ImplementationSpecific") => {
                    if !path.is_empty() && !path.starts_with('/') {
                        invalid(
                            causes,
                            &format!("{f}.path"),
                            path,
                            "must be an absolute path",
                        );
                    }
                }
                Some(other) => causes.push(super::unsupported(
                    &format!("{f}.pathType"),
                    other,
                    &["Exact", "ImplementationSpecific", "Prefix"],
                )),
            }
            match p.get("backend") {
                Some(b) => validate_backend(b, &format!("{f}.backend"), causes),
                None => required(causes, &format!("{f}.backend")),
            }
        }
    }
}

fn validate_network_policy(obj: &Value, causes: &mut Vec<Cause>) {
    if obj.pointer("/spec/podSelector").is_none() {
        required(causes, "spec.podSelector");
    }
    for (i, t) in items(obj, "/spec/policyTypes") {
        let t = t.as_str().unwrap_or("");
        if !matches!(t, "Ingress" | "Egress") {
            causes.push(super::unsupported(
                &format!("spec.policyTypes[{i}]"),
                t,
                &["Egress", "Ingress"],
            ));
        }
    }
    for dir in ["ingress", "egress"] {
        for (i, rule) in items(obj, &format!("/spec/{dir}")) {
            for (j, port) in items(rule, "/ports") {
                if let Some(p) = port.get("protocol").and_then(Value::as_str) {
                    if !matches!(p, "TCP" | "UDP" | "SCTP") {
                        causes.push(super::unsupported(
                            &format!("spec.{dir}[{i}].ports[{j}].protocol"),
                            p,
                            &["SCTP", "TCP", "UDP"],
                        ));
                    }
                }
            }
        }
    }
}

fn validate_webhooks(obj: &Value, mutating: bool, causes: &mut Vec<Cause>) {
    let mut names = std::collections::BTreeSet::new();
    for (i, w) in items(obj, "/webhooks") {
        let f = format!("webhooks[{i}]");
        match w.get("name").and_then(Value::as_str) {
            None | Some("") => required(causes, &format!("{f}.name")),
            Some(n) => {
                // Webhook names are qualified: at least three segments (`x.example.com`).
                if n.split('.').count() < 3 || dns1123_subdomain(n).is_some() {
                    invalid(
                        causes,
                        &format!("{f}.name"),
                        n,
                        "should be a domain with at least three segments separated by dots",
                    );
                }
                if !names.insert(n.to_string()) {
                    causes.push(cause(
                        "FieldValueDuplicate",
                        &format!("{f}.name"),
                        format!("Duplicate value: \"{n}\""),
                    ));
                }
            }
        }
        let cc = w.get("clientConfig");
        match (
            cc.and_then(|c| c.get("url")),
            cc.and_then(|c| c.get("service")),
        ) {
            (Some(_), Some(_)) => causes.push(cause(
                "FieldValueRequired",
                &format!("{f}.clientConfig"),
                "Required value: exactly one of url or service is required",
            )),
            (None, None) => causes.push(cause(
                "FieldValueRequired",
                &format!("{f}.clientConfig"),
                "Required value: exactly one of url or service is required",
            )),
            _ => {}
        }
        if w.get("sideEffects").is_none() {
            required(causes, &format!("{f}.sideEffects"));
        }
        if w.get("admissionReviewVersions")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            required(causes, &format!("{f}.admissionReviewVersions"));
        }
        if let Some(p) = w.get("failurePolicy").and_then(Value::as_str) {
            if !matches!(p, "Fail" | "Ignore") {
                causes.push(super::unsupported(
                    &format!("{f}.failurePolicy"),
                    p,
                    &["Fail", "Ignore"],
                ));
            }
        }
        if mutating {
            if let Some(p) = w.get("reinvocationPolicy").and_then(Value::as_str) {
                if !matches!(p, "Never" | "IfNeeded") {
                    causes.push(super::unsupported(
                        &format!("{f}.reinvocationPolicy"),
                        p,
                        &["IfNeeded", "Never"],
                    ));
                }
            }
        }
    }
}

/// Validation of the whole object, on create and update.
pub(super) fn validate(rd: &ResourceDef, obj: &Value, causes: &mut Vec<Cause>) {
    match (rd.group, rd.kind) {
        ("networking.k8s.io", "Ingress") => validate_ingress(obj, causes),
        ("networking.k8s.io", "IngressClass") => {
            match obj.pointer("/spec/controller").and_then(Value::as_str) {
                None | Some("") => required(causes, "spec.controller"),
                Some(c) if c.len() > 250 => causes.push(cause(
                    "FieldValueTooLong",
                    "spec.controller",
                    "Too long: may not be more than 250 bytes",
                )),
                Some(_) => {}
            }
        }
        ("networking.k8s.io", "NetworkPolicy") => validate_network_policy(obj, causes),
        ("networking.k8s.io", "ServiceCIDR") => {
            let cidrs: Vec<&str> = items(obj, "/spec/cidrs")
                .filter_map(|(_, c)| c.as_str())
                .collect();
            if cidrs.is_empty() {
                required(causes, "spec.cidrs");
            }
            for (i, c) in cidrs.iter().enumerate() {
                let ok = c.split_once('/').is_some_and(|(ip, bits)| {
                    ip.parse::<std::net::IpAddr>().is_ok_and(|ip| {
                        bits.parse::<u8>()
                            .is_ok_and(|b| b <= if ip.is_ipv4() { 32 } else { 128 })
                    })
                });
                if !ok {
                    invalid(
                        causes,
                        &format!("spec.cidrs[{i}]"),
                        c,
                        "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                    );
                }
            }
        }
        ("node.k8s.io", "RuntimeClass") => match obj.get("handler").and_then(Value::as_str) {
            None | Some("") => required(causes, "handler"),
            Some(h) => {
                if let Some(msg) = dns1123_label(h) {
                    invalid(causes, "handler", h, &msg);
                }
            }
        },
        ("flowcontrol.apiserver.k8s.io", "FlowSchema") => {
            if obj
                .pointer("/spec/priorityLevelConfiguration/name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(cause(
                    "FieldValueRequired",
                    "spec.priorityLevelConfiguration.name",
                    "Required value: must reference a priority level",
                ));
            }
            if let Some(p) = obj
                .pointer("/spec/matchingPrecedence")
                .and_then(Value::as_i64)
            {
                if !(1..=10000).contains(&p) {
                    causes.push(cause(
                        "FieldValueInvalid",
                        "spec.matchingPrecedence",
                        format!("Invalid value: {p}: must be between 1 and 10000, inclusive"),
                    ));
                }
            }
        }
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration") => {
            match obj.pointer("/spec/type").and_then(Value::as_str) {
                Some("Limited") => {
                    if obj.pointer("/spec/limited").is_none() {
                        causes.push(cause(
                            "FieldValueRequired",
                            "spec.limited",
                            "Required value: must not be empty when type is Limited",
                        ));
                    }
                }
                Some("Exempt") => {}
                Some(other) => causes.push(super::unsupported(
                    "spec.type",
                    other,
                    &["Exempt", "Limited"],
                )),
                None => required(causes, "spec.type"),
            }
        }
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            validate_webhooks(obj, false, causes)
        }
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            validate_webhooks(obj, true, causes)
        }
        ("apiregistration.k8s.io", "APIService") => {
            // The name is `<version>.<group>` (`v1beta1.metrics.k8s.io`).
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let group = obj
                .pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or("");
            let version = obj
                .pointer("/spec/version")
                .and_then(Value::as_str)
                .unwrap_or("");
            // Also for the core group: `v1.` (upstream's requiredName).
            let want = format!("{version}.{group}");
            if name != want {
                invalid(
                    causes,
                    "metadata.name",
                    name,
                    &format!("must be spec.version+\".\"+spec.group: \"{want}\""),
                );
            }
            if obj.pointer("/spec/service").is_some() || !group.is_empty() {
                for f in ["groupPriorityMinimum", "versionPriority"] {
                    let v = obj
                        .pointer(&format!("/spec/{f}"))
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    if v <= 0 {
                        causes.push(cause(
                            "FieldValueInvalid",
                            &format!("spec.{f}"),
                            format!("Invalid value: {v}: must be positive and less than 20000"),
                        ));
                    }
                }
            }
        }
        _ => {}
    }
}

/// Update-only rules (immutable fields).
pub(super) fn validate_update(rd: &ResourceDef, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    match (rd.group, rd.kind) {
        ("networking.k8s.io", "IngressClass") => {
            super::immutable(old, new, "/spec/controller", "spec.controller", causes)
        }
        ("node.k8s.io", "RuntimeClass") => {
            super::immutable(old, new, "/handler", "handler", causes)
        }
        ("networking.k8s.io", "ServiceCIDR") => {
            super::immutable(old, new, "/spec/cidrs", "spec.cidrs", causes)
        }
        ("networking.k8s.io", "IPAddress") => {
            super::immutable(old, new, "/spec/parentRef", "spec.parentRef", causes)
        }
        _ => {}
    }
}
