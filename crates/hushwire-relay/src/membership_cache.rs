//! Verified conversation memberships kept in memory (`docs/relay-protocol.md` §3.6), so that
//! `ConversationSend` and the other frames that need only the membership at the head do not
//! re-read and re-verify the whole stored history for every frame.
//!
//! An entry is the `MembershipLog` rebuilt and verified from a conversation's stored history,
//! tagged with the head epoch and head hash it reached. It is used only when the conversation
//! row read for the request names that same head epoch and head hash: any change stored since,
//! by this instance or by another sharing the database, moves the stored head epoch (the
//! compare-and-set of §5.4), so a stale entry is never used; the head hash chains every change
//! from the conversation's genesis, so an equal hash is the same history. The cache is bounded
//! ([`MAX_ENTRIES`]); when full, an arbitrary entry is dropped. A miss costs what every request
//! cost before: the history is replayed and verified.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hushwire_proto::conversation::MembershipLog;

/// At most this many conversations' memberships are kept (a few KiB each: §3.6).
pub const MAX_ENTRIES: usize = 4096;

/// The cache, shared by every connection of one relay instance.
#[derive(Debug)]
pub struct MembershipCache {
    capacity: usize,
    entries: Mutex<HashMap<[u8; 16], Arc<MembershipLog>>>,
}

impl Default for MembershipCache {
    fn default() -> Self {
        Self::with_capacity(MAX_ENTRIES)
    }
}

impl MembershipCache {
    /// A cache of at most `capacity` entries (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], Arc<MembershipLog>>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map itself is
        // always consistent (every operation is a single insert or remove).
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The verified membership of `conversation` if it is held at exactly this head: the next
    /// epoch `head_epoch` and the head hash `head_hash` of the stored conversation row.
    pub fn get(
        &self,
        conversation: [u8; 16],
        head_epoch: u64,
        head_hash: &[u8; 32],
    ) -> Option<Arc<MembershipLog>> {
        self.entries()
            .get(&conversation)
            .filter(|log| log.next_epoch() == head_epoch && &log.head() == head_hash)
            .cloned()
    }

    /// Keeps `log`, verified by the caller, as `conversation`'s membership at its own head,
    /// replacing any older one; drops an arbitrary other entry when full.
    pub fn insert(&self, conversation: [u8; 16], log: Arc<MembershipLog>) {
        let mut entries = self.entries();
        if !entries.contains_key(&conversation)
            && entries.len() >= self.capacity
            && let Some(victim) = entries.keys().next().copied()
        {
            entries.remove(&victim);
        }
        entries.insert(conversation, log);
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hushwire_proto::audit::ConversationId;
    use hushwire_proto::clinic::OrgKey;

    fn log(id: u8) -> Arc<MembershipLog> {
        let org = OrgKey::new(ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key())
            .expect("a strong key");
        Arc::new(MembershipLog::new(ConversationId([id; 16]), org))
    }

    #[test]
    fn used_only_at_the_same_head_epoch_and_hash() {
        let cache = MembershipCache::default();
        let l = log(1);
        let head = l.head();
        cache.insert([1; 16], Arc::clone(&l));
        assert!(cache.get([1; 16], 0, &head).is_some());
        // Another epoch, another hash, another conversation: not used.
        assert!(cache.get([1; 16], 1, &head).is_none());
        assert!(cache.get([1; 16], 0, &[0; 32]).is_none());
        assert!(cache.get([2; 16], 0, &head).is_none());
    }

    #[test]
    fn bounded() {
        let cache = MembershipCache::with_capacity(3);
        for id in 0..10 {
            cache.insert([id; 16], log(id));
            assert!(cache.len() <= 3);
        }
        assert_eq!(cache.len(), 3);
        // The newest entry is always held; replacing an entry does not evict another.
        let last = log(9);
        assert!(cache.get([9; 16], 0, &last.head()).is_some());
        cache.insert([9; 16], last);
        assert_eq!(cache.len(), 3);
    }
}
