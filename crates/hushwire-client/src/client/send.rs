//! The send pipeline (`docs/client.md` §5.1): a message goes into the transcript and the
//! outbox in one transaction, is encrypted with the contact's active session (the ciphertext
//! stored with the advanced session, so a resend after a crash sends the same bytes), and leaves
//! the outbox once the relay holds it durably.

use std::time::Duration;

use hushwire::proto::relay::{ErrorCode, FrameBody, OutgoingEnvelope};
use hushwire::transcript::{ContentType, Direction, TranscriptRecord};
use hushwire::wire::MessageHeader;
use serde::{Deserialize, Serialize};
use sqlx::SqliteConnection;
use zeroize::Zeroizing;

use crate::contact::ContactId;
use crate::error::{ClientError, Result};
use crate::event::{Event, MessageId};
use crate::link::Link;
use crate::os::{now_ms, rng};
use crate::payload::{MAX_CONTENT_LEN, Payload};
use crate::store;

use super::sessions::StoredSession;

use super::{Client, session_error};
use crate::event::MessageState;

/// What a queued outbox entry holds (sealed).
#[derive(Serialize, Deserialize)]
pub(super) struct OutboxItem {
    /// The message id, for `MessageSent`; `None` for receipts.
    pub(super) message_id: Option<[u8; 16]>,
    /// The payload to encrypt (wiped when dropped).
    pub(super) payload: Zeroizing<Vec<u8>>,
}

impl Client {
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
        // The app names people; their further devices are rows it never sees (`devices.rs`).
        if self.device_row(contact.0).is_some() {
            return Err(ClientError::UnknownContact(contact.to_string()));
        }
        let state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        let record = self.load_contact(&mut tx, contact.0).await?;
        if record.identity_changed {
            return Err(ClientError::IdentityChangedUnverified(record.name));
        }
        // A contact whose agent certificate does not verify gets nothing (`clinic.rs`).
        self.check_sendable(&mut tx, &state, contact.0, &record)
            .await?;
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
        // To every device of the person, and a copy to this person's other devices, so that
        // every device's transcript is complete (`docs/client.md` §8.6).
        let devices = self.fan_out(&mut tx, contact.0, &record).await?;
        if devices.is_empty() {
            return Err(ClientError::NoDeviceLeft(record.name));
        }
        for row in devices {
            self.queue(&mut tx, row, Some(id), &payload).await?;
        }
        let own_copies = self.own_copies(&mut tx, &state.account).await?;
        if !own_copies.is_empty() {
            let copy = Payload::SentCopy {
                recipient: record.address().to_device_address(),
                id,
                sent_at_ms: now,
                content_type,
                content: Zeroizing::new(content.to_vec()),
            };
            for row in own_copies {
                self.queue(&mut tx, row, Some(id), &copy).await?;
            }
        }
        // Kept until a receipt confirms it, so a session reset can send it again (§5.13).
        let kept = OutboxItem {
            message_id: Some(id.0),
            payload: payload.encode(),
        };
        let sealed = self.inner.vault.seal_value("sent", &id.0, &kept, &mut rng);
        store::insert_sent(
            &mut tx,
            &id.0,
            contact.0,
            MessageState::Queued.code(),
            now,
            &sealed,
        )
        .await?;
        tx.commit().await?;
        drop(state);
        self.inner.outbox_changed.notify_one();
        Ok(id)
    }

    /// Sends UTF-8 text.
    pub async fn send_text(&self, contact: ContactId, text: &str) -> Result<MessageId> {
        self.send(contact, ContentType::Text, text.as_bytes()).await
    }

    pub(super) async fn queue(
        &self,
        c: &mut SqliteConnection,
        contact_id: i64,
        message_id: Option<MessageId>,
        payload: &Payload,
    ) -> Result<()> {
        let item = OutboxItem {
            message_id: message_id.map(|m| m.0),
            payload: payload.encode(),
        };
        self.queue_item(c, contact_id, &item).await
    }

    /// Queues an outbox entry as it stands (`devices.rs` copies waiting ones to a new device).
    pub(super) async fn queue_item(
        &self,
        c: &mut SqliteConnection,
        contact_id: i64,
        item: &OutboxItem,
    ) -> Result<()> {
        let row = store::push_outbox(c, contact_id).await?;
        let sealed = self
            .inner
            .vault
            .seal_value("outbox", &row.to_be_bytes(), item, &mut rng());
        store::set_outbox_sealed(c, row, &sealed).await
    }

    /// Messages waiting to be sent (not yet durable at the relay).
    pub async fn outbox_len(&self) -> Result<usize> {
        let mut c = self.inner.db.acquire().await?;
        Ok(store::outbox(&mut c).await?.len())
    }
    /// The messages still in the outbox (not yet held by the relay), oldest first, with their
    /// recipients. Receipts and session resets are not listed; a message waiting for several
    /// devices of its recipient is listed once, under the person (`docs/client.md` §8.6).
    pub async fn queued_messages(&self) -> Result<Vec<(ContactId, MessageId)>> {
        let mut c = self.inner.db.acquire().await?;
        let mut out = Vec::new();
        for row in store::outbox(&mut c).await? {
            let item: OutboxItem =
                self.inner
                    .vault
                    .open_value("outbox", &row.id.to_be_bytes(), &row.sealed)?;
            // Copies to this person's own devices are not messages to anyone.
            if let (Some(id), Some(person)) = (item.message_id, self.person_of(row.contact_id)) {
                let entry = (ContactId(person), MessageId(id));
                if !out.contains(&entry) {
                    out.push(entry);
                }
            }
        }
        Ok(out)
    }

    /// Takes a message out of the outbox before the relay has it: it will not be sent, its
    /// state becomes [`MessageState::Cancelled`], and an audit record says so (its transcript
    /// record, written when it was queued, stays: the transcript is append-only).
    /// [`ClientError::NotCancellable`] once the relay holds it (or for an unknown id).
    pub async fn cancel(&self, id: MessageId) -> Result<ContactId> {
        let state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        // Every entry of the message: one per device of the person, and the copies to this
        // person's other devices. Once any device's copy reached the relay, it is sent.
        let sent = store::sent_message(&mut tx, &id.0).await?;
        let queued = [MessageState::Queued.code(), MessageState::Retrying.code()];
        let Some(person) = sent
            .filter(|m| queued.contains(&m.state))
            .map(|m| m.contact_id)
        else {
            return Err(ClientError::NotCancellable(id.to_string()));
        };
        let mut found = false;
        for row in store::outbox(&mut tx).await? {
            let item: OutboxItem =
                self.inner
                    .vault
                    .open_value("outbox", &row.id.to_be_bytes(), &row.sealed)?;
            if item.message_id == Some(id.0) {
                store::delete_outbox(&mut tx, row.id).await?;
                found = true;
            }
        }
        if !found {
            return Err(ClientError::NotCancellable(id.to_string()));
        }
        let cancelled = MessageState::Cancelled.code();
        store::set_sent_state(&mut tx, &id.0, &queued, cancelled, true, now_ms()).await?;
        let peer = self.load_contact(&mut tx, person).await?.address();
        let event = hushwire::proto::audit::AuditEvent::MessageCancelled {
            device: crate::address::own_ref(&state.account),
            peer: crate::address::device_ref(peer),
            message_id: id.0,
        };
        self.audit(&mut tx, &state.account, event).await?;
        tx.commit().await?;
        drop(state);
        self.emit(Event::MessageStateChanged {
            contact: ContactId(person),
            id,
            state: MessageState::Cancelled,
        });
        Ok(ContactId(person))
    }

    /// Sends queued payloads in order, for as long as the connection lasts.
    pub(super) async fn flush_outbox(&self, link: &Link) -> Result<()> {
        // Why each held contact is held, so each reason is reported once.
        let mut reported = std::collections::HashMap::<i64, String>::new();
        let mut archive_warned = false;
        loop {
            let changed = self.inner.outbox_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // The store epoch is reported before anything is encrypted on a new connection or
            // after a backup (§5.14).
            if self
                .inner
                .epoch_unreported
                .swap(false, std::sync::atomic::Ordering::SeqCst)
                && let Err(e) = self.check_store_epoch(link).await
            {
                self.inner
                    .epoch_unreported
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                return Err(e);
            }
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
                let conversation = self.outbox_conversation(row.id, &row.sealed)?;
                if let Some(conversation) = conversation
                    && self
                        .drop_if_revoked_recipient(row.id, conversation, &record.address())
                        .await?
                {
                    progressed = true;
                    continue;
                }
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
                            self.hold(row.contact_id, e.to_string(), &mut reported);
                            continue;
                        }
                        Err(e) => return Err(e),
                    },
                };
                let envelope = OutgoingEnvelope {
                    recipient: record.address().to_device_address(),
                    payload: ciphertext,
                };
                // A conversation payload travels in `ConversationSend` at the verified head
                // epoch, so the relay can refuse it to a device removed meanwhile
                // (`conversations.md` §4.4).
                let sent = match conversation {
                    Some(conversation) => {
                        match self
                            .send_conversation_envelope(link, row.id, conversation, envelope)
                            .await
                        {
                            Ok(true) => Ok(FrameBody::Sent(Vec::new())),
                            Ok(false) => {
                                progressed = true;
                                continue;
                            }
                            Err(e) => Err(e),
                        }
                    }
                    None => link.call(FrameBody::Send(vec![envelope])).await,
                };
                match sent {
                    Ok(FrameBody::Sent(_)) => {}
                    Ok(_) => {
                        return Err(ClientError::Connection(
                            "unexpected answer to a send".into(),
                        ));
                    }
                    // A device the relay no longer knows may have left its person's list: if the
                    // newest list drops it, what waited for it is dropped too (`devices.rs`).
                    Err(ClientError::Relay(ErrorCode::UnknownDevice))
                        if self
                            .refresh_device_list(link, self.person_of(row.contact_id))
                            .await?
                            && self.outbox_row_gone(row.id).await? =>
                    {
                        continue;
                    }
                    Err(ClientError::Relay(
                        code @ (ErrorCode::MailboxFull
                        | ErrorCode::SenderQuota
                        | ErrorCode::UnknownDevice),
                    )) => {
                        // This recipient cannot take it now; the others should not wait. The
                        // person is told why, once per reason (relay-protocol.md §6).
                        held.insert(row.contact_id);
                        let reason = match code {
                            ErrorCode::MailboxFull => {
                                "the contact's mailbox at the relay is full; retrying".to_owned()
                            }
                            ErrorCode::SenderQuota => "too many of your messages are waiting \
                                 undelivered for this contact; retrying as they are read"
                                .to_owned(),
                            _ => "the relay does not know the contact's device".to_owned(),
                        };
                        self.hold(row.contact_id, reason, &mut reported);
                        continue;
                    }
                    Err(ClientError::Relay(ErrorCode::RateLimited)) => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                    Err(e) => return Err(e),
                }
                self.outbox_entry_sent(row.id, row.contact_id, &row.sealed)
                    .await?;
                reported.remove(&row.contact_id);
                if let Ok(mut shared) = self.inner.held.lock() {
                    shared.remove(&row.contact_id);
                }
                progressed = true;
            }
            // Archive copies of conversation messages (`conversations.md` §7.3).
            if self.flush_archive(link, &mut archive_warned).await? > 0 {
                progressed = true;
            }
            if !progressed {
                // Nothing could move: wait for news (a new message, a verification) or retry in
                // a while (a full mailbox drains).
                let _ = tokio::time::timeout(Duration::from_secs(5), changed).await;
            }
        }
    }

    /// Holds a contact's messages (§5.1): reports why with `SendHeld`, once per reason, then
    /// counts the contact as held for `sync` — after the event, so whoever sees `sync` finish
    /// has the event too.
    fn hold(
        &self,
        contact_id: i64,
        reason: String,
        reported: &mut std::collections::HashMap<i64, String>,
    ) {
        // A further device of a person (`devices.rs`), listed but not (yet) at the relay: a
        // device linked with a code never used, say. The person's own address gets the
        // messages; waiting copies for that device are not worth a warning.
        if self.device_row(contact_id).is_some() {
            tracing::info!(contact = contact_id, "copies for a further device are held");
        } else if reported.get(&contact_id) != Some(&reason) {
            // The reason may name the contact (a name can be PHI): it goes to the app in the
            // event, never to the log.
            tracing::warn!(contact = contact_id, "messages to a contact are held");
            reported.insert(contact_id, reason.clone());
            self.emit(Event::SendHeld {
                contact: ContactId(contact_id),
                reason,
            });
        }
        if let Ok(mut shared) = self.inner.held.lock() {
            shared.insert(contact_id);
        }
    }

    /// The relay holds an outbox entry: it leaves the outbox and its message (if it is one)
    /// becomes `Sent` in one transaction; then `MessageStateChanged` and `MessageSent`.
    pub(super) async fn outbox_entry_sent(
        &self,
        row_id: i64,
        contact_id: i64,
        sealed: &[u8],
    ) -> Result<()> {
        let item: OutboxItem =
            self.inner
                .vault
                .open_value("outbox", &row_id.to_be_bytes(), sealed)?;
        // A copy to one of this person's own devices says nothing about the message's state.
        let message_id = item
            .message_id
            .filter(|_| self.person_of(contact_id).is_some());
        let moved = {
            let mut tx = store::begin(&self.inner.db).await?;
            store::delete_outbox(&mut tx, row_id).await?;
            let moved = match message_id {
                Some(id) => {
                    let from = [MessageState::Queued.code(), MessageState::Retrying.code()];
                    let sent = MessageState::Sent.code();
                    store::set_sent_state(&mut tx, &id, &from, sent, false, now_ms()).await?
                }
                None => false,
            };
            tx.commit().await?;
            moved
        };
        if let Some(id) = message_id {
            if moved {
                self.emit(Event::MessageStateChanged {
                    contact: ContactId(contact_id),
                    id: MessageId(id),
                    state: MessageState::Sent,
                });
            }
            // Once per message, not once per device of the person.
            if moved {
                self.emit(Event::MessageSent {
                    contact: ContactId(contact_id),
                    id: MessageId(id),
                });
            }
        }
        Ok(())
    }

    /// Makes sure the contact has a session, then encrypts the queued payload.
    pub(super) async fn prepare(
        &self,
        link: &Link,
        row_id: i64,
        contact_id: i64,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        self.check_before_encrypting(link, contact_id).await?;
        let identity_known = {
            let mut c = self.inner.db.acquire().await?;
            self.load_contact(&mut c, contact_id)
                .await?
                .identity
                .is_some()
        };
        self.ensure_session(link, contact_id).await?;
        if !identity_known {
            // The bundle just told us the person's identity, so its device list can be checked
            // now: its other devices get this message too (`devices.rs`).
            match self
                .refresh_device_list(link, self.person_of(contact_id))
                .await
            {
                Ok(_) | Err(ClientError::Relay(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let (ciphertext, _header) = self.encrypt_outbox_row(row_id, contact_id, sealed).await?;
        Ok(ciphertext)
    }

    /// Encrypts a queued payload with the contact's active session and stores the ciphertext
    /// with the advanced session, so a resend after a crash sends the very same bytes. Returns
    /// the ciphertext and its (encrypted) header.
    pub(super) async fn encrypt_outbox_row(
        &self,
        row_id: i64,
        contact_id: i64,
        sealed: &[u8],
    ) -> Result<(Vec<u8>, MessageHeader)> {
        let _state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        let item: OutboxItem =
            self.inner
                .vault
                .open_value("outbox", &row_id.to_be_bytes(), sealed)?;
        let payload = item.payload;
        let mut sessions = self.load_sessions(&mut tx, contact_id).await?;
        // Only the active session sends: retired ones (after a reset, §5.13) only decrypt.
        let Some(StoredSession { session, .. }) = sessions.first_mut().filter(|s| s.active) else {
            return Err(ClientError::Session(
                "no active session with the contact".into(),
            ));
        };
        // Padded to a 256-byte bucket, so the length tells the relay little (`client.md` §4.5).
        let (ciphertext, header) = session
            .encrypt_message(&crate::payload::pad(&payload))
            .map_err(session_error)?;
        self.save_session(&mut tx, contact_id, session).await?;
        store::set_outbox_ciphertext(&mut tx, row_id, &ciphertext).await?;
        tx.commit().await?;
        Ok((ciphertext, header))
    }
    /// Encrypts `payload` with the contact row's active session at once, outside the outbox
    /// (a hand-off note, which travels inside its frame), and saves the advanced session.
    pub(super) async fn encrypt_now(&self, contact_id: i64, payload: &Payload) -> Result<Vec<u8>> {
        let _state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        let mut sessions = self.load_sessions(&mut tx, contact_id).await?;
        let Some(StoredSession { session, .. }) = sessions.first_mut().filter(|s| s.active) else {
            return Err(ClientError::Session(
                "no active session with the contact".into(),
            ));
        };
        let (ciphertext, _header) = session
            .encrypt_message(&crate::payload::pad(&payload.encode()))
            .map_err(session_error)?;
        self.save_session(&mut tx, contact_id, session).await?;
        tx.commit().await?;
        Ok(ciphertext)
    }

    async fn outbox_row_gone(&self, row_id: i64) -> Result<bool> {
        let mut c = self.inner.db.acquire().await?;
        Ok(store::outbox_row(&mut c, row_id).await?.is_none())
    }

    /// Outbox entries that can go out now: not for a contact awaiting re-verification, nor for
    /// one whose messages are held (no prekeys, unknown device, forged bundle).
    pub(super) async fn pending_sendable(&self) -> Result<usize> {
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
}

/// Errors that concern one contact only: their messages are held, the connection goes on.
pub(super) fn is_per_contact(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Relay(ErrorCode::NoPreKeys | ErrorCode::UnknownDevice | ErrorCode::BadPreKey)
            | ClientError::RelayIdentityMismatch(_)
            | ClientError::AgentNotVerified { .. }
            | ClientError::Session(_)
    )
}
