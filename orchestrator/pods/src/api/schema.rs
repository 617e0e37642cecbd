//! The schemas of the kinds, generated from the very types that decode
//! requests (so OpenAPI, `kubectl explain`, client-side validation and the
//! strategic-merge patch metadata can never disagree with what the server
//! accepts), shaped as Kubernetes' OpenAPI definitions: named
//! `io.k8s.api.core.v1.Pod`, `$ref`s to `#/definitions/…`, the
//! `x-kubernetes-group-version-kind` and patch-strategy extensions.

use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::kind::ApiObject;
use super::{
    Deployment, Endpoints, Event, Namespace, Node, Pod, ReplicaSet, ReplicationController, Scale,
    Service,
};

/// Every definition, by name (`io.k8s.api.core.v1.Pod`).
pub fn definitions() -> &'static Map<String, Value> {
    static DEFS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFS.get_or_init(build)
}

/// The definition name of `T`.
pub fn name_of<T: ApiObject>() -> String {
    T::schema_name().into_owned()
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!([{"group": group, "version": version, "kind": kind}])
}

fn build() -> Map<String, Value> {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/definitions".into();
        s.meta_schema = None;
    });
    let mut generator = settings.into_generator();
    let mut roots = Vec::new();
    macro_rules! root {
        ($($t:ty),*) => {$(
            generator.subschema_for::<$t>();
            roots.push((name_of::<$t>(), <$t as ApiObject>::INFO));
        )*};
    }
    root!(
        Pod,
        ReplicationController,
        Service,
        Endpoints,
        Namespace,
        Node,
        Event,
        ReplicaSet,
        Deployment
    );
    generator.subschema_for::<Scale>();
    let mut defs = generator.take_definitions(false);
    for schema in defs.values_mut() {
        openapi_shape(schema);
    }
    for (name, info) in roots {
        if let Some(Value::Object(def)) = defs.get_mut(&name) {
            def.insert(
                "x-kubernetes-group-version-kind".into(),
                gvk(info.group, info.version, info.kind),
            );
        }
    }
    if let Some(Value::Object(def)) = defs.get_mut("io.k8s.api.autoscaling.v1.Scale") {
        def.insert(
            "x-kubernetes-group-version-kind".into(),
            gvk("autoscaling", "v1", "Scale"),
        );
    }
    defs
}

/// Rewrites a JSON Schema (2020-12, as schemars writes it) into the
/// OpenAPI v2 shape Kubernetes publishes: `Option<T>` as plain `T`, `$ref`
/// with its description beside it, no `additionalProperties: false`, no
/// defaults or unsigned minimums.
fn openapi_shape(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    // `type: [X, "null"]` → `type: X`.
    if let Some(Value::Array(types)) = map.get("type") {
        let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        if kept.len() == 1 {
            map.insert("type".into(), kept[0].clone());
        }
    }
    // `anyOf: [{$ref}, {type: null}]` → `$ref`.
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(alts)) = map.get(key) {
            let kept: Vec<Value> = alts
                .iter()
                .filter(|a| a.get("type") != Some(&json!("null")))
                .cloned()
                .collect();
            if kept.len() == 1
                && let Value::Object(inner) = kept[0].clone()
            {
                map.remove(key);
                for (k, v) in inner {
                    map.entry(k).or_insert(v);
                }
            }
        }
    }
    if let Some(Value::String(r)) = map.get("$ref") {
        let r = r.replace("#/$defs/", "#/definitions/");
        map.insert("$ref".into(), Value::String(r));
    }
    if map.get("additionalProperties") == Some(&Value::Bool(false)) {
        map.remove("additionalProperties");
    }
    map.remove("default");
    map.remove("minimum");
    map.remove("$schema");
    map.remove("title");
    for v in map.values_mut() {
        match v {
            Value::Object(_) => openapi_shape(v),
            Value::Array(items) => items.iter_mut().for_each(openapi_shape),
            _ => {}
        }
    }
}

/// The definition a `$ref` points at.
pub fn resolve(schema: &Value) -> &Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/definitions/")
            .and_then(|name| definitions().get(name))
            .unwrap_or(schema),
        None => schema,
    }
}

/// The schema of `field` of an object schema (following `$ref`s).
pub fn property<'a>(schema: &'a Value, field: &str) -> Option<&'a Value> {
    resolve(schema).get("properties")?.get(field)
}

/// The schema of the elements of an array schema (following `$ref`s).
pub fn items(schema: &Value) -> Option<&Value> {
    resolve(schema).get("items").map(resolve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_look_like_kubernetes() {
        let defs = definitions();
        let pod = &defs["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod",
            "{pod}"
        );
        assert_eq!(
            pod["properties"]["spec"]["$ref"], "#/definitions/io.k8s.api.core.v1.PodSpec",
            "{pod}"
        );
        let spec = &defs["io.k8s.api.core.v1.PodSpec"];
        let containers = &spec["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["type"], "array");
        assert!(
            spec["required"]
                .as_array()
                .unwrap()
                .contains(&json!("containers"))
        );
        // Option<Probe> is a plain reference with its description.
        let c = &defs["io.k8s.api.core.v1.Container"]["properties"]["livenessProbe"];
        assert_eq!(c["$ref"], "#/definitions/io.k8s.api.core.v1.Probe", "{c}");
        assert!(c["description"].is_string(), "{c}");
        assert!(defs.contains_key("io.k8s.apimachinery.pkg.util.intstr.IntOrString"));
        let text = serde_json::to_string(defs).unwrap();
        assert!(!text.contains("\"null\""), "no null types left");
        assert!(!text.contains("$defs"), "refs point at #/definitions");
    }
}
