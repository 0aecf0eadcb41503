//! `conversation_membership.json`: a clinic conversation's signed membership history
//! (`docs/conversations.md` §4) — a valid history of nine changes with each change's bytes and
//! hash, and invalid changes each with the rule (§4.3) it breaks. No randomness: the identities'
//! keys come from fixed seeds published in the file, the organization key is `clinic.json`'s,
//! and Ed25519 signing is deterministic.

use ed25519_dalek::SigningKey;
use hushwire::proto::clinic::{AgentCertificate, DeviceList, OrgKey, RevocationList, Role, Roles};
use hushwire::proto::conversation::queue::{NoteEnvelope, QueueEntry, QueueFrame, QueueState};
use hushwire::proto::conversation::{
    ArchiveEnvelope, ArchivePolicy, ChangeAction, ChangeProposal, ConversationId, MemberRole,
    MembershipChange, MembershipContext, MembershipLog, genesis_hash,
};
use hushwire::proto::keys::identity_binding_message;
use hushwire::proto::relay::DeviceAddress;
use hushwire::proto::{Codec, IdentityKey, X25519PublicKey, labels};
use serde_json::{Value, json};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::{Error, RecordingRng};
use hushwire::archive::{ArchiveSecretKey, ArchivedMessage};

/// `clinic.json`'s organization key seed.
const ORG_SECRET: [u8; 32] = [0x4f; 32];
const NOT_BEFORE: u64 = 1_700_000_000;
const NOT_AFTER: u64 = 1_731_536_000;
/// The first change's time; change `k` of the valid history is issued at `T0 + 60 k`.
const T0: u64 = 1_710_000_000;
/// The verifier's clock for every case but the expired one.
const NOW: u64 = T0 + 10_000;
const CONVERSATION: [u8; 16] = *b"support-chat-001";
/// The archive key's X25519 secret (`0x41` × 32) and the policy's retention (six years).
const ARCHIVE_SECRET: [u8; 32] = [0x41; 32];
const RETENTION_DAYS: u16 = 2190;
/// The seed of the ChaCha20 RNG that draws the archive seal's ephemeral secret.
const ARCHIVE_SEAL_SEED: [u8; 32] = [0x53; 32];
/// The archived message's padded payload: a client message payload (kind 0x01) padded to 256.
const ARCHIVED_TEXT: &[u8] = b"Your results are ready; the nurse will call you today.";
/// The request id of every published client frame.
const REQUEST_ID: u32 = 7;

struct Person {
    name: &'static str,
    signing_seed: [u8; 32],
    dh_secret: [u8; 32],
    key: SigningKey,
    identity: IdentityKey,
    certificate: Option<AgentCertificate>,
}

fn person(name: &'static str, seed: u8) -> Result<Person, Error> {
    let signing_seed = [seed; 32];
    let dh_secret = [seed ^ 0xff; 32];
    let key = SigningKey::from_bytes(&signing_seed);
    let dh = PublicKey::from(&StaticSecret::from(dh_secret)).to_bytes();
    let dh_key = X25519PublicKey::from_array(dh, "identity dh key")?;
    let binding = hushwire::proto::Signer::sign(
        &key,
        labels::SIG_IDENTITY_BINDING,
        &identity_binding_message(key.verifying_key().as_bytes(), &dh),
    );
    let identity = IdentityKey::new(key.verifying_key().to_bytes(), dh_key, binding)?;
    Ok(Person {
        name,
        signing_seed,
        dh_secret,
        key,
        identity,
        certificate: None,
    })
}

fn staff(
    org: &SigningKey,
    name: &'static str,
    seed: u8,
    serial: u64,
    roles: &[Role],
) -> Result<Person, Error> {
    let mut p = person(name, seed)?;
    let roles = Roles::of(roles).ok_or("roles")?;
    p.certificate = Some(AgentCertificate::issue(
        org,
        serial,
        p.identity.clone(),
        name,
        roles,
        NOT_BEFORE,
        NOT_AFTER,
    )?);
    Ok(p)
}

struct Step<'a> {
    signer: &'a Person,
    device: u32,
    action: ChangeAction,
    role: MemberRole,
    member: &'a Person,
    devices: &'a [u32],
}

/// The change `step` describes on top of `log`, issued at `issued_at` with `epoch` and
/// `previous_hash` taken from `log` unless overridden.
fn sign(
    log: &MembershipLog,
    step: &Step<'_>,
    issued_at: u64,
    epoch: Option<u64>,
    previous_hash: Option<[u8; 32]>,
) -> Result<MembershipChange, Error> {
    let member_certificate = if step.action == ChangeAction::Add && step.role.is_staff() {
        step.member.certificate.clone()
    } else {
        None
    };
    Ok(MembershipChange::sign(
        ChangeProposal {
            conversation: log.conversation(),
            epoch: epoch.unwrap_or(log.next_epoch()),
            previous_hash: previous_hash.unwrap_or(log.head()),
            issued_at,
            action: step.action,
            role: step.role,
            member: step.member.identity.clone(),
            devices: step.devices.to_vec(),
            member_certificate,
        },
        &step.signer.key,
        step.signer.identity.clone(),
        step.device,
        step.signer.certificate.clone(),
    )?)
}

fn role_name(role: MemberRole) -> &'static str {
    match role {
        MemberRole::Patient => "patient",
        MemberRole::Agent => "agent",
        MemberRole::Supervisor => "supervisor",
    }
}

fn person_json(p: &Person) -> Value {
    json!({
        "signing_seed": hex::encode(p.signing_seed),
        "dh_secret": hex::encode(p.dh_secret),
        "identity_key": hex::encode(p.identity.to_bytes()),
        "fingerprint": hex::encode(p.identity.fingerprint().0),
        "certificate": p.certificate.as_ref().map(|c| hex::encode(c.to_bytes())).unwrap_or_default(),
    })
}

/// The whole file.
pub fn membership() -> Result<Value, Error> {
    use ChangeAction::{Add, Remove};
    use MemberRole::{Agent, Patient, Supervisor};

    let org_signer = SigningKey::from_bytes(&ORG_SECRET);
    let org = OrgKey::new(org_signer.verifying_key())?;
    let patient = person("patient", 0x61)?;
    let ada = staff(&org_signer, "Ada", 0x62, 11, &[Role::Agent])?;
    let ben = staff(&org_signer, "Ben", 0x63, 12, &[Role::Agent])?;
    let sue = staff(&org_signer, "Sue", 0x64, 13, &[Role::Supervisor])?;
    let stranger = person("stranger", 0x65)?;
    let people = [&patient, &ada, &ben, &sue, &stranger];
    let device_list = DeviceList::issue(&patient.key, &patient.identity, 1, &[1, 2])?;
    let conversation = ConversationId(CONVERSATION);
    let ctx = MembershipContext {
        revocations: None,
        patient_devices: Some(&device_list),
        now: NOW,
    };

    let steps = [
        Step {
            signer: &patient,
            device: 1,
            action: Add,
            role: Patient,
            member: &patient,
            devices: &[1],
        },
        Step {
            signer: &ada,
            device: 1,
            action: Add,
            role: Agent,
            member: &ada,
            devices: &[1],
        },
        Step {
            signer: &patient,
            device: 1,
            action: Add,
            role: Patient,
            member: &patient,
            devices: &[2],
        },
        Step {
            signer: &ada,
            device: 1,
            action: Add,
            role: Agent,
            member: &ben,
            devices: &[1, 2],
        },
        Step {
            signer: &ada,
            device: 1,
            action: Remove,
            role: Agent,
            member: &ada,
            devices: &[1],
        },
        Step {
            signer: &sue,
            device: 1,
            action: Add,
            role: Supervisor,
            member: &sue,
            devices: &[1],
        },
        Step {
            signer: &sue,
            device: 1,
            action: Remove,
            role: Supervisor,
            member: &sue,
            devices: &[1],
        },
        Step {
            signer: &ben,
            device: 2,
            action: Remove,
            role: Agent,
            member: &ben,
            devices: &[1, 2],
        },
        Step {
            signer: &ada,
            device: 1,
            action: Add,
            role: Agent,
            member: &ada,
            devices: &[1],
        },
    ];
    let what = [
        "the patient opens the conversation with device 1",
        "Ada claims it",
        "the patient adds its device 2",
        "Ada adds Ben (hand-off to a named agent, first half)",
        "Ada removes herself (hand-off, second half)",
        "Sue joins read-only",
        "Sue leaves",
        "Ben hands the conversation back to the queue",
        "Ada claims it again",
    ];
    let mut log = MembershipLog::new(conversation, org);
    let mut logs = vec![log.clone()];
    let mut history = Vec::new();
    for (k, (step, what)) in steps.iter().zip(what).enumerate() {
        let change = sign(&log, step, T0 + 60 * k as u64, None, None)?;
        if MembershipChange::from_bytes(&change.to_bytes())
            .ok()
            .as_ref()
            != Some(&change)
        {
            return Err("a membership change does not round-trip".into());
        }
        log.apply(&change, &ctx)
            .map_err(|e| format!("valid change {k} refused: {e}"))?;
        history.push(json!({
            "epoch": change.epoch(),
            "what": what,
            "signer": step.signer.name,
            "signer_device": step.device,
            "action": match step.action { Add => "add", Remove => "remove" },
            "role": role_name(step.role),
            "member": step.member.name,
            "devices": step.devices,
            "issued_at": change.issued_at(),
            "bytes": hex::encode(change.to_bytes()),
            "hash": hex::encode(change.hash()),
        }));
        logs.push(log.clone());
    }
    let members: Vec<Value> = log
        .members()
        .iter()
        .map(|m| {
            let name = people
                .iter()
                .find(|p| p.identity == *m.identity())
                .map_or("?", |p| p.name);
            json!({ "member": name, "role": role_name(m.role()), "devices": m.devices() })
        })
        .collect();

    // Invalid changes: (name, number of valid changes before it, change, now, revocation list).
    let revoked_ada = RevocationList::issue(&org_signer, 1, T0 + 200, &[11])?;
    // §4.3 rule 9: lists for the takeover cases, issued after Ada's claim (t0 + 60).
    let revoked_sue = RevocationList::issue(&org_signer, 2, T0 + 150, &[13])?;
    let revoked_ada_later = RevocationList::issue(&org_signer, 3, T0 + 150, &[11, 13])?;
    let revoked_ada_last = RevocationList::issue(&org_signer, 4, T0 + 500, &[11])?;
    let at = |k: usize| -> Result<&MembershipLog, Error> {
        logs.get(k).ok_or_else(|| "no such prefix".into())
    };
    let time = |k: usize| T0 + 60 * k as u64;
    let s = |signer, device, action, role, member, devices| Step {
        signer,
        device,
        action,
        role,
        member,
        devices,
    };
    let mut cases: Vec<(&str, usize, MembershipChange, u64, Option<&RevocationList>)> = vec![];
    // A claim whose signature is Ben's key under Ada's identity.
    let impostor = Person {
        key: ben.key.clone(),
        ..person("Ada", 0x62)?
    };
    let mut impostor = impostor;
    impostor.certificate = ada.certificate.clone();
    cases.push((
        "a claim signed with another key than the signer's",
        1,
        sign(
            at(1)?,
            &s(&impostor, 1, Add, Agent, &impostor, &[1]),
            time(1),
            None,
            None,
        )?,
        NOW,
        None,
    ));
    cases.push((
        "Ada, removed at epoch 4, removes Ben",
        5,
        sign(
            at(5)?,
            &s(&ada, 1, Remove, Agent, &ben, &[1, 2]),
            time(5),
            None,
            None,
        )?,
        NOW,
        None,
    ));
    cases.push((
        "the patient adds a stranger's device",
        2,
        sign(
            at(2)?,
            &s(&patient, 1, Add, Patient, &stranger, &[1]),
            time(2),
            None,
            None,
        )?,
        NOW,
        None,
    ));
    cases.push((
        "the patient removes the agent",
        2,
        sign(
            at(2)?,
            &s(&patient, 1, Remove, Agent, &ada, &[1]),
            time(2),
            None,
            None,
        )?,
        NOW,
        None,
    ));
    cases.push((
        "a change two epochs ahead",
        3,
        sign(
            at(3)?,
            &s(&ada, 1, Add, Supervisor, &sue, &[1]),
            time(3),
            Some(5),
            None,
        )?,
        NOW,
        None,
    ));
    cases.push((
        "the claim replayed at epoch 1",
        3,
        sign(at(1)?, &steps[1], time(1), None, None)?,
        NOW,
        None,
    ));
    cases.push((
        "a change naming a wrong previous hash",
        3,
        sign(
            at(3)?,
            &s(&ada, 1, Add, Supervisor, &sue, &[1]),
            time(3),
            None,
            Some([0; 32]),
        )?,
        NOW,
        None,
    ));
    cases.push((
        "a change issued before the previous one",
        3,
        sign(
            at(3)?,
            &s(&ada, 1, Add, Supervisor, &sue, &[1]),
            time(1),
            None,
            None,
        )?,
        NOW,
        None,
    ));
    cases.push((
        "Ada signs after her certificate expired",
        3,
        sign(
            at(3)?,
            &s(&ada, 1, Add, Agent, &ben, &[1]),
            NOT_AFTER,
            None,
            None,
        )?,
        NOT_AFTER,
        None,
    ));
    cases.push((
        "Ada signs after a revocation list naming her serial",
        3,
        sign(
            at(3)?,
            &s(&ada, 1, Add, Agent, &ben, &[1]),
            time(4),
            None,
            None,
        )?,
        NOW,
        Some(&revoked_ada),
    ));
    cases.push((
        "Sue (read-only) adds Ben",
        6,
        sign(
            at(6)?,
            &s(&sue, 1, Add, Agent, &ben, &[1]),
            time(6),
            None,
            None,
        )?,
        NOW,
        None,
    ));
    cases.push((
        "Ben claims while Ada is on it, with a revocation list naming only another certificate",
        3,
        sign(
            at(3)?,
            &s(&ben, 1, Add, Agent, &ben, &[1]),
            time(3),
            None,
            None,
        )?,
        NOW,
        Some(&revoked_sue),
    ));
    cases.push((
        "Ben claims while Ada is on the conversation",
        2,
        sign(
            at(2)?,
            &s(&ben, 1, Add, Agent, &ben, &[1]),
            time(2),
            None,
            None,
        )?,
        NOW,
        None,
    ));
    cases.push((
        "the patient adds a device its device list does not name",
        2,
        sign(
            at(2)?,
            &s(&patient, 1, Add, Patient, &patient, &[3]),
            time(2),
            None,
            None,
        )?,
        NOW,
        None,
    ));
    cases.push((
        "an agent opens the conversation",
        0,
        sign(
            at(0)?,
            &s(&ada, 1, Add, Agent, &ada, &[1]),
            time(0),
            None,
            None,
        )?,
        NOW,
        None,
    ));
    cases.push((
        "Ada removes the patient's device",
        3,
        sign(
            at(3)?,
            &s(&ada, 1, Remove, Patient, &patient, &[2]),
            time(3),
            None,
            None,
        )?,
        NOW,
        None,
    ));
    cases.push((
        "Sue (supervisor certificate) joins as an agent",
        2,
        sign(
            at(2)?,
            &s(&sue, 1, Add, Agent, &sue, &[1]),
            time(2),
            None,
            None,
        )?,
        NOW,
        None,
    ));

    let mut invalid = Vec::new();
    for (name, after, change, now, revocations) in cases {
        let mut prefix = at(after)?.clone();
        let ctx = MembershipContext {
            revocations,
            patient_devices: Some(&device_list),
            now,
        };
        let error = prefix
            .apply(&change, &ctx)
            .err()
            .ok_or_else(|| format!("invalid case {name:?} was accepted"))?;
        let mut case = json!({
            "name": name,
            "after": after,
            "now": now,
            "change": hex::encode(change.to_bytes()),
            "rule": error.rule(),
            "error": format!("{error:?}"),
        });
        if let (Some(list), Some(obj)) = (revocations, case.as_object_mut()) {
            obj.insert(
                "revocation_list".into(),
                hex::encode(list.to_bytes()).into(),
            );
        }
        invalid.push(case);
    }

    // §4.3 rule 9: a claim that takes over from revoked agents (they leave with it).
    let mut takeovers = Vec::new();
    for (name, after, change, list) in [
        (
            "Ben claims after a revocation list naming Ada, the only agent on it: she leaves",
            3,
            sign(
                at(3)?,
                &s(&ben, 1, Add, Agent, &ben, &[1]),
                time(3),
                None,
                None,
            )?,
            &revoked_ada_later,
        ),
        (
            "Ben claims after a revocation list naming Ada, who claimed it again at epoch 8",
            9,
            sign(
                at(9)?,
                &s(&ben, 1, Add, Agent, &ben, &[1]),
                time(9),
                None,
                None,
            )?,
            &revoked_ada_last,
        ),
    ] {
        let mut prefix = at(after)?.clone();
        if !prefix.agents_all_revoked(Some(list)) {
            return Err(format!("takeover case {name:?}: the agents are not all revoked").into());
        }
        let ctx = MembershipContext {
            revocations: Some(list),
            patient_devices: Some(&device_list),
            now: NOW,
        };
        prefix
            .apply(&change, &ctx)
            .map_err(|e| format!("takeover case {name:?} refused: {e}"))?;
        let members: Vec<Value> = prefix
            .members()
            .iter()
            .map(|m| {
                let name = people
                    .iter()
                    .find(|p| p.identity == *m.identity())
                    .map_or("?", |p| p.name);
                json!({ "member": name, "role": role_name(m.role()), "devices": m.devices() })
            })
            .collect();
        takeovers.push(json!({
            "name": name,
            "after": after,
            "now": NOW,
            "change": hex::encode(change.to_bytes()),
            "revocation_list": hex::encode(list.to_bytes()),
            "members": members,
        }));
    }

    // The archive policy (§7.1) and one frame of each queue type that carries structure (§5.2).
    let archive_key = PublicKey::from(&StaticSecret::from(ARCHIVE_SECRET)).to_bytes();
    let policy = ArchivePolicy::issue(
        &org_signer,
        1,
        X25519PublicKey::from_array(archive_key, "archive key")?,
        RETENTION_DAYS,
    )?;
    if ArchivePolicy::from_bytes(&policy.to_bytes()).ok().as_ref() != Some(&policy)
        || !policy.verify(&org)
    {
        return Err("the archive policy does not round-trip or verify".into());
    }
    let h = |k: usize| -> Result<MembershipChange, Error> {
        Ok(MembershipChange::from_bytes(&hex::decode(
            history
                .get(k)
                .and_then(|e| e["bytes"].as_str())
                .ok_or("history")?,
        )?)?)
    };
    let entry = QueueEntry {
        conversation,
        state: QueueState::HandedBack,
        opened_at: T0,
        waiting_since: T0 + 420,
        epoch: 8,
    };
    let frames = [
        (
            "OpenConversation",
            QueueFrame::OpenConversation(Box::new(h(0)?)),
        ),
        ("Claim", QueueFrame::Claim(Box::new(h(1)?))),
        (
            "HandOff",
            QueueFrame::HandOff {
                changes: vec![h(3)?, h(4)?],
                notes: vec![NoteEnvelope {
                    recipient: DeviceAddress {
                        fingerprint: ben.identity.fingerprint().0,
                        device_id: 1,
                    },
                    payload: vec![0x6e; 16],
                }],
            },
        ),
        ("Queue", QueueFrame::Queue(vec![entry])),
        (
            "Claimed",
            QueueFrame::Claimed {
                conversation,
                epoch: 1,
            },
        ),
        (
            "AlreadyClaimed",
            QueueFrame::AlreadyClaimed {
                conversation,
                epoch: 2,
            },
        ),
        ("Membership", QueueFrame::Membership(vec![h(0)?, h(1)?])),
        (
            "ArchivePolicy",
            QueueFrame::ArchivePolicy(Some(Box::new(policy.clone()))),
        ),
    ];
    let mut queue_frames = Vec::new();
    for (name, frame) in frames {
        let bytes = frame.to_frame(REQUEST_ID);
        if QueueFrame::from_frame(&bytes).ok() != Some((REQUEST_ID, frame.clone())) {
            return Err(format!("queue frame {name} does not round-trip").into());
        }
        queue_frames
            .push(json!({ "name": name, "type": frame.type_byte(), "bytes": hex::encode(bytes) }));
    }

    // §7.3: one message sealed to the archive key.
    let archive = ArchiveSecretKey::from_secret_bytes(ARCHIVE_SECRET).ok_or("archive key")?;
    if archive.public() != policy.archive_key() {
        return Err("the archive secret does not match the policy".into());
    }
    let mut payload = vec![0x01, 0x01];
    payload.extend_from_slice(ARCHIVED_TEXT);
    payload.resize(256, 0);
    let archived = ArchivedMessage {
        sender: ada.identity.fingerprint(),
        sender_device: 1,
        epoch: log.next_epoch(),
        payload,
    };
    let mut rng = RecordingRng::new(ARCHIVE_SEAL_SEED);
    let envelope = hushwire::archive::seal(&policy, conversation, &archived, &mut rng)?;
    let seal_draws = rng.take();
    if archive.open(&ArchiveEnvelope::from_bytes(&envelope.to_bytes())?)? != archived {
        return Err("the archive envelope does not open to what was sealed".into());
    }

    Ok(json!({
        "description": "A clinic conversation's membership history (docs/conversations.md §4), no randomness. `org_secret_key` is clinic.json's organization key seed. Each of `people` has an Ed25519 identity signing key from `signing_seed` (RFC 8032) and an X25519 identity key from `dh_secret`; `identity_key` = signing_key || dh_key || Ed25519 signature of (SIG_IDENTITY_BINDING || signing_key || dh_key), `fingerprint` its SHA-256(\"Hushwire v1 fingerprint\" || signing_key || dh_key); staff carry an agent certificate (clinic.md §3, valid `not_before`..`not_after`): Ada (serial 11) and Ben (serial 12) agent, Sue (serial 13) supervisor; the patient and the stranger have none (`certificate` empty). `patient_device_list` is the patient's device list (clinic.md §5: sequence 1, devices 1 and 2). `genesis_hash` = SHA-256(MEMBERSHIP_GENESIS || conversation_id || org_key). `history` is a valid history: change k (epoch k) issued at `t0` + 60 k, its fields, its `bytes` (§4.2) and `hash` = SHA-256(MEMBERSHIP_CHANGE_HASH || bytes); it verifies (§4.3) at `now` with the patient's device list and no revocation list, leaving `members`. `invalid` lists changes that must be refused: each is applied after the first `after` changes of `history`, at its own `now`, with `revocation_list` (signed by the organization key) when present; `rule` is the first rule of §4.3 it breaks and `error` the refusal as MembershipError's Debug form. `takeovers` lists claims that must be accepted (two) (§4.3 rule 9): each applied after the first `after` changes, at `now`, with `revocation_list`, which names the certificate every agent on the conversation was added with; the revoked agents leave with the claim (their devices count as removed), leaving `members`. `archive_policy` (§7.1) is signed by the organization key: sequence 1, the X25519 public key of `archive_secret`, `retention_days`. `queue_frames` (§5.2) are whole frames 0x01 || type || request_id (7) || body: OpenConversation (history 0), Claim (history 1), HandOff (history 3 and 4, one note envelope of 16 bytes 0x6e to Ben's device 1), Queue (one entry: the conversation, handed back, opened at t0, waiting since t0 + 420, epoch 8), Claimed (epoch 1), AlreadyClaimed (epoch 2), Membership (history 0 and 1), ArchivePolicy (the policy). `archive_seal` (§7.3) is one message sealed to the archive key: the ChaCha20 RNG seeded with `seed` draws the ephemeral X25519 secret e (`draws`); archived = Ada's fingerprint || `sender_device` || `epoch` || `payload` (each big-endian), E = X25519(e, 9), shared = X25519(e, archive_key), okm = HKDF-SHA256(salt = conversation_id, ikm = shared, info = KDF_ARCHIVE_SEAL || E || archive_key, L = 56), `envelope` = 0x01 || 0x72 || conversation_id || policy sequence 1 || E || len[4] || XChaCha20-Poly1305(okm[0..32], okm[32..56], AD = the 58 bytes before len, archived).",
        "org_secret_key": hex::encode(ORG_SECRET),
        "org_key": hex::encode(org.to_bytes()),
        "not_before": NOT_BEFORE,
        "not_after": NOT_AFTER,
        "t0": T0,
        "now": NOW,
        "conversation_id": hex::encode(CONVERSATION),
        "people": {
            "patient": person_json(&patient),
            "ada": person_json(&ada),
            "ben": person_json(&ben),
            "sue": person_json(&sue),
            "stranger": person_json(&stranger),
        },
        "patient_device_list": hex::encode(device_list.to_bytes()),
        "genesis_hash": hex::encode(genesis_hash(&conversation, &org)),
        "history": history,
        "members": members,
        "invalid": invalid,
        "takeovers": takeovers,
        "archive_policy": {
            "archive_secret": hex::encode(ARCHIVE_SECRET),
            "archive_key": hex::encode(archive_key),
            "retention_days": RETENTION_DAYS,
            "bytes": hex::encode(policy.to_bytes()),
        },
        "queue_frames": queue_frames,
        "archive_seal": {
            "seed": hex::encode(ARCHIVE_SEAL_SEED),
            "draws": seal_draws,
            "sender": "ada",
            "sender_device": archived.sender_device,
            "epoch": archived.epoch,
            "payload": hex::encode(&archived.payload),
            "envelope": hex::encode(envelope.to_bytes()),
        },
    }))
}
