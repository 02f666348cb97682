//! Container logs in the kubelet's CRI format (`<RFC3339Nano> <stream> <P|F> <content>`, see the
//! CRI "container log format"), one directory per container, one file per restart, rotated by size.

use crate::util;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Lines longer than this are split into partial (`P`) records, as the kubelet does.
const MAX_LINE: usize = 16 * 1024;

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
        Ok(LogWriter {
            path,
            file: Some(f),
            size,
            max_size: max_size.max(1024),
            max_files: max_files.max(1),
            pending: [Vec::new(), Vec::new()],
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
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

/// One parsed CRI line.
pub struct Line<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub content: &'a str,
}

pub fn parse_line(l: &str) -> Option<Line<'_>> {
    let mut it = l.splitn(4, ' ');
    let time = it.next()?;
    let stream = it.next()?;
    let tag = it.next()?;
    let content = it.next().unwrap_or("");
    Some(Line {
        time,
        stream,
        partial: tag == "P",
        content,
    })
}

/// Copy the content of CRI log lines from `r` to `out` (kubectl-logs style: content only).
pub fn copy_content(r: impl Read, out: &mut dyn Write) -> std::io::Result<()> {
    for l in BufReader::new(r).lines() {
        let l = l?;
        if let Some(p) = parse_line(&l) {
            out.write_all(p.content.as_bytes())?;
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
        let l = parse_line(lines[0]).unwrap();
        assert_eq!((l.stream, l.partial, l.content), ("stdout", false, "hello"));
        assert!(l.time.ends_with('Z') && l.time.len() == 30, "{}", l.time);
        assert_eq!(parse_line(lines[1]).unwrap().stream, "stderr");
        assert_eq!(parse_line(lines[2]).unwrap().content, "world");
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
}
