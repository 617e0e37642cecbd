//! Files for people and tools: a new cluster CA (`ca.crt`, `ca.key`), and
//! a user's client bundle — `ca.crt`, `USER.crt`, `USER.key` (0600) and an
//! `env` file that points `herd kv`, `herd admin` and `etcdctl` at them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::files::write_atomic;
use crate::{ClusterCa, Identity, PkiError};

/// Writes a new CA's `ca.crt` and `ca.key` into `out`, refusing to
/// replace existing ones (a lost CA key cannot be made again).
pub fn write_new_ca(out: &Path, ca: &ClusterCa) -> Result<(), PkiError> {
    for name in ["ca.crt", "ca.key"] {
        if out.join(name).exists() {
            return Err(PkiError::Exists(out.join(name)));
        }
    }
    write_atomic(&out.join("ca.crt"), ca.pair.cert_pem.as_bytes(), 0o644)?;
    write_atomic(&out.join("ca.key"), ca.pair.key_pem.as_bytes(), 0o600)?;
    Ok(())
}

/// Issues `user`'s client certificate from `ca` and writes `ca.crt`,
/// `USER.crt`, `USER.key` and `env` into `out`; returns the `env` path.
pub fn write_client(
    ca: &ClusterCa,
    user: &str,
    out: &Path,
    endpoints: &[String],
    valid_for: Duration,
) -> Result<PathBuf, PkiError> {
    // The name becomes file names too: no paths.
    let plain = user
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !Identity::valid_user_name(user) || !plain || user.starts_with('.') {
        return Err(PkiError::BadUser(user.to_owned()));
    }
    let pair = ca.issue(&Identity::User(user.to_owned()), &[], &[], valid_for)?;
    let (ca_path, cert, key) = (
        out.join("ca.crt"),
        out.join(format!("{user}.crt")),
        out.join(format!("{user}.key")),
    );
    write_atomic(&ca_path, ca.pair.cert_pem.as_bytes(), 0o644)?;
    write_atomic(&key, pair.key_pem.as_bytes(), 0o600)?;
    write_atomic(&cert, pair.cert_pem.as_bytes(), 0o644)?;
    let env = out.join("env");
    write_atomic(
        &env,
        env_file(endpoints, &ca_path, &cert, &key).as_bytes(),
        0o644,
    )?;
    Ok(env)
}

/// `export` lines for herd's and etcdctl's variables.
fn env_file(endpoints: &[String], ca: &Path, cert: &Path, key: &Path) -> String {
    let urls: Vec<String> = endpoints
        .iter()
        .map(|e| match e.split_once("://") {
            Some((_, host)) => format!("https://{host}"),
            None => format!("https://{e}"),
        })
        .collect();
    let (urls, ca, cert, key) = (urls.join(","), ca.display(), cert.display(), key.display());
    format!(
        "# herd and etcdctl clients: `. {{this file}}`\n\
         export HERD_ENDPOINTS={urls}\n\
         export HERD_CACERT={ca}\n\
         export HERD_CERT={cert}\n\
         export HERD_KEY={key}\n\
         export ETCDCTL_API=3\n\
         export ETCDCTL_ENDPOINTS={urls}\n\
         export ETCDCTL_CACERT={ca}\n\
         export ETCDCTL_CERT={cert}\n\
         export ETCDCTL_KEY={key}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_signed_by_the_ca_and_the_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate("t").unwrap();
        write_new_ca(dir.path(), &ca).unwrap();
        let err = write_new_ca(dir.path(), &ca).unwrap_err().to_string();
        assert!(err.contains("refusing to replace"), "{err}");
        let out = dir.path().join("alice");
        let env = write_client(&ca, "alice", &out, &["10.0.0.1:2379".into()], LEAF).unwrap();
        let text = std::fs::read_to_string(env).unwrap();
        assert!(
            text.contains("export ETCDCTL_ENDPOINTS=https://10.0.0.1:2379\n"),
            "{text}"
        );
        let mode = std::fs::metadata(out.join("alice.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let cert = std::fs::read_to_string(out.join("alice.crt")).unwrap();
        let der = crate::tls::certs_from_pem(&cert, "alice").unwrap();
        assert_eq!(
            Identity::from_der(der[0].as_ref()),
            Some(Identity::User("alice".into()))
        );
        for bad in ["member:x", "../escape", ".hidden", ""] {
            let err = write_client(&ca, bad, &out, &[], LEAF).unwrap_err();
            assert!(err.to_string().contains("not a user name"), "{bad}: {err}");
        }
    }

    const LEAF: Duration = crate::ca::LEAF_VALIDITY;
}
