//! The cluster file given with `--config`: YAML whose keys are setting names.
//!
//! ```yaml
//! NUM_NODES: 2                 # kube-up names,
//! kube-version: v1.32.4        # flag names,
//! dns_domain: cluster.local    # or their snake_case forms
//! gce:                         # provider sections override the top level
//!   zone: europe-west4-a
//! ```

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
}

#[derive(Debug, Clone)]
pub struct ClusterFile {
    pub path: PathBuf,
    /// Top-level values, keyed by setting key, with the key as written.
    common: BTreeMap<&'static str, (String, String)>,
    /// Provider sections.
    sections: BTreeMap<Provider, BTreeMap<&'static str, (String, String)>>,
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

impl ClusterFile {
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, FileError> {
        let shape = |message: String| FileError::Shape {
            path: path.to_path_buf(),
            message,
        };
        let doc: Value = serde_yaml_ng::from_str(text).map_err(|source| FileError::Yaml {
            path: path.to_path_buf(),
            source,
        })?;
        let mut file = ClusterFile {
            path: path.to_path_buf(),
            common: BTreeMap::new(),
            sections: BTreeMap::new(),
        };
        let map = match doc {
            Value::Mapping(m) => m,
            Value::Null => return Ok(file),
            _ => {
                return Err(shape(
                    "expected a mapping of setting names to values".into(),
                ))
            }
        };
        for (k, v) in map {
            let key = scalar(&k).ok_or_else(|| shape(format!("key {k:?} is not a name")))?;
            if let Some(provider) = Provider::ALL.into_iter().find(|p| p.as_str() == key) {
                let Value::Mapping(section) = v else {
                    return Err(shape(format!("section {key}: expected a mapping")));
                };
                let entries = file.sections.entry(provider).or_default();
                for (k, v) in section {
                    let written = scalar(&k)
                        .ok_or_else(|| shape(format!("{key}: key {k:?} is not a name")))?;
                    let (specs, value) = Self::entry(&written, &v)
                        .map_err(|m| shape(format!("{key}.{written}: {m}")))?;
                    let Some(spec) = specs.into_iter().find(|s| s.applies_to(provider)) else {
                        return Err(shape(format!(
                            "{key}.{written}: not a setting of the {provider} provider"
                        )));
                    };
                    entries.insert(spec.key, (format!("{key}.{written}"), value));
                }
            } else {
                let (specs, value) =
                    Self::entry(&key, &v).map_err(|m| shape(format!("{key}: {m}")))?;
                for spec in specs {
                    file.common.insert(spec.key, (key.clone(), value.clone()));
                }
            }
        }
        Ok(file)
    }

    fn entry(written: &str, v: &Value) -> Result<(Vec<&'static SettingSpec>, String), String> {
        let specs: Vec<_> = lookup_key(written).collect();
        if specs.is_empty() {
            return Err("unknown setting (`rktup config <provider>` lists every name)".to_string());
        }
        let value = scalar(v).ok_or_else(|| "expected a single value".to_string())?;
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
    fn unknown_keys_are_errors() {
        let e = ClusterFile::parse(Path::new("c.yaml"), "NUM_NODEZ: 2\n").unwrap_err();
        assert!(e.to_string().contains("NUM_NODEZ"), "{e}");
        let e = ClusterFile::parse(Path::new("c.yaml"), "aws:\n  project: x\n").unwrap_err();
        assert!(
            e.to_string().contains("not a setting of the aws provider"),
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
