//! Join tokens: `herd1.<sha256 of the CA certificate>.<id>.<secret>`.
//!
//! The hash lets a joining machine check the cluster before it sends the
//! secret (as kubeadm's and k3s's tokens do); the id names the token's
//! record in the store (its limits: machine, uses, expiry) and the secret
//! proves the holder may join. Only the secret is sensitive: `Debug` and
//! `Display` never show it; [`JoinToken::reveal`] does, for writing it
//! where it belongs.

use std::str::FromStr;

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::PkiError;

const PREFIX: &str = "herd1";

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_hash: [u8; 32],
    pub id: String,
    secret: String,
}

impl JoinToken {
    /// A new token for the CA with `ca_hash`, with a random id and secret.
    pub fn generate(ca_hash: [u8; 32]) -> JoinToken {
        let mut rng = rand::rng();
        let id: String = (0..8)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
            .collect();
        let secret: [u8; 24] = rng.random();
        JoinToken {
            ca_hash,
            id,
            secret: hex::encode(secret),
        }
    }

    /// The secret's hash, which is all the store keeps of it.
    pub fn secret_hash(&self) -> String {
        hash_secret(&self.secret)
    }

    /// The whole token, secret included: only for where it must go (a
    /// file with mode 0600, a cloud-config).
    pub fn reveal(&self) -> String {
        format!(
            "{PREFIX}.{}.{}.{}",
            hex::encode(self.ca_hash),
            self.id,
            self.secret
        )
    }

    /// The secret alone (sent, over TLS to a verified cluster, to join).
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

/// The hash under which the store keeps a token's secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(
        format!("herd-join-token:{secret}").as_bytes(),
    ))
}

impl FromStr for JoinToken {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<JoinToken, PkiError> {
        let bad = |why: &str| {
            PkiError::Token(format!(
                "not a herd join token ({why}); expected {PREFIX}.<64 hex digits>.<id>.<secret>"
            ))
        };
        let mut parts = s.trim().split('.');
        if parts.next() != Some(PREFIX) {
            return Err(bad("it does not start with herd1."));
        }
        let hash = parts.next().ok_or_else(|| bad("no CA hash"))?;
        let ca_hash: [u8; 32] = hex::decode(hash)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("the CA hash is not 64 hex digits"))?;
        let id = parts
            .next()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| bad("no id"))?;
        let secret = parts
            .next()
            .filter(|s| s.len() >= 16)
            .ok_or_else(|| bad("no secret, or a short one"))?;
        if parts.next().is_some() {
            return Err(bad("too many parts"));
        }
        Ok(JoinToken {
            ca_hash,
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JoinToken({self})")
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{PREFIX}.{}….{}.<secret>",
            &hex::encode(self.ca_hash)[..12],
            self.id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_never_shows_its_secret() {
        let t = JoinToken::generate([7; 32]);
        let parsed: JoinToken = t.reveal().parse().unwrap();
        assert_eq!(parsed, t);
        assert!(!format!("{t} {t:?}").contains(t.secret()));
        assert!(t.reveal().contains(t.secret()));
        for bad in [
            "",
            "herd1",
            "herd2.aa.b.cccccccccccccccccccc",
            "herd1.zz.id.cccccccccccccccccccc",
            &format!("herd1.{}.id.short", "ab".repeat(32)),
        ] {
            let e = bad.parse::<JoinToken>().unwrap_err().to_string();
            assert!(e.contains("not a herd join token"), "{bad}: {e}");
        }
    }
}
