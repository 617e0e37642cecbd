//! The lab's cluster identity, made fresh by every `herd lab up` in
//! `LAB/pki/`: the CA (its key goes to the founding machine's
//! cloud-config only), `root`'s client certificate and an `env` file for
//! the host's tools, and the join token every machine's cloud-config
//! carries (it pins the CA, so a joining machine cannot be fooled by an
//! impostor cluster).

use std::path::{Path, PathBuf};

use herd_client::Credentials;
use herd_pki::bundle::{Targets, write_client, write_new_ca};
use herd_pki::{CertKey, ClusterCa, JoinToken, PkiError};

/// `LAB/pki`.
pub fn dir(lab_dir: &Path) -> PathBuf {
    lab_dir.join("pki")
}

/// What `up` hands on: the CA for the founder, the token for everyone.
#[derive(Debug, Clone)]
pub struct LabPki {
    pub ca: ClusterCa,
    pub token: JoinToken,
}

/// Why the lab's identity could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum LabPkiError {
    #[error("making the lab's credentials in {dir}: {source}")]
    Make { dir: PathBuf, source: PkiError },
    #[error("the lab's credentials in {dir} are unusable: {source} (run `herd lab up` again)")]
    Read { dir: PathBuf, source: PkiError },
    #[error("removing the old credentials in {dir}: {source}")]
    Remove {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Makes a new CA, root's credentials for `endpoints` and the Kubernetes
/// API at `api_server`, and a join token in `LAB/pki` (replacing an old
/// lab's: a new lab is a new cluster).
pub fn create(
    lab_dir: &Path,
    endpoints: &[String],
    api_server: &str,
) -> Result<LabPki, LabPkiError> {
    let dir = dir(lab_dir);
    let make = |source: PkiError| LabPkiError::Make {
        dir: dir.clone(),
        source,
    };
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(LabPkiError::Remove {
                dir: dir.clone(),
                source: e,
            });
        }
        _ => {}
    }
    let ca = ClusterCa::generate("lab").map_err(&make)?;
    write_new_ca(&dir, &ca).map_err(&make)?;
    let targets = Targets {
        endpoints,
        api_server,
    };
    write_client(&ca, "root", &dir, &targets, herd_pki::ca::LEAF_VALIDITY).map_err(&make)?;
    let token = JoinToken::generate(ca.fingerprint().map_err(&make)?);
    Ok(LabPki { ca, token })
}

/// Root's kubeconfig.
pub fn kubeconfig(lab_dir: &Path) -> PathBuf {
    dir(lab_dir).join("kubeconfig")
}

/// The host's files: CA certificate, root's certificate and key.
pub fn files(lab_dir: &Path) -> [PathBuf; 3] {
    let dir = dir(lab_dir);
    [
        dir.join("ca.crt"),
        dir.join("root.crt"),
        dir.join("root.key"),
    ]
}

/// Root's credentials for the lab's store.
pub fn credentials(lab_dir: &Path) -> Result<Credentials, LabPkiError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| LabPkiError::Read {
            dir: dir(lab_dir),
            source: PkiError::Io {
                path: path.to_owned(),
                source,
            },
        })
    };
    let [ca, cert, key] = files(lab_dir);
    Ok(Credentials::Tls {
        ca_pem: read(&ca)?,
        identity: Some(CertKey {
            cert_pem: read(&cert)?,
            key_pem: read(&key)?,
        }),
    })
}
