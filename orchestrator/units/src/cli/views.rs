//! The reading verbs: list-units, list-unit-files, list-machines, cat,
//! and status and journal from the agent API of the unit's machine.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use herd_cli::{Output, Table};
use herd_client::Client;
use herd_client::keys::MachineRecord;
use herd_client::kit::{self, Scope};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::api::UnitStatus;
use crate::records::{DesiredState, Placement, Report, UnitRecord, Unschedulable};

#[derive(Debug, Serialize)]
struct UnitRow {
    unit: String,
    machine: Option<String>,
    ip: Option<String>,
    desired: DesiredState,
    state: String,
    load: Option<String>,
    active: Option<String>,
    sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

async fn machines(client: &Client) -> anyhow::Result<BTreeMap<String, MachineRecord>> {
    let (ms, _) = kit::list::<MachineRecord>(client, &Scope::All).await?;
    Ok(ms.into_iter().map(|m| (m.name, m.value)).collect())
}

fn dash(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "-".into())
}

pub async fn list_units(client: &Client, out: Output) -> anyhow::Result<()> {
    let (units, _) = kit::list::<UnitRecord>(client, &Scope::All).await?;
    let (placements, _) = kit::list::<Placement>(client, &Scope::All).await?;
    let (reports, _) = kit::list::<Report>(client, &Scope::All).await?;
    let (notes, _) = kit::list::<Unschedulable>(client, &Scope::All).await?;
    let machines = machines(client).await?;
    let reports: BTreeMap<String, Report> =
        reports.into_iter().map(|r| (r.name, r.value)).collect();
    let notes: BTreeMap<String, String> = notes
        .into_iter()
        .map(|n| (n.name, n.value.reason))
        .collect();
    let mut rows = Vec::new();
    for u in units.iter().filter(|u| !u.name.contains("@.")) {
        let mine: Vec<&Placement> = placements
            .iter()
            .map(|p| &p.value)
            .filter(|p| p.unit.as_str() == u.name)
            .collect();
        if mine.is_empty() {
            rows.push(UnitRow {
                unit: u.name.clone(),
                machine: None,
                ip: None,
                desired: u.value.desired,
                state: if u.value.desired == DesiredState::Inactive {
                    "inactive".into()
                } else {
                    "unplaced".into()
                },
                load: None,
                active: None,
                sub: None,
                message: notes.get(&u.name).cloned(),
            });
        }
        for p in mine {
            let r = reports.get(&Placement::name(&p.machine, p.unit.as_str()));
            rows.push(UnitRow {
                unit: u.name.clone(),
                machine: Some(p.machine.clone()),
                ip: machines.get(&p.machine).map(|m| m.ip.to_string()),
                desired: u.value.desired,
                state: p.target.to_string(),
                load: r.map(|r| r.load.clone()),
                active: r.map(|r| r.active.clone()),
                sub: r.map(|r| r.sub.clone()),
                message: r.and_then(|r| r.message.clone()),
            });
        }
    }
    out.print(&rows, |rows| {
        let mut t = Table::new([
            "UNIT", "MACHINE", "DESIRED", "STATE", "LOAD", "ACTIVE", "SUB",
        ]);
        for r in rows {
            let machine = match (&r.machine, &r.ip) {
                (Some(m), Some(ip)) => format!("{m}/{ip}"),
                (Some(m), None) => format!("{m} (gone)"),
                _ => "-".into(),
            };
            let sub = match &r.message {
                Some(m) if r.active.as_deref() != Some("active") => {
                    format!("{} ({m})", dash(&r.sub))
                }
                _ => dash(&r.sub),
            };
            t.row([
                r.unit.clone(),
                machine,
                r.desired.to_string(),
                r.state.clone(),
                dash(&r.load),
                dash(&r.active),
                sub,
            ]);
        }
        t.render()
    })?;
    Ok(())
}

/// A short hash of a unit's text, as fleetctl showed.
fn short_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")[..7].to_owned()
}

#[derive(Debug, Serialize)]
struct FileRow {
    unit: String,
    hash: String,
    desired: DesiredState,
    state: String,
    targets: Vec<String>,
    global: bool,
}

pub async fn list_unit_files(client: &Client, out: Output) -> anyhow::Result<()> {
    let (units, _) = kit::list::<UnitRecord>(client, &Scope::All).await?;
    let (placements, _) = kit::list::<Placement>(client, &Scope::All).await?;
    let rows: Vec<FileRow> = units
        .iter()
        .map(|u| {
            let mine: Vec<&Placement> = placements
                .iter()
                .map(|p| &p.value)
                .filter(|p| p.unit.as_str() == u.name)
                .collect();
            let global = u
                .name
                .parse()
                .ok()
                .and_then(|n| crate::unit::UnitFile::parse(&n, &u.value.text, None).ok())
                .is_some_and(|f| f.fleet.global);
            FileRow {
                unit: u.name.clone(),
                hash: short_hash(&u.value.text),
                desired: u.value.desired,
                state: mine
                    .first()
                    .map_or("inactive".into(), |p| p.target.to_string()),
                targets: mine.iter().map(|p| p.machine.clone()).collect(),
                global,
            }
        })
        .collect();
    out.print(&rows, |rows| {
        let mut t = Table::new(["UNIT", "HASH", "DSTATE", "STATE", "TARGET"]);
        for r in rows {
            let target = if r.global {
                "global".into()
            } else {
                r.targets.first().cloned().unwrap_or_else(|| "-".into())
            };
            t.row([
                r.unit.clone(),
                r.hash.clone(),
                r.desired.to_string(),
                r.state.clone(),
                target,
            ]);
        }
        t.render()
    })?;
    Ok(())
}

pub async fn list_machines(client: &Client, out: Output) -> anyhow::Result<()> {
    let ms: Vec<MachineRecord> = machines(client).await?.into_values().collect();
    out.print(&ms, |ms| {
        let mut t = Table::new(["MACHINE", "IP", "HOSTNAME", "METADATA", "API"]);
        for m in ms {
            let md: Vec<String> = m.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let md = if md.is_empty() {
                "-".into()
            } else {
                md.join(",")
            };
            t.row([
                m.machine_id.clone(),
                m.ip.to_string(),
                m.hostname.clone(),
                md,
                m.api_url.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        t.render()
    })?;
    Ok(())
}

pub async fn cat(client: &Client, unit: &str) -> anyhow::Result<()> {
    let (mut u, _) = kit::list::<UnitRecord>(client, &Scope::Name(unit.to_owned())).await?;
    let u = u
        .pop()
        .with_context(|| format!("{unit} has not been submitted"))?;
    print!("{}", u.value.text);
    if !u.value.text.ends_with('\n') {
        println!();
    }
    Ok(())
}

/// The machines `unit` is placed on, with their API addresses.
async fn placed_on(client: &Client, unit: &str) -> anyhow::Result<Vec<(String, String)>> {
    let (placements, _) = kit::list::<Placement>(client, &Scope::All).await?;
    let machines = machines(client).await?;
    let mut out = Vec::new();
    for p in placements
        .into_iter()
        .filter(|p| p.value.unit.as_str() == unit)
    {
        let m = p.value.machine;
        let api = machines
            .get(&m)
            .with_context(|| {
                format!("{unit} is placed on machine {m}, which is not registered now")
            })?
            .api_url
            .clone()
            .with_context(|| {
                format!(
                    "machine {m} advertises no agent API (start its agent with --listen-agent-api)"
                )
            })?;
        out.push((m, api));
    }
    if out.is_empty() {
        bail!("{unit} is not placed on any machine (herd units list-units)");
    }
    Ok(out)
}

/// A client of the agents' APIs, presenting the store client's own
/// certificate (root's, for an operator): they admit members and root.
fn http(client: &Client) -> anyhow::Result<herd_http::Client> {
    let http = herd_http::Client::new().with_timeout(std::time::Duration::from_secs(10));
    Ok(
        match client
            .credentials()
            .tls_config(&[herd_pki::tls::ALPN_HTTP1])?
        {
            Some(config) => http.with_tls(config),
            None => http,
        },
    )
}

pub async fn status(client: &Client, unit: &str, out: Output) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for (machine, api) in placed_on(client, unit).await? {
        let s: UnitStatus = http(client)?
            .get_json(&format!("{api}/v1/units/{unit}/status"))
            .await
            .with_context(|| format!("asking machine {machine} about {unit}"))?;
        all.push(s);
    }
    out.print(&all, |all| {
        let mut text = String::new();
        for s in all {
            let desc = if s.description.is_empty() {
                String::new()
            } else {
                format!(" - {}", s.description)
            };
            text.push_str(&format!("● {}{desc}\n", s.unit));
            text.push_str(&format!("   Machine: {}\n", s.machine));
            text.push_str(&format!(
                "    Active: {} ({}) since {}",
                s.active, s.sub, s.since
            ));
            if s.restarts > 0 {
                text.push_str(&format!("; restarted {} times", s.restarts));
            }
            text.push('\n');
            if let Some(m) = &s.message {
                text.push_str(&format!("    Reason: {m}\n"));
            }
            if let Some(p) = s.main_pid {
                text.push_str(&format!("  Main PID: {p}\n"));
            }
            if !s.cgroup.is_empty() {
                text.push_str(&format!("    CGroup: {}\n", s.cgroup));
                for p in &s.processes {
                    text.push_str(&format!("            ├─{} {}\n", p.pid, p.command));
                }
                for (k, v) in &s.cgroup_files {
                    text.push_str(&format!("            {k}: {v}\n"));
                }
            }
            text.push('\n');
            for l in &s.journal {
                text.push_str(l);
                text.push('\n');
            }
            text.push('\n');
        }
        text
    })?;
    Ok(())
}

pub async fn journal(
    client: &Client,
    unit: &str,
    lines: usize,
    follow: bool,
    machine: Option<&str>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let placed = placed_on(client, unit).await?;
    let (m, api) = match machine {
        Some(want) => placed
            .into_iter()
            .find(|(m, _)| m == want)
            .with_context(|| format!("{unit} is not placed on machine {want}"))?,
        None if placed.len() == 1 => placed.into_iter().next().expect("one"),
        None => {
            let ms: Vec<String> = placed.into_iter().map(|(m, _)| m).collect();
            bail!(
                "{unit} runs on {} machines: pick one with --machine ({})",
                ms.len(),
                ms.join(", ")
            );
        }
    };
    let url = format!("{api}/v1/units/{unit}/journal?lines={lines}&follow={follow}");
    let mut stdout = tokio::io::stdout();
    let http = http(client)?;
    tokio::select! {
        r = http.download(&url, 0, &mut stdout, |_| {}) => {
            r.with_context(|| format!("reading {unit}'s journal on machine {m}"))?;
        }
        _ = shutdown.cancelled() => {}
    }
    Ok(())
}
