//! A device's address as people exchange it: the identity fingerprint (64 hex digits) and the
//! device id, `3fa2…e9:1`. The fingerprint is a hash of the identity key, so an address pins
//! the identity: whoever holds it can check any bundle or message against it without trusting
//! the relay.

use core::fmt;
use core::str::FromStr;

use hushwire::Account;
use hushwire::proto::Fingerprint;
use hushwire::proto::audit::DeviceRef;
use hushwire::proto::relay::DeviceAddress;

use crate::error::ClientError;

/// A device's address: identity fingerprint and device id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    /// Fingerprint of the device's identity key.
    pub fingerprint: Fingerprint,
    /// The device id.
    pub device_id: u32,
}

impl Address {
    /// The relay's form of the address.
    pub fn to_device_address(self) -> DeviceAddress {
        DeviceAddress {
            fingerprint: self.fingerprint.0,
            device_id: self.device_id,
        }
    }

    /// From the relay's form.
    pub fn from_device_address(a: DeviceAddress) -> Self {
        Self {
            fingerprint: Fingerprint(a.fingerprint),
            device_id: a.device_id,
        }
    }

    /// The key under which the store indexes this address (public values only).
    pub(crate) fn index_bytes(self) -> [u8; 36] {
        let mut out = [0u8; 36];
        let (fp, id) = out.split_at_mut(32);
        fp.copy_from_slice(&self.fingerprint.0);
        id.copy_from_slice(&self.device_id.to_be_bytes());
        out
    }

    /// The first 8 hex digits, for names given to contacts nobody named.
    pub fn short(&self) -> String {
        self.fingerprint.to_string().chars().take(8).collect()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.fingerprint, self.device_id)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ClientError::BadAddress(s.chars().take(100).collect());
        let trimmed = s.trim();
        let (hex_part, device) = trimmed.rsplit_once(':').ok_or_else(bad)?;
        let mut fingerprint = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut fingerprint).map_err(|_| bad())?;
        let device_id = device.parse::<u32>().map_err(|_| bad())?;
        Ok(Self {
            fingerprint: Fingerprint(fingerprint),
            device_id,
        })
    }
}

/// The audit chain's reference to a contact's device.
pub(crate) fn device_ref(a: Address) -> DeviceRef {
    DeviceRef {
        fingerprint: a.fingerprint,
        device_id: a.device_id,
    }
}

/// The audit chain's reference to this device.
pub(crate) fn own_ref(account: &Account) -> DeviceRef {
    DeviceRef {
        fingerprint: account.identity_key().fingerprint(),
        device_id: account.device_id(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn addresses_round_trip_and_bad_text_is_refused() {
        let a = Address {
            fingerprint: Fingerprint([0xab; 32]),
            device_id: 7,
        };
        assert_eq!(a.to_string().parse::<Address>().unwrap(), a);
        assert_eq!(format!(" {a}\n").parse::<Address>().unwrap(), a);
        for bad in [
            "",
            "abc:1",
            &format!("{}:x", "ab".repeat(32)),
            &"ab".repeat(32),
        ] {
            assert!(
                matches!(bad.parse::<Address>(), Err(ClientError::BadAddress(_))),
                "{bad}"
            );
        }
    }
}
