//! rktup: the thin command-line front. Every room of the architecture lives in its own crate;
//! this file only parses arguments and dispatches.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "rktup", version, about = "Kubernetes clusters with rkt-style pods", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node agent (kubelet + rkt api-service) in the foreground.
    Agent(rktup_agent::cli::AgentArgs),
    /// rkt's troubleshooting commands (`rkt list`, `rkt status`, `rkt image list`).
    Rkt(rktup_runtime::cli::RktArgs),
    /// Print a pod's logs by its unit name `k8s_<uuid>`.
    Logs(rktup_runtime::cli::LogsArgs),
    /// Run the embedded control plane in the foreground.
    Controlplane(rktup_controlplane::cli::ControlPlaneArgs),
    /// Per-pod supervisor re-executed by the agent (internal).
    #[command(hide = true)]
    Stage1(rktup_runtime::cli::Stage1Args),
}

/// A link named `rkt` to this binary behaves as `rktup rkt`, so the seed's commands work verbatim.
fn args() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = args.first().and_then(|a| {
        std::path::Path::new(a)
            .file_name()
            .map(|n| n.to_os_string())
    });
    if invoked_as.as_deref() == Some(std::ffi::OsStr::new("rkt")) {
        args.insert(1, "rkt".into());
    }
    args
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse_from(args());
    let result = match cli.command {
        Command::Agent(a) => rktup_agent::cli::run_agent(a),
        Command::Rkt(a) => rktup_runtime::cli::run_rkt(a),
        Command::Logs(a) => rktup_runtime::cli::run_logs(a),
        Command::Controlplane(a) => rktup_controlplane::cli::run_controlplane(a),
        Command::Stage1(a) => rktup_runtime::cli::run_stage1(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
