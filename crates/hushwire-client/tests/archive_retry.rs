//! An archive copy is sealed once and the same bytes are sent on every retry
//! (`docs/conversations.md` §7.3), so a `PutArchive` whose `Ok` was lost, filed again after a
//! reconnection or a restart, is one entry in the clinic's archive (the relay stores an identical
//! repeat once, §5.2). The lost answer is real: a proxy between an agent's client and the relay
//! forwards the `PutArchive`, lets the relay store it, swallows its `Ok` and cuts the connection.
//! Also: a copy sealed under a policy since replaced is sent as sealed, and a store written by
//! the previous version (schema 9, no `archive_outbox.envelope`) still files its copies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::clinic::{Org, staff};
use common::{WAIT, clinic_relay, device, options, secret};
use futures_util::{SinkExt as _, StreamExt as _};
use hushwire::archive::ArchiveSecretKey;
use hushwire::payload::Payload;
use hushwire_client::{ClaimOutcome, Client};
use hushwire_proto::clinic::Role;
use hushwire_proto::conversation::{ArchivePolicy, ConversationId};
use sqlx::Connection as _;
use tokio_tungstenite::tungstenite::Message;

const CLINIC: &str = "Harbour Clinic";
/// Frame type bytes (`relay-protocol.md` §2, `conversations.md` §5.2).
const PUT_ARCHIVE: u8 = 0x19;
const OK: u8 = 0x81;

/// A WebSocket proxy in front of the relay that can lose the answer to the next `PutArchive`
/// (forward it, drop the relay's answer, close both sides) and can refuse connections.
struct Proxy {
    url: String,
    /// Lose the answer to the next `PutArchive`.
    lose_next: Arc<AtomicBool>,
    /// `Ok` answers to a `PutArchive` lost so far.
    lost: Arc<AtomicUsize>,
    /// Close every connection at once.
    down: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/v1/websocket", listener.local_addr().unwrap());
        let proxy = Self {
            url,
            lose_next: Arc::new(AtomicBool::new(false)),
            lost: Arc::new(AtomicUsize::new(0)),
            down: Arc::new(AtomicBool::new(false)),
        };
        let (lose_next, lost, down) = (
            proxy.lose_next.clone(),
            proxy.lost.clone(),
            proxy.down.clone(),
        );
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if down.load(Ordering::SeqCst) {
                    continue;
                }
                let (upstream, lose_next, lost) =
                    (upstream.clone(), lose_next.clone(), lost.clone());
                tokio::spawn(async move {
                    let Ok(mut client) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    let Ok((mut relay, _)) = tokio_tungstenite::connect_async(&upstream).await
                    else {
                        return;
                    };
                    // The request id of the `PutArchive` whose answer is to be lost.
                    let mut losing: Option<[u8; 4]> = None;
                    loop {
                        tokio::select! {
                            m = client.next() => {
                                let Some(Ok(m)) = m else { return };
                                if let Message::Binary(b) = &m
                                    && b.len() >= 6
                                    && b[1] == PUT_ARCHIVE
                                    && lose_next.swap(false, Ordering::SeqCst)
                                {
                                    losing = Some([b[2], b[3], b[4], b[5]]);
                                }
                                if relay.send(m).await.is_err() { return; }
                            }
                            m = relay.next() => {
                                let Some(Ok(m)) = m else { return };
                                if let Message::Binary(b) = &m
                                    && b.len() >= 6
                                    && losing == Some([b[2], b[3], b[4], b[5]])
                                {
                                    assert_eq!(b[1], OK, "the relay stored the first filing");
                                    lost.fetch_add(1, Ordering::SeqCst);
                                    // Dropping both sockets: the connection is gone, and so is
                                    // the answer.
                                    return;
                                }
                                if client.send(m).await.is_err() { return; }
                            }
                        }
                    }
                });
            }
        });
        proxy
    }
}

async fn archive_filed(c: &Client) {
    let start = Instant::now();
    while c.archive_pending().await.unwrap() > 0 {
        assert!(start.elapsed() < 3 * WAIT, "archive copies not filed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many archive entries hold the conversation message `text`.
fn entries_with(entries: &[hushwire_client::ArchiveEntry], text: &str) -> usize {
    entries
        .iter()
        .filter(|e| {
            matches!(&e.payload, Payload::ConversationMessage(m) if m.content.as_slice() == text.as_bytes())
        })
        .count()
}

/// The clinic: Ada (agent) behind the proxy, Sue (supervisor and admin) and a patient direct;
/// a conversation the patient opened and Ada claimed.
struct Setup {
    ada: Client,
    ada_path: std::path::PathBuf,
    sue: Client,
    patient: Client,
    conversation: ConversationId,
}

async fn setup(dir: &std::path::Path, org: &Org, relay_url: &str, proxy_url: &str) -> Setup {
    let (ada, ada_path) = staff(dir, proxy_url, org, "Dr. Ada Okafor", 1, &[Role::Agent]).await;
    let (sue, _) = staff(
        dir,
        relay_url,
        org,
        "Sue Park",
        3,
        &[Role::Supervisor, Role::Admin],
    )
    .await;
    let (patient, _) = device(dir, "patient").await;
    patient.register(relay_url, None).await.unwrap();
    patient.add_clinic(&org.link).await.unwrap();
    for c in [&ada, &sue, &patient] {
        c.connect().await.unwrap();
        c.sync(WAIT).await.unwrap();
    }
    let conversation = patient.open_conversation().await.unwrap();
    assert_eq!(
        ada.claim(conversation).await.unwrap(),
        ClaimOutcome::Claimed
    );
    Setup {
        ada,
        ada_path,
        sue,
        patient,
        conversation,
    }
}

/// Ada's first `PutArchive` is stored but its `Ok` is lost with the connection: her client
/// reconnects and files the same bytes again; the archive holds her message once.
#[tokio::test]
async fn a_lost_put_archive_answer_is_one_archive_entry() {
    let dir = tempfile::tempdir().unwrap();
    let org = Org::new(21, CLINIC);
    let relay = clinic_relay(&dir.path().join("relay"), &org).await;
    let proxy = Proxy::start(relay.url()).await;
    let s = setup(dir.path(), &org, &relay.url(), &proxy.url).await;
    let key = ArchiveSecretKey::from_secret_bytes([0x42; 32]).unwrap();
    let policy = ArchivePolicy::issue(&org.key, 1, *key.public(), 30).unwrap();
    s.sue.publish_archive_policy(&policy).await.unwrap();

    proxy.lose_next.store(true, Ordering::SeqCst);
    s.ada
        .send_text_to_conversation(s.conversation, "hello from Ada")
        .await
        .unwrap();
    archive_filed(&s.ada).await;
    assert_eq!(
        proxy.lost.load(Ordering::SeqCst),
        1,
        "the first answer was lost"
    );
    archive_filed(&s.patient).await;
    let entries = s.sue.open_archive(s.conversation, &key).await.unwrap();
    assert_eq!(entries_with(&entries, "hello from Ada"), 1, "{entries:?}");
    drop(relay);
}

/// The answer is lost and the relay stays out of reach; Ada's client is closed, the clinic
/// publishes a new archive policy (a new key), and Ada's client is opened again: the copy she
/// had sealed under the first policy is sent as sealed (it may already be in the archive, and
/// is), so the archive holds it once, under the first key only.
#[tokio::test]
async fn after_a_restart_and_a_new_policy_the_copy_is_sent_as_first_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let org = Org::new(22, CLINIC);
    let relay = clinic_relay(&dir.path().join("relay"), &org).await;
    let proxy = Proxy::start(relay.url()).await;
    let s = setup(dir.path(), &org, &relay.url(), &proxy.url).await;
    let first = ArchiveSecretKey::from_secret_bytes([0x42; 32]).unwrap();
    let policy = ArchivePolicy::issue(&org.key, 1, *first.public(), 30).unwrap();
    s.sue.publish_archive_policy(&policy).await.unwrap();

    proxy.lose_next.store(true, Ordering::SeqCst);
    proxy.down.store(true, Ordering::SeqCst);
    s.ada
        .send_text_to_conversation(s.conversation, "before the new key")
        .await
        .unwrap();
    let start = Instant::now();
    while proxy.lost.load(Ordering::SeqCst) == 0 {
        assert!(start.elapsed() < 3 * WAIT, "no PutArchive was sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.ada.archive_pending().await.unwrap(), 1, "kept to retry");
    s.ada.disconnect().await;
    drop(s.ada);

    let second = ArchiveSecretKey::from_secret_bytes([0x43; 32]).unwrap();
    let newer = ArchivePolicy::issue(&org.key, 2, *second.public(), 30).unwrap();
    s.sue.publish_archive_policy(&newer).await.unwrap();
    proxy.down.store(false, Ordering::SeqCst);
    let ada = Client::open(&s.ada_path, &secret(), options())
        .await
        .unwrap();
    ada.connect().await.unwrap();
    archive_filed(&ada).await;

    archive_filed(&s.patient).await;
    // Every entry opens with the first key (a copy resealed under the new policy would not,
    // and `open_archive` refuses an archive with an envelope its key does not open).
    let entries = s.sue.open_archive(s.conversation, &first).await.unwrap();
    assert_eq!(
        entries_with(&entries, "before the new key"),
        1,
        "{entries:?}"
    );
    drop(relay);
}

/// A store of the previous version (schema 9: `archive_outbox` without `envelope`) with a copy
/// waiting for the clinic's policy: opened by this version, it files the copy once the policy
/// is known.
#[tokio::test]
async fn a_copy_queued_by_the_previous_version_is_sealed_and_filed() {
    let dir = tempfile::tempdir().unwrap();
    let org = Org::new(23, CLINIC);
    let relay = clinic_relay(&dir.path().join("relay"), &org).await;
    let s = setup(dir.path(), &org, &relay.url(), &relay.url()).await;
    s.ada
        .send_text_to_conversation(s.conversation, "queued before the upgrade")
        .await
        .unwrap();
    assert_eq!(s.ada.archive_pending().await.unwrap(), 1, "no policy yet");
    s.ada.disconnect().await;
    drop(s.ada);
    {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", s.ada_path.display()))
            .await
            .unwrap();
        sqlx::raw_sql("ALTER TABLE archive_outbox DROP COLUMN envelope; PRAGMA user_version = 9;")
            .execute(&mut c)
            .await
            .unwrap();
    }
    let key = ArchiveSecretKey::from_secret_bytes([0x42; 32]).unwrap();
    let policy = ArchivePolicy::issue(&org.key, 1, *key.public(), 30).unwrap();
    s.sue.publish_archive_policy(&policy).await.unwrap();
    let ada = Client::open(&s.ada_path, &secret(), options())
        .await
        .unwrap();
    assert_eq!(ada.archive_pending().await.unwrap(), 1, "the copy survived");
    ada.connect().await.unwrap();
    archive_filed(&ada).await;
    archive_filed(&s.patient).await;
    let entries = s.sue.open_archive(s.conversation, &key).await.unwrap();
    assert_eq!(
        entries_with(&entries, "queued before the upgrade"),
        1,
        "{entries:?}"
    );
    drop(relay);
}
