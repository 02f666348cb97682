//! Object semantics shared by the HTTP handlers and the in-process
//! controllers: create/update/patch/delete with metadata rules, defaults,
//! validation, optimistic concurrency, finalizers and graceful deletion.

use super::admission::{self, Operation, Request};
use super::defaults::{
    apply_defaults, has_status_subresource, normalize, validate, validate_with_old,
};
use super::error::{cause, ApiError, ApiResult};
use super::fields;
use super::selector::{FieldSelector, LabelSelector};
use crate::registry::{self, ResourceDef};
use crate::store::{Store, StoreError, Stored};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

/// Who is writing, and how.
#[derive(Debug, Clone, Default)]
pub struct WriteCtx {
    pub manager: String,
    pub dry_run: bool,
    pub validation: FieldValidation,
    pub warnings: Vec<String>,
    /// The requester, for admission webhooks' `userInfo` (`None`: an in-process controller).
    pub user: Option<super::auth::User>,
}

impl WriteCtx {
    pub fn controller(name: &str) -> Self {
        WriteCtx {
            manager: name.to_string(),
            validation: FieldValidation::Ignore,
            ..Default::default()
        }
    }
}

/// Options of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// `DeleteOptions` (body or query).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
    /// The requester, for admission webhooks (`None`: an in-process controller).
    pub user: Option<super::auth::User>,
}

impl DeleteOptions {
    pub fn from_value(v: &Value) -> Self {
        let mut o = DeleteOptions {
            grace_period: v.get("gracePeriodSeconds").and_then(Value::as_i64),
            propagation: v
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .map(String::from),
            precondition_uid: v
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(String::from),
            precondition_rv: v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from),
            dry_run: v
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty()),
            user: None,
        };
        if o.propagation.is_none() {
            if let Some(orphan) = v.get("orphanDependents").and_then(Value::as_bool) {
                o.propagation = Some(if orphan { "Orphan" } else { "Background" }.into());
            }
        }
        o
    }
}

pub use super::service_ips::{ServiceCidr, ServiceCidrs};

/// `--service-node-port-range` (default 30000-32767).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            first: 30000,
            last: 32767,
        }
    }
}

impl PortRange {
    /// `30000-32767` (or a single port).
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let first: u16 = a.trim().parse().ok()?;
        let last: u16 = b.trim().parse().ok()?;
        (first > 0 && first <= last).then_some(PortRange { first, last })
    }
    pub fn contains(&self, port: i64) -> bool {
        (i64::from(self.first)..=i64::from(self.last)).contains(&port)
    }
    /// A free port, from the upper part of the range first (upstream keeps
    /// the lower 16-128 ports for ports asked for by value).
    fn pick_free(&self, used: &HashSet<i64>) -> Option<i64> {
        let size = u32::from(self.last - self.first) + 1;
        let offset = (size / 32).clamp(16, 128).min(size);
        let free = |n: u32| {
            let p = i64::from(self.first) + i64::from(n);
            (!used.contains(&p)).then_some(p)
        };
        pick_in_bands(0, size, offset, free)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Picks `free(n)` for some n in `start..start+count`: a random start in the
/// upper band `[start+offset, end)` scanned round, then the lower band.
pub(super) fn pick_in_bands<T>(
    start: u32,
    count: u32,
    offset: u32,
    free: impl Fn(u32) -> Option<T>,
) -> Option<T> {
    use rand::Rng;
    let upper = count.saturating_sub(offset);
    if upper > 0 {
        let r = rand::rng().random_range(0..upper);
        for k in 0..upper {
            if let Some(v) = free(start + offset + (r + k) % upper) {
                return Some(v);
            }
        }
    }
    (0..offset.min(count)).find_map(|n| free(start + n))
}

/// Every nodePort and the healthCheckNodePort a Service holds.
fn service_node_ports(svc: &Value) -> impl Iterator<Item = i64> + '_ {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_i64())
        .chain(
            svc.pointer("/spec/healthCheckNodePort")
                .and_then(Value::as_i64),
        )
        .filter(|n| *n != 0)
}

/// The Service defaults that depend on its type, applied on create and on
/// every update (a type change needs them): `externalTrafficPolicy` only for
/// externally reachable Services, `allocateLoadBalancerNodePorts` only for
/// LoadBalancer, IP family fields for all but ExternalName.
fn default_service_type_fields(obj: &mut Value) {
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    let external_ips = obj
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let set_default = |spec: &mut serde_json::Map<String, Value>, k: &str, v: Value| {
        if spec.get(k).is_none_or(Value::is_null) {
            spec.insert(k.to_string(), v);
        }
    };
    if ty == "NodePort" || ty == "LoadBalancer" || external_ips {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    } else {
        spec.remove("externalTrafficPolicy");
    }
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    } else {
        spec.remove("allocateLoadBalancerNodePorts");
        spec.remove("loadBalancerClass");
    }
    if ty != "ExternalName" {
        // ipFamilies and ipFamilyPolicy are the allocator's (`service_ips::assign`).
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
}

/// A Service update, as the service REST strategy and storage treat it:
/// clusterIP and clusterIPs the client leaves out are kept (the allocator,
/// `service_ips::assign`, checks what may change); nodePorts and the
/// healthCheckNodePort the client leaves out are kept
/// (`patchAllocatedValues`); those the new type has no use for and the
/// client did not change are dropped (`dropTypeDependentFields`), which is
/// what releases them.
fn service_update(old: &Value, new: &mut Value) -> ApiResult<()> {
    let ty_of = |o: &Value| {
        o.pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string()
    };
    let (old_ty, new_ty) = (ty_of(old), ty_of(new));
    if !new.get("spec").is_some_and(Value::is_object) {
        new["spec"] = json!({});
    }
    if old_ty != "ExternalName" && new_ty != "ExternalName" {
        super::service_ips::normalize_update(old, new);
    }
    let node_port_type = |t: &str| t == "NodePort" || t == "LoadBalancer";
    let old_ports: Vec<Value> = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if node_port_type(&old_ty) && node_port_type(&new_ty) {
        // Ports the new spec sets itself may not be patched in elsewhere.
        let set: HashSet<i64> = new
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p["nodePort"].as_i64())
            .collect();
        if let Some(Value::Array(ports)) = new.pointer_mut("/spec/ports") {
            for p in ports.iter_mut() {
                if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                    continue;
                }
                let name = p.get("name").and_then(Value::as_str).unwrap_or("");
                let prev = old_ports
                    .iter()
                    .find(|o| o.get("name").and_then(Value::as_str).unwrap_or("") == name)
                    .and_then(|o| o["nodePort"].as_i64());
                if let Some(np) = prev.filter(|np| !set.contains(np)) {
                    p["nodePort"] = json!(np);
                }
            }
        }
    } else if node_port_type(&old_ty) {
        // Unchanged nodePorts go with the type that needed them.
        if let Some(Value::Array(ports)) = new.pointer_mut("/spec/ports") {
            for p in ports.iter_mut() {
                let np = p.get("nodePort").and_then(Value::as_i64);
                if np.is_some_and(|np| old_ports.iter().any(|o| o["nodePort"].as_i64() == Some(np)))
                {
                    if let Some(m) = p.as_object_mut() {
                        m.remove("nodePort");
                    }
                }
            }
        }
    }
    let hc = |o: &Value| {
        o.pointer("/spec/healthCheckNodePort")
            .and_then(Value::as_i64)
    };
    let hc_type = |o: &Value, t: &str| {
        t == "LoadBalancer"
            && o.pointer("/spec/externalTrafficPolicy")
                .and_then(Value::as_str)
                == Some("Local")
    };
    if hc_type(old, &old_ty) {
        if hc_type(new, &new_ty) {
            if hc(new).unwrap_or(0) == 0 {
                if let Some(v) = hc(old) {
                    new["spec"]["healthCheckNodePort"] = json!(v);
                }
            }
        } else if hc(new) == hc(old) {
            if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("healthCheckNodePort");
            }
        }
    }
    Ok(())
}

/// The object layer on top of a [`Store`].
pub struct Core {
    pub store: Arc<dyn Store>,
    pub service_cidrs: ServiceCidrs,
    /// `--service-node-port-range`.
    pub node_ports: PortRange,
    alloc: Mutex<()>,
    /// The resources of the stored CRDs.
    custom: registry::CustomResources,
}

/// A custom resource changed in more than metadata (and status, with a status
/// subresource): what bumps its generation (apiextensions' strategy).
fn custom_changed(rd: &ResourceDef, old: &Value, new: &Value) -> bool {
    if rd.custom.is_none() {
        return false;
    }
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            if has_status_subresource(rd) {
                m.remove("status");
            }
        }
        v
    };
    strip(old) != strip(new)
}

/// Held by a CRD being deleted until its objects are gone.
pub(crate) const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Whether `rd` is CustomResourceDefinitions.
pub(crate) fn is_crd(rd: &ResourceDef) -> bool {
    (rd.group, rd.plural) == ("apiextensions.k8s.io", "customresourcedefinitions")
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn random_suffix(n: usize) -> String {
    use rand::Rng;
    // Same alphabet as k8s.io/apimachinery/pkg/util/rand (no vowels, no confusables).
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHA[rng.random_range(0..ALPHA.len())] as char)
        .collect()
}

pub fn generate_name(prefix: &str) -> String {
    format!("{prefix}{}", random_suffix(5))
}

fn parse_rv(rv: &str) -> ApiResult<u64> {
    rv.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version \"{rv}\"")))
}

impl Core {
    pub fn new(store: Arc<dyn Store>, service_cidrs: ServiceCidrs) -> Arc<Self> {
        Self::with_node_ports(store, service_cidrs, PortRange::default())
    }

    /// [`Core::new`] with a NodePort range other than 30000-32767.
    pub fn with_node_ports(
        store: Arc<dyn Store>,
        service_cidrs: ServiceCidrs,
        node_ports: PortRange,
    ) -> Arc<Self> {
        let core = Arc::new(Core {
            store,
            service_cidrs,
            node_ports,
            alloc: Mutex::new(()),
            custom: registry::CustomResources::default(),
        });
        core.refresh_custom();
        core
    }

    fn ns_of<'a>(rd: &ResourceDef, ns: Option<&'a str>) -> Option<&'a str> {
        if rd.namespaced {
            ns
        } else {
            None
        }
    }

    pub fn get(&self, rd: &ResourceDef, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        self.store
            .get(&rd.key(Self::ns_of(rd, ns), name))
            .map(|s| rd.view(&s.object).into_owned())
            .ok_or_else(|| ApiError::not_found(rd, name))
    }

    pub fn get_stored(&self, rd: &ResourceDef, ns: Option<&str>, name: &str) -> Option<Stored> {
        self.store.get(&rd.key(Self::ns_of(rd, ns), name))
    }

    /// Lists objects; returns (items, list resourceVersion, continue token).
    pub fn list(
        &self,
        rd: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> ApiResult<(Vec<Arc<Value>>, u64, Option<String>)> {
        let prefix = rd.key_prefix(Self::ns_of(rd, ns));
        // Later pages are read at the first page's revision (kube-apiserver reads them from
        // etcd at that revision): read from now, an object created meanwhile whose name sorts
        // before the page boundary would be in no page, yet before the list's
        // resourceVersion, so a watch from it would never report it either.
        let continue_key = opts
            .continue_token
            .as_deref()
            .map(decode_continue)
            .transpose()?;
        let (all, rev) = match continue_key.as_ref().and_then(|k| k.revision) {
            Some(rv) => {
                let all = self.store.list_at(&prefix, rv).map_err(|e| match e {
                    StoreError::Gone { .. } => ApiError::gone(CONTINUE_TOO_OLD),
                    other => ApiError::internal(other.to_string()),
                })?;
                (all, rv)
            }
            None => self.store.list(&prefix),
        };
        let start_after = continue_key.map(|k| k.start);
        let mut out: Vec<Arc<Value>> = Vec::new();
        let mut next = None;
        for s in all {
            let key_name = key_suffix(&s.object);
            if let Some(start) = &start_after {
                if key_name.as_str() <= start.as_str() {
                    continue;
                }
            }
            if !opts.labels.matches(&s.object) || !opts.fields.matches(&s.object) {
                continue;
            }
            if let Some(limit) = opts.limit {
                if limit > 0 && out.len() == limit {
                    next = Some(encode_continue(&key_suffix(&out[out.len() - 1]), rev));
                    break;
                }
            }
            out.push(s.object);
        }
        Ok((out, rev, next))
    }

    fn check_namespace(&self, rd: &ResourceDef, ns: Option<&str>) -> ApiResult<()> {
        if !rd.namespaced {
            return Ok(());
        }
        let ns =
            ns.ok_or_else(|| ApiError::bad_request("the namespace of the object must be set"))?;
        let nsrd = &registry::RESOURCES[0];
        let Some(n) = self.store.get(&nsrd.key(None, ns)) else {
            return Err(ApiError::not_found(nsrd, ns));
        };
        if n.object.pointer("/metadata/deletionTimestamp").is_some() {
            let mut e = ApiError::new(
                403,
                "Forbidden",
                format!("{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", rd.group_resource(), ""),
            );
            e.details = Some(
                json!({"kind": rd.plural, "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}),
            );
            return Err(e);
        }
        Ok(())
    }

    /// No custom resource is created while its CRD is being deleted.
    fn check_crd_not_terminating(
        &self,
        rd: &ResourceDef,
        c: &registry::CustomDef,
    ) -> ApiResult<()> {
        let crds = registry::find("apiextensions.k8s.io", "v1", "customresourcedefinitions");
        let terminating = crds
            .and_then(|crds| self.store.get(&crds.key(None, &c.crd_name)))
            .is_some_and(|crd| crd.object.pointer("/metadata/deletionTimestamp").is_some());
        if !terminating {
            return Ok(());
        }
        let mut e = ApiError::new(
            405,
            "MethodNotAllowed",
            "create not allowed while custom resource definition is terminating",
        );
        e.details = Some(json!({"group": rd.group, "kind": rd.plural}));
        Err(e)
    }

    /// Sets apiVersion/kind, checks the body's namespace against the URL's.
    fn prepare_body(rd: &ResourceDef, ns: Option<&str>, obj: &mut Value) -> ApiResult<()> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        let av = rd.api_version();
        match obj.get("apiVersion").and_then(Value::as_str) {
            Some(v) if !v.is_empty() && v != av => {
                return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({av})"
            )))
            }
            _ => obj["apiVersion"] = json!(av),
        }
        match obj.get("kind").and_then(Value::as_str) {
            Some(k) if !k.is_empty() && k != rd.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    rd.kind
                )))
            }
            _ => obj["kind"] = json!(rd.kind),
        }
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        if rd.namespaced {
            let body_ns = meta_str(obj, "namespace").to_string();
            let url_ns = ns.unwrap_or("");
            if !body_ns.is_empty() && !url_ns.is_empty() && body_ns != url_ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            let effective = if url_ns.is_empty() {
                body_ns
            } else {
                url_ns.to_string()
            };
            obj["metadata"]["namespace"] = json!(effective);
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        Ok(())
    }

    fn normalize_checked(
        &self,
        rd: &ResourceDef,
        obj: &Value,
        ctx: &mut WriteCtx,
    ) -> ApiResult<Value> {
        let (out, unknown) = normalize(rd, obj)?;
        if !unknown.is_empty() {
            match ctx.validation {
                FieldValidation::Strict => {
                    let msg = unknown
                        .iter()
                        .map(|f| format!("unknown field \"{f}\""))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {msg}"
                    )));
                }
                FieldValidation::Warn => {
                    for f in unknown {
                        ctx.warnings.push(format!("unknown field \"{f}\""));
                    }
                }
                FieldValidation::Ignore => {}
            }
        }
        Ok(out)
    }

    pub fn create(
        &self,
        rd: &ResourceDef,
        ns: Option<&str>,
        mut obj: Value,
        ctx: &mut WriteCtx,
    ) -> ApiResult<Value> {
        Self::prepare_body(rd, ns, &mut obj)?;
        let ns_owned = if rd.namespaced {
            Some(meta_str(&obj, "namespace").to_string())
        } else {
            None
        };
        let ns = ns_owned.as_deref();
        if rd.kind == "Namespace" && rd.group.is_empty() {
            // namespaces are cluster-scoped: nothing to check
        } else {
            self.check_namespace(rd, ns)?;
        }
        if let Some(c) = rd.custom {
            self.check_crd_not_terminating(rd, c)?;
        }
        if meta_str(&obj, "name").is_empty() {
            let gen = meta_str(&obj, "generateName").to_string();
            if gen.is_empty() {
                return Err(ApiError::invalid(
                    rd,
                    "",
                    vec![cause(
                        "FieldValueRequired",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    )],
                ));
            }
            obj["metadata"]["name"] = json!(generate_name(&gen));
        }
        let mut obj = self.normalize_checked(rd, &obj, ctx)?;
        let name = meta_str(&obj, "name").to_string();
        {
            let meta = obj["metadata"]
                .as_object_mut()
                .ok_or_else(|| ApiError::internal("metadata"))?;
            meta.remove("resourceVersion");
            meta.remove("deletionTimestamp");
            meta.remove("deletionGracePeriodSeconds");
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), json!(now()));
            if super::kinds::tracks_generation(rd) {
                meta.insert("generation".into(), json!(1));
            }
        }
        apply_defaults(rd, &mut obj);
        if (rd.group, rd.kind) == ("batch", "Job")
            && obj.pointer("/spec/manualSelector") != Some(&json!(true))
        {
            // The Job REST strategy generates the selector from the uid.
            let uid = meta_str(&obj, "uid").to_string();
            let job = meta_str(&obj, "name").to_string();
            obj["spec"]["selector"] =
                json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
            if !obj
                .pointer("/spec/template/metadata/labels")
                .is_some_and(Value::is_object)
            {
                obj["spec"]["template"]["metadata"]["labels"] = json!({});
            }
            if let Some(l) = obj
                .pointer_mut("/spec/template/metadata/labels")
                .and_then(Value::as_object_mut)
            {
                l.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
                l.insert("batch.kubernetes.io/job-name".into(), json!(job));
                l.insert("controller-uid".into(), json!(uid));
                l.insert("job-name".into(), json!(job));
            }
        }
        let admit = Request::new(
            rd,
            None,
            Operation::Create,
            ns,
            &name,
            ctx.dry_run,
            ctx.user.as_ref(),
            &ctx.manager,
            "CreateOptions",
        );
        super::kinds::admit_service_account(self, rd, ns, &mut obj)?;
        if let Some(m) = admission::mutating(self, &admit, &obj, None, &mut ctx.warnings)? {
            obj = m;
        }
        match (rd.group, rd.kind) {
            ("", "Pod") => {
                let qos = super::fields::qos_class(&obj);
                obj["status"] = json!({"phase": "Pending", "qosClass": qos});
            }
            ("apps", _) | ("batch", _) => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
            ("", "Node") if obj.get("status").is_none() => {
                obj["status"] = json!({});
            }
            _ => super::kinds::prepare_create(rd, &mut obj),
        }
        let causes = validate(rd, &obj);
        if !causes.is_empty() {
            return Err(ApiError::invalid(rd, &name, causes));
        }
        admission::validating(self, &admit, Some(&obj), None, &mut ctx.warnings)?;
        // Held to the store write: quota admission's count stays true until the object exists.
        let _quota_hold = super::kinds::admit_create(self, rd, ns, &mut obj)?;
        if ctx.manager != "__apply__" {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
            fields::record_update(
                &mut obj,
                None,
                &ctx.manager,
                &rd.api_version(),
                "Update",
                fields::Shapes::of(rd),
            );
        }
        // A Service's addresses and ports are allocated under `alloc`, held up to the store
        // write; a dry run gets them too (as upstream's dry-run allocator shows them).
        let _guard = if rd.kind == "Service" && rd.group.is_empty() {
            let guard = self.alloc.lock().unwrap_or_else(|e| e.into_inner());
            self.allocate_service(&mut obj, &name, None)?;
            Some(guard)
        } else {
            None
        };
        if ctx.dry_run {
            // As it would be stored, served back at the requested version (converted kinds'
            // defaults applied through the stored form, as upstream's round trip does).
            return Ok(rd.view(&rd.to_storage(obj)).into_owned());
        }
        let key = rd.key(ns, &name);
        self.store_create(rd, &key, &name, obj)
    }

    fn store_create(
        &self,
        rd: &ResourceDef,
        key: &str,
        name: &str,
        obj: Value,
    ) -> ApiResult<Value> {
        let out = self
            .store
            .create(key, rd.to_storage(obj))
            .map(|s| rd.view(&s.object).into_owned())
            .map_err(|e| ApiError::from_store(e, rd, name));
        self.after_write(rd);
        out
    }

    /// Allocates and checks what kube-apiserver's service REST storage
    /// allocates (clusterIP, nodePorts, healthCheckNodePort), for a new
    /// Service or, with `old`, an updated one. What is allocated is what the
    /// stored Services hold, so deleting a Service or changing its type
    /// releases its addresses and ports with the write itself. Called with
    /// `alloc` held up to the store write.
    fn allocate_service(&self, obj: &mut Value, name: &str, old: Option<&Value>) -> ApiResult<()> {
        let svc_rd =
            registry::find("", "v1", "services").ok_or_else(|| ApiError::internal("services"))?;
        let invalid = |field: String, reason: &'static str, msg: String| {
            ApiError::invalid(svc_rd, name, vec![cause(reason, &field, msg)])
        };
        let ns = meta_str(obj, "namespace").to_string();
        let (all, _) = self.store.list(&svc_rd.key_prefix(None));
        let others = all
            .iter()
            .map(|s| &s.object)
            .filter(|o| !(meta_str(o, "namespace") == ns && meta_str(o, "name") == name));
        let mut used_ips: HashSet<std::net::IpAddr> = HashSet::new();
        let mut used_ports: HashSet<i64> = HashSet::new();
        for o in others {
            let ips = o.pointer("/spec/clusterIPs").and_then(Value::as_array);
            let ip = o.pointer("/spec/clusterIP");
            used_ips.extend(
                ips.into_iter()
                    .flatten()
                    .chain(ip)
                    .filter_map(|v| v.as_str()?.parse::<std::net::IpAddr>().ok()),
            );
            used_ports.extend(service_node_ports(o));
        }
        default_service_type_fields(obj);
        let ty = obj
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();

        // clusterIP: none for ExternalName, "None" for headless, else the
        // requested address (in range, free) or a free one.
        if ty == "ExternalName" {
            let was = old
                .and_then(|o| o.pointer("/spec/clusterIP"))
                .and_then(Value::as_str);
            let now = obj.pointer("/spec/clusterIP").and_then(Value::as_str);
            if now.is_some_and(|ip| !ip.is_empty()) && now != was {
                return Err(invalid(
                    "spec.clusterIPs".into(),
                    "FieldValueForbidden",
                    "Forbidden: may not be set for ExternalName services".into(),
                ));
            }
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                for f in [
                    "clusterIP",
                    "clusterIPs",
                    "ipFamilies",
                    "ipFamilyPolicy",
                    "internalTrafficPolicy",
                ] {
                    spec.remove(f);
                }
            }
            if obj
                .pointer("/spec/externalName")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(invalid(
                    "spec.externalName".into(),
                    "FieldValueRequired",
                    "Required value".into(),
                ));
            }
        } else {
            super::service_ips::assign(obj, old, &self.service_cidrs, &used_ips).map_err(
                |causes| match causes {
                    Some(causes) => ApiError::invalid(svc_rd, name, causes),
                    None => ApiError::internal("failed to allocate a serviceIP: range is full"),
                },
            )?;
        }

        // nodePorts: wanted by NodePort and LoadBalancer (unless
        // allocateLoadBalancerNodePorts is false, when only requested ones
        // are kept); any other type may not carry them.
        let lb = ty == "LoadBalancer";
        let allowed = ty == "NodePort" || lb;
        let wanted = ty == "NodePort"
            || (lb && obj.pointer("/spec/allocateLoadBalancerNodePorts") != Some(&json!(false)));
        let range = self.node_ports;
        let mut mine: Vec<(i64, String)> = Vec::new();
        let n_ports = obj
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..n_ports {
            let p = &obj["spec"]["ports"][i];
            let proto = p["protocol"].as_str().unwrap_or("TCP").to_string();
            let field = format!("spec.ports[{i}].nodePort");
            match p
                .get("nodePort")
                .and_then(Value::as_i64)
                .filter(|n| *n != 0)
            {
                Some(_) if !allowed => {
                    return Err(invalid(
                        field,
                        "FieldValueForbidden",
                        format!("Forbidden: may not be used when `type` is '{ty}'"),
                    ));
                }
                Some(np) => {
                    if !range.contains(np) {
                        return Err(invalid(field, "FieldValueInvalid", format!("Invalid value: {np}: provided port is not in the valid range. The range of valid ports is {range}")));
                    }
                    // One port may serve two protocols of the same Service.
                    if used_ports.contains(&np)
                        || mine.iter().any(|(n, pr)| *n == np && *pr == proto)
                    {
                        return Err(invalid(
                            field,
                            "FieldValueInvalid",
                            format!("Invalid value: {np}: provided port is already allocated"),
                        ));
                    }
                    mine.push((np, proto));
                }
                None if wanted => {
                    let taken: HashSet<i64> = used_ports
                        .iter()
                        .copied()
                        .chain(mine.iter().map(|(n, _)| *n))
                        .collect();
                    let np = range.pick_free(&taken).ok_or_else(|| {
                        ApiError::internal("failed to allocate a nodePort: range is full")
                    })?;
                    obj["spec"]["ports"][i]["nodePort"] = json!(np);
                    mine.push((np, proto));
                }
                None => {
                    if let Some(m) = obj["spec"]["ports"][i].as_object_mut() {
                        m.remove("nodePort");
                    }
                }
            }
        }
        used_ports.extend(mine.iter().map(|(n, _)| *n));

        // healthCheckNodePort: for LoadBalancer with externalTrafficPolicy Local.
        let hc_wanted = lb
            && obj
                .pointer("/spec/externalTrafficPolicy")
                .and_then(Value::as_str)
                == Some("Local");
        match obj
            .pointer("/spec/healthCheckNodePort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0)
        {
            Some(hc) if !hc_wanted => {
                return Err(invalid("spec.healthCheckNodePort".into(), "FieldValueInvalid", format!("Invalid value: {hc}: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'")));
            }
            Some(hc) => {
                if !range.contains(hc) {
                    return Err(invalid("spec.healthCheckNodePort".into(), "FieldValueInvalid", format!("Invalid value: {hc}: provided port is not in the valid range. The range of valid ports is {range}")));
                }
                if used_ports.contains(&hc) {
                    return Err(invalid(
                        "spec.healthCheckNodePort".into(),
                        "FieldValueInvalid",
                        format!("Invalid value: {hc}: provided port is already allocated"),
                    ));
                }
            }
            None if hc_wanted => {
                let hc = range.pick_free(&used_ports).ok_or_else(|| {
                    ApiError::internal("failed to allocate a nodePort: range is full")
                })?;
                obj["spec"]["healthCheckNodePort"] = json!(hc);
            }
            None => {
                if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("healthCheckNodePort");
                }
            }
        }
        Ok(())
    }

    /// Replaces an object (`PUT`), or its status with `subresource = "status"`.
    pub fn update(
        &self,
        rd: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        subresource: Option<&str>,
        ctx: &mut WriteCtx,
    ) -> ApiResult<Value> {
        Self::prepare_body(rd, ns, &mut obj)?;
        let body_name = meta_str(&obj, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        obj["metadata"]["name"] = json!(name);
        let ns = Self::ns_of(rd, ns);
        let key = rd.key(ns, name);
        let current = self
            .store
            .get(&key)
            .ok_or_else(|| ApiError::not_found(rd, name))?;
        let body_rv = meta_str(&obj, "resourceVersion").to_string();
        let expected = if body_rv.is_empty() {
            current.revision
        } else {
            let rv = parse_rv(&body_rv)?;
            if rv != current.revision {
                return Err(ApiError::conflict(rd, name));
            }
            rv
        };
        let obj = self.normalize_checked(rd, &obj, ctx)?;
        let cur = rd.view(&current.object);
        let new = self.merge_update(rd, &cur, obj, subresource)?;
        let admit = Request::new(
            rd,
            subresource,
            Operation::Update,
            ns,
            name,
            ctx.dry_run,
            ctx.user.as_ref(),
            &ctx.manager,
            "UpdateOptions",
        );
        let new = self.mutate_update(&admit, &cur, new, ctx)?;
        self.commit_update(rd, &key, name, &cur, new, expected, ctx, &admit)
    }

    /// Mutating webhooks on an update: a changed object is merged over the old one again
    /// (status, immutable fields, generation), keeping the managedFields already computed.
    fn mutate_update(
        &self,
        admit: &Request<'_>,
        old: &Value,
        new: Value,
        ctx: &mut WriteCtx,
    ) -> ApiResult<Value> {
        let Some(mutated) = admission::mutating(self, admit, &new, Some(old), &mut ctx.warnings)?
        else {
            return Ok(new);
        };
        let mut out = self.merge_update(admit.rd, old, mutated, admit.subresource.as_deref())?;
        match new.pointer("/metadata/managedFields") {
            Some(mf) => out["metadata"]["managedFields"] = mf.clone(),
            None => {
                if let Some(m) = out["metadata"].as_object_mut() {
                    m.remove("managedFields");
                }
            }
        }
        Ok(out)
    }

    /// Builds the new stored object from the old one and the client's
    /// version: immutable metadata is kept, status/spec split by subresource.
    fn merge_update(
        &self,
        rd: &ResourceDef,
        old: &Value,
        mut new: Value,
        subresource: Option<&str>,
    ) -> ApiResult<Value> {
        if subresource == Some("status") {
            let mut out = old.clone();
            match new.get("status") {
                Some(st) => out["status"] = st.clone(),
                None => {
                    if let Some(m) = out.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            // Status writers may still touch labels/annotations? Upstream
            // status strategies reset the whole object but metadata.
            for f in ["labels", "annotations", "ownerReferences", "finalizers"] {
                if let Some(v) = new.pointer(&format!("/metadata/{f}")) {
                    out["metadata"][f] = v.clone();
                }
            }
            return Ok(out);
        }
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "managedFields",
        ] {
            match old.pointer(&format!("/metadata/{f}")) {
                Some(v) => new["metadata"][f] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        if has_status_subresource(rd) || rd.kind == "Pod" {
            match old.get("status") {
                Some(st) => new["status"] = st.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        // Type-specific immutable fields.
        match (rd.group, rd.kind) {
            ("", "Service") => service_update(old, &mut new)?,
            ("discovery.k8s.io", "EndpointSlice") => {
                if new.get("addressType") != old.get("addressType") {
                    let v = new["addressType"].as_str().unwrap_or("").to_string();
                    return Err(ApiError::invalid(
                        rd,
                        meta_str(old, "name"),
                        vec![cause(
                            "FieldValueInvalid",
                            "addressType",
                            format!("Invalid value: \"{v}\": field is immutable"),
                        )],
                    ));
                }
                apply_defaults(rd, &mut new);
            }
            ("", "Pod") => {
                let old_spec = old.get("spec").cloned().unwrap_or(json!({}));
                let mut ns = new.get("spec").cloned().unwrap_or(json!({}));
                super::defaults::default_pod_spec(&mut ns);
                // What Priority admission set on create is kept when an update leaves it
                // out, as the plugin does on update.
                for f in ["priority", "preemptionPolicy"] {
                    if ns.get(f).is_none() {
                        if let Some(v) = old_spec.get(f) {
                            ns[f] = v.clone();
                        }
                    }
                }
                new["spec"] = ns;
                // Only images and a few fields may change on a pod spec.
                let strip = |v: &Value| {
                    let mut v = v.clone();
                    for list in ["containers", "initContainers"] {
                        if let Some(Value::Array(cs)) = v.get_mut(list) {
                            for c in cs {
                                if let Some(m) = c.as_object_mut() {
                                    m.remove("image");
                                }
                            }
                        }
                    }
                    if let Some(m) = v.as_object_mut() {
                        m.remove("activeDeadlineSeconds");
                        m.remove("tolerations");
                        m.remove("terminationGracePeriodSeconds");
                        if old_spec.get("nodeName").is_none() {
                            m.remove("nodeName");
                        }
                    }
                    v
                };
                if strip(&old_spec) != strip(&new["spec"]) {
                    return Err(ApiError::invalid(rd, meta_str(old, "name"), vec![cause("FieldValueForbidden", "spec", "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)")]));
                }
            }
            _ => {
                apply_defaults_on_update(rd, &mut new);
            }
        }
        let causes = super::kinds::validate_update(rd, old, &new);
        if !causes.is_empty() {
            return Err(ApiError::invalid(rd, meta_str(old, "name"), causes));
        }
        // Compared once defaults are in: a patch that drops a defaulted field (kubectl's
        // `$retainKeys` on a Deployment's strategy) changes nothing.
        if old.get("spec") != new.get("spec") || custom_changed(rd, old, &new) {
            if let Some(g) = old.pointer("/metadata/generation").and_then(Value::as_i64) {
                new["metadata"]["generation"] = json!(g + 1);
            }
        }
        Ok(new)
    }

    #[allow(clippy::too_many_arguments)]
    fn commit_update(
        &self,
        rd: &ResourceDef,
        key: &str,
        name: &str,
        old: &Value,
        mut new: Value,
        expected: u64,
        ctx: &mut WriteCtx,
        admit: &Request<'_>,
    ) -> ApiResult<Value> {
        let causes = validate_with_old(rd, &new, Some(old));
        if !causes.is_empty() {
            return Err(ApiError::invalid(rd, name, causes));
        }
        admission::validating(self, admit, Some(&new), Some(old), &mut ctx.warnings)?;
        if ctx.manager != "__apply__" {
            fields::record_update(
                &mut new,
                Some(old),
                &ctx.manager,
                &rd.api_version(),
                "Update",
                fields::Shapes::of(rd),
            );
        }
        // Held to the store write, as on create.
        let _quota_hold = super::kinds::admit_update(self, rd, old, &new)?;
        if ctx.dry_run {
            return Ok(rd.view(&rd.to_storage(new)).into_owned());
        }
        // Removing the last finalizer of an object being deleted deletes it.
        let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
        let no_finalizers = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty());
        let pod_pending_kill = rd.kind == "Pod"
            && rd.group.is_empty()
            && new
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0;
        if deleting
            && no_finalizers
            && !pod_pending_kill
            && !(rd.kind == "Namespace" && rd.group.is_empty())
        {
            let out = match self.store.delete(key, Some(expected)) {
                Ok(s) => Ok(rd.view(&s.object).into_owned()),
                Err(e) => Err(ApiError::from_store(e, rd, name)),
            };
            self.after_write(rd);
            return out;
        }
        let _guard = if rd.kind == "Service" && rd.group.is_empty() {
            let guard = self.alloc.lock().unwrap_or_else(|e| e.into_inner());
            self.allocate_service(&mut new, name, Some(old))?;
            Some(guard)
        } else {
            None
        };
        if new == *old {
            // No-op updates do not bump the resourceVersion (upstream too).
            return Ok(old.clone());
        }
        let out = self
            .store
            .update(key, rd.to_storage(new), Some(expected))
            .map(|s| rd.view(&s.object).into_owned())
            .map_err(|e| ApiError::from_store(e, rd, name));
        self.after_write(rd);
        out
    }

    /// After a stored write: a CRD write changes what is served.
    fn after_write(&self, rd: &ResourceDef) {
        if is_crd(rd) {
            self.refresh_custom();
        }
    }

    /// Rebuilds the custom resources served from the stored CRDs.
    pub(crate) fn refresh_custom(&self) {
        let Some(crds) = registry::find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        else {
            return;
        };
        let (items, _) = self.store.list(&crds.key_prefix(None));
        self.custom.rebuild(items.iter().map(|s| &*s.object));
    }

    /// What this control plane serves now: built-in and custom resources.
    pub fn resources(&self) -> registry::Resources {
        registry::Resources::new(self.custom.snapshot())
    }

    /// Read-modify-write with retries on conflict: the building block of
    /// patches and of controller updates.
    pub fn modify(
        &self,
        rd: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        ctx: &mut WriteCtx,
        mut f: impl FnMut(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Value> {
        let ns = Self::ns_of(rd, ns);
        let key = rd.key(ns, name);
        for _ in 0..16 {
            let current = self
                .store
                .get(&key)
                .ok_or_else(|| ApiError::not_found(rd, name))?;
            let cur = rd.view(&current.object);
            let mut patched = f(&cur)?;
            Self::prepare_body(rd, ns, &mut patched)?;
            let prv = meta_str(&patched, "resourceVersion").to_string();
            if !prv.is_empty() && parse_rv(&prv)? != current.revision {
                return Err(ApiError::conflict(rd, name));
            }
            patched["metadata"]["name"] = json!(name);
            let patched = self.normalize_checked(rd, &patched, ctx)?;
            let applied_fields = patched.pointer("/metadata/managedFields").cloned();
            let mut new = self.merge_update(rd, &cur, patched, subresource)?;
            if ctx.manager == "__apply__" {
                // Server-side apply computed the ownership itself.
                match applied_fields {
                    Some(mf) => new["metadata"]["managedFields"] = mf,
                    None => {
                        if let Some(m) = new["metadata"].as_object_mut() {
                            m.remove("managedFields");
                        }
                    }
                }
            }
            let admit = Request::new(
                rd,
                subresource,
                Operation::Update,
                ns,
                name,
                ctx.dry_run,
                ctx.user.as_ref(),
                &ctx.manager,
                "PatchOptions",
            );
            let new = self.mutate_update(&admit, &cur, new, ctx)?;
            match self.commit_update(rd, &key, name, &cur, new, current.revision, ctx, &admit) {
                Err(e) if e.reason == "Conflict" && prv.is_empty() => continue,
                other => return other,
            }
        }
        Err(ApiError::conflict(rd, name))
    }

    /// Deletes an object with upstream's graceful deletion, finalizer and
    /// propagation rules. Returns the object as it is after the call.
    pub fn delete(
        &self,
        rd: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Value> {
        let ns = Self::ns_of(rd, ns);
        let key = rd.key(ns, name);
        let mut admitted = false;
        for _ in 0..16 {
            let current = self
                .store
                .get(&key)
                .ok_or_else(|| ApiError::not_found(rd, name))?;
            let viewed = rd.view(&current.object);
            let obj = &*viewed;
            if !admitted {
                let admit = Request::new(
                    rd,
                    None,
                    Operation::Delete,
                    ns,
                    name,
                    opts.dry_run,
                    opts.user.as_ref(),
                    "",
                    "DeleteOptions",
                );
                admission::deleting(self, &admit, obj)?;
                admitted = true;
            }
            if let Some(uid) = &opts.precondition_uid {
                if meta_str(obj, "uid") != uid {
                    return Err(ApiError::new(409, "Conflict", format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", meta_str(obj, "uid"))));
                }
            }
            if let Some(rv) = &opts.precondition_rv {
                if meta_str(obj, "resourceVersion") != rv {
                    return Err(ApiError::conflict(rd, name));
                }
            }
            let mut new = obj.clone();
            let mut finalizers: Vec<String> = obj
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let policy = opts
                .propagation
                .clone()
                .unwrap_or_else(|| "Background".into());
            let already = obj.pointer("/metadata/deletionTimestamp").is_some();
            match policy.as_str() {
                "Orphan" if !finalizers.iter().any(|f| f == "orphan") => {
                    finalizers.push("orphan".into())
                }
                "Foreground"
                    if !finalizers.iter().any(|f| f == "foregroundDeletion")
                        && self.has_dependents(obj) =>
                {
                    finalizers.push("foregroundDeletion".into())
                }
                _ => {}
            }
            if is_crd(rd) && !already && !finalizers.iter().any(|f| f == CRD_CLEANUP_FINALIZER) {
                // A CRD's objects are deleted before it (the CRD finalizing controller).
                finalizers.push(CRD_CLEANUP_FINALIZER.into());
            }
            let is_pod = rd.kind == "Pod" && rd.group.is_empty();
            let is_ns = rd.kind == "Namespace" && rd.group.is_empty();
            // Graceful deletion of pods bound to a node (pod REST strategy):
            // unscheduled or finished pods go at once.
            let mut grace = 0i64;
            if is_pod {
                let spec_grace = obj
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(30);
                grace = opts.grace_period.unwrap_or(spec_grace).max(0);
                let phase = obj
                    .pointer("/status/phase")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if obj
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                    || phase == "Succeeded"
                    || phase == "Failed"
                {
                    grace = 0;
                }
                if already {
                    let cur = obj
                        .pointer("/metadata/deletionGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    grace = grace.min(cur);
                }
            }
            if opts.dry_run {
                return Ok(new);
            }
            if finalizers.is_empty() && grace == 0 && !is_ns {
                let out = match self.store.delete(&key, Some(current.revision)) {
                    Ok(s) => Ok(rd.view(&s.object).into_owned()),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => Err(ApiError::from_store(e, rd, name)),
                };
                self.after_write(rd);
                return out;
            }
            if already && !is_pod {
                // Already being deleted: only propagation finalizers may be added.
                if new["metadata"]["finalizers"] == json!(finalizers) || finalizers.is_empty() {
                    return Ok(new);
                }
            }
            let ts = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
            let ts = ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
            if !already || is_pod {
                new["metadata"]["deletionTimestamp"] = json!(ts);
                new["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            }
            if !finalizers.is_empty() {
                new["metadata"]["finalizers"] = json!(finalizers);
            }
            if is_ns {
                new["status"]["phase"] = json!("Terminating");
            }
            match self.store.update(&key, new, Some(current.revision)) {
                Ok(s) => {
                    self.after_write(rd);
                    return Ok(rd.view(&s.object).into_owned());
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, rd, name)),
            }
        }
        Err(ApiError::conflict(rd, name))
    }

    /// A ResourceQuota's status as counted now (`status.hard`, `status.used`): the quota
    /// controller writes it; admission counts with the same rules (`kinds/policy.rs`).
    pub(crate) fn resource_quota_status(&self, quota: &Value) -> Value {
        super::kinds::policy::quota_status(self, quota)
    }

    /// Creates the built-in `system-node-critical` and `system-cluster-critical`
    /// PriorityClasses if missing (at start, as kube-apiserver does).
    pub fn ensure_system_priority_classes(&self) {
        super::kinds::policy::ensure_system_priority_classes(self)
    }

    /// Whether any object names `obj` as its owner.
    fn has_dependents(&self, obj: &Value) -> bool {
        let uid = meta_str(obj, "uid");
        let (all, _) = self.store.list("/registry/");
        all.iter().any(|s| {
            s.object
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(uid)))
        })
    }
}

/// Defaults that also apply when an update drops a defaulted field
/// (kube-apiserver defaults every decoded object, not only on create).
fn apply_defaults_on_update(rd: &ResourceDef, obj: &mut Value) {
    if matches!(rd.group, "apps" | "batch") || !super::kinds::is_first_kind(rd) {
        let status = obj.get("status").cloned();
        apply_defaults(rd, obj);
        if let Some(st) = status {
            obj["status"] = st;
        }
    }
}

/// The part of the store key after the resource prefix: `ns/name` or `name`.
fn key_suffix(obj: &Value) -> String {
    let ns = meta_str(obj, "namespace");
    let name = meta_str(obj, "name");
    if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    }
}

/// kube-apiserver's words when a continue token's revision is older than the history kept.
const CONTINUE_TOO_OLD: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue value from the response.";

/// Where a paginated list goes on: after the key `start`, at the first page's revision
/// (tokens from before revisions were carried have none: read at the current one).
struct ContinueKey {
    start: String,
    revision: Option<u64>,
}

fn encode_continue(last: &str, revision: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .encode(json!({"v": "meta.k8s.io/v1", "rv": revision, "start": last}).to_string())
}

fn decode_continue(tok: &str) -> ApiResult<ContinueKey> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(tok)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let start = v["start"].as_str().map(String::from).ok_or_else(bad)?;
    let revision = match v.get("rv") {
        None => None,
        Some(rv) => Some(rv.as_u64().filter(|rv| *rv > 0).ok_or_else(bad)?),
    };
    Ok(ContinueKey { start, revision })
}
