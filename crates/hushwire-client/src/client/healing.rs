//! Healing (`docs/client.md` §5.13): a conversation never stays broken, and no loss goes unseen.
//!
//! ```text
//! receiver: cannot read a known contact's message ──▶ request_reset: sessions inactive,
//!           SessionReset queued ──▶ send pipeline starts a new session from the pinned bundle
//! sender:   SessionReset arrives (authenticated by its session) ──▶ accept_reset: that new
//!           session becomes active (or all go inactive), unconfirmed messages queued again
//! both:     each sent message has a MessageState; no receipt within receipt_timeout ──▶
//!           NotConfirmed, shown to the person
//! ```
//!
//! Only what decrypts under a session with the contact's pinned identity can make this device
//! resend, and it resends only to that identity (a fresh bundle must match the pinned
//! fingerprint, `sessions.rs`): a forged reset from a relay cannot move plaintext anywhere else.
//! Resets are bounded per contact (`ClientOptions::reset_interval`) and each message is resent
//! at most [`MAX_RESENDS`] times, so two devices cannot loop.

use hushwire::Account;
use hushwire::proto::audit::AuditEvent;
use sqlx::SqliteConnection;

use hushwire::proto::relay::{ErrorCode, FrameBody};

use super::Client;
use super::send::OutboxItem;
use super::sessions::SESSIONS_PER_CONTACT;
use crate::address::{device_ref, own_ref};
use crate::contact::ContactId;
use crate::error::ClientError;
use crate::error::Result;
use crate::event::{Event, MessageId, MessageState};
use crate::link::Link;
use crate::os::now_ms;
use crate::payload::{Payload, ResetReason};
use crate::store;

/// How many times one message is sent again after resets before it is marked
/// [`MessageState::Failed`].
pub const MAX_RESENDS: i64 = 3;

/// Delivered and failed messages keep their state this long (then `message_state` says `None`).
const SETTLED_KEPT_MS: u64 = 90 * 24 * 3600 * 1000;

/// States from which a reset sends a message again: it left, but no receipt says it arrived.
const UNCONFIRMED: [MessageState; 3] = [
    MessageState::Sent,
    MessageState::NotConfirmed,
    MessageState::Retrying,
];

/// The `meta` row holding this store's epoch (§5.14).
const STORE_EPOCH: &str = "store_epoch";

impl Client {
    /// Starts a connection's epoch (§5.14): the stored epoch plus one, committed before the
    /// relay hears it, so a copy of the store taken before this moment reports a lower or equal
    /// number next time.
    pub(super) async fn next_store_epoch(&self) -> Result<u64> {
        let _state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        let epoch = read_epoch(&mut tx).await? + 1;
        store::put_meta(&mut tx, STORE_EPOCH, &epoch.to_be_bytes()).await?;
        tx.commit().await?;
        Ok(epoch)
    }

    /// Reports this connection's store epoch to the relay and acts on its answer (§5.14). A
    /// relay that predates the exchange answers `Malformed`: the check is skipped, and said.
    pub(super) async fn check_store_epoch(&self, link: &Link) -> Result<bool> {
        let epoch = self.next_store_epoch().await?;
        match link.call(FrameBody::StoreEpoch(epoch)).await {
            Ok(FrameBody::StoreEpochSeen(before)) => self.store_epoch_seen(epoch, before).await,
            Ok(_) => Err(ClientError::Connection(
                "unexpected answer to a store epoch".into(),
            )),
            Err(ClientError::Relay(ErrorCode::Malformed)) => {
                tracing::warn!(
                    "the relay does not check store epochs: a restored copy of this store is not detected before it sends"
                );
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The relay answered that it had already seen `highest_before` for this device. If that
    /// is not below `ours`, this store is a copy that fell behind (a backup restored, a copy
    /// run elsewhere): its sessions' sending chains may already have been used, so every
    /// session is retired (new ones start from fresh bundles, so no message key is used twice),
    /// queued ciphertexts are encrypted again, and the epoch jumps past the relay's. Returns
    /// whether a rollback was found.
    pub(super) async fn store_epoch_seen(&self, ours: u64, highest_before: u64) -> Result<bool> {
        if highest_before < ours {
            return Ok(false);
        }
        let contacts = {
            let _state = self.inner.state.lock().await;
            let mut tx = store::begin(&self.inner.db).await?;
            store::put_meta(&mut tx, STORE_EPOCH, &(highest_before + 1).to_be_bytes()).await?;
            let mut contacts = Vec::new();
            for row in store::contacts(&mut tx).await? {
                store::deactivate_sessions(&mut tx, row.id).await?;
                store::reset_outbox_ciphertexts(&mut tx, row.id).await?;
                contacts.push(ContactId(row.id));
            }
            tx.commit().await?;
            contacts
        };
        tracing::warn!("this store is an older copy: every session starts again");
        self.emit(Event::StoreRollbackDetected { contacts });
        Ok(true)
    }

    /// This device could not read a message from a known contact: unless it asked that contact
    /// within `reset_interval`, it retires every session with them (they still decrypt what is
    /// in flight), queues a [`Payload::SessionReset`] that the send pipeline carries in a new
    /// session from the contact's pinned bundle, and records the reset.
    pub(super) async fn request_reset(
        &self,
        c: &mut SqliteConnection,
        account: &Account,
        contact_id: i64,
        reason: ResetReason,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let now = now_ms();
        let interval = u64::try_from(self.inner.options.reset_interval.as_millis()).unwrap_or(0);
        if let Some(last) = store::last_reset(c, contact_id).await?
            && now.saturating_sub(last) < interval
        {
            // Asked recently: the contact's resends are probably on their way. If this message
            // was not one of them, the reset goes out once the interval has passed
            // (`check_receipts`), so the conversation never waits for the contact to write.
            return store::mark_reset_pending(c, contact_id).await;
        }
        store::set_last_reset(c, contact_id, now).await?;
        store::deactivate_sessions(c, contact_id).await?;
        // Anything already encrypted for the contact was made under a session we give up.
        store::reset_outbox_ciphertexts(c, contact_id).await?;
        self.queue(c, contact_id, None, &Payload::SessionReset(reason))
            .await?;
        tracing::info!(
            contact = contact_id,
            "asked a contact for a new session to heal"
        );
        self.record_reset(c, account, contact_id, false, 0, events)
            .await
    }

    /// The contact could not read our messages and asked for a new session. If the request
    /// came in a session the contact just started (`new_session`), that session becomes the
    /// active one, whatever the simultaneous-start rule chose; otherwise every session is
    /// retired and the next send starts a new one. Every message the contact has not confirmed
    /// is queued again (same message id, so the contact shows it once), up to [`MAX_RESENDS`].
    pub(super) async fn accept_reset(
        &self,
        c: &mut SqliteConnection,
        account: &Account,
        contact_id: i64,
        new_session: Option<[u8; 32]>,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let now = now_ms();
        match new_session {
            Some(base) => {
                store::activate_session(c, contact_id, &base, SESSIONS_PER_CONTACT).await?;
            }
            None => store::deactivate_sessions(c, contact_id).await?,
        }
        store::reset_outbox_ciphertexts(c, contact_id).await?;
        let states = UNCONFIRMED.map(MessageState::code);
        let mut resent = 0;
        // What was sent to the person this device belongs to (`devices.rs`) goes to the device
        // that asked; this person's own other devices are sent no messages, only copies.
        let unconfirmed = match self.person_of(contact_id) {
            Some(person) => store::sent_messages(c, Some(person), &states).await?,
            None => Vec::new(),
        };
        for row in unconfirmed {
            let id = MessageId(row.message_id);
            let Some(sealed) = row.sealed else { continue };
            let state = if row.resends >= MAX_RESENDS {
                MessageState::Failed
            } else {
                let item: OutboxItem =
                    self.inner
                        .vault
                        .open_value("sent", &row.message_id, &sealed)?;
                let payload = Payload::decode(&item.payload)
                    .map_err(|_| ClientError::CorruptStore("sent message"))?;
                self.queue(c, contact_id, Some(id), &payload).await?;
                store::count_resend(c, &row.message_id).await?;
                resent += 1;
                MessageState::Retrying
            };
            store::set_sent_state(
                c,
                &row.message_id,
                &[row.state],
                state.code(),
                state == MessageState::Failed,
                now,
            )
            .await?;
            events.push(Event::MessageStateChanged {
                contact: ContactId(contact_id),
                id,
                state,
            });
        }
        tracing::info!(
            contact = contact_id,
            resent,
            "a contact asked for a new session"
        );
        self.record_reset(c, account, contact_id, true, resent, events)
            .await
    }

    /// The `SessionReset` audit record and event of either side of a reset.
    async fn record_reset(
        &self,
        c: &mut SqliteConnection,
        account: &Account,
        contact_id: i64,
        requested_by_peer: bool,
        resent: usize,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let peer = self.load_contact(c, contact_id).await?.address();
        let event = AuditEvent::SessionReset {
            device: own_ref(account),
            peer: device_ref(peer),
            requested_by_peer,
        };
        self.audit(c, account, event).await?;
        events.push(Event::SessionReset {
            contact: ContactId(contact_id),
            requested_by_peer,
            resent,
        });
        Ok(())
    }

    /// Marks sent messages with no receipt after `receipt_timeout` as
    /// [`MessageState::NotConfirmed`] and reports each once; sends the session resets held
    /// back by `reset_interval` once it has passed. Run by the connection's upkeep
    /// every few seconds, and callable by an app at any time. Returns how many messages became
    /// `NotConfirmed`.
    pub async fn check_receipts(&self) -> Result<usize> {
        let now = now_ms();
        let timeout = u64::try_from(self.inner.options.receipt_timeout.as_millis()).unwrap_or(0);
        let mut events = Vec::new();
        {
            let state = self.inner.state.lock().await;
            let mut tx = store::begin(&self.inner.db).await?;
            let from = [MessageState::Sent.code(), MessageState::Retrying.code()];
            for row in store::sent_messages(&mut tx, None, &from).await? {
                if now.saturating_sub(row.updated_ms) < timeout {
                    continue;
                }
                store::set_sent_state(
                    &mut tx,
                    &row.message_id,
                    &[row.state],
                    MessageState::NotConfirmed.code(),
                    false,
                    now,
                )
                .await?;
                events.push(Event::MessageStateChanged {
                    contact: ContactId(row.contact_id),
                    id: MessageId(row.message_id),
                    state: MessageState::NotConfirmed,
                });
            }
            let interval =
                u64::try_from(self.inner.options.reset_interval.as_millis()).unwrap_or(0);
            for contact_id in store::due_resets(&mut tx, now.saturating_sub(interval)).await? {
                self.request_reset(
                    &mut tx,
                    &state.account,
                    contact_id,
                    ResetReason::Undecryptable,
                    &mut events,
                )
                .await?;
            }
            let settled = [MessageState::Delivered.code(), MessageState::Failed.code()];
            store::prune_settled_sent(&mut tx, &settled, now.saturating_sub(SETTLED_KEPT_MS))
                .await?;
            tx.commit().await?;
        }
        self.inner.outbox_changed.notify_one();
        let n = events
            .iter()
            .filter(|e| matches!(e, Event::MessageStateChanged { .. }))
            .count();
        for event in events {
            self.emit(event);
        }
        Ok(n)
    }

    /// Writes a consistent copy of the store to `to` while the client runs (SQLite's
    /// `VACUUM INTO`), owner-only: every secret in it stays sealed under the same passphrase or
    /// key. Restoring it is copying it back over the store while no client has it open; the
    /// first connection after that finds the store older than the relay's record, if this
    /// store encrypted anything since, and starts every session again, so no message key is
    /// used twice (§5.14). Fails with
    /// [`ClientError::BackupExists`] if `to` exists.
    pub async fn backup(&self, to: &std::path::Path) -> Result<()> {
        // Created empty and owner-only first (VACUUM INTO accepts an empty file), so the copy is
        // never readable by others, not even for a moment; create_new refuses an existing file.
        let mut file = std::fs::OpenOptions::new();
        file.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
        file.open(to).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => ClientError::BackupExists(to.to_owned()),
            _ => ClientError::Io(std::io::Error::new(
                e.kind(),
                format!("cannot create the backup {}: {e}", to.display()),
            )),
        })?;
        let target = to
            .to_str()
            .ok_or_else(|| ClientError::Io(std::io::Error::other("backup path is not UTF-8")))?;
        // VACUUM INTO takes a file name as an SQL string literal: quote it.
        let sql = format!("VACUUM INTO '{}'", target.replace('\'', "''"));
        {
            // Under the state lock no session advances while the copy is taken.
            let _state = self.inner.state.lock().await;
            let mut c = self.inner.db.acquire().await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *c)
                .await?;
        }
        // The copy holds epoch E. Before this store encrypts again it reports a higher one, so
        // the copy, restored, reports at most what the relay has already seen and is caught.
        self.inner
            .epoch_unreported
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.outbox_changed.notify_one();
        Ok(())
    }

    /// Puts the backup at `backup` (from [`Client::backup`]) in place of the store at `store`,
    /// which no client may have open (§5.14). In order, failing with the first that applies:
    /// it takes the store's lock (§3.5, [`ClientError::StoreInUse`]); checks that `backup` is a
    /// Hushwire store this library can open ([`ClientError::NotABackup`],
    /// [`ClientError::StoreTooNew`]) and that `secret` unlocks it ([`ClientError::WrongSecret`]);
    /// and, when a store already exists, that the backup is a copy of that same store (the
    /// store's random audit-chain id, kept in the clear, must match) unless
    /// `replace_other_store` is set ([`ClientError::BackupOfAnotherStore`]). It then copies the
    /// backup beside the store, flushes it to disk, moves the old store (and its write-ahead
    /// log) aside to `<store>.replaced-<unix ms>` — nothing is deleted — and renames the copy
    /// into place, so a crash leaves either the old store or the backup, never half of one.
    /// Returns where the old store went, if there was one. The first connection afterwards
    /// finds out whether the store had moved on since the backup and, if so, starts every
    /// session again.
    pub async fn restore(
        backup: &std::path::Path,
        store: &std::path::Path,
        secret: &crate::vault::Secret,
        options: &super::ClientOptions,
        replace_other_store: bool,
    ) -> Result<Option<std::path::PathBuf>> {
        let _lock = Client::lock(store, options)?;
        let backup_chain = check_backup(backup, secret).await?;
        if store.exists() && !replace_other_store {
            let current = read_clear_meta(store, "audit_chain").await.ok().flatten();
            if let (Some(current), Some(theirs)) = (&current, &backup_chain)
                && current != theirs
            {
                return Err(ClientError::BackupOfAnotherStore(store.to_owned()));
            }
        }
        let sibling = |suffix: &str| {
            let mut name = store.as_os_str().to_owned();
            name.push(suffix);
            std::path::PathBuf::from(name)
        };
        let temporary = sibling(".restoring");
        let _ = std::fs::remove_file(&temporary);
        let copied = (|| -> std::io::Result<()> {
            std::fs::copy(backup, &temporary)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))?;
            }
            std::fs::File::open(&temporary)?.sync_all()
        })();
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&temporary);
            return Err(e.into());
        }
        let mut kept = None;
        if store.exists() {
            let aside = sibling(&format!(".replaced-{}", now_ms()));
            std::fs::rename(store, &aside)?;
            for suffix in ["-wal", "-shm"] {
                let mut from = store.as_os_str().to_owned();
                from.push(suffix);
                let mut to = aside.as_os_str().to_owned();
                to.push(suffix);
                match std::fs::rename(std::path::PathBuf::from(from), std::path::PathBuf::from(to))
                {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            kept = Some(aside);
        }
        std::fs::rename(&temporary, store)?;
        if let Some(dir) = store.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The renames are durable only once the directory is.
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(kept)
    }

    /// Where a message this device sent is, or `None` for an id it never sent.
    pub async fn message_state(&self, id: MessageId) -> Result<Option<MessageState>> {
        let mut c = self.inner.db.acquire().await?;
        Ok(store::sent_message(&mut c, &id.0)
            .await?
            .and_then(|r| MessageState::from_code(r.state)))
    }

    /// Every message sent to a contact with its state, oldest first.
    pub async fn sent_messages(
        &self,
        contact: ContactId,
    ) -> Result<Vec<(MessageId, MessageState)>> {
        let mut c = self.inner.db.acquire().await?;
        let all = [
            MessageState::Queued,
            MessageState::Sent,
            MessageState::Delivered,
            MessageState::Retrying,
            MessageState::NotConfirmed,
            MessageState::Failed,
        ]
        .map(MessageState::code);
        Ok(store::sent_messages(&mut c, Some(contact.0), &all)
            .await?
            .into_iter()
            .filter_map(|r| Some((MessageId(r.message_id), MessageState::from_code(r.state)?)))
            .collect())
    }
}

async fn read_epoch(c: &mut SqliteConnection) -> Result<u64> {
    Ok(match store::get_meta(c, STORE_EPOCH).await? {
        Some(v) => u64::from_be_bytes(
            v.try_into()
                .map_err(|_| ClientError::CorruptStore("store epoch"))?,
        ),
        None => 0,
    })
}

/// One clear `meta` value of the store at `path`, read without writing anything.
async fn read_clear_meta(path: &std::path::Path, name: &str) -> Result<Option<Vec<u8>>> {
    use sqlx::ConnectOptions as _;
    let mut c = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await?;
    store::get_meta(&mut c, name).await
}

/// Checks that `path` holds a Hushwire store this library can open and that `secret` unlocks
/// it; read-only. Returns its audit-chain id (which names the store it is a copy of), if any.
async fn check_backup(
    path: &std::path::Path,
    secret: &crate::vault::Secret,
) -> Result<Option<Vec<u8>>> {
    use sqlx::ConnectOptions as _;
    let not_a_backup = || ClientError::NotABackup(path.to_owned());
    if !path.is_file() {
        return Err(not_a_backup());
    }
    let mut c = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .map_err(|_| not_a_backup())?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut c)
        .await
        .map_err(|_| not_a_backup())?;
    if version > store::SCHEMA_VERSION {
        return Err(ClientError::StoreTooNew {
            found: version,
            supported: store::SCHEMA_VERSION,
        });
    }
    let meta = async |c: &mut sqlx::SqliteConnection, name: &str| {
        store::get_meta(c, name).await.ok().flatten()
    };
    let (Some(kdf), Some(check), Some(_)) = (
        meta(&mut c, "kdf").await,
        meta(&mut c, "check").await,
        meta(&mut c, "account").await,
    ) else {
        return Err(not_a_backup());
    };
    let derivation: crate::vault::KeyDerivation =
        postcard::from_bytes(&kdf).map_err(|_| not_a_backup())?;
    let master = super::derive_master(derivation, secret).await?;
    if !crate::vault::Vault::from_master(&master).matches(&check) {
        return Err(ClientError::WrongSecret);
    }
    Ok(meta(&mut c, "audit_chain").await)
}
