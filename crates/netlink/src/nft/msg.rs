//! nf_tables netlink messages, encoded by hand (see the proxy's README: no permissive pure-Rust
//! library covers nf_tables). Only what rktup emits (the service proxy, kubenet's hostPorts and
//! masquerade, the local provider's node rules): tables, chains, rules made of the expressions
//! in [`Expr`], sets and verdict maps with their elements, all inside one
//! NFNL_MSG_BATCH_BEGIN … END transaction. Constants are the kernel's uapi
//! (`linux/netfilter/nf_tables.h`, `linux/netfilter/nfnetlink.h`).

pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub const NFNL_MSG_BATCH_END: u16 = 0x11;

pub const NFT_MSG_NEWTABLE: u16 = 0;
pub const NFT_MSG_GETTABLE: u16 = 1;
pub const NFT_MSG_DELTABLE: u16 = 2;
pub const NFT_MSG_NEWCHAIN: u16 = 3;
pub const NFT_MSG_GETCHAIN: u16 = 4;
pub const NFT_MSG_DELCHAIN: u16 = 5;
pub const NFT_MSG_NEWRULE: u16 = 6;
pub const NFT_MSG_GETRULE: u16 = 7;
pub const NFT_MSG_DELRULE: u16 = 8;
pub const NFT_MSG_NEWSET: u16 = 9;
pub const NFT_MSG_GETSET: u16 = 10;
pub const NFT_MSG_DELSET: u16 = 11;
pub const NFT_MSG_NEWSETELEM: u16 = 12;
pub const NFT_MSG_DELSETELEM: u16 = 14;
pub const NFT_MSG_GETGEN: u16 = 16;

pub const NFPROTO_INET: u8 = 1;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;

pub const NLM_F_REQUEST: u16 = 1;
pub const NLM_F_ACK: u16 = 4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;

// Registers: 32-bit registers 8.. so concatenated keys sit in consecutive ones.
pub const REG_VERDICT: u32 = 0;
pub const REG32_0: u32 = 8;

pub const NF_DROP: i32 = 0;
pub const NF_ACCEPT: i32 = 1;
pub const NFT_RETURN: i32 = -5;
pub const NFT_JUMP: i32 = -3;
pub const NFT_GOTO: i32 = -4;

pub const SET_CONSTANT: u32 = 0x2;
pub const SET_MAP: u32 = 0x8;
pub const SET_TIMEOUT: u32 = 0x10;
pub const SET_EVAL: u32 = 0x20;
pub const NFT_DATA_VERDICT: u32 = 0xffff_ff00;

/// Netfilter hooks of the inet family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Prerouting = 0,
    Input = 1,
    Forward = 2,
    Output = 3,
    Postrouting = 4,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaKey {
    Mark = 3,
    IifName = 6,
    OifName = 7,
    NfProto = 15,
    L4Proto = 16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
}

/// The expressions the proxy's rules are made of, one per kernel `nft_expr_type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    Meta {
        key: MetaKey,
        dreg: u32,
    },
    MetaSet {
        key: MetaKey,
        sreg: u32,
    },
    /// base 1 = network header, 2 = transport header
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Cmp {
        sreg: u32,
        op: CmpOp,
        data: Vec<u8>,
    },
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Immediate {
        dreg: u32,
        data: Vec<u8>,
    },
    Verdict(Verdict),
    /// `dreg: Some(REG_VERDICT)` makes it a verdict-map lookup.
    Lookup {
        set: String,
        sreg: u32,
        dreg: Option<u32>,
        invert: bool,
    },
    NumgenRandom {
        dreg: u32,
        modulus: u32,
    },
    /// DNAT to the address in `reg_addr` (4 bytes for `NFPROTO_IPV4`, 16 for `NFPROTO_IPV6`)
    /// and the port in `reg_port`.
    Dnat {
        family: u8,
        reg_addr: u32,
        reg_port: u32,
    },
    Masquerade {
        fully_random: bool,
    },
    /// conntrack state into `dreg`
    CtState {
        dreg: u32,
    },
    /// type 0 = ICMP unreachable (ipv4 only), 1 = TCP RST, 2 = ICMPx unreachable
    Reject {
        kind: u32,
        code: u8,
    },
    /// `fib saddr type` (address type of the source) into `dreg`
    FibSaddrType {
        dreg: u32,
    },
    /// `fib daddr type` (address type of the destination) into `dreg`
    FibDaddrType {
        dreg: u32,
    },
    /// conntrack status bits into `dreg`
    CtStatus {
        dreg: u32,
    },
    DynsetUpdate {
        set: String,
        sreg: u32,
        timeout_ms: Option<u64>,
    },
    /// verdict-map lookup in an anonymous set created in the same batch (by its id)
    AnonLookup {
        name: String,
        id: u32,
        sreg: u32,
    },
}

/// A netlink attribute writer into one growing buffer.
#[derive(Default)]
pub struct Buf {
    pub b: Vec<u8>,
}

impl Buf {
    fn pad(&mut self) {
        while self.b.len() & 3 != 0 {
            self.b.push(0);
        }
    }
    pub fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.b.extend_from_slice(&(len as u16).to_ne_bytes());
        self.b.extend_from_slice(&ty.to_ne_bytes());
        self.b.extend_from_slice(data);
        self.pad();
    }
    pub fn str(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(ty, &v);
    }
    pub fn u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }
    pub fn u64(&mut self, ty: u16, v: u64) {
        self.attr(ty, &v.to_be_bytes());
    }
    /// A u32 in host byte order (rtnetlink's attributes; nf_tables' are big-endian).
    pub fn u32_ne(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_ne_bytes());
    }
    pub fn nest(&mut self, ty: u16, f: impl FnOnce(&mut Buf)) {
        let start = self.b.len();
        self.b.extend_from_slice(&[0, 0]);
        self.b.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        f(self);
        let len = (self.b.len() - start) as u16;
        self.b[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

/// One batch: messages appended between BEGIN and END, sent in one sendmsg so the kernel
/// commits all of it or nothing.
pub struct Batch {
    pub buf: Buf,
    seq: u32,
    /// where the last real message starts, so `finish` can ask for its ACK
    last: Option<usize>,
    pub messages: usize,
}

impl Batch {
    pub fn new(first_seq: u32) -> Batch {
        let mut b = Batch::empty(first_seq);
        b.header(NFNL_MSG_BATCH_BEGIN, 0, 0, |_| {});
        b
    }

    fn header(&mut self, ty: u16, flags: u16, family: u8, body: impl FnOnce(&mut Buf)) -> usize {
        let start = self.buf.b.len();
        let b = &mut self.buf;
        b.b.extend_from_slice(&[0; 4]); // len
        b.b.extend_from_slice(&ty.to_ne_bytes());
        b.b.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        b.b.extend_from_slice(&self.seq.to_ne_bytes());
        b.b.extend_from_slice(&0u32.to_ne_bytes()); // pid
                                                    // nfgenmsg: family, version 0, res_id (big endian; the subsystem for batch messages)
        b.b.push(family);
        b.b.push(0);
        let res = if ty == NFNL_MSG_BATCH_BEGIN || ty == NFNL_MSG_BATCH_END {
            NFNL_SUBSYS_NFTABLES
        } else {
            0
        };
        b.b.extend_from_slice(&res.to_be_bytes());
        body(b);
        let len = (b.b.len() - start) as u32;
        b.b[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        self.seq = self.seq.wrapping_add(1);
        start
    }

    fn msg(&mut self, ty: u16, flags: u16, body: impl FnOnce(&mut Buf)) {
        let start = self.header((NFNL_SUBSYS_NFTABLES << 8) | ty, flags, NFPROTO_INET, body);
        self.last = Some(start);
        self.messages += 1;
    }

    /// Closes the batch; returns the bytes and the sequence number whose ACK ends the exchange.
    pub fn finish(mut self) -> (Vec<u8>, Option<u32>) {
        let mut ack_seq = None;
        if let Some(start) = self.last {
            let flags_at = start + 6;
            let f =
                u16::from_ne_bytes([self.buf.b[flags_at], self.buf.b[flags_at + 1]]) | NLM_F_ACK;
            self.buf.b[flags_at..flags_at + 2].copy_from_slice(&f.to_ne_bytes());
            let seq_at = start + 8;
            let mut s = [0u8; 4];
            s.copy_from_slice(&self.buf.b[seq_at..seq_at + 4]);
            ack_seq = Some(u32::from_ne_bytes(s));
        }
        self.header(NFNL_MSG_BATCH_END, 0, 0, |_| {});
        (self.buf.b, ack_seq)
    }

    /// Creates the table if missing (no NLM_F_EXCL), so a DELTABLE after it cannot fail.
    pub fn add_table(&mut self, table: &str) {
        self.msg(NFT_MSG_NEWTABLE, NLM_F_CREATE, |b| b.str(1, table));
    }
    pub fn del_table(&mut self, table: &str) {
        self.msg(NFT_MSG_DELTABLE, 0, |b| b.str(1, table));
    }

    pub fn add_chain(&mut self, table: &str, name: &str, base: Option<(&str, Hook, i32)>) {
        self.msg(NFT_MSG_NEWCHAIN, NLM_F_CREATE, |b| {
            b.str(1, table);
            b.str(3, name);
            if let Some((ty, hook, prio)) = base {
                b.nest(4, |h| {
                    h.u32(1, hook as u32);
                    h.u32(2, prio as u32);
                });
                b.u32(5, NF_ACCEPT as u32);
                b.str(7, ty);
            }
        });
    }
    pub fn del_chain(&mut self, table: &str, name: &str) {
        self.msg(NFT_MSG_DELCHAIN, 0, |b| {
            b.str(1, table);
            b.str(3, name);
        });
    }
    /// DELRULE without a handle: flushes the chain.
    pub fn flush_chain(&mut self, table: &str, name: &str) {
        self.msg(NFT_MSG_DELRULE, 0, |b| {
            b.str(1, table);
            b.str(2, name);
        });
    }

    pub fn add_rule(&mut self, table: &str, chain: &str, exprs: &[Expr]) {
        self.msg(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | 0x800, /* NLM_F_APPEND */
            |b| {
                b.str(1, table);
                b.str(2, chain);
                b.nest(4, |l| {
                    for e in exprs {
                        l.nest(1, |x| encode_expr(x, e));
                    }
                });
            },
        );
    }

    pub fn add_set(&mut self, table: &str, set: &SetSpec, id: u32) {
        self.msg(NFT_MSG_NEWSET, NLM_F_CREATE, |b| {
            b.str(1, table);
            b.str(2, &set.name);
            b.u32(3, set.flags);
            b.u32(4, set.key_type);
            b.u32(5, set.key_len);
            if set.flags & SET_MAP != 0 {
                b.u32(6, NFT_DATA_VERDICT);
            }
            b.u32(10, id);
            if let Some(t) = set.timeout_ms {
                b.u64(11, t);
            }
        });
    }
    /// An anonymous set: the kernel picks its name from the `%d` pattern; it is found by `id`.
    pub fn add_set_anon(&mut self, table: &str, set: &SetSpec, id: u32) {
        let mut s = set.clone();
        s.name = "__map%d".into();
        self.add_set(table, &s, id);
    }
    pub fn add_elements_by_id(
        &mut self,
        table: &str,
        _name: &str,
        id: u32,
        elems: &[(Vec<u8>, Option<Verdict>)],
    ) {
        self.elements(table, "__map%d", Some(id), elems);
    }
    pub fn del_set(&mut self, table: &str, name: &str) {
        self.msg(NFT_MSG_DELSET, 0, |b| {
            b.str(1, table);
            b.str(2, name);
        });
    }
    /// DELSETELEM without elements: flushes the set.
    pub fn flush_set(&mut self, table: &str, name: &str) {
        self.msg(NFT_MSG_DELSETELEM, 0, |b| {
            b.str(1, table);
            b.str(2, name);
        });
    }
    /// Deletes the elements with these keys (an absent key fails the batch with ENOENT).
    pub fn del_elements(&mut self, table: &str, set: &str, keys: &[Vec<u8>]) {
        for chunk in keys.chunks(256) {
            self.msg(NFT_MSG_DELSETELEM, 0, |b| {
                b.str(1, table);
                b.str(2, set);
                b.nest(3, |l| {
                    for key in chunk {
                        l.nest(1, |e| e.nest(1, |k| k.attr(1, key)));
                    }
                });
            });
        }
    }
    pub fn add_elements(&mut self, table: &str, set: &str, elems: &[(Vec<u8>, Option<Verdict>)]) {
        self.elements(table, set, None, elems);
    }
    /// Elements, chunked so no single message nears netlink's 64 KiB attribute length limit;
    /// with `id`, of the set created by id in this batch.
    fn elements(
        &mut self,
        table: &str,
        set: &str,
        id: Option<u32>,
        elems: &[(Vec<u8>, Option<Verdict>)],
    ) {
        for chunk in elems.chunks(256) {
            self.msg(NFT_MSG_NEWSETELEM, NLM_F_CREATE, |b| {
                b.str(1, table);
                b.str(2, set);
                b.nest(3, |l| {
                    for (key, data) in chunk {
                        l.nest(1, |e| {
                            e.nest(1, |k| k.attr(1, key));
                            if let Some(v) = data {
                                e.nest(2, |d| d.nest(2, |vb| encode_verdict(vb, v)));
                            }
                        });
                    }
                });
                if let Some(id) = id {
                    b.u32(4, id);
                }
            });
        }
    }

    /// A request to another netfilter subsystem (ctnetlink) for `family`.
    pub fn request_subsys(
        seq: u32,
        subsys: u16,
        ty: u16,
        flags: u16,
        family: u8,
        body: impl FnOnce(&mut Buf),
    ) -> Vec<u8> {
        let mut b = Batch::empty(seq);
        b.header((subsys << 8) | ty, flags | NLM_F_ACK, family, body);
        b.buf.b
    }

    fn empty(seq: u32) -> Batch {
        Batch {
            buf: Buf::default(),
            seq,
            last: None,
            messages: 0,
        }
    }

    /// A dump request (GETTABLE/GETRULE …) outside any batch.
    pub fn request(seq: u32, ty: u16, flags: u16, body: impl FnOnce(&mut Buf)) -> Vec<u8> {
        Batch::request_subsys(seq, NFNL_SUBSYS_NFTABLES, ty, flags, NFPROTO_INET, body)
    }
}

/// A set or map as the kernel needs to create it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetSpec {
    pub name: String,
    pub flags: u32,
    /// nft's type id (for `nft list`; the kernel only keeps it)
    pub key_type: u32,
    pub key_len: u32,
    pub timeout_ms: Option<u64>,
}

fn encode_verdict(b: &mut Buf, v: &Verdict) {
    let (code, chain) = match v {
        Verdict::Accept => (NF_ACCEPT, None),
        Verdict::Drop => (NF_DROP, None),
        Verdict::Return => (NFT_RETURN, None),
        Verdict::Jump(c) => (NFT_JUMP, Some(c)),
        Verdict::Goto(c) => (NFT_GOTO, Some(c)),
    };
    b.u32(1, code as u32);
    if let Some(c) = chain {
        b.str(2, c);
    }
}

fn encode_expr(x: &mut Buf, e: &Expr) {
    let name = match e {
        Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
        Expr::Payload { .. } => "payload",
        Expr::Cmp { .. } => "cmp",
        Expr::Bitwise { .. } => "bitwise",
        Expr::Immediate { .. } | Expr::Verdict(_) => "immediate",
        Expr::Lookup { .. } | Expr::AnonLookup { .. } => "lookup",
        Expr::NumgenRandom { .. } => "numgen",
        Expr::Dnat { .. } => "nat",
        Expr::Masquerade { .. } => "masq",
        Expr::CtState { .. } | Expr::CtStatus { .. } => "ct",
        Expr::Reject { .. } => "reject",
        Expr::FibSaddrType { .. } | Expr::FibDaddrType { .. } => "fib",
        Expr::DynsetUpdate { .. } => "dynset",
    };
    x.str(1, name);
    x.nest(2, |d| match e {
        Expr::Meta { key, dreg } => {
            d.u32(1, *dreg);
            d.u32(2, *key as u32);
        }
        Expr::MetaSet { key, sreg } => {
            d.u32(2, *key as u32);
            d.u32(3, *sreg);
        }
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => {
            d.u32(1, *dreg);
            d.u32(2, *base);
            d.u32(3, *offset);
            d.u32(4, *len);
        }
        Expr::Cmp { sreg, op, data } => {
            d.u32(1, *sreg);
            d.u32(2, *op as u32);
            d.nest(3, |v| v.attr(1, data));
        }
        Expr::Bitwise {
            sreg,
            dreg,
            mask,
            xor,
        } => {
            d.u32(1, *sreg);
            d.u32(2, *dreg);
            d.u32(3, mask.len() as u32);
            d.nest(4, |v| v.attr(1, mask));
            d.nest(5, |v| v.attr(1, xor));
        }
        Expr::Immediate { dreg, data } => {
            d.u32(1, *dreg);
            d.nest(2, |v| v.attr(1, data));
        }
        Expr::Verdict(v) => {
            d.u32(1, REG_VERDICT);
            d.nest(2, |dd| dd.nest(2, |vb| encode_verdict(vb, v)));
        }
        Expr::Lookup {
            set,
            sreg,
            dreg,
            invert,
        } => {
            d.str(1, set);
            d.u32(2, *sreg);
            if let Some(r) = dreg {
                d.u32(3, *r);
            }
            if *invert {
                d.u32(5, 1);
            }
        }
        Expr::AnonLookup { name, id, sreg } => {
            d.str(1, name);
            d.u32(2, *sreg);
            d.u32(3, REG_VERDICT);
            d.u32(4, *id);
        }
        Expr::NumgenRandom { dreg, modulus } => {
            d.u32(1, *dreg);
            d.u32(2, *modulus);
            d.u32(3, 1);
            d.u32(4, 0);
        }
        Expr::Dnat {
            family,
            reg_addr,
            reg_port,
        } => {
            d.u32(1, 1); // NFT_NAT_DNAT
            d.u32(2, u32::from(*family));
            d.u32(3, *reg_addr);
            d.u32(5, *reg_port);
        }
        Expr::Masquerade { fully_random } => {
            if *fully_random {
                d.u32(1, 0x10); // NF_NAT_RANGE_PROTO_RANDOM_FULLY
            }
        }
        Expr::CtState { dreg } => {
            d.u32(1, *dreg);
            d.u32(2, 0); // NFT_CT_STATE
        }
        Expr::CtStatus { dreg } => {
            d.u32(1, *dreg);
            d.u32(2, 2); // NFT_CT_STATUS
        }
        Expr::FibDaddrType { dreg } => {
            d.u32(1, *dreg);
            d.u32(2, 3); // NFT_FIB_RESULT_ADDRTYPE
            d.u32(3, 2); // NFTA_FIB_F_DADDR
        }
        Expr::Reject { kind, code } => {
            d.u32(1, *kind);
            d.attr(2, &[*code]);
        }
        Expr::FibSaddrType { dreg } => {
            d.u32(1, *dreg);
            d.u32(2, 3); // NFT_FIB_RESULT_ADDRTYPE
            d.u32(3, 1); // NFTA_FIB_F_SADDR
        }
        Expr::DynsetUpdate {
            set,
            sreg,
            timeout_ms,
        } => {
            d.str(1, set);
            d.u32(3, 1); // NFT_DYNSET_OP_UPDATE
            d.u32(4, *sreg);
            if let Some(t) = timeout_ms {
                d.u64(6, *t);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested() {
        let mut b = Buf::default();
        b.str(1, "ab");
        assert_eq!(b.b, vec![7, 0, 1, 0, b'a', b'b', 0, 0]);
        let mut n = Buf::default();
        n.nest(4, |x| x.u32(1, 7));
        assert_eq!(n.b.len(), 12);
        assert_eq!(u16::from_ne_bytes([n.b[2], n.b[3]]), 4 | NLA_F_NESTED);
        assert_eq!(&n.b[8..12], &7u32.to_be_bytes());
    }

    #[test]
    fn batch_acks_only_its_last_message() {
        let mut b = Batch::new(100);
        b.add_table("t");
        b.del_table("t");
        let (bytes, ack) = b.finish();
        assert_eq!(ack, Some(102));
        // four messages: BEGIN, NEWTABLE, DELTABLE (+ACK), END
        let mut off = 0;
        let mut flags = vec![];
        while off < bytes.len() {
            let len = u32::from_ne_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
            flags.push(u16::from_ne_bytes([bytes[off + 6], bytes[off + 7]]));
            off += len;
        }
        assert_eq!(flags.len(), 4);
        assert_eq!(flags[1] & NLM_F_ACK, 0);
        assert_eq!(flags[2] & NLM_F_ACK, NLM_F_ACK);
    }
}
