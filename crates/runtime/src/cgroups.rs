//! cgroup v1 and v2 behind one trait (youki's `CgroupManager` shape). The host's layout is detected
//! once: pure v2 (`/sys/fs/cgroup/cgroup.controllers` exists) or v1/hybrid (one hierarchy per
//! controller under `/sys/fs/cgroup/<controller>`; hybrid's extra v2 mount is not used for limits,
//! because on hybrid hosts the controllers are bound to v1).

use crate::devices::DeviceRule;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot restrict devices: {0}")]
    Devices(#[from] crate::devices::DeviceError),
    #[error("cannot restrict devices: the v1 devices controller is not mounted at {0}")]
    NoDevicesController(PathBuf),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Limits from `resources.limits`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// CPU in millicores.
    pub cpu_millis: Option<u64>,
    pub pids: Option<u64>,
}

pub const CFS_PERIOD_US: u64 = 100_000;

pub trait CgroupManager {
    /// Create the cgroup (and its parents) and apply limits.
    fn create(&self, limits: &Limits) -> Result<(), CgroupError>;
    /// How many times the kernel OOM-killed a task in this cgroup.
    fn oom_kill_count(&self) -> u64;
    /// PIDs still in the cgroup (to kill leftovers).
    fn pids(&self) -> Vec<i32>;
    /// Remove the cgroup; it must be empty.
    fn remove(&self) -> Result<(), CgroupError>;
    /// Whether any directory of this cgroup still exists.
    #[cfg(test)]
    fn exists(&self) -> bool;
    /// After `create`: deny every device but `allowed` (open and mknod), in the v1 devices
    /// controller or with a v2 device BPF program (`crate::devices`). Fails rather than leave
    /// the cgroup unrestricted.
    fn restrict_devices(&self, allowed: &[DeviceRule]) -> Result<(), CgroupError>;
    /// What the cgroup's tasks have used; None when the cgroup does not exist.
    fn usage(&self) -> Option<CgroupUsage>;
}

/// What a cgroup has used, read as cAdvisor reads it for kubelet's stats (the agent's
/// `/stats/summary` and `/metrics/resource`). A field is None when the host does not account it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// Cumulative CPU time of its tasks, in nanoseconds (v1 `cpuacct.usage`, v2 `cpu.stat`
    /// `usage_usec`).
    pub cpu_ns: Option<u64>,
    /// v1 `memory.usage_in_bytes`, v2 `memory.current`.
    pub memory_usage_bytes: Option<u64>,
    /// The usage minus the inactive file cache (v1 `total_inactive_file`, v2 `inactive_file`),
    /// never below 0: cAdvisor's working set, what the kubelet evicts and `kubectl top` shows.
    pub memory_working_set_bytes: Option<u64>,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub memory_rss_bytes: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    /// The memory limit; None when unlimited.
    pub memory_limit_bytes: Option<u64>,
    /// v1 `memory.memsw.usage_in_bytes` minus the usage, v2 `memory.swap.current`.
    pub swap_usage_bytes: Option<u64>,
    /// Tasks in it and below (`pids.current`).
    pub processes: Option<u64>,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// A `memory.stat`'s `key value` lines.
fn stat_value(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The memory fields of a usage from the usage, the `memory.stat` text and the stat keys of
/// the cgroup version (cAdvisor's setMemoryStats).
fn memory_usage(u: &mut CgroupUsage, usage: u64, stat: &str, keys: [&str; 4]) {
    let [inactive_file, rss, pgfault, pgmajfault] = keys;
    u.memory_usage_bytes = Some(usage);
    let inactive = stat_value(stat, inactive_file).unwrap_or(0);
    u.memory_working_set_bytes = Some(usage.saturating_sub(inactive));
    u.memory_rss_bytes = stat_value(stat, rss);
    u.page_faults = stat_value(stat, pgfault);
    u.major_page_faults = stat_value(stat, pgmajfault);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    V1,
    V2,
}

pub fn detect(root: &Path) -> Layout {
    if root.join("cgroup.controllers").exists() {
        Layout::V2
    } else {
        Layout::V1
    }
}

/// `rel` is a path below the hierarchy root, e.g. `rktup/k8s_<uuid>/app`.
pub fn create_cgroup_manager(rel: &str) -> Box<dyn CgroupManager> {
    let root = PathBuf::from("/sys/fs/cgroup");
    match detect(&root) {
        Layout::V2 => Box::new(V2 {
            root,
            rel: rel.into(),
        }),
        Layout::V1 => Box::new(V1 {
            root,
            rel: rel.into(),
        }),
    }
}

fn read_pids(p: &Path) -> Vec<i32> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn oom_kill_from(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Create one level of a cgroup path that other pods may be creating at the same moment: pods
/// start in parallel, so "exists, else create" would race on the shared parent (`rktup/`) and
/// fail one pod with EEXIST.
fn mkdir_shared(p: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io("create", p)(e)),
    }
}

/// Remove a cgroup directory; the kernel may need a moment after the last task exits.
fn rmdir_retry(p: &Path) -> Result<(), CgroupError> {
    for _ in 0..50 {
        match std::fs::remove_dir(p) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(io("remove", p)(e)),
        }
    }
    std::fs::remove_dir(p).map_err(io("remove", p))
}

pub struct V1 {
    root: PathBuf,
    rel: String,
}

/// The v1 hierarchies a pod's and each container's cgroup live in (`devices` for the device
/// allowlist of unprivileged containers).
/// `cpuacct` for the CPU time the kubelet's stats report (its own hierarchy on some hybrid
/// hosts, the same directory as `cpu` where they are mounted together).
pub(crate) const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids", "devices"];

/// v1's "no limit": the largest page-aligned i64.
const V1_UNLIMITED: u64 = 1 << 62;

impl V1 {
    /// A v1 manager below an explicit root (the tests use the real /sys/fs/cgroup).
    #[cfg(test)]
    pub fn with_root(root: impl Into<PathBuf>, rel: &str) -> V1 {
        V1 {
            root: root.into(),
            rel: rel.into(),
        }
    }

    fn dir(&self, ctrl: &str) -> PathBuf {
        self.root.join(ctrl).join(&self.rel)
    }
    fn available(&self, ctrl: &str) -> bool {
        self.root.join(ctrl).join("cgroup.procs").exists()
    }
}

impl CgroupManager for V1 {
    fn create(&self, limits: &Limits) -> Result<(), CgroupError> {
        for c in V1_CONTROLLERS.iter().filter(|c| self.available(c)) {
            let d = self.dir(c);
            std::fs::create_dir_all(&d).map_err(io("create", &d))?;
        }
        let w = |ctrl: &str, file: &str, v: String| -> Result<(), CgroupError> {
            let p = self.dir(ctrl).join(file);
            std::fs::write(&p, v).map_err(io("write", &p))
        };
        if let Some(m) = limits.memory_bytes {
            w("memory", "memory.limit_in_bytes", m.to_string())?;
            let sw = self.dir("memory").join("memory.memsw.limit_in_bytes");
            if sw.exists() {
                let _ = std::fs::write(&sw, m.to_string());
            }
        }
        if let Some(c) = limits.cpu_millis {
            w("cpu", "cpu.cfs_period_us", CFS_PERIOD_US.to_string())?;
            w(
                "cpu",
                "cpu.cfs_quota_us",
                (c * CFS_PERIOD_US / 1000).max(1000).to_string(),
            )?;
        }
        if let Some(p) = limits.pids {
            w("pids", "pids.max", p.to_string())?;
        }
        Ok(())
    }

    fn oom_kill_count(&self) -> u64 {
        oom_kill_from(
            &std::fs::read_to_string(self.dir("memory").join("memory.oom_control"))
                .unwrap_or_default(),
        )
    }

    fn pids(&self) -> Vec<i32> {
        let mut v = Vec::new();
        for c in V1_CONTROLLERS {
            for p in read_pids(&self.dir(c).join("cgroup.procs")) {
                if !v.contains(&p) {
                    v.push(p);
                }
            }
        }
        v
    }

    fn remove(&self) -> Result<(), CgroupError> {
        for c in V1_CONTROLLERS {
            rmdir_retry(&self.dir(c))?;
        }
        Ok(())
    }

    #[cfg(test)]
    fn exists(&self) -> bool {
        V1_CONTROLLERS.iter().any(|c| self.dir(c).exists())
    }

    fn restrict_devices(&self, allowed: &[DeviceRule]) -> Result<(), CgroupError> {
        if !self.available("devices") {
            return Err(CgroupError::NoDevicesController(self.root.join("devices")));
        }
        let d = self.dir("devices");
        // One rule per write; "a" first (allowed only while the cgroup has no children).
        let deny = d.join("devices.deny");
        std::fs::write(&deny, "a").map_err(io("write", &deny))?;
        let allow = d.join("devices.allow");
        for line in crate::devices::v1_allow_lines(allowed) {
            std::fs::write(&allow, line).map_err(io("write", &allow))?;
        }
        Ok(())
    }

    fn usage(&self) -> Option<CgroupUsage> {
        let (mem, cpu) = (self.dir("memory"), self.dir("cpuacct"));
        if !mem.exists() && !cpu.exists() {
            return None;
        }
        let mut u = CgroupUsage {
            cpu_ns: read_u64(&cpu.join("cpuacct.usage")),
            processes: read_u64(&self.dir("pids").join("pids.current")),
            ..Default::default()
        };
        if let Some(usage) = read_u64(&mem.join("memory.usage_in_bytes")) {
            let stat = std::fs::read_to_string(mem.join("memory.stat")).unwrap_or_default();
            memory_usage(
                &mut u,
                usage,
                &stat,
                [
                    "total_inactive_file",
                    "total_rss",
                    "total_pgfault",
                    "total_pgmajfault",
                ],
            );
            u.memory_limit_bytes =
                read_u64(&mem.join("memory.limit_in_bytes")).filter(|l| *l < V1_UNLIMITED);
            u.swap_usage_bytes = read_u64(&mem.join("memory.memsw.usage_in_bytes"))
                .map(|sw| sw.saturating_sub(usage));
        }
        Some(u)
    }
}

pub struct V2 {
    root: PathBuf,
    rel: String,
}

impl V2 {
    /// A v2 manager below an explicit hierarchy root (tests point it at a scratch directory).
    #[cfg(test)]
    pub fn with_root(root: impl Into<PathBuf>, rel: &str) -> V2 {
        V2 {
            root: root.into(),
            rel: rel.into(),
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.join(&self.rel)
    }
}

impl CgroupManager for V2 {
    fn create(&self, limits: &Limits) -> Result<(), CgroupError> {
        // Enable the controllers on every ancestor's subtree_control (the "no internal
        // processes" rule holds: our intermediate cgroups never hold tasks).
        let mut cur = self.root.clone();
        let available =
            std::fs::read_to_string(self.root.join("cgroup.controllers")).unwrap_or_default();
        let wanted: Vec<&str> = ["memory", "cpu", "pids"]
            .into_iter()
            .filter(|c| available.split_whitespace().any(|a| a == *c))
            .collect();
        for comp in Path::new(&self.rel).components() {
            let sc = cur.join("cgroup.subtree_control");
            for c in &wanted {
                let _ = std::fs::write(&sc, format!("+{c}"));
            }
            cur = cur.join(comp);
            mkdir_shared(&cur)?;
        }
        let d = self.dir();
        let w = |file: &str, v: String| -> Result<(), CgroupError> {
            let p = d.join(file);
            std::fs::write(&p, v).map_err(io("write", &p))
        };
        if let Some(m) = limits.memory_bytes {
            w("memory.max", m.to_string())?;
            if d.join("memory.swap.max").exists() {
                w("memory.swap.max", "0".into())?;
            }
        }
        if let Some(c) = limits.cpu_millis {
            w(
                "cpu.max",
                format!("{} {CFS_PERIOD_US}", (c * CFS_PERIOD_US / 1000).max(1000)),
            )?;
        }
        if let Some(p) = limits.pids {
            w("pids.max", p.to_string())?;
        }
        Ok(())
    }

    fn oom_kill_count(&self) -> u64 {
        oom_kill_from(
            &std::fs::read_to_string(self.dir().join("memory.events")).unwrap_or_default(),
        )
    }

    fn pids(&self) -> Vec<i32> {
        read_pids(&self.dir().join("cgroup.procs"))
    }

    fn remove(&self) -> Result<(), CgroupError> {
        rmdir_retry(&self.dir())
    }

    #[cfg(test)]
    fn exists(&self) -> bool {
        self.dir().exists()
    }

    fn restrict_devices(&self, allowed: &[DeviceRule]) -> Result<(), CgroupError> {
        crate::devices::attach(&self.dir(), allowed)?;
        Ok(())
    }

    fn usage(&self) -> Option<CgroupUsage> {
        let d = self.dir();
        if !d.exists() {
            return None;
        }
        let cpu = std::fs::read_to_string(d.join("cpu.stat")).unwrap_or_default();
        let mut u = CgroupUsage {
            cpu_ns: stat_value(&cpu, "usage_usec").map(|us| us.saturating_mul(1000)),
            processes: read_u64(&d.join("pids.current")),
            ..Default::default()
        };
        if let Some(usage) = read_u64(&d.join("memory.current")) {
            let stat = std::fs::read_to_string(d.join("memory.stat")).unwrap_or_default();
            memory_usage(
                &mut u,
                usage,
                &stat,
                ["inactive_file", "anon", "pgfault", "pgmajfault"],
            );
            // "max" does not parse: unlimited.
            u.memory_limit_bytes = read_u64(&d.join("memory.max"));
            u.swap_usage_bytes = read_u64(&d.join("memory.swap.current"));
        }
        Some(u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oom_kill_counters() {
        assert_eq!(
            oom_kill_from("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            3
        );
        assert_eq!(
            oom_kill_from("low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n"),
            1
        );
        assert_eq!(oom_kill_from(""), 0);
    }

    /// The v2 manager's file protocol against a scratch hierarchy (this CI host is v1/hybrid, so
    /// the real v2 path is only exercised on pure v2 hosts).
    #[test]
    fn v2_writes_limits_and_enables_controllers() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        assert_eq!(detect(d.path()), Layout::V2);
        let m = V2::with_root(d.path(), "rktup/k8s_x/app");
        m.create(&Limits {
            memory_bytes: Some(32 << 20),
            cpu_millis: Some(250),
            pids: Some(10),
        })
        .unwrap();
        let leaf = d.path().join("rktup/k8s_x/app");
        let r = |f: &str| std::fs::read_to_string(leaf.join(f)).unwrap();
        assert_eq!(r("memory.max"), (32u64 << 20).to_string());
        assert_eq!(r("cpu.max"), "25000 100000");
        assert_eq!(r("pids.max"), "10");
        // On a real hierarchy each write adds a controller; a plain file keeps the last one.
        let sc =
            std::fs::read_to_string(d.path().join("rktup/k8s_x/cgroup.subtree_control")).unwrap();
        assert_eq!(sc, "+pids");
        std::fs::write(
            leaf.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(m.oom_kill_count(), 1);
    }

    /// Usage as cAdvisor reads it, from scratch hierarchies of both versions: working set =
    /// usage - inactive file cache, v1's huge "unlimited" and v2's "max" are no limit.
    #[test]
    fn usage_reads_cpu_memory_and_working_set() {
        let d = tempfile::tempdir().unwrap();
        let rel = "rktup/k8s_u/app";
        assert_eq!(V1::with_root(d.path(), rel).usage(), None);
        let w = |ctrl: &str, file: &str, v: &str| {
            let dir = d.path().join(ctrl).join(rel);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), v).unwrap();
        };
        w("cpuacct", "cpuacct.usage", "1500000000\n");
        w("memory", "memory.usage_in_bytes", "10485760\n");
        w(
            "memory",
            "memory.stat",
            "cache 4194304\nrss 6291456\ninactive_file 1\ntotal_rss 6291456\n\
             total_inactive_file 3145728\ntotal_pgfault 120\ntotal_pgmajfault 2\n",
        );
        w("memory", "memory.limit_in_bytes", "9223372036854771712\n");
        w("memory", "memory.memsw.usage_in_bytes", "10485760\n");
        w("pids", "pids.current", "3\n");
        let u = V1::with_root(d.path(), rel).usage().unwrap();
        assert_eq!(
            u,
            CgroupUsage {
                cpu_ns: Some(1_500_000_000),
                memory_usage_bytes: Some(10 << 20),
                memory_working_set_bytes: Some(7 << 20),
                memory_rss_bytes: Some(6 << 20),
                page_faults: Some(120),
                major_page_faults: Some(2),
                memory_limit_bytes: None,
                swap_usage_bytes: Some(0),
                processes: Some(3),
            }
        );
        w("memory", "memory.limit_in_bytes", "67108864\n");
        // More inactive cache than usage (the counters are read one after the other): 0.
        w("memory", "memory.stat", "total_inactive_file 20000000\n");
        let u = V1::with_root(d.path(), rel).usage().unwrap();
        assert_eq!(u.memory_limit_bytes, Some(64 << 20));
        assert_eq!(u.memory_working_set_bytes, Some(0));

        let d2 = tempfile::tempdir().unwrap();
        let dir = d2.path().join(rel);
        std::fs::create_dir_all(&dir).unwrap();
        let w2 = |file: &str, v: &str| std::fs::write(dir.join(file), v).unwrap();
        w2(
            "cpu.stat",
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
        );
        w2("memory.current", "8388608\n");
        w2(
            "memory.stat",
            "anon 4194304\nfile 4194304\ninactive_file 1048576\npgfault 7\npgmajfault 1\n",
        );
        w2("memory.max", "max\n");
        w2("memory.swap.current", "4096\n");
        w2("pids.current", "2\n");
        let u = V2::with_root(d2.path(), rel).usage().unwrap();
        assert_eq!(u.cpu_ns, Some(2_500_000));
        assert_eq!(u.memory_working_set_bytes, Some(7 << 20));
        assert_eq!(u.memory_rss_bytes, Some(4 << 20));
        assert_eq!((u.page_faults, u.major_page_faults), (Some(7), Some(1)));
        assert_eq!(u.memory_limit_bytes, None);
        assert_eq!(u.swap_usage_bytes, Some(4096));
        assert_eq!(u.processes, Some(2));
        assert_eq!(V2::with_root(d2.path(), "rktup/gone").usage(), None);
    }

    /// Pods start in parallel and share the `rktup/` parent: a parent another pod created a
    /// moment earlier is not an error (CI once failed a pod with EEXIST on it).
    #[test]
    fn v2_pods_created_at_once_share_their_parent() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.controllers"), "memory pids\n").unwrap();
        let existing = d.path().join("made-before");
        std::fs::create_dir(&existing).unwrap();
        mkdir_shared(&existing).unwrap();
        // The window is a few microseconds, so race many rounds, each under a fresh parent.
        const PODS: usize = 8;
        for round in 0..200 {
            let start = std::sync::Barrier::new(PODS);
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..PODS)
                    .map(|i| {
                        let (root, start) = (d.path(), &start);
                        s.spawn(move || {
                            let m = V2::with_root(root, &format!("rktup-{round}/k8s_{i}"));
                            start.wait();
                            m.create(&Limits::default())
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().unwrap().unwrap();
                }
            });
        }
        assert!(d.path().join("rktup-199/k8s_7").is_dir());
    }

    #[test]
    fn creates_limits_and_removes_a_real_cgroup() {
        let rel = format!("rktup/unit-test-{}", std::process::id());
        let m = create_cgroup_manager(&rel);
        m.create(&Limits {
            memory_bytes: Some(64 << 20),
            cpu_millis: Some(500),
            pids: Some(100),
        })
        .unwrap();
        assert!(m.exists());
        assert!(m.pids().is_empty());
        m.remove().unwrap();
        assert!(!m.exists());
    }

    /// Whether a test that needs `what` can run (`rktup_testkit::can_run`).
    fn can_run(test: &str, what: &str, ok: bool) -> bool {
        rktup_testkit::can_run(test, (!ok).then_some(what))
    }

    /// A scratch directory whose filesystem honours device nodes (not mounted nodev).
    fn dev_capable_tempdir() -> tempfile::TempDir {
        for base in [std::env::temp_dir(), "/var/tmp".into(), "/root".into()] {
            let Ok(c) = std::ffi::CString::new(base.display().to_string()) else {
                continue;
            };
            // SAFETY: statvfs on a valid path into a zeroed struct.
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0 && st.f_flag & libc::ST_NODEV == 0
            {
                if let Ok(d) = tempfile::tempdir_in(&base) {
                    return d;
                }
            }
        }
        panic!("no scratch filesystem without nodev");
    }

    /// The cgroup2 mount: /sys/fs/cgroup on pure v2 hosts, /sys/fs/cgroup/unified on hybrid ones.
    fn cgroup2_mount() -> Option<PathBuf> {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .find(|l| {
                l.split(" - ")
                    .nth(1)
                    .is_some_and(|t| t.starts_with("cgroup2 "))
            })
            .and_then(|l| l.split(' ').nth(4).map(PathBuf::from))
    }

    /// Forks a child that joins the cgroup through `procs` (a cgroup.procs file) and checks, as
    /// root with CAP_MKNOD: /dev/null opens read-write, mknod of an allowed char device (null)
    /// works, mknod of a block device fails with EPERM, opening `blk` (a block device node the
    /// parent made: the root filesystem's disk) fails with EPERM, and so does opening a char
    /// device off the list (`mem`, 1:1).
    fn check_devices_in(procs: &Path, scratch: &Path) {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
        // The root filesystem's device (a real disk here); loop0 if it is an anonymous one.
        let root_dev = std::fs::metadata("/").map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.dev()
        });
        let dev = match root_dev {
            Ok(d) if libc::major(d) != 0 => d,
            _ => libc::makedev(7, 0),
        };
        let blk = scratch.join("blk");
        let mem = scratch.join("mem");
        for (p, mode, d) in [
            (&blk, libc::S_IFBLK, dev),
            (&mem, libc::S_IFCHR, libc::makedev(1, 1)),
        ] {
            // SAFETY: valid C string.
            let r = unsafe { libc::mknod(c(p).as_ptr(), mode | 0o600, d) };
            assert_eq!(
                r,
                0,
                "mknod {}: {}",
                p.display(),
                std::io::Error::last_os_error()
            );
        }
        let (blk, mem) = (c(&blk), c(&mem));
        let (null_node, sda_node) = (c(&scratch.join("null")), c(&scratch.join("sda")));
        let procs_file = std::fs::OpenOptions::new()
            .write(true)
            .open(procs)
            .unwrap_or_else(|e| panic!("open {}: {e}", procs.display()));
        use std::os::unix::io::AsRawFd;
        let procs_fd = procs_file.as_raw_fd();
        // SAFETY: the child only makes raw system calls on data prepared above, then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                let errno = || *libc::__errno_location();
                if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(10);
                }
                let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if fd < 0 || libc::write(fd, b"x".as_ptr().cast(), 1) != 1 {
                    libc::_exit(11);
                }
                if libc::mknod(
                    null_node.as_ptr(),
                    libc::S_IFCHR | 0o600,
                    libc::makedev(1, 3),
                ) != 0
                {
                    libc::_exit(12);
                }
                if libc::mknod(
                    sda_node.as_ptr(),
                    libc::S_IFBLK | 0o600,
                    libc::makedev(8, 0),
                ) == 0
                {
                    libc::_exit(13);
                }
                if errno() != libc::EPERM {
                    libc::_exit(14);
                }
                if libc::open(blk.as_ptr(), libc::O_RDONLY) >= 0 {
                    libc::_exit(15);
                }
                if errno() != libc::EPERM {
                    libc::_exit(16);
                }
                if libc::open(mem.as_ptr(), libc::O_RDONLY) >= 0 {
                    libc::_exit(17);
                }
                if errno() != libc::EPERM {
                    libc::_exit(18);
                }
                libc::_exit(0);
            }
        }
        drop(procs_file);
        let code = crate::stage1::sys::wait_exit_code(pid);
        let why = match code {
            0 => "",
            10 => "joining the cgroup failed",
            11 => "/dev/null did not open and write",
            12 => "mknod of an allowed device (null 1:3) was refused",
            13 => "mknod of a block device (8:0) was allowed",
            14 => "mknod of a block device failed with another errno than EPERM",
            15 => "opening the host's block device was allowed",
            16 => "opening the block device failed with another errno than EPERM",
            17 => "opening /dev/mem (1:1) was allowed",
            18 => "opening /dev/mem failed with another errno than EPERM",
            _ => "the child died",
        };
        assert_eq!(code, 0, "{why} (exit code {code})");
    }

    /// The v2 path for real: the device BPF program attached to a scratch cgroup in this host's
    /// cgroup2 hierarchy (/sys/fs/cgroup/unified on the hybrid CI host).
    #[test]
    fn v2_devices_program_restricts_a_real_cgroup() {
        let test = "v2_devices_program_restricts_a_real_cgroup";
        let mount = cgroup2_mount();
        if !can_run(test, "root", rktup_testkit::is_root())
            || !can_run(test, "a cgroup2 mount", mount.is_some())
        {
            return;
        }
        let mount = mount.unwrap();
        let rel = format!("rktup-devtest-v2-{}", std::process::id());
        let m = V2::with_root(&mount, &rel);
        m.create(&Limits::default()).unwrap();
        let scratch = dev_capable_tempdir();
        let r = std::panic::catch_unwind(|| {
            m.restrict_devices(crate::devices::DEFAULT_ALLOWED)
                .unwrap_or_else(|e| panic!("{e}"));
            // A second attach (a restarted container) replaces the program.
            m.restrict_devices(crate::devices::DEFAULT_ALLOWED)
                .unwrap_or_else(|e| panic!("{e}"));
            check_devices_in(&mount.join(&rel).join("cgroup.procs"), scratch.path());
        });
        m.remove().unwrap();
        assert!(!m.exists());
        if let Err(e) = r {
            std::panic::resume_unwind(e);
        }
    }

    /// Usage read from real cgroups of this host's layout (v1 here: memory, cpuacct, pids) and
    /// of the cgroup2 mount (hybrid's unified tree: CPU only), with a spinning shell in them.
    #[test]
    fn usage_of_a_real_cgroup_with_a_busy_task() {
        let test = "usage_of_a_real_cgroup_with_a_busy_task";
        if !can_run(test, "root", rktup_testkit::is_root()) {
            return;
        }
        let root = Path::new("/sys/fs/cgroup");
        let rel = format!("rktup/usage-test-{}", std::process::id());
        let mut cases: Vec<(Box<dyn CgroupManager>, Vec<PathBuf>)> = vec![(
            create_cgroup_manager(&rel),
            match detect(root) {
                Layout::V2 => vec![root.join(&rel)],
                Layout::V1 => V1_CONTROLLERS
                    .iter()
                    .map(|c| root.join(c).join(&rel))
                    .collect(),
            },
        )];
        if let Some(m) = cgroup2_mount().filter(|m| m != root) {
            let rel2 = format!("rktup-usage-test-v2-{}", std::process::id());
            cases.push((Box::new(V2::with_root(&m, &rel2)), vec![m.join(&rel2)]));
        }
        for (m, dirs) in cases {
            assert_eq!(m.usage(), None, "no cgroup yet");
            m.create(&Limits::default()).unwrap();
            let mut child = std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .unwrap();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                for d in dirs.iter().filter(|d| d.exists()) {
                    std::fs::write(d.join("cgroup.procs"), child.id().to_string()).unwrap();
                }
                let u = rktup_testkit::wait_for(
                    "CPU time in the cgroup",
                    std::time::Duration::from_secs(30),
                    || {
                        m.usage()
                            .filter(|u| u.cpu_ns.is_some_and(|c| c > 1_000_000))
                    },
                );
                // A moved task's earlier pages stay charged where they were (v1 does not move
                // charges): the memory numbers are there, small; the agent's test fills them.
                if let Some(ws) = u.memory_working_set_bytes {
                    assert!(u.memory_usage_bytes >= Some(ws), "{u:?}");
                    assert!(u.page_faults.is_some(), "{u:?}");
                }
                if let Some(p) = u.processes {
                    assert_eq!(p, 1, "{u:?}");
                }
            }));
            let _ = child.kill();
            let _ = child.wait();
            m.remove().unwrap();
            if let Err(e) = r {
                std::panic::resume_unwind(e);
            }
            assert_eq!(m.usage(), None, "removed");
        }
    }

    /// The v1 path for real: `devices.deny` a + the allow lines in a scratch devices cgroup.
    #[test]
    fn v1_devices_cgroup_restricts_a_real_cgroup() {
        let test = "v1_devices_cgroup_restricts_a_real_cgroup";
        let root = Path::new("/sys/fs/cgroup");
        let v1 = root.join("devices/cgroup.procs").exists();
        if !can_run(test, "root", rktup_testkit::is_root())
            || !can_run(test, "the v1 devices controller", v1)
        {
            return;
        }
        let rel = format!("rktup/devtest-v1-{}", std::process::id());
        let m = V1::with_root(root, &rel);
        m.create(&Limits::default()).unwrap();
        let scratch = dev_capable_tempdir();
        let r = std::panic::catch_unwind(|| {
            m.restrict_devices(crate::devices::DEFAULT_ALLOWED).unwrap();
            let list = std::fs::read_to_string(m.dir("devices").join("devices.list")).unwrap();
            assert_eq!(
                list.lines().collect::<Vec<_>>(),
                crate::devices::v1_allow_lines(crate::devices::DEFAULT_ALLOWED),
            );
            check_devices_in(&m.dir("devices").join("cgroup.procs"), scratch.path());
        });
        m.remove().unwrap();
        assert!(!m.exists(), "devices cgroup removed too");
        if let Err(e) = r {
            std::panic::resume_unwind(e);
        }
    }
}
