//! Hostile input against clinic conversations and the queue (`docs/conversations.md` §5.4,
//! `docs/relay-protocol.md` §3.6), from attackers with a registered device: staff frames from a
//! patient or a stranger, replayed and foreign-signed changes, floods of `OpenConversation`,
//! extreme `FetchMembership` epochs and malformed queue frames. Every refusal stores nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod conversation_support;

use common::{Device, Engine, next_frame};
use conversation_support::*;
use ed25519_dalek::SigningKey;
use hushwire_proto::audit::ConversationId;
use hushwire_proto::clinic::Role;
use hushwire_proto::codec::Codec;
use hushwire_proto::conversation::queue::{NoteEnvelope, QueueFrame};
use hushwire_proto::conversation::{ChangeAction, MemberRole, MembershipChange};
use hushwire_proto::relay::{ErrorCode, FrameBody};

async fn open(p: &mut Peer, clinic: &Clinic, patient: &Device, n: u8) -> (History, FrameBody) {
    let mut h = History::new(clinic, n);
    let change = h.change(
        ChangeAction::Add,
        MemberRole::Patient,
        patient,
        None,
        patient,
        None,
    );
    let answer = p
        .call(q(QueueFrame::OpenConversation(Box::new(change.clone()))))
        .await;
    if answer == FrameBody::Ok {
        h.accept(&change);
    }
    (h, answer)
}

async fn unknown(p: &mut Peer, conversation: ConversationId) -> bool {
    p.call(q(QueueFrame::FetchMembership {
        conversation,
        from_epoch: 0,
    }))
    .await
        == error(ErrorCode::UnknownConversation)
}

#[tokio::test]
async fn staff_frames_from_a_patient_or_a_stranger_are_forbidden_and_store_nothing() {
    for engine in Engine::all().await {
        let clinic = Clinic::new();
        let relays = clinic.start(&engine, "attacks-staff");
        let url = relays[0].url();
        let (patient, stranger) = (Device::new(41, 1), Device::new(42, 1));
        let mut p = Peer::register(&url, &patient, None).await;
        publish_list(&mut p, &patient, &[1]).await;
        let mut x = Peer::register(&url, &stranger, None).await;
        let (h, answer) = open(&mut p, &clinic, &patient, 41).await;
        assert_eq!(answer, FrameBody::Ok, "{engine:?}");
        let conv = h.conversation;
        for (peer, who) in [(&mut p, &patient), (&mut x, &stranger)] {
            // A self-claim with an agent certificate from another organisation's key.
            let rogue = Clinic {
                org: SigningKey::from_bytes(&[0xee; 32]),
                link: clinic.link.clone(),
            };
            let cert = rogue.certify(99, who, &[Role::Agent]);
            let claim = h.change(
                ChangeAction::Add,
                MemberRole::Agent,
                who,
                Some(&cert),
                who,
                Some(&cert),
            );
            for frame in [
                QueueFrame::Claim(Box::new(claim)),
                QueueFrame::FetchQueue,
                QueueFrame::SetOnDuty(true),
                QueueFrame::FetchOnDuty,
                QueueFrame::FetchArchive {
                    conversation: conv,
                    from_index: 0,
                },
            ] {
                assert_eq!(
                    peer.call(q(frame.clone())).await,
                    error(ErrorCode::Forbidden),
                    "{engine:?} {frame:?}"
                );
            }
        }
        // Nothing was stored: still one change, and the stranger is not on it.
        assert_eq!(membership_len(&mut p, conv).await, 1, "{engine:?}");
        assert_eq!(
            x.call(q(QueueFrame::FetchMembership {
                conversation: conv,
                from_epoch: 0,
            }))
            .await,
            error(ErrorCode::NotOnConversation),
            "{engine:?}"
        );
        // The stranger may not file archive envelopes either.
        assert_eq!(
            x.call(q(QueueFrame::PutArchive(Box::new(archive_envelope(conv)))))
                .await,
            error(ErrorCode::NotOnConversation),
            "{engine:?}"
        );
    }
}

#[tokio::test]
async fn replayed_foreign_signed_and_foreign_conversation_changes_are_refused() {
    for engine in Engine::all().await {
        let clinic = Clinic::new();
        let relays = clinic.start(&engine, "attacks-replay");
        let url = relays[0].url();
        let (patient, patient2, victim, ada) = (
            Device::new(43, 1),
            Device::new(43, 2),
            Device::new(44, 1),
            Device::new(45, 1),
        );
        let ada_cert = clinic.certify(7, &ada, &[Role::Agent]);
        let mut p = Peer::register(&url, &patient, None).await;
        publish_list(&mut p, &patient, &[1, 2]).await;
        let mut v = Peer::register(&url, &victim, None).await;
        publish_list(&mut v, &victim, &[1]).await;
        let mut a = Peer::register(&url, &ada, Some(&ada_cert)).await;

        // Opening a conversation with another person's devices (signed by the victim, sent by
        // the attacker; and signed by the attacker, adding the victim).
        let h = History::new(&clinic, 43);
        let victims = h.change(
            ChangeAction::Add,
            MemberRole::Patient,
            &victim,
            None,
            &victim,
            None,
        );
        assert_eq!(
            p.call(q(QueueFrame::OpenConversation(Box::new(victims))))
                .await,
            error(ErrorCode::MembershipRefused),
            "{engine:?}"
        );
        let adds_victim = h.change(
            ChangeAction::Add,
            MemberRole::Patient,
            &victim,
            None,
            &patient,
            None,
        );
        assert_eq!(
            p.call(q(QueueFrame::OpenConversation(Box::new(adds_victim))))
                .await,
            error(ErrorCode::MembershipRefused),
            "{engine:?}"
        );
        assert!(unknown(&mut v, h.conversation).await, "{engine:?}");

        // A change signed by the patient's other device, sent by this one.
        let by_other_device = h.change(
            ChangeAction::Add,
            MemberRole::Patient,
            &patient,
            None,
            &patient2,
            None,
        );
        assert_eq!(
            p.call(q(QueueFrame::OpenConversation(Box::new(by_other_device))))
                .await,
            error(ErrorCode::MembershipRefused),
            "{engine:?}"
        );
        assert!(unknown(&mut p, h.conversation).await, "{engine:?}");

        // A genuine open, then its replay (same id) by the patient and by the victim.
        let (h1, answer) = open(&mut p, &clinic, &patient, 46).await;
        assert_eq!(answer, FrameBody::Ok, "{engine:?}");
        let first = match p
            .call(q(QueueFrame::FetchMembership {
                conversation: h1.conversation,
                from_epoch: 0,
            }))
            .await
        {
            FrameBody::Queue(m) => match *m {
                QueueFrame::Membership(mut c) => c.remove(0),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        for peer in [&mut p, &mut v] {
            assert_eq!(
                peer.call(q(QueueFrame::OpenConversation(Box::new(first.clone()))))
                    .await,
                error(ErrorCode::ConversationExists),
                "{engine:?}"
            );
        }
        // The old epoch-0 change replayed as an ordinary change: stale.
        assert_eq!(
            p.call(q(QueueFrame::PublishChange(Box::new(first.clone()))))
                .await,
            error(ErrorCode::StaleEpoch),
            "{engine:?}"
        );

        // A claim on conversation A whose change names conversation B (not open): unknown; a
        // claim that adds someone else: refused.
        let (h2, answer) = open(&mut p, &clinic, &patient, 47).await;
        assert_eq!(answer, FrameBody::Ok, "{engine:?}");
        let h_unknown = History::new(&clinic, 48);
        let claim_b = h_unknown.change_at(
            h2.epoch,
            h2.head,
            ChangeAction::Add,
            MemberRole::Agent,
            &ada,
            Some(&ada_cert),
            &ada,
            Some(&ada_cert),
        );
        assert_eq!(
            a.call(q(QueueFrame::Claim(Box::new(claim_b)))).await,
            error(ErrorCode::UnknownConversation),
            "{engine:?}"
        );
        // h1's head with h2's epoch, sent for h2's conversation id: the hash chain refuses it.
        let cross = h2.change_at(
            h2.epoch,
            h1.head,
            ChangeAction::Add,
            MemberRole::Agent,
            &ada,
            Some(&ada_cert),
            &ada,
            Some(&ada_cert),
        );
        assert_eq!(
            a.call(q(QueueFrame::Claim(Box::new(cross)))).await,
            error(ErrorCode::MembershipRefused),
            "{engine:?}"
        );
        assert_eq!(
            membership_len(&mut p, h2.conversation).await,
            1,
            "{engine:?}"
        );
        assert_eq!(
            membership_len(&mut p, h1.conversation).await,
            1,
            "{engine:?}"
        );
    }
}

/// Without a bound, one registered patient device could fill the queue, the histories and
/// every on-duty agent's pushes: at most 8 conversations waiting per identity; a claimed one
/// frees a place.
#[tokio::test]
async fn opening_floods_are_bounded_per_identity() {
    for engine in Engine::all().await {
        let clinic = Clinic::new();
        let relays = clinic.start(&engine, "attacks-flood");
        let url = relays[0].url();
        let (patient, other) = (Device::new(49, 1), Device::new(50, 1));
        let mut p = Peer::register(&url, &patient, None).await;
        publish_list(&mut p, &patient, &[1]).await;
        let mut o = Peer::register(&url, &other, None).await;
        publish_list(&mut o, &other, &[1]).await;
        let mut waiting = Vec::new();
        for n in 0..8u8 {
            let (h, answer) = open(&mut p, &clinic, &patient, n).await;
            assert_eq!(answer, FrameBody::Ok, "{engine:?} open {n}");
            waiting.push(h);
        }
        for n in 8..40u8 {
            let (h, answer) = open(&mut p, &clinic, &patient, n).await;
            assert_eq!(
                answer,
                FrameBody::Error {
                    code: ErrorCode::RateLimited,
                    retry_after_ms: 60_000
                },
                "{engine:?} open {n}"
            );
            assert!(unknown(&mut p, h.conversation).await, "{engine:?}");
        }
        // A claim frees one place, and only one.
        let ada = Device::new(55, 1);
        let ada_cert = clinic.certify(55, &ada, &[Role::Agent]);
        let mut a = Peer::register(&url, &ada, Some(&ada_cert)).await;
        let claim = waiting[0].change(
            ChangeAction::Add,
            MemberRole::Agent,
            &ada,
            Some(&ada_cert),
            &ada,
            Some(&ada_cert),
        );
        assert!(
            matches!(
                a.call(q(QueueFrame::Claim(Box::new(claim)))).await,
                FrameBody::Queue(f) if matches!(*f, QueueFrame::Claimed { .. })
            ),
            "{engine:?}"
        );
        let (_, answer) = open(&mut p, &clinic, &patient, 200).await;
        assert_eq!(answer, FrameBody::Ok, "{engine:?}");
        let (_, answer) = open(&mut p, &clinic, &patient, 201).await;
        assert_eq!(
            answer,
            FrameBody::Error {
                code: ErrorCode::RateLimited,
                retry_after_ms: 60_000
            },
            "{engine:?}"
        );
        // Another patient is not affected.
        let (_, answer) = open(&mut o, &clinic, &other, 60).await;
        assert_eq!(answer, FrameBody::Ok, "{engine:?}");
    }
}

#[tokio::test]
async fn fetch_membership_at_extreme_epochs_answers_nothing_more() {
    for engine in Engine::all().await {
        let clinic = Clinic::new();
        let relays = clinic.start(&engine, "attacks-epochs");
        let url = relays[0].url();
        let patient = Device::new(51, 1);
        let mut p = Peer::register(&url, &patient, None).await;
        publish_list(&mut p, &patient, &[1]).await;
        let (h, answer) = open(&mut p, &clinic, &patient, 51).await;
        assert_eq!(answer, FrameBody::Ok, "{engine:?}");
        for from_epoch in [1, u64::from(u32::MAX), i64::MAX as u64, u64::MAX] {
            assert_eq!(
                p.call(q(QueueFrame::FetchMembership {
                    conversation: h.conversation,
                    from_epoch,
                }))
                .await,
                q(QueueFrame::Membership(Vec::new())),
                "{engine:?} {from_epoch}"
            );
        }
        // ConversationSend at an epoch far in the future or the past: stale, not sent.
        for epoch in [0, 2, u64::MAX] {
            assert_eq!(
                p.call(q(QueueFrame::ConversationSend {
                    conversation: h.conversation,
                    epoch,
                    envelopes: vec![envelope(&patient, b"x")],
                }))
                .await,
                error(ErrorCode::StaleEpoch),
                "{engine:?} {epoch}"
            );
        }
    }
}

#[tokio::test]
async fn malformed_queue_frames_close_only_the_offender() {
    let clinic = Clinic::new();
    let relays = clinic.start(&Engine::Sqlite, "attacks-malformed");
    let url = relays[0].url();
    let (patient, bystander) = (Device::new(52, 1), Device::new(53, 1));
    let mut b = Peer::register(&url, &bystander, None).await;
    publish_list(&mut b, &bystander, &[1]).await;
    let h = History::new(&clinic, 52);
    let change = h.change(
        ChangeAction::Add,
        MemberRole::Patient,
        &patient,
        None,
        &patient,
        None,
    );
    let valid = hushwire_proto::relay::Frame {
        request_id: 9,
        body: q(QueueFrame::OpenConversation(Box::new(change))),
    }
    .to_bytes();
    let mut trailing = valid.clone();
    trailing.extend_from_slice(&[0; 7]);
    let cases = [
        valid[..valid.len() / 2].to_vec(),
        valid[..valid.len() - 1].to_vec(),
        trailing,
    ];
    for bytes in cases {
        let mut p = Peer::register(&url, &patient, None).await;
        p.c.send_raw(bytes).await;
        // The offender gets an error then a close, or just a close; never an `Ok`.
        while let Some(frame) = next_frame(&mut p.c.socket).await {
            assert!(
                matches!(
                    frame.body,
                    FrameBody::Error { .. } | FrameBody::PreKeyCount { .. }
                ),
                "{frame:?}"
            );
        }
        // The relay is alive, the bystander unaffected, nothing was opened.
        assert!(unknown(&mut b, h.conversation).await);
    }
}

/// 8 agents race to claim each of 20 conversations on one SQLite relay: each conversation is
/// won exactly once and its history holds exactly the open and the winning claim.
#[tokio::test]
async fn racing_claimants_on_sqlite_win_each_conversation_exactly_once() {
    let clinic = Clinic::new();
    let relays = clinic.start(&Engine::Sqlite, "attacks-race");
    let url = relays[0].url();
    let mut histories = Vec::new();
    // One identity keeps at most 8 conversations waiting: 4 patients open 5 each.
    let patients: Vec<Device> = (0..4).map(|i| Device::new(60 + i, 1)).collect();
    for (i, pat) in patients.iter().enumerate() {
        let mut pp = Peer::register(&url, pat, None).await;
        publish_list(&mut pp, pat, &[1]).await;
        for n in 0..5u8 {
            let (h, answer) = open(&mut pp, &clinic, pat, n + 10 * i as u8).await;
            assert_eq!(answer, FrameBody::Ok);
            histories.push(h);
        }
    }
    let mut tasks = Vec::new();
    for a in 0..8u8 {
        let url = url.clone();
        let agent = Device::new(80 + a, 1);
        let cert = clinic.certify(100 + u64::from(a), &agent, &[Role::Agent]);
        let claims: Vec<(ConversationId, FrameBody)> = histories
            .iter()
            .map(|h| {
                let c = h.change(
                    ChangeAction::Add,
                    MemberRole::Agent,
                    &agent,
                    Some(&cert),
                    &agent,
                    Some(&cert),
                );
                (h.conversation, q(QueueFrame::Claim(Box::new(c))))
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut peer = Peer::register(&url, &agent, Some(&cert)).await;
            let mut won = Vec::new();
            for (conversation, claim) in claims {
                match peer.call(claim).await {
                    FrameBody::Queue(f) => match *f {
                        QueueFrame::Claimed { .. } => won.push(conversation),
                        QueueFrame::AlreadyClaimed { epoch, .. } => assert_eq!(epoch, 2),
                        other => panic!("{other:?}"),
                    },
                    other => panic!("{other:?}"),
                }
            }
            won
        }));
    }
    let mut wins: Vec<ConversationId> = Vec::new();
    for t in tasks {
        wins.extend(t.await.unwrap());
    }
    assert_eq!(wins.len(), histories.len(), "one win per conversation");
    for h in &histories {
        assert_eq!(wins.iter().filter(|w| **w == h.conversation).count(), 1);
    }
    for (i, pat) in patients.iter().enumerate() {
        let mut pp = Peer::register(&url, pat, None).await;
        for h in &histories[i * 5..i * 5 + 5] {
            assert_eq!(membership_len(&mut pp, h.conversation).await, 2);
        }
    }
}

/// Hand-offs with an invalid second change or notes to non-staff store nothing; sends to
/// non-members, archive envelopes for unknown conversations, archive reads by agents and a
/// removed agent's sends are refused.
#[tokio::test]
async fn hand_offs_sends_and_archive_from_hostile_members() {
    for engine in Engine::all().await {
        let clinic = Clinic::new();
        let relays = clinic.start(&engine, "attacks-handoff");
        let url = relays[0].url();
        let (patient, ada, ben, stranger) = (
            Device::new(70, 1),
            Device::new(71, 1),
            Device::new(72, 1),
            Device::new(73, 1),
        );
        let ada_cert = clinic.certify(71, &ada, &[Role::Agent]);
        let ben_cert = clinic.certify(72, &ben, &[Role::Agent]);
        let mut p = Peer::register(&url, &patient, None).await;
        publish_list(&mut p, &patient, &[1]).await;
        let mut a = Peer::register(&url, &ada, Some(&ada_cert)).await;
        let mut x = Peer::register(&url, &stranger, None).await;
        publish_list(&mut x, &stranger, &[1]).await;
        let (mut h, answer) = open(&mut p, &clinic, &patient, 70).await;
        assert_eq!(answer, FrameBody::Ok, "{engine:?}");
        let conv = h.conversation;
        let claim = h.change(
            ChangeAction::Add,
            MemberRole::Agent,
            &ada,
            Some(&ada_cert),
            &ada,
            Some(&ada_cert),
        );
        assert!(matches!(
            a.call(q(QueueFrame::Claim(Box::new(claim.clone())))).await,
            FrameBody::Queue(f) if matches!(*f, QueueFrame::Claimed { .. })
        ));
        h.accept(&claim);

        // A hand-off whose second change is invalid (a forged signature): nothing stored.
        let add_ben = h.change(
            ChangeAction::Add,
            MemberRole::Agent,
            &ben,
            Some(&ben_cert),
            &ada,
            Some(&ada_cert),
        );
        let mut next = History {
            conversation: conv,
            head: h.head,
            epoch: h.epoch,
        };
        next.accept(&add_ben);
        let remove_ada = next.change(
            ChangeAction::Remove,
            MemberRole::Agent,
            &ada,
            None,
            &ada,
            Some(&ada_cert),
        );
        let mut forged = remove_ada.to_bytes();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let forged = MembershipChange::from_bytes(&forged).unwrap();
        assert_eq!(
            a.call(q(QueueFrame::HandOff {
                changes: vec![add_ben.clone(), forged],
                notes: Vec::new(),
            }))
            .await,
            error(ErrorCode::MembershipRefused),
            "{engine:?}"
        );
        assert_eq!(membership_len(&mut p, conv).await, 2, "{engine:?}");
        // Notes to the patient, to a stranger or to an unregistered address: refused, nothing
        // stored, nothing delivered.
        let unregistered = Device::new(74, 9);
        for to in [&patient, &stranger, &unregistered] {
            assert_eq!(
                a.call(q(QueueFrame::HandOff {
                    changes: vec![add_ben.clone(), remove_ada.clone()],
                    notes: vec![NoteEnvelope {
                        recipient: to.address(),
                        payload: b"note".to_vec(),
                    }],
                }))
                .await,
                error(ErrorCode::NotOnConversation),
                "{engine:?}"
            );
            assert_eq!(membership_len(&mut p, conv).await, 2, "{engine:?}");
        }

        // Sends to a non-member are refused.
        assert_eq!(
            a.call(q(QueueFrame::ConversationSend {
                conversation: conv,
                epoch: h.epoch,
                envelopes: vec![envelope(&patient, b"hi"), envelope(&stranger, b"hi")],
            }))
            .await,
            error(ErrorCode::NotOnConversation),
            "{engine:?}"
        );
        // The stranger cannot send into the conversation either.
        assert_eq!(
            x.call(q(QueueFrame::ConversationSend {
                conversation: conv,
                epoch: h.epoch,
                envelopes: vec![envelope(&patient, b"hi")],
            }))
            .await,
            error(ErrorCode::NotOnConversation),
            "{engine:?}"
        );
        // Archive: an unknown conversation; an agent reading it.
        assert_eq!(
            a.call(q(QueueFrame::PutArchive(Box::new(archive_envelope(
                History::new(&clinic, 75).conversation
            )))))
            .await,
            error(ErrorCode::UnknownConversation),
            "{engine:?}"
        );
        assert_eq!(
            a.call(q(QueueFrame::FetchArchive {
                conversation: conv,
                from_index: 0,
            }))
            .await,
            error(ErrorCode::Forbidden),
            "{engine:?}"
        );

        // Ada leaves (hand back); her later sends at the new head are refused.
        let leave = h.change(
            ChangeAction::Remove,
            MemberRole::Agent,
            &ada,
            None,
            &ada,
            Some(&ada_cert),
        );
        assert_eq!(
            a.call(q(QueueFrame::PublishChange(Box::new(leave.clone()))))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        h.accept(&leave);
        assert_eq!(
            a.call(q(QueueFrame::ConversationSend {
                conversation: conv,
                epoch: h.epoch,
                envelopes: vec![envelope(&patient, b"still here")],
            }))
            .await,
            error(ErrorCode::NotOnConversation),
            "{engine:?}"
        );
        // She may still file the archive copies of what she wrote while on it (§7.3); the
        // stranger, never a member, may not.
        assert_eq!(
            a.call(q(QueueFrame::PutArchive(Box::new(archive_envelope(conv)))))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        assert_eq!(
            x.call(q(QueueFrame::PutArchive(Box::new(archive_envelope(conv)))))
                .await,
            error(ErrorCode::NotOnConversation),
            "{engine:?}"
        );
    }
}

/// The archive has no quota and a patient is a writer: without a rate, one device could file
/// 64 KiB envelopes as fast as frames go. 120 a minute per device, bursts of as many.
#[tokio::test]
async fn archive_floods_are_rate_limited_per_device() {
    let clinic = Clinic::new();
    let relays = clinic.start(&Engine::Sqlite, "attacks-archive");
    let url = relays[0].url();
    let patient = Device::new(76, 1);
    let mut p = Peer::register(&url, &patient, None).await;
    publish_list(&mut p, &patient, &[1]).await;
    let (h, answer) = open(&mut p, &clinic, &patient, 76).await;
    assert_eq!(answer, FrameBody::Ok);
    let mut filed = 0;
    for _ in 0..200 {
        match p
            .call(q(QueueFrame::PutArchive(Box::new(archive_envelope(
                h.conversation,
            )))))
            .await
        {
            FrameBody::Ok => filed += 1,
            FrameBody::Error {
                code: ErrorCode::RateLimited,
                retry_after_ms,
            } => assert!(retry_after_ms > 0 && retry_after_ms <= 1_000),
            other => panic!("{other:?}"),
        }
    }
    assert!((120..=122).contains(&filed), "filed {filed}");
}
