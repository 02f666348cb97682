//! Authorization: `system:masters` may do everything; a node
//! (`system:node:<name>` in `system:nodes`) may read, and may only write its
//! own Node and Lease and the pods bound to it, and request service-account
//! tokens only bound to its own pods, as the Node authorizer +
//! NodeRestriction admission do upstream. Everyone else is denied. Refusals
//! are kube-apiserver's 403 Status ([`check`], [`check_token_request`]).

use super::authn::User;
use crate::api::error::{ApiError, ApiResult};
use crate::registry::ResourceDef;
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

/// `Ok(())` if allowed.
pub fn authorize(user: &User, a: &Attributes) -> bool {
    if user.is_admin() {
        return true;
    }
    if matches!(a.verb, "get" | "list" | "watch") {
        // Node agents read what they run (pods, secrets, configmaps,
        // services...); upstream narrows this further with the node graph.
        return user.node_name().is_some() && a.subresource != Some("log");
    }
    let Some(node) = user.node_name() else {
        return false;
    };
    let r = a.resource;
    match (r.group, r.plural) {
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
        ("", "serviceaccounts") => {
            a.verb == "create"
                && a.subresource == Some("token")
                && node_token_request(node, a.name, a.incoming, a.related).is_ok()
        }
        _ => false,
    }
}

/// `Ok(())` if `user` may do what `a` describes, else upstream's 403.
pub fn check(user: &User, a: &Attributes) -> ApiResult<()> {
    if authorize(user, a) {
        Ok(())
    } else {
        Err(forbidden(user, a))
    }
}

/// [`check`] for a TokenRequest (`a.related` is the pod it binds to, if
/// that exists), with upstream's reasons when a node is refused.
pub fn check_token_request(user: &User, a: &Attributes) -> ApiResult<()> {
    let mut e = match check(user, a) {
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
    let ns = a.namespace.filter(|_| rd.namespaced);
    let mut e = ApiError::forbidden(&user.name, a.verb, rd, ns, a.name);
    if let Some(sub) = a.subresource {
        e.message = e.message.replace(
            &format!("resource \"{}\"", rd.plural),
            &format!("resource \"{}/{sub}\"", rd.plural),
        );
    }
    e
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
}
