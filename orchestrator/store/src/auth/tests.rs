//! The auth state's rules, etcd's semantics.

use super::*;

fn perm(kind: PermKind, key: &str, end: &str) -> Permission {
    Permission {
        kind,
        key: key.into(),
        range_end: end.into(),
    }
}

fn state() -> AuthState {
    let mut s = AuthState::default();
    for c in [
        AuthCommand::UserAdd {
            name: "root".into(),
            password_hash: Some(hash_password("rootpw")),
        },
        AuthCommand::UserGrantRole {
            user: "root".into(),
            role: "root".into(),
        },
        AuthCommand::RoleAdd { name: "app".into() },
        AuthCommand::RoleGrantPermission {
            role: "app".into(),
            perm: perm(PermKind::ReadWrite, "/app/", "/app0"),
        },
        AuthCommand::RoleGrantPermission {
            role: "app".into(),
            perm: perm(PermKind::Read, "/config", ""),
        },
        AuthCommand::UserAdd {
            name: "alice".into(),
            password_hash: Some(hash_password("pw")),
        },
        AuthCommand::UserGrantRole {
            user: "alice".into(),
            role: "app".into(),
        },
    ] {
        s.apply(c).unwrap();
    }
    s.apply(AuthCommand::Enable {
        token_key: vec![1; 32],
    })
    .unwrap();
    s
}

fn read(k: &str, e: &str) -> Need {
    Need::Read {
        key: k.into(),
        range_end: e.into(),
    }
}

fn write(k: &str, e: &str) -> Need {
    Need::Write {
        key: k.into(),
        range_end: e.into(),
    }
}

#[test]
fn key_range_permissions_are_enforced() {
    let s = state();
    let alice = Principal::User("alice".into());
    assert!(s.check(&alice, &read("/app/x", "")).is_ok());
    assert!(s.check(&alice, &write("/app/x", "")).is_ok());
    assert!(s.check(&alice, &read("/app/", "/app0")).is_ok());
    assert!(s.check(&alice, &read("/config", "")).is_ok());
    assert_eq!(
        s.check(&alice, &write("/config", "")),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        s.check(&alice, &read("/other", "")),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        s.check(&alice, &read("/app/", "\0")),
        Err(AuthError::PermissionDenied),
        "a range past the role's"
    );
    assert_eq!(
        s.check(&alice, &read("\0", "\0")),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        s.check(&alice, &Need::Root),
        Err(AuthError::PermissionDenied)
    );
    assert!(
        s.check(&Principal::User("root".into()), &Need::Root)
            .is_ok()
    );
    assert!(
        s.check(&Principal::Member("m1".into()), &Need::Root)
            .is_ok()
    );
    assert_eq!(
        s.check(&Principal::Anonymous, &Need::Authenticated),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        s.check(&Principal::User("mallory".into()), &read("/app/x", "")),
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn enabling_needs_root_and_root_cannot_be_removed_while_enabled() {
    let mut s = AuthState::default();
    assert_eq!(
        s.apply(AuthCommand::Enable { token_key: vec![1] }),
        Err(AuthError::RootUserNotExist)
    );
    s.apply(AuthCommand::UserAdd {
        name: "root".into(),
        password_hash: None,
    })
    .unwrap();
    assert_eq!(
        s.apply(AuthCommand::Enable { token_key: vec![1] }),
        Err(AuthError::RootRoleNotExist)
    );
    let mut s = state();
    let before = s.clone();
    assert_eq!(
        s.apply(AuthCommand::UserDelete {
            name: "root".into()
        }),
        Err(AuthError::InvalidAuthMgmt)
    );
    assert_eq!(
        s.apply(AuthCommand::UserAdd {
            name: "alice".into(),
            password_hash: None
        }),
        Err(AuthError::UserAlreadyExist)
    );
    assert_eq!(
        s.apply(AuthCommand::UserAdd {
            name: "member:m1".into(),
            password_hash: None
        }),
        Err(AuthError::BadUserName("member:m1".into()))
    );
    assert_eq!(s, before, "refused changes change nothing");
}

#[test]
fn passwords_and_tokens() {
    let h = hash_password("s3cret");
    assert!(verify_password("s3cret", &h));
    assert!(!verify_password("S3cret", &h));
    assert!(!h.contains("s3cret"));
    let t = issue_token(&[9; 32], "alice");
    assert_eq!(verify_token(&[9; 32], &t).unwrap(), "alice");
    assert_eq!(
        verify_token(&[8; 32], &t),
        Err(TokenError::Invalid),
        "another key"
    );
    let forged = t.replacen(&hex::encode("alice"), &hex::encode("root"), 1);
    assert_eq!(verify_token(&[9; 32], &forged), Err(TokenError::Invalid));
    assert_eq!(verify_token(&[], &t), Err(TokenError::Invalid));
}
