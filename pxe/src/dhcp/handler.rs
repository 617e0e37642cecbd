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
mod tests {
    use std::collections::HashMap;

    use dhcproto::v4::{Architecture, UnknownOption};

    use super::*;
    use crate::dhcp::config::Pool;

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn settings(mode: Mode) -> Settings {
        Settings {
            server_ip: SERVER,
            mode,
            lease_time: Duration::from_secs(600),
            dns: vec![SERVER],
            domain: None,
            decline_quarantine: Duration::from_secs(60),
        }
    }

    fn boot() -> BootConfig {
        BootConfig::new(SERVER, "http://10.0.0.1:8080/boot.ipxe?mac=${mac}")
    }

    fn leases() -> Leases {
        let local = Pool::new(
            "10.0.0.0/24".parse().unwrap(),
            Ipv4Addr::new(10, 0, 0, 100),
            Ipv4Addr::new(10, 0, 0, 110),
        )
        .unwrap();
        let mut relayed = Pool::new(
            "10.9.0.0/24".parse().unwrap(),
            Ipv4Addr::new(10, 9, 0, 100),
            Ipv4Addr::new(10, 9, 0, 110),
        )
        .unwrap();
        relayed.router = Some(Ipv4Addr::new(10, 9, 0, 1));
        Leases::new(vec![local, relayed], HashMap::new())
    }

    fn request(kind: MessageType, mac: u8) -> Message {
        let mut m = Message::new_with_id(
            0x1234,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[2, 0, 0, 0, 0, mac],
        );
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m
    }

    fn pxe(mut m: Message, arch: Architecture) -> Message {
        m.opts_mut()
            .insert(DhcpOption::ClientSystemArchitecture(arch));
        m.opts_mut().insert(DhcpOption::ClassIdentifier(
            b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
        ));
        m.opts_mut().insert(DhcpOption::ClientMachineIdentifier(
            [vec![0], vec![7; 16]].concat(),
        ));
        m
    }

    fn src() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT)
    }

    fn run(
        s: &Settings,
        l: &mut Leases,
        m: &Message,
        listener: Listener,
    ) -> Result<Outcome, Ignored> {
        let bytes = m.to_vec().unwrap();
        let decoded = decode(&bytes)?;
        let out = handle(s, &boot(), l, &decoded, listener, src(), 1000)?;
        if let Some(r) = &out.record {
            l.apply(r);
        }
        Ok(out)
    }

    fn reply(out: &Outcome) -> Message {
        let r = out.reply.as_ref().expect("a reply");
        assert!(
            r.bytes.len() >= MIN_REPLY_LEN,
            "reply not padded: {}",
            r.bytes.len()
        );
        decode(&r.bytes).expect("our own reply decodes")
    }

    #[test]
    fn discover_request_ack_with_durable_record() {
        let s = settings(Mode::Authoritative);
        let mut l = leases();
        let offer_out = run(
            &s,
            &mut l,
            &request(MessageType::Discover, 1),
            Listener::Dhcp,
        )
        .unwrap();
        assert!(offer_out.record.is_none(), "an OFFER is not persisted");
        let offer = reply(&offer_out);
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(offer.xid(), 0x1234);
        assert_eq!(offer.opcode(), Opcode::BootReply);
        let ip = offer.yiaddr();
        assert_eq!(ip, Ipv4Addr::new(10, 0, 0, 100));
        // No broadcast bit: unicast to the new address, with the neighbour
        // entry the server must add first (RFC 2131 §4.1).
        let r = offer_out.reply.as_ref().unwrap();
        assert_eq!(r.to, SocketAddrV4::new(ip, CLIENT_PORT));
        assert_eq!(r.neighbour, Some((ip, [2, 0, 0, 0, 0, 1])));
        assert!(offer.fname().is_none(), "a plain client gets no boot file");
        // With the broadcast bit: broadcast, no neighbour entry.
        let mut bcast = request(MessageType::Discover, 1);
        bcast.set_flags(Flags::default().set_broadcast());
        let out = run(&s, &mut l, &bcast, Listener::Dhcp).unwrap();
        let r = out.reply.unwrap();
        assert_eq!(r.to, SocketAddrV4::new(BROADCAST, CLIENT_PORT));
        assert_eq!(r.neighbour, None);

        let mut req = request(MessageType::Request, 1);
        req.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
        req.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
        let out = run(&s, &mut l, &req, Listener::Dhcp).unwrap();
        let ack = reply(&out);
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(ack.yiaddr(), ip);
        assert_eq!(
            ack.opts().get(OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(600))
        );
        assert_eq!(
            ack.opts().get(OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert!(matches!(out.record, Some(Record::Bind { ip: i, .. }) if i == ip));
        assert_eq!(out.event.unwrap().kind, EventKind::Acked);

        // Someone else asking for that address is refused.
        let mut other = request(MessageType::Request, 2);
        other.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
        let nak = reply(&run(&s, &mut l, &other, Listener::Dhcp).unwrap());
        assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));

        // Renewal: ciaddr set, unicast reply.
        let mut renew = request(MessageType::Request, 1);
        renew.set_ciaddr(ip);
        let out = run(&s, &mut l, &renew, Listener::Dhcp).unwrap();
        assert_eq!(reply(&out).opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(out.reply.unwrap().to, SocketAddrV4::new(ip, CLIENT_PORT));

        // Release, then a request from another server's client is ignored.
        let mut rel = request(MessageType::Release, 1);
        rel.set_ciaddr(ip);
        rel.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
        let out = run(&s, &mut l, &rel, Listener::Dhcp).unwrap();
        assert!(out.reply.is_none());
        assert!(matches!(out.record, Some(Record::Release { .. })));
        let mut elsewhere = request(MessageType::Request, 3);
        elsewhere
            .opts_mut()
            .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 105)));
        elsewhere
            .opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 2)));
        assert!(matches!(
            run(&s, &mut l, &elsewhere, Listener::Dhcp),
            Err(Ignored::Policy(_))
        ));
    }

    #[test]
    fn pxe_bios_client_gets_undionly_with_pxe_options() {
        let s = settings(Mode::Authoritative);
        let mut l = leases();
        let out = run(
            &s,
            &mut l,
            &pxe(request(MessageType::Discover, 1), Architecture::from(0u16)),
            Listener::Dhcp,
        )
        .unwrap();
        let offer = reply(&out);
        assert_eq!(
            offer.fname_str().unwrap().unwrap().trim_end_matches('\0'),
            "undionly.kpxe"
        );
        assert_eq!(offer.siaddr(), SERVER);
        assert_eq!(
            offer.opts().get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
        );
        assert_eq!(
            offer.opts().get(OptionCode::VendorExtensions),
            Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
        );
        assert_eq!(
            offer.opts().get(OptionCode::BootfileName),
            Some(&DhcpOption::BootfileName(b"undionly.kpxe".to_vec()))
        );
        assert_eq!(
            offer.opts().get(OptionCode::TFTPServerName),
            Some(&DhcpOption::TFTPServerName(b"10.0.0.1".to_vec()))
        );
        assert!(
            offer
                .opts()
                .get(OptionCode::ClientMachineIdentifier)
                .is_some(),
            "UUID echoed"
        );
        let ev = out.event.unwrap();
        assert_eq!(ev.uuid, Some([7; 16]));
        assert_eq!(ev.arch, Some(0));
    }

    #[test]
    fn ipxe_client_gets_script_url() {
        let s = settings(Mode::Authoritative);
        let mut l = leases();
        let mut m = pxe(
            request(MessageType::Discover, 0xab),
            Architecture::from(0u16),
        );
        m.opts_mut().insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        let offer = reply(&run(&s, &mut l, &m, Listener::Dhcp).unwrap());
        assert_eq!(
            offer.opts().get(OptionCode::BootfileName),
            Some(&DhcpOption::BootfileName(
                b"http://10.0.0.1:8080/boot.ipxe?mac=02:00:00:00:00:ab".to_vec()
            ))
        );
        // Option 175 alone also marks iPXE.
        let mut m = pxe(
            request(MessageType::Discover, 0xac),
            Architecture::from(0u16),
        );
        m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(175u8),
            vec![19, 1, 1],
        )));
        let offer = reply(&run(&s, &mut l, &m, Listener::Dhcp).unwrap());
        assert!(
            matches!(offer.opts().get(OptionCode::BootfileName), Some(DhcpOption::BootfileName(f)) if f.starts_with(b"http://"))
        );
    }

    #[test]
    fn relayed_discover_uses_the_relay_subnet_and_replies_to_giaddr() {
        let s = settings(Mode::Authoritative);
        let mut l = leases();
        let mut m = request(MessageType::Discover, 1);
        m.set_giaddr(Ipv4Addr::new(10, 9, 0, 1));
        m.set_hops(1);
        let out = run(&s, &mut l, &m, Listener::Dhcp).unwrap();
        let offer = reply(&out);
        assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 9, 0, 100));
        assert_eq!(offer.giaddr(), Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(
            offer.opts().get(OptionCode::Router),
            Some(&DhcpOption::Router(vec![Ipv4Addr::new(10, 9, 0, 1)]))
        );
        assert_eq!(
            out.reply.unwrap().to,
            SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), SERVER_PORT)
        );
        // A relay from a subnet we do not serve gets nothing.
        m.set_giaddr(Ipv4Addr::new(192, 168, 5, 1));
        assert!(run(&s, &mut l, &m, Listener::Dhcp).is_err());
    }

    #[test]
    fn proxy_mode_answers_pxe_only_without_an_address() {
        let s = settings(Mode::Proxy);
        let mut l = leases();
        assert!(
            run(
                &s,
                &mut l,
                &request(MessageType::Discover, 1),
                Listener::Dhcp
            )
            .is_err(),
            "plain client answered in proxy mode"
        );
        let out = run(
            &s,
            &mut l,
            &pxe(request(MessageType::Discover, 1), Architecture::from(0u16)),
            Listener::Dhcp,
        )
        .unwrap();
        let offer = reply(&out);
        assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(offer.opts().get(OptionCode::AddressLeaseTime).is_none());
        assert!(offer.opts().get(OptionCode::BootfileName).is_some());
        assert!(out.record.is_none());
        // The 4011 REQUEST is answered to where it came from.
        let mut req = pxe(request(MessageType::Request, 1), Architecture::from(0u16));
        req.set_ciaddr(Ipv4Addr::new(10, 0, 0, 50));
        let bytes = req.to_vec().unwrap();
        let from = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 50), CLIENT_PORT);
        let out = handle(
            &s,
            &boot(),
            &mut l,
            &decode(&bytes).unwrap(),
            Listener::Proxy,
            from,
            0,
        )
        .unwrap();
        assert_eq!(out.reply.as_ref().unwrap().to, from);
        let ack = reply(&out);
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn decline_quarantines() {
        let s = settings(Mode::Authoritative);
        let mut l = leases();
        let ip = reply(
            &run(
                &s,
                &mut l,
                &request(MessageType::Discover, 1),
                Listener::Dhcp,
            )
            .unwrap(),
        )
        .yiaddr();
        let mut d = request(MessageType::Decline, 1);
        d.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
        d.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
        let out = run(&s, &mut l, &d, Listener::Dhcp).unwrap();
        assert!(matches!(out.record, Some(Record::Decline { .. })));
        let next = reply(
            &run(
                &s,
                &mut l,
                &request(MessageType::Discover, 1),
                Listener::Dhcp,
            )
            .unwrap(),
        )
        .yiaddr();
        assert_ne!(next, ip);
    }

    #[test]
    fn non_ethernet_and_bootp_are_ignored() {
        let s = settings(Mode::Authoritative);
        let mut l = leases();
        let mut m = request(MessageType::Discover, 1);
        m.set_htype(HType::from(6u8));
        assert!(run(&s, &mut l, &m, Listener::Dhcp).is_err());
        let mut bootp = request(MessageType::Discover, 1);
        bootp.opts_mut().remove(OptionCode::MessageType);
        assert!(run(&s, &mut l, &bootp, Listener::Dhcp).is_err());
    }
}
