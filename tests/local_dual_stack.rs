//! A dual-stack local cluster (issue 14): CLUSTER_IP_RANGE and SERVICE_CLUSTER_IP_RANGE with an
//! IPv6 range after the IPv4 one, as kind's `ipFamily: dual` and hack/local-up-cluster.sh take
//! them. Two nodes, real kubectl, a busybox image built here: pods get an IPv6 address beside
//! their IPv4 one (`status.podIPs`), reach each other across nodes over IPv6, a dual-stack
//! LoadBalancer Service answers on its IPv6 ClusterIP, on its NodePort at a node's IPv6 address
//! and on an IPv6 load balancer address from this machine, cluster DNS answers AAAA with the IPv6
//! ClusterIP, and `down` leaves nothing. Needs root.

use rktup_testkit::local::http_get;
use rktup_testkit::{wait_for, Images, Registry};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::Duration;

#[test]
fn dual_stack_pods_services_and_dns_on_a_two_node_local_cluster() {
    if !rktup_testkit::can_run_as_root("local_dual_stack", "`rktup local up`") {
        return;
    }
    let c = rktup_testkit::local_cluster!("ds").build();
    let images = Images::build();
    let registry = Registry::start();
    let image = registry.push(&images.layout, "busybox", "web:1.0");
    // IPv4 ranges of their own (other tests' clusters take theirs from the default pool).
    let u = rktup_testkit::unique() % 40;
    let pods_v6 = format!("fd00:10:{:x}::/56", 0x2440 + u);
    let pod_range = format!("10.{}.0.0/16,{pods_v6}", 200 + u);
    let pods_v6: ipnet::Ipv6Net = pods_v6.parse().unwrap();
    let svc_range = format!("10.{}.0.0/16,fd00:10:96::/112", 160 + u);
    let dns = format!("10.{}.0.10", 160 + u);
    c.up_with(
        &["--num-nodes", "2", "--insecure-registry", &registry.addr],
        &[
            ("CLUSTER_IP_RANGE", pod_range.as_str()),
            ("SERVICE_CLUSTER_IP_RANGE", svc_range.as_str()),
            ("DNS_SERVER_IP", dns.as_str()),
        ],
    );

    // Nodes: an IPv4 and an IPv6 InternalIP, an IPv4 and an IPv6 pod CIDR.
    let nodes = c.json(&["get", "nodes"])["items"]
        .as_array()
        .cloned()
        .unwrap();
    assert_eq!(nodes.len(), 2);
    let mut node_v6 = vec![];
    for n in &nodes {
        let cidrs = &n["spec"]["podCIDRs"];
        assert_eq!(cidrs.as_array().map(Vec::len), Some(2), "{n}");
        let v6: ipnet::Ipv6Net = cidrs[1].as_str().unwrap().parse().unwrap();
        assert!(pods_v6.contains(&v6), "{v6} outside {pods_v6}");
        let ips: Vec<IpAddr> = n["status"]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["type"] == "InternalIP")
            .map(|a| a["address"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(
            ips.len() == 2 && ips[0].is_ipv4() && ips[1].is_ipv6(),
            "{n}"
        );
        node_v6.push(ips[1]);
    }
    let node_names: Vec<String> = nodes
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
        .collect();

    // Web pods, one per node: each has both addresses, the IPv6 one in its node's CIDR.
    let page = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";
    c.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--replicas=2",
        "--port=8080",
        &format!("--image={image}"),
        "--",
        "sh",
        "-c",
        page,
    ]);
    let web: Vec<Value> = wait_for("2 web pods Running", Duration::from_secs(90), || {
        let p: Vec<Value> = c.json(&["get", "pods", "-l", "app=web"])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .collect();
        (p.len() == 2).then_some(p)
    });
    let mut web_v6 = vec![];
    for p in &web {
        let ips: Vec<IpAddr> = p["status"]["podIPs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["ip"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(
            ips.len() == 2 && ips[0].is_ipv4() && ips[1].is_ipv6(),
            "{p}"
        );
        assert_eq!(p["status"]["podIP"], json!(ips[0].to_string()));
        let IpAddr::V6(v6) = ips[1] else {
            unreachable!()
        };
        assert!(pods_v6.contains(&v6), "{v6}");
        web_v6.push((p["metadata"]["name"].as_str().unwrap().to_string(), v6));
    }
    // This machine reaches each pod at its IPv6 address (routed through its node).
    for (name, ip) in &web_v6 {
        let got = wait_for(
            &format!("{name} at [{ip}]:8080 from the host"),
            Duration::from_secs(20),
            || http_get(&format!("[{ip}]:8080")).ok(),
        );
        assert_eq!(&got, name);
    }

    // A dual-stack LoadBalancer Service.
    c.apply(
        "web-svc",
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "RequireDualStack",
                     "selector": {"app": "web"},
                     "ports": [{"port": 80, "targetPort": 8080}]}}),
    );
    // One load balancer address per family, in the Service's family order.
    let svc = wait_for(
        "two load balancer addresses",
        Duration::from_secs(30),
        || {
            let s = c.json(&["get", "service", "web"]);
            (s["status"]["loadBalancer"]["ingress"]
                .as_array()
                .map(Vec::len)
                == Some(2))
            .then_some(s)
        },
    );
    assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]), "{svc}");
    let lb: Vec<IpAddr> = svc["status"]["loadBalancer"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ip"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(lb[0].is_ipv4() && lb[1].is_ipv6(), "{svc}");
    let cip6: IpAddr = svc["spec"]["clusterIPs"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(cip6.is_ipv6(), "{svc}");
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    let names: Vec<String> = web_v6.iter().map(|(n, _)| n.clone()).collect();
    // The NodePort on each node's IPv6 address, from this machine.
    for ip in &node_v6 {
        let addr = format!("[{ip}]:{node_port}");
        let got = wait_for(
            &format!("NodePort at {addr}"),
            Duration::from_secs(30),
            || http_get(&addr).ok().filter(|b| names.contains(b)),
        );
        assert!(names.contains(&got));
    }

    // The IPv6 load balancer address, from this machine (routed through the nodes).
    let lb6 = format!("[{}]:80", lb[1]);
    let got = wait_for(
        &format!("load balancer at {lb6}"),
        Duration::from_secs(30),
        || http_get(&lb6).ok().filter(|b| names.contains(b)),
    );
    assert!(names.contains(&got));

    // From a pod on the first node: the other node's pod over IPv6, the IPv6 ClusterIP, and
    // AAAA from cluster DNS.
    let other = &web_v6
        .iter()
        .find(|(n, _)| {
            web.iter().any(|p| {
                p["metadata"]["name"] == json!(n) && p["spec"]["nodeName"] != json!(node_names[0])
            })
        })
        .expect("a web pod on the second node")
        .1;
    let script = format!(
        "wget -qO- http://[{other}]:8080/ && \
         for i in 1 2 3 4 5 6; do wget -qO- http://[{cip6}]/; done && \
         nslookup -type=AAAA web.default.svc.cluster.local"
    );
    let out = c.run_pod("client6", &node_names[0], &image, &script);
    let mut lines = out.lines();
    let first = lines.next().unwrap_or_default();
    assert!(names.iter().any(|n| n == first), "{out}");
    let served: Vec<&str> = lines.by_ref().take(6).collect();
    assert!(
        served.iter().all(|l| names.iter().any(|n| n == l)),
        "IPv6 ClusterIP answers: {out}"
    );
    assert!(
        out.contains(&cip6.to_string()),
        "AAAA for web.default.svc.cluster.local holds {cip6}: {out}"
    );

    c.down();
    c.assert_nothing_left();
}
