//! Kubernetes' protobuf encoding of request bodies, as kubectl 1.32's
//! typed clients send them (`create namespace`, `create deployment` and
//! `create service …` send nothing else: no discovery comes first that
//! could steer them to JSON). The envelope is `k8s\0` and a
//! `runtime.Unknown` (type meta, then the object's own bytes); the object
//! is decoded by the field numbers of `k8s.io/api/{core,apps}/v1/
//! generated.proto` into the JSON the rest of the API takes, where
//! validation refuses what herd does not implement by name. A field
//! number not in these tables, or a non-empty field herd has no decoding
//! for, is refused by its path, never dropped, as an unknown JSON field is.

use serde_json::{Map, Value};

use super::status::ApiError;

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8] = b"k8s\0";

mod schema;

use schema::{Field, QUANTITY_ENTRY, STR_ENTRY, TYPE_META, Ty, f, schema};

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
                "herd decodes protobuf bodies only for v1 Namespace and Service and apps/v1 Deployment; send {kind} ({api_version}) as JSON or YAML"
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
            (Ty::OptInt, 0) => Some(Value::from(r.varint()? as i64)),
            (Ty::Bool, 0) => (r.varint()? != 0).then_some(Value::Bool(true)),
            (Ty::OptBool, 0) => Some(Value::Bool(r.varint()? != 0)),
            (Ty::IntOrStr, 2) => int_or_string(r.bytes()?, &here)?,
            (Ty::Inline(sub), 2) => {
                out.extend(message(r.bytes()?, sub, path)?);
                None
            }
            (Ty::Unsupported, 2) => {
                if !r.bytes()?.is_empty() {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        format!("{here}: herd does not implement this field"),
                    ));
                }
                None
            }
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
            (Ty::StrMap | Ty::QuantityMap, 2) => {
                // A map entry: a key and a string, or a Quantity holding one.
                let quantity = matches!(field.ty, Ty::QuantityMap);
                let entry_fields = if quantity { QUANTITY_ENTRY } else { STR_ENTRY };
                let entry = message(r.bytes()?, entry_fields, &here)?;
                let key = entry.get("key").and_then(Value::as_str).unwrap_or_default();
                let value = match quantity {
                    true => entry.get("value").and_then(|q| q.get("string")),
                    false => entry.get("value"),
                };
                out.entry(field.name)
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .expect("a map field is an object")
                    .insert(
                        key.to_owned(),
                        value.cloned().unwrap_or(Value::String(String::new())),
                    );
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

/// `intstr.IntOrString`: type 0 carries `intVal`, type 1 `strVal`; an
/// unset one (0 or "") is left out.
fn int_or_string(bytes: &[u8], path: &str) -> Result<Option<Value>, ApiError> {
    let v = message(
        bytes,
        &[
            f(1, "type", Ty::Int),
            f(2, "intVal", Ty::Int),
            f(3, "strVal", Ty::Str),
        ],
        path,
    )?;
    Ok(match v.get("type").and_then(Value::as_i64).unwrap_or(0) {
        0 => v.get("intVal").cloned(),
        1 => v.get("strVal").cloned(),
        t => return Err(bad(format!("{path}: IntOrString of type {t}"))),
    })
}

#[cfg(test)]
mod tests;
