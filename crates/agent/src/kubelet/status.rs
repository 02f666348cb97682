//! The runtime's view of a pod (`rktup_runtime::pod::PodStatus`) as a core/v1 PodStatus:
//! phase, conditions (with upstream's reasons and messages, and lastTransitionTime kept while a
//! condition holds), podIP(s), hostIP and per-container state; container readiness comes from
//! the probes (`probes::Health`).

use crate::lifecycle::never_ran;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rktup_runtime::pod::{ContainerStatus, EndedRun, PodState, RestartPolicy};
use rktup_runtime::runtime::PodEntry;
use std::collections::BTreeMap;

pub use super::probes::Health;

fn time(secs: i64) -> Option<Time> {
    jiff::Timestamp::from_second(secs).ok().map(Time)
}

fn container(uuid: &str, c: &ContainerStatus, health: Option<&Health>) -> core::ContainerStatus {
    let running = c.state == "running";
    // Without probes a running container is started and ready.
    let h = health.copied().unwrap_or(Health {
        started: running,
        ready: running,
    });
    let id = format!("rkt://{uuid}:{}", c.name);
    let terminated = |run: &EndedRun, message: Option<String>| core::ContainerState {
        terminated: Some(core::ContainerStateTerminated {
            exit_code: run.exit_code,
            reason: Some(run.reason.clone()),
            message,
            started_at: run.started_at.and_then(time),
            finished_at: run.finished_at.and_then(time),
            container_id: Some(id.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let waiting = |reason: String| core::ContainerState {
        waiting: Some(core::ContainerStateWaiting {
            reason: Some(reason),
            message: c.message.clone(),
        }),
        ..Default::default()
    };
    // Backing off before the next run, kubelet's way: waiting (CrashLoopBackOff, "back-off
    // 10s restarting failed container=…"), the run that ended as lastState.
    let backing_off = c.state == "terminated" && c.reason.as_deref() == Some("CrashLoopBackOff");
    let this_run = || EndedRun {
        exit_code: c.exit_code.unwrap_or(0),
        reason: match (c.reason.as_deref(), c.exit_code) {
            (Some(r), _) if !backing_off => r.to_string(),
            (_, Some(0)) => "Completed".into(),
            _ => "Error".into(),
        },
        started_at: c.started_at,
        finished_at: c.finished_at,
    };
    let (state, last) = match c.state.as_str() {
        "running" => (
            core::ContainerState {
                running: Some(core::ContainerStateRunning {
                    started_at: c.started_at.and_then(time),
                }),
                ..Default::default()
            },
            c.last.clone(),
        ),
        "terminated" if backing_off => (
            waiting("CrashLoopBackOff".into()),
            Some(c.last.clone().unwrap_or_else(this_run)),
        ),
        "terminated" => (terminated(&this_run(), c.message.clone()), c.last.clone()),
        _ => (
            waiting(
                c.reason
                    .clone()
                    .unwrap_or_else(|| "ContainerCreating".into()),
            ),
            c.last.clone(),
        ),
    };
    core::ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: (c.state != "waiting").then(|| id.clone()),
        ready: running && h.ready,
        started: Some(running && h.started),
        restart_count: c.restart_count as i32,
        // Always there, `{}` before a run ended, as upstream's (a struct, never omitted).
        last_state: Some(last.map_or_else(Default::default, |run| terminated(&run, None))),
        state: Some(state),
        ..Default::default()
    }
}

/// A condition; its lastTransitionTime stays what `old` has while the status is unchanged.
fn condition(
    old: Option<&core::PodStatus>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: Option<String>,
) -> core::PodCondition {
    let status = if ok { "True" } else { "False" };
    let since = old
        .and_then(|o| o.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == status))
        .and_then(|c| c.last_transition_time.clone());
    core::PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: (!ok).then(|| reason.to_string()),
        message: message.filter(|_| !ok),
        last_transition_time: Some(since.unwrap_or_else(|| Time(jiff::Timestamp::now()))),
        ..Default::default()
    }
}

/// The phase the API sees for a runtime pod. The runtime says `Failed` for a refused pod and for
/// a sandbox that failed before any container ran, and for a restartPolicy-Always pod whose
/// supervisor ended; kubelet keeps all of those Pending and tries again (the agent does:
/// `Running::restart_due`). Only containers that ran and failed under restartPolicy Never or
/// OnFailure make a pod Failed, as upstream — a controller replaces Failed pods, so calling a
/// retried pod Failed made ReplicaSets replace it in a loop.
pub fn api_phase(e: &PodEntry) -> String {
    let st = &e.status;
    let retried = st.state == PodState::Refused
        || never_ran(e)
        || e.plan.restart_policy == RestartPolicy::Always;
    match st.phase.as_str() {
        "Failed" if retried => "Pending".into(),
        p => p.into(),
    }
}

/// The status of a pod the runtime refused (or whose sandbox failed before a container ran):
/// Pending and waiting as `blocked`, the runtime's reason on the pod where it is one kubelet
/// shows there (not for mounts, images and container config, which events and container
/// states explain).
pub fn refused(pod: &core::Pod, e: &PodEntry, host_ip: Option<&str>) -> core::PodStatus {
    let reason = e.status.reason.as_deref().unwrap_or("");
    let message = e.status.message.clone().unwrap_or_default();
    let first = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| c.name.clone())
        .unwrap_or_default();
    let waiting = match reason {
        "ErrImagePull" | "CreateContainerConfigError" => {
            Some((first.as_str(), reason, message.as_str()))
        }
        _ => None,
    };
    let mut st = blocked(pod, host_ip, waiting);
    if !matches!(
        reason,
        "" | "VolumeError" | "ErrImagePull" | "CreateContainerConfigError"
    ) {
        st.reason = Some(reason.to_string());
        st.message = Some(message.clone());
    }
    st
}

/// The pod status to write for a runtime entry. `health` has what the probes found for the
/// containers that have probes (see `probes`); `old` is the status in the API, whose
/// conditions keep their lastTransitionTime while they hold.
pub fn pod_status(
    e: &PodEntry,
    host_ip: Option<&str>,
    health: &BTreeMap<String, Health>,
    old: Option<&core::PodStatus>,
) -> core::PodStatus {
    let st = &e.status;
    let uuid = &e.plan.uuid;
    let pod_ip = match (&st.pod_ip, e.plan.network.is_none()) {
        (Some(ip), _) => Some(ip.clone()),
        // Host network (or stage1-fly): the pod has the node's address.
        (None, true) if st.state == PodState::Running => host_ip.map(str::to_string),
        _ => None,
    };
    let containers: Vec<core::ContainerStatus> = st
        .containers
        .iter()
        .map(|c| container(uuid, c, health.get(&c.name)))
        .collect();
    let init: Vec<core::ContainerStatus> = st
        .init_containers
        .iter()
        .map(|c| container(uuid, c, None))
        .collect();
    let incomplete: Vec<&str> = st
        .init_containers
        .iter()
        .filter(|c| !(c.state == "terminated" && c.exit_code == Some(0)))
        .map(|c| c.name.as_str())
        .collect();
    let unready: Vec<&str> = containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let all_ready = !containers.is_empty() && unready.is_empty();
    let list = |names: &[&str]| format!("[{}]", names.join(" "));
    let (ready_reason, ready_message) = if st.phase == "Succeeded" {
        ("PodCompleted", None)
    } else {
        (
            "ContainersNotReady",
            Some(format!(
                "containers with unready status: {}",
                list(&unready)
            )),
        )
    };
    let refused = st.state == PodState::Refused;
    core::PodStatus {
        phase: Some(api_phase(e)),
        reason: st.reason.clone().filter(|_| refused),
        message: st.message.clone().filter(|_| refused),
        host_ip: host_ip.map(str::to_string),
        host_ips: host_ip.map(|ip| vec![core::HostIP { ip: ip.to_string() }]),
        pod_ips: pod_ip.as_ref().map(|ip| {
            // A dual-stack pod's other address follows its primary one.
            let others = st.pod_ips.iter().filter(|o| *o != ip).cloned();
            std::iter::once(ip.clone())
                .chain(others)
                .map(|ip| core::PodIP { ip })
                .collect()
        }),
        pod_ip,
        start_time: time(st.started_at.unwrap_or(st.created_at)),
        conditions: Some(vec![
            condition(old, "PodScheduled", true, "", None),
            condition(
                old,
                "Initialized",
                incomplete.is_empty(),
                "ContainersNotInitialized",
                Some(format!(
                    "containers with incomplete status: {}",
                    list(&incomplete)
                )),
            ),
            condition(
                old,
                "ContainersReady",
                all_ready,
                ready_reason,
                ready_message.clone(),
            ),
            condition(old, "Ready", all_ready, ready_reason, ready_message),
        ]),
        container_statuses: Some(containers),
        init_container_statuses: (!init.is_empty()).then_some(init),
        ..Default::default()
    }
}

/// The status of a pod not handed to the runtime yet (its volumes or a container's config
/// cannot be set up): Pending, every container waiting — `ContainerCreating` (`PodInitializing`
/// for app containers behind init containers), or `waiting`'s (container, reason, message).
pub fn blocked(
    pod: &core::Pod,
    host_ip: Option<&str>,
    waiting: Option<(&str, &str, &str)>,
) -> core::PodStatus {
    let spec = pod.spec.as_ref();
    let init_specs: Vec<&core::Container> = spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .collect();
    let has_init = !init_specs.is_empty();
    let cs = |c: &core::Container, default: &str| {
        let (reason, message) = match waiting {
            Some((name, r, m)) if name == c.name => (r.to_string(), Some(m.to_string())),
            _ => (default.to_string(), None),
        };
        core::ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: String::new(),
            ready: false,
            started: Some(false),
            restart_count: 0,
            state: Some(core::ContainerState {
                waiting: Some(core::ContainerStateWaiting {
                    reason: Some(reason),
                    message,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    let containers: Vec<core::ContainerStatus> = spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            cs(
                c,
                if has_init {
                    "PodInitializing"
                } else {
                    "ContainerCreating"
                },
            )
        })
        .collect();
    let init: Vec<core::ContainerStatus> = init_specs
        .iter()
        .map(|c| cs(c, "ContainerCreating"))
        .collect();
    let names = |v: &[core::ContainerStatus]| {
        let n: Vec<&str> = v.iter().map(|c| c.name.as_str()).collect();
        format!("[{}]", n.join(" "))
    };
    let old = pod.status.as_ref();
    let unready = format!("containers with unready status: {}", names(&containers));
    core::PodStatus {
        phase: Some("Pending".into()),
        host_ip: host_ip.map(str::to_string),
        host_ips: host_ip.map(|ip| vec![core::HostIP { ip: ip.to_string() }]),
        start_time: pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.clone())
            .or_else(|| Some(Time(jiff::Timestamp::now()))),
        conditions: Some(vec![
            condition(old, "PodScheduled", true, "", None),
            condition(
                old,
                "Initialized",
                !has_init,
                "ContainersNotInitialized",
                Some(format!(
                    "containers with incomplete status: {}",
                    names(&init)
                )),
            ),
            condition(
                old,
                "ContainersReady",
                false,
                "ContainersNotReady",
                Some(unready.clone()),
            ),
            condition(old, "Ready", false, "ContainersNotReady", Some(unready)),
        ]),
        container_statuses: Some(containers),
        init_container_statuses: has_init.then_some(init),
        ..Default::default()
    }
}

/// Status without the transition times, to tell whether anything changed since the last write.
pub fn fingerprint(s: &core::PodStatus) -> String {
    let mut s = s.clone();
    for c in s.conditions.iter_mut().flatten() {
        c.last_transition_time = None;
    }
    serde_json::to_string(&s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rktup_runtime::runtime::{Runtime, RuntimeConfig};

    /// A real refused runtime pod: the runtime plans a pod with an nfs volume and refuses it
    /// before anything runs (no root needed).
    fn refused_entry(dir: &std::path::Path) -> (core::Pod, PodEntry) {
        let rt = Runtime::new(RuntimeConfig::new(dir)).expect("runtime");
        let pod: core::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u-1"},
            "spec": {
                "containers": [{"name": "c", "image": "example.invalid/x:1"}],
                "volumes": [{"name": "data", "nfs": {"server": "s", "path": "/x"}}]
            }
        }))
        .expect("pod");
        assert!(rt.run_pod(&pod, None, "").is_err());
        let e = rt.list().into_iter().next().expect("refused entry");
        assert_eq!(e.status.state, PodState::Refused);
        (pod, e)
    }

    fn ran(e: &mut PodEntry, exit: i32) {
        e.status.state = PodState::Exited;
        e.status.phase = if exit == 0 { "Succeeded" } else { "Failed" }.into();
        e.status.containers = vec![ContainerStatus {
            name: "c".into(),
            state: "terminated".into(),
            exit_code: Some(exit),
            started_at: Some(1),
            finished_at: Some(2),
            ..Default::default()
        }];
    }

    #[test]
    fn a_container_backing_off_waits_with_the_ended_run_as_last_state() {
        let ended = EndedRun {
            exit_code: 137,
            reason: "OOMKilled".into(),
            started_at: Some(10),
            finished_at: Some(12),
        };
        let mut c = ContainerStatus {
            name: "c".into(),
            state: "terminated".into(),
            reason: Some("CrashLoopBackOff".into()),
            message: Some("back-off 10s restarting failed container=c pod=p_ns(u)".into()),
            exit_code: Some(137),
            restart_count: 1,
            started_at: Some(10),
            finished_at: Some(12),
            last: Some(ended.clone()),
            ..Default::default()
        };
        let api = container("uuid", &c, None);
        let w = api.state.and_then(|s| s.waiting).expect("waiting");
        assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(w.message, c.message);
        let t = api
            .last_state
            .and_then(|s| s.terminated)
            .expect("lastState");
        assert_eq!(t.exit_code, 137);
        assert_eq!(t.reason.as_deref(), Some("OOMKilled"));
        assert_eq!(t.container_id.as_deref(), Some("rkt://uuid:c"));
        assert!(!api.ready);
        // The next run: running, the ended one still lastState.
        c.state = "running".into();
        c.reason = None;
        c.message = None;
        c.exit_code = None;
        let api = container("uuid", &c, None);
        assert!(api.state.and_then(|s| s.running).is_some());
        let t = api
            .last_state
            .and_then(|s| s.terminated)
            .expect("lastState");
        assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("OOMKilled")));
        // A first run has an empty lastState, as upstream's.
        c.last = None;
        let api = container("uuid", &c, None);
        assert_eq!(api.last_state, Some(core::ContainerState::default()));
    }

    #[test]
    fn a_refused_pod_is_pending_waiting_to_be_created() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (pod, e) = refused_entry(tmp.path());
        assert_eq!(e.status.phase, "Failed", "the runtime's own word");
        assert_eq!(api_phase(&e), "Pending");
        let st = refused(&pod, &e, Some("10.0.0.1"));
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        // A volume refusal is told by FailedMount events, not on the pod.
        assert_eq!(st.reason, None);
        let w = st.container_statuses.expect("containers")[0]
            .state
            .clone()
            .and_then(|s| s.waiting)
            .expect("waiting");
        assert_eq!(w.reason.as_deref(), Some("ContainerCreating"));
        let ready = st
            .conditions
            .expect("conditions")
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(ready.status, "False");
    }

    #[test]
    fn failed_only_when_a_container_ran_and_failed_without_restarts() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (_, mut e) = refused_entry(tmp.path());
        // The sandbox failed before any container ran: still Pending (retried), any policy.
        e.status.state = PodState::Exited;
        std::sync::Arc::make_mut(&mut e.plan).restart_policy = RestartPolicy::Never;
        assert_eq!(api_phase(&e), "Pending");
        // A container ran and failed under Never / OnFailure: Failed, as upstream.
        ran(&mut e, 3);
        assert_eq!(api_phase(&e), "Failed");
        std::sync::Arc::make_mut(&mut e.plan).restart_policy = RestartPolicy::OnFailure;
        assert_eq!(api_phase(&e), "Failed");
        // Under Always the agent starts it again: never Failed.
        std::sync::Arc::make_mut(&mut e.plan).restart_policy = RestartPolicy::Always;
        assert_eq!(api_phase(&e), "Pending");
        ran(&mut e, 0);
        assert_eq!(api_phase(&e), "Succeeded");
    }
}
