//! Messages in clinic conversations (`docs/conversations.md` §2, §7, §8) through a real relay in
//! this process: a patient on two devices, two agents racing to claim, fan-out to every device
//! of the verified members, receipts per member, a recall on every device, a hand-off to an
//! agent on two devices with a note only staff see, a removed agent that receives nothing sent
//! after its removal, a read-only supervisor, and the clinic's archive opened with its key.

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
    clinic_conversation(dir.path(), &org, [url.as_str(); 5]).await;
    drop(relay);
}

/// The same across two relay instances sharing PostgreSQL: the patient and Ben on one, Ada,
/// Cy and the supervisor on the other, so every message, push, claim (Ben's and Cy's race) and
/// hand-off crosses instances.
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
        [a.as_str(), b.as_str(), a.as_str(), b.as_str(), b.as_str()],
    )
    .await;
    drop(relays);
}

/// A second device of the person `of` (`hushwire devices link`, then `init --link CODE`),
/// connected and synced. It registers where `of` is registered (the code names that relay).
async fn second_device(dir: &std::path::Path, of: &Client, name: &str) -> Client {
    let code = of.link_device().await.unwrap().code;
    let device = Client::join(
        &dir.join(format!("{name}.db")),
        &common::secret(),
        common::options(),
        &code,
    )
    .await
    .unwrap();
    device.connect().await.unwrap();
    device.sync(WAIT).await.unwrap();
    device
}

/// A conversation `patient` opens and writes `first` in while it waits, which `agent` claims
/// and reads.
async fn claimed_conversation(patient: &Client, agent: &Client, first: &str) -> ConversationId {
    let conversation = patient.open_conversation().await.unwrap();
    patient
        .send_text_to_conversation(conversation, first)
        .await
        .unwrap();
    patient.sync(WAIT).await.unwrap();
    assert_eq!(
        agent.claim(conversation).await.unwrap(),
        ClaimOutcome::Claimed
    );
    wait_until(agent, conversation, "the waiting message", |m| {
        has_text(m, first)
    })
    .await;
    conversation
}

/// The conversation both tests run; `urls`: where the patient, Ada, Ben, Cy and Sue register
/// (second devices register beside their first). The patient writes from a laptop and a phone;
/// Ben and Cy race to claim and exactly one wins; the winner answers, recalls a wrong answer
/// and hands off to Ada, who works on two devices; the winner, removed, gets nothing sent
/// after; Sue joins read-only and opens the archive.
async fn clinic_conversation(dir: &std::path::Path, org: &Org, urls: [&str; 5]) {
    let [patient_url, ada_url, ben_url, cy_url, sue_url] = urls;
    let (ada, _) = staff(dir, ada_url, org, "Dr. Ada Okafor", 1, AGENT_ROLES).await;
    let (ben, _) = staff(dir, ben_url, org, "Ben Marsh", 2, AGENT_ROLES).await;
    let (cy, _) = staff(dir, cy_url, org, "Cy Moreno", 4, AGENT_ROLES).await;
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
    for c in [&ada, &ben, &cy, &sue, &patient] {
        c.connect().await.unwrap();
        c.sync(WAIT).await.unwrap();
    }
    // The patient's phone and Ada's tablet: every message goes to every device of a member.
    let phone = second_device(dir, &patient, "patient-phone").await;
    let tablet = second_device(dir, &ada, "ada-tablet").await;
    ben.set_on_duty(true).await.unwrap();
    cy.set_on_duty(true).await.unwrap();

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
    // Ben and Cy race to claim it: exactly one wins, the other is told and changes nothing.
    let (by_ben, by_cy) = tokio::join!(ben.claim(conversation), cy.claim(conversation));
    let outcomes = [by_ben.unwrap(), by_cy.unwrap()];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == ClaimOutcome::Claimed)
            .count(),
        1,
        "exactly one claim wins: {outcomes:?}"
    );
    let (first, first_name, loser) = if outcomes[0] == ClaimOutcome::Claimed {
        (&ben, "Ben Marsh", &cy)
    } else {
        (&cy, "Cy Moreno", &ben)
    };
    let first_shown = format!("{first_name} — verified agent of {CLINIC}");
    assert!(matches!(
        loser
            .send_text_to_conversation(conversation, "I have it too")
            .await,
        Err(ClientError::Conversation(_))
    ));
    let waiting = wait_until(
        first,
        conversation,
        "the message written while waiting",
        |m| has_text(m, "Hello, is anyone there?"),
    )
    .await;
    assert_eq!(waiting[0].sender_shown, "patient");
    assert_eq!(waiting[0].shared_by.as_deref(), Some("patient"));
    // The patient's own other device holds what the laptop wrote, as sent.
    let on_phone = wait_until(&phone, conversation, "the laptop's message", |m| {
        has_text(m, "Hello, is anyone there?")
    })
    .await;
    assert!(on_phone[0].outgoing, "{on_phone:?}");

    // The patient writes from the phone; the agent reads it and the phone sees "delivered",
    // then "read"; the laptop holds it too.
    let hello = phone
        .send_text_to_conversation(conversation, "I have a rash since Monday")
        .await
        .unwrap();
    let seen = wait_until(first, conversation, "the patient's message", |m| {
        has_text(m, "I have a rash since Monday")
    })
    .await;
    let rash = seen
        .iter()
        .find(|m| text(m) == "I have a rash since Monday")
        .unwrap();
    assert_eq!(rash.sender_shown, "patient");
    assert!(!rash.outgoing);
    wait_until(&patient, conversation, "the phone's message", |m| {
        m.iter().any(|m| m.id == hello && m.outgoing)
    })
    .await;
    wait_until(&phone, conversation, "a delivered receipt", |m| {
        m.iter()
            .any(|m| m.id == hello && m.receipts.iter().any(|r| r.2 == ReceiptStatus::Delivered))
    })
    .await;
    first
        .mark_conversation_read(conversation, &[hello])
        .await
        .unwrap();
    wait_until(&phone, conversation, "a read receipt", |m| {
        m.iter()
            .any(|m| m.id == hello && m.receipts.iter().any(|r| r.2 == ReceiptStatus::Read))
    })
    .await;

    // The agent answers; both of the patient's devices show who answers, from the verified
    // certificate.
    let mut patient_events = patient.events();
    let wrong = first
        .send_text_to_conversation(conversation, "Take 400 mg ibuprofen (wrong patient)")
        .await
        .unwrap();
    for device in [&patient, &phone] {
        let answer = wait_until(device, conversation, "the agent's answer", |m| {
            m.iter().any(|m| m.id == wrong)
        })
        .await;
        let answer = answer.iter().find(|m| m.id == wrong).unwrap();
        assert_eq!(answer.sender_shown, first_shown);
    }

    // A recall shows on every device as recalled, by whom; the content is kept, not erased.
    first.recall(conversation, wrong).await.unwrap();
    for device in [&patient, &phone] {
        let recalled = wait_until(device, conversation, "the recall", |m| {
            m.iter().any(|m| m.id == wrong && m.recalled.is_some())
        })
        .await;
        let recalled = recalled.iter().find(|m| m.id == wrong).unwrap();
        assert_eq!(recalled.recalled.as_ref().unwrap().0, first_shown);
        assert!(!recalled.content.is_empty(), "kept for the record");
    }
    // Only the sender recalls; a recall twice is refused; nothing changes.
    assert!(matches!(
        patient.recall(conversation, wrong).await,
        Err(ClientError::Conversation(_))
    ));
    assert!(matches!(
        first.recall(conversation, wrong).await,
        Err(ClientError::Conversation(_))
    ));

    // The winner hands the conversation to Ada with a note the patient never sees. Both of
    // Ada's devices get the note and the conversation so far, marked as shared by the winner,
    // without the recalled message.
    let ada_fingerprint = ada.identity_key().await.fingerprint();
    first
        .handoff(
            conversation,
            Some(ada_fingerprint),
            Some("penicillin allergy noted"),
            true,
        )
        .await
        .unwrap();
    for device in [&ada, &tablet] {
        let view = wait_until(device, conversation, "the hand-off note", |m| {
            m.iter().any(|m| m.staff_note)
        })
        .await;
        let note = view.iter().find(|m| m.staff_note).unwrap();
        assert_eq!(text(note), "penicillin allergy noted");
        let shared = wait_until(device, conversation, "the shared history", |m| {
            has_text(m, "I have a rash since Monday") && has_text(m, "Hello, is anyone there?")
        })
        .await;
        let rash = shared
            .iter()
            .find(|m| text(m) == "I have a rash since Monday")
            .unwrap();
        assert_eq!(rash.sender_shown, "patient");
        assert_eq!(rash.shared_by.as_deref(), Some(first_shown.as_str()));
        assert!(!has_text(&shared, "Take 400 mg ibuprofen (wrong patient)"));
    }
    // The patient is told who answers now.
    let deadline = Instant::now() + WAIT;
    let mut told = Vec::new();
    let left = |told: &[String]| {
        told.iter()
            .any(|l| l.contains(first_name) && l.contains("left"))
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
            .any(|l| l.contains("Dr. Ada Okafor — verified agent of Lakeside Clinic joined")),
        "{told:?}"
    );
    assert!(left(&told), "{told:?}");
    // The same notices are kept until shown, whichever command received them (`recv` shows
    // each once): the phone, which showed nothing yet, holds the hand-off and the recall.
    let deadline = Instant::now() + WAIT;
    let (mut lines, mut recalls) = (Vec::new(), Vec::new());
    while !(lines.iter().any(|l: &String| l.contains("Dr. Ada Okafor")) && left(&lines))
        && Instant::now() < deadline
    {
        for notice in phone
            .take_conversation_notices(Some(conversation))
            .await
            .unwrap()
        {
            match notice.event {
                Event::ConversationMembershipChanged { changes, .. } => lines.extend(changes),
                Event::ConversationMessageRecalled { id, by, .. } => recalls.push((id, by)),
                other => panic!("not a notice: {other:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(left(&lines), "{lines:?}");
    assert_eq!(recalls, vec![(wrong, first_shown.clone())]);
    assert!(
        phone
            .take_conversation_notices(None)
            .await
            .unwrap()
            .is_empty(),
        "each notice is taken once"
    );

    // The patient writes again: both of Ada's devices read it; the first agent, removed,
    // receives nothing. Ada answers from her tablet; her other device holds it as sent.
    patient
        .send_text_to_conversation(conversation, "Thanks, is the first agent still there?")
        .await
        .unwrap();
    for device in [&ada, &tablet] {
        wait_until(
            device,
            conversation,
            "the message after the hand-off",
            |m| has_text(m, "Thanks, is the first agent still there?"),
        )
        .await;
    }
    let answer = tablet
        .send_text_to_conversation(conversation, "I am Dr. Okafor, I have your notes")
        .await
        .unwrap();
    for device in [&patient, &phone] {
        let view = wait_until(device, conversation, "Ada's answer", |m| {
            m.iter().any(|m| m.id == answer)
        })
        .await;
        let answer = view.iter().find(|m| m.id == answer).unwrap();
        assert_eq!(
            answer.sender_shown,
            format!("Dr. Ada Okafor — verified agent of {CLINIC}")
        );
    }
    wait_until(&ada, conversation, "the tablet's answer", |m| {
        m.iter().any(|m| m.id == answer && m.outgoing)
    })
    .await;
    first.sync(WAIT).await.unwrap();
    let first_view = first.conversation_messages(conversation).await.unwrap();
    assert!(
        !has_text(&first_view, "Thanks, is the first agent still there?")
            && !has_text(&first_view, "I am Dr. Okafor, I have your notes"),
        "a removed agent gets nothing sent after its removal"
    );
    assert!(matches!(
        first
            .send_text_to_conversation(conversation, "still here")
            .await,
        Err(ClientError::Conversation(_))
    ));
    // The patient's devices never hold the staff note.
    for device in [&patient, &phone] {
        let view = device.conversation_messages(conversation).await.unwrap();
        assert!(view.iter().all(|m| !m.staff_note));
        assert!(!has_text(&view, "penicillin allergy noted"));
    }

    // A supervisor joins read-only: reads what follows, writes nothing.
    sue.join_read_only(conversation).await.unwrap();
    phone
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
    for c in [&patient, &phone, first, &ada, &tablet] {
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
        "Hello, is anyone there?",
        "I have a rash since Monday",
        "Take 400 mg ibuprofen (wrong patient)",
        "Thanks, is the first agent still there?",
        "I am Dr. Okafor, I have your notes",
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
    // Written while the patient's device is offline and has not learned of the revocation
    // yet: queued for Ada's devices too. Once the list is held those entries are dropped, not
    // sent (rule 9: a revoked agent gets nothing new), and Sue still gets the message.
    patient.disconnect().await;
    patient
        .send_text_to_conversation(conversation, "Written before the list reached me")
        .await
        .unwrap();
    // Ada's certificate is revoked: the member list stops calling her verified, and the
    // patient is told no verified agent is on the conversation (§4.3 rule 9).
    let mut patient_events = patient.events();
    // Issued in a later second than Ada's claim: a list revokes changes made at or after the
    // second it is issued in (rule 7), so one issued in the claim's own second would make the
    // claim itself unverifiable, which is not what this test is about (and, with a fast relay,
    // often happened).
    common::clinic::next_second().await;
    let revoked = org.revoke(1, &[1]);
    assert!(patient.import_revocation_list(&revoked).await.unwrap());
    let deadline = Instant::now() + WAIT;
    let mut told = false;
    while !told && Instant::now() < deadline {
        if let Ok(Ok(Event::ConversationUnanswered { conversation: c })) =
            tokio::time::timeout(Duration::from_millis(200), patient_events.recv()).await
        {
            told = c == conversation;
        }
    }
    assert!(told, "the patient is told no verified agent is on it");
    patient.connect().await.unwrap();
    patient.sync(WAIT).await.unwrap();
    wait_until(
        &sue,
        conversation,
        "the message written before the list",
        |m| has_text(m, "Written before the list reached me"),
    )
    .await;
    ada.sync(WAIT).await.unwrap();
    // Nothing is left queued for Ada's two devices (it used to stay, retried for ever).
    assert_eq!(
        patient.outbox_len().await.unwrap(),
        0,
        "entries for a revoked agent stayed"
    );
    assert!(
        !has_text(
            &ada.conversation_messages(conversation).await.unwrap(),
            "Written before the list reached me"
        ),
        "an entry queued for a revoked agent was sent"
    );
    let members = patient.members(conversation).await.unwrap();
    let ada_now = &members
        .iter()
        .find(|m| m.fingerprint == ada_fingerprint)
        .unwrap()
        .shown;
    assert!(
        ada_now.starts_with("Dr. Ada Okafor — agent certificate REVOKED by Lakeside Clinic"),
        "{ada_now}"
    );
    // Only supervisors read the archive; another key opens nothing.
    assert!(
        first
            .open_archive(conversation, &archive_key)
            .await
            .is_err()
    );
    let other = ArchiveSecretKey::from_secret_bytes([0x43; 32]).unwrap();
    assert!(sue.open_archive(conversation, &other).await.is_err());

    // The clinic publishes the list (Sue is an admin): the conversation is back in the queue,
    // and the agent who lost the first race takes it over. From then on the patient's messages
    // reach the new agent, with what the patient wrote since Ada was revoked, and never Ada's
    // devices: she is no longer a member.
    sue.publish_revocation_list(&revoked).await.unwrap();
    patient
        .send_text_to_conversation(conversation, "Hello? Is anyone still there?")
        .await
        .unwrap();
    patient.sync(WAIT).await.unwrap();
    // The supervisor, still on it, reads it (the patient encrypts to no revoked device).
    wait_until(
        &sue,
        conversation,
        "the message after the revocation",
        |m| has_text(m, "Hello? Is anyone still there?"),
    )
    .await;
    let mut patient_events = patient.events();
    assert_eq!(
        loser.claim(conversation).await.unwrap(),
        ClaimOutcome::Claimed
    );
    // The patient is told who took over from whom.
    let mut told = Vec::new();
    let deadline = Instant::now() + WAIT;
    let took_over = |told: &[String]| {
        told.iter()
            .any(|l| l.contains("taking over from Dr. Ada Okafor"))
    };
    while !took_over(&told) && Instant::now() < deadline {
        if let Ok(Ok(Event::ConversationMembershipChanged { changes, .. })) =
            tokio::time::timeout(Duration::from_millis(200), patient_events.recv()).await
        {
            told.extend(changes);
        }
    }
    assert!(took_over(&told), "{told:?}");
    let loser_fingerprint = loser.identity_key().await.fingerprint();
    let start = Instant::now();
    loop {
        let members = patient.members(conversation).await.unwrap();
        if members.iter().any(|m| m.fingerprint == loser_fingerprint) {
            assert!(
                members.iter().all(|m| m.fingerprint != ada_fingerprint),
                "the revoked agent left with the takeover: {members:?}"
            );
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "the takeover did not reach the patient"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    patient
        .send_text_to_conversation(conversation, "My rash is worse today")
        .await
        .unwrap();
    wait_until(
        loser,
        conversation,
        "the patient's message after the takeover",
        |m| has_text(m, "My rash is worse today") && has_text(m, "Hello? Is anyone still there?"),
    )
    .await;
    // The revoked agent cannot hand over: the patient's device shared the conversation so far
    // with the agent taking over, without the recalled message.
    let taken_over = wait_until(
        loser,
        conversation,
        "the conversation so far, shared by the patient",
        |m| has_text(m, "Thanks, is the first agent still there?"),
    )
    .await;
    assert!(!has_text(
        &taken_over,
        "Take 400 mg ibuprofen (wrong patient)"
    ));
    let shared = taken_over
        .iter()
        .find(|m| text(m) == "Thanks, is the first agent still there?")
        .unwrap();
    assert_eq!(shared.shared_by.as_deref(), Some("patient"));
}

/// The clinic's retention on a staff device (§7.4): a conversation whose last activity is older
/// than the archive policy's `retention_days` is deleted from the device, unless under a legal
/// hold; a patient's device keeps its own copy.
#[tokio::test]
async fn retention_deletes_old_conversations_from_staff_devices_except_under_a_legal_hold() {
    let dir = tempfile::tempdir().unwrap();
    let org = Org::new(9, CLINIC);
    let relay = clinic_relay(&dir.path().join("relay"), &org).await;
    let url = relay.url();
    let (ada, _) = staff(dir.path(), &url, &org, "Dr. Ada Okafor", 1, AGENT_ROLES).await;
    let (sue, _) = staff(
        dir.path(),
        &url,
        &org,
        "Sue Park",
        2,
        &[Role::Supervisor, Role::Admin],
    )
    .await;
    let mut patients = Vec::new();
    for name in ["patient-1", "patient-2"] {
        let (patient, _) = device(dir.path(), name).await;
        patient.register(&url, None).await.unwrap();
        patient.add_clinic(&org.link).await.unwrap();
        patients.push(patient);
    }
    for c in [&ada, &sue].into_iter().chain(&patients) {
        c.connect().await.unwrap();
        c.sync(WAIT).await.unwrap();
    }
    let day_ms = 86_400_000u64;
    let now = || {
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap()
    };
    // No policy yet: no retention period, so nothing is deleted and the agent is told why.
    assert!(matches!(
        ada.apply_retention(now() + 365 * day_ms).await,
        Err(ClientError::Conversation(why)) if why.contains("no archive policy")
    ));
    let archive_key = ArchiveSecretKey::from_secret_bytes([0x42; 32]).unwrap();
    let policy = ArchivePolicy::issue(&org.key, 1, *archive_key.public(), 30).unwrap();
    sue.publish_archive_policy(&policy).await.unwrap();

    let mut conversations = Vec::new();
    for patient in &patients {
        conversations.push(claimed_conversation(patient, &ada, "My prescription ran out").await);
    }
    let [kept, dropped] = [conversations[0], conversations[1]];
    let listed = ada.conversations().await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|s| !s.legal_hold && s.last_activity_ms <= now())
    );
    // Looking at a conversation is not activity: it does not postpone retention.
    ada.members(kept).await.unwrap();
    ada.refresh_membership(kept).await.unwrap();
    assert_eq!(ada.conversations().await.unwrap(), listed);
    ada.set_legal_hold(kept, true).await.unwrap();

    // Within the period nothing goes; after it, the one without a hold does.
    let report = ada.apply_retention(now() + 29 * day_ms).await.unwrap();
    assert_eq!(
        (
            report.retention_days,
            report.deleted.len(),
            report.held,
            report.kept
        ),
        (30, 0, 0, 2)
    );
    let report = ada.apply_retention(now() + 31 * day_ms).await.unwrap();
    assert_eq!(report.deleted, vec![dropped]);
    assert_eq!((report.held, report.kept), (1, 0));
    let listed = ada.conversations().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.id, s.legal_hold))
            .collect::<Vec<_>>(),
        vec![(kept, true)]
    );
    assert!(
        !has_text(
            &ada.conversation_messages(dropped).await.unwrap_or_default(),
            "My prescription ran out"
        ),
        "the deleted conversation's messages are gone"
    );
    assert!(has_text(
        &ada.conversation_messages(kept).await.unwrap(),
        "My prescription ran out"
    ));

    // A patient's copy is the patient's: the clinic's retention does not apply to it.
    assert!(matches!(
        patients[1].apply_retention(now() + 31 * day_ms).await,
        Err(ClientError::Conversation(why)) if why.contains("staff")
    ));
    assert!(has_text(
        &patients[1].conversation_messages(dropped).await.unwrap(),
        "My prescription ran out"
    ));
    assert!(matches!(
        patients[1].set_legal_hold(dropped, true).await,
        Err(ClientError::Conversation(why)) if why.contains("staff")
    ));
    // A hold on a conversation not held here is refused; lifting the hold lets it go.
    assert!(matches!(
        ada.set_legal_hold(dropped, true).await,
        Err(ClientError::Conversation(_))
    ));
    ada.set_legal_hold(kept, false).await.unwrap();
    let report = ada.apply_retention(now() + 31 * day_ms).await.unwrap();
    assert_eq!(report.deleted, vec![kept]);
    assert!(ada.conversations().await.unwrap().is_empty());
    drop(relay);
}

/// A patient links a phone after opening a conversation: the phone is added to it, reads what
/// follows and writes in it; removing the phone takes it off again, and the agent's verified
/// history (opened while the old list was in force) still verifies.
#[tokio::test]
async fn a_device_linked_or_removed_after_opening_joins_or_leaves_the_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let org = Org::new(10, CLINIC);
    let relay = clinic_relay(&dir.path().join("relay"), &org).await;
    let url = relay.url();
    let (ada, _) = staff(dir.path(), &url, &org, "Dr. Ada Okafor", 1, AGENT_ROLES).await;
    let (patient, _) = device(dir.path(), "patient").await;
    patient.register(&url, None).await.unwrap();
    patient.add_clinic(&org.link).await.unwrap();
    for c in [&ada, &patient] {
        c.connect().await.unwrap();
        c.sync(WAIT).await.unwrap();
    }
    let conversation = claimed_conversation(&patient, &ada, "Is the clinic open today?").await;

    let phone = second_device(dir.path(), &patient, "patient-phone").await;
    let patient_devices = |members: &[hushwire_client::ConversationMember]| {
        members
            .iter()
            .find(|m| m.role == hushwire_proto::conversation::MemberRole::Patient)
            .map(|m| m.devices.clone())
            .unwrap()
    };
    assert_eq!(
        patient_devices(&patient.members(conversation).await.unwrap()),
        vec![1, 2]
    );
    ada.refresh_membership(conversation).await.unwrap();
    ada.send_text_to_conversation(conversation, "Yes, until 6 pm")
        .await
        .unwrap();
    wait_until(
        &phone,
        conversation,
        "the agent's answer on the new phone",
        |m| has_text(m, "Yes, until 6 pm"),
    )
    .await;
    phone
        .send_text_to_conversation(conversation, "Thanks, from my phone")
        .await
        .unwrap();
    wait_until(&ada, conversation, "the phone's message", |m| {
        has_text(m, "Thanks, from my phone")
    })
    .await;

    // The phone is removed: the conversation drops it, and the agent's history still verifies
    // although its first change names a device no longer on the patient's list.
    patient.remove_device(2).await.unwrap();
    assert_eq!(
        patient_devices(&patient.members(conversation).await.unwrap()),
        vec![1]
    );
    ada.refresh_membership(conversation).await.unwrap();
    assert_eq!(
        patient_devices(&ada.members(conversation).await.unwrap()),
        vec![1]
    );
    ada.send_text_to_conversation(conversation, "Anything else?")
        .await
        .unwrap();
    wait_until(&patient, conversation, "the agent's next message", |m| {
        has_text(m, "Anything else?")
    })
    .await;

    // Ada hands it back to the queue; the patient writes while no agent is on it, then goes
    // offline; Ben claims it. At its next connection the patient's device learns of the claim
    // and shares what it wrote while waiting: nothing written to the clinic is lost.
    let (ben, _) = staff(dir.path(), &url, &org, "Ben Marsh", 2, AGENT_ROLES).await;
    ben.connect().await.unwrap();
    ben.sync(WAIT).await.unwrap();
    ada.leave(conversation).await.unwrap();
    patient.refresh_membership(conversation).await.unwrap();
    patient
        .send_text_to_conversation(conversation, "Hello? Is anyone still there?")
        .await
        .unwrap();
    patient.sync(WAIT).await.unwrap();
    patient.disconnect().await;
    assert_eq!(
        ben.claim(conversation).await.unwrap(),
        ClaimOutcome::Claimed
    );
    patient.connect().await.unwrap();
    patient.sync(WAIT).await.unwrap();
    patient.refresh_membership(conversation).await.unwrap();
    wait_until(
        &ben,
        conversation,
        "the message written while handed back",
        |m| has_text(m, "Hello? Is anyone still there?"),
    )
    .await;
    drop(relay);
}
