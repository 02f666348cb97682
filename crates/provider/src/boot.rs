//! What a master or node boots with, for `rktup render`, `up --dry-run` and `up` alike, so the
//! three can never disagree.

use crate::state::{apiserver_names, binary_ref, sha256_file, StateDir, StateError};
use crate::ClusterProvider;
use rktup_config::ClusterSettings;
use rktup_render::{
    encode_user_data, render_node_config, BinaryRef, NodeConfig, Pki, Role, TemplateError,
    Templates, UserData, UserDataError,
};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Pki(#[from] rktup_render::PkiError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    UserData(#[from] UserDataError),
    #[error("failed to hash the rktup binary {path}: {source}")]
    Hash {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "RKTUP_NODE_BINARY (--node-binary) is {path:?}, which is not a file; valid: the path of \
         an rktup build for the nodes (e.g. target/release/rktup of a `--no-default-features \
         --features node` build), or empty for the running binary"
    )]
    NodeBinary { path: PathBuf },
}

/// Where the PKI in a rendering came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkiOrigin {
    /// The cluster's state directory (what `up` made).
    Saved,
    /// Made in memory for this rendering only; `up` makes and keeps the real one.
    Ephemeral,
}

pub struct Boot {
    pub config: NodeConfig,
    pub user_data: UserData,
    pub pki_origin: PkiOrigin,
}

impl Boot {
    /// What `render` and `up --dry-run` print unless `--show-secrets`: the configuration with
    /// its secrets replaced ([`NodeConfig::redacted`]); the user-data (bytes, size) stays what
    /// the machine receives.
    pub fn redacted(&self) -> Boot {
        Boot {
            config: self.config.redacted(),
            user_data: self.user_data.clone(),
            pki_origin: self.pki_origin,
        }
    }
}

/// The sha256 of the running rktup binary: what nodes will check their download against.
pub fn current_binary_sha256() -> Result<String, BootError> {
    let path = std::env::current_exe().map_err(|source| BootError::Hash {
        path: "the running executable".into(),
        source,
    })?;
    sha256_file(&path).map_err(|source| BootError::Hash {
        path: path.display().to_string(),
        source,
    })
}

/// The rktup file the master and nodes download: RKTUP_NODE_BINARY (e.g. the node build,
/// `--no-default-features --features node`) when set, else the running binary, as before.
pub fn node_binary_path(settings: &ClusterSettings) -> Result<PathBuf, BootError> {
    match &settings.node_binary {
        Some(path) => {
            if !path.is_file() {
                return Err(BootError::NodeBinary { path: path.clone() });
            }
            Ok(path.clone())
        }
        None => std::env::current_exe().map_err(|source| BootError::Hash {
            path: "the running executable".into(),
            source,
        }),
    }
}

/// The node binary's path ([`node_binary_path`]) and its sha256, which nodes check their
/// download against.
pub fn node_binary(settings: &ClusterSettings) -> Result<(PathBuf, String), BootError> {
    let path = node_binary_path(settings)?;
    let sha = sha256_file(&path).map_err(|source| BootError::Hash {
        path: path.display().to_string(),
        source,
    })?;
    Ok((path, sha))
}

/// Loads the saved PKI or makes an ephemeral one; never writes anything.
pub fn pki_for_rendering(provider: &dyn ClusterProvider) -> Result<(Pki, PkiOrigin), BootError> {
    let settings = provider.settings();
    let state = StateDir::for_cluster(settings);
    if let Some(pki) = state.load_pki()? {
        return Ok((pki, PkiOrigin::Saved));
    }
    let master = provider.master_endpoint();
    let ips: Vec<std::net::IpAddr> = master
        .internal_ip
        .iter()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let names = apiserver_names(settings, &master.name, &ips);
    Ok((Pki::generate(&settings.name, &names)?, PkiOrigin::Ephemeral))
}

/// The binary reference nodes boot with (recorded by `up`, else settings, else planned from the
/// running binary's sha256). Hashing the binary reads it whole, so callers rendering several
/// roles compute this once.
pub fn binary_for_rendering(provider: &dyn ClusterProvider) -> Result<BinaryRef, BootError> {
    let settings = provider.settings();
    let recorded = StateDir::for_cluster(settings).load_recorded()?;
    let mut hash_error = None;
    let binary = binary_ref(settings, &recorded, || {
        let sha = node_binary(settings)
            .map(|(_, sha)| sha)
            .unwrap_or_else(|e| {
                hash_error = Some(e);
                String::new()
            });
        provider.planned_binary(&sha)
    });
    match hash_error {
        Some(e) => Err(e),
        None => Ok(binary),
    }
}

/// Renders `role`'s configuration and encodes it as the provider sends it (size-checked).
pub fn render_boot(
    provider: &dyn ClusterProvider,
    templates: &Templates,
    role: Role,
    pki: &Pki,
    pki_origin: PkiOrigin,
) -> Result<Boot, BootError> {
    let binary = binary_for_rendering(provider)?;
    render_boot_with(provider, templates, role, pki, pki_origin, &binary)
}

/// [`render_boot`] with the binary reference already resolved.
pub fn render_boot_with(
    provider: &dyn ClusterProvider,
    templates: &Templates,
    role: Role,
    pki: &Pki,
    pki_origin: PkiOrigin,
    binary: &BinaryRef,
) -> Result<Boot, BootError> {
    let settings = provider.settings();
    let master = provider.master_endpoint();
    let config = render_node_config(templates, settings, role, &master, pki, binary)?;
    let user_data = encode_user_data(settings.provider, role.as_str(), config.user_data())?;
    Ok(Boot {
        config,
        user_data,
        pki_origin,
    })
}
