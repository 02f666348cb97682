//! Port mappings (the cluster file's `portMappings` and nodes' `extraPortMappings`, kind's
//! `extraPortMappings` shape): a host port on this machine forwarded to a node's port, so a
//! NodePort (or a LoadBalancer Service's node port) answers on `localhost:<hostPort>`.
//!
//! A small userspace proxy, as Docker's `docker-proxy` does for kind's node containers: the
//! hidden `rktup portmap MAPPING...` runs on the host under its own supervisor (component
//! `portmap`, so `down` stops it with the others and `status` shows it), one thread per
//! listener, per TCP connection a pair of copies, per UDP client an upstream socket. It needs no
//! sysctl (nftables DNAT of `127.0.0.1` would need `route_localnet` and a masquerade) and
//! leaves nothing in the kernel to clean up.
//!
//! A mapping is written `tcp|udp:LISTEN_IP:HOST_PORT=TARGET_IP:TARGET_PORT`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PortmapError {
    #[error("bad port mapping {0:?}: expected tcp|udp:LISTEN_IP:HOST_PORT=TARGET_IP:TARGET_PORT")]
    Parse(String),
    #[error("`rktup portmap` needs at least one mapping")]
    Empty,
    #[error("failed to listen on {proto} {addr}: {source}")]
    Listen {
        proto: &'static str,
        addr: SocketAddrV4,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One forward: `listen` on this machine to `target` (a node's address and port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub proto: Proto,
    pub listen: SocketAddrV4,
    pub target: SocketAddrV4,
}

impl FromStr for Forward {
    type Err = PortmapError;
    fn from_str(s: &str) -> Result<Forward, PortmapError> {
        let bad = || PortmapError::Parse(s.to_string());
        let (proto, rest) = s.split_once(':').ok_or_else(bad)?;
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err(bad()),
        };
        let (listen, target) = rest.split_once('=').ok_or_else(bad)?;
        Ok(Forward {
            proto,
            listen: listen.parse().map_err(|_| bad())?,
            target: target.parse().map_err(|_| bad())?,
        })
    }
}

impl std::fmt::Display for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}={}", self.proto.as_str(), self.listen, self.target)
    }
}

pub fn parse(args: &[String]) -> Result<Vec<Forward>, PortmapError> {
    let f: Vec<Forward> = args.iter().map(|a| a.parse()).collect::<Result<_, _>>()?;
    if f.is_empty() {
        return Err(PortmapError::Empty);
    }
    Ok(f)
}

/// The forwards of a cluster: each mapping to its node's address.
pub fn forwards(
    mappings: &[rktup_config::PortMapping],
    node_ip: impl Fn(usize) -> Option<Ipv4Addr>,
) -> Vec<Forward> {
    mappings
        .iter()
        .filter_map(|m| {
            Some(Forward {
                proto: match m.protocol {
                    rktup_config::Protocol::Tcp => Proto::Tcp,
                    rktup_config::Protocol::Udp => Proto::Udp,
                },
                listen: SocketAddrV4::new(m.listen_address, m.host_port),
                target: SocketAddrV4::new(node_ip(m.node)?, m.container_port),
            })
        })
        .collect()
}

/// Whether every listen address is free now (checked by `up` before it starts the proxy, so a
/// port in use is an error naming it rather than a proxy restarting forever).
pub fn check_free(forwards: &[Forward]) -> Result<(), PortmapError> {
    for f in forwards {
        let r = match f.proto {
            Proto::Tcp => TcpListener::bind(f.listen).map(drop),
            Proto::Udp => UdpSocket::bind(f.listen).map(drop),
        };
        r.map_err(|source| PortmapError::Listen {
            proto: f.proto.as_str(),
            addr: f.listen,
            source,
        })?;
    }
    Ok(())
}

/// Binds every listener (all or nothing), then forwards until killed.
pub fn run(forwards: &[Forward]) -> Result<(), PortmapError> {
    let mut tcp = vec![];
    let mut udp = vec![];
    for f in forwards {
        let listen_err = |source| PortmapError::Listen {
            proto: f.proto.as_str(),
            addr: f.listen,
            source,
        };
        match f.proto {
            Proto::Tcp => tcp.push((TcpListener::bind(f.listen).map_err(listen_err)?, *f)),
            Proto::Udp => udp.push((UdpSocket::bind(f.listen).map_err(listen_err)?, *f)),
        }
        eprintln!("portmap: forwarding {f}");
    }
    let mut threads = vec![];
    for (l, f) in tcp {
        threads.push(std::thread::spawn(move || serve_tcp(l, f)));
    }
    for (s, f) in udp {
        threads.push(std::thread::spawn(move || serve_udp(s, f)));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn serve_tcp(listener: TcpListener, f: Forward) {
    for conn in listener.incoming() {
        let Ok(client) = conn else { continue };
        std::thread::spawn(move || {
            let upstream =
                match TcpStream::connect_timeout(&SocketAddr::V4(f.target), Duration::from_secs(5))
                {
                    Ok(u) => u,
                    Err(e) => {
                        eprintln!("portmap: {f}: failed to connect to {}: {e}", f.target);
                        return;
                    }
                };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
                return;
            };
            let up = std::thread::spawn(move || copy_half(client, upstream));
            copy_half(u2, c2);
            let _ = up.join();
        });
    }
}

/// Copies until EOF, then half-closes the writer so the other side sees it.
fn copy_half(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 32 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn serve_udp(sock: UdpSocket, f: Forward) {
    let sock = Arc::new(sock);
    let clients: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = [0u8; 65536];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let existing = clients.lock().ok().and_then(|c| c.get(&from).cloned());
        let upstream = match existing {
            Some(u) => u,
            None => {
                let u = match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                    .and_then(|u| u.connect(f.target).map(|()| u))
                {
                    Ok(u) => Arc::new(u),
                    Err(e) => {
                        eprintln!("portmap: {f}: {e}");
                        continue;
                    }
                };
                if let Ok(mut c) = clients.lock() {
                    c.insert(from, u.clone());
                }
                // Replies go back to this client until it is quiet for 2 minutes.
                let (reply, back, clients) = (u.clone(), sock.clone(), clients.clone());
                std::thread::spawn(move || {
                    let _ = reply.set_read_timeout(Some(Duration::from_secs(120)));
                    let mut b = [0u8; 65536];
                    while let Ok(n) = reply.recv(&mut b) {
                        let _ = back.send_to(&b[..n], from);
                    }
                    if let Ok(mut c) = clients.lock() {
                        c.remove(&from);
                    }
                });
                u
            }
        };
        let _ = upstream.send(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_round_trip() {
        let f: Forward = "tcp:127.0.0.1:8080=10.1.2.3:30080".parse().unwrap();
        assert_eq!(f.to_string(), "tcp:127.0.0.1:8080=10.1.2.3:30080");
        assert_eq!(f.proto, Proto::Tcp);
        assert!("sctp:0.0.0.0:1=1.2.3.4:5".parse::<Forward>().is_err());
        assert!("tcp:0.0.0.0:1".parse::<Forward>().is_err());
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn forwards_tcp_both_ways() {
        // An echo server as the "node", the proxy in front of it on a free port.
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = match echo.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        std::thread::spawn(move || {
            for c in echo.incoming().flatten() {
                let mut c2 = c.try_clone().unwrap();
                let mut c = c;
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c, &mut c2);
                });
            }
        });
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = match front.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let f = Forward {
            proto: Proto::Tcp,
            listen,
            target,
        };
        std::thread::spawn(move || serve_tcp(front, f));
        let mut c = TcpStream::connect(listen).unwrap();
        c.write_all(b"hello").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello");
    }
    #[test]
    fn forwards_udp_and_replies_to_each_client() {
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = match echo.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        std::thread::spawn(move || {
            let mut b = [0u8; 1500];
            while let Ok((n, from)) = echo.recv_from(&mut b) {
                let _ = echo.send_to(&b[..n], from);
            }
        });
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let listen = match front.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let f = Forward {
            proto: Proto::Udp,
            listen,
            target,
        };
        std::thread::spawn(move || serve_udp(front, f));
        for msg in [&b"one"[..], b"two"] {
            let c = UdpSocket::bind("127.0.0.1:0").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.send_to(msg, listen).unwrap();
            let mut b = [0u8; 16];
            let (n, _) = c.recv_from(&mut b).unwrap();
            assert_eq!(&b[..n], msg);
        }
    }
}
