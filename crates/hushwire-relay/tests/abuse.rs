//! One registered user must not be able to deny service to others (`docs/relay-protocol.md`
//! §4–§6): each fault found by the abuse review of issue 12 is a test here.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Client, Device, Engine, RelayProcess, connect, metrics, sample};
use hushwire_proto::relay::{ErrorCode, FrameBody, MAX_ENVELOPE_LEN};

fn refused(code: ErrorCode) -> FrameBody {
    FrameBody::Error {
        code,
        retry_after_ms: 0,
    }
}

/// Mailbox flooding: one sender fills only its own share (in envelopes, then in bytes); the
/// recipient's other contacts still get through until the mailbox as a whole is full, and then
/// they are told so precisely (`MailboxFull`, not "unknown device"). Acknowledging frees the
/// flooder's share again.
#[tokio::test]
async fn one_sender_fills_only_its_share_of_a_mailbox() {
    for engine in Engine::all().await {
        one_sender_fills_only_its_share_on(&engine).await;
    }
}

/// The mailbox-share scenario on one engine (counters in memory on SQLite, in counter rows
/// on PostgreSQL: both must agree, acknowledgements included).
async fn one_sender_fills_only_its_share_on(engine: &Engine) {
    let relays = engine.start(
        "share",
        &[
            "--sender-quota",
            "3",
            "--sender-quota-bytes",
            "3000",
            "--mailbox-quota",
            "5",
        ],
    );
    let relay = &relays[0];
    let (mallory, alice, carol, bob) = (
        Device::new(60, 1),
        Device::new(61, 1),
        Device::new(62, 1),
        Device::new(63, 1),
    );
    let mut m = Client::register(&relay.url(), &mallory).await;
    let mut a = Client::register(&relay.url(), &alice).await;
    let mut c = Client::register(&relay.url(), &carol).await;
    drop(Client::register(&relay.url(), &bob).await);
    let to = bob.address();
    // An unregistered recipient is refused as such on both engines (on PostgreSQL, by the
    // absence of a counter row, which only registered devices get).
    assert_eq!(
        m.send_to(Device::new(59, 1).address(), b"nobody").await,
        refused(ErrorCode::UnknownDevice)
    );

    let mut flood = Vec::new();
    for i in 0..3u8 {
        match m.send_to(to, &[i; 10]).await {
            FrameBody::Sent(r) => flood.push(r[0].server_id),
            other => panic!("send {i} refused: {other:?}"),
        }
    }
    assert_eq!(m.send_to(to, b"4th").await, refused(ErrorCode::SenderQuota));
    // Alice is not affected by Mallory's share; bytes count too: 3000 of Alice's in one go,
    // and then one more byte is over her share although she has only one envelope waiting.
    assert!(matches!(
        a.send_to(to, &[7; 3000]).await,
        FrameBody::Sent(_)
    ));
    assert_eq!(a.send_to(to, b"x").await, refused(ErrorCode::SenderQuota));
    assert!(matches!(
        c.send_to(to, b"carol 1").await,
        FrameBody::Sent(_)
    ));
    // Five envelopes wait: the mailbox is full for everyone, and says so.
    assert_eq!(
        c.send_to(to, b"carol 2").await,
        refused(ErrorCode::MailboxFull)
    );

    // Bob reads and acknowledges Mallory's: Mallory's share and the mailbox have room again.
    let (mut b, _) = Client::login(&relay.url(), &bob).await;
    assert_eq!(b.receive(5).await.len(), 5);
    assert_eq!(b.call(FrameBody::Ack(flood)).await, FrameBody::Ok);
    assert!(matches!(m.send_to(to, b"again").await, FrameBody::Sent(_)));
    assert!(matches!(
        c.send_to(to, b"carol 2").await,
        FrameBody::Sent(_)
    ));

    let text = metrics(relay.port).await;
    assert_eq!(
        sample(
            &text,
            r#"hushwire_relay_refusals_total{reason="sender_quota"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"hushwire_relay_refusals_total{reason="mailbox_full"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        relay.log_text().contains("reason=\"sender_quota\"")
            || relay.log_text().contains("reason=sender_quota")
    );
}

/// The per-(sender, recipient) rate counts envelopes and bytes: a burst of twice the rate,
/// then `RateLimited` with a delay; sending to someone else is not limited by it.
#[tokio::test]
async fn sends_to_one_recipient_are_rate_limited_in_envelopes_and_bytes() {
    let relay = RelayProcess::start(
        "pair-rate",
        &["--sender-rate", "2", "--sender-byte-rate", "49152"],
    );
    let (alice, bob, carol) = (Device::new(64, 1), Device::new(65, 1), Device::new(66, 1));
    let mut a = Client::register(&relay.url(), &alice).await;
    drop(Client::register(&relay.url(), &bob).await);
    drop(Client::register(&relay.url(), &carol).await);

    // Bytes: the burst is 2 x 49152 = one largest envelope; a second one must wait.
    let big = vec![0u8; MAX_ENVELOPE_LEN];
    assert!(matches!(
        a.send_to(bob.address(), &big).await,
        FrameBody::Sent(_)
    ));
    let FrameBody::Error {
        code: ErrorCode::RateLimited,
        retry_after_ms,
    } = a.send_to(bob.address(), &big).await
    else {
        panic!("a second 96 KiB envelope within the burst was accepted");
    };
    assert!(retry_after_ms >= 1000, "{retry_after_ms}");
    // Carol's pair is untouched.
    assert!(matches!(
        a.send_to(carol.address(), &big).await,
        FrameBody::Sent(_)
    ));

    // Envelopes: four small ones (a burst of 2 x 2) go, the fifth waits.
    for i in 0..3u8 {
        assert!(
            matches!(a.send_to(carol.address(), &[i]).await, FrameBody::Sent(_)),
            "{i}"
        );
    }
    assert!(matches!(
        a.send_to(carol.address(), b"5th").await,
        FrameBody::Error {
            code: ErrorCode::RateLimited,
            retry_after_ms: 1..=1000
        }
    ));
    let text = metrics(relay.port).await;
    assert_eq!(
        sample(
            &text,
            r#"hushwire_relay_refusals_total{reason="sender_rate"}"#
        ),
        Some(2.0),
        "{text}"
    );
}

/// Prekey draining: a requester may fetch only `--fetch-rate` bundles a minute, and a target
/// hands out only `--target-prekey-rate` one-time keys a minute whoever asks; beyond that,
/// bundles still come (sessions can start) but without one-time keys, so its keys last.
#[tokio::test]
async fn bundle_fetches_cannot_drain_a_devices_one_time_prekeys() {
    let relay = RelayProcess::start("drain", &["--fetch-rate", "3", "--target-prekey-rate", "4"]);
    let bob = Device::new(67, 1);
    let mut b = Client::register(&relay.url(), &bob).await;
    b.upload(&bob, 1..11).await;

    let mut with_one_time = 0;
    let mut fetched = 0;
    for n in 0..3u8 {
        let fetcher = Device::new(70 + n, 1);
        let mut f = Client::register(&relay.url(), &fetcher).await;
        for _ in 0..3 {
            let bundle = f.fetch(bob.address()).await.expect("a bundle");
            fetched += 1;
            if bundle.one_time_prekey.is_some() {
                with_one_time += 1;
                assert_eq!(
                    bundle.kem_prekey.kind,
                    hushwire_proto::KemPreKeyKind::OneTime
                );
            } else {
                assert_eq!(
                    bundle.kem_prekey.kind,
                    hushwire_proto::KemPreKeyKind::LastResort
                );
            }
        }
        // The requester's own rate: the 4th fetch within the minute waits.
        assert!(matches!(
            f.call(FrameBody::FetchBundle(bob.address())).await,
            FrameBody::Error {
                code: ErrorCode::RateLimited,
                retry_after_ms: 1..=20_000
            }
        ));
    }
    assert_eq!(fetched, 9);
    assert_eq!(with_one_time, 4, "the target's budget, whoever asked");
    // Six of ten one-time keys of each kind are left.
    let (mut b2, _) = Client::login(&relay.url(), &bob).await;
    drop(b);
    let count = loop {
        let frame = common::next_frame(&mut b2.socket)
            .await
            .expect("prekey count");
        if let FrameBody::PreKeyCount {
            one_time,
            kem_one_time,
        } = frame.body
        {
            break (one_time, kem_one_time);
        }
    };
    assert_eq!(count, (6, 6));
    let text = metrics(relay.port).await;
    assert_eq!(
        sample(
            &text,
            r#"hushwire_relay_refusals_total{reason="fetch_rate"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"hushwire_relay_refusals_total{reason="target_prekey_rate"}"#
        ),
        Some(5.0),
        "{text}"
    );
}

/// Mass registration: one address may register `--registration-rate` devices a minute; the
/// next attempt gets `RateLimited` with a delay and keeps its connection (and its unused
/// challenge), and devices already registered still authenticate.
#[tokio::test]
async fn registration_is_rate_limited_per_address() {
    let relay = RelayProcess::start("registration-rate", &["--registration-rate", "3"]);
    for n in 0..3u8 {
        drop(Client::register(&relay.url(), &Device::new(80 + n, 1)).await);
    }
    let late = Device::new(90, 1);
    let mut c = connect(&relay.url()).await;
    let credentials = late.credentials(&c.challenge);
    let answer = c
        .call(FrameBody::Register {
            credentials: credentials.clone(),
            invite: None,
            certificate: None,
        })
        .await;
    let FrameBody::Error {
        code: ErrorCode::RateLimited,
        retry_after_ms,
    } = answer
    else {
        panic!("a 4th registration in a minute was accepted: {answer:?}");
    };
    assert!(
        (10_000..=20_000).contains(&retry_after_ms),
        "{retry_after_ms}"
    );
    // Still open: an authentication by a registered device on a new connection works, and
    // this connection answers (its challenge was not used up by the refusal).
    drop(Client::login(&relay.url(), &Device::new(80, 1)).await);
    assert!(matches!(
        c.call(FrameBody::Register {
            credentials,
            invite: None,
            certificate: None
        })
        .await,
        FrameBody::Error {
            code: ErrorCode::RateLimited,
            ..
        }
    ));
    let text = metrics(relay.port).await;
    assert_eq!(
        sample(
            &text,
            r#"hushwire_relay_refusals_total{reason="registration_rate"}"#
        ),
        Some(2.0),
        "{text}"
    );
}
