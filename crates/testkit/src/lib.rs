//! The one test kit of the workspace. Everything is real: images are built with `umoci` from
//! Debian's busybox-static, served by Debian's `docker-registry` started on 127.0.0.1 with a free
//! port, and copied there with `skopeo`; kubectl is the real one.
//!
//! The crate root holds what every crate's tests share (no heavy dependencies); each domain has a
//! module behind the feature of the same name, so a crate's tests compile only what they use:
//! [`controlplane`] (a control plane in-process, kubectl, stand-in nodes and kubelets, the
//! metrics.k8s.io test server), [`agent`] (a real `rktup agent` node), [`proxy`] (a node's network
//! namespaces) and [`aws`] (the moto sandbox).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[cfg(feature = "agent")]
pub mod agent;
#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "controlplane")]
pub mod controlplane;
#[cfg(feature = "local")]
pub mod local;
#[cfg(feature = "proxy")]
pub mod proxy;

/// Run a command, panicking with its output if it fails.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("failed to run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command to its end with `input` on its stdin (none: stdin is null), stdout and stderr
/// captured.
pub fn output_with_input(cmd: &mut Command, input: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to run {cmd:?}: {e}"));
    if let Some(text) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write stdin");
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{cmd:?} output: {e}"))
}

/// The real kubectl.
pub const KUBECTL: &str = "/usr/bin/kubectl";

/// Where test.sh puts kubectl 1.20 (Debian bookworm's `kubernetes-client`, unpacked beside the
/// current kubectl: `dpkg-deb -x kubernetes-client_*.deb /opt/kubectl-1.20`, since installing it
/// would replace /usr/bin/kubectl): the protocols and formats older clients still use (SPDY/3.1
/// over a POST upgrade, OpenAPI v2, older API versions).
pub const KUBECTL_1_20: &str = "/opt/kubectl-1.20/usr/bin/kubectl";

/// kubectl 1.20: `RKTUP_KUBECTL_1_20` (or its older spelling `RKTUP_OLD_KUBECTL`), else
/// [`KUBECTL_1_20`]; None when that is not a file.
pub fn kubectl_1_20() -> Option<PathBuf> {
    let p = std::env::var_os("RKTUP_KUBECTL_1_20")
        .or_else(|| std::env::var_os("RKTUP_OLD_KUBECTL"))
        .map_or_else(|| PathBuf::from(KUBECTL_1_20), PathBuf::from);
    p.is_file().then_some(p)
}

/// Why a kubectl 1.20 check cannot run (for [`can_run`]).
pub fn no_kubectl_1_20() -> String {
    format!("no kubectl 1.20 at {KUBECTL_1_20} (RKTUP_KUBECTL_1_20)")
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Start a server on a free loopback port and return it once **this child** listens there.
///
/// A port from `free_port` is free only until someone else takes it: a server started by a
/// parallel test can bind it first, and a connect loop would then take that other server's
/// listener (or a TCP self-connect) for ours. So readiness is the child owning a listening socket
/// on the port (read from /proc); a child that exits meanwhile is retried on another port.
/// stdout and stderr are the command's own (null unless it sets them).
pub fn spawn_listening(
    what: &str,
    timeout: Duration,
    mut command: impl FnMut(u16) -> Command,
) -> (Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut cmd = command(port);
        let mut child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let deadline = Instant::now() + timeout;
        loop {
            if process_listens_on(child.id(), port) {
                return (child, port);
            }
            if let Ok(Some(_)) = child.try_wait() {
                break; // port taken meanwhile: try another
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not listen on 127.0.0.1:{port} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("{what} exited before listening, on five ports in a row");
}

/// Whether process `pid` holds a TCP socket listening on `port` (any address, IPv4 or IPv6).
pub fn process_listens_on(pid: u32, port: u16) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let sockets: std::collections::HashSet<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy();
            t.strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .map(str::to_string)
        })
        .collect();
    const LISTEN: &str = "0A";
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                f.len() > 9
                    && f[3] == LISTEN
                    && f[1]
                        .rsplit_once(':')
                        .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                        == Some(port)
                    && sockets.contains(f[9])
            })
    })
}

/// The `rktup` binary: `RKTUP_BIN`, else `$CARGO_TARGET_DIR/debug/rktup`, else `target/debug/rktup`
/// of the workspace. Build it first: `cargo build --bin rktup`.
pub fn rktup_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RKTUP_BIN") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let p = target.join("debug/rktup");
    assert!(
        p.exists(),
        "{} not found: run `cargo build --bin rktup` first (or set RKTUP_BIN)",
        p.display()
    );
    p
}

/// A short unique token for names (bridges, subnets, dirs).
pub fn unique() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    ((std::process::id() % 4096) << 8) | (n % 256)
}

/// Debian's docker-registry on 127.0.0.1:<free port>, killed and wiped on drop.
pub struct Registry {
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("config.yml");
        let data = dir.path().join("data");
        let (child, port) = spawn_listening("docker-registry", Duration::from_secs(10), |port| {
            std::fs::write(
                &cfg,
                format!(
                    "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                    data.display()
                ),
            )
            .expect("write registry config");
            let mut cmd = Command::new("docker-registry");
            cmd.arg("serve")
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            cmd
        });
        Registry {
            addr: format!("127.0.0.1:{port}"),
            child,
            _dir: dir,
        }
    }

    /// Copy an OCI layout image into this registry as `name:tag`.
    pub fn push(&self, layout: &Path, layout_tag: &str, name: &str) -> String {
        let dest = format!("{}/{name}", self.addr);
        sh(Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{layout_tag}", layout.display()))
            .arg(format!("docker://{dest}")));
        dest
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Applets the test images link to busybox.
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ls", "sleep", "true", "false", "id", "env", "hostname", "ip", "ifconfig",
    "wget", "nc", "httpd", "grep", "head", "tail", "dd", "mount", "ps", "readlink", "touch",
    "mkdir", "rm", "test", "seq", "yes", "stat", "pwd", "kill", "wc", "tr", "printf", "sed", "awk",
    "ping", "tar", "nslookup",
];

/// OCI layouts built once per call site: `busybox:latest` (one layer: /bin/busybox + applet links
/// and /etc/motd and /var/lib/data/old) and `multi:latest` (busybox plus a second layer that
/// removes motd (a whiteout), replaces /var/lib/data with new content and adds /etc/layer2).
pub struct Images {
    pub layout: PathBuf,
    _dir: tempfile::TempDir,
}

impl Images {
    pub fn build() -> Images {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = dir.path().join("layout");
        let bundle = dir.path().join("bundle");
        let img = |tag: &str| format!("{}:{tag}", layout.display());
        sh(Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout));
        sh(Command::new("umoci").args(["new", "--image", &img("busybox")]));
        sh(Command::new("umoci")
            .args(["unpack", "--image", &img("busybox")])
            .arg(&bundle));
        let rootfs = bundle.join("rootfs");
        for d in [
            "bin",
            "etc",
            "tmp",
            "var/lib/data",
            "proc",
            "sys",
            "dev",
            "root",
        ] {
            std::fs::create_dir_all(rootfs.join(d)).expect("mkdir");
        }
        std::fs::copy(busybox_path(), rootfs.join("bin/busybox")).expect("copy busybox");
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).expect("symlink");
        }
        std::fs::write(rootfs.join("etc/motd"), "layer one\n").expect("write");
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )
        .expect("write");
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("write");
        std::fs::write(rootfs.join("var/lib/data/old"), "old\n").expect("write");
        sh(Command::new("umoci")
            .args(["repack", "--image", &img("busybox")])
            .arg(&bundle));
        sh(Command::new("umoci").args([
            "config",
            "--image",
            &img("busybox"),
            "--config.cmd",
            "/bin/sh",
            "--config.env",
            "PATH=/bin",
            "--config.env",
            "IMAGE_ENV=from-image",
        ]));
        // Second image: a copy of the first plus a layer with a whiteout and an opaque-ish change.
        sh(Command::new("umoci").args(["tag", "--image", &img("busybox"), "multi"]));
        std::fs::remove_dir_all(&bundle).expect("rm bundle");
        sh(Command::new("umoci")
            .args(["unpack", "--image", &img("multi")])
            .arg(&bundle));
        let rootfs = bundle.join("rootfs");
        std::fs::remove_file(rootfs.join("etc/motd")).expect("rm motd");
        std::fs::remove_dir_all(rootfs.join("var/lib/data")).expect("rm data");
        std::fs::create_dir_all(rootfs.join("var/lib/data")).expect("mkdir");
        std::fs::write(rootfs.join("var/lib/data/new"), "new\n").expect("write");
        std::fs::write(rootfs.join("etc/layer2"), "layer two\n").expect("write");
        sh(Command::new("umoci")
            .args(["repack", "--image", &img("multi")])
            .arg(&bundle));
        std::fs::remove_dir_all(&bundle).expect("rm bundle");
        Images { layout, _dir: dir }
    }

    /// An oci-archive tar of one tag (skopeo copy oci:... oci-archive:...).
    pub fn oci_archive(&self, tag: &str, out: &Path) {
        sh(Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("oci:{}:{tag}", self.layout.display()))
            .arg(format!("oci-archive:{}:{tag}", out.display())));
    }

    /// A docker-archive tar (docker save format) of one tag named `name`.
    pub fn docker_archive(&self, tag: &str, out: &Path, name: &str) {
        sh(Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("oci:{}:{tag}", self.layout.display()))
            .arg(format!("docker-archive:{}:{name}", out.display())));
    }
}

pub fn busybox_path() -> &'static str {
    if Path::new("/bin/busybox").exists() {
        "/bin/busybox"
    } else {
        "/usr/bin/busybox"
    }
}

/// Wait for a condition with an explicit timeout.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last 40 lines of each file in `dir` (a cluster's component logs), each under a
/// `--- <path> (last lines)` header, for failure messages; nothing when `dir` is missing.
pub fn log_tails(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        out.push_str(&format!("--- {} (last lines)\n", e.path().display()));
        out.push_str(&tail(&text, 40));
    }
    out
}

/// The last `n` lines of `text`, each ending in a newline.
pub fn tail(text: &str, n: usize) -> String {
    let last: Vec<&str> = text.lines().rev().take(n).collect();
    last.into_iter().rev().map(|l| format!("{l}\n")).collect()
}

/// Every path under `dir` (itself included), not descending into `skip`.
pub fn tree(dir: &Path, skip: Option<&Path>) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if Some(dir) == skip {
        return out;
    }
    for e in std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
    {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(tree(&e.path(), skip));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// The permission bits of `p` (a final symlink not followed).
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The paths that are not private to their owner, as `<path> <mode>`: directories other than
/// 0700 and files that group or others may access in any way.
pub fn not_private(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .filter(|p| {
            let m = mode(p);
            if p.is_dir() {
                m != 0o700
            } else {
                m & 0o077 != 0
            }
        })
        .map(|p| format!("{} {:04o}", p.display(), mode(p)))
        .collect()
}

/// Whether this process runs as root (the agent, namespaces and mounts need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `test` can run, given what is `missing` (None: nothing). The project's rule: under
/// `CI=true` a test that cannot run fails, naming what it needs; elsewhere it prints why it
/// skips and the caller returns.
pub fn can_run(test: &str, missing: Option<&str>) -> bool {
    let Some(missing) = missing else {
        return true;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} cannot run on this CI host: needs {missing}"
    );
    println!("SKIPPED {test}: needs {missing}");
    false
}

/// [`can_run`] for a test that needs root, `for_what` saying why ("the agent runs pods").
pub fn can_run_as_root(test: &str, for_what: &str) -> bool {
    can_run(
        test,
        (!is_root())
            .then(|| format!("root ({for_what})"))
            .as_deref(),
    )
}

/// Polls the async `f` (every 100 ms) until it returns Some; panics naming `what` after
/// `timeout`. The async twin of [`wait_for`].
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_is_attributed_to_its_own_process_only() {
        let mine = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = mine.local_addr().expect("addr").port();
        assert!(process_listens_on(std::process::id(), port));
        // Another process (this test's parent shell or init) does not own it.
        assert!(!process_listens_on(1, port));
        drop(mine);
        assert!(!process_listens_on(std::process::id(), port));
    }

    #[test]
    fn a_server_is_ready_only_once_the_child_listens() {
        // busybox nc listens after a delay; the helper must wait for it, not for any listener.
        let (mut child, port) = spawn_listening("nc", Duration::from_secs(10), |port| {
            let mut cmd = Command::new(busybox_path());
            let bb = busybox_path();
            cmd.args(["sh", "-c", &format!("sleep 0.3; exec {bb} nc -l -p {port}")]);
            cmd
        });
        assert!(process_listens_on(child.id(), port));
        let _ = child.kill();
        let _ = child.wait();
    }
}
