//! The rkt api-service's access rules (issue 12): the unix socket `<root-dir>/api.sock` is root's
//! alone (mode 0600, owner root, peers checked by SO_PEERCRED), the loopback TCP listener exists
//! only when `--rkt-api-endpoint` is given and is read-only, image import/fetch are not routes
//! (the CLI writes the store itself, as root), and connections are served by a bounded pool.
//! Needs root and setpriv (util-linux); with CI=true a missing one fails the test.

use rktup_runtime::api::Client;
use rktup_testkit::agent::*;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Whether the test can run (`rktup_testkit::can_run`: under CI=true a missing need fails it).
fn can_run(test: &str) -> bool {
    let missing = if !rktup_testkit::is_root() {
        Some("root (the agent and `setpriv` to user nobody)")
    } else if !std::path::Path::new("/usr/bin/setpriv").exists() {
        Some("/usr/bin/setpriv (util-linux)")
    } else {
        None
    };
    rktup_testkit::can_run(test, missing)
}

/// `rktup <args>` as user nobody (uid/gid 65534, no supplementary groups).
fn as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(rktup_bin())
        .args(args)
        .output()
        .expect("run setpriv")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The TCP ports process `pid` listens on.
fn tcp_listeners(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|r| {
            r.flatten()
                .filter_map(|f| std::fs::read_link(f.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                if let Some(p) = f[1]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                {
                    ports.push(p);
                }
            }
        }
    }
    ports
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|r| r.count())
        .unwrap_or(0)
}

#[test]
fn unix_socket_is_root_only_and_tcp_is_read_only() {
    if !can_run("unix_socket_is_root_only_and_tcp_is_read_only") {
        return;
    }
    let node = Node::new(&[]);
    let sock = node.socket();
    let root = node.root.to_str().unwrap().to_string();
    let md = std::fs::symlink_metadata(&sock).expect("the api-service socket exists");
    assert!(md.file_type().is_socket(), "{} is a socket", sock.display());
    assert_eq!(md.permissions().mode() & 0o7777, 0o600, "socket mode");
    assert_eq!((md.uid(), md.gid()), (0, 0), "socket owner");
    // Let nobody reach the socket's directory, so what refuses it is the socket itself.
    for d in [node.dir.path(), node.root.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for args in [
        vec!["rkt", "list", "--dir", &root],
        vec!["rkt", "image", "gc", "--dir", &root],
        vec!["rkt", "image", "rm", "test/busybox:1", "--dir", &root],
    ] {
        let o = as_nobody(&args);
        assert!(!o.status.success(), "nobody ran {args:?}: {}", text(&o));
        assert!(
            text(&o).contains("root-only"),
            "{args:?} as nobody: {}",
            text(&o)
        );
    }
    // Even a socket made connectable for everyone answers nobody 403 (SO_PEERCRED).
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = as_nobody(&["rkt", "list", "--dir", &root]);
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        !o.status.success() && text(&o).contains("uid 65534 may not use"),
        "{}",
        text(&o)
    );
    // Image import into the store is root's, through the CLI only.
    let images = rktup_testkit::Images::build();
    let archive = node.dir.path().join("bb.tar");
    images.docker_archive("busybox", &archive, "example.com/api/bb:v1");
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = as_nobody(&[
        "rkt",
        "image",
        "import",
        archive.to_str().unwrap(),
        "--dir",
        &root,
    ]);
    assert!(
        !o.status.success() && text(&o).contains("must run as root"),
        "{}",
        text(&o)
    );
    // Root is served everything on the socket.
    node.rkt_ok(&["rkt", "list"]);
    node.rkt_ok(&["rkt", "image", "gc"]);

    // The loopback listener (the test kit gives --rkt-api-endpoint): reads yes, changes 403.
    let tcp = Client::tcp(&node.endpoint);
    for (m, t) in [("GET", "/v1/pods"), ("GET", "/v1/images")] {
        let (code, body) = tcp.raw(m, t).expect("tcp read");
        assert_eq!(code, 200, "{m} {t}: {body}");
    }
    let shadow = "/v1/images/import?file=%2Fetc%2Fshadow";
    for (m, t) in [
        ("POST", shadow),
        ("POST", "/v1/images/fetch?image=test%2Fbusybox%3A1"),
        ("POST", "/v1/images/gc"),
        ("DELETE", "/v1/images/test%2Fbusybox%3A1"),
    ] {
        let (code, body) = tcp.raw(m, t).expect("tcp request");
        assert_eq!(code, 403, "{m} {t} on the loopback listener: {body}");
        assert!(
            body.contains(&format!(
                "is only served on the unix socket {}",
                sock.display()
            )),
            "{body}"
        );
    }
    let (ok, _, err) = node.rktup(&["rkt", "image", "gc", "--rkt-api-endpoint", &node.endpoint]);
    assert!(
        !ok && err.contains("only served on the unix socket"),
        "{err}"
    );
    let list = node.rkt_ok(&["rkt", "list", "--rkt-api-endpoint", &node.endpoint]);
    assert!(list.starts_with("UUID"), "{list}");
    // Import and fetch are no routes on the socket either: the agent reads no file for anyone.
    let sc = Client::unix(&sock);
    let (code, body) = sc.raw("POST", shadow).expect("socket request");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("rktup rkt image import"), "{body}");

    // Import acts on the store directly: it works with the agent stopped.
    let mut node = node;
    node.kill_agent();
    let out = node.rkt_ok(&["rkt", "image", "import", archive.to_str().unwrap()]);
    assert!(out.contains("example.com/api/bb:v1"), "{out}");
    node.start_agent();
    let after = node.rkt_ok(&["rkt", "image", "list", "--no-legend"]);
    assert!(after.contains("example.com/api/bb:v1"), "{after}");
}

#[test]
fn no_tcp_listener_unless_asked() {
    if !can_run("no_tcp_listener_unless_asked") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let mut agent = Command::new(rktup_bin())
        .arg("agent")
        .arg("--root-dir")
        .arg(&root)
        .arg("--pod-manifest-path")
        .arg(&manifests)
        .args(["--kubelet-port", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("agent");
    let sock = rktup_runtime::api::socket_path(&root);
    let t = Instant::now();
    while UnixStream::connect(&sock).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "no socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = agent.id();
    let listening = tcp_listeners(pid);
    assert!(
        listening.is_empty(),
        "an agent without --rkt-api-endpoint (and --kubelet-port 0) listens on TCP ports {listening:?}"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = agent.wait();
    assert!(!sock.exists(), "the socket is removed when the agent exits");
}

#[test]
fn a_connection_flood_gets_503_not_threads() {
    if !can_run("a_connection_flood_gets_503_not_threads") {
        return;
    }
    let node = Node::new(&[]);
    let pid = node.agent.as_ref().unwrap().id();
    let before = threads(pid);
    // Idle connections: each holds a worker until its request times out (5 s) or waits in
    // the queue; the rest are answered 503 at once.
    let mut conns: Vec<UnixStream> = (0..80)
        .map(|_| UnixStream::connect(node.socket()).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = threads(pid);
    assert!(
        during <= before + 2,
        "the agent grew from {before} to {during} threads under 80 connections"
    );
    let mut busy = 0;
    for c in conns.iter_mut() {
        c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut b = [0u8; 64];
        if let Ok(n) = c.read(&mut b) {
            if String::from_utf8_lossy(&b[..n]).starts_with("HTTP/1.1 503") {
                busy += 1;
            }
        }
    }
    assert!(busy >= 80 - 8 - 32, "only {busy} of 80 got 503");
    drop(conns);
    // The pool recovers once the idle ones time out.
    let t = Instant::now();
    loop {
        match Client::unix(node.socket()).pods() {
            Ok(_) => break,
            Err(e) => assert!(t.elapsed() < Duration::from_secs(15), "{e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn log_follows_are_bounded_and_end_with_their_client() {
    if !can_run("log_follows_are_bounded_and_end_with_their_client") {
        return;
    }
    let node = Node::new(&[]);
    let (_bridge, _) = node.bridge_net("0.4.0");
    node.put(
        "quiet.yaml",
        &format!("metadata: {{name: quiet}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}\n    command: [sleep, '1000']\n", node.busybox),
    );
    let p = node.wait_pod("quiet", "running", 60, |p| {
        p["status"]["containers"][0]["state"] == "running"
    });
    let target = format!(
        "GET /v1/pods/{}/logs?follow=1 HTTP/1.1\r\nHost: x\r\n\r\n",
        uuid_of(&p)
    );
    let follow = || {
        let mut s = UnixStream::connect(node.socket()).expect("connect");
        s.write_all(target.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 12];
        s.read_exact(&mut b).unwrap();
        (s, String::from_utf8_lossy(&b).into_owned())
    };
    let mut held = Vec::new();
    for _ in 0..rktup_runtime::api::MAX_FOLLOWS {
        let (s, status) = follow();
        assert_eq!(status, "HTTP/1.1 200", "a follow within the bound");
        held.push(s);
    }
    let (_, status) = follow();
    assert_eq!(status, "HTTP/1.1 503", "one follow too many");
    // Short requests are still served while the follows run.
    Client::unix(node.socket())
        .pods()
        .expect("list during follows");
    // A follow whose client hangs up frees its slot.
    drop(held.pop());
    let t = Instant::now();
    loop {
        let (s, status) = follow();
        if status == "HTTP/1.1 200" {
            held.push(s);
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the slot was not freed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(held);
    node.delete("quiet.yaml");
    node.wait_no_pods(30);
}

/// The agent's own key (the kubelet port's, `<root-dir>/pki/kubelet.key` or
/// `--tls-private-key-file`) readable by others: the agent refuses to start, naming the file,
/// its mode and the fix, before it serves anything.
#[test]
fn agent_refuses_an_unprotected_kubelet_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let pki = root.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let key = pki.join("kubelet.key");
    std::fs::write(pki.join("kubelet.crt"), "not used").unwrap();
    std::fs::write(&key, "not used").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("timeout")
        .arg("20")
        .arg(rktup_bin())
        .arg("agent")
        .arg("--root-dir")
        .arg(&root)
        .arg("--pod-manifest-path")
        .arg(dir.path().join("manifests"))
        .args(["--kubelet-port", "10999"])
        .output()
        .expect("agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1),
        "the agent must exit at once: {:?} {err}",
        out.status
    );
    for want in [
        "UNPROTECTED PRIVATE KEY FILE".to_string(),
        format!("{} has mode 0644", key.display()),
        format!("chmod 600 {}", key.display()),
    ] {
        assert!(err.contains(&want), "{want:?} in {err}");
    }
    assert!(
        !rktup_runtime::api::socket_path(&root).exists(),
        "nothing served"
    );
}
