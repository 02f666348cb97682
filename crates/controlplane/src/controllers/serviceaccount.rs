//! A `default` ServiceAccount in every active namespace, with a
//! `kubernetes.io/service-account-token` Secret (the token controller fills
//! `data.token`, `data.namespace` and `data.ca.crt`).

use super::{deleting, list, rd, Settings};
use crate::api::objects::{meta_str, Core, WriteCtx};
use serde_json::json;

/// Makes namespace `ns`'s `default` ServiceAccount as this controller does (also called by
/// the ServiceAccount admission when a pod comes before this controller's pass).
pub(crate) fn create_default(
    core: &Core,
    ns: &str,
) -> crate::api::error::ApiResult<serde_json::Value> {
    let mut ctx = WriteCtx::controller("service-account-controller");
    core.create(
        rd("", "serviceaccounts"),
        Some(ns),
        json!({"metadata": {"name": "default"}}),
        &mut ctx,
    )
}

pub fn pass(core: &Core, _s: &Settings) {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let sard = rd("", "serviceaccounts");
    let secrd = rd("", "secrets");
    for ns in list(core, "", "namespaces", None) {
        if deleting(&ns) {
            continue;
        }
        let name = meta_str(&ns, "name");
        let mut ctx = WriteCtx::controller("service-account-controller");
        if core.get_stored(sard, Some(name), "default").is_none() {
            let _ = create_default(core, name);
        }
        if core
            .get_stored(secrd, Some(name), "default-token")
            .is_none()
        {
            let Some(sa) = core.get_stored(sard, Some(name), "default") else {
                continue;
            };
            let token = {
                use rand::Rng;
                let bytes: [u8; 32] = rand::rng().random();
                bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
            };
            let _ = core.create(
                secrd,
                Some(name),
                json!({
                    "metadata": {"name": "default-token", "annotations": {"kubernetes.io/service-account.name": "default", "kubernetes.io/service-account.uid": meta_str(&sa.object, "uid")}},
                    "type": "kubernetes.io/service-account-token",
                    "data": {"token": b64(&token), "namespace": b64(name)},
                }),
                &mut ctx,
            );
        }
    }
}
