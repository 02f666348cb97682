//! Validating a custom resource against its structural schema, as kube-apiserver does: the
//! OpenAPI schema validator (kube-openapi's validate package, its messages turned into field
//! errors by apiextensions' kubeOpenAPIResultToFieldErrors), embedded resources
//! (objectmeta/validation.go), list-type set/map uniqueness (listtype/validation.go) and CEL.

use serde_json::{Number, Value};

use crate::cel_rules::{node_key, Step};
use crate::schema::{Node, Structural};
use crate::{
    child, format, goformat, index, key, push_child, push_index, Bad, FieldError, DUPLICATE,
    INVALID, TOO_LONG, TOO_MANY, TYPE_INVALID,
};

impl Structural {
    /// Validates a custom resource (after defaulting). `old` is the stored object on update,
    /// for CEL transition rules (`oldSelf`).
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        openapi(&self.root, obj, &mut String::new(), &mut errs);
        // The walks below only descend where the schema has something for them to check.
        if self.root.below.embedded {
            embedded(&self.root, obj, "", true, &mut errs);
        }
        if self.root.below.list_type {
            list_sets_and_maps(&self.root, obj, "", &mut errs);
        }
        if !self.rules.is_empty() {
            cel_walk(self, &self.root, "", obj, old, "", &mut errs);
        }
        errs
    }
}

// ---------------------------------------------------------------------------------------------
// kube-openapi validate: paths are "spec.x", "spec.items[0]"; the root path is "".

const IN: &str = "body";

/// The field path of a kube-openapi error name (leading "." trimmed; the root is a nil path).
fn err_field(name: &str) -> String {
    let n = name.strip_prefix('.').unwrap_or(name);
    if n.is_empty() {
        "<nil>".to_string()
    } else {
        n.to_string()
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The types a node allows: none (any), its `type`, or integer and string.
fn types_of<'a>(n: &'a Node, one: &'a mut [&'a str; 1]) -> &'a [&'a str] {
    const INT_OR_STRING: [&str; 2] = ["integer", "string"];
    if n.int_or_string {
        &INT_OR_STRING
    } else if n.ty.is_empty() {
        &[]
    } else {
        one[0] = n.ty.as_str();
        &one[..]
    }
}

/// errors.InvalidType as a TypeInvalid field error: `<p> in body must be of type <t>: "<got>"`.
fn invalid_type(path: &str, want: &str, got: &str) -> FieldError {
    let name = if path.is_empty() {
        String::new()
    } else {
        path.to_string()
    };
    FieldError::new(
        TYPE_INVALID,
        err_field(path),
        Bad::Str(got.to_string()),
        &format!(
            "{name} in {IN} must be of type {want}: {}",
            goformat::quote(got)
        ),
    )
}

fn invalid(path: &str, value: Bad, msg: String) -> FieldError {
    FieldError::new(INVALID, err_field(path), value, &msg)
}

/// A composite (allOf/anyOf/oneOf/not) error: not a Validation, so upstream reports it at the
/// nil path with an empty value.
fn composite(msg: String) -> FieldError {
    FieldError::new(INVALID, "<nil>", Bad::Str(String::new()), &msg)
}

fn as_f64(n: &Number) -> f64 {
    n.as_f64().unwrap_or(0.0)
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => as_f64(x) == as_f64(y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// `path_buf`: the value's path, extended in place for the values below it.
fn openapi(n: &Node, data: &Value, path_buf: &mut String, errs: &mut Vec<FieldError>) {
    let mut one = [""];
    let types = types_of(n, &mut one);
    let path = path_buf.as_str();
    if data.is_null() {
        if !types.is_empty() && !n.nullable {
            errs.push(invalid_type(path, &types.join(","), "null"));
        }
        enum_check(n, data, path, errs);
        return;
    }
    // type validator
    let got = json_type(data);
    if !types.is_empty() {
        let is_float_int = got == "number"
            && types.contains(&"integer")
            && data.as_f64().is_some_and(|f| f.fract() == 0.0);
        let is_int_float = got == "integer" && types.contains(&"number");
        let string_or_slice = matches!(data, Value::String(_) | Value::Array(_));
        let numeric_format = matches!(n.format.as_str(), "int32" | "int64" | "float" | "double");
        // Formats other than the numeric ones are stripped upstream before validation.
        let fmt = if numeric_format || n.known_format.is_some() {
            n.format.as_str()
        } else {
            ""
        };
        let numeric = types.contains(&"number") || types.contains(&"integer");
        let skip = !numeric && !fmt.is_empty() && string_or_slice;
        if !(skip || types.contains(&got) || is_float_int || is_int_float) {
            errs.push(invalid_type(path, &types.join(","), got));
        }
    }
    // schema props validator (allOf, anyOf, oneOf, not)
    if n.all_of.len() + n.any_of.len() + n.one_of.len() > 0 || n.not.is_some() {
        junctors(n, data, path_buf, errs);
    }
    let path = path_buf.as_str();
    // string validator
    if let Value::String(s) = data {
        string_checks(n, s, path, errs);
        // format validator
        if let Some(f) = &n.known_format {
            if !format::validates(f, s) {
                errs.push(FieldError::new(
                    TYPE_INVALID,
                    err_field(path),
                    Bad::Str(s.clone()),
                    &format!(
                        "{path} in {IN} must be of type {}: {}",
                        n.format,
                        goformat::quote(s)
                    ),
                ));
            }
        }
    }
    // number validator
    if let Value::Number(num) = data {
        number_checks(n, num, path, errs);
    }
    // slice validator
    if let Value::Array(items) = data {
        if let Some(it) = &n.items {
            for (i, x) in items.iter().enumerate() {
                let len = push_index(path_buf, i);
                openapi(it, x, path_buf, errs);
                path_buf.truncate(len);
            }
        }
        let path = path_buf.as_str();
        let size = items.len() as i64;
        if let Some(min) = n.min_items {
            if size < min {
                errs.push(invalid(
                    path,
                    Bad::Int(size),
                    format!("{path} in {IN} should have at least {min} items"),
                ));
            }
        }
        if let Some(max) = n.max_items {
            if size > max {
                errs.push(too_many(path, size, max));
            }
        }
        if n.unique_items
            && items
                .iter()
                .enumerate()
                .any(|(i, a)| items[..i].iter().any(|b| json_eq(a, b)))
        {
            errs.push(invalid(
                path,
                Bad::Str(String::new()),
                format!("{path} in {IN} shouldn't contain duplicates"),
            ));
        }
    }
    let path = path_buf.as_str();
    // common validator
    enum_check(n, data, path, errs);
    // object validator
    if let Value::Object(m) = data {
        let num = m.len() as i64;
        if let Some(min) = n.min_properties {
            if num < min {
                errs.push(invalid(
                    path,
                    Bad::Int(num),
                    format!("{path} in {IN} should have at least {min} properties"),
                ));
            }
        }
        if let Some(max) = n.max_properties {
            if num > max {
                errs.push(too_many(path, num, max));
            }
        }
        if n.additional.is_some() && !n.additional_allows {
            let mut keys: Vec<&String> = m
                .keys()
                .filter(|k| !n.properties.contains_key(*k))
                .collect();
            keys.sort();
            for k in keys {
                errs.push(invalid(
                    path,
                    Bad::Str(String::new()),
                    format!("{path}.{k} in {IN} is a forbidden property"),
                ));
            }
        } else if let Some(a) = n.additional_schema() {
            let mut keys: Vec<&String> = m
                .keys()
                .filter(|k| !n.properties.contains_key(*k))
                .collect();
            keys.sort();
            for k in keys {
                // `.k` even at the root, as kube-openapi names additional properties.
                let len = path_buf.len();
                path_buf.push('.');
                path_buf.push_str(k);
                openapi(a, &m[k.as_str()], path_buf, errs);
                path_buf.truncate(len);
            }
        }
        for (k, p) in &n.properties {
            if let Some(v) = m.get(k) {
                let len = push_child(path_buf, k);
                openapi(p, v, path_buf, errs);
                path_buf.truncate(len);
            }
        }
        let path = path_buf.as_str();
        for k in &n.required {
            if !m.contains_key(k) {
                errs.push(FieldError::required(err_field(&format!("{path}.{k}")), ""));
            }
        }
    }
}

fn too_many(path: &str, actual: i64, max: i64) -> FieldError {
    let unit = if max == 1 { "item" } else { "items" };
    FieldError::new(
        TOO_MANY,
        err_field(path),
        Bad::Int(actual),
        &format!("must have at most {max} {unit}"),
    )
}

fn enum_check(n: &Node, data: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let Some(values) = &n.enumeration else { return };
    if values.is_empty() || values.iter().any(|v| json_eq(v, data)) {
        return;
    }
    let shown: Vec<String> = values
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => goformat::marshal(other),
        })
        .collect();
    let refs: Vec<&str> = shown.iter().map(String::as_str).collect();
    errs.push(FieldError::not_supported(
        err_field(path),
        Bad::Json(data.clone()),
        &refs,
    ));
}

fn string_checks(n: &Node, s: &str, path: &str, errs: &mut Vec<FieldError>) {
    let chars = s.chars().count() as i64;
    if let Some(max) = n.max_length {
        if chars > max {
            let unit = if max == 1 { "byte" } else { "bytes" };
            errs.push(FieldError::new(
                TOO_LONG,
                err_field(path),
                Bad::Omit,
                &format!("may not be more than {max} {unit}"),
            ));
            return;
        }
    }
    if let Some(min) = n.min_length {
        if chars < min {
            errs.push(invalid(
                path,
                Bad::Str(s.to_string()),
                format!("{path} in {IN} should be at least {min} chars long"),
            ));
            return;
        }
    }
    if let (Some(p), Some(re)) = (&n.pattern, &n.pattern_re) {
        match re {
            Ok(r) if r.is_match(s) => {}
            Ok(_) => errs.push(invalid(
                path,
                Bad::Str(s.to_string()),
                format!("{path} in {IN} should match '{p}'"),
            )),
            Err(e) => errs.push(invalid(
                path,
                Bad::Str(s.to_string()),
                format!("{path} in {IN} should match '{p}, but pattern is invalid: {e}'"),
            )),
        }
    }
}

fn number_checks(n: &Node, num: &Number, path: &str, errs: &mut Vec<FieldError>) {
    let int = num.as_i64();
    let data = as_f64(num);
    let value = Bad::Json(Value::Number(num.clone()));
    let integer_type = n.ty == "integer" && !n.int_or_string;
    let format_desc = || {
        if matches!(n.format.as_str(), "int32" | "int64") {
            format!("with format {}", n.format)
        } else {
            "(default format)".to_string()
        }
    };
    // IsValueValidAgainstRange on the value: an integer beyond int64 (or int32 with that
    // format), a float beyond float32 with format float; a plain error (nil path, empty value).
    if integer_type {
        let fits = match n.format.as_str() {
            "int32" => {
                int.is_some_and(|i| i32::try_from(i).is_ok())
                    || (int.is_none() && data.fract() == 0.0 && data.abs() <= i32::MAX as f64)
            }
            _ => int.is_some() || (num.is_f64() && data.fract() == 0.0 && data.abs() < 9.2e18),
        };
        if !fits {
            errs.push(composite(format!(
                "Checked value must be of type integer {} in {path}",
                format_desc()
            )));
        }
    } else if n.ty == "number"
        && n.format == "float"
        && data.is_finite()
        && data.abs() > f32::MAX as f64
    {
        errs.push(composite(format!(
            "Checked value must be of type number with format float in {path}"
        )));
    }
    // Each bound is range-checked the same way; an integral bound on an integer type is compared
    // natively (the bound printed as an int), anything else as float64 (MaximumNativeType vs
    // Maximum). A fractional bound on an integer type is itself an error, on every value.
    let native_bound = |prefix: &str, b: f64, errs: &mut Vec<FieldError>| -> bool {
        if !integer_type {
            return true;
        }
        let ok = b.fract() == 0.0
            && match n.format.as_str() {
                "int32" => b.abs() <= i32::MAX as f64,
                _ => b.abs() < 9.2e18,
            };
        if !ok {
            errs.push(composite(format!(
                "{prefix} value must be of type integer {} in {path}",
                format_desc()
            )));
        }
        ok
    };
    let show = |b: f64, native: bool| {
        if native && int.is_some() {
            format!("{}", b as i64)
        } else {
            goformat::float_v(b)
        }
    };
    if let Some(m) = n.multiple_of {
        let native = native_bound("MultipleOf", m, errs);
        let bad = match int {
            Some(i) if native && m as i64 != 0 => i % (m as i64) != 0,
            _ => m != 0.0 && (data / m).fract() != 0.0,
        };
        if bad {
            errs.push(invalid(
                path,
                value.clone(),
                format!("{path} in {IN} should be a multiple of {}", show(m, native)),
            ));
        }
    }
    if let Some(min) = n.minimum {
        let native = native_bound("Minimum boundary", min, errs);
        let min = if native && int.is_some() {
            min.trunc()
        } else {
            min
        };
        let bad = if n.exclusive_minimum {
            data <= min
        } else {
            data < min
        };
        if bad {
            let word = if n.exclusive_minimum {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errs.push(invalid(
                path,
                value.clone(),
                format!("{path} in {IN} should be {word} {}", show(min, native)),
            ));
        }
    }
    if let Some(max) = n.maximum {
        let native = native_bound("Maximum boundary", max, errs);
        // An integer meets a bound cast to int64 (MaximumInt), a float the bound as is.
        let max = if native && int.is_some() {
            max.trunc()
        } else {
            max
        };
        let bad = if n.exclusive_maximum {
            data >= max
        } else {
            data > max
        };
        if bad {
            let word = if n.exclusive_maximum {
                "less than"
            } else {
                "less than or equal to"
            };
            errs.push(invalid(
                path,
                value,
                format!("{path} in {IN} should be {word} {}", show(max, native)),
            ));
        }
    }
}

fn junctors(n: &Node, data: &Value, path_buf: &mut String, errs: &mut Vec<FieldError>) {
    let quoted = goformat::quote(path_buf);
    let mut run = |s: &Node| {
        let mut e = Vec::new();
        openapi(s, data, path_buf, &mut e);
        e
    };
    if !n.any_of.is_empty() {
        let results: Vec<Vec<FieldError>> = n.any_of.iter().map(&mut run).collect();
        if !results.iter().any(Vec::is_empty) {
            errs.push(composite(format!(
                "{quoted} must validate at least one schema (anyOf)"
            )));
            // Upstream adds the failures of the closest alternative; the fewest errors here.
            if let Some(best) = results.iter().min_by_key(|r| r.len()) {
                errs.extend(best.iter().cloned());
            }
        }
    }
    if !n.one_of.is_empty() {
        let results: Vec<Vec<FieldError>> = n.one_of.iter().map(&mut run).collect();
        let valid = results.iter().filter(|r| r.is_empty()).count();
        if valid != 1 {
            let extra = if valid == 0 {
                "Found none valid".to_string()
            } else {
                format!("Found {valid} valid alternatives")
            };
            errs.push(composite(format!(
                "{quoted} must validate one and only one schema (oneOf). {extra}"
            )));
            if valid == 0 {
                if let Some(best) = results.iter().min_by_key(|r| r.len()) {
                    errs.extend(best.iter().cloned());
                }
            }
        }
    }
    if !n.all_of.is_empty() {
        let mut valid = 0;
        for s in &n.all_of {
            let r = run(s);
            if r.is_empty() {
                valid += 1;
            }
            errs.extend(r);
        }
        if valid != n.all_of.len() {
            let extra = if valid == 0 { ". None validated" } else { "" };
            errs.push(composite(format!(
                "{quoted} must validate all the schemas (allOf){extra}"
            )));
        }
    }
    if let Some(not) = &n.not {
        if run(not).is_empty() {
            errs.push(composite(format!(
                "{quoted} must not validate the schema (not)"
            )));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Embedded resources and list types: field.Path rendering ("spec.map[key]", "spec.list[0]").

fn embedded(n: &Node, data: &Value, path: &str, root: bool, errs: &mut Vec<FieldError>) {
    match data {
        Value::Object(m) => {
            if n.embedded && !root {
                if !m.contains_key("apiVersion") {
                    errs.push(FieldError::required(
                        child(path, "apiVersion"),
                        "must not be empty",
                    ));
                }
                if !m.contains_key("kind") {
                    errs.push(FieldError::required(
                        child(path, "kind"),
                        "must not be empty",
                    ));
                }
                for (k, v) in m {
                    let p = child(path, k);
                    match (k.as_str(), v) {
                        ("apiVersion" | "kind", Value::String(s)) if s.is_empty() => {
                            errs.push(FieldError::invalid_str(p, s, "must not be empty"))
                        }
                        ("apiVersion", Value::String(s)) if s.split('/').count() > 2 => {
                            errs.push(FieldError::invalid_str(
                                p,
                                s,
                                &format!("unexpected GroupVersion string: {s}"),
                            ));
                        }
                        ("kind", Value::String(s)) => {
                            let e = crate::names::dns1035_label(&s.to_lowercase());
                            if !e.is_empty() {
                                errs.push(FieldError::invalid_str(
                                    p,
                                    s,
                                    &format!(
                                        "may have mixed case, but should otherwise match: {}",
                                        e.join(",")
                                    ),
                                ));
                            }
                        }
                        ("apiVersion" | "kind", other) if !other.is_string() => {
                            errs.push(FieldError::invalid(p, other.clone(), "must be a string"))
                        }
                        _ => {}
                    }
                }
            }
            for (k, v) in m {
                if let Some(p) = n.properties.get(k) {
                    if p.below.embedded {
                        embedded(p, v, &child(path, k), false, errs);
                    }
                } else if let Some(a) = n.additional_schema().filter(|a| a.below.embedded) {
                    embedded(a, v, &key(path, k), false, errs);
                }
            }
        }
        Value::Array(items) => {
            if let Some(it) = n.items.as_deref().filter(|it| it.below.embedded) {
                for (i, x) in items.iter().enumerate() {
                    embedded(it, x, &index(path, i), false, errs);
                }
            }
        }
        _ => {}
    }
}

fn list_sets_and_maps(n: &Node, data: &Value, path: &str, errs: &mut Vec<FieldError>) {
    match data {
        Value::Object(m) => {
            for (k, v) in m {
                if let Some(p) = n.properties.get(k) {
                    if p.below.list_type {
                        list_sets_and_maps(p, v, &child(path, k), errs);
                    }
                } else if let Some(a) = n.additional_schema().filter(|a| a.below.list_type) {
                    list_sets_and_maps(a, v, &key(path, k), errs);
                }
            }
        }
        Value::Array(items) => {
            match n.list_type.as_deref() {
                Some("set") => {
                    for (i, x) in items.iter().enumerate() {
                        if items[..i].iter().any(|y| json_eq(x, y)) {
                            errs.push(FieldError::new(
                                DUPLICATE,
                                index(path, i),
                                Bad::Json(x.clone()),
                                "",
                            ));
                        }
                    }
                }
                Some("map") => list_map(n, items, path, errs),
                _ => {}
            }
            if let Some(it) = n.items.as_deref().filter(|it| it.below.list_type) {
                for (i, x) in items.iter().enumerate() {
                    list_sets_and_maps(it, x, &index(path, i), errs);
                }
            }
        }
        _ => {}
    }
}

fn list_map(n: &Node, items: &[Value], path: &str, errs: &mut Vec<FieldError>) {
    let mut seen: Vec<Value> = Vec::new();
    for (i, x) in items.iter().enumerate() {
        let p = index(path, i);
        let Value::Object(m) = x else {
            errs.push(FieldError::invalid(
                p,
                x.clone(),
                "must be an object for an array of list-type map",
            ));
            continue;
        };
        if m.is_empty() {
            errs.push(FieldError::invalid(
                p,
                x.clone(),
                "must contain at least one key",
            ));
            continue;
        }
        let mut keys = serde_json::Map::new();
        let mut missing = false;
        for k in &n.list_map_keys {
            match m.get(k) {
                Some(v) => {
                    keys.insert(k.clone(), v.clone());
                }
                None => match n
                    .items
                    .as_ref()
                    .and_then(|it| it.properties.get(k))
                    .and_then(|s| s.default.clone())
                {
                    Some(d) => {
                        keys.insert(k.clone(), d);
                    }
                    None => {
                        errs.push(FieldError::required(child(&p, k), ""));
                        missing = true;
                    }
                },
            }
        }
        if missing {
            continue;
        }
        let kv = Value::Object(keys);
        if seen.iter().any(|s| json_eq(s, &kv)) {
            errs.push(FieldError::new(DUPLICATE, p, Bad::Json(kv), ""));
        } else {
            seen.push(kv);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CEL: rules of each node evaluated on the value there, old values correlated through object
// fields, map keys and list-type=map keys (atomic lists and sets are not correlated).

pub(crate) fn cel_walk(
    s: &Structural,
    n: &Node,
    spath: &str,
    data: &Value,
    old: Option<&Value>,
    fpath: &str,
    errs: &mut Vec<FieldError>,
) {
    if data.is_null() {
        return;
    }
    if !s.rules.has(spath) {
        // No rules here: nothing to evaluate (nor a resource view to make).
    } else if spath.is_empty() || n.embedded {
        // Rules see only name and generateName of a resource's metadata.
        let view = crate::cel_rules::resource_view(data);
        let old_view = old.and_then(crate::cel_rules::resource_view);
        s.rules.eval(
            n,
            spath,
            view.as_ref().unwrap_or(data),
            old_view.as_ref().or(old),
            fpath,
            errs,
        );
    } else {
        s.rules.eval(n, spath, data, old, fpath, errs);
    }
    match data {
        Value::Object(m) => {
            for (k, v) in m {
                let o = old.and_then(|o| o.get(k));
                if let Some(p) = n.properties.get(k) {
                    if !p.below.rules {
                        continue;
                    }
                    cel_walk(
                        s,
                        p,
                        &node_key(spath, Step::Prop(k)),
                        v,
                        o,
                        &child(fpath, k),
                        errs,
                    );
                } else if let Some(a) = n.additional_schema().filter(|a| a.below.rules) {
                    cel_walk(
                        s,
                        a,
                        &node_key(spath, Step::Additional),
                        v,
                        o,
                        &key(fpath, k),
                        errs,
                    );
                }
            }
        }
        Value::Array(items) => {
            let Some(it) = n.items.as_deref().filter(|it| it.below.rules) else {
                return;
            };
            let ispath = node_key(spath, Step::Items);
            let old_items = old.and_then(Value::as_array);
            for (i, x) in items.iter().enumerate() {
                let o = match (n.list_type.as_deref(), old_items) {
                    // Set elements correlate with an equal old element.
                    (Some("set"), Some(olds)) => olds.iter().find(|o| json_eq(o, x)),
                    (Some("map"), Some(olds)) => olds.iter().find(|o| {
                        n.list_map_keys
                            .iter()
                            .all(|k| o.get(k).is_some() && o.get(k) == x.get(k))
                    }),
                    _ => None,
                };
                cel_walk(s, it, &ispath, x, o, &index(fpath, i), errs);
            }
        }
        _ => {}
    }
}
