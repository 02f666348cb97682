//! CronJob controller (upstream pkg/controller/cronjob, the v2 controller):
//! at each time of `spec.schedule` (standard 5-field cron or a macro, in
//! `spec.timeZone` or UTC) it creates a Job `<cronjob>-<scheduled minutes
//! since the epoch>` from `jobTemplate`, owned by the CronJob and annotated
//! `batch.kubernetes.io/cronjob-scheduled-timestamp`. Only the most recent
//! missed time is run, and not when it is older than
//! `startingDeadlineSeconds`. `concurrencyPolicy` Forbid skips a time while a
//! Job is active, Replace deletes the active ones first; `suspend` stops new
//! Jobs; finished Jobs beyond `successfulJobsHistoryLimit` /
//! `failedJobsHistoryLimit` are deleted, oldest first. Status: `active`,
//! `lastScheduleTime`, `lastSuccessfulTime`.
//!
//! Time comes from a [`Clock`] that tests may move forward, so a schedule
//! can be driven without waiting for it.

use super::Settings;
use super::{controller_uid, deleting, list, owner_ref, rd, record_event, set_status, uid};
use crate::api::objects::{meta_str, Core, DeleteOptions, WriteCtx};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

const MANAGER: &str = "cronjob-controller";
const KIND: &str = "CronJob";
/// The Job annotation with the scheduled time (RFC 3339, in the CronJob's time zone).
pub(crate) const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// The controller's clock: the system time plus an offset tests can move
/// forward (`ControlPlane::builder().clock(..)`); clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct Clock(Arc<AtomicI64>);

impl Clock {
    pub fn new() -> Clock {
        Clock::default()
    }

    /// Moves the clock forward by `secs` seconds (negative: back).
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }

    /// The current offset from the system time, in seconds.
    pub fn offset(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    pub fn now(&self) -> Timestamp {
        let now = Timestamp::now();
        now.checked_add(jiff::SignedDuration::from_secs(self.offset()))
            .unwrap_or(now)
    }
}

/// One cron field: the allowed values as bits, and whether it was `*`/`?`
/// (robfig/cron's star bit, which decides how day-of-month and day-of-week combine).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Field {
    bits: u64,
    star: bool,
}

impl Field {
    fn has(&self, v: i64) -> bool {
        (0..64).contains(&v) && self.bits & (1 << v) != 0
    }
}

/// A parsed schedule, as robfig/cron v3's `ParseStandard` reads it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Schedule {
    Cron {
        minute: Field,
        hour: Field,
        dom: Field,
        month: Field,
        dow: Field,
    },
    /// `@every <duration>`: a fixed interval, in seconds.
    Every(i64),
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Parses `spec` with robfig/cron's standard parser; errors have its texts (what
/// kube-apiserver's validation reports after `Invalid value: "<schedule>": `).
pub(crate) fn parse_schedule(spec: &str) -> Result<Schedule, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("empty spec string".into());
    }
    if let Some(d) = spec.strip_prefix('@') {
        let expanded = match d {
            "yearly" | "annually" => "0 0 1 1 *",
            "monthly" => "0 0 1 * *",
            "weekly" => "0 0 * * 0",
            "daily" | "midnight" => "0 0 * * *",
            "hourly" => "0 * * * *",
            _ => {
                if let Some(dur) = d.strip_prefix("every ") {
                    return parse_go_duration(dur)
                        .map(|secs| Schedule::Every(secs.max(1)))
                        .ok_or_else(|| {
                            format!(
                                "failed to parse duration {spec}: time: invalid duration \"{}\"",
                                dur.trim()
                            )
                        });
                }
                return Err(format!("unrecognized descriptor: {spec}"));
            }
        };
        return parse_schedule(expanded);
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    Ok(Schedule::Cron {
        minute: parse_field(fields[0], 0, 59, &[])?,
        hour: parse_field(fields[1], 0, 23, &[])?,
        dom: parse_field(fields[2], 1, 31, &[])?,
        month: parse_field(fields[3], 1, 12, MONTHS)?,
        dow: parse_field(fields[4], 0, 6, DAYS)?,
    })
}

/// Go's `time.ParseDuration` for the units cron intervals use (h, m, s, ms), whole seconds.
fn parse_go_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total_ms: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .filter(|&i| i > 0)?;
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (mul, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('s') {
            (1000, 1)
        } else {
            return None;
        };
        total_ms = total_ms.checked_add(n.checked_mul(mul)?)?;
        rest = &rest[len..];
    }
    Some(total_ms / 1000)
}

fn parse_field(field: &str, min: i64, max: i64, names: &[&str]) -> Result<Field, String> {
    let mut out = Field {
        bits: 0,
        star: false,
    };
    for expr in field.split(',') {
        let (bits, star) = parse_range(expr, min, max, names)?;
        out.bits |= bits;
        out.star |= star;
    }
    Ok(out)
}

fn parse_int(expr: &str) -> Result<i64, String> {
    let n: i64 = expr.parse().map_err(|_| {
        format!("failed to parse int from {expr}: strconv.Atoi: parsing \"{expr}\": invalid syntax")
    })?;
    if n < 0 {
        return Err(format!("negative number ({n}) not allowed: {expr}"));
    }
    Ok(n)
}

fn parse_int_or_name(expr: &str, names: &[&str]) -> Result<i64, String> {
    let lower = expr.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        // Months count from 1, days of the week from 0.
        return Ok(if names.len() == 12 {
            i as i64 + 1
        } else {
            i as i64
        });
    }
    parse_int(expr)
}

/// robfig/cron's `getRange`: `*`, `?`, `a`, `a-b`, each with an optional `/step`.
fn parse_range(expr: &str, min: i64, max: i64, names: &[&str]) -> Result<(u64, bool), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_high.len() == 1;
    let mut star = false;
    let (start, mut end) = if low_high[0] == "*" || low_high[0] == "?" {
        star = true;
        (min, max)
    } else {
        let start = parse_int_or_name(low_high[0], names)?;
        match low_high.len() {
            1 => (start, start),
            2 => (start, parse_int_or_name(low_high[1], names)?),
            _ => return Err(format!("too many hyphens: {expr}")),
        }
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = parse_int(range_and_step[1])?;
            // "N/step" means "N-max/step".
            if single {
                end = max;
            }
            if step > 1 {
                star = false;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({min}): {expr}"
        ));
    }
    if end > max {
        return Err(format!(
            "end of range ({end}) above maximum ({max}): {expr}"
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    let mut bits = 0u64;
    let mut v = start;
    while v <= end {
        bits |= 1 << v;
        v += step;
    }
    Ok((bits, star))
}

impl Schedule {
    /// The first time of the schedule strictly after `t`, in `tz` (robfig/cron's `Next`).
    pub(crate) fn next(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let (minute, hour, dom, month, dow) = match self {
            Schedule::Every(secs) => {
                // Next rounds to the second after adding the interval.
                return Timestamp::from_second(t.as_second() + secs).ok();
            }
            Schedule::Cron {
                minute,
                hour,
                dom,
                month,
                dow,
            } => (minute, hour, dom, month, dow),
        };
        let local = tz.to_datetime(t);
        let mut dt = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(jiff::Span::new().minutes(1))
            .ok()?;
        let day_matches = |dt: &DateTime| {
            let d = dom.has(dt.day() as i64);
            let w = dow.has(dt.weekday().to_sunday_zero_offset() as i64);
            if dom.star || dow.star {
                d && w
            } else {
                d || w
            }
        };
        let midnight = |d: jiff::civil::Date| d.to_datetime(jiff::civil::Time::midnight());
        // Five years of search, as robfig/cron gives up after.
        let limit_year = dt.year() + 5;
        while dt.year() <= limit_year {
            if !month.has(dt.month() as i64) {
                dt = midnight(dt.date().first_of_month())
                    .checked_add(jiff::Span::new().months(1))
                    .ok()?;
                continue;
            }
            if !day_matches(&dt) {
                dt = midnight(dt.date().tomorrow().ok()?);
                continue;
            }
            if !hour.has(dt.hour() as i64) {
                dt = dt
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(jiff::Span::new().hours(1))
                    .ok()?;
                continue;
            }
            if !minute.has(dt.minute() as i64) {
                dt = dt.checked_add(jiff::Span::new().minutes(1)).ok()?;
                continue;
            }
            let ts = tz.to_ambiguous_timestamp(dt).compatible().ok()?;
            if ts > t {
                return Some(ts);
            }
            // A wall time repeated by a DST change: look further.
            dt = dt.checked_add(jiff::Span::new().minutes(1)).ok()?;
        }
        None
    }
}

/// Upstream's `mostRecentScheduleTime`: the latest time of the schedule in (earliest, now].
fn most_recent(
    sched: &Schedule,
    tz: &TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> Option<Timestamp> {
    let t1 = sched.next(earliest, tz)?;
    if now < t1 {
        return None;
    }
    let t2 = sched.next(t1, tz)?;
    if now < t2 {
        return Some(t1);
    }
    // Many missed: jump near `now` by the interval between the first two, then walk (upstream
    // does the same rough approximation, so long gaps cost a few steps, not one per minute).
    // Where the schedule is irregular (`30 6-16/4 * * 1-5`) the jump can overshoot the last
    // time; upstream then runs nothing, here the jump is halved until it does not.
    let between = (t2.as_second() - t1.as_second()).max(1);
    let mut jump = ((now.as_second() - t1.as_second()) / between - 1).max(0);
    loop {
        let from = Timestamp::from_second(t1.as_second() + jump * between).ok()?;
        let mut t = sched.next(from, tz)?;
        let mut recent = None;
        while t <= now {
            recent = Some(t);
            t = sched.next(t, tz)?;
        }
        match recent {
            Some(r) => return Some(r),
            None if jump == 0 => return Some(t1),
            None => jump /= 2,
        }
    }
}

fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

/// Go's `time.RFC3339` of `t` in `tz` (`Z` for UTC, else the offset).
fn scheduled_text(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    let s = z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string();
    match s.strip_suffix("+00:00") {
        Some(base) => format!("{base}Z"),
        None => s,
    }
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Whether the Job finished, and how: Some(true) Complete, Some(false) Failed.
fn job_finished(job: &Value) -> Option<bool> {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .filter(|c| c["status"] == "True")
        .find_map(|c| match c["type"].as_str() {
            Some("Complete") => Some(true),
            Some("Failed") => Some(false),
            _ => None,
        })
}

fn job_ref(job: &Value) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": meta_str(job, "name"),
        "namespace": meta_str(job, "namespace"),
        "uid": uid(job),
        "resourceVersion": meta_str(job, "resourceVersion"),
    })
}

/// Per CronJob uid and event reason: the occasion last reported.
static REPORTED: Mutex<Option<HashMap<(String, &'static str), String>>> = Mutex::new(None);

/// Records an event unless the same `occasion` was already reported for this CronJob and
/// reason (passes run every second; upstream's recorder aggregates repeats instead).
fn report_once(core: &Core, cj: &Value, ty: &str, reason: &'static str, msg: &str, occasion: &str) {
    let fresh = REPORTED
        .lock()
        .map(|mut r| {
            let m = r.get_or_insert_with(HashMap::new);
            let key = (uid(cj).to_string(), reason);
            if m.get(&key).map(String::as_str) == Some(occasion) {
                false
            } else {
                m.insert(key, occasion.to_string());
                true
            }
        })
        .unwrap_or(true);
    if fresh {
        record_event(core, cj, KIND, ty, reason, msg, MANAGER);
    }
}

pub fn pass(core: &Core, s: &Settings) {
    let now = s.clock.now();
    let cjs = list(core, "batch", "cronjobs", None);
    if cjs.is_empty() {
        return;
    }
    // Every Job once per pass, by owner (the pass runs every second).
    let mut by_owner: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
    for j in list(core, "batch", "jobs", None) {
        if let Some(u) = controller_uid(&j) {
            by_owner.entry(u.to_string()).or_default().push(j.clone());
        }
    }
    for cj in &cjs {
        let jobs = by_owner.get(uid(cj)).map(Vec::as_slice).unwrap_or(&[]);
        sync(core, cj, jobs, now);
    }
    if let Ok(mut r) = REPORTED.lock() {
        if let Some(m) = r.as_mut() {
            m.retain(|(u, _), _| cjs.iter().any(|cj| uid(cj) == u));
        }
    }
}

fn sync(core: &Core, cj: &Value, jobs: &[Arc<Value>], now: Timestamp) {
    let mut status = cj.get("status").cloned().unwrap_or(json!({}));
    if !status.is_object() {
        status = json!({});
    }
    // Active: our unfinished Jobs. Finished ones leave it; a successful one sets
    // lastSuccessfulTime.
    let mut active: Vec<Value> = Vec::new();
    let was_active_uids: Vec<String> = status
        .get("active")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str().map(String::from))
        .collect();
    let was_active = |j: &Value| was_active_uids.iter().any(|u| u == uid(j));
    for j in jobs {
        let finished = job_finished(j);
        if let Some(ok) = finished.filter(|_| was_active(j)) {
            let cond = if ok { "Complete" } else { "Failed" };
            record_event(
                core,
                cj,
                KIND,
                "Normal",
                "SawCompletedJob",
                &format!(
                    "Saw completed job: {}, condition: {cond}",
                    meta_str(j, "name")
                ),
                MANAGER,
            );
        }
        match finished {
            None if !deleting(j) => active.push(job_ref(j)),
            Some(true) => {
                let done = j
                    .pointer("/status/completionTime")
                    .and_then(Value::as_str)
                    .and_then(parse_time);
                let last = status
                    .get("lastSuccessfulTime")
                    .and_then(Value::as_str)
                    .and_then(parse_time);
                if let Some(done) = done {
                    if last.is_none_or(|l| done > l) {
                        status["lastSuccessfulTime"] = json!(rfc3339(done));
                    }
                }
            }
            _ => {}
        }
    }
    let write = |core: &Core, status: &mut Value, active: &[Value]| {
        if active.is_empty() {
            if let Some(m) = status.as_object_mut() {
                m.remove("active");
            }
        } else {
            // The refs' resourceVersions change with every Job status write; keep what was
            // written while the same Jobs are active, so status is not rewritten each time.
            let same = status
                .get("active")
                .and_then(Value::as_array)
                .is_some_and(|old| {
                    old.len() == active.len()
                        && old.iter().zip(active).all(|(a, b)| a["uid"] == b["uid"])
                });
            if !same {
                status["active"] = json!(active);
            }
        }
        set_status(core, rd("batch", "cronjobs"), cj, status.clone(), MANAGER);
    };
    if deleting(cj) {
        return;
    }
    let tz = match cj.pointer("/spec/timeZone").and_then(Value::as_str) {
        Some(name) => match TimeZone::get(name) {
            Ok(tz) => tz,
            Err(_) => {
                let msg = format!("invalid timeZone: {name:?}: unknown time zone {name}");
                report_once(core, cj, "Warning", "UnknownTimeZone", &msg, &msg);
                return write(core, &mut status, &active);
            }
        },
        None => TimeZone::UTC,
    };
    let schedule = cj
        .pointer("/spec/schedule")
        .and_then(Value::as_str)
        .unwrap_or("");
    let sched = match parse_schedule(schedule) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("unparseable schedule: {schedule:?} : {e}");
            report_once(core, cj, "Warning", "UnparseableSchedule", &msg, &msg);
            return write(core, &mut status, &active);
        }
    };
    if cj.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
        cleanup_finished(core, cj, jobs);
        return write(core, &mut status, &active);
    }
    let created = cj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_time)
        .unwrap_or(now);
    let mut earliest = status
        .get("lastScheduleTime")
        .and_then(Value::as_str)
        .and_then(parse_time)
        .unwrap_or(created);
    let deadline = cj
        .pointer("/spec/startingDeadlineSeconds")
        .and_then(Value::as_i64);
    if let Some(d) = deadline {
        if let Ok(limit) = Timestamp::from_second(now.as_second() - d) {
            if limit > earliest {
                earliest = limit;
            }
        }
    }
    if let Some(scheduled) = most_recent(&sched, &tz, earliest, now) {
        run_at(
            core,
            cj,
            &tz,
            scheduled,
            now,
            deadline,
            &mut status,
            &mut active,
        );
    }
    cleanup_finished(core, cj, jobs);
    write(core, &mut status, &active);
}

/// Upstream's body of `syncCronJob` once a scheduled time is due.
#[allow(clippy::too_many_arguments)]
fn run_at(
    core: &Core,
    cj: &Value,
    tz: &TimeZone,
    scheduled: Timestamp,
    now: Timestamp,
    deadline: Option<i64>,
    status: &mut Value,
    active: &mut Vec<Value>,
) {
    let ns = meta_str(cj, "namespace");
    let jobs_rd = rd("batch", "jobs");
    if deadline.is_some_and(|d| scheduled.as_second() + d < now.as_second()) {
        record_event(
            core,
            cj,
            KIND,
            "Warning",
            "MissSchedule",
            &format!(
                "Missed scheduled time to start a job: {}",
                scheduled_text(scheduled, tz)
            ),
            MANAGER,
        );
        return;
    }
    let name = format!("{}-{}", meta_str(cj, "name"), scheduled.as_second() / 60);
    if active.iter().any(|r| r["name"] == name.as_str()) {
        return;
    }
    let policy = cj
        .pointer("/spec/concurrencyPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Allow");
    if policy == "Forbid" && !active.is_empty() {
        // Once per scheduled time: the controller looks again every second until the active
        // Job finishes (then the time is run, if still within the deadline, as upstream).
        report_once(
            core,
            cj,
            "Normal",
            "JobAlreadyActive",
            "Not starting job because prior execution is running and concurrency policy is Forbid",
            &name,
        );
        return;
    }
    if policy == "Replace" {
        for r in active.drain(..) {
            delete_job(core, cj, r["name"].as_str().unwrap_or(""));
        }
    }
    let template = cj
        .pointer("/spec/jobTemplate")
        .cloned()
        .unwrap_or(json!({}));
    let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
    if !meta.is_object() {
        meta = json!({});
    }
    if !meta.get("annotations").is_some_and(Value::is_object) {
        meta["annotations"] = json!({});
    }
    meta["annotations"][SCHEDULED_ANNOTATION] = json!(scheduled_text(scheduled, tz));
    meta["name"] = json!(name);
    meta["namespace"] = json!(ns);
    meta["ownerReferences"] = json!([owner_ref(cj, KIND, "batch/v1")]);
    if let Some(m) = meta.as_object_mut() {
        m.remove("creationTimestamp");
        m.remove("generateName");
    }
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    });
    let mut ctx = WriteCtx::controller(MANAGER);
    let created = match core.create(jobs_rd, Some(ns), job, &mut ctx) {
        Ok(j) => {
            record_event(
                core,
                cj,
                KIND,
                "Normal",
                "SuccessfulCreate",
                &format!("Created job {name}"),
                MANAGER,
            );
            j
        }
        // Made by an earlier pass whose status write was lost: ours if we own it.
        Err(e) if e.reason == "AlreadyExists" => match core.get(jobs_rd, Some(ns), &name) {
            Ok(j) if controller_uid(&j) == Some(uid(cj)) => j,
            _ => return,
        },
        Err(e) => {
            record_event(
                core,
                cj,
                KIND,
                "Warning",
                "FailedCreate",
                &format!("Error creating job: {}", e.message),
                MANAGER,
            );
            return;
        }
    };
    if job_finished(&created).is_none() {
        active.push(job_ref(&created));
    }
    status["lastScheduleTime"] = json!(rfc3339(scheduled));
}

/// Upstream's `cleanupFinishedJobs`: finished Jobs beyond the history limits go, oldest
/// (by start time) first.
fn cleanup_finished(core: &Core, cj: &Value, jobs: &[Arc<Value>]) {
    for (ok, field, default) in [
        (true, "successfulJobsHistoryLimit", 3),
        (false, "failedJobsHistoryLimit", 1),
    ] {
        let limit = cj
            .pointer(&format!("/spec/{field}"))
            .and_then(Value::as_i64)
            .unwrap_or(default)
            .max(0) as usize;
        let mut done: Vec<&Value> = jobs
            .iter()
            .map(|j| &**j)
            .filter(|j| !deleting(j) && job_finished(j) == Some(ok))
            .collect();
        if done.len() <= limit {
            continue;
        }
        let started = |j: &Value| {
            j.pointer("/status/startTime")
                .and_then(Value::as_str)
                .unwrap_or_else(|| meta_str(j, "creationTimestamp"))
                .to_string()
        };
        done.sort_by_key(|j| (started(j), meta_str(j, "name").to_string()));
        for j in &done[..done.len() - limit] {
            delete_job(core, cj, meta_str(j, "name"));
        }
    }
}

/// Upstream's `deleteJob`: background propagation, and a `SuccessfulDelete` event on success.
fn delete_job(core: &Core, cj: &Value, jname: &str) {
    let opts = DeleteOptions {
        propagation: Some("Background".into()),
        ..DeleteOptions::default()
    };
    let ns = meta_str(cj, "namespace");
    if core
        .delete(rd("batch", "jobs"), Some(ns), jname, &opts)
        .is_ok()
    {
        record_event(
            core,
            cj,
            KIND,
            "Normal",
            "SuccessfulDelete",
            &format!("Deleted job {jname}"),
            MANAGER,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn parse_errors_have_robfig_texts() {
        for (spec, want) in [
            ("bad", "expected exactly 5 fields, found 1: [bad]"),
            ("61 * * * *", "end of range (61) above maximum (59): 61"),
            (
                "x * * * *",
                "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax",
            ),
            ("@fortnightly", "unrecognized descriptor: @fortnightly"),
            ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
        ] {
            assert_eq!(parse_schedule(spec).unwrap_err(), want, "{spec}");
        }
        assert!(parse_schedule("*/15 1-5,7 ? jan-mar MON-FRI").is_ok());
        assert_eq!(parse_schedule("@every 1h30m"), Ok(Schedule::Every(5400)));
    }

    #[test]
    fn next_times() {
        let utc = TimeZone::UTC;
        let s = parse_schedule("*/15 * * * *").expect("parses");
        assert_eq!(
            s.next(at("2026-01-01T10:07:30Z"), &utc),
            Some(at("2026-01-01T10:15:00Z"))
        );
        assert_eq!(
            s.next(at("2026-01-01T10:15:00Z"), &utc),
            Some(at("2026-01-01T10:30:00Z"))
        );
        let daily = parse_schedule("@daily").expect("parses");
        assert_eq!(
            daily.next(at("2026-02-28T12:00:00Z"), &utc),
            Some(at("2026-03-01T00:00:00Z"))
        );
        // Day of month OR day of week when both are restricted: the 13th or a Friday.
        let s = parse_schedule("0 0 13 * 5").expect("parses");
        assert_eq!(
            s.next(at("2026-03-01T00:00:00Z"), &utc),
            Some(at("2026-03-06T00:00:00Z"))
        );
        // In a time zone: 09:00 in Berlin (UTC+1 in winter).
        let berlin = TimeZone::get("Europe/Berlin").expect("zoneinfo");
        let s = parse_schedule("0 9 * * *").expect("parses");
        assert_eq!(
            s.next(at("2026-01-01T00:00:00Z"), &berlin),
            Some(at("2026-01-01T08:00:00Z"))
        );
        // 31 February never comes.
        assert_eq!(
            parse_schedule("0 0 31 2 *")
                .expect("parses")
                .next(at("2026-01-01T00:00:00Z"), &utc),
            None
        );
    }

    #[test]
    fn most_recent_of_many_missed() {
        let utc = TimeZone::UTC;
        let s = parse_schedule("* * * * *").expect("parses");
        assert_eq!(
            most_recent(
                &s,
                &utc,
                at("2020-01-01T00:00:00Z"),
                at("2026-05-05T05:05:30Z")
            ),
            Some(at("2026-05-05T05:05:00Z"))
        );
        assert_eq!(
            most_recent(
                &s,
                &utc,
                at("2026-05-05T05:05:00Z"),
                at("2026-05-05T05:05:59Z")
            ),
            None
        );
        let s = parse_schedule("30 6-16/4 * * 1-5").expect("parses");
        // Friday 2026-01-02 14:30 is the last before Saturday noon.
        assert_eq!(
            most_recent(
                &s,
                &utc,
                at("2025-12-01T00:00:00Z"),
                at("2026-01-03T12:00:00Z")
            ),
            Some(at("2026-01-02T14:30:00Z"))
        );
    }
}
