//! Kubelet certificate signing requests, as kube-controller-manager's CSR signer and approver
//! read them: the PKCS#10 request parsed and its signature verified (upstream's `ParseCSR` +
//! `CheckSignature`), the two kubelet signers' rules (`ValidateKubeletClientCSR`,
//! `ValidateKubeletServingCSR`, with their error texts), and the rule rktup's serving approvers
//! add: a node's serving certificate names only that node's own addresses. Shared by the
//! embedded control plane (which signs and approves) and the master's agent on cloud clusters
//! (which approves serving CSRs for upstream kube-controller-manager, which never does).

use std::collections::BTreeSet;
use std::net::IpAddr;

/// The signer of node client certificates.
pub const CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of kubelet port (serving) certificates.
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

/// What a certificate signing request (PKCS#10) asks for, once its signature is verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsrInfo {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub emails: Vec<String>,
    pub uris: Vec<String>,
    /// Other subject fields (OU, C, L...): the node signers allow none.
    pub other_subject_fields: usize,
}

/// The DER of the first PEM block if it is a `CERTIFICATE REQUEST`, else upstream's error text.
pub fn csr_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    let block = x509_parser::pem::Pem::iter_from_buffer(pem)
        .next()
        .and_then(|b| b.ok())
        .ok_or("PEM block type must be CERTIFICATE REQUEST")?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    Ok(block.contents)
}

/// Parses a PEM certificate signing request and verifies its signature (upstream's
/// `ParseCSR` + `CheckSignature`); the error is the text the CSR API reports.
pub fn parse_csr(pem: &[u8]) -> Result<CsrInfo, String> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;
    let der = csr_der(pem)?;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| format!("asn1: {e}"))?;
    csr.verify_signature()
        .map_err(|e| format!("x509: signature verification failed: {e}"))?;
    let subject = &csr.certification_request_info.subject;
    let mut info = CsrInfo::default();
    for attr in subject.iter_attributes() {
        let value = attr.as_str().unwrap_or("").to_string();
        match attr.attr_type().to_id_string().as_str() {
            "2.5.4.3" if info.common_name.is_empty() => info.common_name = value,
            "2.5.4.10" => info.organizations.push(value),
            _ => info.other_subject_fields += 1,
        }
    }
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for n in &san.general_names {
                    match n {
                        GeneralName::DNSName(d) => info.dns_names.push(d.to_string()),
                        GeneralName::RFC822Name(m) => info.emails.push(m.to_string()),
                        GeneralName::URI(u) => info.uris.push(u.to_string()),
                        GeneralName::IPAddress(b) => match b.len() {
                            4 => {
                                let a: [u8; 4] = [b[0], b[1], b[2], b[3]];
                                info.ip_addresses.push(IpAddr::from(a));
                            }
                            16 => {
                                let mut a = [0u8; 16];
                                a.copy_from_slice(b);
                                info.ip_addresses.push(IpAddr::from(a));
                            }
                            _ => return Err("x509: invalid IP address SAN".into()),
                        },
                        _ => info.uris.push(format!("{n:?}")),
                    }
                }
            }
        }
    }
    Ok(info)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Go's `%v` of a sorted string list.
fn listed(s: &BTreeSet<String>) -> String {
    format!("[{}]", s.iter().cloned().collect::<Vec<_>>().join(" "))
}

/// The checks both kubelet validations end with: a node's common name, and `auth` usage with
/// digital signature (key encipherment optional).
fn node_name_and_usages(
    req: &CsrInfo,
    usages: &BTreeSet<String>,
    auth: &str,
) -> Result<(), String> {
    if !req.common_name.starts_with("system:node:") {
        return Err("subject common name does not begin with system:node:".into());
    }
    let full = set(&["key encipherment", "digital signature", auth]);
    if *usages != full && *usages != set(&["digital signature", auth]) {
        return Err(format!("usages did not match {}", listed(&full)));
    }
    Ok(())
}

/// Upstream's `ValidateKubeletClientCSR`, its error texts.
pub fn validate_kubelet_client(req: &CsrInfo, usages: &BTreeSet<String>) -> Result<(), String> {
    if req.organizations != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    if !req.dns_names.is_empty() {
        return Err("DNS subjectAltNames are not allowed".into());
    }
    if !req.emails.is_empty() {
        return Err("Email subjectAltNames are not allowed".into());
    }
    if !req.ip_addresses.is_empty() {
        return Err("IP subjectAltNames are not allowed".into());
    }
    if !req.uris.is_empty() {
        return Err("URI subjectAltNames are not allowed".into());
    }
    node_name_and_usages(req, usages, "client auth")
}

/// Upstream's `ValidateKubeletServingCSR`, its error texts.
pub fn validate_kubelet_serving(req: &CsrInfo, usages: &BTreeSet<String>) -> Result<(), String> {
    if req.organizations != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    if !req.emails.is_empty() {
        return Err("Email subjectAltNames are not allowed".into());
    }
    if !req.uris.is_empty() {
        return Err("URI subjectAltNames are not allowed".into());
    }
    if req.dns_names.is_empty() && req.ip_addresses.is_empty() {
        return Err("DNS or IP subjectAltName is required".into());
    }
    node_name_and_usages(req, usages, "server auth")
}

/// Every SAN (DNS name or IP) of the request is one of `addresses` (the Node's
/// `status.addresses`), so a node cannot get a certificate for another node's name or address.
pub fn names_only(req: &CsrInfo, addresses: &[&str]) -> bool {
    let ips = req.ip_addresses.iter().map(|ip| ip.to_string());
    let names = req.dns_names.iter().cloned();
    ips.chain(names).all(|a| addresses.contains(&a.as_str()))
}

/// The condition message of a serving request approved by [`approvable_serving`].
pub const SERVING_APPROVED: &str =
    "Auto approving kubelet serving certificate: requested by the node for its own addresses.";

/// rktup's approval rule for a pending `kubernetes.io/kubelet-serving` request (upstream's
/// approver leaves these pending): it passes upstream's serving rules, the node asks for itself
/// (`requester` = CN, in `system:nodes`), and every SAN is one of that Node's addresses
/// (`addresses(node)`, `None` when there is no such Node). `Err` says why it stays pending.
/// The embedded control plane's approver and the cloud master agent's use this one rule.
pub fn approvable_serving(
    req: &CsrInfo,
    usages: &BTreeSet<String>,
    requester: &str,
    groups: &[String],
    addresses: impl FnOnce(&str) -> Option<Vec<String>>,
) -> Result<(), String> {
    validate_kubelet_serving(req, usages)?;
    let node = req.common_name.trim_start_matches("system:node:");
    if requester != req.common_name || !groups.iter().any(|g| g == "system:nodes") {
        return Err(format!(
            "requested by {requester:?}, not by node {node:?} itself"
        ));
    }
    let addrs = addresses(node).ok_or_else(|| format!("no Node {node:?} (yet)"))?;
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    if !names_only(req, &addrs) {
        return Err(format!(
            "names other than Node {node:?}'s addresses {addrs:?}"
        ));
    }
    Ok(())
}
