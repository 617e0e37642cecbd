//! Errors as the Kubernetes API reports them: an HTTP status code and a
//! `Status` object (`reason`, `message`, `details.causes` naming fields),
//! which kubectl prints as it would for a real API server.

use serde::{Deserialize, Serialize};

/// One field that was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`,
    /// `FieldValueForbidden`, `FieldValueDuplicate`…
    pub reason: String,
    pub message: String,
    /// The field's path (`spec.containers[0].image`).
    pub field: String,
}

impl Cause {
    fn new(reason: &str, field: impl Into<String>, message: impl Into<String>) -> Cause {
        Cause {
            reason: reason.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, value: impl std::fmt::Display, why: &str) -> Cause {
        Cause::new(
            "FieldValueInvalid",
            field,
            format!("Invalid value: {:?}: {why}", value.to_string()),
        )
    }

    pub fn required(field: impl Into<String>) -> Cause {
        Cause::new("FieldValueRequired", field, "Required value")
    }

    pub fn forbidden(field: impl Into<String>, why: &str) -> Cause {
        Cause::new("FieldValueForbidden", field, format!("Forbidden: {why}"))
    }

    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Cause {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Cause::new(
            "FieldValueNotSupported",
            field,
            format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
        )
    }

    pub fn duplicate(field: impl Into<String>, value: &str) -> Cause {
        Cause::new(
            "FieldValueDuplicate",
            field,
            format!("Duplicate value: {value:?}"),
        )
    }

    /// A field herd does not implement (or Kubernetes does not know):
    /// refused, never dropped.
    pub fn unknown(field: impl Into<String>) -> Cause {
        Cause::new(
            "FieldValueForbidden",
            field,
            "Forbidden: unknown field: herd does not implement it",
        )
    }

    /// `field: message`, as kubectl prints a cause.
    pub fn line(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// What names the object an error is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Details {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
    #[serde(
        default,
        rename = "retryAfterSeconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_after_seconds: Option<u32>,
}

/// A `Status` answer, and the error type of the API machinery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// Boxed: errors travel every `Result` of the API machinery, which
    /// stays small this way.
    pub details: Box<Details>,
}

/// A kind's identity for error messages: `pods`, `""` group.
#[derive(Debug, Clone, Copy)]
pub struct What<'a> {
    pub group: &'a str,
    /// Plural resource name (`pods`, `deployments`).
    pub resource: &'a str,
    pub kind: &'a str,
}

impl What<'_> {
    /// `pods` or `deployments.apps`, as Kubernetes names a resource in errors.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn details(&self, name: &str) -> Box<Details> {
        Box::new(Details {
            name: name.to_owned(),
            group: self.group.to_owned(),
            kind: self.resource.to_owned(),
            ..Default::default()
        })
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: Box::default(),
        }
    }

    pub fn not_found(what: What<'_>, name: &str) -> ApiError {
        ApiError {
            details: what.details(name),
            ..ApiError::new(
                404,
                "NotFound",
                format!("{} {name:?} not found", what.qualified()),
            )
        }
    }

    pub fn already_exists(what: What<'_>, name: &str) -> ApiError {
        ApiError {
            details: what.details(name),
            ..ApiError::new(
                409,
                "AlreadyExists",
                format!("{} {name:?} already exists", what.qualified()),
            )
        }
    }

    /// An update whose resourceVersion is no longer current.
    pub fn conflict(what: What<'_>, name: &str) -> ApiError {
        ApiError {
            details: what.details(name),
            ..ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                    what.qualified()
                ),
            )
        }
    }

    /// 422: the object is not valid; `causes` name the fields.
    pub fn invalid(what: What<'_>, name: &str, causes: Vec<Cause>) -> ApiError {
        let lines: Vec<String> = causes.iter().map(Cause::line).collect();
        let message = match lines.len() {
            1 => format!("{} {name:?} is invalid: {}", what.kind, lines[0]),
            _ => format!("{} {name:?} is invalid: [{}]", what.kind, lines.join(", ")),
        };
        let mut details = what.details(name);
        details.kind = what.kind.to_owned();
        details.causes = causes;
        ApiError {
            details,
            ..ApiError::new(422, "Invalid", message)
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/merge-patch+json, application/strategic-merge-patch+json, application/json-patch+json (got {content_type:?})"
            ),
        )
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 410: a watch or list from a revision the store compacted away.
    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(what: What<'_>, name: &str, why: &str) -> ApiError {
        ApiError {
            details: what.details(name),
            ..ApiError::new(
                403,
                "Forbidden",
                format!("{} {name:?} is forbidden: {why}", what.qualified()),
            )
        }
    }

    /// 500: the store failed (unreachable, no leader…).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    /// 504/503-like: the store did not answer in time.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            details: Box::new(Details {
                retry_after_seconds: Some(1),
                ..Default::default()
            }),
            ..ApiError::new(503, "ServiceUnavailable", message)
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code == 404
    }

    pub fn is_conflict(&self) -> bool {
        self.code == 409 && self.reason == "Conflict"
    }

    pub fn is_already_exists(&self) -> bool {
        self.code == 409 && self.reason == "AlreadyExists"
    }

    /// The `Status` object the API answers with.
    pub fn status(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if *self.details != Details::default() {
            v["details"] = serde_json::to_value(&self.details).expect("details serialize");
        }
        v
    }

    /// Reads a `Status` body back (the `herd` verbs do).
    pub fn from_status(code: u16, body: &[u8]) -> ApiError {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            message: String,
            #[serde(default)]
            details: Option<Details>,
        }
        match serde_json::from_slice::<Body>(body) {
            Ok(b) => ApiError {
                code,
                reason: "",
                message: b.message,
                details: Box::new(b.details.unwrap_or_default()),
            },
            Err(_) => ApiError::new(code, "", String::from_utf8_lossy(body).trim().to_owned()),
        }
    }
}

/// The `Status` of a successful delete (answered for kinds whose deletion
/// leaves nothing to show).
pub fn success(what: What<'_>, name: &str, uid: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": what.group, "kind": what.resource, "uid": uid},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODS: What<'static> = What {
        group: "",
        resource: "pods",
        kind: "Pod",
    };

    #[test]
    fn errors_read_as_kubernetes_writes_them() {
        let e = ApiError::not_found(PODS, "web");
        assert_eq!(e.message, "pods \"web\" not found");
        assert_eq!(e.status()["reason"], "NotFound");
        assert_eq!(e.status()["code"], 404);
        let e = ApiError::invalid(PODS, "web", vec![Cause::unknown("spec.containers[0].foo")]);
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "Pod \"web\" is invalid: spec.containers[0].foo: Forbidden: unknown field: herd does not implement it"
        );
        assert_eq!(
            e.status()["details"]["causes"][0]["field"],
            "spec.containers[0].foo"
        );
        let back = ApiError::from_status(422, e.status().to_string().as_bytes());
        assert_eq!(back.message, e.message);
    }
}
