//! Every domain-separation string Hushwire uses, in one place so a reviewer can check that no two
//! uses share a label. `docs/protocol.md` cites each by name.
//!
//! Signature contexts are prefixed to the signed bytes; KDF labels are HKDF `info` strings or
//! prefixes of hashed input. All are ASCII and end without a terminator; the structures they
//! prefix have fixed layouts, so no ambiguity arises from concatenation.

/// The version byte that starts relay frames, audit structures, sealed transcript records and
/// exports: their formats are at version 1.
pub const PROTOCOL_VERSION: u8 = 1;
/// The version byte that starts prekey bundles, prekey messages and ratchet messages: protocol
/// version 2 (`docs/protocol.md`), with encrypted headers and a transcript-bound handshake.
/// Version-1 messages and bundles are refused (`DecodeError::UnsupportedVersion`).
pub const SESSION_VERSION: u8 = 2;

/// Signature context: an identity's Ed25519 key binds its X25519 identity key.
pub const SIG_IDENTITY_BINDING: &[u8] = b"Hushwire v1 identity binding";
/// Signature context: an identity signs an X25519 signed prekey together with its device id.
pub const SIG_SIGNED_PREKEY: &[u8] = b"Hushwire v2 signed prekey";
/// Signature context: an identity signs an ML-KEM-1024 prekey (one-time or last-resort)
/// together with its device id.
pub const SIG_KEM_PREKEY: &[u8] = b"Hushwire v2 kem prekey";

/// Signature context: a relay or device signs the head of its audit chain (an audit checkpoint).
pub const SIG_AUDIT_CHECKPOINT: &[u8] = b"Hushwire v1 audit checkpoint";

/// Hash prefix for an identity's fingerprint.
pub const FINGERPRINT: &[u8] = b"Hushwire v1 fingerprint";
/// Hash prefix for one half of a safety number.
pub const SAFETY_NUMBER: &[u8] = b"Hushwire v1 safety number";

/// Hash prefix for the `previous_hash` of an audit chain's first record, followed by the chain id.
pub const AUDIT_GENESIS: &[u8] = b"Hushwire v1 audit genesis";
/// Hash prefix for an audit record's hash, followed by the record's encoding.
pub const AUDIT_RECORD: &[u8] = b"Hushwire v1 audit record";

/// HKDF info prefix for the hybrid handshake's outputs (the first root key and the two initial
/// header keys); the handshake transcript hash follows it.
pub const KDF_HANDSHAKE: &[u8] = b"Hushwire v2 PQXDH X25519 SHA-256 ML-KEM-1024";
/// Hash prefix of the handshake transcript: every public value of the handshake.
pub const HANDSHAKE_TRANSCRIPT: &[u8] = b"Hushwire v2 handshake transcript";
/// HKDF info for the root chain step of the Double Ratchet (root key, chain key, next header
/// key).
pub const KDF_ROOT: &[u8] = b"Hushwire v2 root chain";
/// HKDF info that expands a message key into an AES-256-GCM key and nonce.
pub const KDF_MESSAGE_KEYS: &[u8] = b"Hushwire v2 message keys";
/// HKDF info for the key that seals persisted state.
pub const KDF_SEAL_KEY: &[u8] = b"Hushwire v1 seal key";
/// HKDF info for the key-check value stored beside sealed state.
pub const KDF_SEAL_KEY_CHECK: &[u8] = b"Hushwire v1 seal key check";

/// HKDF info for the key that seals a transcript's records (salt: the transcript id).
pub const KDF_TRANSCRIPT_RECORD: &[u8] = b"Hushwire v1 transcript record key";
/// Hash prefix of a transcript's genesis value.
pub const TRANSCRIPT_GENESIS: &[u8] = b"Hushwire v1 transcript genesis";
/// Hash prefix of a sealed transcript record's chain hash.
pub const TRANSCRIPT_RECORD_HASH: &[u8] = b"Hushwire v1 transcript record hash";
/// Signature context: a device signs a transcript checkpoint.
pub const SIG_TRANSCRIPT_CHECKPOINT: &[u8] = b"Hushwire v1 transcript checkpoint";
/// HKDF info that derives the key and nonce wrapping an export's file key to one recipient
/// (export format version 2; `docs/transcripts.md` §6.2).
pub const KDF_EXPORT_WRAP: &[u8] = b"Hushwire v2 export key wrap";
/// HKDF info for an export's payload key (salt: SHA-256 of the export header).
pub const KDF_EXPORT_PAYLOAD: &[u8] = b"Hushwire v1 export payload";
/// Signature context: the exporting device signs an export's header hash and the final state
/// (record count, chain head) of every transcript in it (`docs/transcripts.md` §6.6).
pub const SIG_TRANSCRIPT_EXPORT: &[u8] = b"Hushwire v2 transcript export";

/// Signature context: a device answers a relay's login challenge, bound to the relay's key
/// (`docs/relay-protocol.md` §3). Replaces version 1's `"Hushwire v1 relay auth"`, which bound
/// only a hash of the relay's name.
pub const SIG_RELAY_LOGIN: &[u8] = b"Hushwire v2 relay login";
/// Signature context: a relay signs the challenge it sends with its relay identity key, so a
/// client can check that the relay holds the key it presents (`docs/relay-protocol.md` §3).
pub const SIG_RELAY_CHALLENGE: &[u8] = b"Hushwire v2 relay challenge";
/// Hash prefix of a relay key's fingerprint (what `hushwire status` and the relay's start-up
/// log show).
pub const RELAY_KEY_FINGERPRINT: &[u8] = b"Hushwire v2 relay key fingerprint";

/// Hash prefix of an organization (clinic) key's fingerprint (`docs/clinic.md` §1).
pub const ORG_KEY_FINGERPRINT: &[u8] = b"Hushwire v1 organization key fingerprint";
/// Signature context: a clinic's organization key signs an agent certificate
/// (`docs/clinic.md` §3).
pub const SIG_AGENT_CERTIFICATE: &[u8] = b"Hushwire v1 agent certificate";
/// Signature context: a clinic's organization key signs its revocation list
/// (`docs/clinic.md` §4).
pub const SIG_REVOCATION_LIST: &[u8] = b"Hushwire v1 revocation list";
/// Signature context: a clinic's organization key signs its clinic link (`docs/clinic.md` §2).
pub const SIG_CLINIC_LINK: &[u8] = b"Hushwire v1 clinic link";
/// Signature context: a clinic's organization key signs its administrator's state file
/// (`org.json`: issued certificates, revoked serials, relay), so an edit made outside
/// `hushwire org` is noticed (`docs/client.md` §8.4). Never sent to anyone.
pub const SIG_ORG_STATE: &[u8] = b"Hushwire v1 organization state";
/// Signature context: a person's identity signs the list of their devices
/// (`docs/clinic.md` §5).
pub const SIG_DEVICE_LIST: &[u8] = b"Hushwire v1 device list";
/// Signature context: a clinic administrator's identity signs a wipe command
/// (`docs/clinic.md` §6).
pub const SIG_WIPE_COMMAND: &[u8] = b"Hushwire v1 wipe command";
/// Hash prefix of a linking code's relay slot: `SHA-256(LINK_SLOT ‖ secret)`
/// (`docs/clinic.md` §5.1).
pub const LINK_SLOT: &[u8] = b"Hushwire v1 link slot";
/// HKDF info of the key that seals a provisioning message under a linking code
/// (`docs/clinic.md` §5.1).
pub const KDF_LINK_KEY: &[u8] = b"Hushwire v1 link key";

/// Signature context: a member's identity signs a conversation's membership change
/// (`docs/conversations.md` §4.2).
pub const SIG_MEMBERSHIP_CHANGE: &[u8] = b"Hushwire v1 membership change";
/// Hash prefix of a conversation's genesis value, followed by its id and the clinic's
/// organization key (`docs/conversations.md` §4.2).
pub const MEMBERSHIP_GENESIS: &[u8] = b"Hushwire v1 membership genesis";
/// Hash prefix of a membership change's hash, followed by its encoding
/// (`docs/conversations.md` §4.2).
pub const MEMBERSHIP_CHANGE_HASH: &[u8] = b"Hushwire v1 membership change hash";
/// Signature context: a clinic's organization key signs its archive policy
/// (`docs/conversations.md` §7.1).
pub const SIG_ARCHIVE_POLICY: &[u8] = b"Hushwire v1 archive policy";
/// HKDF info prefix of the key and nonce that seal a message to the clinic's archive key
/// (`docs/conversations.md` §7.3).
pub const KDF_ARCHIVE_SEAL: &[u8] = b"Hushwire v1 archive seal";
