//! In-process controllers, each a level-triggered loop over the object
//! layer: woken by any store change (and a periodic resync), it compares
//! desired and observed state and writes through [`Core`], so controller
//! writes get the same defaults, validation and watch events as clients'.

pub(crate) mod apiservice;
pub(crate) mod clusterrole_aggregation;
mod crd;
pub(crate) mod cronjob;
mod csr_approving;
pub mod csr_signing;
mod daemonset;
mod deployment;
pub(crate) mod disruption;
mod endpoints;
pub mod endpointslice;
mod events;
mod gc;
mod job;
pub mod loadbalancer;
mod namespace;
mod nodelifecycle;
mod replicaset;
mod resourcequota;
mod revisions;
mod rootcacertpublisher;
mod scheduler;
pub(crate) mod serviceaccount;
mod statefulset;
pub(crate) mod volumes;

pub use cronjob::Clock;

use crate::api::objects::{meta_str, now, now_micro, Core, WriteCtx};
use crate::registry::{self, ResourceDef};
use crate::store::{Event, EventType};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Settings shared by the controllers.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_monitor_grace: Duration,
    /// Addresses for LoadBalancer Services; none: they stay pending.
    pub load_balancer_pool: Option<loadbalancer::LoadBalancerPools>,
    /// The cluster DNS address: `kube-system/kube-dns` is kept with it.
    pub cluster_dns_ip: Option<std::net::Ipv4Addr>,
    /// The CronJob controller's time (tests move it forward).
    pub clock: Clock,
    /// The CA and rules of the CSR signer and approver; none: CSRs are not acted on.
    pub csr_signer: Option<Arc<csr_signing::Signer>>,
    /// The aggregator whose backends the APIService availability check calls.
    pub aggregator: Option<Arc<crate::api::aggregator::Aggregator>>,
    /// The cluster CA (PEM) published as `kube-root-ca.crt` in every namespace; none: not
    /// published.
    pub root_ca_pem: Option<String>,
}

impl Settings {
    pub fn new(node_monitor_grace: Duration) -> Self {
        Settings {
            node_monitor_grace,
            load_balancer_pool: None,
            cluster_dns_ip: None,
            clock: Clock::default(),
            csr_signer: None,
            aggregator: None,
            root_ca_pem: None,
        }
    }
}

type Pass = fn(&Core, &Settings);

/// Starts every controller as a task in `tasks`.
pub fn spawn_all(
    tasks: &mut JoinSet<()>,
    core: Arc<Core>,
    stop: watch::Receiver<bool>,
    settings: Settings,
) {
    // Each controller wakes only for changes to what it reads (plus its
    // resync): waking all of them on every write made unrelated writes
    // (a configmap) pay for full passes over every pod. The resync is a
    // safety net, not how work is found: the scheduler and the garbage
    // collector are woken by every change they act on (upstream has no
    // periodic pass for either; unschedulable pods are retried on cluster
    // events), and each of their passes reads every pod or every object, so
    // with thousands of pods a 1-2 s resync cost 20-80 ms of CPU each time.
    let controllers: &[(&str, Pass, Wake, Duration)] = &[
        (
            "scheduler",
            scheduler::pass,
            // Claims and volumes too: a pod waiting for its claims is bound once they are.
            Wake::Kinds(&[
                ("", "pods"),
                ("", "nodes"),
                ("", "persistentvolumeclaims"),
                ("", "persistentvolumes"),
            ]),
            Duration::from_secs(10),
        ),
        (
            "customresourcedefinitions",
            crd::pass,
            Wake::Kinds(&[("apiextensions.k8s.io", "customresourcedefinitions")]),
            Duration::from_secs(10),
        ),
        (
            "replicaset",
            replicaset::pass,
            Wake::Kinds(&[
                ("apps", "replicasets"),
                ("", "replicationcontrollers"),
                ("", "pods"),
            ]),
            Duration::from_secs(2),
        ),
        (
            "deployment",
            deployment::pass,
            Wake::Kinds(&[
                ("apps", "deployments"),
                ("apps", "replicasets"),
                ("", "pods"),
            ]),
            Duration::from_secs(2),
        ),
        (
            "daemonset",
            daemonset::pass,
            Wake::Kinds(&[
                ("apps", "daemonsets"),
                ("apps", "controllerrevisions"),
                ("", "nodes"),
                ("", "pods"),
            ]),
            Duration::from_secs(2),
        ),
        (
            "statefulset",
            statefulset::pass,
            Wake::Kinds(&[
                ("apps", "statefulsets"),
                ("apps", "controllerrevisions"),
                ("", "persistentvolumeclaims"),
                ("", "pods"),
            ]),
            Duration::from_secs(2),
        ),
        (
            "cronjob",
            cronjob::pass,
            // And every second: schedules come due with time, not with writes.
            Wake::Kinds(&[("batch", "cronjobs"), ("batch", "jobs")]),
            Duration::from_secs(1),
        ),
        (
            "job",
            job::pass,
            Wake::Kinds(&[("batch", "jobs"), ("", "pods")]),
            Duration::from_secs(2),
        ),
        (
            "namespace",
            namespace::pass,
            // Also on any deletion: a terminating namespace finishes once its
            // last object is gone.
            Wake::KindsOrWhen(&[("", "namespaces")], is_deletion),
            Duration::from_secs(2),
        ),
        (
            "garbagecollector",
            gc::pass,
            Wake::KindsOrWhen(&[], gc_wake),
            Duration::from_secs(30),
        ),
        (
            "nodelifecycle",
            nodelifecycle::pass,
            Wake::Kinds(&[
                ("", "nodes"),
                ("coordination.k8s.io", "leases"),
                ("", "pods"),
            ]),
            Duration::from_secs(1),
        ),
        (
            "endpoints",
            endpoints::pass,
            Wake::Kinds(&[("", "services"), ("", "pods"), ("", "endpoints")]),
            Duration::from_secs(2),
        ),
        (
            "endpointslice",
            endpointslice::pass,
            Wake::KindsOrWhen(
                &[
                    ("", "services"),
                    ("", "pods"),
                    ("", "endpoints"),
                    ("discovery.k8s.io", "endpointslices"),
                ],
                node_added_or_deleted,
            ),
            Duration::from_secs(5),
        ),
        (
            "loadbalancer",
            loadbalancer::pass,
            Wake::Kinds(&[("", "services")]),
            Duration::from_secs(10),
        ),
        (
            "kube-dns-service",
            ensure_kube_dns,
            Wake::Kinds(&[("", "services")]),
            Duration::from_secs(30),
        ),
        (
            "serviceaccount",
            serviceaccount::pass,
            Wake::Kinds(&[("", "namespaces"), ("", "serviceaccounts"), ("", "secrets")]),
            Duration::from_secs(5),
        ),
        (
            "root-ca-cert-publisher",
            rootcacertpublisher::pass,
            // Not every ConfigMap write: only its own ConfigMap's (deleted or edited).
            Wake::KindsOrWhen(&[("", "namespaces")], rootcacertpublisher::is_root_ca),
            Duration::from_secs(30),
        ),
        (
            "clusterrole-aggregation",
            clusterrole_aggregation::pass,
            Wake::Kinds(&[("rbac.authorization.k8s.io", "clusterroles")]),
            Duration::from_secs(30),
        ),
        (
            "persistentvolume-binder",
            volumes::pass,
            Wake::KindsOrWhen(
                &[
                    ("", "persistentvolumes"),
                    ("", "persistentvolumeclaims"),
                    ("storage.k8s.io", "storageclasses"),
                ],
                volumes::pod_added_or_deleted,
            ),
            Duration::from_secs(5),
        ),
        (
            "event-mirror",
            events::pass,
            Wake::Kinds(&[("events.k8s.io", "events")]),
            Duration::from_secs(5),
        ),
        (
            // Resync: evictions expire from `disruptedPods` after two minutes.
            "disruption",
            disruption::pass,
            Wake::Kinds(&[
                ("policy", "poddisruptionbudgets"),
                ("", "pods"),
                ("apps", "replicasets"),
                ("apps", "deployments"),
                ("apps", "statefulsets"),
                ("", "replicationcontrollers"),
            ]),
            Duration::from_secs(10),
        ),
        (
            "resourcequota",
            resourcequota::pass,
            Wake::KindsOrWhen(
                &[
                    ("", "resourcequotas"),
                    ("", "pods"),
                    ("", "services"),
                    ("", "persistentvolumeclaims"),
                ],
                resourcequota::wake,
            ),
            Duration::from_secs(10),
        ),
        (
            // Also when a node registers: its serving CSR may wait for its addresses.
            "csrapproving",
            csr_approving::pass,
            Wake::KindsOrWhen(
                &[("certificates.k8s.io", "certificatesigningrequests")],
                node_added_or_deleted,
            ),
            Duration::from_secs(30),
        ),
        (
            "csrsigning",
            csr_signing::pass,
            Wake::Kinds(&[("certificates.k8s.io", "certificatesigningrequests")]),
            Duration::from_secs(30),
        ),
        (
            // Resync: CSRs age without a write.
            "csrcleaner",
            csr_signing::clean,
            Wake::Kinds(&[("certificates.k8s.io", "certificatesigningrequests")]),
            Duration::from_secs(60),
        ),
        (
            // Resync: backends fail without a write (upstream rechecks every 30 s and sooner
            // on failure).
            "apiservice-availability",
            apiservice::pass,
            Wake::Kinds(&[
                ("apiregistration.k8s.io", "apiservices"),
                ("", "services"),
                ("discovery.k8s.io", "endpointslices"),
                ("apiextensions.k8s.io", "customresourcedefinitions"),
            ]),
            Duration::from_secs(5),
        ),
        (
            // Resync: tokens expire without a write.
            "tokencleaner",
            |core, _| crate::api::auth::bootstrap_token::clean_expired(core),
            Wake::Kinds(&[("", "secrets")]),
            Duration::from_secs(30),
        ),
    ];
    for (name, pass, wake, resync) in controllers.iter().copied() {
        tasks.spawn(run(
            name,
            core.clone(),
            stop.clone(),
            settings.clone(),
            pass,
            wake,
            resync,
        ));
    }
}

/// Which store changes start a pass (besides the periodic resync).
#[derive(Clone, Copy)]
enum Wake {
    /// Any change to these (group, plural) resources.
    Kinds(&'static [(&'static str, &'static str)]),
    /// Those, or any change for which the function says yes.
    KindsOrWhen(&'static [(&'static str, &'static str)], fn(&Event) -> bool),
}

/// A [`Wake`] with its key prefixes worked out once, as each event is tested against it.
struct WakeFilter {
    prefixes: Vec<String>,
    when: Option<fn(&Event) -> bool>,
}

impl WakeFilter {
    fn new(wake: Wake) -> WakeFilter {
        let (kinds, when) = match wake {
            Wake::Kinds(kinds) => (kinds, None),
            Wake::KindsOrWhen(kinds, f) => (kinds, Some(f)),
        };
        WakeFilter {
            prefixes: kinds
                .iter()
                .map(|(group, plural)| rd(group, plural).key_prefix(None))
                .collect(),
            when,
        }
    }

    fn wants(&self, ev: &Event) -> bool {
        self.prefixes.iter().any(|p| ev.key.starts_with(p.as_str()))
            || self.when.is_some_and(|f| f(ev))
    }
}

/// Nodes matter to the EndpointSlice controller when they come or go (a
/// pod on a missing node is left out), not on every heartbeat.
fn node_added_or_deleted(ev: &Event) -> bool {
    ev.kind != EventType::Modified && ev.key.starts_with("/registry/core/nodes/")
}

/// Keeps `kube-system/kube-dns` (what kubeadm and kind clusters have, and
/// what tools look for) on the cluster DNS address: labels
/// `k8s-app: kube-dns`, `kubernetes.io/cluster-service`, `kubernetes.io/name:
/// CoreDNS`, ports dns 53/UDP, dns-tcp 53/TCP, metrics 9153/TCP and no
/// selector, since each node's agent answers on that address itself.
/// Re-created when deleted; left alone when it exists.
pub(crate) fn ensure_kube_dns(core: &Core, s: &Settings) {
    let Some(ip) = s.cluster_dns_ip else { return };
    let r = rd("", "services");
    if core
        .get_stored(r, Some("kube-system"), "kube-dns")
        .is_some()
    {
        return;
    }
    let svc = json!({
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {
            "k8s-app": "kube-dns",
            "kubernetes.io/cluster-service": "true",
            "kubernetes.io/name": "CoreDNS",
        }, "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}},
        "spec": {"clusterIP": ip.to_string(), "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
        ]},
    });
    let mut ctx = WriteCtx::controller("kube-apiserver");
    if let Err(e) = core.create(r, Some("kube-system"), svc, &mut ctx) {
        if e.reason != "AlreadyExists" {
            tracing::warn!("kube-dns service on {ip}: {}", e.message);
        }
    }
}

fn is_deletion(ev: &Event) -> bool {
    ev.kind == EventType::Deleted
}

/// Deletions (owners going away) and objects that carry owner references,
/// finalizers or a deletion timestamp, before or after the change.
fn gc_wake(ev: &Event) -> bool {
    let relevant = |o: &Value| {
        let m = &o["metadata"];
        m.get("ownerReferences").is_some()
            || m.get("finalizers").is_some()
            || m.get("deletionTimestamp").is_some()
    };
    ev.kind == EventType::Deleted
        || relevant(&ev.object)
        || ev.prev.as_deref().is_some_and(relevant)
}

/// Runs `pass` whenever the store changes (batched) and every `resync`.
async fn run(
    name: &'static str,
    core: Arc<Core>,
    mut stop: watch::Receiver<bool>,
    settings: Settings,
    pass: Pass,
    wake: Wake,
    resync: Duration,
) {
    let mut rx = core.store.watch("/registry/", core.store.revision()).ok();
    let wake = WakeFilter::new(wake);
    loop {
        {
            let core = core.clone();
            let settings = settings.clone();
            // A panicking pass must not take the controller down.
            let res = tokio::task::spawn_blocking(move || pass(&core, &settings)).await;
            if res.is_err() {
                tracing::error!("controller {name}: pass panicked");
            }
        }
        let tick = tokio::time::sleep(resync);
        tokio::pin!(tick);
        match rx.as_mut() {
            Some(w) => loop {
                tokio::select! {
                    ev = w.rx.recv() => match ev {
                        Some(ev) if !wake.wants(&ev) => continue,
                        Some(_) => break,
                        None => { rx = None; break; }
                    },
                    _ = &mut tick => break,
                    _ = stop.changed() => return,
                }
            },
            None => {
                tokio::select! {
                    _ = &mut tick => {}
                    _ = stop.changed() => return,
                }
                rx = core.store.watch("/registry/", core.store.revision()).ok();
            }
        }
        // Batch bursts of writes into one pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Some(w) = rx.as_mut() {
            while w.rx.try_recv().is_ok() {}
        }
    }
}

pub(crate) fn rd(group: &str, plural: &str) -> &'static ResourceDef {
    registry::RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural)
        .unwrap_or(&registry::RESOURCES[0])
}

pub(crate) fn list(core: &Core, group: &str, plural: &str, ns: Option<&str>) -> Vec<Arc<Value>> {
    let r = rd(group, plural);
    core.store
        .list(&r.key_prefix(ns))
        .0
        .into_iter()
        .map(|s| s.object)
        .collect()
}

pub(crate) fn uid(o: &Value) -> &str {
    meta_str(o, "uid")
}

/// The uid of the managing controller (ownerReference with controller=true).
pub(crate) fn controller_uid(o: &Value) -> Option<&str> {
    o.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r["controller"].as_bool() == Some(true))
        .and_then(|r| r["uid"].as_str())
}

pub(crate) fn owner_ref(owner: &Value, kind: &str, api_version: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": meta_str(owner, "name"), "uid": uid(owner), "controller": true, "blockOwnerDeletion": true})
}

/// The ControllerRefManager's adopt/release patch of a pod: `adopt` appends `oref` to its
/// ownerReferences, otherwise the reference with `oref`'s uid is removed.
pub(crate) fn set_pod_owner(
    core: &Core,
    ns: &str,
    pod_name: &str,
    manager: &str,
    oref: &Value,
    adopt: bool,
) -> bool {
    let mut ctx = WriteCtx::controller(manager);
    core.modify(registry::pods(), Some(ns), pod_name, None, &mut ctx, |o| {
        let mut o = o.clone();
        let mut refs = o
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if adopt {
            refs.push(oref.clone());
        } else {
            refs.retain(|r| r["uid"] != oref["uid"]);
        }
        o["metadata"]["ownerReferences"] = json!(refs);
        Ok(o)
    })
    .is_ok()
}

pub(crate) fn deleting(o: &Value) -> bool {
    o.pointer("/metadata/deletionTimestamp").is_some()
}

/// Not terminating and not finished.
pub(crate) fn pod_active(p: &Value) -> bool {
    let phase = p
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    !deleting(p) && phase != "Succeeded" && phase != "Failed"
}

pub(crate) fn pod_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

pub(crate) fn i64_at(o: &Value, ptr: &str) -> i64 {
    o.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// Creates a pod from a workload's pod template.
#[allow(clippy::too_many_arguments)]
pub(crate) fn create_pod_from_template(
    core: &Core,
    owner: &Value,
    kind: &str,
    api_version: &str,
    template: &Value,
    extra_labels: &[(&str, String)],
    node: Option<&str>,
    manager: &str,
) -> bool {
    let ns = meta_str(owner, "namespace");
    let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
    if !meta.get("labels").is_some_and(Value::is_object) {
        meta["labels"] = json!({});
    }
    for (k, v) in extra_labels {
        meta["labels"][*k] = json!(v);
    }
    meta["generateName"] = json!(format!("{}-", meta_str(owner, "name")));
    meta["ownerReferences"] = json!([owner_ref(owner, kind, api_version)]);
    if let Some(m) = meta.as_object_mut() {
        m.remove("name");
        m.remove("creationTimestamp");
    }
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec});
    let mut ctx = WriteCtx::controller(manager);
    match core.create(registry::pods(), Some(ns), pod, &mut ctx) {
        Ok(_) => true,
        Err(e) => {
            record_event(
                core,
                owner,
                kind,
                "Warning",
                "FailedCreate",
                &format!("Error creating: {}", e.message),
                manager,
            );
            false
        }
    }
}

/// Records a core/v1 Event about `obj`.
pub(crate) fn record_event(
    core: &Core,
    obj: &Value,
    kind: &str,
    ty: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let ns = match meta_str(obj, "namespace") {
        "" => "default",
        n => n,
    };
    let ev = json!({
        "metadata": {"generateName": format!("{}.", meta_str(obj, "name")), "namespace": ns},
        "involvedObject": {"kind": kind, "name": meta_str(obj, "name"), "namespace": meta_str(obj, "namespace"), "uid": uid(obj), "apiVersion": obj.get("apiVersion").cloned().unwrap_or(json!("v1")), "resourceVersion": meta_str(obj, "resourceVersion")},
        "reason": reason,
        "message": message,
        "type": ty,
        "source": {"component": component},
        "firstTimestamp": now(),
        "lastTimestamp": now(),
        "count": 1,
        "reportingComponent": component,
        "reportingInstance": "",
        "eventTime": null,
    });
    let _ = now_micro;
    let mut ctx = WriteCtx::controller(component);
    let _ = core.create(rd("", "events"), Some(ns), ev, &mut ctx);
}

/// Writes `status` if it differs from the object's current status.
pub(crate) fn set_status(core: &Core, r: &ResourceDef, obj: &Value, status: Value, manager: &str) {
    if obj.get("status") == Some(&status) {
        return;
    }
    let mut ctx = WriteCtx::controller(manager);
    let ns = meta_str(obj, "namespace");
    let _ = core.modify(
        r,
        Some(ns),
        meta_str(obj, "name"),
        Some("status"),
        &mut ctx,
        |cur| {
            let mut cur = cur.clone();
            cur["status"] = status.clone();
            Ok(cur)
        },
    );
}

/// Parses a resource quantity into base units (cores, bytes, count).
pub(crate) fn quantity(q: &Value) -> f64 {
    let s = match q {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => return n.as_f64().unwrap_or(0.0),
        _ => return 0.0,
    };
    let suffixes: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suf, mul) in suffixes {
        if let Some(num) = s.strip_suffix(suf) {
            return num.parse::<f64>().unwrap_or(0.0) * mul;
        }
    }
    s.parse::<f64>().unwrap_or(0.0)
}

/// Resolves an int-or-percent (maxSurge/maxUnavailable) against `total`.
pub(crate) fn int_or_percent(v: Option<&Value>, total: i64, round_up: bool) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => match s.strip_suffix('%').and_then(|p| p.parse::<f64>().ok()) {
            Some(p) => {
                let x = p * total as f64 / 100.0;
                if round_up {
                    x.ceil() as i64
                } else {
                    x.floor() as i64
                }
            }
            None => s.parse().unwrap_or(0),
        },
        _ => 0,
    }
}

/// FNV-1a hash of a pod template, encoded like `rand.SafeEncodeString`
/// (the `pod-template-hash` label).
pub(crate) fn template_hash(template: &Value) -> String {
    template_hash_with_collisions(template, None)
}

/// [`template_hash`] salted with a `status.collisionCount` (upstream's
/// `ComputeHash`), so a name clash with another template's object can be
/// resolved by counting up.
pub(crate) fn template_hash_with_collisions(template: &Value, collisions: Option<i64>) -> String {
    let mut t = template.clone();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove("pod-template-hash");
    }
    let mut h: u32 = 0x811c9dc5;
    let salt = collisions.map(|c| (c as u32).to_le_bytes());
    for b in serde_json::to_vec(&t)
        .unwrap_or_default()
        .into_iter()
        .chain(salt.into_iter().flatten())
    {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHA[(b as usize) % ALPHA.len()] as char)
        .collect()
}

/// How many of a controller's pods (on one node, for a DaemonSet) were Failed at the last pass,
/// and the back-off before they are replaced: each new failure doubles it (1 s up to 5 min), as
/// upstream's DaemonSet controller's failed-pods back-off does, so a node that fails every pod it
/// is given costs a pod per step, never a storm. The ReplicaSet controller uses it too.
#[derive(Debug, Default, Clone)]
pub(super) struct FailedPods {
    seen: usize,
    pub(super) delay: std::time::Duration,
    hold_until: Option<std::time::Instant>,
}

const FAILED_BACKOFF_INITIAL: std::time::Duration = std::time::Duration::from_secs(1);
const FAILED_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(300);

impl FailedPods {
    /// `failed` pods are Failed now: more than last time starts (or grows) the back-off.
    /// Returns whether creating replacements must wait.
    pub(super) fn observe(&mut self, failed: usize, now: std::time::Instant) -> bool {
        if failed > self.seen {
            self.delay = (self.delay * 2).clamp(FAILED_BACKOFF_INITIAL, FAILED_BACKOFF_MAX);
            self.hold_until = Some(now + self.delay);
        }
        self.seen = failed;
        self.hold_until.is_some_and(|t| now < t)
    }

    /// The Failed pods were deleted (a DaemonSet's way): the next one to fail is a new failure.
    pub(super) fn replaced(&mut self) {
        self.seen = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_percentages() {
        assert_eq!(quantity(&json!("100m")), 0.1);
        assert_eq!(quantity(&json!("1Gi")), 1073741824.0);
        assert_eq!(quantity(&json!("2")), 2.0);
        assert_eq!(int_or_percent(Some(&json!("25%")), 3, true), 1);
        assert_eq!(int_or_percent(Some(&json!("25%")), 3, false), 0);
        assert_eq!(int_or_percent(Some(&json!(2)), 3, false), 2);
    }
}

#[cfg(test)]
mod failed_pods_tests {
    use super::{FailedPods, FAILED_BACKOFF_INITIAL};
    use std::time::{Duration, Instant};

    /// A DaemonSet deletes its failed pod before the successor fails: the successor's failure
    /// still counts as new, so the back-off grows (1 s, 2 s, 4 s) instead of staying at 1 s.
    #[test]
    fn replaced_pods_failing_again_grow_the_back_off() {
        let t = Instant::now();
        let mut f = FailedPods::default();
        assert!(f.observe(1, t), "the first failure holds");
        assert!(
            !f.observe(1, t + FAILED_BACKOFF_INITIAL),
            "1 s later: replace"
        );
        f.replaced();
        let t2 = t + Duration::from_secs(2);
        assert!(f.observe(1, t2), "the successor failed: hold again");
        assert_eq!(f.delay, Duration::from_secs(2));
        assert!(
            f.observe(1, t2 + Duration::from_secs(1)),
            "still within 2 s"
        );
        assert!(!f.observe(1, t2 + Duration::from_secs(2)));
    }
}
