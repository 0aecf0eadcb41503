//! Sealing conversation messages to a clinic's archive key and opening them
//! (`docs/conversations.md` §7.3). The public structures — the signed [`ArchivePolicy`] and the
//! [`ArchiveEnvelope`] layout — are `hushwire_proto::conversation` types; this module holds the
//! part that needs secrets:
//!
//! ```text
//! archived   = sender_fingerprint[32] ‖ sender_device_id[4] ‖ epoch[8] ‖ padded_payload
//! E          = X25519(e, 9) for a fresh e;  shared = X25519(e, archive_key)  (all-zero: refused)
//! okm        = HKDF-SHA256(salt = conversation_id, ikm = shared,
//!                          info = KDF_ARCHIVE_SEAL ‖ E ‖ archive_key, L = 56)
//! ciphertext = XChaCha20-Poly1305(okm[0..32], okm[32..56], AD = envelope bytes 0..58, archived)
//! ```

use core::fmt;

use hushwire_proto::conversation::{
    ARCHIVE_ENVELOPE_HEADER_LEN, ArchiveEnvelope, ArchivePolicy, ConversationId,
    MAX_ARCHIVE_CIPHERTEXT_LEN,
};
use hushwire_proto::{Fingerprint, X25519PublicKey, labels};
use rand_core::CryptoRng;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::cipher;
use crate::kdf::hkdf;
use crate::keys::{diffie_hellman, generate_x25519, x25519_from_secret};

/// Largest padded payload an archive envelope carries: the session's plaintext limit.
pub const MAX_ARCHIVED_PAYLOAD_LEN: usize = 65_536;
/// The purpose an archive key file (`hushwire org archive-policy`) is sealed as
/// ([`crate::sealed_file`]): its plaintext is the 32-byte archive secret key.
pub const ARCHIVE_KEY_FILE_PURPOSE: &str = "hushwire archive key";
/// Bytes of the archived plaintext before the payload: sender fingerprint 32, device 4, epoch 8.
const ARCHIVED_HEADER_LEN: usize = 32 + 4 + 8;

/// One conversation message as the clinic's archive keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct ArchivedMessage {
    /// The sending device's identity fingerprint (the sender's claim: the seal is not a
    /// signature, §7.3).
    pub sender: Fingerprint,
    /// The sending device's number.
    pub sender_device: u32,
    /// The membership epoch the sender encrypted under (`conversations.md` §4).
    pub epoch: u64,
    /// The padded client payload the members received, at most
    /// [`MAX_ARCHIVED_PAYLOAD_LEN`] bytes.
    pub payload: Vec<u8>,
}

impl fmt::Debug for ArchivedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArchivedMessage")
            .field("sender", &self.sender)
            .field("sender_device", &self.sender_device)
            .field("epoch", &self.epoch)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// Why a message could not be sealed to, or opened from, the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveError {
    /// The payload is longer than [`MAX_ARCHIVED_PAYLOAD_LEN`].
    PayloadTooLong {
        /// Its length.
        len: usize,
    },
    /// The X25519 exchange gave the all-zero output (a small-order key).
    WeakKey,
    /// The envelope does not open under this archive key (another key, or altered bytes).
    OpenFailed,
    /// The envelope was sealed under another archive policy than the key's.
    WrongPolicy {
        /// The policy sequence the envelope names.
        envelope: u64,
    },
}

impl fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PayloadTooLong { len } => write!(
                f,
                "the payload is {len} bytes, more than {MAX_ARCHIVED_PAYLOAD_LEN}"
            ),
            Self::WeakKey => f.write_str("the archive key exchange gave a weak result"),
            Self::OpenFailed => {
                f.write_str("the archive envelope does not open under this archive key")
            }
            Self::WrongPolicy { envelope } => write!(
                f,
                "the envelope was sealed under archive policy {envelope}, not this key's"
            ),
        }
    }
}

impl std::error::Error for ArchiveError {}

/// The clinic's archive private key (X25519), kept by its supervisors.
pub struct ArchiveSecretKey {
    secret: StaticSecret,
    public: X25519PublicKey,
}

impl ArchiveSecretKey {
    /// A fresh key pair (32 bytes from `rng`).
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let (secret, public) = generate_x25519(rng);
        Self { secret, public }
    }

    /// Rebuilds the key pair from its stored secret; `None` if its public key would be weak.
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Option<Self> {
        x25519_from_secret(bytes).map(|(secret, public)| Self { secret, public })
    }

    /// The secret, for the clinic's own sealed storage.
    pub fn to_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The public key an [`ArchivePolicy`] publishes.
    pub fn public(&self) -> &X25519PublicKey {
        &self.public
    }

    /// Opens `envelope` (`conversations.md` §7.3).
    ///
    /// # Errors
    /// [`ArchiveError::OpenFailed`] if it does not authenticate under this key, or its plaintext
    /// is shorter than the archived header; [`ArchiveError::WeakKey`] for a small-order
    /// ephemeral key.
    pub fn open(&self, envelope: &ArchiveEnvelope) -> Result<ArchivedMessage, ArchiveError> {
        let shared =
            diffie_hellman(&self.secret, &envelope.ephemeral).ok_or(ArchiveError::WeakKey)?;
        let (key, nonce) = seal_key_nonce(
            &shared,
            &envelope.conversation,
            &envelope.ephemeral,
            &self.public,
        );
        let archived = Zeroizing::new(
            cipher::provider()
                .xopen(
                    &key,
                    &nonce,
                    &envelope.associated_data(),
                    &envelope.ciphertext,
                )
                .ok_or(ArchiveError::OpenFailed)?,
        );
        let (header, payload) = archived
            .split_at_checked(ARCHIVED_HEADER_LEN)
            .ok_or(ArchiveError::OpenFailed)?;
        let (sender, rest) = header.split_at(32);
        let (device, epoch) = rest.split_at(4);
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(sender);
        Ok(ArchivedMessage {
            sender: Fingerprint(fingerprint),
            sender_device: u32::from_be_bytes(
                device.try_into().map_err(|_| ArchiveError::OpenFailed)?,
            ),
            epoch: u64::from_be_bytes(epoch.try_into().map_err(|_| ArchiveError::OpenFailed)?),
            payload: payload.to_vec(),
        })
    }
}

/// Seals `message` of `conversation` to `policy`'s archive key with a fresh ephemeral key from
/// `rng` (`conversations.md` §7.3). The caller has verified `policy` under the clinic's key.
///
/// # Errors
/// [`ArchiveError::PayloadTooLong`]; [`ArchiveError::WeakKey`] (not reachable with a decoded
/// policy, whose key is checked).
pub fn seal<R: CryptoRng + ?Sized>(
    policy: &ArchivePolicy,
    conversation: ConversationId,
    message: &ArchivedMessage,
    rng: &mut R,
) -> Result<ArchiveEnvelope, ArchiveError> {
    if message.payload.len() > MAX_ARCHIVED_PAYLOAD_LEN {
        return Err(ArchiveError::PayloadTooLong {
            len: message.payload.len(),
        });
    }
    let (secret, ephemeral) = generate_x25519(rng);
    let shared = diffie_hellman(&secret, policy.archive_key()).ok_or(ArchiveError::WeakKey)?;
    let (key, nonce) = seal_key_nonce(&shared, &conversation, &ephemeral, policy.archive_key());
    let mut archived = Zeroizing::new(Vec::with_capacity(
        ARCHIVED_HEADER_LEN + message.payload.len(),
    ));
    archived.extend_from_slice(&message.sender.0);
    archived.extend_from_slice(&message.sender_device.to_be_bytes());
    archived.extend_from_slice(&message.epoch.to_be_bytes());
    archived.extend_from_slice(&message.payload);
    let mut envelope = ArchiveEnvelope {
        conversation,
        policy_sequence: policy.sequence(),
        ephemeral,
        ciphertext: Vec::new(),
    };
    let ad: [u8; ARCHIVE_ENVELOPE_HEADER_LEN] = envelope.associated_data();
    envelope.ciphertext = cipher::provider().xseal(&key, &nonce, &ad, &archived);
    debug_assert!(envelope.ciphertext.len() <= MAX_ARCHIVE_CIPHERTEXT_LEN);
    Ok(envelope)
}

/// `HKDF-SHA256(salt = conversation_id, ikm = shared, info = KDF_ARCHIVE_SEAL ‖ E ‖
/// archive_key, L = 56)`: the key (bytes 0..32) and nonce (32..56).
fn seal_key_nonce(
    shared: &[u8; 32],
    conversation: &ConversationId,
    ephemeral: &X25519PublicKey,
    archive_key: &X25519PublicKey,
) -> (Zeroizing<[u8; 32]>, [u8; 24]) {
    let mut info = Vec::with_capacity(labels::KDF_ARCHIVE_SEAL.len() + 64);
    info.extend_from_slice(labels::KDF_ARCHIVE_SEAL);
    info.extend_from_slice(ephemeral.as_bytes());
    info.extend_from_slice(archive_key.as_bytes());
    let okm = hkdf::<56>(&conversation.0, shared, &info);
    let mut key = Zeroizing::new([0u8; 32]);
    let mut nonce = [0u8; 24];
    let (k, n) = okm.split_at(32);
    key.copy_from_slice(k);
    nonce.copy_from_slice(n);
    (key, nonce)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use ed25519_dalek::SigningKey;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng as _;

    use super::*;
    use hushwire_proto::Codec;

    fn setup() -> (ArchiveSecretKey, ArchivePolicy, ArchivedMessage) {
        let key = ArchiveSecretKey::from_secret_bytes([0x41; 32]).unwrap();
        let org = SigningKey::from_bytes(&[0x4f; 32]);
        let policy = ArchivePolicy::issue(&org, 3, *key.public(), 2190).unwrap();
        let message = ArchivedMessage {
            sender: Fingerprint([7; 32]),
            sender_device: 2,
            epoch: 5,
            payload: vec![0x01; 256],
        };
        (key, policy, message)
    }

    #[test]
    fn a_sealed_message_opens_with_the_archive_key_only() {
        let (key, policy, message) = setup();
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let envelope = seal(&policy, ConversationId([9; 16]), &message, &mut rng).unwrap();
        assert_eq!(envelope.policy_sequence, 3);
        assert_eq!(envelope.ciphertext.len(), 44 + 256 + 16);
        let decoded = ArchiveEnvelope::from_bytes(&envelope.to_bytes()).unwrap();
        assert_eq!(key.open(&decoded).unwrap(), message);
        let other = ArchiveSecretKey::from_secret_bytes([0x42; 32]).unwrap();
        assert_eq!(other.open(&decoded), Err(ArchiveError::OpenFailed));
        // Every byte is authenticated: the header (as associated data) and the ciphertext.
        let bytes = envelope.to_bytes();
        for at in [2, 18, 30, bytes.len() - 1] {
            let mut altered = bytes.clone();
            altered[at] ^= 1;
            if let Ok(e) = ArchiveEnvelope::from_bytes(&altered) {
                assert!(key.open(&e).is_err(), "byte {at}");
            }
        }
        // A fresh ephemeral key each time.
        let again = seal(&policy, ConversationId([9; 16]), &message, &mut rng).unwrap();
        assert_ne!(again.ephemeral, envelope.ephemeral);
    }

    #[test]
    fn payloads_are_bounded() {
        let (_, policy, mut message) = setup();
        message.payload = vec![0; MAX_ARCHIVED_PAYLOAD_LEN + 1];
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        assert_eq!(
            seal(&policy, ConversationId([9; 16]), &message, &mut rng),
            Err(ArchiveError::PayloadTooLong {
                len: MAX_ARCHIVED_PAYLOAD_LEN + 1
            })
        );
        message.payload.pop();
        let envelope = seal(&policy, ConversationId([9; 16]), &message, &mut rng).unwrap();
        assert_eq!(envelope.ciphertext.len(), MAX_ARCHIVE_CIPHERTEXT_LEN);
        assert!(ArchiveEnvelope::from_bytes(&envelope.to_bytes()).is_ok());
    }
}
