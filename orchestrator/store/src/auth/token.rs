//! Tokens `Authenticate` hands out: `<user>.<expiry>.<mac>`, an HMAC over
//! the user and expiry with the cluster's token key (replicated with the
//! auth state), so any member accepts a token any member issued, and
//! enabling auth again (a new key) voids every token.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a token is good for (etcd's simple tokens: five minutes).
pub const TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("etcdserver: invalid auth token")]
    Invalid,
    #[error("etcdserver: invalid auth token (expired)")]
    Expired,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn mac(key: &[u8], user: &str, expiry: u64) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(format!("herd-auth-token:{user}:{expiry}").as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// A token for `user`, signed with `key`.
pub fn issue_token(key: &[u8], user: &str) -> String {
    let expiry = now() + TOKEN_TTL.as_secs();
    format!("{}.{expiry}.{}", hex::encode(user), mac(key, user, expiry))
}

/// The user a token speaks for, if `key` signed it and it has not expired.
pub fn verify_token(key: &[u8], token: &str) -> Result<String, TokenError> {
    let mut parts = token.split('.');
    let (Some(user), Some(expiry), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Invalid);
    };
    let user = String::from_utf8(hex::decode(user).map_err(|_| TokenError::Invalid)?)
        .map_err(|_| TokenError::Invalid)?;
    let expiry: u64 = expiry.parse().map_err(|_| TokenError::Invalid)?;
    let want = mac(key, &user, expiry);
    if key.is_empty()
        || want.len() != sig.len()
        || want
            .bytes()
            .zip(sig.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            != 0
    {
        return Err(TokenError::Invalid);
    }
    if now() > expiry {
        return Err(TokenError::Expired);
    }
    Ok(user)
}
