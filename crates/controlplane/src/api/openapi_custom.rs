//! OpenAPI v2 and v3 for custom resources, as apiextensions-apiserver's
//! openapi builder (pkg/controller/openapi/builder) publishes each served
//! version of a CustomResourceDefinition:
//!
//! - the kind's schema under its REST-friendly name (`stable.example.com/v1`
//!   `CronTab` → `com.example.stable.v1.CronTab`): the CRD's structural schema
//!   as `ToKubeOpenAPI` writes it back (int-or-string unfolded into
//!   `anyOf`), with `metadata` (a reference to ObjectMeta), `apiVersion` and
//!   `kind` set, embedded resources given the same, and
//!   `x-kubernetes-group-version-kind`; the List kind beside it;
//! - the paths and operations of the resource (list, also across namespaces,
//!   create, deletecollection, get, replace, delete, patch, and those of the
//!   status and scale subresources), PATCH taking JSON patch, merge patch and
//!   apply but never strategic merge patch, which custom resources refuse
//!   (kubectl reads that to pick its patch type);
//! - in v2 the schema converted as `ToStructuralOpenAPIV2` does for kubectl's
//!   client-side validation: no `allOf`/`anyOf`/`oneOf`/`not`, nullable fields
//!   untyped and not required, unknown-field-preserving objects untyped and
//!   without properties, arrays without items untyped, defaults pruned, and a
//!   whole preserving root only `type: object`.
//!
//! The per-version parts are cached by the identity of their (interned)
//! definitions, and whole documents by the set of definitions served
//! ([`SetCache`]), so a CRD write costs one rebuild of what it changed, on
//! the next request, and every other request is a lookup.

use crate::registry::{CustomDef, ResourceDef};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

pub(crate) const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
pub(crate) const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
pub(crate) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(crate) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(crate) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub(crate) const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";

/// metav1.Patch as kube-openapi defines it (no Go fields: the body of a PATCH).
pub(crate) fn patch_schema() -> Value {
    json!({"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.", "type": "object"})
}

/// The two document versions: where references point and how schemas and
/// operations are written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spec {
    V2,
    V3,
}

impl Spec {
    fn reference(self, name: &str) -> String {
        match self {
            Spec::V2 => format!("#/definitions/{name}"),
            Spec::V3 => format!("#/components/schemas/{name}"),
        }
    }
}

/// One served version of one CRD in one document version.
pub(crate) struct Part {
    /// The definition's identity ([`addr`]).
    pub def: usize,
    /// `apis/<group>/<version>`: the v3 document it belongs to.
    pub group_version: String,
    /// Definitions (v2) or component schemas (v3) by name.
    pub schemas: Map<String, Value>,
    pub paths: Map<String, Value>,
}

/// kube-openapi's REST-friendly definition name of a custom kind: the group
/// reversed when it has a dot, then version and kind
/// (`com.example.stable.v1.CronTab`).
pub(crate) fn definition_name(group: &str, version: &str, kind: &str) -> String {
    let group = if group.contains('.') {
        group.split('.').rev().collect::<Vec<_>>().join(".")
    } else {
        group.to_string()
    };
    format!("{group}.{version}.{kind}")
}

/// The part of a custom resource's version in `spec`'s document; `None` for a
/// built-in resource.
pub(crate) fn part(rd: &'static ResourceDef, spec: Spec) -> Option<Part> {
    let c = rd.custom?;
    let kind_name = definition_name(rd.group, rd.version, rd.kind);
    let list_name = definition_name(rd.group, rd.version, &c.list_kind);
    let mut schemas = Map::new();
    schemas.insert(kind_name.clone(), kind_schema(rd, c, spec));
    schemas.insert(list_name.clone(), list_schema(rd, c, &kind_name, spec));
    Some(Part {
        def: addr(rd),
        group_version: format!("apis/{}/{}", rd.group, rd.version),
        schemas,
        paths: paths(rd, &kind_name, &list_name, spec),
    })
}

const API_VERSION_DESCRIPTION: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DESCRIPTION: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
const METADATA_DESCRIPTION: &str = "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const LIST_METADATA_DESCRIPTION: &str = "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
const EMBEDDED_API_VERSION_DESCRIPTION: &str = "apiVersion defines the versioned schema of this representation of an object. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const EMBEDDED_KIND_DESCRIPTION: &str = "kind is a string value representing the type of this object. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";

fn is_true(m: &Map<String, Value>, k: &str) -> bool {
    m.get(k) == Some(&Value::Bool(true))
}

/// The kind's schema (buildKubeNative).
fn kind_schema(rd: &ResourceDef, c: &CustomDef, spec: Spec) -> Value {
    let root = c.schema.as_ref().filter(|s| s.is_object()).map(|s| {
        let mut s = structural(s);
        unfold(&mut s);
        s
    });
    let preserving = root.as_ref().and_then(Value::as_object).is_some_and(|m| {
        is_true(m, "x-kubernetes-preserve-unknown-fields") || c.preserve_unknown_fields
    });
    let mut out = match root {
        // kubectl ≤ 1.26 would refuse every field but apiVersion, kind and
        // metadata of a schema that has properties, so a preserving root says
        // nothing in v2 (upstream's comment: no TypeMeta/ObjectMeta either).
        Some(_) if spec == Spec::V2 && preserving => json!({"type": "object"}),
        None => json!({"type": "object"}),
        Some(mut s) => {
            if spec == Spec::V2 {
                to_v2(&mut s);
            }
            let Value::Object(m) = &mut s else {
                return json!({"type": "object"});
            };
            let props = m
                .entry("properties")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            if let Some(props) = props {
                props.insert(
                    "metadata".into(),
                    json!({"$ref": spec.reference(OBJECT_META), "description": METADATA_DESCRIPTION}),
                );
                props.insert(
                    "apiVersion".into(),
                    json!({"description": API_VERSION_DESCRIPTION, "type": "string"}),
                );
                props.insert(
                    "kind".into(),
                    json!({"description": KIND_DESCRIPTION, "type": "string"}),
                );
            }
            add_embedded_properties(&mut s, spec);
            s
        }
    };
    out["x-kubernetes-group-version-kind"] =
        json!([{"group": rd.group, "kind": rd.kind, "version": rd.version}]);
    out
}

/// The List kind's schema (buildListSchema): no `type`, as upstream.
fn list_schema(rd: &ResourceDef, c: &CustomDef, kind_name: &str, spec: Spec) -> Value {
    json!({
        "description": format!("{} is a list of {}", c.list_kind, rd.kind),
        "required": ["items"],
        "properties": {
            "apiVersion": {"description": API_VERSION_DESCRIPTION, "type": "string"},
            "items": {
                "description": format!("List of {}. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md", rd.plural),
                "type": "array",
                "items": {"$ref": spec.reference(kind_name)},
            },
            "kind": {"description": KIND_DESCRIPTION, "type": "string"},
            "metadata": {"$ref": spec.reference(LIST_META), "description": LIST_METADATA_DESCRIPTION},
        },
        "x-kubernetes-group-version-kind": [{"group": rd.group, "kind": c.list_kind, "version": rd.version}],
    })
}

/// The CRD schema as a structural schema keeps it and `ToKubeOpenAPI` writes
/// it back: only the keys it has (no `example`, `id`, `$schema`...), false
/// booleans and empty lists left out as Go's `omitempty` does.
pub(crate) fn structural(v: &Value) -> Value {
    let Value::Object(m) = v else {
        return json!({});
    };
    let mut out = Map::new();
    for (k, x) in m {
        let keep = match k.as_str() {
            "type"
            | "description"
            | "title"
            | "format"
            | "pattern"
            | "externalDocs"
            | "maximum"
            | "minimum"
            | "maxLength"
            | "minLength"
            | "maxItems"
            | "minItems"
            | "maxProperties"
            | "minProperties"
            | "multipleOf"
            | "x-kubernetes-list-type"
            | "x-kubernetes-map-type" => (!x.is_null()).then(|| x.clone()),
            "default" | "enum" => (!x.is_null()).then(|| x.clone()),
            "nullable"
            | "exclusiveMaximum"
            | "exclusiveMinimum"
            | "uniqueItems"
            | "x-kubernetes-preserve-unknown-fields"
            | "x-kubernetes-embedded-resource"
            | "x-kubernetes-int-or-string" => (x == &Value::Bool(true)).then(|| x.clone()),
            "required" | "x-kubernetes-list-map-keys" | "x-kubernetes-validations" => {
                x.as_array().filter(|a| !a.is_empty()).map(|_| x.clone())
            }
            "allOf" | "anyOf" | "oneOf" => x
                .as_array()
                .filter(|a| !a.is_empty())
                .map(|a| Value::Array(a.iter().map(structural).collect())),
            "not" | "items" => x.is_object().then(|| structural(x)),
            "additionalProperties" => match x {
                Value::Bool(_) => Some(x.clone()),
                Value::Object(_) => Some(structural(x)),
                _ => None,
            },
            "properties" => x.as_object().map(|ps| {
                Value::Object(ps.iter().map(|(n, p)| (n.clone(), structural(p))).collect())
            }),
            _ => None,
        };
        if let Some(x) = keep {
            out.insert(k.clone(), x);
        }
    }
    Value::Object(out)
}

/// The children that are schemas of their own (not value validations):
/// properties, items, additionalProperties.
fn for_children(m: &mut Map<String, Value>, mut f: impl FnMut(&mut Value)) {
    if let Some(Value::Object(ps)) = m.get_mut("properties") {
        ps.values_mut().for_each(&mut f);
    }
    for k in ["items", "additionalProperties"] {
        if let Some(x @ Value::Object(_)) = m.get_mut(k) {
            f(x);
        }
    }
}

/// Structural.Unfold: `x-kubernetes-int-or-string` spelled out as
/// `anyOf: [{type: integer}, {type: string}]` (in front of an `allOf` when
/// the schema has its own `anyOf`), unless it already is.
pub(crate) fn unfold(v: &mut Value) {
    let Value::Object(m) = v else { return };
    if is_true(m, "x-kubernetes-int-or-string") {
        let pattern = json!([{"type": "integer"}, {"type": "string"}]);
        let first_all_of = m
            .get("allOf")
            .and_then(|a| a.get(0))
            .and_then(|a| a.get("anyOf"));
        if m.get("anyOf") != Some(&pattern) && first_all_of != Some(&pattern) {
            if !m.contains_key("anyOf") {
                m.insert("anyOf".into(), pattern);
            } else {
                let mut all = vec![json!({"anyOf": pattern})];
                if let Some(Value::Array(rest)) = m.remove("allOf") {
                    all.extend(rest);
                }
                m.insert("allOf".into(), Value::Array(all));
            }
        }
    }
    for_children(m, unfold);
}

/// ToStructuralOpenAPIV2, then the default pruning upstream applies before
/// merging CRD definitions into the static v2 document.
pub(crate) fn to_v2(v: &mut Value) {
    let Value::Object(m) = v else { return };
    for k in ["allOf", "oneOf", "anyOf", "not", "default"] {
        m.remove(k);
    }
    if m.remove("nullable") == Some(Value::Bool(true)) {
        // kubectl's validation cannot express "or null": no type, and nothing
        // under it (an untyped value with items or properties breaks it).
        for k in ["type", "items", "properties"] {
            m.remove(k);
        }
    }
    let preserving = is_true(m, "x-kubernetes-preserve-unknown-fields");
    if preserving {
        m.remove("items");
        m.remove("properties");
    }
    if !m.contains_key("items") && m.get("type").and_then(Value::as_str) == Some("array") {
        m.remove("type");
    }
    if preserving && m.get("type").and_then(Value::as_str) == Some("object") {
        m.remove("type");
    }
    // A nullable property cannot be required (null would be refused).
    let nullable_props: Vec<String> = m
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, p)| p.get("nullable") == Some(&Value::Bool(true)))
        .map(|(n, _)| n.clone())
        .collect();
    let nullable_values = m
        .get("additionalProperties")
        .and_then(|a| a.get("nullable"))
        == Some(&Value::Bool(true));
    if nullable_values {
        m.remove("required");
    } else if let Some(Value::Array(req)) = m.get_mut("required") {
        req.retain(|r| {
            !r.as_str()
                .is_some_and(|r| nullable_props.iter().any(|n| n == r))
        });
        if req.is_empty() {
            m.remove("required");
        }
    }
    for_children(m, to_v2);
}

/// addEmbeddedProperties: an `x-kubernetes-embedded-resource` object gets
/// apiVersion, kind (both then required) and metadata — in v2 not when it
/// also preserves unknown fields, where kubectl would then refuse the rest.
fn add_embedded_properties(v: &mut Value, spec: Spec) {
    let Value::Object(m) = v else { return };
    for_children(m, |c| add_embedded_properties(c, spec));
    if spec == Spec::V2 && is_true(m, "x-kubernetes-preserve-unknown-fields") {
        return;
    }
    if !is_true(m, "x-kubernetes-embedded-resource") {
        return;
    }
    let props = m.entry("properties").or_insert_with(|| json!({}));
    if let Some(props) = props.as_object_mut() {
        props.insert(
            "apiVersion".into(),
            json!({"description": EMBEDDED_API_VERSION_DESCRIPTION, "type": "string"}),
        );
        props.insert(
            "kind".into(),
            json!({"description": EMBEDDED_KIND_DESCRIPTION, "type": "string"}),
        );
        props.insert(
            "metadata".into(),
            json!({"$ref": spec.reference(OBJECT_META), "description": METADATA_DESCRIPTION}),
        );
    }
    let req = m.entry("required").or_insert_with(|| json!([]));
    if let Some(req) = req.as_array_mut() {
        for k in ["kind", "apiVersion"] {
            if !req.iter().any(|r| r == k) {
                req.push(json!(k));
            }
        }
    }
}

/// What an operation returns or reads.
#[derive(Clone, Copy)]
enum Sample {
    Kind,
    List,
    Status,
    Scale,
    Patch,
    DeleteOptions,
}

/// One route of generateBuilder.
struct Route {
    /// "", "/{name}", "/{name}/status", "/{name}/scale".
    suffix: &'static str,
    method: &'static str,
    /// x-kubernetes-action.
    action: &'static str,
    /// The operation's verb (read, replace, ...).
    verb: &'static str,
    sample: Sample,
    reads: Option<Sample>,
}

const fn route(
    suffix: &'static str,
    method: &'static str,
    action: &'static str,
    verb: &'static str,
    sample: Sample,
    reads: Option<Sample>,
) -> Route {
    Route {
        suffix,
        method,
        action,
        verb,
        sample,
        reads,
    }
}

const ROUTES: &[Route] = &[
    route("", "get", "list", "list", Sample::List, None),
    route(
        "",
        "post",
        "post",
        "create",
        Sample::Kind,
        Some(Sample::Kind),
    ),
    route(
        "",
        "delete",
        "deletecollection",
        "deletecollection",
        Sample::Status,
        None,
    ),
    route("/{name}", "get", "get", "read", Sample::Kind, None),
    route(
        "/{name}",
        "put",
        "put",
        "replace",
        Sample::Kind,
        Some(Sample::Kind),
    ),
    route(
        "/{name}",
        "delete",
        "delete",
        "delete",
        Sample::Status,
        Some(Sample::DeleteOptions),
    ),
    route(
        "/{name}",
        "patch",
        "patch",
        "patch",
        Sample::Kind,
        Some(Sample::Patch),
    ),
];

const STATUS_ROUTES: &[Route] = &[
    route("/{name}/status", "get", "get", "read", Sample::Kind, None),
    route(
        "/{name}/status",
        "put",
        "put",
        "replace",
        Sample::Kind,
        Some(Sample::Kind),
    ),
    route(
        "/{name}/status",
        "patch",
        "patch",
        "patch",
        Sample::Kind,
        Some(Sample::Patch),
    ),
];

const SCALE_ROUTES: &[Route] = &[
    route("/{name}/scale", "get", "get", "read", Sample::Scale, None),
    route(
        "/{name}/scale",
        "put",
        "put",
        "replace",
        Sample::Scale,
        Some(Sample::Scale),
    ),
    route(
        "/{name}/scale",
        "patch",
        "patch",
        "patch",
        Sample::Scale,
        Some(Sample::Patch),
    ),
];

/// apiserver's ToValidOperationID: letters (and digits after the first
/// character) kept, anything else dropped and the next letter capitalised.
fn operation_id_part(s: &str, capitalize_first: bool) -> String {
    let mut out = String::new();
    let mut capitalize = capitalize_first;
    for (i, c) in s.chars().enumerate() {
        if c.is_alphabetic() || c == '_' || (i != 0 && c.is_ascii_digit()) {
            if capitalize {
                out.extend(c.to_uppercase());
                capitalize = false;
            } else {
                out.push(c);
            }
        } else {
            capitalize = true;
        }
    }
    out
}

/// The description builder.descriptionFor writes.
fn description(kind: &str, verb: &str, sub: &str) -> String {
    let article = match verb {
        "list" => " objects of kind ".to_string(),
        "read" | "replace" | "patch" => " the specified ".to_string(),
        "create" | "delete" => {
            let vowel = kind
                .chars()
                .next()
                .is_some_and(|c| "aeiouAEIOU".contains(c));
            format!(" {} ", if vowel { "an" } else { "a" })
        }
        _ => String::new(),
    };
    let sub = if sub.is_empty() {
        String::new()
    } else {
        format!(" {sub} of")
    };
    match verb {
        "patch" => format!("partially update{sub}{article}{kind}"),
        "deletecollection" => {
            let sub = if sub.is_empty() { sub } else { sub + " a" };
            format!("delete collection of{sub} {kind}")
        }
        _ => format!("{verb}{sub}{article}{kind}"),
    }
}

/// (name, type, description) of the query parameters of an action, from the
/// option structs upstream adds them from (GetOptions, ListOptions, ...).
fn query_params(action: &str) -> &'static [(&'static str, &'static str, &'static str)] {
    const DRY_RUN: (&str, &str, &str) = ("dryRun", "string", "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed");
    const FIELD_MANAGER: (&str, &str, &str) = ("fieldManager", "string", "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.");
    const FIELD_VALIDATION: (&str, &str, &str) = ("fieldValidation", "string", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict");
    const RESOURCE_VERSION: (&str, &str, &str) = ("resourceVersion", "string", "resourceVersion sets a constraint on what resource versions a request may be served from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset");
    match action {
        "get" => &[RESOURCE_VERSION],
        "list" | "deletecollection" => &[
            ("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion."),
            ("continue", "string", "The continue option should be set when retrieving more results from the server. Since this value is server defined, clients may only use the continue value from a previous query result with identical query parameters (except for the value of continue)."),
            ("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
            ("labelSelector", "string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
            ("limit", "integer", "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results."),
            RESOURCE_VERSION,
            ("resourceVersionMatch", "string", "resourceVersionMatch determines how resourceVersion is applied to list calls. It is highly recommended that resourceVersionMatch be set for list calls where resourceVersion is set See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset"),
            ("sendInitialEvents", "boolean", "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection."),
            ("timeoutSeconds", "integer", "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity."),
            ("watch", "boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion."),
        ],
        "post" | "put" => &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION],
        "patch" => &[
            DRY_RUN,
            FIELD_MANAGER,
            FIELD_VALIDATION,
            ("force", "boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests."),
        ],
        "delete" => &[
            DRY_RUN,
            ("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately."),
            ("ignoreStoreReadErrorWithClusterWideAccess", "boolean", "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error."),
            ("orphanDependents", "boolean", "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from the object's finalizers list. Either this field or PropagationPolicy may be set, but not both."),
            ("propagationPolicy", "string", "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. The default policy is decided by the existing finalizer set in the metadata.finalizers and the resource-specific default policy. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - allow the garbage collector to delete the dependents in the background; 'Foreground' - a cascading policy that deletes all dependents in the foreground."),
        ],
        _ => &[],
    }
}

fn param(spec: Spec, name: &str, location: &str, ty: &str, description: &str) -> Value {
    let mut p = match spec {
        Spec::V2 => {
            json!({"name": name, "in": location, "description": description, "type": ty, "uniqueItems": true})
        }
        Spec::V3 => {
            json!({"name": name, "in": location, "description": description, "schema": {"type": ty, "uniqueItems": true}})
        }
    };
    if location == "path" {
        p["required"] = json!(true);
    }
    p
}

/// The paths of one custom resource version (generateBuilder's routes).
fn paths(rd: &ResourceDef, kind_name: &str, list_name: &str, spec: Spec) -> Map<String, Value> {
    let gv = format!("/apis/{}/{}", rd.group, rd.version);
    let root = if rd.namespaced {
        format!("{gv}/namespaces/{{namespace}}/{}", rd.plural)
    } else {
        format!("{gv}/{}", rd.plural)
    };
    let sample_ref = |s: Sample| {
        let name = match s {
            Sample::Kind => kind_name,
            Sample::List => list_name,
            Sample::Status => STATUS,
            Sample::Scale => SCALE,
            Sample::Patch => PATCH,
            Sample::DeleteOptions => DELETE_OPTIONS,
        };
        json!({"$ref": spec.reference(name)})
    };
    // GetOperationIDAndTags: the operation ID carries the group (without
    // `.k8s.io`) and version; the tag is `<group>_<version>`.
    let group = rd.group.strip_suffix(".k8s.io").unwrap_or(rd.group);
    let id_prefix = format!(
        "{}{}",
        operation_id_part(group, true),
        operation_id_part(rd.version, true)
    );
    let tag = format!(
        "{}_{}",
        operation_id_part(group, false),
        operation_id_part(rd.version, false)
    );
    let namespaced = if rd.namespaced { "Namespaced" } else { "" };
    let pretty = param(
        spec,
        "pretty",
        "query",
        "string",
        "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).",
    );
    let op = |r: &Route, id: String| -> Value {
        let sub = r
            .suffix
            .rsplit('/')
            .next()
            .filter(|s| !s.starts_with('{') && !s.is_empty())
            .unwrap_or("");
        let mut params: Vec<Value> = Vec::new();
        let mut o = Map::new();
        o.insert(
            "description".into(),
            json!(description(rd.kind, r.verb, sub)),
        );
        o.insert("operationId".into(), json!(id));
        o.insert("tags".into(), json!([tag]));
        let consumes: &[&str] = if r.method == "patch" {
            &[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/apply-patch+yaml",
            ]
        } else {
            &["application/json", "application/yaml"]
        };
        let produces = ["application/json", "application/yaml"];
        if let Some(reads) = r.reads {
            let required = !matches!(reads, Sample::DeleteOptions);
            match spec {
                Spec::V2 => {
                    let mut body =
                        json!({"name": "body", "in": "body", "schema": sample_ref(reads)});
                    if required {
                        body["required"] = json!(true);
                    }
                    params.push(body);
                }
                Spec::V3 => {
                    let content: Map<String, Value> = consumes
                        .iter()
                        .map(|ct| (ct.to_string(), json!({"schema": sample_ref(reads)})))
                        .collect();
                    let mut body = json!({"content": content});
                    if required {
                        body["required"] = json!(true);
                    }
                    o.insert("requestBody".into(), body);
                }
            }
        }
        for (name, ty, d) in query_params(r.action) {
            params.push(param(spec, name, "query", ty, d));
        }
        if !params.is_empty() {
            o.insert("parameters".into(), Value::Array(params));
        }
        let mut codes = vec![("200", "OK")];
        match r.action {
            "post" => codes.extend([("201", "Created"), ("202", "Accepted")]),
            "delete" => codes.push(("202", "Accepted")),
            "put" => codes.push(("201", "Created")),
            _ => {}
        }
        let mut responses = Map::new();
        for (code, text) in codes {
            let resp = match spec {
                Spec::V2 => json!({"description": text, "schema": sample_ref(r.sample)}),
                Spec::V3 => {
                    let content: Map<String, Value> = produces
                        .iter()
                        .map(|ct| (ct.to_string(), json!({"schema": sample_ref(r.sample)})))
                        .collect();
                    json!({"description": text, "content": content})
                }
            };
            responses.insert(code.into(), resp);
        }
        responses.insert("401".into(), json!({"description": "Unauthorized"}));
        o.insert("responses".into(), Value::Object(responses));
        if spec == Spec::V2 {
            o.insert("consumes".into(), json!(consumes));
            o.insert("produces".into(), json!(produces));
            o.insert("schemes".into(), json!(["https"]));
        }
        o.insert("x-kubernetes-action".into(), json!(r.action));
        o.insert(
            "x-kubernetes-group-version-kind".into(),
            json!({"group": rd.group, "kind": rd.kind, "version": rd.version}),
        );
        Value::Object(o)
    };
    let op_id = |r: &Route| {
        let sub = r
            .suffix
            .rsplit('/')
            .next()
            .filter(|s| !s.starts_with('{') && !s.is_empty())
            .unwrap_or("");
        let title: String = sub
            .chars()
            .take(1)
            .flat_map(char::to_uppercase)
            .chain(sub.chars().skip(1))
            .collect();
        format!("{}{id_prefix}{namespaced}{}{title}", r.verb, rd.kind)
    };
    let mut out: Map<String, Value> = Map::new();
    let mut add = |path: String, method: &str, o: Value, path_params: Vec<Value>| {
        let item = out.entry(path).or_insert_with(|| json!({}));
        item[method] = o;
        item["parameters"] = Value::Array(path_params);
    };
    let path_params = |suffix: &str| {
        let mut ps = Vec::new();
        if suffix.contains("{name}") {
            ps.push(param(
                spec,
                "name",
                "path",
                "string",
                &format!("name of the {}", rd.kind),
            ));
        }
        if rd.namespaced {
            ps.push(param(
                spec,
                "namespace",
                "path",
                "string",
                "object name and auth scope, such as for teams and projects",
            ));
        }
        ps.push(pretty.clone());
        ps
    };
    if rd.namespaced {
        // Listing across namespaces.
        let r = &ROUTES[0];
        let id = format!("list{id_prefix}{}ForAllNamespaces", rd.kind);
        let mut ps = path_params("");
        ps.retain(|p| p["name"] != "namespace");
        add(format!("{gv}/{}", rd.plural), "get", op(r, id), ps);
    }
    let mut routes: Vec<&Route> = ROUTES.iter().collect();
    if rd.subresources.contains(&"status") {
        routes.extend(STATUS_ROUTES);
    }
    if rd.subresources.contains(&"scale") {
        routes.extend(SCALE_ROUTES);
    }
    for r in routes {
        add(
            format!("{root}{}", r.suffix),
            r.method,
            op(r, op_id(r)),
            path_params(r.suffix),
        );
    }
    out
}

/// Adds to `schemas` every schema of `common` that they or `also` (the
/// paths) refer to, and what those refer to (kube-openapi includes the
/// referenced definitions only).
pub(crate) fn add_referenced(
    schemas: &mut Map<String, Value>,
    also: &Value,
    common: &Map<String, Value>,
    prefix: &str,
) {
    fn refs(v: &Value, prefix: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(name) = m
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| r.strip_prefix(prefix))
                {
                    out.push(name.to_string());
                }
                m.values().for_each(|x| refs(x, prefix, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, prefix, out)),
            _ => {}
        }
    }
    let mut todo = Vec::new();
    schemas.values().for_each(|s| refs(s, prefix, &mut todo));
    refs(also, prefix, &mut todo);
    while let Some(name) = todo.pop() {
        if schemas.contains_key(&name) {
            continue;
        }
        if let Some(s) = common.get(&name) {
            refs(s, prefix, &mut todo);
            schemas.insert(name, s.clone());
        }
    }
}

/// The identity of an interned definition (never freed, so never reused).
pub(crate) fn addr(rd: &'static ResourceDef) -> usize {
    rd as *const ResourceDef as usize
}

struct Slot<P, T> {
    key: Vec<usize>,
    parts: HashMap<usize, Arc<P>>,
    value: Arc<T>,
}

/// Documents built for the latest sets of custom definitions (a few, as
/// several control planes may share a process), with the parts (`P`, one per
/// definition, made by `make`) they were built from, which the next set
/// re-uses.
pub(crate) struct SetCache<P, T> {
    make: fn(&'static ResourceDef) -> Option<P>,
    slots: Mutex<VecDeque<Slot<P, T>>>,
}

/// Sets kept per cache.
const SLOTS: usize = 8;

impl<P, T> SetCache<P, T> {
    pub(crate) const fn new(make: fn(&'static ResourceDef) -> Option<P>) -> Self {
        SetCache {
            make,
            slots: Mutex::new(VecDeque::new()),
        }
    }

    /// The document for `defs`, built (under the lock, so once) by `build`
    /// from their parts when this set has not been seen lately. `build` also
    /// gets the values built for the other sets kept, latest first, to re-use
    /// what did not change.
    pub(crate) fn get(
        &self,
        defs: &[&'static ResourceDef],
        build: impl FnOnce(&[Arc<P>], &[Arc<T>]) -> T,
    ) -> Arc<T> {
        let mut key: Vec<usize> = defs.iter().map(|d| addr(d)).collect();
        key.sort_unstable();
        let mut slots = match self.slots.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(i) = slots.iter().position(|s| s.key == key) {
            if let Some(slot) = slots.remove(i) {
                let value = slot.value.clone();
                slots.push_front(slot);
                return value;
            }
        }
        let mut parts = HashMap::new();
        let mut list = Vec::new();
        for d in defs {
            let a = addr(d);
            let known = parts
                .get(&a)
                .cloned()
                .or_else(|| slots.iter().find_map(|s| s.parts.get(&a).cloned()));
            let p = match known {
                Some(p) => p,
                None => match (self.make)(d) {
                    Some(p) => Arc::new(p),
                    None => continue,
                },
            };
            parts.insert(a, p.clone());
            list.push(p);
        }
        let previous: Vec<Arc<T>> = slots.iter().map(|s| s.value.clone()).collect();
        let value = Arc::new(build(&list, &previous));
        slots.push_front(Slot {
            key,
            parts,
            value: value.clone(),
        });
        slots.truncate(SLOTS);
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_operation_ids_as_upstream() {
        assert_eq!(
            definition_name("stable.example.com", "v1", "CronTab"),
            "com.example.stable.v1.CronTab"
        );
        assert_eq!(definition_name("nodot", "v1", "A"), "nodot.v1.A");
        assert_eq!(
            operation_id_part("stable.example.com", true),
            "StableExampleCom"
        );
        assert_eq!(
            operation_id_part("stable.example.com", false),
            "stableExampleCom"
        );
        assert_eq!(operation_id_part("v1beta1", true), "V1beta1");
        assert_eq!(description("CronTab", "create", ""), "create a CronTab");
        assert_eq!(description("Issuer", "delete", ""), "delete an Issuer");
        assert_eq!(
            description("CronTab", "patch", "scale"),
            "partially update scale of the specified CronTab"
        );
        assert_eq!(
            description("CronTab", "deletecollection", ""),
            "delete collection of CronTab"
        );
        assert_eq!(
            description("CronTab", "list", ""),
            "list objects of kind CronTab"
        );
    }

    #[test]
    fn structural_unfold_and_v2_conversion() {
        let crd_schema = json!({
            "type": "object",
            "example": {"dropped": true},
            "required": ["spec"],
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["port", "maybe"],
                    "properties": {
                        "port": {"x-kubernetes-int-or-string": true, "default": 80},
                        "maybe": {"type": "string", "nullable": true},
                        "anything": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"a": {"type": "string"}}},
                        "choice": {"type": "string", "oneOf": [{"pattern": "^a"}, {"pattern": "^b"}], "uniqueItems": false},
                        "tpl": {"type": "object", "x-kubernetes-embedded-resource": true, "properties": {"spec": {"type": "object"}}},
                        "list": {"type": "array", "nullable": true, "items": {"type": "string"}},
                    },
                },
            },
        });
        let mut v3 = structural(&crd_schema);
        unfold(&mut v3);
        assert!(v3.get("example").is_none());
        let spec = &v3["properties"]["spec"]["properties"];
        assert_eq!(
            spec["port"]["anyOf"],
            json!([{"type": "integer"}, {"type": "string"}])
        );
        assert_eq!(spec["port"]["default"], 80);
        assert!(spec["choice"].get("uniqueItems").is_none());
        assert_eq!(spec["choice"]["oneOf"][1]["pattern"], "^b");
        // An own anyOf stays, the int-or-string one goes first into allOf.
        let mut both = json!({"x-kubernetes-int-or-string": true, "anyOf": [{"maximum": 3}], "allOf": [{"minimum": 1}]});
        unfold(&mut both);
        assert_eq!(
            both["allOf"],
            json!([{"anyOf": [{"type": "integer"}, {"type": "string"}]}, {"minimum": 1}])
        );

        let mut v2 = v3.clone();
        to_v2(&mut v2);
        let s = &v2["properties"]["spec"];
        assert_eq!(s["required"], json!(["port"]), "nullable not required");
        let p = &s["properties"];
        assert_eq!(p["port"], json!({"x-kubernetes-int-or-string": true}));
        assert_eq!(p["maybe"], json!({}));
        assert_eq!(
            p["anything"],
            json!({"x-kubernetes-preserve-unknown-fields": true})
        );
        assert_eq!(p["choice"], json!({"type": "string"}));
        assert_eq!(p["list"], json!({}));
        assert!(p["tpl"]["properties"]["spec"].is_object());
    }
}
