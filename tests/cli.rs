//! The `rktup` binary as a user runs it: settings precedence, bad input, dry runs, rendering.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Runs rktup with only the environment given (plus PATH, HOME and a private state dir).
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rktup"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("RKTUP_STATE_DIR", self.state())
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `(value, source kind, source name)` of one setting from `rktup config <provider> -o json`.
fn setting(o: &Output, key: &str) -> (String, String, String) {
    assert!(o.status.success(), "{}", stderr(o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = doc["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == key)
        .unwrap_or_else(|| panic!("no {key}"));
    let src = &row["source"];
    let name = match &src["name"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => o["key"].as_str().unwrap_or("").to_string(),
        _ => String::new(),
    };
    (
        row["value"].as_str().unwrap().to_string(),
        src["kind"].as_str().unwrap().to_string(),
        name,
    )
}

#[test]
fn precedence_is_flag_then_env_then_file_then_default() {
    let sb = Sandbox::new();
    let file = sb.write("cluster.yaml", "NUM_NODES: 4\nkube-version: v1.31.2\n");
    let file = file.to_str().unwrap();

    let o = sb.run(&["config", "gce", "-o", "json"], &[]);
    assert_eq!(
        setting(&o, "NUM_NODES"),
        ("3".into(), "default".into(), "".into())
    );

    let o = sb.run(&["--config", file, "config", "gce", "-o", "json"], &[]);
    assert_eq!(
        setting(&o, "NUM_NODES"),
        ("4".into(), "file".into(), "NUM_NODES".into())
    );
    assert_eq!(setting(&o, "KUBE_VERSION").0, "v1.31.2");

    let o = sb.run(
        &["--config", file, "config", "gce", "-o", "json"],
        &[("NUM_NODES", "5")],
    );
    assert_eq!(
        setting(&o, "NUM_NODES"),
        ("5".into(), "env".into(), "NUM_NODES".into())
    );

    let o = sb.run(
        &[
            "--config",
            file,
            "config",
            "gce",
            "--num-nodes",
            "6",
            "-o",
            "json",
        ],
        &[("NUM_NODES", "5")],
    );
    assert_eq!(
        setting(&o, "NUM_NODES"),
        ("6".into(), "flag".into(), "--num-nodes".into())
    );
    // `--nodes` is the same flag.
    let o = sb.run(&["config", "aws", "--nodes", "7", "-o", "json"], &[]);
    assert_eq!(setting(&o, "NUM_NODES").0, "7");
    // An empty variable counts as unset, as kube-up's ${VAR:-default} did.
    let o = sb.run(&["config", "gce", "-o", "json"], &[("NUM_NODES", "")]);
    assert_eq!(setting(&o, "NUM_NODES").1, "default");
}

#[test]
fn kube_up_names_and_aliases() {
    let sb = Sandbox::new();
    // The provider-specific prefix wins over the generic one; --name over both.
    let env = [
        ("INSTANCE_PREFIX", "generic"),
        ("KUBE_GCE_INSTANCE_PREFIX", "gcename"),
    ];
    let o = sb.run(&["config", "gce", "-o", "json"], &env);
    assert_eq!(
        setting(&o, "INSTANCE_PREFIX"),
        (
            "gcename".into(),
            "env".into(),
            "KUBE_GCE_INSTANCE_PREFIX".into()
        )
    );
    let o = sb.run(&["config", "aws", "-o", "json"], &env);
    assert_eq!(setting(&o, "INSTANCE_PREFIX").0, "generic");
    let o = sb.run(&["--name", "flagname", "config", "gce", "-o", "json"], &env);
    assert_eq!(
        setting(&o, "INSTANCE_PREFIX"),
        ("flagname".into(), "flag".into(), "--name".into())
    );
    // ZONE is kube-up's fallback for KUBE_GCE_ZONE.
    let o = sb.run(
        &["config", "gce", "-o", "json"],
        &[("ZONE", "europe-west4-a")],
    );
    assert_eq!(setting(&o, "KUBE_GCE_ZONE").0, "europe-west4-a");
    // KUBE_OS_DISTRIBUTION sets master and nodes; coreos means Flatcar.
    let o = sb.run(&["config", "gce"], &[("KUBE_OS_DISTRIBUTION", "flatcar")]);
    let text = stdout(&o);
    assert!(
        text.contains("KUBE_MASTER_OS_DISTRIBUTION") && text.contains("env KUBE_OS_DISTRIBUTION"),
        "{text}"
    );
    // The seed's spelling of stage1 names is accepted and normalised.
    let o = sb.run(
        &["config", "gce", "-o", "json"],
        &[("KUBE_RKT_STAGE1_IMAGE", "coreos/rkt/stage1-fly")],
    );
    assert_eq!(
        setting(&o, "KUBE_RKT_STAGE1_IMAGE").0,
        "coreos.com/rkt/stage1-fly"
    );
    // local-up-cluster.sh's names.
    let o = sb.run(
        &["config", "local", "-o", "json"],
        &[
            ("RKT_STAGE1_IMAGE", "coreos.com/rkt/stage1-kvm"),
            ("NET_PLUGIN", "contained"),
            ("LOG_LEVEL", "4"),
        ],
    );
    assert_eq!(
        setting(&o, "KUBE_RKT_STAGE1_IMAGE").0,
        "coreos.com/rkt/stage1-kvm"
    );
    assert_eq!(
        setting(&o, "NETWORK_PROVIDER"),
        ("contained".into(), "env".into(), "NET_PLUGIN".into())
    );
    assert_eq!(setting(&o, "LOG_LEVEL").0, "4");
    assert_eq!(
        setting(&o, "NUM_NODES").0,
        "1",
        "local's default is one node"
    );
    let o = sb.run(
        &["-v", "6", "config", "local", "-o", "json"],
        &[("LOG_LEVEL", "4")],
    );
    assert_eq!(
        setting(&o, "LOG_LEVEL"),
        ("6".into(), "flag".into(), "--verbosity".into())
    );
}

#[test]
fn gcloud_project_is_used_when_project_is_unset() {
    let sb = Sandbox::new();
    sb.write("gcloud/active_config", "work\n");
    sb.write(
        "gcloud/configurations/config_work",
        "[core]\naccount = a@example.com\nproject = my-gcloud-project\n",
    );
    let cfg = sb.dir.path().join("gcloud");
    let o = sb.run(
        &["config", "gce", "-o", "json"],
        &[("CLOUDSDK_CONFIG", cfg.to_str().unwrap())],
    );
    assert_eq!(setting(&o, "PROJECT").0, "my-gcloud-project");
    assert_eq!(setting(&o, "PROJECT").1, "gcloud");
    let o = sb.run(
        &["config", "gce", "-o", "json"],
        &[
            ("CLOUDSDK_CONFIG", cfg.to_str().unwrap()),
            ("PROJECT", "env-project"),
        ],
    );
    assert_eq!(setting(&o, "PROJECT").0, "env-project");
}

/// Provider, extra args, env, and what stderr must say.
type BadCase<'a> = (
    &'a str,
    &'a [&'a str],
    &'a [(&'a str, &'a str)],
    &'a [&'a str],
);

/// Each case: provider, extra args, env, and what stderr must say. Every one exits 2 from
/// `up --dry-run` and leaves nothing behind.
#[test]
fn bad_input_exits_2_naming_the_input() {
    let sb = Sandbox::new();
    let bad_file = sb.write("bad.yaml", "NUM_NODEZ: 3\n");
    let bad_file = bad_file.to_str().unwrap();
    let cases: &[BadCase] = &[
        (
            "gce",
            &[],
            &[("NUM_NODES", "abc")],
            &["NUM_NODES: expected a whole number", "\"abc\""],
        ),
        ("gce", &["--num-nodes=-1"], &[], &["--num-nodes", "\"-1\""]),
        (
            "gce",
            &[],
            &[("KUBE_GCE_ZONE", "us-central1")],
            &["KUBE_GCE_ZONE", "us-central1-b"],
        ),
        (
            "gce",
            &[],
            &[("ZONE", "nowhere")],
            &["ZONE: expected a Compute Engine zone"],
        ),
        (
            "aws",
            &[],
            &[("KUBE_AWS_ZONE", "us-west-2")],
            &["KUBE_AWS_ZONE", "us-west-2a"],
        ),
        (
            "gce",
            &[],
            &[("KUBE_RKT_STAGE1_IMAGE", "coreos.com/rkt/stage1-lkvm")],
            &[
                "KUBE_RKT_STAGE1_IMAGE",
                "coreos.com/rkt/stage1-coreos",
                "coreos.com/rkt/stage1-fly",
                "coreos.com/rkt/stage1-kvm",
            ],
        ),
        (
            "gce",
            &[],
            &[("KUBE_CONTAINER_RUNTIME", "docker")],
            &["KUBE_CONTAINER_RUNTIME", "\"docker\"", "rkt", "Docker"],
        ),
        (
            "local",
            &[],
            &[("CONTAINER_RUNTIME", "docker")],
            &["CONTAINER_RUNTIME", "\"docker\""],
        ),
        (
            "gce",
            &[],
            &[("CLUSTER_IP_RANGE", "10.0.0.0/8")],
            &["SERVICE_CLUSTER_IP_RANGE", "overlap CLUSTER_IP_RANGE"],
        ),
        (
            "gce",
            &[],
            &[("CLUSTER_IP_RANGE", "10.244.0.0")],
            &["CLUSTER_IP_RANGE", "IPv4 CIDR"],
        ),
        (
            "gce",
            &[],
            &[("DNS_SERVER_IP", "10.1.0.10")],
            &["DNS_SERVER_IP", "inside SERVICE_CLUSTER_IP_RANGE"],
        ),
        (
            "gce",
            &[],
            &[("KUBE_NODE_AGENT", "kubelet")],
            &["KUBE_NODE_AGENT", "v1.11", "v1.10"],
        ),
        (
            "gce",
            &[],
            &[("KUBE_RKT_VERSION", "1.8.0")],
            &["KUBE_RKT_VERSION", "1.9.1"],
        ),
        (
            "gce",
            &[],
            &[("KUBE_GCE_MASTER_PROJECT", "coreos-cloud")],
            &[
                "KUBE_GCE_MASTER_PROJECT",
                "no longer exists",
                "kinvolk-public",
            ],
        ),
        (
            "gce",
            &[],
            &[("KUBE_OS_DISTRIBUTION", "gci")],
            &[
                "KUBE_OS_DISTRIBUTION: expected coreos or flatcar",
                "Flatcar",
            ],
        ),
        (
            "gce",
            &["--name", "Bad_Name"],
            &[],
            &["--name", "\"Bad_Name\""],
        ),
        ("local", &["-v", "99"], &[], &["--verbosity", "0 to 10"]),
        (
            "aws",
            &[],
            &[("NETWORK_PROVIDER", "flannel")],
            &["NETWORK_PROVIDER", "kubenet, cni, contained"],
        ),
        (
            "aws",
            &[],
            &[("SUBNET_CIDR", "10.9.0.0/24")],
            &["SUBNET_CIDR", "inside VPC_CIDR"],
        ),
        (
            "aws",
            &[],
            &[("SUBNET_ID", "subnet-0123456789abcdef0")],
            &["SUBNET_ID", "VPC_ID"],
        ),
        (
            "aws",
            &[],
            &[("KUBE_MASTER_IMAGE", "ubuntu")],
            &["KUBE_MASTER_IMAGE", "ami-"],
        ),
        (
            "gce",
            &[],
            &[("MASTER_DISK_SIZE", "20")],
            &["MASTER_DISK_SIZE", "20GB"],
        ),
        (
            "gce",
            &[],
            &[("KUBE_RKT_STAGE1_IMAGE", "coreos.com/rkt/stage1-kvm")],
            &["NETWORK_PROVIDER", "contained", "KVM"],
        ),
        (
            "gce",
            &["--config", bad_file],
            &[],
            &["bad.yaml", "NUM_NODEZ", "unknown setting"],
        ),
        (
            "gce",
            &[],
            &[("ALLOW_PRIVILEGED", "maybe")],
            &["ALLOW_PRIVILEGED", "true or false"],
        ),
        (
            "local",
            &[],
            &[("API_PORT", "70000")],
            &["API_PORT", "1 to 65535"],
        ),
        (
            "local",
            &[],
            &[("RKT_PATH", "/nonexistent/rkt")],
            &["RKT_PATH", "existing rkt binary"],
        ),
        (
            "gce",
            &[],
            &[("KUBE_VERSION", "latest")],
            &["KUBE_VERSION", "v1.32.4"],
        ),
        ("gce", &[], &[("PROJECT", "X")], &["PROJECT", "project id"]),
    ];
    assert!(cases.len() >= 15);
    for (provider, args, env, needles) in cases {
        let mut argv = vec![*provider, "up", "--dry-run"];
        argv.extend_from_slice(args);
        let o = sb.run(&argv, env);
        let err = stderr(&o);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{provider} {args:?} {env:?}: {err}"
        );
        for n in *needles {
            assert!(
                err.contains(n),
                "{provider} {args:?} {env:?}: {n:?} not in {err}"
            );
        }
        assert!(
            o.stdout.is_empty(),
            "nothing printed but the error: {}",
            stdout(&o)
        );
        let lines: Vec<&str> = err.lines().collect();
        let unique: std::collections::BTreeSet<&str> = lines.iter().copied().collect();
        assert_eq!(lines.len(), unique.len(), "each mistake said once: {err}");
        assert!(
            !sb.state().exists(),
            "bad input created {}",
            sb.state().display()
        );
    }
}

#[test]
fn several_bad_inputs_are_reported_together() {
    let sb = Sandbox::new();
    let o = sb.run(
        &["gce", "up", "--dry-run"],
        &[("NUM_NODES", "x"), ("KUBE_GCE_ZONE", "nowhere")],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("NUM_NODES") && err.contains("KUBE_GCE_ZONE"),
        "{err}"
    );
}

/// `up --dry-run` must not touch the network: an endpoint that counts connections sees none,
/// and a closed port makes no difference.
#[test]
fn dry_run_makes_no_call() {
    let sb = Sandbox::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let open = format!("http://{}", listener.local_addr().unwrap());
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for endpoint in [&open, &closed] {
        for (provider, var) in [
            ("aws", "AWS_ENDPOINT_URL"),
            ("gce", "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE"),
        ] {
            let o = sb.run(
                &[provider, "up", "--dry-run", "--num-nodes", "2"],
                &[(var, endpoint.as_str())],
            );
            assert!(o.status.success(), "{provider}: {}", stderr(&o));
            let out = stdout(&o);
            assert!(out.contains("dry run"), "{out}");
            assert!(
                out.contains("user-data: master") && out.contains("user-data: node"),
                "{out}"
            );
            assert_eq!(out.matches("#cloud-config").count(), 2, "{out}");
            assert!(!sb.state().exists(), "a dry run writes no state");
        }
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("dry run connected to the endpoint: {other:?}"),
    }
}

#[test]
fn dry_run_plans_with_kube_up_names() {
    let sb = Sandbox::new();
    let o = sb.run(
        &["--name", "demo", "gce", "up", "--dry-run", "-o", "json"],
        &[("PROJECT", "my-project")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = doc["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["resources"].as_array().unwrap())
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for expected in [
        "default-default-internal",
        "default-default-ssh",
        "demo-master-https",
        "demo-minion-all",
        "demo-master-ip",
        "demo-master",
        "demo-minion-template",
        "demo-minion-group",
    ] {
        assert!(names.contains(&expected), "{expected} not in {names:?}");
    }
    // The master is created after the address and firewalls it needs.
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("demo-master-ip") < pos("demo-master"));
    assert!(pos("demo-minion-template") < pos("demo-minion-group"));

    let o = sb.run(
        &["aws", "up", "--dry-run", "-o", "json"],
        &[
            ("VPC_ID", "vpc-0123456789abcdef0"),
            ("SUBNET_ID", "subnet-0123456789abcdef0"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = doc["plan"].to_string();
    assert!(
        text.contains("vpc-0123456789abcdef0") && text.contains("never deleted"),
        "{text}"
    );
    assert!(
        !text.contains("internet-gateway"),
        "a given VPC gets no gateway of ours: {text}"
    );
    assert_eq!(
        doc["userData"]["master"]["gzipped"], true,
        "the master's user-data is over 16 KiB"
    );
    assert!(doc["userData"]["master"]["bytes"].as_u64().unwrap() <= 16 * 1024);
}

#[test]
fn render_prints_or_writes_what_a_node_boots_with() {
    let sb = Sandbox::new();
    let env = [
        ("RKTUP_BINARY_URL", "https://example.invalid/rktup"),
        (
            "RKTUP_BINARY_SHA256",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ),
    ];
    let o = sb.run(&["render", "aws", "--role", "node"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("#cloud-config\n"));
    assert!(text.contains("https://example.invalid/rktup"));
    assert!(text.contains("/opt/bin/rktup agent"));
    assert!(stderr(&o).contains("made for this rendering only"));

    let out = sb.dir.path().join("out");
    let o = sb.run(
        &[
            "render",
            "gce",
            "--role",
            "master",
            "--out",
            out.to_str().unwrap(),
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let root = out.join("master/rootfs");
    for f in [
        "etc/systemd/system/kubelet.service",
        "etc/systemd/system/rktup-install.service",
        "etc/kubernetes/manifests/kube-apiserver.yaml",
        "etc/kubernetes/pki/ca.crt",
    ] {
        assert!(root.join(f).is_file(), "{f}");
    }
    let cc = std::fs::read_to_string(out.join("master/cloud-config.yaml")).unwrap();
    assert!(cc.starts_with("#cloud-config"));
}

#[test]
fn templates_can_be_overridden_but_not_misnamed() {
    let sb = Sandbox::new();
    let dir = sb.dir.path().join("tpl");
    let original = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/units/kubelet.service.tera"),
    )
    .unwrap();
    sb.write(
        "tpl/units/kubelet.service.tera",
        &original.replace("[Service]", "[Service]\nEnvironment=CUSTOMISED=1"),
    );
    let o = sb.run(
        &["--templates", dir.to_str().unwrap(), "render", "local"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Environment=CUSTOMISED=1"));

    sb.write("tpl/units/kubelet.servic.tera", "typo");
    let o = sb.run(
        &["--templates", dir.to_str().unwrap(), "render", "local"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("kubelet.servic.tera")
            && stderr(&o).contains("units/kubelet.service.tera"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn config_version_and_completion() {
    let sb = Sandbox::new();
    let o = sb.run(&["config", "aws"], &[("KUBE_AWS_ZONE", "eu-west-1b")]);
    let text = stdout(&o);
    assert!(
        text.contains("region: eu-west-1 (derived from KUBE_AWS_ZONE)"),
        "{text}"
    );
    assert!(text.contains("KUBE_AWS_ZONE") && text.contains("env KUBE_AWS_ZONE"));
    assert!(text.contains("state directory:"));

    let o = sb.run(&["version"], &[]);
    assert!(stdout(&o).starts_with(&format!("rktup {}", env!("CARGO_PKG_VERSION"))));
    let o = sb.run(&["version", "-o", "json"], &[]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["rktup"], env!("CARGO_PKG_VERSION"));

    let o = sb.run(&["completion", "bash"], &[]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("rktup") && stdout(&o).contains("complete"));
    assert!(!stdout(&o).contains("error"));
    // Node-side commands keep kubelet's flags; they are listed in the help all the same.
    let o = sb.run(&["--help"], &[]);
    assert!(stdout(&o).contains("agent") && stdout(&o).contains("controlplane"));
    let o = sb.run(&["gce", "up", "--help"], &[]);
    let help = stdout(&o);
    assert!(
        help.contains("--num-nodes")
            && help.contains("NUM_NODES")
            && help.contains("KUBE_GCE_ZONE"),
        "{help}"
    );
}

#[test]
fn local_status_and_down_of_a_cluster_that_does_not_exist() {
    let sb = Sandbox::new();
    let o = sb.run(&["local", "status", "--name", "nosuch"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no local cluster \"nosuch\"")
            && stderr(&o).contains("rktup local up --name nosuch"),
        "{}",
        stderr(&o)
    );
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let o = sb.run(&["local", "down", "--name", "nosuch"], &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("nothing to delete"),
            "{o:?}"
        );
    }
}

/// Issue 16: `render` and `up --dry-run` print no private key, bootstrap token or URL
/// signature unless `--show-secrets` asks; every output form is grepped for each secret of the
/// cluster's saved PKI (the one `up` would use) and for `PRIVATE KEY`.
#[test]
fn render_and_dry_run_redact_secrets_unless_asked() {
    use rktup_config::{GlobalArgs, Provider};
    let sb = Sandbox::new();
    let signature = "5ec7e7516a7a7e5ec7e7516a7a7e5ec7e7516a7a7e5ec7e7516a7a7e5ec7e751";
    let url = format!(
        "https://b.s3.amazonaws.com/rktup-0123?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20261205%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature={signature}"
    );
    let env = [
        ("RKTUP_BINARY_URL", url.as_str()),
        (
            "RKTUP_BINARY_SHA256",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ),
        ("PROJECT", "redact-project"),
    ];
    let out_dir = sb.dir.path().join("out");
    for p in [Provider::Gce, Provider::Aws, Provider::Local] {
        // The cluster's PKI as `up` saves it, so every run below renders the same secrets.
        let mut vars: std::collections::BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        vars.insert("RKTUP_STATE_DIR".into(), sb.state().display().to_string());
        let lookup = |k: &str| vars.get(k).cloned();
        let settings = rktup_config::load(
            p,
            &GlobalArgs::default(),
            &std::collections::BTreeMap::new(),
            &lookup,
        )
        .unwrap();
        let pki = rktup_render::Pki::generate(&settings.name, &Default::default()).unwrap();
        pki.save(&rktup_provider::StateDir::for_cluster(&settings).pki_dir())
            .unwrap();
        let token = pki.bootstrap_token();
        // Every line of every private key's body, the token's secret, the URL's signature.
        let mut secrets: Vec<String> = pki
            .files()
            .iter()
            .filter(|(name, _)| name.ends_with(".key"))
            .flat_map(|(_, pem)| {
                pem.lines()
                    .filter(|l| !l.starts_with("-----"))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        secrets.push(token.secret.clone());
        secrets.push(signature.to_string());
        let assert_clean = |what: &str, text: &str| {
            assert!(
                !text.contains("PRIVATE KEY"),
                "{what}: a private key:\n{text}"
            );
            for s in &secrets {
                assert!(!text.contains(s.as_str()), "{what}: {s:?} printed");
            }
        };

        let provider = p.as_str();
        for role in ["master", "node"] {
            let what = format!("render {provider} --role {role}");
            let o = sb.run(&["render", provider, "--role", role], &env);
            assert!(o.status.success(), "{what}: {}", stderr(&o));
            let text = stdout(&o);
            assert_clean(&what, &text);
            assert!(
                stderr(&o).contains("--show-secrets prints them"),
                "{what}: {}",
                stderr(&o)
            );
            // The redacted cloud-config is still YAML, and says what was there.
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            if role == "master" && p == Provider::Local {
                let ca_key = pki.get("ca.key").trim_end().len();
                assert!(
                    text.contains(&format!("<redacted: {ca_key} bytes of ca.key>")),
                    "{what}:\n{text}"
                );
            } else if role == "master" {
                // A cloud master carries no key to redact: it fetches each from the staging
                // bucket by its sha256 (issue 16).
                let sha = rktup_render::sha256_hex(pki.get("ca.key"));
                assert!(
                    text.contains(&format!("pki-ca.key /etc/kubernetes/pki/ca.key {sha} 0600")),
                    "{what}:\n{text}"
                );
            } else {
                assert!(
                    text.contains(&format!(
                        "token: {}.<redacted:bootstrap-token-secret>",
                        token.id
                    )),
                    "{what}:\n{text}"
                );
            }
            if p == Provider::Aws {
                assert!(text.contains("X-Amz-Signature=<redacted>"), "{what}");
            }

            // --out writes the same redacted files.
            let dir = out_dir.join(provider);
            let o = sb.run(
                &[
                    "render",
                    provider,
                    "--role",
                    role,
                    "--out",
                    dir.to_str().unwrap(),
                ],
                &env,
            );
            assert!(o.status.success(), "{what} --out: {}", stderr(&o));
            let mut stack = vec![dir.join(role)];
            let mut files = 0;
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap() {
                    let path = e.unwrap().path();
                    if path.is_dir() {
                        stack.push(path);
                    } else {
                        assert_clean(
                            &format!("{what} --out {}", path.display()),
                            &std::fs::read_to_string(&path).unwrap(),
                        );
                        files += 1;
                    }
                }
            }
            assert!(files > 3, "{what} --out wrote {files} files");

            // --show-secrets prints what the machine receives; --out then writes each file
            // with the mode the machine gives it, never the umask's.
            if role == "master" && p == Provider::Local {
                let dir = out_dir.join(format!("{provider}-shown"));
                let o = sb.run(
                    &[
                        "render",
                        provider,
                        "--role",
                        role,
                        "--show-secrets",
                        "--out",
                        dir.to_str().unwrap(),
                    ],
                    &env,
                );
                assert!(o.status.success(), "{what} --out: {}", stderr(&o));
                let key = dir.join("master/rootfs/etc/kubernetes/pki/ca.key");
                assert_eq!(std::fs::read_to_string(&key).unwrap(), pki.get("ca.key"));
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{what} --show-secrets --out: ca.key");
            }
            let o = sb.run(
                &["render", provider, "--role", role, "--show-secrets"],
                &env,
            );
            assert!(o.status.success(), "{what} --show-secrets: {}", stderr(&o));
            let text = stdout(&o);
            if role == "master" && p != Provider::Local {
                assert!(!text.contains("PRIVATE KEY"), "{what} --show-secrets");
            } else if role == "master" {
                assert!(text.contains("PRIVATE KEY"), "{what} --show-secrets");
                let body = pki.get("ca.key").lines().nth(1).unwrap();
                assert!(text.contains(body), "{what} --show-secrets: ca.key");
            } else {
                assert!(text.contains(&token.token()), "{what} --show-secrets");
            }
            if p == Provider::Aws {
                assert!(text.contains(signature), "{what} --show-secrets: the URL");
            }
        }
        for format in ["text", "json"] {
            let what = format!("{provider} up --dry-run -o {format}");
            let o = sb.run(&[provider, "up", "--dry-run", "-o", format], &env);
            assert!(o.status.success(), "{what}: {}", stderr(&o));
            let text = stdout(&o);
            assert_clean(&what, &text);
            // A cloud master's user-data has no key left to redact (issue 16), the token
            // still is.
            let redacted = if p == Provider::Local {
                "<redacted: "
            } else {
                "<redacted:bootstrap-token-secret>"
            };
            assert!(text.contains(redacted), "{what}");
            let o = sb.run(
                &[provider, "up", "--dry-run", "--show-secrets", "-o", format],
                &env,
            );
            assert!(o.status.success(), "{what} --show-secrets: {}", stderr(&o));
            if p == Provider::Local {
                assert!(stdout(&o).contains("PRIVATE KEY"), "{what} --show-secrets");
            } else {
                assert!(!stdout(&o).contains("PRIVATE KEY"), "{what} --show-secrets");
                assert!(stdout(&o).contains(&token.secret), "{what} --show-secrets");
            }
        }
        // --show-secrets means nothing without --dry-run: refused, nothing done.
        let o = sb.run(&[provider, "up", "--show-secrets"], &env);
        assert_eq!(o.status.code(), Some(2), "{provider}: {}", stderr(&o));
    }
}
