//! A clinic conversation of several member devices under an adversarial network
//! (`docs/conversations.md` §2, §4, §8): the fuzzer's bytes are a program of fan-out sends,
//! per-copy deliveries in any order, drops, duplicates, tampered copies, persist-and-reload
//! steps, signed membership changes, devices that learn changes late, and forged sends.
//!
//! Six devices of four people, every pair with an established pairwise session ([`clinic`]):
//! the patient (devices 1 and 2), the agents Ada (1 and 2) and Ben (1), and the supervisor
//! Sue (1). The history starts with the patient's device 1 opening the conversation, Ada's
//! device 1 claiming it and the patient adding its device 2; the program adds and removes the
//! rest with changes signed as the clients sign them, applied through a
//! [`MembershipLog`] (the relay's order of changes: one chain, the truth).
//!
//! Each device has a *view*: how many changes of that chain it has verified. A device learns
//! each change when it is made unless it lags ([`Step::Lag`]), until it fetches the history
//! ([`Step::Sync`]). A device sends at its view's head epoch to the member devices of its view,
//! and the relay accepts a send only at the head epoch (§5.4): a stale sender fetches the
//! history and sends the copies it made again at the new head, only to devices still members
//! (§4.4; the payload keeps the epoch it was written under). A forged send ([`Step::Forge`])
//! is what a sender that ignores the rules (or a relay that lets it) can do: one copy, any
//! claimed epoch, any recipient.
//!
//! Invariants checked at every step:
//! - **membership**: after each accepted change the log's members are exactly what the
//!   program's own model of adds and removes says; a refused change leaves the log unchanged;
//!   an accepted change was signed by a member device (or by a device adding itself) and, by a
//!   supervisor, only to remove itself;
//! - **linear fan-out**: an honest send makes exactly one ciphertext per other member device
//!   of the sender's view, `device_count() − 1` of it, and to no one else;
//! - **removal**: every copy an honest sender made is for a device that was a member at the
//!   message's epoch, so a removed device never has a ciphertext encrypted to it for a message
//!   sent at an epoch after its removal (unless it was added again), and never decrypts one;
//!   and the relay carries a copy only to a device that is a member at the head;
//! - **acceptance**: a recipient accepts a message only if its sender was a member that writes
//!   (not a read-only supervisor) at the message's epoch per the recipient's verified history
//!   (the client's rule, `role_at` in `hushwire-client`, over the proto [`MembershipLog`]:
//!   epoch ≥ 1, verified, fetching the history first when the epoch is ahead of its view), and
//!   this verdict equals the model's; every honest send is accepted;
//! - **delivery**: a delivered copy decrypts exactly once, to what was sent; a duplicate or a
//!   tampered copy fails and leaves the receiving session byte-identical; a copy fails only if
//!   it fell behind a later delivered one of the same pair and keys were discarded to respect
//!   the skipped-key bounds (then it too leaves the session unchanged); reloading a session
//!   changes nothing.

use std::collections::{BTreeSet, HashSet};
use std::sync::OnceLock;

use hushwire::payload::{ConversationMessage, MessageId, Payload, pad};
use hushwire::proto::Signer as _;
use hushwire::proto::clinic::{AgentCertificate, DeviceList, OrgKey, Role, Roles};
use hushwire::proto::conversation::{
    ChangeAction, ChangeProposal, ConversationId, MemberRole, MembershipChange, MembershipContext,
    MembershipLog,
};
use hushwire::proto::{Fingerprint, IdentityKey};
use hushwire::transcript::ContentType;
use hushwire::{Account, IdentityKeyPair, Session, StorageKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;
use zeroize::Zeroizing;

use crate::fixtures::{FIRST_PLAINTEXT, session_state};

/// The most steps one program runs. A step sends at most one message over each pairwise
/// session (a send makes one copy per recipient, a forge one copy), and a session receives only
/// from its one peer, so no session skips or keeps more than this many keys: within the
/// ratchet's bounds (1000 skipped in one chain, 2000 kept), so only the bound on chains
/// ([`hushwire::ratchet::MAX_SKIPPED_CHAINS`]) can lose a message.
pub const MAX_STEPS: usize = 256;

/// How many devices take part.
pub const DEVICES: usize = 6;

/// The conversation's id.
const CONVERSATION: ConversationId = ConversationId(*b"fuzz-members-001");
/// Certificates are valid from `NOT_BEFORE` to `NOT_AFTER`; change `k` is issued at `T0 + k`,
/// and the verifiers' clock is `NOW`, so no change is from the future (at most 256 + 3 of them).
const NOT_BEFORE: u64 = 1_700_000_000;
const NOT_AFTER: u64 = 1_731_536_000;
const T0: u64 = 1_710_000_000;
const NOW: u64 = T0 + 1_000;

/// The people: the patient, two agents and a supervisor.
const PATIENT: usize = 0;
const ADA: usize = 1;
const BEN: usize = 2;
const SUE: usize = 3;

/// Each device's `(person, device id)`.
const DEVICE: [(usize, u32); DEVICES] = [
    (PATIENT, 1),
    (PATIENT, 2),
    (ADA, 1),
    (ADA, 2),
    (BEN, 1),
    (SUE, 1),
];

/// One step of a program. Devices are indices into the six (modulo 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The device sends a conversation message to every other member device of its view.
    Send {
        /// The sender.
        device: u8,
    },
    /// Deliver in-flight copy `pick` (modulo how many are in flight) to its recipient.
    Deliver {
        /// Which copy.
        pick: u8,
    },
    /// Lose in-flight copy `pick` for good.
    Drop {
        /// Which copy.
        pick: u8,
    },
    /// Deliver a copy of already delivered copy `pick` again.
    Duplicate {
        /// Which copy.
        pick: u8,
    },
    /// Deliver in-flight copy `pick` with bit `bit` of byte `byte` (modulo its length)
    /// flipped. The original stays in flight.
    Tamper {
        /// Which copy.
        pick: u8,
        /// Which byte.
        byte: u16,
        /// Which bit of it (0 to 7).
        bit: u8,
    },
    /// Seal and unseal every session of the device, as an app restarting would.
    Reload {
        /// The device.
        device: u8,
    },
    /// A signed change adding (or removing) `device` in its person's role, signed by device
    /// `signer` if it is below 6, else by the device a client would use.
    Change {
        /// Add, else remove.
        add: bool,
        /// The device added or removed.
        device: u8,
        /// The signing device; 6 or more: chosen as a client would.
        signer: u8,
    },
    /// The device stops learning changes as they are made.
    Lag {
        /// The device.
        device: u8,
    },
    /// The device fetches and verifies the whole history, and learns changes again.
    Sync {
        /// The device.
        device: u8,
    },
    /// `sender` sends one message straight to `recipient`, claiming epoch `epoch` (modulo the
    /// head epoch + 2, so one epoch not yet reached is claimed too).
    Forge {
        /// The sender.
        sender: u8,
        /// The recipient.
        recipient: u8,
        /// The claimed epoch.
        epoch: u8,
    },
}

impl Step {
    /// The step's bytes: `op[1]`, then `pick[1]` for Deliver, Drop and Duplicate, `pick[1] ‖
    /// byte[2]` for Tamper, `signer[1]` for Change, `recipient[1] ‖ epoch[1]` for Forge. In
    /// `op`, bits 0 to 3 are the kind (0–2 and 15 Send, 3–5 Deliver, 6 Drop, 7 Duplicate,
    /// 8 Tamper, 9 Reload, 10 add, 11 remove, 12 Lag, 13 Sync, 14 Forge: sends and deliveries
    /// get the largest share of random bytes), bits 4 to 7 the device (or the tampered bit).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let op = |kind: u8, device: u8| kind | ((device % 16) << 4);
        match *self {
            Self::Send { device } => out.push(op(0, device)),
            Self::Deliver { pick } => out.extend([op(3, 0), pick]),
            Self::Drop { pick } => out.extend([op(6, 0), pick]),
            Self::Duplicate { pick } => out.extend([op(7, 0), pick]),
            Self::Tamper { pick, byte, bit } => {
                out.extend([op(8, bit % 8), pick]);
                out.extend(byte.to_be_bytes());
            }
            Self::Reload { device } => out.push(op(9, device)),
            Self::Change {
                add,
                device,
                signer,
            } => out.extend([op(if add { 10 } else { 11 }, device), signer]),
            Self::Lag { device } => out.push(op(12, device)),
            Self::Sync { device } => out.push(op(13, device)),
            Self::Forge {
                sender,
                recipient,
                epoch,
            } => out.extend([op(14, sender), recipient, epoch]),
        }
    }

    /// Reads a program: at most [`MAX_STEPS`] steps; an incomplete last step is ignored.
    pub fn parse(data: &[u8]) -> Vec<Self> {
        let mut steps = Vec::new();
        let mut bytes = data.iter().copied();
        while steps.len() < MAX_STEPS {
            let Some(op) = bytes.next() else { break };
            let device = op >> 4;
            let step = match op & 15 {
                3..=5 => bytes.next().map(|pick| Self::Deliver { pick }),
                6 => bytes.next().map(|pick| Self::Drop { pick }),
                7 => bytes.next().map(|pick| Self::Duplicate { pick }),
                8 => match (bytes.next(), bytes.next(), bytes.next()) {
                    (Some(pick), Some(hi), Some(lo)) => Some(Self::Tamper {
                        pick,
                        byte: u16::from_be_bytes([hi, lo]),
                        bit: device % 8,
                    }),
                    _ => None,
                },
                9 => Some(Self::Reload { device }),
                kind @ (10 | 11) => bytes.next().map(|signer| Self::Change {
                    add: kind == 10,
                    device,
                    signer,
                }),
                12 => Some(Self::Lag { device }),
                13 => Some(Self::Sync { device }),
                14 => match (bytes.next(), bytes.next()) {
                    (Some(recipient), Some(epoch)) => Some(Self::Forge {
                        sender: device,
                        recipient,
                        epoch,
                    }),
                    _ => None,
                },
                _ => Some(Self::Send { device }),
            };
            let Some(step) = step else { break };
            steps.push(step);
        }
        steps
    }
}

/// One person: an identity shared by its devices, a role, and for staff a certificate.
pub struct Person {
    /// The identity (every device of the person holds it).
    pub identity: IdentityKeyPair,
    /// The role the person holds in the conversation.
    pub role: MemberRole,
    /// The clinic's certificate, for staff.
    pub certificate: Option<AgentCertificate>,
}

/// The fixed clinic: keys, people, every pairwise session, and the opening history.
pub struct Clinic {
    /// The clinic's organization key.
    pub org: OrgKey,
    /// The patient, Ada, Ben and Sue.
    pub people: Vec<Person>,
    /// The patient's signed device list (devices 1 and 2).
    pub patient_devices: DeviceList,
    /// `sessions[a][b]`: device `a`'s session with device `b` (`None` on the diagonal). The
    /// lower-numbered device initiated it; its first message was accepted.
    pub sessions: Vec<Vec<Option<Session>>>,
    /// The history every run starts from: the patient's device 1 opens, Ada's device 1
    /// claims, the patient adds its device 2.
    pub opening: Vec<MembershipChange>,
    /// `opening_logs[e]`: the verified history after the first `e` changes of
    /// [`Clinic::opening`], so a run does not verify them again.
    pub opening_logs: Vec<MembershipLog>,
}

/// The devices the changes of [`Clinic::opening`] add, and the devices that sign them.
const OPENING: [(usize, usize); 3] = [(0, 0), (2, 2), (1, 0)];

/// The clinic, built on first use (six accounts and fifteen handshakes: far more than a run).
pub fn clinic() -> &'static Clinic {
    static CLINIC: OnceLock<Clinic> = OnceLock::new();
    CLINIC.get_or_init(|| {
        let mut rng = ChaCha20Rng::from_seed([0x6d; 32]);
        let org_signer = IdentityKeyPair::generate(&mut rng);
        let org = OrgKey::new(org_signer.verifying_key()).expect("an identity key is an org key");
        let roles = [
            MemberRole::Patient,
            MemberRole::Agent,
            MemberRole::Agent,
            MemberRole::Supervisor,
        ];
        let names = ["patient", "Ada", "Ben", "Sue"];
        let people: Vec<Person> = roles
            .iter()
            .zip(names)
            .zip(10u64..)
            .map(|((&role, name), serial)| {
                let identity = IdentityKeyPair::generate(&mut rng);
                let certificate = role.is_staff().then(|| {
                    let granted = if role == MemberRole::Agent {
                        Role::Agent
                    } else {
                        Role::Supervisor
                    };
                    AgentCertificate::issue(
                        &org_signer,
                        serial,
                        identity.public().clone(),
                        name,
                        Roles::of(&[granted]).expect("one role"),
                        NOT_BEFORE,
                        NOT_AFTER,
                    )
                    .expect("a valid certificate")
                });
                Person {
                    identity,
                    role,
                    certificate,
                }
            })
            .collect();
        let patient = &people[PATIENT].identity;
        let patient_devices =
            DeviceList::issue(patient, patient.public(), 1, &[1, 2]).expect("a device list");
        let mut accounts: Vec<Account> = DEVICE
            .iter()
            .map(|&(p, id)| Account::with_identity(people[p].identity.clone(), id, 0, &mut rng))
            .collect();
        let mut sessions: Vec<Vec<Option<Session>>> = (0..DEVICES)
            .map(|_| (0..DEVICES).map(|_| None).collect())
            .collect();
        for a in 0..DEVICES {
            for b in a + 1..DEVICES {
                accounts[b].generate_one_time_prekeys(1, &mut rng);
                let bundle = accounts[b].prekey_bundle().expect("a bundle");
                let mut initiator = Session::initiate(accounts[a].identity(), &bundle, &mut rng)
                    .expect("initiate from a fresh bundle");
                let first = initiator.encrypt(FIRST_PLAINTEXT).expect("encrypt");
                let inbound = accounts[b]
                    .accept(&first, &mut rng)
                    .expect("accept the first message");
                sessions[a][b] = Some(initiator);
                sessions[b][a] = Some(inbound.session);
            }
        }
        let mut opening_logs = vec![MembershipLog::new(CONVERSATION, org)];
        let mut opening = Vec::new();
        let ctx = MembershipContext {
            revocations: None,
            patient_devices: Some(&patient_devices),
            now: NOW,
        };
        for (device, signer) in OPENING {
            let mut log = opening_logs[opening_logs.len() - 1].clone();
            let change = sign_change(&people, &log, true, device, signer).expect("sign");
            log.apply(&change, &ctx)
                .expect("the opening history verifies");
            opening.push(change);
            opening_logs.push(log);
        }
        Clinic {
            org,
            people,
            patient_devices,
            sessions,
            opening,
            opening_logs,
        }
    })
}

/// The change adding (or removing) `device` in its person's role, signed by device `signer`
/// on top of `log`.
fn sign_change(
    people: &[Person],
    log: &MembershipLog,
    add: bool,
    device: usize,
    signer: usize,
) -> Option<MembershipChange> {
    let (member, id) = DEVICE[device];
    let (signer_person, signer_id) = DEVICE[signer];
    let role = people[member].role;
    let epoch = log.next_epoch();
    MembershipChange::sign(
        ChangeProposal {
            conversation: log.conversation(),
            epoch,
            previous_hash: log.head(),
            issued_at: T0 + epoch,
            action: if add {
                ChangeAction::Add
            } else {
                ChangeAction::Remove
            },
            role,
            member: people[member].identity.public().clone(),
            devices: vec![id],
            member_certificate: (add && role.is_staff())
                .then(|| people[member].certificate.clone())
                .flatten(),
        },
        &people[signer_person].identity,
        people[signer_person].identity.public().clone(),
        signer_id,
        people[signer_person].certificate.clone(),
    )
    .ok()
}

fn fingerprint(people: &[Person], device: usize) -> Fingerprint {
    people[DEVICE[device].0].identity.public().fingerprint()
}

/// The client's rule (`role_at`, §8): whether device `device_id` of `who` is a member that
/// writes (not a read-only supervisor) in `log`.
fn writes_in(log: &MembershipLog, who: &IdentityKey, device_id: u32) -> bool {
    let fp = who.fingerprint();
    log.members()
        .iter()
        .find(|m| m.identity().fingerprint() == fp && m.devices().contains(&device_id))
        .is_some_and(|m| m.role().can_write())
}

/// The program's own model of the membership: the member devices.
type Members = BTreeSet<usize>;

/// A copy of a message on the wire.
#[derive(Clone)]
struct Envelope {
    from: usize,
    to: usize,
    bytes: Vec<u8>,
    /// The padded payload it decrypts to.
    payload: Vec<u8>,
    id: MessageId,
    epoch: u64,
    /// Made by a sender ignoring the rules.
    forged: bool,
    /// Its position among everything `from` sent to `to`.
    ordinal: u32,
}

/// What one direction of one pair has sent and had delivered.
#[derive(Clone, Copy, Default)]
struct Track {
    sent: u32,
    newest_delivered: Option<u32>,
}

struct Run<'c> {
    clinic: &'c Clinic,
    sessions: Vec<Vec<Option<Session>>>,
    /// `logs[e]`: the verified history after `e` changes (shared by every view: verifying the
    /// same changes gives the same log).
    logs: Vec<MembershipLog>,
    changes: Vec<MembershipChange>,
    /// `model[e]`: the member devices after `e` changes, per the program's model.
    model: Vec<Members>,
    /// How many changes each device has verified.
    known: [usize; DEVICES],
    lagging: [bool; DEVICES],
    in_flight: Vec<Envelope>,
    delivered: Vec<Envelope>,
    track: [[Track; DEVICES]; DEVICES],
    /// `(recipient, message)` pairs accepted so far.
    accepted: HashSet<(usize, MessageId)>,
    messages: u64,
    rng: ChaCha20Rng,
    stats: Stats,
}

/// What a run did: so tests can tell that programs reach every path the invariants cover.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Steps run.
    pub steps: usize,
    /// Membership changes accepted (beyond the opening history).
    pub changes_accepted: usize,
    /// Membership changes the log refused.
    pub changes_refused: usize,
    /// Copies encrypted by honest senders.
    pub copies_made: usize,
    /// Honest sends made at a stale epoch (then sent again at the head).
    pub stale_sends: usize,
    /// Copies made for a device removed before the relay took them, so dropped.
    pub copies_dropped_as_removed: usize,
    /// Copies decrypted.
    pub copies_decrypted: usize,
    /// Decrypted messages the recipient accepted.
    pub messages_accepted: usize,
    /// Decrypted messages the recipient refused by the membership rule.
    pub messages_refused: usize,
    /// Copies that could not be decrypted because their keys were discarded.
    pub copies_lost: usize,
    /// Duplicates and tampered copies refused.
    pub attacks_refused: usize,
}

/// Runs the program `data` on the fixed clinic (see the module documentation).
pub fn conversation_members(data: &[u8]) {
    conversation_members_stats(data);
}

/// [`conversation_members`], telling what the run did.
pub fn conversation_members_stats(data: &[u8]) -> Stats {
    let clinic = clinic();
    let mut run = Run::new(clinic);
    let storage_key = StorageKey::from_bytes([3; 32]);
    for step in Step::parse(data) {
        run.stats.steps += 1;
        match step {
            Step::Send { device } => run.send(usize::from(device) % DEVICES),
            Step::Deliver { pick } => {
                if !run.in_flight.is_empty() {
                    let n = run.in_flight.len();
                    let copy = run.in_flight.remove(usize::from(pick) % n);
                    run.deliver(copy);
                }
            }
            Step::Drop { pick } => {
                if !run.in_flight.is_empty() {
                    let n = run.in_flight.len();
                    run.in_flight.remove(usize::from(pick) % n);
                }
            }
            Step::Duplicate { pick } => {
                if !run.delivered.is_empty() {
                    let n = run.delivered.len();
                    let copy = run.delivered[usize::from(pick) % n].clone();
                    run.refused(&copy, &copy.bytes, "a duplicate");
                }
            }
            Step::Tamper { pick, byte, bit } => {
                if !run.in_flight.is_empty() {
                    let n = run.in_flight.len();
                    let copy = run.in_flight[usize::from(pick) % n].clone();
                    let mut tampered = copy.bytes.clone();
                    let at = usize::from(byte) % tampered.len();
                    tampered[at] ^= 1 << (bit % 8);
                    run.refused(&copy, &tampered, "a tampered copy");
                }
            }
            Step::Reload { device } => {
                let device = usize::from(device) % DEVICES;
                for session in run.sessions[device].iter_mut().flatten() {
                    let sealed = session.seal(&storage_key, &mut run.rng);
                    let restored =
                        Session::unseal(&sealed, &storage_key).expect("a sealed session unseals");
                    assert_eq!(
                        session_state(&restored),
                        session_state(session),
                        "reloading changed a session"
                    );
                    *session = restored;
                }
            }
            Step::Change {
                add,
                device,
                signer,
            } => run.change(add, usize::from(device) % DEVICES, signer),
            Step::Lag { device } => run.lagging[usize::from(device) % DEVICES] = true,
            Step::Sync { device } => {
                let device = usize::from(device) % DEVICES;
                run.lagging[device] = false;
                run.known[device] = run.head();
            }
            Step::Forge {
                sender,
                recipient,
                epoch,
            } => run.forge(
                usize::from(sender) % DEVICES,
                usize::from(recipient) % DEVICES,
                epoch,
            ),
        }
        run.check();
    }
    run.stats
}

impl<'c> Run<'c> {
    fn new(clinic: &'c Clinic) -> Self {
        let mut model = vec![Members::new()];
        for (device, _) in OPENING {
            let mut members = model[model.len() - 1].clone();
            members.insert(device);
            model.push(members);
        }
        let mut track = [[Track::default(); DEVICES]; DEVICES];
        // The lower-numbered device of each pair sent the first message, and it was accepted.
        for (a, row) in track.iter_mut().enumerate() {
            for t in row.iter_mut().skip(a + 1) {
                *t = Track {
                    sent: 1,
                    newest_delivered: Some(0),
                };
            }
        }
        let head = clinic.opening.len();
        Self {
            clinic,
            sessions: clinic.sessions.clone(),
            logs: clinic.opening_logs.clone(),
            changes: clinic.opening.clone(),
            model,
            known: [head; DEVICES],
            lagging: [false; DEVICES],
            in_flight: Vec::new(),
            delivered: Vec::new(),
            track,
            accepted: HashSet::new(),
            messages: 0,
            rng: ChaCha20Rng::from_seed([0x12; 32]),
            stats: Stats::default(),
        }
    }

    /// The head epoch: how many changes the chain holds.
    fn head(&self) -> usize {
        self.changes.len()
    }

    /// Whether the model says `device` was a member that writes after `epoch` changes.
    fn model_writes(&self, epoch: usize, device: usize) -> bool {
        self.model.get(epoch).is_some_and(|m| m.contains(&device))
            && self.clinic.people[DEVICE[device].0].role.can_write()
    }

    /// Encrypts a conversation message claiming `epoch` from `from` to `to`.
    fn encrypt(&mut self, from: usize, to: usize, epoch: u64, id: MessageId) -> (Vec<u8>, Vec<u8>) {
        let payload = Payload::ConversationMessage(ConversationMessage {
            conversation: CONVERSATION,
            epoch,
            id,
            sent_at_ms: 1_710_000_000_000 + self.messages,
            content_type: ContentType::Text,
            content: Zeroizing::new(format!("{from}-{}", self.messages).into_bytes()),
        });
        let padded = pad(&payload.encode()).to_vec();
        let bytes = session_mut(&mut self.sessions, from, to)
            .encrypt(&padded)
            .expect("encrypt");
        (bytes, padded)
    }

    fn next_id(&mut self, from: usize) -> MessageId {
        self.messages += 1;
        let mut id = [0u8; 16];
        id[0] = u8::try_from(from).unwrap_or(u8::MAX);
        id[8..].copy_from_slice(&self.messages.to_be_bytes());
        MessageId(id)
    }

    fn send(&mut self, sender: usize) {
        let (person, device_id) = DEVICE[sender];
        let me = &self.clinic.people[person];
        let epoch = self.known[sender];
        let view = &self.logs[epoch];
        // The client refuses to send where its own history says it may not write.
        if !writes_in(view, me.identity.public(), device_id) {
            return;
        }
        let recipients: Vec<usize> = (0..DEVICES)
            .filter(|&d| d != sender)
            .filter(|&d| {
                let (p, id) = DEVICE[d];
                view.is_member(&self.clinic.people[p].identity.public().fingerprint(), id)
            })
            .collect();
        assert_eq!(
            recipients.len() + 1,
            view.device_count(),
            "fan-out is not one copy per other member device"
        );
        let mut expected = self.model[epoch].clone();
        expected.remove(&sender);
        assert_eq!(
            recipients.iter().copied().collect::<Members>(),
            expected,
            "fan-out to other devices than the members at epoch {epoch}"
        );
        assert!(
            self.model_writes(epoch, sender),
            "the sender's history lets it write where the model does not"
        );
        let id = self.next_id(sender);
        let wire_epoch = u64::try_from(epoch).unwrap_or(u64::MAX);
        let mut copies = Vec::new();
        for &to in &recipients {
            let (bytes, payload) = self.encrypt(sender, to, wire_epoch, id);
            let t = &mut self.track[sender][to];
            copies.push(Envelope {
                from: sender,
                to,
                bytes,
                payload,
                id,
                epoch: wire_epoch,
                forged: false,
                ordinal: t.sent,
            });
            t.sent += 1;
        }
        assert_eq!(
            copies.len(),
            recipients.len(),
            "not one ciphertext per copy"
        );
        self.stats.copies_made += copies.len();
        // The relay accepts a send only at the head, between members at the head (§5.4). A
        // stale sender fetches the history and sends again only what it may (§4.4); copies for
        // devices no longer members are dropped, never sent.
        let head = self.head();
        if epoch != head {
            self.known[sender] = head;
            let now = &self.model[head];
            let made = copies.len();
            copies.retain(|c| now.contains(&c.from) && now.contains(&c.to));
            self.stats.stale_sends += 1;
            self.stats.copies_dropped_as_removed += made - copies.len();
        }
        for c in &copies {
            assert!(
                self.model[head].contains(&c.to),
                "the relay carries a copy to device {} that is not a member at the head",
                c.to
            );
        }
        self.in_flight.extend(copies);
    }

    fn forge(&mut self, sender: usize, recipient: usize, claimed: u8) {
        if sender == recipient {
            return;
        }
        let epoch = usize::from(claimed) % (self.head() + 2);
        let id = self.next_id(sender);
        let wire_epoch = u64::try_from(epoch).unwrap_or(u64::MAX);
        let (bytes, payload) = self.encrypt(sender, recipient, wire_epoch, id);
        let t = &mut self.track[sender][recipient];
        let ordinal = t.sent;
        t.sent += 1;
        self.in_flight.push(Envelope {
            from: sender,
            to: recipient,
            bytes,
            payload,
            id,
            epoch: wire_epoch,
            forged: true,
            ordinal,
        });
    }

    fn deliver(&mut self, copy: Envelope) {
        let (from, to) = (copy.from, copy.to);
        let track = self.track[from][to];
        let overtaken = track.newest_delivered.is_some_and(|n| n > copy.ordinal);
        let session = session_mut(&mut self.sessions, to, from);
        let before = session.clone();
        let plaintext = match session.decrypt(&copy.bytes, &mut self.rng) {
            Ok(plaintext) => plaintext,
            Err(e) => {
                let discarded = session.discarded_message_keys();
                assert!(
                    overtaken && discarded > 0,
                    "copy {} from {from} to {to} failed ({e}); overtaken: {overtaken}, keys \
                     discarded: {discarded}",
                    copy.ordinal
                );
                assert_eq!(
                    session_state(session),
                    session_state(&before),
                    "a lost copy changed the receiver's session"
                );
                self.stats.copies_lost += 1;
                return;
            }
        };
        assert_eq!(plaintext, copy.payload, "decrypted to something else");
        self.stats.copies_decrypted += 1;
        self.track[from][to].newest_delivered = track.newest_delivered.max(Some(copy.ordinal));
        let Ok(Payload::ConversationMessage(message)) = Payload::decode_padded(&plaintext) else {
            panic!("a conversation message did not decode");
        };
        assert_eq!(
            (message.epoch, message.id),
            (copy.epoch, copy.id),
            "decrypted to another message"
        );
        if !copy.forged {
            let epoch = usize::try_from(copy.epoch).unwrap_or(usize::MAX);
            assert!(
                self.model[epoch].contains(&to),
                "device {to} decrypted a message of epoch {epoch} at which it is not a member"
            );
        }
        // The recipient judges by its verified history, fetching it first when the message
        // names an epoch it has not verified (§8.1).
        let epoch = usize::try_from(message.epoch).unwrap_or(usize::MAX);
        if epoch > self.known[to] {
            self.known[to] = self.head();
        }
        let (person, device_id) = DEVICE[from];
        let accepted = epoch >= 1
            && epoch <= self.known[to]
            && writes_in(
                &self.logs[epoch],
                self.clinic.people[person].identity.public(),
                device_id,
            );
        // The model's verdict, at delivery: a claimed epoch past the head when the message
        // was made may have been reached since, and then the history decides.
        let expected = epoch >= 1 && epoch <= self.head() && self.model_writes(epoch, from);
        assert!(
            expected || copy.forged,
            "an honest message from {from} at epoch {epoch} is not acceptable"
        );
        assert_eq!(
            accepted, expected,
            "device {to} judged a message from {from} at epoch {epoch} against the model"
        );
        if accepted {
            self.stats.messages_accepted += 1;
            assert!(
                self.accepted.insert((to, message.id)),
                "device {to} accepted message {} twice",
                message.id
            );
        } else {
            self.stats.messages_refused += 1;
        }
        self.delivered.push(copy);
    }

    /// Delivers `bytes` (a copy of `copy` that must fail) and checks that the session is as
    /// it was.
    fn refused(&mut self, copy: &Envelope, bytes: &[u8], what: &str) {
        let session = session_mut(&mut self.sessions, copy.to, copy.from);
        let before = session_state(session);
        assert!(
            session.decrypt(bytes, &mut self.rng).is_err(),
            "{what} from {} to {} decrypted",
            copy.from,
            copy.to
        );
        assert_eq!(
            session_state(session),
            before,
            "{what} changed the receiver's session"
        );
        self.stats.attacks_refused += 1;
    }

    /// The device a client would sign with: for an addition, a member device of the same
    /// person, else (staff joining) the device itself, or an agent on the conversation adding
    /// another agent; for a removal, another device of the patient, or an agent on the
    /// conversation removing staff (supervisors remove themselves).
    fn client_signer(&self, add: bool, device: usize) -> usize {
        let members = &self.model[self.head()];
        let person = DEVICE[device].0;
        let role = self.clinic.people[person].role;
        let own = members
            .iter()
            .copied()
            .find(|&d| DEVICE[d].0 == person && (add || d != device));
        let agent = members
            .iter()
            .copied()
            .find(|&d| self.clinic.people[DEVICE[d].0].role == MemberRole::Agent);
        match (add, role) {
            (_, MemberRole::Patient) | (true, MemberRole::Supervisor) => own.unwrap_or(device),
            (true, MemberRole::Agent) => own.or(agent).unwrap_or(device),
            (false, MemberRole::Agent) => agent.unwrap_or(device),
            (false, MemberRole::Supervisor) => device,
        }
    }

    fn change(&mut self, add: bool, device: usize, signer: u8) {
        let signer = match usize::from(signer) {
            s if s < DEVICES => s,
            _ => self.client_signer(add, device),
        };
        let head = self.head();
        let Some(change) = sign_change(&self.clinic.people, &self.logs[head], add, device, signer)
        else {
            return;
        };
        let mut log = self.logs[head].clone();
        match log.apply(&change, &context(self.clinic)) {
            Ok(()) => {
                let before = &self.model[head];
                let role = self.clinic.people[DEVICE[signer].0].role;
                assert!(
                    before.contains(&signer) || (add && signer == device),
                    "a change signed by device {signer}, not a member, was accepted"
                );
                assert!(
                    role.can_write() || DEVICE[signer].0 == DEVICE[device].0,
                    "a supervisor's change about someone else was accepted"
                );
                let mut members = before.clone();
                let changed = if add {
                    members.insert(device)
                } else {
                    members.remove(&device)
                };
                assert!(changed, "an accepted change changed nothing");
                self.stats.changes_accepted += 1;
                self.changes.push(change);
                self.logs.push(log);
                self.model.push(members);
                let new_head = self.head();
                // The signer fetched the history to sign at the head; the others learn the
                // change now unless they lag.
                self.known[signer] = new_head;
                for (known, lagging) in self.known.iter_mut().zip(self.lagging) {
                    if !lagging {
                        *known = new_head;
                    }
                }
            }
            Err(e) => {
                self.stats.changes_refused += 1;
                assert_eq!(
                    (log.next_epoch(), log.head(), log.members()),
                    (
                        self.logs[head].next_epoch(),
                        self.logs[head].head(),
                        self.logs[head].members()
                    ),
                    "a refused change ({e:?}) changed the history"
                );
            }
        }
    }

    /// The invariants that hold between steps.
    fn check(&self) {
        let head = self.head();
        let log = &self.logs[head];
        assert_eq!(
            usize::try_from(log.next_epoch()).ok(),
            Some(head),
            "the log's epoch is not the number of changes"
        );
        let members: Members = (0..DEVICES)
            .filter(|&d| {
                let (p, id) = DEVICE[d];
                let fp = fingerprint(&self.clinic.people, d);
                log.members().iter().any(|m| {
                    m.identity().fingerprint() == fp
                        && m.devices().contains(&id)
                        && m.role() == self.clinic.people[p].role
                })
            })
            .collect();
        assert_eq!(
            members, self.model[head],
            "the verified members differ from the model"
        );
        assert!(
            self.known.iter().all(|&k| k <= head),
            "a view past the head"
        );
        for c in self.in_flight.iter().filter(|c| !c.forged) {
            let epoch = usize::try_from(c.epoch).unwrap_or(usize::MAX);
            assert!(
                self.model.get(epoch).is_some_and(|m| m.contains(&c.to)),
                "a copy in flight to device {} of epoch {epoch}, where it is not a member",
                c.to
            );
        }
    }
}

/// `sessions[of][with]`, which exists for every pair of distinct devices.
fn session_mut(sessions: &mut [Vec<Option<Session>>], of: usize, with: usize) -> &mut Session {
    sessions[of][with]
        .as_mut()
        .expect("every pair of distinct devices has a session")
}

fn context(clinic: &Clinic) -> MembershipContext<'_> {
    MembershipContext {
        revocations: None,
        patient_devices: Some(&clinic.patient_devices),
        now: NOW,
    }
}
