//! Wipe commands (`docs/clinic.md` §6): an administrator's signed order that one device erase
//! its store. The relay stores it and refuses the device from then on; the device's client
//! checks the signature against its clinic before it erases anything, so a forged order (from
//! the relay or anyone) does nothing.

use core::fmt;

use super::{
    AgentCertificate, CLINIC_VERSION, CertificateError, OrgKey, RevocationList, Role,
    WIPE_COMMAND_TYPE, read_clinic_header,
};
use crate::codec::{Codec, DecodeError, Reader};
use crate::keys::SIGNATURE_LEN;
use crate::labels;
use crate::relay::DeviceAddress;
use crate::signer::Signer;

/// How far in the future (relay or client clock) a wipe's `issued_at` may be, in seconds.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// Why a wipe command was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WipeError {
    /// The issuer's certificate is not a valid admin certificate of the clinic.
    Certificate(CertificateError),
    /// The issuer's signature over the command does not verify.
    BadSignature,
    /// The command is for another device.
    WrongTarget,
    /// The command claims to be issued in the future.
    FromTheFuture,
}

impl fmt::Display for WipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Certificate(e) => write!(f, "the wipe's issuer is not a clinic admin: {e}"),
            Self::BadSignature => f.write_str("the wipe is not signed by its issuer"),
            Self::WrongTarget => f.write_str("the wipe is for another device"),
            Self::FromTheFuture => f.write_str("the wipe claims a time in the future"),
        }
    }
}

impl std::error::Error for WipeError {}

/// A signed wipe command:
///
/// `version[1]=1 ‖ type[1]=0x24 ‖ target_fingerprint[32] ‖ target_device_id[4] ‖ issued_at[8]
/// ‖ nonce[16] ‖ admin_certificate[252..316] ‖ signature[64]`, the signature made by the
/// certificate's subject identity over `SIG_WIPE_COMMAND ‖` every byte before it.
#[derive(Clone, PartialEq, Eq)]
pub struct WipeCommand {
    target: DeviceAddress,
    issued_at: u64,
    nonce: [u8; 16],
    issuer: AgentCertificate,
    signature: [u8; SIGNATURE_LEN],
}

impl WipeCommand {
    /// Signs a wipe of `target` with `admin_signer`, the identity key that `issuer` certifies.
    /// `nonce` makes two orders for one device distinct.
    pub fn issue<S: Signer + ?Sized>(
        admin_signer: &S,
        issuer: AgentCertificate,
        target: DeviceAddress,
        issued_at: u64,
        nonce: [u8; 16],
    ) -> Self {
        let mut command = Self {
            target,
            issued_at,
            nonce,
            issuer,
            signature: [0; SIGNATURE_LEN],
        };
        command.signature = admin_signer.sign(labels::SIG_WIPE_COMMAND, &command.signed_part());
        command
    }

    /// Checks the command for the clinic `org` at time `now` (Unix seconds): the issuer's
    /// certificate grants `admin`, was valid when the command was issued and is not revoked in
    /// `revocations`; the issuer signed the command; it was not issued more than
    /// [`MAX_CLOCK_SKEW_SECS`] in the future. The target is checked with
    /// [`WipeCommand::verify_for`].
    pub fn verify(
        &self,
        org: &OrgKey,
        now: u64,
        revocations: Option<&RevocationList>,
    ) -> Result<(), WipeError> {
        if self.issued_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(WipeError::FromTheFuture);
        }
        self.issuer
            .verify_role(org, self.issued_at, revocations, Role::Admin)
            .map_err(WipeError::Certificate)?;
        if !self.issuer.subject().verify(
            labels::SIG_WIPE_COMMAND,
            &self.signed_part(),
            &self.signature,
        ) {
            return Err(WipeError::BadSignature);
        }
        Ok(())
    }

    /// [`WipeCommand::verify`], and that the command is for `device`: what the device's own
    /// client checks before it erases its store.
    pub fn verify_for(
        &self,
        device: DeviceAddress,
        org: &OrgKey,
        now: u64,
        revocations: Option<&RevocationList>,
    ) -> Result<(), WipeError> {
        if self.target != device {
            return Err(WipeError::WrongTarget);
        }
        self.verify(org, now, revocations)
    }

    /// The device to erase.
    pub fn target(&self) -> DeviceAddress {
        self.target
    }

    /// When the admin issued it (Unix seconds).
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }

    /// The issuing admin's certificate.
    pub fn issuer(&self) -> &AgentCertificate {
        &self.issuer
    }

    fn signed_part(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(384);
        out.push(CLINIC_VERSION);
        out.push(WIPE_COMMAND_TYPE);
        out.extend_from_slice(&self.target.fingerprint);
        out.extend_from_slice(&self.target.device_id.to_be_bytes());
        out.extend_from_slice(&self.issued_at.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        self.issuer.encode(&mut out);
        out
    }
}

impl Codec for WipeCommand {
    const NAME: &'static str = "wipe command";

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.signed_part());
        out.extend_from_slice(&self.signature);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        read_clinic_header(r, WIPE_COMMAND_TYPE, Self::NAME)?;
        Ok(Self {
            target: DeviceAddress {
                fingerprint: r.array("target fingerprint")?,
                device_id: r.u32("target device id")?,
            },
            issued_at: r.u64("issued at")?,
            nonce: r.array("nonce")?,
            issuer: AgentCertificate::read(r)?,
            signature: r.array("wipe signature")?,
        })
    }
}

impl fmt::Debug for WipeCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WipeCommand")
            .field("target", &self.target)
            .field("issued_at", &self.issued_at)
            .field("issuer", &self.issuer.name())
            .finish_non_exhaustive()
    }
}
