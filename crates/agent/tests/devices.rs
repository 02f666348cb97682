//! Issue 12's attack through the real agent: a root process in an ordinary unprivileged pod
//! keeps CAP_MKNOD; without a device cgroup it could `mknod` the host's disk and read or write
//! it. The "host disk" here is a loop device backed by a file with canary content; its node is
//! made in a hostPath directory the pods mount. The unprivileged pod must be refused every way
//! in (mknod of sda's numbers and of the loop device's, open of the node for reading and for
//! writing) while /dev/null, zero, urandom and ptmx keep working; a privileged pod (with the
//! agent's `--allow-privileged`) keeps the host's devices and reads the canary, as upstream.
//! Run as root after `cargo build --bin rktup`.

use rktup_testkit::agent::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const CANARY: &[u8] = b"RKTUP-CANARY-host-disk-contents\n";

/// Whether the test can run (`rktup_testkit::can_run`: under CI=true a missing need fails it).
fn can_run(test: &str) -> bool {
    let losetup = ["/usr/sbin/losetup", "/sbin/losetup", "/usr/bin/losetup"]
        .iter()
        .any(|p| Path::new(p).exists());
    let missing = if !rktup_testkit::is_root() {
        Some("root")
    } else if !losetup {
        Some("losetup (util-linux)")
    } else {
        None
    };
    rktup_testkit::can_run(test, missing)
}

/// A loop device over `backing`, detached on drop (also when the test fails).
struct Loop {
    dev: PathBuf,
}

impl Loop {
    fn attach(backing: &Path) -> Loop {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(backing)
            .output()
            .expect("run losetup");
        assert!(
            out.status.success(),
            "losetup --find --show: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop {
            dev: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
        }
    }

    /// (major, minor)
    fn numbers(&self) -> (u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&self.dev)
            .expect("stat loop device")
            .rdev();
        (libc::major(rdev), libc::minor(rdev))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn mknod_block(p: &Path, (major, minor): (u32, u32)) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).expect("path");
    // SAFETY: valid C string.
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFBLK | 0o666,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// The container's output from its CRI log file (the text after `<time> <stream> <P|F> `).
fn container_output(node: &Node, uuid: &str, container: &str) -> String {
    let raw = std::fs::read_to_string(
        node.root
            .join(format!("pods/{uuid}/logs/{container}/0.log")),
    )
    .unwrap_or_default();
    raw.lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn pod(name: &str, img: &str, hostdev: &Path, privileged: bool, script: &str) -> String {
    let script: String = script.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: tests
spec:
  restartPolicy: Never
  volumes:
  - name: hostdev
    hostPath: {{path: {hostdev}}}
  containers:
  - name: c
    image: {img}
    securityContext: {{privileged: {privileged}}}
    volumeMounts: [{{name: hostdev, mountPath: /hostdev}}]
    command: ["sh", "-c"]
    args:
    - |
{script}"#,
        hostdev = hostdev.display()
    )
}

#[test]
fn unprivileged_pod_cannot_mknod_or_open_the_host_disk_privileged_can() {
    let test = "unprivileged_pod_cannot_mknod_or_open_the_host_disk_privileged_can";
    if !can_run(test) {
        return;
    }
    let node = Node::new(&["--allow-privileged"]);
    let (bridge, _) = node.bridge_net("0.4.0");
    // The "host disk": a loop device over a file full of canaries.
    let backing = node.dir.path().join("disk.img");
    let content: Vec<u8> = CANARY.iter().copied().cycle().take(1 << 20).collect();
    std::fs::write(&backing, &content).expect("write backing file");
    let disk = Loop::attach(&backing);
    let (major, minor) = disk.numbers();
    let hostdev = node.dir.path().join("hostdev");
    std::fs::create_dir_all(&hostdev).expect("mkdir");
    mknod_block(&hostdev.join("disk"), (major, minor));

    // Each attack prints "<name>: ALLOWED" or "<name>: refused: <error>"; the exit code counts
    // the attacks that worked. busybox's applet is called directly: the image links no mknod.
    let attacks = format!(
        r#"try() {{ n=$1; shift; if "$@" > /tmp/out 2> /tmp/err; then echo "$n: ALLOWED"; bad=$((bad+1)); else echo "$n: refused: $(cat /tmp/err)"; fi; }}
bad=0
try mknod-sda busybox mknod /x b 8 0
try mknod-loop busybox mknod /tmp/loop b {major} {minor}
try mknod-mem busybox mknod /tmp/mem c 1 1
try read-disk head -c 31 /hostdev/disk
try write-disk sh -c 'printf PWNED | dd of=/hostdev/disk conv=notrunc'
echo zero=$(head -c 5 /dev/zero | wc -c)
echo urandom=$(head -c 7 /dev/urandom | wc -c)
echo x > /dev/null && echo null=ok
(exec 3<> /dev/ptmx) && echo ptmx=ok
busybox mknod /tmp/null c 1 3 && echo mknod-null=ok
exit $bad"#
    );
    node.put(
        "unprivileged.yaml",
        &pod("attacker", &node.busybox, &hostdev, false, &attacks),
    );
    node.put(
        "privileged.yaml",
        &pod(
            "admin",
            &node.busybox,
            &hostdev,
            true,
            "head -c 31 /hostdev/disk > /tmp/d; r=$?; cat /tmp/d; echo read=$r",
        ),
    );
    let p = node.wait_pod("attacker", "exited", 90, |p| {
        p["status"]["state"] == "exited"
    });
    let uuid = uuid_of(&p);
    let out = container_output(&node, &uuid, "c");
    let c = &p["status"]["containers"][0];
    println!("attacker's output:\n{out}");
    for attack in [
        "mknod-sda",
        "mknod-loop",
        "mknod-mem",
        "read-disk",
        "write-disk",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{attack}: ")))
            .unwrap_or_else(|| panic!("no {attack} line in: {out}\n{p:#}"));
        assert!(
            line.starts_with(&format!("{attack}: refused: "))
                && line.contains("Operation not permitted"),
            "{attack} must be refused with EPERM: {line}"
        );
    }
    for ok in ["zero=5", "urandom=7", "null=ok", "ptmx=ok", "mknod-null=ok"] {
        assert!(out.lines().any(|l| l == ok), "{ok} missing: {out}");
    }
    assert_eq!(c["exit_code"], 0, "attacks that worked: {out}\n{p:#}");
    // The disk is untouched.
    assert!(
        std::fs::read(&backing).expect("read backing") == content,
        "the backing file of the host disk changed"
    );

    // A privileged pod keeps the host's devices (upstream behaviour).
    let a = node.wait_pod("admin", "exited", 90, |p| p["status"]["state"] == "exited");
    let aout = container_output(&node, &uuid_of(&a), "c");
    assert!(
        aout.contains(std::str::from_utf8(&CANARY[..31]).unwrap()) && aout.contains("read=0"),
        "the privileged pod reads the disk: {aout}\n{a:#}"
    );
    assert_eq!(a["status"]["containers"][0]["exit_code"], 0, "{a:#}");

    let uuids = [uuid, uuid_of(&a)];
    node.delete("unprivileged.yaml");
    node.delete("privileged.yaml");
    node.wait_no_pods(60);
    node.assert_clean(&uuids, Some(&bridge));
    drop(node);
    drop(disk);
}
