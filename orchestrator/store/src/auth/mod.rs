//! etcd's authentication and authorization, replicated with the key space:
//! users (password hashes only), roles with key-range permissions, and
//! whether auth is enabled. Changes are Raft commands ([`AuthCommand`])
//! applied on every member; checks ([`AuthState::check`]) read the state a
//! member has applied.
//!
//! Who a request comes from ([`Principal`]) is decided at the API's edge:
//! a member certificate (full access while a member), a client
//! certificate's common name, or a token from `Authenticate`.

mod password;
mod token;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use password::{hash_password, verify_password};
pub use token::{TOKEN_TTL, TokenError, issue_token, verify_token};

/// The administrator: the user `root`, and the role `root` it must hold
/// before auth can be enabled (as etcd requires).
pub const ROOT: &str = "root";

/// What a permission allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PermKind {
    Read,
    Write,
    ReadWrite,
}

impl PermKind {
    fn allows(self, write: bool) -> bool {
        matches!(
            (self, write),
            (PermKind::ReadWrite, _) | (PermKind::Read, false) | (PermKind::Write, true)
        )
    }
}

/// One key-range permission of a role: `[key, range_end)`, a single key
/// when `range_end` is empty, everything from `key` on when it is `"\0"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub kind: PermKind,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

impl Permission {
    /// Whether this permission covers all of `[key, end)` (a single key
    /// when `end` is empty; to the end of the key space when `end` is `\0`).
    fn covers(&self, key: &[u8], end: &[u8]) -> bool {
        if self.range_end.is_empty() {
            return end.is_empty() && key == self.key.as_slice();
        }
        let from_ok = key >= self.key.as_slice();
        let to_ok = if self.range_end == [0] {
            true
        } else if end.is_empty() {
            key < self.range_end.as_slice()
        } else if end == [0] {
            false
        } else {
            end <= self.range_end.as_slice()
        };
        from_ok && to_ok
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// `None`: the user cannot log in with a password (certificates only).
    pub password_hash: Option<String>,
    pub roles: BTreeSet<String>,
}

/// The replicated auth state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub enabled: bool,
    /// Bumped by every change (etcd's `authRevision`).
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Vec<Permission>>,
    /// The key that signs tokens; replaced each time auth is enabled.
    pub token_key: Vec<u8>,
}

/// A change to the auth state, decided by the member that took the request
/// (passwords arrive hashed, token keys generated) so that every member
/// applies the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    Enable {
        token_key: Vec<u8>,
    },
    Disable,
    UserAdd {
        name: String,
        password_hash: Option<String>,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        password_hash: Option<String>,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        role: String,
        perm: Permission,
    },
    RoleRevokePermission {
        role: String,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
}

/// Auth errors, with etcd's wording (etcdctl and clients match on it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AuthError {
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: permission not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: user name is not valid: {0}")]
    BadUserName(String),
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A member of the cluster (its certificate): everything.
    Member(String),
    /// A user, by certificate common name or by token.
    User(String),
    /// Nobody: no certificate, no token.
    Anonymous,
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Any authenticated caller.
    Authenticated,
    Read {
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
    Write {
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
    /// The administrator (membership, maintenance, auth management).
    Root,
}

impl AuthState {
    /// Whether `who` may do what `need` says. With auth disabled every
    /// authenticated caller may do everything (etcd's behaviour; herd
    /// requires a certificate then, see the server's module).
    pub fn check(&self, who: &Principal, need: &Need) -> Result<(), AuthError> {
        let user = match who {
            Principal::Member(_) => return Ok(()),
            Principal::Anonymous => return Err(AuthError::PermissionDenied),
            Principal::User(_) if !self.enabled => return Ok(()),
            Principal::User(name) => name,
        };
        let u = self.users.get(user).ok_or(AuthError::PermissionDenied)?;
        if u.roles.contains(ROOT) {
            return Ok(());
        }
        let (key, end, write) = match need {
            Need::Authenticated => return Ok(()),
            Need::Root => return Err(AuthError::PermissionDenied),
            Need::Read { key, range_end } => (key, range_end, false),
            Need::Write { key, range_end } => (key, range_end, true),
        };
        let allowed = u
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flatten()
            .any(|p| p.kind.allows(write) && p.covers(key, end));
        if allowed {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Applies a change; a refused change leaves the state as it was.
    pub fn apply(&mut self, cmd: AuthCommand) -> Result<(), AuthError> {
        match cmd {
            AuthCommand::Enable { token_key } => {
                let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
                if !root.roles.contains(ROOT) {
                    return Err(AuthError::RootRoleNotExist);
                }
                self.enabled = true;
                self.token_key = token_key;
            }
            AuthCommand::Disable => self.enabled = false,
            AuthCommand::UserAdd {
                name,
                password_hash,
            } => {
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if !herd_pki::Identity::valid_user_name(&name) {
                    return Err(AuthError::BadUserName(name));
                }
                if self.users.contains_key(&name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                self.users.insert(
                    name,
                    User {
                        password_hash,
                        roles: BTreeSet::new(),
                    },
                );
            }
            AuthCommand::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.users.remove(&name).ok_or(AuthError::UserNotFound)?;
            }
            AuthCommand::UserChangePassword {
                name,
                password_hash,
            } => {
                self.users
                    .get_mut(&name)
                    .ok_or(AuthError::UserNotFound)?
                    .password_hash = password_hash;
            }
            AuthCommand::UserGrantRole { user, role } => {
                if role != ROOT && !self.roles.contains_key(&role) {
                    return Err(AuthError::RoleNotFound);
                }
                self.users
                    .get_mut(&user)
                    .ok_or(AuthError::UserNotFound)?
                    .roles
                    .insert(role);
            }
            AuthCommand::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT && role == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let u = self.users.get_mut(&user).ok_or(AuthError::UserNotFound)?;
                if !u.roles.remove(&role) {
                    return Err(AuthError::RoleNotGranted);
                }
            }
            AuthCommand::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(&name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                self.roles.insert(name, Vec::new());
            }
            AuthCommand::RoleDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.roles.remove(&name).ok_or(AuthError::RoleNotFound)?;
                for u in self.users.values_mut() {
                    u.roles.remove(&name);
                }
            }
            AuthCommand::RoleGrantPermission { role, perm } => {
                let perms = self.roles.get_mut(&role).ok_or(AuthError::RoleNotFound)?;
                match perms
                    .iter_mut()
                    .find(|p| p.key == perm.key && p.range_end == perm.range_end)
                {
                    Some(existing) => existing.kind = perm.kind,
                    None => perms.push(perm),
                }
            }
            AuthCommand::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let perms = self.roles.get_mut(&role).ok_or(AuthError::RoleNotFound)?;
                let before = perms.len();
                perms.retain(|p| !(p.key == key && p.range_end == range_end));
                if perms.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
            }
        }
        self.revision += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
