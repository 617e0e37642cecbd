//! `meta.k8s.io/v1` Tables: what `kubectl get` asks the server for
//! (server-side printing), built from each kind's columns and rows.

use serde_json::{Value, json};

use super::kind::ApiObject;

/// What each row carries besides its cells (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    /// The object's metadata (kubectl's default: for `--show-labels`, `-L`, namespaces).
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: &str) -> IncludeObject {
        match s {
            "None" => IncludeObject::None,
            "Object" => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// The column definitions of `T`'s table.
pub fn columns<T: ApiObject>() -> Value {
    T::INFO
        .columns
        .iter()
        .map(|c| {
            let mut col = json!({
                "name": c.name,
                "type": c.kind,
                "format": "",
                "description": c.description,
                "priority": c.priority,
            });
            if c.name == "Name" {
                col["format"] = json!("name");
            }
            col
        })
        .collect()
}

/// One row of `object`.
pub fn row<T: ApiObject>(object: &T, include: IncludeObject) -> Value {
    let mut row = json!({ "cells": object.row() });
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object.meta(),
            });
        }
        IncludeObject::Object => row["object"] = super::decode::to_value(object),
    }
    row
}

/// A table of `objects` at `resource_version`.
pub fn table<T: ApiObject>(objects: &[T], resource_version: i64, include: IncludeObject) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string()},
        "columnDefinitions": columns::<T>(),
        "rows": objects.iter().map(|o| row(o, include)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Pod;

    #[test]
    fn every_row_has_a_cell_per_column() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a", "image": "x"}]},
            "status": {"phase": "Running", "podIP": "10.1.0.2"}
        }))
        .unwrap();
        let t = table(&[pod], 7, IncludeObject::Metadata);
        let cols = t["columnDefinitions"].as_array().unwrap().len();
        let cells = t["rows"][0]["cells"].as_array().unwrap();
        assert_eq!(cells.len(), cols);
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "0/1");
        assert_eq!(cells[2], "Running");
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "web");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
    }
}
