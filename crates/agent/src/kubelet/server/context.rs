//! What the kubelet port's handlers share: the `Context` requests are answered from, the
//! response body type, plain-text answers, and finding the runtime pod a request names.

use crate::kubelet::mirror;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};
use rktup_runtime::runtime::{PodEntry, Runtime};
use std::convert::Infallible;
use std::sync::Arc;

/// What requests are answered from.
pub struct Context {
    pub rt: Arc<Runtime>,
    /// The kubelet half's pod store (None without --kubeconfig: static pods only).
    pub pods: Option<Store<Pod>>,
    pub node_name: String,
    /// --authorization-mode=Webhook (None: AlwaysAllow).
    pub authorizer: Option<super::authz::Authorizer>,
    /// --authentication-token-webhook (None: client certificates only).
    pub token_authenticator: Option<super::authn::TokenAuthenticator>,
}

pub type Body = BoxBody<Bytes, Infallible>;

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The newest runtime pod for an API pod name whose spec has `container` (errors as upstream
/// words them).
pub fn locate(
    ctx: &Context,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<PodEntry, (StatusCode, String)> {
    locate_with(ctx, ns, pod, Some(container))
}

/// The newest runtime pod for an API pod name (port-forward: no container).
pub fn locate_pod(ctx: &Context, ns: &str, pod: &str) -> Result<PodEntry, (StatusCode, String)> {
    locate_with(ctx, ns, pod, None)
}

fn locate_with(
    ctx: &Context,
    ns: &str,
    pod: &str,
    container: Option<&str>,
) -> Result<PodEntry, (StatusCode, String)> {
    let api_pod = ctx
        .pods
        .as_ref()
        .and_then(|s| s.get(&ObjectRef::new(pod).within(ns)));
    let is_mirror = api_pod.as_ref().is_some_and(|p| mirror::is_mirror(p));
    let api_uid = api_pod
        .as_ref()
        .filter(|_| !is_mirror)
        .and_then(|p| p.metadata.uid.clone());
    let mut entries: Vec<PodEntry> = ctx
        .rt
        .list()
        .into_iter()
        .filter(|e| {
            e.plan.namespace == ns
                && match &e.plan.source {
                    None => e.plan.name == pod && api_uid.as_ref().is_none_or(|u| *u == e.plan.uid),
                    Some(_) => format!("{}-{}", e.plan.name, ctx.node_name) == pod,
                }
        })
        .collect();
    entries.sort_by_key(|e| e.plan.created_at);
    let newest = entries.pop();
    if api_pod.is_none() && newest.is_none() {
        return Err((StatusCode::NOT_FOUND, format!("pod {pod:?} does not exist")));
    }
    let Some(container) = container else {
        return newest.ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                format!("pod {pod:?} is waiting to start: ContainerCreating"),
            )
        });
    };
    // The container must be in the pod's spec (init containers too).
    let in_spec = match (&api_pod, &newest) {
        (Some(p), _) => p.spec.as_ref().is_some_and(|s| {
            s.containers
                .iter()
                .map(|c| &c.name)
                .chain(s.init_containers.iter().flatten().map(|c| &c.name))
                .chain(s.ephemeral_containers.iter().flatten().map(|c| &c.name))
                .any(|n| n == container)
        }),
        (None, Some(e)) => e.plan.all_containers().any(|c| c.name == container),
        (None, None) => false,
    };
    if !in_spec {
        return Err((
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {pod:?}"),
        ));
    }
    newest.ok_or_else(|| {
        // Bound to this node but not started yet (image pull, back-off).
        (
            StatusCode::BAD_REQUEST,
            format!(
                "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
            ),
        )
    })
}
