//! The `rktup-gce-<name>` kubeconfig context. A private stand-in until the shared helper
//! (`rktup_provider::kubeconfig`) lands on main: merges into $KUBECONFIG's first file or
//! ~/.kube/config without touching other contexts.

use crate::client::GceError;
use crate::Gce;
use base64::Engine;
use rktup_provider::ClusterProvider;
use rktup_render::Pki;
use serde_yaml_ng::{Mapping, Value};
use std::path::PathBuf;

pub fn context_name(gce: &Gce) -> String {
    format!("rktup-gce-{}", gce.settings().name)
}

fn path(gce: &Gce) -> Option<PathBuf> {
    if let Some(p) = &gce.kubeconfig {
        return Some(p.clone());
    }
    if let Some(k) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
        return std::env::split_paths(&k).next();
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config"))
}

fn load(path: &PathBuf) -> Result<Mapping, GceError> {
    let action = format!("read {}", path.display());
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => Ok(Mapping::new()),
        Ok(s) => serde_yaml_ng::from_str(&s).map_err(|e| GceError::other(action, e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Mapping::new()),
        Err(e) => Err(GceError::other(action, e.to_string())),
    }
}

fn save(path: &PathBuf, doc: &Mapping) -> Result<(), GceError> {
    let action = format!("write {}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| GceError::other(&action, e.to_string()))?;
    }
    let text =
        serde_yaml_ng::to_string(doc).map_err(|e| GceError::other(&action, e.to_string()))?;
    std::fs::write(path, text).map_err(|e| GceError::other(&action, e.to_string()))
}

/// Replaces the entry named `name` in the list `key`, or appends it.
fn upsert(doc: &mut Mapping, key: &str, name: &str, entry: Option<Value>) {
    let list = doc
        .entry(Value::from(key))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if !list.is_sequence() {
        *list = Value::Sequence(Vec::new());
    }
    if let Value::Sequence(items) = list {
        items.retain(|i| i.get("name").and_then(Value::as_str) != Some(name));
        items.extend(entry);
    }
}

fn named(name: &str, key: &str, body: Value) -> Value {
    let mut m = Mapping::new();
    m.insert("name".into(), name.into());
    m.insert(key.into(), body);
    Value::Mapping(m)
}

pub fn write(gce: &Gce, pki: &Pki, ip: &str) -> Result<(), GceError> {
    let Some(path) = path(gce) else {
        return Err(GceError::other(
            "write the kubeconfig",
            "neither KUBECONFIG nor HOME is set",
        ));
    };
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let ctx = context_name(gce);
    let mut doc = load(&path)?;
    doc.entry("apiVersion".into()).or_insert("v1".into());
    doc.entry("kind".into()).or_insert("Config".into());
    let mut cluster = Mapping::new();
    cluster.insert("server".into(), format!("https://{ip}").into());
    cluster.insert(
        "certificate-authority-data".into(),
        b64(pki.get("ca.crt")).into(),
    );
    let mut user = Mapping::new();
    user.insert(
        "client-certificate-data".into(),
        b64(pki.get("admin.crt")).into(),
    );
    user.insert("client-key-data".into(), b64(pki.get("admin.key")).into());
    let mut context = Mapping::new();
    context.insert("cluster".into(), ctx.clone().into());
    context.insert("user".into(), ctx.clone().into());
    upsert(
        &mut doc,
        "clusters",
        &ctx,
        Some(named(&ctx, "cluster", Value::Mapping(cluster))),
    );
    upsert(
        &mut doc,
        "users",
        &ctx,
        Some(named(&ctx, "user", Value::Mapping(user))),
    );
    upsert(
        &mut doc,
        "contexts",
        &ctx,
        Some(named(&ctx, "context", Value::Mapping(context))),
    );
    doc.insert("current-context".into(), ctx.into());
    save(&path, &doc)
}

pub fn remove(gce: &Gce) -> Result<(), GceError> {
    let Some(path) = path(gce) else { return Ok(()) };
    if !path.exists() {
        return Ok(());
    }
    let ctx = context_name(gce);
    let mut doc = load(&path)?;
    for key in ["clusters", "users", "contexts"] {
        upsert(&mut doc, key, &ctx, None);
    }
    if doc.get("current-context").and_then(Value::as_str) == Some(ctx.as_str()) {
        doc.insert("current-context".into(), "".into());
    }
    save(&path, &doc)
}
