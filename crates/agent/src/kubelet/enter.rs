//! Running a command inside a container for `kubectl exec` (the kubelet port) and exec probes:
//! the runtime's `Runtime::enter` command, with an error pipe that tells why it could not run.

use rktup_runtime::runtime::{PodEntry, Runtime};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The command inside the container (`Runtime::enter`, with its error pipe on fd 3). Returns
/// the command and both ends of its error pipe (the read end tells why it could not run).
pub fn enter_command(
    rt: &Runtime,
    entry: &PodEntry,
    container: &str,
    cmd: &[String],
) -> std::io::Result<(tokio::process::Command, OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a 2-int array; close-on-exec so no other child inherits them.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned here only.
    let (err_r, err_w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let w = err_w.as_raw_fd();
    let mut c = tokio::process::Command::from(rt.enter(entry, container, Some(3), cmd));
    c.kill_on_drop(true);
    // SAFETY: dup2/fcntl are async-signal-safe; they only touch the child's fd table.
    unsafe {
        c.pre_exec(move || {
            if w == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else if libc::dup2(w, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok((c, err_r, err_w))
}

/// Reads what `enter` wrote to its error pipe (after every writer has exited).
pub async fn read_error_pipe(err_r: OwnedFd) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut s = String::new();
        let _ = std::fs::File::from(err_r).read_to_string(&mut s);
        s.trim().to_string()
    })
    .await
    .unwrap_or_default()
}
