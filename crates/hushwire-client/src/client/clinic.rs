//! Clinics (`docs/client.md` §8): the clinic this device pinned (its signed link), this
//! device's own agent certificate, the newest revocation list, the certificates of contacts,
//! and remote wipe.
//!
//! A contact is a *verified agent* when the relay serves a certificate for its identity that
//! verifies under the pinned organization key, now, against the newest revocation list this
//! device holds. The relay is not trusted with any of it: it can withhold a certificate (the
//! contact then shows as a patient) but cannot forge one, and it can withhold a new revocation
//! list but cannot roll one back (a list replaces the stored one only with a higher sequence).

use std::collections::HashMap;

use hushwire::proto::clinic::{
    AgentCertificate, CertificateError, ClinicLink, RevocationList, Role, Roles, WipeCommand,
    is_newer,
};
use hushwire::proto::codec::Codec as _;
use hushwire::proto::relay::{ErrorCode, FrameBody};
use serde::{Deserialize, Serialize};
use sqlx::SqliteConnection;

use crate::address::Address;
use crate::contact::{ContactId, ContactRecord};
use crate::error::{ClientError, Result};
use crate::event::Event;
use crate::link::Link;
use crate::os::{now_ms, rng};
use crate::store;

use super::{Client, Halt, State};

/// The sealed value of the `clinic` row (purpose `clinic`, empty context): canonical encodings
/// of the signed structures.
#[derive(Clone, Default, Serialize, Deserialize)]
struct ClinicRecord {
    link: Vec<u8>,
    own_certificate: Option<Vec<u8>>,
    revocations: Option<Vec<u8>>,
}

/// The pinned clinic, decoded (kept in the client's state).
#[derive(Clone)]
pub(super) struct Clinic {
    link: ClinicLink,
    own_certificate: Option<AgentCertificate>,
    revocations: Option<RevocationList>,
}

impl Clinic {
    /// The pinned clinic's link.
    pub(super) fn link(&self) -> &ClinicLink {
        &self.link
    }

    /// This device's own certificate, if it is staff of the clinic.
    pub(super) fn own_certificate(&self) -> Option<&AgentCertificate> {
        self.own_certificate.as_ref()
    }

    /// The newest revocation list held (verified when stored).
    pub(super) fn revocations(&self) -> Option<&RevocationList> {
        self.revocations.as_ref()
    }

    fn record(&self) -> ClinicRecord {
        ClinicRecord {
            link: self.link.to_bytes(),
            own_certificate: self.own_certificate.as_ref().map(|c| c.to_bytes()),
            revocations: self.revocations.as_ref().map(|l| l.to_bytes()),
        }
    }

    fn from_record(r: &ClinicRecord) -> Result<Self> {
        let bad = || ClientError::CorruptStore("clinic");
        Ok(Self {
            link: ClinicLink::from_bytes(&r.link).map_err(|_| bad())?,
            own_certificate: match &r.own_certificate {
                Some(b) => Some(AgentCertificate::from_bytes(b).map_err(|_| bad())?),
                None => None,
            },
            revocations: match &r.revocations {
                Some(b) => Some(RevocationList::from_bytes(b).map_err(|_| bad())?),
                None => None,
            },
        })
    }
}

/// The sealed value of a `contact_certificates` row (purpose `contact certificate`, context the
/// contact id): what the relay served for the identity with this fingerprint.
#[derive(Clone, Serialize, Deserialize)]
struct CertRecord {
    fingerprint: [u8; 32],
    certificate: Option<Vec<u8>>,
    fetched_at_ms: u64,
}

/// Whether a contact is a verified agent of the pinned clinic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentStatus {
    /// Not known: no clinic is pinned, or the relay was not asked yet.
    Unchecked,
    /// The relay holds no certificate for the contact: a patient (shown as any contact).
    NotAnAgent,
    /// The contact's certificate verifies under the pinned clinic. Both names come from signed
    /// data (and passed `clinic::check_name`), yet are shown escaped like any peer text.
    Verified {
        /// The agent's certified name.
        name: String,
        /// The clinic's name, from its signed link.
        clinic: String,
        /// The certified roles.
        roles: Roles,
    },
    /// The contact presents a certificate that does not verify: nothing is sent to it and its
    /// messages are shown as not verified.
    Refused(CertificateError),
}

/// The pinned clinic as [`Client::clinic`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClinicInfo {
    /// The clinic's name, from its signed link.
    pub name: String,
    /// The organization key's fingerprint (64 hex digits): compare it with the clinic's.
    pub org_fingerprint: String,
    /// The clinic's relay, from its link.
    pub relay_url: String,
    /// The link itself (`hushwire-clinic:…`).
    pub link: String,
    /// This device's own certificate, if it is clinic staff.
    pub own_certificate: Option<AgentCertificate>,
    /// Whether this device's own certificate verifies now (if it has one).
    pub own_certificate_status: Option<core::result::Result<(), CertificateError>>,
    /// The sequence number of the newest revocation list held, if any.
    pub revocation_sequence: Option<u64>,
    /// The serials that list revokes.
    pub revoked_serials: Vec<u64>,
}

fn now_s() -> u64 {
    now_ms() / 1000
}

/// The status of one contact, from the pinned clinic and what the relay served.
fn status_of(
    clinic: Option<&Clinic>,
    record: Option<&CertRecord>,
    contact: &ContactRecord,
    now: u64,
) -> AgentStatus {
    let Some(clinic) = clinic else {
        return AgentStatus::Unchecked;
    };
    let Some(record) = record.filter(|r| r.fingerprint == contact.fingerprint) else {
        return AgentStatus::Unchecked;
    };
    let Some(bytes) = &record.certificate else {
        return AgentStatus::NotAnAgent;
    };
    let Ok(cert) = AgentCertificate::from_bytes(bytes) else {
        return AgentStatus::Unchecked;
    };
    if cert.subject().fingerprint().0 != contact.fingerprint
        || contact
            .identity_key()
            .is_some_and(|known| known != *cert.subject())
    {
        return AgentStatus::Refused(CertificateError::WrongSubject);
    }
    match cert.verify(clinic.link.org(), now, clinic.revocations.as_ref()) {
        Ok(()) => AgentStatus::Verified {
            name: cert.name().to_owned(),
            clinic: clinic.link.name().to_owned(),
            roles: cert.roles(),
        },
        Err(e) => AgentStatus::Refused(e),
    }
}

/// Whether a status should be asked of the relay again at a connection: never asked, or a
/// certificate that may have been renewed meanwhile.
fn worth_refetching(status: &AgentStatus) -> bool {
    matches!(
        status,
        AgentStatus::Unchecked
            | AgentStatus::Refused(
                CertificateError::Expired { .. } | CertificateError::NotYetValid { .. }
            )
    )
}

impl Client {
    // ----- loading and saving ---------------------------------------------------------------

    pub(super) async fn load_clinic(&self, c: &mut SqliteConnection) -> Result<Option<Clinic>> {
        match store::get_clinic(c).await? {
            Some(sealed) => {
                let record: ClinicRecord = self.inner.vault.open_value("clinic", b"", &sealed)?;
                Clinic::from_record(&record).map(Some)
            }
            None => Ok(None),
        }
    }

    async fn save_clinic(&self, c: &mut SqliteConnection, clinic: &Clinic) -> Result<()> {
        let sealed = self
            .inner
            .vault
            .seal_value("clinic", b"", &clinic.record(), &mut rng());
        store::put_clinic(c, &sealed).await
    }

    async fn load_cert_record(
        &self,
        c: &mut SqliteConnection,
        contact_id: i64,
    ) -> Result<Option<CertRecord>> {
        match store::get_contact_certificate(c, contact_id).await? {
            Some(sealed) => Ok(Some(self.inner.vault.open_value(
                "contact certificate",
                &contact_id.to_be_bytes(),
                &sealed,
            )?)),
            None => Ok(None),
        }
    }

    /// The agent status of a contact record (the caller holds the state lock).
    pub(super) async fn status_with(
        &self,
        c: &mut SqliteConnection,
        state: &State,
        contact_id: i64,
        contact: &ContactRecord,
    ) -> Result<AgentStatus> {
        if state.clinic.is_none() {
            return Ok(AgentStatus::Unchecked);
        }
        let record = self.load_cert_record(c, contact_id).await?;
        Ok(status_of(
            state.clinic.as_ref(),
            record.as_ref(),
            contact,
            now_s(),
        ))
    }

    /// Every live contact's status.
    async fn all_statuses(&self) -> Result<HashMap<i64, AgentStatus>> {
        let state = self.inner.state.lock().await;
        let mut c = self.inner.db.acquire().await?;
        let mut out = HashMap::new();
        for (id, record) in self.all_contacts(&mut c).await? {
            let status = self.status_with(&mut c, &state, id, &record).await?;
            out.insert(id, status);
        }
        Ok(out)
    }

    /// Emits `AgentStatusChanged` for every contact whose status differs from `before`.
    async fn emit_status_changes(&self, before: &HashMap<i64, AgentStatus>) -> Result<()> {
        for (id, status) in self.all_statuses().await? {
            if before.get(&id) == Some(&status) {
                continue;
            }
            let fresh = self
                .inner
                .announced_statuses
                .lock()
                .map(|mut announced| announced.insert(id, status.clone()) != Some(status.clone()))
                .unwrap_or(true);
            if fresh {
                self.emit(Event::AgentStatusChanged {
                    contact: ContactId(id),
                    status,
                });
            }
        }
        Ok(())
    }

    // ----- the pinned clinic ----------------------------------------------------------------

    /// The pinned clinic, if any.
    pub async fn clinic(&self) -> Option<ClinicInfo> {
        let state = self.inner.state.lock().await;
        let clinic = state.clinic.as_ref()?;
        let now = now_s();
        Some(ClinicInfo {
            name: clinic.link.name().to_owned(),
            org_fingerprint: clinic.link.org().fingerprint().to_string(),
            relay_url: clinic.link.relay_url().to_owned(),
            link: clinic.link.to_string(),
            own_certificate: clinic.own_certificate.clone(),
            own_certificate_status: clinic
                .own_certificate
                .as_ref()
                .map(|cert| cert.verify(clinic.link.org(), now, clinic.revocations.as_ref())),
            revocation_sequence: clinic.revocations.as_ref().map(RevocationList::sequence),
            revoked_serials: clinic
                .revocations
                .as_ref()
                .map(|l| l.serials().to_vec())
                .unwrap_or_default(),
        })
    }

    /// Checks that `link` may be pinned on this device: no other clinic pinned, and this
    /// device's own certificate (if any) from the same clinic.
    fn check_link(state: &State, link: &ClinicLink) -> Result<()> {
        if let Some(pinned) = &state.clinic
            && pinned.link.org() != link.org()
        {
            return Err(ClientError::OtherClinicPinned {
                pinned: pinned.link.name().to_owned(),
                offered: link.name().to_owned(),
            });
        }
        Ok(())
    }

    /// Pins a clinic (`hushwire clinic add`): its organization key, name and relay, from its
    /// signed link. Adding the same clinic's link again updates its name and relay; another
    /// clinic's link is refused ([`ClientError::OtherClinicPinned`]). Contacts are checked
    /// against it at the next connection. Does not register: see [`Client::register`] with
    /// [`ClinicInfo::relay_url`].
    pub async fn add_clinic(&self, link: &ClinicLink) -> Result<()> {
        let before = self.all_statuses().await?;
        {
            let mut state = self.inner.state.lock().await;
            Self::check_link(&state, link)?;
            let clinic = match &state.clinic {
                Some(pinned) => Clinic {
                    link: link.clone(),
                    ..pinned.clone()
                },
                None => Clinic {
                    link: link.clone(),
                    own_certificate: None,
                    revocations: None,
                },
            };
            let mut tx = store::begin(&self.inner.db).await?;
            self.save_clinic(&mut tx, &clinic).await?;
            tx.commit().await?;
            state.clinic = Some(clinic);
        }
        self.request_clinic_check();
        self.emit_status_changes(&before).await
    }

    /// Checks a certificate offered as this device's own: for this identity, valid now, and
    /// from the pinned clinic (or from the clinic of `link`, about to be pinned).
    fn check_own_certificate(
        state: &State,
        certificate: &AgentCertificate,
        link: Option<&ClinicLink>,
    ) -> Result<()> {
        if certificate.subject() != state.account.identity_key() {
            return Err(ClientError::CertificateNotOwn {
                name: certificate.name().to_owned(),
            });
        }
        let org = link
            .map(ClinicLink::org)
            .or_else(|| state.clinic.as_ref().map(|c| c.link.org()))
            .ok_or(ClientError::NoClinic)?;
        let revocations = state.clinic.as_ref().and_then(|c| c.revocations.as_ref());
        certificate
            .verify(org, now_s(), revocations)
            .map_err(ClientError::OwnCertificateRefused)
    }

    /// Registers this device as clinic staff: like [`Client::register`], with `certificate`
    /// (this identity's, from the clinic's administrator) in the registration, so the relay
    /// knows the device's role. With `link`, the clinic is pinned too (else one must be pinned
    /// already). Everything is checked before anything is sent, and nothing is stored unless the
    /// relay accepted the registration.
    pub async fn register_agent(
        &self,
        relay_url: &str,
        invite: Option<&str>,
        certificate: &AgentCertificate,
        link: Option<&ClinicLink>,
    ) -> Result<()> {
        let pin = {
            let state = self.inner.state.lock().await;
            if let Some(link) = link {
                Self::check_link(&state, link)?;
            }
            Self::check_own_certificate(&state, certificate, link)?;
            state
                .relay_pin
                .as_ref()
                .map_or(crate::link::Pin::Any, |p| crate::link::Pin::Expect(p.key()))
        };
        self.register_with(relay_url, invite, pin, Some(certificate))
            .await?;
        self.store_own_certificate(certificate, link).await
    }

    async fn store_own_certificate(
        &self,
        certificate: &AgentCertificate,
        link: Option<&ClinicLink>,
    ) -> Result<()> {
        let before = self.all_statuses().await?;
        {
            let mut state = self.inner.state.lock().await;
            let mut clinic = match (&state.clinic, link) {
                (Some(pinned), Some(link)) => Clinic {
                    link: link.clone(),
                    ..pinned.clone()
                },
                (Some(pinned), None) => pinned.clone(),
                (None, Some(link)) => Clinic {
                    link: link.clone(),
                    own_certificate: None,
                    revocations: None,
                },
                (None, None) => return Err(ClientError::NoClinic),
            };
            clinic.own_certificate = Some(certificate.clone());
            let mut tx = store::begin(&self.inner.db).await?;
            self.save_clinic(&mut tx, &clinic).await?;
            tx.commit().await?;
            state.clinic = Some(clinic);
        }
        self.request_clinic_check();
        self.emit_status_changes(&before).await
    }

    /// Installs a renewed certificate (`hushwire certificate install`): checked like at
    /// registration, sent to the relay (`UpdateCertificate`), and stored once the relay took it.
    /// Needs a connection ([`Client::connect`]).
    pub async fn install_certificate(&self, certificate: &AgentCertificate) -> Result<()> {
        {
            let state = self.inner.state.lock().await;
            Self::check_own_certificate(&state, certificate, None)?;
        }
        let link = self.require_link()?;
        match link
            .call(FrameBody::UpdateCertificate(Box::new(certificate.clone())))
            .await?
        {
            FrameBody::Ok => {}
            _ => return Err(unexpected()),
        }
        self.store_own_certificate(certificate, None).await
    }

    /// This device's own agent certificate, if any.
    pub async fn own_certificate(&self) -> Option<AgentCertificate> {
        let state = self.inner.state.lock().await;
        state.clinic.as_ref()?.own_certificate.clone()
    }

    /// What a new device of this person takes over from this one when it is linked
    /// (`devices.rs`): the pinned clinic, this device's certificate and the newest revocation
    /// list, as the sealed `clinic` row holds them (postcard); empty without a clinic.
    pub(super) fn clinic_provisioning_data(&self, state: &State) -> Vec<u8> {
        state
            .clinic
            .as_ref()
            .and_then(|c| postcard::to_allocvec(&c.record()).ok())
            .unwrap_or_default()
    }

    /// Installs what [`Client::clinic_provisioning_data`] handed over (nothing if empty). It
    /// came sealed from the person's own device under the linking code, and its link and
    /// certificate are signed by the organization key, checked again as they are decoded.
    pub(super) async fn install_provisioned_clinic(&self, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let record: ClinicRecord = postcard::from_bytes(data).map_err(|_| {
            ClientError::Linking("the linking message's clinic part is damaged".into())
        })?;
        let clinic = Clinic::from_record(&record).map_err(|_| {
            ClientError::Linking("the linking message's clinic part is damaged".into())
        })?;
        let mut state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        self.save_clinic(&mut tx, &clinic).await?;
        tx.commit().await?;
        state.clinic = Some(clinic);
        Ok(())
    }

    /// The agent certificate of this device to send at a registration (the stored one).
    pub(super) async fn registration_certificate(&self) -> Option<AgentCertificate> {
        self.own_certificate().await
    }

    pub(super) fn require_link(&self) -> Result<std::sync::Arc<Link>> {
        self.current_link().ok_or_else(|| {
            ClientError::Connection(
                "not connected to the relay (connect first, then try again)".into(),
            )
        })
    }

    // ----- revocation lists -----------------------------------------------------------------

    /// Takes a revocation list (from the relay, or handed over by the clinic): kept if it is
    /// signed by the pinned clinic and newer than the stored one. Returns whether it replaced
    /// the stored list; an older or equal sequence is ignored (`Ok(false)`: a rollback never
    /// replaces a newer list). [`ClientError::ForeignRevocationList`] if another key signed it.
    pub async fn import_revocation_list(&self, list: &RevocationList) -> Result<bool> {
        let before = self.all_statuses().await?;
        {
            let mut state = self.inner.state.lock().await;
            let Some(clinic) = &state.clinic else {
                return Err(ClientError::NoClinic);
            };
            if !list.verify(clinic.link.org()) {
                return Err(ClientError::ForeignRevocationList);
            }
            if !is_newer(
                clinic.revocations.as_ref().map(RevocationList::sequence),
                list.sequence(),
            ) {
                if clinic
                    .revocations
                    .as_ref()
                    .is_some_and(|held| held.sequence() > list.sequence())
                {
                    tracing::warn!(
                        offered = list.sequence(),
                        "an older revocation list was offered and ignored"
                    );
                }
                return Ok(false);
            }
            let mut clinic = clinic.clone();
            let old = clinic.revocations.replace(list.clone());
            let mut tx = store::begin(&self.inner.db).await?;
            self.save_clinic(&mut tx, &clinic).await?;
            tx.commit().await?;
            state.clinic = Some(clinic);
            drop(state);
            self.tell_unanswered_conversations(old.as_ref(), list);
        }
        self.emit_status_changes(&before).await?;
        Ok(true)
    }

    /// After a newer revocation list was taken: each conversation held here whose agents the
    /// new list all revokes (and the old one did not) is announced as without a verified agent
    /// and back in the clinic's queue (`conversations.md` §4.3 rule 9, §5.4).
    fn tell_unanswered_conversations(&self, old: Option<&RevocationList>, new: &RevocationList) {
        let unanswered: Vec<_> = {
            let convs = match self.inner.conversations.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            convs
                .values()
                .filter(|c| c.log.agents_all_revoked(Some(new)) && !c.log.agents_all_revoked(old))
                .map(|c| c.log.conversation())
                .collect()
        };
        for conversation in unanswered {
            self.emit(crate::Event::ConversationUnanswered { conversation });
        }
    }

    /// Fetches the clinic's newest revocation list from the relay and keeps it if it is newer
    /// than the one held (`clinic.md` §4). Whether a newer list is now held; a relay that
    /// cannot answer (or no connection) is `false`, logged.
    pub(super) async fn refresh_revocation_list(&self) -> bool {
        let Some(link) = self.current_link() else {
            return false;
        };
        match link.call(FrameBody::FetchRevocationList).await {
            Ok(FrameBody::RevocationList(Some(list))) => {
                match self.import_revocation_list(&list).await {
                    Ok(newer) => newer,
                    Err(e) => {
                        tracing::warn!(error = %e, "the relay's revocation list was not taken");
                        false
                    }
                }
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "the relay did not serve a revocation list");
                false
            }
        }
    }

    /// Publishes a revocation list to the relay (admin devices only; the relay refuses others
    /// with `Forbidden`, and a list not newer than its own with `ListRefused`), then keeps it.
    /// Needs a connection.
    pub async fn publish_revocation_list(&self, list: &RevocationList) -> Result<()> {
        {
            let state = self.inner.state.lock().await;
            let clinic = state.clinic.as_ref().ok_or(ClientError::NoClinic)?;
            if !list.verify(clinic.link.org()) {
                return Err(ClientError::ForeignRevocationList);
            }
        }
        let link = self.require_link()?;
        match link
            .call(FrameBody::PublishRevocationList(list.clone()))
            .await?
        {
            FrameBody::Ok => {}
            _ => return Err(unexpected()),
        }
        self.import_revocation_list(list).await?;
        Ok(())
    }

    // ----- contacts' certificates -----------------------------------------------------------

    /// Whether the contact is a verified agent of the pinned clinic.
    pub async fn agent_status(&self, contact: ContactId) -> Result<AgentStatus> {
        let state = self.inner.state.lock().await;
        let mut c = self.inner.db.acquire().await?;
        let record = self.load_contact(&mut c, contact.0).await?;
        self.status_with(&mut c, &state, contact.0, &record).await
    }

    /// Asks the relay for a contact's certificate and stores the answer.
    pub(super) async fn fetch_certificate(&self, link: &Link, contact_id: i64) -> Result<()> {
        let fingerprint = {
            let mut c = self.inner.db.acquire().await?;
            self.load_contact(&mut c, contact_id).await?.fingerprint
        };
        let certificate = match link.call(FrameBody::FetchCertificate(fingerprint)).await? {
            FrameBody::Certificate(c) => c,
            _ => return Err(unexpected()),
        };
        let record = CertRecord {
            fingerprint,
            certificate: certificate.map(|c| c.to_bytes()),
            fetched_at_ms: now_ms(),
        };
        let sealed = self.inner.vault.seal_value(
            "contact certificate",
            &contact_id.to_be_bytes(),
            &record,
            &mut rng(),
        );
        let _state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        store::put_contact_certificate(&mut tx, contact_id, &sealed).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The clinic's part of a connection (`docs/client.md` §8.3): the newest revocation list,
    /// then the certificates of contacts never checked (and of those whose certificate expired,
    /// in case it was renewed), or of every contact if `everyone`. A relay that cannot answer
    /// does not end the connection: the statuses stay as they were.
    pub(super) async fn clinic_upkeep(&self, link: &Link, at_connection: bool) -> Result<()> {
        if self.inner.state.lock().await.clinic.is_none() {
            return Ok(());
        }
        let before = self.all_statuses().await?;
        if at_connection {
            match link.call(FrameBody::FetchRevocationList).await {
                Ok(FrameBody::RevocationList(Some(list))) => {
                    match self.import_revocation_list(&list).await {
                        Ok(_) => {}
                        Err(ClientError::ForeignRevocationList) => {
                            tracing::warn!("the relay served another clinic's revocation list");
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(_) => {}
                Err(e @ (ClientError::Timeout | ClientError::Connection(_))) => return Err(e),
                Err(e) => tracing::warn!(error = %e, "the relay did not serve a revocation list"),
            }
        }
        let removed = {
            let mut c = self.inner.db.acquire().await?;
            self.removed_contacts(&mut c).await?
        };
        for (id, status) in &before {
            if removed.contains(id) || !worth_refetching(status) {
                continue;
            }
            match self.fetch_certificate(link, *id).await {
                Ok(()) => {}
                Err(e @ (ClientError::Timeout | ClientError::Connection(_))) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "the relay did not serve a contact's certificate");
                }
            }
        }
        self.emit_status_changes(&before).await
    }

    /// Asks the connection to check contacts never checked (a contact was added or wrote
    /// first); `sync` waits for it.
    pub(super) fn request_clinic_check(&self) {
        self.inner
            .clinic_pending
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.clinic_check.notify_one();
    }

    /// Refuses sending to a contact whose certificate does not verify.
    pub(super) async fn check_sendable(
        &self,
        c: &mut SqliteConnection,
        state: &State,
        contact_id: i64,
        record: &ContactRecord,
    ) -> Result<()> {
        if let AgentStatus::Refused(reason) = self.status_with(c, state, contact_id, record).await?
        {
            return Err(ClientError::AgentNotVerified {
                contact: record.name.clone(),
                reason,
            });
        }
        Ok(())
    }

    /// Before a message is encrypted for a contact (`docs/client.md` §8.2): a contact never checked is checked
    /// now, and one whose certificate does not verify gets nothing.
    pub(super) async fn check_before_encrypting(&self, link: &Link, contact_id: i64) -> Result<()> {
        // A device row stands for its person, whose certificate it is; this device's own
        // other devices are this person.
        let Some(contact_id) = self.person_of(contact_id) else {
            return Ok(());
        };
        let unchecked = {
            let state = self.inner.state.lock().await;
            if state.clinic.is_none() {
                return Ok(());
            }
            let mut c = self.inner.db.acquire().await?;
            let record = self.load_contact(&mut c, contact_id).await?;
            self.status_with(&mut c, &state, contact_id, &record)
                .await?
                == AgentStatus::Unchecked
        };
        if unchecked {
            let before = self.all_statuses().await?;
            if let Err(e) = self.fetch_certificate(link, contact_id).await {
                tracing::warn!(error = %e, "could not fetch a contact's certificate");
            }
            self.emit_status_changes(&before).await?;
        }
        let state = self.inner.state.lock().await;
        let mut c = self.inner.db.acquire().await?;
        let record = self.load_contact(&mut c, contact_id).await?;
        self.check_sendable(&mut c, &state, contact_id, &record)
            .await
    }

    // ----- remote wipe ----------------------------------------------------------------------

    /// Orders a device wiped (`hushwire wipe`): signs a wipe command with this device's
    /// identity and its admin certificate and hands it to the relay, which gives it to the
    /// device at its next login and refuses the device from then on. Checked first: this
    /// device's certificate must verify now and grant the admin role. Needs a connection.
    pub async fn wipe_device(&self, target: Address) -> Result<()> {
        let command = {
            let state = self.inner.state.lock().await;
            let own = Address {
                fingerprint: state.account.identity_key().fingerprint(),
                device_id: state.account.device_id(),
            };
            if target == own {
                return Err(ClientError::WipeTargetRefused("that is this device"));
            }
            let clinic = state.clinic.as_ref().ok_or(ClientError::NoClinic)?;
            let certificate = clinic
                .own_certificate
                .clone()
                .ok_or(ClientError::NoOwnCertificate)?;
            let now = now_s();
            certificate
                .verify_role(
                    clinic.link.org(),
                    now,
                    clinic.revocations.as_ref(),
                    Role::Admin,
                )
                .map_err(ClientError::OwnCertificateRefused)?;
            let mut nonce = [0u8; 16];
            rand_core::Rng::fill_bytes(&mut rng(), &mut nonce);
            WipeCommand::issue(
                state.account.identity(),
                certificate,
                target.to_device_address(),
                now,
                nonce,
            )
        };
        let link = self.require_link()?;
        match link.call(FrameBody::Wipe(Box::new(command))).await {
            Ok(FrameBody::Ok) => Ok(()),
            Ok(_) => Err(unexpected()),
            // This device's admin certificate was checked above: a refusal here is about the
            // target (clinic.md §6).
            Err(ClientError::Relay(ErrorCode::Forbidden)) => Err(ClientError::WipeTargetRefused(
                "the device is not a staff device of the clinic",
            )),
            Err(ClientError::Relay(ErrorCode::UnknownDevice)) => Err(
                ClientError::WipeTargetRefused("no such device is registered at the relay"),
            ),
            Err(e) => Err(e),
        }
    }

    /// The relay answered the login with a wipe order: erase the store if it verifies
    /// (§8.5), else erase nothing. Returns the error that stops the client either way.
    pub(super) async fn handle_wipe(&self, command: &WipeCommand) -> ClientError {
        let verdict = {
            let state = self.inner.state.lock().await;
            let own = Address {
                fingerprint: state.account.identity_key().fingerprint(),
                device_id: state.account.device_id(),
            };
            match &state.clinic {
                None => Err(
                    "no clinic is pinned on this device, so no clinic can order it wiped"
                        .to_owned(),
                ),
                Some(clinic) => command
                    .verify_for(
                        own.to_device_address(),
                        clinic.link.org(),
                        now_s(),
                        clinic.revocations.as_ref(),
                    )
                    .map(|()| {
                        (
                            command.issuer().name().to_owned(),
                            clinic.link.name().to_owned(),
                        )
                    })
                    .map_err(|e| e.to_string()),
            }
        };
        let halt = match verdict {
            Err(reason) => {
                tracing::error!(%reason, "the relay handed over a wipe order that does not verify: nothing erased");
                Halt::WipeRefused(reason)
            }
            Ok((by, clinic)) => {
                if let Err(e) = self.erase_store().await {
                    tracing::error!(error = %e, "a verified wipe order could not erase every file");
                    return ClientError::Io(e);
                }
                tracing::warn!("a clinic administrator wiped this device: the store is erased");
                self.emit(Event::Wiped {
                    by: by.clone(),
                    clinic: clinic.clone(),
                });
                Halt::Wiped { by, clinic }
            }
        };
        let error = halt.error();
        if let Ok(mut halted) = self.inner.halted.lock() {
            *halted = Some(halt);
        }
        error
    }

    /// Erases every file of the store: the database closes, then each file of it in its
    /// directory — the database, its write-ahead log and shared-memory index, the lock file,
    /// and the stores a restore set aside (`<store>.replaced-<time>` and their logs): every
    /// name that is the store's followed by nothing, `-` or `.` — is overwritten with zeros,
    /// flushed, and deleted. The client is unusable afterwards.
    pub(super) async fn erase_store(&self) -> std::io::Result<()> {
        self.inner.db.close().await;
        let path = &self.inner.path;
        let mut files = vec![path.clone()];
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
            let dir = if dir.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                dir
            };
            let name = name.to_string_lossy().into_owned();
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let other = entry.file_name().to_string_lossy().into_owned();
                let belongs = other
                    .strip_prefix(&name)
                    .is_some_and(|rest| rest.starts_with('-') || rest.starts_with('.'));
                if belongs && entry.file_type()?.is_file() {
                    files.push(entry.path());
                }
            }
        }
        for file in files {
            overwrite_and_remove(&file)?;
        }
        Ok(())
    }
}

/// Overwrites a file with zeros, flushes it to disk, and removes it. A missing file is fine.
fn overwrite_and_remove(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    {
        let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
        let chunk = 64 * 1024u64;
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk);
            file.write_all(&vec![0u8; usize::try_from(n).unwrap_or(0)])?;
            left -= n;
        }
        file.sync_all()?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn unexpected() -> ClientError {
    ClientError::Connection("the relay sent an unexpected answer".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use hushwire::Account;

    fn contact_for(account: &Account) -> ContactRecord {
        ContactRecord {
            name: "ada".into(),
            fingerprint: account.identity_key().fingerprint().0,
            device_id: 1,
            identity: None,
            verified: false,
            identity_changed: false,
            added_at_ms: 0,
        }
    }

    fn clinic_of(org: &SigningKey) -> Clinic {
        Clinic {
            link: ClinicLink::issue(org, "Lakeside Clinic", "ws://127.0.0.1:7700").unwrap(),
            own_certificate: None,
            revocations: None,
        }
    }

    #[test]
    fn statuses_follow_the_certificate_and_the_revocation_list() {
        let mut rng = rng();
        let org = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let agent = Account::new(1, 0, &mut rng);
        let contact = contact_for(&agent);
        let roles = Roles::of(&[Role::Agent]).unwrap();
        let cert = |signer: &SigningKey, serial| {
            AgentCertificate::issue(
                signer,
                serial,
                agent.identity_key().clone(),
                "Dr. Ada",
                roles,
                100,
                200,
            )
            .unwrap()
        };
        let record = |c: Option<&AgentCertificate>| CertRecord {
            fingerprint: contact.fingerprint,
            certificate: c.map(|c| c.to_bytes()),
            fetched_at_ms: 0,
        };
        let mut clinic = clinic_of(&org);
        let good = cert(&org, 1);
        assert_eq!(
            status_of(Some(&clinic), Some(&record(Some(&good))), &contact, 150),
            AgentStatus::Verified {
                name: "Dr. Ada".into(),
                clinic: "Lakeside Clinic".into(),
                roles
            }
        );
        assert_eq!(
            status_of(None, Some(&record(Some(&good))), &contact, 150),
            AgentStatus::Unchecked
        );
        assert_eq!(
            status_of(Some(&clinic), Some(&record(None)), &contact, 150),
            AgentStatus::NotAnAgent
        );
        assert_eq!(
            status_of(Some(&clinic), Some(&record(Some(&good))), &contact, 200),
            AgentStatus::Refused(CertificateError::Expired { not_after: 200 })
        );
        assert_eq!(
            status_of(
                Some(&clinic),
                Some(&record(Some(&cert(&other, 1)))),
                &contact,
                150
            ),
            AgentStatus::Refused(CertificateError::WrongClinic)
        );
        // A certificate the relay served for this fingerprint but naming someone else.
        let stranger = Account::new(1, 0, &mut rng);
        let theirs = AgentCertificate::issue(
            &org,
            2,
            stranger.identity_key().clone(),
            "Eve",
            roles,
            100,
            200,
        )
        .unwrap();
        assert_eq!(
            status_of(Some(&clinic), Some(&record(Some(&theirs))), &contact, 150),
            AgentStatus::Refused(CertificateError::WrongSubject)
        );
        clinic.revocations = Some(RevocationList::issue(&org, 1, 150, &[1]).unwrap());
        assert_eq!(
            status_of(Some(&clinic), Some(&record(Some(&good))), &contact, 150),
            AgentStatus::Refused(CertificateError::Revoked { serial: 1 })
        );
    }

    /// The relay checks wipe orders too, but the device trusts only its own check: a forged
    /// order, one from a non-admin, another clinic's, or one for another device erases nothing
    /// and leaves the store usable; a verified one erases every file.
    #[tokio::test]
    async fn only_a_verified_wipe_order_erases_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target.db");
        let options = crate::ClientOptions {
            kdf: crate::KdfParams::INSECURE_FOR_TESTS,
            ..crate::ClientOptions::default()
        };
        let secret = crate::Secret::passphrase("correct horse battery staple");
        let target = Client::create(&path, &secret, options.clone())
            .await
            .unwrap();
        // A store a restore set aside holds the same kind of data: it goes too. A file that
        // merely starts with the same letters is not the store's.
        let aside = dir.path().join("target.db.replaced-1700000000000");
        std::fs::write(&aside, b"an older copy of the store").unwrap();
        let unrelated = dir.path().join("target.dbx");
        std::fs::write(&unrelated, b"not the store's").unwrap();
        let org = SigningKey::from_bytes(&[7; 32]);
        let other_org = SigningKey::from_bytes(&[8; 32]);
        let own = target.address().await.to_device_address();
        let mut rng = rng();
        let admin = Account::new(1, 0, &mut rng);
        let now = now_s();
        let cert = |signer: &SigningKey, roles: &[Role]| {
            AgentCertificate::issue(
                signer,
                1,
                admin.identity_key().clone(),
                "Sam Admin",
                Roles::of(roles).unwrap(),
                now - 60,
                now + 3600,
            )
            .unwrap()
        };
        let order = |signer: &hushwire::IdentityKeyPair, c: AgentCertificate, to| {
            WipeCommand::issue(signer, c, to, now, [1; 16])
        };
        let admin_cert = cert(&org, &[Role::Admin]);
        // Before a clinic is pinned, nobody can order a wipe.
        let error = target
            .handle_wipe(&order(admin.identity(), admin_cert.clone(), own))
            .await;
        assert!(matches!(error, ClientError::WipeRefused(ref r) if r.contains("no clinic")));
        *target.inner.halted.lock().unwrap() = None;
        target
            .add_clinic(&ClinicLink::issue(&org, "Lakeside Clinic", "ws://127.0.0.1:1").unwrap())
            .await
            .unwrap();
        let intruder = Account::new(1, 0, &mut rng);
        let other_device = hushwire::proto::relay::DeviceAddress {
            fingerprint: own.fingerprint,
            device_id: own.device_id + 1,
        };
        let refused = [
            // Signed by someone else than the certificate's subject (a forgery).
            (
                order(intruder.identity(), admin_cert.clone(), own),
                "not signed by its issuer",
            ),
            // An agent, not an admin.
            (
                order(admin.identity(), cert(&org, &[Role::Agent]), own),
                "does not grant the admin role",
            ),
            // Another clinic's admin.
            (
                order(admin.identity(), cert(&other_org, &[Role::Admin]), own),
                "another clinic",
            ),
            // For another device.
            (
                order(admin.identity(), admin_cert.clone(), other_device),
                "another device",
            ),
        ];
        for (command, reason) in refused {
            match target.handle_wipe(&command).await {
                ClientError::WipeRefused(r) => assert!(r.contains(reason), "{r}"),
                other => panic!("expected WipeRefused, got {other:?}"),
            }
            *target.inner.halted.lock().unwrap() = None;
            assert!(path.exists() && aside.exists(), "nothing erased");
            assert!(target.clinic().await.is_some(), "the store still works");
        }
        match target
            .handle_wipe(&order(admin.identity(), admin_cert, own))
            .await
        {
            ClientError::Wiped { by, clinic } => {
                assert_eq!(by, "Sam Admin");
                assert_eq!(clinic, "Lakeside Clinic");
            }
            other => panic!("expected Wiped, got {other:?}"),
        }
        assert!(!path.exists());
        assert!(!aside.exists());
        assert!(unrelated.exists());
        assert!(!dir.path().join("target.db-wal").exists());
        assert!(!dir.path().join("target.db-shm").exists());
    }

    #[test]
    fn overwrite_and_remove_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"secret").unwrap();
        overwrite_and_remove(&path).unwrap();
        assert!(!path.exists());
        overwrite_and_remove(&path).unwrap();
    }
}
