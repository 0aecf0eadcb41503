//! A session with one peer device: the public face of the handshake and the Double Ratchet.
//!
//! ```text
//! initiator: Session::initiate(bundle) ──encrypt──▶ PreKeyMessage ──▶ Account::accept ─▶ responder
//!            (keeps sending PreKeyMessages until the first reply decrypts)
//! ```

use core::fmt;
use std::collections::VecDeque;

use hushwire_proto::codec::Codec;
use hushwire_proto::keys::KEM_CIPHERTEXT_LEN;
use hushwire_proto::{IdentityKey, PreKeyBundle, SafetyNumber, X25519PublicKey};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{DecryptionError, EncryptionError, SessionCreationError, UnsealError};
use crate::handshake::{self, ASSOCIATED_DATA_LEN};
use crate::keys::IdentityKeyPair;
use crate::ratchet::{
    ChainKey, DoubleRatchet, Gap, HeaderKey, RatchetKeyPair, ReceivingChain, RetiredChain, RootKey,
    SkippedKeys,
};
use crate::seal::{self, KIND_SESSION, StorageKey};
use crate::wire::{MAX_PLAINTEXT_LEN, Message, MessageHeader, PreKeyMessage};

/// The handshake values an initiator repeats in every message until the responder replies.
#[derive(Clone)]
struct PendingPreKey {
    signed_prekey_id: u32,
    one_time_prekey_id: Option<u32>,
    kem_prekey_id: u32,
    kem_ciphertext: Box<[u8; KEM_CIPHERTEXT_LEN]>,
}

/// An end-to-end encrypted session with one device.
///
/// `Debug` shows the two identities and nothing secret. Persist it with [`Session::seal`].
#[derive(Clone)]
pub struct Session {
    local_identity: IdentityKey,
    remote_identity: IdentityKey,
    associated_data: [u8; ASSOCIATED_DATA_LEN],
    /// The initiator's handshake key: identifies this session in prekey messages.
    base_key: X25519PublicKey,
    /// Responder only: digest of the handshake part of the prekey message that created the
    /// session; repeated prekey messages must match it exactly.
    handshake_digest: Option<[u8; 32]>,
    ratchet: DoubleRatchet,
    pending_prekey: Option<PendingPreKey>,
}

/// The session and first plaintext that accepting a prekey message yields.
#[derive(Debug)]
pub struct InboundSession {
    /// The new session.
    pub session: Session,
    /// The first message's plaintext.
    pub plaintext: Vec<u8>,
    /// The first message's decrypted header.
    pub header: MessageHeader,
}

/// A decrypted message: its plaintext and its header, which only the two parties can read (the
/// header is encrypted on the wire). The header names the message's place in the peer's chains,
/// `(ratchet_key, index)`, which a client uses to tell a duplicate from a reused key.
#[derive(Debug)]
pub struct DecryptedMessage {
    /// The plaintext.
    pub plaintext: Vec<u8>,
    /// The decrypted header.
    pub header: MessageHeader,
}

/// The secrets behind one encrypted message, published in the test vectors. Only built with the
/// `test-vectors` feature.
#[cfg(feature = "test-vectors")]
#[derive(Clone, Debug)]
pub struct MessageTrace {
    /// The sending chain key the message key was derived from (`MK = HMAC(chain_key, 0x01)`).
    pub chain_key: [u8; 32],
    /// The message key.
    pub message_key: [u8; 32],
    /// The message's header, as encrypted under `header_key`.
    pub header: MessageHeader,
    /// The header key the header was encrypted under.
    pub header_key: [u8; 32],
    /// The AES-256-GCM key expanded from the message key.
    pub aead_key: [u8; 32],
    /// The nonce expanded from it.
    pub nonce: [u8; 12],
    /// The sender's root key after this message.
    pub root_key: [u8; 32],
}

impl Session {
    /// Starts a session with the device that published `bundle`: verifies it, runs the
    /// initiator's half of the handshake and the first DH ratchet step. Draws from `rng`, in
    /// order: `EK_A` (32 bytes), the ML-KEM encapsulation randomness (32), the first ratchet
    /// key (32).
    pub fn initiate<R: CryptoRng + ?Sized>(
        identity: &IdentityKeyPair,
        bundle: &PreKeyBundle,
        rng: &mut R,
    ) -> Result<Self, SessionCreationError> {
        let handshake = handshake::initiate(identity, bundle, rng)?;
        Self::from_handshake(identity, bundle, handshake, rng)
    }

    /// [`Session::initiate`], also returning the handshake's intermediate secrets.
    #[cfg(feature = "test-vectors")]
    pub fn initiate_traced<R: CryptoRng + ?Sized>(
        identity: &IdentityKeyPair,
        bundle: &PreKeyBundle,
        rng: &mut R,
    ) -> Result<(Self, handshake::HandshakeTrace), SessionCreationError> {
        let handshake = handshake::initiate(identity, bundle, rng)?;
        let trace = handshake.trace.clone();
        Ok((
            Self::from_handshake(identity, bundle, handshake, rng)?,
            trace,
        ))
    }

    /// The initiator's session: the first DH ratchet step against the bundle's signed prekey,
    /// and the handshake values to repeat until the first reply.
    fn from_handshake<R: CryptoRng + ?Sized>(
        identity: &IdentityKeyPair,
        bundle: &PreKeyBundle,
        handshake: handshake::InitiatorHandshake,
        rng: &mut R,
    ) -> Result<Self, SessionCreationError> {
        let ratchet = DoubleRatchet::initiator(&handshake.keys, &bundle.signed_prekey.key, rng)
            .map_err(|_| SessionCreationError::NonContributoryKey)?;
        Ok(Self {
            local_identity: identity.public().clone(),
            remote_identity: bundle.identity.clone(),
            associated_data: handshake.associated_data,
            base_key: handshake.base_key,
            handshake_digest: None,
            ratchet,
            pending_prekey: Some(PendingPreKey {
                signed_prekey_id: bundle.signed_prekey.id,
                one_time_prekey_id: bundle.one_time_prekey.as_ref().map(|k| k.id),
                kem_prekey_id: bundle.kem_prekey.id,
                kem_ciphertext: handshake.kem_ciphertext,
            }),
        })
    }

    /// Builds the responder's session once `Account::accept` has run the handshake.
    pub(crate) fn accept_first<R: CryptoRng + ?Sized>(
        identity: &IdentityKeyPair,
        message: &PreKeyMessage,
        keys: &handshake::HandshakeKeys,
        associated_data: [u8; ASSOCIATED_DATA_LEN],
        signed_prekey: RatchetKeyPair,
        rng: &mut R,
    ) -> Result<InboundSession, DecryptionError> {
        let mut ratchet = DoubleRatchet::responder(keys, signed_prekey);
        let (plaintext, header) = ratchet.decrypt(&associated_data, &message.message, rng)?;
        Ok(InboundSession {
            session: Self {
                local_identity: identity.public().clone(),
                remote_identity: message.identity.clone(),
                associated_data,
                base_key: message.base_key,
                handshake_digest: Some(message.handshake_digest()),
                ratchet,
                pending_prekey: None,
            },
            plaintext,
            header,
        })
    }

    /// Encrypts `plaintext` (at most [`MAX_PLAINTEXT_LEN`] bytes) as the next message. Until the
    /// peer's first reply has been decrypted, the result is a prekey message.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, EncryptionError> {
        self.encrypt_inner(plaintext).map(|(bytes, _, _)| bytes)
    }

    /// [`Session::encrypt`], also returning the message's header (encrypted on the wire): its
    /// place `(ratchet_key, index)` in our chains, as the peer will see it.
    pub fn encrypt_message(
        &mut self,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, MessageHeader), EncryptionError> {
        let header = self.next_header();
        self.encrypt_inner(plaintext)
            .map(|(bytes, _, _)| (bytes, header))
    }

    /// The header the next message will carry.
    fn next_header(&self) -> MessageHeader {
        let r = &self.ratchet;
        MessageHeader {
            ratchet_key: r.ours.public,
            previous_chain_length: r.previous_sending_length,
            index: r
                .sending
                .as_ref()
                .map_or(0, |c| u32::try_from(c.index).unwrap_or(u32::MAX)),
        }
    }

    /// [`Session::encrypt`], also returning the secrets behind the message.
    #[cfg(feature = "test-vectors")]
    pub fn encrypt_traced(
        &mut self,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, MessageTrace), EncryptionError> {
        let chain_key = self
            .ratchet
            .sending
            .as_ref()
            .map(|c| c.key)
            .unwrap_or_default();
        let header = self.next_header();
        let (bytes, key, header_key) = self.encrypt_inner(plaintext)?;
        let (aead_key, nonce) = key.aead_key_and_nonce();
        Ok((
            bytes,
            MessageTrace {
                chain_key,
                message_key: key.key,
                header,
                header_key: header_key.0,
                aead_key,
                nonce,
                root_key: self.ratchet.root.0,
            },
        ))
    }

    fn encrypt_inner(
        &mut self,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, crate::ratchet::MessageKey, HeaderKey), EncryptionError> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(EncryptionError::PlaintextTooLong {
                len: plaintext.len(),
            });
        }
        let (message, key, header_key) = self.ratchet.encrypt(&self.associated_data, plaintext)?;
        let bytes = match &self.pending_prekey {
            Some(p) => PreKeyMessage {
                identity: self.local_identity.clone(),
                base_key: self.base_key,
                signed_prekey_id: p.signed_prekey_id,
                one_time_prekey_id: p.one_time_prekey_id,
                kem_prekey_id: p.kem_prekey_id,
                kem_ciphertext: p.kem_ciphertext.clone(),
                message,
            }
            .to_bytes(),
            None => message.to_bytes(),
        };
        Ok((bytes, key, header_key))
    }

    /// Decrypts a message of this session. On any error the session is unchanged. Draws 32 bytes
    /// from `rng` when the message starts a new chain (a DH ratchet step).
    ///
    /// A prekey message is accepted here only by the responder's session it created (the
    /// initiator repeats the handshake until it hears back): its base key and identity must be
    /// this session's, else [`DecryptionError::OtherSession`]; its handshake fields must match
    /// the first one's byte for byte, else [`DecryptionError::AuthenticationFailed`] (which is
    /// also what an initiator's session answers to a prekey message naming its own base key).
    pub fn decrypt<R: CryptoRng + ?Sized>(
        &mut self,
        message: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>, DecryptionError> {
        self.decrypt_message(message, rng).map(|m| m.plaintext)
    }

    /// [`Session::decrypt`], also returning the decrypted header: the message's place in the
    /// peer's chains, which the relay cannot see.
    pub fn decrypt_message<R: CryptoRng + ?Sized>(
        &mut self,
        message: &[u8],
        rng: &mut R,
    ) -> Result<DecryptedMessage, DecryptionError> {
        let message = Message::from_bytes(message)?;
        let ratchet_message = match &message {
            Message::Ratchet(m) => m,
            Message::PreKey(p) => {
                if p.base_key != self.base_key || p.identity != self.remote_identity {
                    return Err(DecryptionError::OtherSession);
                }
                if self.handshake_digest != Some(p.handshake_digest()) {
                    return Err(DecryptionError::AuthenticationFailed);
                }
                &p.message
            }
        };
        let (plaintext, header) =
            self.ratchet
                .decrypt(&self.associated_data, ratchet_message, rng)?;
        // The peer has the session: stop repeating the handshake.
        self.pending_prekey = None;
        Ok(DecryptedMessage { plaintext, header })
    }

    /// Our identity in this session.
    pub fn local_identity(&self) -> &IdentityKey {
        &self.local_identity
    }

    /// The peer's identity, as authenticated by the handshake.
    pub fn remote_identity(&self) -> &IdentityKey {
        &self.remote_identity
    }

    /// The safety number both users compare to confirm the peer's identity.
    pub fn safety_number(&self) -> SafetyNumber {
        SafetyNumber::compute(&self.local_identity, &self.remote_identity)
    }

    /// The initiator's handshake key, which names this session in prekey messages.
    pub fn base_key(&self) -> &X25519PublicKey {
        &self.base_key
    }

    /// True until a reply from the peer has been decrypted (our messages are prekey messages).
    pub fn awaiting_reply(&self) -> bool {
        self.pending_prekey.is_some()
    }

    /// Messages the peer sent that have not arrived, by chain. A message missing from the
    /// current chain may still be in flight; one missing from an earlier chain was sent before
    /// the peer's last reply and is more likely lost. The app decides when to call it lost.
    pub fn missing_messages(&self) -> Vec<Gap> {
        self.ratchet.gaps()
    }

    /// How many missing messages' keys were discarded to stay within the skipped-key bounds:
    /// those messages can no longer be decrypted.
    pub fn discarded_message_keys(&self) -> u64 {
        self.ratchet.skipped.discarded()
    }

    /// How many message keys are kept for messages that have not arrived.
    pub fn skipped_message_keys(&self) -> usize {
        self.ratchet.skipped.len()
    }

    /// Seals the session under `key` (24-byte nonce from `rng`). See `docs/protocol.md` §7.
    pub fn seal<R: CryptoRng + ?Sized>(&self, key: &StorageKey, rng: &mut R) -> Vec<u8> {
        let pickle = VersionedSessionPickle::V2(Box::new(SessionPickleV2::from(self)));
        let contents = Zeroizing::new(postcard::to_allocvec(&pickle).unwrap_or_default());
        seal::seal(KIND_SESSION, &contents, key, rng)
    }

    /// Opens a session sealed by [`Session::seal`]. A session sealed by protocol version 1 is
    /// refused with [`UnsealError::SessionVersion1`] (§7.5).
    pub fn unseal(sealed: &[u8], key: &StorageKey) -> Result<Self, UnsealError> {
        let contents = seal::unseal(KIND_SESSION, sealed, key)?;
        let pickle: VersionedSessionPickle =
            postcard::from_bytes(&contents).map_err(|_| UnsealError::InvalidContents)?;
        match pickle {
            VersionedSessionPickle::V1 => Err(UnsealError::SessionVersion1),
            VersionedSessionPickle::V2(p) => p.restore().ok_or(UnsealError::InvalidContents),
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("local", &self.local_identity)
            .field("remote", &self.remote_identity)
            .field("awaiting_reply", &self.awaiting_reply())
            .finish_non_exhaustive()
    }
}

/// Persisted form: a postcard enum whose first byte is the variant. A new field or meaning gets
/// a new variant. `V1` (protocol version 1, unencrypted headers) is recognised only to be
/// refused: its contents are not read.
#[derive(Serialize, Deserialize)]
enum VersionedSessionPickle {
    V1,
    V2(Box<SessionPickleV2>),
}

#[derive(Serialize, Deserialize)]
struct PendingPickle {
    signed_prekey_id: u32,
    one_time_prekey_id: Option<u32>,
    kem_prekey_id: u32,
    kem_ciphertext: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct SessionPickleV2 {
    local_identity: Vec<u8>,
    remote_identity: Vec<u8>,
    base_key: [u8; 32],
    handshake_digest: Option<[u8; 32]>,
    /// Which side we were: decides the order of the identities in the associated data.
    we_initiated: bool,
    root: RootKey,
    our_ratchet_secret: Zeroizing<[u8; 32]>,
    /// The public half, kept so unsealing needs no scalar multiplication (the seal
    /// authenticates it).
    our_ratchet_public: [u8; 32],
    sending: Option<(ChainKey, HeaderKey)>,
    next_sending_header: HeaderKey,
    previous_sending_length: u32,
    receiving: Option<([u8; 32], HeaderKey, ChainKey)>,
    next_receiving_header: HeaderKey,
    retired: Vec<([u8; 32], HeaderKey)>,
    skipped: SkippedKeys,
    pending: Option<PendingPickle>,
}

impl From<&Session> for SessionPickleV2 {
    fn from(s: &Session) -> Self {
        let r = &s.ratchet;
        Self {
            local_identity: s.local_identity.to_bytes(),
            remote_identity: s.remote_identity.to_bytes(),
            base_key: *s.base_key.as_bytes(),
            handshake_digest: s.handshake_digest,
            we_initiated: s.associated_data
                == handshake::associated_data(&s.local_identity, &s.remote_identity),
            root: r.root.clone(),
            our_ratchet_secret: Zeroizing::new(r.ours.secret.to_bytes()),
            our_ratchet_public: *r.ours.public.as_bytes(),
            sending: r.sending.clone().zip(r.sending_header.clone()),
            next_sending_header: r.next_sending_header.clone(),
            previous_sending_length: r.previous_sending_length,
            receiving: r.receiving.as_ref().map(|c| {
                (
                    *c.ratchet_key.as_bytes(),
                    c.header_key.clone(),
                    c.chain.clone(),
                )
            }),
            next_receiving_header: r.next_receiving_header.clone(),
            retired: r
                .retired
                .iter()
                .map(|k| (*k.ratchet_key.as_bytes(), k.header_key.clone()))
                .collect(),
            skipped: r.skipped.clone(),
            pending: s.pending_prekey.as_ref().map(|p| PendingPickle {
                signed_prekey_id: p.signed_prekey_id,
                one_time_prekey_id: p.one_time_prekey_id,
                kem_prekey_id: p.kem_prekey_id,
                kem_ciphertext: p.kem_ciphertext.to_vec(),
            }),
        }
    }
}

impl SessionPickleV2 {
    /// Rebuilds the session, re-validating every public key as if it came off the wire, except
    /// the identities' binding signatures and our own ratchet public key: all were verified or
    /// computed before the session was first sealed, and the seal authenticates these bytes.
    /// (Verifying them again made unsealing several times slower than vodozemac's, for no
    /// protection.)
    fn restore(self) -> Option<Session> {
        let local_identity = IdentityKey::from_sealed_bytes(&self.local_identity).ok()?;
        let remote_identity = IdentityKey::from_sealed_bytes(&self.remote_identity).ok()?;
        let key = |bytes: [u8; 32]| X25519PublicKey::from_array(bytes, "key").ok();
        let secret = x25519_dalek::StaticSecret::from(*self.our_ratchet_secret);
        let public = key(self.our_ratchet_public)?;
        let receiving = match self.receiving {
            Some((k, header_key, chain)) => Some(ReceivingChain {
                ratchet_key: key(k)?,
                header_key,
                chain,
            }),
            None => None,
        };
        let retired = self
            .retired
            .into_iter()
            .map(|(k, header_key)| {
                Some(RetiredChain {
                    ratchet_key: key(k)?,
                    header_key,
                })
            })
            .collect::<Option<VecDeque<_>>>()?;
        let (sending, sending_header) = match self.sending {
            Some((chain, header)) => (Some(chain), Some(header)),
            None => (None, None),
        };
        let pending_prekey = match self.pending {
            Some(p) => Some(PendingPreKey {
                signed_prekey_id: p.signed_prekey_id,
                one_time_prekey_id: p.one_time_prekey_id,
                kem_prekey_id: p.kem_prekey_id,
                kem_ciphertext: Box::new(p.kem_ciphertext.try_into().ok()?),
            }),
            None => None,
        };
        Some(Session {
            associated_data: if self.we_initiated {
                handshake::associated_data(&local_identity, &remote_identity)
            } else {
                handshake::associated_data(&remote_identity, &local_identity)
            },
            local_identity,
            remote_identity,
            base_key: key(self.base_key)?,
            handshake_digest: self.handshake_digest,
            ratchet: DoubleRatchet {
                root: self.root,
                ours: RatchetKeyPair { secret, public },
                sending,
                sending_header,
                next_sending_header: self.next_sending_header,
                previous_sending_length: self.previous_sending_length,
                receiving,
                next_receiving_header: self.next_receiving_header,
                retired,
                skipped: self.skipped,
            },
            pending_prekey,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng as _;

    use super::*;

    /// The first postcard byte of a version-1 session is its variant index, 0.
    #[test]
    fn a_version_1_session_is_refused_by_name() {
        let key = StorageKey::from_bytes([1; 32]);
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let sealed = seal::seal(KIND_SESSION, &[0x00, 0x20, 0x01], &key, &mut rng);
        assert_eq!(
            Session::unseal(&sealed, &key).unwrap_err(),
            UnsealError::SessionVersion1
        );
        let garbage = seal::seal(KIND_SESSION, &[0x07], &key, &mut rng);
        assert_eq!(
            Session::unseal(&garbage, &key).unwrap_err(),
            UnsealError::InvalidContents
        );
    }
}
