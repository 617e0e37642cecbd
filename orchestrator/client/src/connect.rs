//! How commands reach the store: endpoints and credentials, from flags
//! with etcdctl's names (`--endpoints --cacert --cert --key --user`) and
//! environment variables (`HERD_*`, falling back to etcdctl's `ETCDCTL_*`),
//! so `herd kv` and `etcdctl` take the same settings.

use std::path::PathBuf;

use crate::client::{Client, ClientError, Credentials};

/// Connection flags for commands that talk to the store.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Client endpoints (HOST:PORT or https://HOST:PORT), comma separated;
    /// the first reachable one is used.
    #[arg(
        long,
        global = true,
        env = "HERD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// The cluster CA certificate (TLS; without it the connection is plaintext).
    #[arg(long, global = true, env = "HERD_CACERT")]
    pub cacert: Option<PathBuf>,
    /// This client's certificate (its common name is the user).
    #[arg(long, global = true, env = "HERD_CERT", requires = "client_key")]
    pub cert: Option<PathBuf>,
    /// This client's key. (Its id is not `key`: subcommands have a KEY
    /// argument, and clap's ids are global.)
    #[arg(
        id = "client_key",
        long = "key",
        value_name = "KEY",
        global = true,
        env = "HERD_KEY",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,
    /// An etcd auth user, `NAME` or `NAME:PASSWORD` (the password is asked
    /// for in HERD_PASSWORD when not given).
    #[arg(long, global = true, env = "HERD_USER", hide_env_values = true)]
    pub user: Option<String>,
}

/// Why connection settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("reading {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--user {0} has no password (give NAME:PASSWORD or set HERD_PASSWORD)")]
    NoPassword(String),
    #[error("no --cacert (or HERD_CACERT) given")]
    NoCa,
    #[error(transparent)]
    Client(#[from] ClientError),
}

fn read(what: &'static str, path: &PathBuf) -> Result<String, ConnectError> {
    std::fs::read_to_string(path).map_err(|source| ConnectError::Read {
        what,
        path: path.clone(),
        source,
    })
}

/// A value from `HERD_<name>` or, failing that, etcdctl's `ETCDCTL_<name>`.
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(format!("ETCDCTL_{name}")).map(PathBuf::from)
}

impl StoreArgs {
    /// The credentials these flags describe (etcdctl's environment too).
    pub fn credentials(&self) -> Result<Credentials, ConnectError> {
        let cacert = self.cacert.clone().or_else(|| env_path("CACERT"));
        let (cert, key) = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => (Some(c.clone()), Some(k.clone())),
            _ => (env_path("CERT"), env_path("KEY")),
        };
        let Some(cacert) = cacert else {
            return Ok(Credentials::Plaintext);
        };
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some(herd_pki::CertKey {
                cert_pem: read("--cert", &c)?,
                key_pem: read("--key", &k)?,
            }),
            _ => None,
        };
        Ok(Credentials::Tls {
            ca_pem: read("--cacert", &cacert)?,
            identity,
        })
    }

    /// The cluster CA certificate (`--cacert`), which must be given.
    pub fn ca_pem(&self) -> Result<String, ConnectError> {
        match &self.cacert {
            Some(path) => read("--cacert", path),
            None => Err(ConnectError::NoCa),
        }
    }

    /// Endpoints without their scheme (TLS is decided by the credentials).
    pub fn hosts(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|e| {
                e.trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .to_owned()
            })
            .collect()
    }

    /// Connects (and logs in as `--user` when given).
    pub async fn connect(&self) -> Result<Client, ConnectError> {
        let client = Client::connect_with(&self.hosts(), &self.credentials()?).await?;
        match &self.user {
            None => Ok(client),
            Some(user) => {
                let (name, password) = match user.split_once(':') {
                    Some((n, p)) => (n.to_owned(), p.to_owned()),
                    None => (
                        user.clone(),
                        std::env::var("HERD_PASSWORD")
                            .map_err(|_| ConnectError::NoPassword(user.clone()))?,
                    ),
                };
                Ok(client.authenticate(&name, &password).await?)
            }
        }
    }
}
