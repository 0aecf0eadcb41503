//! The Double Ratchet's three kinds of symmetric key, each its own type so one can never be
//! used where another is meant. All zeroize on drop and print as `<redacted>`.

use core::fmt;

use hushwire_proto::labels;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::kdf::{aead_decrypt, aead_encrypt, hkdf, hmac};

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
    /// `KDF_RK`: `HKDF-SHA256(salt = RK, ikm = dh_output, info = KDF_ROOT, L = 64)` split into
    /// the next root key and a new chain key (at index 0).
    pub(crate) fn step(&self, dh_output: &[u8; 32]) -> (RootKey, ChainKey) {
        let okm = hkdf::<64>(&self.0, dh_output, labels::KDF_ROOT);
        let mut root = [0u8; 32];
        let mut chain = [0u8; 32];
        let (a, b) = okm.split_at(32);
        root.copy_from_slice(a);
        chain.copy_from_slice(b);
        (
            RootKey(root),
            ChainKey {
                key: chain,
                index: 0,
            },
        )
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
    /// `HKDF-SHA256(salt = 0^32, ikm = MK, info = KDF_MESSAGE_KEYS, L = 44)` split into the
    /// ChaCha20-Poly1305 key (32 bytes) and nonce (12 bytes). Every message key is used once,
    /// so a nonce derived from it is never reused with the same AEAD key.
    pub(crate) fn aead_key_and_nonce(&self) -> ([u8; 32], [u8; 12]) {
        let okm = hkdf::<44>(&[0u8; 32], &self.key, labels::KDF_MESSAGE_KEYS);
        let mut key = [0u8; 32];
        let mut nonce = [0u8; 12];
        let (a, b) = okm.split_at(32);
        key.copy_from_slice(a);
        nonce.copy_from_slice(b);
        (key, nonce)
    }

    pub(crate) fn encrypt(&self, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let (mut key, nonce) = self.aead_key_and_nonce();
        let out = aead_encrypt(&key, &nonce, ad, plaintext);
        key.zeroize();
        out
    }

    pub(crate) fn decrypt(&self, ad: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
        let (mut key, nonce) = self.aead_key_and_nonce();
        let out = aead_decrypt(&key, &nonce, ad, ciphertext);
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
