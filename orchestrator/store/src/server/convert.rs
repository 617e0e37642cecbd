//! Translation between the etcd wire messages (`proto`) and the store's own
//! request types, and from store errors to gRPC statuses carrying etcd's
//! error messages (etcdctl recognises them by text).

use tonic::{Code, Status};

use crate::StoreError;
use crate::types::{self as st, ApplyError};
use herd_client::proto::{etcdserverpb as pb, mvccpb};

/// A request field that does not decode to a known value.
fn invalid(what: &str, value: i32) -> Status {
    Status::invalid_argument(format!("etcdserver: invalid {what} {value}"))
}

pub fn header(h: st::ResponseHeader) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: h.cluster_id,
        member_id: h.member_id,
        revision: h.revision,
        raft_term: h.raft_term,
    })
}

pub fn kv(kv: &st::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value.clone(),
        lease: kv.lease,
    }
}

pub fn range_request(r: pb::RangeRequest) -> Result<st::RangeRequest, Status> {
    let sort_order = match pb::range_request::SortOrder::try_from(r.sort_order) {
        Ok(pb::range_request::SortOrder::None) => st::SortOrder::None,
        Ok(pb::range_request::SortOrder::Ascend) => st::SortOrder::Ascend,
        Ok(pb::range_request::SortOrder::Descend) => st::SortOrder::Descend,
        Err(_) => return Err(invalid("sort order", r.sort_order)),
    };
    let sort_target = match pb::range_request::SortTarget::try_from(r.sort_target) {
        Ok(pb::range_request::SortTarget::Key) => st::SortTarget::Key,
        Ok(pb::range_request::SortTarget::Version) => st::SortTarget::Version,
        Ok(pb::range_request::SortTarget::Create) => st::SortTarget::Create,
        Ok(pb::range_request::SortTarget::Mod) => st::SortTarget::Mod,
        Ok(pb::range_request::SortTarget::Value) => st::SortTarget::Value,
        Err(_) => return Err(invalid("sort target", r.sort_target)),
    };
    Ok(st::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub fn range_response(r: st::RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: header(r.header),
        kvs: r.kvs.iter().map(kv).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_request(r: pb::PutRequest) -> st::PutRequest {
    st::PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub fn put_response(r: st::PutResponse) -> pb::PutResponse {
    pb::PutResponse {
        header: header(r.header),
        prev_kv: r.prev_kv.as_ref().map(kv),
    }
}

pub fn delete_request(r: pb::DeleteRangeRequest) -> st::DeleteRangeRequest {
    st::DeleteRangeRequest {
        key: r.key,
        range_end: r.range_end,
        prev_kv: r.prev_kv,
    }
}

pub fn delete_response(r: st::DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: header(r.header),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.iter().map(kv).collect(),
    }
}

fn compare(c: pb::Compare) -> Result<st::Compare, Status> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match R::try_from(c.result) {
        Ok(R::Equal) => st::CompareResult::Equal,
        Ok(R::Greater) => st::CompareResult::Greater,
        Ok(R::Less) => st::CompareResult::Less,
        Ok(R::NotEqual) => st::CompareResult::NotEqual,
        Err(_) => return Err(invalid("compare result", c.result)),
    };
    // The target enum says which operand counts; an absent operand is zero
    // (proto3 drops default values on the wire, as etcd's Go code assumes).
    let target = match (T::try_from(c.target), c.target_union) {
        (Ok(T::Version), Some(U::Version(v))) => st::CompareTarget::Version(v),
        (Ok(T::Version), None) => st::CompareTarget::Version(0),
        (Ok(T::Create), Some(U::CreateRevision(v))) => st::CompareTarget::CreateRevision(v),
        (Ok(T::Create), None) => st::CompareTarget::CreateRevision(0),
        (Ok(T::Mod), Some(U::ModRevision(v))) => st::CompareTarget::ModRevision(v),
        (Ok(T::Mod), None) => st::CompareTarget::ModRevision(0),
        (Ok(T::Value), Some(U::Value(v))) => st::CompareTarget::Value(v),
        (Ok(T::Value), None) => st::CompareTarget::Value(Vec::new()),
        (Ok(T::Lease), Some(U::Lease(v))) => st::CompareTarget::Lease(v),
        (Ok(T::Lease), None) => st::CompareTarget::Lease(0),
        (Ok(_), Some(_)) => {
            return Err(Status::invalid_argument(
                "etcdserver: compare target does not match its operand",
            ));
        }
        (Err(_), _) => return Err(invalid("compare target", c.target)),
    };
    Ok(st::Compare {
        key: c.key,
        range_end: c.range_end,
        result,
        target,
    })
}

fn request_op(op: pb::RequestOp) -> Result<st::RequestOp, Status> {
    use pb::request_op::Request;
    Ok(match op.request {
        Some(Request::RequestRange(r)) => st::RequestOp::Range(range_request(r)?),
        Some(Request::RequestPut(r)) => st::RequestOp::Put(put_request(r)),
        Some(Request::RequestDeleteRange(r)) => st::RequestOp::DeleteRange(delete_request(r)),
        Some(Request::RequestTxn(r)) => st::RequestOp::Txn(txn_request(r)?),
        None => return Err(Status::invalid_argument("etcdserver: empty request in txn")),
    })
}

pub fn txn_request(t: pb::TxnRequest) -> Result<st::TxnRequest, Status> {
    Ok(st::TxnRequest {
        compare: t
            .compare
            .into_iter()
            .map(compare)
            .collect::<Result<_, _>>()?,
        success: t
            .success
            .into_iter()
            .map(request_op)
            .collect::<Result<_, _>>()?,
        failure: t
            .failure
            .into_iter()
            .map(request_op)
            .collect::<Result<_, _>>()?,
    })
}

fn response_op(r: st::ResponseOp) -> pb::ResponseOp {
    use pb::response_op::Response;
    pb::ResponseOp {
        response: Some(match r {
            st::ResponseOp::Range(r) => Response::ResponseRange(range_response(r)),
            st::ResponseOp::Put(r) => Response::ResponsePut(put_response(r)),
            st::ResponseOp::DeleteRange(r) => Response::ResponseDeleteRange(delete_response(r)),
            st::ResponseOp::Txn(r) => Response::ResponseTxn(txn_response(r)),
        }),
    }
}

pub fn txn_response(r: st::TxnResponse) -> pb::TxnResponse {
    pb::TxnResponse {
        header: header(r.header),
        succeeded: r.succeeded,
        responses: r.responses.into_iter().map(response_op).collect(),
    }
}

pub fn event(e: &st::Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            st::EventKind::Put => mvccpb::event::EventType::Put as i32,
            st::EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(kv(&e.kv)),
        prev_kv: e.prev_kv.as_deref().map(kv),
    }
}

/// A member as etcd lists it; `scheme` is `https` on a TLS cluster.
pub fn member(m: &st::MemberInfo, scheme: &str) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name.clone(),
        peer_urls: vec![format!("{scheme}://{}", m.peer_addr)],
        client_urls: m
            .client_addr
            .iter()
            .map(|a| format!("{scheme}://{a}"))
            .collect(),
        is_learner: m.is_learner,
    }
}

/// A store error as the gRPC status etcd would return for it.
pub fn status(e: StoreError) -> Status {
    let (code, message) = match &e {
        StoreError::Apply(a) => match a {
            ApplyError::Compacted | ApplyError::FutureRevision => {
                (Code::OutOfRange, format!("etcdserver: {a}"))
            }
            ApplyError::LeaseNotFound => (Code::NotFound, a.to_string()),
            ApplyError::LeaseExists => (Code::FailedPrecondition, a.to_string()),
            ApplyError::KeyNotFound => (Code::InvalidArgument, a.to_string()),
            ApplyError::Auth(auth) => (auth_code(auth), a.to_string()),
        },
        StoreError::InvalidRequest(_) => (Code::InvalidArgument, e.to_string()),
        StoreError::Unauthenticated(_) => (Code::Unauthenticated, e.to_string()),
        StoreError::LeaseNotFound | StoreError::MemberNotFound => (Code::NotFound, e.to_string()),
        StoreError::NoLeader | StoreError::Timeout | StoreError::Stopped => {
            (Code::Unavailable, e.to_string())
        }
        StoreError::Join { .. } | StoreError::Config(_) => {
            (Code::FailedPrecondition, e.to_string())
        }
        StoreError::Io { .. }
        | StoreError::Corrupt { .. }
        | StoreError::Peer { .. }
        | StoreError::Raft { .. }
        | StoreError::Unexpected(_)
        | StoreError::Remote(_)
        | StoreError::Task { .. } => {
            // Internal causes are logged here, where the details are.
            tracing::warn!(error = %e, "store request failed");
            (Code::Unavailable, format!("etcdserver: {e}"))
        }
    };
    Status::new(code, message)
}

/// The gRPC code etcd uses for an auth error.
fn auth_code(e: &crate::auth::AuthError) -> Code {
    use crate::auth::AuthError::*;
    match e {
        AuthFailed => Code::InvalidArgument,
        PermissionDenied => Code::PermissionDenied,
        UserNotFound | RoleNotFound | RoleNotGranted | PermissionNotGranted => {
            Code::FailedPrecondition
        }
        UserAlreadyExist | RoleAlreadyExist => Code::FailedPrecondition,
        RootUserNotExist | RootRoleNotExist | InvalidAuthMgmt | AuthNotEnabled => {
            Code::FailedPrecondition
        }
        UserEmpty | RoleEmpty | BadUserName(_) => Code::InvalidArgument,
    }
}
