//! The provider interface: what `rktup <provider> up|down|status` and `rktup render` need from
//! Compute Engine, EC2 or this machine. Like kind's provider interface, each home implements it
//! in its own crate; what they share (plans, the state directory, rendering inputs) is here.

pub mod boot;
pub mod engine;
pub mod kubeconfig;
pub mod plan;
pub mod progress;
pub mod state;

pub use engine::{CloudError, UpError};
pub use plan::{Plan, PlanStep, PlannedResource};
pub use state::{StateDir, StateError};

use rktup_config::ClusterSettings;
use rktup_render::{BinaryRef, MasterEndpoint};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("`rktup {provider} {action}` is not available yet: {reason}")]
    NotYet {
        provider: &'static str,
        action: &'static str,
        reason: &'static str,
    },
    #[error(transparent)]
    State(#[from] StateError),
    /// `up` stopped: at which node, with the cloud's own error code and message.
    #[error(transparent)]
    Up(#[from] UpError),
    /// A cloud call outside `up`'s graph (`down`, `status`).
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// The provider's async runtime could not start (threads, file descriptors: the machine's
    /// limits).
    #[error("failed to start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// `down` ran but some resources are still there; each line names one with the cloud's
    /// own error. The state directory (the cluster's keys) is kept for the next `down`.
    #[error(
        "failed to delete {} resource(s) of cluster {cluster} ({deleted} deleted); run `rktup {provider} down` again or delete them by hand:\n  {}\nthe state directory {} (the cluster's CA and admin keys) is kept until every resource is gone",
        failed.len(),
        failed.join("\n  "),
        state_dir.display()
    )]
    DownIncomplete {
        provider: &'static str,
        cluster: String,
        deleted: usize,
        failed: Vec<String>,
        state_dir: PathBuf,
    },
    #[error("failed to remove the state directory {} (the cluster's keys): {source}", path.display())]
    RemoveState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write {what} as JSON: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A step on this machine (a local cluster's network, processes, files, its API) failed:
    /// what was being done, and the error met, kept as the source.
    #[error("{step}: {source}")]
    Step {
        step: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The command changes this machine's network namespaces, bridges, mounts or cgroups.
    #[error(
        "`rktup {provider} {action}` must run as root: {why} (try: sudo rktup {provider} {action})"
    )]
    NotRoot {
        provider: &'static str,
        action: String,
        why: &'static str,
    },
    /// No cluster of this name has a record on this machine; `hint` says what to run.
    #[error("no {provider} cluster \"{name}\"{}; {hint}", in_dir.as_ref().map(|d| format!(" (no record in {})", d.display())).unwrap_or_default())]
    NoCluster {
        provider: &'static str,
        name: String,
        in_dir: Option<PathBuf>,
        hint: String,
    },
    /// An input (setting, flag, file, kubeconfig context) that cannot be used: which, the value
    /// given, and what would do.
    #[error("{input} {value}: {expected}")]
    Invalid {
        input: String,
        value: String,
        expected: String,
    },
    /// A process of the cluster did not come up: which, what it did not do, and its log.
    #[error("{component} did not {what}; see {}", log.display())]
    NotStarted {
        component: String,
        what: String,
        log: PathBuf,
    },
    /// `up` of an existing cluster with a cluster file that differs from the one it was made
    /// with (kind and k3d refuse to change an existing cluster, too).
    #[error(
        "cluster \"{cluster}\" exists and was made with a different cluster file: {} differ{}; run `rktup {provider} up --name {cluster}` without --config to start it as it was made, or `rktup {provider} down --name {cluster}` first to make it anew",
        keys.join(", "),
        if keys.len() == 1 { "s" } else { "" }
    )]
    ClusterFileChanged {
        provider: &'static str,
        cluster: String,
        /// The cluster file's keys whose values differ (`nodes[1].labels`, `registries.mirrors`).
        keys: Vec<String>,
    },
    /// `status` of a cluster some of whose processes are not running (which ones).
    #[error("cluster \"{cluster}\" is not fully running (not running: {}); `rktup {provider} up --name {cluster}` restarts what is missing", missing.join(", "))]
    NotRunning {
        provider: &'static str,
        cluster: String,
        missing: Vec<String>,
    },
    /// `down` of a cluster on this machine ran but left these behind (each with its error); the
    /// next `down` tries them again.
    #[error("{} thing(s) of cluster \"{cluster}\" could not be deleted:\n  {}\nrun `rktup {provider} down --name {cluster}` again once fixed", left.len(), left.join("\n  "))]
    NotDeleted {
        provider: &'static str,
        cluster: String,
        left: Vec<String>,
    },
}

impl ProviderError {
    /// [`ProviderError::Step`]: `step` (what was being done) failed with `source`.
    pub fn step(
        step: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ProviderError {
        ProviderError::Step {
            step: step.into(),
            source: source.into(),
        }
    }
}

impl ProviderError {
    /// For `Runtime::build()`'s error.
    pub fn runtime(e: std::io::Error) -> ProviderError {
        ProviderError::Runtime(e)
    }
}

/// After a complete `down`: the cluster's state directory (its `pki/` with the CA and admin
/// keys) is removed, so a deleted cluster leaves no credentials behind (issue 16), unless
/// `keep` (`--keep-state`), which is said.
pub fn forget_state(state: &StateDir, keep: bool) -> Result<(), ProviderError> {
    if keep {
        eprintln!(
            "kept the state directory {} (--keep-state): it holds the cluster's CA and admin keys",
            state.path.display()
        );
        return Ok(());
    }
    if state.path.exists() {
        std::fs::remove_dir_all(&state.path).map_err(|source| ProviderError::RemoveState {
            path: state.path.clone(),
            source,
        })?;
    }
    Ok(())
}

#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Don't wait for the API server to answer.
    pub no_wait: bool,
    /// How long to wait for readiness.
    pub wait: Option<Duration>,
    /// The kubeconfig file to write the context into (else KUBECONFIG, else ~/.kube/config).
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Stay attached; Ctrl-C tears the cluster down (local clusters).
    pub foreground: bool,
    /// Registries the nodes reach over plain HTTP (local clusters).
    pub insecure_registries: Vec<String>,
}

/// How `down` deletes.
#[derive(Debug, Clone, Default)]
pub struct DownOptions {
    /// Stop every pod with its grace period (local clusters; default: killed at once, since a
    /// cluster being deleted needs no graceful shutdown).
    pub graceful: bool,
    /// The kubeconfig file to remove the context from (else the one `up` wrote, else
    /// KUBECONFIG, else ~/.kube/config).
    pub kubeconfig: Option<std::path::PathBuf>,
}

/// One home for clusters.
pub trait ClusterProvider {
    fn settings(&self) -> &ClusterSettings;

    /// How nodes reach the master's API server.
    fn master_endpoint(&self) -> MasterEndpoint;

    /// Where nodes would fetch the rktup binary with this sha256, before anything is staged.
    fn planned_binary(&self, sha256: &str) -> BinaryRef;

    /// The ordered resources `up` would create; resources in one step are independent.
    fn plan(&self) -> Plan;

    /// Creates what is missing and waits per `options`.
    fn up(&self, options: &UpOptions) -> Result<(), ProviderError>;

    /// Deletes everything the cluster made.
    fn down(&self) -> Result<(), ProviderError>;

    /// [`ClusterProvider::down`] with options; providers without any take the default.
    fn down_with(&self, options: &DownOptions) -> Result<(), ProviderError> {
        let _ = options;
        self.down()
    }

    /// Prints the cluster's resources and their states.
    fn status(&self) -> Result<(), ProviderError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_down_names_each_resource_and_the_kept_keys() {
        let e = ProviderError::DownIncomplete {
            provider: "aws",
            cluster: "demo".into(),
            deleted: 7,
            failed: vec![
                "instance i-1 demo-master: DependencyViolation: in use".into(),
                "vpc vpc-2 demo: DependencyViolation: has a gateway".into(),
            ],
            state_dir: PathBuf::from("/state/aws-demo"),
        };
        assert_eq!(
            e.to_string(),
            "failed to delete 2 resource(s) of cluster demo (7 deleted); run `rktup aws down` again or delete them by hand:\n  \
             instance i-1 demo-master: DependencyViolation: in use\n  \
             vpc vpc-2 demo: DependencyViolation: has a gateway\n\
             the state directory /state/aws-demo (the cluster's CA and admin keys) is kept until every resource is gone"
        );
    }

    #[test]
    fn forget_state_removes_the_keys_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir {
            path: dir.path().join("gce-demo"),
        };
        std::fs::create_dir_all(state.pki_dir()).unwrap();
        std::fs::write(state.pki_dir().join("ca.key"), "k").unwrap();
        forget_state(&state, true).unwrap();
        assert!(state.pki_dir().join("ca.key").is_file());
        forget_state(&state, false).unwrap();
        assert!(!state.path.exists());
        // Nothing there: nothing to do.
        forget_state(&state, false).unwrap();
    }
}
