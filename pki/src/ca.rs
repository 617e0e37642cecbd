//! The cluster certificate authority: created once by the first member (or
//! by `herd admin pki init`), it signs member certificates when machines
//! join and user certificates for operators.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};

use crate::PkiError;
use crate::identity::Identity;

/// A certificate and its private key, PEM-encoded. `Debug` leaves the key out.
#[derive(Clone)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKey")
            .field("cert_pem", &format!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The cluster CA: its certificate and signing key.
#[derive(Debug, Clone)]
pub struct ClusterCa {
    pub pair: CertKey,
}

/// How long the CA certificate is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long member and user certificates are valid; members renew theirs
/// once a third of this is left.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

fn generate(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Generate { what, source }
}

fn validity(params: &mut CertificateParams, valid_for: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that are a minute apart.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::seconds(valid_for.as_secs() as i64);
}

/// The sha256 of a PEM certificate's DER bytes: what join tokens pin.
pub fn fingerprint(cert_pem: &str) -> Result<[u8; 32], PkiError> {
    let der = crate::tls::certs_from_pem(cert_pem, "certificate")?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::Pem {
            what: "certificate".into(),
            reason: "no certificate in it".into(),
        })?;
    Ok(Sha256::digest(der.as_ref()).into())
}

impl ClusterCa {
    /// A new CA named after the cluster.
    pub fn generate(cluster: &str) -> Result<ClusterCa, PkiError> {
        let key = KeyPair::generate().map_err(generate("the CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("herd cluster CA {cluster}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_VALIDITY);
        let cert = params
            .self_signed(&key)
            .map_err(generate("the CA certificate"))?;
        Ok(ClusterCa {
            pair: CertKey {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            },
        })
    }

    /// The CA's sha256 fingerprint (see [`fingerprint`]).
    pub fn fingerprint(&self) -> Result<[u8; 32], PkiError> {
        fingerprint(&self.pair.cert_pem)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&self.pair.key_pem).map_err(|e| PkiError::Pem {
            what: "the CA key".into(),
            reason: e.to_string(),
        })?;
        Issuer::from_ca_cert_pem(&self.pair.cert_pem, key).map_err(|e| PkiError::Pem {
            what: "the CA certificate".into(),
            reason: e.to_string(),
        })
    }

    fn leaf_params(
        identity: &Identity,
        names: &[String],
        ips: &[IpAddr],
        valid_for: Duration,
    ) -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.common_name());
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .filter_map(|n| n.clone().try_into().ok().map(SanType::DnsName))
            .chain(ips.iter().map(|ip| SanType::IpAddress(*ip)))
            .collect();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, valid_for);
        params
    }

    /// A certificate and new key for `identity`, valid for `names` and
    /// `ips` (what clients dial), both for serving and as a client.
    pub fn issue(
        &self,
        identity: &Identity,
        names: &[String],
        ips: &[IpAddr],
        valid_for: Duration,
    ) -> Result<CertKey, PkiError> {
        let key = KeyPair::generate().map_err(generate("a key"))?;
        let params = Self::leaf_params(identity, names, ips, valid_for);
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(generate("a certificate"))?;
        Ok(CertKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a joining machine's request: the certificate says `identity`,
    /// whatever the request asked for, and covers `names`/`ips`; only the
    /// request's public key is taken from it (the private key never leaves
    /// the machine).
    pub fn sign_request(
        &self,
        csr_pem: &str,
        identity: &Identity,
        names: &[String],
        ips: &[IpAddr],
        valid_for: Duration,
    ) -> Result<String, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Csr(e.to_string()))?;
        let params = Self::leaf_params(identity, names, ips, valid_for);
        let cert = params
            .signed_by(&csr.public_key, &self.issuer()?)
            .map_err(generate("a certificate"))?;
        Ok(cert.pem())
    }
}

/// A new key and a signing request for it (what a joining machine sends).
pub fn signing_request(identity: &Identity) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(generate("a key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, identity.common_name());
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .map_err(generate("a signing request"))?;
    Ok((
        csr.pem().map_err(generate("a signing request"))?,
        key.serialize_pem(),
    ))
}
