//! The session AEADs behind a small provider trait, the way rustls takes a crypto provider:
//! AES-256-GCM for message bodies and XChaCha20-Poly1305 for ratchet headers and sealed state
//! (`docs/protocol.md` §1.3, §5.3, §7).
//!
//! Two backends compute the same function and pass the same vectors:
//!
//! - [`RingAesGcm`] (the `ring` feature, on by default): ring's AES-256-GCM, which uses the
//!   CPU's AES and carry-less multiply instructions, and XChaCha20-Poly1305 as HChaCha20 (from
//!   RustCrypto's `chacha20`) followed by ring's ChaCha20-Poly1305. For the 40-byte headers this
//!   avoids the fixed cost of RustCrypto's vectorised Poly1305, which made opening a header cost
//!   as much as decrypting a 1 KiB body.
//! - [`RustCryptoAesGcm`]: RustCrypto's pure-Rust `aes-gcm` and `chacha20poly1305`, constant
//!   time, used where ring is not built (WebAssembly: `--no-default-features`).
//!
//! [`provider`] returns the one this build uses. Each message key is used for exactly one
//! message, so the (key, nonce) pair derived from it never repeats (§5.2).

/// The session AEADs: AES-256-GCM (32-byte key, 12-byte nonce) for message bodies and
/// XChaCha20-Poly1305 (32-byte key, 24-byte nonce), each with a 16-byte tag appended.
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

    /// XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03) encryption, `ciphertext ‖ tag[16]`:
    /// ratchet headers and sealed state.
    fn xseal(&self, key: &[u8; 32], nonce: &[u8; 24], ad: &[u8], plaintext: &[u8]) -> Vec<u8>;

    /// XChaCha20-Poly1305 decryption; `None` if it does not authenticate.
    fn xopen(
        &self,
        key: &[u8; 32],
        nonce: &[u8; 24],
        ad: &[u8],
        ciphertext: &[u8],
    ) -> Option<Vec<u8>>;
}

fn rustcrypto_xseal(key: &[u8; 32], nonce: &[u8; 24], ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
    chacha20poly1305::XChaCha20Poly1305::new(&(*key).into())
        .encrypt(
            &(*nonce).into(),
            Payload {
                msg: plaintext,
                aad: ad,
            },
        )
        // Fails only beyond 256 GiB; callers bound inputs far below.
        .unwrap_or_default()
}

fn rustcrypto_xopen(
    key: &[u8; 32],
    nonce: &[u8; 24],
    ad: &[u8],
    ciphertext: &[u8],
) -> Option<Vec<u8>> {
    use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
    chacha20poly1305::XChaCha20Poly1305::new(&(*key).into())
        .decrypt(
            &(*nonce).into(),
            Payload {
                msg: ciphertext,
                aad: ad,
            },
        )
        .ok()
}

/// RustCrypto's pure-Rust AES-256-GCM and XChaCha20-Poly1305: the portable backend.
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

    fn xseal(&self, key: &[u8; 32], nonce: &[u8; 24], ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        rustcrypto_xseal(key, nonce, ad, plaintext)
    }

    fn xopen(
        &self,
        key: &[u8; 32],
        nonce: &[u8; 24],
        ad: &[u8],
        ciphertext: &[u8],
    ) -> Option<Vec<u8>> {
        rustcrypto_xopen(key, nonce, ad, ciphertext)
    }
}

/// ring's AES-256-GCM, and XChaCha20-Poly1305 over ring's ChaCha20-Poly1305: the fast native
/// backend.
#[cfg(feature = "ring")]
#[derive(Clone, Copy, Debug, Default)]
pub struct RingAesGcm;

#[cfg(feature = "ring")]
impl RingAesGcm {
    fn gcm_parts(
        key: &[u8; 32],
        nonce: &[u8; 12],
    ) -> Option<(ring::aead::LessSafeKey, ring::aead::Nonce)> {
        Some((
            Self::key_for(&ring::aead::AES_256_GCM, key)?,
            ring::aead::Nonce::assume_unique_for_key(*nonce),
        ))
    }

    fn key_for(
        algorithm: &'static ring::aead::Algorithm,
        key: &[u8],
    ) -> Option<ring::aead::LessSafeKey> {
        ring::aead::UnboundKey::new(algorithm, key)
            .ok()
            .map(ring::aead::LessSafeKey::new)
    }

    /// XChaCha20's reduction to ChaCha20: the HChaCha20 subkey of `nonce[0..16]`, and the
    /// 12-byte nonce `0^4 ‖ nonce[16..24]` (draft-irtf-cfrg-xchacha-03 §2.3).
    fn xchacha_parts(
        key: &[u8; 32],
        nonce: &[u8; 24],
    ) -> Option<(ring::aead::LessSafeKey, ring::aead::Nonce)> {
        let (prefix, suffix) = nonce.split_at(16);
        let prefix: [u8; 16] = prefix.try_into().ok()?;
        let mut subkey = chacha20::hchacha::<chacha20::R20>(&(*key).into(), &prefix.into());
        let key = Self::key_for(&ring::aead::CHACHA20_POLY1305, subkey.as_slice());
        zeroize::Zeroize::zeroize(subkey.as_mut_slice());
        let mut short = [0u8; 12];
        short.get_mut(4..)?.copy_from_slice(suffix);
        Some((key?, ring::aead::Nonce::assume_unique_for_key(short)))
    }
}

/// Seals with a ring key: `ciphertext ‖ tag[16]`. A valid key never fails below the AEAD's
/// limits, so the empty result (which no reader accepts) is unreachable.
#[cfg(feature = "ring")]
fn ring_seal(
    parts: Option<(ring::aead::LessSafeKey, ring::aead::Nonce)>,
    ad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(plaintext.len() + 16);
    buffer.extend_from_slice(plaintext);
    match parts.map(|(k, n)| k.seal_in_place_append_tag(n, ring::aead::Aad::from(ad), &mut buffer))
    {
        Some(Ok(())) => buffer,
        _ => Vec::new(),
    }
}

/// Opens with a ring key; `None` if it does not authenticate.
#[cfg(feature = "ring")]
fn ring_open(
    parts: Option<(ring::aead::LessSafeKey, ring::aead::Nonce)>,
    ad: &[u8],
    ciphertext: &[u8],
) -> Option<Vec<u8>> {
    let (key, nonce) = parts?;
    let mut buffer = ciphertext.to_vec();
    let len = key
        .open_in_place(nonce, ring::aead::Aad::from(ad), &mut buffer)
        .ok()?
        .len();
    buffer.truncate(len);
    Some(buffer)
}

#[cfg(feature = "ring")]
impl MessageCipher for RingAesGcm {
    fn name(&self) -> &'static str {
        "ring"
    }

    fn seal(&self, key: &[u8; 32], nonce: &[u8; 12], ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        ring_seal(Self::gcm_parts(key, nonce), ad, plaintext)
    }

    fn open(
        &self,
        key: &[u8; 32],
        nonce: &[u8; 12],
        ad: &[u8],
        ciphertext: &[u8],
    ) -> Option<Vec<u8>> {
        ring_open(Self::gcm_parts(key, nonce), ad, ciphertext)
    }

    fn xseal(&self, key: &[u8; 32], nonce: &[u8; 24], ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        ring_seal(Self::xchacha_parts(key, nonce), ad, plaintext)
    }

    fn xopen(
        &self,
        key: &[u8; 32],
        nonce: &[u8; 24],
        ad: &[u8],
        ciphertext: &[u8],
    ) -> Option<Vec<u8>> {
        ring_open(Self::xchacha_parts(key, nonce), ad, ciphertext)
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

    /// draft-irtf-cfrg-xchacha-03 §A.3.1, both backends.
    #[test]
    fn both_backends_match_the_xchacha_draft_vector() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let ad = hex("50515253c0c1c2c3c4c5c6c7");
        let key: [u8; 32] = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
            .try_into()
            .unwrap();
        let nonce: [u8; 24] = hex("404142434445464748494a4b4c4d4e4f5051525354555657")
            .try_into()
            .unwrap();
        let tag = hex("c0875924c1c7987947deafd8780acf49");
        let mut backends: Vec<&dyn MessageCipher> = vec![&RustCryptoAesGcm];
        #[cfg(feature = "ring")]
        backends.push(&RingAesGcm);
        for backend in backends {
            let sealed = backend.xseal(&key, &nonce, &ad, plaintext);
            assert_eq!(&sealed[sealed.len() - 16..], &tag[..], "{}", backend.name());
            assert_eq!(sealed[..4], hex("bd6d179d")[..], "{}", backend.name());
            assert_eq!(
                backend.xopen(&key, &nonce, &ad, &sealed).as_deref(),
                Some(&plaintext[..])
            );
            let mut forged = sealed.clone();
            forged[3] ^= 1;
            assert_eq!(backend.xopen(&key, &nonce, &ad, &forged), None);
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
            let xnonce = [len as u8; 24];
            let x = RingAesGcm.xseal(&key, &xnonce, b"ad", &plaintext);
            assert_eq!(x, RustCryptoAesGcm.xseal(&key, &xnonce, b"ad", &plaintext));
            assert_eq!(
                RustCryptoAesGcm.xopen(&key, &xnonce, b"ad", &x),
                Some(plaintext.clone())
            );
            assert_eq!(RingAesGcm.xopen(&key, &xnonce, b"da", &x), None);
        }
    }
}
