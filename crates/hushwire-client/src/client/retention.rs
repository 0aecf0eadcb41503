//! The clinic's retention of conversations on its staff devices (`docs/conversations.md` §7.4,
//! `docs/client.md` §3.3): which conversations this device holds, legal holds, and deleting a
//! conversation whose last activity is older than the clinic's `retention_days` (the signed
//! archive policy, §7.1) under `hushwire::transcript::RetentionPolicy` (`transcripts.md` §7).

use hushwire::proto::conversation::ConversationId;
use hushwire::transcript::{RetentionPolicy, TranscriptActivity, TranscriptId};
use serde::{Deserialize, Serialize};
use sqlx::SqliteConnection;

use super::Client;
use crate::error::{ClientError, Result};
use crate::os::{now_ms, rng};
use crate::store;

/// Whether an entry whose last activity is `last` needs no write for activity at `at`.
fn held_is_current(last: u64, at: u64) -> bool {
    last != 0 && last >= at
}

/// Milliseconds in a day: `retention_days` × this is `RetentionPolicy::keep_for_ms`.
const DAY_MS: u64 = 86_400_000;

/// What the store keeps per conversation beside its history (sealed, found by the same blind
/// index): the id, so conversations can be listed at all (the history is sealed under its id),
/// the time of the last activity seen here and the legal hold.
#[derive(Serialize, Deserialize)]
struct ConversationEntry {
    id: [u8; 16],
    last_activity_ms: u64,
    legal_hold: bool,
}

/// One conversation this device holds ([`Client::conversations`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConversationSummary {
    /// The conversation.
    pub id: ConversationId,
    /// When this device last recorded a message or a membership change in it (Unix ms, this
    /// device's clock): what retention counts from.
    pub last_activity_ms: u64,
    /// Under a legal hold: never deleted by retention while the hold lasts.
    pub legal_hold: bool,
}

/// What [`Client::apply_retention`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionReport {
    /// The clinic's retention in days, from its verified archive policy.
    pub retention_days: u16,
    /// Conversations deleted from this device (their last activity was older).
    pub deleted: Vec<ConversationId>,
    /// Conversations kept because of a legal hold although older.
    pub held: usize,
    /// Conversations kept because they are recent enough (their last activity within the period).
    pub kept: usize,
}

impl Client {
    fn entry_label() -> &'static str {
        "conversation entry"
    }

    /// Whether this device is a clinic's staff device (it holds its agent certificate).
    async fn is_staff(&self) -> bool {
        let state = self.inner.state.lock().await;
        state
            .clinic
            .as_ref()
            .is_some_and(|c| c.own_certificate().is_some())
    }

    /// Records activity in `conversation` at `at_ms` (in the caller's transaction): creates its
    /// entry if this is the first, keeps its legal hold, and never moves the last activity
    /// back. Storing a history again without a new change passes the newest change's time, so
    /// looking at a conversation does not postpone its retention.
    pub(super) async fn touch_conversation(
        &self,
        c: &mut SqliteConnection,
        conversation: &ConversationId,
        at_ms: u64,
    ) -> Result<()> {
        let index = self.conversation_index(conversation);
        let held = match store::indexed(c, store::Indexed::ConversationEntry, &index).await? {
            Some(sealed) => Some(self.open_entry(&index, &sealed)?),
            None => None,
        };
        let (last, legal_hold) = held.map_or((0, false), |e| (e.last_activity_ms, e.legal_hold));
        if held_is_current(last, at_ms) {
            return Ok(());
        }
        self.put_entry(
            c,
            &index,
            &ConversationEntry {
                id: conversation.0,
                last_activity_ms: last.max(at_ms),
                legal_hold,
            },
        )
        .await
    }

    fn open_entry(&self, index: &[u8], sealed: &[u8]) -> Result<ConversationEntry> {
        self.inner
            .vault
            .open_value(Self::entry_label(), index, sealed)
    }

    async fn put_entry(
        &self,
        c: &mut SqliteConnection,
        index: &[u8],
        entry: &ConversationEntry,
    ) -> Result<()> {
        let sealed = self
            .inner
            .vault
            .seal_value(Self::entry_label(), index, entry, &mut rng());
        store::put_indexed(c, store::Indexed::ConversationEntry, index, &sealed).await
    }

    /// The conversations this device holds, most recently active first.
    pub async fn conversations(&self) -> Result<Vec<ConversationSummary>> {
        let mut c = self.inner.db.acquire().await?;
        let mut out = Vec::new();
        for (index, sealed) in store::conversation_entries(&mut c).await? {
            let entry = self.open_entry(&index, &sealed)?;
            out.push(ConversationSummary {
                id: ConversationId(entry.id),
                last_activity_ms: entry.last_activity_ms,
                legal_hold: entry.legal_hold,
            });
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.last_activity_ms));
        Ok(out)
    }

    /// Every conversation held here, by the blind index of its id (how the store's rows name
    /// them): computed once per call, so a list of rows is matched without recomputing it.
    pub(super) async fn conversations_by_index(
        &self,
    ) -> Result<std::collections::HashMap<[u8; 32], ConversationId>> {
        Ok(self
            .conversations()
            .await?
            .into_iter()
            .map(|s| (self.conversation_index(&s.id), s.id))
            .collect())
    }

    /// Staff: places a legal hold on a conversation held here (`hold`) or lifts it: retention
    /// never deletes a held conversation. [`ClientError::Conversation`] on a device that is not
    /// staff, or if this device holds no such conversation.
    pub async fn set_legal_hold(&self, conversation: ConversationId, hold: bool) -> Result<()> {
        if !self.is_staff().await {
            return Err(ClientError::Conversation(
                "legal holds are for a clinic's staff devices (retention does not apply to a \
                 patient's copy); this device has no agent certificate"
                    .into(),
            ));
        }
        let index = self.conversation_index(&conversation);
        let mut tx = store::begin(&self.inner.db).await?;
        let Some(sealed) =
            store::indexed(&mut tx, store::Indexed::ConversationEntry, &index).await?
        else {
            return Err(ClientError::Conversation(format!(
                "this device holds no conversation {}",
                hex::encode(conversation.0)
            )));
        };
        let mut entry = self.open_entry(&index, &sealed)?;
        entry.legal_hold = hold;
        self.put_entry(&mut tx, &index, &entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Applies the clinic's retention at `now_ms` (Unix ms; pass the current time, or a later
    /// one to see what would go): deletes from this device every conversation whose last
    /// activity is more than the clinic's `retention_days` ago and which has no legal hold —
    /// its messages, receipts, recalls, notes and membership history. The deletion overwrites
    /// the freed pages (`secure_delete`) and empties the write-ahead log, so the store file keeps
    /// no sealed copy. Only on a staff device (the clinic's records; a patient's copy is the
    /// patient's); needs a connection to read the clinic's signed archive policy. Errors:
    /// [`ClientError::Conversation`] on a device that is not staff or for a clinic with no
    /// archive policy, [`ClientError::Connection`] when not connected.
    pub async fn apply_retention(&self, now_ms: u64) -> Result<RetentionReport> {
        let link = self.require_link()?;
        if !self.is_staff().await {
            return Err(ClientError::Conversation(
                "retention applies to a clinic's staff devices; this device has no agent \
                 certificate"
                    .into(),
            ));
        }
        let Some(policy) = self.archive_policy(&link).await? else {
            return Err(ClientError::Conversation(
                "the clinic has published no archive policy, so no retention period: an admin \
                 publishes one (hushwire org publish-archive-policy)"
                    .into(),
            ));
        };
        let days = policy.retention_days();
        let policy = RetentionPolicy {
            keep_for_ms: u64::from(days).saturating_mul(DAY_MS),
        };
        let summaries = self.conversations().await?;
        let activity: Vec<TranscriptActivity> = summaries
            .iter()
            .map(|s| TranscriptActivity {
                id: TranscriptId(s.id.0),
                last_activity_ms: s.last_activity_ms,
                legal_hold: s.legal_hold,
            })
            .collect();
        let deleted: Vec<ConversationId> = policy
            .expired(activity.iter().copied(), now_ms)
            .into_iter()
            .map(|t| ConversationId(t.0))
            .collect();
        // As old, but kept for a hold: what would go without the holds, less what goes.
        let past = policy
            .expired(
                activity.iter().map(|a| TranscriptActivity {
                    legal_hold: false,
                    ..*a
                }),
                now_ms,
            )
            .len();
        let report = RetentionReport {
            retention_days: days,
            held: past - deleted.len(),
            kept: summaries.len() - past,
            deleted,
        };
        if report.deleted.is_empty() {
            return Ok(report);
        }
        let indexes: Vec<[u8; 32]> = report
            .deleted
            .iter()
            .map(|id| self.conversation_index(id))
            .collect();
        store::delete_conversations(&self.inner.db, &indexes).await?;
        {
            let mut memory = match self.inner.conversations.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            for id in &report.deleted {
                memory.remove(&id.0);
            }
        }
        // A count, never which conversations: ids are routing metadata of patients' chats.
        tracing::info!(
            deleted = report.deleted.len(),
            retention_days = days,
            "applied the clinic's retention"
        );
        Ok(report)
    }

    /// [`Self::apply_retention`] at every connection and hourly, on staff devices of a clinic
    /// with an archive policy; elsewhere nothing. A failure is logged, never fatal to the
    /// connection.
    pub(super) async fn retention_if_due(&self) {
        if !self.is_staff().await {
            return;
        }
        if let Err(e) = self.apply_retention(now_ms()).await {
            tracing::debug!(error = %e, "retention not applied");
        }
    }
}
