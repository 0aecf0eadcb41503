//! Durable state behind one trait: devices, invites, prekeys and the mailbox. SQLite (WAL, group
//! commit) is the embedded default; PostgreSQL serves several relay instances.
//!
//! Everything stored is public or ciphertext: identity keys, signed prekeys and opaque envelope
//! payloads. Nothing here can decrypt a message.

mod postgres;
mod sql;
mod sqlite;

use std::future::Future;

use hushwire_proto::relay::{Delivery, DeviceAddress, OutgoingEnvelope, Receipt};

pub use postgres::{PostgresStore, delivery_notice, mailbox_channel, parse_delivery_notice};
pub use sqlite::SqliteStore;

/// A storage failure. Details go to the log; clients only learn that it was internal.
#[derive(Debug)]
pub enum StoreError {
    /// The database failed.
    Database(sqlx::Error),
    /// The write queue is gone (the relay is shutting down).
    Closed,
    /// Stored data does not decode.
    Corrupt(String),
    /// The group commit this write was part of failed and was rolled back (the cause is
    /// logged once for the whole batch); nothing of the write was applied.
    Batch(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Database(e) => write!(f, "database error: {e}"),
            Self::Closed => f.write_str("storage is shutting down"),
            Self::Corrupt(what) => write!(f, "stored data is damaged: {what}"),
            Self::Batch(cause) => write!(f, "the batch this write was in failed: {cause}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

/// How new devices may register.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationPolicy {
    /// Anyone may register.
    Open,
    /// Only with a single-use invite token issued by `hushwire-relay invite`.
    Invite,
}

/// The result of a registration attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// The device is now registered.
    Registered,
    /// The device was already registered with this same identity (a retried registration).
    AlreadyRegistered,
    /// Refused: the address is taken by another identity, or the invite is missing, unknown,
    /// expired or used.
    Refused,
    /// Refused (a registration with a certificate): the identity registered before without
    /// one, as a patient, and a patient's identity never becomes staff.
    PatientIdentity,
}

/// What the relay needs to know about a device at login (`docs/relay-protocol.md` §3.4), read
/// in one query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// The clinic's administrator suspended the device.
    pub suspended: bool,
    /// The encoded wipe order an administrator gave for the device, if any.
    pub wipe: Option<Vec<u8>>,
    /// The encoded agent certificate of the device's identity, if it holds one.
    pub certificate: Option<Vec<u8>>,
    /// The encoded device list of the device's identity, if it published one.
    pub device_list: Option<Vec<u8>>,
}

/// A provisioning message to file (`docs/clinic.md` §5.1): opaque sealed bytes under a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provisioning {
    /// The slot the linking code names.
    pub slot: [u8; 32],
    /// The sealed message (opaque to the relay).
    pub sealed: Vec<u8>,
    /// The device that files it.
    pub owner: DeviceAddress,
    /// When it is forgotten (Unix milliseconds).
    pub expires_at_ms: u64,
}

/// The result of filing a provisioning message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provisioned {
    /// Filed.
    Stored,
    /// Refused: a live message is already filed under the slot.
    SlotTaken,
    /// Refused: the owner already has the most live messages allowed.
    TooMany,
}

/// A `u64` sequence number as stored: 8 bytes big-endian, so that the databases' byte order
/// (`memcmp`) is number order over the whole `u64` range.
pub(crate) fn sequence_key(sequence: u64) -> Vec<u8> {
    sequence.to_be_bytes().to_vec()
}

/// A prekey upload, already signature-checked, as encoded bytes with ids.
#[derive(Clone, Debug, Default)]
pub struct PreKeyUpload {
    /// Encoded signed prekey.
    pub signed_prekey: Option<Vec<u8>>,
    /// Encoded last-resort ML-KEM prekey.
    pub last_resort_kem_prekey: Option<Vec<u8>>,
    /// `(id, encoded)` one-time X25519 prekeys.
    pub one_time: Vec<(u32, Vec<u8>)>,
    /// `(id, encoded)` one-time ML-KEM prekeys.
    pub kem_one_time: Vec<(u32, Vec<u8>)>,
}

/// A bundle's parts as claimed from storage (encoded), assembled by the caller.
#[derive(Clone, Debug)]
pub struct ClaimedBundle {
    /// Encoded identity key.
    pub identity: Vec<u8>,
    /// Encoded signed prekey.
    pub signed_prekey: Vec<u8>,
    /// Encoded one-time prekey, if one was left (now removed).
    pub one_time: Option<Vec<u8>>,
    /// Encoded ML-KEM prekey: one-time if one was left (now removed), else last-resort.
    pub kem: Vec<u8>,
}

/// Outcome of storing envelopes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// All stored durably, in order.
    Stored(Vec<Receipt>),
    /// Nothing stored: a recipient is unknown.
    UnknownRecipient(DeviceAddress),
    /// Nothing stored: a recipient's mailbox would exceed its total envelopes or bytes.
    MailboxFull(DeviceAddress),
    /// Nothing stored: the sender's share of a recipient's mailbox (envelopes or bytes) would
    /// be exceeded.
    SenderQuota(DeviceAddress),
}

/// How much one mailbox may hold (`docs/relay-protocol.md` §5): in total, and from any one
/// sender. Payload bytes count the ciphertext only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxLimits {
    /// Envelopes waiting, all senders.
    pub envelopes: u32,
    /// Payload bytes waiting, all senders.
    pub bytes: u64,
    /// Envelopes waiting from one sender.
    pub sender_envelopes: u32,
    /// Payload bytes waiting from one sender.
    pub sender_bytes: u64,
}

impl MailboxLimits {
    /// No limit at all (tests of other things).
    pub const UNLIMITED: Self = Self {
        envelopes: u32::MAX,
        bytes: u64::MAX,
        sender_envelopes: u32::MAX,
        sender_bytes: u64::MAX,
    };

    /// Whether `adding` more from one sender fits, given what the mailbox holds in total and
    /// from that sender: `None` if it fits, else the refusal for `recipient`. The sender's
    /// share is checked first, so a sender who filled the mailbox itself learns that it is its
    /// own share (`SenderQuota`), and others learn that the mailbox is full (`MailboxFull`).
    pub(crate) fn refusal(
        &self,
        recipient: DeviceAddress,
        total: Usage,
        from_sender: Usage,
        adding: Usage,
    ) -> Option<Enqueued> {
        let over = |held: Usage, envelopes: u32, bytes: u64| {
            held.envelopes.saturating_add(adding.envelopes) > i64::from(envelopes)
                || held.bytes.saturating_add(adding.bytes)
                    > i64::try_from(bytes).unwrap_or(i64::MAX)
        };
        if over(from_sender, self.sender_envelopes, self.sender_bytes) {
            Some(Enqueued::SenderQuota(recipient))
        } else if over(total, self.envelopes, self.bytes) {
            Some(Enqueued::MailboxFull(recipient))
        } else {
            None
        }
    }
}

/// Envelopes and payload bytes (held in a mailbox, or about to be added).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) envelopes: i64,
    pub(crate) bytes: i64,
}

impl Usage {
    /// One envelope of `len` payload bytes.
    pub(crate) fn one(len: usize) -> Self {
        Self {
            envelopes: 1,
            bytes: i64::try_from(len).unwrap_or(i64::MAX),
        }
    }

    pub(crate) fn add(&mut self, other: Self) {
        self.envelopes = self.envelopes.saturating_add(other.envelopes);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }

    /// Takes `other` away, never below zero.
    pub(crate) fn remove(&mut self, other: Self) {
        self.envelopes = self.envelopes.saturating_sub(other.envelopes).max(0);
        self.bytes = self.bytes.saturating_sub(other.bytes).max(0);
    }
}

/// What a frame adds to each recipient's mailbox, per recipient, in the frame's order of
/// first appearance (one frame may hold several envelopes for one device).
pub(crate) fn frame_usage(envelopes: &[OutgoingEnvelope]) -> Vec<(DeviceAddress, Usage)> {
    let mut out: Vec<(DeviceAddress, Usage)> = Vec::new();
    for e in envelopes {
        let one = Usage::one(e.payload.len());
        match out.iter_mut().find(|(r, _)| *r == e.recipient) {
            Some((_, u)) => u.add(one),
            None => out.push((e.recipient, one)),
        }
    }
    out
}

/// A clinic conversation as the relay stores it (`docs/conversations.md` §6): its clinic, the
/// head of its verified membership history and its place in the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredConversation {
    /// The conversation id.
    pub id: [u8; 16],
    /// The clinic's organization key.
    pub clinic: [u8; 32],
    /// The next epoch: the number of changes stored.
    pub head_epoch: u64,
    /// The hash of the last change.
    pub head_hash: [u8; 32],
    /// The queue state byte (`QueueState`: 1 new, 2 handed back, 3 claimed, 4 closed).
    pub state: u8,
    /// When the patient opened it (Unix seconds, relay clock).
    pub opened_at: u64,
    /// Since when it waits in the queue (Unix seconds).
    pub waiting_since: u64,
    /// Whether an agent is on it.
    pub claimed: bool,
    /// The last change, message or archive envelope (Unix milliseconds): retention counts from it.
    pub last_activity_ms: u64,
}

/// Changes to append to a conversation, applied only if its head epoch is still `expected_epoch`
/// (and, for a claim, it is still unclaimed): a compare-and-set, so that across relay instances
/// exactly one of two racing changes is stored.
#[derive(Clone, Debug)]
pub struct ConversationUpdate {
    /// The conversation.
    pub id: [u8; 16],
    /// The head epoch the changes were verified against.
    pub expected_epoch: u64,
    /// Refuse (store nothing) if the conversation is claimed.
    pub require_unclaimed: bool,
    /// The encoded changes, epochs `expected_epoch`, `expected_epoch + 1`, ...
    pub changes: Vec<Vec<u8>>,
    /// The new head hash, queue state, waiting time and claim.
    pub head_hash: [u8; 32],
    /// The new queue state byte.
    pub state: u8,
    /// The new waiting time (Unix seconds).
    pub waiting_since: u64,
    /// Whether an agent is on it after the changes.
    pub claimed: bool,
    /// The member devices at the new head (replacing the stored ones).
    pub members: Vec<DeviceAddress>,
    /// Frames to push to devices, stored with the changes (`MembershipChanged`, `QueueChanged`).
    pub pushes: Vec<(DeviceAddress, Vec<u8>)>,
    /// Now (Unix milliseconds).
    pub now_ms: u64,
}

/// One archive envelope as stored, with who filed it and when (`conversations.md` §5.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredArchiveEnvelope {
    /// Its position in the conversation's archive, from 0.
    pub index: u64,
    /// The encoded envelope.
    pub envelope: Vec<u8>,
    /// The authenticated device that filed it.
    pub filed_by: DeviceAddress,
    /// When (Unix milliseconds).
    pub filed_at_ms: u64,
}

/// What [`Store::put_archive`] did with an envelope (`conversations.md` §5.2, §5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveFiling {
    /// The envelope's position in the conversation's archive: a new one, or for a repeat the
    /// position the first filing was given.
    pub index: u64,
    /// The same device had already filed these exact bytes for this conversation: nothing
    /// was stored (no second position, the conversation's last activity not moved).
    pub repeat: bool,
}

/// Domain label of [`archive_filing_digest`].
const ARCHIVE_FILING_LABEL: &[u8] = b"Hushwire v1 archive filing";

/// The key under which a filing is remembered (table `archive_filings`, `relay-protocol.md`
/// §7): SHA-256 of `"Hushwire v1 archive filing" ‖ filer fingerprint[32] ‖ filer
/// device_id[4, big-endian] ‖ envelope bytes`. Per filer, so the same bytes filed by another
/// device are another filing (the reader checks each filer, §7.3); 32 bytes whatever the
/// envelope's size, so a repeat is found by one index lookup, never by reading the blobs.
pub fn archive_filing_digest(filed_by: &DeviceAddress, envelope: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(ARCHIVE_FILING_LABEL);
    h.update(filed_by.fingerprint);
    h.update(filed_by.device_id.to_be_bytes());
    h.update(envelope);
    h.finalize().into()
}

/// What a write job submitted to a store's writer answers, after the commit of its batch.
#[derive(Debug)]
pub struct Answer<T>(pub(crate) tokio::sync::oneshot::Receiver<Result<T, StoreError>>);

impl<T> Answer<T> {
    /// Waits for the commit. [`StoreError::Closed`] if the writer stopped first.
    pub async fn wait(self) -> Result<T, StoreError> {
        self.0.await.map_err(|_| StoreError::Closed)?
    }
}

/// An envelope just committed to its recipient's mailbox at `position`.
#[derive(Clone, Debug)]
pub struct Committed {
    /// Whose mailbox.
    pub recipient: DeviceAddress,
    /// Its mailbox position (what `pending` orders by and reads after).
    pub position: i64,
    /// The envelope as it is delivered.
    pub delivery: Delivery,
}

/// Told of envelopes right after the commit that stored them, every one, in commit order
/// (which is position order), so a connected recipient can be sent them without reading them
/// back (`live.rs`, `docs/relay-protocol.md` §5). Called on the store's writer: it must not
/// block.
pub trait CommitListener: Send + Sync + 'static {
    /// The envelopes of one commit, in position order.
    fn committed(&self, envelopes: Vec<Committed>);
}

/// The relay's storage. Implementations must make each method atomic, and `enqueue` durable
/// before it returns.
pub trait Store: Send + Sync + 'static {
    /// Asks the store to tell `listener` of every envelope it commits from now on, in commit
    /// order, and returns whether it will. A store that cannot promise that order (PostgreSQL:
    /// several instances commit to one mailbox) returns `false`, and connections read their
    /// mailbox on every wake-up instead.
    fn listen_for_commits(&self, listener: std::sync::Arc<dyn CommitListener>) -> bool {
        let _ = listener;
        false
    }

    /// Whether each mailbox's positions are consecutive (1, 2, 3, … with none skipped, though
    /// acknowledged ones are gone), so that an envelope handed over live whose position is not
    /// the one after the last delivered shows that one was missed (PostgreSQL, whose
    /// notifications carry small envelopes: `live.rs`).
    fn mailbox_positions_consecutive(&self) -> bool {
        false
    }

    /// Registers `address` with `identity` (encoded), consuming `invite` when the policy asks
    /// for one.
    fn register(
        &self,
        address: DeviceAddress,
        identity: Vec<u8>,
        invite: Option<[u8; 32]>,
        policy: RegistrationPolicy,
        now_ms: u64,
    ) -> impl Future<Output = Result<Registration, StoreError>> + Send;

    /// Records an invite (by the SHA-256 of its token) valid until `expires_at_ms`.
    fn create_invite(
        &self,
        token_hash: [u8; 32],
        expires_at_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The encoded identity registered at `address`.
    fn identity(
        &self,
        address: DeviceAddress,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Stores prekeys, keeping at most `max_one_time` of each one-time kind (extra are ignored).
    fn upload_prekeys(
        &self,
        address: DeviceAddress,
        upload: PreKeyUpload,
        max_one_time: u32,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// How many one-time prekeys `address` has left: (X25519, ML-KEM).
    fn prekey_counts(
        &self,
        address: DeviceAddress,
    ) -> impl Future<Output = Result<(u32, u32), StoreError>> + Send;

    /// Claims a bundle for `address`, removing the one-time keys it hands out: no key is ever
    /// handed out twice, whatever the concurrency. With `one_time` false no one-time key is
    /// handed out (the X25519 one is left out, the last-resort ML-KEM key is used): the
    /// target's one-time key budget is spent (`docs/relay-protocol.md` §4). `None` if the
    /// device has no signed prekey or no ML-KEM prekey at all.
    fn claim_bundle(
        &self,
        address: DeviceAddress,
        one_time: bool,
    ) -> impl Future<Output = Result<Option<ClaimedBundle>, StoreError>> + Send;

    /// Stores envelopes from `sender`, all or none, durably before its [`Answer`] comes, if
    /// every recipient is registered and its mailbox stays within `limits` (checked atomically
    /// with the insert, whatever the concurrency and the number of instances). Returns once
    /// the store has taken the job, so a connection can take its next frame while the batch
    /// commits; jobs submitted one after the other are stored in that order.
    fn submit_enqueue(
        &self,
        sender: DeviceAddress,
        envelopes: Vec<OutgoingEnvelope>,
        now_ms: u64,
        limits: MailboxLimits,
    ) -> impl Future<Output = Result<Answer<Enqueued>, StoreError>> + Send;

    /// [`Store::submit_enqueue`], waiting for the answer.
    fn enqueue(
        &self,
        sender: DeviceAddress,
        envelopes: Vec<OutgoingEnvelope>,
        now_ms: u64,
        limits: MailboxLimits,
    ) -> impl Future<Output = Result<Enqueued, StoreError>> + Send {
        async move {
            self.submit_enqueue(sender, envelopes, now_ms, limits)
                .await?
                .wait()
                .await
        }
    }

    /// Envelopes for `recipient` stored after position `after` (0 for all), oldest first, with
    /// the position of each. Positions grow per recipient in the order envelopes become
    /// visible to this query (commit order), so a reader that has seen position `p` has seen
    /// every envelope below it: delivery may resume from the last position it sent.
    fn pending(
        &self,
        recipient: DeviceAddress,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(i64, Delivery)>, StoreError>> + Send;

    /// Deletes acknowledged envelopes of `recipient`; the [`Answer`] is the ids that were
    /// deleted (ids of other devices' envelopes, or of none, delete nothing). Returns once the
    /// store has taken the job, as [`Store::submit_enqueue`] does.
    fn submit_ack(
        &self,
        recipient: DeviceAddress,
        server_ids: Vec<[u8; 16]>,
    ) -> impl Future<Output = Result<Answer<Vec<[u8; 16]>>, StoreError>> + Send;

    /// [`Store::submit_ack`], waiting for the answer.
    fn ack(
        &self,
        recipient: DeviceAddress,
        server_ids: Vec<[u8; 16]>,
    ) -> impl Future<Output = Result<Vec<[u8; 16]>, StoreError>> + Send {
        async move { self.submit_ack(recipient, server_ids).await?.wait().await }
    }

    /// Deletes envelopes stored before `before_ms`; returns how many, per recipient.
    fn expire(
        &self,
        before_ms: u64,
    ) -> impl Future<Output = Result<Vec<(DeviceAddress, u64)>, StoreError>> + Send;

    /// The encoding of the last audit record of `chain_id`.
    fn audit_last(
        &self,
        chain_id: [u8; 16],
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Appends encoded audit records `(sequence, bytes)` and, optionally, a checkpoint
    /// `(count, bytes)`, in one transaction.
    fn append_audit(
        &self,
        chain_id: [u8; 16],
        records: Vec<(u64, Vec<u8>)>,
        checkpoint: Option<(u64, Vec<u8>)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `limit` encoded audit records of `chain_id` with sequence `>= from`, in order.
    fn audit_records(
        &self,
        chain_id: [u8; 16],
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Vec<u8>>, StoreError>> + Send;

    /// Every encoded checkpoint of `chain_id`, by count.
    fn audit_checkpoints(
        &self,
        chain_id: [u8; 16],
    ) -> impl Future<Output = Result<Vec<Vec<u8>>, StoreError>> + Send;

    /// Envelopes waiting in all mailboxes.
    fn queue_depth(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Records that `device` reported store epoch `epoch` (`relay-protocol.md` §5.1): keeps the
    /// highest epoch seen, atomically, and returns the highest before this report (0 if none).
    fn record_store_epoch(
        &self,
        device: DeviceAddress,
        epoch: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Registers `address` with `identity` (encoded) as clinic staff, with the (already
    /// verified) encoded `certificate` of its identity, in one transaction: no invite is needed.
    /// Refused if the address is held by another identity; [`Registration::PatientIdentity`]
    /// if the identity has registered devices but no certificate. Otherwise the certificate is
    /// stored for the identity (replacing an earlier one).
    fn register_certified(
        &self,
        address: DeviceAddress,
        identity: Vec<u8>,
        certificate: Vec<u8>,
        now_ms: u64,
    ) -> impl Future<Output = Result<Registration, StoreError>> + Send;

    /// The encoded certificate of the identity whose fingerprint is `identity`.
    fn certificate(
        &self,
        identity: [u8; 32],
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Replaces the (already verified) certificate of `identity` if it holds one; `false` if it
    /// holds none (a patient's identity does not acquire one this way).
    fn replace_certificate(
        &self,
        identity: [u8; 32],
        certificate: Vec<u8>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// A device's suspension, pending wipe and certificate.
    fn standing(
        &self,
        device: DeviceAddress,
    ) -> impl Future<Output = Result<Standing, StoreError>> + Send;

    /// The encoded revocation list of the clinic whose organization key is `org`.
    fn revocation_list(
        &self,
        org: [u8; 32],
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Stores the (already verified) encoded revocation `list` of clinic `org` if its
    /// `sequence` is higher than the stored one's (or none is stored), atomically (across
    /// instances on PostgreSQL, which then notifies [`crate::STANDING_CHANNEL`]). `false`: not
    /// newer, nothing changed.
    fn publish_revocation_list(
        &self,
        org: [u8; 32],
        sequence: u64,
        list: Vec<u8>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Suspends `device` (PostgreSQL notifies [`crate::STANDING_CHANNEL`]).
    fn suspend(
        &self,
        device: DeviceAddress,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Keeps the encoded wipe `command` for `device` and suspends it, in one transaction
    /// (PostgreSQL notifies [`crate::STANDING_CHANNEL`]).
    fn order_wipe(
        &self,
        device: DeviceAddress,
        command: Vec<u8>,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The encoded device list of the identity whose fingerprint is `identity`.
    fn device_list(
        &self,
        identity: [u8; 32],
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// How many devices the identity whose fingerprint is `identity` has registered.
    fn identity_devices(
        &self,
        identity: [u8; 32],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Files a provisioning message at `now_ms`, first deleting every expired one: refused if
    /// a live message is filed under its slot ([`Provisioned::SlotTaken`]) or its owner has
    /// `max_live` live ones already ([`Provisioned::TooMany`]; atomic across instances).
    fn put_provisioning(
        &self,
        message: Provisioning,
        now_ms: u64,
        max_live: u32,
    ) -> impl Future<Output = Result<Provisioned, StoreError>> + Send;

    /// Takes the message filed under `slot`: deletes it and returns its sealed bytes if it had
    /// not expired at `now_ms`. Atomic: of concurrent takes of one slot, on any number of
    /// instances, at most one gets the bytes.
    fn take_provisioning(
        &self,
        slot: [u8; 32],
        now_ms: u64,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Stores the (already verified) encoded device `list` of `identity` if its `sequence` is
    /// higher than the stored one's (or none is stored), atomically. `false`: not newer.
    /// PostgreSQL notifies [`crate::STANDING_CHANNEL`] (`list:hex(identity)`) so that every
    /// instance re-checks the identity's connected devices.
    fn publish_device_list(
        &self,
        identity: [u8; 32],
        sequence: u64,
        list: Vec<u8>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    // ---- Clinic conversations (docs/conversations.md §5.4, §6) ----

    /// Stores a new conversation with its epoch-0 change, member devices and pushes; `false`
    /// (nothing stored) if the id is taken.
    fn open_conversation(
        &self,
        conversation: StoredConversation,
        change: Vec<u8>,
        members: Vec<DeviceAddress>,
        pushes: Vec<(DeviceAddress, Vec<u8>)>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// How many conversations waiting in the queue (new or handed back) have a member device of
    /// `fingerprint`.
    fn open_conversations_of(
        &self,
        fingerprint: [u8; 32],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The conversation `id`, if stored.
    fn conversation(
        &self,
        id: [u8; 16],
    ) -> impl Future<Output = Result<Option<StoredConversation>, StoreError>> + Send;

    /// Up to `limit` stored changes from `from_epoch`, in epoch order.
    fn conversation_changes(
        &self,
        id: [u8; 16],
        from_epoch: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Vec<u8>>, StoreError>> + Send;

    /// The member devices at the conversation's head.
    fn conversation_members(
        &self,
        id: [u8; 16],
    ) -> impl Future<Output = Result<Vec<DeviceAddress>, StoreError>> + Send;

    /// Applies `update` iff the head epoch is still the expected one (and the conversation is
    /// unclaimed when required); whether it was applied. Nothing is stored otherwise.
    fn update_conversation(
        &self,
        update: ConversationUpdate,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Up to `limit` conversations waiting in the queue (new or handed back), oldest first.
    fn waiting_conversations(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StoredConversation>, StoreError>> + Send;

    /// Up to `limit` claimed conversations whose id sorts after `after` (from the first when
    /// `None`), by id: to page through them when a revocation list is published
    /// (`docs/conversations.md` §5.4).
    fn claimed_conversations(
        &self,
        after: Option<[u8; 16]>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StoredConversation>, StoreError>> + Send;

    /// Marks an agent's device on or off duty.
    fn set_on_duty(
        &self,
        device: DeviceAddress,
        on_duty: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `limit` devices on duty.
    fn on_duty(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<DeviceAddress>, StoreError>> + Send;

    /// Stores frames to push to devices (and wakes their connections on any instance).
    fn push(
        &self,
        pushes: Vec<(DeviceAddress, Vec<u8>)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes (deletes and returns) up to `limit` pushes for `device`, oldest first.
    fn take_pushes(
        &self,
        device: DeviceAddress,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Vec<u8>>, StoreError>> + Send;

    /// Files an archive envelope at the conversation's next index, with who filed it and when,
    /// and touches the conversation's last activity; all in one transaction.
    ///
    /// Idempotent per filer (`conversations.md` §5.2): if `filed_by` already filed these exact
    /// bytes for this conversation (same [`archive_filing_digest`]), nothing is written and the
    /// first filing's index comes back with `repeat` set. Two identical filings racing, on one
    /// instance or several, store one envelope: the `(conversation, digest)` key is unique and
    /// inserted with `ON CONFLICT DO NOTHING` in the filing's transaction. An error stores
    /// nothing.
    fn put_archive(
        &self,
        id: [u8; 16],
        envelope: Vec<u8>,
        filed_by: DeviceAddress,
        now_ms: u64,
    ) -> impl Future<Output = Result<ArchiveFiling, StoreError>> + Send;

    /// Up to `limit` archive envelopes of a conversation from `from_index`.
    fn archive(
        &self,
        id: [u8; 16],
        from_index: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StoredArchiveEnvelope>, StoreError>> + Send;

    /// The clinic's archive policy with the highest sequence, if any.
    fn archive_policy(
        &self,
        org: [u8; 32],
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Stores an archive policy if its sequence is higher than the stored one's.
    fn publish_archive_policy(
        &self,
        org: [u8; 32],
        sequence: u64,
        policy: Vec<u8>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes the archive envelopes of conversations whose last activity is before
    /// `before_ms`, with what was remembered of their filings (`archive_filings`), in one
    /// transaction; how many envelopes.
    fn expire_archive(
        &self,
        before_ms: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// `i64` view of a `u64` time or count for databases without unsigned integers.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Back from the database's `i64`.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
