//! The network's records in the store: reading and setting the config,
//! reading what is held, and the compare-and-swap transactions that claim,
//! adopt, reserve and release subnets — so two machines never hold one
//! subnet, whatever their timing.

use herd_client::keys::{MACHINES, MachineRecord};
use herd_client::kit::{self, Object, Scope};
use herd_client::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, compare,
    request_op,
};
use herd_client::{Client, ClientError};

use crate::cidr::Ipv4Net;
use crate::config::{CONFIG_NAME, ConfigError, NetworkConfig};
use crate::lease::{Holdings, OWNERS, Owner, SubnetLease, subnet_key};

/// Why a store operation on the network failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("the store: {0}")]
    Client(#[from] ClientError),
    #[error(transparent)]
    List(#[from] kit::ListError),
    #[error("the stored network config is not valid: {0}")]
    BadStored(serde_json::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the network config changed while it was being set; try again")]
    Raced,
    #[error("no lease or reservation for subnet {0}")]
    NoSuchSubnet(Ipv4Net),
    #[error("subnet {subnet} is held by machine {holder}, not {machine}")]
    HeldByOther {
        subnet: Ipv4Net,
        holder: String,
        machine: String,
    },
}

fn status(s: tonic::Status) -> RegistryError {
    RegistryError::Client(s.into())
}

fn version_is(key: &str, version: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Version as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(compare::TargetUnion::Version(version)),
        ..Default::default()
    }
}

fn mod_revision_is(key: &str, rev: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(compare::TargetUnion::ModRevision(rev)),
        ..Default::default()
    }
}

fn put(key: &str, value: Vec<u8>, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease,
            ..Default::default()
        })),
    }
}

fn delete(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            },
        )),
    }
}

async fn txn(
    client: &Client,
    compare: Vec<Compare>,
    success: Vec<RequestOp>,
) -> Result<bool, RegistryError> {
    let resp = client
        .kv()
        .txn(TxnRequest {
            compare,
            success,
            failure: Vec::new(),
        })
        .await
        .map_err(status)?
        .into_inner();
    Ok(resp.succeeded)
}

/// The stored config and its revision, if any.
pub async fn config(client: &Client) -> Result<Option<Object<NetworkConfig>>, RegistryError> {
    let key = crate::config::CONFIG_PREFIX.key(CONFIG_NAME);
    let resp = client
        .kv()
        .range(RangeRequest {
            key: key.into_bytes(),
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner();
    match resp.kvs.first().and_then(Object::<NetworkConfig>::decode) {
        None => Ok(None),
        Some(Ok(o)) => Ok(Some(o)),
        Some(Err(e)) => Err(RegistryError::BadStored(e.source)),
    }
}

/// What setting the config did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Created,
    Updated,
    Unchanged,
}

/// Sets the config: creates it, or changes what may change (the subnet
/// bounds); refuses a change of network, subnet length or backend.
pub async fn set_config(client: &Client, new: &NetworkConfig) -> Result<Applied, RegistryError> {
    new.validate()?;
    let key = crate::config::CONFIG_PREFIX.key(CONFIG_NAME);
    let value = serde_json::to_vec(new).expect("a config serializes");
    match config(client).await? {
        None => {
            if txn(client, vec![version_is(&key, 0)], vec![put(&key, value, 0)]).await? {
                Ok(Applied::Created)
            } else {
                Err(RegistryError::Raced)
            }
        }
        Some(old) if old.value == *new => Ok(Applied::Unchanged),
        Some(old) => {
            old.value.check_change(new)?;
            if txn(
                client,
                vec![mod_revision_is(&key, old.mod_revision)],
                vec![put(&key, value, 0)],
            )
            .await?
            {
                Ok(Applied::Updated)
            } else {
                Err(RegistryError::Raced)
            }
        }
    }
}

/// Every lease, owner record and registered machine (for one allocation,
/// or a command: not a controller's loop).
pub async fn holdings(client: &Client) -> Result<Holdings, RegistryError> {
    let (leases, _) = kit::list::<SubnetLease>(client, &Scope::All).await?;
    let (owners, _) = kit::list::<Owner>(client, &Scope::All).await?;
    // Only the names matter: a record that no longer decodes still means
    // the machine is registered.
    let machines = client
        .kv()
        .range(RangeRequest {
            key: MACHINES.as_str().as_bytes().to_vec(),
            range_end: herd_client::prefix_end(MACHINES.as_str().as_bytes()),
            keys_only: true,
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner();
    Ok(Holdings {
        leases: leases
            .into_iter()
            .filter_map(|o| Some((Ipv4Net::from_key_name(&o.name)?, o.value.machine_id)))
            .collect(),
        owners: owners
            .into_iter()
            .map(|o| (o.name, (o.value.subnet, o.mod_revision)))
            .collect(),
        registered: machines
            .kvs
            .iter()
            .filter_map(|kv| MACHINES.name_of(&kv.key).map(str::to_owned))
            .collect(),
    })
}

/// Claims free `subnet` for `lease.machine_id` on store lease `store_lease`
/// (0: none), recording it as the machine's subnet; for each gone machine
/// `reclaim` names as remembering it, also checks that machine is still
/// gone and its record unchanged, and deletes the record. `false`: someone
/// was faster.
pub async fn claim(
    client: &Client,
    subnet: Ipv4Net,
    lease: &SubnetLease,
    store_lease: i64,
    reclaim: &[(String, i64)],
) -> Result<bool, RegistryError> {
    let key = subnet_key(subnet);
    let owner = OWNERS.key(&lease.machine_id);
    let mut compare = vec![version_is(&key, 0)];
    let mut success = vec![
        put(
            &key,
            serde_json::to_vec(lease).expect("serializes"),
            store_lease,
        ),
        put(
            &owner,
            serde_json::to_vec(&Owner { subnet }).expect("serializes"),
            0,
        ),
    ];
    for (gone, rev) in reclaim {
        let gone_owner = OWNERS.key(gone);
        compare.push(mod_revision_is(&gone_owner, *rev));
        compare.push(version_is(&MACHINES.key(gone), 0));
        success.push(delete(&gone_owner));
    }
    txn(client, compare, success).await
}

/// Rewrites the lease of `subnet` (last seen at `mod_revision`) with
/// `lease` on `store_lease`. `false`: it changed meanwhile.
pub async fn adopt(
    client: &Client,
    subnet: Ipv4Net,
    lease: &SubnetLease,
    store_lease: i64,
    mod_revision: i64,
) -> Result<bool, RegistryError> {
    let key = subnet_key(subnet);
    let owner = OWNERS.key(&lease.machine_id);
    txn(
        client,
        vec![mod_revision_is(&key, mod_revision)],
        vec![
            put(
                &key,
                serde_json::to_vec(lease).expect("serializes"),
                store_lease,
            ),
            put(
                &owner,
                serde_json::to_vec(&Owner { subnet }).expect("serializes"),
                0,
            ),
        ],
    )
    .await
}

/// Pins `subnet` to `machine` with no TTL (a reservation). A subnet leased
/// to the same machine becomes its reservation; one held by another
/// machine is refused.
pub async fn reserve(client: &Client, subnet: Ipv4Net, machine: &str) -> Result<(), RegistryError> {
    let key = subnet_key(subnet);
    let (current, _) = kit::list::<SubnetLease>(client, &Scope::Name(subnet.key_name())).await?;
    let (compare, value) = match current.first() {
        None => (
            version_is(&key, 0),
            SubnetLease {
                machine_id: machine.to_owned(),
                public_ip: None,
                backend_type: None,
                backend_data: None,
            },
        ),
        Some(o) if o.value.machine_id == machine => {
            (mod_revision_is(&key, o.mod_revision), o.value.clone())
        }
        Some(o) => {
            return Err(RegistryError::HeldByOther {
                subnet,
                holder: o.value.machine_id.clone(),
                machine: machine.to_owned(),
            });
        }
    };
    let owner = OWNERS.key(machine);
    let ok = txn(
        client,
        vec![compare],
        vec![
            put(&key, serde_json::to_vec(&value).expect("serializes"), 0),
            put(
                &owner,
                serde_json::to_vec(&Owner { subnet }).expect("serializes"),
                0,
            ),
        ],
    )
    .await?;
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Raced)
    }
}

/// Removes `subnet`'s lease or reservation and its holder's record of it:
/// a machine leaving the cluster for good. Every other machine drops its
/// route to the subnet.
pub async fn release(client: &Client, subnet: Ipv4Net) -> Result<String, RegistryError> {
    let key = subnet_key(subnet);
    let (current, _) = kit::list::<SubnetLease>(client, &Scope::Name(subnet.key_name())).await?;
    let Some(o) = current.into_iter().next() else {
        return Err(RegistryError::NoSuchSubnet(subnet));
    };
    let owner = OWNERS.key(&o.value.machine_id);
    txn(
        client,
        vec![mod_revision_is(&key, o.mod_revision)],
        vec![delete(&key), delete(&owner)],
    )
    .await?
    .then_some(o.value.machine_id)
    .ok_or(RegistryError::Raced)
}

/// Registered machines, for commands that name them.
pub async fn machines(client: &Client) -> Result<Vec<MachineRecord>, RegistryError> {
    Ok(kit::list::<MachineRecord>(client, &Scope::All)
        .await?
        .0
        .into_iter()
        .map(|o| o.value)
        .collect())
}

/// Every lease, by subnet.
pub async fn leases(client: &Client) -> Result<Vec<Object<SubnetLease>>, RegistryError> {
    Ok(kit::list::<SubnetLease>(client, &Scope::All).await?.0)
}
