//! Pod networking with the real CNI plugins from containernetworking-plugins: the seed's bridge
//! example verbatim, two containers on localhost, pod-to-pod, hostNetwork, the flannel example
//! failing by name, `--network-plugin=cni` with a 1.0.0 conflist and portmap, and kubenet.

use rktup_testkit::agent::*;
use std::process::Command;

/// The seed's example, byte for byte (rkt.kubernetes.io on bridge "mybridge", 10.22.0.0/16,
/// ipMasq). Only this test uses it, so parallel tests do not share the bridge.
const SEED_BRIDGE: &str = r#"{
  "name": "rkt.kubernetes.io",
  "type": "bridge",
  "bridge": "mybridge",
  "mtu": 1460,
  "addIf": "true",
  "isGateway": true,
  "ipMasq": true,
  "ipam": {
    "type": "host-local",
    "subnet": "10.22.0.0/16",
    "gateway": "10.22.0.1",
    "routes": [
      { "dst": "0.0.0.0/0" }
    ]
  }
}
"#;

fn reserved_ips(dir: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10.22."))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn seed_bridge_example_pod_ip_reachable_and_localhost_shared() {
    let node = Node::new(&[]);
    node.own_link("mybridge");
    std::fs::write(node.cni.join("k8s_network_example.conf"), SEED_BRIDGE).unwrap();
    let img = &node.busybox;
    node.put(
        "server.yaml",
        &format!(
            r#"metadata: {{name: server}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: {img}
    command: ["sh", "-c", "mkdir -p /www && echo served-by-server > /www/index.html && exec httpd -f -p 8080 -h /www"]
  - name: sidecar
    image: {img}
    command: ["sh", "-c", "until wget -q -O - http://127.0.0.1:8080/ ; do sleep 0.2; done; sleep 1000"]
"#
        ),
    );
    let p = node.wait_pod("server", "running with an ip", 60, |p| {
        p["status"]["pod_ip"].is_string() && p["status"]["containers"][1]["state"] == "running"
    });
    let ip = p["status"]["pod_ip"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.22."), "{ip}");
    let su = uuid_of(&p);
    // Two containers of one pod talk over localhost.
    let side = rktup_testkit::wait_for(
        "sidecar fetched",
        std::time::Duration::from_secs(20),
        || {
            let l = node.rkt_ok(&["logs", &su, "-c", "sidecar"]);
            l.contains("served-by-server").then_some(l)
        },
    );
    assert!(side.contains("served-by-server"));
    // A second pod reaches the first by its pod IP.
    node.put(
        "client.yaml",
        &format!(
            "metadata: {{name: client}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {img}\n    command: [\"wget\", \"-q\", \"-O\", \"-\", \"http://{ip}:8080/\"]\n"
        ),
    );
    let c = node.wait_pod("client", "done", 60, |p| p["status"]["state"] == "exited");
    assert_eq!(c["status"]["containers"][0]["exit_code"], 0, "{c:#}");
    let cu = uuid_of(&c);
    assert_eq!(node.rkt_ok(&["logs", &cu]), "served-by-server\n");
    let list = node.rkt_ok(&["rkt", "list"]);
    assert!(
        list.contains(&format!("rkt.kubernetes.io:ip4={ip}")),
        "{list}"
    );
    assert_eq!(
        reserved_ips("/var/lib/cni/networks/rkt.kubernetes.io").len(),
        1,
        "the client released its IP on exit"
    );
    node.delete("server.yaml");
    node.delete("client.yaml");
    node.wait_no_pods(30);
    node.assert_clean(&[su, cu], Some("mybridge"));
    assert!(
        reserved_ips("/var/lib/cni/networks/rkt.kubernetes.io").is_empty(),
        "host-local released every IP"
    );
    let nat = Command::new("iptables")
        .args(["-t", "nat", "-S", "POSTROUTING"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&nat.stdout).contains(&ip),
        "ipMasq rule removed by DEL"
    );
    delete_link("mybridge");
}

#[test]
fn flannel_example_fails_naming_the_plugin_and_nothing_runs() {
    let node = Node::new(&[]);
    std::fs::write(
        node.cni.join("k8s_flannel_example.conf"),
        "{\n    \"name\": \"rkt.kubernetes.io\",\n    \"type\": \"flannel\",\n    \"delegate\": {\n        \"isDefaultGateway\": true\n    }\n}\n",
    )
    .unwrap();
    node.put(
        "f.yaml",
        &format!("metadata: {{name: f}}\nspec:\n  containers:\n  - name: c\n    image: {}\n    command: [sleep, '100']\n", node.busybox),
    );
    let p = node.wait_pod("f", "refused", 30, |p| p["status"]["state"] == "refused");
    let msg = p["status"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("\"flannel\"") && msg.contains("k8s_flannel_example.conf"),
        "{msg}"
    );
    assert_eq!(p["status"]["reason"], "NetworkNotReady");
    assert_eq!(p["status"]["supervisor_pid"], 0, "nothing ran");
    let st = node.rkt_ok(&["rkt", "status", &uuid_of(&p)]);
    assert!(
        st.contains("state=refused") && st.contains("flannel"),
        "{st}"
    );
    node.delete("f.yaml");
    node.wait_no_pods(30);
    node.assert_clean(&[uuid_of(&p)], None);
}

#[test]
fn host_network_pod_shares_the_host_netns_without_cni() {
    // No CNI config at all: hostNetwork pods do not need one.
    let node = Node::new(&[]);
    node.put(
        "h.yaml",
        &format!(
            "metadata: {{name: h}}\nspec:\n  hostNetwork: true\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {}\n    command: [sh, -c, 'readlink /proc/self/ns/net; readlink /proc/self/ns/mnt; hostname']\n",
            node.busybox
        ),
    );
    let p = node.wait_pod("h", "done", 60, |p| p["status"]["state"] == "exited");
    assert_eq!(p["status"]["containers"][0]["exit_code"], 0, "{p:#}");
    let logs = node.rkt_ok(&["logs", &uuid_of(&p)]);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines[0], host_ns("net"), "host network namespace");
    assert_ne!(lines[1], host_ns("mnt"), "but its own mount namespace");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(lines[2], host.trim());
    assert!(node.rkt_ok(&["rkt", "list"]).contains("host"));
    node.delete("h.yaml");
    node.wait_no_pods(30);
    node.assert_clean(&[uuid_of(&p)], None);
}

#[test]
fn network_plugin_cni_conflist_1_0_0_with_portmap() {
    let u = rktup_testkit::unique();
    let bridge = format!("cni{:x}", u & 0xfffff);
    let subnet = format!("10.{}.{}.0/24", 200 + (u % 50), (u / 50) % 250);
    let node = Node::new(&["--network-plugin", "cni"]);
    node.own_link(&bridge);
    let data = node.dir.path().join("ipam");
    std::fs::write(
        node.cni.join("20-k8s.conflist"),
        format!(
            r#"{{"cniVersion":"1.0.0","name":"k8s-pod-network","plugins":[
  {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}"}}]],"dataDir":"{}"}}}},
  {{"type":"portmap","capabilities":{{"portMappings":true}}}}]}}"#,
            data.display()
        ),
    )
    .unwrap();
    let host_port = 20000 + (u % 20000) as u16;
    node.put(
        "pm.yaml",
        &format!(
            "metadata: {{name: pm}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}\n    command: [sleep, '1000']\n    ports:\n    - {{containerPort: 80, hostPort: {host_port}}}\n",
            node.busybox
        ),
    );
    let p = node.wait_pod("pm", "running", 60, |p| {
        p["status"]["containers"][0]["state"] == "running"
    });
    let ip = p["status"]["pod_ip"].as_str().unwrap().to_string();
    let nat = || {
        String::from_utf8_lossy(
            &Command::new("iptables-save")
                .args(["-t", "nat"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    let rules = nat();
    assert!(
        rules.contains(&format!("--dport {host_port}")) && rules.contains(&format!("{ip}:80")),
        "portmap DNAT for hostPort:\n{rules}"
    );
    assert!(node
        .rkt_ok(&["rkt", "list"])
        .contains(&format!("k8s-pod-network:ip4={ip}")));
    let uuid = uuid_of(&p);
    node.delete("pm.yaml");
    node.wait_no_pods(30);
    assert!(
        !nat().contains(&format!("--dport {host_port}")),
        "DEL removed the portmap rules"
    );
    node.assert_clean(&[uuid], Some(&bridge));
    delete_link(&bridge);
}

#[test]
fn kubenet_writes_cbr0_config_for_the_pod_cidr() {
    let u = rktup_testkit::unique();
    let cidr = format!("10.{}.{}.0/24", 150 + (u % 40), (u / 40) % 250);
    let node = Node::new(&["--network-plugin", "kubenet", "--pod-cidr", &cidr]);
    node.own_link("cbr0");
    node.put(
        "k.yaml",
        &format!(
            "metadata: {{name: k}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {}\n    command: [sh, -c, 'ip -o -4 addr show eth0']\n",
            node.busybox
        ),
    );
    let p = node.wait_pod("k", "done", 60, |p| p["status"]["state"] == "exited");
    let ip = p["status"]["pod_ip"].as_str().expect("ip").to_string();
    assert!(ip.starts_with(&cidr[..cidr.len() - 4]), "{ip} in {cidr}");
    let logs = node.rkt_ok(&["logs", &uuid_of(&p)]);
    assert!(logs.contains(&ip), "{logs}");
    let conf =
        std::fs::read_to_string(node.root.join("kubenet/net.d/10-kubenet.conflist")).unwrap();
    assert!(conf.contains("\"cbr0\"") && conf.contains(&cidr), "{conf}");
    let uuid = uuid_of(&p);
    node.delete("k.yaml");
    node.wait_no_pods(30);
    node.assert_clean(&[uuid], Some("cbr0"));
    let ipam = node.root.join("kubenet/ipam/kubenet");
    let left: Vec<_> = std::fs::read_dir(&ipam)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name())
                .filter(|n| n.to_string_lossy().starts_with("10."))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    delete_link("cbr0");
}
