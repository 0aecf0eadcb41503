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

    pub(super) async fn all_contacts(
        &self,
        c: &mut SqliteConnection,
    ) -> Result<Vec<(i64, ContactRecord)>> {
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
