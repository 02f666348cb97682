//! kubelet's `GET /stats/summary`: the node's and its pods' resource usage as the Summary of
//! k8s.io/kubelet/pkg/apis/stats/v1alpha1 (what metrics-server before 0.6 scraped and what
//! `kubectl get --raw /api/v1/nodes/<node>/proxy/stats/summary` shows), and the same numbers for
//! `/metrics/resource` (`metrics.rs`). Pods and containers are read from their cgroups through
//! the runtime (`Runtime::usage`); the node from /proc (cpu from /proc/stat, memory from
//! /proc/meminfo and /proc/vmstat, its interfaces from /proc/net/dev of the agent's network
//! namespace) and statvfs of the root and image directories.

use rktup_runtime::pod::PodState;
use rktup_runtime::runtime::{CgroupUsage, PodEntry, Runtime};
// serde through k8s-openapi's re-export (each derive says `crate = ...`): the same serde the
// agent already links, without a line of its own in the shared Cargo.lock.
use k8s_openapi::serde::{self, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

/// A sample's time: milliseconds since the epoch (the Prometheus timestamps), written in JSON
/// as metav1.Time writes it (RFC 3339, whole seconds, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time(pub i64);

impl Time {
    pub fn now() -> Time {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Time(ms)
    }
    pub fn from_secs(s: i64) -> Time {
        Time(s.saturating_mul(1000))
    }
    pub fn secs(self) -> i64 {
        self.0.div_euclid(1000)
    }
}

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = jiff::Timestamp::from_second(self.secs()).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        s.collect_str(&t.strftime("%Y-%m-%dT%H:%M:%SZ"))
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(crate = "k8s_openapi::serde")]
pub struct Summary {
    pub node: NodeStats,
    pub pods: Vec<PodStats>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(crate = "k8s_openapi::serde")]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    pub start_time: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rlimit: Option<RlimitStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap: Option<SwapStats>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(crate = "k8s_openapi::serde")]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    pub time: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(crate = "k8s_openapi::serde")]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_faults: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub major_page_faults: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(crate = "k8s_openapi::serde")]
#[serde(rename_all = "camelCase")]
pub struct SwapStats {
    pub time: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_available_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_usage_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(crate = "k8s_openapi::serde")]
#[serde(rename_all = "camelCase")]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// The default interface's counters inline (kubelet's `eth0`), then every interface.
#[derive(Debug, Clone, Serialize)]
#[serde(crate = "k8s_openapi::serde")]
pub struct NetworkStats {
    pub time: Time,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub default: Option<InterfaceStats>,
    pub interfaces: Vec<InterfaceStats>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(crate = "k8s_openapi::serde")]
#[serde(rename_all = "camelCase")]
pub struct FsStats {
    pub time: Time,
    pub available_bytes: u64,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub inodes_free: u64,
    pub inodes: u64,
    pub inodes_used: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(crate = "k8s_openapi::serde")]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStats {
    pub image_fs: FsStats,
    pub container_fs: FsStats,
}

#[derive(Debug, Clone, Serialize)]
#[serde(crate = "k8s_openapi::serde")]
pub struct RlimitStats {
    pub time: Time,
    pub maxpid: u64,
    pub curproc: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(crate = "k8s_openapi::serde")]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(crate = "k8s_openapi::serde")]
pub struct ProcessStats {
    pub process_count: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(crate = "k8s_openapi::serde")]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodReference,
    pub start_time: Time,
    pub containers: Vec<ContainerStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    #[serde(rename = "process_stats", skip_serializing_if = "Option::is_none")]
    pub process_stats: Option<ProcessStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap: Option<SwapStats>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(crate = "k8s_openapi::serde")]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub name: String,
    pub start_time: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap: Option<SwapStats>,
}

/// Recent CPU samples (cpu ns, at ns; oldest first) of each node, pod and container (by key):
/// usageNanoCores is the rate since the newest sample at least [`RATE_WINDOW`] old, else since
/// the oldest, as kubelet rates against cAdvisor's samples taken a housekeeping interval apart
/// (two reads a few milliseconds apart would see the counter still). Keys not seen in a
/// summary are dropped by it, so the map holds only what runs.
static CPU_SAMPLES: Mutex<BTreeMap<String, Vec<(u64, i64)>>> = Mutex::new(BTreeMap::new());

const RATE_WINDOW: i64 = 1_000_000_000;

/// The rate (nanoseconds of CPU per second) of `key` from this sample; None the first time,
/// or when the counter went back (a restarted container).
fn nano_cores(seen: &mut Vec<String>, key: String, cpu_ns: u64, at_ns: i64) -> Option<u64> {
    let mut samples = CPU_SAMPLES.lock().ok()?;
    let v = samples.entry(key.clone()).or_default();
    seen.push(key);
    // A counter that went back starts over.
    if v.last().is_some_and(|(c, t)| *c > cpu_ns || *t >= at_ns) {
        v.clear();
    }
    let base = v
        .iter()
        .rposition(|(_, t)| at_ns - t >= RATE_WINDOW)
        .unwrap_or(0);
    v.drain(..base);
    let rate = v.first().and_then(|(c, t)| {
        let dt = (at_ns - t) as u128;
        u64::try_from((cpu_ns - c) as u128 * 1_000_000_000 / dt).ok()
    });
    v.push((cpu_ns, at_ns));
    // Many reads within the window: keep the base and the newest few.
    if v.len() > 32 {
        v.remove(1);
    }
    rate
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// What kubelet's GetCPUAndMemoryStats leaves out (network, filesystems, rlimit, processes)
/// is skipped with `only_cpu_and_memory`.
pub fn summary(rt: &Runtime, node_name: &str, only_cpu_and_memory: bool) -> Summary {
    let mut seen = Vec::new();
    let node = node_stats(rt, node_name, only_cpu_and_memory, &mut seen);
    let mut pods: Vec<PodStats> = rt
        .list()
        .into_iter()
        .filter(|e| e.alive && matches!(e.status.state, PodState::Running | PodState::Stopping))
        .map(|e| pod_stats(rt, &e, node_name, only_cpu_and_memory, &mut seen))
        .collect();
    pods.sort_by(|a, b| {
        (&a.pod_ref.namespace, &a.pod_ref.name).cmp(&(&b.pod_ref.namespace, &b.pod_ref.name))
    });
    if let Ok(mut s) = CPU_SAMPLES.lock() {
        s.retain(|k, _| seen.contains(k));
    }
    Summary { node, pods }
}

fn cpu_stats(seen: &mut Vec<String>, key: String, cpu_ns: Option<u64>) -> Option<CpuStats> {
    let cpu_ns = cpu_ns?;
    let at = now_ns();
    Some(CpuStats {
        time: Time(at / 1_000_000),
        usage_nano_cores: nano_cores(seen, key, cpu_ns, at),
        usage_core_nano_seconds: Some(cpu_ns),
    })
}

/// A cgroup's memory as kubelet reports it: availableBytes only under a limit (limit minus
/// working set).
fn memory_stats(u: &CgroupUsage, time: Time) -> Option<MemoryStats> {
    let ws = u.memory_working_set_bytes?;
    Some(MemoryStats {
        time,
        available_bytes: u.memory_limit_bytes.map(|l| l.saturating_sub(ws)),
        usage_bytes: u.memory_usage_bytes,
        working_set_bytes: Some(ws),
        rss_bytes: u.memory_rss_bytes,
        page_faults: u.page_faults,
        major_page_faults: u.major_page_faults,
    })
}

fn swap_stats(u: &CgroupUsage, time: Time) -> Option<SwapStats> {
    Some(SwapStats {
        time,
        swap_available_bytes: None,
        swap_usage_bytes: Some(u.swap_usage_bytes?),
    })
}

fn pod_stats(
    rt: &Runtime,
    e: &PodEntry,
    node_name: &str,
    only_cpu_and_memory: bool,
    seen: &mut Vec<String>,
) -> PodStats {
    let plan = &e.plan;
    // A static pod is known to the API (and to metrics-server) by its mirror pod's name.
    let name = match plan.source {
        Some(_) => format!("{}-{node_name}", plan.name),
        None => plan.name.clone(),
    };
    let st = rt.status(e).unwrap_or_else(|_| e.status.clone());
    let mut containers = Vec::new();
    for c in st
        .init_containers
        .iter()
        .chain(st.containers.iter())
        .filter(|c| c.state == "running")
    {
        let Some(u) = rt.usage(e, Some(&c.name)) else {
            continue;
        };
        let time = Time::now();
        containers.push(ContainerStats {
            name: c.name.clone(),
            start_time: Time::from_secs(c.started_at.unwrap_or(plan.created_at)),
            cpu: cpu_stats(
                seen,
                format!("{}/{}/{}", plan.uuid, c.name, c.restart_count),
                u.cpu_ns,
            ),
            memory: memory_stats(&u, time),
            swap: swap_stats(&u, time),
        });
    }
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    let usage = rt.usage(e, None);
    let time = Time::now();
    let network = match st.infra_pid {
        Some(pid) if !only_cpu_and_memory && !plan.host_network => {
            std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
                .ok()
                .map(|t| network_stats(&t, time))
        }
        _ => None,
    };
    PodStats {
        pod_ref: PodReference {
            name,
            namespace: plan.namespace.clone(),
            uid: plan.uid.clone(),
        },
        start_time: Time::from_secs(st.started_at.unwrap_or(plan.created_at)),
        containers,
        cpu: usage
            .as_ref()
            .and_then(|u| cpu_stats(seen, plan.uuid.clone(), u.cpu_ns)),
        memory: usage.as_ref().and_then(|u| memory_stats(u, time)),
        network,
        process_stats: usage
            .as_ref()
            .and_then(|u| u.processes)
            .filter(|_| !only_cpu_and_memory)
            .map(|process_count| ProcessStats { process_count }),
        swap: usage.as_ref().and_then(|u| swap_stats(u, time)),
    }
}

fn node_stats(
    rt: &Runtime,
    node_name: &str,
    only_cpu_and_memory: bool,
    seen: &mut Vec<String>,
) -> NodeStats {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let vmstat = std::fs::read_to_string("/proc/vmstat").unwrap_or_default();
    let time = Time::now();
    let mem = NodeMemory::parse(&meminfo, &vmstat);
    let mut node = NodeStats {
        node_name: node_name.to_string(),
        start_time: Time::from_secs(boot_time(&stat).unwrap_or(0)),
        cpu: cpu_stats(seen, "node".into(), node_cpu_ns(&stat, clock_ticks())),
        memory: mem.as_ref().map(|m| m.stats(time)),
        network: None,
        fs: None,
        runtime: None,
        rlimit: None,
        swap: mem.as_ref().map(|m| SwapStats {
            time,
            swap_available_bytes: Some(m.swap_free),
            swap_usage_bytes: Some(m.swap_total.saturating_sub(m.swap_free)),
        }),
    };
    if only_cpu_and_memory {
        return node;
    }
    node.network = std::fs::read_to_string("/proc/net/dev")
        .ok()
        .map(|t| network_stats(&t, time));
    node.fs = fs_stats(&rt.cfg.root_dir, time, None);
    // The image store's filesystem; its used bytes are the images' (as the CRI's ImageFsInfo).
    let images: u64 = rt
        .store
        .list()
        .map(|l| l.iter().map(|r| r.size).sum())
        .unwrap_or(0);
    node.runtime = fs_stats(rt.store.root(), time, Some(images)).map(|f| RuntimeStats {
        image_fs: f.clone(),
        container_fs: f,
    });
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    node.rlimit = pid_max.map(|maxpid| RlimitStats {
        time,
        maxpid,
        curproc: process_count(),
    });
    node
}

/// The node's CPU time in nanoseconds from /proc/stat's `cpu` line: every state but idle and
/// iowait (guest time is already in user and nice), in `ticks_per_sec` units.
pub fn node_cpu_ns(stat: &str, ticks_per_sec: u64) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| v.get(*i))
        .sum();
    if ticks_per_sec == 0 {
        return None;
    }
    Some((busy as u128 * 1_000_000_000 / ticks_per_sec as u128) as u64)
}

fn boot_time(stat: &str) -> Option<i64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn process_count() -> u64 {
    // SAFETY: sysinfo fills the zeroed struct it is given.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    if unsafe { libc::sysinfo(&mut si) } == 0 {
        u64::from(si.procs)
    } else {
        0
    }
}

/// The node's memory as cAdvisor reads the root container's: usage = MemTotal - MemFree,
/// working set = usage - Inactive(file), available = MemTotal - working set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMemory {
    pub total: u64,
    pub usage: u64,
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    pub swap_total: u64,
    pub swap_free: u64,
}

impl NodeMemory {
    pub fn parse(meminfo: &str, vmstat: &str) -> Option<NodeMemory> {
        let kb = |key: &str| -> Option<u64> {
            meminfo.lines().find_map(|l| {
                let rest = l.strip_prefix(key)?.strip_prefix(':')?;
                let n: u64 = rest.split_whitespace().next()?.parse().ok()?;
                Some(n.saturating_mul(1024))
            })
        };
        let vm = |key: &str| -> Option<u64> {
            vmstat.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        };
        let total = kb("MemTotal")?;
        let usage = total.saturating_sub(kb("MemFree")?);
        Some(NodeMemory {
            total,
            usage,
            working_set: usage.saturating_sub(kb("Inactive(file)").unwrap_or(0)),
            rss: kb("AnonPages").unwrap_or(0),
            page_faults: vm("pgfault"),
            major_page_faults: vm("pgmajfault"),
            swap_total: kb("SwapTotal").unwrap_or(0),
            swap_free: kb("SwapFree").unwrap_or(0),
        })
    }

    fn stats(&self, time: Time) -> MemoryStats {
        MemoryStats {
            time,
            available_bytes: Some(self.total.saturating_sub(self.working_set)),
            usage_bytes: Some(self.usage),
            working_set_bytes: Some(self.working_set),
            rss_bytes: Some(self.rss),
            page_faults: self.page_faults,
            major_page_faults: self.major_page_faults,
        }
    }
}

/// Interfaces from a /proc/net/dev (loopback left out, as cAdvisor does); the default
/// interface is kubelet's `eth0`.
pub fn network_stats(net_dev: &str, time: Time) -> NetworkStats {
    let mut interfaces: Vec<InterfaceStats> = net_dev
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            let v: Vec<u64> = rest
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            (name != "lo" && v.len() >= 16).then(|| InterfaceStats {
                name: name.to_string(),
                rx_bytes: v[0],
                rx_errors: v[2],
                tx_bytes: v[8],
                tx_errors: v[10],
            })
        })
        .collect();
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    NetworkStats {
        time,
        default: interfaces.iter().find(|i| i.name == "eth0").cloned(),
        interfaces,
    }
}

/// A filesystem's size and inodes (statvfs); `used` overrides the used bytes.
fn fs_stats(path: &Path, time: Time, used: Option<u64>) -> Option<FsStats> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs on a valid NUL-terminated path into a zeroed struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    let (blocks, bfree, bavail) = (st.f_blocks as u64, st.f_bfree as u64, st.f_bavail as u64);
    let (files, ffree) = (st.f_files as u64, st.f_ffree as u64);
    Some(FsStats {
        time,
        available_bytes: bavail.saturating_mul(frsize),
        capacity_bytes: blocks.saturating_mul(frsize),
        used_bytes: used.unwrap_or(blocks.saturating_sub(bfree).saturating_mul(frsize)),
        inodes_free: ffree,
        inodes: files,
        inodes_used: files.saturating_sub(ffree),
    })
}

/// kubelet's `only_cpu_and_memory` query parameter (strconv.ParseBool; anything else false).
pub fn only_cpu_and_memory(query: Option<&str>) -> bool {
    let vals: Vec<String> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "only_cpu_and_memory")
        .map(|(_, v)| v.into_owned())
        .collect();
    matches!(
        vals.as_slice(),
        [v] if matches!(v.as_str(), "1" | "t" | "T" | "TRUE" | "true" | "True")
    )
}

/// The summary as kubelet's go-restful writes it: JSON indented by one space.
pub fn to_json(s: &Summary) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    if s.serialize(&mut ser).is_err() {
        return b"{}".to_vec();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_cpu_memory_and_network_from_proc() {
        let stat =
            "cpu  100 20 30 5000 40 5 5 10 7 0\ncpu0 1 2 3 4 5 6 7 8 9 0\nbtime 1700000000\n";
        // user+nice+system+irq+softirq+steal = 170 ticks of 1/100 s.
        assert_eq!(node_cpu_ns(stat, 100), Some(1_700_000_000));
        assert_eq!(boot_time(stat), Some(1_700_000_000));
        let meminfo = "MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    600 kB\n\
                       AnonPages:       300 kB\nInactive(file):  100 kB\nSwapTotal:        50 kB\n\
                       SwapFree:         20 kB\n";
        let m = NodeMemory::parse(meminfo, "pgfault 9\npgmajfault 1\n").expect("meminfo");
        assert_eq!(m.usage, 800 * 1024);
        assert_eq!(m.working_set, 700 * 1024);
        let s = m.stats(Time(0));
        assert_eq!(s.available_bytes, Some(300 * 1024));
        assert_eq!((s.page_faults, s.major_page_faults), (Some(9), Some(1)));
        let dev = "Inter-|   Receive                                                |  Transmit\n \
                   face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                   lo: 10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n  \
                   eth0: 1000 10 2 0 0 0 0 0 500 5 1 0 0 0 0 0\n";
        let n = network_stats(dev, Time(0));
        assert_eq!(n.interfaces.len(), 1);
        let v = serde_json::to_value(&n).expect("json");
        assert_eq!(v["name"], "eth0");
        assert_eq!(v["rxBytes"], 1000);
        assert_eq!(v["rxErrors"], 2);
        assert_eq!(v["txBytes"], 500);
        assert_eq!(v["txErrors"], 1);
        assert_eq!(v["time"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn nano_cores_are_the_rate_over_at_least_a_second_when_there_is_one() {
        let mut seen = vec![];
        let key = format!("test-{}", std::process::id());
        let s = |seen: &mut Vec<String>, cpu: u64, at_ms: i64| {
            nano_cores(seen, key.clone(), cpu, at_ms * 1_000_000)
        };
        assert_eq!(s(&mut seen, 1_000, 1_000), None);
        // Half a core over two seconds.
        assert_eq!(s(&mut seen, 1_000_001_000, 3_000), Some(500_000_000));
        // 10 ms later: against the first sample, 2.01 s before, not the one 10 ms before.
        assert_eq!(s(&mut seen, 1_010_001_000, 3_010), Some(502_487_562));
        // 1.5 s after that: against the newest at least a second old (3.010 s).
        assert_eq!(s(&mut seen, 1_760_001_000, 4_510), Some(500_000_000));
        // A counter that went back (a new container) has no rate.
        assert_eq!(s(&mut seen, 5, 5_000), None);
        assert_eq!(s(&mut seen, 250_000_005, 5_500), Some(500_000_000));
        assert!(CPU_SAMPLES.lock().unwrap()[&key].len() <= 2);
    }

    #[test]
    fn only_cpu_and_memory_parses_like_strconv_parse_bool() {
        assert!(only_cpu_and_memory(Some("only_cpu_and_memory=true")));
        assert!(only_cpu_and_memory(Some("only_cpu_and_memory=1")));
        assert!(!only_cpu_and_memory(Some("only_cpu_and_memory=yes")));
        assert!(!only_cpu_and_memory(Some(
            "only_cpu_and_memory=true&only_cpu_and_memory=true"
        )));
        assert!(!only_cpu_and_memory(None));
    }

    #[test]
    fn times_are_whole_seconds_in_utc() {
        let v = serde_json::to_value(Time(1_764_896_123_999)).expect("json");
        assert_eq!(v, "2025-12-05T00:55:23Z");
    }
}
