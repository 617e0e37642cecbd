//! `herd rollout status|history|undo deployment/NAME`: follow a
//! Deployment until its rollout is done, list its revisions (its
//! ReplicaSets), and go back to an earlier one (its template copied back,
//! as kubectl does it).

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::client::{self, Api};
use super::{Conn, kind_and_name, shown};
use crate::api::{ApiObject, Deployment, ReplicaSet};

const REVISION: &str = "deployment.kubernetes.io/revision";

#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Wait until the rollout is done, printing its progress.
    Status(RolloutArgs),
    /// The revisions, oldest first.
    History(RolloutArgs),
    /// Go back to the previous revision (or --to-revision).
    Undo(UndoArgs),
}

#[derive(Debug, clap::Args)]
pub struct RolloutArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// deployment/NAME (or `deployment NAME`).
    pub target: String,
    pub name: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct UndoArgs {
    #[command(flatten)]
    pub rollout: RolloutArgs,
    /// The revision to go back to (0: the one before the current).
    #[arg(long, default_value_t = 0)]
    pub to_revision: i64,
}

pub async fn run(command: RolloutCommand, cancel: CancellationToken) -> anyhow::Result<()> {
    match command {
        RolloutCommand::Status(a) => status(a, cancel).await,
        RolloutCommand::History(a) => history(a).await,
        RolloutCommand::Undo(a) => undo(a).await,
    }
}

async fn target(a: &RolloutArgs) -> anyhow::Result<(Api, String, String)> {
    let (kind, name) = kind_and_name(&a.target, a.name.as_deref())?;
    if kind != Deployment::INFO {
        anyhow::bail!("rollout works on deployments, not {}", kind.plural);
    }
    Ok((a.conn.api().await?, a.conn.ns().to_owned(), name))
}

/// Where a rollout stands: `Ok(None)` done, `Ok(Some(msg))` in progress.
pub fn progress(d: &Value) -> Option<String> {
    let name = d["metadata"]["name"].as_str().unwrap_or_default();
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let s = &d["status"];
    let n = |k: &str| s[k].as_i64().unwrap_or(0);
    if n("observedGeneration") < d["metadata"]["generation"].as_i64().unwrap_or(0) {
        return Some("Waiting for deployment spec update to be observed...".into());
    }
    if n("updatedReplicas") < want {
        return Some(format!(
            "Waiting for deployment {name:?} rollout to finish: {} out of {want} new replicas have been updated...",
            n("updatedReplicas")
        ));
    }
    if n("replicas") > n("updatedReplicas") {
        return Some(format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
            n("replicas") - n("updatedReplicas")
        ));
    }
    if n("availableReplicas") < n("updatedReplicas") {
        return Some(format!(
            "Waiting for deployment {name:?} rollout to finish: {} of {} updated replicas are available...",
            n("availableReplicas"),
            n("updatedReplicas")
        ));
    }
    None
}

async fn status(a: RolloutArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let (api, ns, name) = target(&a).await?;
    let path = client::object(Deployment::INFO, &ns, &name);
    let mut d = api.get(&path).await?;
    let mut last = String::new();
    let coll = format!(
        "{}?fieldSelector=metadata.name%3D{name}",
        client::collection(Deployment::INFO, Some(&ns))
    );
    let mut watch = None;
    loop {
        match progress(&d) {
            None => {
                println!("deployment {name:?} successfully rolled out");
                return Ok(());
            }
            Some(msg) if msg != last => {
                println!("{msg}");
                last = msg;
            }
            Some(_) => {}
        }
        if watch.is_none() {
            let rv = d["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            watch = Some(api.watch(&coll, &rv, "application/json").await?);
        }
        let w = watch.as_mut().expect("opened above");
        let event = tokio::select! {
            _ = cancel.cancelled() => anyhow::bail!("interrupted"),
            e = w.next() => e?,
        };
        match event {
            Some(e) if e.kind == "DELETED" => anyhow::bail!("deployment {name:?} was deleted"),
            Some(e) => d = e.object,
            // The server ended the watch: read again and watch again.
            None => {
                d = api.get(&path).await?;
                watch = None;
            }
        }
    }
}

/// The Deployment's ReplicaSets (by owner uid), oldest revision first.
async fn revisions(api: &Api, ns: &str, d: &Value) -> anyhow::Result<Vec<(i64, Value)>> {
    let uid = &d["metadata"]["uid"];
    let list = api
        .get(&client::collection(ReplicaSet::INFO, Some(ns)))
        .await?;
    let mut out: Vec<(i64, Value)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rs| {
            rs["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["uid"] == *uid)
        })
        .map(|rs| {
            let rev = rs["metadata"]["annotations"][REVISION]
                .as_str()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            (rev, rs.clone())
        })
        .collect();
    out.sort_by_key(|(r, _)| *r);
    Ok(out)
}

async fn history(a: RolloutArgs) -> anyhow::Result<()> {
    let (api, ns, name) = target(&a).await?;
    let d = api
        .get(&client::object(Deployment::INFO, &ns, &name))
        .await?;
    println!("{}", shown(Deployment::INFO, &name));
    let mut t = herd_cli::Table::new(["REVISION", "CHANGE-CAUSE"]);
    for (rev, rs) in revisions(&api, &ns, &d).await? {
        let cause = rs["metadata"]["annotations"]["kubernetes.io/change-cause"]
            .as_str()
            .unwrap_or("<none>");
        t.row([rev.to_string(), cause.to_owned()]);
    }
    print!("{t}");
    Ok(())
}

/// The template of revision `to` (0: the one before the newest), without
/// the hash label the deployment controller adds.
pub fn template_of(revisions: &[(i64, Value)], to: i64) -> anyhow::Result<Value> {
    let rs = if to == 0 {
        match revisions {
            [.., previous, _] => &previous.1,
            _ => anyhow::bail!("no rollout history found: nothing to undo"),
        }
    } else {
        &revisions
            .iter()
            .find(|(r, _)| *r == to)
            .ok_or_else(|| anyhow::anyhow!("unable to find the specified revision {to}"))?
            .1
    };
    let mut t = rs["spec"]["template"].clone();
    if let Some(l) = t["metadata"]["labels"].as_object_mut() {
        l.remove("pod-template-hash");
    }
    Ok(t)
}

async fn undo(a: UndoArgs) -> anyhow::Result<()> {
    let (api, ns, name) = target(&a.rollout).await?;
    let path = client::object(Deployment::INFO, &ns, &name);
    let d = api.get(&path).await?;
    let revs = revisions(&api, &ns, &d).await?;
    let template = template_of(&revs, a.to_revision)?;
    if template == d["spec"]["template"] {
        println!(
            "{} skipped rollback (current template already matches revision)",
            shown(Deployment::INFO, &name)
        );
        return Ok(());
    }
    // The whole object back with the version read: a writer in between
    // makes this a conflict, never a change silently undone.
    let mut d = d;
    d["spec"]["template"] = template;
    api.replace(&path, &d).await?;
    println!("{} rolled back", shown(Deployment::INFO, &name));
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn progress_reads_like_kubectl() {
        let d = |generation: i64, status: Value| json!({"metadata": {"name": "f", "generation": generation}, "spec": {"replicas": 2}, "status": status});
        let s = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2});
        assert_eq!(
            progress(&d(3, s.clone())).unwrap(),
            "Waiting for deployment spec update to be observed..."
        );
        assert_eq!(
            progress(&d(2, s)).unwrap(),
            "Waiting for deployment \"f\" rollout to finish: 1 out of 2 new replicas have been updated..."
        );
        let s = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2});
        assert!(
            progress(&d(2, s))
                .unwrap()
                .contains("1 old replicas are pending termination")
        );
        let s = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
        assert_eq!(progress(&d(2, s)), None);
    }

    #[test]
    fn undo_goes_to_the_revision_before_the_newest() {
        let rs = |rev: i64, image: &str| {
            (
                rev,
                json!({"spec": {"template": {"metadata": {"labels": {"app": "f", "pod-template-hash": "h"}}, "spec": {"containers": [{"image": image}]}}}}),
            )
        };
        let revs = vec![rs(1, "a"), rs(2, "b"), rs(3, "c")];
        let t = template_of(&revs, 0).unwrap();
        assert_eq!(t["spec"]["containers"][0]["image"], "b");
        assert_eq!(t["metadata"]["labels"], json!({"app": "f"}));
        assert_eq!(
            template_of(&revs, 1).unwrap()["spec"]["containers"][0]["image"],
            "a"
        );
        assert!(template_of(&revs, 9).is_err());
        assert!(template_of(&revs[..1], 0).is_err());
    }
}
