//! Every rule of `docs/conversations.md` §4.3, accepted and refused, and the codecs' bounds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use ed25519_dalek::SigningKey;

use super::queue::{ArchiveItem, NoteEnvelope, QueueEntry, QueueError, QueueFrame, QueueState};
use super::*;
use crate::clinic::{
    AgentCertificate, CertificateError, DeviceList, OrgKey, RevocationList, Role, Roles,
};
use crate::codec::{Codec, DecodeError};
use crate::keys::{IdentityKey, X25519PublicKey};
use crate::labels;
use crate::relay::DeviceAddress;
use crate::signer::Signer;

const NOT_BEFORE: u64 = 1_700_000_000;
const NOT_AFTER: u64 = 1_731_536_000;
const T0: u64 = 1_710_000_000;
const CONV: ConversationId = ConversationId([0xc0; 16]);

struct Person {
    key: SigningKey,
    identity: IdentityKey,
    certificate: Option<AgentCertificate>,
}

fn nine() -> X25519PublicKey {
    let mut nine = [0u8; 32];
    nine[0] = 9;
    X25519PublicKey::from_array(nine, "k").unwrap()
}

fn person(seed: u8) -> Person {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let dh = nine();
    let binding = key.sign(
        labels::SIG_IDENTITY_BINDING,
        &crate::keys::identity_binding_message(key.verifying_key().as_bytes(), dh.as_bytes()),
    );
    let identity = IdentityKey::new(key.verifying_key().to_bytes(), dh, binding).unwrap();
    Person {
        key,
        identity,
        certificate: None,
    }
}

struct World {
    org_key: SigningKey,
    org: OrgKey,
    patient: Person,
    ada: Person,
    ben: Person,
    sue: Person,
    stranger: Person,
    patient_devices: DeviceList,
}

fn staff(org: &SigningKey, seed: u8, serial: u64, name: &str, roles: &[Role]) -> Person {
    let mut p = person(seed);
    p.certificate = Some(
        AgentCertificate::issue(
            org,
            serial,
            p.identity.clone(),
            name,
            Roles::of(roles).unwrap(),
            NOT_BEFORE,
            NOT_AFTER,
        )
        .unwrap(),
    );
    p
}

fn world() -> World {
    let org_key = SigningKey::from_bytes(&[0x4f; 32]);
    let org = OrgKey::new(org_key.verifying_key()).unwrap();
    let patient = person(1);
    let patient_devices = DeviceList::issue(&patient.key, &patient.identity, 1, &[1, 2]).unwrap();
    World {
        ada: staff(&org_key, 2, 1, "Ada", &[Role::Agent]),
        ben: staff(&org_key, 3, 2, "Ben", &[Role::Agent]),
        sue: staff(&org_key, 4, 3, "Sue", &[Role::Supervisor]),
        stranger: person(5),
        org_key,
        org,
        patient,
        patient_devices,
    }
}

impl World {
    fn ctx(&self) -> MembershipContext<'_> {
        MembershipContext {
            revocations: None,
            patient_devices: Some(&self.patient_devices),
            now: T0 + 10_000,
        }
    }
}

/// A change by `signer`'s device `device` on top of `log`, one second after the previous one.
#[allow(clippy::too_many_arguments)]
fn change(
    log: &MembershipLog,
    signer: &Person,
    device: u32,
    action: ChangeAction,
    role: MemberRole,
    member: &Person,
    devices: &[u32],
) -> MembershipChange {
    let member_certificate = if action == ChangeAction::Add && role.is_staff() {
        member.certificate.clone()
    } else {
        None
    };
    MembershipChange::sign(
        ChangeProposal {
            conversation: log.conversation(),
            epoch: log.next_epoch(),
            previous_hash: log.head(),
            issued_at: T0 + log.next_epoch(),
            action,
            role,
            member: member.identity.clone(),
            devices: devices.to_vec(),
            member_certificate,
        },
        &signer.key,
        signer.identity.clone(),
        device,
        signer.certificate.clone(),
    )
    .unwrap()
}

use ChangeAction::{Add, Remove};
use MemberRole::{Agent, Patient, Supervisor};

/// The patient opens with device 1, Ada claims.
fn claimed(w: &World) -> (MembershipLog, Vec<MembershipChange>) {
    let mut log = MembershipLog::new(CONV, w.org);
    let open = change(&log, &w.patient, 1, Add, Patient, &w.patient, &[1]);
    log.apply(&open, &w.ctx()).unwrap();
    let claim = change(&log, &w.ada, 1, Add, Agent, &w.ada, &[1]);
    log.apply(&claim, &w.ctx()).unwrap();
    (log, vec![open, claim])
}

fn refused(
    log: &mut MembershipLog,
    c: &MembershipChange,
    ctx: &MembershipContext<'_>,
) -> MembershipError {
    let (epoch, head, members) = (log.next_epoch(), log.head(), log.members().to_vec());
    let err = log.apply(c, ctx).unwrap_err();
    // A refused change changes nothing.
    assert_eq!((log.next_epoch(), log.head()), (epoch, head));
    assert_eq!(log.members(), &members[..]);
    err
}

#[test]
fn a_whole_support_chat_verifies() {
    let w = world();
    let (mut log, mut changes) = claimed(&w);
    assert!(log.is_claimed());
    // The patient adds its second (listed) device.
    let c = change(&log, &w.patient, 1, Add, Patient, &w.patient, &[2]);
    log.apply(&c, &w.ctx()).unwrap();
    changes.push(c);
    // Hand-off to Ben: Ada adds Ben, then removes herself.
    let c = change(&log, &w.ada, 1, Add, Agent, &w.ben, &[1, 2]);
    log.apply(&c, &w.ctx()).unwrap();
    changes.push(c);
    let c = change(&log, &w.ada, 1, Remove, Agent, &w.ada, &[1]);
    log.apply(&c, &w.ctx()).unwrap();
    changes.push(c);
    // Sue joins read-only and leaves.
    let c = change(&log, &w.sue, 1, Add, Supervisor, &w.sue, &[1]);
    log.apply(&c, &w.ctx()).unwrap();
    changes.push(c);
    assert_eq!(log.device_count(), 5);
    let c = change(&log, &w.sue, 1, Remove, Supervisor, &w.sue, &[1]);
    log.apply(&c, &w.ctx()).unwrap();
    changes.push(c);
    // Ben hands back to the queue; Ada may claim again.
    let c = change(&log, &w.ben, 2, Remove, Agent, &w.ben, &[1, 2]);
    log.apply(&c, &w.ctx()).unwrap();
    changes.push(c);
    assert!(!log.is_claimed());
    let c = change(&log, &w.ada, 1, Add, Agent, &w.ada, &[1]);
    log.apply(&c, &w.ctx()).unwrap();
    changes.push(c);

    assert_eq!(log.next_epoch(), 9);
    assert_eq!(log.device_count(), 3);
    assert!(log.is_member(&w.patient.identity.fingerprint(), 2));
    assert!(!log.is_member(&w.ben.identity.fingerprint(), 1));
    assert_eq!(log.patient(), Some(w.patient.identity.fingerprint()));
    // The same history, from scratch, from its encodings.
    let decoded: Vec<_> = changes
        .iter()
        .map(|c| MembershipChange::from_bytes(&c.to_bytes()).unwrap())
        .collect();
    assert_eq!(decoded, changes);
    let again = MembershipLog::verify_all(CONV, w.org, &decoded, &w.ctx()).unwrap();
    assert_eq!(again.head(), log.head());
    // Each change names the previous one's hash.
    for pair in changes.windows(2) {
        assert_eq!(pair[1].previous_hash(), &pair[0].hash());
    }
    assert_eq!(changes[0].previous_hash(), &genesis_hash(&CONV, &w.org));
}

#[test]
fn a_bad_signature_is_refused() {
    let w = world();
    let (mut log, _) = claimed(&w);
    let c = change(&log, &w.ada, 1, Add, Agent, &w.ben, &[1]);
    let mut bytes = c.to_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let forged = MembershipChange::from_bytes(&bytes).unwrap();
    assert_eq!(
        refused(&mut log, &forged, &w.ctx()),
        MembershipError::BadSignature
    );
    // Signed by someone else's key under Ada's identity.
    let mut impostor = person(9);
    impostor.identity = w.ada.identity.clone();
    impostor.certificate = w.ada.certificate.clone();
    let c = change(&log, &impostor, 1, Add, Agent, &w.ben, &[1]);
    assert_eq!(
        refused(&mut log, &c, &w.ctx()),
        MembershipError::BadSignature
    );
}

#[test]
fn a_removed_agent_cannot_sign() {
    let w = world();
    let (mut log, _) = claimed(&w);
    log.apply(&change(&log, &w.ada, 1, Add, Agent, &w.ben, &[1]), &w.ctx())
        .unwrap();
    log.apply(
        &change(&log, &w.ben, 1, Remove, Agent, &w.ada, &[1]),
        &w.ctx(),
    )
    .unwrap();
    for c in [
        change(&log, &w.ada, 1, Remove, Agent, &w.ben, &[1]),
        change(&log, &w.ada, 1, Add, Supervisor, &w.sue, &[1]),
    ] {
        assert_eq!(
            refused(&mut log, &c, &w.ctx()),
            MembershipError::SignerRemoved { device_id: 1 }
        );
    }
    // Nor re-claim while Ben is on it.
    let c = change(&log, &w.ada, 1, Add, Agent, &w.ada, &[1]);
    assert_eq!(
        refused(&mut log, &c, &w.ctx()),
        MembershipError::ClaimWhileClaimed
    );
    // A device that never was a member.
    let c = change(&log, &w.stranger, 1, Remove, Agent, &w.ben, &[1]);
    assert_eq!(
        refused(&mut log, &c, &w.ctx()),
        MembershipError::SignerNotMember
    );
}

#[test]
fn the_patient_cannot_add_a_stranger_or_remove_staff() {
    let w = world();
    let (mut log, _) = claimed(&w);
    let c = change(&log, &w.patient, 1, Add, Patient, &w.stranger, &[1]);
    assert_eq!(
        refused(&mut log, &c, &w.ctx()),
        MembershipError::PatientAddsStranger
    );
    let c = change(&log, &w.patient, 1, Add, Agent, &w.ben, &[1]);
    assert_eq!(
        refused(&mut log, &c, &w.ctx()),
        MembershipError::PatientAddsStranger
    );
    let c = change(&log, &w.patient, 1, Remove, Agent, &w.ada, &[1]);
    assert_eq!(
        refused(&mut log, &c, &w.ctx()),
        MembershipError::PatientRemovesStaff
    );
    // A device missing from the patient's list.
    let c = change(&log, &w.patient, 1, Add, Patient, &w.patient, &[3]);
    assert_eq!(
        refused(&mut log, &c, &w.ctx()),
        MembershipError::DeviceNotListed { device_id: 3 }
    );
    // A list that is not the patient's.
    let other = DeviceList::issue(&w.ada.key, &w.ada.identity, 1, &[1, 2, 3]).unwrap();
    let ctx = MembershipContext {
        patient_devices: Some(&other),
        ..w.ctx()
    };
    assert_eq!(
        refused(&mut log, &c, &ctx),
        MembershipError::PatientDeviceList(crate::clinic::DeviceListError::WrongIdentity)
    );
}

#[test]
fn staff_cannot_touch_the_patients_devices() {
    let w = world();
    let (mut log, _) = claimed(&w);
    let c = change(&log, &w.ada, 1, Add, Patient, &w.patient, &[2]);
    assert_eq!(
        refused(&mut log, &c, &w.ctx()),
        MembershipError::StaffAddsPatientDevice
    );
    let c = change(&log, &w.ada, 1, Remove, Patient, &w.patient, &[1]);
    assert_eq!(
        refused(&mut log, &c, &w.ctx()),
        MembershipError::StaffRemovesPatient
    );
}

#[test]
fn epochs_and_hashes_chain() {
    let w = world();
    let (mut log, changes) = claimed(&w);
    // A replay of the claim.
    assert_eq!(
        refused(&mut log, &changes[1], &w.ctx()),
        MembershipError::EpochRollback {
            expected: 2,
            found: 1
        }
    );
    // A change two epochs ahead.
    let mut ahead = log.clone();
    ahead
        .apply(
            &change(&ahead, &w.ada, 1, Add, Agent, &w.ben, &[1]),
            &w.ctx(),
        )
        .unwrap();
    let skip = change(&ahead, &w.ada, 1, Add, Supervisor, &w.sue, &[1]);
    assert_eq!(
        refused(&mut log, &skip, &w.ctx()),
        MembershipError::EpochGap {
            expected: 2,
            found: 3
        }
    );
    // The right epoch on top of another history.
    let mut other = MembershipLog::new(CONV, w.org);
    other
        .apply(
            &change(&other, &w.patient, 2, Add, Patient, &w.patient, &[2]),
            &w.ctx(),
        )
        .unwrap();
    other
        .apply(
            &change(&other, &w.ada, 1, Add, Agent, &w.ada, &[1]),
            &w.ctx(),
        )
        .unwrap();
    let fork = change(&other, &w.ada, 1, Add, Agent, &w.ben, &[1]);
    assert_eq!(
        refused(&mut log, &fork, &w.ctx()),
        MembershipError::WrongPreviousHash
    );
    // Another conversation's change.
    let mut elsewhere = MembershipLog::new(ConversationId([1; 16]), w.org);
    let c = change(&elsewhere, &w.patient, 1, Add, Patient, &w.patient, &[1]);
    assert!(elsewhere.apply(&c, &w.ctx()).is_ok());
    let mut fresh = MembershipLog::new(CONV, w.org);
    assert_eq!(
        refused(&mut fresh, &c, &w.ctx()),
        MembershipError::WrongConversation
    );
    // Another clinic's genesis.
    let other_org = OrgKey::new(SigningKey::from_bytes(&[0x50; 32]).verifying_key()).unwrap();
    let mut foreign = MembershipLog::new(CONV, other_org);
    let open = change(
        &MembershipLog::new(CONV, w.org),
        &w.patient,
        1,
        Add,
        Patient,
        &w.patient,
        &[1],
    );
    assert_eq!(
        refused(&mut foreign, &open, &w.ctx()),
        MembershipError::WrongPreviousHash
    );
}

#[test]
fn times_only_move_forward_and_not_into_the_future() {
    let w = world();
    let (mut log, _) = claimed(&w);
    let mut proposal = ChangeProposal {
        conversation: CONV,
        epoch: 2,
        previous_hash: log.head(),
        issued_at: T0,
        action: Add,
        role: Agent,
        member: w.ben.identity.clone(),
        devices: vec![1],
        member_certificate: w.ben.certificate.clone(),
    };
    let sign = |p: ChangeProposal| {
        MembershipChange::sign(
            p,
            &w.ada.key,
            w.ada.identity.clone(),
            1,
            w.ada.certificate.clone(),
        )
        .unwrap()
    };
    assert_eq!(
        refused(&mut log, &sign(proposal.clone()), &w.ctx()),
        MembershipError::TimeWentBackwards {
            previous: T0 + 1,
            issued_at: T0
        }
    );
    let now = w.ctx().now;
    proposal.issued_at = now + MAX_CLOCK_SKEW_SECS + 1;
    assert_eq!(
        refused(&mut log, &sign(proposal.clone()), &w.ctx()),
        MembershipError::FromTheFuture {
            issued_at: now + MAX_CLOCK_SKEW_SECS + 1
        }
    );
    proposal.issued_at = now + MAX_CLOCK_SKEW_SECS;
    assert!(log.apply(&sign(proposal), &w.ctx()).is_ok());
}

#[test]
fn expired_and_revoked_certificates_are_refused() {
    let w = world();
    let (mut log, _) = claimed(&w);
    // Ada signs after her certificate ended.
    let late = MembershipChange::sign(
        ChangeProposal {
            conversation: CONV,
            epoch: 2,
            previous_hash: log.head(),
            issued_at: NOT_AFTER,
            action: Add,
            role: Agent,
            member: w.ben.identity.clone(),
            devices: vec![1],
            member_certificate: w.ben.certificate.clone(),
        },
        &w.ada.key,
        w.ada.identity.clone(),
        1,
        w.ada.certificate.clone(),
    )
    .unwrap();
    let ctx = MembershipContext {
        now: NOT_AFTER,
        ..w.ctx()
    };
    assert_eq!(
        refused(&mut log, &late, &ctx),
        MembershipError::SignerCertificate(CertificateError::Expired {
            not_after: NOT_AFTER
        })
    );
    // Ada's serial (1) is revoked by a list issued before the change: refused; Ben's (2) as
    // the added member: refused too.
    let revoked = RevocationList::issue(&w.org_key, 1, T0, &[1]).unwrap();
    let ctx = MembershipContext {
        revocations: Some(&revoked),
        ..w.ctx()
    };
    let c = change(&log, &w.ada, 1, Add, Agent, &w.ben, &[1]);
    assert_eq!(
        refused(&mut log, &c, &ctx),
        MembershipError::SignerCertificate(CertificateError::Revoked { serial: 1 })
    );
    let ben_revoked = RevocationList::issue(&w.org_key, 2, T0, &[2]).unwrap();
    let ctx_ben = MembershipContext {
        revocations: Some(&ben_revoked),
        ..w.ctx()
    };
    assert_eq!(
        refused(&mut log, &c, &ctx_ben),
        MembershipError::MemberCertificate(CertificateError::Revoked { serial: 2 })
    );
    // Changes Ada made before the list stay valid: the history verifies with it.
    let later = RevocationList::issue(&w.org_key, 3, T0 + 100, &[1]).unwrap();
    let (_, changes) = claimed(&w);
    let ctx = MembershipContext {
        revocations: Some(&later),
        ..w.ctx()
    };
    assert!(MembershipLog::verify_all(CONV, w.org, &changes, &ctx).is_ok());
    // A list of another clinic is not used.
    let foreign = RevocationList::issue(&SigningKey::from_bytes(&[0x50; 32]), 1, T0, &[]).unwrap();
    let ctx = MembershipContext {
        revocations: Some(&foreign),
        ..w.ctx()
    };
    assert_eq!(
        refused(&mut log, &c, &ctx),
        MembershipError::SignerCertificate(CertificateError::ForeignRevocationList)
    );
}

#[test]
fn certificates_must_be_the_clinics_the_holders_and_grant_the_role() {
    let w = world();
    let (mut log, _) = claimed(&w);
    // Sue (supervisor only) cannot join as an agent.
    let c = change(&log, &w.sue, 1, Add, Agent, &w.sue, &[1]);
    assert_eq!(
        refused(&mut log, &c, &w.ctx()),
        MembershipError::MemberCertificate(CertificateError::MissingRole(Role::Agent))
    );
    // Ben's certificate presented for the stranger.
    let mut fake = person(5);
    fake.certificate = w.ben.certificate.clone();
    let c = change(&log, &w.ada, 1, Add, Agent, &fake, &[1]);
    assert_eq!(
        refused(&mut log, &c, &w.ctx()),
        MembershipError::MemberCertificate(CertificateError::WrongSubject)
    );
    // Another clinic's agent.
    let other = SigningKey::from_bytes(&[0x50; 32]);
    let outsider = staff(&other, 6, 1, "Out", &[Role::Agent]);
    let mut empty = MembershipLog::new(CONV, w.org);
    empty
        .apply(
            &change(&empty, &w.patient, 1, Add, Patient, &w.patient, &[1]),
            &w.ctx(),
        )
        .unwrap();
    let c = change(&empty, &outsider, 1, Add, Agent, &outsider, &[1]);
    assert_eq!(
        refused(&mut empty, &c, &w.ctx()),
        MembershipError::SignerCertificate(CertificateError::WrongClinic)
    );
    // Staff signing without a certificate.
    let mut bare = person(2);
    bare.key = w.ada.key.clone();
    let c = change(&log, &bare, 1, Add, Supervisor, &w.sue, &[1]);
    assert_eq!(
        refused(&mut log, &c, &w.ctx()),
        MembershipError::SignerCertificatePresence
    );
}

#[test]
fn a_supervisor_is_read_only() {
    let w = world();
    let (mut log, _) = claimed(&w);
    log.apply(
        &change(&log, &w.sue, 1, Add, Supervisor, &w.sue, &[1]),
        &w.ctx(),
    )
    .unwrap();
    for c in [
        change(&log, &w.sue, 1, Add, Agent, &w.ben, &[1]),
        change(&log, &w.sue, 1, Remove, Agent, &w.ada, &[1]),
        change(&log, &w.sue, 1, Add, Supervisor, &w.sue, &[2]),
    ] {
        assert_eq!(
            refused(&mut log, &c, &w.ctx()),
            MembershipError::ReadOnlySigner
        );
    }
    // A supervisor's presence does not count as a claim.
    let mut queued = MembershipLog::new(CONV, w.org);
    queued
        .apply(
            &change(&queued, &w.patient, 1, Add, Patient, &w.patient, &[1]),
            &w.ctx(),
        )
        .unwrap();
    queued
        .apply(
            &change(&queued, &w.sue, 1, Add, Supervisor, &w.sue, &[1]),
            &w.ctx(),
        )
        .unwrap();
    assert!(!queued.is_claimed());
}

#[test]
fn the_first_change_is_the_patient_opening() {
    let w = world();
    for c in [
        change(
            &MembershipLog::new(CONV, w.org),
            &w.ada,
            1,
            Add,
            Agent,
            &w.ada,
            &[1],
        ),
        change(
            &MembershipLog::new(CONV, w.org),
            &w.patient,
            1,
            Add,
            Patient,
            &w.patient,
            &[2],
        ),
        change(
            &MembershipLog::new(CONV, w.org),
            &w.patient,
            1,
            Add,
            Patient,
            &w.stranger,
            &[1],
        ),
    ] {
        let mut log = MembershipLog::new(CONV, w.org);
        assert_eq!(
            refused(&mut log, &c, &w.ctx()),
            MembershipError::NotOpenedByPatient
        );
    }
}

#[test]
fn membership_bookkeeping_rules() {
    let w = world();
    let (mut log, _) = claimed(&w);
    let c = change(&log, &w.ada, 1, Add, Agent, &w.ada, &[1]);
    assert_eq!(
        refused(&mut log, &c, &w.ctx()),
        MembershipError::AlreadyMember { device_id: 1 }
    );
    let c = change(&log, &w.ada, 1, Remove, Agent, &w.ben, &[1]);
    assert_eq!(
        refused(&mut log, &c, &w.ctx()),
        MembershipError::NotAMember { device_id: 1 }
    );
    // 32 devices at most: Ada (1) + patient (1) + 16 of Ben + 15 of Big's = 33.
    let big = staff(&w.org_key, 7, 7, "Big", &[Role::Agent, Role::Supervisor]);
    let bens: Vec<u32> = (1..=16).collect();
    log.apply(
        &change(&log, &w.ada, 1, Add, Agent, &w.ben, &bens),
        &w.ctx(),
    )
    .unwrap();
    let c = change(
        &log,
        &w.ada,
        1,
        Add,
        Supervisor,
        &big,
        &(1..=15).collect::<Vec<_>>(),
    );
    assert_eq!(
        refused(&mut log, &c, &w.ctx()),
        MembershipError::TooManyDevices { count: 33 }
    );
    let c = change(
        &log,
        &w.ada,
        1,
        Add,
        Supervisor,
        &big,
        &(1..=14).collect::<Vec<_>>(),
    );
    assert!(log.apply(&c, &w.ctx()).is_ok());
    // One identity, one role: Big cannot also be an agent.
    let c = change(&log, &w.ada, 1, Add, Agent, &big, &[15]);
    assert_eq!(
        refused(&mut log, &c, &w.ctx()),
        MembershipError::RoleMismatch
    );
    assert_eq!(log.device_count(), MAX_CONVERSATION_DEVICES);
}

#[test]
fn every_rule_has_a_name_and_a_sentence() {
    let e = MembershipError::EpochGap {
        expected: 2,
        found: 4,
    };
    assert_eq!(e.rule(), "EpochGap");
    assert!(e.to_string().contains("epoch 4"));
    assert_eq!(MembershipError::ReadOnlySigner.rule(), "ReadOnlySigner");
}

#[test]
fn change_decoding_checks_the_form() {
    let w = world();
    let (log, changes) = claimed(&w);
    let claim = changes[1].to_bytes();
    assert!(claim.len() <= MAX_CHANGE_LEN);
    // Offsets: header 2, conversation 16, epoch 8, previous 32, issued 8 → action at 66.
    let at_action = 66;
    for (at, byte, field) in [
        (0, 2, None),
        (at_action, 3, Some("change action")),
        (at_action + 1, 9, Some("member role")),
        (at_action + 2 + 128, 0, Some("change devices (empty)")),
        // The member certificate flag of a staff add, cleared.
        (
            at_action + 2 + 128 + 1 + 4,
            0,
            Some("member certificate (present exactly when staff is added)"),
        ),
    ] {
        let mut bad = claim.clone();
        bad[at] = byte;
        let err = MembershipChange::from_bytes(&bad).unwrap_err();
        match field {
            None => assert_eq!(err, DecodeError::UnsupportedVersion { version: 2 }),
            Some(field) => assert!(
                matches!(err, DecodeError::InvalidValue { field: f } if f == field)
                    || matches!(err, DecodeError::TooLong { .. }),
                "{err:?} for {field}"
            ),
        }
    }
    // Device ids out of order.
    let two = change(&log, &w.ada, 1, Add, Agent, &w.ben, &[1, 2]).to_bytes();
    let mut bad = two.clone();
    let ids = at_action + 2 + 128 + 1;
    bad[ids..ids + 8].copy_from_slice(&[0, 0, 0, 2, 0, 0, 0, 1]);
    assert_eq!(
        MembershipChange::from_bytes(&bad).unwrap_err(),
        DecodeError::InvalidValue {
            field: "change devices (must be strictly increasing)"
        }
    );
    // 17 devices announced.
    let mut bad = two.clone();
    bad[at_action + 2 + 128] = 17;
    assert!(matches!(
        MembershipChange::from_bytes(&bad),
        Err(DecodeError::TooLong { max: 16, .. })
    ));
    // Every truncation is an error, never a panic.
    for n in 0..two.len() {
        assert!(MembershipChange::from_bytes(&two[..n]).is_err());
    }
    let mut long = two.clone();
    long.push(0);
    assert_eq!(
        MembershipChange::from_bytes(&long).unwrap_err(),
        DecodeError::TrailingBytes {
            structure: "membership change"
        }
    );
    // Signing refuses what decoding would refuse.
    let proposal = ChangeProposal {
        conversation: CONV,
        epoch: 0,
        previous_hash: [0; 32],
        issued_at: T0,
        action: Add,
        role: Agent,
        member: w.ben.identity.clone(),
        devices: vec![1],
        member_certificate: None,
    };
    assert!(MembershipChange::sign(proposal, &w.ada.key, w.ada.identity.clone(), 1, None).is_err());
}

#[test]
fn queue_frames_round_trip_and_are_bounded() {
    let w = world();
    let (_, changes) = claimed(&w);
    let entry = QueueEntry {
        conversation: CONV,
        state: QueueState::HandedBack,
        opened_at: T0,
        waiting_since: T0 + 60,
        epoch: 4,
    };
    let frames = [
        QueueFrame::OpenConversation(Box::new(changes[0].clone())),
        QueueFrame::SetOnDuty(true),
        QueueFrame::FetchQueue,
        QueueFrame::Claim(Box::new(changes[1].clone())),
        QueueFrame::HandOff {
            changes: changes.clone(),
            notes: vec![NoteEnvelope {
                recipient: DeviceAddress {
                    fingerprint: [7; 32],
                    device_id: 2,
                },
                payload: vec![1; 300],
            }],
        },
        QueueFrame::PublishChange(Box::new(changes[1].clone())),
        QueueFrame::FetchMembership {
            conversation: CONV,
            from_epoch: 1,
        },
        QueueFrame::Queue(vec![entry; 3]),
        QueueFrame::Claimed {
            conversation: CONV,
            epoch: 1,
        },
        QueueFrame::AlreadyClaimed {
            conversation: CONV,
            epoch: 2,
        },
        QueueFrame::Membership(changes.clone()),
        QueueFrame::MembershipChanged(Box::new(changes[1].clone())),
        QueueFrame::QueueChanged(entry),
        QueueFrame::PutArchive(Box::new(archive_envelope())),
        QueueFrame::FetchArchive {
            conversation: CONV,
            from_index: 9,
        },
        QueueFrame::FetchArchivePolicy,
        QueueFrame::PublishArchivePolicy(Box::new(
            ArchivePolicy::issue(&w.org_key, 1, nine(), 2190).unwrap(),
        )),
        QueueFrame::ArchiveItems {
            next_index: 2,
            items: vec![
                archive_item(1, 1_700_000_000_123),
                archive_item(2, u64::MAX),
            ],
        },
        QueueFrame::ArchivePolicy(None),
        QueueFrame::FetchOnDuty,
        QueueFrame::ConversationSend {
            conversation: CONV,
            epoch: 3,
            envelopes: vec![
                crate::relay::OutgoingEnvelope {
                    recipient: DeviceAddress {
                        fingerprint: [4; 32],
                        device_id: 1,
                    },
                    payload: vec![5; 200],
                };
                2
            ],
        },
        QueueFrame::OnDuty(vec![
            DeviceAddress {
                fingerprint: [3; 32],
                device_id: 1,
            };
            2
        ]),
    ];
    let mut types = Vec::new();
    for f in &frames {
        let bytes = f.to_frame(42);
        assert_eq!(QueueFrame::from_frame(&bytes).unwrap(), (42, f.clone()));
        assert!(QueueFrame::is_queue_type(f.type_byte()));
        types.push(f.type_byte());
        for n in 0..bytes.len() {
            assert!(QueueFrame::from_frame(&bytes[..n]).is_err());
        }
    }
    types.dedup();
    assert_eq!(types.len(), frames.len());
    // Bounds, refused before allocation.
    assert!(matches!(
        QueueFrame::from_frame(&[1, 0x8d, 0, 0, 0, 0, 0xff, 0xff]),
        Err(DecodeError::TooLong { max: 256, .. })
    ));
    assert_eq!(
        QueueFrame::from_frame(&[1, 0x8d, 0, 0, 0, 0, 0, 200]),
        Err(DecodeError::Truncated {
            field: "queue entries"
        })
    );
    assert!(matches!(
        QueueFrame::from_frame(&[1, 0x93, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 17]),
        Err(DecodeError::TooLong { max: 16, .. })
    ));
    // 16 items announced, fewer than 16 × 48 bytes left.
    let mut short = vec![1, 0x93, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16];
    short.extend_from_slice(&[0; 16 * 48 - 1]);
    assert_eq!(
        QueueFrame::from_frame(&short),
        Err(DecodeError::Truncated {
            field: "archive items"
        })
    );
    assert!(matches!(
        QueueFrame::from_frame(&[1, 0x95, 0, 0, 0, 0, 1, 1]),
        Err(DecodeError::TooLong { max: 256, .. })
    ));
    assert_eq!(
        QueueFrame::from_frame(&[1, 0x95, 0, 0, 0, 0, 0, 2]),
        Err(DecodeError::Truncated {
            field: "on-duty devices"
        })
    );
    assert!(matches!(
        QueueFrame::from_frame(&[1, 0x90, 0, 0, 0, 0, 65]),
        Err(DecodeError::TooLong { max: 64, .. })
    ));
    assert_eq!(
        QueueFrame::from_frame(&[1, 0x16, 0, 0, 0, 0, 3]),
        Err(DecodeError::InvalidValue {
            field: "hand-off change count"
        })
    );
    assert_eq!(
        QueueFrame::from_frame(&[1, 0x13, 0, 0, 0, 0, 2]),
        Err(DecodeError::InvalidValue { field: "on duty" })
    );
    assert_eq!(
        QueueFrame::from_frame(&[1, 0x05, 0, 0, 0, 0]),
        Err(DecodeError::UnknownType {
            structure: "queue frame",
            tag: 0x05
        })
    );
    assert!(matches!(
        QueueFrame::from_frame(&vec![1; queue::MAX_QUEUE_FRAME_LEN + 1]),
        Err(DecodeError::TooLong { .. })
    ));
    // Error codes follow the relay's 1–19.
    for code in 20..=24 {
        assert_eq!(QueueError::from_code(code).unwrap().code(), code);
    }
    assert_eq!(QueueError::from_code(19), None);
    assert_eq!(QueueError::from_code(25), None);
}

fn archive_item(device_id: u32, filed_at_ms: u64) -> ArchiveItem {
    ArchiveItem {
        filer: DeviceAddress {
            fingerprint: [0x66; 32],
            device_id,
        },
        filed_at_ms,
        envelope: archive_envelope(),
    }
}

/// `ArchiveItems` (§5.2): `next_index[8] ‖ count[1] ‖ (filer[36] ‖ filed_at_ms[8] ‖ len[4] ‖
/// envelope) × count`, byte for byte, and an item's envelope is decoded (not carried opaque).
#[test]
fn archive_items_carry_the_filer_and_the_time() {
    let item = archive_item(7, 0x0102_0304_0506_0708);
    let envelope = item.envelope.to_bytes();
    let frame = QueueFrame::ArchiveItems {
        next_index: 5,
        items: vec![item],
    }
    .to_frame(9);
    let mut expected = vec![1, 0x93, 0, 0, 0, 9];
    expected.extend_from_slice(&5u64.to_be_bytes());
    expected.push(1);
    expected.extend_from_slice(&[0x66; 32]);
    expected.extend_from_slice(&7u32.to_be_bytes());
    expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    expected.extend_from_slice(&u32::try_from(envelope.len()).unwrap().to_be_bytes());
    expected.extend_from_slice(&envelope);
    assert_eq!(frame, expected);
    assert_eq!(frame.len(), 6 + 9 + 48 + envelope.len());
    // An item whose envelope is not an archive envelope is refused.
    let mut bad = frame.clone();
    bad[6 + 9 + 48 + 1] = 0x71; // the envelope's type byte
    assert!(QueueFrame::from_frame(&bad).is_err());
    // A length past the largest envelope is refused before reading it.
    let mut long = frame[..6 + 9 + 44].to_vec();
    long.extend_from_slice(
        &u32::try_from(queue::MAX_ARCHIVE_ENVELOPE_LEN + 1)
            .unwrap()
            .to_be_bytes(),
    );
    assert!(matches!(
        QueueFrame::from_frame(&long),
        Err(DecodeError::TooLong { .. })
    ));
    // The largest answer fits a frame.
    let largest = QueueFrame::ArchiveItems {
        next_index: u64::MAX,
        items: vec![
            ArchiveItem {
                envelope: ArchiveEnvelope {
                    ciphertext: vec![0; MAX_ARCHIVE_CIPHERTEXT_LEN],
                    ..archive_envelope()
                },
                ..archive_item(u32::MAX, u64::MAX)
            };
            queue::MAX_ARCHIVE_ITEMS
        ],
    }
    .to_frame(1);
    assert!(largest.len() <= queue::MAX_QUEUE_FRAME_LEN);
    assert!(QueueFrame::from_frame(&largest).is_ok());
}

#[test]
fn archive_policy_and_envelope() {
    let w = world();
    let policy = ArchivePolicy::issue(&w.org_key, 1, nine(), 2190).unwrap();
    let bytes = policy.to_bytes();
    assert_eq!(bytes.len(), ARCHIVE_POLICY_LEN);
    let decoded = ArchivePolicy::from_bytes(&bytes).unwrap();
    assert!(decoded.verify(&w.org));
    assert_eq!(decoded.retention_days(), 2190);
    let other = OrgKey::new(SigningKey::from_bytes(&[0x50; 32]).verifying_key()).unwrap();
    assert!(!decoded.verify(&other));
    let mut altered = bytes.clone();
    altered[2 + 32 + 8 + 32 + 1] ^= 1; // retention days
    assert!(!ArchivePolicy::from_bytes(&altered).unwrap().verify(&w.org));
    let mut zero = bytes.clone();
    zero[2 + 32 + 8 + 32..2 + 32 + 8 + 32 + 2].copy_from_slice(&[0, 0]);
    assert_eq!(
        ArchivePolicy::from_bytes(&zero),
        Err(DecodeError::InvalidValue {
            field: "retention days"
        })
    );
    let mut weak = bytes.clone();
    weak[2 + 32 + 8..2 + 32 + 8 + 32].copy_from_slice(&[0; 32]);
    assert_eq!(
        ArchivePolicy::from_bytes(&weak),
        Err(DecodeError::InvalidValue {
            field: "archive key"
        })
    );
    assert!(ArchivePolicy::issue(&w.org_key, 1, nine(), 0).is_err());

    let envelope = archive_envelope();
    let bytes = envelope.to_bytes();
    assert_eq!(ArchiveEnvelope::from_bytes(&bytes).unwrap(), envelope);
    assert_eq!(
        &bytes[..ARCHIVE_ENVELOPE_HEADER_LEN],
        &envelope.associated_data()
    );
    let short = ArchiveEnvelope {
        ciphertext: vec![0; 15],
        ..envelope.clone()
    };
    assert_eq!(
        ArchiveEnvelope::from_bytes(&short.to_bytes()),
        Err(DecodeError::InvalidValue {
            field: "archive ciphertext"
        })
    );
    let mut huge = bytes[..ARCHIVE_ENVELOPE_HEADER_LEN].to_vec();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        ArchiveEnvelope::from_bytes(&huge),
        Err(DecodeError::TooLong {
            max: MAX_ARCHIVE_CIPHERTEXT_LEN,
            ..
        })
    ));
}

fn archive_envelope() -> ArchiveEnvelope {
    ArchiveEnvelope {
        conversation: CONV,
        policy_sequence: 1,
        ephemeral: nine(),
        ciphertext: vec![0xaa; 16 + 256],
    }
}

#[test]
fn the_largest_change_is_max_change_len() {
    let w = world();
    let long = "A".repeat(crate::clinic::MAX_NAME_LEN);
    let adder = staff(&w.org_key, 8, 8, &long, &[Role::Agent]);
    let added = staff(&w.org_key, 9, 9, &long, &[Role::Agent]);
    let (log, _) = claimed(&w);
    let c = change(
        &log,
        &adder,
        1,
        Add,
        Agent,
        &added,
        &(1..=16).collect::<Vec<_>>(),
    );
    assert_eq!(c.to_bytes().len(), MAX_CHANGE_LEN);
}

/// The queue's type bytes are exactly the ones `is_queue_type` names, and the relay's frame
/// decoder hands each of them, and only them, to `QueueFrame` (`FrameBody::Queue`).
#[test]
fn queue_types_do_not_collide_with_relay_frames() {
    use crate::relay::{Frame, FrameBody};
    let mut queue_types = 0;
    for t in 0..=255u8 {
        let mut r = crate::codec::Reader::new(&[]);
        let unknown = matches!(
            QueueFrame::read_body(t, &mut r),
            Err(DecodeError::UnknownType { .. })
        );
        assert_eq!(!unknown, QueueFrame::is_queue_type(t), "type {t:#04x}");
        let as_relay_frame = Frame::from_bytes(&[1, t, 0, 0, 0, 0]);
        if QueueFrame::is_queue_type(t) {
            queue_types += 1;
            match as_relay_frame {
                Ok(frame) => assert!(
                    matches!(frame.body, FrameBody::Queue(ref q) if q.type_byte() == t),
                    "type {t:#04x} decoded as {:?}",
                    frame.body
                ),
                Err(e) => assert!(
                    !matches!(e, DecodeError::UnknownType { .. }),
                    "type {t:#04x}: {e}"
                ),
            }
        } else if let Ok(frame) = as_relay_frame {
            assert!(
                !matches!(frame.body, FrameBody::Queue(_)),
                "type {t:#04x} is not a queue type"
            );
        }
    }
    assert_eq!(queue_types, 13 + 9);
}

#[test]
fn a_certificate_not_yet_valid_cannot_claim() {
    let w = world();
    let mut early = person(10);
    early.certificate = Some(
        AgentCertificate::issue(
            &w.org_key,
            20,
            early.identity.clone(),
            "Early",
            Roles::of(&[Role::Agent]).unwrap(),
            T0 + 1_000,
            NOT_AFTER,
        )
        .unwrap(),
    );
    let mut log = MembershipLog::new(CONV, w.org);
    log.apply(
        &change(&log, &w.patient, 1, Add, Patient, &w.patient, &[1]),
        &w.ctx(),
    )
    .unwrap();
    let c = change(&log, &early, 1, Add, Agent, &early, &[1]);
    assert_eq!(
        refused(&mut log, &c, &w.ctx()),
        MembershipError::SignerCertificate(CertificateError::NotYetValid {
            not_before: T0 + 1_000
        })
    );
}

mod scripts {
    //! Random scripts of attempted changes by everyone in a small cast: whatever is accepted
    //! replays to the same state from its bytes, the state stays within its invariants, and a
    //! device is a member exactly when its last accepted change added it.

    use proptest::prelude::*;

    use super::*;

    /// One attempt: who signs (index into the cast) with which device, add or remove, a role
    /// (0: the member's natural role, else that role byte), whom, which devices. Biased towards
    /// device 1 and natural roles so that a fair share of attempts is accepted.
    type Attempt = (usize, u32, bool, u8, usize, Vec<u32>);

    fn attempt() -> impl Strategy<Value = Attempt> {
        (
            0usize..6,
            prop_oneof![3 => Just(1u32), 1 => Just(2u32)],
            any::<bool>(),
            prop_oneof![3 => Just(0u8), 1 => 1u8..4],
            0usize..6,
            proptest::collection::vec(prop_oneof![3 => Just(1u32), 1 => 2u32..4], 1..3),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn accepted_histories_replay_and_keep_their_invariants(script in proptest::collection::vec(attempt(), 1..40)) {
            let w = world();
            let cast = [&w.patient, &w.ada, &w.ben, &w.sue, &w.stranger, &w.ada];
            // From a claimed conversation: the patient's device 1 and Ada's device 1.
            let (mut log, mut accepted) = claimed(&w);
            // What the last accepted change said about each (identity, device).
            let mut last: Vec<(crate::keys::Fingerprint, u32, bool)> = vec![
                (w.patient.identity.fingerprint(), 1, true),
                (w.ada.identity.fingerprint(), 1, true),
            ];
            for (signer, device, add, role, member, devices) in script {
                let natural = [Patient, Agent, Agent, Supervisor, Patient, Agent][member];
                let role = if role == 0 { natural } else { MemberRole::from_u8(role).unwrap() };
                let action = if add { Add } else { Remove };
                // A staff add for someone without a certificate does not even encode.
                if action == Add && role.is_staff() && cast[member].certificate.is_none() {
                    continue;
                }
                let c = change(&log, cast[signer], device, action, role, cast[member], &devices);
                let before = (log.next_epoch(), log.head());
                match log.apply(&c, &w.ctx()) {
                    Ok(()) => {
                        let fp = cast[member].identity.fingerprint();
                        for d in c.devices() {
                            last.retain(|(f, x, _)| !(*f == fp && x == d));
                            last.push((fp, *d, add));
                        }
                        accepted.push(c);
                    }
                    Err(_) => prop_assert_eq!((log.next_epoch(), log.head()), before),
                }
            }
            prop_assert!(log.device_count() <= MAX_CONVERSATION_DEVICES);
            prop_assert_eq!(log.next_epoch(), accepted.len() as u64);
            for (fp, d, added) in &last {
                prop_assert_eq!(log.is_member(fp, *d), *added);
            }
            let replayed = MembershipLog::verify_all(CONV, w.org, &accepted, &w.ctx()).unwrap();
            prop_assert_eq!(replayed.head(), log.head());
            prop_assert_eq!(replayed.members(), log.members());
            // Only the patient's identity holds the patient role; only certified staff the others.
            for m in log.members() {
                let is_patient = m.identity() == &w.patient.identity;
                prop_assert_eq!(m.role() == Patient, is_patient);
                if m.role() == Supervisor {
                    prop_assert!(m.identity() == &w.sue.identity);
                }
            }
        }
    }
}

/// `ctx` with `list` as the verifier's revocation list.
fn with_list<'a>(w: &'a World, list: &'a RevocationList) -> MembershipContext<'a> {
    MembershipContext {
        revocations: Some(list),
        ..w.ctx()
    }
}

#[test]
fn a_claim_takes_over_when_every_agent_on_it_is_revoked() {
    let w = world();
    let (mut log, mut changes) = claimed(&w);
    assert_eq!(log.members()[1].certificate_serial(), Some(1));
    assert_eq!(log.members()[0].certificate_serial(), None);
    // Without a list naming Ada, Ben cannot claim.
    let claim = change(&log, &w.ben, 1, Add, Agent, &w.ben, &[1]);
    assert_eq!(
        refused(&mut log, &claim, &w.ctx()),
        MembershipError::ClaimWhileClaimed
    );
    // The clinic revokes Ada's certificate (serial 1) after her claim (issued at T0 + 1): the
    // conversation is claimable again.
    let revoked = RevocationList::issue(&w.org_key, 1, T0 + 2, &[1]).unwrap();
    assert!(!log.agents_all_revoked(None));
    assert!(log.agents_all_revoked(Some(&revoked)));
    assert!(log.is_claimable(Some(&revoked)));
    log.apply(&claim, &with_list(&w, &revoked)).unwrap();
    changes.push(claim);
    // Ada's device is gone with the takeover: Ben and the patient remain, nobody else.
    let members: Vec<_> = log
        .members()
        .iter()
        .map(|m| (m.role(), m.devices().to_vec()))
        .collect();
    assert_eq!(members, vec![(Patient, vec![1]), (Agent, vec![1])]);
    assert!(!log.is_member(&w.ada.identity.fingerprint(), 1));
    assert!(log.is_member(&w.ben.identity.fingerprint(), 1));
    assert_eq!(log.device_count(), 2);
    assert!(!log.agents_all_revoked(Some(&revoked)));
    // Ada's device counts as removed: even without the list (a backdated change), it is out.
    let c = change(&log, &w.ada, 1, Remove, Agent, &w.ben, &[1]);
    assert_eq!(
        refused(&mut log, &c, &w.ctx()),
        MembershipError::SignerRemoved { device_id: 1 }
    );
    // The history verifies with the list, and with a later list still naming Ada (a verifier
    // holds only the newest; lists grow): its issue date does not undo the takeover.
    assert!(MembershipLog::verify_all(CONV, w.org, &changes, &with_list(&w, &revoked)).is_ok());
    let later = RevocationList::issue(&w.org_key, 2, T0 + 5_000, &[1, 9]).unwrap();
    let again = MembershipLog::verify_all(CONV, w.org, &changes, &with_list(&w, &later)).unwrap();
    assert_eq!(again.members(), log.members());
    // A verifier without the list refuses the takeover (it must fetch the clinic's list).
    assert_eq!(
        MembershipLog::verify_all(CONV, w.org, &changes, &w.ctx()).unwrap_err(),
        (2, MembershipError::ClaimWhileClaimed)
    );
}

#[test]
fn a_takeover_needs_every_agent_revoked() {
    let w = world();
    let cat = staff(&w.org_key, 6, 4, "Cat", &[Role::Agent]);
    let (mut log, _) = claimed(&w);
    // Ada adds Ben: two agents on it; Sue joins read-only.
    let c = change(&log, &w.ada, 1, Add, Agent, &w.ben, &[1]);
    log.apply(&c, &w.ctx()).unwrap();
    let c = change(&log, &w.sue, 1, Add, Supervisor, &w.sue, &[1]);
    log.apply(&c, &w.ctx()).unwrap();
    // Only Ada is revoked (and Sue, whose presence is no claim): Ben still answers.
    let ada_only = RevocationList::issue(&w.org_key, 1, T0, &[1, 3]).unwrap();
    let claim = change(&log, &cat, 1, Add, Agent, &cat, &[1]);
    assert!(!log.agents_all_revoked(Some(&ada_only)));
    assert_eq!(
        refused(&mut log, &claim, &with_list(&w, &ada_only)),
        MembershipError::ClaimWhileClaimed
    );
    // Both agents revoked: Cat takes over, both leave; Sue (a supervisor) stays.
    let both = RevocationList::issue(&w.org_key, 2, T0, &[1, 2]).unwrap();
    log.apply(&claim, &with_list(&w, &both)).unwrap();
    let roles: Vec<_> = log.members().iter().map(|m| m.role()).collect();
    assert_eq!(roles, vec![Patient, Supervisor, Agent]);
    assert!(log.is_member(&cat.identity.fingerprint(), 1));
    assert!(!log.is_member(&w.ben.identity.fingerprint(), 1));
    // A list of another clinic names nobody: no takeover.
    let (log2, _) = claimed(&w);
    let foreign = RevocationList::issue(&SigningKey::from_bytes(&[0x50; 32]), 1, T0, &[1]).unwrap();
    assert!(!log2.agents_all_revoked(Some(&foreign)));
    assert!(!log2.is_claimable(Some(&foreign)));
}

#[test]
fn a_takeover_checks_the_certificate_an_agent_was_last_added_with() {
    let w = world();
    let (mut log, _) = claimed(&w);
    // Ada adds her device 2 under a renewed certificate (serial 7).
    let renewed = Person {
        key: w.ada.key.clone(),
        identity: w.ada.identity.clone(),
        certificate: Some(
            AgentCertificate::issue(
                &w.org_key,
                7,
                w.ada.identity.clone(),
                "Ada",
                Roles::of(&[Role::Agent]).unwrap(),
                NOT_BEFORE,
                NOT_AFTER,
            )
            .unwrap(),
        ),
    };
    let c = change(&log, &w.ada, 1, Add, Agent, &renewed, &[2]);
    log.apply(&c, &w.ctx()).unwrap();
    assert_eq!(log.members()[1].certificate_serial(), Some(7));
    // Revoking the old certificate (serial 1) does not free the conversation: Ada holds 7.
    let old = RevocationList::issue(&w.org_key, 1, T0, &[1]).unwrap();
    let claim = change(&log, &w.ben, 1, Add, Agent, &w.ben, &[1]);
    assert_eq!(
        refused(&mut log, &claim, &with_list(&w, &old)),
        MembershipError::ClaimWhileClaimed
    );
    // Revoking 7 does: both of Ada's devices leave with the takeover.
    let new = RevocationList::issue(&w.org_key, 2, T0, &[7]).unwrap();
    log.apply(&claim, &with_list(&w, &new)).unwrap();
    assert!(!log.is_member(&w.ada.identity.fingerprint(), 1));
    assert!(!log.is_member(&w.ada.identity.fingerprint(), 2));
    assert_eq!(log.device_count(), 2);
}

#[test]
fn a_refused_takeover_changes_nothing() {
    let w = world();
    // Replaying (no device list): the patient holds 17 devices, Ada one.
    let ctx = MembershipContext {
        patient_devices: None,
        ..w.ctx()
    };
    let mut log = MembershipLog::new(CONV, w.org);
    let sixteen: Vec<u32> = (1..=16).collect();
    let c = change(&log, &w.patient, 1, Add, Patient, &w.patient, &sixteen);
    log.apply(&c, &ctx).unwrap();
    let c = change(&log, &w.patient, 1, Add, Patient, &w.patient, &[17]);
    log.apply(&c, &ctx).unwrap();
    let c = change(&log, &w.ada, 1, Add, Agent, &w.ada, &[1]);
    log.apply(&c, &ctx).unwrap();
    // Ben's takeover with 16 devices passes rule 9 but would make 33 devices (rule 15): it is
    // refused and Ada is still on the conversation, her device not counted as removed.
    let revoked = RevocationList::issue(&w.org_key, 1, T0, &[1]).unwrap();
    let ctx_revoked = MembershipContext {
        revocations: Some(&revoked),
        ..ctx
    };
    let claim = change(&log, &w.ben, 1, Add, Agent, &w.ben, &sixteen);
    assert_eq!(
        refused(&mut log, &claim, &ctx_revoked),
        MembershipError::TooManyDevices { count: 33 }
    );
    assert!(log.is_member(&w.ada.identity.fingerprint(), 1));
    assert!(log.agents_all_revoked(Some(&revoked)));
    // Ada (without the list: she signs backdated) is not treated as removed.
    let c = change(&log, &w.ada, 1, Add, Supervisor, &w.sue, &[1]);
    log.apply(&c, &ctx).unwrap();
}
