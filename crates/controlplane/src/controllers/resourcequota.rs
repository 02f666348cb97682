//! Resource quota controller (upstream's pkg/controller/resourcequota): each ResourceQuota's
//! `status.hard` mirrors its spec and `status.used` is recounted from the objects of its
//! namespace (pods that still charge, their requests and limits, services, claims, object
//! counts), so `kubectl describe quota` shows what admission enforces. Admission
//! (`api/kinds/policy.rs`) counts from the same functions, so the two cannot disagree.

use super::{list, rd, set_status, Settings};
use crate::api::objects::Core;
use crate::store::{Event, EventType};

pub fn pass(core: &Core, _s: &Settings) {
    let r = rd("", "resourcequotas");
    for quota in list(core, "", "resourcequotas", None) {
        let status = core.resource_quota_status(&quota);
        set_status(core, r, &quota, status, "resourcequota-controller");
    }
}

/// Besides changes to quotas, pods, services and claims (whose usage can change in place):
/// any object created or deleted, since `count/<resource>` quotas count every kind.
pub(super) fn wake(ev: &Event) -> bool {
    ev.kind != EventType::Modified
}
