//! Many programs through the `conversation_members` check: random ones from a fixed seed (so a
//! failure reproduces, and names its program in hex), plus one that walks through removal,
//! a stale sender and a forged message on purpose. Each run's [`Stats`] show the programs
//! reach every path the invariants speak about, so the invariants are not vacuously true.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use hushwire_fuzz_checks::members::{MAX_STEPS, Stats, Step, conversation_members_stats};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng as _};

/// How many random programs one `cargo test` runs.
const PROGRAMS: usize = 300;

fn program(steps: &[Step]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in steps {
        s.encode(&mut out);
    }
    out
}

#[test]
fn random_programs_keep_the_invariants() {
    let mut rng = ChaCha20Rng::from_seed([0x4d; 32]);
    let mut total = Stats::default();
    for i in 0..PROGRAMS {
        // Up to about 2.5 bytes a step: most programs run into MAX_STEPS.
        let len = usize::try_from(rng.next_u32() % 700).unwrap();
        let mut data = vec![0; len];
        rng.fill_bytes(&mut data);
        let stats = catch_unwind(AssertUnwindSafe(|| conversation_members_stats(&data)))
            .unwrap_or_else(|_| panic!("program {i} failed: {}", hex::encode(&data)));
        assert!(stats.steps <= MAX_STEPS);
        total.steps += stats.steps;
        total.changes_accepted += stats.changes_accepted;
        total.changes_refused += stats.changes_refused;
        total.copies_made += stats.copies_made;
        total.stale_sends += stats.stale_sends;
        total.copies_dropped_as_removed += stats.copies_dropped_as_removed;
        total.copies_decrypted += stats.copies_decrypted;
        total.messages_accepted += stats.messages_accepted;
        total.messages_refused += stats.messages_refused;
        total.copies_lost += stats.copies_lost;
        total.attacks_refused += stats.attacks_refused;
    }
    println!("{PROGRAMS} programs: {total:?}");
    assert!(
        total.changes_accepted > 0 && total.changes_refused > 0,
        "{total:?}"
    );
    assert!(
        total.stale_sends > 0 && total.copies_dropped_as_removed > 0,
        "{total:?}"
    );
    assert!(
        total.messages_accepted > 0 && total.messages_refused > 0,
        "{total:?}"
    );
    assert!(total.attacks_refused > 0, "{total:?}");
}

#[test]
fn steps_round_trip() {
    let mut rng = ChaCha20Rng::from_seed([0x4e; 32]);
    let mut data = vec![0; 2048];
    rng.fill_bytes(&mut data);
    let steps = Step::parse(&data);
    assert_eq!(steps.len(), MAX_STEPS);
    assert_eq!(Step::parse(&program(&steps)), steps);
}

/// Ben is added and removed while the patient's device 2 lags: it sends at the stale epoch,
/// the copy for Ben is dropped, the others arrive and are accepted; Sue joins read-only and a
/// message she forges is refused, as is one Ben forges after his removal.
#[test]
fn a_removed_agent_and_a_stale_sender() {
    use Step::*;
    const AUTO: u8 = 0xff;
    let steps = [
        Change {
            add: true,
            device: 4,
            signer: AUTO,
        },
        Lag { device: 1 },
        Change {
            add: false,
            device: 4,
            signer: AUTO,
        },
        Send { device: 1 },
        Change {
            add: true,
            device: 5,
            signer: AUTO,
        },
        Forge {
            sender: 5,
            recipient: 0,
            epoch: 6,
        },
        Forge {
            sender: 4,
            recipient: 2,
            epoch: 6,
        },
        Deliver { pick: 0 },
        Deliver { pick: 0 },
        Duplicate { pick: 0 },
        Deliver { pick: 0 },
        Deliver { pick: 0 },
        Send { device: 5 },
        Send { device: 2 },
        Reload { device: 0 },
        Deliver { pick: 3 },
    ];
    let stats = conversation_members_stats(&program(&steps));
    assert_eq!(stats.changes_accepted, 3, "{stats:?}");
    assert_eq!(stats.stale_sends, 1, "{stats:?}");
    assert_eq!(stats.copies_dropped_as_removed, 1, "{stats:?}");
    assert_eq!(stats.messages_refused, 2, "{stats:?}");
    assert_eq!(stats.messages_accepted, 3, "{stats:?}");
    assert_eq!(stats.attacks_refused, 1, "{stats:?}");
}

/// The committed seeds (`examples/make-seeds.rs`) reach what they were written for, so the
/// fuzzer starts from programs past the membership rules rather than from sends alone.
#[test]
fn the_seeds_reach_their_paths() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds/conversation_members");
    let stats = |name: &str| {
        let data = std::fs::read(dir.join(name)).expect("the seed exists");
        let stats = conversation_members_stats(&data);
        println!("{name}: {stats:?}");
        stats
    };
    let chat = stats("made-chat");
    assert_eq!(
        (chat.copies_made, chat.messages_accepted),
        (8, 8),
        "{chat:?}"
    );
    let churn = stats("made-membership-churn");
    assert!(churn.changes_accepted >= 6, "{churn:?}");
    assert!(
        churn.stale_sends >= 1 && churn.copies_dropped_as_removed >= 1,
        "{churn:?}"
    );
    let adversarial = stats("made-adversarial");
    assert!(adversarial.messages_refused >= 3, "{adversarial:?}");
    assert!(adversarial.attacks_refused >= 2, "{adversarial:?}");
    let random = stats("made-random-steps");
    assert!(random.steps >= 200, "{random:?}");
}
