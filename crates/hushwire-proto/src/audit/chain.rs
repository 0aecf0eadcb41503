//! The writing end of an audit chain.

use super::{AuditCheckpoint, AuditEvent, AuditRecord, genesis_hash};
use crate::signer::Signer;

/// The writing end of an audit chain: numbers records, links each to the one before, and signs
/// checkpoints. Holds only the chain id, the count and the head hash, so a writer that restarts
/// continues from its stored head with [`AuditChain::resume`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AuditChain {
    chain_id: [u8; 16],
    count: u64,
    head: [u8; 32],
}

impl AuditChain {
    /// A new, empty chain. `chain_id` should be random and never reused.
    pub fn new(chain_id: [u8; 16]) -> Self {
        Self {
            chain_id,
            count: 0,
            head: genesis_hash(&chain_id),
        }
    }

    /// Continues a chain that already holds `count` records, the last of which hashes to
    /// `head_hash` (its [`AuditRecord::hash`]; for `count == 0`, the genesis hash).
    pub fn resume(chain_id: [u8; 16], count: u64, head_hash: [u8; 32]) -> Self {
        Self {
            chain_id,
            count,
            head: head_hash,
        }
    }

    /// The chain's id.
    pub fn chain_id(&self) -> [u8; 16] {
        self.chain_id
    }

    /// Appends an event: returns the record to store and advances the head. The caller must
    /// store the record before acting on the next event, or the chain will have a gap.
    pub fn append(&mut self, time_ms: u64, event: AuditEvent) -> AuditRecord {
        let record = AuditRecord {
            sequence: self.count,
            time_ms,
            event,
            previous_hash: self.head,
        };
        self.head = record.hash();
        // 2^64 records are out of reach; saturating keeps this total without a panic path.
        self.count = self.count.saturating_add(1);
        record
    }

    /// Signs the current head: every record appended so far becomes fixed.
    pub fn checkpoint<S: Signer + ?Sized>(&self, signer: &S, time_ms: u64) -> AuditCheckpoint {
        AuditCheckpoint::sign(signer, self.chain_id, self.count, self.head, time_ms)
    }

    /// Hash of the last record (the genesis hash while the chain is empty).
    pub fn head(&self) -> [u8; 32] {
        self.head
    }

    /// How many records the chain holds.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether the chain holds no record yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::test_support::*;
    use crate::audit::{DeviceRef, EnvelopeId};
    use crate::codec::Codec;
    use crate::keys::Fingerprint;

    /// Fixed values an independent implementation can check against (also in docs/audit.md).
    #[test]
    fn test_vector() {
        let chain_id = [0x11; 16];
        assert_eq!(
            hex(&genesis_hash(&chain_id)),
            "58a90539d8570a63b57b58891cfe3f4d52d9a6eba84502af478e21aff3c1c48d"
        );
        let mut chain = AuditChain::new(chain_id);
        let record = chain.append(
            1_700_000_000_000,
            AuditEvent::EnvelopeDelivered {
                recipient: DeviceRef {
                    fingerprint: Fingerprint([0x22; 32]),
                    device_id: 3,
                },
                envelope: EnvelopeId([0x33; 16]),
            },
        );
        assert_eq!(
            hex(&record.to_bytes()),
            concat!(
                "0140",
                "0000000000000000",
                "0000018bcfe56800",
                "58a90539d8570a63b57b58891cfe3f4d52d9a6eba84502af478e21aff3c1c48d",
                "11",
                "2222222222222222222222222222222222222222222222222222222222222222",
                "00000003",
                "33333333333333333333333333333333",
            )
        );
        assert_eq!(
            hex(&record.hash()),
            "c41ce6f72b63cef525a213e520aadccc4c44ecc66b33dc7bfdadf7605c6e8c44"
        );
        let checkpoint = chain.checkpoint(&key(0x44), 1_700_000_001_000);
        assert_eq!(
            hex(&checkpoint.to_bytes()),
            concat!(
                "0141",
                "11111111111111111111111111111111",
                "0000000000000001",
                "c41ce6f72b63cef525a213e520aadccc4c44ecc66b33dc7bfdadf7605c6e8c44",
                "0000018bcfe56be8",
                "da8ffac4d7cfa25518955dd927eda1a36a97a524b65b7148e7b3d0202f7f8961",
                "e8ce94ed186ebdc5f7c033d66e54f6f9de05acfd714443d893cb129df2e8b203",
            )
        );
    }

    #[test]
    fn resume_continues_the_same_chain() {
        let (records, _) = chain_with(20, &[]);
        let mut chain = AuditChain::new(CHAIN);
        for r in &records[..12] {
            chain.append(r.time_ms, r.event);
        }
        let mut resumed = AuditChain::resume(CHAIN, chain.len(), chain.head());
        let rest: Vec<_> = records[12..]
            .iter()
            .map(|r| resumed.append(r.time_ms, r.event))
            .collect();
        assert_eq!(rest, records[12..]);
        assert_eq!(resumed.len(), 20);
        assert!(!resumed.is_empty());
        assert_eq!(resumed.head(), records[19].hash());
        assert_eq!(resumed.chain_id(), CHAIN);
        assert!(AuditChain::new(CHAIN).is_empty());
        assert_eq!(AuditChain::new(CHAIN).head(), genesis_hash(&CHAIN));
    }
}
