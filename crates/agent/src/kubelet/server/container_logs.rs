//! What `GET /containerLogs/{namespace}/{pod}/{container}` serves, as upstream kubelet does:
//!
//! - the query decoded and validated like a v1 `PodLogOptions` (`follow`, `previous`,
//!   `timestamps`, `tailLines` (or the old `tail`), `limitBytes`, `sinceSeconds`, `sinceTime`);
//! - which run of the container is meant (kubelet's `validateContainerLogStatus`: the running or
//!   last terminated instance, or with `previous` the one before it), with upstream's messages
//!   when there is none;
//! - the log of that run read like kuberuntime's `ReadLogs`: the runtime (`Runtime::read_log`)
//!   hands out its records (the last `tailLines` of them, and with `follow` what the run
//!   appends until it ends); here lines older than `since` are skipped, `timestamps` prefixed
//!   in fixed-width RFC 3339, output cut at `limitBytes` and batched to the client, and
//!   following stops when the client goes away.
//!
//! Where and how the runtime stores logs is the runtime's business: nothing here knows it.

use jiff::Timestamp;
use rktup_runtime::pod::ContainerStatus;
use rktup_runtime::runtime::{PodEntry, Runtime};
use rktup_runtime::{LogRead, LogRecord, LogSink};
use std::ops::ControlFlow;

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

/// kuberuntime's logWriter: since, timestamps and limitBytes applied to the runtime's log
/// records; output batched and handed to `out`, which returns false once the client is gone.
struct Writer<'a> {
    timestamps: bool,
    since: Option<Timestamp>,
    remain: Option<u64>,
    new_line: bool,
    buf: Vec<u8>,
    out: &'a mut dyn FnMut(&[u8]) -> bool,
    alive: &'a dyn Fn() -> bool,
}

impl Writer<'_> {
    fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        let ok = (self.out)(&self.buf);
        self.buf.clear();
        ok
    }
}

impl LogSink for Writer<'_> {
    fn record(&mut self, r: &LogRecord<'_>) -> ControlFlow<()> {
        let Ok(ts) = r.time.parse::<Timestamp>() else {
            return ControlFlow::Continue(());
        };
        let add_prefix = self.new_line;
        self.new_line = !r.partial || r.content.is_empty();
        if self.since.is_some_and(|s| ts < s) {
            return ControlFlow::Continue(());
        }
        let start = self.buf.len();
        if self.timestamps && add_prefix {
            self.buf.extend_from_slice(format!("{:.9} ", ts).as_bytes());
        }
        self.buf.extend_from_slice(r.content);
        if !r.partial {
            self.buf.push(b'\n');
        }
        if let Some(rem) = self.remain.as_mut() {
            let len = (self.buf.len() - start) as u64;
            if len >= *rem {
                self.buf.truncate(start + *rem as usize);
                *rem = 0;
                return ControlFlow::Break(());
            }
            *rem -= len;
        }
        if self.buf.len() >= 32 * 1024 && !self.flush() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn caught_up(&mut self) -> ControlFlow<()> {
        if self.flush() && (self.alive)() {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    }
}

/// Read the log of run `run` (restart number) of `container` in `entry` with `opts`, handing
/// output to `out` (false: the client is gone). With `follow`, keep reading what the run appends
/// until it ends (then what is left is read), or `out`/`alive()` says the client left.
#[allow(clippy::too_many_arguments)]
pub fn read_logs(
    rt: &Runtime,
    entry: &PodEntry,
    container: &str,
    run: u32,
    opts: &LogOptions,
    now: Timestamp,
    alive: &dyn Fn() -> bool,
    out: &mut dyn FnMut(&[u8]) -> bool,
) -> std::io::Result<()> {
    let mut w = writer(opts, now, alive, out);
    let res = rt.read_log(entry, container, run, &log_read(opts), &mut w);
    w.flush();
    res
}

/// What the runtime is asked for: `tailLines` and `follow` (the rest is applied here).
fn log_read(opts: &LogOptions) -> LogRead {
    LogRead {
        tail_lines: opts.tail_lines.map(|n| n.max(0) as u64),
        follow: opts.follow,
    }
}

fn writer<'a>(
    opts: &LogOptions,
    now: Timestamp,
    alive: &'a dyn Fn() -> bool,
    out: &'a mut dyn FnMut(&[u8]) -> bool,
) -> Writer<'a> {
    Writer {
        timestamps: opts.timestamps,
        since: opts.since(now),
        remain: opts.limit_bytes.map(|b| b.max(0) as u64),
        new_line: true,
        buf: Vec::new(),
        out,
        alive,
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

    fn rec<'a>(time: &'a str, partial: bool, content: &'a str) -> LogRecord<'a> {
        LogRecord {
            time,
            stream: rktup_runtime::Stream::Stdout,
            partial,
            content: content.as_bytes(),
        }
    }

    /// What the kubelet port sends for `records` (as the runtime hands them out) and query `q`.
    fn write(records: &[LogRecord<'_>], q: &str, alive: bool) -> (String, bool) {
        let opts = LogOptions::from_query(Some(q)).expect("query");
        let now: Timestamp = "2024-01-01T00:01:00Z".parse().expect("ts");
        let mut got = Vec::new();
        let mut out = |b: &[u8]| {
            got.extend_from_slice(b);
            true
        };
        let alive = move || alive;
        let mut w = writer(&opts, now, &alive, &mut out);
        for r in records {
            if w.record(r).is_break() {
                break;
            }
        }
        let go_on = w.caught_up().is_continue();
        w.flush();
        (String::from_utf8(got).expect("utf8"), go_on)
    }

    #[test]
    fn since_timestamps_limit_and_partial_lines() {
        let t = |s: u32| format!("2024-01-01T00:00:{s:02}.000000000Z");
        let (t1, t2, t3, t4, t5) = (t(1), t(2), t(3), t(4), t(50));
        // A run's records: "three" came as a partial record and its rest; a record whose time
        // is no timestamp is no log line.
        let records = [
            rec(&t1, false, "one"),
            rec(&t2, false, "two"),
            rec("yesterday", false, "junk"),
            rec(&t3, true, "thr"),
            rec(&t4, false, "ee"),
            rec(&t5, false, "five"),
        ];
        let w = |q: &str| write(&records, q, true).0;
        assert_eq!(w(""), "one\ntwo\nthree\nfive\n");
        // tailLines is the runtime's: it hands out only the last records.
        assert_eq!(write(&records[4..], "", true).0, "ee\nfive\n");
        assert_eq!(w("limitBytes=6"), "one\ntw");
        assert_eq!(w("sinceSeconds=30"), "five\n");
        assert_eq!(w("sinceTime=2024-01-01T00:00:03Z"), "three\nfive\n");
        // One timestamp per line, also for a line split into partial records.
        assert_eq!(
            write(&records[3..], "timestamps=true&tailLines=3", true).0,
            format!("{t3} three\n{t5} five\n")
        );
        // What the runtime is asked for.
        let o = LogOptions::from_query(Some("tailLines=3&follow=1&limitBytes=4")).expect("q");
        assert_eq!(
            log_read(&o),
            LogRead {
                tail_lines: Some(3),
                follow: true
            }
        );
        assert_eq!(log_read(&LogOptions::default()), LogRead::default());
    }

    #[test]
    fn a_client_that_went_away_stops_following() {
        let t = "2024-01-01T00:00:01.000000000Z";
        // Output so far is still handed out, then reading stops.
        let (got, go_on) = write(&[rec(t, false, "a")], "follow=true", false);
        assert_eq!((got.as_str(), go_on), ("a\n", false));
        let (got, go_on) = write(&[rec(t, false, "a")], "follow=true", true);
        assert_eq!((got.as_str(), go_on), ("a\n", true));
    }
}
