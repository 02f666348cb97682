//! `rktup rkt ...` (also reached through a link named `rkt`), `rktup logs`, and the hidden per-pod
//! stage1 supervisor. Thin: every command is one api-service call plus formatting, except
//! `image import` and `fetch`, which write the image store under the root dir themselves.
//!
//! How a command reaches the agent: `--rkt-api-endpoint HOST:PORT` given: the agent's read-only
//! loopback listener; else the unix socket `<dir>/api.sock` (`--dir`, default the agent's
//! default root dir); when `--dir` is not given and the default root dir has no socket, the
//! seed's endpoint `localhost:15441` (read-only; e.g. a local cluster's node, whose agent
//! listens there inside the node's network namespace).

use crate::api::{Client, PodInfo};
use crate::image::ImageRecord;
use crate::util;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

/// The seed's kubelet default for `--rkt-api-endpoint`. The agent listens there only when the
/// flag is given; the CLI falls back to it (see the module doc).
pub const DEFAULT_API_ENDPOINT: &str = "localhost:15441";

/// The agent's default `--root-dir` (the CLI's default `--dir`).
pub const DEFAULT_ROOT_DIR: &str = "/var/lib/rktup/agent";

/// How the CLI finds the agent.
#[derive(Debug, Args)]
pub struct AgentRef {
    /// The agent's root dir (its --root-dir): the api-service's unix socket `<dir>/api.sock`
    /// (root only) and, for `image import` and `fetch`, the image store [default:
    /// /var/lib/rktup/agent]
    #[arg(long, alias = "root-dir", global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Use the agent's read-only loopback listener instead of the unix socket (list, status,
    /// image list, logs; the agent must have been started with --rkt-api-endpoint).
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub rkt_api_endpoint: Option<String>,
}

impl AgentRef {
    pub fn root_dir(&self) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT_DIR))
    }

    /// The api-service client (see the module doc for the order).
    pub fn client(&self) -> Client {
        if let Some(e) = &self.rkt_api_endpoint {
            return Client::tcp(e);
        }
        let sock = crate::api::socket_path(&self.root_dir());
        if self.dir.is_none() && std::fs::symlink_metadata(&sock).is_err() {
            return Client::tcp(DEFAULT_API_ENDPOINT);
        }
        Client::unix(sock)
    }
}

/// The seed's troubleshooting commands: `rkt list`, `rkt status`, `rkt image list`.
#[derive(Debug, Args)]
pub struct RktArgs {
    #[command(flatten)]
    pub agent: AgentRef,
    #[command(subcommand)]
    pub command: RktCommand,
}

#[derive(Debug, Subcommand)]
pub enum RktCommand {
    /// List pods (short UUIDs; --full for whole ones).
    List {
        /// Print full UUIDs, image ids and absolute times.
        #[arg(long)]
        full: bool,
        /// Do not print the header line.
        #[arg(long)]
        no_legend: bool,
    },
    /// Show a pod's status (full or short UUID).
    Status { uuid: String },
    /// Image operations.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Pull an image into the store (as root: writes <dir>/images directly).
    Fetch {
        image: String,
        /// A registry reached over plain HTTP (host:port), repeatable.
        #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
        insecure_registry: Vec<String>,
        /// Docker config.json with registry credentials.
        #[arg(long, value_name = "FILE")]
        registry_config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images.
    List {
        #[arg(long)]
        full: bool,
        #[arg(long)]
        no_legend: bool,
    },
    /// Remove images (by name or id) that no pod uses.
    Rm { names: Vec<String> },
    /// Remove every image no pod uses.
    Gc,
    /// Import an oci-archive or docker-archive tar (as root: writes <dir>/images directly).
    Import {
        file: std::path::PathBuf,
        /// Name for the image (default: the archive's own name).
        #[arg(long)]
        name: Option<String>,
    },
}

/// `rktup logs k8s_<uuid>`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The pod's unit name `k8s_<uuid>` (short or full uuid; the bare uuid works too).
    pub unit: String,
    /// Container (app) name; default: all containers of the pod.
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep printing new lines until the container stops for good.
    #[arg(short = 'f', long)]
    pub follow: bool,
    #[command(flatten)]
    pub agent: AgentRef,
}

/// Hidden: the per-pod stage1 supervisor that the agent re-executes; with `--enter`, a command
/// run inside one of the pod's running containers (exec probes).
#[derive(Debug, Args)]
pub struct Stage1Args {
    /// The pod's directory.
    pub pod_dir: std::path::PathBuf,
    /// Run the command after `--` inside this running container instead of supervising the pod;
    /// exits with the command's exit code.
    #[arg(long, value_name = "CONTAINER")]
    pub enter: Option<String>,
    /// With --enter: an inherited file descriptor that gets why the command could not be run.
    #[arg(long, value_name = "FD", requires = "enter")]
    pub error_fd: Option<i32>,
    /// With --enter: the command and its arguments.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn short(uuid: &str) -> String {
    uuid.chars().filter(|c| *c != '-').take(8).collect()
}

/// Columns separated by at least two spaces, aligned (rkt uses a tabwriter).
pub fn table(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut w = vec![0; n];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<width$}\t", width = w[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn time_col(t: Option<i64>, full: bool) -> String {
    match t {
        None => "-".into(),
        Some(t) if full => util::rfc3339(t),
        Some(t) => util::human_age(t),
    }
}

fn networks(p: &PodInfo) -> String {
    if p.host_network || p.stage1 == crate::pod::Stage1Flavor::Fly {
        return "host".into();
    }
    match (&p.network, &p.status.pod_ip) {
        (Some(n), Some(ip)) => format!("{n}:ip4={ip}"),
        _ => String::new(),
    }
}

/// `rkt list` output: one row per app; the pod's columns only on its first row.
pub fn format_list(pods: &[PodInfo], full: bool, legend: bool) -> String {
    let mut rows = Vec::new();
    if legend {
        let mut h = vec!["UUID", "APP", "IMAGE NAME"];
        if full {
            h.push("IMAGE ID");
        }
        h.extend(["STATE", "CREATED", "STARTED", "NETWORKS"]);
        rows.push(h.into_iter().map(String::from).collect());
    }
    for p in pods {
        let id = if full { p.uuid.clone() } else { short(&p.uuid) };
        let apps: Vec<_> = p
            .status
            .init_containers
            .iter()
            .chain(p.status.containers.iter())
            .collect();
        if apps.is_empty() {
            let mut r = vec![id.clone(), "-".into(), "-".into()];
            if full {
                r.push("-".into());
            }
            r.extend([
                p.status.state.as_str().to_string(),
                time_col(Some(p.status.created_at), full),
                time_col(p.status.started_at, full),
                networks(p),
            ]);
            rows.push(r);
        }
        for (i, a) in apps.iter().enumerate() {
            let first = i == 0;
            let mut r = vec![
                if first { id.clone() } else { String::new() },
                a.name.clone(),
                a.image.clone(),
            ];
            if full {
                let h = a.image_id.trim_start_matches("sha256:");
                r.push(format!("sha256-{}", &h[..h.len().min(12)]));
            }
            if first {
                r.extend([
                    p.status.state.as_str().to_string(),
                    time_col(Some(p.status.created_at), full),
                    time_col(p.status.started_at, full),
                    networks(p),
                ]);
            }
            rows.push(r);
        }
    }
    table(&rows)
}

/// `rkt status` output: rkt's key=value lines first (state, created, started, networks, pid,
/// exited, and `app-<name>=<exit code>` for apps that exited), then rktup's extra lines.
pub fn format_status(p: &PodInfo) -> String {
    let s = &p.status;
    let mut out = String::new();
    out.push_str(&format!("state={}\n", s.state.as_str()));
    out.push_str(&format!("created={}\n", util::rfc3339(s.created_at)));
    if let Some(t) = s.started_at {
        out.push_str(&format!("started={}\n", util::rfc3339(t)));
    }
    out.push_str(&format!("networks={}\n", networks(p)));
    if s.supervisor_pid > 0 && p.alive {
        out.push_str(&format!("pid={}\n", s.supervisor_pid));
    }
    let exited = matches!(
        s.state,
        crate::pod::PodState::Exited | crate::pod::PodState::Refused
    );
    out.push_str(&format!("exited={exited}\n"));
    let apps: Vec<_> = s
        .init_containers
        .iter()
        .chain(s.containers.iter())
        .collect();
    for a in &apps {
        if let Some(c) = a.exit_code {
            out.push_str(&format!("app-{}={c}\n", a.name));
        }
    }
    // rktup additions.
    out.push_str(&format!("uuid={}\n", p.uuid));
    out.push_str(&format!("unit=k8s_{}\n", p.uuid));
    out.push_str(&format!("pod={}/{}\n", p.namespace, p.name));
    out.push_str(&format!("phase={}\n", s.phase));
    out.push_str(&format!("stage1={}\n", p.stage1.image_name()));
    if let Some(r) = &s.reason {
        out.push_str(&format!("reason={r}\n"));
    }
    if let Some(m) = &s.message {
        out.push_str(&format!("message={}\n", m.replace('\n', " ")));
    }
    for a in &apps {
        let mut line = format!("app-{}-status={}", a.name, a.state);
        if let Some(c) = a.exit_code {
            line.push_str(&format!(" exitCode={c}"));
        }
        if let Some(r) = &a.reason {
            line.push_str(&format!(" reason={r}"));
        }
        line.push_str(&format!(" restarts={}", a.restart_count));
        if let Some(pid) = a.pid {
            line.push_str(&format!(" pid={pid}"));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `rkt image list` output.
pub fn format_images(images: &[ImageRecord], full: bool, legend: bool) -> String {
    let mut rows = Vec::new();
    if legend {
        rows.push(
            ["ID", "NAME", "SIZE", "IMPORT TIME", "LAST USED"]
                .map(String::from)
                .to_vec(),
        );
    }
    for i in images {
        let id = if full {
            i.id.replace(':', "-")
        } else {
            i.short_id()
        };
        let last = if i.last_used > 0 {
            time_col(Some(i.last_used), full)
        } else {
            "never".into()
        };
        let names = if i.names.is_empty() {
            vec!["<none>".to_string()]
        } else {
            i.names.clone()
        };
        for (n, name) in names.iter().enumerate() {
            if n == 0 {
                rows.push(vec![
                    id.clone(),
                    name.clone(),
                    util::human_size(i.size),
                    time_col(Some(i.imported_at), full),
                    last.clone(),
                ]);
            } else {
                rows.push(vec![String::new(), name.clone()]);
            }
        }
    }
    table(&rows)
}

/// The image store under `dir`, for the commands that write it directly (root only).
fn open_store(what: &str, dir: &Path) -> anyhow::Result<crate::image::ImageStore> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!(
            "`rkt {what}` writes the image store {} directly and must run as root (try: sudo \
             rktup rkt {what} ...)",
            dir.join("images").display()
        );
    }
    if !dir.is_dir() {
        anyhow::bail!(
            "{}: no such directory; give the agent's root dir with --dir (its --root-dir)",
            dir.display()
        );
    }
    Ok(crate::image::ImageStore::open(dir)?)
}

pub fn run_rkt(args: RktArgs) -> anyhow::Result<()> {
    let c = args.agent.client();
    let dir = args.agent.root_dir();
    match args.command {
        RktCommand::List { full, no_legend } => {
            print!("{}", format_list(&c.pods()?, full, !no_legend))
        }
        RktCommand::Status { uuid } => print!("{}", format_status(&c.pod(&uuid)?)),
        RktCommand::Fetch {
            image,
            insecure_registry,
            registry_config,
        } => {
            let store = open_store("fetch", &dir)?;
            let mut puller =
                crate::image::registry::Puller::new().with_insecure_registries(&insecure_registry);
            if let Some(rc) = &registry_config {
                puller = puller.with_docker_config(rc);
            }
            let r = crate::image::ensure_image(
                &store,
                &puller,
                &image,
                crate::image::PullPolicy::Always,
            )?;
            println!("{}", r.id.replace(':', "-"));
        }
        RktCommand::Image { command } => match command {
            ImageCommand::List { full, no_legend } => {
                print!("{}", format_images(&c.images()?, full, !no_legend))
            }
            ImageCommand::Rm { names } => {
                let mut failed = 0;
                for n in &names {
                    match c.image_rm(n) {
                        Ok(r) => println!("successfully removed image {}", r.id.replace(':', "-")),
                        Err(e) => {
                            eprintln!("rkt: {e}");
                            failed += 1;
                        }
                    }
                }
                if failed > 0 {
                    anyhow::bail!("{failed} image(s) could not be removed");
                }
            }
            ImageCommand::Gc => {
                for r in c.image_gc()? {
                    println!(
                        "removed image {} ({})",
                        r.id.replace(':', "-"),
                        r.names.join(", ")
                    );
                }
            }
            ImageCommand::Import { file, name } => {
                let store = open_store("image import", &dir)?;
                for r in crate::image::archive::import(&store, &file, name.as_deref())? {
                    println!("{}\t{}", r.id.replace(':', "-"), r.names.join(", "));
                }
            }
        },
    }
    Ok(())
}

pub fn run_logs(args: LogsArgs) -> anyhow::Result<()> {
    let c = args.agent.client();
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    c.logs(
        &args.unit,
        args.container.as_deref(),
        args.follow,
        &mut lock,
    )?;
    Ok(())
}

/// The `--v` a `rktup stage1` process logs at: the supervisor's is in its pod's plan (the agent's
/// `--v` when it planned the pod); `--enter` logs nothing, as its stderr is the entered command's.
/// `None`: install no subscriber. An unreadable plan gives the default 2, so that the supervisor
/// can still report why it fails.
pub fn stage1_verbosity(args: &Stage1Args) -> Option<u8> {
    if args.enter.is_some() {
        return None;
    }
    Some(
        crate::pod::read_plan(&args.pod_dir)
            .map(|p| p.verbosity)
            .unwrap_or(2),
    )
}

pub fn run_stage1(args: Stage1Args) -> anyhow::Result<()> {
    if let Some(c) = &args.enter {
        let code = crate::stage1::enter::run(&args.pod_dir, c, &args.command, args.error_fd);
        std::process::exit(code);
    }
    // Its own session, before anything else: the agent spawned it without a pre_exec hook
    // (`Runtime::spawn_supervisor`), and signals to the agent's process group must not reach
    // the pod. Fails only for a process-group leader, which a spawned child is not.
    // SAFETY: setsid takes no pointers.
    unsafe { libc::setsid() };
    // Started as the unit k8s_<uuid> (`systemd_units`): the containers' output goes to the
    // journal as well as to the CRI log files.
    crate::logs::echo_to_journal(crate::systemd::stdout_is_journal());
    crate::stage1::run_supervisor(&args.pod_dir)?;
    Ok(())
}
