//! Clinic conversations and the queue at the relay (`docs/conversations.md` §5.4): every queue
//! frame of §5.2 with the permissions of §5.4. Each membership change is verified with the
//! clients' own code (`MembershipLog::apply`) against the relay's clinic key, its stored
//! revocation list and the patient's stored device list, then stored with a compare-and-set on
//! the conversation's head epoch, so that across instances exactly one of two racing changes
//! (two claims) is stored. The relay learns only what §6 lists.

use std::sync::Arc;

use hushwire_proto::IdentityKey;
use hushwire_proto::audit::{AuditEvent, ConversationId};
use hushwire_proto::clinic::{DeviceList, RevocationList, Role};
use hushwire_proto::codec::Codec;
use hushwire_proto::conversation::queue::{
    ArchiveItem, MAX_ARCHIVE_ITEMS, MAX_CHANGES_PER_FRAME, MAX_ON_DUTY_DEVICES, MAX_QUEUE_ENTRIES,
    NoteEnvelope, QueueEntry, QueueFrame, QueueState,
};
use hushwire_proto::conversation::{
    ArchivePolicy, ChangeAction, MemberRole, MembershipChange, MembershipContext, MembershipLog,
};
use hushwire_proto::keys::Fingerprint;
use hushwire_proto::relay::{DeviceAddress, ErrorCode, Frame, FrameBody, OutgoingEnvelope};

use super::{Close, Connection, decode_stored, internal, now_secs};
use crate::audit_log::device_ref;
use crate::now_ms;
use crate::storage::{ConversationUpdate, Store, StoredConversation};

/// Conversations waiting in the queue (new or handed back) that one identity may be a member of
/// when it opens another (`docs/relay-protocol.md` §3.6): beyond, `OpenConversation` is
/// `RateLimited`. A claimed conversation does not count: it took an agent's attention.
const MAX_OPEN_PER_IDENTITY: u64 = 8;

/// The `retry_after_ms` of that refusal: an agent claims on a human's time scale.
const OPEN_RETRY_AFTER_MS: u32 = 60_000;

/// A stored history is re-read to rebuild the membership; longer ones are not served.
const MAX_HISTORY: u32 = 4096;

fn state_byte(state: QueueState) -> u8 {
    match state {
        QueueState::New => 1,
        QueueState::HandedBack => 2,
        QueueState::Claimed => 3,
        QueueState::Closed => 4,
    }
}

fn state_of(byte: u8) -> QueueState {
    match byte {
        1 => QueueState::New,
        2 => QueueState::HandedBack,
        3 => QueueState::Claimed,
        _ => QueueState::Closed,
    }
}

fn entry(c: &StoredConversation) -> QueueEntry {
    QueueEntry {
        conversation: ConversationId(c.id),
        state: state_of(c.state),
        opened_at: c.opened_at,
        waiting_since: c.waiting_since,
        epoch: c.head_epoch,
    }
}

fn queue_body(frame: QueueFrame) -> FrameBody {
    FrameBody::Queue(Box::new(frame))
}

/// A pushed frame (request id 0), encoded.
fn push_frame(frame: QueueFrame) -> Vec<u8> {
    Frame {
        request_id: 0,
        body: queue_body(frame),
    }
    .to_bytes()
}

fn member_devices(log: &MembershipLog) -> Vec<DeviceAddress> {
    let mut out = Vec::new();
    for m in log.members() {
        for &device_id in m.devices() {
            out.push(DeviceAddress {
                fingerprint: m.identity().fingerprint().0,
                device_id,
            });
        }
    }
    out
}

fn role_of(log: &MembershipLog, device: &DeviceAddress) -> Option<MemberRole> {
    log.members()
        .iter()
        .find(|m| {
            m.identity().fingerprint().0 == device.fingerprint
                && m.devices().contains(&device.device_id)
        })
        .map(|m| m.role())
}

/// What a change did, for the queue state.
fn patient_devices_left(log: &MembershipLog) -> bool {
    log.members()
        .iter()
        .any(|m| m.role() == MemberRole::Patient && !m.devices().is_empty())
}

/// Why a change-bearing frame was refused.
enum Refusal {
    Code(ErrorCode, &'static str),
}

impl<S: Store> Connection<S> {
    /// Handles one queue frame from the authenticated `device`.
    pub(super) async fn queue_frame(
        &mut self,
        id: u32,
        device: DeviceAddress,
        identity: &IdentityKey,
        frame: QueueFrame,
    ) -> Result<(), Close> {
        let Some(org) = self.org() else {
            // A relay without a clinic has no queue.
            return self.forbidden(id).await;
        };
        match frame {
            QueueFrame::OpenConversation(change) => {
                // One identity keeps at most `MAX_OPEN_PER_IDENTITY` conversations waiting:
                // else one registered device could grow the queue, the stored histories and the
                // pushes to every on-duty agent without bound.
                let open = self
                    .relay
                    .store
                    .open_conversations_of(identity.fingerprint().0)
                    .await
                    .map_err(|e| internal(id, &e))?;
                if open >= MAX_OPEN_PER_IDENTITY {
                    self.relay.refused("open_conversations", self.peer.ip());
                    return self
                        .refuse(id, ErrorCode::RateLimited, OPEN_RETRY_AFTER_MS)
                        .await;
                }
                self.change_frame(id, device, identity, vec![*change], Kind::Open, Vec::new())
                    .await
            }
            QueueFrame::Claim(change) => {
                if !self.has_role(id, identity, Role::Agent).await? {
                    return self.forbidden(id).await;
                }
                self.change_frame(id, device, identity, vec![*change], Kind::Claim, Vec::new())
                    .await
            }
            QueueFrame::PublishChange(change) => {
                self.change_frame(
                    id,
                    device,
                    identity,
                    vec![*change],
                    Kind::Publish,
                    Vec::new(),
                )
                .await
            }
            QueueFrame::HandOff { changes, notes } => {
                self.change_frame(id, device, identity, changes, Kind::HandOff, notes)
                    .await
            }
            QueueFrame::SetOnDuty(on) => {
                if !self.has_role(id, identity, Role::Agent).await? {
                    return self.forbidden(id).await;
                }
                self.relay
                    .store
                    .set_on_duty(device, on)
                    .await
                    .map_err(|e| internal(id, &e))?;
                self.reply(id, FrameBody::Ok).await
            }
            QueueFrame::FetchOnDuty => {
                if !self.has_role(id, identity, Role::Agent).await? {
                    return self.forbidden(id).await;
                }
                let devices = self
                    .relay
                    .store
                    .on_duty(MAX_ON_DUTY_DEVICES as u32)
                    .await
                    .map_err(|e| internal(id, &e))?;
                self.reply(id, queue_body(QueueFrame::OnDuty(devices)))
                    .await
            }
            QueueFrame::FetchQueue => {
                if !self.has_role(id, identity, Role::Agent).await? {
                    return self.forbidden(id).await;
                }
                let waiting = self
                    .relay
                    .store
                    .waiting_conversations(MAX_QUEUE_ENTRIES as u32)
                    .await
                    .map_err(|e| internal(id, &e))?;
                let entries = waiting
                    .iter()
                    .filter(|c| c.clinic == org.to_bytes())
                    .map(entry)
                    .collect();
                self.reply(id, queue_body(QueueFrame::Queue(entries))).await
            }
            QueueFrame::FetchMembership {
                conversation,
                from_epoch,
            } => {
                // `load` answers only conversations of this relay's clinic.
                let Some((stored, log)) = self.load(id, conversation).await? else {
                    return self
                        .refuse_queue(id, ErrorCode::UnknownConversation, "unknown_conversation")
                        .await;
                };
                // Members; any device of the patient's identity (a new device learning the
                // history); a supervisor of the clinic (to verify the archive); an agent of the
                // clinic while the conversation waits in the queue (new or handed back), since a
                // claim must name the head's hash. Once claimed (or closed) a non-member agent
                // is refused again.
                // (An agent whose certificate is revoked does not count: §4.3 rule 9.)
                let waiting = matches!(
                    state_of(stored.state),
                    QueueState::New | QueueState::HandedBack
                ) && log.is_claimable(self.revocations(id).await?.as_ref());
                let allowed = role_of(&log, &device).is_some()
                    || log.patient().is_some_and(|p| p.0 == device.fingerprint)
                    || self.has_role(id, identity, Role::Supervisor).await?
                    || (waiting && self.has_role(id, identity, Role::Agent).await?);
                if !allowed {
                    return self
                        .refuse_queue(id, ErrorCode::NotOnConversation, "not_on_conversation")
                        .await;
                }
                // Only the changes up to the head the permission was decided on: a change
                // stored since (a racing claim, on any instance) is not shown to a device that
                // may no longer read the history; it asks again from the next epoch.
                let limit = stored
                    .head_epoch
                    .saturating_sub(from_epoch)
                    .min(MAX_CHANGES_PER_FRAME as u64);
                let changes = self
                    .relay
                    .store
                    .conversation_changes(
                        conversation.0,
                        from_epoch,
                        u32::try_from(limit).unwrap_or(0),
                    )
                    .await
                    .map_err(|e| internal(id, &e))?
                    .iter()
                    .filter_map(|b| decode_stored::<MembershipChange>(b))
                    .collect();
                self.reply(id, queue_body(QueueFrame::Membership(changes)))
                    .await
            }
            QueueFrame::ConversationSend {
                conversation,
                epoch,
                envelopes,
            } => {
                self.conversation_send(id, device, conversation, epoch, envelopes)
                    .await
            }
            QueueFrame::PutArchive(envelope) => {
                let Some((stored, log)) = self.load(id, envelope.conversation).await? else {
                    return self
                        .refuse_queue(id, ErrorCode::UnknownConversation, "unknown_conversation")
                        .await;
                };
                let writes_now = role_of(&log, &device).is_some_and(MemberRole::can_write);
                // Before reading the history below: a device that never wrote here cannot make
                // the relay read it more than the archive rate allows. An identical repeat (a
                // retry whose `Ok` was lost) counts too: it is a request like any other, and a
                // device within the rate never needs more than one retry per copy.
                if let Err(wait) = self
                    .relay
                    .archive_limits
                    .check(&device, std::time::Instant::now())
                {
                    self.relay.refused("archive_rate", self.peer.ip());
                    return self.refuse(id, ErrorCode::RateLimited, wait).await;
                }
                if !writes_now && !self.wrote_here(id, &stored, &device).await? {
                    return self
                        .refuse_queue(id, ErrorCode::NotOnConversation, "not_on_conversation")
                        .await;
                }
                // Idempotent per filer (`conversations.md` §5.2): the same bytes from the same
                // device again are answered `Ok` and not stored a second time.
                let filing = self
                    .relay
                    .store
                    .put_archive(
                        envelope.conversation.0,
                        envelope.to_bytes(),
                        device,
                        now_ms(),
                    )
                    .await
                    .map_err(|e| internal(id, &e))?;
                if filing.repeat {
                    tracing::debug!(
                        index = filing.index,
                        "archive envelope filed again: kept once"
                    );
                }
                self.reply(id, FrameBody::Ok).await
            }
            QueueFrame::FetchArchive {
                conversation,
                from_index,
            } => {
                if !self.has_role(id, identity, Role::Supervisor).await? {
                    return self.forbidden(id).await;
                }
                if self.load(id, conversation).await?.is_none() {
                    return self
                        .refuse_queue(id, ErrorCode::UnknownConversation, "unknown_conversation")
                        .await;
                }
                let stored = self
                    .relay
                    .store
                    .archive(conversation.0, from_index, MAX_ARCHIVE_ITEMS as u32)
                    .await
                    .map_err(|e| internal(id, &e))?;
                let next_index = stored.last().map_or(from_index, |s| s.index + 1);
                // Who read a conversation's record is PHI access the clinic must be able to
                // show (HIPAA audit controls), whichever client read it (the browser console
                // keeps no audit chain of its own): one record per reading, at its first page.
                if from_index == 0 {
                    self.relay.audit.record(
                        now_ms(),
                        AuditEvent::ArchiveOpened {
                            conversation,
                            by: device_ref(&device),
                        },
                    );
                }
                // Each envelope with the authenticated device that filed it and when, so the
                // archive reader can check the filer against the membership at the message's
                // epoch (`docs/conversations.md` §7.3).
                let items = stored
                    .iter()
                    .filter_map(|s| {
                        decode_stored(&s.envelope).map(|envelope| ArchiveItem {
                            filer: s.filed_by,
                            filed_at_ms: s.filed_at_ms,
                            envelope,
                        })
                    })
                    .collect();
                self.reply(
                    id,
                    queue_body(QueueFrame::ArchiveItems { next_index, items }),
                )
                .await
            }
            QueueFrame::FetchArchivePolicy => {
                let policy = self
                    .relay
                    .store
                    .archive_policy(org.to_bytes())
                    .await
                    .map_err(|e| internal(id, &e))?
                    .and_then(|b| decode_stored::<ArchivePolicy>(&b))
                    .filter(|p| p.verify(&org))
                    .map(Box::new);
                self.reply(id, queue_body(QueueFrame::ArchivePolicy(policy)))
                    .await
            }
            QueueFrame::PublishArchivePolicy(policy) => {
                if self.admin(id, identity).await?.is_none() {
                    return self.forbidden(id).await;
                }
                if policy.org() != &org || !policy.verify(&org) {
                    return self.list_refused(id).await;
                }
                let stored = self
                    .relay
                    .store
                    .publish_archive_policy(org.to_bytes(), policy.sequence(), policy.to_bytes())
                    .await
                    .map_err(|e| internal(id, &e))?;
                if !stored {
                    return self.list_refused(id).await;
                }
                self.reply(id, FrameBody::Ok).await
            }
            // Frames only the relay sends.
            _ => Err(super::error(id, ErrorCode::Malformed)),
        }
    }

    /// Answers a queue error code (20–24 or another); counted by reason.
    async fn refuse_queue(
        &mut self,
        id: u32,
        code: ErrorCode,
        reason: &'static str,
    ) -> Result<(), Close> {
        self.relay.refused(reason, self.peer.ip());
        self.refuse(id, code, 0).await
    }

    /// Whether the identity holds a certificate of the relay's clinic that grants `role` now.
    async fn has_role(
        &mut self,
        id: u32,
        identity: &IdentityKey,
        role: Role,
    ) -> Result<bool, Close> {
        Ok(self.certified(id, identity, role).await?.is_some())
    }

    /// The stored conversation of this relay's clinic and its verified membership at the head
    /// read (`docs/relay-protocol.md` §3.6): one read of the conversation row, then the
    /// membership from the instance's cache if it holds that same head, else rebuilt from the
    /// stored history.
    async fn load(
        &mut self,
        id: u32,
        conversation: ConversationId,
    ) -> Result<Option<(StoredConversation, Arc<MembershipLog>)>, Close> {
        let Some(stored) = self.stored_conversation(id, conversation).await? else {
            return Ok(None);
        };
        let log = self.membership(id, &stored).await?;
        Ok(Some((stored, log)))
    }

    /// Whether a change of `stored`'s history added `device` as a member that writes: an agent
    /// who handed the conversation off may still file the archive copies of what it wrote
    /// while on it (`conversations.md` §7.3; the reader checks each copy's sender against the
    /// membership at the copy's own epoch). Reads the stored changes, verified when they were
    /// stored, up to the head, a page at a time.
    async fn wrote_here(
        &mut self,
        id: u32,
        stored: &StoredConversation,
        device: &DeviceAddress,
    ) -> Result<bool, Close> {
        let mut from_epoch = 0;
        while from_epoch < stored.head_epoch {
            let page = self
                .relay
                .store
                .conversation_changes(stored.id, from_epoch, MAX_CHANGES_PER_FRAME as u32)
                .await
                .map_err(|e| internal(id, &e))?;
            if page.is_empty() {
                break;
            }
            from_epoch += page.len() as u64;
            let added_as_writer = page
                .iter()
                .filter_map(|b| decode_stored::<MembershipChange>(b))
                .any(|c| {
                    c.action() == ChangeAction::Add
                        && c.role().can_write()
                        && c.member().fingerprint().0 == device.fingerprint
                        && c.devices().contains(&device.device_id)
                });
            if added_as_writer {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The stored conversation row, if it is one of this relay's clinic.
    async fn stored_conversation(
        &mut self,
        id: u32,
        conversation: ConversationId,
    ) -> Result<Option<StoredConversation>, Close> {
        let Some(org) = self.org() else {
            return Ok(None);
        };
        Ok(self
            .relay
            .store
            .conversation(conversation.0)
            .await
            .map_err(|e| internal(id, &e))?
            .filter(|c| c.clinic == org.to_bytes()))
    }

    /// The membership at the head of `stored` (a row of this relay's clinic). From the cache
    /// when it holds the conversation at exactly the stored head epoch and head hash: a change
    /// stored since, on any instance, moved the stored head, so a cached membership is never
    /// used past it. Otherwise rebuilt from the stored history, which was verified when stored,
    /// so it is replayed without today's revocation list and device list (a change made before
    /// a revocation stays valid: the cache changes nothing there), and kept.
    async fn membership(
        &mut self,
        id: u32,
        stored: &StoredConversation,
    ) -> Result<Arc<MembershipLog>, Close> {
        if let Some(log) =
            self.relay
                .memberships
                .get(stored.id, stored.head_epoch, &stored.head_hash)
        {
            return Ok(log);
        }
        let Some(org) = self.org() else {
            return Err(internal(
                id,
                &crate::storage::StoreError::Corrupt("no clinic".into()),
            ));
        };
        let conversation = ConversationId(stored.id);
        // Only the changes up to the head read above: a change stored since (by a racing
        // request, on any instance) is not part of this view, and the compare-and-set on the
        // head epoch refuses whatever is decided on this view.
        if stored.head_epoch > u64::from(MAX_HISTORY) {
            return Err(internal(
                id,
                &crate::storage::StoreError::Corrupt("conversation history too long".into()),
            ));
        }
        let changes = self
            .relay
            .store
            .conversation_changes(
                conversation.0,
                0,
                u32::try_from(stored.head_epoch).unwrap_or(MAX_HISTORY),
            )
            .await
            .map_err(|e| internal(id, &e))?;
        let replay = MembershipContext {
            revocations: None,
            patient_devices: None,
            now: u64::MAX / 2,
        };
        let mut log = MembershipLog::new(conversation, org);
        // A takeover claim (§4.3 rule 9) was accepted because the relay's list named every
        // agent on the conversation: it is replayed with the current list (lists only grow).
        let mut revocations = None;
        for bytes in &changes {
            let Some(change) = decode_stored::<MembershipChange>(bytes) else {
                tracing::error!("a stored conversation change does not decode");
                return Err(internal(
                    id,
                    &crate::storage::StoreError::Corrupt("conversation history".into()),
                ));
            };
            let mut applied = log.apply(&change, &replay);
            if applied == Err(hushwire_proto::conversation::MembershipError::ClaimWhileClaimed) {
                if revocations.is_none() {
                    revocations = Some(self.revocations(id).await?);
                }
                let with_list = MembershipContext {
                    revocations: revocations.as_ref().and_then(Option::as_ref),
                    ..replay
                };
                applied = log.apply(&change, &with_list);
            }
            let applied = applied.is_ok();
            if !applied {
                tracing::error!("a stored conversation history does not verify");
                return Err(internal(
                    id,
                    &crate::storage::StoreError::Corrupt("conversation history".into()),
                ));
            }
        }
        if log.next_epoch() != stored.head_epoch {
            return Err(internal(
                id,
                &crate::storage::StoreError::Corrupt("conversation head".into()),
            ));
        }
        let log = Arc::new(log);
        // Kept under its own head: if the stored head hash disagreed, it would never be used.
        self.relay.memberships.insert(stored.id, Arc::clone(&log));
        Ok(log)
    }

    /// The patient's stored device list, if it verifies for the patient.
    async fn patient_list(
        &mut self,
        id: u32,
        patient: &IdentityKey,
    ) -> Result<Option<DeviceList>, Close> {
        Ok(self
            .relay
            .store
            .device_list(patient.fingerprint().0)
            .await
            .map_err(|e| internal(id, &e))?
            .and_then(|b| decode_stored::<DeviceList>(&b))
            .filter(|l| l.verify(patient).is_ok()))
    }

    /// `OpenConversation`, `Claim`, `PublishChange`, `HandOff`: verify, compare-and-set, push.
    async fn change_frame(
        &mut self,
        id: u32,
        device: DeviceAddress,
        identity: &IdentityKey,
        changes: Vec<MembershipChange>,
        kind: Kind,
        notes: Vec<NoteEnvelope>,
    ) -> Result<(), Close> {
        match self
            .try_change(id, device, identity, changes, kind, notes)
            .await?
        {
            Ok(()) => Ok(()),
            Err(Refusal::Code(code, reason)) => self.refuse_queue(id, code, reason).await,
        }
    }

    #[allow(clippy::too_many_lines)]
    async fn try_change(
        &mut self,
        id: u32,
        device: DeviceAddress,
        identity: &IdentityKey,
        changes: Vec<MembershipChange>,
        kind: Kind,
        notes: Vec<NoteEnvelope>,
    ) -> Result<Result<(), Refusal>, Close> {
        use ErrorCode as C;
        let Some(org) = self.org() else {
            return Ok(Err(Refusal::Code(C::Forbidden, "forbidden")));
        };
        let Some(first) = changes.first() else {
            return Ok(Err(Refusal::Code(C::Malformed, "malformed")));
        };
        let conversation = first.conversation();
        let now = now_secs();
        let (stored, mut log) = if kind == Kind::Open {
            if first.epoch() != 0 || changes.len() != 1 {
                return Ok(Err(Refusal::Code(
                    C::MembershipRefused,
                    "membership_refused",
                )));
            }
            let exists = self
                .relay
                .store
                .conversation(conversation.0)
                .await
                .map_err(|e| internal(id, &e))?
                .is_some();
            if exists {
                return Ok(Err(Refusal::Code(
                    C::ConversationExists,
                    "conversation_exists",
                )));
            }
            (None, MembershipLog::new(conversation, org))
        } else {
            let Some((stored, log)) = self.load(id, conversation).await? else {
                return Ok(Err(Refusal::Code(
                    C::UnknownConversation,
                    "unknown_conversation",
                )));
            };
            (Some(stored), Arc::unwrap_or_clone(log))
        };
        // Every change is signed by the device that sends it.
        if changes.iter().any(|c| {
            c.signer().fingerprint() != identity.fingerprint()
                || c.signer_device() != device.device_id
        }) {
            return Ok(Err(Refusal::Code(
                C::MembershipRefused,
                "membership_refused",
            )));
        }
        if changes.iter().any(|c| c.conversation() != conversation) {
            return Ok(Err(Refusal::Code(
                C::MembershipRefused,
                "membership_refused",
            )));
        }
        let before = log.clone();
        // Claimed: an agent is on it whose certificate the relay's list does not name (§4.3
        // rule 9: a conversation whose every agent is revoked waits in the queue again).
        let revocations = self.revocations(id).await?;
        let was_claimed = !log.is_claimable(revocations.as_ref());
        // A hand-off comes from an agent on the conversation.
        if kind == Kind::HandOff && role_of(&log, &device) != Some(MemberRole::Agent) {
            return Ok(Err(Refusal::Code(
                C::NotOnConversation,
                "not_on_conversation",
            )));
        }
        if first.epoch() != log.next_epoch() {
            if kind == Kind::Claim && was_claimed {
                return self
                    .already_claimed(id, conversation, log.next_epoch())
                    .await
                    .map(Ok);
            }
            return Ok(Err(Refusal::Code(C::StaleEpoch, "stale_epoch")));
        }
        if kind == Kind::Claim {
            let self_join = first.action() == ChangeAction::Add
                && first.role() == MemberRole::Agent
                && first.member() == identity
                && changes.len() == 1;
            if !self_join {
                return Ok(Err(Refusal::Code(
                    C::MembershipRefused,
                    "membership_refused",
                )));
            }
            if was_claimed {
                return self
                    .already_claimed(id, conversation, log.next_epoch())
                    .await
                    .map(Ok);
            }
        }
        // Verify every change with the clients' rules, with the relay's revocation list and
        // the patient's stored device list (rule 14).
        let patient_key = if kind == Kind::Open {
            Some(first.signer().clone())
        } else {
            log.members()
                .iter()
                .find(|m| m.role() == MemberRole::Patient)
                .map(|m| m.identity().clone())
        };
        let patient_devices = match &patient_key {
            Some(p) => self.patient_list(id, p).await?,
            None => None,
        };
        // Rule 14 at the relay: patient devices are added only from the patient's published,
        // verifying device list (`PublishDeviceList` first).
        let adds_patient_devices = changes
            .iter()
            .any(|c| c.action() == ChangeAction::Add && c.role() == MemberRole::Patient);
        if adds_patient_devices && patient_devices.is_none() {
            self.relay
                .metrics
                .membership_refused("no patient device list");
            return Ok(Err(Refusal::Code(
                C::MembershipRefused,
                "membership_refused",
            )));
        }
        let ctx = MembershipContext {
            revocations: revocations.as_ref(),
            patient_devices: patient_devices.as_ref(),
            now,
        };
        for change in &changes {
            if let Err(e) = log.apply(change, &ctx) {
                tracing::info!(rule = e.rule(), "refused a membership change");
                self.relay.metrics.membership_refused(e.rule());
                return Ok(Err(Refusal::Code(
                    C::MembershipRefused,
                    "membership_refused",
                )));
            }
        }
        let claimed = !log.is_claimable(revocations.as_ref());
        match kind {
            // A claim adds an agent to an unclaimed conversation.
            Kind::Claim if !claimed => {
                return Ok(Err(Refusal::Code(
                    C::MembershipRefused,
                    "membership_refused",
                )));
            }
            // Claims travel as `Claim`, which answers `Claimed`/`AlreadyClaimed`.
            Kind::Publish | Kind::HandOff if claimed && !was_claimed => {
                return Ok(Err(Refusal::Code(
                    C::MembershipRefused,
                    "membership_refused",
                )));
            }
            _ => {}
        }
        // Notes go only to staff devices: staff members (before or after) or on-duty agents.
        let on_duty = self
            .relay
            .store
            .on_duty(MAX_ON_DUTY_DEVICES as u32)
            .await
            .map_err(|e| internal(id, &e))?;
        if kind != Kind::HandOff && !notes.is_empty() {
            return Ok(Err(Refusal::Code(C::Malformed, "malformed")));
        }
        for note in &notes {
            let staff = [&before, &log]
                .iter()
                .any(|l| role_of(l, &note.recipient).is_some_and(MemberRole::is_staff))
                || on_duty.contains(&note.recipient);
            if !staff {
                return Ok(Err(Refusal::Code(
                    C::NotOnConversation,
                    "note_not_to_staff",
                )));
            }
        }
        // The new queue state.
        let old_state = stored.as_ref().map(|s| state_of(s.state));
        let (state, waiting_since) = if !patient_devices_left(&log) {
            (
                QueueState::Closed,
                stored.as_ref().map_or(now, |s| s.waiting_since),
            )
        } else if claimed {
            (
                QueueState::Claimed,
                stored.as_ref().map_or(now, |s| s.waiting_since),
            )
        } else if was_claimed {
            (QueueState::HandedBack, now)
        } else {
            (
                old_state.unwrap_or(QueueState::New),
                stored.as_ref().map_or(now, |s| s.waiting_since),
            )
        };
        let members = member_devices(&log);
        let before_members = member_devices(&before);
        // Pushes: every change to every member device at the new head and to the devices just
        // removed, except the device that signed it; the queue entry to on-duty agents when it
        // appears, changes state or leaves the queue.
        let mut pushes = Vec::new();
        for change in &changes {
            let frame = push_frame(QueueFrame::MembershipChanged(Box::new(change.clone())));
            for target in members
                .iter()
                .chain(before_members.iter().filter(|d| !members.contains(d)))
            {
                if *target != device && !pushes.iter().any(|(d, f)| d == target && f == &frame) {
                    pushes.push((*target, frame.clone()));
                }
            }
        }
        let opened_at = stored.as_ref().map_or(now, |s| s.opened_at);
        let new_entry = QueueEntry {
            conversation,
            state,
            opened_at,
            waiting_since,
            epoch: log.next_epoch(),
        };
        // Also while it waits: its entry's epoch (which a claim must carry) changed.
        let waiting = matches!(state, QueueState::New | QueueState::HandedBack);
        if old_state != Some(state) || waiting {
            let frame = push_frame(QueueFrame::QueueChanged(new_entry));
            for target in &on_duty {
                pushes.push((*target, frame.clone()));
            }
        }
        let targets: Vec<DeviceAddress> = pushes.iter().map(|(d, _)| *d).collect();
        let encoded: Vec<Vec<u8>> = changes.iter().map(Codec::to_bytes).collect();
        let applied = if let Some(stored) = &stored {
            self.relay
                .store
                .update_conversation(ConversationUpdate {
                    id: conversation.0,
                    expected_epoch: stored.head_epoch,
                    // A claim of a conversation with no agent also needs the stored flag
                    // unclaimed; a takeover (agents on it, all revoked) relies on the head
                    // epoch alone, which every change moves, so exactly one claim wins either way.
                    require_unclaimed: claimed && !before.is_claimed(),
                    changes: encoded,
                    head_hash: log.head(),
                    state: state_byte(state),
                    waiting_since,
                    claimed,
                    members,
                    pushes,
                    now_ms: now_ms(),
                })
                .await
                .map_err(|e| internal(id, &e))?
        } else {
            let opened = StoredConversation {
                id: conversation.0,
                clinic: org.to_bytes(),
                head_epoch: log.next_epoch(),
                head_hash: log.head(),
                state: state_byte(state),
                opened_at,
                waiting_since,
                claimed,
                last_activity_ms: now_ms(),
            };
            let mut encoded = encoded;
            let opened_ok = self
                .relay
                .store
                .open_conversation(opened, encoded.remove(0), members, pushes)
                .await
                .map_err(|e| internal(id, &e))?;
            if !opened_ok {
                return Ok(Err(Refusal::Code(
                    C::ConversationExists,
                    "conversation_exists",
                )));
            }
            true
        };
        if !applied {
            // Another change came first (on this instance or another).
            if kind == Kind::Claim {
                let next = self
                    .relay
                    .store
                    .conversation(conversation.0)
                    .await
                    .map_err(|e| internal(id, &e))?
                    .map_or(0, |c| c.head_epoch);
                return self.already_claimed(id, conversation, next).await.map(Ok);
            }
            return Ok(Err(Refusal::Code(C::StaleEpoch, "stale_epoch")));
        }
        // Stored at this head by the compare-and-set, after the verification above (which was
        // stricter than a replay: it also checked the revocation and device lists).
        self.relay
            .memberships
            .insert(conversation.0, Arc::new(log.clone()));
        for target in &targets {
            self.relay.wake_pushes(target);
        }
        // Audit: metadata only.
        let by = device_ref(&device);
        let time = now_ms();
        if kind == Kind::Open {
            self.relay.audit.record(
                time,
                AuditEvent::ConversationOpened {
                    conversation,
                    patient: by,
                },
            );
        }
        for change in &changes {
            self.relay.audit.record(
                time,
                AuditEvent::MembershipChanged {
                    conversation,
                    epoch: change.epoch(),
                    by,
                    action: change.action(),
                    role: change.role(),
                    member: Fingerprint(change.member().fingerprint().0),
                },
            );
        }
        if kind == Kind::Claim {
            self.relay
                .audit
                .record(time, AuditEvent::ConversationClaimed { conversation, by });
            self.relay.metrics.claims_won.inc();
            let epoch = first.epoch();
            self.reply(
                id,
                queue_body(QueueFrame::Claimed {
                    conversation,
                    epoch,
                }),
            )
            .await?;
            return Ok(Ok(()));
        }
        if !notes.is_empty() {
            let envelopes = notes
                .into_iter()
                .map(|n| OutgoingEnvelope {
                    recipient: n.recipient,
                    payload: n.payload,
                })
                .collect();
            // The hand-off is stored; the notes are delivered as ordinary envelopes. The answer
            // is `Ok`, or the error that refused the notes (a quota, a rate): the hand-off
            // stands either way.
            let body = match self.store_envelopes(id, device, envelopes).await? {
                FrameBody::Sent(_) => FrameBody::Ok,
                refused => refused,
            };
            self.reply(id, body).await?;
            return Ok(Ok(()));
        }
        self.reply(id, FrameBody::Ok).await?;
        Ok(Ok(()))
    }

    /// After the clinic's new revocation `list` was stored: every claimed conversation of the
    /// clinic whose agents are all revoked by it goes back to the queue (handed back, waiting
    /// from now) and the on-duty agents get its `QueueChanged`, as when an agent hands back
    /// (`docs/conversations.md` §4.3 rule 9, §5.4). No change is stored; each is a
    /// compare-and-set on the head epoch, read again if a change came first.
    pub(super) async fn requeue_revoked(
        &mut self,
        id: u32,
        list: &RevocationList,
    ) -> Result<(), Close> {
        const PAGE: u32 = 256;
        let Some(org) = self.org() else {
            return Ok(());
        };
        let mut after = None;
        loop {
            let page = self
                .relay
                .store
                .claimed_conversations(after, PAGE)
                .await
                .map_err(|e| internal(id, &e))?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.id);
            for stored in page.iter().filter(|c| c.clinic == org.to_bytes()) {
                self.requeue_if_revoked(id, stored.clone(), list).await?;
            }
            if page.len() < PAGE as usize {
                return Ok(());
            }
        }
    }

    /// One conversation of [`Self::requeue_revoked`].
    async fn requeue_if_revoked(
        &mut self,
        id: u32,
        mut stored: StoredConversation,
        list: &RevocationList,
    ) -> Result<(), Close> {
        // A change stored meanwhile moves the head: read it again (a few times at most; a
        // conversation that keeps changing has an agent at work, whose next change or the
        // next list decides).
        for _ in 0..4 {
            let log = self.membership(id, &stored).await?;
            if state_of(stored.state) != QueueState::Claimed || !log.agents_all_revoked(Some(list))
            {
                return Ok(());
            }
            let now = now_secs();
            let on_duty = self
                .relay
                .store
                .on_duty(MAX_ON_DUTY_DEVICES as u32)
                .await
                .map_err(|e| internal(id, &e))?;
            let entry = QueueEntry {
                conversation: ConversationId(stored.id),
                state: QueueState::HandedBack,
                opened_at: stored.opened_at,
                waiting_since: now,
                epoch: stored.head_epoch,
            };
            let frame = push_frame(QueueFrame::QueueChanged(entry));
            let pushes: Vec<_> = on_duty.iter().map(|d| (*d, frame.clone())).collect();
            let applied = self
                .relay
                .store
                .update_conversation(ConversationUpdate {
                    id: stored.id,
                    expected_epoch: stored.head_epoch,
                    require_unclaimed: false,
                    changes: Vec::new(),
                    head_hash: stored.head_hash,
                    state: state_byte(QueueState::HandedBack),
                    waiting_since: now,
                    claimed: false,
                    members: member_devices(&log),
                    pushes,
                    now_ms: now_ms(),
                })
                .await
                .map_err(|e| internal(id, &e))?;
            if applied {
                tracing::info!("a conversation whose agents are all revoked is back in the queue");
                for target in &on_duty {
                    self.relay.wake_pushes(target);
                }
                return Ok(());
            }
            match self
                .relay
                .store
                .conversation(stored.id)
                .await
                .map_err(|e| internal(id, &e))?
            {
                Some(again) => stored = again,
                None => return Ok(()),
            }
        }
        Ok(())
    }

    async fn already_claimed(
        &mut self,
        id: u32,
        conversation: ConversationId,
        epoch: u64,
    ) -> Result<(), Close> {
        self.relay.metrics.claims_lost.inc();
        self.reply(
            id,
            queue_body(QueueFrame::AlreadyClaimed {
                conversation,
                epoch,
            }),
        )
        .await
    }

    /// `ConversationSend`: at the head epoch, between member devices that write, then as `Send`.
    async fn conversation_send(
        &mut self,
        id: u32,
        device: DeviceAddress,
        conversation: ConversationId,
        epoch: u64,
        envelopes: Vec<OutgoingEnvelope>,
    ) -> Result<(), Close> {
        // One read of the conversation row; the epoch is checked before any membership work.
        let Some(stored) = self.stored_conversation(id, conversation).await? else {
            return self
                .refuse_queue(id, ErrorCode::UnknownConversation, "unknown_conversation")
                .await;
        };
        if epoch != stored.head_epoch {
            return self
                .refuse_queue(id, ErrorCode::StaleEpoch, "stale_epoch")
                .await;
        }
        let log = self.membership(id, &stored).await?;
        let sender_writes = role_of(&log, &device).is_some_and(MemberRole::can_write);
        let recipients_members = envelopes
            .iter()
            .all(|e| role_of(&log, &e.recipient).is_some());
        if !sender_writes || !recipients_members {
            return self
                .refuse_queue(id, ErrorCode::NotOnConversation, "not_on_conversation")
                .await;
        }
        self.send_envelopes(id, device, envelopes).await
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Open,
    Claim,
    Publish,
    HandOff,
}
