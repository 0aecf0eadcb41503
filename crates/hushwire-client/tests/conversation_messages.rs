//! Messages in clinic conversations (`docs/conversations.md` §2, §7, §8) through a real relay in
//! this process: fan-out to the verified members, receipts per member, a recall, a hand-off to
//! a named agent with a note only staff see, a removed agent that receives nothing sent after
//! its removal, a read-only supervisor, and the clinic's archive opened with its key.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::clinic::{Org, staff};
use common::{WAIT, clinic_relay, device};
use hushwire::archive::ArchiveSecretKey;
use hushwire::payload::{Payload, ReceiptStatus};
use hushwire_client::{ClaimOutcome, Client, ClientError, ConversationMessageView, Event};
use hushwire_proto::clinic::Role;
use hushwire_proto::conversation::{ArchivePolicy, ConversationId};

const CLINIC: &str = "Lakeside Clinic";

// Plain agents, without the supervisor role: they cannot open the archive.
const AGENT_ROLES: &[Role] = &[Role::Agent];

/// Polls `client`'s view of `conversation` until `done` holds (or fails after [`WAIT`]).
async fn wait_until(
    client: &Client,
    conversation: ConversationId,
    what: &str,
    done: impl Fn(&[ConversationMessageView]) -> bool,
) -> Vec<ConversationMessageView> {
    let start = Instant::now();
    loop {
        let messages = client
            .conversation_messages(conversation)
            .await
            .unwrap_or_default();
        if done(&messages) {
            return messages;
        }
        // Generous: both runs of the conversation share a 2-core machine with the rest of the
        // suite, and a first message to a device waits for its prekey bundle and certificate.
        assert!(
            start.elapsed() < 3 * WAIT,
            "timed out waiting for {what}: {messages:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn text(m: &ConversationMessageView) -> String {
    String::from_utf8(m.content.to_vec()).unwrap()
}

fn has_text(messages: &[ConversationMessageView], wanted: &str) -> bool {
    messages.iter().any(|m| text(m) == wanted)
}

#[tokio::test]
async fn members_talk_a_recall_shows_everywhere_a_handoff_note_stays_with_staff_and_the_archive_opens()
 {
    let dir = tempfile::tempdir().unwrap();
    let org = Org::new(7, CLINIC);
    let relay = clinic_relay(&dir.path().join("relay"), &org).await;
    let url = relay.url();
    clinic_conversation(dir.path(), &org, [url.as_str(); 4]).await;
    drop(relay);
}

/// The same across two relay instances sharing PostgreSQL: the patient and Ben on one, Ada and
/// the supervisor on the other, so every message, push, claim and hand-off crosses instances.
#[tokio::test]
async fn the_same_conversation_across_two_relay_instances_on_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    let org = Org::new(8, CLINIC);
    let Some(relays) = common::clinic_relays_on_postgres(dir.path(), &org).await else {
        return;
    };
    let (a, b) = (relays[0].url(), relays[1].url());
    clinic_conversation(
        dir.path(),
        &org,
        [a.as_str(), b.as_str(), a.as_str(), b.as_str()],
    )
    .await;
    drop(relays);
}

/// The conversation both tests run; `urls`: where the patient, Ada, Ben and Sue register.
async fn clinic_conversation(dir: &std::path::Path, org: &Org, urls: [&str; 4]) {
    let [patient_url, ada_url, ben_url, sue_url] = urls;
    let (ada, _) = staff(dir, ada_url, org, "Dr. Ada Okafor", 1, AGENT_ROLES).await;
    let (ben, _) = staff(dir, ben_url, org, "Ben Marsh", 2, AGENT_ROLES).await;
    let (sue, _) = staff(
        dir,
        sue_url,
        org,
        "Sue Park",
        3,
        &[Role::Supervisor, Role::Admin],
    )
    .await;
    let (patient, _) = device(dir, "patient").await;
    patient.register(patient_url, None).await.unwrap();
    patient.add_clinic(&org.link).await.unwrap();
    for c in [&ada, &ben, &sue, &patient] {
        c.connect().await.unwrap();
        c.sync(WAIT).await.unwrap();
    }
    ben.set_on_duty(true).await.unwrap();

    // The clinic's archive key: published by an admin, verified by every sender.
    let archive_key = ArchiveSecretKey::from_secret_bytes([0x42; 32]).unwrap();
    let policy = ArchivePolicy::issue(&org.key, 1, *archive_key.public(), 30).unwrap();
    sue.publish_archive_policy(&policy).await.unwrap();
    let forged = ArchivePolicy::issue(
        &ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
        2,
        *archive_key.public(),
        30,
    )
    .unwrap();
    assert!(
        matches!(
            sue.publish_archive_policy(&forged).await,
            Err(ClientError::Conversation(_))
        ),
        "a policy not signed by the clinic is refused before it is sent"
    );

    let conversation = patient.open_conversation().await.unwrap();
    // Written while waiting in the queue: to the clinic, so the agent who claims reads it.
    patient
        .send_text_to_conversation(conversation, "Hello, is anyone there?")
        .await
        .unwrap();
    patient.sync(WAIT).await.unwrap();
    assert_eq!(
        ada.claim(conversation).await.unwrap(),
        ClaimOutcome::Claimed
    );
    let waiting = wait_until(
        &ada,
        conversation,
        "the message written while waiting",
        |m| has_text(m, "Hello, is anyone there?"),
    )
    .await;
    assert_eq!(waiting[0].sender_shown, "patient");
    assert_eq!(waiting[0].shared_by.as_deref(), Some("patient"));

    // The patient writes; the agent reads it and the patient sees "delivered", then "read".
    let mut patient_events = patient.events();
    let hello = patient
        .send_text_to_conversation(conversation, "I have a rash since Monday")
        .await
        .unwrap();
    let seen = wait_until(&ada, conversation, "the patient's message", |m| {
        has_text(m, "I have a rash since Monday")
    })
    .await;
    assert_eq!(seen[0].sender_shown, "patient");
    assert!(!seen[0].outgoing);
    wait_until(&patient, conversation, "a delivered receipt", |m| {
        m.iter()
            .any(|m| m.id == hello && m.receipts.iter().any(|r| r.2 == ReceiptStatus::Delivered))
    })
    .await;
    ada.mark_conversation_read(conversation, &[hello])
        .await
        .unwrap();
    wait_until(&patient, conversation, "a read receipt", |m| {
        m.iter()
            .any(|m| m.id == hello && m.receipts.iter().any(|r| r.2 == ReceiptStatus::Read))
    })
    .await;

    // The agent answers; the patient sees who answers, from the verified certificate.
    let wrong = ada
        .send_text_to_conversation(conversation, "Take 400 mg ibuprofen (wrong patient)")
        .await
        .unwrap();
    let answer = wait_until(&patient, conversation, "the agent's answer", |m| {
        m.iter().any(|m| m.id == wrong)
    })
    .await;
    let answer = answer.iter().find(|m| m.id == wrong).unwrap();
    assert_eq!(
        answer.sender_shown,
        format!("Dr. Ada Okafor — verified agent of {CLINIC}")
    );

    // A recall shows on every device as recalled, by whom; the content is kept, not erased.
    ada.recall(conversation, wrong).await.unwrap();
    let recalled = wait_until(&patient, conversation, "the recall", |m| {
        m.iter().any(|m| m.id == wrong && m.recalled.is_some())
    })
    .await;
    let recalled = recalled.iter().find(|m| m.id == wrong).unwrap();
    assert_eq!(
        recalled.recalled.as_ref().unwrap().0,
        format!("Dr. Ada Okafor — verified agent of {CLINIC}")
    );
    assert!(!recalled.content.is_empty(), "kept for the record");
    // Only the sender recalls; a recall twice is refused; nothing changes.
    assert!(matches!(
        patient.recall(conversation, wrong).await,
        Err(ClientError::Conversation(_))
    ));
    assert!(matches!(
        ada.recall(conversation, wrong).await,
        Err(ClientError::Conversation(_))
    ));

    // Ada hands the conversation to Ben with a note the patient never sees.
    let ben_fingerprint = ben.identity_key().await.fingerprint();
    ada.handoff(
        conversation,
        Some(ben_fingerprint),
        Some("penicillin allergy noted"),
        true,
    )
    .await
    .unwrap();
    let ben_view = wait_until(&ben, conversation, "the hand-off note", |m| {
        m.iter().any(|m| m.staff_note)
    })
    .await;
    let note = ben_view.iter().find(|m| m.staff_note).unwrap();
    assert_eq!(text(note), "penicillin allergy noted");
    // Ada shared the conversation so far with Ben: he reads it, marked as shared by her, and
    // the recalled message is not in it.
    let shared = wait_until(&ben, conversation, "the shared history", |m| {
        has_text(m, "I have a rash since Monday") && has_text(m, "Hello, is anyone there?")
    })
    .await;
    let rash = shared
        .iter()
        .find(|m| text(m) == "I have a rash since Monday")
        .unwrap();
    assert_eq!(rash.sender_shown, "patient");
    assert_eq!(
        rash.shared_by.as_deref(),
        Some(format!("Dr. Ada Okafor — verified agent of {CLINIC}").as_str())
    );
    assert!(!has_text(&shared, "Take 400 mg ibuprofen (wrong patient)"));
    // The patient is told who answers now.
    let deadline = Instant::now() + WAIT;
    let mut told = Vec::new();
    let left = |told: &[String]| {
        told.iter()
            .any(|l| l.contains("Dr. Ada Okafor") && l.contains("left"))
    };
    while !left(&told) && Instant::now() < deadline {
        if let Ok(Ok(Event::ConversationMembershipChanged { changes, .. })) =
            tokio::time::timeout(Duration::from_millis(200), patient_events.recv()).await
        {
            told.extend(changes);
        }
    }
    assert!(
        told.iter()
            .any(|l| l.contains("Ben Marsh — verified agent of Lakeside Clinic joined")),
        "{told:?}"
    );
    assert!(
        told.iter()
            .any(|l| l.contains("Dr. Ada Okafor") && l.contains("left"))
    );

    // The patient writes again: Ben reads it; Ada, removed, receives nothing.
    patient
        .send_text_to_conversation(conversation, "Thanks, is Dr. Okafor still there?")
        .await
        .unwrap();
    wait_until(&ben, conversation, "the message after the hand-off", |m| {
        has_text(m, "Thanks, is Dr. Okafor still there?")
    })
    .await;
    ben.send_text_to_conversation(conversation, "I am Ben, I have your notes")
        .await
        .unwrap();
    wait_until(&patient, conversation, "Ben's answer", |m| {
        has_text(m, "I am Ben, I have your notes")
    })
    .await;
    ada.sync(WAIT).await.unwrap();
    let ada_view = ada.conversation_messages(conversation).await.unwrap();
    assert!(
        !has_text(&ada_view, "Thanks, is Dr. Okafor still there?")
            && !has_text(&ada_view, "I am Ben, I have your notes"),
        "a removed agent gets nothing sent after its removal"
    );
    assert!(matches!(
        ada.send_text_to_conversation(conversation, "still here")
            .await,
        Err(ClientError::Conversation(_))
    ));
    // The patient never holds the staff note.
    let patient_view = patient.conversation_messages(conversation).await.unwrap();
    assert!(patient_view.iter().all(|m| !m.staff_note));
    assert!(!has_text(&patient_view, "penicillin allergy noted"));

    // A supervisor joins read-only: reads what follows, writes nothing.
    sue.join_read_only(conversation).await.unwrap();
    patient
        .send_text_to_conversation(conversation, "The rash is spreading")
        .await
        .unwrap();
    wait_until(&sue, conversation, "a message after joining", |m| {
        has_text(m, "The rash is spreading")
    })
    .await;
    assert!(
        !has_text(
            &sue.conversation_messages(conversation).await.unwrap(),
            "I have a rash since Monday"
        ),
        "no history without an explicit share"
    );
    assert!(matches!(
        sue.send_text_to_conversation(conversation, "hi").await,
        Err(ClientError::Conversation(_))
    ));

    // The clinic's archive: every message and the recall, sealed by their senders, each from a
    // member at its epoch.
    for c in [&patient, &ada, &ben] {
        let start = Instant::now();
        while c.archive_pending().await.unwrap() > 0 {
            assert!(start.elapsed() < WAIT, "archive copies not filed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let entries = sue.open_archive(conversation, &archive_key).await.unwrap();
    let texts: Vec<String> = entries
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::ConversationMessage(m) => Some(String::from_utf8(m.content.to_vec()).unwrap()),
            _ => None,
        })
        .collect();
    for wanted in [
        "I have a rash since Monday",
        "Take 400 mg ibuprofen (wrong patient)",
        "Thanks, is Dr. Okafor still there?",
        "I am Ben, I have your notes",
        "The rash is spreading",
    ] {
        assert!(
            texts.iter().any(|t| t == wanted),
            "{wanted} not archived: {texts:?}"
        );
    }
    assert!(
        entries
            .iter()
            .any(|e| matches!(&e.payload, Payload::Recall { id, .. } if *id == wrong)),
        "the recall is in the archive"
    );
    assert!(entries.iter().all(|e| e.member_at_epoch), "{entries:?}");
    // Ben's certificate is revoked: the member list stops calling him verified.
    assert!(
        patient
            .import_revocation_list(&org.revoke(1, &[2]))
            .await
            .unwrap()
    );
    let members = patient.members(conversation).await.unwrap();
    let ben_shown = &members
        .iter()
        .find(|m| m.fingerprint == ben_fingerprint)
        .unwrap()
        .shown;
    assert!(
        ben_shown.starts_with("Ben Marsh — agent certificate REVOKED by Lakeside Clinic"),
        "{ben_shown}"
    );
    // Only supervisors read the archive; another key opens nothing.
    assert!(ben.open_archive(conversation, &archive_key).await.is_err());
    let other = ArchiveSecretKey::from_secret_bytes([0x43; 32]).unwrap();
    assert!(sue.open_archive(conversation, &other).await.is_err());
}
