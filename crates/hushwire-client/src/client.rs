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
//! A crash before a commit loses nothing (the relay still holds the envelope, or the outbox
//! still holds the message); a crash after it shows nothing twice (the envelope id and message
//! id are remembered).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use hushwire::proto::audit::{self, AuditEvent, DeviceRef};
use hushwire::proto::codec::Codec as _;
use hushwire::proto::relay::{
    Delivery, ErrorCode, FrameBody, MAX_PREKEYS_PER_UPLOAD, OutgoingEnvelope,
};
use hushwire::proto::{IdentityKey, PreKeyBundle, SafetyNumber};
use hushwire::transcript::{
    ContentType, Direction, SealedRecord, TranscriptCheckpoint, TranscriptRecord, TranscriptWriter,
};
use hushwire::wire::Message;
use hushwire::{Account, DecryptionError, Session, SessionCreationError, StorageKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;
use serde::{Deserialize, Serialize};
use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::{Mutex, Notify, broadcast, watch};
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::address::Address;
use crate::audit_log::{device_ref, own_ref};
use crate::contact::{Contact, ContactId, ContactRecord};
use crate::error::{ClientError, Result};
use crate::event::{ConnectionState, Event, MessageId, ReceivedMessage};
use crate::link::{self, Greeting, Incoming, Link, RelayUrl, TlsRoots};
use crate::payload::{MAX_CONTENT_LEN, Payload};
use crate::store;
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
        }
    }
}

/// Two sessions started within this long of each other count as a simultaneous start.
const SIMULTANEOUS_START_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Sessions kept per contact (the active one and recent others, for messages still in flight).
const SESSIONS_PER_CONTACT: i64 = 4;
/// Relay envelope ids are remembered this long (beyond the relay's longest retention).
const SEEN_ENVELOPE_TTL_MS: u64 = 90 * 24 * 3600 * 1000;
/// Name of the fault-injection variable for crash tests (see `docs/client.md` §6).
const FAULT_VAR: &str = "HUSHWIRE_CLIENT_FAULT";

/// The non-secret profile, sealed in `meta`.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Profile {
    relay_url: Option<String>,
}

/// What a queued outbox entry holds (sealed).
#[derive(Serialize, Deserialize)]
struct OutboxItem {
    /// The message id, for `MessageSent`; `None` for receipts.
    message_id: Option<[u8; 16]>,
    /// The payload to encrypt (wiped when dropped).
    payload: Zeroizing<Vec<u8>>,
}

/// A recorded decryption failure (sealed).
#[derive(Serialize, Deserialize)]
struct FailureRecord {
    sender: String,
    reason: String,
}

struct State {
    account: Account,
    profile: Profile,
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
    options: ClientOptions,
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

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A fresh ChaCha20 generator seeded from the operating system.
pub(crate) fn rng() -> ChaCha20Rng {
    let mut seed = Zeroizing::new([0u8; 32]);
    // Without OS randomness nothing here is safe; getrandom only fails on broken platforms, and
    // a zero seed would be worse than stopping.
    if getrandom::fill(seed.as_mut()).is_err() {
        std::process::abort();
    }
    ChaCha20Rng::from_seed(*seed)
}

/// Runs the key derivation (Argon2id takes a while by design) off the async workers.
async fn derive_master(derivation: KeyDerivation, secret: &Secret) -> Result<Zeroizing<[u8; 32]>> {
    let secret = match secret {
        Secret::Passphrase(p) => Secret::Passphrase(p.clone()),
        Secret::Key(k) => Secret::Key(k.clone()),
    };
    tokio::task::spawn_blocking(move || derivation.master_key(&secret))
        .await
        .map_err(|_| ClientError::CorruptStore("key derivation"))?
}

fn session_error(e: impl core::fmt::Display) -> ClientError {
    ClientError::Session(e.to_string())
}

impl Client {
    /// Creates a store at `path` (a SQLite file) with a new identity, locked by `secret`.
    pub async fn create(path: &Path, secret: &Secret, options: ClientOptions) -> Result<Self> {
        if path.exists() {
            return Err(ClientError::AlreadyInitialized(path.to_owned()));
        }
        let mut rng = rng();
        let derivation = KeyDerivation::new_for(secret, options.kdf, &mut rng)?;
        let master = derive_master(derivation.clone(), secret).await?;
        let vault = Vault::from_master(&master);
        let db = store::open(path, true).await?;
        let storage_key = vault.storage_key();
        let account = Account::new(options.device_id, now_ms() / 1000, &mut rng);
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
        Ok(Self::assemble(path, db, vault, account, profile, options))
    }

    /// Opens the store at `path` with `secret`. A wrong passphrase or key is
    /// [`ClientError::WrongSecret`]. Nothing is written before the secret is checked except a
    /// schema migration, which a newer library version applies to any store it opens.
    pub async fn open(path: &Path, secret: &Secret, options: ClientOptions) -> Result<Self> {
        if !path.exists() {
            return Err(ClientError::NotInitialized(path.to_owned()));
        }
        let db = store::open(path, false).await?;
        let mut c = db.acquire().await?;
        let kdf = store::get_meta(&mut c, "kdf")
            .await?
            .ok_or(ClientError::CorruptStore("key derivation parameters"))?;
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
        drop(c);
        let client = Self::assemble(path, db, vault, account, profile, options);
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
        account: Account,
        profile: Profile,
        options: ClientOptions,
    ) -> Self {
        let storage_key = vault.storage_key();
        Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                db,
                vault,
                storage_key,
                state: Mutex::new(State { account, profile }),
                events: broadcast::channel(1024).0,
                outbox_changed: Notify::new(),
                connection: watch::channel(ConnectionState::Stopped).0,
                link: StdMutex::new(None),
                held: StdMutex::new(std::collections::HashSet::new()),
                supervisor: StdMutex::new(None),
                options,
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

    fn emit(&self, event: Event) {
        let _ = self.inner.events.send(event);
    }

    // ----- contacts -------------------------------------------------------------------------

    async fn load_contact(&self, c: &mut SqliteConnection, id: i64) -> Result<ContactRecord> {
        let row = store::contact_by_id(c, id)
            .await?
            .ok_or_else(|| ClientError::UnknownContact(id.to_string()))?;
        self.inner
            .vault
            .open_value("contact", &row.id.to_be_bytes(), &row.sealed)
    }

    async fn save_contact(
        &self,
        c: &mut SqliteConnection,
        id: i64,
        record: &ContactRecord,
    ) -> Result<()> {
        let sealed = self
            .inner
            .vault
            .seal_value("contact", &id.to_be_bytes(), record, &mut rng());
        let index = self
            .inner
            .vault
            .blind_index(&record.address().index_bytes());
        store::update_contact(c, id, &index, &sealed).await
    }

    async fn all_contacts(&self, c: &mut SqliteConnection) -> Result<Vec<(i64, ContactRecord)>> {
        let mut out = Vec::new();
        for row in store::contacts(c).await? {
            let record: ContactRecord =
                self.inner
                    .vault
                    .open_value("contact", &row.id.to_be_bytes(), &row.sealed)?;
            out.push((row.id, record));
        }
        Ok(out)
    }

    async fn find_by_address(
        &self,
        c: &mut SqliteConnection,
        address: Address,
    ) -> Result<Option<(i64, ContactRecord)>> {
        let index = self.inner.vault.blind_index(&address.index_bytes());
        match store::contact_by_address(c, &index).await? {
            Some(row) => Ok(Some((
                row.id,
                self.inner
                    .vault
                    .open_value("contact", &row.id.to_be_bytes(), &row.sealed)?,
            ))),
            None => Ok(None),
        }
    }

    async fn insert_contact(
        &self,
        c: &mut SqliteConnection,
        record: &ContactRecord,
    ) -> Result<i64> {
        let index = self
            .inner
            .vault
            .blind_index(&record.address().index_bytes());
        let id = store::insert_contact(c, &index).await?;
        self.save_contact(c, id, record).await?;
        Ok(id)
    }

    /// Every contact, in the order added.
    pub async fn contacts(&self) -> Result<Vec<Contact>> {
        let _state = self.inner.state.lock().await;
        let mut c = self.inner.db.acquire().await?;
        Ok(self
            .all_contacts(&mut c)
            .await?
            .iter()
            .map(|(id, r)| Contact::from_record(*id, r))
            .collect())
    }

    /// The contact with this name.
    pub async fn contact(&self, name: &str) -> Result<Contact> {
        self.contacts()
            .await?
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| ClientError::UnknownContact(name.to_owned()))
    }

    /// Adds a contact. Adding a name again with the same address changes nothing; with another
    /// address it fails with [`ClientError::ContactExists`] unless `replace` is set, in which
    /// case the contact's identity is replaced, its sessions dropped, and sending to it blocked
    /// until [`Client::mark_verified`].
    pub async fn add_contact(
        &self,
        name: &str,
        address: Address,
        replace: bool,
    ) -> Result<ContactId> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(ClientError::BadContactName(name.chars().take(80).collect()));
        }
        let state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        let contacts = self.all_contacts(&mut tx).await?;
        if let Some((id, existing)) = contacts.iter().find(|(_, r)| r.name == name) {
            if existing.address() == address {
                return Ok(ContactId(*id));
            }
            if !replace {
                return Err(ClientError::ContactExists(name.to_owned()));
            }
            if contacts.iter().any(|(_, r)| r.address() == address) {
                return Err(ClientError::ContactExists(format!(
                    "(the address of another contact) {name}"
                )));
            }
            let mut updated = existing.clone();
            updated.fingerprint = address.fingerprint.0;
            updated.device_id = address.device_id;
            updated.identity = None;
            updated.verified = false;
            updated.identity_changed = true;
            self.save_contact(&mut tx, *id, &updated).await?;
            store::delete_sessions(&mut tx, *id).await?;
            store::reset_outbox_ciphertexts(&mut tx, *id).await?;
            let event = AuditEvent::IdentityChanged {
                device: own_ref(&state.account),
                peer: device_ref(address),
            };
            self.audit(&mut tx, &state.account, event).await?;
            tx.commit().await?;
            self.emit(Event::IdentityChanged {
                contact: ContactId(*id),
            });
            return Ok(ContactId(*id));
        }
        if let Some((id, existing)) = contacts.iter().find(|(_, r)| r.address() == address) {
            // Known under another name (for example an `unknown-…` contact that wrote first):
            // rename it.
            let mut renamed = existing.clone();
            renamed.name = name.to_owned();
            self.save_contact(&mut tx, *id, &renamed).await?;
            tx.commit().await?;
            return Ok(ContactId(*id));
        }
        let record = ContactRecord {
            name: name.to_owned(),
            fingerprint: address.fingerprint.0,
            device_id: address.device_id,
            identity: None,
            verified: false,
            identity_changed: false,
            added_at_ms: now_ms(),
        };
        let id = self.insert_contact(&mut tx, &record).await?;
        tx.commit().await?;
        Ok(ContactId(id))
    }

    /// The safety number shared with a contact: both devices compute the same 60 digits; the
    /// users compare them in person or over a trusted channel. Needs the contact's identity key,
    /// known once a session exists (connect first, or receive a message from them).
    pub async fn safety_number(&self, contact: ContactId) -> Result<SafetyNumber> {
        if let Some(number) = self.known_safety_number(contact).await? {
            return Ok(number);
        }
        // Learn the identity by starting a session (its bundle carries the identity key).
        let link = self.current_link();
        let Some(link) = link else {
            let name = self.contact_name(contact).await?;
            return Err(ClientError::IdentityUnknown(name));
        };
        self.ensure_session(&link, contact.0).await?;
        match self.known_safety_number(contact).await? {
            Some(number) => Ok(number),
            None => Err(ClientError::IdentityUnknown(
                self.contact_name(contact).await?,
            )),
        }
    }

    async fn contact_name(&self, contact: ContactId) -> Result<String> {
        let mut c = self.inner.db.acquire().await?;
        Ok(self.load_contact(&mut c, contact.0).await?.name)
    }

    async fn known_safety_number(&self, contact: ContactId) -> Result<Option<SafetyNumber>> {
        let state = self.inner.state.lock().await;
        let mut c = self.inner.db.acquire().await?;
        let record = self.load_contact(&mut c, contact.0).await?;
        Ok(record
            .identity_key()
            .map(|theirs| SafetyNumber::compute(state.account.identity_key(), &theirs)))
    }

    /// Marks a contact verified after the user compared safety numbers: `confirmed` must be the
    /// number the user checked (spaces ignored). Unblocks sending after an identity change.
    pub async fn mark_verified(&self, contact: ContactId, confirmed: &str) -> Result<()> {
        let expected = self.safety_number(contact).await?;
        let digits: String = confirmed.chars().filter(char::is_ascii_digit).collect();
        let want: String = expected
            .digits()
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            digits.as_bytes(),
            want.as_bytes(),
        )) {
            return Err(ClientError::SafetyNumberMismatch);
        }
        let state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        let mut record = self.load_contact(&mut tx, contact.0).await?;
        record.verified = true;
        record.identity_changed = false;
        self.save_contact(&mut tx, contact.0, &record).await?;
        let event = AuditEvent::ContactVerified {
            device: own_ref(&state.account),
            peer: device_ref(record.address()),
        };
        self.audit(&mut tx, &state.account, event).await?;
        tx.commit().await?;
        self.inner.outbox_changed.notify_one();
        Ok(())
    }

    // ----- sending --------------------------------------------------------------------------

    /// Queues a message to a contact and returns its id. It is in the transcript and the outbox
    /// when this returns; it goes out as soon as the relay is connected
    /// ([`Event::MessageSent`], then [`Event::MessageDelivered`] once the contact's device has
    /// it).
    pub async fn send(
        &self,
        contact: ContactId,
        content_type: ContentType,
        content: &[u8],
    ) -> Result<MessageId> {
        if content.len() > MAX_CONTENT_LEN {
            return Err(ClientError::MessageTooLong {
                len: content.len(),
                max: MAX_CONTENT_LEN,
            });
        }
        let mut rng = rng();
        let mut id = [0u8; 16];
        rand_core::Rng::fill_bytes(&mut rng, &mut id);
        let id = MessageId(id);
        let now = now_ms();
        let state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        let record = self.load_contact(&mut tx, contact.0).await?;
        if record.identity_changed {
            return Err(ClientError::IdentityChangedUnverified(record.name));
        }
        self.append_transcript(
            &mut tx,
            &state.account,
            contact.0,
            &TranscriptRecord {
                direction: Direction::Sent,
                sender: state.account.identity_key().fingerprint(),
                message_id: id.0,
                sent_at_ms: now,
                received_at_ms: now,
                content_type,
                content: content.to_vec(),
            },
        )
        .await?;
        let payload = Payload::Message {
            id,
            sent_at_ms: now,
            content_type,
            content: Zeroizing::new(content.to_vec()),
        };
        self.queue(&mut tx, contact.0, Some(id), &payload).await?;
        tx.commit().await?;
        drop(state);
        self.inner.outbox_changed.notify_one();
        Ok(id)
    }

    /// Sends UTF-8 text.
    pub async fn send_text(&self, contact: ContactId, text: &str) -> Result<MessageId> {
        self.send(contact, ContentType::Text, text.as_bytes()).await
    }

    async fn queue(
        &self,
        c: &mut SqliteConnection,
        contact_id: i64,
        message_id: Option<MessageId>,
        payload: &Payload,
    ) -> Result<()> {
        let row = store::push_outbox(c, contact_id).await?;
        let item = OutboxItem {
            message_id: message_id.map(|m| m.0),
            payload: payload.encode(),
        };
        let sealed = self
            .inner
            .vault
            .seal_value("outbox", &row.to_be_bytes(), &item, &mut rng());
        store::set_outbox_sealed(c, row, &sealed).await
    }

    /// Messages waiting to be sent (not yet durable at the relay).
    pub async fn outbox_len(&self) -> Result<usize> {
        let mut c = self.inner.db.acquire().await?;
        Ok(store::outbox(&mut c).await?.len())
    }

    async fn append_transcript(
        &self,
        c: &mut SqliteConnection,
        account: &Account,
        contact_id: i64,
        record: &TranscriptRecord,
    ) -> Result<u64> {
        let mut rng = rng();
        let mut writer = match store::transcript_writer(c, contact_id).await? {
            Some(sealed) => TranscriptWriter::unseal(&sealed, &self.inner.storage_key)
                .map_err(|_| ClientError::CorruptStore("transcript writer"))?,
            None => TranscriptWriter::new(self.inner.options.checkpoint_interval, &mut rng),
        };
        let sequence = writer.len();
        let appended = writer
            .append(record, account.identity(), now_ms(), &mut rng)
            .map_err(session_error)?;
        store::put_transcript_record(c, contact_id, sequence, &appended.record.to_bytes()).await?;
        if let Some(checkpoint) = appended.checkpoint {
            self.store_checkpoint(c, account, contact_id, &writer, &checkpoint)
                .await?;
        }
        store::put_transcript_writer(
            c,
            contact_id,
            &writer.seal(&self.inner.storage_key, &mut rng),
        )
        .await?;
        Ok(sequence)
    }

    /// Stores a transcript checkpoint and its audit record.
    async fn store_checkpoint(
        &self,
        c: &mut SqliteConnection,
        account: &Account,
        contact_id: i64,
        writer: &TranscriptWriter,
        checkpoint: &TranscriptCheckpoint,
    ) -> Result<()> {
        store::put_transcript_checkpoint(c, contact_id, checkpoint.count, &checkpoint.to_bytes())
            .await?;
        let event = AuditEvent::TranscriptCheckpointed {
            transcript: audit::TranscriptId(writer.id().0),
            records: checkpoint.count,
        };
        self.audit(c, account, event).await
    }

    /// Signs a checkpoint of every transcript as it stands now, so that no record is left in
    /// an unsigned tail (run before an export or at the end of a shift).
    pub async fn checkpoint_transcripts(&self) -> Result<u64> {
        let state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        let mut signed = 0;
        for contact_id in store::transcript_contacts(&mut tx).await? {
            let Some(sealed) = store::transcript_writer(&mut tx, contact_id).await? else {
                continue;
            };
            let writer = TranscriptWriter::unseal(&sealed, &self.inner.storage_key)
                .map_err(|_| ClientError::CorruptStore("transcript writer"))?;
            let checkpoint = writer.checkpoint(state.account.identity(), now_ms());
            self.store_checkpoint(&mut tx, &state.account, contact_id, &writer, &checkpoint)
                .await?;
            signed += 1;
        }
        self.checkpoint_audit(&mut tx, &state.account).await?;
        tx.commit().await?;
        Ok(signed)
    }

    // ----- sessions -------------------------------------------------------------------------

    /// Loads a contact's sessions, the active one first.
    async fn load_sessions(
        &self,
        c: &mut SqliteConnection,
        contact_id: i64,
    ) -> Result<Vec<StoredSession>> {
        let mut out = Vec::new();
        for row in store::sessions(c, contact_id).await? {
            let session = Session::unseal(&row.sealed, &self.inner.storage_key)
                .map_err(|_| ClientError::CorruptStore("session"))?;
            out.push(StoredSession {
                active: row.active,
                last_used_ms: row.last_used_ms,
                session,
            });
        }
        Ok(out)
    }

    async fn save_session(
        &self,
        c: &mut SqliteConnection,
        contact_id: i64,
        session: &Session,
    ) -> Result<()> {
        let sealed = session.seal(&self.inner.storage_key, &mut rng());
        store::put_session(
            c,
            contact_id,
            session.base_key().as_bytes(),
            now_ms(),
            &sealed,
        )
        .await
    }

    /// Makes sure the contact has a session, fetching their bundle if needed. Never holds the
    /// state lock while waiting for the relay.
    async fn ensure_session(&self, link: &Link, contact_id: i64) -> Result<()> {
        {
            let mut c = self.inner.db.acquire().await?;
            if !store::sessions(&mut c, contact_id).await?.is_empty() {
                return Ok(());
            }
        }
        let record = {
            let mut c = self.inner.db.acquire().await?;
            self.load_contact(&mut c, contact_id).await?
        };
        let bundle = match link
            .call(FrameBody::FetchBundle(record.address().to_device_address()))
            .await?
        {
            FrameBody::Bundle(b) => b,
            _ => {
                return Err(ClientError::Connection(
                    "unexpected answer to a bundle fetch".into(),
                ));
            }
        };
        self.start_session(contact_id, &bundle).await
    }

    async fn start_session(&self, contact_id: i64, bundle: &PreKeyBundle) -> Result<()> {
        let state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        let mut record = self.load_contact(&mut tx, contact_id).await?;
        // The relay is not trusted: the bundle must belong to the identity the address pins.
        if bundle.identity.fingerprint().0 != record.fingerprint {
            return Err(ClientError::RelayIdentityMismatch(record.name));
        }
        if !store::sessions(&mut tx, contact_id).await?.is_empty() {
            // A session appeared meanwhile (the contact wrote first): use it.
            return Ok(());
        }
        let session = Session::initiate(state.account.identity(), bundle, &mut rng())
            .map_err(session_error)?;
        if record.identity.is_none() {
            record.identity = Some(bundle.identity.to_bytes());
            self.save_contact(&mut tx, contact_id, &record).await?;
        }
        self.save_session(&mut tx, contact_id, &session).await?;
        store::activate_session(
            &mut tx,
            contact_id,
            session.base_key().as_bytes(),
            SESSIONS_PER_CONTACT,
        )
        .await?;
        store::remember_base_key(&mut tx, contact_id, session.base_key().as_bytes()).await?;
        let event = session_started(&state.account, record.address(), &session);
        self.audit(&mut tx, &state.account, event).await?;
        tx.commit().await?;
        Ok(())
    }

    // ----- connection -----------------------------------------------------------------------

    fn current_link(&self) -> Option<Arc<Link>> {
        self.inner.link.lock().ok().and_then(|l| l.clone())
    }

    async fn relay(&self) -> Result<RelayUrl> {
        let url = self
            .inner
            .state
            .lock()
            .await
            .profile
            .relay_url
            .clone()
            .ok_or(ClientError::NotRegistered)?;
        RelayUrl::parse(&url)
    }

    /// Registers this device with the relay at `relay_url` (with an invite token where the relay
    /// requires one) and publishes its prekeys. Remembers the relay for [`Client::connect`].
    pub async fn register(&self, relay_url: &str, invite: Option<&str>) -> Result<()> {
        let url = RelayUrl::parse(relay_url)?;
        let account = self.inner.state.lock().await.account.clone();
        let (link, incoming) = link::connect(
            &url,
            &self.inner.options.tls,
            &account,
            Greeting::Register(invite.map(str::as_bytes)),
            self.inner.options.request_timeout,
        )
        .await?;
        // Route answers while we upload.
        let reader = tokio::spawn(drain(incoming));
        let result = async {
            self.publish_signed_prekeys(&link).await?;
            self.replenish(&link, 0, 0).await
        }
        .await;
        link.close().await;
        reader.abort();
        result?;
        let mut state = self.inner.state.lock().await;
        state.profile.relay_url = Some(url.as_str().to_owned());
        let sealed = self
            .inner
            .vault
            .seal_value("profile", b"", &state.profile, &mut rng());
        let mut c = self.inner.db.acquire().await?;
        store::put_meta(&mut c, "profile", &sealed).await
    }

    async fn save_account(&self, c: &mut SqliteConnection, account: &Account) -> Result<()> {
        store::put_meta(
            c,
            "account",
            &account.seal(&self.inner.storage_key, &mut rng()),
        )
        .await
    }

    async fn publish_signed_prekeys(&self, link: &Link) -> Result<()> {
        let (signed, kem) = {
            let state = self.inner.state.lock().await;
            (
                state.account.signed_prekey().cloned(),
                state.account.last_resort_kem_prekey().cloned(),
            )
        };
        link.call(FrameBody::UploadPreKeys {
            signed_prekey: signed,
            last_resort_kem_prekey: kem,
            one_time_prekeys: Vec::new(),
            one_time_kem_prekeys: Vec::new(),
        })
        .await
        .map(drop)
    }

    /// Rotates the signed prekey and last-resort ML-KEM prekey when they are too old.
    async fn rotate_if_due(&self, link: &Link) -> Result<()> {
        let now_s = now_ms() / 1000;
        let due = {
            let mut state = self.inner.state.lock().await;
            let created = state.account.signed_prekey_created_at().unwrap_or(0);
            if now_s.saturating_sub(created) < self.inner.options.signed_prekey_max_age.as_secs() {
                false
            } else {
                let mut account = state.account.clone();
                let mut rng = rng();
                account.rotate_signed_prekey(now_s, &mut rng);
                account.rotate_last_resort_kem_prekey(&mut rng);
                let mut c = self.inner.db.acquire().await?;
                // Stored before it is published: a crash cannot leave the relay handing out a
                // prekey whose secret is lost.
                self.save_account(&mut c, &account).await?;
                state.account = account;
                true
            }
        };
        if due {
            self.publish_signed_prekeys(link).await?;
            self.emit(Event::SignedPreKeyRotated);
        }
        Ok(())
    }

    /// Tops one-time prekeys up to the target when the relay reports fewer than a quarter left.
    async fn replenish(&self, link: &Link, one_time: u32, kem_one_time: u32) -> Result<()> {
        let target = self.inner.options.one_time_prekeys;
        if one_time >= target / 4 && kem_one_time >= target / 4 {
            return Ok(());
        }
        // The relay's counts are not trusted alone: a relay reporting zero again and again
        // must not grow the account without bound. Secrets kept locally (published, or handed
        // out and not yet used by a prekey message) stay below twice the target.
        let (local_x, local_k) = {
            let state = self.inner.state.lock().await;
            let (x, k) = state.account.one_time_prekey_counts();
            (
                u32::try_from(x).unwrap_or(u32::MAX),
                u32::try_from(k).unwrap_or(u32::MAX),
            )
        };
        let room = |local: u32| (2 * target).saturating_sub(local);
        let (mut x_left, mut k_left) = (
            target.saturating_sub(one_time).min(room(local_x)),
            target.saturating_sub(kem_one_time).min(room(local_k)),
        );
        if x_left == 0 && k_left == 0 {
            return Ok(());
        }
        let (mut x_sent, mut k_sent) = (0, 0);
        while x_left > 0 || k_left > 0 {
            let chunk = u32::try_from(MAX_PREKEYS_PER_UPLOAD).unwrap_or(100);
            let (x, k) = (x_left.min(chunk), k_left.min(chunk));
            let (ones, kems) = {
                let mut state = self.inner.state.lock().await;
                let mut account = state.account.clone();
                let mut rng = rng();
                let ones = account.generate_one_time_prekeys(x as usize, &mut rng);
                let kems = account.generate_one_time_kem_prekeys(k as usize, &mut rng);
                let mut c = self.inner.db.acquire().await?;
                self.save_account(&mut c, &account).await?;
                state.account = account;
                (ones, kems)
            };
            link.call(FrameBody::UploadPreKeys {
                signed_prekey: None,
                last_resort_kem_prekey: None,
                one_time_prekeys: ones,
                one_time_kem_prekeys: kems,
            })
            .await?;
            x_left -= x;
            k_left -= k;
            x_sent += x;
            k_sent += k;
        }
        self.emit(Event::PreKeysReplenished {
            one_time: x_sent,
            kem_one_time: k_sent,
        });
        Ok(())
    }

    /// Starts keeping a connection to the relay in the background: reconnects with exponential
    /// backoff, sends the outbox, receives and stores messages. Idempotent.
    pub async fn connect(&self) -> Result<()> {
        self.relay().await?;
        let mut supervisor = self
            .inner
            .supervisor
            .lock()
            .map_err(|_| ClientError::Connection("poisoned".into()))?;
        if supervisor.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        let client = self.clone();
        *supervisor = Some(tokio::spawn(async move { client.supervise().await }));
        Ok(())
    }

    /// Stops the background connection.
    pub async fn disconnect(&self) {
        let handle = self.inner.supervisor.lock().ok().and_then(|mut s| s.take());
        if let Some(handle) = handle {
            handle.abort();
            let _ = handle.await;
        }
        if let Some(link) = self.inner.link.lock().ok().and_then(|mut l| l.take()) {
            link.close().await;
        }
        self.inner.connection.send_replace(ConnectionState::Stopped);
    }

    async fn supervise(self) {
        let mut backoff = Duration::from_millis(250);
        loop {
            self.set_state(ConnectionState::Connecting);
            let started = std::time::Instant::now();
            let reason = match self.run_connection().await {
                Ok(()) => "the relay closed the connection".to_owned(),
                Err(e) => e.to_string(),
            };
            if let Ok(mut l) = self.inner.link.lock() {
                *l = None;
            }
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(250);
            }
            // "Equal jitter" (a wait between half the backoff and all of it) keeps a clinic's
            // clients from reconnecting in lockstep after an outage.
            let jitter = rand_core::Rng::next_u64(&mut rng()) % (backoff.as_millis() as u64 + 1);
            let wait = Duration::from_millis(backoff.as_millis() as u64 / 2 + jitter / 2);
            tracing::info!(%reason, retry_in_ms = wait.as_millis() as u64, "relay connection lost");
            self.set_state(ConnectionState::Disconnected {
                reason,
                retry_in_ms: wait.as_millis() as u64,
            });
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(self.inner.options.max_backoff);
        }
    }

    fn set_state(&self, state: ConnectionState) {
        self.inner.connection.send_replace(state.clone());
        self.emit(Event::Connection(state));
    }

    async fn run_connection(&self) -> Result<()> {
        let url = self.relay().await?;
        let account = self.inner.state.lock().await.account.clone();
        let (link, mut incoming) = link::connect(
            &url,
            &self.inner.options.tls,
            &account,
            Greeting::Authenticate,
            self.inner.options.request_timeout,
        )
        .await?;
        drop(account);
        if let Ok(mut l) = self.inner.link.lock() {
            *l = Some(link.clone());
        }
        self.set_state(ConnectionState::Connected);
        let (counts_tx, counts_rx) = tokio::sync::mpsc::channel::<(u32, u32)>(4);
        let reader = async {
            while let Some(body) = incoming.next().await? {
                match body {
                    FrameBody::Deliver(delivery) => {
                        let server_id = delivery.server_id;
                        self.receive(delivery).await?;
                        fault_point("before-ack");
                        link.post(FrameBody::Ack(vec![server_id])).await?;
                    }
                    FrameBody::PreKeyCount {
                        one_time,
                        kem_one_time,
                    } => {
                        let _ = counts_tx.try_send((one_time, kem_one_time));
                    }
                    FrameBody::Error { code, .. } => return Err(ClientError::Relay(code)),
                    _ => {}
                }
            }
            Ok::<(), ClientError>(())
        };
        let upkeep = async {
            let mut counts_rx = counts_rx;
            // Rotation is checked at every connection and hourly while connected.
            let mut hourly = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = hourly.tick() => {
                        self.rotate_if_due(&link).await?;
                        self.archive_if_due().await?;
                    }
                    counts = counts_rx.recv() => match counts {
                        Some((one_time, kem)) => self.replenish(&link, one_time, kem).await?,
                        None => return Ok(()),
                    },
                }
            }
        };
        let sender = self.flush_outbox(&link);
        let result = tokio::select! {
            r = reader => r,
            r = upkeep => r,
            r = sender => r,
        };
        link.close().await;
        result
    }

    /// Sends queued payloads in order, for as long as the connection lasts.
    async fn flush_outbox(&self, link: &Link) -> Result<()> {
        // Why each held contact is held, so each reason is reported once.
        let mut reported = std::collections::HashMap::<i64, String>::new();
        loop {
            let changed = self.inner.outbox_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let rows = {
                let mut c = self.inner.db.acquire().await?;
                store::outbox(&mut c).await?
            };
            let mut progressed = false;
            // Contacts whose messages cannot move in this pass; their later messages wait too,
            // so that one contact's messages never overtake each other.
            let mut held = std::collections::HashSet::new();
            for row in rows {
                if held.contains(&row.contact_id) {
                    continue;
                }
                let record = {
                    let mut c = self.inner.db.acquire().await?;
                    self.load_contact(&mut c, row.contact_id).await?
                };
                if record.identity_changed {
                    held.insert(row.contact_id); // until the user re-verifies
                    continue;
                }
                // Re-read the row: while this pass waited on the network, a replaced identity
                // may have cleared its ciphertext (made for the old identity).
                let Some(row) = ({
                    let mut c = self.inner.db.acquire().await?;
                    store::outbox_row(&mut c, row.id).await?
                }) else {
                    continue;
                };
                let ciphertext = match row.ciphertext {
                    Some(c) => c,
                    None => match self
                        .prepare(link, row.id, row.contact_id, &row.sealed)
                        .await
                    {
                        Ok(c) => {
                            reported.remove(&row.contact_id);
                            if let Ok(mut shared) = self.inner.held.lock() {
                                shared.remove(&row.contact_id);
                            }
                            c
                        }
                        Err(e) if is_per_contact(&e) => {
                            held.insert(row.contact_id);
                            let reason = e.to_string();
                            if reported.get(&row.contact_id) != Some(&reason) {
                                // The reason may name the contact (a name can be PHI): it goes
                                // to the app in the event, never to the log.
                                tracing::warn!(
                                    contact = row.contact_id,
                                    "messages to a contact are held"
                                );
                                reported.insert(row.contact_id, reason.clone());
                                self.emit(Event::SendHeld {
                                    contact: ContactId(row.contact_id),
                                    reason,
                                });
                            }
                            // After the event: whoever sees sync() finish has the event too.
                            if let Ok(mut shared) = self.inner.held.lock() {
                                shared.insert(row.contact_id);
                            }
                            continue;
                        }
                        Err(e) => return Err(e),
                    },
                };
                let sent = link
                    .call(FrameBody::Send(vec![OutgoingEnvelope {
                        recipient: record.address().to_device_address(),
                        payload: ciphertext,
                    }]))
                    .await;
                match sent {
                    Ok(FrameBody::Sent(_)) => {}
                    Ok(_) => {
                        return Err(ClientError::Connection(
                            "unexpected answer to a send".into(),
                        ));
                    }
                    Err(ClientError::Relay(
                        ErrorCode::QuotaExceeded | ErrorCode::UnknownDevice,
                    )) => {
                        // This recipient cannot take it now; the others should not wait.
                        held.insert(row.contact_id);
                        continue;
                    }
                    Err(ClientError::Relay(ErrorCode::RateLimited)) => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                    Err(e) => return Err(e),
                }
                let item: OutboxItem =
                    self.inner
                        .vault
                        .open_value("outbox", &row.id.to_be_bytes(), &row.sealed)?;
                {
                    let mut c = self.inner.db.acquire().await?;
                    store::delete_outbox(&mut c, row.id).await?;
                }
                progressed = true;
                if let Some(id) = item.message_id {
                    self.emit(Event::MessageSent {
                        contact: ContactId(row.contact_id),
                        id: MessageId(id),
                    });
                }
            }
            if !progressed {
                // Nothing could move: wait for news (a new message, a verification) or retry in
                // a while (a full mailbox drains).
                let _ = tokio::time::timeout(Duration::from_secs(5), changed).await;
            }
        }
    }

    /// Makes sure the contact has a session, then encrypts the queued payload.
    async fn prepare(
        &self,
        link: &Link,
        row_id: i64,
        contact_id: i64,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        self.ensure_session(link, contact_id).await?;
        self.encrypt_outbox_row(row_id, contact_id, sealed).await
    }

    /// Encrypts a queued payload with the contact's active session and stores the ciphertext
    /// with the advanced session, so a resend after a crash sends the very same bytes.
    async fn encrypt_outbox_row(
        &self,
        row_id: i64,
        contact_id: i64,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let _state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        let item: OutboxItem =
            self.inner
                .vault
                .open_value("outbox", &row_id.to_be_bytes(), sealed)?;
        let payload = item.payload;
        let mut sessions = self.load_sessions(&mut tx, contact_id).await?;
        let Some(StoredSession { session, .. }) = sessions.first_mut() else {
            return Err(ClientError::Session("no session with the contact".into()));
        };
        let ciphertext = session.encrypt(&payload).map_err(session_error)?;
        self.save_session(&mut tx, contact_id, session).await?;
        store::set_outbox_ciphertext(&mut tx, row_id, &ciphertext).await?;
        tx.commit().await?;
        Ok(ciphertext)
    }

    /// Waits until the connection is up, every envelope the relay held at that point is stored,
    /// and the outbox is empty (or only holds messages for blocked contacts), or `timeout` passes.
    pub async fn sync(&self, timeout: Duration) -> Result<()> {
        tokio::time::timeout(timeout, async {
            let mut state = self.connection_state();
            loop {
                if *state.borrow_and_update() == ConnectionState::Connected
                    && let Some(link) = self.current_link()
                {
                    // The relay answers in order: this Ok comes after every pending delivery,
                    // and the reader stores each delivery before reading the next frame.
                    if link.call(FrameBody::Ack(Vec::new())).await.is_ok() {
                        break;
                    }
                }
                if state.changed().await.is_err() {
                    return Err(ClientError::Connection("the client stopped".into()));
                }
            }
            loop {
                let changed = self.inner.outbox_changed.notified();
                if self.pending_sendable().await? == 0 {
                    return Ok(());
                }
                let _ = tokio::time::timeout(Duration::from_millis(100), changed).await;
            }
        })
        .await
        .map_err(|_| ClientError::Timeout)?
    }

    /// Outbox entries that can go out now: not for a contact awaiting re-verification, nor for
    /// one whose messages are held (no prekeys, unknown device, forged bundle).
    async fn pending_sendable(&self) -> Result<usize> {
        let held = self
            .inner
            .held
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default();
        let mut c = self.inner.db.acquire().await?;
        let mut n = 0;
        for row in store::outbox(&mut c).await? {
            if !held.contains(&row.contact_id)
                && !self
                    .load_contact(&mut c, row.contact_id)
                    .await?
                    .identity_changed
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Waits until the relay connection is up (after [`Client::connect`]).
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let mut state = self.connection_state();
        tokio::time::timeout(timeout, async {
            while *state.borrow_and_update() != ConnectionState::Connected {
                if state.changed().await.is_err() {
                    return Err(ClientError::Connection("the client stopped".into()));
                }
            }
            Ok(())
        })
        .await
        .map_err(|_| ClientError::Timeout)?
    }

    /// Messages received and stored but not yet marked read, oldest first. Every received
    /// message is here until [`Client::mark_read`] — also one whose `MessageReceived` event was
    /// lost to a crash — so an app that shows these and then marks them shows each message
    /// exactly once.
    pub async fn unread(&self) -> Result<Vec<ReceivedMessage>> {
        let names: std::collections::HashMap<i64, String> = self
            .contacts()
            .await?
            .into_iter()
            .map(|c| (c.id.0, c.name))
            .collect();
        let mut c = self.inner.db.acquire().await?;
        let mut writers = std::collections::HashMap::new();
        let mut out = Vec::new();
        for (contact_id, sequence) in store::inbox(&mut c).await? {
            if let std::collections::hash_map::Entry::Vacant(slot) = writers.entry(contact_id) {
                let sealed = store::transcript_writer(&mut c, contact_id)
                    .await?
                    .ok_or(ClientError::CorruptStore("transcript writer"))?;
                slot.insert(
                    TranscriptWriter::unseal(&sealed, &self.inner.storage_key)
                        .map_err(|_| ClientError::CorruptStore("transcript writer"))?,
                );
            }
            let Some(writer) = writers.get(&contact_id) else {
                continue;
            };
            let bytes = store::transcript_record_at(&mut c, contact_id, sequence)
                .await?
                .ok_or(ClientError::CorruptStore("transcript record"))?;
            let record = SealedRecord::from_bytes(&bytes)
                .ok()
                .and_then(|r| r.open(&writer.id(), writer.key()))
                .ok_or(ClientError::CorruptStore("transcript record"))?;
            out.push(ReceivedMessage {
                contact: ContactId(contact_id),
                contact_name: names.get(&contact_id).cloned().unwrap_or_default(),
                id: MessageId(record.message_id),
                sent_at_ms: record.sent_at_ms,
                received_at_ms: record.received_at_ms,
                content_type: record.content_type,
                content: Zeroizing::new(record.content),
            });
        }
        Ok(out)
    }

    /// Marks messages read: they leave [`Client::unread`].
    pub async fn mark_read(&self, ids: &[MessageId]) -> Result<()> {
        let mut tx = store::begin(&self.inner.db).await?;
        for id in ids {
            store::remove_from_inbox(&mut tx, &id.0).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ----- receiving ------------------------------------------------------------------------

    /// Stores one delivery: decrypt, then commit session, transcript record and dedupe markers
    /// in one transaction. Returns once it is durable; the caller acknowledges it afterwards.
    async fn receive(&self, delivery: Delivery) -> Result<()> {
        // In a task of its own: the connection's select! may drop the reader at any await, and
        // a receive must either finish (commit, then update memory) or not start.
        let client = self.clone();
        tokio::spawn(async move { client.receive_now(delivery).await })
            .await
            .map_err(|_| ClientError::Connection("the receive task failed".into()))?
    }

    async fn receive_now(&self, delivery: Delivery) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        if store::envelope_seen(&mut tx, &delivery.server_id).await? {
            return Ok(()); // stored before a crash or lost ack: acknowledge again, show nothing
        }
        let now = now_ms();
        store::mark_envelope_seen(&mut tx, &delivery.server_id, now).await?;
        store::prune_seen_envelopes(&mut tx, now.saturating_sub(SEEN_ENVELOPE_TTL_MS)).await?;
        let sender = Address::from_device_address(delivery.sender);
        let mut events = Vec::new();
        let mut new_account = None;
        match self
            .decrypt(&mut tx, &state, sender, &delivery.payload, &mut events)
            .await?
        {
            Ok(Some(mut decrypted)) => {
                new_account = decrypted.account.take();
                let signer = new_account.as_ref().unwrap_or(&state.account);
                self.deliver_payload(&mut tx, signer, decrypted, now, &mut events)
                    .await?;
            }
            Ok(None) => {} // a duplicate
            Err(Failure(reason)) => {
                self.record_failure(&mut tx, sender, &reason, now).await?;
                events.push(Event::DecryptFailed { sender, reason });
            }
        }
        tx.commit().await?;
        if let Some(account) = new_account {
            state.account = account;
        }
        drop(state);
        for event in events {
            self.emit(event);
        }
        Ok(())
    }

    /// Records, sealed, a delivery that could not be read.
    async fn record_failure(
        &self,
        c: &mut SqliteConnection,
        sender: Address,
        reason: &str,
        now: u64,
    ) -> Result<()> {
        let record = FailureRecord {
            sender: sender.to_string(),
            reason: reason.to_owned(),
        };
        let sealed = self
            .inner
            .vault
            .seal_value("failure", b"", &record, &mut rng());
        tracing::warn!(%reason, "a delivered message could not be read");
        store::record_failure(c, now, &sealed).await
    }

    /// Decrypts a message from `sender`: with one of the contact's sessions, else as a new
    /// session from a prekey message. Returns the contact and plaintext, `None` for a
    /// duplicate, or the reason the message cannot be read. On success the session (and
    /// account, for a new session) are saved in `c`; `state` changes only once that succeeded.
    /// A database error is an `Err`: the delivery is then neither stored nor acknowledged.
    async fn decrypt(
        &self,
        c: &mut SqliteConnection,
        state: &State,
        sender: Address,
        bytes: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<Result<Option<Decrypted>, Failure>> {
        let message = match Message::from_bytes(bytes) {
            Ok(m) => m,
            Err(e) => return Ok(Err(Failure(format!("malformed: {e}")))),
        };
        let contact = self.find_by_address(c, sender).await?;
        let mut last_error = None;
        if let Some((contact_id, record)) = &contact {
            // The blind index found this row; the row itself must agree (a store edited behind
            // our back could have moved the index onto another contact).
            if record.address() != sender {
                return Err(ClientError::CorruptStore("contact index"));
            }
            for StoredSession { mut session, .. } in self.load_sessions(c, *contact_id).await? {
                let missing_before = missing_count(&session);
                match session.decrypt(bytes, &mut rng()) {
                    Ok(plaintext) => {
                        self.save_session(c, *contact_id, &session).await?;
                        let missing = missing_count(&session);
                        if missing > missing_before {
                            events.push(Event::GapDetected {
                                contact: ContactId(*contact_id),
                                missing,
                            });
                        }
                        return Ok(Ok(Some(Decrypted {
                            contact_id: *contact_id,
                            name: record.name.clone(),
                            plaintext: Zeroizing::new(plaintext),
                            account: None,
                        })));
                    }
                    Err(DecryptionError::DuplicateMessage { .. }) => return Ok(Ok(None)),
                    Err(e) => last_error = Some(e.to_string()),
                }
            }
        }
        let Message::PreKey(prekey) = message else {
            let reason = last_error.unwrap_or_else(|| "no session with this sender".into());
            return Ok(Err(Failure(reason)));
        };
        if prekey.identity.fingerprint() != sender.fingerprint {
            return Ok(Err(Failure(
                "the message's identity is not the sender the relay named".into(),
            )));
        }
        // A prekey message for a session this contact already had is a replay (its session
        // has moved on, or was pruned): accepting it again would overwrite or resurrect a
        // session. Treated as a duplicate.
        if let Some((contact_id, _)) = &contact
            && store::base_key_known(c, *contact_id, prekey.base_key.as_bytes()).await?
        {
            return Ok(Ok(None));
        }
        let mut account = state.account.clone();
        let inbound = match account.accept(bytes, &mut rng()) {
            Ok(inbound) => inbound,
            Err(SessionCreationError::UnknownOneTimePreKey(_)) => {
                return Ok(Err(Failure(
                    "a repeated prekey message (its one-time prekey is used up)".into(),
                )));
            }
            Err(e) => return Ok(Err(Failure(e.to_string()))),
        };
        let session = inbound.session;
        let (contact_id, name) = match contact {
            Some((id, mut record)) => {
                if record.identity.is_none() {
                    record.identity = Some(session.remote_identity().to_bytes());
                    self.save_contact(c, id, &record).await?;
                }
                (id, record.name)
            }
            None => {
                let name = format!("unknown-{}", sender.short());
                let record = ContactRecord {
                    name: name.clone(),
                    fingerprint: sender.fingerprint.0,
                    device_id: sender.device_id,
                    identity: Some(session.remote_identity().to_bytes()),
                    verified: false,
                    identity_changed: false,
                    added_at_ms: now_ms(),
                };
                let id = self.insert_contact(c, &record).await?;
                events.push(Event::NewContact {
                    contact: ContactId(id),
                    name: name.clone(),
                });
                (id, name)
            }
        };
        // Which session sends from now on. If ours is still unanswered, both sides started at
        // once: both pick the session with the smaller base key, so they agree without talking.
        // Otherwise the peer started afresh (a reinstall, a lost session): follow them.
        // "At once" means within SIMULTANEOUS_START_WINDOW: an old unanswered session (made
        // only to show a safety number, or whose first message was lost) must not win over
        // the peer's fresh one, which the peer can actually use.
        let new_base = *session.base_key().as_bytes();
        let now = now_ms();
        let active_base = match self
            .load_sessions(c, contact_id)
            .await?
            .iter()
            .find(|s| s.active)
        {
            Some(ours)
                if ours.session.awaiting_reply()
                    && now.saturating_sub(ours.last_used_ms) < SIMULTANEOUS_START_WINDOW_MS =>
            {
                (*ours.session.base_key().as_bytes()).min(new_base)
            }
            _ => new_base,
        };
        store::remember_base_key(c, contact_id, &new_base).await?;
        self.save_session(c, contact_id, &session).await?;
        store::activate_session(c, contact_id, &active_base, SESSIONS_PER_CONTACT).await?;
        let event = session_started(&account, sender, &session);
        self.audit(c, &account, event).await?;
        self.save_account(c, &account).await?;
        Ok(Ok(Some(Decrypted {
            contact_id,
            name,
            plaintext: Zeroizing::new(inbound.plaintext),
            account: Some(account),
        })))
    }

    /// Acts on a decrypted payload: a message is recorded, deduplicated and answered with a
    /// receipt; a receipt becomes `MessageDelivered` events.
    async fn deliver_payload(
        &self,
        c: &mut SqliteConnection,
        account: &Account,
        decrypted: Decrypted,
        now: u64,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let Decrypted {
            contact_id,
            name,
            plaintext,
            ..
        } = decrypted;
        match Payload::decode(&plaintext) {
            Err(e) => {
                let sender = self.load_contact(c, contact_id).await?.address();
                let reason = format!("the message decrypted but its payload is malformed: {e}");
                self.record_failure(c, sender, &reason, now).await?;
                events.push(Event::DecryptFailed { sender, reason });
            }
            Ok(Payload::Receipt(ids)) => {
                for id in ids {
                    events.push(Event::MessageDelivered {
                        contact: ContactId(contact_id),
                        id,
                    });
                }
            }
            Ok(Payload::Message {
                id,
                sent_at_ms,
                content_type,
                content,
            }) => {
                if !store::mark_message_seen(c, contact_id, &id.0).await? {
                    return Ok(()); // the sender sent it twice (a resend after a crash)
                }
                let sender = self
                    .load_contact(c, contact_id)
                    .await?
                    .address()
                    .fingerprint;
                let sequence = self
                    .append_transcript(
                        c,
                        account,
                        contact_id,
                        &TranscriptRecord {
                            direction: Direction::Received,
                            sender,
                            message_id: id.0,
                            sent_at_ms,
                            received_at_ms: now,
                            content_type,
                            content: content.to_vec(),
                        },
                    )
                    .await?;
                // Unread until the app says it showed it: a crash between storing and showing
                // still shows it once, after the restart.
                store::push_inbox(c, contact_id, sequence, &id.0).await?;
                self.queue(c, contact_id, None, &Payload::Receipt(vec![id]))
                    .await?;
                self.inner.outbox_changed.notify_one();
                events.push(Event::MessageReceived(ReceivedMessage {
                    contact: ContactId(contact_id),
                    contact_name: name,
                    id,
                    sent_at_ms,
                    received_at_ms: now,
                    content_type,
                    content,
                }));
            }
        }
        Ok(())
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

/// Errors that concern one contact only: their messages are held, the connection goes on.
fn is_per_contact(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Relay(ErrorCode::NoPreKeys | ErrorCode::UnknownDevice | ErrorCode::BadPreKey)
            | ClientError::RelayIdentityMismatch(_)
            | ClientError::Session(_)
    )
}

fn session_started(account: &Account, peer: Address, session: &Session) -> AuditEvent {
    let mut conversation = [0u8; 16];
    conversation.copy_from_slice(session.base_key().as_bytes().get(..16).unwrap_or(&[0; 16]));
    AuditEvent::SessionStarted {
        device: own_ref(account),
        peer: device_ref(peer),
        conversation: audit::ConversationId(conversation),
    }
}

fn missing_count(session: &Session) -> usize {
    session
        .missing_messages()
        .iter()
        .map(|g| g.missing.len())
        .sum()
}

/// A delivery that cannot be read, and why (no secrets in the text).
struct Failure(String);

/// A decrypted delivery.
struct Decrypted {
    contact_id: i64,
    name: String,
    plaintext: Zeroizing<Vec<u8>>,
    /// For a new session: the account with the one-time prekeys it used removed, to become
    /// the in-memory account once (and only once) the transaction has committed.
    account: Option<Account>,
}

/// A session as stored for a contact.
struct StoredSession {
    active: bool,
    last_used_ms: u64,
    session: Session,
}

/// Reads a connection until it ends, only so that answers reach their callers.
async fn drain(mut incoming: Incoming) {
    while let Ok(Some(_)) = incoming.next().await {}
}

/// Crash-test hook: if `HUSHWIRE_CLIENT_FAULT` names this point, the process aborts here, as a
/// power cut would stop it. Documented in `docs/client.md` §6; unset in normal use.
fn fault_point(name: &str) {
    if std::env::var(FAULT_VAR).is_ok_and(|v| v == name) {
        tracing::error!(point = name, "fault injection: aborting");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The relay is not trusted: a bundle for another identity than the contact's address pins
    /// is refused before any session exists, and nothing is stored.
    #[tokio::test]
    async fn a_bundle_for_another_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let options = ClientOptions {
            kdf: KdfParams::INSECURE_FOR_TESTS,
            ..ClientOptions::default()
        };
        let secret = Secret::passphrase("correct horse battery staple");
        let alice = Client::create(&dir.path().join("a.db"), &secret, options)
            .await
            .unwrap();
        let mut rng = rng();
        let bob = Account::new(1, 0, &mut rng);
        let mut mallory = Account::new(1, 0, &mut rng);
        mallory.generate_one_time_prekeys(1, &mut rng);
        let bob_address = Address {
            fingerprint: bob.identity_key().fingerprint(),
            device_id: 1,
        };
        let contact = alice.add_contact("bob", bob_address, false).await.unwrap();
        let forged = mallory.prekey_bundle().unwrap();
        assert!(matches!(
            alice.start_session(contact.0, &forged).await,
            Err(ClientError::RelayIdentityMismatch(name)) if name == "bob"
        ));
        let mut c = alice.inner.db.acquire().await.unwrap();
        assert!(store::sessions(&mut c, contact.0).await.unwrap().is_empty());
        drop(c);
        assert!(!alice.contacts().await.unwrap()[0].identity_known);
    }

    /// A relay replaying a prekey message after the session it started is gone (pruned, or
    /// moved on too far to recognise it) must not bring that session back.
    #[tokio::test]
    async fn a_replayed_prekey_message_never_resurrects_its_session() {
        let dir = tempfile::tempdir().unwrap();
        let options = ClientOptions {
            kdf: KdfParams::INSECURE_FOR_TESTS,
            ..ClientOptions::default()
        };
        let secret = Secret::passphrase("correct horse battery staple");
        let bob = Client::create(&dir.path().join("b.db"), &secret, options)
            .await
            .unwrap();
        let mut rng = rng();
        let alice = Account::new(1, 0, &mut rng);
        // No one-time prekeys: the bundle a relay hands out once they run out.
        let bundle = bob
            .inner
            .state
            .lock()
            .await
            .account
            .prekey_bundle()
            .unwrap();
        let mut to_bob = Session::initiate(alice.identity(), &bundle, &mut rng).unwrap();
        let payload = Payload::Message {
            id: MessageId([7; 16]),
            sent_at_ms: 1,
            content_type: ContentType::Text,
            content: Zeroizing::new(b"hello".to_vec()),
        };
        let first = to_bob.encrypt(&payload.encode()).unwrap();
        let sender = hushwire::proto::relay::DeviceAddress {
            fingerprint: alice.identity_key().fingerprint().0,
            device_id: 1,
        };
        let deliver = |server_id: u8| Delivery {
            server_id: [server_id; 16],
            sender,
            server_time_ms: 1,
            payload: first.clone(),
        };
        bob.receive_now(deliver(1)).await.unwrap();
        assert_eq!(bob.unread().await.unwrap().len(), 1);
        let contact = bob.contacts().await.unwrap()[0].id;

        // The session goes (as the per-contact cap would drop it); the relay replays.
        {
            let mut c = bob.inner.db.acquire().await.unwrap();
            store::delete_sessions(&mut c, contact.0).await.unwrap();
        }
        let mut events = bob.events();
        bob.receive_now(deliver(2)).await.unwrap();
        let mut c = bob.inner.db.acquire().await.unwrap();
        assert!(
            store::sessions(&mut c, contact.0).await.unwrap().is_empty(),
            "the replay recreated the session"
        );
        drop(c);
        assert!(events.try_recv().is_err(), "a replay is silent");
        assert_eq!(bob.unread().await.unwrap().len(), 1);
    }
}
