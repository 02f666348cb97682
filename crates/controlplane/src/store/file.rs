//! A durable in-memory store: every object lives in a `BTreeMap`, every
//! write is appended to a JSON-lines log under the data dir before it is
//! acknowledged, and the log is folded into a snapshot once it grows.
//!
//! Why not redb/sled: the API server needs the whole working set in memory
//! anyway (lists, selectors and watch replay are served from it, as the
//! kube-apiserver watch cache does), so the disk only has to be a redo log.
//! An append-only log is one `write(2)` per change, survives a killed
//! process (the data is in the page cache) and is fsynced every
//! [`FSYNC_INTERVAL`] and on shutdown.

use super::{
    set_resource_version, Event, EventType, Result, Store, StoreError, Stored, WatchStream,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions, Permissions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;

/// How many past events are kept for watches to resume from; older
/// revisions get `410 Gone`. kube-apiserver's watch cache is sized similarly
/// (by count, default 100 per resource, and by a time window).
pub const HISTORY_EVENTS: usize = 10_000;
/// Log entries after which the log is folded into a snapshot.
pub const SNAPSHOT_AFTER: usize = 50_000;
/// Per-watcher queue; a watcher this far behind is closed, never waited for.
pub const WATCH_QUEUE: usize = 4_096;
pub const FSYNC_INTERVAL: Duration = Duration::from_millis(100);

struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Arc<Event>>,
}

struct Inner {
    data: BTreeMap<String, Stored>,
    history: VecDeque<Arc<Event>>,
    revision: u64,
    /// Revision before the oldest kept event: watches from older revisions are gone.
    compacted: u64,
    log: File,
    log_entries: usize,
    watchers: Vec<Watcher>,
}

impl Inner {
    /// The stored objects whose key starts with `prefix`, in key order.
    fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a Stored)> {
        self.data
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
    }
}

pub struct FileStore {
    dir: PathBuf,
    /// Held (flock) for the store's lifetime: one process per data dir.
    _lock: File,
    inner: Mutex<Inner>,
    dirty: Arc<AtomicBool>,
}

/// Options for a file that is 0600 from its creation on.
fn private() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(0o600);
    o
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl FileStore {
    /// Opens (or creates) the store under `dir`, replaying snapshot and log.
    pub fn open(dir: &Path) -> Result<Arc<Self>> {
        // The store holds every Secret: its directory is 0700 and its files 0600 from their
        // creation on (an older store's are tightened here).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create", dir))?;
        std::fs::set_permissions(dir, Permissions::from_mode(0o700))
            .map_err(io_err("set the mode of", dir))?;
        let lock_path = dir.join("LOCK");
        let lock = private()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        lock.try_lock()
            .map_err(|_| StoreError::Locked(dir.to_path_buf()))?;
        let snap_path = dir.join("snapshot.json");
        let log_path = dir.join("log.jsonl");
        let mut data = BTreeMap::new();
        let mut revision = 0u64;
        if snap_path.exists() {
            let text = std::fs::read(&snap_path).map_err(io_err("read", &snap_path))?;
            let snap: Value = serde_json::from_slice(&text).map_err(|e| StoreError::Corrupt {
                path: snap_path.clone(),
                message: e.to_string(),
            })?;
            revision = snap["revision"].as_u64().unwrap_or(0);
            if let Some(items) = snap["items"].as_array() {
                for item in items {
                    if let (Some(k), Some(r)) = (item["k"].as_str(), item["r"].as_u64()) {
                        data.insert(
                            k.to_string(),
                            Stored {
                                revision: r,
                                object: Arc::new(item["v"].clone()),
                            },
                        );
                    }
                }
            }
        }
        for p in [&snap_path, &log_path] {
            if let Ok(md) = std::fs::metadata(p) {
                if md.permissions().mode() & 0o077 != 0 {
                    std::fs::set_permissions(p, Permissions::from_mode(0o600))
                        .map_err(io_err("set the mode of", p))?;
                }
            }
        }
        let mut log_entries = 0;
        if log_path.exists() {
            let f = File::open(&log_path).map_err(io_err("open", &log_path))?;
            for line in BufReader::new(f).lines() {
                let line = line.map_err(io_err("read", &log_path))?;
                // A torn last line (killed mid-write) is not an acknowledged write.
                let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                    break;
                };
                let (Some(r), Some(k)) = (entry["r"].as_u64(), entry["k"].as_str()) else {
                    break;
                };
                if r <= revision {
                    continue; // already in the snapshot
                }
                revision = r;
                if entry.get("d").is_some() {
                    data.remove(k);
                } else {
                    data.insert(
                        k.to_string(),
                        Stored {
                            revision: r,
                            object: Arc::new(entry["v"].clone()),
                        },
                    );
                }
                log_entries += 1;
            }
        }
        let log = private()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err("open", &log_path))?;
        let dirty = Arc::new(AtomicBool::new(false));
        let store = Arc::new(FileStore {
            dir: dir.to_path_buf(),
            _lock: lock,
            inner: Mutex::new(Inner {
                data,
                history: VecDeque::new(),
                revision,
                compacted: revision,
                log,
                log_entries,
                watchers: Vec::new(),
            }),
            dirty: dirty.clone(),
        });
        // Group commit: one fsync per interval covers every write in it.
        let weak = Arc::downgrade(&store);
        std::thread::Builder::new()
            .name("store-fsync".into())
            .spawn(move || loop {
                std::thread::sleep(FSYNC_INTERVAL);
                let Some(store) = weak.upgrade() else { break };
                if store.dirty.swap(false, Ordering::AcqRel) {
                    let _ = store.sync();
                }
            })
            .map_err(io_err("spawn fsync thread", dir))?;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every
        // mutation is a single map operation), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn commit(
        &self,
        inner: &mut Inner,
        key: &str,
        kind: EventType,
        object: Option<Value>,
        prev: Option<Arc<Value>>,
    ) -> Result<Stored> {
        let revision = inner.revision + 1;
        let (logged, stored) = match object {
            Some(mut obj) => {
                set_resource_version(&mut obj, revision);
                let obj = Arc::new(obj);
                (
                    json!({"r": revision, "k": key, "v": &*obj}),
                    Stored {
                        revision,
                        object: obj,
                    },
                )
            }
            None => {
                let mut last = prev.as_deref().cloned().unwrap_or(Value::Null);
                set_resource_version(&mut last, revision);
                (
                    json!({"r": revision, "k": key, "d": true}),
                    Stored {
                        revision,
                        object: Arc::new(last),
                    },
                )
            }
        };
        let mut line = serde_json::to_vec(&logged).map_err(|e| StoreError::Corrupt {
            path: self.dir.clone(),
            message: e.to_string(),
        })?;
        line.push(b'\n');
        let log_path = self.dir.join("log.jsonl");
        inner
            .log
            .write_all(&line)
            .map_err(io_err("append to", &log_path))?;
        self.dirty.store(true, Ordering::Release);
        inner.revision = revision;
        inner.log_entries += 1;
        match kind {
            EventType::Deleted => {
                inner.data.remove(key);
            }
            _ => {
                inner.data.insert(key.to_string(), stored.clone());
            }
        }
        let event = Arc::new(Event {
            revision,
            kind,
            key: key.into(),
            object: stored.object.clone(),
            prev,
        });
        inner.history.push_back(event.clone());
        while inner.history.len() > HISTORY_EVENTS {
            if let Some(old) = inner.history.pop_front() {
                inner.compacted = old.revision;
            }
        }
        // Fan out without ever waiting: a full or closed queue drops the watcher.
        inner.watchers.retain(|w| {
            if !key.starts_with(&w.prefix) {
                return !w.tx.is_closed();
            }
            w.tx.try_send(event.clone()).is_ok()
        });
        if inner.log_entries >= SNAPSHOT_AFTER {
            self.snapshot(inner)?;
        }
        Ok(stored)
    }

    /// Writes all data to `snapshot.json` (atomically, via rename) and
    /// starts a new empty log.
    fn snapshot(&self, inner: &mut Inner) -> Result<()> {
        let tmp = self.dir.join("snapshot.json.tmp");
        let snap_path = self.dir.join("snapshot.json");
        let log_path = self.dir.join("log.jsonl");
        let items: Vec<Value> = inner
            .data
            .iter()
            .map(|(k, s)| json!({"k": k, "r": s.revision, "v": &*s.object}))
            .collect();
        let body = serde_json::to_vec(&json!({"revision": inner.revision, "items": items}))
            .map_err(|e| StoreError::Corrupt {
                path: tmp.clone(),
                message: e.to_string(),
            })?;
        // A leftover temp file would keep its old mode: always create a new one.
        let _ = std::fs::remove_file(&tmp);
        let mut f = private()
            .create_new(true)
            .write(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(&body).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        std::fs::rename(&tmp, &snap_path).map_err(io_err("rename", &tmp))?;
        inner.log = private()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&log_path)
            .map_err(io_err("truncate", &log_path))?;
        inner.log_entries = 0;
        Ok(())
    }
}

/// The revision an object was stored at, from its `metadata.resourceVersion`.
fn revision_of(object: &Value) -> u64 {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Store for FileStore {
    fn revision(&self) -> u64 {
        self.lock().revision
    }

    fn oldest_watchable(&self) -> u64 {
        self.lock().compacted
    }

    fn get(&self, key: &str) -> Option<Stored> {
        self.lock().data.get(key).cloned()
    }

    fn list(&self, prefix: &str) -> (Vec<Stored>, u64) {
        let inner = self.lock();
        let items = inner.under(prefix).map(|(_, v)| v.clone()).collect();
        (items, inner.revision)
    }

    fn list_at(&self, prefix: &str, revision: u64) -> Result<Vec<Stored>> {
        let inner = self.lock();
        if revision < inner.compacted {
            return Err(StoreError::Gone {
                requested: revision,
                oldest: inner.compacted + 1,
            });
        }
        let mut items: BTreeMap<String, Stored> = inner
            .under(prefix)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Undo the later changes, newest first: an object's state before a change is the
        // event's `prev` (none: the object did not exist).
        for e in inner.history.iter().rev() {
            if e.revision <= revision {
                break;
            }
            if !e.key.starts_with(prefix) {
                continue;
            }
            match &e.prev {
                None => {
                    items.remove(&*e.key);
                }
                Some(prev) => {
                    let stored = Stored {
                        revision: revision_of(prev),
                        object: prev.clone(),
                    };
                    items.insert(e.key.to_string(), stored);
                }
            }
        }
        Ok(items.into_values().collect())
    }

    fn create(&self, key: &str, object: Value) -> Result<Stored> {
        let mut inner = self.lock();
        if inner.data.contains_key(key) {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        self.commit(&mut inner, key, EventType::Added, Some(object), None)
    }

    fn update(&self, key: &str, object: Value, expected: Option<u64>) -> Result<Stored> {
        let mut inner = self.lock();
        let current = inner
            .data
            .get(key)
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        if let Some(expected) = expected {
            if current.revision != expected {
                return Err(StoreError::Conflict {
                    key: key.to_string(),
                    expected,
                    actual: current.revision,
                });
            }
        }
        let prev = Some(current.object.clone());
        self.commit(&mut inner, key, EventType::Modified, Some(object), prev)
    }

    fn delete(&self, key: &str, expected: Option<u64>) -> Result<Stored> {
        let mut inner = self.lock();
        let current = inner
            .data
            .get(key)
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        if let Some(expected) = expected {
            if current.revision != expected {
                return Err(StoreError::Conflict {
                    key: key.to_string(),
                    expected,
                    actual: current.revision,
                });
            }
        }
        let prev = Some(current.object.clone());
        self.commit(&mut inner, key, EventType::Deleted, None, prev)
    }

    fn watch(&self, prefix: &str, after: u64) -> Result<WatchStream> {
        let mut inner = self.lock();
        if after < inner.compacted {
            return Err(StoreError::Gone {
                requested: after,
                oldest: inner.compacted + 1,
            });
        }
        let backlog: Vec<Arc<Event>> = inner
            .history
            .iter()
            .filter(|e| e.revision > after && e.key.starts_with(prefix))
            .cloned()
            .collect();
        let (tx, rx) = mpsc::channel(WATCH_QUEUE + backlog.len());
        for e in backlog {
            // Capacity was reserved above, so this cannot fail.
            let _ = tx.try_send(e);
        }
        inner.watchers.push(Watcher {
            prefix: prefix.to_string(),
            tx,
        });
        Ok(WatchStream { rx })
    }

    fn sync(&self) -> Result<()> {
        let log_path = self.dir.join("log.jsonl");
        // fsync through a second handle, outside the lock: on a busy disk an fdatasync takes
        // milliseconds, and every read and write of the API server waited for it. A snapshot
        // that swaps the log meanwhile leaves this handle on the old file, which is harmless:
        // the snapshot is on disk before the new log is used.
        let log = self
            .lock()
            .log
            .try_clone()
            .map_err(io_err("duplicate the handle of", &log_path))?;
        log.sync_data().map_err(io_err("fsync", &log_path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str) -> Value {
        json!({"kind": "ConfigMap", "metadata": {"name": name}})
    }

    #[test]
    fn revisions_increase_and_conflicts_detected() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let a = s.create("/r/a", obj("a")).unwrap();
        let b = s.create("/r/b", obj("b")).unwrap();
        assert!(b.revision > a.revision);
        assert_eq!(
            b.object["metadata"]["resourceVersion"],
            b.revision.to_string()
        );
        assert!(matches!(
            s.create("/r/a", obj("a")),
            Err(StoreError::AlreadyExists(_))
        ));
        assert!(matches!(
            s.update("/r/a", obj("a"), Some(a.revision + 100)),
            Err(StoreError::Conflict { .. })
        ));
        let a2 = s.update("/r/a", obj("a"), Some(a.revision)).unwrap();
        assert_eq!(a2.revision, b.revision + 1);
    }

    #[test]
    fn a_data_dir_is_used_by_one_store_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        assert!(matches!(
            FileStore::open(dir.path()),
            Err(StoreError::Locked(_))
        ));
        drop(s);
        // The fsync thread holds only a weak reference: the lock is released.
        std::thread::sleep(FSYNC_INTERVAL * 2);
        assert!(FileStore::open(dir.path()).is_ok());
    }

    #[test]
    fn reopen_replays_log_and_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = FileStore::open(dir.path()).unwrap();
            for i in 0..10 {
                s.create(&format!("/r/{i}"), obj(&i.to_string())).unwrap();
            }
            s.delete("/r/3", None).unwrap();
            let mut inner = s.lock();
            s.snapshot(&mut inner).unwrap();
            drop(inner);
            s.update("/r/4", json!({"metadata": {"name": "4"}, "x": 1}), None)
                .unwrap();
        }
        let s = FileStore::open(dir.path()).unwrap();
        assert_eq!(s.revision(), 12);
        assert!(s.get("/r/3").is_none());
        assert_eq!(s.get("/r/4").unwrap().object["x"], 1);
        assert_eq!(s.list("/r/").0.len(), 9);
        // A new store has no history: older revisions are gone.
        assert!(matches!(s.watch("/r/", 5), Err(StoreError::Gone { .. })));
    }

    #[tokio::test]
    async fn watch_replays_history_then_follows() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let a = s.create("/r/a", obj("a")).unwrap();
        s.create("/other/x", obj("x")).unwrap();
        s.create("/r/b", obj("b")).unwrap();
        let mut w = s.watch("/r/", a.revision).unwrap();
        s.delete("/r/a", None).unwrap();
        let e1 = w.rx.recv().await.unwrap();
        assert_eq!((&*e1.key, e1.kind), ("/r/b", EventType::Added));
        let e2 = w.rx.recv().await.unwrap();
        assert_eq!((&*e2.key, e2.kind), ("/r/a", EventType::Deleted));
        assert_eq!(
            e2.object["metadata"]["resourceVersion"],
            e2.revision.to_string()
        );
    }

    #[test]
    fn slow_watcher_never_blocks_writer_and_history_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let w = s.watch("/r/", 0).unwrap();
        for i in 0..(WATCH_QUEUE + HISTORY_EVENTS + 10) {
            s.update("/r/a", obj("a"), None).ok();
            if i == 0 {
                s.create("/r/a", obj("a")).unwrap();
            }
        }
        // The unread watcher was dropped instead of stalling the writes.
        assert!(s.lock().watchers.is_empty());
        drop(w);
        assert!(s.oldest_watchable() > 1);
        assert!(matches!(s.watch("/r/", 1), Err(StoreError::Gone { .. })));
    }

    #[test]
    fn list_at_shows_the_state_of_a_past_revision() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        s.create("/r/a", obj("a")).unwrap();
        s.create("/r/c", obj("c")).unwrap();
        s.create("/other/x", obj("x")).unwrap();
        let (before, rev) = s.list("/r/");
        // After `rev`: one object added, one changed, one deleted and added back, one deleted.
        s.create("/r/b", obj("b")).unwrap();
        s.update("/r/a", json!({"metadata": {"name": "a"}, "x": 1}), None)
            .unwrap();
        s.delete("/r/c", None).unwrap();
        s.create("/r/c", obj("c")).unwrap();
        s.delete("/r/c", None).unwrap();
        s.create("/other/y", obj("y")).unwrap();
        let then = s.list_at("/r/", rev).unwrap();
        let view = |v: &[Stored]| -> Vec<(u64, Value)> {
            v.iter()
                .map(|s| (s.revision, (*s.object).clone()))
                .collect()
        };
        assert_eq!(view(&then), view(&before));
        let (now, now_rev) = s.list("/r/");
        assert_eq!(view(&s.list_at("/r/", now_rev).unwrap()), view(&now));
        // Older than the kept history: gone, as a watch from there would be.
        let fresh = tempfile::tempdir().unwrap();
        let t = FileStore::open(fresh.path()).unwrap();
        for i in 0..(HISTORY_EVENTS + 2) {
            t.create(&format!("/r/{i}"), obj("o")).unwrap();
        }
        assert!(matches!(t.list_at("/r/", 1), Err(StoreError::Gone { .. })));
    }
}
