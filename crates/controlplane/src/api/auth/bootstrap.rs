//! Upstream's default RBAC policy (`bootstrap_policy.yaml`), created at
//! control-plane start and reconciled as kube-apiserver's
//! `rbac/bootstrap-roles` post-start hook does: a missing role or binding is
//! created; one annotated `rbac.authorization.kubernetes.io/autoupdate:
//! "true"` gets the rules (or subjects, or aggregation selectors) it lacks
//! added; one whose annotation is `"false"` is left as the admin made it.

use super::rbac::{uncovered, PolicyRule, GROUP};
use crate::api::objects::{Core, WriteCtx};
use crate::registry::{self, ResourceDef};
use crate::store::Stored;
use serde_json::{json, Value};

const POLICY: &str = include_str!("bootstrap_policy.yaml");
const CONTROLLER_POLICY: &str = include_str!("controller_policy.yaml");
const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// The default policy as API objects.
#[derive(Debug, Default)]
pub struct Policy {
    pub cluster_roles: Vec<Value>,
    pub cluster_role_bindings: Vec<Value>,
    /// Roles and RoleBindings, each with its `metadata.namespace`.
    pub roles: Vec<Value>,
    pub role_bindings: Vec<Value>,
}

/// The policy file read into API objects.
pub fn policy() -> Policy {
    // The file is part of the binary; a unit test parses it.
    let doc: Value = serde_yaml_ng::from_str(POLICY).unwrap_or(Value::Null);
    let meta = |item: &Value| {
        let mut l = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
        if let (Some(l), Some(Value::Object(extra))) = (l.as_object_mut(), item.get("labels")) {
            l.extend(extra.clone());
        }
        let mut m = json!({"name": item["name"], "labels": l, "annotations": {AUTOUPDATE: "true"}});
        if let Some(ns) = item.get("namespace") {
            m["namespace"] = ns.clone();
        }
        m
    };
    let items = |k: &str| doc[k].as_array().cloned().unwrap_or_default();
    let role = |kind: &str, r: &Value| {
        let mut o = json!({
            "apiVersion": format!("{GROUP}/v1"),
            "kind": kind,
            "metadata": meta(r),
        });
        if let Some(a) = r.get("aggregationRule") {
            o["aggregationRule"] = a.clone();
        }
        o["rules"] = r.get("rules").cloned().unwrap_or_else(|| json!([]));
        o
    };
    let binding = |kind: &str, role_kind: &str, b: &Value| {
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
            "kind": kind,
            "metadata": meta(b),
            "roleRef": {"apiGroup": GROUP, "kind": role_kind, "name": b["role"]},
        });
        if !subjects.is_empty() {
            o["subjects"] = json!(subjects);
        }
        o
    };
    // controller_policy.go: `system:controller:<name>` roles bound to the kube-system
    // ServiceAccount `<name>`.
    let controllers: Value = serde_yaml_ng::from_str(CONTROLLER_POLICY).unwrap_or(Value::Null);
    let controllers = controllers["controllerRoles"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let controller_role = |c: &Value| {
        let mut c = c.clone();
        c["name"] = json!(format!(
            "system:controller:{}",
            c["name"].as_str().unwrap_or("")
        ));
        role("ClusterRole", &c)
    };
    let controller_binding = |c: &Value| {
        let sa = c["name"].as_str().unwrap_or("");
        let name = format!("system:controller:{sa}");
        binding(
            "ClusterRoleBinding",
            "ClusterRole",
            &json!({"name": name, "role": name, "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": "kube-system"}]}),
        )
    };
    Policy {
        cluster_roles: items("clusterRoles")
            .iter()
            .map(|r| role("ClusterRole", r))
            .chain(controllers.iter().map(controller_role))
            .collect(),
        cluster_role_bindings: items("clusterRoleBindings")
            .iter()
            .map(|b| binding("ClusterRoleBinding", "ClusterRole", b))
            .chain(controllers.iter().map(controller_binding))
            .collect(),
        roles: items("roles").iter().map(|r| role("Role", r)).collect(),
        role_bindings: items("roleBindings")
            .iter()
            .map(|b| binding("RoleBinding", "Role", b))
            .collect(),
    }
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

fn name_ns(o: &Value) -> (String, Option<String>) {
    let m = |k: &str| o["metadata"][k].as_str().map(String::from);
    (m("name").unwrap_or_default(), m("namespace"))
}

/// The stored object `want` is reconciled into: None when it was missing (then created) or
/// has opted out of auto-update.
fn to_update(
    core: &Core,
    rd: &ResourceDef,
    ns: Option<&str>,
    name: &str,
    want: &Value,
    ctx: &mut WriteCtx,
) -> Option<Stored> {
    let Some(have) = core.get_stored(rd, ns, name) else {
        if let Err(e) = core.create(rd, ns, want.clone(), ctx) {
            tracing::warn!("bootstrap {} {name}: {}", rd.kind, e.message);
        }
        return None;
    };
    autoupdate(&have.object).then_some(have)
}

/// Creates what is missing of the default policy and adds what an
/// auto-updated object lacks; then aggregates the aggregated roles.
pub fn reconcile(core: &Core) {
    let p = policy();
    let mut ctx = WriteCtx::controller("kube-apiserver");
    for (plural, wanted) in [("clusterroles", &p.cluster_roles), ("roles", &p.roles)] {
        let Some(rd) = rd(plural) else { continue };
        for want in wanted {
            reconcile_role(core, rd, want, &mut ctx);
        }
    }
    for (plural, wanted) in [
        ("clusterrolebindings", &p.cluster_role_bindings),
        ("rolebindings", &p.role_bindings),
    ] {
        let Some(rd) = rd(plural) else { continue };
        for want in wanted {
            reconcile_binding(core, rd, want, &mut ctx);
        }
    }
    crate::controllers::clusterrole_aggregation::aggregate(core);
}

fn reconcile_role(core: &Core, rd: &ResourceDef, want: &Value, ctx: &mut WriteCtx) {
    let (name, ns) = name_ns(want);
    let ns = ns.as_deref();
    let Some(have) = to_update(core, rd, ns, &name, want, ctx) else {
        return;
    };
    let held = PolicyRule::of_role(&have.object);
    let wanted = PolicyRule::of_role(want);
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
        return;
    }
    let r = core.modify(rd, ns, &name, None, ctx, |cur| {
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
        tracing::warn!("reconciling {} {name}: {}", rd.kind, e.message);
    }
}

fn reconcile_binding(core: &Core, rd: &ResourceDef, want: &Value, ctx: &mut WriteCtx) {
    let (name, ns) = name_ns(want);
    let ns = ns.as_deref();
    let Some(have) = to_update(core, rd, ns, &name, want, ctx) else {
        return;
    };
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
        return;
    }
    let r = core.modify(rd, ns, &name, None, ctx, |cur| {
        let mut o = cur.clone();
        let mut subjects = o["subjects"].as_array().cloned().unwrap_or_default();
        subjects.extend(missing.iter().cloned());
        o["subjects"] = json!(subjects);
        Ok(o)
    });
    if let Err(e) = r {
        tracing::warn!("reconciling {} {name}: {}", rd.kind, e.message);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn policy_parses() {
        let p = super::policy();
        assert!(p.cluster_roles.len() > 30, "{}", p.cluster_roles.len());
        assert!(p.cluster_role_bindings.len() >= 12);
        let names: Vec<&str> = p
            .cluster_roles
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
            "system:controller:job-controller",
            "system:controller:generic-garbage-collector",
            "system:controller:statefulset-controller",
        ] {
            assert!(names.contains(&n), "{n}");
        }
        // 35 controller roles, each bound to its kube-system ServiceAccount.
        let controller_bindings: Vec<&serde_json::Value> = p
            .cluster_role_bindings
            .iter()
            .filter(|b| {
                b["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("system:controller:"))
            })
            .collect();
        assert_eq!(controller_bindings.len(), 35);
        let job = controller_bindings
            .iter()
            .find(|b| b["metadata"]["name"] == "system:controller:job-controller")
            .expect("job-controller binding");
        assert_eq!(
            job["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": "job-controller", "namespace": "kube-system"}])
        );
        // Every binding refers to a policy role (of its namespace).
        for b in &p.cluster_role_bindings {
            assert!(names.contains(&b["roleRef"]["name"].as_str().unwrap()));
        }
        assert_eq!(p.roles.len(), 7);
        for b in &p.role_bindings {
            let (name, ns) = (&b["roleRef"]["name"], &b["metadata"]["namespace"]);
            assert!(p
                .roles
                .iter()
                .any(|r| &r["metadata"]["name"] == name && &r["metadata"]["namespace"] == ns));
        }
    }
}
