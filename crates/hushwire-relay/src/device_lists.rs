//! Published device lists kept in memory for the send path (`docs/relay-protocol.md` §5):
//! every `Send` checks that each recipient is still on its identity's list, and reading the
//! list from storage for every frame was one database round trip per message.
//!
//! An entry is dropped whenever its identity publishes a list: on this instance right after the
//! new list is stored, on the others when the `list:` notification arrives
//! ([`crate::STANDING_CHANNEL`]); the whole cache is dropped when that notification channel is
//! (re)connected, since notifications may have been missed meanwhile. A read that started
//! before a drop does not fill the cache (a generation counter), so a list read just before a
//! publish is never kept after it. With several PostgreSQL instances a send handled by another
//! instance in the milliseconds between a publish's commit and its notification may still see
//! the previous list; the device the new list removes is suspended too, so it cannot log in to
//! read such an envelope.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hushwire_proto::clinic::DeviceList;

/// At most this many identities' lists are kept (a device list is at most a few hundred
/// bytes); when full, the cache starts again empty.
pub const MAX_ENTRIES: usize = 65_536;

#[derive(Default)]
struct Inner {
    /// Moves on every drop: a fill from a read that began before it is ignored.
    generation: u64,
    /// `None`: the identity has published no list.
    lists: HashMap<[u8; 32], Option<Arc<DeviceList>>>,
}

/// The cache, shared by every connection of one relay instance.
#[derive(Default)]
pub struct DeviceListCache(Mutex<Inner>);

impl DeviceListCache {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every operation leaves the map consistent, so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached list of `identity` (`Some(None)`: it has none), or `None` on a miss, with
    /// the generation to hand to [`DeviceListCache::fill`] after reading it from storage.
    pub fn get(&self, identity: &[u8; 32]) -> (Option<Option<Arc<DeviceList>>>, u64) {
        let inner = self.inner();
        (inner.lists.get(identity).cloned(), inner.generation)
    }

    /// Keeps `list` for `identity` as read from storage, unless a list was published (any
    /// drop) since [`DeviceListCache::get`] returned `generation`.
    pub fn fill(&self, identity: [u8; 32], list: Option<Arc<DeviceList>>, generation: u64) {
        let mut inner = self.inner();
        if inner.generation != generation {
            return;
        }
        if inner.lists.len() >= MAX_ENTRIES {
            inner.lists.clear();
        }
        inner.lists.insert(identity, list);
    }

    /// `identity` published a list: forget what was kept for it.
    pub fn invalidate(&self, identity: &[u8; 32]) {
        let mut inner = self.inner();
        inner.generation += 1;
        inner.lists.remove(identity);
    }

    /// Forget everything (notifications of other instances' lists may have been missed).
    pub fn clear(&self) {
        let mut inner = self.inner();
        inner.generation += 1;
        inner.lists.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_began_before_a_publish_is_not_kept() {
        let cache = DeviceListCache::default();
        let (hit, generation) = cache.get(&[1; 32]);
        assert!(hit.is_none());
        cache.invalidate(&[1; 32]);
        cache.fill([1; 32], None, generation);
        assert!(
            cache.get(&[1; 32]).0.is_none(),
            "a stale read must not fill the cache"
        );
        let (_, generation) = cache.get(&[1; 32]);
        cache.fill([1; 32], None, generation);
        assert!(matches!(cache.get(&[1; 32]).0, Some(None)));
        cache.invalidate(&[1; 32]);
        assert!(cache.get(&[1; 32]).0.is_none());
        let (_, generation) = cache.get(&[2; 32]);
        cache.fill([2; 32], None, generation);
        cache.clear();
        assert!(cache.get(&[2; 32]).0.is_none());
    }
}
