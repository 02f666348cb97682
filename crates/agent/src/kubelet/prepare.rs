//! Getting an API pod ready for the runtime, as kubelet does before it creates containers:
//! its API-backed volumes materialised (`volumes`, FailedMount when they cannot be), then its
//! containers' env resolved (`env`, with the service variables of `dns`;
//! CreateContainerConfigError when it cannot be), and the warnings of forming its DNS recorded
//! as events. The runtime then plans the pod on its own: the volumes as prepared directories,
//! the env as values, resolv.conf/hosts/hostname from the node's DNS settings.

use super::dns::{self, Services};
use super::downward::NodeInfo;
use super::local_path;
use super::objects::{request_token, Objects, Refs};
use super::volumes::{self, Tokens};
use k8s_openapi::api::core::v1::Pod;
use rktup_runtime::manifest::api_volume_dir;
use rktup_runtime::manifest::dns::NodeDns;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use tracing::{info, warn};

/// Why a pod is not handed to the runtime yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// Volumes that could not be set up: (volume, message as kubelet words it, e.g.
    /// `MountVolume.SetUp failed for volume "v" : configmap "c" not found`).
    Mount(Vec<(String, String)>),
    /// A container whose config cannot be built.
    Config(super::env::ConfigError),
}

struct CachedToken {
    token: String,
    /// Re-requested after this (80 % of its lifetime, at most 24 h, as kubelet's token manager).
    refresh_at: i64,
}

pub struct Preparer {
    client: kube::Client,
    root: PathBuf,
    node: NodeInfo,
    /// (pod uid, volume, source index) → token.
    tokens: Mutex<HashMap<(String, String, usize), CachedToken>>,
    /// Every Service (for service variables); None outside a tokio runtime.
    services: Option<Services>,
    /// The node's DNS settings, to record the warnings of forming pods' DNS.
    dns: NodeDns,
    /// Where this node's local-path volumes live (`local_path::root`, canonical).
    local_root: PathBuf,
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

impl Preparer {
    /// Starts the Services watch and the node's local-path loop (on the current tokio runtime).
    pub fn new(client: kube::Client, root: PathBuf, node: NodeInfo) -> Preparer {
        let services = tokio::runtime::Handle::try_current()
            .ok()
            .map(|_| Services::watch(client.clone()));
        let local_root = local_path::root(&root);
        let local_root = std::fs::create_dir_all(&local_root)
            .and_then(|()| std::fs::canonicalize(&local_root))
            .unwrap_or(local_root);
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(local_path::run(
                client.clone(),
                node.name.clone(),
                root.clone(),
            ));
        }
        Preparer {
            local_root,
            client,
            root,
            node,
            tokens: Mutex::default(),
            services,
            dns: NodeDns::default(),
        }
    }

    /// The node's DNS settings (the runtime's `cfg.dns`), for the DNS warning events.
    pub fn with_dns(mut self, dns: NodeDns) -> Preparer {
        self.dns = dns;
        self
    }

    /// The pod's service variables (kubelet's `getServiceEnvVarMap`); an API pod waits, with
    /// kubelet's message, until the Services have been listed once.
    async fn service_env(&self, pod: &Pod, ns: &str) -> Result<Vec<(String, String)>, Blocked> {
        let Some(services) = &self.services else {
            return Ok(vec![]);
        };
        let links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        match services.list(std::time::Duration::from_secs(5)).await {
            Some(all) => Ok(dns::service_env(all.iter().map(|s| &**s), ns, links)),
            None => {
                let spec = pod.spec.as_ref();
                let (container, init) = match spec.and_then(|s| s.init_containers.as_ref()) {
                    Some(i) if !i.is_empty() => (i[0].name.clone(), true),
                    _ => (
                        spec.and_then(|s| s.containers.first())
                            .map(|c| c.name.clone())
                            .unwrap_or_default(),
                        false,
                    ),
                };
                Err(Blocked::Config(super::env::ConfigError {
                    container,
                    init,
                    message: dns::NOT_SYNCED.into(),
                }))
            }
        }
    }

    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// Tokens of the pod's projected serviceAccountToken sources; cached ones are reused until
    /// their refresh time when `reuse`.
    async fn tokens(&self, pod: &Pod, reuse: bool) -> Tokens {
        let mut out = Tokens::new();
        let u = uid(pod);
        let now = rktup_runtime::util::now_secs();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            for (i, src) in v
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
                .enumerate()
            {
                let Some(t) = &src.service_account_token else {
                    continue;
                };
                let key = (u.clone(), v.name.clone(), i);
                if reuse {
                    let cached = self.tokens.lock().ok().and_then(|m| {
                        m.get(&key)
                            .filter(|c| c.refresh_at > now)
                            .map(|c| c.token.clone())
                    });
                    if let Some(tok) = cached {
                        out.insert((v.name.clone(), i), Ok(tok));
                        continue;
                    }
                }
                let r = request_token(
                    &self.client,
                    pod,
                    t.audience.as_deref(),
                    t.expiration_seconds,
                )
                .await;
                if let Ok((tok, exp)) = &r {
                    let ttl = exp.map(|e| e - now).unwrap_or(3600).max(0);
                    let refresh_at = now + (ttl * 8 / 10).min(24 * 3600);
                    if let Ok(mut m) = self.tokens.lock() {
                        m.insert(
                            key,
                            CachedToken {
                                token: tok.clone(),
                                refresh_at,
                            },
                        );
                    }
                }
                out.insert((v.name.clone(), i), r.map(|(t, _)| t));
            }
        }
        out
    }

    /// Set up (or update) every API-backed volume of the pod; all are tried, each failure is
    /// reported.
    async fn volumes(&self, pod: &Pod, objs: &Objects, refresh: bool) -> Result<(), Blocked> {
        let u = uid(pod);
        let tokens = self.tokens(pod, refresh).await;
        let fs_group = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.fs_group)
            .and_then(|g| u32::try_from(g).ok());
        let mut failed = vec![];
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let Some(payload) = volumes::payload(v, pod, objs, &tokens, &self.node) else {
                continue;
            };
            let dir = api_volume_dir(&self.root, &u, &v.name);
            let r = payload.and_then(|p| {
                volumes::setup_dir(&dir, volumes::in_memory(v))
                    .and_then(|()| volumes::write_payload(&dir, &p, fs_group))
                    .map_err(|source| volumes::VolumeError::Write {
                        dir: dir.clone(),
                        source,
                    })
            });
            match r {
                Ok(changed) => {
                    if changed && refresh {
                        info!(
                            "kubelet: updated volume {:?} of pod {}/{}",
                            v.name,
                            pod.metadata.namespace.as_deref().unwrap_or_default(),
                            pod.metadata.name.as_deref().unwrap_or_default()
                        );
                    }
                }
                Err(e) => failed.push((
                    v.name.clone(),
                    format!("MountVolume.SetUp failed for volume {:?} : {e}", v.name),
                )),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Blocked::Mount(failed))
        }
    }

    /// A static pod's service variables: what the Services cache holds now. Unlike an API
    /// pod, a static pod is not held back until the Services were listed (kubelet makes the
    /// same exception: static pods may be what brings the API server up).
    pub async fn static_service_env(&self, pod: &Pod) -> Vec<(String, String)> {
        let Some(services) = &self.services else {
            return vec![];
        };
        let ns = pod
            .metadata
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        match services.list(std::time::Duration::ZERO).await {
            Some(all) => dns::service_env(all.iter().map(|s| &**s), &ns, links),
            None => vec![],
        }
    }

    /// The pod as the runtime should run it: volumes prepared, env resolved.
    pub async fn prepare(&self, pod: &Pod) -> Result<Pod, Blocked> {
        if uid(pod).is_empty() {
            return Ok(pod.clone());
        }
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let objs = Objects::fetch(&self.client, &ns, &Refs::of(pod, true)).await;
        self.volumes(pod, &objs, false).await?;
        // persistentVolumeClaim volumes become the host paths of their bound volumes.
        let claimed = local_path::with_claims(&self.client, pod, &self.node.name, &self.local_root)
            .await
            .map_err(Blocked::Mount)?;
        let services = self.service_env(pod, &ns).await?;
        let ready =
            super::env::resolve(&claimed, &objs, &self.node, &services).map_err(Blocked::Config)?;
        // The runtime forms the same configuration when it plans the pod; kubelet's events
        // about it come from here, where the API is.
        let dns = self.dns.clone();
        let p = pod.clone();
        let formed = tokio::task::spawn_blocking(move || {
            rktup_runtime::manifest::dns::pod_resolv_conf(&p, &dns)
        })
        .await;
        if let Ok(Ok((_, warnings))) = formed {
            dns::record_warnings(&self.client, &self.node.name, pod, &warnings).await;
        }
        Ok(ready)
    }

    /// Bring a running pod's volumes up to date with the API (kubelet updates configMap,
    /// secret, downwardAPI and projected volumes in place; env is fixed at start).
    pub async fn refresh(&self, pod: &Pod) -> Result<(), Blocked> {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let refs = Refs::of(pod, false);
        let has_api_volumes = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .any(|v| rktup_runtime::manifest::api_volume_kind(v).is_some());
        if uid(pod).is_empty() || !has_api_volumes {
            return Ok(());
        }
        let objs = Objects::fetch(&self.client, &ns, &refs).await;
        self.volumes(pod, &objs, true).await
    }

    /// Remove the volume directories of pods not in `keep` (pod uids).
    pub fn cleanup(&self, keep: &BTreeSet<String>) {
        let base = volumes::volumes_root(&self.root);
        let Ok(rd) = std::fs::read_dir(&base) else {
            return;
        };
        for e in rd.flatten() {
            let u = e.file_name().to_string_lossy().into_owned();
            if keep.contains(&u) {
                continue;
            }
            match volumes::remove_pod_dir(&e.path()) {
                Ok(()) => {
                    if let Ok(mut m) = self.tokens.lock() {
                        m.retain(|k, _| k.0 != u);
                    }
                }
                Err(err) => warn!("kubelet: failed to remove volumes of pod {u}: {err}"),
            }
        }
    }
}
