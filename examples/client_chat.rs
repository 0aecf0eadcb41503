//! Two people chat through a relay, all in one process: a relay on a loopback port, a patient
//! and a clinic agent, each with an encrypted store in a temporary directory.
//!
//! ```text
//! cargo run -p hushwire-client --example client_chat
//! ```

use std::time::Duration;

use hushwire_client::{Client, ClientOptions, Event, KdfParams, Secret};
use hushwire_relay::config::Settings;
use hushwire_relay::storage::SqliteStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("hushwire-client-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    // The relay: SQLite in the temporary directory, an ephemeral port.
    let config = Settings {
        listen: Some("127.0.0.1:0".parse()?),
        data_dir: Some(dir.join("relay")),
        ..Settings::default()
    }
    .resolve(Settings::default());
    std::fs::create_dir_all(dir.join("relay"))?;
    let store = SqliteStore::open(&dir.join("relay/relay.db")).await?;
    let relay = hushwire_relay::server::start(store, config, None).await?;
    println!("relay listening at {}", relay.url());

    // Cheap key derivation keeps the example quick; real apps keep the default (Argon2id,
    // 64 MiB) or pass a key from the platform keystore with `Secret::key`.
    let options = ClientOptions {
        kdf: KdfParams::INSECURE_FOR_TESTS,
        ..ClientOptions::default()
    };
    let secret = Secret::passphrase("example passphrase, not a real one");
    let patient = Client::create(&dir.join("patient.db"), &secret, options.clone()).await?;
    let agent = Client::create(&dir.join("agent.db"), &secret, options).await?;
    patient.register(&relay.url(), None).await?;
    agent.register(&relay.url(), None).await?;

    // Addresses are exchanged out of band (a QR code at the front desk, a link in the portal).
    let clinic = patient
        .add_contact("clinic", agent.address().await, false)
        .await?;
    let mut agent_events = agent.events();
    let mut patient_events = patient.events();
    patient.connect().await?;
    agent.connect().await?;

    patient
        .send_text(clinic, "Hello, is my prescription ready?")
        .await?;
    let from_patient = loop {
        if let Event::MessageReceived(m) = agent_events.recv().await? {
            break m;
        }
    };
    println!(
        "agent got from {}: {}",
        from_patient.contact_name,
        String::from_utf8_lossy(&from_patient.content)
    );
    agent
        .send_text(from_patient.contact, "Yes, pick it up after 2 pm.")
        .await?;
    loop {
        match patient_events.recv().await? {
            Event::MessageReceived(m) => {
                println!("patient got: {}", String::from_utf8_lossy(&m.content));
                break;
            }
            Event::MessageDelivered { id, .. } => println!("patient: message {id} delivered"),
            _ => {}
        }
    }

    // Both sides compute the same safety number; the people compare it once.
    let number = patient.safety_number(clinic).await?;
    println!("safety number: {number}");
    patient.mark_verified(clinic, number.digits()).await?;

    let (report, records) = patient.open_transcript(clinic, &mut |_, _| {}).await?;
    println!("patient's transcript: {} records, verified", report.records);
    assert_eq!(records.len(), 2);

    patient.sync(Duration::from_secs(10)).await?;
    agent.sync(Duration::from_secs(10)).await?;
    patient.disconnect().await;
    agent.disconnect().await;
    relay.stop().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
