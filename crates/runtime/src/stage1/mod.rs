//! The per-pod stage1 supervisor (`rktup stage1 <pod dir>`), re-executed by the agent as its own
//! session so it outlives the agent (rkt's pods were systemd units independent of the kubelet).
//! It is single-threaded on purpose: it forks container processes directly, and a poll loop
//! with a short timeout drives logs, reaping, restarts with back-off and stop requests.

pub(crate) mod attach;
pub(crate) mod container;
pub(crate) mod enter;
pub mod kvm;
pub(crate) mod seccomp;
pub(crate) mod sys;
pub mod telnet;

use crate::cgroups::{create_cgroup_manager, CgroupManager, Limits};
use crate::cni;
use crate::logs::{LogWriter, Stream};
use crate::manifest::{expand, field_value};
use crate::pod::*;
use crate::util;
use container::Launch;
use std::os::unix::io::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{trace, warn};

#[derive(Debug, thiserror::Error)]
pub(crate) enum Stage1Error {
    #[error(transparent)]
    PodFile(#[from] PodFileError),
    #[error("failed to {step}: {msg}")]
    Step { step: &'static str, msg: String },
}

// The supervisor's lines go to its own log (`<pod dir>/stage1.log`, its stderr) through the
// subscriber `rktup stage1` installs with the plan's verbosity: every runtime step at `trace!`
// (`--v` 4 or more, the seed's "rkt detail"), what went wrong at `warn!`.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_handlers() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

struct Running {
    /// The intermediate child (what we waitpid on).
    pid: i32,
    /// The container's first process in the host pid namespace (what we signal).
    init_pid: i32,
    out: RawFd,
    err: RawFd,
    log: LogWriter,
    oom_before: u64,
    started: Instant,
    /// The attach endpoint (containers with stdin or a terminal).
    attach: Option<attach::AttachPoint>,
}

struct Slot {
    plan: ContainerPlan,
    init: bool,
    status: ContainerStatus,
    running: Option<Running>,
    next_start: Option<Instant>,
    backoff_ms: u64,
    /// Will not run again.
    done: bool,
    cgroup: Box<dyn CgroupManager>,
    cgroup_rel: String,
}

pub(crate) struct Supervisor {
    plan: PodPlan,
    dir: PathBuf,
    status: PodStatus,
    slots: Vec<Slot>,
    infra_pid: Option<i32>,
    net_result: Option<serde_json::Value>,
    netns_file: PathBuf,
    pod_cgroup: Box<dyn CgroupManager>,
    dirty: bool,
}

pub(crate) fn run_supervisor(pod_dir: &Path) -> Result<(), Stage1Error> {
    let plan = read_plan(pod_dir)?;
    install_handlers();
    let kvm = plan.stage1 == Stage1Flavor::Kvm;
    let mut s = Supervisor::new(plan, pod_dir);
    let r = if kvm { s.run_kvm() } else { s.run() };
    s.teardown();
    r
}

impl Supervisor {
    fn new(plan: PodPlan, dir: &Path) -> Supervisor {
        let mut status = PodStatus::new(&plan, PodState::Preparing);
        status.supervisor_pid = std::process::id() as i32;
        status.supervisor_start = util::process_start_time(status.supervisor_pid).unwrap_or(0);
        let mut slots = Vec::new();
        for (init, c) in plan
            .init_containers
            .iter()
            .map(|c| (true, c))
            .chain(plan.containers.iter().map(|c| (false, c)))
        {
            let rel = format!("{}/{}", plan.cgroup_path(), c.name);
            let st = if init {
                status.init_containers.iter().find(|s| s.name == c.name)
            } else {
                status.containers.iter().find(|s| s.name == c.name)
            };
            slots.push(Slot {
                plan: c.clone(),
                init,
                status: st.cloned().unwrap_or_default(),
                running: None,
                next_start: None,
                backoff_ms: plan.backoff_base_ms,
                done: false,
                cgroup: create_cgroup_manager(&rel),
                cgroup_rel: rel,
            });
        }
        Supervisor {
            pod_cgroup: create_cgroup_manager(&plan.cgroup_path()),
            netns_file: dir.join("netns"),
            plan,
            dir: dir.to_path_buf(),
            status,
            slots,
            infra_pid: None,
            net_result: None,
            dirty: true,
        }
    }

    fn save(&mut self) {
        self.status.init_containers = self
            .slots
            .iter()
            .filter(|s| s.init)
            .map(|s| s.status.clone())
            .collect();
        self.status.containers = self
            .slots
            .iter()
            .filter(|s| !s.init)
            .map(|s| s.status.clone())
            .collect();
        if let Err(e) = write_status(&self.dir, &self.status) {
            warn!("failed to write status: {e}");
        }
        self.dirty = false;
    }

    fn fail_pod(&mut self, reason: &str, msg: String) -> Stage1Error {
        warn!(reason, "{msg}");
        self.status.reason = Some(reason.into());
        self.status.message = Some(msg.clone());
        self.status.phase = "Failed".into();
        Stage1Error::Step {
            step: "prepare the pod",
            msg,
        }
    }

    fn run(&mut self) -> Result<(), Stage1Error> {
        self.save();
        trace!(
            pod = %self.plan.uuid,
            "preparing pod {}/{} stage1 {:?}",
            self.plan.namespace,
            self.plan.name,
            self.plan.stage1
        );
        if let Err(m) = self.prepare() {
            return Err(self.fail_pod("PodSetupFailed", m));
        }
        if let Some(net) = self.plan.network.clone() {
            if let Err(m) = self.setup_network(&net) {
                return Err(self.fail_pod("NetworkSetupFailed", m));
            }
        }
        self.write_etc();
        self.status.state = PodState::Running;
        self.status.phase = "Running".into();
        self.status.started_at = Some(util::now_secs());
        self.save();
        trace!("pod running, ip {:?}", self.status.pod_ip);
        self.main_loop();
        Ok(())
    }

    fn prepare(&mut self) -> Result<(), String> {
        for d in ["etc", "volumes", "rootfs", "overlay", "logs"] {
            std::fs::create_dir_all(self.dir.join(d))
                .map_err(|e| format!("failed to create {d}: {e}"))?;
        }
        for v in &self.plan.volumes {
            if let VolumeSource::EmptyDir { memory, size_limit } = &v.source {
                let p = self.dir.join("volumes").join(&v.name);
                std::fs::create_dir_all(&p)
                    .map_err(|e| format!("failed to create {}: {e}", p.display()))?;
                if *memory {
                    let opts = match size_limit {
                        Some(s) => format!("mode=1777,size={s}"),
                        None => "mode=1777".into(),
                    };
                    sys::mount(
                        Some("tmpfs"),
                        &p,
                        Some("tmpfs"),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        Some(&opts),
                    )
                    .map_err(|e| format!("failed to mount emptyDir {}: {e}", v.name))?;
                }
            }
        }
        self.pod_cgroup
            .create(&Limits::default())
            .map_err(|e| e.to_string())?;
        self.write_etc();
        if self.plan.stage1 == Stage1Flavor::Fly {
            return Ok(());
        }
        // The infra process holds the pod's shared namespaces (net unless hostNetwork, uts, ipc).
        let mut flags = libc::CLONE_NEWIPC;
        if !self.plan.host_network {
            flags |= libc::CLONE_NEWNET | libc::CLONE_NEWUTS;
        }
        let (r, w) = sys::pipe().map_err(|e| e.to_string())?;
        let pid = sys::fork().map_err(|e| format!("failed to fork the pod infra process: {e}"))?;
        if pid == 0 {
            sys::close(r);
            sys::set_pdeathsig(libc::SIGKILL);
            sys::reset_signals();
            let ok = sys::unshare(flags).is_ok()
                && (self.plan.host_network
                    || (sys::sethostname(&self.plan.hostname).is_ok()
                        && sys::loopback_up().is_ok()));
            sys::write_all(w, if ok { b"1" } else { b"0" });
            sys::close(w);
            if !ok {
                sys::exit_now(1);
            }
            loop {
                // SAFETY: pause(2) just sleeps until a signal.
                unsafe { libc::pause() };
            }
        }
        sys::close(w);
        let ok = sys::read_to_end(r);
        sys::close(r);
        self.infra_pid = Some(pid);
        self.status.infra_pid = Some(pid);
        if ok != b"1" {
            return Err("failed to create the pod namespaces".into());
        }
        if !self.plan.host_network {
            // Keep the netns reachable by path for CNI and for DEL even if the infra dies.
            std::fs::write(&self.netns_file, b"").map_err(|e| e.to_string())?;
            sys::bind(Path::new(&format!("/proc/{pid}/ns/net")), &self.netns_file)
                .map_err(|e| format!("failed to pin the pod netns: {e}"))?;
        }
        trace!("infra pid {pid} holds the pod namespaces");
        Ok(())
    }

    fn runtime_config(&self, net: &NetworkPlan) -> serde_json::Value {
        serde_json::json!({ "portMappings": net.port_mappings })
    }

    fn setup_network(&mut self, net: &NetworkPlan) -> Result<(), String> {
        let netns = self.netns_file.display().to_string();
        let rc = self.runtime_config(net);
        let att = cni::Attachment {
            container_id: &self.plan.uuid,
            netns: &netns,
            ifname: "eth0",
            runtime_config: &rc,
            plugin_dirs: &net.plugin_dirs,
        };
        // Loopback is brought up by the infra process itself (what the CNI loopback plugin
        // does, without an extra exec per pod).
        trace!(
            "CNI ADD network {} from {}",
            net.network.name,
            net.network.file.display()
        );
        // Mark that DEL is owed before ADD: a half-done ADD still needs its DEL.
        std::fs::write(self.dir.join("net-added"), b"").map_err(|e| e.to_string())?;
        let res = cni::add(&net.network, &att).map_err(|e| e.to_string())?;
        let _ = std::fs::write(
            self.dir.join("net-result.json"),
            serde_json::to_vec_pretty(&res).unwrap_or_default(),
        );
        // With --v >= 4, CHECK right after ADD verifies the attachment (it doubles the plugin
        // runs, so not by default); a failing CHECK is reported but not fatal, because some
        // plugins' CHECK is stricter than their ADD (portmap 1.1 checks an ipv6 chain it never
        // created on IPv4-only pods).
        if !tracing::enabled!(tracing::Level::TRACE) {
        } else if let Err(e) = cni::check(&net.network, &att, &res) {
            warn!("CNI CHECK after ADD reported: {e}");
        } else {
            trace!("CNI CHECK passed");
        }
        self.status.pod_ip = cni::result_ip(&res);
        self.status.pod_ips = cni::result_ips(&res);
        self.net_result = Some(res);
        Ok(())
    }

    /// The pod's /etc/hosts (with its own hostname and IP: better than the seed's caveat),
    /// /etc/hostname and /etc/resolv.conf.
    fn write_etc(&self) {
        let etc = self.dir.join("etc");
        let _ = std::fs::create_dir_all(&etc);
        let node_hosts = || std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let (hosts, resolv) = match &self.plan.etc {
            Some(e) => (
                e.hosts_file(&self.status.ips(), node_hosts),
                e.resolv_conf.clone(),
            ),
            // A plan from before rktup planned these files: the host's.
            None => (
                node_hosts(),
                std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            ),
        };
        let hostname = &self.plan.hostname;
        let _ = util::write_atomic(&etc.join("hostname"), format!("{hostname}\n").as_bytes());
        // Bind mounts pin the inode: rewrite in place once containers may have it mounted.
        let _ = std::fs::write(etc.join("hosts"), hosts);
        let _ = std::fs::write(etc.join("resolv.conf"), resolv);
    }

    fn env_for(&self, c: &ContainerPlan) -> Vec<String> {
        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("HOSTNAME".into(), self.plan.hostname.clone()),
        ];
        if c.tty {
            // As containerd's and CRI-O's terminals (the image's or the pod's TERM wins).
            env.push(("TERM".into(), "xterm".into()));
        }
        for e in &c.env {
            let v = match &e.field_ref {
                Some(f) => field_value(&self.plan, &self.status.ips(), f).unwrap_or_default(),
                None => expand(&e.value, &env),
            };
            env.retain(|(k, _)| k != &e.name);
            env.push((e.name.clone(), v));
        }
        env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    fn start(&mut self, i: usize) {
        let restart = self.slots[i].status.restart_count
            + u32::from(self.slots[i].status.started_at.is_some());
        let mut c = self.slots[i].plan.clone();
        let env = self.env_for(&c);
        let envpairs: Vec<(String, String)> = env
            .iter()
            .filter_map(|e| {
                e.split_once('=')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        let argv: Vec<String> = c.argv.iter().map(|a| expand(a, &envpairs)).collect();
        // subPaths are prepared (created, and refused when they leave their volume) before
        // anything of the container exists, as kubelet's makeMounts does.
        if let Err(m) = self.prepare_sub_paths(&mut c, &envpairs) {
            return self.start_failed(i, "CreateContainerConfigError", m);
        }
        let rootfs = self.dir.join("rootfs").join(&c.name);
        let ov = self.dir.join("overlay").join(&c.name);
        let upper = ov.join("upper");
        let work = ov.join("work");
        // A restarted container gets a fresh writable layer, like a new container would.
        let _ = std::fs::remove_dir_all(&ov);
        let prep = (|| -> Result<LogWriter, String> {
            for d in [&rootfs, &upper, &work] {
                std::fs::create_dir_all(d)
                    .map_err(|e| format!("failed to create {}: {e}", d.display()))?;
            }
            self.slots[i]
                .cgroup
                .create(&c.limits)
                .map_err(|e| e.to_string())?;
            // Unprivileged containers may open and mknod only the default devices; fly ones
            // too (they share the host's /dev, so the cgroup is the only guard). stage1-kvm
            // never comes here: qemu needs /dev/kvm and /dev/net/tun, and kvm pods are
            // privileged by rule. A failure fails the start: never run unconfined silently.
            if !c.privileged {
                self.slots[i]
                    .cgroup
                    .restrict_devices(crate::devices::DEFAULT_ALLOWED)
                    .map_err(|e| e.to_string())?;
            }
            LogWriter::open(
                self.dir
                    .join("logs")
                    .join(&c.name)
                    .join(format!("{restart}.log")),
                self.plan.log_max_size,
                self.plan.log_max_files,
            )
            .map_err(|e| format!("failed to open the log: {e}"))
        })();
        let mut log = match prep {
            Ok(l) => l,
            Err(m) => return self.start_failed(i, "CreateContainerError", m),
        };
        let mut join_ns = Vec::new();
        if let Some(pid) = self.infra_pid {
            if !self.plan.host_network {
                join_ns.push((self.netns_file.clone(), libc::CLONE_NEWNET));
                join_ns.push((
                    PathBuf::from(format!("/proc/{pid}/ns/uts")),
                    libc::CLONE_NEWUTS,
                ));
            }
            join_ns.push((
                PathBuf::from(format!("/proc/{pid}/ns/ipc")),
                libc::CLONE_NEWIPC,
            ));
        }
        let cgroup_procs = cgroup_procs_files(&self.slots[i].cgroup_rel);
        let pipes = (|| -> std::io::Result<_> {
            Ok((sys::pipe()?, sys::pipe()?, sys::pipe()?, sys::pipe()?))
        })();
        let ((mut out_r, mut out_w), (mut err_r, mut err_w), (pid_r, pid_w), (e_r, e_w)) =
            match pipes {
                Ok(p) => p,
                Err(e) => {
                    return self.start_failed(
                        i,
                        "CreateContainerError",
                        format!("failed to create pipes: {e}"),
                    )
                }
            };
        // stdin for attachers: a pipe, or a terminal that is also stdout and stderr.
        let stdio = attach_stdio(&c);
        let (stdin_r, stdin_w, tty_master) = match stdio {
            Ok(Stdio::Null) => (-1, None, None),
            Ok(Stdio::Pipe { r, w }) => (r, Some(w), None),
            Ok(Stdio::Tty { master, slave }) => {
                for fd in [out_r, out_w, err_r, err_w] {
                    sys::close(fd);
                }
                out_r = master;
                out_w = slave;
                err_r = -1;
                err_w = sys::dup_cloexec(slave).unwrap_or(-1);
                let input = if c.stdin {
                    sys::dup_cloexec(master).ok()
                } else {
                    None
                };
                (
                    sys::dup_cloexec(slave).unwrap_or(-1),
                    input,
                    sys::dup_cloexec(master).ok(),
                )
            }
            Err(e) => {
                for fd in [out_r, out_w, err_r, err_w, pid_r, pid_w, e_r, e_w] {
                    sys::close(fd);
                }
                return self.start_failed(
                    i,
                    "CreateContainerError",
                    format!("failed to create the container's stdin: {e}"),
                );
            }
        };
        let launch = Launch {
            plan: &self.plan,
            c: &c,
            pod_dir: &self.dir,
            rootfs: rootfs.clone(),
            upper,
            work,
            join_ns,
            cgroup_procs,
            env,
            argv,
            stdin_r,
            stdout_w: out_w,
            stderr_w: err_w,
            pid_w,
            err_w: e_w,
        };
        if self.plan.stage1 == Stage1Flavor::Fly {
            // fly: mounts live in the host mount namespace; teardown unmounts them.
            let r = container::mount_rootfs(&c, &rootfs, &launch.upper, &launch.work)
                .map_err(|e| e.to_string())
                .and_then(|_| {
                    sys::mount(None, &rootfs, None, libc::MS_PRIVATE, None)
                        .map_err(|e| e.to_string())
                })
                .and_then(|_| container::populate(&launch, container::Populate::Fly));
            if let Err(m) = r {
                for fd in [out_r, out_w, err_r, err_w, pid_r, pid_w, e_r, e_w, stdin_r] {
                    sys::close(fd);
                }
                for fd in [stdin_w, tty_master].into_iter().flatten() {
                    sys::close(fd);
                }
                let _ = sys::umount_detach(&rootfs);
                return self.start_failed(i, "CreateContainerError", m);
            }
            let fs = std::fs::read_to_string(self.dir.join("etc/resolv.conf")).unwrap_or_default();
            let _ = fs;
        }
        let oom_before = self.slots[i].cgroup.oom_kill_count();
        trace!(
            container = %c.name,
            restart,
            "starting container: {:?}",
            launch.argv
        );
        let pid = match sys::fork() {
            Ok(p) => p,
            Err(e) => {
                return self.start_failed(i, "CreateContainerError", format!("failed to fork: {e}"))
            }
        };
        if pid == 0 {
            // The intermediate never execs: it must not hold the supervisor's ends open.
            for fd in [out_r, err_r, pid_r, e_r] {
                sys::close(fd);
            }
            for fd in [stdin_w, tty_master].into_iter().flatten() {
                sys::close(fd);
            }
            container::intermediate(&launch);
        }
        for fd in [out_w, err_w, pid_w, e_w, stdin_r] {
            sys::close(fd);
        }
        let attach = if stdin_w.is_some() || tty_master.is_some() {
            let path = attach::socket_path(&self.dir, i);
            match attach::AttachPoint::open(&path, stdin_w, tty_master, c.stdin_once) {
                Ok(a) => Some(a),
                Err(e) => {
                    warn!(container = %c.name, "no attach socket: {e}");
                    None
                }
            }
        } else {
            None
        };
        let pidb = sys::read_to_end(pid_r);
        sys::close(pid_r);
        let errb = sys::read_to_end(e_r);
        sys::close(e_r);
        sys::set_nonblock(out_r);
        if err_r >= 0 {
            sys::set_nonblock(err_r);
        }
        let init_pid = pidb
            .get(..4)
            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        let now = util::now_secs();
        let slot = &mut self.slots[i];
        if let Some(ended) = slot.status.ended_run() {
            slot.status.last = Some(ended);
        }
        if slot.status.started_at.is_some() {
            slot.status.restart_count += 1;
        }
        slot.status.started_at = Some(now);
        slot.status.finished_at = None;
        slot.status.exit_code = None;
        slot.status.pid = Some(init_pid);
        slot.status.state = "running".into();
        slot.status.reason = None;
        slot.status.message = None;
        if !errb.is_empty() {
            let m = String::from_utf8_lossy(&errb).trim().to_string();
            log.note(&m);
            slot.status.message = Some(m);
        }
        slot.next_start = None;
        slot.running = Some(Running {
            pid,
            init_pid,
            out: out_r,
            err: err_r,
            log,
            oom_before,
            started: Instant::now(),
            attach,
        });
        self.dirty = true;
    }

    /// Expands each `subPathExpr` with the container's environment (kubelet's rules: the result
    /// must be relative and free of `..`), then opens every subPath beneath its volume, creating
    /// it when missing. A subPath leaving its volume through a symlink is refused here, with
    /// kubelet's words; the container init opens it the same way again (no window to swap it).
    fn prepare_sub_paths(
        &self,
        c: &mut ContainerPlan,
        env: &[(String, String)],
    ) -> Result<(), String> {
        for m in &mut c.mounts {
            if let Some(e) = m.sub_path_expr.take() {
                let sp = expand(&e, env);
                let bad = if Path::new(&sp).is_absolute() {
                    Some("must not be an absolute path")
                } else if sp.split('/').any(|p| p == "..") {
                    Some("must not contain '..'")
                } else {
                    None
                };
                if let Some(why) = bad {
                    return Err(format!(
                        "failed to prepare subPath for volumeMount {:?} of container {:?}: \
                         subPathExpr {e:?} expands to {sp:?}, which {why}",
                        m.volume, c.name
                    ));
                }
                m.sub_path = Some(sp).filter(|s| !s.is_empty());
            }
            if m.sub_path.is_some() {
                container::mount_source(&self.dir, &self.plan, m)
                    .map_err(|err| err.message(m, &c.name))?;
            }
        }
        Ok(())
    }

    fn start_failed(&mut self, i: usize, reason: &str, msg: String) {
        warn!(
            container = %self.slots[i].plan.name,
            reason,
            "container failed to start: {msg}"
        );
        let s = &mut self.slots[i];
        s.status.state = "waiting".into();
        s.status.reason = Some(reason.into());
        s.status.message = Some(msg);
        s.status.restart_count += u32::from(s.status.started_at.is_some());
        s.status.started_at.get_or_insert(util::now_secs());
        s.next_start = Some(Instant::now() + Duration::from_millis(s.backoff_ms));
        s.backoff_ms = (s.backoff_ms * 2).min(self.plan.backoff_max_ms);
        if self.plan.restart_policy == RestartPolicy::Never {
            s.done = true;
            s.status.state = "terminated".into();
            s.status.exit_code = Some(128);
        }
        self.dirty = true;
    }

    fn drain(r: &mut Running) {
        let mut buf = [0u8; 64 * 1024];
        for (fd, stream) in [(r.out, Stream::Stdout), (r.err, Stream::Stderr)] {
            if fd < 0 {
                continue;
            }
            while let Some(n) = sys::read_some(fd, &mut buf) {
                if n == 0 {
                    break;
                }
                r.log.write(stream, &buf[..n]);
                if let Some(a) = &mut r.attach {
                    let kind = match stream {
                        Stream::Stdout => attach::STDOUT,
                        Stream::Stderr => attach::STDERR,
                    };
                    a.broadcast(kind, &buf[..n]);
                }
            }
        }
    }

    fn poll_logs(&mut self, timeout_ms: i32) {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        for s in &self.slots {
            if let Some(r) = &s.running {
                for fd in [r.out, r.err] {
                    if fd >= 0 {
                        fds.push(libc::pollfd {
                            fd,
                            events: libc::POLLIN,
                            revents: 0,
                        });
                    }
                }
            }
        }
        for s in &self.slots {
            if let Some(a) = s.running.as_ref().and_then(|r| r.attach.as_ref()) {
                a.poll_fds(&mut fds);
            }
        }
        // SAFETY: fds is a valid array of pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        for s in &mut self.slots {
            if let Some(r) = &mut s.running {
                Self::drain(r);
                if let Some(a) = &mut r.attach {
                    a.service();
                }
            }
        }
    }

    fn reap(&mut self) {
        loop {
            let mut st = 0;
            // SAFETY: reaping our own children.
            let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if Some(pid) == self.infra_pid {
                warn!("the pod infra process {pid} exited");
                continue;
            }
            let Some(i) = self
                .slots
                .iter()
                .position(|s| s.running.as_ref().is_some_and(|r| r.pid == pid))
            else {
                continue;
            };
            let code = sys::decode_wait(st);
            self.exited(i, code);
        }
    }

    fn exited(&mut self, i: usize, code: i32) {
        let policy = self.plan.restart_policy;
        let stopping = STOP.load(Ordering::SeqCst);
        let s = &mut self.slots[i];
        let Some(mut r) = s.running.take() else {
            return;
        };
        Self::drain(&mut r);
        r.log.flush_partial();
        sys::close(r.out);
        sys::close(r.err);
        let oom = s.cgroup.oom_kill_count() > r.oom_before;
        s.status.state = "terminated".into();
        s.status.exit_code = Some(code);
        s.status.pid = None;
        s.status.finished_at = Some(util::now_secs());
        s.status.reason = Some(
            if oom {
                "OOMKilled"
            } else if code == 0 {
                "Completed"
            } else {
                "Error"
            }
            .into(),
        );
        trace!(
            container = %s.plan.name,
            "container exited with {code} ({:?})",
            s.status.reason
        );
        // Leftovers in the cgroup (fly has no pid namespace to take them down).
        for p in s.cgroup.pids() {
            sys::kill(p, libc::SIGKILL);
        }
        if !stopping && runs_again(policy, s.init, code) {
            // kubelet: back-off resets after a container ran for 10 minutes.
            if r.started.elapsed() > Duration::from_secs(600) {
                s.backoff_ms = self.plan.backoff_base_ms;
            }
            s.next_start = Some(Instant::now() + Duration::from_millis(s.backoff_ms));
            back_off(&mut s.status, &self.plan, s.backoff_ms);
            s.backoff_ms = (s.backoff_ms * 2).min(self.plan.backoff_max_ms);
        } else {
            s.done = true;
        }
        self.dirty = true;
    }

    fn main_loop(&mut self) {
        let n_init = self.slots.iter().filter(|s| s.init).count();
        let mut init_idx = 0;
        loop {
            if STOP.load(Ordering::SeqCst) {
                return;
            }
            // Init containers run one at a time, in order, to completion.
            while init_idx < n_init && self.slots[init_idx].done {
                if self.slots[init_idx].status.exit_code != Some(0) {
                    self.status.phase = "Failed".into();
                    self.status.reason = Some("InitContainerFailed".into());
                    self.save();
                    return;
                }
                init_idx += 1;
            }
            let now = Instant::now();
            let startable: Vec<usize> = if init_idx < n_init {
                vec![init_idx]
            } else {
                (n_init..self.slots.len()).collect()
            };
            for i in startable {
                let s = &self.slots[i];
                let due = s.running.is_none() && !s.done && s.next_start.is_none_or(|t| t <= now);
                if due {
                    self.start(i);
                }
            }
            if self.dirty {
                self.save();
            }
            if init_idx >= n_init && self.slots[n_init..].iter().all(|s| s.done) {
                let ok = self.slots[n_init..]
                    .iter()
                    .all(|s| s.status.exit_code == Some(0));
                self.status.phase = if ok { "Succeeded" } else { "Failed" }.into();
                return;
            }
            self.poll_logs(100);
            self.reap();
        }
    }

    /// SIGTERM, grace, SIGKILL; then network DEL, namespaces, mounts, cgroups.
    fn teardown(&mut self) {
        let stopping = STOP.load(Ordering::SeqCst);
        if self.slots.iter().any(|s| s.running.is_some()) {
            self.status.state = PodState::Stopping;
            self.save();
            let grace = stop_grace(&self.dir).unwrap_or(self.plan.grace_seconds);
            trace!("stopping containers (grace {grace}s)");
            for s in &self.slots {
                if let Some(r) = &s.running {
                    sys::kill(r.init_pid, libc::SIGTERM);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(grace);
            while self.slots.iter().any(|s| s.running.is_some()) && Instant::now() < deadline {
                self.poll_logs(50);
                self.reap();
            }
            for s in &self.slots {
                if let Some(r) = &s.running {
                    trace!(container = %s.plan.name, "grace period over: SIGKILL");
                    sys::kill(r.init_pid, libc::SIGKILL);
                    for p in s.cgroup.pids() {
                        sys::kill(p, libc::SIGKILL);
                    }
                }
            }
            let hard = Instant::now() + Duration::from_secs(10);
            while self.slots.iter().any(|s| s.running.is_some()) && Instant::now() < hard {
                self.poll_logs(20);
                self.reap();
            }
        }
        if stopping && self.status.phase == "Running" {
            self.status.phase = "Succeeded".into();
            if self
                .slots
                .iter()
                .any(|s| s.status.exit_code.is_some_and(|c| c != 0))
            {
                self.status.phase = "Failed".into();
            }
        }
        cleanup_pod(
            &self.dir,
            &self.plan,
            self.infra_pid,
            self.net_result.as_ref(),
        );
        self.status.state = PodState::Exited;
        self.status.finished_at = Some(util::now_secs());
        self.status.infra_pid = None;
        self.save();
        trace!(pod = %self.plan.uuid, "pod exited ({})", self.status.phase);
    }
}

pub(crate) fn cgroup_procs_files(rel: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    match crate::cgroups::detect(root) {
        crate::cgroups::Layout::V2 => vec![root.join(rel).join("cgroup.procs")],
        crate::cgroups::Layout::V1 => crate::cgroups::V1_CONTROLLERS
            .iter()
            .map(|c| root.join(c).join(rel).join("cgroup.procs"))
            .filter(|p| p.parent().is_some_and(|d| d.exists()))
            .collect(),
    }
}

/// Release everything a pod holds on the host. Used by the supervisor at the end and by the
/// agent when a supervisor died without cleaning up. Idempotent.
pub(crate) fn cleanup_pod(
    dir: &Path,
    plan: &PodPlan,
    infra_pid: Option<i32>,
    net_result: Option<&serde_json::Value>,
) {
    // Processes: anything left in the pod's cgroups.
    let cgs: Vec<Box<dyn CgroupManager>> = plan
        .all_containers()
        .map(|c| create_cgroup_manager(&format!("{}/{}", plan.cgroup_path(), c.name)))
        .collect();
    for _ in 0..3 {
        for cg in &cgs {
            for p in cg.pids() {
                sys::kill(p, libc::SIGKILL);
            }
        }
        if cgs.iter().all(|c| c.pids().is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Network: DEL is owed once ADD was attempted.
    let netns = dir.join("netns");
    if dir.join("net-added").exists() {
        if let Some(net) = &plan.network {
            let saved: Option<serde_json::Value> = net_result.cloned().or_else(|| {
                std::fs::read(dir.join("net-result.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
            });
            let rc = serde_json::json!({ "portMappings": net.port_mappings });
            let ns = netns.display().to_string();
            let att = cni::Attachment {
                container_id: &plan.uuid,
                netns: if netns.exists() { &ns } else { "" },
                ifname: "eth0",
                runtime_config: &rc,
                plugin_dirs: &net.plugin_dirs,
            };
            match cni::del(&net.network, &att, saved.as_ref()) {
                Ok(()) => {
                    let _ = std::fs::remove_file(dir.join("net-added"));
                }
                Err(e) => warn!(pod = %plan.uuid, "CNI DEL failed: {e}"),
            }
        }
    }
    if let Some(pid) = infra_pid {
        sys::kill(pid, libc::SIGKILL);
        let mut st = 0;
        // SAFETY: reaping our own child, if it is ours (ECHILD otherwise).
        unsafe { libc::waitpid(pid, &mut st, 0) };
    }
    // Mounts in the host namespace: the pinned netns, fly rootfs trees, memory emptyDirs.
    let _ = sys::umount_detach(&netns);
    let _ = std::fs::remove_file(&netns);
    for c in plan.all_containers() {
        let r = dir.join("rootfs").join(&c.name);
        while is_mountpoint(&r) {
            if sys::umount_detach(&r).is_err() {
                break;
            }
        }
    }
    for v in &plan.volumes {
        let p = dir.join("volumes").join(&v.name);
        while is_mountpoint(&p) {
            if sys::umount_detach(&p).is_err() {
                break;
            }
        }
    }
    drop(cgs);
    remove_pod_cgroups(plan);
}

/// Removes the cgroups of a pod whose processes are gone: each container's, then the pod's.
pub(crate) fn remove_pod_cgroups(plan: &PodPlan) {
    for c in plan.all_containers() {
        let cg = create_cgroup_manager(&format!("{}/{}", plan.cgroup_path(), c.name));
        if let Err(e) = cg.remove() {
            warn!(pod = %plan.uuid, "{e}");
        }
    }
    let _ = create_cgroup_manager(&plan.cgroup_path()).remove();
}

/// Whether `p` is a mount point (listed in our mountinfo).
pub(crate) fn is_mountpoint(p: &Path) -> bool {
    let s = p.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(s.as_str()))
}

/// The file in a pod's directory that gives a stop its own grace period in seconds (a
/// deletion's grace period, less what preStop hooks took), written before the SIGTERM that
/// asks the supervisor to stop; without it the stop uses the plan's.
pub(crate) const STOP_GRACE_FILE: &str = "stop-grace";

fn stop_grace(pod_dir: &Path) -> Option<u64> {
    std::fs::read_to_string(pod_dir.join(STOP_GRACE_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether a container that exited with `code` runs again under the pod's `policy` (init
/// containers: until they succeed, and not at all under Never). Both stage1s decide so (the
/// kvm guest's run loop is written from the same rule).
fn runs_again(policy: RestartPolicy, init: bool, code: i32) -> bool {
    match policy {
        RestartPolicy::Always => !init || code != 0,
        RestartPolicy::OnFailure => code != 0,
        RestartPolicy::Never => false,
    }
}

/// Container `status`, whose run just ended, waits `wait_ms` to start again, as kubelet says
/// it: CrashLoopBackOff with kubelet's message, the run that ended as `last`.
fn back_off(status: &mut ContainerStatus, pod: &PodPlan, wait_ms: u64) {
    status.last = status.ended_run();
    status.reason = Some("CrashLoopBackOff".into());
    status.message = Some(format!(
        "back-off {} restarting failed container={} pod={}_{}({})",
        util::go_duration_ms(wait_ms),
        status.name,
        pod.name,
        pod.namespace,
        pod.uid
    ));
}

/// A container's stdin as planned for attachers.
enum Stdio {
    Null,
    Pipe { r: RawFd, w: RawFd },
    Tty { master: RawFd, slave: RawFd },
}

fn attach_stdio(c: &ContainerPlan) -> std::io::Result<Stdio> {
    if c.tty {
        let (master, slave) = sys::openpty()?;
        return Ok(Stdio::Tty { master, slave });
    }
    if c.stdin {
        let (r, w) = sys::pipe()?;
        return Ok(Stdio::Pipe { r, w });
    }
    Ok(Stdio::Null)
}
