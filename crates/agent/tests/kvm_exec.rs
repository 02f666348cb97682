//! `kubectl exec`, `kubectl attach` and `kubectl port-forward` into a stage1-kvm pod, end to
//! end: real kubectl → the embedded control plane → the agent's kubelet port → the pod's guest
//! channel (`stage1::kvm`: a private virtio NIC between the pod's host-side netns and a listener
//! in the VM) → the container inside the VM. Under `CI=true` a host without a usable VM fails
//! the test; a host whose KVM cannot boot the guest runs it under TCG (`vm_plan`). Exec with and
//! without a terminal, stdin, exit codes, concurrent sessions, attach with stdin and to a
//! `tty: true` container's terminal, and port-forward to a listener bound to the guest's
//! loopback.

use k8s_openapi::api::core::v1::Pod;
use rktup_testkit::agent::*;
use rktup_testkit::{free_port, KUBECTL};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `kubectl attach ARGS`: `input` written once it has attached, its stdin closed a moment
/// later, ended once its output holds `expect` or after `secs` (the guest runs under TCG on a
/// busy host: waiting for the output, not for a fixed time). Its output and stderr.
fn attach_input(
    kc: &Path,
    cache: &Path,
    args: &[&str],
    input: &str,
    expect: &str,
    secs: u64,
    hold: u64,
) -> String {
    let mut child = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(kc)
        .arg("--cache-dir")
        .arg(cache)
        .arg("attach")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl attach");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        let _ = stdin.write_all(input.as_bytes());
        std::thread::sleep(Duration::from_secs(hold));
    });
    let collect = |from: Box<dyn Read + Send>| {
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let g2 = got.clone();
        std::thread::spawn(move || {
            let mut from = from;
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                g2.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        got
    };
    let out = collect(Box::new(child.stdout.take().expect("stdout")));
    let err = collect(Box::new(child.stderr.take().expect("stderr")));
    let text = |b: &std::sync::Arc<std::sync::Mutex<Vec<u8>>>| {
        String::from_utf8_lossy(&b.lock().expect("lock")).into_owned()
    };
    for _ in 0..secs * 10 {
        if text(&out).contains(expect) || matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = writer.join();
    format!("{}\n--- stderr:\n{}", text(&out), text(&err))
}

/// `cmd` (a shell command line) on a terminal of its own (`script`): for each step, its keys
/// typed once the output holds the previous step's text, then its text waited for (60 s at
/// most: the guest runs under TCG on a busy host; an empty text is not waited for). Then a
/// few seconds for the command to end, and it is killed. What the terminal showed.
fn on_terminal(cmd: &str, steps: &[(&str, &str)]) -> String {
    let mut child = Command::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g2 = got.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            g2.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    });
    let text = || String::from_utf8_lossy(&got.lock().expect("lock")).into_owned();
    for (keys, expect) in steps {
        let _ = stdin.write_all(keys.as_bytes());
        for _ in 0..600 {
            if text().contains(expect) || matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for _ in 0..50 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(200));
    text()
}

/// Polls `f` until it says yes (60 s at most, the guest runs under TCG on a busy host).
fn until(what: &str, mut f: impl FnMut() -> Option<()>) {
    for _ in 0..120 {
        if f().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("timed out waiting for {what}");
}

/// The control share's small files of every pod under `root` (what the guest reported).
fn vm_files(root: &Path) -> String {
    let mut s = String::new();
    for pod in std::fs::read_dir(root.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for f in std::fs::read_dir(pod.path().join("kvm"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read(f.path()).unwrap_or_default();
            if text.len() < 4096 {
                s.push_str(&format!(
                    "== {}\n{}\n",
                    f.path().display(),
                    String::from_utf8_lossy(&text)
                ));
            }
        }
    }
    s
}

/// One HTTP/1.0 GET of `/` from 127.0.0.1:`port`: the whole answer.
fn http_get(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the forward");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .expect("send the request");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

#[test]
fn kubectl_exec_attach_and_port_forward_reach_into_a_kvm_pod() {
    let test = "kubectl_exec_attach_and_port_forward_reach_into_a_kvm_pod";
    if vm_plan(test).is_none() {
        return;
    }
    let mut cluster = ClusterNode::start("kx", &["--allow-privileged"]);
    let (_bridge, _subnet) = cluster.node.bridge_net("0.4.0");
    let (kc, cache) = (cluster.admin_kubeconfig(), cluster.kubectl_cache());
    let ClusterNode {
        rt,
        node,
        node_name,
        admin,
        ..
    } = &cluster;
    let busybox = node.busybox.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let privileged = serde_json::json!({"privileged": true});
        let vm: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "vm", "annotations": {
                "rkt.alpha.kubernetes.io/stage1-name-override": "coreos.com/rkt/stage1-kvm"}},
            "spec": {
                "nodeName": node_name,
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    // Ready only through an exec probe: exec probes enter the VM too.
                    {"name": "main", "image": busybox, "command": ["sleep", "100000"],
                     "env": [{"name": "GREETING", "value": "hello from the VM"}],
                     "workingDir": "/tmp", "securityContext": privileged,
                     "readinessProbe": {"exec": {"command": ["sh", "-c", "[ \"$GREETING\" = 'hello from the VM' ]"]},
                                        "periodSeconds": 1}},
                    // A loopback-only listener: reachable from inside the guest only.
                    {"name": "web", "image": busybox, "securityContext": privileged,
                     "command": ["sh", "-c", "mkdir -p /www && echo served-from-the-guest > /www/index.html && exec busybox httpd -f -p 127.0.0.1:8080 -h /www"]},
                    {"name": "talker", "image": busybox, "stdin": true,
                     "securityContext": privileged,
                     "command": ["sh", "-c", "while read l; do echo \"got: $l\"; done; echo stdin-ended"]},
                    {"name": "once", "image": busybox, "stdin": true, "stdinOnce": true,
                     "securityContext": privileged,
                     "command": ["sh", "-c", "cat; echo stdin-ended; exec sleep 100000"]},
                    // An interactive shell on a terminal of its own (kubectl run -it's pods).
                    {"name": "term", "image": busybox, "stdin": true, "tty": true,
                     "securityContext": privileged, "command": ["sh"]}
                ]
            }
        }))
        .expect("pod");
        run_pod(rt, admin, &vm);
        let k = |args: &[&str], input: Option<&str>| kubectl(&kc, &cache, args, input);

        // The container's world inside the VM: its environment, workingDir, the guest kernel.
        let r = k(
            &[
                "exec",
                "vm",
                "-c",
                "main",
                "--",
                "sh",
                "-c",
                "echo $GREETING; pwd; uname -r",
            ],
            None,
        );
        assert_eq!(r.code, Some(0), "{}\n{}", r.stderr, node.stage1_logs());
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines[..2], ["hello from the VM", "/tmp"], "{}", r.stdout);
        let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
        assert_ne!(lines[2], host_kernel.trim(), "runs in the guest kernel");

        // stdout and stderr apart; the command's exit code is kubectl's.
        let r = k(
            &[
                "exec",
                "vm",
                "-c",
                "main",
                "--",
                "sh",
                "-c",
                "echo to-out; echo to-err >&2; exit 3",
            ],
            None,
        );
        assert_eq!(r.code, Some(3), "{}", r.stderr);
        assert_eq!(r.stdout, "to-out\n");
        assert!(r.stderr.contains("to-err\n"), "{}", r.stderr);
        assert!(
            r.stderr.contains("command terminated with exit code 3"),
            "{}",
            r.stderr
        );

        // stdin piped in, and its end: cat ends when kubectl's input does.
        let input = "line one\nline two\n".repeat(1000);
        let r = k(
            &["exec", "-i", "vm", "-c", "main", "--", "cat"],
            Some(&input),
        );
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert!(r.stdout == input, "{} bytes back", r.stdout.len());

        // Two sessions at once: the first waits for what the second does.
        let (kc2, cache2) = (kc.clone(), cache.clone());
        let waiter = std::thread::spawn(move || {
            kubectl(
                &kc2,
                &cache2,
                &[
                    "exec",
                    "vm",
                    "-c",
                    "main",
                    "--",
                    "sh",
                    "-c",
                    "while [ ! -e /tmp/flag ]; do sleep 0.1; done; echo saw-the-flag",
                ],
                None,
            )
        });
        std::thread::sleep(Duration::from_secs(2));
        let r = k(
            &["exec", "vm", "-c", "main", "--", "touch", "/tmp/flag"],
            None,
        );
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let w = waiter.join().expect("waiter");
        assert_eq!(w.code, Some(0), "{}", w.stderr);
        assert_eq!(w.stdout, "saw-the-flag\n");

        // A TTY inside the VM (kubectl needs a terminal of its own for -t: `script` gives it
        // one); the exit code still comes back.
        let cmd = format!(
            "{KUBECTL} --kubeconfig {} --cache-dir {} exec -it vm -c main -- sh -c '[ -t 0 ] && [ -t 1 ] && echo on-a-tty; exit 4'",
            kc.display(),
            cache.display()
        );
        let out = Command::new("timeout")
            .args(["60", "script", "-qec", &cmd, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .expect("script");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("on-a-tty"), "{text}");
        assert!(
            !text.contains("RKTUP-TTY"),
            "the guest's marker is not shown: {text}"
        );
        assert_eq!(out.status.code(), Some(4), "{text}");

        // A client that goes away takes its command along (SIGKILL to its process group in
        // the guest), not just the connection.
        let mut gone = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&kc)
            .arg("--cache-dir")
            .arg(&cache)
            .args([
                "exec",
                "vm",
                "-c",
                "main",
                "--",
                "sh",
                "-c",
                "sleep 4321; echo never",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl exec");
        let count = "ps | grep -c '[s]leep 4321$'";
        until("the command running in the guest", || {
            let r = k(&["exec", "vm", "-c", "main", "--", "sh", "-c", count], None);
            (r.stdout.trim() == "1").then_some(())
        });
        let _ = gone.kill();
        let _ = gone.wait();
        until("the command killed in the guest", || {
            let r = k(&["exec", "vm", "-c", "main", "--", "sh", "-c", count], None);
            (r.stdout.trim() == "0").then_some(())
        });

        // Another container of the pod: its own root.
        let r = k(
            &["exec", "vm", "-c", "web", "--", "cat", "/www/index.html"],
            None,
        );
        assert_eq!(r.stdout, "served-from-the-guest\n", "{}", r.stderr);

        // attach: input reaches the container's stdin, its output comes back.
        let out = attach_input(
            &kc,
            &cache,
            &["-i", "vm", "-c", "talker"],
            "one\ntwo\n",
            "got: one\ngot: two\n",
            60,
            20,
        );
        assert!(
            out.contains("got: one\ngot: two\n"),
            "{out}\n{}\n{}",
            node.stage1_logs(),
            vm_files(&node.root)
        );
        assert!(!out.contains("stdin-ended"), "{out}");
        // A second attacher: the stdin stayed open (no stdinOnce).
        let out = attach_input(
            &kc,
            &cache,
            &["-i", "vm", "-c", "talker"],
            "three\n",
            "got: three\n",
            60,
            2,
        );
        assert!(out.contains("got: three\n"), "{out}");
        // stdinOnce: the first attacher's end of input is the container's.
        let out = attach_input(
            &kc,
            &cache,
            &["-i", "vm", "-c", "once"],
            "abc\n",
            "abc\nstdin-ended\n",
            60,
            2,
        );
        assert!(out.contains("abc\nstdin-ended\n"), "{out}");

        // tty: true: attach -it reaches the container's own terminal in the VM, at kubectl's
        // window size (script's terminal set to 91x37 first); what the shell ends with ends
        // the attach, and the run restarts.
        let cmd = format!(
            "stty cols 91 rows 37; {KUBECTL} --kubeconfig {} --cache-dir {} attach -it vm -c term",
            kc.display(),
            cache.display()
        );
        let out = on_terminal(
            &cmd,
            &[
                ("", "If you don't see a command prompt"),
                (
                    "[ -t 0 ] && [ -t 1 ] && echo tty-says-$((6*7))\r",
                    "tty-says-42",
                ),
                ("stty size\r", "37 91"),
                ("echo $(tty)-$TERM-$$\r", "-xterm-"),
                ("exit 7\r", ""),
            ],
        );
        assert!(
            out.contains("tty-says-42")
                && out.contains("37 91")
                && out.contains("/dev/pts/")
                && out.contains("-xterm-"),
            "{out}\n{}\n{}",
            node.stage1_logs(),
            vm_files(&node.root)
        );
        // Restarted, its exit code kept as lastState.
        until("the terminal's shell restarted", || {
            let r = k(
                &[
                    "get",
                    "pod",
                    "vm",
                    "-o",
                    "jsonpath={range .status.containerStatuses[?(@.name==\"term\")]}{.restartCount} {.lastState.terminated.exitCode}{end}",
                ],
                None,
            );
            (r.stdout.trim() == "1 7").then_some(())
        });
        // The terminal's output is the run's log (stdout, as upstream logs a terminal).
        let r = k(&["logs", "vm", "-c", "term", "--previous"], None);
        assert!(
            r.stdout.contains("tty-says-42") && r.stdout.contains("37 91"),
            "{}\n{}",
            r.stdout,
            r.stderr
        );
        assert!(!r.stdout.contains("RKTUP-TTY"), "{}", r.stdout);
        // The new run has a terminal of its own too.
        let out = on_terminal(
            &cmd,
            &[
                ("", "If you don't see a command prompt"),
                ("echo again-$((6*7))\r", "again-42"),
            ],
        );
        assert!(out.contains("again-42"), "{out}");

        // port-forward to the guest's 127.0.0.1:8080.
        let local = free_port();
        let mut pf = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&kc)
            .arg("--cache-dir")
            .arg(&cache)
            .args(["port-forward", "--address", "127.0.0.1", "pod/vm"])
            .arg(format!("{local}:8080"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl port-forward");
        let mut lines = BufReader::new(pf.stdout.take().expect("stdout")).lines();
        let started = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(started.starts_with("Forwarding from"), "{started}");
        let answers: Vec<String> = (0..2).map(|_| http_get(local)).collect();
        let _ = pf.kill();
        let _ = pf.wait();
        for a in &answers {
            assert!(a.starts_with("HTTP/1.") && a.contains(" 200 "), "{a}");
            assert!(a.ends_with("served-from-the-guest\n"), "{a}");
        }

        // A port nothing in the guest listens on: kubectl reports kubelet's refusal.
        let local = free_port();
        let mut pf = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&kc)
            .arg("--cache-dir")
            .arg(&cache)
            .args(["port-forward", "--address", "127.0.0.1", "pod/vm"])
            .arg(format!("{local}:9"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl port-forward");
        let mut lines = BufReader::new(pf.stdout.take().expect("stdout")).lines();
        let started = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(started.starts_with("Forwarding from"), "{started}");
        let got = http_get(local);
        assert!(got.is_empty(), "{got}");
        std::thread::sleep(Duration::from_secs(2));
        let _ = pf.kill();
        let out = pf.wait_with_output().expect("kubectl port-forward output");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("error forwarding port 9 to pod") && err.contains("connection refused"),
            "{err}"
        );

        // A container the pod does not have.
        let r = k(&["exec", "vm", "-c", "nope", "--", "true"], None);
        assert_ne!(r.code, Some(0));
    }));
    cluster.finish(r);
}
