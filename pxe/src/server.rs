//! `herd pxe serve`: DHCP, TFTP and HTTP boot bound once on one address,
//! feeding one inventory; profiles are reloaded on SIGHUP and when their
//! files change by swapping an `Arc`, so leases, sockets and transfers in
//! flight are never touched.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::dhcp;
use crate::http::{self, AppState};
use crate::inventory::{BootStage, Inventory, Mac, Sighting};
use crate::profile::{self, ConfigFile, Profiles};
use crate::reload::{Fingerprint, Watch};
use crate::tftp;

/// Where the profiles come from; re-read on every reload.
#[derive(Debug, Clone)]
pub enum ProfileSource {
    /// `--config FILE`: profiles and groups in YAML.
    File(PathBuf),
    /// The quick-start flags: one default profile for every machine.
    Single {
        kernel: PathBuf,
        initrd: Vec<PathBuf>,
        cmdline: String,
        cloud_config: Option<PathBuf>,
        token: Option<String>,
        install_to_disk: bool,
    },
}

impl ProfileSource {
    /// Loads and validates. Blocking (reads files).
    pub fn load(&self) -> Result<Profiles, profile::ConfigError> {
        match self {
            ProfileSource::File(path) => Profiles::load(path),
            ProfileSource::Single {
                kernel,
                initrd,
                cmdline,
                cloud_config,
                token,
                install_to_disk,
            } => {
                let file = ConfigFile {
                    token: token.clone(),
                    peers: Vec::new(),
                    profiles: vec![profile::ProfileSpec {
                        id: "default".to_owned(),
                        kernel: kernel.clone(),
                        initrd: initrd.clone(),
                        cmdline: cmdline.clone(),
                        cloud_config: cloud_config.clone().map(profile::CloudConfigSource::File),
                        install_to_disk: *install_to_disk,
                        files: Default::default(),
                        metadata: Default::default(),
                    }],
                    groups: vec![profile::Group {
                        id: "default".to_owned(),
                        profile: "default".to_owned(),
                        selector: Default::default(),
                        metadata: Default::default(),
                    }],
                };
                let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
                Profiles::from_file(file, &cwd)
            }
        }
    }
}

/// DHCP side of the server.
#[derive(Debug, Clone)]
pub struct DhcpSettings {
    pub interface: String,
    pub range: (Ipv4Addr, Ipv4Addr),
    pub proxy: bool,
    /// Fixed addresses by MAC (`--reserve MAC=IP`).
    pub reservations: Vec<(dhcp::MacAddr, Ipv4Addr)>,
}

/// `herd pxe serve`'s `--state-dir` when none is given.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/herd/pxe";

/// Everything `herd pxe serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The server's address on the boot network, with its prefix.
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// `None` serves TFTP and HTTP only (another DHCP server points here).
    pub dhcp: Option<DhcpSettings>,
    pub state_dir: PathBuf,
    pub http_port: u16,
    /// The HTTPS admin listener's port (publishing, policies, resuming).
    pub admin_port: u16,
    /// More names (DNS or IP) the admin certificate covers, beside the
    /// address, 127.0.0.1 and `localhost`.
    pub admin_names: Vec<String>,
    pub tftp_port: u16,
    pub tftp_root: PathBuf,
    pub tftp_max_transfers: usize,
    pub tftp_refuse_blksize: bool,
    pub profiles: ProfileSource,
    /// How often the profile files are checked for changes; `None`: only
    /// SIGHUP reloads.
    pub reload_poll: Option<Duration>,
    /// The admin token's file (made if missing); `None`: `<state-dir>/api.token`.
    pub api_token_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("profiles: {0}")]
    Profiles(#[from] profile::ConfigError),
    #[error("inventory: {0}")]
    Inventory(#[from] crate::inventory::InventoryError),
    #[error("TFTP: {0}")]
    Tftp(#[from] tftp::server::ServerError),
    #[error("DHCP: {0}")]
    Dhcp(#[from] dhcp::Error),
    #[error("DHCP configuration: {0}")]
    DhcpConfig(#[from] dhcp::ConfigError),
    #[error("the admin listener's certificate: {0}")]
    AdminTls(#[source] herd_pki::PkiError),
    #[error("binding HTTP on {addr}: {source}")]
    HttpBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Http(#[source] std::io::Error),
    #[error("installing the SIGHUP handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("updates: {0}")]
    Updates(#[from] crate::update::service::ServiceError),
    #[error("admin token {path}: {source}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

async fn load_profiles(source: &ProfileSource) -> Result<Profiles, profile::ConfigError> {
    let source = source.clone();
    tokio::task::spawn_blocking(move || source.load())
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

fn arch_name(code: u16) -> String {
    match code {
        0 => "bios".to_owned(),
        6 => "efi-ia32".to_owned(),
        7 | 9 => "efi-x86_64".to_owned(),
        11 => "efi-arm64".to_owned(),
        16 => "efi-x86_64-http".to_owned(),
        other => format!("arch-{other}"),
    }
}

fn uuid_string(b: [u8; 16]) -> String {
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Serves until `shutdown` is cancelled.
pub async fn run(config: ServeConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    let profiles = load_profiles(&config.profiles).await?;
    info!(profiles = profiles.profiles().count(), "profiles loaded");
    let mut watch = {
        let paths = profiles.sources().to_vec();
        Watch::new(paths.clone(), fingerprint(paths).await)
    };
    let profiles = Arc::new(RwLock::new(Arc::new(profiles)));
    let inventory = Inventory::open(&config.state_dir).await?;
    let updates = crate::update::UpdateService::open(&config.state_dir).await?;
    let token_file = config
        .api_token_file
        .clone()
        .unwrap_or_else(|| http::auth::default_token_file(&config.state_dir));
    let admin = {
        let path = token_file.clone();
        tokio::task::spawn_blocking(move || http::auth::BearerToken::load_or_create(&path))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
            .map_err(|source| ServeError::Token {
                path: token_file.clone(),
                source,
            })?
    };
    let admin_tls = {
        let (dir, address, names) = (
            config.state_dir.clone(),
            config.address,
            config.admin_names.clone(),
        );
        tokio::task::spawn_blocking(move || http::admin_tls::load_or_create(&dir, address, &names))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
            .map_err(ServeError::AdminTls)?
    };
    let http_addr = SocketAddr::new(IpAddr::V4(config.address), config.http_port);
    let admin_addr = SocketAddr::new(IpAddr::V4(config.address), config.admin_port);
    let base_url = http::base_url(http_addr);
    let admin_url = format!("https://{admin_addr}");

    // Bind everything before serving anything, so a bad port fails fast.
    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::HttpBind { addr, source })
    };
    let listener = bind(http_addr).await?;
    let admin_listener = bind(admin_addr).await?;
    let (tftp_tx, mut tftp_rx) = mpsc::channel::<tftp::TransferEvent>(1024);
    let hook: tftp::TransferHook = Arc::new(move |ev| {
        // Full channel: drop the inventory note rather than stall a transfer.
        let _ = tftp_tx.try_send(ev);
    });
    let subnet = tftp::Subnet::new(config.address, config.prefix).map_err(|e| {
        ServeError::Tftp(tftp::server::ServerError::Bind {
            addr: SocketAddr::new(IpAddr::V4(config.address), config.tftp_port),
            source: std::io::Error::other(e.to_string()),
        })
    })?;
    let mut tftp_config = tftp::Config::new(config.tftp_root.clone(), vec![subnet]);
    tftp_config.max_transfers = config.tftp_max_transfers;
    tftp_config.refuse_blksize = config.tftp_refuse_blksize;
    let tftp_server = tftp::Server::bind(
        SocketAddr::new(IpAddr::V4(config.address), config.tftp_port),
        tftp_config,
        Some(hook),
    )
    .await?;

    let (dhcp_tx, mut dhcp_rx) = mpsc::channel::<dhcp::Event>(1024);
    let dhcp_server = match &config.dhcp {
        None => None,
        Some(d) => {
            let subnet = dhcp::Subnet::new(config.address, config.prefix)?;
            let pool = dhcp::Pool::new(subnet, d.range.0, d.range.1)?;
            let mut c =
                dhcp::Config::new(&d.interface, config.address, pool, config.state_dir.clone());
            if d.proxy {
                c.mode = dhcp::Mode::Proxy;
            }
            c.reservations = d.reservations.iter().copied().collect();
            // No `${mac}` here: iPXE gets the chain script, which asks again
            // with MAC, UUID, IP, hostname and arch filled in by iPXE itself.
            c.boot = dhcp::BootConfig::new(config.address, &format!("{base_url}/boot.ipxe"));
            Some(dhcp::Server::bind(c, dhcp_tx).await?)
        }
    };

    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(ServeError::Signal)?;

    let mut tasks: JoinSet<Result<(), ServeError>> = JoinSet::new();
    tasks.spawn(tftp_server.run(shutdown.clone()).map_ok());
    let state = AppState {
        profiles: profiles.clone(),
        inventory: inventory.clone(),
        base_url: base_url.clone(),
        updates,
        admin: http::auth::Admin::Elsewhere {
            url: admin_url.clone(),
        },
    };
    let admin_state = AppState {
        admin: http::auth::Admin::Here(Arc::new(admin)),
        ..state.clone()
    };
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            http::serve(listener, state, shutdown)
                .await
                .map_err(ServeError::Http)
        });
    }
    {
        let shutdown = shutdown.clone();
        let tls = admin_tls.config;
        tasks.spawn(async move {
            http::serve_admin(admin_listener, tls, admin_state, shutdown).await;
            Ok(())
        });
    }
    if let Some(server) = dhcp_server {
        let shutdown = shutdown.clone();
        tasks.spawn(async move { server.run(shutdown).await.map_err(ServeError::from) });
    }
    info!(%base_url, tftp_root = %config.tftp_root.display(), dhcp = config.dhcp.is_some(), "herd pxe serving");
    info!(
        %admin_url,
        cacert = %admin_tls.ca_file.display(),
        ca_sha256 = %admin_tls.fingerprint,
        "admin routes served only over HTTPS: clients pin this CA"
    );

    // Without polling the interval still exists but its branch is disabled.
    let mut poll = tokio::time::interval(config.reload_poll.unwrap_or(Duration::from_secs(3600)));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut result = Ok(());
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = hup.recv() => {
                reload(&config.profiles, &profiles, &mut watch, None, "SIGHUP").await;
            }
            _ = poll.tick(), if config.reload_poll.is_some() => {
                let now = fingerprint(watch.paths().to_vec()).await;
                if let Some(changed) = watch.observe(now) {
                    reload(&config.profiles, &profiles, &mut watch, Some(changed), "file changed").await;
                }
            }
            Some(ev) = dhcp_rx.recv() => record_dhcp(&inventory, ev).await,
            Some(ev) = tftp_rx.recv() => record_tftp(&inventory, ev).await,
            Some(done) = tasks.join_next() => {
                // A server task ending on its own is fatal: stop the rest.
                result = match done {
                    Ok(r) => r,
                    Err(e) => Err(ServeError::Http(std::io::Error::other(e.to_string()))),
                };
                if result.is_ok() && !shutdown.is_cancelled() {
                    warn!("a server task stopped unexpectedly");
                }
                shutdown.cancel();
                break;
            }
        }
    }
    shutdown.cancel();
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done
            && result.is_ok()
        {
            result = Err(e);
        }
    }
    result
}

/// Hashes `paths` on a blocking thread.
async fn fingerprint(paths: Vec<PathBuf>) -> Fingerprint {
    tokio::task::spawn_blocking(move || Fingerprint::of(&paths))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Loads the profiles again and swaps them in; a config that fails to load
/// is logged and the previous one keeps serving.
async fn reload(
    source: &ProfileSource,
    profiles: &RwLock<Arc<Profiles>>,
    watch: &mut Watch,
    seen: Option<Fingerprint>,
    reason: &'static str,
) {
    // Taken before loading, so a write during the load shows up as one
    // more change on the next poll instead of being missed.
    let before = match seen {
        Some(f) => f,
        None => fingerprint(watch.paths().to_vec()).await,
    };
    match load_profiles(source).await {
        Ok(p) => {
            let paths = p.sources().to_vec();
            let current = if paths == watch.paths() {
                before
            } else {
                fingerprint(paths.clone()).await
            };
            *profiles.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
            watch.loaded(paths, current);
            info!(reason, "profiles reloaded");
        }
        Err(e) => {
            warn!(reason, error = %e, "reload failed; keeping the previous profiles");
            watch.failed(before);
        }
    }
}

trait MapOk {
    fn map_ok(self) -> impl std::future::Future<Output = Result<(), ServeError>> + Send;
}

impl<F: std::future::Future<Output = ()> + Send> MapOk for F {
    async fn map_ok(self) -> Result<(), ServeError> {
        self.await;
        Ok(())
    }
}

async fn record_dhcp(inventory: &Inventory, ev: dhcp::Event) {
    let mac = Mac(ev.mac.0);
    let stage = match ev.kind {
        dhcp::EventKind::Acked
        | dhcp::EventKind::Offered
        | dhcp::EventKind::ProxyOffered
        | dhcp::EventKind::ProxyAcked => Some(BootStage::Dhcp),
        _ => None,
    };
    // iPXE reports the UUID in its own textual form over HTTP; keep that one
    // once known rather than flip between encodings.
    let known_uuid = inventory.get(mac).await.and_then(|m| m.uuid);
    let sighting = Sighting {
        uuid: if known_uuid.is_some() {
            None
        } else {
            ev.uuid.map(uuid_string)
        },
        arch: ev.arch.map(arch_name),
        ip: ev.ip,
        stage,
        ..Default::default()
    };
    if let Err(e) = inventory.record(mac, sighting).await {
        warn!(%mac, error = %e, "recording DHCP sighting");
    }
}

async fn record_tftp(inventory: &Inventory, ev: tftp::TransferEvent) {
    let IpAddr::V4(ip) = ev.peer.ip() else { return };
    if !ev.completed {
        return;
    }
    let Some(machine) = inventory.by_ip(ip).await else {
        return;
    };
    let sighting = Sighting {
        stage: Some(BootStage::BootFile),
        ..Default::default()
    };
    if let Err(e) = inventory.record(machine.mac, sighting).await {
        warn!(mac = %machine.mac, error = %e, "recording TFTP boot file");
    }
}
