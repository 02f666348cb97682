//! Command-line entry points the thin `rktup` binary dispatches to.

use clap::Args;

/// `rktup agent`: the node agent (kubelet + rkt api-service) in the foreground.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Directory holding the agent's state (images, pods).
    #[arg(long, default_value = "/var/lib/rktup/agent")]
    pub root_dir: std::path::PathBuf,
    /// Static pod manifests (kubelet's --pod-manifest-path; the seed's --config).
    #[arg(long, alias = "config", default_value = "/etc/kubernetes/manifests")]
    pub pod_manifest_path: std::path::PathBuf,
}

pub fn run_agent(_args: AgentArgs) -> anyhow::Result<()> {
    anyhow::bail!("the node agent is not implemented yet")
}
