//! Field errors, shaped and printed as upstream's `field.Error`
//! (k8s.io/apimachinery/pkg/util/validation/field).

use std::fmt;

use serde_json::Value;

/// The kind of a field error, as upstream's `field.ErrorType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorType {
    /// A value that fails a check (`FieldValueInvalid`).
    Invalid,
    /// A missing required value (`FieldValueRequired`).
    Required,
    /// A value outside a fixed set (`FieldValueNotSupported`).
    NotSupported,
    /// A repeated value in a set or a repeated key in a map list (`FieldValueDuplicate`).
    Duplicate,
    /// A string longer than allowed (`FieldValueTooLong`).
    TooLong,
    /// A list or map with more entries than allowed (`FieldValueTooMany`).
    TooMany,
    /// A value that may not be set (`FieldValueForbidden`).
    Forbidden,
    /// A value of the wrong type (`FieldValueTypeInvalid`).
    TypeInvalid,
}

impl ErrorType {
    /// The `reason` upstream puts in a Status cause (`FieldValueInvalid`, …).
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::Required => "FieldValueRequired",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    /// The error type of a `reason` as written in an `x-kubernetes-validations` rule;
    /// `None` for a reason a rule may not name.
    pub fn from_rule_reason(reason: &str) -> Option<ErrorType> {
        match reason {
            "FieldValueInvalid" => Some(ErrorType::Invalid),
            "FieldValueForbidden" => Some(ErrorType::Forbidden),
            "FieldValueRequired" => Some(ErrorType::Required),
            "FieldValueDuplicate" => Some(ErrorType::Duplicate),
            _ => None,
        }
    }

    /// Upstream's text for the type (`Invalid value`, `Required value`, …).
    pub fn text(self) -> &'static str {
        match self {
            ErrorType::Invalid | ErrorType::TypeInvalid => "Invalid value",
            ErrorType::Required => "Required value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
            ErrorType::Forbidden => "Forbidden",
        }
    }
}

/// One problem with one field, as upstream's `field.Error`.
///
/// `Display` prints upstream's text:
///
/// ```
/// use kcore_schema::{ErrorType, FieldError};
///
/// let e = FieldError::new(
///     "spec.replicas",
///     ErrorType::Invalid,
///     "spec.replicas in body should be less than or equal to 10",
///     Some(serde_json::json!(20)),
/// );
/// assert_eq!(
///     e.to_string(),
///     "spec.replicas: Invalid value: 20: spec.replicas in body should be less than or equal to 10"
/// );
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// The field's path: `spec.replicas`, `spec.items[2].name`; empty for the root.
    pub field: String,
    /// What kind of problem.
    pub error_type: ErrorType,
    /// Upstream's detail text (may be empty).
    pub message: String,
    /// The offending value; `None` where upstream omits it.
    pub bad_value: Option<Value>,
}

impl FieldError {
    /// A field error.
    pub fn new(
        field: impl Into<String>,
        error_type: ErrorType,
        message: impl Into<String>,
        bad_value: Option<Value>,
    ) -> Self {
        FieldError {
            field: field.into(),
            error_type,
            message: message.into(),
            bad_value,
        }
    }

    pub(crate) fn invalid(field: &str, value: Value, message: impl Into<String>) -> Self {
        Self::new(field, ErrorType::Invalid, message, Some(value))
    }

    pub(crate) fn required(field: &str, message: impl Into<String>) -> Self {
        Self::new(field, ErrorType::Required, message, None)
    }

    pub(crate) fn forbidden(field: &str, message: impl Into<String>) -> Self {
        Self::new(field, ErrorType::Forbidden, message, None)
    }

    /// This error with its path put under `prefix` (`spec.versions[0].schema.openAPIV3Schema`).
    pub fn prefixed(mut self, prefix: &str) -> Self {
        self.field = join_path(prefix, &self.field);
        self
    }

    /// Upstream's `ErrorBody`: the text without the field path.
    pub fn body(&self) -> String {
        let mut s = String::from(self.error_type.text());
        let shows_value = !matches!(
            self.error_type,
            ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong
        );
        if shows_value {
            if let Some(v) = &self.bad_value {
                s.push_str(": ");
                s.push_str(&render_value(v));
            }
        }
        if !self.message.is_empty() {
            s.push_str(": ");
            s.push_str(&self.message);
        }
        s
    }
}

/// A value printed as upstream prints a bad value: numbers and booleans bare, strings
/// quoted, everything else as JSON.
fn render_value(v: &Value) -> String {
    match v {
        Value::Number(n) => crate::validate::format_number(n),
        Value::String(s) => go_quote(s),
        other => other.to_string(),
    }
}

/// A string quoted as Go's `%q` does for printable text (JSON escaping is the same for
/// the common cases).
pub(crate) fn go_quote(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = if self.field.is_empty() {
            "<nil>"
        } else {
            &self.field
        };
        write!(f, "{field}: {}", self.body())
    }
}

impl std::error::Error for FieldError {}

/// `parent.child`, or `child` at the root; an index or key segment (`[..]`) joins
/// without a dot.
pub(crate) fn join_path(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else if child.is_empty() {
        parent.to_owned()
    } else if child.starts_with('[') {
        format!("{parent}{child}")
    } else {
        format!("{parent}.{child}")
    }
}
