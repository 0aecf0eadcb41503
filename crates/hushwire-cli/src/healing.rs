//! `backup`, `restore` and `status`: the supported way to copy a store, and where each sent
//! message is (`docs/client.md` §5.13, §5.14).

use std::path::Path;
use std::process::ExitCode;

use hushwire_client::{Client, MessageState};
use serde_json::json;

use crate::cli::Global;
use crate::common::{self, CliResult};
use crate::display::escape;

/// Writes a consistent, still encrypted copy of the store to `out`. Opening the store takes its
/// lock, so this runs while no other `hushwire` command has the store open.
pub async fn backup(g: &Global, out: &Path) -> CliResult<ExitCode> {
    let client = common::open(g).await?;
    client.backup(out).await?;
    if g.json {
        println!(
            "{}",
            json!({"event": "backup", "file": out.display().to_string()})
        );
    } else {
        println!(
            "Backed up to {}: encrypted under this store's passphrase; keep it somewhere safe.",
            out.display()
        );
        let home = g
            .home
            .as_ref()
            .map(|h| format!("--home '{}' ", h.display()))
            .unwrap_or_default();
        println!(
            "Restore it with `hushwire {home}restore '{}'` (while no other hushwire command uses this home).",
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Puts a backup in place of the store, which no other command may have open. The passphrase
/// asked for is the backup's; the replaced store is moved aside, never deleted.
pub async fn restore(g: &Global, file: &Path, replace_other_store: bool) -> CliResult<ExitCode> {
    let store = common::store_path(g)?;
    if let Some(dir) = store.parent() {
        common::create_home(dir)?;
    }
    let secret = common::passphrase(g)?;
    let kept = Client::restore(
        file,
        &store,
        &secret,
        &common::options(g)?,
        replace_other_store,
    )
    .await?;
    let kept = kept.map(|k| k.display().to_string());
    if g.json {
        println!(
            "{}",
            json!({"event": "restored", "file": file.display().to_string(), "store": store.display().to_string(), "replaced_store_kept_at": kept})
        );
    } else {
        println!(
            "Restored {} from {}. Its passphrase is the backup's.",
            store.display(),
            file.display()
        );
        if let Some(kept) = &kept {
            println!("The store it replaced is kept at {kept} (delete it once you are sure).");
        }
        println!(
            "If this device sent messages after the backup, the next connection notices and starts new sessions with every contact, so no key is used twice."
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The people-facing word for a state.
pub fn state_word(state: MessageState) -> &'static str {
    match state {
        MessageState::Queued => "queued",
        MessageState::Sent => "sent (the relay holds it)",
        MessageState::Delivered => "delivered",
        MessageState::Retrying => "retrying (sent again on a new session)",
        MessageState::NotConfirmed => "NOT CONFIRMED (no receipt yet)",
        MessageState::Failed => "FAILED (given up after several resends)",
        MessageState::Cancelled => "cancelled (never sent)",
    }
}

/// Every message sent to a contact, with its state.
pub async fn status(g: &Global, name: &str) -> CliResult<ExitCode> {
    let client = common::open(g).await?;
    let contact = client.contact(name).await?;
    // States change only as receipts arrive; a check marks overdue ones first.
    client.check_receipts().await?;
    let sent = client.sent_messages(contact.id).await?;
    let mut unconfirmed = 0;
    for (id, state) in &sent {
        if matches!(state, MessageState::NotConfirmed | MessageState::Failed) {
            unconfirmed += 1;
        }
        if g.json {
            println!(
                "{}",
                json!({"id": id.to_string(), "contact": contact.name, "state": format!("{state:?}")})
            );
        } else {
            println!("{id}  {}", state_word(*state));
        }
    }
    if !g.json {
        if sent.is_empty() {
            println!("No messages sent to {} yet.", escape(&contact.name));
        } else if unconfirmed > 0 {
            println!(
                "{unconfirmed} message(s) to {} are not confirmed: run `hushwire recv` to collect receipts, and ask them to run it too.",
                escape(&contact.name)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `status` without a contact: the relay and the relay key this device pinned.
pub async fn relay_status(g: &Global) -> CliResult<ExitCode> {
    let client = common::open(g).await?;
    let relay = client.relay_url().await;
    let pin = client.relay_key_pin().await;
    if g.json {
        println!(
            "{}",
            json!({
                "relay": relay,
                "relay_key": pin.as_ref().map(|p| p.fingerprint.clone()),
                "relay_key_pinned_at_ms": pin.as_ref().map(|p| p.pinned_at_ms),
                "relay_key_pinned_on_first_login": pin.as_ref().map(|p| p.on_first_login),
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "relay:       {}",
        relay.as_deref().unwrap_or("(not registered)")
    );
    match pin {
        Some(pin) => println!(
            "relay key:   {} (pinned {} {})",
            pin.fingerprint,
            if pin.on_first_login {
                "at the first login of this older store,"
            } else {
                "at registration,"
            },
            common::format_time(pin.pinned_at_ms)
        ),
        None => println!(
            "relay key:   (none pinned yet: it is pinned at registration or the next login)"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The messages still waiting in the outbox.
pub async fn outbox_list(g: &Global) -> CliResult<ExitCode> {
    let client = common::open(g).await?;
    let queued = client.queued_messages().await?;
    let mut names = common::Names::new(&client);
    for (contact, id) in &queued {
        let name = names.get(*contact).await;
        let state = client
            .message_state(*id)
            .await?
            .unwrap_or(MessageState::Queued);
        if g.json {
            println!(
                "{}",
                json!({"id": id.to_string(), "contact": name, "state": format!("{state:?}")})
            );
        } else {
            println!("{id}  to {}  {}", escape(&name), state_word(state));
        }
    }
    if !g.json && queued.is_empty() {
        println!("The outbox is empty: the relay holds everything you sent.");
    }
    Ok(ExitCode::SUCCESS)
}

/// Takes one queued message out of the outbox.
pub async fn outbox_cancel(g: &Global, id: &str) -> CliResult<ExitCode> {
    let id: hushwire_client::MessageId = id.parse().map_err(hushwire_client::ClientError::from)?;
    let client = common::open(g).await?;
    let contact = client.cancel(id).await?;
    let name = common::Names::new(&client).get(contact).await;
    if g.json {
        println!(
            "{}",
            json!({"event": "cancelled", "id": id.to_string(), "contact": name})
        );
    } else {
        println!(
            "Cancelled message {id} to {}: it will not be sent (it stays in your transcript).",
            escape(&name)
        );
    }
    Ok(ExitCode::SUCCESS)
}
