//! The cluster's long-running processes (the control plane, one agent per node): started
//! detached from the terminal (their own session), logging to files, tracked by pid files that
//! also hold the process start time so a reused pid is never mistaken for ours.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Process start time (field 22 of /proc/PID/stat, in clock ticks since boot): with the pid it
/// names one process for good. None when there is no such process (or only its zombie).
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Process `pid` runs and is the one that started at `start_time`.
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    pid > 0 && process_start_time(pid) == Some(start_time)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    pub pid: i32,
    pub start_time: u64,
}

impl Tracked {
    pub fn alive(&self) -> bool {
        process_alive(self.pid, self.start_time)
    }
}

pub fn read_pidfile(path: &Path) -> Option<Tracked> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace();
    Some(Tracked {
        pid: it.next()?.parse().ok()?,
        start_time: it.next()?.parse().ok()?,
    })
}

/// The process recorded in `pidfile`, if it still runs.
pub fn running(pidfile: &Path) -> Option<Tracked> {
    read_pidfile(pidfile).filter(Tracked::alive)
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Spec {
    pub exe: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
    pub pidfile: PathBuf,
    /// Network namespace (a /run/netns path) the process runs in.
    pub netns: Option<PathBuf>,
}

/// Starts `spec` in its own session and records it.
pub fn start(spec: &Spec) -> std::io::Result<Tracked> {
    let tracked = spawn_detached(spec, &spec.exe, &spec.args)?;
    crate::layout::write_private(
        &spec.pidfile,
        format!("{} {}\n", tracked.pid, tracked.start_time).as_bytes(),
    )?;
    Ok(tracked)
}

/// Starts `spec` under a supervisor (`spec.exe supervise`, so `spec.exe` must be rktup) that
/// restarts it whenever it exits (see `supervise`). Returns once the component runs and its pid
/// file names it; the supervisor's own pid goes to `supervise::supervisor_pidfile`.
pub fn start_supervised(spec: &Spec) -> std::io::Result<Tracked> {
    begin_supervised(spec)?.wait()
}

/// A supervisor started, its component not yet seen: start several, then wait for each, so
/// the supervisors' own start-up (an exec of rktup, ~8 ms in a debug build) overlaps.
#[derive(Debug)]
pub struct Starting {
    pidfile: PathBuf,
    sup: Tracked,
}

/// The first half of [`start_supervised`].
pub fn begin_supervised(spec: &Spec) -> std::io::Result<Starting> {
    // Its supervisor still runs (the component is between restarts): no second supervisor, but
    // no back-off either.
    if let Some(sup) = crate::supervise::supervisor(&spec.pidfile) {
        // SAFETY: a pid whose start time `supervisor` just checked.
        unsafe { libc::kill(sup.pid, libc::SIGUSR1) };
        return Ok(Starting {
            pidfile: spec.pidfile.clone(),
            sup,
        });
    }
    // A stale pid file would look like the new component before the supervisor writes it.
    let _ = std::fs::remove_file(&spec.pidfile);
    let mut args = vec![
        "supervise".to_string(),
        "--pidfile".to_string(),
        spec.pidfile.display().to_string(),
        "--".to_string(),
        spec.exe.display().to_string(),
    ];
    args.extend(spec.args.iter().cloned());
    let sup = spawn_detached(spec, &spec.exe, &args)?;
    crate::layout::write_private(
        &crate::supervise::supervisor_pidfile(&spec.pidfile),
        format!("{} {}\n", sup.pid, sup.start_time).as_bytes(),
    )?;
    Ok(Starting {
        pidfile: spec.pidfile.clone(),
        sup,
    })
}

impl Starting {
    /// The component, once its supervisor has started it and written its pid file.
    pub fn wait(self) -> std::io::Result<Tracked> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(t) = running(&self.pidfile) {
                return Ok(t);
            }
            reap(self.sup.pid);
            if !self.sup.alive() || Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "the supervisor (pid {}) did not start the process of {}; see its log",
                    self.sup.pid,
                    self.pidfile.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Ends every supervisor under `run_dir` (SIGTERM: supervision stops, the components keep
/// running for the caller to stop in its order). Returns (component, supervisor, gone).
pub fn stop_supervisors(run_dir: &Path) -> Vec<(String, Tracked, bool)> {
    let Ok(rd) = std::fs::read_dir(run_dir) else {
        return vec![];
    };
    let sups: Vec<(String, Tracked)> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "supervisor"))
        .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), running(&p)?)))
        .collect();
    for (_, t) in &sups {
        // SAFETY: a pid whose start time `running` just checked.
        unsafe { libc::kill(t.pid, libc::SIGTERM) };
    }
    // They check for the stop every 20-50 ms; stop() escalates to SIGKILL if one does not.
    sups.into_iter()
        .map(|(c, t)| {
            let gone = stop(t, Duration::from_secs(2));
            (c, t, gone)
        })
        .collect()
}

fn spawn_detached(spec: &Spec, exe: &Path, args: &[String]) -> std::io::Result<Tracked> {
    use std::os::unix::fs::OpenOptionsExt;
    for p in [&spec.log, &spec.pidfile] {
        if let Some(d) = p.parent() {
            crate::layout::private_dir(d)?;
        }
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&spec.log)?;
    let netns = match &spec.netns {
        Some(p) => Some(
            std::fs::File::open(p)
                .map_err(|e| std::io::Error::new(e.kind(), format!("open {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let netns_fd = netns.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = netns_fd {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    // The child is detached: it outlives us and init reaps it; dropping `child` does not wait.
    drop(child);
    let start_time = process_start_time(pid).unwrap_or(0);
    Ok(Tracked { pid, start_time })
}

/// SIGTERM, then SIGKILL after `grace`. True when the process is gone.
pub fn stop(t: Tracked, grace: Duration) -> bool {
    if !t.alive() {
        return true;
    }
    // SAFETY: signalling a pid whose start time we just checked.
    unsafe { libc::kill(t.pid, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while t.alive() && Instant::now() < deadline {
        reap(t.pid);
        std::thread::sleep(Duration::from_millis(20));
    }
    if t.alive() {
        // SAFETY: as above.
        unsafe { libc::kill(t.pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while t.alive() && Instant::now() < deadline {
            reap(t.pid);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    !t.alive()
}

/// Collects the exit status if the process is our child (started by this very command).
fn reap(pid: i32) {
    let mut st = 0;
    // SAFETY: non-blocking wait on one pid.
    unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
}

/// Processes whose command line mentions `needle` (e.g. the state directory), other than us.
pub fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.contains(needle).then(|| (pid, cmd.trim().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_records_and_stop_ends_a_process() {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec {
            exe: "/bin/sleep".into(),
            args: vec!["30".into()],
            log: dir.path().join("logs/sleep.log"),
            pidfile: dir.path().join("run/sleep.pid"),
            netns: None,
        };
        let t = start(&spec).unwrap();
        assert_eq!(running(&spec.pidfile), Some(t));
        assert!(stop(t, Duration::from_secs(5)));
        assert_eq!(running(&spec.pidfile), None);
    }
}
