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
//! to 10 s). Running pods' volumes are brought up to date every `--sync-frequency`, and the volume
//! directories of pods that are gone are removed.

use super::prepare::{Blocked, Preparer};
use super::{events, mirror, probes, status, KubeletConfig, KubeletError};
use crate::lifecycle::{Backoff, BackoffPolicy, Gone, Preparing, Running, Source, Terminating};
use crate::log::log;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use rktup_runtime::image::{PullPolicy, Reference};
use rktup_runtime::pod::PodState;
use rktup_runtime::runtime::{PodEntry, Runtime};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
                log(&format!("kubelet: pod {ns}/{name}: {msg}"));
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
            log(&format!(
                "kubelet: pod {ns}/{name} container {}: {}",
                e.container, e.message
            ));
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
        let st = status::blocked(pod, host_ip, waiting);
        let fp = status::fingerprint(&st);
        let u = uid(pod);
        let last = records
            .lock()
            .ok()
            .and_then(|m| m.get(&u).and_then(|r| r.status.clone()));
        if last.as_ref() != Some(&fp) {
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
                Err(e) => log(&format!(
                    "kubelet: failed to update status of {ns}/{name}: {e}"
                )),
            }
        }
    }
    if let Ok(mut m) = records.lock() {
        m.entry(uid(pod))
            .or_default()
            .backoff
            .failed(BackoffPolicy::PREPARE);
    }
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

    fn is_busy(&self, uid: &str) -> bool {
        self.busy.lock().map(|b| b.contains(uid)).unwrap_or(true)
    }

    /// Whether a pod that could not be prepared may be tried again.
    fn retry_ready(&self, uid: &str) -> bool {
        self.records
            .lock()
            .map(|m| m.get(uid).is_none_or(|r| r.backoff.ready()))
            .unwrap_or(true)
    }

    /// Prepare `pod` (volumes, env) and start it in the background (the runtime pulls and
    /// plans synchronously); `old` runtime pods of it are removed once it can start.
    fn start(&self, pod: Pod, old: Vec<PodEntry>) {
        let u = uid(&pod);
        if !self.claim(&u) {
            return;
        }
        let (rt, client, busy, wake) = (
            self.rt.clone(),
            self.client.clone(),
            self.busy.clone(),
            self.wake.clone(),
        );
        let (prep, records) = (self.prep.clone(), self.records.clone());
        let node = self.cfg.node_name.clone();
        let host_ip = self.cfg.node_ip.clone();
        let v = self.cfg.verbosity;
        tokio::spawn(async move {
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
                    if let Ok(mut b) = busy.lock() {
                        b.remove(&uid(&pod));
                    }
                    return;
                }
            };
            if let Ok(mut m) = records.lock() {
                if let Some(r) = m.get_mut(&u) {
                    r.backoff.reset();
                    r.status = None;
                }
            }
            // Pulling → Starting: kubelet's Pulling/Pulled events (the runtime pulls in run_pod).
            let rt_poll = rt.clone();
            let pulls = image_pulls(&rt, &pod).await;
            for (field, image, pulling) in &pulls {
                let (reason, msg) = if *pulling {
                    ("Pulling", format!("Pulling image \"{image}\""))
                } else {
                    (
                        "Pulled",
                        format!("Container image \"{image}\" already present on machine"),
                    )
                };
                events::record_at(&client, &node, &pod, Some(field), "Normal", reason, &msg).await;
            }
            let (namespace, name) = key(&pod);
            let source = Source::Api {
                namespace: namespace.clone(),
                name: name.clone(),
            };
            let starting = pulling.pulls_known(source, old);
            // Starting → Running, or refused (retried after `BackoffPolicy::RESTART`).
            let r = tokio::task::spawn_blocking(move || starting.start(&rt, v)).await;
            match r {
                Ok(Ok(Running { entry: e })) => {
                    for (field, image, _) in pulls.iter().filter(|p| p.2) {
                        let msg = format!("Successfully pulled image \"{image}\"");
                        events::record_at(
                            &client,
                            &node,
                            &pod,
                            Some(field),
                            "Normal",
                            "Pulled",
                            &msg,
                        )
                        .await;
                    }
                    // The supervisor brings the containers up after run_pod returns: sync again
                    // as soon as they run, so Running/Ready reach the API without waiting for
                    // the next periodic sync.
                    wait_until_started(&rt_poll, &e.plan.uuid).await;
                }
                Ok(Err(e)) => {
                    events::record(&client, &node, &pod, "Warning", "Failed", &e.to_string()).await;
                }
                Err(e) => log(&format!(
                    "kubelet: pod {namespace}/{name}: start task failed: {e}"
                )),
            }
            if let Ok(mut b) = busy.lock() {
                b.remove(&uid(&pod));
            }
            wake.notify_one();
        });
    }

    /// Stop the runtime pods within the grace period, then (if `pod` is given) finally delete
    /// the API object with grace 0.
    fn stop(&self, u: String, pod: Option<Pod>, entries: Vec<PodEntry>) {
        if !self.claim(&u) {
            return;
        }
        let (rt, client, busy, wake) = (
            self.rt.clone(),
            self.client.clone(),
            self.busy.clone(),
            self.wake.clone(),
        );
        let node = self.cfg.node_name.clone();
        tokio::spawn(async move {
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
                    Err(e) => log(&format!("kubelet: failed to delete pod {ns}/{name}: {e}")),
                }
            }
            if let Ok(mut b) = busy.lock() {
                b.remove(&u);
            }
            wake.notify_one();
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
        let (client, busy, prep, records) = (
            self.client.clone(),
            self.busy.clone(),
            self.prep.clone(),
            self.records.clone(),
        );
        let node = self.cfg.node_name.clone();
        let pod = pod.clone();
        tokio::spawn(async move {
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
            if let Ok(mut b) = busy.lock() {
                b.remove(&u);
            }
        });
    }

    async fn write_status(&mut self, pod: &Pod, e: &PodEntry) {
        let health = self.probes.observe(pod, e);
        let st = status::pod_status(e, self.cfg.node_ip.as_deref(), &health, pod.status.as_ref());
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
            Err(err) => log(&format!(
                "kubelet: failed to update status of {ns}/{name}: {err}"
            )),
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
                        Err(err) => log(&format!(
                            "kubelet: failed to create mirror pod {}/{}: {err}",
                            k.0, k.1
                        )),
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
            ents.sort_by_key(|e| e.plan.created_at);
            let Some(newest) = ents.last().cloned() else {
                let terminal = matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                );
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
            let due = running.restart_due().filter(|_| self.retry_ready(&u));
            if let Some(why) = due {
                log(&format!("kubelet: {why}"));
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
                log(&format!("kubelet: pod watch: {e}"));
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
    let prep = Arc::new(Preparer::new(client.clone(), rt.cfg.root_dir.clone(), node));
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

/// Per container (field path, image, whether it will be pulled), for kubelet's Pulling/Pulled
/// events: pulled when the policy says Always or the image is not in the node's store.
async fn image_pulls(rt: &Arc<Runtime>, pod: &Pod) -> Vec<(String, String, bool)> {
    let Some(spec) = pod.spec.clone() else {
        return vec![];
    };
    let rt = rt.clone();
    tokio::task::spawn_blocking(move || {
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| ("initContainers", c));
        let main = spec.containers.iter().map(|c| ("containers", c));
        init.chain(main)
            .filter_map(|(list, c)| {
                let image = c.image.clone()?;
                let policy = PullPolicy::from_k8s(c.image_pull_policy.as_deref(), &image);
                let present = Reference::parse(&image)
                    .ok()
                    .is_some_and(|r| rt.store.resolve(&r.to_string()).is_ok());
                let pulling = match policy {
                    PullPolicy::Always => true,
                    PullPolicy::IfNotPresent => !present,
                    PullPolicy::Never => return None,
                };
                Some((format!("spec.{list}{{{}}}", c.name), image, pulling))
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}
