//! The signed update payload for a USR slot: kernel, boot initramfs and USR filesystem in one file.
//!
//! Layout: `HERDPAY1\n`, a little-endian u32 header length, a JSON header
//! ([`Header`]), then each file's bytes in header order. The detached
//! signature (`update.payload.sig`, 64 raw bytes) is ed25519 over
//! [`SIGNING_CONTEXT`] followed by the payload's SHA-256, so signing and
//! checking stream the payload instead of holding it in memory.

use ed25519_dalek::{Signature, Signer, Verifier};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 9] = b"HERDPAY1\n";
/// Domain separation, so a payload signature can never be replayed as another kind of signature.
pub const SIGNING_CONTEXT: &[u8] = b"herd-update-payload-v1\0";

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signing key {path}: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("public key {0:?}: expected 64 hex characters (an ed25519 public key)")]
    BadPublicKey(String),
    #[error("{path}: not a herd update payload ({reason})")]
    Format { path: PathBuf, reason: String },
    #[error(
        "{path}: signature does not match: the payload was modified or signed with a different key than {public_key}"
    )]
    BadSignature { path: PathBuf, public_key: String },
    #[error(
        "{path}: member {name} has sha256 {actual}, the header says {expected}: the payload was modified"
    )]
    MemberHash {
        path: PathBuf,
        name: String,
        expected: String,
        actual: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PayloadError + '_ {
    move |source| PayloadError::Io {
        path: path.into(),
        source,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub version: String,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// `vmlinuz`, `initrd` or `usr.img`.
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// Reads an ed25519 signing key: 64 hex characters (the 32-byte seed).
pub fn read_signing_key(path: &Path) -> Result<SigningKey, PayloadError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let bad = |reason: String| PayloadError::BadKey {
        path: path.into(),
        reason,
    };
    let bytes = hex::decode(text.trim()).map_err(|e| {
        bad(format!(
            "not hex ({e}); expected 64 hex characters (an ed25519 seed)"
        ))
    })?;
    let seed: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
        bad(format!(
            "{} bytes; expected 32 (64 hex characters, an ed25519 seed)",
            b.len()
        ))
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes a fresh signing key (hex seed, mode 0600).
pub fn generate_signing_key(path: &Path) -> Result<SigningKey, PayloadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let seed: [u8; 32] = rand::random();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    writeln!(f, "{}", hex::encode(seed)).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    Ok(SigningKey::from_bytes(&seed))
}

pub fn parse_public_key(text: &str) -> Result<VerifyingKey, PayloadError> {
    let bad = || PayloadError::BadPublicKey(text.trim().to_string());
    let bytes: [u8; 32] = hex::decode(text.trim())
        .map_err(|_| bad())?
        .try_into()
        .map_err(|_| bad())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
}

pub fn sha256_file(path: &Path) -> Result<(u64, [u8; 32]), PayloadError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h).map_err(io(path))?;
    Ok((n, h.finalize().into()))
}

fn message(digest: &[u8; 32]) -> Vec<u8> {
    [SIGNING_CONTEXT, digest.as_slice()].concat()
}

/// Writes the payload for `members` (name, file) to `out` and its signature to `sig`.
pub fn write(
    version: &str,
    members: &[(&str, &Path)],
    key: &SigningKey,
    out: &Path,
    sig: &Path,
) -> Result<(), PayloadError> {
    let mut header = Header {
        version: version.into(),
        members: Vec::new(),
    };
    for (name, path) in members {
        let (size, digest) = sha256_file(path)?;
        header.members.push(Member {
            name: (*name).into(),
            size,
            sha256: hex::encode(digest),
        });
    }
    let json = serde_json::to_vec(&header).expect("header serialises");
    let file = std::fs::File::create(out).map_err(io(out))?;
    let mut w = HashingWriter {
        inner: std::io::BufWriter::new(file),
        hash: Sha256::new(),
    };
    w.write_all(MAGIC).map_err(io(out))?;
    w.write_all(&(json.len() as u32).to_le_bytes())
        .map_err(io(out))?;
    w.write_all(&json).map_err(io(out))?;
    for (_, path) in members {
        let mut f = std::fs::File::open(path).map_err(io(path))?;
        std::io::copy(&mut f, &mut w).map_err(io(out))?;
    }
    let digest: [u8; 32] = w.hash.finalize().into();
    let file = w.inner.into_inner().map_err(|e| io(out)(e.into_error()))?;
    file.sync_all().map_err(io(out))?;
    let signature = key.sign(&message(&digest));
    std::fs::write(sig, signature.to_bytes()).map_err(io(sig))?;
    Ok(())
}

struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A payload whose signature and member hashes checked out.
#[derive(Debug)]
pub struct Verified {
    pub header: Header,
    /// Byte offset of each member's data in the payload file, in header order.
    pub offsets: Vec<u64>,
}

/// Checks `payload` against its detached signature `sig` and `public_key`,
/// then every member's sha256.
pub fn verify(
    payload: &Path,
    sig: &Path,
    public_key: &VerifyingKey,
) -> Result<Verified, PayloadError> {
    let sig_bytes = std::fs::read(sig).map_err(io(sig))?;
    let signature = Signature::from_slice(&sig_bytes).map_err(|_| PayloadError::Format {
        path: sig.into(),
        reason: format!("signature is {} bytes, expected 64", sig_bytes.len()),
    })?;
    let (_, digest) = sha256_file(payload)?;
    public_key
        .verify(&message(&digest), &signature)
        .map_err(|_| PayloadError::BadSignature {
            path: payload.into(),
            public_key: hex::encode(public_key.as_bytes()),
        })?;
    let header = read_header(payload)?;
    let mut f = std::fs::File::open(payload).map_err(io(payload))?;
    let mut offset = (MAGIC.len() + 4) as u64 + header.1;
    let mut offsets = Vec::new();
    for m in &header.0.members {
        f.seek(SeekFrom::Start(offset)).map_err(io(payload))?;
        let mut h = Sha256::new();
        let n = std::io::copy(&mut (&mut f).take(m.size), &mut h).map_err(io(payload))?;
        let actual = hex::encode(h.finalize());
        if n != m.size || actual != m.sha256 {
            return Err(PayloadError::MemberHash {
                path: payload.into(),
                name: m.name.clone(),
                expected: m.sha256.clone(),
                actual,
            });
        }
        offsets.push(offset);
        offset += m.size;
    }
    Ok(Verified {
        header: header.0,
        offsets,
    })
}

fn read_header(payload: &Path) -> Result<(Header, u64), PayloadError> {
    let bad = |reason: &str| PayloadError::Format {
        path: payload.into(),
        reason: reason.into(),
    };
    let mut f = std::fs::File::open(payload).map_err(io(payload))?;
    let mut magic = [0u8; 9];
    f.read_exact(&mut magic).map_err(|_| bad("too short"))?;
    if &magic != MAGIC {
        return Err(bad("wrong magic"));
    }
    let mut len = [0u8; 4];
    f.read_exact(&mut len).map_err(|_| bad("too short"))?;
    let len = u32::from_le_bytes(len) as u64;
    if len > 1 << 20 {
        return Err(bad("header larger than 1 MiB"));
    }
    let mut json = vec![0u8; len as usize];
    f.read_exact(&mut json)
        .map_err(|_| bad("truncated header"))?;
    let header: Header = serde_json::from_slice(&json).map_err(|e| bad(&format!("header: {e}")))?;
    Ok((header, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_reject_tampering_and_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("usr.img");
        std::fs::write(&a, vec![7u8; 10_000]).unwrap();
        let key = generate_signing_key(&dir.path().join("key")).unwrap();
        let again = read_signing_key(&dir.path().join("key")).unwrap();
        assert_eq!(key.to_bytes(), again.to_bytes());
        let (p, s) = (dir.path().join("p"), dir.path().join("p.sig"));
        write("1.0", &[("usr.img", &a)], &key, &p, &s).unwrap();
        let v = verify(&p, &s, &key.verifying_key()).unwrap();
        assert_eq!(v.header.members[0].size, 10_000);

        let other = SigningKey::from_bytes(&[1u8; 32]);
        let err = verify(&p, &s, &other.verifying_key()).unwrap_err();
        assert!(matches!(err, PayloadError::BadSignature { .. }), "{err}");

        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&p, bytes).unwrap();
        let err = verify(&p, &s, &key.verifying_key()).unwrap_err();
        assert!(
            err.to_string().contains("signature does not match"),
            "{err}"
        );
    }

    #[test]
    fn malformed_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("k");
        std::fs::write(&k, "abcd").unwrap();
        let err = read_signing_key(&k).unwrap_err().to_string();
        assert!(err.contains("2 bytes; expected 32"), "{err}");
        std::fs::write(&k, "zz").unwrap();
        assert!(
            read_signing_key(&k)
                .unwrap_err()
                .to_string()
                .contains("not hex")
        );
        assert!(parse_public_key("12").is_err());
    }
}
