//! The `rktup` binary against the fake: Application Default Credentials from
//! GOOGLE_APPLICATION_CREDENTIALS, `render` equal to the master's user-data, dry runs that make
//! no call, `status -o json`, and an `up` killed with SIGKILL that the next `up` finishes.
//! Needs `cargo build --bin rktup` first (this crate can't depend on the root binary).

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use support::{env, Env};

fn rktup() -> PathBuf {
    if let Some(p) = std::env::var_os("RKTUP_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/cli_gce-... → target/debug/rktup
    let exe = std::env::current_exe().expect("test executable");
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("rktup"))
        .expect("target dir");
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --bin rktup` before these tests (or set RKTUP_BIN)",
        p.display()
    );
    p
}

fn cmd(e: &Env, name: &str, args: &[&str]) -> Command {
    let mut c = Command::new(rktup());
    c.env_clear();
    for (k, v) in e.vars(name) {
        c.env(k, v);
    }
    c.env("PATH", std::env::var("PATH").unwrap_or_default());
    c.args(args);
    c
}

fn run(e: &Env, name: &str, args: &[&str]) -> Output {
    cmd(e, name, args).output().expect("run rktup")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn dry_run_makes_no_call() {
    let e = env();
    ok(&run(&e, "dry", &["gce", "up", "--dry-run"]));
    assert_eq!(e.fake.request_count(), 0);
}

#[test]
fn up_render_status_down_through_the_binary() {
    let e = env();
    ok(&run(&e, "cli", &["gce", "up", "--no-wait"]));
    let master = e
        .fake
        .get(
            "projects/rktup-test/zones/us-central1-b/instances",
            "cli-master",
        )
        .expect("master");
    let ud = master["metadata"]["items"][0]["value"]
        .as_str()
        .unwrap_or("")
        .to_string();
    // What the machine gets, keys included (`render` redacts them unless asked).
    let rendered = ok(&run(
        &e,
        "cli",
        &["render", "gce", "--role", "master", "--show-secrets"],
    ));
    assert!(!ud.is_empty());
    assert_eq!(
        ud, rendered,
        "master user-data differs from `rktup render gce --role master`"
    );

    let json = ok(&run(&e, "cli", &["-o", "json", "gce", "status"]));
    let v: serde_json::Value = serde_json::from_str(&json).expect("status -o json is JSON");
    let res = v["resources"].as_array().expect("resources");
    assert!(res
        .iter()
        .any(|r| r["kind"] == "instanceGroupManager" && r["name"] == "cli-minion-group"));
    let table = ok(&run(&e, "cli", &["gce", "status"]));
    assert!(
        table.contains("cli-master") && table.contains("RUNNING"),
        "{table}"
    );

    let o = cmd(&e, "cli", &["gce", "down"])
        .env("KUBE_DELETE_NETWORK", "true")
        .output()
        .expect("run");
    ok(&o);
    let left: Vec<String> = e
        .fake
        .resources()
        .into_iter()
        .filter(|r| r.contains(" cli-"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
    let table = ok(&run(&e, "cli", &["gce", "status"]));
    assert!(table.contains("no resources"), "{table}");
}

#[test]
fn no_credentials_is_a_clear_error() {
    let e = env();
    let o = cmd(&e, "nocred", &["gce", "status"])
        .env(
            "GOOGLE_APPLICATION_CREDENTIALS",
            e.dir.path().join("missing.json"),
        )
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("failed to find Google credentials"), "{err}");
}

#[test]
fn an_up_killed_midway_is_finished_by_the_next_up() {
    let e = env();
    // Slow operations so the kill lands mid-way.
    e.fake.set_op_delay(std::time::Duration::from_millis(300));
    let mut child = cmd(&e, "killed", &["gce", "up", "--no-wait"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let start = std::time::Instant::now();
    while !e
        .fake
        .resources()
        .iter()
        .any(|r| r.starts_with("firewalls killed-"))
    {
        assert!(
            start.elapsed().as_secs() < 60,
            "up never reached the firewalls"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(!e
        .fake
        .resources()
        .iter()
        .any(|r| r == "instanceGroupManagers killed-minion-group"));
    e.fake.set_op_delay(std::time::Duration::ZERO);
    ok(&run(&e, "killed", &["gce", "up", "--no-wait"]));
    let have = e.fake.resources();
    for want in [
        "instances killed-master",
        "instanceGroupManagers killed-minion-group",
        "firewalls killed-minion-all",
    ] {
        assert!(have.iter().any(|r| r == want), "missing {want}: {have:#?}");
    }
    assert_eq!(
        have.iter()
            .filter(|r| r.starts_with("routes killed-"))
            .count(),
        2
    );
    e.fake.clear_requests();
    ok(&run(&e, "killed", &["gce", "up", "--no-wait"]));
    assert!(e.fake.mutations().is_empty(), "third up changed something");
}

/// An HTTP proxy that records every request line (`CONNECT compute.googleapis.com:443 ...`) and
/// refuses it: with HTTPS_PROXY pointing here, any call that would leave for Google's host is
/// seen instead of reaching the internet.
fn recording_proxy() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let addr = listener.local_addr().expect("proxy address");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(&conn);
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(first.trim().to_string());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = (&conn).write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n");
        }
    });
    (format!("http://{addr}"), seen)
}

fn via_proxy(c: &mut Command, proxy: &str) {
    for k in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
        c.env(k, proxy);
    }
    c.env("NO_PROXY", "127.0.0.1,localhost");
}

/// Behind an endpoint override, GCE's selfLinks still name Google's host; `down` deletes what
/// it found by those links, so it must rebase them as it does operations (issue 16).
#[test]
fn down_behind_an_endpoint_override_never_calls_googles_host() {
    let e = env();
    e.fake.set_link_base("https://compute.googleapis.com");
    let (proxy, seen) = recording_proxy();
    let mut up = cmd(&e, "ovr", &["gce", "up", "--no-wait"]);
    via_proxy(&mut up, &proxy);
    ok(&up.output().expect("run up"));
    let master = e
        .fake
        .get(
            "projects/rktup-test/zones/us-central1-b/instances",
            "ovr-master",
        )
        .expect("master");
    assert!(
        master["selfLink"]
            .as_str()
            .is_some_and(|l| l.starts_with("https://compute.googleapis.com/compute/v1/")),
        "the fake must name Google's host in selfLinks: {master}"
    );
    let mut down = cmd(&e, "ovr", &["gce", "down"]);
    via_proxy(&mut down, &proxy);
    down.env("KUBE_DELETE_NETWORK", "true");
    ok(&down.output().expect("run down"));
    let left: Vec<String> = e
        .fake
        .resources()
        .into_iter()
        .filter(|r| r.contains(" ovr-"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(seen, Vec::<String>::new(), "requests left for another host");
}
