//! The pod lifecycle both pod sources share (static pods from `--pod-manifest-path`, `sync`;
//! API pods from the pod watch, `kubelet::pods`), in krustlet's shape: each state is a type and a
//! transition is a method that consumes one state and returns the next, so only the transitions
//! written here exist (an illegal one does not compile):
//!
//! ```text
//! Preparing ──prepared──▶ Pulling ──pulls_known──▶ Starting ──start──▶ Running
//!     │                                                │                  │
//!     └──blocked──▶ (Backoff, PREPARE) ◀──refused──────┘     restart_due ─┤ (Backoff, RESTART)
//!                                                                         ▼
//!                                   Gone ◀──stop── Terminating ◀── replaced / deleted / gone
//! ```
//!
//! - `Preparing`: what the pod takes from the API is resolved (`kubelet::prepare`: volumes, env,
//!   downward API); static pods have nothing to prepare and start in `Starting`.
//! - `Pulling`: the pod's images are known (the runtime pulls inside `run_pod`; the API loop
//!   records kubelet's Pulling/Pulled events around it).
//! - `Starting`: the old runtime pods of it are stopped first (hostPorts, hostPath files and
//!   names stay unambiguous, as with kubelet), then the pod goes to the runtime.
//! - `Running`: a runtime pod exists; `restart_due` says when it has to be replaced.
//! - `Terminating` → `Gone`: runtime pods are stopped and removed.
//!
//! One back-off policy type (`BackoffPolicy`) for both sources: `RESTART` (10 s after a refusal
//! for a passing reason or a lost supervisor, read from the runtime's timestamps so it survives
//! an agent restart) and `PREPARE` (1 s doubling to 10 s while a pod cannot be prepared, per pod
//! in a `Backoff`).
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
//! May import: the runtime (`rktup_runtime`), `log`. Nothing from `sync` or `kubelet`.

use crate::log::log;
use k8s_openapi::api::core::v1::Pod;
use rktup_runtime::pod::{PodState, RestartPolicy};
use rktup_runtime::runtime::{PodEntry, Runtime, RuntimeError};
use rktup_runtime::util::now_secs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

/// Ready for the runtime; its images are about to be pulled (or found).
pub struct Pulling {
    pub pod: Pod,
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
    /// The images to pull are known (and reported); the runtime pulls them while starting.
    pub fn pulls_known(self, source: Source, old: Vec<PodEntry>) -> Starting {
        Starting {
            pod: self.pod,
            source,
            old,
        }
    }
}

impl Starting {
    /// A static pod: nothing to prepare.
    pub fn from_file(pod: Pod, path: PathBuf, hash: String, old: Vec<PodEntry>) -> Starting {
        Starting {
            pod,
            source: Source::File { path, hash },
            old,
        }
    }

    /// Stop the old runtime pods, then run the pod (blocking: the runtime pulls and plans
    /// synchronously). A refusal is the runtime's; the caller backs off (`restart_due`).
    pub fn start(self, rt: &Runtime, verbosity: u8) -> Result<Running, RuntimeError> {
        let Starting { pod, source, old } = self;
        let Gone = Terminating { entries: old }.stop(rt, |e| {
            if matches!(source, Source::File { .. }) {
                replacing(verbosity, e);
            }
        });
        let r = match &source {
            Source::File { path, hash } => rt.run_pod(&pod, Some(path), hash),
            Source::Api { .. } => rt.run_pod(&pod, None, ""),
        };
        match (&r, &source) {
            (Ok(e), Source::File { path, .. }) if verbosity >= 2 => log(&format!(
                "started pod k8s_{} ({}/{}) from {}",
                e.plan.uuid,
                e.plan.namespace,
                e.plan.name,
                path.display()
            )),
            (Ok(e), Source::Api { namespace, name }) if verbosity >= 2 => log(&format!(
                "kubelet: started pod k8s_{} for {namespace}/{name}",
                e.plan.uuid
            )),
            (Ok(_), _) => {}
            (Err(e), Source::File { path, .. }) => {
                log(&format!("pod from {} refused: {e}", path.display()))
            }
            (Err(e), Source::Api { namespace, name }) => {
                log(&format!("kubelet: pod {namespace}/{name} refused: {e}"))
            }
        }
        r.map(|entry| Running { entry })
    }
}

/// The log line of an old runtime pod stopped for its replacement (verbosity 2).
pub fn replacing(verbosity: u8, e: &PodEntry) {
    if verbosity >= 2 {
        log(&format!("replacing pod k8s_{}: stopping it", e.plan.uuid));
    }
}

impl Running {
    /// Whether the runtime pod has to be started again: its supervisor died without finishing
    /// (crash, or the agent died between planning and spawning) and it must keep running
    /// (restartPolicy Always), or it was refused for a reason that may pass (image pull, network
    /// not ready); at least `BackoffPolicy::RESTART` after the failure. `Some` carries the log
    /// line's words ("pod k8s_<uuid> (<name>) is <state> (<reason>): replacing it").
    pub fn restart_due(&self) -> Option<String> {
        let e = &self.entry;
        let since =
            |t: Option<i64>| BackoffPolicy::RESTART.elapsed_since(t.unwrap_or(e.plan.created_at));
        let due = match e.status.state {
            _ if e.alive => false,
            PodState::Preparing | PodState::Running | PodState::Stopping => since(None),
            PodState::Exited => {
                e.plan.restart_policy == RestartPolicy::Always
                    && e.status.phase != "Succeeded"
                    && since(e.status.finished_at)
            }
            PodState::Refused => {
                matches!(
                    e.status.reason.as_deref(),
                    Some("ErrImagePull" | "NetworkNotReady")
                ) && since(None)
            }
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

    /// To be replaced: it stops as the replacement's old pod (`Starting::old`).
    pub fn replace(self) -> PodEntry {
        self.entry
    }
}

impl Terminating {
    /// Stop and remove every runtime pod (within its grace period); `before` runs before each.
    pub fn stop(self, rt: &Runtime, mut before: impl FnMut(&PodEntry)) -> Gone {
        for e in &self.entries {
            before(e);
            if let Err(e2) = rt.remove(e) {
                log(&format!("failed to remove pod k8s_{}: {e2}", e.plan.uuid));
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
