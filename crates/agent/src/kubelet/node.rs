//! Node registration and heartbeats (kubelet's `registerWithAPIServer` and node lease
//! controller): the Node object with capacity, addresses, nodeInfo and conditions, a
//! kube-node-lease Lease renewed every heartbeat, and the Ready condition's heartbeat time.

use super::KubeletConfig;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use tracing::warn;

/// Pods per node (kubelet's --max-pods default).
const MAX_PODS: &str = "110";
const LEASE_SECONDS: i32 = 40;

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// cpu, memory and pods of this machine (also its allocatable).
pub(crate) fn capacity() -> BTreeMap<String, Quantity> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    BTreeMap::from([
        ("cpu".to_string(), Quantity(cpus.to_string())),
        ("memory".to_string(), Quantity(format!("{mem_kib}Ki"))),
        ("pods".to_string(), Quantity(MAX_PODS.into())),
    ])
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

/// nodeInfo: the container runtime is reported as what it is, the rkt-compatible runtime
/// embedded in rktup, with rktup's version.
pub fn node_info() -> NodeSystemInfo {
    let version = env!("CARGO_PKG_VERSION");
    NodeSystemInfo {
        architecture: match std::env::consts::ARCH {
            "x86_64" => "amd64".into(),
            "aarch64" => "arm64".into(),
            a => a.into(),
        },
        boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
        container_runtime_version: format!("rkt://{version} (rktup embedded)"),
        kernel_version: read_trim("/proc/sys/kernel/osrelease"),
        kube_proxy_version: String::new(),
        kubelet_version: format!("v1.33.0-rktup.{version}"),
        machine_id: read_trim("/etc/machine-id"),
        operating_system: "linux".into(),
        os_image: os_image(),
        system_uuid: read_trim("/sys/class/dmi/id/product_uuid"),
        ..Default::default()
    }
}

fn ready_condition(since: &Time) -> NodeCondition {
    NodeCondition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: Some("KubeletReady".into()),
        message: Some("rktup agent is posting ready status".into()),
        last_heartbeat_time: Some(now()),
        last_transition_time: Some(since.clone()),
    }
}

fn pressure_conditions(since: &Time) -> Vec<NodeCondition> {
    [
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("DiskPressure", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ]
    .into_iter()
    .map(|(t, r)| NodeCondition {
        type_: t.into(),
        status: "False".into(),
        reason: Some(r.into()),
        message: None,
        last_heartbeat_time: Some(now()),
        last_transition_time: Some(since.clone()),
    })
    .collect()
}

fn status(cfg: &KubeletConfig, since: &Time) -> NodeStatus {
    let mut addresses = vec![];
    for ip in cfg.node_ip.iter().chain(&cfg.extra_node_ips) {
        addresses.push(NodeAddress {
            type_: "InternalIP".into(),
            address: ip.clone(),
        });
    }
    addresses.push(NodeAddress {
        type_: "Hostname".into(),
        address: cfg.node_name.clone(),
    });
    let mut conditions = pressure_conditions(since);
    conditions.push(ready_condition(since));
    NodeStatus {
        capacity: Some(capacity()),
        allocatable: Some(capacity()),
        addresses: Some(addresses),
        conditions: Some(conditions),
        node_info: Some(node_info()),
        daemon_endpoints: Some(k8s_openapi::api::core::v1::NodeDaemonEndpoints {
            kubelet_endpoint: Some(k8s_openapi::api::core::v1::DaemonEndpoint {
                port: i32::from(cfg.kubelet_port),
            }),
        }),
        ..Default::default()
    }
}

/// Create the Node, or take over an existing one (agent restart), and write its status.
pub async fn register(client: &kube::Client, cfg: &KubeletConfig) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let since = now();
    let mut labels: BTreeMap<String, String> = cfg
        .labels
        .iter()
        .map(|l| (l.key.clone(), l.value.clone()))
        .collect();
    labels.extend([
        ("kubernetes.io/hostname".to_string(), cfg.node_name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "kubernetes.io/arch".to_string(),
            node_info().architecture.clone(),
        ),
    ]);
    // --register-with-taints: on creation only, as kubelet (later changes are the admin's).
    let taints = (!cfg.taints.is_empty()).then(|| {
        cfg.taints
            .iter()
            .map(|t| k8s_openapi::api::core::v1::Taint {
                key: t.key.clone(),
                value: t.value.clone(),
                effect: t.effect.as_str().to_string(),
                time_added: None,
            })
            .collect()
    });
    let node = Node {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            // `--pod-cidr 10.244.1.0/24,fd00:10:244:1::/64`: podCIDR is the first, podCIDRs
            // all (as the node IPAM controller writes a dual-stack node's).
            pod_cidr: cfg
                .pod_cidr
                .as_deref()
                .and_then(|c| c.split(',').next())
                .map(|c| c.trim().to_string()),
            pod_cidrs: cfg
                .pod_cidr
                .as_deref()
                .map(|c| c.split(',').map(|c| c.trim().to_string()).collect()),
            taints,
            ..Default::default()
        }),
        status: None,
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Existing node: keep its spec (podCIDR is immutable once set) but refresh labels.
            let patch = serde_json::json!({"metadata": {"labels": node.metadata.labels}});
            nodes
                .patch(
                    &cfg.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        Err(e) => return Err(e),
    }
    let patch = serde_json::json!({ "status": status(cfg, &since) });
    nodes
        .patch_status(
            &cfg.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    renew_lease(client, cfg).await
}

async fn renew_lease(client: &kube::Client, cfg: &KubeletConfig) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renew = MicroTime(jiff::Timestamp::now());
    match leases.get_opt(&cfg.node_name).await? {
        Some(mut l) => {
            let spec = l.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(renew);
            spec.holder_identity = Some(cfg.node_name.clone());
            spec.lease_duration_seconds = Some(LEASE_SECONDS);
            leases
                .replace(&cfg.node_name, &PostParams::default(), &l)
                .await?;
        }
        None => {
            let l = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.node_name.clone()),
                    namespace: Some("kube-node-lease".into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.node_name.clone()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    renew_time: Some(renew.clone()),
                    acquire_time: Some(renew),
                    ..Default::default()
                }),
            };
            leases.create(&PostParams::default(), &l).await?;
        }
    }
    Ok(())
}

/// Renew the Lease and the Ready heartbeat every `cfg.heartbeat`. A node object deleted under a
/// running agent is registered again (as kubelet does).
pub async fn heartbeat(client: kube::Client, cfg: KubeletConfig) {
    let nodes: Api<Node> = Api::all(client.clone());
    let since = now();
    loop {
        tokio::time::sleep(cfg.heartbeat).await;
        if let Err(e) = renew_lease(&client, &cfg).await {
            warn!("kubelet: failed to renew lease: {e}");
        }
        let patch = serde_json::json!({ "status": status(&cfg, &since) });
        match nodes
            .patch_status(
                &cfg.node_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {
                warn!("kubelet: node object gone: registering again");
                if let Err(e) = register(&client, &cfg).await {
                    warn!("kubelet: failed to register node: {e}");
                }
            }
            Err(e) => warn!("kubelet: failed to update node status: {e}"),
        }
    }
}
