//! End-to-end tests against the real relay process on an ephemeral loopback port.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashSet;

use common::{Client, Device, RelayProcess, connect};
use hushwire_proto::codec::Codec;
use hushwire_proto::relay::{Challenge, ErrorCode, Frame, FrameBody, OutgoingEnvelope};

/// Issue 13: two deployments that share a name (the name no longer matters). Relay A could
/// take relay B's challenge and hand it to a device that trusts A, with A's key in place of
/// B's (A cannot re-sign it under B's key): the device's answer is bound to A's key, and B
/// refuses it. The same device answering B's own challenge gets in.
#[tokio::test]
async fn a_login_answer_for_one_relay_key_is_refused_by_another_relay() {
    let a = RelayProcess::start("key-a", &["--relay-name", "clinic"]);
    let b = RelayProcess::start("key-b", &["--relay-name", "clinic"]);
    let device = Device::new(77, 1);
    Client::register(&b.url(), &device).await;

    let key_a = connect(&a.url()).await.challenge.relay_key;
    let mut victim = connect(&b.url()).await;
    assert_ne!(
        key_a, victim.challenge.relay_key,
        "each deployment has its own key"
    );
    assert!(victim.challenge.verify_relay_signature());
    // What the forwarding relay A shows the device: B's nonce and expiry, A's key.
    let forwarded = Challenge {
        relay_key: key_a,
        ..victim.challenge
    };
    let answer = device.credentials(&forwarded);
    assert_eq!(
        victim.call(FrameBody::Authenticate(answer)).await,
        FrameBody::Error {
            code: ErrorCode::BadSignature,
            retry_after_ms: 0
        }
    );
    // Relay B's key file is where the documentation says, owner-only.
    let key_file = b.data_dir.join("relay-key");
    assert_eq!(std::fs::read(&key_file).unwrap().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let mut honest = connect(&b.url()).await;
    let answer = device.credentials(&honest.challenge);
    assert_eq!(
        honest.call(FrameBody::Authenticate(answer)).await,
        FrameBody::Ok
    );

    // The key survives a restart: clients that pinned it keep logging in.
    let key_b = honest.challenge.relay_key;
    drop(honest);
    let mut b = b;
    b.crash_and_restart();
    assert_eq!(connect(&b.url()).await.challenge.relay_key, key_b);
}

#[tokio::test]
async fn two_devices_exchange_messages_online_and_offline() {
    let relay = RelayProcess::start("exchange", &[]);
    let (alice, bob) = (Device::new(1, 1), Device::new(2, 1));
    let mut a = Client::register(&relay.url(), &alice).await;
    let mut b = Client::register(&relay.url(), &bob).await;
    b.upload(&bob, 10..13).await;

    // Alice fetches Bob's bundle: signatures check out, a one-time prekey is claimed.
    let bundle = a.fetch(bob.address()).await.expect("bundle");
    bundle.verify().unwrap();
    assert_eq!(bundle.identity, bob.identity);
    assert_eq!(bundle.one_time_prekey.as_ref().map(|k| k.id), Some(10));

    // Live delivery.
    let FrameBody::Sent(receipts) = a.send_to(bob.address(), b"ciphertext 1").await else {
        panic!("not stored")
    };
    let got = b.receive(1).await;
    assert_eq!(got[0].payload, b"ciphertext 1");
    assert_eq!(got[0].sender, alice.address());
    assert_eq!(got[0].server_id, receipts[0].server_id);
    assert_eq!(
        b.call(FrameBody::Ack(vec![got[0].server_id])).await,
        FrameBody::Ok
    );

    // Bob replies.
    assert!(matches!(
        b.send_to(alice.address(), b"reply").await,
        FrameBody::Sent(_)
    ));
    assert_eq!(a.receive(1).await[0].payload, b"reply");

    // Offline: Bob disconnects, Alice sends two; Bob reconnects and gets both, in order.
    drop(b);
    for text in [&b"offline 1"[..], b"offline 2"] {
        assert!(matches!(
            a.send_to(bob.address(), text).await,
            FrameBody::Sent(_)
        ));
    }
    let (mut b, mut early) = Client::login(&relay.url(), &bob).await;
    if early.len() < 2 {
        early.extend(b.receive(2 - early.len()).await);
    }
    assert_eq!(
        early.iter().map(|d| d.payload.clone()).collect::<Vec<_>>(),
        vec![b"offline 1".to_vec(), b"offline 2".to_vec()]
    );

    // Unacked envelopes are delivered again on the next connection; acked ones never.
    assert_eq!(
        b.call(FrameBody::Ack(vec![early[0].server_id])).await,
        FrameBody::Ok
    );
    drop(b);
    let (mut b, mut again) = Client::login(&relay.url(), &bob).await;
    if again.is_empty() {
        again = b.receive(1).await;
    }
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].server_id, early[1].server_id,
        "a redelivery carries the same server id"
    );
    assert_eq!(
        b.call(FrameBody::Ack(vec![again[0].server_id])).await,
        FrameBody::Ok
    );
    drop(b);
    let (_b, none) = Client::login(&relay.url(), &bob).await;
    assert!(none.is_empty(), "acked envelopes are gone");
}

#[tokio::test]
async fn one_time_prekeys_are_handed_out_at_most_once_under_concurrency() {
    let relay = RelayProcess::start("claims", &[]);
    let bob = Device::new(3, 1);
    let mut b = Client::register(&relay.url(), &bob).await;
    b.upload(&bob, 100..110).await;
    let url = relay.url();
    let mut tasks = Vec::new();
    for i in 0..50u8 {
        let url = url.clone();
        let target = bob.address();
        tasks.push(tokio::spawn(async move {
            let fetcher = Device::new(100 + i, 1);
            let mut c = Client::register(&url, &fetcher).await;
            c.fetch(target)
                .await
                .expect("a bundle, with or without one-time keys")
        }));
    }
    let mut seen = HashSet::new();
    let mut kem_seen = HashSet::new();
    let mut with_one_time = 0;
    for t in tasks {
        let bundle = t.await.unwrap();
        if let Some(k) = bundle.one_time_prekey {
            assert!(
                seen.insert(k.id),
                "one-time prekey {} handed out twice",
                k.id
            );
            with_one_time += 1;
        }
        if bundle.kem_prekey.kind == hushwire_proto::KemPreKeyKind::OneTime {
            assert!(
                kem_seen.insert(bundle.kem_prekey.id),
                "ML-KEM prekey handed out twice"
            );
        }
    }
    assert_eq!(
        with_one_time, 10,
        "all ten keys used, none twice, the rest fall back"
    );
    assert_eq!(kem_seen.len(), 10);
}

/// Connects, optionally authenticates, sends `bytes`, and returns the error code the relay answers.
async fn error_for(url: &str, device: Option<&Device>, bytes: Vec<u8>) -> ErrorCode {
    error_frame_for(url, device, bytes).await.1
}

/// The `request_id` and code of the `Error` that answers `bytes`.
async fn error_frame_for(url: &str, device: Option<&Device>, bytes: Vec<u8>) -> (u32, ErrorCode) {
    let mut c = connect(url).await;
    if let Some(d) = device {
        let creds = d.credentials(&c.challenge);
        assert_eq!(c.call(FrameBody::Authenticate(creds)).await, FrameBody::Ok);
    }
    c.send_raw(bytes).await;
    loop {
        let frame = common::next_frame(&mut c.socket)
            .await
            .expect("an error frame before close");
        if let FrameBody::Error { code, .. } = frame.body {
            // And then the relay closes this connection.
            assert!(
                common::next_frame(&mut c.socket).await.is_none(),
                "connection stays open after {code:?}"
            );
            return (frame.request_id, code);
        }
    }
}

#[tokio::test]
async fn bad_input_gets_its_error_and_the_relay_keeps_serving() {
    let relay = RelayProcess::start("bad-input", &[]);
    let url = relay.url();
    let alice = Device::new(4, 1);
    let bob = Device::new(5, 1);
    let mut a = Client::register(&url, &alice).await;
    let _b = Client::register(&url, &bob).await;
    // The bad input comes from Carol's connections: a newer connection of Alice's own device
    // would replace (close, 4001) her first one, which must keep working below.
    let carol = Device::new(7, 1);
    drop(Client::register(&url, &carol).await);

    let valid_send = Frame {
        request_id: 7,
        body: FrameBody::Send(vec![OutgoingEnvelope {
            recipient: bob.address(),
            payload: b"x".to_vec(),
        }]),
    }
    .to_bytes();
    // Truncated: the error names the refused request (its header is whole).
    assert_eq!(
        error_frame_for(
            &url,
            Some(&carol),
            valid_send[..valid_send.len() - 1].to_vec()
        )
        .await,
        (7, ErrorCode::Malformed)
    );
    // Too short for a header: request id 0.
    assert_eq!(
        error_frame_for(&url, Some(&carol), valid_send[..4].to_vec()).await,
        (0, ErrorCode::Malformed)
    );
    // Wrong version.
    let mut wrong_version = valid_send.clone();
    wrong_version[0] = 9;
    assert_eq!(
        error_for(&url, Some(&carol), wrong_version).await,
        ErrorCode::Malformed
    );
    // Random bytes.
    assert_eq!(
        error_for(&url, Some(&carol), vec![0x42; 100]).await,
        ErrorCode::Malformed
    );
    // Unauthenticated: refused and counted, as every refusal is (§6).
    assert_eq!(
        error_for(&url, None, valid_send.clone()).await,
        ErrorCode::Unauthenticated
    );
    let text = common::metrics(relay.port).await;
    assert_eq!(
        common::sample(
            &text,
            r#"hushwire_relay_refusals_total{reason="unauthenticated"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        common::sample(
            &text,
            r#"hushwire_relay_refusals_total{reason="malformed"}"#
        ),
        Some(4.0),
        "{text}"
    );
    // A frame only the relay sends.
    assert_eq!(
        error_for(
            &url,
            Some(&carol),
            Frame {
                request_id: 1,
                body: FrameBody::Ok
            }
            .to_bytes()
        )
        .await,
        ErrorCode::Malformed
    );
    // Oversized envelope (over 96 KiB) is refused by the decoder.
    let oversized = Frame {
        request_id: 2,
        body: FrameBody::Send(vec![OutgoingEnvelope {
            recipient: bob.address(),
            payload: vec![0; 97 * 1024],
        }]),
    }
    .to_bytes();
    assert_eq!(
        error_for(&url, Some(&carol), oversized).await,
        ErrorCode::Malformed
    );

    // Replayed challenge answer: a signature made for one connection's challenge, reused.
    let mut c1 = connect(&url).await;
    let creds = carol.credentials(&c1.challenge);
    assert_eq!(
        c1.call(FrameBody::Authenticate(creds.clone())).await,
        FrameBody::Ok
    );
    assert_eq!(
        error_for(
            &url,
            None,
            Frame {
                request_id: 3,
                body: FrameBody::Authenticate(creds.clone())
            }
            .to_bytes()
        )
        .await,
        ErrorCode::BadSignature
    );
    // Answering twice on one connection.
    let mut c2 = connect(&url).await;
    let creds2 = carol.credentials(&c2.challenge);
    assert_eq!(
        c2.call(FrameBody::Authenticate(creds2.clone())).await,
        FrameBody::Ok
    );
    assert_eq!(
        c2.call(FrameBody::Authenticate(creds2)).await,
        FrameBody::Error {
            code: ErrorCode::OutOfOrder,
            retry_after_ms: 0
        }
    );
    // Unknown device.
    let stranger = Device::new(6, 1);
    let mut c3 = connect(&url).await;
    let creds3 = stranger.credentials(&c3.challenge);
    assert_eq!(
        c3.call(FrameBody::Authenticate(creds3)).await,
        FrameBody::Error {
            code: ErrorCode::UnknownDevice,
            retry_after_ms: 0
        }
    );
    // A prekey signed by someone else.
    let forged = FrameBody::UploadPreKeys {
        signed_prekey: Some(bob.signed_prekey(9)),
        last_resort_kem_prekey: None,
        one_time_prekeys: vec![],
        one_time_kem_prekeys: vec![],
    };
    assert_eq!(
        error_for(
            &url,
            Some(&carol),
            Frame {
                request_id: 4,
                body: forged
            }
            .to_bytes()
        )
        .await,
        ErrorCode::BadPreKey
    );

    // Through all of that, Alice's first connection kept working.
    assert!(matches!(
        a.send_to(bob.address(), b"still here").await,
        FrameBody::Sent(_)
    ));
}

#[tokio::test]
async fn invite_policy_refuses_without_a_valid_single_use_token() {
    let relay = RelayProcess::start("invite", &["--registration", "invite"]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hushwire-relay"))
        .args([
            "--data-dir",
            &relay.data_dir.display().to_string(),
            "invite",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let url = relay.url();
    let register = |device: Device, invite: Option<Vec<u8>>| {
        let url = url.clone();
        async move {
            let mut c = connect(&url).await;
            let credentials = device.credentials(&c.challenge);
            c.call(FrameBody::Register {
                credentials,
                invite,
                certificate: None,
            })
            .await
        }
    };
    let refused = FrameBody::Error {
        code: ErrorCode::RegistrationRefused,
        retry_after_ms: 0,
    };
    assert_eq!(register(Device::new(7, 1), None).await, refused);
    assert_eq!(
        register(Device::new(7, 1), Some(b"not a token".to_vec())).await,
        refused
    );
    assert_eq!(
        register(Device::new(7, 1), Some(token.as_bytes().to_vec())).await,
        FrameBody::Ok
    );
    assert_eq!(
        register(Device::new(8, 1), Some(token.as_bytes().to_vec())).await,
        refused,
        "tokens are single use"
    );
}

#[tokio::test]
async fn acked_sends_survive_sigkill() {
    let mut relay = RelayProcess::start("crash", &[]);
    let (alice, bob) = (Device::new(9, 1), Device::new(10, 1));
    let mut a = Client::register(&relay.url(), &alice).await;
    drop(Client::register(&relay.url(), &bob).await);
    // Stream sends; kill the relay while they are in flight.
    let mut acked = Vec::new();
    let sender = async {
        for i in 0..2000u32 {
            let id = a
                .request(FrameBody::Send(vec![OutgoingEnvelope {
                    recipient: bob.address(),
                    payload: i.to_be_bytes().to_vec(),
                }]))
                .await;
            let answer = loop {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    common::next_frame(&mut a.socket),
                )
                .await
                {
                    Ok(Some(Frame { request_id: 0, .. })) => continue,
                    Ok(Some(frame)) if frame.request_id == id => break Some(frame.body),
                    _ => break None,
                }
            };
            match answer {
                Some(FrameBody::Sent(r)) => acked.push((i, r[0].server_id)),
                _ => break,
            }
        }
    };
    let killer = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        relay.crash_and_restart();
    };
    tokio::join!(sender, killer);
    assert!(!acked.is_empty(), "some sends were acked before the kill");
    let (mut b, mut got) = Client::login(&relay.url(), &bob).await;
    while got.len() < acked.len() {
        got.extend(b.receive(1).await);
    }
    let delivered: HashSet<[u8; 16]> = got.iter().map(|d| d.server_id).collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|(_, id)| !delivered.contains(id))
        .collect();
    eprintln!(
        "crash test: {} acked before SIGKILL, {} delivered after restart, {} lost",
        acked.len(),
        got.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acked envelopes lost: {lost:?}");
}

#[tokio::test]
async fn audit_chain_records_metadata_and_verify_detects_tampering() {
    let mut relay = RelayProcess::start("audit", &[]);
    let (alice, bob) = (Device::new(11, 1), Device::new(12, 1));
    let mut a = Client::register(&relay.url(), &alice).await;
    let mut b = Client::register(&relay.url(), &bob).await;
    b.upload(&bob, 1..3).await;
    a.fetch(bob.address()).await.unwrap();
    for i in 0..5u8 {
        assert!(matches!(
            a.send_to(bob.address(), &[i; 40]).await,
            FrameBody::Sent(_)
        ));
    }
    let got = b.receive(5).await;
    assert_eq!(
        b.call(FrameBody::Ack(got.iter().map(|d| d.server_id).collect()))
            .await,
        FrameBody::Ok
    );
    drop((a, b));
    // Graceful stop: the audit writer flushes and signs a final checkpoint.
    relay.stop_gracefully();

    let verify = |dir: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hushwire-relay"))
            .args([
                "--data-dir",
                &dir.display().to_string(),
                "audit",
                "verify",
                "--json",
            ])
            .output()
            .unwrap()
    };
    let ok = verify(&relay.data_dir);
    let report = String::from_utf8_lossy(&ok.stdout).to_string();
    assert!(
        ok.status.success(),
        "{report} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        report.contains("\"ok\":true") && report.contains("\"unsigned_tail\":0"),
        "{report}"
    );
    // 2 registrations, 2 authentications (the registrations), 1 upload, 1 fetch, 5 stored,
    // 5 delivered, 5 acknowledged.
    assert!(report.contains("\"records\":21"), "{report}");

    // Change one byte of one stored record: verification fails and names it.
    let db = relay.data_dir.join("relay.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let record: Vec<u8> = sqlx::query_scalar("SELECT record FROM audit_records WHERE sequence = 7")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut tampered = record.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    sqlx::query("UPDATE audit_records SET record = ? WHERE sequence = 7")
        .bind(tampered)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let bad = verify(&relay.data_dir);
    let out =
        String::from_utf8_lossy(&bad.stdout).to_string() + &String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "tampered chain verified: {out}");
    assert!(
        out.contains("\"ok\":false") && out.contains("record 7 was modified"),
        "{out}"
    );
}

#[tokio::test]
async fn tls_serves_wss_and_refuses_plaintext_on_public_addresses() {
    // A self-signed certificate for 127.0.0.1.
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let dir = common::temp_dir("tls");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let relay = RelayProcess::start(
        "tls",
        &[
            "--tls-cert",
            &cert_path.display().to_string(),
            "--tls-key",
            &key_path.display().to_string(),
        ],
    );
    assert!(
        relay.banner.contains("wss://127.0.0.1:"),
        "{}",
        relay.banner
    );

    // A client that trusts only that certificate completes the handshake and gets a challenge.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", relay.port))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_config))
        .connect(name, tcp)
        .await
        .unwrap();
    let url = format!("wss://127.0.0.1:{}/v1/websocket", relay.port);
    let (mut socket, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    let frame = loop {
        use futures_util::StreamExt as _;
        match socket.next().await.unwrap().unwrap() {
            tokio_tungstenite::tungstenite::Message::Binary(b) => {
                break Frame::from_bytes(&b).unwrap();
            }
            _ => continue,
        }
    };
    assert!(matches!(frame.body, FrameBody::Challenge(_)));

    // A plaintext client gets nowhere.
    let plain =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/v1/websocket", relay.port))
            .await;
    assert!(plain.is_err(), "plaintext WebSocket accepted on a TLS port");

    // Without TLS the relay refuses a non-loopback address, and says why.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hushwire-relay"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
            &dir.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to serve plaintext"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn limits_quota_rate_and_retention_are_enforced() {
    // Mailbox quota.
    let relay = RelayProcess::start("quota", &["--mailbox-quota", "3"]);
    let (alice, bob) = (Device::new(40, 1), Device::new(41, 1));
    let mut a = Client::register(&relay.url(), &alice).await;
    drop(Client::register(&relay.url(), &bob).await);
    for i in 0..3u8 {
        assert!(matches!(
            a.send_to(bob.address(), &[i]).await,
            FrameBody::Sent(_)
        ));
    }
    assert_eq!(
        a.send_to(bob.address(), b"one too many").await,
        FrameBody::Error {
            code: ErrorCode::MailboxFull,
            retry_after_ms: 0
        }
    );

    // Per-device rate: bursts of 2 x 5 frames, then RateLimited with a retry delay; the
    // connection stays usable.
    let relay = RelayProcess::start("rate", &["--device-rate", "5"]);
    let mut a = Client::register(&relay.url(), &alice).await;
    drop(Client::register(&relay.url(), &bob).await);
    let mut limited = None;
    for i in 0..30u8 {
        if let FrameBody::Error {
            code: ErrorCode::RateLimited,
            retry_after_ms,
        } = a.send_to(bob.address(), &[i]).await
        {
            limited = Some(retry_after_ms);
            break;
        }
    }
    let wait = limited.expect("30 frames at once exceed a rate of 5/s");
    assert!((1..=1000).contains(&wait), "retry after {wait} ms");
    tokio::time::sleep(std::time::Duration::from_millis(u64::from(wait) + 50)).await;
    assert!(matches!(
        a.send_to(bob.address(), b"after waiting").await,
        FrameBody::Sent(_)
    ));

    // Retention: with 0 days, a sweep deletes what nobody fetched.
    let relay = RelayProcess::start(
        "retention",
        &["--retention-days", "0", "--expiry-interval-secs", "1"],
    );
    let mut a = Client::register(&relay.url(), &alice).await;
    drop(Client::register(&relay.url(), &bob).await);
    assert!(matches!(
        a.send_to(bob.address(), b"never fetched").await,
        FrameBody::Sent(_)
    ));
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (mut b, got) = Client::login(&relay.url(), &bob).await;
    assert!(got.is_empty(), "expired envelope delivered");
    let late = tokio::time::timeout(std::time::Duration::from_millis(300), async {
        loop {
            if let FrameBody::Deliver(d) = common::next_frame(&mut b.socket).await?.body {
                return Some(d);
            }
        }
    })
    .await;
    assert!(
        !matches!(late, Ok(Some(_))),
        "expired envelope delivered late"
    );
}

#[tokio::test]
async fn device_is_told_when_its_one_time_prekeys_run_low() {
    let relay = RelayProcess::start("low", &[]);
    let (alice, bob) = (Device::new(42, 1), Device::new(43, 1));
    let mut b = Client::register(&relay.url(), &bob).await;
    b.upload(&bob, 1..4).await;
    let mut a = Client::register(&relay.url(), &alice).await;
    a.fetch(bob.address()).await.unwrap();
    loop {
        let frame = common::next_frame(&mut b.socket)
            .await
            .expect("a prekey count");
        if let FrameBody::PreKeyCount {
            one_time,
            kem_one_time,
        } = frame.body
            && one_time == 2
        {
            assert_eq!(kem_one_time, 2);
            break;
        }
    }
}

#[tokio::test]
async fn connection_caps_address_rate_and_idle_timeout() {
    // Per-address rate: 1 new connection per second (bursts of 2), then HTTP 429.
    let relay = RelayProcess::start("address-rate", &["--address-rate", "1"]);
    let _c1 = connect(&relay.url()).await;
    let _c2 = connect(&relay.url()).await;
    match tokio_tungstenite::connect_async(relay.url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!(
            "third connection in a burst of 2 was not refused: {:?}",
            other.map(|_| ())
        ),
    }

    // Connection cap: the third concurrent connection gets HTTP 503.
    let relay = RelayProcess::start("max-connections", &["--max-connections", "2"]);
    let _c1 = connect(&relay.url()).await;
    let _c2 = connect(&relay.url()).await;
    match tokio_tungstenite::connect_async(relay.url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!(
            "connection over the cap was not refused: {:?}",
            other.map(|_| ())
        ),
    }

    // Idle timeout: a client that never answers the relay's ping is closed after two idle
    // periods (the test does not poll the socket, so no pong goes out).
    let relay = RelayProcess::start("idle", &["--idle-timeout-secs", "1"]);
    let mut idle = connect(&relay.url()).await;
    tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
    let mut closed = false;
    while let Ok(Some(message)) = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        futures_util::StreamExt::next(&mut idle.socket),
    )
    .await
    {
        match message {
            Ok(tokio_tungstenite::tungstenite::Message::Close(_)) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => {}
        }
    }
    assert!(closed, "an unresponsive connection was not closed");
}

#[tokio::test]
async fn review_findings_stay_fixed() {
    let relay = RelayProcess::start("review", &["--mailbox-quota", "3"]);
    let (alice, bob) = (Device::new(50, 1), Device::new(51, 1));
    let mut a = Client::register(&relay.url(), &alice).await;
    let mut b = Client::register(&relay.url(), &bob).await;

    // A fetch while the target has no ML-KEM key at all must not burn its one-time X25519 keys.
    let only_x25519 = FrameBody::UploadPreKeys {
        signed_prekey: Some(bob.signed_prekey(1)),
        last_resort_kem_prekey: None,
        one_time_prekeys: (10..12).map(|i| bob.one_time_prekey(i)).collect(),
        one_time_kem_prekeys: vec![],
    };
    assert_eq!(b.call(only_x25519).await, FrameBody::Ok);
    assert_eq!(
        a.call(FrameBody::FetchBundle(bob.address())).await,
        FrameBody::Error {
            code: ErrorCode::NoPreKeys,
            retry_after_ms: 0
        }
    );
    let kem = FrameBody::UploadPreKeys {
        signed_prekey: None,
        last_resort_kem_prekey: Some(bob.kem_prekey(2, hushwire_proto::KemPreKeyKind::LastResort)),
        one_time_prekeys: vec![],
        one_time_kem_prekeys: vec![],
    };
    assert_eq!(b.call(kem).await, FrameBody::Ok);
    let bundle = a.fetch(bob.address()).await.unwrap();
    assert_eq!(
        bundle.one_time_prekey.map(|k| k.id),
        Some(10),
        "the failed fetch burned a one-time prekey"
    );

    // One frame with more envelopes for one device than its quota allows is refused whole.
    let four = (0..4u8)
        .map(|i| OutgoingEnvelope {
            recipient: bob.address(),
            payload: vec![i],
        })
        .collect();
    assert_eq!(
        a.call(FrameBody::Send(four)).await,
        FrameBody::Error {
            code: ErrorCode::MailboxFull,
            retry_after_ms: 0
        }
    );
    let (_bob_again, got) = Client::login(&relay.url(), &bob).await;
    assert!(got.is_empty(), "part of a refused frame was stored");
    drop(b);
}

/// `client.md` §5.14: the relay keeps the highest store epoch a device reported, across
/// restarts, and answers each report with the one before, so a device running from an older
/// copy of its store learns so before it sends.
#[tokio::test]
async fn store_epochs_keep_the_highest_and_survive_a_restart() {
    let mut relay = RelayProcess::start("epochs", &[]);
    let alice = Device::new(41, 1);
    let mut a = Client::register(&relay.url(), &alice).await;
    assert_eq!(
        a.call(FrameBody::StoreEpoch(1)).await,
        FrameBody::StoreEpochSeen(0)
    );
    assert_eq!(
        a.call(FrameBody::StoreEpoch(4)).await,
        FrameBody::StoreEpochSeen(1)
    );
    // A lower report (a restored copy) is answered with the higher one and changes nothing.
    assert_eq!(
        a.call(FrameBody::StoreEpoch(2)).await,
        FrameBody::StoreEpochSeen(4)
    );
    relay.crash_and_restart();
    let (mut a, _) = Client::login(&relay.url(), &alice).await;
    assert_eq!(
        a.call(FrameBody::StoreEpoch(5)).await,
        FrameBody::StoreEpochSeen(4)
    );
    // Another device's epochs are its own.
    let mut b = Client::register(&relay.url(), &Device::new(42, 1)).await;
    assert_eq!(
        b.call(FrameBody::StoreEpoch(1)).await,
        FrameBody::StoreEpochSeen(0)
    );
}

/// With live delivery an envelope can reach its recipient before the sender hears `Sent`: the
/// audit chain must still show each envelope stored before it was delivered (the record is
/// written at the commit, `live.rs`).
#[tokio::test]
async fn the_audit_chain_shows_every_envelope_stored_before_delivered() {
    use hushwire_proto::audit::{AuditEvent, AuditRecord};
    use sqlx::Row as _;
    let relay = RelayProcess::start("audit-order", &["--sender-rate", "100000"]);
    let bob = Device::new(90, 1);
    let mut b = Client::register(&relay.url(), &bob).await;
    let mut a = Client::register(&relay.url(), &Device::new(91, 1)).await;
    for n in 0..40u8 {
        assert!(matches!(
            a.send_to(bob.address(), &[n]).await,
            FrameBody::Sent(_)
        ));
    }
    let delivered = b.receive(40).await;
    // Audit records are flushed every 500 ms.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let url = format!(
        "sqlite://{}?mode=ro",
        relay.data_dir.join("relay.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows = sqlx::query("SELECT record FROM audit_records ORDER BY sequence")
        .fetch_all(&pool)
        .await
        .unwrap();
    let events: Vec<AuditEvent> = rows
        .iter()
        .map(|r| {
            AuditRecord::from_bytes(&r.get::<Vec<u8>, _>(0))
                .unwrap()
                .event
        })
        .collect();
    for d in &delivered {
        let at = |stored: bool| {
            events.iter().position(|e| match e {
                AuditEvent::EnvelopeStored { envelope, .. } => stored && envelope.0 == d.server_id,
                AuditEvent::EnvelopeDelivered { envelope, .. } => {
                    !stored && envelope.0 == d.server_id
                }
                _ => false,
            })
        };
        let (stored, shown) = (at(true), at(false));
        assert!(stored.is_some() && shown.is_some(), "both recorded");
        assert!(stored < shown, "delivered before stored in the audit chain");
    }
}
