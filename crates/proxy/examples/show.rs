//! Programs a small sample table in the current network namespace and leaves it there, for
//! looking at with `nft list table inet rktup-proxy-show` (run it in a scratch namespace:
//! `ip netns add x; ip netns exec x cargo run -p rktup-proxy --example show`).
use rktup_proxy::{ruleset, NodeInfo, Programmer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let svc = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.10", "type": "NodePort", "externalTrafficPolicy": "Local",
                 "sessionAffinity": "ClientIP",
                 "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}]}}))?;
    let slice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.0.10"], "nodeName": "n1"}, {"addresses": ["10.244.1.10"], "nodeName": "n2"}]}))?;
    let node = NodeInfo {
        name: "n1".into(),
        ips: vec!["10.250.0.2".parse()?],
        cluster_cidrs: vec!["10.244.0.0/16".parse()?],
        pod_cidrs: vec!["10.244.0.0/24".parse()?],
        skip_cluster_ips: vec![],
    };
    let mut p = Programmer::new("rktup-proxy-show")?;
    p.apply(ruleset(&[svc], &[slice], &node))?;
    Ok(())
}
