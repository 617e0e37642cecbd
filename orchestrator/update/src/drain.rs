//! Telling the cluster this machine is about to reboot: its
//! `herd_client::keys::DrainRecord` (see its doc for what roles must do)
//! is written under the reboot lock's lease, and removed once the new
//! slot is marked good.

use herd_client::keys::{DRAIN, DrainRecord};
use herd_client::kit::Resource;
use herd_client::proto::etcdserverpb::{DeleteRangeRequest, PutRequest};
use herd_client::{Client, ClientError};

/// Marks the machine draining.
pub async fn begin(client: &Client, record: &DrainRecord, lease: i64) -> Result<(), ClientError> {
    client
        .kv()
        .put(PutRequest {
            key: DRAIN.key(&record.machine_id).into_bytes(),
            value: record.encode(),
            lease,
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// The machine takes work again.
pub async fn end(client: &Client, machine_id: &str) -> Result<(), ClientError> {
    client
        .kv()
        .delete_range(DeleteRangeRequest {
            key: DRAIN.key(machine_id).into_bytes(),
            ..Default::default()
        })
        .await?;
    Ok(())
}
