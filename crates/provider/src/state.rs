//! A cluster's state directory: its PKI and what `up` recorded (staged binary, created
//! resources). Providers never depend on it to find resources — tags and names do that — it
//! only saves work and keeps the credentials.

use rktup_config::ClusterSettings;
use rktup_render::{ApiServerNames, BinaryRef, Pki, PkiError};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is damaged: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// What `up` recorded about the rktup binary nodes fetch.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Recorded {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_sha256: Option<String>,
    /// Provider-specific records (resource ids and such).
    #[serde(default)]
    pub resources: serde_json::Map<String, serde_json::Value>,
}

pub struct StateDir {
    pub path: PathBuf,
}

impl StateDir {
    pub fn for_cluster(settings: &ClusterSettings) -> StateDir {
        StateDir {
            path: settings.state_dir.clone(),
        }
    }

    pub fn exists(&self) -> bool {
        self.path.join("state.json").exists() || self.pki_dir().join("ca.crt").exists()
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.path.join("pki")
    }

    /// Creates the directory, 0700 from the start (it holds private keys); an existing one is
    /// tightened to 0700.
    pub fn create(&self) -> Result<(), StateError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(|source| StateError::Io {
                action: "create",
                path: self.path.clone(),
                source,
            })?;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| StateError::Io {
                action: "set permissions of",
                path: self.path.clone(),
                source,
            },
        )
    }

    /// The saved PKI, or `None` when `up` has not made one yet.
    pub fn load_pki(&self) -> Result<Option<Pki>, StateError> {
        if !self.pki_dir().join("ca.crt").exists() {
            return Ok(None);
        }
        Ok(Some(Pki::load(&self.pki_dir())?))
    }

    pub fn ensure_pki(&self, cluster: &str, names: &ApiServerNames) -> Result<Pki, StateError> {
        self.create()?;
        Ok(Pki::ensure(&self.pki_dir(), cluster, names)?)
    }

    pub fn load_recorded(&self) -> Result<Recorded, StateError> {
        let path = self.path.join("state.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| StateError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Recorded::default()),
            Err(source) => Err(StateError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Writes atomically: a killed `up` leaves the old file or the new one, never half of one.
    pub fn save_recorded(&self, recorded: &Recorded) -> Result<(), StateError> {
        self.create()?;
        let path = self.path.join("state.json");
        let tmp = self.path.join(".state.json.tmp");
        let bytes = serde_json::to_vec_pretty(recorded).map_err(|source| StateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        // 0600 from creation on; a leftover temp file (whatever its mode) is replaced.
        let _ = std::fs::remove_file(&tmp);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
            .map_err(|source| StateError::Io {
                action: "write",
                path: tmp.clone(),
                source,
            })?;
        std::fs::rename(&tmp, &path).map_err(|source| StateError::Io {
            action: "rename",
            path,
            source,
        })
    }
}

/// The sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The API server's certificate names for a master endpoint.
pub fn apiserver_names(
    settings: &ClusterSettings,
    master_name: &str,
    ips: &[std::net::IpAddr],
) -> ApiServerNames {
    let mut dns = vec![
        "kubernetes".to_string(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{}", settings.dns_domain),
        "localhost".into(),
        master_name.to_string(),
    ];
    dns.dedup();
    let first_service_ip = settings
        .service_cluster_ip_range
        .hosts()
        .next()
        .map(std::net::IpAddr::V4);
    let mut all_ips: Vec<std::net::IpAddr> = vec![std::net::Ipv4Addr::LOCALHOST.into()];
    all_ips.extend(first_service_ip);
    all_ips.extend_from_slice(ips);
    all_ips.dedup();
    ApiServerNames { dns, ips: all_ips }
}

/// The binary reference nodes boot with: recorded by `up`, else given as settings, else planned.
pub fn binary_ref(
    settings: &ClusterSettings,
    recorded: &Recorded,
    planned: impl FnOnce() -> BinaryRef,
) -> BinaryRef {
    match (
        recorded
            .binary_url
            .clone()
            .or_else(|| settings.binary_url.clone()),
        recorded
            .binary_sha256
            .clone()
            .or_else(|| settings.binary_sha256.clone()),
    ) {
        (Some(url), Some(sha256)) => BinaryRef { url, sha256 },
        (url, sha) => {
            let p = planned();
            BinaryRef {
                url: url.unwrap_or(p.url),
                sha256: sha.unwrap_or(p.sha256),
            }
        }
    }
}
