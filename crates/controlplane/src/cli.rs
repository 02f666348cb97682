//! `rktup controlplane`.

use clap::Args;

#[derive(Debug, Args)]
pub struct ControlPlaneArgs {
    /// Where the store, PKI and admin.kubeconfig live.
    #[arg(long)]
    pub data_dir: std::path::PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: String,
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
}

pub fn run_controlplane(_args: ControlPlaneArgs) -> anyhow::Result<()> {
    anyhow::bail!("the embedded control plane is not implemented yet")
}
