//! stage1-kvm: the pod in a qemu/KVM virtual machine.

use super::Stage1Error;
use crate::pod::PodPlan;
use std::path::Path;

pub fn run(plan: &PodPlan, _pod_dir: &Path) -> Result<(), Stage1Error> {
    Err(Stage1Error::Step {
        step: "start the kvm stage1",
        msg: format!(
            "pod {}: stage1-kvm is not implemented in this build",
            plan.uuid
        ),
    })
}

/// qemu and a guest kernel, if this host has them (and /dev/kvm).
pub fn find_kvm() -> Option<crate::pod::KvmPlan> {
    None
}
