//! One store, one owner: a second `Client::open` of a store that is open is refused with the
//! holder's process id, and succeeds once the first client is dropped (`docs/client.md` §3.5).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hushwire_client::{Client, ClientError, ClientOptions, KdfParams, Secret};

fn options(label: &str) -> ClientOptions {
    ClientOptions {
        kdf: KdfParams::INSECURE_FOR_TESTS,
        process_label: Some(label.to_owned()),
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn a_second_open_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("client.db");
    let secret = Secret::passphrase("a long enough passphrase");
    let first = Client::create(&path, &secret, options("hushwire init"))
        .await
        .unwrap();

    let err = Client::open(&path, &secret, options("hushwire recv"))
        .await
        .expect_err("a second open while the first client lives");
    match &err {
        ClientError::StoreInUse {
            path: p,
            pid,
            holder,
        } => {
            assert_eq!(p, &path);
            assert_eq!(*pid, Some(std::process::id()));
            assert_eq!(holder.as_deref(), Some("hushwire init"));
        }
        other => panic!("expected StoreInUse, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "in use by process {} (hushwire init)",
            std::process::id()
        )),
        "{text}"
    );

    // A clone keeps the store locked; dropping every clone frees it.
    let clone = first.clone();
    drop(first);
    assert!(matches!(
        Client::open(&path, &secret, options("hushwire recv")).await,
        Err(ClientError::StoreInUse { .. })
    ));
    drop(clone);
    let second = Client::open(&path, &secret, options("hushwire recv"))
        .await
        .unwrap();
    // Even a wrong secret is told the store is busy rather than tried against it.
    let busy = Client::open(
        &path,
        &Secret::passphrase("wrong passphrase!"),
        options("x"),
    )
    .await;
    assert!(
        matches!(busy, Err(ClientError::StoreInUse { .. })),
        "{busy:?}"
    );
    drop(second);
}
