//! Services as kube-apiserver and kube-controller-manager serve them
//! (issue 14 §1, control-plane part): EndpointSlices (`discovery.k8s.io/v1`)
//! written by the EndpointSlice controller and by EndpointSlice mirroring,
//! read with kube-rs and the real kubectl; ClusterIP/NodePort allocation;
//! LoadBalancer addresses from a pool (or pending with a Warning event);
//! the `kube-system/kube-dns` Service.

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use rktup_controlplane::ControlPlane;
use rktup_testkit::controlplane::{eventually, fake_node, start, Cluster};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

async fn start_with(f: impl FnOnce(ControlPlane) -> ControlPlane) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let builder = ControlPlane::builder()
        .data_dir(dir.path())
        .bind("127.0.0.1:0".parse().expect("addr"))
        .node_monitor_grace(Duration::from_secs(30));
    let handle = f(builder).start().await.expect("control plane starts");
    Cluster { handle, dir }
}

async fn create_ns(c: &Cluster, ns: &str) {
    c.ok(&["create", "namespace", ns]).await;
}

fn pod(name: &str, node: &str, labels: Value, extra_spec: Value, finalizers: &[&str]) -> Pod {
    let mut spec = json!({
        "nodeName": node,
        "containers": [{"name": "web", "image": "nginx:1.27", "ports": [
            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
            {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
        ]}],
    });
    if let (Some(s), Some(x)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in x {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels, "finalizers": finalizers},
        "spec": spec,
    }))
    .expect("pod")
}

fn svc(value: Value) -> Service {
    serde_json::from_value(value).expect("service")
}

/// The slices the EndpointSlice controller keeps for `svc`, as JSON.
async fn slices_of(api: &Api<EndpointSlice>, svc: &str) -> Vec<Value> {
    let lp = ListParams::default().labels(&format!(
        "kubernetes.io/service-name={svc},endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io"
    ));
    api.list(&lp)
        .await
        .expect("list slices")
        .items
        .into_iter()
        .map(|s| serde_json::to_value(s).expect("json"))
        .collect()
}

/// Every endpoint of the slices, keyed by pod name.
fn endpoints_by_pod(slices: &[Value]) -> std::collections::BTreeMap<String, Value> {
    slices
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| (e["targetRef"]["name"].as_str().unwrap_or("").to_string(), e))
        .collect()
}

async fn set_ready(pods: &Api<Pod>, name: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": [
            {"type": "Ready", "status": status, "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "ContainersReady", "status": status, "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ]}})),
    )
    .await
    .expect("patch pod status");
}

/// A cluster with a stand-in node and namespace `ns`, and the APIs the
/// endpoint tests use there.
struct NsFixture {
    c: Cluster,
    _node: tokio::task::JoinHandle<()>,
    client: kube::Client,
    pods: Api<Pod>,
    services: Api<Service>,
    slices: Api<EndpointSlice>,
}

async fn ns_fixture(node: &str, ns: &str) -> NsFixture {
    let c = start().await;
    let _node = fake_node(&c, node, 10250).await;
    create_ns(&c, ns).await;
    let client = c.admin().await;
    NsFixture {
        pods: Api::namespaced(client.clone(), ns),
        services: Api::namespaced(client.clone(), ns),
        slices: Api::namespaced(client.clone(), ns),
        c,
        _node,
        client,
    }
}

async fn create_svc(services: &Api<Service>, value: Value) -> Service {
    services
        .create(&PostParams::default(), &svc(value))
        .await
        .expect("create service")
}

async fn create_pod(pods: &Api<Pod>, pod: Pod) {
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
}

/// Waits until the endpoint of `pod` in `svc`'s slices has `conditions`.
async fn wait_conditions(
    what: &str,
    slices: &Api<EndpointSlice>,
    svc: &str,
    pod: &str,
    conditions: Value,
) {
    eventually(what, WAIT, || async {
        let eps = endpoints_by_pod(&slices_of(slices, svc).await);
        (eps.get(pod)?["conditions"] == conditions).then_some(())
    })
    .await;
}

/// `kubectl patch svc <name>` to another type.
async fn set_type(c: &Cluster, name: &str, ty: &str) {
    let patch = json!({"spec": {"type": ty}}).to_string();
    c.ok(&["patch", "svc", name, "-p", &patch]).await;
}

/// Slices appear, change and go as pods come, become ready, terminate and
/// go; named targetPorts resolve per pod; the Service owns its slices;
/// nothing is rewritten while nothing changes; a kube-rs watch sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpointslices_follow_pods() {
    // The cluster and the node are bound: dropped, they would stop.
    let NsFixture {
        c: _c,
        _node,
        pods,
        services,
        slices,
        ..
    } = ns_fixture("svc-node-a", "eps").await;

    let created = create_svc(
        &services,
        json!({
            "metadata": {"name": "web", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
            ]},
        }),
    )
    .await;
    let svc_uid = created.metadata.uid.clone().expect("uid");

    // No pods yet: one placeholder slice, no ports, no endpoints.
    let placeholder = eventually("placeholder slice", WAIT, || async {
        let s = slices_of(&slices, "web").await;
        (s.len() == 1).then(|| s[0].clone())
    })
    .await;
    assert_eq!(placeholder["addressType"], "IPv4");
    assert!(placeholder["endpoints"]
        .as_array()
        .is_none_or(|a| a.is_empty()));
    assert!(placeholder["ports"].as_array().is_none_or(|a| a.is_empty()));
    let name = placeholder["metadata"]["name"].as_str().expect("name");
    assert!(
        name.starts_with("web-") && name.len() == "web-".len() + 5,
        "{name}"
    );
    assert_eq!(placeholder["metadata"]["generateName"], "web-");
    assert_eq!(placeholder["metadata"]["labels"]["tier"], "front");
    let owner = &placeholder["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Service");
    assert_eq!(owner["uid"], svc_uid.as_str());
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["blockOwnerDeletion"], true);

    // A watch from now on sees the slice change.
    let rv = slices
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let mut watch = Box::pin(
        slices
            .watch(&WatchParams::default().timeout(20), &rv)
            .await
            .expect("watch"),
    );

    for n in ["web-a", "web-b"] {
        let held = pod(
            n,
            "svc-node-a",
            json!({"app": "web"}),
            json!({}),
            &["test.rktup.io/hold"],
        );
        create_pod(&pods, held).await;
    }
    // A pod of another app and a pod without an IP are not endpoints.
    create_pod(
        &pods,
        pod("other", "svc-node-a", json!({"app": "db"}), json!({}), &[]),
    )
    .await;

    let got = eventually("two ready endpoints", WAIT, || async {
        let s = slices_of(&slices, "web").await;
        let eps = endpoints_by_pod(&s);
        let ready = eps
            .values()
            .filter(|e| e["conditions"]["ready"] == true)
            .count();
        (s.len() == 1 && eps.len() == 2 && ready == 2).then(|| s[0].clone())
    })
    .await;
    use futures_util::StreamExt;
    let ev = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("watch event in time")
        .expect("watch stream open")
        .expect("watch event");
    assert!(
        matches!(
            ev,
            WatchEvent::Modified(_) | WatchEvent::Added(_) | WatchEvent::Deleted(_)
        ),
        "{ev:?}"
    );
    // Ports resolved from the pods' named container ports, names and
    // protocols from the Service.
    let mut ports: Vec<Value> = got["ports"].as_array().cloned().expect("ports");
    ports.sort_by_key(|p| p["port"].as_i64());
    assert_eq!(
        ports,
        vec![
            json!({"name": "dns", "port": 5353, "protocol": "UDP"}),
            json!({"name": "http", "port": 8080, "protocol": "TCP"}),
        ]
    );
    let eps = endpoints_by_pod(std::slice::from_ref(&got));
    let a = &eps["web-a"];
    let pod_a = pods.get("web-a").await.expect("pod");
    let ip_a = pod_a
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod ip");
    assert_eq!(a["addresses"], json!([ip_a]));
    assert_eq!(a["nodeName"], "svc-node-a");
    assert_eq!(a["targetRef"]["kind"], "Pod");
    assert_eq!(a["targetRef"]["namespace"], "eps");
    assert_eq!(
        a["targetRef"]["uid"],
        pod_a.metadata.uid.clone().expect("uid").as_str()
    );
    assert_eq!(
        a["conditions"],
        json!({"ready": true, "serving": true, "terminating": false})
    );

    // Nothing changes: the slice is not rewritten (no write storm), even
    // as the node heartbeats and passes run.
    let rv_before = got["metadata"]["resourceVersion"].clone();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = slices_of(&slices, "web").await;
    assert_eq!(again[0]["metadata"]["resourceVersion"], rv_before);

    // Not ready: ready and serving false.
    set_ready(&pods, "web-b", false).await;
    wait_conditions(
        "web-b not ready",
        &slices,
        "web",
        "web-b",
        json!({"ready": false, "serving": false, "terminating": false}),
    )
    .await;
    set_ready(&pods, "web-b", true).await;

    // Terminating (held by a finalizer): serving, not ready, terminating.
    pods.delete("web-a", &DeleteParams::default())
        .await
        .expect("delete");
    wait_conditions(
        "web-a terminating",
        &slices,
        "web",
        "web-a",
        json!({"ready": false, "serving": true, "terminating": true}),
    )
    .await;
    // Gone: the endpoint goes.
    for n in ["web-a", "web-b"] {
        let _ = pods
            .patch(
                n,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await;
    }
    pods.delete("web-b", &DeleteParams::default())
        .await
        .expect("delete");
    // Both gone: back to one empty slice.
    eventually("no endpoints left", WAIT, || async {
        let s = slices_of(&slices, "web").await;
        (s.len() == 1 && endpoints_by_pod(&s).is_empty()).then_some(())
    })
    .await;

    // The Service goes: its slices go with it (garbage collector).
    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete service");
    eventually("slices collected", Duration::from_secs(60), || async {
        slices_of(&slices, "web").await.is_empty().then_some(())
    })
    .await;
}

/// A headless Service lists its pods with their hostnames (spec.hostname +
/// subdomain naming the Service) and is labelled headless;
/// publishNotReadyAddresses makes not-ready pods ready endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_hostnames_and_not_ready_addresses() {
    let NsFixture {
        c: _c,
        _node,
        client,
        pods,
        services,
        slices,
    } = ns_fixture("svc-node-h", "hl").await;
    let s = create_svc(
        &services,
        json!({
            "metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "selector": {"app": "db"}, "publishNotReadyAddresses": true,
                     "ports": [{"name": "pg", "port": 5432}]},
        }),
    )
    .await;
    assert_eq!(
        s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("None")
    );
    for (name, subdomain) in [("db-0", "db"), ("db-x", "elsewhere")] {
        let p = pod(
            name,
            "svc-node-h",
            json!({"app": "db"}),
            json!({"hostname": name, "subdomain": subdomain}),
            &[],
        );
        create_pod(&pods, p).await;
    }
    let got = eventually("two endpoints", WAIT, || async {
        let s = slices_of(&slices, "db").await;
        (endpoints_by_pod(&s).len() == 2).then_some(s)
    })
    .await;
    assert_eq!(
        got[0]["metadata"]["labels"]["service.kubernetes.io/headless"],
        ""
    );
    let eps = endpoints_by_pod(&got);
    assert_eq!(eps["db-0"]["hostname"], "db-0");
    assert!(eps["db-x"].get("hostname").is_none());
    // Not ready, but published: ready stays true, serving tells the truth.
    eventually("running", WAIT, || async {
        let p = pods.get("db-0").await.ok()?;
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    set_ready(&pods, "db-0", false).await;
    wait_conditions(
        "published not-ready",
        &slices,
        "db",
        "db-0",
        json!({"ready": true, "serving": false, "terminating": false}),
    )
    .await;
    // The legacy Endpoints keep working, with the hostname, marked not to be mirrored.
    let eps_api: Api<Endpoints> = Api::namespaced(client, "hl");
    let ep = eventually("endpoints", WAIT, || async {
        let e = serde_json::to_value(eps_api.get("db").await.ok()?).ok()?;
        let n = e["subsets"][0]["addresses"].as_array().map_or(0, Vec::len);
        (n == 2).then_some(e)
    })
    .await;
    assert_eq!(
        ep["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"],
        "true"
    );
    assert!(ep["subsets"][0]["addresses"]
        .as_array()
        .expect("addresses")
        .iter()
        .any(|a| a["hostname"] == "db-0"));
}

/// Endpoints a user writes for a Service without a selector are mirrored
/// into slices (managed by the mirroring controller, owned by the
/// Endpoints), follow its changes, and go with skip-mirror.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectorless_endpoints_are_mirrored() {
    let c = start().await;
    create_ns(&c, "mirror").await;
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: external, namespace: mirror}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: external, namespace: mirror, labels: {team: a}, annotations: {note: kept}}
subsets:
- addresses: [{ip: 192.0.2.1}, {ip: 192.0.2.2}]
  notReadyAddresses: [{ip: 192.0.2.3}]
  ports: [{name: http, port: 8080}]
"#;
    c.apply_stdin(&["apply", "-f", "-"], yaml).await;
    let client = c.admin().await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "mirror");
    let lp = ListParams::default().labels(
        "kubernetes.io/service-name=external,endpointslice.kubernetes.io/managed-by=endpointslicemirroring-controller.k8s.io",
    );
    let mirrored = eventually("mirrored slice", WAIT, || async {
        let l = slices.list(&lp).await.ok()?;
        let s = serde_json::to_value(l.items.first()?).ok()?;
        (s["endpoints"].as_array().map_or(0, Vec::len) == 3).then_some(s)
    })
    .await;
    assert_eq!(mirrored["addressType"], "IPv4");
    assert_eq!(
        mirrored["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    assert_eq!(mirrored["metadata"]["labels"]["team"], "a");
    assert_eq!(mirrored["metadata"]["annotations"]["note"], "kept");
    assert_eq!(
        mirrored["metadata"]["ownerReferences"][0]["kind"],
        "Endpoints"
    );
    let ready: Vec<(String, bool)> = mirrored["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| {
            (
                e["addresses"][0].as_str().unwrap_or("").to_string(),
                e["conditions"]["ready"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert!(ready.contains(&("192.0.2.1".into(), true)));
    assert!(ready.contains(&("192.0.2.3".into(), false)));
    // The controller leaves selector-less Services alone.
    assert!(slices_of(&slices, "external").await.is_empty());

    // Changes follow.
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), "mirror");
    eps.patch(
        "external",
        &PatchParams::default(),
        &Patch::Merge(json!({"subsets": [{"addresses": [{"ip": "192.0.2.9"}], "ports": [{"name": "http", "port": 8080}]}]})),
    )
    .await
    .expect("patch endpoints");
    eventually("mirrored change", WAIT, || async {
        let l = slices.list(&lp).await.ok()?;
        let s = serde_json::to_value(l.items.first()?).ok()?;
        (s["endpoints"] == json!([{"addresses": ["192.0.2.9"], "conditions": {"ready": true}}]))
            .then_some(())
    })
    .await;
    // skip-mirror: the mirrored slice goes.
    eps.patch(
        "external",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}}}),
        ),
    )
    .await
    .expect("label");
    eventually("mirror removed", WAIT, || async {
        slices.list(&lp).await.ok()?.items.is_empty().then_some(())
    })
    .await;
}

/// `kubectl get endpointslices -A` prints upstream's columns; `kubectl
/// describe svc` lists the endpoints; bad slices are 422 with upstream's
/// field errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_endpointslices_and_describe() {
    let NsFixture { c, _node, pods, .. } = ns_fixture("svc-node-k", "kc").await;
    c.ok(&[
        "-n",
        "kc",
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp=80:8080",
    ])
    .await;
    for n in ["web-1", "web-2", "web-3", "web-4"] {
        create_pod(
            &pods,
            pod(n, "svc-node-k", json!({"app": "web"}), json!({}), &[]),
        )
        .await;
    }
    let out = eventually("four endpoints in kubectl", WAIT, || async {
        let out = c.ok(&["get", "endpointslices", "-A"]).await;
        out.lines()
            .any(|l| l.starts_with("kc ") && l.contains("+ 1 more..."))
            .then_some(out)
    })
    .await;
    let header: Vec<&str> = out
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "NAME",
            "ADDRESSTYPE",
            "PORTS",
            "ENDPOINTS",
            "AGE"
        ]
    );
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("kc "))
        .expect("row")
        .split_whitespace()
        .collect();
    assert!(row[1].starts_with("web-"), "{row:?}");
    assert_eq!(row[2], "IPv4");
    assert_eq!(row[3], "8080");
    assert!(row[4].starts_with("10.244.0."), "{row:?}");
    assert_eq!(&row[5..8], ["+", "1", "more..."]);

    // describe svc lists the endpoints (kubectl 1.32 reads the slices).
    let d = c.ok(&["-n", "kc", "describe", "svc", "web"]).await;
    let line = d
        .lines()
        .find(|l| l.starts_with("Endpoints:"))
        .unwrap_or_else(|| panic!("no Endpoints line in\n{d}"));
    assert!(
        line.contains("10.244.0.") && line.contains(":8080"),
        "{line}"
    );

    // Validation.
    let bad = r#"{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "bad", "namespace": "kc"}, "addressType": "IPv5", "endpoints": [{"addresses": ["10.0.0.1"]}]}"#;
    let out = c.kubectl_stdin(&["create", "-f", "-"], Some(bad)).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("addressType: Unsupported value: \"IPv5\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""),
        "{err}"
    );
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"addresses": [format!("10.1.{}.{}", i / 250, i % 250 + 1)]}))
        .collect();
    let big = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "big", "namespace": "kc"}, "addressType": "IPv4", "endpoints": many});
    let out = c
        .kubectl_stdin(&["create", "-f", "-"], Some(&big.to_string()))
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("endpoints: Too many: 1001: must have at most 1000 items"),
        "{err}"
    );
    // A valid hand-written slice is stored and listed.
    let ok = r#"{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "manual", "namespace": "kc"}, "addressType": "IPv4", "ports": [{"port": 80}], "endpoints": [{"addresses": ["10.9.9.9"]}]}"#;
    c.apply_stdin(&["create", "-f", "-"], ok).await;
    let out = c.ok(&["-n", "kc", "get", "endpointslice", "manual"]).await;
    assert!(
        out.contains("manual") && out.contains("10.9.9.9") && out.contains("80"),
        "{out}"
    );
    let out = c
        .ok(&["api-resources", "--api-group=discovery.k8s.io"])
        .await;
    assert!(
        out.contains("endpointslices") && out.contains("EndpointSlice"),
        "{out}"
    );
}

/// NodePort allocation as kube-apiserver's: the range (settable), a
/// requested port taken (422 with upstream's message), out of range, type
/// changes releasing and allocating, headless and ExternalName without a
/// cluster IP, healthCheckNodePort for LoadBalancer + Local,
/// allocateLoadBalancerNodePorts: false.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_allocation() {
    let c = start_with(|b| b.service_node_port_range("30000-30100")).await;
    let client = c.admin().await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let node_ports = |s: &Service| -> Vec<i32> {
        s.spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .map(|ps| ps.iter().filter_map(|p| p.node_port).collect())
            .unwrap_or_default()
    };

    c.ok(&[
        "create",
        "service",
        "nodeport",
        "first",
        "--tcp=80:8080",
        "--node-port=30080",
    ])
    .await;
    let first = services.get("first").await.expect("first");
    assert_eq!(node_ports(&first), vec![30080]);
    let spec = first.spec.clone().expect("spec");
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
    let ip: std::net::Ipv4Addr = spec
        .cluster_ip
        .as_deref()
        .expect("ip")
        .parse()
        .expect("ipv4");
    assert!(
        ip.octets()[0] == 10 && (96..112).contains(&ip.octets()[1]),
        "{ip}"
    );

    let out = c
        .kubectl(&[
            "create",
            "service",
            "nodeport",
            "second",
            "--tcp=80:8080",
            "--node-port=30080",
        ])
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"Service "second" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"#),
        "{err}"
    );
    let out = c
        .kubectl(&[
            "create",
            "service",
            "nodeport",
            "third",
            "--tcp=80:8080",
            "--node-port=32000",
        ])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.ports[0].nodePort: Invalid value: 32000: provided port is not in the valid range. The range of valid ports is 30000-30100"),
        "{err}"
    );
    // Allocated ones come from the configured range.
    c.ok(&[
        "create",
        "service",
        "nodeport",
        "auto",
        "--tcp=80:8080,443:8443",
    ])
    .await;
    let auto = services.get("auto").await.expect("auto");
    let ports = node_ports(&auto);
    assert_eq!(ports.len(), 2);
    assert!(
        ports.iter().all(|p| (30000..=30100).contains(p)) && ports[0] != ports[1],
        "{ports:?}"
    );

    // NodePort -> ClusterIP releases 30080 (and keeps the cluster IP).
    set_type(&c, "first", "ClusterIP").await;
    let first2 = services.get("first").await.expect("first");
    assert!(node_ports(&first2).is_empty());
    assert_eq!(
        first2.spec.as_ref().and_then(|s| s.cluster_ip.clone()),
        spec.cluster_ip
    );
    assert_eq!(
        first2
            .spec
            .as_ref()
            .and_then(|s| s.external_traffic_policy.clone()),
        None
    );
    c.ok(&[
        "create",
        "service",
        "nodeport",
        "second",
        "--tcp=80:8080",
        "--node-port=30080",
    ])
    .await;
    // ClusterIP -> NodePort allocates.
    set_type(&c, "first", "NodePort").await;
    let first3 = services.get("first").await.expect("first");
    let p = node_ports(&first3);
    assert!(
        p.len() == 1 && p[0] != 30080 && (30000..=30100).contains(&p[0]),
        "{p:?}"
    );
    // An update that leaves nodePort out keeps it.
    let mut s = first3.clone();
    if let Some(ps) = s.spec.as_mut().and_then(|s| s.ports.as_mut()) {
        ps[0].node_port = None;
    }
    s.metadata.managed_fields = None;
    let replaced = services
        .replace("first", &PostParams::default(), &s)
        .await
        .expect("replace");
    assert_eq!(node_ports(&replaced), p);
    // A nodePort on a ClusterIP Service is refused.
    let bad = services
        .create(
            &PostParams::default(),
            &svc(json!({"metadata": {"name": "bad"}, "spec": {"ports": [{"port": 80, "nodePort": 30090}]}})),
        )
        .await
        .expect_err("nodePort on ClusterIP");
    assert!(
        bad.to_string().contains(
            "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
        ),
        "{bad}"
    );

    // Headless: no IP; ExternalName: no cluster IP at all.
    let hl = create_svc(
        &services,
        json!({"metadata": {"name": "hl"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
    )
    .await;
    assert_eq!(
        hl.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("None")
    );
    c.ok(&[
        "create",
        "service",
        "externalname",
        "ext",
        "--external-name=example.com",
    ])
    .await;
    let ext = services.get("ext").await.expect("ext");
    let es = ext.spec.expect("spec");
    assert_eq!(es.cluster_ip, None);
    assert_eq!(es.cluster_ips, None);
    assert_eq!(es.type_.as_deref(), Some("ExternalName"));

    // LoadBalancer + Local: a healthCheckNodePort; back to Cluster drops it.
    let lb = create_svc(&services, json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}})).await;
    let ls = lb.spec.clone().expect("spec");
    let hc = ls.health_check_node_port.expect("healthCheckNodePort");
    assert!((30000..=30100).contains(&hc));
    assert_eq!(ls.allocate_load_balancer_node_ports, Some(true));
    assert_eq!(node_ports(&lb).len(), 1);
    assert!(!node_ports(&lb).contains(&hc));
    let lb2 = services
        .patch(
            "lb",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"externalTrafficPolicy": "Cluster"}})),
        )
        .await
        .expect("patch");
    assert_eq!(lb2.spec.and_then(|s| s.health_check_node_port), None);
    // allocateLoadBalancerNodePorts: false: none allocated.
    let nolb = create_svc(&services, json!({"metadata": {"name": "nolb"}, "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]}})).await;
    assert!(node_ports(&nolb).is_empty());
    // kubectl shows them.
    let out = c.ok(&["get", "svc"]).await;
    assert!(
        out.lines()
            .any(|l| l.starts_with("second ") && l.contains("80:30080/TCP")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("ext ") && l.contains("example.com")),
        "{out}"
    );
}

/// With a pool: one address per LoadBalancer Service (the requested one
/// when free and in the pool), events like the service controller's,
/// released when the type changes; an exhausted pool is a Warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_addresses_from_a_pool() {
    let c = start_with(|b| b.load_balancer_ip_range("192.0.2.10-192.0.2.11")).await;
    let client = c.admin().await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let ingress = |s: &Service| -> Vec<(String, String)> {
        s.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .map(|i| {
                i.iter()
                    .map(|x| {
                        (
                            x.ip.clone().unwrap_or_default(),
                            x.ip_mode.clone().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let get_ingress = |name: &'static str| {
        let services = services.clone();
        async move { services.get(name).await.ok().map(|s| ingress(&s)) }
    };
    create_svc(&services, json!({"metadata": {"name": "wants11"}, "spec": {"type": "LoadBalancer", "loadBalancerIP": "192.0.2.11", "ports": [{"port": 80}]}})).await;
    let got = eventually("requested address", WAIT, || async {
        get_ingress("wants11").await.filter(|i| !i.is_empty())
    })
    .await;
    assert_eq!(got, vec![("192.0.2.11".to_string(), "VIP".to_string())]);
    c.ok(&["create", "service", "loadbalancer", "web", "--tcp=80:8080"])
        .await;
    let got = eventually("pool address", WAIT, || async {
        get_ingress("web").await.filter(|i| !i.is_empty())
    })
    .await;
    assert_eq!(got, vec![("192.0.2.10".to_string(), "VIP".to_string())]);
    let out = c.ok(&["get", "svc", "web"]).await;
    assert!(out.contains("192.0.2.10"), "{out}");
    let d = c.ok(&["describe", "svc", "web"]).await;
    assert!(
        d.contains("LoadBalancer Ingress:") && d.contains("192.0.2.10"),
        "{d}"
    );
    assert!(
        d.contains("EnsuringLoadBalancer") && d.contains("EnsuredLoadBalancer"),
        "{d}"
    );

    // The pool is empty now: the third stays pending, with a Warning.
    c.ok(&[
        "create",
        "service",
        "loadbalancer",
        "third",
        "--tcp=80:8080",
    ])
    .await;
    let d = eventually("warning on the third", WAIT, || async {
        let d = c.ok(&["describe", "svc", "third"]).await;
        d.contains("SyncLoadBalancerFailed").then_some(d)
    })
    .await;
    assert!(
        d.contains("no free address left in the load balancer address range 192.0.2.10-192.0.2.11"),
        "{d}"
    );
    assert!(c.ok(&["get", "svc", "third"]).await.contains("<pending>"));

    // web -> ClusterIP releases .10 (status cleared), which the third gets.
    set_type(&c, "web", "ClusterIP").await;
    eventually("web released", WAIT, || async {
        get_ingress("web").await.filter(|i| i.is_empty())
    })
    .await;
    let got = eventually("third served", WAIT, || async {
        get_ingress("third").await.filter(|i| !i.is_empty())
    })
    .await;
    assert_eq!(got[0].0, "192.0.2.10");
    // Deleting a Service frees its address too.
    services
        .delete("wants11", &DeleteParams::default())
        .await
        .expect("delete");
    c.ok(&[
        "create",
        "service",
        "loadbalancer",
        "fourth",
        "--tcp=80:8080",
    ])
    .await;
    let got = eventually("fourth served", WAIT, || async {
        get_ingress("fourth").await.filter(|i| !i.is_empty())
    })
    .await;
    assert_eq!(got[0].0, "192.0.2.11");
}

/// Without a pool (a cloud cluster without a cloud controller manager) the
/// address stays pending and `kubectl describe svc` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_pending_without_a_pool() {
    let c = start().await;
    c.ok(&["create", "service", "loadbalancer", "web", "--tcp=80:8080"])
        .await;
    let d = eventually("pending warning", WAIT, || async {
        let d = c.ok(&["describe", "svc", "web"]).await;
        d.contains("NoLoadBalancerController").then_some(d)
    })
    .await;
    assert!(
        d.contains("Warning") && d.contains("no cloud controller manager"),
        "{d}"
    );
    assert!(!d.contains("LoadBalancer Ingress:"), "{d}");
    let out = c.ok(&["get", "svc", "web"]).await;
    assert!(out.contains("<pending>"), "{out}");
    // One warning, not one per pass.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ev = c
        .ok(&[
            "get",
            "events",
            "--field-selector",
            "reason=NoLoadBalancerController",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(ev.lines().count(), 1, "{ev}");
}

/// `loadBalancerSourceRanges` and its annotation: CIDRs only, on LoadBalancer
/// Services only, refused with kube-apiserver's paths and words (to real
/// kubectl); space padding is accepted, as upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_source_ranges_are_validated() {
    let c = start().await;
    let apply = |name: &str, ty: &str, ranges: Value, annotation: Option<&str>| {
        let mut v = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name},
            "spec": {"type": ty, "ports": [{"port": 80}], "loadBalancerSourceRanges": ranges}});
        if let Some(a) = annotation {
            v["metadata"]["annotations"] =
                json!({"service.beta.kubernetes.io/load-balancer-source-ranges": a});
        }
        v.to_string()
    };
    let refused = |out: std::process::Output| {
        assert!(!out.status.success(), "accepted: {out:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = refused(
        c.kubectl_stdin(
            &["create", "-f", "-"],
            Some(&apply(
                "bad",
                "LoadBalancer",
                json!(["10.0.0.0/8", "10.0.0.1", "300.1.2.3/8"]),
                None,
            )),
        )
        .await,
    );
    assert!(err.contains(r#"spec.LoadBalancerSourceRanges[1]: Invalid value: "10.0.0.1": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"#), "{err}");
    assert!(
        err.contains(r#"spec.LoadBalancerSourceRanges[2]: Invalid value: "300.1.2.3/8""#),
        "{err}"
    );
    assert!(!err.contains("[0]"), "{err}");
    let err = refused(
        c.kubectl_stdin(
            &["create", "-f", "-"],
            Some(&apply("notlb", "NodePort", json!(["10.0.0.0/8"]), None)),
        )
        .await,
    );
    assert!(err.contains("spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'"), "{err}");
    let err = refused(
        c.kubectl_stdin(
            &["create", "-f", "-"],
            Some(&apply(
                "annot",
                "LoadBalancer",
                Value::Null,
                Some("10.0.0.0/8, nope"),
            )),
        )
        .await,
    );
    assert!(err.contains(r#"metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]: Invalid value: "nope": must be a valid CIDR value"#), "{err}");
    // padded entries and IPv6 ranges are CIDRs; the field wins over the annotation
    c.apply_stdin(
        &["create", "-f", "-"],
        &apply(
            "good",
            "LoadBalancer",
            json!([" 192.0.2.0/24 ", "2001:db8::/64"]),
            Some("nope"),
        ),
    )
    .await;
    let got = c
        .ok(&[
            "get",
            "svc",
            "good",
            "-o",
            "jsonpath={.spec.loadBalancerSourceRanges}",
        ])
        .await;
    assert!(got.contains("192.0.2.0/24"), "{got}");
}

/// With the cluster DNS address configured, kube-system/kube-dns exists on
/// it as in kubeadm/kind clusters (no selector), and comes back if deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_dns_service() {
    let c = start_with(|b| b.cluster_dns_ip("10.96.0.10".parse().expect("ip"))).await;
    let client = c.admin().await;
    let services: Api<Service> = Api::namespaced(client, "kube-system");
    let s = serde_json::to_value(services.get("kube-dns").await.expect("kube-dns")).expect("json");
    assert_eq!(s["spec"]["clusterIP"], "10.96.0.10");
    assert_eq!(s["metadata"]["labels"]["k8s-app"], "kube-dns");
    assert_eq!(
        s["metadata"]["labels"]["kubernetes.io/cluster-service"],
        "true"
    );
    assert_eq!(s["metadata"]["labels"]["kubernetes.io/name"], "CoreDNS");
    assert!(s["spec"].get("selector").is_none(), "{s}");
    let ports: Vec<(String, i64, String)> = s["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").into(),
                p["port"].as_i64().unwrap_or(0),
                p["protocol"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        vec![
            ("dns".into(), 53, "UDP".into()),
            ("dns-tcp".into(), 53, "TCP".into()),
            ("metrics".into(), 9153, "TCP".into())
        ]
    );
    let out = c.ok(&["get", "svc", "-n", "kube-system"]).await;
    assert!(
        out.contains("kube-dns")
            && out.contains("10.96.0.10")
            && out.contains("53/UDP,53/TCP,9153/TCP"),
        "{out}"
    );
    services
        .delete("kube-dns", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("kube-dns back", WAIT, || async {
        let s = services.get("kube-dns").await.ok()?;
        (s.spec?.cluster_ip.as_deref() == Some("10.96.0.10")).then_some(())
    })
    .await;
    // The `kubernetes` Service has its slice, written by the API server
    // (named like the Service, no managed-by), as upstream's.
    let slices: Api<EndpointSlice> = Api::namespaced(c.admin().await, "default");
    let k = serde_json::to_value(slices.get("kubernetes").await.expect("kubernetes slice"))
        .expect("json");
    assert_eq!(
        k["metadata"]["labels"],
        json!({"kubernetes.io/service-name": "kubernetes"})
    );
    assert_eq!(k["endpoints"][0]["addresses"], json!(["127.0.0.1"]));
    assert_eq!(
        k["ports"],
        json!([{"name": "https", "port": c.handle.addr().port(), "protocol": "TCP"}])
    );
    // Without the option there is none.
    let c2 = start().await;
    let out = c2.ok(&["get", "svc", "-n", "kube-system"]).await;
    assert!(!out.contains("kube-dns"), "{out}");
}

/// An EndpointSlice POSTed as protobuf (what client-go controllers send) is
/// stored with its JSON form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpointslice_protobuf_body() {
    use k8s_pb::api::discovery::v1 as disc;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    use prost::Message;
    let c = start().await;
    let slice = disc::EndpointSlice {
        metadata: Some(meta::ObjectMeta {
            name: Some("pb".into()),
            labels: [("kubernetes.io/service-name".to_string(), "pb".to_string())].into(),
            ..Default::default()
        }),
        address_type: Some("IPv4".into()),
        endpoints: vec![disc::Endpoint {
            addresses: vec!["10.3.0.1".into()],
            conditions: Some(disc::EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            node_name: Some("n1".into()),
            ..Default::default()
        }],
        ports: vec![disc::EndpointPort {
            name: Some("http".into()),
            protocol: Some("TCP".into()),
            port: Some(8080),
            app_protocol: None,
        }],
    };
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("discovery.k8s.io/v1".into()),
            kind: Some("EndpointSlice".into()),
        }),
        raw: Some(slice.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());
    let req = http::Request::post("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices")
        .header("Content-Type", "application/vnd.kubernetes.protobuf")
        .header("Accept", "application/json")
        .body(body)
        .expect("request");
    let client = c.admin().await;
    client
        .request_text(req)
        .await
        .expect("created from protobuf");
    let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
    let got = serde_json::to_value(slices.get("pb").await.expect("stored")).expect("json");
    assert_eq!(got["addressType"], "IPv4");
    assert_eq!(
        got["endpoints"],
        json!([{"addresses": ["10.3.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": "n1"}])
    );
    assert_eq!(
        got["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
}

/// The seed's walk-through, control-plane half: a Deployment exposed as a
/// LoadBalancer with the real kubectl gets a pool address, a node port and
/// slices listing its pods; scaled to 0 the slices empty, scaled back they
/// fill again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expose_a_deployment_as_a_load_balancer() {
    let c = start_with(|b| b.load_balancer_ip_range("198.51.100.0/30")).await;
    let _node = fake_node(&c, "svc-node-e", 10250).await;
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--port=80",
        "--replicas=2",
    ])
    .await;
    c.ok(&[
        "expose",
        "deployment",
        "web",
        "--type=LoadBalancer",
        "--port=80",
    ])
    .await;
    let client = c.admin().await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client, "default");
    let ready_endpoints = || async {
        let s = slices_of(&slices, "web").await;
        endpoints_by_pod(&s)
            .values()
            .filter(|e| e["conditions"]["ready"] == true)
            .count()
    };
    eventually("two endpoints", Duration::from_secs(40), || async {
        (ready_endpoints().await == 2).then_some(())
    })
    .await;
    let s = slices_of(&slices, "web").await;
    assert_eq!(
        s[0]["ports"],
        json!([{"name": "", "port": 80, "protocol": "TCP"}])
    );
    let out = eventually("an external IP", WAIT, || async {
        let out = c.ok(&["get", "svc", "web"]).await;
        out.contains("198.51.100.1").then_some(out)
    })
    .await;
    let svc = services.get("web").await.expect("svc");
    let np = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p[0].node_port);
    let np = np.expect("node port");
    assert!(out.contains(&format!("80:{np}/TCP")), "{out}");

    c.ok(&["scale", "deployment", "web", "--replicas=0"]).await;
    eventually("no endpoints", Duration::from_secs(40), || async {
        let s = slices_of(&slices, "web").await;
        (s.len() == 1 && endpoints_by_pod(&s).is_empty()).then_some(())
    })
    .await;
    c.ok(&["scale", "deployment", "web", "--replicas=2"]).await;
    eventually("two endpoints again", Duration::from_secs(40), || async {
        (ready_endpoints().await == 2).then_some(())
    })
    .await;
}

/// `kubectl apply -f -` of `yaml`, its output or kubectl's error.
async fn apply(c: &Cluster, yaml: &str) -> Result<String, String> {
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(yaml)).await;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn svc_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{port: 80}}]\n{spec}"
    )
}

/// The clusterIPs and ipFamilies kubectl reads back.
async fn ips_and_families(c: &Cluster, name: &str) -> (Vec<std::net::IpAddr>, String, String) {
    let out = c
        .ok(&[
            "get",
            "svc",
            name,
            "-o",
            "jsonpath={.spec.clusterIPs[*]}|{.spec.ipFamilies[*]}|{.spec.ipFamilyPolicy}",
        ])
        .await;
    let mut parts = out.split('|');
    let ips = parts
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(|s| s.parse().expect("clusterIPs are addresses"))
        .collect();
    let fams = parts.next().unwrap_or("").to_string();
    let policy = parts.next().unwrap_or("").to_string();
    (ips, fams, policy)
}

/// A dual-stack control plane (`--service-cluster-ip-range` with an IPv4 and an IPv6 range)
/// allocates one address per family as `ipFamilyPolicy` asks, upgrades and downgrades Services
/// only as upstream allows, and the EndpointSlice controller writes one slice per family; a
/// single-stack one refuses dual-stack with kube-apiserver's words. Real kubectl throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_services() {
    let c = start_with(|b| b.service_cidr("10.96.0.0/16,fd00:10:96::/112")).await;
    let v6_range: std::net::Ipv6Addr = "fd00:10:96::".parse().expect("ip");
    let in_v6 = |ip: &std::net::IpAddr| match ip {
        std::net::IpAddr::V6(a) => a.segments()[..7] == v6_range.segments()[..7],
        _ => false,
    };

    // Single-stack stays the default.
    apply(&c, &svc_yaml("plain", "")).await.expect("plain");
    let (ips, fams, policy) = ips_and_families(&c, "plain").await;
    assert_eq!(
        (ips.len(), fams.as_str(), policy.as_str()),
        (1, "IPv4", "SingleStack")
    );

    // PreferDualStack: IPv4 (the primary range's family) then IPv6.
    apply(&c, &svc_yaml("both", "  ipFamilyPolicy: PreferDualStack\n"))
        .await
        .expect("both");
    let (ips, fams, _) = ips_and_families(&c, "both").await;
    assert_eq!(fams, "IPv4 IPv6");
    assert!(ips[0].is_ipv4() && in_v6(&ips[1]), "{ips:?}");
    let describe = c.ok(&["describe", "svc", "both"]).await;
    assert!(describe.contains("IPv4,IPv6"), "{describe}");

    // IPv6 first, by family.
    apply(
        &c,
        &svc_yaml(
            "six",
            "  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv6]\n",
        ),
    )
    .await
    .expect("six");
    let (ips, fams, _) = ips_and_families(&c, "six").await;
    assert_eq!(fams, "IPv6 IPv4");
    assert!(in_v6(&ips[0]) && ips[1].is_ipv4(), "{ips:?}");

    // An IPv6 address another Service holds is refused.
    let taken = ips[0].to_string();
    let err = apply(
        &c,
        &svc_yaml(
            "clash",
            &format!(
                "  ipFamilyPolicy: SingleStack\n  clusterIP: {taken}\n  clusterIPs: [{taken}]\n"
            ),
        ),
    )
    .await
    .expect_err("taken address");
    assert!(
        err.contains(&format!(
            "failed to allocate IP {taken}: provided IP is already allocated"
        )),
        "{err}"
    );
    let err = apply(
        &c,
        &svc_yaml(
            "single2",
            "  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv4, IPv6]\n",
        ),
    )
    .await
    .expect_err("two families single-stack");
    assert!(
        err.contains("spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"),
        "{err}"
    );

    // Upgrade a single-stack Service: the primary address stays, an IPv6 one is added.
    let (before, _, _) = ips_and_families(&c, "plain").await;
    c.ok(&[
        "patch",
        "svc",
        "plain",
        "-p",
        r#"{"spec":{"ipFamilyPolicy":"RequireDualStack"}}"#,
    ])
    .await;
    let (after, fams, _) = ips_and_families(&c, "plain").await;
    assert_eq!(fams, "IPv4 IPv6");
    assert_eq!(after[0], before[0]);
    assert!(in_v6(&after[1]), "{after:?}");
    // Releasing the secondary needs SingleStack.
    let out = c
        .kubectl(&[
            "patch",
            "svc",
            "plain",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/clusterIPs/1"},{"op":"remove","path":"/spec/ipFamilies/1"}]"#,
        ])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("must be set to 'SingleStack' when releasing the secondary clusterIP"),
        "{err}"
    );
    c.ok(&[
        "patch",
        "svc",
        "plain",
        "-p",
        r#"{"spec":{"ipFamilyPolicy":"SingleStack"}}"#,
    ])
    .await;
    let (down, fams, _) = ips_and_families(&c, "plain").await;
    assert_eq!((down, fams.as_str()), (vec![before[0]], "IPv4"));
    // The primary address never changes.
    let out = c
        .kubectl(&[
            "patch",
            "svc",
            "plain",
            "-p",
            r#"{"spec":{"clusterIP":"10.96.0.99"}}"#,
        ])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.99\"}: may not change once set"
        ),
        "{err}"
    );

    // A server-side dry run shows the addresses it would allocate, and keeps none.
    let dry = c
        .kubectl_stdin(
            &[
                "create",
                "--dry-run=server",
                "-o",
                "jsonpath={.spec.clusterIPs[*]}",
                "-f",
                "-",
            ],
            Some(&svc_yaml("dry", "  ipFamilyPolicy: PreferDualStack\n")),
        )
        .await;
    let dry_ips = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert_eq!(dry_ips.split_whitespace().count(), 2, "{dry_ips:?}");
    let out = c.kubectl(&["get", "svc", "dry"]).await;
    assert!(!out.status.success());

    // The EndpointSlice controller writes a slice per family from the pod's podIPs.
    let _node = fake_node(&c, "n1", 10250).await;
    let client = c.admin().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create_pod(
        &pods,
        pod("both-1", "n1", json!({"app": "both"}), json!({}), &[]),
    )
    .await;
    // The stand-in node starts it (with one IPv4 address) first: a status written before
    // that would be overwritten by the node's.
    eventually("the stand-in node runs both-1", WAIT, || async {
        let p = pods.get("both-1").await.ok()?;
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    pods.patch_status(
        "both-1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "10.244.0.5",
            "podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00:10:244::5"}]}})),
    )
    .await
    .expect("pod status");
    set_ready(&pods, "both-1", true).await;
    let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
    let by_type = eventually("a slice per family", WAIT, || async {
        let s = slices_of(&slices, "both").await;
        let m: std::collections::BTreeMap<String, Value> = s
            .into_iter()
            .filter(|s| s["endpoints"].as_array().is_some_and(|e| !e.is_empty()))
            .map(|s| (s["addressType"].as_str().unwrap_or("").to_string(), s))
            .collect();
        (m.len() == 2).then_some(m)
    })
    .await;
    assert_eq!(
        by_type["IPv4"]["endpoints"][0]["addresses"],
        json!(["10.244.0.5"])
    );
    assert_eq!(
        by_type["IPv6"]["endpoints"][0]["addresses"],
        json!(["fd00:10:244::5"])
    );

    // A single-stack control plane refuses what needs a second family, in upstream's words.
    let single = start().await;
    let err = apply(
        &single,
        &svc_yaml("req", "  ipFamilyPolicy: RequireDualStack\n"),
    )
    .await
    .expect_err("single-stack cluster");
    assert!(
        err.contains("spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services"),
        "{err}"
    );
    let err = apply(&single, &svc_yaml("v6", "  ipFamilies: [IPv6]\n"))
        .await
        .expect_err("IPv6 on a single-stack cluster");
    assert!(
        err.contains("spec.ipFamilies[0]: Invalid value: \"IPv6\": not configured on this cluster"),
        "{err}"
    );
    apply(
        &single,
        &svc_yaml("pref", "  ipFamilyPolicy: PreferDualStack\n"),
    )
    .await
    .expect("PreferDualStack is single-stack here");
    let (ips, fams, _) = ips_and_families(&single, "pref").await;
    assert_eq!((ips.len(), fams.as_str()), (1, "IPv4"));
}
