//! tcpSocket probes: success when a connection opens.

use super::Outcome;
use std::time::Duration;

/// An io::Error as Go's net package words it ("connection refused", "no route to host").
fn go_error(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

pub(super) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Connect to `host:port`; errors worded as Go's dialer's (`dial tcp <addr>: connect: ...`), as
/// every network probe reports them.
pub(super) async fn dial(host: &str, port: u16) -> Result<tokio::net::TcpStream, String> {
    tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| {
            let addr = join_host_port(host, port);
            format!("dial tcp {addr}: connect: {}", go_error(&e))
        })
}

pub async fn tcp_probe(host: &str, port: u16, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, dial(host, port)).await {
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(e),
        Err(_) => Outcome::Failure(format!(
            "dial tcp {}: i/o timeout",
            join_host_port(host, port)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_errors() {
        let e = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(go_error(&e), "connection refused");
    }
}
