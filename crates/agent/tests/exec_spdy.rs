//! `kubectl exec` from kubectl 1.20: SPDY/3.1 (a POST upgrade, `v4.channel.k8s.io`) through the
//! embedded control plane to the kubelet port. Output streams, the exit code from the error
//! stream's Status, stdin with its end, and a TTY.

mod common;
use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// kubectl 1.20 (Debian bookworm's `kubernetes-client`, unpacked beside the current kubectl:
/// `dpkg-deb -x kubernetes-client_*.deb /opt/kubectl-1.20`).
const OLD_KUBECTL: &str = "/opt/kubectl-1.20/usr/bin/kubectl";

fn old_kubectl() -> Option<PathBuf> {
    let p = std::env::var_os("RKTUP_OLD_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(OLD_KUBECTL));
    p.exists().then_some(p)
}

/// `kubectl ARGS` (the old one) with `input` on stdin, ended after 60 s.
fn old(kubectl: &Path, kc: &Path, args: &[&str], input: Option<&str>) -> KubectlRun {
    let mut child = Command::new("timeout")
        .arg("60")
        .arg(kubectl)
        .arg("--kubeconfig")
        .arg(kc)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl 1.20");
    if let Some(text) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("kubectl output");
    KubectlRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn kubectl_1_20_execs_over_spdy() {
    let Some(kubectl) = old_kubectl() else {
        rktup_testkit::can_run(
            "kubectl_1_20_execs_over_spdy",
            Some(&format!(
                "no kubectl 1.20 at {OLD_KUBECTL} (RKTUP_OLD_KUBECTL)"
            )),
        );
        return;
    };
    let ClusterNode {
        rt,
        cp,
        node,
        node_name,
        admin,
        tmp: _tmp,
        ..
    } = ClusterNode::start("xs", &[]);
    let cp = cp.expect("control plane");
    let kc = cp.admin_kubeconfig().to_path_buf();
    let busybox = node.busybox.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let shell: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "spdy-shell"},
            "spec": {
                "nodeName": node_name,
                "hostNetwork": true,
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": busybox, "command": ["sleep", "1000"],
                                "env": [{"name": "GREETING", "value": "hello over spdy"}]}]
            }
        }))
        .expect("pod");
        run_pod(&rt, &admin, &shell);
        let k = |args: &[&str], input: Option<&str>| old(&kubectl, &kc, args, input);

        let r = k(
            &["exec", "spdy-shell", "--", "sh", "-c", "echo $GREETING"],
            None,
        );
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert_eq!(r.stdout, "hello over spdy\n");

        // stdout and stderr apart; the exit code comes from the error stream's Status.
        let r = k(
            &[
                "exec",
                "spdy-shell",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
            None,
        );
        assert_eq!(r.code, Some(3), "{}", r.stderr);
        assert_eq!(r.stdout, "out\n");
        assert!(r.stderr.contains("err\n"), "{}", r.stderr);
        assert!(
            r.stderr.contains("command terminated with exit code 3"),
            "{}",
            r.stderr
        );

        // stdin, more than a frame, and its end (FIN) ends cat.
        let input = "spdy stdin line\n".repeat(20000);
        let r = k(&["exec", "-i", "spdy-shell", "--", "cat"], Some(&input));
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert!(r.stdout == input, "{} bytes back", r.stdout.len());

        // A TTY with its resize stream (`script` gives kubectl a terminal).
        let cmd = format!(
            "{} --kubeconfig {} exec -it spdy-shell -- sh -c '[ -t 0 ] && stty size && echo on-a-tty; exit 4'",
            kubectl.display(),
            kc.display()
        );
        let out = Command::new("timeout")
            .args(["60", "script", "-qec", &cmd, "/dev/null"])
            .env("COLUMNS", "123")
            .env("LINES", "45")
            .stdin(Stdio::null())
            .output()
            .expect("script");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("on-a-tty"), "{text}");
        assert_eq!(out.status.code(), Some(4), "{text}");

        // Refusals keep upstream's words.
        let r = k(&["exec", "spdy-shell", "--", "/no/such/thing"], None);
        assert_ne!(r.code, Some(0));
        assert!(r.stderr.contains("/no/such/thing"), "{}", r.stderr);
    }));
    if r.is_err() {
        eprintln!("agent log:\n{}", node.agent_log());
    }
    rt.block_on(async {
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        let _ = pods.delete("spdy-shell", &Default::default()).await;
    });
    node.wait_no_pods(60);
    rt.block_on(cp.shutdown());
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}
