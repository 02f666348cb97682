//! Asking the cluster's own API how it is: through the admin kubeconfig, with kube-rs.

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

pub async fn client(kubeconfig: &Path) -> Result<kube::Client, String> {
    client_in(kubeconfig, None).await
}

/// A client for `context` of `kubeconfig` (None: its current context).
pub async fn client_in(kubeconfig: &Path, context: Option<String>) -> Result<kube::Client, String> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| format!("kubeconfig {}: {e}", kubeconfig.display()))?;
    let opts = kube::config::KubeConfigOptions {
        context,
        ..Default::default()
    };
    let cfg = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| format!("kubeconfig {}: {e}", kubeconfig.display()))?;
    let mut cfg = cfg;
    cfg.connect_timeout = Some(Duration::from_secs(2));
    cfg.read_timeout = Some(Duration::from_secs(5));
    kube::Client::try_from(cfg).map_err(|e| e.to_string())
}

fn is_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until the API answers and every node in `nodes` is Ready. On timeout, says which
/// nodes are not.
pub async fn wait_nodes_ready(
    kubeconfig: &Path,
    nodes: &[String],
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("the API server did not answer");
    while Instant::now() < deadline {
        if kubeconfig.exists() {
            match client(kubeconfig).await {
                Ok(c) => match Api::<Node>::all(c).list(&ListParams::default()).await {
                    Ok(list) => {
                        let ready: Vec<&str> = list
                            .items
                            .iter()
                            .filter(|n| is_ready(n))
                            .filter_map(|n| n.metadata.name.as_deref())
                            .collect();
                        let missing: Vec<&str> = nodes
                            .iter()
                            .map(String::as_str)
                            .filter(|n| !ready.contains(n))
                            .collect();
                        if missing.is_empty() {
                            return Ok(());
                        }
                        last = format!("not Ready yet: {}", missing.join(", "));
                    }
                    Err(e) => last = format!("the API server did not answer: {e}"),
                },
                Err(e) => last = e,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last)
}

/// A node as `status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeSummary {
    pub name: String,
    pub ready: bool,
    pub internal_ip: Option<String>,
    pub pod_cidr: Option<String>,
    pub pods: Vec<String>,
}

pub async fn nodes(kubeconfig: &Path, context: Option<String>) -> Result<Vec<NodeSummary>, String> {
    let c = client_in(kubeconfig, context).await?;
    let nodes = Api::<Node>::all(c.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let pods = Api::<Pod>::all(c)
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in pods.items {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into());
        by_node.entry(node).or_default().push(format!(
            "{}/{} ({phase})",
            p.metadata.namespace.unwrap_or_default(),
            p.metadata.name.unwrap_or_default()
        ));
    }
    Ok(nodes
        .items
        .iter()
        .map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            NodeSummary {
                ready: is_ready(n),
                internal_ip: n
                    .status
                    .as_ref()
                    .and_then(|s| s.addresses.as_ref())
                    .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
                    .map(|a| a.address.clone()),
                pod_cidr: n.spec.as_ref().and_then(|s| s.pod_cidr.clone()),
                pods: by_node.remove(&name).unwrap_or_default(),
                name,
            }
        })
        .collect())
}

/// A current-thread tokio runtime for one blocking call.
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> Result<T, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("failed to start the async runtime: {e}"))?;
    Ok(rt.block_on(f))
}
