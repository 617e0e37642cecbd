//! The `etcdserverpb.Auth` service: etcd's users, roles and key-range
//! permissions (`etcdctl user/role/auth …`). Passwords are hashed here, on
//! the member that takes the request; only hashes are replicated. Managing
//! auth needs root once auth is enabled (any authenticated caller before).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::access::Access;
use super::convert;
use crate::Member;
use crate::auth::{AuthCommand, AuthError, Need, PermKind, Permission, ROOT, hash_password};
use crate::types::ApplyError;
use herd_client::proto::authpb;
use herd_client::proto::etcdserverpb::{self as pb, auth_server::Auth};

pub struct AuthService {
    pub member: Arc<Member>,
    pub access: Access,
}

fn auth_status(e: AuthError) -> Status {
    convert::status(crate::StoreError::Apply(ApplyError::Auth(e)))
}

impl AuthService {
    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        convert::header(self.member.header(revision))
    }

    /// Applies `change` for a caller allowed to manage auth.
    async fn change<T>(
        &self,
        req: &Request<T>,
        change: AuthCommand,
    ) -> Result<Option<pb::ResponseHeader>, Status> {
        self.access.check(req, &[Need::Root])?;
        let revision = self
            .member
            .auth_change(change)
            .await
            .map_err(convert::status)?;
        Ok(self.header(revision))
    }
}

fn password_hash(password: &str, hashed: &str, no_password: bool) -> Option<String> {
    if no_password {
        None
    } else if !hashed.is_empty() {
        Some(hashed.to_owned())
    } else {
        Some(hash_password(password))
    }
}

fn kind(t: i32) -> Result<PermKind, Status> {
    match authpb::permission::Type::try_from(t) {
        Ok(authpb::permission::Type::Read) => Ok(PermKind::Read),
        Ok(authpb::permission::Type::Write) => Ok(PermKind::Write),
        Ok(authpb::permission::Type::Readwrite) => Ok(PermKind::ReadWrite),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown permission type {t}"
        ))),
    }
}

fn pb_kind(k: PermKind) -> i32 {
    match k {
        PermKind::Read => authpb::permission::Type::Read as i32,
        PermKind::Write => authpb::permission::Type::Write as i32,
        PermKind::ReadWrite => authpb::permission::Type::Readwrite as i32,
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        req: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let key: [u8; 32] = rand::random();
        let header = self
            .change(
                &req,
                AuthCommand::Enable {
                    token_key: key.to_vec(),
                },
            )
            .await?;
        Ok(Response::new(pb::AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        req: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let header = self.change(&req, AuthCommand::Disable).await?;
        Ok(Response::new(pb::AuthDisableResponse { header }))
    }

    async fn auth_status(
        &self,
        req: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        self.access.check(&req, &[Need::Authenticated])?;
        let state = self.member.auth_state().await.map_err(convert::status)?;
        Ok(Response::new(pb::AuthStatusResponse {
            header: self.header(self.member.revision()),
            enabled: state.enabled,
            auth_revision: state.revision,
        }))
    }

    async fn authenticate(
        &self,
        req: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let r = req.into_inner();
        let token = self
            .member
            .authenticate(&r.name, &r.password)
            .await
            .map_err(|e| {
                tracing::info!(user = %r.name, error = %e, "authentication refused");
                convert::status(e)
            })?;
        Ok(Response::new(pb::AuthenticateResponse {
            header: self.header(self.member.revision()),
            token,
        }))
    }

    async fn user_add(
        &self,
        req: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let r = req.get_ref();
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        let change = AuthCommand::UserAdd {
            name: r.name.clone(),
            password_hash: password_hash(&r.password, &r.hashed_password, no_password),
        };
        let header = self.change(&req, change).await?;
        Ok(Response::new(pb::AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        req: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        self.access.check(&req, &[Need::Root])?;
        let state = self.member.auth_state().await.map_err(convert::status)?;
        let user = state
            .users
            .get(&req.get_ref().name)
            .ok_or_else(|| auth_status(AuthError::UserNotFound))?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: self.header(self.member.revision()),
            roles: user.roles.iter().cloned().collect(),
        }))
    }

    async fn user_list(
        &self,
        req: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        self.access.check(&req, &[Need::Root])?;
        let state = self.member.auth_state().await.map_err(convert::status)?;
        Ok(Response::new(pb::AuthUserListResponse {
            header: self.header(self.member.revision()),
            users: state.users.keys().cloned().collect(),
        }))
    }

    async fn user_delete(
        &self,
        req: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let name = req.get_ref().name.clone();
        let header = self.change(&req, AuthCommand::UserDelete { name }).await?;
        Ok(Response::new(pb::AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        req: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let r = req.get_ref();
        let change = AuthCommand::UserChangePassword {
            name: r.name.clone(),
            password_hash: password_hash(&r.password, &r.hashed_password, false),
        };
        let header = self.change(&req, change).await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        req: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let r = req.get_ref();
        let change = AuthCommand::UserGrantRole {
            user: r.user.clone(),
            role: r.role.clone(),
        };
        let header = self.change(&req, change).await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let r = req.get_ref();
        let change = AuthCommand::UserRevokeRole {
            user: r.name.clone(),
            role: r.role.clone(),
        };
        let header = self.change(&req, change).await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        req: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let name = req.get_ref().name.clone();
        let header = self.change(&req, AuthCommand::RoleAdd { name }).await?;
        Ok(Response::new(pb::AuthRoleAddResponse { header }))
    }

    async fn role_get(
        &self,
        req: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        self.access.check(&req, &[Need::Root])?;
        let state = self.member.auth_state().await.map_err(convert::status)?;
        let role = &req.get_ref().role;
        let perms = if role == ROOT {
            Vec::new()
        } else {
            state
                .roles
                .get(role)
                .cloned()
                .ok_or_else(|| auth_status(AuthError::RoleNotFound))?
        };
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: self.header(self.member.revision()),
            perm: perms
                .into_iter()
                .map(|p| authpb::Permission {
                    perm_type: pb_kind(p.kind),
                    key: p.key,
                    range_end: p.range_end,
                })
                .collect(),
        }))
    }

    async fn role_list(
        &self,
        req: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        self.access.check(&req, &[Need::Root])?;
        let state = self.member.auth_state().await.map_err(convert::status)?;
        Ok(Response::new(pb::AuthRoleListResponse {
            header: self.header(self.member.revision()),
            roles: state.roles.keys().cloned().collect(),
        }))
    }

    async fn role_delete(
        &self,
        req: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let name = req.get_ref().role.clone();
        let header = self.change(&req, AuthCommand::RoleDelete { name }).await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let r = req.get_ref();
        let perm = r
            .perm
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("no permission given"))?;
        let change = AuthCommand::RoleGrantPermission {
            role: r.name.clone(),
            perm: Permission {
                kind: kind(perm.perm_type)?,
                key: perm.key.clone(),
                range_end: perm.range_end.clone(),
            },
        };
        let header = self.change(&req, change).await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header,
        }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let r = req.get_ref();
        let change = AuthCommand::RoleRevokePermission {
            role: r.role.clone(),
            key: r.key.clone(),
            range_end: r.range_end.clone(),
        };
        let header = self.change(&req, change).await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header,
        }))
    }
}
