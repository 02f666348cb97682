//! cgroup v1 and v2 behind one trait (youki's `CgroupManager` shape). The host's layout is detected
//! once: pure v2 (`/sys/fs/cgroup/cgroup.controllers` exists) or v1/hybrid (one hierarchy per
//! controller under `/sys/fs/cgroup/<controller>`; hybrid's extra v2 mount is not used for limits,
//! because on hybrid hosts the controllers are bound to v1).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
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
    /// Move a process into the cgroup.
    fn add_task(&self, pid: i32) -> Result<(), CgroupError>;
    /// How many times the kernel OOM-killed a task in this cgroup.
    fn oom_kill_count(&self) -> u64;
    /// PIDs still in the cgroup (to kill leftovers).
    fn pids(&self) -> Vec<i32>;
    /// Remove the cgroup; it must be empty.
    fn remove(&self) -> Result<(), CgroupError>;
    /// Whether any directory of this cgroup still exists.
    fn exists(&self) -> bool;
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

const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "pids"];

impl V1 {
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

    fn add_task(&self, pid: i32) -> Result<(), CgroupError> {
        for c in V1_CONTROLLERS.iter().filter(|c| self.available(c)) {
            let p = self.dir(c).join("cgroup.procs");
            std::fs::write(&p, pid.to_string()).map_err(io("write", &p))?;
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

    fn exists(&self) -> bool {
        V1_CONTROLLERS.iter().any(|c| self.dir(c).exists())
    }
}

pub struct V2 {
    root: PathBuf,
    rel: String,
}

impl V2 {
    /// A v2 manager below an explicit hierarchy root (tests point it at a scratch directory).
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

    fn add_task(&self, pid: i32) -> Result<(), CgroupError> {
        let p = self.dir().join("cgroup.procs");
        std::fs::write(&p, pid.to_string()).map_err(io("write", &p))
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

    fn exists(&self) -> bool {
        self.dir().exists()
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
}
