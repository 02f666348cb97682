//! core/v1 Events about pods, as kubelet records them (source component "kubelet", the node as
//! host), so `kubectl describe pod` and `kubectl get events` show what the agent did.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::HashMap;
use std::sync::Mutex;
use tracing::warn;

/// Record an Event about `pod`; returns the Event's name (for `bump`).
pub async fn record(
    client: &kube::Client,
    node: &str,
    pod: &Pod,
    type_: &str,
    reason: &str,
    message: &str,
) -> Option<String> {
    record_at(client, node, pod, None, type_, reason, message).await
}

/// Record an Event about a part of `pod` (`field_path`, e.g. `spec.containers{c}`).
pub async fn record_at(
    client: &kube::Client,
    node: &str,
    pod: &Pod,
    field_path: Option<&str>,
    type_: &str,
    reason: &str,
    message: &str,
) -> Option<String> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let ev = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}.")),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: Some(ns.clone()),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            field_path: field_path.map(str::to_string),
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.into()),
        }),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.into()),
        ..Default::default()
    };
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    match events.create(&PostParams::default(), &ev).await {
        Ok(e) => e.metadata.name,
        Err(e) => {
            warn!("kubelet: failed to record event {reason}: {e}");
            None
        }
    }
}

/// The same Event happened again (kubelet's event aggregation): its count and lastTimestamp.
pub async fn bump(client: &kube::Client, namespace: &str, name: &str, count: i32) {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({
        "count": count,
        "lastTimestamp": Time(jiff::Timestamp::now()),
    });
    if let Err(e) = events
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        warn!("kubelet: failed to update event {name}: {e}");
    }
}

/// Container events already recorded: (pod uid, fieldPath, type, reason, message) →
/// (namespace, Event name, count).
type Seen = HashMap<(String, String, String, String, String), (String, String, i32)>;
static SEEN: Mutex<Option<Seen>> = Mutex::new(None);

/// An Event about one container of `pod` (fieldPath `spec.containers{name}`), recorded once and
/// counted up (`bump`) when it happens again, as kubelet's event aggregation does for repeated
/// probe failures.
pub async fn record_container(
    client: &kube::Client,
    node: &str,
    pod: &Pod,
    container: &str,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let field_path = format!("spec.containers{{{container}}}");
    let key = (
        pod.metadata.uid.clone().unwrap_or_default(),
        field_path.clone(),
        type_.to_string(),
        reason.to_string(),
        message.to_string(),
    );
    let known = SEEN
        .lock()
        .ok()
        .and_then(|s| s.as_ref().and_then(|m| m.get(&key).cloned()));
    let entry = match known {
        Some((ns, name, count)) => {
            bump(client, &ns, &name, count + 1).await;
            (ns, name, count + 1)
        }
        None => {
            let Some(name) =
                record_at(client, node, pod, Some(&field_path), type_, reason, message).await
            else {
                return;
            };
            let ns = pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            (ns, name, 1)
        }
    };
    if let Ok(mut s) = SEEN.lock() {
        let m = s.get_or_insert_with(HashMap::new);
        if m.len() > 4096 {
            m.clear();
        }
        m.insert(key, entry);
    }
}
