//! The [`Client`]: an unlocked store, the relay connection it keeps, and the pipelines that move
//! messages between them (`docs/client.md` §5).
//!
//! Every change to keys, sessions, transcripts and the outbox happens under one lock and inside
//! one SQLite transaction, so the store never holds half an operation:
//!
//! ```text
//! send:    transcript record + outbox entry ─commit─▶ encrypt ─commit session + ciphertext─▶ relay ─Sent─▶ delete entry
//! receive: relay ─Deliver─▶ decrypt ─commit session + transcript record + dedupe markers─▶ Ack
//! ```
//!
//! One module per pipeline, each an `impl Client` block over the state defined here:
//! [`contacts`], [`sessions`], [`prekeys`], [`connection`], [`send`], [`receive`], and the
//! records kept beside them, [`transcript_log`], [`transcripts`] and [`audit_log`]. Uses run one
//! way: the pipelines use [`sessions`] and [`contacts`]; nothing uses a pipeline's internals.
//!
//! A crash before a commit loses nothing (the relay still holds the envelope, or the outbox
//! still holds the message); a crash after it shows nothing twice (the envelope id and message
//! id are remembered).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use hushwire::proto::IdentityKey;
use hushwire::proto::audit::{AuditEvent, DeviceRef};
use hushwire::{Account, StorageKey};
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;
use tokio::sync::{Mutex, Notify, broadcast, watch};
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

mod audit_log;
mod clinic;
mod connection;
mod contacts;
#[cfg(test)]
mod convergence_tests;
mod conversation_messages;
mod conversations;
mod devices;
mod healing;
mod notices;
mod prekeys;
mod receive;
mod relay_pin;
mod retention;
mod send;
mod sessions;
mod transcript_log;
mod transcripts;

pub use audit_log::AUDIT_CHECKPOINT_INTERVAL;
pub use clinic::{AgentStatus, ClinicInfo};
pub use conversation_messages::{ArchiveEntry, ConversationMessageView};
pub use conversations::{ClaimOutcome, ConversationMember};
pub use devices::{LinkedDevice, OwnDevices, PersonDevices};
pub use healing::MAX_RESENDS;
pub use notices::ConversationNotice;
pub use relay_pin::RelayKeyPin;
pub use retention::{ConversationSummary, RetentionReport};
pub use transcripts::{
    AuditedExport, AuditedTranscript, ExportSummary, TranscriptInfo, read_export,
};

use crate::address::Address;
use crate::address::own_ref;
use crate::error::{ClientError, Result};
use crate::event::{ConnectionState, Event};
use crate::link::{Link, TlsRoots};
use crate::os::{now_ms, rng};
use crate::store;
use crate::store_lock::{self, StoreLock};
use crate::vault::{KdfParams, KeyDerivation, Secret, Vault};

/// Settings of an open client. `Default` gives production values.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Argon2id cost for a new store's passphrase (an existing store keeps its own).
    pub kdf: KdfParams,
    /// The device id of a new store's account.
    pub device_id: u32,
    /// A transcript checkpoint is signed every this many records.
    pub checkpoint_interval: u64,
    /// One-time prekeys (of each kind) kept published at the relay.
    pub one_time_prekeys: u32,
    /// The signed prekey is rotated once it is this old.
    pub signed_prekey_max_age: Duration,
    /// How long to wait for the relay to answer a request.
    pub request_timeout: Duration,
    /// The longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Trust roots for `wss://` relays.
    pub tls: TlsRoots,
    /// Automatic archive exports of every transcript to the clinic's archive key (its
    /// emergency-access and retention copy), or `None`.
    pub archive: Option<ArchiveSettings>,
    /// A sent message with no receipt after this long becomes `MessageState::NotConfirmed`
    /// (`docs/client.md` §5.13).
    pub receipt_timeout: Duration,
    /// This device asks one contact for a new session at most once per this long, however many
    /// unreadable messages arrive (`docs/client.md` §5.13).
    pub reset_interval: Duration,
    /// What this process is, written beside its id into the store's lock file so that a second
    /// open can say who holds the store (for example `hushwire chat`); `None`: the program's
    /// file name. Never put message text or other secrets here: the lock file is not sealed.
    pub process_label: Option<String>,
}

/// Where and how often the client writes archive exports (`docs/client.md` §7.3).
#[derive(Clone, Debug)]
pub struct ArchiveSettings {
    /// The archive's public keys (1 to 16): whoever holds a matching secret can open it.
    pub recipients: Vec<hushwire::proto::X25519PublicKey>,
    /// The directory the exports are written to (`hushwire-archive-<unix ms>.hwx`).
    pub directory: PathBuf,
    /// How often, while connected (checked hourly, and at every connection).
    pub every: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            kdf: KdfParams::DEFAULT,
            device_id: 1,
            checkpoint_interval: 100,
            one_time_prekeys: 100,
            signed_prekey_max_age: Duration::from_secs(7 * 24 * 3600),
            request_timeout: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
            tls: TlsRoots::default(),
            archive: None,
            receipt_timeout: Duration::from_secs(120),
            reset_interval: Duration::from_secs(60),
            process_label: None,
        }
    }
}

/// The non-secret profile, sealed in `meta`.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Profile {
    relay_url: Option<String>,
}

struct State {
    account: Account,
    profile: Profile,
    /// The pinned relay key (`relay_pin.rs`).
    relay_pin: Option<relay_pin::PinRecord>,
    /// The pinned clinic (`clinic.rs`).
    clinic: Option<clinic::Clinic>,
}

/// Why the client stopped for good after a wipe order (`clinic.rs`).
#[derive(Clone, Debug)]
enum Halt {
    /// A verified wipe erased the store.
    Wiped { by: String, clinic: String },
    /// The wipe order did not verify; nothing was erased.
    WipeRefused(String),
    /// The relay refuses this device at login on the clinic's behalf (`Suspended`: suspended,
    /// wiped or removed from its device list; `CertificateRefused`: its certificate revoked).
    /// Retrying cannot help until an administrator acts; an explicit `connect` tries again.
    RefusedByClinic(hushwire::proto::relay::ErrorCode),
}

impl Halt {
    fn error(&self) -> ClientError {
        match self {
            Self::Wiped { by, clinic } => ClientError::Wiped {
                by: by.clone(),
                clinic: clinic.clone(),
            },
            Self::WipeRefused(reason) => ClientError::WipeRefused(reason.clone()),
            Self::RefusedByClinic(code) => ClientError::RefusedByClinic(*code),
        }
    }
}

struct Inner {
    path: PathBuf,
    db: SqlitePool,
    vault: Vault,
    storage_key: StorageKey,
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
    outbox_changed: Notify,
    connection: watch::Sender<ConnectionState>,
    link: StdMutex<Option<Arc<Link>>>,
    /// Contacts whose outgoing messages are held (SendHeld): `sync` does not wait for them.
    held: StdMutex<std::collections::HashSet<i64>>,
    supervisor: StdMutex<Option<JoinHandle<()>>>,
    /// Set when the store epoch must be reported before the next encryption: at each
    /// connection and after a backup (`docs/client.md` §5.14).
    epoch_unreported: std::sync::atomic::AtomicBool,
    /// Set when the relay presented a key other than the pinned one (pinned, presented
    /// fingerprints): the supervisor stopped, and waits report [`ClientError::RelayKeyChanged`].
    relay_key_refused: StdMutex<Option<(String, String)>>,
    /// Set when a wipe order stopped the client (erased or refused).
    halted: StdMutex<Option<Halt>>,
    /// The agent status last announced per contact (`AgentStatusChanged`): two checks that
    /// run concurrently (the revocation list and a certificate fetch) announce a change once.
    announced_statuses: StdMutex<std::collections::HashMap<i64, crate::AgentStatus>>,
    /// The verified membership of each clinic conversation this device knows
    /// (`conversations.rs`); in memory only for now.
    conversations: StdMutex<std::collections::HashMap<[u8; 16], conversations::Conv>>,
    /// The clinic's archive policy once fetched and verified (`conversation_messages.rs`).
    archive_policy: StdMutex<Option<hushwire::proto::conversation::ArchivePolicy>>,
    /// Queue pushes (`MembershipChanged`, `QueueChanged`) the reader passed on, for the
    /// connection's worker (which may fetch, so the reader does not act on them itself).
    pushes: StdMutex<Vec<hushwire::proto::conversation::queue::QueueFrame>>,
    /// Wakes the connection's worker: pushes or conversation payloads to act on.
    conversation_work: Notify,
    /// Held while received conversation payloads are acted on, so the reader and the worker
    /// never act on one twice (the reader only tries it: it must never wait on the worker,
    /// whose fetches it answers).
    inbound_lock: Mutex<()>,
    /// Set while the connection's worker acts on pushes and payloads (`sync` waits for it).
    conversation_working: std::sync::atomic::AtomicBool,
    /// Set while contacts' certificates wait to be checked (`clinic.rs`): `sync` waits.
    clinic_pending: std::sync::atomic::AtomicBool,
    /// Wakes the connection to check new contacts' certificates.
    clinic_check: Notify,
    options: ClientOptions,
    /// Contact rows that are further devices of a person, or this device's own other devices
    /// (`devices.rs`), as `contact_devices` holds them.
    device_rows: StdMutex<std::collections::HashMap<i64, store::DeviceRow>>,
    /// Held for as long as any clone lives: one process per store (`store_lock.rs`).
    _lock: StoreLock,
}

/// An open Hushwire client. Cheap to clone (all clones share one store and one connection);
/// every future it returns is `Send`.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl core::fmt::Debug for Client {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Client")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// Runs the key derivation (Argon2id takes a while by design) off the async workers.
pub(super) async fn derive_master(
    derivation: KeyDerivation,
    secret: &Secret,
) -> Result<Zeroizing<[u8; 32]>> {
    let secret = match secret {
        Secret::Passphrase(p) => Secret::Passphrase(p.clone()),
        Secret::Key(k) => Secret::Key(k.clone()),
    };
    tokio::task::spawn_blocking(move || derivation.master_key(&secret))
        .await
        .map_err(|_| ClientError::CorruptStore("key derivation"))?
        .map_err(ClientError::from)
}

fn session_error(e: impl core::fmt::Display) -> ClientError {
    ClientError::Session(e.to_string())
}

impl Client {
    /// Creates a store at `path` (a SQLite file) with a new identity, locked by `secret`.
    /// [`ClientError::StoreInUse`] if another process holds `<path>.lock`.
    pub async fn create(path: &Path, secret: &Secret, options: ClientOptions) -> Result<Self> {
        let lock = Self::lock(path, &options)?;
        if path.exists() {
            return Err(ClientError::AlreadyInitialized(path.to_owned()));
        }
        let account = Account::new(options.device_id, now_ms() / 1000, &mut rng());
        Self::create_locked(path, secret, options, account, lock).await
    }

    /// [`Client::create`] with a given account (a linked device's, `devices.rs`).
    pub(super) async fn create_with_account(
        path: &Path,
        secret: &Secret,
        options: ClientOptions,
        account: Account,
    ) -> Result<Self> {
        let lock = Self::lock(path, &options)?;
        if path.exists() {
            return Err(ClientError::AlreadyInitialized(path.to_owned()));
        }
        Self::create_locked(path, secret, options, account, lock).await
    }

    async fn create_locked(
        path: &Path,
        secret: &Secret,
        options: ClientOptions,
        account: Account,
        lock: StoreLock,
    ) -> Result<Self> {
        let mut rng = rng();
        let derivation = KeyDerivation::new_for(secret, options.kdf, &mut rng)?;
        let master = derive_master(derivation.clone(), secret).await?;
        let vault = Vault::from_master(&master);
        let db = store::open(path, true).await?;
        let storage_key = vault.storage_key();
        let profile = Profile::default();
        let mut tx = store::begin(&db).await?;
        let kdf = postcard::to_allocvec(&derivation).unwrap_or_default();
        store::put_meta(&mut tx, "kdf", &kdf).await?;
        store::put_meta(&mut tx, "check", &vault.check_value()).await?;
        store::put_meta(&mut tx, "account", &account.seal(&storage_key, &mut rng)).await?;
        store::put_meta(
            &mut tx,
            "profile",
            &vault.seal_value("profile", b"", &profile, &mut rng),
        )
        .await?;
        tx.commit().await?;
        let state = State {
            account,
            profile,
            relay_pin: None,
            clinic: None,
        };
        Ok(Self::assemble(path, db, vault, state, options, lock))
    }

    /// Takes the store's lock before anything reads or writes the store (§3.5).
    pub(super) fn lock(path: &Path, options: &ClientOptions) -> Result<StoreLock> {
        let label = options
            .process_label
            .clone()
            .unwrap_or_else(store_lock::default_label);
        StoreLock::acquire(path, &label)
    }

    /// Opens the store at `path` with `secret`. A wrong passphrase or key is
    /// [`ClientError::WrongSecret`]. Nothing is written before the secret is checked except a
    /// schema migration, which a newer library version applies to any store it opens.
    /// [`ClientError::StoreInUse`] if another process (or another open client) holds the store;
    /// the lock is released when the last clone of the returned client is dropped.
    pub async fn open(path: &Path, secret: &Secret, options: ClientOptions) -> Result<Self> {
        if !path.exists() {
            return Err(ClientError::NotInitialized(path.to_owned()));
        }
        let lock = Self::lock(path, &options)?;
        let db = store::open(path, false).await?;
        let mut c = db.acquire().await?;
        let kdf = store::get_meta(&mut c, "kdf")
            .await?
            .ok_or_else(|| ClientError::StoreIncomplete(path.to_owned()))?;
        let derivation: KeyDerivation = postcard::from_bytes(&kdf)
            .map_err(|_| ClientError::CorruptStore("key derivation parameters"))?;
        let master = derive_master(derivation.clone(), secret).await?;
        let vault = Vault::from_master(&master);
        let check = store::get_meta(&mut c, "check")
            .await?
            .ok_or(ClientError::CorruptStore("key check"))?;
        if !vault.matches(&check) {
            return Err(ClientError::WrongSecret);
        }
        let storage_key = vault.storage_key();
        let sealed = store::get_meta(&mut c, "account")
            .await?
            .ok_or(ClientError::CorruptStore("account"))?;
        let account = Account::unseal(&sealed, &storage_key)
            .map_err(|_| ClientError::CorruptStore("account"))?;
        let profile = match store::get_meta(&mut c, "profile").await? {
            Some(p) => vault.open_value("profile", b"", &p)?,
            None => Profile::default(),
        };
        let relay_pin = match store::get_relay_pin(&mut c).await? {
            Some(p) => Some(vault.open_value("relay pin", b"", &p)?),
            None => None,
        };
        let state = State {
            account,
            profile,
            relay_pin,
            clinic: None,
        };
        let client = Self::assemble(path, db, vault, state, options, lock);
        client.load_device_rows(&mut c).await?;
        let clinic = client.load_clinic(&mut c).await?;
        drop(c);
        client.inner.state.lock().await.clinic = clinic;
        {
            let state = client.inner.state.lock().await;
            let mut tx = store::begin(&client.inner.db).await?;
            let event = AuditEvent::StoreUnlocked {
                device: own_ref(&state.account),
            };
            client.audit(&mut tx, &state.account, event).await?;
            tx.commit().await?;
        }
        Ok(client)
    }

    /// Checks `secret` against this store again — after an idle lock, say — and records the
    /// unlock in the audit chain. [`ClientError::WrongSecret`] if it does not match; the client
    /// keeps running either way.
    pub async fn unlock(&self, secret: &Secret) -> Result<()> {
        let kdf = {
            let mut c = self.inner.db.acquire().await?;
            store::get_meta(&mut c, "kdf")
                .await?
                .ok_or(ClientError::CorruptStore("key derivation parameters"))?
        };
        let derivation: KeyDerivation = postcard::from_bytes(&kdf)
            .map_err(|_| ClientError::CorruptStore("key derivation parameters"))?;
        let master = derive_master(derivation, secret).await?;
        if !Vault::from_master(&master).matches(&self.inner.vault.check_value()) {
            return Err(ClientError::WrongSecret);
        }
        let device = self.own_device_ref().await;
        self.audit_now(AuditEvent::StoreUnlocked { device }).await
    }

    fn assemble(
        path: &Path,
        db: SqlitePool,
        vault: Vault,
        state: State,
        options: ClientOptions,
        lock: StoreLock,
    ) -> Self {
        let storage_key = vault.storage_key();
        Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                db,
                vault,
                storage_key,
                state: Mutex::new(state),
                events: broadcast::channel(1024).0,
                outbox_changed: Notify::new(),
                connection: watch::channel(ConnectionState::Stopped).0,
                link: StdMutex::new(None),
                held: StdMutex::new(std::collections::HashSet::new()),
                supervisor: StdMutex::new(None),
                epoch_unreported: std::sync::atomic::AtomicBool::new(true),
                relay_key_refused: StdMutex::new(None),
                halted: StdMutex::new(None),
                announced_statuses: StdMutex::new(std::collections::HashMap::new()),
                conversations: StdMutex::new(std::collections::HashMap::new()),
                archive_policy: StdMutex::new(None),
                pushes: StdMutex::new(Vec::new()),
                conversation_work: Notify::new(),
                inbound_lock: Mutex::new(()),
                conversation_working: std::sync::atomic::AtomicBool::new(false),
                clinic_pending: std::sync::atomic::AtomicBool::new(false),
                clinic_check: Notify::new(),
                device_rows: StdMutex::new(std::collections::HashMap::new()),
                options,
                _lock: lock,
            }),
        }
    }

    /// This device's address (give it to contacts).
    pub async fn address(&self) -> Address {
        let state = self.inner.state.lock().await;
        Address {
            fingerprint: state.account.identity_key().fingerprint(),
            device_id: state.account.device_id(),
        }
    }

    /// This device's identity key.
    pub async fn identity_key(&self) -> IdentityKey {
        self.inner.state.lock().await.account.identity_key().clone()
    }

    /// The relay this device registered with, if any.
    pub async fn relay_url(&self) -> Option<String> {
        self.inner.state.lock().await.profile.relay_url.clone()
    }

    /// A receiver of every event from now on. A receiver that falls more than 1024 events
    /// behind loses the oldest (messages stay in the transcripts).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Watches the connection state.
    pub fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.connection.subscribe()
    }

    fn emit(&self, mut event: Event) {
        // Events name the person, never one of its device rows; what concerns only this
        // device's own other devices (their sync copies) is not the app's business.
        if let Some(contact) = event.contact_mut()
            && let Some(row) = self.device_row(contact.0)
        {
            match row.person_id {
                Some(person) => contact.0 = person,
                None => return,
            }
        }
        if let Event::StoreRollbackDetected { contacts } = &mut event {
            let mut people: Vec<crate::ContactId> = contacts
                .iter()
                .filter_map(|c| self.person_of(c.0).map(crate::ContactId))
                .collect();
            people.sort_unstable();
            people.dedup();
            *contacts = people;
        }
        if matches!(event, Event::NewContact { .. }) {
            // A stranger wrote first: is it an agent of the clinic? (`clinic.rs`)
            self.request_clinic_check();
        }
        let _ = self.inner.events.send(event);
    }

    pub(crate) fn db(&self) -> &SqlitePool {
        &self.inner.db
    }

    pub(crate) fn vault(&self) -> &Vault {
        &self.inner.vault
    }

    /// Appends one event to the audit chain in a transaction of its own.
    pub(crate) async fn audit_now(&self, event: AuditEvent) -> Result<()> {
        let state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        self.audit(&mut tx, &state.account, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// This device's reference in audit records.
    pub(crate) async fn own_device_ref(&self) -> DeviceRef {
        own_ref(&self.inner.state.lock().await.account)
    }

    pub(crate) fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    pub(crate) fn storage_key(&self) -> &StorageKey {
        &self.inner.storage_key
    }
}
