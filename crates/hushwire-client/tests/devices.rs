//! Several devices per person (`docs/client.md` §8.6) against a real relay in this process:
//! a device linked with a one-time code, messages that reach every device of the person written
//! to and a copy on the sender's other devices (so every transcript is complete), replies from
//! either device landing in one conversation, and a removed device that stops receiving.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;

use common::{WAIT, options, relay, secret};
use hushwire_client::{Client, ClientError, ContactId, Direction, Event};
use tokio::sync::broadcast;

async fn user(dir: &Path, name: &str, url: &str) -> Client {
    let client = Client::create(&dir.join(format!("{name}.db")), &secret(), options())
        .await
        .unwrap();
    client.register(url, None).await.unwrap();
    client.connect().await.unwrap();
    client.wait_connected(WAIT).await.unwrap();
    client
}

/// The next message received, as (contact, text).
async fn next_message(events: &mut broadcast::Receiver<Event>) -> (ContactId, String) {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::MessageReceived(m) = events.recv().await.unwrap() {
                return (m.contact, String::from_utf8(m.content.to_vec()).unwrap());
            }
        }
    })
    .await
    .expect("no message arrived")
}

/// The next copy of a message another device of this person sent, as (contact, device).
async fn next_copy(events: &mut broadcast::Receiver<Event>) -> (ContactId, u32) {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::SentByOtherDevice { message, device_id } = events.recv().await.unwrap() {
                return (message.contact, device_id);
            }
        }
    })
    .await
    .expect("no sent copy arrived")
}

/// The texts of a transcript, with who sent each (true: this person).
async fn transcript(client: &Client, contact: ContactId) -> Vec<(bool, String)> {
    let (_, records) = client
        .open_transcript(contact, &mut |_, _| {})
        .await
        .unwrap();
    records
        .into_iter()
        .map(|r| {
            (
                r.direction == Direction::Sent,
                String::from_utf8(r.content).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_linked_device_gets_every_message_and_a_removed_one_stops() {
    let dir = tempfile::tempdir().unwrap();
    let running = relay(&dir.path().join("relay")).await;
    let url = running.url();
    let alice = user(dir.path(), "alice", &url).await;
    let bob = user(dir.path(), "bob", &url).await;

    // Before any linking, a person is one device and has no list.
    let own = alice.devices().await.unwrap();
    assert_eq!(
        (own.this_device, own.devices.clone(), own.sequence),
        (1, vec![1], None)
    );

    // Alice links a second device with a one-time code.
    let code = alice.link_device().await.unwrap().code;
    assert!(code.starts_with("hushwire-link:"), "{}", code.as_str());
    let own = alice.devices().await.unwrap();
    assert_eq!((own.devices.clone(), own.sequence), (vec![1, 2], Some(1)));
    let phone_path = dir.path().join("alice-phone.db");
    let phone = Client::join(&phone_path, &secret(), options(), &code)
        .await
        .unwrap();
    assert_eq!(
        phone.address().await.fingerprint,
        alice.address().await.fingerprint
    );
    assert_eq!(phone.address().await.device_id, 2);
    // The code worked once: a second device cannot take the identity with it.
    let again = Client::join(&dir.path().join("thief.db"), &secret(), options(), &code).await;
    assert!(
        matches!(&again, Err(ClientError::Linking(why)) if why.contains("used already")),
        "{again:?}"
    );
    assert!(!dir.path().join("thief.db").exists(), "nothing is created");
    phone.connect().await.unwrap();
    phone.sync(WAIT).await.unwrap();
    assert_eq!(phone.devices().await.unwrap().devices, vec![1, 2]);

    // Bob knows Alice by her first device's address. Her identity, and so her signed device
    // list, he learns as he starts a session with her: the message waiting then goes to the
    // device the list adds as well.
    let to_alice = bob
        .add_contact("alice", alice.address().await, false)
        .await
        .unwrap();
    let to_bob = alice
        .add_contact("bob", bob.address().await, false)
        .await
        .unwrap();
    let devices = bob.contact_devices(to_alice).await.unwrap();
    assert_eq!((devices.devices, devices.sequence), (vec![1], None));

    // A message to Alice reaches both of her devices.
    let mut alice_events = alice.events();
    let mut phone_events = phone.events();
    let mut bob_events = bob.events();
    bob.send_text(to_alice, "hello alice").await.unwrap();
    bob.sync(WAIT).await.unwrap();
    let devices = bob.contact_devices(to_alice).await.unwrap();
    assert_eq!((devices.devices, devices.sequence), (vec![1, 2], Some(1)));
    assert_eq!(
        bob.contacts().await.unwrap().len(),
        1,
        "one person, not two"
    );
    assert_eq!(
        next_message(&mut alice_events).await,
        (to_bob, "hello alice".into())
    );
    let (phone_bob, text) = next_message(&mut phone_events).await;
    assert_eq!(text, "hello alice");

    // Alice answers from her laptop: Bob has it, and her phone's transcript has it too.
    alice
        .send_text(to_bob, "hi bob, from my laptop")
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut bob_events).await,
        (to_alice, "hi bob, from my laptop".into())
    );
    assert_eq!(next_copy(&mut phone_events).await, (phone_bob, 1));
    // And from her phone: Bob sees it in the same conversation; the laptop has the copy.
    phone
        .send_text(phone_bob, "and from my phone")
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut bob_events).await,
        (to_alice, "and from my phone".into())
    );
    assert_eq!(next_copy(&mut alice_events).await, (to_bob, 2));
    let expected = vec![
        (false, "hello alice".to_owned()),
        (true, "hi bob, from my laptop".to_owned()),
        (true, "and from my phone".to_owned()),
    ];
    alice.sync(WAIT).await.unwrap();
    phone.sync(WAIT).await.unwrap();
    assert_eq!(transcript(&alice, to_bob).await, expected);
    assert_eq!(transcript(&phone, phone_bob).await, expected);
    assert_eq!(
        transcript(&bob, to_alice).await,
        expected
            .iter()
            .map(|(mine, t)| (!mine, t.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(bob.contacts().await.unwrap().len(), 1);

    // Queued while offline, a message waiting for both of Alice's devices is listed once,
    // under Alice, and cancelled as a whole.
    bob.disconnect().await;
    let queued = bob.send_text(to_alice, "never mind").await.unwrap();
    assert_eq!(
        bob.queued_messages().await.unwrap(),
        vec![(to_alice, queued)]
    );
    assert_eq!(bob.cancel(queued).await.unwrap(), to_alice);
    assert_eq!(bob.outbox_len().await.unwrap(), 0);
    bob.connect().await.unwrap();
    bob.sync(WAIT).await.unwrap();

    // A device cannot remove itself, nor one that is not on the list.
    assert!(matches!(
        alice.remove_device(1).await,
        Err(ClientError::DeviceListRefused(_))
    ));
    assert!(matches!(
        alice.remove_device(7).await,
        Err(ClientError::DeviceListRefused(_))
    ));
    // The phone is lost: Alice removes it from her laptop. The relay refuses it, and Bob, once
    // he has the new list, sends to the laptop only.
    alice.remove_device(2).await.unwrap();
    assert_eq!(alice.devices().await.unwrap().devices, vec![1]);
    let refused = phone.sync(WAIT).await;
    assert!(
        matches!(
            refused,
            Err(ClientError::RefusedByClinic(_) | ClientError::Timeout)
        ),
        "{refused:?}"
    );
    bob.disconnect().await;
    bob.connect().await.unwrap();
    bob.sync(WAIT).await.unwrap();
    assert_eq!(
        bob.contact_devices(to_alice).await.unwrap().devices,
        vec![1]
    );
    bob.send_text(to_alice, "only for the laptop")
        .await
        .unwrap();
    bob.sync(WAIT).await.unwrap();
    assert_eq!(
        next_message(&mut alice_events).await.1,
        "only for the laptop"
    );
    assert_eq!(
        bob.outbox_len().await.unwrap(),
        0,
        "nothing waits for the phone"
    );
    phone.disconnect().await;
    assert!(
        !transcript(&phone, phone_bob)
            .await
            .iter()
            .any(|(_, t)| t == "only for the laptop")
    );

    // A removed device never comes back: the next device gets a number never used, and the
    // old phone stays refused even though the list changed again.
    assert_eq!(alice.link_device().await.unwrap().device_id, 3);
    assert_eq!(alice.devices().await.unwrap().devices, vec![1, 3]);
    phone.connect().await.unwrap();
    assert!(
        phone.sync(WAIT).await.is_err(),
        "the removed phone is still refused"
    );
}

#[tokio::test]
async fn a_wrong_or_malformed_code_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let running = relay(&dir.path().join("relay")).await;
    let alice = user(dir.path(), "alice", &running.url()).await;
    let path = dir.path().join("new.db");
    let malformed = Client::join(&path, &secret(), options(), "hushwire-link:nope").await;
    assert!(
        matches!(malformed, Err(ClientError::Linking(_))),
        "{malformed:?}"
    );
    // A well-formed code nobody filed.
    let code = alice.link_device().await.unwrap().code;
    let mut other: Vec<char> = code.chars().collect();
    let i = "hushwire-link:".len() + 3;
    other[i] = if other[i] == 'A' { 'B' } else { 'A' };
    let other: String = other.into_iter().collect();
    let unknown = Client::join(&path, &secret(), options(), &other).await;
    assert!(
        matches!(unknown, Err(ClientError::Linking(_))),
        "{unknown:?}"
    );
    assert!(!path.exists());
    // The real code still works.
    let phone = Client::join(&path, &secret(), options(), &code)
        .await
        .unwrap();
    assert_eq!(phone.address().await.device_id, 2);

    // The relay keeps at most four unused codes of a device: the fifth is refused, with what
    // to do, and the device it would have added is not left on the list.
    for _ in 0..4 {
        alice.link_device().await.unwrap();
    }
    let before = alice.devices().await.unwrap();
    assert_eq!(before.devices.len(), 6);
    let fifth = alice.link_device().await;
    assert!(
        matches!(&fifth, Err(ClientError::Linking(why)) if why.contains("four unused")),
        "{fifth:?}"
    );
    assert_eq!(alice.devices().await.unwrap().devices, before.devices);
}

#[tokio::test]
async fn two_devices_linking_at_once_get_different_numbers_and_both_stay_listed() {
    let dir = tempfile::tempdir().unwrap();
    let running = relay(&dir.path().join("relay")).await;
    let alice = user(dir.path(), "alice", &running.url()).await;
    let code = alice.link_device().await.unwrap().code;
    let phone = Client::join(&dir.path().join("phone.db"), &secret(), options(), &code)
        .await
        .unwrap();
    phone.connect().await.unwrap();
    phone.sync(WAIT).await.unwrap();
    for round in 0..3 {
        let (a, b) = tokio::join!(alice.link_device(), phone.link_device());
        let (a, b) = (a.unwrap().device_id, b.unwrap().device_id);
        assert_ne!(a, b, "round {round}");
        alice.disconnect().await;
        alice.connect().await.unwrap();
        alice.sync(WAIT).await.unwrap();
        let listed = alice.devices().await.unwrap().devices;
        assert!(
            listed.contains(&a) && listed.contains(&b),
            "round {round}: {a} and {b} both on {listed:?}"
        );
    }
}
