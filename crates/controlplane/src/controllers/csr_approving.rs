//! The CSR approver (kube-controller-manager's `csrapproving`, upstream
//! pkg/controller/certificates/approver): a pending
//! `kubernetes.io/kube-apiserver-client-kubelet` CSR that is a node client
//! request (O=system:nodes only, CN system:node:NAME, no SANs, usages
//! digital signature + client auth [+ key encipherment]) is approved
//! (`AutoApproved`) when a SubjectAccessReview for its requester
//! (`spec.username`/`groups`) allows `create` on
//! `certificatesigningrequests/selfnodeclient` (the node renewing its own:
//! CN = requester) or `certificatesigningrequests/nodeclient` (bootstrap).
//! Otherwise it stays pending, as upstream.
//!
//! Beyond upstream (whose approver leaves `kubernetes.io/kubelet-serving`
//! to an admin or a third-party approver): for local clusters a serving CSR
//! is approved when the node itself asks (requester = CN, in
//! `system:nodes`), it passes the serving rules, and every SAN is one of
//! that Node's `status.addresses` — so a node cannot get a certificate for
//! another node's address.

use super::csr_signing::{
    has_condition, kubelet_csrs, request_pem, usages, validate_kubelet_client, CLIENT_KUBELET,
};
use super::{rd, set_status};
use crate::api::auth::authz;
use crate::api::auth::rbac::{Request, ResourceRequest};
use crate::api::auth::User;
use crate::api::objects::{now, Core};
use serde_json::{json, Value};

const MANAGER: &str = "kube-controller-manager";

fn requester(csr: &Value) -> User {
    User {
        name: csr
            .pointer("/spec/username")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        groups: csr
            .pointer("/spec/groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(String::from))
            .collect(),
    }
}

/// A SubjectAccessReview of `create certificatesigningrequests/<sub>` for `user`.
fn may_create(rbac: &crate::api::auth::Rbac, user: &User, sub: &str) -> bool {
    let req = ResourceRequest {
        verb: "create",
        group: "certificates.k8s.io",
        resource: "certificatesigningrequests",
        subresource: Some(sub),
        namespace: None,
        name: "",
    };
    authz::decide(rbac, user, &Request::Resource(req)).is_some()
}

pub(crate) fn pass(core: &Core, s: &super::Settings) {
    let Some(signer) = &s.csr_signer else { return };
    let r = rd("certificates.k8s.io", "certificatesigningrequests");
    for (csr, signer_name) in kubelet_csrs(core) {
        if has_condition(&csr, "Approved") || has_condition(&csr, "Denied") {
            continue;
        }
        let Some(info) = request_pem(&csr).and_then(|p| crate::pki::parse_csr(&p).ok()) else {
            continue;
        };
        let usages = usages(&csr);
        let user = requester(&csr);
        let message = if signer_name == CLIENT_KUBELET {
            if validate_kubelet_client(&info, &usages).is_err() {
                continue;
            }
            let own = user.name == info.common_name;
            let allowed = (own && may_create(&signer.rbac, &user, "selfnodeclient"))
                || may_create(&signer.rbac, &user, "nodeclient");
            if !allowed {
                continue;
            }
            "Auto approving kubelet client certificate after SubjectAccessReview."
        } else {
            if !signer.approve_serving {
                continue;
            }
            let addresses = |node: &str| {
                core.get_stored(rd("", "nodes"), None, node).map(|n| {
                    n.object
                        .pointer("/status/addresses")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a["address"].as_str().map(String::from))
                        .collect()
                })
            };
            let rule = rktup_tls::kubelet_csr::approvable_serving(
                &info,
                &usages,
                &user.name,
                &user.groups,
                addresses,
            );
            if rule.is_err() {
                continue;
            }
            rktup_tls::kubelet_csr::SERVING_APPROVED
        };
        let mut status = csr.get("status").cloned().unwrap_or_else(|| json!({}));
        super::csr_signing::push_condition(
            &mut status,
            json!({"type": "Approved", "status": "True", "reason": "AutoApproved",
                   "message": message, "lastUpdateTime": now(), "lastTransitionTime": now()}),
        );
        set_status(core, r, &csr, status, MANAGER);
    }
}
