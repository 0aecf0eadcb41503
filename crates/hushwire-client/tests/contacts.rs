//! Contact mistakes can be undone: an address is never silently renamed, `rename_contact`
//! renames, `remove_contact` refuses while messages are queued, keeps the transcript, and adding
//! the address again restores the contact (`docs/client.md` §5.15).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hushwire_client::{Address, Client, ClientError, ClientOptions, KdfParams, Secret};

const BOB: &str = "abababababababababababababababababababababababababababababababab:1";

#[tokio::test]
async fn contacts_are_renamed_explicitly_and_removed_without_losing_transcripts() {
    let dir = tempfile::TempDir::new().unwrap();
    let options = ClientOptions {
        kdf: KdfParams::INSECURE_FOR_TESTS,
        ..ClientOptions::default()
    };
    let alice = Client::create(
        &dir.path().join("client.db"),
        &Secret::passphrase("a long enough passphrase"),
        options,
    )
    .await
    .unwrap();
    let bob: Address = BOB.parse().unwrap();
    let id = alice.add_contact("bob", bob, false).await.unwrap();

    // The same address under another name is refused, not a silent rename.
    match alice.add_contact("robert", bob, false).await {
        Err(ClientError::AddressTaken {
            existing,
            requested,
        }) => {
            assert_eq!((existing.as_str(), requested.as_str()), ("bob", "robert"));
        }
        other => panic!("expected AddressTaken, got {other:?}"),
    }
    assert_eq!(alice.contacts().await.unwrap()[0].name, "bob");

    assert_eq!(alice.rename_contact("bob", "robert").await.unwrap(), id);
    assert_eq!(alice.contact("robert").await.unwrap().id, id);
    assert!(matches!(
        alice.contact("bob").await,
        Err(ClientError::UnknownContact(_))
    ));
    let carol: Address = format!("{}:1", "cd".repeat(32)).parse().unwrap();
    alice.add_contact("carol", carol, false).await.unwrap();
    assert!(matches!(
        alice.rename_contact("robert", "carol").await,
        Err(ClientError::ContactExists(_))
    ));

    // A queued message keeps the contact until it is sent or discarded on purpose.
    alice.send_text(id, "are you there?").await.unwrap();
    match alice.remove_contact(id, false).await {
        Err(ClientError::OutboxNotEmpty { contact, queued }) => {
            assert_eq!((contact.as_str(), queued), ("robert", 1));
        }
        other => panic!("expected OutboxNotEmpty, got {other:?}"),
    }
    alice.remove_contact(id, true).await.unwrap();
    assert_eq!(alice.outbox_len().await.unwrap(), 0);
    let names: Vec<String> = alice
        .contacts()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["carol"]);
    // The transcript stays, under the name the contact had.
    let transcripts = alice.transcripts().await.unwrap();
    assert_eq!(transcripts.len(), 1);
    assert_eq!(transcripts[0].contact, id);
    assert_eq!(transcripts[0].contact_name, "robert");

    // Adding the address again restores it, with its transcript.
    assert_eq!(alice.add_contact("bob", bob, false).await.unwrap(), id);
    assert_eq!(alice.contact("bob").await.unwrap().id, id);
}

/// A contact name that shows nothing or blank space where a letter should be could pass for
/// another contact's name, and one's own address is no contact: both are refused.
#[tokio::test]
async fn invisible_characters_in_names_and_ones_own_address_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = hushwire_client::ClientOptions {
        kdf: hushwire_client::KdfParams::INSECURE_FOR_TESTS,
        ..hushwire_client::ClientOptions::default()
    };
    let secret = hushwire_client::Secret::passphrase("correct horse battery staple");
    let me = hushwire_client::Client::create(&dir.path().join("me.db"), &secret, options.clone())
        .await
        .unwrap();
    let other = hushwire_client::Client::create(&dir.path().join("o.db"), &secret, options)
        .await
        .unwrap();
    let theirs = other.address().await;
    for name in ["car\u{200b}ol", "a\u{3000}b", "x\u{2800}", "bob\u{feff}"] {
        assert!(
            matches!(
                me.add_contact(name, theirs, false).await,
                Err(hushwire_client::ClientError::BadContactName(_))
            ),
            "{name:?} accepted"
        );
    }
    assert!(matches!(
        me.add_contact("me", me.address().await, false).await,
        Err(hushwire_client::ClientError::OwnAddress)
    ));
    me.add_contact("carol", theirs, false).await.unwrap();
}
