//! Property-based fuzzing of the DHCP decoder path on stable Rust (the
//! `cargo fuzz` targets in `fuzz/` do the same with coverage guidance).
//!
//! The property that matters: whatever `validate::check` accepts, dhcproto
//! decodes without panicking — tested *without* the `catch_unwind` safety
//! net, and in debug builds, where dhcproto's `debug_assert!`s are live.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use dhcproto::{Decodable, Decoder, v4::Message};
use herd_pxe::dhcp::handler::{self, Listener, Settings};
use herd_pxe::dhcp::leases::Leases;
use herd_pxe::dhcp::{BootConfig, Mode, Pool, validate};
use proptest::prelude::*;

fn header(op: u8, hlen: u8) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = op;
    p[1] = 1;
    p[2] = hlen;
    p.extend_from_slice(&validate::MAGIC);
    p
}

/// Options as (code, declared length, data) with lengths that may lie.
fn options() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        (
            any::<u8>(),
            0u8..=20,
            prop::collection::vec(any::<u8>(), 0..24),
            any::<bool>(),
        ),
        0..24,
    )
    .prop_map(|opts| {
        let mut out = Vec::new();
        for (code, len, data, honest) in opts {
            out.push(code);
            if code == 0 || code == 255 {
                continue;
            }
            let len = if honest {
                data.len().min(255) as u8
            } else {
                len
            };
            out.push(len);
            out.extend_from_slice(&data[..data.len().min(usize::from(len))]);
        }
        out
    })
}

/// A message type option first, so most cases get past the header checks.
fn packet() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(1u8), Just(2u8), any::<u8>()],
        prop_oneof![Just(6u8), any::<u8>()],
        1u8..=8,
        options(),
        any::<bool>(),
    )
        .prop_map(|(op, hlen, msg_type, opts, with_type)| {
            let mut p = header(op, hlen);
            if with_type {
                p.extend_from_slice(&[53, 1, msg_type]);
            }
            p.extend_from_slice(&opts);
            p
        })
}

fn handle_all(bytes: &[u8]) {
    let settings = Settings {
        server_ip: Ipv4Addr::new(10, 0, 0, 1),
        mode: Mode::Authoritative,
        lease_time: Duration::from_secs(600),
        dns: vec![],
        domain: None,
        decline_quarantine: Duration::from_secs(60),
    };
    let pool = Pool::new(
        "10.0.0.0/24".parse().unwrap(),
        Ipv4Addr::new(10, 0, 0, 10),
        Ipv4Addr::new(10, 0, 0, 20),
    )
    .unwrap();
    let mut leases = Leases::new(vec![pool], HashMap::new());
    let boot = BootConfig::new(settings.server_ip, "http://10.0.0.1/boot.ipxe");
    if let Ok(msg) = handler::decode(bytes) {
        for (mode, listener) in [
            (Mode::Authoritative, Listener::Dhcp),
            (Mode::Proxy, Listener::Dhcp),
            (Mode::Proxy, Listener::Proxy),
        ] {
            let s = Settings {
                mode,
                ..settings.clone()
            };
            let from = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 68);
            if let Ok(out) = handler::handle(&s, &boot, &mut leases, &msg, listener, from, 100)
                && let Some(reply) = out.reply
            {
                // Whatever we send must itself pass our own check.
                validate::check(&reply.bytes).expect("our reply is well-formed");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn accepted_packets_never_panic_dhcproto(bytes in packet()) {
        if validate::check(&bytes).is_ok() {
            let result = std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(&bytes)));
            prop_assert!(result.is_ok(), "check accepted a packet dhcproto panics on: {:02x?}", bytes);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        let _ = validate::check(&bytes);
        handle_all(&bytes);
    }

    #[test]
    fn structured_packets_handle_without_panic(bytes in packet()) {
        handle_all(&bytes);
    }
}

#[test]
fn shared_decoder_panic_packet_is_dropped() {
    let raw = include_bytes!("data/dhcp-decoder-panic.bin");
    assert!(handler::decode(raw).is_err());
    let mut fixed = raw.to_vec();
    fixed[0] = 1;
    fixed[236..240].copy_from_slice(&validate::MAGIC);
    assert!(matches!(
        handler::decode(&fixed),
        Err(handler::Ignored::Malformed(_))
    ));
}
