//! The one netlink socket: open for a protocol (NETLINK_NETFILTER for nf_tables and ctnetlink,
//! NETLINK_ROUTE for links, addresses and routes), send a request, collect its replies. A socket
//! belongs to the network namespace of the thread that opened it, so the callers open one per
//! namespace (on a thread that entered it, see [`crate::netns::run_in`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 1;
pub const NLM_F_ACK: u16 = 4;
pub const NLM_F_DUMP: u16 = 0x300;
/// set on dump replies when the dumped state changed while the dump was running
const NLM_F_DUMP_INTR: u16 = 0x10;

pub struct NlSocket {
    fd: OwnedFd,
    seq: u32,
}

impl NlSocket {
    /// A socket of `protocol` with `buffer` bytes of send and receive buffer (forced past
    /// wmem_max when we may), a 10 s receive timeout, bound to a kernel-chosen port id.
    pub fn open(protocol: libc::c_int, buffer: libc::c_int) -> io::Result<NlSocket> {
        // SAFETY: plain socket(2); the fd is owned right after.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        for (opt, force) in [
            (libc::SO_SNDBUF, libc::SO_SNDBUFFORCE),
            (libc::SO_RCVBUF, libc::SO_RCVBUFFORCE),
        ] {
            // SAFETY: setsockopt with a pointer to a local int of the right size.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    force,
                    &buffer as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
            if r < 0 {
                // SAFETY: as above.
                unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        opt,
                        &buffer as *const _ as *const libc::c_void,
                        std::mem::size_of::<libc::c_int>() as u32,
                    )
                };
            }
        }
        // A reply the kernel never sends must not hang the caller forever.
        let tv = libc::timeval {
            tv_sec: 10,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a pointer to a local timeval of the right size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        // SAFETY: zeroed sockaddr_nl is the "kernel, any pid" address; bind assigns our port id.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: addr is a valid sockaddr_nl for the call's duration.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(NlSocket { fd, seq })
    }

    /// Reserves `n` consecutive sequence numbers; returns the first.
    pub fn next_seq(&mut self, n: u32) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(n);
        s
    }

    pub fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_nl addresses the kernel.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: bytes outlives the call; sendto copies it.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr() as *const libc::c_void,
                bytes.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn recv(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        buf.resize(1 << 20, 0);
        // SAFETY: buf is a valid writable buffer of its length.
        let r = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }

    /// Sends one request (sequence number `seq`) and collects its replies' payloads, each
    /// without its first `skip` bytes (the family header the caller does not need). `Ok(None)`
    /// when a dump was interrupted by a change and must be redone; `Ok(Some(Err(errno)))` when
    /// the kernel refused the request. A non-dump request must carry NLM_F_ACK.
    pub fn exchange(
        &mut self,
        seq: u32,
        dump: bool,
        req: &[u8],
        skip: usize,
    ) -> io::Result<Option<Result<Vec<Vec<u8>>, i32>>> {
        self.send(req)?;
        let mut out = Vec::new();
        let mut buf = Vec::new();
        let mut intr = false;
        loop {
            let n = self.recv(&mut buf)?;
            for (mty, flags, mseq, payload) in messages(&buf[..n]) {
                if mseq != seq {
                    continue;
                }
                intr |= flags & NLM_F_DUMP_INTR != 0;
                match mty {
                    NLMSG_DONE => {
                        // DONE carries the dump's own result: a dump cut short is not a result
                        let errno = errno_of(payload);
                        if errno == -libc::EINTR || errno == -libc::EAGAIN || intr {
                            return Ok(None);
                        }
                        if errno != 0 {
                            return Ok(Some(Err(-errno)));
                        }
                        return Ok(Some(Ok(out)));
                    }
                    NLMSG_ERROR => {
                        let errno = errno_of(payload);
                        if errno != 0 {
                            return Ok(Some(Err(-errno)));
                        }
                        if !dump {
                            return Ok(Some(Ok(out)));
                        }
                    }
                    _ => out.push(payload.get(skip..).unwrap_or(&[]).to_vec()),
                }
            }
        }
    }

    /// [`NlSocket::exchange`], redone while a dump is interrupted; the kernel's refusal as an
    /// `io::Error` of its errno.
    pub fn request(
        &mut self,
        dump: bool,
        skip: usize,
        build: impl Fn(u32) -> Vec<u8>,
    ) -> io::Result<Vec<Vec<u8>>> {
        loop {
            let seq = self.next_seq(1);
            let req = build(seq);
            match self.exchange(seq, dump, &req, skip)? {
                Some(Ok(r)) => return Ok(r),
                Some(Err(errno)) => return Err(io::Error::from_raw_os_error(errno)),
                None => continue,
            }
        }
    }
}

/// The (negative) errno at the start of an NLMSG_ERROR / NLMSG_DONE payload.
pub fn errno_of(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map(|e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
        .unwrap_or(0)
}

/// Splits a receive buffer into (type, flags, seq, payload after the nlmsghdr).
pub fn messages(mut buf: &[u8]) -> Vec<(u16, u16, u32, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        let flags = u16::from_ne_bytes([buf[6], buf[7]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        out.push((ty, flags, seq, &buf[16..len]));
        let adv = (len + 3) & !3;
        buf = buf.get(adv..).unwrap_or(&[]);
    }
    out
}

/// Top-level attributes of a payload: (type without the nested/byte-order bits, value).
pub fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, &b[4..len]));
        b = b.get((len + 3) & !3..).unwrap_or(&[]);
    }
    out
}

/// A netlink message under construction: the nlmsghdr, a family header, then attributes
/// written with [`crate::nft::msg::Buf`]'s writer.
pub fn message(
    ty: u16,
    flags: u16,
    seq: u32,
    header: &[u8],
    body: impl FnOnce(&mut crate::nft::msg::Buf),
) -> Vec<u8> {
    let mut b = crate::nft::msg::Buf::default();
    b.b.extend_from_slice(&[0; 4]);
    b.b.extend_from_slice(&ty.to_ne_bytes());
    b.b.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    b.b.extend_from_slice(&seq.to_ne_bytes());
    b.b.extend_from_slice(&0u32.to_ne_bytes());
    b.b.extend_from_slice(header);
    while b.b.len() & 3 != 0 {
        b.b.push(0);
    }
    body(&mut b);
    let len = b.b.len() as u32;
    b.b[0..4].copy_from_slice(&len.to_ne_bytes());
    b.b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_framed_with_its_length_and_split_back() {
        let m = message(18, NLM_F_ACK, 7, &[1, 2, 3, 4], |b| b.str(3, "lo"));
        assert_eq!(m.len(), 16 + 4 + 8);
        let parsed = messages(&m);
        assert_eq!(parsed.len(), 1);
        let (ty, flags, seq, payload) = parsed[0];
        assert_eq!((ty, flags, seq), (18, NLM_F_ACK | NLM_F_REQUEST, 7));
        assert_eq!(attrs(&payload[4..]), vec![(3, &b"lo\0"[..])]);
    }
}
