//! Connections not yet authenticated, counted per IP address and in total
//! (`docs/relay-protocol.md` §1). A connection counts from the moment it is accepted until its
//! device authenticates (or it closes): half-open HTTP requests, upgrades and unanswered
//! challenges all hold a place, so one address cannot hold thousands of them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The counts, shared by the accept loop and the connections.
pub struct PendingConnections {
    per_address: usize,
    total: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingRefusal {
    /// This address already holds `--max-pending-per-address` pending connections.
    PerAddress,
    /// The relay holds `--max-pending` pending connections.
    Total,
}

impl PendingRefusal {
    /// The `reason` label it is counted under.
    pub fn reason(self) -> &'static str {
        match self {
            Self::PerAddress => "pending_per_address",
            Self::Total => "pending_total",
        }
    }
}

/// One pending connection's place, given back when the last clone is dropped (the accept
/// task's after the upgrade, the WebSocket connection's at authentication).
pub struct PendingPlace {
    owner: Arc<PendingConnections>,
    address: IpAddr,
}

impl PendingConnections {
    /// At most `per_address` pending connections per IP address and `total` in all.
    pub fn new(per_address: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            per_address: per_address.max(1),
            total: total.max(1),
            counts: Mutex::new(Counts::default()),
        })
    }

    /// A place for a new connection from `address`, or why there is none.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Arc<PendingPlace>, PendingRefusal> {
        let Ok(mut counts) = self.counts.lock() else {
            return Err(PendingRefusal::Total);
        };
        if counts.total >= self.total {
            return Err(PendingRefusal::Total);
        }
        let held = counts.by_address.entry(address).or_insert(0);
        if *held >= self.per_address {
            return Err(PendingRefusal::PerAddress);
        }
        *held += 1;
        counts.total += 1;
        Ok(Arc::new(PendingPlace {
            owner: self.clone(),
            address,
        }))
    }

    /// Pending connections now, in total.
    pub fn total(&self) -> usize {
        self.counts.lock().map_or(0, |c| c.total)
    }
}

impl Drop for PendingPlace {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.owner.counts.lock() {
            counts.total = counts.total.saturating_sub(1);
            if let Some(held) = counts.by_address.get_mut(&self.address) {
                *held = held.saturating_sub(1);
                if *held == 0 {
                    counts.by_address.remove(&self.address);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn places_are_capped_per_address_and_in_total_and_given_back_on_drop() {
        let pending = PendingConnections::new(2, 3);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let a1 = pending.admit(a).unwrap();
        let a2 = pending.admit(a).unwrap();
        assert!(matches!(pending.admit(a), Err(PendingRefusal::PerAddress)));
        let b1 = pending.admit(b).unwrap();
        assert!(matches!(pending.admit(b), Err(PendingRefusal::Total)));
        // A place held by two owners (accept task and connection) is given back once both drop.
        let a1_clone = a1.clone();
        drop(a1);
        assert!(pending.admit(b).is_err());
        drop(a1_clone);
        assert_eq!(pending.total(), 2);
        let b2 = pending.admit(b).unwrap();
        drop((a2, b1, b2));
        assert_eq!(pending.total(), 0);
    }
}
