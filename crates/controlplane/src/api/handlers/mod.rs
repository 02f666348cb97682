//! The handlers, by family. Each is a method of [`ApiServer`] that gets a
//! resolved route (for resources a [`Call`]: request, target, action, the
//! stored object, the body), authorizes it (`Call::authorize`), then
//! works through the object layer (`objects.rs`, where admission happens).
//!
//! - `read.rs` — list, watch, get (JSON or Table);
//! - `write.rs` — create, update (and namespace `finalize`), patch, delete,
//!   deletecollection;
//! - `apply.rs` — server-side apply (a PATCH with `application/apply-patch+yaml`);
//! - `subresources.rs` — scale, binding, eviction, token, and log and exec
//!   (authorized here, proxied by `kubelet.rs`); `status` is a plain
//!   get/update/patch with the subresource;
//! - `proxy.rs` — `nodes/NAME/proxy/...`, passed on to the node's kubelet port;
//! - `certificates.rs` — a CSR's `approval` and `status` (PUT, PATCH);
//! - `reviews.rs` — SelfSubjectReview and TokenReview;
//! - `nonresource.rs` — health, version, discovery, OpenAPI, OIDC documents.
//!
//! [`ApiServer`]: super::server::ApiServer
//! [`Call`]: super::request::Call

mod apply;
mod certificates;
mod nonresource;
mod proxy;
mod read;
mod reviews;
mod subresources;
mod write;
