//! The ConfigMaps and Secrets a pod refers to (volumes, env, envFrom), read from the API server
//! once per preparation (what kubelet's configMap and secret managers serve), and service
//! account tokens (kubelet's token manager, through the TokenRequest API).

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use std::collections::{BTreeMap, BTreeSet};

/// The result of reading one object.
#[derive(Debug, Clone)]
pub enum Lookup<T> {
    Found(T),
    NotFound,
    /// Any other error (forbidden, unreachable...), as the API server worded it.
    Failed(String),
}

/// Why an object is not there: not found (an optional reference may skip it) or another error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    NotFound(String),
    Failed(String),
}

impl Missing {
    pub fn message(&self) -> &str {
        match self {
            Missing::NotFound(m) | Missing::Failed(m) => m,
        }
    }
}

/// Names of the ConfigMaps and Secrets a pod refers to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refs {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

impl Refs {
    /// Every ConfigMap and Secret named by the pod's volumes (and, with `env`, by its
    /// containers' env and envFrom).
    pub fn of(pod: &Pod, env: bool) -> Refs {
        let mut r = Refs::default();
        let Some(spec) = pod.spec.as_ref() else {
            return r;
        };
        for v in spec.volumes.iter().flatten() {
            if let Some(c) = &v.config_map {
                r.config_maps.insert(c.name.clone());
            }
            if let Some(s) = &v.secret {
                r.secrets.insert(s.secret_name.clone().unwrap_or_default());
            }
            for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
                if let Some(c) = &p.config_map {
                    r.config_maps.insert(c.name.clone());
                }
                if let Some(s) = &p.secret {
                    r.secrets.insert(s.name.clone());
                }
            }
        }
        if env {
            for c in spec
                .init_containers
                .iter()
                .flatten()
                .chain(spec.containers.iter())
            {
                for e in c.env_from.iter().flatten() {
                    if let Some(c) = &e.config_map_ref {
                        r.config_maps.insert(c.name.clone());
                    }
                    if let Some(s) = &e.secret_ref {
                        r.secrets.insert(s.name.clone());
                    }
                }
                for e in c.env.iter().flatten() {
                    let Some(src) = &e.value_from else { continue };
                    if let Some(c) = &src.config_map_key_ref {
                        r.config_maps.insert(c.name.clone());
                    }
                    if let Some(s) = &src.secret_key_ref {
                        r.secrets.insert(s.name.clone());
                    }
                }
            }
        }
        r
    }
}

/// The objects of one namespace a pod refers to.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    pub namespace: String,
    pub config_maps: BTreeMap<String, Lookup<ConfigMap>>,
    pub secrets: BTreeMap<String, Lookup<Secret>>,
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        e => e.to_string(),
    }
}

async fn get<K>(api: &Api<K>, name: &str) -> Lookup<K>
where
    K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    if name.is_empty() {
        return Lookup::NotFound;
    }
    match api.get_opt(name).await {
        Ok(Some(o)) => Lookup::Found(o),
        Ok(None) => Lookup::NotFound,
        Err(e) => Lookup::Failed(api_message(&e)),
    }
}

impl Objects {
    /// Read every object of `refs` from namespace `ns`.
    pub async fn fetch(client: &kube::Client, ns: &str, refs: &Refs) -> Objects {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let mut o = Objects {
            namespace: ns.to_string(),
            ..Default::default()
        };
        for n in &refs.config_maps {
            o.config_maps.insert(n.clone(), get(&cms, n).await);
        }
        for n in &refs.secrets {
            o.secrets.insert(n.clone(), get(&secrets, n).await);
        }
        o
    }

    /// The ConfigMap `name`; not found reads as kubelet words it (`configmap "x" not found`).
    pub fn config_map(&self, name: &str) -> Result<&ConfigMap, Missing> {
        found(&self.config_maps, "configmap", name)
    }

    pub fn secret(&self, name: &str) -> Result<&Secret, Missing> {
        found(&self.secrets, "secret", name)
    }
}

fn found<'a, T>(
    fetched: &'a BTreeMap<String, Lookup<T>>,
    kind: &str,
    name: &str,
) -> Result<&'a T, Missing> {
    match fetched.get(name) {
        Some(Lookup::Found(o)) => Ok(o),
        Some(Lookup::Failed(m)) => Err(Missing::Failed(m.clone())),
        Some(Lookup::NotFound) | None => {
            Err(Missing::NotFound(format!("{kind} {name:?} not found")))
        }
    }
}

/// A ConfigMap's files: `data` and `binaryData`.
pub fn config_map_files(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut m: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.iter().flatten() {
        m.insert(k.clone(), v.0.clone());
    }
    m
}

/// A Secret's data. `stringData` is write-only on an upstream API server (merged into `data`,
/// winning over it); a server that stored it as given is read the same way.
pub fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut m: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in s.string_data.iter().flatten() {
        m.insert(k.clone(), v.clone().into_bytes());
    }
    m
}

/// A token for the pod's service account, bound to the pod (TokenRequest,
/// `serviceaccounts/<name>/token`); the token and its expiry (seconds since the epoch).
pub async fn request_token(
    client: &kube::Client,
    pod: &Pod,
    audience: Option<&str>,
    expiration_seconds: Option<i64>,
) -> Result<(String, Option<i64>), String> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone().or(s.service_account.clone()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience
                .filter(|a| !a.is_empty())
                .map(|a| vec![a.to_string()])
                .unwrap_or_default(),
            expiration_seconds: Some(expiration_seconds.unwrap_or(3600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let tr = api
        .create_token_request(&sa, &PostParams::default(), &req)
        .await
        .map_err(|e| format!("failed to fetch token: {}", api_message(&e)))?;
    let st = tr
        .status
        .filter(|s| !s.token.is_empty())
        .ok_or_else(|| "failed to fetch token: the TokenRequest returned no token".to_string())?;
    Ok((st.token, Some(st.expiration_timestamp.0.as_second())))
}
