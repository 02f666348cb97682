//! kubelet's `--authentication-token-webhook`: a request without a client certificate may
//! carry `Authorization: Bearer <token>`, checked with a TokenReview sent with the node's own
//! credentials (what metrics-server and other in-cluster scrapers use: their service account
//! token). The reviewed user goes on to authorization like a certificate's. Answers are cached
//! for kubelet's `--authentication-token-webhook-cache-ttl` default, 2 minutes, by the token's
//! SHA-256 (the token itself is not kept).

use super::authz::User;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CACHE_TTL: Duration = Duration::from_secs(120);

type Cached = (Option<User>, Instant);

pub struct TokenAuthenticator {
    client: kube::Client,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

/// The token of an `Authorization: Bearer` header (scheme case-insensitive, as Go's
/// bearertoken authenticator).
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl TokenAuthenticator {
    pub fn new(client: kube::Client) -> TokenAuthenticator {
        TokenAuthenticator {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The user `token` belongs to (None: not authenticated); Err when the API server could not
    /// answer.
    pub async fn authenticate(&self, token: &str) -> Result<Option<User>, kube::Error> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Ok(mut c) = self.cache.lock() {
            match c.get(&key) {
                Some((user, at)) if at.elapsed() < CACHE_TTL => return Ok(user.clone()),
                Some(_) => {
                    c.remove(&key);
                }
                None if c.len() > 4096 => c.retain(|_, (_, at)| at.elapsed() < CACHE_TTL),
                None => {}
            }
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let r = api.create(&PostParams::default(), &review).await?;
        let user = r
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .and_then(|u| {
                let name = u.username.filter(|n| !n.is_empty())?;
                Some(User {
                    name,
                    groups: u.groups.unwrap_or_default(),
                })
            });
        if let Ok(mut c) = self.cache.lock() {
            c.insert(key, (user.clone(), Instant::now()));
        }
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_from_the_authorization_header() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_str(v).expect("header"),
            );
            m
        };
        assert_eq!(bearer(&h("Bearer abc.def")), Some("abc.def"));
        assert_eq!(bearer(&h("bearer abc")), Some("abc"));
        assert_eq!(bearer(&h("Basic dXNlcjpwdw==")), None);
        assert_eq!(bearer(&h("Bearer ")), None);
        assert_eq!(bearer(&http::HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn reviews_are_cached_by_token() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let n = std::sync::Arc::new(AtomicUsize::new(0));
        let calls = n.clone();
        let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            calls.fetch_add(1, SeqCst);
            async move {
                let body = http_body_util::BodyExt::collect(req.into_body())
                    .await
                    .expect("body")
                    .to_bytes();
                let r: serde_json::Value = serde_json::from_slice(&body).expect("review");
                let good = r["spec"]["token"] == "good";
                let body = serde_json::json!({
                    "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                    "spec": {},
                    "status": if good {
                        serde_json::json!({"authenticated": true, "user": {
                            "username": "system:serviceaccount:kube-system:metrics-server",
                            "groups": ["system:serviceaccounts", "system:authenticated"]}})
                    } else {
                        serde_json::json!({"authenticated": false, "error": "invalid token"})
                    },
                })
                .to_string();
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from(body),
                )))
            }
        });
        let a = TokenAuthenticator::new(kube::Client::new(svc, "default"));
        for _ in 0..3 {
            let u = a.authenticate("good").await.expect("review").expect("user");
            assert_eq!(u.name, "system:serviceaccount:kube-system:metrics-server");
            assert_eq!(u.groups.len(), 2);
        }
        assert_eq!(n.load(SeqCst), 1, "an authentication is cached");
        assert_eq!(a.authenticate("bad").await.expect("review"), None);
        assert_eq!(a.authenticate("bad").await.expect("review"), None);
        assert_eq!(n.load(SeqCst), 2, "a refusal is cached too");
    }
}
