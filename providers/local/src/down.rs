//! `rktup local down`: stops the agents, every pod (in its node's namespace, so CNI tears its
//! network down where it was made), the control plane; removes namespaces, the bridge, the
//! iptables rule, leftover mounts and cgroups, the state directory and the kubeconfig context.
//! Works from the record, and without it from the naming rules, so a half-made cluster goes too.

use crate::layout::{self, Layout};
use crate::{network, process, require_root, Local};
use rktup_config::OutputFormat;
use rktup_provider::{DownOptions, ProviderError};
use rktup_runtime::runtime::{Runtime, RuntimeConfig};
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
        for l in &report.left {
            eprintln!("could not delete {l}");
        }
        Err(ProviderError::Other(format!(
            "{} thing(s) of cluster \"{name}\" could not be deleted (listed above); run `rktup local down --name {name}` again once fixed",
            report.left.len()
        )))
    }
}

/// Everything `down` does, reporting instead of stopping at the first failure.
pub fn teardown(name: &str, layout: &Layout, options: &DownOptions) -> Report {
    let kubeconfig = options.kubeconfig.as_deref();
    let mut r = Report::default();
    let rec = layout.load();
    let state = layout.root.display().to_string();

    // Supervisors first, so nothing restarts what is stopped below.
    let pid_dir = layout.root.join("run");
    for (c, t, gone) in process::stop_supervisors(&pid_dir) {
        let what = format!("process supervisor of {c} (pid {})", t.pid);
        if gone {
            r.deleted.push(what);
        } else {
            r.left.push(what);
        }
    }
    // Agents next, so nothing restarts pods while they are being stopped.
    let mut components: Vec<(String, PathBuf)> = std::fs::read_dir(&pid_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "pid"))
                .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p)))
                .collect()
        })
        .unwrap_or_default();
    components.sort_by_key(|(c, _)| c == "controlplane");
    let stop_component = |c: &str, p: &Path, r: &mut Report| {
        if let Some(t) = process::running(p) {
            if process::stop(t, Duration::from_secs(10)) {
                r.deleted.push(format!("process {c} (pid {})", t.pid));
            } else {
                r.left.push(format!("process {c} (pid {})", t.pid));
            }
        }
    };
    for (c, p) in components.iter().filter(|(c, _)| c != "controlplane") {
        stop_component(c, p, &mut r);
    }

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

    for (c, p) in components.iter().filter(|(c, _)| c == "controlplane") {
        stop_component(c, p, &mut r);
    }
    // Anything else still running from this cluster's state (a stray pod supervisor).
    if layout.root.exists() {
        for (pid, cmd) in process::processes_mentioning(&format!("{state}/")) {
            // SAFETY: a process whose command line names this cluster's state directory.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            r.deleted.push(format!("stray process {pid} ({cmd})"));
        }
    }

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

    // Mounts under the state directory (deepest first), then the directory itself.
    for m in mounts_under(&layout.root) {
        if let Err(e) = umount_detach(&m) {
            r.left.push(format!("mount {}: {e}", m.display()));
        }
    }
    if layout.root.exists() {
        match std::fs::remove_dir_all(&layout.root) {
            Ok(()) => r.deleted.push(format!("state directory {state}")),
            Err(e) => r.left.push(format!("state directory {state}: {e}")),
        }
    }

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

/// Removes every pod of one node with the runtime library, inside the node's namespace when
/// it still exists: all killed at once (SIGKILL, in parallel), or with `graceful` stopped one
/// by one with their grace periods. Returns (deleted, left).
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
            std::thread::scope(|scope| {
                let rt = &rt;
                let handles: Vec<_> = pods
                    .iter()
                    .map(|p| scope.spawn(move || rt.remove_now(p).map_err(|e| e.to_string())))
                    .collect();
                pods.iter()
                    .zip(handles)
                    .map(|(p, h)| {
                        let r = h
                            .join()
                            .unwrap_or_else(|_| Err("teardown thread panicked".into()));
                        (what(p), r)
                    })
                    .collect()
            })
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
