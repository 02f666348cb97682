//! Starting one container: the code that runs in the forked children of the supervisor.
//!
//! ```text
//! supervisor ──fork──▶ intermediate: joins the cgroup and the pod's net/uts/ipc namespaces,
//!                      unshares mount+pid, forks, reports the container pid, waits, exits with
//!                      the container's code
//!                        └─fork─▶ container init (pid 1 of its pid namespace): overlay rootfs,
//!                                 volumes, /proc /sys /dev, pivot_root, ids, caps, exec
//! ```
//! The intermediate is needed because a new pid namespace only applies to the children of the
//! process that unshares it (pid_namespaces(7)).

use super::sys;
use crate::confine::{self, fd_path, Kind, Root, Scope};
use crate::pod::{ContainerPlan, PodPlan, Seccomp, Stage1Flavor, VolumeSource};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::io::RawFd;
use std::path::{Path, PathBuf};

/// Everything the children need, computed by the supervisor before fork.
pub struct Launch<'a> {
    pub plan: &'a PodPlan,
    pub c: &'a ContainerPlan,
    pub pod_dir: &'a Path,
    pub rootfs: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Namespaces to join (coreos): files for net, uts, ipc.
    pub join_ns: Vec<(PathBuf, libc::c_int)>,
    pub cgroup_procs: Vec<PathBuf>,
    pub env: Vec<String>,
    pub argv: Vec<String>,
    /// The container's stdin (a pipe or the terminal), or -1 for /dev/null.
    pub stdin_r: RawFd,
    pub stdout_w: RawFd,
    pub stderr_w: RawFd,
    pub pid_w: RawFd,
    pub err_w: RawFd,
}

fn fail(err_w: RawFd, msg: String) -> ! {
    let m = format!("rktup stage1: {msg}\n");
    sys::write_all(2, m.as_bytes());
    sys::write_all(err_w, m.as_bytes());
    sys::exit_now(127)
}

/// Runs in the intermediate child; never returns.
pub fn intermediate(l: &Launch) -> ! {
    // stdio: stdin the attach pipe or terminal (else /dev/null), stdout/stderr the log pipes
    // (or the terminal).
    if l.stdin_r >= 0 {
        // SAFETY: dup2 onto stdio.
        unsafe { libc::dup2(l.stdin_r, 0) };
    } else if let Ok(null) = std::fs::File::open("/dev/null") {
        use std::os::unix::io::IntoRawFd;
        let fd = null.into_raw_fd();
        // SAFETY: dup2 onto stdio.
        unsafe { libc::dup2(fd, 0) };
        sys::close(fd);
    }
    // SAFETY: dup2 onto stdio.
    unsafe {
        libc::dup2(l.stdout_w, 1);
        libc::dup2(l.stderr_w, 2);
    }
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        sys::ignore_signal(sig);
    }
    for p in &l.cgroup_procs {
        if let Err(e) = std::fs::write(p, "0") {
            fail(
                l.err_w,
                format!("failed to join cgroup {}: {e}", p.display()),
            );
        }
    }
    if l.plan.stage1 == Stage1Flavor::Coreos {
        for (path, t) in &l.join_ns {
            if let Err(e) = sys::setns_path(path, *t) {
                fail(l.err_w, format!("failed to join the pod namespace: {e}"));
            }
        }
        if let Err(e) = sys::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID) {
            fail(
                l.err_w,
                format!("failed to unshare mount+pid namespaces: {e}"),
            );
        }
    }
    let pid = match sys::fork() {
        Ok(p) => p,
        Err(e) => fail(l.err_w, format!("failed to fork the container init: {e}")),
    };
    if pid == 0 {
        sys::close(l.pid_w);
        container_init(l);
    }
    sys::write_all(l.pid_w, &pid.to_ne_bytes());
    sys::close(l.pid_w);
    sys::close(l.err_w);
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            sys::exit_now(sys::decode_wait(status));
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            sys::exit_now(255);
        }
    }
}

pub fn volume_source(pod_dir: &Path, plan: &PodPlan, name: &str) -> Option<PathBuf> {
    let v = plan.volumes.iter().find(|v| v.name == name)?;
    Some(match &v.source {
        VolumeSource::EmptyDir { .. } => pod_dir.join("volumes").join(name),
        VolumeSource::HostPath { path } | VolumeSource::Prepared { path } => path.clone(),
    })
}

/// The source of one volume mount, opened (O_PATH): the volume's directory, or its `subPath`
/// resolved beneath it and created when missing, as kubelet does. The volume's content is the
/// pod's, so a subPath through a symlink that leaves the volume is refused (kubelet's
/// CVE-2017-1002101), and what is mounted is this descriptor, not a path a container could swap.
pub fn mount_source(
    pod_dir: &Path,
    plan: &PodPlan,
    m: &crate::pod::MountPlan,
) -> Result<OwnedFd, MountSourceError> {
    let src = volume_source(pod_dir, plan, &m.volume).ok_or(MountSourceError::NoVolume)?;
    let Some(sp) = &m.sub_path else {
        // A hostPath is the host's own path: it is followed as kubelet does.
        return confine::open_path(&src, 0).map_err(MountSourceError::Volume);
    };
    let vol = Root::open(&src).map_err(MountSourceError::Volume)?;
    let sub = Path::new(sp);
    match vol.open_at(sub, Scope::Beneath, libc::O_PATH) {
        Ok(fd) => Ok(fd),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vol
            .mkdir_all(sub, Scope::Beneath, 0o755)
            .map_err(MountSourceError::SubPath),
        Err(e) => Err(MountSourceError::SubPath(e)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountSourceError {
    #[error("the volume is not declared")]
    NoVolume,
    #[error("{0}")]
    Volume(std::io::Error),
    #[error("{0}")]
    SubPath(std::io::Error),
}

impl MountSourceError {
    /// kubelet's words for a subPath it refuses (CreateContainerConfigError), or the plain
    /// failure to mount.
    pub fn message(&self, m: &crate::pod::MountPlan, container: &str) -> String {
        match self {
            MountSourceError::SubPath(e) if confine::is_escape(e) => format!(
                "failed to prepare subPath for volumeMount {:?} of container {container:?}: \
                 subPath {:?} resolves outside volume {:?}",
                m.volume,
                m.sub_path.as_deref().unwrap_or_default(),
                m.volume
            ),
            MountSourceError::SubPath(e) => format!(
                "failed to prepare subPath for volumeMount {:?} of container {container:?}: {e}",
                m.volume
            ),
            e => format!("failed to mount volume {}: {e}", m.volume),
        }
    }
}

/// Bind `src` onto the mount point `target` (an O_PATH descriptor of `rel` below `root`), then,
/// when `read_only` is Some, remount it read-only with those further flags. The remount needs the
/// new mount itself, so `rel` is resolved again (within the root) once the bind is in place.
fn bind_onto(
    src: &Path,
    root: &Root,
    rel: &Path,
    target: &OwnedFd,
    read_only: Option<libc::c_ulong>,
) -> std::io::Result<()> {
    sys::bind(src, &fd_path(target))?;
    if let Some(flags) = read_only {
        let top = root.open_at(rel, Scope::InRoot, libc::O_PATH)?;
        sys::mount(
            None,
            &fd_path(&top),
            None,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | flags,
            None,
        )?;
    }
    Ok(())
}

/// Mount the overlay rootfs (top layer first in lowerdir). `nodev` for unprivileged containers:
/// device files reach them only as the bind mounts of /dev below (and the device cgroup decides
/// which they may open).
pub fn mount_rootfs(
    c: &ContainerPlan,
    rootfs: &Path,
    upper: &Path,
    work: &Path,
) -> std::io::Result<()> {
    let lowers: Vec<String> = c
        .layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    let flags = if c.privileged { 0 } else { libc::MS_NODEV };
    sys::mount(Some("overlay"), rootfs, Some("overlay"), flags, Some(&opts))
}

/// Volumes, /etc files, /proc, /sys, /dev below `rootfs`.
/// What `populate` mounts besides volumes and /etc files.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Populate {
    /// Fresh /proc, /sys, /dev (coreos).
    Container,
    /// The host's /proc, /sys, /dev (fly).
    Fly,
    /// Nothing: the guest mounts its own (kvm; the host's must not be shared into the VM).
    Kvm,
}

/// What kubelet's container runtimes (containerd, CRI-O, runc's defaults) hide from unprivileged
/// containers: kernel interfaces that leak host information or allow host-wide changes.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// `rel` below the root, or None when this kernel has no such path.
fn existing(root: &Root, rel: &str) -> Result<Option<OwnedFd>, String> {
    match root.open_at(Path::new(rel), Scope::InRoot, libc::O_PATH) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("failed to open {rel}: {e}")),
    }
}

/// Masks (an empty read-only tmpfs over a directory, /dev/null over a file) and makes read-only
/// the paths above, where this kernel has them.
fn mask_kernel_paths(root: &Root) -> Result<(), String> {
    for p in MASKED_PATHS {
        let Some(t) = existing(root, p)? else {
            continue;
        };
        let r = if confine::kind_of_fd(&t).map_err(|e| e.to_string())? == Kind::Dir {
            sys::mount(
                Some("tmpfs"),
                &fd_path(&t),
                Some("tmpfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some("size=0"),
            )
        } else {
            sys::bind(Path::new("/dev/null"), &fd_path(&t))
        };
        r.map_err(|e| format!("failed to mask {p}: {e}"))?;
    }
    for p in READONLY_PATHS {
        let Some(t) = existing(root, p)? else {
            continue;
        };
        // Keep /proc's nosuid/nodev/noexec on the read-only remount.
        let keep = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        bind_onto(&fd_path(&t), root, Path::new(p), &t, Some(keep))
            .map_err(|e| format!("failed to make {p} read-only: {e}"))?;
    }
    Ok(())
}

/// Mounts volumes, the pod's /etc files and (per `mode`) /proc, /sys, /dev into the container's
/// rootfs. The rootfs is the image's: every path in it is resolved within it (`confine`), so a
/// symlink the image planted (`/etc -> /etc`, `/data -> /`) cannot move a mount point, a created
/// file or directory onto the host.
pub fn populate(l: &Launch, mode: Populate) -> Result<(), String> {
    let fly = mode == Populate::Fly;
    let c = l.c;
    let root = Root::open(&l.rootfs).map_err(|e| format!("failed to open the rootfs: {e}"))?;
    for m in &c.mounts {
        let src = mount_source(l.pod_dir, l.plan, m).map_err(|e| e.message(m, &c.name))?;
        let is_dir = confine::kind_of_fd(&src).map_err(|e| e.to_string())? == Kind::Dir;
        let rel = Path::new(&m.path);
        let target = root
            .mount_point(rel, Scope::InRoot, is_dir)
            .map_err(|e| format!("failed to create mount point {}: {e}", m.path))?;
        bind_onto(
            &fd_path(&src),
            &root,
            rel,
            &target,
            m.read_only.then_some(0),
        )
        .map_err(|e| format!("failed to mount volume {}: {e}", m.volume))?;
    }
    let covered = |p: &str| c.mounts.iter().any(|m| m.path == p || m.path == "/etc");
    for f in ["hosts", "hostname", "resolv.conf"] {
        let cp = format!("/etc/{f}");
        if covered(&cp) {
            continue;
        }
        let mount_etc = || -> std::io::Result<()> {
            let (etc, name) = root.parent_of(Path::new(&cp), Scope::InRoot)?;
            // A symlink (resolv.conf -> ../run/...) is replaced by the pod's file.
            if confine::kind_at(&etc, &name)? == Some(Kind::Symlink) {
                confine::remove_all_at(&etc, &name)?;
            }
            let target = confine::create_file_at(&etc, &name, 0o644)?;
            sys::bind(&l.pod_dir.join("etc").join(f), &fd_path(&target))
        };
        mount_etc().map_err(|e| format!("failed to mount /etc/{f}: {e}"))?;
    }
    if mode == Populate::Kvm {
        return Ok(());
    }
    let mkdir = |p: &str| {
        root.mkdir_all(Path::new(p), Scope::InRoot, 0o755)
            .map_err(|e| format!("failed to create {p}: {e}"))
    };
    let (proc_, sys_, dev) = (mkdir("/proc")?, mkdir("/sys")?, mkdir("/dev")?);
    if fly {
        // Host-level utilities: the host's /proc, /sys and /dev as they are.
        for (src, dst) in [("/proc", &proc_), ("/sys", &sys_), ("/dev", &dev)] {
            sys::bind(Path::new(src), &fd_path(dst)).map_err(|e| e.to_string())?;
        }
        return Ok(());
    }
    sys::mount(
        Some("proc"),
        &fd_path(&proc_),
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .map_err(|e| e.to_string())?;
    let sysflags = libc::MS_NOSUID
        | libc::MS_NODEV
        | libc::MS_NOEXEC
        | if c.privileged { 0 } else { libc::MS_RDONLY };
    sys::mount(
        Some("sysfs"),
        &fd_path(&sys_),
        Some("sysfs"),
        sysflags,
        None,
    )
    .map_err(|e| e.to_string())?;
    if c.privileged {
        sys::bind(Path::new("/dev"), &fd_path(&dev)).map_err(|e| e.to_string())?;
        return Ok(());
    }
    mask_kernel_paths(&root)?;
    populate_dev(&root, &dev).map_err(|e| format!("failed to populate /dev: {e}"))
}

/// A fresh /dev: a `nodev` tmpfs holding bind mounts of the host's harmless devices, a private
/// devpts, shm and mqueue. Which devices a container may open is the device cgroup's decision.
fn populate_dev(root: &Root, dev: &OwnedFd) -> std::io::Result<()> {
    sys::mount(
        Some("tmpfs"),
        &fd_path(dev),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    // The tmpfs now on top (the descriptor above names the directory under it).
    let dev = root.open_at(Path::new("/dev"), Scope::InRoot, libc::O_PATH)?;
    let at = |name: &str| -> std::io::Result<std::ffi::CString> {
        std::ffi::CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput.into())
    };
    for n in ["null", "zero", "full", "random", "urandom", "tty"] {
        let t = confine::create_file_at(&dev, &at(n)?, 0o644)?;
        sys::bind(&Path::new("/dev").join(n), &fd_path(&t))?;
    }
    let dir = |n: &str| root.mkdir_all(&Path::new("/dev").join(n), Scope::InRoot, 0o755);
    let (pts, shm, mq) = (dir("pts")?, dir("shm")?, dir("mqueue")?);
    sys::mount(
        Some("devpts"),
        &fd_path(&pts),
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    sys::mount(
        Some("shm"),
        &fd_path(&shm),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    let _ = sys::mount(
        Some("mqueue"),
        &fd_path(&mq),
        Some("mqueue"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    );
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let (n, t) = (at(name)?, at(target)?);
        // SAFETY: valid strings and fd.
        unsafe { libc::symlinkat(t.as_ptr(), dev.as_raw_fd(), n.as_ptr()) };
    }
    Ok(())
}

/// Creates the container's workingDir inside its root (where the image's links lead within it).
pub fn make_working_dir(rootfs: &Path, working_dir: &str) -> std::io::Result<()> {
    Root::open(rootfs)?
        .mkdir_all(Path::new(working_dir), Scope::InRoot, 0o755)
        .map(drop)
}

/// Find argv[0] on PATH inside the (already pivoted) root, as execvp would.
pub(crate) fn resolve_exe(argv0: &str, env: &[String]) -> String {
    if argv0.contains('/') {
        return argv0.to_string();
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for d in path.split(':') {
        let p = format!("{}/{argv0}", d.trim_end_matches('/'));
        if let Ok(c) = CString::new(p.clone()) {
            // SAFETY: valid C string.
            if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
                return p;
            }
        }
    }
    argv0.to_string()
}

/// The container's identity: seccomp filter, capability bounding set, uid/gid, capabilities,
/// no_new_privs.
/// Used by the container init and by processes entering a running container (`enter`).
pub fn drop_privileges(c: &ContainerPlan) -> Result<(), String> {
    if c.seccomp == Seccomp::RuntimeDefault && !c.privileged {
        // First, while this process still has CAP_SYS_ADMIN (without no_new_privs the kernel
        // requires it); nothing below makes a call the filter refuses.
        super::seccomp::install_runtime_default()
            .map_err(|e| format!("failed to install the RuntimeDefault seccomp filter: {e}"))?;
    }
    let caps = sys::cap_set(c.privileged, &c.cap_add, &c.cap_drop);
    if !c.privileged {
        // Bounding set first: dropping needs CAP_SETPCAP, which setuid to non-root removes.
        for cap in 0..=sys::last_cap() {
            if caps & (1 << cap) == 0 {
                // SAFETY: plain prctl.
                unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            }
        }
    }
    sys::set_ids(c.uid, c.gid)
        .map_err(|e| format!("failed to set uid {} gid {}: {e}", c.uid, c.gid))?;
    if c.uid == 0 {
        sys::apply_caps(caps).map_err(|e| format!("failed to set capabilities: {e}"))?;
    }
    if !c.privileged && !c.allow_privilege_escalation {
        sys::set_no_new_privs().map_err(|e| format!("failed to set no_new_privs: {e}"))?;
    }
    Ok(())
}

/// The container's first process; never returns.
fn container_init(l: &Launch) -> ! {
    let c = l.c;
    let fly = l.plan.stage1 == Stage1Flavor::Fly;
    if !fly {
        if let Err(e) = sys::mount(
            None,
            Path::new("/"),
            None,
            libc::MS_REC | libc::MS_PRIVATE,
            None,
        ) {
            fail(l.err_w, format!("failed to make / private: {e}"));
        }
        if let Err(e) = mount_rootfs(c, &l.rootfs, &l.upper, &l.work) {
            fail(l.err_w, format!("failed to mount the rootfs: {e}"));
        }
        if let Err(e) = populate(l, Populate::Container) {
            fail(l.err_w, e);
        }
    }
    // A failure shows below, when the container enters its workingDir.
    let _ = make_working_dir(&l.rootfs, &c.working_dir);
    if fly {
        let r = sys::cstr(&l.rootfs).map(|p| {
            // SAFETY: valid C string.
            unsafe { libc::chroot(p.as_ptr()) }
        });
        if !matches!(r, Ok(0)) {
            fail(
                l.err_w,
                format!(
                    "failed to chroot into {}: {}",
                    l.rootfs.display(),
                    std::io::Error::last_os_error()
                ),
            );
        }
    } else if let Err(e) = sys::pivot_root(&l.rootfs) {
        fail(
            l.err_w,
            format!("failed to pivot_root into {}: {e}", l.rootfs.display()),
        );
    }
    if c.read_only_rootfs {
        if let Err(e) = sys::mount(
            None,
            Path::new("/"),
            None,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
            None,
        ) {
            fail(l.err_w, format!("failed to make the rootfs read-only: {e}"));
        }
    }
    if let Err(e) = std::env::set_current_dir(&c.working_dir) {
        fail(
            l.err_w,
            format!("failed to enter workingDir {}: {e}", c.working_dir),
        );
    }
    if let Err(e) = drop_privileges(c) {
        fail(l.err_w, e);
    }
    sys::reset_signals();
    if c.tty {
        // The terminal becomes the controlling one of a session of its own.
        // SAFETY: setsid/ioctl on our own stdin.
        unsafe {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
        }
    }
    let exe = resolve_exe(&l.argv[0], &l.env);
    let to_c = |v: &[String]| -> Vec<CString> {
        v.iter()
            .map(|s| CString::new(s.replace('\0', "")).unwrap_or_default())
            .collect()
    };
    let argv = to_c(&l.argv);
    let envp = to_c(&l.env);
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    let exe_c = CString::new(exe.clone()).unwrap_or_default();
    // SAFETY: NULL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(exe_c.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
    let e = std::io::Error::last_os_error();
    let code = if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    let m = format!("rktup stage1: failed to exec {exe:?}: {e}\n");
    sys::write_all(2, m.as_bytes());
    sys::write_all(l.err_w, m.as_bytes());
    sys::exit_now(code)
}
