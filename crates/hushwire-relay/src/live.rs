//! Live delivery from the writer's memory (`docs/relay-protocol.md` §5).
//!
//! Reading an envelope back after storing it costs a round trip to the database's worker
//! thread per delivery round, and on a 2-core machine those hand-offs between threads were the
//! relay's largest cost (`docs/performance.md`). A store whose commits are totally ordered (the
//! SQLite writer: one connection, positions that only grow) instead tells [`Connected`] of each
//! envelope right after its commit, and the recipient's connection, if it is on this instance,
//! sends it from a small bounded queue ([`LiveQueue`]).
//!
//! The invariant a connection relies on: every envelope committed for its device after it
//! joined [`Connected`] is either in its queue or was committed before the queue's
//! `overflowed` flag was set. So after one read of its mailbox (at login), the queue alone is
//! complete until it overflows, and after an overflow one more read (from the connection's
//! cursor) makes it complete again. Envelopes a read also returned are skipped by position.
//!
//! With PostgreSQL, several instances commit to one mailbox and the envelopes arrive in
//! `NOTIFY` payloads (small ones only; a larger one's notification just sets the flag), which
//! a dropped listener connection can miss. There a mailbox's positions are consecutive, so the
//! connection delivers a live envelope only if it is the one right after the last delivered,
//! and reads its mailbox when one is not.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{LockResult, Mutex, MutexGuard};

use hushwire_proto::relay::{Delivery, DeviceAddress};
use tokio::sync::Notify;

use hushwire_proto::audit::{AuditEvent, EnvelopeId};

use crate::audit_log::{AuditLog, device_ref};
use crate::storage::{CommitListener, Committed};

/// Most envelopes a connection's live queue holds; one more and it overflows (the connection
/// then reads its mailbox instead). The same as one delivery round.
pub(crate) const LIVE_ENVELOPES: usize = 64;
/// Most payload bytes a connection's live queue holds (256 KiB), whatever the count: a slow
/// reader's queue costs the relay at most this much memory.
pub(crate) const LIVE_BYTES: usize = 256 * 1024;

/// Envelopes committed for one connected device and not yet sent on its connection.
#[derive(Default)]
pub(crate) struct LiveQueue {
    items: VecDeque<(i64, Delivery)>,
    bytes: usize,
    /// Envelopes were left out since the last [`LiveQueue::take`]: read the mailbox.
    overflowed: bool,
}

impl LiveQueue {
    /// Queues an envelope just committed at `position`, or, if the queue is full, empties it
    /// and marks it overflowed (everything it held is in the mailbox too).
    fn offer(&mut self, position: i64, delivery: Delivery) {
        if self.overflowed {
            return;
        }
        let len = delivery.payload.len();
        if self.items.len() >= LIVE_ENVELOPES
            || (!self.items.is_empty() && self.bytes + len > LIVE_BYTES)
        {
            self.mark_read_needed();
            return;
        }
        self.bytes += len;
        self.items.push_back((position, delivery));
    }

    /// Makes the next [`LiveQueue::take`] ask for a mailbox read (something was stored that
    /// did not come through this queue).
    fn mark_read_needed(&mut self) {
        self.items = VecDeque::new();
        self.bytes = 0;
        self.overflowed = true;
    }

    /// Everything queued, in commit order, and whether envelopes were left out since the last
    /// take (then the caller must read its mailbox after this take). Leaves the queue empty.
    pub(crate) fn take(&mut self) -> (VecDeque<(i64, Delivery)>, bool) {
        self.bytes = 0;
        let overflowed = std::mem::take(&mut self.overflowed);
        (std::mem::take(&mut self.items), overflowed)
    }
}

/// What wakes a connected device's connection, and what it is handed.
pub(crate) struct Wakers {
    /// Envelopes arrived (in [`Wakers::live`], or in the mailbox only).
    pub(crate) mail: Notify,
    /// Envelopes committed since the connection last took them ([`live`](self)).
    pub(crate) live: Mutex<LiveQueue>,
    /// Conversation pushes may be waiting in storage (set before `mail` is notified; taken by
    /// the delivery round that reads them). Starts set: a new connection looks once.
    pub(crate) pushes: AtomicBool,
    /// Its one-time prekeys run low.
    pub(crate) prekeys_low: Notify,
    /// A newer connection of the same device authenticated: this one closes with
    /// [`crate::CLOSE_CONNECTED_ELSEWHERE`].
    pub(crate) replaced: Notify,
    /// The clinic changed this device's standing (suspended, ordered wiped, or a revocation
    /// list that may revoke its certificate): the connection checks it again from storage.
    pub(crate) standing: Notify,
    /// The serial of the certificate the device's identity held when it authenticated, if
    /// any: a new revocation list wakes only the connections it may concern.
    pub(crate) serial: Mutex<Option<u64>>,
}

impl Wakers {
    /// Makes the connection read its mailbox on its next round (envelopes were stored that its
    /// live queue does not hold) and wakes it.
    pub(crate) fn read_mailbox(&self) {
        if let Ok(mut queue) = self.live.lock() {
            queue.mark_read_needed();
        }
        self.mail.notify_one();
    }
}

impl Default for Wakers {
    fn default() -> Self {
        Self {
            mail: Notify::new(),
            live: Mutex::new(LiveQueue::default()),
            pushes: AtomicBool::new(true),
            prekeys_low: Notify::new(),
            replaced: Notify::new(),
            standing: Notify::new(),
            serial: Mutex::new(None),
        }
    }
}

/// The devices connected to this instance (the newest connection of each).
#[derive(Default)]
pub(crate) struct Connected(Mutex<HashMap<DeviceAddress, std::sync::Arc<Wakers>>>);

impl Connected {
    /// The map itself.
    pub(crate) fn lock(
        &self,
    ) -> LockResult<MutexGuard<'_, HashMap<DeviceAddress, std::sync::Arc<Wakers>>>> {
        self.0.lock()
    }
}

impl Connected {
    /// Every connection reads its mailbox on its next round (notifications may have been
    /// missed).
    pub(crate) fn read_all_mailboxes(&self) {
        if let Ok(map) = self.0.lock() {
            for w in map.values() {
                w.read_mailbox();
            }
        }
    }
}

impl CommitListener for Connected {
    fn committed(&self, envelopes: Vec<Committed>) {
        let Ok(map) = self.0.lock() else {
            return;
        };
        for c in envelopes {
            if let Some(w) = map.get(&c.recipient) {
                if let Ok(mut queue) = w.live.lock() {
                    queue.offer(c.position, c.delivery);
                }
                w.mail.notify_one();
            }
        }
    }
}

/// What a store that tells of its commits (SQLite) is given: each committed envelope enters
/// the audit chain as stored, then goes to its recipient's live queue, so the chain never
/// shows an envelope delivered before it was stored.
pub(crate) struct CommitSink {
    pub(crate) connected: std::sync::Arc<Connected>,
    pub(crate) audit: std::sync::Arc<AuditLog>,
}

impl CommitListener for CommitSink {
    fn committed(&self, envelopes: Vec<Committed>) {
        for c in &envelopes {
            self.audit.record(
                c.delivery.server_time_ms,
                AuditEvent::EnvelopeStored {
                    sender: device_ref(&c.delivery.sender),
                    recipient: device_ref(&c.recipient),
                    envelope: EnvelopeId(c.delivery.server_id),
                    size: u32::try_from(c.delivery.payload.len()).unwrap_or(u32::MAX),
                },
            );
        }
        self.connected.committed(envelopes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(len: usize) -> Delivery {
        Delivery {
            server_id: [7; 16],
            sender: DeviceAddress {
                fingerprint: [1; 32],
                device_id: 1,
            },
            server_time_ms: 5,
            payload: vec![0; len],
        }
    }

    #[test]
    fn a_queue_keeps_commit_order_until_it_overflows() {
        let mut q = LiveQueue::default();
        for p in 1..=LIVE_ENVELOPES as i64 {
            q.offer(p, delivery(10));
        }
        let (items, overflowed) = q.take();
        assert!(!overflowed);
        let positions: Vec<i64> = items.iter().map(|(p, _)| *p).collect();
        assert_eq!(positions, (1..=LIVE_ENVELOPES as i64).collect::<Vec<_>>());
        // One more than fits: everything is dropped and the next take says so, once.
        for p in 0..=LIVE_ENVELOPES as i64 {
            q.offer(100 + p, delivery(10));
        }
        q.offer(500, delivery(10));
        let (items, overflowed) = q.take();
        assert!(items.is_empty() && overflowed);
        q.offer(501, delivery(10));
        let (items, overflowed) = q.take();
        assert_eq!(items.len(), 1);
        assert!(!overflowed);
    }

    #[test]
    fn a_queue_is_bounded_in_bytes_but_takes_one_large_envelope() {
        let mut q = LiveQueue::default();
        q.offer(1, delivery(LIVE_BYTES + 1));
        let (items, overflowed) = q.take();
        assert_eq!((items.len(), overflowed), (1, false));
        q.offer(2, delivery(LIVE_BYTES / 2));
        q.offer(3, delivery(LIVE_BYTES / 2));
        q.offer(4, delivery(1));
        let (items, overflowed) = q.take();
        assert!(items.is_empty() && overflowed);
    }
}
