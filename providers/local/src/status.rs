//! `rktup local status`: control-plane health, nodes and their state, pods per node, and where
//! the logs are — from the record, the processes and the cluster's own API.

use crate::layout::Layout;
use crate::{network, process, ready, supervise, Local};
use rktup_config::OutputFormat;
use rktup_provider::ProviderError;

#[derive(Debug, serde::Serialize)]
struct NodeStatus {
    name: String,
    netns: String,
    ip: String,
    pod_cidr: String,
    agent_pid: Option<i32>,
    agent_supervisor: Supervision,
    namespace_present: bool,
    ready: Option<bool>,
    pods: Vec<String>,
    log: String,
}

#[derive(Debug, serde::Serialize)]
struct Status {
    name: String,
    state_dir: String,
    server: String,
    controlplane_pid: Option<i32>,
    controlplane_supervisor: Supervision,
    api: String,
    nodes: Vec<NodeStatus>,
    logs: String,
}

/// A component's supervisor: whether it runs, how often it restarted the component, why it
/// last exited.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Supervision {
    supervisor_pid: Option<i32>,
    restarts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_exit: Option<supervise::Exit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restarting_in_seconds: Option<f64>,
}

impl Supervision {
    fn of(pidfile: &std::path::Path) -> Supervision {
        let state = supervise::read_state(pidfile).unwrap_or_default();
        Supervision {
            supervisor_pid: supervise::supervisor(pidfile).map(|t| t.pid),
            restarts: state.restarts,
            last_exit: state.last_exit,
            restarting_in_seconds: state.restarting_in_seconds,
        }
    }

    /// "running (restarted 2×, last exit: killed by SIGKILL at 01:02:03 UTC)".
    fn describe(&self, pid: Option<i32>) -> String {
        let mut parts = vec![];
        let state = match (pid, self.restarting_in_seconds) {
            (Some(p), _) => {
                parts.push(format!("pid {p}"));
                "running".to_string()
            }
            (None, Some(w)) if self.supervisor_pid.is_some() => format!("restarting in {w:.0}s"),
            _ => "stopped".to_string(),
        };
        parts.push(format!("restarted {}×", self.restarts));
        if let Some(e) = &self.last_exit {
            parts.push(format!("last exit: {}", e.describe()));
        }
        if self.supervisor_pid.is_none() {
            parts.push("not supervised".into());
        }
        format!("{state} ({})", parts.join(", "))
    }
}

pub fn status(local: &Local) -> Result<(), ProviderError> {
    let name = &local.settings.name;
    let layout = Layout::new(&local.settings.state_dir);
    let Some(rec) = layout.load() else {
        return Err(crate::no_cluster(name, &layout));
    };
    let cp = process::running(&layout.pidfile("controlplane"));
    let api = if cp.is_some() {
        let (kubeconfig, context) = local.api_kubeconfig(&layout);
        ready::block_on(ready::nodes(&kubeconfig, context)).and_then(|r| r)
    } else {
        Err("control plane not running".to_string())
    };
    let st = Status {
        name: name.clone(),
        state_dir: layout.root.display().to_string(),
        server: rec.api_url(),
        controlplane_pid: cp.map(|t| t.pid),
        controlplane_supervisor: Supervision::of(&layout.pidfile("controlplane")),
        api: match &api {
            Ok(_) => "healthy".into(),
            Err(e) => format!("unreachable: {e}"),
        },
        nodes: rec
            .nodes
            .iter()
            .map(|n| {
                let seen = api
                    .as_ref()
                    .ok()
                    .and_then(|nodes| nodes.iter().find(|s| s.name == n.name));
                NodeStatus {
                    name: n.name.clone(),
                    netns: n.netns.clone(),
                    ip: n.ip.to_string(),
                    pod_cidr: n.pod_cidr.to_string(),
                    agent_pid: process::running(&layout.pidfile(&n.name)).map(|t| t.pid),
                    agent_supervisor: Supervision::of(&layout.pidfile(&n.name)),
                    namespace_present: network::netns_path(&n.netns).exists(),
                    ready: seen.map(|s| s.ready),
                    pods: seen.map(|s| s.pods.clone()).unwrap_or_default(),
                    log: layout.log(&n.name).display().to_string(),
                }
            })
            .collect(),
        logs: layout.logs_dir().display().to_string(),
    };
    match local.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&st).map_err(|source| ProviderError::Json {
                what: "the cluster's status",
                source
            })?
        ),
        OutputFormat::Text => print_text(&st),
    }
    let mut missing: Vec<String> = st
        .controlplane_pid
        .is_none()
        .then(|| "the control plane".to_string())
        .into_iter()
        .collect();
    missing.extend(
        st.nodes
            .iter()
            .filter(|n| n.agent_pid.is_none())
            .map(|n| format!("the agent of {}", n.name)),
    );
    if !missing.is_empty() {
        return Err(ProviderError::NotRunning {
            provider: "local",
            cluster: name.clone(),
            missing,
        });
    }
    Ok(())
}

fn print_text(st: &Status) {
    let pid = |p: Option<i32>| match p {
        Some(p) => format!("running (pid {p})"),
        None => "stopped".into(),
    };
    println!("Cluster:        {}", st.name);
    println!("State:          {}", st.state_dir);
    println!(
        "Control plane:  {}, {} — API {}",
        pid(st.controlplane_pid),
        st.server,
        st.api
    );
    println!();
    println!(
        "{:<24} {:<9} {:<13} {:<16} {:<20} {:>4}  NETWORK NAMESPACE",
        "NODE", "STATUS", "IP", "POD CIDR", "AGENT", "PODS"
    );
    for n in &st.nodes {
        let status = match n.ready {
            Some(true) => "Ready",
            Some(false) => "NotReady",
            None => "Unknown",
        };
        let ns = if n.namespace_present {
            n.netns.clone()
        } else {
            format!("{} (missing)", n.netns)
        };
        println!(
            "{:<24} {:<9} {:<13} {:<16} {:<20} {:>4}  {}",
            n.name,
            status,
            n.ip,
            n.pod_cidr,
            pid(n.agent_pid),
            n.pods.len(),
            ns
        );
    }
    println!("\nSupervised processes:");
    println!(
        "  control plane: {}",
        st.controlplane_supervisor.describe(st.controlplane_pid)
    );
    for n in &st.nodes {
        println!(
            "  agent {}: {}",
            n.name,
            n.agent_supervisor.describe(n.agent_pid)
        );
    }
    for n in st.nodes.iter().filter(|n| !n.pods.is_empty()) {
        println!("\nPods on {}:", n.name);
        for p in &n.pods {
            println!("  {p}");
        }
    }
    println!(
        "\nLogs:           {} (controlplane.log, <node>.log)",
        st.logs
    );
    if let Some(n) = st.nodes.first() {
        println!("On a node:      ip netns exec {} rktup rkt list", n.netns);
    }
}
