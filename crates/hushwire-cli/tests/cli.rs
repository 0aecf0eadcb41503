//! End to end: the real relay binary and real `hushwire` processes, each user with a home in a
//! temporary directory. A "restart" is simply a new process on the same home.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

const PASSPHRASE: &str = "correct horse battery staple";
/// Longest any one CLI process may take before the test fails.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

fn cli_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hushwire"))
}

/// The relay binary beside the CLI binary; built (same profile, same target dir) if missing.
fn relay_bin() -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let cli = cli_bin();
    let profile_dir = cli.parent().unwrap().to_owned();
    let relay = profile_dir.join(format!("hushwire-relay{}", std::env::consts::EXE_SUFFIX));
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if relay.exists() {
        return relay;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let profile = profile_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let target_dir = profile_dir.parent().unwrap();
    let mut build = Command::new(cargo);
    build
        .args(["build", "-p", "hushwire-relay", "--target-dir"])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile.as_str() {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        other => {
            build.args(["--profile", other]);
        }
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building hushwire-relay failed");
    assert!(relay.exists(), "{} still missing", relay.display());
    relay
}

/// A relay process on a loopback port; killed on drop.
struct Relay {
    child: Child,
    url: String,
    port: u16,
    dir: TempDir,
}

impl Relay {
    /// A relay with a fresh data directory on an ephemeral port, serving wss:// with this
    /// certificate and key (PEM files).
    fn start_tls(cert: &Path, key: &Path) -> Self {
        let dir = TempDir::new().unwrap();
        let args = [
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ];
        let (child, url, port) = Self::spawn(dir.path(), "127.0.0.1:0", &args);
        assert!(url.starts_with("wss://"), "{url}");
        Self {
            child,
            url,
            port,
            dir,
        }
    }

    /// A relay with a fresh data directory on an ephemeral port.
    fn start() -> Self {
        let dir = TempDir::new().unwrap();
        let (child, url, port) = Self::spawn(dir.path(), "127.0.0.1:0", &[]);
        Self {
            child,
            url,
            port,
            dir,
        }
    }

    /// SIGKILL.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again on the same port and data directory (after [`Relay::kill`]).
    fn restart(&mut self) {
        self.kill();
        let listen = format!("127.0.0.1:{}", self.port);
        let (child, url, _) = Self::spawn(self.dir.path(), &listen, &[]);
        assert_eq!(url, self.url, "the relay came back elsewhere");
        self.child = child;
    }

    fn spawn(dir: &Path, listen: &str, extra: &[&std::ffi::OsStr]) -> (Child, String, u16) {
        let mut child = Command::new(relay_bin())
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(dir.join("relay-data"))
            .args(extra)
            .arg("serve")
            .env("HUSHWIRE_RELAY_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the relay starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        let mut url = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if let Some(i) = line.find("://127.0.0.1:") {
                let start = line[..i].rfind(char::is_whitespace).map_or(0, |s| s + 1);
                let rest = &line[start..];
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                url = Some(rest[..end].to_owned());
                break;
            }
        }
        let url = url.unwrap_or_else(|| panic!("the relay did not say where it listens:\n{seen}"));
        assert!(url.ends_with("/v1/websocket"), "unexpected relay URL {url}");
        let port = url[url.find("://127.0.0.1:").unwrap() + "://127.0.0.1:".len()..]
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        // Keep draining its log so it never blocks on a full pipe.
        let log = dir.join(format!("relay-{port}-{}.log", child.id()));
        std::thread::spawn(move || {
            let mut f = std::fs::File::create(log).unwrap();
            for line in lines.map_while(Result::ok) {
                let _ = writeln!(f, "{line}");
            }
        });
        (child, url, port)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a finished CLI process left.
struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self, what: &str) -> Self {
        assert!(
            self.status.success(),
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    fn failed(self, what: &str) -> Self {
        assert!(
            !self.status.success(),
            "{what} should have failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }

    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

/// One person: a home directory with a store.
struct User {
    home: PathBuf,
    _dir: TempDir,
}

impl User {
    fn new() -> Self {
        let dir = TempDir::new().unwrap();
        Self {
            home: dir.path().join("home"),
            _dir: dir,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(cli_bin());
        c.arg("--home")
            .arg(&self.home)
            .args(args)
            .env("HUSHWIRE_PASSPHRASE", PASSPHRASE)
            .env("HUSHWIRE_INSECURE_FAST_KDF", "1")
            .env_remove("HUSHWIRE_HOME")
            .env_remove("HUSHWIRE_CLIENT_FAULT")
            .env_remove("HUSHWIRE_LOG");
        c
    }

    fn run(&self, args: &[&str]) -> Out {
        run(self.command(args), &self.home)
    }

    fn run_ok(&self, args: &[&str]) -> Out {
        self.run(args).ok(&args.join(" "))
    }

    /// init + register, returning the address from `whoami --json`.
    fn setup(&self, relay: &Relay) -> String {
        let init = self.run_ok(&["init"]);
        assert!(init.stderr.contains("INSECURE"), "no test-KDF warning");
        self.run_ok(&["register", &relay.url]);
        let me = self.run_ok(&["whoami", "--json"]).json();
        let address = me["address"].as_str().unwrap().to_owned();
        let fingerprint = me["fingerprint"].as_str().unwrap();
        assert_eq!(fingerprint.len(), 64);
        assert_eq!(address, format!("{fingerprint}:1"));
        assert_eq!(me["relay"].as_str(), Some(relay.url.as_str()));
        address
    }

    fn send(&self, to: &str, text: &str) -> String {
        let out = self.run_ok(&["send", to, text, "--json"]).json();
        assert_eq!(out["sent"], true);
        out["id"].as_str().unwrap().to_owned()
    }

    /// `recv --json`: (messages as (contact, text, id), delivered ids).
    fn recv(&self) -> (Vec<(String, String, String)>, Vec<String>) {
        let out = self.run_ok(&["recv", "--json", "--wait", "20"]);
        split_events(&out.json_lines())
    }
}

fn split_events(events: &[Value]) -> (Vec<(String, String, String)>, Vec<String>) {
    let mut messages = Vec::new();
    let mut delivered = Vec::new();
    for e in events {
        match e["event"].as_str().unwrap() {
            "message" => messages.push((
                e["contact"].as_str().unwrap().to_owned(),
                e["text"].as_str().unwrap().to_owned(),
                e["id"].as_str().unwrap().to_owned(),
            )),
            "delivered" => delivered.push(e["id"].as_str().unwrap().to_owned()),
            "new_contact" | "send_held" => {} // checked where expected
            other => panic!("unexpected event {other}: {e}"),
        }
    }
    (messages, delivered)
}

/// Runs a command to completion (at most [`PROCESS_TIMEOUT`]), output captured in files.
fn run(mut command: Command, scratch: &Path) -> Out {
    std::fs::create_dir_all(scratch.parent().unwrap()).unwrap();
    let n = {
        static COUNTER: Mutex<u64> = Mutex::new(0);
        let mut c = COUNTER.lock().unwrap();
        *c += 1;
        *c
    };
    let base = scratch.parent().unwrap();
    let out_path = base.join(format!("out-{n}"));
    let err_path = base.join(format!("err-{n}"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("hushwire starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > PROCESS_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} did not finish in {PROCESS_TIMEOUT:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap(),
        stderr: std::fs::read_to_string(&err_path).unwrap(),
    }
}

fn texts(messages: &[(String, String, String)]) -> Vec<&str> {
    messages.iter().map(|(_, t, _)| t.as_str()).collect()
}

/// Two users who know each other's address.
fn pair(relay: &Relay) -> (User, User) {
    let alice = User::new();
    let bob = User::new();
    let a = alice.setup(relay);
    let b = bob.setup(relay);
    alice.run_ok(&["contact", "add", "bob", &b]);
    bob.run_ok(&["contact", "add", "alice", &a]);
    (alice, bob)
}

/// (direction, text) of a contact's transcript, from `transcript open --json`.
fn transcript(user: &User, name: &str) -> Vec<(String, String)> {
    let t = user.run_ok(&["transcript", "open", name, "--json"]).json();
    assert_eq!(t["ok"], true);
    assert_eq!(t["contact"], name);
    t["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["direction"].as_str().unwrap().to_owned(),
                r["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn two_users_verify_chat_offline_and_continue_after_restart() {
    let relay = Relay::start();
    let (alice, bob) = pair(&relay);

    let contacts = alice.run_ok(&["contact", "list", "--json"]).json();
    assert_eq!(contacts.as_array().unwrap().len(), 1);
    assert_eq!(contacts[0]["name"], "bob");
    assert_eq!(contacts[0]["verified"], false);
    assert_eq!(contacts[0]["identity_changed"], false);

    // Safety numbers: both sides compute the same 60 digits.
    let a_view = alice.run_ok(&["verify", "bob", "--json"]).json();
    let b_view = bob.run_ok(&["verify", "alice", "--json"]).json();
    let digits = a_view["digits"].as_str().unwrap().to_owned();
    assert_eq!(digits.len(), 60);
    assert!(digits.chars().all(|c| c.is_ascii_digit()));
    assert_eq!(b_view["digits"].as_str().unwrap(), digits);
    assert_eq!(a_view["verified"], false);
    let grouped = a_view["safety_number"].as_str().unwrap();
    assert_eq!(grouped.split(' ').count(), 12, "groups of 5: {grouped}");
    assert!(grouped.split(' ').all(|g| g.len() == 5));

    // A wrong number is refused and changes nothing.
    let wrong: String = digits
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    let refused = alice
        .run(&["verify", "bob", "--confirm", &wrong])
        .failed("verify with wrong digits");
    assert!(refused.stderr.contains("error: "), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("does not match"),
        "{}",
        refused.stderr
    );
    let contacts = alice.run_ok(&["contact", "list", "--json"]).json();
    assert_eq!(contacts[0]["verified"], false);

    let human = alice.run_ok(&["verify", "bob", "--confirm", grouped]);
    assert!(
        human.stdout.contains("bob is now verified"),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains(&digits[..5]));
    bob.run_ok(&["verify", "alice", "--confirm", &digits]);
    for (user, name) in [(&alice, "bob"), (&bob, "alice")] {
        let contacts = user.run_ok(&["contact", "list", "--json"]).json();
        assert_eq!(contacts[0]["name"], name);
        assert_eq!(contacts[0]["verified"], true);
        assert_eq!(contacts[0]["identity_known"], true);
    }

    // Round 1: alice writes while bob is offline.
    let sent: Vec<String> = ["first", "second", "third"]
        .iter()
        .map(|t| alice.send("bob", &format!("round 1: {t}")))
        .collect();
    let (got, _) = bob.recv();
    assert_eq!(
        texts(&got),
        ["round 1: first", "round 1: second", "round 1: third"]
    );
    assert!(got.iter().all(|(from, _, _)| from == "alice"));
    let got_ids: Vec<&str> = got.iter().map(|(_, _, id)| id.as_str()).collect();
    assert_eq!(got_ids, sent.iter().map(String::as_str).collect::<Vec<_>>());
    // Nothing twice.
    let (again, _) = bob.recv();
    assert!(again.is_empty(), "shown twice: {again:?}");

    let reply = bob.send("alice", "round 1: reply from bob");
    let (got, delivered) = alice.recv();
    assert_eq!(texts(&got), ["round 1: reply from bob"]);
    assert_eq!(got[0].0, "bob");
    assert_eq!(got[0].2, reply);
    let mut delivered_sorted = delivered.clone();
    delivered_sorted.sort();
    let mut sent_sorted = sent.clone();
    sent_sorted.sort();
    assert_eq!(delivered_sorted, sent_sorted, "a receipt for each message");

    // Round 2: fresh processes on the same homes, both ways.
    alice.send("bob", "round 2: from alice");
    let (got, _) = bob.recv();
    assert_eq!(texts(&got), ["round 2: from alice"]);
    bob.send("alice", "round 2: from bob");
    let (got, _) = alice.recv();
    assert_eq!(texts(&got), ["round 2: from bob"]);

    // Both transcripts hold the whole conversation, mirrored, and verify.
    let expected = [
        ("sent", "round 1: first"),
        ("sent", "round 1: second"),
        ("sent", "round 1: third"),
        ("received", "round 1: reply from bob"),
        ("sent", "round 2: from alice"),
        ("received", "round 2: from bob"),
    ];
    let a_t = transcript(&alice, "bob");
    assert_eq!(
        a_t.iter()
            .map(|(d, t)| (d.as_str(), t.as_str()))
            .collect::<Vec<_>>(),
        expected
    );
    let b_t = transcript(&bob, "alice");
    let mirrored: Vec<(&str, &str)> = expected
        .iter()
        .map(|(d, t)| (if *d == "sent" { "received" } else { "sent" }, *t))
        .collect();
    assert_eq!(
        b_t.iter()
            .map(|(d, t)| (d.as_str(), t.as_str()))
            .collect::<Vec<_>>(),
        mirrored
    );
    let audit = alice.run_ok(&["audit", "verify", "--json"]).json();
    assert_eq!(audit["ok"], true);
    assert_eq!(audit["transcripts"][0]["report"]["records"], 6);
    // The device's own audit chain (unlocks, sessions, verifications) verifies too.
    assert_eq!(audit["audit_chain"]["ok"], true);
    assert!(audit["audit_chain"]["records"].as_u64().unwrap() > 0);
}

#[test]
fn a_client_killed_between_decrypt_and_ack_loses_and_repeats_nothing() {
    let relay = Relay::start();
    let (alice, bob) = pair(&relay);
    let sent: Vec<String> = (1..=4)
        .map(|i| alice.send("bob", &format!("message {i}")))
        .collect();

    // The client aborts right after committing its first delivery, before acknowledging it.
    let mut faulty = bob.command(&["recv", "--json", "--wait", "20"]);
    faulty.env("HUSHWIRE_CLIENT_FAULT", "before-ack");
    let crashed = run(faulty, &bob.home).failed("recv with the before-ack fault");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        assert!(
            crashed.status.signal().is_some(),
            "aborted: {}",
            crashed.status
        );
    }
    let (first_run, _) = split_events(&crashed.json_lines());
    assert!(
        first_run.is_empty(),
        "recv shows messages only after the sync, so the crash came before any: {first_run:?}"
    );

    // The relay redelivers the unacknowledged envelope: it is recognised, not stored again;
    // the message stored before the crash is still unread, so it is shown now, once.
    let (second_run, _) = bob.recv();
    let mut shown: Vec<&str> = texts(&first_run);
    shown.extend(texts(&second_run));
    for i in 1..=4 {
        let t = format!("message {i}");
        assert_eq!(
            shown.iter().filter(|s| **s == t).count(),
            1,
            "{t} shown exactly once: {shown:?}"
        );
    }
    let (third_run, _) = bob.recv();
    assert!(third_run.is_empty(), "{third_run:?}");

    // The transcript has every message exactly once, in order.
    let t = transcript(&bob, "alice");
    let expected: Vec<(String, String)> = (1..=4)
        .map(|i| ("received".to_owned(), format!("message {i}")))
        .collect();
    assert_eq!(t, expected);

    // Every message's receipt reached alice exactly once (the first one's survived the crash).
    let (_, delivered) = alice.recv();
    let mut delivered_sorted = delivered.clone();
    delivered_sorted.sort();
    let mut sent_sorted = sent.clone();
    sent_sorted.sort();
    assert_eq!(delivered_sorted, sent_sorted);
}

#[test]
fn an_auditor_opens_exactly_what_both_saw_and_detects_one_flipped_byte() {
    let relay = Relay::start();
    let (alice, bob) = pair(&relay);
    alice.send("bob", "Is my prescription ready?");
    let (bob_saw, _) = bob.recv();
    bob.send("alice", "Yes, pick it up after 3 pm.");
    let (alice_saw, _) = alice.recv();
    assert_eq!(texts(&bob_saw), ["Is my prescription ready?"]);
    assert_eq!(texts(&alice_saw), ["Yes, pick it up after 3 pm."]);
    // The end of alice's recv signed a checkpoint over her short transcript (2 records, far
    // below the interval of 100): nothing is left in an unsigned tail.
    let local = alice
        .run_ok(&["transcript", "verify", "bob", "--json"])
        .json();
    assert_eq!(local["report"]["unsigned_tail"], 0, "{local}");
    assert_eq!(local["report"]["records"], 2, "{local}");

    let work = TempDir::new().unwrap();
    let key = work.path().join("auditor.key");
    let key_s = key.to_str().unwrap();
    let keygen = alice.run_ok(&["auditor", "keygen", "--out", key_s]);
    let public = keygen.stdout.trim().to_owned();
    assert_eq!(public.len(), 64);
    assert!(hex_only(&public));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = alice
        .run(&["auditor", "keygen", "--out", key_s])
        .failed("keygen over an existing key");
    assert!(
        again.stderr.contains("refusing to overwrite"),
        "{}",
        again.stderr
    );

    let export = work.path().join("bob.hwx");
    let export_s = export.to_str().unwrap();
    alice.run_ok(&[
        "transcript",
        "export",
        "--to",
        &public,
        "--out",
        export_s,
        "bob",
    ]);
    assert!(export.exists());
    assert!(!work.path().join("bob.hwx.partial").exists());
    let refused = alice
        .run(&[
            "transcript",
            "export",
            "--to",
            &public,
            "--out",
            export_s,
            "bob",
        ])
        .failed("export over an existing file");
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);

    let opened = alice
        .run_ok(&["auditor", "open", export_s, "--key", key_s, "--json"])
        .json();
    assert_eq!(opened["ok"], true);
    let transcripts = opened["transcripts"].as_array().unwrap();
    assert_eq!(transcripts.len(), 1);
    let alice_fp = alice.run_ok(&["whoami", "--json"]).json()["fingerprint"].clone();
    let bob_fp = bob.run_ok(&["whoami", "--json"]).json()["fingerprint"].clone();
    assert_eq!(transcripts[0]["signer"], alice_fp);
    // The export is signed by alice's device; without --exporter the auditor is told who.
    assert_eq!(opened["exporter"], alice_fp);
    assert_eq!(opened["exporter_checked"], false);
    let alice_fp_s = alice_fp.as_str().unwrap().to_owned();
    let alice_fp_s = alice_fp_s.as_str();
    let bob_fp_s = bob_fp.as_str().unwrap().to_owned();
    let records: Vec<(String, String, Value)> = transcripts[0]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["direction"].as_str().unwrap().to_owned(),
                r["text"].as_str().unwrap().to_owned(),
                r["sender"].clone(),
            )
        })
        .collect();
    assert_eq!(
        records,
        [
            (
                "sent".to_owned(),
                "Is my prescription ready?".to_owned(),
                alice_fp
            ),
            (
                "received".to_owned(),
                "Yes, pick it up after 3 pm.".to_owned(),
                bob_fp
            ),
        ]
    );
    // The export was checkpointed first: nothing in an unsigned tail.
    assert_eq!(transcripts[0]["report"]["unsigned_tail"], 0);
    assert_eq!(transcripts[0]["report"]["records"], 2);
    let verified = alice.run_ok(&["auditor", "verify", export_s, "--key", key_s]);
    assert!(
        verified.stdout.contains("2 record(s)"),
        "{}",
        verified.stdout
    );
    assert!(
        verified.stdout.contains(alice_fp_s) && verified.stdout.contains("compare"),
        "{}",
        verified.stdout
    );
    let checked = alice.run_ok(&[
        "auditor",
        "verify",
        export_s,
        "--key",
        key_s,
        "--exporter",
        alice_fp_s,
    ]);
    assert!(
        checked.stdout.contains("expected device"),
        "{}",
        checked.stdout
    );
    // Expecting bob's device: refused, naming the identity that did sign.
    let wrong = alice
        .run(&[
            "auditor",
            "verify",
            export_s,
            "--key",
            key_s,
            "--exporter",
            &bob_fp_s,
        ])
        .failed("verify expecting another exporter");
    assert!(
        wrong.stderr.contains("not by the expected exporter") && wrong.stderr.contains(alice_fp_s),
        "{}",
        wrong.stderr
    );
    // A version-1 (unsigned) export is refused with a clear message.
    let mut v1 = std::fs::read(&export).unwrap();
    v1[0] = 1;
    let v1_path = work.path().join("v1.hwx");
    std::fs::write(&v1_path, &v1).unwrap();
    let old = alice
        .run(&[
            "auditor",
            "verify",
            v1_path.to_str().unwrap(),
            "--key",
            key_s,
        ])
        .failed("verify a version-1 export");
    assert!(old.stderr.contains("version-1"), "{}", old.stderr);

    // Another auditor's key opens nothing.
    let other = work.path().join("other.key");
    alice.run_ok(&["auditor", "keygen", "--out", other.to_str().unwrap()]);
    alice
        .run(&[
            "auditor",
            "verify",
            export_s,
            "--key",
            other.to_str().unwrap(),
        ])
        .failed("verify with another auditor's key");

    // One flipped byte in the middle is detected.
    let mut bytes = std::fs::read(&export).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let tampered = work.path().join("tampered.hwx");
    std::fs::write(&tampered, &bytes).unwrap();
    let failed = alice
        .run(&[
            "auditor",
            "verify",
            tampered.to_str().unwrap(),
            "--key",
            key_s,
        ])
        .failed("verify a tampered export");
    assert!(failed.stderr.starts_with("error: "), "{}", failed.stderr);
    assert!(failed.stderr.contains("tampered.hwx"), "{}", failed.stderr);
    let failed_json = alice
        .run(&[
            "auditor",
            "open",
            tampered.to_str().unwrap(),
            "--key",
            key_s,
            "--json",
        ])
        .failed("open a tampered export");
    assert!(
        !failed_json.stdout.contains("prescription"),
        "{}",
        failed_json.stdout
    );
}

fn hex_only(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_hexdigit())
}

#[test]
fn wrong_passphrase_and_unknown_contact_are_clear_errors() {
    let alice = User::new();
    let missing = alice.run(&["whoami"]).failed("whoami without a store");
    assert!(
        missing.stderr.contains("hushwire init"),
        "{}",
        missing.stderr
    );

    alice.run_ok(&["init"]);
    let again = alice.run(&["init"]).failed("a second init");
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);

    let mut wrong = alice.command(&["whoami"]);
    wrong.env("HUSHWIRE_PASSPHRASE", "not the passphrase");
    let out = run(wrong, &alice.home).failed("whoami with a wrong passphrase");
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    assert!(out.stderr.contains("wrong passphrase"), "{}", out.stderr);
    assert!(out.stdout.is_empty());

    // --passphrase-file takes precedence over the environment.
    let file = alice.home.parent().unwrap().join("pass.txt");
    std::fs::write(&file, format!("{PASSPHRASE}\n")).unwrap();
    let mut from_file = alice.command(&["whoami", "--passphrase-file", file.to_str().unwrap()]);
    from_file.env("HUSHWIRE_PASSPHRASE", "not the passphrase");
    run(from_file, &alice.home).ok("whoami with --passphrase-file");

    let unknown = alice
        .run(&["send", "carol", "hello"])
        .failed("send to an unknown contact");
    assert!(unknown.stderr.starts_with("error: "), "{}", unknown.stderr);
    assert!(unknown.stderr.contains("\"carol\""), "{}", unknown.stderr);

    let bad = alice
        .run(&["contact", "add", "dave", "not-an-address"])
        .failed("a bad address");
    assert!(
        bad.stderr.contains("not a Hushwire address"),
        "{}",
        bad.stderr
    );

    let unregistered = alice.run(&["recv"]).failed("recv before register");
    assert!(
        unregistered.stderr.contains("register"),
        "{}",
        unregistered.stderr
    );
}

#[test]
fn a_message_queued_while_the_relay_is_down_goes_out_on_the_next_connection() {
    let mut relay = Relay::start();
    let (alice, bob) = pair(&relay);
    alice.send("bob", "before the outage");

    relay.kill();
    let queued = alice.run(&["send", "bob", "during the outage", "--wait", "3"]);
    assert_eq!(queued.status.code(), Some(3), "{}", queued.stderr);
    assert!(queued.stderr.contains("queued"), "{}", queued.stderr);
    assert!(queued.stderr.contains("not reachable"), "{}", queued.stderr);

    relay.restart();
    // Any command that connects sends the outbox; recv does.
    alice.recv();
    let (got, _) = bob.recv();
    assert_eq!(texts(&got), ["before the outage", "during the outage"]);

    // A contact whose device the relay does not know: held, reported at once, not an error.
    let ghost = format!("{}:1", "ab".repeat(32));
    alice.run_ok(&["contact", "add", "ghost", &ghost]);
    let started = Instant::now();
    let held = alice.run(&["send", "ghost", "anyone there?", "--wait", "20"]);
    assert_eq!(held.status.code(), Some(3), "{}", held.stderr);
    assert!(held.stderr.contains("ghost"), "{}", held.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a held message should be reported without waiting out --wait"
    );
    // The held message holds nothing else up: sending to bob and receiving still work.
    let started = Instant::now();
    alice.send("bob", "after the ghost");
    assert!(started.elapsed() < Duration::from_secs(15));
    let (got, _) = bob.recv();
    assert_eq!(texts(&got), ["after the ghost"]);
    let recv = alice.run_ok(&["recv", "--json", "--wait", "3"]);
    assert!(recv.stderr.contains("ghost"), "{}", recv.stderr);
    assert!(
        recv.json_lines()
            .iter()
            .any(|e| e["event"] == "send_held" && e["contact"] == "ghost"),
        "{}",
        recv.stdout
    );
}

/// Another relay on the registered relay's address, with another key: refused without an
/// answer, reported as a failure (not as "queued"), and only `--accept-relay-key` with the new
/// key's fingerprint replaces the pin (`docs/client.md` §5.16).
#[test]
fn a_relay_with_another_key_is_refused_until_its_fingerprint_is_accepted() {
    let mut relay = Relay::start();
    let (alice, bob) = pair(&relay);
    let pinned = alice.run_ok(&["status", "--json"]).stdout;
    relay.kill();
    let other_dir = TempDir::new().unwrap();
    let listen = format!("127.0.0.1:{}", relay.port);
    let (child, url, port) = Relay::spawn(other_dir.path(), &listen, &[]);
    let _impostor = Relay {
        child,
        url: url.clone(),
        port,
        dir: other_dir,
    };

    let refused = alice.run(&["send", "bob", "to the impostor?", "--wait", "5"]);
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("the relay's key changed"),
        "{}",
        refused.stderr
    );
    let presented = refused
        .stderr
        .split("presents ")
        .nth(1)
        .and_then(|rest| rest.get(..64))
        .expect("the error names the presented key")
        .to_owned();
    assert!(hex_only(&presented), "{presented}");

    // Plain `register` does not accept the new key, nor does another fingerprint.
    let again = alice.run(&["register", &url]);
    assert!(!again.status.success(), "{}", again.stdout);
    assert!(
        again.stderr.contains("the relay's key changed"),
        "{}",
        again.stderr
    );
    let wrong = "0".repeat(64);
    let wrong_out = alice.run(&["register", &url, "--accept-relay-key", &wrong]);
    assert!(!wrong_out.status.success(), "{}", wrong_out.stdout);
    assert_eq!(alice.run_ok(&["status", "--json"]).stdout, pinned);

    // The fingerprint the operator confirms replaces the pin, and says so.
    let accepted = alice.run_ok(&["register", &url, "--accept-relay-key", &presented]);
    assert!(
        accepted.stdout.contains("Replaced the pinned relay key"),
        "{}",
        accepted.stdout
    );
    assert!(
        alice
            .run_ok(&["status", "--json"])
            .stdout
            .contains(&presented)
    );
    drop(bob);
}

#[test]
fn a_wss_relay_with_a_private_ca_is_trusted_with_ca_cert() {
    let work = TempDir::new().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert_path, key_path) = (work.path().join("ca.pem"), work.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let relay = Relay::start_tls(&cert_path, &key_path);
    let ca = cert_path.to_str().unwrap();

    let alice = User::new();
    let bob = User::new();
    alice.run_ok(&["init"]);
    bob.run_ok(&["init"]);
    // Without the clinic's CA the relay's certificate is not trusted.
    let untrusted = alice
        .run(&["register", &relay.url])
        .failed("register with an untrusted certificate");
    assert!(untrusted.stderr.contains("TLS"), "{}", untrusted.stderr);

    alice.run_ok(&["--ca-cert", ca, "register", &relay.url]);
    bob.run_ok(&["register", &relay.url, "--ca-cert", ca]);
    let b = bob.run_ok(&["whoami", "--json"]).json()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.run_ok(&["contact", "add", "bob", &b]);
    alice.run_ok(&["--ca-cert", ca, "send", "bob", "over TLS"]);
    let got = bob.run_ok(&["--ca-cert", ca, "recv", "--json"]);
    let events = got.json_lines();
    let (messages, _) = split_events(&events);
    assert_eq!(texts(&messages), ["over TLS"]);
    // Bob had not added alice: she shows up as a new, unverified contact.
    let name = format!("unknown-{}", &alice_fingerprint(&alice)[..8]);
    assert_eq!(messages[0].0, name);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "new_contact" && e["contact"] == name.as_str()),
        "{events:?}"
    );

    let not_pem = work.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let bad = alice
        .run(&["--ca-cert", not_pem.to_str().unwrap(), "whoami"])
        .failed("a --ca-cert without a certificate");
    assert!(bad.stderr.contains("no PEM certificate"), "{}", bad.stderr);
}

fn alice_fingerprint(user: &User) -> String {
    user.run_ok(&["whoami", "--json"]).json()["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Edits a closed store with SQL, as someone holding the file (not the passphrase) could.
fn tamper(home: &Path, sql: &str) {
    let db = home.join("client.db");
    let status = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()")
        .arg(&db)
        .arg(sql)
        .status()
        .expect("python3 runs (it edits the store for this test)");
    assert!(status.success(), "the edit {sql:?} failed");
}

#[test]
fn transcript_and_audit_verification_fail_after_the_store_is_altered() {
    let relay = Relay::start();
    let (alice, bob) = pair(&relay);
    for i in 1..=3 {
        alice.send("bob", &format!("record {i}"));
    }
    assert_eq!(bob.recv().0.len(), 3);

    // Untouched: both checks pass.
    let report = bob
        .run_ok(&["transcript", "verify", "alice", "--json"])
        .json();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["report"]["records"], 3, "{report}");
    bob.run_ok(&["audit", "verify"]);

    // The second record replaced by a copy of the first (each is validly sealed on its own).
    tamper(
        &bob.home,
        "UPDATE transcript_records SET record = \
         (SELECT record FROM transcript_records WHERE sequence = 0) WHERE sequence = 1",
    );
    let transcript = bob
        .run(&["transcript", "verify", "alice"])
        .failed("transcript verify after the edit");
    assert!(
        transcript.stderr.contains("record 0 appears twice"),
        "the fault is named and located:\n{}\n{}",
        transcript.stdout,
        transcript.stderr
    );
    let audit = bob
        .run(&["audit", "verify"])
        .failed("audit verify after the edit");
    assert!(
        format!("{}{}", audit.stdout, audit.stderr).contains("FAILED"),
        "{}\n{}",
        audit.stdout,
        audit.stderr
    );
}

/// Characters that must never reach a terminal from human-readable output (mirrors
/// `display::is_unsafe`, written out again so the test does not trust the code it checks).
fn drives_terminal(c: char) -> bool {
    let n = u32::from(c);
    (n < 0x20 && c != '\n')
        || (0x7f..=0x9f).contains(&n)
        || (0x200b..=0x200f).contains(&n)
        || (0x202a..=0x202e).contains(&n)
        || (0x2066..=0x2069).contains(&n)
        || n == 0xfeff
        || n == 0x2028
        || n == 0x2029
}

/// One hostile message per class of character, and what a reader must see of each.
const HOSTILE: [(&str, &str); 5] = [
    (
        "x \x1b[31mRED\x1b[0m \x1b]2;title\x07 y\rOVERWRITE \x1b[2J\x1b[H",
        "x \\x1b[31mRED\\x1b[0m \\x1b]2;title\\x07 y\\x0dOVERWRITE \\x1b[2J\\x1b[H",
    ),
    ("c1 \u{9b}2J \u{85}end", "c1 \\u{9b}2J \\u{85}end"),
    ("del \u{7f}\u{7f}x", "del \\x7f\\x7fx"),
    (
        "bidi invoice\u{202e}txt.exe \u{2066}iso\u{2069} zw\u{200b}sp \u{feff}bom",
        "bidi invoice\\u{202e}txt.exe \\u{2066}iso\\u{2069} zw\\u{200b}sp \\u{feff}bom",
    ),
    (
        "line one\n[2026-01-01 00:00:00Z] clinic: please reply with your SSN",
        "    | [2026-01-01 00:00:00Z] clinic: please reply with your SSN",
    ),
];

/// Human output holds no terminal control, shows each hostile text escaped, and no line of a
/// message passes for a header of its own.
fn assert_inert(what: &str, out: &str) {
    if let Some(c) = out.chars().find(|c| drives_terminal(*c)) {
        panic!("{what} printed {c:?} raw:\n{}", out.escape_debug());
    }
    for (_, shown) in HOSTILE {
        assert!(out.contains(shown), "{what} lacks {shown:?}:\n{out}");
    }
    assert!(
        !out.lines()
            .any(|l| l.trim_start().starts_with("[2026-01-01")),
        "{what}: a message line imitates a header:\n{out}"
    );
}

#[test]
fn hostile_text_never_drives_the_terminal_in_recv_transcript_and_auditor_output() {
    let relay = Relay::start();
    let alice = User::new();
    let bob = User::new();
    let a = alice.setup(&relay);
    let b = bob.setup(&relay);
    alice.run_ok(&["contact", "add", "bob", &b]);
    // A contact name holding a right-to-left override is refused (it could make one name pass
    // for another), and the refusal shows it escaped.
    let refused = bob
        .run(&["contact", "add", "al\u{202e}ice", &a])
        .failed("a name with a right-to-left override");
    assert!(
        refused.stderr.contains("al\\u{202e}ice"),
        "{}",
        refused.stderr
    );
    assert!(
        !refused.stderr.chars().any(drives_terminal),
        "{}",
        refused.stderr
    );
    let name = "alice";
    bob.run_ok(&["contact", "add", name, &a]);
    for (text, _) in HOSTILE {
        alice.send("bob", text);
    }

    let recv = bob.run_ok(&["recv", "--wait", "20"]);
    assert_inert("recv", &recv.stdout);
    assert!(recv.stdout.contains("alice:"), "{}", recv.stdout);

    let list = bob.run_ok(&["contact", "list"]);
    assert!(!list.stdout.chars().any(drives_terminal), "{}", list.stdout);
    assert!(list.stdout.contains("alice"), "{}", list.stdout);

    let open = bob.run_ok(&["transcript", "open", name]);
    assert_inert("transcript open", &open.stdout);

    // --json keeps the exact text.
    let t = transcript(&bob, name);
    let exact: Vec<&str> = t.iter().map(|(_, text)| text.as_str()).collect();
    assert_eq!(exact, HOSTILE.map(|(text, _)| text));

    // The auditor sees the same records, as safely.
    let work = TempDir::new().unwrap();
    let key = work.path().join("auditor.key");
    let key_s = key.to_str().unwrap();
    let public = bob.run_ok(&["auditor", "keygen", "--out", key_s]).stdout;
    let export = work.path().join("all.hwx");
    let export_s = export.to_str().unwrap();
    bob.run_ok(&[
        "transcript",
        "export",
        "--to",
        public.trim(),
        "--out",
        export_s,
    ]);
    let audited = bob.run_ok(&["auditor", "open", export_s, "--key", key_s]);
    assert_inert("auditor open", &audited.stdout);
}

#[test]
fn a_second_command_on_a_store_in_use_is_refused_with_the_holder() {
    let relay = Relay::start();
    let (alice, _bob) = pair(&relay);
    // A chat holds alice's store while its input stays open.
    let mut chat = alice
        .command(&["chat", "bob"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = alice.home.join("client.db.lock");
    let started = Instant::now();
    let expected = format!("{} hushwire chat\n", chat.id());
    while std::fs::read_to_string(&lock).unwrap_or_default() != expected {
        assert!(
            started.elapsed() < PROCESS_TIMEOUT,
            "chat never took the lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let busy = alice
        .run(&["whoami"])
        .failed("whoami while chat holds the store");
    assert!(
        busy.stderr
            .contains(&format!("in use by process {} (hushwire chat)", chat.id())),
        "{}",
        busy.stderr
    );
    assert!(busy.stdout.is_empty(), "{}", busy.stdout);

    // End of input ends the chat, which frees the store.
    drop(chat.stdin.take());
    assert!(chat.wait().unwrap().success());
    alice.run_ok(&["whoami"]);
}

#[test]
fn chat_refuses_unknown_commands_locally_and_sends_long_lines_whole() {
    let relay = Relay::start();
    let (alice, bob) = pair(&relay);
    let long = format!("long:{}:END", "x".repeat(4991));
    assert_eq!(long.len(), 5000);
    let mut chat = alice
        .command(&["chat", "bob"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = chat.stdin.take().unwrap();
        write!(
            input,
            "/help\n/qiut\n/etc/passwd is mine\nhello bob\n//shrug\n{long}\n/quit\n"
        )
        .unwrap();
    }
    let out = chat.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("/lock"), "/help lists /lock:\n{stdout}");
    assert!(
        stdout.contains("unknown command /qiut: nothing was sent"),
        "{stdout}"
    );
    assert!(stdout.contains("unknown command /etc/passwd"), "{stdout}");
    assert!(stdout.contains("you: hello bob"), "{stdout}");

    let (got, _) = bob.recv();
    assert_eq!(texts(&got), ["hello bob", "/shrug", long.as_str()]);
}

#[test]
fn chat_lock_after_has_a_maximum_of_an_hour() {
    let alice = User::new();
    let out = alice
        .run(&["chat", "bob", "--lock-after", "3601"])
        .failed("--lock-after 3601");
    assert!(out.stderr.contains("3601"), "{}", out.stderr);
    assert!(out.stderr.contains("1..=3600"), "{}", out.stderr);
}

#[test]
fn a_contact_is_never_renamed_silently_and_can_be_renamed_and_removed() {
    let alice = User::new();
    alice.run_ok(&["init"]);
    let bob = format!("{}:1", "ab".repeat(32));
    alice.run_ok(&["contact", "add", "bob", &bob]);

    let refused = alice
        .run(&["contact", "add", "robert", &bob])
        .failed("adding bob's address as robert");
    assert!(
        refused
            .stderr
            .contains("hushwire contact rename bob robert"),
        "{}",
        refused.stderr
    );
    let list = alice.run_ok(&["contact", "list", "--json"]).json();
    assert_eq!(list[0]["name"], "bob");

    alice.run_ok(&["contact", "rename", "bob", "robert"]);
    let list = alice.run_ok(&["contact", "list", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "robert");
    assert_eq!(list[0]["address"], bob.as_str());

    let removed = alice.run_ok(&["contact", "remove", "robert"]);
    assert!(
        removed.stdout.contains("Removed robert"),
        "{}",
        removed.stdout
    );
    let list = alice.run_ok(&["contact", "list", "--json"]).json();
    assert!(list.as_array().unwrap().is_empty(), "{list}");
    alice
        .run(&["contact", "remove", "robert"])
        .failed("removing a contact twice");
    // The address can be added again.
    alice.run_ok(&["contact", "add", "bob", &bob]);
    let list = alice.run_ok(&["contact", "list", "--json"]).json();
    assert_eq!(list[0]["name"], "bob");
}

/// A removed contact that writes again is shown with who it is (as a stranger would be), never
/// under an empty name; its messages heal and arrive (newcomer review, finding 1).
#[test]
fn a_removed_contact_that_writes_again_comes_back_named_and_its_messages_arrive() {
    let relay = Relay::start();
    let (alice, bob) = pair(&relay);
    alice.send("bob", "hello");
    bob.recv();
    bob.run_ok(&["contact", "remove", "alice"]);
    alice.run_ok(&["send", "bob", "after the removal", "--json"]);
    // Bob's sessions went with the contact: the message cannot be read, Bob asks for a new
    // session, Alice sends again, Bob reads it.
    let first = bob.run_ok(&["recv", "--json", "--wait", "5"]);
    let named: Vec<Value> = first
        .json_lines()
        .into_iter()
        .filter(|e| e["event"] == "new_contact")
        .collect();
    assert_eq!(named.len(), 1, "{}", first.stdout);
    let name = named[0]["contact"].as_str().unwrap().to_owned();
    assert!(name.starts_with("unknown-"), "{name}");
    let resent = alice.run_ok(&["recv", "--json", "--wait", "5"]);
    assert!(
        resent
            .json_lines()
            .iter()
            .any(|e| e["event"] == "session_reset" && e["resent"] == 1),
        "{}",
        resent.stdout
    );
    let (got, _) = bob.recv();
    assert_eq!(texts(&got), ["after the removal"]);
    assert!(
        got.iter().all(|(contact, _, _)| contact == &name),
        "{got:?}"
    );
    let list = bob.run_ok(&["contact", "list", "--json"]).json();
    assert_eq!(list[0]["name"], name.as_str());
}

#[test]
fn auditor_keygen_defaults_to_auditor_key_and_pubkey_prints_it_again() {
    let auditor = User::new();
    let work = TempDir::new().unwrap();
    let mut keygen = auditor.command(&["auditor", "keygen"]);
    keygen.current_dir(work.path());
    let out = run(keygen, &auditor.home).ok("auditor keygen without --out");
    let public = out.stdout.trim().to_owned();
    assert_eq!(public.len(), 64);
    let key = work.path().join("auditor.key");
    let secret = std::fs::read_to_string(&key).unwrap();
    assert_eq!(secret.trim().len(), 64);
    assert!(hex_only(secret.trim()));
    assert!(out.stderr.contains("auditor.key"), "{}", out.stderr);

    // The public key again, from the file (default name, or --key), as text or JSON.
    let mut pubkey = auditor.command(&["auditor", "pubkey"]);
    pubkey.current_dir(work.path());
    assert_eq!(
        run(pubkey, &auditor.home).ok("pubkey").stdout.trim(),
        public
    );
    let key_s = key.to_str().unwrap();
    let json = auditor
        .run_ok(&["auditor", "pubkey", "--key", key_s, "--json"])
        .json();
    assert_eq!(json["public"], public.as_str());

    // A second keygen never overwrites the key, and says how to see its public key.
    let mut again = auditor.command(&["auditor", "keygen"]);
    again.current_dir(work.path());
    let again = run(again, &auditor.home).failed("keygen over auditor.key");
    assert!(again.stderr.contains("auditor pubkey"), "{}", again.stderr);
    assert_eq!(std::fs::read_to_string(&key).unwrap(), secret);
    // With --out given, the refusal does not tell the user to pass --out.
    let explicit = auditor
        .run(&["auditor", "keygen", "--out", key_s])
        .failed("keygen --out over an existing key");
    assert!(
        !explicit.stderr.contains("pass --out"),
        "{}",
        explicit.stderr
    );
    assert!(
        explicit.stderr.contains("another --out"),
        "{}",
        explicit.stderr
    );

    // Upper-case digits read the same key; a truncated file is refused clearly.
    let upper = work.path().join("upper.key");
    std::fs::write(&upper, secret.to_uppercase()).unwrap();
    let same = auditor.run_ok(&["auditor", "pubkey", "--key", upper.to_str().unwrap()]);
    assert_eq!(same.stdout.trim(), public);
    let short = work.path().join("short.key");
    std::fs::write(&short, &secret.trim()[..63]).unwrap();
    let bad = auditor
        .run(&["auditor", "pubkey", "--key", short.to_str().unwrap()])
        .failed("a 63-digit key file");
    assert!(
        bad.stderr.contains("not an auditor key file"),
        "{}",
        bad.stderr
    );
}

#[test]
fn recv_killed_right_after_printing_never_shows_that_message_again() {
    let relay = Relay::start();
    let (alice, bob) = pair(&relay);
    alice.send("bob", "first, shown once");
    alice.send("bob", "second");

    // The process dies right after printing its first message, as kill -9 timed to the print.
    let mut faulty = bob.command(&["recv", "--wait", "20"]);
    faulty.env("HUSHWIRE_CLIENT_FAULT", "recv-after-show");
    let crashed = run(faulty, &bob.home).failed("recv with the recv-after-show fault");
    assert!(
        crashed.stdout.contains("alice: first, shown once"),
        "{}",
        crashed.stdout
    );
    assert!(!crashed.stdout.contains("second"), "{}", crashed.stdout);

    let (again, _) = bob.recv();
    assert_eq!(
        texts(&again),
        ["second"],
        "the first message was shown twice"
    );
    // Both are in the transcript, once each.
    let t = transcript(&bob, "alice");
    assert_eq!(
        t.iter().map(|(_, text)| text.as_str()).collect::<Vec<_>>(),
        ["first, shown once", "second"]
    );
}

fn copy_home(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Issue 10, case 3, as a person would do it: copy Alice's home, send m1, put the copy back,
/// send m2 — and the same with `hushwire backup` and `restore`. Each time Bob reads both
/// messages (m2 is not dropped as a duplicate, and no key is reused: Bob's `recv` would report
/// a `key_reuse_detected` event, which `split_events` refuses).
#[test]
fn a_home_restored_from_a_copy_never_sends_under_a_used_key() {
    let relay = Relay::start();
    let (alice, bob) = pair(&relay);
    alice.send("bob", "hello");
    assert_eq!(texts(&bob.recv().0), ["hello"]);

    let copy = alice._dir.path().join("home-copy");
    copy_home(&alice.home, &copy);
    alice.send("bob", "m1");
    std::fs::remove_dir_all(&alice.home).unwrap();
    copy_home(&copy, &alice.home);
    let out = alice.run_ok(&["send", "bob", "m2"]);
    assert!(
        out.stdout.contains("older copy") || out.stderr.contains("older copy"),
        "the rollback is shown: {} {}",
        out.stdout,
        out.stderr
    );
    assert_eq!(texts(&bob.recv().0), ["m1", "m2"]);

    let backup = alice._dir.path().join("alice-backup.db");
    let backup = backup.to_str().unwrap();
    alice.run_ok(&["backup", backup]);
    alice.send("bob", "m3");
    alice.run_ok(&["restore", backup]);
    alice.send("bob", "m4");
    assert_eq!(texts(&bob.recv().0), ["m3", "m4"]);
    let status = alice.run_ok(&["status", "bob", "--json"]).json_lines();
    assert!(!status.is_empty());
}

#[test]
fn a_cancelled_message_is_marked_never_sent_in_transcript_open() {
    let mut relay = Relay::start();
    let (alice, _bob) = pair(&relay);
    relay.kill();
    let queued = alice.run(&["send", "bob", "take this back", "--wait", "1"]);
    assert_eq!(queued.status.code(), Some(3), "{}", queued.stderr);
    let list = alice.run_ok(&["outbox", "list", "--json"]).json_lines();
    let id = list
        .iter()
        .find_map(|v| v["id"].as_str())
        .unwrap()
        .to_owned();
    alice.run_ok(&["outbox", "cancel", &id]);

    let t = alice
        .run_ok(&["transcript", "open", "bob", "--json"])
        .json();
    let records = t["records"].as_array().unwrap();
    let rec = records
        .iter()
        .find(|r| r["text"] == "take this back")
        .unwrap();
    assert_eq!(rec["cancelled"], true, "{rec}");

    let human = alice.run_ok(&["transcript", "open", "bob"]).stdout;
    let line = human
        .lines()
        .find(|l| l.contains("take this back"))
        .unwrap();
    assert!(line.contains("(cancelled, never sent)"), "{human}");
}

#[test]
fn export_force_never_replaces_the_store_a_directory_or_a_device() {
    let relay = Relay::start();
    let (alice, _bob) = pair(&relay);
    let work = TempDir::new().unwrap();
    let key = work.path().join("a.key");
    let public = alice
        .run_ok(&["auditor", "keygen", "--out", key.to_str().unwrap()])
        .stdout
        .trim()
        .to_owned();
    let export = |out: &Path| {
        alice.run(&[
            "transcript",
            "export",
            "--to",
            &public,
            "--out",
            out.to_str().unwrap(),
            "--force",
        ])
    };
    let store = alice.home.join("client.db");
    let before = std::fs::read(&store).unwrap();
    for name in [
        "client.db",
        "client.db-wal",
        "client.db-shm",
        "client.db.lock",
    ] {
        let out = export(&alice.home.join(name)).failed(name);
        assert!(out.stderr.contains("store"), "{}", out.stderr);
    }
    // Through a `..` too.
    let sneaky = alice.home.join("..").join("home").join("client.db");
    export(&sneaky).failed("store through ..");
    assert_eq!(std::fs::read(&store).unwrap(), before);

    // A directory, and a symbolic link (as /dev/stdout is): refused, nothing left behind.
    let dir = work.path().join("dir");
    std::fs::create_dir(&dir).unwrap();
    let out = export(&dir).failed("export over a directory");
    assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
    assert!(!work.path().join("dir.partial").exists());
    #[cfg(unix)]
    {
        let link = work.path().join("link");
        std::os::unix::fs::symlink(&key, &link).unwrap();
        export(&link).failed("export over a symbolic link");
        assert!(!work.path().join("link.partial").exists());
    }
    // An ordinary earlier export is still replaced with --force.
    let file = work.path().join("t.hwx");
    std::fs::write(&file, b"old").unwrap();
    export(&file).ok("export --force over an old export");
    assert!(!work.path().join("t.hwx.partial").exists());
}

// ----- clinics ------------------------------------------------------------------------------

/// A loopback port nobody listens on right now (for a relay whose URL must be known before it
/// starts: the clinic link names it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Relay {
    /// A relay serving the clinic of `link` on `port`.
    fn start_clinic(port: u16, link: &str) -> Self {
        let dir = TempDir::new().unwrap();
        let args = ["--clinic-link".as_ref(), std::ffi::OsStr::new(link)];
        let (child, url, port) = Self::spawn(dir.path(), &format!("127.0.0.1:{port}"), &args);
        Self {
            child,
            url,
            port,
            dir,
        }
    }
}

/// `hushwire org --org-dir DIR ARGS…` as `user`, the organization key's passphrase in its own
/// variable (and the store's variable removed, so nothing falls back to it).
fn org_command(user: &User, dir: &Path, args: &[&str]) -> Command {
    let mut all = vec!["org", "--org-dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut c = user.command(&all);
    c.env_remove("HUSHWIRE_PASSPHRASE")
        .env("HUSHWIRE_ORG_PASSPHRASE", ORG_PASSPHRASE)
        .env("HUSHWIRE_ARCHIVE_PASSPHRASE", ARCHIVE_PASSPHRASE);
    c
}

/// The archive key's passphrase in the tests: neither the organization key's nor the stores'.
const ARCHIVE_PASSPHRASE: &str = "archive key passphrase for tests";

/// Runs `hushwire org --org-dir DIR ARGS…` as `user`.
fn org(user: &User, dir: &Path, args: &[&str]) -> Out {
    run(org_command(user, dir, args), &user.home)
}

/// The message id `send` prints ("… (message ID)") of a conversation message.
fn sent_message_id(stdout: &str) -> String {
    stdout
        .split("(message ")
        .nth(1)
        .and_then(|rest| rest.get(..32))
        .unwrap()
        .to_owned()
}

/// The organization key's passphrase in the tests: not the stores'.
const ORG_PASSPHRASE: &str = "organization key passphrase for tests";

/// The org directory's files, to show that a failed command changed nothing.
fn org_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn a_clinic_walkthrough_verified_agent_revocation_and_wipe() {
    let (admin_machine, org_dir, port, url, link) = lakeside_org();
    assert!(link.starts_with("hushwire-clinic:"), "{link}");
    let with_qr = org(&admin_machine, &org_dir, &["link"]).ok("org link with QR");
    assert!(
        with_qr.stdout.lines().count() > 10,
        "a QR code follows the link"
    );
    let relay = Relay::start_clinic(port, &link);
    assert_eq!(relay.url, url);

    // The agent asks for a certificate, gets one, registers with it and pins the clinic.
    let agent = certified_staff(
        &admin_machine,
        &org_dir,
        &url,
        &link,
        "Dr. Ada Okafor",
        "agent",
    );
    let agent_address = agent
        .run_ok(&["whoami", "--address"])
        .stdout
        .trim()
        .to_owned();
    // An administrator's device, certified as admin.
    let admin = certified_staff(&admin_machine, &org_dir, &url, &link, "Sam Admin", "admin");
    let shown = org(&admin_machine, &org_dir, &["show", "--json"])
        .ok("org show")
        .json();
    assert_eq!(shown["certificates"].as_array().unwrap().len(), 2);

    // A patient adds the clinic's link: pinned and registered at its relay.
    let patient = User::new();
    patient.run_ok(&["init"]);
    let added = patient.run_ok(&["clinic", "add", &link]);
    assert!(
        added.stdout.contains("Pinned the clinic Lakeside Clinic"),
        "{}",
        added.stdout
    );
    assert!(added.stdout.contains("Registered"), "{}", added.stdout);
    let patient_address = patient
        .run_ok(&["whoami", "--address"])
        .stdout
        .trim()
        .to_owned();
    patient.run_ok(&["contact", "add", "ada", &agent_address]);
    patient.run_ok(&["send", "ada", "Is my prescription ready?"]);
    let list = patient.run_ok(&["contact", "list"]);
    assert!(
        list.stdout
            .contains("Dr. Ada Okafor \u{2014} verified agent of Lakeside Clinic"),
        "{}",
        list.stdout
    );
    let json = patient.run_ok(&["contact", "list", "--json"]).json();
    assert_eq!(json[0]["agent"]["status"], "verified");
    assert_eq!(json[0]["agent"]["clinic"], "Lakeside Clinic");

    // The agent answers; the patient's recv shows who it is from.
    let got = agent
        .run_ok(&["recv", "--json", "--wait", "20"])
        .json_lines();
    let from = got
        .iter()
        .find(|e| e["event"] == "message")
        .expect("the patient's message")["contact"]
        .as_str()
        .unwrap()
        .to_owned();
    agent.run_ok(&["send", &from, "Yes, since this morning."]);
    let recv = patient.run_ok(&["recv", "--wait", "20"]);
    assert!(
        recv.stdout
            .contains("ada [Dr. Ada Okafor \u{2014} verified agent of Lakeside Clinic]:"),
        "{}",
        recv.stdout
    );

    // The administrator revokes the agent; an admin device publishes the list.
    org(&admin_machine, &org_dir, &["revoke", "1", "--out"]).failed("revoke without a file");
    let revoked = org(&admin_machine, &org_dir, &["revoke", "1"]).ok("org revoke");
    let list_file = org_dir.join("revocations-1.txt");
    assert!(
        revoked.stdout.contains(list_file.to_str().unwrap()),
        "{}",
        revoked.stdout
    );
    agent
        .run(&["org", "publish-revocations", list_file.to_str().unwrap()])
        .failed("an agent publishing");
    admin.run_ok(&["org", "publish-revocations", list_file.to_str().unwrap()]);
    let told = patient.run_ok(&["recv", "--wait", "20"]);
    let warning = "ada is NOT a verified agent: the clinic revoked certificate #1";
    assert_eq!(
        told.stdout.matches(warning).count() + told.stderr.matches(warning).count(),
        1,
        "the revocation is announced once:\n{}\n{}",
        told.stdout,
        told.stderr
    );
    let refused = patient
        .run(&["send", "ada", "Hello?"])
        .failed("send to a revoked agent");
    assert!(
        refused.stderr.contains("the clinic revoked certificate #1"),
        "{}",
        refused.stderr
    );
    let list = patient.run_ok(&["contact", "list"]);
    assert!(
        list.stdout
            .contains("NOT a verified agent: the clinic revoked certificate #1"),
        "{}",
        list.stdout
    );
    let shown = patient.run_ok(&["clinic", "show", "--json"]).json();
    assert_eq!(shown["revocation_sequence"], 1);

    // The revoked agent's own device is refused at once, with what to do (not after a timeout).
    let refused = agent
        .run(&["recv", "--wait", "20"])
        .failed("a revoked agent's device");
    assert!(
        refused.stderr.contains("the clinic revoked it")
            && refused.stderr.contains("--certificate NEW"),
        "{}",
        refused.stderr
    );
    // A patient's device is the patient's: the clinic cannot wipe it.
    let refused = admin
        .run(&["wipe", &patient_address])
        .failed("wiping a patient's device");
    assert!(
        refused.stderr.contains("not a staff device of the clinic"),
        "{}",
        refused.stderr
    );
    // The administrator wipes the (revoked) agent's device: its next connection erases its
    // store.
    admin.run_ok(&["wipe", &agent_address]);
    let wiped = agent.run(&["recv", "--wait", "20"]);
    assert_eq!(wiped.status.code(), Some(5), "{}", wiped.stderr);
    assert!(
        wiped
            .stderr
            .contains("This device was wiped by Sam Admin, admin of Lakeside Clinic"),
        "{}",
        wiped.stderr
    );
    assert!(!agent.home.join("client.db").exists());
    assert!(!agent.home.join("client.db-wal").exists());
    let gone = agent.run(&["contact", "list"]).failed("a wiped store");
    assert!(gone.stderr.contains("no Hushwire store"), "{}", gone.stderr);
    // The patient's store is untouched.
    patient.run_ok(&["contact", "list"]);
}

#[test]
fn org_commands_with_bad_input_change_nothing() {
    let admin = User::new();
    let dir = admin.home.parent().unwrap().join("org");
    let missing = org(&admin, &dir, &["show"]).failed("org show without an org");
    assert!(
        missing.stderr.contains("no organization in"),
        "{}",
        missing.stderr
    );
    let bad = org(
        &admin,
        &dir,
        &[
            "init",
            "--name",
            "Bad\u{202e}Name",
            "--relay",
            "ws://127.0.0.1:1",
        ],
    )
    .failed("a name with a direction override");
    assert!(
        bad.stderr.contains("not a usable clinic name"),
        "{}",
        bad.stderr
    );
    let bad = org(
        &admin,
        &dir,
        &["init", "--name", "Lakeside", "--relay", "http://x"],
    )
    .failed("a relay that is no WebSocket URL");
    assert!(
        bad.stderr.contains("not a usable relay URL"),
        "{}",
        bad.stderr
    );
    assert!(!dir.exists(), "nothing created");
    org(
        &admin,
        &dir,
        &["init", "--name", "Lakeside", "--relay", "ws://127.0.0.1:1"],
    )
    .ok("org init");
    let before = org_files(&dir);
    assert_eq!(before.len(), 3, "org.key, org.json and the empty org.lock");

    let again = org(
        &admin,
        &dir,
        &["init", "--name", "Other", "--relay", "ws://127.0.0.1:1"],
    )
    .failed("a second init");
    assert!(again.stderr.contains("never replaced"), "{}", again.stderr);
    let bad_request = org(
        &admin,
        &dir,
        &[
            "certify",
            "not-a-request",
            "--name",
            "Ada",
            "--roles",
            "agent",
        ],
    )
    .failed("a bad request");
    assert!(
        bad_request.stderr.contains("certificate request"),
        "{}",
        bad_request.stderr
    );
    let agent = User::new();
    agent.run_ok(&["init"]);
    let request = agent
        .run_ok(&["certificate", "request"])
        .stdout
        .trim()
        .to_owned();
    let bad_roles = org(
        &admin,
        &dir,
        &["certify", &request, "--name", "Ada", "--roles", "boss"],
    )
    .failed("an unknown role");
    assert!(
        bad_roles.stderr.contains("unknown role"),
        "{}",
        bad_roles.stderr
    );
    let bad_name = org(
        &admin,
        &dir,
        &["certify", &request, "--name", " Ada", "--roles", "agent"],
    )
    .failed("a name with a leading space");
    assert!(
        bad_name.stderr.contains("not a usable agent name"),
        "{}",
        bad_name.stderr
    );
    let mut wrong = org_command(
        &admin,
        &dir,
        &["certify", &request, "--name", "Ada", "--roles", "agent"],
    );
    wrong.env("HUSHWIRE_ORG_PASSPHRASE", "not the passphrase at all");
    let wrong = run(wrong, &admin.home).failed("a wrong passphrase");
    assert!(
        wrong.stderr.contains("wrong passphrase"),
        "{}",
        wrong.stderr
    );
    let unknown = org(&admin, &dir, &["revoke", "42"]).failed("an unknown serial");
    assert!(
        unknown.stderr.contains("no certificate with serial 42"),
        "{}",
        unknown.stderr
    );
    assert_eq!(
        org_files(&dir),
        before,
        "no failed command changed the org directory"
    );

    // A certificate for someone else is refused by the device before anything is sent.
    let cert = org(
        &admin,
        &dir,
        &["certify", &request, "--name", "Ada", "--roles", "agent"],
    )
    .ok("certify");
    let other = User::new();
    other.run_ok(&["init"]);
    let link = org(&admin, &dir, &["link", "--no-qr"])
        .ok("link")
        .stdout
        .trim()
        .to_owned();
    let refused = other
        .run(&[
            "register",
            "ws://127.0.0.1:1",
            "--certificate",
            cert.stdout.trim(),
            "--clinic",
            &link,
        ])
        .failed("another identity's certificate");
    assert!(
        refused.stderr.contains("certifies another identity"),
        "{}",
        refused.stderr
    );
    let refused = other
        .run(&["clinic", "add", "hushwire-clinic:AAAA"])
        .failed("a bad link");
    assert!(
        refused.stderr.contains("not a valid clinic link"),
        "{}",
        refused.stderr
    );
    let shown = org(&admin, &dir, &["show"]).ok("org show");
    assert!(shown.stdout.contains("Ada"), "{}", shown.stdout);
}

/// A fresh device's certificate request.
fn certificate_request() -> (User, String) {
    let device = User::new();
    device.run_ok(&["init"]);
    let request = device
        .run_ok(&["certificate", "request"])
        .stdout
        .trim()
        .to_owned();
    (device, request)
}

#[test]
fn an_edited_org_state_is_refused_and_revocations_are_never_undone() {
    let admin = User::new();
    let dir = admin.home.parent().unwrap().join("org");
    org(
        &admin,
        &dir,
        &["init", "--name", "Lakeside", "--relay", "ws://127.0.0.1:1"],
    )
    .ok("org init");
    let (_a, request_a) = certificate_request();
    let (_b, request_b) = certificate_request();
    for (request, name) in [(&request_a, "Ada"), (&request_b, "Ben")] {
        org(
            &admin,
            &dir,
            &["certify", request, "--name", name, "--roles", "agent"],
        )
        .ok("certify");
    }
    let state_path = dir.join("org.json");
    let before_revoke = std::fs::read(&state_path).unwrap();
    let revoked = org(&admin, &dir, &["revoke", "1"]).ok("revoke 1");
    assert!(
        revoked.stdout.contains("revokes serial(s) 1;"),
        "{}",
        revoked.stdout
    );

    // Un-revoking serial 1 by editing org.json: every command refuses, nothing changes.
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["revoked"] = serde_json::json!([]);
    std::fs::write(&state_path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    let files = org_files(&dir);
    for args in [&["revoke", "2"][..], &["show"], &["link", "--no-qr"]] {
        let refused = org(&admin, &dir, args).failed("an edited org.json");
        assert!(
            refused
                .stderr
                .contains("org.json was changed outside hushwire ("),
            "{args:?}: {}",
            refused.stderr
        );
    }
    let refused = org(
        &admin,
        &dir,
        &["certify", &request_a, "--name", "Ada", "--roles", "agent"],
    )
    .failed("certify with an edited org.json");
    assert!(
        refused.stderr.contains("changed outside hushwire"),
        "{}",
        refused.stderr
    );
    assert_eq!(org_files(&dir), files, "nothing changed");

    // An older, genuinely signed org.json (a restored backup) cannot drop serial 1 either.
    std::fs::write(&state_path, &before_revoke).unwrap();
    let files = org_files(&dir);
    let refused = org(&admin, &dir, &["revoke", "2"]).failed("an old org.json");
    assert!(
        refused
            .stderr
            .contains("would drop serial(s) 1 that revocation list 1 revoked"),
        "{}",
        refused.stderr
    );
    assert_eq!(org_files(&dir), files, "nothing changed");
}

#[test]
fn concurrent_org_certify_never_issues_one_serial_twice() {
    let admin = User::new();
    let dir = admin.home.parent().unwrap().join("org");
    org(
        &admin,
        &dir,
        &["init", "--name", "Lakeside", "--relay", "ws://127.0.0.1:1"],
    )
    .ok("org init");
    let (_device, request) = certificate_request();
    let children: Vec<_> = (0..6)
        .map(|i| {
            let name = format!("Agent {i}");
            let mut c = org_command(
                &admin,
                &dir,
                &[
                    "certify", &request, "--name", &name, "--roles", "agent", "--json",
                ],
            );
            c.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut serials = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            serials.push(v["serial"].as_u64().unwrap());
        } else {
            assert!(
                stderr.contains("another hushwire org command is running on"),
                "{stderr}"
            );
        }
    }
    assert!(!serials.is_empty());
    let mut distinct = serials.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        serials.len(),
        "duplicate serials: {serials:?}"
    );
    let shown = org(&admin, &dir, &["show", "--json"]).ok("show").json();
    assert_eq!(
        shown["certificates"].as_array().unwrap().len(),
        serials.len(),
        "{shown}"
    );
}

#[test]
fn org_relay_urls_follow_the_devices_rule_and_set_relay_moves_the_link() {
    let admin = User::new();
    let dir = admin.home.parent().unwrap().join("org");
    for url in [
        "ws://10.0.0.5:7700/v1/websocket",
        "wss://user:pass@relay.example/",
        "wss://user@relay.example/",
        "wss://relay.example:notaport/",
    ] {
        let refused = org(
            &admin,
            &dir,
            &["init", "--name", "Lakeside", "--relay", url],
        )
        .failed("a relay URL devices refuse");
        assert!(
            refused.stderr.contains("not a usable relay URL"),
            "{url}: {}",
            refused.stderr
        );
    }
    assert!(!dir.exists(), "nothing created");
    org(
        &admin,
        &dir,
        &[
            "init",
            "--name",
            "Lakeside",
            "--relay",
            "wss://relay.one.example",
        ],
    )
    .ok("org init");
    let files = org_files(&dir);
    for url in ["ws://10.0.0.5:7700/v1/websocket", "wss://relay.one.example"] {
        org(&admin, &dir, &["set-relay", url]).failed("a bad or unchanged relay");
    }
    assert_eq!(org_files(&dir), files, "nothing changed");
    let moved = org(
        &admin,
        &dir,
        &["set-relay", "wss://relay.two.example/v1/websocket"],
    )
    .ok("set-relay");
    let link = org(&admin, &dir, &["link", "--json"]).ok("link").json();
    assert_eq!(link["relay"], "wss://relay.two.example/v1/websocket");
    assert!(moved.stdout.contains(link["link"].as_str().unwrap()));
}

#[test]
fn org_wording_names_the_agent_the_file_and_the_passphrase() {
    let admin = User::new();
    let dir = admin.home.parent().unwrap().join("org");
    org(
        &admin,
        &dir,
        &["init", "--name", "Lakeside", "--relay", "ws://127.0.0.1:1"],
    )
    .ok("org init");
    let (_device, request) = certificate_request();
    let certified = org(
        &admin,
        &dir,
        &["certify", &request, "--name", "Sam Lee", "--roles", "admin"],
    )
    .ok("certify");
    assert!(
        certified
            .stderr
            .contains("Give this certificate to Sam Lee (roles: admin):"),
        "{}",
        certified.stderr
    );
    let patient = User::new();
    patient.run_ok(&["init"]);
    for arg in ["/nonexistent/file", "clinic-link.txt"] {
        let refused = patient
            .run(&["clinic", "add", arg])
            .failed("a file that does not exist");
        assert!(
            refused.stderr.contains(&format!("{arg} does not exist")),
            "{}",
            refused.stderr
        );
    }
    // The organization key's passphrase is never taken from the store's variable.
    let mut command = admin.command(&["org", "--org-dir", dir.to_str().unwrap(), "revoke", "1"]);
    command
        .env_remove("HUSHWIRE_ORG_PASSPHRASE")
        .env("HUSHWIRE_PASSPHRASE", ORG_PASSPHRASE);
    let refused = run(command, &admin.home).failed("no org passphrase");
    assert!(!refused.stderr.contains("Revoked"), "{}", refused.stderr);
    let help = admin.run_ok(&["--help"]);
    assert!(
        help.stdout.contains("HUSHWIRE_ORG_PASSPHRASE"),
        "{}",
        help.stdout
    );
}

#[test]
fn an_org_state_from_before_signing_is_signed_only_as_its_last_revocation_list_says() {
    let admin = User::new();
    let dir = admin.home.parent().unwrap().join("org");
    org(
        &admin,
        &dir,
        &["init", "--name", "Lakeside", "--relay", "ws://127.0.0.1:1"],
    )
    .ok("org init");
    let (_a, request_a) = certificate_request();
    let (_b, request_b) = certificate_request();
    for (request, name) in [(&request_a, "Ada"), (&request_b, "Ben")] {
        org(
            &admin,
            &dir,
            &["certify", request, "--name", name, "--roles", "agent"],
        )
        .ok("certify");
    }
    org(&admin, &dir, &["revoke", "1"]).ok("revoke 1");
    let already = org(&admin, &dir, &["sign-state"]).failed("a signed state");
    assert!(
        already.stderr.contains("already signed"),
        "{}",
        already.stderr
    );

    // What an older hushwire left: no signature, no last-revocations.txt.
    let state_path = dir.join("org.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state.as_object_mut().unwrap().remove("signature");
    std::fs::write(&state_path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    std::fs::remove_file(dir.join("last-revocations.txt")).unwrap();
    let refused = org(&admin, &dir, &["revoke", "2"]).failed("an unsigned state");
    assert!(
        refused.stderr.contains("carries no signature") && refused.stderr.contains("sign-state"),
        "{}",
        refused.stderr
    );
    let shown = org(&admin, &dir, &["show", "--unsigned"]).ok("show --unsigned");
    assert!(shown.stderr.contains("not signed"), "{}", shown.stderr);

    // An unsigned state that un-revokes serial 1 is not signed.
    let mut edited = state.clone();
    edited["revoked"] = serde_json::json!([]);
    std::fs::write(&state_path, serde_json::to_vec_pretty(&edited).unwrap()).unwrap();
    let files = org_files(&dir);
    let refused = org(&admin, &dir, &["sign-state"]).failed("an edited unsigned state");
    assert!(
        refused.stderr.contains("no list of this organization"),
        "{}",
        refused.stderr
    );
    assert_eq!(org_files(&dir), files, "nothing changed");

    // The genuine one is, with its last list recovered from revocations-1.txt.
    std::fs::write(&state_path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    org(&admin, &dir, &["sign-state"]).ok("sign-state");
    assert!(dir.join("last-revocations.txt").exists());
    let revoked = org(&admin, &dir, &["revoke", "2"]).ok("revoke 2");
    assert!(
        revoked.stdout.contains("revokes serial(s) 1, 2;"),
        "{}",
        revoked.stdout
    );
}

/// An administrator's machine with a new organization key for "Lakeside Clinic" whose relay is
/// on a free port: `(admin machine, org dir, port, relay URL, clinic link)`.
fn lakeside_org() -> (User, PathBuf, u16, String, String) {
    let admin_machine = User::new();
    let org_dir = admin_machine.home.parent().unwrap().join("org");
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/v1/websocket");
    org(
        &admin_machine,
        &org_dir,
        &["init", "--name", "Lakeside Clinic", "--relay", &url],
    )
    .ok("org init");
    let link = org(&admin_machine, &org_dir, &["link", "--no-qr"]).ok("org link");
    let link = link.stdout.trim().to_owned();
    (admin_machine, org_dir, port, url, link)
}

/// A staff device certified by the clinic in `org_dir` with `roles`, registered at `url`.
fn certified_staff(
    admin_machine: &User,
    org_dir: &Path,
    url: &str,
    link: &str,
    name: &str,
    roles: &str,
) -> User {
    let staff = User::new();
    staff.run_ok(&["init"]);
    let request = staff
        .run_ok(&["certificate", "request"])
        .stdout
        .trim()
        .to_owned();
    let cert = org(
        admin_machine,
        org_dir,
        &["certify", &request, "--name", name, "--roles", roles],
    )
    .ok("org certify");
    staff.run_ok(&[
        "register",
        url,
        "--certificate",
        cert.stdout.trim(),
        "--clinic",
        link,
    ]);
    staff
}

#[test]
fn a_patient_opens_a_conversation_one_agent_claims_and_members_are_verified() {
    let (admin_machine, org_dir, port, url, link) = lakeside_org();
    let _relay = Relay::start_clinic(port, &link);
    let ada = certified_staff(
        &admin_machine,
        &org_dir,
        &url,
        &link,
        "Dr. Ada Okafor",
        "agent",
    );
    let ben = certified_staff(
        &admin_machine,
        &org_dir,
        &url,
        &link,
        "Ben Marsh",
        "agent,supervisor",
    );
    let patient = User::new();
    patient.run_ok(&["init"]);
    patient.run_ok(&["clinic", "add", &link]);

    ada.run_ok(&["on-duty", "on"]);
    assert!(
        ada.run_ok(&["queue"])
            .stdout
            .contains("The queue is empty.")
    );
    // A staff device does not open conversations: a clear refusal.
    let refused = ada.run(&["open-conversation"]).failed("staff opening");
    assert!(refused.stderr.contains("patients do"), "{}", refused.stderr);

    let opened = patient.run_ok(&["open-conversation", "--json"]).json();
    let id = opened["conversation"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    let queue = ada.run_ok(&["queue", "--json"]).json();
    assert_eq!(queue[0]["conversation"], id.as_str());

    // Bad ids are refused before anything is sent.
    let bad = ada.run(&["claim", "not-an-id"]).failed("bad id");
    assert!(
        bad.stderr.contains("not a conversation id"),
        "{}",
        bad.stderr
    );

    let claimed = ada.run_ok(&["claim", &id]);
    assert!(claimed.stdout.contains("Claimed"), "{}", claimed.stdout);
    let late = ben.run(&["claim", &id]).failed("second claim");
    assert!(late.stderr.contains("already claimed"), "{}", late.stderr);
    assert!(
        ada.run_ok(&["queue"])
            .stdout
            .contains("The queue is empty.")
    );

    let members = patient.run_ok(&["members", &id]);
    assert!(
        members
            .stdout
            .contains("agent: Dr. Ada Okafor \u{2014} verified agent of Lakeside Clinic"),
        "{}",
        members.stdout
    );
    assert!(
        members.stdout.contains("patient: patient"),
        "{}",
        members.stdout
    );
    // Hand back to the queue, and a supervisor reads along.
    ada.run_ok(&["leave", &id]);
    assert!(ada.run_ok(&["queue"]).stdout.contains(&id));
    let not_on = ada.run(&["leave", &id]).failed("leave twice");
    assert!(
        not_on.stderr.contains("not on the conversation"),
        "{}",
        not_on.stderr
    );
    ben.run(&["join", &id]).failed("join without --read-only");
    ben.run_ok(&["join", "--read-only", &id]);
    let members = patient.run_ok(&["members", &id]);
    assert!(
        members.stdout.contains("supervisor (read-only): Ben Marsh"),
        "{}",
        members.stdout
    );
    ben.run_ok(&["leave", &id]);
}

/// Runs `chat TARGET` with `input` on its standard input; returns stdout (the run must succeed).
fn chat_with(user: &User, target: &str, input: &str) -> String {
    let mut chat = user
        .command(&["chat", target])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = chat.stdin.take().unwrap();
        write!(stdin, "{input}").unwrap();
    }
    let out = chat.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_patient_and_two_agents_chat_in_a_conversation_with_a_handoff_note_and_a_recall() {
    let (admin_machine, org_dir, port, url, link) = lakeside_org();
    let _relay = Relay::start_clinic(port, &link);
    let ada = certified_staff(
        &admin_machine,
        &org_dir,
        &url,
        &link,
        "Dr. Ada Okafor",
        "agent",
    );
    let ben = certified_staff(&admin_machine, &org_dir, &url, &link, "Ben Marsh", "agent");
    // The clinic's archive: a policy signed offline, published by an admin device.
    let sam = certified_staff(
        &admin_machine,
        &org_dir,
        &url,
        &link,
        "Sam Lee",
        "admin,supervisor",
    );
    let signed = org(
        &admin_machine,
        &org_dir,
        &["archive-policy", "--retention-days", "30", "--json"],
    )
    .ok("org archive-policy")
    .json();
    let policy_file = signed["policy"].as_str().unwrap().to_owned();
    let key_file = signed["key"].as_str().unwrap().to_owned();
    sam.run_ok(&["org", "publish-archive-policy", &policy_file]);
    let patient = User::new();
    patient.run_ok(&["init"]);
    patient.run_ok(&["clinic", "add", &link]);
    ben.run_ok(&["on-duty", "on"]);

    // The patient's way in: `chat clinic` opens a conversation with the pinned clinic.
    let opened = chat_with(&patient, "clinic", "/quit\n");
    assert!(opened.contains("Opened conversation"), "{opened}");
    let id = ada.run_ok(&["queue", "--json"]).json()[0]["conversation"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(opened.contains(&id), "{opened}");
    ada.run_ok(&["claim", &id]);

    // The patient sees who answers, verified, and writes; HTML stays text.
    let said = chat_with(&patient, &id, "I have a <b>rash</b>\n/quit\n");
    assert!(
        said.contains("on it: Dr. Ada Okafor \u{2014} verified agent of Lakeside Clinic"),
        "{said}"
    );
    assert!(said.contains("you: I have a <b>rash</b>"), "{said}");
    let ada_view = chat_with(&ada, &id, "Sorry, wrong text\n/recall\n/quit\n");
    assert!(
        ada_view.contains("patient: I have a <b>rash</b>"),
        "{ada_view}"
    );
    assert!(ada_view.contains("was recalled"), "{ada_view}");

    // A hand-off to Ben with a note only staff see; bad targets change nothing.
    let bad = ada.run(&["handoff", &id, "nobody"]).failed("unknown agent");
    assert!(bad.stderr.contains("no contact named"), "{}", bad.stderr);
    let ben_fp = ben.run_ok(&["whoami", "--json"]).json()["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    ada.run_ok(&["handoff", &id, &ben_fp, "--note", "penicillin allergy"]);
    let not_on = ada.run(&["handoff", &id, "queue"]).failed("hand-off twice");
    assert!(
        not_on.stderr.contains("not an agent on"),
        "{}",
        not_on.stderr
    );
    // Each membership change is shown once by recv, also after another command learned it
    // (review findings: shown twice; swallowed by `members`).
    // `queue` receives the hand-off's push and acts on it before it disconnects.
    ben.run_ok(&["queue"]);
    ben.run_ok(&["members", &id]);
    let ben_recv = ben.run_ok(&["recv"]).stdout;
    let joined =
        "Ben Marsh \u{2014} verified agent of Lakeside Clinic joined as agent (by Dr. Ada Okafor";
    assert_eq!(ben_recv.matches(joined).count(), 1, "{ben_recv}");
    let patient_recv = patient.run_ok(&["recv"]).stdout;
    assert_eq!(patient_recv.matches(joined).count(), 1, "{patient_recv}");
    let left = "Dr. Ada Okafor \u{2014} verified agent of Lakeside Clinic left";
    assert_eq!(patient_recv.matches(left).count(), 1, "{patient_recv}");
    let again = patient.run_ok(&["recv"]).stdout;
    assert!(!again.contains(joined) && !again.contains(left), "{again}");
    let ben_view = chat_with(&ben, &id, "Hello, I am Ben\n/quit\n");
    assert!(
        ben_view.contains("staff note from Dr. Ada Okafor \u{2014} verified agent of Lakeside Clinic: penicillin allergy"),
        "{ben_view}"
    );
    assert!(
        ben_view.contains("patient (shared by Dr. Ada Okafor \u{2014} verified agent of Lakeside Clinic): I have a <b>rash</b>"),
        "the hand-off shared the conversation so far: {ben_view}"
    );
    let patient_view = chat_with(&patient, &id, "/quit\n");
    assert!(
        patient_view
            .contains("Ben Marsh \u{2014} verified agent of Lakeside Clinic: Hello, I am Ben"),
        "{patient_view}"
    );
    assert!(
        patient_view.contains("recalled by Dr. Ada Okafor"),
        "{patient_view}"
    );
    assert!(
        !patient_view.contains("penicillin"),
        "the note is for staff only: {patient_view}"
    );
    assert!(
        !patient_view.contains("on it: Dr. Ada Okafor"),
        "{patient_view}"
    );
    // A message another command received first is still shown by `recv`, once, with its
    // conversation (review finding: `members` used to swallow it).
    ben.run_ok(&["send", &id, "Your results are in"]);
    patient.run_ok(&["members", &id]);
    let got = patient.run_ok(&["recv"]).stdout;
    assert!(
        got.contains("Your results are in") && got.contains(&format!("(conversation {id})")),
        "{got}"
    );
    let again = patient.run_ok(&["recv"]);
    assert!(
        !again.stdout.contains("Your results are in"),
        "{}",
        again.stdout
    );
    // A message recalled before the patient's recv is shown as recalled, never its text.
    let message = sent_message_id(
        &ben.run_ok(&["send", &id, "Results for another patient"])
            .stdout,
    );
    ben.run_ok(&["recall", &id, &message]);
    let got = patient.run_ok(&["recv"]).stdout;
    assert!(
        got.contains("(recalled by Ben Marsh") && !got.contains("Results for another patient"),
        "{got}"
    );
    // A recall another command received first is still shown by `recv`, once (review finding:
    // notices were events only, so `members` swallowed them).
    let message = sent_message_id(
        &ben.run_ok(&["send", &id, "Lab slip for the wrong chart"])
            .stdout,
    );
    assert!(patient.run_ok(&["recv"]).stdout.contains("Lab slip"));
    ben.run_ok(&["recall", &id, &message]);
    patient.run_ok(&["members", &id]);
    let got = patient.run_ok(&["recv"]).stdout;
    assert!(
        got.contains(&format!("(message {message} was recalled by Ben Marsh")),
        "{got}"
    );
    let again = patient.run_ok(&["recv"]).stdout;
    assert!(!again.contains("was recalled"), "shown once: {again}");
    // Ada, removed, receives nothing said after the hand-off.
    let ada_after = chat_with(&ada, &id, "/quit\n");
    assert!(!ada_after.contains("Hello, I am Ben"), "{ada_after}");

    // A supervisor reads the clinic's archive with the archive key: every message, verified.
    let mut read = sam.command(&["archive", &id, "--key-file", &key_file]);
    read.env("HUSHWIRE_ARCHIVE_PASSPHRASE", ARCHIVE_PASSPHRASE);
    let archive = run(read, &sam.home).ok("archive");
    for wanted in [
        "patient (device 1): I have a <b>rash</b>",
        "Dr. Ada Okafor \u{2014} verified agent of Lakeside Clinic (device 1): Sorry, wrong text",
        "Ben Marsh \u{2014} verified agent of Lakeside Clinic (device 1): Hello, I am Ben",
        "recalled message",
    ] {
        assert!(
            archive.stdout.contains(wanted),
            "{wanted}: {}",
            archive.stdout
        );
    }
    assert!(
        !archive.stdout.contains("NOT VERIFIED"),
        "{}",
        archive.stdout
    );
    // A wrong passphrase opens nothing; a patient cannot read the archive.
    let mut wrong = sam.command(&["archive", &id, "--key-file", &key_file]);
    // The organization key's passphrase is not the archive's.
    wrong.env("HUSHWIRE_ARCHIVE_PASSPHRASE", ORG_PASSPHRASE);
    let refused = run(wrong, &sam.home).failed("wrong archive passphrase");
    assert!(
        refused.stderr.contains("wrong passphrase"),
        "{}",
        refused.stderr
    );
    let mut by_patient = patient.command(&["archive", &id, "--key-file", &key_file]);
    by_patient.env("HUSHWIRE_ARCHIVE_PASSPHRASE", ARCHIVE_PASSPHRASE);
    run(by_patient, &patient.home).failed("a patient reading the archive");
}
