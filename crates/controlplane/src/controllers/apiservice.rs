//! APIServices (apiregistration.k8s.io/v1) as kube-aggregator keeps them:
//!
//! - [`register_local`] (at start, upstream's autoregister): one local APIService per served
//!   built-in group version (`v1.`, `v1.apps`, ...), with kube-apiserver's group and version
//!   priorities, labelled `kube-aggregator.kubernetes.io/automanaged: onstart`; never deleted.
//! - [`pass`] keeps one local APIService per group version CustomResourceDefinitions serve
//!   (upstream's crdRegistrationController: `automanaged: "true"`, priorities 1000/100), and
//!   runs the availability controllers: local APIServices are `Available=True` (`Local`);
//!   a remote one is checked as upstream's remote controller does — the Service exists
//!   (`ServiceNotFound`), a ClusterIP Service listens on the port (`ServicePortError`), its
//!   EndpointSlices exist (`EndpointsNotFound`) and have a ready endpoint with that port's name
//!   (`MissingEndpoints`), and `GET /apis/GROUP/VERSION` answers 2xx (`FailedDiscoveryCheck`,
//!   else `Passed`). The check also refreshes the aggregator's discovery cache.
//! - The `kube-system/extension-apiserver-authentication` ConfigMap (upstream's
//!   ClusterAuthenticationTrustController): the client CA and the front-proxy `requestheader-*`
//!   settings aggregated API servers read to trust the front proxy.

use super::{list, rd, set_status, Settings};
use crate::api::aggregator::{self, Aggregator};
use crate::api::objects::{meta_str, now, Core, WriteCtx};
use serde_json::{json, Value};

const MANAGER: &str = "kube-apiserver";

/// kube-apiserver's discovery priorities (group, version) of the built-in group versions.
fn priority(group: &str, version: &str) -> (i64, i64) {
    match (group, version) {
        ("", _) => (18000, 1),
        ("apiregistration.k8s.io", _) => (18000, 15),
        ("apps", _) => (17800, 15),
        ("events.k8s.io", _) => (17750, 15),
        ("authentication.k8s.io", _) => (17700, 15),
        ("authorization.k8s.io", _) => (17600, 15),
        ("autoscaling", "v2") => (17500, 30),
        ("autoscaling", _) => (17500, 15),
        ("batch", _) => (17400, 15),
        ("certificates.k8s.io", _) => (17300, 15),
        ("networking.k8s.io", _) => (17200, 15),
        ("policy", _) => (17100, 15),
        ("rbac.authorization.k8s.io", _) => (17000, 15),
        ("storage.k8s.io", _) => (16800, 15),
        ("apiextensions.k8s.io" | "admissionregistration.k8s.io", _) => (16700, 15),
        ("scheduling.k8s.io", _) => (16600, 15),
        ("coordination.k8s.io", _) => (16500, 15),
        ("node.k8s.io", _) => (16300, 15),
        ("discovery.k8s.io", _) => (16200, 15),
        ("flowcontrol.apiserver.k8s.io", _) => (16100, 21),
        ("resource.k8s.io", _) => (15900, 9),
        _ => (15000, 9),
    }
}

/// The local APIServices: `v1.` and `VERSION.GROUP` of every built-in group version (the
/// stored kinds', and the review-only authentication.k8s.io/v1 and authorization.k8s.io/v1).
pub(crate) fn local_group_versions() -> Vec<(&'static str, &'static str)> {
    let mut gvs = vec![("", "v1")];
    let reviews = [
        ("authentication.k8s.io", "v1"),
        ("authorization.k8s.io", "v1"),
    ];
    for gv in crate::registry::RESOURCES
        .iter()
        .map(|r| (r.group, r.version))
        .chain(reviews)
    {
        if !gvs.contains(&gv) {
            gvs.push(gv);
        }
    }
    gvs
}

/// Creates the missing local APIServices (at start, as upstream's autoregister does for
/// `onstart` ones).
pub(crate) fn register_local(core: &Core) {
    let r = rd("apiregistration.k8s.io", "apiservices");
    for (group, version) in local_group_versions() {
        let name = format!("{version}.{group}");
        if core.get_stored(r, None, &name).is_some() {
            continue;
        }
        let (gp, vp) = priority(group, version);
        let obj = json!({
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": name, "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
            "spec": {"group": group, "version": version, "groupPriorityMinimum": gp, "versionPriority": vp},
        });
        let mut ctx = WriteCtx::controller(MANAGER);
        if let Err(e) = core.create(r, None, obj, &mut ctx) {
            if e.reason != "AlreadyExists" {
                tracing::warn!("APIService {name}: {}", e.message);
            }
        }
    }
}

/// The label of APIServices the API server keeps itself.
const AUTOMANAGED: &str = "kube-aggregator.kubernetes.io/automanaged";

/// upstream's crdRegistrationController: a local APIService (`automanaged: "true"`, group
/// priority 1000, version priority 100) for each group version a CustomResourceDefinition
/// serves, removed once no CRD serves it; built-in group versions and APIServices made by
/// others are left alone.
fn sync_crd_apiservices(core: &Core) {
    let r = rd("apiregistration.k8s.io", "apiservices");
    let builtin = local_group_versions();
    let mut wanted: Vec<(String, String)> = Vec::new();
    for crd in list(
        core,
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        None,
    ) {
        let group = crd
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or("");
        for v in crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let version = v["name"].as_str().unwrap_or("");
            let gv = (group.to_string(), version.to_string());
            let served = v["served"].as_bool() == Some(true);
            if served
                && !group.is_empty()
                && !version.is_empty()
                && !builtin.iter().any(|(g, v)| (*g, *v) == (group, version))
                && !wanted.contains(&gv)
            {
                wanted.push(gv);
            }
        }
    }
    let existing = list(core, "apiregistration.k8s.io", "apiservices", None);
    for (group, version) in &wanted {
        let name = format!("{version}.{group}");
        if existing.iter().any(|a| meta_str(a, "name") == name) {
            continue;
        }
        let obj = json!({
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": name, "labels": {AUTOMANAGED: "true"}},
            "spec": {"group": group, "version": version, "groupPriorityMinimum": 1000, "versionPriority": 100},
        });
        let mut ctx = WriteCtx::controller(MANAGER);
        if let Err(e) = core.create(r, None, obj, &mut ctx) {
            if e.reason != "AlreadyExists" {
                tracing::warn!("APIService {name}: {}", e.message);
            }
        }
    }
    for a in &existing {
        let managed = a.pointer(&format!(
            "/metadata/labels/{}",
            AUTOMANAGED.replace('/', "~1")
        )) == Some(&json!("true"));
        let spec = |f: &str| {
            a.pointer(&format!("/spec/{f}"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        if managed
            && a.pointer("/spec/service").is_none_or(Value::is_null)
            && !wanted.contains(&(spec("group"), spec("version")))
        {
            let _ = core.delete(
                r,
                None,
                meta_str(a, "name"),
                &crate::api::objects::DeleteOptions::default(),
            );
        }
    }
}

/// The `Available` condition (status, reason, message) of `apiservice`.
fn availability(
    core: &Core,
    agg: Option<&Aggregator>,
    apiservice: &Value,
) -> (bool, String, String) {
    let Some(svc) = apiservice
        .pointer("/spec/service")
        .filter(|s| s.is_object())
    else {
        return (
            true,
            "Local".into(),
            "Local APIServices are always available".into(),
        );
    };
    let ns = svc["namespace"].as_str().unwrap_or("");
    let name = svc["name"].as_str().unwrap_or("");
    let port = svc["port"].as_i64().unwrap_or(443);
    let fail = |reason: &str, message: String| (false, reason.to_string(), message);
    let Some(service) = core.get_stored(rd("", "services"), Some(ns), name) else {
        return fail(
            "ServiceNotFound",
            format!("service/{name} in \"{ns}\" is not present"),
        );
    };
    let ty = service
        .object
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if ty == "ClusterIP" {
        let port_name = service
            .object
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .and_then(|ps| ps.iter().find(|p| p["port"].as_i64() == Some(port)))
            .map(|p| p["name"].as_str().unwrap_or("").to_string());
        let Some(port_name) = port_name else {
            return fail(
                "ServicePortError",
                format!("service/{name} in \"{ns}\" is not listening on port {port}"),
            );
        };
        let slices: Vec<_> = list(core, "discovery.k8s.io", "endpointslices", Some(ns))
            .into_iter()
            .filter(|s| {
                s.pointer("/metadata/labels/kubernetes.io~1service-name") == Some(&json!(name))
            })
            .collect();
        if slices.is_empty() {
            return fail(
                "EndpointsNotFound",
                format!("cannot find endpointslices for service/{name} in \"{ns}\""),
            );
        }
        let ready = slices.iter().any(|s| {
            let has_ready = s["endpoints"].as_array().is_some_and(|es| {
                es.iter()
                    .any(|e| e.pointer("/conditions/ready") != Some(&Value::Bool(false)))
            });
            let has_port = s["ports"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["name"].as_str().unwrap_or("") == port_name && p["port"].is_number())
            });
            has_ready && has_port
        });
        if !ready {
            return fail(
                "MissingEndpoints",
                format!(
                    "endpointslices for service/{name} in \"{ns}\" have no addresses with port name \"{port_name}\""
                ),
            );
        }
    }
    if let Some(agg) = agg {
        // The check talks to the backend: this pass runs on a blocking thread of the runtime.
        let checked = match tokio::runtime::Handle::try_current() {
            Ok(h) => h.block_on(agg.check(core, apiservice)),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = checked {
            return fail("FailedDiscoveryCheck", e);
        }
    }
    (true, "Passed".into(), "all checks passed".into())
}

/// The status with `Available` set as upstream's `SetAPIServiceCondition`: the transition time
/// moves only when the status changes.
fn with_condition(apiservice: &Value, available: bool, reason: &str, message: &str) -> Value {
    let mut status = apiservice.get("status").cloned().unwrap_or(json!({}));
    if !status.is_object() {
        status = json!({});
    }
    let want = if available { "True" } else { "False" };
    let mut conditions: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let transition = conditions
        .iter()
        .find(|c| c["type"] == "Available" && c["status"] == want)
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now()));
    conditions.retain(|c| c["type"] != "Available");
    conditions.push(json!({
        "type": "Available",
        "status": want,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    }));
    status["conditions"] = json!(conditions);
    status
}

/// One pass: every APIService's `Available` condition, the discovery cache and the
/// authentication ConfigMap.
pub(crate) fn pass(core: &Core, s: &Settings) {
    sync_crd_apiservices(core);
    let agg = s.aggregator.as_deref();
    let r = rd("apiregistration.k8s.io", "apiservices");
    let mut remote = Vec::new();
    for a in list(core, "apiregistration.k8s.io", "apiservices", None) {
        let (ok, reason, message) = availability(core, agg, &a);
        if a.pointer("/spec/service").is_some_and(Value::is_object) {
            remote.push(meta_str(&a, "name").to_string());
        }
        let status = with_condition(&a, ok, &reason, &message);
        if !ok && aggregator::is_available(&a) {
            tracing::info!(
                "APIService {} is no longer available: {reason}: {message}",
                meta_str(&a, "name")
            );
        }
        set_status(core, r, &a, status, MANAGER);
    }
    if let Some(agg) = agg {
        agg.retain_discovery(&remote);
        if let Some(data) = agg.authentication_data() {
            ensure_authentication_configmap(core, data);
        }
    }
}

/// Keeps `kube-system/extension-apiserver-authentication`'s data as `data`.
fn ensure_authentication_configmap(core: &Core, data: Value) {
    let r = rd("", "configmaps");
    let name = "extension-apiserver-authentication";
    let mut ctx = WriteCtx::controller(MANAGER);
    match core.get_stored(r, Some("kube-system"), name) {
        Some(cm) if cm.object.get("data") == Some(&data) => {}
        Some(_) => {
            let _ = core.modify(r, Some("kube-system"), name, None, &mut ctx, |o| {
                let mut o = o.clone();
                o["data"] = data.clone();
                Ok(o)
            });
        }
        None => {
            let cm = json!({"metadata": {"name": name, "namespace": "kube-system"}, "data": data});
            if let Err(e) = core.create(r, Some("kube-system"), cm, &mut ctx) {
                if e.reason != "AlreadyExists" {
                    tracing::warn!("{name}: {}", e.message);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let a = json!({"status": {"conditions": [{"type": "Available", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z", "reason": "Passed", "message": "all checks passed"}]}});
        let same = with_condition(&a, true, "Passed", "all checks passed");
        assert_eq!(
            same["conditions"][0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
        assert_eq!(same, a["status"]);
        let down = with_condition(&a, false, "MissingEndpoints", "x");
        assert_ne!(
            down["conditions"][0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
        assert_eq!(down["conditions"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn local_group_versions_start_with_core() {
        let gvs = local_group_versions();
        assert_eq!(gvs[0], ("", "v1"));
        assert!(gvs.contains(&("apps", "v1")));
        assert!(gvs.contains(&("apiregistration.k8s.io", "v1")));
        assert_eq!(priority("apps", "v1"), (17800, 15));
    }
}
