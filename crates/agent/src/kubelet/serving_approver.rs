//! `--approve-kubelet-serving-csrs`: the master's agent approves kubelet serving certificates.
//!
//! Upstream kube-controller-manager signs `kubernetes.io/kubelet-serving` CSRs but never approves
//! them (its approver handles only node client certificates), so on a cloud master running it
//! every node's kubelet port would serve a self-signed certificate for ever, and the API server
//! could not check kubelets (`--kubelet-certificate-authority`). kubeadm leaves this to the
//! admin or to a third-party approver (postfinance's kubelet-csr-approver); rktup's master agent
//! is that approver, with the embedded control plane's rule (crates/controlplane
//! `csr_approving.rs`, the same checks from `rktup_tls::kubelet_csr`):
//! - the request passes upstream's `ValidateKubeletServingCSR` (O=system:nodes, CN
//!   system:node:NAME, DNS/IP SANs only, server auth usages);
//! - the node asks for itself (requester = CN, in `system:nodes`) — the master's agent too, a
//!   node like the others (TLS bootstrap, `system:node:<master>`);
//! - every SAN is one of Node NAME's `status.addresses` — no node gets a certificate for another
//!   node's name or address.
//!
//! Anything else stays pending, as upstream leaves it; kube-controller-manager then signs what
//! this approved.

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use rktup_tls::kubelet_csr::{self, KUBELET_SERVING};
use std::collections::BTreeSet;
use std::time::Duration;
use tracing::{info, warn};

/// The approver on the master's agent (named by its node, for the log).
#[derive(Debug, Clone)]
pub struct Approver {
    pub node_name: String,
}

/// What is decided about one CSR.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Approve, with this message.
    Approve(&'static str),
    /// Leave it pending: not ours to approve (why, for the log).
    Leave(String),
}

fn approved_or_denied(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Approved" || c.type_ == "Denied") && c.status == "True")
        })
}

impl Approver {
    /// The decision for `csr`; `addresses(node)` are that Node's `status.addresses`, or `None`
    /// when there is no such Node.
    pub fn decide(
        &self,
        csr: &CertificateSigningRequest,
        addresses: impl Fn(&str) -> Option<Vec<String>>,
    ) -> Decision {
        let leave = |why: &str| Decision::Leave(why.to_string());
        if csr.spec.signer_name != KUBELET_SERVING {
            return leave("not a kubelet serving request");
        }
        if approved_or_denied(csr) {
            return leave("already approved or denied");
        }
        let info = match kubelet_csr::parse_csr(&csr.spec.request.0) {
            Ok(i) => i,
            Err(e) => return Decision::Leave(format!("unreadable request: {e}")),
        };
        let usages: BTreeSet<String> = csr.spec.usages.iter().flatten().cloned().collect();
        match kubelet_csr::approvable_serving(
            &info,
            &usages,
            csr.spec.username.as_deref().unwrap_or(""),
            csr.spec.groups.as_deref().unwrap_or_default(),
            addresses,
        ) {
            Ok(()) => Decision::Approve(kubelet_csr::SERVING_APPROVED),
            Err(why) => Decision::Leave(why),
        }
    }
}

fn node_addresses(n: &Node) -> Vec<String> {
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .map(|a| a.address.clone())
        .collect()
}

/// One pass over the pending kubelet serving CSRs; returns how many it approved.
pub async fn pass(client: &kube::Client, approver: &Approver) -> Result<usize, kube::Error> {
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let mut approved = 0;
    for csr in csrs.list(&ListParams::default()).await?.items {
        if csr.spec.signer_name != KUBELET_SERVING || approved_or_denied(&csr) {
            continue;
        }
        let name = csr.metadata.name.clone().unwrap_or_default();
        // The Node whose addresses count: the requester's (the rule approves only a node asking
        // for itself), so the request is parsed once, in `decide`.
        let node = csr
            .spec
            .username
            .as_deref()
            .and_then(|u| u.strip_prefix("system:node:"))
            .map(str::to_string);
        let addrs = match &node {
            Some(n) => nodes.get_opt(n).await?.map(|n| node_addresses(&n)),
            None => None,
        };
        match approver.decide(&csr, |_| addrs.clone()) {
            Decision::Approve(message) => {
                let mut status = csr.status.clone().unwrap_or_default();
                let now = Time(jiff::Timestamp::now());
                status.conditions.get_or_insert_with(Vec::new).push(
                    CertificateSigningRequestCondition {
                        type_: "Approved".into(),
                        status: "True".into(),
                        reason: Some("AutoApproved".into()),
                        message: Some(message.into()),
                        last_update_time: Some(now.clone()),
                        last_transition_time: Some(now),
                    },
                );
                let patch = serde_json::json!({"status": {"conditions": status.conditions}});
                csrs.patch_approval(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                info!(
                    "serving approver: approved {name} for {}",
                    node.unwrap_or_default()
                );
                approved += 1;
            }
            Decision::Leave(why) => {
                tracing::debug!("serving approver: leaving {name} pending: {why}");
            }
        }
    }
    Ok(approved)
}

/// Approves as requests come (a pass on every CSR event) and every `period` (a Node's addresses
/// may arrive after its request), until the task is aborted.
pub async fn run(client: kube::Client, approver: Approver, period: Duration) {
    use futures_util::{FutureExt, StreamExt};
    use kube::runtime::WatchStreamExt;
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let mut events = kube::runtime::watcher(csrs, kube::runtime::watcher::Config::default())
        .default_backoff()
        .boxed();
    info!(
        "serving approver: approving kubelet serving CSRs for nodes' own addresses (master {})",
        approver.node_name
    );
    loop {
        if let Err(e) = pass(&client, &approver).await {
            warn!("serving approver: {e}");
        }
        // Wait for a CSR event or the period, whichever comes first; events that came together
        // (a watch's initial list) make one pass.
        let _ = tokio::time::timeout(period, events.next()).await;
        while let Some(Some(_)) = events.next().now_or_never() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::certificate::{make_csr, Request};
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;

    fn csr(
        requester: &str,
        node: &str,
        sans: &[&str],
        usages: &[&str],
    ) -> CertificateSigningRequest {
        let (_, pem) = make_csr(&Request::serving(
            node,
            sans.iter().map(|s| s.to_string()).collect(),
        ))
        .expect("csr");
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                signer_name: KUBELET_SERVING.into(),
                request: k8s_openapi::ByteString(pem.into_bytes()),
                usages: Some(usages.iter().map(|s| s.to_string()).collect()),
                username: Some(requester.into()),
                groups: Some(vec!["system:nodes".into(), "system:authenticated".into()]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_node_gets_its_own_addresses_and_nothing_else() {
        let a = Approver {
            node_name: "master".into(),
        };
        let usages = ["digital signature", "server auth"];
        let addrs = |n: &str| (n == "n1").then(|| vec!["n1".to_string(), "10.0.0.5".into()]);
        let own = csr("system:node:n1", "n1", &["n1", "10.0.0.5"], &usages);
        assert!(matches!(a.decide(&own, addrs), Decision::Approve(_)));
        // Another address, another node's request, another requester, no Node yet, wrong
        // usages: pending.
        for (c, why) in [
            (
                csr("system:node:n1", "n1", &["n1", "10.0.0.6"], &usages),
                "addresses",
            ),
            (csr("system:node:n2", "n1", &["n1"], &usages), "not by node"),
            (
                csr("kubernetes-admin", "n1", &["n1"], &usages),
                "not by node",
            ),
            (csr("system:node:n3", "n3", &["n3"], &usages), "no Node"),
            (
                csr(
                    "system:node:n1",
                    "n1",
                    &["n1"],
                    &["digital signature", "client auth"],
                ),
                "usages",
            ),
        ] {
            match a.decide(&c, addrs) {
                Decision::Leave(w) => assert!(w.contains(why), "{w} (expected {why})"),
                d => panic!("{d:?} for {why}"),
            }
        }
        // Approved once: left alone.
        let mut done = own.clone();
        done.status = Some(Default::default());
        done.status.as_mut().expect("status").conditions =
            Some(vec![CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                ..Default::default()
            }]);
        assert!(matches!(a.decide(&done, addrs), Decision::Leave(_)));
    }
}
