//! Whole-CRD validation (apiextensions' ValidateCustomResourceDefinition[Update]) on the v1
//! JSON: metadata.name, group, names, scope, versions, conversion, subresources, printer
//! columns, and each version's schema (OpenAPI restrictions, structural, defaults, CEL).

use serde_json::Value;

use crate::cel_rules::{node_key, Step};
use crate::schema::{Node, Structural};
use crate::{child, goformat, index, key, names, Bad, FieldError, NOT_SUPPORTED};

const PRINTER_TYPES: [&str; 5] = ["boolean", "date", "integer", "number", "string"];
const PRINTER_FORMATS: [&str; 8] = [
    "byte",
    "date",
    "date-time",
    "double",
    "float",
    "int32",
    "int64",
    "password",
];
const OPENAPI_TYPES: [&str; 6] = ["array", "boolean", "integer", "number", "object", "string"];
const ROOT_ALLOWED: [&str; 22] = [
    "description",
    "type",
    "format",
    "title",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "multipleOf",
    "required",
    "items",
    "properties",
    "externalDocs",
    "example",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
];
const APPROVAL: &str = "api-approved.kubernetes.io";

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

/// Whole-CRD validation at create (`old` None) or update (`old` the stored CRD).
pub fn validate_crd(crd: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let group = str_at(&spec, &["group"]);
    let plural = str_at(&spec, &["names", "plural"]);

    // metadata.name
    let name = str_at(crd, &["metadata", "name"]);
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        let mut msgs = names::dns1123_subdomain(name);
        if name != format!("{plural}.{group}") {
            msgs.push("must be spec.names.plural+\".\"+spec.group".to_string());
        }
        for m in msgs {
            errs.push(FieldError::invalid_str("metadata.name", name, &m));
        }
    }

    spec_errors(&spec, old, &mut errs);

    // Update-only rules.
    if let Some(old) = old {
        let old_spec = old.get("spec").cloned().unwrap_or(Value::Null);
        let established = old
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter().any(|c| {
                    str_at(c, &["type"]) == "Established" && str_at(c, &["status"]) == "True"
                })
            });
        let mut immutable = |path: &str, field: &[&str]| {
            let (n, o) = (str_at(&spec, field), str_at(&old_spec, field));
            if n != o {
                errs.push(FieldError::invalid_str(path, n, "field is immutable"));
            }
        };
        if established {
            immutable("spec.scope", &["scope"]);
            immutable("spec.names.kind", &["names", "kind"]);
        }
        immutable("spec.group", &["group"]);
        immutable("spec.names.plural", &["names", "plural"]);
    }

    // API approval for the protected community groups.
    let protected = group == "k8s.io"
        || group.ends_with(".k8s.io")
        || group == "kubernetes.io"
        || group.ends_with(".kubernetes.io");
    if protected {
        let state = |c: &Value| -> (u8, String) {
            let a = str_at(c, &["metadata", "annotations", APPROVAL]);
            if a.is_empty() {
                (0, format!("protected groups must have approval annotation {}, see https://github.com/kubernetes/enhancements/pull/1111", goformat::quote(APPROVAL)))
            } else if a.starts_with("unapproved") {
                (1, String::new())
            } else if let Some((scheme, rest)) = a
                .split_once("://")
                .filter(|(s, r)| !s.is_empty() && !r.is_empty() && !r.starts_with('/'))
            {
                let _ = (scheme, rest);
                (2, String::new())
            } else {
                (3, format!("protected groups must have approval annotation {} with either a URL or a reason starting with \"unapproved\", see https://github.com/kubernetes/enhancements/pull/1111", goformat::quote(APPROVAL)))
            }
        };
        let (new_state, reason) = state(crd);
        let unchanged = old.is_some_and(|o| state(o).0 == new_state);
        let field = key("metadata.annotations", APPROVAL);
        if !unchanged {
            match new_state {
                0 => errs.push(FieldError::required(field, &reason)),
                3 => errs.push(FieldError::invalid_str(
                    field,
                    str_at(crd, &["metadata", "annotations", APPROVAL]),
                    &reason,
                )),
                _ => {}
            }
        }
    }

    // spec.preserveUnknownFields may not be turned on in v1.
    let old_preserve = old
        .and_then(|o| o.pointer("/spec/preserveUnknownFields"))
        .and_then(Value::as_bool)
        == Some(true);
    if !old_preserve && spec.get("preserveUnknownFields").and_then(Value::as_bool) == Some(true) {
        errs.push(FieldError::invalid(
            "spec.preserveUnknownFields",
            Value::Bool(true),
            "cannot set to true, set x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead",
        ));
    }
    errs
}

fn spec_errors(spec: &Value, _old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let group = str_at(spec, &["group"]);
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    } else {
        let e = names::dns1123_subdomain(group);
        if !e.is_empty() {
            errs.push(FieldError::invalid_str("spec.group", group, &e.join(",")));
        } else if !group.contains('.') {
            errs.push(FieldError::invalid_str(
                "spec.group",
                group,
                "should be a domain with at least one dot",
            ));
        }
    }
    match str_at(spec, &["scope"]) {
        "" => errs.push(FieldError::required("spec.scope", "")),
        "Cluster" | "Namespaced" => {}
        other => errs.push(FieldError::not_supported(
            "spec.scope",
            Bad::Str(other.into()),
            &["Cluster", "Namespaced"],
        )),
    }

    let versions: Vec<Value> = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let preserve = spec.get("preserveUnknownFields").and_then(Value::as_bool) == Some(true);
    let has_defaults = versions.iter().any(|v| {
        v.pointer("/schema/openAPIV3Schema")
            .is_some_and(schema_has_defaults)
    });
    if has_defaults && preserve {
        errs.push(FieldError::invalid(
            "spec.preserveUnknownFields",
            Value::Bool(true),
            "must be false in order to use defaults in the schema",
        ));
    }
    let mut storage = 0;
    let mut seen = std::collections::HashSet::new();
    let mut unique = true;
    for (i, v) in versions.iter().enumerate() {
        let vpath = index("spec.versions", i);
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            storage += 1;
        }
        let vname = str_at(v, &["name"]);
        if !seen.insert(vname.to_string()) {
            unique = false;
        }
        let e = names::dns1035_label(vname);
        if !e.is_empty() {
            errs.push(FieldError::invalid_str(
                child(&vpath, "name"),
                vname,
                &e.join(","),
            ));
        }
        version_errors(v, &vpath, errs);
    }
    let versions_value = Value::Array(versions.clone());
    if !unique {
        errs.push(FieldError::invalid(
            "spec.versions",
            versions_value.clone(),
            "must contain unique version names",
        ));
    }
    if storage != 1 {
        errs.push(FieldError::invalid(
            "spec.versions",
            versions_value,
            "must have exactly one version marked as storage version",
        ));
    }

    // names
    let n = spec.get("names").cloned().unwrap_or(Value::Null);
    for (f, label) in [
        ("plural", "plural"),
        ("singular", "singular"),
        ("kind", "kind"),
        ("listKind", "listKind"),
    ] {
        if str_at(&n, &[f]).is_empty() {
            errs.push(FieldError::required(format!("spec.names.{label}"), ""));
        }
    }
    names_errors(&n, errs);

    // conversion
    if let Some(c) = spec.get("conversion").filter(|c| c.is_object()) {
        let strategy = str_at(c, &["strategy"]);
        match strategy {
            "" => errs.push(FieldError::required("spec.conversion.strategy", "")),
            "None" => {
                if c.get("webhook").is_some_and(|w| !w.is_null()) {
                    errs.push(FieldError::forbidden(
                        "spec.conversion.webhookClientConfig",
                        "should not be set when strategy is not set to Webhook",
                    ));
                }
            }
            // Conversion webhooks are valid upstream; rktup cannot call them yet, so it refuses
            // the CRD instead of serving versions it could not convert.
            "Webhook" => errs.push(FieldError::new(
                NOT_SUPPORTED,
                "spec.conversion.strategy",
                Bad::Str(strategy.into()),
                "supported values: \"None\" (conversion webhooks are not supported by rktup yet)",
            )),
            other => errs.push(FieldError::not_supported(
                "spec.conversion.strategy",
                Bad::Str(other.into()),
                &["None", "Webhook"],
            )),
        }
    }
}

fn names_errors(n: &Value, errs: &mut Vec<FieldError>) {
    for f in ["plural", "singular"] {
        let s = str_at(n, &[f]);
        let e = names::dns1035_label(s);
        if !s.is_empty() && !e.is_empty() {
            errs.push(FieldError::invalid_str(
                format!("spec.names.{f}"),
                s,
                &e.join(","),
            ));
        }
    }
    for f in ["kind", "listKind"] {
        let s = str_at(n, &[f]);
        let e = names::dns1035_label(&s.to_lowercase());
        if !s.is_empty() && !e.is_empty() {
            errs.push(FieldError::invalid_str(
                format!("spec.names.{f}"),
                s,
                &format!(
                    "may have mixed case, but should otherwise match: {}",
                    e.join(",")
                ),
            ));
        }
    }
    for list in ["shortNames", "categories"] {
        for (i, s) in n
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let s = s.as_str().unwrap_or("");
            let e = names::dns1035_label(s);
            if !e.is_empty() {
                errs.push(FieldError::invalid_str(
                    index(&format!("spec.names.{list}"), i),
                    s,
                    &e.join(","),
                ));
            }
        }
    }
    let kind = str_at(n, &["kind"]);
    if !kind.is_empty() && kind == str_at(n, &["listKind"]) {
        errs.push(FieldError::invalid_str(
            "spec.names.listKind",
            kind,
            "kind and listKind may not be the same",
        ));
    }
}

fn simple_json_path(s: &str, path: &str, errs: &mut Vec<FieldError>) -> bool {
    if s.is_empty() {
        errs.push(FieldError::invalid_str(path, s, "must not be empty"));
        false
    } else if !s.starts_with('.') {
        errs.push(FieldError::invalid_str(
            path,
            s,
            "must be a simple json path starting with .",
        ));
        false
    } else {
        true
    }
}

fn version_errors(v: &Value, vpath: &str, errs: &mut Vec<FieldError>) {
    let status_enabled = v
        .pointer("/subresources/status")
        .is_some_and(|s| !s.is_null());
    let spath = child(vpath, "schema");
    match v
        .pointer("/schema/openAPIV3Schema")
        .filter(|s| s.is_object())
    {
        None => errs.push(FieldError::required(child(&spath, "openAPIV3Schema"), "")),
        Some(schema) => schema_errors(schema, &spath, status_enabled, errs),
    }
    // subresources.scale
    if let Some(scale) = v.pointer("/subresources/scale").filter(|s| s.is_object()) {
        let sub = child(vpath, "subresources");
        let spec_path = str_at(scale, &["specReplicasPath"]);
        let p = child(&sub, "scale.specReplicasPath");
        if spec_path.is_empty() {
            errs.push(FieldError::required(p, ""));
        } else if simple_json_path(spec_path, &p, errs) && !spec_path.starts_with(".spec.") {
            errs.push(FieldError::invalid_str(
                p,
                spec_path,
                "should be a json path under .spec",
            ));
        }
        let status_path = str_at(scale, &["statusReplicasPath"]);
        let p = child(&sub, "scale.statusReplicasPath");
        if status_path.is_empty() {
            errs.push(FieldError::required(p, ""));
        } else if simple_json_path(status_path, &p, errs) && !status_path.starts_with(".status.") {
            errs.push(FieldError::invalid_str(
                p,
                status_path,
                "should be a json path under .status",
            ));
        }
        let sel = str_at(scale, &["labelSelectorPath"]);
        let p = child(&sub, "scale.labelSelectorPath");
        if !sel.is_empty()
            && simple_json_path(sel, &p, errs)
            && !sel.starts_with(".spec.")
            && !sel.starts_with(".status.")
        {
            errs.push(FieldError::invalid_str(
                p,
                sel,
                "should be a json path under either .spec or .status",
            ));
        }
    }
    // additionalPrinterColumns
    for (i, col) in v
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let cpath = index(&child(vpath, "additionalPrinterColumns"), i);
        if str_at(col, &["name"]).is_empty() {
            errs.push(FieldError::required(child(&cpath, "name"), ""));
        }
        let types = format!("must be one of {}", PRINTER_TYPES.join(","));
        match str_at(col, &["type"]) {
            "" => errs.push(FieldError::required(child(&cpath, "type"), &types)),
            t if !PRINTER_TYPES.contains(&t) => {
                errs.push(FieldError::invalid_str(child(&cpath, "type"), t, &types))
            }
            _ => {}
        }
        let f = str_at(col, &["format"]);
        if !f.is_empty() && !PRINTER_FORMATS.contains(&f) {
            errs.push(FieldError::invalid_str(
                child(&cpath, "format"),
                f,
                &format!("must be one of {}", PRINTER_FORMATS.join(",")),
            ));
        }
        let jp = str_at(col, &["jsonPath"]);
        let p = child(&cpath, "JSONPath");
        if jp.is_empty() {
            errs.push(FieldError::required(p, ""));
        } else if simple_json_path(jp, &p, errs) {
            // The table convertor must be able to parse it, or the CRD could not be served.
            if crate::JsonPath::parse(jp).is_err() {
                errs.push(FieldError::invalid_str(
                    p,
                    jp,
                    "must be a json path in the dot notation",
                ));
            }
        }
    }
}

fn schema_has_defaults(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key("default") || m.values().any(schema_has_defaults),
        Value::Array(a) => a.iter().any(schema_has_defaults),
        _ => false,
    }
}

fn schema_errors(schema: &Value, spath: &str, status_enabled: bool, errs: &mut Vec<FieldError>) {
    let root = child(spath, "openAPIV3Schema");
    if status_enabled {
        let ty = str_at(schema, &["type"]);
        if !ty.is_empty() && ty != "object" {
            errs.push(FieldError::invalid_str(
                format!("{spath}.openAPIV3Schema.type"),
                ty,
                "only \"object\" is allowed as the type at the root of the schema if the status subresource is enabled",
            ));
        } else if let Some(m) = schema.as_object() {
            if m.iter()
                .any(|(k, v)| !ROOT_ALLOWED.contains(&k.as_str()) && !is_zero(v))
            {
                errs.push(FieldError::invalid(
                    root.clone(),
                    schema.clone(),
                    "only [Description Type Format Title Maximum ExclusiveMaximum Minimum ExclusiveMinimum MaxLength MinLength Pattern MaxItems MinItems UniqueItems MultipleOf Required Items Properties ExternalDocs Example XPreserveUnknownFields XValidations] fields are allowed at the root of the schema if the status subresource is enabled",
                ));
            }
        }
    }
    if schema.get("nullable").and_then(Value::as_bool) == Some(true) {
        errs.push(FieldError::forbidden(
            format!("{spath}.openAPIV3Schema.nullable"),
            "nullable cannot be true at the root",
        ));
    }
    let mut schema_errs = Vec::new();
    openapi_checks(
        schema,
        &root,
        Ctx {
            is_root: true,
            ..Ctx::default()
        },
        &mut schema_errs,
    );
    let before = errs.len();
    match Structural::from_schema_at(schema, &root) {
        Err(e) => errs.extend(e),
        Ok(s) => {
            let mut d = Vec::new();
            defaults(&s, &s.root, "", &root, true, &mut d);
            errs.extend(d);
        }
    }
    // CEL compile errors (from from_schema_at) only count when the schema is otherwise sound,
    // as upstream compiles rules only then.
    if !schema_errs.is_empty() {
        let structural: Vec<FieldError> = errs
            .drain(before..)
            .filter(|e| !e.field.contains("x-kubernetes-validations["))
            .collect();
        errs.extend(structural);
    }
    errs.extend(schema_errs);
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

#[derive(Clone, Default)]
struct Ctx {
    is_root: bool,
    inside_meta: bool,
    forbid_defaults: Option<String>,
}

/// ValidateCustomResourceDefinitionOpenAPISchema + specStandardValidatorV3 on the raw schema.
fn openapi_checks(s: &Value, path: &str, ctx: Ctx, errs: &mut Vec<FieldError>) {
    let Some(m) = s.as_object() else { return };
    let ty = str_at(s, &["type"]);
    let props = m.get("properties").and_then(Value::as_object);

    // specStandardValidatorV3.validate
    if !ty.is_empty() && !OPENAPI_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported(
            child(path, "type"),
            Bad::Str(ty.into()),
            &OPENAPI_TYPES,
        ));
    }
    if m.contains_key("default") {
        if let Some(reason) = &ctx.forbid_defaults {
            errs.push(FieldError::forbidden(
                child(path, "default"),
                &format!("must not be set {reason}"),
            ));
        }
    }
    for (k, text) in [
        ("id", "id is not supported"),
        ("additionalItems", "additionalItems is not supported"),
        ("patternProperties", "patternProperties is not supported"),
        ("definitions", "definitions is not supported"),
        ("dependencies", "dependencies is not supported"),
        ("$ref", "$ref is not supported"),
    ] {
        if m.get(k).is_some_and(|v| !is_zero(v)) {
            errs.push(FieldError::forbidden(
                child(path, if k == "id" { "id" } else { k }),
                text,
            ));
        }
    }
    if ty == "null" {
        errs.push(FieldError::forbidden(
            child(path, "type"),
            "type cannot be set to null, use nullable as an alternative",
        ));
    }
    if m.get("items").is_some_and(Value::is_array) {
        errs.push(FieldError::forbidden(
            child(path, "items"),
            "items must be a schema object and not an array",
        ));
    }
    if ctx.inside_meta
        && m.get("x-kubernetes-embedded-resource")
            .and_then(Value::as_bool)
            == Some(true)
    {
        errs.push(FieldError::forbidden(
            child(path, "x-kubernetes-embedded-resource"),
            "must not be used inside of resource meta",
        ));
    }

    if m.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
        errs.push(FieldError::forbidden(
            child(path, "uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    let sub = Ctx {
        is_root: false,
        ..ctx.clone()
    };
    if let Some(ap) = m.get("additionalProperties") {
        if props.is_some_and(|p| !p.is_empty()) && (ap == &Value::Bool(false) || ap.is_object()) {
            errs.push(FieldError::forbidden(
                child(path, "additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            ));
        }
        let mut c = sub.clone();
        if ctx.inside_meta {
            c.forbid_defaults =
                Some("inside additionalProperties applying to object metadata".into());
        }
        openapi_checks(ap, &child(path, "additionalProperties"), c, errs);
    }
    let embedded = m
        .get("x-kubernetes-embedded-resource")
        .and_then(Value::as_bool)
        == Some(true);
    if let Some(props) = props {
        for (k, p) in props {
            let mut c = sub.clone();
            if (ctx.is_root || embedded) && ["apiVersion", "kind", "metadata"].contains(&k.as_str())
            {
                c.inside_meta = true;
                if ctx.is_root {
                    c.forbid_defaults = Some(format!("in top-level {k}"));
                }
            }
            openapi_checks(p, &key(&child(path, "properties"), k), c, errs);
        }
    }
    if let Some(n) = m.get("not") {
        openapi_checks(n, &child(path, "not"), sub.clone(), errs);
    }
    for j in ["allOf", "oneOf", "anyOf"] {
        for (i, x) in m
            .get(j)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            openapi_checks(x, &index(&child(path, j), i), sub.clone(), errs);
        }
    }
    if let Some(items) = m.get("items").filter(|i| i.is_object()) {
        openapi_checks(items, &child(path, "items"), sub.clone(), errs);
    }

    if m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        errs.push(FieldError::invalid(
            child(path, "x-kubernetes-preserve-unknown-fields"),
            Value::Bool(false),
            "must be true or undefined",
        ));
    }
    let map_type = m.get("x-kubernetes-map-type").and_then(Value::as_str);
    if map_type.is_some() && ty != "object" {
        if ty.is_empty() {
            errs.push(FieldError::required(
                child(path, "type"),
                "must be object if x-kubernetes-map-type is specified",
            ));
        } else {
            errs.push(FieldError::invalid_str(
                child(path, "type"),
                ty,
                "must be object if x-kubernetes-map-type is specified",
            ));
        }
    }
    if let Some(mt) = map_type.filter(|t| *t != "atomic" && *t != "granular") {
        errs.push(FieldError::not_supported(
            child(path, "x-kubernetes-map-type"),
            Bad::Str(mt.into()),
            &["atomic", "granular"],
        ));
    }
    let list_type = m.get("x-kubernetes-list-type").and_then(Value::as_str);
    let items = m.get("items").filter(|i| i.is_object());
    if list_type.is_some() && ty != "array" {
        if ty.is_empty() {
            errs.push(FieldError::required(
                child(path, "type"),
                "must be array if x-kubernetes-list-type is specified",
            ));
        } else {
            errs.push(FieldError::invalid_str(
                child(path, "type"),
                ty,
                "must be array if x-kubernetes-list-type is specified",
            ));
        }
    } else if list_type == Some("set") {
        if let Some(is) = items {
            match str_at(is, &["type"]) {
                "array" => {
                    if let Some(lt) = is
                        .get("x-kubernetes-list-type")
                        .and_then(Value::as_str)
                        .filter(|t| *t != "atomic")
                    {
                        errs.push(FieldError::invalid_str(
                            child(&child(path, "items"), "x-kubernetes-list-type"),
                            lt,
                            "must be atomic as item of a list with x-kubernetes-list-type=set",
                        ));
                    }
                }
                "object"
                    if is.get("x-kubernetes-map-type").and_then(Value::as_str)
                        != Some("atomic") =>
                {
                    let shown = is
                        .get("x-kubernetes-list-type")
                        .cloned()
                        .unwrap_or(Value::Null);
                    errs.push(FieldError::invalid(
                        child(&child(path, "items"), "x-kubernetes-map-type"),
                        shown,
                        "must be atomic as item of a list with x-kubernetes-list-type=set",
                    ));
                }
                _ => {}
            }
        }
    }
    if let Some(lt) = list_type.filter(|t| !["atomic", "set", "map"].contains(t)) {
        errs.push(FieldError::not_supported(
            child(path, "x-kubernetes-list-type"),
            Bad::Str(lt.into()),
            &["atomic", "set", "map"],
        ));
    }
    let map_keys: Vec<String> = m
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if !map_keys.is_empty() {
        match list_type {
            None => errs.push(FieldError::required(
                child(path, "x-kubernetes-list-type"),
                "must be map if x-kubernetes-list-map-keys is non-empty",
            )),
            Some(t) if t != "map" => errs.push(FieldError::invalid_str(
                child(path, "x-kubernetes-list-type"),
                t,
                "must be map if x-kubernetes-list-map-keys is non-empty",
            )),
            _ => {}
        }
    }
    if list_type == Some("map") {
        if map_keys.is_empty() {
            errs.push(FieldError::required(
                child(path, "x-kubernetes-list-map-keys"),
                "must not be empty if x-kubernetes-list-type is map",
            ));
        }
        match items {
            None => errs.push(FieldError::required(
                child(path, "items"),
                "must have a schema if x-kubernetes-list-type is map",
            )),
            Some(is) => {
                let it = str_at(is, &["type"]);
                if it != "object" {
                    errs.push(FieldError::invalid_str(
                        child(&child(path, "items"), "type"),
                        it,
                        "must be object if parent array's x-kubernetes-list-type is map",
                    ));
                } else {
                    let mut seen = std::collections::HashSet::new();
                    let keys_value =
                        Value::Array(map_keys.iter().cloned().map(Value::String).collect());
                    for k in &map_keys {
                        match is.pointer(&format!(
                            "/properties/{}",
                            k.replace('~', "~0").replace('/', "~1")
                        )) {
                            Some(p) => {
                                let pt = str_at(p, &["type"]);
                                if pt == "array" || pt == "object" {
                                    errs.push(FieldError::invalid_str(
                                        child(&key(&child(&child(path, "items"), "properties"), k), "type"),
                                        it,
                                        "must be a scalar type if parent array's x-kubernetes-list-type is map",
                                    ));
                                }
                            }
                            None => errs.push(FieldError::invalid(
                                child(path, "x-kubernetes-list-map-keys"),
                                keys_value.clone(),
                                "entries must all be names of item properties",
                            )),
                        }
                        if !seen.insert(k.clone()) {
                            errs.push(FieldError::invalid(
                                child(path, "x-kubernetes-list-map-keys"),
                                keys_value.clone(),
                                "must not contain duplicate entries",
                            ));
                        }
                    }
                }
            }
        }
    }
    // validateMapListKeysMapSet
    if let (Some(is), Some(lt @ ("set" | "map"))) = (items, list_type) {
        if is.get("nullable").and_then(Value::as_bool) == Some(true) {
            errs.push(FieldError::forbidden(
                child(&child(path, "items"), "nullable"),
                &format!("cannot be nullable when x-kubernetes-list-type is {lt}"),
            ));
        }
        if lt == "map" {
            let required: Vec<&str> = is
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            for k in &map_keys {
                let Some(p) = is.get("properties").and_then(|p| p.get(k)) else {
                    continue;
                };
                let kp = key(&child(&child(path, "items"), "properties"), k);
                if !required.contains(&k.as_str()) && p.get("default").is_none() {
                    errs.push(FieldError::required(child(&kp, "default"), "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property"));
                }
                if p.get("nullable").and_then(Value::as_bool) == Some(true) {
                    errs.push(FieldError::forbidden(
                        child(&kp, "nullable"),
                        "this property is in x-kubernetes-list-map-keys, so it cannot be nullable",
                    ));
                }
            }
        }
    }
    // x-kubernetes-validations texts
    for (i, r) in m
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let rp = index(&child(path, "x-kubernetes-validations"), i);
        let rule = str_at(r, &["rule"]);
        let msg = str_at(r, &["message"]);
        let (trule, tmsg) = (rule.trim(), msg.trim());
        if trule.is_empty() {
            errs.push(FieldError::required(
                child(&rp, "rule"),
                "rule is not specified",
            ));
        } else if !msg.is_empty() && tmsg.is_empty() {
            errs.push(FieldError::invalid_str(
                child(&rp, "message"),
                msg,
                "must be non-empty if specified",
            ));
        } else if tmsg.contains(['\n', '\r']) {
            errs.push(FieldError::invalid_str(
                child(&rp, "message"),
                msg,
                "must not contain line breaks",
            ));
        } else if trule.contains(['\n', '\r']) && tmsg.is_empty() {
            errs.push(FieldError::required(
                child(&rp, "message"),
                "message must be specified if rule contains line breaks",
            ));
        }
        let me = str_at(r, &["messageExpression"]);
        if r.get("messageExpression").is_some() && !me.is_empty() && me.trim().is_empty() {
            errs.push(FieldError::required(
                child(&rp, "messageExpression"),
                "messageExpression must be non-empty if specified",
            ));
        }
        let reason = str_at(r, &["reason"]);
        let reasons = [
            "FieldValueDuplicate",
            "FieldValueForbidden",
            "FieldValueInvalid",
            "FieldValueRequired",
        ];
        if r.get("reason").is_some() && !reasons.contains(&reason) {
            errs.push(FieldError::not_supported(
                child(&rp, "reason"),
                Bad::Str(reason.into()),
                &reasons,
            ));
        }
        let fp = str_at(r, &["fieldPath"]);
        if !fp.is_empty() && fp.trim().is_empty() {
            errs.push(FieldError::invalid_str(
                child(&rp, "fieldPath"),
                fp,
                "must be non-empty if specified",
            ));
        }
        if fp.contains(['\n', '\r']) {
            errs.push(FieldError::invalid_str(
                child(&rp, "fieldPath"),
                fp,
                "must not contain line breaks",
            ));
        }
        if !fp.trim().is_empty() && !field_path_valid(s, fp.trim()) {
            errs.push(FieldError::invalid_str(
                child(&rp, "fieldPath"),
                fp,
                "must be a valid path",
            ));
        }
    }
}

/// Whether a rule's fieldPath (`.spec.x`, `['a.b']`, `[0]` on lists) names a field of the schema.
fn field_path_valid(schema: &Value, fp: &str) -> bool {
    let n = Node::parse(schema);
    let mut cur = &n;
    let mut rest = fp;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let Some(next) = cur.field(&r[..end]) else {
                return false;
            };
            cur = next;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("['") {
            let Some(end) = r.find("']") else {
                return false;
            };
            let Some(next) = cur.field(&r[..end]) else {
                return false;
            };
            cur = next;
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { return false };
            let Some(next) = cur.items.as_deref() else {
                return false;
            };
            cur = next;
            rest = &r[end + 1..];
        } else {
            return false;
        }
    }
    true
}

/// ValidateDefaults: each default must be pruned and valid against its own schema (the
/// messages carry upstream's quirk of an empty name: ` in body must be of type ...`).
fn defaults(
    s: &Structural,
    n: &Node,
    spath: &str,
    path: &str,
    is_root: bool,
    errs: &mut Vec<FieldError>,
) {
    if let Some(d) = &n.default {
        let dpath = child(path, "default");
        let single = Structural::single(n.clone());
        let mut pruned = d.clone();
        let mut out = Vec::new();
        crate::pruning::prune_node(&mut pruned, n, &mut out);
        if &pruned != d {
            errs.push(FieldError::invalid(
                dpath.clone(),
                d.clone(),
                "must not have unknown fields",
            ));
        } else {
            let before = errs.len();
            for e in single.validate(d, None) {
                let field = if e.field == "<nil>" {
                    dpath.clone()
                } else {
                    format!("{dpath}.{}", e.field)
                };
                errs.push(FieldError { field, ..e });
            }
            // Then the CEL rules of the node and below, with the default as self and oldSelf.
            if errs.len() == before {
                crate::validation::cel_walk(s, n, spath, d, Some(d), &dpath, errs);
            }
        }
    }
    for (k, p) in &n.properties {
        // Defaults in top-level metadata are refused by the OpenAPI checks.
        if is_root && k == "metadata" {
            continue;
        }
        defaults(
            s,
            p,
            &node_key(spath, Step::Prop(k)),
            &key(&child(path, "properties"), k),
            false,
            errs,
        );
    }
    if let Some(a) = n.additional_schema() {
        defaults(
            s,
            a,
            &node_key(spath, Step::Additional),
            &child(path, "additionalProperties"),
            false,
            errs,
        );
    }
    if let Some(it) = &n.items {
        defaults(
            s,
            it,
            &node_key(spath, Step::Items),
            &child(path, "items"),
            false,
            errs,
        );
    }
}
