//! The pinned relay key (`docs/client.md` §5.16) against a real relay in this process: pinned
//! at registration, a changed key refused with `RelayKeyChanged` before anything is answered and
//! without retrying, nothing in the store changed by the refusal, and a store from before
//! pinning pinned at its first successful login.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{WAIT, options, relay, relay_on, secret};
use hushwire_client::{Client, ClientError, ConnectionState};

/// What a refused connection must leave untouched: every `meta` row (profile, account…), the
/// sealed pin, and the audit chain's length.
async fn snapshot(path: &Path) -> (Vec<(String, Vec<u8>)>, Vec<Vec<u8>>, i64) {
    use sqlx::Connection as _;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let meta = sqlx::query_as("SELECT name, value FROM meta ORDER BY name")
        .fetch_all(&mut c)
        .await
        .unwrap();
    let pin = sqlx::query_scalar("SELECT sealed FROM relay_pin")
        .fetch_all(&mut c)
        .await
        .unwrap();
    let audit = sqlx::query_scalar("SELECT count(*) FROM audit_records")
        .fetch_one(&mut c)
        .await
        .unwrap();
    (meta, pin, audit)
}

#[tokio::test]
async fn a_changed_relay_key_is_refused_with_a_typed_error_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let relay_dir = dir.path().join("relay");
    let first = relay(&relay_dir).await;
    let port = first.address.port();
    let url = first.url();
    let path: PathBuf = dir.path().join("alice.db");
    let client = Client::create(&path, &secret(), options()).await.unwrap();
    assert_eq!(client.relay_key_pin().await, None);
    client.register(&url, None).await.unwrap();
    let pin = client
        .relay_key_pin()
        .await
        .expect("pinned at registration");
    assert!(!pin.on_first_login);
    assert_eq!(pin.fingerprint.len(), 64);

    // The same relay again: its key is the pinned one.
    client.connect().await.unwrap();
    client.wait_connected(WAIT).await.unwrap();
    client.disconnect().await;
    first.stop().await.unwrap();

    // Another deployment now answers at the same address (here: the relay lost its key file
    // and made a new one).
    std::fs::remove_file(relay_dir.join("relay-key")).unwrap();
    let second = relay_on(&relay_dir, port).await;
    assert_eq!(second.url(), url);
    let before = snapshot(&path).await;
    client.connect().await.unwrap();
    let err = client.wait_connected(WAIT).await.unwrap_err();
    let ClientError::RelayKeyChanged { pinned, presented } = &err else {
        panic!("expected RelayKeyChanged, got {err:?}");
    };
    assert_eq!(pinned, &pin.fingerprint);
    assert_ne!(presented, pinned);
    assert!(
        err.to_string().starts_with("the relay's key changed: "),
        "{err}"
    );
    assert!(matches!(
        client.sync(WAIT).await,
        Err(ClientError::RelayKeyChanged { .. })
    ));
    // Not retried: the connection stays down, for good, with the reason.
    tokio::time::sleep(Duration::from_secs(1)).await;
    match &*client.connection_state().borrow() {
        ConnectionState::Disconnected {
            reason,
            retry_in_ms: 0,
        } => assert!(reason.starts_with("the relay's key changed"), "{reason}"),
        other => panic!("expected a final disconnect, got {other:?}"),
    }
    assert_eq!(client.relay_key_pin().await, Some(pin.clone()));
    assert_eq!(
        snapshot(&path).await,
        before,
        "the refusal changed the store"
    );
    client.disconnect().await;
    drop(client);
    let reopened = Client::open(&path, &secret(), options()).await.unwrap();
    assert_eq!(reopened.relay_key_pin().await, Some(pin.clone()));

    // Registering again does not accept it on its own: the pin holds, nothing changes.
    match reopened.register(&url, None).await {
        Err(ClientError::RelayKeyChanged { .. }) => {}
        other => panic!("plain register replaced a pin: {other:?}"),
    }
    assert_eq!(reopened.relay_key_pin().await, Some(pin.clone()));
    // Accepting another fingerprint than the one presented is refused too.
    let wrong = "00".repeat(32);
    assert!(
        reopened
            .register_accepting_relay_key(&url, None, &wrong)
            .await
            .is_err()
    );
    assert_eq!(reopened.relay_key_pin().await, Some(pin.clone()));
    // Accepting the presented key's fingerprint, checked with the operator, replaces the pin.
    reopened
        .register_accepting_relay_key(&url, None, presented)
        .await
        .unwrap();
    let repinned = reopened.relay_key_pin().await.unwrap();
    assert_eq!(&repinned.fingerprint, presented);
    reopened.connect().await.unwrap();
    reopened.wait_connected(WAIT).await.unwrap();
    reopened.disconnect().await;
    second.stop().await.unwrap();
}

/// A store of schema version 2 has no pin: migration 3 adds the table empty, and the first
/// successful login pins the key the relay presents.
#[tokio::test]
async fn a_store_from_before_pinning_pins_at_its_first_login() {
    let dir = tempfile::tempdir().unwrap();
    let running = relay(&dir.path().join("relay")).await;
    let path = dir.path().join("old.db");
    {
        let client = Client::create(&path, &secret(), options()).await.unwrap();
        client.register(&running.url(), None).await.unwrap();
    }
    // Back to what a version-2 store looks like.
    {
        use sqlx::Connection as _;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::raw_sql(
            "DROP TABLE conversation_recalls_unshown; DROP TABLE conversation_notices_shown; \
             DROP TABLE conversation_unread; DROP TABLE conversation_entries; DROP TABLE conversation_messages; DROP TABLE conversation_inbound; \
             DROP TABLE archive_outbox; \
             DROP TABLE conversations; DROP TABLE device_lists; DROP TABLE contact_devices; DROP TABLE contact_certificates; \
             DROP TABLE clinic; DROP TABLE relay_pin; \
             PRAGMA user_version = 2;",
        )
        .execute(&mut c)
        .await
        .unwrap();
    }
    let client = Client::open(&path, &secret(), options()).await.unwrap();
    assert_eq!(client.relay_key_pin().await, None, "nothing pinned yet");
    client.connect().await.unwrap();
    client.wait_connected(WAIT).await.unwrap();
    let pin = client
        .relay_key_pin()
        .await
        .expect("pinned at the first login");
    assert!(pin.on_first_login);
    client.disconnect().await;
    drop(client);
    let client = Client::open(&path, &secret(), options()).await.unwrap();
    assert_eq!(client.relay_key_pin().await, Some(pin));
    client.connect().await.unwrap();
    client.wait_connected(WAIT).await.unwrap();
    client.disconnect().await;
    running.stop().await.unwrap();
}
