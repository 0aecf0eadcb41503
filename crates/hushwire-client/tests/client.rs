//! The client library against a real relay (in this process, on an ephemeral loopback port):
//! conversations both ways with a party offline, restarts, simultaneous session starts,
//! identity changes, prekey upkeep, transcripts and their export, and what the store holds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{WAIT, options, secret};
use hushwire_client::{
    AuditorKey, Client, ClientError, ClientOptions, ContactId, Direction, Event, MessageState,
    Secret, read_export,
};
use hushwire_relay::config::Settings;
use hushwire_relay::storage::SqliteStore;
use rand_core::SeedableRng as _;
use tokio::sync::broadcast;

struct Relay {
    url: String,
    _running: hushwire_relay::server::Running,
    _dir: tempfile::TempDir,
}

async fn relay() -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let running = common::relay(dir.path()).await;
    Relay {
        url: running.url(),
        _running: running,
        _dir: dir,
    }
}

async fn user(dir: &Path, name: &str, relay: &Relay) -> (Client, PathBuf) {
    let path = dir.join(format!("{name}.db"));
    let client = Client::create(&path, &secret(), options()).await.unwrap();
    client.register(&relay.url, None).await.unwrap();
    (client, path)
}

async fn reopen(path: &Path) -> Client {
    Client::open(path, &secret(), options()).await.unwrap()
}

async fn befriend(
    a: &Client,
    b: &Client,
    a_calls_b: &str,
    b_calls_a: &str,
) -> (ContactId, ContactId) {
    let ab = a
        .add_contact(a_calls_b, b.address().await, false)
        .await
        .unwrap();
    let ba = b
        .add_contact(b_calls_a, a.address().await, false)
        .await
        .unwrap();
    (ab, ba)
}

/// Alice and Bob, registered, each in the other's contacts.
struct Two {
    alice: Client,
    alice_path: PathBuf,
    bob: Client,
    bob_path: PathBuf,
    to_bob: ContactId,
    to_alice: ContactId,
}

async fn alice_and_bob(dir: &Path, relay: &Relay) -> Two {
    let (alice, alice_path) = user(dir, "alice", relay).await;
    let (bob, bob_path) = user(dir, "bob", relay).await;
    let (to_bob, to_alice) = befriend(&alice, &bob, "bob", "alice").await;
    Two {
        alice,
        alice_path,
        bob,
        bob_path,
        to_bob,
        to_alice,
    }
}

/// Texts of the messages received until `n` have arrived.
async fn received(events: &mut broadcast::Receiver<Event>, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, async {
        while out.len() < n {
            if let Event::MessageReceived(m) = events.recv().await.unwrap() {
                out.push(String::from_utf8(m.content.to_vec()).unwrap());
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {n} messages arrived: {out:?}", out.len()));
    out
}

fn drain_texts(events: &mut broadcast::Receiver<Event>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let Event::MessageReceived(m) = e {
            out.push(String::from_utf8(m.content.to_vec()).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_chat_both_ways_with_one_offline_then_restart_and_continue() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let Two {
        alice,
        alice_path,
        bob,
        bob_path,
        to_bob,
        to_alice,
        ..
    } = alice_and_bob(dir.path(), &relay).await;

    // Bob is offline: Alice's messages wait at the relay.
    let mut alice_events = alice.events();
    let mut alice_receipts = alice.events();
    alice.connect().await.unwrap();
    let mut sent_ids = Vec::new();
    for i in 0..3 {
        sent_ids.push(
            alice
                .send_text(to_bob, &format!("hello {i}"))
                .await
                .unwrap(),
        );
    }
    alice.sync(WAIT).await.unwrap();
    assert_eq!(alice.outbox_len().await.unwrap(), 0);

    let mut bob_events = bob.events();
    bob.connect().await.unwrap();
    bob.sync(WAIT).await.unwrap();
    assert_eq!(
        drain_texts(&mut bob_events),
        ["hello 0", "hello 1", "hello 2"],
        "in order, once each"
    );
    // Until the app marks them read they stay unread, whatever happened to the events.
    let unread = bob.unread().await.unwrap();
    let texts: Vec<_> = unread
        .iter()
        .map(|m| String::from_utf8(m.content.to_vec()).unwrap())
        .collect();
    assert_eq!(texts, ["hello 0", "hello 1", "hello 2"]);
    assert_eq!(unread[0].contact_name, "alice");
    bob.mark_read(&unread.iter().map(|m| m.id).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(bob.unread().await.unwrap().is_empty());

    // Safety numbers agree on both sides; verifying with the wrong digits fails.
    let a_number = alice.safety_number(to_bob).await.unwrap();
    let b_number = bob.safety_number(to_alice).await.unwrap();
    assert_eq!(a_number.digits(), b_number.digits());
    assert!(matches!(
        alice.mark_verified(to_bob, "12345").await,
        Err(ClientError::SafetyNumberMismatch)
    ));
    alice
        .mark_verified(to_bob, &b_number.to_string())
        .await
        .unwrap();
    assert!(alice.contact("bob").await.unwrap().verified);

    bob.send_text(to_alice, "hi alice").await.unwrap();
    assert_eq!(received(&mut alice_events, 1).await, ["hi alice"]);

    // Bob's receipts tell Alice each of her messages reached his device.
    let delivered = tokio::time::timeout(WAIT, async {
        let mut seen = Vec::new();
        while seen.len() < 3 {
            if let Event::MessageDelivered { id, .. } = alice_receipts.recv().await.unwrap() {
                seen.push(id);
            }
        }
        seen
    })
    .await
    .expect("receipts for all three messages");
    for id in &sent_ids {
        assert!(delivered.contains(id));
    }

    // Both restart (the stores are reopened from disk) and carry on.
    alice.disconnect().await;
    bob.disconnect().await;
    drop((alice, bob));
    let alice = reopen(&alice_path).await;
    let bob = reopen(&bob_path).await;
    let mut alice_events = alice.events();
    let mut bob_events = bob.events();
    alice.connect().await.unwrap();
    bob.connect().await.unwrap();
    alice.send_text(to_bob, "after restart").await.unwrap();
    assert_eq!(received(&mut bob_events, 1).await, ["after restart"]);
    bob.send_text(to_alice, "still here").await.unwrap();
    assert_eq!(received(&mut alice_events, 1).await, ["still here"]);

    // Each side's transcript holds the whole conversation, verified.
    let (report, records) = alice.open_transcript(to_bob, &mut |_, _| {}).await.unwrap();
    assert_eq!(report.records, 6);
    let texts: Vec<_> = records
        .iter()
        .map(|r| (r.direction, String::from_utf8(r.content.clone()).unwrap()))
        .collect();
    assert_eq!(
        texts,
        [
            (Direction::Sent, "hello 0".to_owned()),
            (Direction::Sent, "hello 1".to_owned()),
            (Direction::Sent, "hello 2".to_owned()),
            (Direction::Received, "hi alice".to_owned()),
            (Direction::Sent, "after restart".to_owned()),
            (Direction::Received, "still here".to_owned()),
        ]
    );
    let (bob_report, _) = bob.open_transcript(to_alice, &mut |_, _| {}).await.unwrap();
    assert_eq!(bob_report.records, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_store_says_precisely_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    assert!(matches!(
        Client::open(&path, &secret(), options()).await,
        Err(ClientError::NotInitialized(_))
    ));
    assert!(matches!(
        Client::create(&path, &Secret::passphrase("short"), options()).await,
        Err(ClientError::WeakPassphrase { .. })
    ));
    let client = Client::create(&path, &secret(), options()).await.unwrap();
    let address = client.address().await;
    drop(client);
    assert!(matches!(
        Client::create(&path, &secret(), options()).await,
        Err(ClientError::AlreadyInitialized(_))
    ));
    assert!(matches!(
        Client::open(
            &path,
            &Secret::passphrase("correct horse battery stapler"),
            options()
        )
        .await,
        Err(ClientError::WrongSecret)
    ));
    assert!(matches!(
        Client::open(&path, &Secret::key([7; 32]), options()).await,
        Err(ClientError::SecretKindMismatch { .. })
    ));
    // The right passphrase still opens it, unchanged by the failed attempts.
    let client = reopen(&path).await;
    assert_eq!(client.address().await, address);
    // After an idle lock the running client checks the passphrase again.
    assert!(matches!(
        client
            .unlock(&Secret::passphrase("not the passphrase"))
            .await,
        Err(ClientError::WrongSecret)
    ));
    client.unlock(&secret()).await.unwrap();
    let (_, audit) = client.verify_audit().await.unwrap();
    let unlocks = audit
        .iter()
        .filter(|r| matches!(r.event, hushwire_client::AuditEvent::StoreUnlocked { .. }))
        .count();
    assert_eq!(
        unlocks, 2,
        "the open and the unlock are recorded, the failure is not"
    );
    drop(client);

    // An app-supplied key works the same way.
    let keyed = dir.path().join("k.db");
    drop(
        Client::create(&keyed, &Secret::key([1; 32]), options())
            .await
            .unwrap(),
    );
    assert!(
        Client::open(&keyed, &Secret::key([1; 32]), options())
            .await
            .is_ok()
    );
    assert!(matches!(
        Client::open(&keyed, &Secret::key([2; 32]), options()).await,
        Err(ClientError::WrongSecret)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_starting_at_once_converge_on_one_session() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let Two {
        alice,
        bob,
        to_bob,
        to_alice,
        ..
    } = alice_and_bob(dir.path(), &relay).await;
    let mut alice_events = alice.events();
    let mut bob_events = bob.events();

    // Each queues a first message before either connects: both start a session.
    alice.send_text(to_bob, "a1").await.unwrap();
    bob.send_text(to_alice, "b1").await.unwrap();
    alice.connect().await.unwrap();
    bob.connect().await.unwrap();
    alice.sync(WAIT).await.unwrap();
    bob.sync(WAIT).await.unwrap();
    assert_eq!(received(&mut bob_events, 1).await, ["a1"]);
    assert_eq!(received(&mut alice_events, 1).await, ["b1"]);

    // From here on both use the same session: a long exchange never fails to decrypt.
    for round in 0..5 {
        alice
            .send_text(to_bob, &format!("a{round}x"))
            .await
            .unwrap();
        bob.send_text(to_alice, &format!("b{round}x"))
            .await
            .unwrap();
    }
    let at_bob = received(&mut bob_events, 5).await;
    let at_alice = received(&mut alice_events, 5).await;
    assert_eq!(at_bob, (0..5).map(|r| format!("a{r}x")).collect::<Vec<_>>());
    assert_eq!(
        at_alice,
        (0..5).map(|r| format!("b{r}x")).collect::<Vec<_>>()
    );
    bob.sync(WAIT).await.unwrap();
    alice.sync(WAIT).await.unwrap();
    for e in std::iter::from_fn(|| alice_events.try_recv().ok())
        .chain(std::iter::from_fn(|| bob_events.try_recv().ok()))
    {
        assert!(!matches!(e, Event::DecryptFailed { .. }), "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_identity_blocks_sending_until_verified_again() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let Two {
        alice,
        bob: _bob,
        to_bob,
        ..
    } = alice_and_bob(dir.path(), &relay).await;
    let (new_bob, _) = user(dir.path(), "bob2", &relay).await;
    alice.connect().await.unwrap();
    alice.send_text(to_bob, "first").await.unwrap();
    alice.sync(WAIT).await.unwrap();

    // Same name, another address: refused unless replaced on purpose.
    assert!(matches!(
        alice
            .add_contact("bob", new_bob.address().await, false)
            .await,
        Err(ClientError::ContactExists(_))
    ));
    let mut events = alice.events();
    assert_eq!(
        alice
            .add_contact("bob", new_bob.address().await, true)
            .await
            .unwrap(),
        to_bob
    );
    assert!(
        matches!(events.try_recv(), Ok(Event::IdentityChanged { contact }) if contact == to_bob)
    );
    assert!(matches!(
        alice.send_text(to_bob, "blocked").await,
        Err(ClientError::IdentityChangedUnverified(_))
    ));
    let number = alice.safety_number(to_bob).await.unwrap();
    alice.mark_verified(to_bob, number.digits()).await.unwrap();

    let mut new_bob_events = new_bob.events();
    new_bob.connect().await.unwrap();
    alice.send_text(to_bob, "to the new device").await.unwrap();
    assert_eq!(
        received(&mut new_bob_events, 1).await,
        ["to the new device"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_prekeys_are_topped_up_when_they_run_low() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bob.db");
    let small = ClientOptions {
        one_time_prekeys: 8,
        ..options()
    };
    let bob = Client::create(&path, &secret(), small).await.unwrap();
    bob.register(&relay.url, None).await.unwrap();
    let mut bob_events = bob.events();
    bob.connect().await.unwrap();
    bob.sync(WAIT).await.unwrap();
    // Seven patients write first: each session claims one of Bob's 8 one-time prekeys.
    for i in 0..7 {
        let (patient, _) = user(dir.path(), &format!("p{i}"), &relay).await;
        let to_bob = patient
            .add_contact("bob", bob.address().await, false)
            .await
            .unwrap();
        patient.connect().await.unwrap();
        patient.send_text(to_bob, "hello").await.unwrap();
        patient.sync(WAIT).await.unwrap();
        patient.disconnect().await;
    }
    let replenished = tokio::time::timeout(WAIT, async {
        loop {
            if let Event::PreKeysReplenished {
                one_time,
                kem_one_time,
            } = bob_events.recv().await.unwrap()
            {
                return (one_time, kem_one_time);
            }
        }
    })
    .await
    .expect("a top-up after the prekeys ran low");
    assert!(replenished.0 >= 6 && replenished.1 >= 6, "{replenished:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_opens_with_the_auditor_key_only_and_any_changed_byte_is_refused() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let Two {
        alice,
        bob,
        to_bob,
        to_alice,
        ..
    } = alice_and_bob(dir.path(), &relay).await;
    let mut bob_events = bob.events();
    let mut alice_events = alice.events();
    alice.connect().await.unwrap();
    bob.connect().await.unwrap();
    alice
        .send_text(to_bob, "my blood sugar was 140 this morning")
        .await
        .unwrap();
    assert_eq!(received(&mut bob_events, 1).await.len(), 1);
    bob.send_text(to_alice, "thanks, that is in range")
        .await
        .unwrap();
    assert_eq!(received(&mut alice_events, 1).await.len(), 1);

    let mut rng = rand_chacha::ChaCha20Rng::from_seed([5; 32]);
    let auditor = AuditorKey::generate(&mut rng);
    let stranger = AuditorKey::generate(&mut rng);
    // Two records, far below the interval: an unsigned tail, signed once, then nothing to sign.
    assert_eq!(alice.sign_unsigned_tails().await.unwrap(), 1);
    assert_eq!(alice.sign_unsigned_tails().await.unwrap(), 0);
    assert_eq!(alice.checkpoint_transcripts().await.unwrap(), 1);
    let mut export = Vec::new();
    let summary = alice
        .export_transcripts(&[], &[*auditor.public()], &mut export, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!((summary.transcripts, summary.records), (1, 2));

    let mut opened = Vec::new();
    let alice_fp = alice.address().await.fingerprint;
    let audited = read_export(
        &mut export.as_slice(),
        &auditor,
        Some(&alice_fp),
        &mut |_, records| opened.extend(records),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(audited.exporter, alice_fp.to_string());
    assert!(audited.exporter_checked);
    let audited = audited.transcripts;
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0].report.records, 2);
    assert_eq!(audited[0].report.unsigned_tail, 0);
    assert_eq!(audited[0].signer, alice_fp.to_string());
    let texts: Vec<_> = opened
        .iter()
        .map(|r| String::from_utf8(r.content.clone()).unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "my blood sugar was 140 this morning",
            "thanks, that is in range"
        ]
    );

    assert!(
        read_export(
            &mut export.as_slice(),
            &stranger,
            None,
            &mut |_, _| {},
            &mut |_| {}
        )
        .is_err()
    );
    // Expecting bob's device as the exporter: refused, naming alice's, and no record handed out.
    let bob_fp = bob.address().await.fingerprint;
    let mut handed = 0;
    let wrong = read_export(
        &mut export.as_slice(),
        &auditor,
        Some(&bob_fp),
        &mut |_, records| handed += records.len(),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        wrong.contains("expected exporter") && wrong.contains(&alice_fp.to_string()),
        "{wrong}"
    );
    assert_eq!(handed, 0);
    for position in [10, export.len() / 2, export.len() - 1] {
        let mut tampered = export.clone();
        tampered[position] ^= 0x01;
        assert!(
            read_export(
                &mut tampered.as_slice(),
                &auditor,
                None,
                &mut |_, _| {},
                &mut |_| {}
            )
            .is_err(),
            "a flipped byte at {position} was accepted"
        );
    }
    let cut = &export[..export.len() - 10];
    assert!(read_export(&mut &cut[..], &auditor, None, &mut |_, _| {}, &mut |_| {}).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_file_holds_no_message_text_and_no_contact_name() {
    const MARKER: &str = "PHI-MARKER-insulin-4f1e";
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, alice_path) = user(dir.path(), "alice", &relay).await;
    let (bob, bob_path) = user(dir.path(), "bob", &relay).await;
    let (to_bob, _) = befriend(&alice, &bob, "Dr-Marker-Name", "Patient-Marker-Name").await;
    let mut bob_events = bob.events();
    alice.connect().await.unwrap();
    bob.connect().await.unwrap();
    for i in 0..5 {
        alice
            .send_text(to_bob, &format!("{MARKER} {i}"))
            .await
            .unwrap();
    }
    assert_eq!(received(&mut bob_events, 5).await.len(), 5);
    // One more queued while offline: the outbox is sealed too.
    alice.disconnect().await;
    alice.send_text(to_bob, MARKER).await.unwrap();
    bob.disconnect().await;
    drop((alice, bob));

    for path in [&alice_path, &bob_path] {
        let mut bytes = std::fs::read(path).unwrap();
        if let Ok(wal) = std::fs::read(path.with_extension("db-wal")) {
            bytes.extend(wal);
        }
        assert!(bytes.len() > 10_000, "the scan reads the real store");
        for needle in [
            MARKER,
            "Dr-Marker-Name",
            "Patient-Marker-Name",
            "correct horse",
        ] {
            let hits = bytes
                .windows(needle.len())
                .filter(|w| *w == needle.as_bytes())
                .count();
            assert_eq!(hits, 0, "{needle:?} found in {}", path.display());
        }
    }
    // Positive control: the same scan (store and write-ahead log, as above) finds text that is
    // stored in the clear (the schema, which may still sit in the log).
    let mut bytes = std::fs::read(&alice_path).unwrap();
    if let Ok(wal) = std::fs::read(alice_path.with_extension("db-wal")) {
        bytes.extend(wal);
    }
    assert!(bytes.windows(11).any(|w| w == b"transcripts"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_relay_is_reached_with_the_clinic_ca_and_refused_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let config = Settings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(dir.path().to_owned()),
        tls_cert: Some(cert_path),
        tls_key: Some(key_path),
        ..Settings::default()
    }
    .resolve(Settings::default());
    let store = SqliteStore::open(&dir.path().join("relay.db"))
        .await
        .unwrap();
    let running = hushwire_relay::server::start(store, config, None)
        .await
        .unwrap();
    let url = running.url();
    assert!(url.starts_with("wss://"), "{url}");

    let trusting = ClientOptions {
        tls: hushwire_client::TlsRoots {
            extra: vec![cert.cert.der().clone()],
        },
        ..options()
    };
    let alice = Client::create(&dir.path().join("a.db"), &secret(), trusting.clone())
        .await
        .unwrap();
    let bob = Client::create(&dir.path().join("b.db"), &secret(), trusting)
        .await
        .unwrap();
    alice.register(&url, None).await.unwrap();
    bob.register(&url, None).await.unwrap();
    let (to_bob, _) = befriend(&alice, &bob, "bob", "alice").await;
    let mut bob_events = bob.events();
    alice.connect().await.unwrap();
    bob.connect().await.unwrap();
    alice.send_text(to_bob, "over TLS").await.unwrap();
    assert_eq!(received(&mut bob_events, 1).await, ["over TLS"]);

    // Without the clinic's CA the certificate is not trusted: no connection, a clear error.
    let stranger = Client::create(&dir.path().join("c.db"), &secret(), options())
        .await
        .unwrap();
    let refused = stranger.register(&url, None).await.unwrap_err();
    assert!(
        matches!(&refused, ClientError::Connection(reason) if reason.contains("TLS")),
        "{refused}"
    );
}

/// Changes a closed store behind the client's back, as someone with the file could.
async fn tamper(path: &Path, sql: &'static str) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_chain_records_access_and_any_edit_is_detected() {
    use hushwire_client::AuditEvent;
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let Two {
        alice,
        alice_path,
        bob,
        to_bob,
        ..
    } = alice_and_bob(dir.path(), &relay).await;
    let mut bob_events = bob.events();
    alice.connect().await.unwrap();
    bob.connect().await.unwrap();
    alice.send_text(to_bob, "hello").await.unwrap();
    assert_eq!(received(&mut bob_events, 1).await.len(), 1);
    let number = alice.safety_number(to_bob).await.unwrap();
    alice.mark_verified(to_bob, number.digits()).await.unwrap();
    alice.open_transcript(to_bob, &mut |_, _| {}).await.unwrap();
    let mut export = Vec::new();
    let auditor = AuditorKey::generate(&mut rand_chacha::ChaCha20Rng::from_seed([6; 32]));
    alice
        .export_transcripts(&[], &[*auditor.public()], &mut export, &mut |_, _| {})
        .await
        .unwrap();
    alice.checkpoint_transcripts().await.unwrap();
    alice.disconnect().await;
    drop(alice);
    let alice = reopen(&alice_path).await;

    let (report, records) = alice.verify_audit().await.unwrap();
    let kinds: Vec<u8> = records.iter().map(|r| r.event.tag()).collect();
    // Session started, contact verified, transcript opened, exported, checkpointed, and the
    // store unlocked on reopening, in that order.
    let expected = [0x20, 0x22, 0x32, 0x31, 0x30, 0x23];
    assert_eq!(kinds, expected, "{records:?}");
    assert!(matches!(records[5].event, AuditEvent::StoreUnlocked { .. }));
    assert_eq!(report.records, 6);
    assert_eq!(
        report.unsigned_tail, 1,
        "the checkpoint covers all but the last unlock"
    );
    alice.disconnect().await;
    drop(alice);

    // Edit one stored record: the next verification fails and says where.
    tamper(
        &alice_path,
        "UPDATE audit_records SET sealed = sealed || x'00' WHERE sequence = 2",
    )
    .await;
    let alice = reopen(&alice_path).await;
    let err = alice.verify_audit().await.unwrap_err();
    assert!(err.to_string().contains("record 2"), "{err}");
    drop(alice);

    // Removing the record is detected too.
    tamper(&alice_path, "DELETE FROM audit_records WHERE sequence = 2").await;
    let alice = reopen(&alice_path).await;
    assert!(alice.verify_audit().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_exports_are_written_automatically_and_open_with_the_archive_key() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = dir.path().join("archive");
    let archive_key = AuditorKey::generate(&mut rand_chacha::ChaCha20Rng::from_seed([8; 32]));
    let archiving = ClientOptions {
        archive: Some(hushwire_client::ArchiveSettings {
            recipients: vec![*archive_key.public()],
            directory: archive_dir.clone(),
            every: Duration::ZERO,
        }),
        ..options()
    };
    let agent = Client::create(&dir.path().join("agent.db"), &secret(), archiving)
        .await
        .unwrap();
    agent.register(&relay.url, None).await.unwrap();
    let (patient, _) = user(dir.path(), "patient", &relay).await;
    let (to_patient, to_agent) = befriend(&agent, &patient, "patient", "agent").await;

    // Connecting runs the first archive by itself.
    agent.connect().await.unwrap();
    let archives = || {
        std::fs::read_dir(&archive_dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "hwx"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    tokio::time::timeout(WAIT, async {
        while archives().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("an archive written on connection");

    let mut agent_events = agent.events();
    patient.connect().await.unwrap();
    patient.send_text(to_agent, "refill please").await.unwrap();
    assert_eq!(received(&mut agent_events, 1).await, ["refill please"]);
    agent.send_text(to_patient, "done").await.unwrap();
    let path = agent
        .archive_if_due()
        .await
        .unwrap()
        .expect("due (interval 0)");
    assert!(!path.with_extension("hwx.partial").exists());

    let mut texts = Vec::new();
    read_export(
        &mut std::fs::File::open(&path).unwrap(),
        &archive_key,
        None,
        &mut |_, records| {
            texts.extend(
                records
                    .into_iter()
                    .map(|r| String::from_utf8(r.content).unwrap()),
            )
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(texts, ["refill please", "done"]);
}

/// A device played over the raw relay protocol (a core account, no client library), to do what
/// no honest client would.
struct RawDevice {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u32,
}

impl RawDevice {
    /// Connects and registers a new device whose identity comes from `seed`.
    async fn register(url: &str, seed: u8) -> Self {
        use hushwire::proto::relay::{Credentials, FrameBody};
        let account =
            hushwire::Account::new(9, 0, &mut rand_chacha::ChaCha20Rng::from_seed([seed; 32]));
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut device = Self { socket, next_id: 1 };
        let FrameBody::Challenge(challenge) = device.next_frame().await.body else {
            panic!("no challenge")
        };
        let credentials = Credentials::answer(
            account.identity_key().clone(),
            account.device_id(),
            &challenge,
            account.identity(),
        );
        let answer = device
            .call(FrameBody::Register {
                credentials,
                invite: None,
                certificate: None,
            })
            .await;
        assert_eq!(answer, FrameBody::Ok);
        device
    }

    async fn next_frame(&mut self) -> hushwire::proto::relay::Frame {
        use futures_util::StreamExt as _;
        use hushwire::proto::codec::Codec as _;
        loop {
            let message = self.socket.next().await.unwrap().unwrap();
            if let tokio_tungstenite::tungstenite::Message::Binary(b) = message {
                return hushwire::proto::relay::Frame::from_bytes(&b).unwrap();
            }
        }
    }

    /// Sends one request and returns its answer (skipping frames the relay sends on its own).
    async fn call(
        &mut self,
        body: hushwire::proto::relay::FrameBody,
    ) -> hushwire::proto::relay::FrameBody {
        use futures_util::SinkExt as _;
        use hushwire::proto::codec::Codec as _;
        let request_id = self.next_id;
        self.next_id += 1;
        let frame = hushwire::proto::relay::Frame { request_id, body };
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::Binary(
                frame.to_bytes().into(),
            ))
            .await
            .unwrap();
        loop {
            let answer = self.next_frame().await;
            if answer.request_id == request_id {
                return answer.body;
            }
        }
    }
}

/// Sends each payload to `to` from a raw device, as is.
async fn raw_send(url: &str, to: hushwire_client::Address, payloads: Vec<Vec<u8>>) {
    use hushwire::proto::relay::{FrameBody, OutgoingEnvelope};
    let mut device = RawDevice::register(url, 9).await;
    for payload in payloads {
        let answer = device
            .call(FrameBody::Send(vec![OutgoingEnvelope {
                recipient: to.to_device_address(),
                payload,
            }]))
            .await;
        assert!(matches!(answer, FrameBody::Sent(_)), "{answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecryptable_message_is_reported_acknowledged_and_not_shown() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let (bob, bob_path) = user(dir.path(), "bob", &relay).await;
    let bob_address = bob.address().await;
    // Garbage, and a well-formed ratchet message from nobody Bob has a session with.
    raw_send(
        &relay.url,
        bob_address,
        vec![b"not a message".to_vec(), {
            let mut forged = vec![1u8, 1];
            forged.extend_from_slice(&[0u8; 200]);
            forged
        }],
    )
    .await;
    let mut events = bob.events();
    bob.connect().await.unwrap();
    bob.sync(WAIT).await.unwrap();
    let mut failures = Vec::new();
    while let Ok(e) = events.try_recv() {
        assert!(!matches!(e, Event::MessageReceived(_)), "{e:?}");
        if let Event::DecryptFailed { sender, reason } = e {
            failures.push((sender, reason));
        }
    }
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(failures[0].1.contains("malformed"), "{failures:?}");

    // They were acknowledged: a restart does not bring them back.
    bob.disconnect().await;
    drop(bob);
    let bob = reopen(&bob_path).await;
    let mut events = bob.events();
    bob.connect().await.unwrap();
    bob.sync(WAIT).await.unwrap();
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(e, Event::DecryptFailed { .. }),
            "redelivered: {e:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_signed_prekey_is_rotated_on_connect_and_new_sessions_use_it() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let rotating = ClientOptions {
        signed_prekey_max_age: Duration::ZERO,
        ..options()
    };
    let bob = Client::create(&dir.path().join("bob.db"), &secret(), rotating)
        .await
        .unwrap();
    bob.register(&relay.url, None).await.unwrap();
    let mut bob_events = bob.events();
    bob.connect().await.unwrap();
    tokio::time::timeout(WAIT, async {
        while !matches!(bob_events.recv().await.unwrap(), Event::SignedPreKeyRotated) {}
    })
    .await
    .expect("rotated");
    let (alice, _) = user(dir.path(), "alice", &relay).await;
    let to_bob = alice
        .add_contact("bob", bob.address().await, false)
        .await
        .unwrap();
    alice.connect().await.unwrap();
    alice.send_text(to_bob, "after rotation").await.unwrap();
    assert_eq!(received(&mut bob_events, 1).await, ["after rotation"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_to_an_unreachable_contact_are_held_without_blocking_others_or_sync() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let Two {
        alice, bob, to_bob, ..
    } = alice_and_bob(dir.path(), &relay).await;
    // Nobody registered this address: the relay has no bundle for it.
    let ghost: hushwire_client::Address = format!("{}:1", "ab".repeat(32)).parse().unwrap();
    let to_ghost = alice.add_contact("ghost", ghost, false).await.unwrap();
    let mut alice_events = alice.events();
    let mut bob_events = bob.events();
    alice.send_text(to_ghost, "anyone there?").await.unwrap();
    alice.send_text(to_bob, "hi bob").await.unwrap();
    alice.connect().await.unwrap();
    bob.connect().await.unwrap();
    assert_eq!(received(&mut bob_events, 1).await, ["hi bob"]);
    alice
        .sync(WAIT)
        .await
        .expect("a held contact does not block sync");
    let held = std::iter::from_fn(|| alice_events.try_recv().ok()).find_map(|e| match e {
        Event::SendHeld { contact, reason } => Some((contact, reason)),
        _ => None,
    });
    let (contact, reason) = held.expect("SendHeld reported");
    assert_eq!(contact, to_ghost);
    assert!(
        reason.contains("NoPreKeys") || reason.contains("UnknownDevice"),
        "{reason}"
    );
    assert_eq!(
        alice.outbox_len().await.unwrap(),
        1,
        "still queued, not dropped"
    );
}

/// Waits for an event matching `want`, returning every event seen until then.
async fn until(
    events: &mut broadcast::Receiver<Event>,
    what: &str,
    want: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        loop {
            let e = events.recv().await.unwrap();
            let hit = want(&e);
            seen.push(e);
            if hit {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what}; saw {seen:?}"));
    seen
}

/// Issue 10, cases 2 and 5: Alice starts a session from Bob's bundle and leaves it unanswered
/// while Bob's signed prekey rotates out; her three messages cannot be read at Bob. Without
/// anyone acting, Bob asks for a new session, Alice adopts it and sends the three again, Bob
/// shows each exactly once, both see a reset notice, Alice's states end Delivered, and the
/// conversation goes on both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_session_whose_prekey_rotated_out_heals_and_loses_nothing() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, _) = user(dir.path(), "alice", &relay).await;
    let rotating = ClientOptions {
        signed_prekey_max_age: Duration::ZERO,
        ..options()
    };
    let bob_path = dir.path().join("bob.db");
    let bob = Client::create(&bob_path, &secret(), rotating.clone())
        .await
        .unwrap();
    bob.register(&relay.url, None).await.unwrap();
    let (to_bob, to_alice) = befriend(&alice, &bob, "bob", "alice").await;
    alice.connect().await.unwrap();
    alice.wait_connected(WAIT).await.unwrap();
    // Showing the safety number starts Alice's session from Bob's current bundle.
    alice.safety_number(to_bob).await.unwrap();
    alice.disconnect().await;

    // Bob's signed prekey rotates (every connection, at max age zero) until Alice's is gone.
    for _ in 0..hushwire::KEPT_ROTATED_PREKEYS {
        let mut events = bob.events();
        bob.connect().await.unwrap();
        until(&mut events, "rotation", |e| {
            matches!(e, Event::SignedPreKeyRotated)
        })
        .await;
        bob.disconnect().await;
    }

    let mut alice_events = alice.events();
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        ids.push(alice.send_text(to_bob, text).await.unwrap());
    }
    alice.connect().await.unwrap();
    alice.sync(WAIT).await.unwrap();
    for id in &ids {
        assert_eq!(
            alice.message_state(*id).await.unwrap(),
            Some(MessageState::Sent)
        );
    }

    let mut bob_events = bob.events();
    bob.connect().await.unwrap();
    let texts = received(&mut bob_events, 3).await;
    assert_eq!(texts, ["one", "two", "three"]);
    until(&mut alice_events, "reset notice at alice", |e| {
        matches!(
            e,
            Event::SessionReset {
                requested_by_peer: true,
                resent: 3,
                ..
            }
        )
    })
    .await;
    for id in &ids {
        let id = *id;
        until(&mut alice_events, "delivered", |e| {
            matches!(e, Event::MessageStateChanged { id: i, state: MessageState::Delivered, .. } if *i == id)
        })
        .await;
    }
    // Nothing was shown twice, and the conversation goes on both ways.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut rest = drain_texts(&mut bob_events);
    bob.send_text(to_alice, "got them").await.unwrap();
    assert_eq!(received(&mut alice_events, 1).await, ["got them"]);
    alice.send_text(to_bob, "good").await.unwrap();
    rest.extend(received(&mut bob_events, 1).await);
    assert_eq!(rest, ["good"], "a message was shown twice");
    let unread: Vec<_> = bob
        .unread()
        .await
        .unwrap()
        .into_iter()
        .map(|m| String::from_utf8(m.content.to_vec()).unwrap())
        .collect();
    assert_eq!(unread, ["one", "two", "three", "good"]);
    // Both audit chains record the reset.
    let has_reset = |records: &[hushwire_client::AuditRecord]| {
        records
            .iter()
            .any(|r| matches!(r.event, hushwire_client::AuditEvent::SessionReset { .. }))
    };
    assert!(has_reset(&alice.verify_audit().await.unwrap().1));
    assert!(has_reset(&bob.verify_audit().await.unwrap().1));
}

/// Issue 10, case 5: while the recipient is away, a sent message is `Sent`, then, with no
/// receipt within the timeout, `NotConfirmed`; the late receipt makes it `Delivered`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_a_receipt_becomes_not_confirmed_then_delivered() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let quick = ClientOptions {
        receipt_timeout: Duration::from_millis(300),
        ..options()
    };
    let alice = Client::create(&dir.path().join("alice.db"), &secret(), quick)
        .await
        .unwrap();
    alice.register(&relay.url, None).await.unwrap();
    let (bob, _) = user(dir.path(), "bob", &relay).await;
    let (to_bob, _) = befriend(&alice, &bob, "bob", "alice").await;
    let mut events = alice.events();
    alice.connect().await.unwrap();
    let id = alice.send_text(to_bob, "are you there?").await.unwrap();
    assert_eq!(
        alice.message_state(id).await.unwrap(),
        Some(MessageState::Queued)
    );
    let seen = until(&mut events, "not confirmed", |e| {
        matches!(
            e,
            Event::MessageStateChanged {
                state: MessageState::NotConfirmed,
                ..
            }
        )
    })
    .await;
    assert!(
        seen.iter().any(|e| matches!(
            e,
            Event::MessageStateChanged {
                state: MessageState::Sent,
                ..
            }
        )),
        "{seen:?}"
    );
    assert_eq!(
        alice.sent_messages(to_bob).await.unwrap(),
        [(id, MessageState::NotConfirmed)]
    );
    bob.connect().await.unwrap();
    until(&mut events, "delivered", |e| {
        matches!(
            e,
            Event::MessageStateChanged {
                state: MessageState::Delivered,
                ..
            }
        )
    })
    .await;
    assert_eq!(
        alice.message_state(id).await.unwrap(),
        Some(MessageState::Delivered)
    );
}

/// Issue 10, case 3 over a real relay: Alice backs her store up, sends m1, restores the backup
/// and sends m2. Her first connection finds the store older than the relay's record and starts
/// a new session before anything is encrypted, so m2 is not sent under m1's key: Bob shows it
/// (no key reuse, no duplicate), and the conversation goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_restored_from_a_backup_never_reuses_a_message_key() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let two = alice_and_bob(dir.path(), &relay).await;
    let mut bob_events = two.bob.events();
    two.alice.connect().await.unwrap();
    two.bob.connect().await.unwrap();
    two.alice.send_text(two.to_bob, "hi").await.unwrap();
    assert_eq!(received(&mut bob_events, 1).await, ["hi"]);

    let backup = dir.path().join("alice-backup.db");
    two.alice.backup(&backup).await.unwrap();
    assert!(matches!(
        two.alice.backup(&backup).await,
        Err(ClientError::BackupExists(_))
    ));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the backup is readable by others: {mode:o}"
        );
    }
    two.alice.send_text(two.to_bob, "m1").await.unwrap();
    assert_eq!(received(&mut bob_events, 1).await, ["m1"]);
    two.alice.sync(WAIT).await.unwrap();

    // Restore: refused while the store is open; then anything but a store, a wrong passphrase
    // and a backup of another store (Bob's) are refused, and nothing is ever deleted.
    assert!(matches!(
        Client::restore(&backup, &two.alice_path, &secret(), &options(), false).await,
        Err(ClientError::StoreInUse { .. })
    ));
    two.alice.disconnect().await;
    drop(two.alice);
    // The connection's tasks let go of their clones (and so of the store's lock) as they end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let not_a_store = dir.path().join("notes.txt");
    std::fs::write(&not_a_store, b"hello").unwrap();
    let refused =
        Client::restore(&not_a_store, &two.alice_path, &secret(), &options(), false).await;
    assert!(
        matches!(refused, Err(ClientError::NotABackup(_))),
        "{refused:?}"
    );
    let wrong = Secret::passphrase("not the passphrase at all");
    let refused = Client::restore(&backup, &two.alice_path, &wrong, &options(), false).await;
    assert!(
        matches!(refused, Err(ClientError::WrongSecret)),
        "{refused:?}"
    );
    let bobs = dir.path().join("bob-backup.db");
    two.bob.backup(&bobs).await.unwrap();
    let refused = Client::restore(&bobs, &two.alice_path, &secret(), &options(), false).await;
    assert!(
        matches!(refused, Err(ClientError::BackupOfAnotherStore(_))),
        "{refused:?}"
    );
    let aside = Client::restore(&backup, &two.alice_path, &secret(), &options(), false)
        .await
        .unwrap()
        .expect("the replaced store is kept");
    assert!(aside.exists(), "{}", aside.display());
    let alice = reopen(&two.alice_path).await;
    let mut alice_events = alice.events();
    alice.connect().await.unwrap();
    until(&mut alice_events, "rollback detected", |e| {
        matches!(e, Event::StoreRollbackDetected { .. })
    })
    .await;
    alice.send_text(two.to_bob, "m2").await.unwrap();
    let seen = until(
        &mut bob_events,
        "m2",
        |e| matches!(e, Event::MessageReceived(m) if m.content.as_slice() == b"m2"),
    )
    .await;
    assert!(
        !seen.iter().any(|e| matches!(
            e,
            Event::KeyReuseDetected { .. } | Event::DecryptFailed { .. }
        )),
        "{seen:?}"
    );
    two.bob.send_text(two.to_alice, "still here").await.unwrap();
    assert_eq!(received(&mut alice_events, 1).await, ["still here"]);
}

/// Two copies of one device online: the relay closes the older connection with 4001, and that
/// client reports "connected elsewhere" and does not reconnect on its own (so the copies do not
/// knock each other off in a loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_connected_elsewhere_stops_reconnecting_and_says_why() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, _) = user(dir.path(), "alice", &relay).await;
    let copy_path = dir.path().join("alice-copy.db");
    alice.backup(&copy_path).await.unwrap();
    let copy = reopen(&copy_path).await;
    alice.connect().await.unwrap();
    alice.wait_connected(WAIT).await.unwrap();
    let mut state = alice.connection_state();
    copy.connect().await.unwrap();
    copy.wait_connected(WAIT).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let hushwire_client::ConnectionState::Disconnected { reason, .. } =
                &*state.borrow_and_update()
            {
                assert!(reason.contains("elsewhere"), "{reason}");
                return;
            }
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("the older connection is told it was replaced");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        matches!(
            &*alice.connection_state().borrow(),
            hushwire_client::ConnectionState::Disconnected { .. }
        ),
        "it reconnected on its own"
    );
    assert_eq!(
        *copy.connection_state().borrow(),
        hushwire_client::ConnectionState::Connected
    );
}

/// Issue 11: `sync` returns only once the relay has handled the acknowledgements of what it
/// delivered, so after a backlog the relay's mailbox is empty at that moment (it used to keep
/// most of a backlog, to be delivered again next time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_returns_with_the_mailbox_empty_after_a_backlog() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let two = alice_and_bob(dir.path(), &relay).await;
    two.alice.connect().await.unwrap();
    for i in 0..300 {
        two.alice
            .send_text(two.to_bob, &format!("backlog {i}"))
            .await
            .unwrap();
    }
    two.alice.sync(WAIT).await.unwrap();
    two.alice.disconnect().await;
    let waiting = |relay_db: PathBuf| async move {
        use sqlx::ConnectOptions as _;
        let mut c = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(relay_db)
            .read_only(true)
            .connect()
            .await
            .unwrap();
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM envelopes")
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    let relay_db = relay._dir.path().join("relay.db");
    assert_eq!(
        waiting(relay_db.clone()).await,
        300,
        "the backlog is at the relay"
    );
    two.bob.connect().await.unwrap();
    two.bob.sync(WAIT).await.unwrap();
    // As a command does when sync returns: leave at once.
    two.bob.disconnect().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(two.bob.unread().await.unwrap().len(), 300);
    // Bob's receipts to Alice wait in her mailbox; none of the 300 is left in his.
    let mut c = {
        use sqlx::ConnectOptions as _;
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(relay_db)
            .read_only(true)
            .connect()
            .await
            .unwrap()
    };
    let bob_fingerprint = two.bob.address().await.fingerprint.0.to_vec();
    let for_bob: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM envelopes WHERE recipient_fingerprint = ?")
            .bind(bob_fingerprint)
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(for_bob, 0, "envelopes left in bob's mailbox after sync");
}

/// Issue 11: a message queued while the relay is out of reach can be taken back; one the relay
/// holds cannot. The cancelled one never arrives, and the audit chain says it never left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_message_can_be_cancelled_until_the_relay_holds_it() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let two = alice_and_bob(dir.path(), &relay).await;
    let oops = two
        .alice
        .send_text(two.to_bob, "wrong patient!")
        .await
        .unwrap();
    let fine = two
        .alice
        .send_text(two.to_bob, "see you at 3")
        .await
        .unwrap();
    assert_eq!(
        two.alice.queued_messages().await.unwrap(),
        [(two.to_bob, oops), (two.to_bob, fine)]
    );
    assert_eq!(two.alice.cancel(oops).await.unwrap(), two.to_bob);
    assert_eq!(
        two.alice.message_state(oops).await.unwrap(),
        Some(MessageState::Cancelled)
    );
    assert!(matches!(
        two.alice.cancel(oops).await,
        Err(ClientError::NotCancellable(_))
    ));
    let mut bob_events = two.bob.events();
    two.alice.connect().await.unwrap();
    two.bob.connect().await.unwrap();
    assert_eq!(received(&mut bob_events, 1).await, ["see you at 3"]);
    two.alice.sync(WAIT).await.unwrap();
    assert!(matches!(
        two.alice.cancel(fine).await,
        Err(ClientError::NotCancellable(_))
    ));
    two.bob.sync(WAIT).await.unwrap();
    assert!(drain_texts(&mut bob_events).is_empty());
    let (_, records) = two.alice.verify_audit().await.unwrap();
    assert!(records.iter().any(|r| matches!(
        r.event,
        hushwire_client::AuditEvent::MessageCancelled { message_id, .. } if message_id == oops.0
    )));
}

/// Fetches `target`'s bundle `n` times from a raw device (as a prekey drainer would),
/// returning the one-time prekey id each bundle carried.
async fn raw_fetch(
    url: &str,
    seed: u8,
    target: hushwire_client::Address,
    n: usize,
) -> Vec<Option<u32>> {
    use hushwire::proto::relay::FrameBody;
    let mut device = RawDevice::register(url, seed).await;
    let mut ids = Vec::new();
    for _ in 0..n {
        match device
            .call(FrameBody::FetchBundle(target.to_device_address()))
            .await
        {
            FrameBody::Bundle(b) => ids.push(b.one_time_prekey.map(|k| k.id)),
            other => panic!("{other:?}"),
        }
    }
    ids
}

/// Issue 12 on the client: a relay drained of a device's one-time prekeys (bundles fetched and
/// never used) no longer leaves it without any for good. Past twice its target of unused keys,
/// the client retires the oldest handed-out ones and keeps publishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_device_keeps_publishing_one_time_prekeys() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let small = ClientOptions {
        one_time_prekeys: 4,
        ..options()
    };
    let bob = Client::create(&dir.path().join("bob.db"), &secret(), small)
        .await
        .unwrap();
    bob.register(&relay.url, None).await.unwrap();
    let mut bob_events = bob.events();
    bob.connect().await.unwrap();
    bob.sync(WAIT).await.unwrap();
    // Three rounds of four fetches: twelve keys handed out and never used, more than the eight
    // (twice the target) the client keeps.
    for round in 0..3u8 {
        let ids = raw_fetch(&relay.url, 100 + round, bob.address().await, 4).await;
        assert!(ids.iter().all(Option::is_some), "round {round}: {ids:?}");
        until(
            &mut bob_events,
            "a top-up",
            |e| matches!(e, Event::PreKeysReplenished { one_time, .. } if *one_time > 0),
        )
        .await;
    }
    let ids = raw_fetch(&relay.url, 120, bob.address().await, 1).await;
    assert!(
        ids[0].is_some(),
        "no one-time prekey after the drain: {ids:?}"
    );
}

/// A relay that lost a device (its data wiped or restored from an old copy) answers
/// `UnknownDevice`: the client registers the same identity again by itself, says so, and the
/// conversation goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_the_relay_lost_registers_again_by_itself() {
    let relay = relay().await;
    let dir = tempfile::tempdir().unwrap();
    let two = alice_and_bob(dir.path(), &relay).await;
    let mut bob_events = two.bob.events();
    two.alice.connect().await.unwrap();
    two.bob.connect().await.unwrap();
    two.alice.send_text(two.to_bob, "before").await.unwrap();
    assert_eq!(received(&mut bob_events, 1).await, ["before"]);
    two.bob.disconnect().await;
    {
        use sqlx::ConnectOptions as _;
        let mut c = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(relay._dir.path().join("relay.db"))
            .connect()
            .await
            .unwrap();
        let bob = two.bob.address().await.fingerprint.0.to_vec();
        for table in [
            "devices",
            "signed_prekeys",
            "last_resort_kem_prekeys",
            "one_time_prekeys",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE fingerprint = ?"
            )))
            .bind(&bob)
            .execute(&mut c)
            .await
            .unwrap();
        }
    }
    two.bob.connect().await.unwrap();
    until(&mut bob_events, "registered again", |e| {
        matches!(e, Event::RegisteredAgain)
    })
    .await;
    two.bob.wait_connected(WAIT).await.unwrap();
    two.alice.send_text(two.to_bob, "after").await.unwrap();
    assert_eq!(received(&mut bob_events, 1).await, ["after"]);
}
