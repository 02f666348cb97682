//! Authentication: who a request comes from. x509 client certificates
//! against the cluster CA (CN = user, O = groups; read in `lib.rs`'s accept
//! loop with [`user_from_cert`]) and bearer tokens: node tokens
//! ([`TokenStore`]), service-account JWTs (TokenRequest, verified in
//! `satoken.rs`), bootstrap tokens (`bootstrap_token.rs`) and legacy
//! service-account token Secrets.

use crate::api::objects::{meta_str, Core};
use crate::api::satoken::{self, TokenSigner};
use crate::registry;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }

    /// The groups as the API reports them to the user (SelfSubjectReview,
    /// TokenReview): every authenticated user is in `system:authenticated`.
    pub fn reported_groups(&self) -> Vec<String> {
        let mut groups = self.groups.clone();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        groups
    }

    /// The node name, for node identities.
    pub fn node_name(&self) -> Option<&str> {
        if self.groups.iter().any(|g| g == "system:nodes") {
            self.name.strip_prefix("system:node:")
        } else {
            None
        }
    }
}

/// Reads user and groups from a DER client certificate (CN, O).
pub fn user_from_cert(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some(User { name, groups })
}

/// Bearer tokens for node agents, persisted in `DATA_DIR/tokens.json`.
pub struct TokenStore {
    path: PathBuf,
    tokens: RwLock<HashMap<String, User>>,
}

impl TokenStore {
    pub fn load(path: PathBuf) -> Self {
        let mut tokens = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&text) {
                for (tok, u) in m {
                    if let Some(name) = u["user"].as_str() {
                        let groups = u["groups"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|g| g.as_str().map(String::from))
                                    .collect()
                            })
                            .unwrap_or_default();
                        tokens.insert(
                            tok,
                            User {
                                name: name.to_string(),
                                groups,
                            },
                        );
                    }
                }
            }
        }
        TokenStore {
            path,
            tokens: RwLock::new(tokens),
        }
    }

    pub fn lookup(&self, token: &str) -> Option<User> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    /// Mints (and persists) a bearer token for `user`.
    pub fn mint(&self, user: User) -> Result<String, crate::pki::PkiError> {
        use rand::Rng;
        let bytes: [u8; 24] = rand::rng().random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut map = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        map.insert(token.clone(), user);
        let json: serde_json::Map<String, Value> = map
            .iter()
            .map(|(t, u)| {
                (
                    t.clone(),
                    serde_json::json!({"user": u.name, "groups": u.groups}),
                )
            })
            .collect();
        crate::pki::write_file(&self.path, &Value::Object(json).to_string(), 0o600)?;
        Ok(token)
    }
}

/// The user of a bearer token in an Authorization header.
pub fn bearer_user(
    headers: &http::HeaderMap,
    tokens: &TokenStore,
    signer: &TokenSigner,
    core: &Core,
) -> Option<User> {
    let h = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let tok = h.strip_prefix("Bearer ")?.trim();
    token_user(tok, tokens, signer, core).ok()
}

/// The user of a bearer token: a node token, a service-account JWT
/// (TokenRequest) or a legacy service-account token Secret; else why not.
pub fn token_user(
    tok: &str,
    tokens: &TokenStore,
    signer: &TokenSigner,
    core: &Core,
) -> Result<User, String> {
    if tok.is_empty() {
        return Err("empty token".into());
    }
    if let Some(u) = tokens.lookup(tok) {
        return Ok(u);
    }
    if satoken::is_jwt(tok) {
        return satoken::authenticate(signer, core, tok);
    }
    if super::bootstrap_token::parse(tok).is_some() {
        return super::bootstrap_token::authenticate(core, tok);
    }
    service_account_user(core, tok).ok_or_else(|| "invalid bearer token".into())
}

/// Authenticates a legacy service-account token Secret (type
/// `kubernetes.io/service-account-token`) as
/// `system:serviceaccount:<ns>:<name>`.
fn service_account_user(core: &Core, token: &str) -> Option<User> {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(token.as_bytes());
    let secrets = registry::find("", "v1", "secrets")?;
    let (all, _) = core.store.list(&secrets.key_prefix(None));
    let s = all.iter().find(|s| {
        s.object.get("type").and_then(Value::as_str) == Some("kubernetes.io/service-account-token")
            && s.object.pointer("/data/token").and_then(Value::as_str) == Some(encoded.as_str())
    })?;
    let ns = meta_str(&s.object, "namespace");
    let sa = s
        .object
        .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
        .and_then(Value::as_str)?;
    Some(satoken::service_account_user(ns, sa))
}
