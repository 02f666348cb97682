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

/// What `up --wait` waits for once every node is Ready. Cluster DNS in a local cluster is no
/// Deployment: each node's agent answers on the DNS address itself, and
/// `kube-system/kube-dns` has no selector, so it never gets endpoints to wait for. So the wait
/// is for the answers: `kubernetes.default.svc.<domain>` must resolve (an A record, NOERROR)
/// from inside every node's network namespace, as a pod's resolver would ask; then every pod in
/// kube-system (none unless the user added some) must be Ready or Succeeded. On timeout, says
/// what is still missing.
pub async fn wait_dns_and_system_pods(
    kubeconfig: &Path,
    nodes: &[(String, String)],
    dns: std::net::Ipv4Addr,
    domain: &str,
    deadline: Instant,
) -> Result<(), String> {
    let name = format!("kubernetes.default.svc.{}", domain.trim_end_matches('.'));
    let mut pending: Vec<(String, String)> = nodes.to_vec();
    let mut last;
    loop {
        let mut still = Vec::new();
        last = String::new();
        for (node, netns) in pending {
            let (q, ns) = (name.clone(), netns.clone());
            let answer = tokio::task::spawn_blocking(move || {
                crate::network::in_netns(&ns, move || dns_query(dns, &q))
            })
            .await;
            match answer {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) | Ok(Err(e)) => {
                    last = format!("cluster DNS {dns} on {node} does not answer {name} yet: {e}");
                    still.push((node, netns));
                }
                Err(e) => {
                    last = format!("cluster DNS {dns} on {node}: {e}");
                    still.push((node, netns));
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            match system_pods_not_ready(kubeconfig).await {
                Ok(not_ready) if not_ready.is_empty() => return Ok(()),
                Ok(not_ready) => {
                    last = format!("kube-system pods not Ready yet: {}", not_ready.join(", "))
                }
                Err(e) => last = format!("the API server did not answer: {e}"),
            }
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pods in kube-system that are neither Ready nor Succeeded.
async fn system_pods_not_ready(kubeconfig: &Path) -> Result<Vec<String>, String> {
    let c = client(kubeconfig).await?;
    let pods = Api::<Pod>::namespaced(c, "kube-system")
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(pods
        .items
        .iter()
        .filter(|p| {
            let st = p.status.as_ref();
            let succeeded = st.and_then(|s| s.phase.as_deref()) == Some("Succeeded");
            let ready = st
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            !succeeded && !ready
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect())
}

/// One DNS question for `name`'s A record to `server`:53 over UDP (0.5 s), from the calling
/// thread's network namespace; Ok when the answer is NOERROR with at least one record.
pub fn dns_query(server: std::net::Ipv4Addr, name: &str) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    let id: u16 = (std::process::id() as u16) ^ 0x5a5a;
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root; type A; class IN
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    sock.send_to(&q, (server, 53))?;
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf)?;
    if n < 12 || buf[..2] != id.to_be_bytes() || buf[2] & 0x80 == 0 {
        return Err(Error::new(
            ErrorKind::InvalidData,
            "not an answer to the question",
        ));
    }
    let rcode = buf[3] & 0x0f;
    let answers = u16::from_be_bytes([buf[6], buf[7]]);
    match (rcode, answers) {
        (0, 1..) => Ok(()),
        (0, 0) => Err(Error::new(ErrorKind::NotFound, "no record")),
        (r, _) => Err(Error::other(format!("rcode {r}"))),
    }
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
