//! Container lifecycle hooks as kubelet runs them (pkg/kubelet/lifecycle/handlers.go):
//! `postStart` right after a container run started, `preStop` before a container is stopped
//! (the pod deleted, or killed after a failed liveness probe).
//!
//! - Handlers: `exec` runs the command in the container (the exec probe's path: the
//!   container's namespaces, root and environment; a non-zero exit fails); `httpGet` sends GET
//!   to the pod IP (or `host`) and any HTTP answer succeeds, only a failed request fails (as
//!   kubelet's hook, unlike its probe); `sleep` waits. Anything else cannot run.
//! - postStart (`probes::Prober`, which tracks container runs): the container is not started or
//!   ready until its hook ended; a failure is a `FailedPostStartHook` Warning with kubelet's
//!   message, and the container is killed, to run again per restartPolicy.
//! - preStop: runs within the grace period (a deleted pod's `deletionGracePeriodSeconds`, else
//!   its spec's), then the containers get SIGTERM with what is left of it (at least 2 s), on pod
//!   deletion and after a liveness kill. A failure is a `FailedPreStopHook` Warning; the stop
//!   goes on. (A deletion without hooks stops within its own grace period too.)

use super::probes::exec::exec_probe;
use super::probes::http::http_get;
use super::probes::{address_of, http_request, Outcome};
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use rktup_runtime::manifest::dns::pod_ref;
use rktup_runtime::runtime::{PodEntry, Runtime};
use std::sync::Arc;
use std::time::Duration;

/// Go's `%v` of a string slice: `[sh -c sleep 5]`.
fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// Runs hook `h` of container `c` (running in runtime pod `entry` of `pod`), for at most
/// `timeout`. Err is kubelet's message for the hook's failure event.
pub async fn run(
    rt: &Arc<Runtime>,
    entry: &PodEntry,
    pod: &Pod,
    c: &Container,
    h: &LifecycleHandler,
    timeout: Duration,
) -> Result<(), String> {
    let who = format!("for Container {:?} in Pod {:?}", c.name, pod_ref(pod));
    if let Some(ex) = &h.exec {
        let cmd = ex.command.clone().unwrap_or_default();
        return match exec_probe(rt, entry, &c.name, cmd.clone(), timeout).await {
            Outcome::Success | Outcome::Warning(_) => Ok(()),
            Outcome::Failure(out) => Err(format!(
                "Exec lifecycle hook ({}) {who} failed - error: command '{}' exited with a non-zero code, message: {out:?}",
                go_list(&cmd),
                cmd.join(" ")
            )),
            Outcome::Error(e) => Err(format!(
                "Exec lifecycle hook ({}) {who} failed - error: {e}, message: \"\"",
                go_list(&cmd)
            )),
        };
    }
    if let Some(g) = &h.http_get {
        let path = g.path.clone().unwrap_or_default();
        let fail = |e: String| format!("HTTP lifecycle hook ({path}) {who} failed - error: {e}");
        let (url, headers) = http_request(g, c, address_of(entry, pod)).map_err(fail)?;
        return match tokio::time::timeout(timeout, http_get(&url, &headers)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(fail(format!("Get {:?}: {e}", url.to_url_string()))),
            Err(_) => Err(fail(format!(
                "Get {:?}: context deadline exceeded",
                url.to_url_string()
            ))),
        };
    }
    if let Some(s) = &h.sleep {
        let secs = Duration::from_secs(s.seconds.max(0) as u64);
        tokio::time::sleep(secs.min(timeout)).await;
        return Ok(());
    }
    Err(format!(
        "Cannot run handler: invalid handler: {}",
        serde_json::to_string(h).unwrap_or_default()
    ))
}

/// Runs the preStop hooks of `pod`'s running containers in runtime pod `entry` together, for
/// at most `grace`; the failures' event messages, by container.
pub async fn pre_stop_all(
    rt: &Arc<Runtime>,
    entry: &PodEntry,
    pod: &Pod,
    grace: Duration,
) -> Vec<(String, String)> {
    let running = |name: &str| {
        entry
            .status
            .containers
            .iter()
            .any(|s| s.name == name && s.state == "running")
    };
    let hooks = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter(|c| running(&c.name))
        .filter_map(|c| {
            let h = c.lifecycle.as_ref()?.pre_stop.as_ref()?;
            Some(async move {
                run(rt, entry, pod, c, h, grace)
                    .await
                    .err()
                    .map(|msg| (c.name.clone(), msg))
            })
        });
    futures_util::future::join_all(hooks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Whether a container of `pod` has a preStop hook.
pub fn has_pre_stop(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .any(|c| c.lifecycle.as_ref().is_some_and(|l| l.pre_stop.is_some()))
}

/// The grace period of a pod being deleted: its deletionGracePeriodSeconds, else its
/// terminationGracePeriodSeconds, else 30 s.
pub fn deletion_grace(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}
