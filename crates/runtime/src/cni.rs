//! A CNI runtime (the caller side of the CNI spec): load `.conf` / `.conflist` files, find plugin
//! binaries, run ADD / DEL / CHECK chains with prevResult and runtimeConfig (portMappings for
//! portmap). Versions 0.1.0 to 1.0.0 are passed through; results of either shape (`ips` or the old
//! `ip4`) are understood.

use crate::kubenet;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("failed to read CNI config dir {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to parse CNI config {file}: {msg}")]
    BadConfig { file: PathBuf, msg: String },
    #[error("no CNI network named {name:?} in {dir} (looked at {files:?})")]
    NoNetwork {
        name: String,
        dir: PathBuf,
        files: Vec<String>,
    },
    #[error("no CNI config in {dir}")]
    NoConfig { dir: PathBuf },
    #[error(
        "failed to find CNI plugin {plugin:?} (network {network} from {file}) in {searched:?}"
    )]
    PluginNotFound {
        plugin: String,
        network: String,
        file: PathBuf,
        searched: Vec<PathBuf>,
    },
    #[error("CNI plugin {plugin} {command} failed: {msg}")]
    Plugin {
        plugin: String,
        command: &'static str,
        msg: String,
    },
}

/// One network: a conflist, or a single .conf turned into a one-plugin list.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Network {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
    pub file: PathBuf,
}

pub fn parse_network(file: &Path, text: &str) -> Result<Network, CniError> {
    let bad = |msg: String| CniError::BadConfig {
        file: file.to_path_buf(),
        msg,
    };
    let v: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no \"name\"".into()))?
        .to_string();
    // The spec: a config without cniVersion is 0.1.0.
    let cni_version = v
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("0.1.0")
        .to_string();
    let plugins = if file.extension().and_then(|e| e.to_str()) == Some("conflist")
        || v.get("plugins").is_some()
    {
        v.get("plugins")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| bad("\"plugins\" is not a list".into()))?
    } else {
        vec![v.clone()]
    };
    for p in &plugins {
        if p.get("type").and_then(Value::as_str).is_none() {
            return Err(bad("a plugin has no \"type\"".into()));
        }
    }
    if plugins.is_empty() {
        return Err(bad("no plugins".into()));
    }
    Ok(Network {
        name,
        cni_version,
        plugins,
        file: file.to_path_buf(),
    })
}

/// Load the network named `name` from `dir`, or (name None: kubelet's rule) the first valid
/// config in lexical order.
pub fn load_network(dir: &Path, name: Option<&str>) -> Result<Network, CniError> {
    let rd = std::fs::read_dir(dir).map_err(|source| CniError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            )
        })
        .collect();
    files.sort();
    let mut seen = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|source| CniError::ReadDir {
            dir: f.clone(),
            source,
        })?;
        let net = parse_network(f, &text)?;
        seen.push(
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        match name {
            Some(n) if net.name != n => continue,
            _ => return Ok(net),
        }
    }
    match name {
        Some(n) => Err(CniError::NoNetwork {
            name: n.into(),
            dir: dir.to_path_buf(),
            files: seen,
        }),
        None => Err(CniError::NoConfig {
            dir: dir.to_path_buf(),
        }),
    }
}

pub fn default_plugin_dirs(extra: Option<&Path>) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(e) = extra {
        v.push(e.to_path_buf());
    }
    v.push("/usr/lib/cni".into());
    v.push("/opt/cni/bin".into());
    v
}

/// Check every plugin of a network exists before anything of the pod runs (the in-process
/// kubenet type is always there).
pub fn find_plugins(net: &Network, dirs: &[PathBuf]) -> Result<(), CniError> {
    for p in &net.plugins {
        let t = p.get("type").and_then(Value::as_str).unwrap_or_default();
        if t == kubenet::PLUGIN_TYPE {
            continue;
        }
        find_plugin(t, dirs).ok_or_else(|| CniError::PluginNotFound {
            plugin: t.into(),
            network: net.name.clone(),
            file: net.file.clone(),
            searched: dirs.to_vec(),
        })?;
    }
    Ok(())
}

pub fn find_plugin(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if name.contains('/') || name.is_empty() {
        return None;
    }
    dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Arguments for one attachment.
pub struct Attachment<'a> {
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    /// `runtimeConfig` offered to plugins that declare the matching capability.
    pub runtime_config: &'a Value,
    pub plugin_dirs: &'a [PathBuf],
}

fn invoke(
    net: &Network,
    plugin: &Value,
    command: &'static str,
    att: &Attachment,
    prev: Option<&Value>,
) -> Result<Value, CniError> {
    let t = plugin
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    // The in-process plugin has no binary (its path stays empty and is never executed).
    let path = if t == kubenet::PLUGIN_TYPE {
        PathBuf::new()
    } else {
        find_plugin(&t, att.plugin_dirs).ok_or_else(|| CniError::PluginNotFound {
            plugin: t.clone(),
            network: net.name.clone(),
            file: net.file.clone(),
            searched: att.plugin_dirs.to_vec(),
        })?
    };
    let mut conf = plugin.clone();
    if let Some(o) = conf.as_object_mut() {
        o.insert("name".into(), json!(net.name));
        o.insert("cniVersion".into(), json!(net.cni_version));
        if let Some(p) = prev {
            o.insert("prevResult".into(), p.clone());
        }
        // Only the capabilities the plugin declares (CONVENTIONS.md, "Dynamic plugin specific fields").
        let caps: Vec<String> = o
            .get("capabilities")
            .and_then(Value::as_object)
            .map(|c| {
                c.iter()
                    .filter(|(_, v)| v.as_bool() == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut rc = serde_json::Map::new();
        if let Some(all) = att.runtime_config.as_object() {
            for k in caps {
                if let Some(v) = all.get(&k) {
                    rc.insert(k, v.clone());
                }
            }
        }
        if !rc.is_empty() {
            o.insert("runtimeConfig".into(), Value::Object(rc));
        }
    }
    if t == kubenet::PLUGIN_TYPE {
        return in_process(&t, command, &conf, att);
    }
    let path_env = att
        .plugin_dirs
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mut child = Command::new(&path)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", att.container_id)
        .env("CNI_NETNS", att.netns)
        .env("CNI_IFNAME", att.ifname)
        .env("CNI_PATH", &path_env)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::Plugin {
            plugin: t.clone(),
            command,
            msg: format!("failed to start {}: {e}", path.display()),
        })?;
    let input = serde_json::to_vec(&conf).unwrap_or_default();
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&input);
    }
    let out = child.wait_with_output().map_err(|e| CniError::Plugin {
        plugin: t.clone(),
        command,
        msg: e.to_string(),
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let msg = serde_json::from_str::<Value>(&stdout)
            .ok()
            .and_then(|v| {
                let m = v.get("msg")?.as_str()?.to_string();
                let d = v.get("details").and_then(Value::as_str).unwrap_or("");
                Some(if d.is_empty() { m } else { format!("{m}: {d}") })
            })
            .unwrap_or_else(|| {
                format!(
                    "{} {}",
                    stdout.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            });
        return Err(CniError::Plugin {
            plugin: t,
            command,
            msg,
        });
    }
    if stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&stdout).map_err(|e| CniError::Plugin {
        plugin: t,
        command,
        msg: format!("bad result: {e}"),
    })
}

/// ADD through the chain; returns the final result.
pub fn add(net: &Network, att: &Attachment) -> Result<Value, CniError> {
    let mut prev: Option<Value> = None;
    for p in &net.plugins {
        let r = invoke(net, p, "ADD", att, prev.as_ref())?;
        if !r.is_null() {
            prev = Some(r);
        }
    }
    Ok(prev.unwrap_or(Value::Null))
}

/// DEL in reverse order; every plugin is asked even if one fails (the first error is returned),
/// so IPs are released even when a later plugin is unhappy.
pub fn del(net: &Network, att: &Attachment, prev: Option<&Value>) -> Result<(), CniError> {
    let mut first = None;
    let prev = if version_at_least(&net.cni_version, 0, 4) {
        prev
    } else {
        None
    };
    for p in net.plugins.iter().rev() {
        if let Err(e) = invoke(net, p, "DEL", att, prev) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// CHECK (only defined from 0.4.0 on).
pub fn check(net: &Network, att: &Attachment, prev: &Value) -> Result<(), CniError> {
    if !version_at_least(&net.cni_version, 0, 4) {
        return Ok(());
    }
    for p in &net.plugins {
        invoke(net, p, "CHECK", att, Some(prev))?;
    }
    Ok(())
}

fn version_at_least(v: &str, major: u32, minor: u32) -> bool {
    let mut it = v.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// First IPv4 address (without prefix) of a result of any version.
pub fn result_ip(r: &Value) -> Option<String> {
    let from_ips = r.get("ips").and_then(Value::as_array).and_then(|ips| {
        ips.iter()
            .filter_map(|i| i.get("address").and_then(Value::as_str))
            .find(|a| !a.contains(':'))
            .map(str::to_string)
    });
    let addr = from_ips.or_else(|| {
        r.get("ip4")
            .and_then(|i| i.get("ip"))
            .and_then(Value::as_str)
            .map(str::to_string)
    })?;
    Some(addr.split('/').next().unwrap_or(&addr).to_string())
}

/// Every address (without prefix) of a result of any version: IPv4 ones first, as kubelet
/// orders `podIPs` (the primary family first).
pub fn result_ips(r: &Value) -> Vec<String> {
    let mut out: Vec<String> = r
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("address").and_then(Value::as_str))
        .chain(
            ["ip4", "ip6"]
                .iter()
                .filter_map(|k| r.get(*k).and_then(|i| i.get("ip")).and_then(Value::as_str)),
        )
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
        .collect();
    out.sort_by_key(|a| a.contains(':'));
    out.dedup();
    out
}

/// The in-process kubenet plugin (no binary: see `kubenet`), with the binary plugins' contract:
/// ADD returns a result, DEL and CHECK return nothing.
fn in_process(
    plugin: &str,
    command: &'static str,
    conf: &Value,
    att: &Attachment,
) -> Result<Value, CniError> {
    let pod = kubenet::Attachment {
        container_id: att.container_id,
        netns: att.netns,
        ifname: att.ifname,
    };
    let r = match command {
        "ADD" => kubenet::add(conf, &pod),
        "DEL" => kubenet::del(conf, &pod).map(|()| Value::Null),
        _ => kubenet::check(conf, &pod).map(|()| Value::Null),
    };
    r.map_err(|e| CniError::Plugin {
        plugin: format!("{plugin} (in-process)"),
        command,
        msg: e.to_string(),
    })
}

/// The conflist the agent writes for `--network-plugin=kubenet`: the in-process kubenet plugin
/// (`cbr0` bridge, host-local-style IPAM for the node's pod CIDR, hostPorts).
pub fn kubenet_conflist(pod_cidr: &str, data_dir: &Path) -> Value {
    kubenet::conflist(pod_cidr, data_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_bridge_example_parses_as_0_1_0() {
        let text = r#"{
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
}"#;
        let n = parse_network(Path::new("/etc/rkt/net.d/k8s_network_example.conf"), text).unwrap();
        assert_eq!(n.name, "rkt.kubernetes.io");
        assert_eq!(n.cni_version, "0.1.0");
        assert_eq!(n.plugins.len(), 1);
    }

    #[test]
    fn flannel_example_fails_naming_the_plugin() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("k8s_flannel_example.conf"),
            r#"{"name":"rkt.kubernetes.io","type":"flannel","delegate":{"isDefaultGateway":true}}"#,
        )
        .unwrap();
        let n = load_network(dir.path(), Some("rkt.kubernetes.io")).unwrap();
        let e = find_plugins(&n, &default_plugin_dirs(None)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("\"flannel\"") && msg.contains("k8s_flannel_example.conf"),
            "{msg}"
        );
        let e = load_network(dir.path(), Some("other")).unwrap_err();
        assert!(e.to_string().contains("k8s_flannel_example.conf"), "{e}");
    }

    #[test]
    fn result_ips_of_all_versions() {
        assert_eq!(
            result_ip(&json!({"ip4": {"ip": "10.22.0.5/16"}})).as_deref(),
            Some("10.22.0.5")
        );
        assert_eq!(
            result_ip(&json!({"ips": [{"address": "fd00::2/64"}, {"address": "10.1.2.3/24"}]}))
                .as_deref(),
            Some("10.1.2.3")
        );
        assert!(version_at_least("1.0.0", 0, 4) && !version_at_least("0.3.1", 0, 4));
    }
}
