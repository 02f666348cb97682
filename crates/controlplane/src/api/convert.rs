//! Conversions of built-in kinds served at a version other than the one they
//! are stored at, as kube-apiserver converts them through its internal type.
//!
//! autoscaling/v1 HorizontalPodAutoscaler (stored as autoscaling/v2, upstream's
//! storage version), after pkg/apis/autoscaling/v1/conversion.go: v1 has only
//! `targetCPUUtilizationPercentage` and `currentCPUUtilizationPercentage`;
//! every other metric, the raw metric statuses, the behavior and the
//! conditions travel in `autoscaling.alpha.kubernetes.io/*` annotations, in
//! the legacy (v2beta1-shaped) v1 metric types, so that a v1 client that reads
//! an object and writes it back loses nothing.

use crate::registry::Conversion;
use serde_json::{json, Map, Value};

/// `autoscaling.MetricSpecsAnnotation`: the metrics v1 cannot express.
pub const METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
/// `autoscaling.MetricStatusesAnnotation`: every current metric, raw.
pub const CURRENT_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
/// `autoscaling.HorizontalPodAutoscalerConditionsAnnotation`.
pub const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
/// `autoscaling.BehaviorSpecsAnnotation`.
pub const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";
/// `autoscaling.DefaultCPUUtilization`: what a v1 object with no metric at all targets.
const DEFAULT_CPU_UTILIZATION: i64 = 80;

/// What `DropRoundTripHorizontalPodAutoscalerAnnotations` removes (the
/// tolerance ones belong to the alpha HPAConfigurableTolerance gate, off in 1.33).
const ROUND_TRIP: [&str; 4] = [
    METRICS_ANNOTATION,
    CURRENT_METRICS_ANNOTATION,
    CONDITIONS_ANNOTATION,
    BEHAVIOR_ANNOTATION,
];

/// autoscaling/v1 HorizontalPodAutoscaler ⇄ the stored autoscaling/v2 one.
pub static HPA_V1: Conversion = Conversion {
    storage_version: "v2",
    to_storage: hpa_v1_stored,
    view: hpa_v2_to_v1,
};

/// The stored form of a v1 object: converted, then defaulted as v2 (what
/// upstream's storage decoding applies to every v2 object it reads back).
fn hpa_v1_stored(v1: Value) -> Value {
    let mut v2 = hpa_v1_to_v2(v1);
    if let Some(rd) = crate::registry::find("autoscaling", "v2", "horizontalpodautoscalers") {
        super::kinds::defaults(rd, &mut v2);
    }
    v2
}

/// A JSON object written with its keys in the order given: Go's json.Marshal
/// writes struct fields in declaration order, serde_json's map sorts them, and
/// the annotations should read as upstream's.
#[derive(Default)]
struct Ordered(Vec<String>);

impl Ordered {
    fn put(&mut self, key: &str, v: &Value) {
        self.raw(key, v.to_string());
    }
    fn put_opt(&mut self, key: &str, v: Option<&Value>) {
        if let Some(v) = v.filter(|v| !v.is_null()) {
            self.put(key, v);
        }
    }
    fn raw(&mut self, key: &str, encoded: String) {
        self.0.push(format!("{}:{encoded}", Value::from(key)));
    }
    fn done(self) -> String {
        format!("{{{}}}", self.0.join(","))
    }
}

fn present<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// A field Go declares as a plain `resource.Quantity`: absent is the zero quantity.
fn quantity(v: &Value, key: &str) -> Value {
    present(v, key).cloned().unwrap_or_else(|| json!("0"))
}

fn str_of(v: &Value, key: &str) -> Value {
    present(v, key).cloned().unwrap_or_else(|| json!(""))
}

fn is_cpu_resource(m: &Value) -> bool {
    m.get("type").and_then(Value::as_str) == Some("Resource")
        && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
}

/// v1's CrossVersionObjectReference: kind, name, apiVersion (omitempty).
fn object_ref(r: Option<&Value>) -> String {
    let null = Value::Null;
    let r = r.unwrap_or(&null);
    let mut o = Ordered::default();
    o.put("kind", &str_of(r, "kind"));
    o.put("name", &str_of(r, "name"));
    if let Some(av) = present(r, "apiVersion").filter(|v| v.as_str() != Some("")) {
        o.put("apiVersion", av);
    }
    o.done()
}

/// The metric's name and selector of a v2 source (`metric: {name, selector}`).
fn identifier(src: &Value) -> (Value, Option<&Value>) {
    let name = src.pointer("/metric/name").cloned().unwrap_or(json!(""));
    (
        name,
        src.pointer("/metric/selector").filter(|s| !s.is_null()),
    )
}

/// A v2 MetricSpec as the v1 (legacy) MetricSpec, encoded.
fn metric_spec_to_v1(m: &Value) -> String {
    let null = Value::Null;
    let mut out = Ordered::default();
    out.put("type", &str_of(m, "type"));
    if let Some(s) = present(m, "object") {
        let t = s.get("target").unwrap_or(&null);
        let (name, selector) = identifier(s);
        let mut o = Ordered::default();
        o.raw("target", object_ref(s.get("describedObject")));
        o.put("metricName", &name);
        o.put("targetValue", &quantity(t, "value"));
        o.put_opt("selector", selector);
        o.put_opt("averageValue", t.get("averageValue"));
        out.raw("object", o.done());
    }
    if let Some(s) = present(m, "pods") {
        let t = s.get("target").unwrap_or(&null);
        let (name, selector) = identifier(s);
        let mut o = Ordered::default();
        o.put("metricName", &name);
        o.put("targetAverageValue", &quantity(t, "averageValue"));
        o.put_opt("selector", selector);
        out.raw("pods", o.done());
    }
    for key in ["resource", "containerResource"] {
        if let Some(s) = present(m, key) {
            let t = s.get("target").unwrap_or(&null);
            let mut o = Ordered::default();
            o.put("name", &str_of(s, "name"));
            o.put_opt("targetAverageUtilization", t.get("averageUtilization"));
            o.put_opt("targetAverageValue", t.get("averageValue"));
            if key == "containerResource" {
                o.put("container", &str_of(s, "container"));
            }
            out.raw(key, o.done());
        }
    }
    if let Some(s) = present(m, "external") {
        let t = s.get("target").unwrap_or(&null);
        let (name, selector) = identifier(s);
        let mut o = Ordered::default();
        o.put("metricName", &name);
        o.put_opt("metricSelector", selector);
        o.put_opt("targetValue", t.get("value"));
        o.put_opt("targetAverageValue", t.get("averageValue"));
        out.raw("external", o.done());
    }
    out.done()
}

/// A v2 MetricStatus as the v1 (legacy) MetricStatus, encoded.
fn metric_status_to_v1(m: &Value) -> String {
    let null = Value::Null;
    let mut out = Ordered::default();
    out.put("type", &str_of(m, "type"));
    if let Some(s) = present(m, "object") {
        let c = s.get("current").unwrap_or(&null);
        let (name, selector) = identifier(s);
        let mut o = Ordered::default();
        o.raw("target", object_ref(s.get("describedObject")));
        o.put("metricName", &name);
        o.put("currentValue", &quantity(c, "value"));
        o.put_opt("selector", selector);
        o.put_opt("averageValue", c.get("averageValue"));
        out.raw("object", o.done());
    }
    if let Some(s) = present(m, "pods") {
        let c = s.get("current").unwrap_or(&null);
        let (name, selector) = identifier(s);
        let mut o = Ordered::default();
        o.put("metricName", &name);
        o.put("currentAverageValue", &quantity(c, "averageValue"));
        o.put_opt("selector", selector);
        out.raw("pods", o.done());
    }
    for key in ["resource", "containerResource"] {
        if let Some(s) = present(m, key) {
            let c = s.get("current").unwrap_or(&null);
            let mut o = Ordered::default();
            o.put("name", &str_of(s, "name"));
            o.put_opt("currentAverageUtilization", c.get("averageUtilization"));
            o.put("currentAverageValue", &quantity(c, "averageValue"));
            if key == "containerResource" {
                o.put("container", &str_of(s, "container"));
            }
            out.raw(key, o.done());
        }
    }
    if let Some(s) = present(m, "external") {
        let c = s.get("current").unwrap_or(&null);
        let (name, selector) = identifier(s);
        let mut o = Ordered::default();
        o.put("metricName", &name);
        o.put_opt("metricSelector", selector);
        o.put("currentValue", &quantity(c, "value"));
        o.put_opt("currentAverageValue", c.get("averageValue"));
        out.raw("external", o.done());
    }
    out.done()
}

/// v2's behavior as Go marshals the internal type (no json tags upstream:
/// the keys are the Go field names, unset pointers `null`).
fn behavior_to_annotation(b: &Value) -> String {
    let rules = |r: Option<&Value>| -> String {
        let Some(r) = r.filter(|r| r.is_object()) else {
            return "null".into();
        };
        let mut o = Ordered::default();
        o.put(
            "StabilizationWindowSeconds",
            r.get("stabilizationWindowSeconds").unwrap_or(&Value::Null),
        );
        o.put(
            "SelectPolicy",
            r.get("selectPolicy").unwrap_or(&Value::Null),
        );
        let policies = match r.get("policies").and_then(Value::as_array) {
            Some(ps) => {
                let each: Vec<String> = ps
                    .iter()
                    .map(|p| {
                        let mut o = Ordered::default();
                        o.put("Type", &str_of(p, "type"));
                        o.put("Value", p.get("value").unwrap_or(&json!(0)));
                        o.put("PeriodSeconds", p.get("periodSeconds").unwrap_or(&json!(0)));
                        o.done()
                    })
                    .collect();
                format!("[{}]", each.join(","))
            }
            None => "null".into(),
        };
        o.raw("Policies", policies);
        o.put("Tolerance", r.get("tolerance").unwrap_or(&Value::Null));
        o.done()
    };
    let mut o = Ordered::default();
    o.raw("ScaleUp", rules(b.get("scaleUp")));
    o.raw("ScaleDown", rules(b.get("scaleDown")));
    o.done()
}

/// A key of a Go-marshalled object, matched as encoding/json does (case-insensitively).
fn go_field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let m = v.as_object()?;
    m.get(name)
        .or_else(|| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
        .filter(|v| !v.is_null())
}

fn behavior_from_annotation(raw: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(raw).ok()?;
    let rules = |r: Option<&Value>| -> Option<Value> {
        let r = r.filter(|r| r.is_object())?;
        let mut out = Map::new();
        for (go, k8s) in [
            ("StabilizationWindowSeconds", "stabilizationWindowSeconds"),
            ("SelectPolicy", "selectPolicy"),
            ("Tolerance", "tolerance"),
        ] {
            if let Some(x) = go_field(r, go) {
                out.insert(k8s.into(), x.clone());
            }
        }
        if let Some(ps) = go_field(r, "Policies").and_then(Value::as_array) {
            let ps: Vec<Value> = ps
                .iter()
                .map(|p| {
                    json!({
                        "type": go_field(p, "Type").cloned().unwrap_or(json!("")),
                        "value": go_field(p, "Value").cloned().unwrap_or(json!(0)),
                        "periodSeconds": go_field(p, "PeriodSeconds").cloned().unwrap_or(json!(0)),
                    })
                })
                .collect();
            out.insert("policies".into(), Value::Array(ps));
        }
        Some(Value::Object(out))
    };
    let mut out = Map::new();
    if let Some(r) = rules(go_field(&v, "ScaleUp")) {
        out.insert("scaleUp".into(), r);
    }
    if let Some(r) = rules(go_field(&v, "ScaleDown")) {
        out.insert("scaleDown".into(), r);
    }
    Some(Value::Object(out))
}

/// A v1 (legacy) MetricSpec from the annotation as the v2 MetricSpec.
fn metric_spec_to_v2(m: &Value) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), str_of(m, "type"));
    let metric = |s: &Value, name: &str, selector: &str| {
        let mut id = Map::new();
        id.insert("name".into(), str_of(s, name));
        if let Some(sel) = present(s, selector) {
            id.insert("selector".into(), sel.clone());
        }
        Value::Object(id)
    };
    if let Some(s) = present(m, "object") {
        let mut t = Map::new();
        let avg = present(s, "averageValue");
        t.insert(
            "type".into(),
            json!(if avg.is_some() {
                "AverageValue"
            } else {
                "Value"
            }),
        );
        // `Value: &in.TargetValue`: always set.
        t.insert("value".into(), quantity(s, "targetValue"));
        if let Some(a) = avg {
            t.insert("averageValue".into(), a.clone());
        }
        let r = s.get("target").cloned().unwrap_or(json!({}));
        let mut described = Map::new();
        described.insert("kind".into(), str_of(&r, "kind"));
        described.insert("name".into(), str_of(&r, "name"));
        if let Some(av) = present(&r, "apiVersion") {
            described.insert("apiVersion".into(), av.clone());
        }
        out.insert(
            "object".into(),
            json!({"describedObject": described, "metric": metric(s, "metricName", "selector"), "target": t}),
        );
    }
    if let Some(s) = present(m, "pods") {
        out.insert(
            "pods".into(),
            json!({"metric": metric(s, "metricName", "selector"),
                   "target": {"type": "AverageValue", "averageValue": quantity(s, "targetAverageValue")}}),
        );
    }
    for key in ["resource", "containerResource"] {
        if let Some(s) = present(m, key) {
            let util = present(s, "targetAverageUtilization");
            let mut t = Map::new();
            t.insert(
                "type".into(),
                json!(if util.is_some() {
                    "Utilization"
                } else {
                    "AverageValue"
                }),
            );
            if let Some(u) = util {
                t.insert("averageUtilization".into(), u.clone());
            }
            if let Some(a) = present(s, "targetAverageValue") {
                t.insert("averageValue".into(), a.clone());
            }
            let mut r = Map::new();
            r.insert("name".into(), str_of(s, "name"));
            if key == "containerResource" {
                r.insert("container".into(), str_of(s, "container"));
            }
            r.insert("target".into(), Value::Object(t));
            out.insert(key.into(), Value::Object(r));
        }
    }
    if let Some(s) = present(m, "external") {
        let value = present(s, "targetValue");
        let mut t = Map::new();
        t.insert(
            "type".into(),
            json!(if value.is_some() {
                "Value"
            } else {
                "AverageValue"
            }),
        );
        if let Some(v) = value {
            t.insert("value".into(), v.clone());
        }
        if let Some(a) = present(s, "targetAverageValue") {
            t.insert("averageValue".into(), a.clone());
        }
        out.insert(
            "external".into(),
            json!({"metric": metric(s, "metricName", "metricSelector"), "target": t}),
        );
    }
    Value::Object(out)
}

/// A v1 (legacy) MetricStatus from the annotation as the v2 MetricStatus.
fn metric_status_to_v2(m: &Value) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), str_of(m, "type"));
    let metric = |s: &Value, selector: &str| {
        let mut id = Map::new();
        id.insert("name".into(), str_of(s, "metricName"));
        if let Some(sel) = present(s, selector) {
            id.insert("selector".into(), sel.clone());
        }
        Value::Object(id)
    };
    if let Some(s) = present(m, "object") {
        let mut c = Map::new();
        c.insert("value".into(), quantity(s, "currentValue"));
        if let Some(a) = present(s, "averageValue") {
            c.insert("averageValue".into(), a.clone());
        }
        let r = s.get("target").cloned().unwrap_or(json!({}));
        let mut described = Map::new();
        described.insert("kind".into(), str_of(&r, "kind"));
        described.insert("name".into(), str_of(&r, "name"));
        if let Some(av) = present(&r, "apiVersion") {
            described.insert("apiVersion".into(), av.clone());
        }
        out.insert(
            "object".into(),
            json!({"current": c, "describedObject": described, "metric": metric(s, "selector")}),
        );
    }
    if let Some(s) = present(m, "pods") {
        out.insert(
            "pods".into(),
            json!({"current": {"averageValue": quantity(s, "currentAverageValue")},
                   "metric": metric(s, "selector")}),
        );
    }
    for key in ["resource", "containerResource"] {
        if let Some(s) = present(m, key) {
            let mut c = Map::new();
            c.insert("averageValue".into(), quantity(s, "currentAverageValue"));
            if let Some(u) = present(s, "currentAverageUtilization") {
                c.insert("averageUtilization".into(), u.clone());
            }
            let mut r = Map::new();
            r.insert("name".into(), str_of(s, "name"));
            if key == "containerResource" {
                r.insert("container".into(), str_of(s, "container"));
            }
            r.insert("current".into(), Value::Object(c));
            out.insert(key.into(), Value::Object(r));
        }
    }
    if let Some(s) = present(m, "external") {
        let mut c = Map::new();
        c.insert("value".into(), quantity(s, "currentValue"));
        if let Some(a) = present(s, "currentAverageValue") {
            c.insert("averageValue".into(), a.clone());
        }
        out.insert(
            "external".into(),
            json!({"current": c, "metric": metric(s, "metricSelector")}),
        );
    }
    Value::Object(out)
}

/// The object's annotations without the round-trip ones (an emptied map is dropped).
fn drop_round_trip(meta: &mut Value) {
    let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) else {
        return;
    };
    for k in ROUND_TRIP {
        a.remove(k);
    }
    if a.is_empty() {
        if let Some(m) = meta.as_object_mut() {
            m.remove("annotations");
        }
    }
}

fn annotate(meta: &mut Value, key: &str, value: String) {
    if !meta.is_object() {
        *meta = json!({});
    }
    if !meta.get("annotations").is_some_and(Value::is_object) {
        meta["annotations"] = json!({});
    }
    meta["annotations"][key] = Value::String(value);
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")?.get(key)?.as_str()
}

/// A stored autoscaling/v2 HorizontalPodAutoscaler as autoscaling/v1
/// (`Convert_autoscaling_HorizontalPodAutoscaler_To_v1_HorizontalPodAutoscaler`).
pub fn hpa_v2_to_v1(v2: &Value) -> Value {
    let null = Value::Null;
    let spec = v2.get("spec").unwrap_or(&null);
    let metrics: &[Value] = spec
        .get("metrics")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let mut meta = v2.get("metadata").cloned().unwrap_or(json!({}));
    drop_round_trip(&mut meta);

    let mut out_spec = Map::new();
    if let Some(r) = spec.get("scaleTargetRef") {
        out_spec.insert("scaleTargetRef".into(), r.clone());
    }
    if let Some(m) = present(spec, "minReplicas") {
        out_spec.insert("minReplicas".into(), m.clone());
    }
    out_spec.insert(
        "maxReplicas".into(),
        present(spec, "maxReplicas").cloned().unwrap_or(json!(0)),
    );
    // The first CPU resource metric decides, whatever its target type.
    if let Some(m) = metrics.iter().find(|m| is_cpu_resource(m)) {
        if let Some(u) = m
            .pointer("/resource/target/averageUtilization")
            .filter(|u| !u.is_null())
        {
            out_spec.insert("targetCPUUtilizationPercentage".into(), u.clone());
        }
    }
    let other: Vec<String> = metrics
        .iter()
        .filter(|m| {
            !(is_cpu_resource(m)
                && m.pointer("/resource/target/averageUtilization")
                    .is_some_and(|u| !u.is_null()))
        })
        .map(metric_spec_to_v1)
        .collect();
    if !other.is_empty() {
        annotate(
            &mut meta,
            METRICS_ANNOTATION,
            format!("[{}]", other.join(",")),
        );
    }
    if let Some(b) = present(spec, "behavior") {
        annotate(&mut meta, BEHAVIOR_ANNOTATION, behavior_to_annotation(b));
    }

    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("autoscaling/v1"));
    out.insert("kind".into(), json!("HorizontalPodAutoscaler"));
    if let Some(status) = present(v2, "status") {
        let current: &[Value] = status
            .get("currentMetrics")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice);
        let mut s = Map::new();
        for k in ["observedGeneration", "lastScaleTime"] {
            if let Some(v) = present(status, k) {
                s.insert(k.into(), v.clone());
            }
        }
        for k in ["currentReplicas", "desiredReplicas"] {
            s.insert(k.into(), present(status, k).cloned().unwrap_or(json!(0)));
        }
        // No break upstream: the last CPU utilization wins.
        for m in current.iter().filter(|m| is_cpu_resource(m)) {
            if let Some(u) = m
                .pointer("/resource/current/averageUtilization")
                .filter(|u| !u.is_null())
            {
                s.insert("currentCPUUtilizationPercentage".into(), u.clone());
            }
        }
        if !current.is_empty() {
            let each: Vec<String> = current.iter().map(metric_status_to_v1).collect();
            annotate(
                &mut meta,
                CURRENT_METRICS_ANNOTATION,
                format!("[{}]", each.join(",")),
            );
        }
        if let Some(cs) = status
            .get("conditions")
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty())
        {
            let each: Vec<String> = cs
                .iter()
                .map(|c| {
                    let mut o = Ordered::default();
                    o.put("type", &str_of(c, "type"));
                    o.put("status", &str_of(c, "status"));
                    o.put_opt("lastTransitionTime", c.get("lastTransitionTime"));
                    o.put_opt("reason", c.get("reason"));
                    o.put_opt("message", c.get("message"));
                    o.done()
                })
                .collect();
            annotate(
                &mut meta,
                CONDITIONS_ANNOTATION,
                format!("[{}]", each.join(",")),
            );
        }
        out.insert("status".into(), Value::Object(s));
    }
    out.insert("metadata".into(), meta);
    out.insert("spec".into(), Value::Object(out_spec));
    Value::Object(out)
}

/// An autoscaling/v1 HorizontalPodAutoscaler as the stored autoscaling/v2
/// (`Convert_v1_HorizontalPodAutoscaler_To_autoscaling_HorizontalPodAutoscaler`).
/// An annotation that does not decode is dropped, as upstream ignores it.
pub fn hpa_v1_to_v2(v1: Value) -> Value {
    let null = Value::Null;
    let spec = v1.get("spec").unwrap_or(&null);
    let mut out_spec = Map::new();
    if let Some(r) = spec.get("scaleTargetRef") {
        out_spec.insert("scaleTargetRef".into(), r.clone());
    }
    if let Some(m) = present(spec, "minReplicas") {
        out_spec.insert("minReplicas".into(), m.clone());
    }
    out_spec.insert(
        "maxReplicas".into(),
        present(spec, "maxReplicas").cloned().unwrap_or(json!(0)),
    );
    let parse = |key: &str| -> Option<Vec<Value>> {
        serde_json::from_str::<Vec<Value>>(annotation(&v1, key)?).ok()
    };
    // The annotation's metrics first, then the CPU target of the spec.
    let mut metrics: Vec<Value> = parse(METRICS_ANNOTATION)
        .unwrap_or_default()
        .iter()
        .map(metric_spec_to_v2)
        .collect();
    if let Some(p) = present(spec, "targetCPUUtilizationPercentage") {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": p}}}));
    }
    // v1's implicit default, formerly applied by the controller.
    if metrics.is_empty() {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION}}}));
    }
    out_spec.insert("metrics".into(), Value::Array(metrics));
    if let Some(b) = annotation(&v1, BEHAVIOR_ANNOTATION).and_then(behavior_from_annotation) {
        out_spec.insert("behavior".into(), b);
    }

    let current = parse(CURRENT_METRICS_ANNOTATION);
    let conditions = parse(CONDITIONS_ANNOTATION);
    let status = present(&v1, "status");
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("autoscaling/v2"));
    out.insert("kind".into(), json!("HorizontalPodAutoscaler"));
    if status.is_some() || current.is_some() || conditions.is_some() {
        let status = status.unwrap_or(&null);
        let mut s = Map::new();
        for k in ["observedGeneration", "lastScaleTime"] {
            if let Some(v) = present(status, k) {
                s.insert(k.into(), v.clone());
            }
        }
        // v2's `currentReplicas` is omitempty: a zero is not written.
        if let Some(v) = present(status, "currentReplicas").filter(|v| v.as_i64() != Some(0)) {
            s.insert("currentReplicas".into(), v.clone());
        }
        s.insert(
            "desiredReplicas".into(),
            present(status, "desiredReplicas")
                .cloned()
                .unwrap_or(json!(0)),
        );
        if let Some(c) = current {
            // The annotation's statuses carry more than the CPU percentage.
            s.insert(
                "currentMetrics".into(),
                Value::Array(c.iter().map(metric_status_to_v2).collect()),
            );
        } else if let Some(p) = present(status, "currentCPUUtilizationPercentage") {
            s.insert(
                "currentMetrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": p}}}]),
            );
        }
        if let Some(c) = conditions.filter(|c| !c.is_empty()) {
            s.insert("conditions".into(), Value::Array(c));
        }
        out.insert("status".into(), Value::Object(s));
    }
    let mut meta = v1.get("metadata").cloned().unwrap_or(json!({}));
    drop_round_trip(&mut meta);
    out.insert("metadata".into(), meta);
    out.insert("spec".into(), Value::Object(out_spec));
    Value::Object(out)
}

/// autoscaling/v1's own default (`SetDefaults_HorizontalPodAutoscaler`):
/// `minReplicas` 1; the CPU target's default is applied by the conversion,
/// which sees the annotation's metrics.
pub(crate) fn hpa_v1_defaults(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        if spec.get("minReplicas").is_none_or(Value::is_null) {
            spec.insert("minReplicas".into(), json!(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_with(metrics: Value) -> Value {
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
               "metadata": {"name": "h", "namespace": "default"},
               "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                        "minReplicas": 1, "maxReplicas": 5, "metrics": metrics}})
    }

    #[test]
    fn cpu_utilization_is_the_v1_target() {
        let v2 = v2_with(
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 55}}}]),
        );
        let v1 = hpa_v2_to_v1(&v2);
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 55);
        assert!(v1["spec"].get("metrics").is_none());
        assert!(v1["metadata"].get("annotations").is_none());
        assert_eq!(hpa_v1_to_v2(v1), v2);
    }

    #[test]
    fn other_metrics_travel_in_the_annotation() {
        let v2 = v2_with(json!([
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "500Mi"}}},
            {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
            {"type": "Object", "object": {"describedObject": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "main"},
                "metric": {"name": "rps", "selector": {"matchLabels": {"a": "b"}}}, "target": {"type": "Value", "value": "2k"}}},
            {"type": "External", "external": {"metric": {"name": "queue"}, "target": {"type": "AverageValue", "averageValue": "30"}}},
            {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app", "target": {"type": "Utilization", "averageUtilization": 60}}},
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
        ]));
        let v1 = hpa_v2_to_v1(&v2);
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 70);
        let ann = v1["metadata"]["annotations"][METRICS_ANNOTATION]
            .as_str()
            .expect("metrics annotation");
        // Go's field order and the legacy v1 metric shape.
        assert!(ann.starts_with(r#"[{"type":"Resource","resource":{"name":"memory","targetAverageValue":"500Mi"}},{"type":"Pods","pods":{"metricName":"qps","targetAverageValue":"10"}},{"type":"Object","object":{"target":{"kind":"Ingress","name":"main","apiVersion":"networking.k8s.io/v1"},"metricName":"rps","targetValue":"2k","selector":{"matchLabels":{"a":"b"}}}}"#), "{ann}");
        // The spec's CPU metric goes last on the way back, as upstream.
        assert_eq!(hpa_v1_to_v2(v1), v2);
    }

    #[test]
    fn behavior_status_and_conditions_round_trip() {
        let mut v2 = v2_with(
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]),
        );
        v2["spec"]["behavior"] = json!({"scaleDown": {"stabilizationWindowSeconds": 300, "selectPolicy": "Max", "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}});
        v2["status"] = json!({"currentReplicas": 2, "desiredReplicas": 3,
            "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageValue": "120m", "averageUtilization": 61}}}],
            "conditions": [{"type": "AbleToScale", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z", "reason": "ReadyForNewScale", "message": "ok"}]});
        let v1 = hpa_v2_to_v1(&v2);
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 61);
        let a = &v1["metadata"]["annotations"];
        assert_eq!(
            a[BEHAVIOR_ANNOTATION],
            r#"{"ScaleUp":null,"ScaleDown":{"StabilizationWindowSeconds":300,"SelectPolicy":"Max","Policies":[{"Type":"Percent","Value":100,"PeriodSeconds":15}],"Tolerance":null}}"#
        );
        assert_eq!(
            a[CONDITIONS_ANNOTATION],
            r#"[{"type":"AbleToScale","status":"True","lastTransitionTime":"2026-01-01T00:00:00Z","reason":"ReadyForNewScale","message":"ok"}]"#
        );
        assert_eq!(
            a[CURRENT_METRICS_ANNOTATION],
            r#"[{"type":"Resource","resource":{"name":"cpu","currentAverageUtilization":61,"currentAverageValue":"120m"}}]"#
        );
        assert_eq!(hpa_v1_to_v2(v1), v2);
    }

    #[test]
    fn a_bare_v1_object_gets_the_default_cpu_target() {
        let mut v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h", "annotations": {METRICS_ANNOTATION: "not json", "keep": "me"}},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3}});
        hpa_v1_defaults(&mut v1);
        let v2 = hpa_v1_to_v2(v1);
        assert_eq!(v2["spec"]["minReplicas"], 1);
        assert_eq!(
            v2["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}])
        );
        assert_eq!(v2["metadata"]["annotations"], json!({"keep": "me"}));
        assert!(v2.get("status").is_none());
    }

    /// A client-go protobuf body at autoscaling/v1 (older controllers and typed clients)
    /// decodes to the v1 JSON form, which stores as v2.
    #[test]
    fn a_protobuf_v1_body_decodes_and_converts() {
        use k8s_pb::api::autoscaling::v1 as pb;
        use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
        use prost::Message;
        let hpa = pb::HorizontalPodAutoscaler {
            metadata: Some(ObjectMeta {
                name: Some("pb".into()),
                ..Default::default()
            }),
            spec: Some(pb::HorizontalPodAutoscalerSpec {
                scale_target_ref: Some(pb::CrossVersionObjectReference {
                    kind: Some("Deployment".into()),
                    name: Some("web".into()),
                    api_version: Some("apps/v1".into()),
                }),
                min_replicas: Some(2),
                max_replicas: Some(5),
                target_cpu_utilization_percentage: Some(65),
            }),
            status: None,
        };
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("autoscaling/v1".into()),
                kind: Some("HorizontalPodAutoscaler".into()),
            }),
            raw: Some(hpa.encode_to_vec()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut body = b"k8s\0".to_vec();
        body.extend(unknown.encode_to_vec());
        let v1 = crate::api::protobuf::decode_body(&body).expect("decodes");
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 65);
        let v2 = hpa_v1_to_v2(v1);
        assert_eq!(v2["spec"]["minReplicas"], 2);
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            65
        );
    }

    #[test]
    fn stored_round_trip_annotations_do_not_leak() {
        let mut v2 = v2_with(
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]),
        );
        v2["metadata"]["annotations"] = json!({CONDITIONS_ANNOTATION: "[]"});
        let v1 = hpa_v2_to_v1(&v2);
        assert!(v1["metadata"].get("annotations").is_none());
    }
}
