//! A backend that runs nothing: a unit is `active (running)` the moment
//! it should run. For the benchmark's thousand in-process machines, where
//! what is measured is scheduling and the store, not processes.

use tokio::sync::watch;

use super::service::{Status, Want};

/// Follows `want` until the unit is removed.
pub async fn supervise(mut want: watch::Receiver<Option<Want>>, status: watch::Sender<Status>) {
    loop {
        let w = want.borrow_and_update().clone();
        let Some(w) = w else { return };
        status.send_if_modified(|s| {
            let (active, sub, pid) = if w.run {
                ("active", "running", Some(1))
            } else {
                ("inactive", "dead", None)
            };
            let changed = s.active != active || s.generation != w.generation;
            s.active = active;
            s.sub = sub;
            s.main_pid = pid;
            s.generation = w.generation;
            changed
        });
        if want.changed().await.is_err() {
            return;
        }
    }
}
