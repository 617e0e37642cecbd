//! The kubectl-like `herd` verbs, for people without kubectl: clients of
//! the pods API (through `herd-http`) that apply manifests, get, watch,
//! describe, delete, scale and label objects, follow and undo Deployment
//! rollouts, run kubectl 1.x's `rolling-update` of a
//! ReplicationController, print a container's logs and exec in it — plus
//! `herd bench pods`.

pub mod apply;
pub mod bench;
mod bench_tls;

pub mod client;
pub mod edit;
pub mod exec;
pub mod get;
pub mod manifest;
pub mod rolling;
pub mod rollout;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use tokio_util::sync::CancellationToken;

use crate::api::KindInfo;
use crate::api::kind;
use client::Api;

/// The verbs, each a top-level `herd` subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update objects from manifests (`-f FILE|DIR|-`), as kubectl apply.
    Apply(apply::ApplyArgs),
    /// List or show objects: pods, rc, rs, deploy, svc, ep, nodes, ns, events.
    Get(get::GetArgs),
    /// Show an object in detail, with its events.
    Describe(get::DescribeArgs),
    /// Delete objects by kind and name or from manifests.
    Delete(apply::DeleteArgs),
    /// Set the replica count of an rc, rs or deployment.
    Scale(edit::ScaleArgs),
    /// Add (`k=v`) or remove (`k-`) labels of an object.
    Label(edit::LabelArgs),
    /// Follow, list or undo a Deployment's rollouts.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Replace a ReplicationController's pods one at a time (kubectl 1.x's rolling-update).
    RollingUpdate(rolling::RollingUpdateArgs),
    /// Print a container's output (`-f` to follow), from any agent.
    Logs(exec::LogsArgs),
    /// Run a command in a pod's container (`herd exec POD [-i] -- CMD…`); exits with its code.
    Exec(exec::ExecArgs),
}

/// Where the API is: every verb takes these.
#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    /// The Kubernetes API of any agent (`http://` only for an agent run
    /// with `--insecure-plaintext`).
    #[arg(
        long,
        env = "HERD_API_SERVER",
        default_value = "https://127.0.0.1:6443"
    )]
    pub server: String,
    /// The cluster CA certificate, to check the API server by.
    #[arg(long, env = "HERD_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// This client's certificate (root's or a member's; `herd admin
    /// credentials` writes one).
    #[arg(long, env = "HERD_CERT", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// This client's key.
    #[arg(long, env = "HERD_KEY", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Bearer token the API asks for (an agent's --api-token-file).
    #[arg(long, env = "HERD_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// The namespace (default: the object's own, else `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

async fn read_file(what: &str, path: &std::path::Path) -> anyhow::Result<String> {
    tokio::fs::read_to_string(path)
        .await
        .with_context(|| format!("reading {what} {}", path.display()))
}

impl Conn {
    /// A client of the API these flags name.
    pub async fn api(&self) -> anyhow::Result<Api> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.trim().to_owned()),
            (None, Some(f)) => Some(read_file("the token file", f).await?.trim().to_owned()),
            (None, None) => None,
        };
        let api = Api::new(herd_http::Client::new(), &self.server, token);
        let Some(cacert) = &self.cacert else {
            if self.server.starts_with("https://") {
                bail!(
                    "--server {} is https://: give the cluster CA with --cacert (HERD_CACERT), \
                     and a client certificate with --cert/--key (`herd admin credentials` writes them)",
                    self.server
                );
            }
            return Ok(api);
        };
        let ca_pem = read_file("--cacert", cacert).await?;
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(herd_pki::CertKey {
                cert_pem: read_file("--cert", cert).await?,
                key_pem: read_file("--key", key).await?,
            }),
            _ => None,
        };
        let config =
            herd_pki::tls::client_config(&ca_pem, identity.as_ref(), &[herd_pki::tls::ALPN_HTTP1])
                .context("the client's TLS configuration")?;
        Ok(api.with_tls(config))
    }

    /// The namespace to act in when the object does not name one.
    pub fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// Runs one verb; long-running ones (`get -w`, `rollout status`,
/// `rolling-update`) stop when `shutdown` fires.
pub async fn run(command: Command, shutdown: CancellationToken) -> anyhow::Result<()> {
    match command {
        Command::Apply(a) => apply::apply(a).await,
        Command::Get(a) => get::get(a, shutdown).await,
        Command::Describe(a) => get::describe(a).await,
        Command::Delete(a) => apply::delete(a).await,
        Command::Scale(a) => edit::scale(a).await,
        Command::Label(a) => edit::label(a).await,
        Command::Rollout(c) => rollout::run(c, shutdown).await,
        Command::RollingUpdate(a) => rolling::run(a, shutdown).await,
        Command::Logs(a) => exec::logs(a).await,
        Command::Exec(a) => exec::exec(a).await,
    }
}

/// The kind a command-line name means (`po`, `rc`, `deploy`, `services`…).
pub fn kind_named(name: &str) -> anyhow::Result<&'static KindInfo> {
    kind::lookup(name).ok_or_else(|| {
        anyhow::anyhow!(
            "the server doesn't have a resource type {name:?} (herd serves {})",
            kind::all()
                .iter()
                .map(|k| k.plural)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// `KIND NAME` or `KIND/NAME`: the kind and name.
pub fn kind_and_name(
    first: &str,
    second: Option<&str>,
) -> anyhow::Result<(&'static KindInfo, String)> {
    match (first.split_once('/'), second) {
        (Some((k, n)), None) if !n.is_empty() => Ok((kind_named(k)?, n.to_owned())),
        (None, Some(n)) => Ok((kind_named(first)?, n.to_owned())),
        (Some(_), Some(_)) => bail!("give KIND/NAME or KIND NAME, not both ({first:?})"),
        _ => bail!("{first:?}: a name is needed (KIND NAME or KIND/NAME)"),
    }
}

/// How kubectl names an object in its messages: `deployment.apps/front`.
pub fn shown(kind: &KindInfo, name: &str) -> String {
    if kind.group.is_empty() {
        format!("{}/{name}", kind.kind.to_ascii_lowercase())
    } else {
        format!("{}.{}/{name}", kind.kind.to_ascii_lowercase(), kind.group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_names_read_both_ways() {
        let (k, n) = kind_and_name("deploy/front", None).unwrap();
        assert_eq!((k.kind, n.as_str()), ("Deployment", "front"));
        let (k, n) = kind_and_name("rc", Some("redis")).unwrap();
        assert_eq!((k.kind, n.as_str()), ("ReplicationController", "redis"));
        assert!(kind_and_name("rc", None).is_err());
        assert!(kind_and_name("rc/a", Some("b")).is_err());
        let e = kind_and_name("cronjob/x", None).unwrap_err().to_string();
        assert!(
            e.contains("doesn't have a resource type \"cronjob\""),
            "{e}"
        );
        assert_eq!(shown(k, "redis"), "replicationcontroller/redis");
        assert_eq!(
            shown(kind_named("deploy").unwrap(), "f"),
            "deployment.apps/f"
        );
    }
}
