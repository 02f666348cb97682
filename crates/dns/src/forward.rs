//! Names outside the cluster go to the node's upstream resolvers (CoreDNS's `forward`): over
//! UDP from a fresh socket per query, retried over TCP when the answer is truncated; upstreams are
//! tried in order until one answers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// Per upstream and attempt; a pod's resolver retries after 5 s by default, so an answer from
/// the second upstream still reaches it.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// EDNS payloads larger than this are not advertised on the way up (the DNS flag day size).
const MAX_UDP: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error("no upstream resolvers configured")]
    NoUpstreams,
    #[error("query too short to forward")]
    Short,
    #[error("upstream {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("upstream {0} did not answer within {UPSTREAM_TIMEOUT:?}")]
    Timeout(SocketAddr),
    #[error("upstream {0} sent a malformed answer: {1}")]
    Malformed(SocketAddr, String),
    #[error("cannot encode query: {0}")]
    Encode(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    upstreams: Vec<SocketAddr>,
    /// Upstream sockets are made in this network namespace (see `DnsConfig::upstream_netns`).
    netns: Option<PathBuf>,
}

impl Forwarder {
    pub(crate) fn new(upstreams: Vec<SocketAddr>, netns: Option<PathBuf>) -> Self {
        Forwarder { upstreams, netns }
    }

    /// Sends the client's query (its bytes as received, under a new ID) and returns the first
    /// upstream answer, parsed.
    pub(crate) async fn forward(&self, query: &[u8]) -> Result<Message, ForwardError> {
        if query.len() < 12 {
            return Err(ForwardError::Short);
        }
        let mut last = ForwardError::NoUpstreams;
        for up in &self.upstreams {
            match exchange(*up, query, self.netns.as_deref()).await {
                Ok(m) => return Ok(m),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Records of `qtype` for `name` from upstream (an ExternalName's target); empty on any
    /// failure, since the CNAME alone is still a valid answer.
    pub(crate) async fn resolve(&self, name: &Name, qtype: RecordType) -> Vec<Record> {
        let mut msg = Message::query();
        msg.add_query(Query::query(name.clone(), qtype));
        msg.metadata.recursion_desired = true;
        let bytes = match msg.to_vec() {
            Ok(b) => b,
            Err(_) => return Vec::new(),
        };
        match self.forward(&bytes).await {
            Ok(m) => m.answers,
            Err(_) => Vec::new(),
        }
    }
}

/// A non-blocking socket of `ty` for `up`'s family, made in network namespace `netns` (a socket
/// keeps the namespace it was made in). A short-lived thread enters the namespace, so no thread
/// of the async runtime ever changes namespace.
fn socket_in(
    netns: &Path,
    up: SocketAddr,
    ty: libc::c_int,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let path = netns.to_path_buf();
    let family = if up.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path)?;
        // SAFETY: plain syscalls on descriptors owned here; only this thread changes namespace.
        unsafe {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = libc::socket(family, ty | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(std::os::fd::OwnedFd::from_raw_fd(fd))
        }
    })
    .join()
    .map_err(|_| std::io::Error::other("upstream socket thread panicked"))?
}

async fn udp_socket(up: SocketAddr, netns: Option<&Path>) -> std::io::Result<UdpSocket> {
    match netns {
        Some(ns) => UdpSocket::from_std(std::net::UdpSocket::from(socket_in(
            ns,
            up,
            libc::SOCK_DGRAM,
        )?)),
        None => {
            let bind: SocketAddr = if up.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            UdpSocket::bind(bind).await
        }
    }
}

async fn tcp_connect(up: SocketAddr, netns: Option<&Path>) -> std::io::Result<TcpStream> {
    match netns {
        Some(ns) => {
            let s = std::net::TcpStream::from(socket_in(ns, up, libc::SOCK_STREAM)?);
            TcpSocket::from_std_stream(s).connect(up).await
        }
        None => TcpStream::connect(up).await,
    }
}

async fn exchange(
    up: SocketAddr,
    query: &[u8],
    netns: Option<&Path>,
) -> Result<Message, ForwardError> {
    // A new ID per upstream query: the client's ID is predictable to whoever sent it, and the
    // answer is matched on this ID plus the connected socket's random port.
    let id: u16 = rand::random();
    let mut q = query.to_vec();
    q[..2].copy_from_slice(&id.to_be_bytes());

    let io = |e| ForwardError::Io(up, e);
    let sock = udp_socket(up, netns).await.map_err(io)?;
    sock.connect(up).await.map_err(io)?;
    sock.send(&q).await.map_err(io)?;
    let mut buf = vec![0u8; MAX_UDP];
    let answer = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        loop {
            let n = sock.recv(&mut buf).await?;
            // A datagram with another ID is a late or forged answer: keep waiting.
            if n >= 12 && buf[..2] == id.to_be_bytes() {
                return Ok::<_, std::io::Error>(n);
            }
        }
    })
    .await
    .map_err(|_| ForwardError::Timeout(up))?
    .map_err(io)?;
    let truncated = buf[2] & 0x02 != 0;
    let bytes = if truncated {
        tcp_exchange(up, &q, netns).await?
    } else {
        buf.truncate(answer);
        buf
    };
    Message::from_vec(&bytes).map_err(|e| ForwardError::Malformed(up, e.to_string()))
}

async fn tcp_exchange(
    up: SocketAddr,
    q: &[u8],
    netns: Option<&Path>,
) -> Result<Vec<u8>, ForwardError> {
    let io = |e| ForwardError::Io(up, e);
    let len = u16::try_from(q.len()).map_err(|_| ForwardError::Encode("query too long".into()))?;
    tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        let mut s = tcp_connect(up, netns).await?;
        let mut framed = Vec::with_capacity(q.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(q);
        s.write_all(&framed).await?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    })
    .await
    .map_err(|_| ForwardError::Timeout(up))?
    .map_err(io)
}
