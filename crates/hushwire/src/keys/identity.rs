//! A device's long-term identity: an Ed25519 signing key and an X25519 DH key it binds.

use core::fmt;

use ed25519_dalek::{Signer as _, SigningKey};
use hushwire_proto::keys::identity_binding_message;
use hushwire_proto::{IdentityKey, labels};
use rand_core::CryptoRng;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use super::{generate_x25519, x25519_from_secret};

/// The private identity of one device. Zeroized on drop; `Debug` shows only the fingerprint.
#[derive(Clone)]
pub struct IdentityKeyPair {
    signing: SigningKey,
    dh: StaticSecret,
    public: IdentityKey,
}

impl IdentityKeyPair {
    /// Generates an identity: 32 bytes from `rng` for the Ed25519 secret, then 32 for the X25519
    /// secret, then signs the binding.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        let signing = SigningKey::from_bytes(&seed);
        let (dh, dh_public) = generate_x25519(rng);
        let message =
            identity_binding_message(signing.verifying_key().as_bytes(), dh_public.as_bytes());
        let binding = sign(&signing, labels::SIG_IDENTITY_BINDING, &message);
        // Our own signature over our own keys always verifies; `IdentityKey::new` re-checks it anyway.
        match IdentityKey::new(signing.verifying_key().to_bytes(), dh_public, binding) {
            Ok(public) => Self {
                signing,
                dh,
                public,
            },
            // Unreachable for a correct Ed25519 implementation; retrying keeps this total.
            Err(_) => Self::generate(rng),
        }
    }

    /// The public identity.
    pub fn public(&self) -> &IdentityKey {
        &self.public
    }

    /// Signs `context ‖ message` with the Ed25519 identity key.
    pub fn sign(&self, context: &[u8], message: &[u8]) -> [u8; 64] {
        sign(&self.signing, context, message)
    }

    pub(crate) fn dh_secret(&self) -> &StaticSecret {
        &self.dh
    }

    /// The secret bytes for sealed persistence: Ed25519 seed, X25519 secret.
    pub(crate) fn to_secret_bytes(&self) -> ([u8; 32], [u8; 32]) {
        (self.signing.to_bytes(), self.dh.to_bytes())
    }

    /// Rebuilds from [`Self::to_secret_bytes`], re-deriving and re-signing the public identity.
    pub(crate) fn from_secret_bytes(signing: [u8; 32], dh: [u8; 32]) -> Option<Self> {
        let signing = SigningKey::from_bytes(&signing);
        let (dh, dh_public) = x25519_from_secret(dh)?;
        let message =
            identity_binding_message(signing.verifying_key().as_bytes(), dh_public.as_bytes());
        let binding = sign(&signing, labels::SIG_IDENTITY_BINDING, &message);
        let public =
            IdentityKey::new(signing.verifying_key().to_bytes(), dh_public, binding).ok()?;
        Some(Self {
            signing,
            dh,
            public,
        })
    }
}

fn sign(key: &SigningKey, context: &[u8], message: &[u8]) -> [u8; 64] {
    let mut signed = Vec::with_capacity(context.len() + message.len());
    signed.extend_from_slice(context);
    signed.extend_from_slice(message);
    key.sign(&signed).to_bytes()
}

impl hushwire_proto::Signer for IdentityKeyPair {
    fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.signing.verifying_key()
    }

    fn sign(&self, context: &[u8], message: &[u8]) -> [u8; 64] {
        sign(&self.signing, context, message)
    }
}

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKeyPair({})", self.public.fingerprint())
    }
}
