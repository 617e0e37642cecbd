//! The cluster as seen from inside the lab network: each machine's store
//! member (leader / voter / learner, term), the member list, the
//! machines registered under `/herd/machines` and their OS update status
//! under `/herd/update/machines`.
//!
//! Queries run on a thread of their own that entered the lab namespace with
//! its own single-threaded runtime, so every socket the gRPC client opens
//! (and its background tasks) lives in the lab network.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use herd_client::keys::{MachineRecord, UpdateStatus};
use herd_client::kit::Scope;
use herd_client::proto::etcdserverpb::{MemberListRequest, StatusRequest};
use herd_client::{Client, Credentials};
use serde::Serialize;

use crate::layout::MachineId;

/// Errors reaching the lab network at all (unreachable machines are data,
/// not errors).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("entering namespace {netns}: {source}")]
    Enter {
        netns: String,
        source: std::io::Error,
    },
    #[error("starting the query runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Credentials(#[from] crate::pki::LabPkiError),
}

/// Runs `make()`'s future on a fresh thread inside namespace `netns`.
pub async fn in_netns<F, T>(
    netns: &str,
    make: impl FnOnce() -> F + Send + 'static,
) -> Result<T, ClusterError>
where
    F: Future<Output = T>,
    T: Send + 'static,
{
    let ns = netns.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| {
            crate::nsnet::enter(&ns).map_err(|source| ClusterError::Enter {
                netns: ns.clone(),
                source,
            })?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(ClusterError::Runtime)?;
            Ok(rt.block_on(make()))
        })();
        let _ = tx.send(result);
    });
    rx.await.expect("query thread always answers")
}

/// Role of one member in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreRole {
    Leader,
    Voter,
    Learner,
}

impl std::fmt::Display for StoreRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreRole::Leader => "leader",
            StoreRole::Voter => "voter",
            StoreRole::Learner => "learner",
        })
    }
}

/// One machine's store member, as it answers for itself.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub machine: String,
    pub endpoint: String,
    pub member_id: Option<String>,
    pub role: Option<StoreRole>,
    pub raft_term: Option<u64>,
    /// Why the machine did not answer.
    pub error: Option<String>,
}

/// The whole cluster view.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterView {
    pub members: Vec<MemberView>,
    /// Names in the member list (from the first machine that answered).
    pub member_names: Vec<String>,
    /// The learners among them, as that member's membership says (a
    /// machine's own view of its role can lag behind).
    pub learners: Vec<String>,
    /// Machines registered in the store.
    pub registered: Vec<MachineRecord>,
    /// Pod subnets leased under `/herd/network/subnets/`.
    pub subnets: Vec<SubnetView>,
    /// Each machine's OS update status, as its agent reports it.
    pub updates: Vec<UpdateStatus>,
    /// Why the lists above are empty: no member that answered could read
    /// them.
    pub read_error: Option<String>,
}

/// One pod subnet lease, as the lab shows it (read raw: the lab knows
/// the record's few fields, not the network role's crate).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SubnetView {
    #[serde(default)]
    pub subnet: String,
    #[serde(rename = "MachineID")]
    pub machine_id: String,
    #[serde(rename = "PublicIP", default)]
    pub public_ip: Option<String>,
}

/// The agent's default `--max-voters`: machines beyond it stay learners.
const MAX_VOTERS: usize = 5;

/// How long one member gets for the member list and the lists under
/// `/herd/`.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The member list, registered machines, subnets and update statuses, as
/// member `endpoint` answers them (linearizable).
async fn read(endpoint: &str, credentials: &Credentials) -> Result<ClusterView, String> {
    let client = Client::connect_with(&[endpoint.to_owned()], credentials)
        .await
        .map_err(|e| e.to_string())?;
    let members = client
        .cluster()
        .member_list(MemberListRequest { linearizable: true })
        .await
        .map_err(|e| format!("member list: {}", e.message()))?
        .into_inner()
        .members;
    let learners = members
        .iter()
        .filter(|m| m.is_learner)
        .map(|m| m.name.clone())
        .collect();
    let member_names = members.into_iter().map(|m| m.name).collect();
    let (registered, _) = herd_client::kit::list::<MachineRecord>(&client, &Scope::All)
        .await
        .map_err(|e| format!("registered machines: {e}"))?;
    let (updates, _) = herd_client::kit::list::<UpdateStatus>(&client, &Scope::All)
        .await
        .map_err(|e| format!("update statuses: {e}"))?;
    Ok(ClusterView {
        members: Vec::new(),
        member_names,
        learners,
        registered: registered.into_iter().map(|o| o.value).collect(),
        subnets: subnets(&client)
            .await
            .map_err(|e| format!("subnets: {e}"))?,
        updates: updates.into_iter().map(|o| o.value).collect(),
        read_error: None,
    })
}

/// The prefix the network role keeps its subnet leases under.
const SUBNETS: &str = "/herd/network/subnets/";

async fn subnets(client: &Client) -> Result<Vec<SubnetView>, String> {
    let key = SUBNETS.as_bytes().to_vec();
    let resp = client
        .kv()
        .range(herd_client::proto::etcdserverpb::RangeRequest {
            range_end: herd_client::prefix_end(&key),
            key,
            ..Default::default()
        })
        .await
        .map_err(|e| e.message().to_owned())?;
    Ok(resp
        .into_inner()
        .kvs
        .iter()
        .filter_map(|kv| {
            let mut v: SubnetView = serde_json::from_slice(&kv.value).ok()?;
            // `10.244.3.0-24` → `10.244.3.0/24`
            v.subnet = std::str::from_utf8(kv.key.strip_prefix(SUBNETS.as_bytes())?)
                .ok()?
                .replacen('-', "/", 1);
            Some(v)
        })
        .collect())
}

impl ClusterView {
    /// The machine whose member says it leads, if any.
    pub fn leader(&self) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.role == Some(StoreRole::Leader))
            .map(|m| m.machine.as_str())
    }

    /// Whether `machine` answers, is in the member list and is registered,
    /// and votes: a learner has joined only once the cluster has all the
    /// voters it takes (a cluster of learners survives no failure).
    pub fn has_joined(&self, machine: MachineId) -> bool {
        let name = machine.to_string();
        let voters_full = self.member_names.len() - self.learners.len() >= MAX_VOTERS;
        self.members.iter().any(|m| {
            m.machine == name
                && match m.role {
                    Some(StoreRole::Learner) => voters_full,
                    Some(_) => true,
                    None => false,
                }
        }) && self.member_names.contains(&name)
            && (voters_full || !self.learners.contains(&name))
            && self.registered.iter().any(|r| r.hostname == name)
    }
}

async fn member_view(id: MachineId, credentials: &Credentials, timeout: Duration) -> MemberView {
    let endpoint = id.client_endpoint();
    let mut view = MemberView {
        machine: id.to_string(),
        endpoint: endpoint.clone(),
        member_id: None,
        role: None,
        raft_term: None,
        error: None,
    };
    let status = async {
        let client = Client::connect_with(std::slice::from_ref(&endpoint), credentials)
            .await
            .map_err(|e| e.to_string())?;
        client
            .maintenance()
            .status(StatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|e| e.message().to_owned())
    };
    match tokio::time::timeout(timeout, status).await {
        Ok(Ok(s)) => {
            let me = s.header.map(|h| h.member_id).unwrap_or_default();
            view.member_id = Some(format!("{me:x}"));
            view.raft_term = Some(s.raft_term);
            view.role = Some(if s.is_learner {
                StoreRole::Learner
            } else if s.leader == me && me != 0 {
                StoreRole::Leader
            } else {
                StoreRole::Voter
            });
        }
        Ok(Err(e)) => view.error = Some(e),
        Err(_) => view.error = Some(format!("no answer within {timeout:?}")),
    }
    view
}

/// Asks every machine in `machines` about itself, and the first that answers
/// about the member list and the registered machines, as the lab's root
/// (its credentials in `lab_dir`).
pub async fn view(
    lab_dir: &Path,
    netns: &str,
    machines: Vec<MachineId>,
) -> Result<ClusterView, ClusterError> {
    let credentials = crate::pki::credentials(lab_dir)?;
    in_netns(netns, move || async move {
        let timeout = Duration::from_secs(3);
        let members = futures::future::join_all(
            machines
                .iter()
                .map(|id| member_view(*id, &credentials, timeout)),
        )
        .await;
        let mut view = ClusterView::default();
        for m in members.iter().filter(|m| m.role.is_some()) {
            // A busy (TCG) machine can take seconds for a list; a failed
            // read is said, and the next member asked, never shown as an
            // empty cluster.
            match tokio::time::timeout(READ_TIMEOUT, read(&m.endpoint, &credentials)).await {
                Ok(Ok(read)) => {
                    view = read;
                    view.read_error = None;
                    break;
                }
                Ok(Err(e)) => view.read_error = Some(format!("{}: {e}", m.machine)),
                Err(_) => {
                    view.read_error =
                        Some(format!("{}: no answer within {READ_TIMEOUT:?}", m.machine))
                }
            }
        }
        view.members = members;
        view
    })
    .await
}
