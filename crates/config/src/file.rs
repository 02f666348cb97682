//! The cluster file given with `--config`: YAML whose keys are setting names.
//!
//! ```yaml
//! NUM_NODES: 2                 # kube-up names,
//! kube-version: v1.32.4        # flag names,
//! dns_domain: cluster.local    # or their snake_case forms
//! gce:                         # provider sections override the top level
//!   zone: europe-west4-a
//! ```
//!
//! Besides setting names, the kind-style keys `nodes:` (a list), `registries:` and
//! `portMappings:` describe a local cluster's nodes (`cluster.rs`); `kind: Cluster` and an
//! `apiVersion` are accepted so kind's files need few changes. Every problem is collected,
//! each named `<file> (<key path>)`.

use crate::cluster::{ClusterLayout, LAYOUT_KEYS};
use crate::model::{InvalidSetting, InvalidSettings};
use crate::provider::Provider;
use crate::spec::{SettingSpec, SETTINGS};
use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("failed to read cluster file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cluster file {path} is not valid YAML: {source}")]
    Yaml {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("cluster file {path}: {message}")]
    Shape { path: PathBuf, message: String },
    /// Every problem of the file, each naming its key path.
    #[error("{0}")]
    Invalid(InvalidSettings),
}

#[derive(Debug, Clone)]
pub struct ClusterFile {
    pub path: PathBuf,
    /// Top-level values, keyed by setting key, with the key as written.
    common: BTreeMap<&'static str, (String, String)>,
    /// Provider sections.
    sections: BTreeMap<Provider, BTreeMap<&'static str, (String, String)>>,
    /// Nodes, registries and port mappings (`cluster.rs`).
    pub layout: ClusterLayout,
    /// Every problem found, as `<file> (<key path>)` inputs; [`ClusterFile::parse`] refuses a
    /// file with any, `rktup_config::load` reports them with the settings' own.
    pub problems: Vec<InvalidSetting>,
}

/// The settings a key names, in any spelling the file allows (`zone` names the GCE and the AWS
/// zone alike).
fn lookup_key(written: &str) -> impl Iterator<Item = &'static SettingSpec> {
    let normal = written.replace('-', "_").to_ascii_uppercase();
    SETTINGS.iter().filter(move |s| {
        s.key == normal
            || s.env.iter().any(|(e, _)| *e == normal)
            || s.flag
                .iter()
                .chain(s.flag_aliases)
                .any(|f| f.replace('-', "_").to_ascii_uppercase() == normal)
    })
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn shown(v: &Value) -> String {
    scalar(v).unwrap_or_else(|| {
        serde_yaml_ng::to_string(v)
            .map(|s| s.trim().replace('\n', " "))
            .unwrap_or_default()
    })
}

impl ClusterFile {
    /// Reads and checks the file: any problem is an error naming every one.
    pub fn load(path: &Path) -> Result<Self, FileError> {
        Self::load_unchecked(path)?.checked()
    }

    /// Reads the file, keeping its problems in [`ClusterFile::problems`] (only unreadable files
    /// and YAML syntax errors fail here), so they are reported with the settings' errors.
    pub fn load_unchecked(path: &Path) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_unchecked(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, FileError> {
        Self::parse_unchecked(path, text)?.checked()
    }

    fn checked(self) -> Result<Self, FileError> {
        if self.problems.is_empty() {
            Ok(self)
        } else {
            Err(FileError::Invalid(InvalidSettings(self.problems)))
        }
    }

    pub fn parse_unchecked(path: &Path, text: &str) -> Result<Self, FileError> {
        let doc: Value = serde_yaml_ng::from_str(text).map_err(|source| FileError::Yaml {
            path: path.to_path_buf(),
            source,
        })?;
        let mut file = ClusterFile {
            path: path.to_path_buf(),
            common: BTreeMap::new(),
            sections: BTreeMap::new(),
            layout: ClusterLayout::default(),
            problems: vec![],
        };
        let map = match doc {
            Value::Mapping(m) => m,
            Value::Null => return Ok(file),
            _ => {
                return Err(FileError::Shape {
                    path: path.to_path_buf(),
                    message: "expected a mapping of setting names to values".into(),
                })
            }
        };
        let input = |key: &str| format!("{} ({key})", path.display());
        let mut problems = vec![];
        let mut bad = |key: &str, v: &Value, expected: String| {
            problems.push(InvalidSetting {
                input: input(key),
                value: shown(v),
                expected,
            })
        };
        let (layout, layout_problems) = crate::cluster::parse_layout(&map);
        for (k, v) in &map {
            let Some(key) = scalar(k) else {
                bad(&shown(k), v, "a setting name as the key".into());
                continue;
            };
            let is_layout =
                LAYOUT_KEYS.contains(&key.as_str()) && !(key == "nodes" && scalar(v).is_some());
            if is_layout {
                continue;
            }
            // kind's `name:` is the cluster's name (`--name`, INSTANCE_PREFIX).
            if key == "name" {
                match scalar(v) {
                    Some(n) => {
                        file.common
                            .insert("INSTANCE_PREFIX", ("name".to_string(), n));
                    }
                    None => bad(&key, v, "the cluster's name".into()),
                }
                continue;
            }
            if let Some(provider) = Provider::ALL.into_iter().find(|p| p.as_str() == key) {
                let Value::Mapping(section) = v else {
                    bad(&key, v, "a mapping of setting names to values".into());
                    continue;
                };
                let entries = file.sections.entry(provider).or_default();
                for (k, v) in section {
                    let Some(written) = scalar(k) else {
                        bad(&format!("{key}.{}", shown(k)), v, "a setting name".into());
                        continue;
                    };
                    let path = format!("{key}.{written}");
                    match Self::entry(&written, v) {
                        Err(m) => bad(&path, v, m),
                        Ok((specs, value)) => {
                            match specs.into_iter().find(|s| s.applies_to(provider)) {
                                Some(spec) => {
                                    entries.insert(spec.key, (path, value));
                                }
                                None => {
                                    bad(&path, v, format!("a setting of the {provider} provider"))
                                }
                            }
                        }
                    }
                }
            } else {
                match Self::entry(&key, v) {
                    Err(m) => bad(&key, v, m),
                    Ok((specs, value)) => {
                        for spec in specs {
                            file.common.insert(spec.key, (key.clone(), value.clone()));
                        }
                    }
                }
            }
        }
        // A `nodes:` list gives the number of nodes; a NUM_NODES beside it must agree.
        if !layout.nodes.is_empty() {
            let n = layout.nodes.len().to_string();
            match file.common.get("NUM_NODES") {
                Some((written, v)) if *v != n => bad(
                    written,
                    &Value::String(v.clone()),
                    format!("{n}, the number of entries of nodes: (or leave it out)"),
                ),
                _ => {
                    file.common.insert("NUM_NODES", ("nodes".to_string(), n));
                }
            }
        }
        problems.extend(layout_problems.into_iter().map(|p| InvalidSetting {
            input: input(&p.path),
            value: p.value,
            expected: p.expected,
        }));
        file.layout = layout;
        file.problems = problems;
        Ok(file)
    }

    fn entry(written: &str, v: &Value) -> Result<(Vec<&'static SettingSpec>, String), String> {
        let specs: Vec<_> = lookup_key(written).collect();
        if specs.is_empty() {
            return Err(format!(
                "a setting name or one of name, {} (unknown setting: `rktup config <provider>` \
                 lists every name)",
                LAYOUT_KEYS.join(", ")
            ));
        }
        let value = scalar(v).ok_or_else(|| "a single value".to_string())?;
        Ok((specs, value))
    }

    /// The file's value for `spec` on `provider`: the provider's section first.
    pub fn get(&self, spec: &SettingSpec, provider: Provider) -> Option<(String, String)> {
        self.sections
            .get(&provider)
            .and_then(|s| s.get(spec.key))
            .or_else(|| self.common.get(spec.key))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::spec;

    #[test]
    fn spellings_and_sections() {
        let f = ClusterFile::parse(
            Path::new("c.yaml"),
            "NUM_NODES: 2\nkube-version: v1.31.0\ndns_domain: example.local\ngce:\n  zone: europe-west4-a\n  num_nodes: 5\n",
        )
        .unwrap();
        let n = spec("NUM_NODES").unwrap();
        assert_eq!(f.get(n, Provider::Aws).unwrap().1, "2");
        assert_eq!(f.get(n, Provider::Gce).unwrap().1, "5");
        assert_eq!(
            f.get(spec("KUBE_GCE_ZONE").unwrap(), Provider::Gce)
                .unwrap()
                .1,
            "europe-west4-a"
        );
        assert_eq!(
            f.get(spec("KUBE_VERSION").unwrap(), Provider::Local)
                .unwrap()
                .1,
            "v1.31.0"
        );
    }

    #[test]
    fn kinds_name_is_the_cluster_name() {
        let f = ClusterFile::parse(Path::new("c.yaml"), "kind: Cluster\nname: ci\n").unwrap();
        assert_eq!(
            f.get(spec("INSTANCE_PREFIX").unwrap(), Provider::Local)
                .unwrap(),
            ("name".to_string(), "ci".to_string())
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = ClusterFile::parse(Path::new("c.yaml"), "NUM_NODEZ: 2\n").unwrap_err();
        assert!(e.to_string().contains("NUM_NODEZ"), "{e}");
        let e = ClusterFile::parse(Path::new("c.yaml"), "aws:\n  project: x\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("c.yaml (aws.project): expected a setting of the aws provider"),
            "{e}"
        );
        let f = ClusterFile::parse(Path::new("c.yaml"), "zone: eu-west-1a\n").unwrap();
        assert_eq!(
            f.get(spec("KUBE_AWS_ZONE").unwrap(), Provider::Aws)
                .unwrap()
                .1,
            "eu-west-1a"
        );
    }
}
