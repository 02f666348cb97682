//! The static pod source: `--pod-manifest-path` read every round, its pods handed to the pod
//! workers (`crate::workers`, the same driver as API pods': pull, start, back-off), pods whose
//! manifest is gone stopped in the background, and pods left running by a previous agent
//! re-adopted at start (`Agent::adopt`). Works with no API server at all (the seed's standalone
//! mode): the workers then log what kubelet would record as events.

use crate::lifecycle::{Gone, Running, Source, Terminating};
use crate::workers::{static_key, Desired, StaticPod, Workers};
use k8s_openapi::api::core::v1::Pod;
use rktup_runtime::manifest::parse_pod;
use rktup_runtime::runtime::{PodEntry, Runtime};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};
/// A manifest file as read this round.
pub struct Manifest {
    pub path: PathBuf,
    pub hash: String,
    pub pod: Result<Pod, String>,
}

/// Read every manifest (kubelet: all non-hidden regular files of the directory).
pub fn read_manifests(dir: &Path) -> Vec<Manifest> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.') && !n.ends_with('~') && !n.ends_with(".swp"))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).ok()?;
            let hash = format!("{:x}", Sha256::digest(text.as_bytes()));
            let pod = parse_pod(&path.display().to_string(), &text).map_err(|e| e.to_string());
            Some(Manifest { path, hash, pod })
        })
        .collect()
}

pub struct Agent {
    pub rt: Arc<Runtime>,
    workers: Workers,
    /// The static pods' workers run here (the kubelet half has a runtime of its own).
    tokio: tokio::runtime::Runtime,
    reported: BTreeSet<String>,
    /// Pods being stopped in the background (their manifest is gone); a long grace period does
    /// not hold up the next sync rounds.
    removing: Arc<Mutex<BTreeSet<String>>>,
}

impl Agent {
    pub fn new(rt: Runtime) -> std::io::Result<Agent> {
        let rt = Arc::new(rt);
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pod-workers")
            .enable_all()
            .build()?;
        Ok(Agent {
            workers: Workers::new(rt.clone()),
            rt,
            tokio,
            reported: BTreeSet::new(),
            removing: Arc::default(),
        })
    }

    /// The pod workers (the kubelet half drives API pods with the same ones).
    pub fn workers(&self) -> Workers {
        self.workers.clone()
    }

    /// At start: pods whose supervisor still runs are re-adopted untouched; pods whose supervisor
    /// died mid-way are cleaned up (DEL, cgroups, mounts) and marked exited.
    pub fn adopt(&self) -> usize {
        let mut adopted = 0;
        for p in self.rt.list() {
            if p.alive {
                adopted += 1;
                info!(
                    "re-adopted running pod k8s_{} ({}/{})",
                    p.plan.uuid, p.plan.namespace, p.plan.name
                );
            } else if !matches!(
                p.status.state,
                rktup_runtime::pod::PodState::Exited | rktup_runtime::pod::PodState::Refused
            ) {
                warn!("pod k8s_{} lost its supervisor: cleaning up", p.plan.uuid);
                if let Err(e) = self.rt.stop(&p) {
                    warn!("failed to clean up pod k8s_{}: {e}", p.plan.uuid);
                }
            }
        }
        adopted
    }

    /// One round over the manifest directory: every manifest's pod is handed to its worker
    /// (started, replaced when `Running::restart_due` under its back-off, its old runtime pods
    /// stopped); runtime pods whose manifest is gone are stopped in the background.
    pub fn sync(&mut self, manifest_dir: &Path) {
        let _in_tokio = self.tokio.enter();
        let manifests = read_manifests(manifest_dir);
        let busy = self.removing.lock().map(|s| s.clone()).unwrap_or_default();
        let mut by_source: BTreeMap<PathBuf, Vec<PodEntry>> = BTreeMap::new();
        for p in self.rt.list() {
            if busy.contains(&p.plan.uuid) {
                continue;
            }
            if let Some(s) = &p.plan.source {
                by_source.entry(s.clone()).or_default().push(p);
            }
        }
        // Pods whose manifest is gone (stopped in the background), and duplicates.
        let mut orphans: Vec<PodEntry> = Vec::new();
        let mut statics: Vec<StaticPod> = Vec::new();
        let wanted: BTreeSet<PathBuf> = manifests.iter().map(|m| m.path.clone()).collect();
        let mut keys: BTreeSet<String> = BTreeSet::new();
        for m in &manifests {
            let existing = by_source.remove(&m.path).unwrap_or_default();
            let key = static_key(&m.path);
            keys.insert(key.clone());
            let pod = match &m.pod {
                Err(e) => {
                    if self
                        .reported
                        .insert(format!("{}:{}", m.path.display(), m.hash))
                    {
                        warn!("ignoring manifest {}: {e}", m.path.display());
                    }
                    orphans.extend(existing);
                    continue;
                }
                Ok(pod) => pod,
            };
            statics.push(StaticPod {
                path: m.path.clone(),
                hash: m.hash.clone(),
                pod: pod.clone(),
            });
            if self.workers.is_busy(&key) {
                // Its worker is at it (starting, or stopping old pods).
                continue;
            }
            self.workers.renew(&key, &m.hash);
            let (mut same, other): (Vec<PodEntry>, Vec<PodEntry>) = existing
                .into_iter()
                .partition(|p| p.plan.source_hash == m.hash);
            let desired = Desired {
                key: key.clone(),
                pod: pod.clone(),
                source: Source::File {
                    path: m.path.clone(),
                    hash: m.hash.clone(),
                },
            };
            same.sort_by_key(|e| e.plan.created_at);
            let Some(newest) = same.pop() else {
                // Not run yet (or changed): start it, its old pods stopped first.
                if self.workers.retry_ready(&key) {
                    self.workers.start(desired, other);
                } else if !other.is_empty() {
                    self.workers.stop_old(&key, other, true);
                }
                continue;
            };
            // Duplicates (should not happen): keep the newest.
            orphans.extend(same);
            let running = Running { entry: newest };
            let mut old = other;
            if self.workers.replace_due(&key, &running, "") {
                old.push(running.replace());
                self.workers.start(desired, old);
            } else if !old.is_empty() {
                self.workers.stop_old(&key, old, true);
            }
        }
        self.workers.retain(true, &keys);
        self.workers.set_statics(statics);
        for (src, pods) in by_source {
            if !wanted.contains(&src) {
                orphans.extend(pods);
            }
        }
        for p in orphans {
            if let Ok(mut r) = self.removing.lock() {
                r.insert(p.plan.uuid.clone());
            }
            let rt = self.rt.clone();
            let removing = self.removing.clone();
            std::thread::spawn(move || {
                info!(
                    "manifest {} removed: stopping pod k8s_{}",
                    p.plan.source.as_deref().unwrap_or(Path::new("?")).display(),
                    p.plan.uuid
                );
                let uuid = p.plan.uuid.clone();
                let Gone = Terminating { entries: vec![p] }.stop(&rt, |_| {});
                if let Ok(mut r) = removing.lock() {
                    r.remove(&uuid);
                }
            });
        }
    }
}
