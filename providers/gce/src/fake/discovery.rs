//! Google's discovery documents as the fake's request police: method lookup by HTTP method and
//! path template, query parameters, and request bodies checked against the schemas.

use serde_json::Value;
use std::path::PathBuf;

pub struct Discovery {
    docs: Vec<Value>,
}

const INSTALL: &str =
    "python3 -m venv /opt/rktup-venv && /opt/rktup-venv/bin/pip install google-api-python-client";

/// Where compute.v1.json is: $RKTUP_COMPUTE_DISCOVERY, else the venv the CI script makes.
pub fn discovery_dir() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("RKTUP_COMPUTE_DISCOVERY") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(format!(
            "RKTUP_COMPUTE_DISCOVERY={} is not a file; it should name compute.v1.json from google-api-python-client",
            p.display()
        ));
    }
    let lib = PathBuf::from("/opt/rktup-venv/lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for e in entries.flatten() {
            let p = e
                .path()
                .join("site-packages/googleapiclient/discovery_cache/documents/compute.v1.json");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(format!(
        "Google's compute.v1.json discovery document was not found; the fake Compute Engine \
         validates every request against it. Install it with:\n  {INSTALL}\n\
         or point RKTUP_COMPUTE_DISCOVERY at a compute.v1.json"
    ))
}

fn seg_match(template: &str, path: &str) -> Option<usize> {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut literals = 0;
    for (i, ts) in t.iter().enumerate() {
        if ts.starts_with("{+") {
            return (p.len() > i).then_some(literals);
        }
        let ps = p.get(i)?;
        if ts.starts_with('{') {
            if ps.is_empty() {
                return None;
            }
        } else if ts != ps {
            return None;
        } else {
            literals += 1;
        }
    }
    (t.len() == p.len()).then_some(literals)
}

fn methods<'a>(resources: &'a Value, out: &mut Vec<&'a Value>) {
    let Some(map) = resources.as_object() else {
        return;
    };
    for r in map.values() {
        if let Some(ms) = r.get("methods").and_then(Value::as_object) {
            out.extend(ms.values());
        }
        if let Some(sub) = r.get("resources") {
            methods(sub, out);
        }
    }
}

impl Discovery {
    pub fn load() -> Result<Discovery, String> {
        let compute = discovery_dir()?;
        let storage = compute.with_file_name("storage.v1.json");
        let iam = compute.with_file_name("iam.v1.json");
        let mut docs = Vec::new();
        for p in [compute, storage, iam] {
            let text = std::fs::read_to_string(&p).map_err(|e| {
                format!("failed to read {}: {e}\n  install: {INSTALL}", p.display())
            })?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| format!("failed to parse {}: {e}", p.display()))?;
            docs.push(v);
        }
        Ok(Discovery { docs })
    }

    /// The document and method for `METHOD /path`.
    pub fn find(&self, http: &str, path: &str) -> Option<(&Value, &Value)> {
        let mut best: Option<(usize, &Value, &Value)> = None;
        for doc in &self.docs {
            let service = format!("/{}", doc["servicePath"].as_str().unwrap_or(""));
            let mut all = Vec::new();
            methods(&doc["resources"], &mut all);
            for m in all {
                if m["httpMethod"].as_str() != Some(http) {
                    continue;
                }
                let score = if path.starts_with("/upload/") {
                    m.pointer("/mediaUpload/protocols/simple/path")
                        .and_then(Value::as_str)
                        .and_then(|t| seg_match(t, path))
                } else {
                    let Some(rest) = path.strip_prefix(&service) else {
                        continue;
                    };
                    let t = m["flatPath"].as_str().or(m["path"].as_str()).unwrap_or("");
                    seg_match(t, rest)
                };
                if let Some(s) = score {
                    if best.is_none_or(|(b, _, _)| s > b) {
                        best = Some((s, doc, m));
                    }
                }
            }
        }
        best.map(|(_, d, m)| (d, m))
    }

    pub fn validate(
        &self,
        doc: &Value,
        method: &Value,
        query: &[(String, String)],
        body: Option<&Value>,
        upload: bool,
    ) -> Result<(), String> {
        let params = &method["parameters"];
        for (k, v) in query {
            let spec = params
                .get(k)
                .filter(|p| p["location"].as_str() == Some("query"))
                .or_else(|| doc["parameters"].get(k))
                .or_else(|| {
                    // Media uploads take uploadType on top of the method's parameters.
                    (upload && k == "uploadType").then_some(&Value::Null)
                });
            let Some(spec) = spec else {
                return Err(format!("Invalid JSON payload received. Unknown name \"{k}\": Cannot bind query parameter. Field '{k}' could not be found in request message."));
            };
            check_param(k, v, spec)?;
        }
        if let Some(ps) = params.as_object() {
            for (k, p) in ps {
                if p["required"].as_bool() == Some(true)
                    && p["location"].as_str() == Some("query")
                    && !query.iter().any(|(q, _)| q == k)
                {
                    return Err(format!("Required parameter: {k}"));
                }
            }
        }
        let id = method["id"].as_str().unwrap_or("");
        match (
            method.pointer("/request/$ref").and_then(Value::as_str),
            body,
        ) {
            _ if upload => Ok(()),
            (Some(_), None) => Err("Required field 'resource' not specified".into()),
            (None, Some(_)) => Err(format!("{id} takes no request body")),
            (None, None) => Ok(()),
            (Some(r), Some(b)) => {
                let schema = &doc["schemas"][r];
                check_value(doc, schema, b, "resource", id)
            }
        }
    }
}

fn check_param(k: &str, v: &str, spec: &Value) -> Result<(), String> {
    let bad = || format!("Invalid value for parameter '{k}': {v}");
    match spec["type"].as_str() {
        Some("integer") => v.parse::<i64>().map(|_| ()).map_err(|_| bad()),
        Some("boolean") => matches!(v, "true" | "false").then_some(()).ok_or_else(bad),
        _ => match spec["enum"].as_array() {
            Some(e) if !e.iter().any(|x| x.as_str() == Some(v)) => Err(bad()),
            _ => Ok(()),
        },
    }
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => &doc["schemas"][r],
        None => schema,
    }
}

fn type_err(at: &str, ty: &str, v: &Value) -> String {
    format!("Invalid value at '{at}' ({ty}), {v}")
}

fn check_value(doc: &Value, schema: &Value, v: &Value, at: &str, id: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    let ty = schema["type"].as_str().unwrap_or("any");
    match ty {
        "object" => {
            let Some(obj) = v.as_object() else {
                return Err(type_err(at, "TYPE_MESSAGE", v));
            };
            let props = schema["properties"].as_object();
            for (k, x) in obj {
                match (props.and_then(|p| p.get(k)), schema.get("additionalProperties")) {
                    (Some(s), _) => check_value(doc, s, x, &format!("{at}.{k}"), id)?,
                    (None, Some(s)) => check_value(doc, s, x, &format!("{at}[{k}]"), id)?,
                    (None, None) => {
                        return Err(format!(
                            "Invalid JSON payload received. Unknown name \"{k}\" at '{at}': Cannot find field."
                        ))
                    }
                }
            }
            if let Some(props) = props {
                for (k, s) in props {
                    let required = s
                        .pointer("/annotations/required")
                        .and_then(Value::as_array)
                        .is_some_and(|r| r.iter().any(|m| m.as_str() == Some(id)));
                    if required && !obj.contains_key(k) {
                        return Err(format!("Required field '{at}.{k}' not specified"));
                    }
                }
            }
            Ok(())
        }
        "array" => {
            let Some(items) = v.as_array() else {
                return Err(type_err(at, "TYPE_ARRAY", v));
            };
            for (i, x) in items.iter().enumerate() {
                check_value(doc, &schema["items"], x, &format!("{at}[{i}]"), id)?;
            }
            Ok(())
        }
        "string" => {
            let fmt = schema["format"].as_str().unwrap_or("");
            if matches!(fmt, "int64" | "uint64") {
                let ok = v.as_i64().is_some()
                    || v.as_u64().is_some()
                    || v.as_str().is_some_and(|s| s.parse::<i128>().is_ok());
                return ok
                    .then_some(())
                    .ok_or_else(|| type_err(at, "TYPE_INT64", v));
            }
            let Some(s) = v.as_str() else {
                return Err(type_err(at, "TYPE_STRING", v));
            };
            match schema["enum"].as_array() {
                Some(e) if !e.iter().any(|x| x.as_str() == Some(s)) => Err(format!(
                    "Invalid value for field '{at}': '{s}'. Value must be one of {e:?}"
                )),
                _ => Ok(()),
            }
        }
        "integer" => (v.as_i64().is_some() || v.as_u64().is_some())
            .then_some(())
            .ok_or_else(|| type_err(at, "TYPE_INT32", v)),
        "number" => v
            .is_number()
            .then_some(())
            .ok_or_else(|| type_err(at, "TYPE_DOUBLE", v)),
        "boolean" => v
            .is_boolean()
            .then_some(())
            .ok_or_else(|| type_err(at, "TYPE_BOOL", v)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_by_segments() {
        assert_eq!(
            seg_match(
                "projects/{project}/zones/{zone}/instances",
                "projects/p/zones/z/instances"
            ),
            Some(3)
        );
        assert_eq!(
            seg_match(
                "projects/{project}/zones/{zone}/instances",
                "projects/p/zones/z"
            ),
            None
        );
        assert_eq!(seg_match("b/{bucket}/o/{+object}", "b/x/o/a/b"), Some(2));
    }
}
