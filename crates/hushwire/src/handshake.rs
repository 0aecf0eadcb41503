//! The hybrid handshake (PQXDH-style, `docs/protocol.md` §4).
//!
//! ```text
//! DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)   DH4 = DH(EK_A, OPK_B)
//! (CT, SS) = ML-KEM-1024.Encaps(PQPK_B)
//! TH = SHA-256(HANDSHAKE_TRANSCRIPT ‖ IK_A ‖ IK_B ‖ device_id_B ‖ EK_A ‖ spk_id ‖ SPK_B ‖
//!              [opk_id ‖ OPK_B] ‖ pqpk_id ‖ PQPK_B ‖ CT)
//! SK ‖ HK_A ‖ NHK_B = HKDF-SHA256(salt = 0^32, ikm = 0xFF^32 ‖ DH1 ‖ DH2 ‖ DH3 ‖ [DH4] ‖ SS,
//!                                 info = KDF_HANDSHAKE ‖ TH, L = 96)
//! AD = IK_A.signing ‖ IK_A.dh ‖ IK_B.signing ‖ IK_B.dh
//! ```
//!
//! Hashing the transcript into the derivation binds every public value of the handshake (the
//! ML-KEM ciphertext and encapsulation key, the prekey ids, the base key, the signed prekey and
//! the responder's device id) to the keys, instead of relying on ML-KEM's internals and on how
//! keys are stored (`docs/protocol.md` §4.4).
//!
//! The 0xFF prefix keeps the KDF input laid out as in X3DH/PQXDH (where it separates X25519
//! from XEdDSA inputs; harmless here). The ML-KEM secret in the same HKDF input means an
//! attacker must break both X25519 and ML-KEM-1024 to learn `SK`.

use hushwire_proto::keys::KEM_CIPHERTEXT_LEN;
use hushwire_proto::{
    IdentityKey, KemPublicKey, OneTimePreKey, PreKeyBundle, SignedPreKey, X25519PublicKey, labels,
};
use ml_kem::kem::{Decapsulate as _, Encapsulate as _};
use ml_kem::{Ciphertext, EncapsulationKey, MlKem1024};
use rand_core::CryptoRng;
use sha2::{Digest as _, Sha256};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::error::SessionCreationError;
use crate::kdf::{hkdf, split_96};
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
    /// The handshake transcript hash `TH`.
    pub transcript_hash: [u8; 32],
    /// The handshake's first output, the first root key.
    pub shared_secret: [u8; 32],
    /// The initiator's first sending header key, `HK_A`.
    pub initiator_header_key: [u8; 32],
    /// The responder's first sending header key, `NHK_B`.
    pub responder_header_key: [u8; 32],
}

/// The handshake's outputs (`docs/protocol.md` §4.4): the first root key and the two initial
/// header keys of the Double Ratchet with header encryption (§5.1).
pub(crate) struct HandshakeKeys {
    /// `SK`, the first root key.
    pub shared_secret: Zeroizing<[u8; 32]>,
    /// `HK_A`: the key of the headers of the initiator's first sending chain.
    pub initiator_header_key: Zeroizing<[u8; 32]>,
    /// `NHK_B`: the key of the headers of the responder's first sending chain.
    pub responder_header_key: Zeroizing<[u8; 32]>,
}

/// Every public value of one handshake, hashed into its key derivation (§4.4).
pub(crate) struct Transcript<'a> {
    pub initiator: &'a IdentityKey,
    pub responder: &'a IdentityKey,
    pub responder_device_id: u32,
    pub base_key: &'a X25519PublicKey,
    pub signed_prekey: &'a SignedPreKey,
    pub one_time_prekey: Option<&'a OneTimePreKey>,
    pub kem_prekey_id: u32,
    pub kem_prekey: &'a KemPublicKey,
    pub kem_ciphertext: &'a [u8; KEM_CIPHERTEXT_LEN],
}

impl Transcript<'_> {
    /// `TH = SHA-256(HANDSHAKE_TRANSCRIPT ‖ IK_A.signing ‖ IK_A.dh ‖ IK_B.signing ‖ IK_B.dh ‖
    /// device_id_B[4] ‖ EK_A ‖ spk_id[4] ‖ SPK_B ‖ has_opk[1] ‖ (opk_id[4] ‖ OPK_B)? ‖
    /// pqpk_id[4] ‖ PQPK_B[1568] ‖ CT[1568])`.
    pub(crate) fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(labels::HANDSHAKE_TRANSCRIPT);
        h.update(self.initiator.public_bytes());
        h.update(self.responder.public_bytes());
        h.update(self.responder_device_id.to_be_bytes());
        h.update(self.base_key.as_bytes());
        h.update(self.signed_prekey.id.to_be_bytes());
        h.update(self.signed_prekey.key.as_bytes());
        match self.one_time_prekey {
            Some(k) => {
                h.update([1]);
                h.update(k.id.to_be_bytes());
                h.update(k.key.as_bytes());
            }
            None => h.update([0]),
        }
        h.update(self.kem_prekey_id.to_be_bytes());
        h.update(self.kem_prekey.as_bytes());
        h.update(self.kem_ciphertext);
        h.finalize().into()
    }
}

/// What the initiator's half of the handshake yields.
pub(crate) struct InitiatorHandshake {
    pub keys: HandshakeKeys,
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

/// Derives `SK ‖ HK_A ‖ NHK_B` from the DH outputs, the ML-KEM secret and the transcript hash.
fn derive_keys(dhs: &[&[u8; 32]], kem_secret: &[u8], transcript_hash: &[u8; 32]) -> HandshakeKeys {
    let mut ikm = Zeroizing::new(Vec::with_capacity(32 * (dhs.len() + 2)));
    ikm.extend_from_slice(&[0xff; 32]);
    for dh in dhs {
        ikm.extend_from_slice(dh.as_slice());
    }
    ikm.extend_from_slice(kem_secret);
    let mut info = Vec::with_capacity(labels::KDF_HANDSHAKE.len() + 32);
    info.extend_from_slice(labels::KDF_HANDSHAKE);
    info.extend_from_slice(transcript_hash);
    let [shared_secret, initiator_header_key, responder_header_key] =
        split_96(&hkdf::<96>(&[0u8; 32], &ikm, &info));
    HandshakeKeys {
        shared_secret,
        initiator_header_key,
        responder_header_key,
    }
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
    let mut kem_ciphertext = Box::new([0u8; KEM_CIPHERTEXT_LEN]);
    kem_ciphertext.copy_from_slice(ciphertext.as_slice());
    let transcript_hash = Transcript {
        initiator: identity.public(),
        responder: &bundle.identity,
        responder_device_id: bundle.device_id,
        base_key: &base_key,
        signed_prekey: &bundle.signed_prekey,
        one_time_prekey: bundle.one_time_prekey.as_ref(),
        kem_prekey_id: bundle.kem_prekey.id,
        kem_prekey: &bundle.kem_prekey.key,
        kem_ciphertext: &kem_ciphertext,
    }
    .hash();
    let keys = derive_keys(&dhs, kem_secret.as_slice(), &transcript_hash);

    Ok(InitiatorHandshake {
        #[cfg(feature = "test-vectors")]
        trace: HandshakeTrace {
            dh1: *dh1,
            dh2: *dh2,
            dh3: *dh3,
            dh4: dh4.as_deref().copied(),
            kem_shared_secret: *kem_secret,
            transcript_hash,
            shared_secret: *keys.shared_secret,
            initiator_header_key: *keys.initiator_header_key,
            responder_header_key: *keys.responder_header_key,
        },
        keys,
        associated_data: associated_data(identity.public(), &bundle.identity),
        base_key,
        kem_ciphertext,
    })
}

/// The responder's half, given its device id and the prekey secrets the message names.
#[allow(clippy::too_many_arguments)] // the handshake's inputs, each named as in §4.1
pub(crate) fn respond(
    identity: &IdentityKeyPair,
    device_id: u32,
    initiator: &IdentityKey,
    base_key: &X25519PublicKey,
    signed_prekey: &SignedPreKeySecret,
    one_time_prekey: Option<&OneTimePreKeySecret>,
    kem_prekey: &KemPreKeySecret,
    kem_ciphertext: &[u8; KEM_CIPHERTEXT_LEN],
) -> Result<(HandshakeKeys, [u8; ASSOCIATED_DATA_LEN]), SessionCreationError> {
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
    let transcript_hash = Transcript {
        initiator,
        responder: identity.public(),
        responder_device_id: device_id,
        base_key,
        signed_prekey: signed_prekey.public(),
        one_time_prekey: one_time_prekey.map(OneTimePreKeySecret::public),
        kem_prekey_id: kem_prekey.public().id,
        kem_prekey: &kem_prekey.public().key,
        kem_ciphertext,
    }
    .hash();
    let keys = derive_keys(&dhs, kem_secret.as_slice(), &transcript_hash);
    Ok((keys, associated_data(initiator, identity.public())))
}
