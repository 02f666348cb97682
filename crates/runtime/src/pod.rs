//! What the stage1 supervisor runs (`pod.json`, written once by the agent) and what it reports
//! (`status.json`, rewritten atomically by the supervisor on every change). Both live in the pod's
//! directory `<root>/pods/<uuid>/`, which is all a restarted agent needs to re-adopt the pod.

use crate::cgroups::Limits;
use crate::cni::Network;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The node-wide (or per-pod) stage1 flavour: the node contract's type, whose `parse` is rktup's
/// only parser of stage1 names (its tests are in crates/node-contract).
pub use rktup_node_contract::Stage1 as Stage1Flavor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    /// Literal value (`$(VAR)` references are expanded at start).
    pub value: String,
    /// A downward-API field resolved by the supervisor (status.podIP is only known after CNI ADD).
    #[serde(default)]
    pub field_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountPlan {
    pub volume: String,
    pub path: String,
    pub read_only: bool,
    #[serde(default)]
    pub sub_path: Option<String>,
    /// `subPathExpr`: expanded with the container's environment when it starts.
    #[serde(default)]
    pub sub_path_expr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerPlan {
    pub name: String,
    pub image: String,
    pub image_id: String,
    /// Unpacked layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    pub argv: Vec<String>,
    pub env: Vec<EnvVar>,
    pub working_dir: String,
    pub uid: u32,
    pub gid: u32,
    pub privileged: bool,
    pub read_only_rootfs: bool,
    pub allow_privilege_escalation: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// securityContext.seccompProfile (container, else pod); privileged containers run unconfined.
    #[serde(default)]
    pub seccomp: Seccomp,
    pub mounts: Vec<MountPlan>,
    pub limits: Limits,
    /// `stdin`: the supervisor keeps a stdin open for attachers; `stdinOnce`: closed when the
    /// first attacher's input ends; `tty`: a terminal is the container's stdio.
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdin_once: bool,
    #[serde(default)]
    pub tty: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seccomp {
    /// Kubernetes' default (kubelet without `--seccomp-default`).
    #[default]
    Unconfined,
    /// `RuntimeDefault`: the runtime's filter, see stage1/seccomp.rs.
    RuntimeDefault,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeSource {
    /// `<pod dir>/volumes/<name>`; a tmpfs when `memory`.
    EmptyDir {
        memory: bool,
        size_limit: Option<u64>,
    },
    HostPath {
        path: PathBuf,
    },
    /// A directory prepared by someone else (the API side will materialise configMap / secret /
    /// projected volumes here and hand them in this way).
    Prepared {
        path: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumePlan {
    pub name: String,
    pub source: VolumeSource,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkPlan {
    pub network: Network,
    pub plugin_dirs: Vec<PathBuf>,
    pub port_mappings: Vec<PortMapping>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodPlan {
    pub uuid: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub node_name: String,
    pub host_ip: Option<String>,
    pub source: Option<PathBuf>,
    pub source_hash: String,
    pub stage1: Stage1Flavor,
    pub host_network: bool,
    pub hostname: String,
    pub restart_policy: RestartPolicy,
    pub grace_seconds: u64,
    pub init_containers: Vec<ContainerPlan>,
    pub containers: Vec<ContainerPlan>,
    pub volumes: Vec<VolumePlan>,
    /// None: host network (or fly).
    pub network: Option<NetworkPlan>,
    pub cgroup_parent: String,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub log_max_size: u64,
    pub log_max_files: usize,
    pub verbosity: u8,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub created_at: i64,
    /// stage1-kvm: guest kernel and qemu binary.
    #[serde(default)]
    pub kvm: Option<KvmPlan>,
    /// The pod's /etc/resolv.conf and /etc/hosts as kubelet decides them (`manifest::dns`).
    /// None in plans written before rktup planned them: the host's files are used.
    #[serde(default)]
    pub etc: Option<EtcPlan>,
}

/// What the supervisor writes into `<pod dir>/etc/` and bind-mounts over each container's
/// /etc/resolv.conf and /etc/hosts (unless a volume is mounted there), as containerd writes the
/// sandbox's resolv.conf and kubelet its managed hosts file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcPlan {
    /// The whole file (`search`, `nameserver`, `options` lines), decided at planning.
    pub resolv_conf: String,
    pub hosts: HostsPlan,
    /// `spec.hostAliases`, appended to either kind of hosts file.
    #[serde(default)]
    pub host_aliases: Vec<HostAlias>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum HostsPlan {
    /// kubelet's managed file: the localhost lines, then one line per pod IP (known after CNI
    /// ADD) naming the pod's hostname, as `<hostname>.<domain>\t<hostname>` with a subdomain.
    Managed {
        hostname: String,
        /// `<subdomain>.<namespace>.svc.<cluster domain>`.
        domain: Option<String>,
    },
    /// Host network (and stage1-fly, which shares it): the node's /etc/hosts as it is when the
    /// pod starts.
    #[default]
    Node,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAlias {
    pub ip: String,
    pub hostnames: Vec<String>,
}

/// kubelet's header lines (kubelet_pods.go), kept verbatim: tools look for them.
const MANAGED_HOSTS_HEADER: &str = "# Kubernetes-managed hosts file.\n";
const MANAGED_HOSTS_HEADER_HOST_NETWORK: &str = "# Kubernetes-managed hosts file (host network).\n";

impl EtcPlan {
    /// The pod's /etc/hosts: `pod_ips` are the pod's addresses (none before CNI ADD), `node`
    /// the node's hosts file (read only for host-network pods).
    pub fn hosts_file(&self, pod_ips: &[String], node: impl FnOnce() -> String) -> String {
        let mut out = String::new();
        match &self.hosts {
            HostsPlan::Node => {
                out.push_str(MANAGED_HOSTS_HEADER_HOST_NETWORK);
                out.push_str(&node());
            }
            HostsPlan::Managed { hostname, domain } => {
                out.push_str(MANAGED_HOSTS_HEADER);
                out.push_str("127.0.0.1\tlocalhost\n");
                out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
                out.push_str("fe00::0\tip6-localnet\n");
                out.push_str("fe00::0\tip6-mcastprefix\n");
                out.push_str("fe00::1\tip6-allnodes\n");
                out.push_str("fe00::2\tip6-allrouters\n");
                for ip in pod_ips {
                    match domain.as_deref().filter(|d| !d.is_empty()) {
                        Some(d) => out.push_str(&format!("{ip}\t{hostname}.{d}\t{hostname}\n")),
                        None => out.push_str(&format!("{ip}\t{hostname}\n")),
                    }
                }
            }
        }
        if !self.host_aliases.is_empty() {
            out.push_str("\n# Entries added by HostAliases.\n");
            for a in &self.host_aliases {
                out.push_str(&format!("{}\t{}\n", a.ip, a.hostnames.join("\t")));
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvmPlan {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    /// `/lib/modules/<version>` of the guest kernel (9p and virtio modules go into the initramfs).
    pub modules: PathBuf,
    /// The static busybox that becomes the guest's init userland.
    pub busybox: PathBuf,
    pub memory_mib: u64,
}

impl PodPlan {
    pub fn unit_name(&self) -> String {
        format!("k8s_{}", self.uuid)
    }
    pub fn cgroup_path(&self) -> String {
        format!("{}/k8s_{}", self.cgroup_parent, self.uuid)
    }
    pub fn all_containers(&self) -> impl Iterator<Item = &ContainerPlan> {
        self.init_containers.iter().chain(self.containers.iter())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodState {
    /// Accepted but refused/failed before anything ran (reason says why).
    Refused,
    Preparing,
    Running,
    /// Stopping: containers got SIGTERM.
    Stopping,
    Exited,
}

impl PodState {
    pub fn as_str(self) -> &'static str {
        match self {
            PodState::Refused => "refused",
            PodState::Preparing => "preparing",
            PodState::Running => "running",
            PodState::Stopping => "stopping",
            PodState::Exited => "exited",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub name: String,
    pub image: String,
    pub image_id: String,
    /// waiting | running | terminated
    pub state: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub pid: Option<i32>,
    pub restart_count: u32,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub started_at: Option<i64>,
    #[serde(default)]
    pub finished_at: Option<i64>,
    /// The run before this one, once it ended (upstream's `lastState.terminated`); while the
    /// container backs off (reason `CrashLoopBackOff`), the run that just ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<EndedRun>,
}

/// A run of a container that ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndedRun {
    pub exit_code: i32,
    /// Completed | Error | OOMKilled (the run's own reason, not the back-off).
    pub reason: String,
    #[serde(default)]
    pub started_at: Option<i64>,
    #[serde(default)]
    pub finished_at: Option<i64>,
}

impl ContainerStatus {
    /// The current run as an ended one, if it ended (and is not already a back-off's).
    pub fn ended_run(&self) -> Option<EndedRun> {
        if self.state != "terminated" || self.reason.as_deref() == Some("CrashLoopBackOff") {
            return None;
        }
        let exit_code = self.exit_code?;
        Some(EndedRun {
            exit_code,
            reason: self
                .reason
                .clone()
                .unwrap_or_else(|| if exit_code == 0 { "Completed" } else { "Error" }.into()),
            started_at: self.started_at,
            finished_at: self.finished_at,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodStatus {
    pub state: PodState,
    /// Pending | Running | Succeeded | Failed
    pub phase: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    pub supervisor_pid: i32,
    pub supervisor_start: u64,
    #[serde(default)]
    pub infra_pid: Option<i32>,
    #[serde(default)]
    pub pod_ip: Option<String>,
    /// Every address of the pod, `pod_ip` first (a dual-stack pod's IPv6 one after it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<String>,
    pub created_at: i64,
    #[serde(default)]
    pub started_at: Option<i64>,
    #[serde(default)]
    pub finished_at: Option<i64>,
    #[serde(default)]
    pub init_containers: Vec<ContainerStatus>,
    pub containers: Vec<ContainerStatus>,
}

impl PodStatus {
    /// The pod's addresses, primary first (a status written before `pod_ips` existed has only
    /// `pod_ip`).
    pub fn ips(&self) -> Vec<String> {
        if self.pod_ips.is_empty() {
            self.pod_ip.iter().cloned().collect()
        } else {
            self.pod_ips.clone()
        }
    }

    pub fn new(plan: &PodPlan, state: PodState) -> PodStatus {
        let cs = |c: &ContainerPlan| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone(),
            image_id: c.image_id.clone(),
            state: "waiting".into(),
            reason: Some("ContainerCreating".into()),
            ..Default::default()
        };
        PodStatus {
            state,
            phase: "Pending".into(),
            reason: None,
            message: None,
            supervisor_pid: 0,
            supervisor_start: 0,
            infra_pid: None,
            pod_ip: None,
            pod_ips: Vec::new(),
            created_at: plan.created_at,
            started_at: None,
            finished_at: None,
            init_containers: plan.init_containers.iter().map(cs).collect(),
            containers: plan.containers.iter().map(cs).collect(),
        }
    }
}

pub fn plan_path(pod_dir: &Path) -> PathBuf {
    pod_dir.join("pod.json")
}
pub fn status_path(pod_dir: &Path) -> PathBuf {
    pod_dir.join("status.json")
}

#[derive(Debug, thiserror::Error)]
pub enum PodFileError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to parse {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("failed to write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn read_json<T: serde::de::DeserializeOwned>(path: PathBuf) -> Result<T, PodFileError> {
    let b = std::fs::read(&path).map_err(|source| PodFileError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&b).map_err(|source| PodFileError::Parse { path, source })
}

fn write_json<T: Serialize>(path: PathBuf, v: &T) -> Result<(), PodFileError> {
    let b = serde_json::to_vec_pretty(v).map_err(|source| PodFileError::Parse {
        path: path.clone(),
        source,
    })?;
    crate::util::write_atomic(&path, &b).map_err(|source| PodFileError::Write { path, source })
}

pub fn read_plan(pod_dir: &Path) -> Result<PodPlan, PodFileError> {
    read_json(plan_path(pod_dir))
}
pub fn write_plan(pod_dir: &Path, p: &PodPlan) -> Result<(), PodFileError> {
    write_json(plan_path(pod_dir), p)
}
pub fn read_status(pod_dir: &Path) -> Result<PodStatus, PodFileError> {
    read_json(status_path(pod_dir))
}
pub fn write_status(pod_dir: &Path, s: &PodStatus) -> Result<(), PodFileError> {
    write_json(status_path(pod_dir), s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases() -> Vec<HostAlias> {
        vec![
            HostAlias {
                ip: "123.45.67.89".into(),
                hostnames: vec!["foo".into(), "bar".into(), "baz".into()],
            },
            HostAlias {
                ip: "456.78.90.123".into(),
                hostnames: vec!["park".into(), "doo".into(), "boo".into()],
            },
        ]
    }

    #[test]
    fn managed_hosts_file_as_kubelet_writes_it() {
        // kubelet_pods_test.go's TestManagedHostsFileContent cases.
        let mut e = EtcPlan {
            resolv_conf: String::new(),
            hosts: HostsPlan::Managed {
                hostname: "hostName".into(),
                domain: None,
            },
            host_aliases: vec![],
        };
        let head = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n";
        let ips = vec!["123.45.67.89".to_string()];
        let none = || unreachable!("a managed file does not read the node's");
        assert_eq!(
            e.hosts_file(&ips, none),
            format!("{head}123.45.67.89\thostName\n")
        );
        // Before CNI ADD there is no pod IP yet.
        assert_eq!(e.hosts_file(&[], none), head);
        e.hosts = HostsPlan::Managed {
            hostname: "hostName".into(),
            domain: Some("domainName".into()),
        };
        e.host_aliases = aliases();
        assert_eq!(
            e.hosts_file(&ips, none),
            format!("{head}123.45.67.89\thostName.domainName\thostName\n\n# Entries added by HostAliases.\n123.45.67.89\tfoo\tbar\tbaz\n456.78.90.123\tpark\tdoo\tboo\n")
        );
    }

    #[test]
    fn host_network_hosts_file_is_the_nodes_plus_aliases() {
        // TestNodeHostsFileContent: the header, the node's file as it is, then the aliases.
        let node = "# hosts file for testing.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n203.0.113.1\tsome.domain\n";
        let e = EtcPlan {
            resolv_conf: String::new(),
            hosts: HostsPlan::Node,
            host_aliases: aliases(),
        };
        assert_eq!(
            e.hosts_file(&["10.0.0.1".into()], || node.to_string()),
            format!("# Kubernetes-managed hosts file (host network).\n{node}\n# Entries added by HostAliases.\n123.45.67.89\tfoo\tbar\tbaz\n456.78.90.123\tpark\tdoo\tboo\n")
        );
    }
}
