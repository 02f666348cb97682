//! The api-service: a small HTTP/1.1 + JSON endpoint on loopback (default `localhost:15441`, the
//! seed's `--rkt-api-endpoint`), served by the agent and used by `rkt list/status/image` and
//! `rktup logs`. Read-mostly: pods and images are read from disk on every request, so the
//! service has no state of its own.
//!
//! ```text
//! GET    /v1/pods                      [PodInfo]
//! GET    /v1/pods/<id>                 PodInfo             (<id>: full or short uuid, k8s_<uuid>)
//! GET    /v1/pods/<id>/logs?container=C&follow=1           text/plain, streamed while following
//! GET    /v1/images                    [ImageRecord]
//! DELETE /v1/images/<name or id>       ImageRecord
//! POST   /v1/images/gc                 [ImageRecord]
//! POST   /v1/images/import?file=F[&name=N]   [ImageRecord]
//! POST   /v1/images/fetch?image=I      ImageRecord
//! ```

use crate::image::{self, ImageRecord, PullPolicy};
use crate::pod::{PodState, PodStatus, Stage1Flavor};
use crate::runtime::{PodEntry, Runtime};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

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
    #[error("failed to reach the rkt api-service at {0}: {1} (is `rktup agent` running?)")]
    Connect(String, std::io::Error),
    #[error("api-service: {0}")]
    Remote(String),
    #[error("api-service sent a bad response: {0}")]
    Protocol(String),
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

pub fn bind(endpoint: &str) -> Result<TcpListener, ApiError> {
    let addr = loopback_addr(endpoint)?;
    TcpListener::bind(addr).map_err(|e| ApiError::Listen(endpoint.into(), e))
}

/// Serve forever (one thread per connection; requests are short except log follows).
pub fn serve(listener: TcpListener, rt: Arc<Runtime>) {
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let rt = rt.clone();
        let _ = std::thread::Builder::new()
            .name("api-conn".into())
            .spawn(move || {
                let _ = handle(stream, &rt);
            });
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

fn respond(s: &mut TcpStream, code: u16, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
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

fn json<T: Serialize>(s: &mut TcpStream, v: &T) -> std::io::Result<()> {
    let b = serde_json::to_vec(v).unwrap_or_default();
    respond(s, 200, "application/json", &b)
}

fn error(s: &mut TcpStream, code: u16, msg: String) -> std::io::Result<()> {
    let b = serde_json::to_vec(&serde_json::json!({ "error": msg })).unwrap_or_default();
    respond(s, code, "application/json", &b)
}

fn handle(mut stream: TcpStream, rt: &Runtime) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
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
            stream.set_read_timeout(None)?;
            write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n")?;
            let multi = chosen.len() > 1;
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
                crate::logs::print_logs(&dir, follow, &mut out, move || {
                    !container_may_write(&pod_dir, &cname)
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
        ("POST", ["v1", "images", "import"]) => {
            let Some(file) = q("file") else {
                return error(&mut stream, 400, "file= is required".into());
            };
            match image::archive::import(
                &rt.store,
                std::path::Path::new(&file),
                q("name").as_deref(),
            ) {
                Ok(v) => json(&mut stream, &v),
                Err(e) => error(&mut stream, 400, e.to_string()),
            }
        }
        ("POST", ["v1", "images", "fetch"]) => {
            let Some(img) = q("image") else {
                return error(&mut stream, 400, "image= is required".into());
            };
            match image::ensure_image(&rt.store, rt.puller(), &img, PullPolicy::Always) {
                Ok(r) => json(&mut stream, &r),
                Err(e) => error(&mut stream, 400, e.to_string()),
            }
        }
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
    inner: &'a mut TcpStream,
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

/// Client side.
pub struct Client {
    endpoint: String,
}

impl Client {
    pub fn new(endpoint: &str) -> Client {
        Client {
            endpoint: endpoint.into(),
        }
    }

    /// Send a request; returns the status code and a reader positioned at the body.
    fn request(&self, method: &str, target: &str) -> Result<(u16, BufReader<TcpStream>), ApiError> {
        let addr = loopback_addr(&self.endpoint)?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| ApiError::Connect(self.endpoint.clone(), e))?;
        write!(
            s,
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.endpoint
        )
        .map_err(|e| ApiError::Connect(self.endpoint.clone(), e))?;
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
            let msg = serde_json::from_slice::<serde_json::Value>(&b)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&b).into_owned());
            return Err(ApiError::Remote(msg));
        }
        serde_json::from_slice(&b).map_err(|e| ApiError::Protocol(e.to_string()))
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
    pub fn image_import(
        &self,
        file: &str,
        name: Option<&str>,
    ) -> Result<Vec<ImageRecord>, ApiError> {
        let mut t = format!("/v1/images/import?file={}", pct_encode(file));
        if let Some(n) = name {
            t.push_str(&format!("&name={}", pct_encode(n)));
        }
        self.call("POST", &t)
    }
    pub fn image_fetch(&self, image: &str) -> Result<ImageRecord, ApiError> {
        self.call(
            "POST",
            &format!("/v1/images/fetch?image={}", pct_encode(image)),
        )
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
            let msg = serde_json::from_slice::<serde_json::Value>(&b)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&b).into_owned());
            return Err(ApiError::Remote(msg));
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
