//! What every command shares: errors and exit codes, the store's location, passphrases, client
//! options, and how events, times and reports are shown.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hushwire_client::{
    Address, AgentStatus, Client, ClientError, ClientOptions, ConnectionState, ContactId,
    ContentType, Event, KdfParams, MessageState, Secret, TlsRoots, TranscriptReport,
};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::display::{escape, message_block};

/// A command's failure: the message printed after `error: ` and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong and, where possible, what to do.
    pub message: String,
    /// The process exit code.
    pub code: u8,
}

/// The result of a command.
pub type CliResult<T> = Result<T, Failure>;

/// A failure with exit code 1.
pub fn fail(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code: 1,
    }
}

/// The exit code of any command that finds this device wiped by its clinic's administrator
/// (its store is erased). Documented in `hushwire --help`.
pub const EXIT_WIPED: u8 = 5;

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = if matches!(e, ClientError::Wiped { .. }) {
            EXIT_WIPED
        } else {
            1
        };
        Failure {
            message: e.to_string(),
            code,
        }
    }
}

/// How a contact's clinic status is shown, escaped for the terminal: `Name — verified agent of
/// Clinic` (both names from signed data), `NOT a verified agent: <reason>`, or nothing for a
/// patient or a contact not checked.
pub fn agent_label(status: &AgentStatus) -> Option<String> {
    match status {
        AgentStatus::Verified {
            name,
            clinic,
            roles,
        } => {
            use hushwire_proto::clinic::Role;
            // What the certificate grants: a supervisor without the agent role is no agent.
            let what = if roles.contains(Role::Agent) {
                "agent"
            } else if roles.contains(Role::Supervisor) {
                "supervisor"
            } else {
                "staff member"
            };
            Some(format!(
                "{} \u{2014} verified {what} of {}",
                escape(name),
                escape(clinic)
            ))
        }
        AgentStatus::Refused(reason) => Some(format!("NOT a verified agent: {reason}")),
        _ => None,
    }
}

/// A contact's clinic status in JSON.
pub fn agent_json(status: &AgentStatus) -> Value {
    match status {
        AgentStatus::Verified {
            name,
            clinic,
            roles,
        } => json!({
            "status": "verified", "name": name, "clinic": clinic, "roles": roles.to_string()
        }),
        AgentStatus::Refused(reason) => json!({"status": "refused", "reason": reason.to_string()}),
        AgentStatus::NotAnAgent => json!({"status": "not_an_agent"}),
        _ => json!({"status": "unchecked"}),
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        fail(e.to_string())
    }
}

/// Crash-test hook, shared with the client library (`docs/client.md` §6): if
/// `HUSHWIRE_CLIENT_FAULT` names this point, the process aborts here, as `kill -9` would stop
/// it. Unset in normal use.
pub fn fault_point(name: &str) {
    if std::env::var("HUSHWIRE_CLIENT_FAULT").is_ok_and(|v| v == name) {
        std::process::abort();
    }
}

/// The environment variable that selects insecure, fast Argon2 parameters at `init` (tests).
pub const FAST_KDF_VAR: &str = "HUSHWIRE_INSECURE_FAST_KDF";
/// The environment variable holding the passphrase for scripts and tests.
pub const PASSPHRASE_VAR: &str = "HUSHWIRE_PASSPHRASE";
/// The environment variable holding the organization key's passphrase (`hushwire org`): a
/// different one from the store's, so scripts do not use one passphrase for both by accident.
pub const ORG_PASSPHRASE_VAR: &str = "HUSHWIRE_ORG_PASSPHRASE";
/// The environment variable holding the clinic archive key's passphrase (`org archive-policy`,
/// `archive`): its own, so a supervisor who reads the archive never needs the organization key's.
pub const ARCHIVE_PASSPHRASE_VAR: &str = "HUSHWIRE_ARCHIVE_PASSPHRASE";

/// The home directory: `--home`, `$HUSHWIRE_HOME`, or `$HOME/.hushwire`.
pub fn home(g: &crate::cli::Global) -> CliResult<PathBuf> {
    if let Some(h) = &g.home {
        return Ok(h.clone());
    }
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => Ok(PathBuf::from(h).join(".hushwire")),
        _ => Err(fail(
            "no home directory: pass --home DIR or set HUSHWIRE_HOME",
        )),
    }
}

/// Creates the home directory, private to the user.
pub fn create_home(home: &std::path::Path) -> CliResult<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(home)
        .map_err(|e| fail(format!("cannot create {}: {e}", home.display())))
}

/// The store file inside the home directory.
pub fn store_path(g: &crate::cli::Global) -> CliResult<PathBuf> {
    Ok(home(g)?.join("client.db"))
}

/// Client options: the defaults, plus a private CA from `--ca-cert`.
pub fn options(g: &crate::cli::Global) -> CliResult<ClientOptions> {
    let mut options = ClientOptions {
        process_label: Some(g.label.clone()),
        ..ClientOptions::default()
    };
    if let Some(path) = &g.ca_cert {
        options.tls = load_ca(path)?;
    }
    Ok(options)
}

fn load_ca(path: &Path) -> CliResult<TlsRoots> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            fail(format!(
                "cannot read CA certificate {}: {e}",
                path.display()
            ))
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("bad CA certificate in {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(fail(format!(
            "no PEM certificate found in {}",
            path.display()
        )));
    }
    Ok(TlsRoots { extra: certs })
}

/// Where the passphrase comes from.
enum Source {
    File(PathBuf),
    Env(Zeroizing<String>),
    Prompt,
}

fn source(g: &crate::cli::Global) -> Source {
    source_from(g, PASSPHRASE_VAR)
}

fn source_from(g: &crate::cli::Global, var: &str) -> Source {
    if let Some(f) = &g.passphrase_file {
        return Source::File(f.clone());
    }
    match std::env::var(var) {
        Ok(p) => Source::Env(Zeroizing::new(p)),
        Err(_) => Source::Prompt,
    }
}

/// The first line of a passphrase file, without its line ending.
fn read_passphrase_file(path: &Path) -> CliResult<Zeroizing<String>> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        fail(format!(
            "cannot read the passphrase file {}: {e}",
            path.display()
        ))
    })?);
    let line = text.lines().next().unwrap_or_default();
    Ok(Zeroizing::new(line.to_owned()))
}

/// Asks on the terminal; without one, the error names `instead`, what to use then.
fn prompt_or(text: &str, instead: &str) -> CliResult<Zeroizing<String>> {
    rpassword::prompt_password(text)
        .map(Zeroizing::new)
        .map_err(|e| {
            fail(format!(
                "cannot ask for the passphrase ({e}): there is no terminal; {instead}"
            ))
        })
}

/// A store's passphrase from the terminal.
fn prompt(text: &str) -> CliResult<Zeroizing<String>> {
    prompt_or(
        text,
        &format!("use --passphrase-file FILE or set {PASSPHRASE_VAR}"),
    )
}

/// The organization key's passphrase from the terminal.
fn org_prompt(text: &str) -> CliResult<Zeroizing<String>> {
    prompt_or(
        text,
        &format!("use --passphrase-file FILE or set {ORG_PASSPHRASE_VAR}"),
    )
}

/// The archive key's passphrase from the terminal.
fn archive_prompt(text: &str) -> CliResult<Zeroizing<String>> {
    prompt_or(text, &format!("set {ARCHIVE_PASSPHRASE_VAR}"))
}

/// The prompt for an existing store's passphrase: names the home it unlocks, so a user with
/// several homes knows which passphrase is asked for.
fn unlock_prompt(home: &Path) -> String {
    format!("Passphrase for {}: ", escape(&home.display().to_string()))
}

/// The passphrase that opens an existing store.
pub fn passphrase(g: &crate::cli::Global) -> CliResult<Secret> {
    let text = match source(g) {
        Source::File(f) => read_passphrase_file(&f)?,
        Source::Env(p) => p,
        Source::Prompt => prompt(&unlock_prompt(&home(g)?))?,
    };
    Ok(Secret::passphrase(text.as_str()))
}

/// A new store's passphrase; asked twice when typed.
pub fn new_passphrase(g: &crate::cli::Global) -> CliResult<Secret> {
    let text = match source(g) {
        Source::File(f) => read_passphrase_file(&f)?,
        Source::Env(p) => p,
        Source::Prompt => {
            let first = prompt(&format!(
                "New passphrase (at least {} characters): ",
                hushwire_client::MIN_PASSPHRASE_CHARS
            ))?;
            let second = prompt("Repeat the passphrase: ")?;
            if first != second {
                return Err(fail("the two passphrases differ; nothing was created"));
            }
            first
        }
    };
    Ok(Secret::passphrase(text.as_str()))
}

/// The passphrase of a clinic's organization key in `dir` (`hushwire org`): from the same
/// sources as a store's but its own variable (--passphrase-file, $HUSHWIRE_ORG_PASSPHRASE, a
/// prompt), asked twice when
/// `new` and typed.
pub fn org_passphrase(g: &crate::cli::Global, dir: &Path, new: bool) -> CliResult<Secret> {
    let text = match source_from(g, ORG_PASSPHRASE_VAR) {
        Source::File(f) => read_passphrase_file(&f)?,
        Source::Env(p) => p,
        Source::Prompt if new => {
            let first = org_prompt(&format!(
                "New passphrase for the organization key (at least {} characters): ",
                hushwire_client::MIN_PASSPHRASE_CHARS
            ))?;
            let second = org_prompt("Repeat the passphrase: ")?;
            if first != second {
                return Err(fail("the two passphrases differ; nothing was created"));
            }
            first
        }
        Source::Prompt => org_prompt(&format!(
            "Passphrase of the organization key in {}: ",
            escape(&dir.display().to_string())
        ))?,
    };
    Ok(Secret::passphrase(text.as_str()))
}

/// The archive key file's passphrase: `$HUSHWIRE_ARCHIVE_PASSPHRASE`, or a prompt (twice for a
/// new key). Never `--passphrase-file`, which names the store's or the organization key's, so
/// one command never uses one passphrase for two keys by accident.
pub fn archive_passphrase(new: bool) -> CliResult<Secret> {
    let text = match std::env::var(ARCHIVE_PASSPHRASE_VAR) {
        Ok(p) => Zeroizing::new(p),
        Err(_) if new => {
            let first = archive_prompt(&format!(
                "New passphrase for the clinic's archive key, for its supervisors (at least {} \
                 characters; not the organization key's): ",
                hushwire_client::MIN_PASSPHRASE_CHARS
            ))?;
            let second = archive_prompt("Repeat the passphrase: ")?;
            if first != second {
                return Err(fail("the two passphrases differ; nothing was created"));
            }
            first
        }
        Err(_) => archive_prompt("Passphrase of the clinic's archive key: ")?,
    };
    if new && text.chars().count() < hushwire_client::MIN_PASSPHRASE_CHARS {
        return Err(fail(format!(
            "the archive key's passphrase must have at least {} characters; nothing was created",
            hushwire_client::MIN_PASSPHRASE_CHARS
        )));
    }
    Ok(Secret::passphrase(text.as_str()))
}

/// Whether the test-only fast key derivation was asked for.
pub fn fast_kdf() -> Option<KdfParams> {
    std::env::var(FAST_KDF_VAR)
        .is_ok_and(|v| v == "1")
        .then_some(KdfParams::INSECURE_FOR_TESTS)
}

/// The options of a store about to be created: with the insecure test key derivation (and a
/// loud warning) when `HUSHWIRE_INSECURE_FAST_KDF=1`.
pub fn new_store_options(g: &crate::cli::Global) -> CliResult<ClientOptions> {
    let mut options = options(g)?;
    if let Some(kdf) = fast_kdf() {
        eprintln!(
            "WARNING: {FAST_KDF_VAR}=1: the store key is derived with INSECURE test parameters.\n\
             WARNING: the passphrase gives this store NO protection. Use only for automated tests."
        );
        options.kdf = kdf;
    }
    Ok(options)
}

/// Opens the store: asks for the passphrase only once the store is known to exist.
pub async fn open(g: &crate::cli::Global) -> CliResult<Client> {
    let path = store_path(g)?;
    if !path.exists() {
        return Err(ClientError::NotInitialized(path).into());
    }
    let secret = passphrase(g)?;
    Ok(Client::open(&path, &secret, options(g)?).await?)
}

/// Waits until the client is connected, or fails after `wait` with the last reason.
pub async fn wait_connected(client: &Client, wait: Duration) -> CliResult<()> {
    let mut state = client.connection_state();
    let connected = tokio::time::timeout(wait, async {
        loop {
            match &*state.borrow_and_update() {
                ConnectionState::Connected => return true,
                // The client stopped for good (the relay's key changed, or this device
                // connected elsewhere): waiting longer changes nothing.
                ConnectionState::Disconnected { retry_in_ms: 0, .. } => return false,
                _ => {}
            }
            if state.changed().await.is_err() {
                return false;
            }
        }
    })
    .await;
    if let Some(e) = client.stop_error() {
        // Wiped (its own exit code), a refused wipe order, or the relay's key changed.
        return Err(e.into());
    }
    if let ConnectionState::Disconnected {
        reason,
        retry_in_ms: 0,
    } = &*client.connection_state().borrow()
    {
        return Err(fail(format!("not connected: {reason}")));
    }
    match connected {
        Ok(true) => Ok(()),
        _ => Err(fail(format!(
            "could not connect to the relay within {} s{}",
            wait.as_secs(),
            connection_reason(client)
        ))),
    }
}

/// `: <reason>` if the connection is down for a known reason, else nothing.
pub fn connection_reason(client: &Client) -> String {
    match &*client.connection_state().borrow() {
        ConnectionState::Disconnected { reason, .. } => format!(": {reason}"),
        _ => String::new(),
    }
}

/// Is standard input a terminal?
pub fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

/// Is standard error a terminal (progress bars go there)?
pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}

/// The current time, Unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `YYYY-MM-DD HH:MM:SSZ` (UTC) for Unix milliseconds.
pub fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `HH:MM:SS` (UTC) for Unix milliseconds.
pub fn format_clock(ms: u64) -> String {
    let rem = ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// How far the sender's clock may be from the arrival before the arrival is shown too: a
/// message that spent a while queued, or a sender whose clock is wrong.
pub const CLOCK_GAP_MS: u64 = 2 * 60 * 1000;

/// A message's time as shown: when it was sent (the sender's clock), and when it arrived if
/// that differs by more than [`CLOCK_GAP_MS`] either way (`clock_only`: HH:MM:SS).
pub fn sent_and_arrival(sent_ms: u64, received_ms: u64, clock_only: bool) -> String {
    let time = |ms: u64| {
        if clock_only {
            format_clock(ms)
        } else {
            format_time(ms)
        }
    };
    if sent_ms.abs_diff(received_ms) > CLOCK_GAP_MS {
        format!("{}, arrived {}", time(sent_ms), time(received_ms))
    } else {
        time(sent_ms)
    }
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// A content type's name in JSON.
pub fn content_type_name(t: ContentType) -> String {
    match t {
        ContentType::Text => "text".into(),
        ContentType::Binary => "binary".into(),
        ContentType::Other(b) => format!("other-{b}"),
    }
}

/// Content as shown to a person: the text, or a placeholder for bytes.
pub fn content_text(t: ContentType, content: &[u8]) -> String {
    match t {
        ContentType::Text => String::from_utf8_lossy(content).into_owned(),
        _ => format!("<{} bytes of {}>", content.len(), content_type_name(t)),
    }
}

/// Content in JSON: `text` for text, `content_hex` otherwise.
pub fn content_json(obj: &mut serde_json::Map<String, Value>, t: ContentType, content: &[u8]) {
    obj.insert("content_type".into(), json!(content_type_name(t)));
    match t {
        ContentType::Text => {
            obj.insert(
                "text".into(),
                json!(String::from_utf8_lossy(content).into_owned()),
            );
        }
        _ => {
            obj.insert("content_hex".into(), json!(hex::encode(content)));
        }
    }
}

/// A verification report as JSON.
pub fn report_json(r: &TranscriptReport) -> Value {
    json!({
        "records": r.records,
        "checkpoints": r.checkpoints,
        "unsigned_tail": r.unsigned_tail,
        "closed": r.closed,
        "head": hex::encode(r.head_hash),
    })
}

/// A verification report in words.
pub fn report_text(r: &TranscriptReport) -> String {
    let end = if r.closed {
        "closed".to_owned()
    } else if r.unsigned_tail == 0 {
        "no unsigned tail".to_owned()
    } else {
        format!(
            "{} record(s) in the unsigned tail (their removal would not be detectable)",
            r.unsigned_tail
        )
    };
    format!(
        "{} record(s), {} checkpoint(s), {end}",
        r.records, r.checkpoints
    )
}

/// Contact names by id, refreshed when an unknown id shows up.
pub struct Names {
    client: Client,
    names: HashMap<ContactId, String>,
}

impl Names {
    /// An empty cache over `client`'s contacts.
    pub fn new(client: &Client) -> Self {
        Self {
            client: client.clone(),
            names: HashMap::new(),
        }
    }

    /// The name of a contact (its id if it has none).
    pub async fn get(&mut self, id: ContactId) -> String {
        if !self.names.contains_key(&id)
            && let Ok(contacts) = self.client.contacts().await
        {
            self.names = contacts.into_iter().map(|c| (c.id, c.name)).collect();
        }
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("contact #{id}"))
    }
}

/// The name of the contact whose address `sender` is, if any.
fn contact_at<'a>(
    contacts: impl IntoIterator<Item = (Address, &'a str)>,
    sender: &Address,
) -> Option<&'a str> {
    contacts
        .into_iter()
        .find(|(a, _)| a == sender)
        .map(|(_, n)| n)
}

/// What to do about messages held for a contact (`name` already escaped).
pub fn held_advice(name: &str, reason: &str) -> String {
    if reason.contains("NoPreKeys") {
        // The relay has no prekey bundle for the contact: their device never registered, or
        // was reset, or has not been online to publish new prekeys.
        format!(
            "{name}'s device has no prekeys at the relay: ask {name} to run `hushwire register` \
             or `hushwire recv`, and check their address; retried automatically, or drop the \
             queued messages with `hushwire contact remove {name} --discard-queued`"
        )
    } else {
        "retried automatically".to_owned()
    }
}

/// How an event is shown: a line for people and an object for `--json` (`clock_only`: the
/// chat's short form, times as HH:MM:SS and brief receipts). `None` for events a
/// user does not need to see (connection changes, prekey upkeep, sent confirmations).
pub async fn describe(
    names: &mut Names,
    event: &Event,
    clock_only: bool,
) -> Option<(Zeroizing<String>, Value)> {
    match event {
        Event::MessageReceived(m) => {
            let mut obj = serde_json::Map::new();
            obj.insert("event".into(), json!("message"));
            obj.insert("contact".into(), json!(m.contact_name));
            obj.insert("id".into(), json!(m.id.to_string()));
            obj.insert("sent_at_ms".into(), json!(m.sent_at_ms));
            obj.insert("received_at_ms".into(), json!(m.received_at_ms));
            content_json(&mut obj, m.content_type, &m.content);
            let status = names
                .client
                .agent_status(m.contact)
                .await
                .unwrap_or(AgentStatus::Unchecked);
            obj.insert("agent".into(), agent_json(&status));
            let flag = agent_label(&status).map_or_else(String::new, |l| format!(" [{l}]"));
            let header = format!(
                "[{}] {}{flag}:",
                sent_and_arrival(m.sent_at_ms, m.received_at_ms, clock_only),
                escape(&m.contact_name),
            );
            let line = message_block(&header, "", &content_text(m.content_type, &m.content));
            Some((Zeroizing::new(line), Value::Object(obj)))
        }
        Event::SentByOtherDevice {
            message: m,
            device_id,
        } => {
            let mut obj = serde_json::Map::new();
            obj.insert("event".into(), json!("sent_by_other_device"));
            obj.insert("contact".into(), json!(m.contact_name));
            obj.insert("device".into(), json!(device_id));
            obj.insert("id".into(), json!(m.id.to_string()));
            obj.insert("sent_at_ms".into(), json!(m.sent_at_ms));
            content_json(&mut obj, m.content_type, &m.content);
            let header = format!(
                "[{}] you, from your device {device_id}, to {}:",
                sent_and_arrival(m.sent_at_ms, m.received_at_ms, clock_only),
                escape(&m.contact_name),
            );
            let line = message_block(&header, "", &content_text(m.content_type, &m.content));
            Some((Zeroizing::new(line), Value::Object(obj)))
        }
        Event::MessageDelivered { contact, id } => {
            let name = names.get(*contact).await;
            let line = format!("(delivered to {}: message {id})", escape(&name));
            Some((
                Zeroizing::new(line),
                json!({"event": "delivered", "contact": name, "id": id.to_string()}),
            ))
        }
        Event::GapDetected { contact, missing } => {
            let name = names.get(*contact).await;
            Some((
                Zeroizing::new(format!(
                    "warning: {missing} message(s) from {} are missing so far (later ones arrived first)",
                    escape(&name)
                )),
                json!({"event": "gap", "contact": name, "missing": missing}),
            ))
        }
        Event::GapClosed { contact } => {
            let name = names.get(*contact).await;
            Some((
                Zeroizing::new(format!(
                    "notice: no message from {} is missing any more (the earlier warning is resolved)",
                    escape(&name)
                )),
                json!({"event": "gap_closed", "contact": name}),
            ))
        }
        Event::DecryptFailed { sender, reason } => {
            let contacts = names.client.contacts().await.unwrap_or_default();
            let name = contact_at(
                contacts.iter().map(|c| (c.address, c.name.as_str())),
                sender,
            );
            let from = name.map_or_else(|| sender.to_string(), escape);
            let mut obj =
                json!({"event": "decrypt_failed", "sender": sender.to_string(), "reason": reason});
            if let (Some(name), Some(o)) = (name, obj.as_object_mut()) {
                o.insert("contact".into(), json!(name));
            }
            Some((
                Zeroizing::new(format!(
                    "warning: a message from {from} could not be decrypted: {}",
                    escape(reason)
                )),
                obj,
            ))
        }
        Event::IdentityChanged { contact } => {
            let name = names.get(*contact).await;
            Some((
                Zeroizing::new(format!(
                    "warning: the identity key of {shown} changed; sending is blocked until you run `hushwire verify {shown}`",
                    shown = escape(&name)
                )),
                json!({"event": "identity_changed", "contact": name}),
            ))
        }
        Event::SendHeld { contact, reason } => {
            let name = names.get(*contact).await;
            Some((
                Zeroizing::new(format!(
                    "warning: messages to {} are held in the outbox: {} ({})",
                    escape(&name),
                    escape(reason),
                    held_advice(&escape(&name), reason)
                )),
                json!({"event": "send_held", "contact": name, "reason": reason}),
            ))
        }
        Event::NewContact { contact, name } => {
            let address = names
                .client
                .contacts()
                .await
                .ok()
                .and_then(|cs| cs.into_iter().find(|c| c.id == *contact))
                .map(|c| c.address.to_string())
                .unwrap_or_default();
            Some((
                Zeroizing::new(format!(
                    "new contact {shown} ({address}), not verified: name it with `hushwire contact rename {shown} NAME`",
                    shown = escape(name)
                )),
                json!({"event": "new_contact", "contact": name, "address": address}),
            ))
        }
        Event::SessionReset {
            contact,
            requested_by_peer,
            resent,
        } => {
            let name = names.get(*contact).await;
            let shown = escape(&name);
            let line = if *requested_by_peer {
                format!(
                    "notice: {shown}'s device could not read some of your messages; a new secure session was started and {resent} unconfirmed message(s) were sent again"
                )
            } else {
                format!(
                    "notice: a message from {shown} could not be read; {shown}'s device was asked to start a new secure session and send it again"
                )
            };
            Some((
                Zeroizing::new(line),
                json!({"event": "session_reset", "contact": name, "requested_by_peer": requested_by_peer, "resent": resent}),
            ))
        }
        Event::MessagesLost { contact, count } => {
            let name = names.get(*contact).await;
            Some((
                Zeroizing::new(format!(
                    "warning: {count} message(s) from {} can no longer be read (lost on the way); ask them to send again what you did not get",
                    escape(&name)
                )),
                json!({"event": "messages_lost", "contact": name, "count": count}),
            ))
        }
        Event::KeyReuseDetected { contact } => {
            let name = names.get(*contact).await;
            Some((
                Zeroizing::new(format!(
                    "SECURITY: {shown}'s device sent a second, different message under an encryption key it had already used (its store was restored from an older copy); it was not shown, and a new session is being started. Tell {shown}",
                    shown = escape(&name)
                )),
                json!({"event": "key_reuse_detected", "contact": name}),
            ))
        }
        Event::RegisteredAgain => Some((
            Zeroizing::new(
                "notice: the relay had lost this device (its data was restored or wiped) and it was registered again; messages the relay held for you are lost, and your contacts' devices send again what you did not confirm".to_owned(),
            ),
            json!({"event": "registered_again"}),
        )),
        Event::StoreRollbackDetected { contacts } => Some((
            Zeroizing::new(format!(
                "notice: this store is an older copy than the one last connected (a backup was restored, or a copy is in use elsewhere); new secure sessions are started with {} contact(s) before anything is sent",
                contacts.len()
            )),
            json!({"event": "store_rollback_detected", "contacts": contacts.len()}),
        )),
        Event::AgentStatusChanged { contact, status } => {
            let name = names.get(*contact).await;
            let line = match (status, agent_label(status)) {
                (AgentStatus::Refused(_), Some(label)) => format!(
                    "warning: {} is {label}; nothing is sent to them",
                    escape(&name)
                ),
                (_, Some(label)) => format!("notice: {} is {label}", escape(&name)),
                _ => return None,
            };
            Some((
                Zeroizing::new(line),
                json!({"event": "agent_status", "contact": name, "agent": agent_json(status)}),
            ))
        }
        // A wipe is reported once, as the command's error (exit status 5).
        Event::MessageStateChanged {
            contact,
            id,
            state: state @ (MessageState::NotConfirmed | MessageState::Failed),
        } => {
            let name = names.get(*contact).await;
            let what = if *state == MessageState::Failed {
                "could not be delivered after several new sessions (FAILED)"
            } else {
                "is NOT CONFIRMED: no receipt from their device yet"
            };
            Some((
                Zeroizing::new(format!("warning: message {id} to {} {what}", escape(&name))),
                json!({"event": "message_state", "contact": name, "id": id.to_string(), "state": format!("{state:?}")}),
            ))
        }
        Event::ConversationMessageReceived(m) => {
            let mut obj = serde_json::Map::new();
            obj.insert(
                "event".into(),
                json!(if m.staff_note {
                    "staff_note"
                } else {
                    "conversation_message"
                }),
            );
            obj.insert("conversation".into(), json!(conversation_hex(&m.conversation)));
            obj.insert("from".into(), json!(m.sender_shown));
            obj.insert("id".into(), json!(m.id.to_string()));
            obj.insert("sent_at_ms".into(), json!(m.sent_at_ms));
            // A recalled message is shown as recalled, never its text (as in `chat`); the text
            // stays in the clinic's record.
            match &m.recalled {
                Some((by, at)) => {
                    obj.insert("recalled".into(), json!({"by": by, "at_ms": at}));
                }
                None => content_json(&mut obj, m.content_type, &m.content),
            }
            if let Some(by) = &m.shared_by {
                obj.insert("shared_by".into(), json!(by));
            }
            // Which conversation: an agent answering several must never mix them up.
            let header = format!(
                "(conversation {}) {}",
                conversation_hex(&m.conversation),
                conversation_header(
                    m,
                    &sent_and_arrival(m.sent_at_ms, m.received_at_ms, clock_only),
                )
            );
            let text = match &m.recalled {
                Some((by, at)) => format!("(recalled by {} at {})", escape(by), format_clock(*at)),
                None => content_text(m.content_type, &m.content),
            };
            let line = message_block(&header, "", &text);
            Some((Zeroizing::new(line), Value::Object(obj)))
        }
        Event::ConversationMessageRecalled {
            conversation,
            id,
            by,
            at_ms,
        } => Some((
            Zeroizing::new(format!(
                "(conversation {}) (message {id} was recalled by {} at {})",
                conversation_hex(conversation),
                escape(by),
                format_clock(*at_ms)
            )),
            json!({"event": "recalled", "conversation": conversation_hex(conversation),
                   "id": id.to_string(), "by": by, "at_ms": at_ms}),
        )),
        Event::ConversationMembershipChanged {
            conversation,
            changes,
        } => Some((
            Zeroizing::new(
                changes
                    .iter()
                    .map(|c| format!("(conversation {}) ({})", conversation_hex(conversation), escape(c)))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            json!({"event": "membership", "conversation": conversation_hex(conversation),
                   "changes": changes}),
        )),
        Event::ConversationUnanswered { conversation } => Some((
            Zeroizing::new(format!(
                "(conversation {}) (no verified agent is on this conversation any more: the \
                 clinic revoked the agent's certificate; it is back in the clinic's queue)",
                conversation_hex(conversation)
            )),
            json!({"event": "unanswered", "conversation": conversation_hex(conversation)}),
        )),
        Event::ConversationRefused {
            conversation,
            reason,
        } => Some((
            Zeroizing::new(format!(
                "warning: a membership change of conversation {} was refused: {}",
                conversation_hex(conversation),
                escape(reason)
            )),
            json!({"event": "membership_refused", "conversation": conversation_hex(conversation),
                   "reason": reason}),
        )),
        Event::QueueChanged(entry) => Some((
            Zeroizing::new(format!(
                "(queue: conversation {} {})",
                conversation_hex(&entry.conversation),
                queue_state_text(entry.state)
            )),
            json!({"event": "queue", "conversation": conversation_hex(&entry.conversation),
                   "state": format!("{:?}", entry.state)}),
        )),
        Event::ArchiveUnavailable { waiting, reason } => Some((
            Zeroizing::new(format!("warning: {} ({waiting} waiting)", escape(reason))),
            json!({"event": "archive_unavailable", "waiting": waiting, "reason": reason}),
        )),
        _ => None,
    }
}

/// The header line of a conversation message shown at `time`: `[time] sender:`, a staff note
/// and a message received in a history share saying so, every name escaped.
pub fn conversation_header(m: &hushwire_client::ConversationMessageView, time: &str) -> String {
    format!(
        "[{time}] {}{}{}:",
        if m.staff_note { "staff note from " } else { "" },
        escape(&m.sender_shown),
        m.shared_by
            .as_deref()
            .map_or_else(String::new, |by| format!(" (shared by {})", escape(by))),
    )
}

/// A conversation id as the commands print and take it: 32 lowercase hex digits.
pub fn conversation_hex(id: &hushwire_proto::conversation::ConversationId) -> String {
    id.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// A queue state in words, for text output (`--json` keeps the state's name: `New`,
/// `HandedBack`, `Claimed`, `Closed`).
pub fn queue_state_text(state: hushwire_proto::conversation::queue::QueueState) -> &'static str {
    use hushwire_proto::conversation::queue::QueueState;
    match state {
        QueueState::New => "new, waiting for an agent",
        QueueState::HandedBack => "handed back, waiting for an agent",
        QueueState::Claimed => "claimed by an agent",
        QueueState::Closed => "closed",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_passphrase_prompt_names_the_home() {
        assert_eq!(
            super::unlock_prompt(std::path::Path::new("/tmp/bob")),
            "Passphrase for /tmp/bob: "
        );
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_decrypt_failure_from_a_contact_names_the_contact() {
        let bob: super::Address = format!("{}:1", "ab".repeat(32)).parse().unwrap();
        let other: super::Address = format!("{}:2", "ab".repeat(32)).parse().unwrap();
        let contacts = [(other, "carol"), (bob, "bob")];
        assert_eq!(super::contact_at(contacts, &bob), Some("bob"));
        let stranger: super::Address = format!("{}:1", "cd".repeat(32)).parse().unwrap();
        assert_eq!(super::contact_at(contacts, &stranger), None);
    }

    use super::*;

    #[test]
    fn a_contact_without_prekeys_gets_advice_with_a_way_out() {
        let advice = held_advice("bob", "the relay refused the request: NoPreKeys");
        assert!(
            advice.contains("ask bob to run `hushwire register`"),
            "{advice}"
        );
        assert!(
            advice.contains("hushwire contact remove bob --discard-queued"),
            "{advice}"
        );
        assert_eq!(held_advice("bob", "timeout"), "retried automatically");
    }

    #[test]
    fn the_sent_time_is_shown_and_a_distant_arrival_is_marked() {
        let sent = 1_700_000_000_000;
        assert_eq!(sent_and_arrival(sent, sent + 1_000, true), "22:13:20");
        assert_eq!(
            sent_and_arrival(sent, sent + CLOCK_GAP_MS, true),
            "22:13:20"
        );
        assert_eq!(
            sent_and_arrival(sent, sent + 3_600_000, true),
            "22:13:20, arrived 23:13:20"
        );
        // A sender whose clock runs ahead is marked as well.
        assert_eq!(
            sent_and_arrival(sent + 3_600_000, sent, false),
            "2023-11-14 23:13:20Z, arrived 2023-11-14 22:13:20Z"
        );
    }
}
