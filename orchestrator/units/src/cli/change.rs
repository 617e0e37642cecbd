//! The state-changing verbs: submit, load, start, stop, unload, restart,
//! destroy — compare-and-swap writes of the unit records, then (unless
//! `--no-block`) waiting until the cluster reports the state.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use herd_cli::Output;
use herd_client::Client;
use herd_client::kit::{self, Resource, Scope};
use herd_client::proto::etcdserverpb::TxnRequest;
use serde::Serialize;

use super::Block;
use crate::records::{DesiredState, Placement, Report, UnitRecord, Unschedulable};
use crate::store::{delete_op, mod_is, put_op};
use crate::unit::{Kind, UnitFile, UnitName};

async fn get(client: &Client, unit: &str) -> anyhow::Result<Option<kit::Object<UnitRecord>>> {
    let (mut objects, _) = kit::list::<UnitRecord>(client, &Scope::Name(unit.to_owned())).await?;
    Ok(objects.pop())
}

/// Creates the record of `name` with `text` unless the same is there.
async fn create(client: &Client, name: &UnitName, text: &str) -> anyhow::Result<()> {
    let record = UnitRecord {
        text: text.to_owned(),
        desired: DesiredState::Inactive,
        restarts: 0,
    };
    let key = UnitRecord::PREFIX.key(name.as_str());
    let resp = client
        .kv()
        .txn(TxnRequest {
            compare: vec![mod_is(key.clone(), 0)],
            success: vec![put_op(key, record.encode(), 0)],
            failure: vec![],
        })
        .await?
        .into_inner();
    if !resp.succeeded {
        let existing = get(client, name.as_str()).await?;
        if existing.is_some_and(|e| e.value.text != text) {
            bail!(
                "{name} was already submitted with different contents: destroy it first (herd units destroy {name})"
            );
        }
    }
    Ok(())
}

/// Submits the unit file at `path` (named after the file); returns its name.
pub async fn submit_file(client: &Client, path: &Path) -> anyhow::Result<UnitName> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no file name", path.display()))?;
    let name = UnitName::parse(file_name)?;
    if name.kind() == Kind::Instance {
        bail!(
            "{}: submit the template {} and start {name}; an instance has no file of its own",
            path.display(),
            name.template().expect("an instance")
        );
    }
    let text = tokio::fs::read_to_string(path)
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    UnitFile::parse(&name, &text, None)?;
    create(client, &name, &text).await?;
    Ok(name)
}

/// A FILE (submitted first) or UNIT argument as a unit name; an instance
/// of a submitted template gets its record made from the template.
async fn resolve(client: &Client, arg: &str) -> anyhow::Result<UnitName> {
    let path = Path::new(arg);
    if arg.contains('/') || tokio::fs::try_exists(path).await.unwrap_or(false) {
        return submit_file(client, path).await;
    }
    let name = UnitName::parse(arg)?;
    if get(client, name.as_str()).await?.is_some() {
        return Ok(name);
    }
    let Some(template) = name.template() else {
        bail!("{name} has not been submitted (herd units submit FILE)");
    };
    let Some(t) = get(client, template.as_str()).await? else {
        bail!("neither {name} nor its template {template} has been submitted");
    };
    UnitFile::parse(&name, &t.value.text, None)
        .with_context(|| format!("{name} from template {template}"))?;
    create(client, &name, &t.value.text).await?;
    Ok(name)
}

#[derive(Debug, Serialize)]
struct Changed {
    unit: String,
    desired: DesiredState,
    restarts: u64,
}

/// Sets the desired state of `args` (raising the restart count with
/// `restart`), then waits as `block` says.
pub async fn set_state(
    client: &Client,
    args: &[String],
    desired: DesiredState,
    restart: bool,
    block: &Block,
    out: Output,
) -> anyhow::Result<()> {
    let mut changed = Vec::new();
    for arg in args {
        let name = resolve(client, arg).await?;
        if name.kind() == Kind::Template {
            bail!(
                "{name} is a template: start an instance of it (e.g. {})",
                name.instantiate("1")?
            );
        }
        loop {
            let current = get(client, name.as_str())
                .await?
                .with_context(|| format!("{name} was destroyed meanwhile"))?;
            let mut record = current.value.clone();
            record.desired = desired;
            if restart {
                record.restarts += 1;
            }
            let key = UnitRecord::PREFIX.key(name.as_str());
            let resp = client
                .kv()
                .txn(TxnRequest {
                    compare: vec![mod_is(key.clone(), current.mod_revision)],
                    success: vec![put_op(key, record.encode(), 0)],
                    failure: vec![],
                })
                .await?
                .into_inner();
            if resp.succeeded {
                changed.push(Changed {
                    unit: name.to_string(),
                    desired,
                    restarts: record.restarts,
                });
                break;
            }
        }
    }
    if !block.no_block {
        for c in &changed {
            wait(client, &c.unit, desired, c.restarts, block.timeout).await?;
        }
    }
    if out.is_structured() {
        out.print(&changed, |_| String::new())?;
    } else {
        for c in &changed {
            let verb = match (desired, restart) {
                (_, true) => "restarted",
                (DesiredState::Launched, _) => "launched",
                (DesiredState::Loaded, _) => "loaded",
                (DesiredState::Inactive, _) => "unloaded",
            };
            println!("Unit {} {verb}", c.unit);
        }
    }
    Ok(())
}

/// Whether every report of the unit shows `desired` reached.
fn reached(
    desired: DesiredState,
    restarts: u64,
    placements: &[kit::Object<Placement>],
    reports: &[kit::Object<Report>],
) -> Result<bool, String> {
    match desired {
        DesiredState::Inactive => Ok(placements.is_empty()),
        DesiredState::Loaded => Ok(!placements.is_empty()
            && placements.iter().all(|p| {
                reports.iter().any(|r| {
                    r.value.machine == p.value.machine
                        && r.value.active != "active"
                        && r.value.active != "deactivating"
                })
            })),
        DesiredState::Launched => {
            if placements.is_empty() {
                return Ok(false);
            }
            let mut all = true;
            for p in placements {
                let r = reports
                    .iter()
                    .find(|r| r.value.machine == p.value.machine && r.value.generation == restarts);
                match r {
                    Some(r) if r.value.active == "active" => {}
                    Some(r) if r.value.active == "failed" || r.value.load == "error" => {
                        return Err(format!(
                            "failed on machine {}: {}",
                            r.value.machine,
                            r.value
                                .message
                                .clone()
                                .unwrap_or_else(|| r.value.sub.clone())
                        ));
                    }
                    _ => all = false,
                }
            }
            Ok(all)
        }
    }
}

async fn wait(
    client: &Client,
    unit: &str,
    desired: DesiredState,
    restarts: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        let (placements, _) = kit::list::<Placement>(client, &Scope::All).await?;
        let placements: Vec<_> = placements
            .into_iter()
            .filter(|p| p.value.unit.as_str() == unit)
            .collect();
        let mut reports = Vec::new();
        for p in &placements {
            reports.extend(
                kit::list::<Report>(client, &Scope::Name(p.name.clone()))
                    .await?
                    .0,
            );
        }
        match reached(desired, restarts, &placements, &reports) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(why) => bail!("{unit} {why}"),
        }
        if desired != DesiredState::Inactive
            && let Some(n) = kit::list::<Unschedulable>(client, &Scope::Name(unit.to_owned()))
                .await?
                .0
                .pop()
        {
            bail!("{unit} cannot be placed: {}", n.value.reason);
        }
        if tokio::time::Instant::now() >= end {
            bail!(
                "{unit} did not reach {desired} within {timeout:?} (herd units list-units shows where it stands)"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Removes units (and so their placements) from the cluster.
pub async fn destroy(client: &Client, args: &[String], out: Output) -> anyhow::Result<()> {
    let mut gone = Vec::new();
    for arg in args {
        let name = UnitName::parse(
            Path::new(arg)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(arg),
        )?;
        let key = UnitRecord::PREFIX.key(name.as_str());
        client
            .kv()
            .txn(TxnRequest {
                compare: vec![],
                success: vec![delete_op(key)],
                failure: vec![],
            })
            .await?;
        gone.push(name.to_string());
    }
    if out.is_structured() {
        out.print(&gone, |_| String::new())?;
    } else {
        for g in &gone {
            println!("Destroyed {g}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj<T>(name: &str, value: T) -> kit::Object<T> {
        kit::Object {
            name: name.into(),
            value,
            mod_revision: 1,
            create_revision: 1,
            lease: 0,
        }
    }

    fn report(machine: &str, active: &str, generation: u64) -> kit::Object<Report> {
        obj(
            machine,
            Report {
                unit: "a.service".parse().unwrap(),
                machine: machine.into(),
                load: "loaded".into(),
                active: active.into(),
                sub: "x".into(),
                main_pid: None,
                since: String::new(),
                restarts: 0,
                generation,
                message: Some("boom".into()),
            },
        )
    }

    #[test]
    fn waiting_ends_on_every_placement_reporting() {
        let p = |m: &str| {
            obj(
                m,
                Placement {
                    unit: "a.service".parse().unwrap(),
                    machine: m.into(),
                    text: String::new(),
                    target: DesiredState::Launched,
                    restarts: 1,
                },
            )
        };
        let ps = [p("m1"), p("m2")];
        assert_eq!(
            reached(DesiredState::Launched, 1, &ps, &[report("m1", "active", 1)]),
            Ok(false)
        );
        assert_eq!(
            reached(
                DesiredState::Launched,
                1,
                &ps,
                &[report("m1", "active", 1), report("m2", "active", 1)]
            ),
            Ok(true)
        );
        // An answer to an older restart does not count.
        assert_eq!(
            reached(
                DesiredState::Launched,
                1,
                &ps,
                &[report("m1", "active", 1), report("m2", "active", 0)]
            ),
            Ok(false)
        );
        assert!(
            reached(DesiredState::Launched, 1, &ps, &[report("m1", "failed", 1)])
                .unwrap_err()
                .contains("m1: boom")
        );
        assert_eq!(reached(DesiredState::Inactive, 0, &[], &[]), Ok(true));
    }
}
