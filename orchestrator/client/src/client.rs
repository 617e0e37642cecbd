//! A gRPC client of the etcd v3 API (herd's or a real etcd's): one channel
//! over the given endpoints and the service stubs on it.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::proto::etcdserverpb::{
    cluster_client::ClusterClient, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient, watch_client::WatchClient,
};
use crate::proto::v3electionpb::election_client::ElectionClient;
use crate::proto::v3lockpb::lock_client::LockClient;

/// Why a client could not be built or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no endpoints given")]
    NoEndpoints,
    #[error("invalid endpoint {endpoint:?}: {source}")]
    BadEndpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("connecting to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("{0}")]
    Status(#[from] tonic::Status),
    #[error("{0}")]
    Protocol(String),
}

/// Stubs for every etcd v3 service, sharing one channel.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
}

/// Turns `HOST:PORT` (or a full `http://HOST:PORT` URL) into an endpoint.
fn endpoint(addr: &str) -> Result<Endpoint, ClientError> {
    let url = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(url)
        .map_err(|source| ClientError::BadEndpoint {
            endpoint: addr.to_owned(),
            source,
        })?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true))
}

impl Client {
    /// Connects to the first reachable endpoint of `endpoints`.
    pub async fn connect(endpoints: &[String]) -> Result<Client, ClientError> {
        let mut last = None;
        for addr in endpoints {
            match endpoint(addr)?.connect().await {
                Ok(channel) => return Ok(Client { channel }),
                Err(source) => {
                    last = Some(ClientError::Connect {
                        endpoint: addr.clone(),
                        source,
                    })
                }
            }
        }
        Err(last.unwrap_or(ClientError::NoEndpoints))
    }

    /// A client whose connection is made on first use (and re-made after failures).
    pub fn lazy(addr: &str) -> Result<Client, ClientError> {
        Ok(Client {
            channel: endpoint(addr)?.connect_lazy(),
        })
    }

    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone())
    }

    pub fn watch(&self) -> WatchClient<Channel> {
        WatchClient::new(self.channel.clone())
    }

    pub fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel.clone())
    }

    pub fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel.clone())
    }

    pub fn maintenance(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel.clone())
    }

    pub fn lock(&self) -> LockClient<Channel> {
        LockClient::new(self.channel.clone())
    }

    pub fn election(&self) -> ElectionClient<Channel> {
        ElectionClient::new(self.channel.clone())
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`); `[0]` (all keys) when no such key exists.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_last_byte_and_drops_trailing_ff() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
