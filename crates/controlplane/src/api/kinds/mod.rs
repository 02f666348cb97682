//! Per-kind semantics of the kinds served beyond the first eighteen (whose
//! rules stay in `defaults.rs` and `objects.rs`), one file per area so each
//! area's defaults, validation, update rules and admission live together.
//! Every hook is called for every kind; each area acts only on its own.

use super::error::{cause, ApiResult, Cause};
use super::objects::Core;
use crate::registry::ResourceDef;
use serde_json::Value;

mod admissionregistration;
mod apiextensions;
pub(crate) mod certificates;
mod networking;
pub(crate) mod policy;
mod rbac;
pub(crate) mod serviceaccount;
mod storage;
mod workloads;

/// Defaults, on create and update (an update's status is kept as it was).
pub(crate) fn defaults(rd: &ResourceDef, obj: &mut Value) {
    rbac::defaults(rd, obj);
    apiextensions::defaults(rd, obj);
    storage::defaults(rd, obj);
    workloads::defaults(rd, obj);
    policy::defaults(rd, obj);
    networking::defaults(rd, obj);
    admissionregistration::defaults(rd, obj);
}

/// On create, after defaults: a client-sent status is dropped for every
/// kind with a status subresource (as upstream's strategies'
/// `PrepareForCreate`), then each area sets what upstream sets.
pub(crate) fn prepare_create(rd: &ResourceDef, obj: &mut Value) {
    if !is_first_kind(rd) && rd.subresources.contains(&"status") {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    rbac::prepare_create(rd, obj);
    apiextensions::prepare_create(rd, obj);
    storage::prepare_create(rd, obj);
    workloads::prepare_create(rd, obj);
    policy::prepare_create(rd, obj);
    networking::prepare_create(rd, obj);
}

/// The kinds served before the registry covered every built-in kind: their create status and
/// update defaults are written out in `objects.rs` (`create`, `merge_update`), not here.
pub(crate) fn is_first_kind(rd: &ResourceDef) -> bool {
    matches!(
        (rd.group, rd.kind),
        (
            "",
            "Namespace"
                | "Pod"
                | "Node"
                | "Service"
                | "Endpoints"
                | "ConfigMap"
                | "Secret"
                | "ServiceAccount"
                | "Event"
        ) | (
            "apps" | "batch" | "events.k8s.io" | "coordination.k8s.io" | "discovery.k8s.io",
            _
        )
    )
}

/// Whether `metadata.generation` is kept (1 on create, +1 per spec change).
pub(crate) fn tracks_generation(rd: &ResourceDef) -> bool {
    matches!(
        rd.group,
        "apps"
            | "batch"
            | "policy"
            | "autoscaling"
            | "networking.k8s.io"
            | "admissionregistration.k8s.io"
            | "apiextensions.k8s.io"
            | "flowcontrol.apiserver.k8s.io"
    ) || (rd.group, rd.kind) == ("", "ReplicationController")
        || rd.custom.is_some()
}

/// Validation of the whole object, on create and update.
pub(crate) fn validate(rd: &ResourceDef, obj: &Value, causes: &mut Vec<Cause>) {
    rbac::validate(rd, obj, causes);
    storage::validate(rd, obj, causes);
    workloads::validate(rd, obj, causes);
    policy::validate(rd, obj, causes);
    networking::validate(rd, obj, causes);
    certificates::validate(rd, obj, causes);
    admissionregistration::validate(rd, obj, causes);
}

/// Update-only rules (immutable fields), before the whole-object validation.
pub(crate) fn validate_update(rd: &ResourceDef, old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    rbac::validate_update(rd, old, new, &mut causes);
    storage::validate_update(rd, old, new, &mut causes);
    workloads::validate_update(rd, old, new, &mut causes);
    policy::validate_update(rd, old, new, &mut causes);
    networking::validate_update(rd, old, new, &mut causes);
    certificates::validate_update(rd, old, new, &mut causes);
    causes
}

/// Admission on create, after validation and before the write. The returned hold (quota's
/// lock) must live until the object is written.
pub(crate) fn admit_create(
    core: &Core,
    rd: &ResourceDef,
    ns: Option<&str>,
    obj: &mut Value,
) -> ApiResult<policy::QuotaHold> {
    // DefaultStorageClass runs before quota, as upstream's plugin order has it.
    storage::admit_create(core, rd, ns, obj)?;
    policy::admit_create(core, rd, ns, obj)
}

/// The ServiceAccount admission plugin on a pod being created (before the webhooks, as in
/// upstream's plugin order).
pub(crate) fn admit_service_account(
    core: &Core,
    rd: &ResourceDef,
    ns: Option<&str>,
    obj: &mut Value,
) -> ApiResult<()> {
    match ns {
        Some(ns) if (rd.group, rd.kind) == ("", "Pod") => {
            serviceaccount::admit_pod(core, rd, ns, obj)
        }
        _ => Ok(()),
    }
}

/// Admission on update (quota only), before the write; the hold lives until the write.
pub(crate) fn admit_update(
    core: &Core,
    rd: &ResourceDef,
    old: &Value,
    new: &Value,
) -> ApiResult<policy::QuotaHold> {
    policy::admit_update(core, rd, old, new)
}

/// field.NotSupported: `Unsupported value: "v": supported values: "a", "b"`.
pub(super) fn unsupported(field: &str, value: &str, supported: &[&str]) -> Cause {
    let list = supported
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    cause(
        "FieldValueNotSupported",
        field,
        format!("Unsupported value: \"{value}\": supported values: {list}"),
    )
}

/// ValidateImmutableField: `Invalid value: <new>: field is immutable` when the value at `ptr`
/// changed (strings quoted, other values as JSON).
pub(super) fn immutable(old: &Value, new: &Value, ptr: &str, field: &str, causes: &mut Vec<Cause>) {
    let (o, n) = (old.pointer(ptr), new.pointer(ptr));
    if o != n {
        let shown = match n {
            Some(Value::String(s)) => format!("\"{s}\""),
            Some(v) => v.to_string(),
            None => "null".into(),
        };
        causes.push(cause(
            "FieldValueInvalid",
            field,
            format!("Invalid value: {shown}: field is immutable"),
        ));
    }
}
