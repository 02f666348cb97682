//! Unpack one layer tarball into its own directory, translating OCI whiteouts into the overlayfs
//! form so that stacking the layer directories as overlay `lowerdir`s yields the image rootfs
//! (no per-pod copies; see the OCI image spec, layer.md "Whiteouts").

use std::ffi::CString;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("failed to read layer {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to unpack {entry} into {dir}: {source}")]
    Entry {
        entry: String,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to create whiteout {path}: {source}")]
    Whiteout {
        path: PathBuf,
        source: std::io::Error,
    },
}

const WH_PREFIX: &str = ".wh.";
const WH_OPAQUE: &str = ".wh..wh..opq";

/// Unpack a (possibly gzip-compressed) layer tar file into `dest` (which must exist).
pub fn unpack_layer(layer: &Path, dest: &Path) -> Result<(), UnpackError> {
    let rd = |source| UnpackError::Read {
        path: layer.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(layer).map_err(rd)?;
    let mut br = BufReader::with_capacity(256 * 1024, f);
    let gz = {
        let head = br.fill_buf().map_err(rd)?;
        head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b
    };
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(br))
    } else {
        Box::new(br)
    };
    unpack_stream(reader, dest, layer)
}

fn unpack_stream(reader: impl Read, dest: &Path, layer: &Path) -> Result<(), UnpackError> {
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(true);
    ar.set_overwrite(true);
    let entries = ar.entries().map_err(|source| UnpackError::Read {
        path: layer.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let mut entry = entry.map_err(|source| UnpackError::Read {
            path: layer.to_path_buf(),
            source,
        })?;
        let raw = entry
            .path()
            .map_err(|source| UnpackError::Read {
                path: layer.to_path_buf(),
                source,
            })?
            .into_owned();
        let Some(rel) = sanitize(&raw) else {
            continue; // "..", absolute escapes: never written outside the layer dir.
        };
        let fname = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
        if fname == WH_OPAQUE {
            std::fs::create_dir_all(&parent).map_err(|source| UnpackError::Whiteout {
                path: parent.clone(),
                source,
            })?;
            set_opaque(&parent).map_err(|source| UnpackError::Whiteout {
                path: parent.clone(),
                source,
            })?;
            continue;
        }
        if let Some(hidden) = fname.strip_prefix(WH_PREFIX) {
            let target = parent.join(hidden);
            std::fs::create_dir_all(&parent).map_err(|source| UnpackError::Whiteout {
                path: parent.clone(),
                source,
            })?;
            remove_any(&target);
            mknod_whiteout(&target).map_err(|source| UnpackError::Whiteout {
                path: target.clone(),
                source,
            })?;
            continue;
        }
        // A later entry replacing a directory with a file (or the reverse) within one layer.
        let target = dest.join(&rel);
        if let Ok(md) = std::fs::symlink_metadata(&target) {
            let is_dir_entry = entry.header().entry_type().is_dir();
            if md.is_dir() != is_dir_entry || (!md.is_dir() && !is_dir_entry) {
                remove_any(&target);
            }
        }
        entry.unpack_in(dest).map_err(|source| UnpackError::Entry {
            entry: rel.display().to_string(),
            dir: dest.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Strip leading `/` and `./`; refuse `..`.
fn sanitize(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => return None,
        }
    }
    if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    }
}

fn remove_any(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => {
            let _ = std::fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
}

fn cpath(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))
}

/// overlayfs whiteout: a character device 0/0 (Documentation/filesystems/overlayfs.rst).
fn mknod_whiteout(p: &Path) -> std::io::Result<()> {
    let c = cpath(p)?;
    // SAFETY: c is a valid NUL-terminated path; mknod has no other memory effects.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// overlayfs opaque directory: xattr trusted.overlay.opaque=y.
fn set_opaque(p: &Path) -> std::io::Result<()> {
    let c = cpath(p)?;
    let name = c"trusted.overlay.opaque";
    // SAFETY: valid C strings and a 1-byte value buffer.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            name.as_ptr(),
            b"y".as_ptr() as *const libc::c_void,
            1,
            0,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn tar_with(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    h.set_cksum();
                    b.append_data(&mut h, name, *d).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    h.set_cksum();
                    b.append_data(&mut h, name, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_and_opaque_dirs_become_overlay_markers() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("l.tar");
        std::fs::write(
            &layer,
            tar_with(&[
                ("etc/", None),
                ("etc/.wh.motd", Some(b"")),
                ("var/lib/.wh..wh..opq", Some(b"")),
                ("var/lib/new", Some(b"x")),
            ]),
        )
        .unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        unpack_layer(&layer, &out).unwrap();
        let md = std::fs::symlink_metadata(out.join("etc/motd")).unwrap();
        assert!(md.file_type().is_char_device());
        let mut buf = [0u8; 4];
        let c = cpath(&out.join("var/lib")).unwrap();
        // SAFETY: valid path and buffer.
        let n = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        };
        assert_eq!(n, 1);
        assert_eq!(buf[0], b'y');
        assert_eq!(std::fs::read(out.join("var/lib/new")).unwrap(), b"x");
        assert_eq!(sanitize(Path::new("../x")), None);
        assert_eq!(sanitize(Path::new("/a/./b")), Some(PathBuf::from("a/b")));
    }
}
