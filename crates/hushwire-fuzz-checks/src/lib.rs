//! # hushwire-fuzz-checks
//!
//! The whole body of every Hushwire fuzz target, one `pub fn <target>(data: &[u8])` each. The
//! libFuzzer binaries in `fuzz/fuzz_targets/` are three-line wrappers around these functions,
//! and `tests/replay.rs` runs each of them over `fuzz/seeds/<target>/` (and a local
//! `fuzz/corpus/<target>/`), so a plain `cargo test` exercises every target without a fuzzer.
//!
//! Each target feeds untrusted bytes to one decoder family and checks, beyond "no panic":
//! - **canonicity**: whatever decodes re-encodes to exactly the input bytes, so one value has
//!   one encoding and signatures or hashes over encodings cannot be malleated;
//! - **state safety**: input that is refused leaves persistent state byte-identical;
//! - for [`conversation()`], the protocol invariants of two parties under an adversarial network;
//!   for [`conversation_members`], those of a clinic conversation of six member devices (pairwise
//!   fan-out, signed membership changes, members that learn them late).
//!
//! Everything keyed is built from fixed ChaCha20 seeds in [`fixtures`], so a crash reproduces
//! from its input alone.

#![forbid(unsafe_code)]
// These functions are test oracles: a failed assertion (or an unwrap of something that must
// succeed) is exactly how a fuzzer reports a bug, so the library-code bans do not apply here.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod audit;
pub mod clinic;
pub mod conversation;
pub mod fixtures;
pub mod members;
pub mod membership;
pub mod payload;
pub mod session;
pub mod transcript;
pub mod wire;

pub use audit::audit_record;
pub use clinic::clinic_structures;
pub use conversation::conversation;
pub use members::conversation_members;
pub use membership::conversation_structures;
pub use payload::client_payload;
pub use session::{session_decrypt, unseal};
pub use transcript::{export_reader, transcript_record};
pub use wire::{decode_bundle, decode_message, relay_frame};

/// A fuzz target's body: takes any bytes, and panics only when it found a bug.
pub type Target = fn(&[u8]);

/// Every fuzz target: its name (the libFuzzer binary, and the directory of its seeds and
/// corpus) and its body.
pub const TARGETS: &[(&str, Target)] = &[
    ("decode_message", decode_message),
    ("decode_bundle", decode_bundle),
    ("relay_frame", relay_frame),
    ("audit_record", audit_record),
    ("transcript_record", transcript_record),
    ("export_reader", export_reader),
    ("session_decrypt", session_decrypt),
    ("unseal", unseal),
    ("conversation", conversation),
    ("client_payload", client_payload),
    ("clinic_structures", clinic_structures),
    ("conversation_structures", conversation_structures),
    ("conversation_members", conversation_members),
];
