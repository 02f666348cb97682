//! The user's kubeconfig when `local up`/`down` run under `sudo` (they must run as root).
//!
//! kubectl is then run by the user who typed `sudo`, so — with no `--kubeconfig` and no
//! KUBECONFIG — the context goes into `$SUDO_USER`'s `~/.kube/config` rather than root's, and
//! whatever file is written keeps its owner: a file (and a `~/.kube` directory) made for the
//! user is theirs, 0600 as every kubeconfig rktup writes, and a user's file rewritten by root
//! (the context added or removed) stays the user's. The YAML itself is
//! `rktup_provider::kubeconfig`'s.

use crate::err;
use rktup_provider::ProviderError;
use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The account named by SUDO_USER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SudoUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Where the context goes, and who must own what is written there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    /// Set when the file is the sudo user's default kubeconfig.
    pub user: Option<SudoUser>,
}

/// SUDO_USER's account when it applies: root running under sudo for another user, with
/// neither `--kubeconfig` nor KUBECONFIG saying where to write. `env` reads the environment
/// (a parameter so the rule is testable).
pub fn sudo_user(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<SudoUser>, ProviderError> {
    if explicit.is_some() || env("KUBECONFIG").is_some_and(|k| !k.is_empty()) {
        return Ok(None);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let Some(name) = env("SUDO_USER").filter(|n| !n.is_empty() && n != "root") else {
        return Ok(None);
    };
    lookup(&name).map(Some)
}

/// The passwd entry of `name` (getpwnam_r: NSS included, as sudo itself resolves it).
fn lookup(name: &str) -> Result<SudoUser, ProviderError> {
    let unknown = || ProviderError::Invalid {
        input: "SUDO_USER".into(),
        value: name.to_string(),
        expected: "no such user in the password database, so its kubeconfig cannot be found; \
                   pass --kubeconfig FILE or set KUBECONFIG"
            .into(),
    };
    let cname = CString::new(name).map_err(|_| unknown())?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // SAFETY: passwd is plain data; getpwnam_r fills it with pointers into `buf`, which
        // outlives every read below; `result` is null or points at `pwd`.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1024 * 1024 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(err(
                &format!("failed to look up SUDO_USER={name}"),
                std::io::Error::from_raw_os_error(rc),
            ));
        }
        if result.is_null() || pwd.pw_dir.is_null() {
            return Err(unknown());
        }
        // SAFETY: pw_dir is a NUL-terminated string inside `buf`.
        let home = unsafe { CStr::from_ptr(pwd.pw_dir) };
        let home = PathBuf::from(std::ffi::OsStr::from_bytes(home.to_bytes()));
        return Ok(SudoUser {
            name: name.to_string(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home,
        });
    }
}

/// The file `up` writes the context into: `--kubeconfig`, else KUBECONFIG's first entry, else
/// the sudo user's `~/.kube/config`, else `~/.kube/config`.
pub fn target(explicit: Option<&Path>) -> Result<Target, ProviderError> {
    let env = |k: &str| std::env::var(k).ok();
    match sudo_user(explicit, &env)? {
        Some(u) => Ok(Target {
            path: u.home.join(".kube").join("config"),
            user: Some(u),
        }),
        None => Ok(Target {
            path: rktup_provider::kubeconfig::kubeconfig_path(explicit)
                .map_err(|e| err("kubeconfig", e))?,
            user: None,
        }),
    }
}

/// Who owns `path` now (without following a symlink), if it exists.
fn owner_of(path: &Path) -> Option<(u32, u32)> {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_file())
        .map(|m| (m.uid(), m.gid()))
}

fn chown(path: &Path, (uid, gid): (u32, u32)) -> Result<(), ProviderError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| {
        err(
            &format!("failed to give {} to uid {uid}", path.display()),
            e,
        )
    })
}

/// `up`: writes cluster, user and context `context` into `target` and makes it current; the
/// file keeps its owner, or becomes the sudo user's when made for them (with `~/.kube`).
pub fn merge_context(
    target: &Target,
    context: &str,
    server: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<PathBuf, ProviderError> {
    let path = &target.path;
    let owner = match &target.user {
        Some(u) => {
            // ~/.kube as kubectl makes it (0755), the user's; made by root only when missing.
            let dir = u.home.join(".kube");
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&dir)
                    .map_err(|e| err(&format!("failed to create {}", dir.display()), e))?;
                chown(&dir, (u.uid, u.gid))?;
            }
            Some((u.uid, u.gid))
        }
        None => owner_of(path),
    };
    let _lock = lock_dir_of(path)?;
    let written = rktup_provider::kubeconfig::merge_context(
        Some(path),
        context,
        server,
        ca_pem,
        cert_pem,
        key_pem,
    )
    .map_err(|e| err("kubeconfig", e))?;
    keep_owner(&written, owner)?;
    Ok(written)
}

/// `down`: removes context `context` from `path` (the one `up` wrote or `--kubeconfig`), else
/// from where `up` would write it now; the file keeps its owner. Returns whether it was there.
pub fn remove_context(path: Option<&Path>, context: &str) -> Result<bool, ProviderError> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => target(None)?.path,
    };
    if !path.exists() {
        return Ok(false);
    }
    let _lock = lock_dir_of(&path)?;
    let owner = owner_of(&path);
    let found = rktup_provider::kubeconfig::remove_context(Some(&path), context)
        .map_err(|e| err("kubeconfig", e))?;
    if found {
        keep_owner(&path, owner)?;
    }
    Ok(found)
}

/// Serialises rktup's read-modify-write of kubeconfig files in one directory: `up`s and
/// `down`s of several clusters at once (CI jobs side by side) would otherwise each write back
/// the file they read and drop the others' contexts. The lock is flock(2) on the directory
/// itself: no lock file is left behind (client-go treats a `<file>.lock` as held).
fn lock_dir_of(path: &Path) -> Result<std::fs::File, ProviderError> {
    use std::os::fd::AsRawFd;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| err(&format!("failed to create {}", dir.display()), e))?;
    let f = std::fs::File::open(&dir)
        .map_err(|e| err(&format!("failed to open {}", dir.display()), e))?;
    loop {
        // SAFETY: flock on a descriptor we own; released when `f` is dropped.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(f);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(err(&format!("failed to lock {}", dir.display()), e));
        }
    }
}

/// The file was replaced by one of root's (write to a temporary file, rename): give it back.
fn keep_owner(path: &Path, owner: Option<(u32, u32)>) -> Result<(), ProviderError> {
    match (owner, owner_of(path)) {
        (Some(want), Some(now)) if want != now => chown(path, want),
        _ => Ok(()),
    }
}

/// The API server of context `context` in kubeconfig `file` (`None`: no such context), for
/// `list --kubeconfig` and `image import --kubeconfig`.
pub fn context_server(file: &Path, context: &str) -> Result<Option<String>, ProviderError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| err(&format!("failed to read kubeconfig {}", file.display()), e))?;
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).map_err(|e| {
        err(
            &format!("kubeconfig {} is not valid YAML", file.display()),
            e,
        )
    })?;
    let named = |list: &str, name: &str, key: &str| {
        doc.get(list)?
            .as_sequence()?
            .iter()
            .find(|i| i.get("name").and_then(|n| n.as_str()) == Some(name))?
            .get(key)
            .cloned()
    };
    let Some(ctx) = named("contexts", context, "context") else {
        return Ok(None);
    };
    let cluster = ctx
        .get("cluster")
        .and_then(|c| c.as_str())
        .unwrap_or_default();
    Ok(named("clusters", cluster, "cluster")
        .and_then(|c| c.get("server").and_then(|s| s.as_str()).map(str::to_string))
        .or(Some(String::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn sudo_user_applies_only_without_an_explicit_file() {
        // root exists everywhere; SUDO_USER=root is root's own kubeconfig.
        assert_eq!(
            sudo_user(None, &env_of(&[("SUDO_USER", "root")])).unwrap(),
            None
        );
        assert_eq!(
            sudo_user(Some(Path::new("/x")), &env_of(&[("SUDO_USER", "nobody")])).unwrap(),
            None
        );
        assert_eq!(
            sudo_user(
                None,
                &env_of(&[("SUDO_USER", "nobody"), ("KUBECONFIG", "/k")])
            )
            .unwrap(),
            None
        );
        assert_eq!(sudo_user(None, &env_of(&[])).unwrap(), None);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let u = sudo_user(None, &env_of(&[("SUDO_USER", "nobody")]))
                .unwrap()
                .expect("nobody is in every passwd");
            assert_eq!(u.uid, 65534);
            let e = sudo_user(None, &env_of(&[("SUDO_USER", "no-such-user-rktup")]))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("SUDO_USER no-such-user-rktup") && e.contains("--kubeconfig"),
                "{e}"
            );
        }
    }
}
