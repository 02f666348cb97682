//! Container probes as kubelet runs them (pkg/kubelet/prober): livenessProbe, readinessProbe and
//! startupProbe with `exec`, `httpGet` and `tcpSocket` handlers.
//!
//! - One worker task per container and probe kind, for every runtime pod the sync loop reports
//!   (`observe`), ended when the runtime pod is gone (`end_round`).
//! - A container run is a runtime pod uuid, the container's restart count and start time
//!   (kubelet's container ID). Each new run starts with the initial results: not started, not
//!   ready, alive. Probing starts `initialDelaySeconds` after the container started and repeats
//!   every `periodSeconds`; each probe gets `timeoutSeconds`.
//! - `successThreshold` (readiness only; 1 for the others) consecutive successes or
//!   `failureThreshold` consecutive failures change a result.
//! - A startup probe holds back liveness and readiness until it succeeded, then stops.
//! - Readiness drives the container's `ready`, and with it the pod's `ContainersReady` and
//!   `Ready` conditions (`health`). Without a readiness probe a started container is ready.
//! - A liveness (or startup) failure kills the container (`Killing`: "Container c failed liveness
//!   probe, will be restarted") with the probe's `terminationGracePeriodSeconds`, else the pod's
//!   (at least 2 s); the supervisor restarts it per restartPolicy. The worker then waits for the
//!   next run.
//! - Every failed probe is a `Warning Unhealthy` event ("Liveness probe failed: <output>", or
//!   "... probe errored and resulted in unknown state: <error>" when it could not run).
//!
//! Handlers: `exec` runs the command inside the container (`rktup stage1 <pod dir> --enter`:
//! the container's namespaces, root, cgroup, user and environment) and succeeds on exit code 0;
//! `httpGet` (HTTP, or HTTPS without certificate verification) sends GET to the pod IP (or
//! `host`), follows redirects on the same host, succeeds on 200–399; `tcpSocket` succeeds when a
//! connection opens; `grpc` calls grpc.health.v1.Health/Check (plaintext HTTP/2, `service`) on
//! the pod IP and succeeds on SERVING.

use super::events;
use crate::sync::log;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rktup_runtime::pod::ContainerStatus;
use rktup_runtime::runtime::{PodEntry, Runtime};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;

/// kubelet reads at most this much of a probe's output.
const MAX_OUTPUT: usize = 10 * 1024;
/// kubelet's minimum grace period when it kills a container.
const MIN_GRACE_SECONDS: i64 = 2;
/// `User-Agent` of HTTP probes, as kubelet's (`kube-probe/<major>.<minor>`).
const USER_AGENT: &str = "kube-probe/1.33";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }

    fn of(self, c: &Container) -> Option<&Probe> {
        match self {
            Kind::Liveness => c.liveness_probe.as_ref(),
            Kind::Readiness => c.readiness_probe.as_ref(),
            Kind::Startup => c.startup_probe.as_ref(),
        }
    }
}

/// A probe's timing with kubelet's defaults (and minimums) applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(p: &Probe, kind: Kind) -> Timing {
        let secs = |v: Option<i32>, default: i32| {
            Duration::from_secs(v.filter(|s| *s >= 1).unwrap_or(default) as u64)
        };
        let n = |v: Option<i32>, default: i32| v.filter(|s| *s >= 1).unwrap_or(default) as u32;
        Timing {
            initial_delay: Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64),
            period: secs(p.period_seconds, 10),
            timeout: secs(p.timeout_seconds, 1),
            // Validation makes it 1 for liveness and startup probes.
            success_threshold: if kind == Kind::Readiness {
                n(p.success_threshold, 1)
            } else {
                1
            },
            failure_threshold: n(p.failure_threshold, 3),
        }
    }
}

/// What probes say about a running container, for its status: `started` (the startup probe
/// passed, or there is none) and `ready` (started, and the readiness probe passed or there is
/// none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub started: bool,
    pub ready: bool,
}

/// One run of a container (kubelet's container ID within a runtime pod).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    restart_count: u32,
    started_at: i64,
}

fn run_of(c: &ContainerStatus) -> Option<Run> {
    (c.state == "running").then_some(Run {
        restart_count: c.restart_count,
        started_at: c.started_at.unwrap_or(0),
    })
}

/// Latest of one runtime pod, shared by its workers.
struct Tracked {
    pod: Arc<Pod>,
    entry: PodEntry,
    seen: u64,
    /// Bumped on every change of the pod's runtime status or of a probe result.
    version: watch::Sender<u64>,
    /// Success/failure per (container, kind), valid for one run of the container.
    results: HashMap<(String, Kind), (Run, bool)>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Tracked {
    fn result(&self, c: &str, kind: Kind, run: Run) -> Option<bool> {
        self.results
            .get(&(c.to_string(), kind))
            .filter(|(r, _)| *r == run)
            .map(|(_, ok)| *ok)
    }

    fn health(&self, spec: &Container, st: &ContainerStatus) -> Health {
        let Some(run) = run_of(st) else {
            return Health {
                started: false,
                ready: false,
            };
        };
        let started = spec.startup_probe.is_none()
            || self.result(&spec.name, Kind::Startup, run) == Some(true);
        let ready = started
            && (spec.readiness_probe.is_none()
                || self.result(&spec.name, Kind::Readiness, run) == Some(true));
        Health { started, ready }
    }
}

#[derive(Default)]
struct Shared {
    pods: HashMap<String, Tracked>,
    round: u64,
}

/// The probe workers of this node's pods.
#[derive(Clone)]
pub struct Prober {
    client: kube::Client,
    node: String,
    rt: Arc<Runtime>,
    /// Wakes the sync loop (to write status) when a result changed.
    wake: Arc<tokio::sync::Notify>,
    shared: Arc<Mutex<Shared>>,
}

fn has_probes(c: &Container) -> bool {
    c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some()
}

impl Prober {
    pub fn new(
        client: kube::Client,
        node: String,
        rt: Arc<Runtime>,
        wake: Arc<tokio::sync::Notify>,
    ) -> Prober {
        Prober {
            client,
            node,
            rt,
            wake,
            shared: Arc::default(),
        }
    }

    /// A sync round starts: pods not observed until `end_round` lose their workers.
    pub fn begin_round(&self) {
        if let Ok(mut s) = self.shared.lock() {
            s.round += 1;
        }
    }

    /// Stop the workers of runtime pods the last round did not observe.
    pub fn end_round(&self) {
        if let Ok(mut s) = self.shared.lock() {
            let round = s.round;
            s.pods.retain(|_, t| t.seen == round);
        }
    }

    /// The sync loop saw runtime pod `e` for API pod `pod`: start its workers on first sight,
    /// hand them the latest status, and say what the probes found so far (per container that
    /// has probes; the others are ready while running).
    pub fn observe(&self, pod: &Pod, e: &PodEntry) -> BTreeMap<String, Health> {
        let containers: Vec<&Container> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .filter(|c| has_probes(c))
            .collect();
        let mut out = BTreeMap::new();
        if containers.is_empty() {
            return out;
        }
        let Ok(mut s) = self.shared.lock() else {
            return out;
        };
        let round = s.round;
        let uuid = e.plan.uuid.clone();
        if !s.pods.contains_key(&uuid) {
            let (tx, _) = watch::channel(0u64);
            let mut t = Tracked {
                pod: Arc::new(pod.clone()),
                entry: e.clone(),
                seen: round,
                version: tx,
                results: HashMap::new(),
                tasks: vec![],
            };
            for c in &containers {
                for kind in [Kind::Startup, Kind::Readiness, Kind::Liveness] {
                    let Some(p) = kind.of(c) else { continue };
                    let w = Worker {
                        prober: self.clone(),
                        uuid: uuid.clone(),
                        container: (*c).clone(),
                        kind,
                        probe: p.clone(),
                        timing: Timing::of(p, kind),
                    };
                    let rx = t.version.subscribe();
                    t.tasks.push(tokio::spawn(w.run(rx)).abort_handle());
                }
            }
            s.pods.insert(uuid.clone(), t);
        }
        let Some(t) = s.pods.get_mut(&uuid) else {
            return out;
        };
        t.seen = round;
        let changed = t.entry.status.containers != e.status.containers
            || t.entry.status.pod_ip != e.status.pod_ip
            || t.entry.status.state != e.status.state;
        t.entry = e.clone();
        if t.pod.metadata.resource_version != pod.metadata.resource_version {
            t.pod = Arc::new(pod.clone());
        }
        if changed {
            t.version.send_modify(|v| *v += 1);
        }
        for c in containers {
            if let Some(st) = e.status.containers.iter().find(|s| s.name == c.name) {
                out.insert(c.name.clone(), t.health(c, st));
            }
        }
        out
    }

    /// What a worker needs of its pod right now; None once the pod is no longer tracked.
    fn snapshot(&self, uuid: &str, container: &str) -> Option<Snapshot> {
        let s = self.shared.lock().ok()?;
        let t = s.pods.get(uuid)?;
        let status = t
            .entry
            .status
            .containers
            .iter()
            .find(|c| c.name == container)
            .cloned();
        let spec = t
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == container));
        let started = match (&status, spec) {
            (Some(st), Some(spec)) => t.health(spec, st).started,
            _ => false,
        };
        Some(Snapshot {
            pod: t.pod.clone(),
            entry: t.entry.clone(),
            status,
            started,
        })
    }

    /// Record a result for a run; wakes the sync loop and the pod's workers when it changed.
    fn set_result(&self, uuid: &str, container: &str, kind: Kind, run: Run, ok: bool) {
        let Ok(mut s) = self.shared.lock() else {
            return;
        };
        let Some(t) = s.pods.get_mut(uuid) else {
            return;
        };
        let key = (container.to_string(), kind);
        if t.results.get(&key) != Some(&(run, ok)) {
            t.results.insert(key, (run, ok));
            t.version.send_modify(|v| *v += 1);
            self.wake.notify_one();
        }
    }
}

struct Snapshot {
    pod: Arc<Pod>,
    entry: PodEntry,
    status: Option<ContainerStatus>,
    started: bool,
}

/// How one probe run ended (kubelet's probe.Result plus its output or error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Success, with a warning (an HTTP redirect to another host was not followed).
    Warning(String),
    Failure(String),
    /// The probe could not run.
    Error(String),
}

struct Worker {
    prober: Prober,
    uuid: String,
    container: Container,
    kind: Kind,
    probe: Probe,
    timing: Timing,
}

/// A worker's view of the current container run.
struct RunState {
    run: Option<Run>,
    last: Option<bool>,
    count: u32,
    on_hold: bool,
    next: Instant,
}

impl Worker {
    async fn run(self, mut version: watch::Receiver<u64>) {
        let mut st = RunState {
            run: None,
            last: None,
            count: 0,
            on_hold: false,
            next: Instant::now(),
        };
        loop {
            version.borrow_and_update();
            let Some(snap) = self.prober.snapshot(&self.uuid, &self.container.name) else {
                return;
            };
            let wait = self.step(&mut st, &snap).await;
            let sleep = match wait {
                Some(t) => tokio::time::sleep_until(t.into()),
                // Nothing to do until the pod changes; look again now and then anyway.
                None => tokio::time::sleep(Duration::from_secs(5)),
            };
            tokio::select! {
                r = version.changed() => if r.is_err() { return },
                _ = sleep => {}
            }
        }
    }

    /// kubelet's worker.doProbe: returns when to look again (None: on the next change).
    async fn step(&self, st: &mut RunState, snap: &Snapshot) -> Option<Instant> {
        let run = snap.status.as_ref().and_then(run_of);
        if run != st.run {
            // A new run of the container (or it stopped): initial results, probing starts
            // initialDelaySeconds after it started.
            st.run = run;
            st.last = None;
            st.count = 0;
            st.on_hold = false;
            if let Some(r) = run {
                let age = (rktup_runtime::util::now_secs() - r.started_at).max(0) as u64;
                let start = Instant::now()
                    .checked_sub(Duration::from_secs(age))
                    .unwrap_or_else(Instant::now);
                st.next = start + self.timing.initial_delay;
            }
        }
        let run = run?;
        if st.on_hold || snap.pod.metadata.deletion_timestamp.is_some() {
            return None;
        }
        match self.kind {
            Kind::Startup if snap.started => return None,
            Kind::Liveness | Kind::Readiness if !snap.started => return None,
            _ => {}
        }
        let now = Instant::now();
        if now < st.next {
            return Some(st.next);
        }
        st.next = now + self.timing.period;
        let outcome = self.probe_once(snap).await;
        let ok = self.report(snap, &outcome).await;
        if st.last == Some(ok) {
            st.count = st.count.saturating_add(1);
        } else {
            st.last = Some(ok);
            st.count = 1;
        }
        let threshold = if ok {
            self.timing.success_threshold
        } else {
            self.timing.failure_threshold
        };
        if st.count < threshold {
            return Some(st.next);
        }
        self.prober
            .set_result(&self.uuid, &self.container.name, self.kind, run, ok);
        if !ok && self.kind != Kind::Readiness {
            // Liveness or startup failure: the container is killed and restarted.
            st.on_hold = true;
            st.count = 0;
            self.kill(snap).await;
            return None;
        }
        Some(st.next)
    }

    /// Events for a probe run (kubelet's prober.probe); true if it counts as success.
    async fn report(&self, snap: &Snapshot, o: &Outcome) -> bool {
        let kind = self.kind.as_str();
        let (reason, message) = match o {
            Outcome::Success => return true,
            Outcome::Warning(w) => ("ProbeWarning", format!("{kind} probe warning: {w}")),
            Outcome::Failure(out) => ("Unhealthy", format!("{kind} probe failed: {out}")),
            Outcome::Error(e) => (
                "Unhealthy",
                format!("{kind} probe errored and resulted in unknown state: {e}"),
            ),
        };
        events::record_container(
            &self.prober.client,
            &self.prober.node,
            &snap.pod,
            &self.container.name,
            "Warning",
            reason,
            &message,
        )
        .await;
        matches!(o, Outcome::Warning(_))
    }

    /// Kill the container after a liveness/startup failure; the supervisor restarts it per
    /// restartPolicy.
    async fn kill(&self, snap: &Snapshot) {
        let spec = snap.pod.spec.as_ref();
        let restart = spec.and_then(|s| s.restart_policy.as_deref()) != Some("Never");
        let message = format!(
            "Container {} failed {} probe{}",
            self.container.name,
            self.kind.as_str().to_lowercase(),
            if restart { ", will be restarted" } else { "" }
        );
        events::record_container(
            &self.prober.client,
            &self.prober.node,
            &snap.pod,
            &self.container.name,
            "Normal",
            "Killing",
            &message,
        )
        .await;
        let grace = self
            .probe
            .termination_grace_period_seconds
            .or_else(|| spec.and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(MIN_GRACE_SECONDS) as u64;
        let (rt, entry, name) = (
            self.prober.rt.clone(),
            snap.entry.clone(),
            self.container.name.clone(),
        );
        let r = tokio::task::spawn_blocking(move || {
            rt.kill_container(&entry, &name, Duration::from_secs(grace))
        })
        .await;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log(&format!(
                "kubelet: failed to kill container {} of pod k8s_{}: {e}",
                self.container.name, self.uuid
            )),
            Err(e) => log(&format!("kubelet: kill task failed: {e}")),
        }
    }

    async fn probe_once(&self, snap: &Snapshot) -> Outcome {
        let p = &self.probe;
        let timeout = self.timing.timeout;
        let host = |explicit: Option<&String>| -> Result<String, String> {
            match explicit.filter(|h| !h.is_empty()) {
                Some(h) => Ok(h.clone()),
                None => pod_ip(snap).ok_or_else(|| "the pod has no IP address yet".to_string()),
            }
        };
        if let Some(ex) = &p.exec {
            let env: Vec<(String, String)> = self
                .container
                .env
                .iter()
                .flatten()
                .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
                .collect();
            let cmd: Vec<String> = ex
                .command
                .iter()
                .flatten()
                .map(|a| rktup_runtime::manifest::expand(a, &env))
                .collect();
            return exec_probe(
                &self.prober.rt,
                &snap.entry,
                &self.container.name,
                cmd,
                timeout,
            )
            .await;
        }
        if let Some(h) = &p.http_get {
            let host = match host(h.host.as_ref()) {
                Ok(h) => h,
                Err(e) => return Outcome::Error(e),
            };
            let port = match resolve_port(&h.port, &self.container) {
                Ok(p) => p,
                Err(e) => return Outcome::Error(e),
            };
            let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
            if scheme != "http" && scheme != "https" {
                return Outcome::Error(format!("unsupported scheme {scheme:?}"));
            }
            let headers: Vec<(String, String)> = h
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            let url = Url {
                scheme,
                host,
                port,
                path: h.path.clone().unwrap_or_default(),
            };
            return http_probe(url, &headers, timeout).await;
        }
        if let Some(t) = &p.tcp_socket {
            let host = match host(t.host.as_ref()) {
                Ok(h) => h,
                Err(e) => return Outcome::Error(e),
            };
            let port = match resolve_port(&t.port, &self.container) {
                Ok(p) => p,
                Err(e) => return Outcome::Error(e),
            };
            return tcp_probe(&host, port, timeout).await;
        }
        if let Some(g) = &p.grpc {
            let host = match pod_ip(snap) {
                Some(h) => h,
                None => return Outcome::Error("the pod has no IP address yet".into()),
            };
            let port = match u16::try_from(g.port) {
                Ok(p) if p > 0 => p,
                _ => return Outcome::Error(format!("invalid port number: {}", g.port)),
            };
            let service = g.service.clone().unwrap_or_default();
            return grpc_probe(&host, port, &service, timeout).await;
        }
        Outcome::Error("missing probe handler".into())
    }
}

/// The pod's IP: the runtime's, else what the status says (the node's IP for host-network
/// pods), else loopback for pods in the node's network namespace (the agent's own).
fn pod_ip(snap: &Snapshot) -> Option<String> {
    snap.entry
        .status
        .pod_ip
        .clone()
        .or_else(|| {
            snap.pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty())
        })
        .or_else(|| {
            snap.entry
                .plan
                .network
                .is_none()
                .then(|| "127.0.0.1".to_string())
        })
}

/// A probe's port: a number, or the name of one of the container's ports (kubelet's
/// ResolveContainerPort, errors worded as its).
pub fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, String> {
    let n: i64 = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => {
            match c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
            {
                Some(p) => i64::from(p.container_port),
                None => name
                    .parse()
                    .map_err(|_| format!("strconv.Atoi: parsing {name:?}: invalid syntax"))?,
            }
        }
    };
    if (1..65536).contains(&n) {
        Ok(n as u16)
    } else {
        Err(format!("invalid port number: {n}"))
    }
}

/// An io::Error as Go's net package words it ("connection refused", "no route to host").
fn go_error(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub async fn tcp_probe(host: &str, port: u16, timeout: Duration) -> Outcome {
    let addr = join_host_port(host, port);
    let connect = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port));
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(format!("dial tcp {addr}: connect: {}", go_error(&e))),
        Err(_) => Outcome::Failure(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// Run `cmd` in the container through `rktup stage1 <pod dir> --enter`; its stdout and stderr
/// (at most 10 KiB) are the output.
pub async fn exec_probe(
    rt: &Runtime,
    entry: &PodEntry,
    container: &str,
    cmd: Vec<String>,
    timeout: Duration,
) -> Outcome {
    if cmd.is_empty() {
        return Outcome::Error("exec probe without a command".into());
    }
    let (mut c, err_r, err_w) = match super::exec::enter_command(rt, entry, container, &cmd) {
        Ok(c) => c,
        Err(e) => return Outcome::Error(format!("failed to create a pipe: {e}")),
    };
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = match c.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Error(format!(
                "failed to run {}: {e}",
                rt.cfg.stage1_exe.display()
            ))
        }
    };
    drop(err_w);
    let output = Arc::new(Mutex::new(Vec::new()));
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let run = async {
        tokio::join!(
            read_limited(out, output.clone()),
            read_limited(err, output.clone())
        );
        child.wait().await
    };
    let status = match tokio::time::timeout(timeout, run).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Outcome::Error(format!("failed to wait for the command: {e}")),
        Err(_) => {
            // SIGTERM: `enter` kills the command's process group and reaps it (no zombie left
            // under the container's init); SIGKILL if it does not end in time.
            if let Some(pid) = child.id() {
                // SAFETY: signalling our own child, which has not been reaped yet.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            if tokio::time::timeout(Duration::from_secs(2), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            return Outcome::Error(format!(
                "command timed out: {:?} timed out after {}s",
                cmd.join(" "),
                timeout.as_secs()
            ));
        }
    };
    // Everything that wrote to the error pipe has exited by now.
    let problem = super::exec::read_error_pipe(err_r).await;
    if !problem.is_empty() {
        return Outcome::Error(problem.to_string());
    }
    let out = output
        .lock()
        .map(|o| String::from_utf8_lossy(&o).into_owned())
        .unwrap_or_default();
    if status.success() {
        Outcome::Success
    } else {
        Outcome::Failure(out)
    }
}

async fn read_limited(r: Option<impl AsyncRead + Unpin>, into: Arc<Mutex<Vec<u8>>>) {
    let Some(mut r) = r else { return };
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Ok(mut v) = into.lock() {
                    let room = MAX_OUTPUT.saturating_sub(v.len());
                    v.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
    }
}

/// The parts of a probe URL kubelet builds (scheme://host:port/path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Path and query as given ("" is "/").
    pub path: String,
}

impl Url {
    fn request_target(&self) -> String {
        if self.path.starts_with('/') {
            self.path.clone()
        } else {
            format!("/{}", self.path)
        }
    }

    fn authority(&self) -> String {
        join_host_port(&self.host, self.port)
    }

    pub fn to_url_string(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme,
            self.authority(),
            self.request_target()
        )
    }

    /// Where a `Location` header points, relative to this URL.
    pub fn join(&self, location: &str) -> Option<Url> {
        if let Some((scheme, rest)) = location.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            let default = match scheme.as_str() {
                "http" => 80,
                "https" => 443,
                _ => return None,
            };
            let (auth, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let (host, port) = if let Some(r) = auth.strip_prefix('[') {
                let (h, p) = r.split_once(']')?;
                (h.to_string(), p.strip_prefix(':'))
            } else {
                match auth.rsplit_once(':') {
                    Some((h, p)) => (h.to_string(), Some(p)),
                    None => (auth.to_string(), None),
                }
            };
            let port = match port {
                Some(p) => p.parse().ok()?,
                None => default,
            };
            return Some(Url {
                scheme,
                host,
                port,
                path: path.to_string(),
            });
        }
        let path = if location.starts_with('/') {
            location.to_string()
        } else {
            let base = self.request_target();
            let base = base.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map(|i| i + 1).unwrap_or(0)];
            format!("{dir}{location}")
        };
        Some(Url {
            path,
            ..self.clone()
        })
    }
}

/// GET `url` (kubelet's DoHTTPProbe): 200–399 is success; redirects are followed on the same
/// host (at most 10), a redirect to another host ends in a warning (success).
pub async fn http_probe(url: Url, headers: &[(String, String)], timeout: Duration) -> Outcome {
    let first = url.to_url_string();
    let run = async {
        let mut url = url.clone();
        for hop in 0..=10 {
            let (code, location, body) = match http_get(&url, headers).await {
                Ok(r) => r,
                Err(e) => return Outcome::Failure(format!("Get {:?}: {e}", url.to_url_string())),
            };
            if (300..400).contains(&code) {
                if let Some(next) = location.as_deref().and_then(|l| url.join(l)) {
                    if next.host != url.host {
                        return Outcome::Warning(format!(
                            "Probe terminated redirects, Response body: {body}"
                        ));
                    }
                    if hop == 10 {
                        return Outcome::Failure(format!(
                            "Get {:?}: stopped after 10 redirects",
                            next.to_url_string()
                        ));
                    }
                    url = next;
                    continue;
                }
            }
            return if (200..400).contains(&code) {
                Outcome::Success
            } else {
                Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
            };
        }
        Outcome::Failure(format!("Get {first:?}: stopped after 10 redirects"))
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(o) => o,
        Err(_) => Outcome::Failure(format!(
            "Get {first:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

/// One GET: (status, Location, body up to 10 KiB).
async fn http_get(
    url: &Url,
    headers: &[(String, String)],
) -> Result<(u16, Option<String>, String), String> {
    let addr = url.authority();
    let tcp = tokio::net::TcpStream::connect((url.host.trim_matches(['[', ']']), url.port))
        .await
        .map_err(|e| format!("dial tcp {addr}: connect: {}", go_error(&e)))?;
    if url.scheme == "https" {
        let tls = tokio_rustls::TlsConnector::from(insecure_tls());
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| format!("invalid host {:?}: {e}", url.host))?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        exchange(stream, url, headers).await
    } else {
        exchange(tcp, url, headers).await
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    url: &Url,
    headers: &[(String, String)],
) -> Result<(u16, Option<String>, String), String> {
    let (mut send, conn) = hyper::client::conn::http1::Builder::new()
        // Header names as Go's client writes them (User-Agent, not user-agent).
        .title_case_headers(true)
        .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(http::Method::GET)
        .uri(url.request_target());
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has("host") {
        // As Go's client sends it for kubelet's URLs: always with the port.
        req = req.header(http::header::HOST, url.authority());
    }
    if !has("user-agent") {
        req = req.header(http::header::USER_AGENT, USER_AGENT);
    }
    if !has("accept") {
        req = req.header(http::header::ACCEPT, "*/*");
    }
    req = req.header(http::header::CONNECTION, "close");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(http_body_util::Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = resp.into_body();
    let mut data = Vec::new();
    while data.len() < MAX_OUTPUT {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    let room = MAX_OUTPUT - data.len();
                    data.extend_from_slice(&d[..d.len().min(room)]);
                }
            }
            _ => break,
        }
    }
    conn.abort();
    Ok((code, location, String::from_utf8_lossy(&data).into_owned()))
}

/// grpc.health.v1.HealthCheckResponse.ServingStatus names.
fn serving_status(n: u64) -> String {
    match n {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => n.to_string(),
    }
}

/// gRPC status code names (for "rpc error: code = ... desc = ...").
fn grpc_code(n: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES.get(n as usize).copied().unwrap_or("Unknown")
}

fn read_varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The `status` field (1) of a HealthCheckResponse message; absent is UNKNOWN (0).
fn health_status(msg: &[u8]) -> Option<u64> {
    let mut i = 0;
    let mut status = 0;
    while i < msg.len() {
        let key = read_varint(msg, &mut i)?;
        match key & 7 {
            0 => {
                let v = read_varint(msg, &mut i)?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            1 => i += 8,
            2 => {
                let n = read_varint(msg, &mut i)? as usize;
                i = i.checked_add(n)?;
            }
            5 => i += 4,
            _ => return None,
        }
    }
    (i == msg.len()).then_some(status)
}

/// kubelet's gRPC probe: grpc.health.v1.Health/Check over plaintext HTTP/2 to the pod IP;
/// success when the service answers SERVING. Outputs worded as kubelet's.
pub async fn grpc_probe(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    let addr = join_host_port(host, port);
    let secs = format!("{}s", timeout.as_secs());
    let deadline = tokio::time::Instant::now() + timeout;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| format!("dial tcp {addr}: connect: {}", go_error(&e)))?;
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, http_body_util::Full<bytes::Bytes>>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())
    };
    let (mut send, conn) = match tokio::time::timeout_at(deadline, connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Outcome::Failure(format!("error: failed to connect service at {addr:?}: {e}"))
        }
        Err(_) => {
            return Outcome::Failure(format!(
            "timeout: failed to connect service {addr:?} within {secs}: context deadline exceeded"
        ))
        }
    };
    let conn = tokio::spawn(conn);
    // HealthCheckRequest{service}, length-prefixed as a gRPC message.
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a);
        let mut n = service.len() as u64;
        while n >= 0x80 {
            msg.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        msg.push(n as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let rpc = async {
        let req = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .header(http::header::USER_AGENT, USER_AGENT)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let (parts, mut body) = resp.into_parts();
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(f) = body.frame().await {
            let f = f.map_err(|e| e.to_string())?;
            match f.into_data() {
                Ok(d) => {
                    if data.len() < MAX_OUTPUT {
                        data.extend_from_slice(&d);
                    }
                }
                Err(f) => {
                    if let Ok(t) = f.into_trailers() {
                        trailers = Some(t);
                    }
                }
            }
        }
        Ok::<_, String>((parts, data, trailers))
    };
    let r = tokio::time::timeout_at(deadline, rpc).await;
    conn.abort();
    let (parts, data, trailers) = match r {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return Outcome::Failure(format!(
                "error: health rpc probe failed: rpc error: code = Unavailable desc = {e}"
            ))
        }
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: health rpc did not complete within {secs}"
            ))
        }
    };
    // grpc-status is in the trailers, or in the headers of a trailers-only response.
    let field = |name: &str| {
        trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .or_else(|| parts.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let code: u32 = match (parts.status.as_u16(), field("grpc-status")) {
        (_, Some(c)) => c.trim().parse().unwrap_or(2),
        (200, None) => 2,
        // Not a gRPC server (HTTP status as grpc-go maps it).
        (_, None) => 14,
    };
    if code != 0 {
        let desc = field("grpc-message").unwrap_or_else(|| {
            format!(
                "unexpected HTTP status code received from server: {}",
                parts.status.as_u16()
            )
        });
        return Outcome::Failure(match code {
            12 => format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {desc}"
            ),
            4 => format!("timeout: health rpc did not complete within {secs}"),
            c => format!(
                "error: health rpc probe failed: rpc error: code = {} desc = {desc}",
                grpc_code(c)
            ),
        });
    }
    let status = data
        .get(5..)
        .filter(|_| data.first() == Some(&0))
        .and_then(health_status);
    match status {
        Some(1) => Outcome::Success,
        Some(s) => Outcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            serving_status(s)
        )),
        None => Outcome::Failure(
            "error: health rpc probe failed: rpc error: code = Internal desc = malformed response"
                .into(),
        ),
    }
}

/// HTTPS probes do not verify the server's certificate (kubelet: InsecureSkipVerify).
fn insecure_tls() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(NoVerify(provider.clone()));
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_no_client_auth()
        });
    match cfg {
        Ok(c) => Arc::new(c),
        // The ring provider supports the default versions; this is not reached.
        Err(_) => Arc::new(
            rustls::ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth(),
        ),
    }
}

/// A server-certificate verifier that accepts any certificate (signatures are still checked
/// with `provider`'s algorithms): kubelet's InsecureSkipVerify. Also what the agent's tests use
/// to talk to the kubelet port, as the API server does.
#[derive(Debug)]
pub struct NoVerify(pub Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    #[test]
    fn defaults_and_minimums() {
        let t = Timing::of(&Probe::default(), Kind::Liveness);
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
        assert_eq!(t.initial_delay, Duration::ZERO);
        let p = Probe {
            success_threshold: Some(3),
            period_seconds: Some(0),
            initial_delay_seconds: Some(5),
            ..Default::default()
        };
        assert_eq!(Timing::of(&p, Kind::Readiness).success_threshold, 3);
        assert_eq!(Timing::of(&p, Kind::Liveness).success_threshold, 1);
        assert_eq!(
            Timing::of(&p, Kind::Startup).period,
            Duration::from_secs(10)
        );
        assert_eq!(
            Timing::of(&p, Kind::Startup).initial_delay,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn ports_by_number_and_name() {
        let c = Container {
            name: "c".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(resolve_port(&IntOrString::Int(80), &c), Ok(80));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(resolve_port(&IntOrString::String("81".into()), &c), Ok(81));
        assert_eq!(
            resolve_port(&IntOrString::String("web".into()), &c),
            Err("strconv.Atoi: parsing \"web\": invalid syntax".into())
        );
        assert_eq!(
            resolve_port(&IntOrString::Int(0), &c),
            Err("invalid port number: 0".into())
        );
    }

    #[test]
    fn redirect_targets() {
        let u = Url {
            scheme: "http".into(),
            host: "10.0.0.5".into(),
            port: 8080,
            path: "a/b?x=1".into(),
        };
        assert_eq!(u.to_url_string(), "http://10.0.0.5:8080/a/b?x=1");
        assert_eq!(u.join("/c").map(|u| u.path), Some("/c".into()));
        assert_eq!(u.join("d").map(|u| u.path), Some("/a/d".into()));
        let abs = u.join("https://[fd00::1]/x").expect("absolute");
        assert_eq!(
            (abs.scheme.as_str(), abs.host.as_str(), abs.port),
            ("https", "fd00::1", 443)
        );
        assert_eq!(abs.to_url_string(), "https://[fd00::1]:443/x");
        assert_eq!(u.join("ftp://x/"), None);
    }

    #[test]
    fn go_style_errors() {
        let e = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(go_error(&e), "connection refused");
    }

    #[tokio::test]
    async fn tcp_and_http_against_a_local_server() {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                    let resp = match path.as_str() {
                        "/ok" => {
                            assert!(req.contains("User-Agent: kube-probe/"), "{req}");
                            assert!(req.contains("X-Probe: yes"), "{req}");
                            assert!(req.contains("Host: 127.0.0.1:"), "{req}");
                            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_string()
                        }
                        "/moved" => "HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n".into(),
                        "/away" => "HTTP/1.1 301 Moved\r\nLocation: http://elsewhere.invalid/\r\nContent-Length: 4\r\n\r\nbye!".into(),
                        _ => "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n".into(),
                    };
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        let t = Duration::from_secs(2);
        assert_eq!(tcp_probe("127.0.0.1", port, t).await, Outcome::Success);
        let url = |path: &str| Url {
            scheme: "http".into(),
            host: "127.0.0.1".into(),
            port,
            path: path.into(),
        };
        let h = vec![("x-probe".to_string(), "yes".to_string())];
        assert_eq!(http_probe(url("/ok"), &h, t).await, Outcome::Success);
        assert_eq!(http_probe(url("/moved"), &h, t).await, Outcome::Success);
        assert_eq!(
            http_probe(url("/away"), &h, t).await,
            Outcome::Warning("Probe terminated redirects, Response body: bye!".into())
        );
        assert_eq!(
            http_probe(url("/bad"), &h, t).await,
            Outcome::Failure("HTTP probe failed with statuscode: 503".into())
        );
        // Nothing listens on the port any more once the listener is gone: use a fresh one.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        assert_eq!(
            tcp_probe("127.0.0.1", closed, t).await,
            Outcome::Failure(format!(
                "dial tcp 127.0.0.1:{closed}: connect: connection refused"
            ))
        );
        match http_probe(url("/x").clone_with_port(closed), &[], t).await {
            Outcome::Failure(m) => assert_eq!(
                m,
                format!(
                    "Get \"http://127.0.0.1:{closed}/x\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
                )
            ),
            o => panic!("{o:?}"),
        }
    }

    #[tokio::test]
    async fn https_without_certificate_verification() {
        use tokio::io::AsyncWriteExt;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["probe.invalid".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(s).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                        .await;
                    let _ = s.shutdown().await;
                });
            }
        });
        let url = Url {
            scheme: "https".into(),
            host: "127.0.0.1".into(),
            port,
            path: "/healthz".into(),
        };
        assert_eq!(
            http_probe(url, &[], Duration::from_secs(5)).await,
            Outcome::Success
        );
    }

    /// A gRPC health server on HTTP/2: SERVING for "", NOT_SERVING for "down", Unimplemented
    /// (trailers-only) for "nohealth".
    #[tokio::test]
    async fn grpc_health_checks() {
        use http_body_util::{BodyExt, StreamBody};
        use hyper::body::Frame;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                        let body = req.into_body().collect().await.expect("body").to_bytes();
                        let service =
                            String::from_utf8_lossy(body.get(7..).unwrap_or_default()).into_owned();
                        let frames: Vec<Result<Frame<bytes::Bytes>, std::convert::Infallible>> =
                            if service == "nohealth" {
                                vec![]
                            } else {
                                let status = if service == "down" { 2u8 } else { 1 };
                                let mut trailers = http::HeaderMap::new();
                                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                                vec![
                                    Ok(Frame::data(bytes::Bytes::from(vec![
                                        0, 0, 0, 0, 2, 8, status,
                                    ]))),
                                    Ok(Frame::trailers(trailers)),
                                ]
                            };
                        let mut resp = http::Response::new(StreamBody::new(
                            futures_util::stream::iter(frames),
                        ));
                        resp.headers_mut().insert(
                            "content-type",
                            http::HeaderValue::from_static("application/grpc"),
                        );
                        if service == "nohealth" {
                            resp.headers_mut()
                                .insert("grpc-status", http::HeaderValue::from_static("12"));
                            resp.headers_mut().insert(
                                "grpc-message",
                                http::HeaderValue::from_static("unknown service"),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc),
                );
            }
        });
        let t = Duration::from_secs(2);
        assert_eq!(grpc_probe("127.0.0.1", port, "", t).await, Outcome::Success);
        assert_eq!(
            grpc_probe("127.0.0.1", port, "down", t).await,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        assert_eq!(
            grpc_probe("127.0.0.1", port, "nohealth", t).await,
            Outcome::Failure(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service".into()
            )
        );
    }

    #[test]
    fn health_check_response_decoding() {
        assert_eq!(health_status(&[8, 1]), Some(1));
        assert_eq!(health_status(&[]), Some(0));
        assert_eq!(health_status(&[0x12, 1, b'x', 8, 2]), Some(2));
        assert_eq!(health_status(&[8]), None);
    }

    impl Url {
        fn clone_with_port(&self, port: u16) -> Url {
            Url {
                port,
                ..self.clone()
            }
        }
    }
}
