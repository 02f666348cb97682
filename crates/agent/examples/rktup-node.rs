//! The node side of `rktup` alone (`agent`, `rkt`, `logs` and the internal `stage1`), dispatched
//! as `rktup` does, without the cluster commands and their cloud SDKs. It lets this crate's
//! integration tests run without building the whole `rktup` binary:
//!
//! `cargo build -p rktup-agent --example rktup-node` then
//! `RKTUP_BIN=$CARGO_TARGET_DIR/debug/examples/rktup-node cargo test -p rktup-agent`.

use clap::{Parser, Subcommand};
use rktup_logging::Component;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "rktup", version)]
struct NodeCli {
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    Agent(Box<rktup_agent::cli::AgentArgs>),
    Rkt(rktup_runtime::cli::RktArgs),
    Logs(rktup_runtime::cli::LogsArgs),
    #[command(hide = true)]
    Stage1(rktup_runtime::cli::Stage1Args),
}

fn main() -> ExitCode {
    // Invoked through a link named `rkt`: the rkt commands, as rktup does.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = args.first().and_then(|a| {
        std::path::Path::new(a)
            .file_name()
            .map(|n| n.to_os_string())
    });
    if invoked_as.as_deref() == Some(std::ffi::OsStr::new("rkt")) {
        args.insert(1, "rkt".into());
    }
    // The log subscribers as `rktup` installs them (src/main.rs).
    let result = match NodeCli::parse_from(args).command {
        NodeCommand::Agent(a) => {
            rktup_logging::init(Component::Agent, a.verbosity);
            rktup_agent::cli::run_agent(*a)
        }
        NodeCommand::Rkt(a) => {
            rktup_logging::init(Component::Cli, 2);
            rktup_runtime::cli::run_rkt(a)
        }
        NodeCommand::Logs(a) => rktup_runtime::cli::run_logs(a),
        NodeCommand::Stage1(a) => {
            if let Some(v) = rktup_runtime::cli::stage1_verbosity(&a) {
                rktup_logging::init(Component::Stage1, v);
            }
            rktup_runtime::cli::run_stage1(a)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
