//! The agent's settings, typed, however they were given: flags or a
//! cloud-config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use herd_pki::{ClusterCa, JoinToken};
use herd_store::{Bootstrap, Security, StorageKind, TlsSettings};

use crate::cli::AgentArgs;
use crate::cloud_config::KubeletSection;
use crate::timing::RaftTiming;

/// TLS (the default) or plaintext.
#[derive(Debug, Clone)]
pub enum SecurityMode {
    /// Mutual TLS with the cluster CA; `ca`: given to a founding member.
    Tls {
        ca: Option<ClusterCa>,
    },
    Plaintext,
}

/// Reads a PEM file given on the command line.
fn read_pem(path: &std::path::Path, flag: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {flag} {}", path.display()))
}

/// Everything the agent needs to run, however it was configured.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client: SocketAddr,
    pub listen_peer: SocketAddr,
    /// How the store member enters its cluster when its data dir is new.
    pub bootstrap: Bootstrap,
    /// The join token (TLS) or shared secret (plaintext); may be empty for
    /// a TLS member that founds the cluster.
    pub token: String,
    pub security: SecurityMode,
    pub max_voters: usize,
    /// How long member certificates are valid (`--member-cert-validity`).
    pub member_cert_validity: std::time::Duration,
    pub max_request_bytes: usize,
    pub max_key_bytes: usize,
    pub storage: Option<StorageKind>,
    pub watch_progress_notify_interval: Duration,
    pub timing: RaftTiming,
    /// This machine's record under /herd/machines (`None`: store only).
    pub machine: Option<herd_client::keys::MachineRecord>,
    pub machine_ttl: Duration,
    /// Where the agent API listens (`None`: store only).
    pub listen_api: Option<SocketAddr>,
    pub units: herd_units::role::UnitsSettings,
    /// This machine's id (`--machine-id`, else the registered record's,
    /// else derived from the member name).
    pub machine_id: String,
    /// The cluster network role, when this machine takes part.
    pub net: Option<herd_net::NetSettings>,
    /// OS updates (from cloud-config); a disk boot runs the update role
    /// with these (or with the defaults: the health gate only).
    pub update: Option<herd_update::UpdateSettings>,
    /// The pods role (the Kubernetes API and its controllers), if enabled.
    pub pods: Option<herd_pods::role::PodsConfig>,
    /// The kubelet (runs wherever the machine registers, unless turned off).
    pub kubelet: Option<KubeletConfig>,
    /// The service proxy: on where the pods role runs, unless turned off.
    pub proxy: ProxySetting,
}

/// The kubelet's settings from the flags; the rest comes from the
/// machine's record when the agent starts it.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    pub docker_host: String,
    pub infra_image: String,
    pub subnet_env: PathBuf,
    pub eviction: herd_pods::node::eviction::EvictionConfig,
}

impl KubeletConfig {
    /// From the flags, falling back on the cloud-config's `kubelet:`.
    fn of(args: &AgentArgs, configured: &KubeletSection) -> Option<KubeletConfig> {
        (!args.kubelet.no_kubelet).then(|| KubeletConfig {
            docker_host: args.kubelet.docker_host(configured.docker_host.as_deref()),
            infra_image: args
                .kubelet
                .infra_image(configured.pod_infra_image.as_deref()),
            subnet_env: args.subnet_env.clone(),
            eviction: args.kubelet.eviction(),
        })
    }
}

/// Whether the service proxy runs here.
#[derive(Debug, Clone)]
pub enum ProxySetting {
    Run(herd_pods::proxy::ProxyConfig),
    /// Turned off (`--no-service-proxy`): a table left by an earlier run is removed.
    Off,
    /// No pods role, no proxy; nft is not touched.
    NotHere,
}

/// The proxy's setting, from its flags and the pods role's.
fn proxy_setting(
    args: &herd_pods::proxy::ProxyArgs,
    pods: Option<&herd_pods::role::PodsConfig>,
    name: &str,
) -> ProxySetting {
    if args.no_service_proxy {
        return ProxySetting::Off;
    }
    match pods {
        Some(pods) => ProxySetting::Run(herd_pods::proxy::ProxyConfig {
            service_cidr: pods.api.service_cidr,
            sync_interval: Duration::from_secs(args.proxy_sync_interval.max(1)),
            bridge: herd_pods::proxy::POD_BRIDGE.to_owned(),
            instance: name.to_owned(),
        }),
        None => ProxySetting::NotHere,
    }
}

/// A machine id derived from a member name, stable across restarts (a
/// plain-flag agent has no MAC the cluster knows it by).
pub fn machine_id_for_name(name: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(
        format!("herd-machine:{name}").as_bytes(),
    ))[..16]
        .to_owned()
}

/// A machine id as `MachineID=` names it: letters, digits and `-`.
fn check_machine_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        bail!("--machine-id {id:?}: use 1 to 64 letters, digits or -");
    }
    Ok(())
}

/// Parses `--metadata KEY=VALUE,…` strictly: every entry has a key and a
/// value, keys are unique.
pub fn parse_metadata(s: &str) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (k, v) = entry
            .split_once('=')
            .with_context(|| format!("--metadata entry {entry:?} is not KEY=VALUE"))?;
        crate::cloud_config::check_label(k, v)
            .map_err(|r| anyhow::anyhow!("--metadata entry {entry:?}: {r}"))?;
        if out.insert(k.to_owned(), v.to_owned()).is_some() {
            bail!("--metadata names {k} twice");
        }
    }
    Ok(out)
}

/// The network role's flags, taken before the rest of the flags are consumed.
#[derive(Debug, Clone)]
struct NetFlags {
    cluster_iface: Option<String>,
    public_ip: Option<std::net::Ipv4Addr>,
    subnet_env: PathBuf,
    subnet_lease_ttl: u64,
    route_check_interval: u64,
}

impl NetFlags {
    fn of(args: &AgentArgs) -> NetFlags {
        NetFlags {
            cluster_iface: args.cluster_iface.clone(),
            public_ip: args.public_ip,
            subnet_env: args.subnet_env.clone(),
            subnet_lease_ttl: args.subnet_lease_ttl,
            route_check_interval: args.route_check_interval,
        }
    }
}

/// The network role's settings from the flags (and a cloud-config's
/// `herd.network`), or `None` when nothing asks for the role.
fn net_settings(
    args: &NetFlags,
    machine_id: &str,
    data_dir: &std::path::Path,
    from_cloud: Option<(&crate::cloud_config::NetworkBootstrap, std::net::IpAddr)>,
) -> Option<herd_net::NetSettings> {
    let (iface, ip, proposed) = match from_cloud {
        Some((n, advertise)) => (
            args.cluster_iface
                .clone()
                .or_else(|| n.cluster_iface.clone()),
            args.public_ip.or(n.public_ip).or(match advertise {
                std::net::IpAddr::V4(v4) => Some(v4),
                std::net::IpAddr::V6(_) => None,
            }),
            Some(n.config.clone()),
        ),
        None if args.cluster_iface.is_some() || args.public_ip.is_some() => {
            (args.cluster_iface.clone(), args.public_ip, None)
        }
        None => return None,
    };
    Some(herd_net::NetSettings {
        machine_id: machine_id.to_owned(),
        cluster_iface: iface,
        public_ip: ip,
        proposed,
        subnet_env: args.subnet_env.clone(),
        remembered: data_dir.join("net-subnet.json"),
        lease_ttl: Duration::from_secs(args.subnet_lease_ttl.max(3)),
        repair_interval: Duration::from_secs(args.route_check_interval.max(1)),
    })
}

/// The pods role's settings from its flags; `listen` overrides
/// `--listen-api` (a cloud-config's address), `token` the token file.
fn pods_config(
    args: &herd_pods::role::PodsArgs,
    listen: Option<SocketAddr>,
    token: Option<String>,
    candidate: &str,
    version: &str,
) -> anyhow::Result<Option<herd_pods::role::PodsConfig>> {
    let Some(listen_api) = args.listen_api.or(listen) else {
        return Ok(None);
    };
    let token = match (&args.api_token_file, token) {
        (Some(path), _) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --api-token-file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        (None, token) => token,
    };
    if token.as_deref().is_some_and(str::is_empty) {
        bail!("the API token is empty");
    }
    Ok(Some(herd_pods::role::PodsConfig {
        listen_api,
        token,
        // The member's certificate, once the store has started.
        tls: None,
        kubelet: Default::default(),
        api: herd_pods::api::ApiConfig {
            service_cidr: args.service_cluster_ip_range,
            ..Default::default()
        },
        eviction_timeout: Duration::from_secs(args.pod_eviction_timeout),
        candidate: candidate.to_owned(),
        version: version.to_owned(),
    }))
}

impl AgentSettings {
    fn units_settings(
        args: &AgentArgs,
        data_dir: &std::path::Path,
    ) -> herd_units::role::UnitsSettings {
        herd_units::role::UnitsSettings {
            cgroup_root: args.units_cgroup_root.clone(),
            state_dir: args
                .units_state_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("units")),
            grace: args.units_grace,
            journal_max_bytes: herd_units::runner::journal::DEFAULT_MAX_BYTES,
        }
    }
}

impl AgentSettings {
    /// Validates the flags into settings (reads the token file).
    pub async fn from_args(args: AgentArgs, version: &str) -> anyhow::Result<AgentSettings> {
        let timing = timing_flags(&args)?;
        let name = args.name.clone().context("--name is required")?;
        let pods = pods_config(&args.pods, None, None, &name, version)?;
        let data_dir = args.data_dir.clone().context("--data-dir is required")?;
        let token = match (args.token.clone(), args.token_file.clone()) {
            (Some(t), _) => t,
            (None, Some(path)) => std::fs::read_to_string(&path)
                .with_context(|| format!("reading --token-file {}", path.display()))?
                .trim()
                .to_owned(),
            (None, None) => String::new(),
        };
        let security = if args.insecure_plaintext {
            if token.is_empty() {
                bail!(
                    "--insecure-plaintext needs the cluster's shared secret (--token or --token-file)"
                );
            }
            SecurityMode::Plaintext
        } else {
            let ca = match (&args.ca_cert, &args.ca_key) {
                (Some(cert), Some(key)) => Some(ClusterCa {
                    pair: herd_pki::CertKey {
                        cert_pem: read_pem(cert, "--ca-cert")?,
                        key_pem: read_pem(key, "--ca-key")?,
                    },
                }),
                _ => None,
            };
            SecurityMode::Tls { ca }
        };
        if args.join.is_some() && token.is_empty() {
            bail!("joining needs a token (--token or --token-file)");
        }
        let initial_cluster = args
            .initial_cluster
            .clone()
            .map(|members| {
                members
                    .iter()
                    .map(|m| parse_member(m))
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .transpose()?;
        if let Some(members) = &initial_cluster
            && !members.iter().any(|(member, _)| *member == name)
        {
            bail!("--initial-cluster does not list this member ({name})");
        }
        let bootstrap = match (initial_cluster, args.join) {
            (Some(members), None) => Bootstrap::Found(
                members
                    .into_iter()
                    .map(|(n, a)| (n, a.to_string()))
                    .collect(),
            ),
            (None, Some(peer)) => Bootstrap::Join(peer.to_string()),
            (None, None) => Bootstrap::Found(vec![(name.clone(), args.listen_peer.to_string())]),
            (Some(_), Some(_)) => bail!("--initial-cluster and --join are mutually exclusive"),
        };
        let machine_id = args
            .machine_id
            .clone()
            .unwrap_or_else(|| machine_id_for_name(&name));
        check_machine_id(&machine_id)?;
        let net = net_settings(&NetFlags::of(&args), &machine_id, &data_dir, None);
        let kubelet = KubeletConfig::of(&args, &KubeletSection::default());
        let (machine, listen_api) = if args.store_only {
            (None, None)
        } else {
            let metadata = args
                .metadata
                .as_deref()
                .map(parse_metadata)
                .transpose()?
                .unwrap_or_default();
            let (n, ip, v) = (name.clone(), args.listen_client.ip(), version.to_owned());
            let mut record = tokio::task::spawn_blocking(move || {
                crate::facts::describe_plain(&n, ip, &[crate::cloud_config::Role::Store], &v)
            })
            .await
            .context("gathering machine facts")?
            .context("gathering machine facts")?;
            record.machine_id = machine_id.clone();
            record.metadata = metadata;
            let api = args
                .listen_agent_api
                .unwrap_or_else(|| SocketAddr::new(args.listen_client.ip(), 0));
            (Some(record), Some(api))
        };
        let proxy = proxy_setting(&args.proxy, pods.as_ref(), &name);
        Ok(AgentSettings {
            machine_id,
            net,
            units: AgentSettings::units_settings(&args, &data_dir),
            name,
            data_dir,
            listen_client: args.listen_client,
            listen_peer: args.listen_peer,
            bootstrap,
            token,
            security,
            max_voters: args.max_voters,
            member_cert_validity: args.member_cert_validity,
            max_request_bytes: args.max_request_bytes,
            max_key_bytes: args.max_key_bytes,
            storage: args.storage,
            watch_progress_notify_interval: Duration::from_secs(
                args.watch_progress_notify_interval,
            ),
            timing,
            machine,
            machine_ttl: Duration::from_secs(args.machine_ttl),
            listen_api,
            update: None,
            proxy,
            pods,
            kubelet,
        })
    }

    /// Settings from a cloud-config: fetched (retrying while the network
    /// comes up), parsed, the cluster entry decided (found or join), and
    /// this machine's registration record gathered.
    pub async fn from_cloud_config(
        args: AgentArgs,
        url: &str,
        version: &str,
    ) -> anyhow::Result<AgentSettings> {
        use crate::cloud_config::{self, Entry};
        let boot = cloud_config::load(url, Duration::from_secs(120))
            .await
            .with_context(|| format!("loading the cloud-config from {url}"))?;
        let data_dir = args
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/herd/store"));
        // A machine booted from its installed disk finds its member on
        // STATE: it resumes as that member (even while no peer answers)
        // instead of founding or joining anew.
        let bootstrap = if herd_store::has_state(&data_dir) {
            tracing::info!(name = %boot.name, data_dir = %data_dir.display(), "cloud-config loaded; resuming the store member from its data dir");
            Bootstrap::Resume
        } else {
            let entry = boot.membership.resolve(Duration::from_secs(2)).await;
            tracing::info!(name = %boot.name, ?entry, "cloud-config loaded");
            match entry {
                Entry::Found => {
                    Bootstrap::Found(vec![(boot.name.clone(), boot.listen_peer.to_string())])
                }
                Entry::Join(peer) => Bootstrap::Join(peer.to_string()),
            }
        };
        if let Some(disk) = &boot.install_disk {
            // The image's init installs (kernel `herd.install=`) before the
            // agent runs; the agent only marks the booted slot good.
            tracing::debug!(disk = %disk.display(), "machine installs to disk");
        }
        let (name, ip, roles, v) = (
            boot.name.clone(),
            boot.advertise,
            boot.roles.clone(),
            version.to_owned(),
        );
        let mut record =
            tokio::task::spawn_blocking(move || crate::facts::describe(&name, ip, &roles, &v))
                .await
                .context("gathering machine facts")?
                .context("gathering machine facts")?;
        if let Some(id) = &args.machine_id {
            check_machine_id(id)?;
            record.machine_id = id.clone();
        }
        record.metadata = boot.metadata.clone();
        if let Some(extra) = args.metadata.as_deref() {
            record.metadata.extend(parse_metadata(extra)?);
        }
        let listen_api = args
            .listen_agent_api
            .unwrap_or_else(|| SocketAddr::new(boot.advertise, boot.agent_api_port));
        let machine_id = record.machine_id.clone();
        let net = boot
            .network
            .as_ref()
            .and_then(|n| {
                net_settings(
                    &NetFlags::of(&args),
                    &machine_id,
                    &data_dir,
                    Some((n, boot.advertise)),
                )
            })
            .or_else(|| net_settings(&NetFlags::of(&args), &machine_id, &data_dir, None));
        let kubelet = KubeletConfig::of(&args, &boot.kubelet);
        let pods = pods_config(
            &args.pods,
            Some(boot.listen_api),
            boot.api_token.clone(),
            &boot.name,
            version,
        )?;
        let proxy = proxy_setting(&args.proxy, pods.as_ref(), &boot.name);
        Ok(AgentSettings {
            machine_id,
            net,
            units: AgentSettings::units_settings(&args, &data_dir),
            machine_ttl: Duration::from_secs(args.machine_ttl),
            listen_api: Some(listen_api),
            name: boot.name,
            data_dir,
            listen_client: boot.listen_client,
            listen_peer: boot.listen_peer,
            bootstrap,
            token: boot.token,
            security: if boot.insecure_plaintext {
                SecurityMode::Plaintext
            } else {
                SecurityMode::Tls {
                    ca: boot.ca.clone(),
                }
            },
            max_voters: args.max_voters,
            member_cert_validity: args.member_cert_validity,
            max_request_bytes: args.max_request_bytes,
            max_key_bytes: args.max_key_bytes,
            storage: args.storage,
            watch_progress_notify_interval: Duration::from_secs(
                args.watch_progress_notify_interval,
            ),
            timing: match boot.timing {
                Some(timing) => timing,
                None => timing_flags(&args)?,
            },
            machine: Some(record),
            update: boot.update,
            proxy,
            pods,
            kubelet,
        })
    }
}

/// The Raft timing the flags give.
fn timing_flags(args: &AgentArgs) -> anyhow::Result<RaftTiming> {
    RaftTiming::new(args.heartbeat_interval, args.election_timeout)
        .context("--heartbeat-interval and --election-timeout")
}

/// Parses one `NAME=HOST:PORT` of `--initial-cluster`.
fn parse_member(s: &str) -> anyhow::Result<(String, SocketAddr)> {
    let (name, addr) = s
        .split_once('=')
        .with_context(|| format!("--initial-cluster entry {s:?} is not NAME=HOST:PORT"))?;
    let addr = addr
        .trim_start_matches("http://")
        .parse()
        .with_context(|| format!("--initial-cluster entry {s:?}: bad address"))?;
    if name.is_empty() {
        bail!("--initial-cluster entry {s:?} has an empty name");
    }
    Ok((name.to_owned(), addr))
}

impl AgentSettings {
    /// The join token, when the token is one (TLS mode).
    pub fn join_token(&self) -> anyhow::Result<Option<JoinToken>> {
        match (&self.security, self.token.as_str()) {
            (SecurityMode::Plaintext, _) | (_, "") => Ok(None),
            (SecurityMode::Tls { .. }, t) => Ok(Some(t.parse().context(
                "in TLS mode the token is a join token; give --insecure-plaintext for a shared secret",
            )?)),
        }
    }

    /// The store configuration these settings describe.
    pub fn store_config(&self) -> anyhow::Result<herd_store::Config> {
        let mut config = herd_store::Config::new(
            self.name.clone(),
            self.data_dir.clone(),
            self.listen_peer,
            self.token.clone(),
        );
        if let SecurityMode::Tls { ca } = &self.security {
            config.security = Security::Tls(TlsSettings {
                ca: ca.clone(),
                join_token: self.join_token()?,
                names: Vec::new(),
                // Every address this agent serves TLS on: the store's,
                // the Kubernetes API's and the agent API's.
                ips: [self.listen_client.ip()]
                    .into_iter()
                    .chain(self.pods.as_ref().map(|p| p.listen_api.ip()))
                    .chain(self.listen_api.map(|a| a.ip()))
                    .collect(),
                member_validity: Some(self.member_cert_validity),
            });
        }
        config.advertise_client = Some(self.listen_client.to_string());
        config.bootstrap = self.bootstrap.clone();
        config.max_voters = self.max_voters;
        config.limits.max_request_bytes = self.max_request_bytes;
        config.limits.max_key_bytes = self.max_key_bytes;
        config.storage = self.storage;
        self.timing.apply(&mut config);
        Ok(config)
    }
}

#[cfg(test)]
mod tests;
