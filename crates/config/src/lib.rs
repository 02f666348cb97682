//! rktup's settings: one typed model ([`ClusterSettings`]) resolved with the precedence
//! flag > environment > cluster file (`--config`) > default, from the names kube-up.sh and
//! local-up-cluster.sh users already know. Everything is checked before anything acts.

pub mod cluster;
pub mod file;
pub mod flags;
pub mod kind;
pub mod model;
pub mod provider;
pub mod resolve;
pub mod spec;

pub use cluster::{
    ClusterLayout, ExtraMount, NodeRole, NodeSpec, PortMapping, Protocol, Registries,
};
pub use file::{ClusterFile, FileError};
pub use flags::{AwsTag, GceTag, LocalTag, ProviderTag, SettingFlags};
pub use model::{
    AwsSettings, BootFormat, ClusterSettings, ContainedNetwork, GceSettings, InvalidSetting,
    InvalidSettings, KubeVersion, LocalSettings, NetworkProvider, NodeAgent, SettingRow, Stage1,
};
pub use provider::Provider;
pub use resolve::Source;

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Options every command takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GlobalArgs {
    /// Cluster name [env: INSTANCE_PREFIX, KUBE_GCE_INSTANCE_PREFIX, KUBE_AWS_INSTANCE_PREFIX]
    #[arg(long, global = true, value_name = "NAME")]
    pub name: Option<String>,
    /// Log verbosity, LOG_LEVEL's scale (0-10; 4 or more shows every runtime step)
    #[arg(short = 'v', long = "verbosity", global = true, value_name = "N")]
    pub verbosity: Option<String>,
    /// Output format
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Cluster file: YAML mapping setting names to values, and (local clusters) kind-style
    /// nodes, registries and portMappings
    #[arg(long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{0}")]
    Invalid(#[from] InvalidSettings),
}

/// Resolves and checks every setting of `provider`.
///
/// `env` is how the environment is read (`|k| std::env::var(k).ok()` in the binary).
pub fn load(
    provider: Provider,
    global: &GlobalArgs,
    flags: &BTreeMap<&'static str, (String, String)>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ClusterSettings, ConfigError> {
    // The file's problems are reported together with the settings' (every error at once).
    let file = match &global.config {
        Some(path) => Some(ClusterFile::load_unchecked(path)?),
        None => None,
    };
    let mut flags = flags.clone();
    if let Some(name) = &global.name {
        flags.insert("INSTANCE_PREFIX", ("--name".into(), name.clone()));
    }
    if let Some(v) = &global.verbosity {
        flags.insert("LOG_LEVEL", ("--verbosity".into(), v.clone()));
    }
    let inputs = resolve::Inputs {
        provider,
        flags,
        env,
        file: file.as_ref(),
        gcloud_project: if provider == Provider::Gce {
            gcloud_project(env)
        } else {
            None
        },
    };
    let raw = resolve::resolve_all(&inputs);
    let parts = file
        .as_ref()
        .map(|f| model::FileParts {
            layout: f.layout.clone(),
            problems: f.problems.clone(),
            path: Some(f.path.clone()),
        })
        .unwrap_or_default();
    Ok(model::build(provider, raw, default_state_root(env), parts)?)
}

/// `/var/lib/rktup` for root (as local-up-cluster kept its state under /var), else the XDG
/// state directory.
pub fn default_state_root(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if is_root {
        return PathBuf::from("/var/lib/rktup");
    }
    match (env("XDG_STATE_HOME"), env("HOME")) {
        (Some(x), _) if !x.is_empty() => PathBuf::from(x).join("rktup"),
        (_, Some(home)) => PathBuf::from(home).join(".local/state/rktup"),
        _ => PathBuf::from("/tmp/rktup"),
    }
}

/// gcloud's active configuration's `[core] project`, as gcloud itself finds it.
fn gcloud_project(env: &dyn Fn(&str) -> Option<String>) -> Option<(String, PathBuf)> {
    let dir = env("CLOUDSDK_CONFIG")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config/gcloud")))?;
    let active = std::fs::read_to_string(dir.join("active_config"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "default".into());
    let path = dir.join("configurations").join(format!("config_{active}"));
    let text = std::fs::read_to_string(&path).ok()?;
    let mut in_core = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_core = line == "[core]";
        } else if in_core {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == "project" && !v.trim().is_empty() {
                    return Some((v.trim().to_string(), path));
                }
            }
        }
    }
    None
}
