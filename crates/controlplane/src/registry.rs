//! The resources this API server serves. Group, version, kind, plural and
//! scope come from k8s-openapi's `Resource` metadata of each type (so they
//! cannot drift from the served Kubernetes version); what k8s-openapi does not
//! carry — singular, shortNames, categories, subresources — is written beside
//! each type as kube-apiserver v1.33 publishes it in discovery. Every GA kind
//! that kube-apiserver stores is here; the request-only review kinds are in
//! `api/discovery.rs`.

use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope, SubResourceScope};
use serde_json::Value;
use std::sync::Arc;

pub mod custom;
pub use custom::{CustomDef, CustomResources};

/// One served resource.
#[derive(Debug, Clone, Copy)]
pub struct ResourceDef {
    /// API group, `""` for the legacy core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [&'static str],
    /// The k8s-openapi type behind the resource (an identity for custom resources).
    pub typed: Typed,
    /// What the CustomResourceDefinition says, for a custom resource.
    pub custom: Option<&'static CustomDef>,
    /// For a built-in kind served at a version other than its storage
    /// version (autoscaling/v1 HorizontalPodAutoscaler): how objects convert.
    pub conversion: Option<&'static Conversion>,
}

/// How a built-in resource's objects convert between the version it is
/// served at and the one it is stored at, as kube-apiserver converts them
/// through the internal type (`api/convert.rs`).
#[derive(Clone, Copy)]
pub struct Conversion {
    pub storage_version: &'static str,
    /// Served version → stored version.
    pub to_storage: fn(Value) -> Value,
    /// Stored version → served version.
    pub view: fn(&Value) -> Value,
}

impl std::fmt::Debug for Conversion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conversion(stored at {})", self.storage_version)
    }
}

/// What the server does through the resource's k8s-openapi type: decode and
/// re-encode (unknown fields fall away, defaults of the Rust type do not
/// appear since every field is optional), and its OpenAPI schema.
#[derive(Clone, Copy)]
pub struct Typed {
    /// The object decoded as the type and written back out.
    pub round_trip: fn(&Value) -> Result<Value, serde_json::Error>,
    /// The OpenAPI definition name (`io.k8s.api.apps.v1.Deployment`).
    pub schema_name: fn() -> String,
    /// Registers the type's schema (and what it refers to) in a generator.
    pub add_schema: fn(&mut schemars::SchemaGenerator),
}

impl std::fmt::Debug for Typed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str((self.schema_name)().as_str())
    }
}

impl Typed {
    /// For custom resources, whose shape is their CRD's schema: decoding
    /// keeps the object as it is (pruning is the schema's, `defaults.rs`).
    pub const fn untyped() -> Typed {
        Typed {
            round_trip: |v| Ok(v.clone()),
            schema_name: String::new,
            add_schema: |_| {},
        }
    }

    pub const fn of<T>() -> Typed
    where
        T: serde::de::DeserializeOwned + serde::Serialize + schemars::JsonSchema,
    {
        Typed {
            round_trip: round_trip::<T>,
            schema_name: schema_name::<T>,
            add_schema: add_schema::<T>,
        }
    }
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: &Value,
) -> Result<Value, serde_json::Error> {
    let typed: T = serde_json::from_value(v.clone())?;
    serde_json::to_value(typed)
}

fn schema_name<T: schemars::JsonSchema>() -> String {
    T::schema_name().into_owned()
}

fn add_schema<T: schemars::JsonSchema>(gen: &mut schemars::SchemaGenerator) {
    gen.subschema_for::<T>();
}

/// Whether a k8s-openapi scope type is namespaced, as a constant.
pub trait Scope {
    const NAMESPACED: bool;
}
impl Scope for NamespaceResourceScope {
    const NAMESPACED: bool = true;
}
impl Scope for ClusterResourceScope {
    const NAMESPACED: bool = false;
}
impl Scope for SubResourceScope {
    const NAMESPACED: bool = true;
}

impl ResourceDef {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `group/resource` as used in Status details and error messages
    /// (`deployments.apps`, `pods`).
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Store key prefix for this resource (optionally in one namespace).
    pub fn key_prefix(&self, namespace: Option<&str>) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{group}/{}/{ns}/", self.plural),
            _ => format!("/registry/{group}/{}/", self.plural),
        }
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{}", self.key_prefix(namespace), name)
    }

    /// An object as served at this resource's version. Custom resources are
    /// stored at their CRD's storage version; with conversion strategy
    /// `None` a version differs from another only in `apiVersion`.
    pub fn view<'a>(&self, obj: &'a Value) -> std::borrow::Cow<'a, Value> {
        use std::borrow::Cow;
        if let Some(conv) = self.conversion {
            let want = format!("{}/{}", self.group, conv.storage_version);
            return match obj.get("apiVersion").and_then(Value::as_str) {
                Some(av) if av == want => Cow::Owned((conv.view)(obj)),
                _ => Cow::Borrowed(obj),
            };
        }
        let Some(c) = self.custom else {
            return Cow::Borrowed(obj);
        };
        // Served at the storage version (the usual case): as stored, without making the
        // apiVersion string.
        if c.storage_version == self.version {
            return Cow::Borrowed(obj);
        }
        let want = self.api_version();
        if obj.get("apiVersion").and_then(Value::as_str) == Some(want.as_str()) {
            return Cow::Borrowed(obj);
        }
        let mut out = obj.clone();
        out["apiVersion"] = Value::String(want);
        Cow::Owned(out)
    }

    /// Whether objects are served as stored (else `view`/`to_storage` convert).
    pub fn converts(&self) -> bool {
        self.custom.is_some() || self.conversion.is_some()
    }

    /// An object as stored: custom resources at their CRD's storage version,
    /// built-in kinds through their conversion.
    pub fn to_storage(&self, mut obj: Value) -> Value {
        if let Some(conv) = self.conversion {
            if obj.get("apiVersion").and_then(Value::as_str) == Some(self.api_version().as_str()) {
                return (conv.to_storage)(obj);
            }
            return obj;
        }
        if let Some(c) = self.custom {
            if c.storage_version != self.version && obj.is_object() {
                obj["apiVersion"] = Value::String(format!("{}/{}", self.group, c.storage_version));
            }
        }
        obj
    }

    pub fn verbs(&self) -> &'static [&'static str] {
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

const ALL: &[&str] = &["all"];
const EXT: &[&str] = &["api-extensions"];
const NONE: &[&str] = &[];

/// One `ResourceDef` from a k8s-openapi type and the discovery facts
/// k8s-openapi does not carry.
macro_rules! def {
    ($t:ty, $singular:literal, short: $short:expr, cat: $cat:expr, sub: $sub:expr) => {
        $crate::registry::ResourceDef {
            group: <$t as k8s_openapi::Resource>::GROUP,
            version: <$t as k8s_openapi::Resource>::VERSION,
            kind: <$t as k8s_openapi::Resource>::KIND,
            plural: <$t as k8s_openapi::Resource>::URL_PATH_SEGMENT,
            singular: $singular,
            namespaced:
                <<$t as k8s_openapi::Resource>::Scope as $crate::registry::Scope>::NAMESPACED,
            short_names: $short,
            categories: $cat,
            subresources: $sub,
            typed: $crate::registry::Typed::of::<$t>(),
            custom: None,
            conversion: None,
        }
    };
}

pub(crate) use def;

use k8s_openapi::api::{
    admissionregistration::v1 as admission, apps::v1 as apps, autoscaling::v1 as autoscaling_v1,
    autoscaling::v2 as autoscaling, batch::v1 as batch, certificates::v1 as certificates,
    coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
    events::v1 as events, flowcontrol::v1 as flowcontrol, networking::v1 as networking,
    node::v1 as node, policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling,
    storage::v1 as storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration;

/// Every served resource: the core group first (namespaces and pods at
/// index 0 and 1), then the other groups in kube-apiserver's discovery
/// order.
#[rustfmt::skip]
pub static RESOURCES: &[ResourceDef] = &[
    def!(core::Namespace, "namespace", short: &["ns"], cat: NONE, sub: &["status", "finalize"]),
    def!(core::Pod, "pod", short: &["po"], cat: ALL, sub: &["status", "binding", "log", "eviction", "exec", "attach", "portforward"]),
    def!(core::Node, "node", short: &["no"], cat: NONE, sub: &["proxy", "status"]),
    def!(core::Service, "service", short: &["svc"], cat: ALL, sub: &["status"]),
    def!(core::Endpoints, "endpoints", short: &["ep"], cat: NONE, sub: &[]),
    def!(core::ConfigMap, "configmap", short: &["cm"], cat: NONE, sub: &[]),
    def!(core::Secret, "secret", short: NONE, cat: NONE, sub: &[]),
    def!(core::ServiceAccount, "serviceaccount", short: &["sa"], cat: NONE, sub: &["token"]),
    def!(core::Event, "event", short: &["ev"], cat: NONE, sub: &[]),
    def!(core::LimitRange, "limitrange", short: &["limits"], cat: NONE, sub: &[]),
    def!(core::PersistentVolumeClaim, "persistentvolumeclaim", short: &["pvc"], cat: NONE, sub: &["status"]),
    def!(core::PersistentVolume, "persistentvolume", short: &["pv"], cat: NONE, sub: &["status"]),
    def!(core::PodTemplate, "podtemplate", short: NONE, cat: NONE, sub: &[]),
    def!(core::ReplicationController, "replicationcontroller", short: &["rc"], cat: ALL, sub: &["status", "scale"]),
    def!(core::ResourceQuota, "resourcequota", short: &["quota"], cat: NONE, sub: &["status"]),
    def!(apiregistration::APIService, "apiservice", short: NONE, cat: EXT, sub: &["status"]),
    def!(apps::Deployment, "deployment", short: &["deploy"], cat: ALL, sub: &["status", "scale"]),
    def!(apps::ReplicaSet, "replicaset", short: &["rs"], cat: ALL, sub: &["status", "scale"]),
    def!(apps::DaemonSet, "daemonset", short: &["ds"], cat: ALL, sub: &["status"]),
    def!(apps::ControllerRevision, "controllerrevision", short: NONE, cat: NONE, sub: &[]),
    def!(apps::StatefulSet, "statefulset", short: &["sts"], cat: ALL, sub: &["status", "scale"]),
    def!(events::Event, "event", short: &["ev"], cat: NONE, sub: &[]),
    def!(autoscaling::HorizontalPodAutoscaler, "horizontalpodautoscaler", short: &["hpa"], cat: ALL, sub: &["status"]),
    // Stored as v2 (after its row, so lookups by kind and GC find v2).
    ResourceDef { conversion: Some(&crate::api::convert::HPA_V1), ..def!(autoscaling_v1::HorizontalPodAutoscaler, "horizontalpodautoscaler", short: &["hpa"], cat: ALL, sub: &["status"]) },
    def!(batch::Job, "job", short: NONE, cat: ALL, sub: &["status"]),
    def!(batch::CronJob, "cronjob", short: &["cj"], cat: ALL, sub: &["status"]),
    def!(certificates::CertificateSigningRequest, "certificatesigningrequest", short: &["csr"], cat: NONE, sub: &["approval", "status"]),
    def!(networking::IngressClass, "ingressclass", short: NONE, cat: NONE, sub: &[]),
    def!(networking::Ingress, "ingress", short: &["ing"], cat: NONE, sub: &["status"]),
    def!(networking::NetworkPolicy, "networkpolicy", short: &["netpol"], cat: NONE, sub: &[]),
    def!(networking::IPAddress, "ipaddress", short: &["ip"], cat: NONE, sub: &[]),
    def!(networking::ServiceCIDR, "servicecidr", short: NONE, cat: NONE, sub: &["status"]),
    def!(policy::PodDisruptionBudget, "poddisruptionbudget", short: &["pdb"], cat: NONE, sub: &["status"]),
    def!(rbac::ClusterRoleBinding, "clusterrolebinding", short: NONE, cat: NONE, sub: &[]),
    def!(rbac::ClusterRole, "clusterrole", short: NONE, cat: NONE, sub: &[]),
    def!(rbac::RoleBinding, "rolebinding", short: NONE, cat: NONE, sub: &[]),
    def!(rbac::Role, "role", short: NONE, cat: NONE, sub: &[]),
    def!(storage::CSIDriver, "csidriver", short: NONE, cat: NONE, sub: &[]),
    def!(storage::CSINode, "csinode", short: NONE, cat: NONE, sub: &[]),
    def!(storage::CSIStorageCapacity, "csistoragecapacity", short: NONE, cat: NONE, sub: &[]),
    def!(storage::StorageClass, "storageclass", short: &["sc"], cat: NONE, sub: &[]),
    def!(storage::VolumeAttachment, "volumeattachment", short: NONE, cat: NONE, sub: &["status"]),
    def!(admission::MutatingWebhookConfiguration, "mutatingwebhookconfiguration", short: NONE, cat: EXT, sub: &[]),
    def!(admission::ValidatingAdmissionPolicy, "validatingadmissionpolicy", short: NONE, cat: EXT, sub: &["status"]),
    def!(admission::ValidatingAdmissionPolicyBinding, "validatingadmissionpolicybinding", short: NONE, cat: EXT, sub: &[]),
    def!(admission::ValidatingWebhookConfiguration, "validatingwebhookconfiguration", short: NONE, cat: EXT, sub: &[]),
    def!(apiextensions::CustomResourceDefinition, "customresourcedefinition", short: &["crd", "crds"], cat: EXT, sub: &["status"]),
    def!(scheduling::PriorityClass, "priorityclass", short: &["pc"], cat: NONE, sub: &[]),
    def!(coordination::Lease, "lease", short: NONE, cat: NONE, sub: &[]),
    def!(node::RuntimeClass, "runtimeclass", short: NONE, cat: NONE, sub: &[]),
    def!(discovery::EndpointSlice, "endpointslice", short: NONE, cat: NONE, sub: &[]),
    def!(flowcontrol::FlowSchema, "flowschema", short: NONE, cat: NONE, sub: &["status"]),
    def!(flowcontrol::PriorityLevelConfiguration, "prioritylevelconfiguration", short: NONE, cat: NONE, sub: &["status"]),
];

/// Looks up a resource by group, version and plural name.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks up a resource by group and kind.
pub fn find_kind(group: &str, kind: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

/// The one version served of `group` (`v1` for the core group).
pub fn version_of(group: &str) -> &'static str {
    RESOURCES
        .iter()
        .find(|r| r.group == group)
        .map_or("v1", |r| r.version)
}

/// The groups (other than core) served, in discovery order.
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

pub fn by_group_version(group: &str, version: &str) -> Vec<&'static ResourceDef> {
    RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect()
}

/// What one control plane serves at a moment: the built-in resources and
/// the custom ones of its CRDs. Cheap to take (an `Arc`), and stable for the
/// request or pass that holds it.
#[derive(Clone, Default)]
pub struct Resources {
    custom: Arc<Vec<&'static ResourceDef>>,
}

impl Resources {
    pub fn new(custom: Arc<Vec<&'static ResourceDef>>) -> Self {
        Resources { custom }
    }

    /// Built-in resources, then custom ones.
    pub fn all(&self) -> impl Iterator<Item = &'static ResourceDef> + '_ {
        RESOURCES.iter().chain(self.custom.iter().copied())
    }

    /// The custom resources.
    pub fn custom(&self) -> &[&'static ResourceDef] {
        &self.custom
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
        self.all()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// A resource by group and kind, at its group's preferred version.
    pub fn find_kind(&self, group: &str, kind: &str) -> Option<&'static ResourceDef> {
        let preferred = self.versions_of(group).into_iter().next()?;
        self.all()
            .find(|r| r.group == group && r.kind == kind && r.version == preferred)
            .or_else(|| self.all().find(|r| r.group == group && r.kind == kind))
    }

    /// A resource by group and plural at any served version, the preferred first.
    pub fn find_plural(&self, group: &str, plural: &str) -> Option<&'static ResourceDef> {
        self.versions_of(group)
            .into_iter()
            .find_map(|v| self.find(group, v, plural))
    }

    /// The served versions of `group`, preferred first (kube-aware order for
    /// custom groups, as kube-apiserver sorts CRD versions).
    pub fn versions_of(&self, group: &str) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for r in self.all().filter(|r| r.group == group) {
            if !out.contains(&r.version) {
                out.push(r.version);
            }
        }
        out.sort_by(|a, b| custom::version_order(a, b));
        out
    }

    /// The groups (other than core) served, in discovery order: built-in
    /// groups as kube-apiserver lists them, then custom groups by name.
    pub fn groups(&self) -> Vec<&'static str> {
        let mut out = groups();
        let mut custom: Vec<&'static str> = self
            .custom
            .iter()
            .map(|r| r.group)
            .filter(|g| !out.contains(g))
            .collect();
        custom.sort_unstable();
        custom.dedup();
        out.extend(custom);
        out
    }

    pub fn by_group_version(&self, group: &str, version: &str) -> Vec<&'static ResourceDef> {
        self.all()
            .filter(|r| r.group == group && r.version == version)
            .collect()
    }
}

pub fn pods() -> &'static ResourceDef {
    &RESOURCES[1]
}

pub fn nodes() -> &'static ResourceDef {
    &RESOURCES[2]
}
