//! `kubectl attach` end to end (output only: the runtime holds no stdin for containers): real
//! kubectl (current: WebSocket v5; 1.20: SPDY) and kube-rs → the embedded control plane
//! (pods/attach passed on) → the kubelet port's `/attach` → the running container's live
//! stdout and stderr, from the moment of attaching, until that run ends.

mod common;
use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const OLD_KUBECTL: &str = "/opt/kubectl-1.20/usr/bin/kubectl";

/// `kubectl attach ARGS` for at most `secs` seconds: (exit code, stdout, stderr).
fn attach_for(
    kubectl: &Path,
    kc: &Path,
    args: &[&str],
    secs: u32,
) -> (Option<i32>, String, String) {
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .arg(kubectl)
        .arg("--kubeconfig")
        .arg(kc)
        .arg("attach")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("kubectl attach");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The numbers of the `tick N` lines in `text`.
fn ticks(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.strip_prefix("tick ")?.trim().parse().ok())
        .collect()
}

#[test]
fn kubectl_and_kube_rs_attach_to_a_running_containers_output() {
    let ClusterNode {
        rt,
        cp,
        node,
        node_name,
        admin,
        tmp,
        ..
    } = ClusterNode::start("at", &[]);
    let cp = cp.expect("control plane");
    let kc = cp.admin_kubeconfig().to_path_buf();
    let cache = tmp.path().join("kubectl-cache");
    let current = PathBuf::from(KUBECTL);
    let busybox = node.busybox.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let pod = |name: &str, script: &str, restart: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": {
                    "nodeName": node_name,
                    "hostNetwork": true,
                    "restartPolicy": restart,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": busybox, "command": ["sh", "-c", script]}]
                }
            }))
            .expect("pod")
        };
        run_pod(
            &rt,
            &admin,
            &pod(
                "ticker",
                "i=0; while true; do echo tick $i; echo tock $i >&2; i=$((i+1)); sleep 0.1; done",
                "Always",
            ),
        );
        // Let it write a while: attaching shows what comes next, not the past.
        let logged = wait_for_sync("20 ticks logged", || {
            let r = kubectl(&kc, &cache, &["logs", "ticker"], None);
            (ticks(&r.stdout).len() >= 20).then_some(ticks(&r.stdout).len() as u32)
        });
        let (_, out, err) = attach_for(&current, &kc, &["ticker"], 3);
        let seen = ticks(&out);
        assert!(seen.len() >= 3, "stdout: {out}\nstderr: {err}");
        assert!(
            seen[0] >= logged,
            "attach began at tick {} (logged {logged})",
            seen[0]
        );
        assert!(
            seen.windows(2).all(|w| w[1] == w[0] + 1),
            "live and in order: {seen:?}"
        );
        assert!(err.contains("tock "), "stderr apart: {err}");

        // A run that ends ends the attach, with success.
        run_pod(
            &rt,
            &admin,
            &pod("once", "sleep 3; echo finishing-now; sleep 1", "Never"),
        );
        let (code, out, err) = attach_for(&current, &kc, &["once"], 30);
        assert_eq!(code, Some(0), "{out}\n{err}");
        assert!(out.contains("finishing-now"), "{out}\n{err}");

        // kubectl 1.20: the same over SPDY.
        let old = std::env::var_os("RKTUP_OLD_KUBECTL")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(OLD_KUBECTL));
        if old.exists() {
            let (_, out, err) = attach_for(&old, &kc, &["ticker"], 3);
            assert!(ticks(&out).len() >= 3, "stdout: {out}\nstderr: {err}");
            assert!(err.contains("tock "), "{err}");
        } else {
            rktup_testkit::can_run(
                "kubectl 1.20 attach",
                Some(&format!(
                    "no kubectl 1.20 at {OLD_KUBECTL} (RKTUP_OLD_KUBECTL)"
                )),
            );
        }

        // kube-rs: WebSocket, stdout as a reader.
        rt.block_on(async {
            use tokio::io::AsyncReadExt;
            let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
            let mut p = pods
                .attach("ticker", &AttachParams::default().stderr(false))
                .await
                .expect("attach");
            let mut stdout = p.stdout().expect("stdout");
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while ticks(&String::from_utf8_lossy(&got)).len() < 3 {
                let n =
                    tokio::time::timeout(std::time::Duration::from_secs(30), stdout.read(&mut buf))
                        .await
                        .expect("output in time")
                        .expect("read");
                assert!(n > 0, "{}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
            p.abort();
        });
    }));
    if r.is_err() {
        eprintln!("agent log:\n{}", node.agent_log());
    }
    rt.block_on(async {
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        for name in ["ticker", "once"] {
            let _ = pods.delete(name, &Default::default()).await;
        }
    });
    node.wait_no_pods(60);
    rt.block_on(cp.shutdown());
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

fn wait_for_sync<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    rktup_testkit::wait_for(what, std::time::Duration::from_secs(60), f)
}
