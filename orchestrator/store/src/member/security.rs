//! How a member proves who it is and how it gets the means to: its PKI
//! (loaded from `<data-dir>/pki/`, created with the cluster's CA when
//! founding, or obtained by joining with a token that pins the CA), the
//! peer transport's credentials built from it, and admitting machines that
//! join (checking their token, signing their certificate, adding them as
//! learners).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_pki::ca::{ClusterCa, LEAF_VALIDITY, signing_request};
use herd_pki::files::MemberPki;
use herd_pki::tls::{ALPN_PEER, ClientAuth, Current};
use herd_pki::{Identity, JoinToken, LiveIdentity};
use serde::{Deserialize, Serialize};

use super::{Bootstrap, Config, Inner, member_id};
use crate::StoreError;
use crate::error::ConfigError;
use crate::peer::{self, ClientSecurity, Forward, JoinGrant, JoinRequest, ServerSecurity, Token};
use crate::types::{
    CompareResult, CompareTarget, PeerNode, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

/// How members (and, for the client API, clients) prove who they are.
#[derive(Debug, Clone)]
pub enum Security {
    /// Mutual TLS with certificates from the cluster CA: the default.
    Tls(TlsSettings),
    /// Plaintext, members authenticated by a shared token only
    /// (`--insecure-plaintext`: tests and benchmarks against plaintext peers).
    Insecure { token: String },
}

/// What a TLS member starts from; a data dir that already holds its PKI
/// needs none of it.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// The cluster CA (certificate and key) for a member that founds the
    /// cluster with others, or was given it; a member founding alone
    /// creates one when this is `None`.
    pub ca: Option<ClusterCa>,
    /// How a new member joins: the token pins the CA and proves it may.
    pub join_token: Option<JoinToken>,
    /// Names and addresses this member's certificate covers (what others
    /// dial); its member name and 127.0.0.1 are always in.
    pub names: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// How long member certificates this member issues (its own, renewed
    /// with a third of it left, and joiners') are valid; `None`: 90 days.
    pub member_validity: Option<Duration>,
}

impl TlsSettings {
    pub fn member_validity(&self) -> Duration {
        self.member_validity.unwrap_or(LEAF_VALIDITY)
    }
}

/// A join token's record in the store (under `herd_client::keys::PKI`,
/// `tokens/<id>`): only the secret's hash, and the token's limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub secret_hash: String,
    /// Only this machine (member name) may use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// Uses left; `None`: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    /// Unix seconds after which it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
}

/// The key of token `id`'s record.
pub fn token_key(id: &str) -> String {
    herd_client::keys::PKI.key(&format!("tokens/{id}"))
}

impl TokenRecord {
    /// The client transaction that registers this record as token `id`'s
    /// only if no token has that id yet (its `succeeded` says whether it
    /// did): a token is never overwritten, and registering twice is safe.
    pub fn register_txn(&self, id: &str) -> herd_client::proto::etcdserverpb::TxnRequest {
        use herd_client::proto::etcdserverpb::{
            Compare, PutRequest, RequestOp, TxnRequest, compare, request_op,
        };
        let key = token_key(id).into_bytes();
        TxnRequest {
            compare: vec![Compare {
                key: key.clone(),
                target: compare::CompareTarget::Create as i32,
                result: compare::CompareResult::Equal as i32,
                target_union: Some(compare::TargetUnion::CreateRevision(0)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key,
                    value: serde_json::to_vec(self).expect("a token record serializes"),
                    ..Default::default()
                })),
            }],
            failure: vec![],
        }
    }
}

pub(super) fn pki_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("pki")
}

fn pki_err(what: &'static str) -> impl FnOnce(herd_pki::PkiError) -> StoreError {
    move |e| {
        ConfigError::Pki {
            what,
            reason: e.to_string(),
        }
        .into()
    }
}

/// The member's identity material and the peer credentials built from it.
pub(super) struct Credentials {
    pub pki: Option<MemberPki>,
    /// The member's certificate as every TLS configuration reads it.
    pub identity: Option<Arc<LiveIdentity>>,
    pub peer_client: ClientSecurity,
    pub peer_server: ServerSecurity,
    /// Set when this start joined a cluster over TLS (the cluster's id).
    pub joined: Option<u64>,
}

pub(super) fn sans(config: &Config, tls: &TlsSettings) -> (Vec<String>, Vec<IpAddr>) {
    let mut names = vec![config.name.clone(), "localhost".to_owned()];
    names.extend(tls.names.iter().cloned());
    let mut ips = vec![IpAddr::from([127, 0, 0, 1]), config.listen_peer.ip()];
    ips.extend(tls.ips.iter().copied());
    names.sort();
    names.dedup();
    ips.retain(|ip| !ip.is_unspecified());
    ips.sort();
    ips.dedup();
    (names, ips)
}

/// A member's PKI with a certificate `ca` issues it (the member keeps the
/// CA key: it may admit others).
pub(super) fn issue_member(
    ca: &ClusterCa,
    name: &str,
    (names, ips): (&[String], &[IpAddr]),
    valid_for: Duration,
) -> Result<MemberPki, StoreError> {
    let member = ca
        .issue(&Identity::Member(name.to_owned()), names, ips, valid_for)
        .map_err(pki_err("issuing the member certificate"))?;
    Ok(MemberPki {
        ca_cert: ca.pair.cert_pem.clone(),
        ca_key: Some(ca.pair.key_pem.clone()),
        member,
    })
}

/// Loads, creates or obtains the member's PKI (see the module doc).
pub(super) async fn credentials(
    config: &Config,
    resuming: bool,
) -> Result<Credentials, StoreError> {
    let tls = match &config.security {
        Security::Insecure { token } => {
            if token.is_empty() {
                return Err(ConfigError::EmptyToken.into());
            }
            tracing::warn!(
                "INSECURE: the store runs without TLS; peers and clients are not authenticated \
                 beyond the shared token (--insecure-plaintext)"
            );
            let token = Token::new(token);
            return Ok(Credentials {
                pki: None,
                identity: None,
                peer_client: ClientSecurity::Token(token.clone()),
                peer_server: ServerSecurity::Token(token),
                joined: None,
            });
        }
        Security::Tls(tls) => tls,
    };
    herd_pki::install_crypto_provider();
    let dir = pki_dir(&config.data_dir);
    let (names, ips) = sans(config, tls);
    let mut joined = None;
    let pki = if MemberPki::exists(&dir) {
        MemberPki::load(&dir).map_err(pki_err("loading the member's certificates"))?
    } else if let (true, Some(ca)) = (resuming, &tls.ca) {
        // A restored data dir (`snapshot restore`) holds a member but no
        // certificates: the CA the operator gives issues them.
        issue_member(ca, &config.name, (&names, &ips), tls.member_validity())?
    } else if resuming {
        return Err(ConfigError::Pki {
            what: "resuming",
            reason: format!(
                "{} holds a member but no certificates (a restored data dir needs the \
                 cluster CA: --ca-cert and --ca-key)",
                config.data_dir.display()
            ),
        }
        .into());
    } else {
        let pki = match &config.bootstrap {
            Bootstrap::Join(addr) => {
                let token = tls.join_token.as_ref().ok_or(ConfigError::NoJoinToken)?;
                let (pki, cluster) = join(config, addr, token, &names, &ips).await?;
                joined = Some(cluster);
                pki
            }
            Bootstrap::Found(members) => {
                let ca = match (&tls.ca, members.len()) {
                    (Some(ca), _) => ca.clone(),
                    (None, 0 | 1) => ClusterCa::generate(&config.name)
                        .map_err(pki_err("creating the cluster CA"))?,
                    (None, _) => return Err(ConfigError::FoundingWithoutCa.into()),
                };
                issue_member(&ca, &config.name, (&names, &ips), tls.member_validity())?
            }
            Bootstrap::Resume => {
                return Err(ConfigError::NothingToResume(config.data_dir.clone()).into());
            }
        };
        pki.save(&dir)
            .map_err(pki_err("saving the member's certificates"))?;
        pki
    };
    let identity = LiveIdentity::new(&pki.ca_cert, &pki.member)
        .map_err(pki_err("loading the member's certificate"))?;
    let client = herd_pki::tls::client_config_live(Arc::clone(&identity), &[ALPN_PEER])
        .map_err(pki_err("the peer client configuration"))?;
    let server = herd_pki::tls::server_config_live(
        Arc::clone(&identity),
        ClientAuth::Optional,
        &[ALPN_PEER],
    )
    .map_err(pki_err("the peer server configuration"))?;
    Ok(Credentials {
        pki: Some(pki),
        identity: Some(identity),
        peer_client: ClientSecurity::Tls(Arc::new(Current::new(client))),
        peer_server: ServerSecurity::Tls(Arc::new(Current::new(server))),
        joined,
    })
}

/// Joins through the member at `addr` with `token`: checks the cluster
/// against the token's CA hash, sends the secret and a signing request,
/// and receives a member certificate; the cluster already lists this
/// member as a learner when this returns. Retries until the join timeout.
async fn join(
    config: &Config,
    addr: &str,
    token: &JoinToken,
    names: &[String],
    ips: &[IpAddr],
) -> Result<(MemberPki, u64), StoreError> {
    let pinned = herd_pki::tls::pinned_client_config(token.ca_hash, &[ALPN_PEER])
        .map_err(pki_err("the joining client configuration"))?;
    let (csr, key) = signing_request(&Identity::Member(config.name.clone()))
        .map_err(pki_err("making a signing request"))?;
    let advertise = config
        .advertise_peer
        .clone()
        .unwrap_or_else(|| config.listen_peer.to_string());
    let req = JoinRequest {
        id: member_id(&config.name),
        node: PeerNode {
            name: config.name.clone(),
            peer_addr: advertise,
            client_addr: config.advertise_client.clone(),
        },
        token_id: token.id.clone(),
        secret: token.secret().to_owned(),
        csr,
        names: names.to_vec(),
        ips: ips.to_vec(),
    };
    let deadline = Instant::now() + config.join_timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match peer::join(addr, Arc::clone(&pinned), &req, left).await {
            Ok(Ok(grant)) => {
                tracing::info!(via = %addr, cluster = %format!("{:x}", grant.cluster_id), "admitted to the cluster");
                let pki = MemberPki {
                    ca_cert: grant.ca_cert,
                    ca_key: Some(grant.ca_key),
                    member: herd_pki::CertKey {
                        cert_pem: grant.member_cert,
                        key_pem: key,
                    },
                };
                return Ok((pki, grant.cluster_id));
            }
            // A refusal (bad token, another cluster) will not change.
            Ok(Err(e)) => {
                return Err(StoreError::Join {
                    addr: addr.into(),
                    detail: StoreError::from(e).to_string(),
                });
            }
            Err(e) => last = e.to_string(),
        }
        if last.contains("join token's CA hash") {
            break;
        }
        tracing::warn!(via = %addr, error = %last, "join attempt failed; retrying");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(StoreError::Join {
        addr: addr.into(),
        detail: last,
    })
}

impl Inner {
    /// Admits a machine that presented a join token (see [`join`]).
    pub(super) async fn admit(&self, req: JoinRequest) -> Result<JoinGrant, StoreError> {
        let ca = self.pki.as_ref().and_then(MemberPki::ca).ok_or_else(|| {
            StoreError::InvalidRequest(
                "this member cannot admit machines: it holds no CA key".into(),
            )
        })?;
        if req.id != member_id(&req.node.name) {
            return Err(StoreError::InvalidRequest(format!(
                "member id {:x} does not belong to name {:?}",
                req.id, req.node.name
            )));
        }
        self.consume_token(&req).await?;
        let cert = ca
            .sign_request(
                &req.csr,
                &Identity::Member(req.node.name.clone()),
                &req.names,
                &req.ips,
                match &self.config.security {
                    Security::Tls(tls) => tls.member_validity(),
                    Security::Insecure { .. } => LEAF_VALIDITY,
                },
            )
            .map_err(|e| StoreError::InvalidRequest(e.to_string()))?;
        // A machine coming back under its name (an empty disk) keeps its
        // membership; a new one becomes a learner, promoted by the leader
        // once it caught up.
        let known = self.ensure_member(req.id).is_ok();
        let change = if known {
            Forward::UpdateNode {
                id: req.id,
                node: req.node.clone(),
            }
        } else {
            Forward::AddLearner {
                id: req.id,
                node: req.node.clone(),
            }
        };
        self.route(change).await?;
        Ok(JoinGrant {
            cluster_id: self.cluster_id.load(std::sync::atomic::Ordering::SeqCst),
            member_cert: cert,
            ca_cert: ca.pair.cert_pem.clone(),
            ca_key: ca.pair.key_pem.clone(),
        })
    }

    /// Checks a join request's token against its record and uses it up
    /// (one use; the record goes with the last), in one compare-and-swap.
    async fn consume_token(&self, req: &JoinRequest) -> Result<(), StoreError> {
        let refused =
            |why: &str| StoreError::InvalidRequest(format!("join token {}: {why}", req.token_id));
        let key = token_key(&req.token_id).into_bytes();
        for _ in 0..5 {
            self.catch_up_for_read().await?;
            let found = self.local_range(&RangeRequest {
                key: key.clone(),
                ..RangeRequest::default()
            })?;
            let Some(kv) = found.kvs.into_iter().next() else {
                return Err(refused("unknown (never created, expired or used up)"));
            };
            let record: TokenRecord =
                serde_json::from_slice(&kv.value).map_err(|_| refused("its record is damaged"))?;
            let given = herd_pki::token::hash_secret(&req.secret);
            if !constant_time_eq(given.as_bytes(), record.secret_hash.as_bytes()) {
                return Err(refused("wrong secret"));
            }
            if record.machine.as_ref().is_some_and(|m| *m != req.node.name) {
                return Err(refused(&format!(
                    "it is for another machine, not {}",
                    req.node.name
                )));
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            if record.expires.is_some_and(|t| now > t) {
                return Err(refused("expired"));
            }
            let then = match record.uses {
                None => return Ok(()),
                Some(0) | Some(1) => RequestOp::DeleteRange(crate::types::DeleteRangeRequest {
                    key: key.clone(),
                    ..Default::default()
                }),
                Some(n) => RequestOp::Put(PutRequest {
                    key: key.clone(),
                    value: serde_json::to_vec(&TokenRecord {
                        uses: Some(n - 1),
                        ..record.clone()
                    })
                    .expect("a record serializes"),
                    ..Default::default()
                }),
            };
            if record.uses == Some(0) {
                return Err(refused("used up"));
            }
            let txn = TxnRequest {
                compare: vec![crate::types::Compare {
                    key: key.clone(),
                    range_end: Vec::new(),
                    result: CompareResult::Equal,
                    target: CompareTarget::ModRevision(kv.mod_revision),
                }],
                success: vec![then],
                failure: Vec::new(),
            };
            match self.propose(crate::types::Command::Txn(txn)).await? {
                crate::types::CommandResponse::Txn(r) if r.succeeded => return Ok(()),
                // Someone else used it meanwhile: look again.
                crate::types::CommandResponse::Txn(_) => continue,
                other => return Err(super::unexpected_cmd(other)),
            }
        }
        Err(refused("in use by several machines at once; try again"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
