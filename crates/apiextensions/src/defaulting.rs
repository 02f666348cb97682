//! Defaulting (pkg/apiserver/schema/defaulting): `default`s of missing fields (and of nulls
//! where the schema is not nullable), applied top-down so defaults inside defaults apply too;
//! then nulls of non-nullable fields without a default are dropped (PruneNonNullableNulls...).

use serde_json::Value;

use crate::schema::{Node, Structural};

impl Structural {
    /// Applies the schema's defaults to a custom resource in place. Upstream then prunes the
    /// result (defaults are checked to be pruned when the CRD is created).
    pub fn apply_defaults(&self, obj: &mut Value) {
        default(obj, Some(&self.root));
        prune_nulls(obj, Some(&self.root));
    }
}

fn non_nullable_null(x: &Value, s: Option<&Node>) -> bool {
    x.is_null() && s.is_some_and(|s| !s.nullable)
}

fn default(x: &mut Value, s: Option<&Node>) {
    let Some(s) = s else { return };
    match x {
        Value::Object(m) => {
            for (k, p) in &s.properties {
                let Some(d) = &p.default else { continue };
                let missing = m.get(k).is_none_or(|v| non_nullable_null(v, Some(p)));
                if missing {
                    m.insert(k.clone(), d.clone());
                }
            }
            for (k, v) in m.iter_mut() {
                if let Some(p) = s.properties.get(k) {
                    default(v, Some(p));
                } else if let Some(a) = &s.additional {
                    let a = a.as_deref();
                    if non_nullable_null(v, a) {
                        if let Some(d) = a.and_then(|a| a.default.clone()) {
                            *v = d;
                        }
                    }
                    default(v, a);
                }
            }
        }
        Value::Array(items) => {
            let it = s.items.as_deref();
            for v in items.iter_mut() {
                if non_nullable_null(v, it) {
                    if let Some(d) = it.and_then(|i| i.default.clone()) {
                        *v = d;
                    }
                }
                default(v, it);
            }
        }
        _ => {}
    }
}

fn prune_nulls(x: &mut Value, s: Option<&Node>) {
    match x {
        Value::Object(m) => {
            let drop: Vec<String> = m
                .iter()
                .filter(|(k, v)| {
                    let c = s.and_then(|s| s.field(k));
                    v.is_null() && c.is_some_and(|c| !c.nullable && c.default.is_none())
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in drop {
                m.remove(&k);
            }
            for (k, v) in m.iter_mut() {
                prune_nulls(v, s.and_then(|s| s.field(k)));
            }
        }
        Value::Array(items) => {
            let it = s.and_then(|s| s.items.as_deref());
            for v in items.iter_mut() {
                prune_nulls(v, it);
            }
        }
        _ => {}
    }
}
