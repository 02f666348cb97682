//! "Why does EXTERNAL-IP stay `<pending>`?" on a cloud cluster, answered in `kubectl describe`.
//!
//! A LoadBalancer Service gets its address from a service controller: kube-controller-manager's
//! (with `--cloud-provider`) or a cloud-controller-manager's. rktup's cloud masters run
//! upstream's kube-controller-manager as a static pod without `--cloud-provider` (its service
//! controller is then skipped, silently) and no cloud-controller-manager, so nothing ever fills
//! `status.loadBalancer`. Upstream shows nothing then; the embedded control plane of local
//! clusters says so with a Warning (`NoLoadBalancerController`, its `controllers/loadbalancer.rs`).
//!
//! The one rktup process on a cloud master is its node agent, which runs those static pods, so
//! it can tell from their manifests that no service controller runs ([`no_service_controller`]),
//! and its service proxy already watches every Service. With
//! [`crate::ProxyConfig::load_balancer_notice`] the proxy then posts the same Warning once per
//! pending LoadBalancer Service (no `loadBalancerClass`: those belong to another controller),
//! under the node's own identity (upstream's Node authorizer lets nodes create events). The
//! Event's name is fixed per Service (`<service>.no-lb-controller-<uid>`), so an agent restart,
//! or a second master, finds it already there (409) instead of adding another.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;
use kube::runtime::reflector::Store;
use kube::Api;

/// The reason, as the embedded control plane's service controller words it.
pub const REASON: &str = "NoLoadBalancerController";
/// The Event's source component.
pub const COMPONENT: &str = "rktup-service-proxy";
const MESSAGE: &str = "No load balancer controller runs in this cluster (kube-controller-manager runs without --cloud-provider and there is no cloud-controller-manager), so the external IP stays <pending>; the Service is still reachable on its node ports";
/// How often the Services are looked over (an in-memory pass over the proxy's watch cache).
const EVERY: Duration = Duration::from_secs(2);

/// Whether these static pods (a node's `--pod-manifest-path`) run kube-controller-manager with
/// no cloud provider (no `--cloud-provider`, or an empty one) and no cloud-controller-manager:
/// then nothing in the cluster provisions load balancers. `--cloud-provider=external` expects a
/// cloud-controller-manager, which may run elsewhere, so it counts as a controller.
pub fn no_service_controller(static_pods: &[Pod]) -> bool {
    let commands = static_pods
        .iter()
        .filter_map(|p| p.spec.as_ref())
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            c.command
                .iter()
                .flatten()
                .chain(c.args.iter().flatten())
                .cloned()
                .collect::<Vec<String>>()
        });
    let runs = |words: &[String], bin: &str| {
        words
            .first()
            .is_some_and(|w| w.rsplit('/').next() == Some(bin))
    };
    let mut kcm_without_provider = false;
    for words in commands {
        if runs(&words, "cloud-controller-manager") {
            return false;
        }
        if runs(&words, "kube-controller-manager") {
            let provider = words
                .iter()
                .find_map(|w| w.strip_prefix("--cloud-provider="));
            if provider.is_some_and(|p| !p.is_empty()) {
                return false;
            }
            kcm_without_provider = true;
        }
    }
    kcm_without_provider
}

/// A LoadBalancer Service of the default controller still without an address.
fn pending(svc: &Service) -> bool {
    let Some(spec) = &svc.spec else { return false };
    spec.type_.as_deref() == Some("LoadBalancer")
        && spec.load_balancer_class.is_none()
        && svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .is_none_or(|i| i.is_empty())
}

/// The Warning for `svc`, named after it (one per Service uid).
fn event_for(svc: &Service, node: &str) -> Option<Event> {
    let ns = svc.metadata.namespace.clone()?;
    let name = svc.metadata.name.clone()?;
    let uid = svc.metadata.uid.clone()?;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    Some(Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{name}.no-lb-controller-{}",
                uid.chars().take(8).collect::<String>()
            )),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(ns),
            name: Some(name),
            uid: Some(uid),
            resource_version: svc.metadata.resource_version.clone(),
            ..Default::default()
        },
        reason: Some(REASON.into()),
        message: Some(MESSAGE.into()),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: Some(node.into()),
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(node.into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    })
}

/// Posts the Warning for every pending Service once (runs until aborted).
pub(crate) async fn run(client: kube::Client, services: Store<Service>, node: String) {
    let mut done: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        for svc in services.state() {
            let Some(uid) = svc.metadata.uid.clone() else {
                continue;
            };
            if done.contains(&uid) || !pending(&svc) {
                continue;
            }
            let Some(ev) = event_for(&svc, &node) else {
                continue;
            };
            let ns = ev.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Event> = Api::namespaced(client.clone(), &ns);
            match api.create(&PostParams::default(), &ev).await {
                Ok(_) => {
                    done.insert(uid);
                }
                // already said (an earlier run of this agent, or another master)
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    done.insert(uid);
                }
                Err(e) => {
                    // not retried for this Service: a refusal would repeat every pass
                    tracing::warn!(
                        "proxy: posting the {REASON} event for Service {ns}/{}: {e}",
                        svc.metadata.name.as_deref().unwrap_or("")
                    );
                    done.insert(uid);
                }
            }
        }
        // forget Services that are gone
        let live: HashSet<String> = services
            .state()
            .iter()
            .filter_map(|s| s.metadata.uid.clone())
            .collect();
        done.retain(|u| live.contains(u));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn static_pod(command: &[&str], args: &[&str]) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "i", "command": command, "args": args}]}}))
        .unwrap()
    }

    #[test]
    fn only_a_controller_manager_without_a_cloud_provider_means_no_service_controller() {
        let kcm = |flags: &[&str]| {
            let mut c = vec!["kube-controller-manager"];
            c.extend(flags);
            static_pod(&c, &[])
        };
        let api = static_pod(&["kube-apiserver"], &["--secure-port=443"]);
        // rktup's master: KCM with --controllers=* and no --cloud-provider
        assert!(no_service_controller(&[
            api.clone(),
            kcm(&["--controllers=*,bootstrapsigner", "--cloud-provider="])
        ]));
        assert!(no_service_controller(&[static_pod(
            &["/usr/local/bin/kube-controller-manager"],
            &["--v=2"]
        )]));
        // a cloud provider, an external one, a cloud-controller-manager, or no KCM at all
        assert!(!no_service_controller(&[kcm(&["--cloud-provider=gce"])]));
        assert!(!no_service_controller(&[kcm(&[
            "--cloud-provider=external"
        ])]));
        assert!(!no_service_controller(&[
            kcm(&[]),
            static_pod(&["cloud-controller-manager"], &["--cloud-provider=aws"])
        ]));
        assert!(!no_service_controller(&[api]));
        assert!(!no_service_controller(&[]));
    }

    #[test]
    fn pending_is_a_default_class_load_balancer_without_ingress() {
        let svc = |spec: serde_json::Value, status: serde_json::Value| -> Service {
            serde_json::from_value(
                json!({"metadata": {"name": "web", "namespace": "ns", "uid": "0123456789ab"},
                "spec": spec, "status": status}),
            )
            .unwrap()
        };
        let lb = json!({"type": "LoadBalancer", "ports": [{"port": 80}]});
        assert!(pending(&svc(lb.clone(), json!({"loadBalancer": {}}))));
        assert!(!pending(&svc(
            lb.clone(),
            json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}})
        )));
        assert!(!pending(&svc(
            json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"}),
            json!({})
        )));
        assert!(!pending(&svc(json!({"type": "NodePort"}), json!({}))));
        let ev = event_for(&svc(lb, json!({})), "master").unwrap();
        assert_eq!(
            ev.metadata.name.as_deref(),
            Some("web.no-lb-controller-01234567")
        );
        assert_eq!(ev.involved_object.uid.as_deref(), Some("0123456789ab"));
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
    }
}
