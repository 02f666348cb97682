//! The storage layer: a revisioned key/value store of JSON objects with watch.
//!
//! The API layer only talks to the [`Store`] trait, so an etcd v3 backend can
//! follow without touching it. Keys look like etcd keys of kube-apiserver:
//! `/registry/<group>/<resource>/<namespace>/<name>` (the group part is
//! `core` for the legacy group).
//!
//! Semantics follow etcd's, which kube-apiserver relies on: every write bumps
//! one global revision and that revision becomes the object's
//! `metadata.resourceVersion`; watches replay history after a revision, and a
//! revision older than the compacted history is `Gone` (HTTP 410).

mod file;

pub use file::FileStore;

use serde_json::Value;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The kind of change a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The watch event `type` as the API server sends it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change in the store.
#[derive(Debug, Clone)]
pub struct Event {
    pub revision: u64,
    pub kind: EventType,
    pub key: Arc<str>,
    /// The object after the change (for `Deleted`, the last state, carrying
    /// the deletion's revision as its resourceVersion, as etcd3 watch does).
    pub object: Arc<Value>,
    /// The object before the change, if any.
    pub prev: Option<Arc<Value>>,
}

/// A stored object with the revision that last modified it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub revision: u64,
    pub object: Arc<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0} not found")]
    NotFound(String),
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error("too old resource version: {requested} ({oldest})")]
    Gone { requested: u64, oldest: u64 },
    #[error("failed to {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store {0} is in use by another process")]
    Locked(std::path::PathBuf),
    #[error("failed to decode {path}: {message}")]
    Corrupt {
        path: std::path::PathBuf,
        message: String,
    },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A live watch: the events after the requested revision, in order. The
/// channel closes when the watcher falls too far behind (the store never
/// waits for a slow watcher); the client then resumes from the last revision
/// it saw, like any kube watch that ends.
pub struct WatchStream {
    pub rx: mpsc::Receiver<Arc<Event>>,
}

/// The storage interface the API server and controllers use.
pub trait Store: Send + Sync + 'static {
    /// Current (latest) revision of the whole store.
    fn revision(&self) -> u64;
    /// Oldest revision a watch can still start from.
    fn oldest_watchable(&self) -> u64;
    fn get(&self, key: &str) -> Option<Stored>;
    /// All objects whose key starts with `prefix`, in key order, and the
    /// revision the listing is consistent with.
    fn list(&self, prefix: &str) -> (Vec<Stored>, u64);
    /// All objects under `prefix` as they were at `revision` (etcd's range read at a
    /// revision): what the later pages of a paginated list are served from, so every page
    /// shows one state and a watch from the list's resourceVersion misses nothing. A
    /// revision older than the kept history is `Gone`.
    fn list_at(&self, prefix: &str, revision: u64) -> Result<Vec<Stored>>;
    /// Create `key`; fails if it exists. The store sets `metadata.resourceVersion`.
    fn create(&self, key: &str, object: Value) -> Result<Stored>;
    /// Replace `key`. With `expected`, fails with `Conflict` unless the
    /// current revision of the key equals it.
    fn update(&self, key: &str, object: Value, expected: Option<u64>) -> Result<Stored>;
    /// Delete `key`, returning the last state.
    fn delete(&self, key: &str, expected: Option<u64>) -> Result<Stored>;
    /// Events for keys under `prefix` with revision > `after`.
    fn watch(&self, prefix: &str, after: u64) -> Result<WatchStream>;
    /// Flush everything to disk (called on shutdown).
    fn sync(&self) -> Result<()>;
}

/// Writes `resourceVersion` into an object's metadata.
pub(crate) fn set_resource_version(object: &mut Value, revision: u64) {
    if let Some(map) = object.as_object_mut() {
        let meta = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(
                "resourceVersion".into(),
                Value::String(revision.to_string()),
            );
        }
    }
}
