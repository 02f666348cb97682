//! Upstream's default RBAC policy (`bootstrap_policy.yaml`), created at
//! control-plane start and reconciled as kube-apiserver's
//! `rbac/bootstrap-roles` post-start hook does: a missing role or binding is
//! created; one annotated `rbac.authorization.kubernetes.io/autoupdate:
//! "true"` gets the rules (or subjects, or aggregation selectors) it lacks
//! added; one whose annotation is `"false"` is left as the admin made it.

use super::rbac::{uncovered, PolicyRule, GROUP};
use crate::api::objects::{Core, WriteCtx};
use crate::registry::{self, ResourceDef};
use serde_json::{json, Value};

const POLICY: &str = include_str!("bootstrap_policy.yaml");
const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// The policy's ClusterRoles and ClusterRoleBindings as API objects.
pub fn policy() -> (Vec<Value>, Vec<Value>) {
    // The file is part of the binary; a unit test parses it.
    let doc: Value = serde_yaml_ng::from_str(POLICY).unwrap_or(Value::Null);
    let meta = |name: &Value, labels: Option<&Value>| {
        let mut l = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
        if let (Some(l), Some(Value::Object(extra))) = (l.as_object_mut(), labels) {
            l.extend(extra.clone());
        }
        json!({"name": name, "labels": l, "annotations": {AUTOUPDATE: "true"}})
    };
    let items = |k: &str| doc[k].as_array().cloned().unwrap_or_default();
    let roles = items("clusterRoles")
        .iter()
        .map(|r| {
            let mut o = json!({
                "apiVersion": format!("{GROUP}/v1"),
                "kind": "ClusterRole",
                "metadata": meta(&r["name"], r.get("labels")),
            });
            if let Some(a) = r.get("aggregationRule") {
                o["aggregationRule"] = a.clone();
            }
            o["rules"] = r.get("rules").cloned().unwrap_or_else(|| json!([]));
            o
        })
        .collect();
    let bindings = items("clusterRoleBindings")
        .iter()
        .map(|b| {
            let subjects: Vec<Value> = b["subjects"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    let mut s = s.clone();
                    if s["kind"] != "ServiceAccount" {
                        s["apiGroup"] = json!(GROUP);
                    }
                    s
                })
                .collect();
            let mut o = json!({
                "apiVersion": format!("{GROUP}/v1"),
                "kind": "ClusterRoleBinding",
                "metadata": meta(&b["name"], None),
                "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": b["role"]},
            });
            if !subjects.is_empty() {
                o["subjects"] = json!(subjects);
            }
            o
        })
        .collect();
    (roles, bindings)
}

fn rd(plural: &str) -> Option<&'static ResourceDef> {
    registry::find(GROUP, "v1", plural)
}

fn autoupdate(o: &Value) -> bool {
    o.pointer("/metadata/annotations")
        .and_then(|a| a.get(AUTOUPDATE))
        .and_then(Value::as_str)
        != Some("false")
}

/// Creates what is missing of the default policy and adds what an
/// auto-updated object lacks; then aggregates the aggregated roles.
pub fn reconcile(core: &Core) {
    let (Some(crd), Some(crbd)) = (rd("clusterroles"), rd("clusterrolebindings")) else {
        return;
    };
    let (roles, bindings) = policy();
    let mut ctx = WriteCtx::controller("kube-apiserver");
    for want in roles {
        let name = want["metadata"]["name"].as_str().unwrap_or("").to_string();
        let Some(have) = core.get_stored(crd, None, &name) else {
            if let Err(e) = core.create(crd, None, want, &mut ctx) {
                tracing::warn!("bootstrap ClusterRole {name}: {}", e.message);
            }
            continue;
        };
        if !autoupdate(&have.object) {
            continue;
        }
        let held = PolicyRule::of_role(&have.object);
        let wanted = PolicyRule::of_role(&want);
        let missing: Vec<&Value> = wanted
            .iter()
            .zip(want["rules"].as_array().into_iter().flatten())
            .filter(|(r, _)| !uncovered(&held, std::slice::from_ref(r)).is_empty())
            .map(|(_, v)| v)
            .collect();
        let missing_selectors: Vec<Value> = want
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|s| {
                !have
                    .object
                    .pointer("/aggregationRule/clusterRoleSelectors")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.contains(s))
            })
            .cloned()
            .collect();
        if missing.is_empty() && missing_selectors.is_empty() {
            continue;
        }
        let r = core.modify(crd, None, &name, None, &mut ctx, |cur| {
            let mut o = cur.clone();
            if !missing.is_empty() {
                let mut rules = o["rules"].as_array().cloned().unwrap_or_default();
                rules.extend(missing.iter().map(|v| (*v).clone()));
                o["rules"] = json!(rules);
            }
            if !missing_selectors.is_empty() {
                let mut sel = o
                    .pointer("/aggregationRule/clusterRoleSelectors")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                sel.extend(missing_selectors.iter().cloned());
                o["aggregationRule"] = json!({"clusterRoleSelectors": sel});
            }
            Ok(o)
        });
        if let Err(e) = r {
            tracing::warn!("reconciling ClusterRole {name}: {}", e.message);
        }
    }
    for want in bindings {
        let name = want["metadata"]["name"].as_str().unwrap_or("").to_string();
        let Some(have) = core.get_stored(crbd, None, &name) else {
            if let Err(e) = core.create(crbd, None, want, &mut ctx) {
                tracing::warn!("bootstrap ClusterRoleBinding {name}: {}", e.message);
            }
            continue;
        };
        if !autoupdate(&have.object) {
            continue;
        }
        let key = |s: &Value| {
            (
                s["kind"].as_str().unwrap_or("").to_string(),
                s["name"].as_str().unwrap_or("").to_string(),
                s["namespace"].as_str().unwrap_or("").to_string(),
            )
        };
        let current: Vec<_> = have.object["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .map(key)
            .collect();
        let missing: Vec<Value> = want["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| !current.contains(&key(s)))
            .cloned()
            .collect();
        if missing.is_empty() {
            continue;
        }
        let r = core.modify(crbd, None, &name, None, &mut ctx, |cur| {
            let mut o = cur.clone();
            let mut subjects = o["subjects"].as_array().cloned().unwrap_or_default();
            subjects.extend(missing.iter().cloned());
            o["subjects"] = json!(subjects);
            Ok(o)
        });
        if let Err(e) = r {
            tracing::warn!("reconciling ClusterRoleBinding {name}: {}", e.message);
        }
    }
    crate::controllers::clusterrole_aggregation::aggregate(core);
}

#[cfg(test)]
mod tests {
    #[test]
    fn policy_parses() {
        let (roles, bindings) = super::policy();
        assert!(roles.len() > 30, "{}", roles.len());
        assert!(bindings.len() >= 12);
        let names: Vec<&str> = roles
            .iter()
            .filter_map(|r| r["metadata"]["name"].as_str())
            .collect();
        for n in [
            "cluster-admin",
            "admin",
            "edit",
            "view",
            "system:node",
            "system:discovery",
        ] {
            assert!(names.contains(&n), "{n}");
        }
        // Every binding refers to a policy role.
        for b in &bindings {
            assert!(names.contains(&b["roleRef"]["name"].as_str().unwrap()));
        }
    }
}
