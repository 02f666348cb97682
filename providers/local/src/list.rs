//! `rktup local list` (kind's `get clusters`): every local cluster on this machine, found as the
//! state directories `up` recorded (`<state root>/local-<name>/cluster.json`) — one per line, or
//! `-o json` with the nodes, the API address, the state directory and which processes run.

use crate::layout::Layout;
use crate::process;
use rktup_config::OutputFormat;
use rktup_provider::ProviderError;
use std::path::{Path, PathBuf};

/// One local cluster as `list -o json` prints it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ClusterListing {
    pub name: String,
    pub nodes: Vec<String>,
    pub server: String,
    pub state_dir: PathBuf,
    /// The kubeconfig file `up` wrote the `rktup-<name>` context into.
    pub kubeconfig: Option<PathBuf>,
    /// The control plane's process runs.
    pub controlplane_running: bool,
    /// Nodes whose agent process runs.
    pub agents_running: Vec<String>,
    /// The control plane and every node's agent run.
    pub running: bool,
}

/// The clusters under `state_root` (the parent of every cluster's state directory), by name.
/// A directory without a readable record is no cluster (an interrupted `up` before its record,
/// or another provider's state).
pub fn clusters(state_root: &Path) -> Vec<ClusterListing> {
    let Ok(rd) = std::fs::read_dir(state_root) else {
        return Vec::new();
    };
    let mut out: Vec<ClusterListing> = rd
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("local-"))
        .filter_map(|e| {
            let layout = Layout::new(e.path());
            let rec = layout.load()?;
            let controlplane_running = process::running(&layout.pidfile("controlplane")).is_some();
            let agents_running: Vec<String> = rec
                .nodes
                .iter()
                .filter(|n| process::running(&layout.pidfile(&n.name)).is_some())
                .map(|n| n.name.clone())
                .collect();
            Some(ClusterListing {
                running: controlplane_running && agents_running.len() == rec.nodes.len(),
                server: rec.api_url(),
                nodes: rec.nodes.iter().map(|n| n.name.clone()).collect(),
                name: rec.name,
                state_dir: layout.root,
                kubeconfig: rec.kubeconfig,
                controlplane_running,
                agents_running,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Prints the clusters: names one per line (nothing when there are none, as kind's `get
/// clusters` prints nothing on stdout), or a JSON array (`[]` when there are none).
/// `kubeconfig`: only the clusters whose `rktup-<name>` context that file holds.
pub fn list(
    state_root: &Path,
    output: OutputFormat,
    kubeconfig: Option<&Path>,
) -> Result<(), ProviderError> {
    let mut found = clusters(state_root);
    if let Some(k) = kubeconfig {
        let mut kept = Vec::new();
        for c in found {
            if crate::user_kubeconfig::context_server(k, &format!("rktup-{}", c.name))?.is_some() {
                kept.push(c);
            }
        }
        found = kept;
    }
    match output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&found).map_err(|source| ProviderError::Json {
                what: "the cluster list",
                source
            })?
        ),
        OutputFormat::Text => {
            for c in &found {
                println!("{}", c.name);
            }
            if found.is_empty() {
                eprintln!("No local clusters found in {}.", state_root.display());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{ClusterRecord, NodeRecord};

    fn record(name: &str) -> ClusterRecord {
        ClusterRecord {
            name: name.into(),
            bridge: "b".into(),
            node_network: "10.250.7.0/24".parse().unwrap(),
            api_host: "127.0.0.1".parse().unwrap(),
            api_port: 6443,
            cluster_ip_range: "10.0.0.0/24".parse().unwrap(),
            cluster_ip_range_v6: None,
            nodes: vec![NodeRecord {
                name: format!("{name}-node-1"),
                netns: "n".into(),
                host_veth: "v".into(),
                ip: "10.250.7.2".parse().unwrap(),
                pod_cidr: "10.244.0.0/24".parse().unwrap(),
                ip6: None,
                pod_cidr6: None,
            }],
            kubeconfig: None,
            insecure_registries: vec![],
            layout: None,
            settings: None,
        }
    }

    #[test]
    fn lists_recorded_local_clusters_only_sorted_and_stopped() {
        let root = tempfile::tempdir().unwrap();
        for n in ["zeta", "alpha"] {
            Layout::new(root.path().join(format!("local-{n}")))
                .save(&record(n))
                .unwrap();
        }
        // Another provider's state and a local dir without a record are no local clusters.
        Layout::new(root.path().join("gce-other"))
            .save(&record("other"))
            .unwrap();
        std::fs::create_dir_all(root.path().join("local-broken")).unwrap();
        let found = clusters(root.path());
        let names: Vec<&str> = found.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["alpha", "zeta"]);
        assert_eq!(found[0].nodes, ["alpha-node-1"]);
        assert_eq!(found[0].server, "https://127.0.0.1:6443");
        assert!(!found[0].running && !found[0].controlplane_running);
        assert!(found[0].agents_running.is_empty());
        assert!(clusters(&root.path().join("missing")).is_empty());
    }
}
