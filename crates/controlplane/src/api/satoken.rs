//! Bound service-account tokens: the TokenRequest subresource
//! (`POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`, what
//! `kubectl create token` and a node agent's projected `serviceAccountToken`
//! volumes call) and the authentication of the tokens it issues.
//!
//! The tokens are JWTs shaped as kube-apiserver issues them, so that clients
//! that decode them see the real claims: signed ES256 with
//! `DATA_DIR/pki/sa.key` (an ECDSA P-256 key made on first start, kubeadm's
//! file name; the public half in `sa.pub`), header `{"alg","kid"}` with the
//! key id upstream computes (base64url SHA-256 of the PKIX public key), and
//! claims `aud`, `exp`, `iat`, `iss`, `jti`, `nbf`, `sub` and `kubernetes.io`
//! (`namespace`, `serviceaccount{name,uid}`, and the object the token is bound
//! to: `pod{name,uid}` plus its `node`, `secret{name,uid}` or `node{name,uid}`;
//! `warnafter` when the lifetime was extended).
//!
//! On use (pkg/serviceaccount's validator): the signature, `iss`, `exp`/`nbf`/`iat`
//! with go-jose's one-minute leeway, an `aud` the API server accepts, the
//! service account (name and uid) and the bound pod, secret or node (name and
//! uid, not deleted more than the leeway ago) must all hold; the token then
//! authenticates as `system:serviceaccount:NS:NAME` in `system:serviceaccounts`,
//! `system:serviceaccounts:NS` and `system:authenticated`.

use super::auth::User;
use super::error::{ApiError, ApiResult};
use super::objects::{meta_str, Core};
use crate::pki::PkiError;
use crate::registry::{self, ResourceDef};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::Path;

/// `--service-account-issuer` (kubeadm's default), also the API server's only
/// audience (`--api-audiences` defaults to the issuer).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Clock skew allowed on `exp`, `nbf`, `iat` and deletions (go-jose's `DefaultLeeway`).
pub const LEEWAY_SECS: i64 = 60;
/// `spec.expirationSeconds` when unset.
pub const DEFAULT_EXPIRATION_SECS: i64 = 3600;
/// The shortest lifetime a TokenRequest may ask for.
pub const MIN_EXPIRATION_SECS: i64 = 600;
/// The longest (2^32 s).
pub const MAX_EXPIRATION_SECS: i64 = 1 << 32;
/// The lifetime the kubelet asks for projected tokens; a pod-bound request for
/// exactly this, with API-server audiences only, is extended to a year with a
/// `warnafter` at the asked time (`--service-account-extend-token-expiration`,
/// on by default).
pub const WARN_ONLY_EXPIRATION_SECS: i64 = 3607;
pub const EXTENDED_EXPIRATION_SECS: i64 = 365 * 24 * 60 * 60;

/// Signs and verifies service-account tokens with the cluster's `sa.key`.
pub struct TokenSigner {
    key: EcdsaKeyPair,
    public: Vec<u8>,
    kid: String,
    rng: ring::rand::SystemRandom,
}

fn invalid_key(reason: impl Into<String>) -> PkiError {
    PkiError::Invalid {
        what: "service account signing key (sa.key)".into(),
        reason: reason.into(),
    }
}

impl TokenSigner {
    /// Loads `pki_dir/sa.key`, generating it (and `sa.pub`) if missing.
    pub fn load_or_create(pki_dir: &Path) -> Result<Self, PkiError> {
        let key_path = pki_dir.join("sa.key");
        let pem = if key_path.exists() {
            std::fs::read_to_string(&key_path).map_err(|source| PkiError::Io {
                op: "read",
                path: key_path.clone(),
                source,
            })?
        } else {
            let key = rcgen::KeyPair::generate().map_err(|source| PkiError::Generate {
                what: "service account signing key".into(),
                source,
            })?;
            let pem = key.serialize_pem();
            crate::pki::write_file(&key_path, &pem, 0o600)?;
            crate::pki::write_file(&pki_dir.join("sa.pub"), &key.public_key_pem(), 0o600)?;
            pem
        };
        Self::from_pem(&pem)
    }

    /// A signer for an ECDSA P-256 private key in PKCS#8 PEM.
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        use rcgen::PublicKeyData;
        let key = rcgen::KeyPair::from_pem(pem).map_err(|e| invalid_key(e.to_string()))?;
        if !key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err(invalid_key("not an ECDSA P-256 key"));
        }
        let rng = ring::rand::SystemRandom::new();
        let signer = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            key.serialized_der(),
            &rng,
        )
        .map_err(|e| invalid_key(e.to_string()))?;
        let spki = key.subject_public_key_info();
        let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &spki));
        Ok(TokenSigner {
            public: signer.public_key().as_ref().to_vec(),
            key: signer,
            kid,
            rng,
        })
    }

    /// The `kid` header of issued tokens.
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    /// Signs `claims` into a compact JWS (`header.payload.signature`).
    pub fn sign(&self, claims: &Claims) -> ApiResult<String> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let payload = serde_json::to_vec(claims).map_err(|e| ApiError::internal(e.to_string()))?;
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| ApiError::internal("failed to generate token: signing failed"))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }

    /// Checks the signature (and header) of `token` and returns its claims;
    /// times, audiences and bindings are checked by [`validate`].
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT".into());
        };
        let decode = |part: &str, what: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|e| format!("malformed {what}: {e}"))
        };
        let header: Value = serde_json::from_slice(&decode(h, "header")?)
            .map_err(|e| format!("malformed header: {e}"))?;
        if header["alg"] != "ES256" {
            return Err(format!("unsupported signing algorithm {}", header["alg"]));
        }
        if let Some(kid) = header.get("kid") {
            if kid != self.kid.as_str() {
                return Err("unknown signing key".into());
            }
        }
        let sig = decode(s, "signature")?;
        let input_len = h.len() + 1 + p.len();
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &self.public)
            .verify(&token.as_bytes()[..input_len], &sig)
            .map_err(|_| "invalid signature".to_string())?;
        serde_json::from_slice(&decode(p, "payload")?).map_err(|e| format!("malformed claims: {e}"))
    }

    /// The public key as a JSON Web Key Set (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        // Uncompressed point: 0x04 || X || Y.
        let (x, y) = self.public[1..].split_at(32);
        json!({"keys": [{
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        }]})
    }
}

/// A name and uid in the `kubernetes.io` claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// The `kubernetes.io` private claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    #[serde(default)]
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// A token's claims, in the (alphabetical) order kube-apiserver writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(deserialize_with = "audiences")]
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
    pub nbf: i64,
    pub sub: String,
}

/// `aud` may be one string or a list (RFC 7519).
fn audiences<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Aud::deserialize(d)? {
        Aud::One(s) => vec![s],
        Aud::Many(v) => v,
    })
}

/// The user a service account authenticates as.
pub fn service_account_user(namespace: &str, name: &str) -> User {
    User {
        name: format!("system:serviceaccount:{namespace}:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
    }
}

/// Whether `token` looks like a JWT (two dots), so that no other token
/// authenticator should try it.
pub fn is_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

/// Looks an object up for validation: (resource, namespace, name).
pub type Getter<'a> =
    dyn Fn(&ResourceDef, Option<&str>, &str) -> Option<std::sync::Arc<Value>> + 'a;

fn unix(ts: &str) -> Option<i64> {
    ts.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// Checks a bound object of a token still exists with the uid in the claim
/// and was not deleted (more than the leeway) before `now`.
fn check_bound(
    get: &Getter<'_>,
    rd: &ResourceDef,
    ns: Option<&str>,
    r: &ObjectRef,
    now: i64,
) -> Result<(), String> {
    let what = rd.kind;
    let obj = get(rd, ns, &r.name).ok_or("service account token has been invalidated")?;
    let uid = meta_str(&obj, "uid");
    if uid != r.uid {
        return Err(format!(
            "{} UID ({uid}) does not match service account {} ref claim ({})",
            what.to_lowercase(),
            what.to_lowercase(),
            r.uid
        ));
    }
    if let Some(ts) = obj
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
    {
        if unix(ts).is_none_or(|t| t < now - LEEWAY_SECS) {
            return Err("service account token has been invalidated".into());
        }
    }
    Ok(())
}

/// Validates a token at time `now` (unix seconds) and returns its user.
pub fn validate(
    signer: &TokenSigner,
    token: &str,
    now: i64,
    get: &Getter<'_>,
) -> Result<User, String> {
    let c = signer.verify(token)?;
    if c.iss != ISSUER {
        return Err(format!("unknown issuer {:?}", c.iss));
    }
    if now > c.exp + LEEWAY_SECS {
        return Err("service account token has expired".into());
    }
    if now + LEEWAY_SECS < c.nbf {
        return Err("service account token is not valid yet".into());
    }
    if now + LEEWAY_SECS < c.iat {
        return Err("service account token is issued in the future".into());
    }
    if !c.aud.iter().any(|a| a == ISSUER) {
        return Err(format!(
            "token audiences {:?} is invalid for the target audiences [{ISSUER:?}]",
            c.aud
        ));
    }
    let k = &c.kubernetes;
    let ns = k.namespace.as_str();
    let sa = &k.serviceaccount;
    if ns.is_empty() || sa.name.is_empty() {
        return Err("token has no service account".into());
    }
    let sard = rd("serviceaccounts")?;
    let account = get(sard, Some(ns), &sa.name)
        .ok_or_else(|| format!("serviceaccounts \"{}\" not found", sa.name))?;
    let uid = meta_str(&account, "uid");
    if uid != sa.uid {
        return Err(format!(
            "service account UID ({uid}) does not match claim ({})",
            sa.uid
        ));
    }
    if let Some(ts) = account
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
    {
        if unix(ts).is_none_or(|t| t < now - LEEWAY_SECS) {
            return Err(format!("service account {ns}/{} has been deleted", sa.name));
        }
    }
    if let Some(s) = &k.secret {
        check_bound(get, rd("secrets")?, Some(ns), s, now)?;
    }
    if let Some(p) = &k.pod {
        check_bound(get, registry::pods(), Some(ns), p, now)?;
    } else if let Some(n) = &k.node {
        // For pod-bound tokens the node is information only.
        check_bound(get, rd("nodes")?, None, n, now)?;
    }
    Ok(service_account_user(ns, &sa.name))
}

/// Authenticates a service-account JWT against the objects in `core`.
pub fn authenticate(signer: &TokenSigner, core: &Core, token: &str) -> Result<User, String> {
    let now = jiff::Timestamp::now().as_second();
    validate(signer, token, now, &|rd, ns, name| {
        core.get_stored(rd, ns, name).map(|s| s.object)
    })
}

fn rd(plural: &str) -> Result<&'static ResourceDef, String> {
    registry::find("", "v1", plural).ok_or_else(|| format!("no resource {plural}"))
}

/// `TokenRequest.authentication.k8s.io "NAME" is invalid: FIELD: Invalid value: V: MSG`.
fn invalid(name: &str, field: &str, value: &Value, msg: &str) -> ApiError {
    let shown = match value {
        Value::String(s) => format!("{s:?}"),
        v => v.to_string(),
    };
    let message = format!("Invalid value: {shown}: {msg}");
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!(
            "TokenRequest.authentication.k8s.io \"{name}\" is invalid: {field}: {message}"
        ),
        details: Some(json!({
            "name": name,
            "group": "authentication.k8s.io",
            "kind": "TokenRequest",
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}],
        })),
    }
}

/// `spec.boundObjectRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundRef {
    pub kind: String,
    pub api_version: String,
    pub name: String,
    pub uid: String,
}

impl BoundRef {
    /// The boundObjectRef of a TokenRequest, if it has one; `Err` if it is
    /// not an object of strings.
    pub fn of(request: &Value) -> ApiResult<Option<BoundRef>> {
        let r = match request.pointer("/spec/boundObjectRef") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(r)) => r,
            Some(_) => return Err(decode_err("spec.boundObjectRef", "an object")),
        };
        let s = |k: &str| match r.get(k) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(decode_err(&format!("spec.boundObjectRef.{k}"), "a string")),
        };
        Ok(Some(BoundRef {
            kind: s("kind")?,
            api_version: s("apiVersion")?,
            name: s("name")?,
            uid: s("uid")?,
        }))
    }

    /// The API group of `apiVersion` (`""` for `v1` or none).
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
    }

    /// Go's `GroupVersionKind.String()`.
    fn gvk(&self) -> String {
        let version = self
            .api_version
            .rsplit_once('/')
            .map(|(_, v)| v)
            .unwrap_or(&self.api_version);
        format!("{}/{version}, Kind={}", self.group(), self.kind)
    }
}

fn decode_err(field: &str, want: &str) -> ApiError {
    decode_err_of("TokenRequest", field, want)
}

/// Upstream's words for a body that does not decode as `kind`.
fn decode_err_of(kind: &str, field: &str, want: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{kind} in version \"v1\" cannot be handled as a {kind}: {field} must be {want}"
    ))
}

/// `spec.audiences` of a TokenRequest or TokenReview (`kind`): empty when unset.
pub fn requested_audiences(request: &Value, kind: &str) -> ApiResult<Vec<String>> {
    let not_a_list = || decode_err_of(kind, "spec.audiences", "a list of strings");
    match request.pointer("/spec/audiences") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect::<Option<_>>()
            .ok_or_else(not_a_list),
        Some(_) => Err(not_a_list()),
    }
}

/// Serves `POST .../serviceaccounts/NAME/token` for the service account
/// `sa` in `namespace`: validates `request` (a TokenRequest), resolves its
/// bound object and returns the TokenRequest with `status.token` and
/// `status.expirationTimestamp`.
pub fn token_request(
    signer: &TokenSigner,
    core: &Core,
    namespace: &str,
    sa: &Value,
    request: &Value,
) -> ApiResult<Value> {
    let name = meta_str(sa, "name");
    ApiError::check_body_kind(request, "TokenRequest")?;
    let body_name = meta_str(request, "name");
    if !body_name.is_empty() && body_name != name {
        return Err(invalid(
            name,
            "metadata.name",
            &json!(body_name),
            "must match the service account name if specified",
        ));
    }
    let body_ns = meta_str(request, "namespace");
    if !body_ns.is_empty() && body_ns != namespace {
        return Err(invalid(
            name,
            "metadata.namespace",
            &json!(body_ns),
            "must match the service account namespace if specified",
        ));
    }
    let audiences = requested_audiences(request, "TokenRequest")?;
    let audiences = if audiences.is_empty() {
        vec![ISSUER.to_string()]
    } else {
        audiences
    };
    let expiration = match request.pointer("/spec/expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECS,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| decode_err("spec.expirationSeconds", "an integer"))?,
    };
    if expiration < MIN_EXPIRATION_SECS {
        return Err(invalid(
            "",
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration > MAX_EXPIRATION_SECS {
        return Err(invalid(
            "",
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let bound = BoundRef::of(request)?;

    let mut k = KubernetesClaims {
        namespace: namespace.to_string(),
        serviceaccount: ObjectRef {
            name: name.to_string(),
            uid: meta_str(sa, "uid").to_string(),
        },
        ..Default::default()
    };
    if let Some(b) = &bound {
        let lookup = |plural: &str, ns: Option<&str>| -> ApiResult<Value> {
            let rd = registry::find("", "v1", plural)
                .ok_or_else(|| ApiError::internal(format!("no resource {plural}")))?;
            core.get(rd, ns, &b.name)
        };
        let obj = match (b.group(), b.kind.as_str()) {
            ("", "Pod") => {
                let pod = lookup("pods", Some(namespace))?;
                let pod_sa = pod
                    .pointer("/spec/serviceAccountName")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if pod_sa != name {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token for serviceaccount {name:?} to pod running with different serviceaccount name."
                    )));
                }
                k.pod = Some(ObjectRef {
                    name: b.name.clone(),
                    uid: meta_str(&pod, "uid").to_string(),
                });
                let node_name = pod
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !node_name.is_empty() {
                    // A missing Node still leaves its name in the claims.
                    let nodes = rd("nodes").map_err(ApiError::internal)?;
                    let uid = core
                        .get_stored(nodes, None, node_name)
                        .map(|n| meta_str(&n.object, "uid").to_string())
                        .unwrap_or_default();
                    k.node = Some(ObjectRef {
                        name: node_name.to_string(),
                        uid,
                    });
                }
                pod
            }
            ("", "Secret") => {
                let secret = lookup("secrets", Some(namespace))?;
                k.secret = Some(ObjectRef {
                    name: b.name.clone(),
                    uid: meta_str(&secret, "uid").to_string(),
                });
                secret
            }
            ("", "Node") => {
                let node = lookup("nodes", None)?;
                k.node = Some(ObjectRef {
                    name: b.name.clone(),
                    uid: meta_str(&node, "uid").to_string(),
                });
                node
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token to object of type {}",
                    b.gvk()
                )))
            }
        };
        if !b.uid.is_empty() && meta_str(&obj, "uid") != b.uid {
            let mut e = ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} {:?}: the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                    b.kind, b.name, b.uid
                ),
            );
            e.details = Some(json!({"name": b.name, "kind": b.kind}));
            return Err(e);
        }
    }

    let now = jiff::Timestamp::now().as_second();
    let mut lifetime = expiration;
    if k.pod.is_some()
        && expiration == WARN_ONLY_EXPIRATION_SECS
        && audiences.iter().all(|a| a == ISSUER)
    {
        k.warnafter = Some(now + expiration);
        lifetime = EXTENDED_EXPIRATION_SECS;
    }
    let claims = Claims {
        aud: audiences.clone(),
        exp: now + lifetime,
        iat: now,
        iss: ISSUER.to_string(),
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: k,
        nbf: now,
        sub: format!("system:serviceaccount:{namespace}:{name}"),
    };
    let token = signer.sign(&claims)?;
    let mut spec = json!({"audiences": audiences, "expirationSeconds": expiration});
    spec["boundObjectRef"] = request
        .pointer("/spec/boundObjectRef")
        .cloned()
        .unwrap_or(Value::Null);
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": rfc3339(now),
        },
        "spec": spec,
        "status": {
            "token": token,
            "expirationTimestamp": rfc3339(now + expiration),
        },
    }))
}

fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// `/.well-known/openid-configuration` (service account issuer discovery);
/// the key set is at `https://SERVER_ADDRESS/openid/v1/jwks`, as upstream
/// without `--service-account-jwks-uri`.
pub fn openid_configuration(server_address: &str) -> Value {
    json!({
        "issuer": ISSUER,
        "jwks_uri": format!("https://{server_address}/openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
}

#[cfg(test)]
mod tests;
