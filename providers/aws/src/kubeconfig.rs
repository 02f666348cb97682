//! The `rktup-aws-<name>` kubeconfig context. Private until the shared helper lands on main.

use serde_yaml_ng::{Mapping, Value};
use std::path::{Path, PathBuf};

/// KUBECONFIG's first file, else ~/.kube/config.
pub fn default_path() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
        return std::env::split_paths(&k).next();
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config"))
}

fn load(path: &Path) -> Result<Mapping, String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => match serde_yaml_ng::from_str(&text) {
            Ok(Value::Mapping(m)) => Ok(m),
            Ok(_) => Err(format!("{} is not a kubeconfig mapping", path.display())),
            Err(e) => Err(format!("{} is not valid YAML: {e}", path.display())),
        },
        Ok(_) => Ok(Mapping::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Mapping::new()),
        Err(e) => Err(format!("read {}: {e}", path.display())),
    }
}

fn save(path: &Path, doc: &Mapping) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    let text = serde_yaml_ng::to_string(doc).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("rktup-tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
    std::fs::rename(&tmp, path).map_err(|e| format!("write {}: {e}", path.display()))
}

fn upsert(doc: &mut Mapping, list: &str, name: &str, key: &str, body: Mapping) {
    let entry = {
        let mut e = Mapping::new();
        e.insert("name".into(), name.into());
        e.insert(key.into(), Value::Mapping(body));
        Value::Mapping(e)
    };
    let seq = doc
        .entry(list.into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if !seq.is_sequence() {
        *seq = Value::Sequence(Vec::new());
    }
    if let Value::Sequence(items) = seq {
        items.retain(|i| i.get("name").and_then(Value::as_str) != Some(name));
        items.push(entry);
    }
}

fn b64(s: &str) -> Value {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .encode(s.as_bytes())
        .into()
}

/// Adds or replaces cluster, user and context `context` and makes it current.
pub fn merge_context(
    path: &Path,
    context: &str,
    server: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<(), String> {
    let mut doc = load(path)?;
    doc.entry("apiVersion".into()).or_insert("v1".into());
    doc.entry("kind".into()).or_insert("Config".into());
    let mut cluster = Mapping::new();
    cluster.insert("server".into(), server.into());
    cluster.insert("certificate-authority-data".into(), b64(ca_pem));
    upsert(&mut doc, "clusters", context, "cluster", cluster);
    let mut user = Mapping::new();
    user.insert("client-certificate-data".into(), b64(cert_pem));
    user.insert("client-key-data".into(), b64(key_pem));
    upsert(&mut doc, "users", context, "user", user);
    let mut ctx = Mapping::new();
    ctx.insert("cluster".into(), context.into());
    ctx.insert("user".into(), context.into());
    upsert(&mut doc, "contexts", context, "context", ctx);
    doc.insert("current-context".into(), context.into());
    save(path, &doc)
}

/// Removes what `merge_context` added; a missing file or context is not an error.
pub fn remove_context(path: &Path, context: &str) -> Result<bool, String> {
    if !path.exists() {
        return Ok(false);
    }
    let mut doc = load(path)?;
    let mut removed = false;
    for list in ["clusters", "users", "contexts"] {
        if let Some(Value::Sequence(items)) = doc.get_mut(list) {
            let before = items.len();
            items.retain(|i| i.get("name").and_then(Value::as_str) != Some(context));
            removed |= items.len() != before;
        }
    }
    if doc.get("current-context").and_then(Value::as_str) == Some(context) {
        doc.insert("current-context".into(), "".into());
    }
    if removed {
        save(path, &doc)?;
    }
    Ok(removed)
}
