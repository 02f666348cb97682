//! Workloads: StatefulSet (apps/v1), CronJob (batch/v1), ReplicationController and PodTemplate
//! (core/v1), HorizontalPodAutoscaler (autoscaling/v2).
//!
//! Defaults, validation and update rules as upstream's pkg/apis/{apps,batch,core,autoscaling}/
//! {v1,v2}/defaults.go and validation; messages are upstream's (kubectl prints them).

use crate::api::defaults::{self, default_pod_spec};
use crate::api::error::{cause, Cause};
use crate::controllers::cronjob::parse_schedule;
use crate::registry::{self, ResourceDef};
use serde_json::{json, Map, Value};

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    v.get_mut(key).and_then(Value::as_object_mut)
}

fn default(m: &mut Map<String, Value>, key: &str, val: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), val);
    }
}

fn default_template_at(obj: &mut Value, ptr: &str) {
    if let Some(spec) = obj.pointer_mut(ptr) {
        default_pod_spec(spec);
    }
}

/// Defaults (create and update; status is put back after an update).
pub(super) fn defaults(rd: &ResourceDef, obj: &mut Value) {
    match (rd.group, rd.kind) {
        ("apps", "StatefulSet") => {
            let Some(spec) = obj_mut(obj, "spec") else {
                return;
            };
            default(spec, "replicas", json!(1));
            default(spec, "podManagementPolicy", json!("OrderedReady"));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
            if let Some(us) = spec
                .get_mut("updateStrategy")
                .and_then(Value::as_object_mut)
            {
                default(us, "type", json!("RollingUpdate"));
                if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                    default(us, "rollingUpdate", json!({}));
                    if let Some(ru) = us.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                        default(ru, "partition", json!(0));
                    }
                }
            }
            default(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            if let Some(p) = spec
                .get_mut("persistentVolumeClaimRetentionPolicy")
                .and_then(Value::as_object_mut)
            {
                default(p, "whenDeleted", json!("Retain"));
                default(p, "whenScaled", json!("Retain"));
            }
            // The claim templates get a PersistentVolumeClaim's defaults (SetDefaults_PersistentVolumeClaim).
            if let Some(ts) = spec
                .get_mut("volumeClaimTemplates")
                .and_then(Value::as_array_mut)
            {
                for t in ts.iter_mut() {
                    if let Some(s) = obj_mut(t, "spec") {
                        default(s, "volumeMode", json!("Filesystem"));
                    }
                    if let Some(st) = obj_mut(t, "status") {
                        default(st, "phase", json!("Pending"));
                    }
                }
            }
            default_template_at(obj, "/spec/template/spec");
        }
        ("batch", "CronJob") => {
            let Some(spec) = obj_mut(obj, "spec") else {
                return;
            };
            default(spec, "concurrencyPolicy", json!("Allow"));
            default(spec, "suspend", json!(false));
            default(spec, "successfulJobsHistoryLimit", json!(3));
            default(spec, "failedJobsHistoryLimit", json!(1));
            default_template_at(obj, "/spec/jobTemplate/spec/template/spec");
        }
        ("", "ReplicationController") => {
            // SetDefaults_ReplicationController: selector and labels from the template's labels.
            let tlabels = obj
                .pointer("/spec/template/metadata/labels")
                .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
                .cloned();
            if let Some(spec) = obj_mut(obj, "spec") {
                default(spec, "replicas", json!(1));
                if let Some(l) = &tlabels {
                    if spec
                        .get("selector")
                        .and_then(Value::as_object)
                        .is_none_or(|m| m.is_empty())
                    {
                        spec.insert("selector".into(), l.clone());
                    }
                }
            }
            if let Some(l) = tlabels {
                if let Some(meta) = obj_mut(obj, "metadata") {
                    if meta
                        .get("labels")
                        .and_then(Value::as_object)
                        .is_none_or(|m| m.is_empty())
                    {
                        meta.insert("labels".into(), l);
                    }
                }
            }
            default_template_at(obj, "/spec/template/spec");
        }
        ("", "PodTemplate") => default_template_at(obj, "/template/spec"),
        ("autoscaling", "HorizontalPodAutoscaler") if rd.conversion.is_some() => {
            crate::api::convert::hpa_v1_defaults(obj)
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            let Some(spec) = obj_mut(obj, "spec") else {
                return;
            };
            default(spec, "minReplicas", json!(1));
            if spec
                .get("metrics")
                .and_then(Value::as_array)
                .is_none_or(|m| m.is_empty())
            {
                spec.insert(
                    "metrics".into(),
                    json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]),
                );
            }
            // Only a behavior that is given gets its missing rules filled in.
            if let Some(b) = spec.get_mut("behavior").and_then(Value::as_object_mut) {
                let up = b.entry("scaleUp").or_insert(json!({}));
                if let Some(up) = up.as_object_mut() {
                    default(up, "stabilizationWindowSeconds", json!(0));
                    default(up, "selectPolicy", json!("Max"));
                    default(
                        up,
                        "policies",
                        json!([{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]),
                    );
                }
                let down = b.entry("scaleDown").or_insert(json!({}));
                if let Some(down) = down.as_object_mut() {
                    default(down, "stabilizationWindowSeconds", json!(300));
                    default(down, "selectPolicy", json!("Max"));
                    default(
                        down,
                        "policies",
                        json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
                    );
                }
            }
        }
        _ => {}
    }
}

/// Create-time preparation beyond defaults (e.g. an initial status phase).
pub(super) fn prepare_create(_rd: &ResourceDef, _obj: &mut Value) {}

/// Validation of the whole object, on create and update.
pub(super) fn validate(rd: &ResourceDef, obj: &Value, causes: &mut Vec<Cause>) {
    match (rd.group, rd.kind) {
        ("apps", "StatefulSet") => validate_statefulset(obj, causes),
        ("batch", "CronJob") => validate_cronjob(obj, causes),
        ("", "ReplicationController") => validate_rc(obj, causes),
        ("", "PodTemplate") => validate_template(obj.get("template"), "template", causes),
        // autoscaling/v1 is validated as upstream validates it: converted (field paths are v2's).
        ("autoscaling", "HorizontalPodAutoscaler") if rd.conversion.is_some() => {
            validate_hpa(&rd.to_storage(obj.clone()), causes)
        }
        ("autoscaling", "HorizontalPodAutoscaler") => validate_hpa(obj, causes),
        _ => {}
    }
}

/// A pod template's spec, validated as a Pod's (field paths under `prefix`).
fn validate_template(template: Option<&Value>, prefix: &str, causes: &mut Vec<Cause>) {
    let Some(spec) = template.and_then(|t| t.get("spec")) else {
        causes.push(cause(
            "FieldValueRequired",
            &format!("{prefix}.spec.containers"),
            "Required value",
        ));
        return;
    };
    let pod = json!({"metadata": {"name": "template"}, "spec": spec});
    for c in defaults::validate(registry::pods(), &pod) {
        if c.field.starts_with("spec") {
            causes.push(Cause {
                field: format!("{prefix}.{}", c.field),
                ..c
            });
        }
    }
}

fn restart_policy_always(spec_ptr: Option<&Value>, field: &str, causes: &mut Vec<Cause>) {
    let rp = spec_ptr
        .and_then(|s| s.get("restartPolicy"))
        .and_then(Value::as_str)
        .unwrap_or("Always");
    if rp != "Always" && ["OnFailure", "Never"].contains(&rp) {
        causes.push(cause(
            "FieldValueNotSupported",
            field,
            format!("Unsupported value: \"{rp}\": supported values: \"Always\""),
        ));
    }
}

fn non_negative(obj: &Value, ptr: &str, field: &str, causes: &mut Vec<Cause>) {
    if let Some(n) = obj.pointer(ptr).and_then(Value::as_i64) {
        if n < 0 {
            causes.push(cause(
                "FieldValueInvalid",
                field,
                format!("Invalid value: {n}: must be greater than or equal to 0"),
            ));
        }
    }
}

fn validate_statefulset(obj: &Value, causes: &mut Vec<Cause>) {
    match obj
        .pointer("/spec/podManagementPolicy")
        .and_then(Value::as_str)
    {
        None | Some("") => causes.push(cause(
            "FieldValueRequired",
            "spec.podManagementPolicy",
            "Required value",
        )),
        Some("OrderedReady" | "Parallel") => {}
        Some(p) => causes.push(cause(
            "FieldValueInvalid",
            "spec.podManagementPolicy",
            format!("Invalid value: \"{p}\": must be 'OrderedReady' or 'Parallel'"),
        )),
    }
    match obj
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
    {
        None | Some("") => causes.push(cause(
            "FieldValueRequired",
            "spec.updateStrategy",
            "Required value",
        )),
        Some("OnDelete") => {
            if obj.pointer("/spec/updateStrategy/rollingUpdate").is_some() {
                causes.push(cause(
                    "FieldValueInvalid",
                    "spec.updateStrategy.rollingUpdate",
                    format!(
                        "Invalid value: {}: only allowed for updateStrategy 'RollingUpdate'",
                        obj.pointer("/spec/updateStrategy/rollingUpdate")
                            .cloned()
                            .unwrap_or(Value::Null)
                    ),
                ))
            }
        }
        Some("RollingUpdate") => non_negative(
            obj,
            "/spec/updateStrategy/rollingUpdate/partition",
            "spec.updateStrategy.rollingUpdate.partition",
            causes,
        ),
        Some(t) => causes.push(cause(
            "FieldValueInvalid",
            "spec.updateStrategy",
            format!("Invalid value: \"{t}\": must be 'RollingUpdate' or 'OnDelete'"),
        )),
    }
    for (f, ptr) in [
        (
            "whenDeleted",
            "/spec/persistentVolumeClaimRetentionPolicy/whenDeleted",
        ),
        (
            "whenScaled",
            "/spec/persistentVolumeClaimRetentionPolicy/whenScaled",
        ),
    ] {
        match obj.pointer(ptr).and_then(Value::as_str) {
            None | Some("Retain" | "Delete") => {}
            Some(v) => causes.push(cause(
                "FieldValueNotSupported",
                &format!("spec.persistentVolumeClaimRetentionPolicy.{f}"),
                format!("Unsupported value: \"{v}\": supported values: \"Retain\", \"Delete\""),
            )),
        }
    }
    non_negative(obj, "/spec/replicas", "spec.replicas", causes);
    non_negative(obj, "/spec/minReadySeconds", "spec.minReadySeconds", causes);
    non_negative(obj, "/spec/ordinals/start", "spec.ordinals.start", causes);
    defaults::validate_selector_matches_template(obj, "statefulset", causes);
    if let Some(svc) = obj.pointer("/spec/serviceName").and_then(Value::as_str) {
        if !svc.is_empty() {
            if let Some(msg) = defaults::dns1123_label(svc) {
                causes.push(cause(
                    "FieldValueInvalid",
                    "spec.serviceName",
                    format!("Invalid value: \"{svc}\": {msg}"),
                ));
            }
        }
    }
    validate_template(obj.pointer("/spec/template"), "spec.template", causes);
    restart_policy_always(
        obj.pointer("/spec/template/spec"),
        "spec.template.spec.restartPolicy",
        causes,
    );
    if let Some(ts) = obj
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
    {
        for (i, t) in ts.iter().enumerate() {
            let name = t
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if name.is_empty() {
                causes.push(cause(
                    "FieldValueRequired",
                    &format!("spec.volumeClaimTemplates[{i}].metadata.name"),
                    "Required value: name or generateName is required",
                ));
            }
            if t.pointer("/spec/accessModes")
                .and_then(Value::as_array)
                .is_none_or(|a| a.is_empty())
            {
                causes.push(cause(
                    "FieldValueRequired",
                    &format!("spec.volumeClaimTemplates[{i}].spec.accessModes"),
                    "Required value: at least 1 access mode is required",
                ));
            }
        }
    }
}

fn validate_cronjob(obj: &Value, causes: &mut Vec<Cause>) {
    // The Job names add 11 characters (`-<minutes>`) to the CronJob's.
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.len() > 52 {
        causes.push(cause(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": must be no more than 52 characters"),
        ));
    }
    match obj.pointer("/spec/schedule").and_then(Value::as_str) {
        None | Some("") => causes.push(cause(
            "FieldValueRequired",
            "spec.schedule",
            "Required value",
        )),
        Some(s) => {
            if let Err(e) = parse_schedule(s) {
                causes.push(cause(
                    "FieldValueInvalid",
                    "spec.schedule",
                    format!("Invalid value: \"{s}\": {e}"),
                ));
            }
            if s.contains("TZ") {
                causes.push(cause(
                    "FieldValueInvalid",
                    "spec.schedule",
                    format!("Invalid value: \"{s}\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"),
                ));
            }
        }
    }
    if let Some(tz) = obj.pointer("/spec/timeZone").and_then(Value::as_str) {
        if let Some(msg) = time_zone_error(tz) {
            causes.push(cause(
                "FieldValueInvalid",
                "spec.timeZone",
                format!("Invalid value: \"{tz}\": {msg}"),
            ));
        }
    }
    match obj
        .pointer("/spec/concurrencyPolicy")
        .and_then(Value::as_str)
    {
        None | Some("") => causes.push(cause(
            "FieldValueRequired",
            "spec.concurrencyPolicy",
            "Required value",
        )),
        Some("Allow" | "Forbid" | "Replace") => {}
        Some(p) => causes.push(cause(
            "FieldValueNotSupported",
            "spec.concurrencyPolicy",
            format!(
                "Unsupported value: \"{p}\": supported values: \"Allow\", \"Forbid\", \"Replace\""
            ),
        )),
    }
    non_negative(
        obj,
        "/spec/startingDeadlineSeconds",
        "spec.startingDeadlineSeconds",
        causes,
    );
    non_negative(
        obj,
        "/spec/successfulJobsHistoryLimit",
        "spec.successfulJobsHistoryLimit",
        causes,
    );
    non_negative(
        obj,
        "/spec/failedJobsHistoryLimit",
        "spec.failedJobsHistoryLimit",
        causes,
    );
    let tspec = obj.pointer("/spec/jobTemplate/spec/template");
    validate_template(tspec, "spec.jobTemplate.spec.template", causes);
    if let Some(spec) = tspec.and_then(|t| t.get("spec")) {
        let rp = spec
            .get("restartPolicy")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !["OnFailure", "Never"].contains(&rp) {
            causes.push(cause(
                "FieldValueNotSupported",
                "spec.jobTemplate.spec.template.spec.restartPolicy",
                format!("Unsupported value: \"{rp}\": supported values: \"OnFailure\", \"Never\""),
            ));
        }
    }
}

/// Upstream's `validateTimeZone` (the name is looked up in the system's zoneinfo, as Go's
/// `time.LoadLocation`).
fn time_zone_error(tz: &str) -> Option<String> {
    if tz.is_empty() {
        return Some("timeZone must be nil or non-empty string".into());
    }
    let valid_part = |p: &str| {
        p != "."
            && p != ".."
            && !p.starts_with('-')
            && !p.is_empty()
            && p.len() <= 14
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
    };
    if !tz.split('/').all(valid_part) {
        return Some(format!("unknown time zone {tz}"));
    }
    if tz.eq_ignore_ascii_case("Local") {
        return Some(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                .into(),
        );
    }
    jiff::tz::TimeZone::get(tz)
        .err()
        .map(|_| format!("unknown time zone {tz}"))
}

fn validate_rc(obj: &Value, causes: &mut Vec<Cause>) {
    let sel = obj
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty());
    match sel {
        None => causes.push(cause(
            "FieldValueRequired",
            "spec.selector",
            "Required value",
        )),
        Some(sel) => {
            let labels = obj.pointer("/spec/template/metadata/labels");
            let matches = sel
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
            if obj.pointer("/spec/template").is_some() && !matches {
                causes.push(cause(
                    "FieldValueInvalid",
                    "spec.template.metadata.labels",
                    format!(
                        "Invalid value: {}: `selector` does not match template `labels`",
                        defaults::labels_text(labels)
                    ),
                ));
            }
        }
    }
    non_negative(obj, "/spec/replicas", "spec.replicas", causes);
    non_negative(obj, "/spec/minReadySeconds", "spec.minReadySeconds", causes);
    match obj.pointer("/spec/template") {
        None => causes.push(cause(
            "FieldValueRequired",
            "spec.template",
            "Required value",
        )),
        Some(_) => {
            validate_template(obj.pointer("/spec/template"), "spec.template", causes);
            restart_policy_always(
                obj.pointer("/spec/template/spec"),
                "spec.template.spec.restartPolicy",
                causes,
            );
        }
    }
}

fn validate_hpa(obj: &Value, causes: &mut Vec<Cause>) {
    for f in ["kind", "name"] {
        if obj
            .pointer(&format!("/spec/scaleTargetRef/{f}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            causes.push(cause(
                "FieldValueRequired",
                &format!("spec.scaleTargetRef.{f}"),
                "Required value",
            ));
        }
    }
    let min = obj.pointer("/spec/minReplicas").and_then(Value::as_i64);
    let max = obj
        .pointer("/spec/maxReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Some(m) = min {
        if m < 1 {
            causes.push(cause(
                "FieldValueInvalid",
                "spec.minReplicas",
                format!("Invalid value: {m}: must be greater than or equal to 1"),
            ));
        }
    }
    if max < 1 {
        causes.push(cause(
            "FieldValueInvalid",
            "spec.maxReplicas",
            format!("Invalid value: {max}: must be greater than 0"),
        ));
    }
    if min.is_some_and(|m| max < m) {
        causes.push(cause(
            "FieldValueInvalid",
            "spec.maxReplicas",
            format!("Invalid value: {max}: must be greater than or equal to `minReplicas`"),
        ));
    }
    if let Some(ms) = obj.pointer("/spec/metrics").and_then(Value::as_array) {
        for (i, m) in ms.iter().enumerate() {
            let f = format!("spec.metrics[{i}]");
            let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
            let source = match ty {
                "" => {
                    causes.push(cause(
                        "FieldValueRequired",
                        &format!("{f}.type"),
                        "Required value: must specify a metric source type",
                    ));
                    continue;
                }
                "Object" => "object",
                "Pods" => "pods",
                "Resource" => "resource",
                "ContainerResource" => "containerResource",
                "External" => "external",
                t => {
                    causes.push(cause(
                        "FieldValueNotSupported",
                        &format!("{f}.type"),
                        format!("Unsupported value: \"{t}\": supported values: \"ContainerResource\", \"External\", \"Object\", \"Pods\", \"Resource\""),
                    ));
                    continue;
                }
            };
            if m.get(source).is_none() {
                causes.push(cause(
                    "FieldValueRequired",
                    &format!("{f}.{source}"),
                    format!("Required value: must populate information for the given metric source (only allowed when type is {ty})"),
                ));
            }
        }
    }
}

/// Update-only rules (immutable fields).
pub(super) fn validate_update(rd: &ResourceDef, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    if (rd.group, rd.kind) == ("apps", "StatefulSet") {
        // ValidateStatefulSetUpdate: only these spec fields may change.
        let fixed = |o: &Value| {
            let mut spec = o.get("spec").cloned().unwrap_or(json!({}));
            if let Some(m) = spec.as_object_mut() {
                for f in [
                    "replicas",
                    "ordinals",
                    "template",
                    "updateStrategy",
                    "revisionHistoryLimit",
                    "persistentVolumeClaimRetentionPolicy",
                    "minReadySeconds",
                ] {
                    m.remove(f);
                }
            }
            spec
        };
        if fixed(old) != fixed(new) {
            causes.push(cause(
                "FieldValueForbidden",
                "spec",
                "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
    }
}
