//! `rktup stage1 <pod dir> --enter <container> -- <command>...`: run a command inside a running
//! container the way the container itself sees the world (kubelet's exec, here for exec probes):
//! its cgroup, its ipc/uts/net/pid/mount namespaces, its root, workingDir, user, capabilities and
//! environment.
//!
//! ```text
//! enter (single-threaded: setns into a mount namespace needs that)
//!   opens /proc/<pid>/ns/* and /proc/<pid>/root of the container's first process, joins its
//!   cgroup and namespaces, chroots to its root, forks (a joined pid namespace only applies to
//!   children) and waits; exits with the command's exit code
//!     └─ child: pdeathsig, the container's identity, execve(command, the container's env)
//! ```
//! A container of a stage1-kvm pod runs inside the pod's VM: there the command goes through the
//! guest channel (`kvm.rs`: stdin and stdout on one connection, stderr on another, the exit
//! code back through the control share), with the container's root, environment and
//! workingDir as the guest runs the container.
//!
//! Failures to enter or to exec are written to `--error-fd` (else stderr) and exit with 255, so
//! a caller can tell "the command failed" from "the command could not run". SIGTERM (a probe's
//! timeout) kills the command's process group and reaps the command before exiting, so it does
//! not linger as a zombie under the container's init; SIGKILL takes the command down through
//! its parent-death signal.

use super::{cgroup_procs_files, container, kvm, sys, telnet};
use crate::pod::{read_plan, read_status, PodPlan, PodStatus, Stage1Flavor};
use std::ffi::CString;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Exit code of `enter` when the command could not be run at all.
pub const ENTER_FAILED: i32 = 255;

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_: libc::c_int) {
    TERMINATE.store(true, Ordering::SeqCst);
}

/// The host pid of `name`'s first process if the container is running (and that pid still is
/// the container's: it sits in the container's cgroup). None for a stage1-kvm pod's containers,
/// which run in the pod's VM (`kvm::container_running` says whether they run).
pub fn running_pid(plan: &PodPlan, status: &PodStatus, name: &str) -> Result<i32, String> {
    if plan.stage1 == Stage1Flavor::Kvm {
        return Err(format!(
            "container {name:?} runs inside the VM of a stage1-kvm pod and has no process on the node"
        ));
    }
    if !plan.all_containers().any(|c| c.name == name) {
        return Err(format!("container {name:?} not found in pod {}", plan.uuid));
    }
    let not_running = || format!("container {name:?} is not running");
    let cs = status
        .containers
        .iter()
        .chain(status.init_containers.iter())
        .find(|s| s.name == name)
        .ok_or_else(not_running)?;
    let pid = match (cs.state.as_str(), cs.pid) {
        ("running", Some(p)) if p > 0 => p,
        _ => return Err(not_running()),
    };
    let rel = format!("{}/{name}", plan.cgroup_path());
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    if !cg.lines().any(|l| l.ends_with(&format!("/{rel}"))) {
        return Err(not_running());
    }
    Ok(pid)
}

fn report(fd: Option<RawFd>, msg: &str) {
    let m = format!("{msg}\n");
    sys::write_all(fd.unwrap_or(2), m.as_bytes());
}

/// Run `argv` in container `name` of the pod in `pod_dir`; returns the exit code to exit with.
pub fn run(pod_dir: &Path, name: &str, argv: &[String], error_fd: Option<RawFd>) -> i32 {
    if let Some(fd) = error_fd {
        // The command itself must not inherit it (the caller reads it until EOF).
        // SAFETY: fcntl on an fd handed to us.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    match enter(pod_dir, name, argv, error_fd) {
        Ok(code) => code,
        Err(m) => {
            report(error_fd, &m);
            ENTER_FAILED
        }
    }
}

fn enter(
    pod_dir: &Path,
    name: &str,
    argv: &[String],
    error_fd: Option<RawFd>,
) -> Result<i32, String> {
    if argv.is_empty() {
        return Err("no command given".into());
    }
    let plan = read_plan(pod_dir).map_err(|e| e.to_string())?;
    let status = read_status(pod_dir).map_err(|e| e.to_string())?;
    if plan.stage1 == Stage1Flavor::Kvm {
        kvm::container_running(&plan, &status, name)?;
        return enter_kvm(pod_dir, name, argv);
    }
    let pid = running_pid(&plan, &status, name)?;
    let c = plan
        .all_containers()
        .find(|c| c.name == name)
        .ok_or_else(|| format!("container {name:?} not found"))?
        .clone();
    // The container's environment as it was started (downward API values included).
    let env: Vec<String> = std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| {
            b.split(|x| *x == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default();
    // Open everything of the container before joining anything (paths change on the way).
    let root = std::fs::File::open(format!("/proc/{pid}/root"))
        .map_err(|e| format!("failed to open the container's root: {e}"))?;
    let mut namespaces = Vec::new();
    for (kind, flag) in [
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
        ("net", libc::CLONE_NEWNET),
        ("pid", libc::CLONE_NEWPID),
        ("mnt", libc::CLONE_NEWNS),
    ] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
            .map_err(|e| format!("failed to read the container's {kind} namespace: {e}"))?;
        let ours = std::fs::read_link(format!("/proc/self/ns/{kind}")).ok();
        if ours.as_ref() != Some(&theirs) {
            let f = std::fs::File::open(format!("/proc/{pid}/ns/{kind}"))
                .map_err(|e| format!("failed to open the container's {kind} namespace: {e}"))?;
            namespaces.push((kind, f, flag));
        }
    }
    let rel = format!("{}/{name}", plan.cgroup_path());
    for p in cgroup_procs_files(&rel) {
        std::fs::write(&p, "0")
            .map_err(|e| format!("failed to join cgroup {}: {e}", p.display()))?;
    }
    for (kind, f, flag) in &namespaces {
        // SAFETY: valid fd for the call's duration.
        if unsafe { libc::setns(f.as_raw_fd(), *flag) } < 0 {
            return Err(format!(
                "failed to join the container's {kind} namespace: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    // SAFETY: fchdir to a directory fd we hold, then chroot to it.
    let r = unsafe {
        if libc::fchdir(root.as_raw_fd()) == 0 {
            libc::chroot(c".".as_ptr())
        } else {
            -1
        }
    };
    if r != 0 {
        return Err(format!(
            "failed to enter the container's root: {}",
            std::io::Error::last_os_error()
        ));
    }
    drop(root);
    if std::env::set_current_dir(&c.working_dir).is_err() {
        let _ = std::env::set_current_dir("/");
    }
    let child = sys::fork().map_err(|e| format!("failed to fork: {e}"))?;
    if child == 0 {
        // Its own process group, which a timeout kills as a whole.
        // SAFETY: plain syscall.
        unsafe { libc::setpgid(0, 0) };
        // Killed with us (the caller enforces the probe timeout on us). getppid() cannot
        // confirm we still have our parent: it is outside our (the container's) pid namespace.
        sys::set_pdeathsig(libc::SIGKILL);
        if let Err(e) = container::drop_privileges(&c) {
            report(error_fd, &e);
            sys::exit_now(ENTER_FAILED);
        }
        sys::reset_signals();
        let exe = container::resolve_exe(&argv[0], &env);
        let to_c = |v: &[String]| -> Vec<CString> {
            v.iter()
                .map(|s| CString::new(s.replace('\0', "")).unwrap_or_default())
                .collect()
        };
        let args = to_c(argv);
        let envs = to_c(&env);
        let mut argv_p: Vec<*const libc::c_char> = args.iter().map(|s| s.as_ptr()).collect();
        argv_p.push(std::ptr::null());
        let mut envp_p: Vec<*const libc::c_char> = envs.iter().map(|s| s.as_ptr()).collect();
        envp_p.push(std::ptr::null());
        let exe_c = CString::new(exe.replace('\0', "")).unwrap_or_default();
        // SAFETY: NULL-terminated arrays of valid C strings that outlive the call.
        unsafe { libc::execve(exe_c.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
        let e = std::io::Error::last_os_error();
        let m = if e.kind() == std::io::ErrorKind::NotFound && !argv[0].contains('/') {
            format!("exec: {:?}: executable file not found in $PATH", argv[0])
        } else {
            format!("exec: {exe:?}: {e}")
        };
        report(error_fd, &m);
        sys::exit_now(ENTER_FAILED);
    }
    // SAFETY: plain syscall (both sides set the group, whichever runs first).
    unsafe { libc::setpgid(child, child) };
    handle_terminate();
    let mut st = 0;
    loop {
        if TERMINATE.load(Ordering::SeqCst) {
            // SAFETY: plain syscalls on our child and its process group.
            unsafe {
                libc::kill(-child, libc::SIGKILL);
                libc::kill(child, libc::SIGKILL);
            }
        }
        // Polled, so a signal between the check and the wait cannot be missed.
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(child, &mut st, libc::WNOHANG) };
        if r == child {
            return Ok(sys::decode_wait(st));
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(format!(
                "failed to wait for the command: {}",
                std::io::Error::last_os_error()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `enter` for a stage1-kvm pod: the command runs in the guest (see the module doc); our stdin
/// is copied to it, its stdout and stderr to ours. SIGTERM kills it in the guest.
fn enter_kvm(pod_dir: &Path, name: &str, argv: &[String]) -> Result<i32, String> {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    let tty = window_size(0);
    let g = kvm::GuestExec::start(pod_dir, name, argv, tty)
        .map_err(|e| format!("failed to reach the VM of the stage1-kvm pod: {e}"))?;
    handle_terminate();
    if tty.is_some() {
        return Ok(relay_tty(&g));
    }
    // stdin on a thread of its own: it may never end (the command ends first); then the
    // process exits with it still blocked in read.
    let mut to_guest =
        g.io.try_clone()
            .map_err(|e| format!("failed to start the command's input: {e}"))?;
    std::thread::spawn(move || {
        // SAFETY: fd 0 is ours for the process's life; ManuallyDrop never closes it.
        let mut stdin = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if to_guest.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = to_guest.shutdown(std::net::Shutdown::Write);
    });
    let mut open = [Some((&g.io, 1)), g.err.as_ref().map(|e| (e, 2))];
    let mut buf = vec![0u8; 32 * 1024];
    while open.iter().any(Option::is_some) {
        if TERMINATE.load(Ordering::SeqCst) {
            g.kill();
            return Ok(128 + libc::SIGKILL);
        }
        let mut fds: Vec<libc::pollfd> = open
            .iter()
            .flatten()
            .map(|(s, _)| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid array of pollfds for the call's duration.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        for slot in open.iter_mut() {
            let Some((mut s, out)) = *slot else { continue };
            let ready = fds.iter().any(|p| p.fd == s.as_raw_fd() && p.revents != 0);
            if !ready {
                continue;
            }
            match s.read(&mut buf) {
                Ok(0) => *slot = None,
                // A reader gone (the client) loses the output, not the command's end.
                Ok(n) => sys::write_all(out, &buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => *slot = None,
            }
        }
    }
    g.exit_code()
        .ok_or_else(|| "the VM did not report the command's exit code".to_string())
}

/// SIGTERM, SIGINT and SIGHUP set TERMINATE (a probe's timeout, the client gone).
fn handle_terminate() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_terminate as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

static WINCH: AtomicBool = AtomicBool::new(false);

extern "C" fn on_winch(_: libc::c_int) {
    WINCH.store(true, Ordering::SeqCst);
}

/// The (columns, rows) of the terminal on `fd`; None if it is not a terminal.
fn window_size(fd: RawFd) -> Option<(u16, u16)> {
    // SAFETY: isatty and TIOCGWINSZ on a descriptor we hold, into a local winsize.
    unsafe {
        if libc::isatty(fd) != 1 {
            return None;
        }
        let mut ws: libc::winsize = std::mem::zeroed();
        libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws);
        Some((ws.ws_col, ws.ws_row))
    }
}

/// A `tty` session (see `kvm`): our terminal (the caller's pseudo-terminal on stdin and stdout)
/// raw, since the guest's terminal echoes and edits; keystrokes in, output out, window size
/// changes (SIGWINCH) passed on. Returns the exit code.
fn relay_tty(g: &kvm::GuestExec) -> i32 {
    use std::io::{Read, Write};
    // SAFETY: termios calls on our stdin, into a local struct; the handler only stores to an
    // atomic.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) == 0 {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_winch as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGWINCH, &sa, std::ptr::null_mut());
    }
    let mut telnet = telnet::Telnet::new();
    let mut conn = &g.io;
    let mut stdin_open = true;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        if TERMINATE.load(Ordering::SeqCst) {
            g.kill();
            return 128 + libc::SIGKILL;
        }
        if WINCH.swap(false, Ordering::SeqCst) {
            if let Some((cols, rows)) = window_size(0) {
                let _ = conn.write_all(&telnet::Telnet::window_size(cols, rows));
            }
        }
        let mut fds = vec![libc::pollfd {
            fd: conn.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if stdin_open {
            fds.push(libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: a valid array of pollfds for the call's duration.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if fds.get(1).is_some_and(|p| p.revents != 0) {
            // SAFETY: reading our stdin into a buffer we own.
            let n = unsafe { libc::read(0, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            if n > 0 {
                let _ = conn.write_all(&telnet::Telnet::input(&buf[..n as usize]));
            } else if n == 0
                || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                // The caller's terminal is gone (EIO) or ended: the command goes on.
                stdin_open = false;
            }
        }
        if fds[0].revents != 0 {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => sys::write_all(1, &telnet.output(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    g.exit_code().unwrap_or(ENTER_FAILED)
}
