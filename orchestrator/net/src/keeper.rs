//! Keeps this machine's subnet lease in the store, written with the kit: a
//! controller on the one key `subnets/<subnet>`. Whatever happens to the
//! key — deleted, expired with its store lease after a long partition,
//! left on the previous run's store lease — it is claimed back by
//! compare-and-swap; a reservation stays without TTL. A key that names
//! another machine means the subnet is lost (it signals the role, which
//! chooses again).

use std::sync::Arc;
use std::time::Duration;

use herd_client::kit::{Action, Controller, Request, Scope};
use herd_client::proto::etcdserverpb::LeaseRevokeRequest;
use herd_client::session::Session;
use herd_client::{Client, ClientError};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::cidr::Ipv4Net;
use crate::lease::SubnetLease;
use crate::registry::{self, RegistryError};

/// A subnet lease's TTL (flannel's): a machine may be away this long
/// before its subnet can expire.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why one keeping step failed (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    #[error("opening the lease's session: {0}")]
    Session(ClientError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

struct Ctx {
    client: Client,
    subnet: Ipv4Net,
    desired: SubnetLease,
    ttl: Duration,
    session: Mutex<Option<Session>>,
    lost: CancellationToken,
}

impl Ctx {
    async fn lease(&self) -> Result<i64, KeepError> {
        let mut session = self.session.lock().await;
        if let Some(s) = session.as_ref()
            && !s.has_ended()
        {
            return Ok(s.lease());
        }
        let fresh = Session::new(&self.client, self.ttl)
            .await
            .map_err(KeepError::Session)?;
        let lease = fresh.lease();
        *session = Some(fresh);
        Ok(lease)
    }
}

async fn reconcile(ctx: Arc<Ctx>, req: Request<SubnetLease>) -> Result<Action, KeepError> {
    let subnet = ctx.subnet;
    // Looked at again within a third of the TTL even when nothing changes:
    // the session may end without any change in the store.
    let again = Action::Requeue((ctx.ttl / 3).min(Duration::from_secs(60)));
    match req.object {
        None => {
            let lease = ctx.lease().await?;
            if registry::claim(&ctx.client, subnet, &ctx.desired, lease, &[]).await? {
                tracing::info!(%subnet, lease = format!("{lease:x}"), "subnet lease claimed");
            }
            // Lost the race: the watch brings the winner's record.
            Ok(again)
        }
        Some(o) if o.value.machine_id != ctx.desired.machine_id => {
            tracing::error!(%subnet, holder = %o.value.machine_id, "this machine's subnet is held by another machine; choosing another subnet");
            ctx.lost.cancel();
            Ok(Action::AwaitChange)
        }
        Some(o) if o.lease == 0 => {
            // A reservation: keep it pinned, without a TTL.
            if o.value != ctx.desired
                && registry::adopt(&ctx.client, subnet, &ctx.desired, 0, o.mod_revision).await?
            {
                tracing::info!(%subnet, "reserved subnet taken up");
            }
            Ok(again)
        }
        Some(o) => {
            let lease = ctx.lease().await?;
            if (o.lease != lease || o.value != ctx.desired)
                && registry::adopt(&ctx.client, subnet, &ctx.desired, lease, o.mod_revision).await?
            {
                tracing::info!(%subnet, lease = format!("{lease:x}"), "subnet lease renewed onto this run's store lease");
                if o.lease != lease {
                    // The previous run's store lease holds nothing now.
                    let _ = ctx
                        .client
                        .lease()
                        .lease_revoke(LeaseRevokeRequest { id: o.lease })
                        .await;
                }
            }
            Ok(again)
        }
    }
}

/// Keeps `desired` on `subnet` until `cancel` fires or the subnet is lost
/// (then `lost` is cancelled). The store lease is left alive on return: a
/// restarted agent takes it over.
pub async fn run(
    client: Client,
    subnet: Ipv4Net,
    desired: SubnetLease,
    ttl: Duration,
    lost: CancellationToken,
    cancel: CancellationToken,
) {
    let name = subnet.key_name();
    let controller =
        Controller::<SubnetLease>::new("subnet-lease", client.clone(), Scope::Name(name.clone()))
            .seed([name])
            .concurrency(1);
    let ctx = Arc::new(Ctx {
        client,
        subnet,
        desired,
        ttl,
        session: Mutex::new(None),
        lost: lost.clone(),
    });
    let stop = cancel.child_token();
    let stop_on_lost = {
        let (stop, lost) = (stop.clone(), lost.clone());
        async move {
            lost.cancelled().await;
            stop.cancel();
        }
    };
    tokio::select! {
        () = controller.run(Arc::clone(&ctx), reconcile, stop.clone()) => {}
        () = stop_on_lost => {}
    }
    stop.cancel();
    // Dropping the session stops renewing, and leaves the lease to expire
    // or to the next run.
    if let Some(s) = ctx.session.lock().await.take() {
        drop(s);
    }
}
