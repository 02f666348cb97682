//! Issue 18, "no host prerequisites": `rktup local up` on a machine without `ip`, `iptables`,
//! `nft`, `unshare`, `nsenter` or any CNI plugin. Every rktup command of the test runs in one
//! mount namespace (held by a `sleep` started into it) where those files are hidden behind
//! empty, non-executable files and /usr/lib/cni and /opt/cni/bin behind empty directories;
//! anything rktup tried to execute there would fail. The cluster comes up Ready, a pod from the
//! test kit's registry serves HTTP to this machine and to another pod, and `local down` leaves
//! no network namespace, bridge, nftables table, mount or process.
//!
//! The harness itself (kubectl, the registry, `nft list tables`) runs outside, in this
//! machine's own mount namespace.

use rktup_testkit::local::LocalCluster as Cluster;
use rktup_testkit::{wait_for, Images, Registry};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Binaries a fresh Debian machine does not have (or rktup must not need), hidden wherever
/// they live here.
const HIDDEN_BINARIES: &[&str] = &[
    "ip",
    "iptables",
    "iptables-legacy",
    "iptables-nft",
    "iptables-save",
    "iptables-restore",
    "iptables-legacy-save",
    "iptables-legacy-restore",
    "iptables-nft-save",
    "iptables-nft-restore",
    "ip6tables",
    "ip6tables-legacy",
    "ip6tables-nft",
    "xtables-legacy-multi",
    "xtables-nft-multi",
    "nft",
    "bridge",
    "tc",
    "unshare",
    "nsenter",
    "modprobe",
];
const HIDDEN_DIRS: &[&str] = &["/usr/lib/cni", "/opt/cni/bin"];

/// A mount namespace where the tools are hidden, kept alive by a `sleep` in it.
struct Fresh {
    holder: Child,
    empty_dir: tempfile::TempDir,
    hidden: Vec<PathBuf>,
}

impl Fresh {
    fn new() -> Fresh {
        let empty_dir = tempfile::tempdir().expect("tempdir");
        let empty_file = empty_dir.path().join("not-installed");
        std::fs::write(&empty_file, b"").unwrap();
        let empty = empty_dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let mut hidden = Vec::new();
        let mut binds: Vec<(PathBuf, PathBuf)> = Vec::new();
        for dir in [
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
            "/usr/local/sbin",
            "/usr/local/bin",
        ] {
            // merged /usr: /sbin and /bin are symlinks to what is hidden already
            if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
                continue;
            }
            for b in HIDDEN_BINARIES {
                let p = Path::new(dir).join(b);
                if std::fs::symlink_metadata(&p).is_ok() {
                    // a symlink is hidden at its target (a bind follows it)
                    hidden.push(p.clone());
                    binds.push((empty_file.clone(), p));
                }
            }
        }
        for d in HIDDEN_DIRS {
            if Path::new(d).is_dir() {
                hidden.push(PathBuf::from(d));
                binds.push((empty.clone(), PathBuf::from(d)));
            }
        }
        let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let binds: Vec<(std::ffi::CString, std::ffi::CString)> =
            binds.iter().map(|(s, d)| (c(s), c(d))).collect();
        let mut cmd = Command::new("sleep");
        cmd.arg("3600").stdin(Stdio::null());
        // SAFETY: only async-signal-safe calls (unshare, mount) between fork and exec, on
        // strings made before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Nothing mounted here reaches the machine's own namespace.
                if libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                for (s, d) in &binds {
                    if libc::mount(
                        s.as_ptr(),
                        d.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let holder = cmd.spawn().expect("start the fresh-machine namespace");
        // The namespace is ready once the holder runs `sleep` (pre_exec, mounts included, is
        // done before the exec replaces the command line).
        let holder_pid = holder.id();
        wait_for(
            "the fresh-machine namespace",
            Duration::from_secs(10),
            || {
                std::fs::read(format!("/proc/{holder_pid}/cmdline"))
                    .ok()
                    .filter(|c| c.starts_with(b"sleep\0"))
            },
        );
        Fresh {
            holder,
            empty_dir,
            hidden,
        }
    }

    /// `/proc/<holder>/root`: the namespace's view of the file system.
    fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.holder.id()))
    }

    /// A command that runs in the namespace.
    fn command(&self, program: &Path) -> Command {
        in_mount_namespace_of(self.holder.id(), program)
    }
}

/// A command that runs `program` in the mount namespace of process `pid`.
fn in_mount_namespace_of(pid: u32, program: &Path) -> Command {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).expect("open the namespace");
    let mut cmd = Command::new(program);
    // SAFETY: setns in the single-threaded child between fork and exec; the file is
    // moved into the closure and stays open until then.
    unsafe {
        cmd.pre_exec(move || {
            use std::os::fd::AsRawFd;
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = &self.empty_dir;
    }
}

/// The body of `GET <url>` (http://ip:port/ only), None when it cannot be fetched.
fn http_get(url: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = url
        .strip_prefix("http://")?
        .trim_end_matches('/')
        .parse()
        .ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

fn running_ip(c: &Cluster, pod: &str) -> Option<String> {
    let p = c.json(&["get", "pod", pod]);
    assert_ne!(p["status"]["phase"], "Failed", "pod {pod} failed: {p}");
    (p["status"]["phase"] == "Running")
        .then(|| p["status"]["podIP"].as_str().map(String::from))
        .flatten()
        .filter(|ip| !ip.is_empty())
}

#[test]
fn local_up_on_a_machine_without_ip_iptables_nft_or_cni_plugins() {
    if !rktup_testkit::can_run_as_root("local_fresh_machine", "`rktup local up`") {
        return;
    }
    let images = Images::build();
    let registry = Registry::start();
    let image = registry.push(&images.layout, "busybox", "fresh:1.0");
    let fresh = Fresh::new();
    let holder = fresh.holder.id();
    let c = rktup_testkit::local_cluster!("fresh")
        .nodes(2)
        .insecure_registry(&registry.addr)
        .launcher(move |program| in_mount_namespace_of(holder, program))
        .mount_namespace_of(holder)
        .build();
    assert!(
        fresh.hidden.len() >= 3,
        "nothing to hide on this machine ({:?}): the test would prove nothing",
        fresh.hidden
    );
    // What rktup sees in its namespace: the tools cannot run, the plugin dirs are empty.
    for p in &fresh.hidden {
        if Path::new(p).is_dir() {
            let seen = fresh.root().join(p.strip_prefix("/").unwrap());
            let left: Vec<_> = std::fs::read_dir(&seen).unwrap().flatten().collect();
            assert!(
                left.is_empty(),
                "{} is not empty in the fresh namespace",
                p.display()
            );
        } else {
            let ran = fresh.command(p).arg("--version").output();
            assert!(
                ran.is_err(),
                "{} still runs in the fresh namespace",
                p.display()
            );
        }
    }

    c.up();
    let node_names = c.ready_nodes(2);
    let bridge = c.record()["bridge"].as_str().unwrap().to_string();

    // A web pod with a hostPort on one node, a client pod on the other.
    let web = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"web"}},"spec":{{"nodeName":"{}","containers":[{{"name":"httpd","image":"{image}","command":["sh","-c","mkdir -p /www && echo fresh-web > /www/index.html && exec httpd -f -p 8080 -h /www"],"ports":[{{"containerPort":8080,"hostPort":18080}}]}}]}}}}"#,
        node_names[0]
    );
    let client = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"client"}},"spec":{{"nodeName":"{}","containers":[{{"name":"sh","image":"{image}","command":["sleep","3600"]}}]}}}}"#,
        node_names[1]
    );
    for (f, body) in [("web.json", &web), ("client.json", &client)] {
        let p = c.write(f, body);
        c.kubectl_ok(&["apply", "-f", &p]);
    }
    let web_ip = wait_for("web Running", Duration::from_secs(90), || {
        running_ip(&c, "web")
    });
    wait_for("client Running", Duration::from_secs(90), || {
        running_ip(&c, "client")
    });

    // This machine reaches the pod (routed through its node), and its hostPort on the node.
    let get = |url: String| {
        wait_for(&format!("GET {url}"), Duration::from_secs(30), || {
            http_get(&url)
        })
    };
    assert_eq!(get(format!("http://{web_ip}:8080/")).trim(), "fresh-web");
    let web_node_ip = c.node_ip(&node_names[0]);
    assert_eq!(
        get(format!("http://{web_node_ip}:18080/")).trim(),
        "fresh-web",
        "hostPort on the node's address"
    );
    // Another pod, on the other node, reaches it (no `-T`: this busybox's wget crashes on it).
    let from_pod = c.kubectl_ok(&[
        "exec",
        "client",
        "--",
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{web_ip}:8080/"),
    ]);
    assert_eq!(from_pod.trim(), "fresh-web");

    // Down: nothing of the cluster is left, in the fresh namespace or on the machine.
    c.down();
    // Processes, namespaces (in the fresh mount namespace too), mounts (in both), state.
    c.assert_nothing_left();
    assert!(
        !Path::new("/sys/class/net").join(&bridge).exists(),
        "bridge {bridge} left"
    );
    // The machine's own nftables: no table of ours (the nodes' tables went with their
    // namespaces).
    let tables = Command::new("nft").args(["list", "tables"]).output();
    if let Ok(t) = tables {
        let t = String::from_utf8_lossy(&t.stdout);
        assert!(
            !t.contains("rktup-kubenet") && !t.contains("rktup-node"),
            "nftables tables left on this machine: {t}"
        );
    }
}
