//! # hushwire-client
//!
//! The library an app embeds to chat over Hushwire: an encrypted local store, sessions kept
//! with each contact, a relay connection that reconnects by itself, and sealed transcripts an
//! auditor can verify. The `hushwire` CLI is a thin shell over it.
//!
//! ```no_run
//! use std::time::Duration;
//! use hushwire_client::{Client, ClientOptions, Event, Secret};
//! # async fn demo() -> Result<(), hushwire_client::ClientError> {
//! let secret = Secret::passphrase("a long passphrase from the user");
//! let client = Client::create("alice.db".as_ref(), &secret, ClientOptions::default()).await?;
//! client.register("wss://relay.clinic.example", None).await?;
//! println!("my address: {}", client.address().await);
//!
//! let clinic = client.add_contact("clinic", "3fa2…:1".parse()?, false).await?;
//! let mut events = client.events();
//! client.connect().await?;
//! client.send_text(clinic, "Is my prescription ready?").await?;
//! while let Ok(event) = events.recv().await {
//!     if let Event::MessageReceived(m) = event {
//!         println!("{}: {}", m.contact_name, String::from_utf8_lossy(&m.content));
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! What is stored and how, the payload format and the guarantees: `docs/client.md`.

#![forbid(unsafe_code)]

mod address;
mod client;
mod contact;
mod error;
mod event;
mod link;
mod os;
pub use hushwire::payload;
mod store;
mod store_lock;
mod vault;

pub use address::Address;
pub use client::{
    AUDIT_CHECKPOINT_INTERVAL, AgentStatus, ArchiveEntry, ArchiveSettings, AuditedExport,
    AuditedTranscript, ClaimOutcome, Client, ClientOptions, ClinicInfo, ConversationMember,
    ConversationMessageView, ConversationNotice, ConversationSummary, ExportSummary, LinkedDevice,
    MAX_RESENDS, OwnDevices, PersonDevices, RelayKeyPin, RetentionReport, TranscriptInfo,
    read_export,
};
pub use contact::{Contact, ContactId};
pub use error::{ClientError, Result};
pub use event::{ConnectionState, Event, MessageId, MessageState, ReceivedMessage};
pub use hushwire::proto::audit::{AuditEvent, AuditRecord, AuditReport};
pub use hushwire::transcript::{
    AuditorKey, ContentType, Direction, TranscriptRecord, TranscriptReport,
};
pub use link::{TlsRoots, check_relay_url};
pub use payload::MAX_CONTENT_LEN;
pub use store::SCHEMA_VERSION;
pub use vault::{KdfParams, MIN_PASSPHRASE_CHARS, Secret, open_secret_file, seal_secret_file};
