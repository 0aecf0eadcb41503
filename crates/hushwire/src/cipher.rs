//! The message AEAD, AES-256-GCM (`docs/protocol.md` §1.3, §5.2), behind a small provider
//! trait, the way rustls takes a crypto provider.
//!
//! Two backends compute the same function and pass the same vectors:
//!
//! - [`RingAesGcm`] (the `ring` feature, on by default): ring's AES-256-GCM, which uses the
//!   CPU's AES and carry-less multiply instructions. It is what makes a 1 KiB decrypt several
//!   times faster than with a portable ChaCha20-Poly1305 (`docs/performance.md`).
//! - [`RustCryptoAesGcm`]: RustCrypto's pure-Rust `aes-gcm`, constant time, used where ring is
//!   not built (WebAssembly: `--no-default-features`).
//!
//! [`provider`] returns the one this build uses. Each message key is used for exactly one
//! message, so the (key, nonce) pair derived from it never repeats (§5.2).

/// An AEAD for message bodies: 32-byte key, 12-byte nonce, 16-byte tag appended.
pub trait MessageCipher: Send + Sync {
    /// A short name for benchmarks ("ring", "rustcrypto").
    fn name(&self) -> &'static str;

    /// Encrypts `plaintext`, returning `ciphertext ‖ tag[16]`. Never fails for inputs below
    /// 64 GiB; message plaintexts are at most 64 KiB.
    fn seal(&self, key: &[u8; 32], nonce: &[u8; 12], ad: &[u8], plaintext: &[u8]) -> Vec<u8>;

    /// Decrypts `ciphertext ‖ tag[16]`; `None` if it does not authenticate.
    fn open(
        &self,
        key: &[u8; 32],
        nonce: &[u8; 12],
        ad: &[u8],
        ciphertext: &[u8],
    ) -> Option<Vec<u8>>;
}

/// RustCrypto's pure-Rust AES-256-GCM: the portable backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct RustCryptoAesGcm;

impl MessageCipher for RustCryptoAesGcm {
    fn name(&self) -> &'static str {
        "rustcrypto"
    }

    fn seal(&self, key: &[u8; 32], nonce: &[u8; 12], ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
        let cipher = aes_gcm::Aes256Gcm::new(&(*key).into());
        cipher
            .encrypt(
                &(*nonce).into(),
                Payload {
                    msg: plaintext,
                    aad: ad,
                },
            )
            // Fails only beyond GCM's 64 GiB per (key, nonce); callers bound plaintexts far below.
            .unwrap_or_default()
    }

    fn open(
        &self,
        key: &[u8; 32],
        nonce: &[u8; 12],
        ad: &[u8],
        ciphertext: &[u8],
    ) -> Option<Vec<u8>> {
        use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
        let cipher = aes_gcm::Aes256Gcm::new(&(*key).into());
        cipher
            .decrypt(
                &(*nonce).into(),
                Payload {
                    msg: ciphertext,
                    aad: ad,
                },
            )
            .ok()
    }
}

/// ring's AES-256-GCM: the fast native backend.
#[cfg(feature = "ring")]
#[derive(Clone, Copy, Debug, Default)]
pub struct RingAesGcm;

#[cfg(feature = "ring")]
impl RingAesGcm {
    fn key(key: &[u8; 32]) -> Option<ring::aead::LessSafeKey> {
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key)
            .ok()
            .map(ring::aead::LessSafeKey::new)
    }
}

#[cfg(feature = "ring")]
impl MessageCipher for RingAesGcm {
    fn name(&self) -> &'static str {
        "ring"
    }

    fn seal(&self, key: &[u8; 32], nonce: &[u8; 12], ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut buffer = Vec::with_capacity(plaintext.len() + 16);
        buffer.extend_from_slice(plaintext);
        // A 32-byte key is always accepted and sealing fails only beyond GCM's limits, so the
        // empty result (which no reader accepts) is unreachable.
        match Self::key(key).map(|k| {
            k.seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(*nonce),
                ring::aead::Aad::from(ad),
                &mut buffer,
            )
        }) {
            Some(Ok(())) => buffer,
            _ => Vec::new(),
        }
    }

    fn open(
        &self,
        key: &[u8; 32],
        nonce: &[u8; 12],
        ad: &[u8],
        ciphertext: &[u8],
    ) -> Option<Vec<u8>> {
        let key = Self::key(key)?;
        let mut buffer = ciphertext.to_vec();
        let len = key
            .open_in_place(
                ring::aead::Nonce::assume_unique_for_key(*nonce),
                ring::aead::Aad::from(ad),
                &mut buffer,
            )
            .ok()?
            .len();
        buffer.truncate(len);
        Some(buffer)
    }
}

/// The backend this build uses: ring's with the `ring` feature, RustCrypto's without.
pub fn provider() -> &'static dyn MessageCipher {
    #[cfg(feature = "ring")]
    {
        &RingAesGcm
    }
    #[cfg(not(feature = "ring"))]
    {
        &RustCryptoAesGcm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NIST's GCM test case 14 (AES-256, zero key, zero nonce, one zero block).
    #[test]
    fn both_backends_match_the_nist_vector_and_each_other() {
        let key = [0u8; 32];
        let nonce = [0u8; 12];
        let plaintext = [0u8; 16];
        let expected = "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919";
        let mut backends: Vec<&dyn MessageCipher> = vec![&RustCryptoAesGcm];
        #[cfg(feature = "ring")]
        backends.push(&RingAesGcm);
        for backend in backends {
            let sealed = backend.seal(&key, &nonce, &[], &plaintext);
            let hex: String = sealed.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, expected, "{}", backend.name());
            assert_eq!(
                backend.open(&key, &nonce, &[], &sealed).as_deref(),
                Some(&plaintext[..])
            );
            let mut forged = sealed.clone();
            forged[0] ^= 1;
            assert_eq!(backend.open(&key, &nonce, &[], &forged), None);
            assert_eq!(backend.open(&key, &nonce, b"ad", &sealed), None);
        }
    }

    #[cfg(feature = "ring")]
    #[test]
    fn ring_and_rustcrypto_agree_on_every_length_and_refuse_alike() {
        for len in [0usize, 1, 15, 16, 17, 255, 1024, 4099] {
            let key = [len as u8; 32];
            let nonce = [7u8; 12];
            let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let a = RingAesGcm.seal(&key, &nonce, b"associated", &plaintext);
            let b = RustCryptoAesGcm.seal(&key, &nonce, b"associated", &plaintext);
            assert_eq!(a, b, "length {len}");
            assert_eq!(
                RingAesGcm.open(&key, &nonce, b"associated", &b),
                Some(plaintext.clone())
            );
            assert_eq!(RingAesGcm.open(&key, &nonce, b"other", &b), None);
            assert_eq!(
                RustCryptoAesGcm.open(&key, &nonce, b"associated", &a[..a.len() - 1]),
                None
            );
        }
    }
}
