//! Fuzzes herd's TFTP decoder: any datagram decodes to a packet or an
//! error, never a panic, and whatever decodes re-encodes to something that
//! decodes to the same packet.
#![no_main]

use herd_pxe::tftp::packet::Packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::decode(data) {
        let again = Packet::decode(&packet.encode()).expect("re-encoded packet decodes");
        assert_eq!(again, packet);
    }
});
