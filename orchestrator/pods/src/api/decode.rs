//! From bytes to typed objects at the edge: JSON or YAML bodies, `null`
//! read as absent (as Go decodes it), and serde errors turned into the
//! `Status` Kubernetes answers — an unknown field is refused by its path
//! (422), never dropped.

use serde_json::Value;

use super::kind::ApiObject;
use super::status::{ApiError, Cause};

/// Parses a request body: JSON, or YAML when the content type says so
/// (or the body does not start like JSON).
pub fn parse(body: &[u8], content_type: &str) -> Result<Value, ApiError> {
    if content_type.contains("protobuf") {
        return super::protobuf::decode(body);
    }
    if content_type.contains("cbor") {
        // client-go falls back to JSON on a 415 to CBOR.
        return Err(ApiError::unsupported_media_type(content_type));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not UTF-8: {e}")))?;
    let yaml = content_type.contains("yaml")
        || !text.trim_start().starts_with(['{', '[']) && !text.trim().is_empty();
    if yaml {
        serde_saphyr::from_str::<Value>(text)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
    } else {
        serde_json::from_str(text).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })
    }
}

/// Removes `null` members of objects, recursively: Kubernetes decodes
/// `field: null` as the field's zero value, like an absent field.
pub fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Decodes `value` as a `T`, checking its `apiVersion` and `kind` when
/// present. Unknown fields and missing required fields are 422s naming
/// the field; values of the wrong type are 400s naming the field.
pub fn typed<T: ApiObject>(mut value: Value) -> Result<T, ApiError> {
    strip_nulls(&mut value);
    let info = T::INFO;
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(kind) = value.get("kind").and_then(Value::as_str)
        && kind != info.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the object ({kind}) does not match the resource ({}: {})",
            info.plural, info.kind
        )));
    }
    if let Some(v) = value.get("apiVersion").and_then(Value::as_str)
        && v != info.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version of the object ({v}) does not match the resource ({}); herd serves {} as {}",
            info.plural,
            info.kind,
            info.api_version()
        )));
    }
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let join = |field: &str| {
            if path.is_empty() || path == "." {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            }
        };
        if let Some(field) = backticked(&message, "unknown field `") {
            // The path already ends at the unknown key for maps of structs.
            let field = if path.ends_with(field) {
                path.clone()
            } else {
                join(field)
            };
            ApiError::invalid(info.what(), &name, vec![Cause::unknown(field)])
        } else if let Some(field) = backticked(&message, "missing field `") {
            ApiError::invalid(info.what(), &name, vec![Cause::required(join(field))])
        } else {
            ApiError::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: {path}: {message}",
                info.kind,
                info.api_version(),
                info.kind
            ))
        }
    })
}

/// The text between `prefix` and the next backtick of `message`.
fn backticked<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.split_once(prefix)?.1;
    Some(rest.split_once('`')?.0)
}

/// An object as the API returns it: type meta set, resourceVersion from
/// the store.
pub fn to_value<T: ApiObject>(object: &T) -> Value {
    serde_json::to_value(object).expect("API objects serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Pod;

    fn pod(yaml: &str) -> Result<Pod, ApiError> {
        typed::<Pod>(parse(yaml.as_bytes(), "application/yaml").unwrap())
    }

    #[test]
    fn unknown_fields_are_refused_by_their_path() {
        let e = pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n  - name: a\n    image: x\n    bogus: 1\n",
        )
        .unwrap_err();
        assert_eq!(e.code, 422, "{e:?}");
        assert_eq!(
            e.details.causes[0].field, "spec.containers[0].bogus",
            "{e:?}"
        );
        let e = pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web, bogus: 1}\nspec: {containers: []}\n",
        )
        .unwrap_err();
        assert_eq!(e.details.causes[0].field, "metadata.bogus", "{e:?}");
    }

    #[test]
    fn missing_required_fields_are_invalid_and_wrong_types_bad_requests() {
        let e = pod("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {}\n").unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(e.details.causes[0].field, "spec.containers", "{e:?}");
        let e = pod("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: 3}\n")
            .unwrap_err();
        assert_eq!(e.code, 400, "{e:?}");
        assert!(e.message.contains("spec.containers"), "{e:?}");
    }

    #[test]
    fn nulls_read_as_absent_and_kinds_must_match() {
        let p = pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web, creationTimestamp: null, labels: null}\nspec: {containers: [{name: a, image: x}]}\nstatus: null\n",
        )
        .unwrap();
        assert_eq!(p.metadata.name, "web");
        let e = pod("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n").unwrap_err();
        assert_eq!(e.code, 400);
        let e = pod("apiVersion: apps/v1\nkind: Pod\nmetadata: {name: web}\n").unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        assert_eq!(parse(b"{\"a\":", "application/json").unwrap_err().code, 400);
        assert_eq!(parse(b"a: [b", "application/yaml").unwrap_err().code, 400);
    }
}
