//! Exports for auditors: one or more transcripts re-sealed to recipients' X25519 keys, as a
//! single self-describing stream produced and consumed in bounded memory
//! (`docs/transcripts.md` §6).
//!
//! ```text
//! header  = version[1] ‖ type[1]=0x60 ‖ recipient_count[1] ‖ recipients
//! recipient = recipient_key[32] ‖ ephemeral_key[32] ‖ wrapped_file_key[48]
//! body    = chunk*   chunk = length[4] ‖ ChaCha20-Poly1305(payload_key, nonce(i, last), chunk_plaintext)
//! ```
//!
//! Each recipient entry wraps a random 32-byte file key: `wrap_key = HKDF-SHA256(salt =
//! ephemeral_key ‖ recipient_key, ikm = X25519(ephemeral, recipient), info = KDF_EXPORT_WRAP)`,
//! sealed with ChaCha20-Poly1305 under a zero nonce (each wrap key is used once). The body key is
//! `payload_key = HKDF-SHA256(salt = SHA-256(header), ikm = file_key, info = KDF_EXPORT_PAYLOAD)`,
//! so altering any header byte makes the body unreadable. Chunk `i`'s nonce is
//! `i[8, big-endian] ‖ 0x00 0x00 0x00 ‖ last[1]`: a reordered, dropped or truncated chunk fails,
//! and a stream that ends without a chunk marked last is refused (the STREAM construction).
//!
//! The chunk plaintexts concatenate to a sequence of items, `tag[1] ‖ length[4] ‖ body`:
//! `0x01` transcript start (`id[16] ‖ signer identity[128] ‖ transcript key[32] ‖
//! record count[8]`), `0x02` checkpoint, `0x03` sealed record, `0x04` transcript end,
//! `0xFF` end of export. Checkpoints precede the records they cover, so a reader verifies in
//! one pass.

use core::fmt;

use hushwire_proto::codec::{Codec, DecodeError, Reader};
use hushwire_proto::{IdentityKey, X25519PublicKey, labels};
use rand_core::CryptoRng;
use sha2::{Digest as _, Sha256};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use super::sealed::{
    MAX_RECORD_CIPHERTEXT_LEN, SealedRecord, TranscriptCheckpoint, TranscriptId, TranscriptKey,
};
use crate::kdf::{aead_decrypt, aead_encrypt, hkdf};
use crate::keys::{diffie_hellman, generate_x25519, x25519_from_secret};

/// Wire type byte of an export header.
pub const EXPORT_TYPE: u8 = 0x60;
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

/// Why an export could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportError {
    /// The header or an item is malformed.
    Malformed(DecodeError),
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

fn wrap_key(
    shared: &[u8; 32],
    ephemeral: &X25519PublicKey,
    recipient: &X25519PublicKey,
) -> Zeroizing<[u8; 32]> {
    let mut salt = [0u8; 64];
    let (a, b) = salt.split_at_mut(32);
    a.copy_from_slice(ephemeral.as_bytes());
    b.copy_from_slice(recipient.as_bytes());
    hkdf::<32>(&salt, shared, labels::KDF_EXPORT_WRAP)
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

/// Produces an export: feed it transcripts, write out every byte it returns, in order.
pub struct ExportWriter {
    payload_key: Zeroizing<[u8; 32]>,
    buffer: Zeroizing<Vec<u8>>,
    chunk_index: u64,
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
        let mut header = vec![
            labels::PROTOCOL_VERSION,
            EXPORT_TYPE,
            u8::try_from(recipients.len()).ok()?,
        ];
        for recipient in recipients {
            let (ephemeral, ephemeral_public) = generate_x25519(rng);
            let shared = diffie_hellman(&ephemeral, recipient)?;
            let key = wrap_key(&shared, &ephemeral_public, recipient);
            header.extend_from_slice(recipient.as_bytes());
            header.extend_from_slice(ephemeral_public.as_bytes());
            header.extend_from_slice(&aead_encrypt(&key, &[0u8; 12], &[], file_key.as_slice()));
        }
        let writer = Self {
            payload_key: payload_key(&header, &file_key),
            buffer: Zeroizing::new(Vec::with_capacity(CHUNK_LEN + MAX_ITEM_LEN)),
            chunk_index: 0,
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
        let mut out = self.item(ITEM_TRANSCRIPT_START, &body);
        for c in checkpoints {
            out.extend(self.item(ITEM_CHECKPOINT, &c.to_bytes()));
        }
        out
    }

    /// Adds one sealed record of the current transcript.
    pub fn record(&mut self, record: &SealedRecord) -> Vec<u8> {
        self.item(ITEM_RECORD, &record.to_bytes())
    }

    /// Ends the current transcript.
    pub fn end_transcript(&mut self) -> Vec<u8> {
        self.item(ITEM_TRANSCRIPT_END, &[])
    }

    /// Ends the export: the final chunk, marked last.
    pub fn finish(mut self) -> Vec<u8> {
        let mut out = self.item(ITEM_EXPORT_END, &[]);
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
/// then [`ExportReader::finish`]. Memory stays bounded by one chunk plus one item.
pub struct ExportReader {
    secret: StaticSecret,
    public: X25519PublicKey,
    /// Bytes not yet consumed (header, or a partial chunk).
    input: Vec<u8>,
    payload_key: Option<Zeroizing<[u8; 32]>>,
    /// Decrypted bytes not yet parsed into items.
    plaintext: Zeroizing<Vec<u8>>,
    chunk_index: u64,
    saw_last_chunk: bool,
    saw_export_end: bool,
    /// Inside a transcript: (records announced, records seen).
    transcript: Option<(u64, u64)>,
}

impl ExportReader {
    /// A reader for exports sealed to `key`.
    pub fn new(key: &AuditorKey) -> Self {
        Self {
            secret: key.secret.clone(),
            public: key.public,
            input: Vec::new(),
            payload_key: None,
            plaintext: Zeroizing::new(Vec::new()),
            chunk_index: 0,
            saw_last_chunk: false,
            saw_export_end: false,
            transcript: None,
        }
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

    /// Checks that the export ended properly.
    pub fn finish(self) -> Result<(), ExportError> {
        // The export-end item is only accepted outside a transcript, so a complete export
        // cannot end inside one.
        if !self.saw_last_chunk || !self.saw_export_end || !self.plaintext.is_empty() {
            return Err(ExportError::Truncated);
        }
        Ok(())
    }

    /// Parses the header once it is complete; `Ok(false)` if more bytes are needed.
    fn try_read_header(&mut self) -> Result<bool, ExportError> {
        let mut r = Reader::new(&self.input);
        let Ok(prefix) = r.take(3, "export header") else {
            return Ok(false);
        };
        if let [version, tag, count] = *prefix {
            if version != labels::PROTOCOL_VERSION {
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
            let mut entries = Reader::new(header.get(3..).unwrap_or_default());
            let mut file_key = None;
            for _ in 0..count {
                let recipient: [u8; 32] = entries.array("recipient key")?;
                let ephemeral = X25519PublicKey::read_field(&mut entries, "ephemeral key")?;
                let wrapped = entries.take(48, "wrapped file key")?;
                if &recipient == self.public.as_bytes() && file_key.is_none() {
                    let shared = diffie_hellman(&self.secret, &ephemeral)
                        .ok_or(ExportError::KeyUnwrapFailed)?;
                    let key = wrap_key(&shared, &ephemeral, &self.public);
                    let unwrapped = aead_decrypt(&key, &[0u8; 12], &[], wrapped)
                        .ok_or(ExportError::KeyUnwrapFailed)?;
                    let bytes: [u8; 32] = unwrapped
                        .as_slice()
                        .try_into()
                        .map_err(|_| ExportError::KeyUnwrapFailed)?;
                    file_key = Some(Zeroizing::new(bytes));
                }
            }
            let file_key = file_key.ok_or(ExportError::NotARecipient)?;
            self.payload_key = Some(payload_key(header, &file_key));
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
            let item = match (tag, self.transcript) {
                (ITEM_TRANSCRIPT_START, None) => {
                    let mut b = Reader::new(body);
                    let id = TranscriptId(b.array("transcript id")?);
                    let signer = IdentityKey::read(&mut b)?;
                    let key = TranscriptKey::from_bytes(b.array("transcript key")?);
                    let record_count = b.u64("record count")?;
                    b.expect_empty("transcript start")?;
                    self.transcript = Some((record_count, 0));
                    Some(ExportItem::TranscriptStart(Box::new(TranscriptManifest {
                        id,
                        signer,
                        key,
                        record_count,
                    })))
                }
                // Checkpoints precede every record of their transcript.
                (ITEM_CHECKPOINT, Some((_, 0))) => Some(ExportItem::Checkpoint(
                    TranscriptCheckpoint::from_bytes(body)?,
                )),
                (ITEM_RECORD, Some((expected, seen))) if seen < expected => {
                    self.transcript = Some((expected, seen + 1));
                    Some(ExportItem::Record(SealedRecord::from_bytes(body)?))
                }
                (ITEM_TRANSCRIPT_END, Some((expected, seen))) if body.is_empty() => {
                    if seen != expected {
                        return Err(ExportError::RecordCountMismatch {
                            announced: expected,
                            found: seen,
                        });
                    }
                    self.transcript = None;
                    Some(ExportItem::TranscriptEnd)
                }
                (ITEM_EXPORT_END, None) if body.is_empty() => {
                    self.saw_export_end = true;
                    None
                }
                _ => return Err(ExportError::UnexpectedItem),
            };
            *offset += 5 + len;
            items.extend(item);
        }
    }
}
