//! Exports for auditors: one or more transcripts re-sealed to recipients' X25519 keys and
//! signed by the exporting device, as a single self-describing stream produced and consumed in
//! bounded memory (`docs/transcripts.md` §6; this is export format version 2).
//!
//! ```text
//! header  = version[1]=0x02 ‖ type[1]=0x60 ‖ recipient_count[1] ‖ recipients
//! recipient = recipient_key[32] ‖ ephemeral_key[32] ‖ wrapped_file_key[48]
//! body    = chunk*   chunk = length[4] ‖ ChaCha20-Poly1305(payload_key, nonce(i, last), chunk_plaintext)
//! ```
//!
//! Each recipient entry wraps a random 32-byte file key: `wrap_key ‖ wrap_nonce =
//! HKDF-SHA256(salt = ephemeral_key ‖ recipient_key, ikm = X25519(ephemeral, recipient), info =
//! KDF_EXPORT_WRAP, L = 44)`, sealed with ChaCha20-Poly1305 whose associated data is the
//! recipient's key and the header without the wrapped keys (§6.2). The body key is
//! `payload_key = HKDF-SHA256(salt = SHA-256(header), ikm = file_key, info = KDF_EXPORT_PAYLOAD)`,
//! so altering any header byte makes the body unreadable. Chunk `i`'s nonce is
//! `i[8, big-endian] ‖ 0x00 0x00 0x00 ‖ last[1]`: a reordered, dropped or truncated chunk fails,
//! and a stream that ends without a chunk marked last is refused (the STREAM construction).
//!
//! The chunk plaintexts concatenate to a sequence of items, `tag[1] ‖ length[4] ‖ body`:
//! `0x01` transcript start (`id[16] ‖ signer identity[128] ‖ transcript key[32] ‖
//! record count[8]`), `0x02` checkpoint, `0x03` sealed record, `0x04` transcript end
//! (`record count[8] ‖ head hash[32]`, the final state), `0xFF` end of export (`exporter
//! identity[128] ‖ signature[64]`). The exporter signs the header's hash and every transcript's
//! final state (§6.6), so a recipient, who holds the transcript keys, still cannot add, remove or
//! alter records after the last checkpoint. Checkpoints precede the records they cover, so a
//! reader verifies in one pass.

use core::fmt;

use hushwire_proto::codec::{Codec, DecodeError, Reader};
use hushwire_proto::keys::SIGNATURE_LEN;
use hushwire_proto::{Fingerprint, IdentityKey, X25519PublicKey, labels};
use rand_core::CryptoRng;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use super::sealed::{
    MAX_RECORD_CIPHERTEXT_LEN, SealedRecord, TranscriptCheckpoint, TranscriptId, TranscriptKey,
    genesis_hash, hash_encoded,
};
use crate::kdf::{aead_decrypt, aead_encrypt, hkdf};
use crate::keys::{IdentityKeyPair, diffie_hellman, generate_x25519, x25519_from_secret};

/// Wire type byte of an export header.
pub const EXPORT_TYPE: u8 = 0x60;
/// Format version of the exports this module writes and reads (`docs/transcripts.md` §6.1): 2,
/// signed by the exporter. It is the export's own version, independent of the wire protocol's.
pub const EXPORT_VERSION: u8 = 2;
/// The version of unsigned exports, which are refused with [`ExportError::UnsignedVersion1`]
/// (§6.10).
const EXPORT_VERSION_UNSIGNED: u8 = 1;
/// Bytes of the statement the exporter signs (§6.6): `SHA-256(header)[32] ‖
/// transcript_count[8] ‖ states_hash[32]`.
pub const EXPORT_SIGNED_MESSAGE_LEN: usize = 72;
/// Body of a transcript-end item: `record_count[8] ‖ head_hash[32]`.
const TRANSCRIPT_END_LEN: usize = 40;
/// Plaintext bytes per chunk (64 KiB).
pub const CHUNK_LEN: usize = 64 * 1024;
/// The most recipients one export may name.
pub const MAX_RECIPIENTS: usize = 16;
/// Largest item in the plaintext stream: a sealed record with its framing.
const MAX_ITEM_LEN: usize = 2 + 8 + 32 + 24 + 4 + MAX_RECORD_CIPHERTEXT_LEN;
const RECIPIENT_LEN: usize = 32 + 32 + 48;

const ITEM_TRANSCRIPT_START: u8 = 0x01;
const ITEM_CHECKPOINT: u8 = 0x02;
const ITEM_RECORD: u8 = 0x03;
const ITEM_TRANSCRIPT_END: u8 = 0x04;
const ITEM_EXPORT_END: u8 = 0xff;

/// An auditor's (or compliance archive's) X25519 key pair that exports are sealed to.
pub struct AuditorKey {
    secret: StaticSecret,
    public: X25519PublicKey,
}

impl AuditorKey {
    /// A fresh key pair (32 bytes from `rng`).
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let (secret, public) = generate_x25519(rng);
        Self { secret, public }
    }

    /// Rebuilds the key pair from its stored secret.
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Option<Self> {
        x25519_from_secret(bytes).map(|(secret, public)| Self { secret, public })
    }

    /// The secret, for the auditor's own sealed storage.
    pub fn to_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The public key to give to clinics.
    pub fn public(&self) -> &X25519PublicKey {
        &self.public
    }
}

impl fmt::Debug for AuditorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditorKey({:?})", self.public)
    }
}

/// Why an export could not be read (`docs/transcripts.md` §6.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportError {
    /// The header or an item is malformed.
    Malformed(DecodeError),
    /// A version-1 export: it carries no exporter signature, so any of its recipients could have
    /// forged its unsigned records. Refused; the device re-exports in version 2 (§6.10).
    UnsignedVersion1,
    /// The export is not sealed to this key.
    NotARecipient,
    /// This key's entry did not unwrap: the header was altered.
    KeyUnwrapFailed,
    /// A chunk failed authentication: the body was altered, reordered or spliced.
    ChunkAuthenticationFailed {
        /// Index of the chunk.
        chunk: u64,
    },
    /// The stream ended before its final chunk: the export was truncated.
    Truncated,
    /// Data follows the final chunk.
    TrailingData,
    /// Items are out of their required order (for example a record outside a transcript, a
    /// checkpoint after a record, or more records than the transcript announced).
    UnexpectedItem,
    /// A transcript ended with fewer records than its start announced.
    RecordCountMismatch {
        /// Records the transcript start announced.
        announced: u64,
        /// Records present.
        found: u64,
    },
    /// The exporter's signature (§6.6) does not verify under the identity named in the export:
    /// the header, a transcript's identity or stated final state, or the signature was altered.
    BadExportSignature,
    /// The export is validly signed, but by another identity than the reader expected.
    WrongExporter {
        /// Fingerprint of the identity that did sign it.
        found: Fingerprint,
    },
    /// A transcript holds more records than the exporter signed: records were appended after
    /// the signed final state.
    RecordsAppended {
        /// The transcript.
        transcript: TranscriptId,
        /// Records the exporter signed.
        signed: u64,
        /// Records present.
        found: u64,
    },
    /// A transcript holds fewer records than the exporter signed: records were removed.
    RecordsRemoved {
        /// The transcript.
        transcript: TranscriptId,
        /// Records the exporter signed.
        signed: u64,
        /// Records present.
        found: u64,
    },
    /// A transcript holds as many records as the exporter signed, but they do not hash to the
    /// signed chain head: a record (at the latest the last one) was altered or replaced.
    RecordsAltered {
        /// The transcript.
        transcript: TranscriptId,
        /// Records present (and signed).
        records: u64,
    },
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed export: {e}"),
            Self::NotARecipient => f.write_str("this export is not sealed to this key"),
            Self::KeyUnwrapFailed => {
                f.write_str("the export's key could not be unwrapped (header altered)")
            }
            Self::ChunkAuthenticationFailed { chunk } => {
                write!(
                    f,
                    "chunk {chunk} failed authentication (altered, reordered or spliced)"
                )
            }
            Self::Truncated => f.write_str("export is truncated: its final chunk is missing"),
            Self::TrailingData => f.write_str("data follows the export's final chunk"),
            Self::UnexpectedItem => f.write_str("export items are out of order"),
            Self::RecordCountMismatch { announced, found } => {
                write!(
                    f,
                    "a transcript announced {announced} records but holds {found}"
                )
            }
            Self::UnsignedVersion1 => f.write_str(
                "this is a version-1 export, which is unsigned (its recipients could have forged \
                 records in it); it is refused: export again from the device",
            ),
            Self::BadExportSignature => f.write_str(
                "the exporter's signature does not verify: the export was forged or altered",
            ),
            Self::WrongExporter { found } => write!(
                f,
                "the export is signed by identity {found}, not by the expected exporter"
            ),
            Self::RecordsAppended {
                transcript,
                signed,
                found,
            } => write!(
                f,
                "forged export: transcript {transcript:?} holds {found} records but the exporter \
                 signed {signed}: {} record(s) were appended after the signed state",
                found.saturating_sub(*signed)
            ),
            Self::RecordsRemoved {
                transcript,
                signed,
                found,
            } => write!(
                f,
                "forged export: transcript {transcript:?} holds {found} records but the exporter \
                 signed {signed}: {} record(s) were removed",
                signed.saturating_sub(*found)
            ),
            Self::RecordsAltered {
                transcript,
                records,
            } => write!(
                f,
                "forged export: the {records} records of transcript {transcript:?} do not hash to \
                 the chain head the exporter signed: records were altered"
            ),
        }
    }
}

impl std::error::Error for ExportError {}

impl From<DecodeError> for ExportError {
    fn from(e: DecodeError) -> Self {
        Self::Malformed(e)
    }
}

fn chunk_nonce(index: u64, last: bool) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    let (counter, tail) = nonce.split_at_mut(8);
    counter.copy_from_slice(&index.to_be_bytes());
    if let Some(flag) = tail.last_mut() {
        *flag = u8::from(last);
    }
    nonce
}

fn payload_key(header: &[u8], file_key: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let salt: [u8; 32] = Sha256::digest(header).into();
    hkdf::<32>(&salt, file_key, labels::KDF_EXPORT_PAYLOAD)
}

/// `HKDF-SHA256(salt = ephemeral ‖ recipient, ikm = shared, info = KDF_EXPORT_WRAP, L = 44)`:
/// the wrap key (bytes 0..32) and the wrap nonce (bytes 32..44), §6.2.
fn wrap_key_nonce(
    shared: &[u8; 32],
    ephemeral: &X25519PublicKey,
    recipient: &X25519PublicKey,
) -> (Zeroizing<[u8; 32]>, [u8; 12]) {
    let mut salt = [0u8; 64];
    let (a, b) = salt.split_at_mut(32);
    a.copy_from_slice(ephemeral.as_bytes());
    b.copy_from_slice(recipient.as_bytes());
    let okm = hkdf::<44>(&salt, shared, labels::KDF_EXPORT_WRAP);
    let mut key = Zeroizing::new([0u8; 32]);
    let mut nonce = [0u8; 12];
    let (k, n) = okm.split_at(32);
    key.copy_from_slice(k);
    nonce.copy_from_slice(n);
    (key, nonce)
}

/// The wrap's associated data (§6.2): `recipient_key[32] ‖ header prefix[3] ‖` every entry's
/// `recipient_key ‖ ephemeral_key` (64 · r bytes): the header without the wrapped keys, which
/// the payload key covers.
fn wrap_ad(recipient: &X25519PublicKey, prefix: &[u8; 3], keys: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(35 + keys.len());
    ad.extend_from_slice(recipient.as_bytes());
    ad.extend_from_slice(prefix);
    ad.extend_from_slice(keys);
    ad
}

/// The statement the exporter signs (§6.6): `SHA-256(header)[32] ‖ transcript_count[8] ‖
/// states_hash[32]`, where `states_hash` is SHA-256 over every transcript's
/// [`state_entry`], in order.
fn export_message(
    header_hash: &[u8; 32],
    transcript_count: u64,
    states_hash: &[u8; 32],
) -> [u8; EXPORT_SIGNED_MESSAGE_LEN] {
    let mut m = [0u8; EXPORT_SIGNED_MESSAGE_LEN];
    let (h, rest) = m.split_at_mut(32);
    let (c, s) = rest.split_at_mut(8);
    h.copy_from_slice(header_hash);
    c.copy_from_slice(&transcript_count.to_be_bytes());
    s.copy_from_slice(states_hash);
    m
}

/// One transcript's final state as signed (88 bytes): `transcript_id[16] ‖
/// signer_fingerprint[32] ‖ record_count[8] ‖ head_hash[32]`.
fn state_entry(
    id: &TranscriptId,
    signer: &Fingerprint,
    record_count: u64,
    head: &[u8; 32],
) -> [u8; 88] {
    let mut e = [0u8; 88];
    let (i, rest) = e.split_at_mut(16);
    let (f, rest) = rest.split_at_mut(32);
    let (c, h) = rest.split_at_mut(8);
    i.copy_from_slice(&id.0);
    f.copy_from_slice(&signer.0);
    c.copy_from_slice(&record_count.to_be_bytes());
    h.copy_from_slice(head);
    e
}

/// The final state of the transcript being written or read: its id, its signer's
/// fingerprint, the records so far and the chain hash of the last (the genesis hash if none).
#[derive(Clone, Copy)]
struct Running {
    id: TranscriptId,
    signer: Fingerprint,
    announced: u64,
    seen: u64,
    head: [u8; 32],
}

impl Running {
    fn new(id: TranscriptId, signer: Fingerprint, announced: u64) -> Self {
        Self {
            id,
            signer,
            announced,
            seen: 0,
            head: genesis_hash(&id),
        }
    }

    fn push(&mut self, encoding: &[u8]) {
        self.head = hash_encoded(&self.id, encoding);
        self.seen += 1;
    }
}

/// What a transcript in an export starts with.
#[derive(Clone, Debug)]
pub struct TranscriptManifest {
    /// The transcript.
    pub id: TranscriptId,
    /// The identity that signed its checkpoints.
    pub signer: IdentityKey,
    /// Its key, so the auditor can open and authenticate the records.
    pub key: TranscriptKey,
    /// How many records follow.
    pub record_count: u64,
}

/// Produces an export: feed it transcripts, write out every byte it returns, in order, and
/// [`ExportWriter::finish`] signs it with the exporting device's identity.
pub struct ExportWriter {
    payload_key: Zeroizing<[u8; 32]>,
    buffer: Zeroizing<Vec<u8>>,
    chunk_index: u64,
    header_hash: [u8; 32],
    states: Sha256,
    transcript_count: u64,
    current: Option<Running>,
}

impl ExportWriter {
    /// Starts an export sealed to `recipients` (1 to [`MAX_RECIPIENTS`]). Draws from `rng`: the
    /// file key (32 bytes), then for each recipient an ephemeral secret (32). Returns the writer
    /// and the header bytes. `None` if the recipient count is out of range.
    pub fn new<R: CryptoRng + ?Sized>(
        recipients: &[X25519PublicKey],
        rng: &mut R,
    ) -> Option<(Self, Vec<u8>)> {
        if recipients.is_empty() || recipients.len() > MAX_RECIPIENTS {
            return None;
        }
        let mut file_key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(file_key.as_mut());
        let prefix = [
            EXPORT_VERSION,
            EXPORT_TYPE,
            u8::try_from(recipients.len()).ok()?,
        ];
        // Every entry's keys first: each wrap's associated data covers all of them.
        let mut keys = Vec::with_capacity(64 * recipients.len());
        let mut shared = Vec::with_capacity(recipients.len());
        for recipient in recipients {
            let (ephemeral, ephemeral_public) = generate_x25519(rng);
            shared.push((diffie_hellman(&ephemeral, recipient)?, ephemeral_public));
            keys.extend_from_slice(recipient.as_bytes());
            keys.extend_from_slice(ephemeral_public.as_bytes());
        }
        let mut header = prefix.to_vec();
        for (recipient, (secret, ephemeral_public)) in recipients.iter().zip(&shared) {
            let (key, nonce) = wrap_key_nonce(secret, ephemeral_public, recipient);
            let ad = wrap_ad(recipient, &prefix, &keys);
            header.extend_from_slice(recipient.as_bytes());
            header.extend_from_slice(ephemeral_public.as_bytes());
            header.extend_from_slice(&aead_encrypt(&key, &nonce, &ad, file_key.as_slice()));
        }
        let writer = Self {
            payload_key: payload_key(&header, &file_key),
            buffer: Zeroizing::new(Vec::with_capacity(CHUNK_LEN + MAX_ITEM_LEN)),
            chunk_index: 0,
            header_hash: Sha256::digest(&header).into(),
            states: Sha256::new(),
            transcript_count: 0,
            current: None,
        };
        Some((writer, header))
    }

    fn item(&mut self, tag: u8, body: &[u8]) -> Vec<u8> {
        self.buffer.push(tag);
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        self.buffer.extend_from_slice(&len.to_be_bytes());
        self.buffer.extend_from_slice(body);
        let mut out = Vec::new();
        while self.buffer.len() > CHUNK_LEN {
            let rest = self.buffer.split_off(CHUNK_LEN);
            let chunk = std::mem::replace(&mut *self.buffer, rest);
            self.seal_chunk(&chunk, false, &mut out);
        }
        out
    }

    fn seal_chunk(&mut self, plaintext: &[u8], last: bool, out: &mut Vec<u8>) {
        let sealed = aead_encrypt(
            &self.payload_key,
            &chunk_nonce(self.chunk_index, last),
            &[],
            plaintext,
        );
        self.chunk_index += 1;
        out.extend_from_slice(
            &u32::try_from(sealed.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        out.extend_from_slice(&sealed);
    }

    /// Starts a transcript and its checkpoints (they precede the records they cover).
    pub fn begin_transcript(
        &mut self,
        manifest: &TranscriptManifest,
        checkpoints: &[TranscriptCheckpoint],
    ) -> Vec<u8> {
        let mut body = Zeroizing::new(Vec::with_capacity(188));
        body.extend_from_slice(&manifest.id.0);
        manifest.signer.encode(&mut body);
        body.extend_from_slice(manifest.key.to_bytes().as_slice());
        body.extend_from_slice(&manifest.record_count.to_be_bytes());
        self.current = Some(Running::new(
            manifest.id,
            manifest.signer.fingerprint(),
            manifest.record_count,
        ));
        let mut out = self.item(ITEM_TRANSCRIPT_START, &body);
        for c in checkpoints {
            out.extend(self.item(ITEM_CHECKPOINT, &c.to_bytes()));
        }
        out
    }

    /// Adds one sealed record of the current transcript (the caller passes them in sequence
    /// order); the writer keeps the chain hash of the last one for the signed final state.
    pub fn record(&mut self, record: &SealedRecord) -> Vec<u8> {
        let encoding = record.to_bytes();
        if let Some(t) = self.current.as_mut() {
            t.push(&encoding);
        }
        self.item(ITEM_RECORD, &encoding)
    }

    /// Ends the current transcript with its final state, `record_count[8] ‖ head_hash[32]`:
    /// the records written since [`ExportWriter::begin_transcript`] and the chain hash of the
    /// last (§6.5). The final signature covers it.
    pub fn end_transcript(&mut self) -> Vec<u8> {
        let mut body = [0u8; TRANSCRIPT_END_LEN];
        if let Some(t) = self.current.take() {
            let (count, head) = body.split_at_mut(8);
            count.copy_from_slice(&t.seen.to_be_bytes());
            head.copy_from_slice(&t.head);
            self.states
                .update(state_entry(&t.id, &t.signer, t.seen, &t.head));
            self.transcript_count += 1;
        }
        self.item(ITEM_TRANSCRIPT_END, &body)
    }

    /// Ends the export: signs, with the exporting device's identity, the header's hash and
    /// every transcript's final state (`SIG_TRANSCRIPT_EXPORT`, §6.6), writes the export-end
    /// item (`exporter[128] ‖ signature[64]`) and seals the final chunk, marked last.
    pub fn finish(mut self, exporter: &IdentityKeyPair) -> Vec<u8> {
        let states: [u8; 32] = std::mem::take(&mut self.states).finalize().into();
        let message = export_message(&self.header_hash, self.transcript_count, &states);
        let signature = exporter.sign(labels::SIG_TRANSCRIPT_EXPORT, &message);
        let mut body = Vec::with_capacity(128 + SIGNATURE_LEN);
        exporter.public().encode(&mut body);
        body.extend_from_slice(&signature);
        let mut out = self.item(ITEM_EXPORT_END, &body);
        let rest = std::mem::take(&mut *self.buffer);
        self.seal_chunk(&rest, true, &mut out);
        out
    }
}

/// One decoded item of an export.
#[derive(Debug)]
pub enum ExportItem {
    /// A transcript begins; its checkpoints follow, then its records.
    TranscriptStart(Box<TranscriptManifest>),
    /// A checkpoint of the current transcript.
    Checkpoint(TranscriptCheckpoint),
    /// A sealed record of the current transcript.
    Record(SealedRecord),
    /// The current transcript ends.
    TranscriptEnd,
}

/// Reads an export incrementally: [`ExportReader::feed`] it bytes as they arrive (any split),
/// then [`ExportReader::finish`], which returns the identity that signed it. Memory stays
/// bounded by one chunk plus one item.
///
/// Items are returned as they are decrypted, before the exporter's signature at the end of the
/// stream is checked: nothing they say may be trusted until `finish` succeeds (§6.7).
pub struct ExportReader {
    secret: StaticSecret,
    public: X25519PublicKey,
    /// The identity that must have signed the export, if the caller knows it.
    expected_exporter: Option<Fingerprint>,
    header_hash: [u8; 32],
    states: Sha256,
    transcript_count: u64,
    /// The first transcript whose records differ from its stated final state.
    first_mismatch: Option<ExportError>,
    /// The verified exporter, once the export-end item was read.
    exporter: Option<IdentityKey>,
    /// Bytes not yet consumed (header, or a partial chunk).
    input: Vec<u8>,
    payload_key: Option<Zeroizing<[u8; 32]>>,
    /// Decrypted bytes not yet parsed into items.
    plaintext: Zeroizing<Vec<u8>>,
    chunk_index: u64,
    saw_last_chunk: bool,
    saw_export_end: bool,
    /// Inside a transcript: its running state.
    transcript: Option<Running>,
}

impl ExportReader {
    /// A reader for exports sealed to `key`, signed by any identity: [`ExportReader::finish`]
    /// returns the signer, whose fingerprint the caller MUST compare with the device it expects
    /// (§6.7).
    pub fn new(key: &AuditorKey) -> Self {
        Self {
            secret: key.secret.clone(),
            public: key.public,
            expected_exporter: None,
            header_hash: [0u8; 32],
            states: Sha256::new(),
            transcript_count: 0,
            first_mismatch: None,
            exporter: None,
            input: Vec::new(),
            payload_key: None,
            plaintext: Zeroizing::new(Vec::new()),
            chunk_index: 0,
            saw_last_chunk: false,
            saw_export_end: false,
            transcript: None,
        }
    }

    /// A reader for exports sealed to `key` that must be signed by the identity whose
    /// fingerprint is `exporter` (obtained out of band, `protocol.md` §3.3); any other valid
    /// signer is [`ExportError::WrongExporter`].
    pub fn with_exporter(key: &AuditorKey, exporter: Fingerprint) -> Self {
        let mut reader = Self::new(key);
        reader.expected_exporter = Some(exporter);
        reader
    }

    /// Consumes `bytes`, returning every item completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<ExportItem>, ExportError> {
        self.input.extend_from_slice(bytes);
        if self.payload_key.is_none() && !self.try_read_header()? {
            return Ok(Vec::new());
        }
        let mut items = Vec::new();
        // Consume from an offset and drain once: draining per chunk would move the rest of a
        // large input again for every chunk.
        let mut offset = 0;
        let result = loop {
            let rest = self.input.get(offset..).unwrap_or_default();
            if self.saw_last_chunk {
                break if rest.is_empty() {
                    Ok(())
                } else {
                    Err(ExportError::TrailingData)
                };
            }
            let mut r = Reader::new(rest);
            let Ok(len) = r.u32("chunk length") else {
                break Ok(());
            };
            let len = len as usize;
            if len > CHUNK_LEN + 16 {
                break Err(DecodeError::TooLong {
                    field: "chunk",
                    len,
                    max: CHUNK_LEN + 16,
                }
                .into());
            }
            if len < 16 {
                break Err(DecodeError::InvalidValue {
                    field: "chunk length",
                }
                .into());
            }
            let Ok(sealed) = r.take(len, "chunk") else {
                break Ok(());
            };
            let Some(key) = self.payload_key.as_ref() else {
                break Err(ExportError::Truncated);
            };
            let opened = aead_decrypt(key, &chunk_nonce(self.chunk_index, false), &[], sealed)
                .map(|p| (p, false))
                .or_else(|| {
                    aead_decrypt(key, &chunk_nonce(self.chunk_index, true), &[], sealed)
                        .map(|p| (p, true))
                });
            let Some((plain, last)) = opened else {
                break Err(ExportError::ChunkAuthenticationFailed {
                    chunk: self.chunk_index,
                });
            };
            offset += 4 + len;
            self.chunk_index += 1;
            self.saw_last_chunk = last;
            self.plaintext.extend_from_slice(&plain);
            if let Err(e) = self.parse_items(&mut items) {
                break Err(e);
            }
        };
        self.input.drain(..offset);
        result.map(|()| items)
    }

    /// Checks that the export ended properly and returns the identity that signed it (already
    /// verified, and equal to the expected one if [`ExportReader::with_exporter`] gave one).
    /// [`ExportError::Truncated`] if the stream ended early.
    pub fn finish(self) -> Result<IdentityKey, ExportError> {
        // The export-end item is only accepted outside a transcript, so a complete export
        // cannot end inside one.
        if !self.saw_last_chunk || !self.saw_export_end || !self.plaintext.is_empty() {
            return Err(ExportError::Truncated);
        }
        self.exporter.ok_or(ExportError::Truncated)
    }

    /// Parses the header once it is complete; `Ok(false)` if more bytes are needed.
    fn try_read_header(&mut self) -> Result<bool, ExportError> {
        let mut r = Reader::new(&self.input);
        let Ok(prefix) = r.take(3, "export header") else {
            return Ok(false);
        };
        if let [version, tag, count] = *prefix {
            if version == EXPORT_VERSION_UNSIGNED && tag == EXPORT_TYPE {
                return Err(ExportError::UnsignedVersion1);
            }
            if version != EXPORT_VERSION {
                return Err(DecodeError::UnsupportedVersion { version }.into());
            }
            if tag != EXPORT_TYPE {
                return Err(DecodeError::UnknownType {
                    structure: "export",
                    tag,
                }
                .into());
            }
            let count = usize::from(count);
            if count == 0 || count > MAX_RECIPIENTS {
                return Err(DecodeError::InvalidValue {
                    field: "recipient count",
                }
                .into());
            }
            let header_len = 3 + count * RECIPIENT_LEN;
            let Some(header) = self.input.get(..header_len) else {
                return Ok(false);
            };
            let prefix = [version, tag, u8::try_from(count).unwrap_or_default()];
            // Every ephemeral key is validated, and every entry's keys are collected for the
            // wrap's associated data, before the reader's own entry is opened.
            let mut entries = Reader::new(header.get(3..).unwrap_or_default());
            let mut keys = Vec::with_capacity(64 * count);
            let mut own = None;
            for _ in 0..count {
                let recipient: [u8; 32] = entries.array("recipient key")?;
                let ephemeral = X25519PublicKey::read_field(&mut entries, "ephemeral key")?;
                let wrapped = entries.take(48, "wrapped file key")?;
                keys.extend_from_slice(&recipient);
                keys.extend_from_slice(ephemeral.as_bytes());
                if own.is_none() && bool::from(recipient.ct_eq(self.public.as_bytes())) {
                    own = Some((ephemeral, wrapped));
                }
            }
            let (ephemeral, wrapped) = own.ok_or(ExportError::NotARecipient)?;
            let shared =
                diffie_hellman(&self.secret, &ephemeral).ok_or(ExportError::KeyUnwrapFailed)?;
            let (key, nonce) = wrap_key_nonce(&shared, &ephemeral, &self.public);
            let ad = wrap_ad(&self.public, &prefix, &keys);
            let unwrapped =
                aead_decrypt(&key, &nonce, &ad, wrapped).ok_or(ExportError::KeyUnwrapFailed)?;
            let bytes: [u8; 32] = unwrapped
                .as_slice()
                .try_into()
                .map_err(|_| ExportError::KeyUnwrapFailed)?;
            let file_key = Zeroizing::new(bytes);
            self.payload_key = Some(payload_key(header, &file_key));
            self.header_hash = Sha256::digest(header).into();
            self.input.drain(..header_len);
            return Ok(true);
        }
        Ok(false)
    }

    fn parse_items(&mut self, items: &mut Vec<ExportItem>) -> Result<(), ExportError> {
        let mut offset = 0;
        let result = self.parse_items_from(&mut offset, items);
        self.plaintext.drain(..offset);
        result
    }

    /// Parses complete items starting at `offset`, advancing it past each.
    fn parse_items_from(
        &mut self,
        offset: &mut usize,
        items: &mut Vec<ExportItem>,
    ) -> Result<(), ExportError> {
        loop {
            let mut r = Reader::new(self.plaintext.get(*offset..).unwrap_or_default());
            let Ok(tag) = r.u8("item tag") else {
                return Ok(());
            };
            let Ok(len) = r.u32("item length") else {
                return Ok(());
            };
            let len = len as usize;
            if len > MAX_ITEM_LEN {
                return Err(DecodeError::TooLong {
                    field: "export item",
                    len,
                    max: MAX_ITEM_LEN,
                }
                .into());
            }
            let Ok(body) = r.take(len, "export item") else {
                return Ok(());
            };
            if self.saw_export_end {
                return Err(ExportError::TrailingData);
            }
            let item = match (tag, self.transcript.as_mut()) {
                (ITEM_TRANSCRIPT_START, None) => {
                    let mut b = Reader::new(body);
                    let id = TranscriptId(b.array("transcript id")?);
                    let signer = IdentityKey::read(&mut b)?;
                    let key = TranscriptKey::from_bytes(b.array("transcript key")?);
                    let record_count = b.u64("record count")?;
                    b.expect_empty("transcript start")?;
                    self.transcript = Some(Running::new(id, signer.fingerprint(), record_count));
                    Some(ExportItem::TranscriptStart(Box::new(TranscriptManifest {
                        id,
                        signer,
                        key,
                        record_count,
                    })))
                }
                // Checkpoints precede every record of their transcript.
                (ITEM_CHECKPOINT, Some(t)) if t.seen == 0 => Some(ExportItem::Checkpoint(
                    TranscriptCheckpoint::from_bytes(body)?,
                )),
                (ITEM_RECORD, Some(t)) if t.seen < t.announced => {
                    let record = SealedRecord::from_bytes(body)?;
                    t.push(body);
                    Some(ExportItem::Record(record))
                }
                (ITEM_TRANSCRIPT_END, Some(t)) => {
                    let t = *t;
                    // Copied (at most MAX_ITEM_LEN, checked above): the body borrows the
                    // plaintext buffer, which the check below cannot hold while it updates
                    // the reader.
                    let body = body.to_vec();
                    self.end_transcript(&t, &body)?;
                    self.transcript = None;
                    Some(ExportItem::TranscriptEnd)
                }
                (ITEM_EXPORT_END, None) => {
                    let body = body.to_vec();
                    self.end_export(&body)?;
                    self.saw_export_end = true;
                    None
                }
                _ => return Err(ExportError::UnexpectedItem),
            };
            *offset += 5 + len;
            items.extend(item);
        }
    }

    /// A transcript-end item (§6.5): checks the announced count, folds the stated final state
    /// into the signed statement, and remembers the first transcript whose records differ
    /// from it (reported once the signature proves the statement genuine).
    fn end_transcript(&mut self, t: &Running, body: &[u8]) -> Result<(), ExportError> {
        let mut b = Reader::new(body);
        let signed_count = b.u64("final record count")?;
        let signed_head: [u8; 32] = b.array("final head hash")?;
        b.expect_empty("transcript end")?;
        if t.seen != t.announced {
            return Err(ExportError::RecordCountMismatch {
                announced: t.announced,
                found: t.seen,
            });
        }
        self.states
            .update(state_entry(&t.id, &t.signer, signed_count, &signed_head));
        self.transcript_count += 1;
        if self.first_mismatch.is_none() {
            self.first_mismatch = if t.seen > signed_count {
                Some(ExportError::RecordsAppended {
                    transcript: t.id,
                    signed: signed_count,
                    found: t.seen,
                })
            } else if t.seen < signed_count {
                Some(ExportError::RecordsRemoved {
                    transcript: t.id,
                    signed: signed_count,
                    found: t.seen,
                })
            } else if !bool::from(t.head.ct_eq(&signed_head)) {
                Some(ExportError::RecordsAltered {
                    transcript: t.id,
                    records: t.seen,
                })
            } else {
                None
            };
        }
        Ok(())
    }

    /// The export-end item (§6.6): the exporter's identity and signature. Checks, in order, the
    /// signature (under the identity given), the expected exporter, then that every
    /// transcript's records are the final state signed.
    fn end_export(&mut self, body: &[u8]) -> Result<(), ExportError> {
        let mut b = Reader::new(body);
        let exporter = IdentityKey::read(&mut b)?;
        let signature: [u8; SIGNATURE_LEN] = b.array("export signature")?;
        b.expect_empty("export end")?;
        let states: [u8; 32] = std::mem::take(&mut self.states).finalize().into();
        let message = export_message(&self.header_hash, self.transcript_count, &states);
        if !exporter.verify(labels::SIG_TRANSCRIPT_EXPORT, &message, &signature) {
            return Err(ExportError::BadExportSignature);
        }
        let found = exporter.fingerprint();
        if let Some(expected) = self.expected_exporter
            && !bool::from(expected.0.ct_eq(&found.0))
        {
            return Err(ExportError::WrongExporter { found });
        }
        if let Some(e) = self.first_mismatch {
            return Err(e);
        }
        self.exporter = Some(exporter);
        Ok(())
    }
}
