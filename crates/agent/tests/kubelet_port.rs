//! The kubelet port: real `kubectl logs` (the embedded control plane proxies pods/log to the
//! node's port with its kubelet-client certificate) against pods the agent runs, and the port's
//! client authentication (no certificate → 401, another CA → handshake refused), self-signed
//! serving certificate and answers for static pods, unknown pods and containers.

use k8s_openapi::api::core::v1::{Node as KNode, Pod};
use kube::api::{Api, PostParams};
use rktup_testkit::agent::*;
use rktup_testkit::{free_port, unique, wait_for};
use rustls::pki_types::{pem::PemObject, CertificateDer};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn kubectl_logs_reads_containers_through_the_kubelet_port() {
    let ClusterNode {
        rt,
        cp,
        node,
        node_name,
        kubelet_port: port,
        admin,
        tmp,
    } = ClusterNode::start("kl", &[]);
    let cp = cp.expect("control plane");
    let admin_kc = cp.admin_kubeconfig().to_path_buf();
    let cache = tmp.path().join("kubectl-cache");
    let busybox = node.busybox.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // The node advertises its port.
        rt.block_on(async {
            let nodes: Api<KNode> = Api::all(admin.clone());
            let nodes = &nodes;
            let nn = node_name.as_str();
            eventually(
                "node advertising the kubelet port",
                Duration::from_secs(30),
                || async move {
                    let n = nodes.get_opt(nn).await.ok().flatten()?;
                    let p = n.status?.daemon_endpoints?.kubelet_endpoint?.port;
                    (p == i32::from(port)).then_some(())
                },
            )
            .await;
        });
        // Two containers: three lines then quiet; a ticker, one line a second. And a container
        // that fails its first run and stays up in its second (its emptyDir remembers).
        let talker: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "talker"},
            "spec": {
                "nodeName": node_name,
                "hostNetwork": true,
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {"name": "main", "image": busybox,
                     "command": ["sh", "-c", "echo first; echo second; echo third; exec sleep 1000"]},
                    {"name": "ticker", "image": busybox,
                     "command": ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done"]}
                ]
            }
        }))
        .expect("pod");
        // One run that ends by itself.
        let once: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "once"},
            "spec": {
                "nodeName": node_name,
                "hostNetwork": true,
                "restartPolicy": "Never",
                "containers": [
                    {"name": "c", "image": busybox,
                     "command": ["sh", "-c", "echo begin; sleep 4; echo end"]}
                ]
            }
        }))
        .expect("pod");
        let crasher: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "crasher"},
            "spec": {
                "nodeName": node_name,
                "hostNetwork": true,
                "terminationGracePeriodSeconds": 1,
                "volumes": [{"name": "state", "emptyDir": {}}],
                "containers": [
                    {"name": "c", "image": busybox,
                     "volumeMounts": [{"name": "state", "mountPath": "/state"}],
                     "command": ["sh", "-c",
                        "if [ -e /state/ran ]; then echo second run; exec sleep 1000; fi; touch /state/ran; echo first run; exit 3"]}
                ]
            }
        }))
        .expect("pod");
        rt.block_on(async {
            let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
            pods.create(&PostParams::default(), &crasher)
                .await
                .expect("create crasher");
        });
        run_pod(&rt, &admin, &talker);
        rt.block_on(async {
            let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
            let pods = &pods;
            eventually(
                "crasher running its second run",
                Duration::from_secs(90),
                || async move {
                    let p = pods.get_opt("crasher").await.ok().flatten()?;
                    let s = p.status?;
                    let c = s.container_statuses?.into_iter().next()?;
                    (c.restart_count >= 1 && c.ready).then_some(())
                },
            )
            .await;
        });
        let logs = |args: &[&str]| {
            let run = kubectl(&admin_kc, &cache, args, None);
            assert!(
                run.ok(),
                "kubectl {args:?} failed: {}\n{}\nagent log:\n{}",
                run.stderr,
                run.stdout,
                node.agent_log()
            );
            run.stdout
        };
        // Running does not mean the three lines are written yet: wait for them.
        wait_for("main's three lines", Duration::from_secs(20), || {
            let run = kubectl(&admin_kc, &cache, &["logs", "talker", "-c", "main"], None);
            (run.ok() && run.stdout.lines().count() == 3).then_some(())
        });
        // Several containers: kubectl picks the first (and says so on stderr).
        assert_eq!(logs(&["logs", "talker"]), "first\nsecond\nthird\n");
        assert_eq!(
            logs(&["logs", "talker", "-c", "main"]),
            "first\nsecond\nthird\n"
        );
        let ticks = logs(&["logs", "talker", "-c", "ticker"]);
        assert!(ticks.starts_with("tick 1\n"), "{ticks:?}");
        assert_eq!(
            logs(&["logs", "--tail=1", "talker", "-c", "main"]),
            "third\n"
        );
        assert_eq!(
            logs(&["logs", "--tail=2", "talker", "-c", "main"]),
            "second\nthird\n"
        );
        assert_eq!(
            logs(&["logs", "--limit-bytes=9", "talker", "-c", "main"]),
            "first\nsec"
        );
        assert_eq!(
            logs(&["logs", "--since=1h", "talker", "-c", "main"]),
            "first\nsecond\nthird\n"
        );
        let stamped = logs(&["logs", "--timestamps", "talker", "-c", "main"]);
        let lines: Vec<&str> = stamped.lines().collect();
        assert_eq!(lines.len(), 3, "{stamped}");
        for (l, want) in lines.iter().zip(["first", "second", "third"]) {
            let (ts, rest) = l.split_once(' ').expect("timestamp");
            assert_eq!(rest, want);
            assert!(
                ts.len() == 30 && ts.ends_with('Z') && ts.parse::<jiff::Timestamp>().is_ok(),
                "{ts}"
            );
        }
        // -f of a run that ends: kubectl returns once the container exited, with all of it.
        rt.block_on(async {
            let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
            pods.create(&PostParams::default(), &once)
                .await
                .expect("create once");
        });
        wait_for("once running", Duration::from_secs(60), || {
            node.pods()
                .into_iter()
                .find(|p| p["name"] == "once" && p["status"]["state"] == "running")
        });
        let t = Instant::now();
        assert_eq!(logs(&["logs", "-f", "once"]), "begin\nend\n");
        // It did wait for the second line (and not much longer).
        assert!(
            t.elapsed() > Duration::from_secs(1) && t.elapsed() < Duration::from_secs(20),
            "{:?}",
            t.elapsed()
        );
        // --previous: the failed first run; the current run says the second.
        assert_eq!(logs(&["logs", "crasher"]), "second run\n");
        assert_eq!(logs(&["logs", "--previous", "crasher"]), "first run\n");
        assert_eq!(logs(&["logs", "-p", "crasher", "-c", "c"]), "first run\n");
        // Following a run that is over ends at once.
        assert_eq!(logs(&["logs", "-f", "-p", "crasher"]), "first run\n");
        // No previous run: the kubelet answers 400 `previous terminated container "main" in pod
        // "talker" not found` (checked word for word on the port in the test below); the embedded
        // API server passes it on as a plain-text 400, which kubectl reports as BadRequest.
        let run = kubectl(
            &admin_kc,
            &cache,
            &["logs", "--previous", "talker", "-c", "main"],
            None,
        );
        assert!(
            !run.ok(),
            "kubectl logs --previous of a container that never restarted: {}",
            run.stdout
        );
        assert!(run.stderr.contains("(BadRequest)"), "{}", run.stderr);
        // -f: the ticker's lines stream as they come; kubectl is killed after a few.
        let mut child = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&admin_kc)
            .arg("--cache-dir")
            .arg(&cache)
            .args(["logs", "-f", "--tail=1", "talker", "-c", "ticker"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl logs -f");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send((Instant::now(), l)).is_err() {
                    break;
                }
            }
        });
        let mut got = vec![];
        while got.len() < 3 {
            match rx.recv_timeout(Duration::from_secs(15)) {
                Ok(v) => got.push(v),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "kubectl logs -f: {e}; got {got:?}\nagent log:\n{}",
                        node.agent_log()
                    );
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        // The kubelet stops following once kubectl is gone (the API server drops its stream).
        wait_for(
            "the kubelet to stop following",
            Duration::from_secs(20),
            || {
                node.agent_log()
                    .contains("stopped following default/talker/ticker")
                    .then_some(())
            },
        );
        let nums: Vec<u64> = got
            .iter()
            .map(|(_, l)| {
                l.strip_prefix("tick ")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("not a tick line: {l:?}"))
            })
            .collect();
        // Consecutive ticks, the later ones arriving live (about a second apart).
        assert_eq!(nums[1], nums[0] + 1, "{got:?}");
        assert_eq!(nums[2], nums[1] + 1, "{got:?}");
        assert!(
            got[2].0.duration_since(got[1].0) >= Duration::from_millis(500),
            "lines not streamed live: {got:?}"
        );
    }));
    if r.is_err() {
        eprintln!("agent log:\n{}", node.agent_log());
    }
    // Deleting the pods lets the agent clean up before it stops (after a failure too: API pods
    // outlive a test that does not).
    rt.block_on(async {
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        for p in ["talker", "crasher", "once"] {
            let _ = pods.delete(p, &Default::default()).await;
        }
    });
    node.wait_no_pods(60);
    rt.block_on(cp.shutdown());
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

/// GET `path` (see `call`).
fn get(port: u16, path: &str, client: Option<(&str, &str)>) -> Result<Answer, String> {
    call(port, "GET", path, client)
}

fn ca_and_client(cn: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{cn}-ca"));
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).expect("client cert");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn kubelet_port_serves_only_clients_of_its_ca() {
    let (ca, cert, key) = ca_and_client("apiserver");
    let (_, other_cert, other_key) = ca_and_client("intruder");
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca_file = tmp.path().join("client-ca.crt");
    std::fs::write(&ca_file, &ca).expect("write CA");
    let node_name = format!("ka-{}", unique());
    let port = free_port();
    let (ca_s, port_s) = (ca_file.display().to_string(), port.to_string());
    // No API server: static pods only, client CA from the flag.
    let mut node = Node::new(&[
        "--client-ca-file",
        &ca_s,
        "--hostname-override",
        &node_name,
        "--kubelet-port",
        &port_s,
        "--address",
        "127.0.0.1",
    ]);
    let good = Some((cert.as_str(), key.as_str()));
    let up = || {
        wait_for("the kubelet port", Duration::from_secs(20), || {
            get(port, "/healthz", good).ok()
        })
    };
    up();
    node.put(
        "talk.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: talk}}\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}\n    command: [sh, -c, 'echo hello; echo world; exec sleep 1000']\n",
            node.busybox
        ),
    );
    node.wait_pod("talk", "running", 60, |p| p["status"]["state"] == "running");
    let logs = format!("/containerLogs/default/talk-{node_name}/c");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Healthz with a certificate of the CA.
        let a = get(port, "/healthz", good).expect("healthz");
        assert_eq!((a.status, a.body.as_str()), (200, "ok"));
        // No certificate: 401 for everything.
        for path in ["/healthz", logs.as_str(), "/nothing"] {
            let a = get(port, path, None).expect("answer without a certificate");
            assert_eq!(a.status, 401, "{path}: {}", a.body);
            assert_eq!(a.body, "Unauthorized\n");
        }
        // A certificate of another CA: the handshake fails, nothing is served.
        let refused = get(
            port,
            "/healthz",
            Some((other_cert.as_str(), other_key.as_str())),
        );
        assert!(
            refused.is_err(),
            "served a client of another CA: {}",
            refused.map(|a| a.status).unwrap_or_default()
        );
        // The static pod's log by its mirror pod's name.
        let body = wait_for("two lines", Duration::from_secs(20), || {
            let a = get(port, &logs, good).ok()?;
            (a.status == 200 && a.body.lines().count() == 2).then_some(a.body)
        });
        assert_eq!(body, "hello\nworld\n");
        let a = get(port, &format!("{logs}?tailLines=1&timestamps=true"), good).expect("tail");
        let (ts, rest) = a.body.split_once(' ').expect("timestamp");
        assert!(ts.ends_with('Z') && ts.len() == 30, "{ts}");
        assert_eq!(rest, "world\n");
        let a = get(port, &format!("{logs}?previous=true"), good).expect("previous");
        assert_eq!(a.status, 400);
        assert_eq!(
            a.body,
            format!(r#"previous terminated container "c" in pod "talk-{node_name}" not found"#)
        );
        let a = get(port, &format!("{logs}?tailLines=-1"), good).expect("invalid");
        assert_eq!(
            (a.status, a.body.as_str()),
            (422, r#"{"message": "Invalid request."}"#)
        );
        let a = get(port, &format!("{logs}?limitBytes=x"), good).expect("undecodable");
        assert_eq!(a.status, 400);
        let a = get(port, "/containerLogs/default/nosuchpod/c", good).expect("404 pod");
        assert_eq!(
            (a.status, a.body.as_str()),
            (404, r#"pod "nosuchpod" does not exist"#)
        );
        let a = get(
            port,
            &format!("/containerLogs/default/talk-{node_name}/nosuch"),
            good,
        )
        .expect("404 container");
        assert_eq!(a.status, 404);
        assert_eq!(
            a.body,
            format!(r#"container "nosuch" not found in pod "talk-{node_name}""#)
        );
        let a = get(port, "/containerLogs/kube-system/talk-x/c", good).expect("404 namespace");
        assert_eq!(a.status, 404);
        // The self-signed serving certificate is kept and served again after a restart.
        let pem = std::fs::read(node.root.join("pki/kubelet.crt")).expect("kubelet.crt");
        let der = CertificateDer::from_pem_slice(&pem).expect("PEM");
        let served = get(port, "/healthz", good).expect("healthz").server_cert;
        assert_eq!(served, der.to_vec());
    }));
    if let Err(e) = r {
        eprintln!("agent log:\n{}", node.agent_log());
        std::panic::resume_unwind(e);
    }
    let pem = std::fs::read(node.root.join("pki/kubelet.crt")).expect("kubelet.crt");
    node.kill_agent();
    node.start_agent();
    up();
    assert_eq!(
        std::fs::read(node.root.join("pki/kubelet.crt")).expect("kubelet.crt"),
        pem,
        "serving certificate regenerated on restart"
    );
    let served = get(port, "/healthz", good).expect("healthz").server_cert;
    assert_eq!(
        served,
        CertificateDer::from_pem_slice(&pem).expect("PEM").to_vec()
    );
    // The restarted agent serves the pod it re-adopted.
    let a = get(port, &logs, good).expect("logs after restart");
    assert_eq!((a.status, a.body.as_str()), (200, "hello\nworld\n"));
    node.delete("talk.yaml");
    node.wait_no_pods(60);
}
