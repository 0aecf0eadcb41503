//! The README's five-minute walkthrough, run as written: every `hushwire` command in its shell
//! blocks is taken from `README.md` itself and run through `sh -c` against a real relay, with the
//! relay's URL and `/tmp/` replaced by this test's own (and the passphrase in the environment).
//! A README command that stops working fails this test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const README_URL: &str = "ws://127.0.0.1:7700/v1/websocket";

/// The `hushwire …` lines of the shell blocks in the walkthrough section, comments removed.
fn walkthrough_commands(readme: &str) -> Vec<String> {
    let start = readme
        .find("## Five-minute walkthrough")
        .expect("the README has a walkthrough");
    let rest = &readme[start..];
    let end = rest[2..].find("\n## ").map_or(rest.len(), |i| i + 2);
    let section = &rest[..end];
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        // Comments follow two spaces and a `#`.
        let command = line.split("  #").next().unwrap().trim();
        if command.starts_with("hushwire ") {
            commands.push(command.to_owned());
        }
    }
    commands
}

fn relay_bin(cli: &Path) -> PathBuf {
    let relay = cli.parent().unwrap().join("hushwire-relay");
    if !relay.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "hushwire-relay", "--target-dir"])
            .arg(cli.parent().unwrap().parent().unwrap())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    relay
}

#[test]
fn every_readme_walkthrough_command_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let commands = walkthrough_commands(&readme);
    // The walkthrough's steps are all there: nothing is silently skipped.
    for needle in [
        "--version",
        " init",
        " register ",
        " contact add bob ",
        " whoami --address",
        " verify bob",
        " chat bob",
        " send bob ",
        " recv",
        " transcript open alice",
        " auditor keygen",
        " auditor pubkey",
        " transcript export ",
        " auditor open ",
    ] {
        assert!(
            commands.iter().any(|c| c.contains(needle)),
            "no README command with {needle:?}: {commands:#?}"
        );
    }
    assert!(
        !readme.contains("alias hw="),
        "the README no longer hides cargo behind an alias"
    );

    let cli = PathBuf::from(env!("CARGO_BIN_EXE_hushwire"));
    let work = tempfile::TempDir::new().unwrap();
    let tmp = format!("{}/", work.path().display());
    let mut relay = Command::new(relay_bin(&cli))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(work.path().join("relay-data"))
        .arg("serve")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut url = None;
    let mut lines = BufReader::new(relay.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(i) = line.find("ws://127.0.0.1:") {
            url = Some(line[i..].split_whitespace().next().unwrap().to_owned());
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let url = url.expect("the relay says where it listens");

    let path = format!(
        "{}:{}",
        cli.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut outputs = Vec::new();
    for command in &commands {
        let line = command.replace(README_URL, &url).replace("/tmp/", &tmp);
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .env("PATH", &path)
            .env("HUSHWIRE_PASSPHRASE", "correct horse battery staple")
            .env("HUSHWIRE_INSECURE_FAST_KDF", "1")
            .env_remove("HUSHWIRE_HOME")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The chat reads lines from a pipe: say hello and leave.
        let mut stdin = child.stdin.take().unwrap();
        if command.contains(" chat ") {
            writeln!(stdin, "hello from the README\n/quit").unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "README command failed: {command}\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push((command.clone(), stdout));
    }
    let _ = relay.kill();
    let _ = relay.wait();

    let output = |needle: &str| {
        outputs
            .iter()
            .find(|(c, _)| c.contains(needle))
            .map(|(_, o)| o.as_str())
            .unwrap()
    };
    // Bob's recv shows what alice sent, and the auditor opens bob's side of it.
    assert!(
        output(" recv").contains("alice: Your results are ready."),
        "{}",
        output(" recv")
    );
    let opened = output(" auditor open ");
    assert!(opened.contains("Your results are ready."), "{opened}");
    assert!(opened.contains("hello from the README"), "{opened}");
}

/// The `sh` lines of the README section that starts with `heading`, comments cut off.
fn section_commands(readme: &str, heading: &str) -> Vec<(String, String)> {
    let start = readme.find(heading).expect("the README has the section");
    let rest = &readme[start..];
    let end = rest[2..].find("\n## ").map_or(rest.len(), |i| i + 2);
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in rest[..end].lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        let (command, comment) = line.split_once("  #").unwrap_or((line, ""));
        let command = command.trim();
        if in_sh && (command.starts_with("hushwire ") || command.starts_with("cargo ")) {
            commands.push((command.to_owned(), comment.to_owned()));
        }
    }
    commands
}

#[test]
fn every_readme_clinic_command_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let commands = section_commands(&readme, "## A clinic in ");
    let title = format!("## A clinic in {} commands", commands.len());
    assert!(readme.contains(&title), "the title counts them: {title}");

    let cli = PathBuf::from(env!("CARGO_BIN_EXE_hushwire"));
    let relay_bin = relay_bin(&cli);
    let work = tempfile::TempDir::new().unwrap();
    let tmp = format!("{}/", work.path().display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let path = format!(
        "{}:{}",
        cli.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut relay = None;
    let mut outputs = Vec::new();
    for (command, comment) in &commands {
        let line = command
            .replace("127.0.0.1:7701", &address)
            .replace("/tmp/", &tmp)
            .replace(
                "cargo run --release -p hushwire-relay --",
                &relay_bin.display().to_string(),
            );
        // The relay's line runs under `exec`: killing the shell at the end must kill the relay
        // (its `$(cat …)` kept the shell as the parent, and every run left a relay behind).
        let line = if command.starts_with("cargo ") {
            format!("exec {line}")
        } else {
            line
        };
        let mut child = Command::new("sh");
        child
            .arg("-c")
            .arg(&line)
            .env("PATH", &path)
            .env("HUSHWIRE_PASSPHRASE", "correct horse battery staple")
            .env(
                "HUSHWIRE_ORG_PASSPHRASE",
                "the organization key's passphrase",
            )
            .env(
                "HUSHWIRE_ARCHIVE_PASSPHRASE",
                "the clinic archive's passphrase",
            )
            .env("HUSHWIRE_INSECURE_FAST_KDF", "1")
            .env("NO_COLOR", "1")
            .env_remove("HUSHWIRE_HOME")
            .env_remove("HUSHWIRE_ORG_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if command.starts_with("cargo ") {
            // The relay runs until the end; wait until it listens.
            let mut spawned = child.stdout(Stdio::null()).spawn().unwrap();
            let mut lines = BufReader::new(spawned.stderr.take().unwrap()).lines();
            for line in lines.by_ref() {
                if line.unwrap().contains(&format!("ws://{address}")) {
                    break;
                }
            }
            std::thread::spawn(move || for _ in lines {});
            relay = Some(spawned);
            continue;
        }
        let out = child.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let expected = if comment.contains("refused") {
            Some(1)
        } else if comment.contains("exits 5") {
            Some(5)
        } else {
            Some(0)
        };
        assert_eq!(
            out.status.code(),
            expected,
            "README command: {command}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        outputs.push((command.clone(), stdout + &stderr));
    }
    let mut relay = relay.expect("the section starts the relay");
    let _ = relay.kill();
    let _ = relay.wait();

    let pat_recv: Vec<&str> = outputs
        .iter()
        .filter(|(c, _)| c == "hushwire --home /tmp/pat recv")
        .map(|(_, o)| o.as_str())
        .collect();
    assert!(
        pat_recv[0].contains(
            "ada [Dr. Ada Okafor \u{2014} verified agent of Lakeside Clinic]: Yes, since this \
             morning."
        ),
        "{}",
        pat_recv[0]
    );
    // The last command with `needle`.
    let output = |needle: &str| {
        outputs
            .iter()
            .rev()
            .find(|(c, _)| c.contains(needle))
            .map(|(_, o)| o.as_str())
            .unwrap()
    };
    // The live chat: Ada reads the patient, hands off with a note only Ben (staff) gets, and
    // the patient sees who answers now, verified, never the note.
    let ada_reads = outputs
        .iter()
        .find(|(c, o)| c.contains("/tmp/ada recv") && o.contains("rash"))
        .map(|(_, o)| o.as_str());
    assert!(
        ada_reads.is_some_and(|o| o.contains("patient: I have had a rash since Monday.")),
        "{ada_reads:?}"
    );
    let ben = output("/tmp/ben recv");
    assert!(
        ben.contains(
            "staff note from Dr. Ada Okafor \u{2014} verified agent of Lakeside Clinic: Allergic \
             to penicillin."
        ),
        "{ben}"
    );
    assert!(
        ben.contains(
            "patient (shared by Dr. Ada Okafor \u{2014} verified agent of Lakeside Clinic): I \
             have had a rash since Monday."
        ),
        "{ben}"
    );
    let pat = outputs
        .iter()
        .find(|(c, o)| c.contains("/tmp/pat recv") && o.contains("Ben here"))
        .map_or("", |(_, o)| o.as_str());
    assert!(
        pat.contains(
            "Ben Marsh \u{2014} verified agent of Lakeside Clinic: Ben here: I have your notes."
        ),
        "{pat}"
    );
    assert!(!pat.contains("penicillin"), "{pat}");
    assert!(
        output("/tmp/pat members").contains("agent: Ben Marsh \u{2014} verified agent"),
        "{}",
        output("/tmp/pat members")
    );
    let archive = output("/tmp/sam archive");
    assert!(
        archive.contains("patient (device 1): I have had a rash since Monday.")
            && archive.contains("Ben here: I have your notes.")
            && !archive.contains("NOT VERIFIED"),
        "{archive}"
    );
    // The phone, just linked, lists both devices from the signed list, not "none seen".
    let phone = output("/tmp/pat-phone devices list");
    assert!(
        phone.contains("device 1\n")
            && phone.contains("device 2  (this device)")
            && phone.contains("signed device list"),
        "{phone}"
    );
    assert!(
        output(" revoke 2").contains("revokes serial(s) 2;"),
        "{}",
        output(" revoke 2")
    );
    assert!(
        output("send ada 'Hello?'").contains("the clinic revoked certificate #2"),
        "{}",
        output("send ada 'Hello?'")
    );
    assert!(
        output("/tmp/ada recv").contains("wiped by Sam Lee, admin of Lakeside Clinic"),
        "{}",
        output("/tmp/ada recv")
    );
}
