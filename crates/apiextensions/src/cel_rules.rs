//! CEL `x-kubernetes-validations` (pkg/apiserver/schema/cel) on cel-rust: rules are parsed when
//! the schema is built (a rule that does not parse, or calls a function this CEL does not have,
//! refuses the CRD), evaluated with `self` (and `oldSelf` for transition rules) against each
//! value their schema node applies to, with upstream's messages.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use crate::schema::{Node, Rule};
use crate::{child, goformat, index, Bad, FieldError, INVALID};

/// The compiled rules of one schema, in walk order of their nodes (path in the schema → rules).
#[derive(Clone, Default)]
pub(crate) struct Compiled {
    by_node: std::collections::HashMap<String, Vec<CompiledRule>>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Compiled({} nodes)", self.by_node.len())
    }
}

#[derive(Clone)]
struct CompiledRule {
    rule: Rule,
    program: Arc<cel::Program>,
    message_program: Option<Arc<cel::Program>>,
    uses_old_self: bool,
}

fn env() -> &'static Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = cel::Env::stdlib();
        // The extensions Kubernetes' CEL environment also has (strings, lists, math); a failure
        // here would be a bug in the library, and rules then fail to compile rather than panic.
        let _ = env.add_extension(cel::extensions::strings);
        let _ = env.add_extension(cel::extensions::lists);
        let _ = env.add_extension(cel::extensions::math);
        Arc::new(env)
    })
}

/// Functions the environment above provides (operators aside). Kubernetes' own libraries
/// (url, quantity, ip/cidr, isSorted, sum, ...), timestamps and durations are not among them.
const FUNCTIONS: &[&str] = &[
    "size",
    "matches",
    "contains",
    "startsWith",
    "endsWith",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "dyn",
    "type",
    "charAt",
    "indexOf",
    "lastIndexOf",
    "join",
    "lowerAscii",
    "upperAscii",
    "trim",
    "replace",
    "split",
    "substring",
    "format",
    "reverse",
    "distinct",
    "flatten",
    "sort",
    "lists.range",
    "strings.quote",
    "optional.of",
    "optional.none",
    "optional.ofNonZeroValue",
    "orValue",
    "hasValue",
    "value",
    "or",
    "optMap",
    "optFlatMap",
];

fn unsupported_function(p: &cel::Program) -> Option<String> {
    let known: HashSet<&str> = FUNCTIONS.iter().copied().collect();
    p.references()
        .functions()
        .into_iter()
        .find(|f| {
            let operator = f.starts_with('_')
                || f.starts_with('@')
                || f.starts_with("!_")
                || f.starts_with("-_");
            !operator && !f.starts_with("math.") && !known.contains(f)
        })
        .map(str::to_string)
}

/// The ValidationRule as upstream's field.Invalid shows it (Go struct order, omitempty).
pub(crate) fn rule_json(r: &Rule) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("rule".into(), Value::String(r.rule.clone()));
    for (k, v) in [
        ("message", &r.message),
        ("messageExpression", &r.message_expression),
        ("reason", &r.reason),
        ("fieldPath", &r.field_path),
    ] {
        if !v.is_empty() {
            m.insert(k.into(), Value::String(v.clone()));
        }
    }
    if let Some(b) = r.optional_old_self {
        m.insert("optionalOldSelf".into(), Value::Bool(b));
    }
    Value::Object(m)
}

/// The most operators a rule may have: cel-rust parses and evaluates recursively, and a long
/// operator chain would overflow a request thread's stack (2000 `+` terms do in 2 MiB).
const MAX_OPERATORS: usize = 500;

fn compile_one(src: &str, node: &Node, is_root: bool) -> Result<cel::Program, String> {
    let operators = src
        .chars()
        .filter(|c| "+-*/%&|=<>?.[(!".contains(*c))
        .count();
    if operators > MAX_OPERATORS {
        return Err(format!(
            "compilation failed: the rule has {operators} operators, more than the {MAX_OPERATORS} rktup's CEL (cel-rust) evaluates safely"
        ));
    }
    let p = env()
        .compile(src)
        .map_err(|e| format!("compilation failed: {e}"))?;
    if let Some(f) = unsupported_function(&p) {
        return Err(format!(
            "compilation failed: undeclared reference to '{f}': rktup's CEL (cel-rust) does not support this function yet"
        ));
    }
    // What cel-go's type check against the schema refuses: unknown variables and fields.
    let mut checker = Checker {
        root: node,
        is_root,
        scopes: Vec::new(),
        error: None,
    };
    checker.resolve(p.expression());
    if let Some((id, text)) = checker.error {
        let (line, col, snippet) = match p.source_info().offset_for(id) {
            Some((start, _)) => {
                let before = src.get(..start as usize).unwrap_or("");
                let line = before.matches('\n').count();
                let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0);
                (
                    line + 1,
                    col + 1,
                    src.lines().nth(line).unwrap_or("").to_string(),
                )
            }
            None => (1, 1, src.lines().next().unwrap_or("").to_string()),
        };
        return Err(format!(
            "compilation failed: ERROR: <input>:{line}:{col}: {text}\n | {snippet}\n | {}^",
            ".".repeat(col - 1)
        ));
    }
    Ok(p)
}

/// Resolves the schema node a CEL expression evaluates to, where known (`None`: dynamic or a
/// scalar), recording the first reference cel-go's check against the schema would refuse.
struct Checker<'a> {
    root: &'a Node,
    is_root: bool,
    /// Comprehension variables in scope and the schema of their values.
    scopes: Vec<(String, Option<&'a Node>)>,
    error: Option<(u64, String)>,
}

impl<'a> Checker<'a> {
    fn resolve(&mut self, e: &cel::parser::Expression) -> Option<&'a Node> {
        use cel::common::ast::{EntryExpr, Expr};
        if self.error.is_some() {
            return None;
        }
        match &e.expr {
            Expr::Ident(name) => {
                if let Some((_, n)) = self.scopes.iter().rev().find(|(v, _)| v == name) {
                    return *n;
                }
                match name.as_str() {
                    "self" | "oldSelf" => Some(self.root),
                    // Type names and the namespaces of the extensions resolve at runtime.
                    "int" | "uint" | "double" | "bool" | "string" | "bytes" | "list" | "map"
                    | "null_type" | "type" | "dyn" | "optional" | "math" | "strings" | "lists" => {
                        None
                    }
                    other => {
                        self.error = Some((
                            e.id,
                            format!("undeclared reference to '{other}' (in container '')"),
                        ));
                        None
                    }
                }
            }
            Expr::Select(sel) => {
                let operand = self.resolve(&sel.operand)?;
                let resource_root = self.is_root && std::ptr::eq(operand, self.root);
                self.field(operand, &sel.field, e.id, resource_root)
            }
            Expr::Call(call) => {
                if let Some(t) = call.target.as_deref() {
                    self.resolve(t);
                }
                let args: Vec<Option<&'a Node>> =
                    call.args.iter().map(|a| self.resolve(a)).collect();
                if call.func_name == "_[_]" {
                    let on = args.first().copied().flatten()?;
                    return match on.ty.as_str() {
                        "array" => on.items.as_deref(),
                        _ => on.additional_schema(),
                    };
                }
                None
            }
            Expr::Comprehension(c) => {
                let range = self.resolve(&c.iter_range);
                let (item, value) = match range {
                    Some(n) if n.ty == "array" => (n.items.as_deref(), None),
                    Some(n) => (None, n.additional_schema()),
                    None => (None, None),
                };
                self.resolve(&c.accu_init);
                let depth = self.scopes.len();
                self.scopes.push((c.accu_var.clone(), None));
                match &c.iter_var2 {
                    // Two-variable forms: index or key, then the value.
                    Some(v2) => {
                        self.scopes.push((c.iter_var.clone(), None));
                        self.scopes.push((v2.clone(), item.or(value)));
                    }
                    None => self.scopes.push((c.iter_var.clone(), item)),
                }
                self.resolve(&c.loop_cond);
                self.resolve(&c.loop_step);
                self.resolve(&c.result);
                self.scopes.truncate(depth);
                None
            }
            Expr::List(l) => {
                for x in &l.elements {
                    self.resolve(x);
                }
                None
            }
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        self.resolve(&me.key);
                        self.resolve(&me.value);
                    }
                }
                None
            }
            _ => None,
        }
    }

    fn field(
        &mut self,
        n: &'a Node,
        field: &str,
        id: u64,
        resource_root: bool,
    ) -> Option<&'a Node> {
        // Of a resource's metadata, rules see only name and generateName, whatever the schema
        // says (it may only say `type: object` there).
        if (resource_root || n.embedded) && matches!(field, "apiVersion" | "kind" | "metadata") {
            return Some(if field == "metadata" {
                &meta_nodes().0
            } else {
                &meta_nodes().1
            });
        }
        if let Some(p) = n.properties.get(field) {
            return Some(p);
        }
        if let Some(a) = n.additional_schema() {
            return Some(a);
        }
        let dynamic =
            n.preserve_unknown || n.int_or_string || n.ty != "object" || n.additional.is_some();
        if !dynamic {
            self.error = Some((id, format!("undefined field '{field}'")));
        }
        None
    }
}

/// The schema rules see for a resource's metadata (name, generateName) and for apiVersion/kind.
fn meta_nodes() -> &'static (Node, Node) {
    static NODES: OnceLock<(Node, Node)> = OnceLock::new();
    NODES.get_or_init(|| {
        let string = Node {
            ty: "string".into(),
            ..Node::default()
        };
        let mut meta = Node {
            ty: "object".into(),
            ..Node::default()
        };
        meta.properties.insert("name".into(), string.clone());
        meta.properties
            .insert("generateName".into(), string.clone());
        (meta, string)
    })
}

/// A resource's value as rules see it: metadata cut down to name and generateName.
pub(crate) fn resource_view(v: &Value) -> Option<Value> {
    let meta = v.get("metadata")?.as_object()?;
    let mut out = v.clone();
    let kept: serde_json::Map<String, Value> = meta
        .iter()
        .filter(|(k, _)| *k == "name" || *k == "generateName")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out["metadata"] = Value::Object(kept);
    Some(out)
}

impl Compiled {
    pub(crate) fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }

    /// Whether the node at `spath` (schema path) has rules.
    pub(crate) fn has(&self, spath: &str) -> bool {
        self.by_node.contains_key(spath)
    }

    /// Compiles every rule under `root`; errors at `<path>...x-kubernetes-validations[i].rule`.
    pub(crate) fn compile(root: &Node, path: &str) -> Result<Compiled, Vec<FieldError>> {
        let mut out = Compiled::default();
        let mut errs = Vec::new();
        walk(root, "", path, None, &mut out, &mut errs);
        if errs.is_empty() {
            Ok(out)
        } else {
            Err(errs)
        }
    }

    /// Evaluates the rules of the node at `spath` (schema path) against `value`.
    pub(crate) fn eval(
        &self,
        node: &Node,
        spath: &str,
        value: &Value,
        old: Option<&Value>,
        fpath: &str,
        errs: &mut Vec<FieldError>,
    ) {
        let Some(rules) = self.by_node.get(spath) else {
            return;
        };
        // Only an error names the field.
        let field = || {
            if fpath.is_empty() {
                "<nil>".to_string()
            } else {
                fpath.to_string()
            }
        };
        let ty = if node.int_or_string {
            ""
        } else {
            node.ty.as_str()
        };
        for r in rules {
            if r.uses_old_self && old.is_none() && r.rule.optional_old_self != Some(true) {
                continue;
            }
            let mut ctx = cel::Context::with_env(env().clone());
            ctx.add_variable_as_val("self", to_val(value));
            if r.uses_old_self {
                match (old, r.rule.optional_old_self == Some(true)) {
                    (Some(o), false) => ctx.add_variable_as_val("oldSelf", to_val(o)),
                    // optionalOldSelf: oldSelf is optional.of(old), or optional.none() on create.
                    (o, true) => {
                        let Some(o) = optional(o.map(to_cel)) else {
                            continue;
                        };
                        ctx.add_variable_from_value("oldSelf", o);
                    }
                    (None, false) => continue,
                }
            }
            let rule_text = if r.rule.message.trim().is_empty() {
                r.rule.rule.trim()
            } else {
                r.rule.message.trim()
            };
            match r.program.execute(&ctx) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => {
                    let mut f = field();
                    if !r.rule.field_path.is_empty() {
                        f = format!(
                            "{}{}",
                            if fpath.is_empty() {
                                String::new()
                            } else {
                                fpath.to_string()
                            },
                            normalize_field_path(&r.rule.field_path)
                        );
                    }
                    let mut detail = if r.rule.message.trim().is_empty() {
                        format!("failed rule: {}", r.rule.rule.trim())
                    } else {
                        r.rule.message.trim().to_string()
                    };
                    if let Some(mp) = &r.message_program {
                        if let Ok(cel::Value::String(s)) = mp.execute(&ctx) {
                            if !s.trim().is_empty() && !s.contains('\n') {
                                detail = s.trim().to_string();
                            }
                        }
                    }
                    errs.push(match r.rule.reason.as_str() {
                        "FieldValueForbidden" => FieldError::forbidden(f, &detail),
                        "FieldValueRequired" => FieldError::required(f, &detail),
                        "FieldValueDuplicate" => {
                            FieldError::new(crate::DUPLICATE, f, Bad::Str(ty.to_string()), "")
                        }
                        _ => FieldError::new(INVALID, f, Bad::Str(ty.to_string()), &detail),
                    });
                }
                Ok(other) => errs.push(FieldError::new(
                    INVALID,
                    field(),
                    Bad::Str(ty.to_string()),
                    &format!(
                        "rule did not evaluate to a bool ({other:?}) evaluating rule: {rule_text}"
                    ),
                )),
                Err(e) => {
                    let text = exec_error_text(&e);
                    let detail = if text.starts_with("no such overload") {
                        format!("'{text}': call arguments did not match a supported operator, function or macro signature for rule: {rule_text}")
                    } else {
                        format!("{text} evaluating rule: {rule_text}")
                    };
                    errs.push(FieldError::new(
                        INVALID,
                        field(),
                        Bad::Str(ty.to_string()),
                        &detail,
                    ));
                }
            }
        }
    }
}

/// A CEL optional (`optional.of(v)` / `optional.none()`), made by the library itself.
fn optional(v: Option<cel::Value>) -> Option<cel::Value> {
    let mut ctx = cel::Context::with_env(env().clone());
    let src = match v {
        Some(v) => {
            ctx.add_variable_from_value("v", v);
            "optional.of(v)"
        }
        None => "optional.none()",
    };
    env().compile(src).ok()?.execute(&ctx).ok()
}

/// cel-go's texts for the runtime errors rules commonly hit.
fn exec_error_text(e: &cel::ExecutionError) -> String {
    match e {
        cel::ExecutionError::NoSuchKey(k) => format!("no such key: {k}"),
        cel::ExecutionError::IndexOutOfBounds(i) => {
            format!("index out of bounds: {}", goformat::value_v(&from_cel(i)))
        }
        cel::ExecutionError::DivisionByZero(_) => "division by zero".into(),
        cel::ExecutionError::RemainderByZero(_) => "modulus by zero".into(),
        cel::ExecutionError::Overflow(..) => "integer overflow".into(),
        cel::ExecutionError::NoSuchOverload(..)
        | cel::ExecutionError::UnsupportedBinaryOperator(..) => "no such overload".into(),
        other => other.to_string(),
    }
}

/// `.spec.foo` / `.spec['a.b']` / `.list[0]` → field.Path text (`.spec.foo` → `spec.foo` appended).
fn normalize_field_path(p: &str) -> String {
    let mut out = String::new();
    let mut rest = p;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            out.push('.');
            out.push_str(&r[..end]);
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']").unwrap_or(r.len());
            out.push('[');
            out.push_str(&r[..end]);
            out.push(']');
            rest = r.get(end + 2..).unwrap_or("");
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').unwrap_or(r.len());
            out.push('[');
            out.push_str(&r[..end]);
            out.push(']');
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            out.push_str(rest);
            break;
        }
    }
    out
}

/// `uncorrelatable`: the path of the highest list above whose items have no old value to
/// compare with (lists other than list-type map), where oldSelf rules are refused.
fn walk(
    n: &Node,
    spath: &str,
    path: &str,
    uncorrelatable: Option<&str>,
    out: &mut Compiled,
    errs: &mut Vec<FieldError>,
) {
    let is_root = spath.is_empty();
    let vpath = child(path, "x-kubernetes-validations");
    let mut compiled = Vec::new();
    for (i, r) in n.validations.iter().enumerate() {
        let rpath = index(&vpath, i);
        let program = match compile_one(&r.rule, n, is_root) {
            Ok(p) => p,
            Err(e) => {
                errs.push(FieldError::invalid(child(&rpath, "rule"), rule_json(r), &e));
                continue;
            }
        };
        let uses_old_self = program.references().has_variable("oldSelf");
        if let (true, Some(within)) = (uses_old_self, uncorrelatable) {
            errs.push(FieldError::invalid_str(
                child(&rpath, "rule"),
                &r.rule,
                &format!("oldSelf cannot be used on the uncorrelatable portion of the schema within {within}"),
            ));
        }
        if !uses_old_self && r.optional_old_self.is_some() {
            errs.push(FieldError::invalid(
                child(&rpath, "optionalOldSelf"),
                Value::Bool(r.optional_old_self.unwrap_or(false)),
                "may not be set if oldSelf is not used in rule",
            ));
        }
        let message_program = if r.message_expression.trim().is_empty() {
            None
        } else {
            match compile_one(&r.message_expression, n, is_root) {
                Ok(p) => Some(Arc::new(p)),
                Err(e) => {
                    errs.push(FieldError::invalid(
                        child(&rpath, "messageExpression"),
                        rule_json(r),
                        &e,
                    ));
                    None
                }
            }
        };
        compiled.push(CompiledRule {
            rule: r.clone(),
            program: Arc::new(program),
            message_program,
            uses_old_self,
        });
    }
    if !compiled.is_empty() {
        out.by_node.insert(spath.to_string(), compiled);
    }
    for (k, p) in &n.properties {
        walk(
            p,
            &format!("{spath}/p/{k}"),
            &crate::key(&child(path, "properties"), k),
            uncorrelatable,
            out,
            errs,
        );
    }
    if let Some(a) = n.additional_schema() {
        walk(
            a,
            &format!("{spath}/a"),
            &child(path, "additionalProperties"),
            uncorrelatable,
            out,
            errs,
        );
    }
    if let Some(it) = &n.items {
        let within = match (uncorrelatable, n.list_type.as_deref()) {
            (Some(u), _) => Some(u),
            (None, Some("map")) => None,
            (None, _) => Some(path),
        };
        walk(
            it,
            &format!("{spath}/i"),
            &child(path, "items"),
            within,
            out,
            errs,
        );
    }
}

/// JSON → a CEL variable's value, borrowing the JSON's strings: what [`to_cel`] and the
/// context's conversion of its result (`add_variable_from_value`) make, in one step and without
/// copying every key and string twice.
fn to_val(v: &Value) -> Box<dyn cel::common::value::Val + '_> {
    use cel::common::types::{
        CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
    };
    match v {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Box::new(CelInt::from(i)),
            None => match n.as_u64() {
                Some(u) => Box::new(CelUInt::from(u)),
                None => Box::new(CelDouble::from(n.as_f64().unwrap_or(0.0))),
            },
        },
        Value::String(s) => Box::new(CelString::from(s.as_str())),
        Value::Array(a) => Box::new(CelList::from(a.iter().map(to_val).collect::<Vec<_>>())),
        Value::Object(m) => Box::new(CelMap::from(
            m.iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), to_val(v)))
                .collect::<std::collections::HashMap<_, _>>(),
        )),
    }
}

/// JSON → CEL: integers are int, other numbers double, objects maps with string keys.
pub(crate) fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => match n.as_u64() {
                Some(u) => cel::Value::UInt(u),
                None => cel::Value::Float(n.as_f64().unwrap_or(0.0)),
            },
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => {
            let map: std::collections::HashMap<cel::objects::Key, cel::Value> = m
                .iter()
                .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
        }
    }
}

fn from_cel(v: &cel::Value) -> Value {
    match v {
        cel::Value::Int(i) => Value::from(*i),
        cel::Value::UInt(u) => Value::from(*u),
        cel::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        cel::Value::String(s) => Value::String(s.to_string()),
        cel::Value::Bool(b) => Value::Bool(*b),
        _ => Value::Null,
    }
}

/// The schema path key the walk above uses for a node reached by `steps`.
pub(crate) fn node_key(parent: &str, step: Step<'_>) -> String {
    match step {
        Step::Prop(k) => format!("{parent}/p/{k}"),
        Step::Additional => format!("{parent}/a"),
        Step::Items => format!("{parent}/i"),
    }
}

pub(crate) enum Step<'a> {
    Prop(&'a str),
    Additional,
    Items,
}
