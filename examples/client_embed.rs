//! How an app embeds the client: open (or create) the store, keep the connection, react to
//! events in one task and send from another. Reads lines from stdin and sends each to CONTACT.
//!
//! ```text
//! cargo run -p hushwire-client --example client_embed -- STORE RELAY_URL CONTACT_NAME CONTACT_ADDRESS
//! ```
//! The passphrase comes from `HUSHWIRE_PASSPHRASE` (an app would use its keystore and
//! `Secret::key`).

use hushwire_client::{Client, ClientError, ClientOptions, ConnectionState, Event, Secret};
use tokio::io::AsyncBufReadExt as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [store, relay, name, address] = args.as_slice() else {
        eprintln!("usage: client_embed STORE RELAY_URL CONTACT_NAME CONTACT_ADDRESS");
        std::process::exit(2);
    };
    let secret = Secret::passphrase(std::env::var("HUSHWIRE_PASSPHRASE")?);
    let options = ClientOptions::default();

    // First run creates and registers; later runs open.
    let client = match Client::open(store.as_ref(), &secret, options.clone()).await {
        Ok(c) => c,
        Err(ClientError::NotInitialized(_)) => {
            let c = Client::create(store.as_ref(), &secret, options).await?;
            c.register(relay, None).await?;
            c
        }
        Err(e) => return Err(e.into()),
    };
    println!("my address: {}", client.address().await);
    let contact = client.add_contact(name, address.parse()?, false).await?;

    // The event loop: a task of its own, so the UI never waits on the network.
    let mut events = client.events();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                Event::MessageReceived(m) => {
                    println!(
                        "{}: {}",
                        m.contact_name,
                        String::from_utf8_lossy(&m.content)
                    )
                }
                Event::MessageDelivered { id, .. } => println!("(delivered {id})"),
                Event::GapDetected { missing, .. } => println!("({missing} messages missing)"),
                Event::IdentityChanged { .. } => println!("(their identity changed: verify)"),
                Event::Connection(ConnectionState::Disconnected {
                    reason,
                    retry_in_ms,
                }) => {
                    println!("(offline: {reason}; retrying in {retry_in_ms} ms)")
                }
                _ => {}
            }
        }
    });
    client.connect().await?;

    // Sending never waits for the network: messages queue while offline.
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match client.send_text(contact, &line).await {
            Ok(id) => println!("(queued {id})"),
            Err(e) => println!("not sent: {e}"),
        }
    }
    client.disconnect().await;
    Ok(())
}
