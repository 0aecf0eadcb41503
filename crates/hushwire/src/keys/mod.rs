//! Private keys: a device's identity and its prekeys. Their public halves, and the bundle built
//! from them, are `hushwire_proto` types so the relay can check them without this crate.

mod identity;
mod prekeys;

pub use identity::IdentityKeyPair;
pub use prekeys::{KemPreKeySecret, OneTimePreKeySecret, SignedPreKeySecret};

use hushwire_proto::X25519PublicKey;
use rand_core::CryptoRng;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// A fresh X25519 key pair from `rng`. The public key of a clamped secret is always canonical
/// and of large order, so the check in `X25519PublicKey::from_array` passes; the loop only makes
/// that fact not depend on reasoning (it never repeats).
pub(crate) fn generate_x25519<R: CryptoRng + ?Sized>(
    rng: &mut R,
) -> (StaticSecret, X25519PublicKey) {
    loop {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        let secret = StaticSecret::from(*bytes);
        if let Ok(public) = X25519PublicKey::from_array(PublicKey::from(&secret).to_bytes(), "key")
        {
            return (secret, public);
        }
    }
}

/// X25519, refusing an all-zero output (the peer's key had small order). Decoding already
/// refuses small-order encodings; this is the second, independent check the spec requires.
pub(crate) fn diffie_hellman(
    secret: &StaticSecret,
    public: &X25519PublicKey,
) -> Option<Zeroizing<[u8; 32]>> {
    let shared = secret.diffie_hellman(&PublicKey::from(*public.as_bytes()));
    shared
        .was_contributory()
        .then(|| Zeroizing::new(shared.to_bytes()))
}

/// Rebuilds an X25519 key pair from stored secret bytes.
pub(crate) fn x25519_from_secret(bytes: [u8; 32]) -> Option<(StaticSecret, X25519PublicKey)> {
    let secret = StaticSecret::from(bytes);
    let public = X25519PublicKey::from_array(PublicKey::from(&secret).to_bytes(), "key").ok()?;
    Some((secret, public))
}
