//! `rkt image import FILE`: oci-archive (an OCI image layout in a tar) or docker-archive
//! (`docker save`: manifest.json + layer tars) for air-gapped nodes.

use super::reference::Reference;
use super::registry::{check_layer_type, parse_manifest, select_platform, PullError};
use super::store::{ImageRecord, ImageStore, LayerRecord, StoreError};
use crate::util;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("failed to read archive {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is neither an oci-archive (oci-layout, index.json) nor a docker-archive (manifest.json)")]
    UnknownFormat { path: PathBuf },
    #[error("failed to import {path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pull(#[from] PullError),
}

/// Import every image in the archive; `name` overrides the archive's own names.
pub fn import(
    store: &ImageStore,
    file: &Path,
    name: Option<&str>,
) -> Result<Vec<ImageRecord>, ImportError> {
    let tmp = store.root().join("tmp").join(format!(
        "import-{}-{}",
        std::process::id(),
        util::now_nanos()
    ));
    let rd = |source| ImportError::Read {
        path: file.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(&tmp).map_err(rd)?;
    let res = (|| {
        let f = std::fs::File::open(file).map_err(rd)?;
        let mut ar = tar::Archive::new(std::io::BufReader::new(f));
        ar.set_preserve_ownerships(false);
        ar.unpack(&tmp).map_err(rd)?;
        if tmp.join("index.json").exists() {
            import_oci(store, file, &tmp, name)
        } else if tmp.join("manifest.json").exists() {
            import_docker(store, file, &tmp, name)
        } else {
            Err(ImportError::UnknownFormat {
                path: file.to_path_buf(),
            })
        }
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    res
}

/// One image of an archive, and whether the store held it already.
#[derive(Debug, Clone)]
pub struct Imported {
    pub record: ImageRecord,
    /// The store had this manifest digest, its config and every layer unpacked, before.
    pub already_present: bool,
}

/// `import`, skipping what the store already holds by digest (kind's `load` does the same per
/// node): the archive is first read once without writing anything — every file hashed, the
/// small ones (index, manifests, configs) kept — to learn each image's manifest digest (an
/// oci-archive names it; a docker-archive's is the one `import` synthesises from the config's
/// and layers' digests). When every image is present only its names are applied; otherwise
/// the archive is imported as `import` does and the images that were present say so.
pub fn import_or_skip(
    store: &ImageStore,
    file: &Path,
    name: Option<&str>,
) -> Result<Vec<Imported>, ImportError> {
    let planned = scan(file)?.and_then(|scan| scan.images(name));
    let present: Vec<Option<ImageRecord>> = match &planned {
        Some(images) => images.iter().map(|(id, _)| store.present(id)).collect(),
        None => Vec::new(),
    };
    if let Some(images) = planned.filter(|_| present.iter().all(Option::is_some)) {
        let mut out = Vec::new();
        for ((_, names), rec) in images.into_iter().zip(present.into_iter().flatten()) {
            let mut last = rec;
            for n in names {
                last = store.add_image(last, &n)?;
            }
            out.push(Imported {
                record: last,
                already_present: true,
            });
        }
        return Ok(out);
    }
    let had: Vec<String> = present.into_iter().flatten().map(|r| r.id).collect();
    Ok(import(store, file, name)?
        .into_iter()
        .map(|record| Imported {
            already_present: had.contains(&record.id),
            record,
        })
        .collect())
}

/// Files larger than this are only hashed by `scan`: manifests and configs are a few KiB.
const KEEP_LIMIT: u64 = 4 << 20;

/// An archive read without unpacking it: each regular file's digest and size (and its bytes
/// when small), each symlink's target, by normalised path.
struct Scan {
    files: HashMap<String, (String, u64, Option<Vec<u8>>)>,
    links: HashMap<String, String>,
}

/// `None` when the archive holds a path the scan does not follow (`import` then judges it).
fn scan(file: &Path) -> Result<Option<Scan>, ImportError> {
    let rd = |source| ImportError::Read {
        path: file.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(file).map_err(rd)?;
    let mut ar = tar::Archive::new(std::io::BufReader::new(f));
    let mut s = Scan {
        files: HashMap::new(),
        links: HashMap::new(),
    };
    let mut buf = vec![0u8; 256 * 1024];
    for entry in ar.entries().map_err(rd)? {
        let mut entry = entry.map_err(rd)?;
        let Some(path) = normalise(&entry.path().map_err(rd)?) else {
            return Ok(None);
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let Some(target) = entry.link_name().map_err(rd)? else {
                return Ok(None);
            };
            let target = if kind.is_symlink() {
                Path::new(&path)
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(target)
            } else {
                target.into_owned()
            };
            let Some(target) = normalise(&target) else {
                return Ok(None);
            };
            s.links.insert(path, target);
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.header().size().map_err(rd)?;
        let mut keep = (size <= KEEP_LIMIT).then(Vec::new);
        let mut h = Sha256::new();
        loop {
            let n = match std::io::Read::read(&mut entry, &mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(rd(e)),
            };
            h.update(&buf[..n]);
            if let Some(k) = keep.as_mut() {
                k.extend_from_slice(&buf[..n]);
            }
        }
        let digest = format!("sha256:{}", util::hex(&h.finalize()));
        s.files.insert(path, (digest, size, keep));
    }
    Ok(Some(s))
}

/// `a/./b/../c` → `a/c`; None for a path leaving the archive.
fn normalise(p: &Path) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str()?),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

impl Scan {
    /// The file at `path`, through at most 8 links.
    fn file(&self, path: &str) -> Option<&(String, u64, Option<Vec<u8>>)> {
        let mut p = normalise(Path::new(path))?;
        for _ in 0..8 {
            if let Some(f) = self.files.get(&p) {
                return Some(f);
            }
            p = self.links.get(&p)?.clone();
        }
        None
    }

    fn bytes(&self, path: &str) -> Option<&[u8]> {
        self.file(path)?.2.as_deref()
    }

    /// Each image's manifest digest and the names `import` would give it; None when the
    /// archive is not one `import` would take (it then reports why).
    fn images(&self, name: Option<&str>) -> Option<Vec<(String, Vec<String>)>> {
        if let Some(index) = self.bytes("index.json") {
            let blob =
                |d: &str| self.bytes(&format!("blobs/sha256/{}", d.strip_prefix("sha256:")?));
            let index = parse_manifest(index, "index.json").ok()?;
            let mut out = Vec::new();
            for d in index.manifests.as_deref().unwrap_or_default() {
                let mut mdigest = d.digest.clone();
                let m = parse_manifest(blob(&d.digest)?, &d.digest).ok()?;
                if let Some(list) = &m.manifests {
                    mdigest = select_platform(list, &d.digest).ok()?.digest.clone();
                }
                let nm = oci_name(name, oci_annotated_name(d), &mdigest);
                out.push((mdigest, vec![nm]));
            }
            return (!out.is_empty()).then_some(out);
        }
        let entries: Vec<DockerEntry> =
            serde_json::from_slice(self.bytes("manifest.json")?).ok()?;
        let mut out = Vec::new();
        for e in entries {
            let (cdigest, csize, _) = self.file(&e.config)?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let (d, size, _) = self.file(l)?;
                layers.push((d.clone(), *size));
            }
            let mbytes = docker_manifest(cdigest, *csize, &layers).ok()?;
            let id = format!("sha256:{}", util::hex(&Sha256::digest(&mbytes)));
            let names = docker_names(name, e.repo_tags.as_deref(), &id);
            out.push((id, names));
        }
        Some(out)
    }
}

/// The name an oci-archive's index entry carries (containerd's annotation, else the OCI one).
fn oci_annotated_name(d: &super::registry::Descriptor) -> Option<String> {
    d.annotations
        .as_ref()
        .and_then(|a| {
            a.get("io.containerd.image.name")
                .or(a.get("org.opencontainers.image.ref.name"))
        })
        .cloned()
}

/// The name an oci-archive's image is stored under: `--image-name`, else the annotated
/// reference (a bare tag becomes `localhost/imported:<tag>`), else `localhost/imported@<id>`.
fn oci_name(name: Option<&str>, annotated: Option<String>, id: &str) -> String {
    let nm = match (name, annotated) {
        (Some(n), _) => n.to_string(),
        (None, Some(a)) if a.contains('/') || a.contains(':') => a,
        (None, Some(tag)) => format!("localhost/imported:{tag}"),
        (None, None) => format!("localhost/imported@{id}"),
    };
    Reference::parse(&nm).map(|r| r.to_string()).unwrap_or(nm)
}

/// A docker-archive image's names: `--image-name`, else its RepoTags, else
/// `localhost/imported@<id>`.
fn docker_names(name: Option<&str>, repo_tags: Option<&[String]>, id: &str) -> Vec<String> {
    let names: Vec<String> = match name {
        Some(n) => vec![n.to_string()],
        None => repo_tags.map(<[String]>::to_vec).unwrap_or_default(),
    };
    let names = if names.is_empty() {
        vec![format!("localhost/imported@{id}")]
    } else {
        names
    };
    names
        .into_iter()
        .map(|n| Reference::parse(&n).map(|r| r.to_string()).unwrap_or(n))
        .collect()
}

/// The schema 2 manifest synthesised for a docker-archive image, so it has a manifest digest
/// like pulled ones.
fn docker_manifest(
    cdigest: &str,
    csize: u64,
    layers: &[(String, u64)],
) -> Result<Vec<u8>, serde_json::Error> {
    let descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|(digest, size)| {
            serde_json::json!({"mediaType": DOCKER_LAYER, "digest": digest, "size": size})
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": super::registry::MT_DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cdigest, "size": csize},
        "layers": descs,
    });
    serde_json::to_vec(&manifest)
}

const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

fn inside(base: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    Some(base.join(p))
}

/// Opens a file of the unpacked archive, resolved beneath its directory: an archive's symlink
/// (older `docker save` links duplicate layers) may point within it, never to a host file.
fn open_in(dir: &Path, path: &Path) -> std::io::Result<std::fs::File> {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    let fd = crate::confine::Root::open(dir)?.open_at(
        rel,
        crate::confine::Scope::Beneath,
        libc::O_RDONLY,
    )?;
    Ok(std::fs::File::from(fd))
}

fn read_in(dir: &Path, path: &Path) -> std::io::Result<Vec<u8>> {
    let mut b = Vec::new();
    std::io::Read::read_to_end(&mut open_in(dir, path)?, &mut b)?;
    Ok(b)
}

fn put_file(
    store: &ImageStore,
    dir: &Path,
    path: &Path,
    expected: Option<&str>,
) -> Result<(String, u64), ImportError> {
    let f = open_in(dir, path).map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(store.put_blob(expected, f)?)
}

fn import_oci(
    store: &ImageStore,
    file: &Path,
    dir: &Path,
    name: Option<&str>,
) -> Result<Vec<ImageRecord>, ImportError> {
    let invalid = |msg: String| ImportError::Invalid {
        path: file.to_path_buf(),
        msg,
    };
    let blob = |digest: &str| -> Result<PathBuf, ImportError> {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| invalid(format!("unsupported digest {digest}")))?;
        inside(dir, &format!("blobs/sha256/{hex}"))
            .ok_or_else(|| invalid(format!("bad digest {digest}")))
    };
    let index = read_in(dir, &dir.join("index.json")).map_err(|source| ImportError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let index = parse_manifest(&index, "index.json")?;
    let mut out = Vec::new();
    for d in index.manifests.as_deref().unwrap_or_default() {
        let mut mbytes = read_in(dir, &blob(&d.digest)?).map_err(|source| ImportError::Read {
            path: file.to_path_buf(),
            source,
        })?;
        let mut mdigest = d.digest.clone();
        let mut m = parse_manifest(&mbytes, &d.digest)?;
        if let Some(list) = &m.manifests {
            let sel = select_platform(list, &d.digest)?;
            mdigest = sel.digest.clone();
            mbytes = read_in(dir, &blob(&mdigest)?).map_err(|source| ImportError::Read {
                path: file.to_path_buf(),
                source,
            })?;
            m = parse_manifest(&mbytes, &mdigest)?;
        }
        let config = m
            .config
            .as_ref()
            .ok_or_else(|| invalid(format!("manifest {mdigest} has no config")))?;
        put_file(store, dir, &blob(&config.digest)?, Some(&config.digest))?;
        let mut layers = Vec::new();
        for l in m.layers.as_deref().unwrap_or_default() {
            check_layer_type(&l.media_type)?;
            put_file(store, dir, &blob(&l.digest)?, Some(&l.digest))?;
            layers.push(LayerRecord {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
            });
        }
        let id = store.put_blob_bytes(Some(&mdigest), &mbytes)?;
        for l in &layers {
            store.ensure_unpacked(&l.digest)?;
        }
        let nm = oci_name(name, oci_annotated_name(d), &id);
        let rec = ImageRecord {
            id,
            names: vec![],
            config_digest: config.digest.clone(),
            size: layers.iter().map(|l| l.size).sum::<u64>() + config.size,
            layers,
            imported_at: util::now_secs(),
            last_used: 0,
        };
        out.push(store.add_image(rec, &nm)?);
    }
    if out.is_empty() {
        return Err(invalid("index.json lists no manifests".into()));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn import_docker(
    store: &ImageStore,
    file: &Path,
    dir: &Path,
    name: Option<&str>,
) -> Result<Vec<ImageRecord>, ImportError> {
    let invalid = |msg: String| ImportError::Invalid {
        path: file.to_path_buf(),
        msg,
    };
    let rd = |source| ImportError::Read {
        path: file.to_path_buf(),
        source,
    };
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(&read_in(dir, &dir.join("manifest.json")).map_err(rd)?)
            .map_err(|e| invalid(format!("manifest.json: {e}")))?;
    let mut out = Vec::new();
    for e in entries {
        let cpath =
            inside(dir, &e.config).ok_or_else(|| invalid(format!("bad path {}", e.config)))?;
        let (cdigest, csize) = put_file(store, dir, &cpath, None)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let p = inside(dir, l).ok_or_else(|| invalid(format!("bad path {l}")))?;
            let (digest, size) = put_file(store, dir, &p, None)?;
            layers.push(LayerRecord {
                digest,
                media_type: DOCKER_LAYER.to_string(),
                size,
            });
        }
        let descs: Vec<(String, u64)> = layers.iter().map(|l| (l.digest.clone(), l.size)).collect();
        let mbytes =
            docker_manifest(&cdigest, csize, &descs).map_err(|e| invalid(e.to_string()))?;
        let id = store.put_blob_bytes(None, &mbytes)?;
        for l in &layers {
            store.ensure_unpacked(&l.digest)?;
        }
        let names = docker_names(name, e.repo_tags.as_deref(), &id);
        let rec = ImageRecord {
            id,
            names: vec![],
            config_digest: cdigest,
            size: layers.iter().map(|l| l.size).sum::<u64>() + csize,
            layers,
            imported_at: util::now_secs(),
            last_used: 0,
        };
        let mut last = None;
        for n in names {
            last = Some(store.add_image(rec.clone(), &n)?);
        }
        if let Some(r) = last {
            out.push(r);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive whose index.json is a link to a host file: the old import read the host's
    /// file (any root-readable file could become image data); now it is refused.
    #[test]
    fn archive_links_out_of_the_archive_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside.json");
        std::fs::write(&outside, r#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "index.json", &outside).unwrap();
        let archive = d.path().join("a.tar");
        std::fs::write(&archive, b.into_inner().unwrap()).unwrap();
        let store = ImageStore::open(&d.path().join("root")).unwrap();
        let e = import(&store, &archive, None).unwrap_err();
        assert!(e.to_string().contains("failed to read archive"), "{e}");
    }
}
