//! The cluster's PKI: a CA and the certificates the master's components and the nodes use,
//! generated with rcgen at `up` time and kept in the cluster's state directory (files 0600).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("failed to generate {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the PKI in {dir} lacks {file}; remove the directory to have it generated anew")]
    Incomplete { dir: PathBuf, file: String },
}

/// Names (DNS or IP) the API server's serving certificate must carry.
#[derive(Debug, Clone, Default)]
pub struct ApiServerNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// One client or serving identity signed by the CA.
struct Identity {
    file: &'static str,
    common_name: &'static str,
    organization: Option<&'static str>,
    server: bool,
}

/// Client identities, as kubeadm names them. No agent identity: every machine, the master
/// too, joins by TLS bootstrap with `bootstrap_token` and gets a `system:node:<name>`
/// certificate for a key made on the machine.
const CLIENTS: &[Identity] = &[
    Identity {
        file: "admin",
        common_name: "kubernetes-admin",
        organization: Some("system:masters"),
        server: false,
    },
    Identity {
        file: "apiserver-kubelet-client",
        common_name: "kube-apiserver-kubelet-client",
        // No group: RBAC's `kube-apiserver-kubelet-api-admin` binding (the master's first-boot
        // `apiserver-kubelet.yaml`) gives it `system:kubelet-api-admin` — the kubelet API and
        // nothing else, not `system:masters` (issue 16).
        organization: None,
        server: false,
    },
    Identity {
        file: "controller-manager",
        common_name: "system:kube-controller-manager",
        organization: None,
        server: false,
    },
    Identity {
        file: "scheduler",
        common_name: "system:kube-scheduler",
        organization: None,
        server: false,
    },
];

/// Every file of the PKI, by file name (`ca.crt`, `ca.key`, `apiserver.crt`, ...), as PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pki {
    files: BTreeMap<String, String>,
}

/// A bootstrap token: `id.secret`, kept as Secret `kube-system/bootstrap-token-<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
}

impl BootstrapToken {
    /// What a kubeconfig's `token:` holds.
    pub fn token(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Generate {
        what: what.to_string(),
        source,
    }
}

fn dn(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

impl Pki {
    /// The file names a complete PKI holds.
    pub fn file_names() -> Vec<String> {
        let mut names = vec![
            "ca.crt".to_string(),
            "ca.key".into(),
            "apiserver.crt".into(),
            "apiserver.key".into(),
            "sa.key".into(),
            "sa.pub".into(),
        ];
        for c in CLIENTS {
            names.push(format!("{}.crt", c.file));
            names.push(format!("{}.key", c.file));
        }
        names
    }

    pub fn generate(cluster: &str, names: &ApiServerNames) -> Result<Pki, PkiError> {
        let mut files = BTreeMap::new();
        let ca_key = KeyPair::generate().map_err(gen_err("the CA key"))?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = dn(&format!("{cluster}-ca"), None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let (not_before, not_after) = validity(3650);
        ca_params.not_before = not_before;
        ca_params.not_after = not_after;
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(gen_err("the CA certificate"))?;
        files.insert("ca.crt".into(), ca_cert.pem());
        files.insert("ca.key".into(), ca_key.serialize_pem());
        let issuer = Issuer::new(ca_params, ca_key);

        let server = Identity {
            file: "apiserver",
            common_name: "kube-apiserver",
            organization: None,
            server: true,
        };
        for id in std::iter::once(&server).chain(CLIENTS) {
            let key = KeyPair::generate().map_err(gen_err(id.file))?;
            let mut params = CertificateParams::default();
            params.distinguished_name = dn(id.common_name, id.organization);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![if id.server {
                ExtendedKeyUsagePurpose::ServerAuth
            } else {
                ExtendedKeyUsagePurpose::ClientAuth
            }];
            let (not_before, not_after) = validity(365);
            params.not_before = not_before;
            params.not_after = not_after;
            if id.server {
                for d in &names.dns {
                    params.subject_alt_names.push(SanType::DnsName(
                        d.clone().try_into().map_err(gen_err("a DNS name"))?,
                    ));
                }
                for ip in &names.ips {
                    params.subject_alt_names.push(SanType::IpAddress(*ip));
                }
            }
            let cert = params.signed_by(&key, &issuer).map_err(gen_err(id.file))?;
            files.insert(format!("{}.crt", id.file), cert.pem());
            files.insert(format!("{}.key", id.file), key.serialize_pem());
        }

        let sa = KeyPair::generate().map_err(gen_err("the service-account key"))?;
        files.insert("sa.key".into(), sa.serialize_pem());
        files.insert("sa.pub".into(), sa.public_key_pem());
        Ok(Pki { files })
    }

    /// Reads a PKI written by [`Pki::save`].
    pub fn load(dir: &Path) -> Result<Pki, PkiError> {
        let mut files = BTreeMap::new();
        for name in Self::file_names() {
            let path = dir.join(&name);
            let text = std::fs::read_to_string(&path).map_err(|source| {
                if source.kind() == std::io::ErrorKind::NotFound {
                    PkiError::Incomplete {
                        dir: dir.to_path_buf(),
                        file: name.clone(),
                    }
                } else {
                    PkiError::Io {
                        action: "read",
                        path: path.clone(),
                        source,
                    }
                }
            })?;
            files.insert(name, text);
        }
        Ok(Pki { files })
    }

    /// Writes every file with mode 0600 in a 0700 directory.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| PkiError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("set permissions of", dir))?;
        for (name, pem) in &self.files {
            let path = dir.join(name);
            let tmp = dir.join(format!(".{name}.tmp"));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("create", &tmp))?;
            std::io::Write::write_all(&mut f, pem.as_bytes()).map_err(io("write", &tmp))?;
            std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        }
        Ok(())
    }

    /// Loads the PKI in `dir`, or generates and saves one when there is none.
    pub fn ensure(dir: &Path, cluster: &str, names: &ApiServerNames) -> Result<Pki, PkiError> {
        if dir.join("ca.crt").exists() {
            return Self::load(dir);
        }
        let pki = Self::generate(cluster, names)?;
        pki.save(dir)?;
        Ok(pki)
    }

    pub fn get(&self, name: &str) -> &str {
        self.files.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn files(&self) -> &BTreeMap<String, String> {
        &self.files
    }

    /// The cluster's node bootstrap token (`[a-z0-9]{6}.[a-z0-9]{16}`, kubeadm's format),
    /// derived from the CA key: stable for the cluster's life without another secret to keep,
    /// and as secret as the key it comes from. It never expires, as Typhoon's do: an Auto
    /// Scaling or instance group replacement boots months later from the same user-data.
    pub fn bootstrap_token(&self) -> BootstrapToken {
        use sha2::Digest;
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let digest = sha2::Sha256::new()
            .chain_update(b"rktup node bootstrap token\0")
            .chain_update(self.get("ca.key").as_bytes())
            .finalize();
        let chars: String = digest
            .iter()
            .take(22)
            .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
            .collect();
        BootstrapToken {
            id: chars[..6].to_string(),
            secret: chars[6..].to_string(),
        }
    }

    /// Builds a PKI from files already in memory (tests keep fixed ones so snapshots are stable).
    pub fn from_files(files: BTreeMap<String, String>) -> Pki {
        Pki { files }
    }
}

fn validity(days: i64) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for nodes whose clock is behind at first boot.
    (
        now - time::Duration::hours(1),
        now + time::Duration::days(days),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_save_load_roundtrip_with_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let names = ApiServerNames {
            dns: vec!["kubernetes".into(), "k-master".into()],
            ips: vec!["10.0.0.1".parse().unwrap()],
        };
        let pki = Pki::ensure(&dir.path().join("pki"), "k", &names).unwrap();
        for name in Pki::file_names() {
            assert!(pki.get(&name).starts_with("-----BEGIN"), "{name}");
            let mode = std::fs::metadata(dir.path().join("pki").join(&name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let again = Pki::ensure(&dir.path().join("pki"), "k", &names).unwrap();
        assert_eq!(pki, again, "ensure reuses the saved PKI");
    }
}
