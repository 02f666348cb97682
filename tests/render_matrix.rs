//! The rendered boot configuration over the whole matrix: provider × role × stage1 × network ×
//! node agent. Each rendering is snapshotted whole — key material included, from fixed
//! throw-away PKIs (`tests/snapshots/render_pki/<provider>/`) so what user-data really carries
//! is visible in review — parsed as YAML, its static pods as Kubernetes Pods, and its systemd
//! units checked by the real `systemd-analyze verify`. `private_keys_in_user_data` lists which
//! private keys each cloud user-data holds.

use rktup_config::{GlobalArgs, Provider};
use rktup_provider::boot::{render_boot, PkiOrigin};
use rktup_provider::state::apiserver_names;
use rktup_provider::ClusterProvider;
use rktup_render::{ApiServerNames, NodeConfig, Pki, Role, Templates};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const STAGE1: [(&str, &str); 3] = [
    ("coreos", "coreos.com/rkt/stage1-coreos"),
    ("fly", "coreos/rkt/stage1-fly"),
    ("kvm", "coreos.com/rkt/stage1-kvm"),
];
const NETWORKS: [&str; 3] = ["kubenet", "cni", "contained"];
const AGENTS: [&str; 2] = ["embedded", "kubelet"];
const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn provider(
    p: Provider,
    env: BTreeMap<&'static str, String>,
) -> Result<Box<dyn ClusterProvider>, String> {
    let lookup = move |k: &str| env.get(k).cloned();
    let settings = rktup_config::load(p, &GlobalArgs::default(), &BTreeMap::new(), &lookup)
        .map_err(|e| e.to_string())?;
    Ok(match p {
        Provider::Gce => Box::new(rktup_gce::Gce::new(settings)),
        Provider::Aws => Box::new(rktup_aws::Aws::new(settings)),
        Provider::Local => Box::new(rktup_local::Local::new(settings)),
    })
}

fn env_for(
    stage1: &str,
    network: &str,
    agent: &str,
    state: &Path,
) -> BTreeMap<&'static str, String> {
    let mut env = BTreeMap::new();
    env.insert("KUBE_RKT_STAGE1_IMAGE", stage1.to_string());
    env.insert("NETWORK_PROVIDER", network.to_string());
    env.insert("KUBE_NODE_AGENT", agent.to_string());
    env.insert("RKTUP_STATE_DIR", state.display().to_string());
    env.insert(
        "RKTUP_BINARY_URL",
        "https://example.invalid/rktup".to_string(),
    );
    env.insert("RKTUP_BINARY_SHA256", SHA.to_string());
    env.insert("PROJECT", "rktup-test-project".to_string());
    if agent == "kubelet" {
        // The upstream kubelet dropped rkt in v1.11.
        env.insert("KUBE_VERSION", "v1.10.13".to_string());
    }
    env
}

/// `p` with stage1-coreos, kubenet and `agent`, and a fresh PKI for cluster `cluster`
/// whose API server certificate names its master.
fn kubenet_with_pki(
    p: Provider,
    agent: &str,
    state: &Path,
    cluster: &str,
) -> (Box<dyn ClusterProvider>, Pki) {
    let env = env_for("coreos.com/rkt/stage1-coreos", "kubenet", agent, state);
    let prov = provider(p, env).unwrap();
    let names = apiserver_names(prov.settings(), &prov.master_endpoint().name, &[]);
    let pki = Pki::generate(cluster, &names).unwrap();
    (prov, pki)
}

/// The fixed PKI of `p`'s renderings: throw-away keys (they grant nothing anywhere) so snapshots
/// are stable while showing real PEM bodies. One per provider, since the API server certificate
/// names the provider's master. `RKTUP_BLESS=1` makes a missing or incomplete one anew.
fn fixed_pki(p: Provider, names: &ApiServerNames) -> Pki {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots/render_pki")
        .join(p.as_str());
    match Pki::load(&dir) {
        Ok(pki) => pki,
        Err(_) if std::env::var_os("RKTUP_BLESS").is_some() => {
            let pki = Pki::generate("render-matrix", names).expect("generate a PKI");
            pki.save(&dir).expect("save the fixed PKI");
            pki
        }
        Err(e) => panic!(
            "{e}\nthe fixed render PKI is missing or incomplete: run RKTUP_BLESS=1 cargo test --test render_matrix"
        ),
    }
}

fn check_yaml(config: &NodeConfig, what: &str) {
    assert!(config.cloud_config.starts_with("#cloud-config\n"), "{what}");
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&config.cloud_config).unwrap_or_else(|e| panic!("{what}: {e}"));
    let units = doc["coreos"]["units"].as_sequence().expect("coreos.units");
    let files = doc["write_files"].as_sequence().expect("write_files");
    assert_eq!(units.len(), config.units.len(), "{what}");
    assert_eq!(files.len(), config.files.len(), "{what}");
    // What the YAML holds is byte for byte what was rendered.
    for (u, rendered) in units.iter().zip(&config.units) {
        assert_eq!(u["name"].as_str(), Some(rendered.name.as_str()), "{what}");
        assert_eq!(
            u["content"].as_str().map(str::trim_end),
            Some(rendered.content.trim_end()),
            "{what} {}",
            rendered.name
        );
    }
    for (f, rendered) in files.iter().zip(&config.files) {
        assert_eq!(f["path"].as_str(), Some(rendered.path.as_str()), "{what}");
        assert_eq!(
            f["content"].as_str().map(str::trim_end),
            Some(rendered.content.trim_end()),
            "{what} {}",
            rendered.path
        );
    }
    let manifests: Vec<_> = config
        .files
        .iter()
        .filter(|f| f.path.starts_with("/etc/kubernetes/manifests/"))
        .collect();
    if config.role == Role::Master {
        assert_eq!(
            manifests.len(),
            5,
            "{what}: etcd, apiserver, controller-manager, scheduler, node-bootstrap"
        );
    } else {
        assert!(manifests.is_empty(), "{what}");
    }
    for m in manifests {
        let pod: k8s_openapi::api::core::v1::Pod = serde_yaml_ng::from_str(&m.content)
            .unwrap_or_else(|e| panic!("{what} {}: {e}", m.path));
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.host_network, Some(true), "{what} {}", m.path);
        assert!(spec.containers[0]
            .image
            .as_deref()
            .unwrap_or("")
            .starts_with("registry.k8s.io/"));
    }
    for f in config
        .files
        .iter()
        .filter(|f| f.path.ends_with("kubeconfig"))
    {
        let kc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&f.content).expect("kubeconfig");
        assert_eq!(kc["kind"].as_str(), Some("Config"));
    }
}

/// A root for `systemd-analyze verify --root`: the host's unit library, plus stand-ins for the
/// binaries units run (added by `check_units`).
fn verify_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let lib = root.path().join("usr/lib/systemd");
    std::fs::create_dir_all(&lib).unwrap();
    let status = Command::new("cp")
        .args(["-r", "/lib/systemd/system"])
        .arg(&lib)
        .status()
        .unwrap();
    assert!(status.success());
    root
}

/// Runs the real `systemd-analyze verify` on every unit of `config` inside `root`.
fn check_units(root: &tempfile::TempDir, config: &NodeConfig, what: &str) {
    let units_dir = root.path().join("etc/systemd/system");
    let _ = std::fs::remove_dir_all(&units_dir);
    std::fs::create_dir_all(&units_dir).unwrap();
    let mut names = Vec::new();
    for u in &config.units {
        std::fs::write(units_dir.join(&u.name), &u.content).unwrap();
        names.push(units_dir.join(&u.name));
        for line in u.content.lines() {
            let Some((key, cmd)) = line.split_once('=') else {
                continue;
            };
            if !key.starts_with("Exec") {
                continue;
            }
            let bin = cmd
                .trim_start_matches(['-', '@', '+', '!', ':'])
                .split_whitespace()
                .next()
                .unwrap_or("");
            assert!(bin.starts_with('/'), "{what} {}: {line}", u.name);
            let path = root.path().join(bin.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .args(&names)
        .output()
        .expect("systemd-analyze is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "{what}: systemd-analyze verify:\n{stderr}"
    );
}

#[test]
fn matrix() {
    let templates = Templates::embedded().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = verify_root();
    let mut rendered = 0;
    let mut refused = 0;
    for p in Provider::ALL {
        for (flavour, stage1) in STAGE1 {
            for network in NETWORKS {
                for agent in AGENTS {
                    let what = format!("{p}-{flavour}-{network}-{agent}");
                    let prov = match provider(p, env_for(stage1, network, agent, state.path())) {
                        Ok(prov) => prov,
                        Err(e) => {
                            // The seed: the KVM stage1 needs rkt's contained network.
                            assert!(flavour == "kvm" && network != "contained", "{what}: {e}");
                            assert!(
                                e.contains("NETWORK_PROVIDER") && e.contains("contained"),
                                "{e}"
                            );
                            refused += 1;
                            continue;
                        }
                    };
                    let master = prov.master_endpoint();
                    let names = apiserver_names(prov.settings(), &master.name, &[]);
                    let pki = fixed_pki(p, &names);
                    for role in [Role::Master, Role::Node] {
                        let what = format!("{what}-{}", role.as_str());
                        let boot = render_boot(
                            prov.as_ref(),
                            &templates,
                            role,
                            &pki,
                            PkiOrigin::Ephemeral,
                        )
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                        check_yaml(&boot.config, &what);
                        check_units(&root, &boot.config, &what);
                        let text = &boot.config.cloud_config;
                        assert!(
                            text.contains(&format!("--rkt-stage1-image={}", normalised(stage1))),
                            "{what}"
                        );
                        assert!(text.contains(SHA) || agent == "kubelet", "{what}");
                        insta::assert_snapshot!(what, text);
                        rendered += 1;
                    }
                }
            }
        }
    }
    assert_eq!(rendered, 2 * 3 * (3 * 3 * 2 - 4));
    assert_eq!(refused, 3 * 4);
}

fn normalised(stage1: &str) -> String {
    stage1.replace("coreos/rkt/", "coreos.com/rkt/")
}

#[test]
fn contained_network_is_the_seeds_example_verbatim() {
    let state = tempfile::tempdir().unwrap();
    let templates = Templates::embedded().unwrap();
    let seed_bridge = r#"{
  "name": "rkt.kubernetes.io",
  "type": "bridge",
  "bridge": "mybridge",
  "mtu": 1460,
  "addIf": "true",
  "isGateway": true,
  "ipMasq": true,
  "ipam": {
    "type": "host-local",
    "subnet": "10.22.0.0/16",
    "gateway": "10.22.0.1",
    "routes": [
      { "dst": "0.0.0.0/0" }
    ]
  }
}
"#;
    let seed_flannel = r#"{
    "name": "rkt.kubernetes.io",
    "type": "flannel",
    "delegate": {
        "isDefaultGateway": true
    }
}
"#;
    for (backend, file, expected) in [
        (
            "bridge",
            "/etc/rkt/net.d/k8s_network_example.conf",
            seed_bridge,
        ),
        (
            "flannel",
            "/etc/rkt/net.d/k8s_flannel_example.conf",
            seed_flannel,
        ),
    ] {
        let mut env = env_for(
            "coreos.com/rkt/stage1-coreos",
            "contained",
            "embedded",
            state.path(),
        );
        env.insert("RKT_CONTAINED_NETWORK", backend.to_string());
        let prov = provider(Provider::Gce, env).unwrap();
        let pki = Pki::generate("k", &Default::default()).unwrap();
        let boot = render_boot(
            prov.as_ref(),
            &templates,
            Role::Node,
            &pki,
            PkiOrigin::Ephemeral,
        )
        .unwrap();
        let f = boot
            .config
            .files
            .iter()
            .find(|f| f.path == file)
            .expect(file);
        assert_eq!(f.content, expected);
        assert!(
            boot.config.cloud_config.contains("--network-plugin= \\"),
            "empty plugin selects the contained network"
        );
        assert!(boot
            .config
            .cloud_config
            .contains("--cni-conf-dir=/etc/rkt/net.d"));
    }
}

/// The agent accepts every flag the rendered `kubelet.service` passes it, for every provider
/// and network: a node never boots into an agent that rejects its own unit.
#[test]
fn rendered_agent_flags_parse() {
    use clap::Parser;
    #[derive(Parser)]
    struct Agent {
        #[command(flatten)]
        args: rktup_agent::cli::AgentArgs,
    }
    let templates = Templates::embedded().unwrap();
    let state = tempfile::tempdir().unwrap();
    for p in Provider::ALL {
        for network in NETWORKS {
            let prov = provider(
                p,
                env_for(
                    "coreos.com/rkt/stage1-coreos",
                    network,
                    "embedded",
                    state.path(),
                ),
            )
            .unwrap();
            let pki = Pki::generate("k", &Default::default()).unwrap();
            for role in [Role::Master, Role::Node] {
                let boot = render_boot(prov.as_ref(), &templates, role, &pki, PkiOrigin::Ephemeral)
                    .unwrap();
                let unit = &boot
                    .config
                    .units
                    .iter()
                    .find(|u| u.name == "kubelet.service")
                    .unwrap()
                    .content;
                let exec = unit
                    .split("ExecStart=/opt/bin/rktup agent")
                    .nth(1)
                    .unwrap()
                    .split("\n#")
                    .next()
                    .unwrap()
                    .replace("\\\n", " ");
                let exec = exec.lines().next().unwrap();
                let argv: Vec<&str> = std::iter::once("agent")
                    .chain(exec.split_whitespace())
                    .collect();
                let parsed = Agent::try_parse_from(&argv)
                    .unwrap_or_else(|e| panic!("{p} {network} {role:?}: {e}\n{argv:?}"));
                assert_eq!(
                    parsed.args.network_plugin,
                    prov.settings().network.kubelet_plugin()
                );
                assert!(parsed.args.allow_privileged);
                assert_eq!(parsed.args.container_runtime, "rkt");
            }
        }
    }
}

/// The user-data as the cloud receives it, as text (AWS gzips a large one, as kube-up did).
fn sent_text(boot: &rktup_provider::boot::Boot) -> String {
    if !boot.user_data.gzipped {
        return String::from_utf8(boot.user_data.bytes.clone()).expect("user-data is UTF-8");
    }
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip is installed");
    let mut stdin = child.stdin.take().expect("gzip's stdin");
    let bytes = boot.user_data.bytes.clone();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &bytes));
    let out = child.wait_with_output().expect("gunzip the user-data");
    writer.join().expect("writer").expect("write to gzip");
    assert!(out.status.success(), "gzip -dc failed");
    String::from_utf8(out.stdout).expect("user-data is UTF-8")
}

/// Every private key block in `text`, by the PKI file it is (`kubelet.key`) and the path the
/// cloud-config writes it to. A key that is no file of the PKI is named `unknown`.
fn private_keys(text: &str, pki: &Pki, what: &str) -> Vec<(String, String)> {
    // Base64-wrapped PEM (a kubeconfig's client-key-data, write_files' `encoding: b64`) would
    // hide a key from the PEM scan below: refuse it, so the scan stays complete.
    for hidden in ["client-key-data", "LS0tLS1CRUdJTi", "encoding:"] {
        assert!(
            !text.contains(hidden),
            "{what}: `{hidden}` in user-data: extend this test to decode it"
        );
    }
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).expect("cloud-config YAML");
    let mut found = Vec::new();
    for f in doc["write_files"].as_sequence().expect("write_files") {
        let path = f["path"].as_str().unwrap_or("?").to_string();
        let content = f["content"].as_str().unwrap_or("");
        let mut rest = content;
        while let Some(begin) = rest.find("-----BEGIN ") {
            let block = &rest[begin..];
            let label_end = block["-----BEGIN ".len()..]
                .find("-----")
                .map(|i| i + "-----BEGIN ".len())
                .expect("a PEM label");
            let label = &block["-----BEGIN ".len()..label_end];
            let end_marker = format!("-----END {label}-----");
            let end = block.find(&end_marker).expect("a PEM END line") + end_marker.len();
            let pem = &block[..end];
            if label.ends_with("PRIVATE KEY") {
                let name = pki
                    .files()
                    .iter()
                    .find(|(_, v)| v.trim() == pem.trim())
                    .map(|(k, _)| k.clone())
                    .unwrap_or_else(|| "unknown".into());
                found.push((name, path.clone()));
            }
            rest = &block[end..];
        }
    }
    // Nothing outside write_files (units, other keys) carries a key either.
    assert_eq!(
        text.matches("PRIVATE KEY-----").count(),
        2 * found.len(),
        "{what}: a private key outside write_files' PEM files"
    );
    found.sort();
    found
}

/// Which private keys each cloud user-data holds: none on a node (it joins with a bootstrap
/// token), none on the master (it fetches them from the staging bucket, issue 16). A change in
/// either list — a key added, a new key type — fails here and must update this record on
/// purpose.
#[test]
fn private_keys_in_user_data() {
    let templates = Templates::embedded().unwrap();
    let state = tempfile::tempdir().unwrap();
    let files = |names: &[&str]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = names
            .iter()
            .map(|n| (n.to_string(), format!("/etc/kubernetes/pki/{n}")))
            .collect();
        v.sort();
        v
    };
    // Nodes carry only a bootstrap token; the master only the hashes of its keys.
    let node = files(&[]);
    let master = files(&[]);
    for p in [Provider::Gce, Provider::Aws] {
        for agent in AGENTS {
            let (prov, pki) = kubenet_with_pki(p, agent, state.path(), "keys");
            for (role, want) in [(Role::Node, &node), (Role::Master, &master)] {
                let what = format!("{p}-{agent}-{}", role.as_str());
                let boot = render_boot(prov.as_ref(), &templates, role, &pki, PkiOrigin::Ephemeral)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let text = sent_text(&boot);
                assert_eq!(text, boot.config.cloud_config, "{what}: sent ≠ rendered");
                let got = private_keys(&text, &pki, &what);
                eprintln!("{what}: {got:?}");
                assert_eq!(&got, want, "{what}: private keys in user-data");
            }
        }
    }
}

/// The two halves of the TLS bootstrap are rendered together: the node's token is the master's
/// bootstrap Secret, the API server accepts bootstrap tokens, kube-controller-manager signs
/// with the cluster CA, and the master's first boot applies kubeadm's bindings.
#[test]
fn nodes_join_with_the_masters_bootstrap_token() {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    let templates = Templates::embedded().unwrap();
    let state = tempfile::tempdir().unwrap();
    for p in [Provider::Gce, Provider::Aws] {
        for agent in AGENTS {
            let what = format!("{p}-{agent}");
            let (prov, pki) = kubenet_with_pki(p, agent, state.path(), "join");
            let render = |role| {
                render_boot(prov.as_ref(), &templates, role, &pki, PkiOrigin::Ephemeral)
                    .unwrap_or_else(|e| panic!("{what}: {e}"))
                    .config
            };
            let (node, master) = (render(Role::Node), render(Role::Master));
            let file = |c: &NodeConfig, path: &str| -> String {
                c.files
                    .iter()
                    .find(|f| f.path == path)
                    .map(|f| f.content.clone())
                    .unwrap_or_else(|| panic!("{what}: no {path}"))
            };

            // The node: a bootstrap kubeconfig with the token, the agent told to use it.
            let boot_kc: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(&file(&node, "/etc/kubernetes/bootstrap-kubeconfig"))
                    .unwrap();
            let token = boot_kc["users"][0]["user"]["token"]
                .as_str()
                .expect("a token")
                .to_string();
            let (id, secret) = token.split_once('.').expect("id.secret");
            assert!(
                id.len() == 6
                    && secret.len() == 16
                    && token
                        .chars()
                        .all(|c| c == '.' || c.is_ascii_lowercase() || c.is_ascii_digit()),
                "{what}: {token} is not [a-z0-9]{{6}}.[a-z0-9]{{16}}"
            );
            assert!(
                !node
                    .files
                    .iter()
                    .any(|f| f.path.ends_with(".key")
                        || f.path == "/etc/kubernetes/kubelet.kubeconfig"),
                "{what}: the node gets a key or a ready kubeconfig"
            );
            let unit = &node
                .units
                .iter()
                .find(|u| u.name == "kubelet.service")
                .expect("kubelet.service")
                .content;
            assert!(
                unit.contains("--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubeconfig")
                    && unit.contains("--kubeconfig=/etc/kubernetes/kubelet.kubeconfig")
                    && unit.contains("--rotate-certificates"),
                "{what}: {unit}"
            );

            // The master: the same token as a bootstrap Secret, and kubeadm's three bindings.
            let objects = file(&master, "/etc/kubernetes/bootstrap/node-bootstrap.yaml");
            let docs: Vec<&str> = objects.split("\n---\n").collect();
            assert_eq!(docs.len(), 4, "{what}: {objects}");
            let s: Secret = serde_yaml_ng::from_str(docs[0]).expect("a Secret");
            assert_eq!(s.type_.as_deref(), Some("bootstrap.kubernetes.io/token"));
            assert_eq!(
                s.metadata.name.as_deref(),
                Some(format!("bootstrap-token-{id}").as_str())
            );
            assert_eq!(s.metadata.namespace.as_deref(), Some("kube-system"));
            let data = s.string_data.expect("stringData");
            assert_eq!(data.get("token-id").map(String::as_str), Some(id));
            assert_eq!(data.get("token-secret").map(String::as_str), Some(secret));
            assert_eq!(
                data.get("usage-bootstrap-authentication")
                    .map(String::as_str),
                Some("true")
            );
            let group = "system:bootstrappers:kubeadm:default-node-token";
            assert_eq!(
                data.get("auth-extra-groups").map(String::as_str),
                Some(group)
            );
            let bindings: Vec<(String, String, String)> = docs[1..]
                .iter()
                .map(|d| {
                    let b: ClusterRoleBinding = serde_yaml_ng::from_str(d).expect("a binding");
                    let subject = b.subjects.unwrap_or_default();
                    assert_eq!(subject.len(), 1);
                    (
                        b.metadata.name.unwrap_or_default(),
                        b.role_ref.name,
                        format!("{}/{}", subject[0].kind, subject[0].name),
                    )
                })
                .collect();
            let want = |n: &str, r: &str, s: &str| (n.to_string(), r.to_string(), s.to_string());
            assert_eq!(
                bindings,
                vec![
                    want(
                        "kubeadm:kubelet-bootstrap",
                        "system:node-bootstrapper",
                        &format!("Group/{group}")
                    ),
                    want(
                        "kubeadm:node-autoapprove-bootstrap",
                        "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                        &format!("Group/{group}")
                    ),
                    want(
                        "kubeadm:node-autoapprove-certificate-rotation",
                        "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                        "Group/system:nodes"
                    ),
                ],
                "{what}"
            );

            // Who accepts the token, who signs, and who applies the objects above.
            let command = |manifest: &str| -> Vec<String> {
                let pod: k8s_openapi::api::core::v1::Pod = serde_yaml_ng::from_str(&file(
                    &master,
                    &format!("/etc/kubernetes/manifests/{manifest}.yaml"),
                ))
                .unwrap();
                pod.spec.unwrap().containers[0]
                    .command
                    .clone()
                    .unwrap_or_default()
            };
            let apiserver = command("kube-apiserver");
            assert!(
                apiserver
                    .iter()
                    .any(|a| a == "--enable-bootstrap-token-auth=true"
                        || a == "--experimental-bootstrap-token-auth=true"),
                "{what}: {apiserver:?}"
            );
            let kcm = command("kube-controller-manager");
            for flag in [
                "--cluster-signing-cert-file=/etc/kubernetes/pki/ca.crt",
                "--cluster-signing-key-file=/etc/kubernetes/pki/ca.key",
                "--controllers=*,bootstrapsigner,tokencleaner",
            ] {
                assert!(kcm.iter().any(|a| a == flag), "{what}: {flag} in {kcm:?}");
            }
            let apply = command("node-bootstrap");
            assert!(
                apply
                    .iter()
                    .any(|a| a == "--kubeconfig=/etc/kubernetes/admin.conf")
                    && apply.iter().any(|a| a == "apply")
                    && apply
                        .iter()
                        .any(|a| a == "--filename=/etc/kubernetes/bootstrap/"),
                "{what}: {apply:?}"
            );
            let admin: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(&file(&master, "/etc/kubernetes/admin.conf")).unwrap();
            assert_eq!(
                admin["users"][0]["user"]["client-key"].as_str(),
                Some("/etc/kubernetes/pki/admin.key")
            );
        }
    }
}

/// The master fetches each private key from the staging bucket (its URL, where it goes, its
/// sha256, mode 0600) as the machine's identity; nodes name no key object; both fetch the
/// staged binary as the machine's identity, not with a plain or pre-signed URL.
#[test]
fn master_keys_and_binary_come_from_the_staging_bucket_by_hash() {
    let templates = Templates::embedded().unwrap();
    let state = tempfile::tempdir().unwrap();
    for p in [Provider::Gce, Provider::Aws] {
        let mut env = env_for(
            "coreos.com/rkt/stage1-coreos",
            "kubenet",
            "embedded",
            state.path(),
        );
        // The binary as `up` stages it: the bucket's object, not a URL given by the user.
        env.remove("RKTUP_BINARY_URL");
        env.remove("RKTUP_BINARY_SHA256");
        let prov = provider(p, env).unwrap();
        let master = prov.master_endpoint();
        let staging = master
            .staging
            .clone()
            .expect("a cloud cluster has a bucket");
        let (auth, base) = match p {
            Provider::Gce => ("gce".to_string(), "https://storage.googleapis.com/"),
            _ => ("aws:us-west-2".to_string(), "https://"),
        };
        assert!(staging.base_url.starts_with(base), "{staging:?}");
        let names = apiserver_names(prov.settings(), &master.name, &[]);
        let pki = Pki::generate("bucket", &names).unwrap();
        let render = |role| {
            render_boot(prov.as_ref(), &templates, role, &pki, PkiOrigin::Ephemeral)
                .unwrap()
                .config
        };
        let (m, n) = (render(Role::Master), render(Role::Node));
        let unit = |c: &NodeConfig, name: &str| {
            c.units
                .iter()
                .find(|u| u.name == name)
                .unwrap_or_else(|| panic!("{p}: no {name}"))
                .content
                .clone()
        };
        let secrets = unit(&m, "rktup-master-secrets.service");
        for file in rktup_render::MASTER_STAGED_KEYS {
            let line = format!(
                "ExecStart=/opt/bin/rktup-fetch {auth} {}pki-{file} /etc/kubernetes/pki/{file} {} 0600",
                staging.base_url,
                rktup_render::sha256_hex(pki.get(file))
            );
            assert!(secrets.contains(&line), "{p}: no `{line}` in\n{secrets}");
            assert!(
                !m.files
                    .iter()
                    .any(|f| f.path.ends_with(&format!("/{file}"))),
                "{p}: {file} is a file of the master's user-data"
            );
        }
        assert!(secrets.contains("Before=kubelet.service"), "{secrets}");
        assert_eq!(m.units[0].name, "rktup-master-secrets.service", "{p}");
        assert!(!n.units.iter().any(|u| u.name.contains("secrets")), "{p}");
        assert!(!n.cloud_config.contains("pki-ca.key"), "{p}");
        for c in [&m, &n] {
            let install = unit(c, "rktup-install.service");
            let want = format!(
                "ExecStart=/opt/bin/rktup-fetch {auth} {}rktup-",
                staging.base_url
            );
            assert!(install.contains(&want), "{p}: {install}");
            assert!(!install.contains("/usr/bin/curl"), "{p}: {install}");
            let script = c
                .files
                .iter()
                .find(|f| f.path == "/opt/bin/rktup-fetch")
                .expect("the fetch script");
            assert_eq!(script.permissions, "0755");
        }
        // The token's expiry: a placeholder the master's first boot fills in (24 h, kubeadm's).
        let objects = m
            .files
            .iter()
            .find(|f| f.path == "/etc/kubernetes/bootstrap/node-bootstrap.yaml")
            .unwrap();
        assert!(
            objects
                .content
                .contains("expiration: \"@BOOTSTRAP_TOKEN_EXPIRATION@\""),
            "{}",
            objects.content
        );
        assert!(secrets.contains("date -u -d \"+24 hours\""), "{secrets}");
    }
}
