//! `KUBE_NODE_BOOT_FORMAT=ignition` (issue 16): the master's and nodes' user-data as an
//! Ignition spec 3.4.0 config, made from the same units and files as the cloud-config, checked
//! against the spec's published JSON schema (`tests/fixtures/ignition/`, source in SOURCES.md)
//! with Python's `jsonschema` (the test venv that test.sh makes has it, with moto) and, since the
//! schema allows unknown keys, for keys the schema does not name. cloud-config stays the
//! default; a bad value fails with the setting's name and the valid ones.

use rktup_config::{BootFormat, GlobalArgs, Provider};
use rktup_provider::boot::{render_boot, Boot, PkiOrigin};
use rktup_provider::state::apiserver_names;
use rktup_provider::ClusterProvider;
use rktup_render::{Pki, Role, Templates};
use rktup_testkit::can_run;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

const PYTHON: &str = "/opt/rktup-venv/bin/python";
const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Validates the JSON file argv[2] against the schema argv[1], then walks it beside the schema
/// ($ref and allOf resolved) and prints every object key the schema does not name.
const VALIDATE: &str = r##"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
doc = json.load(open(sys.argv[2]))
jsonschema.Draft4Validator.check_schema(schema)
jsonschema.Draft4Validator(schema).validate(doc)

def resolve(s):
    while "$ref" in s:
        node = schema
        for part in s["$ref"].lstrip("#/").split("/"):
            node = node[part]
        s = node
    return s

def props(s):
    s = resolve(s)
    out = dict(s.get("properties", {}))
    for sub in s.get("allOf", []):
        out.update(props(sub))
    return out

def walk(value, s, where):
    s = resolve(s)
    if isinstance(value, dict):
        known = props(s)
        for k, v in value.items():
            if k not in known:
                print("unknown key %s.%s" % (where, k))
            else:
                walk(v, known[k], where + "." + k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            walk(v, s.get("items", {}), "%s[%d]" % (where, i))

walk(doc, schema, "$")
print("valid")
"##;

fn provider(
    p: Provider,
    state: &Path,
    extra: &[(&str, &str)],
) -> Result<Box<dyn ClusterProvider>, String> {
    let mut env: BTreeMap<String, String> = [
        ("RKTUP_STATE_DIR", state.display().to_string()),
        ("RKTUP_BINARY_URL", "https://example.invalid/rktup".into()),
        ("RKTUP_BINARY_SHA256", SHA.into()),
        ("PROJECT", "rktup-ignition".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    let lookup = move |k: &str| env.get(k).cloned();
    let settings = rktup_config::load(p, &GlobalArgs::default(), &BTreeMap::new(), &lookup)
        .map_err(|e| e.to_string())?;
    Ok(match p {
        Provider::Gce => Box::new(rktup_gce::Gce::new(settings)),
        Provider::Aws => Box::new(rktup_aws::Aws::new(settings)),
        Provider::Local => Box::new(rktup_local::Local::new(settings)),
    })
}

fn boots(p: Provider, state: &Path, extra: &[(&str, &str)]) -> Vec<(Role, Boot)> {
    let prov = provider(p, state, extra).unwrap();
    let names = apiserver_names(prov.settings(), &prov.master_endpoint().name, &[]);
    let pki = Pki::generate("ignition", &names).unwrap();
    let templates = Templates::embedded().unwrap();
    [Role::Master, Role::Node]
        .into_iter()
        .map(|role| {
            let boot =
                render_boot(prov.as_ref(), &templates, role, &pki, PkiOrigin::Ephemeral).unwrap();
            (role, boot)
        })
        .collect()
}

/// The text the machine receives (EC2 user-data may be gzipped).
fn sent(boot: &Boot) -> String {
    if boot.user_data.gzipped {
        let mut s = String::new();
        pipe("gzip", &["-dc"], &boot.user_data.bytes, &mut s);
        s
    } else {
        String::from_utf8(boot.user_data.bytes.clone()).unwrap()
    }
}

/// `cmd args` with `input` on stdin; its stdout into `out`.
fn pipe(cmd: &str, args: &[&str], input: &[u8], out: &mut String) {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Written from a thread: the output may fill its pipe before the input is all read.
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&input).unwrap();
    });
    child.stdout.take().unwrap().read_to_string(out).unwrap();
    writer.join().unwrap();
    assert!(child.wait().unwrap().success(), "{cmd} {args:?}");
}

/// A `data:;base64,` URL's contents (decoded by coreutils' base64).
fn data_url(source: &str) -> String {
    let b64 = source
        .strip_prefix("data:;base64,")
        .unwrap_or_else(|| panic!("not a base64 data URL: {source}"));
    let mut out = String::new();
    pipe("base64", &["-d"], b64.as_bytes(), &mut out);
    out
}

#[test]
fn ignition_user_data_validates_and_carries_the_same_units_and_files() {
    let name = "ignition_user_data_validates_and_carries_the_same_units_and_files";
    if !can_run(
        name,
        (!Path::new(PYTHON).exists())
            .then_some("the test venv's python with jsonschema (/opt/rktup-venv, made by test.sh)"),
    ) {
        return;
    }
    let schema = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ignition/ignition-v3_4.schema.json");
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    for p in [Provider::Gce, Provider::Aws] {
        for agent in ["embedded", "kubelet"] {
            let mut extra = vec![
                ("KUBE_NODE_BOOT_FORMAT", "ignition"),
                ("KUBE_NODE_AGENT", agent),
            ];
            if agent == "kubelet" {
                extra.push(("KUBE_VERSION", "v1.10.13"));
            }
            for (role, boot) in boots(p, state.path(), &extra) {
                let what = format!("{p:?} {agent} {}", role.as_str());
                let config = &boot.config;
                assert_eq!(config.boot_format, BootFormat::Ignition, "{what}");
                // The machine gets the Ignition config, not the cloud-config.
                let text = sent(&boot);
                assert_eq!(text, config.ignition, "{what}");
                assert_eq!(config.user_data(), config.ignition, "{what}");

                let file = out
                    .path()
                    .join(format!("{p:?}-{agent}-{}.json", role.as_str()));
                std::fs::write(&file, &text).unwrap();
                let o = Command::new(PYTHON)
                    .args(["-c", VALIDATE])
                    .arg(&schema)
                    .arg(&file)
                    .output()
                    .unwrap();
                assert!(
                    o.status.success() && String::from_utf8_lossy(&o.stdout) == "valid\n",
                    "{what}: {}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );

                // The same units and files as the cloud-config, with their modes.
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["ignition"]["version"], "3.4.0");
                let units = v["systemd"]["units"].as_array().unwrap();
                assert_eq!(units.len(), config.units.len(), "{what}");
                for (u, r) in units.iter().zip(&config.units) {
                    assert_eq!(u["name"], r.name.as_str(), "{what}");
                    assert_eq!(u["contents"], r.content.as_str(), "{what}");
                    assert_eq!(u["enabled"], true, "{what}");
                }
                let files = v["storage"]["files"].as_array().unwrap();
                assert_eq!(files.len(), config.files.len(), "{what}");
                for (f, r) in files.iter().zip(&config.files) {
                    assert_eq!(f["path"], r.path.as_str(), "{what}");
                    let mode = u32::from_str_radix(&r.permissions, 8).unwrap();
                    assert_eq!(f["mode"], mode, "{what}: {}", r.path);
                    assert_eq!(f["user"]["id"], 0);
                    assert_eq!(f["group"]["id"], 0);
                    let source = f["contents"]["source"].as_str().unwrap();
                    assert_eq!(data_url(source), r.content, "{what}: {}", r.path);
                    if role == Role::Node {
                        assert!(
                            !r.content.contains("PRIVATE KEY"),
                            "{what}: a private key in {}",
                            r.path
                        );
                    }
                }
                // The units the cloud-config starts are there: the agent and its installer.
                let installer = if agent == "embedded" {
                    "rktup-install.service"
                } else {
                    "kubelet-install.service"
                };
                for unit in ["kubelet.service", installer] {
                    assert!(units.iter().any(|u| u["name"] == unit), "{what}: {unit}");
                }

                // `render` shows the redacted view in the same format.
                let shown = config.redacted();
                assert_eq!(shown.boot_format, BootFormat::Ignition);
                assert!(shown.user_data().starts_with("{\n"), "{what}");
                assert!(!shown.user_data().contains("PRIVATE KEY"), "{what}");
            }
        }
    }
}

#[test]
fn cloud_config_is_the_default_and_a_bad_format_names_the_valid_ones() {
    let state = tempfile::tempdir().unwrap();
    for p in [Provider::Gce, Provider::Aws] {
        for (role, boot) in boots(p, state.path(), &[]) {
            assert_eq!(boot.config.boot_format, BootFormat::CloudConfig);
            assert!(
                sent(&boot).starts_with("#cloud-config\n"),
                "{p:?} {}",
                role.as_str()
            );
        }
        let err = provider(p, state.path(), &[("KUBE_NODE_BOOT_FORMAT", "yaml")])
            .err()
            .expect("KUBE_NODE_BOOT_FORMAT=yaml is refused");
        assert!(
            err.contains("KUBE_NODE_BOOT_FORMAT") && err.contains("one of cloud-config, ignition"),
            "{err}"
        );
    }
}

#[test]
fn render_prints_the_chosen_format() {
    let state = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_rktup"))
        .args(["render", "gce", "--role", "node"])
        .env("RKTUP_STATE_DIR", state.path())
        .env("PROJECT", "rktup-ignition")
        .env("RKTUP_BINARY_URL", "https://example.invalid/rktup")
        .env("RKTUP_BINARY_SHA256", SHA)
        .env("KUBE_NODE_BOOT_FORMAT", "ignition")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)));
    assert_eq!(v["ignition"]["version"], "3.4.0");
    // The bootstrap token's secret is redacted as in the cloud-config.
    let kubeconfig = v["storage"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/etc/kubernetes/bootstrap-kubeconfig")
        .expect("the bootstrap kubeconfig");
    let text = data_url(kubeconfig["contents"]["source"].as_str().unwrap());
    assert!(text.contains("<redacted"), "{text}");
}
