//! Contacts: names, addresses and pinned identities, safety numbers and verification
//! (`docs/client.md` §4).

use hushwire::proto::SafetyNumber;
use hushwire::proto::audit::AuditEvent;
use sqlx::SqliteConnection;

use crate::address::Address;
use crate::address::{device_ref, own_ref};
use crate::contact::{Contact, ContactId, ContactRecord};
use crate::error::{ClientError, Result};
use crate::event::Event;
use crate::os::{now_ms, rng};
use crate::store;

use super::Client;

/// The `meta` row holding the sealed ids of removed contacts.
const REMOVED_CONTACTS: &str = "removed_contacts";

/// A contact name, trimmed: 1 to 64 characters, no control character.
fn check_name(name: &str) -> Result<&str> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > 64
        || name.chars().any(|c| c.is_control() || invisible(c))
    {
        return Err(ClientError::BadContactName(name.chars().take(80).collect()));
    }
    Ok(name)
}

/// Characters that show nothing, or nothing but blank space, or reorder text: a name holding
/// one could pass for another contact's name (`"car\u{200b}ol"` for `"carol"`).
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00a0}' | '\u{00ad}' | '\u{034f}' | '\u{061c}' | '\u{115f}' | '\u{1160}'
        | '\u{17b4}' | '\u{17b5}' | '\u{180e}' | '\u{2000}'..='\u{200f}'
        | '\u{2028}'..='\u{202f}' | '\u{205f}'..='\u{206f}' | '\u{2800}' | '\u{3000}'
        | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}' | '\u{ffa0}' | '\u{fff9}'..='\u{fffb}')
}

impl Client {
    // ----- contacts -------------------------------------------------------------------------

    pub(super) async fn load_contact(
        &self,
        c: &mut SqliteConnection,
        id: i64,
    ) -> Result<ContactRecord> {
        let row = store::contact_by_id(c, id)
            .await?
            .ok_or_else(|| ClientError::UnknownContact(id.to_string()))?;
        self.inner
            .vault
            .open_value("contact", &row.id.to_be_bytes(), &row.sealed)
    }

    pub(super) async fn save_contact(
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

    /// Every person's contact row (device rows left out), removed ones included.
    pub(super) async fn all_contacts(
        &self,
        c: &mut SqliteConnection,
    ) -> Result<Vec<(i64, ContactRecord)>> {
        let mut out = Vec::new();
        for row in store::contacts(c).await? {
            // A person's further devices are rows of their own, never listed (`devices.rs`).
            if self.device_row(row.id).is_some() {
                continue;
            }
            let record: ContactRecord =
                self.inner
                    .vault
                    .open_value("contact", &row.id.to_be_bytes(), &row.sealed)?;
            out.push((row.id, record));
        }
        Ok(out)
    }

    pub(super) async fn find_by_address(
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

    pub(super) async fn insert_contact(
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

    /// Every contact, in the order added (removed ones left out, §5.15).
    pub async fn contacts(&self) -> Result<Vec<Contact>> {
        let state = self.inner.state.lock().await;
        let mut c = self.inner.db.acquire().await?;
        let removed = self.removed_contacts(&mut c).await?;
        let mut out = Vec::new();
        for (id, record) in self.all_contacts(&mut c).await? {
            if removed.contains(&id) {
                continue;
            }
            let mut contact = Contact::from_record(id, &record);
            contact.agent = self.status_with(&mut c, &state, id, &record).await?;
            out.push(contact);
        }
        Ok(out)
    }

    /// Every contact, removed ones included (their transcripts are kept and listed).
    pub(super) async fn contacts_including_removed(&self) -> Result<Vec<Contact>> {
        let _state = self.inner.state.lock().await;
        let mut c = self.inner.db.acquire().await?;
        Ok(self
            .all_contacts(&mut c)
            .await?
            .iter()
            .map(|(id, r)| Contact::from_record(*id, r))
            .collect())
    }

    /// The ids of removed contacts, sealed in the `meta` row `removed_contacts` (§5.15).
    pub(super) async fn removed_contacts(&self, c: &mut SqliteConnection) -> Result<Vec<i64>> {
        match store::get_meta(c, REMOVED_CONTACTS).await? {
            Some(sealed) => self
                .inner
                .vault
                .open_value("removed contacts", b"", &sealed),
            None => Ok(Vec::new()),
        }
    }

    pub(super) async fn save_removed_contacts(
        &self,
        c: &mut SqliteConnection,
        ids: &[i64],
    ) -> Result<()> {
        let sealed =
            self.inner
                .vault
                .seal_value("removed contacts", b"", &ids.to_vec(), &mut rng());
        store::put_meta(c, REMOVED_CONTACTS, &sealed).await
    }

    /// Gives a contact a new name; nothing else changes (verification, sessions, transcript).
    /// [`ClientError::ContactExists`] if `new` is taken, [`ClientError::BadContactName`] unless
    /// it has 1 to 64 characters and no control character.
    pub async fn rename_contact(&self, old: &str, new: &str) -> Result<ContactId> {
        let new = check_name(new)?;
        let _state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        let removed = self.removed_contacts(&mut tx).await?;
        let contacts = self.all_contacts(&mut tx).await?;
        let live = || contacts.iter().filter(|(id, _)| !removed.contains(id));
        let Some((id, record)) = live().find(|(_, r)| r.name == old) else {
            return Err(ClientError::UnknownContact(old.to_owned()));
        };
        if record.name == new {
            return Ok(ContactId(*id));
        }
        if live().any(|(_, r)| r.name == new) {
            return Err(ClientError::ContactExists(new.to_owned()));
        }
        let mut renamed = record.clone();
        renamed.name = new.to_owned();
        self.save_contact(&mut tx, *id, &renamed).await?;
        tx.commit().await?;
        Ok(ContactId(*id))
    }

    /// Removes a contact from the contact list: its sessions are dropped, its transcript is
    /// kept (and still listed, opened and exported), and adding its address again restores it
    /// under the name given then. If the outbox still holds messages or receipts for it, this
    /// fails with [`ClientError::OutboxNotEmpty`] unless `discard_queued` is set, which deletes
    /// them (§5.15).
    pub async fn remove_contact(&self, contact: ContactId, discard_queued: bool) -> Result<()> {
        let _state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        let record = self.load_contact(&mut tx, contact.0).await?;
        let mut removed = self.removed_contacts(&mut tx).await?;
        if removed.contains(&contact.0) {
            return Err(ClientError::UnknownContact(record.name));
        }
        let queued: Vec<i64> = store::outbox(&mut tx)
            .await?
            .into_iter()
            .filter(|row| row.contact_id == contact.0)
            .map(|row| row.id)
            .collect();
        if !queued.is_empty() && !discard_queued {
            return Err(ClientError::OutboxNotEmpty {
                contact: record.name,
                queued: queued.len(),
            });
        }
        for id in queued {
            store::delete_outbox(&mut tx, id).await?;
        }
        store::delete_sessions(&mut tx, contact.0).await?;
        removed.push(contact.0);
        self.save_removed_contacts(&mut tx, &removed).await?;
        tx.commit().await?;
        self.inner.outbox_changed.notify_one();
        Ok(())
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
    /// until [`Client::mark_verified`]. An address that is already another contact's fails with
    /// [`ClientError::AddressTaken`] (rename with [`Client::rename_contact`]); the address of a
    /// removed contact restores it under this name.
    pub async fn add_contact(
        &self,
        name: &str,
        address: Address,
        replace: bool,
    ) -> Result<ContactId> {
        let name = check_name(name)?;
        let state = self.inner.state.lock().await;
        if address.fingerprint == state.account.identity_key().fingerprint() {
            return Err(ClientError::OwnAddress);
        }
        let mut tx = store::begin(&self.inner.db).await?;
        let mut removed = self.removed_contacts(&mut tx).await?;
        let all = self.all_contacts(&mut tx).await?;
        if let Some((id, existing)) = all
            .iter()
            .find(|(id, r)| removed.contains(id) && r.address() == address)
        {
            // A removed contact added again: restored, transcript and all, under this name.
            if all
                .iter()
                .any(|(other, r)| !removed.contains(other) && r.name == name)
            {
                return Err(ClientError::ContactExists(name.to_owned()));
            }
            let mut restored = existing.clone();
            restored.name = name.to_owned();
            self.save_contact(&mut tx, *id, &restored).await?;
            removed.retain(|r| r != id);
            self.save_removed_contacts(&mut tx, &removed).await?;
            tx.commit().await?;
            return Ok(ContactId(*id));
        }
        let contacts: Vec<&(i64, ContactRecord)> =
            all.iter().filter(|(id, _)| !removed.contains(id)).collect();
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
        if let Some((_, existing)) = contacts.iter().find(|(_, r)| r.address() == address) {
            // Known under another name (for example an `unknown-…` contact that wrote first):
            // never renamed silently (it may be verified, and the user may have mistyped).
            return Err(ClientError::AddressTaken {
                existing: existing.name.clone(),
                requested: name.to_owned(),
            });
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
        drop(state);
        // Is the new contact an agent of the clinic? Asked at once if connected (`clinic.rs`).
        self.request_clinic_check();
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

    pub(super) async fn contact_name(&self, contact: ContactId) -> Result<String> {
        let mut c = self.inner.db.acquire().await?;
        Ok(self.load_contact(&mut c, contact.0).await?.name)
    }

    pub(super) async fn known_safety_number(
        &self,
        contact: ContactId,
    ) -> Result<Option<SafetyNumber>> {
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
}
