//! Pod workers: the one driver that moves every pod through the lifecycle, whatever its source
//! (kubelet's `pod_workers.go`). Sources only say which pods they want: the static source
//! (`sync`, `--pod-manifest-path`) and the API source (`kubelet::pods`, the pod watch) hand a
//! [`Desired`] pod and its old runtime pods to [`Workers::start`], and ask
//! [`Workers::replace_due`] whether a runtime pod has to be replaced; mirror pods stay with the
//! API source. Per pod, one worker at a time (`claim`): it goes Preparing → Pulling → Starting
//! → Running with the one back-off policy (`lifecycle::BackoffPolicy`), kept per pod in a
//! [`PodRecord`]:
//!
//! - `Preparing`: an API pod's volumes, env and downward API (`kubelet::prepare`); a static pod
//!   gets the Service variables when the agent has an API server (kubelet gives them to static
//!   pods when it has an API client; it does not hold a static pod back until the Services were
//!   listed, so neither do we), nothing without one.
//! - `Pulling`: each image per its pull policy, for every source; a failed pull keeps the pod
//!   waiting (`ErrImagePull`, then `ImagePullBackOff` under `BackoffPolicy::IMAGE_PULL`) and
//!   nothing goes to the runtime.
//! - `Starting` → `Running`: the runtime runs it; a refusal is retried under
//!   `BackoffPolicy::REFUSED`, a lost supervisor or failed restartPolicy-Always pod after
//!   `BackoffPolicy::RESTART` (from the runtime's timestamps, so it survives an agent restart).
//!
//! Where a pod's events and waiting state go is its [`Report`]: with an API server, kubelet's
//! Events (about the API pod, or about a static pod's mirror pod) and the pod's status (a
//! mirror pod's is written by the mirror sync from the record's `waiting`); without one, log
//! lines.
//!
//! The workers are shared: the static source drives them from the agent's own tokio runtime,
//! the API source from the kubelet half's; their state is behind `Arc<Mutex<_>>`.
//!
//! May import: `lifecycle`, `kubelet::{prepare, events, status, env, mirror}`.

use crate::kubelet::prepare::{Blocked, Preparer};
use crate::kubelet::{env, events, mirror, status};
use crate::lifecycle::{
    Backoff, BackoffPolicy, Gone, Preparing, PullFailure, Pulled, Pulling, Running, Source,
    Terminating,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector;
use rktup_runtime::image::PullPolicy;
use rktup_runtime::manifest::PlanError;
use rktup_runtime::pod::PodState;
use rktup_runtime::runtime::{PodEntry, Runtime, RuntimeError};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The key of a static pod's worker and record: its manifest's path.
pub fn static_key(path: &std::path::Path) -> String {
    format!("file:{}", path.display())
}

fn is_static_key(k: &str) -> bool {
    k.starts_with("file:")
}

/// A pod a source wants running.
#[derive(Clone)]
pub struct Desired {
    /// Its worker's key: the API pod's uid, or `static_key` of its manifest.
    pub key: String,
    pub pod: Pod,
    pub source: Source,
}

/// A static pod as the static source last read it (for its mirror pod).
#[derive(Debug, Clone)]
pub struct StaticPod {
    pub path: PathBuf,
    pub hash: String,
    pub pod: Pod,
}

/// Why a pod's container waits before the runtime has it (kubelet's waiting reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub container: String,
    pub reason: String,
    pub message: String,
}

/// What the workers remember about a pod between rounds.
#[derive(Default)]
pub struct PodRecord {
    /// A static pod's manifest hash: a changed manifest starts its record over (kubelet gives
    /// it a new uid).
    generation: String,
    /// Preparing it again waits for this (`BackoffPolicy::PREPARE`).
    pub backoff: Backoff,
    /// When its volumes were last brought up to date (running pods, every `--sync-frequency`).
    pub refreshed: Option<Instant>,
    /// Events already recorded, (reason, message) → (Event name, count), so a repeat bumps the
    /// count (kubelet's event aggregation) instead of piling up Events (or log lines).
    events: HashMap<(String, String), (Option<String>, i32)>,
    /// The blocked status last written.
    status: Option<String>,
    /// Per image, pulling it again for this pod waits for this (`BackoffPolicy::IMAGE_PULL`;
    /// kubelet keys its image back-off by pod and image too).
    pulls: HashMap<String, Backoff>,
    /// Running it again after the runtime refused it, or its sandbox failed before a container
    /// ran (`BackoffPolicy::REFUSED`).
    refused: Backoff,
    /// Not tried before this (the pod waits for an image's back-off, or a pull that cannot
    /// succeed before something changes).
    not_before: Option<Instant>,
    /// Why it waits before the runtime has it (a mirror pod's status says so).
    pub waiting: Option<Waiting>,
}

impl PodRecord {
    fn ready(&self) -> bool {
        self.backoff.ready()
            && self.refused.ready()
            && self.not_before.is_none_or(|t| Instant::now() >= t)
    }
}

/// What the workers use of the API server, once the kubelet half has one.
#[derive(Clone)]
pub struct ApiLink {
    pub client: kube::Client,
    pub node: String,
    pub host_ip: Option<String>,
    pub prep: Arc<Preparer>,
    /// The pods bound to this node (mirror pods among them).
    pub pods: reflector::Store<Pod>,
}

/// Where a worker's events and waiting state go.
#[derive(Clone)]
enum Report {
    /// Events about `subject` (the API pod, or the static pod's mirror pod); the waiting status
    /// written to it when `write_status` (API pods; the mirror sync writes mirror pods').
    Api {
        link: ApiLink,
        subject: Box<Pod>,
        write_status: bool,
    },
    /// No API server: log lines, prefixed `who`.
    Log,
}

/// The pod workers (cheap to clone: shared state).
#[derive(Clone)]
pub struct Workers {
    rt: Arc<Runtime>,
    records: Arc<Mutex<HashMap<String, PodRecord>>>,
    /// Pods with a worker (a start or stop) in flight.
    busy: Arc<Mutex<BTreeSet<String>>>,
    /// Wakes the API source's loop when a worker's outcome is worth syncing now.
    wake: Arc<tokio::sync::Notify>,
    api: Arc<RwLock<Option<ApiLink>>>,
    statics: Arc<Mutex<Vec<StaticPod>>>,
}

impl Workers {
    pub fn new(rt: Arc<Runtime>) -> Workers {
        Workers {
            rt,
            records: Arc::default(),
            busy: Arc::default(),
            wake: Arc::default(),
            api: Arc::default(),
            statics: Arc::default(),
        }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    /// The API server is there: from now on pods report to it.
    pub fn connect(&self, link: ApiLink) {
        if let Ok(mut a) = self.api.write() {
            *a = Some(link);
        }
    }

    fn link(&self) -> Option<ApiLink> {
        self.api.read().ok().and_then(|a| a.clone())
    }

    pub fn wake(&self) -> Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    /// The static pods the static source last read.
    pub fn set_statics(&self, s: Vec<StaticPod>) {
        if let Ok(mut m) = self.statics.lock() {
            *m = s;
        }
    }

    pub fn statics(&self) -> Vec<StaticPod> {
        self.statics.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Takes pod `key` for a worker; false when one is already at it.
    pub fn claim(&self, key: &str) -> bool {
        self.busy
            .lock()
            .map(|mut b| b.insert(key.to_string()))
            .unwrap_or(false)
    }

    pub fn is_busy(&self, key: &str) -> bool {
        self.busy.lock().map(|b| b.contains(key)).unwrap_or(true)
    }

    pub fn busy_keys(&self) -> BTreeSet<String> {
        self.busy.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// Runs `task` for the claimed pod `key` (on the current tokio runtime): `key` is free again
    /// once it ends, and the API source is woken at once when the task returns true.
    pub fn spawn_released(
        &self,
        key: String,
        task: impl std::future::Future<Output = bool> + Send + 'static,
    ) {
        let (busy, wake) = (self.busy.clone(), self.wake.clone());
        tokio::spawn(async move {
            let wake_now = task.await;
            if let Ok(mut b) = busy.lock() {
                b.remove(&key);
            }
            if wake_now {
                wake.notify_one();
            }
        });
    }

    /// `f` on pod `key`'s record (made if missing).
    pub fn with_record<R>(&self, key: &str, f: impl FnOnce(&mut PodRecord) -> R) -> Option<R> {
        let mut m = self.records.lock().ok()?;
        Some(f(m.entry(key.to_string()).or_default()))
    }

    /// `f` on pod `key`'s record, if it has one.
    fn if_record(&self, key: &str, f: impl FnOnce(&mut PodRecord)) {
        if let Ok(mut m) = self.records.lock() {
            if let Some(r) = m.get_mut(key) {
                f(r);
            }
        }
    }

    /// A static pod's record belongs to one version of its manifest.
    pub fn renew(&self, key: &str, generation: &str) {
        self.with_record(key, |r| {
            if r.generation != generation {
                *r = PodRecord {
                    generation: generation.to_string(),
                    ..Default::default()
                };
            }
        });
    }

    /// Why pod `key` waits before the runtime has it, if it does.
    pub fn waiting(&self, key: &str) -> Option<Waiting> {
        let m = self.records.lock().ok()?;
        m.get(key)?.waiting.clone()
    }

    /// Forget the records of one source's pods not in `keep`.
    pub fn retain(&self, statics: bool, keep: &BTreeSet<String>) {
        if let Ok(mut m) = self.records.lock() {
            m.retain(|k, _| is_static_key(k) != statics || keep.contains(k));
        }
    }

    /// Whether pod `key` may be tried again (its back-offs have run out).
    pub fn retry_ready(&self, key: &str) -> bool {
        self.records
            .lock()
            .map(|m| m.get(key).is_none_or(PodRecord::ready))
            .unwrap_or(true)
    }

    /// Whether `running`, pod `key`'s newest runtime pod, has to be replaced now
    /// (`Running::restart_due`, under the pod's back-off; a pod that never got a container
    /// running backs off under `BackoffPolicy::REFUSED`). Logs why, after `prefix`.
    pub fn replace_due(&self, key: &str, running: &Running, prefix: &str) -> bool {
        let refused = running.needs_backoff();
        if !refused {
            // It got a container running: a later refusal starts its back-off over.
            self.if_record(key, |r| r.refused.reset());
        }
        let Some(why) = running.restart_due().filter(|_| self.retry_ready(key)) else {
            return false;
        };
        info!("{prefix}{why}");
        if refused {
            self.with_record(key, |r| r.refused.failed(BackoffPolicy::REFUSED));
        }
        true
    }

    /// Stop `old` runtime pods of pod `key` in the background (a replaced manifest's, or
    /// duplicates); `replacing` logs each as replaced.
    pub fn stop_old(&self, key: &str, old: Vec<PodEntry>, replacing: bool) {
        if !self.claim(key) {
            return;
        }
        let rt = self.rt.clone();
        self.spawn_released(key.to_string(), async move {
            let _ = tokio::task::spawn_blocking(move || {
                let Gone = Terminating { entries: old }.stop(&rt, |e| {
                    if replacing {
                        crate::lifecycle::replacing(e)
                    }
                });
            })
            .await;
            false
        });
    }

    /// Start a worker for `d` (unless one is at it): Preparing → Pulling → Starting → Running,
    /// its `old` runtime pods stopped once it can start (or once it waits for an image).
    pub fn start(&self, d: Desired, old: Vec<PodEntry>) {
        if !self.claim(&d.key) {
            return;
        }
        let w = self.clone();
        let key = d.key.clone();
        self.spawn_released(key, async move { w.drive(d, old).await });
    }

    async fn drive(self, d: Desired, old: Vec<PodEntry>) -> bool {
        let link = self.link();
        let who = match &d.source {
            Source::Api { namespace, name } => format!("kubelet: pod {namespace}/{name}"),
            Source::File { path, .. } => format!("pod from {}", path.display()),
        };
        let report = match (&link, &d.source) {
            (Some(l), Source::Api { .. }) => Report::Api {
                link: l.clone(),
                subject: Box::new(d.pod.clone()),
                write_status: true,
            },
            (Some(l), Source::File { .. }) => Report::Api {
                link: l.clone(),
                subject: Box::new(mirror_subject(l, &d.pod)),
                write_status: false,
            },
            (None, _) => Report::Log,
        };
        // Preparing → Pulling.
        let preparing = Preparing::new(d.pod.clone());
        let ready = match (&link, &d.source) {
            (Some(l), Source::Api { .. }) => match l.prep.prepare(&preparing.pod).await {
                Ok(ready) => ready,
                Err(b) => {
                    report_blocked(l, &self, &d.key, &d.pod, &b, old.is_empty()).await;
                    return false;
                }
            },
            (Some(l), Source::File { .. }) => {
                let vars = l.prep.static_service_env(&preparing.pod).await;
                env::with_service_env(&preparing.pod, &vars)
            }
            (None, _) => preparing.pod.clone(),
        };
        let pulling = preparing.prepared(ready);
        self.if_record(&d.key, |r| {
            r.backoff.reset();
            r.status = None;
        });
        // Pulling → Starting: every image present, or the pod waits for one.
        let pulling = Arc::new(pulling);
        let pulled = self.pull_images(&report, &d.key, &who, &pulling).await;
        let pulling = Arc::try_unwrap(pulling).ok();
        let (Ok(()), Some(pulling)) = (pulled, pulling) else {
            // The runtime pods it had (dead: only those are replaced) go, so the waiting
            // status written is the one that holds.
            let rt = self.rt.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let Gone = Terminating { entries: old }.stop(&rt, |_| {});
            })
            .await;
            return false;
        };
        self.if_record(&d.key, |r| r.waiting = None);
        let starting = pulling.pulled(d.source.clone(), old);
        // Starting → Running, or refused (replaced after `BackoffPolicy::REFUSED`).
        let rt = self.rt.clone();
        let r = tokio::task::spawn_blocking(move || starting.start(&rt)).await;
        match r {
            Ok(Ok(Running { entry: e })) => {
                if matches!(d.source, Source::Api { .. }) {
                    // The supervisor brings the containers up after run_pod returns: sync
                    // again as soon as they run, so Running/Ready reach the API without waiting
                    // for the next periodic sync.
                    wait_until_started(&self.rt, &e.plan.uuid).await;
                }
            }
            Ok(Err(e)) => {
                // Logged by `Starting::start`; with an API server, an Event too.
                if matches!(report, Report::Api { .. }) {
                    let (reason, msg) = refusal_event(&d.pod, &e);
                    self.event(&report, &d.key, &who, None, "Warning", reason, &msg)
                        .await;
                }
            }
            Err(e) => warn!("{who}: start task failed: {e}"),
        }
        true
    }

    /// Record an Event once per (reason, message) and pod, bumping its count on repeats; with
    /// no API server, a log line the first time.
    #[allow(clippy::too_many_arguments)]
    async fn event(
        &self,
        report: &Report,
        key: &str,
        who: &str,
        field_path: Option<&str>,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        let k = (reason.to_string(), message.to_string());
        let seen = self
            .records
            .lock()
            .ok()
            .and_then(|m| m.get(key).and_then(|r| r.events.get(&k).cloned()));
        match (report, seen) {
            (Report::Api { link, subject, .. }, Some((Some(name), count))) => {
                let ns = subject.metadata.namespace.as_deref().unwrap_or("default");
                events::bump(&link.client, ns, &name, count + 1).await;
                self.with_record(key, |r| r.events.insert(k, (Some(name), count + 1)));
            }
            (Report::Api { link, subject, .. }, _) => {
                let name = events::record_at(
                    &link.client,
                    &link.node,
                    subject,
                    field_path,
                    type_,
                    reason,
                    message,
                )
                .await;
                self.with_record(key, |r| r.events.insert(k, (name, 1)));
            }
            (Report::Log, Some((name, count))) => {
                self.with_record(key, |r| r.events.insert(k, (name, count + 1)));
            }
            (Report::Log, None) => {
                let c = field_path.map(|f| format!(" {f}")).unwrap_or_default();
                if type_ == "Warning" {
                    warn!("{who}{c}: {reason}: {message}");
                } else {
                    info!("{who}{c}: {reason}: {message}");
                }
                self.with_record(key, |r| r.events.insert(k, (None, 1)));
            }
        }
    }

    /// Pod `key` waits (`container`, kubelet's `reason`, `message`): remembered for the mirror
    /// sync, and written as the API pod's Pending status.
    async fn wait(&self, report: &Report, key: &str, container: &str, reason: &str, msg: &str) {
        let w = Waiting {
            container: container.to_string(),
            reason: reason.to_string(),
            message: msg.to_string(),
        };
        let changed = self
            .with_record(key, |r| {
                let changed = r.waiting.as_ref() != Some(&w);
                r.waiting = Some(w);
                changed
            })
            .unwrap_or(false);
        if let Report::Api {
            link,
            subject,
            write_status: true,
        } = report
        {
            write_blocked(link, self, key, subject, Some((container, reason, msg))).await;
        } else if changed {
            // A mirror pod's status follows from the record at the next mirror sync.
            self.wake.notify_one();
        }
    }

    /// Pull a prepared pod's images, one container at a time, with kubelet's events. `Err` when
    /// a container's image is not there (the pod waits): the record says when to try again.
    async fn pull_images(
        &self,
        report: &Report,
        key: &str,
        who: &str,
        pulling: &Arc<Pulling>,
    ) -> Result<(), ()> {
        for p in pulling.images() {
            let fp = Some(p.field_path.as_str());
            // Within the back-off after a failed pull of this image for this pod.
            let backing_off = self
                .records
                .lock()
                .ok()
                .and_then(|m| m.get(key).and_then(|r| r.pulls.get(&p.image)?.retry_at()));
            if let Some(at) = backing_off {
                let msg = format!("Back-off pulling image \"{}\"", p.image);
                self.event(report, key, who, fp, "Normal", "BackOff", &msg)
                    .await;
                let err = "Error: ImagePullBackOff";
                self.event(report, key, who, fp, "Warning", "Failed", err)
                    .await;
                self.wait(report, key, &p.container, "ImagePullBackOff", &msg)
                    .await;
                self.with_record(key, |r| r.not_before = Some(at));
                return Err(());
            }
            let fetch = match p.policy {
                PullPolicy::Always => true,
                PullPolicy::IfNotPresent => {
                    let (rt, image) = (self.rt.clone(), p.image.clone());
                    !tokio::task::spawn_blocking(move || crate::lifecycle::has_image(&rt, &image))
                        .await
                        .unwrap_or(false)
                }
                PullPolicy::Never => false,
            };
            if fetch {
                let msg = format!("Pulling image \"{}\"", p.image);
                self.event(report, key, who, fp, "Normal", "Pulling", &msg)
                    .await;
            }
            let (rt, pl, p2) = (self.rt.clone(), pulling.clone(), p.clone());
            let r = tokio::task::spawn_blocking(move || pl.pull(&rt, &p2))
                .await
                .unwrap_or_else(|e| Err(PullFailure::ErrImagePull(e.to_string())));
            match r {
                Ok(Pulled::Fetched { size, took }) => {
                    let msg = format!(
                        "Successfully pulled image \"{}\" in {took:.3?} ({took:.3?} including waiting). Image size: {size} bytes.",
                        p.image
                    );
                    match report {
                        Report::Api { link, subject, .. } => {
                            events::record_at(
                                &link.client,
                                &link.node,
                                subject,
                                fp,
                                "Normal",
                                "Pulled",
                                &msg,
                            )
                            .await;
                        }
                        Report::Log => info!("{who} {}: Pulled: {msg}", p.field_path),
                    }
                    self.with_record(key, |r| r.pulls.remove(&p.image));
                }
                Ok(Pulled::Present) => {
                    let msg = format!("Container image \"{}\" already present on machine", p.image);
                    self.event(report, key, who, fp, "Normal", "Pulled", &msg)
                        .await;
                    self.with_record(key, |r| r.pulls.remove(&p.image));
                }
                Err(f) => {
                    warn!("{who} container {}: {} ({})", p.container, f.reason(), f);
                    let (ev_reason, ev_msg) = match &f {
                        PullFailure::ErrImagePull(e) => (
                            "Failed",
                            format!("Failed to pull image \"{}\": {e}", p.image),
                        ),
                        PullFailure::NeverPull(_) => ("ErrImageNeverPull", f.to_string()),
                        PullFailure::InvalidImageName { .. } => ("InspectFailed", f.to_string()),
                    };
                    self.event(report, key, who, fp, "Warning", ev_reason, &ev_msg)
                        .await;
                    let err = format!("Error: {}", f.reason());
                    self.event(report, key, who, fp, "Warning", "Failed", &err)
                        .await;
                    let msg = f.to_string();
                    self.wait(report, key, &p.container, f.reason(), &msg).await;
                    self.with_record(key, |r| match &f {
                        // The next round shows ImagePullBackOff; the pull waits for the back-off.
                        PullFailure::ErrImagePull(_) => {
                            r.pulls
                                .entry(p.image.clone())
                                .or_default()
                                .failed(BackoffPolicy::IMAGE_PULL);
                            r.not_before = Some(Instant::now() + Duration::from_secs(1));
                        }
                        // Nothing changes until the image is imported or the pod is replaced:
                        // look again at kubelet's resync pace.
                        _ => {
                            r.not_before = Some(Instant::now() + BackoffPolicy::IMAGE_PULL.initial)
                        }
                    });
                    return Err(());
                }
            }
        }
        Ok(())
    }

    /// Record an Event about pod `key` once per (reason, message), bumping its count on
    /// repeats (for the API source's own events: volume refreshes).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_once(
        &self,
        link: &ApiLink,
        key: &str,
        pod: &Pod,
        field_path: Option<&str>,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        let report = Report::Api {
            link: link.clone(),
            subject: Box::new(pod.clone()),
            write_status: false,
        };
        self.event(&report, key, "", field_path, type_, reason, message)
            .await;
    }
}

/// What a static pod's events are about: its mirror pod (by name; with its uid once the API
/// has it).
fn mirror_subject(link: &ApiLink, pod: &Pod) -> Pod {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = mirror::name_of(pod.metadata.name.as_deref().unwrap_or_default(), &link.node);
    let known = link
        .pods
        .state()
        .into_iter()
        .find(|p| {
            p.metadata.namespace.as_deref() == Some(ns.as_str())
                && p.metadata.name.as_deref() == Some(name.as_str())
        })
        .map(|p| (*p).clone());
    known.unwrap_or_else(|| {
        let mut m = pod.clone();
        m.metadata.name = Some(name);
        m.metadata.namespace = Some(ns);
        m.metadata.uid = None;
        m.metadata.resource_version = None;
        m
    })
}

/// Report a pod that could not be prepared: events, and (when `write_status`, i.e. it has no
/// runtime pod whose status is written instead) a Pending status; then back off.
async fn report_blocked(
    link: &ApiLink,
    w: &Workers,
    key: &str,
    pod: &Pod,
    b: &Blocked,
    write_status: bool,
) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let waiting = match b {
        Blocked::Mount(failed) => {
            for (_, msg) in failed {
                warn!("kubelet: pod {ns}/{name}: {msg}");
                w.record_once(link, key, pod, None, "Warning", "FailedMount", msg)
                    .await;
            }
            None
        }
        Blocked::Config(e) => {
            warn!(
                "kubelet: pod {ns}/{name} container {}: {}",
                e.container, e.message
            );
            let fp = if e.init {
                format!("spec.initContainers{{{}}}", e.container)
            } else {
                format!("spec.containers{{{}}}", e.container)
            };
            let msg = format!("Error: {}", e.message);
            w.record_once(link, key, pod, Some(&fp), "Warning", "Failed", &msg)
                .await;
            Some((
                e.container.as_str(),
                "CreateContainerConfigError",
                e.message.as_str(),
            ))
        }
    };
    if write_status {
        write_blocked(link, w, key, pod, waiting).await;
    }
    w.with_record(key, |r| r.backoff.failed(BackoffPolicy::PREPARE));
}

/// Write the Pending status of a pod not handed to the runtime (every container waiting;
/// `waiting` names the one held back and why), unless it is what was last written.
async fn write_blocked(
    link: &ApiLink,
    w: &Workers,
    key: &str,
    pod: &Pod,
    waiting: Option<(&str, &str, &str)>,
) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let st = status::blocked(pod, link.host_ip.as_deref(), waiting);
    let fp = status::fingerprint(&st);
    let last = w
        .records
        .lock()
        .ok()
        .and_then(|m| m.get(key).and_then(|r| r.status.clone()));
    if last.as_ref() == Some(&fp) {
        return;
    }
    let api: Api<Pod> = Api::namespaced(link.client.clone(), &ns);
    let patch = serde_json::json!({ "status": st });
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            w.with_record(key, |r| r.status = Some(fp));
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => warn!("kubelet: failed to update status of {ns}/{name}: {e}"),
    }
}

/// The type of volume `name` of `pod` (its source's field name: `nfs`, `iscsi`, ...), for
/// FailedMount messages that say what could not be mounted.
fn volume_type(pod: &Pod, name: &str) -> String {
    let v = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .find(|v| v.name == name);
    let json = v.and_then(|v| serde_json::to_value(v).ok());
    json.as_ref()
        .and_then(|j| j.as_object())
        .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        .unwrap_or_else(|| "unknown".into())
}

/// The Event for a pod the runtime refused: FailedMount for a volume it cannot mount (naming
/// the volume and its type), Failed with the runtime's words otherwise.
fn refusal_event(pod: &Pod, e: &RuntimeError) -> (&'static str, String) {
    match e {
        RuntimeError::Plan(PlanError::Volume { name, why }) => (
            "FailedMount",
            format!(
                "MountVolume.SetUp failed for volume \"{name}\" : {} volume: {why}",
                volume_type(pod, name)
            ),
        ),
        RuntimeError::Plan(PlanError::Network(why)) => (
            "FailedCreatePodSandBox",
            format!("Failed to create pod sandbox: network: {why}"),
        ),
        // Its hostname or DNS (manifest::dns): the message is kubelet's already.
        RuntimeError::Plan(e @ PlanError::Sandbox(_)) => ("FailedCreatePodSandBox", e.to_string()),
        e => ("Failed", format!("Error: {e}")),
    }
}

/// Polls the runtime pod until its containers have left `waiting` (or it is gone or ended),
/// for at most 10 s.
async fn wait_until_started(rt: &Arc<Runtime>, uuid: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (rt, u) = (rt.clone(), uuid.to_string());
        let starting = tokio::task::spawn_blocking(move || {
            rt.find(&u).is_ok_and(|p| {
                p.status.state == PodState::Preparing
                    || (p.status.state == PodState::Running
                        && (p.status.containers.is_empty()
                            || p.status.containers.iter().any(|c| c.state == "waiting")))
            })
        })
        .await
        .unwrap_or(false);
        if !starting {
            return;
        }
    }
}
