//! Unpack one layer tarball into its own directory, translating OCI whiteouts into the overlayfs
//! form so that stacking the layer directories as overlay `lowerdir`s yields the image rootfs
//! (no per-pod copies; see the OCI image spec, layer.md "Whiteouts").
//!
//! A layer is untrusted input unpacked as root: every entry is created relative to its resolved
//! parent directory (`confine`, openat2 beneath the layer dir, following no symlink), never by a
//! path joined as text, so an entry such as `evil -> /` followed by `evil/etc/x` (or a hard link
//! through `evil`) fails the pull instead of writing to the host; a whiteout or opaque marker
//! below such a link (`evil/etc/.wh.x`) hides nothing and is skipped. Device nodes in layers are
//! skipped.

use crate::confine::{self, cstring, Kind, Root, Scope};
use crate::stage1::sys::cvt;
use std::ffi::{CStr, CString, OsStr};
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
    let read_err = |source| UnpackError::Read {
        path: layer.to_path_buf(),
        source,
    };
    let root = Root::open(dest).map_err(|source| UnpackError::Entry {
        entry: ".".into(),
        dir: dest.to_path_buf(),
        source,
    })?;
    let mut ar = tar::Archive::new(reader);
    // The parent directory of the previous entry: tar streams list a directory's files together,
    // and no entry can replace that directory without being the parent of the next one.
    let mut last_parent: Option<(PathBuf, OwnedFd)> = None;
    for entry in ar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw = entry.path().map_err(read_err)?.into_owned();
        let Some(rel) = sanitize(&raw) else {
            continue; // "..", absolute escapes: never written outside the layer dir.
        };
        let fail = |source: std::io::Error| UnpackError::Entry {
            entry: rel.display().to_string(),
            dir: dest.to_path_buf(),
            source: explain(source),
        };
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let fname = rel
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let parent = match last_parent.take() {
            Some((p, fd)) if p == parent_rel => fd,
            _ => match root.mkdir_all(&parent_rel, Scope::NoSymlinks, 0o755) {
                Ok(fd) => fd,
                // A whiteout below a path this layer made a symlink (umoci writes `etc -> x`
                // and then `etc/.wh.group`) hides nothing: the link already hides the lower
                // directory. Skipped, never followed.
                Err(e) if confine::is_escape(&e) && fname.starts_with(WH_PREFIX.as_bytes()) => {
                    continue
                }
                Err(e) => return Err(fail(e)),
            },
        };
        if fname == WH_OPAQUE.as_bytes() {
            set_opaque(&parent).map_err(|source| UnpackError::Whiteout {
                path: dest.join(&parent_rel),
                source,
            })?;
        } else if let Some(hidden) = fname.strip_prefix(WH_PREFIX.as_bytes()) {
            let target = dest.join(&parent_rel).join(OsStr::from_bytes(hidden));
            let wh = |source| UnpackError::Whiteout {
                path: target.clone(),
                source,
            };
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(wh(std::io::Error::new(
                    ErrorKind::InvalidData,
                    "a whiteout must name a file",
                )));
            }
            let name = cstring(hidden).map_err(wh)?;
            confine::remove_all_at(&parent, &name).map_err(wh)?;
            mknod_whiteout(&parent, &name).map_err(wh)?;
        } else {
            let name = cstring(&fname).map_err(fail)?;
            write_entry(&root, &parent, &name, &mut entry).map_err(fail)?;
        }
        last_parent = Some((parent_rel, parent));
    }
    Ok(())
}

/// A confinement refusal in words a user can act on.
fn explain(e: std::io::Error) -> std::io::Error {
    if confine::is_escape(&e) {
        std::io::Error::new(
            e.kind(),
            format!("{e}: the entry's path passes through a symbolic link, which a layer may not use to place files"),
        )
    } else {
        e
    }
}

/// Creates one entry as `name` in the (already resolved) directory `parent`, replacing what is
/// there, with the header's owner, mode, times and xattrs. Every call is relative to `parent`
/// and never follows a symlink, so the entry lands in the layer whatever the layer holds.
fn write_entry<R: Read>(
    root: &Root,
    parent: &OwnedFd,
    name: &CStr,
    entry: &mut tar::Entry<R>,
) -> std::io::Result<()> {
    let h = entry.header();
    let kind = h.entry_type();
    // Device nodes are never created from an image: a container's /dev is a fresh tmpfs, and a
    // node elsewhere in a layer could only serve to reach a host device.
    if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
        return Ok(());
    }
    let mode = h.mode()? & 0o7777;
    let (uid, gid) = (h.uid()? as libc::uid_t, h.gid()? as libc::gid_t);
    let mtime = h.mtime().unwrap_or(0) as libc::time_t;
    let xattrs = xattrs(entry)?;
    let p = parent.as_raw_fd();
    let existing = confine::kind_at(parent, name)?;
    // A later entry replacing a directory with a file (or the reverse): the old one goes.
    if existing.is_some() && !(kind.is_dir() && existing == Some(Kind::Dir)) {
        confine::remove_all_at(parent, name)?;
    }
    let fd: Option<OwnedFd> = match kind {
        tar::EntryType::Directory => {
            if existing != Some(Kind::Dir) {
                // SAFETY: valid fd and name.
                cvt(unsafe { libc::mkdirat(p, name.as_ptr(), 0o700) })?;
            }
            Some(open_nofollow(
                parent,
                name,
                libc::O_RDONLY | libc::O_DIRECTORY,
            )?)
        }
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            // SAFETY: valid fd and name; O_EXCL|O_NOFOLLOW: a fresh file, never a link's target.
            let fd = unsafe {
                libc::openat(
                    p,
                    name.as_ptr(),
                    libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_WRONLY
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o600 as libc::c_uint,
                )
            };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: a new descriptor that nothing else owns.
            let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            std::io::copy(entry, &mut f)?;
            Some(f.into())
        }
        tar::EntryType::Symlink => {
            let target = entry.link_name()?.ok_or_else(|| {
                std::io::Error::new(ErrorKind::InvalidData, "symlink without a target")
            })?;
            let t = cstring(target.as_os_str().as_bytes())?;
            // SAFETY: valid strings and fd. The target is stored, not followed.
            cvt(unsafe { libc::symlinkat(t.as_ptr(), p, name.as_ptr()) })?;
            None
        }
        tar::EntryType::Link => {
            let target = entry.link_name()?.ok_or_else(|| {
                std::io::Error::new(ErrorKind::InvalidData, "hard link without a target")
            })?;
            let src = sanitize(&target).ok_or_else(|| {
                std::io::Error::new(
                    ErrorKind::InvalidData,
                    format!("hard link to {} leaves the layer", target.display()),
                )
            })?;
            let (src_dir, src_name) = root.parent_of(&src, Scope::NoSymlinks).map_err(|e| {
                std::io::Error::new(e.kind(), format!("hard link to {}: {e}", src.display()))
            })?;
            // SAFETY: valid fds and names; flags 0: a symlink source is linked, not followed.
            cvt(unsafe {
                libc::linkat(src_dir.as_raw_fd(), src_name.as_ptr(), p, name.as_ptr(), 0)
            })
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("hard link to {}: {e}", src.display()))
            })?;
            return Ok(()); // Owner, mode and times are the linked file's.
        }
        tar::EntryType::Fifo => {
            // SAFETY: valid fd and name.
            cvt(unsafe { libc::mknodat(p, name.as_ptr(), libc::S_IFIFO | 0o600, 0) })?;
            None
        }
        _ => return Ok(()),
    };
    // Owner before mode: chown clears set-id bits.
    // SAFETY: valid fd and name; AT_SYMLINK_NOFOLLOW acts on a link itself.
    cvt(unsafe { libc::fchownat(p, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })?;
    if let Some(fd) = &fd {
        // SAFETY: valid fd.
        cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })?;
        for (k, v) in &xattrs {
            // SAFETY: valid fd, name and value buffer.
            cvt(unsafe {
                libc::fsetxattr(
                    fd.as_raw_fd(),
                    k.as_ptr(),
                    v.as_ptr() as *const libc::c_void,
                    v.len(),
                    0,
                )
            })?;
        }
    }
    let t = libc::timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    // SAFETY: valid fd, name and a two-element times array.
    cvt(unsafe { libc::utimensat(p, name.as_ptr(), [t, t].as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(())
}

fn open_nofollow(dir: &OwnedFd, name: &CStr, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: valid fd and name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The entry's extended attributes (PAX `SCHILY.xattr.<name>` records).
fn xattrs<R: Read>(entry: &mut tar::Entry<R>) -> std::io::Result<Vec<(CString, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Ok(Some(k)) = ext.key().map(|k| k.strip_prefix("SCHILY.xattr.")) {
                out.push((cstring(k.as_bytes())?, ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
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

/// overlayfs whiteout: a character device 0/0 (Documentation/filesystems/overlayfs.rst).
fn mknod_whiteout(dir: &OwnedFd, name: &CStr) -> std::io::Result<()> {
    // SAFETY: valid fd and name; mknodat has no other memory effects.
    cvt(unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::S_IFCHR,
            libc::makedev(0, 0),
        )
    })?;
    Ok(())
}

/// overlayfs opaque directory: xattr trusted.overlay.opaque=y on the (resolved) directory.
fn set_opaque(dir: &OwnedFd) -> std::io::Result<()> {
    // xattr calls need a real descriptor; `dir` is an O_PATH one.
    let d = open_nofollow(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY)?;
    // SAFETY: valid fd, C string and a 1-byte value buffer.
    cvt(unsafe {
        libc::fsetxattr(
            d.as_raw_fd(),
            c"trusted.overlay.opaque".as_ptr(),
            b"y".as_ptr() as *const libc::c_void,
            1,
            0,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    /// Whether `dir` carries overlayfs's opaque marker (trusted.overlay.opaque=y).
    fn is_opaque(dir: &Path) -> bool {
        let mut buf = [0u8; 4];
        let c = CString::new(dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path and buffer.
        let n = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        };
        n == 1 && buf[0] == b'y'
    }

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
        assert!(is_opaque(&out.join("var/lib")));
        assert_eq!(std::fs::read(out.join("var/lib/new")).unwrap(), b"x");
        assert_eq!(sanitize(Path::new("../x")), None);
        assert_eq!(sanitize(Path::new("/a/./b")), Some(PathBuf::from("a/b")));
    }

    enum E<'a> {
        Dir(&'a str),
        File(&'a str, &'a [u8]),
        Link(&'a str, &'a str),
        Hard(&'a str, &'a str),
    }

    fn layer(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_mode(0o644);
            h.set_size(0);
            match e {
                E::Dir(n) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_cksum();
                    b.append_data(&mut h, n, &[][..]).unwrap();
                }
                E::File(n, d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_cksum();
                    b.append_data(&mut h, n, *d).unwrap();
                }
                E::Link(n, t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    b.append_link(&mut h, n, t).unwrap();
                }
                E::Hard(n, t) => {
                    h.set_entry_type(tar::EntryType::Link);
                    b.append_link(&mut h, n, t).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    /// A scratch "host" with a canary file and directory, and an empty layer dir.
    struct Host {
        _d: tempfile::TempDir,
        host: PathBuf,
        out: PathBuf,
        tar: PathBuf,
    }

    impl Host {
        fn new() -> Host {
            let d = tempfile::tempdir().unwrap();
            let host = d.path().join("host");
            std::fs::create_dir_all(host.join("dir")).unwrap();
            std::fs::write(host.join("canary"), b"host file").unwrap();
            std::fs::write(host.join("dir/kept"), b"kept").unwrap();
            let out = d.path().join("layer");
            std::fs::create_dir(&out).unwrap();
            let tar = d.path().join("l.tar");
            Host {
                _d: d,
                host,
                out,
                tar,
            }
        }
        fn unpack(&self, entries: &[E]) -> Result<(), UnpackError> {
            std::fs::write(&self.tar, layer(entries)).unwrap();
            unpack_layer(&self.tar, &self.out)
        }
        fn assert_untouched(&self) {
            assert_eq!(
                std::fs::read(self.host.join("canary")).unwrap(),
                b"host file"
            );
            assert_eq!(std::fs::read(self.host.join("dir/kept")).unwrap(), b"kept");
            let names: Vec<_> = std::fs::read_dir(&self.host)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names.len(), 2, "host dir changed: {names:?}");
            assert!(
                !is_opaque(&self.host.join("dir")),
                "the host dir was made opaque"
            );
        }
    }

    /// Each attack puts a symlink to the host and its use in the same layer (layers are unpacked
    /// into their own directories). The old unpacker followed the link: it replaced, deleted or
    /// whited out host files. Now the pull fails (whiteouts there are skipped) and the host is
    /// unchanged.
    #[test]
    fn layers_cannot_write_through_their_own_symlinks() {
        let attacks: Vec<(&str, Vec<E>)> = vec![
            (
                "file through an absolute link",
                vec![E::Link("evil", "HOST"), E::File("evil/canary", b"pwned")],
            ),
            (
                "new file through a link",
                vec![E::Link("evil", "HOST"), E::File("evil/new", b"pwned")],
            ),
            (
                "dir through a link",
                vec![E::Link("evil", "HOST"), E::Dir("evil/dir/sub")],
            ),
            (
                "whiteout through a link",
                vec![E::Link("evil", "HOST"), E::File("evil/.wh.canary", b"")],
            ),
            (
                "whiteout of a dir through a link",
                vec![E::Link("evil", "HOST"), E::File("evil/.wh.dir", b"")],
            ),
            (
                "opaque marker through a link",
                vec![
                    E::Link("evil", "HOST/dir"),
                    E::File("evil/.wh..wh..opq", b""),
                ],
            ),
            (
                "relative link climbing out",
                vec![E::Link("evil", "../host"), E::File("evil/canary", b"pwned")],
            ),
            (
                "nested link",
                vec![
                    E::Dir("a"),
                    E::Link("a/b", "HOST"),
                    E::File("a/b/dir/kept", b"pwned"),
                ],
            ),
            (
                "hard link through a link",
                vec![E::Link("evil", "HOST"), E::Hard("stolen", "evil/canary")],
            ),
            (
                "hard link climbing out",
                vec![E::Hard("stolen", "../host/canary")],
            ),
        ];
        for (what, entries) in attacks {
            let h = Host::new();
            let host = h.host.display().to_string();
            let entries: Vec<E> = entries
                .into_iter()
                .map(|e| match e {
                    E::Link(n, t) if t.starts_with("HOST") => {
                        E::Link(n, Box::leak(t.replacen("HOST", &host, 1).into_boxed_str()))
                    }
                    e => e,
                })
                .collect();
            let r = h.unpack(&entries);
            // Whiteouts below a link are skipped (they hide nothing); anything else fails.
            assert!(
                r.is_err() || what.contains("whiteout") || what.contains("opaque"),
                "{what}: the pull succeeded"
            );
            h.assert_untouched();
            // Writing to what the layer holds afterwards must not reach the host either.
            if let Ok(md) = std::fs::symlink_metadata(h.out.join("stolen")) {
                assert!(md.is_file());
                std::fs::write(h.out.join("stolen"), b"x").unwrap();
                h.assert_untouched();
            }
        }
        // An absolute hard-link target names a file of the layer, not of the host.
        let h = Host::new();
        let abs = format!("{}/canary", h.host.display());
        assert!(h
            .unpack(&[E::Hard("stolen", Box::leak(abs.into_boxed_str()))])
            .is_err());
        h.assert_untouched();
    }

    #[test]
    fn ordinary_layers_keep_links_modes_and_replacements() {
        let h = Host::new();
        h.unpack(&[
            E::Dir("bin/"),
            E::File("bin/busybox", b"elf"),
            E::Hard("bin/sh", "bin/busybox"),
            E::Link("bin/ls", "busybox"),
            E::Link("lib", "/usr/lib"),
            E::Link("abs", &format!("{}/canary", "/nonexistent")),
            E::File("x", b"file first"),
            E::Dir("x"),
            E::File("x/inner", b"in"),
            E::Dir("y"),
            E::File("y", b"dir replaced"),
        ])
        .unwrap();
        let o = &h.out;
        assert_eq!(std::fs::read(o.join("bin/sh")).unwrap(), b"elf");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(o.join("bin/sh")).unwrap().ino(),
            std::fs::metadata(o.join("bin/busybox")).unwrap().ino()
        );
        assert_eq!(
            std::fs::read_link(o.join("bin/ls")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            std::fs::read_link(o.join("lib")).unwrap(),
            Path::new("/usr/lib")
        );
        assert_eq!(std::fs::read(o.join("x/inner")).unwrap(), b"in");
        assert_eq!(std::fs::read(o.join("y")).unwrap(), b"dir replaced");
        let m = std::fs::metadata(o.join("bin/busybox")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o644);
        assert_eq!(m.mtime(), 0);
        assert_eq!(
            std::fs::metadata(o.join("bin")).unwrap().mode() & 0o7777,
            0o755
        );
        h.assert_untouched();
    }

    #[test]
    fn device_nodes_in_layers_are_skipped() {
        let h = Host::new();
        let mut b = tar::Builder::new(Vec::new());
        let mut hd = tar::Header::new_gnu();
        hd.set_entry_type(tar::EntryType::Block);
        hd.set_device_major(8).unwrap();
        hd.set_device_minor(0).unwrap();
        hd.set_mode(0o666);
        hd.set_size(0);
        hd.set_cksum();
        b.append_data(&mut hd, "disk", &[][..]).unwrap();
        std::fs::write(&h.tar, b.into_inner().unwrap()).unwrap();
        unpack_layer(&h.tar, &h.out).unwrap();
        assert!(std::fs::symlink_metadata(h.out.join("disk")).is_err());
    }
}
