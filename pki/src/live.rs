//! A certificate that is renewed in place: the member's own, which every
//! TLS configuration built from it (peer client and server, client API,
//! the member's loopback and its roles' clients) reads at each handshake,
//! so a renewal reaches them all without rebuilding or reconnecting
//! anything. Connections already open keep the session they have: a
//! certificate is checked only when a handshake presents it.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::PkiError;
use crate::ca::CertKey;
use crate::tls::{certs_from_pem, key_from_pem, provider};

/// The current certificate of one identity, and the CA that signed it.
pub struct LiveIdentity {
    ca_pem: String,
    current: RwLock<(CertKey, Arc<CertifiedKey>)>,
}

impl fmt::Debug for LiveIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveIdentity").finish_non_exhaustive()
    }
}

/// `leaf` with the CA appended to its chain, and its key loaded for signing.
fn certified(ca_pem: &str, leaf: &CertKey) -> Result<Arc<CertifiedKey>, PkiError> {
    let mut chain = certs_from_pem(&leaf.cert_pem, "certificate")?;
    if chain.is_empty() {
        return Err(PkiError::Pem {
            what: "certificate".into(),
            reason: "no certificate in it".into(),
        });
    }
    chain.extend(certs_from_pem(ca_pem, "CA certificate")?);
    let key = provider()
        .key_provider
        .load_private_key(key_from_pem(&leaf.key_pem)?)?;
    let certified = CertifiedKey::new(chain, key);
    // A key that is not the certificate's would fail every handshake.
    certified.keys_match()?;
    Ok(Arc::new(certified))
}

impl LiveIdentity {
    pub fn new(ca_pem: &str, leaf: &CertKey) -> Result<Arc<LiveIdentity>, PkiError> {
        Ok(Arc::new(LiveIdentity {
            ca_pem: ca_pem.to_owned(),
            current: RwLock::new((leaf.clone(), certified(ca_pem, leaf)?)),
        }))
    }

    /// Replaces the certificate; the next handshake presents `leaf`.
    pub fn set(&self, leaf: &CertKey) -> Result<(), PkiError> {
        let key = certified(&self.ca_pem, leaf)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (leaf.clone(), key);
        Ok(())
    }

    /// The certificate presented now.
    pub fn cert_key(&self) -> CertKey {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()).1)
    }
}

impl ResolvesServerCert for LiveIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }
}

impl ResolvesClientCert for LiveIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// When a certificate valid `from..until` (unix seconds), issued for
/// `validity`, is due for renewal: once a third of `validity` is left
/// (etcd's and kubelet's habit of renewing well before the end), so a
/// member that is down for a while still comes back with a valid one.
pub fn renew_at(until: i64, validity: Duration) -> i64 {
    until - (validity.as_secs() / 3) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{ClusterCa, LEAF_VALIDITY};
    use crate::identity::{Identity, not_after};

    #[test]
    fn a_renewed_certificate_is_what_the_next_handshake_presents() {
        crate::install_crypto_provider();
        let ca = ClusterCa::generate("t").unwrap();
        let id = Identity::Member("m1".into());
        let first = ca.issue(&id, &[], &[], Duration::from_secs(60)).unwrap();
        let live = LiveIdentity::new(&ca.pair.cert_pem, &first).unwrap();
        let der = |c: &CertKey| certs_from_pem(&c.cert_pem, "c").unwrap()[0].to_vec();
        assert_eq!(live.key().cert[0].as_ref(), der(&first).as_slice());
        let second = ca.issue(&id, &[], &[], LEAF_VALIDITY).unwrap();
        live.set(&second).unwrap();
        assert_eq!(live.key().cert[0].as_ref(), der(&second).as_slice());
        assert_eq!(live.cert_key().cert_pem, second.cert_pem);
        assert!(not_after(&der(&second)).unwrap() > not_after(&der(&first)).unwrap());
        assert!(
            live.set(&CertKey {
                cert_pem: "junk".into(),
                key_pem: second.key_pem.clone()
            })
            .is_err()
        );
        assert_eq!(
            live.cert_key().cert_pem,
            second.cert_pem,
            "a bad certificate changes nothing"
        );
    }

    #[test]
    fn renewal_is_due_with_a_third_of_the_validity_left() {
        let day = 24 * 3600;
        assert_eq!(
            renew_at(90 * day, Duration::from_secs(90 * day as u64)),
            60 * day
        );
        assert_eq!(renew_at(1_000, Duration::from_secs(30)), 990);
    }
}
