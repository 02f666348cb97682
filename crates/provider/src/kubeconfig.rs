//! Adding and removing the cluster's context in the user's kubeconfig, as kind does with
//! `kind-<name>`: other clusters, users and contexts are kept as they are.

use base64::Engine;
use serde_yaml_ng::{Mapping, Value};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("failed to {action} kubeconfig {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kubeconfig {path} is not valid YAML: {source}")]
    Yaml {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("kubeconfig {path}: {message}")]
    Shape { path: PathBuf, message: String },
    #[error("no kubeconfig path: set KUBECONFIG or HOME, or pass --kubeconfig")]
    NoPath,
}

/// The file to change: the explicit path, else KUBECONFIG's first entry (kubectl writes new
/// entries there too), else `~/.kube/config`.
pub fn kubeconfig_path(explicit: Option<&Path>) -> Result<PathBuf, KubeconfigError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(list) = std::env::var_os("KUBECONFIG") {
        if let Some(first) = std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty()) {
            return Ok(first);
        }
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".kube/config"))
        .ok_or(KubeconfigError::NoPath)
}

fn load(path: &Path) -> Result<Mapping, KubeconfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(KubeconfigError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let doc: Value = if text.trim().is_empty() {
        Value::Mapping(Mapping::new())
    } else {
        serde_yaml_ng::from_str(&text).map_err(|source| KubeconfigError::Yaml {
            path: path.to_path_buf(),
            source,
        })?
    };
    let Value::Mapping(mut map) = doc else {
        return Err(KubeconfigError::Shape {
            path: path.to_path_buf(),
            message: "expected a mapping at the top".into(),
        });
    };
    map.entry("apiVersion".into())
        .or_insert_with(|| "v1".into());
    map.entry("kind".into()).or_insert_with(|| "Config".into());
    Ok(map)
}

fn save(path: &Path, map: &Mapping) -> Result<(), KubeconfigError> {
    let io = |action, source| KubeconfigError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
    }
    let text = serde_yaml_ng::to_string(map).map_err(|source| KubeconfigError::Yaml {
        path: path.to_path_buf(),
        source,
    })?;
    // 0600 from its creation on (it holds the admin key): a new temp file with that mode, then
    // rename; a leftover temp file (with whatever mode) is removed first.
    let tmp = path.with_extension("rktup-tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io("create", e))?;
    f.write_all(text.as_bytes()).map_err(|e| io("write", e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io("replace", e))
}

/// Replaces (or adds) the entry named `name` in the list `list` of the kubeconfig.
fn upsert(map: &mut Mapping, list: &str, name: &str, key: &str, body: Value) {
    let mut entry = Mapping::new();
    entry.insert("name".into(), name.into());
    entry.insert(key.into(), body);
    let seq = map
        .entry(list.into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if !seq.is_sequence() {
        *seq = Value::Sequence(Vec::new());
    }
    if let Value::Sequence(items) = seq {
        items.retain(|i| i.get("name").and_then(Value::as_str) != Some(name));
        items.push(Value::Mapping(entry));
    }
}

fn remove(map: &mut Mapping, list: &str, name: &str) -> bool {
    match map.get_mut(list) {
        Some(Value::Sequence(items)) => {
            let before = items.len();
            items.retain(|i| i.get("name").and_then(Value::as_str) != Some(name));
            before != items.len()
        }
        _ => false,
    }
}

/// Writes cluster, user and context `context` (credentials embedded) and makes it current.
/// Returns the file written.
pub fn merge_context(
    path: Option<&Path>,
    context: &str,
    server: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<PathBuf, KubeconfigError> {
    let path = kubeconfig_path(path)?;
    let mut map = load(&path)?;
    let b64 = |s: &str| Value::from(base64::engine::general_purpose::STANDARD.encode(s));
    let mut cluster = Mapping::new();
    cluster.insert("server".into(), server.into());
    cluster.insert("certificate-authority-data".into(), b64(ca_pem));
    upsert(
        &mut map,
        "clusters",
        context,
        "cluster",
        Value::Mapping(cluster),
    );
    let mut user = Mapping::new();
    user.insert("client-certificate-data".into(), b64(cert_pem));
    user.insert("client-key-data".into(), b64(key_pem));
    upsert(&mut map, "users", context, "user", Value::Mapping(user));
    let mut ctx = Mapping::new();
    ctx.insert("cluster".into(), context.into());
    ctx.insert("user".into(), context.into());
    upsert(
        &mut map,
        "contexts",
        context,
        "context",
        Value::Mapping(ctx),
    );
    map.insert("current-context".into(), context.into());
    save(&path, &map)?;
    Ok(path)
}

/// Removes cluster, user and context `context`; clears current-context if it was this one.
/// Returns whether anything was there.
pub fn remove_context(path: Option<&Path>, context: &str) -> Result<bool, KubeconfigError> {
    let path = kubeconfig_path(path)?;
    if !path.exists() {
        return Ok(false);
    }
    let mut map = load(&path)?;
    let mut found = false;
    for list in ["clusters", "users", "contexts"] {
        found |= remove(&mut map, list, context);
    }
    if map.get("current-context").and_then(Value::as_str) == Some(context) {
        map.insert("current-context".into(), "".into());
        found = true;
    }
    if found {
        save(&path, &map)?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn merge_keeps_other_entries_and_remove_takes_only_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster: {server: https://o}\nusers:\n- name: other\n  user: {token: t}\ncontexts:\n- name: other\n  context: {cluster: other, user: other}\ncurrent-context: other\npreferences: {}\n",
        )
        .unwrap();
        merge_context(
            Some(&path),
            "rktup-aws-demo",
            "https://1.2.3.4:443",
            "CA",
            "CERT",
            "KEY",
        )
        .unwrap();
        // Twice is the same as once.
        merge_context(
            Some(&path),
            "rktup-aws-demo",
            "https://1.2.3.4:443",
            "CA",
            "CERT",
            "KEY",
        )
        .unwrap();
        let doc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["current-context"].as_str(), Some("rktup-aws-demo"));
        assert_eq!(doc["contexts"].as_sequence().unwrap().len(), 2);
        assert_eq!(
            doc["clusters"][1]["cluster"]["server"].as_str(),
            Some("https://1.2.3.4:443")
        );
        assert!(doc.get("preferences").is_some(), "unknown keys kept");
        // The real kubectl reads what we wrote.
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&path)
            .args(["config", "get-contexts", "-o", "name"])
            .output()
            .expect("kubectl is installed (/usr/bin/kubectl)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let names = String::from_utf8_lossy(&out.stdout);
        assert!(
            names.lines().any(|l| l == "rktup-aws-demo") && names.lines().any(|l| l == "other"),
            "{names}"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        assert!(remove_context(Some(&path), "rktup-aws-demo").unwrap());
        assert!(!remove_context(Some(&path), "rktup-aws-demo").unwrap());
        let doc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["contexts"].as_sequence().unwrap().len(), 1);
        assert_eq!(doc["users"][0]["name"].as_str(), Some("other"));
        assert_eq!(doc["current-context"].as_str(), Some(""));
    }
}
