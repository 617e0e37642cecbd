//! Starting a member: open the data dir, start Raft and the peer listener,
//! then resume the member found there, or found a cluster, or join one.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::error::{InitializeError, RaftError};

use super::{Bootstrap, Config, Inner, Member, member_id, raft_err};
use crate::error::ConfigError;
use std::sync::atomic::AtomicU64;

use openraft::{Raft, SnapshotPolicy};
use tokio::net::TcpListener;

use super::lease::lease_loop;
use super::membership::{advertise_loop, promote_loop};
use super::meta::{MemberMeta, cluster_id_of, read_meta, write_meta};
use crate::StoreError;
use crate::engine::StorageKind;
use crate::log::LogStore;
use crate::peer::{
    self, ForwardHandler, JoinHandler, JoinRequest, MemberCheck, Network, Partition, PeerClient,
};
use crate::peer::{Forward, ForwardResponse, WireError};
use crate::propose::Proposer;
use crate::read_index::ReadIndex;
use crate::sm::StateMachine;
use crate::types::PeerNode;

impl Member {
    /// Opens the data dir, starts Raft and the peer listener, then bootstraps,
    /// joins, or simply resumes (a data dir that already belongs to a cluster
    /// is never re-initialized nor re-joined).
    pub async fn start(config: Config) -> Result<Member, StoreError> {
        if config.name.is_empty() {
            return Err(ConfigError::EmptyName.into());
        }
        if config.advertise_peer.is_none() && config.listen_peer.ip().is_unspecified() {
            return Err(ConfigError::WildcardPeer(config.listen_peer).into());
        }
        if let Bootstrap::Found(ic) = &config.bootstrap
            && !ic.is_empty()
            && !ic.iter().any(|(n, _)| *n == config.name)
        {
            return Err(ConfigError::NotInInitialCluster(config.name.clone()).into());
        }
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StoreError::io(&config.data_dir, e))?;
        // One process per data dir: a second member on it would corrupt it.
        // The OS drops the lock when the process dies, even on SIGKILL.
        let lock_path = config.data_dir.join("LOCK");
        let lock = std::fs::File::create(&lock_path).map_err(|e| StoreError::io(&lock_path, e))?;
        lock.try_lock()
            .map_err(|_| ConfigError::DataDirInUse(config.data_dir.clone()))?;
        let meta = read_meta(&config.data_dir)?;
        if let Some(m) = &meta
            && m.name != config.name
        {
            return Err(ConfigError::DataDirOfAnother {
                dir: config.data_dir.clone(),
                owner: m.name.clone(),
                name: config.name.clone(),
            }
            .into());
        }
        let storage = match (config.storage, &meta) {
            (Some(asked), Some(m)) if asked != m.storage => {
                return Err(ConfigError::StorageMismatch {
                    dir: config.data_dir.clone(),
                    recorded: m.storage,
                    asked,
                }
                .into());
            }
            (Some(asked), _) => asked,
            (None, Some(m)) => m.storage,
            (None, None) => StorageKind::DEFAULT,
        };
        let id = meta
            .as_ref()
            .map_or_else(|| member_id(&config.name), |m| m.id);
        let raft_dir = config.data_dir.join("raft");
        // The leader's fsync overlaps replication; the state machine and the
        // peer transport wait on the log's durable end (`store::log`).
        let log = LogStore::open_with(storage, &raft_dir)?
            .step_down_on_restart(id)
            .overlap_leader_flush(id);
        let sm = StateMachine::open_gated(&raft_dir, Some(log.durable()))?;

        let raft_config = openraft::Config {
            cluster_name: "herd".into(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_threshold),
            max_in_snapshot_log_to_keep: config.keep_logs_after_snapshot,
            max_payload_entries: 1000,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| ConfigError::Raft(Arc::new(e)))?;

        let listener =
            TcpListener::bind(config.listen_peer)
                .await
                .map_err(|e| ConfigError::Listen {
                    addr: config.listen_peer,
                    source: Arc::new(e),
                })?;
        let partition = Partition::default();
        let creds = super::security::credentials(&config, meta.is_some()).await?;
        let cluster_id = Arc::new(AtomicU64::new(
            meta.as_ref()
                .map(|m| m.cluster_id)
                .or(creds.joined)
                .unwrap_or(0),
        ));
        let client = Arc::new(PeerClient::new(
            id,
            creds.peer_client.clone(),
            cluster_id.clone(),
            partition.clone(),
        ));
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            Network {
                client: client.clone(),
                durable: log.durable(),
            },
            log.clone(),
            sm.clone(),
        )
        .await
        .map_err(raft_err)?;

        let mut read_rounds = None;
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let weak = weak.clone();
            let (reads, rounds) = ReadIndex::new(move || {
                let inner = weak.upgrade();
                async move {
                    match inner {
                        Some(inner) => inner.read_index_round().await,
                        None => Err(StoreError::Stopped),
                    }
                }
            });
            read_rounds = Some(rounds);
            Inner {
                id,
                name: config.name.clone(),
                cluster_id: cluster_id.clone(),
                raft: raft.clone(),
                sm,
                log,
                client,
                partition: partition.clone(),
                config: config.clone(),
                proposer: Proposer::start(raft.clone(), config.request_timeout),
                reads,
                transfer: tokio::sync::RwLock::new(()),
                pki: creds.pki.clone(),
                identity: creds.identity.clone(),
                _lock: lock,
            }
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        let handler: ForwardHandler = Arc::new(move |f: Forward| {
            let weak = weak.clone();
            Box::pin(async move {
                let Some(inner) = weak.upgrade() else {
                    return Err(WireError::Other("member is stopping".into()));
                };
                inner.handle_forward(f).await.map_err(WireError::from)
            })
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        let admit: JoinHandler = Arc::new(move |req: JoinRequest| {
            let weak = weak.clone();
            Box::pin(async move {
                let Some(inner) = weak.upgrade() else {
                    return Err(WireError::Other("member is stopping".into()));
                };
                inner.admit(req).await.map_err(WireError::from)
            })
        });
        let metrics = raft.metrics();
        let is_member: MemberCheck = Arc::new(move |id| {
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            membership.get_node(&id).is_some() || membership.nodes().next().is_none()
        });
        let mut member = Member {
            inner: inner.clone(),
            tasks: Vec::new(),
        };
        member.tasks.push(tokio::spawn(peer::serve(
            listener,
            raft.clone(),
            creds.peer_server,
            cluster_id,
            partition,
            handler,
            admit,
            is_member,
        )));
        member
            .tasks
            .push(tokio::spawn(lease_loop(Arc::downgrade(&inner))));
        member
            .tasks
            .push(tokio::spawn(super::renew::renew_loop(Arc::downgrade(
                &inner,
            ))));
        member.tasks.extend(read_rounds.map(tokio::spawn));

        if meta.is_none() {
            let me = inner.self_node();
            let cluster_id = match &config.bootstrap {
                Bootstrap::Found(ic) if !ic.is_empty() => {
                    let names: Vec<&str> = ic.iter().map(|(n, _)| n.as_str()).collect();
                    let bootstrapper = names.iter().min().copied();
                    if bootstrapper == Some(config.name.as_str()) {
                        let nodes: BTreeMap<u64, PeerNode> = ic
                            .iter()
                            .map(|(n, addr)| {
                                let node = if *n == config.name {
                                    me.clone()
                                } else {
                                    PeerNode {
                                        name: n.clone(),
                                        peer_addr: addr.clone(),
                                        client_addr: None,
                                    }
                                };
                                (member_id(n), node)
                            })
                            .collect();
                        inner.initialize(nodes).await?;
                    }
                    cluster_id_of(&names)
                }
                Bootstrap::Found(_) => {
                    inner.initialize(BTreeMap::from([(id, me)])).await?;
                    cluster_id_of(&[config.name.as_str()])
                }
                // Over TLS the member was admitted (and is a learner)
                // before Raft started; in plaintext it asks now.
                Bootstrap::Join(_) if creds.joined.is_some() => creds.joined.unwrap_or_default(),
                Bootstrap::Join(peer) => inner.join(peer).await?,
                Bootstrap::Resume => {
                    return Err(ConfigError::NothingToResume(config.data_dir.clone()).into());
                }
            };
            inner.cluster_id.store(cluster_id, Ordering::SeqCst);
            write_meta(
                &config.data_dir,
                &MemberMeta {
                    id,
                    name: config.name.clone(),
                    cluster_id,
                    storage,
                },
            )?;
        }
        member
            .tasks
            .push(tokio::spawn(advertise_loop(Arc::downgrade(&inner))));
        member
            .tasks
            .push(tokio::spawn(promote_loop(Arc::downgrade(&inner))));
        tracing::info!(member = %format!("{id:x}"), name = %config.name, peer = %config.listen_peer, "store member started");
        Ok(member)
    }
}

impl Inner {
    pub(super) async fn initialize(
        &self,
        nodes: BTreeMap<u64, PeerNode>,
    ) -> Result<(), StoreError> {
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            // Already initialized (e.g. crashed after initialize, before member.json): fine.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(raft_err(e)),
        }
    }

    /// Asks the member at `addr` to add us; retries until `join_timeout`.
    pub(super) async fn join(&self, addr: &str) -> Result<u64, StoreError> {
        let deadline = Instant::now() + self.config.join_timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let req = Forward::Join {
                id: self.id,
                node: self.self_node(),
            };
            match self.client.forward(0, addr, req, left).await {
                Ok(Ok(ForwardResponse::Joined { cluster_id })) => {
                    tracing::info!(via = %addr, "joined the cluster");
                    return Ok(cluster_id);
                }
                Ok(Ok(other)) => last = format!("unexpected answer {other:?}"),
                Ok(Err(e)) => last = StoreError::from(e).to_string(),
                Err(e) => last = e.to_string(),
            }
            tracing::warn!(via = %addr, error = %last, "join attempt failed; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(StoreError::Join {
            addr: addr.into(),
            detail: last,
        })
    }
}
