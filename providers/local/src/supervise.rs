//! `rktup supervise` (hidden): what systemd's `Restart=always` is to a cloud node's kubelet, for
//! a local cluster's control plane and agents. One supervisor per component: it starts the
//! component, restarts it whenever it exits (back-off 1 s, 2 s, 4 s … capped at 30 s, back to 1 s
//! once a run lasted 60 s), and records each exit (code or signal, when, after how long) in a
//! small JSON file beside the pid file, which `local status` reads.
//!
//! Files, for a component whose pid file is `run/<c>.pid`: `run/<c>.pid` holds the component's
//! pid and start time (rewritten at every start, so `process::running` and `down` keep working
//! on the component itself); `run/<c>.supervisor` the supervisor's (written by whoever started
//! it); `run/<c>.state.json` the [`State`].
//!
//! SIGUSR1 cuts a back-off short (`local up` wants the component now).
//! SIGTERM or SIGINT to the supervisor ends supervision only: the component keeps running and
//! `down` then stops it in its own order (agents, pods, control plane). The sender's pid is
//! logged (SA_SIGINFO). A component killed by a signal is recorded with the signal; who sent it
//! is not visible from here (only the component itself can see its sender, and the agent and
//! control plane log it for SIGTERM/SIGINT).

use crate::process::{process_start_time, read_pidfile, Tracked};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("usage: rktup supervise --pidfile FILE -- COMMAND [ARG...] ({0})")]
    Usage(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SuperviseError {
    let what = what.into();
    move |source| SuperviseError::Io { what, source }
}

/// The first back-off, its cap, and how long a run must last to reset it.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);

/// The back-off before the next start, after a run of `ran` that followed a back-off of `prev`.
pub fn next_backoff(prev: Option<Duration>, ran: Duration) -> Duration {
    match prev {
        Some(p) if ran < BACKOFF_RESET_AFTER => (p * 2).min(BACKOFF_MAX),
        _ => BACKOFF_START,
    }
}

/// How a run of the component ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exit {
    pub pid: i32,
    /// Exit code, when it exited by itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Signal number and name, when a signal ended it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal_name: Option<String>,
    /// When (RFC 3339, UTC) and after how long a run.
    pub at: String,
    pub ran_seconds: f64,
}

impl Exit {
    fn from_wait_status(pid: i32, status: i32, ran: Duration) -> Exit {
        let (code, signal) = if libc::WIFEXITED(status) {
            (Some(libc::WEXITSTATUS(status)), None)
        } else if libc::WIFSIGNALED(status) {
            (None, Some(libc::WTERMSIG(status)))
        } else {
            (None, None)
        };
        Exit {
            pid,
            code,
            signal,
            signal_name: signal.map(signal_name),
            at: crate::up::rfc3339(unix_now()),
            ran_seconds: (ran.as_secs_f64() * 1000.0).round() / 1000.0,
        }
    }

    /// "killed by SIGKILL at 01:02:03 UTC", "exited with code 1 at …".
    pub fn describe(&self) -> String {
        let what = match (&self.signal_name, self.code) {
            (Some(s), _) => format!("killed by {s}"),
            (None, Some(c)) => format!("exited with code {c}"),
            (None, None) => "ended".to_string(),
        };
        // `at` is RFC 3339: its time of day is characters 11..19.
        match self.at.get(11..19) {
            Some(t) => format!("{what} at {t} UTC"),
            None => what,
        }
    }
}

/// What the supervisor records for `local status`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub supervisor_pid: i32,
    /// The component's current pid (0 while waiting to restart it).
    pub pid: i32,
    /// Starts after the first.
    pub restarts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<Exit>,
    /// While waiting to restart: the back-off, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarting_in_seconds: Option<f64>,
}

/// The supervisor's files beside a component's pid file.
pub fn supervisor_pidfile(pidfile: &Path) -> PathBuf {
    pidfile.with_extension("supervisor")
}
pub fn state_file(pidfile: &Path) -> PathBuf {
    pidfile.with_extension("state.json")
}

/// The recorded state of the component whose pid file is `pidfile`, if it is supervised.
pub fn read_state(pidfile: &Path) -> Option<State> {
    let text = std::fs::read(state_file(pidfile)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The component's supervisor, if it runs.
pub fn supervisor(pidfile: &Path) -> Option<Tracked> {
    read_pidfile(&supervisor_pidfile(pidfile)).filter(Tracked::alive)
}

#[derive(Debug, PartialEq, Eq)]
pub struct SuperviseArgs {
    pub pidfile: PathBuf,
    pub command: Vec<String>,
}

/// `--pidfile FILE -- COMMAND [ARG...]` (no clap: the command's own flags pass through untouched).
pub fn parse(args: &[String]) -> Result<SuperviseArgs, SuperviseError> {
    let mut pidfile = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pidfile" => {
                pidfile = Some(PathBuf::from(it.next().ok_or_else(|| {
                    SuperviseError::Usage("--pidfile needs a value".into())
                })?))
            }
            "--" => break,
            other => return Err(SuperviseError::Usage(format!("unknown argument {other:?}"))),
        }
    }
    let command: Vec<String> = it.cloned().collect();
    match (pidfile, command.is_empty()) {
        (Some(pidfile), false) => Ok(SuperviseArgs { pidfile, command }),
        (None, _) => Err(SuperviseError::Usage("--pidfile is required".into())),
        (_, true) => Err(SuperviseError::Usage("no command after --".into())),
    }
}

static STOP: AtomicBool = AtomicBool::new(false);
/// SIGUSR1: skip the rest of the back-off (`local up` asks for the component now).
static NOW: AtomicBool = AtomicBool::new(false);

extern "C" fn on_now(_: libc::c_int) {
    NOW.store(true, Ordering::SeqCst);
}
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);
static STOP_SENDER: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; only atomics are
    // touched (async-signal-safe).
    let sender = unsafe { info.as_ref().map(|i| i.si_pid()).unwrap_or(0) };
    STOP_SENDER.store(sender, Ordering::SeqCst);
    STOP_SIGNAL.store(sig, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
}

fn log(msg: &str) {
    eprintln!("{} supervisor: {msg}", crate::up::rfc3339(unix_now()));
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn write_state(pidfile: &Path, st: &State) {
    // Written whole then renamed, so a reader never sees half a file.
    let path = state_file(pidfile);
    let tmp = path.with_extension("json.tmp");
    let Ok(text) = serde_json::to_vec(st) else {
        return;
    };
    if let Err(e) =
        crate::layout::write_private(&tmp, &text).and_then(|_| std::fs::rename(&tmp, &path))
    {
        log(&format!("cannot record state in {}: {e}", path.display()));
    }
}

/// Sleeps `d`, waking early when asked to stop or to restart now. True when asked to stop.
fn sleep_unless_stopped(d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if STOP.load(Ordering::SeqCst) {
            return true;
        }
        if NOW.swap(false, Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
    }
    STOP.load(Ordering::SeqCst)
}

/// Runs the supervisor until SIGTERM/SIGINT. Its stdout and stderr (the component's log file,
/// inherited by the component) carry one line per start and exit.
pub fn run(args: &SuperviseArgs) -> Result<(), SuperviseError> {
    // SAFETY: the handler only stores to atomics.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_now as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let name = args
        .pidfile
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("component")
        .to_string();
    let mut st = read_state(&args.pidfile).unwrap_or_default();
    st.supervisor_pid = std::process::id() as i32;
    let mut backoff = None;
    loop {
        if STOP.load(Ordering::SeqCst) {
            break;
        }
        let child = Command::new(&args.command[0])
            .args(&args.command[1..])
            .spawn()
            .map_err(io(format!("start {}", args.command[0])))?;
        let pid = child.id() as i32;
        // A nudge from now on is for this run's back-off (`local up` found it not running).
        NOW.store(false, Ordering::SeqCst);
        // Dropping the handle neither waits nor kills: the loop below reaps it by pid.
        drop(child);
        let started = Instant::now();
        let start_time = process_start_time(pid).unwrap_or(0);
        crate::layout::write_private(&args.pidfile, format!("{pid} {start_time}\n").as_bytes())
            .map_err(io(format!("write {}", args.pidfile.display())))?;
        st.pid = pid;
        st.restarting_in_seconds = None;
        write_state(&args.pidfile, &st);
        if st.restarts > 0 {
            log(&format!(
                "{name} restarted (pid {pid}, restart {})",
                st.restarts
            ));
        }
        // Poll rather than block in waitpid: a stop request must be seen at once, and a
        // blocking wait would miss one that lands between the check and the call.
        let status = loop {
            if STOP.load(Ordering::SeqCst) {
                break None;
            }
            let mut status = 0;
            // SAFETY: non-blocking wait on our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break Some(status);
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                // Not our child any more (cannot happen short of a bug): nothing to supervise.
                return Err(io(format!("wait for {name} (pid {pid})"))(
                    std::io::Error::last_os_error(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let Some(status) = status else { break };
        let ran = started.elapsed();
        let exit = Exit::from_wait_status(pid, status, ran);
        let wait = next_backoff(backoff, ran);
        backoff = Some(wait);
        log(&format!(
            "{name} (pid {pid}) {} after {:.1}s; restarting in {}s",
            exit.describe(),
            ran.as_secs_f64(),
            wait.as_secs()
        ));
        st.last_exit = Some(exit);
        st.pid = 0;
        st.restarting_in_seconds = Some(wait.as_secs_f64());
        write_state(&args.pidfile, &st);
        if sleep_unless_stopped(wait) {
            break;
        }
        st.restarts += 1;
    }
    let sig = STOP_SIGNAL.load(Ordering::SeqCst);
    log(&format!(
        "{} from pid {}: no longer supervising {name}{}",
        signal_name(sig),
        STOP_SENDER.load(Ordering::SeqCst),
        if st.pid > 0 {
            format!(" (pid {} keeps running)", st.pid)
        } else {
            String::new()
        }
    ));
    Ok(())
}

/// `SIGKILL` for 9; `signal 42` for what has no name here.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let short = Duration::from_secs(1);
        let mut b = None;
        let mut seen = vec![];
        for _ in 0..7 {
            let n = next_backoff(b, short);
            seen.push(n.as_secs());
            b = Some(n);
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(next_backoff(b, BACKOFF_RESET_AFTER), BACKOFF_START);
    }

    #[test]
    fn parse_keeps_the_command_flags() {
        let a: Vec<String> = [
            "--pidfile",
            "/s/run/n.pid",
            "--",
            "/bin/rktup",
            "agent",
            "--v",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = parse(&a).unwrap();
        assert_eq!(p.pidfile, PathBuf::from("/s/run/n.pid"));
        assert_eq!(p.command, ["/bin/rktup", "agent", "--v", "2"]);
        assert!(parse(&a[..3]).is_err());
        assert!(parse(&a[2..]).is_err());
        assert_eq!(state_file(&p.pidfile), PathBuf::from("/s/run/n.state.json"));
        assert_eq!(
            supervisor_pidfile(&p.pidfile),
            PathBuf::from("/s/run/n.supervisor")
        );
    }

    #[test]
    fn exits_are_described() {
        // A wait status for "killed by signal 9" is the signal number itself.
        let e = Exit::from_wait_status(7, libc::SIGKILL, Duration::from_secs(3));
        assert_eq!(e.signal_name.as_deref(), Some("SIGKILL"));
        assert!(
            e.describe().starts_with("killed by SIGKILL at "),
            "{}",
            e.describe()
        );
        // Exit code 3 is 3 << 8.
        let e = Exit::from_wait_status(7, 3 << 8, Duration::from_secs(3));
        assert_eq!(e.code, Some(3));
        assert!(e.describe().starts_with("exited with code 3 at "));
    }
}
