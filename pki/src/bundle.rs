//! Files for people and tools: a new cluster CA (`ca.crt`, `ca.key`), and
//! a user's client bundle — `ca.crt`, `USER.crt`, `USER.key` (0600), a
//! `kubeconfig` for kubectl, and an `env` file that points `herd`, `etcdctl`
//! and kubectl at them.

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

/// Where a client bundle's clients connect.
#[derive(Debug, Clone)]
pub struct Targets<'a> {
    /// The store's client endpoints (`HOST:PORT`).
    pub endpoints: &'a [String],
    /// The Kubernetes API (`https://HOST:PORT`).
    pub api_server: &'a str,
}

/// Issues `user`'s client certificate from `ca` and writes `ca.crt`,
/// `USER.crt`, `USER.key`, `kubeconfig` and `env` into `out` (the files
/// name each other by absolute path); returns the `env` path.
pub fn write_client(
    ca: &ClusterCa,
    user: &str,
    out: &Path,
    targets: &Targets<'_>,
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
    std::fs::create_dir_all(out).map_err(|source| PkiError::Io {
        path: out.to_owned(),
        source,
    })?;
    let out = &std::fs::canonicalize(out).map_err(|source| PkiError::Io {
        path: out.to_owned(),
        source,
    })?;
    let (ca_path, cert, key) = (
        out.join("ca.crt"),
        out.join(format!("{user}.crt")),
        out.join(format!("{user}.key")),
    );
    write_atomic(&ca_path, ca.pair.cert_pem.as_bytes(), 0o644)?;
    write_atomic(&key, pair.key_pem.as_bytes(), 0o600)?;
    write_atomic(&cert, pair.cert_pem.as_bytes(), 0o644)?;
    let kubeconfig = out.join("kubeconfig");
    let files = Files {
        ca: &ca_path,
        cert: &cert,
        key: &key,
        kubeconfig: &kubeconfig,
    };
    write_atomic(
        &kubeconfig,
        kubeconfig_file(user, targets.api_server, &files).as_bytes(),
        0o644,
    )?;
    let env = out.join("env");
    write_atomic(&env, env_file(targets, &files).as_bytes(), 0o644)?;
    Ok(env)
}

/// The paths of a bundle's files.
struct Files<'a> {
    ca: &'a Path,
    cert: &'a Path,
    key: &'a Path,
    kubeconfig: &'a Path,
}

/// A kubeconfig with one cluster, one user and the context joining them.
/// Values are JSON strings, which YAML reads as they are.
fn kubeconfig_file(user: &str, server: &str, files: &Files<'_>) -> String {
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let p = |p: &Path| q(&p.display().to_string());
    let context = q(&format!("{user}@herd"));
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: herd\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
         users:\n\
         - name: {user}\n  user:\n    client-certificate: {cert}\n    client-key: {key}\n\
         contexts:\n\
         - name: {context}\n  context:\n    cluster: herd\n    user: {user}\n\
         current-context: {context}\n",
        server = q(server),
        ca = p(files.ca),
        user = q(user),
        cert = p(files.cert),
        key = p(files.key),
    )
}

/// `export` lines for herd's, etcdctl's and kubectl's variables.
fn env_file(targets: &Targets<'_>, files: &Files<'_>) -> String {
    let urls: Vec<String> = targets
        .endpoints
        .iter()
        .map(|e| match e.split_once("://") {
            Some((_, host)) => format!("https://{host}"),
            None => format!("https://{e}"),
        })
        .collect();
    let (urls, ca, cert, key) = (
        urls.join(","),
        files.ca.display(),
        files.cert.display(),
        files.key.display(),
    );
    format!(
        "# herd, etcdctl and kubectl clients: `. {{this file}}`\n\
         export HERD_ENDPOINTS={urls}\n\
         export HERD_API_SERVER={api}\n\
         export HERD_CACERT={ca}\n\
         export HERD_CERT={cert}\n\
         export HERD_KEY={key}\n\
         export ETCDCTL_API=3\n\
         export ETCDCTL_ENDPOINTS={urls}\n\
         export ETCDCTL_CACERT={ca}\n\
         export ETCDCTL_CERT={cert}\n\
         export ETCDCTL_KEY={key}\n\
         export KUBECONFIG={kubeconfig}\n",
        api = targets.api_server,
        kubeconfig = files.kubeconfig.display(),
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
        let endpoints = ["10.0.0.1:2379".to_owned()];
        let targets = Targets {
            endpoints: &endpoints,
            api_server: "https://10.0.0.1:6443",
        };
        let env = write_client(&ca, "alice", &out, &targets, LEAF).unwrap();
        let text = std::fs::read_to_string(env).unwrap();
        assert!(
            text.contains("export ETCDCTL_ENDPOINTS=https://10.0.0.1:2379\n"),
            "{text}"
        );
        assert!(
            text.contains("export HERD_API_SERVER=https://10.0.0.1:6443\n"),
            "{text}"
        );
        let kubeconfig = std::fs::read_to_string(out.join("kubeconfig")).unwrap();
        let ca_path = std::fs::canonicalize(out.join("ca.crt")).unwrap();
        for want in [
            "server: \"https://10.0.0.1:6443\"".to_owned(),
            format!("certificate-authority: \"{}\"", ca_path.display()),
            "client-key: \"".to_owned(),
            "current-context: \"alice@herd\"".to_owned(),
        ] {
            assert!(kubeconfig.contains(&want), "{want} in\n{kubeconfig}");
        }
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
            let err = write_client(&ca, bad, &out, &targets, LEAF).unwrap_err();
            assert!(err.to_string().contains("not a user name"), "{bad}: {err}");
        }
    }

    const LEAF: Duration = crate::ca::LEAF_VALIDITY;
}
