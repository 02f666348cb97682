//! The string formats kube-apiserver checks in CRs (apiextensions' supported subset of
//! kube-openapi's strfmt registry); other format names are ignored as upstream strips them.

use std::sync::OnceLock;

use regex::Regex;

fn re(cell: &'static OnceLock<Option<Regex>>, pattern: &str) -> Option<&'static Regex> {
    cell.get_or_init(|| Regex::new(pattern).ok()).as_ref()
}

macro_rules! rx {
    ($pattern:expr) => {{
        static CELL: OnceLock<Option<Regex>> = OnceLock::new();
        re(&CELL, $pattern)
    }};
}

fn matches(r: Option<&Regex>, s: &str) -> bool {
    r.is_some_and(|r| r.is_match(s))
}

/// Normalised (dashes removed, as go-openapi does) name of a format rktup checks, or None when
/// the format is not checked (unknown formats and integer/number formats are not string formats).
pub(crate) fn known(format: &str) -> Option<String> {
    let n = format.replace('-', "");
    const KNOWN: &[&str] = &[
        "bsonobjectid",
        "uri",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "cidr",
        "mac",
        "uuid",
        "uuid3",
        "uuid4",
        "uuid5",
        "ssn",
        "hexcolor",
        "rgbcolor",
        "byte",
        "password",
        "date",
        "duration",
        "datetime",
        "k8sshortname",
        "k8slongname",
    ];
    KNOWN.contains(&n.as_str()).then_some(n)
}

/// Whether `s` is valid for the (normalised) format.
pub(crate) fn validates(format: &str, s: &str) -> bool {
    match format {
        "bsonobjectid" => s.len() == 24 && s.bytes().all(|c| c.is_ascii_hexdigit()),
        "uri" => is_request_uri(s),
        "email" => is_email(s),
        "hostname" => is_hostname(s),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.contains(':') && s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => is_cidr(s),
        "mac" => is_mac(s),
        "uuid" => matches(
            rx!(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$"),
            s,
        ),
        "uuid3" => matches(
            rx!(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$"),
            s,
        ),
        "uuid4" => matches(
            rx!(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$"),
            s,
        ),
        "uuid5" => matches(
            rx!(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$"),
            s,
        ),
        "ssn" => matches(rx!(r"^\d{3}[- ]?\d{2}[- ]?\d{4}$"), s),
        "hexcolor" => matches(rx!(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$"), s),
        "rgbcolor" => matches(
            rx!(
                r"^rgb\(\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*,\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*,\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*\)$"
            ),
            s,
        ),
        "byte" => matches(
            rx!(
                r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$"
            ),
            s,
        ),
        "password" => true,
        "date" => is_date(s),
        "datetime" => is_date_time(s),
        "duration" => is_duration(s),
        "k8sshortname" => crate::names::dns1123_label(s).is_empty(),
        "k8slongname" => crate::names::dns1123_subdomain(s).is_empty(),
        _ => true,
    }
}

/// net/url.ParseRequestURI: an absolute URI or an absolute path, no spaces or control bytes.
fn is_request_uri(s: &str) -> bool {
    if s.is_empty() || s.bytes().any(|c| c < 0x20 || c == 0x7f || c == b' ') {
        return false;
    }
    s.starts_with('/') || matches(rx!(r"^[a-zA-Z][a-zA-Z0-9+.\-]*:"), s)
}

/// net/mail.ParseAddress, for the forms met in practice: `a@b` and `Name <a@b>`.
fn is_email(s: &str) -> bool {
    let addr = match (s.find('<'), s.strip_suffix('>')) {
        (Some(i), Some(rest)) => &rest[i + 1..],
        _ => s.trim(),
    };
    matches(
        rx!(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*$"),
        addr,
    ) && !addr.starts_with('.')
        && !addr.contains("..")
}

fn is_hostname(s: &str) -> bool {
    matches(
        rx!(
            r"^([a-zA-Z0-9\p{S}\p{L}]((-?[a-zA-Z0-9\p{S}\p{L}]{0,62})?)|([a-zA-Z0-9\p{S}\p{L}](([a-zA-Z0-9\-\p{S}\p{L}]{0,61}[a-zA-Z0-9\p{S}\p{L}])?)(\.)){1,}([a-zA-Z\p{L}]){2,63})$"
        ),
        s,
    ) && s.len() <= 255
        && s.split('.').all(|p| p.len() <= 63)
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    if bits.to_string().len() != s.len() - ip.len() - 1 {
        return false; // leading zeros or signs, which Go refuses
    }
    if ip.parse::<std::net::Ipv4Addr>().is_ok() {
        bits <= 32
    } else {
        ip.parse::<std::net::Ipv6Addr>().is_ok() && bits <= 128
    }
}

/// net.ParseMAC: EUI-48/EUI-64/20-octet InfiniBand in colon, dash or dot notation.
fn is_mac(s: &str) -> bool {
    let hex = |g: &str, n: usize| g.len() == n && g.bytes().all(|c| c.is_ascii_hexdigit());
    for sep in [':', '-'] {
        let groups: Vec<&str> = s.split(sep).collect();
        if matches!(groups.len(), 6 | 8 | 20) && groups.iter().all(|g| hex(g, 2)) {
            return true;
        }
    }
    let groups: Vec<&str> = s.split('.').collect();
    matches!(groups.len(), 3 | 4 | 10) && groups.iter().all(|g| hex(g, 4))
}

/// time.Parse("2006-01-02"): a real calendar date.
pub(crate) fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| {
        s.get(r)
            .filter(|x| x.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|x| x.parse::<u32>().ok())
    };
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// strfmt.IsDateTime: a date, `t`, then `hh:mm:ss[.frac](z|±hh:mm)`, case-insensitive.
fn is_date_time(s: &str) -> bool {
    if s.len() < 4 {
        return false;
    }
    let lower = s.to_lowercase();
    let parts: Vec<&str> = lower.split('t').collect();
    if parts.len() < 2 || !is_date(parts[0]) {
        return false;
    }
    let Some(r) = rx!(r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$")
    else {
        return false;
    };
    let Some(c) = r.captures(parts[1]) else {
        return false;
    };
    &c[1] <= "23" && &c[2] <= "59" && &c[3] <= "59"
}

/// strfmt.ParseDuration: Go's time.ParseDuration, or `<n> <unit>` pairs with long unit names.
fn is_duration(s: &str) -> bool {
    if go_duration(s) {
        return true;
    }
    let Some(r) = rx!(r"((\d+)\s*([A-Za-zµ]+))") else {
        return false;
    };
    let units: [&[&str]; 8] = [
        &["ns", "nano"],
        &["us", "µs", "micro"],
        &["ms", "milli"],
        &["s", "sec"],
        &["m", "min"],
        &["h", "hr", "hour"],
        &["d", "day"],
        &["w", "wk", "week"],
    ];
    r.captures_iter(s).any(|c| {
        let unit = c[3].trim().to_lowercase();
        units.iter().any(|vs| {
            vs.iter().enumerate().any(|(i, v)| {
                (i == vs.len() - 1 && unit.starts_with(v)) || unit.eq_ignore_ascii_case(v)
            })
        })
    })
}

/// time.ParseDuration's grammar: [-+]? ( number unit )+ or "0".
fn go_duration(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    if s == "0" {
        return true;
    }
    matches(
        rx!(r"^(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$"),
        s,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert!(validates("datetime", "2024-01-02T03:04:05Z"));
        assert!(!validates("datetime", "2024-13-02T03:04:05Z"));
        assert!(validates("date", "2024-02-29"));
        assert!(!validates("date", "2023-02-29"));
        assert!(validates("duration", "1h30m"));
        assert!(validates("duration", "3 days"));
        assert!(!validates("duration", "soon"));
        assert!(validates("cidr", "10.0.0.0/8"));
        assert!(!validates("cidr", "10.0.0.0/33"));
        assert!(validates("mac", "00:1a:2b:3c:4d:5e"));
        assert!(validates("byte", "aGVsbG8="));
        assert!(!validates("byte", "aGVsbG8"));
        assert!(validates("hostname", "example.com"));
        assert!(!validates("hostname", "-bad"));
        assert!(validates("email", "a@example.com"));
        assert!(!validates("email", "nope"));
        assert!(validates("uri", "https://example.com/x"));
        assert!(!validates("uri", "not a uri"));
        assert_eq!(known("date-time").as_deref(), Some("datetime"));
        assert_eq!(known("int32"), None);
    }
}
