//! The primitives every derivation goes through, so each construction is written once:
//! HKDF-SHA256, HMAC-SHA256 and ChaCha20-Poly1305.

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use zeroize::Zeroizing;

/// HKDF-SHA256 (RFC 5869) filling `N` bytes. `N` is at most 64 everywhere we call it, far below
/// HKDF's limit of 255 × 32 bytes, so expansion cannot fail.
pub(crate) fn hkdf<const N: usize>(salt: &[u8], ikm: &[u8], info: &[u8]) -> Zeroizing<[u8; N]> {
    let mut okm = Zeroizing::new([0u8; N]);
    let _ = Hkdf::<Sha256>::new(Some(salt), ikm).expand(info, okm.as_mut());
    okm
}

/// HKDF-Expand alone (RFC 5869 §2.3) filling `N` bytes from a key that is already uniformly
/// random (`prk`, 32 bytes), as RFC 5869 §3.3 allows: the Extract step would add nothing.
pub(crate) fn hkdf_expand<const N: usize>(prk: &[u8; 32], info: &[u8]) -> Zeroizing<[u8; N]> {
    let mut okm = Zeroizing::new([0u8; N]);
    if let Ok(h) = Hkdf::<Sha256>::from_prk(prk) {
        let _ = h.expand(info, okm.as_mut());
    }
    okm
}

/// Splits 96 bytes of KDF output into three 32-byte keys, in order.
pub(crate) fn split_96(okm: &[u8; 96]) -> [Zeroizing<[u8; 32]>; 3] {
    let (a, rest) = okm.split_at(32);
    let (b, c) = rest.split_at(32);
    [a, b, c].map(|part| {
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(part);
        key
    })
}

/// HMAC-SHA256(key, data).
pub(crate) fn hmac(key: &[u8; 32], data: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    // HMAC accepts keys of any length; a 32-byte key is never refused.
    if let Ok(mut mac) = <Hmac<Sha256>>::new_from_slice(key) {
        mac.update(data);
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

/// ChaCha20-Poly1305 encryption; the output is `ciphertext ‖ tag[16]`.
pub(crate) fn aead_encrypt(
    key: &[u8; 32],
    nonce: &[u8; 12],
    ad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    // Encryption fails only for inputs beyond ChaCha20's 256 GiB block counter; callers bound
    // plaintexts far below that.
    cipher
        .encrypt(
            &Nonce::from(*nonce),
            Payload {
                msg: plaintext,
                aad: ad,
            },
        )
        .unwrap_or_default()
}

/// ChaCha20-Poly1305 decryption; `None` if authentication fails.
pub(crate) fn aead_decrypt(
    key: &[u8; 32],
    nonce: &[u8; 12],
    ad: &[u8],
    ciphertext: &[u8],
) -> Option<Vec<u8>> {
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    cipher
        .decrypt(
            &Nonce::from(*nonce),
            Payload {
                msg: ciphertext,
                aad: ad,
            },
        )
        .ok()
}
