//! A version's openAPIV3Schema parsed into a tree (upstream's schema.Structural plus the value
//! validations), and the structural-schema rules (pkg/apiserver/schema/validation.go).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{child, index, key, FieldError};

/// One `x-kubernetes-validations` entry.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rule {
    pub rule: String,
    pub message: String,
    pub message_expression: String,
    pub reason: String,
    pub field_path: String,
    pub optional_old_self: Option<bool>,
}

/// One schema node. The same shape serves structural nodes and the value validations nested in
/// allOf/anyOf/oneOf/not, as JSONSchemaProps does upstream.
#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    pub ty: String,
    pub format: String,
    pub title: String,
    pub description: String,
    pub nullable: bool,
    pub default: Option<Value>,
    pub properties: BTreeMap<String, Node>,
    /// `additionalProperties` as a schema; `Some(None)` for a boolean.
    pub additional: Option<Option<Box<Node>>>,
    pub additional_allows: bool,
    pub items: Option<Box<Node>>,
    pub required: Vec<String>,
    pub enumeration: Option<Vec<Value>>,
    pub maximum: Option<f64>,
    pub exclusive_maximum: bool,
    pub minimum: Option<f64>,
    pub exclusive_minimum: bool,
    pub multiple_of: Option<f64>,
    pub max_length: Option<i64>,
    pub min_length: Option<i64>,
    pub max_items: Option<i64>,
    pub min_items: Option<i64>,
    pub max_properties: Option<i64>,
    pub min_properties: Option<i64>,
    pub pattern: Option<String>,
    /// `pattern` compiled once, with Go's (RE2's) ASCII meaning of \d, \w, \s and \b.
    pub pattern_re: Option<Result<regex::Regex, String>>,
    pub unique_items: bool,
    pub preserve_unknown: bool,
    pub embedded: bool,
    pub int_or_string: bool,
    pub list_type: Option<String>,
    pub list_map_keys: Vec<String>,
    pub map_type: Option<String>,
    pub all_of: Vec<Node>,
    pub any_of: Vec<Node>,
    pub one_of: Vec<Node>,
    pub not: Option<Box<Node>>,
    pub validations: Vec<Rule>,
    /// `format` normalised when it is one the format validator checks (`format::known`),
    /// worked out once here rather than on every value validated.
    pub known_format: Option<String>,
    /// What this node and the nodes below it (through properties, additionalProperties and
    /// items) have, so the per-object walks can skip subtrees with nothing to do.
    pub below: Below,
}

/// What a node or one below it has (see [`Node::below`]). Every flag is true when not worked
/// out (a node not made by [`Node::parse`]): a walk then visits the subtree as it would anyway.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Below {
    /// `x-kubernetes-embedded-resource`.
    pub embedded: bool,
    /// `x-kubernetes-list-type` set or map.
    pub list_type: bool,
    /// `x-kubernetes-validations` rules.
    pub rules: bool,
}

impl Default for Below {
    fn default() -> Self {
        Below {
            embedded: true,
            list_type: true,
            rules: true,
        }
    }
}

fn s(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}
fn b(v: &Value, k: &str) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(false)
}
fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}
fn i(v: &Value, k: &str) -> Option<i64> {
    v.get(k)
        .and_then(|x| x.as_i64().or_else(|| x.as_f64().map(|f| f as i64)))
}

impl Node {
    pub(crate) fn parse(v: &Value) -> Node {
        let list = |k: &str| -> Vec<Node> {
            v.get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().map(Node::parse).collect())
                .unwrap_or_default()
        };
        let (additional, additional_allows) = match v.get("additionalProperties") {
            Some(Value::Bool(allows)) => (Some(None), *allows),
            Some(o @ Value::Object(_)) => (Some(Some(Box::new(Node::parse(o)))), true),
            _ => (None, true),
        };
        let mut node = Node {
            ty: s(v, "type"),
            known_format: v
                .get("format")
                .and_then(Value::as_str)
                .and_then(crate::format::known),
            below: Below::default(),
            format: s(v, "format"),
            title: s(v, "title"),
            description: s(v, "description"),
            nullable: b(v, "nullable"),
            default: v.get("default").filter(|d| !d.is_null()).cloned(),
            properties: v
                .get("properties")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, p)| (k.clone(), Node::parse(p))).collect())
                .unwrap_or_default(),
            additional,
            additional_allows,
            items: v
                .get("items")
                .filter(|x| x.is_object())
                .map(|x| Box::new(Node::parse(x))),
            required: v
                .get("required")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            enumeration: v.get("enum").and_then(Value::as_array).cloned(),
            maximum: f(v, "maximum"),
            exclusive_maximum: b(v, "exclusiveMaximum"),
            minimum: f(v, "minimum"),
            exclusive_minimum: b(v, "exclusiveMinimum"),
            multiple_of: f(v, "multipleOf"),
            max_length: i(v, "maxLength"),
            min_length: i(v, "minLength"),
            max_items: i(v, "maxItems"),
            min_items: i(v, "minItems"),
            max_properties: i(v, "maxProperties"),
            min_properties: i(v, "minProperties"),
            pattern: v
                .get("pattern")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .map(str::to_string),
            pattern_re: v
                .get("pattern")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .map(|p| regex::Regex::new(&go_regex(p)).map_err(|e| e.to_string())),
            unique_items: b(v, "uniqueItems"),
            preserve_unknown: b(v, "x-kubernetes-preserve-unknown-fields"),
            embedded: b(v, "x-kubernetes-embedded-resource"),
            int_or_string: b(v, "x-kubernetes-int-or-string"),
            list_type: v
                .get("x-kubernetes-list-type")
                .and_then(Value::as_str)
                .map(str::to_string),
            list_map_keys: v
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            map_type: v
                .get("x-kubernetes-map-type")
                .and_then(Value::as_str)
                .map(str::to_string),
            all_of: list("allOf"),
            any_of: list("anyOf"),
            one_of: list("oneOf"),
            not: v
                .get("not")
                .filter(|x| x.is_object())
                .map(|x| Box::new(Node::parse(x))),
            validations: v
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|r| Rule {
                            rule: s(r, "rule"),
                            message: s(r, "message"),
                            message_expression: s(r, "messageExpression"),
                            reason: s(r, "reason"),
                            field_path: s(r, "fieldPath"),
                            optional_old_self: r.get("optionalOldSelf").and_then(Value::as_bool),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        node.below = node.work_out_below();
        node
    }

    /// [`Node::below`] from this node and its (already parsed) children.
    fn work_out_below(&self) -> Below {
        let own = Below {
            embedded: self.embedded,
            list_type: matches!(self.list_type.as_deref(), Some("set" | "map")),
            rules: !self.validations.is_empty(),
        };
        self.properties
            .values()
            .chain(self.additional_schema())
            .chain(self.items.as_deref())
            .fold(own, |acc, c| Below {
                embedded: acc.embedded || c.below.embedded,
                list_type: acc.list_type || c.below.list_type,
                rules: acc.rules || c.below.rules,
            })
    }

    /// The schema of additionalProperties, when it is one.
    pub(crate) fn additional_schema(&self) -> Option<&Node> {
        self.additional.as_ref().and_then(|a| a.as_deref())
    }

    /// The schema a child key of an object value is checked against.
    pub(crate) fn field(&self, k: &str) -> Option<&Node> {
        self.properties.get(k).or_else(|| self.additional_schema())
    }

    fn has_value_validation(&self) -> bool {
        !(self.all_of.is_empty()
            && self.any_of.is_empty()
            && self.one_of.is_empty()
            && self.not.is_none())
    }
}

/// An RE2 pattern for Rust's regex: the Perl classes are ASCII in Go, Unicode here by default.
pub(crate) fn go_regex(p: &str) -> String {
    let mut out = String::with_capacity(p.len() + 8);
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str("[0-9]"),
            Some('D') => out.push_str("[^0-9]"),
            Some('w') => out.push_str("[0-9A-Za-z_]"),
            Some('W') => out.push_str("[^0-9A-Za-z_]"),
            Some('s') => out.push_str("[\\t\\n\\f\\r ]"),
            Some('S') => out.push_str("[^\\t\\n\\f\\r ]"),
            Some('b') => out.push_str("(?-u:\\b)"),
            Some('B') => out.push_str("(?-u:\\B)"),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// A version's parsed openAPIV3Schema.
#[derive(Debug, Clone)]
pub struct Structural {
    pub(crate) root: Node,
    raw: Value,
    pub(crate) rules: crate::cel_rules::Compiled,
}

#[derive(Clone, Copy, PartialEq)]
enum Level {
    Root,
    Item,
    Field,
}

impl Structural {
    /// Parses a schema and checks that it is structural (upstream's NewStructural +
    /// ValidateStructural); errors are relative to the schema (`properties[spec].type`).
    pub fn from_schema(schema: &Value) -> Result<Structural, Vec<FieldError>> {
        Self::from_schema_at(schema, "")
    }

    pub(crate) fn from_schema_at(
        schema: &Value,
        path: &str,
    ) -> Result<Structural, Vec<FieldError>> {
        if !schema.is_object() {
            return Err(vec![FieldError::required(path.to_string(), "")]);
        }
        let root = Node::parse(schema);
        let mut errs = validate_structural(&root, path);
        if !errs.is_empty() {
            return Err(errs);
        }
        match crate::cel_rules::Compiled::compile(&root, path) {
            Ok(rules) => Ok(Structural {
                root,
                raw: schema.clone(),
                rules,
            }),
            Err(e) => {
                errs.extend(e);
                Err(errs)
            }
        }
    }

    /// A schema of one node without CEL rules (to check a default against its own node).
    pub(crate) fn single(root: Node) -> Structural {
        Structural {
            root,
            raw: Value::Null,
            rules: crate::cel_rules::Compiled::default(),
        }
    }

    /// The schema as given (for OpenAPI publishing and `kubectl explain`).
    pub fn schema(&self) -> &Value {
        &self.raw
    }

    /// The list semantics at a path of field names (array indexes not included), for
    /// server-side apply: `("atomic" | "set" | "map", map keys)`; `None` when the path does not
    /// lead to an array. Unset list types are atomic, as upstream.
    pub fn list_type(&self, path: &[&str]) -> Option<(String, Vec<String>)> {
        let mut n = &self.root;
        for p in path {
            // Arrays of arrays/objects are walked through their items transparently.
            while n.ty == "array" {
                n = n.items.as_deref()?;
            }
            n = n.field(p)?;
        }
        if n.ty != "array" {
            return None;
        }
        let t = n.list_type.clone().unwrap_or_else(|| "atomic".into());
        Some((t, n.list_map_keys.clone()))
    }

    /// The map semantics (`x-kubernetes-map-type`) at a path: "granular" (default) or "atomic".
    pub fn map_type(&self, path: &[&str]) -> Option<String> {
        let mut n = &self.root;
        for p in path {
            while n.ty == "array" {
                n = n.items.as_deref()?;
            }
            n = n.field(p)?;
        }
        (n.ty == "object").then(|| n.map_type.clone().unwrap_or_else(|| "granular".into()))
    }

    /// Whether the schema has x-kubernetes-validations rules anywhere.
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }
}

/// ValidateStructural: invariants then completeness, sorted by their text as upstream.
fn validate_structural(root: &Node, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    invariants(root, Level::Root, path, &mut errs);
    completeness_vv(root, root, path, path, &mut errs);
    errs.sort_by_key(|e| e.to_string());
    errs
}

fn is_int_or_string_any_of(any_of: &[Node]) -> bool {
    let plain = |n: &Node, t: &str| {
        n.ty == t
            && n.properties.is_empty()
            && n.items.is_none()
            && !n.has_value_validation()
            && n.format.is_empty()
    };
    any_of.len() == 2 && plain(&any_of[0], "integer") && plain(&any_of[1], "string")
}

fn invariants(s: &Node, lvl: Level, path: &str, errs: &mut Vec<FieldError>) {
    if s.ty == "array" && s.items.is_none() {
        errs.push(FieldError::required(
            child(path, "items"),
            "must be specified",
        ));
    }
    if let Some(items) = &s.items {
        invariants(items, Level::Item, &child(path, "items"), errs);
    }
    for (k, p) in &s.properties {
        invariants(p, Level::Field, &key(&child(path, "properties"), k), errs);
    }
    if let Some(a) = &s.additional {
        if lvl == Level::Root {
            errs.push(FieldError::forbidden(
                child(path, "additionalProperties"),
                "must not be used at the root",
            ));
        }
        if let Some(a) = a {
            invariants(a, Level::Field, &child(path, "additionalProperties"), errs);
        }
    }
    if s.int_or_string && s.preserve_unknown {
        errs.push(FieldError::invalid(
            child(path, "x-kubernetes-preserve-unknown-fields"),
            Value::Bool(true),
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }
    if s.int_or_string && s.embedded {
        errs.push(FieldError::invalid(
            child(path, "x-kubernetes-embedded-resource"),
            Value::Bool(true),
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }
    let skip_any_of = is_int_or_string_any_of(&s.any_of);
    let skip_first_all_of_any_of = s
        .all_of
        .first()
        .is_some_and(|a| is_int_or_string_any_of(&a.any_of));
    value_validation(s, skip_any_of, skip_first_all_of_any_of, lvl, path, errs);

    let check_metadata = lvl == Level::Root || s.embedded;
    if s.embedded && s.ty != "object" {
        if s.ty.is_empty() {
            errs.push(FieldError::required(
                child(path, "type"),
                "must be object if x-kubernetes-embedded-resource is true",
            ));
        } else {
            errs.push(FieldError::invalid_str(
                child(path, "type"),
                &s.ty,
                "must be object if x-kubernetes-embedded-resource is true",
            ));
        }
    } else if s.ty.is_empty() && !s.int_or_string && !s.preserve_unknown {
        let m = match lvl {
            Level::Root => "must not be empty at the root",
            Level::Item => "must not be empty for specified array items",
            Level::Field => "must not be empty for specified object fields",
        };
        errs.push(FieldError::required(child(path, "type"), m));
    }
    if s.embedded && s.additional.is_some() {
        errs.push(FieldError::forbidden(
            child(path, "additionalProperties"),
            "must not be used if x-kubernetes-embedded-resource is set",
        ));
    }
    if lvl == Level::Root && !s.ty.is_empty() && s.ty != "object" {
        errs.push(FieldError::invalid_str(
            child(path, "type"),
            &s.ty,
            "must be object at the root",
        ));
    }
    let props = child(path, "properties");
    for (name, want) in [("kind", "string"), ("apiVersion", "string")] {
        if let Some(p) = s.properties.get(name) {
            if check_metadata && p.ty != want {
                errs.push(FieldError::invalid_str(
                    child(&key(&props, name), "type"),
                    &p.ty,
                    "must be string",
                ));
            }
        }
    }
    if let Some(m) = s.properties.get("metadata") {
        let mpath = key(&props, "metadata");
        if check_metadata && m.ty != "object" {
            errs.push(FieldError::invalid_str(
                child(&mpath, "type"),
                &m.ty,
                "must be object",
            ));
        }
        if lvl == Level::Root {
            // Only name and generateName (and type/default) may be said about root metadata.
            let names_only = m
                .properties
                .keys()
                .all(|k| k == "name" || k == "generateName");
            let mut rest = m.clone();
            if names_only {
                rest.properties.clear();
            }
            rest.ty.clear();
            rest.default = None;
            if !is_empty_node(&rest) {
                errs.push(FieldError::forbidden(
                    mpath,
                    "must not specify anything other than name and generateName, but metadata is implicitly specified",
                ));
            }
        }
    }
    if s.embedded && !s.preserve_unknown && s.properties.is_empty() {
        errs.push(FieldError::required(
            child(path, "properties"),
            "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
        ));
    }
}

fn is_empty_node(n: &Node) -> bool {
    let d = Node::default();
    n.ty == d.ty
        && n.format.is_empty()
        && n.title.is_empty()
        && n.description.is_empty()
        && !n.nullable
        && n.default.is_none()
        && n.properties.is_empty()
        && n.additional.is_none()
        && n.items.is_none()
        && n.required.is_empty()
        && n.enumeration.is_none()
        && n.maximum.is_none()
        && n.minimum.is_none()
        && n.multiple_of.is_none()
        && n.max_length.is_none()
        && n.min_length.is_none()
        && n.max_items.is_none()
        && n.min_items.is_none()
        && n.max_properties.is_none()
        && n.min_properties.is_none()
        && n.pattern.is_none()
        && !n.unique_items
        && !n.preserve_unknown
        && !n.embedded
        && !n.int_or_string
        && n.list_type.is_none()
        && n.list_map_keys.is_empty()
        && n.map_type.is_none()
        && !n.has_value_validation()
        && n.validations.is_empty()
}

fn value_validation(
    v: &Node,
    skip_any_of: bool,
    skip_first_all_of_any_of: bool,
    lvl: Level,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    if !skip_any_of {
        for (i, n) in v.any_of.iter().enumerate() {
            nested(n, false, false, lvl, &index(&child(path, "anyOf"), i), errs);
        }
    }
    for (i, n) in v.all_of.iter().enumerate() {
        nested(
            n,
            skip_first_all_of_any_of && i == 0,
            false,
            lvl,
            &index(&child(path, "allOf"), i),
            errs,
        );
    }
    for (i, n) in v.one_of.iter().enumerate() {
        nested(n, false, false, lvl, &index(&child(path, "oneOf"), i), errs);
    }
    if let Some(n) = &v.not {
        nested(n, false, false, lvl, &child(path, "not"), errs);
    }
}

fn nested(
    v: &Node,
    skip_any_of: bool,
    skip_all_of_any_of: bool,
    lvl: Level,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    value_validation(v, skip_any_of, skip_all_of_any_of, lvl, path, errs);
    if let Some(items) = &v.items {
        nested(items, false, false, lvl, &child(path, "items"), errs);
    }
    for (k, p) in &v.properties {
        nested(
            p,
            false,
            false,
            Level::Field,
            &key(&child(path, "properties"), k),
            errs,
        );
    }
    let forbid = |errs: &mut Vec<FieldError>, cond: bool, name: &str, text: &str| {
        if cond {
            errs.push(FieldError::forbidden(child(path, name), text));
        }
    };
    forbid(
        errs,
        !v.ty.is_empty(),
        "type",
        "must be empty to be structural",
    );
    forbid(
        errs,
        v.additional.is_some(),
        "additionalProperties",
        "must be undefined to be structural",
    );
    forbid(
        errs,
        v.default.is_some(),
        "default",
        "must be undefined to be structural",
    );
    forbid(
        errs,
        !v.title.is_empty(),
        "title",
        "must be empty to be structural",
    );
    forbid(
        errs,
        !v.description.is_empty(),
        "description",
        "must be empty to be structural",
    );
    forbid(
        errs,
        v.nullable,
        "nullable",
        "must be false to be structural",
    );
    forbid(
        errs,
        v.preserve_unknown,
        "x-kubernetes-preserve-unknown-fields",
        "must be false to be structural",
    );
    forbid(
        errs,
        v.embedded,
        "x-kubernetes-embedded-resource",
        "must be false to be structural",
    );
    forbid(
        errs,
        v.int_or_string,
        "x-kubernetes-int-or-string",
        "must be false to be structural",
    );
    forbid(
        errs,
        !v.list_map_keys.is_empty(),
        "x-kubernetes-list-map-keys",
        "must be empty to be structural",
    );
    forbid(
        errs,
        v.list_type.is_some(),
        "x-kubernetes-list-type",
        "must be undefined to be structural",
    );
    forbid(
        errs,
        v.map_type.is_some(),
        "x-kubernetes-map-type",
        "must be undefined to be structural",
    );
    forbid(
        errs,
        !v.validations.is_empty(),
        "x-kubernetes-validations",
        "must be empty to be structural",
    );
    if v.properties.contains_key("metadata") {
        errs.push(FieldError::forbidden(
            key(&child(path, "properties"), "metadata"),
            "must not be specified in a nested context",
        ));
    }
}

/// Completeness: every property a value validation names must be specified structurally.
fn completeness_vv(v: &Node, s: &Node, s_path: &str, v_path: &str, errs: &mut Vec<FieldError>) {
    if let Some(n) = &v.not {
        completeness_nested(n, s, s_path, &child(v_path, "not"), errs);
    }
    for (i, n) in v.all_of.iter().enumerate() {
        completeness_nested(n, s, s_path, &index(&child(v_path, "allOf"), i), errs);
    }
    for (i, n) in v.any_of.iter().enumerate() {
        completeness_nested(n, s, s_path, &index(&child(v_path, "anyOf"), i), errs);
    }
    for (i, n) in v.one_of.iter().enumerate() {
        completeness_nested(n, s, s_path, &index(&child(v_path, "oneOf"), i), errs);
    }
}

fn completeness_nested(v: &Node, s: &Node, s_path: &str, v_path: &str, errs: &mut Vec<FieldError>) {
    completeness_vv(v, s, s_path, v_path, errs);
    let empty = Node::default();
    if let Some(items) = &v.items {
        let si = s.items.as_deref().unwrap_or(&empty);
        completeness_nested(
            items,
            si,
            &child(s_path, "items"),
            &child(v_path, "items"),
            errs,
        );
    }
    for (k, vf) in &v.properties {
        let vp = key(&child(v_path, "properties"), k);
        match s.properties.get(k) {
            None => errs.push(FieldError::required(
                key(&child(s_path, "properties"), k),
                &format!("because it is defined in {vp}"),
            )),
            Some(sf) => {
                completeness_nested(vf, sf, &key(&child(s_path, "properties"), k), &vp, errs)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn patterns_have_go_semantics() {
        let re = regex::Regex::new(&super::go_regex(r"^\d+\s[\w-]+$")).unwrap();
        assert!(re.is_match("12 a-b_c"));
        // RE2's \d and \w are ASCII: Arabic-Indic digits and accented letters do not match.
        assert!(!re.is_match("١٢ a"));
        assert!(!re.is_match("12 é"));
        assert_eq!(super::go_regex(r"a\\d\."), r"a\\d\.");
    }
}
