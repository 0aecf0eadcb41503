//! The receive pipeline (`docs/client.md` §5.2): decrypt, then one transaction holding the
//! session, the transcript record, the dedupe markers, the unread entry and the receipt; the
//! relay is acknowledged only after it commits.

use hushwire::proto::X25519PublicKey;
use hushwire::proto::codec::Codec as _;
use hushwire::proto::relay::Delivery;
use hushwire::transcript::{Direction, SealedRecord, TranscriptRecord, TranscriptWriter};
use hushwire::wire::Message;
use hushwire::{Account, DecryptedMessage, DecryptionError};
use serde::{Deserialize, Serialize};
use sqlx::SqliteConnection;
use zeroize::Zeroizing;

use crate::address::Address;
use crate::contact::{ContactId, ContactRecord};
use crate::error::{ClientError, Result};
use crate::event::{Event, MessageId, ReceivedMessage};
use crate::os::{now_ms, rng};
use crate::payload::Payload;
use crate::store;

use super::sessions::{StoredSession, missing_count, session_started};

use super::sessions::SESSIONS_PER_CONTACT;
use super::{Client, State};
use crate::event::MessageState;
use crate::payload::ResetReason;

/// Two sessions started within this long of each other count as a simultaneous start.
pub(super) const SIMULTANEOUS_START_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Relay envelope ids are remembered this long (beyond the relay's longest retention).
pub(super) const SEEN_ENVELOPE_TTL_MS: u64 = 90 * 24 * 3600 * 1000;

/// A recorded decryption failure (sealed).
#[derive(Serialize, Deserialize)]
pub(super) struct FailureRecord {
    sender: String,
    reason: String,
}

impl Client {
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
    pub(super) async fn receive(&self, delivery: Delivery) -> Result<()> {
        // In a task of its own: the connection's select! may drop the reader at any await, and
        // a receive must either finish (commit, then update memory) or not start.
        let client = self.clone();
        let result = tokio::spawn(async move { client.receive_now(delivery).await })
            .await
            .map_err(|_| ClientError::Connection("the receive task failed".into()))?;
        if result.is_err() {
            // A device row made in the transaction that failed is gone again (`devices.rs`).
            self.reload_device_rows().await;
        }
        result
    }

    pub(super) async fn receive_now(&self, delivery: Delivery) -> Result<()> {
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
                self.deliver_payload(
                    &mut tx,
                    signer,
                    decrypted,
                    (now, delivery.server_time_ms),
                    &mut events,
                )
                .await?;
            }
            Ok(None) => {} // a duplicate
            Err(Failure { reason, reset }) => {
                self.record_failure(&mut tx, sender, &reason, now).await?;
                events.push(Event::DecryptFailed { sender, reason });
                if let Some((contact_id, why)) = reset {
                    self.request_reset(&mut tx, &state.account, contact_id, why, &mut events)
                        .await?;
                }
            }
        }
        store::prune_received_headers(&mut tx, now.saturating_sub(SEEN_ENVELOPE_TTL_MS)).await?;
        tx.commit().await?;
        let new_session = new_account.is_some();
        if let Some(account) = new_account {
            state.account = account;
        }
        drop(state);
        if new_session {
            // A new session may have told us a contact's identity: its device list (and, with
            // a clinic, its certificate) can be checked now.
            self.request_clinic_check();
        }
        // After the commit: a sender woken now finds the receipt (and any reset) in the outbox.
        self.inner.outbox_changed.notify_one();
        for event in events {
            self.emit(event);
        }
        Ok(())
    }

    /// Records, sealed, a delivery that could not be read.
    pub(super) async fn record_failure(
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
    pub(super) async fn decrypt(
        &self,
        c: &mut SqliteConnection,
        state: &State,
        sender: Address,
        bytes: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<Result<Option<Decrypted>, Failure>> {
        let message = match Message::from_bytes(bytes) {
            Ok(m) => m,
            Err(e) => return Ok(Err(Failure::new(format!("malformed: {e}")))),
        };
        // The message's place in its sender's chains (from its header, which only a session can
        // decrypt), and what arrived there: a second, different message at a place already used
        // is a key reused by a rolled-back sender, never a duplicate (`docs/client.md` §5.13).
        let place = |chain: &X25519PublicKey, index: u32| {
            let mut place = Vec::with_capacity(43);
            place.extend_from_slice(b"header:");
            place.extend_from_slice(chain.as_bytes());
            place.extend_from_slice(&index.to_be_bytes());
            self.inner.vault.blind_index(&place)
        };
        let digest = self.inner.vault.blind_index(bytes);
        let mut contact = self.find_by_address(c, sender).await?;
        if let Some((id, record)) = &mut contact {
            self.revive_removed_contact(c, *id, record, sender, events)
                .await?;
        }
        let mut last_error = None;
        let mut reset_reason = ResetReason::Undecryptable;
        if let Some((contact_id, record)) = &contact {
            // The blind index found this row; the row itself must agree (a store edited behind
            // our back could have moved the index onto another contact).
            if record.address() != sender {
                return Err(ClientError::CorruptStore("contact index"));
            }
            for StoredSession { mut session, .. } in self.load_sessions(c, *contact_id).await? {
                let missing_before = missing_count(&session);
                let discarded_before = session.discarded_message_keys();
                match session.decrypt_message(bytes, &mut rng()) {
                    Ok(DecryptedMessage { plaintext, header }) => {
                        self.save_session(c, *contact_id, &session).await?;
                        let place = place(&header.ratchet_key, header.index);
                        store::remember_received_header(c, &place, &digest, now_ms()).await?;
                        let missing = missing_count(&session);
                        if missing > missing_before {
                            events.push(Event::GapDetected {
                                contact: ContactId(*contact_id),
                                missing,
                            });
                        } else if missing == 0 && missing_before > 0 {
                            // The last missing one arrived (or the rest were given up, reported
                            // below): the earlier warning no longer holds.
                            events.push(Event::GapClosed {
                                contact: ContactId(*contact_id),
                            });
                        }
                        let lost = session.discarded_message_keys() - discarded_before;
                        if lost > 0 {
                            events.push(Event::MessagesLost {
                                contact: ContactId(*contact_id),
                                count: lost,
                            });
                        }
                        return Ok(Ok(Some(Decrypted {
                            contact_id: *contact_id,
                            name: record.name.clone(),
                            plaintext: Zeroizing::new(plaintext),
                            account: None,
                            new_session: None,
                        })));
                    }
                    Err(DecryptionError::DuplicateMessage { chain, index }) => {
                        let place = place(&chain, index);
                        return Ok(match store::received_header(c, &place).await? {
                            Some(seen) if seen == digest => Ok(None), // a true duplicate
                            Some(_) => {
                                events.push(Event::KeyReuseDetected {
                                    contact: ContactId(*contact_id),
                                });
                                Err(Failure {
                                    reason: "a different message under a message key already \
                                             used: the sender's state was rolled back"
                                        .into(),
                                    reset: Some((*contact_id, ResetReason::KeyReused)),
                                })
                            }
                            None => {
                                events.push(Event::MessagesLost {
                                    contact: ContactId(*contact_id),
                                    count: 1,
                                });
                                Err(Failure::new(
                                    "the message arrived after its key was given up (§5.4)".into(),
                                ))
                            }
                        });
                    }
                    Err(e @ DecryptionError::TooFarAhead { .. }) => {
                        reset_reason = ResetReason::TooFarAhead;
                        last_error = Some(e.to_string());
                    }
                    Err(e) => last_error = Some(e.to_string()),
                }
            }
        }
        // Only a known contact is asked to heal: nothing is sent to a stranger.
        let reset = contact.as_ref().map(|(id, _)| (*id, reset_reason));
        let Message::PreKey(prekey) = message else {
            let reason = last_error.unwrap_or_else(|| "no session with this sender".into());
            return Ok(Err(Failure { reason, reset }));
        };
        if prekey.identity.fingerprint() != sender.fingerprint {
            return Ok(Err(Failure::new(
                "the message's identity is not the sender the relay named".into(),
            )));
        }
        // A prekey message for a session this account ever had, with any contact, is never
        // accepted again: that would overwrite or resurrect a session. The very bytes seen
        // before are a replay (the relay delivering an old message again): a duplicate. Other
        // bytes are a new message on a session this device no longer holds (pruned, or lost
        // with a rollback of this store) while the sender still writes on it: dropping it
        // silently would lose it, so a new session is asked for and the sender sends it again
        // (§5.2, §5.3).
        if store::base_key_known(c, prekey.base_key.as_bytes()).await? {
            if store::message_digest_seen(c, &digest).await? {
                tracing::info!("a replayed prekey message was ignored");
                return Ok(Ok(None));
            }
            return Ok(Err(Failure {
                reason: "a message on a session this device no longer holds: a new session is \
                         requested and the sender sends it again"
                    .into(),
                reset,
            }));
        }
        let mut account = state.account.clone();
        let inbound = match account.accept(bytes, &mut rng()) {
            Ok(inbound) => inbound,
            // Every refusal names its prekey precisely (never issued, used, or retired); a
            // known contact is asked for a new session, which heals all of them.
            Err(e) => {
                return Ok(Err(Failure {
                    reason: e.to_string(),
                    reset,
                }));
            }
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
            // A further device of a person known here (or of this device's own person): the
            // same identity, so the same person (`devices.rs`).
            None if let Some(person) = self.person_with_identity(c, state, sender).await? => {
                match self
                    .add_device_row(c, person, sender, session.remote_identity())
                    .await?
                {
                    Ok(id) => (id, String::new()),
                    Err(reason) => return Ok(Err(Failure::new(reason))),
                }
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
        let first = place(&inbound.header.ratchet_key, inbound.header.index);
        store::remember_received_header(c, &first, &digest, now).await?;
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
            new_session: Some(new_base),
        })))
    }

    /// A removed contact (§5.15) that writes again comes back into the contact list the way a
    /// stranger appears, as `unknown-<short address>` with a `NewContact` event, unverified:
    /// its messages are shown with who sent them, never under an empty name, and the user
    /// decides whether to rename, verify or remove it again.
    async fn revive_removed_contact(
        &self,
        c: &mut SqliteConnection,
        id: i64,
        record: &mut ContactRecord,
        sender: Address,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let mut removed = self.removed_contacts(c).await?;
        if !removed.contains(&id) {
            return Ok(());
        }
        removed.retain(|r| *r != id);
        self.save_removed_contacts(c, &removed).await?;
        record.name = format!("unknown-{}", sender.short());
        record.verified = false;
        self.save_contact(c, id, record).await?;
        events.push(Event::NewContact {
            contact: ContactId(id),
            name: record.name.clone(),
        });
        Ok(())
    }

    /// Acts on a decrypted payload: a message is recorded, deduplicated and answered with a
    /// receipt; a receipt becomes `MessageDelivered` events.
    pub(super) async fn deliver_payload(
        &self,
        c: &mut SqliteConnection,
        account: &Account,
        decrypted: Decrypted,
        (now, server_time_ms): (u64, u64),
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let Decrypted {
            contact_id,
            name,
            plaintext,
            new_session,
            ..
        } = decrypted;
        // The person the sending device belongs to (`devices.rs`): what it writes goes into
        // that person's transcript, under that person's name. `None`: one of this device's
        // own other devices.
        let person = self.person_of(contact_id);
        let name = match person {
            Some(p) if p != contact_id => self.load_contact(c, p).await?.name,
            _ => name,
        };
        let payload = match (person, Payload::decode_padded(&plaintext)) {
            (
                None,
                Ok(Payload::SentCopy {
                    recipient,
                    id,
                    sent_at_ms,
                    content_type,
                    content,
                }),
            ) => {
                let copy = super::devices::SentCopy {
                    recipient: crate::Address::from_device_address(recipient),
                    id,
                    sent_at_ms,
                    content_type,
                    content,
                };
                self.record_sent_copy(c, account, contact_id, copy, now, events)
                    .await?;
                return Ok(());
            }
            // Receipts between one person's devices are not sent; a reset heals their session.
            (None, Ok(Payload::Receipt(_))) => return Ok(()),
            (None, Ok(Payload::Message { .. })) | (Some(_), Ok(Payload::SentCopy { .. })) => {
                let sender = self.load_contact(c, contact_id).await?.address();
                let reason = "a sent copy from another person, or a message from one of this \
                              person's own devices: neither is sent by Hushwire"
                    .to_owned();
                self.record_failure(c, sender, &reason, now).await?;
                events.push(Event::DecryptFailed { sender, reason });
                return Ok(());
            }
            (_, payload) => payload,
        };
        let person = person.unwrap_or(contact_id);
        match payload {
            // Handled above: only this person's own devices send copies.
            Ok(Payload::SentCopy { .. }) => {}
            // Clinic conversations (`docs/conversations.md` §8): stored with the delivery, acted
            // on once the membership they name is verified (`conversation_messages.rs`).
            Ok(
                Payload::ConversationMessage(_)
                | Payload::ConversationReceipt { .. }
                | Payload::Recall { .. }
                | Payload::HistoryShare { .. }
                | Payload::StaffNote { .. },
            ) => {
                let sender = self.load_contact(c, contact_id).await?.address();
                self.store_conversation_inbound(c, sender, server_time_ms, now, &plaintext)
                    .await?;
            }
            Err(e) => {
                let sender = self.load_contact(c, contact_id).await?.address();
                let reason = format!("the message decrypted but its payload is malformed: {e}");
                self.record_failure(c, sender, &reason, now).await?;
                events.push(Event::DecryptFailed { sender, reason });
            }
            Ok(Payload::Receipt(ids)) => {
                for id in ids {
                    // Only the contact the message went to can confirm it.
                    let ours = store::sent_message(c, &id.0).await?;
                    if ours.is_some_and(|m| m.contact_id != person) {
                        continue;
                    }
                    let from = [
                        MessageState::Queued,
                        MessageState::Sent,
                        MessageState::Retrying,
                        MessageState::NotConfirmed,
                        MessageState::Failed,
                    ]
                    .map(MessageState::code);
                    let state = MessageState::Delivered.code();
                    if store::set_sent_state(c, &id.0, &from, state, true, now).await? {
                        events.push(Event::MessageStateChanged {
                            contact: ContactId(person),
                            id,
                            state: MessageState::Delivered,
                        });
                    }
                    events.push(Event::MessageDelivered {
                        contact: ContactId(person),
                        id,
                    });
                }
            }
            Ok(Payload::SessionReset(_)) => {
                self.accept_reset(c, account, contact_id, new_session, events)
                    .await?;
            }
            Ok(Payload::Message {
                id,
                sent_at_ms,
                content_type,
                content,
            }) => {
                if !store::mark_message_seen(c, person, &id.0).await? {
                    // Sent twice (a resend after a crash or a reset): shown once, but confirmed
                    // again, since the first receipt may be what was lost (§5.13).
                    self.queue(c, contact_id, None, &Payload::Receipt(vec![id]))
                        .await?;
                    return Ok(());
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
                        person,
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
                store::push_inbox(c, person, sequence, &id.0).await?;
                // The receipt goes back to the device that sent the message.
                self.queue(c, contact_id, None, &Payload::Receipt(vec![id]))
                    .await?;
                events.push(Event::MessageReceived(ReceivedMessage {
                    contact: ContactId(person),
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
}

/// A delivery that cannot be read, and why (no secrets in the text).
pub(super) struct Failure {
    reason: String,
    /// The contact to ask for a new session, and why (`docs/client.md` §5.13).
    reset: Option<(i64, ResetReason)>,
}

impl Failure {
    fn new(reason: String) -> Self {
        Self {
            reason,
            reset: None,
        }
    }
}

/// A decrypted delivery.
pub(super) struct Decrypted {
    contact_id: i64,
    name: String,
    plaintext: Zeroizing<Vec<u8>>,
    /// For a new session: the account with the one-time prekeys it used removed, to become
    /// the in-memory account once (and only once) the transaction has committed.
    account: Option<Account>,
    /// For a new session started by the contact: its base key.
    new_session: Option<[u8; 32]>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::client::ClientOptions;
    use crate::event::MessageId;
    use crate::vault::{KdfParams, Secret};
    use hushwire::transcript::ContentType;
    use hushwire::{Account, Session};
    use std::time::Duration;

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
        let (_dir, bob, alice, mut to_bob) = bob_and_alice().await;
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

    /// Bob's client (a store in a temporary directory) and Alice, a bare core account with a
    /// session started from Bob's bundle (no one-time prekeys: the bundle a relay hands out once
    /// they run out).
    async fn bob_and_alice() -> (tempfile::TempDir, Client, Account, Session) {
        bob_and_alice_with(test_options()).await
    }

    async fn bob_and_alice_with(
        options: ClientOptions,
    ) -> (tempfile::TempDir, Client, Account, Session) {
        let dir = tempfile::tempdir().unwrap();
        let secret = Secret::passphrase("correct horse battery staple");
        let bob = Client::create(&dir.path().join("b.db"), &secret, options)
            .await
            .unwrap();
        let mut rng = rng();
        let alice = Account::new(1, 0, &mut rng);
        let bundle = bob
            .inner
            .state
            .lock()
            .await
            .account
            .prekey_bundle()
            .unwrap();
        let to_bob = Session::initiate(alice.identity(), &bundle, &mut rng).unwrap();
        (dir, bob, alice, to_bob)
    }

    fn address_of(account: &Account) -> crate::Address {
        crate::Address {
            fingerprint: account.identity_key().fingerprint(),
            device_id: account.device_id(),
        }
    }

    fn test_options() -> ClientOptions {
        ClientOptions {
            kdf: KdfParams::INSECURE_FOR_TESTS,
            ..ClientOptions::default()
        }
    }

    fn text(id: u8, body: &str) -> Vec<u8> {
        Payload::Message {
            id: MessageId([id; 16]),
            sent_at_ms: 1,
            content_type: ContentType::Text,
            content: Zeroizing::new(body.as_bytes().to_vec()),
        }
        .encode()
        .to_vec()
    }

    fn delivery(from: &Account, server_id: u8, payload: Vec<u8>) -> Delivery {
        Delivery {
            server_id: [server_id; 16],
            sender: hushwire::proto::relay::DeviceAddress {
                fingerprint: from.identity_key().fingerprint().0,
                device_id: from.device_id(),
            },
            server_time_ms: 1,
            payload,
        }
    }

    /// Issue 10, case 4: once Bob replaced the contact the first message came from, the relay
    /// replaying that prekey message creates no contact and shows nothing: replay detection is
    /// account-wide.
    #[tokio::test]
    async fn a_replayed_prekey_message_is_refused_after_its_contact_was_replaced() {
        let (_dir, bob, alice, mut to_bob) = bob_and_alice().await;
        let mut rng = rng();
        let first = to_bob.encrypt(&text(7, "hello")).unwrap();
        bob.receive_now(delivery(&alice, 1, first.clone()))
            .await
            .unwrap();
        // Bob names the contact that wrote first, then replaces its identity.
        let unknown = bob.contacts().await.unwrap()[0].name.clone();
        bob.rename_contact(&unknown, "alice").await.unwrap();
        let other = Account::new(1, 0, &mut rng);
        let other_address = crate::Address {
            fingerprint: other.identity_key().fingerprint(),
            device_id: 1,
        };
        bob.add_contact("alice", other_address, true).await.unwrap();
        let unread = bob.unread().await.unwrap().len();

        let mut events = bob.events();
        bob.receive_now(delivery(&alice, 2, first)).await.unwrap();
        assert_eq!(
            bob.contacts().await.unwrap().len(),
            1,
            "a contact was created"
        );
        assert_eq!(bob.unread().await.unwrap().len(), unread, "shown again");
        assert!(events.try_recv().is_err(), "a replay is silent");
    }

    /// Issue 10, case 3 at the receiver: a different message under a message key already used
    /// (a sender restored from a copy) is a security event and asks for a new session, never a
    /// duplicate; the very same bytes again are a duplicate.
    #[tokio::test]
    async fn a_different_message_under_a_used_key_is_reported_and_heals() {
        let (_dir, bob, alice, mut to_bob) = bob_and_alice().await;
        let alice_address = address_of(&alice);
        let contact = bob
            .add_contact("alice", alice_address, false)
            .await
            .unwrap();
        let m0 = to_bob.encrypt(&text(1, "first")).unwrap();
        bob.receive_now(delivery(&alice, 1, m0)).await.unwrap();
        let copy = to_bob.clone(); // Alice's store, backed up here
        let m1 = to_bob.encrypt(&text(2, "m1")).unwrap();
        bob.receive_now(delivery(&alice, 2, m1.clone()))
            .await
            .unwrap();
        // The relay delivering m1 again (new envelope id): a plain duplicate, silent.
        let mut events = bob.events();
        bob.receive_now(delivery(&alice, 3, m1)).await.unwrap();
        assert!(events.try_recv().is_err(), "a duplicate is silent");

        // Alice restored the copy and sends m2: same key and nonce as m1.
        let mut restored = copy;
        let m2 = restored.encrypt(&text(3, "m2")).unwrap();
        let outbox_before = bob.outbox_len().await.unwrap();
        bob.receive_now(delivery(&alice, 4, m2)).await.unwrap();
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            seen.push(e);
        }
        assert!(
            seen.iter()
                .any(|e| matches!(e, Event::KeyReuseDetected { contact: c } if *c == contact)),
            "{seen:?}"
        );
        assert!(
            seen.iter().any(|e| matches!(
                e,
                Event::SessionReset {
                    requested_by_peer: false,
                    ..
                }
            )),
            "{seen:?}"
        );
        assert!(!seen.iter().any(|e| matches!(e, Event::MessageReceived(_))));
        assert_eq!(
            bob.outbox_len().await.unwrap(),
            outbox_before + 1,
            "a reset is queued"
        );
        let texts: Vec<_> = bob
            .unread()
            .await
            .unwrap()
            .into_iter()
            .map(|m| String::from_utf8(m.content.to_vec()).unwrap())
            .collect();
        assert_eq!(texts, ["first", "m1"]);
        // Every session is retired: the next send starts a new one.
        let mut c = bob.inner.db.acquire().await.unwrap();
        assert!(
            store::sessions(&mut c, contact.0)
                .await
                .unwrap()
                .iter()
                .all(|s| !s.active)
        );
    }

    /// A reset request moves only what was sent to the identity it came from: Mallory (anyone
    /// who can reach Bob through the relay) asking for a reset makes Bob resend nothing meant
    /// for Alice, and Bob's messages to Alice stay as they were.
    #[tokio::test]
    async fn a_reset_from_another_identity_resends_nothing_of_ours() {
        let (_dir, bob, alice, _) = bob_and_alice().await;
        let alice_address = address_of(&alice);
        let to_alice = bob
            .add_contact("alice", alice_address, false)
            .await
            .unwrap();
        let id = bob.send_text(to_alice, "for alice only").await.unwrap();
        let outbox = bob.outbox_len().await.unwrap();

        let mut rng = rng();
        let mallory = Account::new(1, 0, &mut rng);
        let bundle = bob
            .inner
            .state
            .lock()
            .await
            .account
            .prekey_bundle()
            .unwrap();
        let mut to_bob = Session::initiate(mallory.identity(), &bundle, &mut rng).unwrap();
        let reset = Payload::SessionReset(ResetReason::Undecryptable).encode();
        let forged = to_bob.encrypt(&reset).unwrap();
        let mut events = bob.events();
        bob.receive_now(delivery(&mallory, 1, forged.clone()))
            .await
            .unwrap();
        // The same request stamped by a relay with Alice's address is refused outright.
        let mut as_alice = delivery(&mallory, 2, forged);
        as_alice.sender = alice_address.to_device_address();
        bob.receive_now(as_alice).await.unwrap();

        assert_eq!(
            bob.outbox_len().await.unwrap(),
            outbox,
            "something was queued again"
        );
        assert_eq!(
            bob.message_state(id).await.unwrap(),
            Some(MessageState::Queued)
        );
        while let Ok(e) = events.try_recv() {
            if let Event::SessionReset {
                contact, resent, ..
            } = e
            {
                assert_ne!(contact, to_alice);
                assert_eq!(resent, 0);
            }
        }
    }

    /// A message sent again (a resend after a reset) is shown once but confirmed again: the
    /// first receipt may be what was lost, and without a new one the sender would show it as
    /// not confirmed for good and resend it at every reset.
    #[tokio::test]
    async fn a_message_received_twice_is_shown_once_and_confirmed_again() {
        let (_dir, bob, alice, mut to_bob) = bob_and_alice().await;
        let first = to_bob.encrypt(&text(5, "once")).unwrap();
        let again = to_bob.encrypt(&text(5, "once")).unwrap();
        bob.receive_now(delivery(&alice, 1, first)).await.unwrap();
        let receipts = bob.outbox_len().await.unwrap();
        bob.receive_now(delivery(&alice, 2, again)).await.unwrap();
        assert_eq!(bob.unread().await.unwrap().len(), 1, "shown twice");
        assert_eq!(
            bob.outbox_len().await.unwrap(),
            receipts + 1,
            "no new receipt"
        );
    }

    /// A message that cannot be read while a reset is held back by the interval is not left
    /// waiting for the contact to write again: the reset goes out once the interval has passed.
    #[tokio::test]
    async fn a_reset_held_back_by_the_interval_goes_out_when_it_ends() {
        let options = ClientOptions {
            reset_interval: Duration::from_secs(2),
            ..test_options()
        };
        let (_dir, bob, alice, _) = bob_and_alice_with(options).await;
        let alice_address = address_of(&alice);
        bob.add_contact("alice", alice_address, false)
            .await
            .unwrap();
        // Well-formed prekey messages from Alice that Bob cannot read (made for Carol).
        let mut rng = rng();
        let carol = Account::new(3, 0, &mut rng);
        let mut to_carol =
            Session::initiate(alice.identity(), &carol.prekey_bundle().unwrap(), &mut rng).unwrap();
        let mut unreadable = || to_carol.encrypt(&text(9, "for carol")).unwrap();
        let mut events = bob.events();
        bob.receive_now(delivery(&alice, 1, unreadable()))
            .await
            .unwrap();
        let queued = bob.outbox_len().await.unwrap();
        assert_eq!(queued, 1, "the first failure asks at once");
        bob.receive_now(delivery(&alice, 2, unreadable()))
            .await
            .unwrap();
        assert_eq!(
            bob.outbox_len().await.unwrap(),
            1,
            "held back by the interval"
        );
        bob.check_receipts().await.unwrap();
        assert_eq!(bob.outbox_len().await.unwrap(), 1, "too early");
        tokio::time::sleep(Duration::from_millis(2100)).await;
        bob.check_receipts().await.unwrap();
        assert_eq!(
            bob.outbox_len().await.unwrap(),
            2,
            "the held-back reset went out"
        );
        let resets = std::iter::from_fn(|| events.try_recv().ok())
            .filter(|e| matches!(e, Event::SessionReset { .. }))
            .count();
        assert_eq!(resets, 2);
        bob.check_receipts().await.unwrap();
        assert_eq!(bob.outbox_len().await.unwrap(), 2, "sent once only");
    }
}
