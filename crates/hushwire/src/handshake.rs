//! The hybrid handshake (PQXDH-style, `docs/protocol.md` §4).
//!
//! ```text
//! DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)   DH4 = DH(EK_A, OPK_B)
//! (CT, SS) = ML-KEM-1024.Encaps(PQPK_B)
//! SK = HKDF-SHA256(salt = 0^32, ikm = 0xFF^32 ‖ DH1 ‖ DH2 ‖ DH3 ‖ [DH4] ‖ SS,
//!                  info = KDF_HANDSHAKE, L = 32)
//! AD = IK_A.signing ‖ IK_A.dh ‖ IK_B.signing ‖ IK_B.dh
//! ```
//!
//! The 0xFF prefix keeps the KDF input laid out as in X3DH/PQXDH (where it separates X25519
//! from XEdDSA inputs; harmless here). The ML-KEM secret in the same HKDF input means an
//! attacker must break both X25519 and ML-KEM-1024 to learn `SK`.

use hushwire_proto::keys::KEM_CIPHERTEXT_LEN;
use hushwire_proto::{IdentityKey, PreKeyBundle, X25519PublicKey, labels};
use ml_kem::kem::{Decapsulate as _, Encapsulate as _};
use ml_kem::{Ciphertext, EncapsulationKey, MlKem1024};
use rand_core::CryptoRng;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::error::SessionCreationError;
use crate::kdf::hkdf;
use crate::keys::{
    IdentityKeyPair, KemPreKeySecret, OneTimePreKeySecret, SignedPreKeySecret, diffie_hellman,
    generate_x25519,
};

/// Length of the session's associated data: both identities' public bytes.
pub const ASSOCIATED_DATA_LEN: usize = 128;

/// The handshake's intermediate secrets, published in the test vectors. Only built with the
/// `test-vectors` feature.
#[cfg(feature = "test-vectors")]
#[derive(Clone, Debug, Default)]
pub struct HandshakeTrace {
    /// DH(IK_A, SPK_B).
    pub dh1: [u8; 32],
    /// DH(EK_A, IK_B).
    pub dh2: [u8; 32],
    /// DH(EK_A, SPK_B).
    pub dh3: [u8; 32],
    /// DH(EK_A, OPK_B), if a one-time prekey was used.
    pub dh4: Option<[u8; 32]>,
    /// The ML-KEM shared secret.
    pub kem_shared_secret: [u8; 32],
    /// The handshake's output, the first root key.
    pub shared_secret: [u8; 32],
}

/// What the initiator's half of the handshake yields.
pub(crate) struct InitiatorHandshake {
    pub shared_secret: Zeroizing<[u8; 32]>,
    pub associated_data: [u8; ASSOCIATED_DATA_LEN],
    pub base_key: X25519PublicKey,
    pub kem_ciphertext: Box<[u8; KEM_CIPHERTEXT_LEN]>,
    #[cfg(feature = "test-vectors")]
    pub trace: HandshakeTrace,
}

/// `IK_A ‖ IK_B` as public bytes.
pub(crate) fn associated_data(
    initiator: &IdentityKey,
    responder: &IdentityKey,
) -> [u8; ASSOCIATED_DATA_LEN] {
    let mut ad = [0u8; ASSOCIATED_DATA_LEN];
    let (a, b) = ad.split_at_mut(64);
    a.copy_from_slice(&initiator.public_bytes());
    b.copy_from_slice(&responder.public_bytes());
    ad
}

fn dh(
    secret: &StaticSecret,
    public: &X25519PublicKey,
) -> Result<Zeroizing<[u8; 32]>, SessionCreationError> {
    diffie_hellman(secret, public).ok_or(SessionCreationError::NonContributoryKey)
}

/// Derives `SK` from the DH outputs and the ML-KEM secret.
fn derive_shared_secret(dhs: &[&[u8; 32]], kem_secret: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(32 * (dhs.len() + 2)));
    ikm.extend_from_slice(&[0xff; 32]);
    for dh in dhs {
        ikm.extend_from_slice(dh.as_slice());
    }
    ikm.extend_from_slice(kem_secret);
    hkdf::<32>(&[0u8; 32], &ikm, labels::KDF_HANDSHAKE)
}

/// The initiator's half: checks the bundle, draws `EK_A` (32 bytes from `rng`), then the ML-KEM
/// encapsulation randomness (32 more), and derives `SK`.
pub(crate) fn initiate<R: CryptoRng + ?Sized>(
    identity: &IdentityKeyPair,
    bundle: &PreKeyBundle,
    rng: &mut R,
) -> Result<InitiatorHandshake, SessionCreationError> {
    bundle.verify()?;
    let kem_key = EncapsulationKey::<MlKem1024>::new(&(*bundle.kem_prekey.key.as_bytes()).into())
        .map_err(|_| SessionCreationError::InvalidKemPublicKey)?;

    let (ephemeral, base_key) = generate_x25519(rng);
    let dh1 = dh(identity.dh_secret(), &bundle.signed_prekey.key)?;
    let dh2 = dh(&ephemeral, bundle.identity.dh_key())?;
    let dh3 = dh(&ephemeral, &bundle.signed_prekey.key)?;
    let dh4 = match &bundle.one_time_prekey {
        Some(otpk) => Some(dh(&ephemeral, &otpk.key)?),
        None => None,
    };
    let (ciphertext, kem_secret) = kem_key.encapsulate_with_rng(rng);
    let kem_secret = Zeroizing::new(<[u8; 32]>::from(kem_secret));

    let mut dhs: Vec<&[u8; 32]> = vec![&dh1, &dh2, &dh3];
    if let Some(dh4) = &dh4 {
        dhs.push(dh4);
    }
    let shared_secret = derive_shared_secret(&dhs, kem_secret.as_slice());

    let mut kem_ciphertext = Box::new([0u8; KEM_CIPHERTEXT_LEN]);
    kem_ciphertext.copy_from_slice(ciphertext.as_slice());
    Ok(InitiatorHandshake {
        #[cfg(feature = "test-vectors")]
        trace: HandshakeTrace {
            dh1: *dh1,
            dh2: *dh2,
            dh3: *dh3,
            dh4: dh4.as_deref().copied(),
            kem_shared_secret: *kem_secret,
            shared_secret: *shared_secret,
        },
        shared_secret,
        associated_data: associated_data(identity.public(), &bundle.identity),
        base_key,
        kem_ciphertext,
    })
}

/// The responder's half, given the prekey secrets the message names.
pub(crate) fn respond(
    identity: &IdentityKeyPair,
    initiator: &IdentityKey,
    base_key: &X25519PublicKey,
    signed_prekey: &SignedPreKeySecret,
    one_time_prekey: Option<&OneTimePreKeySecret>,
    kem_prekey: &KemPreKeySecret,
    kem_ciphertext: &[u8; KEM_CIPHERTEXT_LEN],
) -> Result<(Zeroizing<[u8; 32]>, [u8; ASSOCIATED_DATA_LEN]), SessionCreationError> {
    let dh1 = dh(&signed_prekey.secret, initiator.dh_key())?;
    let dh2 = dh(identity.dh_secret(), base_key)?;
    let dh3 = dh(&signed_prekey.secret, base_key)?;
    let dh4 = match one_time_prekey {
        Some(otpk) => Some(dh(&otpk.secret, base_key)?),
        None => None,
    };
    let ciphertext = Ciphertext::<MlKem1024>::from(*kem_ciphertext);
    // ML-KEM decapsulation never fails: a wrong ciphertext yields an unrelated secret (implicit
    // rejection), and the first message then fails authentication.
    let kem_secret = Zeroizing::new(<[u8; 32]>::from(
        kem_prekey.decapsulation_key.decapsulate(&ciphertext),
    ));

    let mut dhs: Vec<&[u8; 32]> = vec![&dh1, &dh2, &dh3];
    if let Some(dh4) = &dh4 {
        dhs.push(dh4);
    }
    let shared_secret = derive_shared_secret(&dhs, kem_secret.as_slice());
    Ok((shared_secret, associated_data(initiator, identity.public())))
}
