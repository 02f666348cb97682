//! rktup: the thin command-line front. Every room of the architecture lives in its own crate;
//! this file parses arguments, picks the crate that does the work and prints its answer.

//!
//! Cargo features choose what a build carries (root Cargo.toml, `[features]`): the default is
//! everything; `--no-default-features --features node` is the small build nodes download.
//! The cluster commands are compiled with the `local` feature, the node-side ones with `node`
//! and `controlplane`; a command left out of a build says which feature has it
//! ([`left_out`]).

#[cfg(feature = "local")]
mod output;

#[cfg(feature = "local")]
use clap::{Args, CommandFactory};
use clap::{Parser, Subcommand};
#[cfg(feature = "local")]
use rktup_config::{
    AwsTag, ClusterSettings, GceTag, GlobalArgs, LocalTag, Provider, ProviderTag, SettingFlags,
};
use rktup_logging::Component;
#[cfg(feature = "local")]
use rktup_provider::boot::{
    binary_for_rendering, pki_for_rendering, render_boot, render_boot_with, PkiOrigin,
};
#[cfg(feature = "local")]
use rktup_provider::{ClusterProvider, UpOptions};
#[cfg(feature = "local")]
use rktup_render::{Role, Templates};
#[cfg(feature = "local")]
use std::path::PathBuf;
use std::process::ExitCode;

#[cfg(feature = "local")]
#[derive(Debug, Parser)]
#[command(
    name = "rktup",
    version,
    about = "Create and destroy Kubernetes clusters whose nodes run rkt-style pods",
    long_about = "rktup replaces cluster/kube-up.sh and hack/local-up-cluster.sh in their rktnetes form.\n\
                  It reads the same settings (KUBE_OS_DISTRIBUTION, KUBE_RKT_STAGE1_IMAGE, NUM_NODES, ...)\n\
                  from flags, the environment or a --config file, in that order of precedence.",
    after_help = "Node-side commands (see `rktup <command> --help`):\n  \
                  agent          run the node agent (kubelet + rkt api-service) in the foreground\n  \
                  rkt            rkt's commands: list, status, image list (also as a link named `rkt`)\n  \
                  logs           print a pod's logs by its unit name k8s_<uuid>\n  \
                  controlplane   run the embedded control plane in the foreground"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    /// Directory of tera templates overriding the embedded ones (same relative paths)
    #[arg(long, global = true, value_name = "DIR")]
    templates: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[cfg(feature = "local")]
#[derive(Debug, Subcommand)]
enum Command {
    /// Clusters on Google Compute Engine (kube-up's GCE path).
    Gce(ProviderCommand<GceTag>),
    /// Clusters on Amazon EC2.
    Aws(ProviderCommand<AwsTag>),
    /// A cluster on this machine (local-up-cluster.sh's replacement).
    Local(ProviderCommand<LocalTag>),
    /// Print or write exactly what a master or node boots with.
    Render {
        #[command(subcommand)]
        provider: RenderCommand,
    },
    /// Show every resolved setting, its value and where it came from.
    Config {
        #[command(subcommand)]
        provider: ConfigCommand,
    },
    /// Print rktup's version.
    Version,
    /// Print a shell completion script.
    Completion { shell: clap_complete::Shell },
}

/// Node-side commands: parsed apart from the cluster commands because they keep kubelet's and
/// rkt's own flags (the seed's `--config=/etc/kubernetes/manifests`, `--v`), which would collide
/// with rktup's global options.
const NODE_COMMANDS: [&str; 5] = ["agent", "rkt", "logs", "controlplane", "stage1"];

#[derive(Debug, Parser)]
#[command(name = "rktup", version)]
struct NodeCli {
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Run the node agent (kubelet + rkt api-service) in the foreground.
    #[cfg(feature = "node")]
    Agent(Box<rktup_agent::cli::AgentArgs>),
    /// rkt's troubleshooting commands (`rkt list`, `rkt status`, `rkt image list`).
    #[cfg(feature = "node")]
    Rkt(rktup_runtime::cli::RktArgs),
    /// Print a pod's logs by its unit name `k8s_<uuid>`.
    #[cfg(feature = "node")]
    Logs(rktup_runtime::cli::LogsArgs),
    /// Run the embedded control plane in the foreground.
    #[cfg(feature = "controlplane")]
    Controlplane(rktup_controlplane::cli::ControlPlaneArgs),
    /// Per-pod supervisor re-executed by the agent (internal).
    #[command(hide = true)]
    #[cfg(feature = "node")]
    Stage1(rktup_runtime::cli::Stage1Args),
}

#[cfg(feature = "local")]
#[derive(Debug, Args)]
struct ProviderCommand<P: ProviderTag + Send + Sync + 'static> {
    #[command(flatten)]
    settings: SettingFlags<P>,
    #[command(subcommand)]
    action: Action,
}

#[cfg(feature = "local")]
#[derive(Debug, Subcommand)]
enum Action {
    /// Create the cluster, or finish creating it.
    Up {
        /// Print the plan and the rendered user-data; make no call and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: print private keys and tokens instead of `<redacted: …>` placeholders.
        #[arg(long, requires = "dry_run")]
        show_secrets: bool,
        /// Don't wait for the API server to answer.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait until the API server answers and every node is Ready
        /// (e.g. 90s, 5m; default 2m).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        wait: Option<std::time::Duration>,
        /// Kubeconfig file that gets the cluster's context (default: KUBECONFIG, else
        /// ~/.kube/config).
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
        /// Local clusters: stay attached; Ctrl-C tears the cluster down (local-up-cluster.sh's way).
        #[arg(long)]
        foreground: bool,
        /// Local clusters: a registry the nodes reach over plain HTTP (HOST:PORT); repeatable.
        #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
        insecure_registry: Vec<String>,
    },
    /// Delete everything the cluster made.
    Down {
        /// Local clusters: stop each pod with its grace period instead of killing every pod at
        /// once (a cluster being deleted needs no graceful shutdown).
        #[arg(long)]
        graceful: bool,
        /// Kubeconfig file to remove the cluster's context from (default: the one `up` wrote,
        /// else KUBECONFIG, else ~/.kube/config).
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
    },
    /// Show the cluster's resources and their state.
    Status {
        /// Local clusters: read the API through the `rktup-<name>` context of this kubeconfig
        /// instead of the cluster's admin kubeconfig.
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
    },
    /// Local clusters: images for the nodes without a registry.
    #[command(subcommand)]
    Image(ImageAction),
    /// Local clusters: every local cluster on this machine (`-o json`: nodes, API address,
    /// state directory, which processes run).
    List {
        /// Only the clusters whose `rktup-<name>` context this kubeconfig holds.
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
    },
    /// Local clusters: export what CI needs to see why a run failed.
    #[command(subcommand)]
    Export(ExportAction),
}

#[cfg(feature = "local")]
#[derive(Debug, Subcommand)]
enum ExportAction {
    /// The control plane's, every agent's and every pod's logs, events, pods and nodes, and a
    /// description of the pods that are not Ready (kind's `export logs`), into DIR (default: a
    /// new temporary directory); prints the directory.
    Logs {
        /// Where to write (made when missing); default: a new directory under the temp dir.
        dir: Option<PathBuf>,
        /// Read the API through the `rktup-<name>` context of this kubeconfig instead of the
        /// cluster's admin kubeconfig.
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
    },
}

#[cfg(feature = "local")]
#[derive(Debug, Subcommand)]
enum ImageAction {
    /// Import an oci-archive or docker-archive tar into every node (kind's `load image-archive`).
    Import {
        file: PathBuf,
        /// Name the image (for an archive that carries none, or to rename it).
        #[arg(long, value_name = "IMAGE")]
        image_name: Option<String>,
        /// Check first that this kubeconfig's `rktup-<name>` context points at the cluster
        /// whose nodes get the image.
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
    },
}

#[cfg(feature = "local")]
#[derive(Debug, Args)]
struct RenderArgs<P: ProviderTag + Send + Sync + 'static> {
    #[command(flatten)]
    settings: SettingFlags<P>,
    /// Which machine's configuration
    #[arg(long, value_enum, default_value_t = Role::Node)]
    role: Role,
    /// Write the cloud-config and every file and unit under DIR/<role>/ instead of printing
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print (or write) private keys and tokens instead of `<redacted: …>` placeholders
    #[arg(long)]
    show_secrets: bool,
}

#[cfg(feature = "local")]
#[derive(Debug, Subcommand)]
enum RenderCommand {
    Gce(RenderArgs<GceTag>),
    Aws(RenderArgs<AwsTag>),
    Local(RenderArgs<LocalTag>),
}

#[cfg(feature = "local")]
#[derive(Debug, Subcommand)]
enum ConfigCommand {
    Gce(SettingFlags<GceTag>),
    Aws(SettingFlags<AwsTag>),
    Local(SettingFlags<LocalTag>),
}

#[cfg(feature = "local")]
/// A failure and the exit code it deserves: 2 for bad input (as clap uses), 1 otherwise.
struct Failure {
    code: u8,
    message: String,
}

#[cfg(feature = "local")]
impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: 1,
            message: e.to_string(),
        }
    }
}

#[cfg(feature = "local")]
fn bad_input(e: impl std::fmt::Display) -> Failure {
    Failure {
        code: 2,
        message: e.to_string(),
    }
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

#[cfg(feature = "local")]
fn load_settings<P: ProviderTag>(
    global: &GlobalArgs,
    flags: &SettingFlags<P>,
) -> Result<ClusterSettings, Failure> {
    let env = |k: &str| std::env::var(k).ok();
    rktup_config::load(P::PROVIDER, global, &flags.values, &env).map_err(bad_input)
}

#[cfg(feature = "local")]
/// The provider as `up`, `down` and `status` use it: with the output format and templates.
fn provider_with(
    settings: ClusterSettings,
    global: &GlobalArgs,
    templates: &Option<PathBuf>,
) -> Result<Box<dyn ClusterProvider>, Failure> {
    let _ = templates; // read only by the cloud providers, which a build may leave out
    Ok(match settings.provider {
        #[cfg(feature = "gce")]
        Provider::Gce => Box::new(
            rktup_gce::Gce::with_output(settings, global.output).with_templates(templates.clone()),
        ),
        #[cfg(feature = "aws")]
        Provider::Aws => Box::new(rktup_aws::Aws::with_cli(
            settings,
            global.output,
            templates.clone(),
        )),
        Provider::Local => Box::new(rktup_local::Local::with_output(settings, global.output)),
        #[allow(unreachable_patterns)]
        other => {
            let name = other.to_string();
            return Err(bad_input(left_out_message(&name, &name)));
        }
    })
}

#[cfg(feature = "local")]
/// `--wait`: a number with an optional unit (ms, s, m, h; seconds without one), as kind takes it.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (valid: 90s, 5m, 1h, 500ms, 0)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (valid: ms, s, m, h)")),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(feature = "local")]
fn templates(dir: &Option<PathBuf>) -> Result<Templates, Failure> {
    match dir {
        Some(d) => Templates::with_overrides(d).map_err(bad_input),
        None => Ok(Templates::embedded()?),
    }
}

#[cfg(feature = "local")]
fn run_provider<P: ProviderTag + Send + Sync + 'static>(
    cli: &Context,
    cmd: &ProviderCommand<P>,
) -> Result<(), Failure> {
    // Settings are checked before anything else happens, for every action.
    let settings = load_settings(&cli.global, &cmd.settings)?;
    rktup_logging::init(Component::Cli, settings.log_level);
    if let Action::Image(ImageAction::Import {
        file,
        image_name,
        kubeconfig,
    }) = &cmd.action
    {
        if P::PROVIDER != Provider::Local {
            return Err(bad_input(format!(
                "`image import` is for local clusters (`rktup local image import FILE`); {} nodes pull from registries",
                P::PROVIDER
            )));
        }
        return Ok(rktup_local::Local::with_output(settings, cli.global.output)
            .with_kubeconfig(kubeconfig.clone())
            .image_import(file, image_name.as_deref())?);
    }
    if matches!(
        cmd.action,
        Action::List { .. }
            | Action::Export(_)
            | Action::Status {
                kubeconfig: Some(_)
            }
    ) {
        if P::PROVIDER != Provider::Local {
            return Err(bad_input(format!(
                "`list`, `export logs` and `status --kubeconfig` are for local clusters (`rktup local list`), not `rktup {}`",
                P::PROVIDER
            )));
        }
        let local = rktup_local::Local::with_output(settings, cli.global.output);
        return match &cmd.action {
            Action::Export(ExportAction::Logs { dir, kubeconfig }) => {
                local
                    .with_kubeconfig(kubeconfig.clone())
                    .export_logs(dir.as_deref())?;
                Ok(())
            }
            Action::Status { kubeconfig } => {
                Ok(local.with_kubeconfig(kubeconfig.clone()).status()?)
            }
            Action::List { kubeconfig } => Ok(local.with_kubeconfig(kubeconfig.clone()).list()?),
            _ => Ok(local.list()?),
        };
    }
    let provider = provider_with(settings, &cli.global, &cli.templates)?;
    match cmd.action {
        Action::Up {
            dry_run: true,
            show_secrets,
            ..
        } => {
            let templates = templates(&cli.templates)?;
            let (pki, origin) = pki_for_rendering(provider.as_ref())?;
            // One hash of the binary serves both roles.
            let binary = binary_for_rendering(provider.as_ref())?;
            let p = provider.as_ref();
            let mut master = render_boot_with(p, &templates, Role::Master, &pki, origin, &binary)?;
            let mut node = render_boot_with(p, &templates, Role::Node, &pki, origin, &binary)?;
            if !show_secrets {
                (master, node) = (master.redacted(), node.redacted());
                eprintln!("{SECRETS_NOTE}");
            }
            output::dry_run(cli.global.output, provider.as_ref(), &master, &node)?;
            Ok(())
        }
        Action::Up {
            no_wait,
            wait,
            ref kubeconfig,
            foreground,
            ref insecure_registry,
            ..
        } => {
            if P::PROVIDER != Provider::Local && (foreground || !insecure_registry.is_empty()) {
                return Err(bad_input(format!(
                    "--foreground and --insecure-registry are for local clusters (`rktup local up`), not `rktup {} up`",
                    P::PROVIDER
                )));
            }
            Ok(provider.up(&UpOptions {
                no_wait,
                wait,
                kubeconfig: kubeconfig.clone(),
                foreground,
                insecure_registries: insecure_registry.clone(),
            })?)
        }
        Action::Down {
            graceful,
            ref kubeconfig,
        } => {
            if P::PROVIDER != Provider::Local && (graceful || kubeconfig.is_some()) {
                return Err(bad_input(format!(
                    "--graceful and --kubeconfig are for local clusters (`rktup local down`), not `rktup {} down` (it removes its context from the kubeconfig `up` used: KUBECONFIG, else ~/.kube/config)",
                    P::PROVIDER
                )));
            }
            Ok(provider.down_with(&rktup_provider::DownOptions {
                graceful,
                kubeconfig: kubeconfig.clone(),
            })?)
        }
        Action::Status { .. } => Ok(provider.status()?),
        Action::Image(_) | Action::List { .. } | Action::Export(_) => Ok(()),
    }
}

#[cfg(feature = "local")]
/// Said on stderr whenever `render` or `up --dry-run` hides secrets.
const SECRETS_NOTE: &str =
    "note: private keys and tokens are shown as <redacted: …>; --show-secrets prints them";

#[cfg(feature = "local")]
fn run_render<P: ProviderTag + Send + Sync + 'static>(
    cli: &Context,
    args: &RenderArgs<P>,
) -> Result<(), Failure> {
    let settings = load_settings(&cli.global, &args.settings)?;
    let provider = provider_with(settings, &cli.global, &cli.templates)?;
    let templates = templates(&cli.templates)?;
    let (pki, origin) = pki_for_rendering(provider.as_ref())?;
    let mut boot = render_boot(provider.as_ref(), &templates, args.role, &pki, origin)?;
    if !args.show_secrets {
        boot = boot.redacted();
        eprintln!("{SECRETS_NOTE}");
    }
    if origin == PkiOrigin::Ephemeral {
        eprintln!(
            "note: no PKI in {} yet; certificates shown are made for this rendering only (`up` makes and keeps the cluster's own)",
            provider.settings().state_dir.display()
        );
    }
    match &args.out {
        Some(dir) => {
            let written = output::write_rendering(dir, &boot.config)?;
            eprintln!("wrote {} files under {}", written, dir.display());
            Ok(())
        }
        None => {
            print!("{}", boot.config.user_data());
            Ok(())
        }
    }
}

#[cfg(feature = "local")]
/// What every command shares once parsed.
struct Context {
    global: GlobalArgs,
    templates: Option<PathBuf>,
}

#[cfg(feature = "local")]
fn run(cli: &Context, command: &Command) -> Result<(), Failure> {
    match command {
        Command::Gce(c) => run_provider(cli, c),
        Command::Aws(c) => run_provider(cli, c),
        Command::Local(c) => run_provider(cli, c),
        Command::Render { provider } => match provider {
            RenderCommand::Gce(a) => run_render(cli, a),
            RenderCommand::Aws(a) => run_render(cli, a),
            RenderCommand::Local(a) => run_render(cli, a),
        },
        Command::Config { provider } => {
            let settings = match provider {
                ConfigCommand::Gce(f) => load_settings(&cli.global, f)?,
                ConfigCommand::Aws(f) => load_settings(&cli.global, f)?,
                ConfigCommand::Local(f) => load_settings(&cli.global, f)?,
            };
            output::config(cli.global.output, &settings)?;
            Ok(())
        }
        Command::Version => {
            output::version(cli.global.output)?;
            Ok(())
        }
        Command::Completion { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "rktup", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// The cargo feature a command needs when this build leaves it out (None: compiled in, or not
/// a command of any build).
fn left_out(command: &str) -> Option<&'static str> {
    match command {
        "agent" | "rkt" | "logs" | "stage1" if !cfg!(feature = "node") => Some("node"),
        "controlplane" if !cfg!(feature = "controlplane") => Some("controlplane"),
        "gce" if !cfg!(feature = "gce") => Some("gce"),
        "aws" if !cfg!(feature = "aws") => Some("aws"),
        "local" | "render" | "config" | "version" | "completion" | "supervise" | "portmap"
            if !cfg!(feature = "local") =>
        {
            Some("local")
        }
        _ => None,
    }
}

/// The features this binary was built with (named when a command is left out).
fn features() -> String {
    let built = [
        ("node", cfg!(feature = "node")),
        ("controlplane", cfg!(feature = "controlplane")),
        ("local", cfg!(feature = "local")),
        ("aws", cfg!(feature = "aws")),
        ("gce", cfg!(feature = "gce")),
    ];
    let on: Vec<&str> = built.iter().filter(|(_, b)| *b).map(|(f, _)| *f).collect();
    format!("features: {}", on.join(", "))
}

/// Why `rktup <command>` cannot run here, and which build has it.
fn left_out_message(command: &str, feature: &str) -> String {
    format!(
        "`rktup {command}` is not in this build of rktup ({}): it needs the cargo feature \
         `{feature}`. The full build has every command (default features: `cargo build \
         --release --bin rktup`); `--no-default-features --features node` is the node build \
         (agent, rkt, logs) that cloud nodes download",
        features()
    )
}

fn main() -> ExitCode {
    let args = args();
    if let Some((command, feature)) = args
        .get(1)
        .and_then(|a| a.to_str())
        .and_then(|a| left_out(a).map(|f| (a, f)))
    {
        eprintln!("error: {}", left_out_message(command, feature));
        return ExitCode::from(2);
    }
    // Hidden: the supervisor `rktup local up` runs each local component under (restarts,
    // exit records); its argv is `--pidfile FILE -- COMMAND...`, parsed by itself.
    #[cfg(feature = "local")]
    if args.get(1).is_some_and(|a| a == "supervise") {
        let rest: Vec<String> = args[2..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return match rktup_local::supervise::parse(&rest)
            .and_then(|a| rktup_local::supervise::run(&a))
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // Hidden: the local clusters' port mappings (`portmap.rs`), run under a supervisor.
    #[cfg(feature = "local")]
    if args.get(1).is_some_and(|a| a == "portmap") {
        let rest: Vec<String> = args[2..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return match rktup_local::portmap::parse(&rest).and_then(|f| rktup_local::portmap::run(&f))
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let node_side = args
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| NODE_COMMANDS.contains(&a));
    #[cfg(feature = "local")]
    if !node_side {
        let cli = Cli::parse_from(args);
        let ctx = Context {
            global: cli.global,
            templates: cli.templates,
        };
        return finish(run(&ctx, &cli.command));
    }
    // The node-side commands own their error reporting. Each process installs its log
    // subscriber here, at its own `--v` (rkt's commands print results, not logs: the default).
    // A build without the cluster commands parses everything as node-side (its --help lists
    // the node commands; unknown commands were answered above).
    let _ = node_side;
    let result = match NodeCli::parse_from(args).command {
        #[cfg(feature = "node")]
        NodeCommand::Agent(a) => {
            rktup_logging::init(Component::Agent, a.verbosity);
            rktup_agent::cli::run_agent(*a)
        }
        #[cfg(feature = "node")]
        NodeCommand::Rkt(a) => {
            rktup_logging::init(Component::Cli, 2);
            rktup_runtime::cli::run_rkt(a)
        }
        #[cfg(feature = "node")]
        NodeCommand::Logs(a) => rktup_runtime::cli::run_logs(a),
        #[cfg(feature = "controlplane")]
        NodeCommand::Controlplane(a) => {
            rktup_logging::init(Component::ControlPlane, a.verbosity);
            rktup_controlplane::cli::run_controlplane(a)
        }
        #[cfg(feature = "node")]
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

#[cfg(feature = "local")]
fn finish(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            for line in f.message.lines() {
                eprintln!("error: {line}");
            }
            ExitCode::from(f.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn node_commands() -> Vec<String> {
        NodeCli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect()
    }

    #[test]
    fn a_build_with_node_has_the_commands_nodes_run() {
        let names = node_commands();
        for command in ["agent", "rkt", "logs", "stage1"] {
            assert_eq!(
                names.iter().any(|n| n == command),
                cfg!(feature = "node"),
                "{command} in {names:?} ({})",
                features()
            );
            assert_eq!(left_out(command).is_none(), cfg!(feature = "node"));
        }
        if cfg!(feature = "node") {
            // The seed's troubleshooting command parses (`/opt/bin/rkt` links to rktup).
            let parsed = NodeCli::try_parse_from(["rktup", "rkt", "list"]);
            assert!(parsed.is_ok(), "{parsed:?}");
        }
    }

    #[test]
    fn left_out_commands_name_the_feature_that_has_them() {
        let cases = [
            ("gce", "gce", cfg!(feature = "gce")),
            ("aws", "aws", cfg!(feature = "aws")),
            ("local", "local", cfg!(feature = "local")),
            ("render", "local", cfg!(feature = "local")),
            ("config", "local", cfg!(feature = "local")),
            ("supervise", "local", cfg!(feature = "local")),
            (
                "controlplane",
                "controlplane",
                cfg!(feature = "controlplane"),
            ),
        ];
        for (command, feature, built) in cases {
            let got = left_out(command);
            assert_eq!(got, (!built).then_some(feature), "{command}");
            if !built {
                let message = left_out_message(command, feature);
                assert!(message.contains(&format!("`rktup {command}`")), "{message}");
                assert!(message.contains(&format!("`{feature}`")), "{message}");
                assert!(message.contains("default features"), "{message}");
            }
        }
        assert_eq!(left_out("no-such-command"), None);
    }
}
