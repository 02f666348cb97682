//! `application/vnd.kubernetes.protobuf` request bodies, decoded into the same
//! JSON value the `application/json` form of the object gives.
//!
//! client-go's typed clients (so `kubectl create deployment|secret|job|…`, and
//! Go controllers' writes, evictions included) send protobuf. The body is the 4-byte magic
//! `k8s\0` followed by a `runtime.Unknown` message whose `typeMeta` names the
//! kind and whose `raw` is the object's own message.
//!
//! The schema is the `k8s-pb` crate (prost structs generated from the upstream
//! `generated.proto` files): prost decodes `raw` into the typed struct, and
//! `generated.rs` (written by `tools/gen_protobuf.py`) turns each struct into
//! JSON field by field. The apimachinery types with a JSON form of their own
//! (Time, MicroTime, Duration, Quantity, IntOrString, RawExtension, FieldsV1)
//! are written by hand below.
//!
//! Go writes every non-pointer field to the wire, zero or not, where its JSON
//! leaves `omitempty` zeros out: empty strings are dropped (but for the few
//! pointers where "" means something), integers and booleans are kept (a
//! pointer set to zero, like `replicas: 0`, matters) except for the known
//! non-pointer fields the generator lists, and empty lists and maps are
//! dropped.

mod generated;

use super::error::{ApiError, ApiResult};
use base64::Engine;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1::{Duration, FieldsV1, MicroTime, Time};
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The media type client-go sends protobuf bodies as.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Prefix of every Kubernetes protobuf document.
const MAGIC: &[u8; 4] = b"k8s\0";

/// How many protobuf documents may nest inside each other (through
/// RawExtension); each level is decoded recursively.
const MAX_NESTING: u32 = 4;

/// Decodes a protobuf request body (envelope and object) into its JSON value,
/// `apiVersion` and `kind` included.
pub fn decode_body(body: &[u8]) -> ApiResult<Value> {
    decode_document(body, 0)
}

fn decode_document(body: &[u8], depth: u32) -> ApiResult<Value> {
    let rest = body.strip_prefix(MAGIC).ok_or_else(|| {
        ApiError::bad_request(
            "error decoding protobuf: the body does not start with the \"k8s\\x00\" prefix",
        )
    })?;
    let unknown = Unknown::decode(rest)
        .map_err(|e| ApiError::bad_request(format!("error decoding protobuf envelope: {e}")))?;
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    if let Some(enc) = unknown.content_encoding.filter(|e| !e.is_empty()) {
        return Err(ApiError::unsupported_media(&format!(
            "{CONTENT_TYPE} with contentEncoding {enc:?}"
        )));
    }
    let raw = unknown.raw.unwrap_or_default();
    let mut obj = match unknown.content_type.as_deref().unwrap_or("") {
        "" | CONTENT_TYPE => generated::decode_kind(&api_version, &kind, &raw, depth)
            .ok_or_else(|| unsupported_kind(&api_version, &kind))??,
        "application/json" => serde_json::from_slice(&raw)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))?,
        other => {
            return Err(ApiError::unsupported_media(&format!(
                "{CONTENT_TYPE} wrapping {other}"
            )))
        }
    };
    let Value::Object(fields) = &mut obj else {
        return Err(ApiError::bad_request(format!(
            "error decoding protobuf: {kind} is not an object"
        )));
    };
    let mut out = Map::new();
    if !api_version.is_empty() {
        out.insert("apiVersion".into(), Value::String(api_version));
    }
    if !kind.is_empty() {
        out.insert("kind".into(), Value::String(kind));
    }
    out.append(fields);
    Ok(Value::Object(out))
}

fn unsupported_kind(api_version: &str, kind: &str) -> ApiError {
    let known: Vec<String> = generated::KINDS
        .iter()
        .map(|(v, k)| {
            if *v == "*" {
                k.to_string()
            } else {
                format!("{v}/{k}")
            }
        })
        .collect();
    ApiError::new(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - {CONTENT_TYPE} is accepted for {}; got kind {kind:?} (apiVersion {api_version:?}): send it as application/json",
            known.join(", ")
        ),
    )
}

/// Decodes the object message `raw` as `T` and converts it; `depth` counts
/// the documents this one is nested in.
fn decode<T: Message + Default + Json>(raw: &[u8], depth: u32) -> ApiResult<Value> {
    let msg = T::decode(raw)
        .map_err(|e| ApiError::bad_request(format!("error decoding protobuf: {e}")))?;
    let mut cx = Cx { err: None, depth };
    let v = msg.json(&mut cx);
    match cx.err {
        Some(e) => Err(ApiError::bad_request(format!(
            "error decoding protobuf: {e}"
        ))),
        None => Ok(v),
    }
}

/// State of one conversion: the first problem met (a RawExtension that is
/// neither JSON nor protobuf, say), and the nesting depth of the document.
pub struct Cx {
    err: Option<String>,
    depth: u32,
}

impl Cx {
    fn fail(&mut self, e: String) -> Value {
        self.err.get_or_insert(e);
        Value::Null
    }
}

/// A message's JSON value.
pub trait Json {
    fn json(&self, cx: &mut Cx) -> Value;
}

/// A message whose JSON form is an object of its fields (every generated one).
pub trait JsonFields {
    fn json_fields(&self, o: &mut Obj<'_>);
}

impl<T: JsonFields> Json for T {
    fn json(&self, cx: &mut Cx) -> Value {
        let mut o = Obj {
            map: Map::new(),
            cx,
        };
        self.json_fields(&mut o);
        Value::Object(o.map)
    }
}

/// How a scalar that is present on the wire but zero (`""`, `0`, `false`) is
/// written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Written as is: required fields, pointers.
    Keep,
    /// Left out, as Go's `omitempty` does for a non-pointer field.
    OmitEmpty,
}

/// A JSON object being filled from a message's fields.
pub struct Obj<'e> {
    map: Map<String, Value>,
    cx: &'e mut Cx,
}

impl Obj<'_> {
    fn put(&mut self, k: &str, v: Value) {
        self.map.insert(k.to_string(), v);
    }

    fn str(&mut self, k: &str, v: &Option<String>, mode: Mode) {
        match v {
            Some(s) if !s.is_empty() || mode == Mode::Keep => self.put(k, Value::String(s.clone())),
            _ => {}
        }
    }

    fn strs(&mut self, k: &str, v: &[String]) {
        if !v.is_empty() {
            self.put(k, v.iter().cloned().map(Value::String).collect());
        }
    }

    fn int<T: Into<i64> + Copy>(&mut self, k: &str, v: Option<T>, mode: Mode) {
        match v.map(Into::into) {
            Some(n) if n != 0 || mode == Mode::Keep => self.put(k, Value::from(n)),
            _ => {}
        }
    }

    fn ints<T: Into<i64> + Copy>(&mut self, k: &str, v: &[T]) {
        if !v.is_empty() {
            self.put(k, v.iter().map(|n| Value::from((*n).into())).collect());
        }
    }

    fn bool(&mut self, k: &str, v: Option<bool>, mode: Mode) {
        match v {
            Some(b) if b || mode == Mode::Keep => self.put(k, Value::Bool(b)),
            _ => {}
        }
    }

    /// A `double` field (none of the accepted kinds has one today; the
    /// generator writes this call for any that gains one).
    #[allow(dead_code)]
    fn num(&mut self, k: &str, v: Option<f64>, mode: Mode) {
        match v {
            Some(f) if f != 0.0 || mode == Mode::Keep => self.put(k, float(f)),
            _ => {}
        }
    }

    /// An optional `bytes` field, base64 as in Go's JSON for `[]byte` (none of
    /// the accepted kinds has one today; the generator writes this call for
    /// any that gains one).
    #[allow(dead_code)]
    fn bytes(&mut self, k: &str, v: &Option<Vec<u8>>, mode: Mode) {
        match v {
            Some(b) if !b.is_empty() || mode == Mode::Keep => self.put(k, base64(b)),
            _ => {}
        }
    }

    fn msg<T: Json>(&mut self, k: &str, v: Option<&T>) {
        if let Some(m) = v {
            let j = m.json(self.cx);
            self.put(k, j);
        }
    }

    fn msgs<T: Json>(&mut self, k: &str, v: &[T]) {
        if !v.is_empty() {
            let items = v.iter().map(|m| m.json(self.cx)).collect();
            self.put(k, items);
        }
    }

    fn map_str(&mut self, k: &str, v: &BTreeMap<String, String>) {
        if !v.is_empty() {
            let m = v
                .iter()
                .map(|(a, b)| (a.clone(), Value::String(b.clone())))
                .collect();
            self.put(k, Value::Object(m));
        }
    }

    fn map_bytes(&mut self, k: &str, v: &BTreeMap<String, Vec<u8>>) {
        if !v.is_empty() {
            let m = v.iter().map(|(a, b)| (a.clone(), base64(b))).collect();
            self.put(k, Value::Object(m));
        }
    }

    fn map_msg<T: Json>(&mut self, k: &str, v: &BTreeMap<String, T>) {
        if !v.is_empty() {
            let m = v
                .iter()
                .map(|(a, b)| (a.clone(), b.json(self.cx)))
                .collect();
            self.put(k, Value::Object(m));
        }
    }

    /// A Go struct embedded with `json:",inline"` (a nested message on the
    /// wire): its fields go into this object.
    fn inline<T: JsonFields>(&mut self, v: Option<&T>) {
        if let Some(m) = v {
            m.json_fields(self);
        }
    }
}

fn base64(b: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(b))
}

/// A float as Go's encoding/json writes it: integral values without a
/// fraction, so they read back as the same JSON number.
fn float(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// `authentication/v1.ExtraValue` is a Go `[]string`: its JSON form is the list
/// itself.
impl Json for k8s_pb::api::authentication::v1::ExtraValue {
    fn json(&self, _: &mut Cx) -> Value {
        self.items.iter().cloned().map(Value::String).collect()
    }
}

/// `metav1.Time`: RFC 3339 in UTC to the second; the zero time (an empty
/// message on the wire) is `null`. The protobuf decoder drops nanoseconds too.
impl Json for Time {
    fn json(&self, cx: &mut Cx) -> Value {
        if self.seconds.is_none() && self.nanos.is_none() {
            return Value::Null;
        }
        rfc3339(self.seconds.unwrap_or(0), None, cx)
    }
}

/// `metav1.MicroTime`: RFC 3339 in UTC with microseconds.
impl Json for MicroTime {
    fn json(&self, cx: &mut Cx) -> Value {
        if self.seconds.is_none() && self.nanos.is_none() {
            return Value::Null;
        }
        let micros = self.nanos.unwrap_or(0) / 1000;
        rfc3339(self.seconds.unwrap_or(0), Some(micros), cx)
    }
}

fn rfc3339(seconds: i64, micros: Option<i32>, cx: &mut Cx) -> Value {
    match jiff::Timestamp::new(seconds, 0) {
        Ok(t) => {
            let base = t.strftime("%Y-%m-%dT%H:%M:%S");
            match micros {
                Some(us) if (0..1_000_000).contains(&us) => {
                    Value::String(format!("{base}.{us:06}Z"))
                }
                Some(_) => cx.fail(format!("invalid nanoseconds in a timestamp at {base}")),
                None => Value::String(format!("{base}Z")),
            }
        }
        Err(e) => cx.fail(format!("timestamp {seconds} out of range: {e}")),
    }
}

/// `metav1.Duration`: Go's `time.Duration.String()` (`1h0m0s`, `1.5s`, `300ms`).
impl Json for Duration {
    fn json(&self, _: &mut Cx) -> Value {
        Value::String(go_duration(self.duration.unwrap_or(0)))
    }
}

fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    // Below a second: one unit with a trimmed fraction.
    let frac = |v: u64, div: u64, unit: &str| {
        let whole = v / div;
        let rest = v % div;
        if rest == 0 {
            format!("{sign}{whole}{unit}")
        } else {
            let width = div.ilog10() as usize;
            let digits = format!("{rest:0width$}");
            format!("{sign}{whole}.{}{unit}", digits.trim_end_matches('0'))
        }
    };
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return frac(u, 1_000, "µs");
    }
    if u < 1_000_000_000 {
        return frac(u, 1_000_000, "ms");
    }
    let total_secs = u / 1_000_000_000;
    let nanos = u % 1_000_000_000;
    let (h, m, s) = (total_secs / 3600, (total_secs / 60) % 60, total_secs % 60);
    let secs = if nanos == 0 {
        format!("{s}s")
    } else {
        let digits = format!("{nanos:09}");
        format!("{s}.{}s", digits.trim_end_matches('0'))
    };
    if h > 0 {
        format!("{sign}{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{sign}{m}m{secs}")
    } else {
        format!("{sign}{secs}")
    }
}

/// `resource.Quantity`: its canonical string (an unset one is zero).
impl Json for Quantity {
    fn json(&self, _: &mut Cx) -> Value {
        Value::String(self.string.clone().unwrap_or_else(|| "0".into()))
    }
}

/// `intstr.IntOrString`: a number (type 0) or a string (type 1).
impl Json for IntOrString {
    fn json(&self, cx: &mut Cx) -> Value {
        match self.r#type.unwrap_or(0) {
            0 => Value::from(self.int_val.unwrap_or(0)),
            1 => Value::String(self.str_val.clone().unwrap_or_default()),
            t => cx.fail(format!("invalid IntOrString type {t}")),
        }
    }
}

/// `runtime.RawExtension`: the embedded object, which is JSON (or, from a
/// protobuf client, may itself be a `k8s\0` protobuf document).
impl Json for RawExtension {
    fn json(&self, cx: &mut Cx) -> Value {
        embedded(self.raw.as_deref().unwrap_or_default(), "RawExtension", cx)
    }
}

/// `metav1.FieldsV1`: managed-fields JSON, carried as bytes.
impl Json for FieldsV1 {
    fn json(&self, cx: &mut Cx) -> Value {
        embedded(self.raw.as_deref().unwrap_or_default(), "FieldsV1", cx)
    }
}

fn embedded(raw: &[u8], what: &str, cx: &mut Cx) -> Value {
    if raw.is_empty() {
        return Value::Null;
    }
    if raw.starts_with(MAGIC) {
        if cx.depth >= MAX_NESTING {
            return cx.fail(format!(
                "{what}: protobuf documents nested more than {MAX_NESTING} deep"
            ));
        }
        return match decode_document(raw, cx.depth + 1) {
            Ok(v) => v,
            Err(e) => cx.fail(format!("{what}: {}", e.message)),
        };
    }
    match serde_json::from_slice(raw) {
        Ok(v) => v,
        Err(e) => cx.fail(format!("{what} is not JSON: {e}")),
    }
}

#[cfg(test)]
mod tests;
