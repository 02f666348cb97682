//! The runtime's view of a pod (`rktup_runtime::pod::PodStatus`) as a core/v1 PodStatus:
//! phase, conditions, podIP(s), hostIP and per-container state.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rktup_runtime::pod::{ContainerStatus, PodState};
use rktup_runtime::runtime::PodEntry;

fn time(secs: i64) -> Option<Time> {
    jiff::Timestamp::from_second(secs).ok().map(Time)
}

fn container(uuid: &str, c: &ContainerStatus) -> core::ContainerStatus {
    let running = c.state == "running";
    let state = match c.state.as_str() {
        "running" => core::ContainerState {
            running: Some(core::ContainerStateRunning {
                started_at: c.started_at.and_then(time),
            }),
            ..Default::default()
        },
        "terminated" => core::ContainerState {
            terminated: Some(core::ContainerStateTerminated {
                exit_code: c.exit_code.unwrap_or(0),
                reason: c.reason.clone().or_else(|| {
                    Some(if c.exit_code == Some(0) {
                        "Completed".into()
                    } else {
                        "Error".into()
                    })
                }),
                message: c.message.clone(),
                started_at: c.started_at.and_then(time),
                finished_at: c.finished_at.and_then(time),
                container_id: Some(format!("rkt://{uuid}:{}", c.name)),
                ..Default::default()
            }),
            ..Default::default()
        },
        _ => core::ContainerState {
            waiting: Some(core::ContainerStateWaiting {
                reason: Some(
                    c.reason
                        .clone()
                        .unwrap_or_else(|| "ContainerCreating".into()),
                ),
                message: c.message.clone(),
            }),
            ..Default::default()
        },
    };
    core::ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: (c.state != "waiting").then(|| format!("rkt://{uuid}:{}", c.name)),
        ready: running,
        started: Some(running),
        restart_count: c.restart_count as i32,
        state: Some(state),
        ..Default::default()
    }
}

fn condition(type_: &str, ok: bool, reason: Option<&str>) -> core::PodCondition {
    core::PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: (!ok).then(|| reason.unwrap_or("ContainersNotReady").to_string()),
        last_transition_time: Some(Time(jiff::Timestamp::now())),
        ..Default::default()
    }
}

/// The pod status to write for a runtime entry. Readiness is "every container running" (no
/// readiness probes yet).
pub fn pod_status(e: &PodEntry, host_ip: Option<&str>) -> core::PodStatus {
    let st = &e.status;
    let uuid = &e.plan.uuid;
    let pod_ip = match (&st.pod_ip, e.plan.network.is_none()) {
        (Some(ip), _) => Some(ip.clone()),
        // Host network (or stage1-fly): the pod has the node's address.
        (None, true) if st.state == PodState::Running => host_ip.map(str::to_string),
        _ => None,
    };
    let containers: Vec<core::ContainerStatus> =
        st.containers.iter().map(|c| container(uuid, c)).collect();
    let init: Vec<core::ContainerStatus> = st
        .init_containers
        .iter()
        .map(|c| container(uuid, c))
        .collect();
    let initialized = st
        .init_containers
        .iter()
        .all(|c| c.state == "terminated" && c.exit_code == Some(0));
    let all_ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    let refused = st.state == PodState::Refused;
    core::PodStatus {
        phase: Some(st.phase.clone()),
        reason: st.reason.clone().filter(|_| refused),
        message: st.message.clone().filter(|_| refused),
        host_ip: host_ip.map(str::to_string),
        host_ips: host_ip.map(|ip| vec![core::HostIP { ip: ip.to_string() }]),
        pod_ip: pod_ip.clone(),
        pod_ips: pod_ip.map(|ip| vec![core::PodIP { ip }]),
        start_time: time(st.started_at.unwrap_or(st.created_at)),
        conditions: Some(vec![
            condition("PodScheduled", true, None),
            condition("Initialized", initialized, Some("ContainersNotInitialized")),
            condition("ContainersReady", all_ready, None),
            condition("Ready", all_ready, None),
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
            condition("PodScheduled", true, None),
            condition("Initialized", !has_init, Some("ContainersNotInitialized")),
            condition("ContainersReady", false, None),
            condition("Ready", false, None),
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
