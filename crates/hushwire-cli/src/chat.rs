//! `chat`: an interactive conversation with one contact, with an automatic lock (logoff) after
//! a stretch without keyboard input.
//!
//! Input goes through a real line editor (rustyline) on its own thread, in raw mode: lines are
//! not cut at the terminal's 4,095-byte line limit, editing and history keys work (history is
//! kept in memory only, and holds only lines that were sent), and every keystroke — not only
//! Enter — counts as activity for the idle lock. Incoming messages are printed above the line
//! being typed through the editor's external printer, so they never mix with the draft.
//!
//! When the lock falls, the screen and scrollback are cleared and the half-typed draft is hidden
//! (the line is drawn as blanks from then on) and discarded by the first key pressed, which
//! starts the passphrase; a passphrase is drawn as blanks too and never enters the history.
//! (The editor gives no way to empty its buffer from another thread, so the draft stays in its
//! memory until that first key; it is never shown or sent.)
//!
//! Without a terminal (input from a pipe) the editor reads plain lines, and each line counts as
//! activity.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hushwire_client::{Client, ClientError, ConnectionState, Contact, Event, MessageId, Secret};
use hushwire_proto::conversation::ConversationId;
use rustyline::error::ReadlineError;
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::history::DefaultHistory;
use rustyline::{
    Cmd, ColorMode, ConditionalEventHandler, Config, Editor, EventContext, EventHandler, KeyCode,
    Modifiers, Movement, RepeatCount,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::cli::Global;
use crate::common::{self, CliResult, Names, describe, now_ms, open};
use crate::display::{escape, message_block};

/// Clears the screen and its scrollback, and homes the cursor.
const CLEAR: &str = "\x1b[2J\x1b[3J\x1b[H";

/// The longest `--lock-after`: an unattended screen must lock within the hour.
pub const MAX_LOCK_AFTER_SECS: u64 = 3600;

/// Exit code after Ctrl-C (128 + SIGINT), as shells expect.
const EXIT_INTERRUPTED: u8 = 130;

/// How long leaving waits for the relay to take queued messages.
const LEAVE_WAIT: Duration = Duration::from_secs(5);

/// The prompt while typing a message or a passphrase.
const PROMPT: &str = "> ";

/// The commands a line can start with; anything else starting with `/` is refused locally.
const HELP: &str = "\
Commands (never sent):
  /help   this list
  /lock   lock the screen now (the passphrase unlocks it)
  /quit   leave the chat (also Ctrl-D); Ctrl-C leaves with exit status 130
  /recall in a clinic conversation: recall the last message you sent here (within 10 minutes;
          every member then sees it as recalled by you)
Any other line is sent. A line starting with / is a command; to send one, start it with //
(`//shrug` sends `/shrug`). Up and Down recall the lines you sent in this chat; Ctrl-R searches
them; the usual editing keys work (Ctrl-A, Ctrl-E, Ctrl-W, Ctrl-U, arrows).";

/// Whom a chat is with.
enum Target {
    /// A contact: the two-party chat.
    Contact(Contact),
    /// A clinic conversation (`docs/conversations.md`): everyone on it reads what is sent.
    Conversation(ConversationId),
}

/// `chat TARGET`: a contact's name first; else a conversation id (32 hex digits); else the
/// pinned clinic (its name, or the word `clinic`), for which a patient opens a new
/// conversation.
async fn resolve(client: &Client, target: &str) -> CliResult<Target> {
    match client.contact(target).await {
        Ok(contact) => return Ok(Target::Contact(contact)),
        Err(ClientError::UnknownContact(_)) => {}
        Err(e) => return Err(e.into()),
    }
    if let Ok(id) = crate::conversations::parse_conversation(target) {
        return Ok(Target::Conversation(id));
    }
    if let Some(clinic) = client.clinic().await
        && (target.eq_ignore_ascii_case("clinic") || target.eq_ignore_ascii_case(&clinic.name))
    {
        common::wait_connected(client, Duration::from_secs(30)).await?;
        let id = client.open_conversation().await?;
        println!(
            "Opened conversation {} with {}: it waits in the clinic's queue until an agent \
             answers. Come back to it with `hushwire chat {}`.",
            common::conversation_hex(&id),
            escape(&clinic.name),
            common::conversation_hex(&id)
        );
        return Ok(Target::Conversation(id));
    }
    Err(common::fail(format!(
        "no contact named {}, and it is neither a conversation id (32 hex digits) nor your \
         clinic's name: `hushwire contact list` lists contacts, `hushwire queue` conversations",
        escape(target)
    )))
}

/// State shared between the async chat and the line editor's thread.
struct Shared {
    /// When the chat started; activity times are milliseconds since then.
    start: std::time::Instant,
    /// The last keystroke, in milliseconds since `start`.
    last_key_ms: AtomicU64,
    /// The screen is locked: the line is drawn as blanks.
    locked: AtomicBool,
    /// Incremented at every lock.
    lock_epoch: AtomicU64,
    /// The lock whose draft the editor has already discarded.
    cleared_epoch: AtomicU64,
    /// The first character typed after a lock: it discarded the draft, so the editor's buffer
    /// starts empty and this character is put back in front of the line read (rustyline
    /// inserts replacement text without moving the cursor, so keeping it in the buffer would
    /// put it after everything typed next).
    first_char: std::sync::Mutex<Option<char>>,
}

impl Shared {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_key_ms.store(ms, Ordering::SeqCst);
    }

    /// When the screen locks unless a key is pressed first.
    fn deadline(&self, lock_after: Duration) -> Instant {
        let last = Duration::from_millis(self.last_key_ms.load(Ordering::SeqCst));
        Instant::from_std(self.start + last + lock_after)
    }

    fn lock(&self) {
        self.lock_epoch.fetch_add(1, Ordering::SeqCst);
        self.locked.store(true, Ordering::SeqCst);
    }

    fn is_locked(&self) -> bool {
        self.locked.load(Ordering::SeqCst)
    }
}

/// Sees every key: records it as activity, and after a lock discards the draft on the first key
/// (a character then starts the passphrase).
struct KeyWatch(Arc<Shared>);

impl ConditionalEventHandler for KeyWatch {
    fn handle(
        &self,
        evt: &rustyline::Event,
        _n: RepeatCount,
        _positive: bool,
        _ctx: &EventContext,
    ) -> Option<Cmd> {
        self.0.touch();
        if !self.0.is_locked() {
            return None;
        }
        let epoch = self.0.lock_epoch.load(Ordering::SeqCst);
        if self.0.cleared_epoch.swap(epoch, Ordering::SeqCst) == epoch {
            return None;
        }
        let key = match evt {
            rustyline::Event::KeySeq(keys) => keys.first().copied(),
            _ => None,
        };
        match key {
            Some(rustyline::KeyEvent(KeyCode::Char(c), m))
                if m == Modifiers::NONE || m == Modifiers::SHIFT =>
            {
                if let Ok(mut first) = self.0.first_char.lock() {
                    *first = Some(c);
                }
                Some(Cmd::Replace(Movement::WholeBuffer, Some(String::new())))
            }
            // Ctrl-C and Ctrl-D keep their meaning (leave) even on a locked screen.
            Some(rustyline::KeyEvent(KeyCode::Char('C' | 'D'), Modifiers::CTRL)) => None,
            _ => Some(Cmd::Replace(Movement::WholeBuffer, Some(String::new()))),
        }
    }
}

/// Draws the line as blanks while locked (the draft at the lock, then the passphrase).
struct Mask(Arc<Shared>);

impl Highlighter for Mask {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        if self.0.is_locked() {
            Cow::Owned(" ".repeat(line.chars().count()))
        } else {
            Cow::Borrowed(line)
        }
    }

    fn highlight_char(&self, _line: &str, _pos: usize, kind: CmdKind) -> bool {
        kind != CmdKind::MoveCursor || self.0.is_locked()
    }
}

impl rustyline::completion::Completer for Mask {
    type Candidate = String;
}
impl rustyline::hint::Hinter for Mask {
    type Hint = String;
}
impl rustyline::validate::Validator for Mask {}
impl rustyline::Helper for Mask {}

/// What the chat asks of the editor's thread: add the last sent line to the history (never a
/// passphrase), then read the next line.
struct ReadNext {
    remember: Option<Zeroizing<String>>,
}

/// Output while the editor may be reading: through its printer (above the line being typed),
/// or plainly without a terminal.
struct Screen {
    printer: Option<Box<dyn rustyline::ExternalPrinter + Send>>,
}

impl Screen {
    fn line(&mut self, text: &str) {
        if let Some(p) = &mut self.printer
            && p.print(format!("{text}\n")).is_ok()
        {
            return;
        }
        println!("{text}");
        let _ = std::io::stdout().flush();
    }
}

/// What to do with a line the user typed (not locked).
#[derive(Debug, PartialEq, Eq)]
enum Input<'a> {
    Nothing,
    Send(&'a str),
    Help,
    Lock,
    Quit,
    Recall,
    Unknown(&'a str),
}

fn parse_input(line: &str) -> Input<'_> {
    let text = line.trim_end_matches(['\r', '\n']);
    if text.trim().is_empty() {
        return Input::Nothing;
    }
    if text.starts_with("//") {
        // `//text` sends `/text`.
        return Input::Send(text.strip_prefix('/').unwrap_or(text));
    }
    if text.starts_with('/') {
        let command = text.split_whitespace().next().unwrap_or(text);
        return match command {
            "/help" | "/?" => Input::Help,
            "/lock" => Input::Lock,
            "/quit" | "/exit" => Input::Quit,
            "/recall" => Input::Recall,
            other => Input::Unknown(other),
        };
    }
    Input::Send(text)
}

/// A short reminder of a sent message for its delivery line: its time and first words.
fn summary(text: &str, at_ms: u64) -> String {
    const MAX_CHARS: usize = 32;
    let first_line = text.lines().next().unwrap_or_default();
    let mut short: String = first_line.chars().take(MAX_CHARS).collect();
    if short.chars().count() < text.chars().count() {
        short.push('…');
    }
    format!("{} \"{}\"", common::format_clock(at_ms), escape(&short))
}

/// Moves the cursor up over the line the editor echoed and clears from there, so the sent line
/// is shown once, formatted. Counts characters, so a line of wide characters may leave part of
/// its echo behind, never erase more.
fn erase_echo(chars: usize) {
    #[cfg(unix)]
    {
        let cols = rustix::termios::tcgetwinsize(std::io::stdout())
            .map(|w| usize::from(w.ws_col))
            .unwrap_or(0);
        if let Some(rows) = (PROMPT.len() + chars).checked_div(cols) {
            print!("\x1b[{}A\x1b[J", rows + 1);
            let _ = std::io::stdout().flush();
        }
    }
    #[cfg(not(unix))]
    let _ = chars;
}

/// `chat NAME`.
pub async fn chat(g: &Global, name: &str, lock_after: u64) -> CliResult<ExitCode> {
    if std::io::stdin().is_terminal() && !std::io::stdout().is_terminal() {
        // The editor could not mask a passphrase typed at the lock: the terminal would echo it.
        return Err(common::fail(
            "chat reads from the terminal but its output is redirected: run it with both on \
             the terminal (or pipe its input too)",
        ));
    }
    let client = open(g).await?;
    let mut events = client.events();
    client.connect().await?;
    let target = resolve(&client, name).await?;
    let tty = std::io::stdin().is_terminal();
    let lock_after = Duration::from_secs(lock_after);
    let shared = Arc::new(Shared {
        start: std::time::Instant::now(),
        last_key_ms: AtomicU64::new(0),
        locked: AtomicBool::new(false),
        lock_epoch: AtomicU64::new(0),
        cleared_epoch: AtomicU64::new(0),
        first_char: std::sync::Mutex::new(None),
    });

    let config = Config::builder()
        .auto_add_history(false)
        .max_history_size(500)
        .map_err(|e| common::fail(format!("cannot start the line editor: {e}")))?
        .color_mode(if tty {
            ColorMode::Forced
        } else {
            ColorMode::Disabled
        })
        .build();
    let mut editor: Editor<Mask, DefaultHistory> = Editor::with_config(config)
        .map_err(|e| common::fail(format!("cannot start the line editor: {e}")))?;
    editor.set_helper(Some(Mask(shared.clone())));
    editor.bind_sequence(
        rustyline::Event::Any,
        EventHandler::Conditional(Box::new(KeyWatch(shared.clone()))),
    );
    let mut screen = Screen {
        printer: if tty {
            editor
                .create_external_printer()
                .ok()
                .map(|p| Box::new(p) as Box<dyn rustyline::ExternalPrinter + Send>)
        } else {
            None
        },
    };

    // The editor blocks on the terminal: it runs on a thread of its own and reads one line
    // each time it is asked.
    let (ask, asked) = std::sync::mpsc::channel::<ReadNext>();
    let (lines_tx, mut lines) = mpsc::channel::<Result<Zeroizing<String>, ReadlineError>>(1);
    std::thread::spawn(move || {
        while let Ok(next) = asked.recv() {
            if let Some(line) = next.remember {
                let _ = editor.add_history_entry(line.as_str());
            }
            let read = editor.readline(PROMPT).map(Zeroizing::new);
            if lines_tx.blocking_send(read).is_err() {
                break;
            }
        }
    });

    let mut names = Names::new(&client);
    // Messages the conversation's opening lines showed: not shown again as they arrive.
    let mut intro_shown = std::collections::HashSet::new();
    let label = match &target {
        Target::Contact(contact) => {
            screen.line(&format!(
                "Chat with {} ({}). Type a message and press Enter to send; /help lists commands, /quit leaves.",
                escape(&contact.name),
                if contact.verified && !contact.identity_changed {
                    "verified"
                } else {
                    "NOT verified: run `hushwire verify` to compare safety numbers"
                }
            ));
            if let Some(label) = common::agent_label(&contact.agent) {
                screen.line(&format!("{}: {label}", escape(&contact.name)));
            }
            contact.name.clone()
        }
        Target::Conversation(id) => {
            intro_shown = conversation_intro(&client, *id, &mut screen).await?;
            common::conversation_hex(id)
        }
    };
    screen.line(&format!(
        "The screen locks after {} s without typing.",
        lock_after.as_secs()
    ));
    if let Target::Contact(_) = &target {
        // Marked read before printing, as in recv: a crash never shows a message twice.
        for message in client.unread().await? {
            let id = message.id;
            client.mark_read(&[id]).await?;
            if let Some((line, _)) =
                describe(&mut names, &Event::MessageReceived(message), true).await
            {
                screen.line(line.as_str());
            }
        }
    }

    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut held: Vec<Zeroizing<String>> = Vec::new();
    // Messages printed are marked read; those held behind the lock are marked at unlock.
    let mut held_ids = Vec::new();
    let mut held_conversation: Vec<MessageId> = Vec::new();
    // What each message sent in this chat was, for its delivery line.
    let mut sent: HashMap<MessageId, String> = HashMap::new();
    let mut last_state_connected: Option<bool> = None;
    let mut held_reported = std::collections::HashSet::new();
    let mut last_sent: Option<MessageId> = None;
    let _ = ask.send(ReadNext { remember: None });
    shared.touch();
    let code = loop {
        let locked = shared.is_locked();
        let idle = tokio::time::sleep_until(shared.deadline(lock_after));
        tokio::select! {
            read = lines.recv() => {
                let line = match read {
                    Some(Ok(line)) => line,
                    Some(Err(ReadlineError::Interrupted)) => break EXIT_INTERRUPTED,
                    Some(Err(ReadlineError::Eof)) | None => break 0,
                    Some(Err(e)) => {
                        screen.line(&format!("error: the line editor failed: {e}"));
                        break 1;
                    }
                };
                shared.touch();
                if locked {
                    let first = shared.first_char.lock().ok().and_then(|mut f| f.take());
                    let line = match first {
                        Some(c) => Zeroizing::new(format!("{c}{}", line.as_str())),
                        None => Zeroizing::new(line.to_string()),
                    };
                    if unlock(&client, &line, &mut screen).await {
                        shared.locked.store(false, Ordering::SeqCst);
                        screen.line("Unlocked.");
                        let shown = std::mem::take(&mut held_ids);
                        client.mark_read(&shown).await?;
                        if let Target::Conversation(id) = &target {
                            let shown = std::mem::take(&mut held_conversation);
                            client.mark_conversation_read(*id, &shown).await?;
                        }
                        for h in held.drain(..) {
                            screen.line(h.as_str());
                        }
                    } else {
                        screen.line("Enter passphrase to unlock:");
                    }
                    let _ = ask.send(ReadNext { remember: None });
                    continue;
                }
                let mut remember = None;
                match parse_input(&line) {
                    Input::Nothing => {}
                    Input::Quit => break 0,
                    Input::Help => screen.line(HELP),
                    Input::Lock => lock_screen(&shared, &mut screen, None),
                    Input::Unknown(command) => screen.line(&format!(
                        "unknown command {}: nothing was sent (/help lists commands; start a \
                         line with // to send a line beginning with /)",
                        escape(command)
                    )),
                    Input::Recall => match (&target, last_sent) {
                        (Target::Conversation(id), Some(message)) => {
                            match client.recall(*id, message).await {
                                Ok(()) => screen.line("(your last message was recalled: every member sees it as recalled)"),
                                Err(e) => screen.line(&format!("error: {}", escape(&e.to_string()))),
                            }
                        }
                        (Target::Conversation(_), None) => {
                            screen.line("nothing to recall: you sent no message in this chat");
                        }
                        (Target::Contact(_), _) => {
                            screen.line("/recall works in clinic conversations only; nothing was sent");
                        }
                    },
                    Input::Send(text) => match send(&client, &target, text).await {
                        Ok(id) => {
                            let now = now_ms();
                            if tty {
                                erase_echo(line.chars().count());
                            }
                            let header = format!("[{}] you:", common::format_clock(now));
                            screen.line(&message_block(&header, "", text));
                            sent.insert(id, summary(text, now));
                            last_sent = Some(id);
                            remember = Some(line.clone());
                        }
                        Err(e) => screen.line(&format!("error: {}", escape(&e.to_string()))),
                    },
                }
                let _ = ask.send(ReadNext { remember });
            }
            event = events.recv() => {
                let event = match event {
                    Ok(e) => e,
                    Err(RecvError::Lagged(n)) => {
                        let note = Zeroizing::new(format!(
                            "note: {n} event(s) were not shown; see `hushwire transcript open {}`",
                            escape(&label)
                        ));
                        show(locked, &mut held, &mut screen, note);
                        continue;
                    }
                    Err(RecvError::Closed) => break 0,
                };
                if matches!(event, Event::Wiped { .. }) {
                    // The clinic's administrator wiped this device: the store is gone.
                    break common::EXIT_WIPED;
                }
                if let Event::Connection(state) = &event {
                    if let Some(line) = connection_line(state, &mut last_state_connected) {
                        show(locked, &mut held, &mut screen, Zeroizing::new(line));
                    }
                    continue;
                }
                if let Event::MessageDelivered { contact: c, id } = &event
                    && let Some(what) = sent.get(id)
                {
                    let who = escape(&names.get(*c).await);
                    show(locked, &mut held, &mut screen,
                         Zeroizing::new(format!("(delivered to {who}: {what})")));
                    continue;
                }
                // A held contact is reported again at every reconnection: say it once per
                // reason in this chat.
                if let Event::SendHeld { contact: c, reason } = &event
                    && !held_reported.insert((*c, reason.clone()))
                {
                    continue;
                }
                // In a conversation: only its own messages, receipts and changes, once each.
                if let Target::Conversation(id) = &target {
                    match conversation_event(&event, *id, &sent, &intro_shown, locked) {
                        Shown::Skip => continue,
                        Shown::Line(line) => {
                            show(locked, &mut held, &mut screen, Zeroizing::new(line));
                            continue;
                        }
                        Shown::Read(message) => {
                            if locked {
                                held_conversation.push(message);
                            } else {
                                client.mark_conversation_read(*id, &[message]).await?;
                            }
                        }
                        Shown::Describe => {
                            // Shown here, live: `recv` need not show it again.
                            if matches!(
                                event,
                                Event::ConversationMembershipChanged { .. }
                                    | Event::ConversationMessageRecalled { .. }
                                    | Event::ConversationUnanswered { .. }
                            ) {
                                client.take_conversation_notices(Some(*id)).await?;
                            }
                        }
                    }
                }
                if let Event::MessageReceived(m) = &event {
                    if locked {
                        held_ids.push(m.id);
                    } else {
                        client.mark_read(&[m.id]).await?;
                    }
                }
                if let Some((line, _)) = describe(&mut names, &event, true).await {
                    show(locked, &mut held, &mut screen, line);
                }
            }
            () = idle, if !locked => {
                // A key pressed since the deadline was computed moves it; check again.
                if shared.deadline(lock_after) <= Instant::now() {
                    lock_screen(&shared, &mut screen, Some(lock_after));
                }
            }
            _ = &mut ctrl_c => break EXIT_INTERRUPTED,
        }
    };
    // Nothing that arrived while locked is shown; leaving clears the conversation from the
    // screen and scrollback, as the lock does.
    held.clear();
    drop(ask);
    drop(screen);
    if tty {
        print!("{CLEAR}");
    }
    let _ = std::io::stdout().flush();
    if code == common::EXIT_WIPED
        && let Some(e) = client.stop_error()
    {
        // Nothing to sync or sign: the store was erased. Says who wiped it (exit status 5).
        return Err(e.into());
    }
    if code != EXIT_INTERRUPTED {
        // Give the relay a moment to take what was just typed; what it does not take stays
        // queued (Ctrl-C leaves at once).
        let _ = client.sync(LEAVE_WAIT).await;
        let queued = client.outbox_len().await.unwrap_or(0);
        if queued > 0 {
            eprintln!(
                "note: {queued} outgoing message(s) or receipt(s) are still queued; they go out \
                 the next time a hushwire command connects"
            );
        }
    }
    crate::messages::sign_transcripts(&client).await;
    client.disconnect().await;
    Ok(ExitCode::from(code))
}

/// Sends a line to the chat's contact or conversation.
async fn send(client: &Client, target: &Target, text: &str) -> hushwire_client::Result<MessageId> {
    match target {
        Target::Contact(contact) => client.send_text(contact.id, text).await,
        Target::Conversation(id) => client.send_text_to_conversation(*id, text).await,
    }
}

/// The opening lines of a conversation chat: who is on it (verified), then what was said.
async fn conversation_intro(
    client: &Client,
    id: ConversationId,
    screen: &mut Screen,
) -> CliResult<std::collections::HashSet<MessageId>> {
    // What the relay holds for this device is stored first, so the history shown is current.
    let _ = client.sync(Duration::from_secs(10)).await;
    let members = client.members(id).await?;
    screen.line(&format!(
        "Conversation {}. Type a message and press Enter to send; /help lists commands, /quit leaves.",
        common::conversation_hex(&id)
    ));
    for m in &members {
        screen.line(&format!("  on it: {}", escape(&m.shown)));
    }
    let me = client.identity_key().await.fingerprint();
    match members.iter().find(|m| m.fingerprint == me).map(|m| m.role) {
        None => screen.line(
            "You are not on this conversation (or no longer): you see what this device holds; \
             nothing you type is sent.",
        ),
        Some(hushwire_proto::conversation::MemberRole::Supervisor) => {
            screen.line("You read along (supervisor, read-only): nothing you type is sent.");
        }
        Some(_) => {}
    }
    if !members
        .iter()
        .any(|m| m.role == hushwire_proto::conversation::MemberRole::Agent && !m.revoked)
    {
        screen.line("  (no verified agent on it now: it waits in the clinic's queue)");
    }
    let mut unread = Vec::new();
    let mut shown = std::collections::HashSet::new();
    for m in client.conversation_messages(id).await? {
        let header = common::conversation_header(&m, &common::format_clock(m.sent_at_ms));
        let text = match &m.recalled {
            Some((by, at)) => format!(
                "(recalled by {} at {})",
                crate::display::escape(by),
                common::format_clock(*at)
            ),
            None => String::from_utf8_lossy(&m.content).into_owned(),
        };
        screen.line(&message_block(&header, "", &text));
        shown.insert(m.id);
        if !m.outgoing {
            unread.push(m.id);
        }
    }
    client.mark_conversation_read(id, &unread).await?;
    // The members and recalls just listed include every change and recall not shown yet.
    client.take_conversation_notices(Some(id)).await?;
    Ok(shown)
}

/// How a conversation chat treats an event.
enum Shown {
    /// Not about this conversation's people, or said already.
    Skip,
    /// A line of its own.
    Line(String),
    /// A message of this conversation: shown as any message is, and marked read once shown.
    Read(MessageId),
    /// Shown as everywhere else (connection, failures).
    Describe,
}

fn conversation_event(
    event: &Event,
    id: ConversationId,
    sent: &HashMap<MessageId, String>,
    shown: &std::collections::HashSet<MessageId>,
    locked: bool,
) -> Shown {
    match event {
        Event::ConversationMessageReceived(m) if shown.contains(&m.id) => Shown::Skip,
        Event::ConversationMessageReceived(m) if m.conversation == id => {
            if m.outgoing || locked {
                Shown::Describe
            } else {
                Shown::Read(m.id)
            }
        }
        Event::ConversationReceipt {
            conversation,
            id: message,
            status,
            ..
        } if *conversation == id => match sent.get(message) {
            Some(what) => Shown::Line(format!(
                "({} by a member: {what})",
                if *status == hushwire_client::payload::ReceiptStatus::Read {
                    "read"
                } else {
                    "delivered"
                }
            )),
            None => Shown::Skip,
        },
        // Members without a session here become contact rows; not news in a conversation.
        Event::NewContact { .. }
        | Event::ConversationMessageReceived(_)
        | Event::ConversationReceipt { .. }
        | Event::MessageReceived(_)
        | Event::MessageDelivered { .. }
        | Event::QueueChanged(_) => Shown::Skip,
        Event::ConversationMessageRecalled { conversation, .. }
        | Event::ConversationMembershipChanged { conversation, .. }
        | Event::ConversationUnanswered { conversation }
            if *conversation != id =>
        {
            Shown::Skip
        }
        _ => Shown::Describe,
    }
}

/// Clears the screen and its scrollback and shows the lock prompt (`idle`: after that long
/// without typing; `None`: asked for with /lock).
fn lock_screen(shared: &Shared, screen: &mut Screen, idle: Option<Duration>) {
    shared.lock();
    let why = match idle {
        Some(d) => format!("Locked after {} s idle (automatic logoff).", d.as_secs()),
        None => "Locked.".to_owned(),
    };
    screen.line(&format!("{CLEAR}{why} Enter passphrase to unlock:"));
}

/// Prints a line, or keeps it for after the unlock.
fn show(
    locked: bool,
    held: &mut Vec<Zeroizing<String>>,
    screen: &mut Screen,
    line: Zeroizing<String>,
) {
    if locked {
        held.push(line);
    } else {
        screen.line(line.as_str());
    }
}

/// A line when the connection comes up or goes down (not for every retry).
fn connection_line(state: &ConnectionState, last: &mut Option<bool>) -> Option<String> {
    let (up, line) = match state {
        ConnectionState::Connected => (true, "(connected to the relay)".to_owned()),
        // A retry time of 0: the client stopped (another device connected with this
        // identity) and will not reconnect by itself.
        ConnectionState::Disconnected {
            reason,
            retry_in_ms: 0,
            ..
        } => {
            *last = Some(false);
            return Some(format!(
                "(disconnected: {}; stopped, not retrying; type /quit and run `hushwire chat` \
                 again to reconnect)",
                escape(reason)
            ));
        }
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
async fn unlock(client: &Client, passphrase: &str, screen: &mut Screen) -> bool {
    let secret = Secret::passphrase(passphrase);
    match client.unlock(&secret).await {
        Ok(()) => true,
        Err(ClientError::WrongSecret) => {
            screen.line("wrong passphrase");
            false
        }
        Err(e) => {
            screen.line(&format!("error: {}", escape(&e.to_string())));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_connection_does_not_claim_to_retry() {
        let mut last = Some(true);
        let stopped = ConnectionState::Disconnected {
            reason: "connected elsewhere".into(),
            retry_in_ms: 0,
        };
        let line = connection_line(&stopped, &mut last).unwrap_or_default();
        assert!(!line.contains("; retrying"), "{line}");
        assert!(
            line.contains("not retrying") && line.contains("/quit"),
            "{line}"
        );
        // Even right after a retrying line, the stop is shown.
        let mut last = Some(false);
        assert!(connection_line(&stopped, &mut last).is_some());
        let retrying = ConnectionState::Disconnected {
            reason: "reset".into(),
            retry_in_ms: 500,
        };
        let mut last = Some(true);
        let line = connection_line(&retrying, &mut last).unwrap_or_default();
        assert!(line.contains("retrying"), "{line}");
    }

    #[test]
    fn lines_are_commands_messages_or_refused() {
        assert_eq!(parse_input("hello"), Input::Send("hello"));
        assert_eq!(parse_input("hello\r"), Input::Send("hello"));
        assert_eq!(parse_input("   "), Input::Nothing);
        assert_eq!(parse_input("/quit"), Input::Quit);
        assert_eq!(parse_input(" /quit"), Input::Send(" /quit"));
        assert_eq!(parse_input("/help"), Input::Help);
        assert_eq!(parse_input("/lock"), Input::Lock);
        assert_eq!(parse_input("/qiut"), Input::Unknown("/qiut"));
        assert_eq!(
            parse_input("/etc/passwd is here"),
            Input::Unknown("/etc/passwd")
        );
        assert_eq!(parse_input("//shrug"), Input::Send("/shrug"));
        assert_eq!(parse_input("//"), Input::Send("/"));
    }

    #[test]
    fn a_delivery_names_the_message_by_time_and_first_words() {
        let at = 1_700_000_000_000;
        assert_eq!(summary("hello", at), "22:13:20 \"hello\"");
        let long = "Your results are ready; please call the clinic tomorrow";
        assert_eq!(
            summary(long, at),
            "22:13:20 \"Your results are ready; please c…\""
        );
        assert_eq!(summary("a\x1b[2J\nb", at), "22:13:20 \"a\\x1b[2J…\"");
    }
}
