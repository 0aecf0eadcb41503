//! Errors, one enum per operation. Messages say what was wrong with the input and never include
//! key material or plaintext.

use core::fmt;

use hushwire_proto::{BundleError, DecodeError};

/// Why a session could not be created, from a bundle (initiator) or a prekey message (responder).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionCreationError {
    /// A signature in the bundle does not verify.
    InvalidBundle(BundleError),
    /// The bundle's ML-KEM key fails FIPS 203's encapsulation-key check.
    InvalidKemPublicKey,
    /// A Diffie-Hellman output was all zeros (the peer sent a key of small order).
    NonContributoryKey,
    /// The prekey message names a signed prekey id this account never issued (the sender used
    /// another device's bundle, or the store lost keys).
    UnknownSignedPreKey(u32),
    /// The prekey message names a signed prekey this account issued but has since rotated out
    /// (more than [`crate::KEPT_ROTATED_PREKEYS`] rotations ago): the sender's session is older
    /// than the prekeys kept, and must start again from a fresh bundle.
    RetiredSignedPreKey(u32),
    /// The prekey message names a one-time prekey id this account never issued (the relay or
    /// the store is at fault, not a replay).
    UnknownOneTimePreKey(u32),
    /// The prekey message names a one-time prekey this account issued and that is used up: a
    /// repeated or replayed handshake.
    UsedOneTimePreKey(u32),
    /// The prekey message names an ML-KEM prekey id this account never issued.
    UnknownKemPreKey(u32),
    /// The prekey message names an ML-KEM prekey this account issued and no longer holds: a
    /// used one-time ML-KEM prekey (a replay) or a rotated-out last-resort one.
    UsedKemPreKey(u32),
    /// The message embedded in the prekey message failed to decrypt.
    Decryption(DecryptionError),
}

impl fmt::Display for SessionCreationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidBundle(e) => write!(f, "prekey bundle rejected: {e}"),
            Self::InvalidKemPublicKey => f.write_str("prekey bundle holds an invalid ML-KEM key"),
            Self::NonContributoryKey => {
                f.write_str("peer key has small order (all-zero DH output)")
            }
            Self::UnknownSignedPreKey(id) => {
                write!(f, "signed prekey {id} was never issued by this device")
            }
            Self::RetiredSignedPreKey(id) => write!(
                f,
                "signed prekey {id} was rotated out: the sender's session is too old"
            ),
            Self::UnknownOneTimePreKey(id) => {
                write!(f, "one-time prekey {id} was never issued by this device")
            }
            Self::UsedOneTimePreKey(id) => write!(
                f,
                "one-time prekey {id} is already used: a repeated or replayed prekey message"
            ),
            Self::UnknownKemPreKey(id) => {
                write!(f, "ML-KEM prekey {id} was never issued by this device")
            }
            Self::UsedKemPreKey(id) => write!(
                f,
                "ML-KEM prekey {id} is used up or rotated out: a replayed or too old prekey message"
            ),
            Self::Decryption(e) => write!(f, "first message failed: {e}"),
        }
    }
}

impl std::error::Error for SessionCreationError {}

impl From<BundleError> for SessionCreationError {
    fn from(e: BundleError) -> Self {
        Self::InvalidBundle(e)
    }
}

impl From<DecryptionError> for SessionCreationError {
    fn from(e: DecryptionError) -> Self {
        Self::Decryption(e)
    }
}

/// Why a message could not be decrypted. The session is unchanged after any of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecryptionError {
    /// The bytes are not a well-formed message.
    Malformed(DecodeError),
    /// Authentication failed: the message was altered, forged, or belongs to another session.
    AuthenticationFailed,
    /// The message belongs to the peer's current chain or one of its earlier chains the session
    /// still knows, and no key is held for it: it was already decrypted, or its key was
    /// discarded to keep the skipped-key store within its bound (counted by
    /// `Session::discarded_message_keys`). Returned once the header has authenticated under
    /// that chain's header key, before the body is authenticated.
    DuplicateMessage {
        /// The peer's ratchet key that names the chain.
        chain: hushwire_proto::X25519PublicKey,
        /// The message's index in its chain.
        index: u32,
    },
    /// The message is further ahead of the last one received in its chain than the session will
    /// walk ([`crate::ratchet::MAX_JUMP`]). The session cannot read this chain any more; the
    /// client heals it by starting a new session (`docs/client.md` §5.13).
    TooFarAhead {
        /// The message's index in its chain or, when the sender's previous chain would need
        /// finishing first, the length the header announces for that chain.
        index: u32,
        /// How many messages would have to be skipped.
        skip: u32,
    },
    /// The message claims its sender's previous chain had fewer messages than were already
    /// received from it, which an honest sender never does.
    InconsistentChainLength,
    /// The peer's key has small order (all-zero DH output).
    NonContributoryKey,
    /// A prekey message that starts a different session (another base key) than this one; the
    /// caller should create a new session from it with `Account::accept`.
    OtherSession,
}

impl fmt::Display for DecryptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed message: {e}"),
            Self::AuthenticationFailed => f.write_str("message failed authentication"),
            Self::DuplicateMessage { index, .. } => {
                write!(
                    f,
                    "message {index} was already decrypted or its key was discarded"
                )
            }
            Self::TooFarAhead { index, skip } => write!(
                f,
                "message {index} would skip {skip} messages, more than the limit of {}",
                crate::ratchet::MAX_JUMP
            ),
            Self::InconsistentChainLength => {
                f.write_str("message's previous-chain length contradicts messages already received")
            }
            Self::NonContributoryKey => f.write_str("peer ratchet key has small order"),
            Self::OtherSession => f.write_str("prekey message belongs to a different session"),
        }
    }
}

impl std::error::Error for DecryptionError {}

impl From<DecodeError> for DecryptionError {
    fn from(e: DecodeError) -> Self {
        Self::Malformed(e)
    }
}

/// Why a message could not be encrypted. The session is unchanged after any of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncryptionError {
    /// The plaintext is longer than [`crate::wire::MAX_PLAINTEXT_LEN`].
    PlaintextTooLong {
        /// The plaintext's length.
        len: usize,
    },
    /// The sending chain has produced 2^32 messages without a reply; the wire's 32-bit index
    /// cannot go further until the peer replies (which starts a new chain).
    ChainExhausted,
    /// The session cannot send yet (a responder before its first message was accepted). Not
    /// reachable through the public constructors, which return only sessions that can send.
    NoSendingChain,
}

impl fmt::Display for EncryptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PlaintextTooLong { len } => write!(
                f,
                "plaintext of {len} bytes exceeds the limit of {} bytes",
                crate::wire::MAX_PLAINTEXT_LEN
            ),
            Self::ChainExhausted => f.write_str("sending chain exhausted; wait for a reply"),
            Self::NoSendingChain => f.write_str("session has no sending chain yet"),
        }
    }
}

impl std::error::Error for EncryptionError {}

/// Why sealed state could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsealError {
    /// Shorter than the sealed header.
    Truncated,
    /// Larger than any state Hushwire seals ([`crate::seal::MAX_SEALED_LEN`]).
    TooLarge,
    /// The version byte is not one this build reads.
    UnsupportedVersion(u8),
    /// The blob holds another kind of state (for example an account where a session was expected).
    WrongKind {
        /// The kind byte expected.
        expected: u8,
        /// The kind byte found.
        found: u8,
    },
    /// The key-check value does not match: this blob was sealed under another key.
    WrongKey,
    /// The key is right but authentication failed: the blob was altered or damaged.
    Corrupt,
    /// Authenticated, but the contents do not decode as this version's state (a bug, or state
    /// written by an incompatible build).
    InvalidContents,
    /// A session sealed by protocol version 1 (`docs/protocol.md` §7.5): version 2 cannot
    /// continue it (its peer would need unencrypted headers and the old handshake). The caller
    /// starts a new session with the peer; the Hushwire client does so by itself
    /// (`docs/client.md` §5.13).
    SessionVersion1,
}

impl fmt::Display for UnsealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("sealed state is truncated"),
            Self::TooLarge => f.write_str("sealed state exceeds the size limit"),
            Self::UnsupportedVersion(v) => write!(f, "sealed state has unsupported version {v}"),
            Self::WrongKind { expected, found } => {
                write!(
                    f,
                    "sealed state is of kind {found:#04x}, expected {expected:#04x}"
                )
            }
            Self::WrongKey => f.write_str("sealed state was sealed under a different key"),
            Self::Corrupt => f.write_str("sealed state failed authentication (altered or damaged)"),
            Self::InvalidContents => f.write_str("sealed state contents do not decode"),
            Self::SessionVersion1 => f.write_str(
                "the session was made by protocol version 1 and cannot continue: start a new one",
            ),
        }
    }
}

impl std::error::Error for UnsealError {}
