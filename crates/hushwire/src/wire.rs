//! Session messages on the wire. The layouts are in `docs/wire-format.md`; the codec
//! primitives are `hushwire_proto::codec`.

use hushwire_proto::codec::{Codec, DecodeError, Reader, put_bytes_u32, read_versioned_header};
use hushwire_proto::keys::KEM_CIPHERTEXT_LEN;
use hushwire_proto::{IdentityKey, X25519PublicKey, labels};
use sha2::{Digest as _, Sha256};

/// Wire type byte of a [`RatchetMessage`].
pub const RATCHET_MESSAGE_TYPE: u8 = 0x01;
/// Wire type byte of a [`PreKeyMessage`].
pub const PREKEY_MESSAGE_TYPE: u8 = 0x02;
/// The largest plaintext one message carries (64 KiB). Larger payloads (attachments) are
/// encrypted separately and their key sent in a message.
pub const MAX_PLAINTEXT_LEN: usize = 64 * 1024;
/// AEAD tag length (AES-GCM and Poly1305 alike).
pub const TAG_LEN: usize = 16;
/// The largest ciphertext field: plaintext limit plus the tag.
pub const MAX_CIPHERTEXT_LEN: usize = MAX_PLAINTEXT_LEN + TAG_LEN;
/// Length of a header's plaintext: `ratchet_key[32] ‖ previous_chain_length[4] ‖ index[4]`.
pub const HEADER_PLAINTEXT_LEN: usize = 32 + 4 + 4;
/// Length of an encrypted header on the wire: the plaintext's length plus a 16-byte tag.
pub const ENCRYPTED_HEADER_LEN: usize = HEADER_PLAINTEXT_LEN + TAG_LEN;
/// Length of [`MessageHeader::to_bytes`]: version and type bytes, then the header plaintext.
pub const HEADER_LEN: usize = 2 + HEADER_PLAINTEXT_LEN;

/// The Double Ratchet header: the sender's current ratchet key, how many messages it sent in its
/// previous sending chain, and this message's index in the current one. On the wire it is
/// encrypted under the sending chain's header key (`docs/protocol.md` §5.3); only the two
/// parties ever see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageHeader {
    /// The sender's ratchet public key.
    pub ratchet_key: X25519PublicKey,
    /// Number of messages in the sender's previous sending chain (`PN`).
    pub previous_chain_length: u32,
    /// This message's index in its chain (`N`).
    pub index: u32,
}

impl MessageHeader {
    /// The header plaintext: `ratchet_key[32] ‖ previous_chain_length[4] ‖ index[4]`.
    pub fn to_plaintext(&self) -> [u8; HEADER_PLAINTEXT_LEN] {
        let mut out = [0u8; HEADER_PLAINTEXT_LEN];
        let (key, rest) = out.split_at_mut(32);
        key.copy_from_slice(self.ratchet_key.as_bytes());
        let (pn, n) = rest.split_at_mut(4);
        pn.copy_from_slice(&self.previous_chain_length.to_be_bytes());
        n.copy_from_slice(&self.index.to_be_bytes());
        out
    }

    /// Decodes a header plaintext that authenticated under a header key, validating the ratchet
    /// key as if it came off the wire (§3.9).
    pub fn from_plaintext(bytes: &[u8; HEADER_PLAINTEXT_LEN]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let header = Self {
            ratchet_key: X25519PublicKey::read_field(&mut r, "ratchet key")?,
            previous_chain_length: r.u32("previous chain length")?,
            index: r.u32("message index")?,
        };
        r.expect_empty("message header")?;
        Ok(header)
    }

    /// `version[1]=0x02 ‖ type[1]=0x01 ‖ header plaintext[40]`: the bytes that follow the
    /// session's associated data in the body's associated data (§5.3).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let (head, rest) = out.split_at_mut(2);
        head.copy_from_slice(&[labels::SESSION_VERSION, RATCHET_MESSAGE_TYPE]);
        rest.copy_from_slice(&self.to_plaintext());
        out
    }
}

/// A message in an established session. Nothing in it is readable without the session's keys:
/// the header is encrypted and the body is an AES-256-GCM ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RatchetMessage {
    /// The encrypted header: XChaCha20-Poly1305 ciphertext (40 bytes) and tag (16 bytes).
    pub encrypted_header: [u8; ENCRYPTED_HEADER_LEN],
    /// AES-256-GCM ciphertext and tag of the plaintext.
    pub ciphertext: Vec<u8>,
}

impl Codec for RatchetMessage {
    const NAME: &'static str = "ratchet message";

    /// `version[1]=0x02 ‖ type[1]=0x01 ‖ encrypted_header[56] ‖ ciphertext_len[4] ‖
    /// ciphertext`, with `16 <= ciphertext_len <= MAX_CIPHERTEXT_LEN` (`wire-format.md` §6).
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(labels::SESSION_VERSION);
        out.push(RATCHET_MESSAGE_TYPE);
        out.extend_from_slice(&self.encrypted_header);
        put_bytes_u32(out, &self.ciphertext);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        read_versioned_header(r, labels::SESSION_VERSION, RATCHET_MESSAGE_TYPE, Self::NAME)?;
        let encrypted_header = r.array("encrypted header")?;
        let ciphertext = r.bytes_u32(MAX_CIPHERTEXT_LEN, "ciphertext")?;
        if ciphertext.len() < TAG_LEN {
            return Err(DecodeError::InvalidValue {
                field: "ciphertext",
            });
        }
        Ok(Self {
            encrypted_header,
            ciphertext: ciphertext.to_vec(),
        })
    }
}

/// What an initiator sends until it receives a reply: the handshake values the responder needs,
/// and a ratchet message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreKeyMessage {
    /// The initiator's identity.
    pub identity: IdentityKey,
    /// The initiator's ephemeral handshake key (`EK_A`).
    pub base_key: X25519PublicKey,
    /// Which of the responder's signed prekeys was used.
    pub signed_prekey_id: u32,
    /// Which one-time prekey was used, if the bundle had one.
    pub one_time_prekey_id: Option<u32>,
    /// Which ML-KEM prekey was used.
    pub kem_prekey_id: u32,
    /// The ML-KEM-1024 ciphertext.
    pub kem_ciphertext: Box<[u8; KEM_CIPHERTEXT_LEN]>,
    /// The first (or a further) message of the session.
    pub message: RatchetMessage,
}

impl Codec for PreKeyMessage {
    const NAME: &'static str = "prekey message";

    /// `version[1]=0x02 ‖ type[1]=0x02 ‖ identity[128] ‖ base_key[32] ‖ signed_prekey_id[4] ‖
    /// has_one_time[1] ‖ (one_time_prekey_id[4])? ‖ kem_prekey_id[4] ‖ kem_ciphertext[1568] ‖
    /// message (a complete ratchet message)`.
    fn encode(&self, out: &mut Vec<u8>) {
        self.encode_handshake(out);
        self.message.encode(out);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        read_versioned_header(r, labels::SESSION_VERSION, PREKEY_MESSAGE_TYPE, Self::NAME)?;
        let identity = IdentityKey::read(r)?;
        let base_key = X25519PublicKey::read_field(r, "base key")?;
        let signed_prekey_id = r.u32("signed prekey id")?;
        let one_time_prekey_id = if r.flag("has one-time prekey")? {
            Some(r.u32("one-time prekey id")?)
        } else {
            None
        };
        let kem_prekey_id = r.u32("kem prekey id")?;
        let kem_ciphertext = Box::new(r.array("kem ciphertext")?);
        let message = RatchetMessage::read(r)?;
        Ok(Self {
            identity,
            base_key,
            signed_prekey_id,
            one_time_prekey_id,
            kem_prekey_id,
            kem_ciphertext,
            message,
        })
    }
}

impl PreKeyMessage {
    /// Appends everything before the embedded ratchet message: the handshake part, which is
    /// the same in every prekey message of one session.
    pub fn encode_handshake(&self, out: &mut Vec<u8>) {
        out.push(labels::SESSION_VERSION);
        out.push(PREKEY_MESSAGE_TYPE);
        self.identity.encode(out);
        out.extend_from_slice(self.base_key.as_bytes());
        out.extend_from_slice(&self.signed_prekey_id.to_be_bytes());
        match self.one_time_prekey_id {
            Some(id) => {
                out.push(1);
                out.extend_from_slice(&id.to_be_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&self.kem_prekey_id.to_be_bytes());
        out.extend_from_slice(self.kem_ciphertext.as_slice());
    }

    /// SHA-256 of the handshake part. A responder's session remembers it, so a later prekey
    /// message whose handshake fields were altered (fields the ratchet message's AEAD does
    /// not cover) is refused instead of silently accepted.
    pub fn handshake_digest(&self) -> [u8; 32] {
        let mut bytes = Vec::with_capacity(1800);
        self.encode_handshake(&mut bytes);
        Sha256::digest(&bytes).into()
    }
}

/// Any session message, told apart by its type byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A message in an established session.
    Ratchet(RatchetMessage),
    /// A message that also carries a handshake (boxed: it is 1.8 KB before its ciphertext).
    PreKey(Box<PreKeyMessage>),
}

impl Codec for Message {
    const NAME: &'static str = "message";

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Ratchet(m) => m.encode(out),
            Self::PreKey(m) => m.encode(out),
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        // Peek at version and type without consuming them; each variant reads its own header.
        let mut peek = Reader::new(r.peek(2));
        let version = peek.u8("version")?;
        if version != labels::SESSION_VERSION {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        match peek.u8("type")? {
            RATCHET_MESSAGE_TYPE => RatchetMessage::read(r).map(Self::Ratchet),
            PREKEY_MESSAGE_TYPE => PreKeyMessage::read(r).map(|m| Self::PreKey(Box::new(m))),
            tag => Err(DecodeError::UnknownType {
                structure: Self::NAME,
                tag,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_with_a_small_order_or_non_canonical_ratchet_key_is_refused() {
        let mut plaintext = [0u8; HEADER_PLAINTEXT_LEN];
        plaintext[0] = 1; // u = 1 has small order
        assert_eq!(
            MessageHeader::from_plaintext(&plaintext),
            Err(DecodeError::InvalidValue {
                field: "ratchet key"
            })
        );
        plaintext[..32].copy_from_slice(&[0xff; 32]); // not below p
        assert!(MessageHeader::from_plaintext(&plaintext).is_err());
        plaintext[..32].copy_from_slice(&[9; 32]);
        let header = MessageHeader::from_plaintext(&plaintext).unwrap();
        assert_eq!(header.to_plaintext(), plaintext);
        assert_eq!(header.to_bytes()[..2], [2, RATCHET_MESSAGE_TYPE]);
    }

    #[test]
    fn a_version_1_message_is_refused_by_version() {
        let mut bytes = vec![1, RATCHET_MESSAGE_TYPE];
        bytes.extend_from_slice(&[0; 80]);
        assert_eq!(
            Message::from_bytes(&bytes),
            Err(DecodeError::UnsupportedVersion { version: 1 })
        );
    }
}
