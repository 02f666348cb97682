//! Reconciling static pod manifests with the pods on disk.

use crate::lifecycle::{replacing, Backoff, BackoffPolicy, Gone, Running, Starting, Terminating};
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
    reported: BTreeSet<String>,
    /// Pods being stopped in the background (their manifest is gone); a long grace period does
    /// not hold up the next sync rounds.
    removing: Arc<Mutex<BTreeSet<String>>>,
    /// Per manifest, the back-off of a pod the runtime keeps refusing (an image that cannot be
    /// pulled, an unsupported volume): `BackoffPolicy::REFUSED`, 10 s doubling to 5 min.
    refused: BTreeMap<PathBuf, Backoff>,
}

impl Agent {
    pub fn new(rt: Runtime) -> Agent {
        Agent {
            rt: Arc::new(rt),
            reported: BTreeSet::new(),
            removing: Arc::default(),
            refused: BTreeMap::new(),
        }
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

    /// One reconcile round over the manifest directory.
    pub fn sync(&mut self, manifest_dir: &Path) {
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
        // Pods whose manifest is gone (stopped in the background), and per manifest the pods to
        // stop before its (new) pod starts (changed manifest, or a retry).
        let mut orphans: Vec<PodEntry> = Vec::new();
        let mut jobs: Vec<(Option<&Manifest>, Vec<PodEntry>)> = Vec::new();
        let wanted: BTreeSet<PathBuf> = manifests.iter().map(|m| m.path.clone()).collect();
        for m in &manifests {
            let existing = by_source.remove(&m.path).unwrap_or_default();
            let (same, mut other): (Vec<PodEntry>, Vec<PodEntry>) = existing
                .into_iter()
                .partition(|p| p.plan.source_hash == m.hash);
            match &m.pod {
                Err(e) => {
                    if self
                        .reported
                        .insert(format!("{}:{}", m.path.display(), m.hash))
                    {
                        warn!("ignoring manifest {}: {e}", m.path.display());
                    }
                    orphans.extend(other);
                }
                Ok(_) if same.is_empty() => jobs.push((Some(m), other)),
                Ok(_) => {
                    let mut same = same.into_iter();
                    let mut start = None;
                    if let Some(first) = same.next() {
                        let running = Running { entry: first };
                        let refused = running.needs_backoff();
                        if !refused {
                            self.refused.remove(&m.path);
                        }
                        let ready =
                            !refused || self.refused.get(&m.path).is_none_or(Backoff::ready);
                        if let Some(why) = running.restart_due().filter(|_| ready) {
                            info!("{why}");
                            if refused {
                                self.refused
                                    .entry(m.path.clone())
                                    .or_default()
                                    .failed(BackoffPolicy::REFUSED);
                            }
                            other.push(running.replace());
                            start = Some(m);
                        }
                    }
                    // Duplicates (should not happen): keep the first.
                    orphans.extend(same);
                    if start.is_some() || !other.is_empty() {
                        jobs.push((start, other));
                    }
                }
            }
        }
        self.refused.retain(|p, _| wanted.contains(p));
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
        let rt = &self.rt;
        std::thread::scope(|s| {
            for (m, old) in jobs {
                s.spawn(move || {
                    // The old pods of a manifest stop before its (new) pod starts.
                    match m.map(|m| (m, &m.pod)) {
                        Some((m, Ok(pod))) => {
                            let starting = Starting::from_file(
                                pod.clone(),
                                m.path.clone(),
                                m.hash.clone(),
                                old,
                            );
                            let _ = starting.start(rt);
                        }
                        _ => {
                            let Gone = Terminating { entries: old }.stop(rt, replacing);
                        }
                    }
                });
            }
        });
    }
}
