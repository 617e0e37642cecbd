//! SPDY/3.1 framing, as far as Kubernetes' remote-command streams use it
//! (kubectl before 1.30 runs `exec` over SPDY): control and data frames,
//! and header blocks — zlib with SPDY's preset dictionary, one compression
//! context per direction for the whole connection.
//!
//! Reading inflates the peer's header blocks; writing sends ours as stored
//! (uncompressed) deflate blocks of one zlib stream, which every SPDY
//! reader inflates without needing the dictionary. Flow control
//! (`WINDOW_UPDATE`, `SETTINGS`) is read and ignored, as the Go SPDY
//! library kubectl uses does.

use bytes::Bytes;
use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The zlib dictionary of SPDY/3's header compression (the spec's bytes).
const DICTIONARY: &[u8] = include_bytes!("spdy_dictionary.bin");

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;

/// The largest header block taken, inflated: a remote-command stream's
/// headers are a few dozen bytes.
const MAX_HEADERS: usize = 64 * 1024;
/// The largest control frame read.
const MAX_CONTROL: usize = 64 * 1024;

/// One frame from the peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A new stream and its headers (names lowercase, as SPDY sends them).
    SynStream {
        stream: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Ping(u32),
    GoAway,
    /// A frame this side has no use for (SETTINGS, WINDOW_UPDATE, HEADERS, SYN_REPLY).
    Ignored(u16),
}

/// What made a SPDY connection unreadable.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("reading the SPDY connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("SPDY version {0} is not spoken (only 3)")]
    Version(u16),
    #[error("a SPDY control frame of {0} bytes, over the {MAX_CONTROL} taken")]
    TooLarge(usize),
    #[error("a malformed SPDY frame: {0}")]
    Malformed(&'static str),
    #[error("a SPDY header block does not inflate: {0}")]
    Inflate(String),
}

/// Reads frames, keeping the connection's header decompression context.
pub struct Reader {
    inflate: Decompress,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            inflate: Decompress::new(true),
        }
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Reader {
    /// The next frame, or `None` when the peer closed the connection
    /// between frames.
    pub async fn read<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> Result<Option<Frame>, SpdyError> {
        let mut head = [0u8; 8];
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let flags = head[4];
        let length = (be32(&head[4..8]) & 0x00ff_ffff) as usize;
        if head[0] & 0x80 == 0 {
            let mut data = vec![0u8; length];
            r.read_exact(&mut data).await?;
            return Ok(Some(Frame::Data {
                stream: be32(&head[0..4]) & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                data: data.into(),
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        if length > MAX_CONTROL {
            return Err(SpdyError::TooLarge(length));
        }
        let mut body = vec![0u8; length];
        r.read_exact(&mut body).await?;
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let short = |n: usize| {
            if body.len() < n {
                Err(SpdyError::Malformed(
                    "a control frame shorter than its fields",
                ))
            } else {
                Ok(())
            }
        };
        Ok(Some(match kind {
            SYN_STREAM => {
                short(10)?;
                Frame::SynStream {
                    stream: be32(&body[0..4]) & 0x7fff_ffff,
                    fin: flags & FLAG_FIN != 0,
                    headers: self.headers(&body[10..])?,
                }
            }
            RST_STREAM => {
                short(8)?;
                Frame::RstStream {
                    stream: be32(&body[0..4]) & 0x7fff_ffff,
                    status: be32(&body[4..8]),
                }
            }
            PING => {
                short(4)?;
                Frame::Ping(be32(&body[0..4]))
            }
            GOAWAY => Frame::GoAway,
            other => {
                // A SYN_REPLY or HEADERS still advances the shared
                // decompression context.
                if (other == SYN_REPLY || other == 8) && body.len() > 4 {
                    self.headers(&body[4..])?;
                }
                Frame::Ignored(other)
            }
        }))
    }

    /// Inflates one header block (continuing the connection's zlib
    /// stream) and parses its name/value pairs.
    fn headers(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let mut out = Vec::with_capacity(256);
        let mut input = block;
        loop {
            out.reserve(1024);
            let before = self.inflate.total_in();
            let status = match self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(s) => s,
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| SpdyError::Inflate(e.to_string()))?;
                    Status::Ok
                }
                Err(e) => return Err(SpdyError::Inflate(e.to_string())),
            };
            input = &input[(self.inflate.total_in() - before) as usize..];
            if out.len() > MAX_HEADERS {
                return Err(SpdyError::Inflate(format!(
                    "a header block over {MAX_HEADERS} bytes"
                )));
            }
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if status == Status::StreamEnd {
                break;
            }
        }
        parse_pairs(&out)
    }
}

fn parse_pairs(block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        let s = block
            .get(at..at + n)
            .ok_or(SpdyError::Malformed("a header block shorter than it says"))?;
        at += n;
        Ok(s)
    };
    let count = be32(take(4)?);
    let mut pairs = Vec::new();
    for _ in 0..count {
        let n = be32(take(4)?) as usize;
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = be32(take(4)?) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        // A NUL separates the values of a repeated header.
        for v in value.split('\0') {
            pairs.push((name.clone(), v.to_owned()));
        }
    }
    Ok(pairs)
}

/// An uncompressed header block: the pair count, then each name and
/// value with its length.
fn encode_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut raw = (pairs.len() as u32).to_be_bytes().to_vec();
    for (k, v) in pairs {
        for s in [k, v] {
            raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
            raw.extend_from_slice(s.as_bytes());
        }
    }
    raw
}

/// Builds frames to send, keeping the connection's header compression
/// context.
#[derive(Default)]
pub struct Writer {
    started: bool,
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + body.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.extend_from_slice(&((u32::from(flags) << 24) | body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

impl Writer {
    /// The reply accepting `stream`, with no headers.
    pub fn syn_reply(&mut self, stream: u32) -> Vec<u8> {
        let mut body = stream.to_be_bytes().to_vec();
        body.extend_from_slice(&self.header_block(&[]));
        control(SYN_REPLY, 0, &body)
    }

    /// A header block as the next stored deflate block of this side's
    /// zlib stream (its zlib header first, without a dictionary).
    fn header_block(&mut self, pairs: &[(&str, &str)]) -> Vec<u8> {
        let raw = encode_pairs(pairs);
        let mut out = Vec::with_capacity(raw.len() + 12);
        if !self.started {
            // Deflate, 32 KiB window, no preset dictionary; 0x7801 % 31 == 0.
            out.extend_from_slice(&[0x78, 0x01]);
            self.started = true;
        }
        let len = raw.len() as u16;
        out.push(0x00); // not final, stored
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(&raw);
        // An empty stored block, as a sync flush ends with: Go's inflater
        // hands a stored block's bytes over only when the next block
        // begins, and reading past this frame for it would break the
        // stream for every later frame.
        out.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
        out
    }
}

/// A data frame on `stream`; `fin` half-closes it.
pub fn data(stream: u32, fin: bool, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + data.len());
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    let flags = if fin { FLAG_FIN } else { 0 };
    f.extend_from_slice(&((u32::from(flags) << 24) | data.len() as u32).to_be_bytes());
    f.extend_from_slice(data);
    f
}

/// The answer to the peer's ping `id`.
pub fn ping(id: u32) -> Vec<u8> {
    control(PING, 0, &id.to_be_bytes())
}

/// "This side is done": the last stream it took, status OK.
pub fn goaway(last_stream: u32) -> Vec<u8> {
    let mut body = last_stream.to_be_bytes().to_vec();
    body.extend_from_slice(&0u32.to_be_bytes());
    control(GOAWAY, 0, &body)
}

/// The largest data frame sent: Docker's output is cut to fit.
pub const MAX_DATA: usize = 32 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    /// A SYN_STREAM the way Go's SPDY framer writes one: the header block
    /// compressed with the dictionary, sync-flushed, the zlib stream
    /// shared by the frames that follow.
    fn go_syn_stream(z: &mut Compress, stream: u32, pairs: &[(&str, &str)]) -> Vec<u8> {
        let raw = encode_pairs(pairs);
        let mut block = Vec::with_capacity(raw.len() + 64);
        z.compress_vec(&raw, &mut block, FlushCompress::Sync)
            .unwrap();
        let mut body = stream.to_be_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        body.extend_from_slice(&block);
        control(SYN_STREAM, 0, &body)
    }

    #[tokio::test]
    async fn frames_from_a_go_style_peer_parse_with_the_shared_dictionary_context() {
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(DICTIONARY).unwrap();
        let mut wire = go_syn_stream(&mut z, 1, &[("streamtype", "error")]);
        wire.extend(go_syn_stream(&mut z, 3, &[("streamtype", "stdout")]));
        wire.extend(data(3, true, b"hi"));
        wire.extend(ping(7));
        wire.extend(goaway(0));
        let mut r = Reader::default();
        let mut s = &wire[..];
        assert_eq!(
            r.read(&mut s).await.unwrap(),
            Some(Frame::SynStream {
                stream: 1,
                fin: false,
                headers: vec![("streamtype".into(), "error".into())]
            })
        );
        let Some(Frame::SynStream {
            stream: 3, headers, ..
        }) = r.read(&mut s).await.unwrap()
        else {
            panic!("a second stream")
        };
        assert_eq!(headers, [("streamtype".to_owned(), "stdout".to_owned())]);
        assert_eq!(
            r.read(&mut s).await.unwrap(),
            Some(Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::from_static(b"hi")
            })
        );
        assert_eq!(r.read(&mut s).await.unwrap(), Some(Frame::Ping(7)));
        assert_eq!(r.read(&mut s).await.unwrap(), Some(Frame::GoAway));
        assert_eq!(r.read(&mut s).await.unwrap(), None);
    }

    #[test]
    fn our_header_blocks_inflate_as_one_zlib_stream() {
        let mut w = Writer::default();
        let mut z = Decompress::new(true);
        for stream in [1u32, 3, 5] {
            let frame = w.syn_reply(stream);
            assert_eq!(&frame[..4], &[0x80, 0x03, 0x00, 0x02]);
            let block = &frame[12..];
            let mut out = Vec::with_capacity(64);
            z.decompress_vec(block, &mut out, FlushDecompress::Sync)
                .unwrap();
            assert_eq!(out, [0, 0, 0, 0], "zero header pairs");
        }
    }

    #[tokio::test]
    async fn bad_frames_are_named() {
        let wrong_version = control(PING, 0, &[0, 0, 0, 1]);
        let mut v2 = wrong_version.clone();
        v2[1] = 2;
        let err = Reader::default().read(&mut &v2[..]).await.unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
        let mut huge = control(PING, 0, &[]);
        huge[5] = 0x10; // a 1 MiB control frame
        let err = Reader::default().read(&mut &huge[..]).await.unwrap_err();
        assert!(err.to_string().contains("over"), "{err}");
        let garbage = control(SYN_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3]);
        let err = Reader::default().read(&mut &garbage[..]).await.unwrap_err();
        assert!(err.to_string().contains("inflate"), "{err}");
    }
}
