//! `AgentConfig` ⇄ flags, and the stage1 / network names.

use clap::{CommandFactory, Parser};
use rktup_node_contract::{
    AgentConfig, HostPathMount, NetworkMode, NodeLabel, RegistryMirror, Stage1, Taint, TaintEffect,
    STAGE1_NAMES,
};
use std::path::PathBuf;

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    agent: AgentConfig,
}

fn clear_env() {
    // Nothing in these tests sets them; a developer's shell might have.
    for v in ["KUBE_RKT_STAGE1_IMAGE", "LOG_LEVEL", "RKT_STAGE1_IMAGE"] {
        std::env::remove_var(v);
    }
}

fn parse(args: &[String]) -> AgentConfig {
    let argv = std::iter::once("agent".to_string()).chain(args.iter().cloned());
    Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
        .agent
}

/// Every field set, none to its default: a new field that `to_args` forgets fails here (and
/// this literal stops compiling until the field is added to it).
fn everything() -> AgentConfig {
    AgentConfig {
        root_dir: "/r o/ot".into(),
        pod_manifest_path: "/m".into(),
        rkt_api_endpoint: Some("localhost:15441".into()),
        rkt_stage1_image: Some(Stage1::Kvm),
        network_plugin: NetworkMode::Kubenet,
        network_plugin_dir: Some("/opt/cni/bin".into()),
        cni_conf_dir: Some("/etc/cni/net.d".into()),
        pod_cidr: Some("10.244.1.0/24".into()),
        insecure_registry: vec!["127.0.0.1:5000".into(), "reg:80".into()],
        registry_mirror: vec![
            "docker.io=http://127.0.0.1:5000".parse().unwrap(),
            "docker.io=https://mirror.gcr.io".parse().unwrap(),
            "*=https://m.example:8443".parse().unwrap(),
        ],
        registry_mirror_exclusive: vec!["docker.io".into()],
        image_pull_netns: Some("/run/netns/host".into()),
        registry_config: Some("/c.json".into()),
        allow_privileged: true,
        container_runtime: "rkt".into(),
        rkt_path: Some("/opt/bin/rkt".into()),
        kubeconfig: Some("/k".into()),
        api_servers: Some("https://10.0.0.1:443".into()),
        cluster_dns: Some("10.0.0.10".into()),
        cluster_domain: Some("cluster.local".into()),
        resolv_conf: "/run/systemd/resolve/resolv.conf".into(),
        serve_cluster_dns: false,
        proxy_mode: "none".into(),
        cluster_cidr: Some("10.244.0.0/16".into()),
        verbosity: 4,
        sync_period_ms: 500,
        restart_backoff_ms: 1,
        max_backoff_ms: 2,
        container_log_max_size: 3,
        container_log_max_files: 4,
        node_labels: vec![
            "tier=db".parse().unwrap(),
            "example.com/empty=".parse().unwrap(),
        ],
        register_with_taints: vec![
            "dedicated=gpu:NoSchedule".parse().unwrap(),
            "example.com/x:NoExecute".parse().unwrap(),
        ],
        host_path_mount: vec![
            "/srv/data:/data:ro".parse().unwrap(),
            "/srv/x:/x".parse().unwrap(),
        ],
        hostname_override: Some("node-1".into()),
        node_ip: Some("10.250.1.2".into()),
        node_status_update_frequency: 5,
        sync_frequency: 6,
        kubelet_port: 0,
        address: Some("127.0.0.1".parse().unwrap()),
        client_ca_file: Some("/ca".into()),
        tls_cert_file: Some("/crt".into()),
        tls_private_key_file: Some("/key".into()),
        bootstrap_kubeconfig: Some("/bk".into()),
        cert_dir: Some("/pki".into()),
        rotate_certificates: true,
        rotate_server_certificates: true,
        authorization_mode: "Webhook".into(),
        authentication_token_webhook: true,
        approve_kubelet_serving_csrs: true,
    }
}

#[test]
fn every_flag_is_written() {
    clear_env();
    let all = everything();
    let args = all.to_args();
    let cmd = Cli::command();
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "help" {
            continue;
        }
        assert!(
            args.iter().any(|a| a.starts_with(&format!("--{long}="))),
            "to_args never writes --{long}: {args:?}"
        );
    }
    assert_eq!(parse(&args), all);
}

#[test]
fn defaults_are_what_no_flags_mean() {
    clear_env();
    assert_eq!(parse(&[]), AgentConfig::default());
    assert_eq!(
        parse(&AgentConfig::default().to_args()),
        AgentConfig::default()
    );
    assert_eq!(
        AgentConfig::default().to_args(),
        [
            "--root-dir=/var/lib/rktup/agent",
            "--container-runtime=rkt",
            "--network-plugin=",
            "--pod-manifest-path=/etc/kubernetes/manifests",
            "--allow-privileged=false",
            "--v=2",
        ]
    );
}

/// A small xorshift generator: representative values in every combination the seeds reach.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize].clone()
    }
    fn opt<T: Clone>(&mut self, xs: &[T]) -> Option<T> {
        matches!(self.next() % 3, 1 | 2).then(|| self.pick(xs))
    }
}

fn random(r: &mut Rng) -> AgentConfig {
    let paths: Vec<PathBuf> = ["/a", "/var/lib/rktup/agent", "rel/dir", "/x y", "/é"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let words = [
        "a",
        "node-1",
        "10.0.0.10",
        "https://h:6443",
        "x=y",
        "sp ace",
        "",
    ];
    let nums = [
        0u64,
        1,
        2,
        10,
        60,
        1000,
        10_000,
        300_000,
        10_485_760,
        u32::MAX as u64,
    ];
    AgentConfig {
        root_dir: r.pick(&paths),
        pod_manifest_path: r.pick(&paths),
        rkt_api_endpoint: r.opt(&["localhost:15441".to_string(), "127.0.0.1:1".into()]),
        rkt_stage1_image: r.opt(&Stage1::ALL),
        network_plugin: r.pick(&NetworkMode::ALL),
        network_plugin_dir: r.opt(&paths),
        cni_conf_dir: r.opt(&paths),
        pod_cidr: r.opt(&["10.244.0.0/24".to_string()]),
        insecure_registry: (0..r.next() % 3)
            .map(|i| format!("127.0.0.{i}:5000"))
            .collect(),
        registry_mirror: (0..r.next() % 3)
            .map(|i| {
                RegistryMirror::new(
                    ["docker.io", "*", "q.io:5000"][i as usize],
                    &format!("http://127.0.0.{i}:5000"),
                )
                .unwrap()
            })
            .collect(),
        registry_mirror_exclusive: r.opt(&["docker.io".to_string()]).into_iter().collect(),
        image_pull_netns: r.opt(&paths),
        registry_config: r.opt(&paths),
        allow_privileged: r.next() & 1 == 1,
        container_runtime: "rkt".into(),
        rkt_path: r.opt(&paths),
        kubeconfig: r.opt(&paths),
        api_servers: r.opt(&words.map(String::from)),
        cluster_dns: r.opt(&words.map(String::from)),
        cluster_domain: r.opt(&words.map(String::from)),
        resolv_conf: r.pick(&paths),
        serve_cluster_dns: r.next() & 1 == 1,
        proxy_mode: r.pick(&["nftables".to_string(), "none".to_string()]),
        cluster_cidr: r.opt(&words.map(String::from)),
        verbosity: r.pick(&[0u8, 2, 4, 10, 255]),
        sync_period_ms: r.pick(&nums),
        restart_backoff_ms: r.pick(&nums),
        max_backoff_ms: r.pick(&nums),
        container_log_max_size: r.pick(&nums),
        container_log_max_files: r.pick(&nums) as usize,
        node_labels: (0..r.next() % 3)
            .map(|i| {
                NodeLabel::new(&format!("k{i}.example/l"), ["", "v", "a.b-c_d"][i as usize])
                    .unwrap()
            })
            .collect(),
        register_with_taints: (0..r.next() % 4)
            .map(|i| {
                let effect = TaintEffect::ALL[(i % 3) as usize].as_str();
                Taint::new(&format!("t{i}"), (i % 2 == 0).then_some("v"), effect).unwrap()
            })
            .collect(),
        host_path_mount: (0..r.next() % 3)
            .map(|i| HostPathMount::new(&format!("/h{i}"), &format!("/n/{i}"), i == 1).unwrap())
            .collect(),
        hostname_override: r.opt(&words.map(String::from)),
        node_ip: r.opt(&words.map(String::from)),
        node_status_update_frequency: r.pick(&nums),
        sync_frequency: r.pick(&nums),
        kubelet_port: r.pick(&[0u16, 10250, 65535]),
        address: r.opt(&["0.0.0.0".parse().unwrap(), "::1".parse().unwrap()]),
        client_ca_file: r.opt(&paths),
        tls_cert_file: r.opt(&paths),
        tls_private_key_file: r.opt(&paths),
        bootstrap_kubeconfig: r.opt(&paths),
        cert_dir: r.opt(&paths),
        rotate_certificates: r.next() & 1 == 1,
        rotate_server_certificates: r.next() & 1 == 1,
        authorization_mode: r.pick(&["AlwaysAllow".to_string(), "Webhook".to_string()]),
        authentication_token_webhook: r.next() & 1 == 1,
        approve_kubelet_serving_csrs: r.next() & 1 == 1,
    }
}

#[test]
fn to_args_parses_back_to_the_same_config() {
    clear_env();
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..2000 {
        let c = random(&mut r);
        let args = c.to_args();
        assert_eq!(parse(&args), c, "{args:?}");
    }
}

#[test]
fn stage1_spellings() {
    for (s, want) in [
        ("coreos.com/rkt/stage1-coreos", Some(Stage1::Coreos)),
        ("coreos.com/rkt/stage1-fly", Some(Stage1::Fly)),
        ("coreos.com/rkt/stage1-kvm", Some(Stage1::Kvm)),
        ("coreos/rkt/stage1-coreos", Some(Stage1::Coreos)),
        ("coreos/rkt/stage1-fly", Some(Stage1::Fly)),
        ("coreos/rkt/stage1-kvm", Some(Stage1::Kvm)),
        ("coreos.com/rkt/stage1-kvm:1.9.1", Some(Stage1::Kvm)),
        ("coreos/rkt/stage1-fly:1.30.0", Some(Stage1::Fly)),
        (" coreos.com/rkt/stage1-fly ", Some(Stage1::Fly)),
        ("coreos.com/rkt/stage1-nope", None),
        ("coreos.com/rkt/stage1-lkvm", None),
        ("example.com/stage1-fly", None),
        ("stage1-fly", None),
        ("fly", None),
        ("", None),
    ] {
        assert_eq!(Stage1::parse(s), want, "{s:?}");
    }
    for s in Stage1::ALL {
        assert_eq!(Stage1::parse(s.image_name()), Some(s));
    }
    assert_eq!(STAGE1_NAMES.map(|n| Stage1::parse(n).unwrap()), Stage1::ALL);
    assert_eq!(
        Stage1::expected(),
        "one of coreos.com/rkt/stage1-coreos, coreos.com/rkt/stage1-fly, coreos.com/rkt/stage1-kvm (or the same with coreos/rkt/stage1-*)"
    );
}

#[test]
fn network_spellings() {
    for (s, want) in [
        ("", Some(NetworkMode::Contained)),
        ("contained", Some(NetworkMode::Contained)),
        ("rkt", Some(NetworkMode::Contained)),
        ("cni", Some(NetworkMode::Cni)),
        ("kubenet", Some(NetworkMode::Kubenet)),
        ("Kubenet", Some(NetworkMode::Kubenet)),
        ("flannel", None),
    ] {
        assert_eq!(NetworkMode::parse(s), want, "{s:?}");
    }
    for m in NetworkMode::ALL {
        assert_eq!(NetworkMode::parse(m.name()), Some(m));
        assert_eq!(NetworkMode::parse(m.kubelet_plugin()), Some(m));
    }
}

#[test]
fn bad_names_are_refused_with_what_is_known() {
    clear_env();
    let e = Cli::try_parse_from(["agent", "--rkt-stage1-image", "stage1-lkvm"]).unwrap_err();
    assert!(
        e.to_string().contains(
            "unknown --rkt-stage1-image \"stage1-lkvm\" (known: coreos.com/rkt/stage1-coreos, stage1-fly, stage1-kvm)"
        ),
        "{e}"
    );
    let e = Cli::try_parse_from(["agent", "--network-plugin", "flannel"]).unwrap_err();
    assert!(
        e.to_string()
            .contains("unknown --network-plugin \"flannel\" (expected \"\", cni or kubenet)"),
        "{e}"
    );
    // Empty means the default, as it always did.
    let c = parse(&["--rkt-stage1-image=".into()]);
    assert_eq!(c.stage1(), Stage1::Coreos);
    let c = parse(&["--allow-privileged".into(), "--config".into(), "/m".into()]);
    assert!(c.allow_privileged);
    assert_eq!(c.pod_manifest_path, PathBuf::from("/m"));
}

#[test]
fn node_labels_taints_and_mirrors_as_kubelet_takes_them() {
    clear_env();
    // kubelet's comma-separated spelling and the repeated one read the same.
    let a = parse(&[
        "--node-labels=tier=db,zone=a".into(),
        "--register-with-taints=dedicated=gpu:NoSchedule,x:NoExecute".into(),
        "--registry-mirror=docker.io=http://127.0.0.1:5000".into(),
    ]);
    let b = parse(&[
        "--node-labels=tier=db".into(),
        "--node-labels=zone=a".into(),
        "--register-with-taints=dedicated=gpu:NoSchedule".into(),
        "--register-with-taints=x:NoExecute".into(),
        "--registry-mirror=docker.io=http://127.0.0.1:5000/".into(),
    ]);
    assert_eq!(a, b);
    assert_eq!(a.register_with_taints[1].to_string(), "x:NoExecute");
    let argv = |f: &str| ["agent".to_string(), f.to_string()];
    for bad in [
        "--register-with-taints=a=b:Never",
        "--node-labels=Bad Key=x",
        "--registry-mirror=docker.io=127.0.0.1:5000",
    ] {
        let e = Cli::try_parse_from(argv(bad)).unwrap_err().to_string();
        assert!(e.contains("expected"), "{bad}: {e}");
    }
}
