//! `PutArchive` is idempotent per filer (`docs/conversations.md` §5.2, `relay-protocol.md`
//! §3.6): a device filing the very bytes it already filed for a conversation (a retry whose
//! `Ok` was lost) is answered `Ok` and nothing is stored again; other bytes, or the same bytes
//! from another device, are another filing. Through the protocol on SQLite and on two
//! PostgreSQL instances; at the store: racing identical filings store one envelope, expiry
//! forgets the filings with the envelopes, and a database written by the previous relay
//! version (no `archive_filings`) is opened, served and recognises repeats of what it held.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod conversation_support;

use common::{Device, Engine, RelayProcess, postgres_url, rand_u64, temp_dir};
use conversation_support::*;
use futures_util::future::join_all;
use hushwire_proto::audit::ConversationId;
use hushwire_proto::clinic::Role;
use hushwire_proto::codec::Codec;
use hushwire_proto::conversation::queue::{ArchiveItem, QueueFrame};
use hushwire_proto::conversation::{ArchiveEnvelope, ChangeAction, MemberRole};
use hushwire_proto::relay::{DeviceAddress, FrameBody};
use hushwire_relay::storage::{PostgresStore, SqliteStore, Store};
use sqlx::Connection as _;

/// Everything `s` (a supervisor) reads from the archive of `conversation`.
async fn archive_items(s: &mut Peer, conversation: ConversationId) -> Vec<ArchiveItem> {
    match s
        .call(q(QueueFrame::FetchArchive {
            conversation,
            from_index: 0,
        }))
        .await
    {
        FrameBody::Queue(f) => match *f {
            QueueFrame::ArchiveItems { items, .. } => items,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

fn put(envelope: &ArchiveEnvelope) -> FrameBody {
    q(QueueFrame::PutArchive(Box::new(envelope.clone())))
}

#[tokio::test]
async fn an_identical_filing_is_answered_ok_and_stored_once_per_filer() {
    for engine in Engine::all().await {
        let clinic = Clinic::new();
        let relays: Vec<RelayProcess> = clinic.start(&engine, "archive-repeats");
        let url = |i: usize| relays[i % relays.len()].url();
        let (patient, ada, sue) = (Device::new(1, 1), Device::new(2, 1), Device::new(4, 1));
        let ada_cert = clinic.certify(1, &ada, &[Role::Agent]);
        let sue_cert = clinic.certify(3, &sue, &[Role::Supervisor]);
        let mut p = Peer::register(&url(0), &patient, None).await;
        publish_list(&mut p, &patient, &[1]).await;
        let mut a = Peer::register(&url(1), &ada, Some(&ada_cert)).await;
        let mut s = Peer::register(&url(1), &sue, Some(&sue_cert)).await;

        // The patient opens, Ada claims: two devices that write.
        let mut h = History::new(&clinic, 1);
        let open = h.change(
            ChangeAction::Add,
            MemberRole::Patient,
            &patient,
            None,
            &patient,
            None,
        );
        assert_eq!(
            p.call(q(QueueFrame::OpenConversation(Box::new(open.clone()))))
                .await,
            FrameBody::Ok,
            "{engine:?}"
        );
        h.accept(&open);
        let conv = h.conversation;
        let claim = h.change(
            ChangeAction::Add,
            MemberRole::Agent,
            &ada,
            Some(&ada_cert),
            &ada,
            Some(&ada_cert),
        );
        assert!(
            matches!(
                a.call(q(QueueFrame::Claim(Box::new(claim.clone())))).await,
                FrameBody::Queue(f) if matches!(*f, QueueFrame::Claimed { .. })
            ),
            "{engine:?}"
        );
        h.accept(&claim);

        // The same bytes twice from the patient (the first `Ok` "lost"): both answered `Ok`,
        // one item.
        let first = archive_envelope(conv);
        assert_eq!(p.call(put(&first)).await, FrameBody::Ok, "{engine:?}");
        let once = archive_items(&mut s, conv).await;
        assert_eq!(p.call(put(&first)).await, FrameBody::Ok, "{engine:?}");
        let items = archive_items(&mut s, conv).await;
        assert_eq!(
            items.len(),
            1,
            "{engine:?}: an identical repeat is stored once"
        );
        assert_eq!(
            items, once,
            "{engine:?}: the first filing stands, time and all"
        );
        assert_eq!(
            (items[0].envelope.clone(), items[0].filer),
            (first.clone(), patient.address()),
            "{engine:?}"
        );

        // Other bytes from the same device: another filing.
        let mut second = archive_envelope(conv);
        second.ciphertext[0] ^= 1;
        assert_eq!(p.call(put(&second)).await, FrameBody::Ok, "{engine:?}");
        // The same bytes as the patient's first, from Ada: another filing (keyed per filer).
        assert_eq!(a.call(put(&first)).await, FrameBody::Ok, "{engine:?}");
        // And Ada's repeat of it, on another connection (on PostgreSQL, the other instance).
        let mut a2 = Peer::register(&url(0), &ada, Some(&ada_cert)).await;
        assert_eq!(a2.call(put(&first)).await, FrameBody::Ok, "{engine:?}");
        let items = archive_items(&mut s, conv).await;
        let seen: Vec<(ArchiveEnvelope, DeviceAddress)> = items
            .iter()
            .map(|i| (i.envelope.clone(), i.filer))
            .collect();
        assert_eq!(
            seen,
            vec![
                (first.clone(), patient.address()),
                (second.clone(), patient.address()),
                (first.clone(), ada.address()),
            ],
            "{engine:?}"
        );
        drop(relays);
    }
}

/// A conversation id of the store tests.
fn conversation(n: u8) -> [u8; 16] {
    [n; 16]
}

fn filer(n: u8) -> DeviceAddress {
    DeviceAddress {
        fingerprint: [n; 32],
        device_id: 7,
    }
}

fn envelope_bytes(conversation: [u8; 16], variant: u8) -> Vec<u8> {
    let mut e = archive_envelope(ConversationId(conversation));
    e.ciphertext[0] = variant;
    e.to_bytes()
}

/// What the store tests check on either engine, through `store` and `other` (two stores on one
/// database for PostgreSQL, as two instances; the same store twice for SQLite). No conversation
/// row exists here, so on PostgreSQL no row lock serialises the racing filings: the unique
/// `(conversation, digest)` key alone keeps them once.
async fn store_checks<S: Store + Clone>(store: S, other: S, engine: &str) {
    // Racing identical filings, through two stores (on PostgreSQL two pools, as two instances
    // would): one stores, the others are repeats of the same index.
    let conv = conversation(1);
    let bytes = envelope_bytes(conv, 1);
    let racing = (0..8).map(|i| {
        let s = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        let bytes = bytes.clone();
        async move { s.put_archive(conv, bytes, filer(1), 1_000).await.unwrap() }
    });
    let filings = join_all(racing).await;
    assert_eq!(
        filings.iter().filter(|f| !f.repeat).count(),
        1,
        "{engine}: {filings:?}"
    );
    assert!(
        filings.iter().all(|f| f.index == 0),
        "{engine}: {filings:?}"
    );
    let stored = store.archive(conv, 0, 16).await.unwrap();
    assert_eq!(stored.len(), 1, "{engine}");
    assert_eq!(
        (stored[0].envelope.clone(), stored[0].filed_by),
        (bytes.clone(), filer(1))
    );

    // Another filer, other bytes: new positions; each one's repeat finds its own.
    let f = store
        .put_archive(conv, bytes.clone(), filer(2), 2_000)
        .await
        .unwrap();
    assert_eq!((f.index, f.repeat), (1, false), "{engine}");
    let f = store
        .put_archive(conv, envelope_bytes(conv, 2), filer(1), 3_000)
        .await
        .unwrap();
    assert_eq!((f.index, f.repeat), (2, false), "{engine}");
    let f = other
        .put_archive(conv, bytes.clone(), filer(2), 4_000)
        .await
        .unwrap();
    assert_eq!((f.index, f.repeat), (1, true), "{engine}");
    let stored = store.archive(conv, 0, 16).await.unwrap();
    assert_eq!(
        stored.iter().map(|s| s.filed_at_ms).collect::<Vec<_>>(),
        [1_000, 2_000, 3_000],
        "{engine}: a repeat changes nothing stored"
    );
    // Another conversation's archive is its own.
    let f = store
        .put_archive(conversation(2), bytes.clone(), filer(1), 5_000)
        .await
        .unwrap();
    assert_eq!((f.index, f.repeat), (0, false), "{engine}");
}

/// Expiry deletes the filings with the envelopes: a copy filed again after its conversation's
/// archive expired is stored again, from position 0.
async fn expiry_checks<S: Store>(store: &S, engine: &str) {
    let conv = conversation(3);
    let bytes = envelope_bytes(conv, 9);
    let f = store
        .put_archive(conv, bytes.clone(), filer(1), 10_000)
        .await
        .unwrap();
    assert_eq!((f.index, f.repeat), (0, false), "{engine}");
    assert!(store.expire_archive(20_000).await.unwrap() >= 1, "{engine}");
    assert!(store.archive(conv, 0, 16).await.unwrap().is_empty());
    let f = store
        .put_archive(conv, bytes, filer(1), 30_000)
        .await
        .unwrap();
    assert_eq!(
        (f.index, f.repeat),
        (0, false),
        "{engine}: the expired filing is forgotten"
    );
    assert_eq!(store.archive(conv, 0, 16).await.unwrap().len(), 1);
}

/// A conversation row (for the expiry sweep, which goes by its last activity), SQLite or
/// PostgreSQL placeholders alike.
const INSERT_CONVERSATION: &str = "INSERT INTO conversations (id, clinic, head_epoch, head_hash, \
    state, opened_at, waiting_since, claimed, last_activity) VALUES ($1, $2, 1, $3, 1, 0, 0, 0, 0)";

/// The table as the previous relay version created it, and one envelope it stored (SQLite).
const OLD_SQLITE: &str = "CREATE TABLE archive_envelopes (
    conversation BLOB NOT NULL, position INTEGER NOT NULL, envelope BLOB NOT NULL,
    filed_by_fingerprint BLOB NOT NULL, filed_by_device INTEGER NOT NULL, filed_at INTEGER NOT NULL,
    PRIMARY KEY (conversation, position))";
/// The same on PostgreSQL.
const OLD_POSTGRES: &str = "CREATE TABLE archive_envelopes (
    conversation BYTEA NOT NULL, position BIGINT NOT NULL, envelope BYTEA NOT NULL,
    filed_by_fingerprint BYTEA NOT NULL, filed_by_device BIGINT NOT NULL, filed_at BIGINT NOT NULL,
    PRIMARY KEY (conversation, position))";
const OLD_ROW: &str = "INSERT INTO archive_envelopes (conversation, position, envelope, \
    filed_by_fingerprint, filed_by_device, filed_at) VALUES ($1, $2, $3, $4, 7, $5)";

/// What the upgraded store must do with the envelopes the old version stored: serve them, and
/// take a repeat of one as a repeat (the backfill remembered its filing). The old relay had
/// stored the same copy twice (positions 0 and 1, before this fix): the first position is the
/// one a repeat finds.
async fn upgrade_checks<S: Store>(store: &S, engine: &str) {
    let conv = conversation(5);
    let stored = store.archive(conv, 0, 16).await.unwrap();
    assert_eq!(stored.len(), 3, "{engine}: the old envelopes are served");
    assert_eq!(stored[0].envelope, envelope_bytes(conv, 1));
    assert_eq!(stored[0].filed_by, filer(1));
    assert_eq!(stored[0].filed_at_ms, 111);
    let f = store
        .put_archive(conv, envelope_bytes(conv, 1), filer(1), 9_000)
        .await
        .unwrap();
    assert_eq!((f.index, f.repeat), (0, true), "{engine}");
    let f = store
        .put_archive(conv, envelope_bytes(conv, 2), filer(1), 9_000)
        .await
        .unwrap();
    assert_eq!((f.index, f.repeat), (2, true), "{engine}");
    let f = store
        .put_archive(conv, envelope_bytes(conv, 3), filer(1), 9_000)
        .await
        .unwrap();
    assert_eq!((f.index, f.repeat), (3, false), "{engine}");
    assert_eq!(store.archive(conv, 0, 16).await.unwrap().len(), 4);
}

/// The old rows: copy 1 at 0 and (a duplicate) at 1, copy 2 at 2.
fn old_rows() -> Vec<(i64, Vec<u8>)> {
    let conv = conversation(5);
    vec![
        (0, envelope_bytes(conv, 1)),
        (1, envelope_bytes(conv, 1)),
        (2, envelope_bytes(conv, 2)),
    ]
}

#[tokio::test]
async fn sqlite_store_repeats_races_expiry_and_upgrade() {
    let dir = temp_dir("archive-repeats-store");
    let store = SqliteStore::open(&dir.join("relay.db")).await.unwrap();
    store_checks(store.clone(), store.clone(), "sqlite").await;

    let mut raw =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", dir.join("relay.db").display()))
            .await
            .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(INSERT_CONVERSATION.replace('$', "?")))
        .bind(conversation(3).to_vec())
        .bind(vec![0u8; 32])
        .bind(vec![0u8; 32])
        .execute(&mut raw)
        .await
        .unwrap();
    drop(raw);
    expiry_checks(&store, "sqlite").await;

    // A data directory of the previous version: its table, its envelopes, no filings.
    let old = temp_dir("archive-repeats-upgrade");
    let path = old.join("relay.db");
    let mut raw = sqlx::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    sqlx::query(OLD_SQLITE).execute(&mut raw).await.unwrap();
    for (position, bytes) in old_rows() {
        sqlx::query(sqlx::AssertSqlSafe(OLD_ROW.replace('$', "?")))
            .bind(conversation(5).to_vec())
            .bind(position)
            .bind(bytes)
            .bind(filer(1).fingerprint.to_vec())
            .bind(111i64)
            .execute(&mut raw)
            .await
            .unwrap();
    }
    raw.close().await.unwrap();
    let upgraded = SqliteStore::open(&path).await.unwrap();
    upgrade_checks(&upgraded, "sqlite").await;
}

#[tokio::test]
async fn postgres_store_repeats_races_expiry_and_upgrade() {
    let Some(url) = postgres_url().await else {
        return;
    };
    let schema = format!("hw_archive_repeats_{}", rand_u64() % 1_000_000_000);
    let store = PostgresStore::connect(&url, Some(&schema)).await.unwrap();
    let other = PostgresStore::connect(&url, Some(&schema)).await.unwrap();
    store_checks(store.clone(), other, "postgres").await;
    sqlx::query(INSERT_CONVERSATION)
        .bind(conversation(3).to_vec())
        .bind(vec![0u8; 32])
        .bind(vec![0u8; 32])
        .execute(store.pool())
        .await
        .unwrap();
    expiry_checks(&store, "postgres").await;

    // A schema of the previous version: its table, its envelopes, no filings.
    let old = format!("hw_archive_upgrade_{}", rand_u64() % 1_000_000_000);
    let mut raw = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA \"{old}\"; SET search_path TO \"{old}\"; {OLD_POSTGRES}"
    )))
    .execute(&mut raw)
    .await
    .unwrap();
    for (position, bytes) in old_rows() {
        sqlx::query(OLD_ROW)
            .bind(conversation(5).to_vec())
            .bind(position)
            .bind(bytes)
            .bind(filer(1).fingerprint.to_vec())
            .bind(111i64)
            .execute(&mut raw)
            .await
            .unwrap();
    }
    raw.close().await.unwrap();
    let upgraded = PostgresStore::connect(&url, Some(&old)).await.unwrap();
    upgrade_checks(&upgraded, "postgres").await;
}
