//! Runs the control plane in the foreground, like `rktup controlplane`
//! (handy when working on this crate alone):
//! `cargo run -p rktup-controlplane --example serve -- --data-dir /tmp/cp`.

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: rktup_controlplane::cli::ControlPlaneArgs,
}

fn main() -> anyhow::Result<()> {
    rktup_controlplane::cli::run_controlplane(Cli::parse().args)
}
