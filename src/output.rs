//! How commands print their answers, as text for people or JSON for programs (`-o json`).

use rktup_config::{ClusterSettings, OutputFormat};
use rktup_provider::boot::{Boot, PkiOrigin};
use rktup_provider::ClusterProvider;
use rktup_render::NodeConfig;
use std::io::Write;
use std::path::Path;

type Result = std::result::Result<(), Box<dyn std::error::Error>>;

fn user_data_line(boot: &Boot) -> String {
    let size = boot.user_data.bytes.len();
    if boot.user_data.gzipped {
        format!(
            "{} bytes gzipped ({} bytes of text)",
            size, boot.user_data.text_bytes
        )
    } else {
        format!("{size} bytes")
    }
}

pub fn dry_run(
    format: OutputFormat,
    provider: &dyn ClusterProvider,
    master: &Boot,
    node: &Boot,
) -> Result {
    let settings = provider.settings();
    let plan = provider.plan();
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Json => {
            let doc = serde_json::json!({
                "provider": settings.provider,
                "name": settings.name,
                "dryRun": true,
                "plan": plan,
                "userData": {
                    "master": {
                        "cloudConfig": master.config.cloud_config,
                        "format": master.config.boot_format,
                        "content": master.config.user_data(),
                        "bytes": master.user_data.bytes.len(),
                        "gzipped": master.user_data.gzipped,
                    },
                    "node": {
                        "cloudConfig": node.config.cloud_config,
                        "format": node.config.boot_format,
                        "content": node.config.user_data(),
                        "bytes": node.user_data.bytes.len(),
                        "gzipped": node.user_data.gzipped,
                    },
                },
            });
            serde_json::to_writer_pretty(&mut out, &doc)?;
            writeln!(out)?;
        }
        OutputFormat::Text => {
            writeln!(
                out,
                "Plan for {} cluster {:?} (dry run: no call is made, nothing is created)",
                settings.provider, settings.name
            )?;
            write!(out, "{plan}")?;
            if master.pki_origin == PkiOrigin::Ephemeral {
                writeln!(
                    out,
                    "\nCertificates below are made for this dry run only; `up` makes the cluster's own."
                )?;
            }
            for (what, boot) in [("master", master), ("node", node)] {
                writeln!(out, "\n--- user-data: {what}, {} ---", user_data_line(boot))?;
                write!(out, "{}", boot.config.user_data())?;
            }
        }
    }
    Ok(())
}

/// Writes `DIR/<role>/cloud-config.yaml` (and `ignition.json` with KUBE_NODE_BOOT_FORMAT=ignition)
/// and every file and unit at its place under
/// `DIR/<role>/rootfs/` (units in etc/systemd/system), so the tree can be inspected or checked
/// with `systemd-analyze verify --root`.
pub fn write_rendering(
    dir: &Path,
    config: &NodeConfig,
) -> std::result::Result<usize, std::io::Error> {
    let base = dir.join(config.role.as_str());
    let root = base.join("rootfs");
    std::fs::create_dir_all(&root)?;
    std::fs::write(base.join("cloud-config.yaml"), &config.cloud_config)?;
    let mut n = 1;
    if config.boot_format == rktup_config::BootFormat::Ignition {
        std::fs::write(base.join("ignition.json"), &config.ignition)?;
        n += 1;
    }
    for f in &config.files {
        let path = root.join(f.path.trim_start_matches('/'));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &f.content)?;
        // The mode the machine gets (0600 for keys and kubeconfigs), not the umask's.
        if let Ok(mode) = u32::from_str_radix(&f.permissions, 8) {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        }
        n += 1;
    }
    let units = root.join("etc/systemd/system");
    std::fs::create_dir_all(&units)?;
    for u in &config.units {
        std::fs::write(units.join(&u.name), &u.content)?;
        n += 1;
    }
    Ok(n)
}

pub fn config(format: OutputFormat, settings: &ClusterSettings) -> Result {
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Json => {
            let doc = serde_json::json!({
                "provider": settings.provider,
                "stateDir": settings.state_dir,
                "settings": settings.rows,
                "resolved": settings,
            });
            serde_json::to_writer_pretty(&mut out, &doc)?;
            writeln!(out)?;
        }
        OutputFormat::Text => {
            let name_w = settings
                .rows
                .iter()
                .map(|r| r.name.len())
                .max()
                .unwrap_or(4);
            let value_w = settings
                .rows
                .iter()
                .map(|r| r.value.len())
                .max()
                .unwrap_or(5)
                .clamp(5, 40);
            let source_w = settings
                .rows
                .iter()
                .map(|r| r.source.to_string().len())
                .max()
                .unwrap_or(6);
            writeln!(
                out,
                "{:<name_w$}  {:<value_w$}  {:<source_w$}  NOTE",
                "NAME", "VALUE", "SOURCE"
            )?;
            for r in &settings.rows {
                let value = if r.value.is_empty() { "\"\"" } else { &r.value };
                writeln!(
                    out,
                    "{:<name_w$}  {:<value_w$}  {:<source_w$}  {}",
                    r.name,
                    value,
                    r.source.to_string(),
                    r.note.as_deref().unwrap_or("")
                )?;
            }
            let derived = match (&settings.gce, &settings.aws) {
                (Some(g), _) => Some(("region", g.region.as_str(), "KUBE_GCE_ZONE")),
                (_, Some(a)) => Some(("region", a.region.as_str(), "KUBE_AWS_ZONE")),
                _ => None,
            };
            if let Some((what, value, from)) = derived {
                writeln!(out, "\n{what}: {value} (derived from {from})")?;
            }
            writeln!(out, "state directory: {}", settings.state_dir.display())?;
        }
    }
    Ok(())
}

pub fn version(format: OutputFormat) -> Result {
    let version = env!("CARGO_PKG_VERSION");
    let stage1: Vec<&str> = rktup_config::kind::STAGE1_NAMES.to_vec();
    match format {
        OutputFormat::Json => {
            let doc = serde_json::json!({
                "rktup": version,
                "stage1Images": stage1,
                "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        OutputFormat::Text => {
            println!("rktup {version}");
            println!(
                "platform: {}/{}",
                std::env::consts::OS,
                std::env::consts::ARCH
            );
            println!("stage1 images: {}", stage1.join(", "));
        }
    }
    Ok(())
}
