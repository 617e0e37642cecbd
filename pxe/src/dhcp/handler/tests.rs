//! Unit tests of `handler`, kept apart so the module reads as code.

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

fn run(s: &Settings, l: &mut Leases, m: &Message, listener: Listener) -> Result<Outcome, Ignored> {
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
