//! `rktup local export logs [DIR]` (kind's `export logs`): everything needed to see why a CI run
//! failed, in one directory:
//!
//! ```text
//! DIR/controlplane.log                       the control plane's log
//! DIR/run/<component>.*.json                 what the process supervisors recorded (exits, restarts)
//! DIR/<node>/agent.log                       the node agent's log
//! DIR/<node>/pods.txt                        the node's pods as its runtime has them
//! DIR/<node>/pods/<ns>_<pod>_<uid>/<container>/<N>.log   run N of a container (CRI format)
//! DIR/<node>/pods/<ns>_<pod>_<uid>/runtime-status.json   the pod's status as the runtime wrote it
//! DIR/pods.yaml, nodes.yaml, events.yaml     from the API
//! DIR/events.txt                             `kubectl get events -A`-like
//! DIR/describe-pods.txt                      `kubectl describe`-like, pods that are not Ready
//! DIR/api-unreachable.txt                    instead of the four above when the API is down
//! ```
//!
//! Container logs are read through the runtime's façade (`Runtime::list`, `read_log`), never its
//! files; the API through kube-rs with the admin kubeconfig, or the `rktup-<name>` context of
//! `--kubeconfig`. With the control plane down, what is on disk is exported and the export says so.

use crate::layout::{ClusterRecord, Layout};
use crate::{err, process, Local};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams};
use rktup_provider::ProviderError;
use rktup_runtime::runtime::{PodEntry, Runtime, RuntimeConfig};
use rktup_runtime::{LogRead, LogRecord, LogSink, Stream};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub dir: PathBuf,
    /// None when the API answered; else why not (only what is on disk was exported).
    pub api_error: Option<String>,
    /// Things that could not be exported (one line each), the rest was.
    pub problems: Vec<String>,
}

/// `export logs`: into `dir` (made if missing), else a new directory under the temp dir.
pub fn export_logs(local: &Local, dir: Option<&Path>) -> Result<Exported, ProviderError> {
    let name = &local.settings.name;
    let layout = Layout::new(&local.settings.state_dir);
    let Some(rec) = layout.load() else {
        return Err(crate::no_cluster_hint(
            name,
            &layout,
            "`rktup local list` shows the clusters on this machine".into(),
        ));
    };
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| err(&d.display().to_string(), e))?;
            d.to_path_buf()
        }
        None => new_temp_dir(name)?,
    };
    let mut problems = Vec::new();
    copy_component_logs(&layout, &rec, &dir, &mut problems);
    copy_process_records(&layout, &dir, &mut problems);
    for node in &rec.nodes {
        export_node_pods(&layout, &node.name, &dir.join(&node.name), &mut problems);
    }
    let api_error = if process::running(&layout.pidfile("controlplane")).is_none() {
        Some("the control plane is not running".to_string())
    } else {
        let (kubeconfig, context) = local.api_kubeconfig(&layout);
        crate::ready::block_on(export_api(&kubeconfig, context, &dir))
            .and_then(|r| r)
            .err()
    };
    if let Some(e) = &api_error {
        let note = format!(
            "The API of cluster \"{name}\" could not be read ({e}): pods, nodes and events are \
             missing; the logs are what was on disk.\n"
        );
        write_file(
            &dir.join("api-unreachable.txt"),
            note.as_bytes(),
            &mut problems,
        );
    }
    if !problems.is_empty() {
        write_file(
            &dir.join("export-problems.txt"),
            (problems.join("\n") + "\n").as_bytes(),
            &mut problems,
        );
    }
    Ok(Exported {
        dir,
        api_error,
        problems,
    })
}

/// `<temp>/rktup-<cluster>-logs-<n>`, made new (never an existing directory reused).
fn new_temp_dir(cluster: &str) -> Result<PathBuf, ProviderError> {
    let base = std::env::temp_dir();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    for i in 0..1000 {
        let d = base.join(format!(
            "rktup-{cluster}-logs-{stamp}-{}{}",
            std::process::id(),
            if i == 0 {
                String::new()
            } else {
                format!("-{i}")
            }
        ));
        match std::fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(err(&d.display().to_string(), e)),
        }
    }
    Err(err(
        &format!("failed to make a new directory under {}", base.display()),
        "every name tried exists",
    ))
}

fn write_file(path: &Path, data: &[u8], problems: &mut Vec<String>) {
    let r = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, data));
    if let Err(e) = r {
        problems.push(format!("{}: {e}", path.display()));
    }
}

/// The control plane's log to `DIR/controlplane.log`, each agent's to `DIR/<node>/agent.log`,
/// anything else in the logs directory to `DIR/` under its own name.
fn copy_component_logs(
    layout: &Layout,
    rec: &ClusterRecord,
    dir: &Path,
    problems: &mut Vec<String>,
) {
    let Ok(rd) = std::fs::read_dir(layout.logs_dir()) else {
        problems.push(format!(
            "{}: no logs directory",
            layout.logs_dir().display()
        ));
        return;
    };
    for e in rd.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let to = match file.strip_suffix(".log") {
            Some(stem) if rec.nodes.iter().any(|n| n.name == stem) => {
                dir.join(stem).join("agent.log")
            }
            _ => dir.join(&file),
        };
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match std::fs::read(e.path()) {
            Ok(data) => write_file(&to, &data, problems),
            Err(err) => problems.push(format!("{}: {err}", e.path().display())),
        }
    }
}

/// What the processes' supervisors recorded (why each one last exited, its restarts) to
/// `DIR/run/`, copied as they are; the pid files are left out (meaningless elsewhere).
fn copy_process_records(layout: &Layout, dir: &Path, problems: &mut Vec<String>) {
    let run = layout.root.join("run");
    let Ok(rd) = std::fs::read_dir(&run) else {
        return;
    };
    for e in rd.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        if !file.ends_with(".json") || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match std::fs::read(e.path()) {
            Ok(data) => write_file(&dir.join("run").join(&file), &data, problems),
            Err(err) => problems.push(format!("{}: {err}", e.path().display())),
        }
    }
}

/// Writes records in the kubelet's CRI log format, as they are in `/var/log/pods`.
struct FileSink<W: Write> {
    out: W,
    error: Option<std::io::Error>,
}

impl<W: Write> LogSink for FileSink<W> {
    fn record(&mut self, r: &LogRecord<'_>) -> ControlFlow<()> {
        let stream = match r.stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        let tag = if r.partial { "P" } else { "F" };
        let res = write!(self.out, "{} {stream} {tag} ", r.time)
            .and_then(|()| self.out.write_all(r.content))
            .and_then(|()| self.out.write_all(b"\n"));
        match res {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.error = Some(e);
                ControlFlow::Break(())
            }
        }
    }
    fn caught_up(&mut self) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

/// Every pod the node's runtime holds: each run of each container, and the pod's status.
fn export_node_pods(layout: &Layout, node: &str, out: &Path, problems: &mut Vec<String>) {
    let root = layout.node_root(node);
    if !root.join("pods").is_dir() {
        // A node whose agent never ran a pod: nothing to read (and nothing to create there).
        write_file(&out.join("pods.txt"), b"", problems);
        return;
    }
    let rt = match Runtime::new(RuntimeConfig::new(&root)) {
        Ok(rt) => rt,
        Err(e) => {
            problems.push(format!("{node}: the runtime at {}: {e}", root.display()));
            return;
        }
    };
    let mut listing = String::from("UUID\tNAMESPACE/NAME\tSTATE\tPHASE\tSUPERVISOR\n");
    for entry in rt.list() {
        let p = &entry.plan;
        listing.push_str(&format!(
            "{}\t{}/{}\t{}\t{}\t{}\n",
            p.uuid,
            p.namespace,
            p.name,
            entry.status.state.as_str(),
            entry.status.phase,
            if entry.alive { "running" } else { "gone" }
        ));
        let pod_dir = out
            .join("pods")
            .join(format!("{}_{}_{}", p.namespace, p.name, p.uid));
        export_pod(&rt, &entry, &pod_dir, problems);
    }
    write_file(&out.join("pods.txt"), listing.as_bytes(), problems);
}

fn export_pod(rt: &Runtime, entry: &PodEntry, pod_dir: &Path, problems: &mut Vec<String>) {
    let status = rt.status(entry).unwrap_or_else(|_| entry.status.clone());
    match serde_json::to_vec_pretty(&status) {
        Ok(j) => write_file(&pod_dir.join("runtime-status.json"), &j, problems),
        Err(e) => problems.push(format!("{}: {e}", pod_dir.display())),
    }
    let containers = status
        .init_containers
        .iter()
        .chain(status.containers.iter());
    let mut names: Vec<(String, u32)> = containers
        .map(|c| (c.name.clone(), c.restart_count))
        .collect();
    // A container with no status yet may still have written a first run.
    for c in entry
        .plan
        .init_containers
        .iter()
        .chain(entry.plan.containers.iter())
    {
        if !names.iter().any(|(n, _)| n == &c.name) {
            names.push((c.name.clone(), 0));
        }
    }
    for (c, restarts) in names {
        for run in 0..=restarts {
            if !rt.has_log(entry, &c, run) {
                continue;
            }
            let path = pod_dir.join(&c).join(format!("{run}.log"));
            if let Err(e) = std::fs::create_dir_all(pod_dir.join(&c)) {
                problems.push(format!("{}: {e}", path.display()));
                continue;
            }
            let file = match std::fs::File::create(&path) {
                Ok(f) => f,
                Err(e) => {
                    problems.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let mut sink = FileSink {
                out: std::io::BufWriter::new(file),
                error: None,
            };
            let res = rt.read_log(entry, &c, run, &LogRead::default(), &mut sink);
            let res = res.and_then(|()| sink.out.flush());
            if let Some(e) = sink.error.take().or(res.err()) {
                problems.push(format!("{}: {e}", path.display()));
            }
        }
    }
}

/// Pods, nodes and events from the API, and the reports made of them.
async fn export_api(kubeconfig: &Path, context: Option<String>, dir: &Path) -> Result<(), String> {
    let c = crate::ready::client_in(kubeconfig, context).await?;
    let lp = ListParams::default();
    let pods = Api::<Pod>::all(c.clone())
        .list(&lp)
        .await
        .map_err(|e| format!("list pods: {e}"))?;
    let nodes = Api::<Node>::all(c.clone())
        .list(&lp)
        .await
        .map_err(|e| format!("list nodes: {e}"))?;
    let events = Api::<Event>::all(c)
        .list(&lp)
        .await
        .map_err(|e| format!("list events: {e}"))?;
    let mut problems = Vec::new();
    write_file(
        &dir.join("pods.yaml"),
        yaml(&pods.items)?.as_bytes(),
        &mut problems,
    );
    write_file(
        &dir.join("nodes.yaml"),
        yaml(&nodes.items)?.as_bytes(),
        &mut problems,
    );
    write_file(
        &dir.join("events.yaml"),
        yaml(&events.items)?.as_bytes(),
        &mut problems,
    );
    let mut events = events.items;
    events.sort_by_key(event_time);
    write_file(
        &dir.join("events.txt"),
        events_table(&events).as_bytes(),
        &mut problems,
    );
    let describe: String = pods
        .items
        .iter()
        .filter(|p| !pod_ready(p) && phase(p) != "Succeeded")
        .map(|p| describe_pod(p, &events))
        .collect::<Vec<_>>()
        .join("\n\n");
    write_file(
        &dir.join("describe-pods.txt"),
        describe.as_bytes(),
        &mut problems,
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn yaml<T: serde::Serialize>(v: &T) -> Result<String, String> {
    serde_yaml_ng::to_string(v).map_err(|e| e.to_string())
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The time kubectl sorts and shows an event by: last seen, else event time, else creation.
fn event_time(e: &Event) -> String {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0.to_string()))
        .or_else(|| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
        })
        .unwrap_or_default()
}

/// `kubectl get events -A`'s columns, with the time itself instead of its age.
fn events_table(events: &[Event]) -> String {
    let mut out = String::from("NAMESPACE\tLAST SEEN\tTYPE\tREASON\tOBJECT\tMESSAGE\n");
    for e in events {
        let o = &e.involved_object;
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}/{}\t{}\n",
            e.metadata.namespace.as_deref().unwrap_or_default(),
            event_time(e),
            e.type_.as_deref().unwrap_or_default(),
            e.reason.as_deref().unwrap_or_default(),
            o.kind.as_deref().unwrap_or_default().to_lowercase(),
            o.name.as_deref().unwrap_or_default(),
            e.message.as_deref().unwrap_or_default().trim_end(),
        ));
    }
    out
}

/// What `kubectl describe pod` shows of a pod that is not Ready: where it runs, each
/// container's state, the conditions and the pod's events.
fn describe_pod(p: &Pod, events: &[Event]) -> String {
    let m = &p.metadata;
    let spec = p.spec.as_ref();
    let st = p.status.as_ref();
    let mut s = String::new();
    let mut line = |k: &str, v: &str| s.push_str(&format!("{k:<14}{v}\n"));
    line("Name:", m.name.as_deref().unwrap_or_default());
    line("Namespace:", m.namespace.as_deref().unwrap_or_default());
    line(
        "Node:",
        spec.and_then(|s| s.node_name.as_deref())
            .unwrap_or("<none>"),
    );
    line("Status:", phase(p));
    if let Some(r) = st.and_then(|s| s.reason.as_deref()) {
        line("Reason:", r);
    }
    if let Some(r) = st.and_then(|s| s.message.as_deref()) {
        line("Message:", r);
    }
    line("IP:", st.and_then(|s| s.pod_ip.as_deref()).unwrap_or(""));
    s.push_str("Containers:\n");
    let statuses = st.and_then(|s| s.container_statuses.as_ref());
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        s.push_str(&format!("  {}:\n", c.name));
        s.push_str(&format!(
            "    Image:          {}\n",
            c.image.as_deref().unwrap_or_default()
        ));
        let cs = statuses.and_then(|v| v.iter().find(|x| x.name == c.name));
        let state = cs.and_then(|x| x.state.as_ref());
        let (state, detail) = match state {
            Some(t) if t.running.is_some() => ("Running".to_string(), String::new()),
            Some(t) if t.terminated.is_some() => {
                let t = t.terminated.as_ref();
                (
                    "Terminated".into(),
                    format!(
                        " (reason {}, exit code {})",
                        t.and_then(|t| t.reason.as_deref()).unwrap_or("?"),
                        t.map(|t| t.exit_code).unwrap_or_default()
                    ),
                )
            }
            Some(t) => (
                "Waiting".into(),
                t.waiting
                    .as_ref()
                    .and_then(|w| w.reason.as_deref())
                    .map(|r| format!(" (reason {r})"))
                    .unwrap_or_default(),
            ),
            None => ("<unknown>".into(), String::new()),
        };
        s.push_str(&format!("    State:          {state}{detail}\n"));
        s.push_str(&format!(
            "    Ready:          {}\n",
            cs.is_some_and(|x| x.ready)
        ));
        s.push_str(&format!(
            "    Restart Count:  {}\n",
            cs.map(|x| x.restart_count).unwrap_or_default()
        ));
    }
    s.push_str("Conditions:\n  Type\tStatus\tReason\n");
    for c in st.and_then(|s| s.conditions.as_deref()).unwrap_or_default() {
        s.push_str(&format!(
            "  {}\t{}\t{}\n",
            c.type_,
            c.status,
            c.reason.as_deref().unwrap_or_default()
        ));
    }
    s.push_str("Events:\n  Type\tReason\tLast seen\tMessage\n");
    let uid = m.uid.as_deref();
    let mine = events.iter().filter(|e| {
        let o = &e.involved_object;
        o.kind.as_deref() == Some("Pod")
            && (uid.is_some() && o.uid.as_deref() == uid
                || o.name == m.name && o.namespace == m.namespace)
    });
    for e in mine {
        s.push_str(&format!(
            "  {}\t{}\t{}\t{}\n",
            e.type_.as_deref().unwrap_or_default(),
            e.reason.as_deref().unwrap_or_default(),
            event_time(e),
            e.message.as_deref().unwrap_or_default().trim_end()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines_are_written_as_the_kubelet_writes_them() {
        let mut sink = FileSink {
            out: Vec::new(),
            error: None,
        };
        let _ = sink.record(&LogRecord {
            time: "2026-01-01T00:00:00.000000001Z",
            stream: Stream::Stderr,
            partial: true,
            content: b"half",
        });
        let _ = sink.record(&LogRecord {
            time: "2026-01-01T00:00:00.000000002Z",
            stream: Stream::Stdout,
            partial: false,
            content: b"whole",
        });
        assert_eq!(
            String::from_utf8(sink.out).unwrap(),
            "2026-01-01T00:00:00.000000001Z stderr P half\n\
             2026-01-01T00:00:00.000000002Z stdout F whole\n"
        );
    }

    #[test]
    fn a_not_ready_pod_is_described_with_its_events() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "w", "namespace": "ns", "uid": "u1"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "img"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False",
                       "reason": "ContainersNotReady"}],
                       "containerStatuses": [{"name": "c", "image": "img", "imageID": "",
                        "ready": false, "restartCount": 3,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        }))
        .unwrap();
        let ev: Event = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "w.1", "namespace": "ns"},
            "involvedObject": {"kind": "Pod", "name": "w", "namespace": "ns", "uid": "u1"},
            "type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container",
            "lastTimestamp": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        assert!(!pod_ready(&pod));
        let d = describe_pod(&pod, std::slice::from_ref(&ev));
        assert!(d.contains("Node:         n1"), "{d}");
        assert!(d.contains("Waiting (reason CrashLoopBackOff)"), "{d}");
        assert!(d.contains("Restart Count:  3"), "{d}");
        assert!(
            d.contains("Warning\tBackOff\t2026-01-01T00:00:00Z\tBack-off restarting"),
            "{d}"
        );
        let t = events_table(&[ev]);
        assert!(
            t.contains("ns\t2026-01-01T00:00:00Z\tWarning\tBackOff\tpod/w\t"),
            "{t}"
        );
    }
}
