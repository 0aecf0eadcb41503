//! Who signs checkpoints (of audit chains and transcripts): a device's identity key in the
//! client, the relay's own Ed25519 key in the relay. Verification only needs the public key.

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::keys::{SIGNATURE_LEN, verify_signature};

/// Signs `context ‖ message` with an Ed25519 key.
pub trait Signer {
    /// The Ed25519 public key that verifies this signer's signatures.
    fn verifying_key(&self) -> VerifyingKey;
    /// Signs `context ‖ message`.
    fn sign(&self, context: &[u8], message: &[u8]) -> [u8; SIGNATURE_LEN];
}

impl Signer for SigningKey {
    fn verifying_key(&self) -> VerifyingKey {
        SigningKey::verifying_key(self)
    }

    fn sign(&self, context: &[u8], message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut signed = Vec::with_capacity(context.len() + message.len());
        signed.extend_from_slice(context);
        signed.extend_from_slice(message);
        ed25519_dalek::Signer::sign(self, &signed).to_bytes()
    }
}

/// Checks a signature made by a [`Signer`] (strict Ed25519 verification).
pub fn verify(
    key: &VerifyingKey,
    context: &[u8],
    message: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> bool {
    verify_signature(key, context, message, signature)
}
