//! Watch: a chunked stream of JSON watch events, one per line, as
//! kube-apiserver sends them (`{"type":"ADDED","object":{...}}`), with
//! bookmarks, `sendInitialEvents`, selector transitions (an object leaving
//! the selector is reported DELETED) and `410 Gone` as an ERROR event.

use super::error::ApiError;
use super::objects::{Core, ListOptions};
use super::table;
use crate::registry::ResourceDef;
use crate::store::{EventType, StoreError};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub struct WatchParams {
    pub resource_version: String,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout: Duration,
    pub as_table: bool,
}

/// How often a bookmark is sent to watchers that asked for them.
/// (kube-apiserver sends them about once a minute; clients only need them
/// to move their resume point forward, so more often is harmless.)
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

fn render(rd: &ResourceDef, obj: &Value, as_table: bool, first: &mut bool) -> Value {
    let obj = &*rd.view(obj);
    if as_table {
        let t = table::table(
            rd,
            &[obj],
            super::objects::meta_str(obj, "resourceVersion"),
            None,
            "Metadata",
            *first,
        );
        *first = false;
        t
    } else {
        obj.clone()
    }
}

/// Starts a watch, returning a channel of encoded event lines.
pub fn start(
    core: Arc<Core>,
    rd: &'static ResourceDef,
    ns: Option<String>,
    opts: ListOptions,
    p: WatchParams,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let prefix = rd.key_prefix(if rd.namespaced { ns.as_deref() } else { None });
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let matches = {
        let opts = opts.clone();
        move |o: &Value| opts.labels.matches(o) && opts.fields.matches(o)
    };
    let rv = p.resource_version.clone();
    let mut initial: Vec<Arc<Value>> = Vec::new();
    let from: u64;
    let gone: Option<String>;
    if rv.is_empty() || rv == "0" || p.send_initial_events {
        // Synthetic ADDED events for the current state, then changes.
        let (items, rev, _) = core.list(
            rd,
            ns.as_deref(),
            &ListOptions {
                limit: None,
                continue_token: None,
                ..opts.clone()
            },
        )?;
        initial = items;
        from = rev;
        gone = None;
    } else {
        from = rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version \"{rv}\"")))?;
        gone = None;
    }
    let stream = match core.store.watch(&prefix, from) {
        Ok(s) => Some(s),
        Err(StoreError::Gone { requested, oldest }) => {
            let _ = gone;
            let e = ApiError::gone(format!("too old resource version: {requested} ({oldest})"));
            let ev = json!({"type": "ERROR", "object": e.to_status()});
            let _ = tx.try_send(line(&ev));
            None
        }
        Err(e) => return Err(ApiError::internal(e.to_string())),
    };
    let Some(mut stream) = stream else {
        return Ok(rx);
    };
    let kind_av = (rd.kind, rd.api_version());
    tokio::spawn(async move {
        let mut first = true;
        for o in initial {
            let ev = json!({"type": "ADDED", "object": render(rd, &o, p.as_table, &mut first)});
            if tx.send(line(&ev)).await.is_err() {
                return;
            }
        }
        let mut last = from;
        if p.send_initial_events && p.bookmarks {
            let bm = json!({"type": "BOOKMARK", "object": {"kind": kind_av.0, "apiVersion": kind_av.1, "metadata": {"resourceVersion": last.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}}});
            if tx.send(line(&bm)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + p.timeout;
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                ev = stream.rx.recv() => {
                    let Some(ev) = ev else { return };  // fell behind: client resumes from `last`
                    last = ev.revision;
                    let now_match = ev.kind != EventType::Deleted && matches(&ev.object);
                    let was_match = ev.prev.as_deref().is_some_and(&matches);
                    let ty = match ev.kind {
                        EventType::Added if now_match => "ADDED",
                        EventType::Modified if now_match && was_match => "MODIFIED",
                        EventType::Modified if now_match => "ADDED",
                        EventType::Modified if was_match => "DELETED",
                        EventType::Deleted if was_match => "DELETED",
                        _ => continue,
                    };
                    let mut obj = (*ev.object).clone();
                    if ty == "DELETED" && ev.kind == EventType::Modified {
                        crate::store::set_resource_version(&mut obj, ev.revision);
                    }
                    let out = json!({"type": ty, "object": render(rd, &obj, p.as_table, &mut first)});
                    if tx.send(line(&out)).await.is_err() {
                        return;
                    }
                }
                _ = tick.tick(), if p.bookmarks => {
                    // Everything up to `rev` has been delivered once the
                    // queue is empty (events are queued under the store lock
                    // before the revision becomes visible).
                    let rev = core.store.revision();
                    if stream.rx.is_empty() && rev > last {
                        last = rev;
                    }
                    let bm = json!({"type": "BOOKMARK", "object": {"kind": kind_av.0, "apiVersion": kind_av.1, "metadata": {"resourceVersion": last.to_string()}}});
                    if tx.send(line(&bm)).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    Ok(rx)
}
