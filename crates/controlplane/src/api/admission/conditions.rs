//! A webhook's `matchConditions`: CEL expressions over `object`, `oldObject` and `request`
//! (the AdmissionRequest), evaluated on cel-rust (the library the CRD validation rules use).
//! As upstream: any condition false skips the webhook; otherwise an error is handled by the
//! `failurePolicy`. `authorizer` is not provided (an expression using it errors).

use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub(crate) fn env() -> &'static Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = cel::Env::stdlib();
        // Kubernetes' CEL environment has these extension libraries too; failing to add one
        // leaves expressions using it uncompilable rather than panicking.
        let _ = env.add_extension(cel::extensions::strings);
        let _ = env.add_extension(cel::extensions::lists);
        let _ = env.add_extension(cel::extensions::math);
        Arc::new(env)
    })
}

/// Compiles an expression (kept: the same conditions run on every matching request).
pub(crate) fn compile(expr: &str) -> Result<Arc<cel::Program>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<cel::Program>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(p) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(expr) {
        return Ok(p.clone());
    }
    let p = Arc::new(
        env()
            .compile(expr)
            .map_err(|e| format!("compilation failed: {e}"))?,
    );
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() > 1024 {
        cache.clear();
    }
    cache.insert(expr.to_string(), p.clone());
    Ok(p)
}

pub(crate) fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => {
            let map: HashMap<cel::objects::Key, cel::Value> = m
                .iter()
                .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
        }
    }
}

/// Whether the webhook is to be called for `request` (an AdmissionRequest); `Err` when no
/// condition is false and one could not be evaluated.
pub(crate) fn matches(hook: &Value, request: &Value) -> Result<bool, String> {
    let Some(conds) = hook
        .get("matchConditions")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
    else {
        return Ok(true);
    };
    let mut ctx = cel::Context::with_env(env().clone());
    ctx.add_variable_from_value("object", to_cel(&request["object"]));
    ctx.add_variable_from_value("oldObject", to_cel(&request["oldObject"]));
    ctx.add_variable_from_value("request", to_cel(request));
    let mut errors = Vec::new();
    for c in conds {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        let expr = c.get("expression").and_then(Value::as_str).unwrap_or("");
        let out = compile(expr).and_then(|p| p.execute(&ctx).map_err(|e| e.to_string()));
        match out {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => return Ok(false),
            Ok(other) => errors.push(format!(
                "matchCondition '{name}': expression must evaluate to bool, got {other:?}"
            )),
            Err(e) => errors.push(format!("matchCondition '{name}': {e}")),
        }
    }
    match errors.len() {
        0 => Ok(true),
        1 => Err(errors.remove(0)),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn false_skips_errors_fail_true_calls() {
        let req = json!({"operation": "CREATE", "userInfo": {"username": "alice"},
            "object": {"metadata": {"labels": {"a": "1"}}}, "oldObject": null});
        let hook = |exprs: &[&str]| {
            json!({"matchConditions": exprs.iter().enumerate()
                .map(|(i, e)| json!({"name": format!("c{i}"), "expression": e}))
                .collect::<Vec<_>>()})
        };
        assert_eq!(matches(&hook(&[]), &req), Ok(true));
        assert_eq!(
            matches(
                &hook(&[
                    "request.userInfo.username != 'system:admin'",
                    "object.metadata.labels.a == '1'"
                ]),
                &req
            ),
            Ok(true)
        );
        assert_eq!(
            matches(
                &hook(&["oldObject == null", "request.operation == 'UPDATE'"]),
                &req
            ),
            Ok(false)
        );
        // An error and a false: skipped.
        assert_eq!(
            matches(&hook(&["object.nope.x == 1", "false"]), &req),
            Ok(false)
        );
        assert!(matches(&hook(&["object.nope.x == 1"]), &req).is_err());
        assert!(matches(
            &hook(&["authorizer.group('').resource('pods').check('get').allowed()"]),
            &req
        )
        .is_err());
    }
}
