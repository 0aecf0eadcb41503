//! Clinic identities (`docs/clinic.md`): a clinic's **organization key**, the **agent
//! certificates** it signs, its **revocation list**, the **clinic link** a patient adds, a
//! person's signed **device list**, and an administrator's signed **wipe command**.
//!
//! Everything here is public data with signature checks and nothing that decrypts, so the relay
//! (which enforces roles) and every client (which shows "Name — verified agent of Clinic") run
//! the same checks. Every structure starts with `CLINIC_VERSION ‖ type`, has one canonical
//! encoding, and ends with an Ed25519 signature over a context label and every byte before it.
//! Times are Unix seconds; sequence numbers only ever grow (a client refuses a rollback).

mod certificate;
mod device_list;
mod link;
mod revocation;
mod wipe;

use core::fmt;

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

pub use certificate::{AgentCertificate, CertificateError, Role, Roles};
pub use device_list::{DeviceList, DeviceListError, MAX_DEVICES};
pub use link::{CLINIC_LINK_PREFIX, ClinicLink, MAX_RELAY_URL_LEN, check_relay_url};
pub use revocation::{MAX_REVOKED, RevocationList};
pub use wipe::{WipeCommand, WipeError};

use crate::codec::{DecodeError, Reader};
use crate::keys::{ED25519_KEY_LEN, Fingerprint, SIGNATURE_LEN, canonical_ed25519_key};
use crate::labels;

/// The version byte of every clinic structure (`docs/clinic.md` §1).
pub const CLINIC_VERSION: u8 = 1;

/// Wire type byte of an [`AgentCertificate`].
pub const CERTIFICATE_TYPE: u8 = 0x20;
/// Wire type byte of a [`RevocationList`].
pub const REVOCATION_LIST_TYPE: u8 = 0x21;
/// Wire type byte of a [`ClinicLink`].
pub const CLINIC_LINK_TYPE: u8 = 0x22;
/// Wire type byte of a [`DeviceList`].
pub const DEVICE_LIST_TYPE: u8 = 0x23;
/// Wire type byte of a [`WipeCommand`].
pub const WIPE_COMMAND_TYPE: u8 = 0x24;

/// Longest display name (of an agent or a clinic), in UTF-8 bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A clinic's organization key: the Ed25519 public key whose private half the clinic's
/// administrator keeps offline. It signs agent certificates, revocation lists and clinic links.
///
/// Only canonical keys of large order decode (the same rule as identity keys, `protocol.md`
/// §3.1), so one clinic has one fingerprint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OrgKey(VerifyingKey);

impl OrgKey {
    /// From a verifying key (for example the administrator's freshly made key). Refuses a weak
    /// or non-canonical key.
    pub fn new(key: VerifyingKey) -> Result<Self, DecodeError> {
        Self::from_bytes(key.as_bytes())
    }

    /// Decodes 32 bytes, refusing a weak or non-canonical key.
    pub fn from_bytes(bytes: &[u8; ED25519_KEY_LEN]) -> Result<Self, DecodeError> {
        canonical_ed25519_key(bytes, "organization key").map(Self)
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; ED25519_KEY_LEN] {
        self.0.to_bytes()
    }

    /// The Ed25519 key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }

    /// SHA-256(`ORG_KEY_FINGERPRINT ‖ key`): what an administrator reads out to compare.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(labels::ORG_KEY_FINGERPRINT);
        h.update(self.0.as_bytes());
        Fingerprint(h.finalize().into())
    }

    /// Checks a signature over `context ‖ message` (strict Ed25519).
    pub fn verify(&self, context: &[u8], message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        crate::keys::verify_signature(&self.0, context, message, signature)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Self::from_bytes(&r.array("organization key")?)
    }
}

impl fmt::Debug for OrgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrgKey({})", self.fingerprint())
    }
}

/// A display name as it may travel in a signed structure: 1 to [`MAX_NAME_LEN`] bytes of UTF-8,
/// no control characters and no bidirectional-override characters, no leading or trailing
/// white space. Names are shown to people; these rules make what is shown what was signed.
pub fn check_name(name: &str) -> Result<(), DecodeError> {
    check_line(name, MAX_NAME_LEN).map_err(|_| DecodeError::InvalidValue {
        field: "display name",
    })
}

/// One line of text under the display-name rules except its length: 1 to `max_len` bytes, no
/// refused character (see [`check_name`]), no leading or trailing white space. Used for a
/// hand-off note (`conversations.md` §8.5), which is longer than a name.
pub fn check_line(line: &str, max_len: usize) -> Result<(), DecodeError> {
    let invalid = DecodeError::InvalidValue { field: "line" };
    if line.is_empty() || line.len() > max_len || line.trim() != line {
        return Err(invalid);
    }
    if line.chars().any(is_forbidden_in_name) {
        return Err(invalid);
    }
    Ok(())
}

/// Control characters; the Unicode bidirectional marks, embeddings, overrides and isolates (which
/// can make a name display as another name); the line and paragraph separators; and the
/// characters that display as nothing (zero-width spaces and joiners, invisible operators, soft
/// hyphen, fillers, tags), so that two names that look the same are the same bytes.
fn is_forbidden_in_name(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{034f}'
                | '\u{061c}'
                | '\u{115f}'
                | '\u{1160}'
                | '\u{17b4}'
                | '\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{3164}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff0}'..='\u{fffb}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0000}'..='\u{e0fff}'
        )
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    // Names are checked on construction; a longer one would not decode.
    out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(name.as_bytes());
}

fn read_name(r: &mut Reader<'_>, field: &'static str) -> Result<String, DecodeError> {
    let len = usize::from(r.u8(field)?);
    if len > MAX_NAME_LEN {
        return Err(DecodeError::TooLong {
            field,
            len,
            max: MAX_NAME_LEN,
        });
    }
    let bytes = r.take(len, field)?;
    let name = core::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidValue { field })?;
    check_name(name).map_err(|_| DecodeError::InvalidValue { field })?;
    Ok(name.to_owned())
}

/// Reads the `CLINIC_VERSION ‖ type` header.
fn read_clinic_header(
    r: &mut Reader<'_>,
    expected_type: u8,
    structure: &'static str,
) -> Result<(), DecodeError> {
    crate::codec::read_versioned_header(r, CLINIC_VERSION, expected_type, structure)
}

/// Whether `new_sequence` may replace `current` (a stored sequence, if any): only a strictly
/// higher sequence does, so a replayed or older signed list is refused (`clinic.md` §1).
pub fn is_newer(current: Option<u64>, new_sequence: u64) -> bool {
    current.is_none_or(|c| new_sequence > c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_display_as_something_else_are_refused() {
        assert!(check_name("Dr. Ada Okafor").is_ok());
        assert!(check_name("Zoë Müller — Front desk").is_ok());
        for bad in [
            "",
            " Ada",
            "Ada ",
            "Ada\nBob",
            "Ada\u{1b}[31m",
            "Ada\u{202e}kcaB",
            "Ada\u{2066}x",
            "\u{feff}Ada",
            "Ada\u{200b}",
            "A\u{00ad}da",
            "Ada\u{061c}",
            "Ada\u{2060}x",
            "\u{3164}",
            "Ada\u{e0041}",
            &"a".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(check_name(&"a".repeat(MAX_NAME_LEN)).is_ok());
    }

    #[test]
    fn weak_and_non_canonical_org_keys_are_refused() {
        assert!(OrgKey::from_bytes(&[0; 32]).is_err());
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        assert!(OrgKey::from_bytes(&identity_point).is_err());
        let good = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
        assert!(OrgKey::new(good).is_ok());
    }

    #[test]
    fn only_a_higher_sequence_is_newer() {
        assert!(is_newer(None, 0));
        assert!(is_newer(Some(3), 4));
        assert!(!is_newer(Some(3), 3));
        assert!(!is_newer(Some(3), 2));
    }
}
