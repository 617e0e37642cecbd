//! The whole request path (check, decode, DHCP/proxy logic, reply encoding) never panics,
//! and every reply herd builds passes its own pre-check.
#![no_main]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use herd_pxe::dhcp::handler::{self, Listener, Settings};
use herd_pxe::dhcp::leases::Leases;
use herd_pxe::dhcp::{BootConfig, Mode, Pool, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = handler::decode(data) else {
        return;
    };
    let server = Ipv4Addr::new(10, 0, 0, 1);
    let pool = Pool::new(
        "10.0.0.0/24".parse().unwrap(),
        Ipv4Addr::new(10, 0, 0, 10),
        Ipv4Addr::new(10, 0, 0, 20),
    )
    .unwrap();
    let mut leases = Leases::new(vec![pool], HashMap::new());
    let boot = BootConfig::new(server, "http://10.0.0.1/boot.ipxe?mac=${mac}");
    for (mode, listener) in [
        (Mode::Authoritative, Listener::Dhcp),
        (Mode::Proxy, Listener::Dhcp),
        (Mode::Proxy, Listener::Proxy),
    ] {
        let settings = Settings {
            server_ip: server,
            mode,
            lease_time: Duration::from_secs(600),
            dns: vec![server],
            domain: None,
            decline_quarantine: Duration::from_secs(60),
        };
        let from = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 68);
        if let Ok(out) = handler::handle(&settings, &boot, &mut leases, &msg, listener, from, 1000)
        {
            if let Some(reply) = out.reply {
                validate::check(&reply.bytes).expect("herd's own reply passes its check");
            }
        }
    }
});
