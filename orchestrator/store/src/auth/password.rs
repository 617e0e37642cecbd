//! Password hashes: PBKDF2-HMAC-SHA256 with a random salt, kept as
//! `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`. Only hashes are
//! replicated; passwords are hashed by the member that takes the request.

use hmac::Hmac;
use rand::Rng;
use sha2::Sha256;

const ITERATIONS: u32 = 100_000;

fn derive(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2::<Hmac<Sha256>>(password.as_bytes(), salt, iterations, &mut out)
        .expect("HMAC takes keys of any length");
    out
}

/// A new hash of `password`.
pub fn hash_password(password: &str) -> String {
    let salt: [u8; 16] = rand::rng().random();
    format!(
        "pbkdf2-sha256${ITERATIONS}${}${}",
        hex::encode(salt),
        hex::encode(derive(password, &salt, ITERATIONS))
    )
}

/// Whether `password` matches `hash` (in constant time for the comparison).
pub fn verify_password(password: &str, hash: &str) -> bool {
    let mut parts = hash.split('$');
    let (Some("pbkdf2-sha256"), Some(iter), Some(salt), Some(want), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Ok(iter), Ok(salt), Ok(want)) =
        (iter.parse::<u32>(), hex::decode(salt), hex::decode(want))
    else {
        return false;
    };
    let got = derive(password, &salt, iter);
    got.len() == want.len() && got.iter().zip(&want).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
}
