//! The OpenAPI v2 document as the protobuf kubectl 1.20 asks for
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`, the
//! gnostic `openapi.v2.Document`): the messages and field numbers of the
//! parts herd fills (info and definitions), converted from the JSON form.

use prost::Message;
use serde_json::Value;

#[derive(Clone, PartialEq, Message)]
struct Document {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "2")]
    info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    definitions: Option<Definitions>,
}

#[derive(Clone, PartialEq, Message)]
struct Info {
    #[prost(string, tag = "1")]
    title: String,
    #[prost(string, tag = "2")]
    version: String,
}

#[derive(Clone, PartialEq, Message)]
struct Paths {}

#[derive(Clone, PartialEq, Message)]
struct Definitions {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
struct NamedSchema {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
struct Schema {
    #[prost(string, tag = "1")]
    r#ref: String,
    #[prost(string, tag = "2")]
    format: String,
    #[prost(string, tag = "4")]
    description: String,
    #[prost(string, repeated, tag = "19")]
    required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    r#enum: Vec<Any>,
    #[prost(message, optional, boxed, tag = "21")]
    additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    properties: Option<Properties>,
    #[prost(message, repeated, tag = "31")]
    vendor_extension: Vec<NamedAny>,
}

/// A oneof of a schema (1) or a boolean (2); encoded as two optional
/// fields, which is the same on the wire.
#[derive(Clone, PartialEq, Message)]
struct AdditionalPropertiesItem {
    #[prost(message, optional, tag = "1")]
    schema: Option<Schema>,
    #[prost(bool, optional, tag = "2")]
    boolean: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    value: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, Message)]
struct Properties {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
struct NamedAny {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Any>,
}

/// gnostic's `Any`: the value as YAML text (JSON is YAML).
#[derive(Clone, PartialEq, Message)]
struct Any {
    #[prost(string, tag = "2")]
    yaml: String,
}

fn named(map: Option<&serde_json::Map<String, Value>>) -> Vec<NamedSchema> {
    map.into_iter()
        .flatten()
        .map(|(name, s)| NamedSchema {
            name: name.clone(),
            value: Some(schema(s)),
        })
        .collect()
}

fn schema(v: &Value) -> Schema {
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Schema {
        r#ref: s("$ref"),
        format: s("format"),
        description: s("description"),
        required: v
            .get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        r#enum: v
            .get("enum")
            .and_then(Value::as_array)
            .map(|e| {
                e.iter()
                    .map(|x| Any {
                        yaml: x.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        additional_properties: v.get("additionalProperties").map(|a| {
            Box::new(match a {
                Value::Bool(b) => AdditionalPropertiesItem {
                    schema: None,
                    boolean: Some(*b),
                },
                other => AdditionalPropertiesItem {
                    schema: Some(schema(other)),
                    boolean: None,
                },
            })
        }),
        r#type: v.get("type").and_then(Value::as_str).map(|t| TypeItem {
            value: vec![t.to_owned()],
        }),
        items: v.get("items").map(|i| ItemsItem {
            schema: vec![schema(i)],
        }),
        all_of: v
            .get("allOf")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(schema).collect())
            .unwrap_or_default(),
        properties: v
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| Properties {
                additional_properties: named(Some(p)),
            }),
        vendor_extension: v
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("x-"))
            .map(|(k, x)| NamedAny {
                name: k.clone(),
                value: Some(Any {
                    yaml: x.to_string(),
                }),
            })
            .collect(),
    }
}

/// The protobuf form of an OpenAPI v2 JSON document (its info and definitions).
pub fn encode(doc: &Value) -> Vec<u8> {
    Document {
        swagger: "2.0".into(),
        info: Some(Info {
            title: doc["info"]["title"].as_str().unwrap_or("Kubernetes").into(),
            version: doc["info"]["version"].as_str().unwrap_or_default().into(),
        }),
        paths: Some(Paths {}),
        definitions: Some(Definitions {
            additional_properties: named(doc.get("definitions").and_then(Value::as_object)),
        }),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_round_trip_through_protobuf() {
        let doc = serde_json::json!({
            "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "definitions": {"io.k8s.api.core.v1.Pod": {
                "type": "object",
                "x-kubernetes-group-version-kind": [{"group": "", "kind": "Pod", "version": "v1"}],
                "properties": {"spec": {"$ref": "#/definitions/io.k8s.api.core.v1.PodSpec", "description": "d"}},
                "additionalProperties": {"type": "string"}
            }}
        });
        let bytes = encode(&doc);
        let back = Document::decode(bytes.as_slice()).unwrap();
        let pod = back.definitions.unwrap().additional_properties.remove(0);
        assert_eq!(pod.name, "io.k8s.api.core.v1.Pod");
        let s = pod.value.unwrap();
        assert_eq!(s.r#type.unwrap().value, ["object"]);
        assert_eq!(
            s.vendor_extension[0].name,
            "x-kubernetes-group-version-kind"
        );
        assert!(
            s.vendor_extension[0]
                .value
                .as_ref()
                .unwrap()
                .yaml
                .contains("\"Pod\"")
        );
        let spec = &s.properties.unwrap().additional_properties[0];
        assert_eq!(
            spec.value.as_ref().unwrap().r#ref,
            "#/definitions/io.k8s.api.core.v1.PodSpec"
        );
        assert!(s.additional_properties.unwrap().schema.is_some());
    }
}
