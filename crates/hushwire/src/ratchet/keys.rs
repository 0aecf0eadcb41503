//! The Double Ratchet's four kinds of symmetric key, each its own type so one can never be
//! used where another is meant. All zeroize on drop and print as `<redacted>`.

use core::fmt;

use hushwire_proto::labels;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::cipher::provider;
use crate::kdf::{hkdf, hkdf_expand, hmac, split_96};
use crate::wire::{ENCRYPTED_HEADER_LEN, HEADER_PLAINTEXT_LEN, TAG_LEN};

macro_rules! redacted_debug {
    ($t:ty) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($t), "(<redacted>)"))
            }
        }
    };
}

/// The root key: advanced by each DH ratchet step.
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub(crate) struct RootKey(pub(crate) [u8; 32]);
redacted_debug!(RootKey);

impl RootKey {
    /// `KDF_RK`: `HKDF-SHA256(salt = RK, ikm = dh_output, info = KDF_ROOT, L = 96)` split into
    /// the next root key, a new chain key (at index 0) and the header key of the chain after
    /// it (`docs/protocol.md` §5.2).
    pub(crate) fn step(&self, dh_output: &[u8; 32]) -> (RootKey, ChainKey, HeaderKey) {
        let [root, chain, header] = split_96(&hkdf::<96>(&self.0, dh_output, labels::KDF_ROOT));
        (
            RootKey(*root),
            ChainKey {
                key: *chain,
                index: 0,
            },
            HeaderKey(*header),
        )
    }
}

/// A header key: encrypts the headers of one sending chain (`docs/protocol.md` §5.3) with
/// XChaCha20-Poly1305, under the nonce `tag ‖ 0^8` where `tag` is the 16-byte AES-GCM tag of
/// the message's body. The body's key is used once, so its tag is a fresh pseudorandom value
/// and the nonce repeats under one header key only with probability about n² / 2^129 for n
/// messages of the chain; no randomness is drawn and no byte is added to the message.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub(crate) struct HeaderKey(pub(crate) [u8; 32]);
redacted_debug!(HeaderKey);

impl HeaderKey {
    fn nonce(body: &[u8]) -> [u8; 24] {
        let mut nonce = [0u8; 24];
        let tag = body
            .get(body.len().saturating_sub(TAG_LEN)..)
            .unwrap_or(&[]);
        if let Some(prefix) = nonce.get_mut(..tag.len()) {
            prefix.copy_from_slice(tag);
        }
        nonce
    }

    /// Encrypts a header's 40 plaintext bytes for the message whose body (ciphertext and tag)
    /// is `body`; `ad` is the session's associated data.
    pub(crate) fn seal(
        &self,
        ad: &[u8],
        header: &[u8; HEADER_PLAINTEXT_LEN],
        body: &[u8],
    ) -> [u8; ENCRYPTED_HEADER_LEN] {
        let sealed = provider().xseal(&self.0, &Self::nonce(body), ad, header);
        let mut out = [0u8; ENCRYPTED_HEADER_LEN];
        if sealed.len() == ENCRYPTED_HEADER_LEN {
            out.copy_from_slice(&sealed);
        }
        out
    }

    /// Opens an encrypted header; `None` unless it authenticates under this key.
    pub(crate) fn open(
        &self,
        ad: &[u8],
        encrypted: &[u8; ENCRYPTED_HEADER_LEN],
        body: &[u8],
    ) -> Option<[u8; HEADER_PLAINTEXT_LEN]> {
        provider()
            .xopen(&self.0, &Self::nonce(body), ad, encrypted)?
            .try_into()
            .ok()
    }
}

/// A sending or receiving chain key, with the index of the next message it will produce.
/// The index is 64-bit so advancing never overflows; the wire carries 32 bits, and a sending
/// chain refuses to go past `u32::MAX`.
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub(crate) struct ChainKey {
    pub(crate) key: [u8; 32],
    pub(crate) index: u64,
}
redacted_debug!(ChainKey);

impl ChainKey {
    /// `MK = HMAC-SHA256(CK, 0x01)`.
    pub(crate) fn message_key(&self) -> MessageKey {
        MessageKey {
            key: *hmac(&self.key, &[0x01]),
            index: self.index,
        }
    }

    /// `CK' = HMAC-SHA256(CK, 0x02)`.
    pub(crate) fn next(&self) -> ChainKey {
        ChainKey {
            key: *hmac(&self.key, &[0x02]),
            index: self.index + 1,
        }
    }
}

/// A message key: used for exactly one message, then dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub(crate) struct MessageKey {
    pub(crate) key: [u8; 32],
    pub(crate) index: u64,
}
redacted_debug!(MessageKey);

impl MessageKey {
    /// `HKDF-Expand(PRK = MK, info = KDF_MESSAGE_KEYS, L = 44)` split into the AES-256-GCM key
    /// (32 bytes) and nonce (12 bytes). `MK` is an HMAC output, already uniformly random, so
    /// the Extract step is skipped (RFC 5869 §3.3): two HMACs instead of three on every message.
    /// Every message key is used once, so a nonce derived from it is never reused with the same
    /// AEAD key.
    pub(crate) fn aead_key_and_nonce(&self) -> ([u8; 32], [u8; 12]) {
        let okm = hkdf_expand::<44>(&self.key, labels::KDF_MESSAGE_KEYS);
        let mut key = [0u8; 32];
        let mut nonce = [0u8; 12];
        let (a, b) = okm.split_at(32);
        key.copy_from_slice(a);
        nonce.copy_from_slice(b);
        (key, nonce)
    }

    pub(crate) fn encrypt(&self, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let (mut key, nonce) = self.aead_key_and_nonce();
        let out = provider().seal(&key, &nonce, ad, plaintext);
        key.zeroize();
        out
    }

    pub(crate) fn decrypt(&self, ad: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
        let (mut key, nonce) = self.aead_key_and_nonce();
        let out = provider().open(&key, &nonce, ad, ciphertext);
        key.zeroize();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_is_redacted() {
        let root = RootKey([7; 32]);
        let chain = ChainKey {
            key: [7; 32],
            index: 3,
        };
        let message = chain.message_key();
        assert_eq!(format!("{:?}", HeaderKey([7; 32])), "HeaderKey(<redacted>)");
        assert_eq!(format!("{root:?}"), "RootKey(<redacted>)");
        assert_eq!(format!("{chain:?}"), "ChainKey(<redacted>)");
        assert_eq!(format!("{message:?}"), "MessageKey(<redacted>)");
    }

    #[test]
    fn chain_and_message_keys_differ() {
        let chain = ChainKey {
            key: [1; 32],
            index: 0,
        };
        assert_ne!(chain.next().key, chain.message_key().key);
        assert_eq!(chain.next().index, 1);
    }
}
