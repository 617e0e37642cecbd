//! The runner's reports in the store: one `reports/<machine>/<unit>` per
//! unit, attached to the runner's own session lease (a machine that dies
//! takes its reports with it). Updates are coalesced per unit; a session
//! that ends is replaced and every report written again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use herd_client::kit::{Backoff, Resource};
use herd_client::session::Session;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::records::{Placement, Report};
use crate::store::Store;

/// `None`: the unit is gone from this machine.
pub type Update = (String, Option<Report>);

/// Writes `updates` for `machine` until `cancel` fires or every sender is gone.
pub async fn run(
    store: Store,
    machine: String,
    ttl: Duration,
    mut updates: mpsc::UnboundedReceiver<Update>,
    cancel: CancellationToken,
) {
    let mut current: BTreeMap<String, Report> = BTreeMap::new();
    let mut dirty: BTreeSet<String> = BTreeSet::new();
    let mut session: Option<Session> = None;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        // Take everything queued, then write.
        let first = if dirty.is_empty() {
            tokio::select! {
                _ = cancel.cancelled() => break,
                u = updates.recv() => match u { Some(u) => Some(u), None => break },
                () = ended(&session) => None,
            }
        } else {
            None
        };
        for (unit, report) in first
            .into_iter()
            .chain(std::iter::from_fn(|| updates.try_recv().ok()))
        {
            match report {
                Some(r) => {
                    current.insert(unit.clone(), r);
                }
                None => {
                    current.remove(&unit);
                }
            }
            dirty.insert(unit);
        }
        if session.as_ref().is_none_or(Session::has_ended) {
            match Session::new(&store.client, ttl).await {
                Ok(s) => {
                    session = Some(s);
                    dirty.extend(current.keys().cloned());
                }
                Err(e) => {
                    let d = backoff.next_delay();
                    tracing::warn!(error = %e, delay = ?d, "cannot open the unit reports' session; retrying");
                    tokio::select! { _ = cancel.cancelled() => break, () = tokio::time::sleep(d) => {} }
                    continue;
                }
            }
        }
        let lease = session.as_ref().map_or(0, Session::lease);
        let mut failed = false;
        for unit in std::mem::take(&mut dirty) {
            let key = Report::PREFIX.key(&Placement::name(&machine, &unit));
            let r = match current.get(&unit) {
                Some(rep) => store.put(key, rep.encode(), lease).await,
                None => store.delete(key).await,
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, unit, "writing a unit report; retrying");
                dirty.insert(unit);
                failed = true;
            }
        }
        if failed {
            let d = backoff.next_delay();
            tokio::select! { _ = cancel.cancelled() => break, () = tokio::time::sleep(d) => {} }
        } else {
            backoff.reset();
        }
    }
    // Leaving: the reports go with the session.
    if let Some(s) = session {
        let _ = s.close().await;
    }
}

async fn ended(session: &Option<Session>) {
    match session {
        Some(s) => s.ended().await,
        None => std::future::pending().await,
    }
}
