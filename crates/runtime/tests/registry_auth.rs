//! Registry authentication (basic, bearer token) and blob verification, against the real
//! docker-registry behind a small in-test proxy that adds the auth challenge or corrupts a blob.

use base64::Engine;
use rktup_runtime::image::{ensure_image, ImageStore, PullPolicy, Puller};
use rktup_testkit::{Images, Registry};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Basic,
    Bearer,
    Corrupt,
}

/// One request per connection; forwards GETs to the registry.
fn proxy(mode: Mode, upstream: String) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let me = addr.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let up = upstream.clone();
            let me = me.clone();
            std::thread::spawn(move || handle(c, mode, &up, &me));
        }
    });
    addr
}

fn handle(mut c: TcpStream, mode: Mode, up: &str, me: &str) {
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        headers.push(h.trim_end().to_string());
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let auth = headers
        .iter()
        .find(|h| h.to_ascii_lowercase().starts_with("authorization:"))
        .map(|h| h["authorization:".len()..].trim().to_string());
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    );
    let deny = |c: &mut TcpStream, challenge: String| {
        let _ = write!(c, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {challenge}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    };
    match mode {
        Mode::Basic if auth.as_deref() != Some(basic.as_str()) => {
            return deny(&mut c, "Basic realm=\"test\"".into());
        }
        Mode::Bearer if path.starts_with("/token") => {
            if auth.as_deref() != Some(basic.as_str()) {
                return deny(&mut c, "Basic realm=\"token\"".into());
            }
            let body = "{\"token\":\"tok-123\"}";
            let _ = write!(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            return;
        }
        Mode::Bearer if auth.as_deref() != Some("Bearer tok-123") => {
            return deny(
                &mut c,
                format!("Bearer realm=\"http://{me}/token\",service=\"test\",scope=\"repository:test/busybox:pull\""),
            );
        }
        _ => {}
    }
    let mut u = TcpStream::connect(up).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {up}\r\nConnection: close\r\n");
    for h in &headers {
        let l = h.to_ascii_lowercase();
        if !(l.starts_with("authorization:")
            || l.starts_with("connection:")
            || l.starts_with("host:"))
        {
            req.push_str(h);
            req.push_str("\r\n");
        }
    }
    req.push_str("\r\n");
    u.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    u.read_to_end(&mut resp).unwrap();
    if mode == Mode::Corrupt && path.contains("/blobs/") && resp.len() > 4096 {
        let n = resp.len();
        resp[n - 100] ^= 0xff; // inside the body of a layer blob
    }
    let _ = c.write_all(&resp);
}

fn setup() -> (Images, Registry, String) {
    let images = Images::build();
    let reg = Registry::start();
    reg.push(&images.layout, "busybox", "test/busybox:1");
    let addr = reg.addr.clone();
    (images, reg, addr)
}

#[test]
fn basic_auth_and_bearer_token_flows() {
    let (_i, _reg, up) = setup();
    for mode in [Mode::Basic, Mode::Bearer] {
        let p = proxy(mode, up.clone());
        let image = format!("{p}/test/busybox:1");
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let anon = Puller::new().with_insecure_registries(std::slice::from_ref(&p));
        let e = ensure_image(&store, &anon, &image, PullPolicy::Always).unwrap_err();
        assert!(
            e.to_string().contains("failed to authenticate") || e.to_string().contains("HTTP 401"),
            "{e}"
        );
        // Credentials from a docker config.json.
        let cfg = root.path().join("config.json");
        std::fs::write(
            &cfg,
            format!(
                r#"{{"auths":{{"{p}":{{"auth":"{}"}}}}}}"#,
                base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
            ),
        )
        .unwrap();
        let authed = Puller::new()
            .with_insecure_registries(std::slice::from_ref(&p))
            .with_docker_config(&cfg);
        let rec = ensure_image(&store, &authed, &image, PullPolicy::Always).unwrap();
        assert_eq!(rec.layers.len(), 1);
        assert!(store
            .layer_dir(&rec.layers[0].digest)
            .unwrap()
            .join("bin/busybox")
            .exists());
    }
}

#[test]
fn corrupt_blob_is_an_error_never_a_broken_rootfs() {
    let (_i, _reg, up) = setup();
    let p = proxy(Mode::Corrupt, up);
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let puller = Puller::new().with_insecure_registries(std::slice::from_ref(&p));
    let e = ensure_image(
        &store,
        &puller,
        &format!("{p}/test/busybox:1"),
        PullPolicy::Always,
    )
    .unwrap_err();
    assert!(e.to_string().contains("digest mismatch"), "{e}");
    assert!(store.list().unwrap().is_empty());
    let layers: Vec<_> = std::fs::read_dir(store.root().join("layers"))
        .unwrap()
        .collect();
    assert!(layers.is_empty(), "nothing unpacked");
}
