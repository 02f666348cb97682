//! `nodes/NAME/proxy/...` judged by the real kubectl (`get --raw`, `create --raw`): passed on
//! to a stand-in kubelet (healthz, stats/summary, method, query and body; the client's
//! credentials not passed on; a node whose name starts with `proxy`), `NAME:PORT`,
//! discovery's `nodes/proxy`, RBAC (a user without `nodes/proxy` gets upstream's 403, a
//! `get` grant does not allow POST, a node may not proxy even to itself) and upstream's
//! errors for an unreachable kubelet, a node without addresses and a node that does not
//! exist. Also the Node authorizer's graph: a node's access to a Secret follows its pods'
//! references at once.

use rktup_controlplane::pki::Credential;
use rktup_testkit::controlplane::*;
use serde_json::Value;
use std::process::Output;

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_proxy_reaches_the_kubelet() {
    let c = start().await;
    let port = fake_kubelet().await;
    let _n = fake_node(&c, "proxy-px", port).await;

    let health = c
        .ok(&["get", "--raw", "/api/v1/nodes/proxy-px/proxy/healthz"])
        .await;
    assert_eq!(health, "ok");
    let summary: Value = serde_json::from_str(
        &c.ok(&["get", "--raw", "/api/v1/nodes/proxy-px/proxy/stats/summary"])
            .await,
    )
    .expect("stats/summary is JSON");
    assert_eq!(summary["node"]["nodeName"], "fake");

    // The path below /proxy and the query go through; with the kubelet's port named.
    let echo = c
        .ok(&[
            "get",
            "--raw",
            &format!("/api/v1/nodes/proxy-px:{port}/proxy/echo?a=1&b=two"),
        ])
        .await;
    assert_eq!(echo, "GET /echo?a=1&b=two authorization=false body=");
    // POST with its body.
    let posted = c
        .kubectl_stdin(
            &[
                "create",
                "--raw",
                "/api/v1/nodes/proxy-px/proxy/echo",
                "-f",
                "-",
            ],
            Some("{\"hello\": \"kubelet\"}"),
        )
        .await;
    assert!(posted.status.success(), "{}", err(&posted));
    assert!(
        out(&posted).starts_with("POST /echo authorization=false body="),
        "{}",
        out(&posted)
    );
    assert!(out(&posted).contains("kubelet"), "{}", out(&posted));
    // The kubelet's 404 comes back as a failure.
    let missing = c
        .kubectl(&["get", "--raw", "/api/v1/nodes/proxy-px/proxy/nope"])
        .await;
    assert!(!missing.status.success(), "{}", out(&missing));

    // Discovery lists the subresource with upstream's verbs.
    let core: Value =
        serde_json::from_str(&c.ok(&["get", "--raw", "/api/v1"]).await).expect("discovery");
    let proxy = core["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "nodes/proxy")
        .expect("nodes/proxy in discovery")
        .clone();
    assert_eq!(proxy["kind"], "NodeProxyOptions");
    assert_eq!(
        proxy["verbs"],
        serde_json::json!(["create", "delete", "get", "patch", "update"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_proxy_is_authorized_as_nodes_proxy() {
    let c = start().await;
    let port = fake_kubelet().await;
    let _n = fake_node(&c, "pxa-node", port).await;
    c.ok(&["create", "namespace", "pxa"]).await;
    c.ok(&["create", "serviceaccount", "reader", "-n", "pxa"])
        .await;
    let token = c
        .ok(&["create", "token", "reader", "-n", "pxa"])
        .await
        .trim()
        .to_string();
    let cred = Credential::Token(token);
    let user = "system:serviceaccount:pxa:reader";
    let path = "/api/v1/nodes/pxa-node/proxy/healthz";

    let denied = c
        .kubectl_as("pxa-reader", &cred, &["get", "--raw", path])
        .await;
    assert!(!denied.status.success(), "{}", out(&denied));
    assert!(
        err(&denied).contains(&format!(
            "nodes \"pxa-node\" is forbidden: User \"{user}\" cannot get resource \"nodes/proxy\" in API group \"\" at the cluster scope"
        )),
        "{}",
        err(&denied)
    );

    // Granted `get` on nodes/proxy: GET goes through (the token stays with the API server),
    // POST is still refused as `create`.
    c.ok(&[
        "create",
        "clusterrole",
        "pxa-node-proxy-get",
        "--verb=get",
        "--resource=nodes/proxy",
    ])
    .await;
    c.ok(&[
        "create",
        "clusterrolebinding",
        "pxa-node-proxy-get",
        "--clusterrole=pxa-node-proxy-get",
        "--serviceaccount=pxa:reader",
    ])
    .await;
    let allowed = c
        .kubectl_as("pxa-reader", &cred, &["get", "--raw", path])
        .await;
    assert!(allowed.status.success(), "{}", err(&allowed));
    assert_eq!(out(&allowed), "ok");
    let echo = c
        .kubectl_as(
            "pxa-reader",
            &cred,
            &["get", "--raw", "/api/v1/nodes/pxa-node/proxy/echo"],
        )
        .await;
    assert_eq!(
        out(&echo),
        "GET /echo authorization=false body=",
        "{}",
        err(&echo)
    );
    let post = c
        .kubectl_as(
            "pxa-reader",
            &cred,
            &[
                "create",
                "--raw",
                "/api/v1/nodes/pxa-node/proxy/echo",
                "-f",
                "/dev/null",
            ],
        )
        .await;
    assert!(!post.status.success(), "{}", out(&post));
    assert!(
        err(&post).contains("cannot create resource \"nodes/proxy\""),
        "{}",
        err(&post)
    );

    // A node may not use the kubelet port through the API server, not even its own.
    let node_token = c.handle.mint_node_token("pxa-node").expect("node token");
    let as_node = c
        .kubectl_as(
            "pxa-node",
            &Credential::Token(node_token),
            &["get", "--raw", path],
        )
        .await;
    assert!(!as_node.status.success(), "{}", out(&as_node));
    assert!(
        err(&as_node).contains("cannot get resource \"nodes/proxy\""),
        "{}",
        err(&as_node)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_proxy_errors_as_upstream() {
    let c = start().await;
    // A kubelet port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let _n = fake_node(&c, "pxe-down", closed).await;
    let down = c
        .kubectl(&["get", "--raw", "/api/v1/nodes/pxe-down/proxy/healthz"])
        .await;
    assert!(!down.status.success(), "{}", out(&down));
    assert!(
        err(&down).contains(&format!(
            "error trying to reach service: dial tcp 127.0.0.1:{closed}: connect: connection refused"
        )),
        "{}",
        err(&down)
    );

    // A node that reports no address.
    c.apply_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: pxe-bare\n",
    )
    .await;
    let bare = c
        .kubectl(&["get", "--raw", "/api/v1/nodes/pxe-bare/proxy/healthz"])
        .await;
    assert!(
        err(&bare).contains("no preferred addresses found; known addresses: []"),
        "{}",
        err(&bare)
    );

    let ghost = c
        .kubectl(&["get", "--raw", "/api/v1/nodes/pxe-ghost/proxy/healthz"])
        .await;
    assert!(
        err(&ghost).contains("nodes \"pxe-ghost\" not found"),
        "{}",
        err(&ghost)
    );
    let bad = c
        .kubectl(&["get", "--raw", "/api/v1/nodes/ftp:pxe-bare:21/proxy/"])
        .await;
    assert!(err(&bad).contains("invalid node request"), "{}", err(&bad));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_secret_access_follows_its_pods_at_once() {
    use k8s_openapi::api::core::v1::Secret;
    let c = start().await;
    let _n = fake_node(&c, "pxg-node", 10250).await;
    c.ok(&["create", "namespace", "pxg"]).await;
    for s in ["s1", "s2"] {
        c.ok(&[
            "create",
            "secret",
            "generic",
            s,
            "-n",
            "pxg",
            "--from-literal=k=v",
        ])
        .await;
    }
    let pod = |name: &str, secret: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: pxg\nspec:\n  nodeName: pxg-node\n  containers:\n  - name: c\n    image: busybox\n    envFrom:\n    - secretRef:\n        name: {secret}\n"
        )
    };
    let secrets: kube::Api<Secret> = kube::Api::namespaced(c.node_client("pxg-node").await, "pxg");
    let can_read = |name: &'static str| {
        let secrets = secrets.clone();
        async move {
            match secrets.get(name).await {
                Ok(_) => true,
                Err(kube::Error::Api(e)) if e.code == 403 => {
                    assert!(
                        e.message.contains(
                            "no relationship found between node 'pxg-node' and this object"
                        ),
                        "{}",
                        e.message
                    );
                    false
                }
                Err(e) => panic!("{name}: {e}"),
            }
        }
    };
    assert!(!can_read("s1").await);
    c.apply_stdin(&["create", "-f", "-"], &pod("p1", "s1"))
        .await;
    assert!(
        can_read("s1").await,
        "the pod's secret, right after the pod"
    );
    assert!(!can_read("s2").await);
    // The pod goes and another references the other secret: access follows with no delay.
    c.ok(&[
        "delete",
        "pod",
        "p1",
        "-n",
        "pxg",
        "--grace-period=0",
        "--force",
    ])
    .await;
    c.apply_stdin(&["create", "-f", "-"], &pod("p2", "s2"))
        .await;
    assert!(
        !can_read("s1").await,
        "no pod of the node references s1 any more"
    );
    assert!(can_read("s2").await);
    // Another node's pod gives this node nothing.
    c.apply_stdin(
        &["create", "-f", "-"],
        &pod("p3", "s1").replace("nodeName: pxg-node", "nodeName: pxg-other"),
    )
    .await;
    assert!(!can_read("s1").await);
}
