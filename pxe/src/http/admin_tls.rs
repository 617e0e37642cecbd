//! The admin listener's certificate. The provisioning server runs before
//! any cluster exists, so it cannot use the cluster's CA: on first start it
//! makes a CA of its own in `<state-dir>/admin/` (`ca.crt`, `ca.key`, mode
//! 0600), and at every start issues itself a server certificate for the
//! addresses it listens on — so a changed `--address` needs no manual step.
//! Operators pin `ca.crt` (`herd pxe publish --cacert …`), or compare the
//! fingerprint the server logs; the admin token then only ever crosses an
//! authenticated, encrypted channel.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use herd_pki::tls::{ClientAuth, ServerConfig};
use herd_pki::{CertKey, ClusterCa, Identity, PkiError};

/// How long the server's own certificate is valid; it is issued anew at
/// every start, so this only bounds a server that never restarts.
const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The identity in the server certificate (a name no cluster user takes:
/// the CA is not the cluster's, so it could not pass for one anyway).
const SERVER_NAME: &str = "herd-pxe";

/// The admin listener's TLS, ready to serve.
pub struct AdminTls {
    pub config: Arc<ServerConfig>,
    /// Where the CA certificate operators pin lives.
    pub ca_file: PathBuf,
    /// The CA certificate's sha256, for the log line operators compare.
    pub fingerprint: String,
}

/// The directory the admin CA lives in.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("admin")
}

/// The CA certificate clients pin.
pub fn ca_file(state_dir: &Path) -> PathBuf {
    dir(state_dir).join("ca.crt")
}

/// Loads the admin CA in `state_dir` (making it on first start) and issues
/// a server certificate valid for `address`, loopback, `localhost` and
/// `extra` names (DNS names or IP addresses operators dial it by).
/// Blocking (files, key generation).
pub fn load_or_create(
    state_dir: &Path,
    address: Ipv4Addr,
    extra: &[String],
) -> Result<AdminTls, PkiError> {
    let ca = load_or_create_ca(&dir(state_dir))?;
    let mut ips = vec![IpAddr::V4(address), IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let mut names = vec!["localhost".to_owned()];
    for name in extra {
        match name.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => names.push(name.clone()),
        }
    }
    ips.dedup();
    let leaf: CertKey = ca.issue(
        &Identity::User(SERVER_NAME.into()),
        &names,
        &ips,
        SERVER_VALIDITY,
    )?;
    let config = herd_pki::tls::server_config(
        &ca.pair.cert_pem,
        &leaf,
        ClientAuth::Optional,
        &[b"http/1.1"],
    )?;
    Ok(AdminTls {
        config,
        ca_file: ca_file(state_dir),
        fingerprint: hex::encode(ca.fingerprint()?),
    })
}

fn load_or_create_ca(dir: &Path) -> Result<ClusterCa, PkiError> {
    let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| PkiError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    match (cert.is_file(), key.is_file()) {
        (true, true) => Ok(ClusterCa {
            pair: CertKey {
                cert_pem: read(&cert)?,
                key_pem: read(&key)?,
            },
        }),
        (false, false) => {
            let ca = ClusterCa::generate("provisioning server")?;
            // The key first: a crash between the two leaves no certificate
            // without its key, which the next start would refuse.
            herd_pki::files::write_atomic(&key, ca.pair.key_pem.as_bytes(), 0o600)?;
            herd_pki::files::write_atomic(&cert, ca.pair.cert_pem.as_bytes(), 0o644)?;
            Ok(ca)
        }
        // Half a CA: making a new one would silently break every client
        // that pinned the old certificate.
        (true, false) => Err(missing(&key, &cert)),
        (false, true) => Err(missing(&cert, &key)),
    }
}

fn missing(absent: &Path, present: &Path) -> PkiError {
    PkiError::Io {
        path: absent.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "missing beside {}: restore it, or remove both to make a new admin CA (clients must then pin the new ca.crt)",
                present.display()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_and_its_key_kept_private() {
        let state = tempfile::tempdir().unwrap();
        let a = load_or_create(state.path(), Ipv4Addr::new(10, 77, 0, 1), &[]).unwrap();
        let b = load_or_create(
            state.path(),
            Ipv4Addr::new(10, 88, 0, 1),
            &["pxe.rack".into()],
        )
        .unwrap();
        assert_eq!(a.fingerprint, b.fingerprint, "the CA survives a restart");
        assert_eq!(a.ca_file, state.path().join("admin/ca.crt"));
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(state.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("admin/ca.key"), 0o600);
        assert_eq!(mode("admin/ca.crt"), 0o644);
    }

    #[test]
    fn half_a_ca_is_refused_not_replaced() {
        let state = tempfile::tempdir().unwrap();
        load_or_create(state.path(), Ipv4Addr::LOCALHOST, &[]).unwrap();
        std::fs::remove_file(state.path().join("admin/ca.key")).unwrap();
        let e = load_or_create(state.path(), Ipv4Addr::LOCALHOST, &[])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("ca.key") && e.contains("remove both"), "{e}");
    }
}
