//! Benchmarks of issue 18 (BENCHMARKS.md), whole `rktup` commands timed, as root:
//!
//! ```sh
//! cargo build --release --offline --bin rktup
//! cargo build --offline -p rktup-local --example cluster_bench
//! RKTUP_BIN=…/release/rktup …/debug/examples/cluster_bench up 1,3,10,50 3
//! RKTUP_BIN=…/release/rktup …/debug/examples/cluster_bench app 3
//! RKTUP_BIN=…/release/rktup …/debug/examples/cluster_bench replicas 3
//! ```
//!
//! - `up NODES ROUNDS`: `local up --num-nodes N` (it returns once every node is Ready and the
//!   cluster DNS answers on each; the bench then checks N Ready nodes through the API), then
//!   `local down`.
//! - `app ROUNDS`: time to a working app (minikube's time-to-k8s): from the start of `local up`
//!   until a pod gets an answer from a Deployment's pods through their Service by its DNS name
//!   (an HTTP GET with `nc web.default.svc.cluster.local 80` in a loop, busybox's wget being
//!   unusable in the static test image; the pod then exits: Succeeded).
//! - `replicas ROUNDS`: a 100-replica Deployment on one node until all Ready (with when all were
//!   first seen created, bound and Running), then `local down` of that cluster: PID 1 of every
//!   pod is `sleep`, which ignores SIGTERM, and the pods keep the default 30 s grace period.
//!   `DOWN_WRAP="strace -f -c -o FILE"` runs that `down` under the given command.
//!
//! Pods are watched through the API (one list, then a watch from its resourceVersion), so the
//! bench adds no polling load to the control plane it measures.

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use rktup_testkit::{rktup_bin, unique, Images, Registry};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

struct Env {
    dir: tempfile::TempDir,
    registry: String,
    image: String,
}

impl Env {
    fn rktup(&self, wrap: &[String], args: &[&str]) -> Duration {
        let t = Instant::now();
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(rktup_bin());
                c
            }
            None => Command::new(rktup_bin()),
        };
        let o = cmd
            .env("RKTUP_STATE_DIR", self.dir.path().join("state"))
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env_remove("API_PORT")
            .args(args)
            .output()
            .expect("run rktup");
        let took = t.elapsed();
        // Phase times `down` prints with RKTUP_DOWN_TIMES set.
        for l in String::from_utf8_lossy(&o.stderr).lines() {
            if l.starts_with("TIMES ") {
                println!("  {l}");
            }
        }
        assert!(
            o.status.success(),
            "rktup {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        took
    }

    fn up(&self, name: &str, nodes: u32) -> Duration {
        self.rktup(
            &[],
            &[
                "local",
                "up",
                "--name",
                name,
                "--num-nodes",
                &nodes.to_string(),
                "--wait",
                "5m",
                "--insecure-registry",
                &self.registry,
            ],
        )
    }

    fn down(&self, name: &str) -> Duration {
        let wrap: Vec<String> = std::env::var("DOWN_WRAP")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        self.rktup(&wrap, &["local", "down", "--name", name])
    }

    async fn client(&self, name: &str) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(self.dir.path().join("kubeconfig"))
            .expect("read the kubeconfig");
        let opts = kube::config::KubeConfigOptions {
            context: Some(format!("rktup-{name}")),
            ..Default::default()
        };
        let cfg = kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .expect("kubeconfig context");
        kube::Client::try_from(cfg).expect("client")
    }
}

/// Takes the cluster down even when `f` panics; returns `f`'s value and the down's duration.
fn then_down<T>(env: &Env, name: &str, f: impl FnOnce() -> T) -> (T, Duration) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let took = env.down(name);
    match r {
        Ok(v) => (v, took),
        Err(e) => std::panic::resume_unwind(e),
    }
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// Follows the pods matching `labels` (one list, then a watch) until `done` holds for the set;
/// `each` sees the set after every change. Gives up after `timeout`.
async fn follow_pods(
    pods: &Api<Pod>,
    labels: &str,
    timeout: Duration,
    mut each: impl FnMut(&BTreeMap<String, Pod>) -> bool,
) {
    let deadline = Instant::now() + timeout;
    let mut set: BTreeMap<String, Pod> = BTreeMap::new();
    'outer: loop {
        let l = pods
            .list(&ListParams::default().labels(labels))
            .await
            .expect("list pods");
        set.clear();
        for p in l.items {
            set.insert(p.metadata.name.clone().unwrap_or_default(), p);
        }
        if each(&set) {
            return;
        }
        let rv = l.metadata.resource_version.unwrap_or_default();
        let wp = WatchParams::default().labels(labels).timeout(290);
        let mut stream = pods.watch(&wp, &rv).await.expect("watch pods").boxed();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "pods {labels}: not done after {timeout:?}");
            match tokio::time::timeout(left, stream.next()).await {
                Ok(Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)))) => {
                    set.insert(p.metadata.name.clone().unwrap_or_default(), p);
                }
                Ok(Some(Ok(WatchEvent::Deleted(p)))) => {
                    set.remove(&p.metadata.name.clone().unwrap_or_default());
                }
                Ok(Some(Ok(_))) => continue,
                // The watch ended or failed (expired resourceVersion): list again.
                Ok(Some(Err(_)) | None) => continue 'outer,
                Err(_) => panic!("pods {labels}: not done after {timeout:?}"),
            }
            if each(&set) {
                return;
            }
        }
    }
}

fn deployment(name: &str, replicas: u32, image: &str, command: &[&str]) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": image,
                                       "imagePullPolicy": "IfNotPresent", "command": command}]}}}
    }))
    .expect("deployment")
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn runs(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// `local up` of `nodes` nodes, timed; then every node checked Ready through the API.
fn bench_up(env: &Env, nodes: u32, rounds: usize) {
    let (mut ups, mut downs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let name = format!("cb{}", unique());
        let up = env.up(&name, nodes);
        let (ready_nodes, down) = then_down(env, &name, || {
            tokio::runtime::Runtime::new()
                .expect("tokio")
                .block_on(async {
                    let nodes: Api<Node> = Api::all(env.client(&name).await);
                    let l = nodes.list(&ListParams::default()).await.expect("nodes");
                    l.items.iter().filter(|n| node_ready(n)).count()
                })
        });
        assert_eq!(
            ready_nodes, nodes as usize,
            "`local up --num-nodes {nodes}` returned with {ready_nodes} Ready nodes"
        );
        ups.push(up.as_secs_f64());
        downs.push(down.as_secs_f64());
    }
    println!(
        "local up → {nodes} node(s) Ready: {} s (median {:.2} s); local down: {} s",
        runs(&ups),
        pct(&mut ups.clone(), 0.5),
        runs(&downs)
    );
}

/// From the start of `local up` until a pod reaches the app through its Service's DNS name.
fn bench_app(env: &Env, rounds: usize) {
    for _ in 0..rounds {
        let name = format!("cb{}", unique());
        let t0 = Instant::now();
        let up = env.up(&name, 1);
        let ((created, answered), down) = then_down(env, &name, || {
            tokio::runtime::Runtime::new().expect("tokio").block_on(async {
                let c = env.client(&name).await;
                let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
                let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
                let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
                let pp = PostParams::default();
                deps.create(
                    &pp,
                    &deployment(
                        "web",
                        2,
                        &env.image,
                        &["httpd", "-f", "-p", "8080", "-h", "/etc"],
                    ),
                )
                .await
                .expect("create the Deployment");
                let svc: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "web"},
                    "spec": {"selector": {"app": "web"},
                             "ports": [{"port": 80, "targetPort": 8080}]}
                }))
                .expect("service");
                svcs.create(&pp, &svc).await.expect("create the Service");
                let client: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "client", "labels": {"app": "client"}},
                    "spec": {"restartPolicy": "Never",
                             "containers": [{"name": "c", "image": env.image,
                                             "imagePullPolicy": "IfNotPresent",
                                             "command": ["sh", "-c",
                                                "until printf 'GET /motd HTTP/1.0\\r\\n\\r\\n' | nc -w 1 web.default.svc.cluster.local 80 > /tmp/r && grep -q 'layer one' /tmp/r; do sleep 0.02; done; cat /tmp/r"]}]}
                }))
                .expect("client pod");
                pods.create(&pp, &client).await.expect("create the client pod");
                let created = t0.elapsed();
                follow_pods(&pods, "app=client", Duration::from_secs(120), |set| {
                    let p = set.get("client");
                    assert_ne!(p.and_then(phase), Some("Failed"), "the client pod failed");
                    p.and_then(phase) == Some("Succeeded")
                })
                .await;
                let answered = t0.elapsed();
                let log = pods.logs("client", &Default::default()).await.unwrap_or_default();
                assert!(log.contains("layer one"), "the client got {log:?}, not the app's file");
                (created, answered)
            })
        });
        println!(
            "time to a working app (1 node): {:.2} s (local up {:.2} s, objects created at {:.2} s; down {:.2} s)",
            answered.as_secs_f64(),
            up.as_secs_f64(),
            created.as_secs_f64(),
            down.as_secs_f64()
        );
    }
}

/// 100 replicas on one node until all Ready; then `local down` with them running.
fn bench_replicas(env: &Env, rounds: usize) {
    for _ in 0..rounds {
        let name = format!("cb{}", unique());
        env.up(&name, 1);
        let (firsts, down) = then_down(env, &name, || {
            tokio::runtime::Runtime::new()
                .expect("tokio")
                .block_on(async {
                    let c = env.client(&name).await;
                    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
                    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
                    // The image in the node's store first, as in "100 replicas of a cached image".
                    deps.create(
                        &PostParams::default(),
                        &deployment("warm", 1, &env.image, &["sleep", "3600"]),
                    )
                    .await
                    .expect("create");
                    follow_pods(&pods, "app=warm", Duration::from_secs(60), |s| {
                        s.values().any(ready)
                    })
                    .await;
                    let t = Instant::now();
                    deps.create(
                        &PostParams::default(),
                        &deployment("hundred", 100, &env.image, &["sleep", "3600"]),
                    )
                    .await
                    .expect("create the Deployment");
                    // When all 100 were first seen created, bound, Running and Ready.
                    let mut firsts: [Option<Duration>; 4] = [None; 4];
                    follow_pods(&pods, "app=hundred", Duration::from_secs(120), |set| {
                        let count =
                            |f: &dyn Fn(&Pod) -> bool| set.values().filter(|p| f(p)).count();
                        let counts = [
                            set.len(),
                            count(&|p| {
                                p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                            }),
                            count(&|p| phase(p) == Some("Running")),
                            count(&|p| ready(p)),
                        ];
                        for (first, n) in firsts.iter_mut().zip(counts) {
                            if first.is_none() && n >= 100 {
                                *first = Some(t.elapsed());
                            }
                        }
                        counts[3] >= 100
                    })
                    .await;
                    firsts
                })
        });
        let at = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
        println!(
            "100 replicas on 1 node Ready: {:.2} s (all created {:.2} s, bound {:.2} s, Running {:.2} s); \
             local down with them (SIGTERM-ignoring PID 1, 30 s grace): {:.2} s",
            at(firsts[3]),
            at(firsts[0]),
            at(firsts[1]),
            at(firsts[2]),
            down.as_secs_f64()
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: cluster_bench up NODES[,NODES…] ROUNDS | app ROUNDS | replicas ROUNDS";
    let what = args.get(1).map(String::as_str).unwrap_or_default();
    let images = Images::build();
    let registry = Registry::start();
    let image = registry.push(&images.layout, "busybox", "bench:1.0");
    let env = Env {
        dir: tempfile::tempdir().expect("tempdir"),
        registry: registry.addr.clone(),
        image,
    };
    println!(
        "machine: {} cores, load {}, {}; rktup: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        load(),
        now_utc(),
        rktup_bin().display()
    );
    let rounds = |i: usize| -> usize { args.get(i).and_then(|s| s.parse().ok()).unwrap_or(3) };
    match what {
        "up" => {
            let counts: Vec<u32> = args
                .get(2)
                .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
                .unwrap_or_else(|| vec![1, 3, 10, 50]);
            for n in counts {
                bench_up(&env, n, rounds(3));
            }
        }
        "app" => bench_app(&env, rounds(2)),
        "replicas" => bench_replicas(&env, rounds(2)),
        _ => panic!("{usage}"),
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%FT%TZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
