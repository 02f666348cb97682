//! kubelet's `--authorization-mode=Webhook` on the kubelet port: the client (from its verified
//! certificate: CN the user, O the groups, plus `system:authenticated`) is checked with a
//! SubjectAccessReview for kubelet's request attributes (pkg/kubelet/server/auth.go): resource
//! `nodes`, name this node, subresource `proxy` unless the path is `/stats` (stats),
//! `/metrics` (metrics), `/logs` (log) or `/spec` (spec); the verb from the HTTP method.
//! Decisions are cached as kubelet's defaults: allowed 5 min, denied 30 s.

use crate::kubelet::certificate::{cert_info, CertSlot};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);

/// What the webhook authorizer needs to reach the API server.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub kubeconfig: Option<PathBuf>,
    pub api_server: Option<String>,
    pub client_slot: Option<Arc<CertSlot>>,
}

/// The authenticated client of a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    /// The x509 authenticator's user: CN, and the O's as groups (+ system:authenticated).
    pub fn from_cert(der: &[u8]) -> Option<User> {
        let (_, _, cn, mut groups) = cert_info(der).ok()?;
        if cn.is_empty() {
            return None;
        }
        groups.push("system:authenticated".into());
        Some(User { name: cn, groups })
    }
}

/// kubelet's request attributes: (verb, subresource).
pub fn attributes(method: &http::Method, path: &str) -> (&'static str, &'static str) {
    let verb = match *method {
        http::Method::POST => "create",
        http::Method::GET | http::Method::HEAD => "get",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "",
    };
    let sub = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    let subresource = if sub("/stats") {
        "stats"
    } else if sub("/metrics") {
        "metrics"
    } else if sub("/logs") {
        "log"
    } else if sub("/spec") {
        "spec"
    } else {
        "proxy"
    };
    (verb, subresource)
}

/// kubelet's 403 text.
pub fn forbidden_message(user: &User, verb: &str, subresource: &str) -> String {
    format!(
        "Forbidden (user={}, verb={verb}, resource=nodes, subresource(s)=[{subresource}])",
        user.name
    )
}

type Key = (User, &'static str, &'static str);

pub struct Authorizer {
    client: kube::Client,
    node_name: String,
    cache: Mutex<HashMap<Key, (bool, Instant)>>,
}

impl Authorizer {
    pub fn new(client: kube::Client, node_name: String) -> Authorizer {
        Authorizer {
            client,
            node_name,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `user` may `verb` nodes/`subresource` of this node (a SubjectAccessReview,
    /// cached); Err when the API server could not answer.
    pub async fn authorize(
        &self,
        user: &User,
        verb: &'static str,
        subresource: &'static str,
    ) -> Result<bool, kube::Error> {
        let key = (user.clone(), verb, subresource);
        if let Ok(mut c) = self.cache.lock() {
            match c.get(&key) {
                Some((allowed, at)) => {
                    let ttl = if *allowed { ALLOWED_TTL } else { DENIED_TTL };
                    if at.elapsed() < ttl {
                        return Ok(*allowed);
                    }
                    c.remove(&key);
                }
                None => {
                    // Keep the cache bounded: expired entries go when it grows.
                    if c.len() > 4096 {
                        c.retain(|_, (a, at)| {
                            at.elapsed() < if *a { ALLOWED_TTL } else { DENIED_TTL }
                        });
                    }
                }
            }
        }
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                groups: Some(user.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(subresource.into()),
                    name: Some(self.node_name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let r = api.create(&PostParams::default(), &sar).await?;
        let allowed = r
            .status
            .is_some_and(|s| s.allowed && !s.denied.unwrap_or(false));
        if let Ok(mut c) = self.cache.lock() {
            c.insert(key, (allowed, Instant::now()));
        }
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client whose API server answers every SubjectAccessReview with `allowed` and counts
    /// them.
    fn counting_client(allowed: bool) -> (kube::Client, Arc<std::sync::atomic::AtomicUsize>) {
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let calls = n.clone();
        let svc = tower::service_fn(move |_req: http::Request<kube::client::Body>| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = serde_json::json!({
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {}, "status": {"allowed": allowed},
            })
            .to_string();
            async move {
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from(body),
                )))
            }
        });
        (kube::Client::new(svc, "default"), n)
    }

    #[tokio::test]
    async fn decisions_are_cached_per_user_verb_and_subresource() {
        use std::sync::atomic::Ordering::SeqCst;
        let u = User {
            name: "system:node:b".into(),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
        };
        let (client, calls) = counting_client(false);
        let a = Authorizer::new(client, "n1".into());
        assert!(!a.authorize(&u, "get", "proxy").await.expect("review"));
        assert!(!a.authorize(&u, "get", "proxy").await.expect("cached"));
        assert_eq!(calls.load(SeqCst), 1, "a denial is cached");
        assert!(!a.authorize(&u, "create", "proxy").await.expect("review"));
        assert!(!a.authorize(&u, "get", "log").await.expect("review"));
        assert_eq!(
            calls.load(SeqCst),
            3,
            "another verb or subresource asks again"
        );
        let (client, calls) = counting_client(true);
        let a = Authorizer::new(client, "n1".into());
        for _ in 0..3 {
            assert!(a.authorize(&u, "get", "proxy").await.expect("review"));
        }
        assert_eq!(calls.load(SeqCst), 1, "an allowance is cached");
        assert!(ALLOWED_TTL == Duration::from_secs(300) && DENIED_TTL == Duration::from_secs(30));
    }

    #[test]
    fn kubelet_paths_and_verbs() {
        use http::Method;
        assert_eq!(attributes(&Method::GET, "/exec/ns/p/c"), ("get", "proxy"));
        assert_eq!(
            attributes(&Method::POST, "/exec/ns/p/c"),
            ("create", "proxy")
        );
        assert_eq!(
            attributes(&Method::GET, "/containerLogs/ns/p/c"),
            ("get", "proxy")
        );
        assert_eq!(attributes(&Method::GET, "/logs/syslog"), ("get", "log"));
        assert_eq!(attributes(&Method::GET, "/stats/summary"), ("get", "stats"));
        assert_eq!(attributes(&Method::GET, "/metrics"), ("get", "metrics"));
        assert_eq!(attributes(&Method::GET, "/metricsx"), ("get", "proxy"));
        assert_eq!(attributes(&Method::GET, "/spec/"), ("get", "spec"));
        assert_eq!(attributes(&Method::DELETE, "/pods"), ("delete", "proxy"));
        let u = User {
            name: "system:node:b".into(),
            groups: vec![],
        };
        assert_eq!(
            forbidden_message(&u, "create", "proxy"),
            "Forbidden (user=system:node:b, verb=create, resource=nodes, subresource(s)=[proxy])"
        );
    }
}
