//! Clinic links (`docs/clinic.md` §2): one line of text a clinic publishes (on its web site, as
//! a QR code at the front desk) that carries its organization key, its name and its relay's URL,
//! signed by that key. A patient who adds it pins the clinic.

use core::fmt;
use core::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{
    CLINIC_LINK_TYPE, CLINIC_VERSION, OrgKey, check_name, put_name, read_clinic_header, read_name,
};
use crate::codec::{Codec, DecodeError, Reader};
use crate::keys::SIGNATURE_LEN;
use crate::labels;
use crate::signer::Signer;

/// What starts a clinic link's text form.
pub const CLINIC_LINK_PREFIX: &str = "hushwire-clinic:";

/// Longest relay URL in a link, in bytes.
pub const MAX_RELAY_URL_LEN: usize = 200;

/// Longest text form accepted, in characters: the prefix and the base64url of the largest link.
const MAX_LINK_TEXT_LEN: usize =
    16 + (2 + 32 + 1 + 64 + 1 + MAX_RELAY_URL_LEN + 64).div_ceil(3) * 4;

/// Checks a relay URL as a link may carry it: printable ASCII without spaces, 1 to
/// [`MAX_RELAY_URL_LEN`] bytes, `wss://` or `ws://` and a host. (Whether `ws://` is allowed —
/// loopback only — is the client's rule when it dials.)
pub fn check_relay_url(url: &str) -> Result<(), DecodeError> {
    let invalid = DecodeError::InvalidValue { field: "relay url" };
    if url.is_empty() || url.len() > MAX_RELAY_URL_LEN || !url.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid);
    }
    let rest = url
        .strip_prefix("wss://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or(invalid)?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid);
    }
    Ok(())
}

/// A signed clinic link:
///
/// `version[1]=1 ‖ type[1]=0x22 ‖ org_key[32] ‖ name_len[1] ‖ name[≤64] ‖ url_len[1] ‖
/// relay_url[≤200] ‖ signature[64]`, the signature the organization key's over
/// `SIG_CLINIC_LINK ‖` every byte before it. Its text form is [`CLINIC_LINK_PREFIX`] followed by
/// the unpadded base64url of those bytes.
///
/// The link carries the organization key itself (its fingerprint is what people compare), so a
/// patient needs nothing from the relay to check agents; the signature means the name and URL
/// cannot be altered without the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClinicLink {
    org: OrgKey,
    name: String,
    relay_url: String,
    signature: [u8; SIGNATURE_LEN],
}

impl ClinicLink {
    /// Signs a link for the clinic `name` at `relay_url`.
    ///
    /// # Errors
    /// `InvalidValue` for a bad name ([`super::check_name`]) or URL ([`check_relay_url`]).
    pub fn issue<S: Signer + ?Sized>(
        org_signer: &S,
        name: &str,
        relay_url: &str,
    ) -> Result<Self, DecodeError> {
        check_name(name)?;
        check_relay_url(relay_url)?;
        let mut link = Self {
            org: OrgKey::new(org_signer.verifying_key())?,
            name: name.to_owned(),
            relay_url: relay_url.to_owned(),
            signature: [0; SIGNATURE_LEN],
        };
        link.signature = org_signer.sign(labels::SIG_CLINIC_LINK, &link.signed_part());
        Ok(link)
    }

    /// The clinic's organization key.
    pub fn org(&self) -> &OrgKey {
        &self.org
    }

    /// The clinic's display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The clinic's relay.
    pub fn relay_url(&self) -> &str {
        &self.relay_url
    }

    fn signed_part(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(36 + self.name.len() + self.relay_url.len());
        out.push(CLINIC_VERSION);
        out.push(CLINIC_LINK_TYPE);
        out.extend_from_slice(&self.org.to_bytes());
        put_name(&mut out, &self.name);
        out.push(u8::try_from(self.relay_url.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(self.relay_url.as_bytes());
        out
    }
}

impl Codec for ClinicLink {
    const NAME: &'static str = "clinic link";

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.signed_part());
        out.extend_from_slice(&self.signature);
    }

    /// Decodes and verifies the signature under the key the link carries: a link whose name or
    /// URL was altered does not decode.
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        read_clinic_header(r, CLINIC_LINK_TYPE, Self::NAME)?;
        let org = OrgKey::read(r)?;
        let name = read_name(r, "clinic name")?;
        let url_len = usize::from(r.u8("relay url")?);
        if url_len > MAX_RELAY_URL_LEN {
            return Err(DecodeError::TooLong {
                field: "relay url",
                len: url_len,
                max: MAX_RELAY_URL_LEN,
            });
        }
        let url_bytes = r.take(url_len, "relay url")?;
        let relay_url = core::str::from_utf8(url_bytes)
            .map_err(|_| DecodeError::InvalidValue { field: "relay url" })?
            .to_owned();
        check_relay_url(&relay_url)?;
        let link = Self {
            org,
            name,
            relay_url,
            signature: r.array("clinic link signature")?,
        };
        if !link.org.verify(
            labels::SIG_CLINIC_LINK,
            &link.signed_part(),
            &link.signature,
        ) {
            return Err(DecodeError::InvalidValue {
                field: "clinic link signature",
            });
        }
        Ok(link)
    }
}

impl fmt::Display for ClinicLink {
    /// The text form: `hushwire-clinic:` and base64url.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{CLINIC_LINK_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(self.to_bytes())
        )
    }
}

impl fmt::Debug for ClinicLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClinicLink")
            .field("org", &self.org)
            .field("name", &self.name)
            .field("relay_url", &self.relay_url)
            .finish_non_exhaustive()
    }
}

impl FromStr for ClinicLink {
    type Err = DecodeError;

    /// Parses the text form (surrounding white space ignored), then decodes and verifies.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() > MAX_LINK_TEXT_LEN {
            return Err(DecodeError::TooLong {
                field: "clinic link",
                len: s.len(),
                max: MAX_LINK_TEXT_LEN,
            });
        }
        let body = s
            .strip_prefix(CLINIC_LINK_PREFIX)
            .ok_or(DecodeError::InvalidValue {
                field: "clinic link prefix (expected hushwire-clinic:)",
            })?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| DecodeError::InvalidValue {
                field: "clinic link (not base64url)",
            })?;
        Self::from_bytes(&bytes)
    }
}
