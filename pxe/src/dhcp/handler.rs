//! One request in, at most one reply out: DHCPv4 and proxyDHCP message logic, free of sockets and disks.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

use super::boot_file::{self, BootConfig, BootDecision, BootStage, ClientArch, ClientInfo};
use super::config::{MacAddr, Mode};
use super::leases::{Leases, Record};
use super::validate::{self, Malformed};
use super::{BROADCAST, CLIENT_PORT, SERVER_PORT};

/// Replies are padded to this size: some PXE ROMs and relays drop shorter BOOTP packets.
pub const MIN_REPLY_LEN: usize = 300;

/// What the inventory hears about a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub mac: MacAddr,
    /// SMBIOS UUID from option 97, when the firmware sent one.
    pub uuid: Option<[u8; 16]>,
    /// Client architecture (option 93 or vendor class), when sent.
    pub arch: Option<u16>,
    /// The address offered/leased/released, if any.
    pub ip: Option<Ipv4Addr>,
    pub kind: EventKind,
    /// The boot file or URL handed out with this reply.
    pub boot_file: Option<String>,
    pub boot_stage: Option<BootStage>,
    /// The request came from iPXE.
    pub ipxe: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Offered,
    Acked,
    Nak,
    Released,
    Declined,
    /// proxyDHCP: boot information sent without an address.
    ProxyOffered,
    ProxyAcked,
}

/// Which socket a packet arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Port 67.
    Dhcp,
    /// Port 4011 (proxyDHCP boot server requests).
    Proxy,
}

/// The fixed parts of the configuration the handler needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server_ip: Ipv4Addr,
    pub mode: Mode,
    pub lease_time: Duration,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub decline_quarantine: Duration,
}

/// An encoded reply and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub bytes: Vec<u8>,
    pub to: SocketAddrV4,
    /// `to` is the client's new address, which it cannot answer ARP for
    /// yet: the sender adds this neighbour entry (address → chaddr) first,
    /// or broadcasts instead if it cannot (RFC 2131 §4.1).
    pub neighbour: Option<(Ipv4Addr, [u8; 6])>,
}

/// The result of handling one packet. `record` must be durable before `reply` is sent.
#[derive(Debug, Default)]
pub struct Outcome {
    pub reply: Option<Reply>,
    pub record: Option<Record>,
    pub event: Option<Event>,
}

/// Why a packet got no answer.
#[derive(Debug, thiserror::Error)]
pub enum Ignored {
    #[error("malformed packet: {0}")]
    Malformed(#[from] Malformed),
    #[error("dhcproto could not decode it: {0}")]
    Decode(String),
    #[error("{0}")]
    Policy(&'static str),
}

/// Validates and decodes a raw packet. The pre-check keeps dhcproto away from
/// inputs it mishandles; `catch_unwind` covers whatever the check misses.
pub fn decode(packet: &[u8]) -> Result<Message, Ignored> {
    validate::check(packet)?;
    let decoded = std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(packet)));
    match decoded {
        Ok(Ok(msg)) => Ok(msg),
        Ok(Err(e)) => Err(Ignored::Decode(e.to_string())),
        Err(_) => Err(Ignored::Decode("decoder panicked".into())),
    }
}

/// What the request says about the client.
pub fn client_info(msg: &Message) -> Result<ClientInfo, Ignored> {
    if msg.htype() != HType::Eth || msg.hlen() != 6 {
        return Err(Ignored::Policy("not an Ethernet client (htype 1, hlen 6)"));
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&msg.chaddr()[..6]);
    let opts = msg.opts();
    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(ClientArch::from(u16::from(*a))),
        _ => None,
    };
    let vendor_class = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => Some(String::from_utf8_lossy(v).into_owned()),
        _ => None,
    };
    let user_class_ipxe = match opts.get(OptionCode::UserClass) {
        Some(DhcpOption::UserClass(v)) => v.windows(4).any(|w| w == b"iPXE"),
        _ => false,
    };
    let uuid = match opts.get(OptionCode::ClientMachineIdentifier) {
        Some(DhcpOption::ClientMachineIdentifier(v)) => Some(v.clone()),
        _ => None,
    };
    Ok(ClientInfo {
        mac: MacAddr(mac),
        arch,
        vendor_class,
        is_ipxe: user_class_ipxe || opts.get(OptionCode::from(175u8)).is_some(),
        uuid,
    })
}

fn ip_option(msg: &Message, code: OptionCode) -> Option<Ipv4Addr> {
    match msg.opts().get(code) {
        Some(DhcpOption::RequestedIpAddress(ip)) | Some(DhcpOption::ServerIdentifier(ip)) => {
            Some(*ip)
        }
        _ => None,
    }
}

/// Handles one decoded request.
pub fn handle(
    settings: &Settings,
    boot: &BootConfig,
    leases: &mut Leases,
    msg: &Message,
    listener: Listener,
    source: SocketAddrV4,
    now: u64,
) -> Result<Outcome, Ignored> {
    if msg.opcode() != Opcode::BootRequest {
        return Err(Ignored::Policy("not a BOOTREQUEST"));
    }
    let Some(kind) = msg.opts().msg_type() else {
        return Err(Ignored::Policy(
            "BOOTP without DHCP message type is not served",
        ));
    };
    let client = client_info(msg)?;
    match (settings.mode, listener) {
        (Mode::Proxy, Listener::Dhcp) => proxy_offer(settings, boot, msg, &client, kind),
        (_, Listener::Proxy) => proxy_ack(settings, boot, msg, &client, kind, source),
        (Mode::Authoritative, Listener::Dhcp) => {
            authoritative(settings, boot, leases, msg, &client, kind, now)
        }
    }
}

fn authoritative(
    settings: &Settings,
    boot: &BootConfig,
    leases: &mut Leases,
    msg: &Message,
    client: &ClientInfo,
    kind: MessageType,
    now: u64,
) -> Result<Outcome, Ignored> {
    let mac = client.mac;
    let Some(pool) = leases.pool_for(msg.giaddr(), settings.server_ip) else {
        return Err(Ignored::Policy("no pool for the relay's giaddr"));
    };
    let requested = ip_option(msg, OptionCode::RequestedIpAddress);
    let server_id = ip_option(msg, OptionCode::ServerIdentifier);
    let ours = server_id.is_none_or(|s| s == settings.server_ip);
    let lease_secs = settings.lease_time.as_secs();
    match kind {
        MessageType::Discover => {
            let ip = leases
                .offer(pool, mac, requested, now)
                .ok_or(Ignored::Policy("address pool exhausted"))?;
            let decision = boot_file::decide(boot, client);
            let reply = build(
                settings,
                msg,
                MessageType::Offer,
                ip,
                decision.as_ref(),
                Some((leases, pool)),
                lease_secs,
            );
            Ok(Outcome {
                reply: Some(reply),
                record: None,
                event: Some(event(
                    client,
                    Some(ip),
                    EventKind::Offered,
                    decision.as_ref(),
                )),
            })
        }
        MessageType::Request => {
            if !ours {
                leases.drop_offer(mac);
                return Err(Ignored::Policy("client chose another server's offer"));
            }
            let ciaddr = msg.ciaddr();
            let ip = match (server_id, requested) {
                // SELECTING or INIT-REBOOT: the address is in option 50.
                (_, Some(ip)) => ip,
                // RENEWING/REBINDING: the address is ciaddr.
                (None, None) if !ciaddr.is_unspecified() => ciaddr,
                (Some(_), None) if !ciaddr.is_unspecified() => ciaddr,
                _ => return Err(Ignored::Policy("REQUEST names no address")),
            };
            if !leases.available_for(pool, ip, mac, now) {
                let reply = build(
                    settings,
                    msg,
                    MessageType::Nak,
                    Ipv4Addr::UNSPECIFIED,
                    None,
                    None,
                    0,
                );
                return Ok(Outcome {
                    reply: Some(reply),
                    record: None,
                    event: Some(event(client, Some(ip), EventKind::Nak, None)),
                });
            }
            let decision = boot_file::decide(boot, client);
            let reply = build(
                settings,
                msg,
                MessageType::Ack,
                ip,
                decision.as_ref(),
                Some((leases, pool)),
                lease_secs,
            );
            Ok(Outcome {
                reply: Some(reply),
                record: Some(leases.bind(mac, ip, now, lease_secs)),
                event: Some(event(client, Some(ip), EventKind::Acked, decision.as_ref())),
            })
        }
        MessageType::Release => {
            if server_id != Some(settings.server_ip) {
                return Err(Ignored::Policy("RELEASE for another server"));
            }
            let ip = msg.ciaddr();
            let record = leases.release(mac, ip).ok_or(Ignored::Policy(
                "RELEASE of an address not leased to this client",
            ))?;
            Ok(Outcome {
                reply: None,
                record: Some(record),
                event: Some(event(client, Some(ip), EventKind::Released, None)),
            })
        }
        MessageType::Decline => {
            if server_id != Some(settings.server_ip) {
                return Err(Ignored::Policy("DECLINE for another server"));
            }
            let ip = requested.ok_or(Ignored::Policy("DECLINE without option 50"))?;
            let until = now + settings.decline_quarantine.as_secs();
            let record = leases.decline(mac, ip, until).ok_or(Ignored::Policy(
                "DECLINE of an address we did not give this client",
            ))?;
            tracing::warn!(%mac, %ip, "client declined address (in use?); quarantined");
            Ok(Outcome {
                reply: None,
                record: Some(record),
                event: Some(event(client, Some(ip), EventKind::Declined, None)),
            })
        }
        MessageType::Inform => {
            let decision = boot_file::decide(boot, client);
            let reply = build(
                settings,
                msg,
                MessageType::Ack,
                Ipv4Addr::UNSPECIFIED,
                decision.as_ref(),
                Some((leases, pool)),
                0,
            );
            Ok(Outcome {
                reply: Some(reply),
                record: None,
                event: None,
            })
        }
        _ => Err(Ignored::Policy("message type not handled by a server")),
    }
}

fn proxy_offer(
    settings: &Settings,
    boot: &BootConfig,
    msg: &Message,
    client: &ClientInfo,
    kind: MessageType,
) -> Result<Outcome, Ignored> {
    if kind != MessageType::Discover {
        return Err(Ignored::Policy(
            "proxyDHCP answers only DISCOVER on port 67",
        ));
    }
    let decision = boot_file::decide(boot, client).ok_or(Ignored::Policy(
        "not a PXE client (or no boot file for its architecture)",
    ))?;
    let reply = build(
        settings,
        msg,
        MessageType::Offer,
        Ipv4Addr::UNSPECIFIED,
        Some(&decision),
        None,
        0,
    );
    Ok(Outcome {
        reply: Some(reply),
        record: None,
        event: Some(event(
            client,
            None,
            EventKind::ProxyOffered,
            Some(&decision),
        )),
    })
}

fn proxy_ack(
    settings: &Settings,
    boot: &BootConfig,
    msg: &Message,
    client: &ClientInfo,
    kind: MessageType,
    source: SocketAddrV4,
) -> Result<Outcome, Ignored> {
    if !matches!(kind, MessageType::Request | MessageType::Inform) {
        return Err(Ignored::Policy("port 4011 answers only REQUEST/INFORM"));
    }
    let decision = boot_file::decide(boot, client).ok_or(Ignored::Policy(
        "not a PXE client (or no boot file for its architecture)",
    ))?;
    let mut reply = build(
        settings,
        msg,
        MessageType::Ack,
        Ipv4Addr::UNSPECIFIED,
        Some(&decision),
        None,
        0,
    );
    // The client has its address by now and listens where it sent from.
    reply.to = source;
    reply.neighbour = None;
    Ok(Outcome {
        reply: Some(reply),
        record: None,
        event: Some(event(client, None, EventKind::ProxyAcked, Some(&decision))),
    })
}

fn event(
    client: &ClientInfo,
    ip: Option<Ipv4Addr>,
    kind: EventKind,
    decision: Option<&BootDecision>,
) -> Event {
    Event {
        mac: client.mac,
        uuid: client.uuid_bytes(),
        arch: client.effective_arch().map(ClientArch::code),
        ip,
        kind,
        boot_file: decision.map(|d| d.filename.clone()),
        boot_stage: decision.map(|d| d.stage),
        ipxe: client.is_ipxe,
    }
}

/// Builds and encodes a reply, addressed per RFC 2131 §4.1.
fn build(
    settings: &Settings,
    req: &Message,
    kind: MessageType,
    yiaddr: Ipv4Addr,
    decision: Option<&BootDecision>,
    pool: Option<(&Leases, usize)>,
    lease_secs: u64,
) -> Reply {
    let siaddr = decision
        .and_then(|d| d.next_server)
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let mut m = Message::new_with_id(
        req.xid(),
        Ipv4Addr::UNSPECIFIED,
        yiaddr,
        siaddr,
        req.giaddr(),
        req.chaddr(),
    );
    m.set_opcode(Opcode::BootReply);
    m.set_htype(req.htype());
    let mut flags = req.flags();
    if kind == MessageType::Nak && !req.giaddr().is_unspecified() {
        // A relay must broadcast a NAK: the client may have a wrong address.
        flags = flags.set_broadcast();
    }
    m.set_flags(flags);
    if kind == MessageType::Ack && yiaddr.is_unspecified() {
        // INFORM/proxy ACK: the client keeps its address.
        m.set_ciaddr(req.ciaddr());
    }
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(settings.server_ip));
    if kind != MessageType::Nak {
        if let Some((leases, index)) = pool {
            let p = leases.pool(index);
            opts.insert(DhcpOption::SubnetMask(p.subnet.netmask()));
            opts.insert(DhcpOption::BroadcastAddr(p.subnet.broadcast()));
            if let Some(router) = p.router {
                opts.insert(DhcpOption::Router(vec![router]));
            }
            if !settings.dns.is_empty() {
                opts.insert(DhcpOption::DomainNameServer(settings.dns.clone()));
            }
            if let Some(domain) = &settings.domain {
                opts.insert(DhcpOption::DomainName(domain.clone()));
            }
        }
        if lease_secs > 0 && !yiaddr.is_unspecified() {
            let secs = u32::try_from(lease_secs).unwrap_or(u32::MAX);
            opts.insert(DhcpOption::AddressLeaseTime(secs));
            opts.insert(DhcpOption::Renewal(secs / 2));
            opts.insert(DhcpOption::Rebinding(secs / 8 * 7));
        }
        if let Some(d) = decision {
            if let Some(server) = d.next_server {
                opts.insert(DhcpOption::TFTPServerName(server.to_string().into_bytes()));
            }
            opts.insert(DhcpOption::BootfileName(d.filename.clone().into_bytes()));
            if let Some(class) = d.vendor_class {
                opts.insert(DhcpOption::ClassIdentifier(class.as_bytes().to_vec()));
            }
            if d.pxe_vendor_options {
                // PXE_DISCOVERY_CONTROL (6) = 8: use the boot file in this reply, no menu, no discovery.
                opts.insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
            }
            if let Some(uuid) = &d.uuid {
                opts.insert(DhcpOption::ClientMachineIdentifier(uuid.clone()));
            }
        }
    } else {
        opts.insert(DhcpOption::Message("address not available".into()));
    }
    if let Some(d) = decision
        && d.filename.len() < 128
    {
        m.set_fname_str(&d.filename);
    }
    let (to, neighbour) = destination(req, kind, yiaddr);
    let mut bytes = m.to_vec().unwrap_or_default();
    if bytes.len() < MIN_REPLY_LEN {
        bytes.resize(MIN_REPLY_LEN, 0);
    }
    Reply {
        bytes,
        to,
        neighbour,
    }
}

/// RFC 2131 §4.1: relay → giaddr:67; NAK → broadcast; ciaddr set → unicast
/// to ciaddr; broadcast bit set → broadcast; otherwise unicast to yiaddr
/// and chaddr, which needs a neighbour entry the client cannot create by
/// answering ARP yet (the returned pair; the sender falls back to
/// broadcast if it cannot add it, as dnsmasq does).
fn destination(
    req: &Message,
    kind: MessageType,
    yiaddr: Ipv4Addr,
) -> (SocketAddrV4, Option<(Ipv4Addr, [u8; 6])>) {
    let broadcast = (SocketAddrV4::new(BROADCAST, CLIENT_PORT), None);
    if !req.giaddr().is_unspecified() {
        return (SocketAddrV4::new(req.giaddr(), SERVER_PORT), None);
    }
    if kind == MessageType::Nak {
        return broadcast;
    }
    if Flags::broadcast(&req.flags()) {
        return broadcast;
    }
    if !req.ciaddr().is_unspecified() {
        return (SocketAddrV4::new(req.ciaddr(), CLIENT_PORT), None);
    }
    if yiaddr.is_unspecified() || req.htype() != HType::Eth || req.chaddr().len() < 6 {
        return broadcast;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&req.chaddr()[..6]);
    (SocketAddrV4::new(yiaddr, CLIENT_PORT), Some((yiaddr, mac)))
}

#[cfg(test)]
mod tests;
