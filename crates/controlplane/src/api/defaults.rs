//! Per-kind defaulting, validation and typed normalisation.
//!
//! Defaults are the ones kube-apiserver's `SetDefaults_*` functions apply
//! (pkg/apis/core/v1/defaults.go, pkg/apis/apps/v1/defaults.go,
//! pkg/apis/batch/v1/defaults.go); validation covers the required fields
//! clients hit first, reported as field causes like `pkg/apis/*/validation`.

use super::error::{cause, ApiError, ApiResult, Cause};
use super::selector::LabelSelector;
use crate::registry::ResourceDef;
use serde_json::{json, Map, Value};

/// Decodes `obj` into its k8s-openapi type and encodes it back, so stored
/// objects always have the upstream schema. Returns the normalised object
/// and the paths of fields the type does not know.
pub fn normalize(rd: &ResourceDef, obj: &Value) -> ApiResult<(Value, Vec<String>)> {
    if let Some(c) = rd.custom {
        return super::custom::normalize(rd, c, obj);
    }
    let out = (rd.typed.round_trip)(obj).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {}",
            rd.kind, rd.version, rd.kind, e
        ))
    })?;
    let mut unknown = Vec::new();
    diff_unknown(obj, &out, String::new(), &mut unknown);
    Ok((out, unknown))
}

fn diff_unknown(input: &Value, output: &Value, path: String, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(bv) => diff_unknown(v, bv, p, out),
                    None if !v.is_null() => out.push(p),
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                diff_unknown(x, y, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    match v.get_mut(key) {
        Some(Value::Object(m)) => m,
        _ => unreachable!("just inserted an object"),
    }
}

fn default(m: &mut Map<String, Value>, key: &str, val: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), val);
    }
}

/// `SetDefaults_PodSpec` and `SetDefaults_Container`.
pub fn default_pod_spec(spec: &mut Value) {
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    default(m, "restartPolicy", json!("Always"));
    default(m, "dnsPolicy", json!("ClusterFirst"));
    default(m, "terminationGracePeriodSeconds", json!(30));
    default(m, "schedulerName", json!("default-scheduler"));
    default(m, "securityContext", json!({}));
    default(m, "enableServiceLinks", json!(true));
    default(m, "serviceAccountName", json!("default"));
    if let Some(sa) = m.get("serviceAccountName").cloned() {
        default(m, "serviceAccount", sa);
    }
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = m.get_mut(list) {
            for c in cs.iter_mut() {
                let Some(c) = c.as_object_mut() else { continue };
                let image = c
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let last = image.rsplit('/').next().unwrap_or("");
                let policy = if image.contains('@') {
                    "IfNotPresent"
                } else if !last.contains(':') || last.ends_with(":latest") {
                    "Always"
                } else {
                    "IfNotPresent"
                };
                default(c, "imagePullPolicy", json!(policy));
                default(c, "terminationMessagePath", json!("/dev/termination-log"));
                default(c, "terminationMessagePolicy", json!("File"));
                default(c, "resources", json!({}));
                if let Some(Value::Array(ports)) = c.get_mut("ports") {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

fn validate_pod_spec(spec: &Value, prefix: &str, causes: &mut Vec<Cause>) {
    let containers = spec.get("containers").and_then(Value::as_array);
    match containers {
        None => causes.push(cause(
            "FieldValueRequired",
            &format!("{prefix}.containers"),
            "Required value",
        )),
        Some(cs) if cs.is_empty() => causes.push(cause(
            "FieldValueRequired",
            &format!("{prefix}.containers"),
            "Required value",
        )),
        Some(cs) => {
            let mut seen = Vec::new();
            for (i, c) in cs.iter().enumerate() {
                let name = c.get("name").and_then(Value::as_str).unwrap_or("");
                let f = format!("{prefix}.containers[{i}]");
                if name.is_empty() {
                    causes.push(cause(
                        "FieldValueRequired",
                        &format!("{f}.name"),
                        "Required value",
                    ));
                } else if seen.contains(&name) {
                    causes.push(cause(
                        "FieldValueDuplicate",
                        &format!("{f}.name"),
                        format!("Duplicate value: \"{name}\""),
                    ));
                } else if let Some(msg) = dns1123_label(name) {
                    causes.push(cause(
                        "FieldValueInvalid",
                        &format!("{f}.name"),
                        format!("Invalid value: \"{name}\": {msg}"),
                    ));
                }
                seen.push(name);
                if c.get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    causes.push(cause(
                        "FieldValueRequired",
                        &format!("{f}.image"),
                        "Required value",
                    ));
                }
            }
        }
    }
    if let Some(rp) = spec.get("restartPolicy").and_then(Value::as_str) {
        if !["Always", "OnFailure", "Never"].contains(&rp) {
            causes.push(cause(
                "FieldValueNotSupported",
                &format!("{prefix}.restartPolicy"),
                format!("Unsupported value: \"{rp}\": supported values: \"Always\", \"OnFailure\", \"Never\""),
            ));
        }
    }
}

/// RFC 1123 label check; returns the upstream message when invalid.
pub fn dns1123_label(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    (!ok).then(|| "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string())
}

/// RFC 1123 subdomain check; returns the upstream message when invalid.
/// apimachinery's `path.IsValidPathSegmentName`: the name must be usable as
/// one URL path segment.
pub fn path_segment_name(s: &str) -> Option<String> {
    if s == "." || s == ".." {
        return Some(format!("may not be '{s}'"));
    }
    let bad: Vec<String> = ["/", "%"]
        .iter()
        .filter(|c| s.contains(**c))
        .map(|c| format!("may not contain '{c}'"))
        .collect();
    (!bad.is_empty()).then(|| bad.join(", "))
}

pub fn dns1123_subdomain(s: &str) -> Option<String> {
    let ok = !s.is_empty() && s.len() <= 253 && s.split('.').all(|p| dns1123_label(p).is_none());
    (!ok).then(|| "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string())
}

fn default_template(obj: &mut Value) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        default_pod_spec(spec);
    }
}

/// The workload selector rules: required, not empty (`empty selector is invalid for <what>`),
/// and matching the template's labels.
pub(crate) fn validate_selector_matches_template(obj: &Value, what: &str, causes: &mut Vec<Cause>) {
    match obj.pointer("/spec/selector") {
        None => causes.push(cause(
            "FieldValueRequired",
            "spec.selector",
            "Required value",
        )),
        Some(sel) => {
            let s = LabelSelector::from_object(sel);
            if s.is_empty() {
                causes.push(cause(
                    "FieldValueInvalid",
                    "spec.selector",
                    format!("Invalid value: \"null\": empty selector is invalid for {what}"),
                ));
            } else if !s.matches_labels(obj.pointer("/spec/template/metadata/labels")) {
                causes.push(cause(
                    "FieldValueInvalid",
                    "spec.template.metadata.labels",
                    format!(
                        "Invalid value: {}: `selector` does not match template `labels`",
                        labels_text(obj.pointer("/spec/template/metadata/labels"))
                    ),
                ));
            }
        }
    }
}

/// A label map as Go's `%#v` prints it in field errors: `map[string]string{"a":"b", "c":"d"}`
/// (keys sorted; a missing map is `map[string]string(nil)`).
pub(crate) fn labels_text(labels: Option<&Value>) -> String {
    let Some(m) = labels.and_then(Value::as_object) else {
        return "map[string]string(nil)".into();
    };
    let mut kv: Vec<(&String, &str)> = m
        .iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or("")))
        .collect();
    kv.sort();
    let body: Vec<String> = kv
        .iter()
        .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), Value::from(*v)))
        .collect();
    format!("map[string]string{{{}}}", body.join(", "))
}

/// Deployment, ReplicaSet and DaemonSet: selector and pod template.
fn validate_deployment_like(obj: &Value, causes: &mut Vec<Cause>) {
    validate_selector_matches_template(obj, "deployment", causes);
    match obj.pointer("/spec/template/spec") {
        Some(spec) => validate_pod_spec(spec, "spec.template.spec", causes),
        None => causes.push(cause(
            "FieldValueRequired",
            "spec.template.spec.containers",
            "Required value",
        )),
    }
}

/// Applies create-time defaults for `rd` to `obj` (already normalised).
pub fn apply_defaults(rd: &ResourceDef, obj: &mut Value) {
    if let Some(c) = rd.custom {
        return super::custom::apply_defaults(c, obj);
    }
    match (rd.group, rd.kind) {
        ("", "Pod") => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec);
            }
        }
        ("", "Namespace") => {
            let spec = obj_mut(obj, "spec");
            default(spec, "finalizers", json!(["kubernetes"]));
            let name = obj.pointer("/metadata/name").cloned().unwrap_or(json!(""));
            let meta = obj_mut(obj, "metadata");
            if !meta.get("labels").is_some_and(Value::is_object) {
                meta.insert("labels".into(), json!({}));
            }
            if let Some(l) = meta.get_mut("labels").and_then(Value::as_object_mut) {
                l.insert("kubernetes.io/metadata.name".into(), name);
            }
            obj["status"] = json!({"phase": "Active"});
        }
        ("", "Service") => {
            let spec = obj_mut(obj, "spec");
            default(spec, "type", json!("ClusterIP"));
            default(spec, "sessionAffinity", json!("None"));
            if spec.get("type").and_then(Value::as_str) != Some("ExternalName") {
                default(spec, "internalTrafficPolicy", json!("Cluster"));
            }
            if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    default(p, "protocol", json!("TCP"));
                    if let Some(port) = p.get("port").cloned() {
                        default(p, "targetPort", port);
                    }
                }
            }
            default(obj_mut(obj, "status"), "loadBalancer", json!({}));
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            // SetDefaults_EndpointPort: name "" and protocol TCP.
            if let Some(Value::Array(ports)) = obj.get_mut("ports") {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    default(p, "name", json!(""));
                    default(p, "protocol", json!("TCP"));
                }
            }
        }
        ("", "ServiceAccount") | ("", "ConfigMap") | ("", "Endpoints") => {}
        ("", "Secret") => {
            if let Some(m) = obj.as_object_mut() {
                default(m, "type", json!("Opaque"));
            }
        }
        ("apps", "Deployment") => {
            let spec = obj_mut(obj, "spec");
            default(spec, "replicas", json!(1));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
            default(spec, "strategy", json!({"type": "RollingUpdate"}));
            if let Some(st) = spec.get_mut("strategy").and_then(Value::as_object_mut) {
                default(st, "type", json!("RollingUpdate"));
                if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                    default(st, "rollingUpdate", json!({}));
                    if let Some(ru) = st.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                        default(ru, "maxSurge", json!("25%"));
                        default(ru, "maxUnavailable", json!("25%"));
                    }
                }
            }
            default_template(obj);
        }
        ("apps", "ReplicaSet") => {
            default(obj_mut(obj, "spec"), "replicas", json!(1));
            default_template(obj);
        }
        ("apps", "DaemonSet") => {
            let spec = obj_mut(obj, "spec");
            default(spec, "revisionHistoryLimit", json!(10));
            default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            default_template(obj);
        }
        ("batch", "Job") => {
            let spec = obj_mut(obj, "spec");
            default(spec, "completions", json!(1));
            default(spec, "parallelism", json!(1));
            default(spec, "backoffLimit", json!(6));
            default(spec, "completionMode", json!("NonIndexed"));
            default(spec, "suspend", json!(false));
            default(spec, "manualSelector", json!(false));
            default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            default_template(obj);
        }
        _ => super::kinds::defaults(rd, obj),
    }
}

/// Validation on create and update; an empty result means valid.
pub fn validate(rd: &ResourceDef, obj: &Value) -> Vec<Cause> {
    validate_with_old(rd, obj, None)
}

/// [`validate`] of an update: custom resources' transition rules see the old object.
pub fn validate_with_old(rd: &ResourceDef, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name_check = match (rd.group, rd.kind) {
        ("", "Namespace" | "Service") => dns1123_label(name),
        // RBAC names are path segments (ValidateRBACName): `system:node` is valid.
        ("rbac.authorization.k8s.io", _) => path_segment_name(name),
        // So are APIServices' (ValidateAPIService): the core group's is `v1.`.
        ("apiregistration.k8s.io", "APIService") => path_segment_name(name),
        _ => dns1123_subdomain(name),
    };
    if let Some(msg) = name_check {
        causes.push(cause(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": {msg}"),
        ));
    }
    if let Some(c) = rd.custom {
        causes.extend(super::custom::validate(c, obj, old));
        return causes;
    }
    if (rd.group, rd.kind) == ("apiextensions.k8s.io", "CustomResourceDefinition") {
        // Upstream's CRD validation takes the old CRD on update (its update rules and
        // relaxations), so it runs here rather than in the per-kind hooks.
        causes.extend(
            rktup_apiextensions::validate_crd(obj, old)
                .into_iter()
                .map(|e| cause(e.reason, &e.field, e.message)),
        );
    }
    match (rd.group, rd.kind) {
        ("", "Pod") => match obj.get("spec") {
            Some(spec) => validate_pod_spec(spec, "spec", &mut causes),
            None => causes.push(cause(
                "FieldValueRequired",
                "spec.containers",
                "Required value",
            )),
        },
        ("apps", "Deployment") | ("apps", "ReplicaSet") | ("apps", "DaemonSet") => {
            validate_deployment_like(obj, &mut causes);
            if let Some(r) = obj.pointer("/spec/replicas").and_then(Value::as_i64) {
                if r < 0 {
                    causes.push(cause(
                        "FieldValueInvalid",
                        "spec.replicas",
                        format!("Invalid value: {r}: must be greater than or equal to 0"),
                    ));
                }
            }
        }
        ("batch", "Job") => {
            if let Some(spec) = obj.pointer("/spec/template/spec") {
                validate_pod_spec(spec, "spec.template.spec", &mut causes);
                let rp = spec
                    .get("restartPolicy")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !["OnFailure", "Never"].contains(&rp) {
                    causes.push(cause("FieldValueNotSupported", "spec.template.spec.restartPolicy", format!("Unsupported value: \"{rp}\": supported values: \"OnFailure\", \"Never\"")));
                }
            } else {
                causes.push(cause(
                    "FieldValueRequired",
                    "spec.template.spec.containers",
                    "Required value",
                ));
            }
        }
        ("discovery.k8s.io", "EndpointSlice") => validate_endpointslice(obj, &mut causes),
        ("", "Service") => {
            let ty = obj
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
            let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
            if ty != "ExternalName" && !headless && ports.is_none_or(|p| p.is_empty()) {
                causes.push(cause("FieldValueRequired", "spec.ports", "Required value"));
            }
            if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty) {
                causes.push(cause("FieldValueNotSupported", "spec.type", format!("Unsupported value: \"{ty}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"")));
            }
            validate_source_ranges(obj, ty, &mut causes);
        }
        _ => super::kinds::validate(rd, obj, &mut causes),
    }
    causes
}

/// The annotation cloud providers (and kube-apiserver's validation) read when
/// `spec.loadBalancerSourceRanges` is empty.
const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

/// ValidateService's source-range block: `spec.loadBalancerSourceRanges` (upstream's path
/// spells it `LoadBalancerSourceRanges`), or else the annotation, only on LoadBalancer Services,
/// each entry (trimmed: the field historically allows space padding; the annotation is
/// comma-separated) a CIDR as `IsValidCIDR` parses it.
fn validate_source_ranges(obj: &Value, ty: &str, causes: &mut Vec<Cause>) {
    const NOT_LB: &str = "Forbidden: may only be used when `type` is 'LoadBalancer'";
    let bad = |f: &str, v: &str| {
        cause(
            "FieldValueInvalid",
            f,
            format!(
                "Invalid value: \"{v}\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
            ),
        )
    };
    let ranges = obj
        .pointer("/spec/loadBalancerSourceRanges")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty());
    if let Some(ranges) = ranges {
        let f = "spec.LoadBalancerSourceRanges";
        if ty != "LoadBalancer" {
            causes.push(cause("FieldValueForbidden", f, NOT_LB));
        }
        for (i, r) in ranges.iter().enumerate() {
            let v = r.as_str().unwrap_or("").trim();
            if !is_cidr(v) {
                causes.push(bad(&format!("{f}[{i}]"), v));
            }
        }
    } else if let Some(val) = obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(SOURCE_RANGES_ANNOTATION))
        .and_then(Value::as_str)
    {
        let f = format!("metadata.annotations[{SOURCE_RANGES_ANNOTATION}]");
        if ty != "LoadBalancer" {
            causes.push(cause("FieldValueForbidden", &f, NOT_LB));
        }
        let val = val.trim();
        if !val.is_empty() {
            for v in val.split(',').map(str::trim) {
                if !is_cidr(v) {
                    causes.push(bad(&f, v));
                }
            }
        }
    }
}

/// `netutils.ParseCIDRSloppy` accepts it: an IPv4 (octets may have leading zeros) or IPv6
/// address, `/`, a prefix length within the family's.
fn is_cidr(v: &str) -> bool {
    let Some((ip, len)) = v.split_once('/') else {
        return false;
    };
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(len) = len.parse::<u32>() else {
        return false;
    };
    if ip.contains(':') {
        return len <= 128 && ip.parse::<std::net::Ipv6Addr>().is_ok();
    }
    let octets: Vec<&str> = ip.split('.').collect();
    len <= 32
        && octets.len() == 4
        && octets.iter().all(|o| {
            !o.is_empty()
                && o.len() <= 3
                && o.bytes().all(|b| b.is_ascii_digit())
                && o.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

/// field.TooMany as upstream words it, when a list has more than `max` items.
fn too_many(causes: &mut Vec<Cause>, field: &str, n: usize, max: usize) {
    if n > max {
        causes.push(cause(
            "FieldValueTooMany",
            field,
            format!("Too many: {n}: must have at most {max} items"),
        ));
    }
}

/// ValidateEndpointSlice's basics: the address type, the 1000-endpoint and
/// 100-port limits, 1-100 addresses per endpoint that parse as the type's
/// IPs, known protocols.
fn validate_endpointslice(obj: &Value, causes: &mut Vec<Cause>) {
    let ty = obj.get("addressType").and_then(Value::as_str).unwrap_or("");
    match ty {
        "" => causes.push(cause("FieldValueRequired", "addressType", "Required value")),
        "IPv4" | "IPv6" | "FQDN" => {}
        other => causes.push(cause(
            "FieldValueNotSupported",
            "addressType",
            format!(
                "Unsupported value: \"{other}\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""
            ),
        )),
    }
    let endpoints = obj.get("endpoints").and_then(Value::as_array);
    too_many(causes, "endpoints", endpoints.map_or(0, Vec::len), 1000);
    for (i, e) in endpoints.into_iter().flatten().enumerate() {
        let addrs = e.get("addresses").and_then(Value::as_array);
        let f = format!("endpoints[{i}].addresses");
        match addrs.map_or(0, Vec::len) {
            0 => causes.push(cause(
                "FieldValueRequired",
                &f,
                "Required value: must contain at least 1 address",
            )),
            m => too_many(causes, &f, m, 100),
        }
        for (j, a) in addrs.into_iter().flatten().enumerate() {
            let a = a.as_str().unwrap_or("");
            let bad = match ty {
                "IPv4" => a.parse::<std::net::Ipv4Addr>().is_err().then_some("IPv4"),
                "IPv6" => a.parse::<std::net::Ipv6Addr>().is_err().then_some("IPv6"),
                _ => None,
            };
            if let Some(fam) = bad {
                causes.push(cause(
                    "FieldValueInvalid",
                    &format!("{f}[{j}]"),
                    format!("Invalid value: \"{a}\": must be a valid {fam} address"),
                ));
            }
        }
    }
    let ports = obj.get("ports").and_then(Value::as_array);
    too_many(causes, "ports", ports.map_or(0, Vec::len), 100);
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&proto) {
            causes.push(cause(
                "FieldValueNotSupported",
                &format!("ports[{i}].protocol"),
                format!(
                    "Unsupported value: \"{proto}\": supported values: \"SCTP\", \"TCP\", \"UDP\""
                ),
            ));
        }
        if let Some(port) = p.get("port").and_then(Value::as_i64) {
            if !(1..=65535).contains(&port) {
                causes.push(cause(
                    "FieldValueInvalid",
                    &format!("ports[{i}].port"),
                    format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
                ));
            }
        }
    }
}

/// Fields the status subresource owns; the main resource keeps the old
/// ones on update, and the status subresource changes nothing else.
pub fn has_status_subresource(rd: &ResourceDef) -> bool {
    rd.subresources.contains(&"status")
}
