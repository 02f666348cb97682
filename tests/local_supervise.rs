//! Self-healing local clusters (issue 18): every component runs under `rktup supervise`. On a real
//! one-node cluster: `kill -9` of the agent → restarted, the node heartbeats again and a pod
//! started before still runs, unrestarted, and serves; `kill -9` of the control plane →
//! restarted, the API answers and objects are still there; SIGTERM to the agent → it logs who
//! sent it and is restarted too; `local status` (text and JSON) shows restarts and exit reasons;
//! `local down` leaves no process behind, supervisors included. Needs root.

use rktup_testkit::local::{http_get, LocalCluster as Cluster};
use rktup_testkit::{wait_for, Images, Registry};
use serde_json::Value;
use std::time::Duration;

/// `local status -o json`; its exit status is not checked: it is an error while a component
/// restarts.
fn status_json(c: &Cluster) -> Value {
    let o = c.rktup(&["local", "status", "--name", c.name(), "-o", "json"]);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("local status -o json: {e}\n{o}"))
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: a pid read from the cluster's own pid file a moment ago.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {pid}");
}

/// The component's pid once its supervisor has started a new one (not `old`).
fn restarted(c: &Cluster, component: &str, old: i32) -> i32 {
    wait_for(
        &format!("{component} restarted"),
        Duration::from_secs(30),
        || c.pid(component).filter(|&p| p != old),
    )
}

fn ready_heartbeat(node: &Value) -> Option<(String, String)> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["lastHeartbeatTime"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
}

#[test]
fn killed_components_are_restarted_and_recorded() {
    if !rktup_testkit::can_run_as_root("local_supervise", "`rktup local up`") {
        return;
    }
    let images = Images::build();
    let registry = Registry::start();
    let image = registry.push(&images.layout, "busybox", "supervised:1.0");
    let c = rktup_testkit::local_cluster!("sv")
        .nodes(1)
        .insecure_registry(&registry.addr)
        .build();
    c.up();
    let node = c.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    let node = node.trim().to_string();

    // Supervised: each component's parent is its supervisor, recorded beside its pid file.
    let status = status_json(&c);
    let cp_sup = status["controlplane_supervisor"]["supervisorPid"].as_i64();
    assert!(cp_sup.is_some(), "control plane not supervised: {status:#}");
    assert_eq!(
        status["nodes"][0]["agent_supervisor"]["restarts"], 0,
        "{status:#}"
    );

    // A pod serving HTTP, and an object to find again after the control plane restarts.
    let page =
        "mkdir -p /www && echo supervised > /www/index.html && exec httpd -f -p 8080 -h /www";
    c.kubectl_ok(&[
        "run",
        "web",
        "--image",
        &image,
        "--restart=Never",
        "--",
        "sh",
        "-c",
        page,
    ]);
    c.kubectl_ok(&["create", "configmap", "keep", "--from-literal=k=v"]);
    let (ip, started_at) = wait_for("web serving", Duration::from_secs(90), || {
        let p = c.try_json(&["get", "pod", "web"])?;
        let ip = p["status"]["podIP"].as_str()?.to_string();
        let started = p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
            .as_str()?
            .to_string();
        (http_get(&format!("{ip}:8080")).ok()? == "supervised").then_some((ip, started))
    });

    // kill -9 of the agent.
    let agent = c.pid(&node).expect("agent pid");
    let (_, beat_before) = ready_heartbeat(&c.try_json(&["get", "node", &node]).expect("node"))
        .expect("Ready condition");
    kill(agent, libc::SIGKILL);
    let agent2 = restarted(&c, &node, agent);
    wait_for(
        "the restarted agent heartbeats, Ready",
        Duration::from_secs(90),
        || {
            let (ready, beat) = ready_heartbeat(&c.try_json(&["get", "node", &node])?)?;
            (ready == "True" && beat != beat_before).then_some(())
        },
    );
    // The pod was adopted, not restarted: same container start, still serving.
    let p = c.try_json(&["get", "pod", "web"]).expect("pod web");
    assert_eq!(p["status"]["phase"], "Running", "{p:#}");
    assert_eq!(
        p["status"]["containerStatuses"][0]["restartCount"], 0,
        "{p:#}"
    );
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].as_str(),
        Some(started_at.as_str()),
        "{p:#}"
    );
    assert_eq!(http_get(&format!("{ip}:8080")).as_deref(), Ok("supervised"));
    let st = status_json(&c);
    let a = &st["nodes"][0]["agent_supervisor"];
    assert_eq!(a["restarts"], 1, "{st:#}");
    assert_eq!(a["lastExit"]["pid"], agent, "{st:#}");
    assert_eq!(a["lastExit"]["signalName"], "SIGKILL", "{st:#}");
    assert_eq!(st["nodes"][0]["agent_pid"], agent2, "{st:#}");

    // kill -9 of the control plane.
    let cp = c.pid("controlplane").expect("control plane pid");
    kill(cp, libc::SIGKILL);
    restarted(&c, "controlplane", cp);
    let cm = wait_for("the API answers again", Duration::from_secs(60), || {
        c.try_json(&["get", "configmap", "keep"])
    });
    assert_eq!(cm["data"]["k"], "v");
    let p = c.try_json(&["get", "pod", "web"]).expect("pod web");
    assert_eq!(p["status"]["phase"], "Running", "{p:#}");
    assert_eq!(http_get(&format!("{ip}:8080")).as_deref(), Ok("supervised"));
    let st = status_json(&c);
    assert_eq!(st["controlplane_supervisor"]["restarts"], 1, "{st:#}");
    assert_eq!(
        st["controlplane_supervisor"]["lastExit"]["signalName"], "SIGKILL",
        "{st:#}"
    );
    assert_eq!(
        st["controlplane_supervisor"]["supervisorPid"].as_i64(),
        cp_sup
    );

    // SIGTERM to the agent: it logs the sender (this test) and exits 0; it is restarted anyway,
    // as systemd's Restart=always does. Its second restart waits 2 s (the back-off doubled).
    let agent = agent2;
    kill(agent, libc::SIGTERM);
    let agent3 = restarted(&c, &node, agent);
    let log =
        std::fs::read_to_string(c.state_dir().join(format!("logs/{node}.log"))).expect("agent log");
    let me = std::process::id();
    assert!(
        log.contains(&format!("received SIGTERM from pid {me}")),
        "agent log does not name the sender {me}:\n{log}"
    );
    assert!(
        log.contains(&format!("(pid {agent}) exited with code 0")),
        "supervisor line missing:\n{log}"
    );
    let text = {
        let o = c.rktup(&["local", "status", "--name", c.name()]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(
        text.contains(&format!(
            "agent {node}: running (pid {agent3}, restarted 2×, last exit: exited with code 0 at "
        )),
        "{text}"
    );
    assert!(
        text.contains("control plane: running") && text.contains("killed by SIGKILL at "),
        "{text}"
    );
    wait_for(
        "node Ready after the SIGTERM",
        Duration::from_secs(60),
        || {
            let (ready, _) = ready_heartbeat(&c.try_json(&["get", "node", &node])?)?;
            (ready == "True").then_some(())
        },
    );

    // SIGTERM to the control plane: it logs the sender too, shuts down cleanly (exit 0) and is
    // back after its (doubled) back-off, objects intact.
    let cp = c.pid("controlplane").expect("control plane pid");
    kill(cp, libc::SIGTERM);
    restarted(&c, "controlplane", cp);
    let log = std::fs::read_to_string(c.state_dir().join("logs/controlplane.log"))
        .expect("control plane log");
    assert!(
        log.contains(&format!("received SIGTERM from pid {me}")),
        "control plane log does not name the sender {me}:\n{log}"
    );
    let cm = wait_for(
        "the API answers after SIGTERM",
        Duration::from_secs(60),
        || c.try_json(&["get", "configmap", "keep"]),
    );
    assert_eq!(cm["data"]["k"], "v");
    let st = status_json(&c);
    assert_eq!(st["controlplane_supervisor"]["restarts"], 2, "{st:#}");
    assert_eq!(
        st["controlplane_supervisor"]["lastExit"]["code"], 0,
        "{st:#}"
    );

    // down: supervisors first, then everything; nothing of the cluster keeps running.
    let out = c.down();
    assert!(
        out.contains("process supervisor of controlplane")
            && out.contains(&format!("process supervisor of {node}")),
        "{out}"
    );
    c.assert_nothing_left();
}
