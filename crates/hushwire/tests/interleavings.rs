//! Property test: two parties under random interleavings of send, deliver, reorder, drop,
//! duplicate, tamper and persist-and-reload. Invariants:
//! - every delivered message decrypts exactly once, to what was sent;
//! - a duplicate or tampered message fails and leaves the receiver's state unchanged;
//! - every message that was dropped (or is still in flight) behind a later delivered one from
//!   the same chain is reported by `missing_messages` until it arrives, or counted by
//!   `discarded_message_keys` once the skipped-key bounds (§5.4) pushed its key out.

// Test helpers outside #[test] fns may unwrap: a failure is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeSet, HashSet};

use hushwire::wire::MessageHeader;
use hushwire::{Account, Session, StorageKey};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;

#[derive(Clone, Debug)]
enum Step {
    /// Party sends a message.
    Send { from_alice: bool },
    /// Deliver the in-flight message at this position (modulo the queue length) to its recipient.
    Deliver { from_alice: bool, pick: usize },
    /// Drop an in-flight message for good.
    Drop { from_alice: bool, pick: usize },
    /// Deliver a copy of an already delivered message again.
    Duplicate { from_alice: bool, pick: usize },
    /// Deliver a tampered copy of an in-flight message (it stays in flight).
    Tamper {
        from_alice: bool,
        pick: usize,
        byte: usize,
    },
    /// Seal and unseal a party's session.
    Reload { alice: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => any::<bool>().prop_map(|from_alice| Step::Send { from_alice }),
        4 => (any::<bool>(), any::<usize>()).prop_map(|(from_alice, pick)| Step::Deliver { from_alice, pick }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(from_alice, pick)| Step::Drop { from_alice, pick }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(from_alice, pick)| Step::Duplicate { from_alice, pick }),
        1 => (any::<bool>(), any::<usize>(), any::<usize>())
            .prop_map(|(from_alice, pick, byte)| Step::Tamper { from_alice, pick, byte }),
        1 => any::<bool>().prop_map(|alice| Step::Reload { alice }),
    ]
}

/// A message in flight: its bytes, plaintext, and (chain, index) from its header.
#[derive(Clone)]
struct InFlight {
    bytes: Vec<u8>,
    plaintext: Vec<u8>,
    id: ([u8; 32], u32),
}

fn header_id(header: &MessageHeader) -> ([u8; 32], u32) {
    (*header.ratchet_key.as_bytes(), header.index)
}

fn state(s: &Session) -> Vec<u8> {
    s.seal(
        &StorageKey::from_bytes([5; 32]),
        &mut ChaCha20Rng::from_seed([0; 32]),
    )
}

struct Side {
    session: Session,
    in_flight: Vec<InFlight>,
    delivered: Vec<InFlight>,
    /// Ids sent by this side that the peer has not decrypted.
    undelivered: BTreeSet<([u8; 32], u32)>,
    sent: u32,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_keep_the_invariants(seed in any::<[u8; 32]>(), steps in prop::collection::vec(step(), 1..120)) {
        run(seed, steps)?;
    }
}

/// A case proptest found in CI (session 5's run): skipped keys on six chains, one more than
/// the bound, so the oldest chain's key is discarded and must be counted, not reported.
#[test]
fn regression_overtaken_message_reported() {
    let steps = STEPS_CI_1;
    run([0; 32], steps.to_vec()).unwrap();
}

const STEPS_CI_1: &[Step] = &[
    Step::Send { from_alice: false },
    Step::Send { from_alice: true },
    Step::Send { from_alice: true },
    Step::Drop {
        from_alice: true,
        pick: 2298787751008729286,
    },
    Step::Deliver {
        from_alice: false,
        pick: 0,
    },
    Step::Send { from_alice: true },
    Step::Drop {
        from_alice: true,
        pick: 4027556890245467399,
    },
    Step::Deliver {
        from_alice: true,
        pick: 0,
    },
    Step::Send { from_alice: true },
    Step::Deliver {
        from_alice: true,
        pick: 0,
    },
    Step::Send { from_alice: false },
    Step::Deliver {
        from_alice: false,
        pick: 0,
    },
    Step::Send { from_alice: true },
    Step::Send { from_alice: true },
    Step::Deliver {
        from_alice: true,
        pick: 0,
    },
    Step::Drop {
        from_alice: true,
        pick: 0,
    },
    Step::Send { from_alice: false },
    Step::Deliver {
        from_alice: false,
        pick: 0,
    },
    Step::Send { from_alice: true },
    Step::Deliver {
        from_alice: true,
        pick: 156004364,
    },
    Step::Send { from_alice: false },
    Step::Send { from_alice: true },
    Step::Deliver {
        from_alice: false,
        pick: 17263533252263342376,
    },
    Step::Send { from_alice: true },
    Step::Send { from_alice: true },
    Step::Deliver {
        from_alice: true,
        pick: 17568990899880937916,
    },
    Step::Send { from_alice: false },
    Step::Deliver {
        from_alice: false,
        pick: 2854652623653260372,
    },
    Step::Send { from_alice: true },
    Step::Send { from_alice: true },
    Step::Deliver {
        from_alice: true,
        pick: 17822306334690888251,
    },
];

/// Runs one interleaving and checks the invariants after every step.
fn run(seed: [u8; 32], steps: Vec<Step>) -> Result<(), TestCaseError> {
    {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let alice_account = Account::new(1, 0, &mut rng);
        let mut bob_account = Account::new(2, 0, &mut rng);
        bob_account.generate_one_time_prekeys(1, &mut rng);
        let bundle = bob_account.prekey_bundle().unwrap();
        let mut alice = Session::initiate(alice_account.identity(), &bundle, &mut rng).unwrap();
        // Bob's session exists once Alice's first message is accepted; deliver it up front so
        // both sides have a session (the handshake itself is tested elsewhere).
        let first = alice.encrypt(b"hello").unwrap();
        let bob = bob_account.accept(&first, &mut rng).unwrap().session;
        let mut sides = [
            Side {
                session: alice,
                in_flight: vec![],
                delivered: vec![],
                undelivered: BTreeSet::new(),
                sent: 0,
            },
            Side {
                session: bob,
                in_flight: vec![],
                delivered: vec![],
                undelivered: BTreeSet::new(),
                sent: 0,
            },
        ];
        let mut decrypted_once: HashSet<Vec<u8>> = HashSet::new();
        let key = StorageKey::from_bytes([3; 32]);

        for step in steps {
            match step {
                Step::Send { from_alice } => {
                    let s = &mut sides[usize::from(!from_alice)];
                    let plaintext =
                        format!("{}-{}", if from_alice { 'a' } else { 'b' }, s.sent).into_bytes();
                    s.sent += 1;
                    let (bytes, header) = s.session.encrypt_message(&plaintext).unwrap();
                    let id = header_id(&header);
                    s.undelivered.insert(id);
                    s.in_flight.push(InFlight {
                        bytes,
                        plaintext,
                        id,
                    });
                }
                Step::Deliver { from_alice, pick } | Step::Drop { from_alice, pick }
                    if sides[usize::from(!from_alice)].in_flight.is_empty() =>
                {
                    let _ = (from_alice, pick);
                }
                Step::Deliver { from_alice, pick } => {
                    let (sender, receiver) = split(&mut sides, from_alice);
                    let m = sender.in_flight.remove(pick % sender.in_flight.len());
                    let plaintext = receiver.session.decrypt(&m.bytes, &mut rng).unwrap();
                    prop_assert_eq!(&plaintext, &m.plaintext);
                    prop_assert!(
                        decrypted_once.insert(m.plaintext.clone()),
                        "decrypted twice"
                    );
                    sender.undelivered.remove(&m.id);
                    sender.delivered.push(m);
                }
                Step::Drop { from_alice, pick } => {
                    let s = &mut sides[usize::from(!from_alice)];
                    let n = s.in_flight.len();
                    s.in_flight.remove(pick % n);
                }
                Step::Duplicate { from_alice, pick } => {
                    let (sender, receiver) = split(&mut sides, from_alice);
                    if sender.delivered.is_empty() {
                        continue;
                    }
                    let m = &sender.delivered[pick % sender.delivered.len()];
                    let before = state(&receiver.session);
                    prop_assert!(receiver.session.decrypt(&m.bytes, &mut rng).is_err());
                    prop_assert_eq!(state(&receiver.session), before);
                }
                Step::Tamper {
                    from_alice,
                    pick,
                    byte,
                } => {
                    let (sender, receiver) = split(&mut sides, from_alice);
                    if sender.in_flight.is_empty() {
                        continue;
                    }
                    let mut t = sender.in_flight[pick % sender.in_flight.len()]
                        .bytes
                        .clone();
                    let i = byte % t.len();
                    t[i] ^= 1 << (byte % 8);
                    let before = state(&receiver.session);
                    prop_assert!(receiver.session.decrypt(&t, &mut rng).is_err());
                    prop_assert_eq!(state(&receiver.session), before);
                }
                Step::Reload { alice } => {
                    let s = &mut sides[usize::from(!alice)];
                    let sealed = s.session.seal(&key, &mut rng);
                    let restored = Session::unseal(&sealed, &key).unwrap();
                    prop_assert_eq!(state(&restored), state(&s.session));
                    s.session = restored;
                }
            }
            // Gap invariant: everything the receiver reports missing was sent and not yet
            // decrypted; and every undelivered message of the receiver's current or earlier
            // chains that is behind a delivered one is reported.
            for from_alice in [true, false] {
                let (sender, receiver) = split(&mut sides, from_alice);
                let reported: BTreeSet<([u8; 32], u32)> = receiver
                    .session
                    .missing_messages()
                    .into_iter()
                    .flat_map(|g| g.missing.into_iter().map(move |i| (*g.chain.as_bytes(), i)))
                    .collect();
                for id in &reported {
                    prop_assert!(
                        sender.undelivered.contains(id),
                        "reported gap {:?} was delivered or never sent",
                        id.1
                    );
                }
                // Past the skipped-key bounds (protocol.md §5.4: 5 chains, 2000 keys) the oldest
                // keys are discarded and counted rather than reported: the client tells the
                // person how many were lost. So an overtaken message may go unreported only if
                // a key was discarded for it.
                let unreported = sender
                    .undelivered
                    .iter()
                    .filter(|id| {
                        let overtaken = sender
                            .delivered
                            .iter()
                            .any(|d| d.id.0 == id.0 && d.id.1 > id.1);
                        overtaken && !reported.contains(id)
                    })
                    .count();
                let discarded = receiver.session.discarded_message_keys();
                prop_assert!(
                    u64::try_from(unreported).unwrap() <= discarded,
                    "{} overtaken messages neither reported nor counted as discarded ({})",
                    unreported,
                    discarded
                );
            }
        }
    }
    Ok(())
}

/// (sender, receiver) for a message sent by Alice (`from_alice`) or by Bob.
fn split(sides: &mut [Side; 2], from_alice: bool) -> (&mut Side, &mut Side) {
    let [a, b] = sides;
    if from_alice { (a, b) } else { (b, a) }
}
