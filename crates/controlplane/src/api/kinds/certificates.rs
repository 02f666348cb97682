//! certificates.k8s.io/v1 CertificateSigningRequests, as upstream's CSR
//! strategy and validation (pkg/registry/certificates,
//! pkg/apis/certificates/validation): the request must be a PEM
//! `CERTIFICATE REQUEST` whose signature verifies; usages known and not
//! repeated; a qualified signer name (not `kubernetes.io/legacy-unknown`);
//! `expirationSeconds` ≥ 600; conditions well formed (Approved/Denied/Failed
//! only `True`, Approved and Denied exclusive, no duplicate types) and never
//! removed; `status.certificate` only CERTIFICATE blocks. `spec.username`,
//! `uid`, `groups` and `extra` come from the requesting user
//! ([`set_requester`]), never from the body. Approval conditions are written
//! only through the `approval` subresource and the certificate only through
//! `status` (`handlers/certificates.rs`).

use crate::api::auth::User;
use crate::api::error::{cause, Cause};
use crate::registry::ResourceDef;
use serde_json::{json, Value};

fn is_csr(rd: &ResourceDef) -> bool {
    (rd.group, rd.kind) == ("certificates.k8s.io", "CertificateSigningRequest")
}

/// Upstream's `allValidUsages`, sorted as Go's `sets.List()` prints them.
const USAGES: [&str; 23] = [
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

/// On create: the requester's identity into the spec (upstream's `PrepareForCreate`), whatever
/// the body said.
pub(crate) fn set_requester(rd: &ResourceDef, obj: &mut Value, user: &User) {
    if !is_csr(rd) || !obj.is_object() {
        return;
    }
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    spec["username"] = json!(user.name);
    spec["groups"] = json!(user.reported_groups());
    if let Some(m) = spec.as_object_mut() {
        // Our users carry no uid or extra values: none are recorded.
        m.remove("uid");
        m.remove("extra");
    }
}

/// CertificateSubjectRestriction admission: no `system:masters` client certificate through the
/// `kubernetes.io/kube-apiserver-client` signer.
pub(crate) fn admit_create(rd: &ResourceDef, obj: &Value) -> crate::api::error::ApiResult<()> {
    if !is_csr(rd)
        || obj.pointer("/spec/signerName").and_then(Value::as_str)
            != Some("kubernetes.io/kube-apiserver-client")
    {
        return Ok(());
    }
    let Ok(info) = crate::pki::parse_csr(&request_bytes(obj)) else {
        return Ok(()); // validation reports it
    };
    if info.organizations.iter().any(|o| o == "system:masters") {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        return Err(crate::api::error::ApiError::new(
            403,
            "Forbidden",
            format!("certificatesigningrequests.certificates.k8s.io {name:?} is forbidden: use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"),
        ));
    }
    Ok(())
}

/// Go's `%#v` of a `[]byte`, as field errors print an invalid request.
fn go_bytes(b: &[u8]) -> String {
    let items: Vec<String> = b.iter().map(|x| format!("0x{x:x}")).collect();
    format!("[]byte{{{}}}", items.join(", "))
}

fn request_bytes(obj: &Value) -> Vec<u8> {
    use base64::Engine;
    obj.pointer("/spec/request")
        .and_then(Value::as_str)
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .unwrap_or_default()
}

/// Upstream's `validateCertificate`: only CERTIFICATE blocks, at least one.
fn check_certificate(pem: &[u8]) -> Result<(), String> {
    let mut blocks = 0;
    for b in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let b = b.map_err(|e| e.to_string())?;
        if b.label != "CERTIFICATE" {
            return Err(format!(
                "only CERTIFICATE PEM blocks are allowed, found {:?}",
                b.label
            ));
        }
        b.parse_x509().map_err(|e| format!("x509: {e}"))?;
        blocks += 1;
    }
    if blocks == 0 {
        return Err("must contain at least one CERTIFICATE PEM block".into());
    }
    Ok(())
}

/// Upstream's `ValidateSignerName` (the common cases).
fn signer_name_causes(name: &str, causes: &mut Vec<Cause>) {
    let f = "spec.signerName";
    if name.is_empty() {
        causes.push(cause("FieldValueRequired", f, "Required value"));
        return;
    }
    if name == "kubernetes.io/legacy-unknown" {
        causes.push(cause(
            "FieldValueInvalid",
            f,
            format!(
                "Invalid value: {name:?}: the legacy signerName is not allowed via this API version"
            ),
        ));
        return;
    }
    let ok = name.split_once('/').is_some_and(|(domain, path)| {
        domain.contains('.')
            && !path.is_empty()
            && domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    });
    if !ok {
        causes.push(cause(
            "FieldValueInvalid",
            f,
            format!("Invalid value: {name:?}: must be a fully qualified domain and path of the form 'example.com/signer-name'"),
        ));
    }
}

pub(super) fn validate(rd: &ResourceDef, obj: &Value, causes: &mut Vec<Cause>) {
    if !is_csr(rd) {
        return;
    }
    let req = request_bytes(obj);
    if let Err(e) = crate::pki::parse_csr(&req) {
        causes.push(cause(
            "FieldValueInvalid",
            "spec.request",
            format!("Invalid value: {}: {e}", go_bytes(&req)),
        ));
    }
    let usages: Vec<&str> = obj
        .pointer("/spec/usages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|u| u.as_str().unwrap_or(""))
        .collect();
    if usages.is_empty() {
        causes.push(cause("FieldValueRequired", "spec.usages", "Required value"));
    }
    let supported: Vec<String> = USAGES.iter().map(|u| format!("{u:?}")).collect();
    for (i, u) in usages.iter().enumerate() {
        if !USAGES.contains(u) {
            causes.push(cause(
                "FieldValueNotSupported",
                &format!("spec.usages[{i}]"),
                format!(
                    "Unsupported value: {u:?}: supported values: {}",
                    supported.join(", ")
                ),
            ));
        }
        if usages[..i].contains(u) {
            causes.push(cause(
                "FieldValueDuplicate",
                &format!("spec.usages[{i}]"),
                format!("Duplicate value: {u:?}"),
            ));
        }
    }
    signer_name_causes(
        obj.pointer("/spec/signerName")
            .and_then(Value::as_str)
            .unwrap_or(""),
        causes,
    );
    if let Some(s) = obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
    {
        if s < 600 {
            causes.push(cause(
                "FieldValueInvalid",
                "spec.expirationSeconds",
                format!("Invalid value: {s}: may not specify a duration less than 600 seconds (10 minutes)"),
            ));
        }
    }
    let conds = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (mut approved, mut denied) = (false, false);
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in conds.iter().enumerate() {
        let ty = c["type"].as_str().unwrap_or("");
        let status = c["status"].as_str().unwrap_or("");
        let f = |k: &str| format!("status.conditions[{i}].{k}");
        if ty.is_empty() {
            causes.push(cause("FieldValueRequired", &f("type"), "Required value"));
        }
        let true_only = matches!(ty, "Approved" | "Denied" | "Failed");
        if status.is_empty() {
            causes.push(cause("FieldValueRequired", &f("status"), "Required value"));
        } else if true_only && status != "True" {
            causes.push(cause(
                "FieldValueNotSupported",
                &f("status"),
                format!("Unsupported value: {status:?}: supported values: \"True\""),
            ));
        } else if !matches!(status, "True" | "False" | "Unknown") {
            causes.push(cause(
                "FieldValueNotSupported",
                &f("status"),
                format!("Unsupported value: {status:?}: supported values: \"False\", \"True\", \"Unknown\""),
            ));
        }
        match ty {
            "Approved" => approved = true,
            "Denied" => denied = true,
            _ => {}
        }
        if approved && denied && matches!(ty, "Approved" | "Denied") {
            causes.push(cause(
                "FieldValueInvalid",
                &f("type"),
                format!(
                    "Invalid value: {ty:?}: Approved and Denied conditions are mutually exclusive"
                ),
            ));
        }
        if seen.contains(&ty) {
            causes.push(cause(
                "FieldValueDuplicate",
                &f("type"),
                format!("Duplicate value: {ty:?}"),
            ));
        }
        seen.push(ty);
    }
    if let Some(cert) = obj.pointer("/status/certificate").and_then(Value::as_str) {
        use base64::Engine;
        let pem = base64::engine::general_purpose::STANDARD
            .decode(cert)
            .unwrap_or_default();
        if !pem.is_empty() {
            if let Err(e) = check_certificate(&pem) {
                causes.push(cause(
                    "FieldValueInvalid",
                    "status.certificate",
                    format!("Invalid value: \"<certificate data>\": {e}"),
                ));
            }
        }
    }
}

fn conditions_of<'a>(obj: &'a Value, ty: &str) -> Vec<&'a Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c["type"] == ty)
        .collect()
}

/// The update rules of each write path: `sub` is None (the object: only
/// metadata may change), `status` (the certificate may be set once, approval
/// conditions not touched) or `approval` (approval conditions may be added).
/// No path removes an Approved, Denied or Failed condition.
pub(crate) fn update_causes(old: &Value, new: &Value, sub: Option<&str>) -> Vec<Cause> {
    let mut causes = Vec::new();
    if sub.is_none() && old.get("spec") != new.get("spec") {
        causes.push(cause(
            "FieldValueInvalid",
            "spec",
            "Invalid value: \"object\": field is immutable",
        ));
    }
    for t in ["Approved", "Denied", "Failed"] {
        if conditions_of(new, t).len() < conditions_of(old, t).len() {
            causes.push(cause(
                "FieldValueForbidden",
                "status.conditions",
                format!("Forbidden: updates may not remove a condition of type {t:?}"),
            ));
        }
    }
    if sub != Some("approval") {
        for t in ["Approved", "Denied"] {
            let (o, n) = (conditions_of(old, t), conditions_of(new, t));
            if n.len() > o.len() {
                causes.push(cause(
                    "FieldValueForbidden",
                    "status.conditions",
                    format!("Forbidden: updates may not add a condition of type {t:?}"),
                ));
            } else if n.len() == o.len() && n != o {
                causes.push(cause(
                    "FieldValueForbidden",
                    "status.conditions",
                    format!("Forbidden: updates may not modify a condition of type {t:?}"),
                ));
            }
        }
    }
    let (oc, nc) = (
        old.pointer("/status/certificate"),
        new.pointer("/status/certificate"),
    );
    let empty = |c: Option<&Value>| c.and_then(Value::as_str).is_none_or(str::is_empty);
    if oc != nc && !(empty(oc) && empty(nc)) {
        if sub != Some("status") {
            causes.push(cause(
                "FieldValueForbidden",
                "status.certificate",
                "Forbidden: updates may not set certificate content",
            ));
        } else if !empty(oc) {
            causes.push(cause(
                "FieldValueForbidden",
                "status.certificate",
                "Forbidden: updates may not modify existing certificate content",
            ));
        }
    }
    causes
}

pub(super) fn validate_update(rd: &ResourceDef, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    if is_csr(rd) {
        causes.extend(update_causes(old, new, None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_rules_per_subresource() {
        let old = json!({"spec": {"request": "x"}, "status": {}});
        let approved = json!({"spec": {"request": "x"}, "status": {"conditions": [{"type": "Approved", "status": "True"}]}});
        assert!(update_causes(&old, &approved, Some("approval")).is_empty());
        assert!(!update_causes(&old, &approved, Some("status")).is_empty());
        assert!(!update_causes(&approved, &old, Some("approval")).is_empty());
        let cert = json!({"spec": {"request": "x"}, "status": {"certificate": "Y2VydA=="}});
        assert!(update_causes(&old, &cert, Some("status")).is_empty());
        assert!(!update_causes(&old, &cert, Some("approval")).is_empty());
        let other = json!({"spec": {"request": "x"}, "status": {"certificate": "b3RoZXI="}});
        assert!(!update_causes(&cert, &other, Some("status")).is_empty());
        let spec = json!({"spec": {"request": "y"}, "status": {}});
        assert!(!update_causes(&old, &spec, None).is_empty());
        assert_eq!(go_bytes(b"-A"), "[]byte{0x2d, 0x41}");
    }
}
