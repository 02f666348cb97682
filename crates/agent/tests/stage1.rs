//! stage1 flavours and the privileged rule of `rkt.alpha.kubernetes.io/stage1-name-override`.

use rktup_testkit::agent::*;

fn fly_pod(name: &str, img: &str, annotation: &str, privileged: bool, cmd: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: kube-system
  annotations:
    rkt.alpha.kubernetes.io/stage1-name-override: {annotation}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {img}
    command: ["sh", "-c", "{cmd}"]
    securityContext:
      privileged: {privileged}
"#
    )
}

#[test]
fn privileged_fly_pod_runs_in_the_host_mount_and_network_namespaces() {
    let node = Node::new(&["--allow-privileged"]);
    node.put(
        "fly.yaml",
        &fly_pod(
            "kubelet",
            &node.busybox,
            "coreos.com/rkt/stage1-fly",
            true,
            "readlink /proc/self/ns/mnt; readlink /proc/self/ns/net; cat /etc/motd",
        ),
    );
    let p = node.wait_pod("kubelet", "done", 60, |p| p["status"]["state"] == "exited");
    assert_eq!(p["stage1"], "fly");
    assert_eq!(
        p["status"]["containers"][0]["exit_code"],
        0,
        "{p:#}\n{}",
        node.stage1_logs()
    );
    let logs = node.rkt_ok(&["logs", &uuid_of(&p)]);
    let l: Vec<&str> = logs.lines().collect();
    assert_eq!(
        l[0],
        host_ns("mnt"),
        "fly shares the host's mount namespace"
    );
    assert_eq!(l[1], host_ns("net"), "and its network namespace");
    assert_eq!(l[2], "layer one", "inside the image's rootfs (chroot)");
    let st = node.rkt_ok(&["rkt", "status", &uuid_of(&p)]);
    assert!(st.contains("stage1=coreos.com/rkt/stage1-fly"), "{st}");
    // The other spelling works too.
    node.put(
        "fly2.yaml",
        &fly_pod(
            "fly2",
            &node.busybox,
            "coreos/rkt/stage1-fly",
            true,
            "readlink /proc/self/ns/mnt",
        ),
    );
    let p2 = node.wait_pod("fly2", "done", 60, |p| p["status"]["state"] == "exited");
    assert_eq!(node.rkt_ok(&["logs", &uuid_of(&p2)]).trim(), host_ns("mnt"));
    node.delete("fly.yaml");
    node.delete("fly2.yaml");
    node.wait_no_pods(30);
    node.assert_clean(&[uuid_of(&p), uuid_of(&p2)], None);
}

#[test]
fn stage1_override_is_refused_for_unprivileged_or_unknown_and_nothing_runs() {
    let node = Node::new(&["--allow-privileged"]);
    let marker = node.dir.path().join("ran");
    let cmd = format!("touch {}", marker.display());
    node.put(
        "a.yaml",
        &fly_pod(
            "unpriv",
            &node.busybox,
            "coreos.com/rkt/stage1-fly",
            false,
            &cmd,
        ),
    );
    node.put(
        "b.yaml",
        &fly_pod(
            "unknown",
            &node.busybox,
            "coreos.com/rkt/stage1-magic",
            true,
            &cmd,
        ),
    );
    let a = node.wait_pod("unpriv", "refused", 30, |p| {
        p["status"]["state"] == "refused"
    });
    assert_eq!(a["status"]["reason"], "Stage1Refused");
    let msg = a["status"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("privileged: true"), "{msg}");
    let b = node.wait_pod("unknown", "refused", 30, |p| {
        p["status"]["state"] == "refused"
    });
    assert!(
        b["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown stage1"),
        "{b:#}"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!marker.exists(), "nothing of a refused pod ran");
    for p in [&a, &b] {
        assert_eq!(p["status"]["supervisor_pid"], 0);
    }
    node.delete("a.yaml");
    node.delete("b.yaml");
    node.wait_no_pods(30);
}

#[test]
fn privileged_pods_need_allow_privileged() {
    let node = Node::new(&[]);
    node.put(
        "p.yaml",
        &fly_pod(
            "p",
            &node.busybox,
            "coreos.com/rkt/stage1-fly",
            true,
            "true",
        ),
    );
    let p = node.wait_pod("p", "refused", 30, |p| p["status"]["state"] == "refused");
    assert_eq!(p["status"]["reason"], "PrivilegedNotAllowed", "{p:#}");
    node.delete("p.yaml");
    node.wait_no_pods(30);
}

#[test]
fn kvm_pod_boots_in_a_vm_with_the_pod_network() {
    if vm_plan("kvm_pod_boots_in_a_vm_with_the_pod_network").is_none() {
        return;
    }
    let node = Node::new(&["--allow-privileged"]);
    let (bridge, subnet) = node.bridge_net("0.4.0");
    let img = &node.busybox;
    node.put(
        "vm.yaml",
        &format!(
            r#"metadata:
  name: vm
  annotations:
    rkt.alpha.kubernetes.io/stage1-name-override: coreos.com/rkt/stage1-kvm
spec:
  restartPolicy: Never
  volumes: [{{name: scratch, emptyDir: {{}}}}]
  initContainers:
  - name: prep
    image: {img}
    command: [sh, -c, 'echo from-init > /scratch/f']
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
    securityContext: {{privileged: true}}
  containers:
  - name: c
    image: {img}
    env: [{{name: WHO, value: guest}}]
    workingDir: /tmp
    command: [sh, -c, 'echo kernel=$(uname -r) who=$WHO pwd=$(pwd) host=$(hostname); ip -o -4 addr show eth0; cat /scratch/f; cat /etc/motd; exit 7']
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
    securityContext: {{privileged: true}}
"#
        ),
    );
    let p = node.wait_pod("vm", "VM ran and powered off", 240, |p| {
        p["status"]["state"] == "exited"
    });
    assert_eq!(p["stage1"], "kvm");
    let ip = p["status"]["pod_ip"].as_str().expect("pod ip").to_string();
    assert!(ip.starts_with(&subnet[..subnet.len() - 4]));
    assert_eq!(
        p["status"]["containers"][0]["exit_code"],
        7,
        "{p:#}\n{}",
        node.stage1_logs()
    );
    let logs = node.rkt_ok(&["logs", &uuid_of(&p), "-c", "c"]);
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(
        logs.contains("kernel=") && !logs.contains(&format!("kernel={}", host_kernel.trim())),
        "a guest kernel: {logs}"
    );
    assert!(logs.contains("who=guest pwd=/tmp host=vm"), "{logs}");
    assert!(
        logs.contains(&format!("inet {ip}/")),
        "the guest owns the pod IP: {logs}"
    );
    assert!(logs.contains("from-init\nlayer one\n"), "{logs}");
    node.delete("vm.yaml");
    node.wait_no_pods(30);
    node.assert_clean(&[uuid_of(&p)], Some(&bridge));
}
