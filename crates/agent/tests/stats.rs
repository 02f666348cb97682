//! The kubelet port's resource usage endpoints, what metrics-server scrapes for `kubectl top`:
//! `/metrics/resource` (Prometheus text) and `/stats/summary` (JSON), read from the real cgroups
//! of a pod that burns CPU and fills memory, scraped over HTTPS with the API server's
//! kubelet-client identity under `--authorization-mode=Webhook`, and with a service account's
//! bearer token (`--authentication-token-webhook`, as metrics-server scrapes); identities
//! without RBAC for them get kubelet's 403 for the `nodes/metrics` and `nodes/stats`
//! subresources.

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use rktup_testkit::agent::*;
use rktup_testkit::{unique, wait_for};
use std::collections::BTreeMap;
use std::time::Duration;

const MIB: f64 = 1024.0 * 1024.0;
/// What the `hog` container writes into its memory-backed emptyDir (charged to its cgroup).
const FILL_MIB: u64 = 48;

/// One parsed series of the Prometheus text: labels, value, timestamp.
#[derive(Debug, Clone)]
struct Series {
    labels: BTreeMap<String, String>,
    value: f64,
    ts: Option<i64>,
}

/// Families by name: HELP text, TYPE, series.
type Families = BTreeMap<String, (String, String, Vec<Series>)>;

/// The metrics text as a Prometheus text parser reads it (strictly enough to catch a format
/// slip: every family has HELP then TYPE before its series, series names match the family,
/// label values are quoted, timestamps are integers).
fn parse(text: &str) -> Families {
    let mut out = Families::new();
    let mut current: Option<String> = None;
    assert!(text.ends_with('\n'), "no final newline: {text:?}");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP text");
            assert!(!out.contains_key(name), "family {name} twice");
            out.insert(name.into(), (help.into(), String::new(), vec![]));
            current = Some(name.into());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE");
            assert_eq!(Some(name), current.as_deref(), "TYPE after its HELP");
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            out.get_mut(name).expect("family").1 = kind.into();
            continue;
        }
        let fam = current.clone().expect("series before any family");
        let (name_labels, rest) = match line.find('}') {
            Some(i) => (&line[..=i], line[i + 1..].trim_start()),
            None => line.split_once(' ').expect("series"),
        };
        let (name, labels) = match name_labels.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (name_labels, ""),
        };
        assert_eq!(name, fam, "series of another family: {line}");
        let mut map = BTreeMap::new();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
            map.insert(k.to_string(), v.trim_end_matches('"').to_string());
        }
        let mut fields = rest.split(' ');
        let value: f64 = fields.next().expect("value").parse().expect("float value");
        let ts = fields
            .next()
            .map(|t| t.parse::<i64>().expect("integer timestamp"));
        assert!(fields.next().is_none(), "{line}");
        out.get_mut(&fam).expect("family").2.push(Series {
            labels: map,
            value,
            ts,
        });
    }
    out
}

/// A series with its sample name, family TYPE and HELP.
type Read = (String, String, String, Series);

/// The same text read by an independent parser, the Prometheus Python client's (Debian's
/// python3-prometheus-client): (sample name, labels, value, timestamp ms) of each series in
/// order, with its family's TYPE and HELP; None (after `can_run`) without it.
fn python_parse(text: &str) -> Option<Vec<Read>> {
    const PY: &str = "/usr/bin/python3";
    let has = std::process::Command::new(PY)
        .args(["-c", "import prometheus_client.parser"])
        .status()
        .is_ok_and(|s| s.success());
    if !rktup_testkit::can_run("stats", (!has).then_some("python3-prometheus-client")) {
        return None;
    }
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    for s in f.samples:
        ts = None if s.timestamp is None else round(s.timestamp * 1000)
        out.append([s.name, f.type, f.documentation, s.labels, s.value, ts])
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(PY)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3 output");
    assert!(out.status.success(), "the Python parser refused:\n{text}");
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    Some(
        v.into_iter()
            .map(|r| {
                let labels = r[3]
                    .as_object()
                    .expect("labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                (
                    r[0].as_str().unwrap_or_default().to_string(),
                    r[1].as_str().unwrap_or_default().to_string(),
                    r[2].as_str().unwrap_or_default().to_string(),
                    Series {
                        labels,
                        value: r[4].as_f64().expect("value"),
                        ts: r[5].as_i64(),
                    },
                )
            })
            .collect(),
    )
}

fn one<'a>(m: &'a Families, fam: &str, labels: &[(&str, &str)]) -> Option<&'a Series> {
    m.get(fam)?.2.iter().find(|s| {
        s.labels.len() == labels.len()
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

#[test]
fn resource_metrics_and_summary_from_the_pods_cgroups() {
    if !rktup_testkit::can_run_as_root("stats", "pods and their cgroups") {
        return;
    }
    let mut c = ClusterNode::start(
        "st",
        &[
            "--authorization-mode=Webhook",
            "--authentication-token-webhook",
        ],
    );
    let cp = c.cp.as_ref().expect("control plane");
    // The API server's identity towards kubelets (bound to system:kubelet-api-admin).
    let apiserver = cp
        .issue_client_cert("kube-apiserver-kubelet-client", &[])
        .expect("kubelet client cert");
    let other = format!("other-{}", unique());
    let intruder = cp.issue_node_cert(&other).expect("node cert");
    let (port, node_name) = (c.kubelet_port, c.node_name.clone());
    let busybox = c.node.busybox.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let good = Some((apiserver.cert_pem.as_str(), apiserver.key_pem.as_str()));
        let get = |path: &str| call(port, "GET", path, good).expect("call");
        wait_for("the kubelet port", Duration::from_secs(30), || {
            call(port, "GET", "/healthz", good).ok()
        });
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "burn"},
            "spec": {
                "nodeName": node_name,
                "hostNetwork": true,
                "terminationGracePeriodSeconds": 1,
                "volumes": [{"name": "fill", "emptyDir": {"medium": "Memory"}}],
                "containers": [
                    {"name": "burner", "image": busybox,
                     "command": ["sh", "-c", "while :; do :; done"]},
                    {"name": "hog", "image": busybox,
                     "resources": {"limits": {"memory": "256Mi"}},
                     "volumeMounts": [{"name": "fill", "mountPath": "/fill"}],
                     "command": ["sh", "-c",
                        format!("dd if=/dev/zero of=/fill/blob bs=1048576 count={FILL_MIB} && touch /fill/done && exec sleep 1000")]}
                ]
            }
        }))
        .expect("pod");
        run_pod(&c.rt, &c.admin, &pod);
        // A pod in its own network namespace on a bridge, which sends to its gateway.
        let (_, subnet) = c.node.bridge_net("0.4.0");
        let gateway = subnet.replace(".0/24", ".1");
        let net: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "net"},
            "spec": {
                "nodeName": node_name,
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "n", "image": busybox, "command": ["sh", "-c",
                    format!("wget -q -T 2 -O /dev/null http://{gateway}:9/; exec sleep 1000")]}]
            }
        }))
        .expect("pod");
        run_pod(&c.rt, &c.admin, &net);
        let pods: Api<Pod> = c.api();
        let uid =
            c.rt.block_on(pods.get("burn"))
                .expect("pod")
                .metadata
                .uid
                .expect("uid");
        // A static pod: known by its mirror pod's name.
        c.node.put(
            "quiet.yaml",
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: quiet}}\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: q\n    image: {busybox}\n    command: [sleep, '1000']\n"
            ),
        );
        c.node.wait_pod("quiet", "running", 60, |p| {
            p["status"]["state"] == "running"
        });
        let quiet = format!("quiet-{node_name}");

        // ---- /metrics/resource ----
        let burner = [
            ("container", "burner"),
            ("namespace", "default"),
            ("pod", "burn"),
        ];
        let hog = [
            ("container", "hog"),
            ("namespace", "default"),
            ("pod", "burn"),
        ];
        let ws = "container_memory_working_set_bytes";
        let cpu = "container_cpu_usage_seconds_total";
        // The hog's blob is written, and the static pod's container started (the runtime pod
        // runs before its containers do).
        let q = [
            ("container", "q"),
            ("namespace", "default"),
            ("pod", quiet.as_str()),
        ];
        let (text, first) = wait_for("the hog's memory", Duration::from_secs(60), || {
            let a = get("/metrics/resource");
            assert_eq!(a.status, 200, "{}", a.body);
            let m = parse(&a.body);
            one(&m, cpu, &q)?;
            (one(&m, ws, &hog)?.value >= (FILL_MIB as f64) * MIB).then_some((a.body, m))
        });
        let before = now_ms();
        // kubelet 1.33's families (scrape_error is hidden since 1.30), with their stability.
        for (fam, kind, help) in [
            (
                "container_cpu_usage_seconds_total",
                "counter",
                "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
            ),
            (
                "container_memory_working_set_bytes",
                "gauge",
                "[STABLE] Current working set of the container in bytes",
            ),
            (
                "container_start_time_seconds",
                "gauge",
                "[STABLE] Start time of the container since unix epoch in seconds",
            ),
            (
                "node_cpu_usage_seconds_total",
                "counter",
                "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
            ),
            (
                "node_memory_working_set_bytes",
                "gauge",
                "[STABLE] Current working set of the node in bytes",
            ),
            (
                "pod_cpu_usage_seconds_total",
                "counter",
                "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
            ),
            (
                "pod_memory_working_set_bytes",
                "gauge",
                "[STABLE] Current working set of the pod in bytes",
            ),
            (
                "resource_scrape_error",
                "gauge",
                "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
            ),
        ] {
            let (h, k, _) = first
                .get(fam)
                .unwrap_or_else(|| panic!("no {fam} in:\n{text}"));
            assert_eq!((h.as_str(), k.as_str()), (help, kind), "{fam}");
        }
        assert!(!first.contains_key("scrape_error"), "{text}");
        // An independent parser reads the same series, values, timestamps and escapes.
        if let Some(py) = python_parse(&text) {
            let mine: Vec<Read> = first
                .iter()
                .flat_map(|(name, (help, kind, series))| {
                    series
                        .iter()
                        .map(move |s| (name.clone(), kind.clone(), help.clone(), s.clone()))
                })
                .collect();
            assert_eq!(py.len(), mine.len(), "{text}");
            for ((pn, pk, ph, ps), (mn, mk, mh, ms)) in py.iter().zip(&mine) {
                assert_eq!(
                    (pn, pk, ps.value, ps.ts),
                    (mn, mk, ms.value, ms.ts),
                    "{text}"
                );
                assert_eq!(ps.labels, ms.labels, "{text}");
                assert_eq!(ph, mh);
            }
        }
        let names: Vec<&String> = first.keys().collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "families sorted by name");
        assert_eq!(
            one(&first, "resource_scrape_error", &[])
                .expect("error")
                .value,
            0.0
        );
        // The node: CPU and memory with timestamps (what metrics-server requires non-zero).
        let node_cpu = one(&first, "node_cpu_usage_seconds_total", &[]).expect("node cpu");
        let node_mem = one(&first, "node_memory_working_set_bytes", &[]).expect("node mem");
        assert!(node_cpu.value > 0.0 && node_mem.value > 0.0, "{text}");
        assert!(
            node_cpu.ts.is_some_and(|t| t > 0 && t <= before),
            "{node_cpu:?}"
        );
        // The containers of both pods.
        let b1 = one(&first, cpu, &burner).expect("burner cpu").clone();
        assert!(b1.value > 0.0 && b1.ts.is_some(), "{b1:?}");
        assert!(one(&first, ws, &burner).expect("burner memory").value > 0.0);
        // The static pod by its mirror pod's name.
        assert!(one(&first, ws, &q).is_some(), "{text}");
        let start = one(&first, "container_start_time_seconds", &burner).expect("start");
        assert!(start.ts.is_none(), "start times carry no timestamp");
        assert!(
            start.value > 1.7e9 && start.value * 1000.0 <= before as f64,
            "{start:?}"
        );
        let pod_ws = one(
            &first,
            "pod_memory_working_set_bytes",
            &[("namespace", "default"), ("pod", "burn")],
        )
        .expect("pod memory");
        assert!(pod_ws.value >= (FILL_MIB as f64) * MIB, "{pod_ws:?}");
        // The burner's CPU goes on: a later scrape reads more.
        let b2 = wait_for("the burner's CPU to grow", Duration::from_secs(60), || {
            let m = parse(&get("/metrics/resource").body);
            one(&m, cpu, &burner)
                .filter(|s| s.value > b1.value)
                .cloned()
        });
        assert!(b2.ts > b1.ts, "{b1:?} {b2:?}");
        let pod_cpu = parse(&get("/metrics/resource").body);
        let pod_cpu = one(
            &pod_cpu,
            "pod_cpu_usage_seconds_total",
            &[("namespace", "default"), ("pod", "burn")],
        )
        .expect("pod cpu")
        .value;
        assert!(
            pod_cpu >= b2.value,
            "the pod's cgroup holds its containers'"
        );

        // ---- /stats/summary ----
        let summary = |q: &str| -> serde_json::Value {
            let a = get(&format!("/stats/summary{q}"));
            assert_eq!(a.status, 200, "{}", a.body);
            serde_json::from_str(&a.body).expect("summary JSON")
        };
        let s = summary("");
        let node = &s["node"];
        assert_eq!(node["nodeName"], node_name.as_str());
        assert!(
            node["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0),
            "{node}"
        );
        assert!(
            node["memory"]["workingSetBytes"].as_u64() > Some(0),
            "{node}"
        );
        assert!(
            node["memory"]["availableBytes"].as_u64() > Some(0),
            "{node}"
        );
        assert!(node["fs"]["capacityBytes"].as_u64() > Some(0), "{node}");
        assert!(
            node["runtime"]["imageFs"]["usedBytes"].as_u64() > Some(0),
            "{node}"
        );
        assert!(node["rlimit"]["maxpid"].as_u64() > Some(0), "{node}");
        let t = node["cpu"]["time"].as_str().expect("time");
        assert!(
            t.len() == 20 && t.ends_with('Z') && t.parse::<jiff::Timestamp>().is_ok(),
            "{t}"
        );
        let pod_of = |s: &serde_json::Value, name: &str| -> serde_json::Value {
            s["pods"]
                .as_array()
                .expect("pods")
                .iter()
                .find(|p| p["podRef"]["name"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("no pod {name} in {s}"))
        };
        let p = pod_of(&s, "burn");
        assert_eq!(p["podRef"]["namespace"], "default");
        assert_eq!(p["podRef"]["uid"], uid.as_str());
        assert!(
            p["process_stats"]["process_count"].as_u64() >= Some(2),
            "{p}"
        );
        let ctr = |p: &serde_json::Value, name: &str| -> serde_json::Value {
            p["containers"]
                .as_array()
                .expect("containers")
                .iter()
                .find(|c| c["name"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("no container {name} in {p}"))
        };
        let h = ctr(&p, "hog");
        let hws = h["memory"]["workingSetBytes"]
            .as_u64()
            .expect("working set");
        assert!(hws >= FILL_MIB << 20, "{h}");
        assert!(h["memory"]["usageBytes"].as_u64() >= Some(hws), "{h}");
        // Under a limit, available = limit - working set.
        assert_eq!(
            h["memory"]["availableBytes"].as_u64(),
            Some((256 << 20) - hws),
            "{h}"
        );
        let b = ctr(&p, "burner");
        assert!(
            b["cpu"]["usageCoreNanoSeconds"].as_u64() >= Some((b2.value * 1e9) as u64),
            "{b}"
        );
        assert!(b["memory"].get("availableBytes").is_none(), "no limit: {b}");
        assert!(
            b["startTime"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{b}"
        );
        // The rate since an earlier sample: the burner spins.
        let again = wait_for("a CPU rate of the burner", Duration::from_secs(30), || {
            let s = summary("");
            let b = ctr(&pod_of(&s, "burn"), "burner");
            (b["cpu"]["usageNanoCores"].as_u64() > Some(0)).then_some(s)
        });
        // The bridged pod's interface as seen in its network namespace; none for host-network
        // pods (their traffic is the node's).
        let n = wait_for("the net pod's traffic", Duration::from_secs(30), || {
            let n = pod_of(&summary(""), "net")["network"].clone();
            (n["txBytes"].as_u64() > Some(0)).then_some(n)
        });
        assert_eq!(n["name"], "eth0", "{n}");
        assert_eq!(n["interfaces"].as_array().map(Vec::len), Some(1), "{n}");
        assert_eq!(n["interfaces"][0]["name"], "eth0", "{n}");
        assert!(pod_of(&again, "burn").get("network").is_none());
        let q = pod_of(&again, &quiet);
        assert!(q["containers"][0]["name"] == "q", "{q}");
        // Only CPU and memory: no filesystems, network or processes.
        let lean = summary("?only_cpu_and_memory=true");
        assert!(
            lean["node"].get("fs").is_none() && lean["node"].get("network").is_none(),
            "{lean}"
        );
        assert!(lean["node"]["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0));
        let p = pod_of(&lean, "burn");
        assert!(p.get("process_stats").is_none(), "{p}");
        assert!(ctr(&p, "hog")["memory"]["workingSetBytes"].as_u64() >= Some(FILL_MIB << 20));

        // Other methods, as kubelet routes them: the summary for GET and POST (verb create on
        // the subresource, which this identity may), the metrics handler for any method.
        let a = call(port, "POST", "/stats/summary", good).expect("post");
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(a.body.contains("\"nodeName\""), "{}", a.body);
        let a = call(port, "PUT", "/stats/summary", good).expect("put");
        assert_eq!(
            (a.status, a.body.as_str()),
            (405, "405: Method Not Allowed")
        );
        let a = call(port, "POST", "/metrics/resource", good).expect("post");
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(a.body.ends_with("resource_scrape_error 0\n"), "{}", a.body);

        // Another identity of the cluster CA may not read this node's usage.
        let bad = Some((intruder.cert_pem.as_str(), intruder.key_pem.as_str()));
        for (path, sub) in [
            ("/metrics/resource", "metrics"),
            ("/stats/summary", "stats"),
            ("/stats/summary?only_cpu_and_memory=true", "stats"),
        ] {
            let a = call(port, "GET", path, bad).expect("call");
            assert_eq!(a.status, 403, "{path}: {}", a.body);
            assert_eq!(
                a.body,
                format!(
                    "Forbidden (user=system:node:{other}, verb=get, resource=nodes, \
                     subresource(s)=[{sub}])"
                )
            );
        }
        let a = call(port, "GET", "/metrics/resource", None).expect("call");
        assert_eq!(a.status, 401, "{}", a.body);

        // What metrics-server presents: its service account's token (reviewed with a
        // TokenReview), allowed by RBAC to get nodes/metrics and nodes/stats.
        let role = format!("st-scraper-{}", unique());
        let (scraper, nobody) = c.rt.block_on(async {
            use k8s_openapi::api::authentication::v1::TokenRequest;
            use k8s_openapi::api::core::v1::ServiceAccount;
            use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
            let pp = kube::api::PostParams::default();
            let sas: Api<ServiceAccount> = Api::namespaced(c.admin.clone(), "default");
            for sa in ["scraper", "nobody"] {
                let o: ServiceAccount =
                    serde_json::from_value(serde_json::json!({"metadata": {"name": sa}}))
                        .expect("sa");
                sas.create(&pp, &o).await.expect("create service account");
            }
            let cr: ClusterRole = serde_json::from_value(serde_json::json!({
                "metadata": {"name": role},
                "rules": [{"apiGroups": [""], "resources": ["nodes/metrics", "nodes/stats"],
                           "verbs": ["get"]}]
            }))
            .expect("role");
            Api::<ClusterRole>::all(c.admin.clone())
                .create(&pp, &cr)
                .await
                .expect("create role");
            let crb: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
                "metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": "scraper",
                              "namespace": "default"}]
            }))
            .expect("binding");
            Api::<ClusterRoleBinding>::all(c.admin.clone())
                .create(&pp, &crb)
                .await
                .expect("create binding");
            let mut tokens = vec![];
            for sa in ["scraper", "nobody"] {
                let tr: TokenRequest =
                    serde_json::from_value(serde_json::json!({"spec": {"audiences": []}}))
                        .expect("token request");
                let t = sas
                    .create_token_request(sa, &pp, &tr)
                    .await
                    .expect("token")
                    .status
                    .expect("token status")
                    .token;
                tokens.push(t);
            }
            (tokens[0].clone(), tokens[1].clone())
        });
        let bearer = |token: &str, path: &str| {
            let h = format!("Bearer {token}");
            call_with(port, "GET", path, None, &[("Authorization", h.as_str())]).expect("call")
        };
        let a = bearer(&scraper, "/metrics/resource");
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(parse(&a.body).contains_key("container_cpu_usage_seconds_total"));
        let a = bearer(&scraper, "/stats/summary");
        assert_eq!(a.status, 200, "{}", a.body);
        // The token's user has no business with the pods' logs.
        let a = bearer(&scraper, "/containerLogs/default/burn/hog");
        assert_eq!(a.status, 403, "{}", a.body);
        assert_eq!(
            a.body,
            "Forbidden (user=system:serviceaccount:default:scraper, verb=get, resource=nodes, \
             subresource(s)=[proxy])"
        );
        let a = bearer(&nobody, "/metrics/resource");
        assert_eq!(a.status, 403, "{}", a.body);
        assert_eq!(
            a.body,
            "Forbidden (user=system:serviceaccount:default:nobody, verb=get, resource=nodes, \
             subresource(s)=[metrics])"
        );
        // A token the API server does not know: unauthenticated.
        let a = bearer("not-a-token", "/metrics/resource");
        assert_eq!((a.status, a.body.as_str()), (401, "Unauthorized\n"));
    }));
    c.finish(r);
}
