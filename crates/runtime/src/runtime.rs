//! The runtime as a library: a builder-configured `Runtime` that plans pods from manifests,
//! starts their stage1 supervisors, stops them, re-adopts them, lists them and cleans up.

use crate::cni;
use crate::image::{ImageStore, Puller};
use crate::manifest::{self, PlanContext, PlanError};
use crate::pod::*;
use crate::util;
use k8s_openapi::api::core::v1::Pod;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::image::store::StoreError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    PodFile(#[from] PodFileError),
    #[error("pod {0:?} not found")]
    NoPod(String),
    #[error("pod id {id:?} is ambiguous ({count} pods match)")]
    Ambiguous { id: String, count: usize },
    #[error("failed to start the stage1 supervisor {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Container(String),
}

/// The pod network (contained, cni, kubenet): the node contract's type; its `parse` is rktup's
/// only parser of network names.
pub use rktup_node_contract::NetworkMode;

/// What `Runtime::usage` reports.
pub use crate::cgroups::CgroupUsage;

/// Runtime settings (youki-style builder: `RuntimeConfig::new(root).with_*()`).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub root_dir: PathBuf,
    pub stage1: Stage1Flavor,
    pub network_mode: NetworkMode,
    pub network_plugin_dir: Option<PathBuf>,
    pub cni_conf_dir: Option<PathBuf>,
    pub pod_cidr: Option<String>,
    pub insecure_registries: Vec<String>,
    /// Mirror endpoints tried before a registry (`--registry-mirror`), and the registries
    /// served by their mirrors only (`--registry-mirror-exclusive`).
    pub registry_mirrors: Vec<rktup_node_contract::RegistryMirror>,
    pub registry_mirror_exclusive: Vec<String>,
    /// kind's extraMounts for this node (`--host-path-mount`): hostPath volumes under a node
    /// path are served from the host path.
    pub host_path_mounts: Vec<rktup_node_contract::HostPathMount>,
    pub registry_config: Option<PathBuf>,
    pub allow_privileged: bool,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub log_max_size: u64,
    pub log_max_files: usize,
    pub verbosity: u8,
    pub node_name: String,
    pub cgroup_parent: String,
    /// The node's IP (downward API `status.hostIP`).
    pub host_ip: Option<String>,
    /// The binary re-executed as `<exe> stage1 <pod dir>`: the running binary by default;
    /// `RKTUP_STAGE1_EXE` overrides (tests point it at the built `rktup`).
    pub stage1_exe: PathBuf,
    /// Network namespace images are pulled from (None: the agent's own).
    pub image_pull_netns: Option<PathBuf>,
    /// The node's DNS settings (--cluster-dns, --cluster-domain, --resolv-conf): pods'
    /// /etc/resolv.conf, hostname and /etc/hosts are planned from them (`manifest::dns`).
    pub dns: manifest::dns::NodeDns,
    /// Start each pod's supervisor as the systemd transient unit `k8s_<uuid>.service` (its
    /// output in the journal) rather than as a child process: on by default where systemd is
    /// PID 1 (`systemd::booted`).
    pub systemd_units: bool,
}

impl RuntimeConfig {
    pub fn new(root_dir: impl Into<PathBuf>) -> RuntimeConfig {
        let exe = std::env::var_os("RKTUP_STAGE1_EXE")
            .map(PathBuf::from)
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
        RuntimeConfig {
            root_dir: root_dir.into(),
            stage1: Stage1Flavor::Coreos,
            network_mode: NetworkMode::Contained,
            network_plugin_dir: None,
            cni_conf_dir: None,
            pod_cidr: None,
            insecure_registries: vec![],
            registry_mirrors: vec![],
            registry_mirror_exclusive: vec![],
            host_path_mounts: vec![],
            registry_config: None,
            allow_privileged: false,
            backoff_base_ms: 10_000,
            backoff_max_ms: 300_000,
            log_max_size: 10 << 20,
            log_max_files: 5,
            verbosity: 2,
            node_name: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into()),
            cgroup_parent: "rktup".into(),
            host_ip: None,
            stage1_exe: exe,
            image_pull_netns: None,
            dns: manifest::dns::NodeDns::default(),
            systemd_units: crate::systemd::booted(),
        }
    }
    pub fn with_systemd_units(mut self, on: bool) -> Self {
        self.systemd_units = on;
        self
    }
    pub fn with_stage1(mut self, f: Stage1Flavor) -> Self {
        self.stage1 = f;
        self
    }
    pub fn with_network_mode(mut self, m: NetworkMode) -> Self {
        self.network_mode = m;
        self
    }
    pub fn with_cni_conf_dir(mut self, d: impl Into<PathBuf>) -> Self {
        self.cni_conf_dir = Some(d.into());
        self
    }
    pub fn with_network_plugin_dir(mut self, d: impl Into<PathBuf>) -> Self {
        self.network_plugin_dir = Some(d.into());
        self
    }
    pub fn with_pod_cidr(mut self, c: impl Into<String>) -> Self {
        self.pod_cidr = Some(c.into());
        self
    }
    pub fn with_insecure_registries(mut self, r: Vec<String>) -> Self {
        self.insecure_registries = r;
        self
    }
    pub fn with_allow_privileged(mut self, a: bool) -> Self {
        self.allow_privileged = a;
        self
    }
    pub fn with_backoff_ms(mut self, base: u64, max: u64) -> Self {
        self.backoff_base_ms = base.max(1);
        self.backoff_max_ms = max.max(base);
        self
    }
    pub fn with_verbosity(mut self, v: u8) -> Self {
        self.verbosity = v;
        self
    }
    pub fn with_stage1_exe(mut self, p: impl Into<PathBuf>) -> Self {
        self.stage1_exe = p.into();
        self
    }
    pub fn with_dns(mut self, dns: manifest::dns::NodeDns) -> Self {
        self.dns = dns;
        self
    }
    pub fn with_log_rotation(mut self, max_size: u64, max_files: usize) -> Self {
        self.log_max_size = max_size;
        self.log_max_files = max_files;
        self
    }
}

/// The pod with its hostPath volumes moved by the node's `--host-path-mount`s (kind's
/// extraMounts), a read-only mount making every container's mount of the volume read-only;
/// None when nothing moves.
fn map_host_paths(
    pod: &k8s_openapi::api::core::v1::Pod,
    mounts: &[rktup_node_contract::HostPathMount],
) -> Option<k8s_openapi::api::core::v1::Pod> {
    if mounts.is_empty() {
        return None;
    }
    let mut pod = pod.clone();
    let spec = pod.spec.as_mut()?;
    let mut read_only = vec![];
    let mut moved = false;
    for v in spec.volumes.iter_mut().flatten() {
        let Some(h) = v.host_path.as_mut() else {
            continue;
        };
        if let Some((host, ro)) =
            rktup_node_contract::HostPathMount::resolve(mounts, Path::new(&h.path))
        {
            h.path = host.display().to_string();
            moved = true;
            if ro {
                read_only.push(v.name.clone());
            }
        }
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
    moved.then_some(pod)
}

/// What [`Runtime::kill_all`] does with the pods' network attachments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkTeardown {
    /// DEL for each, as a pod's own removal does.
    Each,
    /// The node's network namespace is deleted right after: the in-process kubenet's
    /// attachments (host veths, its nftables table) go with it and their addresses with the
    /// node's root, so they get no DEL (each took the IPAM lock and a veth deletion in turn);
    /// networks of CNI plugin binaries still get theirs, their state may live elsewhere.
    WithNode,
}

/// Whether the pod's network is the in-process kubenet alone (no plugin binary).
fn in_process_network(plan: &PodPlan) -> bool {
    plan.network.as_ref().is_some_and(|n| {
        !n.network.plugins.is_empty()
            && n.network.plugins.iter().all(|p| {
                p.get("type").and_then(serde_json::Value::as_str)
                    == Some(crate::kubenet::PLUGIN_TYPE)
            })
    })
}

/// One pod as found on disk.
#[derive(Debug, Clone)]
pub struct PodEntry {
    pub dir: PathBuf,
    /// Shared with the runtime's cache: a pod's plan never changes once written.
    pub plan: Arc<PodPlan>,
    pub status: PodStatus,
    /// The supervisor process is alive (same pid and start time as recorded).
    pub alive: bool,
}

pub struct Runtime {
    pub cfg: RuntimeConfig,
    pub store: ImageStore,
    puller: Puller,
    /// Plans read from `pod.json`, by pod directory name. `list` runs on every sync of the
    /// agent, which during a burst of pod starts is many times a second: re-reading and parsing
    /// every pod's plan each time cost more CPU than starting the pods.
    plans: Mutex<HashMap<std::ffi::OsString, Arc<PodPlan>>>,
}

impl Runtime {
    pub fn new(cfg: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let pods = cfg.root_dir.join("pods");
        std::fs::create_dir_all(&pods).map_err(|source| RuntimeError::Io {
            action: "create",
            path: pods.clone(),
            source,
        })?;
        let store = ImageStore::open(&cfg.root_dir)?;
        let mut puller = Puller::new()
            .with_insecure_registries(&cfg.insecure_registries)
            .with_mirrors(&cfg.registry_mirrors, &cfg.registry_mirror_exclusive);
        if let Some(rc) = &cfg.registry_config {
            puller = puller.with_docker_config(rc);
        }
        if let Some(ns) = &cfg.image_pull_netns {
            puller = puller
                .with_netns(ns)
                .map_err(|e| RuntimeError::Config(format!("--image-pull-netns: {e}")))?;
        }
        if cfg.network_mode == NetworkMode::Kubenet && cfg.pod_cidr.is_none() {
            return Err(RuntimeError::Config(
                "--network-plugin=kubenet needs --pod-cidr".into(),
            ));
        }
        Ok(Runtime {
            cfg,
            store,
            puller,
            plans: Mutex::default(),
        })
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.cfg.root_dir.join("pods")
    }

    pub fn puller(&self) -> &Puller {
        &self.puller
    }

    /// The CNI config dir in effect for the network mode.
    pub fn cni_conf_dir(&self) -> PathBuf {
        match self.cfg.network_mode {
            NetworkMode::Contained => self
                .cfg
                .cni_conf_dir
                .clone()
                .unwrap_or_else(|| "/etc/rkt/net.d".into()),
            NetworkMode::Cni => self
                .cfg
                .cni_conf_dir
                .clone()
                .unwrap_or_else(|| "/etc/cni/net.d".into()),
            NetworkMode::Kubenet => self.cfg.root_dir.join("kubenet/net.d"),
        }
    }

    /// Resolve the pod network now, so a missing config or plugin refuses the pod before
    /// anything of it runs.
    pub fn resolve_network(&self, ports: &[PortMapping]) -> Result<Option<NetworkPlan>, PlanError> {
        let dir = self.cni_conf_dir();
        if self.cfg.network_mode == NetworkMode::Kubenet {
            let cidr = self.cfg.pod_cidr.clone().unwrap_or_default();
            let conf = cni::kubenet_conflist(&cidr, &self.cfg.root_dir.join("kubenet/ipam"));
            std::fs::create_dir_all(&dir).map_err(|e| PlanError::Network(e.to_string()))?;
            let f = dir.join("10-kubenet.conflist");
            let text = serde_json::to_string_pretty(&conf).unwrap_or_default();
            if std::fs::read_to_string(&f).ok().as_deref() != Some(text.as_str()) {
                util::write_atomic(&f, text.as_bytes())
                    .map_err(|e| PlanError::Network(e.to_string()))?;
            }
        }
        let name = match self.cfg.network_mode {
            NetworkMode::Contained => Some("rkt.kubernetes.io"),
            NetworkMode::Cni | NetworkMode::Kubenet => None,
        };
        let network =
            cni::load_network(&dir, name).map_err(|e| PlanError::Network(e.to_string()))?;
        let dirs = cni::default_plugin_dirs(self.cfg.network_plugin_dir.as_deref());
        cni::find_plugins(&network, &dirs).map_err(|e| PlanError::Network(e.to_string()))?;
        Ok(Some(NetworkPlan {
            network,
            plugin_dirs: dirs,
            port_mappings: ports.to_vec(),
        }))
    }

    /// Plan and start a pod. A pod that cannot run is still recorded (state `refused`, with the
    /// reason) so `rkt list` / `status` explain it; nothing of it runs.
    pub fn run_pod(
        &self,
        pod: &Pod,
        source: Option<&Path>,
        hash: &str,
    ) -> Result<PodEntry, RuntimeError> {
        let uuid = util::new_uuid();
        let dir = self.pods_dir().join(&uuid);
        std::fs::create_dir_all(&dir).map_err(|source| RuntimeError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        let net = |ports: &[PortMapping]| self.resolve_network(ports);
        let host_ip = self.cfg.host_ip.clone();
        let ctx = PlanContext {
            store: &self.store,
            puller: &self.puller,
            node_stage1: self.cfg.stage1,
            allow_privileged: self.cfg.allow_privileged,
            node_name: &self.cfg.node_name,
            host_ip,
            pod_dir: &dir,
            network: &net,
            dns: &self.cfg.dns,
        };
        let mapped = map_host_paths(pod, &self.cfg.host_path_mounts);
        let planned = manifest::plan_pod(mapped.as_ref().unwrap_or(pod), &ctx, &uuid);
        let mut plan = match planned {
            Ok(p) => p,
            Err(e) => {
                let plan = refused_plan(pod, &uuid, source, hash);
                write_plan(&dir, &plan)?;
                let mut st = PodStatus::new(&plan, PodState::Refused);
                st.phase = "Failed".into();
                st.reason = Some(refusal_reason(&e).into());
                st.message = Some(e.to_string());
                write_status(&dir, &st)?;
                return Err(e.into());
            }
        };
        plan.source = source.map(Path::to_path_buf);
        plan.source_hash = hash.into();
        plan.backoff_base_ms = self.cfg.backoff_base_ms;
        plan.backoff_max_ms = self.cfg.backoff_max_ms;
        plan.log_max_size = self.cfg.log_max_size;
        plan.log_max_files = self.cfg.log_max_files;
        plan.verbosity = self.cfg.verbosity;
        plan.cgroup_parent = self.cfg.cgroup_parent.clone();
        if plan.stage1 == Stage1Flavor::Kvm {
            match crate::stage1::kvm::find_kvm() {
                Ok(k) => plan.kvm = Some(k),
                Err(why) => {
                    let e = PlanError::Stage1Refused {
                        name: Stage1Flavor::Kvm.image_name().into(),
                        why: why.to_string(),
                    };
                    write_plan(&dir, &plan)?;
                    let mut st = PodStatus::new(&plan, PodState::Refused);
                    st.phase = "Failed".into();
                    st.reason = Some("Stage1Unavailable".into());
                    st.message = Some(e.to_string());
                    write_status(&dir, &st)?;
                    return Err(e.into());
                }
            }
        }
        write_plan(&dir, &plan)?;
        let mut st = PodStatus::new(&plan, PodState::Preparing);
        st.supervisor_pid = 0;
        write_status(&dir, &st)?;
        self.spawn_supervisor(&dir, &plan)?;
        let status = self.wait_for_supervisor(&dir, Duration::from_secs(5))?;
        // The agent's side of the seed's "rkt detail" (--v 4): what it asked of the runtime; the
        // supervisor's own steps are in its stage1.log.
        tracing::trace!(
            pod = %plan.uuid,
            "stage1 supervisor pid {} runs {}/{} ({:?}); its log: {}",
            status.supervisor_pid,
            plan.namespace,
            plan.name,
            plan.stage1,
            dir.join("stage1.log").display()
        );
        let plan = Arc::new(plan);
        if let (Some(name), Ok(mut plans)) = (dir.file_name(), self.plans.lock()) {
            plans.insert(name.to_owned(), plan.clone());
        }
        Ok(PodEntry {
            dir,
            plan,
            status,
            alive: true,
        })
    }

    fn spawn_supervisor(&self, dir: &Path, plan: &PodPlan) -> Result<(), RuntimeError> {
        if self.cfg.systemd_units {
            match self.start_supervisor_unit(dir, plan) {
                Ok(()) => return Ok(()),
                // The pod still runs, as a child process; the node's log says why not as a unit.
                Err(e) => tracing::warn!(
                    pod = %plan.uuid,
                    "cannot start the pod's supervisor as a systemd unit, starting it directly: {e}"
                ),
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stage1.log"))
            .map_err(|source| RuntimeError::Io {
                action: "open",
                path: dir.join("stage1.log"),
                source,
            })?;
        let log2 = log.try_clone().map_err(|source| RuntimeError::Io {
            action: "dup",
            path: dir.join("stage1.log"),
            source,
        })?;
        // No pre_exec hook: std then starts the child with posix_spawn (a vfork-like clone), not
        // fork, which would copy the page tables of the multi-threaded agent for every pod
        // (~8 % of a 100-pod start's CPU). The supervisor makes itself a session leader first
        // thing (`cli::run_stage1`), so signals to the agent's process group (Ctrl-C, SIGTERM to
        // the group) do not reach the pods.
        let mut cmd = Command::new(&self.cfg.stage1_exe);
        cmd.arg("stage1")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
            exe: self.cfg.stage1_exe.clone(),
            source,
        })?;
        // The supervisor outlives us; it is reaped by `reap_children` (or by init after we exit).
        if let Ok(mut v) = SPAWNED.lock() {
            v.push(child.id() as i32);
        }
        std::mem::forget(child);
        Ok(())
    }

    /// The supervisor as the transient unit `k8s_<uuid>.service` (rkt's kubelet integration's
    /// name, the seed's `journalctl -u k8s_<uuid>`): stdout (the containers' output, echoed by the
    /// supervisor) to the journal, stderr (its own log) to `stage1.log` as without systemd. It
    /// inherits what the agent's environment says to the runtime (`RKTUP_*`, `PATH`).
    fn start_supervisor_unit(
        &self,
        dir: &Path,
        plan: &PodPlan,
    ) -> Result<(), crate::systemd::SystemdError> {
        let exe = std::path::absolute(&self.cfg.stage1_exe)?;
        let environment = std::env::vars()
            .filter(|(k, _)| k.starts_with("RKTUP_") || k == "PATH")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let svc = crate::systemd::TransientService {
            unit: crate::systemd::pod_unit(&plan.uuid),
            description: format!("rktup pod {}/{} ({})", plan.namespace, plan.name, plan.uuid),
            argv: vec![
                exe.display().to_string(),
                "stage1".into(),
                dir.display().to_string(),
            ],
            environment,
            syslog_identifier: format!("{}/{}", plan.namespace, plan.name),
            stderr_append: Some(dir.join("stage1.log").display().to_string()),
        };
        let job = crate::systemd::start_transient_service(&svc)?;
        tracing::trace!(pod = %plan.uuid, "stage1 supervisor started as {} (job {job})", svc.unit);
        Ok(())
    }

    /// Wait until the supervisor recorded its pid (so `alive` checks work right away).
    fn wait_for_supervisor(
        &self,
        dir: &Path,
        timeout: Duration,
    ) -> Result<PodStatus, RuntimeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let st = read_status(dir)?;
            if st.supervisor_pid > 0 || Instant::now() > deadline {
                return Ok(st);
            }
            reap_children();
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn list(&self) -> Vec<PodEntry> {
        reap_children();
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.pods_dir()) else {
            return out;
        };
        let mut plans = match self.plans.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut seen = HashSet::new();
        for e in rd.flatten() {
            let dir = e.path();
            let name = e.file_name();
            let plan = match plans.get(&name) {
                Some(p) => p.clone(),
                None => match read_plan(&dir) {
                    Ok(p) => {
                        let p = Arc::new(p);
                        plans.insert(name.clone(), p.clone());
                        p
                    }
                    Err(_) => continue,
                },
            };
            seen.insert(name);
            let Ok(status) = read_status(&dir) else {
                continue;
            };
            // Spawned but not yet reporting (supervisor_pid still 0) counts as alive for a while.
            let starting = status.supervisor_pid == 0
                && status.state == PodState::Preparing
                && util::now_secs() - plan.created_at < 30;
            let alive =
                starting || util::process_alive(status.supervisor_pid, status.supervisor_start);
            out.push(PodEntry {
                dir,
                plan,
                status,
                alive,
            });
        }
        plans.retain(|name, _| seen.contains(name));
        drop(plans);
        out.sort_by(|a, b| {
            a.plan
                .created_at
                .cmp(&b.plan.created_at)
                .then(a.plan.uuid.cmp(&b.plan.uuid))
        });
        out
    }

    /// Find a pod by full UUID, a UUID prefix (rkt's short form), or `k8s_<uuid>`.
    pub fn find(&self, id: &str) -> Result<PodEntry, RuntimeError> {
        let id = id.trim().trim_start_matches("k8s_").to_ascii_lowercase();
        if id.is_empty() {
            return Err(RuntimeError::NoPod(id));
        }
        let hits: Vec<PodEntry> = self
            .list()
            .into_iter()
            .filter(|p| {
                p.plan.uuid.starts_with(&id) || p.plan.uuid.replace('-', "").starts_with(&id)
            })
            .collect();
        match hits.len() {
            0 => Err(RuntimeError::NoPod(id)),
            1 => Ok(hits.into_iter().next().ok_or(RuntimeError::NoPod(id))?),
            n => Err(RuntimeError::Ambiguous { id, count: n }),
        }
    }

    /// Ask the supervisor to stop (SIGTERM → containers get SIGTERM, then SIGKILL after the grace
    /// period) and wait until the pod exited; if the supervisor is gone, clean up in its place.
    pub fn stop(&self, entry: &PodEntry) -> Result<(), RuntimeError> {
        self.stop_within(entry, None)
    }

    /// [`Runtime::stop`] with a grace period of its own instead of the plan's (kubelet's
    /// deletion grace period, less what preStop hooks took). stage1-kvm guests keep the
    /// plan's: their stop script is fixed at boot.
    pub fn stop_within(
        &self,
        entry: &PodEntry,
        grace: Option<Duration>,
    ) -> Result<(), RuntimeError> {
        if let Some(g) = grace {
            let f = entry.dir.join(crate::stage1::STOP_GRACE_FILE);
            std::fs::write(&f, g.as_secs().to_string()).map_err(|source| RuntimeError::Io {
                action: "write",
                path: f,
                source,
            })?;
        }
        let grace_secs = grace.map_or(entry.plan.grace_seconds, |g| g.as_secs());
        let mut st = read_status(&entry.dir)?;
        if st.supervisor_pid == 0 && st.state == PodState::Preparing {
            st = self.wait_for_supervisor(&entry.dir, Duration::from_secs(10))?;
        }
        let st = &st;
        if util::process_alive(st.supervisor_pid, st.supervisor_start) {
            tracing::trace!(
                pod = %entry.plan.uuid,
                "SIGTERM to stage1 supervisor pid {}",
                st.supervisor_pid
            );
            crate::stage1::sys::kill(st.supervisor_pid, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(grace_secs + 20);
            while util::process_alive(st.supervisor_pid, st.supervisor_start)
                && Instant::now() < deadline
            {
                reap_children();
                std::thread::sleep(Duration::from_millis(20));
            }
            if util::process_alive(st.supervisor_pid, st.supervisor_start) {
                tracing::trace!(
                    pod = %entry.plan.uuid,
                    "stage1 supervisor pid {} still there: SIGKILL",
                    st.supervisor_pid
                );
                crate::stage1::sys::kill(st.supervisor_pid, libc::SIGKILL);
                std::thread::sleep(Duration::from_millis(50));
                reap_children();
            }
        }
        self.finish_stopped(entry)
    }

    /// After the supervisor is gone: if it did not tear the pod down (it died, or was killed),
    /// do it here and record the pod as exited.
    fn finish_stopped(&self, entry: &PodEntry) -> Result<(), RuntimeError> {
        let st = read_status(&entry.dir)?;
        if st.state != PodState::Exited && st.state != PodState::Refused {
            // The supervisor died without tearing down: do it here.
            tracing::trace!(pod = %entry.plan.uuid, "supervisor gone: tearing the pod down here");
            crate::stage1::cleanup_pod(&entry.dir, &entry.plan, st.infra_pid, None);
            let mut st = st;
            st.state = PodState::Exited;
            st.finished_at = Some(util::now_secs());
            st.reason.get_or_insert_with(|| "SupervisorLost".into());
            write_status(&entry.dir, &st)?;
        }
        Ok(())
    }

    /// [`Runtime::finish_stopped`] for a killed pod of a node being torn down whose network
    /// is owed no DEL: its cgroups go and it is recorded as exited, while what is mounted
    /// under its directory is left to the caller, which unmounts the node's whole root at once
    /// (100 pods each reading the mount table and unmounting their own took most of `down`'s
    /// pods step).
    fn finish_killed(&self, entry: &PodEntry) -> Result<(), RuntimeError> {
        let mut st = read_status(&entry.dir)?;
        if st.state != PodState::Exited && st.state != PodState::Refused {
            if let Some(pid) = st.infra_pid {
                crate::stage1::sys::kill(pid, libc::SIGKILL);
            }
            crate::stage1::remove_pod_cgroups(&entry.plan);
            st.state = PodState::Exited;
            st.finished_at = Some(util::now_secs());
            st.reason.get_or_insert_with(|| "Killed".into());
            write_status(&entry.dir, &st)?;
        }
        Ok(())
    }

    /// Kill one running container the way kubelet kills a container it is going to restart
    /// (liveness or startup probe failure): SIGTERM to its first process, then SIGKILL to
    /// everything in its cgroup once `grace` is over. The supervisor sees it exit and restarts it
    /// per restartPolicy, with back-off. Ok(false): it was not running (anymore).
    pub fn kill_container(
        &self,
        entry: &PodEntry,
        name: &str,
        grace: Duration,
    ) -> Result<bool, RuntimeError> {
        let st = read_status(&entry.dir)?;
        let pid = match crate::stage1::enter::running_pid(&entry.plan, &st, name) {
            Ok(p) => p,
            Err(_) if entry.plan.stage1 != Stage1Flavor::Kvm => return Ok(false),
            Err(m) => return Err(RuntimeError::Container(m)),
        };
        let Some(start) = util::process_start_time(pid) else {
            return Ok(false);
        };
        let cgroup =
            crate::cgroups::create_cgroup_manager(&format!("{}/{name}", entry.plan.cgroup_path()));
        let wait_gone = |until: Instant| {
            while util::process_alive(pid, start) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            !util::process_alive(pid, start)
        };
        tracing::trace!(
            pod = %entry.plan.uuid,
            container = name,
            "SIGTERM to pid {pid} (grace {grace:?})"
        );
        crate::stage1::sys::kill(pid, libc::SIGTERM);
        if !wait_gone(Instant::now() + grace) {
            tracing::trace!(pod = %entry.plan.uuid, container = name, "grace over: SIGKILL");
            crate::stage1::sys::kill(pid, libc::SIGKILL);
            for p in cgroup.pids() {
                crate::stage1::sys::kill(p, libc::SIGKILL);
            }
            wait_gone(Instant::now() + Duration::from_secs(10));
        }
        Ok(true)
    }

    /// Kills a pod at once, with no grace period, as a cluster being deleted needs: SIGKILL to
    /// its supervisor (so nothing restarts) and to every process in the pod's and its
    /// containers' cgroups, until they are empty (5 s at most); then the teardown `stop` does
    /// for a supervisor that is gone. A process ignoring SIGTERM costs nothing here.
    pub fn kill(&self, entry: &PodEntry) -> Result<(), RuntimeError> {
        let st = read_status(&entry.dir)?;
        let supervisor_alive = || util::process_alive(st.supervisor_pid, st.supervisor_start);
        if supervisor_alive() {
            crate::stage1::sys::kill(st.supervisor_pid, libc::SIGKILL);
        }
        let pod_cgroup = entry.plan.cgroup_path();
        let mut groups = vec![crate::cgroups::create_cgroup_manager(&pod_cgroup)];
        for c in entry.plan.all_containers() {
            groups.push(crate::cgroups::create_cgroup_manager(&format!(
                "{pod_cgroup}/{}",
                c.name
            )));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            reap_children();
            let mut left = supervisor_alive();
            for pid in groups.iter().flat_map(|g| g.pids()) {
                left = true;
                crate::stage1::sys::kill(pid, libc::SIGKILL);
            }
            if !left || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.finish_stopped(entry)
    }

    /// [`Runtime::kill`] and delete a pod's directory.
    pub fn remove_now(&self, entry: &PodEntry) -> Result<(), RuntimeError> {
        self.kill(entry)?;
        self.delete_dir(entry)
    }

    /// Kills every pod in `pods` at once, as the teardown of a whole node needs (`local down`):
    /// SIGKILL to every supervisor and every process of the pods' cgroups together, waited for
    /// through pidfds (no grace, no polling interval); again for whatever a dying supervisor
    /// started meanwhile; then, several pods at a time, their cgroups are removed. A pod owed
    /// a network DEL gets it and its host resources are released as [`Runtime::kill`] does;
    /// with [`NetworkTeardown::WithNode`] the in-process kubenet attachments are owed none:
    /// they go with the node's network namespace. The pods' directories stay, with what else
    /// is mounted under them (the pinned network namespace, memory volumes): the caller
    /// unmounts and removes the node's root. One result per pod, in `pods`' order.
    pub fn kill_all(
        &self,
        pods: &[PodEntry],
        net: NetworkTeardown,
    ) -> Vec<Result<(), RuntimeError>> {
        use crate::pidfd::{self, Pidfd};
        reap_children();
        let deadline = Instant::now() + Duration::from_secs(5);
        let supervisors: Vec<Pidfd> = pods
            .iter()
            .filter_map(|p| read_status(&p.dir).ok())
            .filter_map(|st| Pidfd::open(st.supervisor_pid, Some(st.supervisor_start)))
            .collect();
        // Supervisors first, so none starts a container again.
        for s in &supervisors {
            s.signal(libc::SIGKILL);
        }
        let groups: Vec<Box<dyn crate::cgroups::CgroupManager>> = pods
            .iter()
            .flat_map(|p| {
                let pod = p.plan.cgroup_path();
                std::iter::once(pod.clone()).chain(
                    p.plan
                        .all_containers()
                        .map(move |c| format!("{pod}/{}", c.name)),
                )
            })
            .map(|rel| crate::cgroups::create_cgroup_manager(&rel))
            .collect();
        let mut waiting = supervisors;
        loop {
            let procs: Vec<Pidfd> = groups
                .iter()
                .flat_map(|g| g.pids())
                .filter_map(|pid| Pidfd::open(pid, None))
                .collect();
            let none = procs.is_empty();
            waiting.extend(procs);
            waiting = pidfd::kill_all(waiting, deadline);
            reap_children();
            if none || Instant::now() >= deadline {
                break;
            }
        }
        // What a pod holds on the host, several pods at a time (their cgroups, mounts and,
        // unless they go with the node, network attachments).
        let workers = pods.len().clamp(1, 32);
        let mut results: Vec<Option<Result<(), RuntimeError>>> =
            (0..pods.len()).map(|_| None).collect();
        std::thread::scope(|scope| {
            let chunk = pods.len().div_ceil(workers).max(1);
            for (pods, out) in pods.chunks(chunk).zip(results.chunks_mut(chunk)) {
                scope.spawn(move || {
                    for (p, o) in pods.iter().zip(out.iter_mut()) {
                        let del_owed = p.dir.join("net-added").exists()
                            && !(net == NetworkTeardown::WithNode && in_process_network(&p.plan));
                        *o = Some(if del_owed {
                            self.finish_stopped(p)
                        } else {
                            self.finish_killed(p)
                        });
                    }
                });
            }
        });
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(RuntimeError::Container("teardown thread panicked".into())))
            })
            .collect()
    }

    /// Stop (if needed) and delete a pod's directory.
    pub fn remove(&self, entry: &PodEntry) -> Result<(), RuntimeError> {
        self.remove_within(entry, None)
    }

    /// [`Runtime::remove`] with the grace period of [`Runtime::stop_within`].
    pub fn remove_within(
        &self,
        entry: &PodEntry,
        grace: Option<Duration>,
    ) -> Result<(), RuntimeError> {
        self.stop_within(entry, grace)?;
        self.delete_dir(entry)
    }

    fn delete_dir(&self, entry: &PodEntry) -> Result<(), RuntimeError> {
        tracing::trace!(pod = %entry.plan.uuid, "removing {}", entry.dir.display());
        crate::stage1::cleanup_pod(&entry.dir, &entry.plan, None, None);
        std::fs::remove_dir_all(&entry.dir).map_err(|source| RuntimeError::Io {
            action: "remove",
            path: entry.dir.clone(),
            source,
        })
    }

    /// Image ids used by pods on disk (for `image rm` / `image gc`).
    pub fn images_in_use(&self) -> BTreeSet<String> {
        self.list()
            .iter()
            .flat_map(|p| {
                p.plan
                    .all_containers()
                    .map(|c| c.image_id.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The pod's status as its supervisor last wrote it (fresher than `entry.status`).
    pub fn status(&self, entry: &PodEntry) -> Result<PodStatus, RuntimeError> {
        Ok(read_status(&entry.dir)?)
    }

    /// Whether the supervisor that wrote `status` still runs (same pid and start time).
    pub fn is_alive(&self, status: &PodStatus) -> bool {
        util::process_alive(status.supervisor_pid, status.supervisor_start)
    }

    /// Whether run `run` (restart number) of `container` can still write to its log: the pod's
    /// supervisor is alive and the container is running that run.
    pub fn run_is_live(&self, entry: &PodEntry, container: &str, run: u32) -> bool {
        let Ok(st) = self.status(entry) else {
            return false;
        };
        if matches!(st.state, PodState::Exited | PodState::Refused) || !self.is_alive(&st) {
            return false;
        }
        st.containers
            .iter()
            .chain(st.init_containers.iter())
            .find(|c| c.name == container)
            .is_some_and(|c| c.state == "running" && c.restart_count == run)
    }

    /// What a pod's cgroup (`container` None: all its containers) or one container's cgroup
    /// has used so far (CPU time, memory and its working set, processes): the numbers of the
    /// agent's `/stats/summary` and `/metrics/resource`. None when that cgroup does not exist
    /// (not started yet, or exited and removed).
    pub fn usage(&self, entry: &PodEntry, container: Option<&str>) -> Option<CgroupUsage> {
        let rel = match container {
            Some(c) => format!("{}/{c}", entry.plan.cgroup_path()),
            None => entry.plan.cgroup_path(),
        };
        crate::cgroups::create_cgroup_manager(&rel).usage()
    }

    /// The directory of `container`'s log files (for the api-service's `logs` route).
    pub(crate) fn pod_log_dir(&self, entry: &PodEntry, container: &str) -> PathBuf {
        crate::logs::container_dir(&entry.dir, container)
    }

    /// Whether run `run` (restart number) of `container` left a log.
    pub fn has_log(&self, entry: &PodEntry, container: &str, run: u32) -> bool {
        !crate::logs::run_files(&self.pod_log_dir(entry, container), run).is_empty()
    }

    /// Read the log of run `run` (restart number) of `container` into `sink`, across rotation:
    /// all of it or its last `tail_lines` records, and with `follow` what the run appends until
    /// it ends (the container exits or restarts, the supervisor is gone) or the sink stops.
    pub fn read_log(
        &self,
        entry: &PodEntry,
        container: &str,
        run: u32,
        opts: &crate::logs::LogRead,
        sink: &mut dyn crate::logs::LogSink,
    ) -> std::io::Result<()> {
        let dir = self.pod_log_dir(entry, container);
        let mut running = || self.run_is_live(entry, container, run);
        crate::logs::read_run(&dir, run, opts, &mut running, sink)
    }

    /// The host pid of `container`'s first process if it runs and can be entered (not in a
    /// stage1-kvm VM); else why not, worded for the user.
    pub fn container_pid(&self, entry: &PodEntry, container: &str) -> Result<i32, String> {
        crate::stage1::enter::running_pid(&entry.plan, &entry.status, container)
    }

    /// A connection to the attach endpoint of `container`'s current run (containers with
    /// `stdin` or `tty`; see `stage1::attach` for the frames); else why not, worded for the user.
    pub fn attach(
        &self,
        entry: &PodEntry,
        container: &str,
    ) -> Result<std::os::unix::net::UnixStream, String> {
        let plan = &entry.plan;
        let index = plan
            .init_containers
            .iter()
            .chain(plan.containers.iter())
            .position(|c| c.name == container)
            .ok_or_else(|| format!("container {container:?} not found in the pod"))?;
        let c = plan
            .init_containers
            .iter()
            .chain(plan.containers.iter())
            .nth(index)
            .ok_or_else(|| format!("container {container:?} not found in the pod"))?;
        if !(c.stdin || c.tty) {
            return Err(format!(
                "container {container:?} has neither stdin nor a terminal to attach to"
            ));
        }
        let path = crate::stage1::attach::socket_path(&entry.dir, index);
        std::os::unix::net::UnixStream::connect(&path)
            .map_err(|e| format!("container {container:?} cannot be attached to: {e}"))
    }

    /// The command that runs `cmd` inside running `container` (`<stage1 exe> stage1 <pod dir>
    /// --enter <container> [--error-fd N] -- cmd...`): its cgroup, namespaces, root, user,
    /// capabilities and environment. It exits with the command's code, or 255 with the reason
    /// (written to `error_fd` in the child if given, else stderr) when it could not run.
    pub fn enter(
        &self,
        entry: &PodEntry,
        container: &str,
        error_fd: Option<i32>,
        cmd: &[String],
    ) -> Command {
        let mut c = Command::new(&self.cfg.stage1_exe);
        c.arg("stage1")
            .arg(&entry.dir)
            .arg("--enter")
            .arg(container);
        if let Some(fd) = error_fd {
            c.arg("--error-fd").arg(fd.to_string());
        }
        c.arg("--").args(cmd);
        c
    }
}

fn refusal_reason(e: &PlanError) -> &'static str {
    match e {
        PlanError::Stage1Refused { .. } => "Stage1Refused",
        PlanError::PrivilegedNotAllowed(_) => "PrivilegedNotAllowed",
        PlanError::Network(_) => "NetworkNotReady",
        PlanError::Image { .. } => "ErrImagePull",
        PlanError::Volume { .. } => "VolumeError",
        PlanError::Seccomp { .. } => "CreateContainerConfigError",
        PlanError::Parse { .. } | PlanError::Invalid(_) => "InvalidPod",
        PlanError::Sandbox(_) => "FailedCreatePodSandBox",
    }
}

fn refused_plan(pod: &Pod, uuid: &str, source: Option<&Path>, hash: &str) -> PodPlan {
    PodPlan {
        uuid: uuid.into(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        uid: pod.metadata.uid.clone().unwrap_or_else(|| uuid.into()),
        node_name: String::new(),
        host_ip: None,
        source: source.map(Path::to_path_buf),
        source_hash: hash.into(),
        stage1: Stage1Flavor::Coreos,
        host_network: false,
        hostname: String::new(),
        restart_policy: RestartPolicy::Never,
        grace_seconds: 0,
        init_containers: vec![],
        containers: vec![],
        volumes: vec![],
        network: None,
        cgroup_parent: "rktup".into(),
        backoff_base_ms: 0,
        backoff_max_ms: 0,
        log_max_size: 0,
        log_max_files: 0,
        verbosity: 0,
        labels: Default::default(),
        annotations: pod.metadata.annotations.clone().unwrap_or_default(),
        created_at: util::now_secs(),
        kvm: None,
        etc: None,
    }
}

static SPAWNED: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Reap exited supervisors we started (they are our children until we exit). Only those pids:
/// a library user may have other children whose status is not ours to take.
pub fn reap_children() {
    let Ok(mut v) = SPAWNED.lock() else { return };
    v.retain(|&pid| {
        let mut st = 0;
        // SAFETY: non-blocking reap of a child we spawned.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        r == 0
    });
}

/// The frames of `Runtime::attach`'s connection (kind, 4-byte big-endian length, data): output
/// `STDOUT`/`STDERR` from the container; `STDIN`, `CLOSE_STDIN` and `RESIZE` (width, height as
/// big-endian u16s) to it.
pub mod attach_frames {
    pub use crate::stage1::attach::{
        frame, take_frames, CLOSE_STDIN, RESIZE, STDERR, STDIN, STDOUT,
    };
}
