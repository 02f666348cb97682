//! `kubectl exec` on the kubelet port: `GET /exec/{namespace}/{pod}/{container}?command=...
//! &input=1&output=1&error=1&tty=1` (the API server's names for the kubelet), upgraded to a
//! WebSocket that speaks `v5.channel.k8s.io` — what kubectl ≥ 1.30 asks for — or
//! `v4.channel.k8s.io`.
//!
//! Every message is binary; its first byte names the stream: 0 stdin, 1 stdout, 2 stderr,
//! 3 error (one `Status` when the command has ended), 4 resize (`{"Width":..,"Height":..}` for a
//! TTY), and in v5 255 = close (`[255, 0]`: the client's stdin ended). The server closes the
//! connection after the Status; kubectl reads stdout/stderr until then and exits with the code
//! the Status carries.
//!
//! The command runs inside the container through `rktup stage1 <pod dir> --enter` (as exec
//! probes do): the container's namespaces, root, user, capabilities and environment. A TTY is a
//! pseudo-terminal whose slave becomes the command's controlling terminal. In a stage1-kvm pod
//! `--enter` carries the command into the pod's VM over its guest channel (`stage1::kvm`), a
//! TTY as a terminal of the guest's own (busybox telnetd's), resized with the node-side one.

use super::context::{locate, text, Body, Context};
use super::spdy;
use super::upgrade::{blocking, spdy_accept, upgraded, websocket_accept, Upgrade};
use crate::kubelet::enter::{enter_command, read_error_pipe};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::{Request, Response, StatusCode};
use rktup_runtime::pod::Stage1Flavor;
use rktup_runtime::runtime::{PodEntry, Runtime};
use rktup_runtime::stage1::kvm;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

pub(super) const V5: &str = "v5.channel.k8s.io";
pub(super) const V4: &str = "v4.channel.k8s.io";

const STDIN: u8 = 0;
pub(super) const STDOUT: u8 = 1;
pub(super) const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// What the exec request asks for (upstream kubelet's query parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecOptions {
    /// exec's query: the command and the streams.
    pub fn from_query(query: Option<&str>) -> Result<ExecOptions, String> {
        Self::parse(query, true)
    }

    /// attach's query: exec's names, no command.
    pub fn from_attach_query(query: Option<&str>) -> Result<ExecOptions, String> {
        Self::parse(query, false)
    }

    fn parse(query: Option<&str>, with_command: bool) -> Result<ExecOptions, String> {
        let mut o = ExecOptions {
            command: Vec::new(),
            stdin: false,
            stdout: false,
            stderr: false,
            tty: false,
        };
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let on = matches!(v.as_ref(), "1" | "true" | "True" | "TRUE");
            match k.as_ref() {
                "command" if with_command => o.command.push(v.into_owned()),
                "input" => o.stdin = on,
                "output" => o.stdout = on,
                "error" => o.stderr = on,
                "tty" => o.tty = on,
                _ => {}
            }
        }
        if with_command && o.command.is_empty() {
            return Err("you must specify at least one command for the container".into());
        }
        if !(o.stdin || o.stdout || o.stderr) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        // A terminal has one output stream (upstream drops stderr the same way).
        if o.tty {
            o.stderr = false;
        }
        Ok(o)
    }
}

/// The subprotocol to answer with: v5 if offered, else v4.
pub(super) fn negotiate(offered: &str) -> Option<&'static str> {
    let offered: Vec<&str> = offered.split(',').map(str::trim).collect();
    [V5, V4].into_iter().find(|p| offered.contains(p))
}

/// Answers the upgrade and runs the session on the upgraded connection.
pub async fn exec<B: Send + 'static>(
    ctx: Arc<Context>,
    mut req: Request<B>,
    ns: String,
    pod: String,
    container: String,
) -> Response<Body> {
    let (opts, transport, protocol) =
        match streams_asked(&req, "exec", ExecOptions::from_query(req.uri().query())) {
            Ok(a) => a,
            Err((status, m)) => return text(status, m),
        };
    let entry = match running_container(&ctx, &ns, &pod, &container, |_, e| Ok(e)).await {
        Ok(e) => e,
        Err(refused) => return refused,
    };
    debug!(
        "kubelet server: exec in {ns}/{pod}/{container} (k8s_{}): {:?}{}",
        entry.plan.uuid,
        opts.command,
        if opts.tty { " with a TTY" } else { "" }
    );
    let on_upgrade = hyper::upgrade::on(&mut req);
    let rt = ctx.rt.clone();
    let spdy = transport == Transport::Spdy;
    tokio::spawn(async move {
        let Some(io) = upgraded(on_upgrade, "exec").await else {
            return;
        };
        let ended = if spdy {
            let conn = spdy::Connection::serve(io);
            spdy_session(conn, &opts, |io| run(&opts, &rt, &entry, &container, io)).await
        } else {
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
            session(ws, protocol == V5, |io| {
                run(&opts, &rt, &entry, &container, io)
            })
            .await
        };
        if let Err(e) = ended {
            debug!("kubelet server: exec in {ns}/{pod}/{container}: {e}");
        }
    });
    accept(&transport, protocol)
}

/// What an exec or attach request asks for: its query read by `opts`, and the transport with
/// its protocol; or the status and message refusing it.
pub(super) fn streams_asked<B>(
    req: &Request<B>,
    what: &str,
    opts: Result<ExecOptions, String>,
) -> Result<(ExecOptions, Transport, &'static str), (StatusCode, String)> {
    let opts = opts.map_err(|m| (StatusCode::BAD_REQUEST, m))?;
    let (transport, protocol) = transport(req, what)?;
    Ok((opts, transport, protocol))
}

/// Finds the running container `ns/pod/container` names, then `more` of it, on the blocking
/// pool (the runtime's look-ups block); or the response refusing the request.
pub(super) async fn running_container<T: Send + 'static>(
    ctx: &Arc<Context>,
    ns: &str,
    pod: &str,
    container: &str,
    more: impl FnOnce(&Context, PodEntry) -> Result<T, (StatusCode, String)> + Send + 'static,
) -> Result<T, Response<Body>> {
    let ctx = ctx.clone();
    let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
    blocking(move || {
        let entry = locate(&ctx, &ns, &pod, &container)?;
        let running = if entry.plan.stage1 == Stage1Flavor::Kvm {
            // In the pod's VM: entered through its guest channel (`stage1::kvm`).
            kvm::container_running(&entry.plan, &entry.status, &container)
        } else {
            ctx.rt.container_pid(&entry, &container).map(drop)
        };
        running.map_err(|m| (StatusCode::BAD_REQUEST, m))?;
        more(&ctx, entry)
    })
    .await
}

/// The transport a streaming request (exec, attach) asks for: WebSocket (v5/v4 channels), or
/// SPDY/3.1 streams (kubectl before 1.30, client-go's SPDY executor), which speak v4's
/// error-stream Status. Else the status and message refusing it.
pub(super) fn transport<B>(
    req: &Request<B>,
    what: &str,
) -> Result<(Transport, &'static str), (StatusCode, String)> {
    match Upgrade::of(req) {
        Some(Upgrade::WebSocket { key, protocols }) => match negotiate(&protocols.join(",")) {
            Some(p) => Ok((Transport::WebSocket { key }, p)),
            None => Err((
                StatusCode::BAD_REQUEST,
                format!("none of the offered subprotocols {protocols:?} is supported ({V5}, {V4})"),
            )),
        },
        Some(Upgrade::Spdy { protocols }) if protocols.iter().any(|p| p == V4) => {
            Ok((Transport::Spdy, V4))
        }
        Some(Upgrade::Spdy { protocols }) => Err((
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {protocols:?}, server supports [\"{V4}\"]"
            ),
        )),
        None => Err((
            StatusCode::BAD_REQUEST,
            format!("{what} needs an upgrade: WebSocket ({V5}, {V4}) or SPDY/3.1 ({V4})"),
        )),
    }
}

/// The 101 answer for `transport` with `protocol`.
pub(super) fn accept(transport: &Transport, protocol: &str) -> Response<Body> {
    match transport {
        Transport::WebSocket { key } => websocket_accept(key, protocol),
        Transport::Spdy => spdy_accept(protocol),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Transport {
    WebSocket { key: String },
    Spdy,
}

/// A pseudo-terminal: the master for us, the slave for the command.
struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

fn open_pty() -> std::io::Result<Pty> {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fds; name, termios and winsize may be null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just opened and are owned here only.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [master.as_raw_fd(), slave.as_raw_fd()] {
        // SAFETY: fcntl on fds we own.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(Pty { master, slave })
}

fn set_window_size(master: RawFd, json: &[u8]) {
    let Ok(size) = serde_json::from_slice::<serde_json::Value>(json) else {
        return;
    };
    let dim = |k: &str| size[k].as_u64().and_then(|v| u16::try_from(v).ok());
    let (Some(width), Some(height)) = (dim("Width"), dim("Height")) else {
        return;
    };
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) };
}

/// The Status sent on the error stream when the command has ended.
pub(super) fn final_status(exit_code: i32, problem: &str) -> serde_json::Value {
    use serde_json::json;
    if !problem.is_empty() {
        return json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": "InternalError", "message": problem});
    }
    if exit_code == 0 {
        return json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": "NonZeroExitCode",
        "message": format!("command terminated with non-zero exit code: exit status {exit_code}"),
        "details": {"causes": [{"reason": "ExitCode", "message": exit_code.to_string()}]}})
}

fn framed(stream: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(stream);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// What a client sends a running command, whatever the transport.
pub(super) enum Input {
    Stdin(Bytes),
    /// The client's stdin ended.
    StdinEnd,
    /// A terminal size, as JSON (`{"Width":..,"Height":..}`).
    Resize(Bytes),
}

/// A command's side of a session: output chunks out (`STDOUT`/`STDERR`, data); the client's
/// input in, the channel closing when the client has gone.
pub(super) struct Streams {
    pub out: mpsc::Sender<(u8, Bytes)>,
    pub input: mpsc::Receiver<Input>,
}

impl Streams {
    /// Runs `job` on these streams, then waits until `forward` has passed its last output on
    /// (the final Status must follow all of it).
    async fn run<J, F>(
        self,
        job: J,
        forward: tokio::task::JoinHandle<()>,
    ) -> Result<serde_json::Value, String>
    where
        J: FnOnce(Streams) -> F,
        F: std::future::Future<Output = Result<serde_json::Value, String>>,
    {
        let ended = job(self).await;
        let _ = forward.await;
        ended
    }
}

/// Copies `from` to the client as `stream` chunks until EOF (or EIO: a pty whose slave is
/// closed).
async fn pump_out(mut from: impl AsyncRead + Unpin, stream: u8, to: mpsc::Sender<(u8, Bytes)>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to
                    .send((stream, Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Runs the command with `io`: returns the Status for the error stream once it has ended and
/// its output is all queued, or Err when the client went away first (the command is ended).
async fn run(
    opts: &ExecOptions,
    rt: &Runtime,
    entry: &PodEntry,
    container: &str,
    io: Streams,
) -> Result<serde_json::Value, String> {
    let (mut child, err_r, pty, stdin) = match start(opts, rt, entry, container) {
        Ok(s) => s,
        Err(e) => return Ok(final_status(1, &format!("failed to run the command: {e}"))),
    };
    let mut outputs = Vec::new();
    if let Some(master) = &pty {
        let reader = tokio::fs::File::from_std(std::fs::File::from(
            master.try_clone().map_err(|e| e.to_string())?,
        ));
        outputs.push(tokio::spawn(pump_out(reader, STDOUT, io.out.clone())));
    } else {
        if let Some(out) = child.stdout.take() {
            outputs.push(tokio::spawn(pump_out(out, STDOUT, io.out.clone())));
        }
        if let Some(err) = child.stderr.take() {
            outputs.push(tokio::spawn(pump_out(err, STDERR, io.out.clone())));
        }
    }
    drop(io.out);
    // The reader keeps its own handle on the terminal for resizes (ours closes when the command
    // ends, and a closed fd number may be reused).
    let resize = pty.as_ref().and_then(|m| m.try_clone().ok());
    let mut input = io.input;
    let reader = async move {
        let master_fd = resize.as_ref().map(AsRawFd::as_raw_fd);
        let mut stdin = stdin;
        while let Some(i) = input.recv().await {
            match i {
                Input::Stdin(data) => {
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(&data).await.is_err() || w.flush().await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Input::Resize(json) => {
                    if let Some(fd) = master_fd {
                        set_window_size(fd, &json);
                    }
                }
                Input::StdinEnd => {
                    if let Some(mut w) = stdin.take() {
                        // A terminal sees the end of input as ^D.
                        if master_fd.is_some() {
                            let _ = w.write_all(&[4]).await;
                        }
                        let _ = w.shutdown().await;
                    }
                }
            }
        }
    };
    let mut reader = tokio::spawn(reader);
    let pid = child.id();
    let wait = async {
        let status = child.wait().await;
        for o in outputs {
            let _ = o.await;
        }
        status
    };
    tokio::pin!(wait);
    let status = tokio::select! {
        s = &mut wait => s,
        _ = &mut reader => {
            // The client went away: end the command (`enter` takes its process group along).
            if let Some(pid) = pid {
                // SAFETY: signalling our own child, which has not been reaped yet.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            drop(pty);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut wait).await;
            return Err("the client closed the connection".into());
        }
    };
    drop(pty);
    let code = match status {
        Ok(s) => s.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + s.signal().unwrap_or(0)
        }),
        Err(e) => return Err(format!("failed to wait for the command: {e}")),
    };
    let problem = read_error_pipe(err_r).await;
    Ok(final_status(code, &problem))
}

/// The WebSocket transport: one binary message per chunk, its first byte the stream.
/// `job` is the command (exec) or the container's output (attach).
pub(super) async fn session<S, J, F>(ws: WebSocketStream<S>, v5: bool, job: J) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    J: FnOnce(Streams) -> F,
    F: std::future::Future<Output = Result<serde_json::Value, String>>,
{
    let (mut sink, mut incoming) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(32);
    // One writer owns the sink; stdout, stderr and the final Status queue to it.
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let last = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || last {
                break;
            }
        }
    });
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Bytes)>(32);
    let tx2 = tx.clone();
    let forward = tokio::spawn(async move {
        while let Some((stream, data)) = out_rx.recv().await {
            if tx2.send(framed(stream, &data)).await.is_err() {
                break;
            }
        }
    });
    // The client's messages: stdin, resize, close of stdin; the end of the connection.
    let (in_tx, in_rx) = mpsc::channel::<Input>(32);
    let reader = tokio::spawn(async move {
        while let Some(msg) = incoming.next().await {
            let data = match msg {
                Ok(Message::Binary(b)) => b,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let input = match data.first().copied() {
                Some(STDIN) => Input::Stdin(data.slice(1..)),
                Some(RESIZE) => Input::Resize(data.slice(1..)),
                Some(CLOSE) if v5 && data.get(1) == Some(&STDIN) => Input::StdinEnd,
                _ => continue,
            };
            if in_tx.send(input).await.is_err() {
                break;
            }
        }
    });
    let ended = Streams {
        out: out_tx,
        input: in_rx,
    }
    .run(job, forward)
    .await;
    let status = match ended {
        Ok(s) => s,
        Err(e) => {
            drop(tx);
            let _ = writer.await;
            return Err(e);
        }
    };
    let _ = tx.send(framed(ERROR, status.to_string().as_bytes())).await;
    let _ = tx.send(Message::Close(Some(normal_close()))).await;
    drop(tx);
    let _ = writer.await;
    // Let the client answer the close, then drop the connection.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), reader).await;
    Ok(())
}

/// The SPDY transport (protocol v4): the client opens an `error` stream, then `stdin`,
/// `stdout`, `stderr` as asked and `resize` with a TTY; the Status goes on `error` when the
/// command has ended, then every stream is closed and the connection with them.
pub(super) async fn spdy_session<J, F>(
    mut conn: spdy::Connection,
    opts: &ExecOptions,
    job: J,
) -> Result<(), String>
where
    J: FnOnce(Streams) -> F,
    F: std::future::Future<Output = Result<serde_json::Value, String>>,
{
    let closer = conn.closer();
    let mut streams: HashMap<String, spdy::Stream> = HashMap::new();
    let wanted = |s: &HashMap<String, spdy::Stream>| {
        s.contains_key("error")
            && (!opts.stdin || s.contains_key("stdin"))
            && (!opts.stdout || s.contains_key("stdout"))
            && (!opts.stderr || s.contains_key("stderr"))
            && (!opts.tty || s.contains_key("resize"))
    };
    let collect = async {
        while !wanted(&streams) {
            let Some(s) = conn.streams.recv().await else {
                return false;
            };
            let kind = s.headers.get("streamtype").unwrap_or("").to_string();
            if matches!(
                kind.as_str(),
                "error" | "stdin" | "stdout" | "stderr" | "resize"
            ) && !streams.contains_key(&kind)
            {
                streams.insert(kind, s);
            } else {
                s.writer.reset().await;
            }
        }
        true
    };
    // Upstream's streamCreationTimeout.
    match tokio::time::timeout(std::time::Duration::from_secs(30), collect).await {
        Ok(true) => {}
        Ok(false) => return Err("the client closed the connection".into()),
        Err(_) => {
            closer.go_away().await;
            return Err("timed out waiting for the client's streams".into());
        }
    }
    let error = streams.remove("error").ok_or("no error stream")?;
    let stdout = streams.remove("stdout").map(|s| s.writer);
    let stderr = streams.remove("stderr").map(|s| s.writer);
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Bytes)>(32);
    let forward = tokio::spawn(async move {
        while let Some((stream, data)) = out_rx.recv().await {
            let to = if stream == STDERR { &stderr } else { &stdout };
            if let Some(w) = to {
                w.write(&data).await;
            }
        }
        for w in [stdout, stderr].into_iter().flatten() {
            w.close().await;
        }
    });
    let (in_tx, in_rx) = mpsc::channel::<Input>(32);
    let mut stdin = streams.remove("stdin").map(|s| s.reader);
    let mut resize = streams.remove("resize").map(|s| s.reader);
    let gone = conn.closed();
    let reader = tokio::spawn(async move {
        tokio::pin!(gone);
        loop {
            let input = tokio::select! {
                d = async { stdin.as_mut()?.recv().await.or(Some(Bytes::new())) }, if stdin.is_some() => {
                    match d {
                        Some(b) if !b.is_empty() => Input::Stdin(b),
                        _ => {
                            stdin = None;
                            Input::StdinEnd
                        }
                    }
                }
                d = async { resize.as_mut()?.recv().await }, if resize.is_some() => {
                    match d {
                        Some(b) => Input::Resize(b),
                        None => {
                            resize = None;
                            continue;
                        }
                    }
                }
                _ = &mut gone => break,
            };
            // A resize chunk may hold several sizes: the last one counts.
            let input = match input {
                Input::Resize(b) => Input::Resize(last_json(&b)),
                i => i,
            };
            if in_tx.send(input).await.is_err() {
                break;
            }
        }
    });
    let ended = Streams {
        out: out_tx,
        input: in_rx,
    }
    .run(job, forward)
    .await;
    let result = match ended {
        Ok(status) => {
            error.writer.write(status.to_string().as_bytes()).await;
            Ok(())
        }
        Err(e) => Err(e),
    };
    error.writer.close().await;
    reader.abort();
    closer.go_away().await;
    result
}

/// The last complete JSON value of `b` (resize messages are JSON objects written back to back).
fn last_json(b: &[u8]) -> Bytes {
    let mut last = Bytes::new();
    let mut values = serde_json::Deserializer::from_slice(b).into_iter::<serde_json::Value>();
    while let Some(Ok(v)) = values.next() {
        last = Bytes::from(v.to_string());
    }
    last
}

fn normal_close() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }
}

type Stdin = Box<dyn AsyncWrite + Unpin + Send>;

/// Spawns the command: pipes, or a pty whose slave is its terminal.
fn start(
    opts: &ExecOptions,
    rt: &Runtime,
    entry: &PodEntry,
    container: &str,
) -> std::io::Result<(
    tokio::process::Child,
    OwnedFd,
    Option<OwnedFd>,
    Option<Stdin>,
)> {
    use std::process::Stdio;
    let (mut cmd, err_r, err_w) = enter_command(rt, entry, container, &opts.command)?;
    let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    let pty = if opts.tty { Some(open_pty()?) } else { None };
    match &pty {
        Some(p) => {
            let s = || p.slave.try_clone().map(Stdio::from);
            cmd.stdin(s()?).stdout(s()?).stderr(s()?);
            // SAFETY: setsid/ioctl are async-signal-safe and only affect the child.
            unsafe {
                cmd.pre_exec(|| {
                    libc::setsid();
                    libc::ioctl(0, libc::TIOCSCTTY, 0);
                    Ok(())
                });
            }
        }
        None => {
            cmd.stdin(piped(opts.stdin))
                .stdout(piped(opts.stdout))
                .stderr(piped(opts.stderr));
        }
    }
    let mut child = cmd.spawn()?;
    drop(err_w);
    let (master, stdin): (Option<OwnedFd>, Option<Stdin>) = match pty {
        Some(Pty { master, slave }) => {
            drop(slave);
            let input: Option<Stdin> = if opts.stdin {
                let w = std::fs::File::from(master.try_clone()?);
                Some(Box::new(tokio::fs::File::from_std(w)))
            } else {
                None
            };
            (Some(master), input)
        }
        None => (None, child.stdin.take().map(|s| Box::new(s) as Stdin)),
    };
    Ok((child, err_r, master, stdin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_the_api_servers_query() {
        let o = ExecOptions::from_query(Some(
            "command=sh&command=-c&command=echo+hi&input=1&output=1&error=1",
        ))
        .unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert!(o.stdin && o.stdout && o.stderr && !o.tty);
        let t = ExecOptions::from_query(Some("command=sh&output=1&error=1&tty=1")).unwrap();
        assert!(t.tty && !t.stderr, "a TTY has one output stream");
        assert!(ExecOptions::from_query(Some("output=1"))
            .unwrap_err()
            .contains("command"));
        assert!(ExecOptions::from_query(Some("command=ls"))
            .unwrap_err()
            .contains("stdin, stdout, stderr"));
    }

    #[test]
    fn subprotocol_prefers_v5() {
        assert_eq!(negotiate("v4.channel.k8s.io, v5.channel.k8s.io"), Some(V5));
        assert_eq!(negotiate("v4.channel.k8s.io"), Some(V4));
        assert_eq!(negotiate("channel.k8s.io"), None);
    }

    #[test]
    fn exit_codes_become_the_status_kubectl_reads() {
        assert_eq!(final_status(0, "")["status"], "Success");
        let s = final_status(3, "");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        let f = final_status(255, "container \"x\" is not running");
        assert_eq!(f["status"], "Failure");
        assert_eq!(f["message"], "container \"x\" is not running");
    }
}
