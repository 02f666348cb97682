//! Service-account tokens (TokenRequest): the real `kubectl create token`
//! gets tokens that then authenticate (`kubectl auth whoami`) until they
//! expire or their bound pod is deleted; a node may get tokens only bound to
//! its own pods.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use k8s_openapi::api::authentication::v1::{
    BoundObjectReference, SelfSubjectReview, TokenRequest, TokenRequestSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use rktup_controlplane::api::satoken::{Claims, TokenSigner, ISSUER};
use rktup_controlplane::pki::Credential;
use rktup_testkit::controlplane::*;
use serde_json::{json, Value};
use std::process::Output;
use std::time::Duration;

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The claims of a JWT, read without checking it (as a client would).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

/// `kubectl auth whoami -o json` with `token` alone: the user, or the error.
async fn whoami(c: &Cluster, token: &str) -> Result<Value, String> {
    let out = c
        .kubectl_as(
            "sa",
            &Credential::Token(token.to_string()),
            &["auth", "whoami", "-o", "json"],
        )
        .await;
    let (stdout, stderr) = text(&out);
    if out.status.success() {
        Ok(
            serde_json::from_str::<Value>(&stdout).expect("whoami JSON")["status"]["userInfo"]
                .clone(),
        )
    } else {
        Err(stderr)
    }
}

async fn default_sa(c: &Cluster) {
    eventually(
        "the default ServiceAccount",
        Duration::from_secs(20),
        || async {
            c.kubectl(&["get", "sa", "default"])
                .await
                .status
                .success()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_token_authenticates_until_expiry_or_pod_deletion() {
    let c = start().await;
    default_sa(&c).await;

    // Discovery lists the subresource as upstream does.
    let raw = c.ok(&["get", "--raw", "/api/v1"]).await;
    let list: Value = serde_json::from_str(&raw).expect("APIResourceList");
    let entry = list["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "serviceaccounts/token")
        .expect("serviceaccounts/token listed")
        .clone();
    assert_eq!(
        (&entry["kind"], &entry["group"], &entry["verbs"]),
        (
            &json!("TokenRequest"),
            &json!("authentication.k8s.io"),
            &json!(["create"])
        )
    );

    // `kubectl create token default`: one hour, the API server's audience.
    let out = c.kubectl(&["-v=8", "create", "token", "default"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "create token: {stderr}");
    assert!(
        stderr.contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "kubectl sent its TokenRequest as protobuf:\n{stderr}"
    );
    let token = stdout.trim().to_string();
    let cl = claims(&token);
    assert_eq!(cl["iss"], ISSUER);
    assert_eq!(cl["aud"], json!([ISSUER]));
    assert_eq!(cl["sub"], "system:serviceaccount:default:default");
    assert_eq!(
        cl["exp"].as_i64().expect("exp") - cl["iat"].as_i64().expect("iat"),
        3600
    );
    assert_eq!(cl["nbf"], cl["iat"]);
    assert_eq!(cl["kubernetes.io"]["namespace"], "default");
    assert_eq!(cl["kubernetes.io"]["serviceaccount"]["name"], "default");
    let sa_uid = c
        .ok(&["get", "sa", "default", "-o", "jsonpath={.metadata.uid}"])
        .await;
    assert_eq!(
        cl["kubernetes.io"]["serviceaccount"]["uid"],
        sa_uid.as_str()
    );
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().expect("header"))
            .expect("base64url"),
    )
    .expect("JSON");
    assert_eq!(header["alg"], "ES256");
    // Service account issuer discovery publishes the key.
    let jwks: Value =
        serde_json::from_str(&c.ok(&["get", "--raw", "/openid/v1/jwks"]).await).expect("JWKS");
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    let oidc: Value = serde_json::from_str(
        &c.ok(&["get", "--raw", "/.well-known/openid-configuration"])
            .await,
    )
    .expect("discovery document");
    assert_eq!(oidc["issuer"], ISSUER);

    let me = whoami(&c, &token).await.expect("the token authenticates");
    assert_eq!(me["username"], "system:serviceaccount:default:default");
    assert_eq!(
        me["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ])
    );
    // Authenticated, but (no RBAC bindings) authorized for nothing.
    let out = c
        .kubectl_as("sa", &Credential::Token(token.clone()), &["get", "pods"])
        .await;
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains(
            "User \"system:serviceaccount:default:default\" cannot list resource \"pods\""
        ),
        "{stderr}"
    );

    // `--duration=10m --audience=x`: ten minutes, audience x only. As upstream,
    // a token for another audience does not authenticate at the API server...
    let x = c
        .ok(&[
            "create",
            "token",
            "default",
            "--duration=10m",
            "--audience=x",
        ])
        .await;
    let x = x.trim();
    let cl = claims(x);
    assert_eq!(cl["aud"], json!(["x"]));
    assert_eq!(
        cl["exp"].as_i64().expect("exp") - cl["iat"].as_i64().expect("iat"),
        600
    );
    let err = whoami(&c, x)
        .await
        .expect_err("audience x is not the API server's");
    assert!(err.contains("Unauthorized"), "{err}");
    // ...while one that also names the API server's audience does.
    let both = c
        .ok(&[
            "create",
            "token",
            "default",
            "--duration=10m",
            "--audience=x",
            &format!("--audience={ISSUER}"),
        ])
        .await;
    let me = whoami(&c, both.trim()).await.expect("authenticates");
    assert_eq!(me["username"], "system:serviceaccount:default:default");

    // Upstream's refusals.
    let out = c
        .kubectl(&["create", "token", "default", "--duration=5m"])
        .await;
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success()
            && stderr.contains("TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes"),
        "{stderr}"
    );
    let out = c.kubectl(&["create", "token", "nosuch"]).await;
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success() && stderr.contains("serviceaccounts \"nosuch\" not found"),
        "{stderr}"
    );

    // Expired: the same claims, signed with the cluster's key, but with `exp`
    // more than the one-minute leeway in the past, are refused; with `exp`
    // in the future they are accepted (so it is the expiry that counts).
    let signer = TokenSigner::load_or_create(&c.dir.path().join("pki")).expect("sa.key");
    let mut cl: Claims = serde_json::from_value(claims(&token)).expect("claims");
    let now = jiff::Timestamp::now().as_second();
    cl.iat = now - 4000;
    cl.nbf = now - 4000;
    cl.exp = now - 61;
    let expired = signer.sign(&cl).expect("signs");
    let err = whoami(&c, &expired).await.expect_err("expired");
    assert!(err.contains("Unauthorized"), "{err}");
    cl.exp = now + 60;
    let fresh = signer.sign(&cl).expect("signs");
    whoami(&c, &fresh).await.expect("not expired");
    // A tampered signature, and a token signed by another key.
    let mut bad = token.clone();
    let last = bad.pop().expect("char");
    bad.push(if last == 'A' { 'B' } else { 'A' });
    assert!(whoami(&c, &bad).await.is_err());
    let other = TokenSigner::from_pem(&rcgen::KeyPair::generate().expect("key").serialize_pem())
        .expect("signer");
    assert!(whoami(&c, &other.sign(&cl).expect("signs")).await.is_err());

    // Bound to a pod: valid while the pod exists, refused once it is deleted.
    // (Pods of nodes that do not exist are garbage-collected: register n1.)
    let _n1 = fake_node(&c, "n1", 10250).await;
    c.apply_stdin(
        &["create", "-f", "-"],
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}}"#,
    )
    .await;
    let pod_uid = c
        .ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"])
        .await;
    let bound = c
        .ok(&[
            "create",
            "token",
            "default",
            "--bound-object-kind=Pod",
            "--bound-object-name=web",
            &format!("--bound-object-uid={pod_uid}"),
        ])
        .await;
    let bound = bound.trim();
    let cl = claims(bound);
    assert_eq!(
        cl["kubernetes.io"]["pod"],
        json!({"name": "web", "uid": pod_uid})
    );
    assert_eq!(cl["kubernetes.io"]["node"]["name"], "n1");
    whoami(&c, bound)
        .await
        .expect("pod-bound token authenticates");
    let out = c
        .kubectl(&[
            "create",
            "token",
            "default",
            "--bound-object-kind=Pod",
            "--bound-object-name=web",
            "--bound-object-uid=wrong",
        ])
        .await;
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("Operation cannot be fulfilled on Pod \"web\": the UID in the bound object reference (wrong) does not match the UID in record"),
        "{stderr}"
    );
    c.ok(&["delete", "pod", "web", "--grace-period=0", "--force"])
        .await;
    let err = whoami(&c, bound).await.expect_err("the pod is gone");
    assert!(err.contains("Unauthorized"), "{err}");
    // The unbound token still works.
    whoami(&c, &token).await.expect("unbound token still valid");

    c.handle.shutdown().await;
}

fn token_request(bound_to: Option<(&str, &str)>) -> TokenRequest {
    TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            bound_object_ref: bound_to.map(|(name, uid)| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name.into()),
                uid: Some(uid.into()),
            }),
            expiration_seconds: Some(3607),
        },
        ..Default::default()
    }
}

fn forbidden(r: kube::Result<TokenRequest>) -> String {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => s.message,
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_tokens_only_for_their_own_pods() {
    let c = start().await;
    default_sa(&c).await;
    c.ok(&["create", "serviceaccount", "robot"]).await;
    let _agents = (
        fake_node(&c, "n1", 10250).await,
        fake_node(&c, "n2", 10250).await,
    );
    for (pod, node) in [("on-n1", "n1"), ("on-n2", "n2")] {
        c.apply_stdin(
            &["create", "-f", "-"],
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
                    "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}})
            .to_string(),
        )
        .await;
    }
    let uid = |pod: &'static str| {
        let c = &c;
        async move {
            c.ok(&["get", "pod", pod, "-o", "jsonpath={.metadata.uid}"])
                .await
        }
    };
    let (uid1, uid2) = (uid("on-n1").await, uid("on-n2").await);

    let n1 = c.node_client("n1").await;
    let sas: Api<ServiceAccount> = Api::namespaced(n1.clone(), "default");
    let pp = PostParams::default();

    // A token for its own pod, as a projected volume asks (3607 s).
    let tr = sas
        .create_token_request("default", &pp, &token_request(Some(("on-n1", &uid1))))
        .await
        .expect("node n1 gets a token for its pod");
    let status = tr.status.expect("status");
    let cl = claims(&status.token);
    assert_eq!(cl["kubernetes.io"]["pod"]["name"], "on-n1");
    assert_eq!(cl["kubernetes.io"]["node"]["name"], "n1");
    // Extended to a year, with a warning after the asked-for lifetime.
    let (iat, exp) = (
        cl["iat"].as_i64().expect("iat"),
        cl["exp"].as_i64().expect("exp"),
    );
    assert_eq!(exp - iat, 365 * 24 * 3600);
    assert_eq!(cl["kubernetes.io"]["warnafter"].as_i64(), Some(iat + 3607));
    // It authenticates (kube-rs, SelfSubjectReview).
    let as_pod = c
        .client_for("pod", &Credential::Token(status.token.clone()))
        .await;
    let review = Api::<SelfSubjectReview>::all(as_pod)
        .create(&pp, &SelfSubjectReview::default())
        .await
        .expect("whoami");
    assert_eq!(
        review
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .as_deref(),
        Some("system:serviceaccount:default:default")
    );

    // Refused: another node's pod, no binding, a stale uid, a service account
    // none of its pods runs as.
    let msg = forbidden(
        sas.create_token_request("default", &pp, &token_request(Some(("on-n2", &uid2))))
            .await,
    );
    assert_eq!(
        msg,
        "serviceaccounts \"default\" is forbidden: node requested token bound to a pod scheduled on a different node"
    );
    let msg = forbidden(
        sas.create_token_request("default", &pp, &token_request(None))
            .await,
    );
    assert_eq!(
        msg,
        "serviceaccounts \"default\" is forbidden: node requested token not bound to a pod"
    );
    let msg = forbidden(
        sas.create_token_request("default", &pp, &token_request(Some(("on-n1", "stale"))))
            .await,
    );
    assert!(msg.contains("does not match the UID in record"), "{msg}");
    let msg = forbidden(
        sas.create_token_request("robot", &pp, &token_request(Some(("on-n1", &uid1))))
            .await,
    );
    assert_eq!(
        msg,
        "serviceaccounts \"robot\" is forbidden: User \"system:node:n1\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object"
    );

    // Node n2 for its own pod: fine.
    let n2 = c.node_client("n2").await;
    Api::<ServiceAccount>::namespaced(n2, "default")
        .create_token_request("default", &pp, &token_request(Some(("on-n2", &uid2))))
        .await
        .expect("node n2 gets a token for its pod");

    // A service account may not request tokens (no RBAC), not even its own.
    let as_sa = c
        .client_for("sa", &Credential::Token(status.token.clone()))
        .await;
    let r = Api::<ServiceAccount>::namespaced(as_sa, "default")
        .create_token_request("default", &pp, &token_request(None))
        .await;
    forbidden(r);

    c.handle.shutdown().await;
}

/// `kubectl create -f` of a TokenReview with `token`: its status.
/// (`--validate=false`: for a kind without a PATCH operation kubectl validates
/// against OpenAPI v2, which is not served; see the README.)
async fn token_review(c: &Cluster, token: &str, audiences: Option<&[&str]>) -> Value {
    let mut review = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    });
    if let Some(a) = audiences {
        review["spec"]["audiences"] = json!(a);
    }
    let out = c
        .apply_stdin(
            &["create", "--validate=false", "-f", "-", "-o", "json"],
            &review.to_string(),
        )
        .await;
    let created: Value = serde_json::from_str(&out).expect("TokenReview JSON");
    assert_eq!(created["kind"], "TokenReview", "{created}");
    created["status"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_reviews_say_whether_and_as_whom_a_token_authenticates() {
    let c = start().await;
    default_sa(&c).await;
    let table = c
        .ok(&["api-resources", "--api-group=authentication.k8s.io"])
        .await;
    assert!(
        table.lines().any(|l| l.starts_with("tokenreviews ")
            && l.contains("authentication.k8s.io/v1")
            && l.trim_end().ends_with("TokenReview")),
        "{table}"
    );

    let token = c
        .ok(&["create", "token", "default"])
        .await
        .trim()
        .to_string();
    let ok = token_review(&c, &token, None).await;
    assert_eq!(ok["authenticated"], true, "{ok}");
    assert_eq!(
        ok["user"]["username"], "system:serviceaccount:default:default",
        "{ok}"
    );
    let groups = ok["user"]["groups"].as_array().expect("groups").clone();
    for g in [
        "system:serviceaccounts",
        "system:serviceaccounts:default",
        "system:authenticated",
    ] {
        assert!(groups.contains(&json!(g)), "{g} in {ok}");
    }
    assert_eq!(ok["audiences"], json!([ISSUER]), "{ok}");
    // Asking for the API server's audience explicitly: the same answer.
    let same = token_review(&c, &token, Some(&[ISSUER])).await;
    assert_eq!(same["authenticated"], true, "{same}");

    // A token for the API server is not one for another audience.
    let other = token_review(&c, &token, Some(&["vault"])).await;
    assert_ne!(other["authenticated"], true, "{other}");
    assert!(
        other["error"]
            .as_str()
            .is_some_and(|e| e.contains("audiences")),
        "{other}"
    );
    // A forged token (another key signed it) and garbage do not authenticate.
    let forged = {
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[2] = "AAAA";
        parts.join(".")
    };
    for bad in [forged.as_str(), "not-a-token"] {
        let st = token_review(&c, bad, None).await;
        assert_ne!(st["authenticated"], true, "{bad}: {st}");
        assert!(
            st["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{bad}: {st}"
        );
    }

    // An empty token is a bad request, as upstream.
    let out = c
        .kubectl_stdin(
            &["create", "--validate=false", "-f", "-"],
            Some(r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":""}}"#),
        )
        .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("token is required for TokenReview in authentication"),
        "{stderr}"
    );

    // Only admins and nodes may review tokens: a service account may not.
    let sa = c.client_for("sa", &Credential::Token(token.clone())).await;
    let reviews: Api<k8s_openapi::api::authentication::v1::TokenReview> = Api::all(sa);
    let denied = reviews
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"spec": {"token": token}})).expect("TokenReview"),
        )
        .await
        .expect_err("a service account may not review tokens");
    match denied {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 403, "{e:?}");
            assert!(
                e.message
                    .contains("cannot create resource \"tokenreviews\""),
                "{e:?}"
            );
        }
        e => panic!("expected 403, got {e:?}"),
    }
}

/// The pod's JSON, as stored.
async fn pod_json(c: &Cluster, name: &str) -> Value {
    serde_json::from_str(&c.ok(&["get", "pod", name, "-o", "json"]).await).expect("pod JSON")
}

/// The `kube-api-access-*` volumes of a pod and where its first container mounts them.
fn api_access(pod: &Value) -> (Vec<Value>, Vec<Value>) {
    let volumes: Vec<Value> = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| {
            v["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("kube-api-access-"))
        })
        .cloned()
        .collect();
    let mounts: Vec<Value> = pod["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount")
        .cloned()
        .collect();
    (volumes, mounts)
}

/// The ServiceAccount admission plugin and the root CA publisher, as in-cluster clients need
/// them: every pod runs as a ServiceAccount that exists (`default` unless named) and gets the
/// projected `kube-api-access-*` volume (bound token, `ca.crt` from `kube-root-ca.crt`,
/// namespace) at /var/run/secrets/kubernetes.io/serviceaccount unless it opts out;
/// `kube-root-ca.crt` holds the cluster CA in every namespace and is put back when removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_their_service_account_and_the_api_access_volume() {
    let c = start().await;
    // Straight after start: a missing `default` is made by the admission itself.
    c.ok(&["run", "p", "--image=busybox", "--restart=Never"])
        .await;
    let pod = pod_json(&c, "p").await;
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    assert_eq!(pod["spec"]["serviceAccount"], "default");
    let (volumes, mounts) = api_access(&pod);
    assert_eq!(volumes.len(), 1, "{pod}");
    let name = volumes[0]["name"].as_str().expect("name");
    assert_eq!(name.len(), "kube-api-access-".len() + 5);
    assert_eq!(
        volumes[0]["projected"],
        json!({"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
        ]})
    );
    assert_eq!(
        mounts,
        vec![
            json!({"name": name, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
        ]
    );

    // kube-root-ca.crt: the cluster CA, in every namespace, put back when deleted or edited.
    let ca = c.handle.ca_pem().to_string();
    let root_ca = |ns: &'static str| {
        let c = &c;
        let ca = ca.clone();
        async move {
            eventually(
                &format!("kube-root-ca.crt in {ns}"),
                Duration::from_secs(20),
                || async {
                    let o = c
                        .kubectl(&["-n", ns, "get", "cm", "kube-root-ca.crt", "-o", "json"])
                        .await;
                    let cm: Value = serde_json::from_slice(&o.stdout).ok()?;
                    (cm["data"]["ca.crt"] == ca.as_str()).then_some(cm)
                },
            )
            .await
        }
    };
    let cm = root_ca("default").await;
    assert!(cm["metadata"]["annotations"]["kubernetes.io/description"]
        .as_str()
        .is_some_and(|d| d.contains("verify the kube-apiserver")));
    c.ok(&["create", "namespace", "apps"]).await;
    root_ca("apps").await;
    c.ok(&["-n", "apps", "delete", "cm", "kube-root-ca.crt"])
        .await;
    root_ca("apps").await;
    c.ok(&[
        "-n",
        "apps",
        "patch",
        "cm",
        "kube-root-ca.crt",
        "-p",
        r#"{"data":{"ca.crt":"forged"}}"#,
    ])
    .await;
    root_ca("apps").await;
    // A pod in a namespace made a moment ago (its `default` comes from the controller).
    c.ok(&["-n", "apps", "run", "q", "--image=busybox"]).await;

    // A ServiceAccount that does not exist: refused in upstream's words.
    let out = c
        .kubectl(&[
            "run",
            "r",
            "--image=busybox",
            "--overrides",
            r#"{"spec":{"serviceAccountName":"missing"}}"#,
        ])
        .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert_eq!(
        stderr.trim(),
        r#"Error from server (Forbidden): pods "r" is forbidden: error looking up service account default/missing: serviceaccount "missing" not found"#
    );

    // Opting out: on the ServiceAccount, overridden by the pod; a container that mounts
    // something of its own there keeps it.
    c.apply_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1
kind: ServiceAccount
metadata: {name: quiet}
automountServiceAccountToken: false
---
apiVersion: v1
kind: Pod
metadata: {name: no-token}
spec:
  serviceAccountName: quiet
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: wants-token}
spec:
  serviceAccountName: quiet
  automountServiceAccountToken: true
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: own-mount}
spec:
  volumes: [{name: mine, emptyDir: {}}]
  containers:
  - name: c
    image: busybox
    volumeMounts: [{name: mine, mountPath: /var/run/secrets/kubernetes.io/serviceaccount}]
",
    )
    .await;
    let (v, m) = api_access(&pod_json(&c, "no-token").await);
    assert!(v.is_empty() && m.is_empty());
    let (v, m) = api_access(&pod_json(&c, "wants-token").await);
    assert_eq!((v.len(), m.len()), (1, 1));
    let own = pod_json(&c, "own-mount").await;
    let (v, m) = api_access(&own);
    assert!(v.is_empty(), "{own}");
    assert_eq!(
        m,
        vec![json!({"name": "mine", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})]
    );
}
