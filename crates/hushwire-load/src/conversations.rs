//! `--conversation-devices D`: the relay's delivered envelopes per second in clinic
//! conversations of D member devices against plain two-party traffic, side by side in one run on
//! one relay (issue 15: "no lower than its two-party figure").
//!
//! `--devices` devices in all, in groups of D: each group is one conversation, opened by a
//! patient with the first half of the group's devices (device list published, `OpenConversation`)
//! and claimed by an agent of the clinic with the other half (`Claim`), with real signed
//! membership changes. Then, alternately for `--rounds` rounds:
//!
//! - **two-party**: every device sends `Send` frames of one envelope to one partner (devices
//!   paired in order) and receives as many from it;
//! - **conversation**: every device sends `ConversationSend` frames at the relay's head epoch,
//!   each with one envelope for each of the D − 1 other member devices (`conversations.md` §2,
//!   §5.2), and receives D − 1 envelopes for every message of the others.
//!
//! Each device sends and receives the same number of envelopes in both phases (`--messages`
//! conversation messages, D − 1 envelopes each, in all), holds the same number of envelopes in
//! flight (`--in-flight` frames of D − 1 envelopes, or D − 1 times as many frames of one), and
//! acknowledges every delivery. Payloads are opaque bytes of `--size` (the relay never decrypts;
//! a one-line message is a 334-byte session message, §2), carrying the phase, sender, sequence
//! number and send time. No archive envelope is filed (`PutArchive` is limited to 120 a minute
//! per device). Prints delivered envelopes/s for both, their ratio, and PASS when the
//! conversation figure is at least the two-party one. With `--database-url`, two relay instances
//! share one PostgreSQL schema and the devices alternate between them, so deliveries cross
//! instances.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hushwire::IdentityKeyPair;
use hushwire::proto::audit::ConversationId;
use hushwire::proto::clinic::{AgentCertificate, DeviceList, OrgKey, Role, Roles};
use hushwire::proto::conversation::queue::QueueFrame;
use hushwire::proto::conversation::{
    ChangeAction, ChangeProposal, MemberRole, MembershipChange, genesis_hash,
};
use hushwire::proto::relay::{DeviceAddress, Frame, FrameBody, OutgoingEnvelope};

use super::claims::{call, key, now, q, register_device, start_clinic_relays};
use super::{Args, RelayProcess, Socket, next_frame, percentile, send};

/// How long a device waits for any frame before the run is declared stuck.
const STALL: Duration = Duration::from_secs(60);
/// Request ids of acknowledgements start here, above every send's.
const ACK_IDS: u32 = 0x8000_0000;

/// One member device: its address and its authenticated connection.
struct Member {
    address: DeviceAddress,
    socket: Socket,
}

/// What one device does in a phase.
struct Plan {
    /// Phase tag, the payloads' first byte (deliveries of another phase are not counted).
    phase: u8,
    /// This device's number in the run (in every payload).
    index: u32,
    /// Frames to send, each to all of `recipients`.
    frames: u64,
    /// The recipients of each frame.
    recipients: Vec<DeviceAddress>,
    /// `Some((conversation, epoch))`: `ConversationSend`; `None`: `Send`.
    conversation: Option<(ConversationId, u64)>,
    /// Unanswered frames kept in flight.
    in_flight: usize,
    /// Envelopes this device must receive.
    expect: u64,
    /// Payload size.
    size: usize,
}

/// Latency samples of a phase, in microseconds.
#[derive(Default)]
struct Samples {
    ack: Vec<u64>,
    deliver: Vec<u64>,
}

fn payload(plan: &Plan, seq: u64, start: Instant) -> Vec<u8> {
    let mut p = Vec::with_capacity(plan.size.max(21));
    p.push(plan.phase);
    p.extend_from_slice(&plan.index.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(start.elapsed().as_micros() as u64).to_be_bytes());
    p.resize(plan.size.max(21), 0x5a);
    p
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    bytes
        .get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; N])
}

/// Sends `plan.frames` frames and receives `plan.expect` envelopes of this phase on one
/// connection, acknowledging each delivery. Returns the socket for the next phase.
async fn run_device(
    mut socket: Socket,
    plan: Plan,
    start: Instant,
    samples: Arc<Mutex<Samples>>,
) -> Result<Socket, String> {
    let mut next = 0u64;
    let mut pending: HashMap<u32, Instant> = HashMap::new();
    let mut received = HashSet::new();
    let mut ack_id = ACK_IDS;
    let mut ack = Vec::new();
    let mut deliver = Vec::new();
    while next < plan.frames || !pending.is_empty() || (received.len() as u64) < plan.expect {
        while pending.len() < plan.in_flight && next < plan.frames {
            let request_id = u32::try_from(next).map_err(|e| e.to_string())? + 2;
            let envelopes: Vec<OutgoingEnvelope> = plan
                .recipients
                .iter()
                .map(|r| OutgoingEnvelope {
                    recipient: *r,
                    payload: payload(&plan, next, start),
                })
                .collect();
            let body = match plan.conversation {
                Some((conversation, epoch)) => q(QueueFrame::ConversationSend {
                    conversation,
                    epoch,
                    envelopes,
                }),
                None => FrameBody::Send(envelopes),
            };
            send(&mut socket, Frame { request_id, body }).await?;
            pending.insert(request_id, Instant::now());
            next += 1;
        }
        let frame = tokio::time::timeout(STALL, next_frame(&mut socket))
            .await
            .map_err(|_| {
                format!(
                    "device {} stalled: {next} sent, {} unanswered, {}/{} received",
                    plan.index,
                    pending.len(),
                    received.len(),
                    plan.expect
                )
            })??;
        match frame.body {
            FrameBody::Sent(_) => {
                if let Some(at) = pending.remove(&frame.request_id) {
                    ack.push(at.elapsed().as_micros() as u64);
                }
            }
            FrameBody::Deliver(d) => {
                if d.payload.first() == Some(&plan.phase) {
                    let sender = u32::from_be_bytes(field(&d.payload, 1));
                    let seq = u64::from_be_bytes(field(&d.payload, 5));
                    let sent_at = u64::from_be_bytes(field(&d.payload, 13));
                    let now = start.elapsed().as_micros() as u64;
                    deliver.push(now.saturating_sub(sent_at));
                    received.insert((sender, seq));
                }
                ack_id = ack_id.wrapping_add(1).max(ACK_IDS);
                let body = FrameBody::Ack(vec![d.server_id]);
                send(
                    &mut socket,
                    Frame {
                        request_id: ack_id,
                        body,
                    },
                )
                .await?;
            }
            body @ (FrameBody::Error { .. } | FrameBody::Queue(_))
                if pending.contains_key(&frame.request_id) =>
            {
                return Err(format!("device {}: send refused: {body:?}", plan.index));
            }
            _ => {}
        }
    }
    if let Ok(mut s) = samples.lock() {
        s.ack.extend(ack);
        s.deliver.extend(deliver);
    }
    Ok(socket)
}

/// One conversation's devices, opened by a patient and claimed by an agent; the epoch its
/// messages carry.
struct Group {
    conversation: ConversationId,
    epoch: u64,
    members: Vec<Member>,
}

/// Registers identity `k` with `devices` devices (device list published from the first),
/// alternating between `urls` from `offset`.
async fn register_all(
    urls: &[String],
    offset: usize,
    k: &IdentityKeyPair,
    devices: u32,
    certificate: Option<&AgentCertificate>,
) -> Result<Vec<Member>, String> {
    let url = |i: usize| urls.get((offset + i) % urls.len()).ok_or("no relay");
    let mut first = register_device(url(0)?, k, 1, certificate.cloned()).await?;
    let ids: Vec<u32> = (1..=devices).collect();
    let list = DeviceList::issue(k, k.public(), 1, &ids).map_err(|e| e.to_string())?;
    match call(&mut first, 2, FrameBody::PublishDeviceList(list)).await? {
        FrameBody::Ok => {}
        other => return Err(format!("device list refused: {other:?}")),
    }
    let fingerprint = k.public().fingerprint().0;
    let mut members = vec![Member {
        address: DeviceAddress {
            fingerprint,
            device_id: 1,
        },
        socket: first,
    }];
    for device_id in 2..=devices {
        let socket = register_device(
            url(device_id as usize - 1)?,
            k,
            device_id,
            certificate.cloned(),
        )
        .await?;
        members.push(Member {
            address: DeviceAddress {
                fingerprint,
                device_id,
            },
            socket,
        });
    }
    Ok(members)
}

/// Opens conversation `g` with a patient's devices and has an agent claim it with theirs.
async fn open_and_claim(
    urls: &[String],
    org: &IdentityKeyPair,
    org_key: &OrgKey,
    g: usize,
    devices: usize,
) -> Result<Group, String> {
    let patient_devices = u32::try_from(devices - devices / 2).map_err(|e| e.to_string())?;
    let agent_devices = u32::try_from(devices / 2).map_err(|e| e.to_string())?;
    let patient = key(0x2_0000 + g as u64);
    let agent = key(0x3_0000 + g as u64);
    let certificate = AgentCertificate::issue(
        org,
        g as u64 + 1,
        agent.public().clone(),
        "Load Agent",
        Roles::of(&[Role::Agent]).ok_or("roles")?,
        now() - 60,
        now() + 86_400,
    )
    .map_err(|e| e.to_string())?;
    let offset = g * devices;
    let mut members = register_all(urls, offset, &patient, patient_devices, None).await?;
    let mut agents = register_all(
        urls,
        offset + patient_devices as usize,
        &agent,
        agent_devices,
        Some(&certificate),
    )
    .await?;

    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(g as u64).to_be_bytes());
    id[8..].copy_from_slice(&u64::from(std::process::id()).to_be_bytes());
    let conversation = ConversationId(id);
    let open = MembershipChange::sign(
        ChangeProposal {
            conversation,
            epoch: 0,
            previous_hash: genesis_hash(&conversation, org_key),
            issued_at: now(),
            action: ChangeAction::Add,
            role: MemberRole::Patient,
            member: patient.public().clone(),
            devices: (1..=patient_devices).collect(),
            member_certificate: None,
        },
        &patient,
        patient.public().clone(),
        1,
        None,
    )
    .map_err(|e| e.to_string())?;
    let head = open.hash();
    let first = &mut members.first_mut().ok_or("no patient device")?.socket;
    match call(first, 3, q(QueueFrame::OpenConversation(Box::new(open)))).await? {
        FrameBody::Ok => {}
        other => return Err(format!("open refused: {other:?}")),
    }
    let claim = MembershipChange::sign(
        ChangeProposal {
            conversation,
            epoch: 1,
            previous_hash: head,
            issued_at: now(),
            action: ChangeAction::Add,
            role: MemberRole::Agent,
            member: agent.public().clone(),
            devices: (1..=agent_devices).collect(),
            member_certificate: Some(certificate.clone()),
        },
        &agent,
        agent.public().clone(),
        1,
        Some(certificate),
    )
    .map_err(|e| e.to_string())?;
    let first = &mut agents.first_mut().ok_or("no agent device")?.socket;
    match call(first, 3, q(QueueFrame::Claim(Box::new(claim)))).await? {
        FrameBody::Queue(f) if matches!(*f, QueueFrame::Claimed { .. }) => {}
        other => return Err(format!("claim refused: {other:?}")),
    }
    members.append(&mut agents);
    // Two changes stored: the head epoch, which every ConversationSend must carry.
    Ok(Group {
        conversation,
        epoch: 2,
        members,
    })
}

/// One phase's outcome.
struct Phase {
    envelopes: u64,
    elapsed: Duration,
    samples: Samples,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.envelopes as f64 / self.elapsed.as_secs_f64()
    }

    fn line(&self, name: &str) -> String {
        let mut ack = self.samples.ack.clone();
        let mut deliver = self.samples.deliver.clone();
        ack.sort_unstable();
        deliver.sort_unstable();
        let ms = |v: &[u64], p| percentile(v, p) as f64 / 1000.0;
        format!(
            "{name}: {:.0} envelopes/s delivered ({} in {:.2} s); send→ack p50 {:.2} ms, p99 {:.2} ms; send→deliver p50 {:.2} ms, p99 {:.2} ms",
            self.rate(),
            self.envelopes,
            self.elapsed.as_secs_f64(),
            ms(&ack, 0.50),
            ms(&ack, 0.99),
            ms(&deliver, 0.50),
            ms(&deliver, 0.99),
        )
    }
}

/// Runs one phase on every device at once (`sockets` and `plans` in device order); hands the
/// sockets back in order.
async fn phase(
    sockets: Vec<Socket>,
    plans: Vec<Plan>,
    expected_envelopes: u64,
) -> Result<(Vec<Socket>, Phase), String> {
    let samples = Arc::new(Mutex::new(Samples::default()));
    let start = Instant::now();
    let tasks: Vec<_> = sockets
        .into_iter()
        .zip(plans)
        .map(|(socket, plan)| tokio::spawn(run_device(socket, plan, start, samples.clone())))
        .collect();
    let mut sockets = Vec::new();
    for task in tasks {
        sockets.push(task.await.map_err(|e| e.to_string())??);
    }
    let elapsed = start.elapsed();
    let samples = Arc::try_unwrap(samples)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default();
    let phase = Phase {
        envelopes: expected_envelopes,
        elapsed,
        samples,
    };
    Ok((sockets, phase))
}

/// Runs the comparison; whether it passed.
pub async fn run(bin: &Path, dir: &Path, args: &Args) -> Result<bool, String> {
    let d = args.conversation_devices;
    if !(2..=32).contains(&d) {
        return Err("--conversation-devices must be 2 to 32 (docs/conversations.md §2)".into());
    }
    let conversations = (args.devices / d).max(1);
    let devices = conversations * d;
    if !devices.is_multiple_of(2) {
        return Err(format!(
            "{devices} devices cannot be paired for the two-party phase: give an even --devices"
        ));
    }
    let fan = d as u64 - 1;
    let per_device = (args.messages / devices as u64).max(1);
    let total = per_device * devices as u64 * fan;

    let org = key(0xc1a1);
    let (org_key, mut relays) =
        start_clinic_relays(bin, dir, &org, args.database_url.as_deref(), "conv").await?;
    let urls: Vec<String> = relays.iter().map(RelayProcess::url).collect();
    // The relays are killed when `relays` is dropped, on every way out; an error after one of
    // them died names that first.
    let outcome = async {
        let mut groups = Vec::new();
        for g in 0..conversations {
            groups.push(open_and_claim(&urls, &org, &org_key, g, d).await?);
        }
        eprintln!(
            "{conversations} conversations of {d} member devices opened and claimed on {} instance(s)",
            urls.len()
        );
        let addresses: Vec<DeviceAddress> = groups
            .iter()
            .flat_map(|g| g.members.iter().map(|m| m.address))
            .collect();
        let mut sockets: Vec<Socket> = groups
            .iter_mut()
            .flat_map(|g| std::mem::take(&mut g.members).into_iter().map(|m| m.socket))
            .collect();

        let mut two_party = Vec::new();
        let mut conversation = Vec::new();
        for round in 0..args.rounds {
            let tag = u8::try_from(round % 100).unwrap_or(0) * 2 + 1;
            // Two-party: device 2k and 2k + 1 send to each other, one envelope a frame.
            let plans = (0..devices)
                .map(|i| {
                    let partner = *addresses.get(i ^ 1).ok_or("no partner")?;
                    Ok(Plan {
                        phase: tag,
                        index: i as u32,
                        frames: per_device * fan,
                        recipients: vec![partner],
                        conversation: None,
                        in_flight: args.in_flight * d.saturating_sub(1),
                        expect: per_device * fan,
                        size: args.size,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            let (back, p) = phase(sockets, plans, total).await?;
            sockets = back;
            println!("round {}: {}", round + 1, p.line("two-party"));
            two_party.push(p);

            // Conversation: every device to the other d − 1 of its conversation.
            let mut plans = Vec::new();
            for (g, group) in groups.iter().enumerate() {
                let members = addresses.get(g * d..(g + 1) * d).ok_or("no members")?;
                for (j, member) in members.iter().enumerate() {
                    plans.push(Plan {
                        phase: tag + 1,
                        index: (g * d + j) as u32,
                        frames: per_device,
                        recipients: members.iter().copied().filter(|a| a != member).collect(),
                        conversation: Some((group.conversation, group.epoch)),
                        in_flight: args.in_flight,
                        expect: per_device * fan,
                        size: args.size,
                    });
                }
            }
            let (back, p) = phase(sockets, plans, total).await?;
            sockets = back;
            println!("round {}: {}", round + 1, p.line("conversation"));
            conversation.push(p);
        }
        let rate = |phases: &[Phase]| {
            let envelopes: u64 = phases.iter().map(|p| p.envelopes).sum();
            let secs: f64 = phases.iter().map(|p| p.elapsed.as_secs_f64()).sum();
            envelopes as f64 / secs
        };
        let (pair, conv) = (rate(&two_party), rate(&conversation));
        println!(
            "{devices} devices ({conversations} conversations of {d}), {} instance(s), {per_device} messages per device, {} B payloads, {} round(s)",
            urls.len(),
            args.size,
            args.rounds
        );
        println!(
            "delivered envelopes/s over all rounds: two-party {pair:.0}, conversation {conv:.0}, conversation / two-party {:.2}",
            conv / pair
        );
        let pass = conv >= pair;
        println!(
            "{}: conversation ≥ two-party",
            if pass { "PASS" } else { "FAIL" }
        );
        Ok::<bool, String>(pass)
    }
    .await;
    outcome.map_err(|e| crate::blame_relay(&mut relays, e))
}
