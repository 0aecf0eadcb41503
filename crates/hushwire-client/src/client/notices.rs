//! Conversation notices shown once (`docs/client.md` §5.6): a membership change ("Ben Marsh —
//! verified agent of Lakeside Clinic joined as agent") and a recall are events when they
//! arrive, but the command that receives them may not be the one that shows them (`members`
//! fetches a history, `send` receives a recall). Like conversation messages, they are kept
//! until shown: per conversation, the epoch up to which its changes were shown; per recalled
//! message, whether its recall was shown.

use std::collections::HashMap;

use hushwire::proto::conversation::ConversationId;
use hushwire::proto::conversation::MembershipChange;

use super::Client;
use crate::error::Result;
use hushwire::proto::codec::Codec as _;

use crate::event::Event;
use crate::store;

impl Client {
    /// The membership changes and recalls not shown yet — in every conversation held here, or
    /// in `only` — as [`Event::ConversationMembershipChanged`] (one per conversation, its
    /// changes in epoch order, from its first change on), [`Event::ConversationUnanswered`]
    /// (once per head while every agent on it is revoked), then
    /// [`Event::ConversationMessageRecalled`] (oldest message first). Each is marked shown as it is taken, so it is returned at most once: a crash
    /// after this call loses the notice, never shows it twice; the conversation's history
    /// (`members`, `chat CONVERSATION`) still has it. Changes this very device made are not
    /// news to it and are skipped (its own command reported them); its other devices' are
    /// shown.
    pub async fn take_conversation_notices(
        &self,
        only: Option<ConversationId>,
    ) -> Result<Vec<Event>> {
        let (me, my_device) = self.own_fingerprint_and_device().await;
        let by_index: HashMap<[u8; 32], ConversationId> = match only {
            Some(id) => HashMap::from([(self.conversation_index(&id), id)]),
            None => self.conversations_by_index().await?,
        };
        // In a stable order (by id), whatever the map's.
        let mut held: Vec<([u8; 32], ConversationId)> =
            by_index.iter().map(|(i, id)| (*i, *id)).collect();
        held.sort_by_key(|(_, id)| id.0);
        let mut events = Vec::new();
        for (index, id) in held {
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
            let changes: Vec<String> = conv
                .changes
                .iter()
                .skip(usize::try_from(shown).unwrap_or(usize::MAX))
                .filter_map(|b| MembershipChange::from_bytes(b).ok())
                .filter(|ch| !(ch.signer().fingerprint() == me && ch.signer_device() == my_device))
                .map(|ch| conv.describe(&ch))
                .collect();
            if !changes.is_empty() {
                events.push(Event::ConversationMembershipChanged {
                    conversation: id,
                    changes,
                });
            }
            if unanswered {
                events.push(Event::ConversationUnanswered { conversation: id });
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
            events.push(Event::ConversationMessageRecalled {
                conversation,
                id,
                by,
                at_ms,
            });
        }
        Ok(events)
    }
}
