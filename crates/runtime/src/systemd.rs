//! Pod supervisors as systemd transient units, as rkt's kubelet integration ran them: on a host
//! whose PID 1 is systemd (Flatcar nodes) each pod's supervisor is the unit `k8s_<uuid>.service`,
//! its stdout in the journal, so the seed's `journalctl -u k8s_<uuid>` shows the pod's output.
//!
//! The one call needed, `org.freedesktop.systemd1.Manager.StartTransientUnit`, is made over
//! systemd's private D-Bus socket (`/run/systemd/private`, root only, no bus daemon needed) by a
//! minimal client written here, as youki does for the same call: one method and its reply do
//! not justify a D-Bus library and its async stack in every node's binary. The wire format is
//! the D-Bus specification's (little-endian marshalling, SASL EXTERNAL authentication).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// systemd's private manager socket: a direct (peer-to-peer) D-Bus connection, no `Hello`.
pub const PRIVATE_SOCKET: &str = "/run/systemd/private";

/// Why a transient unit could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("failed to talk to systemd over {PRIVATE_SOCKET}: {0}")]
    Io(#[from] io::Error),
    #[error("systemd refused the D-Bus authentication: {0:?}")]
    Auth(String),
    #[error("systemd answered StartTransientUnit({unit}) with {name}: {message}")]
    Refused {
        unit: String,
        name: String,
        message: String,
    },
    #[error("malformed D-Bus reply from systemd: {0}")]
    Malformed(&'static str),
}

/// Whether this host was booted with systemd as PID 1 (sd_booted(3)'s test) and its manager
/// socket is there.
pub fn booted() -> bool {
    Path::new("/run/systemd/system").is_dir() && Path::new(PRIVATE_SOCKET).exists()
}

/// The unit a pod's supervisor runs as.
pub fn pod_unit(uuid: &str) -> String {
    format!("k8s_{uuid}.service")
}

/// What the transient service runs and how.
#[derive(Debug, Clone, Default)]
pub struct TransientService {
    pub unit: String,
    pub description: String,
    /// argv; argv[0] is the absolute path of the executable.
    pub argv: Vec<String>,
    /// `KEY=value` entries.
    pub environment: Vec<String>,
    /// The journal's SYSLOG_IDENTIFIER of its output.
    pub syslog_identifier: String,
    /// stderr appended to this file (stdout goes to the journal).
    pub stderr_append: Option<String>,
}

/// Start `svc` as a transient service (job mode `fail`); returns the job's object path.
pub fn start_transient_service(svc: &TransientService) -> Result<String, SystemdError> {
    let mut props: Vec<(&str, Value)> = vec![
        ("Description", Value::Str(svc.description.clone())),
        (
            "ExecStart",
            Value::ExecCommands(vec![ExecCommand {
                path: svc.argv.first().cloned().unwrap_or_default(),
                argv: svc.argv.clone(),
                ignore_failure: false,
            }]),
        ),
        ("Environment", Value::Strings(svc.environment.clone())),
        (
            "SyslogIdentifier",
            Value::Str(svc.syslog_identifier.clone()),
        ),
        ("StandardOutput", Value::Str("journal".into())),
        // The supervisor stops its containers itself on SIGTERM (grace periods); systemd then
        // kills whatever is left in the unit's cgroup.
        ("KillMode", Value::Str("mixed".into())),
        // A pod that exited (even failed) leaves no unit behind; its journal stays.
        ("CollectMode", Value::Str("inactive-or-failed".into())),
    ];
    if let Some(f) = &svc.stderr_append {
        props.push(("StandardErrorFileToAppend", Value::Str(f.clone())));
    }
    let body = start_transient_unit_body(&svc.unit, "fail", &props);
    let mut conn = Connection::open(Path::new(PRIVATE_SOCKET))?;
    let reply = conn.call(
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        &body,
    )?;
    match reply {
        Reply::Return(fields, body) => {
            if fields.signature.as_deref() != Some("o") {
                return Err(SystemdError::Malformed(
                    "StartTransientUnit did not return a path",
                ));
            }
            Reader::new(&body).string()
        }
        Reply::Error(name, message) => Err(SystemdError::Refused {
            unit: svc.unit.clone(),
            name,
            message,
        }),
    }
}

/// One `ExecStart=` entry: `(sasb)`.
#[derive(Debug, Clone)]
struct ExecCommand {
    path: String,
    argv: Vec<String>,
    ignore_failure: bool,
}

/// The property values this client sends.
#[derive(Debug, Clone)]
enum Value {
    Str(String),
    Strings(Vec<String>),
    ExecCommands(Vec<ExecCommand>),
}

impl Value {
    fn signature(&self) -> &'static str {
        match self {
            Value::Str(_) => "s",
            Value::Strings(_) => "as",
            Value::ExecCommands(_) => "a(sasb)",
        }
    }
}

/// Marshalling into a buffer whose offset 0 is 8-aligned in the message (the header's start, or
/// the body's, which the header padding aligns to 8), so alignment is by buffer length.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn pad(&mut self, align: usize) {
        while !self.buf.len().is_multiple_of(align) {
            self.buf.push(0);
        }
    }
    fn byte(&mut self, b: u8) {
        self.buf.push(b);
    }
    fn u32(&mut self, v: u32) {
        self.pad(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn string(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }
    fn signature(&mut self, s: &str) {
        self.byte(s.len() as u8);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }
    /// An array of elements aligned to `align`: the length counts the elements' bytes only,
    /// not the padding between it and the first element.
    fn array(&mut self, align: usize, elements: impl FnOnce(&mut Writer)) {
        self.pad(4);
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        self.pad(align);
        let start = self.buf.len();
        elements(self);
        let len = (self.buf.len() - start) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    fn value(&mut self, v: &Value) {
        self.signature(v.signature());
        match v {
            Value::Str(s) => self.string(s),
            Value::Strings(list) => self.array(4, |w| list.iter().for_each(|s| w.string(s))),
            Value::ExecCommands(cmds) => self.array(8, |w| {
                for c in cmds {
                    w.pad(8);
                    w.string(&c.path);
                    w.array(4, |w| c.argv.iter().for_each(|a| w.string(a)));
                    w.u32(u32::from(c.ignore_failure));
                }
            }),
        }
    }
}

fn start_transient_unit_body(unit: &str, mode: &str, props: &[(&str, Value)]) -> Vec<u8> {
    let mut w = Writer::default();
    w.string(unit);
    w.string(mode);
    w.array(8, |w| {
        for (name, v) in props {
            w.pad(8);
            w.string(name);
            w.value(v);
        }
    });
    // No auxiliary units.
    w.array(8, |_| {});
    w.buf
}

/// The header fields of a message this client reads.
#[derive(Debug, Default)]
struct Fields {
    reply_serial: Option<u32>,
    error_name: Option<String>,
    signature: Option<String>,
}

enum Reply {
    Return(Fields, Vec<u8>),
    Error(String, String),
}

const METHOD_CALL: u8 = 1;
const METHOD_RETURN: u8 = 2;
const ERROR: u8 = 3;

/// An authenticated connection to systemd's private socket.
struct Connection {
    stream: UnixStream,
    serial: u32,
}

impl Connection {
    fn open(path: &Path) -> Result<Connection, SystemdError> {
        let mut stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(25)))?;
        stream.set_write_timeout(Some(Duration::from_secs(25)))?;
        // SASL EXTERNAL: the credentials are the socket's; the id is our uid in hex-encoded
        // decimal, as the specification has it.
        // SAFETY: geteuid takes no arguments and cannot fail.
        let uid = unsafe { libc::geteuid() }.to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        stream.write_all(format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes())?;
        let line = read_line(&mut stream)?;
        if !line.starts_with("OK ") {
            return Err(SystemdError::Auth(line));
        }
        stream.write_all(b"BEGIN\r\n")?;
        Ok(Connection { stream, serial: 0 })
    }

    fn call(
        &mut self,
        path: &str,
        interface: &str,
        member: &str,
        signature: &str,
        body: &[u8],
    ) -> Result<Reply, SystemdError> {
        self.serial += 1;
        let serial = self.serial;
        let mut h = Writer::default();
        h.byte(b'l');
        h.byte(METHOD_CALL);
        h.byte(0);
        h.byte(1);
        h.u32(body.len() as u32);
        h.u32(serial);
        h.array(8, |w| {
            let mut field = |code: u8, sig: &str, v: &str| {
                w.pad(8);
                w.byte(code);
                w.signature(sig);
                if sig == "g" {
                    w.signature(v);
                } else {
                    w.string(v);
                }
            };
            field(1, "o", path);
            field(2, "s", interface);
            field(3, "s", member);
            field(6, "s", "org.freedesktop.systemd1");
            field(8, "g", signature);
        });
        h.pad(8);
        h.buf.extend_from_slice(body);
        self.stream.write_all(&h.buf)?;
        // Skip anything that is not our reply (signals, should any come).
        loop {
            let (kind, fields, body) = read_message(&mut self.stream)?;
            if fields.reply_serial != Some(serial) {
                continue;
            }
            return match kind {
                METHOD_RETURN => Ok(Reply::Return(fields, body)),
                ERROR => {
                    let message = if fields
                        .signature
                        .as_deref()
                        .is_some_and(|s| s.starts_with('s'))
                    {
                        Reader::new(&body).string().unwrap_or_default()
                    } else {
                        String::new()
                    };
                    Ok(Reply::Error(fields.error_name.unwrap_or_default(), message))
                }
                _ => Err(SystemdError::Malformed("unexpected message type")),
            };
        }
    }
}

fn read_line(r: &mut impl Read) -> Result<String, SystemdError> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if line.len() > 4096 {
            return Err(SystemdError::Malformed("authentication line too long"));
        }
        r.read_exact(&mut b)?;
        line.push(b[0]);
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// One message: its type, the header fields this client reads, and the body.
fn read_message(r: &mut impl Read) -> Result<(u8, Fields, Vec<u8>), SystemdError> {
    let mut fixed = [0u8; 16];
    r.read_exact(&mut fixed)?;
    if fixed[0] != b'l' {
        // systemd marshals in the host's order; nodes are little-endian machines.
        return Err(SystemdError::Malformed("big-endian message"));
    }
    let word = |i: usize| u32::from_le_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
    let (body_len, fields_len) = (word(4) as usize, word(12) as usize);
    if body_len > 1 << 26 || fields_len > 1 << 26 {
        return Err(SystemdError::Malformed("message too large"));
    }
    let padded = (fields_len + 7) & !7;
    let mut rest = vec![0u8; padded + body_len];
    r.read_exact(&mut rest)?;
    let mut fields = Fields::default();
    // The fields start at offset 16 of the message, itself 8-aligned: positions in `rest`
    // align as the message's do.
    let mut rd = Reader::new(&rest[..fields_len]);
    while rd.pos < fields_len {
        rd.align(8)?;
        let code = rd.byte()?;
        let sig = rd.signature()?;
        match sig.as_str() {
            "s" | "o" => {
                let v = rd.string()?;
                if code == 4 {
                    fields.error_name = Some(v);
                }
            }
            "u" => {
                let v = rd.u32()?;
                if code == 5 {
                    fields.reply_serial = Some(v);
                }
            }
            "g" => {
                let v = rd.signature()?;
                if code == 8 {
                    fields.signature = Some(v);
                }
            }
            _ => return Err(SystemdError::Malformed("unexpected header field type")),
        }
    }
    Ok((fixed[1], fields, rest[padded..].to_vec()))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], SystemdError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(SystemdError::Malformed("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn align(&mut self, a: usize) -> Result<(), SystemdError> {
        let n = (a - self.pos % a) % a;
        self.take(n).map(|_| ())
    }
    fn byte(&mut self) -> Result<u8, SystemdError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, SystemdError> {
        self.align(4)?;
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<String, SystemdError> {
        let n = self.u32()? as usize;
        let s = self.take(n)?;
        self.take(1)?;
        Ok(String::from_utf8_lossy(s).into_owned())
    }
    fn signature(&mut self) -> Result<String, SystemdError> {
        let n = self.byte()? as usize;
        let s = self.take(n)?;
        self.take(1)?;
        Ok(String::from_utf8_lossy(s).into_owned())
    }
}

/// Whether this process's stdout is the journal stream systemd connected it to
/// (`$JOURNAL_STREAM` names that stream's device and inode, systemd.exec(5)).
pub fn stdout_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat writes only into the zeroed struct we pass.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(1, &mut st) } != 0 {
        return false;
    }
    st.st_dev == dev && st.st_ino == ino
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of a StartTransientUnit call, byte for byte as the D-Bus marshalling rules lay
    /// it out (alignment of arrays, structs and variants included), decoded back by hand.
    #[test]
    fn start_transient_unit_body_is_marshalled_per_the_specification() {
        let props = vec![
            ("Description", Value::Str("d".into())),
            (
                "ExecStart",
                Value::ExecCommands(vec![ExecCommand {
                    path: "/x".into(),
                    argv: vec!["/x".into(), "a".into()],
                    ignore_failure: false,
                }]),
            ),
            ("Environment", Value::Strings(vec![])),
        ];
        let b = start_transient_unit_body("k8s_u.service", "fail", &props);
        let mut r = Reader::new(&b);
        assert_eq!(r.string().unwrap(), "k8s_u.service");
        assert_eq!(r.string().unwrap(), "fail");
        let len = r.u32().unwrap() as usize;
        r.align(8).unwrap();
        let start = r.pos;
        // ("Description", <"s" "d">)
        assert_eq!(r.pos % 8, 0);
        assert_eq!(r.string().unwrap(), "Description");
        assert_eq!(r.signature().unwrap(), "s");
        assert_eq!(r.string().unwrap(), "d");
        // ("ExecStart", <"a(sasb)" [("/x", ["/x", "a"], false)]>)
        r.align(8).unwrap();
        assert_eq!(r.string().unwrap(), "ExecStart");
        assert_eq!(r.signature().unwrap(), "a(sasb)");
        let cmds_len = r.u32().unwrap() as usize;
        r.align(8).unwrap();
        let cmds_start = r.pos;
        assert_eq!(r.string().unwrap(), "/x");
        let argv_len = r.u32().unwrap() as usize;
        let argv_start = r.pos;
        assert_eq!(r.string().unwrap(), "/x");
        assert_eq!(r.string().unwrap(), "a");
        assert_eq!(r.pos - argv_start, argv_len);
        assert_eq!(r.u32().unwrap(), 0);
        assert_eq!(r.pos - cmds_start, cmds_len);
        // ("Environment", <"as" []>): an empty array is its length, 0, alone.
        r.align(8).unwrap();
        assert_eq!(r.string().unwrap(), "Environment");
        assert_eq!(r.signature().unwrap(), "as");
        assert_eq!(r.u32().unwrap(), 0);
        assert_eq!(r.pos - start, len);
        // The empty a(sa(sv)) of auxiliary units: its length, padded to 8 after it.
        assert_eq!(r.u32().unwrap(), 0);
        r.align(8).unwrap();
        assert_eq!(r.pos, b.len());
    }

    /// A reply as systemd sends one: the header fields (REPLY_SERIAL, SIGNATURE) are found
    /// among others, and the body starts at the next 8-aligned offset.
    #[test]
    fn replies_are_read_with_their_header_fields() {
        let mut body = Writer::default();
        body.string("/org/freedesktop/systemd1/job/7");
        let mut m = Writer::default();
        m.byte(b'l');
        m.byte(METHOD_RETURN);
        m.byte(1);
        m.byte(1);
        m.u32(body.buf.len() as u32);
        m.u32(9);
        m.array(8, |w| {
            w.pad(8);
            w.byte(5);
            w.signature("u");
            w.u32(3);
            w.pad(8);
            w.byte(7);
            w.signature("s");
            w.string(":1.0");
            w.pad(8);
            w.byte(8);
            w.signature("g");
            w.signature("o");
        });
        m.pad(8);
        m.buf.extend_from_slice(&body.buf);
        let (kind, fields, b) = read_message(&mut &m.buf[..]).unwrap();
        assert_eq!(kind, METHOD_RETURN);
        assert_eq!(fields.reply_serial, Some(3));
        assert_eq!(fields.signature.as_deref(), Some("o"));
        assert_eq!(
            Reader::new(&b).string().unwrap(),
            "/org/freedesktop/systemd1/job/7"
        );
        // Truncated input is an error, not a panic.
        assert!(read_message(&mut &m.buf[..m.buf.len() - 3]).is_err());
    }
}
