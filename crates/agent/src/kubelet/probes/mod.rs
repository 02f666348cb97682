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

//!
//! Modules: this one is the scheduler (workers, thresholds, results, kills, events); one module
//! per handler (`exec`, `http`, `tcp`, `grpc`) turns a probe into an `Outcome`.

pub mod exec;
pub mod grpc;
pub mod http;
pub mod tcp;

use super::{events, hooks};
use exec::exec_probe;
use grpc::grpc_probe;
use http::{http_probe, Url};
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, LifecycleHandler, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rktup_runtime::pod::ContainerStatus;
use rktup_runtime::runtime::{PodEntry, Runtime};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tcp::tcp_probe;
use tokio::sync::watch;
use tracing::warn;

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
    /// The postStart hook per container: the run it was started for, and whether it ended.
    post_start: HashMap<String, (Run, bool)>,
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
        // A run whose postStart hook has not ended is not started yet (kubelet's sync that
        // started it is still running the hook).
        let hooked =
            post_start_of(spec).is_none() || self.post_start.get(&spec.name) == Some(&(run, true));
        let started = hooked
            && (spec.startup_probe.is_none()
                || self.result(&spec.name, Kind::Startup, run) == Some(true));
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

/// A container the prober follows: it has probes or a postStart hook.
fn has_probes(c: &Container) -> bool {
    c.liveness_probe.is_some()
        || c.readiness_probe.is_some()
        || c.startup_probe.is_some()
        || post_start_of(c).is_some()
}

fn post_start_of(c: &Container) -> Option<&LifecycleHandler> {
    c.lifecycle.as_ref()?.post_start.as_ref()
}

/// postStart hooks have no timeout of their own in kubelet; this bounds a stuck one.
const POST_START_TIMEOUT: Duration = Duration::from_secs(3600);

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
                post_start: HashMap::new(),
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
        for c in &containers {
            let Some(st) = e.status.containers.iter().find(|s| s.name == c.name) else {
                continue;
            };
            if let (Some(h), Some(run)) = (post_start_of(c), run_of(st)) {
                if t.post_start.get(&c.name).map(|(r, _)| *r) != Some(run) {
                    t.post_start.insert(c.name.clone(), (run, false));
                    t.tasks.retain(|task| !task.is_finished());
                    let hook = self.post_start(uuid.clone(), (*c).clone(), h.clone(), run, t);
                    t.tasks.push(tokio::spawn(hook).abort_handle());
                }
            }
            out.insert(c.name.clone(), t.health(c, st));
        }
        out
    }

    /// Container `c`'s postStart hook `h` for run `run`: a failure is kubelet's
    /// `FailedPostStartHook` event and kills the run; the end makes the run started.
    fn post_start(
        &self,
        uuid: String,
        c: Container,
        h: LifecycleHandler,
        run: Run,
        t: &Tracked,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (prober, pod, entry) = (self.clone(), t.pod.clone(), t.entry.clone());
        async move {
            let r = hooks::run(&prober.rt, &entry, &pod, &c, &h, POST_START_TIMEOUT).await;
            if let Err(msg) = r {
                events::record_container(
                    &prober.client,
                    &prober.node,
                    &pod,
                    &c.name,
                    "Warning",
                    "FailedPostStartHook",
                    &msg,
                )
                .await;
                let grace = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30)
                    .max(MIN_GRACE_SECONDS) as u64;
                let (rt, name) = (prober.rt.clone(), c.name.clone());
                let killed = tokio::task::spawn_blocking(move || {
                    rt.kill_container(&entry, &name, Duration::from_secs(grace))
                })
                .await;
                if let Ok(Err(e)) = killed {
                    warn!(
                        "kubelet: failed to kill container {} of pod k8s_{uuid}: {e}",
                        c.name
                    );
                }
            }
            if let Ok(mut s) = prober.shared.lock() {
                if let Some(t) = s.pods.get_mut(&uuid) {
                    if let Some(done) = t.post_start.get_mut(&c.name).filter(|(r, _)| *r == run) {
                        done.1 = true;
                    }
                    t.version.send_modify(|v| *v += 1);
                }
            }
            prober.wake.notify_one();
        }
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
        self.event(snap, "Warning", reason, &message).await;
        matches!(o, Outcome::Warning(_))
    }

    /// An event about this worker's container.
    async fn event(&self, snap: &Snapshot, type_: &str, reason: &str, message: &str) {
        events::record_container(
            &self.prober.client,
            &self.prober.node,
            &snap.pod,
            &self.container.name,
            type_,
            reason,
            message,
        )
        .await;
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
        self.event(snap, "Normal", "Killing", &message).await;
        let grace = self
            .probe
            .termination_grace_period_seconds
            .or_else(|| spec.and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(0) as u64;
        let mut grace = Duration::from_secs(grace);
        // The preStop hook first, within the grace period; SIGTERM gets what is left.
        let pre_stop = self
            .container
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref());
        if let Some(h) = pre_stop.filter(|_| !grace.is_zero()) {
            let began = Instant::now();
            let r = hooks::run(
                &self.prober.rt,
                &snap.entry,
                &snap.pod,
                &self.container,
                h,
                grace,
            );
            if let Err(msg) = r.await {
                self.event(snap, "Warning", "FailedPreStopHook", &msg).await;
            }
            grace = grace.saturating_sub(began.elapsed());
        }
        let grace = grace.max(Duration::from_secs(MIN_GRACE_SECONDS as u64));
        let (rt, entry, name) = (
            self.prober.rt.clone(),
            snap.entry.clone(),
            self.container.name.clone(),
        );
        let r = tokio::task::spawn_blocking(move || rt.kill_container(&entry, &name, grace)).await;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(
                "kubelet: failed to kill container {} of pod k8s_{}: {e}",
                self.container.name, self.uuid
            ),
            Err(e) => warn!("kubelet: kill task failed: {e}"),
        }
    }

    async fn probe_once(&self, snap: &Snapshot) -> Outcome {
        let p = &self.probe;
        let timeout = self.timing.timeout;
        // httpGet's and tcpSocket's host (given, else the pod IP) and port (number or name).
        let target = |explicit: Option<&String>, port: &IntOrString| {
            let host = match explicit.filter(|h| !h.is_empty()) {
                Some(h) => h.clone(),
                None => pod_ip(snap).ok_or_else(|| "the pod has no IP address yet".to_string())?,
            };
            Ok::<_, String>((host, resolve_port(port, &self.container)?))
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
            let (url, headers) = match http_request(h, &self.container, pod_ip(snap)) {
                Ok(r) => r,
                Err(e) => return Outcome::Error(e),
            };
            return http_probe(url, &headers, timeout).await;
        }
        if let Some(t) = &p.tcp_socket {
            let (host, port) = match target(t.host.as_ref(), &t.port) {
                Ok(t) => t,
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
    address_of(&snap.entry, &snap.pod)
}

/// The address probes and hooks reach runtime pod `entry` of `pod` at (see `pod_ip`).
pub(crate) fn address_of(entry: &PodEntry, pod: &Pod) -> Option<String> {
    entry
        .status
        .pod_ip
        .clone()
        .or_else(|| {
            pod.status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty())
        })
        .or_else(|| {
            entry
                .plan
                .network
                .is_none()
                .then(|| "127.0.0.1".to_string())
        })
}

/// An httpGet action's request, for probes and hooks alike: to `host`, else `address` (the
/// pod's), at the port by number or name, HTTP or HTTPS, with its path and headers.
pub(crate) fn http_request(
    g: &HTTPGetAction,
    c: &Container,
    address: Option<String>,
) -> Result<(Url, Vec<(String, String)>), String> {
    let host = match g.host.as_ref().filter(|h| !h.is_empty()) {
        Some(h) => h.clone(),
        None => address.ok_or_else(|| "the pod has no IP address yet".to_string())?,
    };
    let port = resolve_port(&g.port, c)?;
    let scheme = g.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!("unsupported scheme {scheme:?}"));
    }
    let headers = g
        .http_headers
        .iter()
        .flatten()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    let url = Url {
        scheme,
        host,
        port,
        path: g.path.clone().unwrap_or_default(),
    };
    Ok((url, headers))
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

/// A listener on a free local port, for the handlers' tests.
#[cfg(test)]
pub(crate) async fn local_listener() -> (tokio::net::TcpListener, u16) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    (l, port)
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
}
