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
use crate::pod::{ContainerPlan, PodPlan, Seccomp, Stage1Flavor, VolumeSource};
use std::ffi::CString;
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
    // stdio: stdin /dev/null, stdout/stderr the log pipes.
    if let Ok(null) = std::fs::File::open("/dev/null") {
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

/// Join `rel` (absolute inside the container) below `root` without following `..` out.
pub fn inside(root: &Path, rel: &str) -> PathBuf {
    let mut p = root.to_path_buf();
    for comp in rel.split('/') {
        match comp {
            "" | "." | ".." => {}
            c => p.push(c),
        }
    }
    p
}

fn ensure_mountpoint(target: &Path, is_dir: bool) -> std::io::Result<()> {
    if is_dir {
        std::fs::create_dir_all(target)
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if std::fs::symlink_metadata(target).is_err() {
            std::fs::write(target, b"")?;
        }
        Ok(())
    }
}

pub fn volume_source(pod_dir: &Path, plan: &PodPlan, name: &str) -> Option<PathBuf> {
    let v = plan.volumes.iter().find(|v| v.name == name)?;
    Some(match &v.source {
        VolumeSource::EmptyDir { .. } => pod_dir.join("volumes").join(name),
        VolumeSource::HostPath { path } | VolumeSource::Prepared { path } => path.clone(),
    })
}

/// Mount the overlay rootfs (top layer first in lowerdir).
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
    sys::mount(Some("overlay"), rootfs, Some("overlay"), 0, Some(&opts))
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

/// Masks (an empty read-only tmpfs over a directory, /dev/null over a file) and makes read-only
/// the paths above, where this kernel has them.
fn mask_kernel_paths(root: &Path) -> Result<(), String> {
    for p in MASKED_PATHS {
        let t = inside(root, p);
        match std::fs::metadata(&t) {
            Ok(m) if m.is_dir() => sys::mount(
                Some("tmpfs"),
                &t,
                Some("tmpfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some("size=0"),
            )
            .map_err(|e| format!("failed to mask {p}: {e}"))?,
            Ok(_) => sys::bind(Path::new("/dev/null"), &t, false)
                .map_err(|e| format!("failed to mask {p}: {e}"))?,
            Err(_) => {}
        }
    }
    for p in READONLY_PATHS {
        let t = inside(root, p);
        if t.exists() {
            let ro = || -> std::io::Result<()> {
                sys::bind(&t, &t, false)?;
                // Keep /proc's nosuid/nodev/noexec on the read-only remount.
                sys::mount(
                    None,
                    &t,
                    None,
                    libc::MS_REMOUNT
                        | libc::MS_BIND
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV
                        | libc::MS_NOEXEC,
                    None,
                )
            };
            ro().map_err(|e| format!("failed to make {p} read-only: {e}"))?;
        }
    }
    Ok(())
}

pub fn populate(l: &Launch, mode: Populate) -> Result<(), String> {
    let fly = mode == Populate::Fly;
    let c = l.c;
    let root = &l.rootfs;
    for m in &c.mounts {
        let mut src = volume_source(l.pod_dir, l.plan, &m.volume)
            .ok_or_else(|| format!("volume {} not found", m.volume))?;
        if let Some(sp) = &m.sub_path {
            src = inside(&src, sp);
            if !src.exists() {
                std::fs::create_dir_all(&src)
                    .map_err(|e| format!("failed to create subPath {}: {e}", src.display()))?;
            }
        }
        let target = inside(root, &m.path);
        ensure_mountpoint(&target, src.is_dir())
            .map_err(|e| format!("failed to create mount point {}: {e}", target.display()))?;
        sys::bind(&src, &target, m.read_only)
            .map_err(|e| format!("failed to mount volume {}: {e}", m.volume))?;
    }
    let covered = |p: &str| c.mounts.iter().any(|m| m.path == p || m.path == "/etc");
    for f in ["hosts", "hostname", "resolv.conf"] {
        let cp = format!("/etc/{f}");
        if covered(&cp) {
            continue;
        }
        let target = inside(root, &cp);
        // A symlink (e.g. resolv.conf -> ../run/...) would make us write outside: replace it.
        if std::fs::symlink_metadata(&target)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false)
        {
            let _ = std::fs::remove_file(&target);
        }
        ensure_mountpoint(&target, false)
            .map_err(|e| format!("failed to create {}: {e}", target.display()))?;
        sys::bind(&l.pod_dir.join("etc").join(f), &target, false)
            .map_err(|e| format!("failed to mount /etc/{f}: {e}"))?;
    }
    if mode == Populate::Kvm {
        return Ok(());
    }
    let proc_ = inside(root, "/proc");
    let sys_ = inside(root, "/sys");
    let dev = inside(root, "/dev");
    for d in [&proc_, &sys_, &dev] {
        std::fs::create_dir_all(d).map_err(|e| format!("failed to create {}: {e}", d.display()))?;
    }
    if fly {
        // Host-level utilities: the host's /proc, /sys and /dev as they are.
        for (src, dst) in [("/proc", &proc_), ("/sys", &sys_), ("/dev", &dev)] {
            sys::bind(Path::new(src), dst, false).map_err(|e| e.to_string())?;
        }
        return Ok(());
    }
    sys::mount(
        Some("proc"),
        &proc_,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .map_err(|e| e.to_string())?;
    let sysflags = libc::MS_NOSUID
        | libc::MS_NODEV
        | libc::MS_NOEXEC
        | if c.privileged { 0 } else { libc::MS_RDONLY };
    sys::mount(Some("sysfs"), &sys_, Some("sysfs"), sysflags, None).map_err(|e| e.to_string())?;
    if c.privileged {
        sys::bind(Path::new("/dev"), &dev, false).map_err(|e| e.to_string())?;
        return Ok(());
    }
    mask_kernel_paths(root)?;
    sys::mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(|e| e.to_string())?;
    for n in ["null", "zero", "full", "random", "urandom", "tty"] {
        let t = dev.join(n);
        std::fs::write(&t, b"").map_err(|e| format!("failed to create /dev/{n}: {e}"))?;
        sys::bind(&Path::new("/dev").join(n), &t, false).map_err(|e| e.to_string())?;
    }
    let pts = dev.join("pts");
    let shm = dev.join("shm");
    let mq = dev.join("mqueue");
    for d in [&pts, &shm, &mq] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    sys::mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| e.to_string())?;
    sys::mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(|e| e.to_string())?;
    let _ = sys::mount(
        Some("mqueue"),
        &mq,
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
        let _ = std::os::unix::fs::symlink(target, dev.join(name));
    }
    Ok(())
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
    let wd = inside(&l.rootfs, &c.working_dir);
    let _ = std::fs::create_dir_all(&wd);
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
