//! Authentication and authorization on a member: who a caller is (a
//! member certificate, a user's certificate or token), whether the auth
//! state it has applied lets them do a request, and etcd's auth API (log
//! in, users, roles, enabling auth).

use crate::StoreError;
use crate::auth::{
    AuthCommand, AuthError, AuthState, Need, Principal, issue_token, verify_password, verify_token,
};
use crate::types::{ApplyError, Command, CommandResponse};

use super::{Member, member_id};

fn auth_err(e: AuthError) -> StoreError {
    StoreError::Apply(ApplyError::Auth(e))
}

impl Member {
    /// Whether `who` may do `need`, by the auth state this member applied.
    /// `anonymous_ok`: a caller with neither certificate nor token is
    /// allowed while auth is disabled (plaintext mode only).
    pub fn authorize(
        &self,
        who: &Principal,
        need: &Need,
        anonymous_ok: bool,
    ) -> Result<(), StoreError> {
        let data = self.inner.sm.read();
        if *who == Principal::Anonymous && anonymous_ok && !data.auth.enabled {
            return Ok(());
        }
        if let Principal::Member(name) = who
            && self.inner.ensure_member(member_id(name)).is_err()
        {
            // A removed member's certificate no longer works.
            return Err(auth_err(AuthError::PermissionDenied));
        }
        data.auth.check(who, need).map_err(auth_err)
    }

    /// The user an auth token speaks for.
    pub fn token_user(&self, token: &str) -> Result<String, StoreError> {
        let data = self.inner.sm.read();
        if !data.auth.enabled {
            return Err(StoreError::Unauthenticated("auth is not enabled".into()));
        }
        verify_token(&data.auth.token_key, token)
            .map_err(|e| StoreError::Unauthenticated(e.to_string()))
    }

    /// Checks a user's password and returns a token (etcd's `Authenticate`).
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<String, StoreError> {
        self.inner.catch_up_for_read().await?;
        let data = self.inner.sm.read();
        if !data.auth.enabled {
            return Err(auth_err(AuthError::AuthNotEnabled));
        }
        let user = data
            .auth
            .users
            .get(name)
            .ok_or(auth_err(AuthError::AuthFailed))?;
        match &user.password_hash {
            Some(hash) if verify_password(password, hash) => {
                Ok(issue_token(&data.auth.token_key, name))
            }
            _ => Err(auth_err(AuthError::AuthFailed)),
        }
    }

    /// Applies an auth change through the log; returns the key space's
    /// revision at which it was applied.
    pub async fn auth_change(&self, change: AuthCommand) -> Result<i64, StoreError> {
        match self.inner.propose(Command::Auth(change)).await? {
            CommandResponse::Auth { revision } => Ok(revision),
            other => Err(super::unexpected_cmd(other)),
        }
    }

    /// The auth state as this member applied it, after catching up with
    /// the leader (for the read-only parts of the auth API).
    pub async fn auth_state(&self) -> Result<AuthState, StoreError> {
        self.inner.catch_up_for_read().await?;
        Ok(self.inner.sm.read().auth.clone())
    }
}
