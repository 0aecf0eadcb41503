//! Frames between clients and the relay (`docs/relay-protocol.md`). Every frame travels in one
//! binary WebSocket message:
//!
//! ```text
//! frame = version[1] ‖ type[1] ‖ request_id[4] ‖ body
//! ```
//!
//! `request_id` is chosen by the client and echoed in the relay's answer; frames the relay sends
//! on its own (challenge, delivery, prekey count) carry 0. Envelope payloads are opaque
//! ciphertext: nothing here can decrypt them.

use ed25519_dalek::VerifyingKey;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::clinic::{AgentCertificate, DeviceList, RevocationList, WipeCommand};
use crate::codec::{Codec, DecodeError, Reader, put_bytes_u32};
use crate::conversation::queue::{QueueError, QueueFrame};
use crate::keys::{Fingerprint, SIGNATURE_LEN, short_hex};
use crate::signer::Signer;
use crate::{IdentityKey, KemPreKey, OneTimePreKey, PreKeyBundle, SignedPreKey, labels};

/// Largest sealed provisioning message a relay holds for device linking (17 KiB:
/// `docs/clinic.md` §5.1 bounds it at 16,529 bytes).
pub const MAX_PROVISIONING_LEN: usize = 17 * 1024;

/// Largest envelope payload (96 KiB, as Signal's server): a 64 KiB message plus its prekey
/// header fits with room to spare.
pub const MAX_ENVELOPE_LEN: usize = 96 * 1024;
/// Most envelopes (recipient devices) in one `Send` frame.
pub const MAX_ENVELOPES_PER_FRAME: usize = 16;
/// Most prekeys of one kind in one upload.
pub const MAX_PREKEYS_PER_UPLOAD: usize = 100;
/// Most server ids in one `Ack` frame.
pub const MAX_ACKS_PER_FRAME: usize = 256;
/// Longest invite token.
pub const MAX_INVITE_LEN: usize = 64;
/// Largest frame either side sends (1 573 536 bytes): a full `ConversationSend` frame (header
/// 6, conversation id 16 and epoch 8, list count 2, then per envelope an address 36, a length
/// 4 and the payload; `docs/conversations.md` §5.2), 24 bytes more than a full `Send`.
pub const MAX_FRAME_LEN: usize =
    6 + 16 + 8 + 2 + MAX_ENVELOPES_PER_FRAME * (36 + 4 + MAX_ENVELOPE_LEN);

/// A device's address: its identity's fingerprint and its device number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceAddress {
    /// SHA-256 fingerprint of the device's identity key.
    pub fingerprint: [u8; 32],
    /// The owner's number for the device.
    pub device_id: u32,
}

impl DeviceAddress {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.fingerprint);
        out.extend_from_slice(&self.device_id.to_be_bytes());
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            fingerprint: r.array("fingerprint")?,
            device_id: r.u32("device id")?,
        })
    }
}

/// A relay deployment's long-term Ed25519 public key: the **relay key** (`relay-protocol.md`
/// §3). Every instance of one deployment presents the same key; clients pin it at registration
/// (`client.md` §5.16) and a login answer is bound to it, so an answer made for one deployment
/// is refused by every other, whatever their names.
///
/// Any 32 bytes decode (so the frame codec stays total and canonical); whether they are a valid
/// Ed25519 key is checked when a signature is verified under them. Equality is constant-time.
#[derive(Clone, Copy)]
pub struct RelayKey(pub [u8; 32]);

impl RelayKey {
    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `SHA-256(RELAY_KEY_FINGERPRINT ‖ key)`: the name a person compares (the relay logs it at
    /// start-up, `hushwire status` shows the pinned one).
    pub fn fingerprint(&self) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(labels::RELAY_KEY_FINGERPRINT);
        h.update(self.0);
        Fingerprint(h.finalize().into())
    }

    /// The Ed25519 key, if these bytes are a canonical, non-weak point.
    fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0)
            .ok()
            .filter(|k| !k.is_weak() && k.as_bytes() == &self.0)
    }
}

impl PartialEq for RelayKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for RelayKey {}

impl core::fmt::Debug for RelayKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RelayKey({})", short_hex(&self.0))
    }
}

/// The relay's fresh challenge, sent as the first frame of every connection:
/// `nonce[32] ‖ relay_key[32] ‖ expires_at_ms[8] ‖ relay_signature[64]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// 32 random bytes, single use.
    pub nonce: [u8; 32],
    /// The relay deployment's key: a device's answer is bound to it, so an answer for one
    /// deployment is useless at another.
    pub relay_key: RelayKey,
    /// When the challenge stops being accepted (relay clock, Unix milliseconds).
    pub expires_at_ms: u64,
    /// The relay's signature over `SIG_RELAY_CHALLENGE ‖ relay_key ‖ nonce ‖ expires_at_ms`
    /// ([`Challenge::relay_signed_message`]): proof that the relay holds `relay_key`.
    pub relay_signature: [u8; SIGNATURE_LEN],
}

impl Challenge {
    /// A challenge from the relay whose key is `signer`, signed by it.
    pub fn new<S: Signer + ?Sized>(nonce: [u8; 32], expires_at_ms: u64, signer: &S) -> Self {
        let mut challenge = Self {
            nonce,
            relay_key: RelayKey(signer.verifying_key().to_bytes()),
            expires_at_ms,
            relay_signature: [0; SIGNATURE_LEN],
        };
        challenge.relay_signature = signer.sign(
            labels::SIG_RELAY_CHALLENGE,
            &challenge.relay_signed_message(),
        );
        challenge
    }

    /// What the relay signs (after the `SIG_RELAY_CHALLENGE` context):
    /// `relay_key[32] ‖ nonce[32] ‖ expires_at_ms[8]`.
    pub fn relay_signed_message(&self) -> [u8; 72] {
        let mut m = [0u8; 72];
        let (a, rest) = m.split_at_mut(32);
        a.copy_from_slice(&self.relay_key.0);
        let (b, c) = rest.split_at_mut(32);
        b.copy_from_slice(&self.nonce);
        c.copy_from_slice(&self.expires_at_ms.to_be_bytes());
        m
    }

    /// Whether `relay_signature` verifies (strictly) under `relay_key`: the relay holds the
    /// key it presents. A client checks this before it answers or pins anything.
    pub fn verify_relay_signature(&self) -> bool {
        self.relay_key.verifying_key().is_some_and(|key| {
            crate::keys::verify_signature(
                &key,
                labels::SIG_RELAY_CHALLENGE,
                &self.relay_signed_message(),
                &self.relay_signature,
            )
        })
    }

    /// What a device signs (after the `SIG_RELAY_LOGIN` context) to answer this challenge as
    /// `device_id`: `relay_key[32] ‖ nonce[32] ‖ expires_at_ms[8] ‖ device_id[4]`.
    pub fn signed_message(&self, device_id: u32) -> [u8; 76] {
        let mut m = [0u8; 76];
        let (a, rest) = m.split_at_mut(72);
        a.copy_from_slice(&self.relay_signed_message());
        rest.copy_from_slice(&device_id.to_be_bytes());
        m
    }
}

/// A device's answer to the challenge: who it is and its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The device's identity.
    pub identity: IdentityKey,
    /// The device's number.
    pub device_id: u32,
    /// Signature over `SIG_RELAY_LOGIN ‖ challenge.signed_message(device_id)`.
    pub signature: [u8; SIGNATURE_LEN],
}

impl Credentials {
    /// Answers `challenge` as device `device_id` of `identity`, signing with `signer` (the
    /// identity's signing key): the counterpart of [`Credentials::verify`], so every client
    /// signs exactly what the relay checks.
    pub fn answer<S: Signer + ?Sized>(
        identity: IdentityKey,
        device_id: u32,
        challenge: &Challenge,
        signer: &S,
    ) -> Self {
        Self {
            identity,
            device_id,
            signature: signer.sign(
                labels::SIG_RELAY_LOGIN,
                &challenge.signed_message(device_id),
            ),
        }
    }

    /// Checks the signature against `challenge` (the relay passes the challenge it sent, with
    /// its own key: an answer made for another relay key fails here).
    pub fn verify(&self, challenge: &Challenge) -> bool {
        self.identity.verify(
            labels::SIG_RELAY_LOGIN,
            &challenge.signed_message(self.device_id),
            &self.signature,
        )
    }

    /// The address these credentials claim.
    pub fn address(&self) -> DeviceAddress {
        DeviceAddress {
            fingerprint: self.identity.fingerprint().0,
            device_id: self.device_id,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        self.identity.encode(out);
        out.extend_from_slice(&self.device_id.to_be_bytes());
        out.extend_from_slice(&self.signature);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            identity: IdentityKey::read(r)?,
            device_id: r.u32("device id")?,
            signature: r.array("signature")?,
        })
    }
}

/// One envelope a client sends: a recipient device and the ciphertext for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingEnvelope {
    /// The recipient device.
    pub recipient: DeviceAddress,
    /// The ciphertext (a Hushwire session message), at most [`MAX_ENVELOPE_LEN`] bytes.
    pub payload: Vec<u8>,
}

/// An envelope the relay delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The relay's id for this envelope; the recipient acks it, and a redelivery repeats it.
    pub server_id: [u8; 16],
    /// The authenticated sender device.
    pub sender: DeviceAddress,
    /// When the relay stored it (Unix milliseconds).
    pub server_time_ms: u64,
    /// The ciphertext.
    pub payload: Vec<u8>,
}

/// The relay's receipt for one stored envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The relay's id for the envelope.
    pub server_id: [u8; 16],
    /// When it became durable (Unix milliseconds).
    pub server_time_ms: u64,
}

/// Why the relay refused a frame. Codes are stable; `docs/relay-protocol.md` lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// The frame did not decode.
    Malformed = 1,
    /// The frame is too large.
    TooLarge = 2,
    /// Authentication is required first.
    Unauthenticated = 3,
    /// The challenge signature does not verify.
    BadSignature = 4,
    /// The challenge expired.
    ChallengeExpired = 5,
    /// The challenge was already answered on this connection.
    ChallengeReplayed = 6,
    /// No such device is registered.
    UnknownDevice = 7,
    /// Registration refused (closed policy, bad or used invite, or identity already taken).
    RegistrationRefused = 8,
    /// A prekey signature does not verify under the device's identity.
    BadPreKey = 9,
    /// The target device has no prekeys to hand out.
    NoPreKeys = 10,
    /// The recipient's mailbox is full: it holds its total quota of envelopes or bytes
    /// (`docs/relay-protocol.md` §5). Not the sender's doing; retry once the recipient has read
    /// its mail (`retry_after_ms` is 0).
    MailboxFull = 11,
    /// Too many requests; retry after the given delay.
    RateLimited = 12,
    /// The frame is not allowed in this state (for example authenticating twice).
    OutOfOrder = 13,
    /// The relay failed internally; retry later.
    Internal = 14,
    /// This sender's share of the recipient's mailbox (envelopes or bytes) is used up
    /// (`docs/relay-protocol.md` §5): the sender must wait until the recipient acknowledges
    /// what it already holds (`retry_after_ms` is 0). Other senders are not affected. (A
    /// sender that only sends too fast to one recipient gets `RateLimited`.)
    SenderQuota = 15,
    /// The device's role does not allow this request (for example a patient or agent device
    /// asking for an admin action, `docs/clinic.md` §7).
    Forbidden = 16,
    /// The device was suspended or wiped by the clinic's administrator: the relay refuses it.
    Suspended = 17,
    /// The certificate was refused: from another clinic, forged, expired, not yet valid,
    /// revoked, or naming another identity than the device's (`docs/clinic.md` §3).
    CertificateRefused = 18,
    /// A signed list (revocation list, device list) was refused: its signature does not verify
    /// or its sequence is not higher than the one the relay holds (a rollback).
    ListRefused = 19,
    /// `OpenConversation` with a conversation id already in use (`docs/conversations.md` §5.3).
    ConversationExists = 20,
    /// No conversation with this id at the relay (`docs/conversations.md` §5.3).
    UnknownConversation = 21,
    /// The device is not a member of the conversation: a hand-off by an agent not on it, a
    /// fetch by a stranger, an envelope to a device removed from it (`docs/conversations.md`
    /// §5.3).
    NotOnConversation = 22,
    /// The relay's own check of a membership change (`docs/conversations.md` §4.3) failed; the
    /// client recomputes the rule to show it.
    MembershipRefused = 23,
    /// The change's epoch is not the relay's next one: another change came first. Fetch the
    /// history (`FetchMembership`) and try again (`docs/conversations.md` §5.3).
    StaleEpoch = 24,
}

impl ErrorCode {
    /// The former name of [`ErrorCode::MailboxFull`] (code 11), kept so that existing matches
    /// still compile; new code should say `MailboxFull`.
    #[allow(non_upper_case_globals)]
    pub const QuotaExceeded: Self = Self::MailboxFull;
}

impl From<QueueError> for ErrorCode {
    fn from(error: QueueError) -> Self {
        match error {
            QueueError::ConversationExists => Self::ConversationExists,
            QueueError::UnknownConversation => Self::UnknownConversation,
            QueueError::NotOnConversation => Self::NotOnConversation,
            QueueError::MembershipRefused => Self::MembershipRefused,
            QueueError::StaleEpoch => Self::StaleEpoch,
        }
    }
}

impl ErrorCode {
    fn from_u16(v: u16) -> Result<Self, DecodeError> {
        use ErrorCode::*;
        Ok(match v {
            1 => Malformed,
            2 => TooLarge,
            3 => Unauthenticated,
            4 => BadSignature,
            5 => ChallengeExpired,
            6 => ChallengeReplayed,
            7 => UnknownDevice,
            8 => RegistrationRefused,
            9 => BadPreKey,
            10 => NoPreKeys,
            11 => MailboxFull,
            12 => RateLimited,
            13 => OutOfOrder,
            14 => Internal,
            15 => SenderQuota,
            16 => Forbidden,
            17 => Suspended,
            18 => CertificateRefused,
            19 => ListRefused,
            20 => ConversationExists,
            21 => UnknownConversation,
            22 => NotOnConversation,
            23 => MembershipRefused,
            24 => StaleEpoch,
            _ => {
                return Err(DecodeError::InvalidValue {
                    field: "error code",
                });
            }
        })
    }
}

/// Every frame body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameBody {
    /// Client: register a new device (with an invite token where the relay requires one, and
    /// an agent certificate for a clinic's staff, `docs/clinic.md` §7).
    Register {
        /// The device's answer to the challenge.
        credentials: Credentials,
        /// The invite token, if any.
        invite: Option<Vec<u8>>,
        /// The agent certificate of the device's identity, if the device is clinic staff.
        certificate: Option<Box<AgentCertificate>>,
    },
    /// Client: authenticate as a registered device.
    Authenticate(Credentials),
    /// Client: publish prekeys (each part optional).
    UploadPreKeys {
        /// A new signed prekey.
        signed_prekey: Option<SignedPreKey>,
        /// A new last-resort ML-KEM prekey.
        last_resort_kem_prekey: Option<KemPreKey>,
        /// One-time X25519 prekeys.
        one_time_prekeys: Vec<OneTimePreKey>,
        /// One-time ML-KEM prekeys.
        one_time_kem_prekeys: Vec<KemPreKey>,
    },
    /// Client: fetch (and claim) a bundle for a device.
    FetchBundle(DeviceAddress),
    /// Client: store envelopes for one or more recipient devices.
    Send(Vec<OutgoingEnvelope>),
    /// Client: these delivered envelopes may be deleted.
    Ack(Vec<[u8; 16]>),
    /// Client: this connection's store epoch (`relay-protocol.md` §5.1, `client.md` §5.14).
    /// The relay keeps the highest epoch each device reported and answers with the one it held
    /// before, so a device running from an older copy of its store learns so before it sends.
    StoreEpoch(u64),
    /// Client: fetch the agent certificate the relay holds for an identity (by fingerprint).
    FetchCertificate([u8; 32]),
    /// Client: fetch the clinic's current revocation list.
    FetchRevocationList,
    /// Client (admin): publish a revocation list signed by the organization key.
    PublishRevocationList(RevocationList),
    /// Client (admin): suspend a device; the relay refuses it from then on.
    SuspendDevice(DeviceAddress),
    /// Client (admin): order a device wiped; the relay keeps the order, hands it to the device
    /// at its next login and refuses the device from then on.
    Wipe(Box<WipeCommand>),
    /// Client: publish this identity's signed device list.
    PublishDeviceList(DeviceList),
    /// Client: fetch the device list of an identity (by fingerprint).
    FetchDeviceList([u8; 32]),
    /// Client: replace this identity's certificate (a renewal; same clinic, same subject).
    UpdateCertificate(Box<AgentCertificate>),
    /// Client: leave a sealed provisioning message for a device being linked, under the slot
    /// its linking code names (`docs/clinic.md` §5.1). The relay keeps it for a few minutes.
    PutProvisioning {
        /// `SHA-256(LINK_SLOT ‖ secret)`.
        slot: [u8; 32],
        /// The sealed message, at most [`MAX_PROVISIONING_LEN`] bytes.
        sealed: Vec<u8>,
    },
    /// Client (allowed before authentication): take the provisioning message filed under a
    /// slot. The relay hands it out once.
    TakeProvisioning([u8; 32]),
    /// Relay: the connection's challenge.
    Challenge(Challenge),
    /// Relay: the request succeeded.
    Ok,
    /// Relay: the request failed.
    Error {
        /// Why.
        code: ErrorCode,
        /// For [`ErrorCode::RateLimited`]: when to retry, in milliseconds (else 0).
        retry_after_ms: u32,
    },
    /// Relay: the requested bundle.
    Bundle(PreKeyBundle),
    /// Relay: the envelopes of a `Send` are durable, in the order sent.
    Sent(Vec<Receipt>),
    /// Relay: an envelope for this device.
    Deliver(Delivery),
    /// Relay: the answer to `StoreEpoch`: the highest epoch this device reported before it
    /// (0 if none).
    StoreEpochSeen(u64),
    /// Relay: the answer to `FetchCertificate` (none if the identity holds no certificate).
    Certificate(Option<Box<AgentCertificate>>),
    /// Relay: the answer to `FetchRevocationList` (none if the clinic never published one).
    RevocationList(Option<RevocationList>),
    /// Relay: the answer to `FetchDeviceList` (none if the identity never published one).
    DeviceList(Option<DeviceList>),
    /// Relay: the answer to `Authenticate` for a device an admin ordered wiped: the signed
    /// order, which the device checks before erasing its store. The relay closes after it.
    Wiped(Box<WipeCommand>),
    /// Relay: the answer to `TakeProvisioning` (none if nothing is filed under the slot, or it
    /// expired or was taken).
    Provisioning(Option<Vec<u8>>),
    /// Relay: how many one-time prekeys the device has left (sent after authentication and
    /// when they run low).
    PreKeyCount {
        /// One-time X25519 prekeys left.
        one_time: u32,
        /// One-time ML-KEM prekeys left.
        kem_one_time: u32,
    },
    /// The clinic's conversations and queue (types `0x12`–`0x1d` from clients, `0x8d`–`0x95`
    /// from the relay; `docs/conversations.md` §5.2): their bodies are
    /// [`QueueFrame`]'s.
    Queue(Box<QueueFrame>),
}

/// A frame: a request id and a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Client-chosen id, echoed in the answer; 0 for unsolicited relay frames.
    pub request_id: u32,
    /// The body.
    pub body: FrameBody,
}

fn put_list<T>(out: &mut Vec<u8>, items: &[T], mut encode: impl FnMut(&T, &mut Vec<u8>)) {
    out.extend_from_slice(&u16::try_from(items.len()).unwrap_or(u16::MAX).to_be_bytes());
    for item in items {
        encode(item, out);
    }
}

fn read_list<T>(
    r: &mut Reader<'_>,
    max: usize,
    field: &'static str,
    mut read: impl FnMut(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let len = usize::from(r.u16(field)?);
    if len > max {
        return Err(DecodeError::TooLong { field, len, max });
    }
    let mut items = Vec::with_capacity(len);
    for _ in 0..len {
        items.push(read(r)?);
    }
    Ok(items)
}

fn put_option<T>(out: &mut Vec<u8>, value: &Option<T>, encode: impl FnOnce(&T, &mut Vec<u8>)) {
    match value {
        Some(v) => {
            out.push(1);
            encode(v, out);
        }
        None => out.push(0),
    }
}

fn read_option<T>(
    r: &mut Reader<'_>,
    field: &'static str,
    read: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    if r.flag(field)? {
        Ok(Some(read(r)?))
    } else {
        Ok(None)
    }
}

/// `count[2] ‖ (address[36] ‖ len[4] ‖ payload)*`, at most [`MAX_ENVELOPES_PER_FRAME`] of at
/// most [`MAX_ENVELOPE_LEN`] bytes (the body of `Send`, and of `ConversationSend` after its
/// header).
pub(crate) fn read_envelopes(r: &mut Reader<'_>) -> Result<Vec<OutgoingEnvelope>, DecodeError> {
    read_list(r, MAX_ENVELOPES_PER_FRAME, "envelopes", |r| {
        Ok(OutgoingEnvelope {
            recipient: DeviceAddress::read(r)?,
            payload: r.bytes_u32(MAX_ENVELOPE_LEN, "envelope payload")?.to_vec(),
        })
    })
}

/// Appends `envelopes` as [`read_envelopes`] reads them.
pub(crate) fn put_envelopes(out: &mut Vec<u8>, envelopes: &[OutgoingEnvelope]) {
    put_list(out, envelopes, |e, out| {
        e.recipient.encode(out);
        put_bytes_u32(out, &e.payload);
    });
}

fn read_certificate(r: &mut Reader<'_>) -> Result<Box<AgentCertificate>, DecodeError> {
    AgentCertificate::read(r).map(Box::new)
}

impl Codec for Frame {
    const NAME: &'static str = "relay frame";

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(labels::PROTOCOL_VERSION);
        out.push(self.type_byte());
        out.extend_from_slice(&self.request_id.to_be_bytes());
        match &self.body {
            FrameBody::Register {
                credentials,
                invite,
                certificate,
            } => {
                credentials.encode(out);
                put_option(out, invite, |t, out| put_bytes_u32(out, t));
                put_option(out, certificate, |c, out| c.encode(out));
            }
            FrameBody::FetchCertificate(fingerprint) | FrameBody::FetchDeviceList(fingerprint) => {
                out.extend_from_slice(fingerprint);
            }
            FrameBody::FetchRevocationList => {}
            FrameBody::PutProvisioning { slot, sealed } => {
                out.extend_from_slice(slot);
                put_bytes_u32(out, sealed);
            }
            FrameBody::TakeProvisioning(slot) => out.extend_from_slice(slot),
            FrameBody::Provisioning(sealed) => {
                put_option(out, sealed, |s, out| put_bytes_u32(out, s))
            }
            FrameBody::PublishRevocationList(list) => list.encode(out),
            FrameBody::SuspendDevice(address) => address.encode(out),
            FrameBody::Wipe(command) | FrameBody::Wiped(command) => command.encode(out),
            FrameBody::PublishDeviceList(list) => list.encode(out),
            FrameBody::UpdateCertificate(certificate) => certificate.encode(out),
            FrameBody::Certificate(certificate) => {
                put_option(out, certificate, |c, out| c.encode(out));
            }
            FrameBody::RevocationList(list) => put_option(out, list, |l, out| l.encode(out)),
            FrameBody::DeviceList(list) => put_option(out, list, |l, out| l.encode(out)),
            FrameBody::Authenticate(c) => c.encode(out),
            FrameBody::UploadPreKeys {
                signed_prekey,
                last_resort_kem_prekey,
                one_time_prekeys,
                one_time_kem_prekeys,
            } => {
                put_option(out, signed_prekey, |k, out| k.encode(out));
                put_option(out, last_resort_kem_prekey, |k, out| k.encode(out));
                put_list(out, one_time_prekeys, |k, out| k.encode(out));
                put_list(out, one_time_kem_prekeys, |k, out| k.encode(out));
            }
            FrameBody::FetchBundle(a) => a.encode(out),
            FrameBody::Send(envelopes) => put_envelopes(out, envelopes),
            FrameBody::Ack(ids) => put_list(out, ids, |id, out| out.extend_from_slice(id)),
            FrameBody::StoreEpoch(epoch) | FrameBody::StoreEpochSeen(epoch) => {
                out.extend_from_slice(&epoch.to_be_bytes());
            }
            FrameBody::Challenge(c) => {
                out.extend_from_slice(&c.nonce);
                out.extend_from_slice(&c.relay_key.0);
                out.extend_from_slice(&c.expires_at_ms.to_be_bytes());
                out.extend_from_slice(&c.relay_signature);
            }
            FrameBody::Ok => {}
            FrameBody::Error {
                code,
                retry_after_ms,
            } => {
                out.extend_from_slice(&(*code as u16).to_be_bytes());
                out.extend_from_slice(&retry_after_ms.to_be_bytes());
            }
            FrameBody::Bundle(b) => b.encode(out),
            FrameBody::Sent(receipts) => put_list(out, receipts, |r, out| {
                out.extend_from_slice(&r.server_id);
                out.extend_from_slice(&r.server_time_ms.to_be_bytes());
            }),
            FrameBody::Deliver(d) => {
                out.extend_from_slice(&d.server_id);
                d.sender.encode(out);
                out.extend_from_slice(&d.server_time_ms.to_be_bytes());
                put_bytes_u32(out, &d.payload);
            }
            FrameBody::PreKeyCount {
                one_time,
                kem_one_time,
            } => {
                out.extend_from_slice(&one_time.to_be_bytes());
                out.extend_from_slice(&kem_one_time.to_be_bytes());
            }
            FrameBody::Queue(frame) => frame.encode_body(out),
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8("version")?;
        if version != labels::PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let tag = r.u8("type")?;
        let request_id = r.u32("request id")?;
        let body = match tag {
            0x01 => FrameBody::Register {
                credentials: Credentials::read(r)?,
                invite: if r.flag("has invite")? {
                    Some(r.bytes_u32(MAX_INVITE_LEN, "invite")?.to_vec())
                } else {
                    None
                },
                certificate: read_option(r, "has certificate", read_certificate)?,
            },
            0x08 => FrameBody::FetchCertificate(r.array("fingerprint")?),
            0x09 => FrameBody::FetchRevocationList,
            0x10 => FrameBody::PutProvisioning {
                slot: r.array("slot")?,
                sealed: r
                    .bytes_u32(MAX_PROVISIONING_LEN, "provisioning message")?
                    .to_vec(),
            },
            0x11 => FrameBody::TakeProvisioning(r.array("slot")?),
            0x8c => FrameBody::Provisioning(read_option(r, "has provisioning message", |r| {
                Ok(r.bytes_u32(MAX_PROVISIONING_LEN, "provisioning message")?
                    .to_vec())
            })?),
            0x0a => FrameBody::PublishRevocationList(RevocationList::read(r)?),
            0x0b => FrameBody::SuspendDevice(DeviceAddress::read(r)?),
            0x0c => FrameBody::Wipe(Box::new(WipeCommand::read(r)?)),
            0x0d => FrameBody::PublishDeviceList(DeviceList::read(r)?),
            0x0e => FrameBody::FetchDeviceList(r.array("fingerprint")?),
            0x0f => FrameBody::UpdateCertificate(read_certificate(r)?),
            0x88 => FrameBody::Certificate(read_option(r, "has certificate", read_certificate)?),
            0x89 => FrameBody::RevocationList(read_option(
                r,
                "has revocation list",
                RevocationList::read,
            )?),
            0x8a => FrameBody::DeviceList(read_option(r, "has device list", DeviceList::read)?),
            0x8b => FrameBody::Wiped(Box::new(WipeCommand::read(r)?)),
            0x02 => FrameBody::Authenticate(Credentials::read(r)?),
            0x03 => FrameBody::UploadPreKeys {
                signed_prekey: if r.flag("has signed prekey")? {
                    Some(SignedPreKey::read(r)?)
                } else {
                    None
                },
                last_resort_kem_prekey: if r.flag("has last-resort kem prekey")? {
                    Some(KemPreKey::read(r)?)
                } else {
                    None
                },
                one_time_prekeys: read_list(
                    r,
                    MAX_PREKEYS_PER_UPLOAD,
                    "one-time prekeys",
                    OneTimePreKey::read,
                )?,
                one_time_kem_prekeys: read_list(
                    r,
                    MAX_PREKEYS_PER_UPLOAD,
                    "one-time kem prekeys",
                    KemPreKey::read,
                )?,
            },
            0x04 => FrameBody::FetchBundle(DeviceAddress::read(r)?),
            0x05 => FrameBody::Send(read_envelopes(r)?),
            0x06 => FrameBody::Ack(read_list(r, MAX_ACKS_PER_FRAME, "acks", |r| {
                r.array("server id")
            })?),
            0x07 => FrameBody::StoreEpoch(r.u64("store epoch")?),
            0x87 => FrameBody::StoreEpochSeen(r.u64("store epoch")?),
            0x80 => FrameBody::Challenge(Challenge {
                nonce: r.array("nonce")?,
                relay_key: RelayKey(r.array("relay key")?),
                expires_at_ms: r.u64("expires at")?,
                relay_signature: r.array("relay signature")?,
            }),
            0x81 => FrameBody::Ok,
            0x82 => FrameBody::Error {
                code: ErrorCode::from_u16(r.u16("error code")?)?,
                retry_after_ms: r.u32("retry after")?,
            },
            0x83 => FrameBody::Bundle(PreKeyBundle::read(r)?),
            0x84 => FrameBody::Sent(read_list(r, MAX_ENVELOPES_PER_FRAME, "receipts", |r| {
                Ok(Receipt {
                    server_id: r.array("server id")?,
                    server_time_ms: r.u64("server time")?,
                })
            })?),
            0x85 => FrameBody::Deliver(Delivery {
                server_id: r.array("server id")?,
                sender: DeviceAddress::read(r)?,
                server_time_ms: r.u64("server time")?,
                payload: r.bytes_u32(MAX_ENVELOPE_LEN, "envelope payload")?.to_vec(),
            }),
            0x86 => FrameBody::PreKeyCount {
                one_time: r.u32("one-time count")?,
                kem_one_time: r.u32("kem one-time count")?,
            },
            tag if QueueFrame::is_queue_type(tag) => {
                FrameBody::Queue(Box::new(QueueFrame::read_body(tag, r)?))
            }
            tag => {
                return Err(DecodeError::UnknownType {
                    structure: Self::NAME,
                    tag,
                });
            }
        };
        Ok(Self { request_id, body })
    }
}

impl Frame {
    /// The `request_id` of an encoded frame whose body may not decode (relay-protocol.md §2):
    /// bytes 2..6 of the 6-byte header, big-endian, or 0 when the header itself is short. The
    /// relay echoes it in the `Error` it answers a malformed frame with, so a client can tell
    /// which of its requests was refused.
    pub fn request_id_of(bytes: &[u8]) -> u32 {
        bytes
            .get(2..6)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, u32::from_be_bytes)
    }

    fn type_byte(&self) -> u8 {
        match self.body {
            FrameBody::Register { .. } => 0x01,
            FrameBody::Authenticate(_) => 0x02,
            FrameBody::UploadPreKeys { .. } => 0x03,
            FrameBody::FetchBundle(_) => 0x04,
            FrameBody::Send(_) => 0x05,
            FrameBody::Ack(_) => 0x06,
            FrameBody::StoreEpoch(_) => 0x07,
            FrameBody::StoreEpochSeen(_) => 0x87,
            FrameBody::Challenge(_) => 0x80,
            FrameBody::Ok => 0x81,
            FrameBody::Error { .. } => 0x82,
            FrameBody::Bundle(_) => 0x83,
            FrameBody::Sent(_) => 0x84,
            FrameBody::Deliver(_) => 0x85,
            FrameBody::PreKeyCount { .. } => 0x86,
            FrameBody::FetchCertificate(_) => 0x08,
            FrameBody::FetchRevocationList => 0x09,
            FrameBody::PutProvisioning { .. } => 0x10,
            FrameBody::TakeProvisioning(_) => 0x11,
            FrameBody::Provisioning(_) => 0x8c,
            FrameBody::PublishRevocationList(_) => 0x0a,
            FrameBody::SuspendDevice(_) => 0x0b,
            FrameBody::Wipe(_) => 0x0c,
            FrameBody::PublishDeviceList(_) => 0x0d,
            FrameBody::FetchDeviceList(_) => 0x0e,
            FrameBody::UpdateCertificate(_) => 0x0f,
            FrameBody::Certificate(_) => 0x88,
            FrameBody::RevocationList(_) => 0x89,
            FrameBody::DeviceList(_) => 0x8a,
            FrameBody::Wiped(_) => 0x8b,
            FrameBody::Queue(ref frame) => frame.type_byte(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::X25519PublicKey;
    use proptest::prelude::*;

    fn samples() -> Vec<Frame> {
        let address = DeviceAddress {
            fingerprint: [7; 32],
            device_id: 3,
        };
        let mut nine = [0u8; 32];
        nine[0] = 9;
        let key = X25519PublicKey::from_array(nine, "k").unwrap();
        let bodies = vec![
            FrameBody::FetchBundle(address),
            FrameBody::Send(vec![
                OutgoingEnvelope {
                    recipient: address,
                    payload: vec![1, 2, 3],
                },
                OutgoingEnvelope {
                    recipient: address,
                    payload: vec![],
                },
            ]),
            FrameBody::Ack(vec![[1; 16], [2; 16]]),
            FrameBody::StoreEpoch(7),
            FrameBody::StoreEpochSeen(u64::MAX),
            FrameBody::Challenge(Challenge {
                nonce: [3; 32],
                relay_key: RelayKey([4; 32]),
                expires_at_ms: 99,
                relay_signature: [5; 64],
            }),
            FrameBody::Ok,
            FrameBody::Error {
                code: ErrorCode::RateLimited,
                retry_after_ms: 250,
            },
            FrameBody::Sent(vec![Receipt {
                server_id: [5; 16],
                server_time_ms: 6,
            }]),
            FrameBody::Deliver(Delivery {
                server_id: [6; 16],
                sender: address,
                server_time_ms: 7,
                payload: vec![8; 10],
            }),
            FrameBody::PreKeyCount {
                one_time: 1,
                kem_one_time: 2,
            },
            FrameBody::UploadPreKeys {
                signed_prekey: Some(SignedPreKey {
                    id: 1,
                    key,
                    signature: [0; 64],
                }),
                last_resort_kem_prekey: None,
                one_time_prekeys: vec![OneTimePreKey { id: 2, key }],
                one_time_kem_prekeys: vec![],
            },
            FrameBody::FetchCertificate([8; 32]),
            FrameBody::FetchRevocationList,
            FrameBody::SuspendDevice(address),
            FrameBody::FetchDeviceList([9; 32]),
            FrameBody::Certificate(None),
            FrameBody::RevocationList(None),
            FrameBody::DeviceList(None),
            FrameBody::PutProvisioning {
                slot: [1; 32],
                sealed: vec![2; 40],
            },
            FrameBody::TakeProvisioning([3; 32]),
            FrameBody::Provisioning(Some(vec![4; 5])),
            FrameBody::Provisioning(None),
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Frame {
                request_id: i as u32,
                body,
            })
            .collect()
    }

    #[test]
    fn every_frame_round_trips() {
        for frame in samples() {
            let bytes = frame.to_bytes();
            assert_eq!(Frame::from_bytes(&bytes).unwrap(), frame);
        }
    }

    /// Codes are stable numbers (`docs/relay-protocol.md` §6): 11 is `MailboxFull` (once
    /// `QuotaExceeded`, still accepted as a name), 15 `SenderQuota`; an unassigned code is refused.
    #[test]
    fn error_codes_keep_their_numbers() {
        let error = |code: u16| {
            let mut bytes = vec![labels::PROTOCOL_VERSION, 0x82, 0, 0, 0, 7];
            bytes.extend_from_slice(&code.to_be_bytes());
            bytes.extend_from_slice(&250u32.to_be_bytes());
            Frame::from_bytes(&bytes).map(|f| f.body)
        };
        let body = |code| FrameBody::Error {
            code,
            retry_after_ms: 250,
        };
        assert_eq!(error(11).unwrap(), body(ErrorCode::MailboxFull));
        assert_eq!(ErrorCode::QuotaExceeded, ErrorCode::MailboxFull);
        assert_eq!(error(15).unwrap(), body(ErrorCode::SenderQuota));
        assert_eq!(ErrorCode::SenderQuota as u16, 15);
        assert_eq!(error(19).unwrap(), body(ErrorCode::ListRefused));
        for queue_error in [
            QueueError::ConversationExists,
            QueueError::UnknownConversation,
            QueueError::NotOnConversation,
            QueueError::MembershipRefused,
            QueueError::StaleEpoch,
        ] {
            let code = ErrorCode::from(queue_error);
            assert_eq!(code as u16, queue_error.code());
            assert_eq!(error(queue_error.code()).unwrap(), body(code));
        }
        assert!(error(25).is_err());
        assert!(error(0).is_err());
    }

    #[test]
    fn queue_frames_travel_inside_relay_frames() {
        let frame = QueueFrame::SetOnDuty(true);
        let bytes = frame.to_frame(9);
        let decoded = Frame::from_bytes(&bytes).unwrap();
        assert_eq!(decoded.request_id, 9);
        assert_eq!(decoded.body, FrameBody::Queue(Box::new(frame)));
        assert_eq!(decoded.to_bytes(), bytes);
        // A queue type with a body that does not decode is an error, not a panic.
        assert!(Frame::from_bytes(&[labels::PROTOCOL_VERSION, 0x13, 0, 0, 0, 1, 7]).is_err());
    }

    #[test]
    fn list_counts_are_bounded_before_allocation() {
        let mut bytes = vec![labels::PROTOCOL_VERSION, 0x06, 0, 0, 0, 1];
        bytes.extend_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            Frame::from_bytes(&bytes).unwrap_err(),
            DecodeError::TooLong {
                field: "acks",
                len: usize::from(u16::MAX),
                max: MAX_ACKS_PER_FRAME
            }
        );
    }

    fn device() -> (ed25519_dalek::SigningKey, IdentityKey) {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[21; 32]);
        let mut nine = [0u8; 32];
        nine[0] = 9;
        let dh = X25519PublicKey::from_array(nine, "k").unwrap();
        let binding = signing.sign(
            labels::SIG_IDENTITY_BINDING,
            &crate::keys::identity_binding_message(signing.verifying_key().as_bytes(), &nine),
        );
        let identity = IdentityKey::new(signing.verifying_key().to_bytes(), dh, binding).unwrap();
        (signing, identity)
    }

    /// The relay's signature proves it holds the key it presents; changing the key, the nonce
    /// or the expiry breaks it.
    #[test]
    fn challenges_are_signed_by_the_relay_key() {
        let relay = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let challenge = Challenge::new([2; 32], 1_000, &relay);
        assert_eq!(challenge.relay_key.0, relay.verifying_key().to_bytes());
        assert!(challenge.verify_relay_signature());
        let other = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let mut swapped = challenge;
        swapped.relay_key = RelayKey(other.verifying_key().to_bytes());
        assert!(!swapped.verify_relay_signature(), "another relay's key");
        let mut later = challenge;
        later.expires_at_ms += 1;
        assert!(!later.verify_relay_signature(), "another expiry");
        let mut garbage = challenge;
        garbage.relay_key = RelayKey([0xff; 32]);
        assert!(!garbage.verify_relay_signature(), "not a point");
        let bytes = Frame {
            request_id: 0,
            body: FrameBody::Challenge(challenge),
        }
        .to_bytes();
        assert_eq!(bytes.len(), 6 + 32 + 32 + 8 + 64);
    }

    /// Issue 13: two relays with the same name (there is no name any more) and even the same
    /// nonce and expiry: an answer made for relay A's key does not verify at relay B.
    #[test]
    fn an_answer_is_bound_to_the_relay_key() {
        let (signing, identity) = device();
        let a = Challenge::new(
            [7; 32],
            5_000,
            &ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
        );
        let b = Challenge::new(
            [7; 32],
            5_000,
            &ed25519_dalek::SigningKey::from_bytes(&[2; 32]),
        );
        let answer = Credentials::answer(identity, 4, &a, &signing);
        assert!(answer.verify(&a));
        assert!(!answer.verify(&b));
        let mut m = Vec::from(labels::SIG_RELAY_LOGIN);
        m.extend_from_slice(&a.relay_key.0);
        m.extend_from_slice(&a.nonce);
        m.extend_from_slice(&5_000u64.to_be_bytes());
        m.extend_from_slice(&4u32.to_be_bytes());
        let mut signed = Vec::from(labels::SIG_RELAY_LOGIN);
        signed.extend_from_slice(&a.signed_message(4));
        assert_eq!(signed, m, "the layout of relay-protocol.md §3");
    }

    #[test]
    fn relay_key_fingerprints_differ_and_compare() {
        assert_eq!(RelayKey([1; 32]), RelayKey([1; 32]));
        assert_ne!(RelayKey([1; 32]), RelayKey([2; 32]));
        assert_ne!(
            RelayKey([1; 32]).fingerprint(),
            RelayKey([2; 32]).fingerprint()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn decoding_is_total_and_canonical(which in 0usize..10, at in any::<usize>(), value in any::<u8>(), cut in any::<usize>()) {
            let mut bytes = samples()[which].to_bytes();
            let i = at % bytes.len();
            bytes[i] = value;
            bytes.truncate(cut % (bytes.len() + 1) + bytes.len() / 2);
            if let Ok(frame) = Frame::from_bytes(&bytes) {
                prop_assert_eq!(frame.to_bytes(), bytes);
            }
        }
    }
}
