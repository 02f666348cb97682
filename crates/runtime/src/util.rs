//! Small helpers shared by the runtime modules: digests, atomic writes, time, UUIDs. Only the
//! clock (`now_secs`, the unit of every timestamp in `pod::PodStatus`) is exported.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Lower-case hex of a byte slice.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xf) as usize] as char);
    }
    s
}

/// `sha256:<hex>` of a byte slice.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// Write a file atomically (temp file in the same directory, rename), so readers never see a
/// half-written state file even if the writer dies mid-way. No fsync: state files are rewritten
/// on every change and only need to survive process crashes (agent or supervisor killed), not
/// power loss; fsync per status update was the largest cost of starting 100 pods at once.
/// Image blobs, which must not be lost once recorded, are synced by the store.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
    }
    std::fs::rename(&tmp, path)
}

/// A random (version 4) UUID from the kernel's generator.
pub(crate) fn new_uuid() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/random/uuid") {
        Ok(s) => s.trim().to_string(),
        Err(_) => {
            // Fall back to time + pid; only reached without /proc.
            let n = now_nanos();
            let h = hex(&Sha256::digest(format!("{n}-{}", std::process::id())));
            format!(
                "{}-{}-4{}-a{}-{}",
                &h[0..8],
                &h[8..12],
                &h[13..16],
                &h[17..20],
                &h[20..32]
            )
        }
    }
}

pub(crate) fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// RFC 3339 with nanoseconds in UTC, as the kubelet's CRI log lines use.
pub(crate) fn rfc3339_nanos(nanos: u128) -> String {
    let secs = (nanos / 1_000_000_000) as i64;
    let frac = (nanos % 1_000_000_000) as u32;
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:09}Z")
}

/// RFC 3339 to the second, for state files and status output.
pub(crate) fn rfc3339(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

pub fn now_secs() -> i64 {
    (now_nanos() / 1_000_000_000) as i64
}

/// A whole number of milliseconds as Go's `time.Duration.String()` (`10s`, `2m40s`, `5m0s`,
/// `1.5s`, `500ms`), as kubelet's back-off messages print it.
pub(crate) fn go_duration_ms(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        format!("{s}.{}s", format!("{frac:03}").trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// Days-from-civil inverse (Howard Hinnant's algorithm), UTC.
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
    )
}

/// "2 minutes ago" style ages, as rkt list prints them.
pub(crate) fn human_age(secs: i64) -> String {
    let d = (now_secs() - secs).max(0);
    match d {
        0..=1 => "1 second ago".to_string(),
        2..=59 => format!("{d} seconds ago"),
        60..=119 => "1 minute ago".to_string(),
        120..=3599 => format!("{} minutes ago", d / 60),
        3600..=7199 => "1 hour ago".to_string(),
        7200..=86_399 => format!("{} hours ago", d / 3600),
        _ => format!("{} days ago", d / 86_400),
    }
}

/// Human sizes with binary units, as rkt image list prints them.
pub(crate) fn human_size(bytes: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.0}{}", U[i])
    }
}

/// Process start time (field 22 of /proc/PID/stat), used to tell a live supervisor from a
/// recycled PID.
pub(crate) fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Everything is alive and is the same process as recorded.
pub(crate) fn process_alive(pid: i32, start_time: u64) -> bool {
    pid > 0 && process_start_time(pid) == Some(start_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_does() {
        for (ms, want) in [
            (500, "500ms"),
            (1500, "1.5s"),
            (10_000, "10s"),
            (160_000, "2m40s"),
            (300_000, "5m0s"),
            (3_600_000, "1h0m0s"),
            (3_725_250, "1h2m5.25s"),
        ] {
            assert_eq!(go_duration_ms(ms), want);
        }
    }

    #[test]
    fn civil_time_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(
            rfc3339_nanos(951_782_400_000_000_123),
            "2000-02-29T00:00:00.000000123Z"
        );
    }

    #[test]
    fn sizes_and_hex() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(3 * 1024 * 1024), "3MiB");
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn own_process_is_alive() {
        let pid = std::process::id() as i32;
        let st = process_start_time(pid).expect("own stat");
        assert!(process_alive(pid, st));
        assert!(!process_alive(pid, st + 1));
    }
}
