//! Puts a [`Ruleset`] into the kernel, always as one nf_tables transaction. The first time (and
//! after any failure) every chain and static set the kernel lists for the table is flushed and
//! refilled and what is not wanted is deleted (only a table whose base chains or set kinds differ
//! is replaced whole: create-if-missing, delete, create, fill); after that only what changed is sent — chains flushed and refilled, maps flushed and refilled, new
//! objects added, gone ones deleted — so an endpoint change costs a few messages, not the whole
//! table, and affinity sets that did not change keep their entries (as kube-proxy's partial sync).

use crate::model::{Chain, Item, Ruleset, Set};
use crate::nft::msg::{
    Batch, Expr, Hook, SetSpec, Verdict, REG32_0, SET_CONSTANT, SET_EVAL, SET_MAP,
};
use crate::nft::sock::Socket;
use crate::ProxyError;

/// The kernel side of one table, in the network namespace the programmer was created in.
pub struct Programmer {
    sock: Socket,
    table: String,
    current: Option<Ruleset>,
    /// messages in the last committed batch (for benchmarks)
    pub last_messages: usize,
    /// time spent diffing and encoding / in the kernel, for the last apply (for benchmarks)
    pub last_encode: std::time::Duration,
    pub last_commit: std::time::Duration,
}

impl Programmer {
    /// Opens the netlink socket in the calling thread's network namespace.
    pub fn new(table: &str) -> Result<Programmer, ProxyError> {
        Ok(Programmer {
            sock: Socket::open().map_err(ProxyError::Netlink)?,
            table: table.to_string(),
            current: None,
            last_messages: 0,
            last_encode: Default::default(),
            last_commit: Default::default(),
        })
    }

    /// Makes the table equal `want`, atomically (kept as the base of the next delta).
    pub fn apply(&mut self, want: Ruleset) -> Result<(), ProxyError> {
        let t0 = std::time::Instant::now();
        // Not knowing what is there (start, error), diff against what the kernel lists rather
        // than delete and recreate the table: replacing base chains is not atomic for packets
        // (a packet can pass the new nat chain before the commit and the old one after it,
        // and so get no DNAT), while flushing and refilling chains that stay is.
        let listed = if self.current.is_none() {
            self.kernel_state(&want)
        } else {
            None
        };
        let first = self.sock.next_seq(0);
        let mut b = Builder {
            batch: Batch::new(first),
            table: &self.table,
            anon: 0,
        };
        match self.current.as_ref().or(listed.as_ref()) {
            Some(cur) if !specs_changed(cur, &want) => b.diff(cur, &want),
            _ => b.full(&want),
        }
        self.last_messages = b.batch.messages;
        let n = b.batch.messages as u32 + 2;
        let _ = self.sock.next_seq(n);
        let t1 = std::time::Instant::now();
        self.last_encode = t1 - t0;
        let res = self.sock.commit(b.batch, first);
        self.last_commit = t1.elapsed();
        match res {
            Ok(Ok(())) => {
                self.current = Some(want);
                Ok(())
            }
            Ok(Err(nack)) => {
                self.current = None;
                Err(ProxyError::Rejected {
                    errno: nack.errno,
                    message: nack.index,
                    table: self.table.clone(),
                })
            }
            Err(e) => {
                self.current = None;
                Err(ProxyError::Netlink(e))
            }
        }
    }

    /// Whether the kernel still holds what was last programmed (the table exists with as many
    /// rules); if not (someone flushed or deleted it), the next apply replaces it whole.
    /// Returns false when nothing was programmed yet.
    pub fn verify(&mut self) -> Result<bool, ProxyError> {
        let Some(cur) = &self.current else {
            return Ok(false);
        };
        let want = cur.rule_count();
        let have = self.sock.rules(&self.table).map_err(ProxyError::Netlink)?;
        let ok = have.is_some_and(|r| r.len() == want);
        if !ok {
            self.current = None;
        }
        Ok(ok)
    }

    /// The table as the kernel lists it, shaped so that a diff against `want` flushes and
    /// refills every chain and static set, keeps dynamic (affinity) sets, and deletes the rest.
    /// `None`: no table, or not listable (then the table is replaced whole).
    fn kernel_state(&mut self, want: &Ruleset) -> Option<Ruleset> {
        let (chains, sets) = self.sock.objects(&self.table).ok()??;
        let mut rs = Ruleset::default();
        for (name, base) in chains {
            let base = match base {
                None => None,
                Some((ty, hook, prio)) => {
                    let ty: &'static str = match ty.as_str() {
                        "nat" => "nat",
                        "filter" => "filter",
                        _ => return None,
                    };
                    let hook = match hook {
                        0 => Hook::Prerouting,
                        1 => Hook::Input,
                        2 => Hook::Forward,
                        3 => Hook::Output,
                        4 => Hook::Postrouting,
                        _ => return None,
                    };
                    Some((ty, hook, prio))
                }
            };
            // one empty rule: never equal to a wanted chain, so it is flushed and refilled
            rs.chains.insert(
                name,
                std::sync::Arc::new(Chain {
                    base,
                    rules: vec![vec![]],
                }),
            );
        }
        for (name, flags, key_type, key_len, timeout_ms) in sets {
            let elements = if flags & SET_EVAL != 0 {
                want.sets
                    .get(&name)
                    .map(|s| s.elements.clone())
                    .unwrap_or_default()
            } else {
                vec![(vec![], None)]
            };
            let spec = SetSpec {
                name: name.clone(),
                flags,
                key_type,
                key_len,
                timeout_ms,
            };
            rs.sets.insert(name, Set { spec, elements });
        }
        Some(rs)
    }

    /// Forgets what was programmed, so the next apply replaces the table whole.
    pub fn invalidate(&mut self) {
        self.current = None;
    }

    /// Deletes the table (if present) in one transaction.
    pub fn remove(&mut self) -> Result<(), ProxyError> {
        self.current = None;
        remove_with(&mut self.sock, &self.table)
    }

    pub fn socket(&mut self) -> &mut Socket {
        &mut self.sock
    }
}

pub(crate) fn remove_with(sock: &mut Socket, table: &str) -> Result<(), ProxyError> {
    let first = sock.next_seq(0);
    let mut batch = Batch::new(first);
    batch.add_table(table);
    batch.del_table(table);
    let _ = sock.next_seq(4);
    match sock.commit(batch, first).map_err(ProxyError::Netlink)? {
        Ok(()) => Ok(()),
        Err(n) => Err(ProxyError::Rejected {
            errno: n.errno,
            message: n.index,
            table: table.to_string(),
        }),
    }
}

/// A set whose kind changed cannot be flushed in place: replace the whole table then.
fn specs_changed(cur: &Ruleset, want: &Ruleset) -> bool {
    want.sets
        .iter()
        .any(|(n, s)| cur.sets.get(n).is_some_and(|c| c.spec != s.spec))
        || want
            .chains
            .iter()
            .any(|(n, c)| cur.chains.get(n).is_some_and(|o| o.base != c.base))
}

struct Builder<'a> {
    batch: Batch,
    table: &'a str,
    anon: u32,
}

impl Builder<'_> {
    fn full(&mut self, want: &Ruleset) {
        self.batch.add_table(self.table);
        self.batch.del_table(self.table);
        self.batch.add_table(self.table);
        for (name, c) in &want.chains {
            self.batch.add_chain(self.table, name, c.base);
        }
        for s in want.sets.values() {
            self.new_set(s);
        }
        for (name, c) in &want.chains {
            self.rules(name, c);
        }
    }

    fn diff(&mut self, cur: &Ruleset, want: &Ruleset) {
        let t = self.table;
        self.batch.add_table(t);
        for (name, c) in &want.chains {
            if !cur.chains.contains_key(name) {
                self.batch.add_chain(t, name, c.base);
            }
        }
        for (name, c) in &cur.chains {
            match want.chains.get(name) {
                Some(w) if w == c => {}
                _ => self.batch.flush_chain(t, name),
            }
        }
        for (name, s) in &want.sets {
            match cur.sets.get(name) {
                None => self.new_set(s),
                Some(c) if c.elements != s.elements => {
                    self.batch.flush_set(t, name);
                    self.batch.add_elements(t, name, &s.elements);
                }
                Some(_) => {}
            }
        }
        for (name, c) in &want.chains {
            if cur.chains.get(name) != Some(c) {
                self.rules(name, c);
            }
        }
        for name in cur.sets.keys() {
            if !want.sets.contains_key(name) {
                // drop elements first: a verdict map's entries hold references to chains
                self.batch.flush_set(t, name);
                self.batch.del_set(t, name);
            }
        }
        for name in cur.chains.keys() {
            if !want.chains.contains_key(name) {
                self.batch.del_chain(t, name);
            }
        }
    }

    fn new_set(&mut self, s: &Set) {
        self.anon += 1;
        self.batch.add_set(self.table, &s.spec, self.anon);
        if !s.elements.is_empty() {
            self.batch
                .add_elements(self.table, &s.spec.name, &s.elements);
        }
    }

    fn rules(&mut self, chain: &str, c: &Chain) {
        for r in &c.rules {
            let mut exprs = Vec::with_capacity(r.len() + 2);
            for item in r {
                match item {
                    Item::E(x) => exprs.push(x.clone()),
                    Item::NumgenVmap(targets) => {
                        // an anonymous constant map bound to this rule: it goes when the rule goes
                        self.anon += 1;
                        let id = self.anon;
                        let name = format!("__map{id}");
                        let spec = SetSpec {
                            name: name.clone(),
                            flags: 0x1 | SET_CONSTANT | SET_MAP,
                            key_type: 4,
                            key_len: 4,
                            timeout_ms: None,
                        };
                        self.batch.add_set_anon(self.table, &spec, id);
                        let elems: Vec<_> = targets
                            .iter()
                            .enumerate()
                            .map(|(i, t)| {
                                (
                                    (i as u32).to_ne_bytes().to_vec(),
                                    Some(Verdict::Goto(t.clone())),
                                )
                            })
                            .collect();
                        self.batch.add_elements_by_id(self.table, &name, id, &elems);
                        exprs.push(Expr::NumgenRandom {
                            dreg: REG32_0,
                            modulus: targets.len() as u32,
                        });
                        exprs.push(Expr::AnonLookup {
                            name: "__map%d".into(),
                            id,
                            sreg: REG32_0,
                        });
                    }
                }
            }
            self.batch.add_rule(self.table, chain, &exprs);
        }
    }
}
