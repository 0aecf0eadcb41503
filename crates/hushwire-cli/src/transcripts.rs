//! Transcript and audit commands: list, verify, open and export local transcripts; auditor key
//! generation and reading exports; `audit verify` over every local transcript.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use hushwire_client::{
    AuditedTranscript, AuditorKey, Client, ContactId, Direction, MessageId, MessageState,
    TranscriptInfo, TranscriptRecord, TranscriptReport, read_export,
};
use hushwire_proto::{Fingerprint, X25519PublicKey};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::cli::Global;
use crate::common::{
    self, CliResult, content_json, content_text, fail, open, report_json, report_text,
};
use crate::display::{escape, message_block};

/// A progress bar on stderr when it is a terminal, else a hidden one.
fn progress_bar(unit: &str) -> ProgressBar {
    if !common::stderr_is_tty() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    let template = format!("{{bar:40}} {{pos}}/{{len}} {unit} ({{eta}})");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// `transcript list`.
pub async fn list(g: &Global) -> CliResult<ExitCode> {
    let client = open(g).await?;
    let transcripts = client.transcripts().await?;
    if g.json {
        let list: Vec<Value> = transcripts
            .iter()
            .map(|t| json!({"contact": t.contact_name, "id": t.id, "records": t.records}))
            .collect();
        println!("{}", Value::Array(list));
        return Ok(ExitCode::SUCCESS);
    }
    if transcripts.is_empty() {
        println!("No transcripts yet (they start with the first message).");
    }
    for t in &transcripts {
        println!(
            "{}  {} record(s)  id {}",
            escape(&t.contact_name),
            t.records,
            t.id
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A contact's transcript, by the contact's name (a removed contact's too: transcripts are
/// listed under the name the contact had).
async fn transcript_of(client: &Client, name: &str) -> CliResult<TranscriptInfo> {
    let transcripts = client.transcripts().await?;
    if let Ok(contact) = client.contact(name).await {
        return transcripts
            .into_iter()
            .find(|t| t.contact == contact.id)
            .ok_or_else(|| fail(format!("no transcript with {name:?} yet (no messages)")));
    }
    transcripts
        .into_iter()
        .find(|t| t.contact_name == name)
        .ok_or_else(|| hushwire_client::ClientError::UnknownContact(name.to_owned()).into())
}

/// Verifies a local transcript with a progress bar.
async fn verify_local(
    client: &Client,
    contact: ContactId,
) -> CliResult<(TranscriptReport, Vec<TranscriptRecord>)> {
    let bar = progress_bar("records");
    let progress_bar = bar.clone();
    let mut progress = move |done: u64, total: u64| {
        progress_bar.set_length(total);
        progress_bar.set_position(done);
    };
    let result = client.open_transcript(contact, &mut progress).await;
    bar.finish_and_clear();
    Ok(result?)
}

/// One record as JSON. `me` is this side's fingerprint (hex) and `peer` the other side's name.
fn record_json(r: &TranscriptRecord, peer: Option<&str>) -> Value {
    let mut obj = serde_json::Map::new();
    obj.insert(
        "direction".into(),
        json!(match r.direction {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }),
    );
    obj.insert("sender".into(), json!(r.sender.to_string()));
    if let Some(peer) = peer {
        obj.insert(
            "sender_name".into(),
            json!(match r.direction {
                Direction::Sent => "me",
                Direction::Received => peer,
            }),
        );
    }
    obj.insert("message_id".into(), json!(hex::encode(r.message_id)));
    obj.insert("sent_at_ms".into(), json!(r.sent_at_ms));
    obj.insert("received_at_ms".into(), json!(r.received_at_ms));
    content_json(&mut obj, r.content_type, &r.content);
    Value::Object(obj)
}

/// One record as a line, or a block of lines for a multi-line message (`indent` before each,
/// see [`message_block`]).
fn record_line(
    r: &TranscriptRecord,
    peer: Option<&str>,
    indent: &str,
    cancelled: bool,
) -> Zeroizing<String> {
    let (arrow, who) = match (r.direction, peer) {
        (Direction::Sent, Some(_)) => ("->", "me".to_owned()),
        (Direction::Received, Some(p)) => ("<-", escape(p)),
        (Direction::Sent, None) => ("sent", r.sender.to_string()),
        (Direction::Received, None) => ("received", r.sender.to_string()),
    };
    let mark = if cancelled {
        " (cancelled, never sent)"
    } else {
        ""
    };
    let header = format!(
        "{indent}[{}] {arrow} {who}{mark}:",
        common::sent_and_arrival(r.sent_at_ms, r.received_at_ms, false)
    );
    Zeroizing::new(message_block(
        &header,
        indent,
        &content_text(r.content_type, &r.content),
    ))
}

/// `transcript verify NAME` and (with `show_records`) `transcript open NAME`.
pub async fn verify(g: &Global, name: &str, show_records: bool) -> CliResult<ExitCode> {
    let client = open(g).await?;
    let info = transcript_of(&client, name).await?;
    let (report, records) = match verify_local(&client, info.contact).await {
        Ok(r) => r,
        Err(e) => {
            if g.json {
                println!(
                    "{}",
                    json!({"ok": false, "contact": info.contact_name, "id": info.id, "error": e.message})
                );
            }
            return Err(e);
        }
    };
    // Sent records the user took out of the outbox before the relay had them.
    let mut cancelled = Vec::with_capacity(records.len());
    for r in &records {
        cancelled.push(
            show_records
                && r.direction == Direction::Sent
                && client.message_state(MessageId(r.message_id)).await?
                    == Some(MessageState::Cancelled),
        );
    }
    if g.json {
        let mut obj = json!({
            "ok": true,
            "contact": info.contact_name,
            "id": info.id,
            "report": report_json(&report),
        });
        if show_records && let Some(map) = obj.as_object_mut() {
            let list: Vec<Value> = records
                .iter()
                .zip(&cancelled)
                .map(|(r, &c)| {
                    let mut v = record_json(r, Some(&info.contact_name));
                    if c && let Some(o) = v.as_object_mut() {
                        o.insert("cancelled".into(), json!(true));
                    }
                    v
                })
                .collect();
            map.insert("records".into(), Value::Array(list));
        }
        println!("{obj}");
        return Ok(ExitCode::SUCCESS);
    }
    if show_records {
        for (r, &c) in records.iter().zip(&cancelled) {
            println!(
                "{}",
                record_line(r, Some(&info.contact_name), "", c).as_str()
            );
        }
        println!();
    }
    println!(
        "Transcript with {} (id {}): verified: {}",
        escape(&info.contact_name),
        info.id,
        report_text(&report)
    );
    Ok(ExitCode::SUCCESS)
}

/// `audit verify`: every local transcript, then the device's audit chain.
pub async fn audit_verify(g: &Global) -> CliResult<ExitCode> {
    let client = open(g).await?;
    let transcripts = client.transcripts().await?;
    let mut failures = 0usize;
    let mut results = Vec::new();
    for info in &transcripts {
        match verify_local(&client, info.contact).await {
            Ok((report, _)) => {
                if !g.json {
                    println!(
                        "OK      {} (id {}): {}",
                        escape(&info.contact_name),
                        info.id,
                        report_text(&report)
                    );
                }
                results.push(json!({
                    "contact": info.contact_name, "id": info.id, "ok": true,
                    "report": report_json(&report),
                }));
            }
            Err(e) => {
                failures += 1;
                if !g.json {
                    println!(
                        "FAILED  {} (id {}): {}",
                        escape(&info.contact_name),
                        info.id,
                        e.message
                    );
                }
                results.push(json!({
                    "contact": info.contact_name, "id": info.id, "ok": false, "error": e.message,
                }));
            }
        }
    }
    if !g.json && transcripts.is_empty() {
        println!("No transcripts yet.");
    }
    // The device's own audit chain (store unlocked, sessions, verifications, checkpoints).
    let chain = match client.verify_audit().await {
        Ok((report, _)) => {
            if !g.json {
                println!(
                    "OK      device audit chain: {} record(s), {} checkpoint(s), {} in the unsigned tail",
                    report.records, report.checkpoints, report.unsigned_tail
                );
            }
            json!({
                "ok": true,
                "records": report.records,
                "checkpoints": report.checkpoints,
                "unsigned_tail": report.unsigned_tail,
                "head": hex::encode(report.head_hash),
            })
        }
        Err(e) => {
            failures += 1;
            if !g.json {
                println!("FAILED  device audit chain: {e}");
            }
            json!({"ok": false, "error": e.to_string()})
        }
    };
    if g.json {
        println!(
            "{}",
            json!({"ok": failures == 0, "transcripts": results, "audit_chain": chain})
        );
    }
    if failures > 0 {
        return Err(fail(format!(
            "{failures} check(s) failed ({} transcript(s) and the device audit chain checked): \
             the store was altered or damaged",
            transcripts.len()
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_public(hex_text: &str) -> CliResult<X25519PublicKey> {
    let bad = || {
        fail(format!(
            "{hex_text:?} is not an auditor public key: expected 64 hex digits (from `hushwire auditor keygen`)"
        ))
    };
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_text.trim(), &mut bytes).map_err(|_| bad())?;
    X25519PublicKey::from_array(bytes, "auditor public key").map_err(|_| bad())
}

/// The temporary name an export is written under.
fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// The names of the store's files in the home directory, which no output may replace.
const STORE_FILES: [&str; 4] = [
    "client.db",
    "client.db-wal",
    "client.db-shm",
    "client.db.lock",
];

/// `path` with its directory resolved (symbolic links, `..`), the file name kept as given.
fn resolved(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(std::fs::canonicalize(dir).ok()?.join(name))
}

/// Refuses an output path that is one of the store's files, or that exists and is not a
/// regular file (a directory, a device such as `/dev/stdout`, a symbolic link): `--force`
/// replaces an old export, never anything else.
fn check_out(g: &Global, out: &Path) -> CliResult<()> {
    let store = common::store_path(g)?;
    let home = common::home(g)?;
    let target = resolved(out);
    let home = std::fs::canonicalize(&home).unwrap_or(home);
    let is_store = STORE_FILES.iter().any(|f| {
        let f = home.join(f);
        target.as_ref() == Some(&f) || out == f || out == store
    });
    if is_store {
        return Err(fail(format!(
            "{} is the client's store; refusing to write over it",
            out.display()
        )));
    }
    match std::fs::symlink_metadata(out) {
        Ok(m) if !m.file_type().is_file() => Err(fail(format!(
            "{} exists and is not a regular file; refusing to write over it",
            out.display()
        ))),
        _ => Ok(()),
    }
}

/// `transcript export`.
pub async fn export(
    g: &Global,
    to: &[String],
    out: &Path,
    force: bool,
    names: &[String],
) -> CliResult<ExitCode> {
    let recipients = to
        .iter()
        .map(|t| parse_public(t))
        .collect::<CliResult<Vec<_>>>()?;
    check_out(g, out)?;
    if out.exists() && !force {
        return Err(fail(format!(
            "{} exists; pass --force to overwrite it",
            out.display()
        )));
    }
    let client = open(g).await?;
    let mut contacts = Vec::new();
    for name in names {
        contacts.push(client.contact(name).await?.id);
    }
    // Sign a checkpoint over every record so none is left in an unsigned tail.
    client.checkpoint_transcripts().await?;
    let partial = partial_path(out);
    check_out(g, &partial)?;
    if partial.exists() {
        // A regular file left by an export that was killed: ours to replace.
        std::fs::remove_file(&partial)
            .map_err(|e| fail(format!("cannot remove {}: {e}", partial.display())))?;
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(|e| fail(format!("cannot create {}: {e}", partial.display())))?;
    let mut writer = BufWriter::new(file);
    let bar = progress_bar("records");
    let progress_bar = bar.clone();
    let mut progress = move |done: u64, total: u64| {
        progress_bar.set_length(total);
        progress_bar.set_position(done);
    };
    let result = client
        .export_transcripts(&contacts, &recipients, &mut writer, &mut progress)
        .await;
    bar.finish_and_clear();
    let summary = match result.map_err(crate::common::Failure::from).and_then(|s| {
        let file = writer
            .into_inner()
            .map_err(|e| fail(format!("cannot write {}: {e}", partial.display())))?;
        file.sync_all()?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, out).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        fail(format!(
            "cannot rename {} to {}: {e}",
            partial.display(),
            out.display()
        ))
    })?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    if g.json {
        println!(
            "{}",
            json!({
                "file": out.display().to_string(),
                "transcripts": summary.transcripts,
                "records": summary.records,
                "bytes": summary.bytes,
                "recipients": recipients.len(),
            })
        );
    } else {
        println!(
            "Exported {} transcript(s), {} record(s), {} bytes to {}, sealed to {} auditor key(s).",
            summary.transcripts,
            summary.records,
            summary.bytes,
            out.display(),
            recipients.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `auditor keygen`.
pub fn auditor_keygen(g: &Global, out: &Path) -> CliResult<ExitCode> {
    if out.exists() {
        return Err(fail(format!(
            "{} exists: refusing to overwrite an auditor key (choose another --out FILE; \
             `hushwire auditor pubkey --key {}` prints the existing key's public key)",
            out.display(),
            out.display()
        )));
    }
    let key = loop {
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::fill(secret.as_mut())
            .map_err(|e| fail(format!("no randomness from the system: {e}")))?;
        if let Some(key) = AuditorKey::from_secret_bytes(*secret) {
            break key;
        }
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            fail(format!(
                "{} exists: refusing to overwrite an auditor key",
                out.display()
            ))
        } else {
            fail(format!("cannot create {}: {e}", out.display()))
        }
    })?;
    // Constant-time hex: the encoding's timing must not depend on the secret's digits.
    let mut secret_hex = Zeroizing::new([0u8; 64]);
    let encoded = base16ct::lower::encode(key.to_secret_bytes().as_ref(), secret_hex.as_mut())
        .map_err(|_| fail("cannot encode the auditor key"))?;
    file.write_all(encoded)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    let public = hex::encode(key.public().as_bytes());
    if g.json {
        println!(
            "{}",
            json!({"public": public, "key_file": out.display().to_string()})
        );
    } else {
        println!("{public}");
        eprintln!(
            "Secret key written to {} (keep it safe: it opens every export sealed to the public key above).",
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `auditor pubkey`: the public key of a key file, printed again.
pub fn auditor_pubkey(g: &Global, key_file: &Path) -> CliResult<ExitCode> {
    let key = load_auditor_key(key_file)?;
    let public = hex::encode(key.public().as_bytes());
    if g.json {
        println!(
            "{}",
            json!({"public": public, "key_file": key_file.display().to_string()})
        );
    } else {
        println!("{public}");
    }
    Ok(ExitCode::SUCCESS)
}

fn load_auditor_key(path: &Path) -> CliResult<AuditorKey> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read the key file {}: {e}", path.display())))?,
    );
    let mut bytes = Zeroizing::new([0u8; 32]);
    // Constant-time hex (base16ct): decoding time does not depend on the secret's digits.
    let digits = text.trim();
    let decoded = if digits.len() == 64 {
        base16ct::mixed::decode(digits, bytes.as_mut()).map(<[u8]>::len)
    } else {
        Err(base16ct::Error::InvalidLength)
    };
    if decoded != Ok(32) {
        return Err(fail(format!(
            "{} is not an auditor key file (64 hex digits from `hushwire auditor keygen`)",
            path.display()
        )));
    }
    AuditorKey::from_secret_bytes(*bytes)
        .ok_or_else(|| fail(format!("{} holds an invalid auditor key", path.display())))
}

fn audited_json(t: &AuditedTranscript) -> Value {
    json!({
        "id": t.id,
        "signer": t.signer,
        "report": report_json(&t.report),
    })
}

/// An expected exporter's fingerprint, from 64 hex digits.
fn parse_fingerprint(text: &str) -> CliResult<Fingerprint> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| {
        fail(format!(
            "{text:?} is not a fingerprint: expected 64 hex digits (the exporting device's, \
             as `hushwire whoami` or `hushwire verify` shows it)"
        ))
    })?;
    Ok(Fingerprint(bytes))
}

/// `auditor verify` and (with `show_records`) `auditor open`. Records are shown only once the
/// whole export, its exporter's signature included, has verified.
pub fn auditor_read(
    g: &Global,
    export: &Path,
    key_file: &Path,
    exporter: Option<&str>,
    show_records: bool,
) -> CliResult<ExitCode> {
    let key = load_auditor_key(key_file)?;
    let expected = exporter.map(parse_fingerprint).transpose()?;
    let file =
        File::open(export).map_err(|e| fail(format!("cannot open {}: {e}", export.display())))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut input = BufReader::new(file);
    let bar = progress_bar("bytes");
    bar.set_length(size);
    let progress_bar = bar.clone();
    let mut progress = move |read: u64| progress_bar.set_position(read);
    let mut opened: Vec<Value> = Vec::new();
    let json_mode = g.json;
    let mut shown: Vec<(AuditedTranscript, Vec<TranscriptRecord>)> = Vec::new();
    let mut on_transcript = |t: &AuditedTranscript, records: Vec<TranscriptRecord>| {
        if !show_records {
            return;
        }
        if json_mode {
            let mut obj = audited_json(t);
            if let Some(map) = obj.as_object_mut() {
                let list: Vec<Value> = records.iter().map(|r| record_json(r, None)).collect();
                map.insert("records".into(), Value::Array(list));
            }
            opened.push(obj);
        } else {
            shown.push((t.clone(), records));
        }
    };
    let result = read_export(
        &mut input,
        &key,
        expected.as_ref(),
        &mut on_transcript,
        &mut progress,
    );
    bar.finish_and_clear();
    let audited = match result {
        Ok(a) => a,
        Err(e) => {
            if g.json {
                println!("{}", json!({"ok": false, "error": e.to_string()}));
            }
            return Err(fail(format!(
                "{}: REFUSED, do not trust any of its records: {e}",
                export.display()
            )));
        }
    };
    if g.json {
        let transcripts = if show_records {
            opened
        } else {
            audited.transcripts.iter().map(audited_json).collect()
        };
        println!(
            "{}",
            json!({
                "ok": true,
                "exporter": audited.exporter,
                "exporter_checked": audited.exporter_checked,
                "transcripts": transcripts,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    for (t, records) in &shown {
        println!("Transcript {} (signed by {}):", t.id, t.signer);
        for r in records {
            println!("{}", record_line(r, None, "  ", false).as_str());
        }
    }
    for t in &audited.transcripts {
        println!(
            "OK  transcript {}  signer {}  {}",
            t.id,
            t.signer,
            report_text(&t.report)
        );
    }
    if audited.exporter_checked {
        println!("Export signed by the expected device {}.", audited.exporter);
    } else {
        println!(
            "Export signed by device {}: compare this fingerprint with the exporting device's \
             (pass it as --exporter to have it checked).",
            audited.exporter
        );
    }
    println!(
        "{}: {} transcript(s) verified.",
        export.display(),
        audited.transcripts.len()
    );
    Ok(ExitCode::SUCCESS)
}
