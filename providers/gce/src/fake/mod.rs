//! A fake Compute Engine + Cloud Storage JSON API on 127.0.0.1 for tests and benchmarks.
//!
//! It keeps state, answers mutations with operations (numeric ids) that go PENDING → RUNNING →
//! DONE over polls, and checks every request's query parameters and body against Google's own
//! discovery documents (`compute.v1.json`, `storage.v1.json` from google-api-python-client):
//! unknown fields, wrong types and missing required fields get GCE's 400. No emulator in our
//! registries covers templates, groups, routes and addresses, hence this one.

mod discovery;
mod http;

pub use discovery::{discovery_dir, Discovery};

use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "fake-access-token";

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub method_id: String,
}

struct Op {
    value: Value,
    polls: u32,
    started: Instant,
    /// Set when fault injection makes this operation end in error (and create nothing).
    error: Option<Value>,
}

#[derive(Default)]
struct Faults {
    /// method id → (HTTP status, remaining count)
    http: BTreeMap<String, VecDeque<u16>>,
    /// method ids whose next operation ends in error
    op_errors: BTreeMap<String, u32>,
}

pub struct State {
    /// collection path (`projects/p/global/firewalls`) → name → resource
    collections: BTreeMap<String, BTreeMap<String, Value>>,
    ops: BTreeMap<String, Op>,
    next_id: u64,
    pub requests: Vec<Request>,
    faults: Faults,
    op_delay: Duration,
    /// Added to every answer (benchmarks: a round trip's cost).
    pub(crate) latency: Duration,
    page_size: usize,
    base: String,
    /// bucket → object name → bytes
    objects: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    buckets: BTreeMap<String, Value>,
    /// (bucket, object) → the object's ACL (objectAccessControls, storage's JSON shape)
    pub acls: BTreeMap<(String, String), Vec<Value>>,
    /// IAM service accounts by email
    pub service_accounts: BTreeMap<String, Value>,
}

#[derive(Clone)]
pub struct Fake {
    pub base: String,
    state: Arc<Mutex<State>>,
}

impl Fake {
    /// Starts the fake on an ephemeral 127.0.0.1 port. Fails when the discovery documents are
    /// missing (never silently skips validation).
    pub fn start() -> Result<Fake, String> {
        let discovery = Arc::new(Discovery::load()?);
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("failed to bind: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("failed to read the bound address: {e}"))?;
        let base = format!("http://{addr}");
        let state = Arc::new(Mutex::new(State {
            collections: BTreeMap::new(),
            ops: BTreeMap::new(),
            next_id: 1_000_000_000_000,
            requests: Vec::new(),
            faults: Faults::default(),
            op_delay: Duration::ZERO,
            latency: Duration::ZERO,
            page_size: 2,
            base: base.clone(),
            objects: BTreeMap::new(),
            buckets: BTreeMap::new(),
            acls: BTreeMap::new(),
            service_accounts: BTreeMap::new(),
        }));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let st = st.clone();
                let d = discovery.clone();
                std::thread::spawn(move || http::serve(conn, &st, &d));
            }
        });
        Ok(Fake { base, state })
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn compute_endpoint(&self) -> String {
        format!("{}/compute/v1/", self.base)
    }

    pub fn storage_endpoint(&self) -> String {
        format!("{}/storage/v1/", self.base)
    }

    /// The IAM API (`iam.v1.json`: service accounts).
    pub fn iam_endpoint(&self) -> String {
        format!("{}/v1/", self.base)
    }

    pub fn token_uri(&self) -> String {
        format!("{}/token", self.base)
    }

    /// selfLinks (operations, resources, targetLinks) name `base` (`https://compute.googleapis.com`)
    /// instead of the fake's own address, as real GCE behind a private or regional endpoint
    /// does: the client must rebase them onto its endpoint override.
    pub fn set_link_base(&self, base: &str) {
        self.state().base = base.trim_end_matches('/').to_string();
    }

    /// Every operation stays RUNNING at least this long (benchmarks use 200 ms).
    pub fn set_op_delay(&self, d: Duration) {
        self.state().op_delay = d;
    }

    /// Items per list page (2 by default, so tests exercise paging; GCE's default is 500).
    pub fn set_page_size(&self, n: usize) {
        self.state().page_size = n.max(1);
    }

    /// Every answer waits this long (a network round trip's cost, for benchmarks).
    pub fn set_latency(&self, d: Duration) {
        self.state().latency = d;
    }

    /// The next `count` calls of `method_id` (`compute.instances.insert`) answer `status`.
    pub fn fail_next(&self, method_id: &str, status: u16, count: usize) {
        let mut s = self.state();
        let q = s.faults.http.entry(method_id.into()).or_default();
        q.extend(std::iter::repeat_n(status, count));
    }

    /// The next operation of `method_id` ends in a GCE error (quota exceeded).
    pub fn fail_operation(&self, method_id: &str) {
        *self
            .state()
            .faults
            .op_errors
            .entry(method_id.into())
            .or_default() += 1;
    }

    /// `kind name` of everything the fake holds (compute resources, buckets, objects).
    pub fn resources(&self) -> Vec<String> {
        let s = self.state();
        let mut out = Vec::new();
        for (coll, items) in &s.collections {
            let kind = coll.rsplit('/').next().unwrap_or(coll);
            out.extend(items.keys().map(|n| format!("{kind} {n}")));
        }
        out.extend(s.buckets.keys().map(|b| format!("bucket {b}")));
        for (b, objs) in &s.objects {
            out.extend(objs.keys().map(|o| format!("object {b}/{o}")));
        }
        out.sort();
        out
    }

    /// A resource as stored, by collection path under the project and name.
    pub fn get(&self, collection: &str, name: &str) -> Option<Value> {
        self.state()
            .collections
            .get(collection)
            .and_then(|c| c.get(name))
            .cloned()
    }

    pub fn object(&self, bucket: &str, name: &str) -> Option<Vec<u8>> {
        self.state()
            .objects
            .get(bucket)
            .and_then(|b| b.get(name))
            .cloned()
    }

    /// Adds a resource as if someone else made it (a network that exists already).
    pub fn seed(&self, collection: &str, value: Value) {
        let mut s = self.state();
        let name = value
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        s.collections
            .entry(collection.into())
            .or_default()
            .insert(name, value);
    }

    /// Requests whose method id is a mutation (insert, delete, ...), not get/list/operations.
    pub fn mutations(&self) -> Vec<Request> {
        self.state()
            .requests
            .iter()
            .filter(|r| {
                !r.method_id.ends_with(".get")
                    && !r.method_id.ends_with(".list")
                    && r.method_id != "token"
            })
            .cloned()
            .collect()
    }

    pub fn request_count(&self) -> usize {
        self.state().requests.len()
    }

    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }
}

/// A GCE-style error body.
pub fn error_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message,
        "errors": [{"domain": "global", "reason": reason, "message": message}]}})
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
}

fn ok(body: Value) -> Answer {
    Answer { status: 200, body }
}

fn err(status: u16, reason: &str, message: &str) -> Answer {
    Answer {
        status,
        body: error_body(status, reason, message),
    }
}

impl State {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Handles one validated request.
    pub(crate) fn handle(&mut self, req: &Request, body: Option<&Value>, raw: &[u8]) -> Answer {
        if let Some(q) = self.faults.http.get_mut(&req.method_id) {
            if let Some(status) = q.pop_front() {
                let reason = if status == 429 {
                    "rateLimitExceeded"
                } else {
                    "backendError"
                };
                return err(status, reason, "injected fault");
            }
        }
        let id = req.method_id.as_str();
        if id.starts_with("storage.") {
            return self.storage(req, body, raw);
        }
        if id.starts_with("iam.") {
            return self.iam(req, body);
        }
        let path = req.path.trim_start_matches("/compute/v1/").to_string();
        let verb = id.rsplit('.').next().unwrap_or("");
        if id.ends_with("Operations.get") {
            return self.poll(&path);
        }
        match verb {
            "insert" => self.insert(id, &path, body.cloned().unwrap_or(Value::Null)),
            "get" => {
                let (coll, name) = split(&path);
                match self.collections.get(coll).and_then(|c| c.get(name)) {
                    Some(v) => ok(v.clone()),
                    None => not_found(&path),
                }
            }
            "list" => {
                let items: Vec<Value> = self
                    .collections
                    .get(&path)
                    .map(|c| c.values().cloned().collect())
                    .unwrap_or_default();
                ok(self.page(items, req, "compute#list"))
            }
            "delete" => self.delete(id, &path),
            _ => err(501, "notImplemented", &format!("the fake has no {id}")),
        }
    }

    fn page(&self, items: Vec<Value>, req: &Request, kind: &str) -> Value {
        let start: usize = req
            .query
            .iter()
            .find(|(k, _)| k == "pageToken")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let end = (start + self.page_size).min(items.len());
        let mut page = json!({"kind": kind, "items": items.get(start..end).unwrap_or(&[])});
        if end < items.len() {
            page["nextPageToken"] = json!(end.to_string());
        }
        page
    }

    fn operation(&mut self, id: &str, path: &str, target: String) -> Answer {
        let n = self.id();
        let name = format!("operation-{n}");
        // zones/Z/... → zone operation; regions/R/... → region; else global.
        let parts: Vec<&str> = path.split('/').collect();
        let scope = match parts.get(2) {
            Some(&"zones") | Some(&"regions") => format!(
                "projects/{}/{}/{}",
                parts.get(1).unwrap_or(&""),
                parts[2],
                parts.get(3).unwrap_or(&"")
            ),
            _ => format!("projects/{}/global", parts.get(1).unwrap_or(&"")),
        };
        let self_link = format!("{}/compute/v1/{scope}/operations/{name}", self.base);
        let mut value = json!({
            "kind": "compute#operation",
            "id": n.to_string(),
            "name": name,
            "operationType": id.rsplit('.').next().unwrap_or(""),
            "targetLink": target,
            "status": "PENDING",
            "progress": 0,
            "selfLink": self_link,
        });
        if scope.contains("/zones/") {
            value["zone"] = json!(format!("{}/compute/v1/{scope}", self.base));
        }
        let error = match self.faults.op_errors.get_mut(id) {
            Some(c) if *c > 0 => {
                *c -= 1;
                Some(json!({"errors": [{"code": "QUOTA_EXCEEDED",
                    "message": "Quota 'CPUS' exceeded.  Limit: 8.0 in region us-central1."}]}))
            }
            _ => None,
        };
        self.ops.insert(
            name,
            Op {
                value: value.clone(),
                polls: 0,
                started: Instant::now(),
                error,
            },
        );
        ok(value)
    }

    fn poll(&mut self, path: &str) -> Answer {
        let name = path.rsplit('/').next().unwrap_or("").to_string();
        let delay = self.op_delay;
        let Some(op) = self.ops.get_mut(&name) else {
            return not_found(path);
        };
        op.polls += 1;
        let status = if op.polls >= 2 && op.started.elapsed() >= delay {
            "DONE"
        } else {
            "RUNNING"
        };
        op.value["status"] = json!(status);
        if status == "DONE" {
            op.value["progress"] = json!(100);
            if let Some(e) = &op.error {
                op.value["error"] = e.clone();
                op.value["httpErrorStatusCode"] = json!(403);
                op.value["httpErrorMessage"] = json!("FORBIDDEN");
            }
        }
        ok(op.value.clone())
    }

    fn insert(&mut self, id: &str, path: &str, mut body: Value) -> Answer {
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let kind = path.rsplit('/').next().unwrap_or("").to_string();
        if self
            .collections
            .get(path)
            .is_some_and(|c| c.contains_key(&name))
        {
            return err(
                409,
                "alreadyExists",
                &format!("The resource '{path}/{name}' already exists"),
            );
        }
        let target = format!("{}/compute/v1/{path}/{name}", self.base);
        let answer = self.operation(id, path, target.clone());
        if self.faults_pending_error(&answer) {
            // An operation that ends in error creates nothing.
            return answer;
        }
        let rid = self.id();
        body["id"] = json!(rid.to_string());
        body["selfLink"] = json!(target);
        body["creationTimestamp"] = json!("2026-01-01T00:00:00.000-00:00");
        body["kind"] = json!(format!("compute#{}", singular(&kind)));
        match kind.as_str() {
            "instances" => {
                body["status"] = json!("RUNNING");
                self.boot_disk(path, &name, &body);
            }
            "addresses" => {
                body["status"] = json!("RESERVED");
                body["address"] = json!(format!("203.0.113.{}", rid % 200 + 10));
            }
            "instanceGroupManagers" => {
                let base = body["baseInstanceName"]
                    .as_str()
                    .unwrap_or("node")
                    .to_string();
                let size = body["targetSize"].as_u64().unwrap_or(0);
                let tmpl = body["instanceTemplate"].as_str().unwrap_or("").to_string();
                let tname = tmpl.rsplit('/').next().unwrap_or("").to_string();
                let project = path.split('/').nth(1).unwrap_or("").to_string();
                let props = self
                    .collections
                    .get(&format!("projects/{project}/global/instanceTemplates"))
                    .and_then(|c| c.get(&tname))
                    .map(|t| t["properties"].clone())
                    .unwrap_or(Value::Null);
                let ipath = path.replace("instanceGroupManagers", "instances");
                for i in 0..size {
                    let n = format!("{base}-{:04x}", (rid + i) % 0xffff);
                    let mut inst = props.clone();
                    if !inst.is_object() {
                        inst = json!({});
                    }
                    inst["name"] = json!(n);
                    inst["status"] = json!("RUNNING");
                    inst["kind"] = json!("compute#instance");
                    inst["selfLink"] = json!(format!("{}/compute/v1/{ipath}/{n}", self.base));
                    if let Some(a) = inst["metadata"]["items"].as_array_mut() {
                        a.push(json!({"key": "created-by", "value": target}));
                    }
                    self.boot_disk(&ipath, &n, &inst);
                    self.collections
                        .entry(ipath.clone())
                        .or_default()
                        .insert(n, inst);
                }
                body["status"] = json!({"isStable": true});
            }
            _ => {}
        }
        self.collections
            .entry(path.to_string())
            .or_default()
            .insert(name, body);
        answer
    }

    fn faults_pending_error(&self, answer: &Answer) -> bool {
        answer
            .body
            .get("name")
            .and_then(Value::as_str)
            .and_then(|n| self.ops.get(n))
            .is_some_and(|op| op.error.is_some())
    }

    fn boot_disk(&mut self, instances_path: &str, name: &str, inst: &Value) {
        let auto = inst["disks"][0]["autoDelete"].as_bool().unwrap_or(false);
        let dpath = instances_path.replace("/instances", "/disks");
        let link = format!("{}/compute/v1/{instances_path}/{name}", self.base);
        let disk = json!({"name": name, "kind": "compute#disk", "status": "READY",
            "users": [link], "autoDelete": auto,
            "selfLink": format!("{}/compute/v1/{dpath}/{name}", self.base)});
        self.collections
            .entry(dpath)
            .or_default()
            .insert(name.to_string(), disk);
    }

    fn delete(&mut self, id: &str, path: &str) -> Answer {
        let (coll, name) = split(path);
        let (coll, name) = (coll.to_string(), name.to_string());
        if !self
            .collections
            .get(&coll)
            .is_some_and(|c| c.contains_key(&name))
        {
            return not_found(path);
        }
        let kind = coll.rsplit('/').next().unwrap_or("").to_string();
        // GCE refuses to delete a network something still uses; the operation says why.
        if kind == "networks" {
            let users: Vec<String> = self
                .collections
                .iter()
                .filter(|(c, _)| c.ends_with("/firewalls") || c.ends_with("/routes"))
                .flat_map(|(_, items)| items.values())
                .filter(|v| {
                    v["network"]
                        .as_str()
                        .is_some_and(|n| n.ends_with(&format!("/networks/{name}")))
                })
                .filter_map(|v| v["name"].as_str().map(str::to_string))
                .collect();
            if !users.is_empty() {
                return err(
                    400,
                    "resourceInUseByAnotherResource",
                    &format!(
                        "The network resource '{path}' is already being used by '{}'",
                        users.join(", ")
                    ),
                );
            }
        }
        let target = format!("{}/compute/v1/{path}", self.base);
        let answer = self.operation(id, path, target);
        if self.faults_pending_error(&answer) {
            return answer;
        }
        if let Some(c) = self.collections.get_mut(&coll) {
            c.remove(&name);
        }
        match kind.as_str() {
            "instances" => self.instance_gone(&coll, &name),
            "instanceGroupManagers" => {
                let ipath = coll.replace("instanceGroupManagers", "instances");
                let link = format!("{}/compute/v1/{path}", self.base);
                let members: Vec<String> = self
                    .collections
                    .get(&ipath)
                    .map(|c| {
                        c.iter()
                            .filter(|(_, v)| {
                                v["metadata"]["items"].as_array().is_some_and(|a| {
                                    a.iter().any(|i| i["value"].as_str() == Some(link.as_str()))
                                })
                            })
                            .map(|(n, _)| n.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                for m in members {
                    if let Some(c) = self.collections.get_mut(&ipath) {
                        c.remove(&m);
                    }
                    self.instance_gone(&ipath, &m);
                }
            }
            _ => {}
        }
        answer
    }

    fn instance_gone(&mut self, instances_path: &str, name: &str) {
        let dpath = instances_path.replace("/instances", "/disks");
        let link = format!("{}/compute/v1/{instances_path}/{name}", self.base);
        if let Some(disks) = self.collections.get_mut(&dpath) {
            disks.retain(|_, d| {
                let attached = d["users"]
                    .as_array()
                    .is_some_and(|u| u.iter().any(|x| x.as_str() == Some(link.as_str())));
                !(attached && d["autoDelete"].as_bool().unwrap_or(false))
            });
            for d in disks.values_mut() {
                if let Some(u) = d["users"].as_array_mut() {
                    u.retain(|x| x.as_str() != Some(link.as_str()));
                }
            }
        }
    }

    /// IAM service accounts: create (409 when it exists), get, delete, as iam.v1 answers.
    fn iam(&mut self, req: &Request, body: Option<&Value>) -> Answer {
        let seg: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        // v1/projects/{project}/serviceAccounts[/{email}]
        let project = seg.get(2).copied().unwrap_or("");
        match req.method_id.as_str() {
            "iam.projects.serviceAccounts.create" => {
                let id = body
                    .and_then(|b| b["accountId"].as_str())
                    .unwrap_or("")
                    .to_string();
                let ok_id = (6..=30).contains(&id.len())
                    && id.starts_with(|c: char| c.is_ascii_lowercase())
                    && id
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if !ok_id {
                    return err(400, "invalid", &format!("accountId {id:?} is not valid"));
                }
                let email = format!("{id}@{project}.iam.gserviceaccount.com");
                if self.service_accounts.contains_key(&email) {
                    return err(409, "alreadyExists", "Service account already exists.");
                }
                let sa = json!({
                    "name": format!("projects/{project}/serviceAccounts/{email}"),
                    "projectId": project,
                    "email": email,
                    "displayName": body.and_then(|b| b.pointer("/serviceAccount/displayName")).cloned().unwrap_or(Value::Null),
                    "uniqueId": self.id().to_string(),
                });
                self.service_accounts.insert(email, sa.clone());
                ok(sa)
            }
            "iam.projects.serviceAccounts.get" | "iam.projects.serviceAccounts.delete" => {
                let email = seg.get(4).copied().unwrap_or("").to_string();
                if req.method_id.ends_with("get") {
                    return match self.service_accounts.get(&email) {
                        Some(sa) => ok(sa.clone()),
                        None => err(404, "notFound", "Service account not found."),
                    };
                }
                match self.service_accounts.remove(&email) {
                    Some(_) => ok(json!({})),
                    None => err(404, "notFound", "Service account not found."),
                }
            }
            other => err(501, "notImplemented", &format!("the fake has no {other}")),
        }
    }

    fn storage(&mut self, req: &Request, body: Option<&Value>, raw: &[u8]) -> Answer {
        let q = |k: &str| {
            req.query
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        let seg: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        match req.method_id.as_str() {
            "storage.buckets.insert" => {
                let name = body
                    .and_then(|b| b["name"].as_str())
                    .unwrap_or("")
                    .to_string();
                if self.buckets.contains_key(&name) {
                    return err(409, "conflict", "Your previous request to create the named bucket succeeded and you already own it.");
                }
                let mut b = body.cloned().unwrap_or(json!({}));
                b["kind"] = json!("storage#bucket");
                b["id"] = json!(name);
                self.buckets.insert(name.clone(), b.clone());
                self.objects.entry(name).or_default();
                ok(b)
            }
            "storage.buckets.get" => match self.buckets.get(seg[3]) {
                Some(b) => ok(b.clone()),
                None => err(404, "notFound", "The specified bucket does not exist."),
            },
            "storage.buckets.delete" => {
                let b = seg[3].to_string();
                if !self.buckets.contains_key(&b) {
                    return err(404, "notFound", "The specified bucket does not exist.");
                }
                if self.objects.get(&b).is_some_and(|o| !o.is_empty()) {
                    return err(
                        409,
                        "conflict",
                        "The bucket you tried to delete is not empty.",
                    );
                }
                self.buckets.remove(&b);
                self.objects.remove(&b);
                Answer {
                    status: 204,
                    body: Value::Null,
                }
            }
            "storage.objects.insert" => {
                let b = seg.get(4).copied().unwrap_or("").to_string();
                let Some(name) = q("name") else {
                    return err(400, "required", "Required parameter: name");
                };
                let Some(objs) = self.objects.get_mut(&b) else {
                    return err(404, "notFound", "The specified bucket does not exist.");
                };
                objs.insert(name.clone(), raw.to_vec());
                // predefinedAcl: `private` is the owner alone; the default (the bucket's default
                // object ACL, `projectPrivate`) gives the project's members their roles.
                let owner = json!({"entity": "user-rktup-test@rktup-test.iam.gserviceaccount.com", "role": "OWNER"});
                let acl = match q("predefinedAcl").as_deref() {
                    Some("private") => vec![owner],
                    _ => vec![
                        json!({"entity": "project-owners-rktup-test", "role": "OWNER"}),
                        json!({"entity": "project-editors-rktup-test", "role": "OWNER"}),
                        json!({"entity": "project-viewers-rktup-test", "role": "READER"}),
                        owner,
                    ],
                };
                self.acls.insert((b.clone(), name.clone()), acl);
                ok(json!({"kind": "storage#object", "name": name, "bucket": b,
                    "size": raw.len().to_string()}))
            }
            "storage.objects.list" => {
                let b = seg[3].to_string();
                let Some(objs) = self.objects.get(&b) else {
                    return err(404, "notFound", "The specified bucket does not exist.");
                };
                let items: Vec<Value> = objs
                    .iter()
                    .map(|(n, d)| {
                        json!({"kind": "storage#object", "name": n, "bucket": b,
                        "size": d.len().to_string()})
                    })
                    .collect();
                ok(self.page(items, req, "storage#objects"))
            }
            "storage.objectAccessControls.insert" | "storage.objectAccessControls.list" => {
                let (b, o) = (seg[3].to_string(), seg[5..seg.len() - 1].join("/"));
                let Some(acl) = self.acls.get_mut(&(b.clone(), o.clone())) else {
                    return err(404, "notFound", "No such object.");
                };
                if req.method_id.ends_with("list") {
                    let items: Vec<Value> = acl
                        .iter()
                        .map(|e| {
                            let mut e = e.clone();
                            e["kind"] = json!("storage#objectAccessControl");
                            e["bucket"] = json!(b);
                            e["object"] = json!(o);
                            e
                        })
                        .collect();
                    return ok(json!({"kind": "storage#objectAccessControls", "items": items}));
                }
                let entry = body.cloned().unwrap_or(json!({}));
                let entity = entry["entity"].as_str().unwrap_or("").to_string();
                if entity.is_empty() || entry["role"].as_str().is_none() {
                    return err(400, "required", "Required: entity and role");
                }
                acl.retain(|e| e["entity"].as_str() != Some(entity.as_str()));
                acl.push(json!({"entity": entity, "role": entry["role"]}));
                let mut answer = json!({"entity": entity, "role": entry["role"]});
                answer["kind"] = json!("storage#objectAccessControl");
                ok(answer)
            }
            "storage.objects.get" | "storage.objects.delete" => {
                let (b, o) = (seg[3].to_string(), seg[5..].join("/"));
                let exists = self.objects.get(&b).is_some_and(|x| x.contains_key(&o));
                if !exists {
                    return err(404, "notFound", "No such object.");
                }
                if req.method_id.ends_with("delete") {
                    if let Some(x) = self.objects.get_mut(&b) {
                        x.remove(&o);
                    }
                    self.acls.remove(&(b.clone(), o.clone()));
                    return Answer {
                        status: 204,
                        body: Value::Null,
                    };
                }
                ok(json!({"kind": "storage#object", "name": o, "bucket": b}))
            }
            other => err(501, "notImplemented", &format!("the fake has no {other}")),
        }
    }
}

fn not_found(path: &str) -> Answer {
    err(
        404,
        "notFound",
        &format!("The resource '{path}' was not found"),
    )
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or((path, ""))
}

fn singular(collection: &str) -> String {
    match collection {
        "addresses" => "address".into(),
        c => c.strip_suffix('s').unwrap_or(c).to_string(),
    }
}

/// A service-account key file whose token_uri is the fake's: gcp_auth signs a JWT with the
/// key and posts it there, exactly as with Google's token endpoint.
pub fn service_account_json(fake: &Fake, private_key_pem: &str) -> String {
    let v: Map<String, Value> = [
        ("type", json!("service_account")),
        ("project_id", json!("rktup-test")),
        ("private_key_id", json!("0123456789abcdef")),
        ("private_key", json!(private_key_pem)),
        (
            "client_email",
            json!("rktup-test@rktup-test.iam.gserviceaccount.com"),
        ),
        ("client_id", json!("1234567890")),
        ("auth_uri", json!(format!("{}/auth", fake.base))),
        ("token_uri", json!(fake.token_uri())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Value::Object(v).to_string()
}
