//! What kube-apiserver's apiextensions-apiserver does with a CustomResourceDefinition's schema:
//! whole-CRD validation, structural schemas, pruning, defaulting, value validation with
//! upstream's messages, list semantics, CEL `x-kubernetes-validations`, and the JSONPath subset
//! of `additionalPrinterColumns`. Pure: JSON in, JSON and field errors out.

mod cel_rules;
mod crd;
mod defaulting;
mod format;
mod goformat;
mod jsonpath;
mod names;
mod pruning;
mod schema;
mod validation;

pub use crd::validate_crd;
pub use jsonpath::{jsonpath, JsonPath};
pub use schema::Structural;

/// One field error, as upstream's field.Error: `reason` is the StatusCause type, `field` the
/// path, `message` the cause's message as kube-apiserver prints it (field.Error.ErrorBody(): the
/// text without the field; the Status message is `<field>: <message>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    /// As field.Error.Error(): `field: body` (what a 422 Status message lists).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

/// A bad value as field.Error renders it (ErrorBody).
#[derive(Debug, Clone)]
pub(crate) enum Bad {
    /// No value shown (Required, Forbidden, TooLong).
    Omit,
    /// A Go string: `%q`.
    Str(String),
    /// A JSON value: strings `%q`, numbers and booleans `%v`, others JSON.
    Json(serde_json::Value),
    /// A Go int (`%v`).
    Int(i64),
}

pub(crate) const REQUIRED: &str = "FieldValueRequired";
pub(crate) const INVALID: &str = "FieldValueInvalid";
pub(crate) const TYPE_INVALID: &str = "FieldValueTypeInvalid";
pub(crate) const NOT_SUPPORTED: &str = "FieldValueNotSupported";
pub(crate) const FORBIDDEN: &str = "FieldValueForbidden";
pub(crate) const TOO_LONG: &str = "FieldValueTooLong";
pub(crate) const TOO_MANY: &str = "FieldValueTooMany";
pub(crate) const DUPLICATE: &str = "FieldValueDuplicate";

impl FieldError {
    /// field.Error with upstream's ErrorBody rendering.
    pub(crate) fn new(
        reason: &'static str,
        field: impl Into<String>,
        bad: Bad,
        detail: &str,
    ) -> Self {
        let head = match reason {
            REQUIRED => "Required value",
            INVALID | TYPE_INVALID => "Invalid value",
            NOT_SUPPORTED => "Unsupported value",
            FORBIDDEN => "Forbidden",
            TOO_LONG => "Too long",
            TOO_MANY => "Too many",
            DUPLICATE => "Duplicate value",
            _ => "Internal error",
        };
        let mut message = match bad {
            Bad::Omit => head.to_string(),
            Bad::Str(s) => format!("{head}: {}", goformat::quote(&s)),
            Bad::Int(i) => format!("{head}: {i}"),
            Bad::Json(v) => format!("{head}: {}", goformat::value_v(&v)),
        };
        if !detail.is_empty() {
            message.push_str(": ");
            message.push_str(detail);
        }
        FieldError {
            reason,
            field: field.into(),
            message,
        }
    }
    pub(crate) fn required(field: impl Into<String>, detail: &str) -> Self {
        Self::new(REQUIRED, field, Bad::Omit, detail)
    }
    pub(crate) fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self::new(FORBIDDEN, field, Bad::Omit, detail)
    }
    pub(crate) fn invalid_str(field: impl Into<String>, value: &str, detail: &str) -> Self {
        Self::new(INVALID, field, Bad::Str(value.to_string()), detail)
    }
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: serde_json::Value,
        detail: &str,
    ) -> Self {
        Self::new(INVALID, field, Bad::Json(value), detail)
    }
    /// field.NotSupported: `Unsupported value: "x": supported values: "a", "b"`.
    pub(crate) fn not_supported(field: impl Into<String>, value: Bad, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| goformat::quote(s)).collect();
        let detail = if list.is_empty() {
            String::new()
        } else {
            format!("supported values: {}", list.join(", "))
        };
        Self::new(NOT_SUPPORTED, field, value, &detail)
    }
}

/// field.Path rendering: `a.b`, `a[0]`, `a[key]`.
pub(crate) fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}
pub(crate) fn key(path: &str, k: &str) -> String {
    format!("{path}[{k}]")
}

/// The per-object walks keep one path buffer, extended going down and truncated coming back,
/// rather than a new String for every value visited. Appends `.k` (`k` at the root); returns
/// the length to truncate back to.
pub(crate) fn push_child(path: &mut String, k: &str) -> usize {
    let len = path.len();
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(k);
    len
}

/// Appends `[i]` to a path buffer; returns the length to truncate back to.
pub(crate) fn push_index(path: &mut String, i: usize) -> usize {
    use std::fmt::Write;
    let len = path.len();
    let _ = write!(path, "[{i}]");
    len
}

#[cfg(test)]
mod tests {
    /// The control plane shares parsed schemas between request tasks.
    #[test]
    fn structural_is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<crate::Structural>();
        check::<crate::JsonPath>();
        check::<crate::FieldError>();
    }
}
