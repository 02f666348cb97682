//! Answering a request: the cache answers the cluster zone and the reverse names it knows;
//! everything else is relayed from upstream.
//!
//! TCP goes through hickory-server's `Server` (this module's `RequestHandler`). UDP has its own
//! receive loop ([`serve_udp`]): a query the cache answers is answered inline, without the task
//! and channel hickory's UDP path spends per query (measured in BENCHMARKS.md: cross-thread
//! wake-ups were most of the cost); only queries that need an upstream get a task.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{Name, Record, RecordType};
use hickory_server::proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cache::{Answer, Cache, Outcome};
use crate::forward::Forwarder;

/// The largest UDP answer offered to EDNS clients (the DNS flag day size; CoreDNS's too).
const EDNS_PAYLOAD: u16 = 1232;

/// The largest UDP query accepted (EDNS clients may send large ones; DNS queries are small).
const MAX_QUERY: usize = 4096;

pub(crate) struct Handler {
    cache: Arc<RwLock<Cache>>,
    forwarder: Forwarder,
}

/// A response ready to encode.
struct Reply {
    meta: Metadata,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    soa: Option<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn empty(meta: Metadata) -> Self {
        Reply {
            meta,
            answers: Vec::new(),
            authorities: Vec::new(),
            soa: None,
            additionals: Vec::new(),
        }
    }
}

/// What needs an upstream before it can be answered.
enum Pending {
    /// The whole query goes upstream.
    Forward,
    /// An ExternalName's CNAME from the cache; its target's records come from upstream.
    Chase(Box<(Metadata, Answer, Name, RecordType)>),
}

impl Handler {
    pub(crate) fn new(cache: Arc<RwLock<Cache>>, forwarder: Forwarder) -> Self {
        Handler { cache, forwarder }
    }

    /// The cache's write count (see `AnswerMemo`).
    fn generation(&self) -> u64 {
        self.cache
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .generation()
    }

    /// The reply that needs no upstream (cache answers, refusals), or what is pending.
    fn immediate(&self, request: &Request) -> Result<Reply, Pending> {
        let failed = |code| {
            let mut m = Metadata::response_from_request(&request.metadata);
            m.response_code = code;
            Reply::empty(m)
        };
        if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            return Ok(failed(ResponseCode::NotImp));
        }
        let Ok(info) = request.request_info() else {
            return Ok(failed(ResponseCode::FormErr));
        };
        let query = info.query.original();
        let qtype = query.query_type();
        // The lock is held only while the records are built, never across an await.
        let outcome = self
            .cache
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .lookup(query.name(), qtype);
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = true;
        match outcome {
            Outcome::Forward => Err(Pending::Forward),
            Outcome::Answer(mut a) => {
                meta.authoritative = true;
                meta.response_code = a.rcode;
                match a.chase.take() {
                    Some(target) => Err(Pending::Chase(Box::new((meta, a, target, qtype)))),
                    None => Ok(Reply {
                        meta,
                        answers: a.answers,
                        authorities: Vec::new(),
                        soa: a.soa,
                        additionals: a.additionals,
                    }),
                }
            }
        }
    }

    /// Completes a pending reply with the upstreams' help.
    async fn complete(&self, request: &Request, pending: Pending) -> Reply {
        match pending {
            Pending::Chase(chase) => {
                let (meta, mut a, target, qtype) = *chase;
                a.answers
                    .extend(self.forwarder.resolve(&target, qtype).await);
                Reply {
                    meta,
                    answers: a.answers,
                    authorities: Vec::new(),
                    soa: a.soa,
                    additionals: a.additionals,
                }
            }
            Pending::Forward => {
                let mut meta = Metadata::response_from_request(&request.metadata);
                meta.recursion_available = true;
                match self.forwarder.forward(request.as_slice()).await {
                    Ok(up) => {
                        meta.response_code = up.metadata.response_code;
                        meta.authoritative = up.metadata.authoritative;
                        meta.authentic_data = up.metadata.authentic_data;
                        Reply {
                            meta,
                            answers: up.answers,
                            authorities: up.authorities,
                            soa: None,
                            additionals: up.additionals,
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "forward failed");
                        meta.response_code = ResponseCode::ServFail;
                        Reply::empty(meta)
                    }
                }
            }
        }
    }

    async fn reply(&self, request: &Request) -> Reply {
        match self.immediate(request) {
            Ok(r) => r,
            Err(p) => self.complete(request, p).await,
        }
    }
}

type Records<'a> = std::slice::Iter<'a, Record>;

impl Reply {
    /// This reply as hickory's response to `request` (the UDP and TCP paths alike).
    fn response<'a>(
        &'a self,
        request: &'a Request,
        edns: Option<&'a Edns>,
    ) -> MessageResponse<'a, 'a, Records<'a>, Records<'a>, std::option::Iter<'a, Record>, Records<'a>>
    {
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = edns {
            builder.edns(e);
        }
        builder.build(
            self.meta,
            self.answers.iter(),
            self.authorities.iter(),
            self.soa.iter(),
            self.additionals.iter(),
        )
    }
}

/// Answer with EDNS when asked with it (RFC 6891), offering what the client can take.
fn edns_for(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req| {
        let mut e = Edns::new();
        e.set_max_payload(req.max_payload().clamp(512, EDNS_PAYLOAD));
        e
    })
}

/// The UDP wire form: at most what the client takes (512 without EDNS); what does not fit is
/// left out with TC set (hickory's emitter), so the client retries over TCP.
fn encode_udp(request: &Request, r: &Reply) -> Vec<u8> {
    let edns = edns_for(request);
    let resp = r.response(request, edns.as_ref());
    let mut bytes = Vec::with_capacity(512);
    let mut enc = BinEncoder::new(&mut bytes);
    enc.set_max_size(edns.as_ref().map_or(512, Edns::max_payload));
    if resp.destructive_emit(&mut enc).is_ok() {
        return bytes;
    }
    // Not encodable (a record hickory cannot write): SERVFAIL with the header only.
    let mut bytes = Vec::with_capacity(12);
    let _ = servfail_header(request).emit(&mut BinEncoder::new(&mut bytes));
    bytes
}

/// A SERVFAIL header for `request`, without records.
fn servfail_header(request: &Request) -> Header {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    Header {
        metadata,
        counts: Default::default(),
    }
}

/// A UDP receive thread's encoded answers to the queries it has seen, by the query's bytes
/// after its ID: an answer from the cache depends on nothing else (the records are not
/// shuffled, TTLs are fixed), so a repeated query is answered by copying bytes and setting the
/// ID, without parsing or building records. Dropped whole when the cache changes or it is full.
struct AnswerMemo {
    generation: u64,
    answers: std::collections::HashMap<Vec<u8>, Vec<u8>>,
}

/// How many answers a receive thread keeps.
const MEMO_ENTRIES: usize = 10_000;

impl AnswerMemo {
    /// The answer to `query` (a whole message) with its ID, if known at `generation`.
    fn answer(&mut self, generation: u64, query: &[u8]) -> Option<Vec<u8>> {
        if self.generation != generation {
            self.answers.clear();
            self.generation = generation;
            return None;
        }
        let mut a = self.answers.get(query.get(2..)?)?.clone();
        a[..2].copy_from_slice(&query[..2]);
        Some(a)
    }

    fn keep(&mut self, generation: u64, query: &[u8], answer: &[u8]) {
        if self.generation != generation || query.len() < 12 || answer.len() < 12 {
            return;
        }
        if self.answers.len() >= MEMO_ENTRIES {
            self.answers.clear();
        }
        self.answers.insert(query[2..].to_vec(), answer.to_vec());
    }
}

/// Serves UDP on `sock` (blocking, with a read timeout) on this thread until `stop` is set.
/// A blocking receive on a thread of its own answers a cache hit without a wake-up of the
/// async runtime in between (half the latency at a light load, see BENCHMARKS.md); queries
/// that need an upstream are completed on `rt`.
pub(crate) fn serve_udp(
    sock: Arc<std::net::UdpSocket>,
    handler: Arc<Handler>,
    rt: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; MAX_QUERY];
    let mut memo = AnswerMemo {
        generation: 0,
        answers: Default::default(),
    };
    while !stop.load(Ordering::Relaxed) {
        let (n, src) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                use std::io::ErrorKind::*;
                // The read timeout (to look at `stop`), and ICMP errors from earlier sends
                // (ECONNREFUSED): the socket is fine.
                if !matches!(
                    e.kind(),
                    WouldBlock | TimedOut | ConnectionRefused | ConnectionReset | Interrupted
                ) {
                    // Anything else (out of memory, a socket gone bad) must not spin a core;
                    // DNS keeps trying, as the agent has no better fallback.
                    tracing::warn!(error = %e, "cluster DNS: receiving on UDP failed");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                continue;
            }
        };
        // Port 0 cannot be answered; a message that is not a query is not answered (no
        // reflection), nor one that does not parse.
        if src.port() == 0 {
            continue;
        }
        let generation = handler.generation();
        if let Some(a) = memo.answer(generation, &buf[..n]) {
            send(&sock, &a, src);
            continue;
        }
        let Ok(request) = Request::from_bytes(buf[..n].to_vec(), src, Protocol::Udp) else {
            continue;
        };
        if request.metadata.message_type != MessageType::Query {
            continue;
        }
        match handler.immediate(&request) {
            Ok(r) => {
                let a = encode_udp(&request, &r);
                memo.keep(generation, &buf[..n], &a);
                send(&sock, &a, src);
            }
            Err(p) => {
                let (sock, handler) = (sock.clone(), handler.clone());
                rt.spawn(async move {
                    let r = handler.complete(&request, p).await;
                    send(&sock, &encode_udp(&request, &r), src);
                });
            }
        }
    }
}

fn send(sock: &std::net::UdpSocket, bytes: &[u8], to: SocketAddr) {
    // A lost answer is a client retry, as with any UDP DNS server. (A UDP send does not wait
    // for the peer: at most for room in the socket's buffer.)
    let _ = sock.send_to(bytes, to);
}

/// The TCP path, through hickory-server.
pub(crate) struct TcpHandler(pub(crate) Arc<Handler>);

#[async_trait::async_trait]
impl RequestHandler for TcpHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let r = self.0.reply(request).await;
        let edns = edns_for(request);
        match response_handle
            .send_response(r.response(request, edns.as_ref()))
            .await
        {
            Ok(info) => info,
            // The client is gone; report SERVFAIL to hickory's bookkeeping.
            Err(_) => servfail_header(request).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_answer_is_the_same_query_s_with_its_id_until_the_cache_changes() {
        let mut memo = AnswerMemo {
            generation: 0,
            answers: Default::default(),
        };
        let query = [
            0xAB, 0xCD, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'x', 0, 0, 1, 0, 1,
        ];
        let answer = [0xAB, 0xCD, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 9, 9];
        assert_eq!(
            memo.answer(3, &query),
            None,
            "a new generation starts empty"
        );
        memo.keep(3, &query, &answer);
        let mut again = query;
        again[..2].copy_from_slice(&[0x12, 0x34]);
        let got = memo.answer(3, &again).expect("kept");
        assert_eq!(got[..2], [0x12, 0x34], "the new query's ID");
        assert_eq!(got[2..], answer[2..]);
        // Another question (one byte differs) is not answered from it.
        let mut other = query;
        other[13] = b'y';
        assert_eq!(memo.answer(3, &other), None);
        // The cache changed: everything kept is gone, and an answer built before the change
        // is not kept under the new generation.
        assert_eq!(memo.answer(4, &query), None);
        memo.keep(3, &query, &answer);
        assert_eq!(memo.answer(4, &query), None);
    }
}
