//! Namespace lifecycle: a namespace being deleted has all its content
//! deleted (pods at once), then its `kubernetes` finalizer removed and the
//! namespace itself deleted.

use super::{deleting, Settings};
use crate::api::objects::{meta_str, Core, DeleteOptions};
use crate::registry;
use serde_json::Value;

pub fn pass(core: &Core, _s: &Settings) {
    let nsrd = &registry::RESOURCES[0];
    for ns in super::list(core, "", "namespaces", None) {
        if !deleting(&ns) {
            continue;
        }
        let name = meta_str(&ns, "name");
        let mut remaining = 0;
        // Custom resources too, each through one of its served versions.
        let served = core.resources();
        let mut seen = std::collections::HashSet::new();
        for rd in served
            .all()
            .filter(|r| r.namespaced && seen.insert((r.group, r.plural)))
        {
            let objects = core.store.list(&rd.key_prefix(Some(name))).0;
            for o in objects.into_iter().map(|s| s.object) {
                remaining += 1;
                if !deleting(&o) || rd.kind == "Pod" {
                    let opts = DeleteOptions {
                        grace_period: Some(0),
                        propagation: Some("Background".into()),
                        ..Default::default()
                    };
                    let _ = core.delete(rd, Some(name), meta_str(&o, "name"), &opts);
                }
                // Objects held by other finalizers are left to their owners.
                let fins = o
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .map_or(0, |a| a.len());
                if deleting(&o) && fins == 0 && rd.kind != "Pod" {
                    let _ = core
                        .store
                        .delete(&rd.key(Some(name), meta_str(&o, "name")), None);
                }
            }
        }
        if remaining == 0 {
            let _ = core.store.delete(&nsrd.key(None, name), None);
        }
    }
}
