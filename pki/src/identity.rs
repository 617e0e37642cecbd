//! Who a certificate speaks for. etcd takes a client certificate's common
//! name as the user name; herd does the same, and marks member
//! certificates with a `member:` prefix so a user can never pass for a
//! member (user names cannot contain `:`).

use x509_parser::prelude::{FromDer, X509Certificate};

/// The principal a certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A store member (by its member name): full access while it is a
    /// member of the cluster.
    Member(String),
    /// A user of the store's auth (etcd's client-cert auth: CN = user name;
    /// `root` is the administrator).
    User(String),
}

const MEMBER: &str = "member:";

impl Identity {
    /// The certificate common name for this identity.
    pub fn common_name(&self) -> String {
        match self {
            Identity::Member(name) => format!("{MEMBER}{name}"),
            Identity::User(name) => name.clone(),
        }
    }

    /// The identity a common name stands for.
    pub fn from_common_name(cn: &str) -> Identity {
        match cn.strip_prefix(MEMBER) {
            Some(name) => Identity::Member(name.to_owned()),
            None => Identity::User(cn.to_owned()),
        }
    }

    /// The identity in a DER certificate (its subject's common name).
    pub fn from_der(der: &[u8]) -> Option<Identity> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
        Some(Identity::from_common_name(cn))
    }

    /// Whether `name` can be a user name (and so never a member's CN).
    pub fn valid_user_name(name: &str) -> bool {
        !name.is_empty() && !name.contains(':') && !name.chars().any(char::is_control)
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Member(name) => write!(f, "member {name}"),
            Identity::User(name) => write!(f, "user {name}"),
        }
    }
}

/// When a DER certificate stops being valid (seconds since the epoch).
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}
