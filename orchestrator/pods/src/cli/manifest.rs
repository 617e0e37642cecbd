//! Manifests at the edge: `-f FILE|DIR|-` read into one object per YAML
//! or JSON document (`---`-separated documents and `kind: List` items
//! each their own), each resolved to a kind herd serves — and any file,
//! document, kind or name that is wrong named in the error.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::api::KindInfo;
use crate::api::kind;

/// One object from a manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file it came from (`-` for stdin).
    pub source: String,
    /// Its document in that file, from 1 (empty documents not counted).
    pub document: usize,
    pub kind: &'static KindInfo,
    pub object: Value,
}

impl Manifest {
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// Where it lives: its own namespace, else `namespace` (the `-n` flag).
    pub fn namespace(&self, flag: Option<&str>) -> Result<String, ManifestError> {
        if !self.kind.namespaced {
            return Ok(String::new());
        }
        let own = self.object["metadata"]["namespace"]
            .as_str()
            .filter(|s| !s.is_empty());
        match (own, flag) {
            (Some(own), Some(flag)) if own != flag => Err(ManifestError::Namespace {
                source_name: self.source.clone(),
                document: self.document,
                own: own.to_owned(),
                flag: flag.to_owned(),
            }),
            (Some(ns), _) | (None, Some(ns)) => Ok(ns.to_owned()),
            (None, None) => Ok("default".to_owned()),
        }
    }
}

/// What is wrong with a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: document {document}: {message}")]
    Object {
        path: String,
        document: usize,
        message: String,
    },
    #[error(
        "{source_name}: document {document}: the namespace of the object ({own:?}) does not match --namespace {flag:?}"
    )]
    Namespace {
        source_name: String,
        document: usize,
        own: String,
        flag: String,
    },
    #[error("{0}: no .yaml, .yml or .json files in this directory")]
    EmptyDir(String),
}

/// Reads every object of `paths` (files, directories of `.yaml`/`.yml`/
/// `.json` files in name order, or `-` for stdin), in order.
pub async fn load(paths: &[PathBuf]) -> Result<Vec<Manifest>, ManifestError> {
    let mut out = Vec::new();
    for path in paths {
        for (name, text) in read(path).await? {
            out.extend(parse(&name, &text)?);
        }
    }
    Ok(out)
}

async fn read(path: &Path) -> Result<Vec<(String, String)>, ManifestError> {
    let shown = path.display().to_string();
    let err = |source| ManifestError::Read {
        path: shown.clone(),
        source,
    };
    if shown == "-" {
        // Reading stdin blocks: off the runtime.
        let text = tokio::task::spawn_blocking(|| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
        })
        .await
        .map_err(|e| err(std::io::Error::other(e)))?
        .map_err(err)?;
        return Ok(vec![("-".to_owned(), text)]);
    }
    let meta = tokio::fs::metadata(path).await.map_err(err)?;
    if !meta.is_dir() {
        let text = tokio::fs::read_to_string(path).await.map_err(err)?;
        return Ok(vec![(shown, text)]);
    }
    let mut entries = tokio::fs::read_dir(path).await.map_err(err)?;
    let mut files = Vec::new();
    while let Some(e) = entries.next_entry().await.map_err(err)? {
        let p = e.path();
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if matches!(ext, "yaml" | "yml" | "json") && e.file_type().await.map_err(err)?.is_file() {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(ManifestError::EmptyDir(shown));
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = tokio::fs::read_to_string(&f)
            .await
            .map_err(|source| ManifestError::Read {
                path: f.display().to_string(),
                source,
            })?;
        out.push((f.display().to_string(), text));
    }
    Ok(out)
}

/// The objects of one file's text.
pub fn parse(path: &str, text: &str) -> Result<Vec<Manifest>, ManifestError> {
    let documents: Vec<Value> = if text.trim_start().starts_with('{') {
        let mut docs = Vec::new();
        for doc in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            docs.push(doc.map_err(|e| ManifestError::Syntax {
                path: path.to_owned(),
                message: format!("not JSON: {e}"),
            })?);
        }
        docs
    } else {
        serde_saphyr::from_multiple::<Value>(text).map_err(|e| ManifestError::Syntax {
            path: path.to_owned(),
            message: format!("not YAML: {e}"),
        })?
    };
    let mut out = Vec::new();
    for (i, doc) in documents.into_iter().enumerate() {
        let document = i + 1;
        if doc.is_null() {
            continue;
        }
        let items = match doc.get("items") {
            Some(Value::Array(items))
                if doc["kind"].as_str().is_some_and(|k| k.ends_with("List")) =>
            {
                items.clone()
            }
            _ => vec![doc],
        };
        for object in items {
            out.push(resolve(path, document, object)?);
        }
    }
    Ok(out)
}

/// The kind `object` names, if herd serves it at the version it names.
fn resolve(path: &str, document: usize, object: Value) -> Result<Manifest, ManifestError> {
    let bad = |message: String| ManifestError::Object {
        path: path.to_owned(),
        document,
        message,
    };
    if !object.is_object() {
        return Err(bad(format!("not an object: {object}")));
    }
    let kind_name = object["kind"]
        .as_str()
        .ok_or_else(|| bad("the object has no kind".into()))?;
    let api_version = object["apiVersion"]
        .as_str()
        .ok_or_else(|| bad(format!("the {kind_name} has no apiVersion")))?;
    let info = kind::all()
        .iter()
        .copied()
        .find(|k| k.kind == kind_name)
        .ok_or_else(|| {
            bad(format!(
                "herd does not serve kind {kind_name:?} (it serves {})",
                kind::all()
                    .iter()
                    .map(|k| k.kind)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    if info.api_version() != api_version {
        return Err(bad(format!(
            "herd serves {kind_name} as {}, not {api_version}",
            info.api_version()
        )));
    }
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        return Err(bad(format!("the {kind_name} has no metadata.name")));
    }
    Ok(Manifest {
        source: path.to_owned(),
        document,
        kind: info,
        object,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_and_lists_become_objects_in_order() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: b}}\n\
                    - {apiVersion: apps/v1, kind: Deployment, metadata: {name: c}}\n---\n";
        let got = parse("x.yaml", text).unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|m| (m.kind.kind, m.name(), m.document))
            .collect();
        assert_eq!(
            names,
            [("Service", "a", 1), ("Pod", "b", 2), ("Deployment", "c", 2)]
        );
        let json = parse(
            "x.json",
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"}}"#,
        )
        .unwrap();
        assert_eq!(json[0].name(), "j");
    }

    #[test]
    fn errors_name_the_file_the_document_and_what_is_wrong() {
        let e = parse(
            "x.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\nkind: [\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("x.yaml: not YAML"), "{e}");
        let e = parse("d.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("d.yaml: document 2: herd does not serve kind \"CronJob\""),
            "{e}"
        );
        let e = parse(
            "e.yaml",
            "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: a}\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "e.yaml: document 1: herd serves Deployment as apps/v1, not extensions/v1beta1"
        );
        let e = parse("f.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "f.yaml: document 1: the Pod has no metadata.name");
    }

    #[test]
    fn the_namespace_flag_must_agree_with_the_object() {
        let m = &parse(
            "x.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: one}\n",
        )
        .unwrap()[0];
        assert_eq!(m.namespace(None).unwrap(), "one");
        assert_eq!(m.namespace(Some("one")).unwrap(), "one");
        assert!(m.namespace(Some("two")).is_err());
        let n = &parse(
            "x.yaml",
            "apiVersion: v1\nkind: Node\nmetadata: {name: node1}\n",
        )
        .unwrap()[0];
        assert_eq!(n.namespace(Some("two")).unwrap(), "");
    }
}
