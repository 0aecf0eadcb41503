//! Safety numbers: 60 decimal digits two people compare (aloud, or by QR code) to confirm that
//! neither the relay nor anyone else sits between them. Both parties compute the same number.

use core::fmt;

use sha2::{Digest, Sha512};

use crate::keys::IdentityKey;
use crate::labels;

/// How many times each half is hashed. As in Signal's numeric fingerprints, iterating makes a
/// brute-force search for a colliding identity 5200 times more costly than one hash per guess.
pub const SAFETY_NUMBER_ITERATIONS: u32 = 5200;

/// A 60-digit safety number.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SafetyNumber {
    digits: String,
}

/// The 30 digits one identity contributes.
///
/// `h_0 = SHA-512(SAFETY_NUMBER ‖ signing_key ‖ dh_key)`, then
/// `h_i = SHA-512(h_{i-1} ‖ signing_key ‖ dh_key)` up to `h_5200`. Its first 30 bytes are read
/// as six big-endian 40-bit integers, each reduced modulo 100000 and written as 5 digits.
fn half(identity: &IdentityKey) -> String {
    let public = identity.public_bytes();
    let mut h = Sha512::new();
    h.update(labels::SAFETY_NUMBER);
    h.update(public);
    let mut digest = h.finalize();
    for _ in 0..SAFETY_NUMBER_ITERATIONS {
        let mut h = Sha512::new();
        h.update(digest);
        h.update(public);
        digest = h.finalize();
    }
    let mut out = String::with_capacity(30);
    for chunk in digest.chunks_exact(5).take(6) {
        let value = chunk.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        out.push_str(&format!("{:05}", value % 100_000));
    }
    out
}

impl SafetyNumber {
    /// The safety number for a conversation between `a` and `b`. The two halves are ordered by
    /// their digits (smaller first), so `compute(a, b) == compute(b, a)`.
    pub fn compute(a: &IdentityKey, b: &IdentityKey) -> Self {
        let (x, y) = (half(a), half(b));
        let digits = if x <= y { x + &y } else { y + &x };
        Self { digits }
    }

    /// The 60 digits without spaces.
    pub fn digits(&self) -> &str {
        &self.digits
    }
}

impl fmt::Display for SafetyNumber {
    /// Twelve groups of five digits, separated by spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.digits.as_bytes().chunks(5).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(core::str::from_utf8(group).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}
