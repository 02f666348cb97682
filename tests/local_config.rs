//! `rktup local up --config FILE` (issue 18's cluster file): two nodes described kind-style
//! (the second labelled and tainted, with a read-only extra mount serving the web root and a
//! port mapping), `docker.io` mirrored to the test
//! kit's local registry, and a pod whose image is `docker.io/library/busybox:<tag>` exactly —
//! there is no internet here, so it running proves the pull went to the mirror. The Service's
//! NodePort answers on the mapped host port; `down` ends the mapping. A bad file is refused
//! with every problem at once, before anything is made.

use rktup_testkit::local::LocalCluster as Cluster;
use rktup_testkit::{free_port, unique, wait_for, Images, Registry};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A cluster named `<prefix><unique>`; NUM_NODES from the environment does not reach `up`.
fn cluster(prefix: &str) -> Cluster {
    rktup_testkit::local_cluster!(prefix)
        .env_remove("NUM_NODES")
        .build()
}

/// `GET /` over plain TCP; the body, or None when nothing answers yet.
fn http_get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

#[test]
fn a_bad_cluster_file_is_refused_with_every_problem() {
    let c = cluster("cfgbad");
    let file = c.write(
        "bad.yaml",
        "nodes:\n- role: master\n  taints: [\"a=b:Never\"]\nregistries:\n  mirrors:\n    docker.io: [\"127.0.0.1:5000\"]\nportMappings:\n- {containerPort: 30080}\n",
    );
    let o = c.rktup(&["local", "up", "--name", c.name(), "--config", &file]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    for want in [
        "(nodes[0].role): expected control-plane or worker",
        "(nodes[0].taints[0]): expected an effect of NoSchedule",
        "(registries.mirrors.docker.io[0]): expected a mirror endpoint",
        "(portMappings[0].hostPort): expected a port number",
    ] {
        assert!(err.contains(want), "missing {want:?}:\n{err}");
    }
    // Checked before anything acts: no state directory.
    assert!(!c.state_dir().exists());
}

#[test]
fn nodes_mirrors_and_port_mappings_from_the_cluster_file() {
    if !rktup_testkit::can_run_as_root("local_config", "`rktup local up`") {
        return;
    }
    let c = cluster("cfg");
    let name = c.name().to_string();
    let images = Images::build();
    let registry = Registry::start();
    // The image goes in under Docker Hub's name for busybox; pods name docker.io's.
    let tag = format!("cfg{}", unique());
    registry.push(&images.layout, "busybox", &format!("library/busybox:{tag}"));
    // The web root comes from this machine through the node's extraMounts, read-only.
    let www = c.dir().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "served-from-the-extra-mount\n").unwrap();
    let node_www = format!("/rktup-test-www-{}", unique());
    let host_port = free_port();
    let node_port = 30000 + (unique() % 2700) as u16;
    let file = c.write(
        "cluster.yaml",
        &format!(
            r#"kind: Cluster
apiVersion: rktup.io/v1alpha1
nodes:
- role: control-plane
- role: worker
  labels:
    tier: db
    example.com/pool: blue
  taints: ["dedicated=db:NoSchedule"]
  extraMounts:
  - {{hostPath: {www}, containerPath: {node_www}, readOnly: true}}
  extraPortMappings:
  - containerPort: {node_port}
    hostPort: {host_port}
    listenAddress: 127.0.0.1
registries:
  mirrors:
    docker.io: ["http://{reg}"]
"#,
            reg = registry.addr,
            www = www.display(),
        ),
    );
    c.rktup_ok(&[
        "local", "up", "--name", &name, "--config", &file, "--wait", "60s",
    ]);
    let (node1, node2) = (format!("{name}-node-1"), format!("{name}-node-2"));

    // Labels and taints registered by the agents, on node 2 only.
    let n2 = c.json(&["get", "node", &node2]);
    assert_eq!(n2["metadata"]["labels"]["tier"], "db", "{n2}");
    assert_eq!(n2["metadata"]["labels"]["example.com/pool"], "blue", "{n2}");
    assert_eq!(
        n2["spec"]["taints"],
        serde_json::json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        "{n2}"
    );
    let n1 = c.json(&["get", "node", &node1]);
    assert!(n1["metadata"]["labels"].get("tier").is_none(), "{n1}");
    assert!(n1["spec"].get("taints").is_none_or(Value::is_null), "{n1}");
    let shown = c.kubectl_ok(&["get", "nodes", "-l", "tier=db", "-o", "name"]);
    assert_eq!(shown.trim(), format!("node/{node2}"));

    // A web server from docker.io/library/busybox:<tag>, on the tainted node (selector and
    // toleration), behind a NodePort Service.
    let image = format!("docker.io/library/busybox:{tag}");
    c.apply(
        "web",
        &serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "nodeSelector": {"tier": "db"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}],
                "volumes": [{"name": "www", "hostPath": {"path": node_www}}],
                "containers": [{"name": "web", "image": image,
                    "volumeMounts": [{"name": "www", "mountPath": "/www"}],
                    "command": ["sh", "-c", "(touch /www/probe && echo writable || echo read-only) > /tmp/mode; exec httpd -f -p 8080 -h /www"]}]
            }
        }),
    );
    // The same selector without the toleration: the taint keeps it off node 2, so unscheduled.
    c.apply(
        "intolerant",
        &serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "intolerant"},
            "spec": {"nodeSelector": {"tier": "db"},
                     "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}]}
        }),
    );
    c.apply(
        "web-svc",
        &serde_json::json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "selector": {"app": "web"},
                     "ports": [{"port": 80, "targetPort": 8080, "nodePort": node_port}]}
        }),
    );
    let pod = wait_for("the web pod Running", Duration::from_secs(90), || {
        let p = c.json(&["get", "pod", "web"]);
        (p["status"]["phase"] == "Running").then_some(p)
    });
    assert_eq!(pod["spec"]["nodeName"], node2.as_str(), "{pod}");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["image"],
        image.as_str(),
        "{pod}"
    );
    let events = c.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
    ]);
    assert!(events.contains("Successfully pulled image"), "{events}");

    // The host port reaches the NodePort on node 2.
    let body = wait_for(
        "the port mapping to answer",
        Duration::from_secs(30),
        || http_get(host_port).filter(|b| b.contains("served-from-the-extra-mount")),
    );
    assert_eq!(body.trim(), "served-from-the-extra-mount");
    // The mount is read-only in the pod, and the node path was never made on this machine.
    let mode = c.kubectl_ok(&["exec", "web", "--", "cat", "/tmp/mode"]);
    assert_eq!(mode.trim(), "read-only");
    assert!(!www.join("probe").exists());
    assert!(!std::path::Path::new(&node_www).exists());
    let intolerant = c.json(&["get", "pod", "intolerant"]);
    assert!(
        intolerant["spec"]
            .get("nodeName")
            .is_none_or(Value::is_null),
        "a pod without the toleration was bound to the tainted node: {intolerant}"
    );
    // The proxy is a supervised component like the agents (run/portmap.pid).
    assert!(c.state_dir().join("run/portmap.pid").is_file());

    // `down` takes the mapping with it.
    c.down();
    assert!(
        TcpStream::connect(("127.0.0.1", host_port)).is_err(),
        "host port {host_port} still answers after down"
    );
    assert!(!c.state_dir().exists());
}

/// The pid in `run/<component>.pid` (or `.supervisor`) of the cluster's state directory.
fn pid_in(c: &Cluster, file: &str) -> Option<i32> {
    let text = std::fs::read_to_string(c.state_dir().join("run").join(file)).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn alive(pid: i32) -> bool {
    // Not a zombie: state field after the command name.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
}

fn kill9(pid: i32) {
    // SAFETY: kill has no memory preconditions.
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGKILL) },
        0,
        "kill -9 {pid}"
    );
    wait_for(&format!("pid {pid} gone"), Duration::from_secs(10), || {
        (!alive(pid)).then_some(())
    });
}

/// `f` on a thread in the named network namespace (/run/netns/<name>).
fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = std::fs::File::open(format!("/run/netns/{name}")).expect("open the node netns");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this thread only, with a namespace file we hold open.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
        f()
    })
    .join()
    .expect("thread in the node netns")
}

fn cmdline(pid: i32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .replace('\0', " ")
}

/// Issue 18: the cluster file is kept in the cluster's record. An agent killed with -9 is
/// restarted by its supervisor with its labels, taints and mirror; a later `up` without
/// `--config` (agent, supervisor and port mapping all gone) starts them as the file said; a
/// later `up` with a changed file is refused, naming the keys, and changes nothing.
#[test]
fn the_cluster_file_is_kept_for_every_later_start() {
    if !rktup_testkit::can_run_as_root("local_config", "`rktup local up`") {
        return;
    }
    let c = cluster("cfgkeep");
    let name = c.name().to_string();
    let images = Images::build();
    let registry = Registry::start();
    // Three tags only the mirror has, one per start of the agent: each pull goes to the mirror.
    let tags: Vec<String> = (0..3).map(|i| format!("keep{i}-{}", unique())).collect();
    for t in &tags {
        registry.push(&images.layout, "busybox", &format!("library/busybox:{t}"));
    }
    let host_port = free_port();
    let node_port = 30000 + (unique() % 2700) as u16;
    let cluster_file = |tier: &str| {
        format!(
            r#"kind: Cluster
DNS_DOMAIN: keep.test
nodes:
- role: control-plane
  labels: {{tier: {tier}}}
  taints: ["dedicated=db:NoSchedule"]
  extraPortMappings:
  - {{containerPort: {node_port}, hostPort: {host_port}, listenAddress: 127.0.0.1}}
registries:
  mirrors:
    docker.io: ["http://{reg}"]
"#,
            reg = registry.addr
        )
    };
    let file = c.write("cluster.yaml", &cluster_file("db"));
    c.rktup_ok(&[
        "local", "up", "--name", &name, "--config", &file, "--wait", "60s",
    ]);
    let node = format!("{name}-node-1");
    let record = c.record();
    assert_eq!(
        record["layout"]["nodes"][0]["labels"],
        serde_json::json!([{"key": "tier", "value": "db"}]),
        "{record}"
    );
    let labelled_and_tainted = |why: &str| {
        wait_for(why, Duration::from_secs(60), || {
            let n = c.json(&["get", "node", &node]);
            let ready = n["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            (ready
                && n["metadata"]["labels"]["tier"] == "db"
                && n["spec"]["taints"]
                    == serde_json::json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]))
            .then_some(())
        })
    };
    labelled_and_tainted("node 1 Ready, labelled and tainted");
    // A pod of docker.io/library/busybox:<tag> (only the mirror has it), serving on the
    // mapped NodePort.
    let web = |i: usize| {
        let pod = format!("web{i}");
        c.apply(
            &pod,
            &serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "labels": {"app": pod}},
                "spec": {
                    "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                    "containers": [{"name": "web", "image": format!("docker.io/library/busybox:{}", tags[i]),
                        "command": ["sh", "-c", format!("mkdir /www && echo start-{i} > /www/index.html && exec httpd -f -p 8080 -h /www")]}]
                }
            }),
        );
        wait_for(
            &format!("pod {pod} Running"),
            Duration::from_secs(90),
            || {
                let p = c.json(&["get", "pod", &pod]);
                (p["status"]["phase"] == "Running").then_some(())
            },
        );
        c.apply(
            "web-svc",
            &serde_json::json!({
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"type": "NodePort", "selector": {"app": pod},
                         "ports": [{"port": 80, "targetPort": 8080, "nodePort": node_port}]}
            }),
        );
        wait_for(
            &format!("the port mapping to reach pod {pod}"),
            Duration::from_secs(30),
            || http_get(host_port).filter(|b| b.trim() == format!("start-{i}")),
        );
    };
    web(0);

    // A hostPort answers on the node's own 127.0.0.1 too (the in-process kubenet: as kind's
    // nodes and upstream's portmap plugin serve it), not only on the node's address.
    let netns = record["nodes"][0]["netns"]
        .as_str()
        .expect("node netns")
        .to_string();
    let hp = 20000 + (unique() % 10000) as u16;
    c.apply(
        "hp",
        &serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hp"},
            "spec": {
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                "containers": [{"name": "web", "image": format!("docker.io/library/busybox:{}", tags[0]),
                    "ports": [{"containerPort": 8081, "hostPort": hp}],
                    "command": ["sh", "-c", "mkdir /www && echo host-port > /www/index.html && exec httpd -f -p 8081 -h /www"]}]
            }
        }),
    );
    wait_for(
        "the hostPort to answer on 127.0.0.1 in the node",
        Duration::from_secs(60),
        || in_netns(&netns, move || http_get(hp)).filter(|b| b.trim() == "host-port"),
    );
    c.kubectl_ok(&["delete", "pod", "hp", "--wait=false"]);

    // 1. kill -9 the agent: its supervisor starts it again, with the file's settings. The
    // Node is deleted once the old agent is gone, so the new one registers it afresh: with
    // the labels and the taint (taints are set on creation only).
    let agent = pid_in(&c, &format!("{node}.pid")).expect("agent pid");
    kill9(agent);
    c.kubectl_ok(&["delete", "node", &node, "--wait=false"]);
    let restarted = wait_for(
        "the supervisor to restart the agent",
        Duration::from_secs(30),
        || pid_in(&c, &format!("{node}.pid")).filter(|&p| p != agent && alive(p)),
    );
    let args = cmdline(restarted);
    for want in [
        "tier=db",
        "dedicated=db:NoSchedule",
        &format!("docker.io=http://{}", registry.addr),
    ] {
        assert!(args.contains(want), "restarted agent lacks {want}: {args}");
    }
    labelled_and_tainted("the restarted agent to register node 1, labelled and tainted");
    web(1);

    // 2. The agent, its supervisor and the port mapping (and its supervisor) gone: `up`
    // without --config starts them as the cluster file said.
    for component in [node.as_str(), "portmap"] {
        let sup = pid_in(&c, &format!("{component}.supervisor")).expect("supervisor pid");
        kill9(sup);
        kill9(pid_in(&c, &format!("{component}.pid")).expect("component pid"));
    }
    assert!(
        http_get(host_port).is_none(),
        "the port mapping still answers"
    );
    c.kubectl_ok(&["delete", "node", &node, "--wait=false"]);
    // The file's settings too: the agent keeps the cluster's DNS domain (its DNS answers
    // kubernetes.default.svc.keep.test, which `--wait` asks for), and `up` says so.
    let o = c.rktup(&["local", "up", "--name", &name, "--wait", "60s"]);
    o.assert_ok("");
    let said = o.stderr();
    assert!(said.contains("keeps DNS_DOMAIN=keep.test"), "{said}");
    let args = cmdline(pid_in(&c, &format!("{node}.pid")).expect("agent pid"));
    for want in [
        "tier=db",
        "dedicated=db:NoSchedule",
        &format!("docker.io=http://{}", registry.addr),
        "--cluster-domain=keep.test",
    ] {
        assert!(
            args.contains(want),
            "agent started by `up` lacks {want}: {args}"
        );
    }
    labelled_and_tainted("`up` without --config to register node 1, labelled and tainted");
    web(2);

    // 3. `up` with a changed file is refused, naming what differs, and changes nothing.
    let agent = pid_in(&c, &format!("{node}.pid")).expect("agent pid");
    let changed = c.write("changed.yaml", &cluster_file("web"));
    let o = c.rktup(&["local", "up", "--name", &name, "--config", &changed]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "a changed cluster file was accepted: {err}"
    );
    assert!(
        err.contains("was made with a different cluster file: nodes[0].labels differs"),
        "{err}"
    );
    assert!(alive(agent) && pid_in(&c, &format!("{node}.pid")) == Some(agent));
    let after = c.record();
    assert_eq!(after["layout"], record["layout"]);
    // The same file again is fine (nothing to change).
    c.rktup_ok(&[
        "local", "up", "--name", &name, "--config", &file, "--wait", "60s",
    ]);
    assert!(http_get(host_port).is_some_and(|b| b.trim() == "start-2"));
}
