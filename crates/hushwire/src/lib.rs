//! # hushwire
//!
//! The Hushwire core: end-to-end encryption for regulated live chat, **sans-IO**. It opens no
//! sockets or files, reads no clock and owns no random generator: the caller passes a
//! [`rand_core::CryptoRng`] and, where a time matters, the time. That makes it deterministic
//! under a seeded RNG (the test vectors in `docs/vectors/` rely on it), fuzzable, and embeddable
//! anywhere.
//!
//! - [`Account`] — a device's identity and prekeys; accepts incoming sessions.
//! - [`Session`] — a hybrid X25519 + ML-KEM-1024 handshake followed by the Double Ratchet.
//! - [`wire`] — the session messages' explicit byte format.
//! - [`StorageKey`] — sealed persistence of accounts and sessions under the caller's key.
//! - [`linking`] — handing a person's identity to their new device under a one-time code.
//!
//! ```
//! use hushwire::{Account, Session};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut rng = rand_chacha::ChaCha20Rng::from_seed([7; 32]);
//! # use rand_core::SeedableRng as _;
//! let alice = Account::new(1, 0, &mut rng);
//! let mut bob = Account::new(2, 0, &mut rng);
//! bob.generate_one_time_prekeys(1, &mut rng);
//!
//! let bundle = bob.prekey_bundle().ok_or("bob has no signed prekey")?;
//! let mut to_bob = Session::initiate(alice.identity(), &bundle, &mut rng)?;
//! let wire = to_bob.encrypt(b"hello, clinic")?;
//!
//! let mut inbound = bob.accept(&wire, &mut rng)?;
//! assert_eq!(inbound.plaintext, b"hello, clinic");
//! let reply = inbound.session.encrypt(b"hello, patient")?;
//! assert_eq!(to_bob.decrypt(&reply, &mut rng)?, b"hello, patient");
//! # Ok(())
//! # }
//! ```
//!
//! The protocol is specified in `docs/protocol.md` and the byte layouts in
//! `docs/wire-format.md`.

#![forbid(unsafe_code)]

mod account;
pub mod archive;
pub mod cipher;
pub mod display;
pub mod error;
mod handshake;
mod kdf;
pub mod keys;
pub mod linking;
pub mod payload;
pub mod ratchet;
pub mod seal;
pub mod sealed_file;
mod session;
pub mod transcript;
pub mod wire;

pub use account::{Account, KEPT_ROTATED_PREKEYS, MAX_ONE_TIME_PREKEYS};
pub use error::{DecryptionError, EncryptionError, SessionCreationError, UnsealError};
#[cfg(feature = "test-vectors")]
pub use handshake::HandshakeTrace;
pub use hushwire_proto as proto;
pub use keys::IdentityKeyPair;
pub use ratchet::Gap;
pub use seal::StorageKey;
#[cfg(feature = "test-vectors")]
pub use session::MessageTrace;
pub use session::{DecryptedMessage, InboundSession, Session};
