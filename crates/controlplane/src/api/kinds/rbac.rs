//! RBAC: Role, ClusterRole, RoleBinding, ClusterRoleBinding (rbac.authorization.k8s.io/v1).
//!
//! Defaults, validation and update rules as upstream's pkg/apis/rbac/validation.

use crate::api::error::Cause;
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
