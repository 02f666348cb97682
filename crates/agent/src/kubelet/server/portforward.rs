//! `kubectl port-forward` on the kubelet port: `/portForward/{namespace}/{pod}[/{uid}]`
//! (GET or POST), upgraded to one of the protocols clients speak:
//!
//! - SPDY/3.1 (`X-Stream-Protocol-Version: portforward.k8s.io`): kubectl ≤ 1.30 and client-go.
//!   Per forwarded connection the client opens two streams with the same `requestID` header
//!   (`streamType: error` and `streamType: data`, `port: N`); the data stream carries the bytes
//!   both ways, the error stream one message when the port cannot be reached.
//! - the same SPDY inside a WebSocket (`SPDY/3.1+portforward.k8s.io`): kubectl ≥ 1.31.
//! - WebSocket channels (`v4.channel.k8s.io`, or no subprotocol): kube-rs and other WebSocket
//!   clients. The query's `port` parameters name the ports; port i has channel 2i for data and
//!   2i+1 for errors, each first sending the port number (2 bytes, little endian); every message
//!   is its channel byte followed by data.
//!
//! Connections are made inside the pod's network namespace to localhost:port (127.0.0.1, then
//! ::1), as containerd's port-forward does, from a thread that joins the namespace of a running
//! container of the pod (found through the runtime façade) for that one connect. A stage1-kvm
//! pod's localhost is its VM's: there the connection goes over the pod's guest channel to
//! 127.0.0.1:port inside the guest (`stage1::kvm::port_forward`), so listeners bound to
//! loopback in the VM are reached as upstream reaches them. When the pod stops, the whole
//! connection is closed so clients report the loss instead of hanging.

use super::context::{locate_pod, text, Body, Context};
use super::spdy::{self, Stream};
use super::upgrade::{blocking, spdy_accept, upgraded, websocket_accept, Upgrade};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::{Request, Response, StatusCode};
use rktup_runtime::pod::{PodState, Stage1Flavor};
use rktup_runtime::runtime::{PodEntry, Runtime};
use rktup_runtime::stage1::kvm;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

/// The SPDY protocol of port-forward.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket channel protocol kubelet offers for port-forward.
const V4_CHANNELS: &str = "v4.channel.k8s.io";

/// How a request is served.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Spdy,
    Tunnel,
    Channels(&'static str),
}

/// The mode for an upgrade, or why it cannot be served.
fn negotiate(up: &Upgrade) -> Result<(Mode, String), String> {
    match up {
        Upgrade::Spdy { protocols } => {
            if protocols.is_empty() {
                return Ok((Mode::Spdy, String::new()));
            }
            if protocols.iter().any(|p| p == PROTOCOL) {
                return Ok((Mode::Spdy, PROTOCOL.into()));
            }
            Err(format!(
                "unable to upgrade: unable to negotiate protocol: client supports {protocols:?}, server supports [\"{PROTOCOL}\"]"
            ))
        }
        Upgrade::WebSocket { protocols, .. } => {
            let tunnel = format!("{}{PROTOCOL}", spdy::TUNNEL_PREFIX);
            if protocols.contains(&tunnel) {
                return Ok((Mode::Tunnel, tunnel));
            }
            if protocols.iter().any(|p| p == V4_CHANNELS) {
                return Ok((Mode::Channels(V4_CHANNELS), V4_CHANNELS.into()));
            }
            if protocols.is_empty() {
                return Ok((Mode::Channels(""), String::new()));
            }
            Err(format!(
                "none of the offered subprotocols {protocols:?} is supported ({tunnel}, {V4_CHANNELS})"
            ))
        }
    }
}

/// The `port` query parameters (also comma-separated), each 1..65535.
fn query_ports(query: Option<&str>) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k != "port" {
            continue;
        }
        for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => return Err(format!("unable to parse {p:?} as a port: invalid port")),
            }
        }
    }
    Ok(ports)
}

/// The pod a session forwards into.
struct Target {
    rt: Arc<Runtime>,
    entry: PodEntry,
}

impl Target {
    /// A connection to localhost:`port` in the pod's network namespace.
    async fn dial(&self, port: u16) -> Result<tokio::net::TcpStream, String> {
        if self.entry.plan.stage1 == Stage1Flavor::Kvm {
            let dir = self.entry.dir.clone();
            let tcp = tokio::task::spawn_blocking(move || kvm::port_forward(&dir, port))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => {
                        format!("failed to connect to localhost:{port} inside the pod's VM: {e}")
                    }
                    _ => format!("failed to reach the VM of the stage1-kvm pod: {e}"),
                })?;
            tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
            return tokio::net::TcpStream::from_std(tcp).map_err(|e| e.to_string());
        }
        let (rt, entry) = (self.rt.clone(), self.entry.clone());
        let pid = tokio::task::spawn_blocking(move || netns_pid(&rt, &entry))
            .await
            .map_err(|e| e.to_string())??;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // A thread of its own: setns changes the calling thread for good, so never a pool's.
        let spawned = std::thread::Builder::new()
            .name("port-forward-dial".into())
            .spawn(move || {
                let _ = tx.send(dial_in_netns(pid, port));
            });
        if let Err(e) = spawned {
            return Err(format!("failed to start the dialer: {e}"));
        }
        let tcp = rx
            .await
            .map_err(|_| "the dialer died".to_string())?
            .map_err(|e| {
                format!(
                    "failed to connect to localhost:{port} inside the pod's network namespace: {e}"
                )
            })?;
        tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        tokio::net::TcpStream::from_std(tcp).map_err(|e| e.to_string())
    }

    /// The message an error stream carries (kubelet's words).
    fn error(&self, port: u16, e: &str) -> String {
        format!(
            "error forwarding port {port} to pod {}, uid : {e}",
            self.entry.plan.uuid
        )
    }

    /// Resolves when the pod no longer runs (its supervisor gone or the pod stopping).
    async fn gone(&self) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (rt, entry) = (self.rt.clone(), self.entry.clone());
            let gone = tokio::task::spawn_blocking(move || match rt.status(&entry) {
                Ok(st) => {
                    !rt.is_alive(&st)
                        || matches!(
                            st.state,
                            PodState::Exited | PodState::Stopping | PodState::Refused
                        )
                }
                Err(_) => true,
            })
            .await
            .unwrap_or(true);
            if gone {
                return;
            }
        }
    }
}

/// Ok if the pod's network can be reached: a running container's (or, in a stage1-kvm pod, the
/// VM's, through a running container of it).
fn reachable(rt: &Runtime, entry: &PodEntry) -> Result<(), String> {
    if entry.plan.stage1 != Stage1Flavor::Kvm {
        return netns_pid(rt, entry).map(drop);
    }
    let mut why = String::from("the pod has no containers");
    for c in entry.plan.all_containers() {
        match kvm::container_running(&entry.plan, &entry.status, &c.name) {
            Ok(()) => return Ok(()),
            Err(e) => why = e,
        }
    }
    Err(format!(
        "no running container holds the pod's network: {why}"
    ))
}

/// A running container's pid, whose network namespace is the pod's.
fn netns_pid(rt: &Runtime, entry: &PodEntry) -> Result<i32, String> {
    let mut why = String::from("the pod has no containers");
    for c in entry.plan.all_containers() {
        match rt.container_pid(entry, &c.name) {
            Ok(pid) => return Ok(pid),
            Err(e) => why = e,
        }
    }
    Err(format!(
        "no running container holds the pod's network: {why}"
    ))
}

/// Go's wording of a connect error ("connect: connection refused").
fn go_words(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".into(),
        std::io::ErrorKind::TimedOut => "i/o timeout".into(),
        _ => e.to_string(),
    }
}

/// Joins `pid`'s network namespace (on this thread, which must be a throwaway one) and
/// connects to localhost:`port`, IPv4 first.
fn dial_in_netns(pid: i32, port: u16) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    // SAFETY: setns on a descriptor we hold; it affects only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let timeout = Duration::from_secs(10);
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let e4 = match std::net::TcpStream::connect_timeout(&v4, timeout) {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    std::net::TcpStream::connect_timeout(&v6, timeout).map_err(|e6| {
        std::io::Error::new(
            e4.kind(),
            format!(
                "IPv4: dial tcp4 127.0.0.1:{port}: {} IPv6 dial tcp6 [::1]:{port}: {}",
                go_words(&e4),
                go_words(&e6)
            ),
        )
    })
}

/// The handler: checks the request, answers the upgrade and serves the session.
pub async fn portforward<B: Send + 'static>(
    ctx: Arc<Context>,
    mut req: Request<B>,
    ns: String,
    pod: String,
) -> Response<Body> {
    let Some(up) = Upgrade::of(&req) else {
        return text(
            StatusCode::BAD_REQUEST,
            "Upgrade request required (SPDY/3.1 or websocket)",
        );
    };
    let (mode, protocol) = match negotiate(&up) {
        Ok(m) => m,
        Err(m) => return text(StatusCode::FORBIDDEN, m),
    };
    let ports = match query_ports(req.uri().query()) {
        Ok(p) => p,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    if matches!(mode, Mode::Channels(_)) && ports.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "query parameter \"port\" is required",
        );
    }
    let c2 = ctx.clone();
    let (ns2, pod2) = (ns.clone(), pod.clone());
    let located = blocking(move || {
        let entry = locate_pod(&c2, &ns2, &pod2)?;
        reachable(&c2.rt, &entry).map_err(|m| (StatusCode::BAD_REQUEST, m))?;
        Ok(entry)
    })
    .await;
    let entry = match located {
        Ok(e) => e,
        Err(refused) => return refused,
    };
    debug!(
        "kubelet server: port-forward to {ns}/{pod} (k8s_{}) over {mode:?}",
        entry.plan.uuid
    );
    let target = Arc::new(Target {
        rt: ctx.rt.clone(),
        entry,
    });
    let on_upgrade = hyper::upgrade::on(&mut req);
    let m2 = mode.clone();
    tokio::spawn(async move {
        let Some(io) = upgraded(on_upgrade, "port-forward").await else {
            return;
        };
        match m2 {
            Mode::Spdy => spdy_session(spdy::Connection::serve(io), target).await,
            Mode::Tunnel => {
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                let conn = spdy::Connection::serve(spdy::websocket_tunnel(ws));
                spdy_session(conn, target).await
            }
            Mode::Channels(_) => {
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                channel_session(ws, target, ports).await
            }
        }
        debug!("kubelet server: port-forward to {ns}/{pod} ended");
    });
    match (&up, mode) {
        (Upgrade::WebSocket { key, .. }, _) => websocket_accept(key, &protocol),
        (Upgrade::Spdy { .. }, _) => spdy_accept(&protocol),
    }
}

/// Pairs the client's error and data streams by `requestID` and forwards each pair.
async fn spdy_session(mut conn: spdy::Connection, target: Arc<Target>) {
    let closer = conn.closer();
    let t2 = target.clone();
    let watcher = tokio::spawn(async move {
        t2.gone().await;
        closer.go_away().await;
    });
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let s = tokio::select! {
            s = conn.streams.recv() => match s {
                Some(s) => s,
                None => break,
            },
            _ = tick.tick() => {
                expire(&mut pending).await;
                continue;
            }
        };
        let kind = s.headers.get("streamtype").unwrap_or("").to_string();
        // Clients before requestID paired an error stream (id N) with the data stream N+2.
        let request = match (s.headers.get("requestid"), kind.as_str()) {
            (Some(r), _) => r.to_string(),
            (None, "data") => s.id.saturating_sub(2).to_string(),
            (None, _) => s.id.to_string(),
        };
        let slot = pending.entry(request.clone()).or_insert_with(|| Pending {
            data: None,
            error: None,
            since: std::time::Instant::now(),
        });
        match kind.as_str() {
            "data" if slot.data.is_none() => slot.data = Some(s),
            "error" if slot.error.is_none() => slot.error = Some(s),
            _ => {
                debug!(
                        "kubelet server: port-forward: unexpected stream {kind:?} for request {request}"
                    );
                s.writer.reset().await;
                continue;
            }
        }
        if pending
            .get(&request)
            .is_some_and(|p| p.data.is_some() && p.error.is_some())
        {
            if let Some(Pending {
                data: Some(data),
                error: Some(error),
                ..
            }) = pending.remove(&request)
            {
                tokio::spawn(forward_pair(target.clone(), data, error));
            }
        }
    }
    watcher.abort();
}

/// A request's streams while its partner has not come (upstream's stream pair).
struct Pending {
    data: Option<Stream>,
    error: Option<Stream>,
    since: std::time::Instant,
}

/// How long a stream waits for its partner (upstream's streamCreationTimeout).
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);

/// Ends the requests whose partner stream did not come in time: the error stream says so,
/// and both are reset.
async fn expire(pending: &mut HashMap<String, Pending>) {
    let late: Vec<String> = pending
        .iter()
        .filter(|(_, p)| p.since.elapsed() >= PAIR_TIMEOUT)
        .map(|(r, _)| r.clone())
        .collect();
    for request in late {
        let Some(p) = pending.remove(&request) else {
            continue;
        };
        if let Some(e) = &p.error {
            let msg = format!("(request={request}) timeout waiting for stream pair");
            e.writer.write(msg.as_bytes()).await;
        }
        for s in [p.data, p.error].into_iter().flatten() {
            s.writer.reset().await;
        }
    }
}

/// One forwarded connection over a SPDY stream pair.
async fn forward_pair(target: Arc<Target>, mut data: Stream, error: Stream) {
    let raw = data.headers.get("port").unwrap_or("").to_string();
    let Some(port) = raw.parse::<u16>().ok().filter(|p| *p > 0) else {
        let msg = format!("invalid port header {raw:?}");
        error.writer.write(msg.as_bytes()).await;
        error.writer.close().await;
        data.writer.close().await;
        return;
    };
    let tcp = match target.dial(port).await {
        Ok(t) => t,
        Err(e) => {
            let msg = target.error(port, &e);
            debug!("kubelet server: {msg}");
            error.writer.write(msg.as_bytes()).await;
            error.writer.close().await;
            data.writer.close().await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let up = async move {
        while let Some(b) = data.reader.recv().await {
            if to_pod.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = to_pod.shutdown().await;
    };
    let writer = data.writer.clone();
    let down = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_pod.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !writer.write(&buf[..n]).await {
                        break;
                    }
                }
            }
        }
        writer.close().await;
        // kubectl waits for the error stream to end once the data stream has.
        error.writer.close().await;
    };
    tokio::join!(up, down);
}

fn framed(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// The WebSocket channel protocol: every port of the query, connected at once.
async fn channel_session<S>(ws: WebSocketStream<S>, target: Arc<Target>, ports: Vec<u16>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut incoming) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(32);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let mut ups = Vec::new();
    let mut tasks = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let (data_ch, error_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        let _ = tx.send(framed(data_ch, &port.to_le_bytes())).await;
        let _ = tx.send(framed(error_ch, &port.to_le_bytes())).await;
        let (up_tx, up_rx) = mpsc::channel::<Bytes>(16);
        ups.push(up_tx);
        tasks.push(tokio::spawn(channel_port(
            target.clone(),
            port,
            data_ch,
            up_rx,
            tx.clone(),
        )));
    }
    drop(tx);
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = incoming.next().await {
            let b = match m {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some(&ch) = b.first() else { continue };
            if ch % 2 == 0 {
                if let Some(up) = ups.get((ch / 2) as usize) {
                    let _ = up.send(b.slice(1..)).await;
                }
            }
        }
    });
    let all_done = futures_util::future::join_all(tasks);
    tokio::select! {
        _ = all_done => {}
        _ = target.gone() => {}
    }
    reader.abort();
    let _ = writer.await;
}

/// One port of a channel session: its connection, or one message on its error channel.
async fn channel_port(
    target: Arc<Target>,
    port: u16,
    data_ch: u8,
    mut up: mpsc::Receiver<Bytes>,
    tx: mpsc::Sender<Message>,
) {
    let tcp = match target.dial(port).await {
        Ok(t) => t,
        Err(e) => {
            let _ = tx
                .send(framed(data_ch + 1, target.error(port, &e).as_bytes()))
                .await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    // Client data until the WebSocket ends (this protocol has no half close).
    let up_task = tokio::spawn(async move {
        while let Some(b) = up.recv().await {
            if to_pod.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = to_pod.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from_pod.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send(framed(data_ch, &buf[..n])).await.is_err() {
                    break;
                }
            }
        }
    }
    up_task.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_negotiated_as_clients_offer_them() {
        let spdy = |p: &[&str]| Upgrade::Spdy {
            protocols: p.iter().map(|s| s.to_string()).collect(),
        };
        let ws = |p: &[&str]| Upgrade::WebSocket {
            key: "k".into(),
            protocols: p.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            negotiate(&spdy(&[PROTOCOL])).unwrap(),
            (Mode::Spdy, PROTOCOL.to_string())
        );
        assert_eq!(negotiate(&spdy(&[])).unwrap().0, Mode::Spdy);
        assert!(negotiate(&spdy(&["v4.channel.k8s.io"])).is_err());
        assert_eq!(
            negotiate(&ws(&["SPDY/3.1+portforward.k8s.io"])).unwrap(),
            (Mode::Tunnel, "SPDY/3.1+portforward.k8s.io".to_string())
        );
        // kube-rs offers v5 then v4: port-forward has no v5, v4 it is.
        assert_eq!(
            negotiate(&ws(&["v5.channel.k8s.io", "v4.channel.k8s.io"])).unwrap(),
            (Mode::Channels(V4_CHANNELS), V4_CHANNELS.to_string())
        );
        assert!(negotiate(&ws(&["v5.channel.k8s.io"])).is_err());
    }

    #[test]
    fn ports_from_the_query() {
        assert_eq!(query_ports(Some("port=80&port=8080")).unwrap(), [80, 8080]);
        assert_eq!(query_ports(Some("port=80%2C1234")).unwrap(), [80, 1234]);
        assert_eq!(query_ports(None).unwrap(), Vec::<u16>::new());
        assert!(query_ports(Some("port=0")).is_err());
        assert!(query_ports(Some("port=http")).is_err());
    }
}
