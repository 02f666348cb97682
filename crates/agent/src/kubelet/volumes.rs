//! API-backed volumes (configMap, secret, downwardAPI, projected), as kubelet's volume plugins
//! build them: the payload (relative path → bytes and mode) from the objects, written into
//! `<root>/api-volumes/<pod uid>/<volume>` (`rktup_runtime::manifest::api_volume_dir`) the way
//! kubelet's AtomicWriter does (a timestamped `..<time>` directory, the `..data` symlink swapped
//! atomically to it, and user-visible `name -> ..data/name` symlinks), so updates never show a
//! half-written volume. Secret, downwardAPI and projected volumes live on a tmpfs (kubelet wraps
//! them in a memory-backed emptyDir), configMap volumes on disk. The runtime bind-mounts the
//! directory read-only.

use super::downward::{metadata_field, resource_value, NodeInfo};
use super::objects::{config_map_files, secret_data, Missing, Objects};
use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The API's default for defaultMode (0644).
pub const DEFAULT_MODE: i32 = 0o644;

/// One file of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative path → file.
pub type Payload = BTreeMap<String, FileProjection>;

/// Service account tokens of projected volumes, by (volume name, source index): the token, or
/// why there is none (kubelet's "failed to fetch token: ...").
pub type Tokens = BTreeMap<(String, usize), Result<String, String>>;

/// Why a volume's payload cannot be built or written. The texts are kubelet's (they reach the
/// pod's events and status as `MountVolume.SetUp failed for volume "v" : <text>`).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("configmap references non-existent config key: {key}")]
    MissingConfigMapKey { key: String },
    #[error("references non-existent secret key: {key}")]
    MissingSecretKey { key: String },
    /// The ConfigMap or Secret could not be read (`configmap "x" not found`, or the API's error).
    #[error("{}", .0.message())]
    Object(Missing),
    /// A downwardAPI item's value (worded as `downward` words it).
    #[error("{0}")]
    Field(String),
    /// A projected serviceAccountToken the caller could not fetch (`failed to fetch token: ...`).
    #[error("{0}")]
    Token(String),
    #[error("failed to fetch token: not requested")]
    TokenNotRequested,
    #[error("clusterTrustBundle projections are not supported by this kubelet")]
    ClusterTrustBundle,
    /// Several errors of one volume (`utilerrors.NewAggregate`).
    #[error("[{}]", join(.0))]
    Aggregate(Vec<VolumeError>),
    #[error("invalid path: must be less than or equal to 4096 characters: {0:?}")]
    PathTooLong(String),
    #[error("invalid path: must be relative path: {0}")]
    PathAbsolute(String),
    #[error("invalid path: must not contain '..': {0}")]
    PathDotDot(String),
    #[error("invalid path: must not be empty: {0:?}")]
    PathEmpty(String),
    #[error("invalid path: must not start with '..': {0}")]
    PathDotDotPrefix(String),
    /// Setting up the volume directory or writing the payload into it.
    #[error("failed to write {}: {source}", .dir.display())]
    Write { dir: PathBuf, source: io::Error },
}

fn join(errs: &[VolumeError]) -> String {
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn mode(m: Option<i32>, default: i32) -> u32 {
    (m.unwrap_or(default) as u32) & 0o7777
}

/// `utilerrors.NewAggregate(...).Error()`: one error as is, several as `[a, b]`.
fn aggregate(mut errs: Vec<VolumeError>) -> Result<(), VolumeError> {
    match errs.len() {
        0 => Ok(()),
        1 => Err(errs.remove(0)),
        _ => Err(VolumeError::Aggregate(errs)),
    }
}

/// `MakePayload` of the configMap and secret plugins: every key as a file, or the `items`.
fn key_payload(
    items: Option<&Vec<KeyToPath>>,
    files: &BTreeMap<String, Vec<u8>>,
    default_mode: i32,
    optional: bool,
    missing_key: fn(String) -> VolumeError,
) -> Result<Payload, VolumeError> {
    let mut p = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in files {
                p.insert(
                    k.clone(),
                    FileProjection {
                        data: v.clone(),
                        mode: mode(None, default_mode),
                    },
                );
            }
        }
        Some(items) => {
            for ktp in items {
                let Some(data) = files.get(&ktp.key) else {
                    if optional {
                        continue;
                    }
                    return Err(missing_key(ktp.key.clone()));
                };
                p.insert(
                    ktp.path.clone(),
                    FileProjection {
                        data: data.clone(),
                        mode: mode(ktp.mode, default_mode),
                    },
                );
            }
        }
    }
    Ok(p)
}

/// The object a configMap or secret volume (or projection source) reads, by name.
enum KeySource<'a> {
    ConfigMap(&'a str),
    Secret(&'a str),
}

/// The configMap and secret plugins' payload: the object's keys (or `items`) as files; a missing
/// object is an error unless `optional`.
fn keys_payload(
    objs: &Objects,
    source: KeySource,
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let (files, missing_key): (_, fn(String) -> VolumeError) = match source {
        KeySource::ConfigMap(name) => (objs.config_map(name).map(config_map_files), |key| {
            VolumeError::MissingConfigMapKey { key }
        }),
        KeySource::Secret(name) => (objs.secret(name).map(secret_data), |key| {
            VolumeError::MissingSecretKey { key }
        }),
    };
    let files = match files {
        Ok(files) => files,
        Err(Missing::NotFound(_)) if optional => BTreeMap::new(),
        Err(e) => return Err(VolumeError::Object(e)),
    };
    key_payload(items, &files, default_mode, optional, missing_key)
}

/// The downwardAPI plugin's `CollectData`.
fn downward_payload(
    items: Option<&Vec<DownwardAPIVolumeFile>>,
    pod: &Pod,
    node: &NodeInfo,
    default_mode: i32,
) -> Result<Payload, VolumeError> {
    let mut p = Payload::new();
    let mut errs = vec![];
    for f in items.into_iter().flatten() {
        let value = if let Some(fr) = &f.field_ref {
            metadata_field(pod, &fr.field_path)
        } else if let Some(rf) = &f.resource_field_ref {
            let c = rf.container_name.clone().unwrap_or_default();
            resource_value(rf, pod, &c, node)
        } else {
            Ok(String::new())
        };
        match value {
            Ok(v) => {
                p.insert(
                    f.path.clone(),
                    FileProjection {
                        data: v.into_bytes(),
                        mode: mode(f.mode, default_mode),
                    },
                );
            }
            Err(e) => errs.push(VolumeError::Field(e)),
        }
    }
    aggregate(errs).map(|()| p)
}

/// The files of API-backed volume `v` (None: not an API-backed volume). Errors are worded as
/// kubelet's plugins word them (`configmap "x" not found`, `references non-existent secret key:
/// k`, `failed to fetch token: ...`; several of a projected volume as `[a, b]`).
pub fn payload(
    v: &Volume,
    pod: &Pod,
    objs: &Objects,
    tokens: &Tokens,
    node: &NodeInfo,
) -> Option<Result<Payload, VolumeError>> {
    if let Some(c) = &v.config_map {
        return Some(keys_payload(
            objs,
            KeySource::ConfigMap(&c.name),
            c.items.as_ref(),
            c.default_mode.unwrap_or(DEFAULT_MODE),
            c.optional.unwrap_or(false),
        ));
    }
    if let Some(s) = &v.secret {
        return Some(keys_payload(
            objs,
            KeySource::Secret(s.secret_name.as_deref().unwrap_or_default()),
            s.items.as_ref(),
            s.default_mode.unwrap_or(DEFAULT_MODE),
            s.optional.unwrap_or(false),
        ));
    }
    if let Some(d) = &v.downward_api {
        return Some(downward_payload(
            d.items.as_ref(),
            pod,
            node,
            d.default_mode.unwrap_or(DEFAULT_MODE),
        ));
    }
    let proj = v.projected.as_ref()?;
    let dm = proj.default_mode.unwrap_or(DEFAULT_MODE);
    let fs_group = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group);
    let mut p = Payload::new();
    let mut errs = vec![];
    for (i, src) in proj.sources.iter().flatten().enumerate() {
        let part = if let Some(c) = &src.config_map {
            keys_payload(
                objs,
                KeySource::ConfigMap(&c.name),
                c.items.as_ref(),
                dm,
                c.optional.unwrap_or(false),
            )
        } else if let Some(s) = &src.secret {
            keys_payload(
                objs,
                KeySource::Secret(&s.name),
                s.items.as_ref(),
                dm,
                s.optional.unwrap_or(false),
            )
        } else if let Some(d) = &src.downward_api {
            downward_payload(d.items.as_ref(), pod, node, dm)
        } else if let Some(t) = &src.service_account_token {
            match tokens.get(&(v.name.clone(), i)) {
                Some(Ok(tok)) => Ok(Payload::from([(
                    t.path.clone(),
                    FileProjection {
                        data: tok.clone().into_bytes(),
                        // With an fsGroup, 0600 (made 0640 by the ownership change).
                        mode: if fs_group.is_some() {
                            0o600
                        } else {
                            mode(None, dm)
                        },
                    },
                )])),
                Some(Err(e)) => Err(VolumeError::Token(e.clone())),
                None => Err(VolumeError::TokenNotRequested),
            }
        } else if src.cluster_trust_bundle.is_some() {
            Err(VolumeError::ClusterTrustBundle)
        } else {
            Ok(Payload::new())
        };
        match part {
            Ok(files) => p.extend(files),
            Err(e) => errs.push(e),
        }
    }
    Some(aggregate(errs).map(|()| p))
}

/// Whether the volume lives on a tmpfs (kubelet: secret, downwardAPI and projected volumes).
pub fn in_memory(v: &Volume) -> bool {
    v.secret.is_some() || v.downward_api.is_some() || v.projected.is_some()
}

/// AtomicWriter's `validatePath`, returning the cleaned path.
fn clean_path(p: &str) -> Result<String, VolumeError> {
    if p.len() > 4096 {
        return Err(VolumeError::PathTooLong(p.into()));
    }
    if p.starts_with('/') {
        return Err(VolumeError::PathAbsolute(p.into()));
    }
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(VolumeError::PathDotDot(p.into()));
    }
    match parts.first() {
        None => Err(VolumeError::PathEmpty(p.into())),
        Some(f) if f.starts_with("..") => Err(VolumeError::PathDotDotPrefix(p.into())),
        Some(_) => Ok(parts.join("/")),
    }
}

fn io_other(msg: String) -> io::Error {
    io::Error::other(msg)
}

fn chown_group(p: &Path, gid: u32) -> io::Result<()> {
    let c = CString::new(p.as_os_str().as_bytes()).map_err(|e| io_other(e.to_string()))?;
    // SAFETY: a valid NUL-terminated path; uid -1 keeps the owner.
    if unsafe { libc::lchown(c.as_ptr(), u32::MAX, gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `SetVolumeOwnership` for a read-only volume: group `fs_group`, files g+r, directories
/// g+rx and setgid.
fn set_ownership(dir: &Path, gid: u32) -> io::Result<()> {
    chown_group(dir, gid)?;
    let m = std::fs::symlink_metadata(dir)?;
    std::fs::set_permissions(
        dir,
        std::fs::Permissions::from_mode((m.mode() & 0o7777) | 0o2550),
    )?;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        let ft = e.file_type()?;
        if ft.is_dir() {
            set_ownership(&p, gid)?;
        } else if !ft.is_symlink() {
            chown_group(&p, gid)?;
            let m = e.metadata()?;
            std::fs::set_permissions(
                &p,
                std::fs::Permissions::from_mode((m.mode() & 0o7777) | 0o440),
            )?;
        }
    }
    Ok(())
}

fn final_mode(f: &FileProjection, fs_group: Option<u32>) -> u32 {
    if fs_group.is_some() {
        f.mode | 0o440
    } else {
        f.mode
    }
}

/// Whether `ts_dir` already holds exactly `payload`.
fn same_payload(
    ts_dir: &Path,
    payload: &BTreeMap<String, &FileProjection>,
    fs_group: Option<u32>,
) -> bool {
    fn files(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) -> io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            if e.file_type()?.is_dir() {
                files(&e.path(), &format!("{name}/"), out)?;
            } else {
                out.insert(name);
            }
        }
        Ok(())
    }
    let mut have = BTreeSet::new();
    if files(ts_dir, "", &mut have).is_err() {
        return false;
    }
    if have.iter().ne(payload.keys()) {
        return false;
    }
    payload.iter().all(|(rel, f)| {
        let p = ts_dir.join(rel);
        std::fs::symlink_metadata(&p)
            .is_ok_and(|m| m.is_file() && m.mode() & 0o7777 == final_mode(f, fs_group))
            && std::fs::read(&p).is_ok_and(|d| d == f.data)
    })
}

fn ts_dir_name() -> String {
    let t = jiff::Timestamp::now();
    let nanos = t.subsec_nanosecond();
    format!(
        "..{}.{}{:09}",
        t.strftime("%Y_%m_%d_%H_%M_%S"),
        std::process::id(),
        nanos
    )
}

/// Write `payload` into `dir` (kubelet's AtomicWriter): a fresh `..<timestamp>` directory with
/// the files (modes set, group `fs_group` if given), then `..data` switched to it with one
/// rename, then `name -> ..data/name` links for the top-level names, then the old links and
/// directory removed. Returns whether anything changed (an identical payload writes nothing).
pub fn write_payload(dir: &Path, payload: &Payload, fs_group: Option<u32>) -> io::Result<bool> {
    let mut clean: BTreeMap<String, &FileProjection> = BTreeMap::new();
    for (p, f) in payload {
        clean.insert(clean_path(p).map_err(io::Error::other)?, f);
    }
    let data_link = dir.join("..data");
    let old = std::fs::read_link(&data_link).ok();
    if let Some(o) = &old {
        if same_payload(&dir.join(o), &clean, fs_group) {
            return Ok(false);
        }
    }
    let ts_name = ts_dir_name();
    let ts = dir.join(&ts_name);
    std::fs::create_dir(&ts)?;
    std::fs::set_permissions(&ts, std::fs::Permissions::from_mode(0o755))?;
    for (rel, f) in &clean {
        let p = ts.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, &f.data)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode))?;
    }
    if let Some(g) = fs_group {
        set_ownership(&ts, g)?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts_name, &tmp)?;
    std::fs::rename(&tmp, &data_link)?;
    let top: BTreeSet<&str> = clean.keys().filter_map(|k| k.split('/').next()).collect();
    for t in &top {
        let link = dir.join(t);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(t), &link)?;
        }
    }
    // Old user-visible links and timestamp directories (also ones a crash left behind).
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_link = e.file_type().is_ok_and(|t| t.is_symlink());
        if name.starts_with("..") {
            if name != ts_name && name != "..data" && e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(e.path())?;
            }
        } else if is_link && !top.contains(name.as_str()) {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(true)
}

fn is_mountpoint(p: &Path) -> bool {
    let (Ok(m), Some(parent)) = (std::fs::metadata(p), p.parent()) else {
        return false;
    };
    std::fs::metadata(parent).is_ok_and(|pm| pm.dev() != m.dev())
}

/// Create the volume directory (a tmpfs mounted on it when `memory`).
pub fn setup_dir(dir: &Path, memory: bool) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    if memory && !is_mountpoint(dir) {
        let target =
            CString::new(dir.as_os_str().as_bytes()).map_err(|e| io_other(e.to_string()))?;
        let fstype = c"tmpfs";
        let opts = c"mode=0755";
        // SAFETY: valid NUL-terminated strings that outlive the call.
        let r = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Remove a pod's volume directory `<root>/api-volumes/<uid>` (unmounting its tmpfs volumes).
pub fn remove_pod_dir(pod_dir: &Path) -> io::Result<()> {
    if let Ok(rd) = std::fs::read_dir(pod_dir) {
        for e in rd.flatten() {
            let p = e.path();
            if is_mountpoint(&p) {
                if let Ok(c) = CString::new(p.as_os_str().as_bytes()) {
                    // SAFETY: valid NUL-terminated path.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
            }
        }
    }
    match std::fs::remove_dir_all(pod_dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `<root>/api-volumes`: one directory per pod uid.
pub fn volumes_root(root: &Path) -> PathBuf {
    root.join("api-volumes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::objects::Lookup;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use k8s_openapi::ByteString;

    fn objs() -> Objects {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cfg"},
            "data": {"a": "alpha", "b": "beta"},
            "binaryData": {"bin": "AAEC"}
        }))
        .expect("cm");
        let s = Secret {
            data: Some(BTreeMap::from([(
                "user".to_string(),
                ByteString(b"admin".to_vec()),
            )])),
            string_data: Some(BTreeMap::from([("pass".to_string(), "pw".to_string())])),
            ..Default::default()
        };
        Objects {
            namespace: "ns".into(),
            config_maps: BTreeMap::from([
                ("cfg".to_string(), Lookup::Found(cm)),
                ("denied".to_string(), Lookup::Failed("forbidden".into())),
            ]),
            secrets: BTreeMap::from([("sec".to_string(), Lookup::Found(s))]),
        }
    }

    fn vol(v: serde_json::Value) -> Volume {
        serde_json::from_value(v).expect("volume")
    }

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "i",
                                     "resources": {"limits": {"memory": "32Mi"}}}]}
        }))
        .expect("pod")
    }

    fn run(v: serde_json::Value) -> Result<Payload, String> {
        let node = NodeInfo::default();
        let tokens = Tokens::from([(
            ("t".to_string(), 1),
            Err("failed to fetch token: nope".to_string()),
        )]);
        payload(&vol(v), &pod(), &objs(), &tokens, &node)
            .expect("api volume")
            .map_err(|e| e.to_string())
    }

    fn files(p: &Payload) -> Vec<(String, String, u32)> {
        p.iter()
            .map(|(k, f)| {
                (
                    k.clone(),
                    String::from_utf8_lossy(&f.data).into_owned(),
                    f.mode,
                )
            })
            .collect()
    }

    #[test]
    fn config_map_keys_items_and_modes() {
        let p = run(serde_json::json!({"name": "v", "configMap": {"name": "cfg"}})).unwrap();
        assert_eq!(
            files(&p),
            vec![
                ("a".into(), "alpha".into(), 0o644),
                ("b".into(), "beta".into(), 0o644),
                ("bin".into(), "\0\u{1}\u{2}".into(), 0o644)
            ]
        );
        let p = run(
            serde_json::json!({"name": "v", "configMap": {"name": "cfg", "defaultMode": 0o440,
            "items": [{"key": "a", "path": "d/a.txt", "mode": 0o600}, {"key": "b", "path": "b"}]}}),
        )
        .unwrap();
        assert_eq!(
            files(&p),
            vec![
                ("b".into(), "beta".into(), 0o440),
                ("d/a.txt".into(), "alpha".into(), 0o600)
            ]
        );
        assert_eq!(
            run(serde_json::json!({"name": "v", "configMap": {"name": "cfg", "items": [{"key": "zz", "path": "z"}]}})).unwrap_err(),
            "configmap references non-existent config key: zz"
        );
        assert!(run(serde_json::json!({"name": "v", "configMap": {"name": "cfg", "optional": true, "items": [{"key": "zz", "path": "z"}]}})).unwrap().is_empty());
        assert_eq!(
            run(serde_json::json!({"name": "v", "configMap": {"name": "gone"}})).unwrap_err(),
            "configmap \"gone\" not found"
        );
        assert!(run(
            serde_json::json!({"name": "v", "configMap": {"name": "gone", "optional": true}})
        )
        .unwrap()
        .is_empty());
        assert_eq!(
            run(
                serde_json::json!({"name": "v", "configMap": {"name": "denied", "optional": true}})
            )
            .unwrap_err(),
            "forbidden"
        );
    }

    #[test]
    fn secrets_downward_and_projected() {
        let p = run(
            serde_json::json!({"name": "v", "secret": {"secretName": "sec", "defaultMode": 0o400}}),
        )
        .unwrap();
        assert_eq!(
            files(&p),
            vec![
                ("pass".into(), "pw".into(), 0o400),
                ("user".into(), "admin".into(), 0o400)
            ]
        );
        assert_eq!(
            run(serde_json::json!({"name": "v", "secret": {"secretName": "sec", "items": [{"key": "k", "path": "k"}]}})).unwrap_err(),
            "references non-existent secret key: k"
        );
        assert_eq!(
            run(serde_json::json!({"name": "v", "secret": {"secretName": "nope"}})).unwrap_err(),
            "secret \"nope\" not found"
        );
        let p = run(serde_json::json!({"name": "v", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}, "mode": 0o600}
        ]}}))
        .unwrap();
        assert_eq!(
            files(&p),
            vec![
                ("labels".into(), "app=\"x\"".into(), 0o644),
                ("mem".into(), "32".into(), 0o600)
            ]
        );
        assert_eq!(
            run(serde_json::json!({"name": "v", "downwardAPI": {"items": [
                {"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}}]}}))
            .unwrap_err(),
            "unsupported fieldPath: status.podIP"
        );
        let p = run(serde_json::json!({"name": "v", "projected": {"defaultMode": 0o444, "sources": [
            {"configMap": {"name": "cfg", "items": [{"key": "a", "path": "a"}]}},
            {"secret": {"name": "sec", "items": [{"key": "user", "path": "s/user"}]}},
            {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}
        ]}}))
        .unwrap();
        assert_eq!(
            files(&p),
            vec![
                ("a".into(), "alpha".into(), 0o444),
                ("name".into(), "p".into(), 0o444),
                ("s/user".into(), "admin".into(), 0o444)
            ]
        );
        assert_eq!(
            run(serde_json::json!({"name": "t", "projected": {"sources": [
                {"configMap": {"name": "gone"}},
                {"serviceAccountToken": {"path": "token"}}
            ]}}))
            .unwrap_err(),
            "[configmap \"gone\" not found, failed to fetch token: nope]"
        );
    }

    fn tree(dir: &Path) -> Vec<String> {
        let mut out = vec![];
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                let t = std::fs::read_link(e.path()).unwrap();
                if n == "..data" {
                    out.push(format!("{n} -> ts"));
                } else {
                    out.push(format!("{n} -> {}", t.display()));
                }
            } else if n.starts_with("..") {
                out.push("ts/".into());
            } else {
                out.push(n);
            }
        }
        out.sort();
        out
    }

    #[test]
    fn atomic_writer_layout_and_updates() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("v");
        std::fs::create_dir(&d).unwrap();
        let f = |s: &str, mode| FileProjection {
            data: s.as_bytes().to_vec(),
            mode,
        };
        let p1 = Payload::from([
            ("a".to_string(), f("1", 0o644)),
            ("sub/b".to_string(), f("2", 0o600)),
        ]);
        assert!(write_payload(&d, &p1, None).unwrap());
        assert_eq!(
            tree(&d),
            vec!["..data -> ts", "a -> ..data/a", "sub -> ..data/sub", "ts/"]
        );
        assert_eq!(std::fs::read_to_string(d.join("sub/b")).unwrap(), "2");
        let m = std::fs::metadata(d.join("sub/b")).unwrap().mode() & 0o777;
        assert_eq!(m, 0o600);
        let first = std::fs::read_link(d.join("..data")).unwrap();
        // Same payload: nothing written.
        assert!(!write_payload(&d, &p1, None).unwrap());
        assert_eq!(std::fs::read_link(d.join("..data")).unwrap(), first);
        // A changed payload: new directory, links for new names, old ones gone.
        let p2 = Payload::from([
            ("a".to_string(), f("3", 0o644)),
            ("c".to_string(), f("4", 0o644)),
        ]);
        assert!(write_payload(&d, &p2, None).unwrap());
        assert_ne!(std::fs::read_link(d.join("..data")).unwrap(), first);
        assert_eq!(
            tree(&d),
            vec!["..data -> ts", "a -> ..data/a", "c -> ..data/c", "ts/"]
        );
        assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "3");
        // A mode change alone is a change.
        let p3 = Payload::from([
            ("a".to_string(), f("3", 0o600)),
            ("c".to_string(), f("4", 0o644)),
        ]);
        assert!(write_payload(&d, &p3, Some(1234)).unwrap());
        let m = std::fs::metadata(d.join("a")).unwrap();
        assert_eq!((m.mode() & 0o777, m.gid()), (0o640, 1234));
        // Paths out of the volume are refused.
        for (bad, why) in [
            ("/etc/x", "invalid path: must be relative path: /etc/x"),
            ("../x", "invalid path: must not contain '..': ../x"),
            (
                "a/../../x",
                "invalid path: must not contain '..': a/../../x",
            ),
            ("..x/y", "invalid path: must not start with '..': ..x/y"),
        ] {
            let p = Payload::from([(bad.to_string(), f("x", 0o644))]);
            let e = write_payload(&d, &p, None).expect_err(bad);
            assert_eq!(e.to_string(), why);
            assert!(e.get_ref().is_some_and(|e| e.is::<VolumeError>()), "{bad}");
        }
        assert_eq!(
            clean_path("./.").unwrap_err().to_string(),
            "invalid path: must not be empty: \"./.\""
        );
        // Empty payload: an empty volume.
        assert!(write_payload(&d, &Payload::new(), None).unwrap());
        assert_eq!(tree(&d), vec!["..data -> ts", "ts/"]);
    }
}
