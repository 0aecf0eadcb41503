//! Store, contacts and messaging commands: init, register, whoami, contact, verify, send, recv.

use std::io::{Read, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use hushwire_client::{Address, Client, ClientError, ConnectionState, Contact, Event};
use serde_json::json;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::cli::Global;
use crate::common::{self, CliResult, Names, connection_reason, describe, fail, open};
use crate::display::escape;

/// Exit code of `send` when the message is only queued.
const EXIT_QUEUED: u8 = 3;

/// `init`: create the store and print the address.
pub async fn init(g: &Global, device_id: u32) -> CliResult<ExitCode> {
    let home = common::home(g)?;
    let path = home.join("client.db");
    if path.exists() {
        return Err(ClientError::AlreadyInitialized(path).into());
    }
    common::create_home(&home)?;
    let mut options = common::new_store_options(g)?;
    options.device_id = device_id;
    let secret = common::new_passphrase(g)?;
    let client = Client::create(&path, &secret, options).await?;
    let address = client.address().await;
    if g.json {
        println!(
            "{}",
            json!({"address": address.to_string(), "store": path.display().to_string()})
        );
    } else {
        println!("Created {}", path.display());
        println!("Your address (give it to your contacts): {address}");
        println!("Next: hushwire register RELAY_URL");
    }
    Ok(ExitCode::SUCCESS)
}

/// `register`.
pub async fn register(
    g: &Global,
    url: &str,
    invite: Option<&str>,
    accept_relay_key: Option<&str>,
) -> CliResult<ExitCode> {
    let client = open(g).await?;
    let before = client.relay_key_pin().await.map(|p| p.fingerprint);
    match accept_relay_key {
        Some(fingerprint) => {
            client
                .register_accepting_relay_key(url, invite, fingerprint)
                .await?
        }
        None => client.register(url, invite).await?,
    }
    let relay_key = client.relay_key_pin().await.map(|p| p.fingerprint);
    if let (Some(old), Some(new)) = (&before, &relay_key)
        && old != new
        && !g.json
    {
        println!("Replaced the pinned relay key {old} with {new}.");
    }
    if g.json {
        println!("{}", json!({"registered": url, "relay_key": relay_key}));
    } else {
        println!("Registered with {url} and published prekeys.");
        if let Some(key) = relay_key {
            println!(
                "Pinned the relay's key {key}: a relay presenting another key will be refused."
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `whoami`.
pub async fn whoami(g: &Global, address_only: bool) -> CliResult<ExitCode> {
    let client = open(g).await?;
    let address = client.address().await;
    let relay = client.relay_url().await;
    if address_only && !g.json {
        println!("{address}");
    } else if g.json {
        println!(
            "{}",
            json!({
                "address": address.to_string(),
                "fingerprint": address.fingerprint.to_string(),
                "device_id": address.device_id,
                "relay": relay,
            })
        );
    } else {
        println!("address:     {address}");
        println!("fingerprint: {}", address.fingerprint);
        println!("device id:   {}", address.device_id);
        println!(
            "relay:       {}",
            relay.as_deref().unwrap_or("(not registered)")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `contact add`.
pub async fn contact_add(
    g: &Global,
    name: &str,
    address: &str,
    replace: bool,
) -> CliResult<ExitCode> {
    let address: Address = address.parse()?;
    let client = open(g).await?;
    client.add_contact(name, address, replace).await?;
    let contact = client.contact(name.trim()).await?;
    if g.json {
        println!("{}", contact_json(&contact));
    } else if contact.identity_changed {
        let name = escape(&contact.name);
        println!(
            "{name} now has the address {address}; sending is blocked until you run `hushwire verify {name}`"
        );
    } else {
        let name = escape(&contact.name);
        println!("Added {name} ({address}). Compare safety numbers: hushwire verify {name}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `contact rename`.
pub async fn contact_rename(g: &Global, old: &str, new: &str) -> CliResult<ExitCode> {
    let client = open(g).await?;
    client.rename_contact(old, new).await?;
    let contact = client.contact(new.trim()).await?;
    if g.json {
        println!("{}", contact_json(&contact));
    } else {
        println!("Renamed {} to {}.", escape(old), escape(&contact.name));
    }
    Ok(ExitCode::SUCCESS)
}

/// `contact remove`.
pub async fn contact_remove(g: &Global, name: &str, discard_queued: bool) -> CliResult<ExitCode> {
    let client = open(g).await?;
    let contact = client.contact(name).await?;
    client.remove_contact(contact.id, discard_queued).await?;
    if g.json {
        println!(
            "{}",
            json!({"removed": contact.name, "address": contact.address.to_string()})
        );
    } else {
        println!(
            "Removed {} ({}). Its transcript is kept; `hushwire contact add NAME {}` restores it.",
            escape(&contact.name),
            contact.address,
            contact.address
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn contact_json(c: &Contact) -> serde_json::Value {
    json!({
        "name": c.name,
        "address": c.address.to_string(),
        "verified": c.verified,
        "identity_changed": c.identity_changed,
        "identity_known": c.identity_known,
        "agent": common::agent_json(&c.agent),
    })
}

/// `contact list`.
pub async fn contact_list(g: &Global) -> CliResult<ExitCode> {
    let client = open(g).await?;
    let contacts = client.contacts().await?;
    if g.json {
        let list: Vec<_> = contacts.iter().map(contact_json).collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(ExitCode::SUCCESS);
    }
    if contacts.is_empty() {
        println!("No contacts yet: hushwire contact add NAME ADDRESS");
        return Ok(ExitCode::SUCCESS);
    }
    let names: Vec<String> = contacts.iter().map(|c| escape(&c.name)).collect();
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:width$}  {:<8}  {:<16}  ADDRESS",
        "NAME", "VERIFIED", "IDENTITY CHANGED"
    );
    for (c, name) in contacts.iter().zip(&names) {
        println!(
            "{:width$}  {:<8}  {:<16}  {}",
            name,
            if c.verified { "yes" } else { "no" },
            if c.identity_changed {
                "YES (verify!)"
            } else {
                "no"
            },
            c.address
        );
        if let Some(label) = common::agent_label(&c.agent) {
            // `Name — verified agent of Clinic`, or why the certificate failed.
            println!("{:width$}  {label}", "");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The 60 digits as three lines of four groups of five.
fn safety_lines(digits: &str) -> String {
    let groups: Vec<&str> = digits
        .as_bytes()
        .chunks(5)
        .filter_map(|c| core::str::from_utf8(c).ok())
        .collect();
    groups
        .chunks(4)
        .map(|row| format!("    {}", row.join(" ")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `verify`.
pub async fn verify(
    g: &Global,
    name: &str,
    confirm: Option<&str>,
    wait: u64,
) -> CliResult<ExitCode> {
    let client = open(g).await?;
    let contact = client.contact(name).await?;
    let mut events = client.events();
    let connected = !contact.identity_known;
    if connected {
        // Their identity key comes with their prekey bundle, fetched over the connection.
        client.connect().await?;
        common::wait_connected(&client, Duration::from_secs(wait)).await?;
    }
    let result = verify_connected(g, &client, &contact, confirm).await;
    if connected {
        client.disconnect().await;
        report_side_events(&client, &drain(&mut events)).await;
    }
    result
}

async fn verify_connected(
    g: &Global,
    client: &Client,
    contact: &Contact,
    confirm: Option<&str>,
) -> CliResult<ExitCode> {
    let number = client.safety_number(contact.id).await?;
    let digits = number.digits().to_owned();
    let mut verified = contact.verified && !contact.identity_changed;
    if let Some(confirmed) = confirm {
        client.mark_verified(contact.id, confirmed).await?;
        verified = true;
    }
    if g.json {
        println!(
            "{}",
            json!({
                "contact": contact.name,
                "address": contact.address.to_string(),
                "safety_number": number.to_string(),
                "digits": digits,
                "verified": verified,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    let name = escape(&contact.name);
    println!("Safety number with {name}:\n");
    println!("{}\n", safety_lines(&digits));
    if confirm.is_some() {
        println!("{name} is now verified.");
        return Ok(ExitCode::SUCCESS);
    }
    if verified {
        println!("{name} is verified.");
        return Ok(ExitCode::SUCCESS);
    }
    if !common::stdin_is_tty() {
        println!(
            "Compare it with {name} (in person or by phone), then run: hushwire verify {name} --confirm DIGITS"
        );
        return Ok(ExitCode::SUCCESS);
    }
    print!("Compare it with {name} (in person or by phone). Do the numbers match? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        client.mark_verified(contact.id, &digits).await?;
        println!("{name} is now verified.");
    } else {
        println!(
            "Not marked verified. If the numbers differ, someone may be in the middle: do not share anything sensitive."
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Every event received so far.
fn drain(events: &mut broadcast::Receiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        match events.try_recv() {
            Ok(event) => out.push(event),
            Err(TryRecvError::Lagged(n)) => lagged(n),
            Err(_) => return out,
        }
    }
}

/// Tells (on stderr) about messages that arrived while another command held the connection:
/// they are stored, and `recv` will not show them again. Delivery receipts are left out.
async fn report_side_events(client: &Client, events: &[Event]) {
    let mut names = Names::new(client);
    for event in events {
        if matches!(event, Event::MessageDelivered { .. }) {
            continue;
        }
        if let Some((line, _)) = describe(&mut names, event, false).await {
            eprintln!("{}", line.as_str());
        }
    }
}

/// The longest message `send` reads from standard input: the larger of the two-party and the
/// conversation limits (65,469 and 65,481 bytes). The client then refuses a two-party message
/// over its own limit with `MessageTooLong`, naming that limit.
const STDIN_LIMIT: usize =
    if hushwire_client::MAX_CONTENT_LEN > hushwire_client::payload::MAX_CONVERSATION_CONTENT_LEN {
        hushwire_client::MAX_CONTENT_LEN
    } else {
        hushwire_client::payload::MAX_CONVERSATION_CONTENT_LEN
    };

/// A message from standard input: reads at most [`STDIN_LIMIT`] bytes plus a line ending and
/// one more, so a huge input is refused without being held in memory.
fn read_message(input: impl Read) -> CliResult<zeroize::Zeroizing<String>> {
    let limit = STDIN_LIMIT;
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    // "\r\n" may follow a message of exactly the limit; one byte more means it is too long.
    let cap = limit + 3;
    input.take(cap as u64).read_to_end(&mut bytes)?;
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    if bytes.len() >= cap || body.len() > limit {
        return Err(fail(format!(
            "the message is longer than the limit of {limit} bytes; nothing was sent"
        )));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| fail("the message is not UTF-8 text; nothing was sent"))?;
    Ok(zeroize::Zeroizing::new(text.to_owned()))
}

/// `send`.
pub async fn send(
    g: &Global,
    name: &str,
    message: Option<String>,
    wait: u64,
) -> CliResult<ExitCode> {
    let text = match message {
        Some(m) => zeroize::Zeroizing::new(m),
        None => {
            if common::stdin_is_tty() {
                eprintln!("Type the message, then Ctrl-D:");
            }
            let s = read_message(std::io::stdin().lock())?;
            let trimmed = s.strip_suffix('\n').unwrap_or(&s);
            let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
            zeroize::Zeroizing::new(trimmed.to_owned())
        }
    };
    if text.is_empty() {
        return Err(fail("the message is empty; nothing was sent"));
    }
    let client = open(g).await?;
    let contact = match client.contact(name).await {
        Ok(contact) => contact,
        // A clinic conversation's id: everyone on it gets the message.
        Err(ClientError::UnknownContact(_))
            if crate::conversations::parse_conversation(name).is_ok() =>
        {
            let id = crate::conversations::parse_conversation(name)?;
            return send_to_conversation(g, client, id, &text, wait).await;
        }
        Err(e) => return Err(e.into()),
    };
    if client.relay_url().await.is_none() {
        return Err(ClientError::NotRegistered.into());
    }
    let mut events = client.events();
    let id = client.send_text(contact.id, &text).await?;
    client.connect().await?;
    // Wait for the sync, unless the client reports this contact's messages held (no prekeys
    // at the relay, an unknown device, a forged bundle): that does not clear up by waiting.
    let mut seen = Vec::new();
    let mut held = None;
    let synced = {
        let sync = client.sync(Duration::from_secs(wait));
        tokio::pin!(sync);
        loop {
            tokio::select! {
                r = &mut sync => break r,
                event = events.recv() => match event {
                    Ok(Event::SendHeld { contact: c, reason }) if c == contact.id => {
                        held = Some(reason);
                        break Err(ClientError::Timeout);
                    }
                    // Ours is at the relay for one device; the sync goes on until its copies
                    // for the contact's other devices and this person's are there too
                    // (held contacts, another's included, do not keep the sync waiting).
                    Ok(event) => seen.push(event),
                    Err(RecvError::Lagged(n)) => lagged(n),
                    Err(RecvError::Closed) => break sync.await,
                },
            }
        }
    };
    let reason = connection_reason(&client);
    client.disconnect().await;
    seen.extend(drain(&mut events));
    let sent = synced.is_ok()
        || seen
            .iter()
            .any(|e| matches!(e, Event::MessageSent { id: sent, .. } if *sent == id));
    report_side_events(&client, &seen).await;
    if sent {
        if g.json {
            println!(
                "{}",
                json!({"sent": true, "contact": contact.name, "id": id.to_string()})
            );
        } else {
            println!("Sent to {} (message {id}).", escape(&contact.name));
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Not a passing outage: until the user settles the relay's key, nothing goes out, so this
    // is a failure (exit 1), not "queued" (exit 3), for scripts too.
    if let Err(e @ ClientError::RelayKeyChanged { .. }) = &synced {
        if g.json {
            println!(
                "{}",
                json!({"sent": false, "queued": true, "contact": contact.name, "id": id.to_string(), "reason": e.to_string()})
            );
        }
        eprintln!(
            "error: {e}\nThe message to {} stays stored on this device and goes out only once \
             the relay presents the pinned key again or a new key is accepted.",
            escape(&contact.name)
        );
        return Ok(ExitCode::FAILURE);
    }
    let why = match synced {
        _ if held.is_some() => format!(
            "the relay cannot take messages to {} now: {}",
            escape(&contact.name),
            escape(&held.unwrap_or_default())
        ),
        Err(ClientError::Timeout) if reason.is_empty() => format!(
            "the relay did not take it within {wait} s (is {}'s device registered?)",
            escape(&contact.name)
        ),
        Err(ClientError::Timeout) => format!("the relay was not reachable within {wait} s{reason}"),
        Err(e) => e.to_string(),
        Ok(()) => String::new(),
    };
    if g.json {
        println!(
            "{}",
            json!({"sent": false, "queued": true, "contact": contact.name, "id": id.to_string(), "reason": why})
        );
    }
    eprintln!(
        "queued: {why}. The message to {} is stored and goes out on the next connection \
         (any hushwire send, recv or chat).",
        escape(&contact.name)
    );
    Ok(ExitCode::from(EXIT_QUEUED))
}

/// Signs a checkpoint over every transcript's unsigned tail (the records this run added), so
/// that `transcript verify` and exports show them as signed (`docs/transcripts.md` §5.7). A
/// failure is reported and does not fail the command: the messages are stored either way.
pub(crate) async fn sign_transcripts(client: &hushwire_client::Client) {
    if let Err(e) = client.sign_unsigned_tails().await {
        eprintln!("warning: the transcripts' new records could not be signed: {e}");
    }
}

/// `send CONVERSATION TEXT`: to every other member of a clinic conversation.
async fn send_to_conversation(
    g: &Global,
    client: hushwire_client::Client,
    conversation: hushwire_proto::conversation::ConversationId,
    text: &str,
    wait: u64,
) -> CliResult<ExitCode> {
    client.connect().await?;
    common::wait_connected(&client, Duration::from_secs(wait)).await?;
    let sent = client.send_text_to_conversation(conversation, text).await;
    let synced = match &sent {
        Ok(_) => client.sync(Duration::from_secs(wait)).await.is_ok(),
        Err(_) => false,
    };
    client.disconnect().await;
    let id = sent?;
    let hex = common::conversation_hex(&conversation);
    if g.json {
        println!(
            "{}",
            json!({"sent": synced, "conversation": hex, "id": id.to_string()})
        );
    } else if synced {
        println!("Sent to conversation {hex} (message {id}).");
    } else {
        println!(
            "Queued for conversation {hex} (message {id}); it goes out the next time a \
             hushwire command connects."
        );
    }
    Ok(if synced {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_QUEUED)
    })
}

/// `recv`.
pub async fn recv(g: &Global, wait: u64) -> CliResult<ExitCode> {
    let client = open(g).await?;
    let mut names = Names::new(&client);
    // Subscribe before connecting so nothing received is missed.
    let mut events = client.events();
    client.connect().await?;
    let sync = client.sync(Duration::from_secs(wait));
    tokio::pin!(sync);
    let mut shown = 0u64;
    // Contacts whose messages the client reported held (they keep the outbox from draining).
    let mut held: Vec<String> = Vec::new();
    let result = loop {
        tokio::select! {
            biased;
            event = events.recv() => match event {
                Ok(event) => {
                    if let Event::SendHeld { contact, .. } = &event {
                        let name = escape(&names.get(*contact).await);
                        if !held.contains(&name) {
                            held.push(name);
                        }
                    }
                    // Messages and conversation notices are shown from the store below,
                    // once each.
                    if !is_kept_until_shown(&event) {
                        show(g, &mut names, &event).await;
                    }
                }
                Err(RecvError::Lagged(n)) => lagged(n),
                Err(RecvError::Closed) => break Ok(()),
            },
            r = &mut sync => break r,
        }
    };
    if let Err(e @ (ClientError::Wiped { .. } | ClientError::WipeRefused(_))) = result {
        // The store is gone (or must not be used): nothing more to read or sign.
        return Err(e.into());
    }
    loop {
        match events.try_recv() {
            // Messages and conversation notices are shown from the store below: once each,
            // also those another command received.
            Ok(event) if is_kept_until_shown(&event) => {}
            Ok(event) => {
                show(g, &mut names, &event).await;
            }
            Err(TryRecvError::Lagged(n)) => lagged(n),
            Err(_) => break,
        }
    }
    // Every message stored and not yet shown — also one stored just before a crash of an
    // earlier run — is in the unread list. Each is marked read *before* it is printed, so a
    // crash (kill -9) can never show it twice: shown at most once. The price: a crash between
    // the mark and the print leaves that message unshown by recv; it is in the transcript
    // (`hushwire transcript open`), like every message (docs/client.md §6).
    for message in client.unread().await? {
        let id = message.id;
        client.mark_read(&[id]).await?;
        shown += show(g, &mut names, &Event::MessageReceived(message)).await;
        common::fault_point("recv-after-show");
    }
    // Conversation messages likewise, whichever command received them (`send`, `members`…),
    // in time order with the conversation notices (who joined or left, recalls): a hand-off
    // after a message is shown after it.
    enum Item {
        Message(hushwire_client::ConversationMessageView),
        Notice(Event),
    }
    let mut items: Vec<(u64, Item)> = client
        .take_conversation_notices(None)
        .await?
        .into_iter()
        .map(|n| (n.at_ms, Item::Notice(n.event)))
        .collect();
    let messages = client.unread_conversation_messages().await?;
    let shown_now: std::collections::HashSet<_> = messages.iter().map(|m| m.id).collect();
    items.extend(
        messages
            .into_iter()
            .map(|m| (m.sent_at_ms, Item::Message(m))),
    );
    // Stable: notices stay in their order, messages in the order they arrived.
    items.sort_by_key(|(at, _)| *at);
    for (_, item) in items {
        match item {
            Item::Message(message) => {
                client
                    .mark_conversation_shown(message.conversation, &[message.id])
                    .await?;
                shown += show(g, &mut names, &Event::ConversationMessageReceived(message)).await;
            }
            // A message shown now is shown as recalled already.
            Item::Notice(Event::ConversationMessageRecalled { id, .. })
                if shown_now.contains(&id) => {}
            Item::Notice(notice) => {
                show(g, &mut names, &notice).await;
            }
        }
    }
    sign_transcripts(&client).await;
    let reason = connection_reason(&client);
    let connected = *client.connection_state().borrow() == ConnectionState::Connected;
    client.disconnect().await;
    match result {
        Ok(()) => {
            if !g.json && shown == 0 {
                eprintln!("No new messages.");
            }
            if !held.is_empty() {
                eprintln!(
                    "note: messages to {} are held in the outbox (see the warning above) and stay \
                     queued until the relay can take them",
                    held.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ClientError::Timeout) if connected && !held.is_empty() => {
            eprintln!(
                "note: messages to {} are held in the outbox (see the warning above) and stay \
                 queued; incoming messages were fetched for {wait} s (run recv again if more are \
                 expected)",
                held.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ClientError::Timeout) if connected => {
            let waiting = client.outbox_len().await.unwrap_or(0);
            Err(fail(format!(
                "not finished within {wait} s: connected, but {waiting} outgoing message(s) or \
                 receipt(s) are still waiting to be sent (see any warnings above); run recv again"
            )))
        }
        Err(ClientError::Timeout) => Err(fail(format!(
            "the relay did not answer within {wait} s{reason}; messages stay at the relay until the next recv"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Events the store keeps until shown (`recv` shows them from there, once each, whichever
/// command received them): messages and conversation notices.
fn is_kept_until_shown(event: &Event) -> bool {
    matches!(
        event,
        Event::MessageReceived(_)
            | Event::ConversationMessageReceived(_)
            | Event::ConversationMembershipChanged { .. }
            | Event::ConversationMessageRecalled { .. }
            | Event::ConversationUnanswered { .. }
    )
}

fn lagged(n: u64) {
    eprintln!(
        "note: {n} event(s) were not shown (too many at once); see `hushwire transcript open`"
    );
}

/// Prints one event; returns 1 if it was a message.
async fn show(g: &Global, names: &mut Names, event: &Event) -> u64 {
    let Some((line, value)) = describe(names, event, false).await else {
        return 0;
    };
    if g.json {
        println!("{value}");
    } else {
        println!("{}", line.as_str());
    }
    u64::from(matches!(
        event,
        Event::MessageReceived(_) | Event::ConversationMessageReceived(_)
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn send_from_stdin_reads_at_most_the_limit_and_states_it() {
        let limit = super::STDIN_LIMIT;
        assert!(limit >= hushwire_client::MAX_CONTENT_LEN);
        assert!(limit >= hushwire_client::payload::MAX_CONVERSATION_CONTENT_LEN);
        // An endless input: reading it all would never finish.
        let err = match super::read_message(std::io::repeat(b'a')) {
            Ok(_) => String::new(),
            Err(e) => e.message,
        };
        assert!(err.contains(&limit.to_string()), "{err}");
        let exact = format!("{}\r\n", "a".repeat(limit));
        assert!(super::read_message(exact.as_bytes()).is_ok_and(|t| t.len() == limit + 2));
        let over = "a".repeat(limit + 1);
        assert!(super::read_message(over.as_bytes()).is_err());
        let trailing = format!("{}\r\nb", "a".repeat(limit));
        assert!(super::read_message(trailing.as_bytes()).is_err());
    }
}
