//! `kubectl port-forward` end to end: real kubectl (the current one: SPDY inside a WebSocket;
//! 1.20: SPDY/3.1 over a POST upgrade) and kube-rs (WebSocket channels) → the embedded control
//! plane (pods/portforward passed on) → the agent's kubelet port (`/portForward`) → localhost in
//! the pod's own network namespace (the pod is not on the host network, so nothing else reaches
//! it). Data both ways, concurrent connections, a refused port's error, a Service and a
//! Deployment resolved by kubectl, and the pod deleted mid-stream.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, PostParams};
use rktup_testkit::agent::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `kubectl port-forward`; killed when dropped.
struct Forward {
    child: Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Forward {
    /// Starts `kubectl port-forward TARGET MAPPINGS...` and waits until it says it forwards.
    fn start(kubectl: &Path, kc: &Path, cache: &Path, target: &str, mappings: &[String]) -> Self {
        let mut child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kc)
            .arg("--cache-dir")
            .arg(cache)
            .args(["port-forward", "--address", "127.0.0.1", target])
            .args(mappings)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kubectl port-forward");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (e2, mut err) = (stderr.clone(), child.stderr.take().expect("stderr"));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                e2.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        while seen.len() < mappings.len() {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) if l.starts_with("Forwarding from") => seen.push(l),
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "kubectl port-forward {target} did not start: {}",
                        stderr.lock().unwrap()
                    );
                }
            }
        }
        Forward { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits up to `secs` for kubectl to exit on its own.
    fn exited(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        for _ in 0..secs * 10 {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /` over a fresh connection to local `port`; the whole answer.
fn http_get(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the forward");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .expect("send the request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Sends `data` to the echo server behind local `port` and reads it all back.
fn echo(port: u16, data: &[u8]) -> Vec<u8> {
    try_echo(port, data).unwrap_or_else(|e| panic!("echo through {port}: {e}"))
}

fn try_echo(port: u16, data: &[u8]) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let data = data.to_vec();
    let len = data.len();
    let writer = std::thread::spawn(move || w.write_all(&data));
    let mut back = vec![0u8; len];
    let r = s.read_exact(&mut back);
    let _ = s.shutdown(std::net::Shutdown::Both);
    let w = writer.join().map_err(|_| "writer panicked".to_string())?;
    w.map_err(|e| format!("write: {e}"))?;
    r.map_err(|e| format!("read the echo: {e}"))?;
    Ok(back)
}

fn mapping(local: u16, remote: u16) -> String {
    format!("{local}:{remote}")
}

#[test]
fn kubectl_and_kube_rs_port_forward_into_the_pods_network() {
    let mut cluster = ClusterNode::start("pf", &[]);
    let (kc, cache) = (cluster.admin_kubeconfig(), cluster.kubectl_cache());
    let ClusterNode {
        rt,
        node,
        node_name,
        admin,
        ..
    } = &cluster;
    let kubectl = PathBuf::from(KUBECTL);
    let busybox = node.busybox.clone();
    // The pod gets its own network namespace on a bridge (its port 80 is not the host's).
    let (_bridge, _) = node.bridge_net("0.4.0");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Its own network namespace: 80 (httpd) and 7 (an echo server) on the pod's localhost.
        let web: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "labels": {"app": "pf-web"}},
            "spec": {
                "nodeName": node_name,
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {"name": "httpd", "image": busybox, "command": ["sh", "-c",
                        "mkdir -p /www && echo hello-from-the-pod > /www/index.html && exec httpd -f -p 80 -h /www"],
                     "ports": [{"containerPort": 80, "name": "http"}]},
                    {"name": "echo", "image": busybox,
                     "command": ["nc", "-ll", "-p", "7", "-e", "cat"]}
                ]
            }
        }))
        .expect("pod");
        run_pod(rt, admin, &web);
        // Both servers listen (nc starts listening a moment after its process does).
        let (l80, l7) = (free_port(), free_port());
        let pf = Forward::start(
            &kubectl,
            &kc,
            &cache,
            "pod/web",
            &[mapping(l80, 80), mapping(l7, 7)],
        );
        let page = http_get(l80);
        assert!(page.contains("hello-from-the-pod"), "{page}");
        // Not reachable any other way: the pod's port 80 is not the host's.
        assert!(TcpStream::connect(("127.0.0.1", 80))
            .map(|_| false)
            .unwrap_or(true));

        // Data both ways, more than a SPDY frame and a zlib window, byte for byte.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let t = std::time::Instant::now();
        assert!(echo(l7, &big) == big, "the echo differs");
        // A figure for BENCHMARKS.md, not an assertion.
        eprintln!(
            "measure: 3 MB echoed through kubectl port-forward (SPDY in a WebSocket) in {:?}",
            t.elapsed()
        );

        // Several connections at once, over the one kubectl connection.
        let workers: Vec<_> = (0..8)
            .map(|i| {
                std::thread::spawn(move || {
                    let msg = format!("connection {i} ").repeat(5000);
                    let back = try_echo(l7, msg.as_bytes());
                    (http_get(l80), back.map(|b| b == msg.as_bytes()))
                })
            })
            .collect();
        for w in workers {
            let (page, same) = w.join().expect("worker");
            assert!(page.contains("hello-from-the-pod"), "{page}");
            assert_eq!(same, Ok(true), "kubectl: {}", pf.stderr());
        }
        drop(pf);

        // A port nobody listens on: the connection ends and kubectl reports kubelet's error.
        let l9 = free_port();
        let pf = Forward::start(&kubectl, &kc, &cache, "pod/web", &[mapping(l9, 9)]);
        let got = http_get(l9);
        assert!(got.is_empty(), "{got}");
        let stderr = eventually_sync("the refused port's error", || {
            let e = pf.stderr();
            e.contains("connection refused").then_some(e)
        });
        assert!(
            stderr.contains("error forwarding port 9 to pod"),
            "{stderr}"
        );
        drop(pf);

        // svc/NAME: kubectl picks a pod of the Service and its targetPort (by name).
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pf-web"},
            "spec": {"selector": {"app": "pf-web"},
                     "ports": [{"port": 8080, "targetPort": "http"}]}
        }))
        .expect("service");
        rt.block_on(async {
            let svcs: Api<Service> = Api::namespaced(admin.clone(), "default");
            svcs.create(&PostParams::default(), &svc)
                .await
                .expect("create service");
        });
        let ls = free_port();
        let pf = Forward::start(&kubectl, &kc, &cache, "svc/pf-web", &[mapping(ls, 8080)]);
        let page = http_get(ls);
        assert!(page.contains("hello-from-the-pod"), "{page}");
        drop(pf);

        // deploy/NAME: kubectl picks a running pod of the Deployment.
        let deploy: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pf-deploy"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "pf-deploy"}},
                "template": {
                    "metadata": {"labels": {"app": "pf-deploy"}},
                    "spec": {
                        "nodeName": node_name,
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{"name": "httpd", "image": busybox, "command": ["sh", "-c",
                            "mkdir -p /www && echo hello-from-the-deployment > /www/index.html && exec httpd -f -p 80 -h /www"]}]
                    }
                }
            }
        }))
        .expect("deployment");
        rt.block_on(async {
            let deploys: Api<Deployment> = Api::namespaced(admin.clone(), "default");
            deploys
                .create(&PostParams::default(), &deploy)
                .await
                .expect("create deployment");
        });
        // kubectl refuses a pod that is not running yet: wait for the Deployment's.
        rt.block_on(async {
            let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
            let pods = &pods;
            eventually(
                "the deployment's pod running",
                Duration::from_secs(90),
                || async move {
                    let lp = kube::api::ListParams::default().labels("app=pf-deploy");
                    let list = pods.list(&lp).await.ok()?;
                    list.items
                        .iter()
                        .any(|p| {
                            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                        })
                        .then_some(())
                },
            )
            .await;
        });
        let ld = free_port();
        let pf = Forward::start(
            &kubectl,
            &kc,
            &cache,
            "deploy/pf-deploy",
            &[mapping(ld, 80)],
        );
        let page = eventually_sync("the deployment's page", || {
            let p = http_get(ld);
            p.contains("hello-from-the-deployment").then_some(p)
        });
        assert!(
            page.lines().next().is_some_and(|l| l.contains(" 200 ")),
            "{page}"
        );
        drop(pf);
        rt.block_on(async {
            let deploys: Api<Deployment> = Api::namespaced(admin.clone(), "default");
            let _ = deploys.delete("pf-deploy", &Default::default()).await;
        });

        // kubectl 1.20: SPDY/3.1, upgraded from a POST.
        match kubectl_1_20() {
            Some(old) => {
                let (l80, l7) = (free_port(), free_port());
                let pf = Forward::start(
                    &old,
                    &kc,
                    &cache,
                    "pod/web",
                    &[mapping(l80, 80), mapping(l7, 7)],
                );
                assert!(http_get(l80).contains("hello-from-the-pod"));
                let t = std::time::Instant::now();
                assert!(echo(l7, &big) == big, "the echo differs (kubectl 1.20)");
                eprintln!(
                    "measure: 3 MB echoed through kubectl 1.20 port-forward (SPDY) in {:?}",
                    t.elapsed()
                );
                drop(pf);
            }
            None => {
                rktup_testkit::can_run("kubectl 1.20 port-forward", Some(&no_kubectl_1_20()));
            }
        }

        // kube-rs: WebSocket channels, one stream per port.
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
            let mut pf = pods
                .portforward("web", &[80, 7])
                .await
                .expect("portforward");
            let mut http = pf.take_stream(80).expect("port 80");
            http.write_all(b"GET / HTTP/1.0\r\n\r\n")
                .await
                .expect("send");
            // The channel protocol has no per-port end: read until the page is there.
            let mut page = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&page).contains("hello-from-the-pod") {
                let n = tokio::time::timeout(Duration::from_secs(30), http.read(&mut buf))
                    .await
                    .expect("the page in time")
                    .expect("read");
                assert!(n > 0, "{}", String::from_utf8_lossy(&page));
                page.extend_from_slice(&buf[..n]);
            }
            let mut e = pf.take_stream(7).expect("port 7");
            let msg = b"through kube-rs".repeat(1000);
            e.write_all(&msg).await.expect("send");
            let mut back = vec![0u8; msg.len()];
            e.read_exact(&mut back).await.expect("echo");
            assert!(back == msg);
            drop((http, e));
            pf.abort();
        });
        rt.block_on(async {
            let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
            let mut pf = pods.portforward("web", &[9]).await.expect("portforward");
            let err = pf.take_error(9).expect("error of 9").await;
            let err = err.unwrap_or_default();
            assert!(err.contains("connection refused"), "{err}");
        });

        // The pod deleted mid-stream: the open connection ends and kubectl exits with an
        // error instead of hanging.
        let l7 = free_port();
        let mut pf = Forward::start(&kubectl, &kc, &cache, "pod/web", &[mapping(l7, 7)]);
        let mut conn = TcpStream::connect(("127.0.0.1", l7)).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(60))).ok();
        conn.write_all(b"ping\n").expect("send");
        let mut b = [0u8; 5];
        conn.read_exact(&mut b).expect("echo before the delete");
        rt.block_on(async {
            let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
            pods.delete("web", &Default::default())
                .await
                .expect("delete");
        });
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
        let status = pf.exited(60).expect("kubectl port-forward exits");
        assert!(!status.success(), "{}", pf.stderr());
        assert!(
            pf.stderr().contains("lost connection to pod"),
            "{}",
            pf.stderr()
        );
    }));
    // The Deployment and Service go first: the Deployment would replace the pods finish deletes.
    cluster.rt.block_on(async {
        let _ = cluster
            .api::<Service>()
            .delete("pf-web", &Default::default())
            .await;
        let _ = cluster
            .api::<Deployment>()
            .delete("pf-deploy", &Default::default())
            .await;
    });
    cluster.finish(r);
}

fn free_port() -> u16 {
    rktup_testkit::free_port()
}

/// Polls `f` every 100 ms for up to 30 s.
fn eventually_sync<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    rktup_testkit::wait_for(what, Duration::from_secs(30), f)
}
