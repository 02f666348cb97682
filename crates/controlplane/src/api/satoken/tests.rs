use super::*;
use crate::api::objects::{ServiceCidrs, WriteCtx};
use std::collections::HashMap;
use std::sync::Arc;

fn signer() -> TokenSigner {
    let key = rcgen::KeyPair::generate().expect("key");
    TokenSigner::from_pem(&key.serialize_pem()).expect("signer")
}

const NOW: i64 = 1_800_000_000;

fn claims() -> Claims {
    Claims {
        aud: vec![ISSUER.into()],
        exp: NOW + 600,
        iat: NOW,
        iss: ISSUER.into(),
        jti: "j".into(),
        kubernetes: KubernetesClaims {
            namespace: "default".into(),
            serviceaccount: ObjectRef {
                name: "default".into(),
                uid: "sa-uid".into(),
            },
            ..Default::default()
        },
        nbf: NOW,
        sub: "system:serviceaccount:default:default".into(),
    }
}

/// Objects by (plural, namespace, name).
struct World(HashMap<(String, String, String), Arc<Value>>);

impl World {
    fn new() -> Self {
        let mut w = World(HashMap::new());
        w.put("serviceaccounts", "default", "default", "sa-uid", None);
        w
    }
    fn put(&mut self, plural: &str, ns: &str, name: &str, uid: &str, deleted: Option<&str>) {
        let mut o = json!({"metadata": {"name": name, "uid": uid}});
        if let Some(d) = deleted {
            o["metadata"]["deletionTimestamp"] = json!(d);
        }
        self.0
            .insert((plural.into(), ns.into(), name.into()), Arc::new(o));
    }
    fn validate(&self, s: &TokenSigner, token: &str, now: i64) -> Result<User, String> {
        validate(s, token, now, &|rd, ns, name| {
            self.0
                .get(&(
                    rd.plural.to_string(),
                    ns.unwrap_or("").to_string(),
                    name.to_string(),
                ))
                .cloned()
        })
    }
}

#[test]
fn signs_and_verifies_es256_with_the_upstream_claim_shape() {
    let s = signer();
    let token = s.sign(&claims()).expect("signs");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
    assert_eq!(header, json!({"alg": "ES256", "kid": s.key_id()}));
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    assert_eq!(
        payload,
        json!({
            "aud": [ISSUER], "exp": NOW + 600, "iat": NOW, "iss": ISSUER, "jti": "j", "nbf": NOW,
            "sub": "system:serviceaccount:default:default",
            "kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "default", "uid": "sa-uid"}},
        })
    );
    // The raw signature is r || s (64 bytes), as JWS ES256 wants.
    assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).expect("b64").len(), 64);
    assert_eq!(s.verify(&token), Ok(claims()));

    // The JWKS carries the same public key.
    let jwk = &s.jwks()["keys"][0];
    let mut point = vec![4u8];
    for c in ["x", "y"] {
        point.extend(
            URL_SAFE_NO_PAD
                .decode(jwk[c].as_str().expect("coordinate"))
                .expect("b64"),
        );
    }
    assert_eq!(point, s.public);
    assert_eq!(jwk["kid"], s.key_id());
}

#[test]
fn forged_tampered_and_foreign_tokens_are_refused() {
    let s = signer();
    let token = s.sign(&claims()).expect("signs");
    let parts: Vec<&str> = token.split('.').collect();

    // Another key (same kid header spoofed): bad signature.
    let other = signer();
    let forged = other.sign(&claims()).expect("signs");
    let forged_parts: Vec<&str> = forged.split('.').collect();
    let spoofed = format!("{}.{}.{}", parts[0], forged_parts[1], forged_parts[2]);
    assert_eq!(s.verify(&spoofed), Err("invalid signature".into()));
    assert_eq!(s.verify(&forged), Err("unknown signing key".into()));

    // A changed payload.
    let mut c = claims();
    c.kubernetes.serviceaccount.name = "admin".into();
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).expect("json"));
    let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    assert_eq!(s.verify(&tampered), Err("invalid signature".into()));

    // alg "none" and HS256 are not accepted.
    for alg in ["none", "HS256"] {
        let h = URL_SAFE_NO_PAD.encode(json!({"alg": alg}).to_string());
        let t = format!("{h}.{}.", parts[1]);
        assert!(s.verify(&t).is_err(), "{alg}");
    }
    for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.e30"] {
        assert!(s.verify(junk).is_err(), "{junk:?}");
    }

    // A signed token of another issuer.
    let mut c = claims();
    c.iss = "https://elsewhere".into();
    let t = s.sign(&c).expect("signs");
    assert!(World::new().validate(&s, &t, NOW).is_err());
}

#[test]
fn expiry_not_before_and_audience_are_checked_with_leeway() {
    let s = signer();
    let w = World::new();
    let token = s.sign(&claims()).expect("signs");
    let user = w.validate(&s, &token, NOW).expect("valid");
    assert_eq!(user, service_account_user("default", "default"));
    assert_eq!(
        user.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ]
    );
    // exp + leeway is the last valid second.
    assert!(w.validate(&s, &token, NOW + 600 + LEEWAY_SECS).is_ok());
    assert_eq!(
        w.validate(&s, &token, NOW + 600 + LEEWAY_SECS + 1),
        Err("service account token has expired".into())
    );
    assert!(w.validate(&s, &token, NOW - LEEWAY_SECS).is_ok());
    assert!(w.validate(&s, &token, NOW - LEEWAY_SECS - 1).is_err());

    // Only tokens meant for the API server authenticate here.
    let mut c = claims();
    c.aud = vec!["x".into()];
    let t = s.sign(&c).expect("signs");
    assert!(w
        .validate(&s, &t, NOW)
        .is_err_and(|e| e.contains("token audiences")));
    c.aud = vec!["x".into(), ISSUER.into()];
    let t = s.sign(&c).expect("signs");
    assert!(w.validate(&s, &t, NOW).is_ok());
    // `aud` as a single string (RFC 7519) reads too.
    let mut v = serde_json::to_value(claims()).expect("json");
    v["aud"] = json!(ISSUER);
    let c: Claims = serde_json::from_value(v).expect("claims");
    assert_eq!(c.aud, [ISSUER]);
}

#[test]
fn service_account_and_bound_objects_must_still_exist() {
    let s = signer();
    let token = s.sign(&claims()).expect("signs");
    // Service account gone, or recreated with another uid.
    let gone = World(HashMap::new());
    assert!(gone.validate(&s, &token, NOW).is_err());
    let mut w = World::new();
    w.put("serviceaccounts", "default", "default", "other", None);
    assert!(w
        .validate(&s, &token, NOW)
        .is_err_and(|e| e.contains("does not match claim")));

    // Pod-bound (with node info, which is not checked).
    let mut c = claims();
    c.kubernetes.pod = Some(ObjectRef {
        name: "p".into(),
        uid: "pod-uid".into(),
    });
    c.kubernetes.node = Some(ObjectRef {
        name: "n1".into(),
        uid: "node-uid".into(),
    });
    let t = s.sign(&c).expect("signs");
    let mut w = World::new();
    assert_eq!(
        w.validate(&s, &t, NOW),
        Err("service account token has been invalidated".into())
    );
    w.put("pods", "default", "p", "pod-uid", None);
    assert!(w.validate(&s, &t, NOW).is_ok());
    // Graceful deletion in progress (deletionTimestamp in the future) or
    // within the leeway: still valid; past it: invalid.
    w.put(
        "pods",
        "default",
        "p",
        "pod-uid",
        Some("2027-01-15T08:00:30Z"),
    );
    let at = "2027-01-15T08:00:30Z"
        .parse::<jiff::Timestamp>()
        .expect("ts")
        .as_second();
    let mut c2 = c.clone();
    c2.iat = at - 10;
    c2.nbf = at - 10;
    c2.exp = at + 1000;
    let t2 = s.sign(&c2).expect("signs");
    assert!(w.validate(&s, &t2, at - 5).is_ok());
    assert!(w.validate(&s, &t2, at + LEEWAY_SECS).is_ok());
    assert!(w.validate(&s, &t2, at + LEEWAY_SECS + 1).is_err());
    // A new pod of the same name.
    w.put("pods", "default", "p", "new-uid", None);
    assert!(w
        .validate(&s, &t, NOW)
        .is_err_and(|e| e.contains("pod UID (new-uid) does not match")));

    // Secret-bound.
    let mut c = claims();
    c.kubernetes.secret = Some(ObjectRef {
        name: "s".into(),
        uid: "sec-uid".into(),
    });
    let t = s.sign(&c).expect("signs");
    let mut w = World::new();
    assert!(w.validate(&s, &t, NOW).is_err());
    w.put("secrets", "default", "s", "sec-uid", None);
    assert!(w.validate(&s, &t, NOW).is_ok());

    // Node-bound: the node is checked.
    let mut c = claims();
    c.kubernetes.node = Some(ObjectRef {
        name: "n1".into(),
        uid: "node-uid".into(),
    });
    let t = s.sign(&c).expect("signs");
    let mut w = World::new();
    assert!(w.validate(&s, &t, NOW).is_err());
    w.put("nodes", "", "n1", "node-uid", None);
    assert!(w.validate(&s, &t, NOW).is_ok());
}

#[test]
fn the_key_is_made_once_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = TokenSigner::load_or_create(dir.path()).expect("creates");
    let b = TokenSigner::load_or_create(dir.path()).expect("loads");
    assert_eq!(a.key_id(), b.key_id());
    let t = a.sign(&claims()).expect("signs");
    assert!(b.verify(&t).is_ok());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("sa.key"))
        .expect("sa.key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let public = std::fs::read_to_string(dir.path().join("sa.pub")).expect("sa.pub");
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
    // An RSA or garbage key is refused with a clear error.
    assert!(TokenSigner::from_pem("not a key").is_err());
}

/// A control plane's object layer on a temp dir, with a service account,
/// a node and a pod bound to it.
fn core_with_objects() -> (tempfile::TempDir, Arc<Core>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::store::FileStore::open(dir.path()).expect("store");
    let core = Core::new(store, ServiceCidrs::parse("10.96.0.0/12").expect("cidr"));
    let mut ctx = WriteCtx::controller("test");
    let r = |p: &str| registry::find("", "v1", p).expect("resource");
    core.create(
        r("namespaces"),
        None,
        json!({"metadata": {"name": "default"}}),
        &mut ctx,
    )
    .expect("ns");
    for sa in ["default", "robot"] {
        core.create(
            r("serviceaccounts"),
            Some("default"),
            json!({"metadata": {"name": sa}}),
            &mut ctx,
        )
        .expect("sa");
    }
    core.create(
        r("nodes"),
        None,
        json!({"metadata": {"name": "n1"}}),
        &mut ctx,
    )
    .expect("node");
    core.create(
        r("pods"),
        Some("default"),
        json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}}),
        &mut ctx,
    )
    .expect("pod");
    core.create(
        r("secrets"),
        Some("default"),
        json!({"metadata": {"name": "s"}}),
        &mut ctx,
    )
    .expect("secret");
    (dir, core)
}

fn sa(core: &Core, name: &str) -> Value {
    core.get(rd("serviceaccounts").expect("rd"), Some("default"), name)
        .expect("sa")
}

fn uid(core: &Core, plural: &str, ns: Option<&str>, name: &str) -> String {
    let o = core.get(rd(plural).expect("rd"), ns, name).expect("object");
    meta_str(&o, "uid").to_string()
}

#[test]
fn token_request_defaults_validation_and_bindings() {
    let (_dir, core) = core_with_objects();
    let s = signer();
    let def = sa(&core, "default");
    let now = jiff::Timestamp::now().as_second();

    // Defaults: the API server audience, one hour.
    let out = token_request(&s, &core, "default", &def, &json!({})).expect("token");
    assert_eq!(out["kind"], "TokenRequest");
    assert_eq!(out["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(out["metadata"]["name"], "default");
    assert_eq!(out["metadata"]["namespace"], "default");
    assert_eq!(out["spec"]["audiences"], json!([ISSUER]));
    assert_eq!(out["spec"]["expirationSeconds"], 3600);
    let token = out["status"]["token"].as_str().expect("token");
    let c = s.verify(token).expect("verifies");
    assert!((c.exp - c.iat) == 3600 && (c.iat - now).abs() < 5);
    assert_eq!(c.kubernetes.serviceaccount.uid, meta_str(&def, "uid"));
    assert!(c.kubernetes.pod.is_none() && c.kubernetes.node.is_none());
    let exp_ts = out["status"]["expirationTimestamp"].as_str().expect("ts");
    assert_eq!(unix(exp_ts), Some(c.exp));
    assert_eq!(
        authenticate(&s, &core, token),
        Ok(service_account_user("default", "default"))
    );

    // Audiences and duration as asked.
    let req = json!({"spec": {"audiences": ["x"], "expirationSeconds": 600}});
    let out = token_request(&s, &core, "default", &def, &req).expect("token");
    let c = s
        .verify(out["status"]["token"].as_str().expect("token"))
        .expect("verifies");
    assert_eq!((c.aud, c.exp - c.iat), (vec!["x".to_string()], 600));

    // Too short, too long.
    let e = token_request(
        &s,
        &core,
        "default",
        &def,
        &json!({"spec": {"expirationSeconds": 599}}),
    )
    .expect_err("too short");
    assert_eq!(e.code, 422);
    assert_eq!(e.message, "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes");
    let e = token_request(
        &s,
        &core,
        "default",
        &def,
        &json!({"spec": {"expirationSeconds": (1i64 << 32) + 1}}),
    )
    .expect_err("too long");
    assert_eq!(e.code, 422);
    // Wrong types are 400, not a panic.
    for bad in [
        json!({"spec": {"expirationSeconds": "600"}}),
        json!({"spec": {"audiences": "x"}}),
        json!({"spec": {"audiences": [1]}}),
        json!({"spec": {"boundObjectRef": "p"}}),
        json!({"spec": {"boundObjectRef": {"kind": 1}}}),
        json!({"kind": "Pod"}),
    ] {
        let e = token_request(&s, &core, "default", &def, &bad).expect_err("bad body");
        assert_eq!(e.code, 400, "{bad}");
    }
    // Name and namespace in the body must match the URL.
    let e = token_request(
        &s,
        &core,
        "default",
        &def,
        &json!({"metadata": {"name": "other"}}),
    )
    .expect_err("name");
    assert_eq!(e.code, 422);
    assert!(e.message.contains("metadata.name"), "{}", e.message);
    let e = token_request(
        &s,
        &core,
        "default",
        &def,
        &json!({"metadata": {"namespace": "x"}}),
    )
    .expect_err("namespace");
    assert_eq!(e.code, 422);

    // Bound to a pod: pod and node in the claims; invalid once the pod is gone.
    let pod_uid = uid(&core, "pods", Some("default"), "p");
    let node_uid = uid(&core, "nodes", None, "n1");
    let bound = |kind: &str, name: &str, uid: &str| json!({"spec": {"boundObjectRef": {"kind": kind, "apiVersion": "v1", "name": name, "uid": uid}}});
    let out =
        token_request(&s, &core, "default", &def, &bound("Pod", "p", &pod_uid)).expect("token");
    assert_eq!(out["spec"]["boundObjectRef"]["name"], "p");
    let token = out["status"]["token"].as_str().expect("token").to_string();
    let c = s.verify(&token).expect("verifies");
    assert_eq!(
        c.kubernetes.pod,
        Some(ObjectRef {
            name: "p".into(),
            uid: pod_uid.clone()
        })
    );
    assert_eq!(
        c.kubernetes.node,
        Some(ObjectRef {
            name: "n1".into(),
            uid: node_uid
        })
    );
    assert!(authenticate(&s, &core, &token).is_ok());

    // Wrong uid: 409; missing pod: 404; another service account's pod: 400;
    // unsupported kinds: 400.
    let e = token_request(&s, &core, "default", &def, &bound("Pod", "p", "nope")).expect_err("uid");
    assert_eq!(e.code, 409);
    assert_eq!(e.message, "Operation cannot be fulfilled on Pod \"p\": the UID in the bound object reference (nope) does not match the UID in record. The object might have been deleted and then recreated");
    let e = token_request(&s, &core, "default", &def, &bound("Pod", "q", "")).expect_err("404");
    assert_eq!((e.code, e.message.as_str()), (404, "pods \"q\" not found"));
    let robot = sa(&core, "robot");
    let e = token_request(&s, &core, "default", &robot, &bound("Pod", "p", "")).expect_err("sa");
    assert_eq!(e.code, 400);
    assert!(
        e.message.contains("different serviceaccount name"),
        "{}",
        e.message
    );
    let e = token_request(&s, &core, "default", &def, &json!({"spec": {"boundObjectRef": {"kind": "Deployment", "apiVersion": "apps/v1", "name": "d"}}}))
        .expect_err("kind");
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            400,
            "cannot bind token to object of type apps/v1, Kind=Deployment"
        )
    );

    // Secret- and node-bound.
    let sec_uid = uid(&core, "secrets", Some("default"), "s");
    let out =
        token_request(&s, &core, "default", &def, &bound("Secret", "s", &sec_uid)).expect("token");
    let secret_token = out["status"]["token"].as_str().expect("token").to_string();
    assert!(authenticate(&s, &core, &secret_token).is_ok());
    let out = token_request(&s, &core, "default", &def, &bound("Node", "n1", "")).expect("token");
    let node_token = out["status"]["token"].as_str().expect("token").to_string();
    assert!(authenticate(&s, &core, &node_token).is_ok());

    // The kubelet's 3607 s pod-bound request is extended to a year with warnafter.
    let mut req = bound("Pod", "p", &pod_uid);
    req["spec"]["expirationSeconds"] = json!(WARN_ONLY_EXPIRATION_SECS);
    let out = token_request(&s, &core, "default", &def, &req).expect("token");
    let c = s
        .verify(out["status"]["token"].as_str().expect("token"))
        .expect("verifies");
    assert_eq!(c.exp - c.iat, EXTENDED_EXPIRATION_SECS);
    assert_eq!(
        c.kubernetes.warnafter,
        Some(c.iat + WARN_ONLY_EXPIRATION_SECS)
    );
    assert_eq!(out["spec"]["expirationSeconds"], WARN_ONLY_EXPIRATION_SECS);
    assert_eq!(
        unix(out["status"]["expirationTimestamp"].as_str().expect("ts")),
        Some(c.iat + WARN_ONLY_EXPIRATION_SECS)
    );

    // Deleting the bound objects invalidates their tokens.
    let opts = crate::api::objects::DeleteOptions {
        grace_period: Some(0),
        ..Default::default()
    };
    core.delete(registry::pods(), Some("default"), "p", &opts)
        .expect("delete pod");
    assert!(authenticate(&s, &core, &token).is_err());
    core.delete(rd("secrets").expect("rd"), Some("default"), "s", &opts)
        .expect("delete secret");
    assert_eq!(
        authenticate(&s, &core, &secret_token),
        Err("service account token has been invalidated".into())
    );
    core.delete(rd("nodes").expect("rd"), None, "n1", &opts)
        .expect("delete node");
    assert!(authenticate(&s, &core, &node_token).is_err());
}
