//! Named network namespaces as iproute2 keeps them (`ip netns add/attach/delete`): a bind mount
//! of the namespace on a file under /run/netns, itself a shared mount point so the names are
//! seen from every mount namespace that shares it. And running code on a thread that entered a
//! namespace, which is how the netlink sockets of [`crate::route`] and [`crate::nft`] get
//! opened in it.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub const RUN_DIR: &str = "/run/netns";

pub fn path(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(name)
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)
}

fn mount(src: &Path, dst: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let (s, d, none) = (cstr(src)?, cstr(dst)?, c"none");
    // SAFETY: NUL-terminated strings that outlive the call; no data argument.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            none.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// /run/netns exists and is a shared mount point (iproute2's `netns_add` does the same: make
/// it shared; if it is no mount point yet, bind it onto itself first).
fn prepare_run_dir() -> io::Result<()> {
    let dir = Path::new(RUN_DIR);
    std::fs::create_dir_all(dir)?;
    match mount(Path::new(""), dir, libc::MS_SHARED | libc::MS_REC) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            mount(dir, dir, libc::MS_BIND | libc::MS_REC)?;
            mount(Path::new(""), dir, libc::MS_SHARED | libc::MS_REC)
        }
        Err(e) => Err(e),
    }
}

fn with_context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// `ip netns add <name>`: a new, empty network namespace (only a down `lo`) bound at
/// /run/netns/<name>. An existing name is left as it is.
pub fn create(name: &str) -> io::Result<()> {
    let file = path(name);
    if file.exists() {
        return Ok(());
    }
    prepare_run_dir().map_err(|e| with_context(e, format!("failed to prepare {RUN_DIR}")))?;
    std::fs::File::create(&file)
        .map_err(|e| with_context(e, format!("failed to create {}", file.display())))?;
    let target = file.clone();
    let r = std::thread::spawn(move || -> io::Result<()> {
        // SAFETY: unshare of this thread's network namespace only; the thread ends right after.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        mount(
            Path::new(&format!("/proc/self/task/{tid}/ns/net")),
            &target,
            libc::MS_BIND,
        )
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")));
    if let Err(e) = r {
        let _ = std::fs::remove_file(&file);
        return Err(with_context(
            e,
            format!("failed to create network namespace {name}"),
        ));
    }
    Ok(())
}

/// `ip netns attach <name> <pid>`: a name for process `pid`'s network namespace.
pub fn attach(name: &str, pid: u32) -> io::Result<()> {
    let file = path(name);
    if file.exists() {
        return Ok(());
    }
    prepare_run_dir().map_err(|e| with_context(e, format!("failed to prepare {RUN_DIR}")))?;
    std::fs::File::create(&file)
        .map_err(|e| with_context(e, format!("failed to create {}", file.display())))?;
    if let Err(e) = mount(
        Path::new(&format!("/proc/{pid}/ns/net")),
        &file,
        libc::MS_BIND,
    ) {
        let _ = std::fs::remove_file(&file);
        return Err(with_context(
            e,
            format!("failed to name the network namespace of pid {pid} {name}"),
        ));
    }
    Ok(())
}

/// `ip netns delete <name>`: the name goes; the namespace (and its veths) with its last user.
/// An absent name is not an error.
pub fn delete(name: &str) -> io::Result<()> {
    let file = path(name);
    if !file.exists() {
        return Ok(());
    }
    let c = cstr(&file)?;
    // SAFETY: a NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = io::Error::last_os_error();
        // EINVAL: not a mount point (a file left by a failed create); remove it anyway.
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(with_context(
                e,
                format!("failed to unmount {}", file.display()),
            ));
        }
    }
    std::fs::remove_file(&file)
        .map_err(|e| with_context(e, format!("failed to remove {}", file.display())))
}

/// Names under /run/netns starting with `prefix`.
pub fn with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir(RUN_DIR)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Moves the calling thread into the network namespace at `ns` (setns(2)).
pub fn enter(ns: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f =
        std::fs::File::open(ns).map_err(|e| with_context(e, format!("open {}", ns.display())))?;
    // SAFETY: a valid fd for the call's duration; only this thread changes namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(with_context(
            io::Error::last_os_error(),
            format!("setns {}", ns.display()),
        ));
    }
    Ok(())
}

/// Runs `f` on a new thread that entered the network namespace at `ns` (a path such as
/// /run/netns/<name> or /proc/<pid>/ns/net); sockets it opens and processes it starts are in
/// that namespace. The calling thread's namespace is untouched.
pub fn run_in<T: Send + 'static>(
    ns: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        enter(&ns)?;
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}

/// `sysctl -w <key>=<value>` in the calling thread's network namespace (the net.* keys under
/// /proc/sys/net are per namespace), e.g. `sysctl("net.ipv4.ip_forward", "1")`.
pub fn sysctl(key: &str, value: &str) -> io::Result<()> {
    // /proc/sys/net shows the namespace of the task (thread) that opens it.
    let p = Path::new("/proc/sys").join(key.replace('.', "/"));
    std::fs::write(&p, value).map_err(|e| with_context(e, format!("sysctl {key}={value}")))
}
