//! Audit events: what the relay or a client did, as fixed-size metadata, and the identifiers
//! they name.

use core::fmt;

use crate::codec::{Codec, DecodeError, Reader};
use crate::conversation::{ChangeAction, MemberRole};
use crate::keys::Fingerprint;

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

macro_rules! id16 {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 16]);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl Codec for $name {
            const NAME: &'static str = $field;

            /// `id[16]`.
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.0);
            }

            fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(Self(r.array($field)?))
            }
        }
    };
}

id16!(
    /// Names a conversation between two devices. Chosen at random by the device that starts it;
    /// says nothing about who is in it.
    ConversationId,
    "conversation id"
);
id16!(
    /// Names a sealed transcript (random, chosen when the transcript is created).
    TranscriptId,
    "transcript id"
);
id16!(
    /// Names one ciphertext envelope in the relay's mailbox (random, chosen by the relay).
    EnvelopeId,
    "envelope id"
);

/// One device: its identity's fingerprint and its owner's device number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct DeviceRef {
    /// SHA-256 fingerprint of the device's identity key.
    pub fingerprint: Fingerprint,
    /// The device number its owner chose.
    pub device_id: u32,
}

impl Codec for DeviceRef {
    const NAME: &'static str = "device";

    /// `fingerprint[32] ‖ device_id[4]`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.fingerprint.0);
        out.extend_from_slice(&self.device_id.to_be_bytes());
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            fingerprint: Fingerprint(r.array("device fingerprint")?),
            device_id: r.u32("device id")?,
        })
    }
}

/// Why the relay refused to authenticate or register a device. One byte on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AuthFailure {
    /// `0x01`: the challenge response did not verify under the claimed identity.
    BadSignature,
    /// `0x02`: the response answered a challenge that had expired.
    ExpiredChallenge,
    /// `0x03`: the response answered a challenge that was already used.
    ReplayedChallenge,
    /// `0x04`: the device is not registered.
    UnknownDevice,
    /// `0x05`: registration policy refused the device (for example, no valid invite).
    RegistrationRefused,
}

impl AuthFailure {
    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::BadSignature => 0x01,
            Self::ExpiredChallenge => 0x02,
            Self::ReplayedChallenge => 0x03,
            Self::UnknownDevice => 0x04,
            Self::RegistrationRefused => 0x05,
        }
    }

    /// Parses the wire byte; other values are refused.
    pub fn from_byte(b: u8) -> Result<Self, DecodeError> {
        match b {
            0x01 => Ok(Self::BadSignature),
            0x02 => Ok(Self::ExpiredChallenge),
            0x03 => Ok(Self::ReplayedChallenge),
            0x04 => Ok(Self::UnknownDevice),
            0x05 => Ok(Self::RegistrationRefused),
            _ => Err(DecodeError::InvalidValue {
                field: "authentication failure reason",
            }),
        }
    }
}

/// One thing the relay or a client did, as metadata. Encoded as `tag[1] ‖ fields`, fields in
/// declaration order, integers big-endian, a [`DeviceRef`] as 36 bytes and each 16-byte id as
/// 16 bytes. Each variant's documentation gives its tag and layout; the tags never change
/// meaning (a new event gets a new tag).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AuditEvent {
    /// `0x01 ‖ device[36]` (37 bytes): the relay registered a device.
    DeviceRegistered {
        /// The new device.
        device: DeviceRef,
    },
    /// `0x02 ‖ device[36]` (37 bytes): a device answered the relay's challenge.
    DeviceAuthenticated {
        /// The device.
        device: DeviceRef,
    },
    /// `0x03 ‖ reason[1]` (2 bytes): an authentication or registration attempt failed. The
    /// claimed device is deliberately not logged: it is unauthenticated input.
    AuthenticationFailed {
        /// Why.
        reason: AuthFailure,
    },
    /// `0x04 ‖ device[36]` (37 bytes): the relay throttled a device.
    RateLimited {
        /// The device.
        device: DeviceRef,
    },
    /// `0x08 ‖ device[36] ‖ one_time[4] ‖ kem_one_time[4]` (45 bytes): a device uploaded
    /// prekeys.
    PreKeysUploaded {
        /// The device.
        device: DeviceRef,
        /// How many X25519 one-time prekeys it uploaded.
        one_time: u32,
        /// How many ML-KEM one-time prekeys it uploaded.
        kem_one_time: u32,
    },
    /// `0x09 ‖ requester[36] ‖ target[36] ‖ one_time_left[4]` (77 bytes): a device fetched
    /// another device's prekey bundle.
    BundleFetched {
        /// Who fetched.
        requester: DeviceRef,
        /// Whose bundle.
        target: DeviceRef,
        /// X25519 one-time prekeys the target has left after this fetch.
        one_time_left: u32,
    },
    /// `0x10 ‖ sender[36] ‖ recipient[36] ‖ envelope[16] ‖ size[4]` (93 bytes): the relay
    /// durably stored an envelope.
    EnvelopeStored {
        /// The sending device.
        sender: DeviceRef,
        /// The receiving device.
        recipient: DeviceRef,
        /// The stored envelope.
        envelope: EnvelopeId,
        /// Its ciphertext size in bytes.
        size: u32,
    },
    /// `0x11 ‖ recipient[36] ‖ envelope[16]` (53 bytes): the relay delivered an envelope.
    EnvelopeDelivered {
        /// The receiving device.
        recipient: DeviceRef,
        /// The envelope.
        envelope: EnvelopeId,
    },
    /// `0x12 ‖ recipient[36] ‖ envelope[16]` (53 bytes): the recipient acknowledged an envelope,
    /// and the relay deleted it.
    EnvelopeAcknowledged {
        /// The receiving device.
        recipient: DeviceRef,
        /// The envelope.
        envelope: EnvelopeId,
    },
    /// `0x13 ‖ recipient[36] ‖ count[4]` (41 bytes): envelopes passed the retention period
    /// unacknowledged and were deleted.
    EnvelopesExpired {
        /// The device they were for.
        recipient: DeviceRef,
        /// How many.
        count: u32,
    },
    /// `0x20 ‖ device[36] ‖ peer[36] ‖ conversation[16]` (89 bytes): a device started (or
    /// accepted) a session.
    SessionStarted {
        /// The logging device.
        device: DeviceRef,
        /// The other device.
        peer: DeviceRef,
        /// The conversation.
        conversation: ConversationId,
    },
    /// `0x21 ‖ device[36] ‖ peer[36]` (73 bytes): a peer's identity key changed (the safety
    /// number must be compared again).
    IdentityChanged {
        /// The logging device.
        device: DeviceRef,
        /// The peer, under its new identity.
        peer: DeviceRef,
    },
    /// `0x22 ‖ device[36] ‖ peer[36]` (73 bytes): the user confirmed the peer's safety number.
    ContactVerified {
        /// The logging device.
        device: DeviceRef,
        /// The verified peer.
        peer: DeviceRef,
    },
    /// `0x24 ‖ device[36] ‖ peer[36] ‖ requested_by_peer[1]` (74 bytes): a session with the peer
    /// was replaced to heal a conversation (`client.md` §5.13). `requested_by_peer` is 0x00 when
    /// this device could not read the peer's message and asked for the reset, 0x01 when the peer
    /// asked and this device started again and re-sent what was not confirmed.
    SessionReset {
        /// The logging device.
        device: DeviceRef,
        /// The other device.
        peer: DeviceRef,
        /// Whether the peer asked for the reset (else this device did).
        requested_by_peer: bool,
    },
    /// `0x25 ‖ device[36] ‖ peer[36] ‖ message_id[16]` (89 bytes): the user took a queued
    /// message out of the outbox before the relay had it (`client.md` §5.1); its transcript
    /// record, written when it was queued, stays and this record says it never left.
    MessageCancelled {
        /// The logging device.
        device: DeviceRef,
        /// The intended recipient.
        peer: DeviceRef,
        /// The message's id (random, chosen by the sender; the transcript record carries it).
        message_id: [u8; 16],
    },
    /// `0x23 ‖ device[36]` (37 bytes): the device's local store was unlocked (opened with its
    /// passphrase or key): the access to stored ePHI that HIPAA audit controls ask to record.
    StoreUnlocked {
        /// The device.
        device: DeviceRef,
    },
    /// `0x30 ‖ transcript[16] ‖ records[8]` (25 bytes): a transcript checkpoint was signed.
    TranscriptCheckpointed {
        /// The transcript.
        transcript: TranscriptId,
        /// Records the checkpoint covers.
        records: u64,
    },
    /// `0x31 ‖ transcript[16] ‖ records[8] ‖ recipients[1]` (26 bytes): a transcript was
    /// exported, re-sealed to auditors.
    TranscriptExported {
        /// The transcript.
        transcript: TranscriptId,
        /// Records exported.
        records: u64,
        /// How many recipients it was sealed to.
        recipients: u8,
    },
    /// `0x32 ‖ transcript[16] ‖ by[36]` (53 bytes): an exported transcript was opened.
    TranscriptOpened {
        /// The transcript.
        transcript: TranscriptId,
        /// The device that opened it.
        by: DeviceRef,
    },
    /// `0x33 ‖ transcript[16]` (17 bytes): a transcript's key was destroyed (crypto-shredded).
    TranscriptShredded {
        /// The transcript.
        transcript: TranscriptId,
    },
    /// `0x50 ‖ device[36] ‖ serial[8] ‖ roles[1]` (46 bytes): the relay accepted a clinic's
    /// agent certificate for a device's identity (at registration or renewal): the device now
    /// holds the certified roles (`roles` is the certificate's flag byte: agent `0x01`,
    /// supervisor `0x02`, admin `0x04`).
    CertificateAccepted {
        /// The device that presented it.
        device: DeviceRef,
        /// The certificate's serial number.
        serial: u64,
        /// The certified roles' flag byte.
        roles: u8,
    },
    /// `0x51 ‖ device[36] ‖ by[36]` (73 bytes): a clinic administrator suspended a device at
    /// the relay.
    DeviceSuspended {
        /// The suspended device.
        device: DeviceRef,
        /// The administrator's device.
        by: DeviceRef,
    },
    /// `0x52 ‖ device[36] ‖ by[36]` (73 bytes): a clinic administrator ordered a device wiped
    /// (the relay keeps the order and suspends the device).
    WipeOrdered {
        /// The device to wipe.
        device: DeviceRef,
        /// The administrator's device.
        by: DeviceRef,
    },
    /// `0x53 ‖ sequence[8] ‖ by[36]` (45 bytes): a clinic administrator published a new
    /// revocation list at the relay.
    RevocationListPublished {
        /// The list's sequence number.
        sequence: u64,
        /// The administrator's device.
        by: DeviceRef,
    },
    /// `0x54 ‖ identity[32] ‖ sequence[8]` (41 bytes): a person published a new signed device
    /// list at the relay.
    DeviceListPublished {
        /// The person's identity fingerprint.
        identity: Fingerprint,
        /// The list's sequence number.
        sequence: u64,
    },
    /// `0x55 ‖ conversation[16] ‖ patient[36]` (53 bytes): the relay accepted a clinic
    /// conversation's first membership change (`conversations.md` §9).
    ConversationOpened {
        /// The conversation.
        conversation: ConversationId,
        /// The patient device that opened it.
        patient: DeviceRef,
    },
    /// `0x56 ‖ conversation[16] ‖ epoch[8] ‖ by[36] ‖ action[1] ‖ role[1] ‖ member[32]`
    /// (95 bytes): a verified membership change was applied (`action` 0x01 add, 0x02 remove;
    /// `role` 0x01 patient, 0x02 agent, 0x03 supervisor; `member` the identity's fingerprint).
    MembershipChanged {
        /// The conversation.
        conversation: ConversationId,
        /// The change's epoch.
        epoch: u64,
        /// The device that signed it.
        by: DeviceRef,
        /// Add or remove.
        action: ChangeAction,
        /// The member's role.
        role: MemberRole,
        /// The member identity's fingerprint.
        member: Fingerprint,
    },
    /// `0x57 ‖ conversation[16] ‖ by[36]` (53 bytes): an agent's claim of a conversation in the
    /// queue won.
    ConversationClaimed {
        /// The conversation.
        conversation: ConversationId,
        /// The claiming agent's device.
        by: DeviceRef,
    },
    /// `0x58 ‖ conversation[16] ‖ by[36] ‖ to[36] ‖ count[4]` (93 bytes): a device shared
    /// earlier messages with a newly added device.
    HistoryShared {
        /// The conversation.
        conversation: ConversationId,
        /// The sharing device.
        by: DeviceRef,
        /// The device the history was shared with.
        to: DeviceRef,
        /// How many messages.
        count: u32,
    },
    /// `0x59 ‖ conversation[16] ‖ by[36] ‖ message_id[16]` (69 bytes): a message was recalled.
    MessageRecalled {
        /// The conversation.
        conversation: ConversationId,
        /// The recalling device.
        by: DeviceRef,
        /// The recalled message's id.
        message_id: [u8; 16],
    },
    /// `0x5a ‖ conversation[16] ‖ by[36]` (53 bytes): a supervisor opened a conversation's
    /// archive.
    ArchiveOpened {
        /// The conversation.
        conversation: ConversationId,
        /// The supervisor's device.
        by: DeviceRef,
    },
}

impl AuditEvent {
    /// The event's wire tag.
    pub fn tag(&self) -> u8 {
        match self {
            Self::DeviceRegistered { .. } => 0x01,
            Self::DeviceAuthenticated { .. } => 0x02,
            Self::AuthenticationFailed { .. } => 0x03,
            Self::RateLimited { .. } => 0x04,
            Self::PreKeysUploaded { .. } => 0x08,
            Self::BundleFetched { .. } => 0x09,
            Self::EnvelopeStored { .. } => 0x10,
            Self::EnvelopeDelivered { .. } => 0x11,
            Self::EnvelopeAcknowledged { .. } => 0x12,
            Self::EnvelopesExpired { .. } => 0x13,
            Self::SessionStarted { .. } => 0x20,
            Self::IdentityChanged { .. } => 0x21,
            Self::ContactVerified { .. } => 0x22,
            Self::StoreUnlocked { .. } => 0x23,
            Self::SessionReset { .. } => 0x24,
            Self::MessageCancelled { .. } => 0x25,
            Self::TranscriptCheckpointed { .. } => 0x30,
            Self::TranscriptExported { .. } => 0x31,
            Self::TranscriptOpened { .. } => 0x32,
            Self::TranscriptShredded { .. } => 0x33,
            Self::CertificateAccepted { .. } => 0x50,
            Self::DeviceSuspended { .. } => 0x51,
            Self::WipeOrdered { .. } => 0x52,
            Self::RevocationListPublished { .. } => 0x53,
            Self::DeviceListPublished { .. } => 0x54,
            Self::ConversationOpened { .. } => 0x55,
            Self::MembershipChanged { .. } => 0x56,
            Self::ConversationClaimed { .. } => 0x57,
            Self::HistoryShared { .. } => 0x58,
            Self::MessageRecalled { .. } => 0x59,
            Self::ArchiveOpened { .. } => 0x5a,
        }
    }
}

impl Codec for AuditEvent {
    const NAME: &'static str = "audit event";

    /// `tag[1] ‖ fields`; see each variant.
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.tag());
        match self {
            Self::DeviceRegistered { device }
            | Self::DeviceAuthenticated { device }
            | Self::RateLimited { device }
            | Self::StoreUnlocked { device } => device.encode(out),
            Self::AuthenticationFailed { reason } => out.push(reason.to_byte()),
            Self::PreKeysUploaded {
                device,
                one_time,
                kem_one_time,
            } => {
                device.encode(out);
                out.extend_from_slice(&one_time.to_be_bytes());
                out.extend_from_slice(&kem_one_time.to_be_bytes());
            }
            Self::BundleFetched {
                requester,
                target,
                one_time_left,
            } => {
                requester.encode(out);
                target.encode(out);
                out.extend_from_slice(&one_time_left.to_be_bytes());
            }
            Self::EnvelopeStored {
                sender,
                recipient,
                envelope,
                size,
            } => {
                sender.encode(out);
                recipient.encode(out);
                envelope.encode(out);
                out.extend_from_slice(&size.to_be_bytes());
            }
            Self::EnvelopeDelivered {
                recipient,
                envelope,
            }
            | Self::EnvelopeAcknowledged {
                recipient,
                envelope,
            } => {
                recipient.encode(out);
                envelope.encode(out);
            }
            Self::EnvelopesExpired { recipient, count } => {
                recipient.encode(out);
                out.extend_from_slice(&count.to_be_bytes());
            }
            Self::SessionStarted {
                device,
                peer,
                conversation,
            } => {
                device.encode(out);
                peer.encode(out);
                conversation.encode(out);
            }
            Self::IdentityChanged { device, peer } | Self::ContactVerified { device, peer } => {
                device.encode(out);
                peer.encode(out);
            }
            Self::SessionReset {
                device,
                peer,
                requested_by_peer,
            } => {
                device.encode(out);
                peer.encode(out);
                out.push(u8::from(*requested_by_peer));
            }
            Self::MessageCancelled {
                device,
                peer,
                message_id,
            } => {
                device.encode(out);
                peer.encode(out);
                out.extend_from_slice(message_id);
            }
            Self::TranscriptCheckpointed {
                transcript,
                records,
            } => {
                transcript.encode(out);
                out.extend_from_slice(&records.to_be_bytes());
            }
            Self::TranscriptExported {
                transcript,
                records,
                recipients,
            } => {
                transcript.encode(out);
                out.extend_from_slice(&records.to_be_bytes());
                out.push(*recipients);
            }
            Self::TranscriptOpened { transcript, by } => {
                transcript.encode(out);
                by.encode(out);
            }
            Self::TranscriptShredded { transcript } => transcript.encode(out),
            Self::CertificateAccepted {
                device,
                serial,
                roles,
            } => {
                device.encode(out);
                out.extend_from_slice(&serial.to_be_bytes());
                out.push(*roles);
            }
            Self::DeviceSuspended { device, by } | Self::WipeOrdered { device, by } => {
                device.encode(out);
                by.encode(out);
            }
            Self::RevocationListPublished { sequence, by } => {
                out.extend_from_slice(&sequence.to_be_bytes());
                by.encode(out);
            }
            Self::DeviceListPublished { identity, sequence } => {
                out.extend_from_slice(&identity.0);
                out.extend_from_slice(&sequence.to_be_bytes());
            }
            Self::ConversationOpened {
                conversation,
                patient: by,
            }
            | Self::ConversationClaimed { conversation, by }
            | Self::ArchiveOpened { conversation, by } => {
                conversation.encode(out);
                by.encode(out);
            }
            Self::MembershipChanged {
                conversation,
                epoch,
                by,
                action,
                role,
                member,
            } => {
                conversation.encode(out);
                out.extend_from_slice(&epoch.to_be_bytes());
                by.encode(out);
                out.push(action.to_u8());
                out.push(role.to_u8());
                out.extend_from_slice(&member.0);
            }
            Self::HistoryShared {
                conversation,
                by,
                to,
                count,
            } => {
                conversation.encode(out);
                by.encode(out);
                to.encode(out);
                out.extend_from_slice(&count.to_be_bytes());
            }
            Self::MessageRecalled {
                conversation,
                by,
                message_id,
            } => {
                conversation.encode(out);
                by.encode(out);
                out.extend_from_slice(message_id);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let tag = r.u8("audit event type")?;
        Ok(match tag {
            0x01 => Self::DeviceRegistered {
                device: DeviceRef::read(r)?,
            },
            0x02 => Self::DeviceAuthenticated {
                device: DeviceRef::read(r)?,
            },
            0x03 => Self::AuthenticationFailed {
                reason: AuthFailure::from_byte(r.u8("authentication failure reason")?)?,
            },
            0x04 => Self::RateLimited {
                device: DeviceRef::read(r)?,
            },
            0x08 => Self::PreKeysUploaded {
                device: DeviceRef::read(r)?,
                one_time: r.u32("one-time prekeys uploaded")?,
                kem_one_time: r.u32("ML-KEM one-time prekeys uploaded")?,
            },
            0x09 => Self::BundleFetched {
                requester: DeviceRef::read(r)?,
                target: DeviceRef::read(r)?,
                one_time_left: r.u32("one-time prekeys left")?,
            },
            0x10 => Self::EnvelopeStored {
                sender: DeviceRef::read(r)?,
                recipient: DeviceRef::read(r)?,
                envelope: EnvelopeId::read(r)?,
                size: r.u32("envelope size")?,
            },
            0x11 => Self::EnvelopeDelivered {
                recipient: DeviceRef::read(r)?,
                envelope: EnvelopeId::read(r)?,
            },
            0x12 => Self::EnvelopeAcknowledged {
                recipient: DeviceRef::read(r)?,
                envelope: EnvelopeId::read(r)?,
            },
            0x13 => Self::EnvelopesExpired {
                recipient: DeviceRef::read(r)?,
                count: r.u32("expired envelope count")?,
            },
            0x20 => Self::SessionStarted {
                device: DeviceRef::read(r)?,
                peer: DeviceRef::read(r)?,
                conversation: ConversationId::read(r)?,
            },
            0x21 => Self::IdentityChanged {
                device: DeviceRef::read(r)?,
                peer: DeviceRef::read(r)?,
            },
            0x22 => Self::ContactVerified {
                device: DeviceRef::read(r)?,
                peer: DeviceRef::read(r)?,
            },
            0x25 => Self::MessageCancelled {
                device: DeviceRef::read(r)?,
                peer: DeviceRef::read(r)?,
                message_id: r.array("message id")?,
            },
            0x24 => Self::SessionReset {
                device: DeviceRef::read(r)?,
                peer: DeviceRef::read(r)?,
                requested_by_peer: match r.u8("requested by peer")? {
                    0 => false,
                    1 => true,
                    _ => {
                        return Err(DecodeError::InvalidValue {
                            field: "requested by peer",
                        });
                    }
                },
            },
            0x23 => Self::StoreUnlocked {
                device: DeviceRef::read(r)?,
            },
            0x30 => Self::TranscriptCheckpointed {
                transcript: TranscriptId::read(r)?,
                records: r.u64("transcript record count")?,
            },
            0x31 => Self::TranscriptExported {
                transcript: TranscriptId::read(r)?,
                records: r.u64("transcript record count")?,
                recipients: r.u8("export recipient count")?,
            },
            0x32 => Self::TranscriptOpened {
                transcript: TranscriptId::read(r)?,
                by: DeviceRef::read(r)?,
            },
            0x33 => Self::TranscriptShredded {
                transcript: TranscriptId::read(r)?,
            },
            0x50 => Self::CertificateAccepted {
                device: DeviceRef::read(r)?,
                serial: r.u64("certificate serial")?,
                roles: r.u8("certified roles")?,
            },
            0x51 => Self::DeviceSuspended {
                device: DeviceRef::read(r)?,
                by: DeviceRef::read(r)?,
            },
            0x52 => Self::WipeOrdered {
                device: DeviceRef::read(r)?,
                by: DeviceRef::read(r)?,
            },
            0x53 => Self::RevocationListPublished {
                sequence: r.u64("revocation list sequence")?,
                by: DeviceRef::read(r)?,
            },
            0x54 => Self::DeviceListPublished {
                identity: Fingerprint(r.array("identity fingerprint")?),
                sequence: r.u64("device list sequence")?,
            },
            0x55 => Self::ConversationOpened {
                conversation: ConversationId::read(r)?,
                patient: DeviceRef::read(r)?,
            },
            0x56 => Self::MembershipChanged {
                conversation: ConversationId::read(r)?,
                epoch: r.u64("membership epoch")?,
                by: DeviceRef::read(r)?,
                action: ChangeAction::from_u8(r.u8("change action")?)?,
                role: MemberRole::from_u8(r.u8("member role")?)?,
                member: Fingerprint(r.array("member fingerprint")?),
            },
            0x57 => Self::ConversationClaimed {
                conversation: ConversationId::read(r)?,
                by: DeviceRef::read(r)?,
            },
            0x58 => Self::HistoryShared {
                conversation: ConversationId::read(r)?,
                by: DeviceRef::read(r)?,
                to: DeviceRef::read(r)?,
                count: r.u32("shared message count")?,
            },
            0x59 => Self::MessageRecalled {
                conversation: ConversationId::read(r)?,
                by: DeviceRef::read(r)?,
                message_id: r.array("message id")?,
            },
            0x5a => Self::ArchiveOpened {
                conversation: ConversationId::read(r)?,
                by: DeviceRef::read(r)?,
            },
            _ => {
                return Err(DecodeError::UnknownType {
                    structure: Self::NAME,
                    tag,
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::MAX_EVENT_LEN;
    use crate::audit::test_support::*;

    #[test]
    fn every_event_round_trips_with_its_documented_tag_and_length() {
        let expected: [(u8, usize); 31] = [
            (0x01, 37),
            (0x02, 37),
            (0x03, 2),
            (0x04, 37),
            (0x08, 45),
            (0x09, 77),
            (0x10, 93),
            (0x11, 53),
            (0x12, 53),
            (0x13, 41),
            (0x20, 89),
            (0x21, 73),
            (0x22, 73),
            (0x23, 37),
            (0x24, 74),
            (0x25, 89),
            (0x30, 25),
            (0x31, 26),
            (0x32, 53),
            (0x33, 17),
            (0x50, 46),
            (0x51, 73),
            (0x52, 73),
            (0x53, 45),
            (0x54, 41),
            (0x55, 53),
            (0x56, 95),
            (0x57, 53),
            (0x58, 93),
            (0x59, 69),
            (0x5a, 53),
        ];
        for (event, (tag, len)) in every_event().into_iter().zip(expected) {
            let bytes = event.to_bytes();
            assert_eq!(bytes[0], tag, "{event:?}");
            assert_eq!(event.tag(), tag);
            assert_eq!(bytes.len(), len, "{event:?}");
            assert!(len <= MAX_EVENT_LEN);
            assert_eq!(AuditEvent::from_bytes(&bytes), Ok(event));
        }
    }

    #[test]
    fn every_auth_failure_round_trips_and_others_are_refused() {
        for reason in [
            AuthFailure::BadSignature,
            AuthFailure::ExpiredChallenge,
            AuthFailure::ReplayedChallenge,
            AuthFailure::UnknownDevice,
            AuthFailure::RegistrationRefused,
        ] {
            assert_eq!(AuthFailure::from_byte(reason.to_byte()), Ok(reason));
        }
        for b in [0x00, 0x06, 0xff] {
            assert!(AuthFailure::from_byte(b).is_err());
        }
    }

    #[test]
    fn membership_changed_refuses_unknown_action_and_role_bytes() {
        let event = AuditEvent::MembershipChanged {
            conversation: ConversationId([1; 16]),
            epoch: 3,
            by: device(2),
            action: ChangeAction::Remove,
            role: MemberRole::Supervisor,
            member: Fingerprint([4; 32]),
        };
        let bytes = event.to_bytes();
        // tag 1, conversation 16, epoch 8, by 36: action at 61, role at 62.
        assert_eq!((bytes[61], bytes[62]), (0x02, 0x03));
        for (at, bad, field) in [
            (61, 0x00, "change action"),
            (61, 0x03, "change action"),
            (62, 0x00, "member role"),
            (62, 0x04, "member role"),
        ] {
            let mut b = bytes.clone();
            b[at] = bad;
            assert_eq!(
                AuditEvent::from_bytes(&b),
                Err(DecodeError::InvalidValue { field }),
                "byte {at} = {bad:#04x}"
            );
        }
        for len in 0..bytes.len() {
            assert!(
                AuditEvent::from_bytes(&bytes[..len]).is_err(),
                "prefix {len}"
            );
        }
    }
}
