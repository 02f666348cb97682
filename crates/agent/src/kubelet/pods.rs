//! The API pod source: the pods bound to this node. A watcher (fieldSelector spec.nodeName)
//! feeds a reflector store; a sync loop, woken by watch events and every second, compares the
//! store with the runtime's pods (matched by pod uid) and
//! - hands pods that have no runtime pod yet to the pod workers (`crate::workers`: prepare,
//!   pull, start, with the one back-off policy), and asks them whether a runtime pod has to be
//!   replaced (a refusal for a passing reason, a dead supervisor),
//! - stops pods marked for deletion within their grace period, then deletes the object with
//!   grace 0 (kubelet's final delete),
//! - stops pods past their `activeDeadlineSeconds` (Failed, DeadlineExceeded),
//! - removes runtime pods whose API object is gone,
//! - writes status back when it changed, with Started/BackOff/Killing events,
//! - keeps a mirror pod for every static pod (`--pod-manifest-path`) that runs or waits for an
//!   image (`mirror`), its status from the runtime or from the worker's record,
//! - brings running pods' API volumes up to date every `--sync-frequency`, and removes the
//!   volume directories of pods that are gone.
//!
//! A pod that cannot be prepared, pulled or run stays Pending and is retried (the workers'
//! back-offs); none of these makes a pod Failed, so no controller replaces it.

use super::prepare::{Blocked, Preparer};
use super::{events, hooks, mirror, probes, status, KubeletConfig, KubeletError};
use crate::lifecycle::{Gone, Running, Source, Terminating};
use crate::workers::{static_key, ApiLink, Desired, Waiting, Workers};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use rktup_runtime::pod::PodState;
use rktup_runtime::runtime::{PodEntry, Runtime};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
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

/// What a static pod's mirror pod shows: the runtime pod, or why the pod waits (with the
/// mirror pod made from its manifest).
enum MirrorOf {
    Runs(Box<PodEntry>),
    Waiting(Waiting, Box<Pod>),
}

struct Syncer {
    client: kube::Client,
    cfg: KubeletConfig,
    rt: Arc<Runtime>,
    prep: Arc<Preparer>,
    /// The pod workers (shared with the static source): starts, back-offs, records.
    workers: Workers,
    link: ApiLink,
    /// What reached the API already (statuses and Started/BackOff events).
    reported: Reported,
    probes: probes::Prober,
    /// The status PATCHes this sync decided on, sent together when it ends
    /// (`send_statuses`).
    patches: Vec<StatusPatch>,
}

/// One pod's status PATCH, already counted in `Reported::status` (taken back if it fails).
struct StatusPatch {
    uid: String,
    fingerprint: String,
    namespace: String,
    name: String,
    body: serde_json::Value,
}

/// How many status PATCHes of one sync are in flight at once. One at a time, a burst of pod
/// starts reported its statuses one round trip after another, the last pod's Ready waiting
/// for every other pod's.
const STATUS_PATCHES_IN_FLIGHT: usize = 32;

impl Syncer {
    /// places upstream makes a pod Failed. Its runtime pods stay (stopped) until it is deleted.
    fn fail_deadline(&self, pod: Pod, entries: Vec<PodEntry>) {
        let u = uid(&pod);
        if !self.workers.claim(&u) {
            return;
        }
        let (rt, client) = (self.rt.clone(), self.client.clone());
        let node = self.cfg.node_name.clone();
        let host_ip = self.cfg.node_ip.clone();
        self.workers.spawn_released(u.clone(), async move {
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
        if !self.workers.claim(&u) {
            return;
        }
        let (rt, client) = (self.rt.clone(), self.client.clone());
        let node = self.cfg.node_name.clone();
        self.workers.spawn_released(u.clone(), async move {
            // The deletion's grace period (kubectl delete --grace-period), less what preStop
            // hooks took (at least 2 s after a hook, as kubelet's).
            let mut grace = None;
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
                    // preStop hooks, within the grace period, before the runtime stops.
                    let total = hooks::deletion_grace(pod);
                    let began = Instant::now();
                    let hooked = !total.is_zero() && hooks::has_pre_stop(pod);
                    if hooked {
                        for e in entries.iter().filter(|e| e.alive) {
                            for (c, msg) in hooks::pre_stop_all(&rt, e, pod, total).await {
                                events::record_container(
                                    &client,
                                    &node,
                                    pod,
                                    &c,
                                    "Warning",
                                    "FailedPreStopHook",
                                    &msg,
                                )
                                .await;
                            }
                        }
                    }
                    let left = total.saturating_sub(began.elapsed());
                    grace = Some(if hooked {
                        left.max(Duration::from_secs(2))
                    } else {
                        left
                    });
                }
            }
            // Terminating → Gone.
            let _ = tokio::task::spawn_blocking(move || {
                let Gone = Terminating { entries }.stop_within(&rt, grace, |_| {});
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
        let freq = self.cfg.sync_frequency;
        let due = self
            .workers
            .with_record(&u, |r| r.refreshed.is_none_or(|t| t.elapsed() >= freq))
            .unwrap_or(false);
        if !due || !self.workers.claim(&u) {
            return;
        }
        self.workers
            .with_record(&u, |r| r.refreshed = Some(Instant::now()));
        let (prep, workers, link) = (self.prep.clone(), self.workers.clone(), self.link.clone());
        let pod = pod.clone();
        self.workers.spawn_released(u.clone(), async move {
            if let Err(Blocked::Mount(failed)) = prep.refresh(&pod).await {
                for (_, msg) in failed {
                    workers
                        .record_once(&link, &u, &pod, None, "Warning", "FailedMount", &msg)
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
        let (namespace, name) = key(pod);
        self.reported.status.insert(u.clone(), fp.clone());
        self.patches.push(StatusPatch {
            uid: u.clone(),
            fingerprint: fp,
            namespace,
            name,
            body: serde_json::json!({ "status": st }),
        });
        // Events go out on their own (as kubelet's event recorder sends them): the sync does
        // not wait for them.
        let event = |type_: &'static str, reason: &'static str, message: String| {
            let (client, node, pod) =
                (self.client.clone(), self.cfg.node_name.clone(), pod.clone());
            tokio::spawn(async move {
                events::record(&client, &node, &pod, type_, reason, &message).await;
            });
        };
        for c in &e.status.containers {
            if c.state == "running"
                && self
                    .reported
                    .started
                    .insert((u.clone(), c.name.clone(), c.restart_count))
            {
                event("Normal", "Started", format!("Started container {}", c.name));
            }
            if c.reason.as_deref() == Some("CrashLoopBackOff")
                && self.reported.started.insert((
                    u.clone(),
                    format!("{}/backoff", c.name),
                    c.restart_count,
                ))
            {
                event(
                    "Warning",
                    "BackOff",
                    format!("Back-off restarting failed container {}", c.name),
                );
            }
        }
    }

    /// Send this sync's status PATCHes, [`STATUS_PATCHES_IN_FLIGHT`] at a time (one per pod, so
    /// a pod's statuses still reach the API in order); one that fails is written again next
    /// sync.
    async fn send_statuses(&mut self) {
        let client = self.client.clone();
        let sends = std::mem::take(&mut self.patches).into_iter().map(|p| {
            let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace);
            async move {
                let r = api
                    .patch_status(&p.name, &PatchParams::default(), &Patch::Merge(&p.body))
                    .await;
                (p, r)
            }
        });
        let sent: Vec<_> = futures_util::stream::iter(sends)
            .buffer_unordered(STATUS_PATCHES_IN_FLIGHT)
            .collect()
            .await;
        for (p, r) in sent {
            let Err(err) = r else { continue };
            if !matches!(&err, kube::Error::Api(s) if s.code == 404) {
                warn!(
                    "kubelet: failed to update status of {}/{}: {err}",
                    p.namespace, p.name
                );
            }
            if self.reported.status.get(&p.uid) == Some(&p.fingerprint) {
                self.reported.status.remove(&p.uid);
            }
        }
    }

    /// The Pending status of a static pod's mirror pod while its worker waits (for an image).
    async fn write_waiting(&mut self, m: &Pod, w: &Waiting) {
        let waiting = (w.container.as_str(), w.reason.as_str(), w.message.as_str());
        let st = status::blocked(m, self.cfg.node_ip.as_deref(), Some(waiting));
        let fp = status::fingerprint(&st);
        let u = uid(m);
        if self.reported.status.get(&u) == Some(&fp) {
            return;
        }
        let (ns, name) = key(m);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let patch = serde_json::json!({ "status": st });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                self.reported.status.insert(u, fp);
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(err) => warn!("kubelet: failed to update status of {ns}/{name}: {err}"),
        }
    }

    /// A mirror pod per static pod that runs (its status the runtime's) or waits before the
    /// runtime has it (its status the worker's `Waiting`); mirror pods of static pods that are
    /// gone are deleted.
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
        let node = self.cfg.node_name.clone();
        let mut wants: Vec<(String, String, String, MirrorOf)> = vec![];
        for sp in self.workers.statics() {
            let runs = statics.iter().any(|e| {
                e.plan.source.as_deref() == Some(sp.path.as_path()) && e.plan.source_hash == sp.hash
            });
            let Some(w) = self
                .workers
                .waiting(&static_key(&sp.path))
                .filter(|_| !runs)
            else {
                continue;
            };
            let m = mirror::mirror_of(&sp.pod, &sp.hash, &node);
            let (ns, name) = key(&m);
            wants.push((ns, name, sp.hash.clone(), MirrorOf::Waiting(w, Box::new(m))));
        }
        for e in statics {
            if e.status.state == PodState::Refused && e.status.containers.is_empty() {
                continue;
            }
            let (ns, name) = (e.plan.namespace.clone(), mirror::name(&e, &node));
            let hash = e.plan.source_hash.clone();
            wants.push((ns, name, hash, MirrorOf::Runs(Box::new(e))));
        }
        for (ns, name, hash, of) in wants {
            let k = (ns, name);
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &k.0);
            match have.remove(&k) {
                Some(m) => {
                    if m.metadata.deletion_timestamp.is_some()
                        || mirror::hash(&m) != Some(hash.as_str())
                    {
                        // Deleted by a user, or the manifest changed: replace it.
                        let dp = DeleteParams {
                            grace_period_seconds: Some(0),
                            ..Default::default()
                        };
                        let _ = api.delete(&k.1, &dp).await;
                        self.reported.status.remove(&uid(&m));
                    } else {
                        match &of {
                            MirrorOf::Runs(e) => self.write_status(&m, e).await,
                            MirrorOf::Waiting(w, _) => self.write_waiting(&m, w).await,
                        }
                    }
                }
                None => {
                    let made = match of {
                        MirrorOf::Runs(e) => mirror::mirror_for(&e, &node),
                        MirrorOf::Waiting(_, m) => Some(*m),
                    };
                    let Some(mut pod) = made else {
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
        keep.extend(self.workers.busy_keys());
        for pod in pods {
            let u = uid(&pod);
            let mut ents = by_uid.remove(&u).unwrap_or_default();
            if u.is_empty() || self.workers.is_busy(&u) {
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
                if !terminal && self.workers.retry_ready(&u) {
                    self.workers.start(desired(&pod), vec![]);
                }
                continue;
            };
            self.write_status(&pod, &newest).await;
            if newest.alive && newest.status.state == PodState::Running {
                self.refresh(&pod);
            }
            let running = Running { entry: newest };
            if self.workers.replace_due(&u, &running, "kubelet: ") {
                self.reported.status.remove(&u);
                self.workers.start(desired(&pod), ents);
            } else if ents.len() > 1 {
                ents.pop();
                self.stop(format!("{u}/old"), None, ents);
            }
        }
        // Runtime pods whose API object is gone (force-deleted, or deleted while we were down).
        for (u, ents) in by_uid {
            if !self.workers.is_busy(&u) {
                self.reported.status.remove(&u);
                self.stop(u, None, ents);
            }
        }
        self.prep.cleanup(&keep);
        self.workers.retain(false, &keep);
        self.sync_mirrors(mirrors, statics).await;
        self.send_statuses().await;
        self.probes.end_round();
    }
}

/// Watch this node's pods and keep the runtime in line with them until cancelled.
/// `writer` fills the store of this node's pods (see `reflector::store`); `workers` run them
/// (the static source's too, which from now on report to the API).
pub async fn run(
    client: kube::Client,
    cfg: KubeletConfig,
    workers: Workers,
    writer: reflector::store::Writer<Pod>,
) -> Result<(), KubeletError> {
    let rt = workers.runtime().clone();
    let api: Api<Pod> = Api::all(client.clone());
    let reader = writer.as_reader();
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name));
    let wake = workers.wake();
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
    let link = ApiLink {
        client: client.clone(),
        node: cfg.node_name.clone(),
        host_ip: cfg.node_ip.clone(),
        prep: prep.clone(),
        pods: reader.clone(),
    };
    workers.connect(link.clone());
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
        workers,
        link,
        probes,
        reported: Reported::default(),
        patches: Vec::new(),
    };
    loop {
        s.sync(reader.state()).await;
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// What the API source wants of pod `pod`: its worker key is its uid.
fn desired(pod: &Pod) -> Desired {
    let (namespace, name) = key(pod);
    Desired {
        key: uid(pod),
        pod: pod.clone(),
        source: Source::Api { namespace, name },
    }
}
