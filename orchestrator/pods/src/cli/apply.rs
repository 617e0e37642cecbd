//! `herd apply` (create what is missing, patch what exists — kubectl's
//! three-way apply: the manifest's values over the live object's, and
//! what the previous apply set but this manifest dropped removed, the
//! previous manifest kept in the same annotation kubectl keeps it in) and
//! `herd delete` (by name or by manifest, with the cascade asked for).

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::client::{self, Api, CallError, MERGE_PATCH};
use super::manifest::{self, Manifest};
use super::{Conn, kind_and_name, shown};

/// Where kubectl (and herd) keep the manifest last applied.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// Manifests: files, directories of .yaml/.yml/.json, or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
}

/// What an apply did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created,
    Configured,
    Unchanged,
}

impl Applied {
    fn as_str(self) -> &'static str {
        match self {
            Applied::Created => "created",
            Applied::Configured => "configured",
            Applied::Unchanged => "unchanged",
        }
    }
}

pub async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let api = args.conn.api().await?;
    let objects = manifest::load(&args.files).await?;
    let mut failed = 0;
    // Each object on its own, as kubectl: one refused object does not
    // keep the others from being applied, and the error names it.
    for m in &objects {
        match apply_one(&api, m, args.conn.namespace.as_deref()).await {
            Ok(what) => println!("{} {}", shown(m.kind, m.name()), what.as_str()),
            Err(e) => {
                failed += 1;
                eprintln!(
                    "{}: document {}: {}: {e:#}",
                    m.source,
                    m.document,
                    shown(m.kind, m.name())
                );
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} objects were not applied", objects.len());
    }
    Ok(())
}

/// Applies one manifest object.
pub async fn apply_one(
    api: &Api,
    m: &Manifest,
    namespace: Option<&str>,
) -> anyhow::Result<Applied> {
    let ns = m.namespace(namespace)?;
    let mut desired = m.object.clone();
    if m.kind.namespaced {
        desired["metadata"]["namespace"] = Value::String(ns.clone());
    }
    // The manifest as given (without its own copy), for the next apply.
    let mut recorded = desired.clone();
    if let Some(a) = recorded["metadata"]["annotations"].as_object_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty()
            && let Some(m) = recorded["metadata"].as_object_mut()
        {
            m.remove("annotations");
        }
    }
    let recorded_text = serde_json::to_string(&recorded)?;
    desired["metadata"]["annotations"][LAST_APPLIED] = Value::String(recorded_text);
    let path = client::object(m.kind, &ns, m.name());
    // A conflict means someone wrote between our read and our patch: read again.
    for _ in 0..5 {
        let live = match api.get(&path).await {
            Ok(live) => live,
            Err(e) if e.is_not_found() => {
                match api
                    .create(&client::collection(m.kind, Some(&ns)), &desired)
                    .await
                {
                    Ok(_) => return Ok(Applied::Created),
                    Err(CallError::Refused(r)) if r.is_already_exists() => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        let previous: Value = live["metadata"]["annotations"][LAST_APPLIED]
            .as_str()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        let mut patch = three_way(&previous, &desired, &live);
        if patch.as_object().is_none_or(Map::is_empty) {
            return Ok(Applied::Unchanged);
        }
        // The version read is a precondition: a writer in between is a
        // conflict to read again over, never a change silently undone.
        patch["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
        match api.patch(&path, MERGE_PATCH, &patch).await {
            Ok(after) => {
                let same =
                    after["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"];
                return Ok(if same {
                    Applied::Unchanged
                } else {
                    Applied::Configured
                });
            }
            Err(CallError::Refused(r)) if r.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("{path} kept changing under the apply; try again")
}

/// The JSON merge patch taking `current` to `modified`: every value of
/// `modified` that `current` lacks or has otherwise, and `null` for what
/// `original` (the previous apply) had and `modified` dropped. Fields
/// neither apply ever set (defaults, the server's status) are left alone.
pub fn three_way(original: &Value, modified: &Value, current: &Value) -> Value {
    let mut patch = Map::new();
    let Some(m) = modified.as_object() else {
        return modified.clone();
    };
    for (key, want) in m {
        let have = &current[key.as_str()];
        match (want, have) {
            (Value::Object(_), Value::Object(_)) => {
                let sub = three_way(&original[key.as_str()], want, have);
                if sub.as_object().is_some_and(|o| !o.is_empty()) {
                    patch.insert(key.clone(), sub);
                }
            }
            // A merge patch cannot say "null" as a value; an absent field
            // and a null one are the same to the API.
            (Value::Null, _) => {}
            _ if want != have => {
                patch.insert(key.clone(), want.clone());
            }
            _ => {}
        }
    }
    if let Some(o) = original.as_object() {
        for key in o.keys() {
            if !m.contains_key(key) && !current[key.as_str()].is_null() {
                patch.insert(key.clone(), Value::Null);
            }
        }
    }
    Value::Object(patch)
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The kind (or KIND/NAME), unless -f.
    pub kind: Option<String>,
    pub names: Vec<String>,
    /// Delete what these manifests name.
    #[arg(short = 'f', long = "filename", conflicts_with = "kind")]
    pub files: Vec<PathBuf>,
    /// What happens to the objects it owns: background (deleted after
    /// it), foreground (deleted before it), orphan (kept).
    #[arg(long, value_enum, default_value = "background")]
    pub cascade: Cascade,
    /// A missing object is not an error.
    #[arg(long)]
    pub ignore_not_found: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cascade {
    Background,
    Foreground,
    Orphan,
}

impl Cascade {
    pub fn policy(self) -> &'static str {
        match self {
            Cascade::Background => "Background",
            Cascade::Foreground => "Foreground",
            Cascade::Orphan => "Orphan",
        }
    }
}

pub async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let api = args.conn.api().await?;
    let mut targets = Vec::new();
    if !args.files.is_empty() {
        for m in manifest::load(&args.files).await? {
            let ns = m.namespace(args.conn.namespace.as_deref())?;
            targets.push((m.kind, ns, m.name().to_owned()));
        }
    } else {
        let Some(kind) = &args.kind else {
            anyhow::bail!("give KIND NAME…, KIND/NAME or -f FILE");
        };
        if kind.contains('/') {
            let (k, n) = kind_and_name(kind, None)?;
            targets.push((k, args.conn.ns().to_owned(), n));
        }
        for name in &args.names {
            let k = if kind.contains('/') {
                kind_and_name(name, None)?.0
            } else {
                super::kind_named(kind)?
            };
            let n = name.rsplit('/').next().unwrap_or(name).to_owned();
            targets.push((k, args.conn.ns().to_owned(), n));
        }
        if targets.is_empty() {
            anyhow::bail!("which {kind}? give a name");
        }
    }
    let mut failed = 0;
    for (kind, ns, name) in targets {
        match api
            .delete(&client::object(kind, &ns, &name), args.cascade.policy())
            .await
        {
            Ok(_) => println!("{} \"{name}\" deleted", kind.kind.to_ascii_lowercase()),
            Err(e) if e.is_not_found() && args.ignore_not_found => {}
            Err(e) => {
                failed += 1;
                eprintln!("{e}");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} objects were not deleted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn apply_sets_what_changed_and_removes_what_the_last_apply_set() {
        let original =
            json!({"metadata": {"labels": {"a": "1", "gone": "x"}}, "spec": {"replicas": 2}});
        let modified = json!({"metadata": {"labels": {"a": "2"}}, "spec": {"replicas": 2}});
        let current = json!({
            "metadata": {"labels": {"a": "1", "gone": "x", "set-by-hand": "y"}, "uid": "u"},
            "spec": {"replicas": 5, "minReadySeconds": 0},
            "status": {"replicas": 5},
        });
        assert_eq!(
            three_way(&original, &modified, &current),
            json!({"metadata": {"labels": {"a": "2", "gone": null}}, "spec": {"replicas": 2}})
        );
    }

    #[test]
    fn nothing_changed_is_an_empty_patch() {
        let m = json!({"metadata": {"name": "x"}, "spec": {"ports": [{"port": 80}]}});
        let current = json!({"metadata": {"name": "x", "uid": "u"}, "spec": {"ports": [{"port": 80}], "clusterIP": "10.0.0.9"}});
        assert_eq!(three_way(&m, &m, &current), json!({}));
        // A list is replaced whole (a merge patch): a changed one is sent.
        let m2 = json!({"metadata": {"name": "x"}, "spec": {"ports": [{"port": 81}]}});
        assert_eq!(
            three_way(&m, &m2, &current),
            json!({"spec": {"ports": [{"port": 81}]}})
        );
    }

    #[test]
    fn a_field_dropped_that_is_already_gone_is_not_sent() {
        let original = json!({"spec": {"a": 1}});
        assert_eq!(
            three_way(&original, &json!({"spec": {}}), &json!({"spec": {}})),
            json!({})
        );
    }
}
