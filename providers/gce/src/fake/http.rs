//! Just enough HTTP/1.1 for reqwest and gcp_auth: one request per connection, then close.

use super::{error_body, Discovery, Request, State, TOKEN};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;

fn respond(mut conn: TcpStream, status: u16, body: &Value) {
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        text.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(text.as_bytes());
    let _ = conn.flush();
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn serve(conn: TcpStream, state: &Mutex<State>, discovery: &Discovery) {
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return;
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut len = 0usize;
    let mut auth = String::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "authorization" => auth = v.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut raw = vec![0u8; len];
    if reader.read_exact(&mut raw).is_err() {
        return;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    let path = decode(path);

    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    if path == "/token" && method == "POST" {
        let form = String::from_utf8_lossy(&raw);
        lock().requests.push(Request {
            method,
            path,
            query,
            method_id: "token".into(),
        });
        if !form.contains("grant_type=urn") || !form.contains("assertion=") {
            return respond(conn, 400, &json!({"error": "invalid_grant"}));
        }
        return respond(
            conn,
            200,
            &json!({"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"}),
        );
    }
    if auth != format!("Bearer {TOKEN}") {
        return respond(
            conn,
            401,
            &error_body(
                401,
                "authError",
                "Request is missing required authentication credential.",
            ),
        );
    }
    let upload = path.starts_with("/upload/");
    let found = discovery.find(&method, &path);
    let Some((doc, m)) = found else {
        return respond(
            conn,
            404,
            &error_body(
                404,
                "notFound",
                &format!("no method for {method} {path} in the discovery documents"),
            ),
        );
    };
    let method_id = m["id"].as_str().unwrap_or("").to_string();
    let body: Option<Value> = if upload || raw.is_empty() {
        None
    } else {
        match serde_json::from_slice(&raw) {
            Ok(v) => Some(v),
            Err(e) => {
                return respond(
                    conn,
                    400,
                    &error_body(
                        400,
                        "parseError",
                        &format!("Invalid JSON payload received. {e}"),
                    ),
                )
            }
        }
    };
    if let Err(message) = discovery.validate(doc, m, &query, body.as_ref(), upload) {
        lock().requests.push(Request {
            method,
            path,
            query,
            method_id: format!("{method_id} (rejected)"),
        });
        return respond(conn, 400, &error_body(400, "invalid", &message));
    }
    let req = Request {
        method,
        path,
        query,
        method_id,
    };
    let (answer, latency) = {
        let mut s = lock();
        s.requests.push(req.clone());
        (s.handle(&req, body.as_ref(), &raw), s.latency)
    };
    std::thread::sleep(latency);
    respond(conn, answer.status, &answer.body);
}
