//! Thin, checked wrappers over the Linux calls stage1 needs. Each returns `io::Error` from errno;
//! callers add the path or step to the message.

use std::ffi::CString;
use std::io::{Error, Result};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::RawFd;
use std::path::Path;

pub fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))
}

/// A libc return value as a Result: negative means errno.
pub(crate) fn cvt(r: libc::c_int) -> Result<libc::c_int> {
    if r < 0 {
        Err(Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn mount(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let src = src.map(CString::new).transpose()?;
    let fstype = fstype.map(CString::new).transpose()?;
    let data = data.map(CString::new).transpose()?;
    let t = cstr(target)?;
    // SAFETY: all pointers are valid NUL-terminated strings or NULL, as mount(2) allows.
    cvt(unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            t.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr() as *const libc::c_void),
        )
    })
    .map_err(|e| Error::new(e.kind(), format!("mount {}: {e}", target.display())))?;
    Ok(())
}

/// A recursive bind mount of `src` onto `target` (read-only binds: `container::bind_onto`).
pub fn bind(src: &Path, target: &Path) -> Result<()> {
    let s = src.to_string_lossy().into_owned();
    mount(Some(&s), target, None, libc::MS_BIND | libc::MS_REC, None)
}

pub fn umount_detach(target: &Path) -> Result<()> {
    let t = cstr(target)?;
    // SAFETY: valid C string.
    cvt(unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) })?;
    Ok(())
}

pub fn unshare(flags: libc::c_int) -> Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::unshare(flags) })?;
    Ok(())
}

pub fn setns_path(path: &Path, nstype: libc::c_int) -> Result<()> {
    let f = std::fs::File::open(path)?;
    use std::os::unix::io::AsRawFd;
    // SAFETY: valid fd for the call's duration.
    cvt(unsafe { libc::setns(f.as_raw_fd(), nstype) })
        .map_err(|e| Error::new(e.kind(), format!("setns {}: {e}", path.display())))?;
    Ok(())
}

pub fn pivot_root(new_root: &Path) -> Result<()> {
    // The "pivot_root(".", ".")" idiom (pivot_root(2) NOTES): no put_old directory needed.
    std::env::set_current_dir(new_root)?;
    // SAFETY: valid C strings.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
    if r < 0 {
        return Err(Error::last_os_error());
    }
    umount_detach(Path::new("."))?;
    std::env::set_current_dir("/")?;
    Ok(())
}

/// `ip link set lo up` in the current network namespace (SIOCSIFFLAGS, netdevice(7)).
pub fn loopback_up() -> Result<()> {
    // SAFETY: a plain datagram socket used only for the interface ioctls below.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: ifreq is plain old data; name "lo" fits IFNAMSIZ; fd is ours.
    let r = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if r == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        r
    };
    close(fd);
    cvt(r)?;
    Ok(())
}

pub fn sethostname(name: &str) -> Result<()> {
    // SAFETY: pointer/length of a live byte slice.
    cvt(unsafe { libc::sethostname(name.as_ptr() as *const libc::c_char, name.len()) })?;
    Ok(())
}

pub fn pipe() -> Result<(RawFd, RawFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a 2-int array.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((fds[0], fds[1]))
}

/// A pseudo-terminal (master, slave), both close-on-exec.
pub fn openpty() -> Result<(RawFd, RawFd)> {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fds; name, termios and winsize may be null.
    cvt(unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    })?;
    for fd in [master, slave] {
        // SAFETY: fcntl on fds we own.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok((master, slave))
}

/// A close-on-exec duplicate of `fd`.
pub fn dup_cloexec(fd: RawFd) -> Result<RawFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an fd we own.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if r < 0 {
        return Err(Error::last_os_error());
    }
    Ok(r)
}

pub fn close(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: closing an fd we own.
        unsafe { libc::close(fd) };
    }
}

pub fn set_nonblock(fd: RawFd) {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

pub fn write_all(fd: RawFd, mut b: &[u8]) {
    while !b.is_empty() {
        // SAFETY: valid buffer.
        let n = unsafe { libc::write(fd, b.as_ptr() as *const libc::c_void, b.len()) };
        if n <= 0 {
            if Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        b = &b[n as usize..];
    }
}

/// Read until EOF (blocking).
pub fn read_to_end(fd: RawFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: valid buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n < 0 && Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

/// Non-blocking read of what is available; None on EOF.
pub fn read_some(fd: RawFd, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: valid buffer.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
    if n == 0 {
        return None;
    }
    if n < 0 {
        let e = Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted
        {
            return Some(0);
        }
        return None;
    }
    Some(n as usize)
}

pub fn kill(pid: i32, sig: libc::c_int) {
    if pid > 0 {
        // SAFETY: plain syscall.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Exit code as a shell reports it: status, or 128+signal.
pub fn decode_wait(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

/// Waits for our child `pid`: its exit status, or -1 when a signal ended it (the unit tests that
/// check a kernel refusal in a forked child report each step by exit code).
#[cfg(test)]
pub(crate) fn wait_exit_code(pid: libc::pid_t) -> i32 {
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        -1
    }
}

pub fn fork() -> Result<libc::pid_t> {
    // SAFETY: the stage1 supervisor is single-threaded, so the child may allocate and run
    // arbitrary Rust until it execs (fork(2) + signal-safety(7) only restrict multi-threaded
    // parents).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::last_os_error());
    }
    Ok(pid)
}

pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and skips atexit handlers/stdio flushing of the parent's state.
    unsafe { libc::_exit(code) }
}

/// Reset every signal to its default disposition and unblock all (exec keeps SIG_IGN and masks).
pub fn reset_signals() {
    // SAFETY: plain libc calls on local data.
    unsafe {
        for s in 1..32 {
            if s != libc::SIGKILL && s != libc::SIGSTOP {
                libc::signal(s, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

pub fn ignore_signal(sig: libc::c_int) {
    // SAFETY: plain libc call.
    unsafe { libc::signal(sig, libc::SIG_IGN) };
}

// ---- capabilities (capabilities(7), capset(2) with _LINUX_CAPABILITY_VERSION_3) ----

pub const CAP_NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The default set container runtimes grant (Docker/containerd/rkt share it).
pub const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

pub fn cap_number(name: &str) -> Option<u32> {
    let n = name.trim().to_ascii_uppercase();
    let n = n.strip_prefix("CAP_").unwrap_or(&n);
    CAP_NAMES.iter().position(|c| *c == n).map(|i| i as u32)
}

pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Bit set of capabilities for a container.
pub fn cap_set(privileged: bool, add: &[String], drop: &[String]) -> u64 {
    let last = last_cap();
    let all: u64 = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    if privileged {
        return all;
    }
    let mut set = 0u64;
    for c in DEFAULT_CAPS {
        if let Some(n) = cap_number(c) {
            set |= 1 << n;
        }
    }
    for d in drop {
        if d.eq_ignore_ascii_case("ALL") {
            set = 0;
        } else if let Some(n) = cap_number(d) {
            set &= !(1 << n);
        }
    }
    for a in add {
        if a.eq_ignore_ascii_case("ALL") {
            set = all;
        } else if let Some(n) = cap_number(a) {
            set |= 1 << n;
        }
    }
    set & all
}

/// Drop everything outside `set` from the bounding and ambient sets, then set
/// effective/permitted/inheritable to `set`.
pub fn apply_caps(set: u64) -> Result<()> {
    for c in 0..=last_cap() {
        if set & (1 << c) == 0 {
            // SAFETY: plain prctl.
            cvt(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) })?;
        }
    }
    // SAFETY: plain prctl.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    capset(set)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Our own permitted set (a container never gets more than its runtime has, e.g. when the node
/// itself runs in a container with a reduced bounding set).
pub fn current_permitted() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapPrm:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

pub fn capset(set: u64) -> Result<()> {
    let set = set & current_permitted();
    let mut h = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let lo = set as u32;
    let hi = (set >> 32) as u32;
    let d = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: lo,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: hi,
        },
    ];
    // SAFETY: header and a 2-element data array as capset(2) requires for version 3.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut CapHeader, d.as_ptr()) };
    if r < 0 {
        return Err(Error::last_os_error());
    }
    Ok(())
}

pub fn set_no_new_privs() -> Result<()> {
    // SAFETY: plain prctl.
    cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
    Ok(())
}

pub fn set_ids(uid: u32, gid: u32) -> Result<()> {
    let groups = [gid];
    // SAFETY: valid array of one gid.
    cvt(unsafe { libc::setgroups(1, groups.as_ptr()) })?;
    // SAFETY: plain syscalls.
    cvt(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: plain syscall.
    cvt(unsafe { libc::setresuid(uid, uid, uid) })?;
    Ok(())
}

pub fn set_pdeathsig(sig: libc::c_int) {
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_sets() {
        let d = cap_set(false, &[], &[]);
        assert_ne!(d & (1 << cap_number("CHOWN").unwrap()), 0);
        assert_eq!(d & (1 << cap_number("SYS_ADMIN").unwrap()), 0);
        let s = cap_set(false, &["CAP_NET_ADMIN".into()], &["ALL".into()]);
        assert_eq!(s, 1 << cap_number("NET_ADMIN").unwrap());
        assert_ne!(
            cap_set(true, &[], &[]) & (1 << cap_number("SYS_ADMIN").unwrap()),
            0
        );
    }
}
