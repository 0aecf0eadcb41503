//! # hushwire-wasm
//!
//! The Hushwire core compiled to WebAssembly, with a small typed JavaScript API made by
//! `wasm-bindgen` (issue 16, part 1). There is no cryptography here: every method is a thin
//! wrapper over the core crate built with its pure-Rust backend (`docs/protocol.md` §1.3), so the
//! browser runs the very code the native client runs and the published vectors check both.
//!
//! - [`Account`] — a device's identity and prekeys (§3); accepts incoming sessions (§4).
//! - [`Session`] — the handshake (§4) and the Double Ratchet (§5) with one peer device.
//! - [`StorageKey`] — the 32-byte key accounts and sessions are sealed under (§7).
//! - [`VectorRng`] — **tests only**: replays published RNG draws so the test vectors can be
//!   reproduced byte for byte through this API.
//!
//! Secrets never cross into JavaScript: accounts and sessions are Rust objects behind
//! `wasm-bindgen` handles, and leave only sealed (`seal`). What does cross is public (keys,
//! bundles, fingerprints, wire messages) or what the caller asked for (plaintexts). Randomness
//! comes from `crypto.getRandomValues` (getrandom's `wasm_js` backend) on WebAssembly, from the
//! operating system natively. Every failure becomes a JavaScript `Error` whose message is the
//! core's error text, which never includes key material or plaintext.
//!
//! Call `free()` on objects you are done with: the WebAssembly memory they hold is otherwise
//! released only when the JavaScript garbage collector finalises them.
//!
//! Build and check: `scripts/build-wasm.sh`, then `node --test crates/hushwire-wasm/js-tests/`
//! (or `cargo test -p hushwire-wasm`, which runs both).

// `forbid` as in every crate of the workspace: wasm-bindgen's generated glue compiles under it.
#![forbid(unsafe_code)]

mod agent;
mod archive;
mod conversation;
mod staff_note;
mod web;
pub use agent::*;
pub use archive::*;
pub use conversation::*;
pub use staff_note::*;
pub use web::*;

use core::convert::Infallible;
use core::fmt;

use hushwire::proto::PreKeyBundle;
use hushwire::proto::codec::Codec;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, SeedableRng as _, TryCryptoRng, TryRng};
use wasm_bindgen::prelude::*;
use zeroize::Zeroizing;

/// A failure, carried to JavaScript as an `Error` whose message is the core's error text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    fn new(message: impl fmt::Display) -> Self {
        Self(message.to_string())
    }

    /// The message, as JavaScript sees it in `error.message`.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<Error> for JsValue {
    fn from(e: Error) -> Self {
        JsError::new(&e.0).into()
    }
}

type Result<T> = core::result::Result<T, Error>;

/// A fresh ChaCha20 generator for one call, seeded from the platform's secure generator as the
/// native client does (`crates/hushwire-client/src/os.rs`): `crypto.getRandomValues` on
/// WebAssembly. Fails (rather than continuing with a weak seed) if the platform has none.
fn os_rng() -> Result<ChaCha20Rng> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut())
        .map_err(|e| Error::new(format_args!("no secure randomness available: {e}")))?;
    Ok(ChaCha20Rng::from_seed(*seed))
}

/// Seconds since the Unix epoch, from a JavaScript number: an integer in `0..=2^53`.
fn unix_seconds(now: f64) -> Result<u64> {
    const MAX_SAFE: f64 = 9_007_199_254_740_992.0; // 2^53
    if now.is_finite() && (0.0..=MAX_SAFE).contains(&now) && now.fract() == 0.0 {
        // Exact: an integer no larger than 2^53.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(now as u64)
    } else {
        Err(Error::new(
            "nowSeconds must be a whole number of seconds between 0 and 2^53",
        ))
    }
}

fn count(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------------------------
// StorageKey
// ---------------------------------------------------------------------------------------------

/// The key accounts and sessions are sealed under (`docs/protocol.md` §7): 32 bytes the caller
/// derives or keeps (for example from a passphrase with Argon2id, `docs/client.md`).
/// Zeroized when freed; JavaScript's copy of the bytes is the caller's to overwrite.
#[wasm_bindgen]
pub struct StorageKey(hushwire::StorageKey);

#[wasm_bindgen]
impl StorageKey {
    /// Wraps 32 key bytes. Throws if `bytes` is not exactly 32 bytes long.
    #[wasm_bindgen(constructor)]
    pub fn new(bytes: &[u8]) -> Result<StorageKey> {
        let mut array = Zeroizing::new([0u8; 32]);
        if bytes.len() != array.len() {
            return Err(Error::new(format_args!(
                "a storage key is 32 bytes, not {}",
                bytes.len()
            )));
        }
        array.copy_from_slice(bytes);
        Ok(Self(hushwire::StorageKey::from_bytes(*array)))
    }
}

impl fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StorageKey(..)")
    }
}

// ---------------------------------------------------------------------------------------------
// Account
// ---------------------------------------------------------------------------------------------

/// A device's account (`docs/protocol.md` §3): its identity, signed prekey, last-resort ML-KEM
/// prekey and one-time prekeys. The private halves stay inside; only public keys, the prekey
/// bundle and the sealed account come out.
#[wasm_bindgen]
pub struct Account(hushwire::Account);

#[wasm_bindgen]
impl Account {
    /// Creates an account for device number `deviceId`: a new identity, a signed prekey (id 1)
    /// and a last-resort ML-KEM-1024 prekey (id 2), §3.1, §3.5, §3.7, §3.11. `nowSeconds` is the
    /// time in Unix seconds (`Math.floor(Date.now() / 1000)`), recorded as the signed prekey's
    /// creation time. Throws if `nowSeconds` is not a whole number in `0..=2^53` or the platform
    /// has no secure random generator.
    #[wasm_bindgen(constructor)]
    pub fn new(device_id: u32, now_seconds: f64) -> Result<Account> {
        let now = unix_seconds(now_seconds)?;
        Ok(Self(hushwire::Account::new(device_id, now, &mut os_rng()?)))
    }

    /// This device's number.
    #[wasm_bindgen(getter, js_name = deviceId)]
    pub fn device_id(&self) -> u32 {
        self.0.device_id()
    }

    /// The public identity key as encoded on the wire (§3.1, §3.2): Ed25519 key (32), X25519
    /// key (32), binding signature (64).
    #[wasm_bindgen(js_name = identityKey)]
    pub fn identity_key(&self) -> Vec<u8> {
        self.0.identity_key().to_bytes()
    }

    /// The identity's fingerprint (§3.3): 64 lowercase hex digits, what a person compares.
    pub fn fingerprint(&self) -> String {
        self.0.identity_key().fingerprint().to_string()
    }

    /// The prekey bundle a relay would hand out (§3.10), encoded: the current signed prekey, the
    /// lowest unused one-time X25519 prekey if any, the lowest unused one-time ML-KEM prekey or
    /// else the last-resort one. The account does not mark these keys used; only `accept` does.
    /// Throws only if the account holds no signed prekey (it always does after `new`).
    #[wasm_bindgen(js_name = prekeyBundle)]
    pub fn prekey_bundle(&self) -> Result<Vec<u8>> {
        self.0
            .prekey_bundle()
            .map(|b| b.to_bytes())
            .ok_or_else(|| Error::new("the account has no signed prekey"))
    }

    /// Generates up to `count` one-time X25519 prekeys (§3.6; fewer if the account would hold
    /// more than 10 000) and returns how many were made. Throws if there is no secure randomness.
    #[wasm_bindgen(js_name = generateOneTimePrekeys)]
    pub fn generate_one_time_prekeys(&mut self, count: u32) -> Result<u32> {
        let made = self
            .0
            .generate_one_time_prekeys(self::count(count), &mut os_rng()?);
        Ok(to_u32(made.len()))
    }

    /// Generates up to `count` one-time ML-KEM-1024 prekeys (§3.7), bounded like
    /// `generateOneTimePrekeys`, and returns how many were made. Throws if there is no secure
    /// randomness.
    #[wasm_bindgen(js_name = generateOneTimeKemPrekeys)]
    pub fn generate_one_time_kem_prekeys(&mut self, count: u32) -> Result<u32> {
        let made = self
            .0
            .generate_one_time_kem_prekeys(self::count(count), &mut os_rng()?);
        Ok(to_u32(made.len()))
    }

    /// How many unused one-time X25519 prekeys the account holds.
    #[wasm_bindgen(getter, js_name = oneTimePrekeyCount)]
    pub fn one_time_prekey_count(&self) -> u32 {
        to_u32(self.0.one_time_prekey_counts().0)
    }

    /// How many unused one-time ML-KEM prekeys the account holds.
    #[wasm_bindgen(getter, js_name = oneTimeKemPrekeyCount)]
    pub fn one_time_kem_prekey_count(&self) -> u32 {
        to_u32(self.0.one_time_prekey_counts().1)
    }

    /// Accepts a prekey message (a session's first message, §4.8): runs the responder's
    /// handshake, decrypts the message and, only if it authenticates, uses up the one-time
    /// prekeys it named. Throws with the core's reason (unknown or used prekey, authentication
    /// failed, malformed message, ...); on any error the account is unchanged.
    pub fn accept(&mut self, message: &[u8]) -> Result<Accepted> {
        self.accept_with(message, &mut os_rng()?)
    }

    /// Seals the account under `key` (§7; a fresh 24-byte nonce). Store the result; open it with
    /// `Account.unseal`. Throws if there is no secure randomness.
    pub fn seal(&self, key: &StorageKey) -> Result<Vec<u8>> {
        Ok(self.0.seal(&key.0, &mut os_rng()?))
    }

    /// Opens an account sealed by `seal`. Throws "sealed under a different key" for a wrong key,
    /// "failed authentication" for altered bytes, and the other §7 errors.
    pub fn unseal(sealed: &[u8], key: &StorageKey) -> Result<Account> {
        hushwire::Account::unseal(sealed, &key.0)
            .map(Self)
            .map_err(Error::new)
    }
}

impl Account {
    fn accept_with<R: CryptoRng + ?Sized>(
        &mut self,
        message: &[u8],
        rng: &mut R,
    ) -> Result<Accepted> {
        let inbound = self.0.accept(message, rng).map_err(Error::new)?;
        Ok(Accepted {
            session: Some(inbound.session),
            plaintext: inbound.plaintext,
        })
    }
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The core's Debug shows public values only.
        fmt::Debug::fmt(&self.0, f)
    }
}

/// What accepting a prekey message yields: the new session and the first message's plaintext.
#[wasm_bindgen]
pub struct Accepted {
    session: Option<hushwire::Session>,
    plaintext: Vec<u8>,
}

#[wasm_bindgen]
impl Accepted {
    /// The first message's plaintext.
    #[wasm_bindgen(getter)]
    pub fn plaintext(&self) -> Vec<u8> {
        self.plaintext.clone()
    }

    /// Takes the new session out. Throws if it was already taken.
    #[wasm_bindgen(js_name = takeSession)]
    pub fn take_session(&mut self) -> Result<Session> {
        self.session
            .take()
            .map(Session)
            .ok_or_else(|| Error::new("the session was already taken"))
    }
}

impl fmt::Debug for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accepted")
            .field("session", &self.session)
            .field("plaintext_len", &self.plaintext.len())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------------------------

/// An end-to-end encrypted session with one peer device: the hybrid X25519 + ML-KEM-1024
/// handshake (§4) then the Double Ratchet with encrypted headers (§5). Its keys stay inside;
/// persist it with `seal`.
#[wasm_bindgen]
pub struct Session(hushwire::Session);

#[wasm_bindgen]
impl Session {
    /// Starts a session from the peer's encoded prekey bundle (§4.7), as `account`'s identity.
    /// Throws if the bundle is malformed or a signature or key in it is invalid (§3.9), or if
    /// there is no secure randomness. Until the peer replies, `encrypt` makes prekey messages.
    pub fn initiate(account: &Account, bundle: &[u8]) -> Result<Session> {
        Self::initiate_with(account, bundle, &mut os_rng()?)
    }

    /// Encrypts `plaintext` (at most 65 536 bytes, §6.4) as the next message and returns its wire
    /// bytes (a prekey message until the peer's first reply has been decrypted, §6.2). Throws
    /// if the plaintext is too long.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.0.encrypt(plaintext).map_err(Error::new)
    }

    /// Decrypts a message of this session (§5.3), in any order within the skipped-key bounds
    /// (§5.4). Throws "message failed authentication" for an altered or foreign message, and the
    /// core's other reasons (already decrypted, too far ahead, malformed, §6.5); on any error the
    /// session is unchanged and goes on working.
    pub fn decrypt(&mut self, message: &[u8]) -> Result<Vec<u8>> {
        self.decrypt_with(message, &mut os_rng()?)
    }

    /// The safety number both people compare (§3.4): 60 digits, shown in twelve groups of five.
    #[wasm_bindgen(js_name = safetyNumber)]
    pub fn safety_number(&self) -> String {
        self.0.safety_number().digits().to_owned()
    }

    /// The peer's identity key as authenticated by the handshake, encoded as in
    /// `Account.identityKey` (128 bytes).
    #[wasm_bindgen(js_name = remoteIdentityKey)]
    pub fn remote_identity_key(&self) -> Vec<u8> {
        self.0.remote_identity().to_bytes()
    }

    /// The peer identity's fingerprint: 64 lowercase hex digits.
    #[wasm_bindgen(js_name = remoteFingerprint)]
    pub fn remote_fingerprint(&self) -> String {
        self.0.remote_identity().fingerprint().to_string()
    }

    /// True until a reply from the peer has been decrypted (our messages are prekey messages).
    #[wasm_bindgen(getter, js_name = awaitingReply)]
    pub fn awaiting_reply(&self) -> bool {
        self.0.awaiting_reply()
    }

    /// Messages the peer sent that have not arrived, by chain (§5.5). Empty when none are
    /// missing.
    #[wasm_bindgen(js_name = missingMessages)]
    pub fn missing_messages(&self) -> Vec<Gap> {
        self.0
            .missing_messages()
            .into_iter()
            .map(|g| Gap {
                chain: *g.chain.as_bytes(),
                missing: g.missing,
            })
            .collect()
    }

    /// Seals the session under `key` (§7; a fresh 24-byte nonce). Throws if there is no secure
    /// randomness.
    pub fn seal(&self, key: &StorageKey) -> Result<Vec<u8>> {
        Ok(self.0.seal(&key.0, &mut os_rng()?))
    }

    /// Opens a session sealed by `seal`. Throws for a wrong key, altered bytes, or a session of
    /// protocol version 1 (§7.5).
    pub fn unseal(sealed: &[u8], key: &StorageKey) -> Result<Session> {
        hushwire::Session::unseal(sealed, &key.0)
            .map(Self)
            .map_err(Error::new)
    }
}

impl Session {
    fn initiate_with<R: CryptoRng + ?Sized>(
        account: &Account,
        bundle: &[u8],
        rng: &mut R,
    ) -> Result<Session> {
        let bundle = PreKeyBundle::from_bytes(bundle).map_err(Error::new)?;
        hushwire::Session::initiate(account.0.identity(), &bundle, rng)
            .map(Self)
            .map_err(Error::new)
    }

    fn decrypt_with<R: CryptoRng + ?Sized>(
        &mut self,
        message: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>> {
        self.0.decrypt(message, rng).map_err(Error::new)
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The core's Debug shows the two identities and nothing secret.
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Messages missing from one of the peer's sending chains.
#[wasm_bindgen]
#[derive(Clone, Debug)]
pub struct Gap {
    chain: [u8; 32],
    missing: Vec<u32>,
}

#[wasm_bindgen]
impl Gap {
    /// The peer's ratchet public key naming the chain (32 bytes).
    #[wasm_bindgen(getter)]
    pub fn chain(&self) -> Vec<u8> {
        self.chain.to_vec()
    }

    /// The indices of the messages not yet received, ascending.
    #[wasm_bindgen(getter)]
    pub fn missing(&self) -> Vec<u32> {
        self.missing.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// VectorRng: tests only
// ---------------------------------------------------------------------------------------------

/// **For the published test vectors only — never in an application.** A "random" generator
/// that replays exactly the bytes it is given (the `draws` of `docs/vectors/*.json`, in order),
/// so the operations below reproduce the vectors byte for byte through this API. Keys made from
/// it are as secret as the bytes given, which are published.
///
/// Each method runs the operation of the same name with this generator instead of the
/// platform's. If the draws run out, the method throws "the test vector draws ran out" and
/// leaves the account or session it was given unchanged.
#[wasm_bindgen]
pub struct VectorRng {
    bytes: Vec<u8>,
    position: usize,
    overrun: bool,
}

#[wasm_bindgen]
impl VectorRng {
    /// A generator that will yield `draws` and then nothing.
    #[wasm_bindgen(constructor)]
    pub fn new(draws: &[u8]) -> VectorRng {
        Self {
            bytes: draws.to_vec(),
            position: 0,
            overrun: false,
        }
    }

    /// How many of the given bytes have not been drawn yet.
    #[wasm_bindgen(getter)]
    pub fn remaining(&self) -> u32 {
        to_u32(self.bytes.len().saturating_sub(self.position))
    }

    /// `new Account(deviceId, nowSeconds)`, drawing from this generator.
    #[wasm_bindgen(js_name = newAccount)]
    pub fn new_account(&mut self, device_id: u32, now_seconds: f64) -> Result<Account> {
        let now = unix_seconds(now_seconds)?;
        let account = hushwire::Account::new(device_id, now, self);
        self.check()?;
        Ok(Account(account))
    }

    /// `account.generateOneTimePrekeys(count)`, drawing from this generator.
    #[wasm_bindgen(js_name = generateOneTimePrekeys)]
    pub fn generate_one_time_prekeys(&mut self, account: &mut Account, count: u32) -> Result<u32> {
        let mut copy = account.0.clone();
        let made = copy.generate_one_time_prekeys(self::count(count), self);
        self.check()?;
        account.0 = copy;
        Ok(to_u32(made.len()))
    }

    /// `account.generateOneTimeKemPrekeys(count)`, drawing from this generator.
    #[wasm_bindgen(js_name = generateOneTimeKemPrekeys)]
    pub fn generate_one_time_kem_prekeys(
        &mut self,
        account: &mut Account,
        count: u32,
    ) -> Result<u32> {
        let mut copy = account.0.clone();
        let made = copy.generate_one_time_kem_prekeys(self::count(count), self);
        self.check()?;
        account.0 = copy;
        Ok(to_u32(made.len()))
    }

    /// `Session.initiate(account, bundle)`, drawing from this generator.
    pub fn initiate(&mut self, account: &Account, bundle: &[u8]) -> Result<Session> {
        let session = Session::initiate_with(account, bundle, self)?;
        self.check()?;
        Ok(session)
    }

    /// `account.accept(message)`, drawing from this generator.
    pub fn accept(&mut self, account: &mut Account, message: &[u8]) -> Result<Accepted> {
        let mut copy = Account(account.0.clone());
        let accepted = copy.accept_with(message, self)?;
        self.check()?;
        account.0 = copy.0;
        Ok(accepted)
    }

    /// `session.decrypt(message)`, drawing from this generator.
    pub fn decrypt(&mut self, session: &mut Session, message: &[u8]) -> Result<Vec<u8>> {
        let mut copy = Session(session.0.clone());
        let plaintext = copy.decrypt_with(message, self)?;
        self.check()?;
        session.0 = copy.0;
        Ok(plaintext)
    }

    /// `session.seal(key)`, drawing the nonce from this generator.
    #[wasm_bindgen(js_name = sealSession)]
    pub fn seal_session(&mut self, session: &Session, key: &StorageKey) -> Result<Vec<u8>> {
        let sealed = session.0.seal(&key.0, self);
        self.check()?;
        Ok(sealed)
    }

    /// `account.seal(key)`, drawing the nonce from this generator.
    #[wasm_bindgen(js_name = sealAccount)]
    pub fn seal_account(&mut self, account: &Account, key: &StorageKey) -> Result<Vec<u8>> {
        let sealed = account.0.seal(&key.0, self);
        self.check()?;
        Ok(sealed)
    }
}

impl VectorRng {
    fn check(&self) -> Result<()> {
        if self.overrun {
            Err(Error::new("the test vector draws ran out"))
        } else {
            Ok(())
        }
    }
}

impl fmt::Debug for VectorRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VectorRng")
            .field("remaining", &self.remaining())
            .finish_non_exhaustive()
    }
}

impl TryRng for VectorRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> core::result::Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> core::result::Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Copies the next bytes; past the end it yields zeros and marks the generator overrun,
    /// which every operation checks before it keeps any result.
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> core::result::Result<(), Infallible> {
        let end = self.position.saturating_add(dst.len());
        match self.bytes.get(self.position..end) {
            Some(src) => {
                dst.copy_from_slice(src);
                self.position = end;
            }
            None => {
                dst.fill(0);
                self.position = self.bytes.len();
                self.overrun = true;
            }
        }
        Ok(())
    }
}

impl TryCryptoRng for VectorRng {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The wrappers work natively too (the JavaScript checks run in `tests/node.rs`).
    #[test]
    fn round_trip_through_the_wrappers() {
        let alice = Account::new(1, 1_700_000_000.0).unwrap();
        let mut bob = Account::new(2, 1_700_000_000.0).unwrap();
        assert_eq!(bob.generate_one_time_prekeys(1).unwrap(), 1);
        let mut to_bob = Session::initiate(&alice, &bob.prekey_bundle().unwrap()).unwrap();
        let first = to_bob.encrypt(b"hello").unwrap();
        let mut accepted = bob.accept(&first).unwrap();
        assert_eq!(accepted.plaintext(), b"hello");
        assert_eq!(bob.one_time_prekey_count(), 0);
        let from_alice = accepted.take_session().unwrap();
        assert!(accepted.take_session().is_err());
        assert_eq!(from_alice.remote_fingerprint(), alice.fingerprint());
        assert_eq!(from_alice.safety_number(), to_bob.safety_number());

        let key = StorageKey::new(&[9; 32]).unwrap();
        let mut reloaded = Session::unseal(&from_alice.seal(&key).unwrap(), &key).unwrap();
        let reply = reloaded.encrypt(b"hi").unwrap();
        assert_eq!(to_bob.decrypt(&reply).unwrap(), b"hi");
        assert!(!to_bob.awaiting_reply());

        let mut tampered = reply.clone();
        *tampered.last_mut().unwrap() ^= 1;
        let err = to_bob.decrypt(&tampered).unwrap_err();
        assert!(!err.message().is_empty());
        let wrong = StorageKey::new(&[8; 32]).unwrap();
        assert!(Session::unseal(&from_alice.seal(&key).unwrap(), &wrong).is_err());
        assert!(StorageKey::new(&[0; 31]).is_err());
        assert!(Account::new(1, -1.0).is_err());
        assert!(Account::new(1, 0.5).is_err());
    }

    /// Debug output shows no secret: an account made from known bytes (its Ed25519 seed is
    /// `[7; 32]`), its session and a storage key print none of them.
    #[test]
    fn debug_output_holds_no_secret() {
        let account = VectorRng::new(&[7; 160]).new_account(1, 0.0).unwrap();
        let peer = VectorRng::new(&[9; 160]).new_account(2, 0.0).unwrap();
        let session = VectorRng::new(&[5; 96])
            .initiate(&account, &peer.prekey_bundle().unwrap())
            .unwrap();
        let key = StorageKey::new(&[0x5a; 32]).unwrap();
        assert_eq!(format!("{key:?}"), "StorageKey(..)");
        for text in [
            format!("{account:?}"),
            format!("{account:#?}"),
            format!("{session:?}"),
            format!("{session:#?}"),
        ] {
            for secret in ["7, 7, 7", "0707", "5, 5, 5", "0505", "90, 90", "5a5a"] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
        }
    }

    #[test]
    fn vector_rng_refuses_to_run_short_and_keeps_the_account() {
        let mut rng = VectorRng::new(&[7; 160]);
        let mut account = rng.new_account(1, 0.0).unwrap();
        assert_eq!(rng.remaining(), 0);
        let bundle = account.prekey_bundle().unwrap();
        // One one-time prekey needs 32 bytes; 31 are not enough.
        let mut short = VectorRng::new(&[1; 31]);
        let err = short
            .generate_one_time_prekeys(&mut account, 1)
            .unwrap_err();
        assert_eq!(err.message(), "the test vector draws ran out");
        assert_eq!(account.one_time_prekey_count(), 0);
        assert_eq!(account.prekey_bundle().unwrap(), bundle);
        // The same bytes make the same account.
        let again = VectorRng::new(&[7; 160]).new_account(1, 0.0).unwrap();
        assert_eq!(again.identity_key(), account.identity_key());
    }
}
