//! `rktup rkt ...` (also reached through a link named `rkt`), `rktup logs`, and the
//! hidden per-pod stage1 supervisor.

use clap::{Args, Subcommand};

/// The seed's troubleshooting commands: `rkt list`, `rkt status`, `rkt image list`.
#[derive(Debug, Args)]
pub struct RktArgs {
    /// Endpoint of the agent's rkt api-service.
    #[arg(long, global = true, default_value = "localhost:15441")]
    pub rkt_api_endpoint: String,
    #[command(subcommand)]
    pub command: RktCommand,
}

#[derive(Debug, Subcommand)]
pub enum RktCommand {
    /// List pods.
    List,
}

/// `rktup logs k8s_<uuid>`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The pod's unit name, `k8s_<uuid>`.
    pub unit: String,
}

/// Hidden: the per-pod stage1 supervisor that the agent re-executes.
#[derive(Debug, Args)]
pub struct Stage1Args {
    /// The pod's directory.
    pub pod_dir: std::path::PathBuf,
}

pub fn run_rkt(_args: RktArgs) -> anyhow::Result<()> {
    anyhow::bail!("the rkt runtime commands are not implemented yet")
}

pub fn run_logs(_args: LogsArgs) -> anyhow::Result<()> {
    anyhow::bail!("pod logs are not implemented yet")
}

pub fn run_stage1(_args: Stage1Args) -> anyhow::Result<()> {
    anyhow::bail!("the stage1 supervisor is not implemented yet")
}
