//! One error type for the client, precise and non-leaking: no variant carries plaintext, key
//! material or a contact's name beyond what the caller passed in.

use core::fmt;

use hushwire::proto::clinic::{CertificateError, WipeCommand};
use hushwire::proto::codec::DecodeError;
use hushwire::proto::relay::ErrorCode;

/// Why a client operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// No store exists at the path: run `Client::create` (`hushwire init`) first.
    NotInitialized(std::path::PathBuf),
    /// A store already exists at the path.
    AlreadyInitialized(std::path::PathBuf),
    /// Another process (or another open client in this process) has the store open: one store
    /// has one owner at a time (`docs/client.md` §3.5).
    StoreInUse {
        /// The store.
        path: std::path::PathBuf,
        /// The holder's process id, as its lock file says.
        pid: Option<u32>,
        /// What the holder called itself (for example `hushwire chat`).
        holder: Option<String>,
    },
    /// The passphrase or key does not open this store.
    WrongSecret,
    /// The store was created with a passphrase and opened with a raw key, or the reverse.
    SecretKindMismatch {
        /// What the store expects: "passphrase" or "key".
        expected: &'static str,
    },
    /// The passphrase is empty or too short.
    WeakPassphrase {
        /// The minimum length in characters.
        min_chars: usize,
    },
    /// The store was written by a newer version of this library.
    StoreTooNew {
        /// The store's schema version.
        found: i64,
        /// The newest this library understands.
        supported: i64,
    },
    /// A stored value failed to open: the file was altered or is corrupt.
    CorruptStore(&'static str),
    /// The store file holds no key derivation parameters: its creation was interrupted (a
    /// crash during `create` or `join`) before anything was stored in it.
    StoreIncomplete(std::path::PathBuf),
    /// The local database failed.
    Database(sqlx::Error),
    /// No contact by that name or id.
    UnknownContact(String),
    /// A contact name must have 1 to 64 printable characters.
    BadContactName(String),
    /// A contact with that name already exists with another address.
    ContactExists(String),
    /// The address given is already another contact's: rename that one instead.
    AddressTaken {
        /// The contact that has the address.
        existing: String,
        /// The name asked for.
        requested: String,
    },
    /// The outbox still holds messages or receipts for the contact being removed.
    OutboxNotEmpty {
        /// The contact.
        contact: String,
        /// How many payloads are queued.
        queued: usize,
    },
    /// The text is not a Hushwire address (`<64 hex digits>:<device id>`).
    BadAddress(String),
    /// The contact's identity key changed; sending is blocked until the user re-verifies the
    /// safety number.
    IdentityChangedUnverified(String),
    /// The contact's identity key is not known yet (no session and no relay to fetch it from).
    IdentityUnknown(String),
    /// The safety number given does not match the one computed.
    SafetyNumberMismatch,
    /// The relay returned a bundle for another identity than the contact's: the relay is
    /// misbehaving or compromised. Nothing was sent.
    RelayIdentityMismatch(String),
    /// The message is larger than one message may be.
    MessageTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// This device is not registered with a relay yet (`register`).
    NotRegistered,
    /// The relay URL is not `ws://` or `wss://`, or a plain `ws://` URL names a non-loopback host.
    BadRelayUrl(String),
    /// The relay could not be reached or the connection dropped.
    Connection(String),
    /// The relay refused a request.
    Relay(ErrorCode),
    /// A clinic conversation request was refused, by this device's check (the rule of
    /// `conversations.md` §4.3) or by the relay (its code, §5.3); nothing changed.
    Conversation(String),
    /// The relay sent bytes that do not decode.
    RelayProtocol(DecodeError),
    /// The relay did not answer in time.
    Timeout,
    /// The relay closed this connection because the same device connected again elsewhere
    /// (close code 4001, `relay-protocol.md` §1): another copy of this store, or another
    /// process, is online as this device. The client does not reconnect on its own, so two
    /// copies never knock each other off in a loop.
    ConnectedElsewhere,
    /// The relay presented a relay key other than the one this device pinned
    /// (`client.md` §5.16): it may be another deployment forwarding its challenge to log in
    /// there as this device. Nothing was answered and nothing stored; the client does not
    /// retry on its own. Both are key fingerprints (64 hex digits).
    RelayKeyChanged {
        /// The fingerprint this device pinned.
        pinned: String,
        /// The fingerprint the relay presented.
        presented: String,
    },
    /// The message is not in the outbox any more (the relay holds it, so it cannot be taken
    /// back), or this device never queued it.
    NotCancellable(String),
    /// The address given for a contact is this device's own identity.
    OwnAddress,
    /// The backup's path is taken: a backup never overwrites anything.
    BackupExists(std::path::PathBuf),
    /// The file given to restore is not a Hushwire store (or cannot be read).
    NotABackup(std::path::PathBuf),
    /// The backup is a copy of another store (another identity) than the one it would replace;
    /// restoring it needs an explicit confirmation.
    BackupOfAnotherStore(std::path::PathBuf),
    /// Not a message id: 32 hex digits are expected.
    BadMessageId(String),
    /// A session operation failed.
    Session(String),
    /// Reading or writing a file failed.
    Io(std::io::Error),
    /// The device's audit chain failed verification.
    Audit(String),
    /// A transcript or export failed verification.
    Transcript(String),
    /// The text is not a clinic link (`hushwire-clinic:` and base64url), or its signature does
    /// not verify.
    BadClinicLink(DecodeError),
    /// The text or file is not an agent certificate, a revocation list or an identity key as
    /// `hushwire` prints them (one line of base64url). Names what was expected.
    BadClinicData {
        /// What was expected (for example "agent certificate").
        expected: &'static str,
        /// Why it did not decode.
        reason: String,
    },
    /// No clinic is pinned on this device (`hushwire clinic add LINK`).
    NoClinic,
    /// This device already pinned another clinic (another organization key): a device belongs
    /// to one clinic. Both are organization key fingerprints.
    OtherClinicPinned {
        /// The pinned clinic's name.
        pinned: String,
        /// The name in the link or certificate given.
        offered: String,
    },
    /// The agent certificate given is for another identity than this device's.
    CertificateNotOwn {
        /// The certified name.
        name: String,
    },
    /// This device's own certificate does not verify (expired, revoked, another clinic's…).
    OwnCertificateRefused(CertificateError),
    /// This device holds no agent certificate (`hushwire register URL --certificate CERT`).
    NoOwnCertificate,
    /// The contact presents an agent certificate that does not verify under the pinned
    /// clinic: nothing is sent to it. The reason says which check failed.
    AgentNotVerified {
        /// The contact's name.
        contact: String,
        /// Why the certificate was refused.
        reason: CertificateError,
    },
    /// The revocation list is not signed by the pinned clinic's organization key.
    ForeignRevocationList,
    /// The relay handed this device a wipe order at login. Handled inside the client: an app
    /// sees [`ClientError::Wiped`] or [`ClientError::WipeRefused`] instead.
    WipeOrdered(Box<WipeCommand>),
    /// A clinic administrator wiped this device: its store was erased. The client stopped.
    Wiped {
        /// The administrator's certified name.
        by: String,
        /// The clinic's name.
        clinic: String,
    },
    /// The relay handed this device a wipe order that does not verify (forged, not from an
    /// admin of the pinned clinic, for another device, or no clinic pinned): nothing was
    /// erased. The client stopped (the relay refuses this device from now on).
    WipeRefused(String),
    /// A wipe this device ordered was refused: only a staff device of the clinic (one whose
    /// identity holds the clinic's certificate) can be wiped, never a patient's device nor the
    /// ordering device itself (`docs/clinic.md` §6). Nothing was ordered.
    WipeTargetRefused(&'static str),
    /// The relay refuses this device at login on the clinic's behalf, so the client stopped
    /// reconnecting (`docs/client.md` §8.3): `Suspended` (an administrator suspended it, or its
    /// person's device list no longer names it) or `CertificateRefused` (its agent certificate
    /// was revoked). An explicit `connect` asks again.
    RefusedByClinic(ErrorCode),
    /// A device list was refused (`docs/client.md` §8.6): not signed by its person, a device
    /// this device cannot remove, more than 16 devices, or the relay holds a newer one.
    DeviceListRefused(String),
    /// The contact's newest signed device list names none of the devices this device knows
    /// (`docs/client.md` §8.6): nothing was sent or recorded.
    NoDeviceLeft(String),
    /// Linking a device failed (`docs/client.md` §8.6): a malformed, expired, used or wrong
    /// code, or a relay other than the other device's.
    Linking(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotInitialized(p) => write!(
                f,
                "no Hushwire store at {}: create one first (`hushwire init`)",
                p.display()
            ),
            Self::AlreadyInitialized(p) => write!(
                f,
                "a Hushwire store already exists at {}; open it instead, or choose another home",
                p.display()
            ),
            Self::StoreInUse { path, pid, holder } => {
                write!(f, "the store {} is in use", path.display())?;
                match (pid, holder) {
                    (Some(pid), Some(holder)) => write!(f, " by process {pid} ({holder})")?,
                    (Some(pid), None) => write!(f, " by process {pid}")?,
                    _ => write!(f, " by another process")?,
                }
                f.write_str(": close it first (one process at a time per store)")
            }
            Self::WrongSecret => f.write_str("wrong passphrase: the store did not open"),
            Self::SecretKindMismatch { expected } => {
                write!(f, "this store is unlocked with a {expected}, not the other kind of secret")
            }
            Self::WeakPassphrase { min_chars } => {
                write!(f, "the passphrase must have at least {min_chars} characters")
            }
            Self::StoreTooNew { found, supported } => write!(
                f,
                "the store has schema version {found}; this version understands up to {supported}: upgrade Hushwire"
            ),
            Self::StoreIncomplete(p) => write!(
                f,
                "the store {} was never finished (its creation was interrupted) and holds \
                 nothing: remove it and its -wal, -shm and .lock files, then create it again \
                 (hushwire init; for a linked device, a new code from hushwire devices link, and \
                 remove the unused device number there with hushwire devices remove)",
                p.display()
            ),
            Self::CorruptStore(what) => write!(
                f,
                "the local store is damaged ({what} did not authenticate): restore it from a backup"
            ),
            Self::Database(e) => write!(f, "local database error: {e}"),
            Self::UnknownContact(c) => {
                write!(f, "no contact named {c:?} (see `hushwire contact list`)")
            }
            Self::BadContactName(c) => write!(
                f,
                "{c:?} is not a usable contact name: use 1 to 64 printable characters"
            ),
            Self::ContactExists(c) => write!(
                f,
                "a contact named {c:?} already exists with another address; pass --replace if their identity really changed"
            ),
            Self::AddressTaken { existing, requested } => write!(
                f,
                "that address is already the contact {existing:?}; to call it {requested:?}, run \
                 `hushwire contact rename {existing} {requested}`"
            ),
            Self::OutboxNotEmpty { contact, queued } => write!(
                f,
                "{queued} message(s) or receipt(s) to {contact:?} are still queued; send them \
                 first (`hushwire recv`), or pass --discard-queued to drop them with the contact"
            ),
            Self::BadAddress(a) => write!(
                f,
                "{a:?} is not a Hushwire address: expected 64 hex digits, a colon and a device id (see `hushwire whoami`)"
            ),
            Self::IdentityChangedUnverified(c) => write!(
                f,
                "the identity key of {c:?} changed: compare safety numbers and run `hushwire verify {c}` before sending"
            ),
            Self::IdentityUnknown(c) => write!(
                f,
                "the identity of {c:?} is not known yet: connect to the relay first (it fetches their prekey bundle)"
            ),
            Self::SafetyNumberMismatch => f.write_str(
                "the safety number does not match: do not trust this contact until you find out why",
            ),
            Self::RelayIdentityMismatch(c) => write!(
                f,
                "the relay returned another identity than {c:?}'s: the relay may be compromised; nothing was sent"
            ),
            Self::MessageTooLong { len, max } => {
                write!(f, "the message has {len} bytes; the limit is {max}")
            }
            Self::NotRegistered => {
                f.write_str("this device is not registered with a relay yet (`hushwire register URL`)")
            }
            Self::BadRelayUrl(u) => write!(
                f,
                "{u:?} is not a usable relay URL: use wss://host[:port], or ws:// on a loopback address"
            ),
            Self::Connection(reason) => write!(f, "relay connection failed: {reason}"),
            Self::Relay(ErrorCode::RegistrationRefused) => f.write_str(
                "the relay refused the registration: it registers only invited devices \
                 (`--invite TOKEN`, from `hushwire-relay invite` on the relay's host), and the \
                 invite given, if any, is unknown, used or expired; or this is a further device \
                 of a person whose device list does not name it (link it again with \
                 `hushwire devices link`)",
            ),
            Self::Relay(ErrorCode::Forbidden) => f.write_str(
                "the relay refused: this device's role does not allow it (an admin action needs \
                 a device registered with an admin certificate of the clinic)",
            ),
            Self::Relay(ErrorCode::Suspended) => f.write_str(
                "the relay refuses this device: it was removed from its person's device list, \
                 or a clinic's administrator suspended or wiped it",
            ),
            Self::Relay(ErrorCode::CertificateRefused) => f.write_str(
                "the relay refused the agent certificate: it is from another clinic than the \
                 relay's, forged, expired, not yet valid, revoked, or for another identity",
            ),
            Self::Relay(ErrorCode::ListRefused) => f.write_str(
                "the relay refused the list: not signed by its clinic, or not newer than the one \
                 it holds (a list is only ever replaced by a higher sequence)",
            ),
            Self::Relay(code) => write!(f, "the relay refused the request: {code:?}"),
            Self::RelayProtocol(e) => write!(f, "the relay sent a malformed frame: {e}"),
            Self::Timeout => f.write_str("the relay did not answer in time"),
            Self::OwnAddress => f.write_str(
                "that address is this device's own identity: a contact is someone else (their `hushwire whoami` shows theirs)",
            ),
            Self::BackupExists(path) => write!(
                f,
                "{} exists: a backup never overwrites a file; choose a new file name",
                path.display()
            ),
            Self::NotABackup(path) => write!(
                f,
                "{} is not a Hushwire store backup (make one with `hushwire backup FILE`)",
                path.display()
            ),
            Self::BackupOfAnotherStore(path) => write!(
                f,
                "the backup is of another store (another identity) than {}; restoring it would replace that identity and its transcripts (they would be kept aside, not deleted): confirm with --replace-other-store",
                path.display()
            ),
            Self::BadMessageId(text) => write!(
                f,
                "{text:?} is not a message id (32 hex digits, as `hushwire outbox list` shows them)"
            ),
            Self::NotCancellable(id) => write!(
                f,
                "message {id} is not in the outbox: the relay already holds it (it cannot be taken back), or no such message was queued"
            ),
            Self::ConnectedElsewhere => f.write_str(
                "this device connected to the relay elsewhere (another copy of this store is \
                 online); not reconnecting: close the other one, then connect again",
            ),
            Self::RelayKeyChanged { pinned, presented } => write!(
                f,
                "the relay's key changed: this device pinned relay key {pinned}, but the relay \
                 presents {presented}. It may be another relay trying to log in elsewhere as this \
                 device, so nothing was answered and the client will not retry. Ask the relay's \
                 operator for its key fingerprint; only if it is the new one, pin it with \
                 `hushwire register URL --accept-relay-key {presented}`"
            ),
            Self::Session(e) => write!(f, "session error: {e}"),
            Self::Io(e) => write!(f, "{e}"),
            Self::Transcript(e) => write!(f, "transcript verification failed: {e}"),
            Self::Audit(e) => write!(f, "audit chain verification failed: {e}"),
            Self::BadClinicLink(e) => write!(
                f,
                "that is not a valid clinic link ({e}): a clinic link starts with \
                 `hushwire-clinic:` and comes from the clinic (`hushwire org link`)"
            ),
            Self::BadClinicData { expected, reason } => write!(
                f,
                "that is not a valid {expected} ({reason}): give the one line of base64url (or a \
                 file holding it) that `hushwire` printed"
            ),
            Self::Conversation(why) => write!(f, "conversation: {why}; nothing changed"),
            Self::NoClinic => f.write_str(
                "no clinic is pinned on this device: add the clinic's link first \
                 (`hushwire clinic add LINK`)",
            ),
            Self::OtherClinicPinned { pinned, offered } => write!(
                f,
                "this device belongs to the clinic {pinned:?}; {offered:?} is another clinic \
                 (another organization key). A device belongs to one clinic: use another home"
            ),
            Self::CertificateNotOwn { name } => write!(
                f,
                "the certificate (for {name:?}) certifies another identity than this device's: \
                 ask the administrator to certify this device's request \
                 (`hushwire certificate request`)"
            ),
            Self::OwnCertificateRefused(e) => write!(f, "this device's certificate: {e}"),
            Self::NoOwnCertificate => f.write_str(
                "this device holds no agent certificate (`hushwire register URL --certificate \
                 CERT`, or `hushwire certificate install CERT`)",
            ),
            Self::AgentNotVerified { contact, reason } => write!(
                f,
                "{contact:?} is not a verified agent of the clinic: {reason}; nothing was sent"
            ),
            Self::ForeignRevocationList => f.write_str(
                "the revocation list is not signed by this device's clinic; nothing changed",
            ),
            Self::WipeOrdered(_) => f.write_str("the relay handed over a wipe order"),
            Self::Wiped { by, clinic } => {
                write!(f, "This device was wiped by {by}, admin of {clinic}")
            }
            Self::WipeRefused(reason) => write!(
                f,
                "the relay handed this device a wipe order that does not verify ({reason}): \
                 nothing was erased, but the relay refuses this device; tell the clinic's \
                 administrator"
            ),
            Self::RefusedByClinic(ErrorCode::CertificateRefused) => f.write_str(
                "the relay refuses this device's agent certificate: the clinic revoked it (or it \
                 no longer verifies); ask the clinic's administrator for a new certificate, then \
                 `hushwire register URL --certificate NEW --clinic LINK`",
            ),
            Self::RefusedByClinic(_) => f.write_str(
                "the relay refuses this device: it was removed from its person's device list \
                 (`hushwire devices list` on another of your devices shows the list; a removed \
                 device cannot come back: link a new one with `hushwire devices link`), or, \
                 with a clinic, its administrator suspended or wiped it",
            ),
            Self::DeviceListRefused(why) => write!(f, "device list refused: {why}"),
            Self::Linking(why) => write!(f, "linking this device failed: {why}"),
            Self::NoDeviceLeft(name) => write!(
                f,
                "{name} has no device left that messages can go to: their signed device list \
                 removed every device this device knows; nothing was sent"
            ),
            Self::WipeTargetRefused(why) => write!(
                f,
                "the wipe was refused: {why}; only the clinic's staff devices (holding a \
                 certificate of the clinic) can be wiped, never a patient's device nor this \
                 device itself (suspend a patient's device at the relay instead); nothing was \
                 ordered"
            ),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Database(e) => Some(e),
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<hushwire::payload::InvalidMessageId> for ClientError {
    fn from(e: hushwire::payload::InvalidMessageId) -> Self {
        Self::BadMessageId(e.0)
    }
}

impl From<sqlx::Error> for ClientError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// Shorthand for results of client operations.
pub type Result<T, E = ClientError> = core::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A newcomer saw only `RegistrationRefused`; the text must say what to do.
    #[test]
    fn a_refused_registration_says_an_invite_is_needed() {
        let text = ClientError::Relay(ErrorCode::RegistrationRefused).to_string();
        assert!(text.contains("--invite"), "{text}");
        assert!(!text.contains("RegistrationRefused"), "{text}");
    }
}
