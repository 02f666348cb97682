//! `kubectl exec` end to end: real kubectl → the embedded control plane (pods/exec, a WebSocket
//! upgrade passed on) → the agent's kubelet port (`/exec`, v5.channel.k8s.io) → the command
//! inside the container. Output streams, exit codes, stdin with its end, `kubectl cp`, a TTY,
//! and refusals.

use k8s_openapi::api::core::v1::Pod;
use rktup_testkit::agent::*;
use std::process::{Command, Stdio};

#[test]
fn kubectl_exec_runs_commands_inside_containers() {
    let mut cluster = ClusterNode::start("ex", &[]);
    let (admin_kc, cache) = (cluster.admin_kubeconfig(), cluster.kubectl_cache());
    let ClusterNode {
        rt,
        node,
        node_name,
        admin,
        tmp,
        ..
    } = &cluster;
    let busybox = node.busybox.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let shell: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shell"},
            "spec": {
                "nodeName": node_name,
                "hostNetwork": true,
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {"name": "main", "image": busybox, "command": ["sleep", "1000"],
                     "env": [{"name": "GREETING", "value": "hello from the pod"}],
                     "workingDir": "/tmp"},
                    {"name": "side", "image": busybox, "command": ["sleep", "1000"]}
                ]
            }
        }))
        .expect("pod");
        run_pod(rt, admin, &shell);
        let k = |args: &[&str], input: Option<&str>| kubectl(&admin_kc, &cache, args, input);
        let sh_in_main = |script: &str| {
            k(
                &["exec", "shell", "-c", "main", "--", "sh", "-c", script],
                None,
            )
        };

        // The container's world: its environment, working directory, process tree.
        let r = sh_in_main("echo $GREETING; pwd; tr '\\0' ' ' < /proc/1/cmdline");
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert_eq!(r.stdout, "hello from the pod\n/tmp\nsleep 1000 ");

        // stdout and stderr apart; the exit code is kubectl's.
        let r = sh_in_main("echo to-out; echo to-err >&2; exit 3");
        assert_eq!(r.code, Some(3), "{}", r.stderr);
        assert_eq!(r.stdout, "to-out\n");
        assert!(r.stderr.contains("to-err\n"), "{}", r.stderr);
        assert!(
            r.stderr.contains("command terminated with exit code 3"),
            "{}",
            r.stderr
        );

        // stdin, and its end: cat ends when kubectl's input does.
        let input = "line one\nline two\n".repeat(2000);
        let r = k(
            &["exec", "-i", "shell", "-c", "side", "--", "cat"],
            Some(&input),
        );
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert!(r.stdout == input, "{} bytes back", r.stdout.len());

        // `kubectl cp` is tar through exec, both ways.
        let local = tmp.path().join("to-the-pod.txt");
        std::fs::write(&local, "copied in\n").expect("write local file");
        let dest = "shell:/tmp/copied.txt";
        let r = k(
            &["cp", "-c", "main", &local.display().to_string(), dest],
            None,
        );
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let r = k(
            &[
                "exec",
                "shell",
                "-c",
                "main",
                "--",
                "cat",
                "/tmp/copied.txt",
            ],
            None,
        );
        assert_eq!(r.stdout, "copied in\n", "{}", r.stderr);
        let back = tmp.path().join("from-the-pod.txt");
        let r = k(
            &["cp", "-c", "main", dest, &back.display().to_string()],
            None,
        );
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert_eq!(
            std::fs::read_to_string(&back).expect("copied back"),
            "copied in\n"
        );

        // A TTY (kubectl needs a terminal of its own for -t: `script` gives it one).
        let cmd = format!(
            "{KUBECTL} --kubeconfig {} --cache-dir {} exec -it shell -c main -- sh -c '[ -t 0 ] && echo on-a-tty; exit 4'",
            admin_kc.display(),
            cache.display()
        );
        let out = Command::new("timeout")
            .args(["60", "script", "-qec", &cmd, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .expect("script");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("on-a-tty"), "{text}");
        assert_eq!(out.status.code(), Some(4), "{text}");

        // Refusals, in upstream's words.
        let r = k(&["exec", "shell", "-c", "nope", "--", "true"], None);
        assert_ne!(r.code, Some(0));
        assert!(
            r.stderr
                .contains("container nope is not valid for pod shell"),
            "{}",
            r.stderr
        );
        let r = k(&["exec", "missing", "--", "true"], None);
        assert!(
            r.stderr.contains("pods \"missing\" not found"),
            "{}",
            r.stderr
        );
        let r = k(
            &["exec", "shell", "-c", "main", "--", "/no/such/thing"],
            None,
        );
        assert_ne!(r.code, Some(0));
        assert!(r.stderr.contains("/no/such/thing"), "{}", r.stderr);
        // A node may not run commands in pods, not even its own.
        let node_kc = tmp.path().join("node.kubeconfig");
        let r = kubectl(
            &node_kc,
            &cache,
            &["exec", "shell", "-c", "main", "--", "true"],
            None,
        );
        assert_ne!(r.code, Some(0));
        assert!(r.stderr.contains("forbidden"), "{}", r.stderr);
    }));
    cluster.finish(r);
}
