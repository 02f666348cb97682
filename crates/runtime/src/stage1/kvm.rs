//! stage1-kvm: the pod runs in a qemu/KVM virtual machine (rkt's lkvm stage1, done with qemu).
//!
//! Host side (this supervisor): the pod's namespaces and CNI network as for stage1-coreos, each
//! container's overlay rootfs (plus volumes and /etc files) mounted below `<pod>/rootfs/<name>`
//! and shared into the guest with virtio-9p, a tap device bridged with the pod's `eth0` inside
//! the pod netns (the guest takes over the pod IP; contained network only, as the seed notes),
//! and qemu itself started inside the pod netns and the pod cgroup.
//!
//! Guest side: Debian's kernel with a small initramfs built here (static busybox, the 9p/virtio
//! modules, an `/init` script generated from the plan). `/init` mounts the shares, configures
//! eth0 with the pod IP, runs init containers in order and the others in parallel (chroot into
//! their rootfs) with the pod's restartPolicy, and writes per-run start/exit/stdout/stderr files
//! to a control share that the supervisor turns into container status and CRI logs. Stopping
//! writes `stop` to the control share: the guest TERMs the apps, waits the grace period, KILLs,
//! and powers off; qemu is killed if it does not.
//!
//! The guest channel (exec, attach, port-forward): a second virtio NIC whose host end, `tap1`
//! with [`CHANNEL_HOST`], sits in the pod's host-side netns and is bridged with nothing, and
//! whose guest end (renamed `rk0`, [`CHANNEL_GUEST`]) is moved into a network namespace of its
//! own in the guest where busybox `nc -ll` listens. So only the pod netns (root on the node)
//! reaches the listener: not the cluster network through the pod IP, not other pods (nothing is
//! bridged with that NIC), and the pod's own apps only as root in their VM, which they are anyway.
//! Each TCP connection is one session stream; its first line says what it is for, and
//! `/bin/rk-session` (the `SESSION` script) serves it:
//!
//! - `exec ID`: runs `/ctl/x/ID` (written by the host: the container's `enter_<name>` with the
//!   command) in the guest's main netns, its own session and process group, stdin and stdout on
//!   this connection, stderr on the FIFO `/run/rk/ID`; the exit code goes to `/ctl/x/ID.exit`
//!   before the connection closes.
//! - `err ID`: the command's stderr (the FIFO), until it ends.
//! - `kill ID`: SIGKILL to the command's process group (the exec caller was told to stop).
//! - `attach SLOT`: becomes the stdin of the container in slot SLOT (init containers first),
//!   relayed to the one-shot listener that starts its run (see `guest_init`); the supervisor
//!   holds one such connection per run of a container with `stdin`, behind the usual attach
//!   socket, and closes it for `stdinOnce`.
//! - `tty ID COLS ROWS`: `exec` with a terminal: busybox `telnetd -i` on this connection gives
//!   `/bin/rk-tty` (the `RK_TTY` script) a pseudo-terminal of that size, which runs `/ctl/x/ID`
//!   on it (stderr is the terminal too, as upstream) and reports the exit code the same way.
//!   The host speaks just enough telnet ([`Telnet`]).
//! - `pf PORT`: `ok` and then relayed (busybox nc) to 127.0.0.1:PORT in the guest's main
//!   netns, or `refused` when nothing listens on PORT there (so the client gets upstream's
//!   "connection refused" rather than a connection that just ends).
//!
//! Many connections at once are many sessions (nc forks per connection).
//!
//! A `tty: true` container runs on a terminal of its own the same way: its run's one-shot
//! listener (see `guest_init`) hands the supervisor's `attach SLOT` connection to
//! `/bin/rk-session`, the supervisor sends `tty run-NAME-RUN` on it, and the run's command
//! (`/ctl/x/run-NAME-RUN`, written by the guest) gets the terminal `telnetd -i` makes. The
//! supervisor reads the terminal's output from that connection into the CRI log (as stdout,
//! as upstream logs a terminal) and to attachers, and passes attachers' keystrokes and window
//! sizes to it (`AttachPoint::open_telnet`).

use super::attach::{self, AttachPoint};
use super::container::{self, Launch, Populate};
use super::telnet::Telnet;
use super::{sys, Supervisor, STOP};
use crate::logs::{LogWriter, Stream};
use crate::pod::*;
use crate::util;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, trace};

/// Why stage1-kvm is not available, or a step of booting a pod VM failed. The texts are the pod's
/// status message (and the test logs'), so each reads as the message always has.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("stage1-kvm is not available on this node: missing {}", .missing.join(", "))]
    Missing { missing: Vec<String> },
    #[error("stage1-kvm is not usable on this node: its /dev/kvm is PVM (module kvm_pvm, nested virtualization without hardware support), which boots only kernels built with CONFIG_PVM_GUEST, and {} is not one (RKTUP_KVM_KERNEL/RKTUP_KVM_MODULES choose another guest kernel; RKTUP_KVM_ACCEL=tcg uses qemu's software emulation)", .kernel.display())]
    PvmKernel { kernel: PathBuf },
    /// The (once per process and accelerator) test boot's answer.
    #[error(transparent)]
    Probe(Arc<KvmError>),
    #[error("failed to start {}: {source}", .qemu.display())]
    StartQemu { qemu: PathBuf, source: io::Error },
    #[error("stage1-kvm is not usable on this node: a test boot of {} under {accel} did not finish in {secs}s (nested KVM? RKTUP_KVM_ACCEL=tcg uses software emulation)", .kernel.display())]
    ProbeTimeout {
        kernel: PathBuf,
        accel: &'static str,
        secs: u64,
    },
    #[error("stage1-kvm is not usable on this node: the test VM did not boot: {stderr}")]
    ProbeNoBoot {
        /// qemu's exit.
        status: ExitStatus,
        /// qemu's stderr, trimmed.
        stderr: String,
    },
    #[error("failed to read {}/modules.dep: {source}", .modules.display())]
    ModulesDep { modules: PathBuf, source: io::Error },
    #[error("failed to read module {module}: {source}")]
    ReadModule { module: String, source: io::Error },
    #[error("failed to read busybox: {source}")]
    ReadBusybox { path: PathBuf, source: io::Error },
    /// A file system step whose message has always been the bare OS error.
    #[error("{source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Populating a container's rootfs (its message as `container::populate` words it).
    #[error("{msg}")]
    Populate { container: String, msg: String },
    #[error("failed to place the guest helper: {source}")]
    Helper {
        container: String,
        source: io::Error,
    },
    #[error("the CNI result has no IPv4 address")]
    NoIpv4,
    #[error("failed to run nsenter ip {args:?}: {source}")]
    NsenterSpawn {
        args: Vec<String>,
        source: io::Error,
    },
    #[error("ip {args:?} in the pod netns failed: {stderr}")]
    Ip {
        args: Vec<String>,
        status: ExitStatus,
        /// ip's stderr, trimmed.
        stderr: String,
    },
}

impl KvmError {
    fn io(step: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> KvmError {
        let path = path.into();
        move |source| KvmError::Io { step, path, source }
    }
}

/// The host end of the guest channel (`tap1` in the pod's host-side netns).
pub const CHANNEL_HOST: &str = "169.254.77.1/30";
/// The guest end of the channel, where its listener is.
pub const CHANNEL_GUEST: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 77, 2);
/// The listener's port.
pub const CHANNEL_PORT: u16 = 7;
/// The channel NIC's MAC: the guest finds the NIC by it (not by enumeration order).
const CHANNEL_MAC: &str = "52:54:00:00:77:02";

/// The guest's channel listener's handler (see the module doc); stdin and stdout are the
/// connection. `$id` comes from the host (a session id, a sanitized container name, a port).
const SESSION: &str = r#"#!/bin/sh
read -r kind id cols rows || exit 1
case $id in *[!A-Za-z0-9_-]*|"") exit 1;; esac
case $cols$rows in *[!0-9]*) exit 1;; esac
f=/run/rk/$id
case $kind in
tty)
  export RK_ID=$id RK_COLS=$cols RK_ROWS=$rows
  exec telnetd -i -K -f /dev/null -l /bin/rk-tty ;;
exec)
  [ -p $f ] || mkfifo $f 2>/dev/null
  exec 3<&0
  setsid nsenter -t 1 -n sh /ctl/x/$id <&3 3<&- 2>$f &
  p=$!
  echo $p > $f.pid
  wait $p
  echo $? > /ctl/x/$id.exit
  rm -f $f $f.pid ;;
err)
  [ -p $f ] || mkfifo $f 2>/dev/null
  exec cat $f ;;
kill)
  p=$(cat $f.pid 2>/dev/null) && kill -KILL -$p ;;
attach)
  p=$((5000 + id)); h=$(printf '%04X' $p); i=0
  while ! grep -q ":$h 00000000:0000 0A" /proc/net/tcp && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
  exec nc 127.0.0.1 $p ;;
pf)
  h=$(printf '%04X' $id)
  if nsenter -t 1 -n cat /proc/net/tcp /proc/net/tcp6 | grep -q ":$h [0:]*:0000 0A"; then
    echo ok; exec nsenter -t 1 -n nc 127.0.0.1 $id
  fi
  echo refused ;;
esac
"#;

/// The login program of a `tty` session (`telnetd` runs it on the new terminal, which it has
/// made its controlling terminal): the size first, its pid for `kill` (it leads the session's
/// process group), a marker after which the output is the command's, then the command. SIGINT
/// and SIGQUIT (^C, ^\ on the terminal) are for the command: trapped, not ignored, so the
/// command still gets them and this shell lives to report the exit code.
const RK_TTY: &str = r#"#!/bin/sh
trap : INT QUIT
[ -n "$RK_COLS$RK_ROWS" ] && stty cols $RK_COLS rows $RK_ROWS 2>/dev/null
echo $$ > /run/rk/$RK_ID.pid
echo RKTUP-TTY
nsenter -t 1 -n sh /ctl/x/$RK_ID
echo $? > /ctl/x/$RK_ID.exit
rm -f /run/rk/$RK_ID.pid
"#;

/// Started by a container's one-shot stdin listener (busybox nc in the channel's netns) with
/// the attach connection as stdin: the container's run `$RK_N`, back in the guest's main netns.
const RK_LAUNCH: &str = r#"#!/bin/sh
exec nsenter -t 1 -n sh -c '. /ctl/launch.sh; launch_$1 > /ctl/$1.$2.out 2> /ctl/$1.$2.err' sh "$RK_C" "$RK_N"
"#;

/// The name a container has in the guest's scripts and files.
fn guest_name(name: &str) -> String {
    name.replace(|ch: char| !ch.is_ascii_alphanumeric(), "_")
}

/// Ok if container `name` of a stage1-kvm pod is running (its VM reports a live run), else why
/// not, worded for the user.
pub fn container_running(plan: &PodPlan, status: &PodStatus, name: &str) -> Result<(), String> {
    if !plan.all_containers().any(|c| c.name == name) {
        return Err(format!("container {name:?} not found in pod {}", plan.uuid));
    }
    let running = status
        .containers
        .iter()
        .chain(status.init_containers.iter())
        .any(|s| s.name == name && s.state == "running");
    if running && status.state == PodState::Running {
        Ok(())
    } else {
        Err(format!("container {name:?} is not running"))
    }
}

/// One connection to the guest channel of the stage1-kvm pod in `pod_dir`, `request` (a line,
/// see the module doc) already sent. Retries for a while: right after boot the listener may
/// not be up yet. Blocks; joins the pod netns on a thread of its own.
pub fn dial(pod_dir: &Path, request: &str) -> io::Result<std::net::TcpStream> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(pod_dir.join("netns"))?;
    let line = format!("{request}\n");
    // A thread of its own: setns changes the calling thread for good.
    let dialer = std::thread::Builder::new().name("kvm-dial".into()).spawn(
        move || -> io::Result<std::net::TcpStream> {
            // SAFETY: setns on a descriptor we hold; it affects only this thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let to = std::net::SocketAddr::from((CHANNEL_GUEST, CHANNEL_PORT));
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
                    Ok(mut s) => {
                        let _ = s.set_nodelay(true);
                        s.write_all(line.as_bytes())?;
                        return Ok(s);
                    }
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        },
    )?;
    dialer
        .join()
        .map_err(|_| io::Error::other("the channel dialer panicked"))?
}

/// A command started in a container of a stage1-kvm pod (`exec` and `err` connections, or one
/// `tty` connection).
pub struct GuestExec {
    /// stdin to the command (shut down for its end), stdout from it; with a terminal, the
    /// telnet connection.
    pub io: std::net::TcpStream,
    /// stderr from the command (None with a terminal: stderr is the terminal).
    pub err: Option<std::net::TcpStream>,
    id: String,
    pod_dir: PathBuf,
}

impl GuestExec {
    /// Starts `argv` in container `name` with the container's environment and workingDir; on
    /// a terminal of `tty` (columns, rows) if given.
    pub fn start(
        pod_dir: &Path,
        name: &str,
        argv: &[String],
        tty: Option<(u16, u16)>,
    ) -> io::Result<GuestExec> {
        let id = format!("{}-{}", std::process::id(), util::now_nanos());
        let x = pod_dir.join("kvm").join("x");
        let args: Vec<String> = argv.iter().map(|a| q(a)).collect();
        std::fs::write(
            x.join(&id),
            format!(
                ". /ctl/enter.sh\nenter_{} {}\n",
                guest_name(name),
                args.join(" ")
            ),
        )?;
        let (io, err) = match tty {
            Some((cols, rows)) => (dial(pod_dir, &format!("tty {id} {cols} {rows}"))?, None),
            None => (
                dial(pod_dir, &format!("exec {id}"))?,
                Some(dial(pod_dir, &format!("err {id}"))?),
            ),
        };
        Ok(GuestExec {
            io,
            err,
            id,
            pod_dir: pod_dir.to_path_buf(),
        })
    }

    fn file(&self, ext: &str) -> PathBuf {
        self.pod_dir
            .join("kvm")
            .join("x")
            .join(format!("{}{ext}", self.id))
    }

    /// The command's exit code, once its output has ended (the guest writes it before it
    /// closes the connection; a little grace for a slow share).
    pub fn exit_code(&self) -> Option<i32> {
        for _ in 0..50 {
            if let Ok(s) = std::fs::read_to_string(self.file(".exit")) {
                if let Ok(code) = s.trim().parse() {
                    return Some(code);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// SIGKILL to the command and everything it started.
    pub fn kill(&self) {
        let _ = dial(&self.pod_dir, &format!("kill {}", self.id));
    }
}

impl Drop for GuestExec {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.file(""));
        let _ = std::fs::remove_file(self.file(".exit"));
    }
}

/// A connection to 127.0.0.1:`port` inside the guest of the stage1-kvm pod in `pod_dir`.
/// Over the channel rather than to the pod IP: upstream forwards to the pod's localhost, and
/// listeners bound to 127.0.0.1 are reachable only from inside the guest.
pub fn port_forward(pod_dir: &Path, port: u16) -> io::Result<std::net::TcpStream> {
    use std::io::Read;
    let mut s = dial(pod_dir, &format!("pf {port}"))?;
    // The guest's answer line, a byte at a time: what follows is the forwarded stream's.
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 16 {
        match s.read(&mut b)? {
            0 => break,
            _ if b[0] == b'\n' => break,
            _ => line.push(b[0]),
        }
    }
    match line.as_slice() {
        b"ok" => Ok(s),
        b"refused" => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("dial tcp4 127.0.0.1:{port}: connect: connection refused"),
        )),
        other => Err(io::Error::other(format!(
            "the VM answered {:?} to a port-forward",
            String::from_utf8_lossy(other)
        ))),
    }
}

/// Modules the guest needs (with their dependencies from modules.dep).
const GUEST_MODULES: &[&str] = &["virtio_pci", "virtio_net", "9pnet_virtio", "9p"];

/// qemu, a guest kernel with 9p modules, and /dev/kvm; or the reason they are not usable.
pub fn find_kvm() -> Result<KvmPlan, KvmError> {
    let mut missing = Vec::new();
    if !Path::new("/dev/kvm").exists() && !tcg() {
        missing.push("/dev/kvm".to_string());
    }
    let qemu = std::env::var_os("RKTUP_QEMU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/qemu-system-x86_64"));
    if !qemu.exists() {
        missing.push(format!("{} (apt install qemu-system-x86)", qemu.display()));
    }
    let kernel = guest_kernel();
    if kernel.is_none() {
        missing.push("a guest kernel with 9p modules (apt install linux-image-amd64; the -cloud kernel lacks 9p)".into());
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if busybox.is_none() {
        missing.push("/bin/busybox (apt install busybox-static)".into());
    }
    match (kernel, busybox) {
        (Some((kernel, modules)), Some(busybox)) if missing.is_empty() => {
            let k = KvmPlan {
                qemu,
                kernel,
                modules,
                busybox,
                memory_mib: 256,
            };
            pvm_check(&k.kernel)?;
            probe(&k).map(|_| k)
        }
        _ => Err(KvmError::Missing { missing }),
    }
}

/// `RKTUP_KVM_ACCEL=tcg`: qemu's software emulation instead of KVM.
fn tcg() -> bool {
    std::env::var("RKTUP_KVM_ACCEL").as_deref() == Ok("tcg")
}

/// qemu arguments for the CPU: KVM with the host's CPU minus IA32_ARCH_CAPABILITIES, which
/// nested KVM hosts often refuse to set (qemu then aborts with "failed to set MSR 0x10a").
/// `RKTUP_KVM_ACCEL=tcg` selects qemu's software emulation instead (slow; for hosts whose KVM
/// cannot boot the guest, and for tests there).
pub fn cpu_args() -> Vec<&'static str> {
    if tcg() {
        vec!["-accel", "tcg", "-cpu", "max", "-no-user-config"]
    } else {
        vec![
            "-enable-kvm",
            "-cpu",
            "host,-arch-capabilities",
            "-no-user-config",
        ]
    }
}

/// A host whose /dev/kvm is PVM (kvm_pvm, the "pagetable-based" nested virtualization some cloud
/// sandboxes such as Firecracker hosts offer without hardware virtualization) boots only guest
/// kernels built for PVM; any other kernel hangs in its decompressor. Said up front instead of
/// after a 30 s test boot.
fn pvm_check(kernel: &Path) -> Result<(), KvmError> {
    if tcg() || !Path::new("/sys/module/kvm_pvm").exists() {
        return Ok(());
    }
    let config = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .map(|v| kernel.with_file_name(format!("config-{v}")));
    let pvm_guest = config
        .and_then(|c| std::fs::read_to_string(c).ok())
        .is_some_and(|c| c.lines().any(|l| l == "CONFIG_PVM_GUEST=y"));
    if pvm_guest {
        return Ok(());
    }
    Err(KvmError::PvmKernel {
        kernel: kernel.to_path_buf(),
    })
}

/// Boot the guest kernel once with a trivial initramfs (once per process): a host whose KVM
/// cannot boot it (e.g. some nested setups hang at early boot) refuses kvm pods with a reason
/// instead of hanging them.
pub fn probe(k: &KvmPlan) -> Result<(), KvmError> {
    // One answer per accelerator: a caller may fall back to TCG after KVM failed.
    type Answer = std::sync::OnceLock<Result<(), Arc<KvmError>>>;
    static KVM: Answer = std::sync::OnceLock::new();
    static TCG: Answer = std::sync::OnceLock::new();
    let cell = if tcg() { &TCG } else { &KVM };
    cell.get_or_init(|| probe_once(k).map_err(Arc::new))
        .clone()
        .map_err(KvmError::Probe)
}

fn probe_once(k: &KvmPlan) -> Result<(), KvmError> {
    let dir = std::env::temp_dir().join(format!(
        "rktup-kvm-probe-{}-{}",
        std::process::id(),
        util::now_nanos()
    ));
    std::fs::create_dir_all(&dir).map_err(KvmError::io("create the probe directory", &dir))?;
    let res = (|| {
        let bb = std::fs::read(&k.busybox).map_err(KvmError::io("read busybox", &k.busybox))?;
        let mut c = Cpio::new();
        for d in ["bin", "dev"] {
            c.dir(d);
        }
        c.file("bin/busybox", 0o755, &bb);
        c.file(
            "init",
            0o755,
            b"#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox echo RKTUP-PROBE-OK > /dev/ttyS0
/bin/busybox poweroff -f
",
        );
        let initrd = dir.join("initrd");
        std::fs::write(&initrd, c.finish())
            .map_err(KvmError::io("write the probe initramfs", &initrd))?;
        let console = dir.join("console.log");
        let mut child = std::process::Command::new(&k.qemu)
            .args(cpu_args())
            .args([
                "-m",
                "256",
                "-nodefaults",
                "-display",
                "none",
                "-no-reboot",
                "-serial",
            ])
            .arg(format!("file:{}", console.display()))
            .arg("-kernel")
            .arg(&k.kernel)
            .arg("-initrd")
            .arg(dir.join("initrd"))
            .args(["-append", "console=ttyS0 panic=-1 quiet"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|source| KvmError::StartQemu {
                qemu: k.qemu.clone(),
                source,
            })?;
        let (accel, secs) = if tcg() { ("TCG", 90) } else { ("KVM", 30) };
        let deadline = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(KvmError::ProbeTimeout {
                    kernel: k.kernel.clone(),
                    accel,
                    secs,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = std::fs::read_to_string(&console).unwrap_or_default();
        if out.contains("RKTUP-PROBE-OK") {
            Ok(())
        } else {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            Err(KvmError::ProbeNoBoot {
                status,
                stderr: err.trim().to_string(),
            })
        }
    })();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

fn guest_kernel() -> Option<(PathBuf, PathBuf)> {
    if let (Some(k), Some(m)) = (
        std::env::var_os("RKTUP_KVM_KERNEL"),
        std::env::var_os("RKTUP_KVM_MODULES"),
    ) {
        return Some((k.into(), m.into()));
    }
    let mut ks: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    ks.sort();
    ks.into_iter().rev().find_map(|k| {
        let v = k
            .file_name()?
            .to_str()?
            .strip_prefix("vmlinuz-")?
            .to_string();
        let m = PathBuf::from("/lib/modules").join(&v);
        m.join("kernel/fs/9p/9p.ko").exists().then_some((k, m))
    })
}

/// Module files to load, dependencies first, from modules.dep.
fn module_closure(modules: &Path) -> Result<Vec<String>, KvmError> {
    let dep = std::fs::read_to_string(modules.join("modules.dep")).map_err(|source| {
        KvmError::ModulesDep {
            modules: modules.to_path_buf(),
            source,
        }
    })?;
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in dep.lines() {
        if let Some((m, d)) = l.split_once(':') {
            deps.insert(
                m.to_string(),
                d.split_whitespace().map(str::to_string).collect(),
            );
        }
    }
    let mut order: Vec<String> = Vec::new();
    for want in GUEST_MODULES {
        let Some(path) = deps
            .keys()
            .find(|k| {
                let f = k.rsplit('/').next().unwrap_or("");
                f == format!("{want}.ko") || f.starts_with(&format!("{want}.ko."))
            })
            .cloned()
        else {
            continue; // built in
        };
        // modules.dep lists indirect deps after direct ones: load from the end.
        for d in deps
            .get(&path)
            .into_iter()
            .flatten()
            .rev()
            .chain(std::iter::once(&path))
        {
            if !order.contains(d) {
                order.push(d.clone());
            }
        }
    }
    Ok(order)
}

/// A newc cpio archive (the initramfs format, Documentation/driver-api/early-userspace).
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn new() -> Cpio {
        Cpio {
            out: Vec::new(),
            ino: 1,
        }
    }
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        let namez = format!("{name}\0");
        let hdr =
            format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.ino, mode, 0, 0, 1, 0, data.len(), 0, 0, 0, 0, namez.len(), 0
        );
        self.ino += 1;
        self.out.extend_from_slice(hdr.as_bytes());
        self.out.extend_from_slice(namez.as_bytes());
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
        self.out.extend_from_slice(data);
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }
    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, data);
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// A guest initramfs (newc cpio): the static `busybox` at /bin/busybox, the guest modules
/// (virtio, 9p) of `kvm.modules` with their dependencies, the directories /bin /dev /proc /sys
/// /lib/modules plus `extra_dirs`, and `/init` as written by `init` from the shell lines that load
/// the modules. Pods use it (below); so does the test that boots a pure cgroup v2 guest.
pub fn initramfs(
    kvm: &KvmPlan,
    busybox: &[u8],
    extra_dirs: &[&str],
    init: impl FnOnce(&str) -> String,
) -> Result<Vec<u8>, KvmError> {
    let mods = module_closure(&kvm.modules)?;
    let mut cpio = Cpio::new();
    for d in ["bin", "dev", "proc", "sys", "lib", "lib/modules"]
        .iter()
        .chain(extra_dirs)
    {
        cpio.dir(d);
    }
    cpio.file("bin/busybox", 0o755, busybox);
    let mut insmods = String::new();
    for (i, m) in mods.iter().enumerate() {
        let b = std::fs::read(kvm.modules.join(m)).map_err(|source| KvmError::ReadModule {
            module: m.clone(),
            source,
        })?;
        let name = format!("lib/modules/{i:02}.ko");
        cpio.file(&name, 0o644, &b);
        insmods.push_str(&format!("insmod /{name} 2>/dev/null\n"));
    }
    // Twice: a module whose dependency came later in the list loads on the second pass.
    let insmods = format!("{insmods}{insmods}");
    cpio.file("init", 0o755, init(&insmods).as_bytes());
    Ok(cpio.finish())
}

/// Single-quote for the guest's sh.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

struct VmNet {
    cidr: String,
    gateway: Option<String>,
}

/// Writes the guest helper (busybox) to `/.rktup/busybox` and creates the guest's /proc, /sys
/// and /dev mount points, all resolved within the container's rootfs.
fn put_helper(rootfs: &Path, busybox: &[u8]) -> std::io::Result<()> {
    use crate::confine::{create_file_at, Root, Scope};
    use std::io::Write;
    let root = Root::open(rootfs)?;
    for d in ["/proc", "/sys", "/dev"] {
        root.mkdir_all(Path::new(d), Scope::InRoot, 0o755)?;
    }
    let dir = root.mkdir_all(Path::new("/.rktup"), Scope::InRoot, 0o755)?;
    crate::confine::remove_all_at(&dir, c"busybox")?;
    let mut f = std::fs::File::from(create_file_at(&dir, c"busybox", 0o755)?);
    f.write_all(busybox)?;
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o755))
}

fn vm_net(res: &serde_json::Value) -> Option<VmNet> {
    let (cidr, gw) = if let Some(ip) = res.get("ips").and_then(|v| v.as_array()).and_then(|a| {
        a.iter().find(|i| {
            i.get("address")
                .and_then(|x| x.as_str())
                .is_some_and(|x| !x.contains(':'))
        })
    }) {
        (
            ip.get("address")?.as_str()?.to_string(),
            ip.get("gateway")
                .and_then(|g| g.as_str())
                .map(str::to_string),
        )
    } else {
        let ip4 = res.get("ip4")?;
        (
            ip4.get("ip")?.as_str()?.to_string(),
            ip4.get("gateway")
                .and_then(|g| g.as_str())
                .map(str::to_string),
        )
    };
    Some(VmNet { cidr, gateway: gw })
}

fn nsenter_ip(netns: &Path, args: &[&str]) -> Result<(), KvmError> {
    let owned = || args.iter().map(|a| a.to_string()).collect();
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg("ip")
        .args(args)
        .output()
        .map_err(|source| KvmError::NsenterSpawn {
            args: owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(KvmError::Ip {
            args: owned(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Per container run, what the supervisor tails from the control share.
struct Tail {
    run: u32,
    log: Option<LogWriter>,
    off: [u64; 2],
    /// The run's attach socket (containers with stdin or tty), its stdin the channel's
    /// `attach` connection.
    attach: Option<AttachPoint>,
    /// A `tty` run's terminal: the connection's output, read here.
    term: Option<(std::net::TcpStream, Telnet)>,
}

impl Tail {
    /// Moves what the terminal wrote to the log and the attachers; with `to_end`, everything
    /// up to the connection's end (the run has ended: the guest closes it first).
    fn pump_term(&mut self, to_end: bool) {
        use std::io::Read;
        let Some((conn, telnet)) = &mut self.term else {
            return;
        };
        if to_end {
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        }
        let mut buf = [0u8; 16 * 1024];
        let ended = loop {
            match conn.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => {
                    let out = telnet.output(&buf[..n]);
                    if out.is_empty() {
                        continue;
                    }
                    if let Some(l) = &mut self.log {
                        l.write(Stream::Stdout, &out);
                    }
                    if let Some(a) = &mut self.attach {
                        a.broadcast(attach::STDOUT, &out);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !to_end => break false,
                Err(_) => break true,
            }
        };
        if ended {
            self.term = None;
        }
    }
}

impl Supervisor {
    pub(super) fn run_kvm(&mut self) -> Result<(), super::Stage1Error> {
        self.save();
        let kvm = match self.plan.kvm.clone() {
            Some(k) => k,
            None => {
                return Err(self.fail_pod(
                    "Stage1Unavailable",
                    "stage1-kvm: no qemu/kernel recorded in the plan".into(),
                ))
            }
        };
        if let Err(m) = self.prepare() {
            return Err(self.fail_pod("PodSetupFailed", m));
        }
        let Some(net) = self.plan.network.clone() else {
            return Err(self.fail_pod(
                "PodSetupFailed",
                "stage1-kvm needs the contained network".into(),
            ));
        };
        if let Err(m) = self.setup_network(&net) {
            return Err(self.fail_pod("NetworkSetupFailed", m));
        }
        self.write_etc();
        let vm = match self.boot_vm(&kvm) {
            Ok(pid) => pid,
            Err(e) => return Err(self.fail_pod("VMSetupFailed", e.to_string())),
        };
        self.status.state = PodState::Running;
        self.status.phase = "Running".into();
        self.status.started_at = Some(util::now_secs());
        self.save();
        trace!("qemu pid {vm} runs the pod VM");
        let code = self.watch_vm(vm);
        trace!("VM exited ({code})");
        Ok(())
    }

    fn boot_vm(&mut self, kvm: &KvmPlan) -> Result<i32, KvmError> {
        let ctl = self.dir.join("kvm");
        std::fs::create_dir_all(&ctl).map_err(KvmError::io("create the control share", &ctl))?;
        let helper_src = std::fs::read(&kvm.busybox).map_err(|source| KvmError::ReadBusybox {
            path: kvm.busybox.clone(),
            source,
        })?;
        // Each container's rootfs on the host, shared into the guest.
        let plan = self.plan.clone();
        for c in plan.all_containers() {
            let rootfs = self.dir.join("rootfs").join(&c.name);
            let ov = self.dir.join("overlay").join(&c.name);
            let (upper, work) = (ov.join("upper"), ov.join("work"));
            for d in [&rootfs, &upper, &work] {
                std::fs::create_dir_all(d)
                    .map_err(KvmError::io("create the rootfs directories", d))?;
            }
            container::mount_rootfs(c, &rootfs, &upper, &work)
                .map_err(KvmError::io("mount the rootfs", &rootfs))?;
            sys::mount(None, &rootfs, None, libc::MS_PRIVATE, None)
                .map_err(KvmError::io("make the rootfs mount private", &rootfs))?;
            let launch = Launch {
                plan: &plan,
                c,
                pod_dir: &self.dir,
                rootfs: rootfs.clone(),
                upper,
                work,
                join_ns: vec![],
                cgroup_procs: vec![],
                env: vec![],
                argv: vec![],
                stdin_r: -1,
                stdout_w: -1,
                stderr_w: -1,
                pid_w: -1,
                err_w: -1,
            };
            container::populate(&launch, Populate::Kvm).map_err(|msg| KvmError::Populate {
                container: c.name.clone(),
                msg,
            })?;
            // The guest-side helper lives in the container's writable layer, not in the image;
            // written within the rootfs (the image may hold a `.rktup` link to the host).
            put_helper(&rootfs, &helper_src).map_err(|source| KvmError::Helper {
                container: c.name.clone(),
                source,
            })?;
        }
        // Network: bridge the pod's eth0 with a tap for the guest; the guest owns the pod IP.
        let res = self.net_result.clone().unwrap_or_default();
        let vn = vm_net(&res).ok_or(KvmError::NoIpv4)?;
        let ns = self.netns_file.clone();
        nsenter_ip(&ns, &["addr", "flush", "dev", "eth0"])?;
        nsenter_ip(&ns, &["link", "add", "kbr0", "type", "bridge"])?;
        nsenter_ip(&ns, &["link", "set", "eth0", "master", "kbr0"])?;
        nsenter_ip(&ns, &["tuntap", "add", "dev", "tap0", "mode", "tap"])?;
        nsenter_ip(&ns, &["link", "set", "tap0", "master", "kbr0"])?;
        nsenter_ip(&ns, &["link", "set", "tap0", "up"])?;
        nsenter_ip(&ns, &["link", "set", "kbr0", "up"])?;
        // The guest channel's host end: a tap of its own, bridged with nothing.
        nsenter_ip(&ns, &["tuntap", "add", "dev", "tap1", "mode", "tap"])?;
        nsenter_ip(&ns, &["addr", "add", CHANNEL_HOST, "dev", "tap1"])?;
        nsenter_ip(&ns, &["link", "set", "tap1", "up"])?;
        let x = ctl.join("x");
        std::fs::create_dir_all(&x).map_err(KvmError::io("create the exec directory", &x))?;
        let enter = ctl.join("enter.sh");
        std::fs::write(&enter, self.guest_enter())
            .map_err(KvmError::io("write enter.sh", &enter))?;
        let session = ctl.join("session");
        std::fs::write(&session, SESSION).map_err(KvmError::io("write session", &session))?;
        let rk_tty = ctl.join("rk-tty");
        std::fs::write(&rk_tty, RK_TTY).map_err(KvmError::io("write rk-tty", &rk_tty))?;
        let rk_launch = ctl.join("rk-launch");
        std::fs::write(&rk_launch, RK_LAUNCH)
            .map_err(KvmError::io("write rk-launch", &rk_launch))?;
        let launch = ctl.join("launch.sh");
        std::fs::write(&launch, self.guest_launchers())
            .map_err(KvmError::io("write launch.sh", &launch))?;
        let initramfs = initramfs(kvm, &helper_src, &["pod", "ctl"], |insmods| {
            self.guest_init(&vn, insmods)
        })?;
        let initrd = ctl.join("initramfs.cpio");
        std::fs::write(&initrd, initramfs).map_err(KvmError::io("write the initramfs", &initrd))?;
        let mem = {
            let sum: u64 = self
                .plan
                .containers
                .iter()
                .filter_map(|c| c.limits.memory_bytes)
                .sum::<u64>()
                >> 20;
            (sum + 96).max(kvm.memory_mib)
        };
        let mac = {
            let h = util::hex(&sha2::Digest::finalize(sha2::Digest::chain_update(
                sha2::Sha256::default(),
                self.plan.uuid.as_bytes(),
            )));
            format!("52:54:00:{}:{}:{}", &h[0..2], &h[2..4], &h[4..6])
        };
        let mut args: Vec<String> = cpu_args().iter().map(|a| a.to_string()).collect();
        args.extend([
            "-m".to_string(),
            format!("{mem}"),
            "-smp".into(),
            "1".into(),
            "-nodefaults".into(),
            "-nographic".into(),
            "-no-reboot".into(),
            "-serial".into(),
            format!("file:{}", ctl.join("console.log").display()),
            "-kernel".into(),
            kvm.kernel.display().to_string(),
            "-initrd".into(),
            initrd.display().to_string(),
            "-append".into(),
            "console=ttyS0 panic=-1 quiet".into(),
            "-fsdev".into(),
            format!(
                "local,id=pod,path={},security_model=passthrough",
                self.dir.join("rootfs").display()
            ),
            "-device".into(),
            "virtio-9p-pci,fsdev=pod,mount_tag=pod".into(),
            "-fsdev".into(),
            format!(
                "local,id=ctl,path={},security_model=passthrough",
                ctl.display()
            ),
            "-device".into(),
            "virtio-9p-pci,fsdev=ctl,mount_tag=ctl".into(),
            "-netdev".into(),
            "tap,id=n0,ifname=tap0,script=no,downscript=no".into(),
            "-device".into(),
            format!("virtio-net-pci,netdev=n0,mac={mac}"),
            "-netdev".into(),
            "tap,id=n1,ifname=tap1,script=no,downscript=no".into(),
            "-device".into(),
            format!("virtio-net-pci,netdev=n1,mac={CHANNEL_MAC}"),
        ]);
        trace!("qemu {args:?}");
        let qlog_path = ctl.join("qemu.log");
        let qlog = std::fs::File::create(&qlog_path)
            .map_err(KvmError::io("create qemu.log", &qlog_path))?;
        use std::os::unix::io::IntoRawFd;
        let qfd = qlog.into_raw_fd();
        let cg = self.pod_cgroup_procs();
        let pid = sys::fork().map_err(KvmError::io("fork qemu", &ctl))?;
        if pid == 0 {
            // SAFETY: dup2 onto stdio in the child.
            unsafe {
                libc::dup2(qfd, 1);
                libc::dup2(qfd, 2);
            }
            for p in &cg {
                let _ = std::fs::write(p, "0");
            }
            if let Err(e) = sys::setns_path(&ns, libc::CLONE_NEWNET) {
                error!("failed to enter the pod netns: {e}");
                sys::exit_now(127);
            }
            sys::reset_signals();
            sys::set_pdeathsig(libc::SIGKILL);
            let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
            let exe = c(&kvm.qemu.display().to_string());
            let mut argv: Vec<std::ffi::CString> = vec![exe.clone()];
            argv.extend(args.iter().map(|a| c(a)));
            let mut p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
            p.push(std::ptr::null());
            // SAFETY: NULL-terminated argv of valid C strings.
            unsafe { libc::execv(exe.as_ptr(), p.as_ptr()) };
            error!("failed to exec qemu: {}", std::io::Error::last_os_error());
            sys::exit_now(127);
        }
        sys::close(qfd);
        Ok(pid)
    }

    fn pod_cgroup_procs(&self) -> Vec<PathBuf> {
        super::cgroup_procs_files(&self.plan.cgroup_path())
    }

    fn guest_init(&self, vn: &VmNet, insmods: &str) -> String {
        let p = &self.plan;
        let mut s =
            String::from("#!/bin/busybox sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n");
        s.push_str(
            "mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n",
        );
        s.push_str(insmods);
        s.push_str("mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none pod /pod || poweroff -f\n");
        s.push_str(
            "mount -t 9p -o trans=virtio,version=9p2000.L,cache=none ctl /ctl || poweroff -f\n",
        );
        s.push_str(&format!("hostname {}\n", q(&p.hostname)));
        // The channel (module doc): its NIC found by MAC, moved into the listener's own netns
        // (retried until it has left ours: the move may come before the unshare).
        s.push_str(&format!(
            r#"mkdir -p /run/rk
for f in session rk-tty rk-launch; do cp /ctl/$f /bin/rk-${{f#rk-}}; done; chmod 755 /bin/rk-*
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
for n in /sys/class/net/*; do [ "$(cat $n/address)" = {CHANNEL_MAC} ] && ip link set ${{n##*/}} name rk0; done
unshare -n sh -c 'until ip link show rk0 >/dev/null 2>&1; do sleep 0.1; done; ip link set lo up; ip addr add {CHANNEL_GUEST}/30 dev rk0; ip link set rk0 up; exec nc -ll -p {CHANNEL_PORT} {CHANNEL_GUEST} -e /bin/rk-session' </dev/null >/dev/null 2>&1 &
l=$!
i=0; while ip link show rk0 >/dev/null 2>&1 && [ $i -lt 100 ]; do ip link set rk0 netns $l; sleep 0.1; i=$((i+1)); done
"#
        ));
        s.push_str("ip link set lo up\nip link set eth0 up\n");
        s.push_str(&format!("ip addr add {} dev eth0\n", q(&vn.cidr)));
        if let Some(gw) = &vn.gateway {
            s.push_str(&format!("ip route add default via {}\n", q(gw)));
        }
        s.push_str("echo booted > /ctl/booted\n");
        let policy = match p.restart_policy {
            RestartPolicy::Always => "Always",
            RestartPolicy::OnFailure => "OnFailure",
            RestartPolicy::Never => "Never",
        };
        let backoff = (p.backoff_base_ms / 1000).max(1);
        // stdin ($3 `attach`): the container's stdin is a connection. A one-shot busybox nc
        // listens on 127.0.0.1:5000+slot ($4) in the channel's netns (no port of the pod's),
        // and the supervisor's `attach SLOT` connection, relayed there, starts the container
        // (/bin/rk-launch) with that connection as stdin: its end (stdinOnce) is the
        // container's EOF. (A FIFO between the two lost input under TCG.) A terminal ($3
        // `tty`): the same listener hands the connection to /bin/rk-session, whose `tty`
        // session runs the container on a terminal and leaves its exit code beside its script.
        s.push_str(&format!(
            r#"run() {{
  c=$1; policy=$2; n=0; delay={backoff}
  r=/pod/$c
  mkdir -p $r/proc $r/sys $r/dev
  mount -t proc proc $r/proc; mount -t sysfs sys $r/sys; mount -o rbind /dev $r/dev
  while :; do
    date +%s > /ctl/$c.$n.start
    case $3 in
    none) ( launch_$c > /ctl/$c.$n.out 2> /ctl/$c.$n.err ); code=$?;;
    attach) RK_C=$c RK_N=$n nsenter -t $l -n nc -l -p $((5000 + $4)) 127.0.0.1 -e /bin/rk-launch; code=$?;;
    tty)
      x=/ctl/x/run-$c-$n
      printf '. /ctl/launch.sh\nlaunch_%s\n' $c > $x
      nsenter -t $l -n nc -l -p $((5000 + $4)) 127.0.0.1 -e /bin/rk-session
      code=$(cat $x.exit 2>/dev/null); code=${{code:-137}}; rm -f $x $x.exit;;
    esac
    echo $code > /ctl/$c.$n.exit
    [ -e /ctl/stop ] && return $code
    case $policy in Never) return $code;; OnFailure) [ $code = 0 ] && return 0;; esac
    sleep $delay; delay=$((delay*2)); [ $delay -gt 300 ] && delay=300
    n=$((n+1))
  done
}}
"#
        ));
        // The launch_<name> functions (`guest_launchers`), shared with /bin/rk-launch.
        s.push_str(". /ctl/launch.sh\n");
        let grace = p.grace_seconds;
        s.push_str(&format!(
            "( while [ ! -e /ctl/stop ]; do sleep 0.2; done; kill -TERM -1; sleep {grace}; kill -KILL -1; sync; poweroff -f ) &\n"
        ));
        let init_policy = if p.restart_policy == RestartPolicy::Never {
            "Never"
        } else {
            "OnFailure"
        };
        let stdin = |c: &ContainerPlan| match (c.tty, c.stdin) {
            (true, _) => "tty",
            (false, true) => "attach",
            (false, false) => "none",
        };
        let mut slot = 0;
        for c in &p.init_containers {
            s.push_str(&format!(
                "run {} {init_policy} {} {slot} || {{ echo init-failed > /ctl/done; sync; poweroff -f; }}\n",
                guest_name(&c.name),
                stdin(c)
            ));
            slot += 1;
        }
        let mut pids = Vec::new();
        for (i, c) in p.containers.iter().enumerate() {
            s.push_str(&format!(
                "run {} {policy} {} {slot} &\np{i}=$!\n",
                guest_name(&c.name),
                stdin(c)
            ));
            slot += 1;
            pids.push(format!("$p{i}"));
        }
        s.push_str(&format!(
            "wait {}\necho done > /ctl/done\nsync\npoweroff -f\n",
            pids.join(" ")
        ));
        s
    }

    /// `/ctl/launch.sh`: per container, `launch_<name>` execs the container's command in its
    /// root with its environment and workingDir (sourced by /init and by /bin/rk-launch).
    fn guest_launchers(&self) -> String {
        let mut s = String::new();
        for c in self.plan.all_containers() {
            let env = self.env_for(c);
            let pairs: Vec<(String, String)> = env
                .iter()
                .filter_map(|e| {
                    e.split_once('=')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                })
                .collect();
            let argv: Vec<String> = c
                .argv
                .iter()
                .map(|a| q(&crate::manifest::expand(a, &pairs)))
                .collect();
            let envq: Vec<String> = env.iter().map(|e| q(e)).collect();
            s.push_str(&format!(
                "launch_{name}() {{ exec chroot /pod/{name} /.rktup/busybox env -i {env} /.rktup/busybox sh -c 'cd \"$1\" || exit 126; shift; exec \"$@\"' sh {wd} {argv}; }}\n",
                name = c.name.replace(|ch: char| !ch.is_ascii_alphanumeric(), "_"),
                env = envq.join(" "),
                wd = q(&c.working_dir),
                argv = argv.join(" ")
            ));
        }
        s
    }

    /// `/ctl/enter.sh`: per container, `enter_<name> CMD...` runs a command the way the
    /// container runs (its root, environment and workingDir), for the channel's `exec`.
    fn guest_enter(&self) -> String {
        let mut s = String::new();
        for c in self.plan.all_containers() {
            let envq: Vec<String> = self.env_for(c).iter().map(|e| q(e)).collect();
            s.push_str(&format!(
                "enter_{name}() {{ exec chroot /pod/{name} /.rktup/busybox env -i {env} /.rktup/busybox sh -c 'cd \"$1\" || exit 126; shift; exec \"$@\"' sh {wd} \"$@\"; }}\n",
                name = guest_name(&c.name),
                env = envq.join(" "),
                wd = q(&c.working_dir),
            ));
        }
        s
    }

    /// Follow the control share until qemu exits; returns its exit code.
    fn watch_vm(&mut self, vm: i32) -> i32 {
        let ctl = self.dir.join("kvm");
        let mut tails: Vec<Tail> = self
            .slots
            .iter()
            .map(|_| Tail {
                run: 0,
                log: None,
                off: [0, 0],
                attach: None,
                term: None,
            })
            .collect();
        let mut stop_sent: Option<Instant> = None;
        let mut exit_code = None;
        while exit_code.is_none() {
            if STOP.load(Ordering::SeqCst) && stop_sent.is_none() {
                trace!("stop requested: signalling the guest");
                let _ = std::fs::write(ctl.join("stop"), b"stop");
                stop_sent = Some(Instant::now());
                self.status.state = PodState::Stopping;
                self.dirty = true;
            }
            if let Some(t) = stop_sent {
                if t.elapsed() > Duration::from_secs(self.plan.grace_seconds + 5) {
                    trace!("guest did not power off in time: SIGKILL qemu");
                    sys::kill(vm, libc::SIGKILL);
                }
            }
            for (i, t) in tails.iter_mut().enumerate() {
                t.pump_term(false);
                self.follow_container(i, &ctl, t);
                if let Some(a) = &mut t.attach {
                    a.service();
                }
            }
            if self.dirty {
                self.save();
            }
            let mut st = 0;
            // SAFETY: reaping our own child.
            let r = unsafe { libc::waitpid(vm, &mut st, libc::WNOHANG) };
            if r == vm {
                exit_code = Some(sys::decode_wait(st));
            } else {
                // Attachers and terminals wake the loop at once (keystrokes echo without
                // waiting); the control share is read at least every 100 ms.
                let mut fds = Vec::new();
                for t in &tails {
                    if let Some(a) = &t.attach {
                        a.poll_fds(&mut fds);
                    }
                    if let Some((conn, _)) = &t.term {
                        fds.push(libc::pollfd {
                            fd: std::os::fd::AsRawFd::as_raw_fd(conn),
                            events: libc::POLLIN,
                            revents: 0,
                        });
                    }
                }
                // SAFETY: a valid array of pollfds for the call's duration.
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
            }
        }
        for (i, t) in tails.iter_mut().enumerate() {
            t.pump_term(true);
            self.follow_container(i, &ctl, t);
            if let Some(l) = &mut t.log {
                l.flush_partial();
            }
            t.attach = None;
            let s = &mut self.slots[i];
            if s.status.state == "running" {
                s.status.state = "terminated".into();
                s.status.exit_code = Some(137);
                s.status.reason = Some("Error".into());
                s.status.finished_at = Some(util::now_secs());
            }
        }
        let n_init = self.plan.init_containers.len();
        let ok = self.slots[n_init..]
            .iter()
            .all(|s| s.status.exit_code == Some(0));
        if stop_sent.is_none() {
            self.status.phase = if ok { "Succeeded" } else { "Failed" }.into();
        }
        self.save();
        exit_code.unwrap_or(0)
    }

    fn follow_container(&mut self, i: usize, ctl: &Path, t: &mut Tail) {
        let name = self.slots[i]
            .plan
            .name
            .replace(|ch: char| !ch.is_ascii_alphanumeric(), "_");
        loop {
            let base = ctl.join(format!("{name}.{}", t.run));
            let started = base.with_extension(format!("{}.start", t.run));
            let started = if started.exists() {
                started
            } else {
                PathBuf::from(format!("{}.start", base.display()))
            };
            if !started.exists() {
                return;
            }
            if t.log.is_none() {
                t.log = LogWriter::open(
                    self.dir
                        .join("logs")
                        .join(&self.slots[i].plan.name)
                        .join(format!("{}.log", t.run)),
                    self.plan.log_max_size,
                    self.plan.log_max_files,
                )
                .ok();
                t.off = [0, 0];
                let s = &mut self.slots[i];
                if let Some(ended) = s.status.ended_run() {
                    s.status.last = Some(ended);
                }
                s.status.state = "running".into();
                s.status.restart_count = t.run;
                s.status.started_at = Some(util::now_secs());
                s.status.exit_code = None;
                s.status.reason = None;
                s.status.message = None;
                self.dirty = true;
                let c = &self.slots[i].plan;
                if c.stdin || c.tty {
                    (t.attach, t.term) = self.open_attach(i, t.run);
                }
            }
            for (k, (ext, stream)) in [("out", Stream::Stdout), ("err", Stream::Stderr)]
                .into_iter()
                .enumerate()
            {
                let p = PathBuf::from(format!("{}.{ext}", base.display()));
                if let Ok(b) = std::fs::read(&p) {
                    let off = t.off[k] as usize;
                    if b.len() > off {
                        if let Some(l) = &mut t.log {
                            l.write(stream, &b[off..]);
                        }
                        if let Some(a) = &mut t.attach {
                            let kind = match stream {
                                Stream::Stdout => attach::STDOUT,
                                Stream::Stderr => attach::STDERR,
                            };
                            a.broadcast(kind, &b[off..]);
                        }
                        t.off[k] = b.len() as u64;
                    }
                }
            }
            let exit = PathBuf::from(format!("{}.exit", base.display()));
            let Ok(code) = std::fs::read_to_string(&exit) else {
                return;
            };
            let Ok(code) = code.trim().parse::<i32>() else {
                return; // being written
            };
            t.pump_term(true);
            if let Some(l) = &mut t.log {
                l.flush_partial();
            }
            let s = &mut self.slots[i];
            s.status.state = "terminated".into();
            s.status.exit_code = Some(code);
            s.status.finished_at = Some(util::now_secs());
            s.status.reason = Some(if code == 0 { "Completed" } else { "Error" }.into());
            // The guest runs it again after its back-off (`guest_init`'s run loop, the same
            // rule and delays): waiting, as kubelet says it.
            if !STOP.load(Ordering::SeqCst)
                && super::runs_again(self.plan.restart_policy, s.init, code)
            {
                let base = (self.plan.backoff_base_ms / 1000).max(1);
                let wait = base.checked_shl(t.run).unwrap_or(u64::MAX).min(300);
                super::back_off(&mut s.status, &self.plan, wait * 1000);
            }
            self.dirty = true;
            t.run += 1;
            t.log = None;
            t.attach = None;
            t.term = None;
        }
    }

    /// The attach socket of slot `i`'s new run `run`, its input carried to the container in
    /// the guest over an `attach` connection; for a `tty` container also that connection's
    /// terminal output. None (logged) if the channel cannot be reached.
    fn open_attach(
        &self,
        i: usize,
        run: u32,
    ) -> (Option<AttachPoint>, Option<(std::net::TcpStream, Telnet)>) {
        use std::os::fd::IntoRawFd;
        let c = &self.slots[i].plan;
        let request = if c.tty {
            format!("attach {i}\ntty run-{}-{run}", guest_name(&c.name))
        } else {
            format!("attach {i}")
        };
        let conn = match dial(&self.dir, &request) {
            Ok(conn) => conn,
            Err(e) => {
                error!(container = %c.name, "no attach channel into the guest: {e}");
                return (None, None);
            }
        };
        trace!(container = %c.name, "attach channel open for run {run}");
        let path = attach::socket_path(&self.dir, i);
        let opened = if c.tty {
            conn.try_clone().and_then(|reader| {
                reader.set_nonblocking(true)?;
                AttachPoint::open_telnet(&path, conn.into_raw_fd(), c.stdin, c.stdin_once)
                    .map(|a| (a, Some((reader, Telnet::new()))))
            })
        } else {
            AttachPoint::open(&path, Some(conn.into_raw_fd()), None, c.stdin_once)
                .map(|a| (a, None))
        };
        match opened {
            Ok((a, term)) => (Some(a), term),
            Err(e) => {
                error!(container = %c.name, "failed to open the attach socket: {e}");
                (None, None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_are_the_status_messages() {
        let missing = KvmError::Missing {
            missing: vec![
                "/dev/kvm".into(),
                "/bin/busybox (apt install busybox-static)".into(),
            ],
        };
        assert_eq!(
            missing.to_string(),
            "stage1-kvm is not available on this node: missing /dev/kvm, /bin/busybox (apt install busybox-static)"
        );
        let timeout = KvmError::ProbeTimeout {
            kernel: "/boot/vmlinuz-6".into(),
            accel: "KVM",
            secs: 30,
        };
        let text = "stage1-kvm is not usable on this node: a test boot of /boot/vmlinuz-6 under KVM did not finish in 30s (nested KVM? RKTUP_KVM_ACCEL=tcg uses software emulation)";
        assert_eq!(timeout.to_string(), text);
        assert_eq!(KvmError::Probe(Arc::new(timeout)).to_string(), text);
        use std::os::unix::process::ExitStatusExt;
        let ip = KvmError::Ip {
            args: vec!["link".into(), "set".into(), "tap0".into(), "up".into()],
            status: ExitStatus::from_raw(1 << 8),
            stderr: "Cannot find device \"tap0\"".into(),
        };
        assert_eq!(
            ip.to_string(),
            "ip [\"link\", \"set\", \"tap0\", \"up\"] in the pod netns failed: Cannot find device \"tap0\""
        );
        let io =
            KvmError::io("write the initramfs", "/x")(io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(
            io.to_string(),
            io::Error::from_raw_os_error(libc::ENOSPC).to_string()
        );
        assert_eq!(
            KvmError::NoIpv4.to_string(),
            "the CNI result has no IPv4 address"
        );
    }
}
