//! File operations that cannot leave a directory: the container rootfs, a volume, an image layer.
//!
//! Everything the runtime does as root on the host inside a tree that a container or an image
//! controls (unpacking layers, whiteouts, mount points, subPath, workingDir, /etc files) goes
//! through a [`Root`]: paths are resolved by the kernel with `openat2(2)`, relative to an open
//! directory, and every later step acts on the file descriptor it returned (`*at` calls, or
//! `/proc/self/fd/N` for mount(2), as runc and kubelet do). A symlink planted in the tree can
//! therefore not redirect a write, a removal or a mount to the host. A kernel without openat2
//! (Linux < 5.6) is refused: there is no safe text-join fallback.

use crate::stage1::sys::cvt;
use std::ffi::{CStr, CString};
use std::io::{Error, ErrorKind, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// How symlinks met while resolving a path below a [`Root`] are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// As if the root were `/` (a chroot's view): absolute symlinks and `..` stay inside. For a
    /// container's rootfs, where the image's own links (`/etc/resolv.conf -> /run/...`) must
    /// keep working.
    InRoot,
    /// A resolution that would leave the root fails with EXDEV; absolute symlinks fail. For
    /// volumes (subPath), as kubelet refuses a subPath that resolves outside its volume.
    Beneath,
    /// No symlink may be followed at all (ELOOP). For image layers, whose tar entries never
    /// legitimately pass through a link.
    NoSymlinks,
}

impl Scope {
    fn resolve_flags(self) -> u64 {
        // Magic links (/proc/<pid>/fd/..., /proc/<pid>/root) jump anywhere: never followed.
        libc::RESOLVE_NO_MAGICLINKS
            | match self {
                Scope::InRoot => libc::RESOLVE_IN_ROOT,
                Scope::Beneath => libc::RESOLVE_BENEATH,
                Scope::NoSymlinks => libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
            }
    }
}

/// An open directory that paths are resolved beneath.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
}

/// Bytes as a C string (a NUL inside is invalid input).
pub(crate) fn cstring(b: &[u8]) -> Result<CString> {
    CString::new(b).map_err(|_| Error::new(ErrorKind::InvalidInput, "NUL in path"))
}

/// openat2(2); EAGAIN (a concurrent rename seen during RESOLVE_IN_ROOT/BENEATH) is retried.
fn openat2(dir: RawFd, rel: &CStr, flags: libc::c_int, mode: u32, resolve: u64) -> Result<OwnedFd> {
    // SAFETY: open_how is plain old data (non_exhaustive only for future fields).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = u64::from(mode);
    how.resolve = resolve;
    for _ in 0..64 {
        // SAFETY: valid fd, NUL-terminated path and a live open_how of the size passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                rel.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if r >= 0 {
            // SAFETY: the kernel returned a new descriptor that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
        }
        let e = Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
            Some(libc::ENOSYS) => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    "this kernel lacks openat2(2) (Linux 5.6 or newer is needed to confine \
                     file operations to a container's root)",
                ))
            }
            _ => return Err(e),
        }
    }
    Err(Error::from_raw_os_error(libc::EAGAIN))
}

/// An O_PATH descriptor of `path`, a path the runtime itself chose or the user named (a hostPath):
/// resolved as the host sees it, not confined. `flags` adds to O_PATH (e.g. O_DIRECTORY).
pub fn open_path(path: &Path, flags: libc::c_int) -> Result<OwnedFd> {
    let c = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: valid C string.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC | flags) })
        .map_err(|e| Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The path to hand mount(2) for an open descriptor: the kernel follows the magic link to the
/// very file the descriptor holds, whatever the path now names.
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The components of a path inside a root (leading `/` and `.` dropped; `..` kept for the
/// kernel to resolve within the scope).
fn components(rel: &Path) -> Vec<&std::ffi::OsStr> {
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            Component::ParentDir => Some(std::ffi::OsStr::new("..")),
            _ => None,
        })
        .collect()
}

fn join(comps: &[&std::ffi::OsStr]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in comps {
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(c.as_bytes());
    }
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

/// What is at a path, without following a final symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

fn kind_of(mode: libc::mode_t) -> Kind {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFREG => Kind::File,
        libc::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

/// fstat(2) of an open descriptor (O_PATH ones included).
pub fn kind_of_fd(fd: &impl AsRawFd) -> Result<Kind> {
    // SAFETY: stat is plain old data filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and buffer; AT_EMPTY_PATH stats the descriptor itself.
    cvt(unsafe { libc::fstatat(fd.as_raw_fd(), c"".as_ptr(), &mut st, libc::AT_EMPTY_PATH) })?;
    Ok(kind_of(st.st_mode))
}

/// fstatat(dir, name, AT_SYMLINK_NOFOLLOW): what `name` is, or None when it does not exist.
pub fn kind_at(dir: &impl AsRawFd, name: &CStr) -> Result<Option<Kind>> {
    // SAFETY: stat is plain old data filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, name and buffer.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r < 0 {
        let e = Error::last_os_error();
        return if e.kind() == ErrorKind::NotFound {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(Some(kind_of(st.st_mode)))
}

/// Removes `name` in `dir` whatever it is (a directory with its contents), never following a
/// symlink: the removal of a tree walks it by descriptors.
pub fn remove_all_at(dir: &impl AsRawFd, name: &CStr) -> Result<()> {
    match kind_at(dir, name)? {
        None => Ok(()),
        Some(Kind::Dir) => {
            let sub = openat2(
                dir.as_raw_fd(),
                name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
                Scope::NoSymlinks.resolve_flags(),
            )?;
            for child in list_dir(&sub)? {
                remove_all_at(&sub, &child)?;
            }
            drop(sub);
            // SAFETY: valid fd and name.
            cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) })?;
            Ok(())
        }
        Some(_) => {
            // SAFETY: valid fd and name.
            cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) })?;
            Ok(())
        }
    }
}

/// The names in an open directory (without `.` and `..`).
fn list_dir(dir: &OwnedFd) -> Result<Vec<CString>> {
    // fdopendir takes ownership of its descriptor: give it a duplicate.
    let dup = dir.try_clone()?;
    // Reading needs a real (not O_PATH) descriptor positioned at the start.
    let raw = {
        use std::os::fd::IntoRawFd;
        dup.into_raw_fd()
    };
    // SAFETY: raw is a descriptor we own; fdopendir takes it over (closed by closedir).
    let d = unsafe { libc::fdopendir(raw) };
    if d.is_null() {
        let e = Error::last_os_error();
        // SAFETY: fdopendir failed, so raw is still ours to close.
        unsafe { libc::close(raw) };
        return Err(e);
    }
    let mut out = Vec::new();
    loop {
        // SAFETY: d is a live DIR*.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated inside the dirent the kernel filled.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            out.push(name.to_owned());
        }
    }
    // SAFETY: d is a live DIR*, closed once.
    unsafe { libc::closedir(d) };
    Ok(out)
}

impl Root {
    /// Opens the directory at `path` (a path the runtime itself chose: not confined).
    pub fn open(path: &Path) -> Result<Root> {
        Ok(Root {
            fd: open_path(path, libc::O_DIRECTORY)?,
        })
    }

    #[cfg(test)]
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Opens `rel` (absolute or relative: both mean below the root) with `flags` (O_PATH for a
    /// mount point or a bind source).
    pub fn open_at(&self, rel: &Path, scope: Scope, flags: libc::c_int) -> Result<OwnedFd> {
        let p = cstring(&join(&components(rel)))?;
        openat2(self.fd.as_raw_fd(), &p, flags, 0, scope.resolve_flags())
    }

    /// Creates the directory `rel` and its missing parents (`mode`), each step resolved within
    /// the scope, and returns an O_PATH descriptor of it. A symlink on the way is followed only
    /// as the scope allows; a dangling one is an error, never a directory created elsewhere.
    pub fn mkdir_all(&self, rel: &Path, scope: Scope, mode: u32) -> Result<OwnedFd> {
        let comps = components(rel);
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        let mut cur = self.fd.try_clone()?;
        for i in 0..comps.len() {
            let prefix = cstring(&join(&comps[..=i]))?;
            match openat2(
                self.fd.as_raw_fd(),
                &prefix,
                flags,
                0,
                scope.resolve_flags(),
            ) {
                Ok(fd) => cur = fd,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    let name = cstring(comps[i].as_bytes())?;
                    // SAFETY: valid fd (the resolved parent) and a single-component name.
                    let r = unsafe { libc::mkdirat(cur.as_raw_fd(), name.as_ptr(), mode) };
                    if r < 0 {
                        let e = Error::last_os_error();
                        if e.kind() != ErrorKind::AlreadyExists {
                            return Err(e);
                        }
                    }
                    cur = openat2(
                        self.fd.as_raw_fd(),
                        &prefix,
                        flags,
                        0,
                        scope.resolve_flags(),
                    )
                    .map_err(|e| {
                        if e.kind() == ErrorKind::NotFound {
                            Error::new(
                                e.kind(),
                                format!(
                                    "{} is a dangling symbolic link",
                                    String::from_utf8_lossy(prefix.to_bytes())
                                ),
                            )
                        } else {
                            e
                        }
                    })?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(cur)
    }

    /// The resolved parent directory of `rel` (created if missing) and the final name, which is
    /// a plain name: acting on `(parent, name)` with `*at` calls cannot leave the root.
    pub fn parent_of(&self, rel: &Path, scope: Scope) -> Result<(OwnedFd, CString)> {
        let comps = components(rel);
        let Some((last, parents)) = comps.split_last() else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the root itself has no parent",
            ));
        };
        if last.as_bytes() == b".." {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{} ends in ..", rel.display()),
            ));
        }
        let parent = self.mkdir_all(&PathBuf::from_iter(parents.iter()), scope, 0o755)?;
        Ok((parent, cstring(last.as_bytes())?))
    }

    /// An O_PATH descriptor of the mount point `rel`, created if missing: a directory, or an
    /// empty file when `dir` is false. An existing target of another kind is used as it is (the
    /// mount then fails with the kernel's reason, as with runc).
    pub fn mount_point(&self, rel: &Path, scope: Scope, dir: bool) -> Result<OwnedFd> {
        if dir {
            return self.mkdir_all(rel, scope, 0o755);
        }
        match self.open_at(rel, scope, libc::O_PATH) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (parent, name) = self.parent_of(rel, scope)?;
        create_file_at(&parent, &name, 0o644)?;
        self.open_at(rel, scope, libc::O_PATH)
    }
}

/// Creates an empty regular file `name` in `dir` (kept if it exists as a file; a symlink there
/// is an error, never followed).
pub fn create_file_at(dir: &impl AsRawFd, name: &CStr, mode: u32) -> Result<OwnedFd> {
    // SAFETY: valid fd and name; O_NOFOLLOW refuses a final symlink.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether an error is a confinement refusal (a path that would leave its root, or a symlink
/// where none may be followed), as opposed to a missing file or an I/O failure.
pub fn is_escape(e: &Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::ELOOP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("canary"), b"host").unwrap();
        (d, root, outside)
    }

    #[test]
    fn in_root_resolves_absolute_links_inside() {
        let (_d, root, outside) = tree();
        // An image's link to an absolute path that exists on the host too, and one climbing
        // out with ../..: both lead to the root's own directories.
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../../../outside", root.join("rel")).unwrap();
        std::fs::create_dir(root.join("outside")).unwrap();
        let r = Root::open(&root).unwrap();
        let name = format!("rktup-confine-test-{}", std::process::id());
        for link in ["abs", "rel"] {
            let fd = r
                .mkdir_all(&Path::new(link).join(&name), Scope::InRoot, 0o755)
                .unwrap();
            assert_eq!(kind_of_fd(&fd).unwrap(), Kind::Dir);
        }
        assert!(root.join("etc").join(&name).is_dir());
        assert!(root.join("outside").join(&name).is_dir());
        assert!(!Path::new("/etc").join(&name).exists());
        assert!(!outside.join(&name).exists());
        let (parent, file) = r
            .parent_of(
                &Path::new("/abs").join(format!("{name}.file")),
                Scope::InRoot,
            )
            .unwrap();
        create_file_at(&parent, &file, 0o644).unwrap();
        assert!(root.join("etc").join(format!("{name}.file")).is_file());
        assert!(!Path::new("/etc").join(format!("{name}.file")).exists());
    }

    #[test]
    fn beneath_and_no_symlinks_refuse_links_out() {
        let (_d, root, outside) = tree();
        symlink(&outside, root.join("abs")).unwrap();
        symlink("..", root.join("up")).unwrap();
        symlink("etc", root.join("inner")).unwrap();
        let r = Root::open(&root).unwrap();
        for (p, scope) in [
            ("abs", Scope::Beneath),
            ("up/outside", Scope::Beneath),
            ("abs/x", Scope::Beneath),
            ("inner", Scope::NoSymlinks),
        ] {
            let e = r.mkdir_all(Path::new(p), scope, 0o755).unwrap_err();
            assert!(is_escape(&e), "{p} {scope:?}: {e}");
        }
        // A link that stays inside is fine beneath the root.
        r.mkdir_all(Path::new("inner/x"), Scope::Beneath, 0o755)
            .unwrap();
        assert!(root.join("etc/x").is_dir());
        assert!(!outside.join("x").exists());
    }

    #[test]
    fn dangling_links_are_not_created_through() {
        let (_d, root, outside) = tree();
        symlink(outside.join("new"), root.join("dangling")).unwrap();
        let r = Root::open(&root).unwrap();
        let e = r
            .mkdir_all(Path::new("dangling"), Scope::InRoot, 0o755)
            .unwrap_err();
        assert!(e.to_string().contains("dangling"), "{e}");
        assert!(!outside.join("new").exists());
        // A final symlink is never opened for creation.
        let (parent, _) = r.parent_of(Path::new("dangling"), Scope::InRoot).unwrap();
        assert!(create_file_at(&parent, c"dangling", 0o644).is_err());
        assert!(!outside.join("new").exists());
    }

    #[test]
    fn remove_all_never_follows_links() {
        let (_d, root, outside) = tree();
        std::fs::create_dir_all(root.join("t/sub")).unwrap();
        symlink(&outside, root.join("t/sub/link")).unwrap();
        std::fs::write(root.join("t/f"), b"x").unwrap();
        let r = Root::open(&root).unwrap();
        remove_all_at(r.fd(), c"t").unwrap();
        assert!(!root.join("t").exists());
        assert_eq!(std::fs::read(outside.join("canary")).unwrap(), b"host");
    }
}
