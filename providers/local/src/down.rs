//! `rktup local down`: stops the agents, every pod (in its node's namespace, so CNI tears its
//! network down where it was made), the control plane; removes namespaces, the bridge, the
//! iptables rule, leftover mounts and cgroups, the state directory and the kubeconfig context.
//! Works from the record, and without it from the naming rules, so a half-made cluster goes too.
//!
//! A cluster being deleted needs no grace (issue 18): by default the supervisors, then the
//! agents and the control plane, then every pod of every node are SIGKILLed at once and waited
//! for through pidfds; the in-process kubenet's pod attachments go with the node namespaces
//! (no DEL per pod); mounts and the state directory go several at a time. `--graceful` stops
//! the agents with SIGTERM, each pod with its grace period, then the control plane.

use crate::layout::{self, Layout};
use crate::{network, process, require_root, Local};
use rktup_config::OutputFormat;
use rktup_provider::{DownOptions, ProviderError};
use rktup_runtime::pidfd::{self, Pidfd};
use rktup_runtime::runtime::{NetworkTeardown, Runtime, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub deleted: Vec<String>,
    pub left: Vec<String>,
}

pub fn down(local: &Local, options: &DownOptions) -> Result<(), ProviderError> {
    require_root("down")?;
    let started = Instant::now();
    let name = &local.settings.name;
    let layout = Layout::new(&local.settings.state_dir);
    let report = teardown(name, &layout, options);
    match local.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        OutputFormat::Text => {
            if report.deleted.is_empty() && report.left.is_empty() {
                println!("No local cluster \"{name}\": nothing to delete.");
            } else {
                for d in &report.deleted {
                    println!("deleted  {d}");
                }
                println!(
                    "Cluster \"{name}\" deleted ({:.2}s).",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    if report.left.is_empty() {
        Ok(())
    } else {
        Err(ProviderError::NotDeleted {
            provider: "local",
            cluster: name.clone(),
            left: report.left,
        })
    }
}

/// Everything `down` does, reporting instead of stopping at the first failure.
pub fn teardown(name: &str, layout: &Layout, options: &DownOptions) -> Report {
    let kubeconfig = options.kubeconfig.as_deref();
    let mut r = Report::default();
    let rec = layout.load();
    let state = layout.root.display().to_string();
    let t0 = Instant::now();
    let times = std::env::var_os("RKTUP_DOWN_TIMES").is_some();
    let mark = |what: &str| {
        if times {
            eprintln!(
                "TIMES {:>8.1} ms {what}",
                t0.elapsed().as_secs_f64() * 1000.0
            );
        }
    };

    // Supervisors first, so nothing restarts what is stopped below; then the agents, so
    // nothing restarts pods while they are being stopped. Without --graceful the control plane
    // goes with the agents (nothing below needs it) and everything is SIGKILLed at once.
    let pid_dir = layout.root.join("run");
    let grace = options.graceful.then_some(Duration::from_secs(10));
    if options.graceful {
        for (c, t, gone) in process::stop_supervisors(&pid_dir) {
            let what = format!("process supervisor of {c} (pid {})", t.pid);
            if gone {
                r.deleted.push(what);
            } else {
                r.left.push(what);
            }
        }
    } else {
        let sups = tracked_in(&pid_dir, "supervisor")
            .into_iter()
            .map(|(c, t)| (format!("process supervisor of {c} (pid {})", t.pid), t))
            .collect();
        stop_at_once(sups, None, &mut r);
    }
    let components = tracked_in(&pid_dir, "pid");
    let named = |keep: &dyn Fn(&str) -> bool| -> Vec<(String, process::Tracked)> {
        components
            .iter()
            .filter(|(c, _)| keep(c))
            .map(|(c, t)| (format!("process {c} (pid {})", t.pid), *t))
            .collect()
    };
    if options.graceful {
        stop_at_once(named(&|c| c != "controlplane"), grace, &mut r);
    } else {
        stop_at_once(named(&|_| true), None, &mut r);
    }
    mark("components");

    // Pods, node by node, inside the node's namespace.
    let mut namespaces: Vec<String> = rec
        .as_ref()
        .map(|rec| rec.nodes.iter().map(|n| n.netns.clone()).collect())
        .unwrap_or_default();
    for ns in network::netns_with_prefix(&layout::netns_prefix(name)) {
        let rest = &ns[layout::netns_prefix(name).len()..];
        if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) && !namespaces.contains(&ns)
        {
            namespaces.push(ns);
        }
    }
    let nodes_dir = layout.root.join("nodes");
    let node_dirs: Vec<String> = std::fs::read_dir(&nodes_dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    // Every node at once: a cluster with 100 pods goes in about the time of one.
    let results: Vec<(Vec<String>, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = node_dirs
            .iter()
            .map(|node| {
                let root = layout.node_root(node);
                let netns = rec
                    .as_ref()
                    .and_then(|rec| rec.nodes.iter().find(|n| &n.name == node))
                    .map(|n| n.netns.clone())
                    .filter(|ns| network::netns_path(ns).exists());
                let graceful = options.graceful;
                scope.spawn(move || remove_pods(node, &root, netns.as_deref(), graceful))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| (vec![], vec!["pods: a teardown thread panicked".into()]))
            })
            .collect()
    });
    for (deleted, left) in results {
        r.deleted.extend(deleted);
        r.left.extend(left);
    }
    mark("pods");

    if options.graceful {
        stop_at_once(named(&|c| c == "controlplane"), grace, &mut r);
    }
    // Anything else still running from this cluster's state (a stray pod supervisor).
    if layout.root.exists() {
        for (pid, cmd) in process::processes_mentioning(&format!("{state}/")) {
            // SAFETY: a process whose command line names this cluster's state directory.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            r.deleted.push(format!("stray process {pid} ({cmd})"));
        }
    }
    mark("stray");

    namespaces.push(layout::host_netns_name(name));
    let bridge = rec
        .as_ref()
        .map(|rec| rec.bridge.clone())
        .unwrap_or_else(|| layout::bridge_name(name));
    let had_bridge = network::link_exists(&bridge);
    let had_ns: Vec<String> = namespaces
        .iter()
        .filter(|ns| network::netns_path(ns).exists())
        .cloned()
        .collect();
    let left = network::teardown(name, &bridge, &namespaces);
    for ns in &had_ns {
        if !left.iter().any(|l| l.contains(ns.as_str())) {
            r.deleted.push(format!("network namespace {ns}"));
        }
    }
    if had_bridge && !network::link_exists(&bridge) {
        r.deleted.push(format!("bridge {bridge}"));
    }
    r.left.extend(left);

    mark("network");
    // Mounts under the state directory, then the directory itself.
    r.left.extend(umount_all_under(&layout.root));
    mark("mounts");
    if layout.root.exists() {
        match remove_dir_parallel(&layout.root) {
            Ok(()) => r.deleted.push(format!("state directory {state}")),
            Err(e) => r.left.push(format!("state directory {state}: {e}")),
        }
    }
    mark("state dir");

    let context = format!("rktup-{name}");
    let kc = kubeconfig
        .map(Path::to_path_buf)
        .or_else(|| rec.as_ref().and_then(|rec| rec.kubeconfig.clone()));
    match crate::user_kubeconfig::remove_context(kc.as_deref(), &context) {
        Ok(true) => r.deleted.push(format!("kubeconfig context {context}")),
        Ok(false) => {}
        Err(e) => r.left.push(format!("kubeconfig context {context}: {e}")),
    }
    r
}

/// The running processes the `<component>.<ext>` files of `run_dir` name (`pid`: the
/// components, `supervisor`: their supervisors).
fn tracked_in(run_dir: &Path, ext: &str) -> Vec<(String, process::Tracked)> {
    let mut v: Vec<(String, process::Tracked)> = std::fs::read_dir(run_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), process::running(&p)?)))
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Stops every process of `procs` (what to report, process) at once: SIGTERM and up to `grace`
/// for them all to exit, then SIGKILL; without a grace, SIGKILL straight away. Waited for
/// through pidfds, each reported deleted or left.
fn stop_at_once(procs: Vec<(String, process::Tracked)>, grace: Option<Duration>, r: &mut Report) {
    let mut held = Vec::new();
    for (what, t) in procs {
        match Pidfd::open(t.pid, Some(t.start_time)) {
            Some(p) => held.push((what, p)),
            None => r.deleted.push(what),
        }
    }
    let (names, mut fds): (Vec<String>, Vec<Pidfd>) = held.into_iter().unzip();
    let pids: Vec<i32> = fds.iter().map(Pidfd::pid).collect();
    if let Some(grace) = grace {
        for p in &fds {
            p.signal(libc::SIGTERM);
        }
        fds = pidfd::wait_gone(fds, Instant::now() + grace);
    }
    let left: Vec<i32> = pidfd::kill_all(fds, Instant::now() + Duration::from_secs(5))
        .iter()
        .map(Pidfd::pid)
        .collect();
    for (what, pid) in names.into_iter().zip(pids) {
        reap(pid);
        if left.contains(&pid) {
            r.left.push(what);
        } else {
            r.deleted.push(what);
        }
    }
}

/// Collects the exit status if the process is our child (tests run `down` in-process).
fn reap(pid: i32) {
    let mut st = 0;
    // SAFETY: non-blocking wait on one pid.
    unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
}

/// Removes every pod of one node with the runtime library, inside the node's namespace when
/// it still exists: all killed at once (`Runtime::kill_all`: their directories go with the
/// state directory), or with `graceful` stopped one by one with their grace periods and
/// removed. Returns (deleted, left).
fn remove_pods(
    node: &str,
    root: &Path,
    netns: Option<&str>,
    graceful: bool,
) -> (Vec<String>, Vec<String>) {
    let node = node.to_string();
    let root = root.to_path_buf();
    let work = move || {
        let mut deleted = Vec::new();
        let mut left = Vec::new();
        if !root.join("pods").exists() {
            return (deleted, left);
        }
        let rt = match Runtime::new(RuntimeConfig::new(&root)) {
            Ok(rt) => rt,
            Err(e) => {
                left.push(format!("pods of {node}: {e}"));
                return (deleted, left);
            }
        };
        let pods = rt.list();
        let what = |pod: &rktup_runtime::runtime::PodEntry| {
            format!(
                "pod k8s_{} ({}/{}) on {node}",
                pod.plan.uuid, pod.plan.namespace, pod.plan.name
            )
        };
        // Threads made here are in the node's namespace too (they inherit it), so each pod's
        // network is torn down where it was made.
        let results: Vec<(String, Result<(), String>)> = if graceful {
            pods.iter()
                .map(|p| (what(p), rt.remove(p).map_err(|e| e.to_string())))
                .collect()
        } else {
            let results = rt.kill_all(&pods, NetworkTeardown::WithNode);
            pods.iter()
                .zip(results)
                .map(|(p, r)| (what(p), r.map_err(|e| e.to_string())))
                .collect()
        };
        for (what, r) in results {
            match r {
                Ok(()) => deleted.push(what),
                Err(e) => left.push(format!("{what}: {e}")),
            }
        }
        (deleted, left)
    };
    match netns {
        Some(ns) => network::in_netns(ns, work)
            .unwrap_or_else(|e| (vec![], vec![format!("pods in {ns}: {e}")])),
        None => work(),
    }
}

/// How many threads share the unmounts and the state directory's removal: each unmount
/// waits for an RCU grace period in the kernel, which waits taken together share.
const TEARDOWN_THREADS: usize = 16;

/// Lazily unmounts every mount under `dir`, several at once (deepest first within each
/// thread's share; a detached parent takes its children with it). Returns the mounts still
/// there afterwards, with the error of their unmount.
fn umount_all_under(dir: &Path) -> Vec<String> {
    let mounts = mounts_under(dir);
    if mounts.is_empty() {
        return vec![];
    }
    let chunk = mounts.len().div_ceil(TEARDOWN_THREADS);
    let errors: Vec<(PathBuf, std::io::Error)> = std::thread::scope(|scope| {
        let handles: Vec<_> = mounts
            .chunks(chunk)
            .map(|ms| {
                scope.spawn(move || {
                    ms.iter()
                        .filter_map(|m| umount_detach(m).err().map(|e| (m.clone(), e)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    // A mount whose parent went first fails its own unmount yet is gone: only what is still
    // listed is left.
    let still = mounts_under(dir);
    still
        .iter()
        .map(|m| match errors.iter().find(|(p, _)| p == m) {
            Some((_, e)) => format!("mount {}: {e}", m.display()),
            None => format!("mount {}: still mounted", m.display()),
        })
        .collect()
}

/// `remove_dir_all(root)`, with its bulk (the pods' directories, image layers) split into
/// subtrees removed by several threads at once: on a busy disk each unlink waits for the
/// journal, and those waits overlap.
fn remove_dir_parallel(root: &Path) -> std::io::Result<()> {
    // Directories level by level until there are enough subtrees to share; files above them
    // go with the final pass.
    let mut units = vec![root.to_path_buf()];
    for _ in 0..6 {
        if units.len() >= 4 * TEARDOWN_THREADS {
            break;
        }
        let next: Vec<PathBuf> = units
            .iter()
            .flat_map(|u| std::fs::read_dir(u).into_iter().flatten().flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        if next.is_empty() {
            break;
        }
        units = next;
    }
    if units.len() > 1 {
        let chunk = units.len().div_ceil(TEARDOWN_THREADS);
        std::thread::scope(|scope| {
            for us in units.chunks(chunk) {
                scope.spawn(move || {
                    for u in us {
                        // What fails here fails the final pass too, which reports it.
                        let _ = std::fs::remove_dir_all(u);
                    }
                });
            }
        });
    }
    std::fs::remove_dir_all(root)
}

/// Lazily unmounts `target` (umount2 with MNT_DETACH): gone from the tree at once, released
/// when no longer busy.
fn umount_detach(target: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let t = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a valid NUL-terminated path for the call's duration.
    if unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(s: &str) -> PathBuf {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(Ok(v)) = s.get(i + 1..i + 4).map(|o| u8::from_str_radix(o, 8)) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(
            unescape_mount_path("/var/lib/a\\040b"),
            PathBuf::from("/var/lib/a b")
        );
        assert_eq!(unescape_mount_path("/plain"), PathBuf::from("/plain"));
    }
}
