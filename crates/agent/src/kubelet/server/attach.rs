//! `kubectl attach` on the kubelet port: `/attach/{namespace}/{pod}/{container}?input=1
//! &output=1&error=1&tty=1` (GET or POST), upgraded like exec (WebSocket v5/v4 channels or
//! SPDY/3.1 v4 streams; see `exec`), streaming the running container's stdout and stderr live
//! from the moment of attaching until that run of the container ends (then a Success Status)
//! or the client goes.
//!
//! A container with `stdin: true` or `tty: true` is attached through the runtime's attach
//! endpoint (`Runtime::attach`: its supervisor holds the container's stdin or terminal): input,
//! the end of input (`stdinOnce` closes the container's stdin), terminal resizes, and live
//! output. Any other container has no stdin (it reads /dev/null): its output is what the
//! runtime records (its CRI log, read through `Runtime::read_log` following from the end), and
//! input from the client is dropped, as upstream does for a container without `stdin: true`.

use super::context::{text, Body, Context};
use super::exec::ExecOptions;
use super::exec::{accept, final_status, running_container, session, spdy_session, streams_asked};
use super::exec::{Input, Streams, Transport, STDERR, STDOUT, V5};
use super::spdy;
use super::upgrade::upgraded;
use bytes::Bytes;
use hyper::{Request, Response, StatusCode};
use rktup_runtime::runtime::{PodEntry, Runtime};
use rktup_runtime::{LogRead, LogRecord, LogSink, Stream};
use std::ops::ControlFlow;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

pub async fn attach<B: Send + 'static>(
    ctx: Arc<Context>,
    mut req: Request<B>,
    ns: String,
    pod: String,
    container: String,
) -> Response<Body> {
    let (opts, transport, protocol) = match streams_asked(
        &req,
        "attach",
        ExecOptions::from_attach_query(req.uri().query()),
    ) {
        Ok(a) => a,
        Err((status, m)) => return text(status, m),
    };
    let (pod2, ctr2) = (pod.clone(), container.clone());
    // The run attached to: its output ends with that run.
    let located = running_container(&ctx, &ns, &pod, &container, move |ctx, entry| {
        let run = ctx
            .rt
            .status(&entry)
            .ok()
            .and_then(|st| {
                st.containers
                    .iter()
                    .chain(st.init_containers.iter())
                    .find(|c| c.name == ctr2)
                    .map(|c| c.restart_count)
            })
            .ok_or_else(|| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("container {ctr2:?} in pod {pod2:?} is not running"),
                )
            })?;
        Ok((entry, run))
    })
    .await;
    let (entry, run) = match located {
        Ok(e) => e,
        Err(refused) => return refused,
    };
    debug!(
        "kubelet server: attach to {ns}/{pod}/{container} run {run} (k8s_{})",
        entry.plan.uuid
    );
    let on_upgrade = hyper::upgrade::on(&mut req);
    let rt = ctx.rt.clone();
    let t2 = transport.clone();
    tokio::spawn(async move {
        let Some(io) = upgraded(on_upgrade, "attach").await else {
            return;
        };
        let interactive = entry
            .plan
            .all_containers()
            .any(|c| c.name == container && (c.stdin || c.tty));
        let job = |io| async move {
            if interactive {
                attached(rt, entry, container, io).await
            } else {
                output(rt, entry, container, run, io).await
            }
        };
        let _ = match t2 {
            Transport::Spdy => spdy_session(spdy::Connection::serve(io), &opts, job).await,
            Transport::WebSocket { .. } => {
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                session(ws, protocol == V5, job).await
            }
        };
    });
    accept(&transport, protocol)
}

/// Hands the log records of one run to the session as output chunks.
struct Forward {
    out: mpsc::Sender<(u8, Bytes)>,
}

impl LogSink for Forward {
    fn record(&mut self, r: &LogRecord<'_>) -> ControlFlow<()> {
        let stream = match r.stream {
            Stream::Stdout => STDOUT,
            Stream::Stderr => STDERR,
        };
        let mut b = Vec::with_capacity(r.content.len() + 1);
        b.extend_from_slice(r.content);
        if !r.partial {
            b.push(b'\n');
        }
        match self.out.blocking_send((stream, Bytes::from(b))) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    }

    fn caught_up(&mut self) -> ControlFlow<()> {
        if self.out.is_closed() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// The attach job: the run's output from now on until it ends or the client goes; input is
/// dropped (no stdin is held for the container).
async fn output(
    rt: Arc<Runtime>,
    entry: PodEntry,
    container: String,
    run: u32,
    io: Streams,
) -> Result<serde_json::Value, String> {
    let Streams { out, mut input } = io;
    let drain = tokio::spawn(async move {
        while let Some(i) = input.recv().await {
            if let Input::StdinEnd = i {
                continue;
            }
        }
    });
    let out2 = out.clone();
    let reading = tokio::task::spawn_blocking(move || {
        let mut sink = Forward { out: out2 };
        // From the end: the last 0 complete lines, then whatever the run appends.
        let opts = LogRead {
            tail_lines: Some(0),
            follow: true,
        };
        rt.read_log(&entry, &container, run, &opts, &mut sink)
    });
    let gone = async {
        out.closed().await;
    };
    let result = tokio::select! {
        r = reading => match r {
            Ok(Ok(())) => Ok(final_status(0, "")),
            Ok(Err(e)) => Ok(final_status(1, &format!("failed to read the container's output: {e}"))),
            Err(e) => Err(e.to_string()),
        },
        _ = drain => Err("the client closed the connection".to_string()),
        _ = gone => Err("the client closed the connection".to_string()),
    };
    result
}

/// The attach job through the runtime's attach endpoint: frames both ways until the run ends
/// (the endpoint closes) or the client goes.
async fn attached(
    rt: Arc<Runtime>,
    entry: PodEntry,
    container: String,
    io: Streams,
) -> Result<serde_json::Value, String> {
    use rktup_runtime::runtime::attach_frames as f;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::task::spawn_blocking(move || rt.attach(&entry, &container))
        .await
        .map_err(|e| e.to_string())?;
    let sock = match sock.and_then(|s| {
        s.set_nonblocking(true)
            .map(|_| s)
            .map_err(|e| e.to_string())
    }) {
        Ok(s) => s,
        Err(m) => return Ok(final_status(1, &m)),
    };
    let sock = tokio::net::UnixStream::from_std(sock).map_err(|e| e.to_string())?;
    let (mut rd, mut wr) = sock.into_split();
    let Streams { out, mut input } = io;
    let down = async move {
        let mut buf = Vec::new();
        let mut tmp = vec![0u8; 32 * 1024];
        loop {
            let n = match rd.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&tmp[..n]);
            let Ok(frames) = f::take_frames(&mut buf) else {
                return;
            };
            for (kind, data) in frames {
                let stream = if kind == f::STDERR { STDERR } else { STDOUT };
                if out.send((stream, Bytes::from(data))).await.is_err() {
                    return;
                }
            }
        }
    };
    let up = async move {
        while let Some(i) = input.recv().await {
            let frame = match i {
                Input::Stdin(b) => f::frame(f::STDIN, &b),
                Input::StdinEnd => f::frame(f::CLOSE_STDIN, &[]),
                Input::Resize(json) => {
                    let Ok(size) = serde_json::from_slice::<serde_json::Value>(&json) else {
                        continue;
                    };
                    let dim = |k: &str| size[k].as_u64().and_then(|v| u16::try_from(v).ok());
                    let (Some(w), Some(h)) = (dim("Width"), dim("Height")) else {
                        continue;
                    };
                    let mut d = w.to_be_bytes().to_vec();
                    d.extend_from_slice(&h.to_be_bytes());
                    f::frame(f::RESIZE, &d)
                }
            };
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = down => Ok(final_status(0, "")),
        _ = up => Err("the client closed the connection".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_options() {
        let o = ExecOptions::from_attach_query(Some("input=1&output=1&tty=1&error=1")).unwrap();
        assert!(o.stdin && o.stdout && o.tty && !o.stderr);
        assert!(o.command.is_empty());
        assert!(ExecOptions::from_attach_query(Some("tty=1")).is_err());
        // attach has no command: one in the query is not taken, nor asked for.
        let o = ExecOptions::from_attach_query(Some("command=ls&output=1")).unwrap();
        assert!(o.command.is_empty() && o.stdout);
    }
}
