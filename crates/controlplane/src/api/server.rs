//! The API server: [`ApiServer`] owns the shared state and handles a
//! request in this order: public endpoints (health, version), then
//! authentication (`auth/authn.rs`; 401), then the routing table
//! (`routes.rs`) picks a handler (`handlers/`), which authorizes
//! (`auth/authz.rs`; 403) before the object layer admits and stores
//! (`objects.rs`).

use super::auth::{authn, authz, Rbac, TokenStore, User};
use super::error::{ApiError, ApiResult};
use super::objects::Core;
use super::request::{self, Call, Req};
use super::response::error_response;
use super::routes::{self, Action, Route};
use super::satoken;
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use super::response::Body;

pub struct ApiServer {
    pub core: Arc<Core>,
    pub tokens: Arc<TokenStore>,
    /// Issues and verifies service-account tokens (TokenRequest).
    pub signer: Arc<satoken::TokenSigner>,
    /// host:port clients use, for /api's serverAddressByClientCIDRs.
    pub server_address: String,
    pub kubelet_tls: Arc<rustls::ClientConfig>,
    pub ready: AtomicBool,
    /// The RBAC index every request is authorized against.
    pub rbac: Arc<Rbac>,
    /// Aggregated APIs: their requests are proxied (`aggregator.rs`).
    pub aggregator: Arc<super::aggregator::Aggregator>,
}

impl ApiServer {
    /// Handles one request from a client with a verified client certificate
    /// (`user`) or none. At `--v` 3 (`debug!`) each request is logged as kube-apiserver's
    /// httplog does at -v=3: verb, URI, latency (to the response's head: a watch streams on),
    /// user agent and response code.
    pub async fn handle(
        self: Arc<Self>,
        user: Option<User>,
        req: Request<Incoming>,
    ) -> Response<Body> {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return self.route(user, req).await;
        }
        let started = std::time::Instant::now();
        let verb = req.method().clone();
        let uri = req.uri().clone();
        let agent = req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let resp = self.route(user, req).await;
        tracing::debug!(
            verb = %verb,
            URI = %uri,
            latency = ?started.elapsed(),
            userAgent = agent,
            resp = resp.status().as_u16(),
            "HTTP"
        );
        resp
    }

    async fn route(self: Arc<Self>, user: Option<User>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let query = request::query(req.uri());
        let served = self.core.resources();
        let route = routes::resolve(
            &served,
            req.method(),
            &segs,
            request::is_set(&query, "watch"),
        );
        if let Route::Public(p) = route {
            return self.public(p);
        }
        let user = user
            .or_else(|| authn::bearer_user(req.headers(), &self.tokens, &self.signer, &self.core));
        let Some(mut user) = user else {
            return error_response(&ApiError::unauthorized());
        };
        if authz::impersonation_requested(req.headers()) {
            user = match authz::impersonate(&self.rbac, &user, req.headers()) {
                Ok(u) => u,
                Err(e) => return error_response(&e),
            };
        }
        // An aggregated group version goes to its backend, which authorizes (upstream's
        // aggregator only requires an authenticated user).
        if let Some(apiservice) = self.aggregator.target(&self.core, &segs) {
            return self
                .aggregator
                .proxy(&self.core, &apiservice, &user, req)
                .await;
        }
        if let Route::Document(_) = route {
            let verb = match *req.method() {
                http::Method::GET | http::Method::HEAD => "get".to_string(),
                ref m => m.as_str().to_ascii_lowercase(),
            };
            if let Err(e) = authz::check_url(&self.rbac, &user, &verb, &path) {
                return error_response(&e);
            }
        }
        let r = Req::new(
            req.method().clone(),
            req.headers(),
            query,
            user,
            self.rbac.clone(),
        );
        let result = match route {
            // An upgrade: the request is handed on whole, its body never read.
            Route::Resource(t, Action::Exec) => {
                let stored = self.core.get_stored(t.rd, t.ns, t.name);
                let c = Call {
                    r: &r,
                    t: &t,
                    action: Action::Exec,
                    existing: stored.as_ref().map(|s| &*s.object),
                    body: &[],
                };
                self.exec(&c, req).await
            }
            // Passed on to the node whole, its body read by the handler.
            Route::Resource(t, a @ Action::Proxy(_)) => self.node_proxy(&r, &t, a, req).await,
            route => match request::read_body(req).await {
                Ok(body) => self.dispatch(route, &r, &body).await,
                Err(e) => Err(e),
            },
        };
        result.unwrap_or_else(|e| error_response(&e))
    }

    async fn dispatch(&self, route: Route<'_>, r: &Req, body: &[u8]) -> ApiResult<Response<Body>> {
        let (t, action) = match route {
            Route::Public(p) => return Ok(self.public(p)),
            Route::Document(d) => return self.document(&d, r),
            Route::SelfSubjectReview => return self.self_subject_review(r, body),
            Route::TokenReview => return self.token_review(r, body),
            Route::AccessReview { plural, ns } => return self.access_review(r, plural, ns, body),
            Route::NotFound => return Err(ApiError::path_not_found()),
            Route::MethodNotAllowed => return Err(ApiError::method_not_allowed()),
            Route::Resource(t, action) => (t, action),
        };
        let stored = if t.name.is_empty() {
            None
        } else {
            self.core.get_stored(t.rd, t.ns, t.name)
        };
        // At the requested version (a custom resource is stored at its storage version).
        let existing = stored.as_ref().map(|s| t.rd.view(&s.object));
        let c = Call {
            r,
            t: &t,
            action,
            existing: existing.as_deref(),
            body,
        };
        match action {
            Action::List => self.list(&c),
            Action::Watch => self.watch(&c),
            Action::Get => self.get(&c),
            Action::Create => self.create(&c),
            Action::Update => self.update(&c),
            Action::Patch => self.patch(&c),
            Action::Delete => self.delete(&c),
            Action::DeleteCollection => self.delete_collection(&c),
            Action::GetScale => self.get_scale(&c),
            Action::UpdateScale | Action::PatchScale => self.write_scale(&c),
            Action::Binding => self.binding(&c),
            Action::Eviction => self.eviction(&c),
            Action::Token => self.token(&c),
            Action::Log => self.log(&c).await,
            Action::CsrUpdate | Action::CsrPatch => self.csr_subresource(&c),
            // Only reached without the upgrade (handled in `handle`).
            Action::Exec | Action::Proxy(_) => Err(ApiError::method_not_allowed()),
        }
    }
}
