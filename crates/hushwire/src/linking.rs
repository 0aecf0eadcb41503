//! Linking a new device to a person's identity (`docs/clinic.md` §5.1), as Signal links devices:
//! every device of a person shares one identity key, and a device that already holds it hands it
//! to the new one through the relay, encrypted under a one-time **linking code** that the old
//! device shows and the person types (or scans) on the new one.
//!
//! ```text
//! code      = secret[16] ‖ relay_url            text: "hushwire-link:" ‖ base64url(code)
//! slot      = SHA-256(LINK_SLOT ‖ secret)                  (what the relay files it under)
//! key       = HKDF-SHA256(salt = 0^32, ikm = secret, info = KDF_LINK_KEY, L = 32)
//! sealed    = version[1]=0x01 ‖ nonce[24] ‖ XChaCha20-Poly1305(key, nonce, AD = version ‖ slot,
//!             plaintext)
//! plaintext = signing_seed[32] ‖ dh_secret[32] ‖ device_id[4] ‖ relay_key[32] ‖ extra_len[4]
//!             ‖ extra[≤ MAX_PROVISIONING_EXTRA]
//! ```
//!
//! The relay sees only the slot (a hash of the secret) and the sealed bytes; without the 128-bit
//! secret it can neither open them nor find the key by guessing. Whoever reads the code before it
//! is used can take the identity, exactly as with Signal's linking QR code: the old device shows
//! it only on request, and the relay hands a slot out once and forgets it after a few minutes.

use core::fmt;
use core::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hushwire_proto::clinic::check_relay_url;
use hushwire_proto::codec::Reader;
use hushwire_proto::labels;
use rand_core::CryptoRng;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::Account;
use crate::cipher::provider;
use crate::kdf::hkdf;
use crate::keys::IdentityKeyPair;

/// What starts a linking code's text form.
pub const LINKING_CODE_PREFIX: &str = "hushwire-link:";
/// Length of a linking code's secret (128 bits).
pub const LINKING_SECRET_LEN: usize = 16;
/// Most application data a provisioning message carries (the client's clinic pin, certificate
/// and relay pin fit in far less).
pub const MAX_PROVISIONING_EXTRA: usize = 16 * 1024;
/// Largest sealed provisioning message: header, the fixed fields, the extra data and the tag.
pub const MAX_SEALED_PROVISIONING: usize = 1 + 24 + 104 + MAX_PROVISIONING_EXTRA + 16;
const PROVISIONING_VERSION: u8 = 1;
// The largest sealed message fits the relay frame that carries it.
const _: () = assert!(MAX_SEALED_PROVISIONING <= hushwire_proto::relay::MAX_PROVISIONING_LEN);

/// Why a linking code or a provisioning message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkingError {
    /// The text is not a linking code (prefix, base64url, length or relay URL).
    MalformedCode,
    /// The sealed message does not open under this code: another code's, or altered.
    WrongCode,
    /// The message opened but its contents are not a provisioning message of this version.
    InvalidContents,
}

impl fmt::Display for LinkingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MalformedCode => {
                "not a linking code (it starts with hushwire-link: and is shown by `hushwire devices link`)"
            }
            Self::WrongCode => "the linking message does not open with this code",
            Self::InvalidContents => "the linking message is damaged or from another version",
        })
    }
}

impl std::error::Error for LinkingError {}

/// A one-time linking code: a 128-bit secret and the relay the person's devices use. Zeroized on
/// drop; `Debug` shows only the relay.
#[derive(Clone)]
pub struct LinkingCode {
    secret: Zeroizing<[u8; LINKING_SECRET_LEN]>,
    relay_url: String,
}

impl LinkingCode {
    /// A fresh code for `relay_url` (16 bytes from `rng`).
    ///
    /// # Errors
    /// [`LinkingError::MalformedCode`] for a URL a clinic link could not carry either.
    pub fn generate<R: CryptoRng + ?Sized>(
        relay_url: &str,
        rng: &mut R,
    ) -> Result<Self, LinkingError> {
        check_relay_url(relay_url).map_err(|_| LinkingError::MalformedCode)?;
        let mut secret = Zeroizing::new([0u8; LINKING_SECRET_LEN]);
        rng.fill_bytes(secret.as_mut());
        Ok(Self {
            secret,
            relay_url: relay_url.to_owned(),
        })
    }

    /// The relay both devices use.
    pub fn relay_url(&self) -> &str {
        &self.relay_url
    }

    /// The 32 bytes the relay files the provisioning message under: `SHA-256(LINK_SLOT ‖
    /// secret)`. It reveals nothing about the key.
    pub fn slot(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(labels::LINK_SLOT);
        h.update(self.secret.as_ref());
        h.finalize().into()
    }

    fn key(&self) -> Zeroizing<[u8; 32]> {
        hkdf(&[0u8; 32], self.secret.as_ref(), labels::KDF_LINK_KEY)
    }

    /// The text form, `hushwire-link:` and base64url. It is a secret: show it, never log it.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(16 + self.relay_url.len()));
        bytes.extend_from_slice(self.secret.as_ref());
        bytes.extend_from_slice(self.relay_url.as_bytes());
        Zeroizing::new(format!(
            "{LINKING_CODE_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(bytes.as_slice())
        ))
    }
}

impl fmt::Debug for LinkingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkingCode")
            .field("relay_url", &self.relay_url)
            .finish_non_exhaustive()
    }
}

impl FromStr for LinkingCode {
    type Err = LinkingError;

    /// Parses the text form; white space around it (and inside it, as people copy codes across
    /// line breaks) is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let compact: Zeroizing<String> =
            Zeroizing::new(s.chars().filter(|c| !c.is_whitespace()).collect());
        if compact.len() > LINKING_CODE_PREFIX.len() + 4 * (16 + 200usize).div_ceil(3) {
            return Err(LinkingError::MalformedCode);
        }
        let body = compact
            .strip_prefix(LINKING_CODE_PREFIX)
            .ok_or(LinkingError::MalformedCode)?;
        let bytes = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(body)
                .map_err(|_| LinkingError::MalformedCode)?,
        );
        let (secret_bytes, url) = bytes
            .split_at_checked(LINKING_SECRET_LEN)
            .ok_or(LinkingError::MalformedCode)?;
        let relay_url = core::str::from_utf8(url).map_err(|_| LinkingError::MalformedCode)?;
        check_relay_url(relay_url).map_err(|_| LinkingError::MalformedCode)?;
        let mut secret = Zeroizing::new([0u8; LINKING_SECRET_LEN]);
        secret.copy_from_slice(secret_bytes);
        Ok(Self {
            secret,
            relay_url: relay_url.to_owned(),
        })
    }
}

/// What the old device hands the new one: the shared identity, the new device's number, the
/// relay key the person's devices pinned, and the application's own data (for the Hushwire
/// client: its clinic pin and certificate), opaque here.
pub struct Provisioning {
    /// The person's identity, shared by all of their devices.
    pub identity: IdentityKeyPair,
    /// The number the new device takes (on the person's signed device list already).
    pub device_id: u32,
    /// The relay deployment's key, as pinned by the old device (`relay-protocol.md` §3.1).
    pub relay_key: [u8; 32],
    /// Application data, at most [`MAX_PROVISIONING_EXTRA`] bytes.
    pub extra: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Provisioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provisioning")
            .field("identity", &self.identity.public().fingerprint())
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl Provisioning {
    /// Seals the message under `code` (24-byte nonce from `rng`).
    ///
    /// # Errors
    /// [`LinkingError::InvalidContents`] if `extra` exceeds [`MAX_PROVISIONING_EXTRA`].
    pub fn seal<R: CryptoRng + ?Sized>(
        &self,
        code: &LinkingCode,
        rng: &mut R,
    ) -> Result<Vec<u8>, LinkingError> {
        let extra_len = u32::try_from(self.extra.len())
            .ok()
            .filter(|n| *n as usize <= MAX_PROVISIONING_EXTRA)
            .ok_or(LinkingError::InvalidContents)?;
        let (signing, dh) = self.identity.to_secret_bytes();
        let (signing, dh) = (Zeroizing::new(signing), Zeroizing::new(dh));
        let mut plaintext = Zeroizing::new(Vec::with_capacity(104 + self.extra.len()));
        plaintext.extend_from_slice(signing.as_ref());
        plaintext.extend_from_slice(dh.as_ref());
        plaintext.extend_from_slice(&self.device_id.to_be_bytes());
        plaintext.extend_from_slice(&self.relay_key);
        plaintext.extend_from_slice(&extra_len.to_be_bytes());
        plaintext.extend_from_slice(&self.extra);
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        let ad = associated_data(code);
        let mut sealed = Vec::with_capacity(1 + 24 + plaintext.len() + 16);
        sealed.push(PROVISIONING_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&provider().xseal(&code.key(), &nonce, &ad, &plaintext));
        Ok(sealed)
    }

    /// Opens a message sealed by [`Provisioning::seal`] under the same code.
    ///
    /// # Errors
    /// [`LinkingError::WrongCode`] if it does not authenticate (another code, altered bytes, a
    /// version this build does not read); [`LinkingError::InvalidContents`] if the contents are
    /// malformed.
    pub fn open(sealed: &[u8], code: &LinkingCode) -> Result<Self, LinkingError> {
        if sealed.len() > MAX_SEALED_PROVISIONING {
            return Err(LinkingError::InvalidContents);
        }
        let mut r = Reader::new(sealed);
        let version = r.u8("version").map_err(|_| LinkingError::WrongCode)?;
        let nonce: [u8; 24] = r.array("nonce").map_err(|_| LinkingError::WrongCode)?;
        if version != PROVISIONING_VERSION {
            return Err(LinkingError::WrongCode);
        }
        let plaintext = Zeroizing::new(
            provider()
                .xopen(&code.key(), &nonce, &associated_data(code), r.rest())
                .ok_or(LinkingError::WrongCode)?,
        );
        let invalid = |_| LinkingError::InvalidContents;
        let mut r = Reader::new(&plaintext);
        let signing = Zeroizing::new(r.array::<32>("signing seed").map_err(invalid)?);
        let dh = Zeroizing::new(r.array::<32>("dh secret").map_err(invalid)?);
        let device_id = r.u32("device id").map_err(invalid)?;
        let relay_key = r.array("relay key").map_err(invalid)?;
        let extra = Zeroizing::new(
            r.bytes_u32(MAX_PROVISIONING_EXTRA, "extra")
                .map_err(invalid)?
                .to_vec(),
        );
        r.expect_empty("provisioning message").map_err(invalid)?;
        let identity = IdentityKeyPair::from_secret_bytes(*signing, *dh)
            .ok_or(LinkingError::InvalidContents)?;
        Ok(Self {
            identity,
            device_id,
            relay_key,
            extra,
        })
    }

    /// The new device's account: the shared identity, this device's number and fresh prekeys of
    /// its own (a signed prekey and a last-resort ML-KEM prekey, as [`Account::new`] makes).
    pub fn into_account<R: CryptoRng + ?Sized>(&self, now: u64, rng: &mut R) -> Account {
        Account::with_identity(self.identity.clone(), self.device_id, now, rng)
    }
}

fn associated_data(code: &LinkingCode) -> [u8; 33] {
    let mut ad = [0u8; 33];
    let (version, slot) = ad.split_at_mut(1);
    version.copy_from_slice(&[PROVISIONING_VERSION]);
    slot.copy_from_slice(&code.slot());
    ad
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng as _;

    use super::*;

    fn sample(rng: &mut ChaCha20Rng) -> (LinkingCode, Provisioning, Vec<u8>) {
        let code = LinkingCode::generate("wss://relay.example", rng).unwrap();
        let provisioning = Provisioning {
            identity: IdentityKeyPair::generate(rng),
            device_id: 2,
            relay_key: [7; 32],
            extra: Zeroizing::new(b"clinic pin".to_vec()),
        };
        let sealed = provisioning.seal(&code, rng).unwrap();
        (code, provisioning, sealed)
    }

    #[test]
    fn a_code_survives_its_text_form_and_opens_only_its_message() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let (code, provisioning, sealed) = sample(&mut rng);
        let text = code.to_text();
        assert!(text.starts_with(LINKING_CODE_PREFIX));
        // People copy codes with spaces and line breaks in them.
        let (a, b) = text.split_at(20);
        let parsed: LinkingCode = format!(" {a}\n {b} ").parse().unwrap();
        assert_eq!(parsed.slot(), code.slot());
        assert_eq!(parsed.relay_url(), "wss://relay.example");

        let opened = Provisioning::open(&sealed, &parsed).unwrap();
        assert_eq!(
            opened.identity.public(),
            provisioning.identity.public(),
            "the same identity"
        );
        assert_eq!(opened.device_id, 2);
        assert_eq!(opened.relay_key, [7; 32]);
        assert_eq!(opened.extra.as_slice(), b"clinic pin");
        let account = opened.into_account(0, &mut rng);
        assert_eq!(account.identity_key(), provisioning.identity.public());
        assert_eq!(account.device_id(), 2);
        let bundle = account.prekey_bundle().unwrap();
        assert!(bundle.verify().is_ok(), "prekeys signed for device 2");

        let other = LinkingCode::generate("wss://relay.example", &mut rng).unwrap();
        assert_ne!(other.slot(), code.slot());
        assert_eq!(
            Provisioning::open(&sealed, &other).unwrap_err(),
            LinkingError::WrongCode
        );
    }

    #[test]
    fn altered_or_truncated_messages_and_bad_codes_are_refused() {
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let (code, _, sealed) = sample(&mut rng);
        for i in [0, 1, 24, 25, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(Provisioning::open(&bad, &code).is_err(), "byte {i}");
        }
        for n in [0, 1, 25, 40] {
            assert!(
                Provisioning::open(&sealed[..n], &code).is_err(),
                "{n} bytes"
            );
        }
        for bad in [
            "",
            "hushwire-link:",
            "hushwire-link:AAAA",
            "hushwire-clinic:AAAA",
            "hushwire-link:!!!!",
        ] {
            assert_eq!(
                bad.parse::<LinkingCode>().unwrap_err(),
                LinkingError::MalformedCode,
                "{bad:?}"
            );
        }
        // A secret followed by something that is not a relay URL.
        let text = format!(
            "{LINKING_CODE_PREFIX}{}",
            URL_SAFE_NO_PAD.encode([&[0u8; 16][..], b"http://x"].concat())
        );
        assert!(text.parse::<LinkingCode>().is_err());
        assert!(LinkingCode::generate("ftp://x", &mut rng).is_err());
    }

    #[test]
    fn too_much_extra_data_is_refused_when_sealing() {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let (code, mut provisioning, _) = sample(&mut rng);
        provisioning.extra = Zeroizing::new(vec![0; MAX_PROVISIONING_EXTRA + 1]);
        assert_eq!(
            provisioning.seal(&code, &mut rng).unwrap_err(),
            LinkingError::InvalidContents
        );
        provisioning.extra = Zeroizing::new(vec![0; MAX_PROVISIONING_EXTRA]);
        let sealed = provisioning.seal(&code, &mut rng).unwrap();
        assert_eq!(sealed.len(), MAX_SEALED_PROVISIONING);
        assert!(Provisioning::open(&sealed, &code).is_ok());
    }
}
