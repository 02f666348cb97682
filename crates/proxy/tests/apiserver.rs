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
    // everything (control plane on the node's loopback, proxy, its netlink socket) in the node
    // namespace: runtime threads inherit it from the thread that builds the runtime
    in_ns(&node_ns, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let handle = rktup_controlplane::ControlPlane::builder()
                .data_dir(dir.path())
                .bind("127.0.0.1:0".parse().expect("addr"))
                .service_cidr("10.96.0.0/12")
                .start()
                .await
                .expect("control plane");
            let adm = admin(&handle).await;
            let services: Api<Service> = Api::namespaced(adm.clone(), "default");
            let slices: Api<EndpointSlice> = Api::namespaced(adm.clone(), "default");
            // a selector-less Service: its slices are ours to write (as upstream)
            let svc: Service = serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "targetPort": "web", "nodePort": 30090}]}
            }))
            .unwrap();
            let svc = services.create(&PostParams::default(), &svc).await.expect("create service");
            let cip = svc.spec.as_ref().and_then(|s| s.cluster_ip.clone()).expect("cluster IP allocated");
            let to = SocketAddr::new(cip.parse().expect("cluster ip"), 80);
            let mk = |ips: &[std::net::Ipv4Addr]| -> EndpointSlice {
                slice("default", "web", &[("http", TCP_PORT, "TCP")], &ips.iter().map(|ip| (*ip, "node-a", true, true, false)).collect::<Vec<_>>())
            };
            slices.create(&PostParams::default(), &mk(&[pods[0].1])).await.expect("create slice");

            // the agent registers its Node with the pod CIDR; the proxy reads it from there
            let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client_for(&handle, "node-a").await);
            let node = serde_json::from_value(json!({"metadata": {"name": "node-a"}, "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}})).unwrap();
            nodes.create(&PostParams::default(), &node).await.expect("register node");
            let cfg = ProxyConfig {
                node_name: "node-a".into(),
                node_ips: vec![IpAddr::V4(NODE_IP)],
                cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
                table: table.clone(),
                skip_cluster_ips: vec![],
            };
            let proxy = rktup_proxy::run(client_for(&handle, "node-a").await, cfg).await.expect("proxy runs");
            // run returns after the first program: already served
            assert_eq!(answered(&pods[1].0, to, 5).await, vec!["pod0"]);
            let np = SocketAddr::new(NODE_IP.into(), 30090);

            // endpoints change → reprogrammed
            let patch = json!({"endpoints": [{"addresses": [pods[1].1.to_string()], "nodeName": "node-a",
                                              "conditions": {"ready": true}}]});
            slices.patch("web-abcde", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch slice");
            let p1 = pods[1].0.clone();
            rktup_testkit::eventually("the new endpoint", Duration::from_secs(20), || {
                let p1 = p1.clone();
                async move { (answered(&p1, to, 5).await == vec!["pod1"]).then_some(()) }
            })
            .await;
            assert_eq!(answered(&pods[0].0, np, 3).await, vec!["pod1"], "NodePort from a pod to the node address");

            // no endpoints → refused
            slices.delete("web-abcde", &DeleteParams::default()).await.expect("delete slice");
            let p0 = pods[0].0.clone();
            rktup_testkit::eventually("refusal", Duration::from_secs(20), || {
                let p0 = p0.clone();
                async move {
                    let r = tokio::task::spawn_blocking(move || tcp(&p0, to)).await.ok()?;
                    (r == Reply::Refused).then_some(())
                }
            })
            .await;

            // shutdown removes the table
            proxy.shutdown().await;
            let tb = table.clone();
            let left = tokio::task::spawn_blocking(move || rktup_proxy::table_rules(&tb)).await.unwrap().unwrap();
            assert_eq!(left, None, "table left after shutdown");
            handle.shutdown().await;
        });
    });
}
