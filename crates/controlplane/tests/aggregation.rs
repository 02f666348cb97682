//! Aggregated APIs (issue 17 §3) with the real kubectl: APIService availability (`Local`,
//! `ServiceNotFound`, `EndpointsNotFound`, `MissingEndpoints`, `FailedDiscoveryCheck`,
//! `Passed`), requests proxied to a test aggregated API server that trusts only the front
//! proxy (client certificate from `requestheader-client-ca-file`, CN in
//! `requestheader-allowed-names`, read from `kube-system/extension-apiserver-authentication`)
//! and authorizes the `X-Remote-User`/`X-Remote-Group` it is told about with
//! SubjectAccessReviews; discovery (`/apis`, `/apis/metrics.k8s.io`, `kubectl api-resources`),
//! `kubectl top nodes|pods`, a user without RBAC refused by the backend, 503 once the backend
//! is down, and the group gone with its APIService.
//!
//! The test kit's server (`rktup_testkit::controlplane::metrics_apiserver`) serves
//! metrics.k8s.io/v1beta1 as metrics-server does (APIResourceList, NodeMetrics and PodMetrics
//! lists and gets). Its numbers are fixed here: the stand-in nodes of this suite have no
//! cgroups to read (the agent's `/metrics/resource` is exercised with real nodes elsewhere).

use base64::Engine;
use rktup_controlplane::pki::Credential;
use rktup_testkit::controlplane::*;
use rktup_testkit::free_port;
use serde_json::Value;
use std::process::Output;
use std::time::Duration;

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

use rktup_testkit::controlplane::metrics_apiserver;

/// `.status.conditions[Available]` as "STATUS REASON: MESSAGE".
async fn availability(c: &Cluster, name: &str) -> String {
    let o = c.kubectl(&["get", "apiservice", name, "-o", "json"]).await;
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    v.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Available"))
        .map(|c| {
            format!(
                "{} {}: {}",
                c["status"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            )
        })
        .unwrap_or_default()
}

/// Waits until the APIService's condition starts with `want` ("False MissingEndpoints").
async fn wait_available(c: &Cluster, name: &str, want: &str) -> String {
    let mut last = String::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            last = availability(c, name).await;
            if last.starts_with(want) {
                return last.clone();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("APIService {name}: want {want:?}, last {last:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_apiservices_are_registered_and_available() {
    let c = start().await;
    for name in [
        "v1.",
        "v1.apps",
        "v1.authentication.k8s.io",
        "v1.apiregistration.k8s.io",
    ] {
        let got = wait_available(&c, name, "True Local").await;
        assert_eq!(got, "True Local: Local APIServices are always available");
    }
    let v: Value =
        serde_json::from_str(&c.ok_line("get apiservice v1.apps -o json").await).expect("json");
    assert_eq!(v["spec"]["groupPriorityMinimum"], 17800);
    assert_eq!(v["spec"]["versionPriority"], 15);
    assert_eq!(
        v["metadata"]["labels"]["kube-aggregator.kubernetes.io/automanaged"],
        "onstart"
    );
    assert!(v["spec"].get("service").is_none());
    // A CRD's group versions get local APIServices (upstream's crdRegistrationController),
    // removed with the CRD.
    c.apply_stdin(
        &["apply", "-f", "-"],
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.agg.example.com
spec:
  group: agg.example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
  - name: v1beta1
    served: false
    storage: false
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
",
    )
    .await;
    let got = wait_available(&c, "v1.agg.example.com", "True Local").await;
    assert_eq!(got, "True Local: Local APIServices are always available");
    let v: Value =
        serde_json::from_str(&c.ok_line("get apiservice v1.agg.example.com -o json").await)
            .expect("json");
    assert_eq!(v["spec"]["groupPriorityMinimum"], 1000);
    assert_eq!(v["spec"]["versionPriority"], 100);
    assert_eq!(
        v["metadata"]["labels"]["kube-aggregator.kubernetes.io/automanaged"],
        "true"
    );
    let o = c
        .kubectl(&["get", "apiservice", "v1beta1.agg.example.com"])
        .await;
    assert!(err(&o).contains("NotFound"), "not served: {}", err(&o));
    c.ok_line("delete crd widgets.agg.example.com").await;
    eventually(
        "the CRD's APIService to go",
        Duration::from_secs(30),
        || async {
            let o = c
                .kubectl(&["get", "apiservice", "v1.agg.example.com"])
                .await;
            err(&o).contains("NotFound").then_some(())
        },
    )
    .await;
    // The RBAC role aggregated servers are bound to, to read the ConfigMap.
    c.ok_line("get role extension-apiserver-authentication-reader -n kube-system")
        .await;
    c.handle.shutdown().await;
}

const APISERVICE: &str = "v1beta1.metrics.k8s.io";

fn apiservice_yaml(ca_pem: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: {APISERVICE}
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  caBundle: {b64}
  service:
    name: metrics-server
    namespace: kube-system
    port: 443
"
    )
}

fn slice_yaml(port: u16, ready: bool) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: metrics-server-manual
  namespace: kube-system
  labels:
    kubernetes.io/service-name: metrics-server
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: {ready}}}
ports:
- name: https
  port: {port}
  protocol: TCP
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aggregated_metrics_api_end_to_end() {
    let c = start().await;
    let _node = fake_node(&c, "agg-node-1", fake_kubelet().await).await;
    let backend = metrics_apiserver::start(
        c.admin().await,
        "metrics-server.kube-system.svc",
        0,
        metrics_apiserver::Usage::Fixed,
    )
    .await;

    // Registered before its Service exists.
    c.apply_stdin(&["apply", "-f", "-"], &apiservice_yaml(&backend.ca_pem))
        .await;
    let got = wait_available(&c, APISERVICE, "False ServiceNotFound").await;
    assert_eq!(
        got,
        "False ServiceNotFound: service/metrics-server in \"kube-system\" is not present"
    );
    // Not available: 503 with upstream's text, the backend never called.
    let o = c
        .kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"])
        .await;
    assert!(!o.status.success());
    assert!(
        err(&o).contains("ServiceUnavailable") || err(&o).contains("service unavailable"),
        "{}",
        err(&o)
    );

    // A selector-less Service: its endpoints are the slice written below.
    c.apply_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1
kind: Service
metadata:
  name: metrics-server
  namespace: kube-system
spec:
  ports:
  - name: https
    port: 443
    targetPort: 4443
",
    )
    .await;
    let got = wait_available(&c, APISERVICE, "False EndpointsNotFound").await;
    assert_eq!(
        got,
        "False EndpointsNotFound: cannot find endpointslices for service/metrics-server in \"kube-system\""
    );
    let dead = free_port();
    // Created, then replaced (PUT): the slice's ports are an atomic list.
    c.apply_stdin(&["create", "-f", "-"], &slice_yaml(dead, false))
        .await;
    let got = wait_available(&c, APISERVICE, "False MissingEndpoints").await;
    assert_eq!(
        got,
        "False MissingEndpoints: endpointslices for service/metrics-server in \"kube-system\" have no addresses with port name \"https\""
    );
    // kubectl's columns (upstream's printer): the Service and `False (REASON)`.
    let table = c.ok_line(&format!("get apiservice {APISERVICE}")).await;
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(
        row[..4],
        [
            APISERVICE,
            "kube-system/metrics-server",
            "False",
            "(MissingEndpoints)"
        ],
        "{table}"
    );
    // Ready, but nothing listens there.
    c.apply_stdin(&["replace", "-f", "-"], &slice_yaml(dead, true))
        .await;
    let got = wait_available(&c, APISERVICE, "False FailedDiscoveryCheck").await;
    assert!(
        got.contains(&format!(
            "failing or missing response from https://127.0.0.1:{dead}/apis/metrics.k8s.io/v1beta1"
        )),
        "{got}"
    );
    // The backend.
    c.apply_stdin(&["replace", "-f", "-"], &slice_yaml(backend.port, true))
        .await;
    let got = wait_available(&c, APISERVICE, "True Passed").await;
    assert_eq!(got, "True Passed: all checks passed");
    {
        let seen = backend.seen.lock().expect("seen").clone();
        let check = seen
            .iter()
            .find(|s| s.path == "/apis/metrics.k8s.io/v1beta1")
            .expect("the discovery check reached the backend");
        assert_eq!(check.client_cn, "front-proxy-client");
        assert_eq!(check.user, "system:kube-aggregator");
        assert_eq!(check.groups, vec!["system:masters".to_string()]);
    }
    let table = c.ok_line(&format!("get apiservice {APISERVICE}")).await;
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().nth(2) == Some("True")),
        "{table}"
    );

    // Proxied as the caller, with the front proxy's certificate and headers only.
    let raw = c
        .ok_line("get --raw /apis/metrics.k8s.io/v1beta1/nodes")
        .await;
    let list: Value = serde_json::from_str(&raw).expect("json");
    assert_eq!(list["kind"], "NodeMetricsList");
    assert_eq!(list["items"][0]["metadata"]["name"], "agg-node-1");
    {
        let seen = backend.seen.lock().expect("seen").clone();
        let call = seen
            .iter()
            .rev()
            .find(|s| s.path == "/apis/metrics.k8s.io/v1beta1/nodes")
            .expect("proxied");
        assert_eq!(call.client_cn, "front-proxy-client");
        assert_eq!(call.user, "kubernetes-admin");
        assert_eq!(
            call.groups,
            vec![
                "system:masters".to_string(),
                "system:authenticated".to_string()
            ]
        );
        assert!(!call.credentials_leaked, "{call:?}");
    }
    // Impersonation: the backend is told about the impersonated user (who may not list).
    let o = c
        .kubectl(&[
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/nodes",
            "--as=bob",
        ])
        .await;
    assert!(!o.status.success());
    assert!(
        err(&o).contains("nodes.metrics.k8s.io is forbidden: User \"bob\" cannot list resource \"nodes\" in API group \"metrics.k8s.io\" at the cluster scope"),
        "{}",
        err(&o)
    );
    {
        let seen = backend.seen.lock().expect("seen").clone();
        let last = seen.last().expect("seen");
        assert_eq!(last.user, "bob");
        assert!(!last.credentials_leaked, "{last:?}");
    }

    // Discovery: the legacy group list, the group, and the aggregated form via kubectl.
    let apis: Value = serde_json::from_str(&c.ok_line("get --raw /apis").await).expect("json");
    let group = apis["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["name"] == "metrics.k8s.io"))
        .expect("metrics.k8s.io in /apis");
    assert_eq!(
        group["preferredVersion"]["groupVersion"],
        "metrics.k8s.io/v1beta1"
    );
    let g: Value =
        serde_json::from_str(&c.ok_line("get --raw /apis/metrics.k8s.io").await).expect("json");
    assert_eq!(g["kind"], "APIGroup");
    let resources = c.ok_line("api-resources --api-group=metrics.k8s.io").await;
    let rows: Vec<Vec<&str>> = resources
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["nodes", "metrics.k8s.io/v1beta1", "false", "NodeMetrics"],
            vec!["pods", "metrics.k8s.io/v1beta1", "true", "PodMetrics"],
        ],
        "{resources}"
    );

    // kubectl top, from the backend's numbers and the node's allocatable (4 CPUs, 8Gi).
    let top = c.ok_line("top nodes").await;
    let row: Vec<&str> = top
        .lines()
        .find(|l| l.starts_with("agg-node-1"))
        .expect("node row")
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        vec!["agg-node-1", "250m", "6%", "1024Mi", "12%"],
        "{top}"
    );
    c.ok_line("create namespace topns").await;
    c.ok_line("run web -n topns --image=busybox").await;
    let top = eventually("kubectl top pods", Duration::from_secs(30), || async {
        let o = c.kubectl(&["top", "pods", "-n", "topns"]).await;
        let text = out(&o);
        text.contains("web").then_some(text)
    })
    .await;
    let row: Vec<&str> = top
        .lines()
        .find(|l| l.starts_with("web"))
        .expect("pod row")
        .split_whitespace()
        .collect();
    assert_eq!(row, vec!["web", "5m", "10Mi"], "{top}");

    // A user with no grant is refused by the backend (its SubjectAccessReview), then allowed
    // once RBAC lets them.
    let alice = Credential::Cert(
        c.handle
            .issue_client_cert("alice", &["devs"])
            .expect("cert"),
    );
    let o = c.kubectl_as("alice", &alice, &["top", "nodes"]).await;
    assert!(!o.status.success());
    assert!(
        err(&o).contains(
            "User \"alice\" cannot list resource \"nodes\" in API group \"metrics.k8s.io\""
        ),
        "{}",
        err(&o)
    );
    c.ok_line(
        "create clusterrole metrics-reader --verb=get,list --resource=nodes.metrics.k8s.io,nodes",
    )
    .await;
    c.ok_line("create clusterrolebinding alice-metrics --clusterrole=metrics-reader --user=alice")
        .await;
    let o = c.kubectl_as("alice", &alice, &["top", "nodes"]).await;
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("agg-node-1"), "{}", out(&o));
    {
        let seen = backend.seen.lock().expect("seen").clone();
        let last = seen.last().expect("seen");
        assert_eq!(last.user, "alice");
        assert_eq!(
            last.groups,
            vec!["devs".to_string(), "system:authenticated".to_string()]
        );
    }
    // Callers that fail authentication never reach the backend.
    let before = backend.seen.lock().expect("seen").len();
    let o = c
        .kubectl_as(
            "nobody",
            &Credential::Token("not-a-token".into()),
            &["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"],
        )
        .await;
    assert!(err(&o).contains("Unauthorized"), "{}", err(&o));
    assert_eq!(backend.seen.lock().expect("seen").len(), before);

    // The backend goes away: the next check marks the APIService unavailable and calls answer
    // 503.
    backend.stop();
    let got = wait_available(&c, APISERVICE, "False FailedDiscoveryCheck").await;
    assert!(got.contains("failing or missing response"), "{got}");
    let o = c
        .kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"])
        .await;
    assert!(!o.status.success());
    assert!(
        err(&o).contains("the server is currently unable to handle the request")
            || err(&o).contains("service unavailable"),
        "{}",
        err(&o)
    );

    // Deleted: the group leaves discovery and its paths are the API server's again (404).
    c.ok_line(&format!("delete apiservice {APISERVICE}")).await;
    let apis = c.ok_line("get --raw /apis").await;
    assert!(!apis.contains("metrics.k8s.io"), "{apis}");
    let o = c
        .kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"])
        .await;
    assert!(err(&o).contains("NotFound"), "{}", err(&o));
    c.handle.shutdown().await;
}
