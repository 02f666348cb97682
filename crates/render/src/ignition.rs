//! The same rendering as an Ignition config (`KUBE_NODE_BOOT_FORMAT=ignition`): Flatcar's own
//! provisioning format, applied once from the initramfs on first boot, where the cloud-config is
//! read by coreos-cloudinit on every boot.
//!
//! Spec 3.4.0 (coreos/ignition `config/v3_4`, read by Ignition 2.15 and later, which Flatcar
//! ships): every rendered file becomes a `storage.files` entry (its mode, owner root, contents as
//! a base64 `data:` URL, `overwrite` so a re-provisioned disk gets this cluster's), every unit a
//! `systemd.units` entry, `enabled` as the cloud-config's `enable: true` (units with an
//! `[Install]` section start at boot; the others are pulled in by the units that require them).
//! Nothing else is in it: no users, no SSH keys, no remote resources. Tests validate the output
//! against the spec's published JSON schema (`tests/render_ignition.rs`).

use crate::{RenderedFile, RenderedUnit};
use base64::Engine;
use serde_json::{json, Value};

/// The Ignition spec version the config declares.
pub const SPEC_VERSION: &str = "3.4.0";

#[derive(Debug, thiserror::Error)]
pub enum IgnitionError {
    #[error("file {path}: permissions {permissions:?} are not an octal mode such as 0644 or 0600")]
    Mode { path: String, permissions: String },
}

/// An octal permission string (`0644`) as Ignition's decimal `mode` (420).
fn mode(file: &RenderedFile) -> Result<u32, IgnitionError> {
    u32::from_str_radix(&file.permissions, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| IgnitionError::Mode {
            path: file.path.clone(),
            permissions: file.permissions.clone(),
        })
}

/// The Ignition config for `units` and `files`, as pretty-printed JSON.
pub fn render(units: &[RenderedUnit], files: &[RenderedFile]) -> Result<String, IgnitionError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let files = files
        .iter()
        .map(|f| {
            Ok(json!({
                "path": f.path,
                "mode": mode(f)?,
                "overwrite": true,
                "user": {"id": 0},
                "group": {"id": 0},
                "contents": {"source": format!("data:;base64,{}", b64.encode(&f.content))},
            }))
        })
        .collect::<Result<Vec<Value>, IgnitionError>>()?;
    let units: Vec<Value> = units
        .iter()
        .map(|u| {
            json!({
                "name": u.name,
                "enabled": true,
                "contents": u.content,
            })
        })
        .collect();
    let config = json!({
        "ignition": {"version": SPEC_VERSION},
        "storage": {"files": files},
        "systemd": {"units": units},
    });
    // A Value of strings, numbers and booleans always serialises.
    Ok(serde_json::to_string_pretty(&config).unwrap_or_default() + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_units_and_modes() {
        let files = [RenderedFile {
            path: "/etc/kubernetes/pki/ca.crt".into(),
            permissions: "0644".into(),
            content: "PEM\n".into(),
        }];
        let units = [RenderedUnit {
            name: "kubelet.service".into(),
            command: "start".into(),
            content: "[Unit]\n".into(),
        }];
        let v: Value = serde_json::from_str(&render(&units, &files).unwrap()).unwrap();
        assert_eq!(v["ignition"]["version"], "3.4.0");
        let f = &v["storage"]["files"][0];
        assert_eq!(f["mode"], 0o644);
        assert_eq!(f["contents"]["source"], "data:;base64,UEVNCg==");
        assert_eq!(v["systemd"]["units"][0]["contents"], "[Unit]\n");
        assert_eq!(v["systemd"]["units"][0]["enabled"], true);
    }

    #[test]
    fn a_bad_mode_names_the_file() {
        let files = [RenderedFile {
            path: "/x".into(),
            permissions: "rw-r--r--".into(),
            content: String::new(),
        }];
        let e = render(&[], &files).unwrap_err().to_string();
        assert_eq!(
            e,
            "file /x: permissions \"rw-r--r--\" are not an octal mode such as 0644 or 0600"
        );
    }
}
