//! `persistentVolumeClaim` and generic `ephemeral` volumes, and the node's half of the control
//! plane's `rktup.io/local-path` provisioner.
//!
//! - An ephemeral volume is the claim `<pod>-<volume>`, which must be owned by the pod.
//! - A claim volume is resolved as kubelet's volume manager does (claim → bound PersistentVolume →
//!   its source) and handed to the runtime as the `hostPath` it is: the PV's `hostPath` (with its
//!   type) or `local` path (which must exist). `readOnly` on the claim makes every mount of the
//!   volume read-only. A missing or unbound claim keeps the pod Pending with a FailedMount event,
//!   retried (`Blocked::Mount`), never Failed.
//! - The node owns its local-path volumes: it announces their root, `<root-dir>/local-path`, in
//!   its Node's `rktup.io/local-path-root` annotation (the provisioner puts each volume at
//!   `<root>/pvc-<uid>_<namespace>_<claim>`), creates a volume's directory (mode 0777, as
//!   local-path-provisioner does, so non-root pods can write) when a pod first mounts it, and
//!   removes the directories whose volume object is gone when the volume's reclaim policy was
//!   Delete (the control plane deletes the object; a node may not). Each directory's last seen
//!   policy is kept beside it (`<root>/.reclaim/<dir>`), so a Retain volume's data survives the
//!   deletion of its object, as upstream.

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, NodeSelector, NodeSelectorRequirement, PersistentVolume,
    PersistentVolumeClaim, Pod,
};
use kube::api::{Api, Patch, PatchParams};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

/// The Node annotation the control plane's provisioner reads.
pub const ROOT_ANNOTATION: &str = "rktup.io/local-path-root";
/// The provisioner whose volumes this node owns.
pub const PROVISIONER: &str = "rktup.io/local-path";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// Where this node keeps its local-path volumes.
pub fn root(root_dir: &Path) -> PathBuf {
    root_dir.join("local-path")
}

/// Why a claim volume cannot be mounted (the text after `MountVolume.SetUp failed for volume
/// "v" : `), worded as kubelet's volume manager words it.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("error processing PVC {ns}/{claim}: failed to fetch PVC from API server: {message}")]
    ClaimFetch {
        ns: String,
        claim: String,
        message: String,
    },
    #[error("error processing PVC {ns}/{claim}: PVC {ns}/{claim} was not created for pod {ns}/{pod} (pod is not owner)")]
    NotForPod {
        ns: String,
        claim: String,
        pod: String,
    },
    #[error("error processing PVC {ns}/{claim}: PVC is not bound")]
    Unbound { ns: String, claim: String },
    #[error(
        "error processing PVC {ns}/{claim}: failed to fetch PV {pv:?} from API server: {message}"
    )]
    VolumeFetch {
        ns: String,
        claim: String,
        pv: String,
        message: String,
    },
    #[error("error processing PVC {ns}/{claim}: pvc {claim:?} not bound to pv {pv:?}")]
    NotBoundToVolume {
        ns: String,
        claim: String,
        pv: String,
    },
    #[error("unsupported volume type: persistentVolumeClaim {claim:?} is bound to PersistentVolume {pv:?} whose source this node cannot mount (supported: hostPath, local)")]
    Unsupported { claim: String, pv: String },
    /// The volume's node affinity does not admit this node (the local volume lives elsewhere).
    #[error("no matching NodeSelectorTerms")]
    NodeAffinity,
    #[error("path {path:?} does not exist")]
    LocalMissing { path: String },
    #[error("failed to create {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
}

/// What a claim volume becomes for the runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimMount {
    pub host_path: HostPathVolumeSource,
    pub read_only: bool,
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Resolves claim `claim` of namespace `ns` to the host path of its bound volume; a local-path
/// volume's directory is created under `local_root` (DirectoryOrCreate) and its reclaim policy
/// remembered.
/// `owner`: for an ephemeral volume's claim, the pod (name, uid) that must own it.
pub async fn resolve(
    client: &kube::Client,
    ns: &str,
    claim: &str,
    read_only: bool,
    owner: Option<(&str, &str)>,
    local_root: &Path,
    node: Option<&Node>,
) -> Result<ClaimMount, ClaimError> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvc = claims
        .get(claim)
        .await
        .map_err(|e| ClaimError::ClaimFetch {
            ns: ns.into(),
            claim: claim.into(),
            message: api_message(&e),
        })?;
    if let Some((pod, pod_uid)) = owner {
        let owned = pvc
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == pod_uid);
        if !owned {
            return Err(ClaimError::NotForPod {
                ns: ns.into(),
                claim: claim.into(),
                pod: pod.into(),
            });
        }
    }
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
    let pv_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != Some("Bound") || pv_name.is_empty() {
        return Err(ClaimError::Unbound {
            ns: ns.into(),
            claim: claim.into(),
        });
    }
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv = volumes
        .get(&pv_name)
        .await
        .map_err(|e| ClaimError::VolumeFetch {
            ns: ns.into(),
            claim: claim.into(),
            pv: pv_name.clone(),
            message: api_message(&e),
        })?;
    let spec = pv.spec.clone().unwrap_or_default();
    let ref_uid = spec.claim_ref.as_ref().and_then(|r| r.uid.clone());
    if ref_uid.is_none() || ref_uid != pvc.metadata.uid {
        return Err(ClaimError::NotBoundToVolume {
            ns: ns.into(),
            claim: claim.into(),
            pv: pv_name,
        });
    }
    if let (Some(sel), Some(node)) = (
        spec.node_affinity
            .as_ref()
            .and_then(|a| a.required.as_ref()),
        node,
    ) {
        if !node_selector_matches(sel, node) {
            return Err(ClaimError::NodeAffinity);
        }
    }
    let host_path = if let Some(hp) = &spec.host_path {
        if is_local_path(&pv) {
            let dir = PathBuf::from(&hp.path);
            // Only directories under this node's root are this node's to make.
            if dir.parent() == Some(local_root) {
                let policy = spec
                    .persistent_volume_reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into());
                make_volume_dir(&dir, &policy).map_err(|source| ClaimError::Create {
                    path: hp.path.clone(),
                    source,
                })?;
            }
        }
        hp.clone()
    } else if let Some(local) = &spec.local {
        if !Path::new(&local.path).exists() {
            return Err(ClaimError::LocalMissing {
                path: local.path.clone(),
            });
        }
        HostPathVolumeSource {
            path: local.path.clone(),
            type_: None,
        }
    } else {
        return Err(ClaimError::Unsupported {
            claim: claim.into(),
            pv: pv_name,
        });
    };
    Ok(ClaimMount {
        host_path,
        read_only,
    })
}

/// A required node selector (terms ORed, expressions ANDed) against the node's labels and name.
fn node_selector_matches(sel: &NodeSelector, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.clone().unwrap_or_default();
    let req = |r: &NodeSelectorRequirement, value: Option<&String>| {
        let vals = r.values.clone().unwrap_or_default();
        let num = |s: &str| s.parse::<i64>().ok();
        match r.operator.as_str() {
            "In" => value.is_some_and(|v| vals.contains(v)),
            "NotIn" => value.is_none_or(|v| !vals.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            "Gt" | "Lt" => {
                let (Some(a), Some(b)) = (
                    value.and_then(|v| num(v)),
                    vals.first().and_then(|v| num(v)),
                ) else {
                    return false;
                };
                if r.operator == "Gt" {
                    a > b
                } else {
                    a < b
                }
            }
            _ => false,
        }
    };
    sel.node_selector_terms.iter().any(|t| {
        let exprs = t.match_expressions.iter().flatten();
        let fields = t.match_fields.iter().flatten();
        let has_any = t.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
            || t.match_fields.as_ref().is_some_and(|f| !f.is_empty());
        has_any
            && exprs.clone().all(|r| req(r, labels.get(&r.key)))
            && fields.clone().all(|r| {
                let v = (r.key == "metadata.name").then_some(&name);
                req(r, v)
            })
    })
}

fn is_local_path(pv: &PersistentVolume) -> bool {
    pv.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROVISIONED_BY))
        .is_some_and(|p| p == PROVISIONER)
}

fn marker(dir: &Path) -> Option<PathBuf> {
    let name = dir.file_name()?;
    Some(dir.parent()?.join(".reclaim").join(name))
}

/// Records a volume directory's reclaim policy beside it (when it changed).
fn remember_policy(dir: &Path, policy: &str) -> std::io::Result<()> {
    let Some(m) = marker(dir) else { return Ok(()) };
    if std::fs::read_to_string(&m).is_ok_and(|p| p == policy) {
        return Ok(());
    }
    if let Some(parent) = m.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = m.with_extension("tmp");
    std::fs::write(&tmp, policy)?;
    std::fs::rename(&tmp, &m)
}

/// A local-path volume's directory, made on first use (0777: pods of any user write to it).
fn make_volume_dir(dir: &Path, policy: &str) -> std::io::Result<()> {
    if !dir.is_dir() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))?;
    }
    remember_policy(dir, policy)
}

/// The pod with its claim volumes replaced by the host paths they resolve to (and the mounts
/// of read-only claims made read-only); every volume is tried, each failure reported as
/// (volume, message).
pub async fn with_claims(
    client: &kube::Client,
    pod: &Pod,
    node_name: &str,
    local_root: &Path,
) -> Result<Pod, Vec<(String, String)>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = pod.clone();
    let mut failed = vec![];
    let Some(spec) = out.spec.as_mut() else {
        return Ok(out);
    };
    let mut node: Option<Node> = None;
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut read_only = vec![];
    for v in spec.volumes.iter_mut().flatten() {
        // A generic ephemeral volume is the claim `<pod>-<volume>` made for (owned by) the pod.
        let (claim, ro, owner) = if let Some(c) = &v.persistent_volume_claim {
            (c.claim_name.clone(), c.read_only.unwrap_or(false), None)
        } else if v.ephemeral.is_some() {
            (
                format!("{pod_name}-{}", v.name),
                false,
                Some((pod_name.as_str(), pod_uid.as_str())),
            )
        } else {
            continue;
        };
        if node.is_none() {
            // This node, for the volumes' node affinity (read once per pod).
            let nodes: Api<Node> = Api::all(client.clone());
            node = nodes.get(node_name).await.ok();
        }
        match resolve(client, ns, &claim, ro, owner, local_root, node.as_ref()).await {
            Ok(m) => {
                v.persistent_volume_claim = None;
                v.ephemeral = None;
                v.host_path = Some(m.host_path);
                if m.read_only {
                    read_only.push(v.name.clone());
                }
            }
            Err(e @ ClaimError::NodeAffinity) => failed.push((
                v.name.clone(),
                format!(
                    "MountVolume.NodeAffinity check failed for volume {:?} : {e}",
                    v.name
                ),
            )),
            Err(e) => failed.push((
                v.name.clone(),
                format!("MountVolume.SetUp failed for volume {:?} : {e}", v.name),
            )),
        }
    }
    if !failed.is_empty() {
        return Err(failed);
    }
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        for m in c.volume_mounts.iter_mut().flatten() {
            if read_only.contains(&m.name) {
                m.read_only = Some(true);
            }
        }
    }
    Ok(out)
}

/// Announces the root on the Node (once, and again if the annotation went, e.g. the Node was
/// re-registered), then every 10 s removes the directories of volumes that are gone.
pub async fn run(client: kube::Client, node: String, root_dir: PathBuf) {
    let root = root(&root_dir);
    if let Err(e) = std::fs::create_dir_all(&root) {
        warn!(
            "kubelet: local-path root {}: {e}; no local-path volumes on this node",
            root.display()
        );
        return;
    }
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        announce(&nodes, &node, &root).await;
        collect(&client, &root).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

async fn announce(nodes: &Api<Node>, node: &str, root: &Path) {
    let want = root.to_string_lossy().into_owned();
    let Ok(n) = nodes.get(node).await else {
        return;
    };
    let has = n
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROOT_ANNOTATION))
        .is_some_and(|v| *v == want);
    if has {
        return;
    }
    let patch = serde_json::json!({"metadata": {"annotations": {ROOT_ANNOTATION: want}}});
    if let Err(e) = nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        warn!("kubelet: failed to announce the local-path root on node {node}: {e}");
    }
}

/// The volume name a directory belongs to (`pvc-<uid>_<ns>_<claim>` → `pvc-<uid>`).
fn volume_of(dir_name: &str) -> Option<&str> {
    let (pv, _) = dir_name.split_once('_')?;
    pv.starts_with("pvc-").then_some(pv)
}

/// Keeps each directory's remembered policy current and removes the directories of deleted
/// volumes whose policy was Delete.
async fn collect(client: &kube::Client, root: &Path) {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    // One GET per directory (a node's role may read PersistentVolumes, not list them all).
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pv_name) = volume_of(&name) else {
            continue;
        };
        let dir = e.path();
        match volumes.get_opt(pv_name).await {
            Ok(Some(pv)) => {
                let policy = pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
                    .unwrap_or("Delete");
                if let Err(err) = remember_policy(&dir, policy) {
                    warn!("kubelet: local-path {}: {err}", dir.display());
                }
                continue;
            }
            Ok(None) => {}
            // Unknown (API unreachable, refused): keep everything.
            Err(_) => continue,
        }
        let Some(m) = marker(&dir) else { continue };
        let policy = std::fs::read_to_string(&m).unwrap_or_default();
        if policy != "Delete" {
            continue;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                let _ = std::fs::remove_file(&m);
                info!(
                    "kubelet: removed local-path volume {} (its PersistentVolume {pv_name} was deleted)",
                    dir.display()
                );
            }
            Err(err) => warn!(
                "kubelet: failed to remove local-path volume {}: {err}",
                dir.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_affinity_of_volumes() {
        let node: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "n1",
            "labels": {"kubernetes.io/hostname": "n1", "rank": "5"}}}))
        .expect("node");
        let sel = |terms: serde_json::Value| -> NodeSelector {
            serde_json::from_value(serde_json::json!({"nodeSelectorTerms": terms})).expect("sel")
        };
        let yes = [
            serde_json::json!([{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]),
            serde_json::json!([{"matchExpressions": [{"key": "x", "operator": "In", "values": ["y"]}]},
                               {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]),
            serde_json::json!([{"matchExpressions": [{"key": "rank", "operator": "Gt", "values": ["3"]},
                                                     {"key": "gone", "operator": "DoesNotExist"}]}]),
        ];
        for t in yes {
            assert!(node_selector_matches(&sel(t.clone()), &node), "{t}");
        }
        let no = [
            serde_json::json!([{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]),
            serde_json::json!([{"matchExpressions": [{"key": "rank", "operator": "Lt", "values": ["3"]}]}]),
            serde_json::json!([{}]),
        ];
        for t in no {
            assert!(!node_selector_matches(&sel(t.clone()), &node), "{t}");
        }
    }

    #[test]
    fn directory_names_and_markers() {
        assert_eq!(volume_of("pvc-1234_default_data"), Some("pvc-1234"));
        assert_eq!(volume_of("pvc-1234"), None);
        assert_eq!(volume_of("other_x_y"), None);
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("pvc-1_default_d");
        make_volume_dir(&dir, "Delete").expect("made");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&dir).expect("meta").mode() & 0o777, 0o777);
        let m = marker(&dir).expect("marker");
        assert_eq!(std::fs::read_to_string(&m).expect("read"), "Delete");
        remember_policy(&dir, "Retain").expect("again");
        assert_eq!(std::fs::read_to_string(&m).expect("read"), "Retain");
    }
}
