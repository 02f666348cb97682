//! kubelet's `GET /metrics/resource`: the resource metrics collector of
//! pkg/kubelet/metrics/collectors/resource_metrics.go (kubelet 1.33) over the same numbers as
//! `/stats/summary`, in the Prometheus text format (0.0.4) as client_golang writes it: families
//! sorted by name, empty ones left out, HELP with the stability level, series sorted by label
//! values, values in Go's shortest `%g`, sample timestamps in milliseconds. This is what
//! metrics-server (0.6 and later) scrapes for `kubectl top`. `scrape_error`, deprecated in 1.29,
//! is hidden from 1.30 on as upstream hides it; `resource_scrape_error` replaces it.

use super::stats::{CpuStats, MemoryStats, Summary, SwapStats, Time};
use std::collections::BTreeMap;
use std::fmt::Write;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

struct Family {
    name: &'static str,
    help: &'static str,
    stable: bool,
    kind: Kind,
}

const NODE_CPU: Family = Family {
    name: "node_cpu_usage_seconds_total",
    help: "Cumulative cpu time consumed by the node in core-seconds",
    stable: true,
    kind: Kind::Counter,
};
const NODE_MEMORY: Family = Family {
    name: "node_memory_working_set_bytes",
    help: "Current working set of the node in bytes",
    stable: true,
    kind: Kind::Gauge,
};
const NODE_SWAP: Family = Family {
    name: "node_swap_usage_bytes",
    help: "Current swap usage of the node in bytes. Reported only on non-windows systems",
    stable: false,
    kind: Kind::Gauge,
};
const CONTAINER_CPU: Family = Family {
    name: "container_cpu_usage_seconds_total",
    help: "Cumulative cpu time consumed by the container in core-seconds",
    stable: true,
    kind: Kind::Counter,
};
const CONTAINER_MEMORY: Family = Family {
    name: "container_memory_working_set_bytes",
    help: "Current working set of the container in bytes",
    stable: true,
    kind: Kind::Gauge,
};
const CONTAINER_SWAP: Family = Family {
    name: "container_swap_usage_bytes",
    help:
        "Current amount of the container swap usage in bytes. Reported only on non-windows systems",
    stable: false,
    kind: Kind::Gauge,
};
const CONTAINER_START: Family = Family {
    name: "container_start_time_seconds",
    help: "Start time of the container since unix epoch in seconds",
    stable: true,
    kind: Kind::Gauge,
};
const POD_CPU: Family = Family {
    name: "pod_cpu_usage_seconds_total",
    help: "Cumulative cpu time consumed by the pod in core-seconds",
    stable: true,
    kind: Kind::Counter,
};
const POD_MEMORY: Family = Family {
    name: "pod_memory_working_set_bytes",
    help: "Current working set of the pod in bytes",
    stable: true,
    kind: Kind::Gauge,
};
const POD_SWAP: Family = Family {
    name: "pod_swap_usage_bytes",
    help: "Current amount of the pod swap usage in bytes. Reported only on non-windows systems",
    stable: false,
    kind: Kind::Gauge,
};
const SCRAPE_ERROR: Family = Family {
    name: "resource_scrape_error",
    help: "1 if there was an error while getting container metrics, 0 otherwise",
    stable: true,
    kind: Kind::Gauge,
};

/// One series: label pairs (names sorted, as client_golang sorts them), value, timestamp.
type Sample = (Vec<(&'static str, String)>, f64, Option<Time>);

/// The metrics text of `summary`.
pub fn render(summary: &Summary) -> String {
    let mut fams: BTreeMap<&'static str, (&Family, Vec<Sample>)> = BTreeMap::new();
    let mut add = |f: &'static Family, labels: Vec<(&'static str, String)>, v: f64, t| {
        fams.entry(f.name)
            .or_insert_with(|| (f, Vec::new()))
            .1
            .push((labels, v, t));
    };
    let cpu = |c: &Option<CpuStats>| {
        let c = c.as_ref()?;
        Some((c.usage_core_nano_seconds? as f64 / 1e9, c.time))
    };
    let mem = |m: &Option<MemoryStats>| {
        let m = m.as_ref()?;
        Some((m.working_set_bytes? as f64, m.time))
    };
    let swap = |s: &Option<SwapStats>| {
        let s = s.as_ref()?;
        Some((s.swap_usage_bytes? as f64, s.time))
    };
    let n = &summary.node;
    if let Some((v, t)) = cpu(&n.cpu) {
        add(&NODE_CPU, vec![], v, Some(t));
    }
    if let Some((v, t)) = mem(&n.memory) {
        add(&NODE_MEMORY, vec![], v, Some(t));
    }
    if let Some((v, t)) = swap(&n.swap) {
        add(&NODE_SWAP, vec![], v, Some(t));
    }
    for p in &summary.pods {
        let (pod, ns) = (&p.pod_ref.name, &p.pod_ref.namespace);
        for c in &p.containers {
            let labels = || {
                vec![
                    ("container", c.name.clone()),
                    ("namespace", ns.clone()),
                    ("pod", pod.clone()),
                ]
            };
            if c.start_time.secs() > 0 {
                add(
                    &CONTAINER_START,
                    labels(),
                    c.start_time.0 as f64 / 1e3,
                    None,
                );
            }
            if let Some((v, t)) = cpu(&c.cpu) {
                add(&CONTAINER_CPU, labels(), v, Some(t));
            }
            if let Some((v, t)) = mem(&c.memory) {
                add(&CONTAINER_MEMORY, labels(), v, Some(t));
            }
            if let Some((v, t)) = swap(&c.swap) {
                add(&CONTAINER_SWAP, labels(), v, Some(t));
            }
        }
        let labels = || vec![("namespace", ns.clone()), ("pod", pod.clone())];
        if let Some((v, t)) = cpu(&p.cpu) {
            add(&POD_CPU, labels(), v, Some(t));
        }
        if let Some((v, t)) = mem(&p.memory) {
            add(&POD_MEMORY, labels(), v, Some(t));
        }
        if let Some((v, t)) = swap(&p.swap) {
            add(&POD_SWAP, labels(), v, Some(t));
        }
    }
    // Reading the summary does not fail as a whole here: missing numbers are left out.
    add(&SCRAPE_ERROR, vec![], 0.0, None);
    let mut out = String::new();
    for (f, mut samples) in fams.into_values() {
        samples.sort_by(|a, b| {
            let va = a.0.iter().map(|(_, v)| v);
            let vb = b.0.iter().map(|(_, v)| v);
            va.cmp(vb).then(a.2.cmp(&b.2))
        });
        let _ = writeln!(
            out,
            "# HELP {} [{}] {}",
            f.name,
            if f.stable { "STABLE" } else { "ALPHA" },
            escape_help(f.help)
        );
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for (labels, v, t) in samples {
            out.push_str(f.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            out.push(' ');
            out.push_str(&go_float(v));
            if let Some(t) = t {
                let _ = write!(out, " {}", t.0);
            }
            out.push('\n');
        }
    }
    out
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A float as Go's `strconv.FormatFloat(v, 'g', -1, 64)` writes it (what expfmt uses): the
/// shortest digits that read back the same, in exponent form (`1.2e+07`, `1e-05`) when the
/// exponent is below -4 or at least 6.
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v == 0.0 {
        return "0".into();
    }
    // Rust's `{:e}` is the shortest round-tripping form too: `-1.2345e7`.
    let e = format!("{v:e}");
    let Some((mant, exp)) = e.split_once('e') else {
        return e;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    let neg = mant.starts_with('-');
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let nd = digits.len() as i32;
    let mut out = String::from(if neg { "-" } else { "" });
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if nd > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    } else {
        let dp = exp + 1;
        if dp <= 0 {
            out.push_str("0.");
            out.push_str(&"0".repeat((-dp) as usize));
            out.push_str(&digits);
        } else if dp >= nd {
            out.push_str(&digits);
            out.push_str(&"0".repeat((dp - nd) as usize));
        } else {
            out.push_str(&digits[..dp as usize]);
            out.push('.');
            out.push_str(&digits[dp as usize..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::stats::*;
    use super::*;

    #[test]
    fn floats_as_go_writes_them() {
        for (v, want) in [
            (0.0, "0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (11374592.0, "1.1374592e+07"),
            (1764896123.0, "1.764896123e+09"),
            (0.5, "0.5"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (12.345678901, "12.345678901"),
            (-2.5e-7, "-2.5e-07"),
            (1e21, "1e+21"),
            (1.5e300, "1.5e+300"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(go_float(v), want, "{v}");
        }
    }

    fn cpu(ns: u64, t: i64) -> Option<CpuStats> {
        Some(CpuStats {
            time: Time(t),
            usage_nano_cores: None,
            usage_core_nano_seconds: Some(ns),
        })
    }

    fn mem(ws: u64, t: i64) -> Option<MemoryStats> {
        Some(MemoryStats {
            time: Time(t),
            available_bytes: None,
            usage_bytes: Some(ws),
            working_set_bytes: Some(ws),
            rss_bytes: None,
            page_faults: None,
            major_page_faults: None,
        })
    }

    fn container(name: &str, ns: u64, ws: u64) -> ContainerStats {
        ContainerStats {
            name: name.into(),
            start_time: Time::from_secs(1_764_896_000),
            cpu: cpu(ns, 1_764_896_123_456),
            memory: mem(ws, 1_764_896_123_457),
            swap: None,
        }
    }

    fn pod(ns: &str, name: &str, containers: Vec<ContainerStats>) -> PodStats {
        PodStats {
            pod_ref: PodReference {
                name: name.into(),
                namespace: ns.into(),
                uid: "u".into(),
            },
            start_time: Time::from_secs(1_764_895_000),
            containers,
            cpu: cpu(3_000_000_000, 1_764_896_123_458),
            memory: mem(20 << 20, 1_764_896_123_458),
            network: None,
            process_stats: None,
            swap: None,
        }
    }

    /// The whole text of a node with two pods, one with a label value to escape, against what
    /// a kubelet's client_golang writes.
    #[test]
    fn resource_metrics_text_is_kubelets() {
        let s = Summary {
            node: NodeStats {
                node_name: "n".into(),
                start_time: Time(0),
                cpu: cpu(1_234_567_890_000, 1_764_896_123_000),
                memory: mem(1_073_741_824, 1_764_896_123_001),
                network: None,
                fs: None,
                runtime: None,
                rlimit: None,
                swap: Some(SwapStats {
                    time: Time(1_764_896_123_001),
                    swap_available_bytes: Some(0),
                    swap_usage_bytes: Some(0),
                }),
            },
            pods: vec![
                pod(
                    "kube-system",
                    "web-\"x\"",
                    vec![container("z", 500_000_000, 4096)],
                ),
                pod(
                    "default",
                    "burn",
                    vec![
                        container("sidecar", 1_000_000, 1 << 20),
                        container("app", 2_500_000_000, 70 << 20),
                    ],
                ),
            ],
        };
        let want = r#"# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="app",namespace="default",pod="burn"} 2.5 1764896123456
container_cpu_usage_seconds_total{container="sidecar",namespace="default",pod="burn"} 0.001 1764896123456
container_cpu_usage_seconds_total{container="z",namespace="kube-system",pod="web-\"x\""} 0.5 1764896123456
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="app",namespace="default",pod="burn"} 7.340032e+07 1764896123457
container_memory_working_set_bytes{container="sidecar",namespace="default",pod="burn"} 1.048576e+06 1764896123457
container_memory_working_set_bytes{container="z",namespace="kube-system",pod="web-\"x\""} 4096 1764896123457
# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="app",namespace="default",pod="burn"} 1.764896e+09
container_start_time_seconds{container="sidecar",namespace="default",pod="burn"} 1.764896e+09
container_start_time_seconds{container="z",namespace="kube-system",pod="web-\"x\""} 1.764896e+09
# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 1234.56789 1764896123000
# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 1.073741824e+09 1764896123001
# HELP node_swap_usage_bytes [ALPHA] Current swap usage of the node in bytes. Reported only on non-windows systems
# TYPE node_swap_usage_bytes gauge
node_swap_usage_bytes 0 1764896123001
# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace="default",pod="burn"} 3 1764896123458
pod_cpu_usage_seconds_total{namespace="kube-system",pod="web-\"x\""} 3 1764896123458
# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{namespace="default",pod="burn"} 2.097152e+07 1764896123458
pod_memory_working_set_bytes{namespace="kube-system",pod="web-\"x\""} 2.097152e+07 1764896123458
# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE resource_scrape_error gauge
resource_scrape_error 0
"#;
        assert_eq!(render(&s), want);
    }
}
