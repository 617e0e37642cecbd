//! TFTP wire format (RFC 1350) with option extensions (RFC 2347/2348/2349/7440).
//!
//! Decoding never panics: every malformed, truncated or oversized datagram
//! becomes a [`PacketError`] naming what was wrong.

use std::fmt;

/// Largest datagram the server accepts from a client. Requests are small;
/// anything bigger is hostile or broken.
pub const MAX_REQUEST_LEN: usize = 1024;

/// Smallest and largest block sizes RFC 2348 allows.
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;
/// RFC 7440 bounds windowsize to 1..=65535.
pub const MAX_WINDOWSIZE: u16 = 65535;
/// RFC 2349 bounds the timeout to 1..=255 seconds.
pub const MAX_TIMEOUT_SECS: u8 = 255;

/// TFTP error codes (RFC 1350 §5, RFC 2347 adds 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    DiskFull = 3,
    IllegalOperation = 4,
    UnknownTransferId = 5,
    FileExists = 6,
    NoSuchUser = 7,
    OptionRefused = 8,
}

impl ErrorCode {
    fn from_u16(code: u16) -> ErrorCode {
        match code {
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTransferId,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionRefused,
            _ => ErrorCode::NotDefined,
        }
    }
}

/// Transfer mode of a request. `mail` is obsolete and refused at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Octet,
    Netascii,
}

/// Options a client asked for, already range-checked. Unknown options are
/// ignored as RFC 2347 requires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestOptions {
    pub blksize: Option<u16>,
    /// In a read request the client sends 0 and expects the file size back.
    pub tsize: Option<u64>,
    pub timeout: Option<u8>,
    pub windowsize: Option<u16>,
}

impl RequestOptions {
    /// Whether the client asked for any option we understand.
    pub fn any(&self) -> bool {
        self.blksize.is_some()
            || self.tsize.is_some()
            || self.timeout.is_some()
            || self.windowsize.is_some()
    }
}

/// A read or write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub filename: String,
    pub mode: Mode,
    pub options: RequestOptions,
}

/// One TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Rrq(Request),
    Wrq(Request),
    Data {
        block: u16,
        data: Vec<u8>,
    },
    Ack {
        block: u16,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    /// Option acknowledgement: the options the server accepted, in order.
    Oack(Vec<(String, String)>),
}

/// Why a datagram could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet of {0} bytes is too short for an opcode")]
    TooShort(usize),
    #[error("packet of {0} bytes is larger than the {MAX_REQUEST_LEN}-byte limit")]
    TooLong(usize),
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("{0} is not terminated by a NUL byte")]
    Unterminated(&'static str),
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("empty filename")]
    EmptyFilename,
    #[error("unsupported transfer mode {0:?}")]
    BadMode(String),
    #[error("option {0:?} has no value")]
    OptionWithoutValue(String),
    #[error("option {name:?} has invalid value {value:?}")]
    BadOptionValue { name: String, value: String },
    #[error("{0} packet has the wrong length")]
    BadLength(&'static str),
}

const OP_RRQ: u16 = 1;
const OP_WRQ: u16 = 2;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;

/// Splits `buf` into NUL-terminated strings; a trailing part without NUL is an error.
fn nul_strings<'a>(mut buf: &'a [u8], what: &'static str) -> Result<Vec<&'a str>, PacketError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let end = buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(PacketError::Unterminated(what))?;
        out.push(std::str::from_utf8(&buf[..end]).map_err(|_| PacketError::NotUtf8(what))?);
        buf = &buf[end + 1..];
    }
    Ok(out)
}

fn parse_request(body: &[u8]) -> Result<Request, PacketError> {
    let parts = nul_strings(body, "request field")?;
    let mut it = parts.into_iter();
    let filename = it.next().ok_or(PacketError::Unterminated("filename"))?;
    if filename.is_empty() {
        return Err(PacketError::EmptyFilename);
    }
    let mode = it.next().ok_or(PacketError::Unterminated("mode"))?;
    let mode = match mode.to_ascii_lowercase().as_str() {
        "octet" => Mode::Octet,
        "netascii" => Mode::Netascii,
        _ => return Err(PacketError::BadMode(mode.to_owned())),
    };
    let mut options = RequestOptions::default();
    while let Some(name) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| PacketError::OptionWithoutValue(name.to_owned()))?;
        let bad = || PacketError::BadOptionValue {
            name: name.to_owned(),
            value: value.to_owned(),
        };
        match name.to_ascii_lowercase().as_str() {
            "blksize" => {
                let v: u32 = value.parse().map_err(|_| bad())?;
                if v < u32::from(MIN_BLKSIZE) {
                    return Err(bad());
                }
                // RFC 2348: a larger request is answered with the largest we support.
                options.blksize = Some(v.min(u32::from(MAX_BLKSIZE)) as u16);
            }
            "tsize" => options.tsize = Some(value.parse().map_err(|_| bad())?),
            "timeout" => {
                let v: u8 = value.parse().map_err(|_| bad())?;
                if v == 0 {
                    return Err(bad());
                }
                options.timeout = Some(v);
            }
            "windowsize" => {
                let v: u16 = value.parse().map_err(|_| bad())?;
                if v == 0 {
                    return Err(bad());
                }
                options.windowsize = Some(v);
            }
            _ => {} // RFC 2347: unknown options are silently ignored.
        }
    }
    Ok(Request {
        filename: filename.to_owned(),
        mode,
        options,
    })
}

impl Packet {
    /// Decodes one datagram.
    pub fn decode(buf: &[u8]) -> Result<Packet, PacketError> {
        if buf.len() < 2 {
            return Err(PacketError::TooShort(buf.len()));
        }
        let opcode = u16::from_be_bytes([buf[0], buf[1]]);
        let body = &buf[2..];
        // Requests are small; a huge one is hostile or broken.
        if buf.len() > MAX_REQUEST_LEN && matches!(opcode, OP_RRQ | OP_WRQ) {
            return Err(PacketError::TooLong(buf.len()));
        }
        match opcode {
            OP_RRQ => Ok(Packet::Rrq(parse_request(body)?)),
            OP_WRQ => Ok(Packet::Wrq(parse_request(body)?)),
            OP_DATA => {
                if body.len() < 2 {
                    return Err(PacketError::BadLength("DATA"));
                }
                Ok(Packet::Data {
                    block: u16::from_be_bytes([body[0], body[1]]),
                    data: body[2..].to_vec(),
                })
            }
            OP_ACK => {
                if body.len() != 2 {
                    return Err(PacketError::BadLength("ACK"));
                }
                Ok(Packet::Ack {
                    block: u16::from_be_bytes([body[0], body[1]]),
                })
            }
            OP_ERROR => {
                if body.len() < 2 {
                    return Err(PacketError::BadLength("ERROR"));
                }
                let code = ErrorCode::from_u16(u16::from_be_bytes([body[0], body[1]]));
                // Some clients omit the message's NUL; accept it, it is only logged.
                let msg = &body[2..];
                let msg = msg.strip_suffix(&[0]).unwrap_or(msg);
                Ok(Packet::Error {
                    code,
                    message: String::from_utf8_lossy(msg).into_owned(),
                })
            }
            OP_OACK => {
                let parts = nul_strings(body, "option")?;
                if parts.len() % 2 != 0 {
                    return Err(PacketError::OptionWithoutValue(
                        parts.last().copied().unwrap_or_default().to_owned(),
                    ));
                }
                Ok(Packet::Oack(
                    parts
                        .chunks(2)
                        .map(|kv| (kv[0].to_owned(), kv[1].to_owned()))
                        .collect(),
                ))
            }
            other => Err(PacketError::UnknownOpcode(other)),
        }
    }

    /// Encodes the packet into `out` (cleared first).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        let put_str = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        };
        match self {
            Packet::Rrq(r) | Packet::Wrq(r) => {
                let op = if matches!(self, Packet::Rrq(_)) {
                    OP_RRQ
                } else {
                    OP_WRQ
                };
                out.extend_from_slice(&op.to_be_bytes());
                put_str(out, &r.filename);
                put_str(
                    out,
                    match r.mode {
                        Mode::Octet => "octet",
                        Mode::Netascii => "netascii",
                    },
                );
                let o = &r.options;
                if let Some(v) = o.blksize {
                    put_str(out, "blksize");
                    put_str(out, &v.to_string());
                }
                if let Some(v) = o.tsize {
                    put_str(out, "tsize");
                    put_str(out, &v.to_string());
                }
                if let Some(v) = o.timeout {
                    put_str(out, "timeout");
                    put_str(out, &v.to_string());
                }
                if let Some(v) = o.windowsize {
                    put_str(out, "windowsize");
                    put_str(out, &v.to_string());
                }
            }
            Packet::Data { block, data } => encode_data(out, *block, data),
            Packet::Ack { block } => {
                out.extend_from_slice(&OP_ACK.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Packet::Error { code, message } => {
                out.extend_from_slice(&OP_ERROR.to_be_bytes());
                out.extend_from_slice(&(*code as u16).to_be_bytes());
                put_str(out, message);
            }
            Packet::Oack(opts) => {
                out.extend_from_slice(&OP_OACK.to_be_bytes());
                for (k, v) in opts {
                    put_str(out, k);
                    put_str(out, v);
                }
            }
        }
    }

    /// Encodes the packet into a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// Writes a DATA packet header and payload into `out` (cleared first),
/// without building a [`Packet`] (the hot path of a transfer).
pub fn encode_data(out: &mut Vec<u8>, block: u16, data: &[u8]) {
    out.clear();
    out.extend_from_slice(&OP_DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out.extend_from_slice(data);
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Octet => "octet",
            Mode::Netascii => "netascii",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_rrq_with_options_case_insensitively() {
        let raw = b"\x00\x01boot/undionly.kpxe\0OCTET\0BlkSize\x001468\0tsize\x000\0windowsize\x008\0x-unknown\0y\0";
        let p = Packet::decode(raw).unwrap();
        let Packet::Rrq(r) = p else { panic!("{p:?}") };
        assert_eq!(r.filename, "boot/undionly.kpxe");
        assert_eq!(r.mode, Mode::Octet);
        assert_eq!(r.options.blksize, Some(1468));
        assert_eq!(r.options.tsize, Some(0));
        assert_eq!(r.options.windowsize, Some(8));
        assert_eq!(r.options.timeout, None);
    }

    #[test]
    fn oversized_blksize_is_clamped_and_tiny_one_rejected() {
        let p = Packet::decode(b"\x00\x01f\0octet\0blksize\x00100000\0").unwrap();
        let Packet::Rrq(r) = p else { panic!() };
        assert_eq!(r.options.blksize, Some(MAX_BLKSIZE));
        assert!(matches!(
            Packet::decode(b"\x00\x01f\0octet\0blksize\x007\0"),
            Err(PacketError::BadOptionValue { .. })
        ));
    }

    #[test]
    fn truncated_and_bogus_packets_are_errors() {
        assert_eq!(Packet::decode(b""), Err(PacketError::TooShort(0)));
        assert_eq!(Packet::decode(b"\x00"), Err(PacketError::TooShort(1)));
        assert_eq!(
            Packet::decode(b"\x00\x09"),
            Err(PacketError::UnknownOpcode(9))
        );
        assert!(matches!(
            Packet::decode(b"\x00\x01file"),
            Err(PacketError::Unterminated(_))
        ));
        assert!(matches!(
            Packet::decode(b"\x00\x01file\0"),
            Err(PacketError::Unterminated("mode"))
        ));
        assert!(matches!(
            Packet::decode(b"\x00\x01file\0mail\0"),
            Err(PacketError::BadMode(_))
        ));
        assert!(matches!(
            Packet::decode(b"\x00\x01\0octet\0"),
            Err(PacketError::EmptyFilename)
        ));
        assert!(matches!(
            Packet::decode(b"\x00\x01f\0octet\0blksize\0"),
            Err(PacketError::OptionWithoutValue(_))
        ));
        assert!(matches!(
            Packet::decode(b"\x00\x04\x00"),
            Err(PacketError::BadLength("ACK"))
        ));
        let mut big = b"\x00\x01".to_vec();
        big.resize(MAX_REQUEST_LEN + 1, b'a');
        assert!(matches!(Packet::decode(&big), Err(PacketError::TooLong(_))));
    }

    fn request() -> impl Strategy<Value = Request> {
        (
            "[a-zA-Z0-9._/-]{1,64}",
            prop_oneof![Just(Mode::Octet), Just(Mode::Netascii)],
            proptest::option::of(MIN_BLKSIZE..=MAX_BLKSIZE),
            proptest::option::of(any::<u64>()),
            proptest::option::of(1u8..=255),
            proptest::option::of(1u16..=65535),
        )
            .prop_map(
                |(filename, mode, blksize, tsize, timeout, windowsize)| Request {
                    filename,
                    mode,
                    options: RequestOptions {
                        blksize,
                        tsize,
                        timeout,
                        windowsize,
                    },
                },
            )
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let _ = Packet::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_request_like_input(
            op in 0u16..8,
            fields in proptest::collection::vec("[a-z0-9]{0,12}", 0..10),
            trailing_nul in any::<bool>(),
        ) {
            let mut raw = op.to_be_bytes().to_vec();
            raw.extend(fields.join("\0").as_bytes());
            if trailing_nul { raw.push(0); }
            let _ = Packet::decode(&raw);
        }

        #[test]
        fn whatever_decodes_re_encodes_to_the_same_packet(
            op in 1u16..=6,
            body in proptest::collection::vec(any::<u8>(), 0..700),
        ) {
            let mut raw = op.to_be_bytes().to_vec();
            raw.extend(body);
            if let Ok(p) = Packet::decode(&raw) {
                prop_assert_eq!(Packet::decode(&p.encode()).unwrap(), p);
            }
        }

        #[test]
        fn requests_round_trip(r in request(), write in any::<bool>()) {
            let p = if write { Packet::Wrq(r) } else { Packet::Rrq(r) };
            prop_assert_eq!(Packet::decode(&p.encode()).unwrap(), p);
        }

        #[test]
        fn acks_data_and_errors_round_trip(block in any::<u16>(), data in proptest::collection::vec(any::<u8>(), 0..600), msg in "[ -~]{0,40}") {
            let ack = Packet::Ack { block };
            prop_assert_eq!(Packet::decode(&ack.encode()).unwrap(), ack);
            let d = Packet::Data { block, data };
            prop_assert_eq!(Packet::decode(&d.encode()).unwrap(), d);
            let e = Packet::Error { code: ErrorCode::AccessViolation, message: msg };
            prop_assert_eq!(Packet::decode(&e.encode()).unwrap(), e);
        }
    }
}
