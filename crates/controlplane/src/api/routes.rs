//! The routing table: a request's method and path → what it asks for
//! ([`Route`]). Resource paths resolve to a [`Target`] (resource, namespace,
//! name, subresource) and an [`Action`], whose [`Action::verb`] is what the
//! request is authorized for and which picks the handler. Pure: looks up the
//! registry, reads nothing else.

use crate::registry::{self, ResourceDef, Resources};
use http::Method;

/// Endpoints served to anyone, before authentication
/// (`system:public-info-viewer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Public {
    /// `/healthz`, `/livez` and below.
    Health,
    /// `/readyz` and below.
    Ready,
    /// `/version`.
    Version,
}

/// Documents that describe the API (authenticated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Document<'a> {
    /// `/api` (`core`) or `/apis`: legacy, or aggregated if Accept asks.
    Root { core: bool },
    /// `/apis/GROUP`.
    Group(&'a str),
    /// `/api/v1`, `/apis/GROUP/VERSION`.
    Resources { group: &'a str, version: &'a str },
    /// `/openapi/v2` (JSON or protobuf by Accept).
    OpenApiV2,
    /// `/openapi/v3`.
    OpenApiIndex,
    /// `/openapi/v3/PATH`.
    OpenApi(String),
    /// `GET /.well-known/openid-configuration`.
    OpenIdConfiguration,
    /// `GET /openid/v1/jwks`.
    Jwks,
}

/// What a call on a resource does. Handlers: `handlers/read.rs` (list,
/// watch, get), `handlers/write.rs` (create, update, patch, delete,
/// deletecollection; server-side apply in `handlers/apply.rs`),
/// `handlers/subresources.rs` (the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    List,
    Watch,
    Get,
    Create,
    Update,
    /// Also server-side apply (by the body's Content-Type).
    Patch,
    Delete,
    DeleteCollection,
    GetScale,
    UpdateScale,
    PatchScale,
    Binding,
    Eviction,
    /// `serviceaccounts/token` (TokenRequest).
    Token,
    /// `pods/log`, proxied to the kubelet.
    Log,
    /// `pods/exec`, `pods/attach`, `pods/portforward` (the target's subresource): a
    /// WebSocket or SPDY upgrade proxied to the kubelet.
    Exec,
    /// `nodes/NAME/proxy/...` with the verb of its method (GET and HEAD `get`, POST
    /// `create`, ...): passed on to the node (`handlers/proxy.rs`).
    Proxy(&'static str),
    /// PUT of a CertificateSigningRequest's `approval` or `status` (`handlers/certificates.rs`).
    CsrUpdate,
    /// PATCH of a CertificateSigningRequest's `approval` or `status`.
    CsrPatch,
}

impl Action {
    /// The authorization verb.
    pub fn verb(self) -> &'static str {
        use Action::*;
        match self {
            List => "list",
            Watch => "watch",
            Get | GetScale | Log => "get",
            Create | Binding | Eviction | Token | Exec => "create",
            Update | UpdateScale | CsrUpdate => "update",
            Patch | PatchScale | CsrPatch => "patch",
            Delete => "delete",
            DeleteCollection => "deletecollection",
            Proxy(verb) => verb,
        }
    }
}

/// The resource a call is on. `name` is empty for collections; `ns` is
/// `None` for cluster-scoped resources.
#[derive(Debug, Clone)]
pub(crate) struct Target<'a> {
    pub rd: &'static ResourceDef,
    pub ns: Option<&'a str>,
    pub name: &'a str,
    pub sub: Option<&'a str>,
}

impl PartialEq for Target<'_> {
    fn eq(&self, o: &Self) -> bool {
        std::ptr::eq(self.rd, o.rd) && (self.ns, self.name, self.sub) == (o.ns, o.name, o.sub)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route<'a> {
    Public(Public),
    Document(Document<'a>),
    /// `/apis/authentication.k8s.io/v1/selfsubjectreviews` (any method).
    SelfSubjectReview,
    /// `/apis/authentication.k8s.io/v1/tokenreviews` (any method).
    TokenReview,
    /// `/apis/authorization.k8s.io/v1/{selfsubjectaccessreviews,
    /// subjectaccessreviews,selfsubjectrulesreviews}` and
    /// `.../namespaces/NS/localsubjectaccessreviews` (any method).
    AccessReview {
        plural: &'a str,
        ns: Option<&'a str>,
    },
    Resource(Target<'a>, Action),
    NotFound,
    MethodNotAllowed,
}

/// Resolves a request. `watch` is the `watch` query parameter.
pub(crate) fn resolve<'a>(
    served: &Resources,
    method: &Method,
    segs: &[&'a str],
    watch: bool,
) -> Route<'a> {
    let get = method == Method::GET;
    match segs {
        ["healthz" | "livez", ..] => Route::Public(Public::Health),
        ["readyz", ..] => Route::Public(Public::Ready),
        ["version"] => Route::Public(Public::Version),
        // Any method (WebSocket clients GET, SPDY clients POST): the handler authorizes
        // `create`, as upstream does for both.
        ["api", "v1", "namespaces", ns, "pods", name, sub @ ("exec" | "attach" | "portforward")] => {
            Route::Resource(
                Target {
                    rd: registry::pods(),
                    ns: Some(*ns),
                    name,
                    sub: Some(*sub),
                },
                Action::Exec,
            )
        }
        // Any path below, the body unread: the handler passes the request on.
        ["api", "v1", "nodes", name, "proxy", ..] => match proxy_verb(method) {
            Some(verb) => Route::Resource(
                Target {
                    rd: registry::nodes(),
                    ns: None,
                    name,
                    sub: Some("proxy"),
                },
                Action::Proxy(verb),
            ),
            None => Route::MethodNotAllowed,
        },
        ["api"] => Route::Document(Document::Root { core: true }),
        ["apis"] => Route::Document(Document::Root { core: false }),
        ["api", "v1"] => Route::Document(Document::Resources {
            group: "",
            version: "v1",
        }),
        ["apis", g] => Route::Document(Document::Group(g)),
        ["apis", g, v] => Route::Document(Document::Resources {
            group: g,
            version: v,
        }),
        ["openapi", "v2"] => Route::Document(Document::OpenApiV2),
        ["openapi", "v3"] => Route::Document(Document::OpenApiIndex),
        ["openapi", "v3", rest @ ..] => Route::Document(Document::OpenApi(rest.join("/"))),
        [".well-known", "openid-configuration"] if get => {
            Route::Document(Document::OpenIdConfiguration)
        }
        ["openid", "v1", "jwks"] if get => Route::Document(Document::Jwks),
        ["apis", "authentication.k8s.io", "v1", "selfsubjectreviews"] => Route::SelfSubjectReview,
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => Route::TokenReview,
        ["apis", "authorization.k8s.io", "v1", plural @ ("selfsubjectaccessreviews"
        | "subjectaccessreviews"
        | "selfsubjectrulesreviews")] => Route::AccessReview { plural, ns: None },
        ["apis", "authorization.k8s.io", "v1", "namespaces", ns, "localsubjectaccessreviews"] => {
            Route::AccessReview {
                plural: "localsubjectaccessreviews",
                ns: Some(*ns),
            }
        }
        ["api", "v1", rest @ ..] => resource(served, "", "v1", rest, method, watch),
        ["apis", g, v, rest @ ..] => resource(served, g, v, rest, method, watch),
        _ => Route::NotFound,
    }
}

/// `[namespaces/NS/]PLURAL[/NAME[/SUB]]` of a group version.
fn resource<'a>(
    served: &Resources,
    group: &str,
    version: &str,
    rest: &[&'a str],
    method: &Method,
    watch: bool,
) -> Route<'a> {
    let (ns, rest) = match rest {
        ["namespaces", ns, tail @ ..]
            if !tail.is_empty() && !matches!(tail[0], "status" | "finalize") =>
        {
            (Some(*ns), tail)
        }
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(*n), None),
        [p, n, s] => (*p, Some(*n), Some(*s)),
        _ => return Route::NotFound,
    };
    let Some(rd) = served.find(group, version, plural) else {
        return Route::NotFound;
    };
    if sub.is_some_and(|s| !rd.subresources.contains(&s))
        || (rd.namespaced != ns.is_some() && name.is_some())
    {
        return Route::NotFound;
    }
    let csr = (rd.group, rd.plural) == ("certificates.k8s.io", "certificatesigningrequests");
    let action = match (name, sub) {
        (None, _) => collection_action(method, watch),
        (Some(_), Some("approval" | "status")) if csr && method == Method::PUT => {
            Some(Action::CsrUpdate)
        }
        (Some(_), Some("approval" | "status")) if csr && method == Method::PATCH => {
            Some(Action::CsrPatch)
        }
        (Some(_), _) => item_action(method, sub),
    };
    let target = Target {
        rd,
        ns: ns.filter(|_| rd.namespaced),
        name: name.unwrap_or(""),
        sub,
    };
    match action {
        Some(a) => Route::Resource(target, a),
        None => Route::MethodNotAllowed,
    }
}

/// The verb a connect request (a proxy) is authorized for, as upstream's RequestInfo.
fn proxy_verb(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        Method::OPTIONS => "options",
        _ => return None,
    })
}

fn collection_action(method: &Method, watch: bool) -> Option<Action> {
    match *method {
        Method::GET if watch => Some(Action::Watch),
        Method::GET => Some(Action::List),
        Method::POST => Some(Action::Create),
        Method::DELETE => Some(Action::DeleteCollection),
        _ => None,
    }
}

fn item_action(method: &Method, sub: Option<&str>) -> Option<Action> {
    Some(match (method, sub) {
        (&Method::POST, Some("token")) => Action::Token,
        (_, Some("token")) => return None,
        (&Method::GET, Some("log")) => Action::Log,
        (&Method::GET, Some("scale")) => Action::GetScale,
        (&Method::GET, _) => Action::Get,
        (&Method::POST, Some("binding")) => Action::Binding,
        (&Method::POST, Some("eviction")) => Action::Eviction,
        (&Method::PUT, Some("scale")) => Action::UpdateScale,
        (&Method::PATCH, Some("scale")) => Action::PatchScale,
        (&Method::PUT, _) => Action::Update,
        (&Method::PATCH, _) => Action::Patch,
        (&Method::DELETE, None) => Action::Delete,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    fn route(method: &Method, path: &str) -> Route<'static> {
        // The routes borrow the path: leak it (tests only).
        let path: &'static str = String::leak(path.to_string());
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        resolve(&Resources::default(), method, &segs, false)
    }

    #[test]
    fn public_and_documents() {
        let d = Route::Document;
        let table = [
            ("GET", "/healthz/ping", Route::Public(Public::Health)),
            ("POST", "/livez", Route::Public(Public::Health)),
            ("GET", "/readyz", Route::Public(Public::Ready)),
            ("GET", "/version", Route::Public(Public::Version)),
            ("GET", "/version/x", Route::NotFound),
            ("GET", "/api", d(Document::Root { core: true })),
            ("GET", "/apis", d(Document::Root { core: false })),
            ("GET", "/apis/apps", d(Document::Group("apps"))),
            (
                "GET",
                "/api/v1",
                d(Document::Resources {
                    group: "",
                    version: "v1",
                }),
            ),
            (
                "GET",
                "/apis/apps/v1",
                d(Document::Resources {
                    group: "apps",
                    version: "v1",
                }),
            ),
            ("GET", "/openapi/v2", d(Document::OpenApiV2)),
            ("GET", "/openapi/v3", d(Document::OpenApiIndex)),
            (
                "GET",
                "/openapi/v3/apis/apps/v1",
                d(Document::OpenApi("apis/apps/v1".into())),
            ),
            (
                "GET",
                "/.well-known/openid-configuration",
                d(Document::OpenIdConfiguration),
            ),
            ("GET", "/openid/v1/jwks", d(Document::Jwks)),
            ("POST", "/openid/v1/jwks", Route::NotFound),
            (
                "GET",
                "/apis/authentication.k8s.io/v1/tokenreviews",
                Route::TokenReview,
            ),
            (
                "PUT",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                Route::SelfSubjectReview,
            ),
            ("GET", "/nope", Route::NotFound),
        ];
        for (method, path, want) in table {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(route(&method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn resources_verbs_and_subresources() {
        // "METHOD path" (`~` for `/api/v1/namespaces/default`, `^` for a Deployment) →
        // "resource[/sub] Action verb", or 405.
        let table = [
            ("GET ~/pods", "pods List list"),
            ("POST ~/pods", "pods Create create"),
            ("DELETE ~/pods", "pods DeleteCollection deletecollection"),
            ("PUT ~/pods", "405"),
            ("GET /api/v1/pods", "pods List list"),
            ("GET ~/pods/p", "pods Get get"),
            ("PUT ~/pods/p", "pods Update update"),
            ("PATCH ~/pods/p", "pods Patch patch"),
            ("DELETE ~/pods/p", "pods Delete delete"),
            ("POST ~/pods/p", "405"),
            ("GET ~/pods/p/status", "pods/status Get get"),
            ("PATCH ~/pods/p/status", "pods/status Patch patch"),
            ("DELETE ~/pods/p/status", "405"),
            ("GET ~/pods/p/log", "pods/log Log get"),
            ("POST ~/pods/p/binding", "pods/binding Binding create"),
            ("POST ~/pods/p/eviction", "pods/eviction Eviction create"),
            // Any method: an upgrade.
            ("GET ~/pods/p/exec", "pods/exec Exec create"),
            ("POST ~/pods/p/exec", "pods/exec Exec create"),
            ("GET ~/pods/p/attach", "pods/attach Exec create"),
            ("POST ~/pods/p/portforward", "pods/portforward Exec create"),
            ("GET ~/pods/p/portforward", "pods/portforward Exec create"),
            (
                "POST ~/serviceaccounts/sa/token",
                "serviceaccounts/token Token create",
            ),
            ("GET ~/serviceaccounts/sa/token", "405"),
            ("GET ^/scale", "deployments/scale GetScale get"),
            ("PUT ^/scale", "deployments/scale UpdateScale update"),
            ("PATCH ^/scale", "deployments/scale PatchScale patch"),
            // nodes/proxy: any path below, the verb by method.
            (
                "GET /api/v1/nodes/n/proxy",
                "nodes/proxy Proxy(\"get\") get",
            ),
            (
                "HEAD /api/v1/nodes/n:10255/proxy/metrics",
                "nodes/proxy Proxy(\"get\") get",
            ),
            (
                "POST /api/v1/nodes/n/proxy/a/b/c",
                "nodes/proxy Proxy(\"create\") create",
            ),
            (
                "DELETE /api/v1/nodes/n/proxy/pods",
                "nodes/proxy Proxy(\"delete\") delete",
            ),
            ("TRACE /api/v1/nodes/n/proxy/x", "405"),
            // Namespaces' own subresources are not namespace prefixes.
            (
                "PUT /api/v1/namespaces/ns/finalize",
                "namespaces/finalize Update update",
            ),
        ];
        for (request, want) in table {
            let request = request
                .replace('~', "/api/v1/namespaces/default")
                .replace('^', "/apis/apps/v1/namespaces/default/deployments/d");
            let (method, path) = request.split_once(' ').unwrap();
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let got = match route(&method, path) {
                Route::Resource(t, a) => {
                    let sub = t.sub.map(|s| format!("/{s}")).unwrap_or_default();
                    format!("{}{sub} {a:?} {}", t.rd.plural, a.verb())
                }
                Route::MethodNotAllowed => "405".to_string(),
                other => format!("{other:?}"),
            };
            assert_eq!(got, want, "{request}");
        }
        let segs = ["api", "v1", "namespaces", "default", "pods"];
        assert!(matches!(
            resolve(&Resources::default(), &Method::GET, &segs, true),
            Route::Resource(_, Watch)
        ));
        // Unknown resources and subresources, a namespaced object without its
        // namespace, a cluster-scoped one with one.
        for path in [
            "/apis/apps/v1/widgets",
            "/api/v1/namespaces/default/pods/p/nope",
            "/api/v1/pods/p",
            "/api/v1/namespaces/default/nodes/n",
            "/api/v1/namespaces/default/pods/p/status/x",
        ] {
            assert_eq!(route(&Method::GET, path), Route::NotFound, "{path}");
        }
    }
}
