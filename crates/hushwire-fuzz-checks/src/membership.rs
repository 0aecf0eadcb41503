//! Clinic conversation structures (`docs/conversations.md`): membership changes and whole
//! membership histories, queue frames, archive policies and archive envelopes, as the relay and
//! clients receive them from anyone.

use hushwire::proto::Codec;
use hushwire::proto::clinic::OrgKey;
use hushwire::proto::codec::Reader;
use hushwire::proto::conversation::queue::QueueFrame;
use hushwire::proto::conversation::{
    ArchiveEnvelope, ArchivePolicy, MAX_CONVERSATION_DEVICES, MemberRole, MembershipChange,
    MembershipContext, MembershipLog,
};

/// The organization key of `docs/vectors/clinic.json` and `conversation_membership.json` (seed
/// `0x4f` × 32), so the seeds' histories verify and mutations reach the later rules.
const ORG_KEY: [u8; 32] = [
    0x00, 0xe3, 0xc5, 0x6b, 0x91, 0xab, 0x0a, 0x01, 0x71, 0x74, 0xb9, 0x66, 0x45, 0xea, 0xf9, 0x28,
    0x36, 0x6c, 0xdb, 0xae, 0x1e, 0x87, 0xfd, 0x21, 0xbf, 0x86, 0x66, 0x1d, 0x86, 0xf3, 0xe7, 0xef,
];
/// `conversation_membership.json`'s `now`.
const NOW: u64 = 1_710_010_000;

/// Any bytes as each conversation structure: whatever decodes re-encodes to the same bytes;
/// the bytes as a sequence of membership changes are applied in order to a history, and every
/// refused change leaves the history exactly as it was, while every accepted one keeps its
/// invariants (one more epoch, the change's hash at the head, at most 32 devices, one patient).
pub fn conversation_structures(data: &[u8]) {
    fn canonical<T: Codec>(data: &[u8]) -> Option<T> {
        let value = T::from_bytes(data).ok()?;
        assert_eq!(value.to_bytes(), data, "non-canonical {} accepted", T::NAME);
        Some(value)
    }
    let Ok(org) = OrgKey::from_bytes(&ORG_KEY) else {
        panic!("the fixed organization key does not decode");
    };
    if let Ok((request_id, frame)) = QueueFrame::from_frame(data) {
        assert_eq!(
            frame.to_frame(request_id),
            data,
            "non-canonical queue frame"
        );
    }
    if let Some(policy) = canonical::<ArchivePolicy>(data) {
        let _ = policy.verify(&org) || policy.verify(policy.org());
    }
    if let Some(envelope) = canonical::<ArchiveEnvelope>(data) {
        assert_eq!(
            &data[..envelope.associated_data().len()],
            envelope.associated_data()
        );
    }
    if let Some(change) = canonical::<MembershipChange>(data) {
        let _ = change.verify_signature();
        let mut log = MembershipLog::new(change.conversation(), org);
        apply_checked(&mut log, &change);
    }

    // The bytes as a history: changes back to back, applied in order.
    let mut r = Reader::new(data);
    let mut log: Option<MembershipLog> = None;
    while let Ok(change) = MembershipChange::read(&mut r) {
        let log = log.get_or_insert_with(|| MembershipLog::new(change.conversation(), org));
        apply_checked(log, &change);
    }
}

fn apply_checked(log: &mut MembershipLog, change: &MembershipChange) {
    let ctx = MembershipContext {
        revocations: None,
        patient_devices: None,
        now: NOW,
    };
    let before = (log.next_epoch(), log.head(), log.members().to_vec());
    match log.apply(change, &ctx) {
        Ok(()) => {
            assert_eq!(log.next_epoch(), before.0 + 1);
            assert_eq!(log.head(), change.hash());
            assert!(log.device_count() <= MAX_CONVERSATION_DEVICES);
            assert!(log.members().iter().all(|m| !m.devices().is_empty()));
            let patients = log
                .members()
                .iter()
                .filter(|m| m.role() == MemberRole::Patient)
                .count();
            assert!(patients <= 1, "two patient identities");
            let _ = log.is_claimed();
        }
        Err(e) => {
            assert_eq!(
                (log.next_epoch(), log.head(), log.members().to_vec()),
                before,
                "a refused change ({e:?}) changed the history"
            );
            assert!(!e.rule().is_empty() && !e.to_string().is_empty());
        }
    }
}
