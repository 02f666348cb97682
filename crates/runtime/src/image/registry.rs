//! A small Docker Registry HTTP API v2 / OCI distribution client: anonymous, basic and bearer
//! token flows, manifest lists resolved for this node's platform, every blob verified by the store.
//! Plain HTTP only for hosts listed as insecure.

use super::reference::Reference;
use super::store::{ImageRecord, ImageStore, LayerRecord, StoreError};
use crate::util;
use base64::Engine;
use serde::Deserialize;
use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("failed to fetch {url}: {msg}")]
    Http { url: String, msg: String },
    #[error("failed to authenticate to {registry}: {msg}")]
    Auth { registry: String, msg: String },
    #[error("failed to parse manifest {reference}: {msg}")]
    Manifest { reference: String, msg: String },
    #[error("no manifest for platform {os}/{arch} in {reference}")]
    NoPlatform {
        reference: String,
        os: String,
        arch: String,
    },
    #[error("unsupported layer media type {0}")]
    UnsupportedLayer(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: Option<HashMap<String, String>>,
}

#[derive(Debug, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
}

#[derive(Debug, Deserialize)]
pub struct Manifest {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Option<Vec<Descriptor>>,
}

/// GOARCH spelling of this machine.
pub fn node_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// Pick this node's manifest from an index / manifest list.
pub fn select_platform<'a>(
    list: &'a [Descriptor],
    reference: &str,
) -> Result<&'a Descriptor, PullError> {
    let arch = node_arch();
    list.iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .ok_or_else(|| PullError::NoPlatform {
            reference: reference.into(),
            os: "linux".into(),
            arch: arch.into(),
        })
}

pub fn check_layer_type(mt: &str) -> Result<(), PullError> {
    if mt.contains("zstd") || mt.contains("foreign") && mt.contains("nondistributable") {
        return Err(PullError::UnsupportedLayer(mt.into()));
    }
    Ok(())
}

#[derive(Default, Clone)]
pub struct Puller {
    insecure: Vec<String>,
    credentials: HashMap<String, (String, String)>,
    /// Network namespace registries are reached from (e.g. the host's, for a local cluster's
    /// nodes that live in namespaces of their own); None: the caller's.
    netns: Option<std::sync::Arc<std::fs::File>>,
}

/// Parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(k.trim().to_ascii_lowercase(), v.to_string());
        s = next.trim_start_matches([',', ' ']);
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

struct Session<'a> {
    puller: &'a Puller,
    agent: ureq::Agent,
    reference: &'a Reference,
    auth: Option<String>,
}

impl Puller {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_insecure_registries(mut self, hosts: &[String]) -> Self {
        self.insecure = hosts.to_vec();
        self
    }

    pub fn with_credentials(mut self, host: &str, user: &str, pass: &str) -> Self {
        self.credentials
            .insert(host.to_string(), (user.to_string(), pass.to_string()));
        self
    }

    /// Load `auths` from a docker `config.json` (`{"auths":{"host":{"auth":"base64(u:p)"}}}`).
    pub fn with_docker_config(mut self, path: &std::path::Path) -> Self {
        #[derive(Deserialize)]
        struct Cfg {
            #[serde(default)]
            auths: HashMap<String, Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            #[serde(default)]
            auth: Option<String>,
        }
        if let Ok(b) = std::fs::read(path) {
            if let Ok(c) = serde_json::from_slice::<Cfg>(&b) {
                for (host, e) in c.auths {
                    let Some(a) = e.auth else { continue };
                    let Ok(dec) = base64::engine::general_purpose::STANDARD.decode(a.trim()) else {
                        continue;
                    };
                    let dec = String::from_utf8_lossy(&dec).into_owned();
                    if let Some((u, p)) = dec.split_once(':') {
                        let host = host
                            .trim_start_matches("https://")
                            .trim_start_matches("http://")
                            .trim_end_matches('/')
                            .to_string();
                        self.credentials.insert(host, (u.into(), p.into()));
                    }
                }
            }
        }
        self
    }

    /// Pull from inside the network namespace at `path` (opened now, kept open).
    pub fn with_netns(mut self, path: &std::path::Path) -> std::io::Result<Self> {
        let f = std::fs::File::open(path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("network namespace {}: {e}", path.display()),
            )
        })?;
        self.netns = Some(std::sync::Arc::new(f));
        Ok(self)
    }

    fn scheme(&self, host: &str) -> &'static str {
        if self.insecure.iter().any(|h| h == host) {
            "http"
        } else {
            "https"
        }
    }

    /// Pull `reference` into the store (blobs verified, layers unpacked) and name it.
    pub fn pull(
        &self,
        store: &ImageStore,
        reference: &Reference,
    ) -> Result<ImageRecord, PullError> {
        let Some(ns) = &self.netns else {
            return self.pull_here(store, reference);
        };
        // setns changes only the calling thread: a scoped thread enters the namespace, so the
        // registry's sockets are made there, and ends with the pull.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    use std::os::fd::AsRawFd;
                    // SAFETY: setns on an open namespace file, for this thread only.
                    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(PullError::Http {
                            url: reference.to_string(),
                            msg: format!(
                                "failed to enter the image pull network namespace: {}",
                                std::io::Error::last_os_error()
                            ),
                        });
                    }
                    self.pull_here(store, reference)
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(PullError::Http {
                        url: reference.to_string(),
                        msg: "the pull thread panicked".into(),
                    })
                })
        })
    }

    fn pull_here(
        &self,
        store: &ImageStore,
        reference: &Reference,
    ) -> Result<ImageRecord, PullError> {
        let name = reference.to_string();
        let _pull_lock = store.name_lock(&name)?;
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(120))
            .build();
        let mut s = Session {
            puller: self,
            agent,
            reference,
            auth: None,
        };
        let (bytes, _) = s.manifest(reference.reference())?;
        let mut manifest_bytes = bytes;
        let mut m: Manifest = parse_manifest(&manifest_bytes, &name)?;
        if let Some(d) = &reference.digest {
            let actual = util::sha256_digest(&manifest_bytes);
            if &actual != d {
                return Err(StoreError::DigestMismatch {
                    expected: d.clone(),
                    actual,
                }
                .into());
            }
        }
        if let Some(list) = &m.manifests {
            let d = select_platform(list, &name)?;
            let digest = d.digest.clone();
            let (b, _) = s.manifest(&digest)?;
            let actual = util::sha256_digest(&b);
            if actual != digest {
                return Err(StoreError::DigestMismatch {
                    expected: digest,
                    actual,
                }
                .into());
            }
            manifest_bytes = b;
            m = parse_manifest(&manifest_bytes, &name)?;
        }
        let config = m.config.as_ref().ok_or_else(|| PullError::Manifest {
            reference: name.clone(),
            msg: "no config descriptor (schema 1 manifests are not supported)".into(),
        })?;
        let layers = m.layers.as_deref().unwrap_or_default();
        if !store.has_blob(&config.digest) {
            s.blob(store, &config.digest)?;
        }
        let mut recs = Vec::new();
        for l in layers {
            check_layer_type(&l.media_type)?;
            if !store.has_blob(&l.digest) {
                s.blob(store, &l.digest)?;
            }
            recs.push(LayerRecord {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
            });
        }
        let id = store.put_blob_bytes(None, &manifest_bytes)?;
        for l in &recs {
            store.ensure_unpacked(&l.digest)?;
        }
        let rec = ImageRecord {
            id,
            names: vec![],
            config_digest: config.digest.clone(),
            size: recs.iter().map(|l| l.size).sum::<u64>() + config.size,
            layers: recs,
            imported_at: util::now_secs(),
            last_used: 0,
        };
        Ok(store.add_image(rec, &name)?)
    }
}

pub fn parse_manifest(b: &[u8], reference: &str) -> Result<Manifest, PullError> {
    serde_json::from_slice(b).map_err(|e| PullError::Manifest {
        reference: reference.into(),
        msg: e.to_string(),
    })
}

impl Session<'_> {
    fn url(&self, path: &str) -> String {
        let host = self.reference.api_host();
        format!(
            "{}://{}/v2/{}/{}",
            self.puller.scheme(&self.reference.registry),
            host,
            self.reference.repository,
            path
        )
    }

    fn get(&mut self, url: &str, accept: &str) -> Result<ureq::Response, PullError> {
        for attempt in 0..2 {
            let mut req = self.agent.get(url).set("Accept", accept);
            if let Some(a) = &self.auth {
                req = req.set("Authorization", a);
            }
            match req.call() {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(401, r)) if attempt == 0 => {
                    let h = r.header("www-authenticate").unwrap_or("").to_string();
                    self.authenticate(&h)?;
                }
                Err(ureq::Error::Status(code, r)) => {
                    let body = r.into_string().unwrap_or_default();
                    return Err(PullError::Http {
                        url: url.into(),
                        msg: format!(
                            "HTTP {code}: {}",
                            body.trim().chars().take(300).collect::<String>()
                        ),
                    });
                }
                Err(e) => {
                    return Err(PullError::Http {
                        url: url.into(),
                        msg: e.to_string(),
                    })
                }
            }
        }
        Err(PullError::Auth {
            registry: self.reference.registry.clone(),
            msg: "credentials rejected".into(),
        })
    }

    fn authenticate(&mut self, header: &str) -> Result<(), PullError> {
        let creds = self
            .puller
            .credentials
            .get(&self.reference.registry)
            .cloned();
        let basic = creds.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let auth_err = |msg: String| PullError::Auth {
            registry: self.reference.registry.clone(),
            msg,
        };
        match parse_challenge(header) {
            Some(Challenge::Basic) => {
                self.auth = Some(basic.ok_or_else(|| {
                    auth_err("registry wants basic auth and no credentials are configured".into())
                })?);
                Ok(())
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = scope
                    .unwrap_or_else(|| format!("repository:{}:pull", self.reference.repository));
                let mut req = self.agent.get(&realm).query("scope", &scope);
                if let Some(svc) = &service {
                    req = req.query("service", svc);
                }
                if let Some(b) = &basic {
                    req = req.set("Authorization", b);
                }
                let resp = req
                    .call()
                    .map_err(|e| auth_err(format!("token endpoint {realm}: {e}")))?;
                #[derive(Deserialize)]
                struct Tok {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let t: Tok = resp
                    .into_json()
                    .map_err(|e| auth_err(format!("token response: {e}")))?;
                let tok = t
                    .token
                    .or(t.access_token)
                    .ok_or_else(|| auth_err("token response without a token".into()))?;
                self.auth = Some(format!("Bearer {tok}"));
                Ok(())
            }
            None => Err(auth_err(format!("unsupported challenge {header:?}"))),
        }
    }

    fn manifest(&mut self, reference: &str) -> Result<(Vec<u8>, String), PullError> {
        let url = self.url(&format!("manifests/{reference}"));
        let accept = [
            MT_OCI_INDEX,
            MT_DOCKER_LIST,
            MT_OCI_MANIFEST,
            MT_DOCKER_MANIFEST,
        ]
        .join(", ");
        let r = self.get(&url, &accept)?;
        let ct = r.content_type().to_string();
        let mut b = Vec::new();
        r.into_reader()
            .take(16 * 1024 * 1024)
            .read_to_end(&mut b)
            .map_err(|e| PullError::Http {
                url: url.clone(),
                msg: e.to_string(),
            })?;
        Ok((b, ct))
    }

    fn blob(&mut self, store: &ImageStore, digest: &str) -> Result<(), PullError> {
        let url = self.url(&format!("blobs/{digest}"));
        let r = self.get(&url, "*/*")?;
        store.put_blob(Some(digest), r.into_reader())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn selects_this_platform_from_a_list() {
        let m: Manifest = serde_json::from_str(&format!(
            r#"{{"mediaType":"{MT_OCI_INDEX}","manifests":[
              {{"digest":"sha256:{a}","platform":{{"os":"linux","architecture":"s390x-nope"}}}},
              {{"digest":"sha256:{b}","platform":{{"os":"linux","architecture":"{arch}"}}}}]}}"#,
            a = "1".repeat(64),
            b = "2".repeat(64),
            arch = node_arch()
        ))
        .unwrap();
        let d = select_platform(m.manifests.as_deref().unwrap(), "x").unwrap();
        assert!(d.digest.ends_with('2'));
    }
}
