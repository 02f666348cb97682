//! hickory's request handler: the cache answers the cluster zone and the reverse names it
//! knows; everything else is relayed from upstream.

use std::sync::{Arc, RwLock};

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::cache::{Cache, Outcome};
use crate::forward::Forwarder;

/// The largest UDP answer offered to EDNS clients (the DNS flag day size; CoreDNS's too).
const EDNS_PAYLOAD: u16 = 1232;

pub(crate) struct Handler {
    cache: Arc<RwLock<Cache>>,
    forwarder: Forwarder,
}

impl Handler {
    pub(crate) fn new(cache: Arc<RwLock<Cache>>, forwarder: Forwarder) -> Self {
        Handler { cache, forwarder }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        // Answer with EDNS when asked with it (RFC 6891), sized to what the client can take.
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, EDNS_PAYLOAD));
            e
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = true;

        let failed = |code| {
            let mut m = Metadata::response_from_request(&request.metadata);
            m.response_code = code;
            m
        };
        if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            let resp = builder.build_no_records(failed(ResponseCode::NotImp));
            return send(&mut response_handle, resp, &request.metadata).await;
        }
        let query = match request.request_info() {
            Ok(info) => info.query.original().clone(),
            Err(_) => {
                let resp = builder.build_no_records(failed(ResponseCode::FormErr));
                return send(&mut response_handle, resp, &request.metadata).await;
            }
        };
        let qtype = query.query_type();

        // The lock is held only while the records are built, never across an await.
        let outcome = self
            .cache
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .lookup(query.name(), qtype);
        match outcome {
            Outcome::Answer(mut a) => {
                if let Some(target) = a.chase.take() {
                    a.answers
                        .extend(self.forwarder.resolve(&target, qtype).await);
                }
                meta.authoritative = true;
                meta.response_code = a.rcode;
                let resp = builder.build(
                    meta,
                    a.answers.iter(),
                    std::iter::empty::<&Record>(),
                    a.soa.iter(),
                    a.additionals.iter(),
                );
                send(&mut response_handle, resp, &request.metadata).await
            }
            Outcome::Forward => match self.forwarder.forward(request.as_slice()).await {
                Ok(up) => {
                    meta.response_code = up.metadata.response_code;
                    meta.authoritative = up.metadata.authoritative;
                    meta.authentic_data = up.metadata.authentic_data;
                    let resp = builder.build(
                        meta,
                        up.answers.iter(),
                        up.authorities.iter(),
                        std::iter::empty::<&Record>(),
                        up.additionals.iter(),
                    );
                    send(&mut response_handle, resp, &request.metadata).await
                }
                Err(e) => {
                    tracing::debug!(name = %query.name(), %qtype, error = %e, "forward failed");
                    let resp = builder.build_no_records(failed(ResponseCode::ServFail));
                    send(&mut response_handle, resp, &request.metadata).await
                }
            },
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    resp: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Metadata,
) -> ResponseInfo {
    match handle.send_response(resp).await {
        Ok(info) => info,
        // The client is gone (or the socket closed); report SERVFAIL to hickory's bookkeeping.
        Err(_) => {
            let mut m = Metadata::response_from_request(request);
            m.response_code = ResponseCode::ServFail;
            hickory_server::proto::op::Header {
                metadata: m,
                counts: Default::default(),
            }
            .into()
        }
    }
}
