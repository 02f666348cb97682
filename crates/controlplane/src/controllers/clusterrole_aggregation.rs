//! ClusterRole aggregation (upstream's clusterrole-aggregation controller):
//! a ClusterRole with `aggregationRule.clusterRoleSelectors` gets as its rules
//! the union of the rules of every other ClusterRole a selector matches (in
//! name order, duplicates left out), so `admin`, `edit` and `view` grow with
//! the roles labelled `rbac.authorization.k8s.io/aggregate-to-*`.

use super::Settings;
use crate::api::objects::{meta_str, Core, WriteCtx};
use crate::api::selector::LabelSelector;
use crate::registry;
use serde_json::{json, Value};

pub fn pass(core: &Core, _s: &Settings) {
    aggregate(core);
}

/// One pass: every aggregated ClusterRole's rules recomputed and written if
/// they changed.
pub(crate) fn aggregate(core: &Core) {
    let Some(rd) = registry::find("rbac.authorization.k8s.io", "v1", "clusterroles") else {
        return;
    };
    let (roles, _) = core.store.list(&rd.key_prefix(None));
    let mut roles: Vec<&Value> = roles.iter().map(|s| &*s.object).collect();
    roles.sort_by(|a, b| meta_str(a, "name").cmp(meta_str(b, "name")));
    let mut ctx = WriteCtx::controller("clusterrole-aggregation-controller");
    for role in &roles {
        let Some(selectors) = role
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
        else {
            continue;
        };
        let selectors: Vec<LabelSelector> =
            selectors.iter().map(LabelSelector::from_object).collect();
        let name = meta_str(role, "name");
        let mut rules: Vec<Value> = Vec::new();
        for other in &roles {
            if meta_str(other, "name") == name {
                continue;
            }
            // An empty selector selects nothing here (upstream skips it too).
            if !selectors.iter().any(|s| !s.is_empty() && s.matches(other)) {
                continue;
            }
            for r in other["rules"].as_array().into_iter().flatten() {
                if !rules.contains(r) {
                    rules.push(r.clone());
                }
            }
        }
        let current = role["rules"].as_array().cloned().unwrap_or_default();
        if current == rules {
            continue;
        }
        let r = core.modify(rd, None, name, None, &mut ctx, |cur| {
            let mut o = cur.clone();
            o["rules"] = json!(rules);
            Ok(o)
        });
        if let Err(e) = r {
            if e.code != 404 {
                tracing::warn!("aggregating ClusterRole {name}: {}", e.message);
            }
        }
    }
}
