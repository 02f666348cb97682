//! Pods through static manifests on a real agent: images from a real registry, real namespaces,
//! overlayfs, cgroups and CNI plugins. Run as root after `cargo build --bin rktup`.

use rktup_testkit::agent::*;

#[test]
fn run_exit_codes_env_volumes_logs_and_cleanup() {
    let node = Node::new(&["--node-ip", "127.0.0.1"]);
    let (bridge, subnet) = node.bridge_net("0.4.0");
    let hostdir = node.dir.path().join("hostpath");
    std::fs::create_dir_all(&hostdir).unwrap();
    std::fs::write(hostdir.join("in"), "from-host\n").unwrap();
    node.put(
        "job.yaml",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: job
  namespace: tests
  labels: {{app: job}}
spec:
  restartPolicy: Never
  volumes:
  - name: scratch
    emptyDir: {{}}
  - name: host
    hostPath: {{path: {host}}}
  initContainers:
  - name: init
    image: {img}
    command: ["sh", "-c", "echo init-was-here > /scratch/mark"]
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
  containers:
  - name: main
    image: {img}
    workingDir: /tmp
    env:
    - {{name: GREETING, value: world}}
    - {{name: COMBINED, value: "$(GREETING)-$(IMAGE_ENV)"}}
    - name: MY_IP
      valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
    - name: MY_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    - name: HOST_IP
      valueFrom: {{fieldRef: {{fieldPath: status.hostIP}}}}
    - name: APP_LABEL
      valueFrom: {{fieldRef: {{fieldPath: "metadata.labels['app']"}}}}
    command: ["sh", "-c"]
    args:
    - |
      echo "hello $GREETING $COMBINED"
      echo "ip=$MY_IP name=$MY_NAME pwd=$(pwd) host=$(hostname) hostip=$HOST_IP label=$APP_LABEL"
      cat /scratch/mark /host/in
      echo out > /host/out
      grep -c job /etc/hosts
      echo to-stderr >&2
      exit 3
    volumeMounts:
    - {{name: scratch, mountPath: /scratch}}
    - {{name: host, mountPath: /host}}
"#,
            host = hostdir.display(),
            img = node.busybox
        ),
    );
    let p = node.wait_pod("job", "phase Failed with main terminated", 60, |p| {
        p["status"]["state"] == "exited"
    });
    let main = &p["status"]["containers"][0];
    assert_eq!(main["exit_code"], 3, "{p:#}");
    assert_eq!(main["reason"], "Error");
    assert_eq!(p["status"]["init_containers"][0]["exit_code"], 0);
    assert_eq!(p["status"]["init_containers"][0]["reason"], "Completed");
    assert_eq!(p["status"]["phase"], "Failed");
    let ip = p["status"]["pod_ip"].as_str().expect("pod ip").to_string();
    assert!(
        ip.starts_with(&subnet[..subnet.len() - 4]),
        "{ip} not in {subnet}"
    );
    let uuid = uuid_of(&p);
    let logs = node.rkt_ok(&["logs", &format!("k8s_{uuid}"), "-c", "main"]);
    assert!(logs.contains("hello world world-from-image"), "{logs}");
    assert!(
        logs.contains(&format!(
            "ip={ip} name=job pwd=/tmp host=job hostip=127.0.0.1 label=job"
        )),
        "{logs}"
    );
    assert!(logs.contains("init-was-here\nfrom-host\n"), "{logs}");
    assert!(logs.contains("to-stderr"), "{logs}");
    // The pod's own hostname is in its /etc/hosts (the seed's caveat, done better).
    assert!(logs.contains("\n1\n"), "{logs}");
    assert_eq!(
        std::fs::read_to_string(hostdir.join("out")).unwrap(),
        "out\n"
    );
    // Short uuid (8 hex) works for logs and status.
    let short: String = uuid.chars().take(8).collect();
    let logs2 = node.rkt_ok(&["logs", &format!("k8s_{short}"), "-c", "init"]);
    assert!(logs2.is_empty(), "init printed nothing: {logs2:?}");
    // CRI format on disk.
    let raw =
        std::fs::read_to_string(node.root.join(format!("pods/{uuid}/logs/main/0.log"))).unwrap();
    let first = raw.lines().next().unwrap();
    let f: Vec<&str> = first.splitn(4, ' ').collect();
    assert!(
        f[0].ends_with('Z') && f[1] == "stdout" && f[2] == "F",
        "{first}"
    );
    let status = node.rkt_ok(&["rkt", "status", &short]);
    assert!(status.contains("state=exited"), "{status}");
    assert!(
        status.contains("\napp-main=3\n"),
        "rkt's app exit line: {status}"
    );
    assert!(
        status.contains("app-main-status=terminated exitCode=3 reason=Error"),
        "{status}"
    );
    assert!(status.contains("exited=true"), "{status}");
    assert!(
        status.contains(&format!("networks=rkt.kubernetes.io:ip4={ip}")),
        "{status}"
    );
    let list = node.rkt_ok(&["rkt", "list"]);
    assert!(list.starts_with("UUID"), "{list}");
    assert!(list.contains(&short) && !list.contains(&uuid), "{list}");
    let full = node.rkt_ok(&["rkt", "list", "--full"]);
    assert!(full.contains(&uuid), "{full}");
    let images = node.rkt_ok(&["rkt", "image", "list"]);
    assert!(
        images.contains("test/busybox:1") && images.contains("sha256-"),
        "{images}"
    );
    // Exited pods already released everything but their directory.
    node.assert_clean(std::slice::from_ref(&uuid), Some(&bridge));
    node.delete("job.yaml");
    node.wait_no_pods(30);
    node.assert_clean(&[uuid], Some(&bridge));
    delete_link(&bridge);
}

#[test]
fn restart_policies_with_backoff_and_oom_killed() {
    let node = Node::new(&[]);
    let (bridge, _) = node.bridge_net("1.0.0");
    let state = node.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let img = &node.busybox;
    // OnFailure: fails twice, then succeeds → 2 restarts, Completed, pod Succeeded.
    node.put(
        "onfailure.yaml",
        &format!(
            r#"metadata: {{name: onfailure}}
spec:
  restartPolicy: OnFailure
  volumes: [{{name: st, hostPath: {{path: {st}}}}}]
  containers:
  - name: flaky
    image: {img}
    command: ["sh", "-c", "n=$(cat /st/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /st/n; echo run $n; [ $n -ge 3 ]"]
    volumeMounts: [{{name: st, mountPath: /st}}]
"#,
            st = state.display()
        ),
    );
    // Always: exits 0 and is restarted anyway.
    node.put(
        "always.yaml",
        &format!(
            "metadata: {{name: always}}\nspec:\n  containers:\n  - name: a\n    image: {img}\n    command: [\"sh\", \"-c\", \"echo tick\"]\n"
        ),
    );
    // Memory limit → OOMKilled.
    node.put(
        "oom.yaml",
        &format!(
            r#"metadata: {{name: oom}}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: {img}
    command: ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${{#x}}"]
    resources: {{limits: {{memory: 32Mi, cpu: 500m, pids: "64"}}}}
"#
        ),
    );
    let p = node.wait_pod("onfailure", "succeeded after two restarts", 60, |p| {
        p["status"]["phase"] == "Succeeded"
    });
    let c = &p["status"]["containers"][0];
    assert_eq!(c["restart_count"], 2, "{p:#}");
    assert_eq!(c["reason"], "Completed");
    let logs = node.rkt_ok(&["logs", &uuid_of(&p)]);
    assert_eq!(
        logs, "run 1\nrun 2\nrun 3\n",
        "one file per run, printed in order"
    );
    let p = node.wait_pod("always", "restarted at least twice", 60, |p| {
        p["status"]["containers"][0]["restart_count"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    });
    assert_eq!(p["status"]["state"], "running");
    let p = node.wait_pod("oom", "terminated", 60, |p| {
        p["status"]["state"] == "exited"
    });
    let c = &p["status"]["containers"][0];
    assert_eq!(c["reason"], "OOMKilled", "{p:#}");
    assert_eq!(c["exit_code"], 137, "{p:#}");
    // The limits really were applied to the container's cgroup while it ran: check the always pod.
    let uuid = uuid_of(&node.wait_pod("always", "listed", 30, |_| true));
    for m in ["onfailure.yaml", "always.yaml", "oom.yaml"] {
        node.delete(m);
    }
    node.wait_no_pods(60);
    node.assert_clean(&[uuid], Some(&bridge));
    delete_link(&bridge);
}

#[test]
fn limits_reach_the_cgroup_and_security_context_applies() {
    let node = Node::new(&[]);
    let (bridge, _) = node.bridge_net("0.4.0");
    let img = &node.busybox;
    node.put(
        "sec.yaml",
        &format!(
            r#"metadata: {{name: sec}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {img}
    command: ["sh", "-c", "id; grep -E '^(CapBnd|NoNewPrivs)' /proc/self/status; grep -E ' /proc/(sys|timer_list|acpi) ' /proc/self/mountinfo; echo timer_list $(wc -c < /proc/timer_list); touch /rootfs-write && echo writable || echo readonly; touch /tmp/x 2>/dev/null; sleep 1000"]
    resources: {{limits: {{memory: 48Mi, cpu: 250m}}}}
    securityContext:
      runAsUser: 1234
      runAsGroup: 5678
      readOnlyRootFilesystem: true
      capabilities: {{drop: [ALL], add: [NET_BIND_SERVICE]}}
"#
        ),
    );
    let p = node.wait_pod("sec", "running", 60, |p| {
        p["status"]["containers"][0]["state"] == "running"
    });
    let uuid = uuid_of(&p);
    let logs = rktup_testkit::wait_for("logs", std::time::Duration::from_secs(30), || {
        let l = node.rkt_ok(&["logs", &uuid]);
        (l.contains("readonly\n") || l.contains("writable\n")).then_some(l)
    });
    assert!(logs.contains("uid=1234 gid=5678"), "{logs}");
    assert!(
        logs.contains("CapBnd:\t0000000000000400"),
        "only NET_BIND_SERVICE (bit 10): {logs}"
    );
    assert!(logs.contains("NoNewPrivs:\t1"), "{logs}");
    // Kernel interfaces masked and read-only as container runtimes do for unprivileged
    // containers: /proc/sys read-only, /proc/timer_list is /dev/null (the host's is not empty)
    // and /proc/acpi an empty read-only tmpfs.
    assert!(
        logs.lines()
            .any(|l| l.contains(" /proc/sys ro,") && l.contains("nosuid")),
        "{logs}"
    );
    assert!(logs.contains("timer_list 0\n"), "{logs}");
    assert!(
        logs.lines()
            .any(|l| l.contains(" /proc/acpi ro,") && l.contains(" - tmpfs ")),
        "{logs}"
    );
    assert!(std::fs::read_to_string("/proc/timer_list").is_ok_and(|t| !t.is_empty()));
    assert!(logs.contains("readonly\n"), "{logs}");
    let cg = |ctrl: &str, file: &str| -> String {
        let v1 = std::path::Path::new("/sys/fs/cgroup")
            .join(ctrl)
            .join(format!("rktup/k8s_{uuid}/c/{file}"));
        std::fs::read_to_string(v1)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let d = std::path::Path::new("/sys/fs/cgroup").join(format!("rktup/k8s_{uuid}/c"));
        assert_eq!(
            std::fs::read_to_string(d.join("memory.max"))
                .unwrap()
                .trim(),
            (48u64 << 20).to_string()
        );
        assert_eq!(
            std::fs::read_to_string(d.join("cpu.max")).unwrap().trim(),
            "25000 100000"
        );
    } else {
        assert_eq!(
            cg("memory", "memory.limit_in_bytes"),
            (48u64 << 20).to_string()
        );
        assert_eq!(cg("cpu", "cpu.cfs_quota_us"), "25000");
    }
    // Stop: sh as pid 1 ignores SIGTERM, so the 1s grace period ends in SIGKILL.
    let t = std::time::Instant::now();
    node.delete("sec.yaml");
    node.wait_no_pods(30);
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(900),
        "grace period honoured"
    );
    node.assert_clean(&[uuid], Some(&bridge));
    delete_link(&bridge);
}

#[test]
fn agent_restart_readopts_running_pods_and_removal_cleans() {
    let mut node = Node::new(&[]);
    let (bridge, _) = node.bridge_net("0.4.0");
    let img = &node.busybox;
    node.put(
        "long.yaml",
        &format!(
            "metadata: {{name: long}}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: sleeper\n    image: {img}\n    command: [\"sh\", \"-c\", \"trap 'echo got TERM; exit 0' TERM; echo started; while true; do sleep 0.2; done\"]\n"
        ),
    );
    let p = node.wait_pod("long", "running", 60, |p| {
        p["status"]["containers"][0]["state"] == "running"
    });
    let uuid = uuid_of(&p);
    let pid = p["status"]["containers"][0]["pid"].as_i64().unwrap();
    let sup = p["status"]["supervisor_pid"].as_i64().unwrap();
    // The supervisor leads its own session (it calls setsid: the agent spawns it without a
    // pre_exec hook), away from the agent's session and process group.
    // SAFETY: getsid/getpgid take a pid only.
    let (sup_sid, agent_pid) = (
        unsafe { libc::getsid(sup as i32) },
        node.agent.as_ref().map(|c| c.id() as i32).unwrap(),
    );
    assert_eq!(sup_sid, sup as i32, "the supervisor is a session leader");
    assert_ne!(unsafe { libc::getsid(agent_pid) }, sup_sid);
    assert_ne!(unsafe { libc::getpgid(agent_pid) }, unsafe {
        libc::getpgid(sup as i32)
    });
    node.kill_agent();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pod survives the agent's SIGKILL"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    node.start_agent();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pods = node.pods();
    assert_eq!(pods.len(), 1, "no duplicate: {pods:#?}");
    assert_eq!(uuid_of(&pods[0]), uuid);
    assert_eq!(
        pods[0]["status"]["containers"][0]["pid"].as_i64(),
        Some(pid),
        "untouched"
    );
    assert_eq!(pods[0]["status"]["containers"][0]["restart_count"], 0);
    assert_eq!(pods[0]["status"]["supervisor_pid"].as_i64(), Some(sup));
    assert!(node
        .agent_log()
        .contains(&format!("re-adopted running pod k8s_{uuid}")));
    let list = node.rkt_ok(&["rkt", "list"]);
    assert!(
        list.contains(&uuid[..8]) && list.contains("running"),
        "{list}"
    );
    // SIGTERM to the agent stops the agent, not the pods.
    if let Some(c) = &node.agent {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    }
    if let Some(mut c) = node.agent.take() {
        c.wait().unwrap();
    }
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    node.start_agent();
    // Manifest removed → SIGTERM reaches the container (it traps it), pod stopped and cleaned.
    let logs_before = node.rkt_ok(&["logs", &uuid]);
    assert!(logs_before.contains("started"));
    node.delete("long.yaml");
    node.wait_no_pods(30);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    node.assert_clean(&[uuid], Some(&bridge));
    delete_link(&bridge);
}

#[test]
fn manifest_change_replaces_the_pod_and_multi_layer_image_runs() {
    let node = Node::new(&[]);
    let (bridge, _) = node.bridge_net("0.4.0");
    let m = |cmd: &str| {
        format!(
            "metadata: {{name: web}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {}\n    command: [\"sh\", \"-c\", \"{cmd}\"]\n",
            node.multi
        )
    };
    node.put(
        "web.yaml",
        &m("ls /var/lib/data; test -e /etc/motd || echo no-motd; cat /etc/layer2"),
    );
    let p1 = node.wait_pod("web", "done", 60, |p| p["status"]["state"] == "exited");
    let logs = node.rkt_ok(&["logs", &uuid_of(&p1)]);
    assert_eq!(logs, "new\nno-motd\nlayer two\n");
    node.put("web.yaml", &m("echo second"));
    let p2 = node.wait_pod("web", "replaced", 60, |p| {
        uuid_of(p) != uuid_of(&p1) && p["status"]["state"] == "exited"
    });
    assert_eq!(node.pods().len(), 1);
    assert_eq!(node.rkt_ok(&["logs", &uuid_of(&p2)]), "second\n");
    node.delete("web.yaml");
    node.wait_no_pods(30);
    node.assert_clean(&[uuid_of(&p1), uuid_of(&p2)], Some(&bridge));
    delete_link(&bridge);
}

#[test]
fn a_crashed_supervisor_is_cleaned_up_and_the_pod_started_again() {
    let node = Node::new(&[]);
    let (bridge, _) = node.bridge_net("0.4.0");
    node.put(
        "crash.yaml",
        &format!(
            "metadata: {{name: crash}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}\n    command: [sleep, '1000']\n",
            node.busybox
        ),
    );
    let p = node.wait_pod("crash", "running", 60, |p| {
        p["status"]["containers"][0]["state"] == "running"
    });
    let old = uuid_of(&p);
    let sup = p["status"]["supervisor_pid"].as_i64().unwrap() as i32;
    let app = p["status"]["containers"][0]["pid"].as_i64().unwrap();
    // SAFETY: killing the supervisor the test's agent started.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    let n = node.wait_pod("crash", "replaced by a new pod", 60, |p| {
        uuid_of(p) != old && p["status"]["containers"][0]["state"] == "running"
    });
    assert_eq!(node.pods().len(), 1, "the old pod is gone");
    // Killed via its cgroup; it may linger as a zombie until the host's PID 1 reaps it.
    let stat = std::fs::read_to_string(format!("/proc/{app}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("");
    assert!(
        stat.is_empty() || state == "Z",
        "old container killed: {stat}"
    );
    assert!(!node.root.join(format!("pods/{old}")).exists());
    node.assert_pod_clean(&old);
    node.delete("crash.yaml");
    node.wait_no_pods(30);
    node.assert_clean(&[uuid_of(&n)], Some(&bridge));
}

#[test]
fn a_slow_stop_does_not_hold_up_new_pods() {
    let node = Node::new(&[]);
    let (bridge, _) = node.bridge_net("0.4.0");
    let img = &node.busybox;
    // sh as pid 1 ignores SIGTERM: this pod takes its whole 15 s grace period to stop.
    node.put(
        "slow.yaml",
        &format!("metadata: {{name: slow}}\nspec:\n  terminationGracePeriodSeconds: 15\n  containers:\n  - name: c\n    image: {img}\n    command: [sh, -c, 'while true; do sleep 1; done']\n"),
    );
    let slow = node.wait_pod("slow", "running", 60, |p| {
        p["status"]["containers"][0]["state"] == "running"
    });
    node.delete("slow.yaml");
    std::thread::sleep(std::time::Duration::from_millis(500));
    node.put(
        "fast.yaml",
        &format!("metadata: {{name: fast}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {img}\n    command: [sleep, '1000']\n"),
    );
    let fast = node.wait_pod("fast", "running", 60, |p| {
        p["status"]["containers"][0]["state"] == "running"
    });
    // No timing assertion (shared, noisy machines): the proof is that the new pod runs while
    // the slow one is still inside its grace period.
    assert!(
        node.root.join(format!("pods/{}", uuid_of(&slow))).exists(),
        "the new pod started only after the slow pod had stopped"
    );
    node.delete("fast.yaml");
    node.wait_no_pods(60);
    node.assert_clean(&[uuid_of(&slow), uuid_of(&fast)], Some(&bridge));
}

#[test]
fn seccomp_runtime_default_refuses_kernel_calls_and_localhost_is_refused() {
    let node = Node::new(&[]);
    let img = &node.busybox;
    // Both containers may mount and unshare as far as capabilities go (SYS_ADMIN added); only
    // the RuntimeDefault filter stops the first.
    let probe = "mkdir -p /m; mount -t tmpfs t /m && echo mount-ok || echo mount-denied; unshare -m true && echo unshare-ok || echo unshare-denied; grep Seccomp: /proc/self/status; sleep 1000";
    node.put(
        "sc.yaml",
        &format!(
            r#"metadata: {{name: sc}}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: confined
    image: {img}
    command: ["sh", "-c", "{probe}"]
    securityContext: {{capabilities: {{add: [SYS_ADMIN]}}, seccompProfile: {{type: RuntimeDefault}}}}
  - name: unconfined
    image: {img}
    command: ["sh", "-c", "{probe}"]
    securityContext: {{capabilities: {{add: [SYS_ADMIN]}}}}
"#
        ),
    );
    node.put(
        "local.yaml",
        &format!(
            "metadata: {{name: local}}\nspec:\n  containers:\n  - name: c\n    image: {img}\n    securityContext: {{seccompProfile: {{type: Localhost, localhostProfile: p.json}}}}\n"
        ),
    );
    let p = node.wait_pod("sc", "running", 60, |p| {
        p["status"]["containers"]
            .as_array()
            .is_some_and(|cs| cs.iter().all(|c| c["state"] == "running"))
    });
    let uuid = uuid_of(&p);
    let logs = |c: &str| {
        rktup_testkit::wait_for(
            &format!("{c} logs"),
            std::time::Duration::from_secs(10),
            || {
                let l = node.rkt_ok(&["logs", &uuid, "-c", c]);
                l.contains("Seccomp:").then_some(l)
            },
        )
    };
    let confined = logs("confined");
    assert!(confined.contains("mount-denied"), "{confined}");
    assert!(confined.contains("unshare-denied"), "{confined}");
    assert!(confined.contains("Seccomp:\t2"), "filter mode: {confined}");
    let unconfined = logs("unconfined");
    assert!(unconfined.contains("mount-ok"), "{unconfined}");
    assert!(unconfined.contains("unshare-ok"), "{unconfined}");
    assert!(unconfined.contains("Seccomp:\t0"), "{unconfined}");
    let l = node.wait_pod("local", "refused", 30, |p| {
        p["status"]["state"] == "refused"
    });
    assert_eq!(l["status"]["reason"], "CreateContainerConfigError", "{l:#}");
    assert!(
        l["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Localhost") && m.contains("RuntimeDefault")),
        "{l:#}"
    );
    node.delete("sc.yaml");
    node.delete("local.yaml");
    node.wait_no_pods(30);
    node.assert_pod_clean(&uuid);
}
