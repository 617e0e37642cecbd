//! The engine: one per cluster (a store election), it places every unit
//! whose desired state is `loaded` or `launched` — on the least-loaded
//! machine that satisfies its `[X-Fleet]` constraints, or on every
//! matching machine for a global unit, joiners included — and takes
//! placements away when a unit goes back to `inactive`.
//!
//! It is a kit controller over the unit files, also watching placements
//! and machines; it decides from its in-memory [`index`], never from a
//! read of the store. A machine whose registration disappears keeps its
//! placements for a grace period: a slow store, a leader change or a
//! restarting agent moves nothing; only a machine gone for longer than
//! the grace period has its units placed elsewhere. A machine draining
//! for an OS update (`herd_client::keys::DrainRecord`) takes no new unit
//! that is not global, and its units move to machines that can take them
//! now; one that can go nowhere else (pinned by `MachineID`, say) stays
//! and reboots with its machine.

pub mod index;
pub mod schedule;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_client::keys::{DrainRecord, MachineRecord};
use herd_client::kit::{self, Action, Cache, Controller, Object, Request, Resource, Scope};
use herd_client::proto::etcdserverpb::{RequestOp, TxnRequest};
use herd_client::{Client, ClientError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::records::{DesiredState, ENGINE_ELECTION, Placement, UnitRecord, Unschedulable};
use crate::store::{Store, delete_op, mod_is, put_op};
use crate::unit::{FleetSection, Kind, UnitFile, UnitName};
use index::Index;

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a lost machine keeps its units before they move.
    pub grace: Duration,
    /// Units reconciled at once.
    pub concurrency: usize,
    /// This candidate's name in the election.
    pub candidate: String,
    pub election_ttl: Duration,
    /// How often an unschedulable unit is looked at again (from memory).
    pub retry: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            grace: Duration::from_secs(30),
            concurrency: 16,
            candidate: "engine".into(),
            election_ttl: Duration::from_secs(10),
            retry: Duration::from_secs(5),
        }
    }
}

/// Why one reconcile failed (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("writing to the store: {0}")]
    Store(#[from] ClientError),
    #[error("{0} changed while it was being placed; looking again")]
    Raced(String),
}

struct Ctx {
    store: Store,
    config: EngineConfig,
    index: Arc<Mutex<Index>>,
    placements: Cache<Placement>,
    notes: Cache<Unschedulable>,
}

fn lock(index: &Mutex<Index>) -> std::sync::MutexGuard<'_, Index> {
    index.lock().unwrap_or_else(|p| p.into_inner())
}

/// Campaigns for the engine's election and schedules while elected,
/// until `cancel` fires.
pub async fn run(
    client: Client,
    config: EngineConfig,
    stats: Arc<crate::store::Stats>,
    cancel: CancellationToken,
) {
    let candidate = config.candidate.clone();
    kit::run_elected(
        &client,
        ENGINE_ELECTION,
        &candidate,
        config.election_ttl,
        &cancel,
        |token| {
            let store = Store {
                client: client.clone(),
                stats: Arc::clone(&stats),
            };
            lead(store, config.clone(), token)
        },
    )
    .await;
}

/// Schedules until `cancel` fires (the caller holds the election).
pub async fn lead(store: Store, config: EngineConfig, cancel: CancellationToken) {
    tracing::info!(candidate = %config.candidate, "units engine leading");
    let index = Arc::new(Mutex::new(Index::default()));
    let mut controller =
        Controller::<UnitRecord>::new("units-engine", store.client.clone(), Scope::All)
            .concurrency(config.concurrency);
    let idx = Arc::clone(&index);
    let placements = controller.watches::<Placement>(Scope::All, move |before, after| {
        let mut ix = lock(&idx);
        let mut names = Vec::new();
        if let Some(b) = before {
            ix.unplace(&b.value.machine, b.value.unit.as_str());
            names.push(b.value.unit.to_string());
            names.extend(ix.affected_by(b.value.unit.as_str(), &b.value.machine));
        }
        if let Some(a) = after {
            ix.place(&a.value.machine, a.value.unit.as_str());
            names.push(a.value.unit.to_string());
            names.extend(ix.affected_by(a.value.unit.as_str(), &a.value.machine));
        }
        names
    });
    let idx = Arc::clone(&index);
    let _machines = controller.watches::<MachineRecord>(Scope::All, move |before, after| {
        let mut ix = lock(&idx);
        match (before, after) {
            (_, Some(a)) => {
                ix.machine_up(&a.value.machine_id, Arc::new(a.value.metadata.clone()));
                let mut names: Vec<String> = ix.globals.iter().chain(ix.pending.iter()).cloned().collect();
                names.extend(ix.units_on(&a.value.machine_id));
                names
            }
            (Some(b), None) => {
                tracing::info!(machine = %b.value.machine_id, "machine lost; its units move after the grace period");
                ix.machine_down(&b.value.machine_id, Instant::now());
                ix.units_on(&b.value.machine_id)
            }
            (None, None) => Vec::new(),
        }
    });
    let idx = Arc::clone(&index);
    let _drains = controller.watches::<DrainRecord>(Scope::All, move |before, after| {
        let (machine, on) = match (before, after) {
            (_, Some(a)) => (a.value.machine_id.clone(), true),
            (Some(b), None) => (b.value.machine_id.clone(), false),
            (None, None) => return Vec::new(),
        };
        let mut ix = lock(&idx);
        ix.set_draining(&machine, on);
        tracing::info!(%machine, draining = on, "machine drain for an OS update");
        let mut names = ix.units_on(&machine);
        if !on {
            names.extend(ix.pending.iter().cloned());
        }
        names
    });
    let notes = controller.watches::<Unschedulable>(Scope::All, |_, _| Vec::new());
    let ctx = Arc::new(Ctx {
        store,
        config,
        index,
        placements,
        notes,
    });
    controller.run(ctx, reconcile, cancel).await;
    tracing::info!("units engine stopped leading");
}

/// The placements `unit` should have, compared with those it has, and the
/// writes that close the gap.
async fn reconcile(ctx: Arc<Ctx>, req: Request<UnitRecord>) -> Result<Action, EngineError> {
    let unit = req.name.clone();
    let record = req
        .object
        .filter(|o| o.value.desired != DesiredState::Inactive);
    let parsed = match &record {
        None => None,
        Some(o) => match UnitName::parse(&unit) {
            Ok(n) if n.kind() == Kind::Template => None,
            Ok(n) => Some((n, o)),
            Err(e) => return note(&ctx, &unit, format!("not a unit name: {e}")).await,
        },
    };
    let Some((name, object)) = parsed else {
        lock(&ctx.index).forget(&unit);
        return unplace_all(&ctx, &unit).await;
    };
    let fleet = {
        let cached = lock(&ctx.index)
            .constraints
            .get(&unit)
            .filter(|(rev, _)| *rev == object.mod_revision)
            .map(|(_, f)| Arc::clone(f));
        match cached {
            Some(f) => f,
            None => match UnitFile::parse(&name, &object.value.text, None) {
                Ok(file) => {
                    let f = Arc::new(file.fleet);
                    lock(&ctx.index).set_constraints(&unit, object.mod_revision, Arc::clone(&f));
                    f
                }
                Err(e) => {
                    return note(&ctx, &unit, format!("the unit file does not parse: {e}")).await;
                }
            },
        }
    };
    let desired = Placement {
        unit: name.clone(),
        machine: String::new(),
        text: object.value.text.clone(),
        target: object.value.desired,
        restarts: object.value.restarts,
    };
    if fleet.global {
        reconcile_global(&ctx, &unit, &fleet, object, desired).await
    } else {
        reconcile_one(&ctx, &unit, &fleet, object, desired).await
    }
}

/// Where a placed unit's machine stands.
enum Standing {
    Fine,
    /// Lost, within the grace period: wait this long.
    Waiting(Duration),
    /// Lost past the grace period, or it can no longer take the unit.
    Leave,
}

fn standing(ctx: &Ctx, ix: &Index, unit: &str, fleet: &FleetSection, machine: &str) -> Standing {
    match ix.machines.get(machine).filter(|m| m.live) {
        Some(m)
            if m.draining
                && !fleet.global
                && schedule::choose(unit, fleet, ix.machines.iter(), Some(machine), &|u| {
                    ix.lookup(u)
                })
                .is_ok() =>
        {
            tracing::info!(
                unit,
                machine,
                "unit leaves a machine draining for an OS update"
            );
            Standing::Leave
        }
        Some(m) => match schedule::able(unit, fleet, machine, m, &|u| ix.lookup(u)) {
            Ok(()) => Standing::Fine,
            Err(why) => {
                tracing::info!(
                    unit,
                    machine,
                    ?why,
                    "unit can no longer stay on its machine"
                );
                Standing::Leave
            }
        },
        None => {
            let since = *ix.lost_since.get(machine).unwrap_or(&Instant::now());
            let gone = since.elapsed();
            if gone >= ctx.config.grace {
                Standing::Leave
            } else {
                Standing::Waiting(ctx.config.grace - gone)
            }
        }
    }
}

async fn reconcile_one(
    ctx: &Ctx,
    unit: &str,
    fleet: &Arc<FleetSection>,
    object: &Object<UnitRecord>,
    desired: Placement,
) -> Result<Action, EngineError> {
    // Decide under the lock; reserve the new machine at once so that
    // concurrent decisions see its load.
    let (keep, leave, wait, choice) = {
        let mut ix = lock(&ctx.index);
        // Lost machines get a timestamp the first time a unit notices.
        for m in ix.placed(unit) {
            if !ix.machines.get(&m).is_some_and(|v| v.live) {
                ix.lost_since.entry(m).or_insert_with(Instant::now);
            }
        }
        let mut keep = None;
        let mut leave = Vec::new();
        let mut wait = None;
        for m in ix.placed(unit) {
            match (keep.is_some(), standing(ctx, &ix, unit, fleet, &m)) {
                (false, Standing::Fine) => keep = Some(m),
                (false, Standing::Waiting(d)) => {
                    keep = Some(m);
                    wait = Some(d);
                }
                // A second placement (a race lost long ago) or a bad one.
                _ => leave.push(m),
            }
        }
        let choice = if keep.is_none() {
            let exclude = leave.first().cloned();
            let r = schedule::choose(unit, fleet, ix.machines.iter(), exclude.as_deref(), &|u| {
                ix.lookup(u)
            });
            match &r {
                Ok(m) => {
                    ix.place(m, unit);
                    ix.pending.remove(unit);
                }
                Err(_) => {
                    ix.pending.insert(unit.to_owned());
                }
            }
            Some(r)
        } else {
            ix.pending.remove(unit);
            None
        };
        (keep, leave, wait, choice)
    };
    let mut ops: Vec<RequestOp> = Vec::new();
    let mut compares = vec![mod_is(UnitRecord::PREFIX.key(unit), object.mod_revision)];
    for m in &leave {
        let key = Placement::PREFIX.key(&Placement::name(m, unit));
        if let Some(p) = ctx.placements.get(&Placement::name(m, unit)) {
            compares.push(mod_is(key.clone(), p.mod_revision));
        }
        ops.push(delete_op(key));
        tracing::info!(unit, from = %m, "unit leaves its machine");
    }
    let mut reserved = None;
    match (&keep, choice) {
        (Some(m), _) => {
            let name = Placement::name(m, unit);
            let current = ctx.placements.get(&name);
            let want = Placement {
                machine: m.clone(),
                ..desired
            };
            if current.as_ref().is_none_or(|c| c.value != want) {
                compares.push(mod_is(
                    Placement::PREFIX.key(&name),
                    current.map_or(0, |c| c.mod_revision),
                ));
                ops.push(put_op(Placement::PREFIX.key(&name), want.encode(), 0));
            }
        }
        (None, Some(Ok(m))) => {
            let name = Placement::name(&m, unit);
            let want = Placement {
                machine: m.clone(),
                ..desired
            };
            compares.push(mod_is(Placement::PREFIX.key(&name), 0));
            ops.push(put_op(Placement::PREFIX.key(&name), want.encode(), 0));
            tracing::info!(unit, machine = %m, "unit placed");
            reserved = Some(m);
        }
        (None, Some(Err(reason))) => {
            if !ops.is_empty() {
                write(ctx, compares, ops, unit, None).await?;
            }
            return note(ctx, unit, reason).await;
        }
        (None, None) => unreachable!("a choice is made whenever nothing is kept"),
    }
    if !ops.is_empty() {
        write(ctx, compares, ops, unit, reserved.as_deref()).await?;
    }
    clear_note(ctx, unit).await?;
    Ok(match wait {
        Some(d) => Action::Requeue(d),
        None => Action::AwaitChange,
    })
}

async fn reconcile_global(
    ctx: &Ctx,
    unit: &str,
    fleet: &Arc<FleetSection>,
    object: &Object<UnitRecord>,
    desired: Placement,
) -> Result<Action, EngineError> {
    let (add, leave, wait) = {
        let mut ix = lock(&ctx.index);
        ix.pending.remove(unit);
        let placed: BTreeSet<String> = ix.placed(unit).into_iter().collect();
        let mut add = Vec::new();
        for (id, m) in ix.machines.iter().filter(|(_, m)| m.live) {
            if !placed.contains(id) && schedule::able(unit, fleet, id, m, &|u| ix.lookup(u)).is_ok()
            {
                add.push(id.clone());
            }
        }
        let mut leave = Vec::new();
        let mut wait: Option<Duration> = None;
        for m in &placed {
            if !ix.machines.get(m).is_some_and(|v| v.live) {
                ix.lost_since.entry(m.clone()).or_insert_with(Instant::now);
            }
            match standing(ctx, &ix, unit, fleet, m) {
                Standing::Fine => {}
                Standing::Waiting(d) => wait = Some(wait.map_or(d, |w| w.min(d))),
                Standing::Leave => leave.push(m.clone()),
            }
        }
        for m in &add {
            ix.place(m, unit);
        }
        (add, leave, wait)
    };
    let unit_cmp = || mod_is(UnitRecord::PREFIX.key(unit), object.mod_revision);
    let mut result = Ok(());
    for m in &add {
        let name = Placement::name(m, unit);
        let want = Placement {
            machine: m.clone(),
            ..desired.clone()
        };
        let r = write(
            ctx,
            vec![unit_cmp(), mod_is(Placement::PREFIX.key(&name), 0)],
            vec![put_op(Placement::PREFIX.key(&name), want.encode(), 0)],
            unit,
            Some(m),
        )
        .await;
        result = result.and(r);
    }
    for m in &leave {
        tracing::info!(unit, machine = %m, "global unit leaves a machine");
        result = result.and(
            write(
                ctx,
                vec![],
                vec![delete_op(Placement::PREFIX.key(&Placement::name(m, unit)))],
                unit,
                None,
            )
            .await,
        );
    }
    // Existing placements follow the desired state and restarts.
    let stale: Vec<(String, i64)> = {
        let ix = lock(&ctx.index);
        ix.placed(unit)
            .into_iter()
            .filter(|m| !add.contains(m) && !leave.contains(m))
            .filter_map(|m| {
                let p = ctx.placements.get(&Placement::name(&m, unit))?;
                let want = Placement {
                    machine: m.clone(),
                    ..desired.clone()
                };
                (p.value != want).then_some((m, p.mod_revision))
            })
            .collect()
    };
    for (m, rev) in stale {
        let name = Placement::name(&m, unit);
        let want = Placement {
            machine: m.clone(),
            ..desired.clone()
        };
        result = result.and(
            write(
                ctx,
                vec![unit_cmp(), mod_is(Placement::PREFIX.key(&name), rev)],
                vec![put_op(Placement::PREFIX.key(&name), want.encode(), 0)],
                unit,
                None,
            )
            .await,
        );
    }
    result?;
    clear_note(ctx, unit).await?;
    Ok(wait.map_or(Action::AwaitChange, Action::Requeue))
}

/// One transaction; a failed compare undoes the reservation of
/// `reserved` and asks to look again.
async fn write(
    ctx: &Ctx,
    compare: Vec<herd_client::proto::etcdserverpb::Compare>,
    success: Vec<RequestOp>,
    unit: &str,
    reserved: Option<&str>,
) -> Result<(), EngineError> {
    let r = ctx
        .store
        .txn(TxnRequest {
            compare,
            success,
            failure: Vec::new(),
        })
        .await;
    let ok = matches!(r, Ok(ref t) if t.succeeded);
    if !ok && let Some(m) = reserved {
        // Only undo if the store did not place it meanwhile.
        if ctx.placements.get(&Placement::name(m, unit)).is_none() {
            lock(&ctx.index).unplace(m, unit);
        }
    }
    match r {
        Ok(t) if t.succeeded => Ok(()),
        Ok(_) => Err(EngineError::Raced(unit.to_owned())),
        Err(e) => Err(e.into()),
    }
}

/// Removes every placement of `unit` (inactive, destroyed, or a template).
async fn unplace_all(ctx: &Ctx, unit: &str) -> Result<Action, EngineError> {
    let placed = lock(&ctx.index).placed(unit);
    for m in placed {
        tracing::info!(unit, machine = %m, "unit unplaced");
        ctx.store
            .delete(Placement::PREFIX.key(&Placement::name(&m, unit)))
            .await?;
    }
    clear_note(ctx, unit).await?;
    Ok(Action::AwaitChange)
}

/// Records why `unit` has no machine, and looks again later.
async fn note(ctx: &Ctx, unit: &str, reason: String) -> Result<Action, EngineError> {
    let current = ctx.notes.get(unit);
    if current.is_none_or(|n| n.value.reason != reason) {
        tracing::info!(unit, %reason, "unit cannot be placed");
        let n = Unschedulable { reason };
        ctx.store
            .put(Unschedulable::PREFIX.key(unit), n.encode(), 0)
            .await?;
    }
    Ok(Action::Requeue(ctx.config.retry))
}

async fn clear_note(ctx: &Ctx, unit: &str) -> Result<(), EngineError> {
    if ctx.notes.get(unit).is_some() {
        ctx.store.delete(Unschedulable::PREFIX.key(unit)).await?;
    }
    Ok(())
}
