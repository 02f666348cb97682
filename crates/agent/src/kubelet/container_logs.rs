//! What `GET /containerLogs/{namespace}/{pod}/{container}` serves, as upstream kubelet does:
//!
//! - the query decoded and validated like a v1 `PodLogOptions` (`follow`, `previous`,
//!   `timestamps`, `tailLines` (or the old `tail`), `limitBytes`, `sinceSeconds`, `sinceTime`);
//! - which run of the container is meant (kubelet's `validateContainerLogStatus`: the running or
//!   last terminated instance, or with `previous` the one before it), with upstream's messages
//!   when there is none;
//! - the CRI log file of that run read like kuberuntime's `ReadLogs`: tail by complete lines,
//!   lines older than `since` skipped, `timestamps` prefixed in fixed-width RFC 3339, output cut
//!   at `limitBytes`, and with `follow` the file followed (across rotation) until that run of the
//!   container ends or the client goes away.
//!
//! The runtime writes one log per run: `<pod dir>/logs/<container>/<restart>.log`, rotated to
//! `<restart>.log.1`, `.2`, ... (newest first); see `rktup_runtime::logs`.

use jiff::Timestamp;
use rktup_runtime::pod::ContainerStatus;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A v1 PodLogOptions as the kubelet takes it from the query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
    pub since_seconds: Option<i64>,
    pub since_time: Option<Timestamp>,
}

/// Why a query was refused, with the status and body upstream kubelet answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// 400 `{"message": "Unable to decode query."}`
    Decode,
    /// 422 `{"message": "Invalid request."}`
    Invalid,
}

/// Query-parameter booleans as apimachinery converts them: absent, `false` or `0` is false,
/// anything else (even an empty value) is true.
fn query_bool(v: Option<&str>) -> bool {
    match v {
        None => false,
        Some(s) => !(s == "0" || s.eq_ignore_ascii_case("false")),
    }
}

fn query_int(v: Option<&str>) -> Result<Option<i64>, QueryError> {
    match v {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| QueryError::Decode),
    }
}

impl LogOptions {
    /// Decode and validate a raw query string (`a=b&c=d`).
    pub fn from_query(query: Option<&str>) -> Result<LogOptions, QueryError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            // The first value of a repeated parameter counts.
            if !pairs.iter().any(|(k2, _)| *k2 == k) {
                pairs.push((k.into_owned(), v.into_owned()));
            }
        }
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(k2, _)| k2 == k)
                .map(|(_, v)| v.as_str())
        };
        // Backwards compatibility: `tail` stands for tailLines, `tail=all` for no limit.
        let tail = match get("tail").filter(|t| !t.is_empty()) {
            Some("all") => None,
            Some(t) => query_int(Some(t))?,
            None => query_int(get("tailLines"))?,
        };
        let since_time = match get("sinceTime") {
            None | Some("") | Some("null") => None,
            Some(s) => Some(s.parse::<Timestamp>().map_err(|_| QueryError::Decode)?),
        };
        let opts = LogOptions {
            follow: query_bool(get("follow")),
            previous: query_bool(get("previous")),
            timestamps: query_bool(get("timestamps")),
            tail_lines: tail,
            limit_bytes: query_int(get("limitBytes"))?,
            since_seconds: query_int(get("sinceSeconds"))?,
            since_time,
        };
        // ValidatePodLogOptions.
        if opts.tail_lines.is_some_and(|t| t < 0)
            || opts.limit_bytes.is_some_and(|b| b < 1)
            || (opts.since_seconds.is_some() && opts.since_time.is_some())
            || opts.since_seconds.is_some_and(|s| s < 1)
        {
            return Err(QueryError::Invalid);
        }
        Ok(opts)
    }

    /// Lines stamped before this are skipped (sinceSeconds counts back from `now`).
    pub fn since(&self, now: Timestamp) -> Option<Timestamp> {
        let from_seconds = self.since_seconds.and_then(|s| {
            now.checked_sub(jiff::SignedDuration::from_secs(s))
                .ok()
                .or(Some(Timestamp::MIN))
        });
        match (from_seconds, self.since_time) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The run (restart index) of a container whose log a request means, or upstream kubelet's
/// message for why there is none (served as a 400). `has_log(k)` tells whether run `k` wrote a
/// log. `pod` is the pod's name, as upstream puts it in its messages.
pub fn select_run(
    c: &ContainerStatus,
    pod: &str,
    previous: bool,
    has_log: impl Fn(u32) -> bool,
) -> Result<u32, String> {
    let name = &c.name;
    let n = c.restart_count;
    let started = c.started_at.is_some();
    // The newest run at or before `k` that left a log.
    let newest_upto = |k: u32| (0..=k).rev().find(|&i| has_log(i));
    // The runtime reports a container waiting out its restart back-off as terminated with
    // reason CrashLoopBackOff; upstream calls that state waiting, with the crashed run as
    // lastState.
    let backing_off = c.state == "terminated" && c.reason.as_deref() == Some("CrashLoopBackOff");
    // The run that upstream's status would call lastState.terminated.
    let last_terminated = || -> Option<u32> {
        if !started {
            return None;
        }
        match c.state.as_str() {
            "running" => n.checked_sub(1).and_then(newest_upto),
            "terminated" if backing_off => newest_upto(n),
            "terminated" => n.checked_sub(1).and_then(newest_upto),
            // Waiting after a failed start: the last run that did write a log.
            _ => newest_upto(n),
        }
    };
    if previous {
        return last_terminated().ok_or_else(|| {
            format!("previous terminated container {name:?} in pod {pod:?} not found")
        });
    }
    match c.state.as_str() {
        "running" if started => Ok(n),
        "terminated" if backing_off => last_terminated()
            .ok_or_else(|| format!("container {name:?} in pod {pod:?} is terminated")),
        "terminated" if started => {
            newest_upto(n).ok_or_else(|| format!("container {name:?} in pod {pod:?} is terminated"))
        }
        "terminated" => Err(format!("container {name:?} in pod {pod:?} is terminated")),
        _ => match last_terminated() {
            Some(k) => Ok(k),
            None => {
                let why = match c.reason.as_deref() {
                    Some("ErrImagePull") => "image can't be pulled".to_string(),
                    Some("ImagePullBackOff") => "trying and failing to pull image".to_string(),
                    Some(r) => r.to_string(),
                    None => "ContainerCreating".to_string(),
                };
                Err(format!(
                    "container {name:?} in pod {pod:?} is waiting to start: {why}"
                ))
            }
        },
    }
}

/// The current log file of run `run` (`<run>.log`).
pub fn run_log(dir: &Path, run: u32) -> PathBuf {
    dir.join(format!("{run}.log"))
}

/// The log files of one run, oldest first: rotated parts (`.N` ... `.1`), then the current file.
pub fn run_files(dir: &Path, run: u32) -> Vec<PathBuf> {
    let base = run_log(dir, run);
    let mut files: Vec<PathBuf> = (1..1000)
        .map(|n| PathBuf::from(format!("{}.{n}", base.display())))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    if base.exists() {
        files.push(base);
    }
    files
}

/// Where reading starts so that `n` complete lines are left: (file index, byte offset). A last
/// line without its newline is not counted (upstream's FindTailLineStartIndex).
fn tail_start(files: &[PathBuf], n: u64) -> std::io::Result<(usize, u64)> {
    let mut need = n;
    for (i, f) in files.iter().enumerate().rev() {
        let data = match std::fs::read(f) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let end = data.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let mut seen = 0u64;
        for pos in (0..end).rev().filter(|&p| data[p] == b'\n') {
            if seen == need {
                return Ok((i, pos as u64 + 1));
            }
            seen += 1;
        }
        if seen == need {
            return Ok((i, 0));
        }
        need -= seen;
    }
    Ok((0, 0))
}

/// What the writer says after a line.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Go,
    /// limitBytes reached, or the client went away.
    Stop,
}

/// kuberuntime's logWriter: since, timestamps and limitBytes applied to parsed CRI lines; output
/// batched and handed to `out`, which returns false once the client is gone.
struct Writer<'a> {
    timestamps: bool,
    since: Option<Timestamp>,
    remain: Option<u64>,
    new_line: bool,
    buf: Vec<u8>,
    out: &'a mut dyn FnMut(&[u8]) -> bool,
}

impl Writer<'_> {
    /// One raw log record, with its newline.
    fn line(&mut self, raw: &[u8]) -> Flow {
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let mut it = raw.splitn(4, |&b| b == b' ');
        let (Some(ts), Some(stream), Some(tag)) = (it.next(), it.next(), it.next()) else {
            return Flow::Go;
        };
        let content = it.next().unwrap_or(b"");
        let Some(ts) = std::str::from_utf8(ts)
            .ok()
            .and_then(|s| s.parse::<Timestamp>().ok())
        else {
            return Flow::Go;
        };
        if stream != b"stdout" && stream != b"stderr" {
            return Flow::Go;
        }
        let partial = tag.split(|&b| b == b':').next() == Some(b"P");
        let add_prefix = self.new_line;
        self.new_line = !partial || content.is_empty();
        if self.since.is_some_and(|s| ts < s) {
            return Flow::Go;
        }
        let start = self.buf.len();
        if self.timestamps && add_prefix {
            self.buf.extend_from_slice(format!("{:.9} ", ts).as_bytes());
        }
        self.buf.extend_from_slice(content);
        if !partial {
            self.buf.push(b'\n');
        }
        if let Some(r) = self.remain.as_mut() {
            let len = (self.buf.len() - start) as u64;
            if len >= *r {
                self.buf.truncate(start + *r as usize);
                *r = 0;
                return Flow::Stop;
            }
            *r -= len;
        }
        if self.buf.len() >= 32 * 1024 && !self.flush() {
            return Flow::Stop;
        }
        Flow::Go
    }

    fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        let ok = (self.out)(&self.buf);
        self.buf.clear();
        ok
    }
}

/// Feed the complete lines of `f` from `*pos` to the writer; `*pos` ends after the last
/// complete line (a line still being written is read again next time).
fn drain(f: &mut File, pos: &mut u64, w: &mut Writer<'_>) -> std::io::Result<Flow> {
    f.seek(SeekFrom::Start(*pos))?;
    let mut r = BufReader::new(f);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(Flow::Go);
        }
        *pos += n as u64;
        if w.line(&line) == Flow::Stop {
            return Ok(Flow::Stop);
        }
    }
}

fn inode_of_path(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.ino())
}

fn inode_of_file(f: &File) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    f.metadata().ok().map(|m| m.ino())
}

/// How often a followed log is polled.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Read the log of one run of a container (`dir`, `run`) with `opts`, handing output to `out`
/// (false: the client is gone). With `follow`, keep reading what the run appends until
/// `running()` says it ended (then read what is left), or `out`/`alive()` says the client left.
pub fn read_logs(
    dir: &Path,
    run: u32,
    opts: &LogOptions,
    now: Timestamp,
    running: &mut dyn FnMut() -> bool,
    alive: &dyn Fn() -> bool,
    out: &mut dyn FnMut(&[u8]) -> bool,
) -> std::io::Result<()> {
    let mut w = Writer {
        timestamps: opts.timestamps,
        since: opts.since(now),
        remain: opts.limit_bytes.map(|b| b.max(0) as u64),
        new_line: true,
        buf: Vec::new(),
        out,
    };
    let files = run_files(dir, run);
    let current = run_log(dir, run);
    let (first, mut offset) = match opts.tail_lines {
        Some(n) => tail_start(&files, n.max(0) as u64)?,
        None => (0, 0),
    };
    // The open current file and how far it was read, for following.
    let mut followed: Option<(File, u64)> = None;
    for f in files.iter().skip(first) {
        let Ok(mut fh) = File::open(f) else {
            offset = 0;
            continue;
        };
        let mut pos = offset;
        offset = 0;
        if drain(&mut fh, &mut pos, &mut w)? == Flow::Stop {
            w.flush();
            return Ok(());
        }
        if *f == current {
            followed = Some((fh, pos));
        }
    }
    if !w.flush() || !opts.follow {
        return Ok(());
    }
    // Follow: the current file grows, may be rotated (renamed to .1, a new one opened), and the
    // run ends when the container exits or restarts.
    let mut ending = false;
    loop {
        if let Some((fh, pos)) = followed.as_mut() {
            if drain(fh, pos, &mut w)? == Flow::Stop {
                w.flush();
                return Ok(());
            }
        }
        if !w.flush() || !alive() {
            return Ok(());
        }
        let open_ino = followed.as_ref().and_then(|(f, _)| inode_of_file(f));
        let path_ino = inode_of_path(&current);
        if path_ino.is_some() && path_ino != open_ino {
            // Rotated (or created): what the old file had is read; go on with the new one.
            if let Ok(fh) = File::open(&current) {
                followed = Some((fh, 0));
                continue;
            }
        }
        if ending {
            return Ok(());
        }
        if !running() {
            // One more pass after the runtime's last writes have landed.
            ending = true;
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(state: &str, reason: Option<&str>, restarts: u32, started: bool) -> ContainerStatus {
        ContainerStatus {
            name: "c".into(),
            state: state.into(),
            reason: reason.map(str::to_string),
            restart_count: restarts,
            started_at: started.then_some(1),
            ..Default::default()
        }
    }

    #[test]
    fn query_like_pod_log_options() {
        let o = LogOptions::from_query(Some(
            "follow=true&previous=&timestamps=0&tailLines=3&limitBytes=10&sinceSeconds=5",
        ))
        .expect("valid");
        assert!(o.follow && o.previous && !o.timestamps);
        assert_eq!(
            (o.tail_lines, o.limit_bytes, o.since_seconds),
            (Some(3), Some(10), Some(5))
        );
        assert_eq!(
            LogOptions::from_query(Some("tail=2")).map(|o| o.tail_lines),
            Ok(Some(2))
        );
        assert_eq!(
            LogOptions::from_query(Some("tail=all&tailLines=4")).map(|o| o.tail_lines),
            Ok(None)
        );
        assert_eq!(
            LogOptions::from_query(Some("tailLines=x")),
            Err(QueryError::Decode)
        );
        assert_eq!(
            LogOptions::from_query(Some("sinceTime=yesterday")),
            Err(QueryError::Decode)
        );
        for bad in [
            "tailLines=-1",
            "limitBytes=0",
            "sinceSeconds=0",
            "sinceSeconds=1&sinceTime=2024-01-01T00:00:00Z",
        ] {
            assert_eq!(
                LogOptions::from_query(Some(bad)),
                Err(QueryError::Invalid),
                "{bad}"
            );
        }
        let o = LogOptions::from_query(Some("sinceTime=2024-01-01T00:00:00Z")).expect("valid");
        let now: Timestamp = "2024-06-01T00:00:00Z".parse().expect("ts");
        assert_eq!(
            o.since(now),
            Some("2024-01-01T00:00:00Z".parse().expect("ts"))
        );
        let o = LogOptions::from_query(Some("sinceSeconds=60")).expect("valid");
        assert_eq!(
            o.since(now),
            Some("2024-05-31T23:59:00Z".parse().expect("ts"))
        );
        assert_eq!(LogOptions::from_query(None), Ok(LogOptions::default()));
    }

    #[test]
    fn runs_chosen_like_validate_container_log_status() {
        let all = |_| true;
        // Running first run: its log; no previous.
        let c = cs("running", None, 0, true);
        assert_eq!(select_run(&c, "p", false, all), Ok(0));
        assert_eq!(
            select_run(&c, "p", true, all),
            Err(r#"previous terminated container "c" in pod "p" not found"#.into())
        );
        // Restarted: current run 2, previous 1.
        let c = cs("running", None, 2, true);
        assert_eq!(select_run(&c, "p", false, all), Ok(2));
        assert_eq!(select_run(&c, "p", true, all), Ok(1));
        // Backing off after the crash of run 2: both mean run 2 (upstream: waiting, lastState).
        let c = cs("terminated", Some("CrashLoopBackOff"), 2, true);
        assert_eq!(select_run(&c, "p", false, all), Ok(2));
        assert_eq!(select_run(&c, "p", true, all), Ok(2));
        // Done for good after 2 runs.
        let c = cs("terminated", Some("Completed"), 1, true);
        assert_eq!(select_run(&c, "p", false, all), Ok(1));
        assert_eq!(select_run(&c, "p", true, all), Ok(0));
        // Never started.
        let c = cs("waiting", Some("ErrImagePull"), 0, false);
        assert_eq!(
            select_run(&c, "p", false, all),
            Err(r#"container "c" in pod "p" is waiting to start: image can't be pulled"#.into())
        );
        let c = cs("waiting", None, 0, false);
        assert_eq!(
            select_run(&c, "p", false, all),
            Err(r#"container "c" in pod "p" is waiting to start: ContainerCreating"#.into())
        );
        // A run that left no log is skipped for the previous one.
        let c = cs("running", None, 2, true);
        assert_eq!(select_run(&c, "p", true, |k| k != 1), Ok(0));
    }

    fn write_log(dir: &Path, name: &str, lines: &[(&str, &str, &str)]) {
        let mut s = String::new();
        for (ts, tag, content) in lines {
            s.push_str(&format!("{ts} stdout {tag} {content}\n"));
        }
        std::fs::write(dir.join(name), s).expect("write log");
    }

    fn read(dir: &Path, run: u32, q: &str) -> String {
        let opts = LogOptions::from_query(Some(q)).expect("query");
        let mut got = Vec::new();
        let now: Timestamp = "2024-01-01T00:01:00Z".parse().expect("ts");
        read_logs(dir, run, &opts, now, &mut || false, &|| true, &mut |b| {
            got.extend_from_slice(b);
            true
        })
        .expect("read");
        String::from_utf8(got).expect("utf8")
    }

    #[test]
    fn tail_since_timestamps_limit_and_partial_lines() {
        let d = tempfile::tempdir().expect("tempdir");
        let t = |s: u32| format!("2024-01-01T00:00:{s:02}.000000000Z");
        let (t1, t2, t3, t4, t5) = (t(1), t(2), t(3), t(4), t(50));
        // Rotated part first (0.log.1), then the current file with a partial record and a
        // trailing line still being written.
        write_log(d.path(), "0.log.1", &[(&t1, "F", "one"), (&t2, "F", "two")]);
        write_log(
            d.path(),
            "0.log",
            &[(&t3, "P", "thr"), (&t4, "F", "ee"), (&t5, "F", "five")],
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(d.path().join("0.log"))
            .expect("open");
        std::io::Write::write_all(&mut f, b"2024-01-01T00:00:59.000000000Z stdout F unfinis")
            .expect("append");
        write_log(d.path(), "1.log", &[(&t5, "F", "other run")]);
        assert_eq!(read(d.path(), 0, ""), "one\ntwo\nthree\nfive\n");
        assert_eq!(read(d.path(), 0, "tailLines=1"), "five\n");
        // Records are lines in the file: a partial record counts.
        assert_eq!(read(d.path(), 0, "tailLines=2"), "ee\nfive\n");
        assert_eq!(read(d.path(), 0, "tailLines=4"), "two\nthree\nfive\n");
        assert_eq!(read(d.path(), 0, "tailLines=0"), "");
        assert_eq!(
            read(d.path(), 0, "tailLines=100"),
            "one\ntwo\nthree\nfive\n"
        );
        assert_eq!(read(d.path(), 0, "limitBytes=6"), "one\ntw");
        assert_eq!(read(d.path(), 0, "sinceSeconds=30"), "five\n");
        assert_eq!(
            read(d.path(), 0, "sinceTime=2024-01-01T00:00:03Z"),
            "three\nfive\n"
        );
        // One timestamp per line, also for a line split into partial records.
        assert_eq!(
            read(d.path(), 0, "timestamps=true&tailLines=3"),
            format!("{t3} three\n{t5} five\n")
        );
        assert_eq!(read(d.path(), 1, ""), "other run\n");
        assert_eq!(read(d.path(), 7, ""), "");
    }

    #[test]
    fn follow_reads_appended_and_rotated_lines_until_the_run_ends() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().to_path_buf();
        let line = |s: &str| format!("2024-01-01T00:00:01.000000000Z stdout F {s}\n");
        std::fs::write(dir.join("0.log"), line("a")).expect("write");
        let writer = {
            let dir = dir.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(dir.join("0.log"))
                    .expect("open");
                std::io::Write::write_all(&mut f, line("b").as_bytes()).expect("append");
                std::thread::sleep(Duration::from_millis(300));
                // Rotation: the file is renamed and a new one started.
                std::fs::rename(dir.join("0.log"), dir.join("0.log.1")).expect("rotate");
                std::fs::write(dir.join("0.log"), line("c")).expect("write");
                std::thread::sleep(Duration::from_millis(300));
            })
        };
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let mut got = Vec::new();
        let start = std::time::Instant::now();
        read_logs(
            &dir,
            0,
            &opts,
            Timestamp::now(),
            &mut || start.elapsed() < Duration::from_millis(900),
            &|| true,
            &mut |b| {
                got.extend_from_slice(b);
                true
            },
        )
        .expect("follow");
        writer.join().expect("writer");
        assert_eq!(String::from_utf8(got).expect("utf8"), "a\nb\nc\n");
        // A client that goes away ends following at once.
        let start = std::time::Instant::now();
        read_logs(
            &dir,
            0,
            &opts,
            Timestamp::now(),
            &mut || true,
            &|| false,
            &mut |_| true,
        )
        .expect("follow");
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
