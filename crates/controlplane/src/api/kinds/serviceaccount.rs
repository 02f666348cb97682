//! kube-apiserver's `ServiceAccount` admission plugin on pod creation
//! (plugin/pkg/admission/serviceaccount): the pod runs as `default` unless it names a
//! ServiceAccount, which must exist; unless the pod or its ServiceAccount opts out
//! (`automountServiceAccountToken: false`), a projected `kube-api-access-<random>` volume —
//! a bound token (`token`, 3607 s), the cluster CA (`ca.crt` from the `kube-root-ca.crt`
//! ConfigMap) and the namespace — is mounted read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container that has nothing mounted
//! there. That is what in-cluster clients (client-go, kube-rs, kubectl in a pod) read. Mirror
//! pods of static pods are left alone.

use super::policy::forbidden;
use crate::api::error::ApiResult;
use crate::api::objects::{generate_name, Core};
use crate::registry::ResourceDef;
use serde_json::{json, Value};

/// Where in-cluster clients look for the token, CA and namespace.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Admits a pod being created in `ns` (see the module's doc).
pub(super) fn admit_pod(core: &Core, rd: &ResourceDef, ns: &str, pod: &mut Value) -> ApiResult<()> {
    if pod
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some()
    {
        return Ok(());
    }
    let name = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    let Some(sa) = service_account(core, ns, &name) else {
        return Err(forbidden(
            rd,
            pod,
            format!(
                "error looking up service account {ns}/{name}: serviceaccount \"{name}\" not found"
            ),
        ));
    };
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    spec.insert("serviceAccountName".into(), json!(name));
    // The v1 API's deprecated twin of serviceAccountName, filled as upstream's conversion does.
    spec.entry("serviceAccount").or_insert_with(|| json!(name));
    let automount = spec
        .get("automountServiceAccountToken")
        .or_else(|| sa.get("automountServiceAccountToken"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if !automount {
        return Ok(());
    }
    let volume = generate_name("kube-api-access-");
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let mounted = c
                .get("volumeMounts")
                .and_then(Value::as_array)
                .is_some_and(|ms| {
                    ms.iter()
                        .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT_PATH))
                });
            if mounted {
                continue;
            }
            let mount = json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH});
            match c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                Some(ms) => ms.push(mount),
                None => c["volumeMounts"] = json!([mount]),
            }
            needed = true;
        }
    }
    if needed {
        let v = json!({"name": volume, "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
        ]}});
        match spec.get_mut("volumes").and_then(Value::as_array_mut) {
            Some(vs) => vs.push(v),
            None => {
                spec.insert("volumes".into(), json!([v]));
            }
        }
    }
    Ok(())
}

/// The ServiceAccount. Upstream's plugin waits up to about two seconds for `default`, which
/// the service-account controller makes just after its namespace; here the controller's
/// pass may come later under load, so a missing `default` of an active namespace is made
/// at once, as that controller would make it (same object, same manager), instead of
/// blocking the request.
fn service_account(core: &Core, ns: &str, name: &str) -> Option<Value> {
    let rd = crate::registry::find_kind("", "ServiceAccount")?;
    if let Some(s) = core.get_stored(rd, Some(ns), name) {
        return Some((*s.object).clone());
    }
    if name != "default" {
        return None;
    }
    let namespaces = crate::registry::find_kind("", "Namespace")?;
    let active = core
        .get_stored(namespaces, None, ns)
        .is_some_and(|n| n.object.pointer("/metadata/deletionTimestamp").is_none());
    if !active {
        return None;
    }
    match crate::controllers::serviceaccount::create_default(core, ns) {
        Ok(sa) => Some(sa),
        // Made meanwhile by the controller.
        Err(_) => core
            .get_stored(rd, Some(ns), name)
            .map(|s| (*s.object).clone()),
    }
}
