//! Whatever herd's pre-check accepts, dhcproto must decode without panicking.
//! Run: `cargo +nightly fuzz run dhcp_decode` (or `cargo fuzz run -s none dhcp_decode` on stable).
#![no_main]

use dhcproto::{Decodable, Decoder, v4::Message};
use herd_pxe::dhcp::validate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if validate::check(data).is_ok() {
        // No catch_unwind here: a panic is the finding.
        let _ = Message::decode(&mut Decoder::new(data));
    }
});
