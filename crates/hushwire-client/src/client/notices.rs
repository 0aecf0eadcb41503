//! Conversation notices shown once (`docs/client.md` §3.3, tables `conversation_notices_shown`
//! and `conversation_recalls_unshown`): a membership change ("Ben Marsh —
//! verified agent of Lakeside Clinic joined as agent") and a recall are events when they
//! arrive, but the command that receives them may not be the one that shows them (`members`
//! fetches a history, `send` receives a recall). Like conversation messages, they are kept
//! until shown: per conversation, the epoch up to which its changes were shown; per recalled
//! message, whether its recall was shown.

use std::collections::HashMap;

use hushwire::proto::codec::Codec as _;
use hushwire::proto::conversation::{ConversationId, MembershipChange};

use super::Client;
use crate::error::Result;
use crate::event::Event;
use crate::store;

/// A conversation notice not shown yet ([`Client::take_conversation_notices`]), with its time
/// so it can be shown in order among the messages.
#[derive(Clone, Debug)]
pub struct ConversationNotice {
    /// When it happened (Unix ms): a change's `issued_at`, a recall's relay time, for "no
    /// verified agent" the revocation list's `issued_at`.
    pub at_ms: u64,
    /// [`Event::ConversationMembershipChanged`] (one change), [`Event::ConversationUnanswered`]
    /// or [`Event::ConversationMessageRecalled`].
    pub event: Event,
}

impl Client {
    /// The membership changes, "no verified agent" notices and recalls not shown yet — in
    /// every conversation held here, or in `only` — oldest first ([`ConversationNotice::at_ms`]).
    /// A conversation's changes count from its first one, described as each left the
    /// membership; "no verified agent" comes once per head while every agent on it is revoked,
    /// and only to a device still on it. Each is marked shown as it is taken, so it is returned
    /// at most once: a crash after this call loses the notice, never shows it twice; the
    /// conversation's history (`members`, `chat CONVERSATION`) still has it. Changes this very
    /// device made are not news to it and are skipped (its own command reported them); its
    /// other devices' are shown.
    pub async fn take_conversation_notices(
        &self,
        only: Option<ConversationId>,
    ) -> Result<Vec<ConversationNotice>> {
        let (me, my_device) = self.own_fingerprint_and_device().await;
        let by_index: HashMap<[u8; 32], ConversationId> = match only {
            Some(id) => HashMap::from([(self.conversation_index(&id), id)]),
            None => self.conversations_by_index().await?,
        };
        let mut notices = Vec::new();
        for (&index, &id) in &by_index {
            let Some(conv) = self.conv_snapshot(id).await? else {
                continue;
            };
            let head = conv.log.next_epoch();
            let mut c = self.inner.db.acquire().await?;
            let Some((shown, unanswered_shown)) = store::notices_shown(&mut c, &index).await?
            else {
                continue;
            };
            // "No verified agent": once per head (a later takeover and revocation is news),
            // and only to a device still on the conversation (not to an agent that left it).
            let on_it = conv
                .log
                .members()
                .iter()
                .any(|m| m.identity().fingerprint() == me && m.devices().contains(&my_device));
            let unanswered = on_it
                && conv.log.agents_all_revoked(conv.revocations.as_ref())
                && unanswered_shown != head + 1;
            if shown >= head && !unanswered {
                continue;
            }
            let marker = if unanswered {
                head + 1
            } else {
                unanswered_shown
            };
            store::set_notices_shown(&mut c, &index, (head, marker)).await?;
            drop(c);
            for change in conv
                .changes
                .iter()
                .skip(usize::try_from(shown).unwrap_or(usize::MAX))
                .filter_map(|b| MembershipChange::from_bytes(b).ok())
                .filter(|ch| !(ch.signer().fingerprint() == me && ch.signer_device() == my_device))
            {
                notices.push(ConversationNotice {
                    at_ms: change.issued_at().saturating_mul(1000),
                    event: Event::ConversationMembershipChanged {
                        conversation: id,
                        changes: vec![conv.describe(&change)],
                    },
                });
            }
            if unanswered {
                let at_ms = conv
                    .revocations
                    .as_ref()
                    .map_or(0, |l| l.issued_at().saturating_mul(1000));
                notices.push(ConversationNotice {
                    at_ms,
                    event: Event::ConversationUnanswered { conversation: id },
                });
            }
        }
        let rows = {
            let mut c = self.inner.db.acquire().await?;
            store::unshown_recalls(&mut c).await?
        };
        for (row, index, sealed) in rows {
            let Some(conversation) = <[u8; 32]>::try_from(index.as_slice())
                .ok()
                .and_then(|i| by_index.get(&i).copied())
            else {
                continue;
            };
            {
                let mut c = self.inner.db.acquire().await?;
                store::remove_unshown_recall(&mut c, row).await?;
            }
            let Some((id, by, at_ms)) = self.recall_of(row, &sealed)? else {
                continue;
            };
            let by = if by == me {
                "you".to_owned()
            } else {
                match self.conv_snapshot(conversation).await? {
                    Some(conv) => conv.shown_ever(&by),
                    None => "a member whose name is not known here".to_owned(),
                }
            };
            notices.push(ConversationNotice {
                at_ms,
                event: Event::ConversationMessageRecalled {
                    conversation,
                    id,
                    by,
                    at_ms,
                },
            });
        }
        // Oldest first; a stable sort keeps a conversation's changes in epoch order.
        notices.sort_by_key(|n| n.at_ms);
        Ok(notices)
    }
}
