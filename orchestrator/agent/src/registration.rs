//! This machine's entry in the cluster, `/herd/machines/<machine-id>`: its
//! record, attached to the agent's session lease (a generous TTL, so that a
//! slow or briefly partitioned machine keeps its entry — fleet moved work
//! on every blip), kept there by the first controller written with the
//! kit: whatever happens to the entry (deleted by an operator, expired
//! with its lease during a long partition, overwritten), it is reconciled
//! back; a session that ended is replaced. A clean stop removes the entry
//! at once; a crash leaves it to expire.
//!
//! A registration carries the boot id: the update role's health gate
//! (`herd_update::health::StoreMember`) waits for this boot's record before
//! it marks a new slot good.

use std::sync::Arc;
use std::time::Duration;

use herd_client::keys::MachineRecord;
use herd_client::kit::{Action, Controller, Request, Scope};
use herd_client::proto::etcdserverpb::PutRequest;
use herd_client::session::Session;
use herd_client::stage::AgentStage;
use herd_client::{Client, ClientError};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Liveness TTL of a machine's entry.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// Why one registration attempt failed (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("opening a session: {0}")]
    Session(ClientError),
    #[error("writing {key}: {source}")]
    Put { key: String, source: ClientError },
}

struct Ctx {
    client: Client,
    desired: MachineRecord,
    ttl: Duration,
    session: Mutex<Option<Session>>,
}

impl Ctx {
    /// The live session's lease, opening a new session if there is none or
    /// the last one ended.
    async fn lease(&self) -> Result<i64, RegistrationError> {
        let mut session = self.session.lock().await;
        if let Some(s) = session.as_ref()
            && !s.has_ended()
        {
            return Ok(s.lease());
        }
        let fresh = Session::new(&self.client, self.ttl)
            .await
            .map_err(RegistrationError::Session)?;
        let lease = fresh.lease();
        // An ended session's lease may still exist on the store; it holds
        // nothing once the entry moves to the new one.
        *session = Some(fresh);
        Ok(lease)
    }
}

async fn reconcile(
    ctx: Arc<Ctx>,
    req: Request<MachineRecord>,
) -> Result<Action, RegistrationError> {
    let lease = ctx.lease().await?;
    let current = req
        .object
        .as_ref()
        .is_some_and(|o| o.value == ctx.desired && o.lease == lease);
    if !current {
        let key = ctx.desired.key();
        ctx.client
            .kv()
            .put(PutRequest {
                key: key.clone().into_bytes(),
                value: serde_json::to_vec(&ctx.desired).expect("a record serializes"),
                lease,
                ..Default::default()
            })
            .await
            .map_err(|s| RegistrationError::Put {
                key: key.clone(),
                source: s.into(),
            })?;
        tracing::info!(%key, lease = format!("{lease:x}"), "machine registered");
        AgentStage::Registered {
            machine_id: ctx.desired.machine_id.clone(),
        }
        .report();
    }
    // The session ending is not a change in the store: look again within
    // a third of the TTL (the cache answers; no store read).
    Ok(Action::Requeue(ctx.ttl / 3))
}

/// Keeps `record` registered until `cancel` fires; then removes it.
pub async fn run(client: Client, record: MachineRecord, ttl: Duration, cancel: CancellationToken) {
    let controller = Controller::<MachineRecord>::new(
        "machine-registration",
        client.clone(),
        Scope::Name(record.machine_id.clone()),
    )
    .seed([record.machine_id.clone()])
    .concurrency(1);
    let ctx = Arc::new(Ctx {
        client,
        desired: record,
        ttl,
        session: Mutex::new(None),
    });
    controller.run(Arc::clone(&ctx), reconcile, cancel).await;
    // Leaving cleanly: revoking the lease drops the entry now.
    if let Some(session) = ctx.session.lock().await.take()
        && let Err(e) = session.close().await
    {
        tracing::debug!(error = %e, "removing the machine entry at shutdown");
    }
}

/// A registration running on its own task: [`Registration::close`] stops it
/// cleanly (the entry goes at once); dropping it is a crash (the entry
/// stays until its lease expires).
pub struct Registration {
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Registration {
    pub fn start(client: Client, record: MachineRecord, ttl: Duration) -> Registration {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(client, record, ttl, cancel.clone()));
        Registration {
            cancel,
            task: Some(task),
        }
    }

    pub async fn close(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use herd_client::keys::{MACHINES, Role};
    use herd_client::proto::etcdserverpb::RangeRequest;

    use crate::facts::describe;

    /// A real etcd (Debian's etcd-server) on loopback, killed on drop.
    struct Etcd {
        child: std::process::Child,
        _dir: tempfile::TempDir,
        endpoint: String,
    }

    impl Drop for Etcd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn etcd() -> Etcd {
        use herd_store::launch::{self, Entry, Server};
        let dir = tempfile::tempdir().unwrap();
        let member = launch::members(1, "etcd", dir.path()).remove(0);
        let child = launch::command(
            Server::Etcd,
            std::path::Path::new("etcd"),
            &member,
            Entry::Alone,
            &launch::LaunchSecurity::Plaintext {
                token: "test".into(),
            },
            &[],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcd is not installed: apt-get install etcd-server (scripts/deps does this)");
        Etcd {
            child,
            _dir: dir,
            endpoint: member.client.to_string(),
        }
    }

    async fn connect(endpoint: &str) -> Client {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(c) = Client::connect(&[endpoint.to_owned()]).await
                && c.kv()
                    .range(RangeRequest {
                        key: b"x".to_vec(),
                        ..Default::default()
                    })
                    .await
                    .is_ok()
            {
                return c;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd never answered on {endpoint}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every registered machine.
    async fn list(client: &Client) -> Vec<MachineRecord> {
        let resp = client
            .kv()
            .range(RangeRequest {
                key: MACHINES.as_str().as_bytes().to_vec(),
                range_end: herd_client::prefix_end(MACHINES.as_str().as_bytes()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        resp.kvs
            .iter()
            .map(|kv| serde_json::from_slice(&kv.value).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn registration_is_leased_listed_and_restored_after_deletion() {
        let etcd = etcd();
        let client = connect(&etcd.endpoint).await;
        let record = describe("m1", "127.0.0.1".parse().unwrap(), &[Role::Store], "test").unwrap();
        assert_eq!(record.machine_id, "000000000000");
        assert_eq!(record.boot_id.len(), 36, "a UUID: {}", record.boot_id);

        let registration =
            Registration::start(client.clone(), record.clone(), Duration::from_secs(2));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while list(&client).await != vec![record.clone()] {
            assert!(tokio::time::Instant::now() < deadline, "never registered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The entry hangs off a lease.
        let kv = client
            .kv()
            .range(RangeRequest {
                key: record.key().into_bytes(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_ne!(kv.kvs[0].lease, 0, "entry is leased");

        // Deleted behind its back: the task puts it back.
        client
            .kv()
            .delete_range(herd_client::proto::etcdserverpb::DeleteRangeRequest {
                key: record.key().into_bytes(),
                ..Default::default()
            })
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while list(&client).await.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never re-registered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // A clean stop removes it at once.
        registration.close().await;
        assert!(list(&client).await.is_empty());
    }

    #[tokio::test]
    async fn a_dead_machine_drops_out_when_its_lease_expires() {
        let etcd = etcd();
        let client = connect(&etcd.endpoint).await;
        let record = describe("m2", "127.0.0.1".parse().unwrap(), &[Role::Worker], "test").unwrap();
        let registration =
            Registration::start(client.clone(), record.clone(), Duration::from_secs(2));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while list(&client).await.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "never registered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Crash: the task and its keep-alive stop, nobody deletes the entry.
        drop(registration);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !list(&client).await.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "entry outlived its lease"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
