//! The pod lifecycle every pod goes through, whatever its source (static pods from
//! `--pod-manifest-path`, `sync`; API pods from the pod watch, `kubelet::pods`): one driver, the
//! pod workers (`workers`), moves each pod through it. In krustlet's shape: each state is a type
//! and a transition is a method that consumes one state and returns the next, so only the
//! transitions written here exist (an illegal one does not compile):
//!
//! ```text
//! Preparing ──prepared──▶ Pulling ──pulled──▶ Starting ──start──▶ Running
//!     │                     │                     │                  │
//!     └─blocked─▶ (PREPARE) └─failed─▶ (IMAGE_PULL, per image)       │
//!                                                 └─refused─▶ (REFUSED)
//!                                                     restart_due ───┤ (RESTART)
//!                                                                    ▼
//!                                   Gone ◀──stop── Terminating ◀── replaced / deleted / gone
//! ```
//!
//! - `Preparing`: what the pod takes from the API is resolved (`kubelet::prepare`: volumes, env,
//!   downward API); a static pod gets the Service variables when the agent has an API server
//!   (as kubelet's static pods do), nothing without one.
//! - `Pulling`: each container's image is made present per its imagePullPolicy, one at a time
//!   (`Pulling::pull`, kubelet's serialized pulls); a failed pull keeps the pod waiting
//!   (`ErrImagePull`, then `ImagePullBackOff` while the image's back-off runs, per pod and
//!   image as kubelet's) and nothing goes to the runtime; `pulled` hands the pod on with its
//!   images known to be present, so the runtime does not fetch them again. Static pods too:
//!   their events go to their mirror pod when there is an API server, to the log otherwise.
//! - `Starting`: the old runtime pods of it are stopped first (hostPorts, hostPath files and
//!   names stay unambiguous, as with kubelet), then the pod goes to the runtime.
//! - `Running`: a runtime pod exists; `restart_due` says when it has to be replaced.
//! - `Terminating` → `Gone`: runtime pods are stopped and removed.
//!
//! One back-off policy type (`BackoffPolicy`) for every source, applied by the pod workers:
//! `RESTART` (10 s after a lost supervisor or a failed restartPolicy-Always pod, read from the
//! runtime's timestamps so it survives an agent restart), `PREPARE` (1 s doubling to 10 s while a pod cannot be
//! prepared), `IMAGE_PULL` (kubelet's image back-off: 10 s doubling to 5 min) and `REFUSED`
//! (the runtime refused the pod — an unsupported volume, the network not ready: 10 s doubling
//! to 5 min), each per pod in a `Backoff`. A pod that cannot start stays Pending and is tried
//! again; it never turns `Failed` for it (only its containers failing under restartPolicy
//! Never/OnFailure do that), so a controller never replaces it in a loop.
//!
//! A pod cannot skip a state, e.g. go from `Preparing` straight to `Running`:
//!
//! ```compile_fail,E0308
//! use rktup_agent::lifecycle::{Preparing, Running};
//! fn skip(p: Preparing) -> Running {
//!     p.prepared(Default::default())
//! }
//! ```
//!
//! May import: the runtime (`rktup_runtime`), `tracing`. Nothing from `workers`, `sync` or
//! `kubelet`.

use k8s_openapi::api::core::v1::Pod;
use rktup_runtime::image::{ensure_image_reporting, EnsureError, PullPolicy, Reference};
use rktup_runtime::pod::{PodState, RestartPolicy};
use rktup_runtime::runtime::{PodEntry, Runtime, RuntimeError};
use rktup_runtime::util::now_secs;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long the agent waits before trying a pod again, and how that grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl BackoffPolicy {
    /// Re-running a pod refused for a reason that may pass, or whose supervisor died: kubelet's
    /// 10 s.
    pub const RESTART: BackoffPolicy = BackoffPolicy {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(10),
    };
    /// Preparing a pod again that could not be (a missing ConfigMap, Secret or key): 1 s
    /// doubling to 10 s.
    pub const PREPARE: BackoffPolicy = BackoffPolicy {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(10),
    };
    /// Pulling an image again for a pod after a failed pull: kubelet's image back-off
    /// (`backOffPeriod` 10 s, `MaxContainerBackOff` 300 s), per pod and image.
    pub const IMAGE_PULL: BackoffPolicy = BackoffPolicy {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(300),
    };
    /// Running a pod again that the runtime refused (unsupported volume, network not ready,
    /// stage1 unavailable, ...) or whose sandbox failed before any container ran: 10 s doubling
    /// to 5 min, as kubelet's pod workers back off on sync errors.
    pub const REFUSED: BackoffPolicy = BackoffPolicy {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(300),
    };

    /// Whether a failure at `since` (unix seconds) lies the first delay back.
    pub fn elapsed_since(self, since: i64) -> bool {
        now_secs() - since >= self.initial.as_secs() as i64
    }

    /// The delay after `previous` (zero: none yet).
    pub fn next_delay(self, previous: Duration) -> Duration {
        (previous * 2).clamp(self.initial, self.max)
    }
}

/// One pod's back-off under a policy (kept by the loop that retries it).
#[derive(Debug, Default, Clone)]
pub struct Backoff {
    delay: Duration,
    retry_at: Option<Instant>,
}

impl Backoff {
    /// The pod failed (again): wait the policy's next delay.
    pub fn failed(&mut self, policy: BackoffPolicy) {
        self.delay = policy.next_delay(self.delay);
        self.retry_at = Some(Instant::now() + self.delay);
    }

    /// The pod got through: the next failure starts over.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }

    /// Whether the pod may be tried now.
    pub fn ready(&self) -> bool {
        self.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// When the pod may be tried again (None: now).
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at.filter(|t| Instant::now() < *t)
    }

    /// The delay last waited (zero: no failure since the last reset).
    pub fn delay(&self) -> Duration {
        self.delay
    }
}

/// Where a pod comes from (words its log lines).
#[derive(Debug, Clone)]
pub enum Source {
    /// A static pod's manifest file and its hash.
    File { path: PathBuf, hash: String },
    /// An API pod, by namespace and name.
    Api { namespace: String, name: String },
}

/// Volumes, env and downward API still to be resolved.
pub struct Preparing {
    pub pod: Pod,
}

/// Prepared; its images are being made present, one container at a time.
pub struct Pulling {
    pub pod: Pod,
}

/// One container's image to make present (`Pulling::images`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePull {
    pub container: String,
    /// `spec.containers{c}` / `spec.initContainers{c}`: where kubelet's events point.
    pub field_path: String,
    pub image: String,
    pub policy: PullPolicy,
}

/// What a pull did (kubelet's `Pulled` event says which).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pulled {
    /// Fetched from the registry: its size, and how long it took.
    Fetched { size: u64, took: Duration },
    /// Already in the store, and the policy keeps it.
    Present,
}

/// Why a container's image is not there: the container waits with `reason()` and `message()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullFailure {
    /// The pull failed (`ErrImagePull`; the message is the pull error).
    #[error("{0}")]
    ErrImagePull(String),
    /// Not present and imagePullPolicy is Never (`ErrImageNeverPull`).
    #[error("Container image \"{0}\" is not present with pull policy of Never")]
    NeverPull(String),
    /// An image reference that cannot be parsed (`InvalidImageName`).
    #[error("Failed to apply default image tag \"{image}\": {why}")]
    InvalidImageName { image: String, why: String },
}

impl PullFailure {
    /// The container's waiting reason, as kubelet's.
    pub fn reason(&self) -> &'static str {
        match self {
            PullFailure::ErrImagePull(_) => "ErrImagePull",
            PullFailure::NeverPull(_) => "ErrImageNeverPull",
            PullFailure::InvalidImageName { .. } => "InvalidImageName",
        }
    }
}

/// To be handed to the runtime, after its `old` runtime pods are gone.
pub struct Starting {
    pub pod: Pod,
    pub source: Source,
    pub old: Vec<PodEntry>,
}

/// A runtime pod exists for it.
pub struct Running {
    pub entry: PodEntry,
}

/// Runtime pods being stopped and removed.
pub struct Terminating {
    pub entries: Vec<PodEntry>,
}

/// Nothing of the pod is left in the runtime.
pub struct Gone;

impl Preparing {
    pub fn new(pod: Pod) -> Preparing {
        Preparing { pod }
    }

    /// Prepared: `ready` is the pod with its env resolved and its volumes in place.
    pub fn prepared(self, ready: Pod) -> Pulling {
        Pulling { pod: ready }
    }
}

impl Pulling {
    /// The containers' images in the order kubelet ensures them (init containers first).
    pub fn images(&self) -> Vec<ImagePull> {
        let Some(spec) = self.pod.spec.as_ref() else {
            return vec![];
        };
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| ("initContainers", c));
        let main = spec.containers.iter().map(|c| ("containers", c));
        init.chain(main)
            .filter_map(|(list, c)| {
                let image = c.image.clone().filter(|i| !i.is_empty())?;
                Some(ImagePull {
                    container: c.name.clone(),
                    field_path: format!("spec.{list}{{{}}}", c.name),
                    policy: PullPolicy::from_k8s(c.image_pull_policy.as_deref(), &image),
                    image,
                })
            })
            .collect()
    }

    /// Make one container's image present (blocking: the registry is fetched from here).
    pub fn pull(&self, rt: &Runtime, p: &ImagePull) -> Result<Pulled, PullFailure> {
        let t0 = Instant::now();
        let r = ensure_image_reporting(&rt.store, rt.puller(), &p.image, p.policy);
        if let Ok(e) = &r {
            rt.store.touch(&e.record.id);
        }
        match r {
            Ok(e) if e.pulled => Ok(Pulled::Fetched {
                size: e.record.size,
                took: t0.elapsed(),
            }),
            Ok(_) => Ok(Pulled::Present),
            Err(EnsureError::NeverPull(_)) => Err(PullFailure::NeverPull(p.image.clone())),
            Err(EnsureError::Reference(e)) => Err(PullFailure::InvalidImageName {
                image: p.image.clone(),
                why: e.to_string(),
            }),
            Err(e) => Err(PullFailure::ErrImagePull(e.to_string())),
        }
    }

    /// Every image is present: the pod goes on to the runtime, which is told to use the images
    /// in the store (IfNotPresent), so an `Always` image is not fetched a second time.
    pub fn pulled(self, source: Source, old: Vec<PodEntry>) -> Starting {
        let mut pod = self.pod;
        if let Some(spec) = pod.spec.as_mut() {
            let init = spec.init_containers.iter_mut().flatten();
            for c in init.chain(spec.containers.iter_mut()) {
                c.image_pull_policy = Some("IfNotPresent".into());
            }
        }
        Starting { pod, source, old }
    }
}

impl Starting {
    /// Stop the old runtime pods, then run the pod (blocking: the runtime pulls and plans
    /// synchronously). A refusal is the runtime's; the caller backs off (`restart_due`).
    pub fn start(self, rt: &Runtime) -> Result<Running, RuntimeError> {
        let Starting { pod, source, old } = self;
        let Gone = Terminating { entries: old }.stop(rt, |e| {
            if matches!(source, Source::File { .. }) {
                replacing(e);
            }
        });
        let r = match &source {
            Source::File { path, hash } => rt.run_pod(&pod, Some(path), hash),
            Source::Api { .. } => rt.run_pod(&pod, None, ""),
        };
        match (&r, &source) {
            (Ok(e), Source::File { path, .. }) => info!(
                "started pod k8s_{} ({}/{}) from {}",
                e.plan.uuid,
                e.plan.namespace,
                e.plan.name,
                path.display()
            ),
            (Ok(e), Source::Api { namespace, name }) => info!(
                "kubelet: started pod k8s_{} for {namespace}/{name}",
                e.plan.uuid
            ),
            (Err(e), Source::File { path, .. }) => {
                warn!("pod from {} refused: {e}", path.display())
            }
            (Err(e), Source::Api { namespace, name }) => {
                warn!("kubelet: pod {namespace}/{name} refused: {e}")
            }
        }
        r.map(|entry| Running { entry })
    }
}

/// Whether `image` is in the node's store (kubelet's "already present on machine").
pub fn has_image(rt: &Runtime, image: &str) -> bool {
    Reference::parse(image)
        .ok()
        .is_some_and(|r| rt.store.resolve(&r.to_string()).is_ok())
}

/// Whether no container of the runtime pod ever started (refused, or a sandbox failure such as
/// CNI ADD or a mount failing in the supervisor before the first container).
pub fn never_ran(e: &PodEntry) -> bool {
    e.status
        .init_containers
        .iter()
        .chain(e.status.containers.iter())
        .all(|c| c.started_at.is_none() && c.state == "waiting")
}

/// The log line of an old runtime pod stopped for its replacement.
pub fn replacing(e: &PodEntry) {
    info!("replacing pod k8s_{}: stopping it", e.plan.uuid);
}

impl Running {
    /// Whether the runtime pod has to be started again: its supervisor died without finishing
    /// (crash, or the agent died between planning and spawning) and it must keep running
    /// (restartPolicy Always), its sandbox failed before any container ran (any policy: the
    /// pod is still Pending), or the runtime refused it (every refusal may pass: a volume type
    /// supported later, the network coming up); at least `BackoffPolicy::RESTART` after the
    /// failure (callers add their growing back-off: `needs_backoff`). `Some` carries the log
    /// line's words ("pod k8s_<uuid> (<name>) is <state> (<reason>): replacing it").
    pub fn restart_due(&self) -> Option<String> {
        let e = &self.entry;
        let since =
            |t: Option<i64>| BackoffPolicy::RESTART.elapsed_since(t.unwrap_or(e.plan.created_at));
        let due = match e.status.state {
            _ if e.alive => false,
            PodState::Preparing | PodState::Running | PodState::Stopping => since(None),
            PodState::Exited if never_ran(e) => since(e.status.finished_at),
            PodState::Exited => {
                e.plan.restart_policy == RestartPolicy::Always
                    && e.status.phase != "Succeeded"
                    && since(e.status.finished_at)
            }
            PodState::Refused => since(None),
        };
        due.then(|| {
            format!(
                "pod k8s_{} ({}) is {} ({}): replacing it",
                e.plan.uuid,
                e.plan.name,
                e.status.state.as_str(),
                e.status.reason.as_deref().unwrap_or("supervisor gone")
            )
        })
    }

    /// Whether a replacement is for a pod that never got a container running (refused, or its
    /// sandbox failed): such retries grow (`BackoffPolicy::REFUSED`) instead of repeating
    /// every 10 s.
    pub fn needs_backoff(&self) -> bool {
        let e = &self.entry;
        e.status.state == PodState::Refused || (e.status.state == PodState::Exited && never_ran(e))
    }

    /// To be replaced: it stops as the replacement's old pod (`Starting::old`).
    pub fn replace(self) -> PodEntry {
        self.entry
    }
}

impl Terminating {
    /// Stop and remove every runtime pod (within its grace period); `before` runs before each.
    pub fn stop(self, rt: &Runtime, before: impl FnMut(&PodEntry)) -> Gone {
        self.stop_within(rt, None, before)
    }

    /// `stop` with a grace period of its own (a deletion's, less what preStop hooks took).
    pub fn stop_within(
        self,
        rt: &Runtime,
        grace: Option<Duration>,
        mut before: impl FnMut(&PodEntry),
    ) -> Gone {
        for e in &self.entries {
            before(e);
            if let Err(e2) = rt.remove_within(e, grace) {
                warn!("failed to remove pod k8s_{}: {e2}", e.plan.uuid);
            }
        }
        Gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_backoff_doubles_to_its_maximum() {
        let p = BackoffPolicy::PREPARE;
        let mut d = Duration::ZERO;
        let mut seen = vec![];
        for _ in 0..6 {
            d = p.next_delay(d);
            seen.push(d.as_secs());
        }
        assert_eq!(seen, [1, 2, 4, 8, 10, 10]);
        assert_eq!(
            BackoffPolicy::RESTART.next_delay(Duration::ZERO).as_secs(),
            10
        );
    }

    #[test]
    fn image_pull_and_refusal_backoffs_are_kubelets() {
        for p in [BackoffPolicy::IMAGE_PULL, BackoffPolicy::REFUSED] {
            let mut d = Duration::ZERO;
            let seen: Vec<u64> = (0..7)
                .map(|_| {
                    d = p.next_delay(d);
                    d.as_secs()
                })
                .collect();
            assert_eq!(seen, [10, 20, 40, 80, 160, 300, 300]);
        }
        let mut b = Backoff::default();
        b.failed(BackoffPolicy::IMAGE_PULL);
        b.failed(BackoffPolicy::IMAGE_PULL);
        assert_eq!(b.delay(), Duration::from_secs(20));
        assert!(b.retry_at().is_some() && !b.ready());
    }

    #[test]
    fn pulling_lists_init_containers_first_and_pulls_present_images_no_more() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "i", "image": "r.example/i:1"}],
                "containers": [
                    {"name": "a", "image": "r.example/a:latest"},
                    {"name": "b", "image": "r.example/b:1", "imagePullPolicy": "Never"}
                ]
            }
        }))
        .expect("pod");
        let p = Preparing::new(pod).prepared(Pod::default());
        assert!(p.images().is_empty(), "no spec, no images");
        let pulling = Pulling {
            pod: serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {
                    "initContainers": [{"name": "i", "image": "r.example/i:1"}],
                    "containers": [
                        {"name": "a", "image": "r.example/a:latest"},
                        {"name": "b", "image": "r.example/b:1", "imagePullPolicy": "Never"}
                    ]
                }
            }))
            .expect("pod"),
        };
        let imgs = pulling.images();
        let got: Vec<(&str, &str, PullPolicy)> = imgs
            .iter()
            .map(|i| (i.container.as_str(), i.field_path.as_str(), i.policy))
            .collect();
        assert_eq!(
            got,
            [
                ("i", "spec.initContainers{i}", PullPolicy::IfNotPresent),
                ("a", "spec.containers{a}", PullPolicy::Always),
                ("b", "spec.containers{b}", PullPolicy::Never),
            ]
        );
        // Once pulled, the runtime is told to use the store's images.
        let starting = pulling.pulled(
            Source::Api {
                namespace: "default".into(),
                name: "p".into(),
            },
            vec![],
        );
        let spec = starting.pod.spec.expect("spec");
        let policies: Vec<Option<String>> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .map(|c| c.image_pull_policy.clone())
            .collect();
        assert!(policies
            .iter()
            .all(|p| p.as_deref() == Some("IfNotPresent")));
    }

    #[test]
    fn a_pull_failure_says_why_as_kubelet() {
        let f = PullFailure::NeverPull("r.example/b:1".into());
        assert_eq!(f.reason(), "ErrImageNeverPull");
        assert_eq!(
            f.to_string(),
            "Container image \"r.example/b:1\" is not present with pull policy of Never"
        );
        assert_eq!(
            PullFailure::ErrImagePull("x".into()).reason(),
            "ErrImagePull"
        );
    }

    #[test]
    fn backoff_waits_then_resets() {
        let mut b = Backoff::default();
        assert!(b.ready());
        b.failed(BackoffPolicy::PREPARE);
        assert!(!b.ready());
        b.reset();
        assert!(b.ready());
    }

    #[test]
    fn restart_waits_from_the_failure() {
        assert!(BackoffPolicy::RESTART.elapsed_since(now_secs() - 10));
        assert!(!BackoffPolicy::RESTART.elapsed_since(now_secs() - 9));
    }
}
