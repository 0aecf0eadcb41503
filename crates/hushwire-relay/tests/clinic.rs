//! Roles at the relay (issue 14): a relay started with `--clinic-link` checks agent
//! certificates at registration, lets only a clinic admin suspend devices, order wipes and
//! publish revocation lists, closes the devices concerned (on every instance), and keeps
//! device lists. Each test runs on SQLite and, when it answers, on PostgreSQL with two relay
//! instances (the admin on one, the device concerned on the other).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Client, Device, Engine, RelayProcess, connect};
use ed25519_dalek::SigningKey;
use futures_util::StreamExt as _;
use hushwire_proto::clinic::{
    AgentCertificate, ClinicLink, DeviceList, RevocationList, Role, Roles, WipeCommand,
};
use hushwire_proto::codec::Codec;
use hushwire_proto::relay::{ErrorCode, Frame, FrameBody};
use tokio_tungstenite::tungstenite::Message;

const CLINIC_NAME: &str = "Riverside Clinic";

/// A clinic: its organization key (kept offline by its administrator) and its link.
struct Clinic {
    org: SigningKey,
    link: String,
}

impl Clinic {
    fn new(seed: u8) -> Self {
        let org = SigningKey::from_bytes(&[seed; 32]);
        let link = ClinicLink::issue(&org, CLINIC_NAME, "wss://relay.riverside.example")
            .unwrap()
            .to_string();
        Self { org, link }
    }

    /// A certificate for `device`'s identity, valid from a minute ago for an hour.
    fn certify(&self, serial: u64, device: &Device, roles: &[Role]) -> AgentCertificate {
        self.certify_for(serial, device, roles, now() - 60, now() + 3600)
    }

    fn certify_for(
        &self,
        serial: u64,
        device: &Device,
        roles: &[Role],
        not_before: u64,
        not_after: u64,
    ) -> AgentCertificate {
        AgentCertificate::issue(
            &self.org,
            serial,
            device.identity.clone(),
            "Dr. Ada Okafor",
            Roles::of(roles).unwrap(),
            not_before,
            not_after,
        )
        .unwrap()
    }

    fn revoke(&self, sequence: u64, serials: &[u64]) -> RevocationList {
        RevocationList::issue(&self.org, sequence, now(), serials).unwrap()
    }

    /// The relays of `engine` serving this clinic (plus `extra` flags).
    fn start(&self, engine: &Engine, name: &str, extra: &[&str]) -> Vec<RelayProcess> {
        let mut flags = vec!["--clinic-link", self.link.as_str()];
        flags.extend_from_slice(extra);
        engine.start(name, &flags)
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn error(code: ErrorCode) -> FrameBody {
    FrameBody::Error {
        code,
        retry_after_ms: 0,
    }
}

/// Registers `device` (with a certificate and invite, if given) on a new connection; the
/// connection and the relay's answer.
async fn register(
    url: &str,
    device: &Device,
    certificate: Option<&AgentCertificate>,
) -> (Client, FrameBody) {
    let mut c = connect(url).await;
    let credentials = device.credentials(&c.challenge);
    let answer = c
        .call(FrameBody::Register {
            credentials,
            invite: None,
            certificate: certificate.map(|c| Box::new(c.clone())),
        })
        .await;
    (c, answer)
}

/// Publishes `device`'s identity's device list naming `devices`, and expects `Ok`.
async fn publish_list(c: &mut Client, device: &Device, sequence: u64, devices: &[u32]) {
    let list = DeviceList::issue(&device.signing, &device.identity, sequence, devices).unwrap();
    assert_eq!(
        c.call(FrameBody::PublishDeviceList(list)).await,
        FrameBody::Ok,
        "device list refused"
    );
}

/// Registers and expects `Ok`.
async fn registered(url: &str, device: &Device, certificate: Option<&AgentCertificate>) -> Client {
    let (c, answer) = register(url, device, certificate).await;
    assert_eq!(answer, FrameBody::Ok, "registration refused");
    c
}

/// Authenticates `device` on a new connection; the connection and the relay's answer.
async fn login(url: &str, device: &Device) -> (Client, FrameBody) {
    let mut c = connect(url).await;
    let credentials = device.credentials(&c.challenge);
    let answer = c.call(FrameBody::Authenticate(credentials)).await;
    (c, answer)
}

/// Reads until the relay closes the connection: the frames it sent before, and the close
/// code (`None` if the connection ended without a close frame).
async fn closed(c: &mut Client) -> (Vec<FrameBody>, Option<u16>) {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), c.socket.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => frames.push(Frame::from_bytes(&b).unwrap().body),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (frames, frame.map(|f| u16::from(f.code)));
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return (frames, None),
            Err(_) => panic!("the relay did not close the connection; it sent {frames:?}"),
        }
    }
}

/// The relay's answer to `body`, expected to be an error that closes the connection with
/// `close_code`.
async fn refused_and_closed(c: &mut Client, close_code: Option<u16>) -> Vec<FrameBody> {
    let (frames, code) = closed(c).await;
    assert_eq!(code, close_code, "close code; frames {frames:?}");
    frames
}

#[tokio::test]
async fn a_certified_agent_registers_without_invite_and_its_certificate_is_served() {
    let clinic = Clinic::new(1);
    for engine in Engine::all().await {
        let relays = clinic.start(&engine, "clinic-agent", &["--registration", "invite"]);
        let (a, b) = (relays[0].url(), relays[relays.len() - 1].url());
        assert!(
            relays[0].banner.contains(CLINIC_NAME),
            "the clinic is named at start-up: {}",
            relays[0].banner
        );
        let agent = Device::new(101, 1);
        let certificate = clinic.certify(1, &agent, &[Role::Agent]);
        let _agent_conn = registered(&a, &agent, Some(&certificate)).await;

        // The invite policy still holds for patients.
        let patient = Device::new(102, 1);
        let (_, answer) = register(&a, &patient, None).await;
        assert_eq!(answer, error(ErrorCode::RegistrationRefused), "{engine:?}");

        // Served to anyone authenticated, from every instance.
        let (mut c, answer) = login(&b, &agent).await;
        assert_eq!(answer, FrameBody::Ok);
        assert_eq!(
            c.call(FrameBody::FetchCertificate(agent.address().fingerprint))
                .await,
            FrameBody::Certificate(Some(Box::new(certificate.clone()))),
            "{engine:?}"
        );
        assert_eq!(
            c.call(FrameBody::FetchCertificate([9; 32])).await,
            FrameBody::Certificate(None)
        );
        // A second device of the agent registers with the same certificate, also uninvited,
        // once the agent's device list names it (clinic.md §5.1).
        let second = Device::new(101, 2);
        publish_list(&mut c, &agent, 1, &[1, 2]).await;
        registered(&b, &second, Some(&certificate)).await;
    }
}

#[tokio::test]
async fn patients_and_non_admin_staff_are_forbidden_every_admin_frame() {
    let clinic = Clinic::new(2);
    for engine in Engine::all().await {
        let relays = clinic.start(&engine, "clinic-forbidden", &[]);
        let url = relays[0].url();
        let admin = Device::new(111, 1);
        let admin_cert = clinic.certify(1, &admin, &[Role::Admin]);
        registered(&url, &admin, Some(&admin_cert)).await;
        let agent = Device::new(112, 1);
        let agent_cert = clinic.certify(2, &agent, &[Role::Agent, Role::Supervisor]);
        let mut agent_conn = registered(&url, &agent, Some(&agent_cert)).await;
        let mut patient_conn = registered(&url, &Device::new(113, 1), None).await;
        let bystander = Device::new(114, 1);
        registered(&url, &bystander, None).await;

        let list = clinic.revoke(1, &[2]);
        let wipe = WipeCommand::issue(
            &admin.signing,
            admin_cert.clone(),
            bystander.address(),
            now(),
            [1; 16],
        );
        for (who, conn) in [("patient", &mut patient_conn), ("agent", &mut agent_conn)] {
            for body in [
                FrameBody::PublishRevocationList(list.clone()),
                FrameBody::SuspendDevice(bystander.address()),
                FrameBody::Wipe(Box::new(wipe.clone())),
            ] {
                assert_eq!(
                    conn.call(body.clone()).await,
                    error(ErrorCode::Forbidden),
                    "{who} sent {body:?} on {engine:?}"
                );
            }
            // The connection stays open, and nothing was stored.
            assert_eq!(
                conn.call(FrameBody::FetchRevocationList).await,
                FrameBody::RevocationList(None)
            );
        }
        let (_, answer) = login(&url, &bystander).await;
        assert_eq!(answer, FrameBody::Ok, "not suspended nor wiped");
        let (_, answer) = login(&url, &agent).await;
        assert_eq!(answer, FrameBody::Ok, "not revoked");
    }
}

#[tokio::test]
async fn refused_certificates_register_nothing() {
    let clinic = Clinic::new(3);
    let other_clinic = Clinic::new(4);
    for engine in Engine::all().await {
        let relays = clinic.start(&engine, "clinic-refused", &[]);
        let (a, b) = (relays[0].url(), relays[relays.len() - 1].url());
        let observer = Device::new(120, 1);
        let mut watch = registered(&b, &observer, None).await;

        let forged_by = Device::new(121, 1);
        // Claims the clinic's key but is signed by another.
        let mut forged = other_clinic
            .certify(1, &forged_by, &[Role::Admin])
            .to_bytes();
        forged[2..34].copy_from_slice(&clinic.org.verifying_key().to_bytes());
        let forged = AgentCertificate::from_bytes(&forged).unwrap();
        let foreign_by = Device::new(122, 1);
        let foreign = other_clinic.certify(2, &foreign_by, &[Role::Agent]);
        let expired_by = Device::new(123, 1);
        let expired = clinic.certify_for(3, &expired_by, &[Role::Agent], now() - 7200, now() - 10);
        let early_by = Device::new(124, 1);
        let early = clinic.certify_for(4, &early_by, &[Role::Agent], now() + 3600, now() + 7200);
        let thief = Device::new(125, 1);
        let someone_elses = clinic.certify(5, &observer, &[Role::Admin]);
        for (what, device, certificate) in [
            ("forged", &forged_by, &forged),
            ("another clinic's", &foreign_by, &foreign),
            ("expired", &expired_by, &expired),
            ("not yet valid", &early_by, &early),
            ("another identity's", &thief, &someone_elses),
        ] {
            let (mut c, answer) = register(&a, device, Some(certificate)).await;
            assert_eq!(
                answer,
                error(ErrorCode::CertificateRefused),
                "{what} certificate on {engine:?}"
            );
            refused_and_closed(&mut c, None).await;
            let (_, answer) = login(&b, device).await;
            assert_eq!(
                answer,
                error(ErrorCode::UnknownDevice),
                "{what}: not registered"
            );
            assert_eq!(
                watch
                    .call(FrameBody::FetchCertificate(device.address().fingerprint))
                    .await,
                FrameBody::Certificate(None),
                "{what}: nothing stored"
            );
        }
        assert_eq!(
            watch
                .call(FrameBody::FetchCertificate(observer.address().fingerprint))
                .await,
            FrameBody::Certificate(None),
            "the stolen certificate was not stored for its subject either"
        );

        // A patient's identity never acquires a role: not with a second device, not by renewal.
        let patient = Device::new(126, 1);
        let mut patient_conn = registered(&a, &patient, None).await;
        publish_list(&mut patient_conn, &patient, 1, &[1, 2]).await;
        let patient_cert = clinic.certify(6, &patient, &[Role::Admin]);
        let (_, answer) = register(&b, &Device::new(126, 2), Some(&patient_cert)).await;
        assert_eq!(answer, error(ErrorCode::CertificateRefused));
        assert_eq!(
            patient_conn
                .call(FrameBody::UpdateCertificate(Box::new(patient_cert)))
                .await,
            error(ErrorCode::CertificateRefused)
        );
        assert_eq!(
            patient_conn
                .call(FrameBody::SuspendDevice(observer.address()))
                .await,
            error(ErrorCode::Forbidden)
        );
        assert_eq!(
            watch
                .call(FrameBody::FetchCertificate(patient.address().fingerprint))
                .await,
            FrameBody::Certificate(None)
        );
    }

    // A relay that serves no clinic refuses every certificate (and says so at start-up).
    let plain = RelayProcess::start("clinic-none", &[]);
    assert!(
        plain.banner.contains("no clinic configured"),
        "{}",
        plain.banner
    );
    let agent = Device::new(127, 1);
    let (_, answer) = register(
        &plain.url(),
        &agent,
        Some(&clinic.certify(7, &agent, &[Role::Admin])),
    )
    .await;
    assert_eq!(answer, error(ErrorCode::CertificateRefused));
    let mut patient = registered(&plain.url(), &Device::new(128, 1), None).await;
    assert_eq!(
        patient
            .call(FrameBody::PublishRevocationList(clinic.revoke(1, &[1])))
            .await,
        error(ErrorCode::Forbidden)
    );

    // A link that does not verify stops the relay from starting.
    let dir = common::temp_dir("clinic-bad-link");
    let mut bad = clinic.link.clone();
    bad.pop();
    bad.push(if clinic.link.ends_with('A') { 'B' } else { 'A' });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hushwire-relay"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .args(["--clinic-link", &bad])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("clinic link"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_revocation_list_closes_and_refuses_the_revoked_agent() {
    let clinic = Clinic::new(5);
    for engine in Engine::all().await {
        let relays = clinic.start(&engine, "clinic-revoke", &[]);
        let (a, b) = (relays[0].url(), relays[relays.len() - 1].url());
        let admin = Device::new(131, 1);
        let mut admin_conn =
            registered(&a, &admin, Some(&clinic.certify(1, &admin, &[Role::Admin]))).await;
        let agent = Device::new(132, 1);
        let mut agent_conn =
            registered(&b, &agent, Some(&clinic.certify(7, &agent, &[Role::Agent]))).await;
        let colleague = Device::new(133, 1);
        let mut colleague_conn = registered(
            &b,
            &colleague,
            Some(&clinic.certify(8, &colleague, &[Role::Agent])),
        )
        .await;

        let list = clinic.revoke(2, &[7, 99]);
        assert_eq!(
            admin_conn
                .call(FrameBody::PublishRevocationList(list.clone()))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        // The revoked agent's open connection (on the other instance) is closed.
        let frames = refused_and_closed(&mut agent_conn, Some(4004)).await;
        assert!(
            frames.contains(&error(ErrorCode::CertificateRefused)),
            "{frames:?}"
        );
        // And refused at its next login, on either instance.
        for url in [&a, &b] {
            let (mut c, answer) = login(url, &agent).await;
            assert_eq!(answer, error(ErrorCode::CertificateRefused), "{engine:?}");
            refused_and_closed(&mut c, Some(4004)).await;
        }
        // Others are untouched and see the list.
        assert_eq!(
            colleague_conn.call(FrameBody::FetchRevocationList).await,
            FrameBody::RevocationList(Some(list.clone()))
        );

        // Replays, rollbacks and other clinics' lists are refused; the stored list stays.
        let other = Clinic::new(6);
        for (what, stale) in [
            ("the same list again", list.clone()),
            ("an older list", clinic.revoke(1, &[])),
            ("the same sequence", clinic.revoke(2, &[])),
            ("another clinic's list", other.revoke(3, &[])),
        ] {
            assert_eq!(
                admin_conn
                    .call(FrameBody::PublishRevocationList(stale))
                    .await,
                error(ErrorCode::ListRefused),
                "{what} on {engine:?}"
            );
        }
        assert_eq!(
            colleague_conn.call(FrameBody::FetchRevocationList).await,
            FrameBody::RevocationList(Some(list.clone()))
        );
        let (_, answer) = login(&a, &agent).await;
        assert_eq!(
            answer,
            error(ErrorCode::CertificateRefused),
            "still revoked"
        );

        // A newer list that no longer names the serial lets the agent in again.
        assert_eq!(
            admin_conn
                .call(FrameBody::PublishRevocationList(clinic.revoke(3, &[99])))
                .await,
            FrameBody::Ok
        );
        let (_, answer) = login(&a, &agent).await;
        assert_eq!(answer, FrameBody::Ok);
    }
}

#[tokio::test]
async fn a_suspended_device_is_closed_and_refused() {
    let clinic = Clinic::new(7);
    for engine in Engine::all().await {
        let relays = clinic.start(&engine, "clinic-suspend", &[]);
        let (a, b) = (relays[0].url(), relays[relays.len() - 1].url());
        let admin = Device::new(141, 1);
        let mut admin_conn =
            registered(&a, &admin, Some(&clinic.certify(1, &admin, &[Role::Admin]))).await;
        let patient = Device::new(142, 1);
        let mut patient_conn = registered(&b, &patient, None).await;
        publish_list(&mut patient_conn, &patient, 1, &[1, 2]).await;
        let other_device = Device::new(142, 2);
        let mut other_conn = registered(&b, &other_device, None).await;

        assert_eq!(
            admin_conn
                .call(FrameBody::SuspendDevice(patient.address()))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        let frames = refused_and_closed(&mut patient_conn, Some(4003)).await;
        assert!(frames.contains(&error(ErrorCode::Suspended)), "{frames:?}");
        for url in [&a, &b] {
            let (mut c, answer) = login(url, &patient).await;
            assert_eq!(answer, error(ErrorCode::Suspended), "{engine:?}");
            refused_and_closed(&mut c, Some(4003)).await;
        }
        let (_, answer) = register(&a, &patient, None).await;
        assert_eq!(answer, error(ErrorCode::Suspended), "re-registering");
        // Only that device: the person's other device stays.
        assert_eq!(
            other_conn.call(FrameBody::FetchRevocationList).await,
            FrameBody::RevocationList(None)
        );
    }
}

#[tokio::test]
async fn a_wipe_order_is_handed_over_at_every_login() {
    let clinic = Clinic::new(8);
    for engine in Engine::all().await {
        let relays = clinic.start(&engine, "clinic-wipe", &[]);
        let (a, b) = (relays[0].url(), relays[relays.len() - 1].url());
        let admin = Device::new(151, 1);
        let admin_cert = clinic.certify(1, &admin, &[Role::Admin]);
        let mut admin_conn = registered(&a, &admin, Some(&admin_cert)).await;
        let agent = Device::new(152, 1);
        let agent_cert = clinic.certify(2, &agent, &[Role::Agent]);
        let mut agent_conn = registered(&a, &agent, Some(&agent_cert)).await;
        // The lost device is a staff member's: only those can be wiped.
        let lost = Device::new(153, 1);
        let lost_cert = clinic.certify(3, &lost, &[Role::Agent]);
        let mut lost_conn = registered(&b, &lost, Some(&lost_cert)).await;
        let spared = Device::new(154, 1);
        registered(&b, &spared, None).await;

        // A wipe signed by an agent is refused, whoever sends it, and nothing is stored.
        let by_agent = WipeCommand::issue(
            &agent.signing,
            agent_cert.clone(),
            spared.address(),
            now(),
            [2; 16],
        );
        assert_eq!(
            agent_conn
                .call(FrameBody::Wipe(Box::new(by_agent.clone())))
                .await,
            error(ErrorCode::Forbidden)
        );
        assert_eq!(
            admin_conn.call(FrameBody::Wipe(Box::new(by_agent))).await,
            error(ErrorCode::Forbidden),
            "the admin relaying an agent's order"
        );
        // An order whose signer is not the certificate's subject.
        let forged = WipeCommand::issue(
            &agent.signing,
            admin_cert.clone(),
            spared.address(),
            now(),
            [3; 16],
        );
        assert_eq!(
            admin_conn.call(FrameBody::Wipe(Box::new(forged))).await,
            error(ErrorCode::Forbidden)
        );
        // A patient's device is the patient's: an admin's valid order for it is refused.
        let patients = WipeCommand::issue(
            &admin.signing,
            admin_cert.clone(),
            spared.address(),
            now(),
            [4; 16],
        );
        assert_eq!(
            admin_conn.call(FrameBody::Wipe(Box::new(patients))).await,
            error(ErrorCode::Forbidden),
            "a patient's device"
        );
        // Nor can an admin wipe the device it orders from, or a device that does not exist.
        let own = WipeCommand::issue(
            &admin.signing,
            admin_cert.clone(),
            admin.address(),
            now(),
            [5; 16],
        );
        assert_eq!(
            admin_conn.call(FrameBody::Wipe(Box::new(own))).await,
            error(ErrorCode::Forbidden),
            "the ordering device itself"
        );
        let nobody = WipeCommand::issue(
            &admin.signing,
            admin_cert.clone(),
            Device::new(155, 1).address(),
            now(),
            [6; 16],
        );
        assert_eq!(
            admin_conn.call(FrameBody::Wipe(Box::new(nobody))).await,
            error(ErrorCode::UnknownDevice),
            "an unregistered device"
        );
        let (_, answer) = login(&b, &spared).await;
        assert_eq!(
            answer,
            FrameBody::Ok,
            "spared: nothing stored on {engine:?}"
        );

        let order = WipeCommand::issue(
            &admin.signing,
            admin_cert.clone(),
            lost.address(),
            now(),
            [1; 16],
        );
        assert_eq!(
            admin_conn
                .call(FrameBody::Wipe(Box::new(order.clone())))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        let frames = refused_and_closed(&mut lost_conn, Some(4003)).await;
        assert!(frames.contains(&error(ErrorCode::Suspended)), "{frames:?}");
        // Every later attempt gets the order again (the device may crash mid-erase).
        for url in [&a, &b, &a] {
            let (mut c, answer) = login(url, &lost).await;
            assert_eq!(
                answer,
                FrameBody::Wiped(Box::new(order.clone())),
                "{engine:?}"
            );
            refused_and_closed(&mut c, Some(4003)).await;
        }
        // What the device checks before it erases anything.
        let org = *clinic.link.parse::<ClinicLink>().unwrap().org();
        assert!(order.verify_for(lost.address(), &org, now(), None).is_ok());
    }
}

#[tokio::test]
async fn device_lists_are_published_fetched_and_never_rolled_back() {
    let clinic = Clinic::new(9);
    for engine in Engine::all().await {
        let relays = clinic.start(&engine, "clinic-devlist", &[]);
        let (a, b) = (relays[0].url(), relays[relays.len() - 1].url());
        let person = Device::new(161, 1);
        let mut person_conn = registered(&a, &person, None).await;
        let reader = Device::new(162, 1);
        let mut reader_conn = registered(&b, &reader, None).await;
        let fingerprint = person.address().fingerprint;
        assert_eq!(
            reader_conn
                .call(FrameBody::FetchDeviceList(fingerprint))
                .await,
            FrameBody::DeviceList(None)
        );

        let list = |sequence, devices: &[u32]| {
            DeviceList::issue(&person.signing, &person.identity, sequence, devices).unwrap()
        };
        let second = list(2, &[1, 2]);
        assert_eq!(
            person_conn
                .call(FrameBody::PublishDeviceList(second.clone()))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        assert_eq!(
            reader_conn
                .call(FrameBody::FetchDeviceList(fingerprint))
                .await,
            FrameBody::DeviceList(Some(second.clone()))
        );
        // Replays and rollbacks, and someone else's list, are refused.
        let others = DeviceList::issue(&reader.signing, &reader.identity, 9, &[1]).unwrap();
        for (what, stale) in [
            ("the same list", second.clone()),
            ("an older list", list(1, &[1])),
            ("the same sequence", list(2, &[1])),
            ("another person's list", others),
        ] {
            assert_eq!(
                person_conn.call(FrameBody::PublishDeviceList(stale)).await,
                error(ErrorCode::ListRefused),
                "{what} on {engine:?}"
            );
        }
        // A list the reader sends for the person is refused: only the identity publishes its own.
        assert_eq!(
            reader_conn
                .call(FrameBody::PublishDeviceList(list(5, &[1])))
                .await,
            error(ErrorCode::ListRefused)
        );
        assert_eq!(
            reader_conn
                .call(FrameBody::FetchDeviceList(fingerprint))
                .await,
            FrameBody::DeviceList(Some(second.clone())),
            "unchanged"
        );
        let third = list(3, &[1]);
        assert_eq!(
            person_conn
                .call(FrameBody::PublishDeviceList(third.clone()))
                .await,
            FrameBody::Ok
        );
        assert_eq!(
            reader_conn
                .call(FrameBody::FetchDeviceList(fingerprint))
                .await,
            FrameBody::DeviceList(Some(third))
        );
    }
}

#[tokio::test]
async fn an_expired_certificate_logs_in_without_its_role_until_renewed() {
    let clinic = Clinic::new(10);
    for engine in Engine::all().await {
        let relays = clinic.start(&engine, "clinic-expiry", &[]);
        let (a, b) = (relays[0].url(), relays[relays.len() - 1].url());
        let admin = Device::new(171, 1);
        let short = clinic.certify_for(1, &admin, &[Role::Admin], now() - 60, now() + 3);
        registered(&a, &admin, Some(&short)).await;
        let patient = Device::new(172, 1);
        registered(&b, &patient, None).await;
        tokio::time::sleep(Duration::from_secs(5)).await;

        let (mut c, answer) = login(&b, &admin).await;
        assert_eq!(
            answer,
            FrameBody::Ok,
            "an expired certificate still logs in"
        );
        assert_eq!(
            c.call(FrameBody::SuspendDevice(patient.address())).await,
            error(ErrorCode::Forbidden),
            "but holds no role on {engine:?}"
        );
        // A renewal must be the clinic's, for this identity, and valid now.
        for (what, bad) in [
            (
                "another identity's",
                clinic.certify(2, &patient, &[Role::Admin]),
            ),
            (
                "expired",
                clinic.certify_for(3, &admin, &[Role::Admin], now() - 60, now() - 1),
            ),
            (
                "another clinic's",
                Clinic::new(11).certify(4, &admin, &[Role::Admin]),
            ),
        ] {
            assert_eq!(
                c.call(FrameBody::UpdateCertificate(Box::new(bad))).await,
                error(ErrorCode::CertificateRefused),
                "{what}"
            );
        }
        let renewed = clinic.certify(5, &admin, &[Role::Admin]);
        assert_eq!(
            c.call(FrameBody::UpdateCertificate(Box::new(renewed.clone())))
                .await,
            FrameBody::Ok
        );
        assert_eq!(
            c.call(FrameBody::FetchCertificate(admin.address().fingerprint))
                .await,
            FrameBody::Certificate(Some(Box::new(renewed)))
        );
        assert_eq!(
            c.call(FrameBody::SuspendDevice(patient.address())).await,
            FrameBody::Ok
        );
        let (_, answer) = login(&a, &patient).await;
        assert_eq!(answer, error(ErrorCode::Suspended));
    }
}

#[tokio::test]
async fn every_admin_action_and_certificate_is_in_the_audit_chain() {
    use hushwire_proto::audit::{AuditEvent, AuditRecord, DeviceRef};
    use hushwire_proto::keys::Fingerprint;

    let clinic = Clinic::new(12);
    let mut relay = RelayProcess::start("clinic-audit", &["--clinic-link", &clinic.link]);
    let url = relay.url();
    let admin = Device::new(181, 1);
    let mut admin_conn = registered(
        &url,
        &admin,
        Some(&clinic.certify(21, &admin, &[Role::Admin])),
    )
    .await;
    let (suspended, wiped) = (Device::new(182, 1), Device::new(183, 1));
    registered(&url, &suspended, None).await;
    // Only a staff member's device can be wiped.
    let wiped_cert = clinic.certify(22, &wiped, &[Role::Agent]);
    let mut wiped_conn = registered(&url, &wiped, Some(&wiped_cert)).await;
    let list = DeviceList::issue(&wiped.signing, &wiped.identity, 4, &[1]).unwrap();
    assert_eq!(
        wiped_conn.call(FrameBody::PublishDeviceList(list)).await,
        FrameBody::Ok
    );
    let admin_cert = clinic.certify(21, &admin, &[Role::Admin]);
    for body in [
        FrameBody::SuspendDevice(suspended.address()),
        FrameBody::Wipe(Box::new(WipeCommand::issue(
            &admin.signing,
            admin_cert,
            wiped.address(),
            now(),
            [4; 16],
        ))),
        FrameBody::PublishRevocationList(clinic.revoke(6, &[5])),
    ] {
        assert_eq!(admin_conn.call(body).await, FrameBody::Ok);
    }
    drop((admin_conn, wiped_conn));
    // Graceful stop: the audit writer flushes what it holds.
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
    let events: Vec<AuditEvent> = records
        .iter()
        .map(|r| AuditRecord::from_bytes(r).unwrap().event)
        .collect();
    let device = |d: &Device| DeviceRef {
        fingerprint: Fingerprint(d.address().fingerprint),
        device_id: d.device_id,
    };
    for expected in [
        AuditEvent::CertificateAccepted {
            device: device(&admin),
            serial: 21,
            roles: Role::Admin.bit(),
        },
        AuditEvent::DeviceListPublished {
            identity: Fingerprint(wiped.address().fingerprint),
            sequence: 4,
        },
        AuditEvent::DeviceSuspended {
            device: device(&suspended),
            by: device(&admin),
        },
        AuditEvent::WipeOrdered {
            device: device(&wiped),
            by: device(&admin),
        },
        AuditEvent::RevocationListPublished {
            sequence: 6,
            by: device(&admin),
        },
    ] {
        assert!(events.contains(&expected), "{expected:?} not in {events:?}");
    }
    relay.kill();
}

/// Starts the relay binary with `args` and `env`, returns what it printed up to its listening
/// line, and stops it.
fn start_up_banner(args: &[&str], env: &[(&str, &str)]) -> String {
    use std::io::{BufRead as _, BufReader};
    let dir = common::temp_dir("clinic-config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hushwire-relay"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .args(args)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("listening on") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

#[test]
fn the_clinic_link_is_read_from_the_environment_and_the_config_file() {
    let clinic = Clinic::new(13);
    let fingerprint = clinic
        .link
        .parse::<ClinicLink>()
        .unwrap()
        .org()
        .fingerprint()
        .to_string();
    for env_name in ["HUSHWIRE_RELAY_CLINIC_LINK", "HUSHWIRE_CLINIC_LINK"] {
        let banner = start_up_banner(&[], &[(env_name, clinic.link.as_str())]);
        assert!(
            banner.contains(CLINIC_NAME) && banner.contains(&fingerprint),
            "{env_name}: {banner}"
        );
    }
    let file = common::temp_dir("clinic-config-file").join("relay.toml");
    std::fs::write(&file, format!("clinic_link = \"{}\"\n", clinic.link)).unwrap();
    let banner = start_up_banner(&["--config", &file.display().to_string()], &[]);
    assert!(banner.contains(CLINIC_NAME), "config file: {banner}");
    let banner = start_up_banner(&[], &[]);
    assert!(banner.contains("no clinic configured"), "{banner}");
}

#[tokio::test]
async fn concurrent_publishes_of_one_sequence_store_exactly_one_list() {
    let clinic = Clinic::new(14);
    for engine in Engine::all().await {
        let relays = clinic.start(&engine, "clinic-race", &[]);
        let (a, b) = (relays[0].url(), relays[relays.len() - 1].url());
        let admin = Device::new(191, 1);
        let cert = clinic.certify(1, &admin, &[Role::Admin]);
        let mut first = registered(&a, &admin, Some(&cert)).await;
        publish_list(&mut first, &admin, 1, &[1, 2]).await;
        let second_device = Device::new(191, 2);
        let mut second = registered(&b, &second_device, Some(&cert)).await;
        for sequence in 1..=5u64 {
            // Two different lists with the same sequence, one from each instance at once.
            let (x, y) = (
                clinic.revoke(sequence, &[100 + sequence]),
                clinic.revoke(sequence, &[200 + sequence]),
            );
            let (ax, ay) = tokio::join!(
                first.call(FrameBody::PublishRevocationList(x.clone())),
                second.call(FrameBody::PublishRevocationList(y.clone())),
            );
            let winner = match (&ax, &ay) {
                (FrameBody::Ok, refused) if *refused == error(ErrorCode::ListRefused) => x,
                (refused, FrameBody::Ok) if *refused == error(ErrorCode::ListRefused) => y,
                other => panic!("exactly one publish must win on {engine:?}: {other:?}"),
            };
            assert_eq!(
                first.call(FrameBody::FetchRevocationList).await,
                FrameBody::RevocationList(Some(winner))
            );
        }
    }
}
