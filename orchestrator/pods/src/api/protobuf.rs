//! Kubernetes' protobuf encoding of request bodies, as kubectl 1.32's
//! typed clients send them (`create namespace` sends nothing else: no
//! discovery comes first that could steer it to JSON). The envelope is
//! `k8s\0` and a `runtime.Unknown` (type meta, then the object's own
//! bytes); the object is decoded by the field numbers of
//! `k8s.io/api/core/v1/generated.proto` into the JSON the rest of the
//! API takes. A field number herd does not know is refused by its path,
//! never dropped, as an unknown JSON field is.

use serde_json::{Map, Value};

use super::status::ApiError;

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug, Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    /// `metav1.Time`: seconds and nanos, as RFC 3339.
    Time,
    /// `map<string, string>`.
    StrMap,
    Msg(&'static [Field]),
}

#[derive(Debug, Clone, Copy)]
struct Field {
    tag: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
}

const fn f(tag: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        tag,
        name,
        ty,
        repeated: false,
    }
}

const fn list(tag: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        tag,
        name,
        ty,
        repeated: true,
    }
}

const OWNER_REFERENCE: &[Field] = &[
    f(1, "kind", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(5, "apiVersion", Ty::Str),
    f(6, "controller", Ty::Bool),
    f(7, "blockOwnerDeletion", Ty::Bool),
];

const OBJECT_META: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "generateName", Ty::Str),
    f(3, "namespace", Ty::Str),
    f(4, "selfLink", Ty::Str),
    f(5, "uid", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "generation", Ty::Int),
    f(8, "creationTimestamp", Ty::Time),
    f(9, "deletionTimestamp", Ty::Time),
    f(10, "deletionGracePeriodSeconds", Ty::Int),
    f(11, "labels", Ty::StrMap),
    f(12, "annotations", Ty::StrMap),
    list(13, "ownerReferences", Ty::Msg(OWNER_REFERENCE)),
    list(14, "finalizers", Ty::Str),
];

const NAMESPACE: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(&[list(1, "finalizers", Ty::Str)])),
    f(3, "status", Ty::Msg(&[f(1, "phase", Ty::Str)])),
];

const TYPE_META: &[Field] = &[f(1, "apiVersion", Ty::Str), f(2, "kind", Ty::Str)];

/// The kinds whose protobuf form herd decodes, by apiVersion and kind.
fn schema(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    match (api_version, kind) {
        ("v1", "Namespace") => Some(NAMESPACE),
        _ => None,
    }
}

/// Why a body could not be read.
fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(format!(
        "the protobuf body could not be decoded: {}",
        message.into()
    ))
}

/// Reads a protobuf body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("it does not start with the k8s\\0 envelope"))?;
    let mut type_meta = Map::new();
    let mut raw: Option<&[u8]> = None;
    let mut content_encoding = String::new();
    let mut r = Reader(rest);
    while !r.0.is_empty() {
        let (tag, wire) = r.key()?;
        match (tag, wire) {
            (1, 2) => type_meta = message(r.bytes()?, TYPE_META, "typeMeta")?,
            (2, 2) => raw = Some(r.bytes()?),
            (3, 2) => content_encoding = r.string("contentEncoding")?,
            (4, 2) => {
                r.bytes()?;
            }
            _ => return Err(bad(format!("unknown envelope field {tag}"))),
        }
    }
    if !content_encoding.is_empty() {
        return Err(bad(format!(
            "content encoding {content_encoding:?} is not supported"
        )));
    }
    let api_version = type_meta
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let kind = type_meta
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let fields = schema(&api_version, &kind).ok_or_else(|| {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "herd decodes protobuf bodies only for v1 Namespace; send {kind} ({api_version}) as JSON or YAML"
            ),
        )
    })?;
    let mut object = message(raw.unwrap_or_default(), fields, "")?;
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(object))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self
                .0
                .split_first()
                .ok_or_else(|| bad("truncated varint"))?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint too long"))
    }

    fn key(&mut self) -> Result<(u64, u64), ApiError> {
        let k = self.varint()?;
        Ok((k >> 3, k & 7))
    }

    fn bytes(&mut self) -> Result<&'a [u8], ApiError> {
        let n = usize::try_from(self.varint()?).map_err(|_| bad("length too large"))?;
        if n > self.0.len() {
            return Err(bad("truncated field"));
        }
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(b)
    }

    fn string(&mut self, path: &str) -> Result<String, ApiError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| bad(format!("{path}: not UTF-8")))
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// Decodes one message by `fields`; zero values are left out, as Go's
/// JSON leaves out `omitempty` fields.
fn message(bytes: &[u8], fields: &[Field], path: &str) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    let mut r = Reader(bytes);
    while !r.0.is_empty() {
        let (tag, wire) = r.key()?;
        let Some(field) = fields.iter().find(|f| f.tag == tag) else {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!(
                    "{}: field number {tag} is not a field herd implements",
                    if path.is_empty() { "<object>" } else { path }
                ),
            ));
        };
        let here = join(path, field.name);
        let value = match (field.ty, wire) {
            (Ty::Str, 2) => {
                let s = r.string(&here)?;
                (!s.is_empty() || field.repeated).then_some(Value::String(s))
            }
            (Ty::Int, 0) => {
                let v = r.varint()? as i64;
                (v != 0).then(|| Value::from(v))
            }
            (Ty::Bool, 0) => Some(Value::Bool(r.varint()? != 0)),
            (Ty::Time, 2) => {
                let t = message(
                    r.bytes()?,
                    &[f(1, "seconds", Ty::Int), f(2, "nanos", Ty::Int)],
                    &here,
                )?;
                t.get("seconds").and_then(Value::as_i64).and_then(|s| {
                    let at = std::time::UNIX_EPOCH
                        .checked_add(std::time::Duration::from_secs(u64::try_from(s).ok()?))?;
                    Some(Value::String(
                        humantime::format_rfc3339_seconds(at).to_string(),
                    ))
                })
            }
            (Ty::StrMap, 2) => {
                let entry = message(
                    r.bytes()?,
                    &[f(1, "key", Ty::Str), f(2, "value", Ty::Str)],
                    &here,
                )?;
                let key = entry
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let value = entry
                    .get("value")
                    .cloned()
                    .unwrap_or(Value::String(String::new()));
                out.entry(field.name)
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .expect("a map field is an object")
                    .insert(key, value);
                None
            }
            (Ty::Msg(sub), 2) => Some(Value::Object(message(r.bytes()?, sub, &here)?)),
            _ => {
                return Err(bad(format!(
                    "{here}: wire type {wire} does not match the field"
                )));
            }
        };
        if let Some(v) = value {
            if field.repeated {
                out.entry(field.name)
                    .or_insert_with(|| Value::Array(Vec::new()))
                    .as_array_mut()
                    .expect("a repeated field is an array")
                    .push(v);
            } else {
                out.insert(field.name.to_owned(), v);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `kubectl create namespace capx` (kubectl 1.32.4), captured.
    const CREATE_NAMESPACE: &str = "6b3873000a0f0a02763112094e616d657370616365121c0a140a046361707812001a0022002a0032003800420012001a020a001a002200";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn kubectl_132_create_namespace_decodes() {
        let v = decode(&unhex(CREATE_NAMESPACE)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "capx"}, "spec": {}, "status": {}})
        );
    }

    #[test]
    fn labels_owners_and_times_decode() {
        // metadata{name "n", labels{a: b}, creationTimestamp{seconds 1}, ownerReferences[{kind K, controller true}]}
        let meta = [
            &[0x0a, 0x01, b'n'][..],
            &[0x5a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'b'],
            &[0x42, 0x02, 0x08, 0x01],
            &[0x6a, 0x05, 0x0a, 0x01, b'K', 0x30, 0x01],
        ]
        .concat();
        let mut raw = vec![0x0a, meta.len() as u8];
        raw.extend(&meta);
        let mut body = MAGIC.to_vec();
        body.extend([0x0a, 0x0f, 0x0a, 0x02, b'v', b'1', 0x12, 0x09]);
        body.extend(b"Namespace");
        body.extend([0x12, raw.len() as u8]);
        body.extend(&raw);
        let v = decode(&body).unwrap();
        assert_eq!(
            v["metadata"],
            json!({"name": "n", "labels": {"a": "b"}, "creationTimestamp": "1970-01-01T00:00:01Z",
                   "ownerReferences": [{"kind": "K", "controller": true}]})
        );
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused() {
        // The captured namespace with metadata field 99 (a varint) added.
        let mut body = unhex("6b3873000a0f0a02763112094e616d657370616365121f0a170a0463617078");
        body.extend([0x98, 0x06, 0x01]);
        body.extend(unhex("12001a0022002a0032003800420012001a020a00"));
        let e = decode(&body).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message.contains("metadata: field number 99"),
            "{}",
            e.message
        );
        let mut pod = MAGIC.to_vec();
        pod.extend([0x0a, 0x09, 0x0a, 0x02, b'v', b'1', 0x12, 0x03]);
        pod.extend(b"Pod");
        let e = decode(&pod).unwrap_err();
        assert_eq!(e.code, 415);
        assert!(decode(b"{}").is_err());
    }
}
