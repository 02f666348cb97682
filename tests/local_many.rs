//! Many clusters on one machine (issue 18): ten one-node clusters brought up at once, side by
//! side — each with its own API port, node network, bridge, namespaces and nftables tables (in
//! its nodes' namespaces, none on the host) —
//! each used (a pod Running, `kubectl get nodes` through its own context of one shared
//! kubeconfig, which the ten `up`s all write at once), then all taken down at once with nothing
//! left behind. It also looks at what kind users run out of with many clusters: inotify
//! instances (fs.inotify.max_user_instances, 128 by default, shared by every process of a
//! user) and file descriptors (RLIMIT_NOFILE): what the clusters' processes hold is counted
//! and printed, and must stay well within the limits.

use rktup_testkit::local::{Home, LocalCluster};
use rktup_testkit::{unique, wait_for, Images, Registry};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CLUSTERS: usize = 10;

/// Pids in a cluster's `run/*.pid` and `run/*.supervisor` files that are alive.
fn cluster_pids(state_dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(state_dir.join("run"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = e.path();
        let ext = p.extension().and_then(|x| x.to_str());
        if !matches!(ext, Some("pid" | "supervisor")) {
            continue;
        }
        // "<pid> <start time>"
        let pid = std::fs::read_to_string(&p).ok().and_then(|t| {
            t.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u32>().ok())
        });
        if let Some(pid) = pid.filter(|p| Path::new(&format!("/proc/{p}")).exists()) {
            out.push(pid);
        }
    }
    out
}

/// `roots` and every process descending from them (the agents' pod supervisors and pods).
fn with_descendants(roots: &[u32]) -> BTreeSet<u32> {
    let mut parent = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces and parens.
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent.push((pid, ppid));
        }
    }
    let mut all: BTreeSet<u32> = roots.iter().copied().collect();
    loop {
        let before = all.len();
        for (pid, ppid) in &parent {
            if all.contains(ppid) {
                all.insert(*pid);
            }
        }
        if all.len() == before {
            return all;
        }
    }
}

/// (open descriptors, of which inotify instances) of process `pid`.
fn fds(pid: u32) -> (usize, usize) {
    let mut all = 0;
    let mut inotify = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        all += 1;
        if std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().contains("inotify")) {
            inotify += 1;
        }
    }
    (all, inotify)
}

/// The soft RLIMIT_NOFILE of process `pid` (from /proc/<pid>/limits).
fn nofile(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

fn sysctl(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn ten_clusters_side_by_side() {
    if !rktup_testkit::can_run_as_root("local_many", "`rktup local up`") {
        return;
    }
    let base = unique();
    let images = Images::build();
    let registry = Registry::start();
    let image = registry.push(&images.layout, "busybox", "many:1.0");
    // One state root and one kubeconfig for all ten.
    let home = Home::new();
    let clusters: Vec<LocalCluster> = (0..CLUSTERS)
        .map(|i| {
            rktup_testkit::local_cluster!("many")
                .name(format!("many{base}x{i}"))
                .home(&home)
                .wait("120s")
                .insecure_registry(&registry.addr)
                .build()
        })
        .collect();

    let host_tables = nft_tables(None);

    // Up, all at once.
    std::thread::scope(|s| {
        let ups: Vec<_> = clusters.iter().map(|c| s.spawn(|| c.up())).collect();
        for u in ups {
            u.join().expect("up thread");
        }
    });

    // Nothing shared: API ports, node networks, bridges, namespaces.
    let list = clusters[0].rktup_ok(&["local", "list", "-o", "json"]);
    let list: Value = serde_json::from_str(&list).expect("list json");
    let listed = list.as_array().expect("array");
    assert_eq!(listed.len(), CLUSTERS, "{list}");
    let mut servers = BTreeSet::new();
    let mut networks = BTreeSet::new();
    let mut bridges = BTreeSet::new();
    let mut netns = BTreeSet::new();
    for c in listed {
        assert_eq!(c["running"], true, "{c}");
        servers.insert(c["server"].as_str().unwrap_or_default().to_string());
        let name = c["name"].as_str().unwrap_or_default();
        let rec: Value = serde_json::from_str(
            &std::fs::read_to_string(home.state_root().join(format!("local-{name}/cluster.json")))
                .expect("record"),
        )
        .expect("record json");
        networks.insert(rec["node_network"].to_string());
        bridges.insert(rec["bridge"].as_str().unwrap_or_default().to_string());
        for n in rec["nodes"].as_array().into_iter().flatten() {
            netns.insert(n["netns"].as_str().unwrap_or_default().to_string());
        }
    }
    for (what, set) in [
        ("API servers", &servers),
        ("node networks", &networks),
        ("bridges", &bridges),
        ("node namespaces", &netns),
    ] {
        assert_eq!(set.len(), CLUSTERS, "{what} not distinct: {set:?}");
    }
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout).into_owned();
    for b in &bridges {
        assert!(links.contains(&format!(": {b}:")), "bridge {b} missing");
    }
    // nftables: each node's rules (masquerade, service proxy) are tables in its own namespace,
    // so clusters cannot clash there, and none of them lands on the host.
    for ns in &netns {
        let t = nft_tables(Some(ns));
        assert!(t.contains("rktup-node"), "no rktup-node table in {ns}: {t}");
    }
    no_cluster_tables_on_host(&host_tables, base);

    // Each cluster used through its own context: its one node, and a pod Running there.
    let pod = |n: &str| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"},
            "spec": {"containers": [{"name": "c", "image": image,
                                     "command": ["sleep", "3600"]}]}
        })
        .to_string()
        .replace("sleeper", &format!("sleeper-{n}"))
    };
    for c in &clusters {
        let n = c.name();
        let nodes = c.kubectl_ok(&["get", "nodes", "-o", "name"]);
        assert_eq!(
            nodes.trim(),
            format!("node/{n}-node-1"),
            "context rktup-{n}"
        );
        let f = c.write(&format!("{n}.json"), &pod(n));
        c.kubectl_ok(&["apply", "-f", &f]);
    }
    for c in &clusters {
        let n = c.name();
        wait_for(
            &format!("pod Running in {n}"),
            Duration::from_secs(120),
            || {
                let o = c.kubectl(&["get", "pod", &format!("sleeper-{n}"), "-o", "json"]);
                let p: Value = serde_json::from_slice(&o.stdout).ok()?;
                assert_ne!(p["status"]["phase"], "Failed", "{p}");
                (p["status"]["phase"] == "Running").then_some(())
            },
        );
    }

    // inotify and descriptors held by all ten clusters' processes.
    let max_instances = sysctl("/proc/sys/fs/inotify/max_user_instances");
    let max_watches = sysctl("/proc/sys/fs/inotify/max_user_watches");
    let mut total_fds = 0;
    let mut total_inotify = 0;
    let mut worst = (0usize, u64::MAX, 0u32);
    let mut processes = 0;
    let roots: Vec<u32> = clusters
        .iter()
        .flat_map(|c| cluster_pids(&c.state_dir()))
        .collect();
    {
        for pid in with_descendants(&roots) {
            let (all, inotify) = fds(pid);
            processes += 1;
            total_fds += all;
            total_inotify += inotify;
            let limit = nofile(pid);
            if all as f64 / limit as f64 > worst.0 as f64 / worst.1 as f64 {
                worst = (all, limit, pid);
            }
        }
    }
    println!(
        "{CLUSTERS} clusters: {processes} processes (components, supervisors, pods) hold {total_fds} descriptors, \
         {total_inotify} inotify instances (fs.inotify.max_user_instances {max_instances}, \
         max_user_watches {max_watches}); the fullest process {} has {} of RLIMIT_NOFILE {}",
        worst.2, worst.0, worst.1
    );
    assert!(processes >= 2 * CLUSTERS, "found {processes} processes");
    assert!(
        (total_inotify as u64) * 4 <= max_instances,
        "{total_inotify} inotify instances for {CLUSTERS} clusters: more than a quarter of max_user_instances {max_instances}"
    );
    assert!(
        (worst.0 as u64) * 4 <= worst.1,
        "process {} holds {} descriptors of its limit {}",
        worst.2,
        worst.0,
        worst.1
    );

    // Down, all at once; nothing left: state, bridges, namespaces, contexts.
    std::thread::scope(|s| {
        let downs: Vec<_> = clusters.iter().map(|c| s.spawn(|| c.down())).collect();
        for d in downs {
            d.join().expect("down thread");
        }
    });
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout).into_owned();
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let ns = String::from_utf8_lossy(&ns.stdout).into_owned();
    let kc = std::fs::read_to_string(home.kubeconfig()).unwrap_or_default();
    for c in &clusters {
        c.assert_nothing_left();
        let n = c.name();
        assert!(!c.state_dir().exists(), "state of {n} left");
        assert!(!kc.contains(&format!("rktup-{n}")), "context of {n} left");
        assert!(
            !ns.contains(&format!("rktup-{n}-")),
            "namespace of {n} left: {ns}"
        );
    }
    for b in &bridges {
        assert!(!links.contains(&format!(": {b}:")), "bridge {b} left");
    }
    no_cluster_tables_on_host(&host_tables, base);
}

/// No nftables table on the host that `up` made: none named as a node's, none named after these
/// clusters. (Other tests running at the same time may add host tables of their own, so the
/// list is not compared whole.)
fn no_cluster_tables_on_host(before: &str, base: u32) {
    let now = nft_tables(None);
    let old: BTreeSet<&str> = before.lines().collect();
    for t in now.lines().filter(|t| !old.contains(t)) {
        assert!(
            !t.contains("rktup-node") && !t.contains(&format!("many{base}x")),
            "host table {t:?} made by the clusters"
        );
    }
}

/// `nft list tables` on the host, or in network namespace `ns`.
fn nft_tables(ns: Option<&str>) -> String {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "nft"]);
            c
        }
        None => Command::new("nft"),
    };
    let o = c.args(["list", "tables"]).output().expect("run nft");
    assert!(
        o.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
