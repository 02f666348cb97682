//! The pods bound to this node: a watcher (fieldSelector spec.nodeName) feeds a reflector store;
//! a sync loop, woken by watch events and every second, compares the store with the runtime's
//! pods (matched by pod uid) and
//! - runs pods that have no runtime pod yet (and re-runs ones refused for a passing reason, or
//!   whose supervisor died, after a 10 s back-off),
//! - stops pods marked for deletion within their grace period, then deletes the object with
//!   grace 0 (kubelet's final delete),
//! - removes runtime pods whose API object is gone,
//! - writes status back when it changed,
//! - keeps a mirror pod for every static pod (`--pod-manifest-path`).
//!
//! Before a pod is handed to the runtime its API-backed volumes and env are prepared
//! (`prepare`); a pod that cannot be (a missing ConfigMap or Secret, a missing key) gets a
//! FailedMount or Failed event and a Pending status, and is retried with a back-off (1 s doubling
//! to 10 s). Its images are then pulled one container at a time (kubelet's Pulling/Pulled/
//! Failed/BackOff events); a failed pull leaves the container waiting `ErrImagePull`, then
//! `ImagePullBackOff` while that image's back-off for the pod runs (10 s doubling to 5 min), and
//! the pod Pending. A pod the runtime refuses (an unsupported volume type: FailedMount naming
//! the volume and its type) is Pending too and retried (10 s doubling to 5 min). None of these
//! makes a pod Failed, so no controller replaces it. Running pods' volumes are brought up to date every `--sync-frequency`, and the volume
//! directories of pods that are gone are removed.

use super::prepare::{Blocked, Preparer};
use super::{events, mirror, probes, status, KubeletConfig, KubeletError};
use crate::lifecycle::{
    Backoff, BackoffPolicy, Gone, Preparing, PullFailure, Pulled, Running, Source, Terminating,
};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use rktup_runtime::manifest::PlanError;
use rktup_runtime::pod::PodState;
use rktup_runtime::runtime::{PodEntry, Runtime, RuntimeError};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn key(p: &Pod) -> (String, String) {
    (
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
    )
}

/// What the agent remembers about a pod it could not prepare, or whose volumes failed to update.
#[derive(Default)]
struct PodRecord {
    /// Preparing it again waits for this (`BackoffPolicy::PREPARE`).
    backoff: Backoff,
    /// When its volumes were last brought up to date (running pods, every `--sync-frequency`).
    refreshed: Option<Instant>,
    /// Events already recorded, (reason, message) → (Event name, count), so a repeat bumps the
    /// count (kubelet's event aggregation) instead of piling up Events.
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
}

impl PodRecord {
    fn ready(&self) -> bool {
        self.backoff.ready()
            && self.refused.ready()
            && self.not_before.is_none_or(|t| Instant::now() >= t)
    }
}

type Records = Arc<Mutex<HashMap<String, PodRecord>>>;

/// Record an Event once per (reason, message) and pod, bumping its count on repeats.
#[allow(clippy::too_many_arguments)]
async fn record_once(
    client: &kube::Client,
    node: &str,
    records: &Records,
    pod: &Pod,
    field_path: Option<&str>,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let u = uid(pod);
    let k = (reason.to_string(), message.to_string());
    let seen = records
        .lock()
        .ok()
        .and_then(|m| m.get(&u).and_then(|r| r.events.get(&k).cloned()));
    match seen {
        Some((Some(name), count)) => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            events::bump(client, ns, &name, count + 1).await;
            if let Ok(mut m) = records.lock() {
                m.entry(u)
                    .or_default()
                    .events
                    .insert(k, (Some(name), count + 1));
            }
        }
        _ => {
            let name =
                events::record_at(client, node, pod, field_path, type_, reason, message).await;
            if let Ok(mut m) = records.lock() {
                m.entry(u).or_default().events.insert(k, (name, 1));
            }
        }
    }
}

/// Report a pod that could not be prepared: events, and (when `write_status`, i.e. it has no
/// runtime pod whose status is written instead) a Pending status; then back off.
async fn report_blocked(
    client: &kube::Client,
    node: &str,
    host_ip: Option<&str>,
    records: &Records,
    pod: &Pod,
    b: &Blocked,
    write_status: bool,
) {
    let (ns, name) = key(pod);
    let waiting = match b {
        Blocked::Mount(failed) => {
            for (_, msg) in failed {
                warn!("kubelet: pod {ns}/{name}: {msg}");
                record_once(
                    client,
                    node,
                    records,
                    pod,
                    None,
                    "Warning",
                    "FailedMount",
                    msg,
                )
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
            record_once(
                client,
                node,
                records,
                pod,
                Some(&fp),
                "Warning",
                "Failed",
                &format!("Error: {}", e.message),
            )
            .await;
            Some((
                e.container.as_str(),
                "CreateContainerConfigError",
                e.message.as_str(),
            ))
        }
    };
    if write_status {
        write_blocked(client, host_ip, records, pod, waiting).await;
    }
    if let Ok(mut m) = records.lock() {
        m.entry(uid(pod))
            .or_default()
            .backoff
            .failed(BackoffPolicy::PREPARE);
    }
}

/// Write the Pending status of a pod not handed to the runtime (every container waiting;
/// `waiting` names the one held back and why), unless it is what was last written.
async fn write_blocked(
    client: &kube::Client,
    host_ip: Option<&str>,
    records: &Records,
    pod: &Pod,
    waiting: Option<(&str, &str, &str)>,
) {
    let (ns, name) = key(pod);
    let st = status::blocked(pod, host_ip, waiting);
    let fp = status::fingerprint(&st);
    let u = uid(pod);
    let last = records
        .lock()
        .ok()
        .and_then(|m| m.get(&u).and_then(|r| r.status.clone()));
    if last.as_ref() == Some(&fp) {
        return;
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({ "status": st });
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            if let Ok(mut m) = records.lock() {
                m.entry(u).or_default().status = Some(fp);
            }
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

/// Pull a prepared pod's images, one container at a time, with kubelet's events. `Err` when a
/// container's image is not there (the pod waits): its status is written and the pod's record
/// says when to try again.
#[allow(clippy::too_many_arguments)]
async fn pull_images(
    client: &kube::Client,
    node: &str,
    host_ip: Option<&str>,
    records: &Records,
    rt: &Arc<Runtime>,
    pulling: &Arc<crate::lifecycle::Pulling>,
    pod: &Pod,
) -> Result<(), ()> {
    let u = uid(pod);
    let set_record = |f: &dyn Fn(&mut PodRecord)| {
        if let Ok(mut m) = records.lock() {
            f(m.entry(u.clone()).or_default());
        }
    };
    for p in pulling.images() {
        let fp = Some(p.field_path.as_str());
        // Within the back-off after a failed pull of this image for this pod.
        let backing_off = records
            .lock()
            .ok()
            .and_then(|m| m.get(&u).and_then(|r| r.pulls.get(&p.image)?.retry_at()));
        if let Some(at) = backing_off {
            let msg = format!("Back-off pulling image \"{}\"", p.image);
            record_once(client, node, records, pod, fp, "Normal", "BackOff", &msg).await;
            let err = "Error: ImagePullBackOff";
            record_once(client, node, records, pod, fp, "Warning", "Failed", err).await;
            let waiting = (p.container.as_str(), "ImagePullBackOff", msg.as_str());
            write_blocked(client, host_ip, records, pod, Some(waiting)).await;
            set_record(&|r| r.not_before = Some(at));
            return Err(());
        }
        let fetch = match p.policy {
            rktup_runtime::image::PullPolicy::Always => true,
            rktup_runtime::image::PullPolicy::IfNotPresent => {
                let (rt, image) = (rt.clone(), p.image.clone());
                !tokio::task::spawn_blocking(move || crate::lifecycle::has_image(&rt, &image))
                    .await
                    .unwrap_or(false)
            }
            rktup_runtime::image::PullPolicy::Never => false,
        };
        if fetch {
            let msg = format!("Pulling image \"{}\"", p.image);
            record_once(client, node, records, pod, fp, "Normal", "Pulling", &msg).await;
        }
        let (rt2, pl, p2) = (rt.clone(), pulling.clone(), p.clone());
        let r = tokio::task::spawn_blocking(move || pl.pull(&rt2, &p2))
            .await
            .unwrap_or_else(|e| Err(PullFailure::ErrImagePull(e.to_string())));
        match r {
            Ok(Pulled::Fetched { size, took }) => {
                let msg = format!(
                    "Successfully pulled image \"{}\" in {took:.3?} ({took:.3?} including waiting). Image size: {size} bytes.",
                    p.image
                );
                events::record_at(client, node, pod, fp, "Normal", "Pulled", &msg).await;
                set_record(&|r| {
                    r.pulls.remove(&p.image);
                });
            }
            Ok(Pulled::Present) => {
                let msg = format!("Container image \"{}\" already present on machine", p.image);
                record_once(client, node, records, pod, fp, "Normal", "Pulled", &msg).await;
                set_record(&|r| {
                    r.pulls.remove(&p.image);
                });
            }
            Err(f) => {
                let (ns, name) = key(pod);
                warn!(
                    "kubelet: pod {ns}/{name} container {}: {} ({})",
                    p.container,
                    f.reason(),
                    f
                );
                let (ev_reason, ev_msg) = match &f {
                    PullFailure::ErrImagePull(e) => (
                        "Failed",
                        format!("Failed to pull image \"{}\": {e}", p.image),
                    ),
                    PullFailure::NeverPull(_) => ("ErrImageNeverPull", f.to_string()),
                    PullFailure::InvalidImageName { .. } => ("InspectFailed", f.to_string()),
                };
                record_once(
                    client, node, records, pod, fp, "Warning", ev_reason, &ev_msg,
                )
                .await;
                let err = format!("Error: {}", f.reason());
                record_once(client, node, records, pod, fp, "Warning", "Failed", &err).await;
                let msg = f.to_string();
                let waiting = (p.container.as_str(), f.reason(), msg.as_str());
                write_blocked(client, host_ip, records, pod, Some(waiting)).await;
                set_record(&|r| match &f {
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
                    _ => r.not_before = Some(Instant::now() + BackoffPolicy::IMAGE_PULL.initial),
                });
                return Err(());
            }
        }
    }
    Ok(())
}

/// kubelet's reason and message for a pod stopped at its `activeDeadlineSeconds`.
const DEADLINE: &str = "DeadlineExceeded";
const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// Whether the pod has been active longer than its `spec.activeDeadlineSeconds`, counted from
/// its `status.startTime` as kubelet does.
fn deadline_exceeded(pod: &Pod) -> bool {
    let Some(secs) = pod.spec.as_ref().and_then(|s| s.active_deadline_seconds) else {
        return false;
    };
    let Some(start) = pod.status.as_ref().and_then(|s| s.start_time.as_ref()) else {
        return false;
    };
    jiff::Timestamp::now().as_second() - start.0.as_second() >= secs
}

/// What the sync loop wrote to the API, so it is not written again: API pods' and mirror pods'
/// statuses (by the API object's uid: a mirror pod has its own) and per-run container events.
#[derive(Default)]
struct Reported {
    /// Last status written per pod uid (fingerprint).
    status: HashMap<String, String>,
    /// (pod uid, container, restart count) already reported as Started (and `<c>/backoff` as
    /// BackOff).
    started: BTreeSet<(String, String, u32)>,
}

struct Syncer {
    client: kube::Client,
    cfg: KubeletConfig,
    rt: Arc<Runtime>,
    prep: Arc<Preparer>,
    records: Records,
    /// Pod uids with a start or stop in flight.
    busy: Arc<Mutex<BTreeSet<String>>>,
    /// What reached the API already (statuses and Started/BackOff events).
    reported: Reported,
    wake: Arc<tokio::sync::Notify>,
    probes: probes::Prober,
}

impl Syncer {
    fn claim(&self, uid: &str) -> bool {
        self.busy
            .lock()
            .map(|mut b| b.insert(uid.to_string()))
            .unwrap_or(false)
    }

    /// Runs `task` for the claimed pod `u`: `u` is free again once it ends, and the sync loop
    /// is woken at once when the task returns true (its outcome is worth syncing now).
    fn spawn_released(
        &self,
        u: String,
        task: impl std::future::Future<Output = bool> + Send + 'static,
    ) {
        let (busy, wake) = (self.busy.clone(), self.wake.clone());
        tokio::spawn(async move {
            let wake_now = task.await;
            if let Ok(mut b) = busy.lock() {
                b.remove(&u);
            }
            if wake_now {
                wake.notify_one();
            }
        });
    }

    fn is_busy(&self, uid: &str) -> bool {
        self.busy.lock().map(|b| b.contains(uid)).unwrap_or(true)
    }

    /// Whether a pod that could not be prepared may be tried again.
    fn retry_ready(&self, uid: &str) -> bool {
        self.records
            .lock()
            .map(|m| m.get(uid).is_none_or(PodRecord::ready))
            .unwrap_or(true)
    }

    /// Prepare `pod` (volumes, env) and start it in the background (the runtime pulls and
    /// plans synchronously); `old` runtime pods of it are removed once it can start.
    fn start(&self, pod: Pod, old: Vec<PodEntry>) {
        let u = uid(&pod);
        if !self.claim(&u) {
            return;
        }
        let (rt, client) = (self.rt.clone(), self.client.clone());
        let (prep, records) = (self.prep.clone(), self.records.clone());
        let node = self.cfg.node_name.clone();
        let host_ip = self.cfg.node_ip.clone();
        self.spawn_released(u.clone(), async move {
            // Preparing → Pulling: volumes and env from the API, or a back-off.
            let preparing = Preparing::new(pod.clone());
            let pulling = match prep.prepare(&preparing.pod).await {
                Ok(ready) => preparing.prepared(ready),
                Err(b) => {
                    let write = old.is_empty();
                    report_blocked(
                        &client,
                        &node,
                        host_ip.as_deref(),
                        &records,
                        &pod,
                        &b,
                        write,
                    )
                    .await;
                    return false;
                }
            };
            if let Ok(mut m) = records.lock() {
                if let Some(r) = m.get_mut(&u) {
                    r.backoff.reset();
                    r.status = None;
                }
            }
            // Pulling → Starting: every image present, or the pod waits for one.
            let pulling = Arc::new(pulling);
            let pulled = pull_images(
                &client,
                &node,
                host_ip.as_deref(),
                &records,
                &rt,
                &pulling,
                &pod,
            )
            .await;
            let pulling = Arc::try_unwrap(pulling).ok();
            let (namespace, name) = key(&pod);
            let (Ok(()), Some(pulling)) = (pulled, pulling) else {
                // The runtime pods it had (dead: only those are restarted) go, so the
                // waiting status written is the one the API keeps.
                let rt2 = rt.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let Gone = Terminating { entries: old }.stop(&rt2, |_| {});
                })
                .await;
                return false;
            };
            let rt_poll = rt.clone();
            let source = Source::Api {
                namespace: namespace.clone(),
                name: name.clone(),
            };
            let starting = pulling.pulled(source, old);
            // Starting → Running, or refused (retried after `BackoffPolicy::REFUSED`).
            let r = tokio::task::spawn_blocking(move || starting.start(&rt)).await;
            match r {
                Ok(Ok(Running { entry: e })) => {
                    // The supervisor brings the containers up after run_pod returns: sync again
                    // as soon as they run, so Running/Ready reach the API without waiting for
                    // the next periodic sync.
                    wait_until_started(&rt_poll, &e.plan.uuid).await;
                }
                Ok(Err(e)) => {
                    let (reason, msg) = refusal_event(&pod, &e);
                    record_once(
                        &client, &node, &records, &pod, None, "Warning", reason, &msg,
                    )
                    .await;
                }
                Err(e) => warn!("kubelet: pod {namespace}/{name}: start task failed: {e}"),
            }
            true
        });
    }

    /// The pod ran past `spec.activeDeadlineSeconds` (kubelet's active deadline handler): its
    /// containers are stopped and it is Failed with reason DeadlineExceeded — one of the few
    /// places upstream makes a pod Failed. Its runtime pods stay (stopped) until it is deleted.
    fn fail_deadline(&self, pod: Pod, entries: Vec<PodEntry>) {
        let u = uid(&pod);
        if !self.claim(&u) {
            return;
        }
        let (rt, client) = (self.rt.clone(), self.client.clone());
        let node = self.cfg.node_name.clone();
        let host_ip = self.cfg.node_ip.clone();
        self.spawn_released(u.clone(), async move {
            let (ns, name) = key(&pod);
            info!("kubelet: pod {ns}/{name}: {DEADLINE_MESSAGE}");
            events::record(&client, &node, &pod, "Normal", DEADLINE, DEADLINE_MESSAGE).await;
            let (rt2, u2) = (rt.clone(), u.clone());
            let last = tokio::task::spawn_blocking(move || {
                for e in &entries {
                    if let Err(err) = rt2.stop(e) {
                        warn!("failed to stop pod k8s_{}: {err}", e.plan.uuid);
                    }
                }
                rt2.list()
                    .into_iter()
                    .filter(|e| e.plan.uid == u2)
                    .max_by_key(|e| e.plan.created_at)
            })
            .await
            .ok()
            .flatten();
            let mut st = match &last {
                Some(e) if e.status.state != PodState::Refused => status::pod_status(
                    e,
                    host_ip.as_deref(),
                    &Default::default(),
                    pod.status.as_ref(),
                ),
                _ => status::blocked(&pod, host_ip.as_deref(), None),
            };
            st.phase = Some("Failed".into());
            st.reason = Some(DEADLINE.into());
            st.message = Some(DEADLINE_MESSAGE.into());
            let api: Api<Pod> = Api::namespaced(client, &ns);
            let patch = serde_json::json!({ "status": st });
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                warn!("kubelet: failed to update status of {ns}/{name}: {e}");
            }
            true
        });
    }

    /// Stop the runtime pods within the grace period, then (if `pod` is given) finally delete
    /// the API object with grace 0.
    fn stop(&self, u: String, pod: Option<Pod>, entries: Vec<PodEntry>) {
        if !self.claim(&u) {
            return;
        }
        let (rt, client) = (self.rt.clone(), self.client.clone());
        let node = self.cfg.node_name.clone();
        self.spawn_released(u.clone(), async move {
            if let Some(pod) = &pod {
                if entries.iter().any(|e| e.alive) {
                    let names: Vec<String> = pod
                        .spec
                        .iter()
                        .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
                        .collect();
                    for c in names {
                        events::record(
                            &client,
                            &node,
                            pod,
                            "Normal",
                            "Killing",
                            &format!("Stopping container {c}"),
                        )
                        .await;
                    }
                }
            }
            // Terminating → Gone.
            let _ = tokio::task::spawn_blocking(move || {
                let Gone = Terminating { entries }.stop(&rt, |_| {});
            })
            .await;
            if let Some(pod) = pod {
                let (ns, name) = key(&pod);
                let api: Api<Pod> = Api::namespaced(client, &ns);
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: pod.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(&name, &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => warn!("kubelet: failed to delete pod {ns}/{name}: {e}"),
                }
            }
            true
        });
    }

    /// Bring a running pod's API-backed volumes up to date, every `--sync-frequency`.
    fn refresh(&mut self, pod: &Pod) {
        let u = uid(pod);
        let due = self
            .records
            .lock()
            .map(|m| {
                m.get(&u)
                    .and_then(|r| r.refreshed)
                    .is_none_or(|t| t.elapsed() >= self.cfg.sync_frequency)
            })
            .unwrap_or(false);
        if !due || !self.claim(&u) {
            return;
        }
        if let Ok(mut m) = self.records.lock() {
            m.entry(u.clone()).or_default().refreshed = Some(Instant::now());
        }
        let (client, prep, records) =
            (self.client.clone(), self.prep.clone(), self.records.clone());
        let node = self.cfg.node_name.clone();
        let pod = pod.clone();
        self.spawn_released(u, async move {
            if let Err(Blocked::Mount(failed)) = prep.refresh(&pod).await {
                for (_, msg) in failed {
                    record_once(
                        &client,
                        &node,
                        &records,
                        &pod,
                        None,
                        "Warning",
                        "FailedMount",
                        &msg,
                    )
                    .await;
                }
            }
            false
        });
    }

    async fn write_status(&mut self, pod: &Pod, e: &PodEntry) {
        let health = self.probes.observe(pod, e);
        let host_ip = self.cfg.node_ip.as_deref();
        let st = if e.status.state == PodState::Refused {
            status::refused(pod, e, host_ip)
        } else {
            status::pod_status(e, host_ip, &health, pod.status.as_ref())
        };
        let fp = status::fingerprint(&st);
        let u = uid(pod);
        if self.reported.status.get(&u) == Some(&fp) {
            return;
        }
        let (ns, name) = key(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let patch = serde_json::json!({ "status": st });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                self.reported.status.insert(u.clone(), fp);
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(err) => warn!("kubelet: failed to update status of {ns}/{name}: {err}"),
        }
        for c in &e.status.containers {
            if c.state == "running"
                && self
                    .reported
                    .started
                    .insert((u.clone(), c.name.clone(), c.restart_count))
            {
                events::record(
                    &self.client,
                    &self.cfg.node_name,
                    pod,
                    "Normal",
                    "Started",
                    &format!("Started container {}", c.name),
                )
                .await;
            }
            if c.reason.as_deref() == Some("CrashLoopBackOff")
                && self.reported.started.insert((
                    u.clone(),
                    format!("{}/backoff", c.name),
                    c.restart_count,
                ))
            {
                events::record(
                    &self.client,
                    &self.cfg.node_name,
                    pod,
                    "Warning",
                    "BackOff",
                    &format!("Back-off restarting failed container {}", c.name),
                )
                .await;
            }
        }
    }

    async fn sync_mirrors(&mut self, mirrors: Vec<Arc<Pod>>, statics: Vec<PodEntry>) {
        let mut have: HashMap<(String, String), Arc<Pod>> =
            mirrors.into_iter().map(|p| (key(&p), p)).collect();
        let node_uid = {
            let nodes: Api<Node> = Api::all(self.client.clone());
            match nodes.get_opt(&self.cfg.node_name).await {
                Ok(Some(n)) => n.metadata.uid,
                _ => None,
            }
        };
        for e in statics {
            if e.status.state == PodState::Refused && e.status.containers.is_empty() {
                continue;
            }
            let k = (
                e.plan.namespace.clone(),
                mirror::name(&e, &self.cfg.node_name),
            );
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &k.0);
            match have.remove(&k) {
                Some(m) => {
                    if m.metadata.deletion_timestamp.is_some()
                        || mirror::hash(&m) != Some(e.plan.source_hash.as_str())
                    {
                        // Deleted by a user, or the manifest changed: replace it.
                        let dp = DeleteParams {
                            grace_period_seconds: Some(0),
                            ..Default::default()
                        };
                        let _ = api.delete(&k.1, &dp).await;
                        self.reported.status.remove(&uid(&m));
                    } else {
                        self.write_status(&m, &e).await;
                    }
                }
                None => {
                    let Some(mut pod) = mirror::mirror_for(&e, &self.cfg.node_name) else {
                        continue;
                    };
                    match &node_uid {
                        Some(u) => {
                            if let Some(o) = pod.metadata.owner_references.as_mut() {
                                o[0].uid = u.clone();
                            }
                        }
                        None => pod.metadata.owner_references = None,
                    }
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 409 => {}
                        Err(err) => warn!(
                            "kubelet: failed to create mirror pod {}/{}: {err}",
                            k.0, k.1
                        ),
                    }
                }
            }
        }
        // Mirror pods whose static pod is gone.
        for ((ns, name), m) in have {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            if api.delete(&name, &dp).await.is_ok() {
                self.reported.status.remove(&uid(&m));
            }
        }
    }

    async fn sync(&mut self, pods: Vec<Arc<Pod>>) {
        let rt = self.rt.clone();
        let Ok(entries) = tokio::task::spawn_blocking(move || rt.list()).await else {
            return;
        };
        self.probes.begin_round();
        let mut by_uid: HashMap<String, Vec<PodEntry>> = HashMap::new();
        let mut statics = vec![];
        for e in entries {
            if e.plan.source.is_some() {
                statics.push(e);
            } else {
                by_uid.entry(e.plan.uid.clone()).or_default().push(e);
            }
        }
        let (mirrors, pods): (Vec<Arc<Pod>>, Vec<Arc<Pod>>) =
            pods.into_iter().partition(|p| mirror::is_mirror(p));
        // Pods whose volume directories stay: in the store, in the runtime, or being worked on.
        let mut keep: BTreeSet<String> = pods.iter().map(|p| uid(p)).collect();
        keep.extend(by_uid.keys().cloned());
        if let Ok(b) = self.busy.lock() {
            keep.extend(b.iter().cloned());
        }
        for pod in pods {
            let u = uid(&pod);
            let mut ents = by_uid.remove(&u).unwrap_or_default();
            if u.is_empty() || self.is_busy(&u) {
                continue;
            }
            if pod.metadata.deletion_timestamp.is_some() {
                self.stop(u.clone(), Some((*pod).clone()), ents);
                self.reported.status.remove(&u);
                continue;
            }
            let terminal = matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            if terminal && pod.status.as_ref().and_then(|s| s.reason.as_deref()) == Some(DEADLINE) {
                // Stopped for its deadline: kept, stopped, until the pod is deleted.
                continue;
            }
            if !terminal && deadline_exceeded(&pod) {
                self.reported.status.remove(&u);
                self.fail_deadline((*pod).clone(), ents);
                continue;
            }
            ents.sort_by_key(|e| e.plan.created_at);
            let Some(newest) = ents.last().cloned() else {
                if !terminal && self.retry_ready(&u) {
                    self.start((*pod).clone(), vec![]);
                }
                continue;
            };
            self.write_status(&pod, &newest).await;
            if newest.alive && newest.status.state == PodState::Running {
                self.refresh(&pod);
            }
            let running = Running { entry: newest };
            if !running.needs_backoff() {
                // It got a container running: a later refusal starts its back-off over.
                if let Ok(mut m) = self.records.lock() {
                    if let Some(r) = m.get_mut(&u) {
                        r.refused.reset();
                    }
                }
            }
            let due = running.restart_due().filter(|_| self.retry_ready(&u));
            if let Some(why) = due {
                info!("kubelet: {why}");
                if running.needs_backoff() {
                    if let Ok(mut m) = self.records.lock() {
                        m.entry(u.clone())
                            .or_default()
                            .refused
                            .failed(BackoffPolicy::REFUSED);
                    }
                }
                self.reported.status.remove(&u);
                self.start((*pod).clone(), ents);
            } else if ents.len() > 1 {
                ents.pop();
                self.stop(format!("{u}/old"), None, ents);
            }
        }
        // Runtime pods whose API object is gone (force-deleted, or deleted while we were down).
        for (u, ents) in by_uid {
            if !self.is_busy(&u) {
                self.reported.status.remove(&u);
                self.stop(u, None, ents);
            }
        }
        self.prep.cleanup(&keep);
        if let Ok(mut m) = self.records.lock() {
            m.retain(|u, _| keep.contains(u));
        }
        self.sync_mirrors(mirrors, statics).await;
        self.probes.end_round();
    }
}

/// Watch this node's pods and keep the runtime in line with them until cancelled.
/// `writer` fills the store of this node's pods (see `reflector::store`).
pub async fn run(
    client: kube::Client,
    cfg: KubeletConfig,
    rt: Arc<Runtime>,
    writer: reflector::store::Writer<Pod>,
) -> Result<(), KubeletError> {
    let api: Api<Pod> = Api::all(client.clone());
    let reader = writer.as_reader();
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name));
    let wake = Arc::new(tokio::sync::Notify::new());
    let w2 = wake.clone();
    let stream = reflector(writer, watcher(api, wc).default_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                warn!("kubelet: pod watch: {e}");
            }
            w2.notify_one();
        }
    });
    // Timeout so a watch that never syncs (API server down) still lets static mirrors retry.
    let _ = tokio::time::timeout(Duration::from_secs(30), reader.wait_until_ready()).await;
    let node = super::downward::NodeInfo {
        name: cfg.node_name.clone(),
        ip: cfg.node_ip.clone(),
        allocatable: super::node::capacity(),
    };
    let prep = Arc::new(
        Preparer::new(client.clone(), rt.cfg.root_dir.clone(), node).with_dns(rt.cfg.dns.clone()),
    );
    let probes = probes::Prober::new(
        client.clone(),
        cfg.node_name.clone(),
        rt.clone(),
        wake.clone(),
    );
    let mut s = Syncer {
        client,
        cfg,
        rt,
        prep,
        records: Arc::default(),
        probes,
        busy: Arc::default(),
        reported: Reported::default(),
        wake: wake.clone(),
    };
    loop {
        s.sync(reader.state()).await;
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
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
