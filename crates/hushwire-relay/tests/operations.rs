//! What an integrator expects of operating the relay (`docs/relay-protocol.md` §8–§9): the
//! audit chain signed over restarts, `audit verify` that cannot verify nothing, logs, metrics,
//! file modes, help. Issue 12's operations findings, one test each.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Device, RelayProcess, connect, http_get, sample, temp_dir};
use hushwire_proto::relay::FrameBody;

fn relay_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hushwire-relay"))
}

/// `audit verify --json --data-dir <dir>`: (exit success, stdout, stderr).
fn verify(dir: &Path) -> (bool, String, String) {
    let out = relay_bin()
        .args(["audit", "verify", "--json", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A number field of `audit verify --json`'s one-line report.
fn field(report: &str, name: &str) -> u64 {
    let key = format!("\"{name}\":");
    let rest = &report[report
        .find(&key)
        .unwrap_or_else(|| panic!("{name} in {report}"))
        + key.len()..];
    rest.split([',', '}']).next().unwrap().parse().unwrap()
}

/// Waits (up to 20 s) until the stored chain holds more than `records` records.
fn wait_for_records(dir: &Path, records: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, report, err) = verify(dir);
        assert!(ok, "{report} {err}");
        if field(&report, "records") > records || Instant::now() > deadline {
            return report;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// After kill -9 the chain's tail is unsigned; the next start signs it before serving. A
/// graceful stop signs records that were already written without a checkpoint. (Issue 12: 14
/// kill -9 restarts left 2,957 records and no checkpoint.)
#[tokio::test]
async fn the_audit_chain_is_signed_at_start_up_after_a_crash_and_at_every_shutdown() {
    let mut relay = RelayProcess::start("audit-restarts", &[]);
    drop(Client::register(&relay.url(), &Device::new(130, 1)).await);
    let report = wait_for_records(&relay.data_dir, 0);
    relay.kill();
    let (_, report_after_crash, _) = verify(&relay.data_dir);
    assert!(
        field(&report_after_crash, "unsigned_tail") > 0,
        "{report} {report_after_crash}"
    );

    // Restart: the unsigned tail is signed before the relay listens; a second crash keeps it.
    relay.crash_and_restart();
    relay.kill();
    let (ok, report, err) = verify(&relay.data_dir);
    assert!(ok, "{report} {err}");
    assert_eq!(field(&report, "unsigned_tail"), 0, "{report}");
    assert!(field(&report, "checkpoints") >= 1, "{report}");
    assert!(
        relay.log_text().contains("unsigned tail"),
        "{}",
        relay.log_text()
    );

    // Records written (flushed, not yet signed), then a graceful stop: signed.
    relay.crash_and_restart();
    let before = field(&report, "records");
    drop(Client::register(&relay.url(), &Device::new(131, 1)).await);
    let flushed = wait_for_records(&relay.data_dir, before);
    assert!(field(&flushed, "unsigned_tail") > 0, "{flushed}");
    relay.stop_gracefully();
    let (ok, report, err) = verify(&relay.data_dir);
    assert!(ok, "{report} {err}");
    assert_eq!(field(&report, "unsigned_tail"), 0, "{report}");
}

/// `audit verify` from the wrong place refuses, creates nothing, and exits non-zero; its
/// `--data-dir` is accepted after the subcommand and named in its help.
#[test]
fn audit_verify_refuses_a_missing_store_and_accepts_data_dir() {
    let empty = temp_dir("verify-nowhere");
    let out = relay_bin()
        .current_dir(&empty)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        !empty.join("hushwire-relay-data").exists(),
        "verify created a data directory"
    );
    let missing = empty.join("not-here");
    let (ok, _, err) = verify(&missing);
    assert!(!ok);
    assert!(err.contains("not-here"), "{err}");
    assert!(!missing.exists(), "verify created {}", missing.display());
    let help = relay_bin()
        .args(["audit", "verify", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--data-dir"));
}

/// `--help` states defaults and the log variable.
#[test]
fn help_shows_defaults_and_the_log_variable() {
    let help = relay_bin().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "Default: 10000",
        "Default: 1000\n",
        "Default: 127.0.0.1:7700",
        "Default: 128",
        "RUST_LOG",
        "HUSHWIRE_RELAY_LOG",
        "--log-format",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

/// Starts the relay without NO_COLOR, stderr to a pipe (not a terminal), with `extra` flags;
/// returns its first lines (up to the listening line) and the process.
fn start_plain(extra: &[&str]) -> (String, std::process::Child) {
    let dir = temp_dir("plain-logs");
    let mut child = relay_bin()
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .args(extra)
        .env_remove("NO_COLOR")
        .env_remove("HUSHWIRE_RELAY_LOG")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("listening on") {
            break;
        }
    }
    (seen, child)
}

/// Logs: RUST_LOG is honoured, no colour codes on a pipe, `--log-format json` gives one JSON
/// object per line; relay.db is created mode 0600.
#[test]
fn logs_are_plain_or_json_and_the_database_is_private() {
    let (text, mut child) = start_plain(&[]);
    let _ = child.kill();
    assert!(!text.contains('\u{1b}'), "colour codes on a pipe:\n{text}");
    assert!(
        text.contains("DEBUG"),
        "RUST_LOG=debug not honoured:\n{text}"
    );
    let (json, mut child) = start_plain(&["--log-format", "json"]);
    let _ = child.kill();
    for line in json.lines() {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "not JSON: {line}"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let relay = RelayProcess::start("db-mode", &[]);
        let mode = std::fs::metadata(relay.data_dir.join("relay.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "relay.db mode {mode:o}");
    }
}

/// `/metrics` on an address of its own (and not on the main one), counting registrations and
/// authentication failures by reason.
#[tokio::test]
async fn metrics_listen_apart_and_count_registrations_and_auth_failures() {
    let relay = RelayProcess::start("metrics-apart", &["--metrics-listen", "127.0.0.1:0"]);
    drop(Client::register(&relay.url(), &Device::new(132, 1)).await);
    drop(Client::register(&relay.url(), &Device::new(133, 1)).await);
    let mut c = connect(&relay.url()).await;
    let stranger = Device::new(134, 1);
    let creds = stranger.credentials(&c.challenge);
    assert!(matches!(
        c.call(FrameBody::Authenticate(creds)).await,
        FrameBody::Error { .. }
    ));
    let log = relay.log_text();
    let port: u16 = log
        .split("metrics on http://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"));
    assert!(
        http_get(relay.port, "/metrics")
            .await
            .starts_with("HTTP/1.1 404")
    );
    let text = http_get(port, "/metrics").await;
    assert_eq!(
        sample(&text, "hushwire_relay_registrations_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"hushwire_relay_auth_failures_total{reason="unknown_device"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

/// A second relay on a data directory in use refuses to start and names the first one's
/// process: two instances on one directory lost half the audit chain and delivered some
/// envelopes twice. Once the first is gone, the directory serves again.
#[test]
fn a_second_relay_on_one_data_directory_refuses_to_start() {
    let mut first = RelayProcess::start("one-dir", &[]);
    let out = relay_bin()
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&first.data_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second relay started: {err}");
    assert!(
        err.contains(&format!("process {}", first.child.id())),
        "{err}"
    );
    assert!(err.contains("another --data-dir"), "{err}");
    // The lock is on the directory: deleting the file that names the holder does not lift it.
    std::fs::remove_file(first.data_dir.join("relay.lock")).unwrap();
    let again = relay_bin()
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&first.data_dir)
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "a second relay started once relay.lock was deleted"
    );
    // The lock goes with the process, however it ends: a restart after kill -9 serves.
    first.crash_and_restart();
    assert!(std::net::TcpStream::connect(("127.0.0.1", first.port)).is_ok());
}
