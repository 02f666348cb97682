//! Resolution: for each setting, the first of flag > environment > cluster file > default.

use crate::file::ClusterFile;
use crate::provider::Provider;
use crate::spec::{settings_for, SettingSpec};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Where a resolved value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Source {
    /// A command-line flag, named with its dashes (`--num-nodes`).
    Flag(String),
    /// An environment variable.
    Env(String),
    /// The cluster file (`--config`), with the key as written there.
    File {
        path: PathBuf,
        key: String,
    },
    /// gcloud's configuration file.
    Gcloud(PathBuf),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(n) => write!(f, "flag {n}"),
            Source::Env(n) => write!(f, "env {n}"),
            Source::File { path, .. } => write!(f, "file {}", path.display()),
            Source::Gcloud(path) => write!(f, "gcloud {}", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

impl Source {
    /// The input's name as the user wrote it, for error messages.
    pub fn input_name(&self, key: &str) -> String {
        match self {
            Source::Flag(n) | Source::Env(n) => n.clone(),
            Source::File { path, key } => format!("{} ({key})", path.display()),
            Source::Gcloud(path) => format!("{key} (from {})", path.display()),
            Source::Default => format!("{key} (default)"),
        }
    }
}

/// One setting after resolution, before its kind is checked.
#[derive(Debug, Clone)]
pub struct RawValue {
    pub value: String,
    pub source: Source,
}

/// Everything a resolution reads. Environment access goes through a function so tests never
/// touch the process environment.
pub struct Inputs<'a> {
    pub provider: Provider,
    /// Flag values keyed by setting key, with the flag as the user spelled it.
    pub flags: BTreeMap<&'static str, (String, String)>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub file: Option<&'a ClusterFile>,
    /// gcloud's active configuration's `[core] project`, if any.
    pub gcloud_project: Option<(String, PathBuf)>,
}

pub(crate) fn resolve_one(spec: &'static SettingSpec, inputs: &Inputs<'_>) -> RawValue {
    if let Some((flag, value)) = inputs.flags.get(spec.key) {
        return RawValue {
            value: value.clone(),
            source: Source::Flag(flag.clone()),
        };
    }
    for name in spec.env_names(inputs.provider) {
        // kube-up read `${VAR:-default}`: an empty variable counts as unset.
        if let Some(v) = (inputs.env)(name).filter(|v| !v.is_empty()) {
            return RawValue {
                value: v,
                source: Source::Env(name.to_string()),
            };
        }
    }
    if let Some(file) = inputs.file {
        if let Some((key, v)) = file.get(spec, inputs.provider) {
            return RawValue {
                value: v,
                source: Source::File {
                    path: file.path.clone(),
                    key,
                },
            };
        }
    }
    if spec.key == "PROJECT" {
        if let Some((project, path)) = &inputs.gcloud_project {
            return RawValue {
                value: project.clone(),
                source: Source::Gcloud(path.clone()),
            };
        }
    }
    RawValue {
        value: spec.default_for(inputs.provider).to_string(),
        source: Source::Default,
    }
}

/// Resolves every setting of the provider, in table order.
pub fn resolve_all(inputs: &Inputs<'_>) -> Vec<(&'static SettingSpec, RawValue)> {
    settings_for(inputs.provider)
        .map(|spec| (spec, resolve_one(spec, inputs)))
        .collect()
}
