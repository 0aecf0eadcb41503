//! A device's account: its identity and the private halves of every prekey it has published.
//! It is the responder's prekey store, and it makes consuming a one-time prekey explicit: a key
//! is removed exactly when a handshake that used it has authenticated its first message.

use core::fmt;
use std::collections::BTreeMap;

use hushwire_proto::codec::Codec;
use hushwire_proto::{
    IdentityKey, KemPreKey, KemPreKeyKind, OneTimePreKey, PreKeyBundle, SignedPreKey,
};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{DecryptionError, SessionCreationError, UnsealError};
use crate::handshake;
use crate::keys::{IdentityKeyPair, KemPreKeySecret, OneTimePreKeySecret, SignedPreKeySecret};
use crate::ratchet::RatchetKeyPair;
use crate::seal::{self, KIND_ACCOUNT, StorageKey};
use crate::session::{InboundSession, Session};
use crate::wire::PreKeyMessage;

/// How many signed prekeys (and last-resort ML-KEM prekeys) are kept: the current one and the
/// four before it, so a session started from a bundle and left unanswered still completes for
/// about a month at the client's weekly rotation (libsignal keeps old signed prekeys for a
/// while for the same reason). An older one is refused with
/// [`SessionCreationError::RetiredSignedPreKey`] and the client heals with a new session.
pub const KEPT_ROTATED_PREKEYS: usize = 5;
/// The most unused one-time prekeys of each kind an account holds.
pub const MAX_ONE_TIME_PREKEYS: usize = 10_000;

/// A device's identity and prekeys.
#[derive(Clone)]
pub struct Account {
    device_id: u32,
    identity: IdentityKeyPair,
    /// Oldest first; the last is current.
    signed_prekeys: Vec<SignedPreKeySecret>,
    /// Oldest first; the last is current.
    last_resort_kem_prekeys: Vec<KemPreKeySecret>,
    one_time_prekeys: BTreeMap<u32, OneTimePreKeySecret>,
    one_time_kem_prekeys: BTreeMap<u32, KemPreKeySecret>,
    next_prekey_id: u32,
}

impl Account {
    /// Creates an account: a new identity, a signed prekey (id 1) and a last-resort ML-KEM
    /// prekey (id 2). `now` is the caller's clock in Unix seconds.
    pub fn new<R: CryptoRng + ?Sized>(device_id: u32, now: u64, rng: &mut R) -> Self {
        let identity = IdentityKeyPair::generate(rng);
        Self::with_identity(identity, device_id, now, rng)
    }

    /// Creates an account for another device of an existing identity (a linked device,
    /// [`crate::linking`]): the shared identity, this device's number, and prekeys of its own —
    /// a signed prekey (id 1) and a last-resort ML-KEM prekey (id 2), signed over `device_id`.
    pub fn with_identity<R: CryptoRng + ?Sized>(
        identity: IdentityKeyPair,
        device_id: u32,
        now: u64,
        rng: &mut R,
    ) -> Self {
        let signed = SignedPreKeySecret::generate(&identity, device_id, 1, now, rng);
        let last_resort =
            KemPreKeySecret::generate(&identity, device_id, 2, KemPreKeyKind::LastResort, rng);
        Self {
            device_id,
            identity,
            signed_prekeys: vec![signed],
            last_resort_kem_prekeys: vec![last_resort],
            one_time_prekeys: BTreeMap::new(),
            one_time_kem_prekeys: BTreeMap::new(),
            next_prekey_id: 3,
        }
    }

    fn allocate_id(&mut self) -> u32 {
        // Ids wrap after 2^32 prekeys; skip any id still held so a wrap never replaces a key.
        loop {
            let id = self.next_prekey_id;
            self.next_prekey_id = self.next_prekey_id.wrapping_add(1).max(1);
            if !self.holds_prekey_id(id) {
                return id;
            }
        }
    }

    /// Whether this account issued `id`: ids are handed out in ascending order from 1. (Only
    /// the error's wording depends on this; after 2^32 prekeys, when ids wrap, an old id may be
    /// named "never issued".)
    fn issued(&self, id: u32) -> bool {
        id != 0 && id < self.next_prekey_id
    }

    fn holds_prekey_id(&self, id: u32) -> bool {
        self.one_time_prekeys.contains_key(&id)
            || self.one_time_kem_prekeys.contains_key(&id)
            || self.signed_prekeys.iter().any(|k| k.public().id == id)
            || self
                .last_resort_kem_prekeys
                .iter()
                .any(|k| k.public().id == id)
    }

    /// This device's number.
    pub fn device_id(&self) -> u32 {
        self.device_id
    }

    /// The private identity (for signing relay challenges and transcript checkpoints).
    pub fn identity(&self) -> &IdentityKeyPair {
        &self.identity
    }

    /// The public identity.
    pub fn identity_key(&self) -> &IdentityKey {
        self.identity.public()
    }

    /// The current signed prekey.
    pub fn signed_prekey(&self) -> Option<&SignedPreKey> {
        self.signed_prekeys.last().map(SignedPreKeySecret::public)
    }

    /// When the current signed prekey was made (caller's clock).
    pub fn signed_prekey_created_at(&self) -> Option<u64> {
        self.signed_prekeys.last().map(|k| k.created_at)
    }

    /// The current last-resort ML-KEM prekey.
    pub fn last_resort_kem_prekey(&self) -> Option<&KemPreKey> {
        self.last_resort_kem_prekeys
            .last()
            .map(KemPreKeySecret::public)
    }

    /// Makes a new signed prekey current, keeping the previous one for in-flight handshakes.
    pub fn rotate_signed_prekey<R: CryptoRng + ?Sized>(
        &mut self,
        now: u64,
        rng: &mut R,
    ) -> SignedPreKey {
        let id = self.allocate_id();
        let key = SignedPreKeySecret::generate(&self.identity, self.device_id, id, now, rng);
        let public = key.public().clone();
        self.signed_prekeys.push(key);
        if self.signed_prekeys.len() > KEPT_ROTATED_PREKEYS {
            self.signed_prekeys.remove(0);
        }
        public
    }

    /// Makes a new last-resort ML-KEM prekey current, keeping the previous one.
    pub fn rotate_last_resort_kem_prekey<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
    ) -> KemPreKey {
        let id = self.allocate_id();
        let key = KemPreKeySecret::generate(
            &self.identity,
            self.device_id,
            id,
            KemPreKeyKind::LastResort,
            rng,
        );
        let public = key.public().clone();
        self.last_resort_kem_prekeys.push(key);
        if self.last_resort_kem_prekeys.len() > KEPT_ROTATED_PREKEYS {
            self.last_resort_kem_prekeys.remove(0);
        }
        public
    }

    /// Generates up to `count` one-time X25519 prekeys (fewer if the account would exceed
    /// [`MAX_ONE_TIME_PREKEYS`]) and returns their public halves to upload.
    pub fn generate_one_time_prekeys<R: CryptoRng + ?Sized>(
        &mut self,
        count: usize,
        rng: &mut R,
    ) -> Vec<OneTimePreKey> {
        let room = MAX_ONE_TIME_PREKEYS.saturating_sub(self.one_time_prekeys.len());
        (0..count.min(room))
            .map(|_| {
                let id = self.allocate_id();
                let key = OneTimePreKeySecret::generate(id, rng);
                let public = key.public().clone();
                self.one_time_prekeys.insert(id, key);
                public
            })
            .collect()
    }

    /// Generates up to `count` one-time ML-KEM-1024 prekeys (bounded like
    /// [`Account::generate_one_time_prekeys`]) and returns their signed public halves.
    pub fn generate_one_time_kem_prekeys<R: CryptoRng + ?Sized>(
        &mut self,
        count: usize,
        rng: &mut R,
    ) -> Vec<KemPreKey> {
        let room = MAX_ONE_TIME_PREKEYS.saturating_sub(self.one_time_kem_prekeys.len());
        (0..count.min(room))
            .map(|_| {
                let id = self.allocate_id();
                let key = KemPreKeySecret::generate(
                    &self.identity,
                    self.device_id,
                    id,
                    KemPreKeyKind::OneTime,
                    rng,
                );
                let public = key.public().clone();
                self.one_time_kem_prekeys.insert(id, key);
                public
            })
            .collect()
    }

    /// Deletes the oldest one-time prekeys (lowest ids; a relay hands those out first) until at
    /// most `keep` X25519 and `keep_kem` ML-KEM ones remain, returning how many went of each.
    /// For keys handed out whose prekey message never came (a bundle fetched only to show a
    /// safety number, or a relay drained on purpose): keeping them for ever would stop the
    /// device from publishing new ones. A prekey message that names a retired key later fails
    /// with [`SessionCreationError::UsedOneTimePreKey`] or [`SessionCreationError::UsedKemPreKey`],
    /// and the client heals that session (`docs/client.md` §5.9, §5.13).
    pub fn retire_oldest_one_time_prekeys(
        &mut self,
        keep: usize,
        keep_kem: usize,
    ) -> (usize, usize) {
        let mut retired = (0, 0);
        while self.one_time_prekeys.len() > keep && self.one_time_prekeys.pop_first().is_some() {
            retired.0 += 1;
        }
        while self.one_time_kem_prekeys.len() > keep_kem
            && self.one_time_kem_prekeys.pop_first().is_some()
        {
            retired.1 += 1;
        }
        retired
    }

    /// How many unused one-time prekeys remain: (X25519, ML-KEM).
    pub fn one_time_prekey_counts(&self) -> (usize, usize) {
        (self.one_time_prekeys.len(), self.one_time_kem_prekeys.len())
    }

    /// A bundle as the relay would hand it out: the current signed prekey, the lowest-numbered
    /// unused one-time prekeys, else the last-resort ML-KEM key. Handy without a relay (tests,
    /// examples); the account does not mark these keys used — only [`Account::accept`] does.
    pub fn prekey_bundle(&self) -> Option<PreKeyBundle> {
        let kem_prekey = match self.one_time_kem_prekeys.values().next() {
            Some(k) => k.public().clone(),
            None => self.last_resort_kem_prekey()?.clone(),
        };
        Some(PreKeyBundle {
            device_id: self.device_id,
            identity: self.identity_key().clone(),
            signed_prekey: self.signed_prekey()?.clone(),
            one_time_prekey: self
                .one_time_prekeys
                .values()
                .next()
                .map(|k| k.public().clone()),
            kem_prekey,
        })
    }

    /// Accepts a prekey message: runs the responder's handshake with the prekeys it names,
    /// decrypts the first message, and only if that authenticates, consumes the one-time
    /// prekeys it used. A second message naming the same one-time prekey is refused with
    /// [`SessionCreationError::UsedOneTimePreKey`]; one naming an id never issued with
    /// [`SessionCreationError::UnknownOneTimePreKey`]. Draws 32 bytes from `rng` (the
    /// responder's first ratchet key). On any error the account is unchanged.
    pub fn accept<R: CryptoRng + ?Sized>(
        &mut self,
        message: &[u8],
        rng: &mut R,
    ) -> Result<InboundSession, SessionCreationError> {
        let message = PreKeyMessage::from_bytes(message)
            .map_err(|e| SessionCreationError::Decryption(DecryptionError::Malformed(e)))?;
        let signed = self
            .signed_prekeys
            .iter()
            .find(|k| k.public().id == message.signed_prekey_id)
            .ok_or(if self.issued(message.signed_prekey_id) {
                SessionCreationError::RetiredSignedPreKey(message.signed_prekey_id)
            } else {
                SessionCreationError::UnknownSignedPreKey(message.signed_prekey_id)
            })?;
        let one_time = match message.one_time_prekey_id {
            Some(id) => Some(self.one_time_prekeys.get(&id).ok_or(if self.issued(id) {
                SessionCreationError::UsedOneTimePreKey(id)
            } else {
                SessionCreationError::UnknownOneTimePreKey(id)
            })?),
            None => None,
        };
        let kem_id = message.kem_prekey_id;
        let kem = self
            .one_time_kem_prekeys
            .get(&kem_id)
            .or_else(|| {
                self.last_resort_kem_prekeys
                    .iter()
                    .find(|k| k.public().id == kem_id)
            })
            .ok_or(if self.issued(kem_id) {
                SessionCreationError::UsedKemPreKey(kem_id)
            } else {
                SessionCreationError::UnknownKemPreKey(kem_id)
            })?;

        let (keys, associated_data) = handshake::respond(
            &self.identity,
            self.device_id,
            &message.identity,
            &message.base_key,
            signed,
            one_time,
            kem,
            &message.kem_ciphertext,
        )?;
        let ratchet_key = RatchetKeyPair {
            secret: signed.secret.clone(),
            public: signed.public().key,
        };
        let inbound = Session::accept_first(
            &self.identity,
            &message,
            &keys,
            associated_data,
            ratchet_key,
            rng,
        )?;

        // Authenticated: now, and only now, the one-time keys are used up.
        if let Some(id) = message.one_time_prekey_id {
            self.one_time_prekeys.remove(&id);
        }
        self.one_time_kem_prekeys.remove(&kem_id);
        Ok(inbound)
    }

    /// Seals the account under `key` (24-byte nonce from `rng`).
    pub fn seal<R: CryptoRng + ?Sized>(&self, key: &StorageKey, rng: &mut R) -> Vec<u8> {
        let pickle = VersionedAccountPickle::V1(AccountPickleV1::from(self));
        let contents = Zeroizing::new(postcard::to_allocvec(&pickle).unwrap_or_default());
        seal::seal(KIND_ACCOUNT, &contents, key, rng)
    }

    /// Opens an account sealed by [`Account::seal`].
    pub fn unseal(sealed: &[u8], key: &StorageKey) -> Result<Self, UnsealError> {
        let contents = seal::unseal(KIND_ACCOUNT, sealed, key)?;
        let pickle: VersionedAccountPickle =
            postcard::from_bytes(&contents).map_err(|_| UnsealError::InvalidContents)?;
        match pickle {
            VersionedAccountPickle::V1(p) => p.restore().ok_or(UnsealError::InvalidContents),
        }
    }
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("device_id", &self.device_id)
            .field("identity", &self.identity.public().fingerprint())
            .field("one_time_prekeys", &self.one_time_prekeys.len())
            .field("one_time_kem_prekeys", &self.one_time_kem_prekeys.len())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
enum VersionedAccountPickle {
    V1(AccountPickleV1),
}

#[derive(Serialize, Deserialize)]
struct SignedPreKeyPickle {
    id: u32,
    created_at: u64,
    secret: Zeroizing<[u8; 32]>,
}

#[derive(Serialize, Deserialize)]
struct KemPreKeyPickle {
    id: u32,
    one_time: bool,
    /// The 64-byte FIPS 203 seed (serde has no 64-byte array form).
    seed: Zeroizing<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct AccountPickleV1 {
    device_id: u32,
    identity_signing: Zeroizing<[u8; 32]>,
    identity_dh: Zeroizing<[u8; 32]>,
    signed_prekeys: Vec<SignedPreKeyPickle>,
    one_time_prekeys: Vec<(u32, Zeroizing<[u8; 32]>)>,
    kem_prekeys: Vec<KemPreKeyPickle>,
    next_prekey_id: u32,
}

fn kem_pickle(k: &KemPreKeySecret) -> KemPreKeyPickle {
    KemPreKeyPickle {
        id: k.public().id,
        one_time: k.public().kind == KemPreKeyKind::OneTime,
        seed: Zeroizing::new(k.seed.to_vec()),
    }
}

impl From<&Account> for AccountPickleV1 {
    fn from(a: &Account) -> Self {
        let (signing, dh) = a.identity.to_secret_bytes();
        Self {
            device_id: a.device_id,
            identity_signing: Zeroizing::new(signing),
            identity_dh: Zeroizing::new(dh),
            signed_prekeys: a
                .signed_prekeys
                .iter()
                .map(|k| SignedPreKeyPickle {
                    id: k.public().id,
                    created_at: k.created_at,
                    secret: Zeroizing::new(k.secret.to_bytes()),
                })
                .collect(),
            one_time_prekeys: a
                .one_time_prekeys
                .iter()
                .map(|(id, k)| (*id, Zeroizing::new(k.secret.to_bytes())))
                .collect(),
            kem_prekeys: a
                .last_resort_kem_prekeys
                .iter()
                .chain(a.one_time_kem_prekeys.values())
                .map(kem_pickle)
                .collect(),
            next_prekey_id: a.next_prekey_id,
        }
    }
}

impl AccountPickleV1 {
    fn restore(self) -> Option<Account> {
        let identity =
            IdentityKeyPair::from_secret_bytes(*self.identity_signing, *self.identity_dh)?;
        let signed_prekeys = self
            .signed_prekeys
            .iter()
            .map(|k| {
                SignedPreKeySecret::restore(
                    &identity,
                    self.device_id,
                    k.id,
                    k.created_at,
                    *k.secret,
                )
            })
            .collect::<Option<Vec<_>>>()?;
        let one_time_prekeys = self
            .one_time_prekeys
            .iter()
            .map(|(id, secret)| OneTimePreKeySecret::restore(*id, **secret).map(|k| (*id, k)))
            .collect::<Option<BTreeMap<_, _>>>()?;
        let mut last_resort_kem_prekeys = Vec::new();
        let mut one_time_kem_prekeys = BTreeMap::new();
        for k in &self.kem_prekeys {
            let seed: [u8; 64] = k.seed.as_slice().try_into().ok()?;
            let kind = if k.one_time {
                KemPreKeyKind::OneTime
            } else {
                KemPreKeyKind::LastResort
            };
            let secret = KemPreKeySecret::from_seed(
                &identity,
                self.device_id,
                k.id,
                kind,
                Zeroizing::new(seed),
            );
            if k.one_time {
                one_time_kem_prekeys.insert(k.id, secret);
            } else {
                last_resort_kem_prekeys.push(secret);
            }
        }
        Some(Account {
            device_id: self.device_id,
            identity,
            signed_prekeys,
            last_resort_kem_prekeys,
            one_time_prekeys,
            one_time_kem_prekeys,
            next_prekey_id: self.next_prekey_id,
        })
    }
}
