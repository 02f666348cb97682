//! Policy: PodDisruptionBudget (policy/v1), ResourceQuota and LimitRange (core/v1), PriorityClass
//! (scheduling.k8s.io/v1) — and their admission (limit ranges, pod priority, quota).
//!
//! Defaults, validation and update rules as upstream's pkg/apis/{policy,core,scheduling}/validation;
//! admission as plugin/pkg/admission/{limitranger,priority,resourcequota}, in upstream's plugin
//! order (LimitRanger and Priority mutate, ResourceQuota checks last).

use crate::api::error::{cause, ApiError, ApiResult, Cause};
use crate::api::objects::{meta_str, Core};
use crate::registry::{self, ResourceDef};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

// ---------------------------------------------------------------------------
// Quantities
// ---------------------------------------------------------------------------

/// How a quantity is written back (apimachinery's `resource.Format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    DecimalSI,
    BinarySI,
    DecimalExponent,
}

/// A `resource.Quantity`, held exactly in nano-units (upstream keeps nano precision and
/// rounds finer values up), so sums and comparisons are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quantity {
    nano: i128,
    format: Format,
}

const NANO: i128 = 1_000_000_000;

fn pow10(e: u32) -> Option<i128> {
    10i128.checked_pow(e)
}

impl Quantity {
    pub(crate) fn zero() -> Self {
        Quantity {
            nano: 0,
            format: Format::DecimalSI,
        }
    }

    pub(crate) fn from_int(n: i64) -> Self {
        Quantity {
            nano: i128::from(n) * NANO,
            format: Format::DecimalSI,
        }
    }

    /// Parses `123`, `1.5`, `100m`, `64Mi`, `1e3`, `2G` (apimachinery's grammar).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let (neg, rest) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, suffix) = rest.split_at(num_end);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let places = frac_part.len() as i32;
        let whole: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        let frac: i128 = if frac_part.is_empty() {
            0
        } else {
            frac_part.parse().ok()?
        };
        let mantissa = whole
            .checked_mul(pow10(places as u32)?)?
            .checked_add(frac)?;
        let (bin_exp, dec_exp, format): (u32, i32, Format) = match suffix {
            "" => (0, 0, Format::DecimalSI),
            "Ki" => (1, 0, Format::BinarySI),
            "Mi" => (2, 0, Format::BinarySI),
            "Gi" => (3, 0, Format::BinarySI),
            "Ti" => (4, 0, Format::BinarySI),
            "Pi" => (5, 0, Format::BinarySI),
            "Ei" => (6, 0, Format::BinarySI),
            "n" => (0, -9, Format::DecimalSI),
            "u" => (0, -6, Format::DecimalSI),
            "m" => (0, -3, Format::DecimalSI),
            "k" => (0, 3, Format::DecimalSI),
            "M" => (0, 6, Format::DecimalSI),
            "G" => (0, 9, Format::DecimalSI),
            "T" => (0, 12, Format::DecimalSI),
            "P" => (0, 15, Format::DecimalSI),
            "E" => (0, 18, Format::DecimalSI),
            other => {
                let exp = other.strip_prefix(['e', 'E'])?;
                let e: i32 = exp.parse().ok()?;
                (0, e, Format::DecimalExponent)
            }
        };
        let scaled = mantissa.checked_mul(1024i128.checked_pow(bin_exp)?)?;
        let t = 9 - places + dec_exp;
        let nano = if t >= 0 {
            scaled.checked_mul(pow10(t as u32)?)?
        } else {
            let d = pow10((-t) as u32)?;
            // Finer than nano rounds up, as upstream.
            (scaled + d - 1) / d
        };
        Some(Quantity {
            nano: if neg { -nano } else { nano },
            format,
        })
    }

    /// A quantity from JSON: a string, or a number as some clients send.
    pub(crate) fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::String(s) => Self::parse(s),
            Value::Number(n) => Self::parse(&n.to_string()),
            _ => None,
        }
    }

    pub(crate) fn is_zero(&self) -> bool {
        self.nano == 0
    }

    /// The sum, in the format of `self` (`Quantity.Add`).
    pub(crate) fn add(&self, other: &Quantity) -> Quantity {
        Quantity {
            nano: self.nano.saturating_add(other.nano),
            format: if self.is_zero() && self.format == Format::DecimalSI {
                other.format
            } else {
                self.format
            },
        }
    }

    pub(crate) fn sub(&self, other: &Quantity) -> Quantity {
        Quantity {
            nano: self.nano.saturating_sub(other.nano),
            format: self.format,
        }
    }

    /// The canonical form (`Quantity.String()`): `100m`, `64Mi`, `1500`, `2k`.
    pub(crate) fn canonical(&self) -> String {
        if self.nano == 0 {
            return "0".into();
        }
        let mut format = self.format;
        if format == Format::BinarySI {
            let small = self.nano > -1024 * NANO && self.nano < 1024 * NANO;
            if small || self.nano % NANO != 0 {
                format = Format::DecimalSI;
            }
        }
        let sign = if self.nano < 0 { "-" } else { "" };
        let abs = self.nano.unsigned_abs();
        if format == Format::BinarySI {
            let mut v = abs / NANO as u128;
            let mut k = 0;
            while k < 6 && v.is_multiple_of(1024) {
                v /= 1024;
                k += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][k];
            return format!("{sign}{v}{suffix}");
        }
        // mantissa * 10^exp with exp a multiple of 3 (from -9), as large as keeps it whole.
        let mut m = abs;
        let mut exp: i32 = -9;
        while m.is_multiple_of(1000) && m != 0 {
            m /= 1000;
            exp += 3;
        }
        let suffix = match (format, exp) {
            (Format::DecimalExponent, 0) => String::new(),
            (Format::DecimalExponent, e) => format!("e{e}"),
            (_, -9) => "n".into(),
            (_, -6) => "u".into(),
            (_, -3) => "m".into(),
            (_, 0) => String::new(),
            (_, 3) => "k".into(),
            (_, 6) => "M".into(),
            (_, 9) => "G".into(),
            (_, 12) => "T".into(),
            (_, 15) => "P".into(),
            (_, 18) => "E".into(),
            (_, e) => format!("e{e}"),
        };
        format!("{sign}{m}{suffix}")
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.nano.cmp(&other.nano))
    }
}

/// A `ResourceList` (name → quantity); unparsable entries are left out (validation reports them).
pub(crate) fn resource_list(v: Option<&Value>) -> BTreeMap<String, Quantity> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, q)| Some((k.clone(), Quantity::from_value(q)?)))
                .collect()
        })
        .unwrap_or_default()
}

fn list_to_value(l: &BTreeMap<String, Quantity>) -> Value {
    Value::Object(
        l.iter()
            .map(|(k, q)| (k.clone(), json!(q.canonical())))
            .collect(),
    )
}

/// `k=v,k2=v2` sorted by name (the quota admission's `prettyPrint`).
fn pretty(l: &BTreeMap<String, Quantity>) -> String {
    l.iter()
        .map(|(k, q)| format!("{k}={}", q.canonical()))
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------
// Hooks
// ---------------------------------------------------------------------------

fn is(rd: &ResourceDef, group: &str, kind: &str) -> bool {
    rd.group == group && rd.kind == kind
}

/// Defaults (create and update; status is put back after an update).
pub(super) fn defaults(rd: &ResourceDef, obj: &mut Value) {
    if is(rd, "scheduling.k8s.io", "PriorityClass") && obj.get("preemptionPolicy").is_none() {
        obj["preemptionPolicy"] = json!("PreemptLowerPriority");
    }
    if is(rd, "", "LimitRange") {
        default_limit_range(obj);
    }
}

/// `SetDefaults_LimitRangeItem`: a Container item's default limit is its max, its default
/// request its default limit, else its min.
fn default_limit_range(obj: &mut Value) {
    let Some(items) = obj
        .pointer_mut("/spec/limits")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for item in items {
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            continue;
        }
        let get = |item: &Value, f: &str| item.get(f).and_then(Value::as_object).cloned();
        let max = get(item, "max").unwrap_or_default();
        let min = get(item, "min").unwrap_or_default();
        let mut default = get(item, "default").unwrap_or_default();
        for (k, v) in &max {
            default.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let mut default_request = get(item, "defaultRequest").unwrap_or_default();
        for (k, v) in default.iter().chain(min.iter()) {
            default_request
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        if !default.is_empty() {
            item["default"] = Value::Object(default);
        }
        if !default_request.is_empty() {
            item["defaultRequest"] = Value::Object(default_request);
        }
    }
}

/// Create-time preparation beyond defaults: a PDB starts with a zero status (the status the
/// client sent was dropped before), as upstream's `PrepareForCreate`.
pub(super) fn prepare_create(rd: &ResourceDef, obj: &mut Value) {
    if is(rd, "policy", "PodDisruptionBudget") {
        obj["status"] = json!({
            "currentHealthy": 0,
            "desiredHealthy": 0,
            "disruptionsAllowed": 0,
            "expectedPods": 0,
        });
    }
}

/// Validation of the whole object, on create and update.
pub(super) fn validate(rd: &ResourceDef, obj: &Value, causes: &mut Vec<Cause>) {
    match (rd.group, rd.kind) {
        ("policy", "PodDisruptionBudget") => validate_pdb(obj, causes),
        ("", "ResourceQuota") => validate_quota(obj, causes),
        ("", "LimitRange") => validate_limit_range(obj, causes),
        ("scheduling.k8s.io", "PriorityClass") => validate_priority_class(obj, causes),
        _ => {}
    }
}

/// Update-only rules (immutable fields).
pub(super) fn validate_update(rd: &ResourceDef, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    if is(rd, "scheduling.k8s.io", "PriorityClass") {
        if old.get("value") != new.get("value") {
            causes.push(cause(
                "FieldValueForbidden",
                "value",
                "Forbidden: may not be changed in an update.",
            ));
        }
        if old.get("preemptionPolicy") != new.get("preemptionPolicy") {
            let v = new
                .get("preemptionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("");
            causes.push(cause(
                "FieldValueInvalid",
                "preemptionPolicy",
                format!("Invalid value: \"{v}\": field is immutable"),
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// How Go's `%#v` prints an `intstr.IntOrString` (what upstream's messages show).
fn int_or_string_go(v: &Value) -> String {
    match v {
        Value::String(s) => format!("intstr.IntOrString{{Type:1, IntVal:0, StrVal:{s:?}}}"),
        other => format!(
            "intstr.IntOrString{{Type:0, IntVal:{}, StrVal:\"\"}}",
            other.as_i64().unwrap_or(0)
        ),
    }
}

/// A percent string `[0-9]+%`: its number.
fn percent(s: &str) -> Option<i64> {
    let n = s.strip_suffix('%')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// `ValidatePositiveIntOrPercent` + `IsNotMoreThan100Percent`.
fn validate_int_or_percent(v: &Value, field: &str, causes: &mut Vec<Cause>) {
    match v {
        Value::String(s) => match percent(s) {
            None => causes.push(cause(
                "FieldValueInvalid",
                field,
                format!("Invalid value: {}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')", int_or_string_go(v)),
            )),
            Some(p) if p > 100 => causes.push(cause(
                "FieldValueInvalid",
                field,
                format!("Invalid value: {}: must not be greater than 100%", int_or_string_go(v)),
            )),
            Some(_) => {}
        },
        Value::Number(n) => {
            let n = n.as_i64().unwrap_or(-1);
            if n < 0 {
                causes.push(cause(
                    "FieldValueInvalid",
                    field,
                    format!("Invalid value: {n}: must be greater than or equal to 0"),
                ));
            }
        }
        _ => causes.push(cause(
            "FieldValueInvalid",
            field,
            format!(
                "Invalid value: {}: must be an integer or percentage (e.g '5%')",
                int_or_string_go(v)
            ),
        )),
    }
}

/// A label selector's expressions (`ValidateLabelSelector`'s operator rules).
fn validate_selector(sel: Option<&Value>, field: &str, causes: &mut Vec<Cause>) {
    let Some(exprs) = sel
        .and_then(|s| s.get("matchExpressions"))
        .and_then(Value::as_array)
    else {
        return;
    };
    for (i, e) in exprs.iter().enumerate() {
        let f = format!("{field}.matchExpressions[{i}]");
        let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
        let n_values = e
            .get("values")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        match op {
            "In" | "NotIn" if n_values == 0 => causes.push(cause(
                "FieldValueRequired",
                &format!("{f}.values"),
                "Required value: must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if n_values > 0 => causes.push(cause(
                "FieldValueForbidden",
                &format!("{f}.values"),
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => causes.push(cause(
                "FieldValueInvalid",
                &format!("{f}.operator"),
                format!("Invalid value: \"{other}\": not a valid selector operator"),
            )),
        }
        if e.get("key")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            causes.push(cause(
                "FieldValueInvalid",
                &format!("{f}.key"),
                "Invalid value: \"\": name part must be non-empty",
            ));
        }
    }
}

fn validate_pdb(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let min = spec.get("minAvailable").filter(|v| !v.is_null());
    let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
    if min.is_some() && max.is_some() {
        causes.push(cause(
            "FieldValueInvalid",
            "spec",
            format!(
                "Invalid value: {}: minAvailable and maxUnavailable cannot be both set",
                spec
            ),
        ));
    }
    if let Some(v) = min {
        validate_int_or_percent(v, "spec.minAvailable", causes);
    }
    if let Some(v) = max {
        validate_int_or_percent(v, "spec.maxUnavailable", causes);
    }
    validate_selector(spec.get("selector"), "spec.selector", causes);
    if let Some(p) = spec
        .get("unhealthyPodEvictionPolicy")
        .and_then(Value::as_str)
    {
        if p != "IfHealthyBudget" && p != "AlwaysAllow" {
            causes.push(cause(
                "FieldValueNotSupported",
                "spec.unhealthyPodEvictionPolicy",
                format!("Unsupported value: \"{p}\": supported values: \"AlwaysAllow\", \"IfHealthyBudget\""),
            ));
        }
    }
}

/// Resources quota counts in whole units (`IsIntegerResourceName`).
fn integer_resource(name: &str) -> bool {
    matches!(
        name,
        "pods"
            | "services"
            | "replicationcontrollers"
            | "resourcequotas"
            | "secrets"
            | "configmaps"
            | "persistentvolumeclaims"
            | "services.nodeports"
            | "services.loadbalancers"
    ) || name.starts_with("count/")
        || name.ends_with(".storageclass.storage.k8s.io/persistentvolumeclaims")
}

/// `IsStandardQuotaResourceName` (names with a `/` are checked as qualified names instead).
fn standard_quota_resource(name: &str) -> bool {
    integer_resource(name)
        || matches!(
            name,
            "cpu"
                | "memory"
                | "ephemeral-storage"
                | "requests.cpu"
                | "requests.memory"
                | "requests.storage"
                | "requests.ephemeral-storage"
                | "limits.cpu"
                | "limits.memory"
                | "limits.ephemeral-storage"
        )
        || name.starts_with("hugepages-")
        || name.starts_with("requests.hugepages-")
}

const QUOTA_SCOPES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
];

fn validate_quota(obj: &Value, causes: &mut Vec<Cause>) {
    for (path, field) in [
        ("/spec/hard", "spec.hard"),
        ("/status/hard", "status.hard"),
        ("/status/used", "status.used"),
    ] {
        let Some(m) = obj.pointer(path).and_then(Value::as_object) else {
            continue;
        };
        for (k, v) in m {
            let f = format!("{field}[{k}]");
            if !k.contains('/') && !standard_quota_resource(k) {
                causes.push(cause(
                    "FieldValueInvalid",
                    &f,
                    format!("Invalid value: \"{k}\": must be a standard resource for quota"),
                ));
            }
            let Some(q) = Quantity::from_value(v) else {
                causes.push(cause(
                    "FieldValueInvalid",
                    &f,
                    format!("Invalid value: {v}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
                ));
                continue;
            };
            if q.nano < 0 {
                causes.push(cause(
                    "FieldValueInvalid",
                    &f,
                    format!(
                        "Invalid value: \"{}\": must be greater than or equal to 0",
                        q.canonical()
                    ),
                ));
            } else if integer_resource(k) && q.nano % NANO != 0 {
                causes.push(cause(
                    "FieldValueInvalid",
                    &f,
                    format!("Invalid value: \"{}\": must be an integer", q.canonical()),
                ));
            }
        }
    }
    let scopes = obj
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, s) in scopes.iter().enumerate() {
        let s = s.as_str().unwrap_or("");
        if !QUOTA_SCOPES.contains(&s) {
            causes.push(cause(
                "FieldValueInvalid",
                &format!("spec.scopes[{i}]"),
                format!("Invalid value: \"{s}\": unsupported scope"),
            ));
        }
    }
    let named: Vec<&str> = scopes.iter().filter_map(Value::as_str).collect();
    for (a, b) in [
        ("Terminating", "NotTerminating"),
        ("BestEffort", "NotBestEffort"),
    ] {
        if named.contains(&a) && named.contains(&b) {
            causes.push(cause(
                "FieldValueInvalid",
                "spec.scopes",
                format!("Invalid value: {named:?}: conflicting scopes"),
            ));
        }
    }
    if let Some(exprs) = obj
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
    {
        for (i, e) in exprs.iter().enumerate() {
            let f = format!("spec.scopeSelector.matchExpressions[{i}]");
            let s = e.get("scopeName").and_then(Value::as_str).unwrap_or("");
            if !QUOTA_SCOPES.contains(&s) {
                causes.push(cause(
                    "FieldValueInvalid",
                    &format!("{f}.scopeName"),
                    format!("Invalid value: \"{s}\": unsupported scope"),
                ));
            }
            let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
            let n = e
                .get("values")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            match op {
                "In" | "NotIn" if n == 0 => causes.push(cause(
                    "FieldValueRequired",
                    &format!("{f}.values"),
                    "Required value: must be at least one value when `operator` is 'In' or 'NotIn' for scope selector",
                )),
                "Exists" | "DoesNotExist" if n > 0 => causes.push(cause(
                    "FieldValueInvalid",
                    &format!("{f}.values"),
                    "Invalid value: must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector",
                )),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => causes.push(cause(
                    "FieldValueInvalid",
                    &format!("{f}.operator"),
                    format!("Invalid value: \"{other}\": not a valid selector operator"),
                )),
            }
        }
    }
}

fn validate_limit_range(obj: &Value, causes: &mut Vec<Cause>) {
    let items = obj
        .pointer("/spec/limits")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut seen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("spec.limits[{i}]");
        let ty = item.get("type").and_then(Value::as_str).unwrap_or("");
        if !matches!(ty, "Pod" | "Container" | "PersistentVolumeClaim") && !ty.contains('/') {
            causes.push(cause(
                "FieldValueInvalid",
                &format!("{p}.type"),
                format!(
                    "Invalid value: \"{ty}\": must be a standard limit type or fully qualified"
                ),
            ));
        }
        if !seen.insert(ty.to_string()) {
            causes.push(cause(
                "FieldValueDuplicate",
                &format!("{p}.type"),
                format!("Duplicate value: \"{ty}\""),
            ));
        }
        let get = |f: &str| resource_list(item.get(f));
        let (max, min, def, defreq, ratio) = (
            get("max"),
            get("min"),
            get("default"),
            get("defaultRequest"),
            get("maxLimitRequestRatio"),
        );
        for f in [
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ] {
            if let Some(m) = item.get(f).and_then(Value::as_object) {
                for (k, v) in m {
                    if Quantity::from_value(v).is_none() {
                        causes.push(cause(
                            "FieldValueInvalid",
                            &format!("{p}.{f}[{k}]"),
                            format!("Invalid value: {v}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
                        ));
                    }
                }
            }
        }
        if ty == "Pod" {
            for (f, set) in [("default", &def), ("defaultRequest", &defreq)] {
                if !set.is_empty() {
                    causes.push(cause(
                        "FieldValueForbidden",
                        &format!("{p}.{f}"),
                        "Forbidden: may not be specified when `type` is 'Pod'",
                    ));
                }
            }
        }
        if ty == "PersistentVolumeClaim"
            && !min.contains_key("storage")
            && !max.contains_key("storage")
        {
            causes.push(cause(
                "FieldValueRequired",
                &format!("{p}.limits"),
                "Required value: either minimum or maximum storage value is required, but neither was provided",
            ));
        }
        let keys: BTreeSet<&String> = max
            .keys()
            .chain(min.keys())
            .chain(def.keys())
            .chain(defreq.keys())
            .chain(ratio.keys())
            .collect();
        for k in keys {
            let inv = |f: &str, q: &Quantity, msg: String| {
                cause(
                    "FieldValueInvalid",
                    &format!("{p}.{f}[{k}]"),
                    format!("Invalid value: \"{}\": {msg}", q.canonical()),
                )
            };
            let (mn, mx, d, dr, r) = (
                min.get(k),
                max.get(k),
                def.get(k),
                defreq.get(k),
                ratio.get(k),
            );
            // Upstream's pairwise order checks, in its order: (lower, its name, upper, its name,
            // field, whether the reported value is the lower one).
            let orders = [
                (mn, "min", mx, "max", "min", true),
                (mn, "min", dr, "default request", "defaultRequest", false),
                (dr, "default request", mx, "max", "defaultRequest", true),
                (
                    dr,
                    "default request",
                    d,
                    "default limit",
                    "defaultRequest",
                    true,
                ),
                (mn, "min", d, "default", "default", true),
                (d, "default", mx, "max", "default", false),
            ];
            for (lo, lo_name, hi, hi_name, field, report_lo) in orders {
                if let (Some(lo), Some(hi)) = (lo, hi) {
                    if lo > hi {
                        causes.push(inv(
                            field,
                            if report_lo { lo } else { hi },
                            format!(
                                "{lo_name} value {} is greater than {hi_name} value {}",
                                lo.canonical(),
                                hi.canonical()
                            ),
                        ));
                    }
                }
            }
            if let Some(r) = r {
                if r.nano < NANO {
                    causes.push(inv(
                        "maxLimitRequestRatio",
                        r,
                        format!("ratio {} is less than 1", r.canonical()),
                    ));
                } else if let (Some(mn), Some(mx)) = (mn, mx) {
                    if mn.nano > 0 {
                        let limit = mx.nano as f64 / mn.nano as f64;
                        if r.nano as f64 / NANO as f64 > limit {
                            causes.push(inv(
                                "maxLimitRequestRatio",
                                r,
                                format!(
                                    "ratio {} is greater than max/min = {limit:.6}",
                                    r.canonical()
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// scheduling's `HighestUserDefinablePriority`.
const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;
/// The classes the API server creates (`SystemPriorityClasses`): name, value, description.
pub(crate) const SYSTEM_PRIORITY_CLASSES: &[(&str, i64, &str)] = &[
    ("system-node-critical", 2_000_001_000, "Used for system critical pods that must not be moved from their current node."),
    ("system-cluster-critical", 2_000_000_000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
];

/// Creates the system PriorityClasses that are missing (kube-apiserver's post-start hook).
pub(crate) fn ensure_system_priority_classes(core: &Core) {
    let Some(pcrd) = registry::find_kind("scheduling.k8s.io", "PriorityClass") else {
        return;
    };
    let mut ctx = crate::api::objects::WriteCtx::controller("kube-apiserver");
    for (name, value, description) in SYSTEM_PRIORITY_CLASSES {
        if core.get_stored(pcrd, None, name).is_some() {
            continue;
        }
        let body = json!({"metadata": {"name": name}, "value": value, "description": description});
        if let Err(e) = core.create(pcrd, None, body, &mut ctx) {
            if e.reason != "AlreadyExists" {
                tracing::warn!("priority class {name}: {}", e.message);
            }
        }
    }
}

fn validate_priority_class(obj: &Value, causes: &mut Vec<Cause>) {
    let name = meta_str(obj, "name");
    let value = obj.get("value").and_then(Value::as_i64).unwrap_or(0);
    let global = obj
        .get("globalDefault")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if name.starts_with("system-") {
        let err = match SYSTEM_PRIORITY_CLASSES.iter().find(|(n, _, _)| *n == name) {
            None => Some(format!("name {name} is not a known system priority class")),
            Some((_, v, _)) if *v != value => {
                Some(format!("value of {name} PriorityClass must be {v}"))
            }
            Some(_) if global => Some(format!(
                "globalDefault of {name} PriorityClass must be false"
            )),
            Some(_) => None,
        };
        if let Some(err) = err {
            causes.push(cause(
                "FieldValueForbidden",
                "metadata.name",
                format!("Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: {err}"),
            ));
        }
    } else if value > HIGHEST_USER_PRIORITY {
        causes.push(cause(
            "FieldValueForbidden",
            "value",
            format!("Forbidden: maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"),
        ));
    }
    if let Some(p) = obj.get("preemptionPolicy").and_then(Value::as_str) {
        if p != "PreemptLowerPriority" && p != "Never" {
            causes.push(cause(
                "FieldValueNotSupported",
                "preemptionPolicy",
                format!("Unsupported value: \"{p}\": supported values: \"Never\", \"PreemptLowerPriority\""),
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// Admission
// ---------------------------------------------------------------------------

/// Held from the quota check to the store write (dropped at the end of `Core::create`), so two
/// creates cannot both take the last unit of a quota.
pub(crate) struct QuotaHold(#[allow(dead_code)] Option<MutexGuard<'static, ()>>);

impl QuotaHold {
    pub(crate) fn none() -> Self {
        QuotaHold(None)
    }
}

static QUOTA_LOCK: Mutex<()> = Mutex::new(());

/// `pods "x" is forbidden: <why>` (`admission.NewForbidden`).
pub(super) fn forbidden(rd: &ResourceDef, obj: &Value, why: String) -> ApiError {
    let name = meta_str(obj, "name");
    let mut e = ApiError::new(
        403,
        "Forbidden",
        format!("{} \"{name}\" is forbidden: {why}", rd.group_resource()),
    );
    let mut d = json!({"name": name, "kind": rd.plural});
    if !rd.group.is_empty() {
        d["group"] = json!(rd.group);
    }
    e.details = Some(d);
    e
}

/// Admission on create: LimitRanger and Priority may change a pod; PriorityClass allows one
/// global default; ResourceQuota refuses what would exceed a quota of the namespace and returns
/// the hold that keeps its count valid up to the write.
pub(super) fn admit_create(
    core: &Core,
    rd: &ResourceDef,
    ns: Option<&str>,
    obj: &mut Value,
) -> ApiResult<QuotaHold> {
    if is(rd, "", "Pod") {
        if let Some(ns) = ns {
            limit_ranger_pod(core, rd, ns, obj)?;
        }
        priority_pod(core, rd, obj)?;
        // Defaults from limit ranges change the pod's QoS class.
        let qos = crate::api::fields::qos_class(obj);
        if obj.get("status").is_some_and(Value::is_object) {
            obj["status"]["qosClass"] = json!(qos);
        }
    }
    if is(rd, "", "PersistentVolumeClaim") {
        if let Some(ns) = ns {
            limit_ranger_pvc(core, rd, ns, obj)?;
        }
    }
    if is(rd, "scheduling.k8s.io", "PriorityClass") {
        one_global_default(core, rd, obj)?;
    }
    match ns {
        Some(ns) if rd.namespaced => quota_admit(core, rd, ns, obj, None),
        _ => Ok(QuotaHold::none()),
    }
}

/// The Priority plugin on PriorityClasses: at most one `globalDefault` (create and update).
fn one_global_default(core: &Core, rd: &ResourceDef, pc: &Value) -> ApiResult<()> {
    if pc.get("globalDefault").and_then(Value::as_bool) != Some(true) {
        return Ok(());
    }
    let (all, _) = core.store.list(&rd.key_prefix(None));
    match all.iter().find(|s| {
        s.object.get("globalDefault").and_then(Value::as_bool) == Some(true)
            && meta_str(&s.object, "name") != meta_str(pc, "name")
    }) {
        Some(other) => Err(forbidden(
            rd,
            pc,
            format!(
                "PriorityClass {} is already marked as default. Only one default can exist",
                meta_str(&other.object, "name")
            ),
        )),
        None => Ok(()),
    }
}

// --- LimitRanger ------------------------------------------------------------

fn limit_ranges(core: &Core, ns: &str) -> Vec<Value> {
    let Some(lr) = registry::find_kind("", "LimitRange") else {
        return Vec::new();
    };
    core.store
        .list(&lr.key_prefix(Some(ns)))
        .0
        .into_iter()
        .map(|s| (*s.object).clone())
        .collect()
}

/// `SetDefaults_Pod`'s copy of limits into unset requests, then the Container items'
/// defaults, as the LimitRanger plugin merges them, with its annotation.
fn limit_ranger_pod(core: &Core, rd: &ResourceDef, ns: &str, pod: &mut Value) -> ApiResult<()> {
    for list in ["containers", "initContainers"] {
        if let Some(cs) = pod
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        {
            for c in cs {
                let limits = c
                    .pointer("/resources/limits")
                    .and_then(Value::as_object)
                    .cloned();
                if let Some(limits) = limits {
                    for (k, v) in limits {
                        if c.pointer(&format!(
                            "/resources/requests/{}",
                            k.replace('~', "~0").replace('/', "~1")
                        ))
                        .is_none()
                        {
                            if !c["resources"].get("requests").is_some_and(Value::is_object) {
                                c["resources"]["requests"] = json!({});
                            }
                            c["resources"]["requests"][k] = v;
                        }
                    }
                }
            }
        }
    }
    let ranges = limit_ranges(core, ns);
    if ranges.is_empty() {
        return Ok(());
    }
    // The last range wins for a resource both default (upstream iterates them in order).
    let mut def_req = Map::new();
    let mut def_lim = Map::new();
    for lr in &ranges {
        for item in lr
            .pointer("/spec/limits")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if item.get("type").and_then(Value::as_str) != Some("Container") {
                continue;
            }
            if let Some(m) = item.get("defaultRequest").and_then(Value::as_object) {
                def_req.extend(m.clone());
            }
            if let Some(m) = item.get("default").and_then(Value::as_object) {
                def_lim.extend(m.clone());
            }
        }
    }
    let mut notes: Vec<String> = Vec::new();
    for (list, what) in [
        ("containers", "container"),
        ("initContainers", "init container"),
    ] {
        let Some(cs) = pod
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in cs {
            let cname = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if !c.get("resources").is_some_and(Value::is_object) {
                c["resources"] = json!({});
            }
            let mut set_l = Vec::new();
            let mut set_r = Vec::new();
            for (field, defaults, set) in [
                ("limits", &def_lim, &mut set_l),
                ("requests", &def_req, &mut set_r),
            ] {
                if defaults.is_empty() {
                    continue;
                }
                if !c["resources"].get(field).is_some_and(Value::is_object) {
                    c["resources"][field] = json!({});
                }
                if let Some(m) = c["resources"][field].as_object_mut() {
                    for (k, v) in defaults {
                        if !m.contains_key(k) {
                            m.insert(k.clone(), v.clone());
                            set.push(k.clone());
                        }
                    }
                }
            }
            if !set_r.is_empty() {
                set_r.sort();
                notes.push(format!("{} request for {what} {cname}", set_r.join(", ")));
            }
            if !set_l.is_empty() {
                set_l.sort();
                notes.push(format!("{} limit for {what} {cname}", set_l.join(", ")));
            }
        }
    }
    if !notes.is_empty() {
        if !pod["metadata"]
            .get("annotations")
            .is_some_and(Value::is_object)
        {
            pod["metadata"]["annotations"] = json!({});
        }
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"] =
            json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
    let mut errs: Vec<String> = Vec::new();
    for lr in &ranges {
        for item in lr
            .pointer("/spec/limits")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ty = item.get("type").and_then(Value::as_str).unwrap_or("");
            let min = resource_list(item.get("min"));
            let max = resource_list(item.get("max"));
            let ratio = resource_list(item.get("maxLimitRequestRatio"));
            let mut check = |req: &BTreeMap<String, Quantity>, lim: &BTreeMap<String, Quantity>| {
                for (k, v) in &min {
                    errs.extend(min_constraint(ty, k, v, req, lim));
                }
                for (k, v) in &max {
                    errs.extend(max_constraint(ty, k, v, req, lim));
                }
                for (k, v) in &ratio {
                    errs.extend(ratio_constraint(ty, k, v, req, lim));
                }
            };
            match ty {
                "Container" => {
                    for list in ["containers", "initContainers"] {
                        for c in pod
                            .pointer(&format!("/spec/{list}"))
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            check(
                                &resource_list(c.pointer("/resources/requests")),
                                &resource_list(c.pointer("/resources/limits")),
                            );
                        }
                    }
                }
                "Pod" => {
                    let (req, lim) = pod_requests_limits(pod);
                    check(&req, &lim);
                }
                _ => {}
            }
        }
        if !errs.is_empty() {
            // Upstream stops at the first LimitRange that refuses.
            break;
        }
    }
    if errs.is_empty() {
        return Ok(());
    }
    Err(forbidden(rd, pod, aggregate(errs)))
}

/// `utilerrors.NewAggregate(errs).Error()`: one message as is, several (deduplicated) in brackets.
fn aggregate(errs: Vec<String>) -> String {
    let mut seen = Vec::new();
    for e in errs {
        if !seen.contains(&e) {
            seen.push(e);
        }
    }
    if seen.len() == 1 {
        seen.remove(0)
    } else {
        format!("[{}]", seen.join(", "))
    }
}

fn min_constraint(
    ty: &str,
    k: &str,
    enforced: &Quantity,
    req: &BTreeMap<String, Quantity>,
    lim: &BTreeMap<String, Quantity>,
) -> Option<String> {
    let e = enforced.canonical();
    let Some(r) = req.get(k) else {
        return Some(format!(
            "minimum {k} usage per {ty} is {e}.  No request is specified"
        ));
    };
    if r < enforced {
        return Some(format!(
            "minimum {k} usage per {ty} is {e}, but request is {}",
            r.canonical()
        ));
    }
    match lim.get(k) {
        Some(l) if l < enforced => Some(format!(
            "minimum {k} usage per {ty} is {e}, but limit is {}",
            l.canonical()
        )),
        _ => None,
    }
}

fn max_constraint(
    ty: &str,
    k: &str,
    enforced: &Quantity,
    req: &BTreeMap<String, Quantity>,
    lim: &BTreeMap<String, Quantity>,
) -> Option<String> {
    let e = enforced.canonical();
    let Some(l) = lim.get(k) else {
        return Some(format!(
            "maximum {k} usage per {ty} is {e}.  No limit is specified"
        ));
    };
    if l > enforced {
        return Some(format!(
            "maximum {k} usage per {ty} is {e}, but limit is {}",
            l.canonical()
        ));
    }
    match req.get(k) {
        Some(r) if r > enforced => Some(format!(
            "maximum {k} usage per {ty} is {e}, but request is {}",
            r.canonical()
        )),
        _ => None,
    }
}

fn ratio_constraint(
    ty: &str,
    k: &str,
    enforced: &Quantity,
    req: &BTreeMap<String, Quantity>,
    lim: &BTreeMap<String, Quantity>,
) -> Option<String> {
    let e = enforced.canonical();
    let r = req.get(k).filter(|q| !q.is_zero());
    let l = lim.get(k).filter(|q| !q.is_zero());
    let Some(r) = r else {
        return Some(format!("{k} max limit to request ratio per {ty} is {e}, but no request is specified or request is 0"));
    };
    let Some(l) = l else {
        return Some(format!("{k} max limit to request ratio per {ty} is {e}, but no limit is specified or limit is 0"));
    };
    let observed = l.nano as f64 / r.nano as f64;
    let max = enforced.nano as f64 / NANO as f64;
    (observed > max).then(|| {
        format!(
            "{k} max limit to request ratio per {ty} is {e}, but provided ratio is {observed:.6}"
        )
    })
}

/// LimitRanger for claims: a PersistentVolumeClaim item's min and max on the requests.
fn limit_ranger_pvc(core: &Core, rd: &ResourceDef, ns: &str, pvc: &Value) -> ApiResult<()> {
    let req = resource_list(pvc.pointer("/spec/resources/requests"));
    let mut errs = Vec::new();
    for lr in limit_ranges(core, ns) {
        for item in lr
            .pointer("/spec/limits")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if item.get("type").and_then(Value::as_str) != Some("PersistentVolumeClaim") {
                continue;
            }
            let ty = "PersistentVolumeClaim";
            for (k, v) in resource_list(item.get("min")) {
                errs.extend(min_constraint(ty, &k, &v, &req, &BTreeMap::new()));
            }
            for (k, v) in resource_list(item.get("max")) {
                let e = v.canonical();
                match req.get(&k) {
                    None => errs.push(format!(
                        "maximum {k} usage per {ty} is {e}.  No request is specified"
                    )),
                    Some(r) if *r > v => errs.push(format!(
                        "maximum {k} usage per {ty} is {e}, but request is {}",
                        r.canonical()
                    )),
                    Some(_) => {}
                }
            }
        }
        if !errs.is_empty() {
            break;
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(forbidden(rd, pvc, aggregate(errs)))
    }
}

// --- Priority ---------------------------------------------------------------

/// The Priority plugin on pod create: `spec.priority` and `preemptionPolicy` from the named
/// PriorityClass, or the global default one (else 0 and PreemptLowerPriority).
fn priority_pod(core: &Core, rd: &ResourceDef, pod: &mut Value) -> ApiResult<()> {
    let Some(pcrd) = registry::find_kind("scheduling.k8s.io", "PriorityClass") else {
        return Ok(());
    };
    let class = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let (priority, policy) = if class.is_empty() {
        let (all, _) = core.store.list(&pcrd.key_prefix(None));
        // Upstream picks the lowest-valued default if several slipped in.
        let default = all
            .iter()
            .filter(|s| s.object.get("globalDefault").and_then(Value::as_bool) == Some(true))
            .min_by_key(|s| s.object.get("value").and_then(Value::as_i64).unwrap_or(0));
        match default {
            Some(d) => {
                pod["spec"]["priorityClassName"] = json!(meta_str(&d.object, "name"));
                (
                    d.object.get("value").and_then(Value::as_i64).unwrap_or(0),
                    d.object
                        .get("preemptionPolicy")
                        .and_then(Value::as_str)
                        .map(String::from),
                )
            }
            None => (0, Some("PreemptLowerPriority".to_string())),
        }
    } else {
        let Some(pc) = core.get_stored(pcrd, None, &class) else {
            return Err(forbidden(
                rd,
                pod,
                format!("no PriorityClass with name {class} was found"),
            ));
        };
        (
            pc.object.get("value").and_then(Value::as_i64).unwrap_or(0),
            pc.object
                .get("preemptionPolicy")
                .and_then(Value::as_str)
                .map(String::from),
        )
    };
    if let Some(given) = pod.pointer("/spec/priority").and_then(Value::as_i64) {
        if given != priority {
            return Err(forbidden(rd, pod, format!("the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name")));
        }
    }
    pod["spec"]["priority"] = json!(priority);
    if let Some(policy) = policy {
        if let Some(given) = pod
            .pointer("/spec/preemptionPolicy")
            .and_then(Value::as_str)
        {
            if given != policy {
                return Err(forbidden(rd, pod, format!("the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name")));
            }
        }
        pod["spec"]["preemptionPolicy"] = json!(policy);
    }
    Ok(())
}

// --- ResourceQuota ----------------------------------------------------------

/// A pod's requests and limits as the scheduler and quota see them (`PodRequests`/`PodLimits`):
/// the sum over containers (and restartable init containers), at least any one init container,
/// plus the pod overhead.
pub(crate) fn pod_requests_limits(
    pod: &Value,
) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let mut out = (BTreeMap::new(), BTreeMap::new());
    for (field, acc) in [("requests", &mut out.0), ("limits", &mut out.1)] {
        let add = |acc: &mut BTreeMap<String, Quantity>, l: BTreeMap<String, Quantity>| {
            for (k, q) in l {
                let cur = acc.get(&k).copied();
                acc.insert(k, cur.map_or(q, |c| c.add(&q)));
            }
        };
        for c in pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add(
                acc,
                resource_list(c.pointer(&format!("/resources/{field}"))),
            );
        }
        let inits: Vec<&Value> = pod
            .pointer("/spec/initContainers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        for c in inits
            .iter()
            .filter(|c| c.get("restartPolicy").and_then(Value::as_str) == Some("Always"))
        {
            add(
                acc,
                resource_list(c.pointer(&format!("/resources/{field}"))),
            );
        }
        for c in inits
            .iter()
            .filter(|c| c.get("restartPolicy").and_then(Value::as_str) != Some("Always"))
        {
            for (k, q) in resource_list(c.pointer(&format!("/resources/{field}"))) {
                if acc.get(&k).is_none_or(|cur| q > *cur) {
                    acc.insert(k, q);
                }
            }
        }
        add(acc, resource_list(pod.pointer("/spec/overhead")));
    }
    out
}

/// One quota resource of a (charged) pod: what [`object_usage`] gives for `key`.
fn pod_usage_of(pod: &Value, key: &str) -> Option<Quantity> {
    if key == "pods" || key.starts_with("count/") {
        return Some(Quantity::from_int(1));
    }
    let (field, res) = match key {
        "cpu" | "memory" | "ephemeral-storage" => ("requests", key),
        k => match (k.strip_prefix("requests."), k.strip_prefix("limits.")) {
            (Some(r), _) => ("requests", r),
            (_, Some(r)) => ("limits", r),
            _ => return None,
        },
    };
    let of = |c: &Value| -> Option<Quantity> {
        c.get("resources")?
            .get(field)?
            .get(res)
            .and_then(Quantity::from_value)
    };
    let mut sum: Option<Quantity> = None;
    let mut add = |q: Option<Quantity>| {
        if let Some(q) = q {
            sum = Some(sum.map_or(q, |s| s.add(&q)));
        }
    };
    for c in pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(of(c));
    }
    let inits = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array);
    let sidecar = |c: &&Value| c.get("restartPolicy").and_then(Value::as_str) == Some("Always");
    for c in inits.into_iter().flatten().filter(sidecar) {
        add(of(c));
    }
    for c in inits.into_iter().flatten().filter(|c| !sidecar(c)) {
        if let Some(q) = of(c) {
            if sum.is_none_or(|s| q > s) {
                sum = Some(q);
            }
        }
    }
    let overhead = pod
        .pointer("/spec/overhead")
        .and_then(|o| o.get(res))
        .and_then(Quantity::from_value);
    match (sum, overhead) {
        (Some(s), Some(o)) => Some(s.add(&o)),
        (s, o) => s.or(o),
    }
}

/// Whether quota still charges a pod: not finished, and not past its deletion grace period
/// (`QuotaV1Pod`).
fn pod_counts(pod: &Value) -> bool {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if phase == "Succeeded" || phase == "Failed" {
        return false;
    }
    if let Some(ts) = pod
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
    {
        if let Ok(t) = ts.parse::<jiff::Timestamp>() {
            let grace = pod
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if jiff::Timestamp::now() > t + jiff::SignedDuration::from_secs(grace) {
                return false;
            }
        }
    }
    true
}

/// Whether a pod falls under a quota's scopes and scope selector.
fn pod_in_scopes(quota: &Value, pod: &Value) -> bool {
    let mut reqs: Vec<(String, String, Vec<String>)> = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| (s.to_string(), "Exists".to_string(), Vec::new()))
        .collect();
    for e in quota
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        reqs.push((
            e.get("scopeName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            e.get("operator")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            e.get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
        ));
    }
    let terminating = pod
        .pointer("/spec/activeDeadlineSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|d| d >= 0);
    let best_effort = crate::api::fields::qos_class(pod) == "BestEffort";
    reqs.iter().all(|(scope, op, values)| match scope.as_str() {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort,
        "NotBestEffort" => !best_effort,
        "PriorityClass" => {
            let class = pod
                .pointer("/spec/priorityClassName")
                .and_then(Value::as_str)
                .unwrap_or("");
            match op.as_str() {
                "In" => values.iter().any(|v| v == class),
                "NotIn" => !values.iter().any(|v| v == class),
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                _ => false,
            }
        }
        "CrossNamespacePodAffinity" => {
            let aff = pod.pointer("/spec/affinity");
            let cross = ["podAffinity", "podAntiAffinity"].iter().any(|k| {
                aff.and_then(|a| a.get(*k)).is_some_and(|a| {
                    a.to_string().contains("namespaceSelector")
                        || a.to_string().contains("\"namespaces\"")
                })
            });
            if op == "DoesNotExist" {
                !cross
            } else {
                cross
            }
        }
        _ => false,
    })
}

fn quota_scoped(quota: &Value) -> bool {
    quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
        || quota
            .pointer("/spec/scopeSelector/matchExpressions")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
}

/// The resources an object uses, by quota resource name (the evaluators' `Usage`); nothing
/// for a pod quota no longer charges (finished, or past its deletion grace).
pub(crate) fn object_usage(rd: &ResourceDef, obj: &Value) -> BTreeMap<String, Quantity> {
    let mut u = BTreeMap::new();
    let one = Quantity::from_int(1);
    let count_key = if rd.group.is_empty() {
        format!("count/{}", rd.plural)
    } else {
        format!("count/{}.{}", rd.plural, rd.group)
    };
    match (rd.group, rd.kind) {
        ("", "Pod") => {
            if !pod_counts(obj) {
                return u;
            }
            u.insert("pods".into(), one);
            u.insert(count_key, one);
            let (req, lim) = pod_requests_limits(obj);
            for (k, q) in req {
                if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    u.insert(k.clone(), q);
                }
                u.insert(format!("requests.{k}"), q);
            }
            for (k, q) in lim {
                u.insert(format!("limits.{k}"), q);
            }
        }
        ("", "Service") => {
            u.insert("services".into(), one);
            u.insert(count_key, one);
            let ty = obj
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            let ports = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map_or(0, Vec::len) as i64;
            let lb = ty == "LoadBalancer";
            u.insert(
                "services.loadbalancers".into(),
                Quantity::from_int(i64::from(lb)),
            );
            let np = ty == "NodePort"
                || (lb
                    && obj.pointer("/spec/allocateLoadBalancerNodePorts") != Some(&json!(false)));
            u.insert(
                "services.nodeports".into(),
                Quantity::from_int(if np { ports } else { 0 }),
            );
        }
        ("", "PersistentVolumeClaim") => {
            u.insert("persistentvolumeclaims".into(), one);
            u.insert(count_key, one);
            let storage = obj
                .pointer("/spec/resources/requests/storage")
                .and_then(Quantity::from_value)
                .unwrap_or_else(Quantity::zero);
            u.insert("requests.storage".into(), storage);
            if let Some(sc) = obj
                .pointer("/spec/storageClassName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                u.insert(
                    format!("{sc}.storageclass.storage.k8s.io/requests.storage"),
                    storage,
                );
                u.insert(
                    format!("{sc}.storageclass.storage.k8s.io/persistentvolumeclaims"),
                    one,
                );
            }
        }
        ("", "ConfigMap" | "Secret" | "ReplicationController" | "ResourceQuota") => {
            u.insert(rd.plural.to_string(), one);
            u.insert(count_key, one);
        }
        _ => {
            u.insert(count_key, one);
        }
    }
    u
}

/// What a quota names that an object of `rd` can use: pods for compute and pod counts,
/// the core kinds for their names, `count/<resource>[.<group>]` for every kind.
fn resource_of_quota_name(name: &str) -> Option<&'static ResourceDef> {
    let core = |plural: &str| registry::find("", "v1", plural);
    if let Some(rest) = name.strip_prefix("count/") {
        let (plural, group) = rest.split_once('.').unwrap_or((rest, ""));
        return registry::RESOURCES
            .iter()
            .find(|r| r.plural == plural && r.group == group);
    }
    if name.ends_with(".storageclass.storage.k8s.io/requests.storage")
        || name.ends_with(".storageclass.storage.k8s.io/persistentvolumeclaims")
    {
        return core("persistentvolumeclaims");
    }
    match name {
        "pods" | "cpu" | "memory" | "ephemeral-storage" => core("pods"),
        n if n.starts_with("requests.") && n != "requests.storage" => core("pods"),
        n if n.starts_with("limits.") => core("pods"),
        "services" | "services.nodeports" | "services.loadbalancers" => core("services"),
        "requests.storage" | "persistentvolumeclaims" => core("persistentvolumeclaims"),
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => core(name),
        _ => None,
    }
}

/// A quota's current usage in its namespace: for every resource it limits, the sum over the
/// objects it covers (what the quota controller writes into `status.used`).
pub(crate) fn quota_usage(core: &Core, quota: &Value) -> BTreeMap<String, Quantity> {
    let ns = meta_str(quota, "namespace");
    let hard = resource_list(quota.pointer("/spec/hard"));
    let scoped = quota_scoped(quota);
    let mut by_rd: BTreeMap<String, (&'static ResourceDef, Vec<String>)> = BTreeMap::new();
    let mut used: BTreeMap<String, Quantity> =
        hard.keys().map(|k| (k.clone(), Quantity::zero())).collect();
    for k in hard.keys() {
        if let Some(r) = resource_of_quota_name(k) {
            by_rd
                .entry(format!("{}/{}", r.group, r.plural))
                .or_insert_with(|| (r, Vec::new()))
                .1
                .push(k.clone());
        }
    }
    for (r, keys) in by_rd.values() {
        let is_pod = r.group.is_empty() && r.kind == "Pod";
        if scoped && !is_pod {
            continue;
        }
        // Object counts need no per-object usage (the common quota, and the cheap one:
        // admission recounts on every create).
        let counts_only = keys
            .iter()
            .all(|k| k.starts_with("count/") || k == r.plural);
        let one = Quantity::from_int(1);
        for s in core.store.list(&r.key_prefix(Some(ns))).0 {
            if is_pod && scoped && !pod_in_scopes(quota, &s.object) {
                continue;
            }
            if counts_only {
                if !is_pod || pod_counts(&s.object) {
                    for k in keys {
                        if let Some(cur) = used.get_mut(k) {
                            *cur = cur.add(&one);
                        }
                    }
                }
                continue;
            }
            if is_pod {
                // Per key, without building the pod's whole usage (this runs per pod on every
                // create admission checks).
                if pod_counts(&s.object) {
                    for k in keys {
                        if let (Some(q), Some(cur)) = (pod_usage_of(&s.object, k), used.get_mut(k))
                        {
                            *cur = cur.add(&q);
                        }
                    }
                }
                continue;
            }
            let u = object_usage(r, &s.object);
            for k in keys {
                if let (Some(q), Some(cur)) = (u.get(k), used.get(k).copied()) {
                    used.insert(k.clone(), cur.add(q));
                }
            }
        }
    }
    used
}

/// `failed quota: <q>: must specify ...` — a compute quota wants every container to say the
/// resources it limits (`enforcePodContainerConstraints`).
fn pod_constraints(hard: &BTreeMap<String, Quantity>, pod: &Value) -> Option<String> {
    const VALIDATION: &[&str] = &[
        "requests.cpu",
        "requests.memory",
        "limits.cpu",
        "limits.memory",
        "cpu",
        "memory",
    ];
    let required: BTreeSet<&str> = hard
        .keys()
        .map(String::as_str)
        .filter(|k| VALIDATION.contains(k))
        .collect();
    if required.is_empty() {
        return None;
    }
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for list in ["containers", "initContainers"] {
        for c in pod
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let req = resource_list(c.pointer("/resources/requests"));
            let lim = resource_list(c.pointer("/resources/limits"));
            let mut has: BTreeSet<String> = BTreeSet::new();
            for k in req.keys() {
                has.insert(format!("requests.{k}"));
                if k == "cpu" || k == "memory" {
                    has.insert(k.clone());
                }
            }
            for k in lim.keys() {
                has.insert(format!("limits.{k}"));
            }
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            for r in &required {
                if !has.contains(*r) {
                    missing.entry(r).or_default().insert(name.clone());
                }
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(r, cs)| {
            format!(
                "{r} for: {}",
                cs.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

/// ResourceQuota admission on update: only what grows is charged (a Service turned NodePort or
/// LoadBalancer, a claim asking for more storage); the kinds whose usage cannot change in
/// place pass without a look.
pub(super) fn admit_update(
    core: &Core,
    rd: &ResourceDef,
    old: &Value,
    new: &Value,
) -> ApiResult<QuotaHold> {
    if is(rd, "scheduling.k8s.io", "PriorityClass") {
        one_global_default(core, rd, new)?;
        return Ok(QuotaHold::none());
    }
    if !(is(rd, "", "Service") || is(rd, "", "PersistentVolumeClaim")) {
        return Ok(QuotaHold::none());
    }
    let before = object_usage(rd, old);
    let grown: BTreeMap<String, Quantity> = object_usage(rd, new)
        .into_iter()
        .filter_map(|(k, q)| {
            let d = q.sub(&before.get(&k).copied().unwrap_or_else(Quantity::zero));
            (d > Quantity::zero()).then_some((k, d))
        })
        .collect();
    if grown.is_empty() {
        return Ok(QuotaHold::none());
    }
    quota_admit(core, rd, meta_str(new, "namespace"), new, Some(grown))
}

/// ResourceQuota admission: every quota of the namespace that limits something the object
/// uses (on update: `grown`, what the update adds) must keep room for it; the lock is held to
/// the write.
fn quota_admit(
    core: &Core,
    rd: &ResourceDef,
    ns: &str,
    obj: &Value,
    grown: Option<BTreeMap<String, Quantity>>,
) -> ApiResult<QuotaHold> {
    let Some(qrd) = registry::find_kind("", "ResourceQuota") else {
        return Ok(QuotaHold::none());
    };
    if core.store.list(&qrd.key_prefix(Some(ns))).0.is_empty() {
        return Ok(QuotaHold::none());
    }
    let hold = QUOTA_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // Listed again under the lock: a quota created meanwhile counts.
    let quotas = core.store.list(&qrd.key_prefix(Some(ns))).0;
    let is_pod = rd.group.is_empty() && rd.kind == "Pod";
    let creating = grown.is_none();
    let delta = grown.unwrap_or_else(|| object_usage(rd, obj));
    for q in &quotas {
        let quota = &q.object;
        let hard = resource_list(quota.pointer("/spec/hard"));
        if quota_scoped(quota) && !(is_pod && pod_in_scopes(quota, obj)) {
            continue;
        }
        let relevant: BTreeMap<String, Quantity> = hard
            .iter()
            .filter(|(k, _)| {
                resource_of_quota_name(k)
                    .is_some_and(|r| r.group == rd.group && r.plural == rd.plural)
            })
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if relevant.is_empty() {
            continue;
        }
        if creating && is_pod && pod_counts(obj) {
            if let Some(why) = pod_constraints(&relevant, obj) {
                return Err(forbidden(
                    rd,
                    obj,
                    format!("failed quota: {}: {why}", meta_str(quota, "name")),
                ));
            }
        }
        let requested: BTreeMap<String, Quantity> = relevant
            .keys()
            .filter_map(|k| Some((k.clone(), *delta.get(k)?)))
            .collect();
        if requested.is_empty() {
            continue;
        }
        let used = quota_usage(core, quota);
        let exceeded: Vec<&String> = requested
            .iter()
            .filter(|(k, q)| {
                let u = used.get(*k).copied().unwrap_or_else(Quantity::zero);
                relevant.get(*k).is_some_and(|h| u.add(q) > *h)
            })
            .map(|(k, _)| k)
            .collect();
        if !exceeded.is_empty() {
            let mask = |l: &BTreeMap<String, Quantity>| -> BTreeMap<String, Quantity> {
                exceeded
                    .iter()
                    .map(|k| {
                        (
                            (*k).clone(),
                            l.get(*k).copied().unwrap_or_else(Quantity::zero),
                        )
                    })
                    .collect()
            };
            return Err(forbidden(
                rd,
                obj,
                format!(
                    "exceeded quota: {}, requested: {}, used: {}, limited: {}",
                    meta_str(quota, "name"),
                    pretty(&mask(&requested)),
                    pretty(&mask(&used)),
                    pretty(&mask(&relevant)),
                ),
            ));
        }
    }
    Ok(QuotaHold(Some(hold)))
}

/// The status the quota controller keeps: `hard` as the spec says, `used` as counted now.
pub(crate) fn quota_status(core: &Core, quota: &Value) -> Value {
    let hard = resource_list(quota.pointer("/spec/hard"));
    let used = quota_usage(core, quota);
    json!({"hard": list_to_value(&hard), "used": list_to_value(&used)})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).expect(s)
    }

    #[test]
    fn quota_names_must_be_standard() {
        let mut causes = Vec::new();
        validate_quota(
            &json!({"spec": {"hard": {"pods": "1", "count/deployments.apps": "2", "foo": "1", "pods2": "1.5"}}}),
            &mut causes,
        );
        let msgs: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            msgs,
            [
                "spec.hard[foo]: Invalid value: \"foo\": must be a standard resource for quota",
                "spec.hard[pods2]: Invalid value: \"pods2\": must be a standard resource for quota",
            ]
        );
        causes.clear();
        validate_quota(
            &json!({"spec": {"hard": {"pods": "1.5", "cpu": "-1"}}}),
            &mut causes,
        );
        let msgs: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            msgs,
            [
                "spec.hard[cpu]: Invalid value: \"-1\": must be greater than or equal to 0",
                "spec.hard[pods]: Invalid value: \"1500m\": must be an integer",
            ]
        );
    }

    #[test]
    fn quantities_parse_and_print_canonically() {
        for (input, canonical) in [
            ("100m", "100m"),
            ("0.1", "100m"),
            ("0.05", "50m"),
            ("1", "1"),
            ("1500", "1500"),
            ("2000", "2k"),
            ("64Mi", "64Mi"),
            ("1.5Gi", "1536Mi"),
            ("1024", "1024"),
            ("512Ki", "512Ki"),
            ("1e3", "1e3"),
            ("0", "0"),
            ("1M", "1M"),
            ("-2", "-2"),
        ] {
            assert_eq!(q(input).canonical(), canonical, "{input}");
        }
        assert!(q("100m") < q("0.2"));
        assert_eq!(q("1Gi").nano, (1 << 30) * NANO);
        assert_eq!(q("1.5").nano, 1_500_000_000);
        assert_eq!(q("1n").nano, 1);
        assert_eq!(q("64Mi").add(&q("64Mi")).canonical(), "128Mi");
        assert_eq!(q("100m").add(&q("1")).canonical(), "1100m");
        assert!(Quantity::parse("abc").is_none());
        assert!(Quantity::parse("1.2.3").is_none());
    }

    #[test]
    fn limit_range_defaults_follow_max_and_min() {
        let mut lr = json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "10Mi"}}]}});
        default_limit_range(&mut lr);
        assert_eq!(lr["spec"]["limits"][0]["default"], json!({"cpu": "1"}));
        assert_eq!(
            lr["spec"]["limits"][0]["defaultRequest"],
            json!({"cpu": "1", "memory": "10Mi"})
        );
    }

    #[test]
    fn pod_requests_take_the_largest_init_container() {
        let pod = json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "64Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m"}}},
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "500m"}}}],
        }});
        let (req, lim) = pod_requests_limits(&pod);
        assert_eq!(req["cpu"].canonical(), "500m");
        assert_eq!(lim["memory"].canonical(), "64Mi");
        assert_eq!(
            pod_constraints(&resource_list(Some(&json!({"limits.cpu": "1"}))), &pod).as_deref(),
            Some("must specify limits.cpu for: a,b,i")
        );
    }

    #[test]
    fn per_key_pod_usage_matches_the_whole_usage() {
        let pod = json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m"}}},
            ],
            "initContainers": [
                {"name": "i", "resources": {"requests": {"cpu": "250m", "memory": "3Gi"}}},
                {"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
            ],
            "overhead": {"cpu": "10m", "memory": "1Mi"},
        }, "status": {"phase": "Running"}});
        let whole = object_usage(registry::pods(), &pod);
        for k in [
            "pods",
            "count/pods",
            "cpu",
            "requests.cpu",
            "requests.memory",
            "limits.memory",
            "memory",
        ] {
            assert_eq!(pod_usage_of(&pod, k), whole.get(k).copied(), "{k}");
        }
        assert_eq!(whole["requests.cpu"].canonical(), "360m");
        assert_eq!(
            whole["requests.memory"].canonical(),
            "3073Mi",
            "the init peak plus overhead"
        );
    }

    #[test]
    fn limit_constraints_use_upstream_texts() {
        let req = resource_list(Some(&json!({"cpu": "50m"})));
        let lim = BTreeMap::new();
        assert_eq!(
            min_constraint("Container", "cpu", &q("100m"), &req, &lim).as_deref(),
            Some("minimum cpu usage per Container is 100m, but request is 50m")
        );
        assert_eq!(
            max_constraint("Container", "cpu", &q("1"), &req, &lim).as_deref(),
            Some("maximum cpu usage per Container is 1.  No limit is specified")
        );
        assert_eq!(aggregate(vec!["a".into(), "a".into()]), "a");
        assert_eq!(aggregate(vec!["a".into(), "b".into()]), "[a, b]");
    }

    /// Every pairwise order rule at once (min 5 > default request 4 > default 3 > max 2), in
    /// upstream's order, field and reported value; and the fields a Pod limit may not have.
    #[test]
    fn limit_range_order_and_pod_rules() {
        let mut causes = Vec::new();
        validate_limit_range(
            &json!({"spec": {"limits": [
                {"type": "Container", "min": {"cpu": "5"}, "defaultRequest": {"cpu": "4"},
                 "default": {"cpu": "3"}, "max": {"cpu": "2"}},
                {"type": "Pod", "default": {"cpu": "1"}, "defaultRequest": {"cpu": "1"}},
            ]}}),
            &mut causes,
        );
        let msgs: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let l = "spec.limits[0]";
        assert_eq!(
            msgs,
            [
                format!("{l}.min[cpu]: Invalid value: \"5\": min value 5 is greater than max value 2"),
                format!("{l}.defaultRequest[cpu]: Invalid value: \"4\": min value 5 is greater than default request value 4"),
                format!("{l}.defaultRequest[cpu]: Invalid value: \"4\": default request value 4 is greater than max value 2"),
                format!("{l}.defaultRequest[cpu]: Invalid value: \"4\": default request value 4 is greater than default limit value 3"),
                format!("{l}.default[cpu]: Invalid value: \"5\": min value 5 is greater than default value 3"),
                format!("{l}.default[cpu]: Invalid value: \"2\": default value 3 is greater than max value 2"),
                "spec.limits[1].default: Forbidden: may not be specified when `type` is 'Pod'".into(),
                "spec.limits[1].defaultRequest: Forbidden: may not be specified when `type` is 'Pod'".into(),
            ]
        );
    }
}
