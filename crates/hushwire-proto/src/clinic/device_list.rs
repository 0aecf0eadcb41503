//! Device lists (`docs/clinic.md` §5): which devices belong to one person, signed by that
//! person's identity key (which all of their devices share), with a sequence number that only
//! grows so a relay cannot bring back a removed device.

use core::fmt;

use super::{CLINIC_VERSION, DEVICE_LIST_TYPE, read_clinic_header};
use crate::codec::{Codec, DecodeError, Reader};
use crate::keys::{Fingerprint, IdentityKey, SIGNATURE_LEN};
use crate::labels;
use crate::signer::Signer;

/// Most devices one person may have.
pub const MAX_DEVICES: usize = 16;

/// Why a device list was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceListError {
    /// The list is about another identity than the one it was checked against.
    WrongIdentity,
    /// The identity's signature does not verify: someone else signed it.
    BadSignature,
}

impl fmt::Display for DeviceListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::WrongIdentity => "the device list belongs to another person",
            Self::BadSignature => "the device list is not signed by its person",
        })
    }
}

impl std::error::Error for DeviceListError {}

/// A signed device list:
///
/// `version[1]=1 ‖ type[1]=0x23 ‖ identity_fingerprint[32] ‖ sequence[8] ‖ count[1] ‖
/// device_id[4] × count ‖ signature[64]`: 1 to [`MAX_DEVICES`] device ids, strictly increasing,
/// the signature the identity's over `SIG_DEVICE_LIST ‖` every byte before it.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceList {
    identity: Fingerprint,
    sequence: u64,
    devices: Vec<u32>,
    signature: [u8; SIGNATURE_LEN],
}

impl DeviceList {
    /// Signs the list of `devices` (any order, duplicates merged) of `identity` as number
    /// `sequence`, with `signer` (the identity's signing key).
    ///
    /// # Errors
    /// `InvalidValue` for an empty list; `TooLong` beyond [`MAX_DEVICES`].
    pub fn issue<S: Signer + ?Sized>(
        signer: &S,
        identity: &IdentityKey,
        sequence: u64,
        devices: &[u32],
    ) -> Result<Self, DecodeError> {
        let mut devices = devices.to_vec();
        devices.sort_unstable();
        devices.dedup();
        check_count(devices.len())?;
        let mut list = Self {
            identity: identity.fingerprint(),
            sequence,
            devices,
            signature: [0; SIGNATURE_LEN],
        };
        list.signature = signer.sign(labels::SIG_DEVICE_LIST, &list.signed_part());
        Ok(list)
    }

    /// Checks that the list is `identity`'s and signed by it.
    pub fn verify(&self, identity: &IdentityKey) -> Result<(), DeviceListError> {
        if self.identity != identity.fingerprint() {
            return Err(DeviceListError::WrongIdentity);
        }
        if identity.verify(
            labels::SIG_DEVICE_LIST,
            &self.signed_part(),
            &self.signature,
        ) {
            Ok(())
        } else {
            Err(DeviceListError::BadSignature)
        }
    }

    /// The person's identity fingerprint.
    pub fn identity(&self) -> Fingerprint {
        self.identity
    }

    /// The sequence number ([`super::is_newer`]).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The device ids, ascending.
    pub fn devices(&self) -> &[u32] {
        &self.devices
    }

    /// Whether `device_id` is on the list.
    pub fn contains(&self, device_id: u32) -> bool {
        self.devices.binary_search(&device_id).is_ok()
    }

    fn signed_part(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(43 + 4 * self.devices.len());
        out.push(CLINIC_VERSION);
        out.push(DEVICE_LIST_TYPE);
        out.extend_from_slice(&self.identity.0);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.push(u8::try_from(self.devices.len()).unwrap_or(u8::MAX));
        for id in &self.devices {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out
    }
}

fn check_count(count: usize) -> Result<(), DecodeError> {
    if count == 0 {
        return Err(DecodeError::InvalidValue {
            field: "device list (empty)",
        });
    }
    if count > MAX_DEVICES {
        return Err(DecodeError::TooLong {
            field: "device list",
            len: count,
            max: MAX_DEVICES,
        });
    }
    Ok(())
}

impl Codec for DeviceList {
    const NAME: &'static str = "device list";

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.signed_part());
        out.extend_from_slice(&self.signature);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        read_clinic_header(r, DEVICE_LIST_TYPE, Self::NAME)?;
        let identity = Fingerprint(r.array("identity fingerprint")?);
        let sequence = r.u64("sequence")?;
        let count = usize::from(r.u8("device count")?);
        check_count(count)?;
        let mut devices = Vec::with_capacity(count);
        for _ in 0..count {
            let id = r.u32("device id")?;
            if devices.last().is_some_and(|last| id <= *last) {
                return Err(DecodeError::InvalidValue {
                    field: "device ids (must be strictly increasing)",
                });
            }
            devices.push(id);
        }
        Ok(Self {
            identity,
            sequence,
            devices,
            signature: r.array("device list signature")?,
        })
    }
}

impl fmt::Debug for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceList")
            .field("identity", &self.identity)
            .field("sequence", &self.sequence)
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}
