//! The NETLINK_NETFILTER socket: sends one batch per `sendmsg` (the kernel only treats a batch
//! as one transaction within one message) and reads the errors/ACK back. The socket belongs to
//! the network namespace of the thread that opened it.

use std::io;

use super::msg::{
    Batch, NFT_MSG_GETCHAIN, NFT_MSG_GETGEN, NFT_MSG_GETRULE, NFT_MSG_GETSET, NFT_MSG_GETTABLE,
    NLM_F_DUMP,
};
pub use crate::socket::attrs;
use crate::socket::{messages, NlSocket, NLMSG_ERROR};

pub struct Socket {
    nl: NlSocket,
}

/// What the kernel answered to one message of a batch (errno as a positive number).
#[derive(Debug)]
pub struct Nack {
    pub errno: i32,
    /// index of the failing message in the batch (BEGIN = 0)
    pub index: u32,
}

impl Socket {
    pub fn open() -> io::Result<Socket> {
        // A full resync at 10,000 endpoints is several MB in one message: the batch must fit the
        // send buffer whole.
        Ok(Socket {
            nl: NlSocket::open(libc::NETLINK_NETFILTER, 64 << 20)?,
        })
    }

    pub fn next_seq(&mut self, n: u32) -> u32 {
        self.nl.next_seq(n)
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        self.nl.send(bytes)
    }

    fn recv(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.nl.recv(buf)
    }

    /// Sends a batch and waits for the kernel's verdict. `Ok(Err(nack))` when the kernel
    /// refused it (the transaction was then rolled back whole).
    pub fn commit(&mut self, batch: Batch, first_seq: u32) -> io::Result<Result<(), Nack>> {
        let (bytes, ack_seq) = batch.finish();
        let Some(ack_seq) = ack_seq else {
            return Ok(Ok(()));
        };
        self.send(&bytes)?;
        let mut buf = Vec::new();
        let mut first_err: Option<Nack> = None;
        loop {
            let n = match self.recv(&mut buf) {
                Ok(n) => n,
                // the error was reported; the kernel may skip the ACK of an aborted batch
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && first_err.is_some() => {
                    return Ok(Err(first_err.unwrap_or(Nack { errno: 0, index: 0 })));
                }
                Err(e) => return Err(e),
            };
            for (ty, _, seq, payload) in messages(&buf[..n]) {
                if ty != NLMSG_ERROR {
                    continue;
                }
                let errno = payload
                    .get(..4)
                    .map(|e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
                    .unwrap_or(0);
                if errno != 0 && first_err.is_none() {
                    first_err = Some(Nack {
                        errno: -errno,
                        index: seq.wrapping_sub(first_seq),
                    });
                }
                if seq == ack_seq {
                    return Ok(match first_err {
                        Some(e) => Err(e),
                        None => Ok(()),
                    });
                }
            }
        }
    }

    /// Runs a GET request (optionally a dump); returns each reply's attribute bytes, or the errno.
    /// A request to another netfilter subsystem (ctnetlink), retried like [`Socket::get`].
    pub fn get_subsys(
        &mut self,
        subsys: u16,
        ty: u16,
        family: u8,
        dump: bool,
        body: impl Fn(&mut super::msg::Buf),
    ) -> io::Result<Result<Vec<Vec<u8>>, i32>> {
        loop {
            let seq = self.next_seq(1);
            let req = Batch::request_subsys(
                seq,
                subsys,
                ty,
                if dump { NLM_F_DUMP } else { 0 },
                family,
                &body,
            );
            if let Some(r) = self.exchange(seq, dump, &req)? {
                return Ok(r);
            }
        }
    }

    /// A dump interrupted by a commit is retried, so the result is one generation's state.
    pub fn get(
        &mut self,
        ty: u16,
        dump: bool,
        body: impl Fn(&mut super::msg::Buf),
    ) -> io::Result<Result<Vec<Vec<u8>>, i32>> {
        loop {
            if let Some(r) = self.get_once(ty, dump, &body)? {
                return Ok(r);
            }
        }
    }

    fn get_once(
        &mut self,
        ty: u16,
        dump: bool,
        body: impl Fn(&mut super::msg::Buf),
    ) -> io::Result<Option<Result<Vec<Vec<u8>>, i32>>> {
        let seq = self.next_seq(1);
        let req = Batch::request(seq, ty, if dump { NLM_F_DUMP } else { 0 }, body);
        self.exchange(seq, dump, &req)
    }

    /// Sends one request and collects its replies (after the nfgenmsg); `None` when a dump
    /// must be redone.
    fn exchange(
        &mut self,
        seq: u32,
        dump: bool,
        req: &[u8],
    ) -> io::Result<Option<Result<Vec<Vec<u8>>, i32>>> {
        self.nl.exchange(seq, dump, req, 4)
    }

    pub fn table_exists(&mut self, table: &str) -> io::Result<bool> {
        match self.get(NFT_MSG_GETTABLE, false, |b| b.str(1, table))? {
            Ok(_) => Ok(true),
            Err(e) if e == libc::ENOENT => Ok(false),
            Err(e) => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// The ruleset generation: every commit bumps it.
    pub fn generation(&mut self) -> io::Result<u32> {
        let replies = self
            .get(NFT_MSG_GETGEN, false, |_| {})?
            .map_err(io::Error::from_raw_os_error)?;
        for r in &replies {
            for (ty, v) in attrs(r) {
                if ty == 1 && v.len() >= 4 {
                    return Ok(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no generation id in NFT_MSG_GETGEN reply",
        ))
    }

    /// The chain of each rule in `table`, from one generation. `nft list` checks the generation
    /// before and after its dumps; that is not quite enough, because the kernel bumps the
    /// generation at the start of a commit and unlinks deleted objects after it, so a dump
    /// inside that window sees a moving list under an unchanged generation. So: two dumps that
    /// agree, with the same generation around both. `None`: no such table.
    pub fn rules(&mut self, table: &str) -> io::Result<Option<Vec<String>>> {
        loop {
            let before = self.generation()?;
            let first = self.rules_once(table)?;
            let second = self.rules_once(table)?;
            if first == second && self.generation()? == before {
                return Ok(first);
            }
        }
    }

    fn rules_once(&mut self, table: &str) -> io::Result<Option<Vec<String>>> {
        // a rule dump filtered on a missing table is just empty: ask for the table first
        if !self.table_exists(table)? {
            return Ok(None);
        }
        // unfiltered, matched here: the kernel's table filter stops at the first table of that
        // name in its list, which during a replace can be the one being deleted
        match self.get(NFT_MSG_GETRULE, true, |_| {})? {
            Ok(replies) => {
                let mut chains = Vec::new();
                for r in replies {
                    let (mut t, mut c) = (None, None);
                    for (ty, v) in attrs(&r) {
                        let text = || {
                            String::from_utf8_lossy(v.strip_suffix(&[0]).unwrap_or(v)).into_owned()
                        };
                        match ty {
                            1 => t = Some(text()),
                            2 => c = Some(text()),
                            _ => {}
                        }
                    }
                    if t.as_deref() == Some(table) {
                        chains.extend(c);
                    }
                }
                Ok(Some(chains))
            }
            Err(e) if e == libc::ENOENT => Ok(None),
            Err(e) => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// A chain as the kernel lists it: name and, for base chains, (type, hook number, priority).
pub type KernelChain = (String, Option<(String, u32, i32)>);

/// A named set as the kernel lists it: (name, flags, key type, key length, timeout ms).
pub type KernelSet = (String, u32, u32, u32, Option<u64>);

impl Socket {
    /// The chains and named sets of `table` from one generation; `None` if there is no table.
    pub fn objects(
        &mut self,
        table: &str,
    ) -> io::Result<Option<(Vec<KernelChain>, Vec<KernelSet>)>> {
        loop {
            let before = self.generation()?;
            if !self.table_exists(table)? {
                return Ok(None);
            }
            let chains = self
                .get(NFT_MSG_GETCHAIN, true, |_| {})?
                .map_err(io::Error::from_raw_os_error)?;
            let sets = self
                .get(NFT_MSG_GETSET, true, |_| {})?
                .map_err(io::Error::from_raw_os_error)?;
            if self.generation()? != before {
                continue;
            }
            let text =
                |v: &[u8]| String::from_utf8_lossy(v.strip_suffix(&[0]).unwrap_or(v)).into_owned();
            let be32 = |v: &[u8]| {
                v.get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0)
            };
            let mut out_c = Vec::new();
            for r in &chains {
                let (mut t, mut name, mut hook, mut ty) = (None, None, None, None);
                for (k, v) in attrs(r) {
                    match k {
                        1 => t = Some(text(v)),
                        3 => name = Some(text(v)),
                        4 => {
                            let (mut num, mut prio) = (0, 0);
                            for (hk, hv) in attrs(v) {
                                match hk {
                                    1 => num = be32(hv),
                                    2 => prio = be32(hv) as i32,
                                    _ => {}
                                }
                            }
                            hook = Some((num, prio));
                        }
                        7 => ty = Some(text(v)),
                        _ => {}
                    }
                }
                if t.as_deref() == Some(table) {
                    if let Some(n) = name {
                        out_c.push((n, hook.map(|(h, p)| (ty.unwrap_or_default(), h, p))));
                    }
                }
            }
            let mut out_s = Vec::new();
            for r in &sets {
                let (mut t, mut name, mut flags, mut kt, mut kl, mut timeout) =
                    (None, None, 0, 0, 0, None);
                for (k, v) in attrs(r) {
                    match k {
                        1 => t = Some(text(v)),
                        2 => name = Some(text(v)),
                        3 => flags = be32(v),
                        4 => kt = be32(v),
                        5 => kl = be32(v),
                        11 if v.len() >= 8 => {
                            let mut b = [0u8; 8];
                            b.copy_from_slice(&v[..8]);
                            timeout = Some(u64::from_be_bytes(b));
                        }
                        _ => {}
                    }
                }
                // anonymous sets belong to their rules and go with them
                if t.as_deref() == Some(table) && flags & 1 == 0 {
                    if let Some(n) = name {
                        out_s.push((n, flags, kt, kl, timeout));
                    }
                }
            }
            return Ok(Some((out_c, out_s)));
        }
    }
}
