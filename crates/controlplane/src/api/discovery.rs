//! Discovery documents, in both forms kube-apiserver serves, built from the
//! same resource facts ([`registry::RESOURCES`] plus the request-only review
//! resources):
//!
//! - legacy: /api (`APIVersions`), /api/v1 and /apis/<group>/<version>
//!   (`APIResourceList`), /apis (`APIGroupList`), /apis/<group> (`APIGroup`);
//! - aggregated (apidiscovery.k8s.io/v2, and v2beta1 for older clients):
//!   one `APIGroupDiscoveryList` with every resource of the core group at
//!   /api, of all other groups at /apis, served when the Accept header asks
//!   for it, as kubectl 1.32 does. With it kubectl needs two requests for
//!   discovery instead of one per group version.

use crate::registry::{self, ResourceDef, Resources};
use serde_json::{json, Value};

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// Resources with no stored objects, only request/response:
/// authentication.k8s.io/v1 `selfsubjectreviews` (`kubectl auth whoami`) and
/// `tokenreviews`.
#[rustfmt::skip]
static REVIEW_RESOURCES: &[ResourceDef] = &[
    registry::def!(k8s_openapi::api::authentication::v1::SelfSubjectReview, "selfsubjectreview", short: &[], cat: &[], sub: &[]),
    registry::def!(k8s_openapi::api::authentication::v1::TokenReview, "tokenreview", short: &[], cat: &[], sub: &[]),
    registry::def!(k8s_openapi::api::authorization::v1::LocalSubjectAccessReview, "localsubjectaccessreview", short: &[], cat: &[], sub: &[]),
    registry::def!(k8s_openapi::api::authorization::v1::SelfSubjectAccessReview, "selfsubjectaccessreview", short: &[], cat: &[], sub: &[]),
    registry::def!(k8s_openapi::api::authorization::v1::SelfSubjectRulesReview, "selfsubjectrulesreview", short: &[], cat: &[], sub: &[]),
    registry::def!(k8s_openapi::api::authorization::v1::SubjectAccessReview, "subjectaccessreview", short: &[], cat: &[], sub: &[]),
];

/// The request/response-only resource `plural` (`tokenreviews`, ...).
pub(crate) fn review_resource(plural: &str) -> Option<&'static ResourceDef> {
    REVIEW_RESOURCES.iter().find(|r| r.plural == plural)
}

pub(crate) fn is_review(r: &ResourceDef) -> bool {
    REVIEW_RESOURCES
        .iter()
        .any(|rv| (rv.group, rv.plural) == (r.group, r.plural))
}

fn verbs(r: &ResourceDef) -> &'static [&'static str] {
    if is_review(r) {
        &["create"]
    } else {
        r.verbs()
    }
}

/// Every served resource of a group version, in registry order.
pub(crate) fn served(res: &Resources, group: &str, version: &str) -> Vec<&'static ResourceDef> {
    let mut rs = res.by_group_version(group, version);
    rs.extend(
        REVIEW_RESOURCES
            .iter()
            .filter(|r| r.group == group && r.version == version),
    );
    rs
}

/// The groups other than core, in discovery order.
pub(crate) fn groups(res: &Resources) -> Vec<&'static str> {
    let mut g = res.groups();
    for r in REVIEW_RESOURCES {
        if !g.contains(&r.group) {
            g.push(r.group);
        }
    }
    g
}

/// What a subresource accepts and returns.
struct Subresource {
    name: &'static str,
    /// The kind returned, with its group and version when they differ from
    /// the parent resource's.
    kind: &'static str,
    group_version: Option<(&'static str, &'static str)>,
    verbs: &'static [&'static str],
}

fn subresource(r: &ResourceDef, name: &'static str) -> Subresource {
    let (kind, group_version, verbs): (_, _, &'static [&'static str]) = match name {
        "status" | "approval" => (r.kind, None, &["get", "patch", "update"]),
        "scale" => (
            "Scale",
            Some(("autoscaling", "v1")),
            &["get", "patch", "update"],
        ),
        "binding" => ("Binding", None, &["create"]),
        "eviction" => ("Eviction", Some(("policy", "v1")), &["create"]),
        "log" => ("Pod", None, &["get"]),
        "exec" => ("PodExecOptions", None, &["create", "get"]),
        "attach" => ("PodAttachOptions", None, &["create", "get"]),
        "portforward" => ("PodPortForwardOptions", None, &["create", "get"]),
        "finalize" => ("Namespace", None, &["update"]),
        "proxy" => (
            "NodeProxyOptions",
            None,
            &["create", "delete", "get", "patch", "update"],
        ),
        "token" => (
            "TokenRequest",
            Some(("authentication.k8s.io", "v1")),
            &["create"],
        ),
        _ => (r.kind, None, &["get"]),
    };
    Subresource {
        name,
        kind,
        group_version,
        verbs,
    }
}

pub fn api_group_list(res: &Resources) -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups(res).into_iter().map(|g| group_doc(res, g)).collect::<Vec<_>>(),
    })
}

/// The served versions of a group, preferred first.
fn versions(res: &Resources, group: &str) -> Vec<&'static str> {
    let v = res.versions_of(group);
    if v.is_empty() {
        // The review-only groups.
        vec![registry::version_of(group)]
    } else {
        v
    }
}

fn group_doc(res: &Resources, group: &str) -> Value {
    let gvs: Vec<Value> = versions(res, group)
        .into_iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": gvs, "preferredVersion": gvs[0]})
}

pub fn api_group(res: &Resources, group: &str) -> Option<Value> {
    groups(res).contains(&group).then(|| {
        let mut g = group_doc(res, group);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

fn resource_entry(r: &ResourceDef) -> Value {
    let mut e = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": verbs(r),
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    e
}

fn subresource_entry(r: &ResourceDef, sub: &Subresource) -> Value {
    let mut e = json!({
        "name": format!("{}/{}", r.plural, sub.name),
        "singularName": "",
        "namespaced": r.namespaced,
        "kind": sub.kind,
        "verbs": sub.verbs,
    });
    if let Some((group, version)) = sub.group_version {
        e["group"] = json!(group);
        e["version"] = json!(version);
    }
    e
}

pub fn resource_list(res: &Resources, group: &str, version: &str) -> Option<Value> {
    let rs = served(res, group, version);
    if rs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for r in rs {
        resources.push(resource_entry(r));
        for name in r.subresources {
            resources.push(subresource_entry(r, &subresource(r, name)));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// The aggregated discovery versions served, newest first.
const AGGREGATED_VERSIONS: &[&str] = &["v2", "v2beta1"];

/// The apidiscovery.k8s.io version of `APIGroupDiscoveryList` the Accept
/// header asks for (the first one listed that is served), if any.
pub fn aggregated_version(accept: &str) -> Option<&'static str> {
    accept.split(',').find_map(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next()?;
        let (mut g, mut v, mut as_) = ("", "", "");
        for p in parts {
            match p.split_once('=') {
                Some(("g", x)) => g = x,
                Some(("v", x)) => v = x,
                Some(("as", x)) => as_ = x,
                _ => {}
            }
        }
        let wanted = media.eq_ignore_ascii_case("application/json")
            && g == "apidiscovery.k8s.io"
            && as_ == "APIGroupDiscoveryList";
        AGGREGATED_VERSIONS
            .iter()
            .copied()
            .find(|served| wanted && *served == v)
    })
}

/// The response Content-Type that tells the client which form it got.
pub fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}

/// `APIGroupDiscoveryList` of the core group (`legacy`, for /api) or of
/// every other group (for /apis).
pub fn aggregated(res: &Resources, version: &str, legacy: bool) -> Value {
    let group_names = if legacy { vec![""] } else { groups(res) };
    let items: Vec<Value> = group_names
        .into_iter()
        .map(|group| {
            let mut metadata = json!({"creationTimestamp": null});
            if !group.is_empty() {
                metadata["name"] = json!(group);
            }
            json!({
                "metadata": metadata,
                "versions": versions(res, group).into_iter().map(|v| json!({
                    "version": v,
                    "resources": served(res, group, v).into_iter().map(aggregated_resource).collect::<Vec<_>>(),
                    "freshness": "Current",
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

fn aggregated_resource(r: &ResourceDef) -> Value {
    let mut e = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": verbs(r),
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    if !r.subresources.is_empty() {
        let subs: Vec<Value> = r
            .subresources
            .iter()
            .map(|name| {
                let sub = subresource(r, name);
                let (group, version) = sub.group_version.unwrap_or((r.group, r.version));
                json!({
                    "subresource": sub.name,
                    "responseKind": {"group": group, "version": version, "kind": sub.kind},
                    "verbs": sub.verbs,
                })
            })
            .collect();
        e["subresources"] = json!(subs);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_version_follows_the_accept_header() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(kubectl), Some("v2"));
        assert_eq!(
            aggregated_version(
                "application/json; g=apidiscovery.k8s.io; v=v2beta1; as=APIGroupDiscoveryList"
            ),
            Some("v2beta1")
        );
        assert_eq!(aggregated_version("application/json, */*"), None);
        assert_eq!(aggregated_version(""), None);
        assert_eq!(
            aggregated_version(
                "application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList"
            ),
            None
        );
    }

    #[test]
    fn both_forms_describe_the_same_resources() {
        let res = Resources::default();
        let legacy = resource_list(&res, "apps", "v1").expect("apps/v1");
        let agg = aggregated(&res, "v2", false);
        let apps = agg["items"]
            .as_array()
            .and_then(|items| items.iter().find(|g| g["metadata"]["name"] == "apps"))
            .expect("apps group");
        let names = |v: &Value, key: &str| -> Vec<String> {
            v.as_array()
                .map(|rs| {
                    rs.iter()
                        .filter_map(|r| r[key].as_str())
                        .filter(|n| !n.contains('/'))
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            names(&legacy["resources"], "name"),
            names(&apps["versions"][0]["resources"], "resource")
        );
        let core = aggregated(&res, "v2", true);
        assert_eq!(core["items"].as_array().map(Vec::len), Some(1));
        assert!(core["items"][0]["metadata"].get("name").is_none());
    }
}
