//! Container logs in the kubelet's CRI format (`<RFC3339Nano> <stream> <P|F> <content>`, see the
//! CRI "container log format"), one directory per container, one file per restart, rotated by size.

use crate::util;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Lines longer than this are split into partial (`P`) records, as the kubelet does.
const MAX_LINE: usize = 16 * 1024;

/// Whether this process (a pod's supervisor running as a systemd unit) also writes each log
/// record to its stdout, which is the journal: the seed's `journalctl -u k8s_<uuid>`.
static ECHO_TO_JOURNAL: AtomicBool = AtomicBool::new(false);

/// Turn the journal echo of every [`LogWriter`] of this process on or off.
pub(crate) fn echo_to_journal(on: bool) {
    ECHO_TO_JOURNAL.store(on, Ordering::Relaxed);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Writer for one container run (`<dir>/<restart>.log`), rotating to `.1`, `.2`, ... by size.
pub struct LogWriter {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_size: u64,
    max_files: usize,
    pending: [Vec<u8>; 2],
    /// The container's name, when records are echoed to the journal too.
    journal_label: Option<String>,
}

impl LogWriter {
    pub fn open(path: PathBuf, max_size: u64, max_files: usize) -> std::io::Result<LogWriter> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let size = f.metadata()?.len();
        // `<pod>/logs/<container>/<run>.log`: the container is the directory's name.
        let journal_label = ECHO_TO_JOURNAL
            .load(Ordering::Relaxed)
            .then(|| path.parent().and_then(|d| d.file_name()))
            .flatten()
            .map(|n| n.to_string_lossy().into_owned());
        Ok(LogWriter {
            path,
            file: Some(f),
            size,
            max_size: max_size.max(1024),
            max_files: max_files.max(1),
            pending: [Vec::new(), Vec::new()],
            journal_label,
        })
    }

    /// Feed raw bytes read from a container's stdout/stderr.
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        let i = stream as usize;
        self.pending[i].extend_from_slice(data);
        loop {
            let buf = &self.pending[i];
            if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending[i].drain(..=nl).collect();
                self.record(stream, 'F', &line[..line.len() - 1]);
            } else if buf.len() >= MAX_LINE {
                let part: Vec<u8> = self.pending[i].drain(..MAX_LINE).collect();
                self.record(stream, 'P', &part);
            } else {
                break;
            }
        }
    }

    /// Flush what is left without a newline (the stream closed).
    pub fn flush_partial(&mut self) {
        for (i, s) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            if !self.pending[i].is_empty() {
                let rest = std::mem::take(&mut self.pending[i]);
                self.record(s, 'F', &rest);
            }
        }
    }

    /// Runtime messages (start errors) go to the container's log as stderr lines too.
    pub fn note(&mut self, msg: &str) {
        self.record(Stream::Stderr, 'F', msg.as_bytes());
    }

    fn record(&mut self, stream: Stream, tag: char, content: &[u8]) {
        let mut line = format!(
            "{} {} {tag} ",
            util::rfc3339_nanos(util::now_nanos()),
            stream.as_str()
        )
        .into_bytes();
        line.extend_from_slice(content);
        line.push(b'\n');
        if let Some(label) = &self.journal_label {
            // The journal's stream protocol reads a `<N>` prefix as the priority: stderr is
            // err (3), stdout info (6), so `journalctl -p err` shows what containers complained.
            let level = if stream == Stream::Stderr { 3 } else { 6 };
            let mut j = format!("<{level}>{label}: ").into_bytes();
            j.extend_from_slice(content);
            j.push(b'\n');
            let _ = std::io::stdout().lock().write_all(&j);
        }
        if self.size + line.len() as u64 > self.max_size && self.size > 0 {
            self.rotate();
        }
        if let Some(f) = &mut self.file {
            if f.write_all(&line).is_ok() {
                self.size += line.len() as u64;
            }
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        let name = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = std::fs::remove_file(name(self.max_files));
        for n in (1..self.max_files).rev() {
            let _ = std::fs::rename(name(n), name(n + 1));
        }
        let _ = std::fs::rename(&self.path, name(1));
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .ok();
        self.size = 0;
    }
}

/// Log files of one container, oldest first: per restart, rotated files then the current one.
pub fn container_log_files(dir: &Path) -> Vec<PathBuf> {
    let mut runs: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let r = n.strip_suffix(".log")?.parse().ok()?;
                    Some((r, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    runs.sort();
    let mut out = Vec::new();
    for (_, p) in runs {
        let mut rotated: Vec<(usize, PathBuf)> = (1..100)
            .map(|n| (n, PathBuf::from(format!("{}.{n}", p.display()))))
            .take_while(|(_, q)| q.exists())
            .collect();
        rotated.reverse();
        out.extend(rotated.into_iter().map(|(_, q)| q));
        out.push(p);
    }
    out
}

/// Copy the content of CRI log lines from `r` to `out` (kubectl-logs style: content only).
pub fn copy_content(r: impl Read, out: &mut dyn Write) -> std::io::Result<()> {
    for l in BufReader::new(r).lines() {
        let l = l?;
        if let Some(p) = parse_record(l.as_bytes()) {
            out.write_all(p.content)?;
            if !p.partial {
                out.write_all(b"\n")?;
            }
        }
    }
    Ok(())
}

/// Print everything, then (follow) keep printing what the current file gains until `done()`
/// says the container will not write again. Follows rotation and new restart files.
pub fn print_logs(
    dir: &Path,
    follow: bool,
    out: &mut dyn Write,
    mut done: impl FnMut() -> bool,
) -> std::io::Result<()> {
    let files = container_log_files(dir);
    let Some(last) = files.last().cloned() else {
        if !follow {
            return Ok(());
        }
        return follow_from(dir, None, 0, out, &mut done);
    };
    for f in &files[..files.len() - 1] {
        if let Ok(fh) = File::open(f) {
            copy_content(fh, out)?;
        }
    }
    let mut fh = File::open(&last)?;
    let mut buf = String::new();
    fh.read_to_string(&mut buf)?;
    let consumed = emit_complete(&buf, out)?;
    out.flush()?;
    if !follow {
        return Ok(());
    }
    follow_from(dir, Some(last), consumed as u64, out, &mut done)
}

fn emit_complete(buf: &str, out: &mut dyn Write) -> std::io::Result<usize> {
    let end = buf.rfind('\n').map(|i| i + 1).unwrap_or(0);
    copy_content(&buf.as_bytes()[..end], out)?;
    Ok(end)
}

fn follow_from(
    dir: &Path,
    mut cur: Option<PathBuf>,
    mut off: u64,
    out: &mut dyn Write,
    done: &mut dyn FnMut() -> bool,
) -> std::io::Result<()> {
    let mut ino = cur.as_ref().and_then(|p| inode(p));
    loop {
        let finished = done();
        // New restart file or rotation: finish the old file first.
        let latest = container_log_files(dir).into_iter().next_back();
        if let Some(p) = &cur {
            if let Ok(mut f) = File::open(p) {
                if inode(p) == ino {
                    f.seek(SeekFrom::Start(off))?;
                    let mut s = String::new();
                    f.read_to_string(&mut s)?;
                    let n = emit_complete(&s, out)?;
                    off += n as u64;
                    out.flush()?;
                }
            }
        }
        let rotated = cur.as_ref().is_some_and(|p| inode(p) != ino);
        if latest != cur || rotated {
            if let Some(l) = latest {
                if rotated || cur.is_some() || off == 0 {
                    ino = inode(&l);
                    cur = Some(l);
                    off = 0;
                    continue;
                }
            }
        }
        if finished {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn inode(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.ino())
}

fn inode_of_file(f: &File) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    f.metadata().ok().map(|m| m.ino())
}

/// The directory of one container's logs in a pod directory.
pub(crate) fn container_dir(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir.join("logs").join(container)
}

/// The current log file of run `run` (`<run>.log`).
fn run_log(dir: &Path, run: u32) -> PathBuf {
    dir.join(format!("{run}.log"))
}

/// The log files of one run, oldest first: rotated parts (`.N` ... `.1`), then the current file.
pub(crate) fn run_files(dir: &Path, run: u32) -> Vec<PathBuf> {
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

/// One record of a container's log, as `Runtime::read_log` hands it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRecord<'a> {
    /// When the runtime read it: RFC 3339 in UTC with nanoseconds (`2024-01-01T00:00:01.000000000Z`).
    pub time: &'a str,
    pub stream: Stream,
    /// Part of a longer line (the kubelet's `P` tag): the next record continues it, and no
    /// newline follows this one.
    pub partial: bool,
    /// The line without its newline.
    pub content: &'a [u8],
}

/// Where `Runtime::read_log` delivers a log: records in order, and a call each time it has
/// caught up with what was written so far (before it waits for more when following).
pub trait LogSink {
    /// One record; `Break` ends reading (a byte limit reached, the client gone).
    fn record(&mut self, r: &LogRecord<'_>) -> ControlFlow<()>;
    /// Everything written so far was delivered; `Break` ends reading (the client gone).
    fn caught_up(&mut self) -> ControlFlow<()>;
}

/// How much of a run's log to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogRead {
    /// Only the last so many records (complete lines in the files; a record still being
    /// written does not count), like kubelet's `tailLines`.
    pub tail_lines: Option<u64>,
    /// Keep reading what the run appends (across rotation) until it ends.
    pub follow: bool,
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

/// One raw log line (with or without its newline) as a record; None for what is not one.
fn parse_record(raw: &[u8]) -> Option<LogRecord<'_>> {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let mut it = raw.splitn(4, |&b| b == b' ');
    let (time, stream, tag) = (it.next()?, it.next()?, it.next()?);
    let content = it.next().unwrap_or(b"");
    let time = std::str::from_utf8(time).ok()?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = tag.split(|&b| b == b':').next() == Some(b"P");
    Some(LogRecord {
        time,
        stream,
        partial,
        content,
    })
}

/// Hand the complete lines of `f` from `*pos` to the sink; `*pos` ends after the last complete
/// line (a line still being written is read again next time).
fn drain(f: &mut File, pos: &mut u64, sink: &mut dyn LogSink) -> std::io::Result<ControlFlow<()>> {
    f.seek(SeekFrom::Start(*pos))?;
    let mut r = BufReader::new(f);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(ControlFlow::Continue(()));
        }
        *pos += n as u64;
        if let Some(rec) = parse_record(&line) {
            if sink.record(&rec).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
    }
}

/// How often a followed log is polled.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Read the log of one run (`run`) of the container whose log directory is `dir`. With
/// `follow`, keep reading what the run appends until `running()` says it ended (then read what
/// is left), or the sink says stop.
pub(crate) fn read_run(
    dir: &Path,
    run: u32,
    opts: &LogRead,
    running: &mut dyn FnMut() -> bool,
    sink: &mut dyn LogSink,
) -> std::io::Result<()> {
    let files = run_files(dir, run);
    let current = run_log(dir, run);
    let (first, mut offset) = match opts.tail_lines {
        Some(n) => tail_start(&files, n)?,
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
        if drain(&mut fh, &mut pos, sink)?.is_break() {
            return Ok(());
        }
        if *f == current {
            followed = Some((fh, pos));
        }
    }
    if sink.caught_up().is_break() || !opts.follow {
        return Ok(());
    }
    // Follow: the current file grows, may be rotated (renamed to .1, a new one opened), and the
    // run ends when the container exits or restarts.
    let mut ending = false;
    loop {
        if let Some((fh, pos)) = followed.as_mut() {
            if drain(fh, pos, sink)?.is_break() {
                return Ok(());
            }
        }
        if sink.caught_up().is_break() {
            return Ok(());
        }
        let open_ino = followed.as_ref().and_then(|(f, _)| inode_of_file(f));
        let path_ino = inode(&current);
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

    #[test]
    fn cri_lines_partial_records_and_rotation() {
        let d = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(d.path().join("app/0.log"), 2048, 3).unwrap();
        w.write(Stream::Stdout, b"hello\nwor");
        w.write(Stream::Stderr, b"oops\n");
        w.write(Stream::Stdout, b"ld\n");
        let text = std::fs::read_to_string(d.path().join("app/0.log")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let l = parse_record(lines[0].as_bytes()).unwrap();
        assert_eq!(
            (l.stream, l.partial, l.content),
            (Stream::Stdout, false, &b"hello"[..])
        );
        assert!(l.time.ends_with('Z') && l.time.len() == 30, "{}", l.time);
        assert_eq!(
            parse_record(lines[1].as_bytes()).unwrap().stream,
            Stream::Stderr
        );
        assert_eq!(parse_record(lines[2].as_bytes()).unwrap().content, b"world");
        for i in 0..200 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes());
        }
        assert!(d.path().join("app/0.log.1").exists());
        assert!(d.path().join("app/0.log.3").exists());
        assert!(!d.path().join("app/0.log.4").exists());
        for f in container_log_files(&d.path().join("app")) {
            assert!(std::fs::metadata(&f).unwrap().len() <= 2048);
        }
        let mut out = Vec::new();
        print_logs(&d.path().join("app"), false, &mut out, || true).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with("line 199\n"), "{s}");
        w.write(Stream::Stdout, &vec![b'x'; MAX_LINE + 5]);
        w.flush_partial();
        let mut out = Vec::new();
        print_logs(&d.path().join("app"), false, &mut out, || true).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with(&format!("{}\n", "x".repeat(MAX_LINE + 5))));
    }

    /// kubectl-style content of the records, and how often the reader caught up.
    #[derive(Default)]
    struct Content {
        out: String,
        caught_up: usize,
        stop_when_caught_up: bool,
    }

    impl LogSink for Content {
        fn record(&mut self, r: &LogRecord<'_>) -> ControlFlow<()> {
            self.out.push_str(std::str::from_utf8(r.content).unwrap());
            if !r.partial {
                self.out.push('\n');
            }
            ControlFlow::Continue(())
        }
        fn caught_up(&mut self) -> ControlFlow<()> {
            self.caught_up += 1;
            if self.stop_when_caught_up {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }

    fn write_log(dir: &Path, name: &str, lines: &[(&str, &str, &str)]) {
        let mut s = String::new();
        for (ts, tag, content) in lines {
            s.push_str(&format!("{ts} stdout {tag} {content}\n"));
        }
        std::fs::write(dir.join(name), s).expect("write log");
    }

    fn read(dir: &Path, run: u32, tail_lines: Option<u64>) -> String {
        let mut c = Content::default();
        let opts = LogRead {
            tail_lines,
            follow: false,
        };
        read_run(dir, run, &opts, &mut || false, &mut c).expect("read");
        assert_eq!(c.caught_up, 1);
        c.out
    }

    #[test]
    fn runs_read_by_restart_number_with_tail_across_rotation() {
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
        f.write_all(b"2024-01-01T00:00:59.000000000Z stdout F unfinis")
            .expect("append");
        write_log(d.path(), "1.log", &[(&t5, "F", "other run")]);
        assert_eq!(run_files(d.path(), 0).len(), 2);
        assert!(run_files(d.path(), 7).is_empty());
        assert_eq!(read(d.path(), 0, None), "one\ntwo\nthree\nfive\n");
        assert_eq!(read(d.path(), 0, Some(1)), "five\n");
        // Records are lines in the file: a partial record counts.
        assert_eq!(read(d.path(), 0, Some(2)), "ee\nfive\n");
        assert_eq!(read(d.path(), 0, Some(4)), "two\nthree\nfive\n");
        assert_eq!(read(d.path(), 0, Some(0)), "");
        assert_eq!(read(d.path(), 0, Some(100)), "one\ntwo\nthree\nfive\n");
        assert_eq!(read(d.path(), 1, None), "other run\n");
        assert_eq!(read(d.path(), 7, None), "");
        // Records as handed out: time, stream, tag.
        let r = parse_record(b"2024-01-01T00:00:03.000000000Z stderr P:x thr\n").unwrap();
        assert_eq!(
            (r.time, r.stream, r.partial, r.content),
            (
                "2024-01-01T00:00:03.000000000Z",
                Stream::Stderr,
                true,
                &b"thr"[..]
            )
        );
        assert!(parse_record(b"2024-01-01T00:00:03Z other F x").is_none());
        assert!(parse_record(b"garbage").is_none());
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
                std::thread::sleep(std::time::Duration::from_millis(300));
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(dir.join("0.log"))
                    .expect("open");
                f.write_all(line("b").as_bytes()).expect("append");
                std::thread::sleep(std::time::Duration::from_millis(300));
                // Rotation: the file is renamed and a new one started.
                std::fs::rename(dir.join("0.log"), dir.join("0.log.1")).expect("rotate");
                std::fs::write(dir.join("0.log"), line("c")).expect("write");
                std::thread::sleep(std::time::Duration::from_millis(300));
            })
        };
        let opts = LogRead {
            tail_lines: None,
            follow: true,
        };
        let mut c = Content::default();
        let start = std::time::Instant::now();
        read_run(
            &dir,
            0,
            &opts,
            &mut || start.elapsed() < std::time::Duration::from_millis(900),
            &mut c,
        )
        .expect("follow");
        writer.join().expect("writer");
        assert_eq!(c.out, "a\nb\nc\n");
        // A sink that stops (the client went away) ends following at once.
        let start = std::time::Instant::now();
        let mut c = Content {
            stop_when_caught_up: true,
            ..Default::default()
        };
        read_run(&dir, 0, &opts, &mut || true, &mut c).expect("follow");
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(c.caught_up, 1);
    }
}
