//! Cloud user-data limits, checked at render time so an oversized configuration never reaches a
//! cloud API: EC2 takes at most 16 KiB (gzipped when needed, as kube-up did), a GCE metadata
//! value at most 256 KiB.

use rktup_config::Provider;
use std::io::Write;

pub const AWS_USER_DATA_LIMIT: usize = 16 * 1024;
pub const GCE_METADATA_VALUE_LIMIT: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UserDataError {
    #[error("{provider} user-data for the {role} is {size} bytes{detail}; the limit is {limit} bytes. Shorten the templates (--templates) or the settings that feed them")]
    TooLarge {
        provider: Provider,
        role: &'static str,
        size: usize,
        limit: usize,
        detail: &'static str,
    },
    #[error("failed to gzip user-data: {0}")]
    Gzip(std::io::Error),
}

/// User-data as the provider sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserData {
    pub bytes: Vec<u8>,
    pub gzipped: bool,
    /// The cloud-config's size before any gzip (what a redacted printout can't measure).
    pub text_bytes: usize,
}

pub fn encode_user_data(
    provider: Provider,
    role: &'static str,
    cloud_config: &str,
) -> Result<UserData, UserDataError> {
    let raw = UserData {
        bytes: cloud_config.as_bytes().to_vec(),
        gzipped: false,
        text_bytes: cloud_config.len(),
    };
    match provider {
        Provider::Local => Ok(raw),
        Provider::Gce if raw.bytes.len() <= GCE_METADATA_VALUE_LIMIT => Ok(raw),
        Provider::Gce => Err(UserDataError::TooLarge {
            provider,
            role,
            size: raw.bytes.len(),
            limit: GCE_METADATA_VALUE_LIMIT,
            detail: "",
        }),
        Provider::Aws if raw.bytes.len() <= AWS_USER_DATA_LIMIT => Ok(raw),
        Provider::Aws => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(&raw.bytes).map_err(UserDataError::Gzip)?;
            let bytes = gz.finish().map_err(UserDataError::Gzip)?;
            if bytes.len() > AWS_USER_DATA_LIMIT {
                return Err(UserDataError::TooLarge {
                    provider,
                    role,
                    size: bytes.len(),
                    limit: AWS_USER_DATA_LIMIT,
                    detail: " even gzipped",
                });
            }
            Ok(UserData {
                bytes,
                gzipped: true,
                text_bytes: raw.text_bytes,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_gzips_then_refuses() {
        let small = "#cloud-config\n";
        assert!(
            !encode_user_data(Provider::Aws, "node", small)
                .unwrap()
                .gzipped
        );
        let compressible = format!("#cloud-config\n{}", "a: b\n".repeat(10_000));
        let gz = encode_user_data(Provider::Aws, "node", &compressible).unwrap();
        assert!(gz.gzipped && gz.bytes.len() <= AWS_USER_DATA_LIMIT);
        // Incompressible text: hex of a hash chain.
        let mut noise = String::from("#cloud-config\n");
        let mut x: u64 = 0x9e3779b97f4a7c15;
        while noise.len() < 40_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.push_str(&format!("{x:016x}"));
        }
        let err = encode_user_data(Provider::Aws, "master", &noise).unwrap_err();
        assert!(err.to_string().contains("even gzipped"), "{err}");
        let big = "x".repeat(GCE_METADATA_VALUE_LIMIT + 1);
        assert!(encode_user_data(Provider::Gce, "node", &big).is_err());
    }
}
