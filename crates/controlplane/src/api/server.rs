//! HTTPS serving and request routing.

use super::auth::{self, Attributes, TokenStore, User};
use super::discovery;
use super::error::{ApiError, ApiResult};
use super::objects::{meta_str, Core, DeleteOptions, FieldValidation, ListOptions, WriteCtx};
use super::patch::{apply_patch, PatchType};
use super::selector::{FieldSelector, LabelSelector};
use super::{fields, openapi, protobuf, satoken, table, watch};
use crate::registry::{self, ResourceDef};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub type Body = BoxBody<Bytes, std::io::Error>;

/// Largest request body accepted (kube-apiserver's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

pub struct ApiServer {
    pub core: Arc<Core>,
    pub tokens: Arc<TokenStore>,
    /// Issues and verifies service-account tokens (TokenRequest).
    pub signer: Arc<satoken::TokenSigner>,
    /// host:port clients use, for /api's serverAddressByClientCIDRs.
    pub server_address: String,
    pub kubelet_tls: Arc<rustls::ClientConfig>,
    pub ready: AtomicBool,
}

fn full(status: StatusCode, ct: &str, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(ct) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    full(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_status(),
    )
}

fn with_warnings(mut r: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = http::HeaderValue::from_str(&text) {
            r.headers_mut().append("warning", v);
        }
    }
    r
}

fn success_status(details: Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

/// Parsed request context.
struct Req {
    method: Method,
    query: HashMap<String, String>,
    accept: String,
    content_type: String,
    user: User,
    user_agent: String,
}

impl Req {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true") | Some("1"))
    }
    fn wants_table(&self) -> bool {
        self.accept.split(',').any(|a| a.contains("as=Table"))
    }
    fn write_ctx(&self) -> WriteCtx {
        let manager = self
            .q("fieldManager")
            .map(String::from)
            .unwrap_or_else(|| self.user_agent.split('/').next().unwrap_or("").to_string());
        WriteCtx {
            manager,
            dry_run: self.q("dryRun").is_some_and(|v| v == "All"),
            validation: match self.q("fieldValidation") {
                Some("Strict") => FieldValidation::Strict,
                Some("Ignore") => FieldValidation::Ignore,
                _ => FieldValidation::Warn,
            },
            warnings: Vec::new(),
        }
    }
    fn list_options(&self) -> ApiResult<ListOptions> {
        Ok(ListOptions {
            labels: LabelSelector::parse(self.q("labelSelector").unwrap_or(""))?,
            fields: FieldSelector::parse(self.q("fieldSelector").unwrap_or(""))?,
            limit: self.q("limit").and_then(|l| l.parse().ok()),
            continue_token: self
                .q("continue")
                .filter(|c| !c.is_empty())
                .map(String::from),
        })
    }
}

fn parse_body(ct: &str, body: &[u8]) -> ApiResult<Value> {
    let base = ct.split(';').next().unwrap_or("").trim();
    if base.contains("yaml") {
        serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else if base.is_empty() || base.contains("json") {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))
    } else if base.eq_ignore_ascii_case(protobuf::CONTENT_TYPE) {
        protobuf::decode_body(body)
    } else {
        Err(ApiError::unsupported_media(base))
    }
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": crate::VERSION_MINOR,
        "gitVersion": crate::VERSION_GIT,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    })
}

impl ApiServer {
    /// Handles one request from an already-authenticated (or anonymous) client.
    pub async fn handle(
        self: Arc<Self>,
        user: Option<User>,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let path = req.uri().path().to_string();
        let segs: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        // Health and version are public (system:public-info-viewer).
        match segs.first().copied() {
            Some("healthz") | Some("livez") => {
                return full(StatusCode::OK, "text/plain; charset=utf-8", b"ok".to_vec())
            }
            Some("readyz") => {
                return if self.ready.load(Ordering::Acquire) {
                    full(StatusCode::OK, "text/plain; charset=utf-8", b"ok".to_vec())
                } else {
                    full(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain; charset=utf-8",
                        b"[-]poststarthook/controllers failed: not finished\nreadyz check failed"
                            .to_vec(),
                    )
                };
            }
            Some("version") if segs.len() == 1 => {
                return json_response(StatusCode::OK, &version_info())
            }
            _ => {}
        }
        let user = match user.or_else(|| self.bearer_user(&req)) {
            Some(u) => u,
            None => return error_response(&ApiError::unauthorized()),
        };
        let header = |h: http::header::HeaderName| {
            req.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let query: HashMap<String, String> =
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let r = Req {
            method: req.method().clone(),
            query,
            accept: header(http::header::ACCEPT),
            content_type: header(http::header::CONTENT_TYPE),
            user,
            user_agent: header(http::header::USER_AGENT),
        };
        if let ["api", "v1", "namespaces", ns, "pods", name, "exec"] = segs.as_slice() {
            // An upgrade: the request is handed on whole, its body never read.
            return match self.pod_exec(&r, ns, name, req).await {
                Ok(resp) => resp,
                Err(e) => error_response(&e),
            };
        }
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return error_response(&ApiError::bad_request(format!("failed to read body: {e}")))
            }
        };
        if body.len() > MAX_BODY {
            return error_response(&ApiError::new(
                413,
                "RequestEntityTooLarge",
                "Request entity too large",
            ));
        }
        match self.route(&segs, &r, &body).await {
            Ok(resp) => resp,
            Err(e) => error_response(&e),
        }
    }

    async fn route(&self, segs: &[&str], r: &Req, body: &[u8]) -> ApiResult<Response<Body>> {
        let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
        let not_found = || {
            ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        };
        let aggregated = |legacy: bool| {
            discovery::aggregated_version(&r.accept).map(|version| {
                let body = serde_json::to_vec(&discovery::aggregated(version, legacy));
                full(
                    StatusCode::OK,
                    &discovery::aggregated_content_type(version),
                    body.unwrap_or_default(),
                )
            })
        };
        match segs {
            ["api"] => match aggregated(true) {
                Some(resp) => Ok(resp),
                None => ok(discovery::api_versions(&self.server_address)),
            },
            ["apis"] => match aggregated(false) {
                Some(resp) => Ok(resp),
                None => ok(discovery::api_group_list()),
            },
            ["api", "v1"] => ok(discovery::resource_list("", "v1").ok_or_else(not_found)?),
            ["apis", g] => ok(discovery::api_group(g).ok_or_else(not_found)?),
            ["apis", g, v] => ok(discovery::resource_list(g, v).ok_or_else(not_found)?),
            ["openapi", "v3"] => ok(openapi::index()),
            ["openapi", "v3", rest @ ..] => {
                let p = rest.join("/");
                let (bytes, _) = openapi::documents().get(&p).ok_or_else(not_found)?;
                Ok(full(StatusCode::OK, "application/json", bytes.clone()))
            }
            [".well-known", "openid-configuration"] if r.method == Method::GET => {
                ok(satoken::openid_configuration(&self.server_address))
            }
            ["openid", "v1", "jwks"] if r.method == Method::GET => ok(self.signer.jwks()),
            ["apis", "authentication.k8s.io", "v1", "selfsubjectreviews"] => {
                self.self_subject_review(r, body)
            }
            ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => self.token_review(r, body),
            ["api", "v1", rest @ ..] => self.resource("", "v1", rest, r, body).await,
            ["apis", g, v, rest @ ..] => self.resource(g, v, rest, r, body).await,
            _ => Err(not_found()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn authorize(
        &self,
        r: &Req,
        verb: &str,
        rd: &ResourceDef,
        sub: Option<&str>,
        ns: Option<&str>,
        name: &str,
        existing: Option<&Value>,
        incoming: Option<&Value>,
    ) -> ApiResult<()> {
        let attrs = Attributes {
            verb,
            resource: rd,
            subresource: sub,
            namespace: ns,
            name,
            existing,
            incoming,
            related: None,
        };
        if auth::authorize(&r.user, &attrs) {
            Ok(())
        } else {
            let shown = match sub {
                Some(s) => format!("{}/{s}", rd.plural),
                None => rd.plural.to_string(),
            };
            let mut e =
                ApiError::forbidden(&r.user.name, verb, rd, ns.filter(|_| rd.namespaced), name);
            e.message = e.message.replace(
                &format!("resource \"{}\"", rd.plural),
                &format!("resource \"{shown}\""),
            );
            Err(e)
        }
    }

    /// The user of a bearer token in the request's Authorization header.
    fn bearer_user(&self, req: &Request<Incoming>) -> Option<User> {
        let h = req
            .headers()
            .get(http::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        let tok = h.strip_prefix("Bearer ")?.trim();
        self.token_user(tok).ok()
    }

    /// The user of a bearer token: a node token, a service-account JWT
    /// (TokenRequest) or a legacy service-account token Secret; else why not.
    fn token_user(&self, tok: &str) -> Result<User, String> {
        if tok.is_empty() {
            return Err("empty token".into());
        }
        if let Some(u) = self.tokens.lookup(tok) {
            return Ok(u);
        }
        if satoken::is_jwt(tok) {
            return satoken::authenticate(&self.signer, &self.core, tok);
        }
        service_account_user(&self.core, tok).ok_or_else(|| "invalid bearer token".into())
    }

    /// Authorizes a TokenRequest for service account `name`: nodes only for
    /// pods bound to them (the pod the request binds to is looked up here),
    /// with upstream's reasons when refused.
    fn authorize_token(
        &self,
        r: &Req,
        rd: &ResourceDef,
        ns: &str,
        name: &str,
        sa: Option<&Value>,
        request: &Value,
    ) -> ApiResult<()> {
        let pod_name = request
            .pointer("/spec/boundObjectRef")
            .filter(|b| b.get("kind").and_then(Value::as_str) == Some("Pod"))
            .and_then(|b| b.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        let pod = pod_name.and_then(|p| self.core.get_stored(registry::pods(), Some(ns), p));
        let attrs = Attributes {
            verb: "create",
            resource: rd,
            subresource: Some("token"),
            namespace: Some(ns),
            name,
            existing: sa,
            incoming: Some(request),
            related: pod.as_ref().map(|p| &*p.object),
        };
        if auth::authorize(&r.user, &attrs) {
            return Ok(());
        }
        let mut e = ApiError::forbidden(&r.user.name, "create", rd, Some(ns), name);
        e.message = e.message.replace(
            &format!("resource \"{}\"", rd.plural),
            &format!("resource \"{}/token\"", rd.plural),
        );
        if let Some(node) = r.user.node_name() {
            match auth::node_token_request(node, name, Some(request), attrs.related) {
                Err(auth::TokenDenied::Admission(why)) => {
                    e.message = format!("{} \"{name}\" is forbidden: {why}", rd.plural);
                }
                _ => {
                    e.message = format!(
                        "{}: no relationship found between node '{node}' and this object",
                        e.message
                    );
                }
            }
        }
        Err(e)
    }

    /// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews` (`kubectl auth
    /// whoami`): who the caller is authenticated as.
    fn self_subject_review(&self, r: &Req, body: &[u8]) -> ApiResult<Response<Body>> {
        if r.method != Method::POST {
            return Err(ApiError::method_not_allowed());
        }
        if body.iter().any(|b| !b.is_ascii_whitespace()) {
            ApiError::check_body_kind(&parse_body(&r.content_type, body)?, "SelfSubjectReview")?;
        }
        let groups = r.user.reported_groups();
        Ok(json_response(
            StatusCode::CREATED,
            &json!({
                "kind": "SelfSubjectReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": super::objects::now()},
                "status": {"userInfo": {"username": r.user.name, "groups": groups}},
            }),
        ))
    }

    /// `POST /apis/authentication.k8s.io/v1/tokenreviews`: whether a bearer
    /// token authenticates, and as whom (what webhook token authenticators
    /// and auth proxies ask). Allowed to admins and nodes, as upstream's
    /// `system:auth-delegator` and `system:node` roles allow it.
    fn token_review(&self, r: &Req, body: &[u8]) -> ApiResult<Response<Body>> {
        if r.method != Method::POST {
            return Err(ApiError::method_not_allowed());
        }
        let node = r.user.groups.iter().any(|g| g == "system:nodes");
        if !(r.user.is_admin() || node) {
            let rd = discovery::review_resource("tokenreviews").ok_or_else(not_found_any)?;
            return Err(ApiError::forbidden(&r.user.name, "create", rd, None, ""));
        }
        let review = parse_body(&r.content_type, body)?;
        ApiError::check_body_kind(&review, "TokenReview")?;
        let token = review
            .pointer("/spec/token")
            .and_then(Value::as_str)
            .unwrap_or("");
        if token.is_empty() {
            // Upstream's wording (pkg/registry/authentication/tokenreview).
            return Err(ApiError::bad_request(
                "token is required for TokenReview in authentication",
            ));
        }
        let wanted = satoken::requested_audiences(&review, "TokenReview")?;
        // Every token this server accepts is for its own audience (the issuer).
        let audience_ok = wanted.is_empty() || wanted.iter().any(|a| a == satoken::ISSUER);
        let status = match self.token_user(token) {
            Ok(user) if audience_ok => json!({
                "authenticated": true,
                "user": {"username": user.name, "groups": user.reported_groups()},
                "audiences": [satoken::ISSUER],
            }),
            Ok(_) => json!({
                "user": {},
                "error": format!(
                    "token audiences [{:?}] is invalid for the target audiences {wanted:?}",
                    satoken::ISSUER
                ),
            }),
            Err(why) => json!({"user": {}, "error": why}),
        };
        let mut spec = json!({"token": token});
        if !wanted.is_empty() {
            spec["audiences"] = json!(wanted);
        }
        Ok(json_response(
            StatusCode::CREATED,
            &json!({
                "kind": "TokenReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": super::objects::now()},
                "spec": spec,
                "status": status,
            }),
        ))
    }

    async fn resource(
        &self,
        group: &str,
        version: &str,
        rest: &[&str],
        r: &Req,
        body: &[u8],
    ) -> ApiResult<Response<Body>> {
        let (ns, rest) = match rest {
            ["namespaces", ns, tail @ ..]
                if !tail.is_empty() && !matches!(tail[0], "status" | "finalize") =>
            {
                (Some(*ns), tail)
            }
            _ => (None, rest),
        };
        let not_found = || {
            ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        };
        let (plural, name, sub) = match rest {
            [p] => (*p, None, None),
            [p, n] => (*p, Some(*n), None),
            [p, n, s] => (*p, Some(*n), Some(*s)),
            _ => return Err(not_found()),
        };
        let rd = registry::find(group, version, plural).ok_or_else(not_found)?;
        if let Some(s) = sub {
            if !rd.subresources.contains(&s) {
                return Err(not_found());
            }
        }
        if rd.namespaced != ns.is_some() && name.is_some() {
            return Err(not_found());
        }
        let ns = if rd.namespaced { ns } else { None };
        match (name, &r.method) {
            (None, &Method::GET) => {
                let verb = if r.flag("watch") { "watch" } else { "list" };
                self.authorize(r, verb, rd, None, ns, "", None, None)?;
                if r.flag("watch") {
                    self.watch(rd, ns, r)
                } else {
                    self.list(rd, ns, r)
                }
            }
            (None, &Method::POST) => {
                let obj = parse_body(&r.content_type, body)?;
                self.authorize(r, "create", rd, None, ns, "", None, Some(&obj))?;
                let mut ctx = r.write_ctx();
                let created = self.core.create(rd, ns, obj, &mut ctx)?;
                Ok(with_warnings(
                    json_response(StatusCode::CREATED, &created),
                    &ctx.warnings,
                ))
            }
            (None, &Method::DELETE) => {
                self.authorize(r, "deletecollection", rd, None, ns, "", None, None)?;
                let opts = self.delete_options(r, body)?;
                let (items, rev, _) = self.core.list(rd, ns, &r.list_options()?)?;
                let mut out = Vec::new();
                for it in items {
                    match self.core.delete(
                        rd,
                        Some(meta_str(&it, "namespace")),
                        meta_str(&it, "name"),
                        &opts,
                    ) {
                        Ok(v) => out.push(v),
                        Err(e) if e.code == 404 => {}
                        Err(e) => return Err(e),
                    }
                }
                ok_list(rd, out, rev)
            }
            (Some(name), m) => self.item(rd, ns, name, sub, m, r, body).await,
            _ => Err(ApiError::method_not_allowed()),
        }
    }

    fn delete_options(&self, r: &Req, body: &[u8]) -> ApiResult<DeleteOptions> {
        let mut opts = if body.iter().any(|b| !b.is_ascii_whitespace()) {
            DeleteOptions::from_value(&parse_body(&r.content_type, body)?)
        } else {
            DeleteOptions::default()
        };
        if let Some(g) = r.q("gracePeriodSeconds").and_then(|g| g.parse().ok()) {
            opts.grace_period = Some(g);
        }
        if let Some(p) = r.q("propagationPolicy") {
            opts.propagation = Some(p.to_string());
        }
        if r.q("dryRun") == Some("All") {
            opts.dry_run = true;
        }
        Ok(opts)
    }

    fn list(
        &self,
        rd: &'static ResourceDef,
        ns: Option<&str>,
        r: &Req,
    ) -> ApiResult<Response<Body>> {
        let opts = r.list_options()?;
        if let Some(rv) = r
            .q("resourceVersion")
            .filter(|v| !v.is_empty() && *v != "0")
        {
            let want: u64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version \"{rv}\"")))?;
            if want > self.core.store.revision() {
                return Err(ApiError::new(
                    504,
                    "Timeout",
                    format!(
                        "Too large resource version: {want}, current: {}",
                        self.core.store.revision()
                    ),
                ));
            }
        }
        let (items, rev, cont) = self.core.list(rd, ns, &opts)?;
        if r.wants_table() {
            let refs: Vec<&Value> = items.iter().map(|a| &**a).collect();
            let t = table::table(
                rd,
                &refs,
                &rev.to_string(),
                cont.as_deref(),
                r.q("includeObject").unwrap_or("Metadata"),
                true,
            );
            return Ok(json_response(StatusCode::OK, &t));
        }
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if let Some(c) = cont {
            meta["continue"] = json!(c);
        }
        // Serialise items without cloning them into a Value tree.
        let mut out = Vec::with_capacity(256 + items.len() * 512);
        out.extend_from_slice(
            format!(
                "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
                rd.kind,
                rd.api_version(),
                meta
            )
            .as_bytes(),
        );
        for (i, it) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &**it)
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
        out.extend_from_slice(b"]}");
        Ok(full(StatusCode::OK, "application/json", out))
    }

    fn watch(
        &self,
        rd: &'static ResourceDef,
        ns: Option<&str>,
        r: &Req,
    ) -> ApiResult<Response<Body>> {
        let timeout = r
            .q("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(1800);
        let params = watch::WatchParams {
            resource_version: r.q("resourceVersion").unwrap_or("").to_string(),
            bookmarks: r.flag("allowWatchBookmarks"),
            send_initial_events: r.flag("sendInitialEvents"),
            timeout: Duration::from_secs(timeout),
            as_table: r.wants_table(),
        };
        let rx = watch::start(
            self.core.clone(),
            rd,
            ns.map(String::from),
            r.list_options()?,
            params,
        )?;
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
        });
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        let ct = if r.wants_table() {
            "application/json;as=Table;v=v1;g=meta.k8s.io"
        } else {
            "application/json"
        };
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(ct),
        );
        resp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache, private"),
        );
        Ok(resp)
    }

    #[allow(clippy::too_many_arguments)]
    async fn item(
        &self,
        rd: &'static ResourceDef,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        m: &Method,
        r: &Req,
        body: &[u8],
    ) -> ApiResult<Response<Body>> {
        let existing = self.core.get_stored(rd, ns, name);
        let existing_obj = existing.as_ref().map(|s| &*s.object);
        match (m, sub) {
            (&Method::POST, Some("token")) => {
                let ns = ns.ok_or_else(not_found_any)?;
                let tr = parse_body(&r.content_type, body)?;
                self.authorize_token(r, rd, ns, name, existing_obj, &tr)?;
                let sa = existing_obj.ok_or_else(|| ApiError::not_found(rd, name))?;
                let out = satoken::token_request(&self.signer, &self.core, ns, sa, &tr)?;
                Ok(json_response(StatusCode::CREATED, &out))
            }
            (_, Some("token")) => Err(ApiError::method_not_allowed()),
            (&Method::GET, Some("log")) => {
                self.authorize(r, "get", rd, sub, ns, name, existing_obj, None)?;
                let pod = existing_obj.ok_or_else(|| ApiError::not_found(rd, name))?;
                self.pod_log(pod, r).await
            }
            (&Method::GET, Some("scale")) => {
                self.authorize(r, "get", rd, sub, ns, name, existing_obj, None)?;
                let obj = existing_obj.ok_or_else(|| ApiError::not_found(rd, name))?;
                Ok(json_response(StatusCode::OK, &scale_of(obj)))
            }
            (&Method::GET, _) => {
                self.authorize(r, "get", rd, sub, ns, name, existing_obj, None)?;
                let obj = existing_obj.ok_or_else(|| ApiError::not_found(rd, name))?;
                if r.wants_table() {
                    let rv = meta_str(obj, "resourceVersion").to_string();
                    return Ok(json_response(
                        StatusCode::OK,
                        &table::table(
                            rd,
                            &[obj],
                            &rv,
                            None,
                            r.q("includeObject").unwrap_or("Metadata"),
                            true,
                        ),
                    ));
                }
                Ok(json_response(StatusCode::OK, obj))
            }
            (&Method::POST, Some("binding")) => {
                let b = parse_body(&r.content_type, body)?;
                self.authorize(r, "create", rd, sub, ns, name, existing_obj, Some(&b))?;
                let node = b
                    .pointer("/target/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                self.bind(rd, ns, name, &node)?;
                Ok(json_response(
                    StatusCode::CREATED,
                    &success_status(json!({"name": name, "kind": "pods"})),
                ))
            }
            (&Method::POST, Some("eviction")) => {
                let ev = parse_body(&r.content_type, body)?;
                self.authorize(r, "create", rd, sub, ns, name, existing_obj, Some(&ev))?;
                let opts = ev
                    .get("deleteOptions")
                    .map(DeleteOptions::from_value)
                    .unwrap_or_default();
                self.core.delete(rd, ns, name, &opts)?;
                Ok(json_response(
                    StatusCode::CREATED,
                    &success_status(json!({"name": name, "kind": "pods"})),
                ))
            }
            (&Method::PUT, Some("scale")) | (&Method::PATCH, Some("scale")) => {
                self.authorize(
                    r,
                    if *m == Method::PUT { "update" } else { "patch" },
                    rd,
                    sub,
                    ns,
                    name,
                    existing_obj,
                    None,
                )?;
                let obj = existing_obj.ok_or_else(|| ApiError::not_found(rd, name))?;
                let current = scale_of(obj);
                let wanted = if *m == Method::PUT {
                    parse_body(&r.content_type, body)?
                } else {
                    apply_patch(
                        &current,
                        PatchType::from_content_type(&r.content_type)?,
                        body,
                    )?
                };
                let replicas = wanted
                    .pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let rv = meta_str(&wanted, "resourceVersion").to_string();
                let mut ctx = r.write_ctx();
                let updated = self.core.modify(rd, ns, name, None, &mut ctx, |o| {
                    let mut o = o.clone();
                    if !rv.is_empty() && meta_str(&o, "resourceVersion") != rv {
                        return Err(ApiError::conflict(rd, name));
                    }
                    o["spec"]["replicas"] = json!(replicas);
                    Ok(o)
                })?;
                Ok(json_response(StatusCode::OK, &scale_of(&updated)))
            }
            (&Method::PUT, sub) => {
                let obj = parse_body(&r.content_type, body)?;
                self.authorize(r, "update", rd, sub, ns, name, existing_obj, Some(&obj))?;
                let mut ctx = r.write_ctx();
                let sub = if sub == Some("finalize") { None } else { sub };
                let out = self.core.update(rd, ns, name, obj, sub, &mut ctx)?;
                if rd.kind == "Namespace"
                    && rd.group.is_empty()
                    && out.pointer("/metadata/deletionTimestamp").is_some()
                    && out
                        .pointer("/spec/finalizers")
                        .and_then(Value::as_array)
                        .is_none_or(|a| a.is_empty())
                {
                    // Finalizing the last namespace finalizer removes it.
                    let _ = self.core.store.delete(&rd.key(None, name), None);
                }
                Ok(with_warnings(
                    json_response(StatusCode::OK, &out),
                    &ctx.warnings,
                ))
            }
            (&Method::PATCH, sub) => {
                let ty = PatchType::from_content_type(&r.content_type)?;
                self.authorize(r, "patch", rd, sub, ns, name, existing_obj, None)?;
                let mut ctx = r.write_ctx();
                if ty == PatchType::Apply {
                    return self.server_side_apply(rd, ns, name, sub, r, body, &mut ctx);
                }
                let out = self.core.modify(rd, ns, name, sub, &mut ctx, |cur| {
                    apply_patch(cur, ty, body)
                })?;
                Ok(with_warnings(
                    json_response(StatusCode::OK, &out),
                    &ctx.warnings,
                ))
            }
            (&Method::DELETE, None) => {
                self.authorize(r, "delete", rd, None, ns, name, existing_obj, None)?;
                let opts = self.delete_options(r, body)?;
                let out = self.core.delete(rd, ns, name, &opts)?;
                let code = if out.pointer("/metadata/deletionTimestamp").is_some()
                    && self.core.get_stored(rd, ns, name).is_some()
                {
                    StatusCode::ACCEPTED
                } else {
                    StatusCode::OK
                };
                Ok(json_response(code, &out))
            }
            _ => Err(ApiError::method_not_allowed()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn server_side_apply(
        &self,
        rd: &'static ResourceDef,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        r: &Req,
        body: &[u8],
        ctx: &mut WriteCtx,
    ) -> ApiResult<Response<Body>> {
        let manager = r.q("fieldManager").filter(|m| !m.is_empty()).ok_or_else(|| {
            ApiError::new(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
        })?;
        let config = parse_body("application/yaml", body)?;
        let force = r.flag("force");
        let av = rd.api_version();
        ctx.manager = "__apply__".into();
        if self.core.get_stored(rd, ns, name).is_none() {
            let mut obj = fields::apply(None, &config, manager, force, &av)?;
            obj["metadata"]["name"] = json!(name);
            let created = self.core.create(rd, ns, obj, ctx)?;
            return Ok(json_response(StatusCode::CREATED, &created));
        }
        let out = self.core.modify(rd, ns, name, sub, ctx, |cur| {
            let merged = fields::apply(Some(cur), &config, manager, force, &av)?;
            Ok(merged)
        })?;
        // managedFields are kept from the merged object: write them through.
        Ok(with_warnings(
            json_response(StatusCode::OK, &out),
            &ctx.warnings,
        ))
    }

    fn bind(
        &self,
        rd: &'static ResourceDef,
        ns: Option<&str>,
        name: &str,
        node: &str,
    ) -> ApiResult<Value> {
        if node.is_empty() {
            return Err(ApiError::invalid(
                rd,
                name,
                vec![super::error::cause(
                    "FieldValueRequired",
                    "target.name",
                    "Required value",
                )],
            ));
        }
        let mut ctx = WriteCtx::controller("kube-scheduler");
        self.core.modify(rd, ns, name, None, &mut ctx, |o| {
            let cur = o.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
            if !cur.is_empty() {
                return Err(ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{cur}\"")));
            }
            if o.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is being deleted, cannot be assigned to a host")));
            }
            let mut o = o.clone();
            o["spec"]["nodeName"] = json!(node);
            let conds = o.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
            let mut conds: Vec<Value> = conds.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
            conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": super::objects::now()}));
            o["status"]["conditions"] = json!(conds);
            Ok(o)
        })
    }

    /// The container a pods/log or pods/exec request means: `container`, or the only one.
    fn pick_container(pod: &Value, r: &Req) -> ApiResult<String> {
        let name = meta_str(pod, "name");
        let containers: Vec<&str> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        match r.q("container").filter(|c| !c.is_empty()) {
            Some(c) => {
                if !containers.contains(&c) {
                    return Err(ApiError::bad_request(format!(
                        "container {c} is not valid for pod {name}"
                    )));
                }
                Ok(c.to_string())
            }
            None if containers.len() == 1 => Ok(containers[0].to_string()),
            None => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            ))),
        }
    }

    /// The address and port of the kubelet running `pod`.
    fn kubelet_of(&self, pod: &Value) -> ApiResult<(String, u16)> {
        let name = meta_str(pod, "name");
        let node_name = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if node_name.is_empty() {
            return Err(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )));
        }
        let nodes = registry::find("", "v1", "nodes").ok_or_else(|| ApiError::internal("nodes"))?;
        let node = self.core.get(nodes, None, node_name)?;
        let addrs = node
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ip = ["InternalIP", "ExternalIP", "Hostname"]
            .iter()
            .find_map(|t| {
                addrs
                    .iter()
                    .find(|a| a["type"] == *t)
                    .and_then(|a| a["address"].as_str())
                    .map(String::from)
            })
            .ok_or_else(|| ApiError::internal(format!("no address for node {node_name}")))?;
        let port = node
            .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(10250);
        Ok((ip, port))
    }

    /// Proxies `pods/log` to the node's kubelet port (`/containerLogs/...`).
    async fn pod_log(&self, pod: &Value, r: &Req) -> ApiResult<Response<Body>> {
        let name = meta_str(pod, "name");
        let ns = meta_str(pod, "namespace");
        let container = Self::pick_container(pod, r)?;
        let (ip, port) = self.kubelet_of(pod)?;
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for k in [
                "follow",
                "previous",
                "timestamps",
                "tailLines",
                "sinceSeconds",
                "sinceTime",
                "limitBytes",
            ] {
                if let Some(v) = r.q(k) {
                    q.append_pair(k, v);
                }
            }
            q.finish()
        };
        let path = format!("/containerLogs/{ns}/{name}/{container}?{query}");
        let upstream =
            kubelet_get(&self.kubelet_tls, &ip, port, &path, http::HeaderMap::new()).await?;
        let status = upstream.status();
        if !status.is_success() {
            return Err(kubelet_error(upstream).await);
        }
        let mut resp = Response::new(upstream.into_body().map_err(std::io::Error::other).boxed());
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        Ok(resp)
    }

    /// `pods/exec`: the client's WebSocket upgrade is passed on to the node's kubelet port
    /// (`/exec/...`, with kube-apiserver's parameter names), then bytes are copied both ways
    /// until either side closes — the API server does not read the streams.
    async fn pod_exec(
        &self,
        r: &Req,
        ns: &str,
        name: &str,
        mut req: Request<Incoming>,
    ) -> ApiResult<Response<Body>> {
        let rd = registry::pods();
        let existing = self.core.get_stored(rd, Some(ns), name);
        let existing_obj = existing.as_ref().map(|s| &*s.object);
        self.authorize(
            r,
            "create",
            rd,
            Some("exec"),
            Some(ns),
            name,
            existing_obj,
            None,
        )?;
        let pod = existing_obj.ok_or_else(|| ApiError::not_found(rd, name))?;
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if matches!(phase, "Succeeded" | "Failed") {
            return Err(ApiError::bad_request(format!(
                "cannot exec into a container in a completed pod; current phase is {phase}"
            )));
        }
        let container = Self::pick_container(pod, r)?;
        let (ip, port) = self.kubelet_of(pod)?;
        // Repeated `command` parameters keep their order (the parsed query map would not).
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
                let k = match k.as_ref() {
                    "command" => "command",
                    "stdin" => "input",
                    "stdout" => "output",
                    "stderr" => "error",
                    "tty" => "tty",
                    _ => continue,
                };
                q.append_pair(k, &v);
            }
            q.finish()
        };
        let path = format!("/exec/{ns}/{name}/{container}?{query}");
        let mut handshake = http::HeaderMap::new();
        copy_headers(
            req.headers(),
            &mut handshake,
            [
                http::header::CONNECTION,
                http::header::UPGRADE,
                http::header::SEC_WEBSOCKET_KEY,
                http::header::SEC_WEBSOCKET_VERSION,
                http::header::SEC_WEBSOCKET_PROTOCOL,
            ],
        );
        let mut upstream = kubelet_get(&self.kubelet_tls, &ip, port, &path, handshake).await?;
        if upstream.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(kubelet_error(upstream).await);
        }
        let mut resp = Response::new(Full::new(Bytes::new()).map_err(|e| match e {}).boxed());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        copy_headers(
            upstream.headers(),
            resp.headers_mut(),
            [
                http::header::CONNECTION,
                http::header::UPGRADE,
                http::header::SEC_WEBSOCKET_ACCEPT,
                http::header::SEC_WEBSOCKET_PROTOCOL,
            ],
        );
        let client_side = hyper::upgrade::on(&mut req);
        let node_side = hyper::upgrade::on(&mut upstream);
        tokio::spawn(async move {
            if let (Ok(client), Ok(node)) = tokio::join!(client_side, node_side) {
                let mut client = hyper_util::rt::TokioIo::new(client);
                let mut node = hyper_util::rt::TokioIo::new(node);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut node).await;
            }
        });
        Ok(resp)
    }
}

/// The WebSocket handshake's headers, from one side of the pods/exec proxy to the other.
fn copy_headers<const N: usize>(
    from: &http::HeaderMap,
    to: &mut http::HeaderMap,
    names: [http::header::HeaderName; N],
) {
    for h in names {
        if let Some(v) = from.get(&h) {
            to.insert(h, v.clone());
        }
    }
}

/// A kubelet's non-success answer as a Status kubectl prints (like kube-apiserver: the kubelet's
/// own words).
async fn kubelet_error(upstream: Response<Incoming>) -> ApiError {
    let status = upstream.status();
    let body = upstream
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_else(|| text.trim().to_string());
    let reason = match status.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        422 => "Invalid",
        _ => "InternalError",
    };
    ApiError::new(status.as_u16(), reason, message)
}

/// `GET path` on a kubelet port over its own connection, with `headers` (upgrades allowed:
/// pods/exec); a failure to reach the kubelet is an InternalError naming the URL.
async fn kubelet_get(
    tls: &Arc<rustls::ClientConfig>,
    ip: &str,
    port: u16,
    path: &str,
    headers: http::HeaderMap,
) -> ApiResult<Response<Incoming>> {
    let exchange = async {
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect((ip, port)),
        )
        .await
        .map_err(|_| "dial timeout".to_string())?
        .map_err(|e| e.to_string())?;
        let server_name =
            rustls::pki_types::ServerName::try_from(ip.to_string()).map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(server_name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn.with_upgrades());
        let mut req = Request::get(path)
            .header(http::header::HOST, format!("{ip}:{port}"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        req.headers_mut().extend(headers);
        send.send_request(req).await.map_err(|e| e.to_string())
    };
    exchange
        .await
        .map_err(|e| ApiError::internal(format!("Get \"https://{ip}:{port}{path}\": {e}")))
}

/// Authenticates a legacy service-account token Secret (type
/// `kubernetes.io/service-account-token`) as
/// `system:serviceaccount:<ns>:<name>`.
fn service_account_user(core: &Core, token: &str) -> Option<User> {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(token.as_bytes());
    let secrets = registry::find("", "v1", "secrets")?;
    let (all, _) = core.store.list(&secrets.key_prefix(None));
    let s = all.iter().find(|s| {
        s.object.get("type").and_then(Value::as_str) == Some("kubernetes.io/service-account-token")
            && s.object.pointer("/data/token").and_then(Value::as_str) == Some(encoded.as_str())
    })?;
    let ns = meta_str(&s.object, "namespace");
    let sa = s
        .object
        .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
        .and_then(Value::as_str)?;
    Some(satoken::service_account_user(ns, sa))
}

fn ok_list(rd: &ResourceDef, items: Vec<Value>, rev: u64) -> ApiResult<Response<Body>> {
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": format!("{}List", rd.kind), "apiVersion": rd.api_version(), "metadata": {"resourceVersion": rev.to_string()}, "items": items}),
    ))
}

/// The autoscaling/v1 Scale view of a workload.
fn scale_of(obj: &Value) -> Value {
    let sel = obj.pointer("/spec/selector").map(|s| {
        let mut parts: Vec<String> = s
            .get("matchLabels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default();
        parts.sort();
        parts.join(",")
    });
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta_str(obj, "name"),
            "namespace": meta_str(obj, "namespace"),
            "uid": meta_str(obj, "uid"),
            "resourceVersion": meta_str(obj, "resourceVersion"),
            "creationTimestamp": meta_str(obj, "creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {"replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0), "selector": sel.unwrap_or_default()},
    })
}

fn not_found_any() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}
