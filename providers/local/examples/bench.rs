//! Benchmarks of issue 5 (BENCHMARKS.md): `local up` until every node is Ready (1 and 3 nodes),
//! pod create → Ready with a cached image (p50/p99), a 100-replica Deployment until all Ready,
//! `local down`, and the RSS of an idle 1-node cluster. As root, after `cargo build --bin rktup`:
//!
//! ```sh
//! cargo run -p rktup-local --example bench -- [ROUNDS] [PODS]
//! ```
//!
//! Pods are created through the API and watched with kube-rs until their Ready condition is True,
//! which is what `kubectl wait --for=condition=Ready` waits for, without kubectl's own start-up
//! time in the numbers.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rktup_testkit::{rktup_bin, unique, Images, Registry};
use std::process::Command;
use std::time::{Duration, Instant};

struct Env {
    dir: tempfile::TempDir,
    registry: String,
}

impl Env {
    fn rktup(&self, args: &[&str]) -> Duration {
        let t = Instant::now();
        let o = Command::new(rktup_bin())
            .env("RKTUP_STATE_DIR", self.dir.path().join("state"))
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .args(args)
            .output()
            .expect("run rktup");
        let took = t.elapsed();
        assert!(
            o.status.success(),
            "rktup {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        took
    }
    fn up(&self, name: &str, nodes: u32) -> Duration {
        self.rktup(&[
            "local",
            "up",
            "--name",
            name,
            "--num-nodes",
            &nodes.to_string(),
            "--insecure-registry",
            &self.registry,
        ])
    }
    fn down(&self, name: &str) -> Duration {
        self.rktup(&["local", "down", "--name", name])
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn client(env: &Env) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(env.dir.path().join("kubeconfig")).expect("kc");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

/// Waits until the pod is Ready; returns when it was first seen scheduled and Running.
async fn wait_ready(pods: &Api<Pod>, name: &str) -> (Option<Instant>, Option<Instant>) {
    let (mut bound, mut running) = (None, None);
    loop {
        if let Ok(Some(p)) = pods.get_opt(name).await {
            if bound.is_none() && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                bound = Some(Instant::now());
            }
            if running.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            {
                running = Some(Instant::now());
            }
            if ready(&p) {
                return (bound, running);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let npods: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(50);
    let images = Images::build();
    let registry = Registry::start();
    let image = registry.push(&images.layout, "busybox", "bench:1.0");
    let env = Env {
        dir: tempfile::tempdir().expect("tempdir"),
        registry: registry.addr.clone(),
    };
    println!("machine: {} cores, load {}", num_cpus(), load());

    for nodes in [1u32, 3] {
        let mut ups = Vec::new();
        let mut downs = Vec::new();
        for _ in 0..rounds {
            let name = format!("b{}", unique());
            ups.push(env.up(&name, nodes).as_secs_f64());
            downs.push(env.down(&name).as_secs_f64());
        }
        println!(
            "local up until {nodes} node(s) Ready: median {:.3}s, max {:.3}s ({rounds} runs); local down: median {:.3}s",
            pct(&mut ups, 0.5),
            pct(&mut ups, 1.0),
            pct(&mut downs, 0.5)
        );
    }

    let name = format!("b{}", unique());
    env.up(&name, 1);
    std::thread::sleep(Duration::from_secs(3));
    let state = env.dir.path().join("state").join(format!("local-{name}"));
    let mut total = 0;
    for f in ["controlplane", &format!("{name}-node-1")] {
        let pid =
            std::fs::read_to_string(state.join("run").join(format!("{f}.pid"))).unwrap_or_default();
        let pid = pid.split_whitespace().next().unwrap_or("0").to_string();
        let kib = rss_kib(&pid);
        println!("idle RSS {f}: {:.1} MiB", kib as f64 / 1024.0);
        total += kib;
    }
    println!(
        "idle RSS, whole 1-node cluster: {:.1} MiB",
        total as f64 / 1024.0
    );
    down_after(&env, &name, || {
        let rt = tokio::runtime::Runtime::new().expect("tokio");
        rt.block_on(async {
            let c = client(&env).await;
            let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
            // Warm the image cache with one pod.
            let mk = |n: &str| -> Pod {
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": n},
                    "spec": {"containers": [{"name": "c", "image": image, "imagePullPolicy": "IfNotPresent",
                              "command": ["sleep", "3600"]}],
                             "terminationGracePeriodSeconds": 0}
                }))
                .expect("pod")
            };
            pods.create(&PostParams::default(), &mk("warm")).await.expect("create");
            let _ = wait_ready(&pods, "warm").await;
            let (mut lat, mut to_bound, mut to_running) = (Vec::new(), Vec::new(), Vec::new());
            let ms = |a: Instant, b: Option<Instant>| {
                b.map(|b| (b - a).as_secs_f64() * 1000.0).unwrap_or(f64::NAN)
            };
            for i in 0..npods {
                let n = format!("p{i}");
                let t = Instant::now();
                pods.create(&PostParams::default(), &mk(&n)).await.expect("create");
                let (bound, running) = wait_ready(&pods, &n).await;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                to_bound.push(ms(t, bound));
                to_running.push(ms(t, running));
            }
            println!(
                "pod create → Ready, cached image ({npods} pods, one at a time): p50 {:.0} ms, p99 {:.0} ms \
                 (seen scheduled: p50 {:.0} ms; seen Running: p50 {:.0} ms)",
                pct(&mut lat, 0.5),
                pct(&mut lat, 0.99),
                pct(&mut to_bound, 0.5),
                pct(&mut to_running, 0.5)
            );
            let _ = pods
                .delete_collection(&DeleteParams::default(), &ListParams::default())
                .await;
            let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
            let d: Deployment = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "hundred"},
                "spec": {"replicas": 100, "selector": {"matchLabels": {"app": "hundred"}},
                         "template": {"metadata": {"labels": {"app": "hundred"}},
                                      "spec": {"containers": [{"name": "c", "image": image,
                                               "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}],
                                               "terminationGracePeriodSeconds": 0}}}
            }))
            .expect("deployment");
            let t = Instant::now();
            deps.create(&PostParams::default(), &d).await.expect("create deployment");
            // When all 100 were first seen created, bound, Running and Ready: where the time goes.
            let mut firsts: [Option<Duration>; 4] = [None; 4];
            loop {
                let l = pods
                    .list(&ListParams::default().labels("app=hundred"))
                    .await
                    .expect("list");
                let count = |f: &dyn Fn(&Pod) -> bool| l.items.iter().filter(|p| f(p)).count();
                let counts = [
                    l.items.len(),
                    count(&|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()),
                    count(&|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    }),
                    count(&|p| ready(p)),
                ];
                for (first, n) in firsts.iter_mut().zip(counts) {
                    if first.is_none() && n >= 100 {
                        *first = Some(t.elapsed());
                    }
                }
                if counts[3] >= 100 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let at = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
            println!(
                "100-replica Deployment until all Ready (1 node): {:.2}s (all created {:.2}s, bound {:.2}s, Running {:.2}s)",
                t.elapsed().as_secs_f64(),
                at(firsts[0]),
                at(firsts[1]),
                at(firsts[2])
            );
        });
    });
}

fn down_after(env: &Env, name: &str, f: impl FnOnce()) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let took = env.down(name);
    println!(
        "local down of the 1-node cluster with its pods: {:.2}s",
        took.as_secs_f64()
    );
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
