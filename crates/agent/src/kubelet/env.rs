//! Container environments with API sources, as kubelet's `makeEnvironmentVariables` builds them:
//! the service variables (`dns::service_env`) first, then `envFrom` (configMapRef, secretRef,
//! with prefix), then `env` in order (the pod's own variables win over service ones), with
//! `valueFrom.configMapKeyRef`, `secretKeyRef` (optional honoured), `fieldRef` and
//! `resourceFieldRef` resolved here. The result is a pod the runtime can plan on its own: every
//! env entry a literal `value` (with `$` doubled, so the runtime's `$(VAR)` expansion leaves it
//! as it is), except status.podIP(s), left as a `fieldRef` the runtime fills in once the pod
//! network is up.

use super::downward::{env_field, resource_value, EnvField, NodeInfo};
use super::objects::{Missing, Objects};
use k8s_openapi::api::core::v1::{Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use std::collections::BTreeMap;

/// Why a container cannot be created (kubelet's `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub container: String,
    pub init: bool,
    /// As kubelet words it, e.g. `couldn't find key k in ConfigMap ns/name`.
    pub message: String,
}

/// A literal value that the runtime's `$(VAR)` expansion must leave alone.
fn literal(name: &str, v: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(v.replace('$', "$$")),
        value_from: None,
    }
}

/// The object an env entry reads keys from.
#[derive(Clone, Copy)]
enum EnvSource<'a> {
    ConfigMap(&'a str),
    Secret(&'a str),
}

impl EnvSource<'_> {
    /// As kubelet's messages name it.
    fn kind(&self) -> &'static str {
        match self {
            EnvSource::ConfigMap(_) => "ConfigMap",
            EnvSource::Secret(_) => "Secret",
        }
    }

    fn name(&self) -> &str {
        match self {
            EnvSource::ConfigMap(n) | EnvSource::Secret(n) => n,
        }
    }
}

/// The values env can take from the object: a ConfigMap's `data` (not `binaryData`, as kubelet)
/// or a Secret's decoded data.
fn env_values(objs: &Objects, source: EnvSource) -> Result<BTreeMap<String, String>, Missing> {
    Ok(match source {
        EnvSource::ConfigMap(name) => objs.config_map(name)?.data.clone().unwrap_or_default(),
        EnvSource::Secret(name) => super::objects::secret_data(objs.secret(name)?)
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect(),
    })
}

fn container_env(
    c: &Container,
    pod: &Pod,
    objs: &Objects,
    node: &NodeInfo,
    services: &[(String, String)],
) -> Result<Vec<EnvVar>, String> {
    let ns = &objs.namespace;
    let set = |out: &mut Vec<EnvVar>, e: EnvVar| {
        out.retain(|x| x.name != e.name);
        out.push(e);
    };
    // First, so `$(X_SERVICE_HOST)` in an `env` value expands to them (as kubelet's mapping
    // does) and any variable the pod sets itself replaces them.
    let mut out: Vec<EnvVar> = services.iter().map(|(k, v)| literal(k, v)).collect();
    for ef in c.env_from.iter().flatten() {
        let prefix = ef.prefix.as_deref().unwrap_or("");
        let sources = [
            ef.config_map_ref
                .as_ref()
                .map(|r| (EnvSource::ConfigMap(&r.name), r.optional)),
            ef.secret_ref
                .as_ref()
                .map(|r| (EnvSource::Secret(&r.name), r.optional)),
        ];
        for (source, optional) in sources.into_iter().flatten() {
            match env_values(objs, source) {
                Ok(values) => {
                    for (k, v) in values {
                        set(&mut out, literal(&format!("{prefix}{k}"), &v));
                    }
                }
                Err(Missing::NotFound(_)) if optional.unwrap_or(false) => {}
                Err(e) => return Err(e.message().to_string()),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let Some(src) = &e.value_from else {
            // A plain value keeps its `$(VAR)` references for the runtime to expand.
            set(&mut out, e.clone());
            continue;
        };
        let key_ref = src
            .config_map_key_ref
            .as_ref()
            .map(|r| (EnvSource::ConfigMap(&r.name), &r.key, r.optional))
            .or_else(|| {
                src.secret_key_ref
                    .as_ref()
                    .map(|r| (EnvSource::Secret(&r.name), &r.key, r.optional))
            });
        if let Some((source, key, optional)) = key_ref {
            let optional = optional.unwrap_or(false);
            let values = match env_values(objs, source) {
                Ok(values) => values,
                Err(Missing::NotFound(_)) if optional => continue,
                Err(m) => return Err(m.message().to_string()),
            };
            match values.get(key) {
                Some(v) => set(&mut out, literal(&e.name, v)),
                None if optional => {}
                None => {
                    return Err(format!(
                        "couldn't find key {key} in {} {ns}/{}",
                        source.kind(),
                        source.name()
                    ))
                }
            }
        } else if let Some(f) = &src.field_ref {
            match env_field(pod, node, &f.field_path)? {
                EnvField::Value(v) => set(&mut out, literal(&e.name, &v)),
                EnvField::Runtime(path) => set(
                    &mut out,
                    EnvVar {
                        name: e.name.clone(),
                        value: None,
                        value_from: Some(EnvVarSource {
                            field_ref: Some(ObjectFieldSelector {
                                api_version: f.api_version.clone(),
                                field_path: path,
                            }),
                            ..Default::default()
                        }),
                    },
                ),
            }
        } else if let Some(r) = &src.resource_field_ref {
            let target = r
                .container_name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| c.name.clone());
            let v = resource_value(r, pod, &target, node)?;
            set(&mut out, literal(&e.name, &v));
        } else {
            // No source set (the API server refuses such a pod): an empty value.
            set(&mut out, literal(&e.name, ""));
        }
    }
    Ok(out)
}

/// `pod` with every container's env resolved (envFrom folded in, `services` — the pod's service
/// variables — in front). The first container whose env cannot be built (init containers
/// first) is the error.
pub fn resolve(
    pod: &Pod,
    objs: &Objects,
    node: &NodeInfo,
    services: &[(String, String)],
) -> Result<Pod, ConfigError> {
    let mut out = pod.clone();
    let Some(spec) = out.spec.as_mut() else {
        return Ok(out);
    };
    let init = spec.init_containers.iter_mut().flatten().map(|c| (c, true));
    for (c, is_init) in init.chain(spec.containers.iter_mut().map(|c| (c, false))) {
        let env = container_env(c, pod, objs, node, services).map_err(|message| ConfigError {
            container: c.name.clone(),
            init: is_init,
            message,
        })?;
        c.env = (!env.is_empty()).then_some(env);
        c.env_from = None;
    }
    Ok(out)
}

/// A static pod with the Service variables (`services`) in front of each container's own env
/// (kubelet gives static pods the same variables when it has an API server; the container's own
/// variables win, and its `$(X_SERVICE_HOST)` references expand to them). Nothing else is
/// resolved: a static pod may not refer to API objects.
pub fn with_service_env(pod: &Pod, services: &[(String, String)]) -> Pod {
    let mut out = pod.clone();
    if services.is_empty() {
        return out;
    }
    let Some(spec) = out.spec.as_mut() else {
        return out;
    };
    let init = spec.init_containers.iter_mut().flatten();
    for c in init.chain(spec.containers.iter_mut()) {
        let own = c.env.take().unwrap_or_default();
        let mut env: Vec<EnvVar> = services
            .iter()
            .filter(|(k, _)| !own.iter().any(|e| &e.name == k))
            .map(|(k, v)| literal(k, v))
            .collect();
        env.extend(own);
        c.env = Some(env);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::objects::Lookup;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use std::collections::BTreeMap;

    fn objs() -> Objects {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cfg"}, "data": {"a": "alpha", "b": "beta"}
        }))
        .expect("cm");
        let s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "sec"}, "data": {"pass": "cCQkKHgp"}
        }))
        .expect("secret");
        Objects {
            namespace: "ns".into(),
            config_maps: BTreeMap::from([("cfg".to_string(), Lookup::Found(cm))]),
            secrets: BTreeMap::from([("sec".to_string(), Lookup::Found(s))]),
        }
    }

    fn env_of(containers: serde_json::Value) -> Result<Vec<(String, String)>, ConfigError> {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "x"}},
            "spec": {"nodeName": "n1", "containers": containers}
        }))
        .expect("pod");
        let node = NodeInfo {
            name: "n1".into(),
            ip: Some("10.1.1.1".into()),
            ..Default::default()
        };
        let services = [("WEB_SERVICE_HOST".to_string(), "10.0.0.2".to_string())];
        let p = resolve(&pod, &objs(), &node, &services)?;
        let c = &p.spec.expect("spec").containers[0];
        assert!(c.env_from.is_none());
        Ok(c.env
            .iter()
            .flatten()
            .map(|e| {
                let v = match &e.value_from {
                    Some(s) => format!(
                        "fieldRef:{}",
                        s.field_ref.as_ref().expect("fieldRef").field_path
                    ),
                    None => e.value.clone().unwrap_or_default(),
                };
                (e.name.clone(), v)
            })
            .collect())
    }

    fn kv(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn env_sources_in_kubelet_order() {
        let env = env_of(serde_json::json!([{
            "name": "c", "image": "i",
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
                        {"secretRef": {"name": "sec"}},
                        {"configMapRef": {"name": "gone", "optional": true}}],
            "env": [
                {"name": "CFG_a", "value": "overridden $(CFG_b)"},
                {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "a"}}},
                {"name": "P", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pass"}}},
                {"name": "O1", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "x", "optional": true}}},
                {"name": "O2", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "x", "optional": true}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}}
            ]
        }]))
        .unwrap();
        assert_eq!(
            env,
            kv(&[
                ("WEB_SERVICE_HOST", "10.0.0.2"),
                ("CFG_b", "beta"),
                ("pass", "p$$$$(x)"),
                ("CFG_a", "overridden $(CFG_b)"),
                ("A", "alpha"),
                ("P", "p$$$$(x)"),
                ("IP", "fieldRef:status.podIP"),
                ("HOST", "10.1.1.1"),
                ("L", "x"),
                ("CPU", "0"),
            ])
        );
    }

    #[test]
    fn the_pods_own_variables_win_over_service_variables() {
        let env = env_of(serde_json::json!([{
            "name": "c", "image": "i",
            "env": [{"name": "WEB_SERVICE_HOST", "value": "mine"},
                    {"name": "URL", "value": "http://$(WEB_SERVICE_HOST)/"}]
        }]))
        .unwrap();
        assert_eq!(
            env,
            kv(&[
                ("WEB_SERVICE_HOST", "mine"),
                ("URL", "http://$(WEB_SERVICE_HOST)/")
            ])
        );
    }

    #[test]
    fn missing_keys_and_objects_are_config_errors() {
        let err = |env: serde_json::Value| {
            env_of(serde_json::json!([{"name": "c", "image": "i", "env": env}]))
                .unwrap_err()
                .message
        };
        assert_eq!(
            err(
                serde_json::json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope"}}}])
            ),
            "couldn't find key nope in ConfigMap ns/cfg"
        );
        assert_eq!(
            err(
                serde_json::json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "nope"}}}])
            ),
            "couldn't find key nope in Secret ns/sec"
        );
        assert_eq!(
            err(
                serde_json::json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "a"}}}])
            ),
            "configmap \"gone\" not found"
        );
        let e = env_of(serde_json::json!([{"name": "c", "image": "i",
            "envFrom": [{"secretRef": {"name": "gone"}}]}]))
        .unwrap_err();
        assert_eq!(
            e,
            ConfigError {
                container: "c".into(),
                init: false,
                message: "secret \"gone\" not found".into()
            }
        );
    }

    #[test]
    fn static_pods_get_service_variables_in_front_of_their_own() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s"},
            "spec": {"containers": [{"name": "c", "image": "i", "env": [
                {"name": "WEB_SERVICE_PORT", "value": "mine"},
                {"name": "URL", "value": "http://$(WEB_SERVICE_HOST)/"}
            ]}]}
        }))
        .expect("pod");
        let services = [
            ("WEB_SERVICE_HOST".to_string(), "10.0.0.2".to_string()),
            ("WEB_SERVICE_PORT".to_string(), "80".to_string()),
        ];
        let out = with_service_env(&pod, &services);
        let env: Vec<(String, String)> = out.spec.expect("spec").containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            env,
            [
                ("WEB_SERVICE_HOST".to_string(), "10.0.0.2".to_string()),
                ("WEB_SERVICE_PORT".to_string(), "mine".to_string()),
                ("URL".to_string(), "http://$(WEB_SERVICE_HOST)/".to_string()),
            ]
        );
        assert_eq!(with_service_env(&pod, &[]), pod, "no API server: unchanged");
    }
}
