//! Killing processes and waiting until they are gone through pidfds (pidfd_open(2), Linux
//! 5.3): a pidfd names one process for good (a reused pid is another process) and becomes
//! readable when that process exits, so any number of processes are waited for with one
//! poll(2) instead of sleeping in fixed steps and re-reading /proc.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

/// One process, held by its pidfd (or, on a kernel without pidfds, by its pid and start time).
#[derive(Debug)]
pub struct Pidfd {
    pid: i32,
    start_time: Option<u64>,
    fd: Option<OwnedFd>,
}

impl Pidfd {
    /// Opens process `pid`; None when there is no such process (or only its zombie). With
    /// `start_time` (field 22 of /proc/PID/stat) a process that is not the one started then is
    /// None too.
    pub fn open(pid: i32, start_time: Option<u64>) -> Option<Pidfd> {
        if pid <= 0 {
            return None;
        }
        // SAFETY: pidfd_open(pid, 0) only reads its arguments; it returns a new descriptor.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = if fd >= 0 {
            // SAFETY: a descriptor just returned to us, owned by nobody else.
            Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
        } else {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::ESRCH) => return None,
                // No pidfds here (ENOSYS on Linux < 5.3): the pid and its start time.
                _ => None,
            }
        };
        // Checked after the open: from here on the descriptor holds the very process.
        let now = crate::util::process_start_time(pid)?;
        if start_time.is_some_and(|s| s != now) {
            return None;
        }
        Some(Pidfd {
            pid,
            start_time: Some(now),
            fd,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `sig` to the process (to this very process through the pidfd).
    pub fn signal(&self, sig: libc::c_int) {
        match &self.fd {
            // SAFETY: pidfd_send_signal on our descriptor, no siginfo, no flags.
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            },
            None => {
                if self.alive() {
                    // SAFETY: a pid whose start time was just checked.
                    unsafe { libc::kill(self.pid, sig) };
                }
            }
        }
    }

    /// Whether the process still runs (not exited; a zombie counts as gone).
    pub fn alive(&self) -> bool {
        let now = crate::util::process_start_time(self.pid);
        now.is_some() && now == self.start_time
    }
}

/// SIGKILL to every process, then [`wait_gone`].
pub fn kill_all(procs: Vec<Pidfd>, deadline: Instant) -> Vec<Pidfd> {
    for p in &procs {
        p.signal(libc::SIGKILL);
    }
    wait_gone(procs, deadline)
}

/// Waits until every process has exited, or until `deadline`; returns those still running.
pub fn wait_gone(mut procs: Vec<Pidfd>, deadline: Instant) -> Vec<Pidfd> {
    loop {
        procs.retain(|p| p.fd.is_some() || p.alive());
        if procs.is_empty() {
            return procs;
        }
        let now = Instant::now();
        if now >= deadline {
            return procs;
        }
        let mut left = deadline - now;
        // Processes held without a pidfd can only be looked at again.
        if procs.iter().any(|p| p.fd.is_none()) {
            left = left.min(std::time::Duration::from_millis(5));
        }
        let mut fds: Vec<libc::pollfd> = procs
            .iter()
            .filter_map(|p| p.fd.as_ref())
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds for the call's duration.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // poll itself failed: fall back to looking at each process.
            procs.retain(Pidfd::alive);
            return procs;
        }
        let exited: Vec<i32> = fds
            .iter()
            .filter(|f| f.revents != 0)
            .map(|f| f.fd)
            .collect();
        procs.retain(|p| {
            p.fd.as_ref()
                .is_none_or(|fd| !exited.contains(&fd.as_raw_fd()))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn killed_processes_are_waited_for_and_reused_pids_refused() {
        let mut children: Vec<std::process::Child> = (0..3)
            .map(|_| {
                std::process::Command::new("sleep")
                    .arg("30")
                    .spawn()
                    .expect("spawn sleep")
            })
            .collect();
        let procs: Vec<Pidfd> = children
            .iter()
            .map(|c| Pidfd::open(c.id() as i32, None).expect("a running child"))
            .collect();
        // A start time that is not the process's: another process, refused.
        let pid = children[0].id() as i32;
        let start = crate::util::process_start_time(pid).expect("start time");
        assert!(Pidfd::open(pid, Some(start + 1)).is_none());
        assert!(Pidfd::open(pid, Some(start)).is_some());
        // Still running: the wait ends at the deadline with all three.
        let left = wait_gone(procs, Instant::now() + Duration::from_millis(50));
        assert_eq!(left.len(), 3);
        let left = kill_all(left, Instant::now() + Duration::from_secs(10));
        assert!(left.is_empty(), "{left:?}");
        for c in &mut children {
            let st = c.wait().expect("reap");
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(st.signal(), Some(libc::SIGKILL));
        }
    }
}
