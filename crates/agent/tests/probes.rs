//! Probes against the embedded control plane (over HTTPS, node bearer token) and a real agent:
//! readiness by httpGet, exec and tcpSocket flipping the pod's Ready condition, a liveness
//! failure restarting the container, a startup probe holding back liveness and readiness, and
//! the `rktup stage1 --enter` facility exec probes use. Everything is asserted on the API
//! objects (conditions, containerStatuses, events). Each test has its own control plane, agent,
//! registry, bridge and kubelet port, so they run in parallel.

use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod, PodCondition};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rktup_testkit::agent::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

rktup_testkit::cluster_with_helpers!();

impl Cluster {
    fn start_probes() -> Cluster {
        let c = Cluster(ClusterNode::start("pn", &[]));
        c.node.bridge_net("0.4.0");
        c
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), "default")
    }

    fn events(&self) -> Api<Event> {
        Api::namespaced(self.admin.clone(), "default")
    }

    /// A host directory the pod mounts at /trigger: the test creates files in it to make the
    /// container change its behaviour.
    fn trigger_dir(&self) -> PathBuf {
        let d = self.tmp.path().join("trigger");
        std::fs::create_dir_all(&d).expect("trigger dir");
        d
    }

    fn create(&self, mut pod: serde_json::Value) {
        pod["spec"]["nodeName"] = self.node_name.clone().into();
        pod["spec"]["terminationGracePeriodSeconds"] = 2.into();
        let pod: Pod = serde_json::from_value(pod).expect("pod");
        self.rt
            .block_on(self.pods().create(&PostParams::default(), &pod))
            .expect("create pod");
    }

    /// Wait until the pod satisfies `f`; on timeout fail with the pod and the agent's log.
    fn pod_until(&self, name: &str, what: &str, secs: u64, f: impl Fn(&Pod) -> bool) -> Pod {
        let api = self.pods();
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = None;
        loop {
            if let Ok(Some(p)) = self.rt.block_on(api.get_opt(name)) {
                if f(&p) {
                    return p;
                }
                last = Some(p);
            }
            if Instant::now() > deadline {
                panic!(
                    "pod {name}: {what} not reached in {secs}s; last status:\n{}\nevents:\n{}\nagent log:\n{}",
                    serde_json::to_string_pretty(&last.and_then(|p| p.status)).unwrap_or_default(),
                    self.describe_events(),
                    tail(&self.node.agent_log(), 80)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Wait for an event about `pod` with `reason` whose message starts with `prefix`.
    fn event(&self, pod: &str, reason: &str, prefix: &str, secs: u64) -> Event {
        self.event_where(pod, reason, prefix, secs, |_| true)
    }

    fn event_where(
        &self,
        pod: &str,
        reason: &str,
        prefix: &str,
        secs: u64,
        f: impl Fn(&Event) -> bool,
    ) -> Event {
        let api = self.events();
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let found = self
                .rt
                .block_on(api.list(&ListParams::default()))
                .ok()
                .and_then(|l| {
                    l.items.into_iter().find(|e| {
                        e.involved_object.name.as_deref() == Some(pod)
                            && e.reason.as_deref() == Some(reason)
                            && e.message.as_deref().is_some_and(|m| m.starts_with(prefix))
                            && f(e)
                    })
                });
            if let Some(e) = found {
                return e;
            }
            if Instant::now() > deadline {
                panic!(
                    "no {reason} event {prefix:?} for {pod} in {secs}s; events:\n{}\nagent log:\n{}",
                    self.describe_events(),
                    tail(&self.node.agent_log(), 80)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn describe_events(&self) -> String {
        self.rt
            .block_on(self.events().list(&ListParams::default()))
            .map(|l| {
                l.items
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {} x{}: {}",
                            e.involved_object.name.as_deref().unwrap_or_default(),
                            e.reason.as_deref().unwrap_or_default(),
                            e.count.unwrap_or_default(),
                            e.message.as_deref().unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }

    fn events_of(&self, pod: &str, reason: &str, prefix: &str) -> Vec<Event> {
        self.rt
            .block_on(self.events().list(&ListParams::default()))
            .map(|l| {
                l.items
                    .into_iter()
                    .filter(|e| {
                        e.involved_object.name.as_deref() == Some(pod)
                            && e.reason.as_deref() == Some(reason)
                            && e.message.as_deref().is_some_and(|m| m.starts_with(prefix))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The runtime pod directory of API pod `name`.
    fn pod_dir(&self, name: &str) -> PathBuf {
        let p = self
            .node
            .wait_pod(name, "known to the runtime", 30, |p| p["alive"] == true);
        self.node.root.join("pods").join(uuid_of(&p))
    }

    /// Run the test body, then delete every pod and wait until the node ran them down, whether
    /// the body passed or not.
    fn run(mut self, body: impl FnOnce(&Cluster)) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&self)));
        let pods = self.pods();
        let _ = self.rt.block_on(async {
            let list = pods.list(&ListParams::default()).await?;
            for p in list.items {
                let name = p.metadata.name.unwrap_or_default();
                let _ = pods.delete(&name, &DeleteParams::default()).await;
            }
            Ok::<(), kube::Error>(())
        });
        let cleaned =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.node.wait_no_pods(60)));
        self.stop_control_plane();
        if let Err(e) = r {
            std::panic::resume_unwind(e);
        }
        if let Err(e) = cleaned {
            std::panic::resume_unwind(e);
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn condition(p: &Pod, type_: &str) -> Option<PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

fn is(p: &Pod, type_: &str, status: &str) -> bool {
    condition(p, type_).is_some_and(|c| c.status == status)
}

fn container(p: &Pod) -> Option<ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()
        .cloned()
}

fn running(p: &Pod) -> bool {
    container(p).is_some_and(|c| c.state.is_some_and(|s| s.running.is_some()))
}

/// Running, but not ready: Ready and ContainersReady False for ContainersNotReady.
fn running_unready(p: &Pod) -> bool {
    running(p)
        && container(p).is_some_and(|c| !c.ready)
        && is(p, "Ready", "False")
        && is(p, "ContainersReady", "False")
}

fn ready(p: &Pod) -> bool {
    running(p)
        && container(p).is_some_and(|c| c.ready && c.started == Some(true))
        && is(p, "Ready", "True")
        && is(p, "ContainersReady", "True")
}

/// The Ready condition went False → True: reasons and messages as upstream, and a new
/// lastTransitionTime not before the False one.
fn assert_flipped(before: &Pod, after: &Pod) {
    let f = condition(before, "Ready").expect("Ready before");
    assert_eq!(f.reason.as_deref(), Some("ContainersNotReady"), "{f:?}");
    assert_eq!(
        f.message.as_deref(),
        Some("containers with unready status: [c]"),
        "{f:?}"
    );
    let t = condition(after, "Ready").expect("Ready after");
    assert_eq!((t.reason.as_deref(), t.message.as_deref()), (None, None));
    let (t0, t1) = (
        f.last_transition_time.expect("False since"),
        t.last_transition_time.expect("True since"),
    );
    assert!(t1.0 >= t0.0, "{t0:?} → {t1:?}");
    assert!(condition(after, "ContainersReady")
        .and_then(|c| c.last_transition_time)
        .is_some());
}

/// `rktup stage1 <pod dir> --enter c -- <cmd>`: (exit code, stdout, stderr).
fn enter(dir: &Path, cmd: &[&str]) -> (i32, String, String) {
    enter_in(dir, "c", cmd)
}

fn enter_in(dir: &Path, container: &str, cmd: &[&str]) -> (i32, String, String) {
    let out = Command::new(rktup_bin())
        .arg("stage1")
        .arg(dir)
        .args(["--enter", container, "--"])
        .args(cmd)
        .output()
        .expect("run rktup stage1 --enter");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (1) httpGet readiness (named port, custom header) against busybox httpd, which answers 404
/// until a file is created in the container with `rktup stage1 --enter`; also checks what
/// `--enter` runs the command in.
#[test]
fn readiness_http_get_flips_ready_when_the_file_appears() {
    Cluster::start_probes().run(|k| {
        let busybox = k.node.busybox.clone();
        k.create(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {
                "containers": [{
                    "name": "c", "image": busybox,
                    "command": ["sh", "-c", "mkdir -p /www && exec httpd -f -p 8080 -h /www"],
                    "env": [{"name": "GREETING", "value": "hello"}],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {
                        "httpGet": {"path": "/ready", "port": "http",
                                    "httpHeaders": [{"name": "X-Probe", "value": "yes"}]},
                        "periodSeconds": 1
                    }
                }]
            }
        }));
        let before = k.pod_until("web", "running and not ready", 90, running_unready);
        k.event(
            "web",
            "Unhealthy",
            "Readiness probe failed: HTTP probe failed with statuscode: 404",
            30,
        );
        // Still not ready after further probes (nothing but the file makes it ready).
        k.event_where("web", "Unhealthy", "Readiness probe failed", 30, |e| {
            e.count.unwrap_or(0) >= 2
        });
        assert!(running_unready(
            &k.rt.block_on(k.pods().get("web")).expect("pod")
        ));

        let dir = k.pod_dir("web");
        // --enter: the container's namespaces, root, environment and workingDir.
        let info = k.node.pods();
        let pid = info
            .iter()
            .find(|p| p["name"] == "web")
            .and_then(|p| p["status"]["containers"][0]["pid"].as_i64())
            .expect("container pid");
        let (code, out, err) = enter(
            &dir,
            &[
                "sh",
                "-c",
                "for n in net mnt pid uts; do readlink /proc/self/ns/$n; done; \
                 echo $GREETING; pwd; test -d /www && echo www",
            ],
        );
        assert_eq!(code, 0, "{out}\n{err}");
        let mut want: Vec<String> = ["net", "mnt", "pid", "uts"]
            .iter()
            .map(|n| {
                std::fs::read_link(format!("/proc/{pid}/ns/{n}"))
                    .expect("container ns")
                    .display()
                    .to_string()
            })
            .collect();
        want.extend(["hello".into(), "/".into(), "www".into()]);
        assert_eq!(out.lines().collect::<Vec<_>>(), want, "{err}");
        assert_ne!(want[0], host_ns("net"));
        // Exit codes pass through; a command that cannot run is told apart.
        assert_eq!(enter(&dir, &["sh", "-c", "exit 3"]).0, 3);
        let (code, _, err) = enter(&dir, &["no-such-command"]);
        assert_eq!(code, 255);
        assert!(err.contains("executable file not found"), "{err}");

        // The file appears: ready.
        let (code, out, err) = enter(&dir, &["touch", "/www/ready"]);
        assert_eq!(code, 0, "{out}\n{err}");
        let after = k.pod_until("web", "ready", 30, ready);
        assert_flipped(&before, &after);
        assert_eq!(container(&after).map(|c| c.restart_count), Some(0));
    });
}

/// (2) exec readiness (`test -f /tmp/ready` in the container's own /tmp, with its env): the
/// container creates the file once the test triggers it.
#[test]
fn readiness_exec_flips_ready() {
    Cluster::start_probes().run(|k| {
        let busybox = k.node.busybox.clone();
        let trig = k.trigger_dir();
        k.create(serde_json::json!({
            "metadata": {"name": "ex"},
            "spec": {
                "volumes": [{"name": "t", "hostPath": {"path": trig, "type": "Directory"}}],
                "containers": [{
                    "name": "c", "image": busybox,
                    "command": ["sh", "-c",
                        "until [ -f /trigger/go ]; do sleep 0.2; done; touch /tmp/ready; exec sleep 1000"],
                    "env": [{"name": "MODE", "value": "probe"}],
                    "volumeMounts": [{"name": "t", "mountPath": "/trigger"}],
                    "readinessProbe": {
                        "exec": {"command": ["sh", "-c", "test -f /tmp/ready && test \"$MODE\" = probe"]},
                        "periodSeconds": 1
                    }
                }]
            }
        }));
        let before = k.pod_until("ex", "running and not ready", 90, running_unready);
        k.event("ex", "Unhealthy", "Readiness probe failed:", 30);
        std::fs::write(trig.join("go"), b"").expect("trigger");
        let after = k.pod_until("ex", "ready", 30, ready);
        assert_flipped(&before, &after);
    });
}

/// (3) tcpSocket readiness by port name: refused until the container listens.
#[test]
fn readiness_tcp_socket_flips_ready() {
    Cluster::start_probes().run(|k| {
        let busybox = k.node.busybox.clone();
        let trig = k.trigger_dir();
        k.create(serde_json::json!({
            "metadata": {"name": "tcp"},
            "spec": {
                "volumes": [{"name": "t", "hostPath": {"path": trig, "type": "Directory"}}],
                "containers": [{
                    "name": "c", "image": busybox,
                    "command": ["sh", "-c",
                        "mkdir -p /www; until [ -f /trigger/go ]; do sleep 0.2; done; exec httpd -f -p 9000 -h /www"],
                    "ports": [{"name": "svc", "containerPort": 9000}],
                    "volumeMounts": [{"name": "t", "mountPath": "/trigger"}],
                    "readinessProbe": {"tcpSocket": {"port": "svc"}, "periodSeconds": 1}
                }]
            }
        }));
        let before = k.pod_until("tcp", "running and not ready", 90, running_unready);
        let ip = before
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .expect("podIP");
        k.event(
            "tcp",
            "Unhealthy",
            &format!("Readiness probe failed: dial tcp {ip}:9000: connect: connection refused"),
            30,
        );
        std::fs::write(trig.join("go"), b"").expect("trigger");
        let after = k.pod_until("tcp", "ready", 30, ready);
        assert_flipped(&before, &after);
    });
}

/// (4) A liveness exec probe that starts failing: the container is killed and restarted
/// (restartCount grows), with Unhealthy and Killing events worded as kubelet's; a startup probe
/// that never passes does the same to its container.
#[test]
fn liveness_failure_restarts_the_container() {
    Cluster::start_probes().run(|k| {
        let busybox = k.node.busybox.clone();
        k.create(serde_json::json!({
            "metadata": {"name": "live"},
            "spec": {
                "containers": [{
                    "name": "c", "image": busybox,
                    "command": ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; exec sleep 1000"],
                    "livenessProbe": {
                        "exec": {"command": ["cat", "/tmp/healthy"]},
                        "periodSeconds": 1,
                        "failureThreshold": 2,
                        "terminationGracePeriodSeconds": 1
                    }
                }, {
                    "name": "s", "image": busybox, "command": ["sleep", "1000"],
                    "startupProbe": {
                        "exec": {"command": ["false"]},
                        "periodSeconds": 1,
                        "failureThreshold": 2,
                        "terminationGracePeriodSeconds": 1
                    }
                }]
            }
        }));
        k.pod_until("live", "running", 90, running);
        k.event(
            "live",
            "Unhealthy",
            "Liveness probe failed: cat: can't open '/tmp/healthy': No such file or directory",
            60,
        );
        let killing = k.event(
            "live",
            "Killing",
            "Container c failed liveness probe, will be restarted",
            60,
        );
        assert_eq!(killing.type_.as_deref(), Some("Normal"));
        assert_eq!(
            killing.involved_object.field_path.as_deref(),
            Some("spec.containers{c}")
        );
        let p = k.pod_until("live", "restarted and running again", 60, |p| {
            running(p) && container(p).is_some_and(|c| c.restart_count >= 1)
        });
        assert_eq!(
            p.status.and_then(|s| s.phase).as_deref(),
            Some("Running")
        );
        let unhealthy = k.events_of("live", "Unhealthy", "Liveness probe failed:");
        assert!(unhealthy.iter().all(|e| e.type_.as_deref() == Some("Warning")));
        // A startup probe that never passes restarts its container the same way.
        k.event("live", "Unhealthy", "Startup probe failed:", 30);
        k.event(
            "live",
            "Killing",
            "Container s failed startup probe, will be restarted",
            60,
        );
        k.pod_until("live", "s restarted", 60, |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.name == "s"))
                .is_some_and(|c| c.restart_count >= 1 && c.started == Some(false) && !c.ready)
        });
    });
}

/// (5) A startup probe holds back liveness and readiness: while it fails the container is
/// neither started nor ready and a liveness probe that would fail does not restart it; once it
/// passes, the container is started and ready.
#[test]
fn startup_probe_delays_readiness_and_liveness() {
    Cluster::start_probes().run(|k| {
        let busybox = k.node.busybox.clone();
        let trig = k.trigger_dir();
        k.create(serde_json::json!({
            "metadata": {"name": "slow"},
            "spec": {
                "volumes": [{"name": "t", "hostPath": {"path": trig, "type": "Directory"}}],
                "containers": [{
                    "name": "c", "image": busybox,
                    "command": ["sh", "-c",
                        "until [ -f /trigger/go ]; do sleep 0.2; done; touch /tmp/started; exec sleep 1000"],
                    "volumeMounts": [{"name": "t", "mountPath": "/trigger"}],
                    "startupProbe": {
                        "exec": {"command": ["test", "-f", "/tmp/started"]},
                        "periodSeconds": 1, "failureThreshold": 60
                    },
                    "livenessProbe": {
                        "exec": {"command": ["test", "-f", "/tmp/started"]},
                        "periodSeconds": 1, "failureThreshold": 1
                    },
                    "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}
                }]
            }
        }));
        k.pod_until("slow", "running, not started", 90, |p| {
            running_unready(p) && container(p).is_some_and(|c| c.started == Some(false))
        });
        // Several startup probe periods go by (one event, counted up).
        k.event_where("slow", "Unhealthy", "Startup probe failed:", 30, |e| {
            e.count.unwrap_or(0) >= 3
        });
        let p = k.rt.block_on(k.pods().get("slow")).expect("pod");
        assert!(running_unready(&p), "{:?}", p.status);
        assert_eq!(container(&p).map(|c| c.restart_count), Some(0));
        assert!(k.events_of("slow", "Unhealthy", "Liveness").is_empty());
        assert!(k.events_of("slow", "Unhealthy", "Readiness").is_empty());
        let before = p;

        std::fs::write(trig.join("go"), b"").expect("trigger");
        let after = k.pod_until("slow", "started and ready", 30, ready);
        assert_flipped(&before, &after);
        assert_eq!(container(&after).map(|c| c.restart_count), Some(0));
        assert!(k.events_of("slow", "Killing", "").is_empty());
    });
}

/// Probes that cannot run are errors, worded as kubelet's: an exec probe over its timeout
/// (its command is killed with it) and a port name the container does not declare. Also:
/// `--enter` takes on a non-root container's user.
#[test]
fn probe_errors_time_out_and_unknown_ports() {
    Cluster::start_probes().run(|k| {
        let busybox = k.node.busybox.clone();
        k.create(serde_json::json!({
            "metadata": {"name": "err"},
            "spec": {
                "containers": [
                    {
                        "name": "c", "image": busybox, "command": ["sleep", "1000"],
                        "readinessProbe": {
                            "exec": {"command": ["sleep", "7"]},
                            "periodSeconds": 1, "timeoutSeconds": 1
                        }
                    },
                    {
                        "name": "d", "image": busybox, "command": ["sleep", "1000"],
                        "readinessProbe": {"tcpSocket": {"port": "nope"}, "periodSeconds": 1}
                    },
                    {
                        "name": "u", "image": busybox, "command": ["sleep", "1000"],
                        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000}
                    }
                ]
            }
        }));
        let p = k.pod_until("err", "running and not ready", 90, running_unready);
        assert_eq!(
            condition(&p, "Ready").and_then(|c| c.message).as_deref(),
            Some("containers with unready status: [c d]")
        );
        k.event(
            "err",
            "Unhealthy",
            "Readiness probe errored and resulted in unknown state: command timed out: \"sleep 7\" timed out after 1s",
            30,
        );
        let e = k.event(
            "err",
            "Unhealthy",
            "Readiness probe errored and resulted in unknown state: strconv.Atoi: parsing \"nope\": invalid syntax",
            30,
        );
        assert_eq!(
            e.involved_object.field_path.as_deref(),
            Some("spec.containers{d}")
        );
        // Timed-out commands are killed and reaped: no zombies under the container's init
        // (`sleep 1000`, which reaps nothing), at most the probe running right now.
        k.event_where("err", "Unhealthy", "Readiness probe errored and resulted in unknown state: command timed out", 30, |e| {
            e.count.unwrap_or(0) >= 3
        });
        let dir = k.pod_dir("err");
        let (code, out, err) = enter(&dir, &["ps", "-o", "stat,args"]);
        assert_eq!(code, 0, "{err}");
        let zombies = out.lines().filter(|l| l.trim_start().starts_with('Z')).count();
        let probes = out.lines().filter(|l| l.ends_with("sleep 7")).count();
        assert!(zombies == 0 && probes <= 1, "{out}");
        // --enter runs commands as the container's user, with its capabilities.
        let (code, out, err) = enter_in(&dir, "u", &["sh", "-c", "id -u; id -g; grep CapEff /proc/self/status"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            ["1000", "1000", "CapEff:\t0000000000000000"],
            "{err}"
        );
    });
}
