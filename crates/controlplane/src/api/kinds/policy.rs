//! Policy: PodDisruptionBudget (policy/v1), ResourceQuota and LimitRange (core/v1), PriorityClass
//! (scheduling.k8s.io/v1) — and their admission (quota, limit ranges, pod priority).
//!
//! Defaults, validation and update rules as upstream's pkg/apis/{policy,core,scheduling}/validation, plugin/pkg/admission.

use crate::api::error::ApiResult;
use crate::api::error::Cause;
use crate::api::objects::Core;
use crate::registry::ResourceDef;
use serde_json::Value;

/// Defaults (create and update; status is put back after an update).
pub(super) fn defaults(_rd: &ResourceDef, _obj: &mut Value) {}

/// Create-time preparation beyond defaults (e.g. an initial status phase).
pub(super) fn prepare_create(_rd: &ResourceDef, _obj: &mut Value) {}

/// Validation of the whole object, on create and update.
pub(super) fn validate(_rd: &ResourceDef, _obj: &Value, _causes: &mut Vec<Cause>) {}

/// Update-only rules (immutable fields).
pub(super) fn validate_update(
    _rd: &ResourceDef,
    _old: &Value,
    _new: &Value,
    _causes: &mut Vec<Cause>,
) {
}

/// Admission on create: may change `obj` (defaults from LimitRanges, a pod's
/// priority) or refuse it (quota exceeded: 403 as upstream).
pub(super) fn admit_create(
    _core: &Core,
    _rd: &ResourceDef,
    _ns: Option<&str>,
    _obj: &mut Value,
) -> ApiResult<()> {
    Ok(())
}
