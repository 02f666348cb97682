//! exec probes: the command runs inside the container (`Runtime::enter`); exit code 0 is
//! success, stdout and stderr (at most 10 KiB) are the output.

use super::{Outcome, MAX_OUTPUT};
use crate::kubelet::enter;
use rktup_runtime::runtime::{PodEntry, Runtime};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Run `cmd` in the container through `rktup stage1 <pod dir> --enter`; its stdout and stderr
/// (at most 10 KiB) are the output.
pub async fn exec_probe(
    rt: &Runtime,
    entry: &PodEntry,
    container: &str,
    cmd: Vec<String>,
    timeout: Duration,
) -> Outcome {
    if cmd.is_empty() {
        return Outcome::Error("exec probe without a command".into());
    }
    let (mut c, err_r, err_w) = match enter::enter_command(rt, entry, container, &cmd) {
        Ok(c) => c,
        Err(e) => return Outcome::Error(format!("failed to create a pipe: {e}")),
    };
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = match c.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Error(format!(
                "failed to run {}: {e}",
                rt.cfg.stage1_exe.display()
            ))
        }
    };
    drop(err_w);
    let output = Arc::new(Mutex::new(Vec::new()));
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let run = async {
        tokio::join!(
            read_limited(out, output.clone()),
            read_limited(err, output.clone())
        );
        child.wait().await
    };
    let status = match tokio::time::timeout(timeout, run).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Outcome::Error(format!("failed to wait for the command: {e}")),
        Err(_) => {
            // SIGTERM: `enter` kills the command's process group and reaps it (no zombie left
            // under the container's init); SIGKILL if it does not end in time.
            if let Some(pid) = child.id() {
                // SAFETY: signalling our own child, which has not been reaped yet.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            if tokio::time::timeout(Duration::from_secs(2), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            return Outcome::Error(format!(
                "command timed out: {:?} timed out after {}s",
                cmd.join(" "),
                timeout.as_secs()
            ));
        }
    };
    // Everything that wrote to the error pipe has exited by now.
    let problem = enter::read_error_pipe(err_r).await;
    if !problem.is_empty() {
        return Outcome::Error(problem.to_string());
    }
    let out = output
        .lock()
        .map(|o| String::from_utf8_lossy(&o).into_owned())
        .unwrap_or_default();
    if status.success() {
        Outcome::Success
    } else {
        Outcome::Failure(out)
    }
}

async fn read_limited(r: Option<impl AsyncRead + Unpin>, into: Arc<Mutex<Vec<u8>>>) {
    let Some(mut r) = r else { return };
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Ok(mut v) = into.lock() {
                    let room = MAX_OUTPUT.saturating_sub(v.len());
                    v.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
    }
}
