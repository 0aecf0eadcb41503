//! Message keys of messages not yet received: kept so late messages still decrypt, and listed
//! so the app can tell which messages are missing.
//!
//! Bounds (see `docs/protocol.md` §5.4): at most [`MAX_SKIPPED_KEYS`] keys across at most
//! [`MAX_SKIPPED_CHAINS`] chains. Past either bound the oldest keys are discarded and counted in
//! [`SkippedKeys::discarded`]; later messages keep decrypting, so a burst of reordering never
//! wedges a session. (vodozemac keeps at most 40 skipped keys per chain: a message is lost for
//! good if the first later message of its chain to arrive is more than 40 ahead of it, or if 40
//! more keys of that chain are stored after its own — routine when a relay drains a large
//! mailbox out of order. Here one chain may use the whole budget of 2000.)

use std::collections::VecDeque;

use hushwire_proto::X25519PublicKey;
use serde::{Deserialize, Serialize};

use super::keys::MessageKey;

/// The most message keys kept in total.
pub const MAX_SKIPPED_KEYS: usize = 2000;
/// The most distinct sender chains whose keys are kept.
pub const MAX_SKIPPED_CHAINS: usize = 5;

/// One kept key.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct SkippedKey {
    pub(crate) ratchet_key: [u8; 32],
    pub(crate) key: MessageKey,
}

/// Messages that are still missing from one of the peer's sending chains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The peer's ratchet key that identifies the chain.
    pub chain: X25519PublicKey,
    /// Indices of the messages not yet received, ascending.
    pub missing: Vec<u32>,
}

/// The store, oldest key first.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct SkippedKeys {
    entries: VecDeque<SkippedKey>,
    discarded: u64,
}

impl SkippedKeys {
    pub(crate) fn position(&self, ratchet_key: &X25519PublicKey, index: u32) -> Option<usize> {
        self.entries.iter().position(|e| {
            e.key.index == u64::from(index) && &e.ratchet_key == ratchet_key.as_bytes()
        })
    }

    /// True if any key of the chain named by `ratchet_key` is kept.
    pub(crate) fn has_chain(&self, ratchet_key: &X25519PublicKey) -> bool {
        self.entries
            .iter()
            .any(|e| &e.ratchet_key == ratchet_key.as_bytes())
    }

    pub(crate) fn get(&self, position: usize) -> Option<&MessageKey> {
        self.entries.get(position).map(|e| &e.key)
    }

    pub(crate) fn remove(&mut self, position: usize) {
        self.entries.remove(position);
    }

    /// Adds keys for one chain, counting `given_up` earlier keys of it that were never stored
    /// (a jump past [`super::MAX_SKIP`]), then enforces both bounds by discarding the oldest.
    pub(crate) fn extend(
        &mut self,
        ratchet_key: &X25519PublicKey,
        keys: Vec<MessageKey>,
        given_up: u64,
    ) {
        self.discarded += given_up;
        for key in keys {
            self.entries.push_back(SkippedKey {
                ratchet_key: *ratchet_key.as_bytes(),
                key,
            });
        }
        while self.entries.len() > MAX_SKIPPED_KEYS {
            self.entries.pop_front();
            self.discarded += 1;
        }
        while self.chain_count() > MAX_SKIPPED_CHAINS {
            let oldest = self.entries.front().map(|e| e.ratchet_key);
            while self.entries.front().map(|e| e.ratchet_key) == oldest && oldest.is_some() {
                self.entries.pop_front();
                self.discarded += 1;
            }
        }
    }

    /// Distinct chains, counted over runs: keys are appended chain by chain, so each chain's
    /// keys are contiguous.
    fn chain_count(&self) -> usize {
        let mut count = 0;
        let mut last: Option<&[u8; 32]> = None;
        for e in &self.entries {
            if last != Some(&e.ratchet_key) {
                count += 1;
                last = Some(&e.ratchet_key);
            }
        }
        count
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many keys were discarded to respect the bounds: messages that can no longer be read.
    pub(crate) fn discarded(&self) -> u64 {
        self.discarded
    }

    /// The missing messages, grouped by chain in the order the chains were seen.
    pub(crate) fn gaps(&self) -> Vec<Gap> {
        let mut gaps: Vec<Gap> = Vec::new();
        for e in &self.entries {
            let index = u32::try_from(e.key.index).unwrap_or(u32::MAX);
            match gaps.last_mut() {
                Some(g) if g.chain.as_bytes() == &e.ratchet_key => g.missing.push(index),
                _ => {
                    if let Ok(chain) = X25519PublicKey::from_array(e.ratchet_key, "ratchet key") {
                        gaps.push(Gap {
                            chain,
                            missing: vec![index],
                        });
                    }
                }
            }
        }
        for g in &mut gaps {
            g.missing.sort_unstable();
        }
        gaps
    }
}
