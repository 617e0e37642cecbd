//! Linearizable reads share read-index rounds, as etcd's read loop does.
//!
//! A read index costs the leader one round of heartbeats to a quorum
//! (openraft's `ensure_linearizable`), and a follower one forwarded request
//! to the leader. Done per read, 64 concurrent readers paid 64 rounds.
//! Here one task per member runs rounds back to back; every read that
//! arrives while a round is under way waits for the next one and shares
//! its answer. A round that began before a read arrived never answers it:
//! its index could miss a write acknowledged before the read was invoked.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use super::StoreError;

type Reply = oneshot::Sender<Result<u64, StoreError>>;

/// The handle reads wait on; the task behind it stops when every handle
/// is gone or its owner aborts it.
#[derive(Clone)]
pub(crate) struct ReadIndex {
    requests: mpsc::UnboundedSender<Reply>,
}

impl ReadIndex {
    /// The handle and the task's future, which runs `round` once per batch
    /// of waiting reads (the owner spawns it and keeps its handle).
    pub(crate) fn new<F, Fut>(round: F) -> (ReadIndex, impl Future<Output = ()> + Send)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64, StoreError>> + Send,
    {
        let (requests, mut rx) = mpsc::unbounded_channel::<Reply>();
        let task = async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, usize::MAX).await > 0 {
                // Readers that gave up meanwhile need no round.
                batch.retain(|r| !r.is_closed());
                if batch.is_empty() {
                    continue;
                }
                let result = round().await;
                for reply in batch.drain(..) {
                    let _ = reply.send(result.clone());
                }
            }
        };
        (ReadIndex { requests }, task)
    }

    /// A log index this member may serve a linearizable read at, once it
    /// has applied it; taken after this call began.
    pub(crate) async fn get(&self) -> Result<u64, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(tx).map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn reads_arriving_during_a_round_wait_for_the_next_one() {
        let rounds = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&rounds);
        let (reads, task) = ReadIndex::new(move || {
            let counted = Arc::clone(&counted);
            async move {
                // The index a round hands out is the number of rounds begun.
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(n)
            }
        });
        let task = tokio::spawn(task);
        let first = tokio::spawn({
            let reads = reads.clone();
            async move { reads.get().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Round 1 is under way: these share round 2.
        let later: Vec<_> = (0..20)
            .map(|_| {
                let reads = reads.clone();
                tokio::spawn(async move { reads.get().await })
            })
            .collect();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        for r in later {
            assert_eq!(r.await.unwrap().unwrap(), 2);
        }
        assert_eq!(rounds.load(Ordering::SeqCst), 2, "one round per batch");
        task.abort();
    }
}
