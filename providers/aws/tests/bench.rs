//! Not a test: the figures in BENCHMARKS.md. Run with
//! `cargo test -p rktup-aws --test bench -- --ignored --nocapture`.
//!
//! A proxy on 127.0.0.1 in front of moto adds a fixed delay to every call and records when each
//! call started and ended. The critical path is the longest chain of calls in which each one
//! started only after the one before it had answered — the round trips `up` must wait for one
//! after another; a strictly serial `up` (kube-up's order) waits for every call.

use rktup_provider::{ClusterProvider, UpOptions};
use rktup_testkit::aws::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Proxy {
    url: String,
    /// (start, end, what) of every call since the last `take`.
    spans: Arc<Mutex<Vec<Span>>>,
}

type Span = (Instant, Instant, String);

impl Proxy {
    fn take(&self) -> Vec<Span> {
        std::mem::take(&mut *self.spans.lock().expect("spans"))
    }
}

/// The longest chain of calls where each starts after the previous one ended, as the calls.
fn critical_path(spans: &[Span]) -> Vec<String> {
    let mut s = spans.to_vec();
    s.sort_by_key(|x| x.0);
    let mut depth = vec![1usize; s.len()];
    let mut prev: Vec<Option<usize>> = vec![None; s.len()];
    for i in 0..s.len() {
        for j in 0..i {
            if s[j].1 <= s[i].0 && depth[j] + 1 > depth[i] {
                depth[i] = depth[j] + 1;
                prev[i] = Some(j);
            }
        }
    }
    let mut at = (0..s.len()).max_by_key(|&i| depth[i]);
    let mut chain = Vec::new();
    while let Some(i) = at {
        chain.push(s[i].2.clone());
        at = prev[i];
    }
    chain.reverse();
    chain
}

/// The EC2/Auto Scaling `Action=` of a query-API call, else the method and path (S3).
fn call_name(req: &[u8]) -> String {
    let text = String::from_utf8_lossy(&req[..req.len().min(64 * 1024)]);
    if let Some(i) = text.find("Action=") {
        let rest = &text[i + 7..];
        return rest
            .split(['&', ' ', '\r'])
            .next()
            .unwrap_or("")
            .to_string();
    }
    text.lines()
        .next()
        .unwrap_or("")
        .split(' ')
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .split('?')
        .next()
        .unwrap_or("")
        .to_string()
}

fn read_message(r: &mut BufReader<TcpStream>) -> Option<(Vec<u8>, bool)> {
    let mut head = Vec::new();
    let mut len = 0usize;
    let mut chunked = false;
    let mut has_len = false;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.to_ascii_lowercase();
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
            has_len = true;
        }
        if l.starts_with("transfer-encoding:") && l.contains("chunked") {
            chunked = true;
        }
        if l.starts_with("connection:") {
            continue; // the proxy decides
        }
        head.extend_from_slice(line.as_bytes());
        if line == "\r\n" {
            break;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk[..n]);
            if n == 0 {
                break;
            }
        }
        // Re-frame with a length.
        let text = String::from_utf8_lossy(&head)
            .replace("Transfer-Encoding: chunked\r\n", "")
            .replace("transfer-encoding: chunked\r\n", "");
        head = text.into_bytes();
        head.truncate(head.len() - 2);
        head.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    } else if has_len {
        body = vec![0u8; len];
        r.read_exact(&mut body).ok()?;
    }
    let mut msg = head;
    let complete = chunked || has_len;
    msg.extend_from_slice(&body);
    Some((msg, complete))
}

fn proxy(upstream: String, delay: Duration) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let spans = Arc::new(Mutex::new(Vec::new()));
    let record = spans.clone();
    let up = upstream.trim_start_matches("http://").to_string();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let up = up.clone();
            let record = record.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().expect("clone"));
                let mut client = client;
                while let Some((req, _)) = read_message(&mut reader) {
                    let started = Instant::now();
                    let what = call_name(&req);
                    std::thread::sleep(delay);
                    let Ok(mut server) = TcpStream::connect(&up) else {
                        return;
                    };
                    // Close upstream after one exchange; keep the client's connection.
                    let head_end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
                    let mut out = req[..head_end + 2].to_vec();
                    out.extend_from_slice(b"Connection: close\r\n\r\n");
                    out.extend_from_slice(&req[head_end + 4..]);
                    if server.write_all(&out).is_err() {
                        return;
                    }
                    let mut sr = BufReader::new(server);
                    let Some((resp, complete)) = read_message(&mut sr) else {
                        return;
                    };
                    let mut resp = resp;
                    if !complete {
                        let mut rest = Vec::new();
                        let _ = sr.read_to_end(&mut rest);
                        resp.extend_from_slice(&rest);
                    }
                    let sent = client.write_all(&resp).is_ok();
                    if let Ok(mut v) = record.lock() {
                        v.push((started, Instant::now(), what));
                    }
                    if !sent || !complete {
                        return;
                    }
                }
            });
        }
    });
    Proxy { url, spans }
}

fn no_wait() -> UpOptions {
    UpOptions {
        no_wait: true,
        ..Default::default()
    }
}

#[test]
#[ignore = "benchmark: run explicitly"]
fn up_round_trips_and_wall_time() {
    let moto = Moto::start();
    let rt = runtime();
    let image = some_image(&rt, &moto.clients(&rt));
    let delay = Duration::from_millis(100);
    println!("| nodes | calls (serial: kube-up's order) | sequential round trips on the critical path | ratio | up wall | 2nd up calls / critical path | down wall |");
    println!("|---|---|---|---|---|---|---|");
    for nodes in [0u32, 3, 5] {
        let p = proxy(moto.url.clone(), delay);
        let mut sb = Sandbox::new(&format!("bench{nodes}"), &image);
        sb.set("NUM_NODES", &nodes.to_string());
        let aws = || {
            rktup_aws::Aws::new(sb.settings())
                .endpoint(&p.url)
                .retry(fast_retry())
                .kubeconfig(sb.kubeconfig())
        };
        let t = Instant::now();
        aws().up(&no_wait()).expect("up");
        let wall = t.elapsed();
        let spans = p.take();
        let calls = spans.len();
        let chain = critical_path(&spans);
        let depth = chain.len();
        eprintln!("critical path, {nodes} nodes: {}", chain.join(" → "));
        aws().up(&no_wait()).expect("second up");
        let again = p.take();
        let t = Instant::now();
        aws().down().expect("down");
        let down = t.elapsed();
        println!(
            "| {nodes} | {calls} | {depth} | {:.1}x | {:.1} s | {} / {} | {:.1} s |",
            calls as f64 / depth.max(1) as f64,
            wall.as_secs_f64(),
            again.len(),
            critical_path(&again).len(),
            down.as_secs_f64()
        );
    }
}
