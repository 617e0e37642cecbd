//! Group proposal: concurrent client commands on the leader become one Raft entry.
//!
//! openraft 0.9's core handles one append at a time (`RaftCore::append_to_log`),
//! so each `client_write` was one log entry, one fsync and one replication
//! round of its own (measured before batching: exactly 1.00 entries per
//! fsync on the leader under 64 clients; `store::log` now overlaps the
//! leader's fsync with replication, but the per-entry cost of a round
//! stays). The proposer keeps at most [`MAX_IN_FLIGHT`] proposals inside
//! openraft; commands arriving meanwhile queue here and go in as one
//! [`Command::Batch`] entry: one fsync and one replication round for the
//! whole group. A lone command is proposed as itself, so a single client
//! pays no extra latency.

use std::time::Duration;

use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::StoreError;
use super::types::{Command, CommandResponse, PeerNode, TypeConfig};

/// Proposals inside openraft at once: two lets the leader append (and fsync)
/// the next group while the previous one is out for replication.
const MAX_IN_FLIGHT: usize = 2;
/// Bounds on one group, so a batch entry stays well below a snapshot-sized message.
const MAX_BATCH: usize = 512;
const MAX_BATCH_BYTES: usize = 1 << 20;

type Reply = oneshot::Sender<Result<CommandResponse, StoreError>>;

struct Pending {
    cmd: Command,
    size: usize,
    reply: Reply,
}

/// Maps openraft's write errors to the store's (a follower says "no leader").
pub(super) fn write_err(e: RaftError<u64, ClientWriteError<u64, PeerNode>>) -> StoreError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => StoreError::NoLeader,
        other => StoreError::raft("client write", other),
    }
}

/// Rough encoded size of a command, for the batch byte bound.
fn approx_size(cmd: &Command) -> usize {
    match cmd {
        Command::Put(p) => p.key.len() + p.value.len() + 32,
        Command::DeleteRange(d) => d.key.len() + d.range_end.len() + 16,
        Command::Batch(cmds) => cmds.iter().map(approx_size).sum(),
        Command::Txn(_) => postcard::to_allocvec(cmd).map_or(usize::MAX / 2, |v| v.len()),
        Command::Compact { .. }
        | Command::LeaseGrant { .. }
        | Command::LeaseRevoke { .. }
        | Command::Auth(_) => 256,
    }
}

/// Owns the batching task; dropping it stops the task and its proposals.
pub struct Proposer {
    queue: mpsc::UnboundedSender<Pending>,
    task: JoinHandle<()>,
}

impl Drop for Proposer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proposer {
    /// Starts the batching task on the current runtime; `timeout` bounds each proposal.
    pub fn start(raft: Raft<TypeConfig>, timeout: Duration) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(raft, timeout, rx));
        Proposer { queue, task }
    }

    /// Proposes `cmd` on this member's Raft (it must be the leader, else
    /// [`StoreError::NoLeader`]) and returns its applied response.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResponse, StoreError> {
        let (reply, rx) = oneshot::channel();
        let size = approx_size(&cmd);
        self.queue
            .send(Pending { cmd, size, reply })
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }
}

async fn run(raft: Raft<TypeConfig>, timeout: Duration, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let slots = std::sync::Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // Dropped with this task (abort), which aborts the proposals in flight.
    let mut in_flight = JoinSet::new();
    loop {
        // Wait for a free slot first: what arrives meanwhile joins the next group.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut bytes = first.size;
        let mut group = vec![first];
        while group.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.size;
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        while in_flight.try_join_next().is_some() {}
        let raft = raft.clone();
        in_flight.spawn(async move {
            commit(&raft, timeout, group).await;
            drop(permit);
        });
    }
}

async fn commit(raft: &Raft<TypeConfig>, timeout: Duration, group: Vec<Pending>) {
    let (cmds, replies): (Vec<Command>, Vec<Reply>) =
        group.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let cmd = match <[Command; 1]>::try_from(cmds) {
        Ok([one]) => one,
        Err(cmds) => Command::Batch(cmds),
    };
    let fail = |replies: Vec<Reply>, err: &dyn Fn() -> StoreError| {
        for r in replies {
            let _ = r.send(Err(err()));
        }
    };
    match tokio::time::timeout(timeout, raft.client_write(cmd)).await {
        Err(_) => fail(replies, &|| StoreError::Timeout),
        Ok(Err(e)) => fail(replies, &|| write_err(e.clone())),
        Ok(Ok(written)) => match written.data {
            CommandResponse::Batch(resps) if resps.len() == replies.len() && replies.len() > 1 => {
                for (r, resp) in replies.into_iter().zip(resps) {
                    let _ = r.send(Ok(resp));
                }
            }
            resp if replies.len() == 1 => {
                for r in replies {
                    let _ = r.send(Ok(resp.clone()));
                }
            }
            other => fail(replies, &|| {
                StoreError::Unexpected(format!("a batch entry was answered with {other:?}"))
            }),
        },
    }
}
