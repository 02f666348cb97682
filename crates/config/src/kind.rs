//! The kinds of value a setting can hold, and how each is checked and normalised.
//!
//! A check returns the normalised value, or a phrase saying what would be valid; the caller
//! adds the input's name and the bad value (`NUM_NODES: expected a whole number ≥ 0, got "abc"`).

use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// rkt stage1 images rktup knows, as rkt named them (`coreos.com/rkt/stage1-*`).
pub use rktup_node_contract::STAGE1_NAMES;
use rktup_node_contract::{NetworkMode, Stage1};

/// Oldest rkt the seed supports, and the last rkt ever released (the project ended in 2020).
pub const RKT_MIN_VERSION: (u32, u32, u32) = (1, 9, 1);
pub const RKT_MAX_VERSION: (u32, u32, u32) = (1, 30, 0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Cluster name: a DNS label short enough for every resource name built from it.
    ClusterName,
    /// A whole number in a range.
    Uint {
        min: u64,
        max: u64,
    },
    Bool,
    /// An IPv4 CIDR; `optional` allows the empty string.
    Cidr {
        optional: bool,
    },
    /// An IPv4 CIDR, or it and an IPv6 one, comma-separated (a dual-stack cluster's range, as
    /// kube-apiserver's `--service-cluster-ip-range` and kind's `podSubnet` take them).
    DualCidr,
    Ipv4,
    /// One of a fixed list; the first of each pair is what the user may write, the second the
    /// normalised value.
    OneOf(&'static [(&'static str, &'static str)]),
    /// A stage1 image name, normalised to `coreos.com/rkt/stage1-*` (the node contract parses).
    Stage1,
    /// A pod network, normalised to kubenet, cni or contained (the node contract parses).
    Network,
    KubeVersion,
    RktVersion,
    GceZone,
    AwsZone,
    /// GCE project id; `optional` allows the empty string.
    GceProject {
        optional: bool,
    },
    /// GCE disk size such as `20GB`.
    GceDiskSize,
    /// A machine or instance type such as `n1-standard-1` or `t3.medium`.
    MachineType,
    /// An AWS id with the given prefix (`ami`, `vpc`, `subnet`), or empty.
    AwsId(&'static str),
    /// `host:port`.
    HostPort,
    Port,
    DnsDomain,
    /// Empty or an http(s) URL.
    Url,
    /// Empty or 64 hex digits.
    Sha256,
    /// Comma-separated words (GCE scopes).
    WordList,
    /// Any text, possibly empty.
    Text,
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "on" => Some(true),
        "false" | "0" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

/// Parses `v1.2.3` (the `v` optional) into its numbers.
pub(crate) fn parse_version(s: &str) -> Option<(u32, u32, u32)> {
    let s = s.strip_prefix('v').unwrap_or(s);
    // Pre-release suffixes such as `-beta.2` or `+coreos.0` are allowed after the patch number.
    let core = s.split(['-', '+']).next().unwrap_or(s);
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

/// The canonical stage1 name for either spelling the seed uses.
pub fn normalise_stage1(s: &str) -> Option<&'static str> {
    Stage1::parse(s).map(Stage1::image_name)
}

impl Kind {
    /// Checks `value`; returns it normalised, or what would have been valid.
    pub fn check(&self, value: &str) -> Result<String, String> {
        let v = value.trim();
        match *self {
            Kind::ClusterName => {
                // GCE names are ≤ 63 characters and the longest one rktup builds is
                // `<name>-minion-template` (16 more), so 40 leaves room for all of them.
                if is_dns_label(v) && v.len() <= 40 && v.as_bytes()[0].is_ascii_lowercase() {
                    Ok(v.to_string())
                } else {
                    Err("a name of 1-40 lower-case letters, digits and '-', starting with a letter and not ending with '-'".into())
                }
            }
            Kind::Uint { min, max } => match v.parse::<u64>() {
                Ok(n) if n >= min && n <= max => Ok(n.to_string()),
                _ if max == u64::MAX => Err(format!("a whole number ≥ {min}")),
                _ => Err(format!("a whole number from {min} to {max}")),
            },
            Kind::Bool => parse_bool(v)
                .map(|b| b.to_string())
                .ok_or_else(|| "true or false".into()),
            Kind::Cidr { optional } => {
                if optional && v.is_empty() {
                    return Ok(String::new());
                }
                match v.parse::<Ipv4Net>() {
                    Ok(net) if net.trunc() == net => Ok(net.to_string()),
                    Ok(net) => Err(format!(
                        "an IPv4 CIDR whose address is the network's first (did you mean {}?)",
                        net.trunc()
                    )),
                    Err(_) => Err("an IPv4 CIDR such as 10.244.0.0/16".into()),
                }
            }
            Kind::DualCidr => {
                let mut parts = v.split(',').map(str::trim);
                let first = Kind::Cidr { optional: false }.check(parts.next().unwrap_or(""))?;
                let Some(second) = parts.next() else {
                    return Ok(first);
                };
                const WHAT: &str = "an IPv4 CIDR such as 10.244.0.0/16, or it and an IPv6 one \
                                    for a dual-stack cluster: 10.244.0.0/16,fd00:10:244::/56";
                if parts.next().is_some() {
                    return Err(WHAT.into());
                }
                match second.parse::<ipnet::Ipv6Net>() {
                    Ok(net) if net.trunc() == net => Ok(format!("{first},{net}")),
                    Ok(net) => Err(format!(
                        "an IPv6 CIDR whose address is the network's first (did you mean {}?)",
                        net.trunc()
                    )),
                    Err(_) => Err(WHAT.into()),
                }
            }
            Kind::Ipv4 => v
                .parse::<Ipv4Addr>()
                .map(|ip| ip.to_string())
                .map_err(|_| "an IPv4 address such as 10.0.0.10".into()),
            Kind::OneOf(choices) => choices
                .iter()
                .find(|(input, _)| input.eq_ignore_ascii_case(v))
                .map(|(_, norm)| norm.to_string())
                .ok_or_else(|| {
                    let names: Vec<String> = choices
                        .iter()
                        .map(|(i, _)| {
                            if i.is_empty() {
                                "\"\"".to_string()
                            } else {
                                (*i).to_string()
                            }
                        })
                        .collect();
                    format!("one of {}", names.join(", "))
                }),
            Kind::Stage1 => normalise_stage1(v)
                .map(str::to_string)
                .ok_or_else(Stage1::expected),
            Kind::Network => NetworkMode::parse(v)
                .map(|m| m.name().to_string())
                .ok_or_else(NetworkMode::expected),
            Kind::KubeVersion => match parse_version(v) {
                Some(_) => Ok(if v.starts_with('v') {
                    v.to_string()
                } else {
                    format!("v{v}")
                }),
                None => Err("a Kubernetes release such as v1.32.4".into()),
            },
            Kind::RktVersion => {
                let expected = format!(
                    "a rkt release from {}.{}.{} (the seed's minimum) to {}.{}.{} (the last one)",
                    RKT_MIN_VERSION.0,
                    RKT_MIN_VERSION.1,
                    RKT_MIN_VERSION.2,
                    RKT_MAX_VERSION.0,
                    RKT_MAX_VERSION.1,
                    RKT_MAX_VERSION.2
                );
                match parse_version(v) {
                    Some(ver) if (RKT_MIN_VERSION..=RKT_MAX_VERSION).contains(&ver) => {
                        Ok(v.trim_start_matches('v').to_string())
                    }
                    _ => Err(expected),
                }
            }
            Kind::GceZone => {
                // region-like `us-central1` then `-b`.
                let ok = v.rsplit_once('-').is_some_and(|(region, zone)| {
                    zone.len() == 1
                        && zone.as_bytes()[0].is_ascii_lowercase()
                        && region.split_once('-').is_some_and(|(area, loc)| {
                            !area.is_empty()
                                && area.bytes().all(|b| b.is_ascii_lowercase())
                                && loc.len() >= 2
                                && loc.bytes().last().is_some_and(|b| b.is_ascii_digit())
                                && loc
                                    .bytes()
                                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                        })
                });
                if ok {
                    Ok(v.to_string())
                } else {
                    Err("a Compute Engine zone such as us-central1-b".into())
                }
            }
            Kind::AwsZone => {
                // `us-west-2a`, `eu-central-1b`, `us-gov-west-1a`: region then one letter.
                let ok = v.len() > 2
                    && v.as_bytes()[v.len() - 1].is_ascii_lowercase()
                    && v.as_bytes()[v.len() - 2].is_ascii_digit()
                    && v.split('-').count() >= 3
                    && v.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if ok {
                    Ok(v.to_string())
                } else {
                    Err("an EC2 availability zone such as us-west-2a".into())
                }
            }
            Kind::GceProject { optional } => {
                if optional && v.is_empty() {
                    return Ok(String::new());
                }
                let ok = (6..=30).contains(&v.len())
                    && v.as_bytes()[0].is_ascii_lowercase()
                    && is_dns_label(v);
                if ok {
                    Ok(v.to_string())
                } else {
                    Err("a Google Cloud project id: 6-30 lower-case letters, digits or '-', starting with a letter".into())
                }
            }
            Kind::GceDiskSize => {
                let digits = v.strip_suffix("GB").unwrap_or("");
                match digits.parse::<u32>() {
                    Ok(n) if (10..=65536).contains(&n) => Ok(v.to_string()),
                    _ => Err("a disk size in GB from 10GB to 65536GB, such as 20GB".into()),
                }
            }
            Kind::MachineType => {
                let ok = !v.is_empty()
                    && v.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                    });
                if ok {
                    Ok(v.to_string())
                } else {
                    Err("a machine type such as n1-standard-2 or t3.medium".into())
                }
            }
            Kind::AwsId(prefix) => {
                if v.is_empty() {
                    return Ok(String::new());
                }
                let ok = v
                    .strip_prefix(prefix)
                    .and_then(|r| r.strip_prefix('-'))
                    .is_some_and(|hex| {
                        (8..=17).contains(&hex.len())
                            && hex
                                .bytes()
                                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                    });
                if ok {
                    Ok(v.to_string())
                } else {
                    Err(format!("empty or an id such as {prefix}-0123456789abcdef0"))
                }
            }
            Kind::HostPort => match v.rsplit_once(':') {
                Some((host, port))
                    if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) =>
                {
                    Ok(v.to_string())
                }
                _ => Err("HOST:PORT such as localhost:15441".into()),
            },
            Kind::Port => match v.parse::<u16>() {
                Ok(p) if p > 0 => Ok(p.to_string()),
                _ => Err("a TCP port from 1 to 65535".into()),
            },
            Kind::DnsDomain => {
                if !v.is_empty() && v.split('.').all(is_dns_label) {
                    Ok(v.to_string())
                } else {
                    Err("a DNS domain such as cluster.local".into())
                }
            }
            Kind::Url => {
                if v.is_empty() || v.starts_with("https://") || v.starts_with("http://") {
                    Ok(v.to_string())
                } else {
                    Err("empty or an http(s):// URL".into())
                }
            }
            Kind::Sha256 => {
                if v.is_empty() || (v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())) {
                    Ok(v.to_ascii_lowercase())
                } else {
                    Err("empty or 64 hexadecimal digits".into())
                }
            }
            Kind::WordList => {
                let ok = v.split(',').all(|w| {
                    !w.is_empty()
                        && w.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
                });
                if ok {
                    Ok(v.to_string())
                } else {
                    Err("a comma-separated list such as monitoring,logging-write,storage-ro".into())
                }
            }
            Kind::Text => Ok(value.to_string()),
        }
    }

    /// A short word for the value's shape, shown as the flag's value name.
    pub fn value_name(&self) -> &'static str {
        match self {
            Kind::ClusterName => "NAME",
            Kind::Uint { .. } => "N",
            Kind::Bool => "BOOL",
            Kind::Cidr { .. } => "CIDR",
            Kind::DualCidr => "CIDR[,CIDR6]",
            Kind::Ipv4 => "IP",
            Kind::OneOf(_) | Kind::Network => "VALUE",
            Kind::Stage1 => "STAGE1",
            Kind::KubeVersion | Kind::RktVersion => "VERSION",
            Kind::GceZone | Kind::AwsZone => "ZONE",
            Kind::GceProject { .. } => "PROJECT",
            Kind::GceDiskSize => "SIZE",
            Kind::MachineType => "TYPE",
            Kind::AwsId(_) => "ID",
            Kind::HostPort => "HOST:PORT",
            Kind::Port => "PORT",
            Kind::DnsDomain => "DOMAIN",
            Kind::Url => "URL",
            Kind::Sha256 => "SHA256",
            Kind::WordList => "LIST",
            Kind::Text => "VALUE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage1_both_spellings() {
        assert_eq!(
            normalise_stage1("coreos/rkt/stage1-fly"),
            Some("coreos.com/rkt/stage1-fly")
        );
        assert_eq!(
            normalise_stage1("coreos.com/rkt/stage1-kvm:1.9.1"),
            Some("coreos.com/rkt/stage1-kvm")
        );
        assert_eq!(normalise_stage1("coreos.com/rkt/stage1-lkvm"), None);
        assert_eq!(normalise_stage1("stage1-fly"), None);
    }

    #[test]
    fn zones() {
        assert!(Kind::GceZone.check("us-central1-b").is_ok());
        assert!(Kind::GceZone.check("europe-west4-a").is_ok());
        assert!(Kind::GceZone.check("us-central1").is_err());
        assert!(Kind::GceZone.check("us-west-2a").is_err());
        assert!(Kind::AwsZone.check("us-west-2a").is_ok());
        assert!(Kind::AwsZone.check("us-gov-west-1b").is_ok());
        assert!(Kind::AwsZone.check("us-west-2").is_err());
        assert!(Kind::AwsZone.check("us-central1-b").is_err());
    }

    #[test]
    fn cidrs_must_be_network_addresses() {
        assert_eq!(
            Kind::Cidr { optional: false }.check("10.244.0.0/16"),
            Ok("10.244.0.0/16".into())
        );
        let err = Kind::Cidr { optional: false }
            .check("10.244.1.0/16")
            .unwrap_err();
        assert!(err.contains("10.244.0.0/16"), "{err}");
        assert!(Kind::Cidr { optional: false }.check("10.244.0.0").is_err());
        assert_eq!(
            Kind::DualCidr.check("10.244.0.0/16, fd00:10:244::/56"),
            Ok("10.244.0.0/16,fd00:10:244::/56".into())
        );
        assert_eq!(
            Kind::DualCidr.check("10.0.0.0/16"),
            Ok("10.0.0.0/16".into())
        );
        for bad in [
            "fd00::/56",
            "10.0.0.0/16,10.1.0.0/16",
            "10.0.0.0/16,fd00::1/56",
            "10.0.0.0/16,fd00::/56,fd01::/56",
        ] {
            assert!(Kind::DualCidr.check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions() {
        assert_eq!(Kind::KubeVersion.check("1.10.13"), Ok("v1.10.13".into()));
        assert!(Kind::KubeVersion.check("latest").is_err());
        assert!(Kind::RktVersion.check("1.9.1").is_ok());
        assert!(Kind::RktVersion.check("1.30.0").is_ok());
        assert!(Kind::RktVersion.check("1.8.0").is_err());
        assert!(Kind::RktVersion.check("2.0.0").is_err());
        assert_eq!(parse_version("v1.3.0-beta.2"), Some((1, 3, 0)));
    }

    #[test]
    fn aws_ids() {
        assert!(Kind::AwsId("ami").check("ami-0123456789abcdef0").is_ok());
        assert!(Kind::AwsId("ami").check("").is_ok());
        assert!(Kind::AwsId("vpc").check("subnet-01234567").is_err());
        assert!(Kind::AwsId("vpc").check("vpc-0123").is_err());
    }
}
