//! The api-service: a small HTTP/1.1 + JSON endpoint served by the agent and used by
//! `rkt list/status/image` and `rktup logs`. Read-mostly: pods and images are read from disk on
//! every request, so the service has no state of its own.
//!
//! Where it listens:
//!
//! * always a **unix socket** `<root-dir>/api.sock` ([`SOCKET_NAME`]), owned by the agent's user
//!   (root) with mode 0600: it is bound inside a fresh 0700 directory, chmod-ed there and only
//!   then renamed into place, so no other uid can ever connect; a connection whose peer (by
//!   `SO_PEERCRED`) is neither root nor the agent's own uid is refused as well. Every route.
//! * a **loopback TCP** listener only when the agent was given `--rkt-api-endpoint HOST:PORT`
//!   (the seed's flag; non-loopback addresses are refused), and it is **read-only**: the routes
//!   marked `ro` below; anything else answers 403 "... is only served on the unix socket <path>".
//!
//! ```text
//! GET    /v1/pods                      [PodInfo]            ro
//! GET    /v1/pods/<id>                 PodInfo              ro  (<id>: full or short uuid, k8s_<uuid>)
//! GET    /v1/pods/<id>/logs?container=C&follow=1           ro  text/plain, streamed while following
//! GET    /v1/images                    [ImageRecord]        ro
//! DELETE /v1/images/<name or id>       ImageRecord
//! POST   /v1/images/gc                 [ImageRecord]
//! ```
//!
//! Image import and fetch are not routes: `rktup rkt image import` and `rktup rkt fetch` write
//! the image store under the root dir themselves (as root), so the agent never reads a file or
//! pulls an image on behalf of a caller.
//!
//! Connections are served by [`WORKERS`] threads fed through a queue of [`QUEUE`]; a connection
//! that finds the queue full is answered 503 at once by the accepting thread. A request must
//! arrive within [`REQUEST_TIMEOUT`] and its head may be at most [`MAX_HEAD`] bytes. At most
//! [`MAX_FOLLOWS`] log follows run at once (more get 503), so at least `WORKERS - MAX_FOLLOWS`
//! workers always serve short requests; a follow ends when the container stops for good or when
//! its client hangs up (checked on every poll of the log, every 100 ms).

use crate::image::ImageRecord;
use crate::pod::{PodState, PodStatus, Stage1Flavor};
use crate::runtime::{PodEntry, Runtime};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The socket's name inside the agent's root dir.
pub const SOCKET_NAME: &str = "api.sock";
/// Threads serving connections.
pub const WORKERS: usize = 8;
/// Accepted connections waiting for a worker; beyond this, 503.
pub const QUEUE: usize = 32;
/// Log follows served at once; beyond this, 503.
pub const MAX_FOLLOWS: usize = WORKERS / 2;
/// Time for a client to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head (request line + headers).
pub const MAX_HEAD: u64 = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("failed to resolve api endpoint {0}: {1}")]
    Resolve(String, String),
    #[error(
        "api endpoint {0} is not a loopback address (the api-service listens on loopback only)"
    )]
    NotLoopback(String),
    #[error("failed to listen on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("{0}: another agent already serves this socket (its root dir is in use)")]
    InUse(PathBuf),
    #[error("failed to reach the rkt api-service at {0}: {1} (is `rktup agent` running?)")]
    Connect(String, std::io::Error),
    #[error(
        "the rkt api-service socket {0} is root-only (mode 0600): run this as root, or read \
         through the agent's read-only loopback listener with --rkt-api-endpoint HOST:PORT \
         (when the agent was started with one)"
    )]
    Denied(String),
    #[error("api-service: {0}")]
    Remote(String),
    #[error("api-service sent a bad response: {0}")]
    Protocol(String),
}

/// The unix socket of the agent whose root dir is `root_dir`.
pub fn socket_path(root_dir: &Path) -> PathBuf {
    root_dir.join(SOCKET_NAME)
}

/// What `rkt list` / `rkt status` need about a pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodInfo {
    pub uuid: String,
    pub name: String,
    pub namespace: String,
    pub stage1: Stage1Flavor,
    pub network: Option<String>,
    pub host_network: bool,
    pub alive: bool,
    pub status: PodStatus,
}

impl PodInfo {
    pub fn from_entry(e: &PodEntry) -> PodInfo {
        let mut status = e.status.clone();
        // A supervisor that died without recording the end is reported as exited.
        if !e.alive
            && matches!(
                status.state,
                PodState::Preparing | PodState::Running | PodState::Stopping
            )
        {
            status.state = PodState::Exited;
            status.reason.get_or_insert_with(|| "SupervisorLost".into());
        }
        PodInfo {
            uuid: e.plan.uuid.clone(),
            name: e.plan.name.clone(),
            namespace: e.plan.namespace.clone(),
            stage1: e.plan.stage1,
            network: e.plan.network.as_ref().map(|n| n.network.name.clone()),
            host_network: e.plan.host_network,
            alive: e.alive,
            status,
        }
    }
}

/// Resolve an endpoint and insist on loopback.
pub fn loopback_addr(endpoint: &str) -> Result<SocketAddr, ApiError> {
    let addrs: Vec<SocketAddr> = endpoint
        .to_socket_addrs()
        .map_err(|e| ApiError::Resolve(endpoint.into(), e.to_string()))?
        .collect();
    if addrs.is_empty() || !addrs.iter().all(|a| a.ip().is_loopback()) {
        return Err(ApiError::NotLoopback(endpoint.into()));
    }
    Ok(addrs
        .iter()
        .find(|a| a.is_ipv4())
        .copied()
        .unwrap_or(addrs[0]))
}

/// The read-only loopback TCP listener (`--rkt-api-endpoint`).
pub fn bind(endpoint: &str) -> Result<TcpListener, ApiError> {
    let addr = loopback_addr(endpoint)?;
    TcpListener::bind(addr).map_err(|e| ApiError::Listen(endpoint.into(), e))
}

/// Unix socket paths are limited to 108 bytes; a longer one is reached through
/// `/proc/self/fd/<dir fd>/<name>` (the returned file keeps the descriptor open).
fn short_path(path: &Path) -> std::io::Result<(Option<std::fs::File>, PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().as_bytes().len() < 100 {
        return Ok((None, path.to_path_buf()));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok((None, path.to_path_buf()));
    };
    let d = std::fs::File::open(dir)?;
    let p = PathBuf::from(format!("/proc/self/fd/{}", d.as_raw_fd())).join(name);
    Ok((Some(d), p))
}

/// Binds the unix socket at `path` (normally [`socket_path`]) so that it is never connectable
/// by another uid: bound inside a new 0700 directory next to it, chmod 0600 there, then renamed
/// into place. A stale socket (nobody answering) is replaced; a live one is an error.
pub fn bind_unix(path: &Path) -> Result<UnixListener, ApiError> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    let listen = |e| ApiError::Listen(path.display().to_string(), e);
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if !md.file_type().is_socket() {
            return Err(listen(std::io::Error::other(
                "exists and is not a socket; remove it",
            )));
        }
        let (_keep, p) = short_path(path).map_err(listen)?;
        if UnixStream::connect(&p).is_ok() {
            return Err(ApiError::InUse(path.to_path_buf()));
        }
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    let private = parent.join(format!(".api-sock.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(listen)?;
    let inner = private.join(SOCKET_NAME);
    let r = (|| {
        let (_keep, p) = short_path(&inner)?;
        let l = UnixListener::bind(&p)?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&inner, path)?;
        Ok(l)
    })();
    let _ = std::fs::remove_file(&inner);
    let _ = std::fs::remove_dir(&private);
    r.map_err(listen)
}

/// Where the agent serves.
pub struct Listeners {
    /// The unix socket and its path.
    pub unix: UnixListener,
    pub socket: PathBuf,
    /// The read-only loopback listener, when `--rkt-api-endpoint` was given.
    pub tcp: Option<TcpListener>,
}

enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn try_clone(&self) -> std::io::Result<Conn> {
        Ok(match self {
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
        })
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(t),
            Conn::Tcp(s) => s.set_read_timeout(t),
        }
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_write_timeout(t),
            Conn::Tcp(s) => s.set_write_timeout(t),
        }
    }
    fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_nonblocking(on),
            Conn::Tcp(s) => s.set_nonblocking(on),
        }
    }
    fn fd(&self) -> RawFd {
        match self {
            Conn::Unix(s) => s.as_raw_fd(),
            Conn::Tcp(s) => s.as_raw_fd(),
        }
    }
    /// Whether the client has closed its end (a follow then stops).
    fn hung_up(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no timeout.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tcp(s) => s.flush(),
        }
    }
}

/// The uid of a unix socket's peer.
fn peer_uid(s: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len describe a valid buffer of the right size.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}

/// One accepted connection and what it may do.
struct Job {
    conn: Conn,
    /// Only the read-only routes (the TCP listener).
    read_only: bool,
}

struct Shared {
    rt: Arc<Runtime>,
    socket: PathBuf,
    follows: AtomicUsize,
}

/// Starts serving in background threads ([`WORKERS`] workers, one accept thread per listener)
/// and returns.
pub fn serve(l: Listeners, rt: Arc<Runtime>) -> std::io::Result<()> {
    let (tx, rx) = sync_channel::<Job>(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    let shared = Arc::new(Shared {
        rt,
        socket: l.socket.clone(),
        follows: AtomicUsize::new(0),
    });
    for i in 0..WORKERS {
        let (rx, shared) = (rx.clone(), shared.clone());
        std::thread::Builder::new()
            .name(format!("api-worker-{i}"))
            .spawn(move || worker(&rx, &shared))?;
    }
    if let Some(tcp) = l.tcp {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("api-tcp".into())
            .spawn(move || {
                for conn in tcp.incoming() {
                    let Ok(s) = conn else { continue };
                    dispatch(&tx, Conn::Tcp(s), true);
                }
            })?;
    }
    let unix = l.unix;
    std::thread::Builder::new()
        .name("api-unix".into())
        .spawn(move || {
            for conn in unix.incoming() {
                let Ok(s) = conn else { continue };
                dispatch(&tx, Conn::Unix(s), false);
            }
        })?;
    Ok(())
}

fn dispatch(tx: &SyncSender<Job>, conn: Conn, read_only: bool) {
    match tx.try_send(Job { conn, read_only }) {
        Ok(()) => {}
        Err(TrySendError::Full(mut j)) | Err(TrySendError::Disconnected(mut j)) => {
            // Never block the accept loop on a client: take what it already sent (so closing
            // does not reset the connection before it reads the answer) and answer at once.
            let _ = j.conn.set_nonblocking(true);
            let mut b = [0u8; 4096];
            while matches!(j.conn.read(&mut b), Ok(n) if n > 0) {}
            let _ = j.conn.set_nonblocking(false);
            let _ = j.conn.set_write_timeout(Some(Duration::from_millis(200)));
            let _ = error(
                &mut j.conn,
                503,
                format!("the api-service is busy ({WORKERS} workers, {QUEUE} queued); try again"),
            );
        }
    }
}

fn worker(rx: &Mutex<Receiver<Job>>, shared: &Shared) {
    loop {
        let job = {
            let Ok(rx) = rx.lock() else { return };
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let _ = handle(job, shared);
    }
}

pub fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 3;
                }
                Err(_) => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn pct_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn respond(s: &mut Conn, code: u16, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    write!(
        s,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    s.flush()
}

fn json<T: Serialize>(s: &mut Conn, v: &T) -> std::io::Result<()> {
    let b = serde_json::to_vec(v).unwrap_or_default();
    respond(s, 200, "application/json", &b)
}

fn error(s: &mut Conn, code: u16, msg: String) -> std::io::Result<()> {
    let b = serde_json::to_vec(&serde_json::json!({ "error": msg })).unwrap_or_default();
    respond(s, code, "application/json", &b)
}

/// The routes the read-only TCP listener serves.
fn is_read_only(method: &str, segs: &[&str]) -> bool {
    matches!(
        (method, segs),
        ("GET", ["v1", "pods"])
            | ("GET", ["v1", "pods", _])
            | ("GET", ["v1", "pods", _, "logs"])
            | ("GET", ["v1", "images"])
    )
}

/// Releases a follow slot when dropped.
struct FollowSlot<'a>(&'a AtomicUsize);

impl Drop for FollowSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn handle(job: Job, shared: &Shared) -> std::io::Result<()> {
    let Job {
        conn: mut stream,
        read_only,
    } = job;
    let rt = &*shared.rt;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?.take(MAX_HEAD));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    if let Conn::Unix(u) = &stream {
        // The socket's mode already keeps other uids out; this holds even if it was changed.
        // (Checked after the request is read: closing on unread data would reset the client.)
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        match peer_uid(u) {
            Some(uid) if uid == 0 || uid == me => {}
            other => {
                return error(
                    &mut stream,
                    403,
                    format!(
                        "uid {} may not use the rkt api-service (root only)",
                        other.map(|u| u.to_string()).unwrap_or_else(|| "?".into())
                    ),
                )
            }
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let q = |k: &str| -> Option<String> {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(a, _)| *a == k)
            .map(|(_, v)| pct_decode(v))
    };
    let segs: Vec<String> = path.trim_matches('/').split('/').map(pct_decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    if read_only && !is_read_only(&method, &segs) {
        return error(
            &mut stream,
            403,
            format!(
                "{method} {path} is only served on the unix socket {} (this loopback listener \
                 is read-only: pod list/status/logs and image list)",
                shared.socket.display()
            ),
        );
    }
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["v1", "pods"]) => {
            let v: Vec<PodInfo> = rt.list().iter().map(PodInfo::from_entry).collect();
            json(&mut stream, &v)
        }
        ("GET", ["v1", "pods", id]) => match rt.find(id) {
            Ok(e) => json(&mut stream, &PodInfo::from_entry(&e)),
            Err(e) => error(&mut stream, 404, e.to_string()),
        },
        ("GET", ["v1", "pods", id, "logs"]) => {
            let e = match rt.find(id) {
                Ok(e) => e,
                Err(e) => return error(&mut stream, 404, e.to_string()),
            };
            let follow = q("follow").is_some_and(|f| f == "1" || f == "true");
            let names: Vec<String> = e.plan.all_containers().map(|c| c.name.clone()).collect();
            let chosen: Vec<String> = match q("container").filter(|c| !c.is_empty()) {
                Some(c) if names.contains(&c) => vec![c],
                Some(c) => {
                    return error(
                        &mut stream,
                        404,
                        format!(
                            "container {c:?} is not in pod {} (containers: {names:?})",
                            e.plan.uuid
                        ),
                    )
                }
                None if follow && names.len() > 1 => {
                    return error(
                        &mut stream,
                        400,
                        format!("pod has several containers {names:?}: choose one with -c"),
                    )
                }
                None => names.clone(),
            };
            let _slot = if follow {
                if shared.follows.fetch_add(1, Ordering::SeqCst) >= MAX_FOLLOWS {
                    shared.follows.fetch_sub(1, Ordering::SeqCst);
                    return error(
                        &mut stream,
                        503,
                        format!("{MAX_FOLLOWS} log follows are already running; try again later"),
                    );
                }
                Some(FollowSlot(&shared.follows))
            } else {
                None
            };
            stream.set_read_timeout(None)?;
            write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n")?;
            let multi = chosen.len() > 1;
            let watch = stream.try_clone()?;
            for c in chosen {
                let dir = rt.pod_log_dir(&e, &c);
                let mut out: Box<dyn Write> = if multi {
                    Box::new(Prefixed {
                        inner: &mut stream,
                        prefix: format!("{c}: "),
                        at_start: true,
                    })
                } else {
                    Box::new(&mut stream)
                };
                let pod_dir = e.dir.clone();
                let cname = c.clone();
                let watch = &watch;
                crate::logs::print_logs(&dir, follow, &mut out, move || {
                    watch.hung_up() || !container_may_write(&pod_dir, &cname)
                })?;
            }
            Ok(())
        }
        ("GET", ["v1", "images"]) => match rt.store.list() {
            Ok(v) => json(&mut stream, &v),
            Err(e) => error(&mut stream, 500, e.to_string()),
        },
        ("DELETE", ["v1", "images", name]) => match rt.store.remove(name, &rt.images_in_use()) {
            Ok(r) => json(&mut stream, &r),
            Err(e) => error(&mut stream, 409, e.to_string()),
        },
        ("POST", ["v1", "images", "gc"]) => match rt.store.gc(&rt.images_in_use()) {
            Ok(v) => json(&mut stream, &v),
            Err(e) => error(&mut stream, 500, e.to_string()),
        },
        ("POST", ["v1", "images", "import" | "fetch"]) => error(
            &mut stream,
            404,
            "image import and fetch are not api-service routes: run `rktup rkt image import \
             FILE` or `rktup rkt fetch IMAGE` as root on the node (they write the image store \
             under the agent's root dir directly)"
                .into(),
        ),
        _ => error(&mut stream, 404, format!("no route {method} {path}")),
    }
}

/// While the pod's supervisor lives and the container is not finished for good, it may log more.
fn container_may_write(pod_dir: &std::path::Path, container: &str) -> bool {
    let Ok(st) = crate::pod::read_status(pod_dir) else {
        return false;
    };
    if !crate::util::process_alive(st.supervisor_pid, st.supervisor_start) {
        return false;
    }
    if matches!(st.state, PodState::Exited | PodState::Refused) {
        return false;
    }
    st.containers
        .iter()
        .chain(st.init_containers.iter())
        .find(|c| c.name == container)
        .is_some_and(|c| {
            c.state != "terminated"
                || c.reason.as_deref() == Some("CrashLoopBackOff")
                || st.state == PodState::Running
        })
}

struct Prefixed<'a> {
    inner: &'a mut Conn,
    prefix: String,
    at_start: bool,
}

impl Write for Prefixed<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for chunk in buf.split_inclusive(|&b| b == b'\n') {
            if self.at_start {
                self.inner.write_all(self.prefix.as_bytes())?;
            }
            self.inner.write_all(chunk)?;
            self.at_start = chunk.ends_with(b"\n");
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where a client reaches the api-service.
#[derive(Debug, Clone)]
enum Target {
    /// The unix socket (every route).
    Unix(PathBuf),
    /// The read-only loopback listener.
    Tcp(String),
}

/// Client side.
pub struct Client {
    target: Target,
}

impl Client {
    /// Through the agent's unix socket (`<root-dir>/api.sock`): every route; root only.
    pub fn unix(socket: impl Into<PathBuf>) -> Client {
        Client {
            target: Target::Unix(socket.into()),
        }
    }

    /// Through the agent's read-only loopback listener (`--rkt-api-endpoint`).
    pub fn tcp(endpoint: &str) -> Client {
        Client {
            target: Target::Tcp(endpoint.into()),
        }
    }

    /// Same as [`Client::tcp`] (the seed's loopback endpoint; read-only routes only).
    pub fn new(endpoint: &str) -> Client {
        Client::tcp(endpoint)
    }

    fn name(&self) -> String {
        match &self.target {
            Target::Unix(p) => p.display().to_string(),
            Target::Tcp(e) => e.clone(),
        }
    }

    fn connect(&self) -> Result<Conn, ApiError> {
        match &self.target {
            Target::Tcp(e) => {
                let addr = loopback_addr(e)?;
                TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .map(Conn::Tcp)
                    .map_err(|err| ApiError::Connect(e.clone(), err))
            }
            Target::Unix(p) => {
                let (_keep, sp) = short_path(p).map_err(|e| ApiError::Connect(self.name(), e))?;
                UnixStream::connect(&sp).map(Conn::Unix).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::PermissionDenied {
                        ApiError::Denied(self.name())
                    } else {
                        ApiError::Connect(self.name(), e)
                    }
                })
            }
        }
    }

    /// Send a request; returns the status code and a reader positioned at the body.
    fn request(&self, method: &str, target: &str) -> Result<(u16, BufReader<Conn>), ApiError> {
        let mut s = self.connect()?;
        let host = match &self.target {
            Target::Tcp(e) => e.as_str(),
            Target::Unix(_) => "localhost",
        };
        write!(
            s,
            "{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| ApiError::Connect(self.name(), e))?;
        let mut r = BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status)
            .map_err(|e| ApiError::Protocol(e.to_string()))?;
        let code: u16 = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| ApiError::Protocol(format!("status line {status:?}")))?;
        loop {
            let mut h = String::new();
            let n = r
                .read_line(&mut h)
                .map_err(|e| ApiError::Protocol(e.to_string()))?;
            if n == 0 || h == "\r\n" || h == "\n" {
                break;
            }
        }
        Ok((code, r))
    }

    fn call<T: for<'de> Deserialize<'de>>(
        &self,
        method: &str,
        target: &str,
    ) -> Result<T, ApiError> {
        let (code, mut r) = self.request(method, target)?;
        let mut b = Vec::new();
        r.read_to_end(&mut b)
            .map_err(|e| ApiError::Protocol(e.to_string()))?;
        if code != 200 {
            return Err(remote(&b));
        }
        serde_json::from_slice(&b).map_err(|e| ApiError::Protocol(e.to_string()))
    }

    /// The status code and body of any request (tests, troubleshooting).
    pub fn raw(&self, method: &str, target: &str) -> Result<(u16, String), ApiError> {
        let (code, mut r) = self.request(method, target)?;
        let mut b = Vec::new();
        r.read_to_end(&mut b)
            .map_err(|e| ApiError::Protocol(e.to_string()))?;
        Ok((code, String::from_utf8_lossy(&b).into_owned()))
    }

    pub fn pods(&self) -> Result<Vec<PodInfo>, ApiError> {
        self.call("GET", "/v1/pods")
    }
    pub fn pod(&self, id: &str) -> Result<PodInfo, ApiError> {
        self.call("GET", &format!("/v1/pods/{}", pct_encode(id)))
    }
    pub fn images(&self) -> Result<Vec<ImageRecord>, ApiError> {
        self.call("GET", "/v1/images")
    }
    pub fn image_rm(&self, name: &str) -> Result<ImageRecord, ApiError> {
        self.call("DELETE", &format!("/v1/images/{}", pct_encode(name)))
    }
    pub fn image_gc(&self) -> Result<Vec<ImageRecord>, ApiError> {
        self.call("POST", "/v1/images/gc")
    }

    /// Stream logs to `out`.
    pub fn logs(
        &self,
        id: &str,
        container: Option<&str>,
        follow: bool,
        out: &mut dyn Write,
    ) -> Result<(), ApiError> {
        let mut t = format!(
            "/v1/pods/{}/logs?follow={}",
            pct_encode(id),
            if follow { 1 } else { 0 }
        );
        if let Some(c) = container {
            t.push_str(&format!("&container={}", pct_encode(c)));
        }
        let (code, mut r) = self.request("GET", &t)?;
        if code != 200 {
            let mut b = Vec::new();
            let _ = r.read_to_end(&mut b);
            return Err(remote(&b));
        }
        let mut buf = [0u8; 8192];
        loop {
            let n = r
                .read(&mut buf)
                .map_err(|e| ApiError::Protocol(e.to_string()))?;
            if n == 0 {
                return Ok(());
            }
            out.write_all(&buf[..n])
                .map_err(|e| ApiError::Protocol(e.to_string()))?;
            let _ = out.flush();
        }
    }
}

/// The `{"error": ...}` of a failed call.
fn remote(b: &[u8]) -> ApiError {
    let msg = serde_json::from_slice::<serde_json::Value>(b)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(b).into_owned());
    ApiError::Remote(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn endpoint_must_be_loopback() {
        assert!(loopback_addr("127.0.0.1:15441").is_ok());
        assert!(loopback_addr("localhost:15441").unwrap().ip().is_loopback());
        assert!(matches!(
            loopback_addr("0.0.0.0:15441"),
            Err(ApiError::NotLoopback(_))
        ));
        assert_eq!(pct_decode(&pct_encode("a b/c:d@e")), "a b/c:d@e");
    }

    #[test]
    fn read_only_routes() {
        assert!(is_read_only("GET", &["v1", "pods"]));
        assert!(is_read_only("GET", &["v1", "pods", "abc", "logs"]));
        assert!(is_read_only("GET", &["v1", "images"]));
        assert!(!is_read_only("DELETE", &["v1", "images", "x"]));
        assert!(!is_read_only("POST", &["v1", "images", "gc"]));
        assert!(!is_read_only("POST", &["v1", "images", "import"]));
        assert!(!is_read_only("GET", &["v1", "images", "x"]));
    }

    #[test]
    fn unix_socket_is_0600_from_the_start_and_replaces_only_stale_ones() {
        let d = tempfile::tempdir().unwrap();
        // A long root dir: the socket is bound through /proc/self/fd.
        let root = d.path().join("x".repeat(60)).join("y".repeat(60));
        std::fs::create_dir_all(&root).unwrap();
        let p = socket_path(&root);
        let l = bind_unix(&p).unwrap();
        let md = std::fs::symlink_metadata(&p).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o600);
        // SAFETY: geteuid has no preconditions.
        assert_eq!(md.uid(), unsafe { libc::geteuid() });
        // Nothing of the private directory is left.
        let left: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(SOCKET_NAME)]);
        // A live socket is not taken over; a stale one is.
        assert!(matches!(bind_unix(&p), Err(ApiError::InUse(_))));
        drop(l);
        // (Other tests of this process fork children that hold the listener until they exec.)
        let t = std::time::Instant::now();
        let _l = loop {
            match bind_unix(&p) {
                Err(ApiError::InUse(_)) if t.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                r => break r.unwrap(),
            }
        };
        // Not a socket: refused, left alone.
        let f = root.join("file");
        std::fs::write(&f, "x").unwrap();
        assert!(bind_unix(&f).is_err());
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "x");
    }
}
