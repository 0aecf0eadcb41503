//! Sealed records and signed checkpoints: what is stored, exported and verified
//! (`docs/transcripts.md` §3–§4).

use core::fmt;

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hushwire_proto::codec::{Codec, DecodeError, Reader, put_bytes_u32, read_header};
use hushwire_proto::keys::SIGNATURE_LEN;
use hushwire_proto::{Signer, labels};
use rand_core::CryptoRng;
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::record::{MAX_CONTENT_LEN, TranscriptRecord};
use crate::kdf::hkdf;

/// Wire type byte of a [`SealedRecord`].
pub const SEALED_RECORD_TYPE: u8 = 0x50;
/// Wire type byte of a [`TranscriptCheckpoint`].
pub const CHECKPOINT_TYPE: u8 = 0x51;
/// Largest sealed record ciphertext: the largest encoded record plus the tag.
pub const MAX_RECORD_CIPHERTEXT_LEN: usize = 1 + 32 + 16 + 8 + 8 + 1 + 4 + MAX_CONTENT_LEN + 16;
/// Bytes of a sealed record before its ciphertext length.
const SEALED_HEADER_LEN: usize = 2 + 8 + 32 + 24;

/// A transcript's random 16-byte identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TranscriptId(pub [u8; 16]);

impl TranscriptId {
    /// A fresh id: 16 bytes from `rng`.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        Self(id)
    }
}

impl fmt::Debug for TranscriptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TranscriptId(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// The key every record of one transcript is sealed under. Destroying it (and every copy,
/// including those inside exports) makes the transcript unreadable: crypto-shredding.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TranscriptKey([u8; 32]);

impl TranscriptKey {
    /// A fresh key: 32 bytes from `rng`.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        Self(key)
    }

    /// Wraps stored key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key bytes, for sealed storage or an export.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0)
    }

    /// Destroys the key. The caller must also delete every stored copy for the shredding to hold.
    pub fn shred(self) {
        drop(self);
    }

    /// `HKDF-SHA256(salt = transcript_id, ikm = key, info = KDF_TRANSCRIPT_RECORD, L = 32)`.
    fn record_key(&self, id: &TranscriptId) -> Zeroizing<[u8; 32]> {
        hkdf::<32>(&id.0, &self.0, labels::KDF_TRANSCRIPT_RECORD)
    }
}

impl fmt::Debug for TranscriptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TranscriptKey(<redacted>)")
    }
}

/// The hash chain's starting value: `SHA-256(TRANSCRIPT_GENESIS ‖ transcript_id)`.
pub fn genesis_hash(id: &TranscriptId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(labels::TRANSCRIPT_GENESIS);
    h.update(id.0);
    h.finalize().into()
}

/// The chain hash of a sealed record given its encoding (§3.4), without decoding it again.
pub(crate) fn hash_encoded(id: &TranscriptId, encoding: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(labels::TRANSCRIPT_RECORD_HASH);
    h.update(id.0);
    h.update(encoding);
    h.finalize().into()
}

/// One record as stored: its position, the hash of the record before it, and the ciphertext.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SealedRecord {
    /// Position in the transcript, from 0.
    pub sequence: u64,
    /// Hash of the previous sealed record (the genesis hash for record 0).
    pub previous_hash: [u8; 32],
    /// Random XChaCha20-Poly1305 nonce.
    pub nonce: [u8; 24],
    /// The sealed [`TranscriptRecord`] encoding.
    pub ciphertext: Vec<u8>,
}

impl SealedRecord {
    /// `SHA-256(TRANSCRIPT_RECORD_HASH ‖ transcript_id ‖ encoding)`: the next record's
    /// `previous_hash`.
    pub fn hash(&self, id: &TranscriptId) -> [u8; 32] {
        hash_encoded(id, &self.to_bytes())
    }

    /// AEAD associated data: `transcript_id ‖` the sealed header (version, type, sequence,
    /// previous hash, nonce).
    fn associated_data(
        id: &TranscriptId,
        sequence: u64,
        previous_hash: &[u8; 32],
        nonce: &[u8; 24],
    ) -> Vec<u8> {
        let mut ad = Vec::with_capacity(16 + SEALED_HEADER_LEN);
        ad.extend_from_slice(&id.0);
        ad.push(labels::PROTOCOL_VERSION);
        ad.push(SEALED_RECORD_TYPE);
        ad.extend_from_slice(&sequence.to_be_bytes());
        ad.extend_from_slice(previous_hash);
        ad.extend_from_slice(nonce);
        ad
    }

    /// Seals `record` at `sequence` after `previous_hash`, with a 24-byte nonce from `rng`.
    pub(crate) fn seal<R: CryptoRng + ?Sized>(
        id: &TranscriptId,
        key: &TranscriptKey,
        sequence: u64,
        previous_hash: [u8; 32],
        record: &TranscriptRecord,
        rng: &mut R,
    ) -> Self {
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        let plaintext = Zeroizing::new(record.to_bytes());
        let ad = Self::associated_data(id, sequence, &previous_hash, &nonce);
        let cipher = XChaCha20Poly1305::new(&(*key.record_key(id)).into());
        // Fails only beyond 256 GiB; records are bounded to MAX_CONTENT_LEN.
        let ciphertext = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &plaintext,
                    aad: &ad,
                },
            )
            .unwrap_or_default();
        Self {
            sequence,
            previous_hash,
            nonce,
            ciphertext,
        }
    }

    /// Decrypts and decodes the record; `None` if it fails authentication under `key` and this
    /// transcript id (altered, or from another transcript) or does not decode.
    pub fn open(&self, id: &TranscriptId, key: &TranscriptKey) -> Option<TranscriptRecord> {
        let ad = Self::associated_data(id, self.sequence, &self.previous_hash, &self.nonce);
        let cipher = XChaCha20Poly1305::new(&(*key.record_key(id)).into());
        let plaintext = Zeroizing::new(
            cipher
                .decrypt(
                    &XNonce::from(self.nonce),
                    Payload {
                        msg: &self.ciphertext,
                        aad: &ad,
                    },
                )
                .ok()?,
        );
        TranscriptRecord::from_bytes(&plaintext).ok()
    }
}

impl Codec for SealedRecord {
    const NAME: &'static str = "sealed transcript record";

    /// `version[1] ‖ type[1]=0x50 ‖ sequence[8] ‖ previous_hash[32] ‖ nonce[24] ‖
    /// ciphertext_len[4] ‖ ciphertext`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(labels::PROTOCOL_VERSION);
        out.push(SEALED_RECORD_TYPE);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.previous_hash);
        out.extend_from_slice(&self.nonce);
        put_bytes_u32(out, &self.ciphertext);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        read_header(r, SEALED_RECORD_TYPE, Self::NAME)?;
        Ok(Self {
            sequence: r.u64("sequence")?,
            previous_hash: r.array("previous hash")?,
            nonce: r.array("nonce")?,
            ciphertext: r
                .bytes_u32(MAX_RECORD_CIPHERTEXT_LEN, "record ciphertext")?
                .to_vec(),
        })
    }
}

/// A signed statement: "transcript `id` had `count` records, the last hashing to `head_hash`,
/// at `time_ms`" (and, if `closed`, "and will have no more").
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TranscriptCheckpoint {
    /// The transcript.
    pub transcript: TranscriptId,
    /// How many records it covers.
    pub count: u64,
    /// Hash of record `count - 1` (the genesis hash if `count` is 0).
    pub head_hash: [u8; 32],
    /// Signer's clock, Unix milliseconds.
    pub time_ms: u64,
    /// The transcript was closed: no record may follow.
    pub closed: bool,
    /// Ed25519 signature over `SIG_TRANSCRIPT_CHECKPOINT ‖ signed_message()`.
    pub signature: [u8; SIGNATURE_LEN],
}

impl TranscriptCheckpoint {
    /// `transcript_id[16] ‖ count[8] ‖ head_hash[32] ‖ time_ms[8] ‖ closed[1]`.
    pub fn signed_message(
        id: &TranscriptId,
        count: u64,
        head_hash: &[u8; 32],
        time_ms: u64,
        closed: bool,
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(65);
        m.extend_from_slice(&id.0);
        m.extend_from_slice(&count.to_be_bytes());
        m.extend_from_slice(head_hash);
        m.extend_from_slice(&time_ms.to_be_bytes());
        m.push(u8::from(closed));
        m
    }

    pub(crate) fn sign(
        signer: &impl Signer,
        id: TranscriptId,
        count: u64,
        head_hash: [u8; 32],
        time_ms: u64,
        closed: bool,
    ) -> Self {
        let message = Self::signed_message(&id, count, &head_hash, time_ms, closed);
        let signature = signer.sign(labels::SIG_TRANSCRIPT_CHECKPOINT, &message);
        Self {
            transcript: id,
            count,
            head_hash,
            time_ms,
            closed,
            signature,
        }
    }

    /// Checks the signature under `signer`.
    pub fn verify(&self, signer: &ed25519_dalek::VerifyingKey) -> bool {
        let message = Self::signed_message(
            &self.transcript,
            self.count,
            &self.head_hash,
            self.time_ms,
            self.closed,
        );
        hushwire_proto::signer::verify(
            signer,
            labels::SIG_TRANSCRIPT_CHECKPOINT,
            &message,
            &self.signature,
        )
    }
}

impl Codec for TranscriptCheckpoint {
    const NAME: &'static str = "transcript checkpoint";

    /// `version[1] ‖ type[1]=0x51 ‖ transcript_id[16] ‖ count[8] ‖ head_hash[32] ‖ time_ms[8] ‖
    /// closed[1] ‖ signature[64]`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(labels::PROTOCOL_VERSION);
        out.push(CHECKPOINT_TYPE);
        out.extend_from_slice(&Self::signed_message(
            &self.transcript,
            self.count,
            &self.head_hash,
            self.time_ms,
            self.closed,
        ));
        out.extend_from_slice(&self.signature);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        read_header(r, CHECKPOINT_TYPE, Self::NAME)?;
        Ok(Self {
            transcript: TranscriptId(r.array("transcript id")?),
            count: r.u64("count")?,
            head_hash: r.array("head hash")?,
            time_ms: r.u64("time")?,
            closed: r.flag("closed")?,
            signature: r.array("signature")?,
        })
    }
}
