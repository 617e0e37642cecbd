//! The DHCP server task: receive, decide, make leases durable, reply.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::boot_file::BootConfig;
use super::config::{Config, Mode};
use super::handler::{self, Event, Listener, Reply, Settings};
use super::leases::{Journal, Leases, Record};
use super::validate::MAX_LEN;
use super::{Error, PROXY_PORT, SERVER_PORT};

/// Packets handled per batch: one fsync covers all ACKs of a batch.
const BATCH: usize = 256;

/// A bound, ready DHCP server. Nothing is answered until [`Server::run`].
pub struct Server {
    interface: String,
    settings: Settings,
    boot: watch::Receiver<Arc<BootConfig>>,
    boot_tx: Arc<watch::Sender<Arc<BootConfig>>>,
    leases: Leases,
    journal: Option<Journal>,
    dhcp: UdpSocket,
    proxy: Option<UdpSocket>,
    events: mpsc::Sender<Event>,
}

/// Changes a running server's boot configuration (profile reload) without
/// touching its leases.
#[derive(Clone)]
pub struct ServerHandle {
    boot: Arc<watch::Sender<Arc<BootConfig>>>,
}

impl ServerHandle {
    pub fn set_boot(&self, boot: BootConfig) {
        self.boot.send_replace(Arc::new(boot));
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Server {
    /// Validates `config`, loads the lease journal from its state directory,
    /// and binds port 67 (and 4011 in proxy mode) on its interface.
    /// `events` receives what the inventory needs; when it is full, events are
    /// dropped rather than slowing the server.
    pub async fn bind(config: Config, events: mpsc::Sender<Event>) -> Result<Server, Error> {
        config.validate()?;
        let mut leases = Leases::new(config.pools.clone(), config.reservations.clone());
        let dir = config.state_dir.clone();
        let (journal, leases) = tokio::task::spawn_blocking(move || {
            let journal = Journal::open(&dir, &mut leases, unix_now());
            (journal, leases)
        })
        .await
        .map_err(|e| Error::Leases {
            path: config.state_dir.clone(),
            source: std::io::Error::other(e),
        })?;
        let journal = journal?;
        let bind = |port| {
            super::socket::bind(&config.interface, port).map_err(|source| Error::Bind {
                interface: config.interface.clone(),
                port,
                source,
            })
        };
        let dhcp = bind(SERVER_PORT)?;
        let proxy = match config.mode {
            Mode::Proxy => Some(bind(PROXY_PORT)?),
            Mode::Authoritative => None,
        };
        let (boot_tx, boot) = watch::channel(Arc::new(config.boot.clone()));
        tracing::info!(
            interface = %config.interface,
            mode = ?config.mode,
            leases = %journal.path().display(),
            active = leases.active_count(unix_now()),
            "DHCP server bound"
        );
        Ok(Server {
            interface: config.interface.clone(),
            settings: Settings {
                server_ip: config.server_ip,
                mode: config.mode,
                lease_time: config.lease_time,
                dns: config.dns.clone(),
                domain: config.domain.clone(),
                decline_quarantine: config.decline_quarantine,
            },
            boot,
            boot_tx: Arc::new(boot_tx),
            leases,
            journal: Some(journal),
            dhcp,
            proxy,
            events,
        })
    }

    /// A handle for reloading the boot configuration while running.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            boot: self.boot_tx.clone(),
        }
    }

    /// Serves until `shutdown` is cancelled. Returns an error only if the
    /// socket or the lease journal fails; bad packets are logged and dropped.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), Error> {
        let mut buf = vec![0u8; MAX_LEN + 1];
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                r = self.dhcp.readable() => r.map_err(|e| self.io_err(e))?,
                r = async { match &self.proxy { Some(p) => p.readable().await, None => std::future::pending().await } } => r.map_err(|e| self.io_err(e))?,
            }
            let mut replies: Vec<(Listener, Reply, bool)> = Vec::new();
            let mut records: Vec<Record> = Vec::new();
            let mut events: Vec<Event> = Vec::new();
            let now = unix_now();
            let boot = self.boot.borrow().clone();
            for listener in [Listener::Dhcp, Listener::Proxy] {
                let socket = match listener {
                    Listener::Dhcp => &self.dhcp,
                    Listener::Proxy => match &self.proxy {
                        Some(p) => p,
                        None => continue,
                    },
                };
                while replies.len() + records.len() < BATCH {
                    let (n, from) = match socket.try_recv_from(&mut buf) {
                        Ok(x) => x,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::warn!(interface = %self.interface, error = %e, "DHCP receive failed");
                            break;
                        }
                    };
                    let SocketAddr::V4(from) = from else { continue };
                    let outcome = handler::decode(&buf[..n]).and_then(|msg| {
                        handler::handle(
                            &self.settings,
                            &boot,
                            &mut self.leases,
                            &msg,
                            listener,
                            from,
                            now,
                        )
                    });
                    match outcome {
                        Ok(o) => {
                            let durable = o.record.is_some();
                            if let Some(r) = o.record {
                                self.leases.apply(&r);
                                records.push(r);
                            }
                            if let Some(reply) = o.reply {
                                replies.push((listener, reply, durable));
                            }
                            events.extend(o.event);
                        }
                        Err(handler::Ignored::Policy(why)) => {
                            tracing::debug!(%from, len = n, why, "DHCP packet not answered");
                        }
                        Err(e) => tracing::warn!(%from, len = n, error = %e, "dropped DHCP packet"),
                    }
                }
            }
            let durable_ok = self.persist(records, now).await;
            for (listener, reply, needs_durability) in replies {
                if needs_durability && !durable_ok {
                    continue;
                }
                self.send(listener, &reply).await;
            }
            for event in events {
                if self.events.try_send(event).is_err() {
                    tracing::debug!("inventory event channel full or closed; event dropped");
                }
            }
        }
        tracing::info!(interface = %self.interface, "DHCP server stopped");
        Ok(())
    }

    /// Appends and fsyncs `records` off the runtime; compacts when the journal has grown.
    async fn persist(&mut self, records: Vec<Record>, now: u64) -> bool {
        if records.is_empty() {
            return true;
        }
        let Some(mut journal) = self.journal.take() else {
            return false;
        };
        let snapshot = journal
            .wants_compaction(&self.leases)
            .then(|| self.leases.snapshot(now));
        let result = tokio::task::spawn_blocking(move || {
            let r = journal.append(&records);
            if r.is_ok()
                && let Some(snapshot) = snapshot
                && let Err(e) = journal.compact(&snapshot)
            {
                tracing::warn!(error = %e, "lease journal compaction failed; will retry");
            }
            (journal, r)
        })
        .await;
        match result {
            Ok((journal, r)) => {
                self.journal = Some(journal);
                match r {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, "writing lease journal failed; ACKs withheld");
                        false
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "lease journal task failed");
                false
            }
        }
    }

    async fn send(&self, listener: Listener, reply: &Reply) {
        let socket = match (listener, &self.proxy) {
            (Listener::Proxy, Some(p)) => p,
            _ => &self.dhcp,
        };
        let to = match reply.neighbour {
            None => reply.to,
            Some((ip, mac)) => {
                use std::os::fd::AsRawFd;
                match super::socket::add_neighbour(socket.as_raw_fd(), &self.interface, ip, mac) {
                    Ok(()) => reply.to,
                    Err(e) => {
                        // RFC 2131 §4.1 allows the broadcast instead.
                        tracing::debug!(%ip, error = %e, "adding a neighbour entry failed; broadcasting");
                        std::net::SocketAddrV4::new(super::BROADCAST, super::CLIENT_PORT)
                    }
                }
            }
        };
        if let Err(e) = socket.send_to(&reply.bytes, SocketAddr::V4(to)).await {
            tracing::warn!(%to, error = %e, "sending DHCP reply failed");
        }
    }

    fn io_err(&self, source: std::io::Error) -> Error {
        Error::Io {
            interface: self.interface.clone(),
            source,
        }
    }
}
