//! The JSONPath subset of additionalPrinterColumns (k8s.io/client-go/util/jsonpath as the CR
//! table convertor uses it, missing keys allowed): `.a.b`, `['a.b']`, `[0]`, `[-1]`, `[*]`,
//! `[1:3]`, `..name` and filters `[?(@.type=="Ready")]` (==, !=, <, <=, >, >=, or existence).

use serde_json::Value;

use crate::{FieldError, INVALID};

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Field(String),
    Wildcard,
    Recursive(Option<String>),
    Index(i64),
    Slice(Option<i64>, Option<i64>),
    Filter(Vec<Seg>, Option<(String, Value)>),
}

/// A parsed column path.
#[derive(Debug, Clone)]
pub struct JsonPath {
    segs: Vec<Seg>,
}

fn err(path: &str, why: &str) -> FieldError {
    FieldError::new(INVALID, "", crate::Bad::Str(path.to_string()), why)
}

impl JsonPath {
    /// Parses `.spec.replicas` (a leading `{...}` wrapper and `$` are accepted too).
    pub fn parse(path: &str) -> Result<JsonPath, FieldError> {
        let mut p = path.trim();
        if let Some(inner) = p.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
            p = inner.trim();
        }
        p = p.strip_prefix('$').unwrap_or(p);
        // Filters nest by recursion: bound them so a hostile column cannot overflow the stack.
        if p.matches('[').count() > 64 {
            return Err(err(path, "too many brackets (more than 64)"));
        }
        let segs = parse_segs(p).map_err(|why| err(path, &why))?;
        Ok(JsonPath { segs })
    }

    /// Every value the path finds (missing keys give none).
    pub fn find(&self, obj: &Value) -> Vec<Value> {
        let mut cur = vec![obj.clone()];
        for s in &self.segs {
            cur = step(s, cur);
        }
        cur
    }

    /// A table cell as the CR table convertor makes it for a column of `col_type` (integer,
    /// number, boolean, string, date): the first value found, converted, or null (`<none>`).
    /// String columns print any value as jsonpath's text output does; date columns give the
    /// timestamp string (the caller renders the age), `<invalid>` when it is not RFC 3339.
    pub fn cell(&self, col_type: &str, obj: &Value) -> Value {
        let found = self.find(obj);
        let Some(v) = found.into_iter().next() else {
            return Value::Null;
        };
        if v.is_null() {
            return Value::Null;
        }
        match col_type {
            "string" => Value::String(text(&v)),
            "integer" => match &v {
                Value::Number(n) => n
                    .as_i64()
                    .map(Value::from)
                    .or_else(|| n.as_f64().map(|f| Value::from(f as i64)))
                    .unwrap_or(Value::Null),
                _ => Value::Null,
            },
            "number" => match &v {
                Value::Number(n) => n
                    .as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
                _ => Value::Null,
            },
            "boolean" => match v {
                Value::Bool(_) => v,
                _ => Value::Null,
            },
            "date" => match &v {
                Value::String(s) if is_rfc3339(s) => v,
                Value::String(_) => Value::String("<invalid>".into()),
                _ => Value::Null,
            },
            _ => Value::Null,
        }
    }
}

/// The JSONPath values found at `path` in `obj`.
pub fn jsonpath(path: &str, obj: &Value) -> Result<Vec<Value>, FieldError> {
    Ok(JsonPath::parse(path)?.find(obj))
}

fn is_rfc3339(s: &str) -> bool {
    // Byte slicing only after checking the boundary: user data may hold multi-byte characters.
    s.len() >= 20
        && s.get(..10).is_some_and(crate::format::is_date)
        && matches!(s.as_bytes()[10], b'T' | b't')
}

/// fmt.Fprint of a decoded JSON value (what jsonpath's text output prints).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => crate::goformat::number_v(n),
        Value::Bool(b) => b.to_string(),
        Value::Null => "<nil>".into(),
        Value::Array(a) => format!("[{}]", a.iter().map(text).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            format!(
                "map[{}]",
                keys.iter()
                    .map(|k| format!("{k}:{}", text(&m[k.as_str()])))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    }
}

fn step(s: &Seg, cur: Vec<Value>) -> Vec<Value> {
    let mut out = Vec::new();
    for v in cur {
        match s {
            Seg::Field(k) => {
                if let Some(x) = v.get(k) {
                    out.push(x.clone());
                }
            }
            Seg::Wildcard => match v {
                Value::Array(a) => out.extend(a),
                Value::Object(m) => {
                    let mut keys: Vec<String> = m.keys().cloned().collect();
                    keys.sort();
                    out.extend(keys.into_iter().filter_map(|k| m.get(&k).cloned()));
                }
                _ => {}
            },
            Seg::Recursive(k) => recurse(&v, k.as_deref(), &mut out),
            Seg::Index(i) => {
                if let Value::Array(a) = &v {
                    let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                    if idx >= 0 {
                        if let Some(x) = a.get(idx as usize) {
                            out.push(x.clone());
                        }
                    }
                }
            }
            Seg::Slice(start, end) => {
                if let Value::Array(a) = &v {
                    let len = a.len() as i64;
                    let norm = |x: i64| if x < 0 { (len + x).max(0) } else { x.min(len) };
                    let (s, e) = (norm(start.unwrap_or(0)), norm(end.unwrap_or(len)));
                    if s < e {
                        out.extend(a[s as usize..e as usize].iter().cloned());
                    }
                }
            }
            Seg::Filter(sub, cond) => {
                let items: Vec<Value> = match v {
                    Value::Array(a) => a,
                    other => vec![other],
                };
                for it in items {
                    let mut found = vec![it.clone()];
                    for s in sub {
                        found = step(s, found);
                    }
                    let keep = match cond {
                        None => !found.is_empty(),
                        Some((op, lit)) => found.first().is_some_and(|x| compare(x, op, lit)),
                    };
                    if keep {
                        out.push(it);
                    }
                }
            }
        }
    }
    out
}

fn recurse(v: &Value, k: Option<&str>, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => {
            match k {
                Some(k) => {
                    if let Some(x) = m.get(k) {
                        out.push(x.clone());
                    }
                }
                None => out.push(v.clone()),
            }
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for key in keys {
                recurse(&m[key.as_str()], k, out);
            }
        }
        Value::Array(a) => {
            if k.is_none() {
                out.push(v.clone());
            }
            for x in a {
                recurse(x, k, out);
            }
        }
        _ => {}
    }
}

fn compare(x: &Value, op: &str, lit: &Value) -> bool {
    let ord = match (x, lit) {
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (a, b) => return (op == "==" && a == b) || (op == "!=" && a != b),
    };
    let Some(o) = ord else { return false };
    match op {
        "==" => o.is_eq(),
        "!=" => o.is_ne(),
        "<" => o.is_lt(),
        "<=" => o.is_le(),
        ">" => o.is_gt(),
        ">=" => o.is_ge(),
        _ => false,
    }
}

fn parse_segs(mut p: &str) -> Result<Vec<Seg>, String> {
    let mut segs = Vec::new();
    while !p.is_empty() {
        if let Some(rest) = p.strip_prefix("..") {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            let name = &rest[..end];
            segs.push(Seg::Recursive(
                (!name.is_empty() && name != "*").then(|| name.to_string()),
            ));
            p = &rest[end..];
        } else if let Some(rest) = p.strip_prefix('.') {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            let name = &rest[..end];
            match name {
                "" => {}
                "*" => segs.push(Seg::Wildcard),
                n => segs.push(Seg::Field(n.to_string())),
            }
            p = &rest[end..];
        } else if let Some(rest) = p.strip_prefix('[') {
            let close = matching_bracket(rest).ok_or("unterminated array")?;
            let inner = rest[..close].trim();
            p = &rest[close + 1..];
            segs.push(bracket(inner)?);
        } else {
            // A bare first name (`spec.replicas`), as jsonpath's parser accepts after `{`.
            let end = p.find(['.', '[']).unwrap_or(p.len());
            segs.push(Seg::Field(p[..end].to_string()));
            p = &p[end..];
        }
    }
    Ok(segs)
}

fn matching_bracket(s: &str) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') if depth == 0 => return Some(i),
            (None, ']') => depth -= 1,
            _ => {}
        }
    }
    None
}

fn bracket(inner: &str) -> Result<Seg, String> {
    if inner == "*" {
        return Ok(Seg::Wildcard);
    }
    if let Some(f) = inner.strip_prefix("?(").and_then(|x| x.strip_suffix(')')) {
        let f = f.trim();
        for op in ["==", "!=", "<=", ">=", "<", ">"] {
            if let Some((l, r)) = f.split_once(op) {
                let path = l
                    .trim()
                    .strip_prefix('@')
                    .ok_or_else(|| format!("unrecognized filter {f:?}"))?;
                let lit = literal(r.trim())?;
                return Ok(Seg::Filter(parse_segs(path)?, Some((op.to_string(), lit))));
            }
        }
        let path = f
            .strip_prefix('@')
            .ok_or_else(|| format!("unrecognized filter {f:?}"))?;
        return Ok(Seg::Filter(parse_segs(path)?, None));
    }
    if let Some(q) = inner.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')) {
        return Ok(Seg::Field(q.to_string()));
    }
    if let Some(q) = inner.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        return Ok(Seg::Field(q.to_string()));
    }
    if let Some((a, b)) = inner.split_once(':') {
        let num = |s: &str| -> Result<Option<i64>, String> {
            let s = s.trim();
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse()
                    .map(Some)
                    .map_err(|_| format!("invalid array index {s:?}"))
            }
        };
        let b = b.split(':').next().unwrap_or("");
        return Ok(Seg::Slice(num(a)?, num(b)?));
    }
    inner
        .parse::<i64>()
        .map(Seg::Index)
        .map_err(|_| format!("invalid array index {inner:?}"))
}

fn literal(s: &str) -> Result<Value, String> {
    if let Some(q) = s
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
    {
        return Ok(Value::String(q.to_string()));
    }
    match s {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return Ok(Value::from(i));
    }
    s.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| format!("unrecognized literal {s:?}"))
}
