//! `chat`: an interactive conversation with one contact, with an automatic lock (logoff) after
//! a stretch without keyboard input.
//!
//! Standard input is read by one line reader for the whole session — chat lines and, while
//! locked, passphrase attempts. (A second reader such as a password prompt on the terminal would
//! race with the line reader's read already waiting on the same terminal.) While locked, echo is
//! switched off on the terminal, so the passphrase is not shown.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use hushwire_client::{Client, ClientError, ConnectionState, Event, Secret};
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::cli::Global;
use crate::common::{self, CliResult, Names, describe, open};
use crate::display::{escape, message_block};

/// Clears the screen and its scrollback, and homes the cursor.
const CLEAR: &str = "\x1b[2J\x1b[3J\x1b[H";

/// Switches terminal echo off while locked and back on when dropped.
struct Echo {
    tty: bool,
}

impl Echo {
    fn set(&self, on: bool) {
        if self.tty {
            set_echo(on);
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.set(true);
    }
}

#[cfg(unix)]
fn set_echo(on: bool) {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    if let Ok(mut t) = tcgetattr(&stdin) {
        t.local_modes.set(LocalModes::ECHO, on);
        // Still echo the newline, so the next output starts on a fresh line.
        t.local_modes.set(LocalModes::ECHONL, !on);
        let _ = tcsetattr(&stdin, OptionalActions::Now, &t);
    }
}

#[cfg(not(unix))]
fn set_echo(_on: bool) {}

fn flush() {
    let _ = std::io::stdout().flush();
}

/// `chat NAME`.
pub async fn chat(g: &Global, name: &str, lock_after: u64) -> CliResult<ExitCode> {
    let client = open(g).await?;
    let contact = client.contact(name).await?;
    let mut events = client.events();
    client.connect().await?;
    let tty = common::stdin_is_tty();
    let echo = Echo { tty };
    let mut names = Names::new(&client);
    let lock_after = Duration::from_secs(lock_after);
    println!(
        "Chat with {} ({}). Type a message and press Enter to send; /quit to leave.",
        escape(&contact.name),
        if contact.verified && !contact.identity_changed {
            "verified"
        } else {
            "NOT verified: run `hushwire verify` to compare safety numbers"
        }
    );
    println!(
        "The screen locks after {} s without typing.",
        lock_after.as_secs()
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut deadline = Instant::now() + lock_after;
    let mut locked = false;
    let mut held: Vec<Zeroizing<String>> = Vec::new();
    // Messages printed are marked read; those held behind the lock are marked at unlock.
    let mut held_ids = Vec::new();
    for message in client.unread().await? {
        let id = message.id;
        if let Some((line, _)) = describe(&mut names, &Event::MessageReceived(message), true).await
        {
            println!("{}", line.as_str());
        }
        client.mark_read(&[id]).await?;
    }
    let mut last_state_connected: Option<bool> = None;
    loop {
        let idle = tokio::time::sleep_until(deadline);
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let line = Zeroizing::new(line);
                if locked {
                    if unlock(&client, &line).await {
                        locked = false;
                        echo.set(true);
                        println!("Unlocked.");
                        for h in held.drain(..) {
                            println!("{}", h.as_str());
                        }
                        let shown = std::mem::take(&mut held_ids);
                        client.mark_read(&shown).await?;
                        deadline = Instant::now() + lock_after;
                    } else {
                        print!("Enter passphrase to unlock: ");
                    }
                    flush();
                    continue;
                }
                deadline = Instant::now() + lock_after;
                let text = line.trim_end_matches('\r');
                if text.trim() == "/quit" {
                    break;
                }
                if text.trim().is_empty() {
                    continue;
                }
                match client.send_text(contact.id, text).await {
                    Ok(_) => {
                        if tty {
                            // Replace the echoed input with the formatted line.
                            print!("\x1b[1A\x1b[2K");
                        }
                        let header = format!("[{}] you:", common::format_clock(now_ms()));
                        println!("{}", message_block(&header, "", text));
                    }
                    Err(e) => println!("error: {e}"),
                }
                flush();
            }
            event = events.recv() => {
                let event = match event {
                    Ok(e) => e,
                    Err(RecvError::Lagged(n)) => {
                        let note = Zeroizing::new(format!(
                            "note: {n} event(s) were not shown; see `hushwire transcript open {}`",
                            escape(&contact.name)
                        ));
                        show(locked, &mut held, note);
                        continue;
                    }
                    Err(RecvError::Closed) => break,
                };
                if let Event::Connection(state) = &event {
                    if let Some(line) = connection_line(state, &mut last_state_connected) {
                        show(locked, &mut held, Zeroizing::new(line));
                    }
                    continue;
                }
                if let Some((line, _)) = describe(&mut names, &event, true).await {
                    show(locked, &mut held, line);
                }
                if let Event::MessageReceived(m) = &event {
                    if locked {
                        held_ids.push(m.id);
                    } else {
                        client.mark_read(&[m.id]).await?;
                    }
                }
            }
            () = idle, if !locked => {
                locked = true;
                echo.set(false);
                print!(
                    "{CLEAR}Locked after {} s idle (automatic logoff). Enter passphrase to unlock: ",
                    lock_after.as_secs()
                );
                flush();
            }
            _ = &mut ctrl_c => break,
        }
    }
    drop(echo);
    if locked {
        // Leaving while locked shows nothing that arrived meanwhile.
        held.clear();
        println!();
    }
    client.disconnect().await;
    Ok(ExitCode::SUCCESS)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Prints a line, or keeps it for after the unlock.
fn show(locked: bool, held: &mut Vec<Zeroizing<String>>, line: Zeroizing<String>) {
    if locked {
        held.push(line);
    } else {
        println!("{}", line.as_str());
        flush();
    }
}

/// A line when the connection comes up or goes down (not for every retry).
fn connection_line(state: &ConnectionState, last: &mut Option<bool>) -> Option<String> {
    let (up, line) = match state {
        ConnectionState::Connected => (true, "(connected to the relay)".to_owned()),
        ConnectionState::Disconnected { reason, .. } => (
            false,
            format!(
                "(not connected: {}; retrying; messages you type are queued)",
                escape(reason)
            ),
        ),
        _ => return None,
    };
    if *last == Some(up) || (last.is_none() && up) {
        *last = Some(up);
        return None;
    }
    *last = Some(up);
    Some(line)
}

/// Checks a passphrase against the live client's store (it keeps running; the unlock is
/// recorded in the device's audit chain).
async fn unlock(client: &Client, passphrase: &str) -> bool {
    let secret = Secret::passphrase(passphrase);
    match client.unlock(&secret).await {
        Ok(()) => true,
        Err(ClientError::WrongSecret) => {
            println!("wrong passphrase");
            false
        }
        Err(e) => {
            println!("error: {e}");
            false
        }
    }
}
