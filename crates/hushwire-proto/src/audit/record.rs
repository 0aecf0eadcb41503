//! Audit records: one hash-linked entry of a chain, and the genesis hash the first links to.

use sha2::{Digest, Sha256};

use super::{AuditEvent, MAX_EVENT_LEN, RECORD_HEADER_LEN, RECORD_TYPE};
use crate::codec::{Codec, DecodeError, Reader, read_header};
use crate::labels;

/// The `previous_hash` of a chain's first record: SHA-256(`AUDIT_GENESIS ‖ chain_id[16]`). It
/// ties every record to its chain, so records of one chain never verify as another's.
pub fn genesis_hash(chain_id: &[u8; 16]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(labels::AUDIT_GENESIS);
    h.update(chain_id);
    h.finalize().into()
}

/// One entry of an audit chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AuditRecord {
    /// Position in the chain, from 0.
    pub sequence: u64,
    /// When the writer logged it, in Unix milliseconds by the writer's clock. Covered by the
    /// hash, but nothing checks that it increases: a clock can step back.
    pub time_ms: u64,
    /// What happened.
    pub event: AuditEvent,
    /// [`AuditRecord::hash`] of the record before, or [`genesis_hash`] for record 0.
    pub previous_hash: [u8; 32],
}

impl AuditRecord {
    /// SHA-256(`AUDIT_RECORD ‖ encoded record`), version and type bytes included.
    pub fn hash(&self) -> [u8; 32] {
        let mut encoded = Vec::with_capacity(RECORD_HEADER_LEN + MAX_EVENT_LEN);
        self.encode(&mut encoded);
        let mut h = Sha256::new();
        h.update(labels::AUDIT_RECORD);
        h.update(&encoded);
        h.finalize().into()
    }
}

impl Codec for AuditRecord {
    const NAME: &'static str = "audit record";

    /// `version[1] ‖ type[1]=0x40 ‖ sequence[8] ‖ time_ms[8] ‖ previous_hash[32] ‖ event[2..=95]`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(labels::PROTOCOL_VERSION);
        out.push(RECORD_TYPE);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        out.extend_from_slice(&self.previous_hash);
        self.event.encode(out);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        read_header(r, RECORD_TYPE, Self::NAME)?;
        Ok(Self {
            sequence: r.u64("audit sequence")?,
            time_ms: r.u64("audit time")?,
            previous_hash: r.array("audit previous hash")?,
            event: AuditEvent::read(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::audit::test_support::*;
    use crate::audit::{AuditCheckpoint, CHECKPOINT_LEN, CHECKPOINT_TYPE};

    #[test]
    fn decoding_refuses_bad_headers_tags_and_trailing_bytes() {
        let (records, checkpoints) = chain_with(1, &[1]);
        let bytes = records[0].to_bytes();
        assert_eq!(bytes.len(), RECORD_HEADER_LEN + 37);

        let mut b = bytes.clone();
        b[0] = 2;
        assert_eq!(
            AuditRecord::from_bytes(&b),
            Err(DecodeError::UnsupportedVersion { version: 2 })
        );
        let mut b = bytes.clone();
        b[1] = CHECKPOINT_TYPE;
        assert_eq!(
            AuditRecord::from_bytes(&b),
            Err(DecodeError::UnknownType {
                structure: "audit record",
                tag: CHECKPOINT_TYPE
            })
        );
        let mut b = bytes.clone();
        b[RECORD_HEADER_LEN] = 0x7f;
        assert_eq!(
            AuditRecord::from_bytes(&b),
            Err(DecodeError::UnknownType {
                structure: "audit event",
                tag: 0x7f
            })
        );
        let mut b = bytes.clone();
        b.push(0);
        assert_eq!(
            AuditRecord::from_bytes(&b),
            Err(DecodeError::TrailingBytes {
                structure: "audit record"
            })
        );
        assert!(matches!(
            AuditRecord::from_bytes(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated { .. })
        ));

        let c = checkpoints[0].to_bytes();
        assert_eq!(c.len(), CHECKPOINT_LEN);
        assert_eq!(AuditCheckpoint::from_bytes(&c), Ok(checkpoints[0]));
        let mut longer = c.clone();
        longer.push(0);
        assert!(AuditCheckpoint::from_bytes(&longer).is_err());
        assert!(AuditCheckpoint::from_bytes(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn records_round_trip(record in arb_record()) {
            let bytes = record.to_bytes();
            prop_assert!(bytes.len() <= RECORD_HEADER_LEN + MAX_EVENT_LEN);
            prop_assert_eq!(AuditRecord::from_bytes(&bytes), Ok(record));
        }


        /// Decoding is total, and whatever decodes re-encodes to exactly the input.
        #[test]
        fn decoding_is_total_and_canonical(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(r) = AuditRecord::from_bytes(&bytes) {
                prop_assert_eq!(r.to_bytes(), bytes.clone());
            }
            if let Ok(c) = AuditCheckpoint::from_bytes(&bytes) {
                prop_assert_eq!(c.to_bytes(), bytes.clone());
            }
            if let Ok(e) = AuditEvent::from_bytes(&bytes) {
                prop_assert_eq!(e.to_bytes(), bytes);
            }
        }

        /// Random bytes rarely decode at all; start from valid encodings and damage them.
        #[test]
        fn damaged_encodings_decode_canonically_or_not_at_all(
            record in arb_record(),
            at in any::<prop::sample::Index>(),
            xor in 1u8..,
            cut in any::<bool>(),
        ) {
            let mut bytes = record.to_bytes();
            if cut {
                bytes.truncate(at.index(bytes.len()));
            } else {
                let i = at.index(bytes.len());
                bytes[i] ^= xor;
            }
            if let Ok(r) = AuditRecord::from_bytes(&bytes) {
                prop_assert_eq!(r.to_bytes(), bytes);
            }
        }
    }
}
