//! Pruning (pkg/apiserver/schema/pruning): fields the schema does not specify are dropped,
//! except under x-kubernetes-preserve-unknown-fields; apiVersion, kind and metadata of the
//! resource root and of embedded resources are kept, metadata cut down to ObjectMeta's fields
//! as decoding into ObjectMeta does (objectmeta.Coerce).

use serde_json::Value;

use crate::schema::{Node, Structural};
use crate::{push_child, push_index};

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
        // One path buffer for the whole walk: a path is only made into a String for a field
        // that is pruned, not for every field visited.
        let mut path = String::new();
        // The resource root is treated as an embedded resource, as PruneWithOptions does.
        prune(obj, Some(&self.root), true, &mut path, &mut out);
        coerce_meta(obj, &path, &mut out);
        embedded_meta(&self.root, obj, &mut path, &mut out);
        out.sort();
        out
    }
}

/// Prunes a value (not a resource root) by one node, as the default checks do.
pub(crate) fn prune_node(x: &mut Value, s: &Node, out: &mut Vec<String>) {
    prune(x, Some(s), false, &mut String::new(), out);
}

fn joined(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

/// `root`: `x` is the resource itself, whose apiVersion, kind and metadata are kept as an
/// embedded resource's are.
fn prune(x: &mut Value, s: Option<&Node>, root: bool, path: &mut String, out: &mut Vec<String>) {
    if let Some(s) = s {
        if s.preserve_unknown {
            skip_prune(x, s, root, path, out);
            return;
        }
    }
    match x {
        Value::Object(m) => {
            let Some(s) = s else {
                for k in m.keys() {
                    out.push(joined(path, k));
                }
                m.clear();
                return;
            };
            let embedded = root || s.embedded;
            m.retain(|k, v| {
                if embedded && META_FIELDS.contains(&k.as_str()) {
                    return true;
                }
                let child = match s.properties.get(k) {
                    Some(p) => Some(p),
                    None => match &s.additional {
                        Some(a) => a.as_deref(),
                        None => {
                            if !META_FIELDS.contains(&k.as_str()) || !path.is_empty() {
                                out.push(joined(path, k));
                            }
                            return false;
                        }
                    },
                };
                let len = push_child(path, k);
                prune(v, child, false, path, out);
                path.truncate(len);
                true
            });
        }
        Value::Array(items) => {
            let it = s.and_then(|s| s.items.as_deref());
            for (i, v) in items.iter_mut().enumerate() {
                let len = push_index(path, i);
                prune(v, it, false, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

fn skip_prune(x: &mut Value, s: &Node, root: bool, path: &mut String, out: &mut Vec<String>) {
    match x {
        Value::Object(m) => {
            let embedded = root || s.embedded;
            for (k, v) in m.iter_mut() {
                if embedded && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                let child = match s.properties.get(k) {
                    Some(p) => Some(p),
                    None => match &s.additional {
                        Some(a) => a.as_deref(),
                        None => continue,
                    },
                };
                let len = push_child(path, k);
                prune(v, child, false, path, out);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            if let Some(it) = &s.items {
                for (i, v) in items.iter_mut().enumerate() {
                    let len = push_index(path, i);
                    skip_prune(v, it, false, path, out);
                    path.truncate(len);
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
    meta.retain(|k, _| {
        let known = OBJECT_META.contains(&k.as_str());
        if !known {
            out.push(joined(&joined(path, "metadata"), k));
        }
        known
    });
}

/// The metadata of embedded resources below the root; subtrees without one are not walked.
fn embedded_meta(n: &Node, x: &mut Value, path: &mut String, out: &mut Vec<String>) {
    match x {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                let child = n.properties.get(k).or_else(|| n.additional_schema());
                if let Some(c) = child.filter(|c| c.below.embedded) {
                    let len = push_child(path, k);
                    if c.embedded {
                        coerce_meta(v, path, out);
                    }
                    embedded_meta(c, v, path, out);
                    path.truncate(len);
                }
            }
        }
        Value::Array(items) => {
            if let Some(it) = n.items.as_deref().filter(|it| it.below.embedded) {
                for (i, v) in items.iter_mut().enumerate() {
                    let len = push_index(path, i);
                    if it.embedded {
                        coerce_meta(v, path, out);
                    }
                    embedded_meta(it, v, path, out);
                    path.truncate(len);
                }
            }
        }
        _ => {}
    }
}
