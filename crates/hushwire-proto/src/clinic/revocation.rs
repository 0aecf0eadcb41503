//! The clinic's revocation list (`docs/clinic.md` §4): the serial numbers of the certificates it
//! withdrew, signed by the organization key, with a sequence number that only grows.

use core::fmt;

use super::{CLINIC_VERSION, OrgKey, REVOCATION_LIST_TYPE, read_clinic_header};
use crate::codec::{Codec, DecodeError, Reader};
use crate::keys::SIGNATURE_LEN;
use crate::labels;
use crate::signer::Signer;

/// Most serials one list holds (80 KiB of serials; a clinic that revokes more starts a new
/// organization key).
pub const MAX_REVOKED: usize = 10_000;

/// A signed revocation list:
///
/// `version[1]=1 ‖ type[1]=0x21 ‖ org_key[32] ‖ sequence[8] ‖ issued_at[8] ‖ count[2] ‖
/// serial[8] × count ‖ signature[64]`: serials strictly increasing (one encoding per set), the
/// signature the organization key's over `SIG_REVOCATION_LIST ‖` every byte before it.
#[derive(Clone, PartialEq, Eq)]
pub struct RevocationList {
    org: OrgKey,
    sequence: u64,
    issued_at: u64,
    serials: Vec<u64>,
    signature: [u8; SIGNATURE_LEN],
}

impl RevocationList {
    /// Signs a list of `serials` (any order, duplicates merged) as number `sequence`.
    ///
    /// # Errors
    /// `TooLong` beyond [`MAX_REVOKED`] serials; `InvalidValue` for a weak signer key.
    pub fn issue<S: Signer + ?Sized>(
        org_signer: &S,
        sequence: u64,
        issued_at: u64,
        serials: &[u64],
    ) -> Result<Self, DecodeError> {
        let mut serials = serials.to_vec();
        serials.sort_unstable();
        serials.dedup();
        if serials.len() > MAX_REVOKED {
            return Err(DecodeError::TooLong {
                field: "revoked serials",
                len: serials.len(),
                max: MAX_REVOKED,
            });
        }
        let mut list = Self {
            org: OrgKey::new(org_signer.verifying_key())?,
            sequence,
            issued_at,
            serials,
            signature: [0; SIGNATURE_LEN],
        };
        list.signature = org_signer.sign(labels::SIG_REVOCATION_LIST, &list.signed_part());
        Ok(list)
    }

    /// Checks that the list is `org`'s and its signature verifies. A list that fails is ignored
    /// entirely: it revokes nothing and replaces nothing.
    pub fn verify(&self, org: &OrgKey) -> bool {
        self.org == *org
            && org.verify(
                labels::SIG_REVOCATION_LIST,
                &self.signed_part(),
                &self.signature,
            )
    }

    /// Whether `serial` is revoked (binary search: the serials are sorted).
    pub fn is_revoked(&self, serial: u64) -> bool {
        self.serials.binary_search(&serial).is_ok()
    }

    /// The organization key that signed it (check with [`RevocationList::verify`]).
    pub fn org(&self) -> &OrgKey {
        &self.org
    }

    /// The list's sequence number: a holder accepts only a higher one ([`super::is_newer`]).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// When it was signed (Unix seconds).
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }

    /// The revoked serials, ascending.
    pub fn serials(&self) -> &[u64] {
        &self.serials
    }

    fn signed_part(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(52 + 8 * self.serials.len());
        out.push(CLINIC_VERSION);
        out.push(REVOCATION_LIST_TYPE);
        out.extend_from_slice(&self.org.to_bytes());
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.issued_at.to_be_bytes());
        // At most MAX_REVOKED (< 2^16) serials: `issue` and `read` enforce it.
        out.extend_from_slice(
            &u16::try_from(self.serials.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        for serial in &self.serials {
            out.extend_from_slice(&serial.to_be_bytes());
        }
        out
    }
}

impl Codec for RevocationList {
    const NAME: &'static str = "revocation list";

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.signed_part());
        out.extend_from_slice(&self.signature);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        read_clinic_header(r, REVOCATION_LIST_TYPE, Self::NAME)?;
        let org = OrgKey::read(r)?;
        let sequence = r.u64("sequence")?;
        let issued_at = r.u64("issued at")?;
        let count = usize::from(r.u16("revoked count")?);
        if count > MAX_REVOKED {
            return Err(DecodeError::TooLong {
                field: "revoked serials",
                len: count,
                max: MAX_REVOKED,
            });
        }
        // Refuse a count the input cannot hold before allocating for it.
        if r.left() < count.saturating_mul(8) {
            return Err(DecodeError::Truncated {
                field: "revoked serials",
            });
        }
        let mut serials = Vec::with_capacity(count);
        for _ in 0..count {
            let serial = r.u64("revoked serial")?;
            if serials.last().is_some_and(|last| serial <= *last) {
                return Err(DecodeError::InvalidValue {
                    field: "revoked serials (must be strictly increasing)",
                });
            }
            serials.push(serial);
        }
        Ok(Self {
            org,
            sequence,
            issued_at,
            serials,
            signature: r.array("revocation list signature")?,
        })
    }
}

impl fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationList")
            .field("org", &self.org)
            .field("sequence", &self.sequence)
            .field("issued_at", &self.issued_at)
            .field("serials", &self.serials.len())
            .finish_non_exhaustive()
    }
}
