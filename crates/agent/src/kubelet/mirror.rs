//! Mirror pods: the API's view of a static pod (`--pod-manifest-path`). A mirror pod has the
//! manifest's spec, is bound to this node, is named `<name>-<node>`, carries the manifest's hash
//! in `kubernetes.io/config.mirror` and is owned by the Node (so it goes away with it). The pod
//! source for them is the pod sync loop (`pods`); the kubelet port finds static pods by them.

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use rktup_runtime::runtime::PodEntry;
use std::collections::BTreeMap;

pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

pub fn is_mirror(p: &Pod) -> bool {
    p.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
}

/// The manifest hash a mirror pod was made from.
pub fn hash(p: &Pod) -> Option<&str> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MIRROR_ANNOTATION))
        .map(String::as_str)
}

/// The name of a static pod's mirror pod.
pub fn name(e: &PodEntry, node: &str) -> String {
    name_of(&e.plan.name, node)
}

/// The name of the mirror pod of static pod `pod_name` on `node`: `<name>-<node>`.
pub fn name_of(pod_name: &str, node: &str) -> String {
    format!("{pod_name}-{node}")
}

/// The mirror pod of the static pod `e` runs, from its manifest (`None` when the manifest cannot
/// be read any more). The owner reference's uid is filled in by the caller (the Node's).
pub fn mirror_for(e: &PodEntry, node: &str) -> Option<Pod> {
    let src = e.plan.source.as_ref()?;
    let text = std::fs::read_to_string(src).ok()?;
    let mut pod = rktup_runtime::manifest::parse_pod(&src.display().to_string(), &text).ok()?;
    pod.metadata.namespace = Some(e.plan.namespace.clone());
    Some(mirror_of(&pod, &e.plan.source_hash, node))
}

/// The mirror pod of a static pod read from a manifest whose hash is `hash` (a static pod that
/// has no runtime pod yet, e.g. waiting for its image). The owner reference's uid is filled in
/// by the caller.
pub fn mirror_of(manifest: &Pod, hash: &str, node: &str) -> Pod {
    let mut pod = manifest.clone();
    let ns = pod
        .metadata
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    pod.metadata.name = Some(name_of(
        manifest.metadata.name.as_deref().unwrap_or_default(),
        node,
    ));
    pod.metadata.namespace = Some(ns);
    pod.metadata.uid = None;
    pod.metadata.resource_version = None;
    let ann = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    ann.insert(MIRROR_ANNOTATION.into(), hash.to_string());
    ann.insert("kubernetes.io/config.hash".into(), hash.to_string());
    ann.insert("kubernetes.io/config.source".into(), "file".into());
    pod.metadata.owner_references = Some(vec![OwnerReference {
        api_version: Node::api_version(&()).into(),
        kind: Node::kind(&()).into(),
        name: node.to_string(),
        uid: String::new(),
        controller: Some(true),
        ..Default::default()
    }]);
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node.to_string());
    }
    pod.status = None;
    pod
}
