//! Where `herd admin` finds the cluster CA: a member's data dir or the
//! two files.

use std::path::{Path, PathBuf};

use herd_pki::{CertKey, ClusterCa, PkiError};

/// Why the CA could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CaSourceError {
    #[error("give --data-dir, or --ca-cert and --ca-key")]
    NoCa,
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Cert { path: PathBuf, source: PkiError },
}

/// Where the CA comes from: a member's data dir, or the two files.
#[derive(Debug, Clone, clap::Args)]
pub struct CaSource {
    /// A member's data dir (its `pki/ca.crt` and `pki/ca.key`).
    #[arg(long, conflicts_with_all = ["ca_cert", "ca_key"], required_unless_present = "ca_cert")]
    pub data_dir: Option<PathBuf>,
    /// The CA certificate (with `--ca-key`).
    #[arg(long, requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The CA key.
    #[arg(long, requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
}

fn read(path: &Path) -> Result<String, CaSourceError> {
    std::fs::read_to_string(path).map_err(|source| CaSourceError::Read {
        path: path.to_owned(),
        source,
    })
}

impl CaSource {
    pub fn load(&self) -> Result<ClusterCa, CaSourceError> {
        let (cert, key) = match (&self.data_dir, &self.ca_cert, &self.ca_key) {
            (Some(dir), _, _) => (dir.join("pki/ca.crt"), dir.join("pki/ca.key")),
            (None, Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ => return Err(CaSourceError::NoCa),
        };
        let ca = ClusterCa {
            pair: CertKey {
                cert_pem: read(&cert)?,
                key_pem: read(&key)?,
            },
        };
        // Fails now, naming the file, rather than at the first signature.
        ca.fingerprint()
            .map_err(|source| CaSourceError::Cert { path: cert, source })?;
        Ok(ca)
    }
}
