//! `--claims N`: N patients open a clinic conversation at once and `--agents` agents race to
//! claim every one of them (`docs/conversations.md` §5.4). Prints the claim latency (request to
//! `Claimed`/`AlreadyClaimed`) p50/p99 and PASS when each conversation was won exactly once.
//! With `--database-url`, two relay instances share the database and the agents alternate
//! between them, so racing claims cross instances.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hushwire::IdentityKeyPair;
use hushwire::proto::audit::ConversationId;
use hushwire::proto::clinic::{AgentCertificate, ClinicLink, DeviceList, OrgKey, Role, Roles};
use hushwire::proto::conversation::queue::QueueFrame;
use hushwire::proto::conversation::{
    ChangeAction, ChangeProposal, MemberRole, MembershipChange, genesis_hash,
};
use hushwire::proto::relay::{Credentials, Frame, FrameBody};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;

use super::{RelayProcess, Socket, next_frame, percentile, send};

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn key(seed: u64) -> IdentityKeyPair {
    IdentityKeyPair::generate(&mut ChaCha20Rng::seed_from_u64(seed))
}

pub(crate) async fn call(
    socket: &mut Socket,
    id: u32,
    body: FrameBody,
) -> Result<FrameBody, String> {
    send(
        socket,
        Frame {
            request_id: id,
            body,
        },
    )
    .await?;
    loop {
        let frame = next_frame(socket).await?;
        if frame.request_id == id {
            return Ok(frame.body);
        }
    }
}

/// Connects and registers `identity` as device 1 (with `certificate` for staff).
async fn register(
    url: &str,
    identity: &IdentityKeyPair,
    certificate: Option<AgentCertificate>,
) -> Result<Socket, String> {
    register_device(url, identity, 1, certificate).await
}

/// Connects and registers `identity` as `device_id` (with `certificate` for staff); a device
/// after the first needs the identity's device list published first.
pub(crate) async fn register_device(
    url: &str,
    identity: &IdentityKeyPair,
    device_id: u32,
    certificate: Option<AgentCertificate>,
) -> Result<Socket, String> {
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .map_err(|e| e.to_string())?;
    let challenge = loop {
        if let FrameBody::Challenge(c) = next_frame(&mut socket).await?.body {
            break c;
        }
    };
    let credentials =
        Credentials::answer(identity.public().clone(), device_id, &challenge, identity);
    let body = FrameBody::Register {
        credentials,
        invite: None,
        certificate: certificate.map(Box::new),
    };
    match call(&mut socket, 1, body).await? {
        FrameBody::Ok => Ok(socket),
        other => Err(format!("registration refused: {other:?}")),
    }
}

pub(crate) fn q(frame: QueueFrame) -> FrameBody {
    FrameBody::Queue(Box::new(frame))
}

/// Starts the relay serving a clinic of organization key `org` (`--clinic-link`); with
/// `database_url`, two instances sharing one PostgreSQL schema (`hushwire_{schema}_{pid}`) and
/// one relay key. Waits until they listen.
pub(crate) async fn start_clinic_relays(
    bin: &Path,
    dir: &Path,
    org: &IdentityKeyPair,
    database_url: Option<&str>,
    schema: &str,
) -> Result<(OrgKey, Vec<RelayProcess>), String> {
    let link =
        ClinicLink::issue(org, "Load Clinic", "wss://relay.example").map_err(|e| e.to_string())?;
    let org_key = *link.org();
    let mut extra = vec!["--clinic-link".to_string(), link.to_string()];
    if let Some(url) = database_url {
        let key_file = crate::make_relay_key(bin, dir)?;
        extra.extend([
            "--database-url".into(),
            url.into(),
            "--database-schema".into(),
            format!("hushwire_{schema}_{}", std::process::id()),
            "--relay-key-file".into(),
            key_file,
        ]);
    }
    let mut relays = vec![RelayProcess::start(bin, dir, &extra)?];
    if database_url.is_some() {
        let second = dir.join("second");
        std::fs::create_dir_all(&second).map_err(|e| e.to_string())?;
        relays.push(RelayProcess::start(bin, &second, &extra)?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok((org_key, relays))
}

/// Runs the claim benchmark; whether it passed.
pub async fn run(
    bin: &Path,
    dir: &Path,
    patients: usize,
    agents: usize,
    database_url: Option<&str>,
) -> Result<bool, String> {
    let org = key(0xc1a1);
    let (org_key, mut relays) = start_clinic_relays(bin, dir, &org, database_url, "claims").await?;
    let urls: Vec<String> = relays.iter().map(RelayProcess::url).collect();

    let outcome: Result<bool, String> = async {
    // Agents, with certificates of the clinic, alternating between instances.
    let mut agent_sockets = Vec::new();
    let mut agent_keys = Vec::new();
    for i in 0..agents {
        let k = key(0xa000 + i as u64);
        let cert = AgentCertificate::issue(
            &org,
            i as u64 + 1,
            k.public().clone(),
            "Load Agent",
            Roles::of(&[Role::Agent]).ok_or("roles")?,
            now() - 60,
            now() + 3600,
        )
        .map_err(|e| e.to_string())?;
        let url = urls.get(i % urls.len()).ok_or("no relay")?;
        agent_sockets.push(register(url, &k, Some(cert.clone())).await?);
        agent_keys.push((k, cert));
    }

    // Patients: registered, device list published; then all open at once.
    let mut opened = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..patients {
        let url = urls.get(i % urls.len()).ok_or("no relay")?.clone();
        tasks.push(tokio::spawn(async move {
            let k = key(0x1_0000 + i as u64);
            let mut s = register(&url, &k, None).await?;
            let list = DeviceList::issue(&k, k.public(), 1, &[1]).map_err(|e| e.to_string())?;
            if call(&mut s, 2, FrameBody::PublishDeviceList(list)).await? != FrameBody::Ok {
                return Err("device list refused".to_string());
            }
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            id[8..].copy_from_slice(&(std::process::id() as u64).to_be_bytes());
            let conversation = ConversationId(id);
            let change = MembershipChange::sign(
                ChangeProposal {
                    conversation,
                    epoch: 0,
                    previous_hash: genesis_hash(&conversation, &org_key),
                    issued_at: now(),
                    action: ChangeAction::Add,
                    role: MemberRole::Patient,
                    member: k.public().clone(),
                    devices: vec![1],
                    member_certificate: None,
                },
                &k,
                k.public().clone(),
                1,
                None,
            )
            .map_err(|e| e.to_string())?;
            let head = change.hash();
            match call(&mut s, 3, q(QueueFrame::OpenConversation(Box::new(change)))).await? {
                FrameBody::Ok => Ok((conversation, head, s)),
                other => Err(format!("open refused: {other:?}")),
            }
        }));
    }
    for t in tasks {
        opened.push(t.await.map_err(|e| e.to_string())??);
    }
    let conversations: Vec<(ConversationId, [u8; 32])> =
        opened.iter().map(|(c, h, _)| (*c, *h)).collect();
    eprintln!("{patients} conversations opened; {agents} agents race to claim each");

    // Every agent claims every conversation, each starting at another place in the list.
    let started = Instant::now();
    let mut racers = Vec::new();
    for (i, ((k, cert), mut socket)) in agent_keys.into_iter().zip(agent_sockets).enumerate() {
        let conversations = conversations.clone();
        racers.push(tokio::spawn(async move {
            let mut results = Vec::new();
            let n = conversations.len();
            for j in 0..n {
                let Some(&(conversation, head)) =
                    conversations.get((j + i * n / agents.max(1)) % n)
                else {
                    continue;
                };
                let claim = MembershipChange::sign(
                    ChangeProposal {
                        conversation,
                        epoch: 1,
                        previous_hash: head,
                        issued_at: now(),
                        action: ChangeAction::Add,
                        role: MemberRole::Agent,
                        member: k.public().clone(),
                        devices: vec![1],
                        member_certificate: Some(cert.clone()),
                    },
                    &k,
                    k.public().clone(),
                    1,
                    Some(cert.clone()),
                )
                .map_err(|e| e.to_string())?;
                let sent = Instant::now();
                let answer = call(
                    &mut socket,
                    10 + j as u32,
                    q(QueueFrame::Claim(Box::new(claim))),
                )
                .await?;
                let micros = sent.elapsed().as_micros() as u64;
                let won = match answer {
                    FrameBody::Queue(f) => match *f {
                        QueueFrame::Claimed { .. } => true,
                        QueueFrame::AlreadyClaimed { .. } => false,
                        other => return Err(format!("unexpected answer {other:?}")),
                    },
                    other => return Err(format!("unexpected answer {other:?}")),
                };
                results.push((conversation, won, micros));
            }
            Ok::<_, String>(results)
        }));
    }
    let mut latencies = Vec::new();
    let mut wins = std::collections::HashMap::new();
    for r in racers {
        for (conversation, won, micros) in r.await.map_err(|e| e.to_string())?? {
            latencies.push(micros);
            if won {
                *wins.entry(conversation).or_insert(0u32) += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let exactly_once = conversations
        .iter()
        .all(|(c, _)| wins.get(c).copied() == Some(1));
    println!(
        "{} claims ({} conversations x {} agents, {} instance(s)) in {:.2} s: claim latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; won exactly once: {}/{}",
        latencies.len(),
        patients,
        agents,
        urls.len(),
        elapsed.as_secs_f64(),
        percentile(&latencies, 0.50) as f64 / 1000.0,
        percentile(&latencies, 0.99) as f64 / 1000.0,
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
        conversations
            .iter()
            .filter(|(c, _)| wins.get(c).copied() == Some(1))
            .count(),
        patients,
    );
    println!("{}", if exactly_once { "PASS" } else { "FAIL" });
    Ok(exactly_once)
    }
    .await;
    outcome.map_err(|e| crate::blame_relay(&mut relays, e))
}
