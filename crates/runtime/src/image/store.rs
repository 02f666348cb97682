//! The content-addressed image store under `<root>/images`:
//!
//! ```text
//! blobs/sha256/<hex>        manifests, configs and layer tarballs, verified against their digest
//! layers/<hex>/             each layer unpacked once (overlay whiteouts), shared by every pod
//! images/<hex>.json         one record per image (hex of the manifest digest)
//! names.json                name -> image id
//! ```

use super::reference::Reference;
use crate::util;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("digest mismatch for {expected}: content hashes to {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("malformed digest {0:?}")]
    BadDigest(String),
    #[error("image {0:?} not found in the store")]
    NotFound(String),
    #[error("image {name:?} is ambiguous: {count} images match")]
    Ambiguous { name: String, count: usize },
    #[error("image {0} is used by a pod")]
    InUse(String),
    #[error("failed to parse {what}: {source}")]
    Json {
        what: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Unpack(#[from] super::unpack::UnpackError),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerRecord {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// Manifest digest (`sha256:...`).
    pub id: String,
    pub names: Vec<String>,
    pub config_digest: String,
    pub layers: Vec<LayerRecord>,
    pub size: u64,
    pub imported_at: i64,
    #[serde(default)]
    pub last_used: i64,
}

impl ImageRecord {
    /// rkt-style short id: `sha256-<12 hex>`.
    pub fn short_id(&self) -> String {
        let hex = self.id.trim_start_matches("sha256:");
        format!("sha256-{}", &hex[..hex.len().min(12)])
    }
}

/// The part of the OCI image config the runtime uses.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageConfig {
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

#[derive(Deserialize)]
struct ConfigBlob {
    #[serde(default)]
    config: Option<ImageConfig>,
}

pub struct ImageStore {
    root: PathBuf,
}

/// An exclusive advisory lock held until drop (flock(2)); serialises store mutations across the
/// agent, the api-service and `rkt image` commands, and makes concurrent pulls of one layer
/// unpack it once.
pub struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    pub fn acquire(path: &Path) -> std::io::Result<FileLock> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        // SAFETY: valid fd owned by f for the duration of the call.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(FileLock { _file: f })
    }
}

fn digest_hex(digest: &str) -> Result<&str, StoreError> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| StoreError::BadDigest(digest.into()))?;
    if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(StoreError::BadDigest(digest.into()));
    }
    Ok(hex)
}

impl ImageStore {
    pub fn open(root_dir: &Path) -> Result<Self, StoreError> {
        let root = root_dir.join("images");
        for d in ["blobs/sha256", "layers", "images", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io("create", &p))?;
        }
        Ok(ImageStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn lock(&self) -> Result<FileLock, StoreError> {
        let p = self.root.join(".lock");
        FileLock::acquire(&p).map_err(io("lock", &p))
    }

    /// A lock per image name, held for a whole pull so concurrent pulls of one image are done once.
    pub fn name_lock(&self, name: &str) -> Result<FileLock, StoreError> {
        let p = self.root.join("tmp").join(format!(
            "pull-{}.lock",
            &util::hex(&Sha256::digest(name))[..16]
        ));
        FileLock::acquire(&p).map_err(io("lock", &p))
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.exists()).unwrap_or(false)
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(digest)?;
        std::fs::read(&p).map_err(io("read", &p))
    }

    /// Stream a blob into the store, hashing as it goes; the blob only becomes visible under its
    /// digest after it verified, so a corrupt download never reaches a rootfs.
    pub fn put_blob(
        &self,
        expected: Option<&str>,
        mut reader: impl Read,
    ) -> Result<(String, u64), StoreError> {
        if let Some(e) = expected {
            digest_hex(e)?;
        }
        let tmp = self.root.join("tmp").join(format!(
            "blob-{}-{}",
            std::process::id(),
            util::now_nanos()
        ));
        let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(StoreError::Io {
                        action: "download",
                        path: tmp,
                        source: e,
                    });
                }
            };
            h.update(&buf[..n]);
            f.write_all(&buf[..n]).map_err(io("write", &tmp))?;
            size += n as u64;
        }
        f.sync_all().map_err(io("sync", &tmp))?;
        let actual = format!("sha256:{}", util::hex(&h.finalize()));
        if let Some(e) = expected {
            if !e.eq_ignore_ascii_case(&actual) {
                let _ = std::fs::remove_file(&tmp);
                return Err(StoreError::DigestMismatch {
                    expected: e.into(),
                    actual,
                });
            }
        }
        let dst = self.blob_path(&actual)?;
        std::fs::rename(&tmp, &dst).map_err(io("rename", &dst))?;
        Ok((actual, size))
    }

    pub fn put_blob_bytes(&self, expected: Option<&str>, b: &[u8]) -> Result<String, StoreError> {
        Ok(self.put_blob(expected, b)?.0)
    }

    pub fn layer_dir(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("layers").join(digest_hex(digest)?))
    }

    /// Unpack a layer blob once; later callers get the same directory.
    pub fn ensure_unpacked(&self, digest: &str) -> Result<PathBuf, StoreError> {
        let dir = self.layer_dir(digest)?;
        let done = dir.with_extension("done");
        if done.exists() {
            return Ok(dir);
        }
        let lockp = dir.with_extension("lock");
        let _l = FileLock::acquire(&lockp).map_err(io("lock", &lockp))?;
        if done.exists() {
            return Ok(dir);
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io("remove", &dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let blob = self.blob_path(digest)?;
        if let Err(e) = super::unpack::unpack_layer(&blob, &dir) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.into());
        }
        std::fs::write(&done, b"").map_err(io("write", &done))?;
        Ok(dir)
    }

    fn record_path(&self, id: &str) -> Result<PathBuf, StoreError> {
        Ok(self
            .root
            .join("images")
            .join(format!("{}.json", digest_hex(id)?)))
    }

    fn names(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let p = self.root.join("names.json");
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| StoreError::Json {
                what: p.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(StoreError::Io {
                action: "read",
                path: p,
                source: e,
            }),
        }
    }

    fn save_names(&self, n: &BTreeMap<String, String>) -> Result<(), StoreError> {
        let p = self.root.join("names.json");
        let b = serde_json::to_vec_pretty(n).map_err(|source| StoreError::Json {
            what: "names".into(),
            source,
        })?;
        util::write_atomic(&p, &b).map_err(io("write", &p))
    }

    pub fn save_record(&self, r: &ImageRecord) -> Result<(), StoreError> {
        let p = self.record_path(&r.id)?;
        let b = serde_json::to_vec_pretty(r).map_err(|source| StoreError::Json {
            what: "image record".into(),
            source,
        })?;
        util::write_atomic(&p, &b).map_err(io("write", &p))
    }

    fn load_record(&self, id: &str) -> Result<ImageRecord, StoreError> {
        let p = self.record_path(id)?;
        let b = std::fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::NotFound(id.into())
            } else {
                StoreError::Io {
                    action: "read",
                    path: p.clone(),
                    source: e,
                }
            }
        })?;
        serde_json::from_slice(&b).map_err(|source| StoreError::Json {
            what: p.display().to_string(),
            source,
        })
    }

    /// The image with manifest digest `id` when the store holds it whole: its record, its
    /// config blob and every layer unpacked (what `rkt image import` may then skip).
    pub fn present(&self, id: &str) -> Option<ImageRecord> {
        let rec = self.load_record(id).ok()?;
        let whole = self.has_blob(&rec.config_digest)
            && rec.layers.iter().all(|l| {
                self.layer_dir(&l.digest)
                    .is_ok_and(|d| d.with_extension("done").exists())
            });
        whole.then_some(rec)
    }

    /// Register an image under `name` (normalised); earlier holders of the name lose it.
    pub fn add_image(&self, mut rec: ImageRecord, name: &str) -> Result<ImageRecord, StoreError> {
        let _l = self.lock()?;
        let mut names = self.names()?;
        if let Some(old) = names.insert(name.to_string(), rec.id.clone()) {
            if old != rec.id {
                if let Ok(mut o) = self.load_record(&old) {
                    o.names.retain(|n| n != name);
                    self.save_record(&o)?;
                }
            }
        }
        if let Ok(existing) = self.load_record(&rec.id) {
            rec.imported_at = existing.imported_at;
            rec.last_used = existing.last_used;
            for n in existing.names {
                if !rec.names.contains(&n) {
                    rec.names.push(n);
                }
            }
        }
        if !rec.names.iter().any(|n| n == name) {
            rec.names.push(name.to_string());
        }
        self.save_record(&rec)?;
        self.save_names(&names)?;
        Ok(rec)
    }

    /// Find an image by name (normalised like a pull would), by `sha256:` id, or by an id prefix
    /// (`sha256-<hex>` as `rkt image list` shows it).
    pub fn resolve(&self, name: &str) -> Result<ImageRecord, StoreError> {
        let names = self.names()?;
        if let Ok(r) = Reference::parse(name) {
            if let Some(id) = names.get(&r.to_string()) {
                return self.load_record(id);
            }
        }
        if let Some(id) = names.get(name) {
            return self.load_record(id);
        }
        let prefix = name
            .trim_start_matches("sha256:")
            .trim_start_matches("sha256-")
            .to_ascii_lowercase();
        if prefix.len() >= 6 && prefix.bytes().all(|c| c.is_ascii_hexdigit()) {
            let hits: Vec<ImageRecord> = self
                .list()?
                .into_iter()
                .filter(|r| r.id.trim_start_matches("sha256:").starts_with(&prefix))
                .collect();
            return match hits.len() {
                0 => Err(StoreError::NotFound(name.into())),
                1 => Ok(hits
                    .into_iter()
                    .next()
                    .ok_or(StoreError::NotFound(name.into()))?),
                n => Err(StoreError::Ambiguous {
                    name: name.into(),
                    count: n,
                }),
            };
        }
        Err(StoreError::NotFound(name.into()))
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let d = self.root.join("images");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&d).map_err(io("list", &d))?.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) == Some("json") {
                if let Ok(b) = std::fs::read(&p) {
                    if let Ok(r) = serde_json::from_slice::<ImageRecord>(&b) {
                        out.push(r);
                    }
                }
            }
        }
        out.sort_by(|a, b| a.imported_at.cmp(&b.imported_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    pub fn config(&self, rec: &ImageRecord) -> Result<ImageConfig, StoreError> {
        let b = self.read_blob(&rec.config_digest)?;
        let c: ConfigBlob = serde_json::from_slice(&b).map_err(|source| StoreError::Json {
            what: format!("image config {}", rec.config_digest),
            source,
        })?;
        Ok(c.config.unwrap_or_default())
    }

    /// Unpacked layer directories, bottom first.
    pub fn layer_dirs(&self, rec: &ImageRecord) -> Result<Vec<PathBuf>, StoreError> {
        rec.layers
            .iter()
            .map(|l| self.ensure_unpacked(&l.digest))
            .collect()
    }

    pub fn touch(&self, id: &str) {
        if let Ok(_l) = self.lock() {
            if let Ok(mut r) = self.load_record(id) {
                r.last_used = util::now_secs();
                let _ = self.save_record(&r);
            }
        }
    }

    /// Remove one image (by any name `resolve` accepts) unless `in_use` holds its id. Blobs and
    /// layers no other image references go with it.
    pub fn remove(&self, name: &str, in_use: &BTreeSet<String>) -> Result<ImageRecord, StoreError> {
        let rec = self.resolve(name)?;
        if in_use.contains(&rec.id) {
            return Err(StoreError::InUse(rec.id));
        }
        let _l = self.lock()?;
        let mut names = self.names()?;
        names.retain(|_, id| *id != rec.id);
        self.save_names(&names)?;
        let p = self.record_path(&rec.id)?;
        std::fs::remove_file(&p).map_err(io("remove", &p))?;
        self.sweep()?;
        Ok(rec)
    }

    /// Remove every image no pod uses.
    pub fn gc(&self, in_use: &BTreeSet<String>) -> Result<Vec<ImageRecord>, StoreError> {
        let mut removed = Vec::new();
        for r in self.list()? {
            if !in_use.contains(&r.id) {
                removed.push(self.remove(&r.id, in_use)?);
            }
        }
        let _l = self.lock()?;
        self.sweep()?;
        Ok(removed)
    }

    /// Delete blobs and unpacked layers not referenced by any image record (caller holds the lock).
    fn sweep(&self) -> Result<(), StoreError> {
        let mut keep = BTreeSet::new();
        for r in self.list()? {
            keep.insert(r.id.trim_start_matches("sha256:").to_string());
            keep.insert(r.config_digest.trim_start_matches("sha256:").to_string());
            for l in &r.layers {
                keep.insert(l.digest.trim_start_matches("sha256:").to_string());
            }
        }
        let blobs = self.root.join("blobs/sha256");
        for e in std::fs::read_dir(&blobs)
            .map_err(io("list", &blobs))?
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(&n) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let layers = self.root.join("layers");
        for e in std::fs::read_dir(&layers)
            .map_err(io("list", &layers))?
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            let stem = n.split('.').next().unwrap_or("").to_string();
            if !keep.contains(&stem) {
                let p = e.path();
                if p.is_dir() {
                    let _ = std::fs::remove_dir_all(&p);
                } else {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_before_they_are_visible() {
        let d = tempfile::tempdir().unwrap();
        let s = ImageStore::open(d.path()).unwrap();
        let good = util::sha256_digest(b"hello");
        assert_eq!(s.put_blob_bytes(Some(&good), b"hello").unwrap(), good);
        let bad = util::sha256_digest(b"other");
        let e = s.put_blob_bytes(Some(&bad), b"hello").unwrap_err();
        assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
        assert!(!s.has_blob(&bad));
        assert_eq!(std::fs::read_dir(s.root().join("tmp")).unwrap().count(), 0);
    }
}
