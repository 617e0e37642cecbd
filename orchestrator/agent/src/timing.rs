//! Raft timing: the heartbeat interval and election timeout, checked the
//! way etcd checks its flags of the same names.

use std::time::Duration;

/// Why a timing was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimingError {
    #[error("the heartbeat interval must be at least 1 ms")]
    ZeroHeartbeat,
    #[error(
        "the election timeout ({election_ms} ms) must be at least 5 times the heartbeat interval ({heartbeat_ms} ms)"
    )]
    TooShort { heartbeat_ms: u64, election_ms: u64 },
}

/// How often the leader heartbeats, and how long a follower waits without
/// one before it campaigns. The heartbeat is also the deadline of every
/// replication RPC (openraft's), so it must exceed a round trip including
/// the follower's fsync: emulated machines need far more than the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    /// Followers campaign after a random wait in `[election, 2 × election)`.
    pub election_ms: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 100,
            election_ms: 800,
        }
    }
}

impl RaftTiming {
    pub fn new(heartbeat_ms: u64, election_ms: u64) -> Result<RaftTiming, TimingError> {
        if heartbeat_ms == 0 {
            return Err(TimingError::ZeroHeartbeat);
        }
        if election_ms < heartbeat_ms.saturating_mul(5) {
            return Err(TimingError::TooShort {
                heartbeat_ms,
                election_ms,
            });
        }
        Ok(RaftTiming {
            heartbeat_ms,
            election_ms,
        })
    }

    /// Writes the timing into a store member's configuration.
    pub fn apply(&self, config: &mut herd_store::Config) {
        config.heartbeat = Duration::from_millis(self.heartbeat_ms);
        let election = Duration::from_millis(self.election_ms);
        config.election_timeout = (election, election * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_must_cover_five_heartbeats() {
        assert!(RaftTiming::new(100, 500).is_ok());
        assert_eq!(
            RaftTiming::new(100, 499),
            Err(TimingError::TooShort {
                heartbeat_ms: 100,
                election_ms: 499
            })
        );
        assert_eq!(RaftTiming::new(0, 1000), Err(TimingError::ZeroHeartbeat));
    }

    #[test]
    fn the_default_is_the_store_default() {
        let mut config =
            herd_store::Config::new("m", "/nonexistent", "127.0.0.1:1".parse().unwrap(), "t");
        let before = (config.heartbeat, config.election_timeout);
        RaftTiming::default().apply(&mut config);
        assert_eq!(before, (config.heartbeat, config.election_timeout));
    }
}
