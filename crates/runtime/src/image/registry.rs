//! A small Docker Registry HTTP API v2 / OCI distribution client: anonymous, basic and bearer
//! token flows, manifest lists resolved for this node's platform, every blob verified by the store.
//! Plain HTTP only for hosts listed as insecure (and mirror endpoints written `http://`).
//!
//! Registry mirrors (`--registry-mirror`, k3s' registries.yaml `mirrors:`): a pull tries the
//! registry's mirror endpoints in order (those of `*` when the registry has none), then the
//! registry itself unless it is exclusive. Docker Hub's names are one registry (`docker.io`,
//! `index.docker.io`, `registry-1.docker.io`) and keep its `library/` rule on a mirror:
//! `busybox:1` is `/v2/library/busybox/manifests/1` on every endpoint. The image is stored
//! under the name the pod gave, whichever endpoint served it.

use super::reference::Reference;
use super::store::{ImageRecord, ImageStore, LayerRecord, StoreError};
use crate::util;
use base64::Engine;
use rktup_node_contract::RegistryMirror;
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
    /// Every endpoint (mirrors, then the registry) failed; each one's error in order.
    #[error("failed to pull {reference} from any endpoint: {tried}")]
    Endpoints { reference: String, tried: String },
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
    mirrors: Vec<RegistryMirror>,
    /// Registries pulled from their mirrors only.
    exclusive: Vec<String>,
}

/// One place a pull may fetch an image from: a mirror endpoint or the registry itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// host[:port] the HTTP API is served on.
    pub host: String,
    pub plain_http: bool,
    /// The repository on this endpoint (Docker Hub's `library/` applied).
    pub repository: String,
    /// Key of the credentials used (the endpoint's host, the registry's name for the registry).
    pub credentials: String,
    /// `mirror http://127.0.0.1:5000` or `docker.io`, for messages.
    pub label: String,
}

/// Docker Hub's spellings as one registry name.
fn canonical_registry(r: &str) -> &str {
    match r {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        other => other,
    }
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
    endpoint: &'a Endpoint,
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

    /// Mirror endpoints (in order per registry) and the registries served by mirrors only.
    pub fn with_mirrors(mut self, mirrors: &[RegistryMirror], exclusive: &[String]) -> Self {
        self.mirrors = mirrors.to_vec();
        self.exclusive = exclusive.to_vec();
        self
    }

    /// Where a pull of `reference` is tried, in order: the registry's mirrors (or `*`'s), then
    /// the registry unless exclusive.
    pub fn endpoints(&self, reference: &Reference) -> Vec<Endpoint> {
        let registry = canonical_registry(&reference.registry);
        let repository = if registry == "docker.io" && !reference.repository.contains('/') {
            format!("library/{}", reference.repository)
        } else {
            reference.repository.clone()
        };
        let own: Vec<&RegistryMirror> = self
            .mirrors
            .iter()
            .filter(|m| canonical_registry(&m.registry) == registry)
            .collect();
        let (key, mirrors) = if own.is_empty() {
            (
                "*",
                self.mirrors.iter().filter(|m| m.registry == "*").collect(),
            )
        } else {
            (registry, own)
        };
        let mut out: Vec<Endpoint> = mirrors
            .into_iter()
            .map(|m| {
                let (plain_http, host) = m.host();
                Endpoint {
                    host: host.to_string(),
                    plain_http,
                    repository: repository.clone(),
                    credentials: host.to_string(),
                    label: format!("mirror {}", m.endpoint),
                }
            })
            .collect();
        let exclusive = !out.is_empty()
            && self
                .exclusive
                .iter()
                .any(|e| canonical_registry(e) == key || canonical_registry(e) == registry);
        if !exclusive {
            out.push(Endpoint {
                host: reference.api_host().to_string(),
                plain_http: self.scheme(&reference.registry) == "http",
                repository,
                credentials: reference.registry.clone(),
                label: reference.registry.clone(),
            });
        }
        out
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
        let endpoints = self.endpoints(reference);
        let mut tried = Vec::new();
        for (i, endpoint) in endpoints.iter().enumerate() {
            match self.pull_from(store, reference, endpoint) {
                Ok(rec) => {
                    if i > 0 || endpoint.label.starts_with("mirror ") {
                        tracing::debug!("pulled {name} from {}", endpoint.label);
                    }
                    return Ok(rec);
                }
                // Another endpoint may serve it; a bad blob or a full disk would fail there too.
                Err(
                    e @ (PullError::Http { .. }
                    | PullError::Auth { .. }
                    | PullError::Manifest { .. }),
                ) if endpoints.len() > 1 => {
                    tracing::debug!("pull of {name} from {} failed: {e}", endpoint.label);
                    tried.push(format!("{}: {e}", endpoint.label));
                }
                Err(e) => return Err(e),
            }
        }
        Err(PullError::Endpoints {
            reference: name,
            tried: tried.join("; "),
        })
    }

    fn pull_from(
        &self,
        store: &ImageStore,
        reference: &Reference,
        endpoint: &Endpoint,
    ) -> Result<ImageRecord, PullError> {
        let name = reference.to_string();
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(120))
            .build();
        let mut s = Session {
            puller: self,
            agent,
            endpoint,
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
        let e = self.endpoint;
        let scheme = if e.plain_http { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}/{}", e.host, e.repository, path)
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
            registry: self.endpoint.label.clone(),
            msg: "credentials rejected".into(),
        })
    }

    fn authenticate(&mut self, header: &str) -> Result<(), PullError> {
        let creds = self
            .puller
            .credentials
            .get(&self.endpoint.credentials)
            .cloned();
        let basic = creds.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let auth_err = |msg: String| PullError::Auth {
            registry: self.endpoint.label.clone(),
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
                    .unwrap_or_else(|| format!("repository:{}:pull", self.endpoint.repository));
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
    fn mirrors_first_then_the_registry() {
        let m = |s: &str| s.parse::<RegistryMirror>().unwrap();
        let p = Puller::new()
            .with_insecure_registries(&["127.0.0.1:5001".into()])
            .with_mirrors(
                &[
                    m("docker.io=http://127.0.0.1:5000"),
                    m("docker.io=https://mirror.example"),
                    m("*=https://all.example"),
                    m("quay.io=http://q:5000"),
                ],
                &["quay.io".into()],
            );
        let hosts = |r: &str| -> Vec<(String, bool, String)> {
            p.endpoints(&Reference::parse(r).unwrap())
                .into_iter()
                .map(|e| (e.host, e.plain_http, e.repository))
                .collect()
        };
        let lib = "library/busybox".to_string();
        assert_eq!(
            hosts("busybox:1"),
            vec![
                ("127.0.0.1:5000".into(), true, lib.clone()),
                ("mirror.example".into(), false, lib.clone()),
                ("registry-1.docker.io".into(), false, lib.clone()),
            ]
        );
        // Docker Hub's other names are the same registry, with its library/ rule.
        assert_eq!(hosts("index.docker.io/busybox:1")[0].2, lib);
        assert_eq!(hosts("docker.io/library/busybox:1"), hosts("busybox:1"));
        // Exclusive: no fall-back.
        assert_eq!(
            hosts("quay.io/a/b:1"),
            vec![("q:5000".into(), true, "a/b".into())]
        );
        // Any other registry: `*`'s mirrors, then itself (plain HTTP when insecure).
        assert_eq!(
            hosts("127.0.0.1:5001/x:1"),
            vec![
                ("all.example".into(), false, "x".into()),
                ("127.0.0.1:5001".into(), true, "x".into()),
            ]
        );
        // No mirrors: the registry alone, as before.
        let plain = Puller::new().endpoints(&Reference::parse("ghcr.io/o/i:1").unwrap());
        assert_eq!(plain.len(), 1);
        assert_eq!(plain[0].host, "ghcr.io");
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
