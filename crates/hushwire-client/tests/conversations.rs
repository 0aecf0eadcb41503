//! Clinic conversations (`docs/conversations.md`) against a real relay in this process that
//! serves a clinic: a patient opens a conversation, agents see it in the queue, racing claims
//! end with exactly one agent on it, and every member's verified list names the agent from its
//! certificate.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::clinic::{Org, staff};
use common::{WAIT, clinic_relay, device};
use hushwire_client::{ClaimOutcome, ClientError};
use hushwire_proto::clinic::Role;
use hushwire_proto::conversation::MemberRole;

const CLINIC: &str = "Lakeside Clinic";

// Plain agents: the relay lets an agent read a waiting conversation's history, which a claim
// needs (its head's hash).
const AGENT_ROLES: &[Role] = &[Role::Agent];

#[tokio::test]
async fn a_patient_opens_one_of_two_racing_agents_claims_hands_back_and_a_supervisor_reads_along() {
    let dir = tempfile::tempdir().unwrap();
    let org = Org::new(1, CLINIC);
    let relay = clinic_relay(&dir.path().join("relay"), &org).await;
    let url = relay.url();
    let (ada, _) = staff(dir.path(), &url, &org, "Dr. Ada Okafor", 1, AGENT_ROLES).await;
    let (ben, _) = staff(dir.path(), &url, &org, "Ben Marsh", 2, AGENT_ROLES).await;
    let (patient, _) = device(dir.path(), "patient").await;
    patient.register(&url, None).await.unwrap();
    patient.add_clinic(&org.link).await.unwrap();
    for c in [&ada, &ben, &patient] {
        c.connect().await.unwrap();
        c.sync(WAIT).await.unwrap();
    }
    ada.set_on_duty(true).await.unwrap();
    ben.set_on_duty(true).await.unwrap();

    // Staff do not open conversations; an agent cannot claim what does not exist.
    assert!(matches!(
        ada.open_conversation().await,
        Err(ClientError::Conversation(_))
    ));

    let conversation = patient.open_conversation().await.unwrap();
    let queue = ada.conversation_queue().await.unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].conversation, conversation);
    assert_eq!(queue[0].epoch, 1);

    let (a, b) = tokio::join!(ada.claim(conversation), ben.claim(conversation));
    let outcomes = [a.unwrap(), b.unwrap()];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == ClaimOutcome::Claimed)
            .count(),
        1,
        "exactly one claim wins: {outcomes:?}"
    );
    let (winner, loser, name) = if outcomes[0] == ClaimOutcome::Claimed {
        (&ada, &ben, "Dr. Ada Okafor")
    } else {
        (&ben, &ada, "Ben Marsh")
    };
    assert!(ada.conversation_queue().await.unwrap().is_empty());

    // The loser's second try is refused before anything is sent: an agent is on it.
    let again = loser.claim(conversation).await;
    assert!(
        matches!(&again, Err(ClientError::Conversation(why)) if why.contains("already claimed")),
        "{again:?}"
    );

    // Every member verifies the same history and names the agent from its certificate.
    for member in [&patient, winner] {
        let members = member.members(conversation).await.unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].role, MemberRole::Patient);
        assert_eq!(members[1].role, MemberRole::Agent);
        assert_eq!(
            members[1].shown,
            format!("{name} — verified agent of {CLINIC}")
        );
    }

    // The winner hands the conversation back to the queue; the other agent takes it.
    winner.leave(conversation).await.unwrap();
    let queue = loser.conversation_queue().await.unwrap();
    assert_eq!(queue.len(), 1, "back in the queue");
    assert_eq!(
        loser.claim(conversation).await.unwrap(),
        ClaimOutcome::Claimed
    );
    // The agent who left is no longer on it: leaving again is refused, nothing sent.
    assert!(matches!(
        winner.leave(conversation).await,
        Err(ClientError::Conversation(_))
    ));

    // A supervisor joins read-only, is listed as such, and leaves.
    let (sue, _) = staff(dir.path(), &url, &org, "Sue Park", 3, &[Role::Supervisor]).await;
    sue.connect().await.unwrap();
    sue.sync(WAIT).await.unwrap();
    assert!(
        matches!(
            sue.claim(conversation).await,
            Err(ClientError::Conversation(_))
        ),
        "a supervisor cannot claim"
    );
    sue.join_read_only(conversation).await.unwrap();
    let members = patient.members(conversation).await.unwrap();
    assert_eq!(members.len(), 3);
    assert_eq!(members[2].role, MemberRole::Supervisor);
    assert_eq!(
        members[2].shown,
        format!("Sue Park — verified supervisor of {CLINIC}")
    );
    sue.leave(conversation).await.unwrap();
    assert_eq!(patient.members(conversation).await.unwrap().len(), 2);
    drop(relay);
}
