//! Pruning (pkg/apiserver/schema/pruning): fields the schema does not specify are dropped,
//! except under x-kubernetes-preserve-unknown-fields; apiVersion, kind and metadata of the
//! resource root and of embedded resources are kept, metadata cut down to ObjectMeta's fields
//! as decoding into ObjectMeta does (objectmeta.Coerce).

use serde_json::Value;

use crate::schema::{Node, Structural};

const META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// ObjectMeta's JSON fields (k8s.io/apimachinery/pkg/apis/meta/v1).
const OBJECT_META: [&str; 15] = [
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

impl Structural {
    /// Prunes `obj` (a whole custom resource) in place; returns the pruned paths, sorted, as
    /// upstream's unknown-field warnings name them (`spec.foo`, `spec.list[0].bar`,
    /// `metadata.foo`): the warning text is `unknown field "<path>"`.
    pub fn prune(&self, obj: &mut Value) -> Vec<String> {
        let mut out = Vec::new();
        // The resource root is treated as an embedded resource, as PruneWithOptions does.
        let mut root = self.root.clone();
        root.embedded = true;
        prune(obj, Some(&root), "", &mut out);
        coerce_meta(obj, "", &mut out);
        embedded_meta(&self.root, obj, "", &mut out);
        out.sort();
        out
    }
}

/// Prunes a value (not a resource root) by one node, as the default checks do.
pub(crate) fn prune_node(x: &mut Value, s: &Node, out: &mut Vec<String>) {
    prune(x, Some(s), "", out);
}

fn append_key(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

fn prune(x: &mut Value, s: Option<&Node>, path: &str, out: &mut Vec<String>) {
    if let Some(s) = s {
        if s.preserve_unknown {
            skip_prune(x, s, path, out);
            return;
        }
    }
    match x {
        Value::Object(m) => {
            let Some(s) = s else {
                for k in m.keys() {
                    out.push(append_key(path, k));
                }
                m.clear();
                return;
            };
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if s.embedded && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if let Some(p) = s.properties.get(&k) {
                    if let Some(v) = m.get_mut(&k) {
                        prune(v, Some(p), &append_key(path, &k), out);
                    }
                } else if let Some(a) = &s.additional {
                    if let Some(v) = m.get_mut(&k) {
                        prune(v, a.as_deref(), &append_key(path, &k), out);
                    }
                } else {
                    if !META_FIELDS.contains(&k.as_str()) || !path.is_empty() {
                        out.push(append_key(path, &k));
                    }
                    m.remove(&k);
                }
            }
        }
        Value::Array(items) => {
            let it = s.and_then(|s| s.items.as_deref());
            for (i, v) in items.iter_mut().enumerate() {
                prune(v, it, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn skip_prune(x: &mut Value, s: &Node, path: &str, out: &mut Vec<String>) {
    match x {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if s.embedded && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if let Some(p) = s.properties.get(k) {
                    prune(v, Some(p), &append_key(path, k), out);
                } else if let Some(a) = &s.additional {
                    prune(v, a.as_deref(), &append_key(path, k), out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(it) = &s.items {
                for (i, v) in items.iter_mut().enumerate() {
                    skip_prune(v, it, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// Drops the fields ObjectMeta does not have from `obj.metadata`.
fn coerce_meta(obj: &mut Value, path: &str, out: &mut Vec<String>) {
    let Some(Value::Object(meta)) = obj.get_mut("metadata") else {
        return;
    };
    let unknown: Vec<String> = meta
        .keys()
        .filter(|k| !OBJECT_META.contains(&k.as_str()))
        .cloned()
        .collect();
    let mpath = append_key(path, "metadata");
    for k in unknown {
        out.push(append_key(&mpath, &k));
        meta.remove(&k);
    }
}

/// The metadata of embedded resources below the root.
fn embedded_meta(n: &Node, x: &mut Value, path: &str, out: &mut Vec<String>) {
    match x {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                let child = n.properties.get(k).or_else(|| n.additional_schema());
                if let Some(c) = child {
                    let p = append_key(path, k);
                    if c.embedded {
                        coerce_meta(v, &p, out);
                    }
                    embedded_meta(c, v, &p, out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(it) = &n.items {
                for (i, v) in items.iter_mut().enumerate() {
                    let p = format!("{path}[{i}]");
                    if it.embedded {
                        coerce_meta(v, &p, out);
                    }
                    embedded_meta(it, v, &p, out);
                }
            }
        }
        _ => {}
    }
}
