//! Bootstrap tokens (upstream plugin/pkg/auth/authenticator/token/bootstrap
//! and kubeadm's `token create`): a bearer token `<id>.<secret>` authenticates
//! as `system:bootstrap:<id>` in `system:bootstrappers` (+ the Secret's
//! `auth-extra-groups`) while `kube-system/bootstrap-token-<id>` (type
//! `bootstrap.kubernetes.io/token`) holds it, allows authentication and has
//! not expired. Nodes use them once, to request their client certificate.

use crate::api::objects::{Core, WriteCtx};
use crate::registry;
use serde_json::{json, Value};
use std::time::Duration;

/// The Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The group every bootstrap token is in.
pub const GROUP: &str = "system:bootstrappers";
/// The extra group kubeadm gives the node tokens it creates.
pub const KUBEADM_NODE_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapTokenError {
    #[error("failed to store the bootstrap token Secret: {0}")]
    Store(String),
    #[error("the bootstrap token lifetime {0:?} is out of range")]
    Ttl(Duration),
}

/// `(id, secret)` of a token shaped as upstream's `^([a-z0-9]{6})\.([a-z0-9]{16})$`.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// A value of the Secret's `data` (base64) or `stringData`.
fn field(secret: &Value, key: &str) -> Option<String> {
    use base64::Engine;
    if let Some(v) = secret
        .pointer(&format!("/data/{key}"))
        .and_then(Value::as_str)
    {
        let raw = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
        return String::from_utf8(raw).ok();
    }
    secret
        .pointer(&format!("/stringData/{key}"))
        .and_then(Value::as_str)
        .map(String::from)
}

/// Whether `expiration` (RFC 3339) is in the past; an unparsable value counts as expired, as
/// upstream's `isSecretExpired`.
pub fn expired(secret: &Value) -> bool {
    match field(secret, "expiration") {
        None => false,
        Some(e) => match e.parse::<jiff::Timestamp>() {
            Ok(t) => t <= jiff::Timestamp::now(),
            Err(_) => true,
        },
    }
}

/// Upstream's `^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$`.
fn valid_extra_group(g: &str) -> bool {
    let Some(rest) = g.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    !rest.is_empty()
        && rest.len() <= 256
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
        && rest
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Constant-time comparison, so the secret cannot be guessed byte by byte from timing.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The user a bootstrap token authenticates as, or why not (kept for logs; clients get 401).
pub fn authenticate(core: &Core, token: &str) -> Result<super::User, String> {
    let (id, secret) = parse(token).ok_or("not a bootstrap token")?;
    let secrets = registry::find("", "v1", "secrets").ok_or("no secrets resource")?;
    let name = format!("bootstrap-token-{id}");
    let stored = core
        .get_stored(secrets, Some("kube-system"), &name)
        .ok_or_else(|| format!("secret kube-system/{name} not found"))?;
    let s = &*stored.object;
    if s.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
        return Err(format!("secret kube-system/{name} has the wrong type"));
    }
    if s.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(format!("secret kube-system/{name} is being deleted"));
    }
    if field(s, "token-id").as_deref() != Some(id) {
        return Err("token id does not match".into());
    }
    if !field(s, "token-secret").is_some_and(|want| same(&want, secret)) {
        return Err("token secret does not match".into());
    }
    if expired(s) {
        return Err(format!("secret kube-system/{name} has expired"));
    }
    if field(s, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return Err(format!(
            "secret kube-system/{name} not marked usage-bootstrap-authentication=true"
        ));
    }
    let mut groups = vec![GROUP.to_string()];
    if let Some(extra) = field(s, "auth-extra-groups") {
        for g in extra.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            if !valid_extra_group(g) {
                return Err(format!("bad auth-extra-groups group {g:?}"));
            }
            if !groups.iter().any(|have| have == g) {
                groups.push(g.to_string());
            }
        }
    }
    groups.push("system:authenticated".into());
    Ok(super::User {
        name: format!("system:bootstrap:{id}"),
        groups,
    })
}

/// Random lower-case letters and digits (upstream's token alphabet).
fn random(n: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Creates a bootstrap token valid for `ttl` as kubeadm's `token create` does (usages
/// authentication and signing, the kubeadm node group) and returns it (`<id>.<secret>`).
pub fn create(core: &Core, ttl: Duration) -> Result<String, BootstrapTokenError> {
    let secrets = registry::find("", "v1", "secrets")
        .ok_or_else(|| BootstrapTokenError::Store("no secrets resource".into()))?;
    let secs = i64::try_from(ttl.as_secs()).map_err(|_| BootstrapTokenError::Ttl(ttl))?;
    let expiration = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .map_err(|_| BootstrapTokenError::Ttl(ttl))?
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut ctx = WriteCtx::controller("kube-apiserver");
    // A clash of two random ids is unlikely; retry on one anyway.
    let mut last = String::new();
    for _ in 0..5 {
        let (id, secret) = (random(6), random(16));
        let body = json!({
            "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
            "type": SECRET_TYPE,
            "data": b64_map(&[
                ("description", "Node bootstrap token created by rktup"),
                ("token-id", &id),
                ("token-secret", &secret),
                ("expiration", &expiration),
                ("usage-bootstrap-authentication", "true"),
                ("usage-bootstrap-signing", "true"),
                ("auth-extra-groups", KUBEADM_NODE_GROUP),
            ]),
        });
        match core.create(secrets, Some("kube-system"), body, &mut ctx) {
            Ok(_) => return Ok(format!("{id}.{secret}")),
            Err(e) if e.code == 409 => last = e.message,
            Err(e) => return Err(BootstrapTokenError::Store(e.message)),
        }
    }
    Err(BootstrapTokenError::Store(last))
}

fn b64_map(kv: &[(&str, &str)]) -> Value {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    Value::Object(
        kv.iter()
            .map(|(k, v)| (k.to_string(), json!(b64(v))))
            .collect(),
    )
}

/// The token cleaner (kube-controller-manager's `tokencleaner`): expired bootstrap token
/// Secrets are deleted.
pub fn clean_expired(core: &Core) {
    let Some(secrets) = registry::find("", "v1", "secrets") else {
        return;
    };
    let (all, _) = core.store.list(&secrets.key_prefix(Some("kube-system")));
    for s in all {
        let o = &*s.object;
        if o.get("type").and_then(Value::as_str) == Some(SECRET_TYPE) && expired(o) {
            let name = o
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let _ = core.delete(
                secrets,
                Some("kube-system"),
                name,
                &crate::api::objects::DeleteOptions::default(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape_and_groups() {
        assert_eq!(
            parse("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        assert_eq!(parse("ABCDEF.0123456789abcdef"), None);
        assert_eq!(parse("abcdef.0123456789abcde"), None);
        assert_eq!(parse("abcdef0123456789abcdef"), None);
        assert!(valid_extra_group(KUBEADM_NODE_GROUP));
        assert!(!valid_extra_group("system:masters"));
        assert!(!valid_extra_group("system:bootstrappers:"));
        assert!(!valid_extra_group("system:bootstrappers:x-"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
        assert!(expired(
            &json!({"stringData": {"expiration": "2001-01-01T00:00:00Z"}})
        ));
        assert!(expired(&json!({"stringData": {"expiration": "soon"}})));
        assert!(!expired(
            &json!({"stringData": {"expiration": "2999-01-01T00:00:00Z"}})
        ));
        assert!(!expired(&json!({})));
    }
}
