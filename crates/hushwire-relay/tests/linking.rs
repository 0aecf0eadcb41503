//! Device linking at the relay (`docs/clinic.md` §5.1, `docs/relay-protocol.md` §3.5):
//! provisioning slots, further devices admitted only by their person's device list, and devices
//! removed from it refused. SQLite, and two relay instances sharing PostgreSQL where it answers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{Client, Device, Engine, RelayProcess, connect};
use futures_util::StreamExt as _;
use hushwire_proto::clinic::DeviceList;
use hushwire_proto::codec::Codec;
use hushwire_proto::relay::{ErrorCode, Frame, FrameBody};
use tokio_tungstenite::tungstenite::Message;

fn error(code: ErrorCode) -> FrameBody {
    FrameBody::Error {
        code,
        retry_after_ms: 0,
    }
}

/// Registers `device` (with `invite`, if given) on a new connection; the connection and the
/// relay's answer.
async fn register(url: &str, device: &Device, invite: Option<&str>) -> (Client, FrameBody) {
    let mut c = connect(url).await;
    let credentials = device.credentials(&c.challenge);
    let answer = c
        .call(FrameBody::Register {
            credentials,
            invite: invite.map(|t| t.as_bytes().to_vec()),
            certificate: None,
        })
        .await;
    (c, answer)
}

/// Authenticates `device` on a new connection; the connection and the relay's answer.
async fn login(url: &str, device: &Device) -> (Client, FrameBody) {
    let mut c = connect(url).await;
    let credentials = device.credentials(&c.challenge);
    let answer = c.call(FrameBody::Authenticate(credentials)).await;
    (c, answer)
}

/// `device`'s identity's device list naming `devices`.
fn list(device: &Device, sequence: u64, devices: &[u32]) -> DeviceList {
    DeviceList::issue(&device.signing, &device.identity, sequence, devices).unwrap()
}

/// Reads until the relay closes: the frames sent before, the close code and reason.
async fn closed(c: &mut Client) -> (Vec<FrameBody>, Option<(u16, String)>) {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), c.socket.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => frames.push(Frame::from_bytes(&b).unwrap().body),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (
                    frames,
                    frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                );
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return (frames, None),
            Err(_) => panic!("the relay did not close the connection; it sent {frames:?}"),
        }
    }
}

/// Expects the relay to refuse the device as removed from its list: `Suspended`, close 4003.
async fn removed_and_closed(c: &mut Client, what: &str) {
    let (frames, close) = closed(c).await;
    assert!(
        frames.contains(&error(ErrorCode::Suspended)),
        "{what}: {frames:?}"
    );
    assert_eq!(
        close,
        Some((4003, "removed from its device list".to_owned())),
        "{what}"
    );
}

fn put(slot: [u8; 32], sealed: &[u8]) -> FrameBody {
    FrameBody::PutProvisioning {
        slot,
        sealed: sealed.to_vec(),
    }
}

/// An invite token from the relay's own `invite` command, run with the relays' settings (so
/// that it lands in the same SQLite file or PostgreSQL schema).
fn invite(relay: &RelayProcess) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hushwire-relay"))
        .args(&relay.args)
        .arg("invite")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn a_provisioning_message_is_taken_once_even_before_login() {
    for engine in Engine::all().await {
        let relays = engine.start("link-once", &[]);
        let (a, b) = (relays[0].url(), relays[relays.len() - 1].url());
        let old = Device::new(201, 1);
        let (mut old_conn, answer) = register(&a, &old, None).await;
        assert_eq!(answer, FrameBody::Ok);
        let sealed = vec![0x01, 7, 7, 7, 9];
        assert_eq!(
            old_conn.call(put([1; 32], &sealed)).await,
            FrameBody::Ok,
            "{engine:?}"
        );
        // A slot already filed is refused, and the first message stays.
        assert_eq!(
            old_conn.call(put([1; 32], b"other")).await,
            error(ErrorCode::Forbidden)
        );

        // The new device has no identity at the relay: it takes before any login, on any
        // instance, and only once.
        let mut new_conn = connect(&b).await;
        assert_eq!(
            new_conn.call(FrameBody::TakeProvisioning([1; 32])).await,
            FrameBody::Provisioning(Some(sealed.clone())),
            "{engine:?}"
        );
        assert_eq!(
            new_conn.call(FrameBody::TakeProvisioning([1; 32])).await,
            FrameBody::Provisioning(None),
            "a second take on {engine:?}"
        );
        let mut other = connect(&a).await;
        assert_eq!(
            other.call(FrameBody::TakeProvisioning([1; 32])).await,
            FrameBody::Provisioning(None),
            "a take on the other instance"
        );
        assert_eq!(
            other.call(FrameBody::TakeProvisioning([2; 32])).await,
            FrameBody::Provisioning(None),
            "a slot never filed"
        );
        // An authenticated device may take as well; a taken slot may be filed again.
        assert_eq!(old_conn.call(put([1; 32], b"again")).await, FrameBody::Ok);
        assert_eq!(
            old_conn.call(FrameBody::TakeProvisioning([1; 32])).await,
            FrameBody::Provisioning(Some(b"again".to_vec()))
        );
        // Only a device may file: before login it is refused like any request.
        let mut anonymous = connect(&a).await;
        assert_eq!(
            anonymous.call(put([3; 32], b"x")).await,
            error(ErrorCode::Unauthenticated)
        );
        // Neither the slot nor the bytes reach the log.
        for relay in &relays {
            let log = relay.log_text();
            assert!(!log.contains(&"01".repeat(32)), "slot in the log");
            assert!(!log.contains("07070709"), "sealed bytes in the log");
        }
    }
}

#[tokio::test]
async fn an_expired_provisioning_message_is_not_handed_out() {
    for engine in Engine::all().await {
        let relays = engine.start("link-expiry", &["--provisioning-ttl-secs", "1"]);
        let url = relays[0].url();
        let old = Device::new(202, 1);
        let (mut old_conn, answer) = register(&url, &old, None).await;
        assert_eq!(answer, FrameBody::Ok);
        assert_eq!(old_conn.call(put([4; 32], b"late")).await, FrameBody::Ok);
        assert_eq!(old_conn.call(put([5; 32], b"in time")).await, FrameBody::Ok);
        let mut new_conn = connect(&relays[relays.len() - 1].url()).await;
        assert_eq!(
            new_conn.call(FrameBody::TakeProvisioning([5; 32])).await,
            FrameBody::Provisioning(Some(b"in time".to_vec())),
            "{engine:?}"
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            new_conn.call(FrameBody::TakeProvisioning([4; 32])).await,
            FrameBody::Provisioning(None),
            "expired on {engine:?}"
        );
        // An expired slot does not count against its device, and may be filed again.
        assert_eq!(old_conn.call(put([4; 32], b"fresh")).await, FrameBody::Ok);
    }
}

#[tokio::test]
async fn a_device_files_at_most_four_live_messages() {
    for engine in Engine::all().await {
        let relays = engine.start("link-four", &[]);
        let (a, b) = (relays[0].url(), relays[relays.len() - 1].url());
        let old = Device::new(203, 1);
        let (mut on_a, answer) = register(&a, &old, None).await;
        assert_eq!(answer, FrameBody::Ok);
        for n in 0..4u8 {
            assert_eq!(on_a.call(put([10 + n; 32], b"m")).await, FrameBody::Ok);
        }
        for _ in 0..2 {
            match on_a.call(put([20; 32], b"fifth")).await {
                FrameBody::Error {
                    code: ErrorCode::RateLimited,
                    retry_after_ms,
                } => assert!(retry_after_ms > 0, "{engine:?}"),
                other => panic!("a fifth live slot must be refused on {engine:?}: {other:?}"),
            }
        }
        // Another device is not concerned.
        let other = Device::new(204, 1);
        let (mut other_conn, answer) = register(&a, &other, None).await;
        assert_eq!(answer, FrameBody::Ok);
        assert_eq!(other_conn.call(put([30; 32], b"m")).await, FrameBody::Ok);
        // Once one is taken there is room again.
        let mut taker = connect(&b).await;
        assert_eq!(
            taker.call(FrameBody::TakeProvisioning([10; 32])).await,
            FrameBody::Provisioning(Some(b"m".to_vec()))
        );
        assert_eq!(on_a.call(put([20; 32], b"fifth")).await, FrameBody::Ok);
    }
}

#[tokio::test]
async fn takes_are_rate_limited_per_address() {
    let relay = RelayProcess::start("link-rate", &["--provisioning-rate", "3"]);
    let mut c = connect(&relay.url()).await;
    for _ in 0..3 {
        assert_eq!(
            c.call(FrameBody::TakeProvisioning([40; 32])).await,
            FrameBody::Provisioning(None)
        );
    }
    match c.call(FrameBody::TakeProvisioning([40; 32])).await {
        FrameBody::Error {
            code: ErrorCode::RateLimited,
            retry_after_ms,
        } => assert!(retry_after_ms > 0),
        other => panic!("the fourth take in a minute must be refused: {other:?}"),
    }
    // The refusal keeps the connection; a new connection from the address is limited too.
    let mut again = connect(&relay.url()).await;
    assert!(matches!(
        again.call(FrameBody::TakeProvisioning([40; 32])).await,
        FrameBody::Error {
            code: ErrorCode::RateLimited,
            ..
        }
    ));
    let metrics = common::metrics(relay.port).await;
    assert_eq!(
        common::sample(
            &metrics,
            r#"hushwire_relay_refusals_total{reason="provisioning_rate"}"#
        ),
        Some(2.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn concurrent_takes_across_instances_hand_a_message_out_once() {
    let Some(url) = common::postgres_url().await else {
        return;
    };
    let relays = Engine::Postgres(url).start("link-race", &[]);
    let (a, b) = (relays[0].url(), relays[1].url());
    let old = Device::new(205, 1);
    let (mut old_conn, answer) = register(&a, &old, None).await;
    assert_eq!(answer, FrameBody::Ok);
    for round in 0..12u8 {
        let slot = [100 + round; 32];
        assert_eq!(old_conn.call(put(slot, &[round; 40])).await, FrameBody::Ok);
        let (mut x, mut y) = (connect(&a).await, connect(&b).await);
        let (tx, ty) = tokio::join!(
            x.call(FrameBody::TakeProvisioning(slot)),
            y.call(FrameBody::TakeProvisioning(slot)),
        );
        let won = [&tx, &ty]
            .iter()
            .filter(|t| ***t == FrameBody::Provisioning(Some(vec![round; 40])))
            .count();
        let lost = [&tx, &ty]
            .iter()
            .filter(|t| ***t == FrameBody::Provisioning(None))
            .count();
        assert_eq!((won, lost), (1, 1), "round {round}: {tx:?} / {ty:?}");
    }
    let mut taken = 0.0;
    for relay in &relays {
        let m = common::metrics(relay.port).await;
        taken += common::sample(&m, "hushwire_relay_provisioning_takes_total").unwrap_or(0.0);
    }
    assert_eq!(taken, 12.0, "each message counted once as handed out");
}

#[tokio::test]
async fn a_further_device_registers_only_if_its_device_list_names_it() {
    for engine in Engine::all().await {
        let relays = engine.start("link-register", &["--registration", "invite"]);
        let (a, b) = (relays[0].url(), relays[relays.len() - 1].url());
        let first = Device::new(206, 1);
        // The identity's first device: the invite policy applies.
        let (_, answer) = register(&a, &first, None).await;
        assert_eq!(answer, error(ErrorCode::RegistrationRefused), "{engine:?}");
        let (mut first_conn, answer) = register(&a, &first, Some(&invite(&relays[0]))).await;
        assert_eq!(answer, FrameBody::Ok, "{engine:?}");

        // No device list yet: a second device is refused, even with an invite.
        let second = Device::new(206, 2);
        let (_, answer) = register(&b, &second, None).await;
        assert_eq!(answer, error(ErrorCode::RegistrationRefused), "{engine:?}");
        let (_, answer) = register(&b, &second, Some(&invite(&relays[0]))).await;
        assert_eq!(
            answer,
            error(ErrorCode::RegistrationRefused),
            "an invite does not replace the list"
        );

        // Named by the list: it registers without an invite, on any instance.
        assert_eq!(
            first_conn
                .call(FrameBody::PublishDeviceList(list(&first, 1, &[1, 2])))
                .await,
            FrameBody::Ok
        );
        let (mut second_conn, answer) = register(&b, &second, None).await;
        assert_eq!(answer, FrameBody::Ok, "{engine:?}");
        assert_eq!(
            second_conn
                .call(FrameBody::FetchDeviceList(first.address().fingerprint))
                .await,
            FrameBody::DeviceList(Some(list(&first, 1, &[1, 2])))
        );
        // A device id the list does not name is refused.
        let (_, answer) = register(&a, &Device::new(206, 3), None).await;
        assert_eq!(answer, error(ErrorCode::RegistrationRefused), "{engine:?}");
        // Another person's first device still needs an invite.
        let (_, answer) = register(&a, &Device::new(207, 2), None).await;
        assert_eq!(answer, error(ErrorCode::RegistrationRefused));
    }
}

#[tokio::test]
async fn a_device_removed_from_its_list_is_closed_refused_and_unreachable() {
    for engine in Engine::all().await {
        let relays = engine.start("link-remove", &[]);
        let (a, b) = (relays[0].url(), relays[relays.len() - 1].url());
        let first = Device::new(208, 1);
        let (mut first_conn, answer) = register(&a, &first, None).await;
        assert_eq!(answer, FrameBody::Ok);
        assert_eq!(
            first_conn
                .call(FrameBody::PublishDeviceList(list(&first, 1, &[1, 2])))
                .await,
            FrameBody::Ok
        );
        let second = Device::new(208, 2);
        let (_, answer) = register(&b, &second, None).await;
        assert_eq!(answer, FrameBody::Ok, "{engine:?}");
        // Connected on the other instance than the one the list is published on.
        let (mut second_conn, answer) = login(&b, &second).await;
        assert_eq!(answer, FrameBody::Ok);
        let sender = Device::new(209, 1);
        let (mut sender_conn, answer) = register(&a, &sender, None).await;
        assert_eq!(answer, FrameBody::Ok);
        assert!(matches!(
            sender_conn.send_to(second.address(), b"before").await,
            FrameBody::Sent(_)
        ));

        assert_eq!(
            first_conn
                .call(FrameBody::PublishDeviceList(list(&first, 2, &[1])))
                .await,
            FrameBody::Ok
        );
        removed_and_closed(&mut second_conn, "while connected").await;
        for url in [&a, &b] {
            let (mut c, answer) = login(url, &second).await;
            assert_eq!(answer, error(ErrorCode::Suspended), "{engine:?}");
            let (_, close) = closed(&mut c).await;
            assert_eq!(
                close,
                Some((4003, "removed from its device list".to_owned())),
                "at login"
            );
        }
        assert_eq!(
            sender_conn.send_to(second.address(), b"after").await,
            error(ErrorCode::UnknownDevice),
            "{engine:?}"
        );
        // A frame naming a removed device stores nothing, not even for the others in it.
        assert_eq!(
            sender_conn
                .call(FrameBody::Send(vec![
                    hushwire_proto::relay::OutgoingEnvelope {
                        recipient: first.address(),
                        payload: b"x".to_vec(),
                    },
                    hushwire_proto::relay::OutgoingEnvelope {
                        recipient: second.address(),
                        payload: b"y".to_vec(),
                    },
                ]))
                .await,
            error(ErrorCode::UnknownDevice)
        );
        // Nor is its bundle handed out, so no new session starts with it.
        assert_eq!(
            sender_conn
                .call(FrameBody::FetchBundle(second.address()))
                .await,
            error(ErrorCode::UnknownDevice)
        );
        // The device still on the list, and identities without a list, are unaffected.
        assert!(matches!(
            sender_conn.send_to(first.address(), b"still").await,
            FrameBody::Sent(_)
        ));
        assert!(matches!(
            first_conn.send_to(sender.address(), b"no list").await,
            FrameBody::Sent(_)
        ));
        // A removed device never comes back, so a lost phone cannot return under its old
        // number: a newer list naming it again is refused, and it stays refused at login.
        assert_eq!(
            first_conn
                .call(FrameBody::PublishDeviceList(list(&first, 3, &[1, 2])))
                .await,
            error(ErrorCode::ListRefused),
            "{engine:?}"
        );
        let (_, answer) = login(&a, &second).await;
        assert_eq!(answer, error(ErrorCode::Suspended), "{engine:?}");
        // A device never listed before may be added.
        assert_eq!(
            first_conn
                .call(FrameBody::PublishDeviceList(list(&first, 3, &[1, 3])))
                .await,
            FrameBody::Ok
        );
        let (_, answer) = login(&b, &first).await;
        assert_eq!(answer, FrameBody::Ok);
    }
}
