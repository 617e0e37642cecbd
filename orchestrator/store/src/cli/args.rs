//! `herd kv`'s arguments: etcdctl's commands and flags.

use clap::{Args, Subcommand};
use herd_cli::Output;

#[derive(Debug, Args)]
pub struct KvArgs {
    #[command(flatten)]
    pub store: herd_client::connect::StoreArgs,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: KvCommand,
}

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Read a key, a range [KEY, RANGE_END) or a prefix.
    Get {
        key: String,
        range_end: Option<String>,
        #[arg(long)]
        prefix: bool,
        /// Read at this past revision.
        #[arg(long, default_value_t = 0)]
        rev: i64,
        #[arg(long, default_value_t = 0)]
        limit: i64,
        #[arg(long)]
        keys_only: bool,
        /// Serve the read from the contacted member without a quorum round trip.
        #[arg(long)]
        serializable: bool,
    },
    /// Write a key.
    Put {
        key: String,
        value: String,
        /// Attach to this lease (hex id).
        #[arg(long, value_parser = parse_lease)]
        lease: Option<i64>,
    },
    /// Delete a key, a range or a prefix.
    Del {
        key: String,
        range_end: Option<String>,
        #[arg(long)]
        prefix: bool,
    },
    /// Stream changes of a key or prefix.
    Watch {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// Start from this revision (history still in the store is replayed).
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
    /// A transaction read from stdin in etcdctl's form: compares, a blank
    /// line, success operations, a blank line, failure operations.
    Txn,
    /// Leases.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Hold the lock NAME until interrupted.
    Lock {
        name: String,
        /// TTL of the session lease, in seconds.
        #[arg(long, default_value_t = 60)]
        ttl: u64,
    },
    /// Campaign in election NAME with VALUE (lead until interrupted), or with
    /// --listen print each leader.
    Elect {
        name: String,
        value: Option<String>,
        #[arg(short, long)]
        listen: bool,
        #[arg(long, default_value_t = 60)]
        ttl: u64,
    },
    /// Cluster membership.
    #[command(subcommand)]
    Member(MemberCommand),
    /// The contacted members' status.
    Status,
    /// Discard history before REVISION.
    Compact { revision: i64 },
    /// Download (or inspect) a snapshot of the key space.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Make the member with this hex id the leader.
    MoveLeader {
        #[arg(value_parser = parse_lease)]
        id: i64,
    },
    /// Ask every endpoint in turn.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stream the contacted member's key space into FILE (fsync'd, then renamed into place).
    Save { file: std::path::PathBuf },
    /// Check a snapshot file and print its revision, hash, keys and size (offline).
    Status { file: std::path::PathBuf },
    /// Build a new member's data dir from a snapshot file (offline): run it
    /// for every member of the new cluster with the same FILE and
    /// --initial-cluster, then start each with `herd agent`.
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file written by `herd kv snapshot save` or `etcdctl snapshot save` from herd.
    pub file: std::path::PathBuf,
    /// This member's name in the new cluster.
    #[arg(long)]
    pub name: String,
    /// The data dir to create; it must not exist or be empty.
    #[arg(long)]
    pub data_dir: std::path::PathBuf,
    /// Every member of the new cluster: NAME=HOST:PORT,… (peer addresses,
    /// this member included). Without it: a single-member cluster of NAME
    /// at --listen-peer.
    #[arg(long, value_delimiter = ',')]
    pub initial_cluster: Option<Vec<String>>,
    /// This member's peer address when there is no --initial-cluster (the
    /// same default as `herd agent --listen-peer`).
    #[arg(
        long,
        default_value = "127.0.0.1:2380",
        conflicts_with = "initial_cluster"
    )]
    pub listen_peer: std::net::SocketAddr,
    /// Engine keeping the new data dir's Raft log [default: fjall].
    #[arg(long, value_enum)]
    pub storage: Option<crate::StorageKind>,
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Each endpoint's key space hash; members of a healthy cluster agree.
    Hashkv {
        /// Hash the key space as of this revision (0 = each member's current one).
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease with a TTL in seconds.
    Grant { ttl: i64 },
    /// Revoke a lease and delete its keys.
    Revoke {
        #[arg(value_parser = parse_lease)]
        id: i64,
    },
    /// Remaining TTL of a lease.
    Ttl {
        #[arg(value_parser = parse_lease)]
        id: i64,
        #[arg(long)]
        keys: bool,
    },
    /// Keep a lease alive (once, or until interrupted).
    KeepAlive {
        #[arg(value_parser = parse_lease)]
        id: i64,
        #[arg(long)]
        once: bool,
    },
    /// List leases.
    List,
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    List,
    /// Add a member by its peer address.
    Add {
        name: String,
        #[arg(long, value_delimiter = ',')]
        peer_urls: Vec<String>,
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member by its hex id.
    Remove {
        #[arg(value_parser = parse_lease)]
        id: i64,
    },
    /// Change the peer address of the member with this hex id.
    Update {
        #[arg(value_parser = parse_lease)]
        id: i64,
        #[arg(long, value_delimiter = ',')]
        peer_urls: Vec<String>,
    },
}

pub(super) fn parse_lease(s: &str) -> Result<i64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map(|v| v as i64)
        .map_err(|e| format!("{s:?} is not a hex id: {e}"))
}
