//! Two parties under an adversarial network: the fuzzer's bytes are a program of sends,
//! deliveries in any order, drops, duplicates, tampered copies and persist-and-reload steps.
//! The same idea as `crates/hushwire/tests/interleavings.rs`, with the fuzzer choosing the
//! schedule. Invariants checked after every step:
//! - a delivered message decrypts exactly once, to what was sent;
//! - a duplicate or tampered message fails, and leaves the receiver's state byte-identical;
//! - a message fails only if it fell behind a later delivered one and its key was discarded
//!   to respect the skipped-key bounds (and then it too leaves the state unchanged);
//! - `missing_messages()` reports only messages that were sent, not yet delivered, and
//!   overtaken by a later delivered one; and reports every such message unless keys were
//!   discarded.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use hushwire::{Session, StorageKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;

use crate::fixtures::{FIRST_PLAINTEXT, encrypt_with_id, pair, session_state};

/// The most steps one program runs. It keeps every run within the ratchet's bounds that would
/// make a correct session refuse a message (at most 1000 skipped in one chain, 2000 kept), so
/// that only the bound on chains ([`hushwire::ratchet::MAX_SKIPPED_CHAINS`]) can lose one.
pub const MAX_STEPS: usize = 256;

/// One step of a program. `from_alice` names the sender of the message acted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The party sends a new message.
    Send {
        /// Alice sends, else Bob.
        from_alice: bool,
    },
    /// Deliver in-flight message `pick` (modulo how many are in flight) to its recipient.
    Deliver {
        /// Alice's message, else Bob's.
        from_alice: bool,
        /// Which one.
        pick: u8,
    },
    /// Lose in-flight message `pick` for good.
    Drop {
        /// Alice's message, else Bob's.
        from_alice: bool,
        /// Which one.
        pick: u8,
    },
    /// Deliver a copy of already delivered message `pick` again.
    Duplicate {
        /// Alice's message, else Bob's.
        from_alice: bool,
        /// Which one.
        pick: u8,
    },
    /// Deliver a copy of in-flight message `pick` with bit `bit` of byte `byte` (modulo its
    /// length) flipped. The original stays in flight.
    Tamper {
        /// Alice's message, else Bob's.
        from_alice: bool,
        /// Which one.
        pick: u8,
        /// Which byte.
        byte: u16,
        /// Which bit of it (0 to 7).
        bit: u8,
    },
    /// Seal and unseal the party's session, as an app restarting would.
    Reload {
        /// Alice's session, else Bob's.
        alice: bool,
    },
}

impl Step {
    /// The step's bytes: `op[1]`, then `pick[1]` for Deliver, Drop and Duplicate, `pick[1] ‖
    /// byte[2]` for Tamper. In `op`, bit 0 set means Bob, bits 1 to 3 the kind (0 and 1 Send,
    /// 2 and 3 Deliver, 4 Drop, 5 Duplicate, 6 Tamper, 7 Reload: the common steps get twice
    /// the share of random bytes), bits 5 to 7 a tampered bit.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let op = |kind: u8, alice: bool| (kind << 1) | u8::from(!alice);
        match *self {
            Self::Send { from_alice } => out.push(op(0, from_alice)),
            Self::Deliver { from_alice, pick } => out.extend([op(2, from_alice), pick]),
            Self::Drop { from_alice, pick } => out.extend([op(4, from_alice), pick]),
            Self::Duplicate { from_alice, pick } => out.extend([op(5, from_alice), pick]),
            Self::Tamper {
                from_alice,
                pick,
                byte,
                bit,
            } => {
                out.extend([op(6, from_alice) | (bit << 5), pick]);
                out.extend(byte.to_be_bytes());
            }
            Self::Reload { alice } => out.push(op(7, alice)),
        }
    }

    /// Reads a program: at most [`MAX_STEPS`] steps; an incomplete last step is ignored.
    pub fn parse(data: &[u8]) -> Vec<Self> {
        let mut steps = Vec::new();
        let mut bytes = data.iter().copied();
        while steps.len() < MAX_STEPS {
            let Some(op) = bytes.next() else { break };
            let alice = op & 1 == 0;
            let step = match (op >> 1) & 7 {
                0 | 1 => Some(Self::Send { from_alice: alice }),
                2 | 3 => bytes.next().map(|pick| Self::Deliver {
                    from_alice: alice,
                    pick,
                }),
                4 => bytes.next().map(|pick| Self::Drop {
                    from_alice: alice,
                    pick,
                }),
                5 => bytes.next().map(|pick| Self::Duplicate {
                    from_alice: alice,
                    pick,
                }),
                6 => match (bytes.next(), bytes.next(), bytes.next()) {
                    (Some(pick), Some(hi), Some(lo)) => Some(Self::Tamper {
                        from_alice: alice,
                        pick,
                        byte: u16::from_be_bytes([hi, lo]),
                        bit: op >> 5,
                    }),
                    _ => None,
                },
                _ => Some(Self::Reload { alice }),
            };
            let Some(step) = step else { break };
            steps.push(step);
        }
        steps
    }
}

/// `(sender's ratchet key, index)`: where a message sits in its sender's chains.
type MessageId = ([u8; 32], u32);

/// A message on the wire.
#[derive(Clone)]
struct InFlight {
    bytes: Vec<u8>,
    plaintext: Vec<u8>,
    id: MessageId,
    /// Its position among everything its sender sent.
    ordinal: u32,
}

/// One party: its session, and what the network holds of the messages it sent.
struct Side {
    session: Session,
    in_flight: Vec<InFlight>,
    delivered: Vec<InFlight>,
    /// Messages sent and not (yet) decrypted by the peer, with their ordinals.
    undelivered: BTreeMap<MessageId, u32>,
    sent: u32,
    /// The highest ordinal the peer decrypted: the peer's ratchet is past every message
    /// before it.
    newest_delivered: Option<u32>,
}

impl Side {
    fn new(session: Session) -> Self {
        Self {
            session,
            in_flight: Vec::new(),
            delivered: Vec::new(),
            undelivered: BTreeMap::new(),
            sent: 0,
            newest_delivered: None,
        }
    }

    /// Whether a later message of ours was delivered, so the peer skipped over this one.
    fn overtaken(&self, ordinal: u32) -> bool {
        self.newest_delivered.is_some_and(|n| n > ordinal)
    }
}

/// Runs the program `data` on the fixed pair (see the module documentation).
pub fn conversation(data: &[u8]) {
    let fixture = pair();
    let mut alice = Side::new(fixture.alice.clone());
    // Bob accepted Alice's first message while the fixture was built.
    alice.delivered.push(InFlight {
        bytes: fixture.first.clone(),
        plaintext: FIRST_PLAINTEXT.to_vec(),
        id: fixture.first_id,
        ordinal: 0,
    });
    alice.sent = 1;
    alice.newest_delivered = Some(0);
    let mut sides = [alice, Side::new(fixture.bob.clone())];
    let mut decrypted: HashSet<Vec<u8>> = HashSet::from([FIRST_PLAINTEXT.to_vec()]);
    let mut rng = ChaCha20Rng::from_seed([0x11; 32]);
    let storage_key = StorageKey::from_bytes([3; 32]);

    for step in Step::parse(data) {
        match step {
            Step::Send { from_alice } => {
                let s = &mut sides[usize::from(!from_alice)];
                let plaintext =
                    format!("{}-{}", if from_alice { 'a' } else { 'b' }, s.sent).into_bytes();
                let (bytes, id) = encrypt_with_id(&mut s.session, &plaintext);
                assert!(
                    s.undelivered.insert(id, s.sent).is_none(),
                    "two messages share chain and index"
                );
                s.in_flight.push(InFlight {
                    bytes,
                    plaintext,
                    id,
                    ordinal: s.sent,
                });
                s.sent += 1;
            }
            Step::Deliver { from_alice, pick } => {
                let (sender, receiver) = split(&mut sides, from_alice);
                if sender.in_flight.is_empty() {
                    continue;
                }
                let m = sender
                    .in_flight
                    .remove(usize::from(pick) % sender.in_flight.len());
                let reported = missing(&receiver.session).contains(&m.id);
                let overtaken = sender.overtaken(m.ordinal);
                let before = receiver.session.clone();
                match receiver.session.decrypt(&m.bytes, &mut rng) {
                    Ok(plaintext) => {
                        assert_eq!(plaintext, m.plaintext, "decrypted to something else");
                        assert!(
                            !overtaken || reported,
                            "message {} decrypted though overtaken and not reported missing",
                            m.ordinal
                        );
                        assert!(decrypted.insert(plaintext), "decrypted twice");
                        sender.undelivered.remove(&m.id);
                        sender.newest_delivered = sender.newest_delivered.max(Some(m.ordinal));
                        sender.delivered.push(m);
                    }
                    Err(e) => {
                        assert!(
                            overtaken && !reported && receiver.session.discarded_message_keys() > 0,
                            "message {} failed ({e}); overtaken: {overtaken}, reported missing: \
                             {reported}, keys discarded: {}",
                            m.ordinal,
                            receiver.session.discarded_message_keys()
                        );
                        assert_unchanged(&before, &receiver.session, "a lost message");
                    }
                }
            }
            Step::Drop { from_alice, pick } => {
                let s = &mut sides[usize::from(!from_alice)];
                if !s.in_flight.is_empty() {
                    let n = s.in_flight.len();
                    s.in_flight.remove(usize::from(pick) % n);
                }
            }
            Step::Duplicate { from_alice, pick } => {
                let (sender, receiver) = split(&mut sides, from_alice);
                if sender.delivered.is_empty() {
                    continue;
                }
                let m = &sender.delivered[usize::from(pick) % sender.delivered.len()];
                let before = receiver.session.clone();
                assert!(
                    receiver.session.decrypt(&m.bytes, &mut rng).is_err(),
                    "a duplicate of message {} decrypted",
                    m.ordinal
                );
                assert_unchanged(&before, &receiver.session, "a duplicate");
            }
            Step::Tamper {
                from_alice,
                pick,
                byte,
                bit,
            } => {
                let (sender, receiver) = split(&mut sides, from_alice);
                if sender.in_flight.is_empty() {
                    continue;
                }
                let m = &sender.in_flight[usize::from(pick) % sender.in_flight.len()];
                let mut tampered = m.bytes.clone();
                let at = usize::from(byte) % tampered.len();
                tampered[at] ^= 1 << (bit % 8);
                let before = receiver.session.clone();
                assert!(
                    receiver.session.decrypt(&tampered, &mut rng).is_err(),
                    "message {} decrypted with bit {bit} of byte {at} flipped",
                    m.ordinal
                );
                assert_unchanged(&before, &receiver.session, "a tampered message");
            }
            Step::Reload { alice } => {
                let s = &mut sides[usize::from(!alice)];
                let sealed = s.session.seal(&storage_key, &mut rng);
                let restored =
                    Session::unseal(&sealed, &storage_key).expect("a sealed session unseals");
                assert_eq!(
                    session_state(&restored),
                    session_state(&s.session),
                    "reloading changed the session"
                );
                s.session = restored;
            }
        }
        for from_alice in [true, false] {
            let (sender, receiver) = split(&mut sides, from_alice);
            check_gaps(sender, &receiver.session);
        }
    }
}

/// The gap invariants for messages from `sender` that `receiver` is waiting for.
fn check_gaps(sender: &Side, receiver: &Session) {
    let reported = missing(receiver);
    for id in &reported {
        let ordinal = sender.undelivered.get(id).unwrap_or_else(|| {
            panic!(
                "reported missing message {} was delivered or never sent",
                id.1
            )
        });
        assert!(
            sender.overtaken(*ordinal),
            "message {ordinal} reported missing before a later one arrived"
        );
    }
    let discarded = receiver.discarded_message_keys() > 0;
    for (id, ordinal) in &sender.undelivered {
        if sender.overtaken(*ordinal) {
            assert!(
                reported.contains(id) || discarded,
                "message {ordinal} overtaken but not reported missing"
            );
        }
    }
}

/// Every message `session` reports missing.
fn missing(session: &Session) -> BTreeSet<MessageId> {
    session
        .missing_messages()
        .into_iter()
        .flat_map(|g| g.missing.into_iter().map(move |i| (*g.chain.as_bytes(), i)))
        .collect()
}

fn assert_unchanged(before: &Session, after: &Session, what: &str) {
    assert_eq!(
        session_state(after),
        session_state(before),
        "{what} changed the receiver's session"
    );
}

/// (sender, receiver) for a message sent by Alice (`from_alice`) or by Bob.
fn split(sides: &mut [Side; 2], from_alice: bool) -> (&mut Side, &mut Side) {
    let [a, b] = sides;
    if from_alice { (a, b) } else { (b, a) }
}
