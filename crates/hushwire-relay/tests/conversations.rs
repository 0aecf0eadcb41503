//! Clinic conversations and the queue at the relay (`docs/conversations.md` §5.4): opening,
//! listing, claiming (exactly one of racing claims wins, also across two instances on one
//! PostgreSQL database), hand-offs, refusals that store nothing, `ConversationSend` checks, the
//! read-only supervisor and the archive, and the pushes. Each test runs on SQLite and, when it
//! answers, on PostgreSQL with two relay instances (else a loud SKIPPED line for it).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod conversation_support;

use common::{Device, Engine, RelayProcess};
use conversation_support::*;
use hushwire_proto::audit::ConversationId;
use hushwire_proto::clinic::{AgentCertificate, DeviceList, Role};
use hushwire_proto::codec::Codec;
use hushwire_proto::conversation::queue::{NoteEnvelope, QueueFrame, QueueState};
use hushwire_proto::conversation::{ChangeAction, MemberRole, MembershipChange, genesis_hash};
use hushwire_proto::relay::{ErrorCode, FrameBody};

#[tokio::test]
async fn open_claim_hand_off_refusals_supervisor_and_pushes() {
    for engine in Engine::all().await {
        let clinic = Clinic::new();
        let relays = clinic.start(&engine, "conversations");
        let url = |i: usize| relays[i % relays.len()].url();
        let (patient, ada, ben, sue, stranger) = (
            Device::new(1, 1),
            Device::new(2, 1),
            Device::new(3, 1),
            Device::new(4, 1),
            Device::new(5, 1),
        );
        let ada_cert = clinic.certify(1, &ada, &[Role::Agent]);
        let ben_cert = clinic.certify(2, &ben, &[Role::Agent]);
        let sue_cert = clinic.certify(3, &sue, &[Role::Supervisor]);
        let mut p = Peer::register(&url(0), &patient, None).await;
        publish_list(&mut p, &patient, &[1]).await;
        let mut a = Peer::register(&url(1), &ada, Some(&ada_cert)).await;
        let mut b = Peer::register(&url(0), &ben, Some(&ben_cert)).await;
        let mut s = Peer::register(&url(1), &sue, Some(&sue_cert)).await;
        let mut x = Peer::register(&url(0), &stranger, None).await;

        // Agents only: on duty, the queue.
        assert_eq!(a.call(q(QueueFrame::SetOnDuty(true))).await, FrameBody::Ok);
        assert_eq!(b.call(q(QueueFrame::SetOnDuty(true))).await, FrameBody::Ok);
        assert_eq!(
            s.call(q(QueueFrame::FetchQueue)).await,
            error(ErrorCode::Forbidden)
        );
        assert_eq!(
            p.call(q(QueueFrame::SetOnDuty(true))).await,
            error(ErrorCode::Forbidden)
        );

        // Open: the on-duty agents learn of it, the queue lists it at epoch 1.
        let mut h = History::new(&clinic, 1);
        let open = h.change(
            ChangeAction::Add,
            MemberRole::Patient,
            &patient,
            None,
            &patient,
            None,
        );
        assert_eq!(
            p.call(q(QueueFrame::OpenConversation(Box::new(open.clone()))))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        h.accept(&open);
        assert_eq!(
            x.call(q(QueueFrame::OpenConversation(Box::new(open.clone()))))
                .await,
            error(ErrorCode::ConversationExists),
            "{engine:?}"
        );
        let conv = h.conversation;
        a.wait_for("QueueChanged(New)", |a| {
            a.queue_pushes(conv).contains(&QueueState::New)
        })
        .await;
        match a.call(q(QueueFrame::FetchQueue)).await {
            FrameBody::Queue(f) => match *f {
                QueueFrame::Queue(entries) => {
                    let e = entries.iter().find(|e| e.conversation == conv).unwrap();
                    assert_eq!((e.state, e.epoch), (QueueState::New, 1), "{engine:?}");
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }

        // Refusals store nothing: a patient adding a stranger, a bad signature, a claim
        // signed for another device.
        let stranger_add = h.change(
            ChangeAction::Add,
            MemberRole::Patient,
            &stranger,
            None,
            &patient,
            None,
        );
        assert_eq!(
            p.call(q(QueueFrame::PublishChange(Box::new(stranger_add))))
                .await,
            error(ErrorCode::MembershipRefused),
            "{engine:?}"
        );
        let claim_a = h.change(
            ChangeAction::Add,
            MemberRole::Agent,
            &ada,
            Some(&ada_cert),
            &ada,
            Some(&ada_cert),
        );
        let mut forged = claim_a.to_bytes();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let forged = MembershipChange::from_bytes(&forged).unwrap();
        assert_eq!(
            a.call(q(QueueFrame::Claim(Box::new(forged)))).await,
            error(ErrorCode::MembershipRefused),
            "{engine:?}"
        );
        assert_eq!(membership_len(&mut p, conv).await, 1, "{engine:?}");

        // Ada claims; Ben's claim at the same epoch loses and learns the next epoch.
        assert_eq!(
            a.call(q(QueueFrame::Claim(Box::new(claim_a.clone()))))
                .await,
            q(QueueFrame::Claimed {
                conversation: conv,
                epoch: 1
            }),
            "{engine:?}"
        );
        h.accept(&claim_a);
        let claim_b = h.change_at(
            1,
            genesis_hash(&conv, &clinic.org_key()),
            ChangeAction::Add,
            MemberRole::Agent,
            &ben,
            Some(&ben_cert),
            &ben,
            Some(&ben_cert),
        );
        assert_eq!(
            b.call(q(QueueFrame::Claim(Box::new(claim_b)))).await,
            q(QueueFrame::AlreadyClaimed {
                conversation: conv,
                epoch: 2
            }),
            "{engine:?}"
        );
        p.wait_for("MembershipChanged(1)", |p| {
            p.membership_pushes(conv).contains(&1)
        })
        .await;
        b.wait_for("QueueChanged(Claimed)", |b| {
            b.queue_pushes(conv).contains(&QueueState::Claimed)
        })
        .await;

        // ConversationSend: only at the head epoch, only between members.
        let send = |epoch, to: &Device| {
            q(QueueFrame::ConversationSend {
                conversation: conv,
                epoch,
                envelopes: vec![envelope(to, b"sealed for a member")],
            })
        };
        assert_eq!(
            p.call(send(1, &ada)).await,
            error(ErrorCode::StaleEpoch),
            "{engine:?}"
        );
        assert_eq!(
            p.call(send(2, &ben)).await,
            error(ErrorCode::NotOnConversation),
            "{engine:?}"
        );
        assert!(
            matches!(p.call(send(2, &ada)).await, FrameBody::Sent(r) if r.len() == 1),
            "{engine:?}"
        );
        a.wait_for("the patient's message", |a| {
            a.deliveries.iter().any(|d| d.sender == patient.address())
        })
        .await;

        // A supervisor joins read-only: no archive filing, but reading it; an agent cannot.
        let join = h.change(
            ChangeAction::Add,
            MemberRole::Supervisor,
            &sue,
            Some(&sue_cert),
            &sue,
            Some(&sue_cert),
        );
        assert_eq!(
            s.call(q(QueueFrame::PublishChange(Box::new(join.clone()))))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        h.accept(&join);
        let filed = archive_envelope(conv);
        assert_eq!(
            s.call(q(QueueFrame::PutArchive(Box::new(filed.clone()))))
                .await,
            error(ErrorCode::NotOnConversation),
            "{engine:?}"
        );
        let before_filing = now_ms();
        assert_eq!(
            a.call(q(QueueFrame::PutArchive(Box::new(filed.clone()))))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        let after_filing = now_ms();
        let fetch = q(QueueFrame::FetchArchive {
            conversation: conv,
            from_index: 0,
        });
        assert_eq!(a.call(fetch.clone()).await, error(ErrorCode::Forbidden));
        // The supervisor reads the envelope with the device that filed it and when (the relay's
        // clock, between the test's readings before and after the filing).
        match s.call(fetch).await {
            FrameBody::Queue(f) => match *f {
                QueueFrame::ArchiveItems { next_index, items } => {
                    assert_eq!((next_index, items.len()), (1, 1), "{engine:?}");
                    assert_eq!(items[0].envelope, filed, "{engine:?}");
                    assert_eq!(items[0].filer, ada.address(), "{engine:?}");
                    assert!(
                        (before_filing..=after_filing).contains(&items[0].filed_at_ms),
                        "{engine:?}: filed at {} not in {before_filing}..={after_filing}",
                        items[0].filed_at_ms
                    );
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        // A read-only supervisor cannot send to the conversation.
        assert_eq!(
            s.call(send(3, &patient)).await,
            error(ErrorCode::NotOnConversation),
            "{engine:?}"
        );

        // Hand-off to Ben, with a note to Ben only.
        let add_ben = h.change(
            ChangeAction::Add,
            MemberRole::Agent,
            &ben,
            Some(&ben_cert),
            &ada,
            Some(&ada_cert),
        );
        h.accept(&add_ben);
        let remove_ada = h.change(
            ChangeAction::Remove,
            MemberRole::Agent,
            &ada,
            None,
            &ada,
            Some(&ada_cert),
        );
        let note_to = |to: &Device| NoteEnvelope {
            recipient: to.address(),
            payload: b"sealed note".to_vec(),
        };
        // A note to the patient is refused, and nothing is stored.
        assert_eq!(
            a.call(q(QueueFrame::HandOff {
                changes: vec![add_ben.clone(), remove_ada.clone()],
                notes: vec![note_to(&patient)],
            }))
            .await,
            error(ErrorCode::NotOnConversation),
            "{engine:?}"
        );
        assert_eq!(membership_len(&mut p, conv).await, 3, "{engine:?}");
        assert_eq!(
            a.call(q(QueueFrame::HandOff {
                changes: vec![add_ben.clone(), remove_ada.clone()],
                notes: vec![note_to(&ben)],
            }))
            .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        h.accept(&remove_ada);
        b.wait_for("the hand-off pushes and note", |b| {
            let epochs = b.membership_pushes(conv);
            epochs.contains(&3)
                && epochs.contains(&4)
                && b.deliveries.iter().any(|d| d.sender == ada.address())
        })
        .await;
        // The other members learn of both changes (the signing device gets no push of its own
        // changes).
        p.wait_for("the hand-off", |p| {
            let epochs = p.membership_pushes(conv);
            epochs.contains(&3) && epochs.contains(&4)
        })
        .await;

        // The removed agent can sign nothing more, nor receive conversation messages.
        let by_removed = h.change(
            ChangeAction::Remove,
            MemberRole::Agent,
            &ben,
            None,
            &ada,
            Some(&ada_cert),
        );
        assert_eq!(
            a.call(q(QueueFrame::PublishChange(Box::new(by_removed))))
                .await,
            error(ErrorCode::MembershipRefused),
            "{engine:?}"
        );
        assert_eq!(
            p.call(send(5, &ada)).await,
            error(ErrorCode::NotOnConversation),
            "{engine:?}"
        );
        assert!(
            matches!(p.call(send(5, &ben)).await, FrameBody::Sent(_)),
            "{engine:?}"
        );
        // But it still files the archive copies of what it wrote while on it (§7.3): a copy
        // refused now would be missing from the clinic's record for good. A supervisor who
        // never wrote here is still refused.
        assert_eq!(
            a.call(q(QueueFrame::PutArchive(Box::new(archive_envelope(conv)))))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        assert_eq!(
            s.call(q(QueueFrame::PutArchive(Box::new(archive_envelope(conv)))))
                .await,
            error(ErrorCode::NotOnConversation),
            "{engine:?}"
        );

        // Ben hands it back to the queue, with a note to the on-duty Ada.
        let back = h.change(
            ChangeAction::Remove,
            MemberRole::Agent,
            &ben,
            None,
            &ben,
            Some(&ben_cert),
        );
        assert_eq!(
            b.call(q(QueueFrame::HandOff {
                changes: vec![back.clone()],
                notes: vec![note_to(&ada)],
            }))
            .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        h.accept(&back);
        a.wait_for("QueueChanged(HandedBack)", |a| {
            a.queue_pushes(conv).contains(&QueueState::HandedBack)
        })
        .await;
        match a.call(q(QueueFrame::FetchQueue)).await {
            FrameBody::Queue(f) => match *f {
                QueueFrame::Queue(entries) => {
                    let e = entries.iter().find(|e| e.conversation == conv).unwrap();
                    assert_eq!(
                        (e.state, e.epoch),
                        (QueueState::HandedBack, 6),
                        "{engine:?}"
                    );
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        // Ada may claim it again.
        let reclaim = h.change(
            ChangeAction::Add,
            MemberRole::Agent,
            &ada,
            Some(&ada_cert),
            &ada,
            Some(&ada_cert),
        );
        assert_eq!(
            a.call(q(QueueFrame::Claim(Box::new(reclaim)))).await,
            q(QueueFrame::Claimed {
                conversation: conv,
                epoch: 6
            }),
            "{engine:?}"
        );
        assert_eq!(membership_len(&mut s, conv).await, 7, "{engine:?}");
    }
}

/// The changes `p` fetches from epoch 0 (at most 64).
async fn fetch_history(p: &mut Peer, conversation: ConversationId) -> Vec<MembershipChange> {
    match p
        .call(q(QueueFrame::FetchMembership {
            conversation,
            from_epoch: 0,
        }))
        .await
    {
        FrameBody::Queue(m) => match *m {
            QueueFrame::Membership(changes) => changes,
            other => panic!("not a membership: {other:?}"),
        },
        other => panic!("not a membership: {other:?}"),
    }
}

/// A claim must name the head's hash, so an agent reads the history of a conversation waiting in
/// the queue (new or handed back) before claiming it, with no other role than agent; once it is
/// claimed or closed only its members (and the patient's devices and supervisors) may read it,
/// and a device without a certificate never may.
#[tokio::test]
async fn an_agent_reads_a_waiting_history_to_claim_it_and_not_once_claimed() {
    for engine in Engine::all().await {
        let clinic = Clinic::new();
        let relays = clinic.start(&engine, "conversation-agent-fetch");
        let url = |i: usize| relays[i % relays.len()].url();
        let (patient, ada, ben, stranger) = (
            Device::new(35, 1),
            Device::new(36, 1),
            Device::new(37, 1),
            Device::new(38, 1),
        );
        // Agent role only: no supervisor role to read histories with.
        let ada_cert = clinic.certify(35, &ada, &[Role::Agent]);
        let ben_cert = clinic.certify(36, &ben, &[Role::Agent]);
        let mut p = Peer::register(&url(0), &patient, None).await;
        publish_list(&mut p, &patient, &[1]).await;
        // On PostgreSQL the two agents are on different instances.
        let mut a = Peer::register(&url(0), &ada, Some(&ada_cert)).await;
        let mut b = Peer::register(&url(1), &ben, Some(&ben_cert)).await;
        let mut x = Peer::register(&url(1), &stranger, None).await;
        let mut h = History::new(&clinic, 35);
        let conv = h.conversation;
        let open = h.change(
            ChangeAction::Add,
            MemberRole::Patient,
            &patient,
            None,
            &patient,
            None,
        );
        assert_eq!(
            p.call(q(QueueFrame::OpenConversation(Box::new(open.clone()))))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        h.accept(&open);
        let not_on = error(ErrorCode::NotOnConversation);
        let fetch = q(QueueFrame::FetchMembership {
            conversation: conv,
            from_epoch: 0,
        });

        // A device without a certificate may not read a waiting conversation's history.
        assert_eq!(x.call(fetch.clone()).await, not_on, "{engine:?}");

        // Ada reads it (state New) and claims on the head she read: she wins.
        let read = fetch_history(&mut a, conv).await;
        assert_eq!(read, vec![open.clone()], "{engine:?}");
        let on_read = History {
            conversation: conv,
            head: read.last().unwrap().hash(),
            epoch: u64::try_from(read.len()).unwrap(),
        };
        let claim = on_read.change(
            ChangeAction::Add,
            MemberRole::Agent,
            &ada,
            Some(&ada_cert),
            &ada,
            Some(&ada_cert),
        );
        assert_eq!(
            a.call(q(QueueFrame::Claim(Box::new(claim.clone())))).await,
            q(QueueFrame::Claimed {
                conversation: conv,
                epoch: 1
            }),
            "{engine:?}"
        );
        h.accept(&claim);

        // Claimed: Ben, an agent not on it, is refused; the stranger still is; Ada, a member,
        // reads both changes.
        assert_eq!(b.call(fetch.clone()).await, not_on, "{engine:?}");
        assert_eq!(x.call(fetch.clone()).await, not_on, "{engine:?}");
        assert_eq!(fetch_history(&mut a, conv).await.len(), 2, "{engine:?}");

        // Handed back (Ada leaves): Ben may read it again and claims on what he read.
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
        let read = fetch_history(&mut b, conv).await;
        assert_eq!(read, vec![open, claim, leave], "{engine:?}");
        assert_eq!(read.last().unwrap().hash(), h.head, "{engine:?}");
        let reclaim = h.change(
            ChangeAction::Add,
            MemberRole::Agent,
            &ben,
            Some(&ben_cert),
            &ben,
            Some(&ben_cert),
        );
        assert_eq!(
            b.call(q(QueueFrame::Claim(Box::new(reclaim)))).await,
            q(QueueFrame::Claimed {
                conversation: conv,
                epoch: 3
            }),
            "{engine:?}"
        );
        // Ada, no longer a member, is refused now that Ben holds it.
        assert_eq!(a.call(fetch).await, not_on, "{engine:?}");

        // A conversation closed while waiting (the patient left before any claim) is not in the
        // queue: an agent not on it may not read it.
        let mut closed = History::new(&clinic, 39);
        let open = closed.change(
            ChangeAction::Add,
            MemberRole::Patient,
            &patient,
            None,
            &patient,
            None,
        );
        assert_eq!(
            p.call(q(QueueFrame::OpenConversation(Box::new(open.clone()))))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        closed.accept(&open);
        assert_eq!(
            fetch_history(&mut a, closed.conversation).await.len(),
            1,
            "{engine:?}"
        );
        let gone = closed.change(
            ChangeAction::Remove,
            MemberRole::Patient,
            &patient,
            None,
            &patient,
            None,
        );
        assert_eq!(
            p.call(q(QueueFrame::PublishChange(Box::new(gone)))).await,
            FrameBody::Ok,
            "{engine:?}"
        );
        assert_eq!(
            a.call(q(QueueFrame::FetchMembership {
                conversation: closed.conversation,
                from_epoch: 0,
            }))
            .await,
            not_on,
            "{engine:?}"
        );
    }
}

#[tokio::test]
async fn racing_claims_exactly_one_wins() {
    for engine in Engine::all().await {
        let clinic = Clinic::new();
        let relays = clinic.start(&engine, "conversation-race");
        let url = |i: usize| relays[i % relays.len()].url();
        let (patient, ada, ben) = (Device::new(11, 1), Device::new(12, 1), Device::new(13, 1));
        let ada_cert = clinic.certify(11, &ada, &[Role::Agent]);
        let ben_cert = clinic.certify(12, &ben, &[Role::Agent]);
        let mut p = Peer::register(&url(0), &patient, None).await;
        publish_list(&mut p, &patient, &[1]).await;
        // On PostgreSQL the two agents are on different instances.
        let mut a = Peer::register(&url(0), &ada, Some(&ada_cert)).await;
        let mut b = Peer::register(&url(1), &ben, Some(&ben_cert)).await;
        let (mut ada_wins, mut ben_wins) = (0, 0);
        for round in 0..20u8 {
            let mut h = History::new(&clinic, round);
            let open = h.change(
                ChangeAction::Add,
                MemberRole::Patient,
                &patient,
                None,
                &patient,
                None,
            );
            assert_eq!(
                p.call(q(QueueFrame::OpenConversation(Box::new(open.clone()))))
                    .await,
                FrameBody::Ok
            );
            h.accept(&open);
            let claim = |agent: &Device, cert: &AgentCertificate| {
                q(QueueFrame::Claim(Box::new(h.change(
                    ChangeAction::Add,
                    MemberRole::Agent,
                    agent,
                    Some(cert),
                    agent,
                    Some(cert),
                ))))
            };
            let (ca, cb) = (claim(&ada, &ada_cert), claim(&ben, &ben_cert));
            let (ra, rb) = tokio::join!(a.call(ca), b.call(cb));
            let won = q(QueueFrame::Claimed {
                conversation: h.conversation,
                epoch: 1,
            });
            let lost = q(QueueFrame::AlreadyClaimed {
                conversation: h.conversation,
                epoch: 2,
            });
            if ra == won {
                assert_eq!(rb, lost, "round {round} on {engine:?}");
                ada_wins += 1;
            } else {
                assert_eq!((&ra, &rb), (&lost, &won), "round {round} on {engine:?}");
                ben_wins += 1;
            }
            assert_eq!(membership_len(&mut p, h.conversation).await, 2);
        }
        assert_eq!(ada_wins + ben_wins, 20);
        eprintln!("{engine:?}: Ada won {ada_wins}, Ben won {ben_wins} of 20 racing claims");
    }
}

#[tokio::test]
async fn opening_needs_the_patients_device_list_and_a_clinic() {
    for engine in Engine::all().await {
        let clinic = Clinic::new();
        let relays = clinic.start(&engine, "conversation-list");
        let patient = Device::new(21, 1);
        let mut p = Peer::register(&relays[0].url(), &patient, None).await;
        let mut h = History::new(&clinic, 21);
        let open = h.change(
            ChangeAction::Add,
            MemberRole::Patient,
            &patient,
            None,
            &patient,
            None,
        );
        // No published device list: refused, and nothing is stored.
        assert_eq!(
            p.call(q(QueueFrame::OpenConversation(Box::new(open.clone()))))
                .await,
            error(ErrorCode::MembershipRefused),
            "{engine:?}"
        );
        assert_eq!(
            p.call(q(QueueFrame::FetchMembership {
                conversation: h.conversation,
                from_epoch: 0
            }))
            .await,
            error(ErrorCode::UnknownConversation),
            "{engine:?}"
        );
        let list = DeviceList::issue(&patient.signing, &patient.identity, 2, &[1, 2]).unwrap();
        assert_eq!(
            p.call(FrameBody::PublishDeviceList(list)).await,
            FrameBody::Ok
        );
        assert_eq!(
            p.call(q(QueueFrame::OpenConversation(Box::new(open.clone()))))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        h.accept(&open);
        assert_eq!(membership_len(&mut p, h.conversation).await, 1);
    }
    // A relay without a clinic has no queue.
    let plain = RelayProcess::start("conversation-no-clinic", &[]);
    let patient = Device::new(22, 1);
    let mut p = Peer::register(&plain.url(), &patient, None).await;
    assert_eq!(
        p.call(q(QueueFrame::FetchArchivePolicy)).await,
        error(ErrorCode::Forbidden)
    );
}

#[tokio::test]
async fn removed_devices_are_told_and_a_patient_leaving_closes_the_conversation() {
    for engine in Engine::all().await {
        let clinic = Clinic::new();
        let relays = clinic.start(&engine, "conversation-removal");
        let url = |i: usize| relays[i % relays.len()].url();
        let (patient, ada, ben, sue) = (
            Device::new(31, 1),
            Device::new(32, 1),
            Device::new(33, 1),
            Device::new(34, 1),
        );
        let ada_cert = clinic.certify(31, &ada, &[Role::Agent]);
        let ben_cert = clinic.certify(32, &ben, &[Role::Agent]);
        let sue_cert = clinic.certify(33, &sue, &[Role::Supervisor]);
        let mut p = Peer::register(&url(0), &patient, None).await;
        publish_list(&mut p, &patient, &[1]).await;
        let mut a = Peer::register(&url(1), &ada, Some(&ada_cert)).await;
        let mut b = Peer::register(&url(0), &ben, Some(&ben_cert)).await;
        let mut s = Peer::register(&url(1), &sue, Some(&sue_cert)).await;
        assert_eq!(b.call(q(QueueFrame::SetOnDuty(true))).await, FrameBody::Ok);

        let mut h = History::new(&clinic, 31);
        let conv = h.conversation;
        let open = h.change(
            ChangeAction::Add,
            MemberRole::Patient,
            &patient,
            None,
            &patient,
            None,
        );
        assert_eq!(
            p.call(q(QueueFrame::OpenConversation(Box::new(open.clone()))))
                .await,
            FrameBody::Ok
        );
        h.accept(&open);
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
        let join = h.change(
            ChangeAction::Add,
            MemberRole::Supervisor,
            &sue,
            Some(&sue_cert),
            &sue,
            Some(&sue_cert),
        );
        assert_eq!(
            s.call(q(QueueFrame::PublishChange(Box::new(join.clone()))))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        h.accept(&join);
        // The agent removes the supervisor: the supervisor's device is told it is out.
        let out = h.change(
            ChangeAction::Remove,
            MemberRole::Supervisor,
            &sue,
            None,
            &ada,
            Some(&ada_cert),
        );
        assert_eq!(
            a.call(q(QueueFrame::PublishChange(Box::new(out.clone()))))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        h.accept(&out);
        s.wait_for("its removal", |s| s.membership_pushes(conv).contains(&3))
            .await;
        // The patient leaves: the conversation is closed, the on-duty agent is told, the agent
        // on it gets the change.
        let leave = h.change(
            ChangeAction::Remove,
            MemberRole::Patient,
            &patient,
            None,
            &patient,
            None,
        );
        assert_eq!(
            p.call(q(QueueFrame::PublishChange(Box::new(leave.clone()))))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        b.wait_for("QueueChanged(Closed)", |b| {
            b.queue_pushes(conv).contains(&QueueState::Closed)
        })
        .await;
        a.wait_for("the patient's departure", |a| {
            a.membership_pushes(conv).contains(&4)
        })
        .await;
    }
}

/// The relay keeps verified memberships in memory (`docs/relay-protocol.md` §3.6); one kept by
/// instance A is never used once instance B has stored a change (on PostgreSQL the patient is
/// on A, the agent and the supervisor on B): A's next `ConversationSend` at the old epoch is
/// `StaleEpoch`, and at the new epoch it is checked against the new member set, both when a
/// member joined (now a recipient) and when one was removed (no longer one).
#[tokio::test]
async fn a_membership_kept_in_memory_is_not_used_past_another_instances_change() {
    for engine in Engine::all().await {
        let clinic = Clinic::new();
        let relays = clinic.start(&engine, "conversation-cache");
        let url = |i: usize| relays[i % relays.len()].url();
        let (patient, ada, sue) = (Device::new(41, 1), Device::new(42, 1), Device::new(43, 1));
        let ada_cert = clinic.certify(41, &ada, &[Role::Agent]);
        let sue_cert = clinic.certify(42, &sue, &[Role::Supervisor]);
        let mut p = Peer::register(&url(0), &patient, None).await;
        publish_list(&mut p, &patient, &[1]).await;
        let mut a = Peer::register(&url(1), &ada, Some(&ada_cert)).await;
        let mut s = Peer::register(&url(1), &sue, Some(&sue_cert)).await;

        let mut h = History::new(&clinic, 41);
        let conv = h.conversation;
        let open = h.change(
            ChangeAction::Add,
            MemberRole::Patient,
            &patient,
            None,
            &patient,
            None,
        );
        assert_eq!(
            p.call(q(QueueFrame::OpenConversation(Box::new(open.clone()))))
                .await,
            FrameBody::Ok
        );
        h.accept(&open);
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
        let send = |epoch, to: &Device| {
            q(QueueFrame::ConversationSend {
                conversation: conv,
                epoch,
                envelopes: vec![envelope(to, b"sealed for a member")],
            })
        };
        let sent = |answer: &FrameBody| matches!(answer, FrameBody::Sent(r) if r.len() == 1);
        // Instance A now holds the membership at epoch 2 (patient and agent); twice, so the
        // second is answered from what it keeps.
        for _ in 0..2 {
            assert!(sent(&p.call(send(2, &ada)).await), "{engine:?}");
            assert_eq!(
                p.call(send(2, &sue)).await,
                error(ErrorCode::NotOnConversation),
                "{engine:?}"
            );
        }

        // The supervisor joins on instance B.
        let join = h.change(
            ChangeAction::Add,
            MemberRole::Supervisor,
            &sue,
            Some(&sue_cert),
            &sue,
            Some(&sue_cert),
        );
        assert_eq!(
            s.call(q(QueueFrame::PublishChange(Box::new(join.clone()))))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        h.accept(&join);
        assert_eq!(
            p.call(send(2, &ada)).await,
            error(ErrorCode::StaleEpoch),
            "{engine:?}"
        );
        assert!(sent(&p.call(send(3, &sue)).await), "{engine:?}");
        assert!(sent(&p.call(send(3, &ada)).await), "{engine:?}");

        // The agent removes the supervisor on instance B.
        let out = h.change(
            ChangeAction::Remove,
            MemberRole::Supervisor,
            &sue,
            None,
            &ada,
            Some(&ada_cert),
        );
        assert_eq!(
            a.call(q(QueueFrame::PublishChange(Box::new(out.clone()))))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        h.accept(&out);
        assert_eq!(
            p.call(send(3, &sue)).await,
            error(ErrorCode::StaleEpoch),
            "{engine:?}"
        );
        assert_eq!(
            p.call(send(4, &sue)).await,
            error(ErrorCode::NotOnConversation),
            "{engine:?}"
        );
        assert!(sent(&p.call(send(4, &ada)).await), "{engine:?}");
        assert_eq!(membership_len(&mut p, conv).await, 4, "{engine:?}");
    }
}

/// §4.3 rule 9, §5.4: the clinic revokes the certificate of the only agent on a conversation;
/// publishing the list puts it back in the queue (on-duty agents are told, it is listed and its
/// history readable), another agent's claim takes it over across instances, and the revoked
/// agent's device no longer receives the conversation's messages.
#[tokio::test]
async fn revoking_the_only_agent_puts_the_conversation_back_in_the_queue() {
    use hushwire_proto::clinic::RevocationList;
    for engine in Engine::all().await {
        let clinic = Clinic::new();
        let relays = clinic.start(&engine, "conversation-revoked");
        let url = |i: usize| relays[i % relays.len()].url();
        let (patient, ada, ben, admin, other) = (
            Device::new(51, 1),
            Device::new(52, 1),
            Device::new(53, 1),
            Device::new(54, 1),
            Device::new(55, 1),
        );
        let ada_cert = clinic.certify(51, &ada, &[Role::Agent]);
        let ben_cert = clinic.certify(52, &ben, &[Role::Agent]);
        let admin_cert = clinic.certify(53, &admin, &[Role::Admin]);
        let mut p = Peer::register(&url(0), &patient, None).await;
        publish_list(&mut p, &patient, &[1]).await;
        let mut a = Peer::register(&url(1), &ada, Some(&ada_cert)).await;
        let mut b = Peer::register(&url(1), &ben, Some(&ben_cert)).await;
        let mut m = Peer::register(&url(0), &admin, Some(&admin_cert)).await;
        assert_eq!(b.call(q(QueueFrame::SetOnDuty(true))).await, FrameBody::Ok);

        // The patient opens, Ada claims; Ben cannot claim it nor read it.
        let mut h = History::new(&clinic, 51);
        let open = h.change(
            ChangeAction::Add,
            MemberRole::Patient,
            &patient,
            None,
            &patient,
            None,
        );
        assert_eq!(
            p.call(q(QueueFrame::OpenConversation(Box::new(open.clone()))))
                .await,
            FrameBody::Ok
        );
        h.accept(&open);
        let conv = h.conversation;
        let claim = |h: &History, agent: &Device, cert: &AgentCertificate| {
            q(QueueFrame::Claim(Box::new(h.change(
                ChangeAction::Add,
                MemberRole::Agent,
                agent,
                Some(cert),
                agent,
                Some(cert),
            ))))
        };
        let ada_claim = claim(&h, &ada, &ada_cert);
        assert_eq!(
            a.call(ada_claim.clone()).await,
            q(QueueFrame::Claimed {
                conversation: conv,
                epoch: 1
            }),
            "{engine:?}"
        );
        let FrameBody::Queue(f) = ada_claim else {
            unreachable!()
        };
        let QueueFrame::Claim(c) = *f else {
            unreachable!()
        };
        h.accept(&c);
        assert_eq!(
            b.call(claim(&h, &ben, &ben_cert)).await,
            q(QueueFrame::AlreadyClaimed {
                conversation: conv,
                epoch: 2
            }),
            "{engine:?}"
        );
        let fetch = q(QueueFrame::FetchMembership {
            conversation: conv,
            from_epoch: 0,
        });
        assert_eq!(
            b.call(fetch.clone()).await,
            error(ErrorCode::NotOnConversation)
        );

        // A list naming another serial changes nothing.
        let unrelated = RevocationList::issue(&clinic.org, 1, now(), &[99]).unwrap();
        assert_eq!(
            m.call(FrameBody::PublishRevocationList(unrelated)).await,
            FrameBody::Ok,
            "{engine:?}"
        );
        assert_eq!(
            b.call(fetch.clone()).await,
            error(ErrorCode::NotOnConversation),
            "{engine:?}"
        );
        // The clinic revokes Ada's certificate: the conversation waits again (handed back at
        // its epoch 2), Ben is told, finds it in the queue and may read its history.
        let revoked = RevocationList::issue(&clinic.org, 2, now(), &[51, 99]).unwrap();
        assert_eq!(
            m.call(FrameBody::PublishRevocationList(revoked)).await,
            FrameBody::Ok,
            "{engine:?}"
        );
        b.wait_for("QueueChanged(HandedBack)", |b| {
            b.queue_pushes(conv).contains(&QueueState::HandedBack)
        })
        .await;
        match b.call(q(QueueFrame::FetchQueue)).await {
            FrameBody::Queue(f) => match *f {
                QueueFrame::Queue(entries) => {
                    let e = entries.iter().find(|e| e.conversation == conv).unwrap();
                    assert_eq!(
                        (e.state, e.epoch),
                        (QueueState::HandedBack, 2),
                        "{engine:?}"
                    );
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        assert_eq!(membership_len(&mut b, conv).await, 2, "{engine:?}");
        // Ada's device (revoked, its connection closed) is still a member until the takeover.
        drop(a);

        // Ben's claim takes over (on the other instance than the patient, on PostgreSQL).
        let ben_claim = claim(&h, &ben, &ben_cert);
        assert_eq!(
            b.call(ben_claim.clone()).await,
            q(QueueFrame::Claimed {
                conversation: conv,
                epoch: 2
            }),
            "{engine:?}"
        );
        let FrameBody::Queue(f) = ben_claim else {
            unreachable!()
        };
        let QueueFrame::Claim(c) = *f else {
            unreachable!()
        };
        h.accept(&c);
        // Another agent's claim now loses.
        let other_cert = clinic.certify(54, &other, &[Role::Agent]);
        let mut o = Peer::register(&url(0), &other, Some(&other_cert)).await;
        assert_eq!(
            o.call(claim(&h, &other, &other_cert)).await,
            q(QueueFrame::AlreadyClaimed {
                conversation: conv,
                epoch: 3
            }),
            "{engine:?}"
        );
        // The patient learns of the claim; its messages reach Ben, not Ada any more.
        p.wait_for("Ben's claim", |p| p.membership_pushes(conv).contains(&2))
            .await;
        assert_eq!(membership_len(&mut p, conv).await, 3, "{engine:?}");
        let send = |to: &Device| {
            q(QueueFrame::ConversationSend {
                conversation: conv,
                epoch: 3,
                envelopes: vec![envelope(to, b"sealed for a member")],
            })
        };
        assert_eq!(
            p.call(send(&ada)).await,
            error(ErrorCode::NotOnConversation),
            "{engine:?}"
        );
        assert!(
            matches!(p.call(send(&ben)).await, FrameBody::Sent(r) if r.len() == 1),
            "{engine:?}"
        );
        b.wait_for("the patient's message", |b| {
            b.deliveries.iter().any(|d| d.sender == patient.address())
        })
        .await;
        // Ben's queue knows it is claimed again.
        b.wait_for("QueueChanged(Claimed)", |b| {
            b.queue_pushes(conv).contains(&QueueState::Claimed)
        })
        .await;
    }
}

/// §4.3 rule 9 at the relay: while one agent on the conversation holds a certificate the list
/// does not name, it stays claimed (no hand-back, no history for others, a claim loses); once
/// every agent on it is revoked, a third agent takes it over.
#[tokio::test]
async fn a_conversation_stays_claimed_while_one_of_its_agents_is_not_revoked() {
    use hushwire_proto::clinic::RevocationList;
    for engine in Engine::all().await {
        let clinic = Clinic::new();
        let relays = clinic.start(&engine, "conversation-two-agents");
        let url = |i: usize| relays[i % relays.len()].url();
        let (patient, ada, ben, cy, admin) = (
            Device::new(61, 1),
            Device::new(62, 1),
            Device::new(63, 1),
            Device::new(64, 1),
            Device::new(65, 1),
        );
        let ada_cert = clinic.certify(61, &ada, &[Role::Agent]);
        let ben_cert = clinic.certify(62, &ben, &[Role::Agent]);
        let cy_cert = clinic.certify(63, &cy, &[Role::Agent]);
        let admin_cert = clinic.certify(64, &admin, &[Role::Admin]);
        let mut p = Peer::register(&url(0), &patient, None).await;
        publish_list(&mut p, &patient, &[1]).await;
        let mut a = Peer::register(&url(1), &ada, Some(&ada_cert)).await;
        let mut c = Peer::register(&url(1), &cy, Some(&cy_cert)).await;
        let mut m = Peer::register(&url(0), &admin, Some(&admin_cert)).await;

        let mut h = History::new(&clinic, 61);
        let open = h.change(
            ChangeAction::Add,
            MemberRole::Patient,
            &patient,
            None,
            &patient,
            None,
        );
        assert_eq!(
            p.call(q(QueueFrame::OpenConversation(Box::new(open.clone()))))
                .await,
            FrameBody::Ok
        );
        h.accept(&open);
        let conv = h.conversation;
        let claim = h.change(
            ChangeAction::Add,
            MemberRole::Agent,
            &ada,
            Some(&ada_cert),
            &ada,
            Some(&ada_cert),
        );
        assert_eq!(
            a.call(q(QueueFrame::Claim(Box::new(claim.clone())))).await,
            q(QueueFrame::Claimed {
                conversation: conv,
                epoch: 1
            }),
            "{engine:?}"
        );
        h.accept(&claim);
        // Ada adds Ben: two agents on it.
        let add_ben = h.change(
            ChangeAction::Add,
            MemberRole::Agent,
            &ben,
            Some(&ben_cert),
            &ada,
            Some(&ada_cert),
        );
        assert_eq!(
            a.call(q(QueueFrame::PublishChange(Box::new(add_ben.clone()))))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        h.accept(&add_ben);
        let cy_claim = |h: &History| {
            q(QueueFrame::Claim(Box::new(h.change(
                ChangeAction::Add,
                MemberRole::Agent,
                &cy,
                Some(&cy_cert),
                &cy,
                Some(&cy_cert),
            ))))
        };
        let fetch = q(QueueFrame::FetchMembership {
            conversation: conv,
            from_epoch: 0,
        });

        // Only Ada is revoked: Ben still answers.
        let ada_only = RevocationList::issue(&clinic.org, 1, now(), &[61]).unwrap();
        assert_eq!(
            m.call(FrameBody::PublishRevocationList(ada_only)).await,
            FrameBody::Ok
        );
        assert_eq!(
            c.call(fetch.clone()).await,
            error(ErrorCode::NotOnConversation),
            "{engine:?}"
        );
        assert_eq!(
            c.call(cy_claim(&h)).await,
            q(QueueFrame::AlreadyClaimed {
                conversation: conv,
                epoch: 3
            }),
            "{engine:?}"
        );
        assert_eq!(membership_len(&mut p, conv).await, 3, "{engine:?}");

        // Both revoked: Cy reads the history and takes over.
        let both = RevocationList::issue(&clinic.org, 2, now(), &[61, 62]).unwrap();
        assert_eq!(
            m.call(FrameBody::PublishRevocationList(both)).await,
            FrameBody::Ok
        );
        assert_eq!(membership_len(&mut c, conv).await, 3, "{engine:?}");
        assert_eq!(
            c.call(cy_claim(&h)).await,
            q(QueueFrame::Claimed {
                conversation: conv,
                epoch: 3
            }),
            "{engine:?}"
        );
        assert_eq!(membership_len(&mut p, conv).await, 4, "{engine:?}");
        // Only the patient and Cy are members now: a message to Ben is refused.
        let send = |to: &Device| {
            q(QueueFrame::ConversationSend {
                conversation: conv,
                epoch: 4,
                envelopes: vec![envelope(to, b"sealed for a member")],
            })
        };
        assert_eq!(
            p.call(send(&ben)).await,
            error(ErrorCode::NotOnConversation),
            "{engine:?}"
        );
        assert!(
            matches!(p.call(send(&cy)).await, FrameBody::Sent(r) if r.len() == 1),
            "{engine:?}"
        );
    }
}

/// Reading a conversation's archive is PHI access: the relay records `ArchiveOpened` (who, which
/// conversation) in its audit chain once per reading (the first page, `from_index` 0), whichever
/// client read it (`docs/conversations.md` §9). A refused read records nothing.
#[tokio::test]
async fn reading_the_archive_is_recorded_in_the_relay_audit_chain() {
    use hushwire_proto::audit::{AuditEvent, AuditRecord, DeviceRef};
    use hushwire_proto::keys::Fingerprint;

    let clinic = Clinic::new();
    let mut relays = clinic.start(&Engine::Sqlite, "archive-audit");
    let url = relays[0].url();
    let (patient, ada, sue) = (Device::new(1, 1), Device::new(2, 1), Device::new(4, 1));
    let ada_cert = clinic.certify(1, &ada, &[Role::Agent]);
    let sue_cert = clinic.certify(3, &sue, &[Role::Supervisor]);
    let mut p = Peer::register(&url, &patient, None).await;
    publish_list(&mut p, &patient, &[1]).await;
    let mut a = Peer::register(&url, &ada, Some(&ada_cert)).await;
    let mut s = Peer::register(&url, &sue, Some(&sue_cert)).await;
    let mut h = History::new(&clinic, 1);
    let open = h.change(
        ChangeAction::Add,
        MemberRole::Patient,
        &patient,
        None,
        &patient,
        None,
    );
    assert_eq!(
        p.call(q(QueueFrame::OpenConversation(Box::new(open.clone()))))
            .await,
        FrameBody::Ok
    );
    h.accept(&open);
    let conv = h.conversation;
    let fetch = |from_index| {
        q(QueueFrame::FetchArchive {
            conversation: conv,
            from_index,
        })
    };
    // Refused (no supervisor role): not a reading.
    assert_eq!(a.call(fetch(0)).await, error(ErrorCode::Forbidden));
    // Two readings from the start, and a later page of one of them.
    for from in [0, 5, 0] {
        assert!(matches!(s.call(fetch(from)).await, FrameBody::Queue(_)));
    }
    drop((p, a, s));
    // Graceful stop: the audit writer flushes what it holds.
    let relay = &mut relays[0];
    relay.stop_gracefully();
    let db = relay.data_dir.join("relay.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let records: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT record FROM audit_records ORDER BY sequence")
            .fetch_all(&pool)
            .await
            .unwrap();
    let opened: Vec<AuditEvent> = records
        .iter()
        .map(|r| AuditRecord::from_bytes(r).unwrap().event)
        .filter(|e| matches!(e, AuditEvent::ArchiveOpened { .. }))
        .collect();
    let by = DeviceRef {
        fingerprint: Fingerprint(sue.address().fingerprint),
        device_id: sue.address().device_id,
    };
    let expected = AuditEvent::ArchiveOpened {
        conversation: conv,
        by,
    };
    assert_eq!(opened, vec![expected, expected]);
}
