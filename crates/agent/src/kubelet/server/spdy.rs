//! SPDY/3.1 as Kubernetes streaming speaks it (the server side): `kubectl port-forward` before
//! 1.31 and any client of client-go's SPDY executor (`kubectl exec` 1.20–1.29, older client
//! libraries). After the HTTP `Upgrade: SPDY/3.1` (or inside a WebSocket whose binary messages
//! carry the SPDY bytes, client-go's "SPDY over WebSocket" tunnel), the client opens streams with
//! SYN_STREAM frames whose headers name them (`streamtype`, `port`, `requestid`); each is answered
//! with a SYN_REPLY and its data flows in DATA frames, ended by FIN (a half close) or RST_STREAM.
//!
//! Header blocks are compressed with one zlib stream per direction for the whole connection,
//! primed with SPDY/3's dictionary (draft 3, §2.6.10.1). Flow control (WINDOW_UPDATE) is not
//! used: moby/spdystream, the library behind client-go, neither sends nor honours it; the
//! reader applies back-pressure by waiting on each stream's bounded queue instead.

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The `Upgrade` token of an HTTP upgrade to SPDY.
pub const UPGRADE: &str = "SPDY/3.1";
/// What client-go puts before a protocol name to ask for SPDY inside a WebSocket.
pub const TUNNEL_PREFIX: &str = "SPDY/3.1+";

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 1;
/// RST_STREAM status: the stream was cancelled.
const CANCEL: u32 = 5;
/// The largest control frame accepted (header blocks of a few short headers in practice).
const MAX_CONTROL: usize = 1 << 20;
/// The largest DATA frame sent.
const MAX_DATA: usize = 32 * 1024;

/// SPDY/3's header compression dictionary (1423 bytes, draft 3 §2.6.10.1).
pub const DICTIONARY: &[u8; 1423] =
    b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\
      \x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\
      \x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-range\
      s\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcach\
      e-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10content-enc\
      oding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\x00\x10content\
      -location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-t\
      ype\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\
      \x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modifie\
      d-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-\
      since\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\
      \x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorization\
      \x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\x00\x00\x00\x06ser\
      ver\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-encoding\x00\x00\x00\
      \x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\
      \x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\
      \x00\x00\x06status\x00\x00\x00\x06200\x20OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\
      \x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-al\
      ive\x00\x00\x00\x06origin10010120120220520630030230330430530630740240540640740840941041141\
      2413414415416417502504505203\x20Non-Authoritative\x20Information204\x20No\x20Content301\
      \x20Moved\x20Permanently400\x20Bad\x20Request401\x20Unauthorized403\x20Forbidden404\x20Not\
      \x20Found500\x20Internal\x20Server\x20Error501\x20Not\x20Implemented503\x20Service\x20Unav\
      ailableJan\x20Feb\x20Mar\x20Apr\x20May\x20Jun\x20Jul\x20Aug\x20Sept\x20Oct\x20Nov\x20Dec\
      \x2000:00:00\x20Mon,\x20Tue,\x20Wed,\x20Thu,\x20Fri,\x20Sat,\x20Sun,\x20GMTchunked,text/ht\
      ml,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/jav\
      ascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0\
      .";

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("spdy: {0}")]
    Io(#[from] std::io::Error),
    #[error("spdy: unsupported version {0}")]
    Version(u16),
    #[error("spdy: a control frame of {0} bytes is too large")]
    TooLarge(usize),
    #[error("spdy: malformed {0}")]
    Malformed(&'static str),
    #[error("spdy: header compression: {0}")]
    Compression(String),
}

/// A stream's headers as sent (names lower case on the wire; looked up case-insensitively).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A header block before compression: counts and lengths as 32-bit big-endian numbers.
fn encode_headers(h: &Headers) -> Vec<u8> {
    let mut b = Vec::new();
    let len = |b: &mut Vec<u8>, n: usize| b.extend_from_slice(&(n as u32).to_be_bytes());
    len(&mut b, h.0.len());
    for (n, v) in &h.0 {
        len(&mut b, n.len());
        b.extend_from_slice(n.to_ascii_lowercase().as_bytes());
        len(&mut b, v.len());
        b.extend_from_slice(v.as_bytes());
    }
    b
}

fn decode_headers(raw: &[u8]) -> Result<Headers, SpdyError> {
    let mut b = raw;
    let bad = || SpdyError::Malformed("header block");
    let num = |b: &mut &[u8]| -> Result<usize, SpdyError> {
        if b.len() < 4 {
            return Err(bad());
        }
        Ok(b.get_u32() as usize)
    };
    let count = num(&mut b)?;
    let mut out = Vec::new();
    for _ in 0..count {
        let n = num(&mut b)?;
        let name = b.get(..n).ok_or_else(bad)?.to_vec();
        b.advance(n);
        let n = num(&mut b)?;
        let value = b.get(..n).ok_or_else(bad)?.to_vec();
        b.advance(n);
        let name = String::from_utf8(name).map_err(|_| bad())?;
        // Several values of one name are joined by NUL.
        for v in value.split(|&c| c == 0) {
            out.push((name.clone(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    Ok(Headers(out))
}

/// The receiving direction's header decompressor (one zlib stream for the connection).
struct Inflater(Decompress);

impl Inflater {
    fn new() -> Inflater {
        Inflater(Decompress::new(true))
    }

    fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        let mut pos = 0;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(4096);
            }
            let (in0, out0) = (self.0.total_in(), out.len());
            match self
                .0
                .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| SpdyError::Compression(e.to_string()))?;
                }
                Err(e) => return Err(SpdyError::Compression(e.to_string())),
            }
            pos += (self.0.total_in() - in0) as usize;
            let room_left = out.len() < out.capacity();
            if (pos >= input.len() && room_left) || (self.0.total_in() == in0 && out.len() == out0)
            {
                return Ok(out);
            }
            if out.len() > 4 * MAX_CONTROL {
                return Err(SpdyError::TooLarge(out.len()));
            }
        }
    }
}

/// The sending direction's header compressor.
struct Deflater(Compress);

impl Deflater {
    fn new() -> Result<Deflater, SpdyError> {
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(DICTIONARY)
            .map_err(|e| SpdyError::Compression(e.to_string()))?;
        Ok(Deflater(z))
    }

    fn deflate(&mut self, input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut pos = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let in0 = self.0.total_in();
            self.0
                .compress_vec(&input[pos..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            pos += (self.0.total_in() - in0) as usize;
            if pos >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

fn data_frame(id: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + data.len());
    f.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(data);
    f
}

/// What the writer task sends.
enum Out {
    Reply(u32),
    Data { id: u32, data: Bytes, fin: bool },
    Reset(u32),
    Ping(u32),
    GoAway,
}

/// The data a stream's client sends, until its FIN or RST_STREAM (then `None`).
pub struct StreamReader(mpsc::Receiver<Bytes>);

impl StreamReader {
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.0.recv().await
    }
}

/// Sends on one stream; cheap to clone.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Out>,
}

impl StreamWriter {
    /// False when the connection is gone.
    pub async fn write(&self, data: &[u8]) -> bool {
        for chunk in data.chunks(MAX_DATA) {
            let d = Out::Data {
                id: self.id,
                data: Bytes::copy_from_slice(chunk),
                fin: false,
            };
            if self.out.send(d).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Half-closes the stream (FIN): the client reads EOF.
    pub async fn close(&self) {
        let d = Out::Data {
            id: self.id,
            data: Bytes::new(),
            fin: true,
        };
        let _ = self.out.send(d).await;
    }

    pub async fn reset(&self) {
        let _ = self.out.send(Out::Reset(self.id)).await;
    }
}

/// One stream the client opened (already answered with SYN_REPLY).
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    pub reader: StreamReader,
    pub writer: StreamWriter,
}

/// A served SPDY connection: the streams the client opens, and a way to end it.
pub struct Connection {
    pub streams: mpsc::Receiver<Stream>,
    out: mpsc::Sender<Out>,
    closed: watch::Receiver<bool>,
}

/// Ends a connection from anywhere (GOAWAY, then the connection is closed).
#[derive(Clone)]
pub struct Closer(mpsc::Sender<Out>);

impl Closer {
    pub async fn go_away(&self) {
        let _ = self.0.send(Out::GoAway).await;
    }
}

impl Connection {
    /// Serves SPDY on `io` (after the upgrade) until the client or [`Closer::go_away`] ends it.
    pub fn serve<S>(io: S) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(64);
        let (streams_tx, streams_rx) = mpsc::channel(16);
        let (closed_tx, closed_rx) = watch::channel(false);
        let mut closed = closed_rx.clone();
        let out = out_tx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = read_loop(r, out, streams_tx) => {}
                _ = closed.wait_for(|c| *c) => {}
            }
        });
        tokio::spawn(async move {
            let _ = write_loop(w, out_rx).await;
            let _ = closed_tx.send(true);
        });
        Connection {
            streams: streams_rx,
            out: out_tx,
            closed: closed_rx,
        }
    }

    pub fn closer(&self) -> Closer {
        Closer(self.out.clone())
    }

    /// Resolves when the connection can no longer send (closed by either side).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut c = self.closed.clone();
        async move {
            let _ = c.wait_for(|c| *c).await;
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    out: mpsc::Sender<Out>,
    streams: mpsc::Sender<Stream>,
) -> Result<(), SpdyError> {
    let mut inflater = Inflater::new();
    let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut head = [0u8; 8];
    loop {
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let mut data = BytesMut::zeroed(len);
            r.read_exact(&mut data).await?;
            if let Some(tx) = open.get(&id) {
                if !data.is_empty() && tx.send(data.freeze()).await.is_err() {
                    open.remove(&id);
                }
            }
            if flags & FLAG_FIN != 0 {
                open.remove(&id);
            }
            continue;
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        let kind = u16::from_be_bytes([head[2], head[3]]);
        if len > MAX_CONTROL {
            return Err(SpdyError::TooLarge(len));
        }
        let mut p = vec![0u8; len];
        r.read_exact(&mut p).await?;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let id = || {
            p.get(..4)
                .map(|b| u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]))
                .ok_or(SpdyError::Malformed("control frame"))
        };
        match kind {
            SYN_STREAM => {
                let id = id()?;
                let block = p.get(10..).ok_or(SpdyError::Malformed("SYN_STREAM"))?;
                let headers = decode_headers(&inflater.inflate(block)?)?;
                let (tx, rx) = mpsc::channel(16);
                if flags & FLAG_FIN == 0 {
                    open.insert(id, tx);
                }
                // The client's CreateStream waits for this reply.
                if out.send(Out::Reply(id)).await.is_err() {
                    return Ok(());
                }
                let stream = Stream {
                    id,
                    headers,
                    reader: StreamReader(rx),
                    writer: StreamWriter {
                        id,
                        out: out.clone(),
                    },
                };
                if streams.send(stream).await.is_err() {
                    let _ = out.send(Out::Reset(id)).await;
                    open.remove(&id);
                }
            }
            // Their header blocks advance the shared zlib stream even when unused.
            SYN_REPLY | HEADERS => {
                if let Some(block) = p.get(4..) {
                    inflater.inflate(block)?;
                }
            }
            RST_STREAM => {
                open.remove(&id()?);
            }
            PING => {
                let answered = out.send(Out::Ping(id()?)).await;
                if answered.is_err() {
                    return Ok(());
                }
            }
            GOAWAY => return Ok(()),
            // SETTINGS, WINDOW_UPDATE and anything newer: nothing to do.
            _ => {}
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Out>,
) -> Result<(), SpdyError> {
    let mut deflater = Deflater::new()?;
    let mut last_id = 0u32;
    while let Some(o) = rx.recv().await {
        let (frame, end) = match o {
            Out::Reply(id) => {
                last_id = last_id.max(id);
                let mut p = id.to_be_bytes().to_vec();
                p.extend(deflater.deflate(&encode_headers(&Headers::default()))?);
                (control(SYN_REPLY, 0, &p), false)
            }
            Out::Data { id, data, fin } => {
                (data_frame(id, if fin { FLAG_FIN } else { 0 }, &data), false)
            }
            Out::Reset(id) => {
                let mut p = id.to_be_bytes().to_vec();
                p.extend_from_slice(&CANCEL.to_be_bytes());
                (control(RST_STREAM, 0, &p), false)
            }
            Out::Ping(id) => (control(PING, 0, &id.to_be_bytes()), false),
            Out::GoAway => {
                let mut p = last_id.to_be_bytes().to_vec();
                p.extend_from_slice(&0u32.to_be_bytes());
                (control(GOAWAY, 0, &p), true)
            }
        };
        w.write_all(&frame).await?;
        if end {
            break;
        }
        if rx.is_empty() {
            w.flush().await?;
        }
    }
    w.flush().await?;
    w.shutdown().await?;
    Ok(())
}

/// client-go's "SPDY over WebSocket" tunnel: the WebSocket's binary messages carry the SPDY
/// connection's bytes. Returns the byte stream to serve SPDY on.
pub fn websocket_tunnel<S>(ws: WebSocketStream<S>) -> tokio::io::DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut sink, mut incoming) = ws.split();
    let (mut rd, mut wr) = tokio::io::split(theirs);
    tokio::spawn(async move {
        while let Some(Ok(m)) = incoming.next().await {
            match m {
                Message::Binary(b) => {
                    let written = wr.write_all(&b).await;
                    if written.is_err() {
                        break;
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let m = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                    if sink.send(m).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink.close().await;
    });
    ours
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        // Adler-32 of draft 3's dictionary, as zlib headers of SPDY/3 peers carry it.
        let mut d = Deflater::new().unwrap();
        let z = d.deflate(b"x").unwrap();
        assert_eq!(z[1] & 0x20, 0x20, "FDICT set");
        assert_eq!(&z[2..6], &0xe3c6_a7c2u32.to_be_bytes());
    }

    #[test]
    fn header_blocks_round_trip_through_shared_zlib_streams() {
        let mut d = Deflater::new().unwrap();
        let mut i = Inflater::new();
        for n in 0..3 {
            let h = Headers(vec![
                ("streamtype".into(), "data".into()),
                ("port".into(), format!("80{n}")),
                ("requestid".into(), n.to_string()),
            ]);
            let z = d.deflate(&encode_headers(&h)).unwrap();
            assert_eq!(decode_headers(&i.inflate(&z).unwrap()).unwrap(), h);
        }
        // Several values of a name are NUL-separated.
        let raw = encode_headers(&Headers(vec![("a".into(), "x\0y".into())]));
        let h = decode_headers(&raw).unwrap();
        assert_eq!(h.0, [("a".into(), "x".into()), ("a".into(), "y".into())]);
        assert!(decode_headers(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
    }

    /// A client side just big enough to drive the server: SYN_STREAM with headers, data with
    /// FIN, PING; reads back SYN_REPLY, the echo and the PING answer.
    #[tokio::test]
    async fn streams_data_fin_and_ping() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut conn = Connection::serve(server);
        let (mut cr, mut cw) = tokio::io::split(client);
        let mut z = Deflater::new().unwrap();
        let h = Headers(vec![("streamtype".into(), "data".into())]);
        let mut p = 1u32.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        p.extend(z.deflate(&encode_headers(&h)).unwrap());
        cw.write_all(&control(SYN_STREAM, 0, &p)).await.unwrap();
        cw.write_all(&data_frame(1, FLAG_FIN, b"hello"))
            .await
            .unwrap();
        cw.write_all(&control(PING, 0, &7u32.to_be_bytes()))
            .await
            .unwrap();
        let mut s = conn.streams.recv().await.unwrap();
        assert_eq!(s.headers.get("StreamType"), Some("data"));
        assert_eq!(&s.reader.recv().await.unwrap()[..], b"hello");
        assert!(s.reader.recv().await.is_none(), "FIN ends the reader");
        assert!(s.writer.write(b"back").await);
        s.writer.close().await;
        conn.closer().go_away().await;
        let mut got = Vec::new();
        cr.read_to_end(&mut got).await.unwrap();
        let mut i = Inflater::new();
        let mut frames = Vec::new();
        let mut b = &got[..];
        while b.len() >= 8 {
            let len = u32::from_be_bytes([0, b[5], b[6], b[7]]) as usize;
            frames.push((b[..8].to_vec(), b[8..8 + len].to_vec()));
            b = &b[8 + len..];
        }
        let kinds: Vec<String> = frames
            .iter()
            .map(|(h, p)| {
                if h[0] & 0x80 != 0 {
                    let k = u16::from_be_bytes([h[2], h[3]]);
                    if k == SYN_REPLY {
                        assert_eq!(decode_headers(&i.inflate(&p[4..]).unwrap()).unwrap().0, []);
                    }
                    format!("c{k}")
                } else {
                    format!("d{}:{}", h[4], String::from_utf8_lossy(p))
                }
            })
            .collect();
        // The PING's answer may come before or after the stream's data.
        let pos = |k: &str| kinds.iter().position(|x| x == k).unwrap();
        assert_eq!(kinds.len(), 5, "{kinds:?}");
        assert_eq!((kinds[0].as_str(), kinds[4].as_str()), ("c2", "c7"));
        assert!(pos("c6") > 0 && pos("d0:back") < pos("d1:"), "{kinds:?}");
    }
}
