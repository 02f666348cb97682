//! Authentication (x509 client certificates against the cluster CA, node
//! bearer tokens) and a small authorizer: `system:masters` may do
//! everything; a node (`system:node:<name>` in `system:nodes`) may read,
//! and may only write its own Node and Lease and the pods bound to it, and
//! request service-account tokens only bound to its own pods, as the Node
//! authorizer + NodeRestriction admission do upstream.

use crate::registry::ResourceDef;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }

    /// The groups as the API reports them to the user (SelfSubjectReview,
    /// TokenReview): every authenticated user is in `system:authenticated`.
    pub fn reported_groups(&self) -> Vec<String> {
        let mut groups = self.groups.clone();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        groups
    }

    /// The node name, for node identities.
    pub fn node_name(&self) -> Option<&str> {
        if self.groups.iter().any(|g| g == "system:nodes") {
            self.name.strip_prefix("system:node:")
        } else {
            None
        }
    }
}

/// Reads user and groups from a DER client certificate (CN, O).
pub fn user_from_cert(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some(User { name, groups })
}

/// Bearer tokens for node agents, persisted in `DATA_DIR/tokens.json`.
pub struct TokenStore {
    path: PathBuf,
    tokens: RwLock<HashMap<String, User>>,
}

impl TokenStore {
    pub fn load(path: PathBuf) -> Self {
        let mut tokens = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&text) {
                for (tok, u) in m {
                    if let Some(name) = u["user"].as_str() {
                        let groups = u["groups"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|g| g.as_str().map(String::from))
                                    .collect()
                            })
                            .unwrap_or_default();
                        tokens.insert(
                            tok,
                            User {
                                name: name.to_string(),
                                groups,
                            },
                        );
                    }
                }
            }
        }
        TokenStore {
            path,
            tokens: RwLock::new(tokens),
        }
    }

    pub fn lookup(&self, token: &str) -> Option<User> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    /// Mints (and persists) a bearer token for `user`.
    pub fn mint(&self, user: User) -> Result<String, crate::pki::PkiError> {
        use rand::Rng;
        let bytes: [u8; 24] = rand::rng().random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut map = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        map.insert(token.clone(), user);
        let json: serde_json::Map<String, Value> = map
            .iter()
            .map(|(t, u)| {
                (
                    t.clone(),
                    serde_json::json!({"user": u.name, "groups": u.groups}),
                )
            })
            .collect();
        crate::pki::write_file(&self.path, &Value::Object(json).to_string(), 0o600)?;
        Ok(token)
    }
}

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
            // Running commands in pods is for admins (upstream's node role has no pods/exec).
            if a.subresource == Some("exec") {
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
