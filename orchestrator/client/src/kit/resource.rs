//! What a controller watches: typed objects under a prefix, decoded at the
//! edge, with the store's revisions.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::keys::Prefix;
use crate::proto::mvccpb::KeyValue;

/// A kind of object kept as JSON under one prefix of the store.
pub trait Resource: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const PREFIX: Prefix;
    /// The kind's name, for logs.
    const KIND: &'static str;

    /// The value stored for `self`.
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a resource serializes")
    }
}

/// One object as the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Object<T> {
    pub name: String,
    pub value: T,
    /// Revision of the last change: a compare-and-swap target.
    pub mod_revision: i64,
    pub create_revision: i64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

/// A stored value that is not a `T`.
#[derive(Debug, thiserror::Error)]
#[error("{key}: not a valid {kind}: {source}")]
pub struct DecodeError {
    pub key: String,
    pub kind: &'static str,
    #[source]
    pub source: serde_json::Error,
}

impl<T: Resource> Object<T> {
    /// Decodes a key-value pair from under `T::PREFIX`; `None` when the key
    /// is not under it.
    pub fn decode(kv: &KeyValue) -> Option<Result<Object<T>, DecodeError>> {
        let name = T::PREFIX.name_of(&kv.key)?.to_owned();
        Some(
            serde_json::from_slice(&kv.value)
                .map(|value| Object {
                    name,
                    value,
                    mod_revision: kv.mod_revision,
                    create_revision: kv.create_revision,
                    lease: kv.lease,
                })
                .map_err(|source| DecodeError {
                    key: String::from_utf8_lossy(&kv.key).into_owned(),
                    kind: T::KIND,
                    source,
                }),
        )
    }
}

/// Which objects of a kind a watcher covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every object under the kind's prefix.
    All,
    /// Only the objects whose names start with this (e.g. one machine's).
    Names(String),
    /// One object.
    Name(String),
}

impl Scope {
    /// The key range `[key, range_end)` under `prefix`.
    pub fn range(&self, prefix: Prefix) -> (Vec<u8>, Vec<u8>) {
        match self {
            Scope::All => {
                let key = prefix.as_str().as_bytes().to_vec();
                let end = crate::prefix_end(&key);
                (key, end)
            }
            Scope::Names(start) => {
                let key = prefix.key(start).into_bytes();
                let end = crate::prefix_end(&key);
                (key, end)
            }
            Scope::Name(name) => (prefix.key(name).into_bytes(), Vec::new()),
        }
    }
}

/// Every object of `T` in `scope` as of the returned revision (a one-shot
/// read for commands and status views; controllers keep a [`super::Cache`]).
/// Values that do not decode are errors here: the caller asked for them.
pub async fn list<T: Resource>(
    client: &crate::Client,
    scope: &Scope,
) -> Result<(Vec<Object<T>>, i64), ListError> {
    let (key, range_end) = scope.range(T::PREFIX);
    let resp = client
        .kv()
        .range(crate::proto::etcdserverpb::RangeRequest {
            key,
            range_end,
            ..Default::default()
        })
        .await
        .map_err(|s| ListError::Client(s.into()))?
        .into_inner();
    let objects = resp
        .kvs
        .iter()
        .filter_map(Object::decode)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((objects, resp.header.map_or(0, |h| h.revision)))
}

/// Why a listing failed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Client(#[from] crate::ClientError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}
