//! Helpers shared by the audit module's tests: keys, devices, one event of each kind, logs
//! and proptest strategies.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;

use super::*;
use crate::keys::Fingerprint;

pub(crate) const CHAIN: [u8; 16] = [0x5a; 16];

pub(crate) fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

pub(crate) fn device(n: u8) -> DeviceRef {
    DeviceRef {
        fingerprint: Fingerprint([n; 32]),
        device_id: u32::from(n),
    }
}

/// One event of every kind, in tag order.
pub(crate) fn every_event() -> Vec<AuditEvent> {
    let (a, b) = (device(1), device(2));
    let envelope = EnvelopeId([3; 16]);
    let transcript = TranscriptId([4; 16]);
    vec![
        AuditEvent::DeviceRegistered { device: a },
        AuditEvent::DeviceAuthenticated { device: a },
        AuditEvent::AuthenticationFailed {
            reason: AuthFailure::ReplayedChallenge,
        },
        AuditEvent::RateLimited { device: a },
        AuditEvent::PreKeysUploaded {
            device: a,
            one_time: 100,
            kem_one_time: 50,
        },
        AuditEvent::BundleFetched {
            requester: a,
            target: b,
            one_time_left: 99,
        },
        AuditEvent::EnvelopeStored {
            sender: a,
            recipient: b,
            envelope,
            size: 1234,
        },
        AuditEvent::EnvelopeDelivered {
            recipient: b,
            envelope,
        },
        AuditEvent::EnvelopeAcknowledged {
            recipient: b,
            envelope,
        },
        AuditEvent::EnvelopesExpired {
            recipient: b,
            count: 7,
        },
        AuditEvent::SessionStarted {
            device: a,
            peer: b,
            conversation: ConversationId([5; 16]),
        },
        AuditEvent::IdentityChanged { device: a, peer: b },
        AuditEvent::ContactVerified { device: a, peer: b },
        AuditEvent::StoreUnlocked { device: a },
        AuditEvent::SessionReset {
            device: a,
            peer: b,
            requested_by_peer: true,
        },
        AuditEvent::MessageCancelled {
            device: a,
            peer: b,
            message_id: [6; 16],
        },
        AuditEvent::TranscriptCheckpointed {
            transcript,
            records: 10,
        },
        AuditEvent::TranscriptExported {
            transcript,
            records: 10,
            recipients: 2,
        },
        AuditEvent::TranscriptOpened { transcript, by: b },
        AuditEvent::TranscriptShredded { transcript },
        AuditEvent::CertificateAccepted {
            device: a,
            serial: 42,
            roles: 0x05,
        },
        AuditEvent::DeviceSuspended { device: b, by: a },
        AuditEvent::WipeOrdered { device: b, by: a },
        AuditEvent::RevocationListPublished { sequence: 3, by: a },
        AuditEvent::DeviceListPublished {
            identity: Fingerprint([7; 32]),
            sequence: 2,
        },
        AuditEvent::ConversationOpened {
            conversation: ConversationId([8; 16]),
            patient: a,
        },
        AuditEvent::MembershipChanged {
            conversation: ConversationId([8; 16]),
            epoch: 1,
            by: b,
            action: crate::conversation::ChangeAction::Add,
            role: crate::conversation::MemberRole::Agent,
            member: Fingerprint([9; 32]),
        },
        AuditEvent::ConversationClaimed {
            conversation: ConversationId([8; 16]),
            by: b,
        },
        AuditEvent::HistoryShared {
            conversation: ConversationId([8; 16]),
            by: b,
            to: a,
            count: 12,
        },
        AuditEvent::MessageRecalled {
            conversation: ConversationId([8; 16]),
            by: a,
            message_id: [10; 16],
        },
        AuditEvent::ArchiveOpened {
            conversation: ConversationId([8; 16]),
            by: b,
        },
    ]
}

/// `n` records cycling through every event kind, and a checkpoint at each count in `at`.
pub(crate) fn chain_with(n: u64, at: &[u64]) -> (Vec<AuditRecord>, Vec<AuditCheckpoint>) {
    let signer = key(1);
    let events = every_event();
    let mut chain = AuditChain::new(CHAIN);
    let mut records = Vec::new();
    let mut checkpoints = Vec::new();
    for i in 0..=n {
        if at.contains(&i) {
            checkpoints.push(chain.checkpoint(&signer, 1_000_000 + i));
        }
        if i < n {
            let event = events[(i as usize) % events.len()];
            records.push(chain.append(1_000 + i, event));
        }
    }
    (records, checkpoints)
}

pub(crate) fn check(
    records: &[AuditRecord],
    checkpoints: &[AuditCheckpoint],
) -> Result<AuditReport, AuditFault> {
    verify(CHAIN, &key(1).verifying_key(), records, checkpoints)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn arb_device() -> impl Strategy<Value = DeviceRef> {
    (any::<[u8; 32]>(), any::<u32>()).prop_map(|(f, device_id)| DeviceRef {
        fingerprint: Fingerprint(f),
        device_id,
    })
}

pub(crate) fn arb_event() -> impl Strategy<Value = AuditEvent> {
    let d = arb_device;
    let id = any::<[u8; 16]>;
    let reason = prop_oneof![
        Just(AuthFailure::BadSignature),
        Just(AuthFailure::ExpiredChallenge),
        Just(AuthFailure::ReplayedChallenge),
        Just(AuthFailure::UnknownDevice),
        Just(AuthFailure::RegistrationRefused),
    ];
    prop_oneof![
        d().prop_map(|device| AuditEvent::DeviceRegistered { device }),
        d().prop_map(|device| AuditEvent::DeviceAuthenticated { device }),
        reason.prop_map(|reason| AuditEvent::AuthenticationFailed { reason }),
        d().prop_map(|device| AuditEvent::RateLimited { device }),
        (d(), any::<u32>(), any::<u32>()).prop_map(|(device, one_time, kem_one_time)| {
            AuditEvent::PreKeysUploaded {
                device,
                one_time,
                kem_one_time,
            }
        }),
        (d(), d(), any::<u32>()).prop_map(|(requester, target, one_time_left)| {
            AuditEvent::BundleFetched {
                requester,
                target,
                one_time_left,
            }
        }),
        (d(), d(), id(), any::<u32>()).prop_map(|(sender, recipient, e, size)| {
            AuditEvent::EnvelopeStored {
                sender,
                recipient,
                envelope: EnvelopeId(e),
                size,
            }
        }),
        (d(), id()).prop_map(|(recipient, e)| AuditEvent::EnvelopeDelivered {
            recipient,
            envelope: EnvelopeId(e)
        }),
        (d(), id()).prop_map(|(recipient, e)| AuditEvent::EnvelopeAcknowledged {
            recipient,
            envelope: EnvelopeId(e)
        }),
        (d(), any::<u32>())
            .prop_map(|(recipient, count)| AuditEvent::EnvelopesExpired { recipient, count }),
        (d(), d(), id()).prop_map(|(device, peer, c)| AuditEvent::SessionStarted {
            device,
            peer,
            conversation: ConversationId(c)
        }),
        (d(), d()).prop_map(|(device, peer)| AuditEvent::IdentityChanged { device, peer }),
        (d(), d()).prop_map(|(device, peer)| AuditEvent::ContactVerified { device, peer }),
        (d(), d(), any::<[u8; 16]>()).prop_map(|(device, peer, message_id)| {
            AuditEvent::MessageCancelled {
                device,
                peer,
                message_id,
            }
        }),
        (d(), d(), any::<bool>()).prop_map(|(device, peer, requested_by_peer)| {
            AuditEvent::SessionReset {
                device,
                peer,
                requested_by_peer,
            }
        }),
        d().prop_map(|device| AuditEvent::StoreUnlocked { device }),
        (id(), any::<u64>()).prop_map(|(t, records)| AuditEvent::TranscriptCheckpointed {
            transcript: TranscriptId(t),
            records
        }),
        (id(), any::<u64>(), any::<u8>()).prop_map(|(t, records, recipients)| {
            AuditEvent::TranscriptExported {
                transcript: TranscriptId(t),
                records,
                recipients,
            }
        }),
        (id(), d()).prop_map(|(t, by)| AuditEvent::TranscriptOpened {
            transcript: TranscriptId(t),
            by
        }),
        id().prop_map(|t| AuditEvent::TranscriptShredded {
            transcript: TranscriptId(t)
        }),
        (d(), any::<u64>(), any::<u8>()).prop_map(|(device, serial, roles)| {
            AuditEvent::CertificateAccepted {
                device,
                serial,
                roles,
            }
        }),
        (d(), d()).prop_map(|(device, by)| AuditEvent::DeviceSuspended { device, by }),
        (d(), d()).prop_map(|(device, by)| AuditEvent::WipeOrdered { device, by }),
        (any::<u64>(), d())
            .prop_map(|(sequence, by)| AuditEvent::RevocationListPublished { sequence, by }),
        (any::<[u8; 32]>(), any::<u64>()).prop_map(|(f, sequence)| {
            AuditEvent::DeviceListPublished {
                identity: Fingerprint(f),
                sequence,
            }
        }),
        (id(), d()).prop_map(|(c, patient)| AuditEvent::ConversationOpened {
            conversation: ConversationId(c),
            patient
        }),
        (
            id(),
            any::<u64>(),
            d(),
            any::<bool>(),
            0u8..3,
            any::<[u8; 32]>()
        )
            .prop_map(|(c, epoch, by, add, role, member)| {
                use crate::conversation::{ChangeAction, MemberRole};
                AuditEvent::MembershipChanged {
                    conversation: ConversationId(c),
                    epoch,
                    by,
                    action: if add {
                        ChangeAction::Add
                    } else {
                        ChangeAction::Remove
                    },
                    role: [
                        MemberRole::Patient,
                        MemberRole::Agent,
                        MemberRole::Supervisor,
                    ][usize::from(role)],
                    member: Fingerprint(member),
                }
            }),
        (id(), d()).prop_map(|(c, by)| AuditEvent::ConversationClaimed {
            conversation: ConversationId(c),
            by
        }),
        (id(), d(), d(), any::<u32>()).prop_map(|(c, by, to, count)| {
            AuditEvent::HistoryShared {
                conversation: ConversationId(c),
                by,
                to,
                count,
            }
        }),
        (id(), d(), any::<[u8; 16]>()).prop_map(|(c, by, message_id)| {
            AuditEvent::MessageRecalled {
                conversation: ConversationId(c),
                by,
                message_id,
            }
        }),
        (id(), d()).prop_map(|(c, by)| AuditEvent::ArchiveOpened {
            conversation: ConversationId(c),
            by
        }),
    ]
}

pub(crate) fn arb_record() -> impl Strategy<Value = AuditRecord> {
    (any::<u64>(), any::<u64>(), arb_event(), any::<[u8; 32]>()).prop_map(
        |(sequence, time_ms, event, previous_hash)| AuditRecord {
            sequence,
            time_ms,
            event,
            previous_hash,
        },
    )
}

pub(crate) fn arb_checkpoint() -> impl Strategy<Value = AuditCheckpoint> {
    (
        any::<[u8; 16]>(),
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
    )
        .prop_map(|(chain_id, count, head_hash, time_ms, s1, s2)| {
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(&s1);
            signature[32..].copy_from_slice(&s2);
            AuditCheckpoint {
                chain_id,
                count,
                head_hash,
                time_ms,
                signature,
            }
        })
}

/// A log of the given events with checkpoints at the counts in `extra` (all below the
/// log's length) and, if `signed_end`, one over the whole log.
pub(crate) fn signed_log(
    events: &[AuditEvent],
    extra: &[u64],
    signed_end: bool,
) -> (Vec<AuditRecord>, Vec<AuditCheckpoint>) {
    let n = events.len() as u64;
    let signer = key(1);
    let mut chain = AuditChain::new(CHAIN);
    let mut records = Vec::new();
    let mut checkpoints = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let i = i as u64;
        if extra.contains(&i) {
            checkpoints.push(chain.checkpoint(&signer, i));
        }
        records.push(chain.append(i * 7, *event));
    }
    if signed_end {
        checkpoints.push(chain.checkpoint(&signer, n));
    }
    (records, checkpoints)
}

/// `(records, checkpoints, signed_end)`: mostly logs signed to the end; in one case of four
/// the tail after the last checkpoint (perhaps the whole log) is unsigned.
pub(crate) fn arb_log() -> impl Strategy<Value = (Vec<AuditRecord>, Vec<AuditCheckpoint>, bool)> {
    (
        prop::collection::vec(arb_event(), 1..40),
        prop::collection::vec(0u64..40, 0..6),
        prop::bool::weighted(0.75),
    )
        .prop_map(|(events, extra, signed_end)| {
            let (records, checkpoints) = signed_log(&events, &extra, signed_end);
            (records, checkpoints, signed_end)
        })
}

/// The largest count a checkpoint names (0 without checkpoints).
pub(crate) fn signed_count(checkpoints: &[AuditCheckpoint]) -> u64 {
    checkpoints.iter().map(|c| c.count).max().unwrap_or(0)
}
