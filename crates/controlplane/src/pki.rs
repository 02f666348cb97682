//! The cluster PKI: a CA, a serving certificate and an admin client
//! certificate, generated once under the data dir and reused afterwards,
//! plus minting of node credentials.
//!
//! Identities follow Kubernetes' x509 convention: the subject CN is the user
//! name and each O is a group (`system:masters` for the admin,
//! `system:nodes` + `system:node:<name>` for nodes).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("failed to {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to generate {what}: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error(
        "UNPROTECTED PRIVATE KEY FILE: {path} has mode {mode:04o}, so users other than its \
         owner can read it; refusing to use it. Fix: chmod 600 {path} (and replace the key if \
         others may have read it)"
    )]
    Unprotected { path: PathBuf, mode: u32 },
}

type Result<T> = std::result::Result<T, PkiError>;

/// PEM material for one certificate and its key.
#[derive(Debug, Clone)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster PKI, loaded from (or created in) `DATA_DIR/pki`.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca: CertPair,
    pub serving: CertPair,
    pub admin: CertPair,
    /// The API server's client identity towards kubelets (kubeadm's
    /// `apiserver-kubelet-client`): CN `kube-apiserver-kubelet-client`, no
    /// group; RBAC's `kube-apiserver-kubelet-api-admin` binding gives it
    /// `system:kubelet-api-admin`, not `system:masters`.
    pub kubelet_client: CertPair,
    /// The front-proxy CA (kubeadm's `front-proxy-ca`), separate from the cluster CA:
    /// aggregated API servers trust requests carrying `X-Remote-*` headers only from a client
    /// certificate it signed (`requestheader-client-ca-file`).
    pub front_proxy_ca: CertPair,
    /// The aggregator's client identity towards aggregated API servers: CN
    /// `front-proxy-client` (`requestheader-allowed-names`), signed by [`Pki::front_proxy_ca`].
    pub front_proxy_client: CertPair,
}

/// The common name of [`Pki::front_proxy_client`].
pub const FRONT_PROXY_CLIENT_USER: &str = "front-proxy-client";

/// The user name of [`Pki::kubelet_client`].
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Generate {
        what: what.to_string(),
        source,
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })
}

/// Checks that a key or token file is readable by its owner only (as ssh does for private
/// keys): the control plane refuses to start on one that group or others can read or write.
pub fn check_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(path).map_err(|source| PkiError::Io {
        op: "stat",
        path: path.to_path_buf(),
        source,
    })?;
    let mode = md.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PkiError::Unprotected {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Reads a key file after [`check_private`].
fn read_private(path: &Path) -> Result<String> {
    check_private(path)?;
    read(path)
}

/// Creates `dir` (and missing parents) with mode 0700 from the start, and tightens an existing
/// one to 0700: the data dir and everything in it are the control plane's alone.
pub fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |op| {
        move |source| PkiError::Io {
            op,
            path: dir.to_path_buf(),
            source,
        }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err("create"))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(err("set the mode of"))
}

/// Writes `contents` atomically with mode `mode`, which the file has from its creation on (a
/// fresh temp file opened with that mode, then renamed). Everything the control plane writes is
/// 0600: keys, tokens and kubeconfigs, and certificates too (nobody else needs them).
pub(crate) fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |op| {
        move |source| PkiError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    // A leftover temp file would keep its old mode: always create a new one.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err("create"))?;
    f.write_all(contents.as_bytes()).map_err(err("write"))?;
    f.sync_all().map_err(err("fsync"))?;
    std::fs::rename(&tmp, path).map_err(err("rename"))?;
    Ok(())
}

fn client_params(user: &str, groups: &[&str]) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err(user))?;
    let mut dn = DistinguishedName::new();
    for g in groups {
        dn.push(DnType::OrganizationName, *g);
    }
    dn.push(DnType::CommonName, user);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    Ok(params)
}

/// A certificate and fresh key for `params`, signed by `ca`.
fn sign_with(ca: &CertPair, params: CertificateParams, what: &str) -> Result<CertPair> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(gen_err("CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(gen_err("CA"))?;
    let key = KeyPair::generate().map_err(gen_err(what))?;
    let cert = params.signed_by(&key, &issuer).map_err(gen_err(what))?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The self-signed CA kept in `crt`/`key` (CN `cn`): loaded when both exist, else made and
/// written (key 0600).
fn stored_ca(crt: &Path, key_path: &Path, cn: &str) -> Result<CertPair> {
    if crt.exists() && key_path.exists() {
        return Ok(CertPair {
            cert_pem: read(crt)?,
            key_pem: read_private(key_path)?,
        });
    }
    let key = KeyPair::generate().map_err(gen_err("CA key"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err("CA"))?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let cert = params.self_signed(&key).map_err(gen_err("CA"))?;
    let pair = CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    write_file(key_path, &pair.key_pem, 0o600)?;
    write_file(crt, &pair.cert_pem, 0o600)?;
    Ok(pair)
}

impl Pki {
    /// Loads the PKI from `data_dir/pki`, generating any missing part. The
    /// serving certificate is regenerated if it lacks one of `binds` in its SANs.
    pub fn load_or_create(data_dir: &Path, binds: &[IpAddr]) -> Result<Self> {
        private_dir(data_dir)?;
        let dir = data_dir.join("pki");
        private_dir(&dir)?;
        let ca_crt = dir.join("ca.crt");
        let ca_key = dir.join("ca.key");
        let ca = stored_ca(&ca_crt, &ca_key, "rktup-ca")?;
        let mut pki = Pki {
            dir: dir.clone(),
            serving: CertPair {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
            admin: CertPair {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
            kubelet_client: CertPair {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
            front_proxy_ca: stored_ca(
                &dir.join("front-proxy-ca.crt"),
                &dir.join("front-proxy-ca.key"),
                "front-proxy-ca",
            )?,
            front_proxy_client: CertPair {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
            ca,
        };

        let srv_crt = dir.join("apiserver.crt");
        let srv_key = dir.join("apiserver.key");
        let marker = dir.join("apiserver.sans");
        let mut extra_ips: Vec<IpAddr> = binds
            .iter()
            .copied()
            .filter(|ip| ip.to_string() != "127.0.0.1")
            .collect();
        extra_ips.sort();
        extra_ips.dedup();
        let sans = std::iter::once("127.0.0.1,localhost".to_string())
            .chain(extra_ips.iter().map(IpAddr::to_string))
            .collect::<Vec<_>>()
            .join(",");
        let reuse = srv_crt.exists()
            && srv_key.exists()
            && std::fs::read_to_string(&marker).ok().as_deref() == Some(sans.as_str());
        pki.serving = if reuse {
            CertPair {
                cert_pem: read(&srv_crt)?,
                key_pem: read_private(&srv_key)?,
            }
        } else {
            let mut names = vec![
                "localhost".to_string(),
                "kubernetes".into(),
                "kubernetes.default".into(),
                "kubernetes.default.svc".into(),
                "kubernetes.default.svc.cluster.local".into(),
            ];
            names.dedup();
            let mut params = CertificateParams::new(names).map_err(gen_err("serving cert"))?;
            params
                .subject_alt_names
                .push(SanType::IpAddress("127.0.0.1".parse().map_err(|_| {
                    PkiError::Generate {
                        what: "serving cert".into(),
                        source: rcgen::Error::CouldNotParseCertificate,
                    }
                })?));
            for ip in &extra_ips {
                params.subject_alt_names.push(SanType::IpAddress(*ip));
            }
            params
                .distinguished_name
                .push(DnType::CommonName, "kube-apiserver");
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.not_after = rcgen::date_time_ymd(2099, 1, 1);
            let pair = pki.sign(params, "serving cert")?;
            write_file(&srv_key, &pair.key_pem, 0o600)?;
            write_file(&srv_crt, &pair.cert_pem, 0o600)?;
            write_file(&marker, &sans, 0o600)?;
            pair
        };

        pki.admin = pki.stored_client(&dir, "admin", "kubernetes-admin", &["system:masters"])?;

        pki.kubelet_client =
            pki.stored_client(&dir, "apiserver-kubelet-client", KUBELET_CLIENT_USER, &[])?;
        let (fp_crt, fp_key) = (
            dir.join("front-proxy-client.crt"),
            dir.join("front-proxy-client.key"),
        );
        pki.front_proxy_client = if fp_crt.exists() && fp_key.exists() {
            CertPair {
                cert_pem: read(&fp_crt)?,
                key_pem: read_private(&fp_key)?,
            }
        } else {
            let params = client_params(FRONT_PROXY_CLIENT_USER, &[])?;
            let pair = sign_with(&pki.front_proxy_ca, params, FRONT_PROXY_CLIENT_USER)?;
            write_file(&fp_key, &pair.key_pem, 0o600)?;
            write_file(&fp_crt, &pair.cert_pem, 0o600)?;
            pair
        };
        Ok(pki)
    }

    /// The client certificate kept as `<dir>/<name>.crt` and `.key`: loaded when both exist,
    /// else issued for `user` in `groups` and written.
    fn stored_client(
        &self,
        dir: &Path,
        name: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<CertPair> {
        let crt = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        if crt.exists() && key.exists() {
            return Ok(CertPair {
                cert_pem: read(&crt)?,
                key_pem: read_private(&key)?,
            });
        }
        let pair = self.issue_client(user, groups)?;
        write_file(&key, &pair.key_pem, 0o600)?;
        write_file(&crt, &pair.cert_pem, 0o600)?;
        Ok(pair)
    }

    fn sign(&self, params: CertificateParams, what: &str) -> Result<CertPair> {
        sign_with(&self.ca, params, what)
    }

    /// Issues a client certificate for `user` in `groups`, signed by the CA.
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<CertPair> {
        self.sign(client_params(user, groups)?, user)
    }

    /// Issues the client certificate of node `name` (`system:node:<name>`).
    pub fn issue_node(&self, name: &str) -> Result<CertPair> {
        self.issue_client(&format!("system:node:{name}"), &["system:nodes"])
    }
}

/// Renders a kubeconfig with embedded credentials.
pub fn kubeconfig(server: &str, ca_pem: &str, user: &str, cred: &Credential) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let user_block = match cred {
        Credential::Cert(pair) => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&pair.cert_pem),
            b64(&pair.key_pem)
        ),
        Credential::Token(t) => format!("    token: {t}\n"),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: rktup\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: {user}@rktup\n  context:\n    cluster: rktup\n    user: {user}\ncurrent-context: {user}@rktup\nusers:\n- name: {user}\n  user:\n{user_block}preferences: {{}}\n",
        ca = b64(ca_pem),
    )
}

/// A credential a client presents.
#[derive(Debug, Clone)]
pub enum Credential {
    Cert(CertPair),
    Token(String),
}

pub use rktup_tls::kubelet_csr::{csr_der, parse_csr, CsrInfo};

impl Pki {
    /// Signs a verified CSR with the CA for `lifetime` (from five minutes ago, as upstream's
    /// signer backdates; never past the CA's own expiry) with the key usages and extended key
    /// usages of `usages` (the CSR API's names) and the request's subject and SANs.
    pub fn sign_csr(
        &self,
        pem: &str,
        usages: &[String],
        lifetime: std::time::Duration,
    ) -> Result<String> {
        let invalid = |reason: String| PkiError::Invalid {
            what: "certificate signing request".into(),
            reason,
        };
        let der = csr_der(pem.as_bytes()).map_err(invalid)?;
        let mut csr =
            rcgen::CertificateSigningRequestParams::from_der(&der.into()).map_err(|e| {
                PkiError::Invalid {
                    what: "certificate signing request".into(),
                    reason: e.to_string(),
                }
            })?;
        let p = &mut csr.params;
        p.is_ca = IsCa::NoCa;
        p.key_usages.clear();
        p.extended_key_usages.clear();
        for u in usages {
            match u.as_str() {
                "digital signature" => p.key_usages.push(KeyUsagePurpose::DigitalSignature),
                "content commitment" => p.key_usages.push(KeyUsagePurpose::ContentCommitment),
                "key encipherment" => p.key_usages.push(KeyUsagePurpose::KeyEncipherment),
                "data encipherment" => p.key_usages.push(KeyUsagePurpose::DataEncipherment),
                "key agreement" => p.key_usages.push(KeyUsagePurpose::KeyAgreement),
                "cert sign" => p.key_usages.push(KeyUsagePurpose::KeyCertSign),
                "crl sign" => p.key_usages.push(KeyUsagePurpose::CrlSign),
                "encipher only" => p.key_usages.push(KeyUsagePurpose::EncipherOnly),
                "decipher only" => p.key_usages.push(KeyUsagePurpose::DecipherOnly),
                "server auth" => p
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ServerAuth),
                "client auth" => p
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ClientAuth),
                "code signing" => p
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::CodeSigning),
                "email protection" | "s/mime" => p
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::EmailProtection),
                "timestamping" => p
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::TimeStamping),
                "ocsp signing" => p
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::OcspSigning),
                "any" => p.extended_key_usages.push(ExtendedKeyUsagePurpose::Any),
                _ => {}
            }
        }
        // rcgen's times are the `time` crate's; x509-parser hands one out for now.
        let now = x509_parser::time::ASN1Time::now().to_datetime();
        p.not_before = now - std::time::Duration::from_secs(300);
        p.not_after = now + lifetime;
        if let Ok((_, ca)) = x509_parser::pem::parse_x509_pem(self.ca.cert_pem.as_bytes()) {
            if let Ok(ca) = ca.parse_x509() {
                let ca_end = ca.validity().not_after.to_datetime();
                if p.not_after > ca_end {
                    p.not_after = ca_end;
                }
            }
        }
        let serial: [u8; 16] = rand::random();
        let mut serial = serial.to_vec();
        serial[0] &= 0x7f; // positive, as RFC 5280 wants
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        p.use_authority_key_identifier_extension = true;
        let ca_key = KeyPair::from_pem(&self.ca.key_pem).map_err(gen_err("CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca.cert_pem, ca_key).map_err(gen_err("CA"))?;
        let cert = csr.signed_by(&issuer).map_err(gen_err("certificate"))?;
        Ok(cert.pem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client certificates are issued once, then loaded from `<name>.crt`/`.key` on the
    /// next start (a restart keeps the admin kubeconfig and the kubelet client identity).
    #[test]
    fn client_certs_are_kept_across_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Pki::load_or_create(dir.path(), &[]).expect("creates");
        let again = Pki::load_or_create(dir.path(), &[]).expect("loads");
        assert_eq!(first.admin.cert_pem, again.admin.cert_pem);
        assert_eq!(first.admin.key_pem, again.admin.key_pem);
        assert_eq!(first.kubelet_client.cert_pem, again.kubelet_client.cert_pem);
        assert_ne!(first.admin.cert_pem, first.kubelet_client.cert_pem);
        // The front proxy's CA and client identity are kept too, and the client is signed by
        // the front-proxy CA, not the cluster CA (aggregated servers trust one, not the other).
        assert_eq!(first.front_proxy_ca.cert_pem, again.front_proxy_ca.cert_pem);
        assert_eq!(
            first.front_proxy_client.cert_pem,
            again.front_proxy_client.cert_pem
        );
        assert_ne!(first.front_proxy_ca.cert_pem, first.ca.cert_pem);
        let issuer_of = |pem: &str| {
            let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
            let c = p.parse_x509().expect("x509");
            (c.issuer().to_string(), c.subject().to_string())
        };
        assert_eq!(
            issuer_of(&first.front_proxy_client.cert_pem),
            (
                "CN=front-proxy-ca".to_string(),
                "CN=front-proxy-client".to_string()
            )
        );
        for name in [
            "admin",
            "apiserver-kubelet-client",
            "front-proxy-ca",
            "front-proxy-client",
        ] {
            let crt = dir.path().join("pki").join(format!("{name}.crt"));
            assert!(crt.exists(), "{}", crt.display());
        }
    }
}
