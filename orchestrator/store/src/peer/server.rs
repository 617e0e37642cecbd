//! The incoming side: accepts peer connections, checks who is talking
//! before reading any Raft message (a member certificate of a current
//! member, or the plaintext token), then serves request frames; a TLS
//! connection without a certificate may only ask to join.

use std::io::{self, Cursor};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use herd_pki::Identity;
use openraft::{Raft, Snapshot};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::secure::{ServerSecurity, Token};
use super::{
    ACCEPTED, ForwardHandler, HELLO, JOIN_MAGIC, JoinHandler, JoinRequest, MAGIC, MAX_JOIN_FRAME,
    MemberCheck, Partition, PeerRequest, PeerResponse, Refusal, read_frame, write_frame,
};
use crate::member::member_id;
use crate::types::TypeConfig;

/// What a connection's server side needs.
#[derive(Clone)]
struct Conn {
    raft: Raft<TypeConfig>,
    cluster: Arc<AtomicU64>,
    partition: Partition,
    forward: ForwardHandler,
    join: JoinHandler,
    is_member: MemberCheck,
}

fn denied(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why)
}

/// Who a connection's client is, as far as the transport can tell.
enum Caller {
    /// Plaintext: the token must be in the hello.
    TokenHolder(Token),
    /// TLS with a member certificate.
    Member(String),
    /// TLS without a certificate: may only join.
    Anonymous,
    /// TLS with a user's certificate: refused (told why).
    User(String),
}

/// Accepts peer connections until dropped/aborted; owns its connection tasks.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: TcpListener,
    raft: Raft<TypeConfig>,
    security: ServerSecurity,
    cluster: Arc<AtomicU64>,
    partition: Partition,
    forward: ForwardHandler,
    join: JoinHandler,
    is_member: MemberCheck,
) {
    let conn = Conn {
        raft,
        cluster,
        partition,
        forward,
        join,
        is_member,
    };
    let mut conns = JoinSet::new();
    match security {
        ServerSecurity::Token(token) => loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => {
                        let _ = stream.set_nodelay(true);
                        let conn = conn.clone();
                        let caller = Caller::TokenHolder(token.clone());
                        conns.spawn(serve_logged(stream, remote, caller, conn));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "peer accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        },
        ServerSecurity::Tls(config) => {
            let mut accepted = herd_pki::tls::accept(listener, config, "peer");
            loop {
                tokio::select! {
                    a = accepted.recv() => {
                        let Some(a) = a else { return };
                        let caller = match a.peer {
                            Some(Identity::Member(name)) => Caller::Member(name),
                            Some(Identity::User(name)) => Caller::User(name),
                            None => Caller::Anonymous,
                        };
                        conns.spawn(serve_logged(a.stream, a.remote, caller, conn.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        }
    }
}

async fn serve_logged<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    remote: SocketAddr,
    caller: Caller,
    conn: Conn,
) {
    if let Err(e) = serve_conn(stream, caller, conn).await {
        tracing::warn!(%remote, error = %e, "peer connection rejected or failed");
    }
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    caller: Caller,
    conn: Conn,
) -> io::Result<()> {
    let mut magic = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut magic))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no handshake within 5 s"))??;
    if &magic == JOIN_MAGIC {
        return match caller {
            Caller::Anonymous => serve_join(stream, &conn).await,
            _ => Err(denied(
                "a join request from a connection that is not anonymous TLS".into(),
            )),
        };
    }
    if &magic != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "garbage instead of a herd peer handshake",
        ));
    }
    let mut hello = [0u8; HELLO - 8];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut hello))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no handshake within 5 s"))??;
    let sender = u64::from_le_bytes(hello[..8].try_into().expect("8 bytes"));
    let refusal = match &caller {
        Caller::TokenHolder(token) if !token.matches(&hello[8..40]) => Some((
            Refusal::WrongToken,
            format!("member {sender:x} presented a wrong cluster token"),
        )),
        Caller::TokenHolder(_) | Caller::Member(_) => None,
        Caller::Anonymous => Some((
            Refusal::NotAMember,
            format!("a connection without a member certificate claims to be member {sender:x}"),
        )),
        Caller::User(name) => Some((
            Refusal::NotAMember,
            format!("user {name}'s certificate was used on the peer port as member {sender:x}"),
        )),
    };
    let refusal = refusal.or_else(|| match &caller {
        Caller::Member(name) if member_id(name) != sender => Some((
            Refusal::NotAMember,
            format!("the certificate of member {name} was used to speak for member {sender:x}"),
        )),
        Caller::Member(name) if !(conn.is_member)(sender) => Some((
            Refusal::NotAMember,
            format!("member {name} ({sender:x}) is not a member of this cluster (removed?)"),
        )),
        _ => None,
    });
    let theirs = u64::from_le_bytes(hello[40..48].try_into().expect("8 bytes"));
    let ours = conn.cluster.load(Ordering::SeqCst);
    let refusal = refusal.or_else(|| {
        (theirs != 0 && ours != 0 && theirs != ours).then(|| {
            (
                Refusal::OtherCluster,
                format!(
                    "member {sender:x} belongs to cluster {theirs:x}, this member to cluster \
                     {ours:x} (a stale member of an old or restored cluster?)"
                ),
            )
        })
    });
    if let Some((code, why)) = refusal {
        // The caller learns which rule it broke, not more.
        let _ = stream.write_u8(code as u8).await;
        let _ = stream.flush().await;
        return Err(denied(why));
    }
    stream.write_u8(ACCEPTED).await?;
    stream.flush().await?;
    loop {
        let bytes = match read_frame(&mut stream).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        if conn.partition.blocks(sender) {
            return Ok(());
        }
        let req: PeerRequest = postcard::from_bytes(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("undecodable request from member {sender:x}: {e}"),
            )
        })?;
        let resp = match req {
            PeerRequest::Append(r) => PeerResponse::Append(conn.raft.append_entries(r).await),
            PeerRequest::Vote(r) => PeerResponse::Vote(conn.raft.vote(r).await),
            PeerRequest::Snapshot { vote, meta, data } => PeerResponse::Snapshot(
                conn.raft
                    .install_full_snapshot(
                        vote,
                        Snapshot {
                            meta,
                            snapshot: Box::new(Cursor::new(data)),
                        },
                    )
                    .await
                    .map_err(|e| e.to_string()),
            ),
            PeerRequest::Forward(f) => PeerResponse::Forward((conn.forward)(f).await),
        };
        if conn.partition.blocks(sender) {
            return Ok(());
        }
        let payload = postcard::to_allocvec(&resp).map_err(|e| io::Error::other(e.to_string()))?;
        write_frame(&mut stream, &payload).await?;
        stream.flush().await?;
    }
}

/// One join request from a machine without a certificate; nothing else is
/// read from that connection.
async fn serve_join<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    conn: &Conn,
) -> io::Result<()> {
    let len = stream.read_u32_le().await? as usize;
    if len > MAX_JOIN_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a join request of {len} bytes (at most {MAX_JOIN_FRAME})"),
        ));
    }
    let mut buf = vec![0; len];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no join request within 5 s"))??;
    let req: JoinRequest = postcard::from_bytes(&buf).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("undecodable join request: {e}"),
        )
    })?;
    tracing::info!(member = %format!("{:x}", req.id), node = %req.node, token = %req.token_id, "join request");
    let result = (conn.join)(req).await;
    if let Err(e) = &result {
        tracing::warn!(error = ?e, "join refused");
    }
    let payload = postcard::to_allocvec(&result).map_err(|e| io::Error::other(e.to_string()))?;
    write_frame(&mut stream, &payload).await?;
    stream.flush().await
}
