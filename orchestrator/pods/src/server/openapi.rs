//! `/openapi/v2` (JSON, or protobuf for kubectl 1.20) and `/openapi/v3`
//! (an index and one document per group version, for kubectl 1.32's
//! `explain` and its check that the server validates fields itself): the
//! kinds' schemas from [`crate::api::schema`] and, per kind, the paths
//! and operations with the `x-kubernetes-group-version-kind` extension
//! and the `fieldValidation` parameter kubectl looks for.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use super::discovery::{KUBE_MAJOR, KUBE_MINOR};
use crate::api::KindInfo;
use crate::api::kind;
use crate::api::schema::definitions;

fn info() -> Value {
    json!({"title": "Kubernetes", "version": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0-herd")})
}

fn gvk(k: &KindInfo) -> Value {
    json!({"group": k.group, "version": k.version, "kind": k.kind})
}

/// The query parameters of a write, in v2 or v3 form.
fn write_params(v3: bool) -> Vec<Value> {
    ["dryRun", "fieldManager", "fieldValidation"]
        .iter()
        .map(|name| {
            if v3 {
                json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
            } else {
                json!({"name": name, "in": "query", "type": "string", "uniqueItems": true})
            }
        })
        .collect()
}

fn body_ref(k: &KindInfo, v3: bool) -> Value {
    let name = definition_of(k);
    if v3 {
        json!({"$ref": format!("#/components/schemas/{name}")})
    } else {
        json!({"$ref": format!("#/definitions/{name}")})
    }
}

fn definition_of(k: &KindInfo) -> String {
    let group = if k.group.is_empty() { "core" } else { k.group };
    format!("io.k8s.api.{group}.{}.{}", k.version, k.kind)
}

fn operation(k: &KindInfo, action: &str, v3: bool, write: bool) -> Value {
    let mut op = json!({
        "operationId": format!("{action}{}", k.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(k),
        "responses": {"200": {"description": "OK"}},
    });
    if write {
        op["parameters"] = Value::Array(write_params(v3));
        if v3 {
            op["requestBody"] =
                json!({"content": {"application/json": {"schema": body_ref(k, true)}}});
        }
    }
    op
}

/// The paths of `k`: collection and item, with their operations.
fn paths_of(k: &KindInfo, v3: bool) -> Vec<(String, Value)> {
    let root = if k.group.is_empty() {
        format!("/api/{}", k.version)
    } else {
        format!("/apis/{}/{}", k.group, k.version)
    };
    let base = if k.namespaced {
        format!("{root}/namespaces/{{namespace}}/{}", k.plural)
    } else {
        format!("{root}/{}", k.plural)
    };
    let mut out = vec![
        (
            base.clone(),
            json!({
                "get": operation(k, "list", v3, false),
                "post": operation(k, "post", v3, true),
            }),
        ),
        (
            format!("{base}/{{name}}"),
            json!({
                "get": operation(k, "get", v3, false),
                "put": operation(k, "put", v3, true),
                "patch": operation(k, "patch", v3, true),
                "delete": operation(k, "delete", v3, false),
            }),
        ),
    ];
    if k.status {
        out.push((
            format!("{base}/{{name}}/status"),
            json!({
                "get": operation(k, "get", v3, false),
                "put": operation(k, "put", v3, true),
                "patch": operation(k, "patch", v3, true),
            }),
        ));
    }
    out
}

/// The OpenAPI v2 document.
pub fn v2() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let paths: Map<String, Value> = kind::all()
            .iter()
            .flat_map(|k| paths_of(k, false))
            .collect();
        json!({
            "swagger": "2.0",
            "info": info(),
            "paths": paths,
            "definitions": definitions(),
        })
    })
}

/// The OpenAPI v2 document as protobuf.
pub fn v2_protobuf() -> &'static [u8] {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| super::openapi_pb::encode(v2()))
}

fn v3_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                *r = r.replace("#/definitions/", "#/components/schemas/");
            }
            m.values_mut().for_each(v3_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(v3_refs),
        _ => {}
    }
}

/// The `group/version` key of the v3 index (`api/v1`, `apis/apps/v1`).
fn gv_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The OpenAPI v3 document of one group version.
pub fn v3(group: &str, version: &str) -> Value {
    let paths: Map<String, Value> = kind::all()
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .flat_map(|k| paths_of(k, true))
        .collect();
    let mut schemas = Value::Object(definitions().clone());
    v3_refs(&mut schemas);
    json!({
        "openapi": "3.0.0",
        "info": info(),
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// A short content hash (for the v3 index's cache-busting URLs).
fn hash(text: &str) -> String {
    // FNV-1a, 64 bits: stable across builds and processes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016X}")
}

/// `/openapi/v3`: where each group version's document is.
pub fn v3_index() -> Value {
    let mut gvs: Vec<(&str, &str)> = kind::all().iter().map(|k| (k.group, k.version)).collect();
    gvs.dedup();
    let paths: Map<String, Value> = gvs
        .into_iter()
        .map(|(g, v)| {
            let key = gv_key(g, v);
            let url = format!("/openapi/v3/{key}?hash={}", hash(&v3(g, v).to_string()));
            (key, json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_documents_advertise_field_validation_per_kind() {
        let doc = v3("apps", "v1");
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"].is_object());
        assert!(!doc.to_string().contains("#/definitions/"));
        let index = v3_index();
        assert!(
            index["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/api/v1?hash=")
        );
    }

    #[test]
    fn definition_names_match_the_schemas() {
        for k in kind::all() {
            assert!(
                definitions().contains_key(&definition_of(k)),
                "{}",
                definition_of(k)
            );
        }
    }
}
