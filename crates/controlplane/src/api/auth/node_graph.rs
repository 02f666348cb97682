//! The Node authorizer's graph: which Secrets, ConfigMaps and PersistentVolumeClaims the
//! pods bound to each node reference, as upstream's graph fed by its pod informer. Built once
//! from the store (watch first, then list, so nothing falls between), then kept current by
//! applying the pods' watch events before each decision: a pod's new reference counts for
//! the very next request, and a node's `get` of a Secret is a hash lookup however many pods
//! the cluster runs. A dropped watch (the store drops a watcher that falls behind) makes the
//! next decision rebuild from a fresh list.

use crate::registry;
use crate::store::{EventType, Store, WatchStream};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The kinds of object a pod references by name in its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefKind {
    Secret,
    ConfigMap,
    Claim,
}

impl RefKind {
    /// The kind a core resource plural names (`None` for the others).
    pub fn from_plural(plural: &str) -> Option<RefKind> {
        match plural {
            "secrets" => Some(RefKind::Secret),
            "configmaps" => Some(RefKind::ConfigMap),
            "persistentvolumeclaims" => Some(RefKind::Claim),
            _ => None,
        }
    }
}

/// Everything `pod` references by name, as upstream's graph populator collects it: image
/// pull secrets, volumes (and projected sources, volume plugins' `secretRef`s and
/// `nodePublishSecretRef`s), env and envFrom of every container; claims also through generic
/// ephemeral volumes (`<pod>-<volume>`). Duplicates are kept (they are counted as one edge
/// each way, added and removed together).
pub fn pod_refs(pod: &Value) -> Vec<(RefKind, String)> {
    let mut out = Vec::new();
    let spec = &pod["spec"];
    fn arr(v: Option<&Value>) -> &[Value] {
        v.and_then(Value::as_array).map_or(&[], |a| a)
    }
    let mut push = |k: RefKind, v: Option<&Value>| {
        if let Some(n) = v.and_then(Value::as_str) {
            out.push((k, n.to_string()));
        }
    };
    for s in arr(spec.get("imagePullSecrets")) {
        push(RefKind::Secret, s.get("name"));
    }
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    for v in arr(spec.get("volumes")) {
        push(RefKind::Secret, v.pointer("/secret/secretName"));
        push(RefKind::Secret, v.pointer("/azureFile/secretName"));
        if let Some(m) = v.as_object() {
            for src in m.values() {
                push(RefKind::Secret, src.pointer("/secretRef/name"));
                push(RefKind::Secret, src.pointer("/nodePublishSecretRef/name"));
            }
        }
        for p in arr(v.pointer("/projected/sources")) {
            push(RefKind::Secret, p.pointer("/secret/name"));
            push(RefKind::ConfigMap, p.pointer("/configMap/name"));
        }
        push(RefKind::ConfigMap, v.pointer("/configMap/name"));
        push(
            RefKind::Claim,
            v.pointer("/persistentVolumeClaim/claimName"),
        );
        if v.get("ephemeral").is_some() {
            let vol = v["name"].as_str().unwrap_or("");
            push(
                RefKind::Claim,
                Some(&Value::String(format!("{pod_name}-{vol}"))),
            );
        }
    }
    for k in ["containers", "initContainers", "ephemeralContainers"] {
        for c in arr(spec.get(k)) {
            for e in arr(c.get("env")) {
                push(RefKind::Secret, e.pointer("/valueFrom/secretKeyRef/name"));
                push(
                    RefKind::ConfigMap,
                    e.pointer("/valueFrom/configMapKeyRef/name"),
                );
            }
            for e in arr(c.get("envFrom")) {
                push(RefKind::Secret, e.pointer("/secretRef/name"));
                push(RefKind::ConfigMap, e.pointer("/configMapRef/name"));
            }
        }
    }
    out
}

/// node → (kind, namespace, name) → how many of its pods reference it.
type Edges = HashMap<String, HashMap<(RefKind, String, String), u32>>;

/// One bound pod's contribution, kept to remove it exactly when the pod changes or goes.
struct PodEdges {
    node: String,
    ns: String,
    refs: Vec<(RefKind, String)>,
}

#[derive(Default)]
struct Index {
    pods: HashMap<Arc<str>, PodEdges>,
    edges: Edges,
}

impl Index {
    fn remove(&mut self, key: &str) {
        let Some(old) = self.pods.remove(key) else {
            return;
        };
        if let Some(of_node) = self.edges.get_mut(&old.node) {
            for (k, name) in old.refs {
                let e = (k, old.ns.clone(), name);
                if let Some(n) = of_node.get_mut(&e) {
                    *n -= 1;
                    if *n == 0 {
                        of_node.remove(&e);
                    }
                }
            }
            if of_node.is_empty() {
                self.edges.remove(&old.node);
            }
        }
    }

    /// Replaces what the pod at `key` contributes by `pod` (a pod not bound to a node, or
    /// referencing nothing, contributes nothing).
    fn set(&mut self, key: Arc<str>, pod: Option<&Value>) {
        self.remove(&key);
        let Some(pod) = pod else { return };
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if node.is_empty() {
            return;
        }
        let refs = pod_refs(pod);
        if refs.is_empty() {
            return;
        }
        let ns = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let of_node = self.edges.entry(node.to_string()).or_default();
        for (k, name) in &refs {
            *of_node.entry((*k, ns.clone(), name.clone())).or_insert(0) += 1;
        }
        self.pods.insert(
            key,
            PodEdges {
                node: node.to_string(),
                ns,
                refs,
            },
        );
    }
}

struct State {
    index: Index,
    /// Pod changes not applied yet; `None` before the first build or after the store
    /// dropped the watch (the next decision rebuilds).
    changes: Option<WatchStream>,
    /// The revision the index reflects (events at or below it are already in).
    revision: u64,
}

/// The graph of one API server (held by [`super::Rbac`], beside the store it reads).
pub struct NodeGraph {
    state: Mutex<State>,
}

impl Default for NodeGraph {
    fn default() -> Self {
        NodeGraph {
            state: Mutex::new(State {
                index: Index::default(),
                changes: None,
                revision: 0,
            }),
        }
    }
}

impl NodeGraph {
    /// Applies the pods' changes since the last decision (or builds from the store), then
    /// hands the current index to `f`.
    fn with_index<T>(&self, store: &dyn Store, f: impl FnOnce(&Index) -> T) -> T {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let prefix = registry::pods().key_prefix(None);
        loop {
            let Some(w) = st.changes.as_mut() else {
                // Watch first, then list: a write between the two is in both, and the
                // revision filter below keeps it from being applied twice.
                st.changes = store.watch(&prefix, store.revision()).ok();
                let (pods, revision) = store.list(&prefix);
                let mut index = Index::default();
                for p in pods {
                    let key: Arc<str> = Arc::from(pod_key(&p.object).as_str());
                    index.set(key, Some(&p.object));
                }
                st.index = index;
                st.revision = revision;
                if st.changes.is_none() {
                    // No watch to keep it current: answer from this fresh list.
                    return f(&st.index);
                }
                continue;
            };
            let mut events = Vec::new();
            let lost = loop {
                match w.rx.try_recv() {
                    Ok(e) => events.push(e),
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break false,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => break true,
                }
            };
            if lost {
                st.changes = None;
                continue;
            }
            for e in events {
                if e.revision <= st.revision {
                    continue;
                }
                st.revision = e.revision;
                let pod = (e.kind != EventType::Deleted).then_some(&*e.object);
                st.index.set(e.key.clone(), pod);
            }
            return f(&st.index);
        }
    }

    /// Whether a pod bound to `node` references the `kind` object `ns/name`.
    pub fn references(
        &self,
        store: &dyn Store,
        node: &str,
        kind: RefKind,
        ns: &str,
        name: &str,
    ) -> bool {
        self.with_index(store, |ix| {
            ix.edges.get(node).is_some_and(|of_node| {
                of_node.contains_key(&(kind, ns.to_string(), name.to_string()))
            })
        })
    }

    /// The claims (`namespace`, `name`) the pods bound to `node` use.
    pub fn claims(&self, store: &dyn Store, node: &str) -> Vec<(String, String)> {
        self.with_index(store, |ix| {
            ix.edges
                .get(node)
                .map(|of_node| {
                    of_node
                        .keys()
                        .filter(|(k, _, _)| *k == RefKind::Claim)
                        .map(|(_, ns, name)| (ns.clone(), name.clone()))
                        .collect()
                })
                .unwrap_or_default()
        })
    }
}

/// The store key of a listed pod (the watch events carry theirs).
fn pod_key(pod: &Value) -> String {
    let meta = |k: &str| {
        pod.pointer(&format!("/metadata/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    registry::pods().key(Some(meta("namespace")), meta("name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileStore;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, Arc<FileStore>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FileStore::open(dir.path()).expect("store");
        (dir, s)
    }

    fn pod(ns: &str, name: &str, node: &str, secret: &str) -> Value {
        json!({"metadata": {"namespace": ns, "name": name},
               "spec": {"nodeName": node,
                        "volumes": [{"name": "v", "secret": {"secretName": secret}}],
                        "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "cm"}}]}]}})
    }

    #[test]
    fn follows_pod_writes_immediately() {
        let (_d, s) = store();
        let g = NodeGraph::default();
        let key = registry::pods().key(Some("a"), "p");
        s.create(&key, pod("a", "p", "n1", "s1")).expect("create");
        assert!(g.references(&*s, "n1", RefKind::Secret, "a", "s1"));
        assert!(g.references(&*s, "n1", RefKind::ConfigMap, "a", "cm"));
        assert!(!g.references(&*s, "n2", RefKind::Secret, "a", "s1"));
        assert!(!g.references(&*s, "n1", RefKind::Secret, "b", "s1"));
        // The pod now references another secret: the old one is gone at once.
        s.update(&key, pod("a", "p", "n1", "s2"), None)
            .expect("update");
        assert!(!g.references(&*s, "n1", RefKind::Secret, "a", "s1"));
        assert!(g.references(&*s, "n1", RefKind::Secret, "a", "s2"));
        // A second pod with the same secret: deleting one keeps the edge.
        let key2 = registry::pods().key(Some("a"), "q");
        s.create(&key2, pod("a", "q", "n1", "s2")).expect("create");
        s.delete(&key, None).expect("delete");
        assert!(g.references(&*s, "n1", RefKind::Secret, "a", "s2"));
        s.delete(&key2, None).expect("delete");
        assert!(!g.references(&*s, "n1", RefKind::Secret, "a", "s2"));
        assert!(!g.references(&*s, "n1", RefKind::ConfigMap, "a", "cm"));
        assert!(g.state.lock().expect("lock").index.edges.is_empty());
    }

    #[test]
    fn ephemeral_and_plain_claims() {
        let p = json!({"metadata": {"namespace": "a", "name": "p"},
                       "spec": {"nodeName": "n1", "volumes": [
                           {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                           {"name": "e", "ephemeral": {}}]}});
        let (_d, s) = store();
        s.create(&registry::pods().key(Some("a"), "p"), p)
            .expect("create");
        let g = NodeGraph::default();
        let mut claims = g.claims(&*s, "n1");
        claims.sort();
        assert_eq!(
            claims,
            vec![("a".into(), "data".into()), ("a".into(), "p-e".into())]
        );
        assert!(g.claims(&*s, "n2").is_empty());
    }

    /// The old decision: every pod in the store scanned.
    fn scan(store: &dyn Store, node: &str, ns: &str, name: &str) -> bool {
        store
            .list(&registry::pods().key_prefix(None))
            .0
            .iter()
            .map(|p| &*p.object)
            .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
            .filter(|p| p.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
            .any(|p| {
                pod_refs(p)
                    .iter()
                    .any(|(k, n)| *k == RefKind::Secret && n == name)
            })
    }

    /// Node secret GET decision with 10,000 pods on 100 nodes: the old scan of every pod
    /// against the graph (rows in BENCHMARKS.md). Run with
    /// `cargo test -p rktup-controlplane --release --lib node_graph::tests::bench -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_node_secret_get_10000_pods() {
        let (_d, s) = store();
        for i in 0..10_000 {
            let ns = format!("ns-{}", i % 50);
            let name = format!("pod-{i}");
            let node = format!("node-{}", i % 100);
            s.create(
                &registry::pods().key(Some(&ns), &name),
                pod(&ns, &name, &node, &format!("secret-{i}")),
            )
            .expect("create");
        }
        let g = NodeGraph::default();
        let time = |label: &str, n: usize, f: &dyn Fn(usize) -> bool| {
            let mut took = Vec::with_capacity(n);
            for round in 0..n {
                let i = (round * 7919) % 10_000;
                let t = std::time::Instant::now();
                let ok = f(i);
                took.push(t.elapsed());
                assert!(ok, "{label} {i}");
            }
            took.sort();
            println!(
                "{label}: n={n} p50={:?} p99={:?}",
                took[n / 2],
                took[n * 99 / 100]
            );
        };
        let args = |i: usize| {
            (
                format!("node-{}", i % 100),
                format!("ns-{}", i % 50),
                format!("secret-{i}"),
            )
        };
        time("scan (before)", 200, &|i| {
            let (node, ns, name) = args(i);
            scan(&*s, &node, &ns, &name)
        });
        let t = std::time::Instant::now();
        assert!(g.references(&*s, "node-0", RefKind::Secret, "ns-0", "secret-0"));
        println!("graph first build: {:?}", t.elapsed());
        time("graph (after)", 100_000, &|i| {
            let (node, ns, name) = args(i);
            g.references(&*s, &node, RefKind::Secret, &ns, &name)
        });
    }
}
