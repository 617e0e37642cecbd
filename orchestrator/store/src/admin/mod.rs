//! `herd admin …`: the cluster's identity from the operator's side — a CA
//! for a new cluster, client credentials for people and tools, and join
//! tokens for machines. Everything that needs the store goes through its
//! API with the operator's own credentials.

mod ca_source;
mod token;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use herd_cli::Output;
use herd_client::connect::StoreArgs;

pub use ca_source::{CaSource, CaSourceError};
use herd_pki::bundle::{Targets, write_client, write_new_ca};
pub use token::{TokenInfo, create_token, list_tokens, revoke_token};

/// `herd admin`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Make a new cluster CA: `ca.crt` and `ca.key` (mode 0600) in `--out`.
    /// Give both to the founding member (`--ca-cert --ca-key`, or the
    /// cloud-config's `herd.ca`); machines that join get theirs by joining.
    InitCa {
        /// Where the files go (created if missing; existing files are kept
        /// and the command fails).
        #[arg(long)]
        out: PathBuf,
        /// The cluster's name, in the CA's common name.
        #[arg(long, default_value = "herd")]
        cluster: String,
    },
    /// Issue a client certificate for a user (its common name is the
    /// user) and write what clients need into `--out`: `ca.crt`,
    /// `USER.crt`, `USER.key` (0600), a `kubeconfig` for kubectl, and
    /// `env`, to source for `herd`, `etcdctl` and kubectl.
    Credentials {
        #[command(flatten)]
        ca: CaSource,
        /// The user: `root` (every permission) or a user made with
        /// `herd kv user add`, whose roles then apply.
        #[arg(long, default_value = "root")]
        user: String,
        #[arg(long)]
        out: PathBuf,
        /// Client endpoints written to `env` (comma separated).
        #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
        endpoints: Vec<String>,
        /// The Kubernetes API in the kubeconfig (default: port 6443 of the
        /// first endpoint's host).
        #[arg(long, value_name = "URL")]
        api_server: Option<String>,
        /// How long the certificate is valid (e.g. `30d`, `12h`).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "90d")]
        valid_for: Duration,
    },
    /// Join tokens: what a machine presents to join (`herd1.…`).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token and register it; prints the token (shown only once:
    /// the store keeps a hash of its secret).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this machine (member name) may use it.
        #[arg(long)]
        machine: Option<String>,
        /// How many joins it allows (unlimited without).
        #[arg(long)]
        uses: Option<u32>,
        /// How long it is valid (e.g. `1h`; forever without).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// The registered tokens (ids and limits; never secrets).
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Revoke a token by id: machines can no longer join with it.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        id: String,
    },
}

/// `https://HOST:6443` for the first endpoint's host: every agent that
/// serves the store's clients serves the Kubernetes API on its port.
fn default_api_server(endpoints: &[String]) -> String {
    let first = endpoints.first().map_or("127.0.0.1:2379", String::as_str);
    let authority = first.split_once("://").map_or(first, |(_, rest)| rest);
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    format!("https://{host}:6443")
}

/// Runs one `herd admin` command.
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    match args.command {
        AdminCommand::InitCa { out, cluster } => {
            let ca = herd_pki::ClusterCa::generate(&cluster)?;
            write_new_ca(&out, &ca)?;
            println!(
                "wrote {0}/ca.crt and {0}/ca.key (sha256 {1})",
                out.display(),
                hex::encode(ca.fingerprint()?)
            );
        }
        AdminCommand::Credentials {
            ca,
            user,
            out,
            endpoints,
            api_server,
            valid_for,
        } => {
            let api_server = api_server.unwrap_or_else(|| default_api_server(&endpoints));
            let targets = Targets {
                endpoints: &endpoints,
                api_server: &api_server,
            };
            let written = write_client(&ca.load()?, &user, &out, &targets, valid_for)?;
            println!("wrote {}", written.display());
        }
        AdminCommand::Token(TokenCommand::Create {
            store,
            machine,
            uses,
            ttl,
        }) => {
            let ca_pem = store.ca_pem().context("a token pins the cluster CA")?;
            let client = store.connect().await.context("connecting to the store")?;
            let token = create_token(&client, &ca_pem, machine, uses, ttl).await?;
            println!("{}", token.reveal());
        }
        AdminCommand::Token(TokenCommand::List { store, output }) => {
            let client = store.connect().await.context("connecting to the store")?;
            let tokens = list_tokens(&client).await?;
            output.print(&tokens, |t| token::table(t))?;
        }
        AdminCommand::Token(TokenCommand::Revoke { store, id }) => {
            let client = store.connect().await.context("connecting to the store")?;
            revoke_token(&client, &id).await?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_api_server_defaults_to_the_first_endpoints_host() {
        let api = |e: &[&str]| {
            super::default_api_server(&e.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            api(&["10.0.0.1:2379", "10.0.0.2:2379"]),
            "https://10.0.0.1:6443"
        );
        assert_eq!(api(&["https://m1:2379"]), "https://m1:6443");
        assert_eq!(api(&["[::1]:2379"]), "https://[::1]:6443");
        assert_eq!(api(&[]), "https://127.0.0.1:6443");
    }
}
