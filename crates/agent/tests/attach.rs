//! `kubectl attach` end to end: real kubectl (current: WebSocket v5; 1.20: SPDY) and kube-rs →
//! the embedded control plane (pods/attach passed on) → the kubelet port's `/attach` → the
//! running container: live stdout and stderr from the moment of attaching until that run ends;
//! with `stdin: true` the supervisor's attach endpoint takes input (kept open between
//! attachers, or closed after the first with `stdinOnce`); `kubectl run -it --rm` with a TTY.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use rktup_testkit::agent::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// `kubectl attach ARGS` with `input` on its stdin, for at most `secs` seconds.
fn attach_input(
    kubectl: &Path,
    kc: &Path,
    args: &[&str],
    input: &str,
    secs: u32,
) -> (Option<i32>, String, String) {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .arg(secs.to_string())
        .arg(kubectl)
        .arg("--kubeconfig")
        .arg(kc)
        .arg("attach")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl attach");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_string();
    // Written after kubectl has attached (what comes before the attach has nowhere to go),
    // and kept open a moment so kubectl does not end the session at once.
    let writer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let _ = stdin.write_all(input.as_bytes());
        std::thread::sleep(std::time::Duration::from_secs(1));
    });
    let out = child.wait_with_output().expect("kubectl attach output");
    let _ = writer.join();
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
    let mut cluster = ClusterNode::start("at", &[]);
    let (kc, cache) = (cluster.admin_kubeconfig(), cluster.kubectl_cache());
    let ClusterNode {
        rt,
        node,
        node_name,
        admin,
        ..
    } = &cluster;
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
            rt,
            admin,
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
            rt,
            admin,
            &pod("once", "sleep 3; echo finishing-now; sleep 1", "Never"),
        );
        let (code, out, err) = attach_for(&current, &kc, &["once"], 30);
        assert_eq!(code, Some(0), "{out}\n{err}");
        assert!(out.contains("finishing-now"), "{out}\n{err}");

        // kubectl 1.20: the same over SPDY.
        if let Some(old) = kubectl_1_20() {
            let (_, out, err) = attach_for(&old, &kc, &["ticker"], 3);
            assert!(ticks(&out).len() >= 3, "stdout: {out}\nstderr: {err}");
            assert!(err.contains("tock "), "{err}");
        } else {
            rktup_testkit::can_run("kubectl 1.20 attach", Some(&no_kubectl_1_20()));
        }

        // stdin: true: the supervisor holds the container's stdin; an attacher's input reaches
        // it, and stays open for the next one (no stdinOnce).
        let interactive = |name: &str, script: &str, once: bool, restart: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": {
                    "nodeName": node_name,
                    "hostNetwork": true,
                    "restartPolicy": restart,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": busybox, "stdin": true,
                                    "stdinOnce": once, "command": ["sh", "-c", script]}]
                }
            }))
            .expect("pod")
        };
        run_pod(
            rt,
            admin,
            &interactive(
                "talker",
                "while read l; do echo \"got: $l\"; done; echo stdin-ended",
                false,
                "Always",
            ),
        );
        let (_, out, err) = attach_input(&current, &kc, &["-i", "talker"], "one\ntwo\n", 5);
        assert!(out.contains("got: one\ngot: two\n"), "{out}\n{err}");
        assert!(!out.contains("stdin-ended"), "{out}");
        let (_, out, err) = attach_input(&current, &kc, &["-i", "talker"], "three\n", 5);
        assert!(out.contains("got: three"), "stdin stays open: {out}\n{err}");

        // stdinOnce: the first attacher's end of input is the container's.
        run_pod(
            rt,
            admin,
            &interactive("once-in", "cat; echo stdin-ended", true, "Never"),
        );
        let (code, out, err) = attach_input(&current, &kc, &["-i", "once-in"], "abc\n", 30);
        assert_eq!(code, Some(0), "{out}\n{err}");
        assert!(out.contains("abc\nstdin-ended"), "{out}\n{err}");

        // kubectl run -it --rm: a terminal, typed into, the pod gone afterwards.
        let overrides = format!(r#"{{"spec":{{"nodeName":"{node_name}","hostNetwork":true}}}}"#);
        let cmd = format!(
            "{KUBECTL} --kubeconfig {} run -it --rm runner --image={busybox} --restart=Never --overrides='{overrides}' -- sh",
            kc.display()
        );
        let mut child = Command::new("timeout")
            .args(["90", "script", "-qec", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script");
        let mut stdin = child.stdin.take().expect("stdin");
        let typer = std::thread::spawn(move || {
            use std::io::Write;
            // Typed once the shell is there (kubectl: "If you don't see a command prompt...").
            std::thread::sleep(std::time::Duration::from_secs(8));
            let _ = stdin.write_all(b"[ -t 0 ] && echo tty-says-$((6*7))-$TERM\r");
            std::thread::sleep(std::time::Duration::from_secs(2));
            let _ = stdin.write_all(b"exit\r");
            std::thread::sleep(std::time::Duration::from_secs(5));
        });
        let out = child.wait_with_output().expect("script output");
        let _ = typer.join();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("tty-says-42-xterm"), "{text}");
        assert!(text.contains("deleted"), "--rm: {text}");

        // kube-rs: WebSocket, stdout as a reader.
        rt.block_on(async {
            let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
            let mut p = pods
                .attach("ticker", &AttachParams::default().stderr(false))
                .await
                .expect("attach");
            let mut stdout = p.stdout().expect("stdout");
            read_until(&mut stdout, |got| ticks(got).len() >= 3).await;
            p.abort();
        });
        // kube-rs: stdin too.
        rt.block_on(async {
            use tokio::io::AsyncWriteExt;
            let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
            let mut p = pods
                .attach("talker", &AttachParams::default().stdin(true).stderr(false))
                .await
                .expect("attach");
            let mut stdin = p.stdin().expect("stdin");
            let mut stdout = p.stdout().expect("stdout");
            stdin.write_all(b"from kube-rs\n").await.expect("write");
            read_until(&mut stdout, |got| got.contains("got: from kube-rs")).await;
            p.abort();
        });
    }));
    cluster.finish(r);
}

/// Reads `from` until `done` holds for all read so far (each read within 30 s; the stream may
/// not end first).
async fn read_until(from: &mut (impl tokio::io::AsyncRead + Unpin), done: impl Fn(&str) -> bool) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !done(&String::from_utf8_lossy(&got)) {
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), from.read(&mut buf))
            .await
            .expect("output in time")
            .expect("read");
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

fn wait_for_sync<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    rktup_testkit::wait_for(what, std::time::Duration::from_secs(60), f)
}
