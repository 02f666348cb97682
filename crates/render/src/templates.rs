//! The tera templates: embedded from `templates/` at build time so an installed binary needs
//! nothing beside it; `--templates DIR` overrides any of them by relative path.

use include_dir::{include_dir, Dir};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tera::{Tera, Value};

static EMBEDDED: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../templates");

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("failed to read template {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template directory {dir}: {name} is not one of rktup's templates (valid: {valid})")]
    Unknown {
        dir: PathBuf,
        name: String,
        valid: String,
    },
    #[error("failed to render {name}: {message}")]
    Render { name: String, message: String },
    #[error("failed to render the Ignition config: {0}")]
    Ignition(#[from] crate::ignition::IgnitionError),
}

pub struct Templates {
    tera: Tera,
}

/// `indent(width=N)`: prefixes every non-empty line, so a rendered file nests inside a YAML block
/// scalar.
fn indent(value: &Value, args: &HashMap<String, Value>) -> tera::Result<Value> {
    let text = value
        .as_str()
        .ok_or_else(|| tera::Error::msg("indent: expected a string"))?;
    let width = args.get("width").and_then(Value::as_u64).unwrap_or(2) as usize;
    let pad = " ".repeat(width);
    let out: Vec<String> = text
        .trim_end_matches('\n')
        .lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect();
    Ok(Value::String(out.join("\n")))
}

fn walk(dir: &Dir<'static>, out: &mut Vec<(String, String)>) {
    for file in dir.files() {
        if let (Some(path), Some(text)) = (file.path().to_str(), file.contents_utf8()) {
            if path.ends_with(".tera") {
                out.push((path.to_string(), text.to_string()));
            }
        }
    }
    for sub in dir.dirs() {
        walk(sub, out);
    }
}

/// Every embedded template, by relative path (`units/kubelet.service.tera`).
pub fn embedded() -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(&EMBEDDED, &mut out);
    out.sort();
    out
}

impl Templates {
    pub fn embedded() -> Result<Templates, TemplateError> {
        Self::build(embedded())
    }

    /// The embedded templates with any file under `dir` replacing its namesake. A file that
    /// replaces nothing is an error: it is most likely misnamed and would be silently ignored.
    pub fn with_overrides(dir: &Path) -> Result<Templates, TemplateError> {
        let mut set: HashMap<String, String> = embedded().into_iter().collect();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let entries = std::fs::read_dir(&d).map_err(|source| TemplateError::Read {
                path: d.clone(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| TemplateError::Read {
                    path: d.clone(),
                    source,
                })?;
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let rel = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .to_string();
                if !set.contains_key(&rel) {
                    let mut valid: Vec<&String> = set.keys().collect();
                    valid.sort();
                    return Err(TemplateError::Unknown {
                        dir: dir.to_path_buf(),
                        name: rel,
                        valid: valid
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
                let text =
                    std::fs::read_to_string(&path).map_err(|source| TemplateError::Read {
                        path: path.clone(),
                        source,
                    })?;
                set.insert(rel, text);
            }
        }
        let mut all: Vec<(String, String)> = set.into_iter().collect();
        all.sort();
        Self::build(all)
    }

    fn build(templates: Vec<(String, String)>) -> Result<Templates, TemplateError> {
        let mut tera = Tera::default();
        tera.autoescape_on(vec![]);
        tera.register_filter("indent", indent);
        tera.add_raw_templates(templates)
            .map_err(|e| TemplateError::Render {
                name: "templates".into(),
                message: error_chain(&e),
            })?;
        Ok(Templates { tera })
    }

    pub fn render(&self, name: &str, context: &tera::Context) -> Result<String, TemplateError> {
        self.tera
            .render(name, context)
            .map_err(|e| TemplateError::Render {
                name: name.to_string(),
                message: error_chain(&e),
            })
    }
}

/// Tera's errors keep the useful part in their sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        cur = s.source();
    }
    msg
}
