//! RBAC: Role, ClusterRole, RoleBinding, ClusterRoleBinding (rbac.authorization.k8s.io/v1).
//!
//! Validation and update rules as upstream's pkg/apis/rbac/validation (rules
//! need verbs, and groups + resources or non-resource URLs; a binding's
//! role reference and subjects; roleRef immutable). Escalation prevention is
//! an authorization matter: `auth/authz.rs`'s `check_escalation`.

use crate::api::error::{cause, Cause};
use crate::registry::ResourceDef;
use serde_json::Value;

const GROUP: &str = "rbac.authorization.k8s.io";

fn is_rbac(rd: &ResourceDef) -> bool {
    rd.group == GROUP
}

/// Defaults as upstream's rbac/v1 `SetDefaults_*`: a binding's
/// `roleRef.apiGroup`, and a subject's `apiGroup` (`""` for service
/// accounts, the RBAC group for users and groups).
pub(super) fn defaults(rd: &ResourceDef, obj: &mut Value) {
    if !is_rbac(rd) || !matches!(rd.kind, "RoleBinding" | "ClusterRoleBinding") {
        return;
    }
    if let Some(r) = obj.get_mut("roleRef").and_then(Value::as_object_mut) {
        if r.get("apiGroup")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            r.insert("apiGroup".into(), GROUP.into());
        }
    }
    for s in obj
        .get_mut("subjects")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let Some(s) = s.as_object_mut() else { continue };
        if s.get("apiGroup")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            // A service account's is `""`, which the API leaves out.
            if matches!(
                s.get("kind").and_then(Value::as_str),
                Some("User" | "Group")
            ) {
                s.insert("apiGroup".into(), GROUP.into());
            }
        }
    }
}

/// Create-time preparation beyond defaults (e.g. an initial status phase).
pub(super) fn prepare_create(_rd: &ResourceDef, _obj: &mut Value) {}

fn len(v: &Value, k: &str) -> usize {
    v.get(k).and_then(Value::as_array).map_or(0, Vec::len)
}

fn str_field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Go's `%#v` of a `[]string`, as upstream prints invalid values.
fn go_strings(v: Option<&Value>) -> String {
    let items: Vec<String> = v
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| format!("{:?}", s.as_str().unwrap_or("")))
        .collect();
    format!("[]string{{{}}}", items.join(", "))
}

fn validate_rule(rule: &Value, namespaced: bool, f: &str, causes: &mut Vec<Cause>) {
    if len(rule, "verbs") == 0 {
        causes.push(cause(
            "FieldValueRequired",
            &format!("{f}.verbs"),
            "Required value: verbs must contain at least one value",
        ));
    }
    if len(rule, "nonResourceURLs") > 0 {
        let urls = go_strings(rule.get("nonResourceURLs"));
        if namespaced {
            causes.push(cause(
                "FieldValueInvalid",
                &format!("{f}.nonResourceURLs"),
                format!(
                    "Invalid value: {urls}: namespaced rules cannot apply to non-resource URLs"
                ),
            ));
        }
        if len(rule, "apiGroups") > 0
            || len(rule, "resources") > 0
            || len(rule, "resourceNames") > 0
        {
            causes.push(cause(
                "FieldValueInvalid",
                &format!("{f}.nonResourceURLs"),
                format!("Invalid value: {urls}: rules cannot apply to both regular resources and non-resource URLs"),
            ));
        }
        return;
    }
    if len(rule, "apiGroups") == 0 {
        causes.push(cause(
            "FieldValueRequired",
            &format!("{f}.apiGroups"),
            "Required value: resource rules must supply at least one api group",
        ));
    }
    if len(rule, "resources") == 0 {
        causes.push(cause(
            "FieldValueRequired",
            &format!("{f}.resources"),
            "Required value: resource rules must supply at least one resource",
        ));
    }
}

fn validate_binding(obj: &Value, namespaced: bool, causes: &mut Vec<Cause>) {
    let role_ref = obj.get("roleRef").cloned().unwrap_or(Value::Null);
    let group = str_field(&role_ref, "apiGroup");
    if group != GROUP {
        causes.push(super::unsupported("roleRef.apiGroup", group, &[GROUP]));
    }
    let kind = str_field(&role_ref, "kind");
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&kind) {
        causes.push(super::unsupported("roleRef.kind", kind, kinds));
    }
    let name = str_field(&role_ref, "name");
    if name.is_empty() {
        causes.push(cause(
            "FieldValueRequired",
            "roleRef.name",
            "Required value",
        ));
    } else if name.contains('/') || name.contains('%') || name == "." || name == ".." {
        causes.push(cause(
            "FieldValueInvalid",
            "roleRef.name",
            format!("Invalid value: {name:?}: may not contain '/' or '%'"),
        ));
    }
    for (i, s) in obj
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let f = format!("subjects[{i}]");
        if str_field(s, "name").is_empty() {
            causes.push(cause(
                "FieldValueRequired",
                &format!("{f}.name"),
                "Required value",
            ));
        }
        let api_group = str_field(s, "apiGroup");
        match str_field(s, "kind") {
            "ServiceAccount" => {
                if !api_group.is_empty() {
                    causes.push(super::unsupported(
                        &format!("{f}.apiGroup"),
                        api_group,
                        &[""],
                    ));
                }
                if !namespaced && str_field(s, "namespace").is_empty() {
                    causes.push(cause(
                        "FieldValueRequired",
                        &format!("{f}.namespace"),
                        "Required value",
                    ));
                }
            }
            "User" | "Group" => {
                if api_group != GROUP {
                    causes.push(super::unsupported(
                        &format!("{f}.apiGroup"),
                        api_group,
                        &[GROUP],
                    ));
                }
            }
            other => causes.push(super::unsupported(
                &format!("{f}.kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
}

/// Validation of the whole object, on create and update.
pub(super) fn validate(rd: &ResourceDef, obj: &Value, causes: &mut Vec<Cause>) {
    if !is_rbac(rd) {
        return;
    }
    match rd.kind {
        "Role" | "ClusterRole" => {
            for (i, r) in obj
                .get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                validate_rule(r, rd.namespaced, &format!("rules[{i}]"), causes);
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => validate_binding(obj, rd.namespaced, causes),
        _ => {}
    }
}

/// Update-only rules: a binding's roleRef cannot change (upstream's text
/// prints the old reference as Go's `%#v` of `rbac.RoleRef`).
pub(super) fn validate_update(rd: &ResourceDef, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    if !is_rbac(rd) || !matches!(rd.kind, "RoleBinding" | "ClusterRoleBinding") {
        return;
    }
    let (o, n) = (
        old.get("roleRef").unwrap_or(&Value::Null),
        new.get("roleRef").unwrap_or(&Value::Null),
    );
    let key = |r: &Value| {
        (
            str_field(r, "apiGroup").to_string(),
            str_field(r, "kind").to_string(),
            str_field(r, "name").to_string(),
        )
    };
    if key(o) != key(n) {
        let (g, k, name) = key(n);
        causes.push(cause(
            "FieldValueInvalid",
            "roleRef",
            format!(
                "Invalid value: rbac.RoleRef{{APIGroup:{g:?}, Kind:{k:?}, Name:{name:?}}}: cannot change roleRef"
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rd(plural: &str) -> &'static ResourceDef {
        crate::registry::find(GROUP, "v1", plural).unwrap()
    }

    fn messages(rd: &ResourceDef, obj: Value) -> Vec<String> {
        let mut c = Vec::new();
        validate(rd, &obj, &mut c);
        c.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn rules_and_bindings() {
        assert_eq!(
            messages(
                rd("roles"),
                json!({"rules": [{"apiGroups": [""], "resources": ["pods"]}, {"nonResourceURLs": ["/x"], "verbs": ["get"]}]})
            ),
            vec![
                "rules[0].verbs: Required value: verbs must contain at least one value",
                "rules[1].nonResourceURLs: Invalid value: []string{\"/x\"}: namespaced rules cannot apply to non-resource URLs",
            ]
        );
        assert!(messages(
            rd("clusterroles"),
            json!({"rules": [{"nonResourceURLs": ["/x"], "verbs": ["get"]}]})
        )
        .is_empty());
        assert_eq!(
            messages(
                rd("clusterrolebindings"),
                json!({"roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "r"},
                       "subjects": [{"kind": "ServiceAccount", "name": "x"}, {"kind": "Robot", "name": "y"}]})
            ),
            vec![
                "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
                "subjects[0].namespace: Required value",
                "subjects[1].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
            ]
        );
        let mut c = Vec::new();
        validate_update(
            rd("rolebindings"),
            &json!({"roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "view"}}),
            &json!({"roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "edit"}}),
            &mut c,
        );
        assert_eq!(c[0].message, "Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"ClusterRole\", Name:\"edit\"}: cannot change roleRef");
    }
}
