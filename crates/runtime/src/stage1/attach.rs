//! A container's attach endpoint, held by the pod's supervisor for one run of a container with
//! `stdin: true` or `tty: true` (as conmon's attach socket): a unix socket (0600, in a 0700
//! directory of the pod dir) that any number of attachers connect to. The supervisor keeps the
//! container's stdin (a pipe, or the terminal's master) so it outlives attachers; every
//! attacher gets the output live, and what one sends goes to the container.
//!
//! Frames both ways: kind (1 byte), length (4 bytes, big endian), data. To the attacher:
//! `STDOUT`, `STDERR`. From it: `STDIN` (data), `CLOSE_STDIN` (its input ended: with
//! `stdinOnce` the container's stdin is closed, else it stays open for the next attacher),
//! `RESIZE` (width, height as two big-endian u16). The socket closes when the run ends.
//! A slow attacher that cannot take output at once is dropped rather than stalling the pod;
//! input waits (up to 1 MiB, then attachers are not read) until the container takes it.
//! A `tty: true` container of a stage1-kvm pod has its terminal in the VM: there the stdin is
//! a telnet connection to it (`open_telnet`).

use super::sys;
use super::telnet::Telnet;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const CLOSE_STDIN: u8 = 3;
pub const RESIZE: u8 = 4;

/// The largest frame an attacher may send.
const MAX_FRAME: usize = 1 << 20;

/// Where the attach socket of slot `index` (init containers first) lives. Short on purpose:
/// unix socket paths are limited to 107 bytes.
pub fn socket_path(pod_dir: &Path, index: usize) -> PathBuf {
    pod_dir.join("attach").join(index.to_string())
}

/// One frame.
pub fn frame(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + data.len());
    f.push(kind);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes());
    f.extend_from_slice(data);
    f
}

/// Takes the complete frames off the front of `buf`.
pub fn take_frames(buf: &mut Vec<u8>) -> Result<Vec<(u8, Vec<u8>)>, String> {
    let mut out = Vec::new();
    while buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(format!("an attach frame of {len} bytes"));
        }
        if buf.len() < 5 + len {
            break;
        }
        out.push((buf[0], buf[5..5 + len].to_vec()));
        buf.drain(..5 + len);
    }
    Ok(out)
}

struct Client {
    s: UnixStream,
    buf: Vec<u8>,
    /// It sent input: its going away ends a `stdinOnce` stdin.
    wrote: bool,
}

pub(crate) struct AttachPoint {
    path: PathBuf,
    listener: UnixListener,
    clients: Vec<Client>,
    /// The container's stdin (pipe write end or a dup of the terminal master); owned.
    stdin: Option<RawFd>,
    /// The terminal master for resizes (a dup); owned.
    tty: Option<RawFd>,
    /// `stdin` is a telnet connection to a stage1-kvm guest's terminal (`open_telnet`).
    telnet: bool,
    /// Attachers' input goes to the container (its `stdin: true`).
    takes_input: bool,
    stdin_once: bool,
    /// Input not yet taken by the container (its stdin is non-blocking: a container that does
    /// not read must not stall the supervisor); attachers are not read while it is full.
    pending: Vec<u8>,
    /// Close stdin once `pending` is written.
    close_after: bool,
}

/// How much input waits for the container before attachers are no longer read.
const MAX_PENDING: usize = 1 << 20;

impl AttachPoint {
    /// Listens at `path`; takes ownership of `stdin` and `tty`.
    pub fn open(
        path: &Path,
        stdin: Option<RawFd>,
        tty: Option<RawFd>,
        stdin_once: bool,
    ) -> std::io::Result<AttachPoint> {
        use std::os::unix::fs::PermissionsExt;
        let owned = |r: std::io::Result<AttachPoint>| {
            if r.is_err() {
                for fd in [stdin, tty].into_iter().flatten() {
                    sys::close(fd);
                }
            }
            r
        };
        owned((|| {
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d)?;
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
            }
            let _ = std::fs::remove_file(path);
            let listener = UnixListener::bind(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            listener.set_nonblocking(true)?;
            if let Some(fd) = stdin {
                sys::set_nonblock(fd);
            }
            Ok(AttachPoint {
                path: path.to_path_buf(),
                listener,
                clients: Vec::new(),
                takes_input: stdin.is_some(),
                stdin,
                tty,
                telnet: false,
                stdin_once,
                pending: Vec::new(),
                close_after: false,
            })
        })())
    }

    /// Listens at `path` for a `tty: true` container of a stage1-kvm pod, whose terminal is
    /// the telnet connection `conn` (owned; the supervisor reads the output from a dup): input
    /// goes to it as telnet data (if the container has `stdin`), resizes as NAWS, and closing
    /// stdin (stdinOnce) shuts down its sending side, which hangs up the terminal as closing
    /// a console does.
    pub fn open_telnet(
        path: &Path,
        conn: RawFd,
        stdin: bool,
        stdin_once: bool,
    ) -> std::io::Result<AttachPoint> {
        let mut a = AttachPoint::open(path, Some(conn), None, stdin_once)?;
        a.telnet = true;
        a.takes_input = stdin;
        Ok(a)
    }

    /// The descriptors to poll for input.
    pub fn poll_fds(&self, fds: &mut Vec<libc::pollfd>) {
        let fd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        fds.push(fd(self.listener.as_raw_fd()));
        if self.pending.len() < MAX_PENDING {
            for c in &self.clients {
                fds.push(fd(c.s.as_raw_fd()));
            }
        }
        if let (Some(stdin), false) = (self.stdin, self.pending.is_empty()) {
            fds.push(libc::pollfd {
                fd: stdin,
                events: libc::POLLOUT,
                revents: 0,
            });
        }
    }

    /// Accepts new attachers and applies what attachers sent.
    pub fn service(&mut self) {
        while let Ok((s, _)) = self.listener.accept() {
            if s.set_nonblocking(true).is_ok() {
                self.clients.push(Client {
                    s,
                    buf: Vec::new(),
                    wrote: false,
                });
            }
        }
        self.flush();
        if self.pending.len() >= MAX_PENDING {
            return;
        }
        let mut i = 0;
        while i < self.clients.len() {
            let mut gone = false;
            let mut tmp = [0u8; 16 * 1024];
            loop {
                match self.clients[i].s.read(&mut tmp) {
                    Ok(0) => {
                        gone = true;
                        break;
                    }
                    Ok(n) => self.clients[i].buf.extend_from_slice(&tmp[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        gone = true;
                        break;
                    }
                }
            }
            match take_frames(&mut self.clients[i].buf) {
                Ok(frames) => {
                    for (kind, data) in frames {
                        self.clients[i].wrote |= kind == STDIN;
                        self.input(kind, &data);
                    }
                }
                Err(_) => gone = true,
            }
            if gone {
                let c = self.clients.remove(i);
                if c.wrote && self.stdin_once {
                    self.close_stdin();
                }
            } else {
                i += 1;
            }
        }
    }

    fn input(&mut self, kind: u8, data: &[u8]) {
        match kind {
            STDIN if self.takes_input && self.stdin.is_some() && !self.close_after => {
                if self.telnet {
                    self.pending.extend(Telnet::input(data));
                } else {
                    self.pending.extend_from_slice(data);
                }
                self.flush();
            }
            CLOSE_STDIN if self.stdin_once => self.close_stdin(),
            RESIZE if data.len() == 4 => {
                let (cols, rows) = (
                    u16::from_be_bytes([data[0], data[1]]),
                    u16::from_be_bytes([data[2], data[3]]),
                );
                if self.telnet && self.stdin.is_some() && !self.close_after {
                    self.pending.extend(Telnet::window_size(cols, rows));
                    self.flush();
                } else if let Some(fd) = self.tty {
                    let ws = libc::winsize {
                        ws_col: cols,
                        ws_row: rows,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
                    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
                }
            }
            _ => {}
        }
    }

    /// Writes what the container's stdin takes now; a broken stdin drops the rest.
    fn flush(&mut self) {
        let Some(fd) = self.stdin else {
            self.pending.clear();
            return;
        };
        while !self.pending.is_empty() {
            // SAFETY: a valid buffer and an fd we own.
            let n = unsafe {
                libc::write(
                    fd,
                    self.pending.as_ptr() as *const libc::c_void,
                    self.pending.len(),
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::Interrupted => continue,
                    std::io::ErrorKind::WouldBlock => return,
                    _ => {
                        self.pending.clear();
                        self.close_after = false;
                        self.release_stdin();
                        return;
                    }
                }
            }
            self.pending.drain(..n as usize);
        }
        if self.close_after {
            self.release_stdin();
        }
    }

    /// Closes our end of the container's stdin. A telnet connection is shut down for sending
    /// first: the supervisor's dup, which reads the output, keeps it open otherwise.
    fn release_stdin(&mut self) {
        if let Some(fd) = self.stdin.take() {
            if self.telnet {
                // SAFETY: shutdown on a socket we own.
                unsafe { libc::shutdown(fd, libc::SHUT_WR) };
            }
            sys::close(fd);
        }
    }

    /// Closes the container's stdin once what waits for it is written.
    fn close_stdin(&mut self) {
        self.close_after = true;
        self.flush();
    }

    /// Sends output to every attacher.
    pub fn broadcast(&mut self, kind: u8, data: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let f = frame(kind, data);
        self.clients.retain_mut(|c| c.s.write_all(&f).is_ok());
    }
}

impl Drop for AttachPoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(fd) = self.stdin.take() {
            sys::close(fd);
        }
        if let Some(fd) = self.tty.take() {
            sys::close(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wait_for_their_end() {
        let mut buf = frame(STDIN, b"hello");
        buf.extend(frame(RESIZE, &[0, 80, 0, 24]));
        buf.extend_from_slice(&frame(STDOUT, b"partial")[..6]);
        let got = take_frames(&mut buf).unwrap();
        assert_eq!(
            got,
            [(STDIN, b"hello".to_vec()), (RESIZE, vec![0, 80, 0, 24])]
        );
        assert_eq!(buf.len(), 6, "the partial frame waits");
        let mut huge = vec![STDIN];
        huge.extend_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert!(take_frames(&mut huge).is_err());
    }

    #[test]
    fn an_attacher_feeds_stdin_and_gets_output() {
        let dir = tempfile::tempdir().unwrap();
        let (r, w) = sys::pipe().unwrap();
        let path = socket_path(dir.path(), 0);
        let mut ap = AttachPoint::open(&path, Some(w), None, true).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut c = UnixStream::connect(&path).unwrap();
        c.write_all(&frame(STDIN, b"typed")).unwrap();
        c.write_all(&frame(CLOSE_STDIN, b"")).unwrap();
        for _ in 0..50 {
            ap.service();
            if ap.stdin.is_none() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            ap.stdin.is_none(),
            "stdinOnce: closed after the attacher's end"
        );
        let mut got = Vec::new();
        // SAFETY: r is the pipe's read end, owned here.
        let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(r) };
        f.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"typed");
        ap.broadcast(STDOUT, b"out");
        let mut back = [0u8; 8];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back.to_vec(), frame(STDOUT, b"out"));
        drop(ap);
        assert!(!path.exists());
    }

    #[test]
    fn a_container_that_does_not_read_does_not_block_the_supervisor() {
        let dir = tempfile::tempdir().unwrap();
        let (r, w) = sys::pipe().unwrap();
        let path = socket_path(dir.path(), 1);
        let mut ap = AttachPoint::open(&path, Some(w), None, false).unwrap();
        let mut c = UnixStream::connect(&path).unwrap();
        let big = vec![b'x'; 300 * 1024];
        let writer = std::thread::spawn(move || {
            let _ = c.write_all(&frame(STDIN, &big));
            c
        });
        // The pipe holds 64 KiB: the rest waits in the attach point, service() returns.
        for _ in 0..100 {
            ap.service();
            if ap.pending.len() + 64 * 1024 >= 300 * 1024 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!ap.pending.is_empty());
        let _c = writer.join().unwrap();
        // Once the container reads, the rest follows.
        // SAFETY: r is the pipe's read end, owned here.
        let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(r) };
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while got < 300 * 1024 {
            ap.service();
            got += f.read(&mut buf).unwrap();
        }
        assert_eq!(got, 300 * 1024);
    }
}
