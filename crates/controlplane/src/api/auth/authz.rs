//! Authorization, as kube-apiserver's `--authorization-mode=Node,RBAC`:
//! `system:masters` may do everything (upstream's privileged group); a node
//! (`system:node:<name>` in `system:nodes`) gets the Node authorizer +
//! NodeRestriction admission ([`node_authorize`], [`node_restriction`]): it
//! may `get` a Secret, ConfigMap, PersistentVolumeClaim or PersistentVolume
//! only when a pod bound to it references it (never list or watch them),
//! request service-account tokens only bound to its own pods, write only its
//! own Node (labels as NodeRestriction allows) and Lease, the pods bound to
//! it and CSRs (the pods' references come from `node_graph.rs`, kept from the
//! pods' watch), never `nodes/proxy`; everyone else gets what RBAC bindings
//! grant (`rbac.rs`). Writes of RBAC objects are also checked for escalation
//! ([`check_escalation`]). Refusals are kube-apiserver's 403 Status
//! ([`check`], [`check_token_request`], [`check_url`]).

use super::authn::User;
use super::node_graph::{self, NodeGraph, RefKind};
use super::rbac::{self, PolicyRule, Rbac, Request, ResourceRequest};
use crate::api::error::{ApiError, ApiResult};
use crate::registry::ResourceDef;
use crate::store::Store;
use serde_json::Value;

/// What a request does, for authorization.
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub resource: &'a ResourceDef,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    /// The stored object (for writes to existing objects).
    pub existing: Option<&'a Value>,
    /// The object in the request body (for creates).
    pub incoming: Option<&'a Value>,
    /// Another stored object the decision depends on: for a TokenRequest
    /// (`serviceaccounts/token`), the pod its `spec.boundObjectRef` names.
    pub related: Option<&'a Value>,
}

impl<'a> Attributes<'a> {
    fn request(&self) -> ResourceRequest<'a> {
        ResourceRequest {
            verb: self.verb,
            group: self.resource.group,
            resource: self.resource.plural,
            subresource: self.subresource,
            namespace: self.scope(),
            name: self.name,
        }
    }

    /// The namespace the request is in. As upstream's RequestInfo, a
    /// request on one Namespace object is in that namespace (so a RoleBinding
    /// there may grant `get namespaces`).
    fn scope(&self) -> Option<&'a str> {
        let r = self.resource;
        if (r.group, r.plural) == ("", "namespaces") && !self.name.is_empty() {
            return Some(self.name);
        }
        self.namespace.filter(|_| r.namespaced)
    }
}

/// The chain for any request: `Some(reason)` if allowed (the reason empty
/// for the privileged group), `None` if no authorizer allows it.
pub fn decide(rbac: &Rbac, user: &User, req: &Request) -> Option<String> {
    if user.is_admin() {
        return Some(String::new());
    }
    rbac.index().allows(user, req)
}

/// Whether `user` may do what `a` describes: admins, then the Node
/// authorizer, then RBAC.
pub fn authorize(rbac: &Rbac, user: &User, a: &Attributes) -> bool {
    user.is_admin()
        || node_authorize(user, a, Some((rbac.store().as_ref(), rbac.node_graph())))
        || rbac
            .index()
            .allows(user, &Request::Resource(a.request()))
            .is_some()
}

/// The kinds the Node authorizer decides through its graph of pods bound to the node.
fn graph_kind(a: &Attributes) -> bool {
    a.resource.group.is_empty()
        && matches!(
            a.resource.plural,
            "secrets" | "configmaps" | "persistentvolumeclaims" | "persistentvolumes"
        )
        && a.subresource.is_none()
}

/// Whether `pod` references the `plural` object `name` (in its namespace), as upstream's
/// graph populator collects them ([`node_graph::pod_refs`]).
pub fn pod_references(pod: &Value, plural: &str, name: &str) -> bool {
    RefKind::from_plural(plural).is_some_and(|kind| {
        node_graph::pod_refs(pod)
            .iter()
            .any(|(k, n)| *k == kind && n == name)
    })
}

/// Whether node `node` has a relationship with the graph-tracked object of `a` (a get),
/// from the graph of its pods' references (a lookup, not a scan of every pod).
fn node_related(node: &str, a: &Attributes, store: &dyn Store, graph: &NodeGraph) -> bool {
    let plural = a.resource.plural;
    if let Some(kind) = RefKind::from_plural(plural) {
        return graph.references(store, node, kind, a.namespace.unwrap_or(""), a.name);
    }
    // A volume: through a claim of one of its pods that is bound to it (the claim's
    // binding read now, so a claim bound later counts at once).
    let Some(pvcs) = crate::registry::find("", "v1", "persistentvolumeclaims") else {
        return false;
    };
    let related = graph.claims(store, node).into_iter().any(|(ns, claim)| {
        store.get(&pvcs.key(Some(&ns), &claim)).is_some_and(|c| {
            c.object.pointer("/spec/volumeName").and_then(Value::as_str) == Some(a.name)
        })
    });
    // Beyond upstream: a node reads the local-path volumes placed on it (it provisions and
    // cleans them up, as local-path-provisioner's helper pods do) and learns that a volume it
    // asks for is gone (404 rather than 403), so its clean-up can remove the directory.
    related
        || match a.existing {
            None => true,
            Some(pv) => pv
                .pointer("/spec/nodeAffinity/required/nodeSelectorTerms")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|t| {
                    t["matchExpressions"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .any(|e| {
                    e["key"] == "kubernetes.io/hostname"
                        && e["operator"] == "In"
                        && e["values"]
                            .as_array()
                            .is_some_and(|vs| vs.iter().any(|v| v == node))
                }),
        }
}

/// Why the Node authorizer refused a node `a` (upstream's reason, appended to the 403).
fn node_denial_reason(node: &str, a: &Attributes) -> Option<String> {
    if !graph_kind(a) {
        return None;
    }
    if a.verb != "get" || a.name.is_empty() {
        return Some("can only get individual resources of this type".into());
    }
    Some(format!(
        "no relationship found between node '{node}' and this object"
    ))
}

/// The Node authorizer (with NodeRestriction's rules): whether a node
/// identity may do this. No opinion (false) for everyone else. `graph` is
/// the store and the graph of its pods' references (none: nothing is related).
pub fn node_authorize(
    user: &User,
    a: &Attributes,
    graph: Option<(&dyn Store, &NodeGraph)>,
) -> bool {
    let Some(node) = user.node_name() else {
        return false;
    };
    // A kubelet's port is for the API server and admins (upstream's system:node role has no
    // nodes/proxy), its own included.
    if (a.resource.group, a.resource.plural, a.subresource) == ("", "nodes", Some("proxy")) {
        return false;
    }
    if graph_kind(a) {
        return a.verb == "get"
            && !a.name.is_empty()
            && graph.is_some_and(|(s, g)| node_related(node, a, s, g));
    }
    if matches!(a.verb, "get" | "list" | "watch") {
        // Node agents read what they run and what their service proxy and DNS serve (pods,
        // nodes, services, endpoint slices, namespaces...: upstream's system:node,
        // system:node-proxier and system:kube-dns rules); not service accounts (only tokens
        // for their pods) and not logs.
        let r = a.resource;
        return a.subresource != Some("log")
            && !(r.group.is_empty() && r.plural == "serviceaccounts")
            && r.group != super::rbac::GROUP;
    }
    let r = a.resource;
    match (r.group, r.plural) {
        ("certificates.k8s.io", "certificatesigningrequests") => {
            // Its client and serving certificates (system:node's rules): create only.
            a.verb == "create" && a.subresource.is_none()
        }
        ("", "nodes") => {
            a.name == node
                || (a.verb == "create"
                    && a.incoming.is_some_and(|o| {
                        o.pointer("/metadata/name").and_then(Value::as_str) == Some(node)
                    }))
        }
        ("coordination.k8s.io", "leases") => {
            a.namespace == Some("kube-node-lease")
                && (a.name == node
                    || (a.verb == "create"
                        && a.incoming.is_some_and(|o| {
                            o.pointer("/metadata/name").and_then(Value::as_str) == Some(node)
                        })))
        }
        ("", "pods") => {
            if a.verb == "create" && a.subresource.is_none() {
                // NodeRestriction: a node creates only mirror pods of its static pods, bound
                // to itself.
                return a.incoming.is_some_and(|o| {
                    o.pointer("/metadata/annotations/kubernetes.io~1config.mirror")
                        .is_some()
                        && o.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
                });
            }
            if a.verb == "create" && a.subresource == Some("eviction") {
                return false;
            }
            // Running commands in pods, attaching and forwarding ports is for admins
            // (upstream's node role has no pods/exec, pods/attach, pods/portforward).
            if matches!(a.subresource, Some("exec" | "attach" | "portforward")) {
                return false;
            }
            if a.verb == "deletecollection" || a.subresource == Some("binding") {
                return false;
            }
            a.existing
                .and_then(|p| p.pointer("/spec/nodeName"))
                .and_then(Value::as_str)
                == Some(node)
        }
        ("", "events") | ("events.k8s.io", "events") => {
            matches!(a.verb, "create" | "patch" | "update")
        }
        // kubelet's webhook authentication and authorization of its port (system:node's
        // rules; the reviews change nothing).
        ("authorization.k8s.io", "subjectaccessreviews" | "localsubjectaccessreviews")
        | ("authentication.k8s.io", "tokenreviews") => a.verb == "create",
        ("", "serviceaccounts") => {
            a.verb == "create"
                && a.subresource == Some("token")
                && node_token_request(node, a.name, a.incoming, a.related).is_ok()
        }
        _ => false,
    }
}

/// `Ok(())` if `user` may do what `a` describes, else upstream's 403 (with the Node
/// authorizer's reason for a node refused a graph-tracked object).
pub fn check(rbac: &Rbac, user: &User, a: &Attributes) -> ApiResult<()> {
    if authorize(rbac, user, a) {
        return Ok(());
    }
    let mut e = forbidden(user, a);
    if let Some(why) = user.node_name().and_then(|n| node_denial_reason(n, a)) {
        e.message = format!("{}: {why}", e.message);
    }
    Err(e)
}

/// Upstream's `IsKubeletLabel`: labels a kubelet may set on its own Node in the
/// `kubernetes.io` and `k8s.io` namespaces.
fn kubelet_label(key: &str) -> bool {
    const LABELS: [&str; 11] = [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "kubernetes.io/os",
        "kubernetes.io/arch",
    ];
    if LABELS.contains(&key) {
        return true;
    }
    let ns = key.split_once('/').map(|(n, _)| n).unwrap_or("");
    ["kubelet.kubernetes.io", "node.kubernetes.io"]
        .iter()
        .any(|a| ns == *a || ns.ends_with(&format!(".{a}")))
}

/// Whether NodeRestriction forbids a node to set `key` on its Node.
fn restricted_label(key: &str) -> bool {
    let ns = key.split_once('/').map(|(n, _)| n).unwrap_or("");
    let under = |d: &str| ns == d || ns.ends_with(&format!(".{d}"));
    under("node-restriction.kubernetes.io")
        || ((under("kubernetes.io") || under("k8s.io")) && !kubelet_label(key))
}

/// NodeRestriction admission for a node writing its own Node: on create it may not set
/// `node-restriction.kubernetes.io/` labels nor `kubernetes.io`/`k8s.io` labels outside the
/// kubelet's set; on update it may not add, change or remove such labels. `old` is the
/// stored Node (none on create), `new` the object as it would be stored. Others: `Ok`.
pub fn node_restriction(
    user: &User,
    rd: &ResourceDef,
    old: Option<&Value>,
    new: &Value,
) -> ApiResult<()> {
    if user.node_name().is_none() || (rd.group, rd.plural) != ("", "nodes") {
        return Ok(());
    }
    let labels = |o: Option<&Value>| -> std::collections::BTreeMap<String, Value> {
        o.and_then(|o| o.pointer("/metadata/labels"))
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    let (before, after) = (labels(old), labels(Some(new)));
    let name = new
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let bad: Vec<&str> = keys
        .into_iter()
        .filter(|k| restricted_label(k) && before.get(*k) != after.get(*k))
        .filter(|k| old.is_some() || after.contains_key(*k))
        .map(String::as_str)
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    let what = if old.is_some() {
        "is not allowed to modify labels"
    } else {
        "is not allowed to set the following labels"
    };
    Err(ApiError::new(
        403,
        "Forbidden",
        format!("nodes {name:?} is forbidden: {what}: {}", bad.join(", ")),
    ))
}

/// A non-resource request (`/api`, `/apis/apps`, `/openapi/v2`): allowed to
/// admins and as RBAC's `nonResourceURLs` rules say (upstream's
/// `system:discovery` grants them to every authenticated user); else
/// `forbidden: User "x" cannot get path "/api"`.
pub fn check_url(rbac: &Rbac, user: &User, verb: &str, path: &str) -> ApiResult<()> {
    if decide(rbac, user, &Request::NonResource { verb, path }).is_some() {
        return Ok(());
    }
    Err(ApiError::new(
        403,
        "Forbidden",
        format!(
            "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
            user.name
        ),
    ))
}

/// [`check`] for a TokenRequest (`a.related` is the pod it binds to, if
/// that exists), with upstream's reasons when a node is refused.
pub fn check_token_request(rbac: &Rbac, user: &User, a: &Attributes) -> ApiResult<()> {
    let mut e = match check(rbac, user, a) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if let Some(node) = user.node_name() {
        match node_token_request(node, a.name, a.incoming, a.related) {
            Err(TokenDenied::Admission(why)) => {
                e.message = format!("{} \"{}\" is forbidden: {why}", a.resource.plural, a.name);
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

/// kube-apiserver's 403, the subresource shown with the resource
/// (`resource "pods/exec"`).
fn forbidden(user: &User, a: &Attributes) -> ApiError {
    let rd = a.resource;
    let mut e = ApiError::forbidden(&user.name, a.verb, rd, a.scope(), a.name);
    if let Some(sub) = a.subresource {
        e.message = e.message.replace(
            &format!("resource \"{}\"", rd.plural),
            &format!("resource \"{}/{sub}\"", rd.plural),
        );
    }
    e
}

/// Escalation prevention for writes of RBAC objects, as upstream's RBAC
/// storage: a Role or ClusterRole may only hold rules its writer holds
/// (in that namespace), unless the writer may `escalate` it; a binding may
/// only refer to a role whose rules its writer holds, unless the writer may
/// `bind` it. `result` is the object as it will be stored. Privileged users
/// are not checked.
pub fn check_escalation(rbac: &Rbac, user: &User, a: &Attributes, result: &Value) -> ApiResult<()> {
    let rd = a.resource;
    if rd.group != rbac::GROUP || a.subresource.is_some() || user.is_admin() {
        return Ok(());
    }
    let ns = a.namespace.filter(|_| rd.namespaced);
    let name = match a.name {
        "" => result
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or(""),
        n => n,
    };
    let may = |verb: &str, plural: &str, name: &str| {
        let req = ResourceRequest {
            verb,
            group: rbac::GROUP,
            resource: plural,
            subresource: None,
            namespace: ns,
            name,
        };
        decide(rbac, user, &Request::Resource(req)).is_some()
    };
    let index = rbac.index();
    let held = index.rules_for(user, ns);
    let refuse = |why: String| {
        let mut e = ApiError::forbidden(&user.name, a.verb, rd, ns, name);
        e.message = format!("{} \"{name}\" is forbidden: {why}", rd.group_resource());
        e
    };
    match rd.plural {
        "roles" | "clusterroles" => {
            if may("escalate", rd.plural, name) {
                return Ok(());
            }
            if rd.plural == "clusterroles" && result.get("aggregationRule").is_some() {
                // Upstream: an aggregated role takes any rules, so only a holder
                // of everything may write one.
                let all = [
                    PolicyRule {
                        verbs: vec!["*".into()],
                        api_groups: vec!["*".into()],
                        resources: vec!["*".into()],
                        ..Default::default()
                    },
                    PolicyRule {
                        verbs: vec!["*".into()],
                        non_resource_urls: vec!["*".into()],
                        ..Default::default()
                    },
                ];
                if !rbac::uncovered(&held, &all).is_empty() {
                    return Err(refuse(
                        "must have cluster-admin privileges to use the aggregationRule".into(),
                    ));
                }
                return Ok(());
            }
            let missing = rbac::uncovered(&held, &PolicyRule::of_role(result));
            if missing.is_empty() {
                Ok(())
            } else {
                Err(refuse(not_held(user, &missing)))
            }
        }
        "rolebindings" | "clusterrolebindings" => {
            let r = |k: &str| {
                result
                    .pointer(&format!("/roleRef/{k}"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
            };
            let (kind, role) = (r("kind"), r("name"));
            let plural = if kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            if may("bind", plural, role) {
                return Ok(());
            }
            let Some(rules) = index.role_rules(kind, ns.unwrap_or(""), role) else {
                return Err(refuse(format!(
                    "{plural}.{} \"{role}\" not found",
                    rbac::GROUP
                )));
            };
            let missing = rbac::uncovered(&held, &rules);
            if missing.is_empty() {
                Ok(())
            } else {
                Err(refuse(not_held(user, &missing)))
            }
        }
        _ => Ok(()),
    }
}

/// Upstream's text for rules a writer does not hold.
fn not_held(user: &User, missing: &[PolicyRule]) -> String {
    let groups: Vec<String> = user
        .reported_groups()
        .iter()
        .map(|g| format!("{g:?}"))
        .collect();
    let rules: Vec<String> = rbac::compact(missing.to_vec())
        .iter()
        .map(PolicyRule::compact)
        .collect();
    format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        groups.join(" "),
        rules.join("\n")
    )
}

/// The headers of an impersonated request (`kubectl --as`, `--as-group`,
/// `--as-uid`, `Impersonate-Extra-*`).
pub fn impersonation_requested(headers: &http::HeaderMap) -> bool {
    headers.keys().any(|k| {
        let k = k.as_str();
        k == "impersonate-user"
            || k == "impersonate-group"
            || k == "impersonate-uid"
            || k.starts_with("impersonate-extra-")
    })
}

/// Impersonation, as upstream's filter: each asked identity (user or
/// service account, groups, uid, extra values) must be allowed to `user`
/// by the `impersonate` verb; the request then runs as the asked user with
/// the asked groups (a service account's own groups if none are asked) and
/// `system:authenticated`.
pub fn impersonate(rbac: &Rbac, user: &User, headers: &http::HeaderMap) -> ApiResult<User> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect()
    };
    let name = values("impersonate-user")
        .into_iter()
        .next()
        .unwrap_or_default();
    let groups = values("impersonate-group");
    let uid = values("impersonate-uid");
    let mut extras: Vec<(String, String)> = Vec::new();
    for k in headers.keys() {
        if let Some(key) = k.as_str().strip_prefix("impersonate-extra-") {
            // Keys are percent-encoded in the header name (upstream).
            let key: String = form_urlencoded::parse(format!("k={key}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| key.to_string());
            for v in values(k.as_str()) {
                extras.push((key.clone(), v));
            }
        }
    }
    if name.is_empty() {
        let mut asked: Vec<String> = groups.iter().map(|g| format!("{{Group {g}}}")).collect();
        asked.extend(uid.iter().map(|u| format!("{{UID {u}}}")));
        asked.extend(extras.iter().map(|(k, v)| format!("{{Extra {k}={v}}}")));
        return Err(ApiError::internal(format!(
            "requested [{}] without impersonating a user",
            asked.join(" ")
        )));
    }
    let deny = |resource: &str, group: &str, ns: Option<&str>, n: &str| {
        let who = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        let scope = match ns {
            Some(ns) => format!(" in the namespace \"{ns}\""),
            None => " at the cluster scope".into(),
        };
        ApiError::new(
            403,
            "Forbidden",
            format!(
                "{who} \"{n}\" is forbidden: User \"{}\" cannot impersonate resource \"{resource}\" in API group \"{group}\"{scope}",
                user.name
            ),
        )
    };
    let check = |resource: &str, group: &str, ns: Option<&str>, n: &str| {
        let req = ResourceRequest {
            verb: "impersonate",
            group,
            resource,
            subresource: None,
            namespace: ns,
            name: n,
        };
        match decide(rbac, user, &Request::Resource(req)) {
            Some(_) => Ok(()),
            None => Err(deny(resource, group, ns, n)),
        }
    };
    let sa = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'));
    match sa {
        Some((ns, sa)) => check("serviceaccounts", "", Some(ns), sa)?,
        None => check("users", "", None, &name)?,
    }
    for g in &groups {
        check("groups", "", None, g)?;
    }
    for u in &uid {
        check("uids", "authentication.k8s.io", None, u)?;
    }
    for (k, v) in &extras {
        check(&format!("userextras/{k}"), "authentication.k8s.io", None, v)?;
    }
    let mut out_groups = groups;
    if let (Some((ns, _)), true) = (sa, out_groups.is_empty()) {
        out_groups.push("system:serviceaccounts".into());
        out_groups.push(format!("system:serviceaccounts:{ns}"));
    }
    let implicit = if name == "system:anonymous" {
        "system:unauthenticated"
    } else {
        "system:authenticated"
    };
    if !out_groups.iter().any(|g| g == implicit) {
        out_groups.push(implicit.into());
    }
    Ok(User {
        name,
        groups: out_groups,
    })
}

/// Why a node may not request a service-account token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenDenied {
    /// The Node authorizer: no pod on this node runs as the service account.
    NoRelationship,
    /// NodeRestriction admission, with its message.
    Admission(String),
}

/// Whether node `node` may create a token for service account `sa` (in the
/// request's namespace) with `request` (a TokenRequest); `pod` is the stored
/// pod its `spec.boundObjectRef` names, if that exists. As upstream, a node
/// gets tokens only bound to a pod (`v1` `Pod` with name and uid) that is
/// scheduled to it and runs as `sa`.
pub fn node_token_request(
    node: &str,
    sa: &str,
    request: Option<&Value>,
    pod: Option<&Value>,
) -> Result<(), TokenDenied> {
    let not_bound = || TokenDenied::Admission("node requested token not bound to a pod".into());
    let r = request
        .and_then(|r| r.pointer("/spec/boundObjectRef"))
        .filter(|r| r.is_object())
        .ok_or_else(not_bound)?;
    let field = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
    if field("apiVersion") != "v1" || field("kind") != "Pod" || field("name").is_empty() {
        return Err(not_bound());
    }
    let uid = field("uid");
    if uid.is_empty() {
        return Err(TokenDenied::Admission(
            "node requested token with a pod binding without a uid".into(),
        ));
    }
    let pod = pod.ok_or(TokenDenied::NoRelationship)?;
    let spec = |k: &str| {
        pod.pointer(&format!("/spec/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    if spec("serviceAccountName") != sa {
        return Err(TokenDenied::NoRelationship);
    }
    if pod.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
        return Err(TokenDenied::Admission(format!("the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated")));
    }
    if spec("nodeName") != node {
        return Err(TokenDenied::Admission(
            "node requested token bound to a pod scheduled on a different node".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The chain without RBAC bindings (none exist in these tests).
    fn authorize(user: &User, a: &Attributes) -> bool {
        user.is_admin() || node_authorize(user, a, None)
    }

    #[test]
    fn nodes_may_not_use_nodes_proxy() {
        let n1 = User {
            name: "system:node:n1".into(),
            groups: vec!["system:nodes".into()],
        };
        let node = json!({"metadata": {"name": "n1"}});
        for verb in ["get", "create"] {
            let a = Attributes {
                verb,
                resource: crate::registry::nodes(),
                subresource: Some("proxy"),
                namespace: None,
                name: "n1",
                existing: Some(&node),
                incoming: None,
                related: None,
            };
            assert!(!authorize(&n1, &a), "{verb} its own nodes/proxy");
        }
    }

    #[test]
    fn node_restriction() {
        let n1 = User {
            name: "system:node:n1".into(),
            groups: vec!["system:nodes".into()],
        };
        let pods = crate::registry::pods();
        let mine = json!({"spec": {"nodeName": "n1"}});
        let theirs = json!({"spec": {"nodeName": "n2"}});
        let attrs = |existing| Attributes {
            verb: "patch",
            resource: pods,
            subresource: Some("status"),
            namespace: Some("default"),
            name: "p",
            existing: Some(existing),
            incoming: None,
            related: None,
        };
        assert!(authorize(&n1, &attrs(&mine)));
        assert!(!authorize(&n1, &attrs(&theirs)));
        let nodes = crate::registry::find("", "v1", "nodes").unwrap();
        let a = Attributes {
            verb: "update",
            resource: nodes,
            subresource: None,
            namespace: None,
            name: "n2",
            existing: None,
            incoming: None,
            related: None,
        };
        assert!(!authorize(&n1, &a));
        // Mirror pods: only with the annotation, only bound to itself.
        let create = |incoming| Attributes {
            verb: "create",
            resource: pods,
            subresource: None,
            namespace: Some("default"),
            name: "",
            existing: None,
            incoming: Some(incoming),
            related: None,
        };
        let mirror = |node: &str| {
            json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "h"}},
                   "spec": {"nodeName": node}})
        };
        let (m1, m2) = (mirror("n1"), mirror("n2"));
        assert!(authorize(&n1, &create(&m1)));
        assert!(!authorize(&n1, &create(&m2)));
        assert!(!authorize(&n1, &create(&mine)));
        let anon = User {
            name: "bob".into(),
            groups: vec![],
        };
        assert!(!authorize(&anon, &attrs(&mine)));
    }

    #[test]
    fn node_token_requests_only_bound_to_its_own_pods() {
        let n1 = User {
            name: "system:node:n1".into(),
            groups: vec!["system:nodes".into()],
        };
        let admin = User {
            name: "kubernetes-admin".into(),
            groups: vec!["system:masters".into()],
        };
        let sas = crate::registry::find("", "v1", "serviceaccounts").unwrap();
        let pod = |node: &str, sa: &str| {
            json!({"metadata": {"name": "p", "uid": "u1"},
                   "spec": {"nodeName": node, "serviceAccountName": sa}})
        };
        let bound = |uid: &str| json!({"spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": uid}}});
        let check = |user: &User, req: &Value, p: Option<&Value>| {
            authorize(
                user,
                &Attributes {
                    verb: "create",
                    resource: sas,
                    subresource: Some("token"),
                    namespace: Some("default"),
                    name: "default",
                    existing: None,
                    incoming: Some(req),
                    related: p,
                },
            )
        };
        let (mine, theirs, other_sa) = (
            pod("n1", "default"),
            pod("n2", "default"),
            pod("n1", "robot"),
        );
        let req = bound("u1");
        assert!(check(&n1, &req, Some(&mine)));
        assert!(!check(&n1, &req, Some(&theirs)));
        assert!(!check(&n1, &req, Some(&other_sa)));
        assert!(!check(&n1, &req, None));
        assert!(!check(&n1, &bound("u2"), Some(&mine)));
        assert!(!check(&n1, &bound(""), Some(&mine)));
        let unbound = json!({"spec": {"audiences": ["x"]}});
        assert!(!check(&n1, &unbound, None));
        let secret = json!({"spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": "p", "uid": "u1"}}});
        assert!(!check(&n1, &secret, Some(&mine)));
        // Admins may request any token; nobody else may.
        assert!(check(&admin, &unbound, None));
        let sa_user = User {
            name: "system:serviceaccount:default:default".into(),
            groups: vec!["system:serviceaccounts".into()],
        };
        assert!(!check(&sa_user, &req, Some(&mine)));
        // Only `create` on `token`: a node may not create or update service accounts.
        let mut a = Attributes {
            verb: "update",
            resource: sas,
            subresource: Some("token"),
            namespace: Some("default"),
            name: "default",
            existing: None,
            incoming: Some(&req),
            related: Some(&mine),
        };
        assert!(!authorize(&n1, &a));
        a.verb = "create";
        a.subresource = None;
        assert!(!authorize(&n1, &a));

        // The reasons, in upstream's words.
        use TokenDenied::*;
        let why =
            |req: &Value, p: Option<&Value>| node_token_request("n1", "default", Some(req), p);
        assert_eq!(why(&req, Some(&mine)), Ok(()));
        assert_eq!(
            why(&unbound, None),
            Err(Admission("node requested token not bound to a pod".into()))
        );
        assert_eq!(
            why(&bound(""), Some(&mine)),
            Err(Admission(
                "node requested token with a pod binding without a uid".into()
            ))
        );
        assert_eq!(
            why(&req, Some(&theirs)),
            Err(Admission(
                "node requested token bound to a pod scheduled on a different node".into()
            ))
        );
        assert!(
            matches!(why(&bound("u2"), Some(&mine)), Err(Admission(m)) if m.contains("does not match the UID in record"))
        );
        assert_eq!(why(&req, None), Err(NoRelationship));
        assert_eq!(why(&req, Some(&other_sa)), Err(NoRelationship));
    }

    #[test]
    fn pod_references_as_the_node_graph() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "a", "secret": {"secretName": "vol"}},
                {"name": "b", "projected": {"sources": [{"secret": {"name": "proj"}}, {"configMap": {"name": "kube-root-ca.crt"}}]}},
                {"name": "c", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi"}}},
                {"name": "d", "persistentVolumeClaim": {"claimName": "claim"}},
                {"name": "e", "ephemeral": {"volumeClaimTemplate": {}}},
                {"name": "f", "configMap": {"name": "cmvol"}}],
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init"}}]}],
            "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cmenv", "key": "k"}}}]}]}});
        for s in ["pull", "vol", "proj", "csi", "init"] {
            assert!(pod_references(&pod, "secrets", s), "{s}");
        }
        assert!(!pod_references(&pod, "secrets", "cmvol"));
        for c in ["kube-root-ca.crt", "cmvol", "cmenv"] {
            assert!(pod_references(&pod, "configmaps", c), "{c}");
        }
        assert!(!pod_references(&pod, "configmaps", "vol"));
        for c in ["claim", "p-e"] {
            assert!(pod_references(&pod, "persistentvolumeclaims", c), "{c}");
        }
        assert!(!pod_references(&pod, "persistentvolumeclaims", "p-d"));
    }

    #[test]
    fn node_restriction_labels() {
        for ok in [
            "kubernetes.io/hostname",
            "node.kubernetes.io/instance-type",
            "x.node.kubernetes.io/y",
            "kubelet.kubernetes.io/z",
            "example.com/team",
            "plain",
        ] {
            assert!(!restricted_label(ok), "{ok}");
        }
        for bad in [
            "node-role.kubernetes.io/control-plane",
            "node-restriction.kubernetes.io/trusted",
            "x.node-restriction.kubernetes.io/y",
            "k8s.io/anything",
            "sub.k8s.io/x",
        ] {
            assert!(restricted_label(bad), "{bad}");
        }
        let n1 = User {
            name: "system:node:n1".into(),
            groups: vec!["system:nodes".into()],
        };
        let nodes = crate::registry::find("", "v1", "nodes").unwrap();
        let node = |l: Value| json!({"metadata": {"name": "n1", "labels": l}});
        let old = node(json!({"node-role.kubernetes.io/worker": "", "a": "1"}));
        // Keeping a restricted label set by an admin is fine; changing others too.
        assert!(super::node_restriction(
            &n1,
            nodes,
            Some(&old),
            &node(json!({"node-role.kubernetes.io/worker": "", "a": "2"}))
        )
        .is_ok());
        let e =
            super::node_restriction(&n1, nodes, Some(&old), &node(json!({"a": "1"}))).unwrap_err();
        assert_eq!(e.message, "nodes \"n1\" is forbidden: is not allowed to modify labels: node-role.kubernetes.io/worker");
        let admin = User {
            name: "admin".into(),
            groups: vec!["system:masters".into()],
        };
        assert!(super::node_restriction(&admin, nodes, Some(&old), &node(json!({}))).is_ok());
    }
}
