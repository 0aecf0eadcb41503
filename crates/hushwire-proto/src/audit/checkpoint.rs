//! Audit checkpoints: the writer's signature over its chain's head.

use ed25519_dalek::VerifyingKey;

use super::CHECKPOINT_TYPE;
use crate::codec::{Codec, DecodeError, Reader, read_header};
use crate::keys::SIGNATURE_LEN;
use crate::labels;
use crate::signer::{self, Signer};

/// The writer's signature over its chain's head: every record before `count` is fixed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AuditCheckpoint {
    /// The chain.
    pub chain_id: [u8; 16],
    /// How many records it covers (sequences `0..count`).
    pub count: u64,
    /// Hash of record `count - 1`, or the genesis hash when `count` is 0.
    pub head_hash: [u8; 32],
    /// When it was signed, in Unix milliseconds by the writer's clock.
    pub time_ms: u64,
    /// Ed25519 signature over `SIG_AUDIT_CHECKPOINT ‖` [`AuditCheckpoint::signed_message`].
    pub signature: [u8; SIGNATURE_LEN],
}

impl AuditCheckpoint {
    /// The bytes the signature covers after its context:
    /// `chain_id[16] ‖ count[8] ‖ head_hash[32] ‖ time_ms[8]`.
    pub fn signed_message(
        chain_id: &[u8; 16],
        count: u64,
        head_hash: &[u8; 32],
        time_ms: u64,
    ) -> [u8; 64] {
        let mut m = [0u8; 64];
        let (id, rest) = m.split_at_mut(16);
        let (c, rest) = rest.split_at_mut(8);
        let (h, t) = rest.split_at_mut(32);
        id.copy_from_slice(chain_id);
        c.copy_from_slice(&count.to_be_bytes());
        h.copy_from_slice(head_hash);
        t.copy_from_slice(&time_ms.to_be_bytes());
        m
    }

    /// Signs a checkpoint over the given head.
    pub fn sign<S: Signer + ?Sized>(
        signer: &S,
        chain_id: [u8; 16],
        count: u64,
        head_hash: [u8; 32],
        time_ms: u64,
    ) -> Self {
        let message = Self::signed_message(&chain_id, count, &head_hash, time_ms);
        Self {
            chain_id,
            count,
            head_hash,
            time_ms,
            signature: signer.sign(labels::SIG_AUDIT_CHECKPOINT, &message),
        }
    }

    /// Checks the signature under `key` (strict Ed25519).
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        let message =
            Self::signed_message(&self.chain_id, self.count, &self.head_hash, self.time_ms);
        signer::verify(key, labels::SIG_AUDIT_CHECKPOINT, &message, &self.signature)
    }
}

impl Codec for AuditCheckpoint {
    const NAME: &'static str = "audit checkpoint";

    /// `version[1] ‖ type[1]=0x41 ‖ chain_id[16] ‖ count[8] ‖ head_hash[32] ‖ time_ms[8] ‖
    /// signature[64]` (130 bytes).
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(labels::PROTOCOL_VERSION);
        out.push(CHECKPOINT_TYPE);
        out.extend_from_slice(&self.chain_id);
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.head_hash);
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        out.extend_from_slice(&self.signature);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        read_header(r, CHECKPOINT_TYPE, Self::NAME)?;
        Ok(Self {
            chain_id: r.array("audit chain id")?,
            count: r.u64("audit checkpoint count")?,
            head_hash: r.array("audit head hash")?,
            time_ms: r.u64("audit checkpoint time")?,
            signature: r.array("audit checkpoint signature")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::audit::CHECKPOINT_LEN;
    use crate::audit::test_support::*;

    #[test]
    fn checkpoint_signature_covers_every_field() {
        let (_, checkpoints) = chain_with(3, &[3]);
        let good = checkpoints[0];
        let public = key(1).verifying_key();
        assert!(good.verify(&public));
        let mut c = good;
        c.count += 1;
        assert!(!c.verify(&public));
        let mut c = good;
        c.time_ms += 1;
        assert!(!c.verify(&public));
        let mut c = good;
        c.head_hash[0] ^= 1;
        assert!(!c.verify(&public));
        let mut c = good;
        c.chain_id[0] ^= 1;
        assert!(!c.verify(&public));
        assert!(!good.verify(&key(2).verifying_key()));
    }

    proptest! {
        #[test]
        fn checkpoints_round_trip(checkpoint in arb_checkpoint()) {
            let bytes = checkpoint.to_bytes();
            prop_assert_eq!(bytes.len(), CHECKPOINT_LEN);
            prop_assert_eq!(AuditCheckpoint::from_bytes(&bytes), Ok(checkpoint));
        }
    }
}
