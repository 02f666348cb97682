//! Pods through static manifests on a real agent: images from a real registry, real namespaces,
//! overlayfs, cgroups and CNI plugins. Run as root after `cargo build --bin rktup`.

mod common;
use common::*;

#[test]
fn run_exit_codes_env_volumes_logs_and_cleanup() {
    let node = Node::new(&[]);
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
    command: ["sh", "-c"]
    args:
    - |
      echo "hello $GREETING $COMBINED"
      echo "ip=$MY_IP name=$MY_NAME pwd=$(pwd) host=$(hostname)"
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
        logs.contains(&format!("ip={ip} name=job pwd=/tmp host=job")),
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
        status.contains("app-main=terminated exitCode=3 reason=Error"),
        "{status}"
    );
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
