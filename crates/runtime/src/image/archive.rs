//! `rkt image import FILE`: oci-archive (an OCI image layout in a tar) or docker-archive
//! (`docker save`: manifest.json + layer tars) for air-gapped nodes.

use super::reference::Reference;
use super::registry::{check_layer_type, parse_manifest, select_platform, PullError};
use super::store::{ImageRecord, ImageStore, LayerRecord, StoreError};
use crate::util;
use serde::Deserialize;
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
        let ann_name = d
            .annotations
            .as_ref()
            .and_then(|a| {
                a.get("io.containerd.image.name")
                    .or(a.get("org.opencontainers.image.ref.name"))
            })
            .cloned();
        let nm = match (name, ann_name) {
            (Some(n), _) => n.to_string(),
            (None, Some(a)) if a.contains('/') || a.contains(':') => a,
            (None, Some(tag)) => format!("localhost/imported:{tag}"),
            (None, None) => format!("localhost/imported@{id}"),
        };
        let nm = Reference::parse(&nm).map(|r| r.to_string()).unwrap_or(nm);
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
        let mut descs = Vec::new();
        for l in &e.layers {
            let p = inside(dir, l).ok_or_else(|| invalid(format!("bad path {l}")))?;
            let (digest, size) = put_file(store, dir, &p, None)?;
            let mt = "application/vnd.docker.image.rootfs.diff.tar".to_string();
            descs.push(serde_json::json!({"mediaType": mt, "digest": digest, "size": size}));
            layers.push(LayerRecord {
                digest,
                media_type: mt,
                size,
            });
        }
        // Synthesize a schema 2 manifest so the image has a manifest digest like pulled ones.
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": super::registry::MT_DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cdigest, "size": csize},
            "layers": descs,
        });
        let mbytes = serde_json::to_vec(&manifest).map_err(|e| invalid(e.to_string()))?;
        let id = store.put_blob_bytes(None, &mbytes)?;
        for l in &layers {
            store.ensure_unpacked(&l.digest)?;
        }
        let names: Vec<String> = match name {
            Some(n) => vec![n.to_string()],
            None => e.repo_tags.clone().unwrap_or_default(),
        };
        let names = if names.is_empty() {
            vec![format!("localhost/imported@{id}")]
        } else {
            names
        };
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
            let n = Reference::parse(&n).map(|r| r.to_string()).unwrap_or(n);
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
