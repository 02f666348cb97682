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
    #[error("{0}")]
    Other(String),
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
