//! `herd scale` (the `scale` subresource) and `herd label` (a merge
//! patch of `metadata.labels`, refusing to overwrite without
//! `--overwrite`, as kubectl).

use serde_json::{Map, Value, json};

use super::client::{self, MERGE_PATCH};
use super::{Conn, kind_and_name, shown};

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// rc, rs or deploy (or KIND/NAME).
    pub kind: String,
    pub name: Option<String>,
    /// The replica count wanted.
    #[arg(long)]
    pub replicas: u32,
}

pub async fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    let api = args.conn.api().await?;
    let (kind, name) = kind_and_name(&args.kind, args.name.as_deref())?;
    if !kind.scale {
        anyhow::bail!("{} cannot be scaled (rc, rs and deploy can)", kind.plural);
    }
    let path = format!("{}/scale", client::object(kind, args.conn.ns(), &name));
    api.patch(
        &path,
        MERGE_PATCH,
        &json!({"spec": {"replicas": args.replicas}}),
    )
    .await?;
    println!("{} scaled", shown(kind, &name));
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct LabelArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The kind (or KIND/NAME).
    pub kind: String,
    /// The name, then `key=value` to set and `key-` to remove.
    #[arg(required = true)]
    pub rest: Vec<String>,
    /// Replace a label that already has another value.
    #[arg(long)]
    pub overwrite: bool,
}

/// One label change from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Set(String, String),
    Remove(String),
}

/// `key=value` or `key-`.
pub fn parse_change(s: &str) -> anyhow::Result<Change> {
    if let Some((k, v)) = s.split_once('=') {
        if k.is_empty() {
            anyhow::bail!("{s:?}: the label key is empty");
        }
        return Ok(Change::Set(k.to_owned(), v.to_owned()));
    }
    match s.strip_suffix('-') {
        Some(k) if !k.is_empty() => Ok(Change::Remove(k.to_owned())),
        _ => anyhow::bail!("{s:?} is neither key=value nor key-"),
    }
}

/// The merge patch of `changes` to `labels`; an error for a value
/// changed without `overwrite`.
pub fn label_patch(
    labels: &Map<String, Value>,
    changes: &[Change],
    overwrite: bool,
) -> anyhow::Result<Value> {
    let mut patch = Map::new();
    for c in changes {
        match c {
            Change::Set(k, v) => {
                if let Some(old) = labels.get(k).and_then(Value::as_str)
                    && old != v
                    && !overwrite
                {
                    anyhow::bail!("'{k}' already has a value ({old}), and --overwrite is false");
                }
                patch.insert(k.clone(), Value::String(v.clone()));
            }
            Change::Remove(k) => {
                patch.insert(k.clone(), Value::Null);
            }
        }
    }
    Ok(Value::Object(patch))
}

pub async fn label(args: LabelArgs) -> anyhow::Result<()> {
    let api = args.conn.api().await?;
    let (first, changes) = if args.kind.contains('/') {
        (None, &args.rest[..])
    } else {
        (Some(args.rest[0].as_str()), &args.rest[1..])
    };
    let (kind, name) = kind_and_name(&args.kind, first)?;
    let changes = changes
        .iter()
        .map(|c| parse_change(c))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if changes.is_empty() {
        anyhow::bail!("give at least one key=value or key- to change");
    }
    let path = client::object(kind, args.conn.ns(), &name);
    let live = api.get(&path).await?;
    let labels = live["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let patch = json!({"metadata": {
        "labels": label_patch(&labels, &changes, args.overwrite)?,
        "resourceVersion": live["metadata"]["resourceVersion"],
    }});
    let after = api.patch(&path, MERGE_PATCH, &patch).await?;
    let verb = if after["metadata"]["labels"] == live["metadata"]["labels"] {
        "not labeled"
    } else {
        "labeled"
    };
    println!("{} {verb}", shown(kind, &name));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_changes_parse_and_respect_overwrite() {
        assert_eq!(
            parse_change("a=b").unwrap(),
            Change::Set("a".into(), "b".into())
        );
        assert_eq!(parse_change("a-").unwrap(), Change::Remove("a".into()));
        assert!(parse_change("a").is_err());
        assert!(parse_change("=b").is_err());
        let labels: Map<String, Value> = serde_json::from_value(json!({"a": "1"})).unwrap();
        let e = label_patch(&labels, &[Change::Set("a".into(), "2".into())], false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "'a' already has a value (1), and --overwrite is false"
        );
        assert_eq!(
            label_patch(
                &labels,
                &[
                    Change::Set("a".into(), "2".into()),
                    Change::Remove("b".into())
                ],
                true
            )
            .unwrap(),
            json!({"a": "2", "b": null})
        );
    }
}
