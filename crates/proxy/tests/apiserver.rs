//! End to end through the API: the embedded control plane and `rktup_proxy::run` in a node
//! namespace, with the node's own credentials (as the agent runs it). Services and
//! EndpointSlices go in through the API server; traffic from pods shows the kernel followed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rktup_controlplane::pki::Credential;
use rktup_proxy::ProxyConfig;
use rktup_testkit::proxy::*;
use serde_json::json;

async fn client_for(handle: &rktup_controlplane::Handle, node: &str) -> kube::Client {
    let token = handle.mint_node_token(node).expect("token");
    let text = handle.kubeconfig_for(&format!("system:node:{node}"), &Credential::Token(token));
    let kc = kube::config::Kubeconfig::from_yaml(&text).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

async fn admin(handle: &rktup_controlplane::Handle) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(handle.admin_kubeconfig()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

/// Runs `test` inside the node namespace against a fresh control plane (with `lb_pool` as its
/// LoadBalancer address pool), which it hands back to be shut down. Everything — the control
/// plane on the node's loopback, the proxy and its netlink socket — is in that namespace:
/// runtime threads inherit it from the thread that builds the runtime.
fn with_control_plane_in<F, Fut>(node_ns: &str, lb_pool: Option<&'static str>, test: F)
where
    F: FnOnce(rktup_controlplane::Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = rktup_controlplane::Handle>,
{
    in_ns(node_ns, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut cp = rktup_controlplane::ControlPlane::builder()
                .data_dir(dir.path())
                .bind("127.0.0.1:0".parse().expect("addr"))
                .service_cidr("10.96.0.0/12");
            if let Some(pool) = lb_pool {
                cp = cp.load_balancer_ip_range(pool);
            }
            let handle = cp.start().await.expect("control plane");
            test(handle).await.shutdown().await;
        });
    });
}

/// Pod names that answered `n` connections from `ns` (off the async runtime).
async fn answered(ns: &str, to: SocketAddr, n: usize) -> Vec<String> {
    let ns = ns.to_string();
    tokio::task::spawn_blocking(move || spread(&ns, to, n).into_keys().collect())
        .await
        .expect("spread")
}

#[test]
fn services_and_slices_from_the_api_server_reach_the_kernel() {
    let Some(t) = Topo::new("apiserver_e2e", 2) else {
        return;
    };
    let node_ns = t.node.clone();
    let pods: Vec<(String, std::net::Ipv4Addr)> = t.pods.clone();
    let table = format!("rktup-proxy-{}", t.node);
    with_control_plane_in(&node_ns, None, move |handle| async move {
        let adm = admin(&handle).await;
        let services: Api<Service> = Api::namespaced(adm.clone(), "default");
        let slices: Api<EndpointSlice> = Api::namespaced(adm.clone(), "default");
        // a selector-less Service: its slices are ours to write (as upstream)
        let svc: Service = serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "targetPort": "web", "nodePort": 30090}]}
            }))
            .unwrap();
        let svc = services
            .create(&PostParams::default(), &svc)
            .await
            .expect("create service");
        let cip = svc
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.clone())
            .expect("cluster IP allocated");
        let to = SocketAddr::new(cip.parse().expect("cluster ip"), 80);
        let mk = |ips: &[std::net::Ipv4Addr]| -> EndpointSlice {
            slice(
                "default",
                "web",
                &[("http", TCP_PORT, "TCP")],
                &ips.iter()
                    .map(|ip| (*ip, "node-a", true, true, false))
                    .collect::<Vec<_>>(),
            )
        };
        slices
            .create(&PostParams::default(), &mk(&[pods[0].1]))
            .await
            .expect("create slice");

        // the agent registers its Node with the pod CIDR; the proxy reads it from there
        let nodes: Api<k8s_openapi::api::core::v1::Node> =
            Api::all(client_for(&handle, "node-a").await);
        let node = serde_json::from_value(json!({"metadata": {"name": "node-a"}, "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}})).unwrap();
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("register node");
        let cfg = ProxyConfig {
            node_name: "node-a".into(),
            node_ips: vec![IpAddr::V4(NODE_IP)],
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            table: table.clone(),
            skip_cluster_ips: vec![],
            // as on a cloud master whose controller manager has no cloud provider
            load_balancer_notice: true,
        };
        let proxy = rktup_proxy::run(client_for(&handle, "node-a").await, cfg)
            .await
            .expect("proxy runs");
        // run returns after the first program: already served
        assert_eq!(answered(&pods[1].0, to, 5).await, vec!["pod0"]);
        let np = SocketAddr::new(NODE_IP.into(), 30090);

        // endpoints change → reprogrammed
        let patch = json!({"endpoints": [{"addresses": [pods[1].1.to_string()], "nodeName": "node-a",
                                              "conditions": {"ready": true}}]});
        slices
            .patch("web-abcde", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch slice");
        let p1 = pods[1].0.clone();
        rktup_testkit::eventually("the new endpoint", Duration::from_secs(20), || {
            let p1 = p1.clone();
            async move { (answered(&p1, to, 5).await == vec!["pod1"]).then_some(()) }
        })
        .await;
        assert_eq!(
            answered(&pods[0].0, np, 3).await,
            vec!["pod1"],
            "NodePort from a pod to the node address"
        );

        // no endpoints → refused
        slices
            .delete("web-abcde", &DeleteParams::default())
            .await
            .expect("delete slice");
        let p0 = pods[0].0.clone();
        rktup_testkit::eventually("refusal", Duration::from_secs(20), || {
            let p0 = p0.clone();
            async move {
                let r = tokio::task::spawn_blocking(move || tcp(&p0, to))
                    .await
                    .ok()?;
                (r == Reply::Refused).then_some(())
            }
        })
        .await;

        // a pending LoadBalancer Service gets the proxy's Warning, posted with the node's
        // credentials; one of another loadBalancerClass does not
        let lb = |name: &str, class: Option<&str>| -> Service {
            serde_json::from_value(json!({"metadata": {"name": name},
                    "spec": {"type": "LoadBalancer", "loadBalancerClass": class, "ports": [{"port": 80}]}}))
                .unwrap()
        };
        let mine = services
            .create(&PostParams::default(), &lb("lb", None))
            .await
            .expect("create lb");
        let theirs = services
            .create(
                &PostParams::default(),
                &lb("lb-other", Some("example.com/lb")),
            )
            .await
            .expect("create lb-other");
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(adm.clone(), "default");
        let uid8 = |s: &Service| {
            s.metadata
                .uid
                .clone()
                .unwrap()
                .chars()
                .take(8)
                .collect::<String>()
        };
        let name = format!("lb.no-lb-controller-{}", uid8(&mine));
        let ev = rktup_testkit::eventually("the proxy's warning", Duration::from_secs(20), || {
            let (events, name) = (events.clone(), name.clone());
            async move { events.get_opt(&name).await.ok().flatten() }
        })
        .await;
        assert_eq!(ev.reason.as_deref(), Some(rktup_proxy::lb_notice::REASON));
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.involved_object.uid, mine.metadata.uid);
        assert_eq!(
            ev.source.as_ref().and_then(|s| s.component.as_deref()),
            Some(rktup_proxy::lb_notice::COMPONENT)
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let other = format!("lb-other.no-lb-controller-{}", uid8(&theirs));
        assert!(
            events.get_opt(&other).await.expect("get").is_none(),
            "a Service of another class got the warning"
        );

        // shutdown removes the table
        proxy.shutdown().await;
        let tb = table.clone();
        let left = tokio::task::spawn_blocking(move || rktup_proxy::table_rules(&tb))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(left, None, "table left after shutdown");
        handle
    });
}

/// `loadBalancerSourceRanges` end to end: the control plane validates the Service and gives it
/// a pool address, the proxy (node credentials) programs the firewall, and from outside the node
/// the in-range client is served while a pod outside the ranges is dropped.
#[test]
fn load_balancer_source_ranges_through_the_api() {
    let Some(t) = Topo::new("apiserver_lb_ranges", 2) else {
        return;
    };
    // the pool is routed through the node, as local clusters route theirs from the host
    ip(&[
        "-n",
        &t.client,
        "route",
        "add",
        "10.250.1.0/24",
        "via",
        "10.250.0.2",
    ]);
    let node_ns = t.node.clone();
    let (client_ns, pods) = (t.client.clone(), t.pods.clone());
    let table = format!("rktup-proxy-{}", t.node);
    with_control_plane_in(&node_ns, Some("10.250.1.0/29"), move |handle| async move {
        let adm = admin(&handle).await;
        let services: Api<Service> = Api::namespaced(adm.clone(), "default");
        let slices: Api<EndpointSlice> = Api::namespaced(adm.clone(), "default");
        let svc: Service = serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {"type": "LoadBalancer", "loadBalancerSourceRanges": [CLIENT_IP.to_string() + "/32"],
                         "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}
            }))
            .unwrap();
        services
            .create(&PostParams::default(), &svc)
            .await
            .expect("create service");
        let eps = [(pods[0].1, "node-a", true, true, false)];
        slices
            .create(
                &PostParams::default(),
                &slice("default", "web", &[("http", TCP_PORT, "TCP")], &eps),
            )
            .await
            .expect("create slice");
        let cfg = ProxyConfig {
            node_name: "node-a".into(),
            node_ips: vec![IpAddr::V4(NODE_IP)],
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            table: table.clone(),
            skip_cluster_ips: vec![],
            load_balancer_notice: false,
        };
        let proxy = rktup_proxy::run(client_for(&handle, "node-a").await, cfg)
            .await
            .expect("proxy runs");
        let lb = rktup_testkit::eventually("a pool address", Duration::from_secs(20), || {
            let services = services.clone();
            async move {
                let s = services.get("web").await.ok()?;
                let ip = s.status?.load_balancer?.ingress?.first()?.ip.clone()?;
                ip.parse::<IpAddr>().ok()
            }
        })
        .await;
        let to = SocketAddr::new(lb, 80);
        let c = client_ns.clone();
        rktup_testkit::eventually(
            "the in-range client served",
            Duration::from_secs(20),
            || {
                let c = c.clone();
                async move { (answered(&c, to, 1).await == vec!["pod0"]).then_some(()) }
            },
        )
        .await;
        let p1 = pods[1].0.clone();
        let r = tokio::task::spawn_blocking(move || tcp(&p1, to))
            .await
            .expect("tcp");
        assert_eq!(r, Reply::TimedOut, "a pod outside the ranges");
        proxy.shutdown().await;
        handle
    });
}
