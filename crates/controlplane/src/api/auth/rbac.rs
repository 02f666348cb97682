//! The RBAC authorizer (rbac.authorization.k8s.io/v1), as kube-apiserver's
//! `--authorization-mode=RBAC`: Roles and ClusterRoles hold rules, bindings
//! grant them to users, groups and service accounts. Evaluation reads an
//! [`Index`] of grants by subject, built from the store and rebuilt only when
//! an RBAC object changed (a store watch on the group's keys, drained on each
//! request: a write is seen by the next request, no rebuild per request).
//! Also what the escalation check and SelfSubjectRulesReview need: the rules a
//! user holds in a namespace, and whether some rules cover others.

use super::authn::User;
use crate::store::{Store, WatchStream};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// The API group of the RBAC kinds.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// One rule of a Role or ClusterRole.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value, k: &str) -> Vec<String> {
    v.get(k)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn has(list: &[String], s: &str) -> bool {
    list.iter().any(|x| x == s)
}

impl PolicyRule {
    pub fn from_value(v: &Value) -> PolicyRule {
        PolicyRule {
            verbs: strings(v, "verbs"),
            api_groups: strings(v, "apiGroups"),
            resources: strings(v, "resources"),
            resource_names: strings(v, "resourceNames"),
            non_resource_urls: strings(v, "nonResourceURLs"),
        }
    }

    /// The rules of a Role or ClusterRole object.
    pub fn of_role(role: &Value) -> Vec<PolicyRule> {
        role.get("rules")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(PolicyRule::from_value).collect())
            .unwrap_or_default()
    }

    /// As the API writes it (empty lists left out).
    pub fn to_value(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in [
            ("verbs", &self.verbs),
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !v.is_empty() || k == "verbs" {
                m.insert(k.into(), json!(v));
            }
        }
        Value::Object(m)
    }

    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == "*" || v == verb)
    }

    /// Upstream's `RuleAllows` for a resource request.
    pub fn allows(&self, r: &ResourceRequest) -> bool {
        if !self.verb_matches(r.verb) {
            return false;
        }
        if !self.api_groups.iter().any(|g| g == "*" || g == r.group) {
            return false;
        }
        let resource_ok = self.resources.iter().any(|res| {
            if res == "*" {
                return true;
            }
            match r.subresource {
                None => res == r.resource,
                Some(sub) => {
                    res.strip_prefix(r.resource)
                        .and_then(|t| t.strip_prefix('/'))
                        == Some(sub)
                        || res.strip_prefix("*/") == Some(sub)
                }
            }
        });
        resource_ok && (self.resource_names.is_empty() || has(&self.resource_names, r.name))
    }

    /// Upstream's `RuleAllows` for a non-resource request (`/healthz`, `/apis/*`).
    pub fn allows_url(&self, verb: &str, path: &str) -> bool {
        self.verb_matches(verb) && self.non_resource_urls.iter().any(|u| url_matches(u, path))
    }

    /// Compact form for messages, as upstream's `CompactString`:
    /// `{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}`.
    pub fn compact(&self) -> String {
        let q = |l: &[String]| {
            l.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut parts = Vec::new();
        for (k, v) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("ResourceNames", &self.resource_names),
            ("NonResourceURLs", &self.non_resource_urls),
            ("Verbs", &self.verbs),
        ] {
            if !v.is_empty() {
                parts.push(format!("{k}:[{}]", q(v)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }

    /// The rule split into rules of one verb, group, resource and name (or URL),
    /// as upstream's escalation check breaks a rule down before checking it.
    fn atoms(&self) -> Vec<PolicyRule> {
        let one = |v: &String| vec![v.clone()];
        let mut out = Vec::new();
        for verb in &self.verbs {
            for url in &self.non_resource_urls {
                out.push(PolicyRule {
                    verbs: one(verb),
                    non_resource_urls: one(url),
                    ..Default::default()
                });
            }
            for g in &self.api_groups {
                for res in &self.resources {
                    let base = PolicyRule {
                        verbs: one(verb),
                        api_groups: one(g),
                        resources: one(res),
                        ..Default::default()
                    };
                    if self.resource_names.is_empty() {
                        out.push(base);
                    } else {
                        for n in &self.resource_names {
                            out.push(PolicyRule {
                                resource_names: one(n),
                                ..base.clone()
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// Whether this rule grants everything `atom` (one of [`Self::atoms`]) does.
    fn covers_atom(&self, atom: &PolicyRule) -> bool {
        let (verb, first) = (&atom.verbs[0], |l: &[String]| l.first().cloned());
        if !self.verbs.iter().any(|v| v == "*" || v == verb) {
            return false;
        }
        if let Some(url) = first(&atom.non_resource_urls) {
            return self.non_resource_urls.iter().any(|u| {
                u == "*" || *u == url || (u.ends_with('*') && url.starts_with(&u[..u.len() - 1]))
            });
        }
        let (Some(g), Some(res)) = (first(&atom.api_groups), first(&atom.resources)) else {
            return false;
        };
        if !self.api_groups.iter().any(|x| x == "*" || *x == g) {
            return false;
        }
        let res_ok = self.resources.iter().any(|x| {
            if x == "*" || *x == res {
                return true;
            }
            // `pods/*` covers `pods/log`; `*/scale` covers `deployments/scale`.
            if let Some(prefix) = x.strip_suffix("/*") {
                if res.split_once('/').is_some_and(|(r, _)| r == prefix) {
                    return true;
                }
            }
            x.strip_prefix("*/")
                .is_some_and(|sub| res.split_once('/').is_some_and(|(_, s)| s == sub))
        });
        res_ok
            && (self.resource_names.is_empty()
                || first(&atom.resource_names).is_some_and(|n| has(&self.resource_names, &n)))
    }
}

fn url_matches(rule: &str, path: &str) -> bool {
    rule == "*"
        || rule == path
        || rule
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix))
}

/// The rules of `wanted` that `held` does not cover (empty: no escalation).
pub fn uncovered(held: &[PolicyRule], wanted: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    for atom in wanted.iter().flat_map(PolicyRule::atoms) {
        if !held.iter().any(|h| h.covers_atom(&atom)) && !out.contains(&atom) {
            out.push(atom);
        }
    }
    out
}

/// Rules that differ only in their verbs merged into one, sorted by their
/// compact text (as upstream lists missing rules).
pub fn compact(rules: Vec<PolicyRule>) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    for r in rules {
        let same = out.iter_mut().find(|o| {
            (
                &o.api_groups,
                &o.resources,
                &o.resource_names,
                &o.non_resource_urls,
            ) == (
                &r.api_groups,
                &r.resources,
                &r.resource_names,
                &r.non_resource_urls,
            )
        });
        match same {
            Some(o) => {
                for v in r.verbs {
                    if !o.verbs.contains(&v) {
                        o.verbs.push(v);
                    }
                }
            }
            None => out.push(r),
        }
    }
    out.sort_by_key(PolicyRule::compact);
    out
}

/// What a resource request asks, for rule matching.
#[derive(Debug, Clone, Copy)]
pub struct ResourceRequest<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
}

/// A request, resource or not.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    Resource(ResourceRequest<'a>),
    NonResource { verb: &'a str, path: &'a str },
}

/// One binding's grant to a subject.
#[derive(Debug, Clone)]
pub struct Grant {
    /// `None` for ClusterRoleBindings (every namespace and cluster scope).
    pub namespace: Option<String>,
    pub rules: Arc<[PolicyRule]>,
    /// `RoleBinding "name/ns"` or `ClusterRoleBinding "name"`, for reasons.
    pub binding: String,
    /// `Role "name"` or `ClusterRole "name"`.
    pub role: String,
}

impl Grant {
    fn applies_in(&self, ns: Option<&str>) -> bool {
        match &self.namespace {
            None => true,
            Some(own) => ns == Some(own.as_str()),
        }
    }
}

/// The subject a grant was found by, for the reason text.
#[derive(Debug, Clone, Copy)]
enum Via<'a> {
    User(&'a str),
    Group(&'a str),
}

/// Grants by subject, and the roles' rules, at one moment.
#[derive(Debug, Default)]
pub struct Index {
    cluster_roles: HashMap<String, Arc<[PolicyRule]>>,
    roles: HashMap<(String, String), Arc<[PolicyRule]>>,
    /// By user name (service accounts as `system:serviceaccount:NS:NAME`).
    users: HashMap<String, Vec<Grant>>,
    groups: HashMap<String, Vec<Grant>>,
}

fn meta<'a>(o: &'a Value, k: &str) -> &'a str {
    o.pointer(&format!("/metadata/{k}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

impl Index {
    /// Builds the index from the four kinds' stored objects.
    pub fn build<'a>(
        roles: impl IntoIterator<Item = &'a Value>,
        cluster_roles: impl IntoIterator<Item = &'a Value>,
        role_bindings: impl IntoIterator<Item = &'a Value>,
        cluster_role_bindings: impl IntoIterator<Item = &'a Value>,
    ) -> Index {
        let mut ix = Index::default();
        for r in cluster_roles {
            ix.cluster_roles
                .insert(meta(r, "name").into(), PolicyRule::of_role(r).into());
        }
        for r in roles {
            ix.roles.insert(
                (meta(r, "namespace").into(), meta(r, "name").into()),
                PolicyRule::of_role(r).into(),
            );
        }
        for (b, cluster) in cluster_role_bindings
            .into_iter()
            .map(|b| (b, true))
            .chain(role_bindings.into_iter().map(|b| (b, false)))
        {
            let ns = meta(b, "namespace");
            let kind = b
                .pointer("/roleRef/kind")
                .and_then(Value::as_str)
                .unwrap_or("");
            let role = b
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            // A binding to a missing role grants nothing (until the role exists).
            let Some(rules) = ix.role_rules(kind, ns, role) else {
                continue;
            };
            let grant = Grant {
                namespace: (!cluster).then(|| ns.to_string()),
                rules,
                binding: if cluster {
                    format!("ClusterRoleBinding {:?}", meta(b, "name"))
                } else {
                    format!("RoleBinding \"{}/{ns}\"", meta(b, "name"))
                },
                role: format!("{kind} {role:?}"),
            };
            for s in b
                .get("subjects")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let field = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("");
                match field("kind") {
                    "User" => ix
                        .users
                        .entry(field("name").into())
                        .or_default()
                        .push(grant.clone()),
                    "Group" => ix
                        .groups
                        .entry(field("name").into())
                        .or_default()
                        .push(grant.clone()),
                    "ServiceAccount" => {
                        // As upstream, a ServiceAccount subject without a namespace
                        // means the binding's own.
                        let sa_ns = match field("namespace") {
                            "" => ns,
                            n => n,
                        };
                        ix.users
                            .entry(format!("system:serviceaccount:{sa_ns}:{}", field("name")))
                            .or_default()
                            .push(grant.clone());
                    }
                    _ => {}
                }
            }
        }
        ix
    }

    /// The rules of the role a binding refers to (`Role` in `ns`, or `ClusterRole`).
    pub fn role_rules(&self, kind: &str, ns: &str, name: &str) -> Option<Arc<[PolicyRule]>> {
        match kind {
            "ClusterRole" => self.cluster_roles.get(name).cloned(),
            "Role" => self.roles.get(&(ns.to_string(), name.to_string())).cloned(),
            _ => None,
        }
    }

    /// Every grant that reaches `user` (its name, its groups, and
    /// `system:authenticated`, which every authenticated user is in).
    fn grants<'a>(&'a self, user: &'a User) -> impl Iterator<Item = (Via<'a>, &'a Grant)> {
        self.grants_of(user, true)
    }

    /// [`Self::grants`], with `system:authenticated` added or not.
    fn grants_of<'a>(
        &'a self,
        user: &'a User,
        authenticated: bool,
    ) -> impl Iterator<Item = (Via<'a>, &'a Grant)> {
        let by_user = self
            .users
            .get(&user.name)
            .into_iter()
            .flatten()
            .map(move |g| (Via::User(&user.name), g));
        let implicit = (authenticated && !user.groups.iter().any(|g| g == "system:authenticated"))
            .then_some("system:authenticated");
        let by_group = user
            .groups
            .iter()
            .map(String::as_str)
            .chain(implicit)
            .flat_map(move |name| {
                self.groups
                    .get(name)
                    .into_iter()
                    .flatten()
                    .map(move |g| (Via::Group(name), g))
            });
        by_user.chain(by_group)
    }

    /// `Some(reason)` if a binding allows the request, as upstream's RBAC
    /// authorizer's reason: `RBAC: allowed by ClusterRoleBinding "x" of
    /// ClusterRole "y" to Group "z"`.
    pub fn allows(&self, user: &User, req: &Request) -> Option<String> {
        self.allows_of(user, true, req)
    }

    /// [`Self::allows`] for a user with exactly the groups given (a
    /// SubjectAccessReview's, which upstream takes as they are).
    pub fn allows_as_given(&self, user: &User, req: &Request) -> Option<String> {
        self.allows_of(user, false, req)
    }

    fn allows_of(&self, user: &User, authenticated: bool, req: &Request) -> Option<String> {
        let ns = match req {
            Request::Resource(r) => r.namespace,
            Request::NonResource { .. } => None,
        };
        let (via, grant) = self.grants_of(user, authenticated).find(|(_, g)| {
            if !g.applies_in(ns) {
                return false;
            }
            match req {
                Request::Resource(r) => g.rules.iter().any(|rule| rule.allows(r)),
                // Non-resource URLs are granted by ClusterRoleBindings only.
                Request::NonResource { verb, path } => {
                    g.namespace.is_none() && g.rules.iter().any(|rule| rule.allows_url(verb, path))
                }
            }
        })?;
        let to = match via {
            Via::User(u) => format!("User {u:?}"),
            Via::Group(g) => format!("Group {g:?}"),
        };
        Some(format!(
            "RBAC: allowed by {} of {} to {to}",
            grant.binding, grant.role
        ))
    }

    /// The rules `user` holds in namespace `ns` (`None`: cluster-wide only),
    /// as SelfSubjectRulesReview lists them and the escalation check compares.
    pub fn rules_for(&self, user: &User, ns: Option<&str>) -> Vec<PolicyRule> {
        let mut out: Vec<PolicyRule> = Vec::new();
        for (_, g) in self.grants(user) {
            let applies = match (&g.namespace, ns) {
                (None, _) => true,
                (Some(own), Some(ns)) => own == ns,
                (Some(_), None) => false,
            };
            if applies {
                for r in g.rules.iter() {
                    if !out.contains(r) {
                        out.push(r.clone());
                    }
                }
            }
        }
        out
    }
}

/// The RBAC state of one API server: the current [`Index`], rebuilt when the
/// store's RBAC objects change.
pub struct Rbac {
    store: Arc<dyn Store>,
    index: RwLock<Arc<Index>>,
    /// Changes under the RBAC keys since the index was built; `None` when the
    /// watch was dropped (the next request builds again and re-watches).
    changes: Mutex<Option<WatchStream>>,
    /// The Node authorizer's graph of pods' references, fed from the same store.
    nodes: super::node_graph::NodeGraph,
}

fn prefix() -> String {
    format!("/registry/{GROUP}/")
}

impl Rbac {
    pub fn new(store: Arc<dyn Store>) -> Arc<Rbac> {
        let rbac = Rbac {
            store,
            index: RwLock::new(Arc::new(Index::default())),
            changes: Mutex::new(None),
            nodes: Default::default(),
        };
        rbac.rebuild(&mut rbac.lock_changes());
        Arc::new(rbac)
    }

    /// The store the index is built from (the Node authorizer reads pods from it).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The Node authorizer's graph (built on first use).
    pub fn node_graph(&self) -> &super::node_graph::NodeGraph {
        &self.nodes
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, Option<WatchStream>> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches first, then lists, so no change falls between the two.
    fn rebuild(&self, changes: &mut Option<WatchStream>) {
        *changes = self.store.watch(&prefix(), self.store.revision()).ok();
        let list = |plural: &str| {
            self.store
                .list(&format!("{}{plural}/", prefix()))
                .0
                .into_iter()
                .map(|s| s.object)
                .collect::<Vec<_>>()
        };
        let (r, cr, rb, crb) = (
            list("roles"),
            list("clusterroles"),
            list("rolebindings"),
            list("clusterrolebindings"),
        );
        let ix = Index::build(
            r.iter().map(|v| &**v),
            cr.iter().map(|v| &**v),
            rb.iter().map(|v| &**v),
            crb.iter().map(|v| &**v),
        );
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ix);
    }

    /// The index as of now: rebuilt first if an RBAC object changed since.
    /// The store reports a write to its watchers before the write returns, so
    /// a request after a binding's deletion is decided without it.
    pub fn index(&self) -> Arc<Index> {
        let mut changes = self.lock_changes();
        let changed = match changes.as_mut() {
            None => true,
            Some(w) => {
                let mut changed = false;
                loop {
                    match w.rx.try_recv() {
                        Ok(_) => changed = true,
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                            changed = true;
                            break;
                        }
                    }
                }
                changed
            }
        };
        if changed {
            self.rebuild(&mut changes);
        }
        drop(changes);
        self.index.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: Value) -> PolicyRule {
        PolicyRule::from_value(&v)
    }

    fn req<'a>(verb: &'a str, resource: &'a str, sub: Option<&'a str>) -> ResourceRequest<'a> {
        ResourceRequest {
            verb,
            group: "",
            resource,
            subresource: sub,
            namespace: Some("default"),
            name: "x",
        }
    }

    #[test]
    fn rules_match_as_upstream() {
        let r =
            rule(json!({"apiGroups": [""], "resources": ["pods", "*/scale"], "verbs": ["get"]}));
        assert!(r.allows(&req("get", "pods", None)));
        assert!(!r.allows(&req("list", "pods", None)));
        assert!(!r.allows(&req("get", "pods", Some("log"))));
        assert!(r.allows(&req("get", "deployments", Some("scale"))));
        let named = rule(
            json!({"apiGroups": ["*"], "resources": ["pods/log"], "resourceNames": ["x"], "verbs": ["*"]}),
        );
        assert!(named.allows(&req("get", "pods", Some("log"))));
        assert!(!named.allows(&ResourceRequest {
            name: "y",
            ..req("get", "pods", Some("log"))
        }));
        let urls = rule(json!({"nonResourceURLs": ["/apis/*", "/version"], "verbs": ["get"]}));
        assert!(urls.allows_url("get", "/apis/apps/v1"));
        assert!(urls.allows_url("get", "/version"));
        assert!(!urls.allows_url("get", "/version/x"));
        assert!(!urls.allows_url("post", "/version"));
    }

    #[test]
    fn escalation_coverage() {
        let held = vec![
            rule(
                json!({"apiGroups": [""], "resources": ["pods", "configmaps/*"], "verbs": ["get", "list"]}),
            ),
            rule(json!({"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]})),
        ];
        let ok = vec![
            rule(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]})),
            rule(
                json!({"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "resourceNames": ["a"], "verbs": ["patch"]}),
            ),
            rule(json!({"apiGroups": [""], "resources": ["configmaps/status"], "verbs": ["list"]})),
        ];
        assert!(uncovered(&held, &ok).is_empty());
        let bad = vec![rule(
            json!({"apiGroups": [""], "resources": ["pods", "secrets"], "verbs": ["get"]}),
        )];
        let missing = uncovered(&held, &bad);
        assert_eq!(
            missing.iter().map(PolicyRule::compact).collect::<Vec<_>>(),
            vec![r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}"#]
        );
    }

    #[test]
    fn index_by_subject() {
        let role = json!({"metadata": {"name": "r", "namespace": "a"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]});
        let cr = json!({"metadata": {"name": "urls"}, "rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]});
        let rb = json!({"metadata": {"name": "b", "namespace": "a"}, "roleRef": {"kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "sa"}, {"kind": "Group", "name": "devs"}]});
        let crb = json!({"metadata": {"name": "c"}, "roleRef": {"kind": "ClusterRole", "name": "urls"},
            "subjects": [{"kind": "Group", "name": "system:authenticated"}]});
        let ix = Index::build([&role], [&cr], [&rb], [&crb]);
        let sa = crate::api::satoken::service_account_user("a", "sa");
        let list = |ns| {
            Request::Resource(ResourceRequest {
                verb: "list",
                group: "",
                resource: "pods",
                subresource: None,
                namespace: Some(ns),
                name: "",
            })
        };
        assert_eq!(
            ix.allows(&sa, &list("a")).as_deref(),
            Some("RBAC: allowed by RoleBinding \"b/a\" of Role \"r\" to User \"system:serviceaccount:a:sa\"")
        );
        assert!(ix.allows(&sa, &list("b")).is_none());
        let dev = User {
            name: "alice".into(),
            groups: vec!["devs".into()],
        };
        assert!(ix.allows(&dev, &list("a")).is_some());
        let health = Request::NonResource {
            verb: "get",
            path: "/healthz",
        };
        // system:authenticated is implicit.
        assert!(ix.allows(&dev, &health).is_some());
        assert_eq!(ix.rules_for(&sa, Some("a")).len(), 2);
        assert_eq!(ix.rules_for(&sa, None).len(), 1);
    }
}
