//! What `rktup render` and `up --dry-run` print by default: the rendering with its secrets
//! replaced by placeholders that say what was there (`<redacted: 1704 bytes of ca.key>`), as
//! kubectl hides what it is not asked for. `--show-secrets` prints the rendering as the
//! machine receives it.
//!
//! Secrets are found by what they are, not by which file holds them, so a template that moves
//! a key or embeds it elsewhere stays covered:
//! - every PEM block whose label ends in `PRIVATE KEY` (PKCS#8, RSA, EC);
//! - the bootstrap token's secret half (its id is public, as upstream's: it names the Secret);
//! - the signature and session token of a pre-signed URL (S3's `X-Amz-Signature`,
//!   `X-Amz-Security-Token`; GCS's `X-Goog-Signature`): whoever holds them can fetch the object.

use crate::{RenderedFile, RenderedUnit};

/// Query parameters of a signed URL that act as credentials.
const SIGNED_URL_SECRETS: [&str; 3] = [
    "X-Amz-Signature=",
    "X-Amz-Security-Token=",
    "X-Goog-Signature=",
];

/// Replaces the secrets of one rendering.
#[derive(Debug, Clone)]
pub struct Redactor {
    /// Exact values to replace anywhere, with what replaces them.
    values: Vec<(String, String)>,
}

impl Redactor {
    /// A redactor for a rendering whose bootstrap token secret is `token_secret`.
    pub fn new(token_secret: &str) -> Redactor {
        let mut values = Vec::new();
        if !token_secret.is_empty() {
            values.push((
                token_secret.to_string(),
                "<redacted:bootstrap-token-secret>".to_string(),
            ));
        }
        Redactor { values }
    }

    /// `text` (the content of `name`) with its secrets replaced.
    pub fn text(&self, name: &str, text: &str) -> String {
        let mut out = redact_private_keys(name, text);
        for (secret, placeholder) in &self.values {
            out = out.replace(secret.as_str(), placeholder);
        }
        redact_signed_urls(&out)
    }

    pub fn file(&self, f: &RenderedFile) -> RenderedFile {
        let name = f.path.rsplit('/').next().unwrap_or(&f.path);
        RenderedFile {
            content: self.text(name, &f.content),
            ..f.clone()
        }
    }

    pub fn unit(&self, u: &RenderedUnit) -> RenderedUnit {
        RenderedUnit {
            content: self.text(&u.name, &u.content),
            ..u.clone()
        }
    }
}

/// Every `-----BEGIN … PRIVATE KEY-----` … `-----END … PRIVATE KEY-----` block of `text` as one
/// line `<redacted: N bytes of NAME>`. An unterminated block is redacted to the end of the text.
fn redact_private_keys(name: &str, text: &str) -> String {
    const BEGIN: &str = "-----BEGIN ";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let block = &rest[start..];
        let label = block[BEGIN.len()..]
            .find("-----")
            .map(|end| &block[BEGIN.len()..BEGIN.len() + end]);
        let Some(label) = label.filter(|l| l.ends_with("PRIVATE KEY") && !l.contains('\n')) else {
            // Not a private key (a certificate, a public key): kept as it is.
            out.push_str(&rest[..start + BEGIN.len()]);
            rest = &rest[start + BEGIN.len()..];
            continue;
        };
        let end_marker = format!("-----END {label}-----");
        let len = block
            .find(&end_marker)
            .map(|i| i + end_marker.len())
            .unwrap_or(block.len());
        out.push_str(&rest[..start]);
        out.push_str(&format!("<redacted: {len} bytes of {name}>"));
        rest = &block[len..];
    }
    out.push_str(rest);
    out
}

/// The values of a signed URL's credential parameters replaced by `<redacted>`.
fn redact_signed_urls(text: &str) -> String {
    let mut out = text.to_string();
    for param in SIGNED_URL_SECRETS {
        let mut from = 0;
        while let Some(i) = out[from..].find(param) {
            let value_start = from + i + param.len();
            let value_end = out[value_start..]
                .find(|c: char| c == '&' || c == '#' || c == '\'' || c == '"' || c.is_whitespace())
                .map(|e| value_start + e)
                .unwrap_or(out.len());
            out.replace_range(value_start..value_end, "<redacted>");
            from = value_start + "<redacted>".len();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds_private_key(text: &str) -> bool {
        text.contains("PRIVATE KEY-----")
    }

    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nabc=\n-----END PRIVATE KEY-----\n";
    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn private_keys_become_one_line_naming_the_file() {
        let r = Redactor::new("");
        let text = format!("{CERT}{KEY}");
        let out = r.text("ca.key", &text);
        let key_len = KEY.trim_end().len();
        assert_eq!(
            out,
            format!("{CERT}<redacted: {key_len} bytes of ca.key>\n")
        );
        assert!(!holds_private_key(&out));
        // Other labels of private keys too, and more than one per text.
        let rsa = KEY.replace("PRIVATE KEY", "RSA PRIVATE KEY");
        let ec = KEY.replace("PRIVATE KEY", "EC PRIVATE KEY");
        let out = r.text("x", &format!("a\n{rsa}b\n{ec}c"));
        assert!(!holds_private_key(&out), "{out}");
        assert_eq!(out.matches("<redacted: ").count(), 2, "{out}");
        assert!(
            out.starts_with("a\n<redacted: ") && out.ends_with("\nc"),
            "{out}"
        );
    }

    #[test]
    fn an_unterminated_key_is_redacted_to_the_end() {
        let out = Redactor::new("").text("k", "x\n-----BEGIN PRIVATE KEY-----\nMIIE");
        assert_eq!(out, "x\n<redacted: 32 bytes of k>");
    }

    #[test]
    fn token_secret_and_signed_urls() {
        let r = Redactor::new("0123456789abcdef");
        let out = r.text(
            "bootstrap-kubeconfig",
            "token: abcdef.0123456789abcdef\ncurl https://b.s3.amazonaws.com/rktup?X-Amz-Credential=AKIA%2F&X-Amz-Signature=deadbeef&X-Amz-Security-Token=tok x\nhttps://storage.googleapis.com/o?X-Goog-Signature=cafe",
        );
        assert_eq!(
            out,
            "token: abcdef.<redacted:bootstrap-token-secret>\ncurl https://b.s3.amazonaws.com/rktup?X-Amz-Credential=AKIA%2F&X-Amz-Signature=<redacted>&X-Amz-Security-Token=<redacted> x\nhttps://storage.googleapis.com/o?X-Goog-Signature=<redacted>"
        );
        // The placeholder stays a plain YAML scalar: the kubeconfig still parses.
        let kc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str("token: abcdef.<redacted:bootstrap-token-secret>").unwrap();
        assert!(kc["token"].as_str().is_some());
    }
}
