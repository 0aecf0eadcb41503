//! Clinic conversations (`docs/conversations.md` §10): open one (patient), go on duty, list the
//! queue, claim, and list the verified members. Each command connects, does one thing, and
//! disconnects; a refusal names the rule or the relay's code and changes nothing.

use std::process::ExitCode;
use std::time::Duration;

use hushwire_client::{ClaimOutcome, Client, MessageId};
use hushwire_proto::conversation::{ConversationId, MemberRole};
use hushwire_proto::keys::Fingerprint;
use serde_json::json;

use crate::cli::Global;
use crate::common::{self, CliResult, fail, open};
use crate::display::escape;

pub async fn connected(g: &Global, wait: u64) -> CliResult<Client> {
    let client = open(g).await?;
    client.connect().await?;
    common::wait_connected(&client, Duration::from_secs(wait)).await?;
    Ok(client)
}

use crate::common::conversation_hex as hex;

/// A conversation id: 32 hex digits, as `open-conversation` and `queue` print it.
pub fn parse_conversation(text: &str) -> CliResult<ConversationId> {
    let digits = text.trim();
    let bad = || {
        fail(format!(
            "not a conversation id (32 hex digits, as `hushwire queue` prints): {:?}",
            escape(&digits.chars().take(40).collect::<String>())
        ))
    };
    if digits.len() != 32 || !digits.is_ascii() {
        return Err(bad());
    }
    let mut id = [0u8; 16];
    for (byte, pair) in id.iter_mut().zip(digits.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(ConversationId(id))
}

/// `open-conversation`.
pub async fn open_conversation(g: &Global, id_only: bool, wait: u64) -> CliResult<ExitCode> {
    let client = connected(g, wait).await?;
    let result = client.open_conversation().await;
    client.disconnect().await;
    let id = result?;
    if id_only && !g.json {
        println!("{}", hex(&id));
    } else if g.json {
        println!("{}", json!({"conversation": hex(&id)}));
    } else {
        println!(
            "Opened conversation {} with your clinic; it waits in the clinic's queue.",
            hex(&id)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `on-duty on|off`.
pub async fn on_duty(g: &Global, on: bool, wait: u64) -> CliResult<ExitCode> {
    let client = connected(g, wait).await?;
    let result = client.set_on_duty(on).await;
    client.disconnect().await;
    result?;
    if g.json {
        println!("{}", json!({"on_duty": on}));
    } else if on {
        println!("On duty: the relay tells this device when the queue changes.");
    } else {
        println!("Off duty.");
    }
    Ok(ExitCode::SUCCESS)
}

/// `queue`.
pub async fn queue(g: &Global, wait: u64) -> CliResult<ExitCode> {
    let client = connected(g, wait).await?;
    let result = client.conversation_queue().await;
    client.disconnect().await;
    let entries = result?;
    if g.json {
        let list: Vec<_> = entries
            .iter()
            .map(|e| {
                json!({"conversation": hex(&e.conversation), "state": format!("{:?}", e.state),
                       "opened_at": e.opened_at, "waiting_since": e.waiting_since,
                       "epoch": e.epoch})
            })
            .collect();
        println!("{}", json!(list));
    } else if entries.is_empty() {
        println!("The queue is empty.");
    } else {
        for e in &entries {
            println!(
                "{}  {}, since {}",
                hex(&e.conversation),
                crate::common::queue_state_text(e.state),
                crate::common::format_time(e.waiting_since.saturating_mul(1000))
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `claim CONVERSATION`.
pub async fn claim(g: &Global, conversation: &str, wait: u64) -> CliResult<ExitCode> {
    let id = parse_conversation(conversation)?;
    let client = connected(g, wait).await?;
    let result = client.claim(id).await;
    client.disconnect().await;
    match result? {
        ClaimOutcome::Claimed => {
            if g.json {
                println!("{}", json!({"conversation": hex(&id), "claimed": true}));
            } else {
                println!("Claimed {}: you are the agent on it.", hex(&id));
            }
            Ok(ExitCode::SUCCESS)
        }
        ClaimOutcome::AlreadyClaimed => Err(fail(format!(
            "conversation {} was claimed by another agent first; nothing changed",
            hex(&id)
        ))),
    }
}

/// `members CONVERSATION`.
pub async fn members(g: &Global, conversation: &str, wait: u64) -> CliResult<ExitCode> {
    let id = parse_conversation(conversation)?;
    let client = connected(g, wait).await?;
    let result = client.members(id).await;
    client.disconnect().await;
    let members = result?;
    if g.json {
        let list: Vec<_> = members
            .iter()
            .map(|m| {
                json!({"fingerprint": m.fingerprint.to_string(), "role": format!("{:?}", m.role),
                       "devices": m.devices, "shown": m.shown})
            })
            .collect();
        println!("{}", json!(list));
    } else {
        for m in &members {
            let role = match m.role {
                MemberRole::Patient => "patient",
                MemberRole::Agent => "agent",
                MemberRole::Supervisor => "supervisor (read-only)",
            };
            println!("{role}: {} (devices {:?})", escape(&m.shown), m.devices);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `join --read-only CONVERSATION`.
pub async fn join(g: &Global, conversation: &str, wait: u64) -> CliResult<ExitCode> {
    let id = parse_conversation(conversation)?;
    let client = connected(g, wait).await?;
    let result = client.join_read_only(id).await;
    client.disconnect().await;
    result?;
    if g.json {
        println!(
            "{}",
            json!({"conversation": hex(&id), "joined": "read-only"})
        );
    } else {
        println!("Joined {} read-only.", hex(&id));
    }
    Ok(ExitCode::SUCCESS)
}

/// `leave CONVERSATION`.
pub async fn leave(g: &Global, conversation: &str, wait: u64) -> CliResult<ExitCode> {
    let id = parse_conversation(conversation)?;
    let client = connected(g, wait).await?;
    let result = client.leave(id).await;
    client.disconnect().await;
    result?;
    if g.json {
        println!("{}", json!({"conversation": hex(&id), "left": true}));
    } else {
        println!(
            "Left {}: you are no longer on it (when the last agent leaves, it waits in the \
             clinic's queue).",
            hex(&id)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `handoff CONVERSATION AGENT|queue [--note TEXT]`.
pub async fn handoff(
    g: &Global,
    conversation: &str,
    to: &str,
    note: Option<&str>,
    share_history: bool,
    wait: u64,
) -> CliResult<ExitCode> {
    let id = parse_conversation(conversation)?;
    let client = connected(g, wait).await?;
    let result = async {
        let target = if to == "queue" {
            None
        } else {
            Some(agent_fingerprint(&client, to).await?)
        };
        client.handoff(id, target, note, share_history).await?;
        // The new agent as the verified history names them (their certificate), not as typed.
        let shown = match target {
            Some(f) => client
                .members(id)
                .await
                .ok()
                .and_then(|m| m.into_iter().find(|m| m.fingerprint == f))
                .map(|m| m.shown),
            None => None,
        };
        CliResult::Ok((target, shown))
    }
    .await;
    client.disconnect().await;
    let (target, shown) = result?;
    if g.json {
        println!(
            "{}",
            json!({"conversation": hex(&id), "handed_to": target.map_or_else(|| "queue".to_owned(), |f| f.to_string())})
        );
    } else if target.is_some() {
        println!(
            "Handed {} to {}; you are no longer on it.",
            hex(&id),
            escape(shown.as_deref().unwrap_or(to))
        );
    } else {
        println!(
            "Handed {} back to the queue; you are no longer on it.",
            hex(&id)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// An agent named by contact name, by its address (`whoami --address`) or by its identity
/// fingerprint (64 hex digits).
async fn agent_fingerprint(client: &Client, to: &str) -> CliResult<Fingerprint> {
    match client.contact(to).await {
        Ok(contact) => return Ok(contact.address.fingerprint),
        Err(hushwire_client::ClientError::UnknownContact(_)) => {}
        Err(e) => return Err(e.into()),
    }
    // An address (`whoami --address`) names the person: its fingerprint.
    if let Ok(address) = to.parse::<hushwire_client::Address>() {
        return Ok(address.fingerprint);
    }
    let digits = to.trim();
    let mut bytes = [0u8; 32];
    if digits.len() == 64
        && digits.is_ascii()
        && bytes
            .iter_mut()
            .zip(digits.as_bytes().chunks_exact(2))
            .all(|(b, pair)| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
                    .map(|v| *b = v)
                    .is_some()
            })
    {
        return Ok(Fingerprint(bytes));
    }
    Err(fail(format!(
        "no contact named {} and not an address or identity fingerprint (64 hex digits); \
         nothing changed",
        escape(&to.chars().take(80).collect::<String>())
    )))
}

/// `recall CONVERSATION MESSAGE`.
pub async fn recall(
    g: &Global,
    conversation: &str,
    message: &str,
    wait: u64,
) -> CliResult<ExitCode> {
    let id = parse_conversation(conversation)?;
    let message: MessageId = message.trim().parse().map_err(|_| {
        fail(format!(
            "not a message id (32 hex digits): {}",
            escape(&message.chars().take(40).collect::<String>())
        ))
    })?;
    let client = connected(g, wait).await?;
    let result = client.recall(id, message).await;
    let synced = match &result {
        Ok(()) => client.sync(Duration::from_secs(wait)).await.is_ok(),
        Err(_) => false,
    };
    client.disconnect().await;
    result?;
    if g.json {
        println!(
            "{}",
            json!({"conversation": hex(&id), "recalled": message.to_string(), "delivered_to_relay": synced})
        );
    } else {
        println!("Recalled message {message}: every member sees it as recalled by you.");
        if !synced {
            eprintln!(
                "note: the recall is queued; it goes out the next time a hushwire command connects"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `conversations`: what this device holds, from its store only.
pub async fn list(g: &Global) -> CliResult<ExitCode> {
    let client = open(g).await?;
    let held = client.conversations().await?;
    if g.json {
        let list: Vec<_> = held
            .iter()
            .map(|s| {
                json!({"conversation": hex(&s.id), "last_activity_ms": s.last_activity_ms,
                       "legal_hold": s.legal_hold})
            })
            .collect();
        println!("{}", json!(list));
    } else if held.is_empty() {
        println!("No conversations on this device.");
    } else {
        for s in &held {
            println!(
                "{}  last activity {}{}",
                hex(&s.id),
                crate::common::format_time(s.last_activity_ms),
                if s.legal_hold { "  LEGAL HOLD" } else { "" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `legal-hold CONVERSATION on|off`.
pub async fn legal_hold(g: &Global, conversation: &str, hold: bool) -> CliResult<ExitCode> {
    let id = parse_conversation(conversation)?;
    let client = open(g).await?;
    client.set_legal_hold(id, hold).await?;
    if g.json {
        println!("{}", json!({"conversation": hex(&id), "legal_hold": hold}));
    } else if hold {
        println!(
            "Legal hold placed on {}: retention keeps it on this device until the hold is lifted.",
            hex(&id)
        );
    } else {
        println!(
            "Legal hold lifted from {}: retention deletes it once its last activity is older \
             than the clinic's retention period.",
            hex(&id)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `retention`: applies the clinic's retention now.
pub async fn retention(g: &Global, wait: u64) -> CliResult<ExitCode> {
    let client = connected(g, wait).await?;
    let result = client.apply_retention(common::now_ms()).await;
    client.disconnect().await;
    let report = result?;
    if g.json {
        let deleted: Vec<String> = report.deleted.iter().map(hex).collect();
        println!(
            "{}",
            json!({"retention_days": report.retention_days, "deleted": deleted,
                   "held": report.held, "kept": report.kept})
        );
    } else {
        println!(
            "Retention: {} days. Deleted {} conversation(s); kept {} active within the period \
             and {} older one(s) under a legal hold.",
            report.retention_days,
            report.deleted.len(),
            report.kept,
            report.held
        );
        for id in &report.deleted {
            println!("  deleted {}", hex(id));
        }
    }
    Ok(ExitCode::SUCCESS)
}
