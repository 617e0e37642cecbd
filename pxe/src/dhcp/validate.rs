//! Structural check of a raw DHCPv4 packet before it reaches dhcproto's decoder.
//!
//! dhcproto 0.15 trusts option lengths: fixed-size options are read with a
//! `debug_assert!` on their length (a panic in debug builds, a misparse in
//! release), `chaddr()` slices by `hlen` without a bound, and two decoders
//! subtract from the length without checking it. Every packet goes through
//! [`check`] first, which walks the option TLVs itself and rejects anything
//! that could reach one of those paths. `handler::decode` additionally
//! wraps the decoder in `catch_unwind` as a second line of defence.
//!
//! The check is tested in both build modes (in release dhcproto would not
//! panic but misread): `cargo test -p herd-pxe --lib dhcp::validate` and
//! `cargo test --release -p herd-pxe --lib dhcp::validate`.

/// Smallest valid BOOTP/DHCP message: fixed header (236) + magic cookie (4).
pub const MIN_LEN: usize = 240;
/// Largest message accepted. Ethernet-sized (1500 - 28) plus slack for
/// jumbo-frame clients; anything bigger is not a DHCP client we serve.
pub const MAX_LEN: usize = 2048;
/// RFC 2131 magic cookie.
pub const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// Why a packet was dropped before decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("{0} bytes is shorter than the 240-byte DHCP header")]
    TooShort(usize),
    #[error("{0} bytes is larger than the {MAX_LEN}-byte limit")]
    TooLong(usize),
    #[error("op code {0} is neither BOOTREQUEST nor BOOTREPLY")]
    Op(u8),
    #[error("hardware address length {0} is over 16")]
    HardwareLength(u8),
    #[error("magic cookie {0:02x?} is not 63:82:53:63")]
    Magic([u8; 4]),
    #[error("option {code} at offset {offset} claims {len} bytes but only {left} remain")]
    Truncated {
        code: u8,
        offset: usize,
        len: usize,
        left: usize,
    },
    #[error("option {code} has length {len}, expected {expected}")]
    Length {
        code: u8,
        len: usize,
        expected: &'static str,
    },
    #[error("no DHCP message type (option 53) and not a BOOTP request")]
    NoMessageType,
}

/// Allowed total length of one option (after RFC 3396 concatenation of
/// consecutive same-code options, as dhcproto does it).
enum Rule {
    Exact(usize),
    AtLeast(usize),
    MultipleOf(usize),
}

/// The options whose dhcproto decoder reads a fixed amount or subtracts
/// from the length. Options not listed are read as byte strings of any length.
fn rule(code: u8) -> Option<Rule> {
    use Rule::*;
    Some(match code {
        // one IPv4 address or a 32-bit number
        1 | 2 | 16 | 24 | 28 | 32 | 35 | 38 | 50 | 51 | 54 | 58 | 59 | 91 | 108 | 118 | 150
        | 152 | 153 | 154 | 155 => Exact(4),
        // 16-bit numbers
        13 | 22 | 26 | 57 => Exact(2),
        // one byte: flags, TTLs, message type, overload, node type, states
        19 | 20 | 23 | 27 | 29 | 30 | 31 | 34 | 36 | 37 | 39 | 46 | 52 | 53 | 116 | 156 | 157 => {
            Exact(1)
        }
        // rapid commit carries no data
        80 => Exact(0),
        // client network interface identifier: type, major, minor
        94 => Exact(3),
        // client FQDN: flags, rcode1, rcode2, name
        81 => AtLeast(3),
        // bulk leasequery status: code + message
        151 => AtLeast(1),
        // client system architecture: a list of 16-bit types, at least one
        93 => MultipleOf(2),
        // lists of IPv4 addresses
        3..=11 | 41 | 42 | 44 | 45 | 48 | 49 | 65 | 68..=76 | 89 | 92 | 146 => MultipleOf(4),
        // pairs of IPv4 addresses
        21 | 33 => MultipleOf(8),
        _ => return None,
    })
}

/// Checks `packet` well enough that dhcproto's decoder cannot panic or
/// misread a length on it. Returns the DHCP message type (option 53) if present.
pub fn check(packet: &[u8]) -> Result<Option<u8>, Malformed> {
    if packet.len() < MIN_LEN {
        return Err(Malformed::TooShort(packet.len()));
    }
    if packet.len() > MAX_LEN {
        return Err(Malformed::TooLong(packet.len()));
    }
    if !matches!(packet[0], 1 | 2) {
        return Err(Malformed::Op(packet[0]));
    }
    if packet[2] > 16 {
        return Err(Malformed::HardwareLength(packet[2]));
    }
    let magic = [packet[236], packet[237], packet[238], packet[239]];
    if magic != MAGIC {
        return Err(Malformed::Magic(magic));
    }

    let mut message_type = None;
    let mut i = MIN_LEN;
    // (code, accumulated length) of the run of consecutive same-code options.
    let mut run: Option<(u8, usize)> = None;
    while i < packet.len() {
        let code = packet[i];
        match code {
            0 => {
                i += 1;
                close_run(run.take())?;
                continue;
            }
            255 => break,
            _ => {}
        }
        if i + 1 >= packet.len() {
            return Err(Malformed::Truncated {
                code,
                offset: i,
                len: 0,
                left: 0,
            });
        }
        let len = usize::from(packet[i + 1]);
        let left = packet.len() - i - 2;
        if len > left {
            return Err(Malformed::Truncated {
                code,
                offset: i,
                len,
                left,
            });
        }
        if code == 53 && len == 1 {
            message_type = Some(packet[i + 2]);
        }
        run = match run {
            Some((prev, total)) if prev == code => Some((code, total + len)),
            other => {
                close_run(other)?;
                Some((code, len))
            }
        };
        i += 2 + len;
    }
    close_run(run)?;
    if message_type.is_none() && packet[0] != 1 {
        return Err(Malformed::NoMessageType);
    }
    Ok(message_type)
}

fn close_run(run: Option<(u8, usize)>) -> Result<(), Malformed> {
    let Some((code, len)) = run else {
        return Ok(());
    };
    let (ok, expected) = match rule(code) {
        None => (true, ""),
        Some(Rule::Exact(n)) => (len == n, EXACT[n]),
        Some(Rule::AtLeast(n)) => (len >= n, AT_LEAST[n]),
        Some(Rule::MultipleOf(n)) => (len >= n && len % n == 0, MULTIPLE[n / 2 - 1]),
    };
    if ok {
        Ok(())
    } else {
        Err(Malformed::Length {
            code,
            len,
            expected,
        })
    }
}

const EXACT: [&str; 5] = [
    "exactly 0",
    "exactly 1",
    "exactly 2",
    "exactly 3",
    "exactly 4",
];
const AT_LEAST: [&str; 4] = ["at least 0", "at least 1", "at least 2", "at least 3"];
const MULTIPLE: [&str; 4] = [
    "a non-zero multiple of 2",
    "a non-zero multiple of 4",
    "a non-zero multiple of 6",
    "a non-zero multiple of 8",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(options: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 236];
        p[0] = 1;
        p[1] = 1;
        p[2] = 6;
        p.extend_from_slice(&MAGIC);
        p.extend_from_slice(options);
        p
    }

    #[test]
    fn accepts_a_plain_discover() {
        let p = packet(&[53, 1, 1, 55, 3, 1, 3, 6, 93, 2, 0, 7, 255]);
        assert_eq!(check(&p), Ok(Some(1)));
    }

    /// The shared packet that makes dhcproto 0.15 panic (debug) or misparse (release).
    fn panic_packet_with_valid_header() -> Vec<u8> {
        let mut fixed = include_bytes!("../../tests/data/dhcp-decoder-panic.bin").to_vec();
        fixed[0] = 1;
        fixed[236..240].copy_from_slice(&MAGIC);
        fixed
    }

    #[test]
    fn rejects_the_shared_decoder_panic_packet() {
        let raw = include_bytes!("../../tests/data/dhcp-decoder-panic.bin");
        assert!(check(raw).is_err());
        // With a valid op code and cookie it still dies on the zero-length option 153.
        assert_eq!(
            check(&panic_packet_with_valid_header()),
            Err(Malformed::Length {
                code: 153,
                len: 0,
                expected: "exactly 4"
            })
        );
    }

    /// Documents why the check exists: dhcproto alone panics on this input in
    /// debug builds. If a dhcproto upgrade fixes that, this test says so.
    #[cfg(debug_assertions)]
    #[test]
    fn dhcproto_alone_panics_on_it_in_debug_builds() {
        use dhcproto::{Decodable, Decoder, v4::Message};
        let fixed = panic_packet_with_valid_header();
        let result = std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(&fixed)));
        assert!(
            result.is_err(),
            "dhcproto no longer panics: the pre-check may be relaxed"
        );
    }

    #[test]
    fn rejects_bad_lengths() {
        assert!(matches!(
            check(&packet(&[53, 2, 1, 1])),
            Err(Malformed::Length { code: 53, .. })
        ));
        assert!(matches!(
            check(&packet(&[93, 3, 0, 0, 7])),
            Err(Malformed::Length { code: 93, .. })
        ));
        assert!(matches!(
            check(&packet(&[53, 1, 1, 80, 1, 0])),
            Err(Malformed::Length { code: 80, .. })
        ));
        assert!(matches!(
            check(&packet(&[53, 1, 1, 12, 40, 1])),
            Err(Malformed::Truncated { code: 12, .. })
        ));
        assert!(matches!(
            check(&packet(&[53, 1, 1, 12])),
            Err(Malformed::Truncated { code: 12, .. })
        ));
        assert!(matches!(
            check(&packet(&[53, 1, 1, 81, 1, 0])),
            Err(Malformed::Length { code: 81, .. })
        ));
        assert!(matches!(
            check(&packet(&[53, 1, 1, 151, 0])),
            Err(Malformed::Length { code: 151, .. })
        ));
    }

    #[test]
    fn concatenated_options_are_checked_as_one() {
        // Two halves of one 4-byte option 50 (RFC 3396) are fine...
        assert_eq!(
            check(&packet(&[53, 1, 3, 50, 2, 10, 0, 50, 2, 0, 9, 255])),
            Ok(Some(3))
        );
        // ...three bytes in total are not.
        assert!(check(&packet(&[53, 1, 3, 50, 2, 10, 0, 50, 1, 0, 255])).is_err());
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(check(&[1; 100]), Err(Malformed::TooShort(100)));
        assert!(matches!(
            check(&vec![1; 4000]),
            Err(Malformed::TooLong(4000))
        ));
        let mut p = packet(&[53, 1, 1, 255]);
        p[2] = 17;
        assert_eq!(check(&p), Err(Malformed::HardwareLength(17)));
        p[2] = 6;
        p[0] = 7;
        assert_eq!(check(&p), Err(Malformed::Op(7)));
    }

    #[test]
    fn options_after_end_are_ignored() {
        assert_eq!(check(&packet(&[53, 1, 1, 255, 53, 9])), Ok(Some(1)));
    }
}
