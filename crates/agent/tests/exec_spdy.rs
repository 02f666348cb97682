//! `kubectl exec` from kubectl 1.20: SPDY/3.1 (a POST upgrade, `v4.channel.k8s.io`) through the
//! embedded control plane to the kubelet port. Output streams, the exit code from the error
//! stream's Status, stdin with its end, and a TTY.

use k8s_openapi::api::core::v1::Pod;
use rktup_testkit::agent::*;
use std::process::{Command, Stdio};

#[test]
fn kubectl_1_20_execs_over_spdy() {
    let Some(kubectl) = kubectl_1_20() else {
        rktup_testkit::can_run("kubectl_1_20_execs_over_spdy", Some(&no_kubectl_1_20()));
        return;
    };
    let mut cluster = ClusterNode::start("xs", &[]);
    let kc = cluster.admin_kubeconfig();
    let ClusterNode {
        rt,
        node,
        node_name,
        admin,
        ..
    } = &cluster;
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
        run_pod(rt, admin, &shell);
        let k = |args: &[&str], input: Option<&str>| run_kubectl(&kubectl, &kc, None, args, input);

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
    cluster.finish(r);
}
