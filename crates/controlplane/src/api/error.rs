//! API errors rendered as `meta/v1 Status` objects, with the reasons,
//! codes and message shapes kube-apiserver uses (k8s.io/apimachinery
//! `pkg/api/errors`), since kubectl and kube-rs branch on them.

use crate::registry::ResourceDef;
use crate::store::StoreError;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Cause {
    pub reason: &'static str,
    pub message: String,
    pub field: String,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, rd: &ResourceDef, name: &str) -> Self {
        let mut d = json!({"name": name, "kind": rd.plural});
        if !rd.group.is_empty() {
            d["group"] = json!(rd.group);
        }
        self.details = Some(d);
        self
    }

    pub fn not_found(rd: &ResourceDef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", rd.group_resource(), name),
        )
        .with_details(rd, name)
    }

    pub fn already_exists(rd: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", rd.group_resource(), name),
        )
        .with_details(rd, name)
    }

    pub fn conflict(rd: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                rd.group_resource(),
                name
            ),
        )
        .with_details(rd, name)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 400 unless a request body's `kind`, when it names one, is `kind`.
    pub fn check_body_kind(body: &serde_json::Value, kind: &str) -> ApiResult<()> {
        match body.get("kind").and_then(serde_json::Value::as_str) {
            Some(k) if !k.is_empty() && k != kind => Err(ApiError::bad_request(format!(
                "the body of the request must be a {kind}, not {k}"
            ))),
            _ => Ok(()),
        }
    }

    pub fn forbidden(
        user: &str,
        verb: &str,
        rd: &ResourceDef,
        ns: Option<&str>,
        name: &str,
    ) -> Self {
        let scope = match ns {
            Some(ns) => format!(" in the namespace \"{ns}\""),
            None => " at the cluster scope".to_string(),
        };
        let who = if name.is_empty() {
            rd.group_resource()
        } else {
            format!("{} \"{}\"", rd.group_resource(), name)
        };
        Self::new(
            403,
            "Forbidden",
            format!(
                "{who} is forbidden: User \"{user}\" cannot {verb} resource \"{}\" in API group \"{}\"{scope}",
                rd.plural, rd.group
            ),
        )
        .with_details(rd, name)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 422 Invalid, as `field.ErrorList.ToAggregate()` renders it.
    pub fn invalid(rd: &ResourceDef, name: &str, causes: Vec<Cause>) -> Self {
        let list: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let joined = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let mut d = json!({
            "name": name,
            "kind": rd.kind,
            "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>(),
        });
        if !rd.group.is_empty() {
            d["group"] = json!(rd.group);
        }
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{} \"{}\" is invalid: {}", rd.kind, name, joined),
            details: Some(d),
        }
    }

    /// 404 for a path that names no resource (or no subresource of it).
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn unsupported_media(ct: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {ct}"))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    pub fn from_store(e: StoreError, rd: &ResourceDef, name: &str) -> Self {
        match e {
            StoreError::NotFound(_) => Self::not_found(rd, name),
            StoreError::AlreadyExists(_) => Self::already_exists(rd, name),
            StoreError::Conflict { .. } => Self::conflict(rd, name),
            StoreError::Gone { requested, oldest } => {
                Self::gone(format!("too old resource version: {requested} ({oldest})"))
            }
            other => Self::internal(other.to_string()),
        }
    }
}

pub fn cause(reason: &'static str, field: &str, message: impl Into<String>) -> Cause {
    Cause {
        reason,
        field: field.to_string(),
        message: message.into(),
    }
}
