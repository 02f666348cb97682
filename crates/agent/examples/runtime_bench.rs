//! Benchmarks of issue 3 section 7 (not timed tests):
//!
//! 1. pod start with a cached image, p50/p99 over N runs, side by side with `runc run -d` of the
//!    same rootfs, in the same run;
//! 2. 100 pods on one node (through the agent and static manifests) until all are running;
//! 3. agent RSS idle and with 100 pods.
//!
//! Run as root after `cargo build --bin rktup`:
//! `cargo run -p rktup-agent --example runtime_bench -- [RUNS] [PODS]` (defaults 50 and 100).

use rktup_runtime::manifest::parse_pod;
use rktup_runtime::pod::{read_status, PodState};
use rktup_runtime::runtime::{Runtime, RuntimeConfig};
use rktup_testkit::{free_port, rktup_bin, sh, unique, Images, Registry};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn wait_running(dir: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(st) = read_status(dir) {
            if st
                .containers
                .iter()
                .all(|c| c.state == "running" && c.pid.is_some())
            {
                return true;
            }
            if st.state == PodState::Exited {
                return false;
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    false
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let pods: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    // Third argument `hostnet`: the 100 pods use hostNetwork (to separate CNI cost).
    let many_hostnet = args.get(3).is_some_and(|a| a == "hostnet");
    let bin = rktup_bin();
    assert!(bin.exists(), "build rktup first: {}", bin.display());
    let images = Images::build();
    let reg = Registry::start();
    let image = reg.push(&images.layout, "busybox", "bench/busybox:1");
    let tmp = tempfile::tempdir().expect("tempdir");

    // ---- 1. pod start (cached image) vs runc run -d ----
    let root = tmp.path().join("root1");
    let cfg = RuntimeConfig::new(&root)
        .with_stage1_exe(&bin)
        .with_insecure_registries(vec![reg.addr.clone()])
        .with_verbosity(1);
    let rt = Runtime::new(cfg).expect("runtime");
    let pod = |name: &str, host_network: bool| {
        parse_pod(
            "bench",
            &format!(
                "metadata: {{name: {name}}}\nspec:\n  hostNetwork: {host_network}\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: {image}\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '1000']\n"
            ),
        )
        .expect("pod")
    };
    // Warm the image cache.
    let e = rt
        .run_pod(&pod("warm", true), None, "warm")
        .expect("warm pod");
    wait_running(&e.dir);
    rt.remove(&e).expect("remove");
    let mut ours = Vec::new();
    for i in 0..runs {
        let p = pod(&format!("p{i}"), true);
        let t = Instant::now();
        let e = rt.run_pod(&p, None, "h").expect("run pod");
        assert!(wait_running(&e.dir), "pod {i} did not start");
        ours.push(t.elapsed().as_secs_f64() * 1000.0);
        rt.remove(&e).expect("remove");
    }
    // runc on the same rootfs (the same unpacked layer, through overlay as our pods get it).
    let rec = rt.store.resolve(&image).expect("image");
    let layers = rt.store.layer_dirs(&rec).expect("layers");
    let bundle = tmp.path().join("bundle");
    let merged = bundle.join("rootfs");
    let (upper, work) = (tmp.path().join("upper"), tmp.path().join("work"));
    for d in [&merged, &upper, &work] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let lowers: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    sh(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            upper.display(),
            work.display()
        ))
        .arg(&merged));
    sh(Command::new("runc").arg("spec").current_dir(&bundle));
    let spec_path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spec_path).expect("spec")).expect("json");
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["process"]["args"] = serde_json::json!(["sleep", "1000"]);
    spec["root"]["readonly"] = serde_json::json!(false);
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec).expect("json"))
        .expect("write spec");
    let mut runc = Vec::new();
    for i in 0..runs {
        let id = format!("rktup-bench-{}-{i}", std::process::id());
        let t = Instant::now();
        let st = Command::new("runc")
            .args(["run", "-d", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("runc");
        runc.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(st.success(), "runc run failed");
        let _ = Command::new("runc").args(["delete", "-f", &id]).status();
    }
    let _ = Command::new("umount").arg(&merged).status();
    // Contained network (CNI bridge) starts too, for the record.
    let u = unique();
    let cni = tmp.path().join("net.d");
    std::fs::create_dir_all(&cni).expect("mkdir");
    let bridge = format!("bn{:x}", u & 0xfffff);
    std::fs::write(
        cni.join("10.conf"),
        format!(
            r#"{{"cniVersion":"0.4.0","name":"rkt.kubernetes.io","type":"bridge","bridge":"{bridge}","isGateway":true,"ipam":{{"type":"host-local","subnet":"10.{}.{}.0/22","dataDir":"{}"}}}}"#,
            60 + u % 30,
            (u / 30 % 60) * 4,
            tmp.path().join("ipam").display()
        ),
    )
    .expect("cni");
    let rtn = Runtime::new(
        RuntimeConfig::new(&root)
            .with_stage1_exe(&bin)
            .with_cni_conf_dir(&cni)
            .with_verbosity(1),
    )
    .expect("runtime");
    let mut net = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        let e = rtn
            .run_pod(&pod(&format!("n{i}"), false), None, "n")
            .expect("run");
        assert!(wait_running(&e.dir));
        net.push(t.elapsed().as_secs_f64() * 1000.0);
        rtn.remove(&e).expect("remove");
    }

    // ---- 2./3. 100 pods through the agent; RSS ----
    let root2 = tmp.path().join("root2");
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir_all(&manifests).expect("mkdir");
    let endpoint = format!("127.0.0.1:{}", free_port());
    let mut agent = Command::new(&bin)
        .arg("agent")
        .arg("--root-dir")
        .arg(&root2)
        .arg("--pod-manifest-path")
        .arg(&manifests)
        .arg("--cni-conf-dir")
        .arg(&cni)
        .args([
            "--rkt-api-endpoint",
            &endpoint,
            "--insecure-registry",
            &reg.addr,
            "--sync-period-ms",
            "100",
            "--v",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent");
    std::thread::sleep(Duration::from_secs(2));
    let rss_idle = rss_kib(agent.id());
    // Pull once (into the agent's store, as `rktup rkt fetch` does) so the 100 pods measure
    // starts, not the download.
    let c = rktup_runtime::api::Client::tcp(&endpoint);
    {
        let store = rktup_runtime::image::ImageStore::open(&root2).expect("store");
        let puller = rktup_runtime::image::Puller::new()
            .with_insecure_registries(std::slice::from_ref(&reg.addr));
        rktup_runtime::image::ensure_image(
            &store,
            &puller,
            &image,
            rktup_runtime::image::PullPolicy::Always,
        )
        .expect("fetch");
    }
    let t = Instant::now();
    for i in 0..pods {
        let p = manifests.join(format!("p{i}.yaml"));
        std::fs::write(
            &p,
            format!("metadata: {{name: m{i}}}\nspec:\n  hostNetwork: {many_hostnet}\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: {image}\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '1000']\n"),
        )
        .expect("manifest");
    }
    let mut all = Duration::ZERO;
    while t.elapsed() < Duration::from_secs(120) {
        let ps = c.pods().unwrap_or_default();
        let running = ps
            .iter()
            .filter(|p| p.status.containers.iter().all(|c| c.state == "running"))
            .count();
        if running >= pods {
            all = t.elapsed();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_100 = rss_kib(agent.id());
    for i in 0..pods {
        let _ = std::fs::remove_file(manifests.join(format!("p{i}.yaml")));
    }
    let t2 = Instant::now();
    while t2.elapsed() < Duration::from_secs(120)
        && std::fs::read_dir(root2.join("pods"))
            .map(|r| r.count())
            .unwrap_or(1)
            > 0
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stop_all = t2.elapsed();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let _ = agent.wait();
    let _ = Command::new("ip").args(["link", "del", &bridge]).status();

    let (o50, o99) = (pct(&mut ours, 0.5), pct(&mut ours, 0.99));
    let (r50, r99) = (pct(&mut runc, 0.5), pct(&mut runc, 0.99));
    let (n50, n99) = (pct(&mut net, 0.5), pct(&mut net, 0.99));
    println!(
        "pod start, cached image, hostNetwork ({runs} runs): p50 {o50:.1} ms  p99 {o99:.1} ms"
    );
    println!("runc run -d, same rootfs  ({runs} runs): p50 {r50:.1} ms  p99 {r99:.1} ms");
    println!(
        "ratio p99 rktup/runc: {:.2}x  (p50 {:.2}x)",
        o99 / r99,
        o50 / r50
    );
    println!(
        "pod start, contained network (CNI bridge) ({runs} runs): p50 {n50:.1} ms  p99 {n99:.1} ms"
    );
    if all.is_zero() {
        println!("{pods} pods: NOT all running within 120 s");
    } else {
        println!(
            "{pods} pods via the agent until all running: {:.2} s",
            all.as_secs_f64()
        );
    }
    println!(
        "{pods} pods removed and cleaned: {:.2} s",
        stop_all.as_secs_f64()
    );
    println!(
        "agent RSS idle: {:.1} MiB; with {pods} pods: {:.1} MiB",
        rss_idle as f64 / 1024.0,
        rss_100 as f64 / 1024.0
    );
}
