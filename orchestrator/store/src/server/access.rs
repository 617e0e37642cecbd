//! Who is calling and whether they may, checked in every service before a
//! request reaches the store: the caller is the member or user named by
//! the connection's client certificate, or the user an auth token (from
//! `Authenticate`, in the `token` metadata) speaks for. Secure by default:
//! over TLS a caller with neither is refused, whether or not etcd-style
//! auth is enabled; only a plaintext (`--insecure-plaintext`) store lets
//! anonymous callers in while auth is disabled.

use std::sync::Arc;

use herd_pki::Identity;
use tonic::{Request, Status};

use super::conn::ConnInfo;
use super::convert;
use crate::Member;
use crate::auth::{Need, Principal};

/// The gate every service calls.
#[derive(Clone)]
pub struct Access {
    pub member: Arc<Member>,
}

impl Access {
    /// Who sent `req`.
    pub fn caller<T>(&self, req: &Request<T>) -> Result<(Principal, bool), Status> {
        let info = req.extensions().get::<ConnInfo>();
        let plaintext = info.is_none_or(|i| !i.tls);
        if let Some(token) = req.metadata().get("token") {
            let token = token
                .to_str()
                .map_err(|_| Status::unauthenticated("etcdserver: invalid auth token"))?;
            let user = self.member.token_user(token).map_err(convert::status)?;
            return Ok((Principal::User(user), plaintext));
        }
        let who = match info.and_then(|i| i.identity.clone()) {
            Some(Identity::Member(name)) => Principal::Member(name),
            Some(Identity::User(name)) => Principal::User(name),
            None => Principal::Anonymous,
        };
        Ok((who, plaintext))
    }

    /// Refuses `req` unless its caller may do every one of `needs`.
    pub fn check<T>(&self, req: &Request<T>, needs: &[Need]) -> Result<Principal, Status> {
        let (who, plaintext) = self.caller(req)?;
        self.allow(&who, plaintext, needs)?;
        Ok(who)
    }

    /// [`Access::check`] for a caller already known (later messages of a
    /// stream).
    pub fn allow(&self, who: &Principal, plaintext: bool, needs: &[Need]) -> Result<(), Status> {
        if *who == Principal::Anonymous && !plaintext {
            return Err(Status::unauthenticated(
                "a client certificate from the cluster CA, or a user token, is required",
            ));
        }
        for need in needs {
            self.member
                .authorize(who, need, plaintext)
                .map_err(convert::status)?;
        }
        Ok(())
    }
}

/// Reading `[key, range_end)`.
pub fn read(key: &[u8], range_end: &[u8]) -> Need {
    Need::Read {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
    }
}

/// Writing `[key, range_end)`.
pub fn write(key: &[u8], range_end: &[u8]) -> Need {
    Need::Write {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
    }
}
