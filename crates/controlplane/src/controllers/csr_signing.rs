//! The CSR signer (kube-controller-manager's `csrsigning`, upstream
//! pkg/controller/certificates/signer) for the two kubelet signers:
//! `kubernetes.io/kube-apiserver-client-kubelet` (node client certificates)
//! and `kubernetes.io/kubelet-serving` (kubelet port certificates). An
//! approved, unsigned, not failed CSR of one of them is checked against the
//! signer's rules (upstream's `ValidateKubeletClientCSR` /
//! `ValidateKubeletServingCSR`) and signed by the cluster CA into
//! `status.certificate`, valid for `min(spec.expirationSeconds, duration)`;
//! one that breaks the rules gets a `Failed` condition (`SignerValidationFailure`).
//! Other signers' CSRs are left to their signers, as upstream.

use super::{list, rd, set_status};
use crate::api::auth::Rbac;
use crate::api::objects::{meta_str, now, Core};
use crate::pki::Pki;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

pub use rktup_tls::kubelet_csr::{
    validate_kubelet_client, validate_kubelet_serving, CLIENT_KUBELET, KUBELET_SERVING,
};
const MANAGER: &str = "kube-controller-manager";

/// What the signer and approver need beyond the store: the CA, the longest
/// lifetime to sign for (`--cluster-signing-duration`, upstream default one
/// year) and the RBAC authorizer the approver's SubjectAccessReviews use.
pub struct Signer {
    pub pki: Pki,
    pub duration: Duration,
    pub rbac: Arc<Rbac>,
    /// Approve nodes' serving CSRs for their own addresses (rktup, beyond upstream).
    pub approve_serving: bool,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

/// `spec.request` (base64 in JSON) decoded.
pub(crate) fn request_pem(csr: &Value) -> Option<Vec<u8>> {
    use base64::Engine;
    let b64 = csr.pointer("/spec/request").and_then(Value::as_str)?;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

pub(crate) fn usages(csr: &Value) -> BTreeSet<String> {
    csr.pointer("/spec/usages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str().map(String::from))
        .collect()
}

pub(crate) fn has_condition(csr: &Value, ty: &str) -> bool {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == ty && c["status"] == "True"))
}

/// The CSRs for the kubelet signers (client and serving) with their signer: the only ones
/// these controllers approve and sign.
pub(crate) fn kubelet_csrs(core: &Core) -> Vec<(Arc<Value>, &'static str)> {
    list(
        core,
        "certificates.k8s.io",
        "certificatesigningrequests",
        None,
    )
    .into_iter()
    .filter_map(|csr| {
        let signer = match csr.pointer("/spec/signerName").and_then(Value::as_str) {
            Some(CLIENT_KUBELET) => CLIENT_KUBELET,
            Some(KUBELET_SERVING) => KUBELET_SERVING,
            _ => return None,
        };
        Some((csr, signer))
    })
    .collect()
}

/// The lifetime to sign for: the signer's duration, shortened by
/// `spec.expirationSeconds` (never below upstream's 10-minute minimum).
fn lifetime(csr: &Value, max: Duration) -> Duration {
    match csr
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_u64)
    {
        Some(s) => Duration::from_secs(s.max(600)).min(max),
        None => max,
    }
}

pub(crate) fn pass(core: &Core, s: &super::Settings) {
    let Some(signer) = &s.csr_signer else { return };
    let r = rd("certificates.k8s.io", "certificatesigningrequests");
    for (csr, signer_name) in kubelet_csrs(core) {
        if !has_condition(&csr, "Approved")
            || has_condition(&csr, "Denied")
            || has_condition(&csr, "Failed")
            || csr
                .pointer("/status/certificate")
                .and_then(Value::as_str)
                .is_some_and(|c| !c.is_empty())
        {
            continue;
        }
        let usages = usages(&csr);
        let checked = request_pem(&csr)
            .ok_or_else(|| "unable to parse csr: no request".to_string())
            .and_then(|pem| crate::pki::parse_csr(&pem).map(|info| (pem, info)))
            .and_then(|(pem, info)| {
                if signer_name == CLIENT_KUBELET {
                    validate_kubelet_client(&info, &usages)?;
                } else {
                    validate_kubelet_serving(&info, &usages)?;
                }
                Ok(pem)
            });
        let mut status = csr.get("status").cloned().unwrap_or_else(|| json!({}));
        match checked {
            Err(why) => {
                let cond = json!({"type": "Failed", "status": "True",
                    "reason": "SignerValidationFailure", "message": why,
                    "lastUpdateTime": now(), "lastTransitionTime": now()});
                push_condition(&mut status, cond);
            }
            Ok(pem) => {
                let pem = String::from_utf8_lossy(&pem).into_owned();
                let usages: Vec<String> = usages.into_iter().collect();
                match signer
                    .pki
                    .sign_csr(&pem, &usages, lifetime(&csr, signer.duration))
                {
                    Ok(cert) => {
                        use base64::Engine;
                        status["certificate"] = json!(
                            base64::engine::general_purpose::STANDARD.encode(cert.as_bytes())
                        );
                    }
                    Err(e) => {
                        let cond = json!({"type": "Failed", "status": "True",
                            "reason": "SignerValidationFailure", "message": e.to_string(),
                            "lastUpdateTime": now(), "lastTransitionTime": now()});
                        push_condition(&mut status, cond);
                    }
                }
            }
        }
        tracing::debug!(csr = meta_str(&csr, "name"), "csr signer: wrote status");
        set_status(core, r, &csr, status, MANAGER);
    }
}

pub(crate) fn push_condition(status: &mut Value, cond: Value) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    if let Some(a) = status["conditions"].as_array_mut() {
        a.push(cond);
    }
}

/// How long a decided CSR is kept (kube-controller-manager's `csrcleaner`): approved and
/// issued, denied or failed ones one hour after the decision; pending ones a day after their
/// creation. (Upstream also deletes one at once when its certificate has expired, which only
/// certificates shorter than an hour reach; those are kept the hour here.)
const DECIDED_KEPT: i64 = 3600;
const PENDING_KEPT: i64 = 24 * 3600;

fn older_than(t: Option<&str>, secs: i64, now: jiff::Timestamp) -> bool {
    t.and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_some_and(|t| now.as_second() - t.as_second() > secs)
}

fn condition_time<'a>(csr: &'a Value, ty: &str) -> Option<&'a str> {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == ty && c["status"] == "True")
        .and_then(|c| c["lastUpdateTime"].as_str())
}

/// The CSR cleaner pass (upstream pkg/controller/certificates/cleaner).
pub(crate) fn clean(core: &Core, s: &super::Settings) {
    let now = s.clock.now();
    let r = rd("certificates.k8s.io", "certificatesigningrequests");
    for csr in list(
        core,
        "certificates.k8s.io",
        "certificatesigningrequests",
        None,
    ) {
        let issued = csr
            .pointer("/status/certificate")
            .and_then(Value::as_str)
            .is_some_and(|c| !c.is_empty());
        let approved = has_condition(&csr, "Approved");
        let denied = has_condition(&csr, "Denied");
        let failed = has_condition(&csr, "Failed");
        let stale =
            (approved && issued && older_than(condition_time(&csr, "Approved"), DECIDED_KEPT, now))
                || (denied && older_than(condition_time(&csr, "Denied"), DECIDED_KEPT, now))
                || (failed && older_than(condition_time(&csr, "Failed"), DECIDED_KEPT, now))
                || (!approved
                    && !denied
                    && !failed
                    && older_than(
                        csr.pointer("/metadata/creationTimestamp")
                            .and_then(Value::as_str),
                        PENDING_KEPT,
                        now,
                    ));
        if stale {
            tracing::debug!(csr = meta_str(&csr, "name"), "csr cleaner: deleting");
            let _ = core.delete(
                r,
                None,
                meta_str(&csr, "name"),
                &crate::api::objects::DeleteOptions::default(),
            );
        }
    }
}
