//! Clinics (`docs/client.md` §8) against a real relay in this process that serves a clinic:
//! a certified agent shown as verified to a patient who pinned the clinic, a revoked agent and
//! another clinic's agent refused with the reason, revocation lists that never roll back, and
//! an administrator's wipe erasing the target's store.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};

use common::clinic::{Org, staff};
use common::{WAIT, clinic_relay, device, options, secret};
use hushwire_client::{AgentStatus, Client, ClientError, ContactId, Event};
use hushwire_proto::clinic::{CertificateError, ClinicLink, Role, Roles};
use hushwire_proto::relay::ErrorCode;

const CLINIC: &str = "Lakeside Clinic";

/// A patient who pinned `link` and added `agent` as a contact, connected and synced.
async fn patient_with(
    dir: &Path,
    url: &str,
    link: &ClinicLink,
    agent: &Client,
) -> (Client, ContactId, PathBuf) {
    let (patient, path) = device(dir, "patient").await;
    patient.register(url, None).await.unwrap();
    patient.add_clinic(link).await.unwrap();
    let id = patient
        .add_contact("ada", agent.address().await, false)
        .await
        .unwrap();
    patient.connect().await.unwrap();
    patient.sync(WAIT).await.unwrap();
    (patient, id, path)
}

#[tokio::test]
async fn a_certified_agent_is_a_verified_agent_of_the_clinic_to_a_patient() {
    let dir = tempfile::tempdir().unwrap();
    let org = Org::new(1, CLINIC);
    let relay = clinic_relay(&dir.path().join("relay"), &org).await;
    let url = relay.url();
    let (agent, _) = staff(dir.path(), &url, &org, "Dr. Ada Okafor", 1, &[Role::Agent]).await;
    assert_eq!(agent.own_certificate().await.unwrap().serial(), 1);
    assert_eq!(agent.clinic().await.unwrap().name, CLINIC);

    let (patient, _) = device(dir.path(), "patient").await;
    patient.register(&url, None).await.unwrap();
    patient.add_clinic(&org.link).await.unwrap();
    let ada = patient
        .add_contact("ada", agent.address().await, false)
        .await
        .unwrap();
    assert_eq!(
        patient.agent_status(ada).await.unwrap(),
        AgentStatus::Unchecked,
        "nothing is known before the relay was asked"
    );
    let mut events = patient.events();
    patient.connect().await.unwrap();
    patient.sync(WAIT).await.unwrap();
    let expected = AgentStatus::Verified {
        name: "Dr. Ada Okafor".into(),
        clinic: CLINIC.into(),
        roles: Roles::of(&[Role::Agent]).unwrap(),
    };
    let contact = patient.contact("ada").await.unwrap();
    assert_eq!(contact.agent, expected);
    let mut announced = false;
    while let Ok(event) = events.try_recv() {
        if let Event::AgentStatusChanged { contact, status } = event {
            announced |= contact == ada && status == expected;
        }
    }
    assert!(announced, "the change is reported as an event");
    patient
        .send_text(ada, "Is my prescription ready?")
        .await
        .unwrap();
    patient.sync(WAIT).await.unwrap();

    // The agent sees the patient, who holds no certificate, as a patient.
    agent.connect().await.unwrap();
    agent.sync(WAIT).await.unwrap();
    let unread = agent.unread().await.unwrap();
    assert_eq!(unread.len(), 1);
    assert_eq!(
        agent.agent_status(unread[0].contact).await.unwrap(),
        AgentStatus::NotAnAgent
    );
}

#[tokio::test]
async fn a_revoked_agent_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let org = Org::new(2, CLINIC);
    let relay = clinic_relay(&dir.path().join("relay"), &org).await;
    let url = relay.url();
    let (agent, _) = staff(dir.path(), &url, &org, "Dr. Ada", 7, &[Role::Agent]).await;
    let (admin, _) = staff(
        dir.path(),
        &url,
        &org,
        "Sam Admin",
        8,
        &[Role::Agent, Role::Admin],
    )
    .await;
    let (patient, ada, _) = patient_with(dir.path(), &url, &org.link, &agent).await;
    assert!(matches!(
        patient.agent_status(ada).await.unwrap(),
        AgentStatus::Verified { .. }
    ));

    // An agent without the admin role cannot publish; the admin can.
    let list = org.revoke(1, &[7]);
    agent.connect().await.unwrap();
    agent.wait_connected(WAIT).await.unwrap();
    assert!(matches!(
        agent.publish_revocation_list(&list).await,
        Err(ClientError::Relay(ErrorCode::Forbidden))
    ));
    agent.disconnect().await;
    admin.connect().await.unwrap();
    admin.wait_connected(WAIT).await.unwrap();
    admin.publish_revocation_list(&list).await.unwrap();
    admin.disconnect().await;

    // The patient's next connection fetches the list: the agent is refused, with the reason.
    patient.disconnect().await;
    patient.connect().await.unwrap();
    patient.sync(WAIT).await.unwrap();
    assert_eq!(patient.clinic().await.unwrap().revocation_sequence, Some(1));
    let revoked = CertificateError::Revoked { serial: 7 };
    assert_eq!(
        patient.agent_status(ada).await.unwrap(),
        AgentStatus::Refused(revoked)
    );
    let queued = patient.outbox_len().await.unwrap();
    match patient.send_text(ada, "hello?").await {
        Err(ClientError::AgentNotVerified { contact, reason }) => {
            assert_eq!(contact, "ada");
            assert_eq!(reason, revoked);
        }
        other => panic!("expected AgentNotVerified, got {other:?}"),
    }
    assert_eq!(
        patient.outbox_len().await.unwrap(),
        queued,
        "nothing was queued"
    );
    let text = ClientError::AgentNotVerified {
        contact: "ada".into(),
        reason: revoked,
    }
    .to_string();
    assert!(text.contains("revoked certificate #7"), "{text}");
}

#[tokio::test]
async fn a_certificate_from_another_clinic_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ours = Org::new(3, CLINIC);
    let theirs = Org::new(4, "Other Clinic");

    // On the agent's side: a certificate of another clinic than the link's is refused before
    // anything is sent, and nothing is pinned.
    let relay_ours = clinic_relay(&dir.path().join("relay-ours"), &ours).await;
    let (agent, _) = device(dir.path(), "mallory").await;
    let foreign = theirs
        .certify(1, &agent, "Dr. Mallory", &[Role::Agent])
        .await;
    assert!(matches!(
        agent
            .register_agent(&relay_ours.url(), None, &foreign, Some(&ours.link))
            .await,
        Err(ClientError::OwnCertificateRefused(
            CertificateError::WrongClinic
        ))
    ));
    assert!(agent.clinic().await.is_none());
    assert!(agent.relay_url().await.is_none(), "not registered");
    // Without a link to check it against, the relay refuses it.
    assert!(matches!(
        agent
            .register_agent(&relay_ours.url(), None, &foreign, Some(&theirs.link))
            .await,
        Err(ClientError::Relay(ErrorCode::CertificateRefused))
    ));
    assert!(
        agent.clinic().await.is_none(),
        "nothing stored after the refusal"
    );
    drop(agent);

    // On a patient's side: the other clinic's relay serves its own agent's certificate; a
    // patient who pinned our clinic sees it refused, and sends nothing to it.
    let relay_theirs = clinic_relay(&dir.path().join("relay-theirs"), &theirs).await;
    let url = relay_theirs.url();
    let (other_agent, _) = staff(dir.path(), &url, &theirs, "Dr. Other", 1, &[Role::Agent]).await;
    let (patient, id, _) = patient_with(dir.path(), &url, &ours.link, &other_agent).await;
    assert_eq!(
        patient.agent_status(id).await.unwrap(),
        AgentStatus::Refused(CertificateError::WrongClinic)
    );
    assert!(matches!(
        patient.send_text(id, "hi").await,
        Err(ClientError::AgentNotVerified {
            reason: CertificateError::WrongClinic,
            ..
        })
    ));
    // Another clinic's link cannot replace the pinned one.
    assert!(matches!(
        patient.add_clinic(&theirs.link).await,
        Err(ClientError::OtherClinicPinned { .. })
    ));
    assert_eq!(patient.clinic().await.unwrap().name, CLINIC);
}

#[tokio::test]
async fn an_older_revocation_list_does_not_replace_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let org = Org::new(5, CLINIC);
    let relay = clinic_relay(&dir.path().join("relay"), &org).await;
    let url = relay.url();
    let (agent, _) = staff(dir.path(), &url, &org, "Dr. Ada", 1, &[Role::Agent]).await;
    let (admin, _) = staff(dir.path(), &url, &org, "Sam Admin", 2, &[Role::Admin]).await;
    // The relay holds list 1 (nothing revoked).
    admin.connect().await.unwrap();
    admin.wait_connected(WAIT).await.unwrap();
    admin
        .publish_revocation_list(&org.revoke(1, &[]))
        .await
        .unwrap();
    // The relay refuses a rollback too.
    assert!(matches!(
        admin.publish_revocation_list(&org.revoke(1, &[2])).await,
        Err(ClientError::Relay(ErrorCode::ListRefused))
    ));
    admin.disconnect().await;

    let (patient, ada, _) = patient_with(dir.path(), &url, &org.link, &agent).await;
    assert_eq!(patient.clinic().await.unwrap().revocation_sequence, Some(1));
    // The clinic hands the patient list 3, revoking the agent (the relay has not got it).
    assert!(
        patient
            .import_revocation_list(&org.revoke(3, &[1]))
            .await
            .unwrap()
    );
    assert_eq!(
        patient.agent_status(ada).await.unwrap(),
        AgentStatus::Refused(CertificateError::Revoked { serial: 1 })
    );
    // Older and equal sequences are ignored, even when they revoke less.
    assert!(
        !patient
            .import_revocation_list(&org.revoke(2, &[]))
            .await
            .unwrap()
    );
    assert!(
        !patient
            .import_revocation_list(&org.revoke(3, &[]))
            .await
            .unwrap()
    );
    // Another clinic's list is refused.
    let other = Org::new(6, "Other Clinic");
    assert!(matches!(
        patient.import_revocation_list(&other.revoke(9, &[])).await,
        Err(ClientError::ForeignRevocationList)
    ));
    // The relay's list 1, fetched at the next connection, does not replace list 3.
    patient.disconnect().await;
    patient.connect().await.unwrap();
    patient.sync(WAIT).await.unwrap();
    let clinic = patient.clinic().await.unwrap();
    assert_eq!(clinic.revocation_sequence, Some(3));
    assert_eq!(clinic.revoked_serials, vec![1]);
    assert_eq!(
        patient.agent_status(ada).await.unwrap(),
        AgentStatus::Refused(CertificateError::Revoked { serial: 1 })
    );
    // And it survives reopening the store.
    patient.disconnect().await;
    let path = dir.path().join("patient.db");
    drop(patient);
    let reopened = Client::open(&path, &secret(), options()).await.unwrap();
    assert_eq!(
        reopened.clinic().await.unwrap().revocation_sequence,
        Some(3)
    );
}

#[tokio::test]
async fn an_admins_wipe_erases_the_targets_store() {
    let dir = tempfile::tempdir().unwrap();
    let org = Org::new(7, CLINIC);
    let relay = clinic_relay(&dir.path().join("relay"), &org).await;
    let url = relay.url();
    let (agent, _) = staff(dir.path(), &url, &org, "Dr. Ada", 1, &[Role::Agent]).await;
    let (admin, _) = staff(dir.path(), &url, &org, "Sam Admin", 2, &[Role::Admin]).await;
    let (patient, _, _) = patient_with(dir.path(), &url, &org.link, &agent).await;
    patient.disconnect().await;
    // The lost device: a staff laptop at the front desk (only staff devices can be wiped).
    let (laptop, _) = staff(dir.path(), &url, &org, "Front Desk", 3, &[Role::Agent]).await;
    let path = dir.path().join("Front-Desk.db");
    assert!(path.exists());

    // Only an admin may order a wipe: the agent's client refuses before sending anything.
    agent.connect().await.unwrap();
    agent.wait_connected(WAIT).await.unwrap();
    assert!(matches!(
        agent.wipe_device(laptop.address().await).await,
        Err(ClientError::OwnCertificateRefused(
            CertificateError::MissingRole(Role::Admin)
        ))
    ));
    agent.disconnect().await;

    admin.connect().await.unwrap();
    admin.wait_connected(WAIT).await.unwrap();
    // A patient's device is the patient's, and an admin cannot wipe its own device.
    for (target, what) in [
        (patient.address().await, "patient"),
        (admin.address().await, "itself"),
    ] {
        assert!(
            matches!(
                admin.wipe_device(target).await,
                Err(ClientError::WipeTargetRefused(_))
            ),
            "{what}"
        );
    }
    admin.wipe_device(laptop.address().await).await.unwrap();
    admin.disconnect().await;

    let mut events = laptop.events();
    laptop.connect().await.unwrap();
    match laptop.sync(WAIT).await {
        Err(ClientError::Wiped { by, clinic }) => {
            assert_eq!(by, "Sam Admin");
            assert_eq!(clinic, CLINIC);
        }
        other => panic!("expected Wiped, got {other:?}"),
    }
    let mut reported = false;
    while let Ok(event) = events.try_recv() {
        reported |= matches!(event, Event::Wiped { .. });
    }
    assert!(reported, "the wipe is reported as an event");
    assert!(matches!(
        laptop.stop_error(),
        Some(ClientError::Wiped { .. })
    ));
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        assert!(!Path::new(&file).exists(), "{file:?} is gone");
    }
    drop(laptop);
    assert!(matches!(
        Client::open(&path, &secret(), options()).await,
        Err(ClientError::NotInitialized(_))
    ));
}

#[tokio::test]
async fn a_renewed_certificate_is_installed_and_one_for_someone_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let org = Org::new(8, CLINIC);
    let relay = clinic_relay(&dir.path().join("relay"), &org).await;
    let url = relay.url();
    let (agent, _) = staff(dir.path(), &url, &org, "Dr. Ada", 1, &[Role::Agent]).await;
    let (stranger, _) = device(dir.path(), "stranger").await;
    let theirs = org.certify(5, &stranger, "Eve", &[Role::Agent]).await;
    assert!(matches!(
        agent.install_certificate(&theirs).await,
        Err(ClientError::CertificateNotOwn { ref name }) if name == "Eve"
    ));
    let renewed = org
        .certify(2, &agent, "Dr. Ada Okafor", &[Role::Agent])
        .await;
    assert!(
        agent.install_certificate(&renewed).await.is_err(),
        "installing needs a connection"
    );
    assert_eq!(agent.own_certificate().await.unwrap().serial(), 1);
    agent.connect().await.unwrap();
    agent.wait_connected(WAIT).await.unwrap();
    agent.install_certificate(&renewed).await.unwrap();
    assert_eq!(agent.own_certificate().await.unwrap().serial(), 2);
    agent.disconnect().await;

    // A patient who checks the agent now sees the renewed name.
    let (patient, ada, _) = patient_with(dir.path(), &url, &org.link, &agent).await;
    assert!(matches!(
        patient.agent_status(ada).await.unwrap(),
        AgentStatus::Verified { ref name, .. } if name == "Dr. Ada Okafor"
    ));
}
