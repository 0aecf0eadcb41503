//! Several devices per person (`docs/client.md` §8.6): signed device lists, linking a new
//! device with a one-time code, and the rows that let one contact stand for all of a person's
//! devices.
//!
//! A person is one contact row (the address the user added, or the device that wrote first).
//! Each further device of that person, and each of this device's own other devices, is a
//! **device row**: a contact row of its own (its own sessions, outbox entries and blind index,
//! so the send and receive pipelines need not change) that `contact_devices` ties to its person
//! and that the contact list, transcripts and events never show. Which of a person's devices
//! exist is decided by the newest device list signed by the person's identity; a relay can
//! withhold a list or a device, never add one.

use std::collections::HashMap;

use hushwire::linking::{LinkingCode, Provisioning};
use hushwire::proto::clinic::{DeviceList, is_newer};
use hushwire::proto::codec::Codec as _;
use hushwire::proto::relay::{ErrorCode, FrameBody, RelayKey};
use hushwire::proto::{Fingerprint, IdentityKey};
use sqlx::SqliteConnection;
use zeroize::Zeroizing;

use crate::address::Address;
use crate::contact::{ContactId, ContactRecord};
use crate::error::{ClientError, Result};
use crate::link::{Pin, RelayUrl};
use crate::os::{now_ms, rng};
use crate::store::{self, DeviceRow};
use crate::vault::Secret;

use super::{Client, ClientOptions};

/// The `meta` row remembering the highest device number this person's lists ever named.
const HIGHEST_OWN_DEVICE: &str = "highest_own_device";

/// This device's person's devices, as [`Client::devices`] shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnDevices {
    /// This device's id.
    pub this_device: u32,
    /// Every device on the newest signed list, ascending (this one included); just this device
    /// when no list was ever published.
    pub devices: Vec<u32>,
    /// The list's sequence number, `None` when none was published.
    pub sequence: Option<u64>,
}

/// A device being linked ([`Client::link_device`]): the one-time code to type on it, and the
/// number it will have. `Debug` shows the number only: the code is a secret.
pub struct LinkedDevice {
    /// `hushwire-link:…`: type it on the new device within ten minutes ([`Client::join`]).
    pub code: Zeroizing<String>,
    /// The new device's number, on this person's signed list already.
    pub device_id: u32,
}

impl core::fmt::Debug for LinkedDevice {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LinkedDevice")
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// A device list of an identity known here, as [`Client::contact_devices`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersonDevices {
    /// The devices messages to the contact go to, ascending.
    pub devices: Vec<u32>,
    /// The newest signed list's sequence, `None` when the person never published one (then
    /// only the devices that wrote, and the contact's own address, are known).
    pub sequence: Option<u64>,
}

impl Client {
    // ----- the in-memory map of device rows -------------------------------------------------

    /// The device row `contact_id` is, if it is one.
    pub(super) fn device_row(&self, contact_id: i64) -> Option<DeviceRow> {
        self.inner
            .device_rows
            .lock()
            .ok()
            .and_then(|rows| rows.get(&contact_id).copied())
    }

    /// The person a contact row speaks for: itself for a person, its person for a device row,
    /// `None` for one of this device's own other devices.
    pub(super) fn person_of(&self, contact_id: i64) -> Option<i64> {
        match self.device_row(contact_id) {
            Some(row) => row.person_id,
            None => Some(contact_id),
        }
    }

    /// Device rows belonging to `person` (`None`: this device's own other devices), with
    /// their device ids, in row order.
    fn rows_of(&self, person: Option<i64>) -> Vec<(i64, u32)> {
        let mut rows: Vec<(i64, u32)> = self
            .inner
            .device_rows
            .lock()
            .map(|rows| {
                rows.iter()
                    .filter(|(_, r)| r.person_id == person)
                    .map(|(id, r)| (*id, r.device_id))
                    .collect()
            })
            .unwrap_or_default();
        rows.sort_unstable();
        rows
    }

    pub(super) async fn load_device_rows(&self, c: &mut SqliteConnection) -> Result<()> {
        let rows = store::device_rows(c).await?;
        if let Ok(mut map) = self.inner.device_rows.lock() {
            *map = rows;
        }
        Ok(())
    }

    /// After a transaction that may have made device rows failed: the map follows the store
    /// again (a row that was rolled back must not receive outbox entries).
    pub(super) async fn reload_device_rows(&self) {
        let reloaded = match self.inner.db.acquire().await {
            Ok(mut c) => self.load_device_rows(&mut c).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = reloaded {
            tracing::warn!(error = %e, "could not reload the device rows");
        }
    }

    // ----- device lists ---------------------------------------------------------------------

    fn list_index(&self, fingerprint: &Fingerprint) -> [u8; 32] {
        let mut bytes = b"device list:".to_vec();
        bytes.extend_from_slice(&fingerprint.0);
        self.inner.vault.blind_index(&bytes)
    }

    /// The newest list held for an identity (it verified when it was stored).
    pub(super) async fn held_list(
        &self,
        c: &mut SqliteConnection,
        fingerprint: &Fingerprint,
    ) -> Result<Option<DeviceList>> {
        let index = self.list_index(fingerprint);
        let Some(sealed) = store::device_list(c, &index).await? else {
            return Ok(None);
        };
        let bytes: Vec<u8> = self
            .inner
            .vault
            .open_value("device list", &fingerprint.0, &sealed)?;
        DeviceList::from_bytes(&bytes)
            .map(Some)
            .map_err(|_| ClientError::CorruptStore("device list"))
    }

    /// The contact rows a message to `person` goes to, in row order: the person's own row and
    /// its device rows, less those the person's newest list does not name.
    pub(super) async fn fan_out(
        &self,
        c: &mut SqliteConnection,
        person: i64,
        record: &ContactRecord,
    ) -> Result<Vec<i64>> {
        let list = self.held_list(c, &Fingerprint(record.fingerprint)).await?;
        let mut out = Vec::new();
        if list.as_ref().is_none_or(|l| l.contains(record.device_id)) {
            out.push(person);
        }
        for (row, device) in self.rows_of(Some(person)) {
            if list.as_ref().is_none_or(|l| l.contains(device)) {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// This device's own other devices that a copy of each sent message goes to: those the
    /// newest own list names (none without a list). `account`: this device's, from the state
    /// the caller holds locked.
    pub(super) async fn own_copies(
        &self,
        c: &mut SqliteConnection,
        account: &hushwire::Account,
    ) -> Result<Vec<i64>> {
        let (fingerprint, this_device) =
            (account.identity_key().fingerprint(), account.device_id());
        let Some(list) = self.held_list(c, &fingerprint).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (row, device) in self.rows_of(None) {
            if device != this_device && list.contains(device) {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// Takes a device list for `identity` (whose fingerprint `person`'s row, or this device's
    /// own, carries): it must be signed by that identity and newer than the one held. Stores
    /// it, makes a device row for each device it names that has none, and drops queued
    /// messages to the devices it no longer names. Returns whether it replaced the held list.
    ///
    /// Called with the state lock held (`own_device`: this device's id).
    pub(super) async fn apply_device_list(
        &self,
        c: &mut SqliteConnection,
        person: Option<i64>,
        identity: &IdentityKey,
        list: &DeviceList,
        own_device: u32,
    ) -> Result<bool> {
        if list.verify(identity).is_err() {
            return Err(ClientError::DeviceListRefused(
                "it is not signed by the person's identity".into(),
            ));
        }
        let fingerprint = identity.fingerprint();
        let held = self.held_list(c, &fingerprint).await?;
        if !is_newer(held.as_ref().map(DeviceList::sequence), list.sequence()) {
            return Ok(false);
        }
        let sealed = self.inner.vault.seal_value(
            "device list",
            &fingerprint.0,
            &list.to_bytes(),
            &mut rng(),
        );
        store::put_device_list(c, &self.list_index(&fingerprint), &sealed).await?;
        if person.is_none() {
            let highest = store::get_meta(c, HIGHEST_OWN_DEVICE)
                .await?
                .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
                .map_or(0, u32::from_be_bytes);
            let listed = list.devices().iter().copied().max().unwrap_or(0);
            if listed > highest {
                store::put_meta(c, HIGHEST_OWN_DEVICE, &listed.to_be_bytes()).await?;
            }
        }
        // Which devices already have a row (the person's own row included).
        let mut known: HashMap<u32, i64> = HashMap::new();
        let mut added = Vec::new();
        let primary = match person {
            Some(p) => Some((p, self.load_contact(c, p).await?.device_id)),
            None => None,
        };
        if let Some((p, device)) = primary {
            known.insert(device, p);
        }
        for (row, device) in self.rows_of(person) {
            known.insert(device, row);
        }
        for &device in list.devices() {
            if known.contains_key(&device) || (person.is_none() && device == own_device) {
                continue;
            }
            let address = Address {
                fingerprint,
                device_id: device,
            };
            // An address the user added as a contact of its own stays that contact.
            if self.find_by_address(c, address).await?.is_some() {
                continue;
            }
            added.push(self.insert_device_row(c, person, address, identity).await?);
        }
        if !added.is_empty() {
            self.copy_unconfirmed_messages(c, person, &added).await?;
        }
        // A device taken off the list gets nothing more: what waits for it is dropped.
        for (device, row) in known {
            if !list.contains(device) {
                store::delete_outbox_for(c, row).await?;
            }
        }
        Ok(true)
    }

    /// Messages to a person that no device of theirs has confirmed yet (queued, sent, or
    /// being resent: the payload is kept until a receipt, §5.13) go to the person's devices
    /// found since, too: a device linked just before a message was sent still gets it. Copies
    /// of this person's own messages are not sent again to a new own device.
    async fn copy_unconfirmed_messages(
        &self,
        c: &mut SqliteConnection,
        person: Option<i64>,
        added: &[i64],
    ) -> Result<()> {
        let Some(person) = person else {
            return Ok(());
        };
        let unconfirmed = [
            crate::MessageState::Queued,
            crate::MessageState::Sent,
            crate::MessageState::Retrying,
        ]
        .map(crate::MessageState::code);
        for message in store::sent_messages(c, Some(person), &unconfirmed).await? {
            let Some(sealed) = message.sealed else {
                continue;
            };
            let item: super::send::OutboxItem =
                self.inner
                    .vault
                    .open_value("sent", &message.message_id, &sealed)?;
            for row in added {
                self.queue_item(c, *row, &item).await?;
            }
        }
        Ok(())
    }

    /// Asks the relay for the newest list of `person`'s identity (`None`: this device's own)
    /// and applies it. A person whose identity is not known yet is skipped.
    pub(super) async fn refresh_device_list(
        &self,
        link: &crate::link::Link,
        person: Option<i64>,
    ) -> Result<bool> {
        let identity = match person {
            None => self.inner.state.lock().await.account.identity_key().clone(),
            Some(p) => {
                let mut c = self.inner.db.acquire().await?;
                match self.load_contact(&mut c, p).await?.identity_key() {
                    Some(k) => k,
                    None => return Ok(false),
                }
            }
        };
        let list = match link
            .call(FrameBody::FetchDeviceList(identity.fingerprint().0))
            .await?
        {
            FrameBody::DeviceList(Some(list)) => list,
            FrameBody::DeviceList(None) => return Ok(false),
            _ => {
                return Err(ClientError::Connection(
                    "unexpected answer to a device list request".into(),
                ));
            }
        };
        let state = self.inner.state.lock().await;
        let own_device = state.account.device_id();
        let applied = async {
            let mut tx = store::begin(&self.inner.db).await?;
            let changed = match self
                .apply_device_list(&mut tx, person, &identity, &list, own_device)
                .await
            {
                Ok(changed) => changed,
                Err(ClientError::DeviceListRefused(reason)) => {
                    // A relay serving someone else's list: refused, and said so in the log.
                    tracing::warn!(%reason, "a device list from the relay was refused");
                    false
                }
                Err(e) => return Err(e),
            };
            tx.commit().await?;
            Ok(changed)
        }
        .await;
        drop(state);
        if applied.is_err() {
            self.reload_device_rows().await;
        }
        let changed = applied?;
        if changed {
            self.inner.outbox_changed.notify_one();
        }
        Ok(changed)
    }

    /// The devices part of a connection: this device's own list, then every person's whose
    /// identity is known. Errors for one person do not stop the others.
    pub(super) async fn device_upkeep(&self, link: &crate::link::Link) -> Result<()> {
        let people: Vec<Option<i64>> = {
            let mut c = self.inner.db.acquire().await?;
            let removed = self.removed_contacts(&mut c).await?;
            self.all_contacts(&mut c)
                .await?
                .into_iter()
                .filter(|(id, r)| r.identity.is_some() && !removed.contains(id))
                .map(|(id, _)| Some(id))
                .collect()
        };
        // This device's own list first (`None`).
        let people = std::iter::once(None).chain(people);
        for person in people {
            if let Err(e) = self.refresh_device_list(link, person).await {
                if matches!(e, ClientError::Relay(_)) {
                    continue;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    // ----- the person's own devices ---------------------------------------------------------

    /// This device's person's devices: the newest own list held (refreshed at each connection).
    pub async fn devices(&self) -> Result<OwnDevices> {
        let (fingerprint, this_device) = self.own_fingerprint().await;
        let mut c = self.inner.db.acquire().await?;
        Ok(match self.held_list(&mut c, &fingerprint).await? {
            Some(list) => OwnDevices {
                this_device,
                devices: list.devices().to_vec(),
                sequence: Some(list.sequence()),
            },
            None => OwnDevices {
                this_device,
                devices: vec![this_device],
                sequence: None,
            },
        })
    }

    /// The devices messages to `contact` go to (`docs/client.md` §8.6).
    pub async fn contact_devices(&self, contact: ContactId) -> Result<PersonDevices> {
        let mut c = self.inner.db.acquire().await?;
        let record = self.load_contact(&mut c, contact.0).await?;
        if self.device_row(contact.0).is_some() {
            return Err(ClientError::UnknownContact(contact.to_string()));
        }
        let list = self
            .held_list(&mut c, &Fingerprint(record.fingerprint))
            .await?;
        let mut devices = Vec::new();
        for row in self.fan_out(&mut c, contact.0, &record).await? {
            devices.push(match self.device_row(row) {
                Some(r) => r.device_id,
                None => record.device_id,
            });
        }
        devices.sort_unstable();
        Ok(PersonDevices {
            devices,
            sequence: list.map(|l| l.sequence()),
        })
    }

    /// The highest device number this person's lists ever named, as far as this device saw
    /// (`meta` row `highest_own_device`): a new device is numbered above it.
    async fn highest_own_device(&self) -> Result<u32> {
        let mut c = self.inner.db.acquire().await?;
        Ok(store::get_meta(&mut c, HIGHEST_OWN_DEVICE)
            .await?
            .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
            .map_or(0, u32::from_be_bytes))
    }

    async fn own_fingerprint(&self) -> (Fingerprint, u32) {
        let state = self.inner.state.lock().await;
        (
            state.account.identity_key().fingerprint(),
            state.account.device_id(),
        )
    }

    /// Signs and publishes this person's device list with `devices`, one sequence above the
    /// held one, and applies it here. [`ClientError::DeviceListRefused`] if the relay keeps a
    /// newer list (another device published meanwhile: refresh and try again).
    pub(super) async fn publish_own_list(
        &self,
        link: &crate::link::Link,
        devices: &[u32],
    ) -> Result<()> {
        let (identity, list) = {
            let state = self.inner.state.lock().await;
            let mut c = self.inner.db.acquire().await?;
            let fingerprint = state.account.identity_key().fingerprint();
            let held = self.held_list(&mut c, &fingerprint).await?;
            let sequence = held.map_or(1, |l| l.sequence() + 1);
            let identity = state.account.identity_key().clone();
            let list = DeviceList::issue(state.account.identity(), &identity, sequence, devices)
                .map_err(|e| ClientError::DeviceListRefused(e.to_string()))?;
            (identity, list)
        };
        match link.call(FrameBody::PublishDeviceList(list.clone())).await {
            Ok(FrameBody::Ok) => {}
            Ok(_) => {
                return Err(ClientError::Connection(
                    "unexpected answer to a device list".into(),
                ));
            }
            Err(ClientError::Relay(code)) => {
                return Err(ClientError::DeviceListRefused(format!(
                    "the relay refused it ({code:?}): another of your devices may have changed \
                     the list; try again"
                )));
            }
            Err(e) => return Err(e),
        }
        let state = self.inner.state.lock().await;
        let own_device = state.account.device_id();
        let applied = async {
            let mut tx = store::begin(&self.inner.db).await?;
            self.apply_device_list(&mut tx, None, &identity, &list, own_device)
                .await?;
            tx.commit().await?;
            Ok::<(), ClientError>(())
        }
        .await;
        drop(state);
        if applied.is_err() {
            self.reload_device_rows().await;
        }
        applied?;
        self.inner.outbox_changed.notify_one();
        Ok(())
    }

    /// Links a new device to this person (`hushwire devices link`): picks the next device
    /// number, publishes a device list naming it, leaves the identity sealed under a one-time
    /// code at the relay, and returns the code's text (`hushwire-link:…`), to type on the new
    /// device within ten minutes ([`Client::join`]), with the device's number. The code is a
    /// secret: show it, never log it. Needs a connection; [`ClientError::DeviceListRefused`]
    /// beyond 16 devices.
    pub async fn link_device(&self) -> Result<LinkedDevice> {
        let link = self.require_connection()?;
        // The newest own list first: another device may have linked one meanwhile.
        self.refresh_device_list(&link, None).await?;
        let own = self.devices().await?;
        if own.devices.len() >= hushwire::proto::clinic::MAX_DEVICES {
            return Err(ClientError::DeviceListRefused(format!(
                "you have {} devices, the most one list holds: remove one first (hushwire \
                 devices remove N)",
                own.devices.len()
            )));
        }
        let url = self.relay_url().await.ok_or(ClientError::NotRegistered)?;
        // A number never used before by this person, so that a removed device can never come
        // back under it. The relay refuses a list adding a removed (suspended) number, and one
        // that is not newer (another of the person's devices published meanwhile): then the
        // list is read again and the next try jumps past numbers this device never saw.
        let mut published = None;
        let mut own = own;
        for attempt in 0..8u32 {
            let mut next = self.highest_own_device().await?.max(own.this_device);
            for &d in &own.devices {
                next = next.max(d);
            }
            let jump = if attempt == 0 {
                1
            } else {
                1 + rand_core::Rng::next_u32(&mut rng()) % 4096
            };
            let next = next
                .checked_add(jump)
                .ok_or_else(|| ClientError::DeviceListRefused("no device number left".into()))?;
            let mut devices = own.devices.clone();
            devices.push(next);
            match self.publish_own_list(&link, &devices).await {
                Ok(()) => {
                    published = Some((next, own.devices.clone()));
                    break;
                }
                Err(ClientError::DeviceListRefused(_)) => {
                    self.refresh_device_list(&link, None).await?;
                    own = self.devices().await?;
                }
                Err(e) => return Err(e),
            }
        }
        let Some((next, previous)) = published else {
            return Err(ClientError::DeviceListRefused(
                "the relay refused eight device numbers in a row; try again in a moment".into(),
            ));
        };
        let code = LinkingCode::generate(&url, &mut rng())
            .map_err(|e| ClientError::Linking(e.to_string()))?;
        let sealed = {
            let state = self.inner.state.lock().await;
            let relay_key = state
                .relay_pin
                .as_ref()
                .map(|p| *p.key().as_bytes())
                .ok_or(ClientError::NotRegistered)?;
            Provisioning {
                identity: state.account.identity().clone(),
                device_id: next,
                relay_key,
                extra: Zeroizing::new(self.clinic_provisioning_data(&state)),
            }
            .seal(&code, &mut rng())
            .map_err(|e| ClientError::Linking(e.to_string()))?
        };
        let filed = link
            .call(FrameBody::PutProvisioning {
                slot: code.slot(),
                sealed,
            })
            .await;
        match filed {
            Ok(FrameBody::Ok) => {
                // A patient's conversations include the new device from now on (§8.6).
                if let Err(e) = self.sync_own_devices_in_conversations().await {
                    tracing::warn!(error = %e, "the new device was not added to every conversation");
                }
                Ok(LinkedDevice {
                    code: code.to_text(),
                    device_id: next,
                })
            }
            other => {
                // No code to show: the device just listed must not stay on the list.
                if let Err(e) = self.publish_own_list(&link, &previous).await {
                    tracing::warn!(error = %e, "could not take an unused device off the list");
                }
                Err(match other {
                    Err(ClientError::Relay(ErrorCode::RateLimited)) => ClientError::Linking(
                        "this device has four unused linking codes at the relay already: use \
                         one, or wait until they expire (ten minutes after each was shown)"
                            .into(),
                    ),
                    Err(e) => e,
                    Ok(_) => ClientError::Connection(
                        "unexpected answer to a provisioning message".into(),
                    ),
                })
            }
        }
    }

    /// Removes one of this person's devices (`hushwire devices remove`): publishes a list
    /// without it. The relay refuses that device from then on, and every client that reads the
    /// list stops sending to it. This device cannot remove itself.
    pub async fn remove_device(&self, device_id: u32) -> Result<()> {
        let link = self.require_connection()?;
        self.refresh_device_list(&link, None).await?;
        let own = self.devices().await?;
        if device_id == own.this_device {
            return Err(ClientError::DeviceListRefused(
                "this device cannot remove itself: remove it from another of your devices".into(),
            ));
        }
        if !own.devices.contains(&device_id) {
            return Err(ClientError::DeviceListRefused(format!(
                "device {device_id} is not on your device list ({})",
                own.devices
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let devices: Vec<u32> = own
            .devices
            .iter()
            .copied()
            .filter(|d| *d != device_id)
            .collect();
        self.publish_own_list(&link, &devices).await?;
        // The relay refuses the removed device from now on: conversations drop it too.
        if let Err(e) = self.sync_own_devices_in_conversations().await {
            tracing::warn!(error = %e, "the removed device was not taken off every conversation");
        }
        Ok(())
    }

    fn require_connection(&self) -> Result<std::sync::Arc<crate::link::Link>> {
        self.current_link().ok_or_else(|| {
            ClientError::Connection(
                "not connected to the relay (connect first, then try again)".into(),
            )
        })
    }

    /// Makes this new device one of a person's devices (`hushwire init --link CODE`): takes the
    /// provisioning message the other device left under `code` at the relay, creates the store
    /// at `path` with the shared identity and this device's own prekeys, pins the same relay
    /// key (and clinic), and registers. The code works once; if anything fails after the
    /// message was taken, the new store is removed and a new code is needed.
    /// [`ClientError::Linking`] for a code that is malformed, expired, already used or wrong.
    pub async fn join(
        path: &std::path::Path,
        secret: &Secret,
        options: ClientOptions,
        code: &str,
    ) -> Result<Self> {
        let code: LinkingCode = code
            .parse()
            .map_err(|e: hushwire::linking::LinkingError| ClientError::Linking(e.to_string()))?;
        if path.exists() {
            return Err(ClientError::AlreadyInitialized(path.to_owned()));
        }
        let url = RelayUrl::parse(code.relay_url())?;
        let (sealed, presented) = crate::link::take_provisioning(
            &url,
            &options.tls,
            code.slot(),
            options.request_timeout,
        )
        .await?;
        let sealed = sealed.ok_or_else(|| {
            ClientError::Linking(
                "the relay holds nothing under this code: it was used already, expired (codes \
                 last ten minutes) or mistyped; show a new one on your other device"
                    .into(),
            )
        })?;
        let provisioning =
            Provisioning::open(&sealed, &code).map_err(|e| ClientError::Linking(e.to_string()))?;
        if presented != RelayKey(provisioning.relay_key) {
            return Err(ClientError::Linking(
                "the relay at this address is not the one your other device uses (its key \
                 differs): nothing was created"
                    .into(),
            ));
        }
        let account = provisioning.into_account(now_ms() / 1000, &mut rng());
        let client = Self::create_with_account(path, secret, options, account).await?;
        let joined = async {
            // The relay key and the clinic first: a store a crash leaves unregistered still
            // pins the key the code carried, and `register` completes it.
            client
                .pin_relay_key(
                    RelayKey(provisioning.relay_key),
                    Some(code.relay_url()),
                    false,
                )
                .await?;
            client
                .install_provisioned_clinic(&provisioning.extra)
                .await?;
            let certificate = client.registration_certificate().await;
            client
                .register_with(
                    code.relay_url(),
                    None,
                    Pin::Expect(RelayKey(provisioning.relay_key)),
                    certificate.as_ref(),
                )
                .await
        }
        .await;
        if let Err(e) = joined {
            // The store holds the person's identity: erased, not merely deleted.
            if let Err(erase) = client.erase_store().await {
                tracing::warn!(error = %erase, "could not erase the unfinished store");
            }
            return Err(e);
        }
        Ok(client)
    }
}

/// What one of this person's other devices sent, as a sent copy carries it.
pub(super) struct SentCopy {
    /// The device it went to.
    pub(super) recipient: Address,
    /// The message.
    pub(super) id: crate::MessageId,
    /// When the other device sent it (Unix ms).
    pub(super) sent_at_ms: u64,
    /// Its content type.
    pub(super) content_type: hushwire::transcript::ContentType,
    /// Its content, wiped when dropped.
    pub(super) content: Zeroizing<Vec<u8>>,
}

impl Client {
    // ----- the receive pipeline's part ------------------------------------------------------

    /// For a device that wrote first: the person it belongs to if its identity is one known
    /// here — `Some(None)` for this device's own identity, `Some(Some(row))` for a person's
    /// (the fingerprint pins the identity key, and the prekey message proved it) — or `None`.
    pub(super) async fn person_with_identity(
        &self,
        c: &mut SqliteConnection,
        state: &super::State,
        sender: Address,
    ) -> Result<Option<Option<i64>>> {
        if sender.fingerprint == state.account.identity_key().fingerprint() {
            return Ok(Some(None));
        }
        Ok(self
            .person_by_fingerprint(c, &sender.fingerprint)
            .await?
            .map(Some))
    }

    /// Makes the device row for `sender`, a further device of `person` (`None`: this device's
    /// own person), unless the person's newest list (if one is held) leaves it out: then the
    /// reason it is refused.
    pub(super) async fn add_device_row(
        &self,
        c: &mut SqliteConnection,
        person: Option<i64>,
        sender: Address,
        identity: &IdentityKey,
    ) -> Result<std::result::Result<i64, String>> {
        if let Some(list) = self.held_list(c, &sender.fingerprint).await?
            && !list.contains(sender.device_id)
        {
            // Device numbers are never reused and always grow (`link_device`): a number above
            // every listed one is a device linked after the list held here, not a removed one
            // (the relay refuses removed devices anyway). Accepted, and the person's list is
            // read again at once: a newer list that leaves it out drops it (§8.6). Refusing
            // it would lose a new phone's first message for good.
            let newer = list.devices().iter().all(|d| *d < sender.device_id);
            if !newer {
                return Ok(Err(format!(
                    "device {} is not on its person's device list (sequence {})",
                    sender.device_id,
                    list.sequence()
                )));
            }
            self.request_clinic_check();
        }
        Ok(Ok(self
            .insert_device_row(c, person, sender, identity)
            .await?))
    }

    /// Makes the device row of `address`, a device of `person` (`None`: this device's own
    /// person) with `identity`, and records it in the in-memory map (reloaded if the
    /// transaction fails).
    async fn insert_device_row(
        &self,
        c: &mut SqliteConnection,
        person: Option<i64>,
        address: Address,
        identity: &IdentityKey,
    ) -> Result<i64> {
        let record = ContactRecord {
            name: format!("device {}", address.device_id),
            fingerprint: address.fingerprint.0,
            device_id: address.device_id,
            identity: Some(identity.to_bytes()),
            verified: false,
            identity_changed: false,
            added_at_ms: now_ms(),
        };
        let id = self.insert_contact(c, &record).await?;
        let row = DeviceRow {
            person_id: person,
            device_id: address.device_id,
        };
        store::put_device_row(c, id, row).await?;
        if let Ok(mut map) = self.inner.device_rows.lock() {
            map.insert(id, row);
        }
        Ok(id)
    }

    /// Records what another of this person's devices sent (`from`: its row): in the
    /// transcript of the person it went to, as sent by this person, once per message id. A
    /// recipient not known here becomes a contact, as a stranger who writes first does.
    pub(super) async fn record_sent_copy(
        &self,
        c: &mut SqliteConnection,
        account: &hushwire::Account,
        from: i64,
        copy: SentCopy,
        now: u64,
        events: &mut Vec<crate::Event>,
    ) -> Result<()> {
        let person = match self.find_by_address(c, copy.recipient).await? {
            Some((id, _)) => match self.person_of(id) {
                Some(person) => person,
                // A copy of a message to one of our own devices: Hushwire sends none.
                None => return Ok(()),
            },
            None => match self
                .person_by_fingerprint(c, &copy.recipient.fingerprint)
                .await?
            {
                Some(person) => person,
                // A copy of a message to this very person: Hushwire sends none.
                None if copy.recipient.fingerprint == account.identity_key().fingerprint() => {
                    return Ok(());
                }
                None => {
                    let name = format!("unknown-{}", copy.recipient.short());
                    let record = ContactRecord {
                        name: name.clone(),
                        fingerprint: copy.recipient.fingerprint.0,
                        device_id: copy.recipient.device_id,
                        identity: None,
                        verified: false,
                        identity_changed: false,
                        added_at_ms: now,
                    };
                    let id = self.insert_contact(c, &record).await?;
                    events.push(crate::Event::NewContact {
                        contact: ContactId(id),
                        name,
                    });
                    id
                }
            },
        };
        // Sent again (a resend after a reset): recorded once.
        if !store::mark_message_seen(c, person, &copy.id.0).await? {
            return Ok(());
        }
        self.append_transcript(
            c,
            account,
            person,
            &hushwire::transcript::TranscriptRecord {
                direction: hushwire::transcript::Direction::Sent,
                sender: account.identity_key().fingerprint(),
                message_id: copy.id.0,
                sent_at_ms: copy.sent_at_ms,
                received_at_ms: now,
                content_type: copy.content_type,
                content: copy.content.to_vec(),
            },
        )
        .await?;
        let contact_name = self.load_contact(c, person).await?.name;
        events.push(crate::Event::SentByOtherDevice {
            message: crate::ReceivedMessage {
                contact: ContactId(person),
                contact_name,
                id: copy.id,
                sent_at_ms: copy.sent_at_ms,
                received_at_ms: now,
                content_type: copy.content_type,
                content: copy.content,
            },
            device_id: self.device_row(from).map_or(0, |r| r.device_id),
        });
        Ok(())
    }

    /// The live person (not a device row) whose identity has this fingerprint, if any.
    pub(super) async fn person_by_fingerprint(
        &self,
        c: &mut SqliteConnection,
        fingerprint: &Fingerprint,
    ) -> Result<Option<i64>> {
        let removed = self.removed_contacts(c).await?;
        Ok(self
            .all_contacts(c)
            .await?
            .into_iter()
            .find(|(id, r)| r.fingerprint == fingerprint.0 && !removed.contains(id))
            .map(|(id, _)| id))
    }
}
