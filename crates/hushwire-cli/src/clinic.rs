//! Clinics: the administrator's offline organization tools (`org`), an agent's certificate
//! (`certificate`, `register --certificate`), a patient's pinned clinic (`clinic`), and remote
//! wipe (`wipe`). `docs/client.md` §8.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use hushwire_client::{Address, Client, ClientError, KdfParams, Secret};
use hushwire_proto::clinic::{
    AgentCertificate, ClinicLink, OrgKey, RevocationList, Roles, check_name,
};
use hushwire_proto::codec::Codec;
use hushwire_proto::{IdentityKey, Signer as _, labels};
use serde::{Deserialize, Serialize};
use serde_json::json;
use zeroize::Zeroizing;

use crate::cli::Global;
use crate::common::{self, CliResult, fail, open};
use crate::display::escape;

/// The sealed organization key's file in the org directory.
const KEY_FILE: &str = "org.key";
/// The organization's state file.
const STATE_FILE: &str = "org.json";
/// The lock file every writing org command holds (empty; the lock is the operating system's).
const LOCK_FILE: &str = "org.lock";
/// The last revocation list signed, kept so the next one can be checked against it.
const LAST_LIST_FILE: &str = "last-revocations.txt";
/// How long a writing org command waits for another one on the same directory.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// What the organization key is sealed as.
const KEY_PURPOSE: &str = "hushwire organization key";
/// The sealing purpose of an archive private key file (`org archive-policy`): the core's, so
/// the browser console opens the same files (`hushwire::sealed_file`).
const ARCHIVE_KEY_PURPOSE: &str = hushwire::archive::ARCHIVE_KEY_FILE_PURPOSE;
/// Certificates start this long before they are issued, so a device whose clock is a little
/// behind accepts them at once.
const BACKDATE_SECS: u64 = 300;

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ----- reading what people paste ------------------------------------------------------------

/// The text of an argument that is either a file (if one exists at that path) or the text.
pub(crate) fn text_or_file(arg: &str) -> CliResult<String> {
    let path = Path::new(arg);
    if arg.len() < 4096 && path.is_file() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read {}: {e}", escape(arg))))?;
        return Ok(text.trim().to_owned());
    }
    // Links, requests and certificates are base64url: no `/`, never `.txt`. Such an argument
    // was meant as a file.
    if arg.contains('/') || arg.ends_with(".txt") {
        let what = if path.is_dir() {
            "is a directory, not a file"
        } else {
            "does not exist"
        };
        return Err(fail(format!(
            "{} {what}: give the path of the file, or paste its line of text itself",
            escape(arg)
        )));
    }
    Ok(arg.trim().to_owned())
}

/// Decodes one line of base64url into a structure.
fn decode_b64<T>(
    arg: &str,
    expected: &'static str,
    read: fn(&[u8]) -> Result<T, String>,
) -> CliResult<T> {
    let text = text_or_file(arg)?;
    let bad = |reason: String| -> common::Failure {
        ClientError::BadClinicData { expected, reason }.into()
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(text.as_bytes())
        .map_err(|_| bad("not base64url".into()))?;
    read(&bytes).map_err(bad)
}

fn read_certificate(arg: &str) -> CliResult<AgentCertificate> {
    decode_b64(arg, "agent certificate", |b| {
        AgentCertificate::from_bytes(b).map_err(|e| e.to_string())
    })
}

fn read_revocation_list(arg: &str) -> CliResult<RevocationList> {
    decode_b64(arg, "revocation list", |b| {
        RevocationList::from_bytes(b).map_err(|e| e.to_string())
    })
}

fn read_request(arg: &str) -> CliResult<IdentityKey> {
    decode_b64(arg, "identity key (certificate request)", |b| {
        IdentityKey::from_bytes(b).map_err(|e| e.to_string())
    })
}

fn read_link(arg: &str) -> CliResult<ClinicLink> {
    let text = text_or_file(arg)?;
    text.parse::<ClinicLink>()
        .map_err(|e| ClientError::BadClinicLink(e).into())
}

fn b64<T: Codec>(value: &T) -> String {
    URL_SAFE_NO_PAD.encode(value.to_bytes())
}

// ----- files ----------------------------------------------------------------------------------

/// Writes `bytes` to `path` owner-only, through a temporary file renamed into place, so a
/// failure leaves the old file (or none) and never half a file. `create_new` refuses to replace
/// an existing file.
fn write_private(path: &Path, bytes: &[u8], create_new: bool) -> CliResult<()> {
    if create_new && path.exists() {
        return Err(fail(format!(
            "{} exists: it is never overwritten; choose another file",
            path.display()
        )));
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(format!("cannot write {}: {e}", path.display()))
    })
}

// ----- the organization -------------------------------------------------------------------------

/// One certificate the organization issued, as `org.json` keeps it.
#[derive(Clone, Serialize, Deserialize)]
struct Issued {
    serial: u64,
    name: String,
    roles: String,
    /// The certified identity's fingerprint (64 hex digits).
    fingerprint: String,
    not_before: u64,
    not_after: u64,
}

/// `org.json`: everything about the organization except its private key.
#[derive(Clone, Serialize, Deserialize)]
struct OrgState {
    name: String,
    relay_url: String,
    /// The organization key's public half (64 hex digits).
    org_key: String,
    /// The clinic link, signed at `org init`.
    link: String,
    next_serial: u64,
    certificates: Vec<Issued>,
    revoked: Vec<u64>,
    revocation_sequence: u64,
    /// The organization key's signature (128 hex digits) over `SIG_ORG_STATE ‖` this state as
    /// compact JSON with `signature` empty ([`OrgState::signed_bytes`]).
    #[serde(default)]
    signature: String,
}

impl OrgState {
    /// The canonical bytes signed: the state as compact JSON (fields in declaration order) with
    /// an empty signature.
    fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signature.clear();
        serde_json::to_vec(&unsigned).unwrap_or_default()
    }

    fn sign(&mut self, key: &SigningKey) {
        let signature = key.sign(labels::SIG_ORG_STATE, &self.signed_bytes());
        self.signature = hex::encode(signature);
    }

    /// Refuses a state whose signature does not verify with `org` (an edit made outside
    /// hushwire, or a file from another organization).
    fn check_signature(&self, org: &OrgKey) -> CliResult<()> {
        let changed = |why: &str| {
            fail(format!(
                "{STATE_FILE} was changed outside hushwire ({why}): restore it from a backup; \
                 nothing changed"
            ))
        };
        if self.signature.is_empty() {
            return Err(changed(
                "it carries no signature of the organization key; if hushwire made it before \
                 it signed its state, check it with `hushwire org show --unsigned` and sign it \
                 with `hushwire org sign-state`",
            ));
        }
        let signature: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| changed("its signature is not 128 hex digits"))?;
        if !org.verify(labels::SIG_ORG_STATE, &self.signed_bytes(), &signature) {
            return Err(changed(
                "its signature by the organization key does not match its content",
            ));
        }
        Ok(())
    }

    /// The organization key the state names.
    fn org_key(&self) -> CliResult<OrgKey> {
        hex::decode(&self.org_key)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .and_then(|b| OrgKey::from_bytes(&b).ok())
            .ok_or_else(|| {
                fail(format!(
                    "{STATE_FILE} was changed outside hushwire (its organization key is not a \
                     valid key): restore it from a backup; nothing changed"
                ))
            })
    }
}

/// A held lock on the organization directory: released when dropped (the file is closed, or
/// the process ends however it ends).
struct OrgLock {
    _file: std::fs::File,
}

/// Takes the exclusive lock of the org directory, waiting up to [`LOCK_WAIT`] for another
/// writing org command to finish. Two writers at once would issue the same serial twice.
fn lock_org(dir: &Path) -> CliResult<OrgLock> {
    let path = dir.join(LOCK_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let file = options
        .open(&path)
        .map_err(|e| fail(format!("cannot open the lock file {}: {e}", path.display())))?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => return Ok(OrgLock { _file: file }),
            Err(fs4::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(fs4::TryLockError::WouldBlock) => {
                return Err(fail(format!(
                    "another hushwire org command is running on {} (waited {} s): let it \
                     finish, then run this one again; nothing changed",
                    dir.display(),
                    LOCK_WAIT.as_secs()
                )));
            }
            Err(fs4::TryLockError::Error(e)) => {
                return Err(fail(format!("cannot lock {}: {e}", path.display())));
            }
        }
    }
}

/// Checks a relay URL by the rule devices dial by, before it goes into a clinic link.
fn check_relay(relay: &str) -> CliResult<()> {
    hushwire_client::check_relay_url(relay).map_err(|_| {
        fail(format!(
            "{:?} is not a usable relay URL: wss://host[:port][/path], or ws:// only on this \
             machine (localhost, 127.0.0.1, [::1]); no user:password@; at most 200 characters. \
             Devices refuse to dial anything else",
            escape(relay)
        ))
    })
}

/// The organization's directory: `--org-dir`, `$HUSHWIRE_ORG_DIR`, or `$HOME/.hushwire-org`.
fn org_dir(dir: Option<&Path>) -> CliResult<PathBuf> {
    if let Some(d) = dir {
        return Ok(d.to_owned());
    }
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => Ok(PathBuf::from(h).join(".hushwire-org")),
        _ => Err(fail(
            "no home directory: pass --org-dir DIR or set HUSHWIRE_ORG_DIR",
        )),
    }
}

/// Refuses a directory without an organization (before asking for a passphrase).
fn require_org(dir: &Path) -> CliResult<()> {
    if !dir.join(KEY_FILE).exists() || !dir.join(STATE_FILE).exists() {
        return Err(fail(format!(
            "no organization in {}: create one with `hushwire org init --name NAME --relay URL` \
             (or pass the right --org-dir)",
            dir.display()
        )));
    }
    Ok(())
}

/// Reads `org.json` and checks its signature against the key it names (for the commands that
/// do not unseal the key; those check against the unsealed key, [`open_org`]).
fn load_checked_state(dir: &Path) -> CliResult<OrgState> {
    let state = load_state(dir)?;
    state.check_signature(&state.org_key()?)?;
    Ok(state)
}

fn load_state(dir: &Path) -> CliResult<OrgState> {
    require_org(dir)?;
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        fail(format!(
            "{} is damaged ({e}): restore it from a backup",
            path.display()
        ))
    })
}

/// Signs the state with the organization key and writes it.
fn save_state(dir: &Path, state: &mut OrgState, key: &SigningKey) -> CliResult<()> {
    state.sign(key);
    let text = serde_json::to_string_pretty(state).unwrap_or_default();
    write_private(&dir.join(STATE_FILE), text.as_bytes(), false)
}

/// Reads the state and unseals the organization key with the passphrase; refuses a key that is
/// not the one the state names and a state the key did not sign. Call with the lock held.
fn open_org(dir: &Path, secret: &Secret) -> CliResult<(OrgState, SigningKey)> {
    let state = load_state(dir)?;
    let key = unseal_key(dir, &state, secret)?;
    let org = OrgKey::new(key.verifying_key())
        .map_err(|e| fail(format!("the organization key is unusable: {e}")))?;
    state.check_signature(&org)?;
    Ok((state, key))
}

/// Unseals the organization key with the passphrase (checked against the state's public key).
fn unseal_key(dir: &Path, state: &OrgState, secret: &Secret) -> CliResult<SigningKey> {
    let path = dir.join(KEY_FILE);
    let sealed =
        std::fs::read(&path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    let seed =
        hushwire_client::open_secret_file(secret, KEY_PURPOSE, &sealed).map_err(|e| match e {
            ClientError::WrongSecret => {
                fail("wrong passphrase: the organization key did not open; nothing changed")
            }
            ClientError::CorruptStore(_) => fail(format!(
                "{} is damaged or not an organization key: restore it from a backup",
                path.display()
            )),
            e => e.into(),
        })?;
    let seed: Zeroizing<[u8; 32]> = Zeroizing::new(seed.as_slice().try_into().map_err(|_| {
        fail(format!(
            "{} is damaged: restore it from a backup",
            path.display()
        ))
    })?);
    let key = SigningKey::from_bytes(&seed);
    if hex::encode(key.verifying_key().as_bytes()) != state.org_key {
        return Err(fail(format!(
            "the key in {} is not the one {} names: the directory was mixed up; restore both \
             from the same backup",
            KEY_FILE, STATE_FILE
        )));
    }
    Ok(key)
}

/// `org init`.
pub fn org_init(g: &Global, dir: Option<&Path>, name: &str, relay: &str) -> CliResult<ExitCode> {
    let dir = org_dir(dir)?;
    check_name(name).map_err(|_| {
        fail(format!(
            "{:?} is not a usable clinic name: 1 to 64 bytes, no control, invisible or \
             direction-changing characters, no leading or trailing spaces",
            escape(name)
        ))
    })?;
    check_relay(relay)?;
    let exists = |dir: &Path| -> CliResult<()> {
        if dir.join(KEY_FILE).exists() || dir.join(STATE_FILE).exists() {
            return Err(fail(format!(
                "{} already holds an organization: it is never replaced (use another --org-dir)",
                dir.display()
            )));
        }
        Ok(())
    };
    exists(&dir)?;
    let secret = common::org_passphrase(g, &dir, true)?;
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|e| fail(format!("no randomness: {e}")))?;
    let key = SigningKey::from_bytes(&seed);
    let params = common::fast_kdf().unwrap_or(KdfParams::DEFAULT);
    let sealed = hushwire_client::seal_secret_file(&secret, params, KEY_PURPOSE, seed.as_slice())?;
    let link = ClinicLink::issue(&key, name, relay)
        .map_err(|e| fail(format!("cannot make the clinic link: {e}")))?;
    let mut state = OrgState {
        name: name.to_owned(),
        relay_url: relay.to_owned(),
        org_key: hex::encode(key.verifying_key().as_bytes()),
        link: link.to_string(),
        next_serial: 1,
        certificates: Vec::new(),
        revoked: Vec::new(),
        revocation_sequence: 0,
        signature: String::new(),
    };
    let created = !dir.exists();
    common::create_home(&dir)?;
    // On failure, undo what this command made: the key file, and the directory it created.
    let undo = |wrote_key: bool| {
        if wrote_key {
            let _ = std::fs::remove_file(dir.join(KEY_FILE));
        }
        if created {
            let _ = std::fs::remove_file(dir.join(LOCK_FILE));
            let _ = std::fs::remove_dir(&dir);
        }
    };
    let lock = match lock_org(&dir) {
        Ok(lock) => lock,
        Err(e) => {
            undo(false);
            return Err(e);
        }
    };
    // Another init may have finished while this one waited.
    exists(&dir)?;
    if let Err(e) = write_private(&dir.join(KEY_FILE), &sealed, true) {
        drop(lock);
        undo(false);
        return Err(e);
    }
    if let Err(e) = save_state(&dir, &mut state, &key) {
        drop(lock);
        undo(true);
        return Err(e);
    }
    drop(lock);
    let fingerprint = link.org().fingerprint().to_string();
    if g.json {
        println!(
            "{}",
            json!({"name": name, "relay": relay, "org_fingerprint": fingerprint, "link": state.link, "dir": dir.display().to_string()})
        );
    } else {
        println!(
            "Created the organization key of {} in {}.",
            escape(name),
            dir.display()
        );
        println!("Organization key fingerprint: {fingerprint}");
        println!(
            "Clinic link (give it to patients and agents; `hushwire org link` shows a QR code):"
        );
        println!("{}", state.link);
        println!(
            "Keep {} and its passphrase safe: whoever holds both can certify agents.",
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `org certify`.
pub fn org_certify(
    g: &Global,
    dir: Option<&Path>,
    request: &str,
    name: &str,
    roles: Roles,
    days: u64,
    out: Option<&Path>,
) -> CliResult<ExitCode> {
    let dir = org_dir(dir)?;
    require_org(&dir)?;
    let subject = read_request(request)?;
    check_name(name).map_err(|_| {
        fail(format!(
            "{:?} is not a usable agent name: 1 to 64 bytes, no control, invisible or \
             direction-changing characters, no leading or trailing spaces",
            escape(name)
        ))
    })?;
    if let Some(out) = out
        && out.exists()
    {
        return Err(fail(format!(
            "{} exists: it is never overwritten",
            out.display()
        )));
    }
    let secret = common::org_passphrase(g, &dir, false)?;
    let _lock = lock_org(&dir)?;
    let (mut state, key) = open_org(&dir, &secret)?;
    let now = now_s();
    let not_before = now.saturating_sub(BACKDATE_SECS);
    let not_after = now.saturating_add(days.saturating_mul(86_400));
    let serial = state.next_serial;
    let certificate = AgentCertificate::issue(
        &key,
        serial,
        subject.clone(),
        name,
        roles,
        not_before,
        not_after,
    )
    .map_err(|e| fail(format!("cannot issue the certificate: {e}")))?;
    let text = b64(&certificate);
    state.next_serial += 1;
    state.certificates.push(Issued {
        serial,
        name: name.to_owned(),
        roles: roles.to_string(),
        fingerprint: subject.fingerprint().to_string(),
        not_before,
        not_after,
    });
    if let Some(out) = out {
        write_private(out, format!("{text}\n").as_bytes(), true)?;
    }
    if let Err(e) = save_state(&dir, &mut state, &key) {
        if let Some(out) = out {
            let _ = std::fs::remove_file(out);
        }
        return Err(e);
    }
    if g.json {
        println!(
            "{}",
            json!({"serial": serial, "name": name, "roles": roles.to_string(), "not_before": not_before, "not_after": not_after, "certificate": text})
        );
    } else {
        eprintln!(
            "Certified serial {serial}, valid {days} day(s). Give this certificate to {} (roles: \
             {roles}):",
            escape(name)
        );
        println!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The last list `org revoke` signed (`LAST_LIST_FILE`), checked against the organization key
/// and the state; `None` before the first.
fn last_list(dir: &Path, state: &OrgState, key: &SigningKey) -> CliResult<Option<RevocationList>> {
    let path = dir.join(LAST_LIST_FILE);
    let restore = "restore it from a backup (it is a copy of the file `hushwire org revoke` \
                   wrote last)";
    if !path.exists() {
        if state.revocation_sequence == 0 {
            return Ok(None);
        }
        return Err(fail(format!(
            "{} is missing: {restore}; nothing changed",
            path.display()
        )));
    }
    let list = read_revocation_list(&path.display().to_string()).map_err(|_| {
        fail(format!(
            "{} is damaged: {restore}; nothing changed",
            path.display()
        ))
    })?;
    let org = OrgKey::new(key.verifying_key())
        .map_err(|e| fail(format!("the organization key is unusable: {e}")))?;
    if !list.verify(&org) {
        return Err(fail(format!(
            "{} is not a revocation list of this organization: {restore}; nothing changed",
            path.display()
        )));
    }
    if list.sequence() < state.revocation_sequence {
        return Err(fail(format!(
            "{} holds revocation list {} but {STATE_FILE} says list {} was signed: {restore}; \
             nothing changed",
            path.display(),
            list.sequence(),
            state.revocation_sequence
        )));
    }
    Ok(Some(list))
}

/// `org revoke`.
pub fn org_revoke(
    g: &Global,
    dir: Option<&Path>,
    serial: u64,
    out: Option<&Path>,
) -> CliResult<ExitCode> {
    let dir = org_dir(dir)?;
    // Unchecked, only for the errors worth giving before the passphrase prompt.
    let unchecked = load_state(&dir)?;
    if !unchecked.certificates.iter().any(|c| c.serial == serial) {
        return Err(fail(format!(
            "no certificate with serial {serial} was issued by this organization (`hushwire org \
             show` lists them); nothing changed"
        )));
    }
    let secret = common::org_passphrase(g, &dir, false)?;
    let _lock = lock_org(&dir)?;
    let (mut state, key) = open_org(&dir, &secret)?;
    if !state.certificates.iter().any(|c| c.serial == serial) {
        return Err(fail(format!(
            "no certificate with serial {serial} was issued by this organization (`hushwire org \
             show` lists them); nothing changed"
        )));
    }
    if state.revoked.contains(&serial) {
        return Err(fail(format!(
            "certificate {serial} is already revoked (in list {}); nothing changed",
            state.revocation_sequence
        )));
    }
    let previous = last_list(&dir, &state, &key)?;
    let sequence = state.revocation_sequence + 1;
    let mut revoked = state.revoked.clone();
    revoked.push(serial);
    revoked.sort_unstable();
    revoked.dedup();
    // A list never un-revokes: every serial of the last signed list stays in the next one.
    if let Some(previous) = &previous {
        let dropped: Vec<String> = previous
            .serials()
            .iter()
            .filter(|s| !revoked.contains(s))
            .map(u64::to_string)
            .collect();
        if !dropped.is_empty() {
            return Err(fail(format!(
                "the new list would drop serial(s) {} that revocation list {} revoked: a \
                 revocation is never undone; restore {STATE_FILE} from a backup; nothing changed",
                dropped.join(", "),
                previous.sequence()
            )));
        }
        if previous.sequence() >= sequence {
            return Err(fail(format!(
                "{STATE_FILE} is older than revocation list {} (restored from an old backup?): \
                 restore the newest {STATE_FILE}; nothing changed",
                previous.sequence()
            )));
        }
    }
    let out = out
        .map(Path::to_owned)
        .unwrap_or_else(|| dir.join(format!("revocations-{sequence}.txt")));
    if out.exists() {
        return Err(fail(format!(
            "{} exists: it is never overwritten; nothing changed",
            out.display()
        )));
    }
    let list = RevocationList::issue(&key, sequence, now_s(), &revoked)
        .map_err(|e| fail(format!("cannot sign the revocation list: {e}")))?;
    let text = b64(&list);
    let line = format!("{text}\n");
    let last_path = dir.join(LAST_LIST_FILE);
    let last_before = std::fs::read(&last_path).ok();
    write_private(&out, line.as_bytes(), true)?;
    let undo = |restore_last: bool| {
        let _ = std::fs::remove_file(&out);
        if restore_last {
            match &last_before {
                Some(bytes) => {
                    let _ = write_private(&last_path, bytes, false);
                }
                None => {
                    let _ = std::fs::remove_file(&last_path);
                }
            }
        }
    };
    if let Err(e) = write_private(&last_path, line.as_bytes(), false) {
        undo(false);
        return Err(e);
    }
    state.revoked = revoked;
    state.revocation_sequence = sequence;
    if let Err(e) = save_state(&dir, &mut state, &key) {
        undo(true);
        return Err(e);
    }
    if g.json {
        println!(
            "{}",
            json!({"sequence": sequence, "revoked": state.revoked, "file": out.display().to_string(), "list": text})
        );
    } else {
        let serials: Vec<String> = state.revoked.iter().map(u64::to_string).collect();
        println!(
            "Revoked certificate {serial}: revocation list {sequence} revokes serial(s) {}; \
             written to {}.",
            serials.join(", "),
            out.display()
        );
        println!(
            "It takes effect once an admin device publishes it: hushwire org publish-revocations {}",
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `org set-relay`.
pub fn org_set_relay(g: &Global, dir: Option<&Path>, relay: &str) -> CliResult<ExitCode> {
    let dir = org_dir(dir)?;
    check_relay(relay)?;
    require_org(&dir)?;
    let secret = common::org_passphrase(g, &dir, false)?;
    let _lock = lock_org(&dir)?;
    let (mut state, key) = open_org(&dir, &secret)?;
    if state.relay_url == relay {
        return Err(fail(format!(
            "the clinic's relay is already {}; nothing changed",
            escape(relay)
        )));
    }
    let link = ClinicLink::issue(&key, &state.name, relay)
        .map_err(|e| fail(format!("cannot make the clinic link: {e}")))?;
    let old = std::mem::replace(&mut state.relay_url, relay.to_owned());
    state.link = link.to_string();
    save_state(&dir, &mut state, &key)?;
    if g.json {
        println!(
            "{}",
            json!({"relay": relay, "previous_relay": old, "link": state.link})
        );
    } else {
        println!(
            "The clinic's relay is now {} (was {}). The new clinic link:",
            escape(relay),
            escape(&old)
        );
        println!("{}", state.link);
        println!(
            "Start the relay with it (--clinic-link), and give it to patients and agents \
             (`hushwire org link` shows it with a QR code). Certificates stay valid."
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `org sign-state`: signs an `org.json` written before hushwire signed its state, once the
/// administrator has checked it. A state that carries a signature is never re-signed (a wrong
/// one means an edit: restore a backup). With revocations, the last list the directory holds
/// must be the state's last one and revoke exactly its serials.
pub fn org_sign_state(g: &Global, dir: Option<&Path>) -> CliResult<ExitCode> {
    let dir = org_dir(dir)?;
    require_org(&dir)?;
    let secret = common::org_passphrase(g, &dir, false)?;
    let _lock = lock_org(&dir)?;
    let mut state = load_state(&dir)?;
    let key = unseal_key(&dir, &state, &secret)?;
    if !state.signature.is_empty() {
        let org = OrgKey::new(key.verifying_key())
            .map_err(|e| fail(format!("the organization key is unusable: {e}")))?;
        state.check_signature(&org)?;
        return Err(fail(format!(
            "{STATE_FILE} is already signed by the organization key; nothing changed"
        )));
    }
    let last_path = dir.join(LAST_LIST_FILE);
    let mut copy_last = None;
    if state.revocation_sequence > 0 {
        let numbered = dir.join(format!("revocations-{}.txt", state.revocation_sequence));
        let source = if last_path.exists() {
            last_path.clone()
        } else {
            numbered.clone()
        };
        let list = read_revocation_list(&source.display().to_string())
            .ok()
            .filter(|l| {
                OrgKey::new(key.verifying_key()).is_ok_and(|org| l.verify(&org))
                    && l.sequence() == state.revocation_sequence
                    && l.serials() == state.revoked.as_slice()
            })
            .ok_or_else(|| {
                fail(format!(
                    "{STATE_FILE} says revocation list {} revokes {:?}, and no list of this \
                     organization in {} or {} says the same: copy the file `hushwire org \
                     revoke` wrote for list {} to {}, then run this again; nothing changed",
                    state.revocation_sequence,
                    state.revoked,
                    last_path.display(),
                    numbered.display(),
                    state.revocation_sequence,
                    last_path.display()
                ))
            })?;
        if source != last_path {
            copy_last = Some(format!("{}\n", b64(&list)));
        }
    }
    if let Some(text) = &copy_last {
        write_private(&last_path, text.as_bytes(), true)?;
    }
    if let Err(e) = save_state(&dir, &mut state, &key) {
        if copy_last.is_some() {
            let _ = std::fs::remove_file(&last_path);
        }
        return Err(e);
    }
    println!(
        "Signed {STATE_FILE}: {} certificate(s), revoked serials {:?}. From now on hushwire \
         refuses it if it is changed by anything else.",
        state.certificates.len(),
        state.revoked
    );
    Ok(ExitCode::SUCCESS)
}

/// `org link`.
pub fn org_link(g: &Global, dir: Option<&Path>, no_qr: bool) -> CliResult<ExitCode> {
    let dir = org_dir(dir)?;
    let state = load_checked_state(&dir)?;
    // The stored link is checked like any pasted one: a damaged file prints nothing wrong.
    let link: ClinicLink = state.link.parse().map_err(|e| {
        fail(format!(
            "the clinic link in {STATE_FILE} does not verify ({e})"
        ))
    })?;
    if g.json {
        println!(
            "{}",
            json!({"link": state.link, "name": link.name(), "relay": link.relay_url()})
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", state.link);
    if !no_qr {
        let code = qrcode::QrCode::new(state.link.as_bytes())
            .map_err(|e| fail(format!("cannot make a QR code of the link: {e}")))?;
        let image = code
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build();
        println!("{image}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `org show`.
pub fn org_show(g: &Global, dir: Option<&Path>, unsigned: bool) -> CliResult<ExitCode> {
    let dir = org_dir(dir)?;
    let state = if unsigned {
        let state = load_state(&dir)?;
        if state.signature.is_empty() {
            eprintln!(
                "warning: {STATE_FILE} is not signed: check what follows against your records \
                 before `hushwire org sign-state`"
            );
        } else {
            state.check_signature(&state.org_key()?)?;
        }
        state
    } else {
        load_checked_state(&dir)?
    };
    let link: ClinicLink = state.link.parse().map_err(|e| {
        fail(format!(
            "the clinic link in {STATE_FILE} does not verify ({e})"
        ))
    })?;
    let fingerprint = link.org().fingerprint().to_string();
    if g.json {
        let certs: Vec<_> = state
            .certificates
            .iter()
            .map(|c| json!({"serial": c.serial, "name": c.name, "roles": c.roles, "fingerprint": c.fingerprint, "not_before": c.not_before, "not_after": c.not_after, "revoked": state.revoked.contains(&c.serial)}))
            .collect();
        println!(
            "{}",
            json!({"name": state.name, "org_fingerprint": fingerprint, "relay": state.relay_url, "certificates": certs, "revoked": state.revoked, "revocation_sequence": state.revocation_sequence})
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("Clinic:           {}", escape(&state.name));
    println!("Organization key: {fingerprint}");
    println!("Relay:            {}", escape(&state.relay_url));
    println!("Directory:        {}", dir.display());
    if state.certificates.is_empty() {
        println!(
            "Certificates:     none yet (`hushwire org certify REQUEST --name NAME --roles agent`)"
        );
    } else {
        println!("Certificates:");
        println!("  SERIAL  ROLES                     VALID UNTIL           NAME");
        for c in &state.certificates {
            let revoked = if state.revoked.contains(&c.serial) {
                "  REVOKED"
            } else {
                ""
            };
            println!(
                "  {:<6}  {:<24}  {}  {}{revoked}",
                c.serial,
                c.roles,
                common::format_time(c.not_after.saturating_mul(1000)),
                escape(&c.name)
            );
        }
    }
    if state.revoked.is_empty() {
        println!("Revoked serials:  none");
    } else {
        let list: Vec<String> = state.revoked.iter().map(u64::to_string).collect();
        println!(
            "Revoked serials:  {} (revocation list {})",
            list.join(", "),
            state.revocation_sequence
        );
    }
    Ok(ExitCode::SUCCESS)
}

// ----- devices ------------------------------------------------------------------------------

/// Connects and waits for the relay, for the commands that need it.
async fn connected(g: &Global, wait: u64) -> CliResult<Client> {
    let client = open(g).await?;
    client.connect().await?;
    common::wait_connected(&client, Duration::from_secs(wait)).await?;
    Ok(client)
}

/// `org publish-revocations`.
pub async fn publish_revocations(g: &Global, list: &str, wait: u64) -> CliResult<ExitCode> {
    let list = read_revocation_list(list)?;
    let client = connected(g, wait).await?;
    let result = client.publish_revocation_list(&list).await;
    client.disconnect().await;
    result?;
    if g.json {
        println!(
            "{}",
            json!({"published": list.sequence(), "revoked": list.serials()})
        );
    } else {
        println!(
            "Published revocation list {} ({} serial(s) revoked).",
            list.sequence(),
            list.serials().len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `certificate request`.
pub async fn certificate_request(g: &Global) -> CliResult<ExitCode> {
    let client = open(g).await?;
    let identity = client.identity_key().await;
    let text = URL_SAFE_NO_PAD.encode(identity.to_bytes());
    if g.json {
        println!(
            "{}",
            json!({"request": text, "fingerprint": identity.fingerprint().to_string()})
        );
    } else {
        println!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `certificate install`.
pub async fn certificate_install(g: &Global, certificate: &str, wait: u64) -> CliResult<ExitCode> {
    let certificate = read_certificate(certificate)?;
    let client = connected(g, wait).await?;
    let result = client.install_certificate(&certificate).await;
    client.disconnect().await;
    result?;
    println!(
        "Installed certificate {} for {} ({}), valid until {}.",
        certificate.serial(),
        escape(certificate.name()),
        certificate.roles(),
        common::format_time(certificate.not_after().saturating_mul(1000))
    );
    Ok(ExitCode::SUCCESS)
}

/// `certificate show`.
pub async fn certificate_show(g: &Global) -> CliResult<ExitCode> {
    let client = open(g).await?;
    let Some(info) = client.clinic().await else {
        return Err(ClientError::NoClinic.into());
    };
    let (Some(cert), Some(status)) = (info.own_certificate, info.own_certificate_status) else {
        return Err(ClientError::NoOwnCertificate.into());
    };
    let status_text = match status {
        Ok(()) => "valid".to_owned(),
        Err(e) => format!("NOT VALID: {e}"),
    };
    if g.json {
        println!(
            "{}",
            json!({"serial": cert.serial(), "name": cert.name(), "roles": cert.roles().to_string(), "clinic": info.name, "not_before": cert.not_before(), "not_after": cert.not_after(), "status": status_text})
        );
    } else {
        println!("Certificate {} of {}", cert.serial(), escape(&info.name));
        println!("Name:   {}", escape(cert.name()));
        println!("Roles:  {}", cert.roles());
        println!(
            "Valid:  {} to {}",
            common::format_time(cert.not_before().saturating_mul(1000)),
            common::format_time(cert.not_after().saturating_mul(1000))
        );
        println!("Status: {status_text}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `register URL --certificate CERT [--clinic LINK]`.
pub async fn register_agent(
    g: &Global,
    url: &str,
    invite: Option<&str>,
    certificate: &str,
    link: Option<&str>,
) -> CliResult<ExitCode> {
    let certificate = read_certificate(certificate)?;
    let link = link.map(read_link).transpose()?;
    let client = open(g).await?;
    client
        .register_agent(url, invite, &certificate, link.as_ref())
        .await?;
    let clinic = client.clinic().await.map(|c| c.name).unwrap_or_default();
    if g.json {
        println!(
            "{}",
            json!({"registered": url, "certificate": certificate.serial(), "name": certificate.name(), "clinic": clinic})
        );
    } else {
        println!(
            "Registered with {url} as {} \u{2014} {} of {} (certificate {}).",
            escape(certificate.name()),
            certificate.roles(),
            escape(&clinic),
            certificate.serial()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `clinic add`.
pub async fn clinic_add(g: &Global, link: &str, invite: Option<&str>) -> CliResult<ExitCode> {
    let link = read_link(link)?;
    let client = open(g).await?;
    if let Some(pinned) = client.clinic().await
        && pinned.org_fingerprint != link.org().fingerprint().to_string()
    {
        return Err(ClientError::OtherClinicPinned {
            pinned: pinned.name,
            offered: link.name().to_owned(),
        }
        .into());
    }
    let registered_now = if client.relay_url().await.is_none() {
        // Registered first: if that fails, nothing is pinned.
        client.register(link.relay_url(), invite).await?;
        true
    } else {
        false
    };
    client.add_clinic(&link).await?;
    let fingerprint = link.org().fingerprint().to_string();
    if g.json {
        println!(
            "{}",
            json!({"clinic": link.name(), "org_fingerprint": fingerprint, "relay": link.relay_url(), "registered": registered_now})
        );
    } else {
        println!(
            "Pinned the clinic {} (organization key {fingerprint}).",
            escape(link.name())
        );
        if registered_now {
            println!("Registered with its relay {}.", escape(link.relay_url()));
        }
        println!(
            "Contacts holding one of its certificates are shown as verified agents of {}.",
            escape(link.name())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `clinic show`.
pub async fn clinic_show(g: &Global) -> CliResult<ExitCode> {
    let client = open(g).await?;
    let Some(info) = client.clinic().await else {
        return Err(ClientError::NoClinic.into());
    };
    if g.json {
        println!(
            "{}",
            json!({"name": info.name, "org_fingerprint": info.org_fingerprint, "relay": info.relay_url, "link": info.link, "revocation_sequence": info.revocation_sequence, "revoked": info.revoked_serials, "certificate": info.own_certificate.as_ref().map(|c| c.serial())})
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("Clinic:           {}", escape(&info.name));
    println!("Organization key: {}", info.org_fingerprint);
    println!("Relay:            {}", escape(&info.relay_url));
    match info.revocation_sequence {
        Some(seq) => println!(
            "Revocation list:  {seq} ({} serial(s) revoked)",
            info.revoked_serials.len()
        ),
        None => println!("Revocation list:  none yet"),
    }
    if let (Some(cert), Some(status)) = (&info.own_certificate, &info.own_certificate_status) {
        println!(
            "This device:      {} \u{2014} {} (certificate {}{})",
            escape(cert.name()),
            cert.roles(),
            cert.serial(),
            match status {
                Ok(()) => String::new(),
                Err(e) => format!(", NOT VALID: {e}"),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `wipe ADDRESS`.
pub async fn wipe(g: &Global, address: &str, wait: u64) -> CliResult<ExitCode> {
    let target: Address = address.parse()?;
    let client = connected(g, wait).await?;
    let result = client.wipe_device(target).await;
    client.disconnect().await;
    result?;
    if g.json {
        println!("{}", json!({"wipe_ordered": target.to_string()}));
    } else {
        println!(
            "Ordered {target} wiped: the relay refuses it from now on and hands it the order at \
             its next login."
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `org archive-policy --retention-days DAYS`.
pub fn org_archive_policy(
    g: &Global,
    dir: Option<&Path>,
    retention_days: u16,
) -> CliResult<ExitCode> {
    let dir = org_dir(dir)?;
    require_org(&dir)?;
    let secret = common::org_passphrase(g, &dir, false)?;
    let _lock = lock_org(&dir)?;
    let (_state, key) = open_org(&dir, &secret)?;
    let sequence = now_s();
    let policy_path = dir.join(format!("archive-policy-{sequence}.txt"));
    let key_path = dir.join(format!("archive-key-{sequence}.sealed"));
    if policy_path.exists() || key_path.exists() {
        return Err(fail(format!(
            "{} or {} exists (a policy was signed this second): try again; nothing changed",
            policy_path.display(),
            key_path.display()
        )));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|e| fail(format!("no randomness: {e}")))?;
    let archive = hushwire::archive::ArchiveSecretKey::from_secret_bytes(*seed)
        .ok_or_else(|| fail("the random archive key was unusable; try again"))?;
    let policy = hushwire_proto::conversation::ArchivePolicy::issue(
        &key,
        sequence,
        *archive.public(),
        retention_days,
    )
    .map_err(|e| fail(format!("cannot sign the archive policy: {e}")))?;
    // Its own passphrase: supervisors who read the archive never hold the organization key's.
    let archive_secret = common::archive_passphrase(true)?;
    if let (Secret::Passphrase(org), Secret::Passphrase(archive)) = (&secret, &archive_secret)
        && bool::from(subtle::ConstantTimeEq::ct_eq(
            org.trim().as_bytes(),
            archive.trim().as_bytes(),
        ))
    {
        return Err(fail(
            "the archive key's passphrase must differ from the organization key's: supervisors \
             who read the archive must not be able to certify staff; nothing was created",
        ));
    }
    let params = common::fast_kdf().unwrap_or(KdfParams::DEFAULT);
    let sealed = hushwire_client::seal_secret_file(
        &archive_secret,
        params,
        ARCHIVE_KEY_PURPOSE,
        archive.to_secret_bytes().as_slice(),
    )?;
    write_private(&key_path, &sealed, true)?;
    if let Err(e) = write_private(&policy_path, format!("{}\n", b64(&policy)).as_bytes(), true) {
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    if g.json {
        println!(
            "{}",
            json!({"sequence": sequence, "retention_days": retention_days,
                   "policy": policy_path.display().to_string(),
                   "key": key_path.display().to_string()})
        );
    } else {
        println!(
            "Signed archive policy {sequence} (retention {retention_days} days): {}\n\
             The archive's private key is in {}, sealed under the archive passphrase just given: \
             give both to the clinic's supervisors and keep a backup (without it the archive \
             cannot be read).\nPublish the policy from an admin device: hushwire org \
             publish-archive-policy {}",
            policy_path.display(),
            key_path.display(),
            policy_path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `org publish-archive-policy POLICY`.
pub async fn publish_archive_policy(g: &Global, policy: &str, wait: u64) -> CliResult<ExitCode> {
    let policy = decode_b64(policy, "archive policy", |b| {
        hushwire_proto::conversation::ArchivePolicy::from_bytes(b).map_err(|e| e.to_string())
    })?;
    let client = connected(g, wait).await?;
    let result = client.publish_archive_policy(&policy).await;
    client.disconnect().await;
    result?;
    if g.json {
        println!(
            "{}",
            json!({"published": policy.sequence(), "retention_days": policy.retention_days()})
        );
    } else {
        println!(
            "Published archive policy {} (retention {} days): conversation messages are now \
             also sealed to its key.",
            policy.sequence(),
            policy.retention_days()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `archive CONVERSATION --key-file FILE`.
pub async fn open_archive(
    g: &Global,
    conversation: &str,
    key_file: &Path,
    wait: u64,
) -> CliResult<ExitCode> {
    let id = crate::conversations::parse_conversation(conversation)?;
    let sealed = std::fs::read(key_file)
        .map_err(|e| fail(format!("cannot read {}: {e}", key_file.display())))?;
    let secret = common::archive_passphrase(false)?;
    let bytes = hushwire_client::open_secret_file(&secret, ARCHIVE_KEY_PURPOSE, &sealed).map_err(
        |e| match e {
            ClientError::WrongSecret => fail(format!(
                "wrong passphrase: {} did not open. The archive key (archive-key-SEQUENCE.sealed) \
                 is sealed under the archive passphrase chosen at `org archive-policy`, not the \
                 organization key's; is this the archive key file?",
                escape(&key_file.display().to_string())
            )),
            _ => fail(format!(
                "{} is not an archive key file (`hushwire org archive-policy` writes one)",
                key_file.display()
            )),
        },
    )?;
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| fail(format!("{} is damaged", key_file.display())))?;
    let key = hushwire::archive::ArchiveSecretKey::from_secret_bytes(seed)
        .ok_or_else(|| fail(format!("{} is damaged", key_file.display())))?;
    let client = connected(g, wait).await?;
    let result = client.open_archive(id, &key).await;
    client.disconnect().await;
    let entries = result?;
    let mut out = Vec::new();
    for e in &entries {
        let flag = if e.member_at_epoch {
            ""
        } else {
            " [NOT VERIFIED: not a member that writes at its epoch, or not the device that filed it]"
        };
        let line = match &e.payload {
            hushwire::payload::Payload::ConversationMessage(m) => {
                // The message id, so a recall line ("recalled message …") names which one.
                let header = format!(
                    "[{}] message {} {} (device {}){flag}:",
                    common::format_clock(m.sent_at_ms),
                    m.id,
                    escape(&e.sender_shown),
                    e.sender_device
                );
                if g.json {
                    out.push(
                        json!({"kind": "message", "id": m.id.to_string(), "from": e.sender_shown,
                        "device": e.sender_device, "epoch": e.epoch, "verified": e.member_at_epoch,
                        "sent_at_ms": m.sent_at_ms, "filed_at_ms": e.filed_at_ms,
                        "text": String::from_utf8_lossy(&m.content)}),
                    );
                    continue;
                }
                crate::display::message_block(&header, "", &String::from_utf8_lossy(&m.content))
            }
            hushwire::payload::Payload::Recall { id: message, .. } => {
                if g.json {
                    out.push(
                        json!({"kind": "recall", "id": message.to_string(), "from": e.sender_shown,
                        "verified": e.member_at_epoch, "filed_at_ms": e.filed_at_ms}),
                    );
                    continue;
                }
                format!(
                    "[{}] {}{flag} recalled message {message}",
                    common::format_clock(e.filed_at_ms),
                    escape(&e.sender_shown)
                )
            }
            _ => continue,
        };
        println!("{line}");
    }
    if g.json {
        println!("{}", json!(out));
    } else if entries.is_empty() {
        println!("The archive holds nothing for this conversation.");
    }
    Ok(ExitCode::SUCCESS)
}
