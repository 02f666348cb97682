//! Image references: `busybox`, `127.0.0.1:5000/busybox:1`, `host/repo@sha256:...`.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("failed to parse image reference {0:?}: {1}")]
    Invalid(String, &'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host[:port] as written (docker.io for Docker Hub).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let s = s.trim();
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(ReferenceError::Invalid(
                s.into(),
                "empty or contains spaces",
            ));
        }
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let hexpart = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| ReferenceError::Invalid(s.into(), "only sha256 digests"))?;
                if hexpart.len() != 64 || !hexpart.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(ReferenceError::Invalid(s.into(), "malformed digest"));
                }
                (n, Some(d.to_ascii_lowercase()))
            }
            None => (s, None),
        };
        // A tag is a ':' after the last '/'.
        let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name[slash..].rfind(':') {
            Some(i) => (&name[..slash + i], Some(name[slash + i + 1..].to_string())),
            None => (name, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty()
            || !repository
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c))
        {
            return Err(ReferenceError::Invalid(s.into(), "bad repository name"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host the HTTP API is served on.
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// Tag or digest to ask the manifest endpoint for.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_names() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r = Reference::parse("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "a/b")
        );
        assert_eq!(r.reference(), "v1");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("localhost/x@{d}")).unwrap();
        assert_eq!(r.reference(), d);
        assert!(Reference::parse("UPPER/case").is_err());
        assert!(Reference::parse("x@sha256:zz").is_err());
    }
}
