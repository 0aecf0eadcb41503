//! Agent certificates (`docs/clinic.md` §3): a clinic's organization key binds an agent's
//! identity key to the clinic, a display name, roles and a validity period.

use core::fmt;
use core::str::FromStr;

use super::{
    CERTIFICATE_TYPE, CLINIC_VERSION, OrgKey, RevocationList, check_name, put_name,
    read_clinic_header, read_name,
};
use crate::codec::{Codec, DecodeError, Reader};
use crate::keys::{IdentityKey, SIGNATURE_LEN};
use crate::labels;
use crate::signer::Signer;

/// One role a certificate can grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Answers patients.
    Agent,
    /// Joins conversations read-only and opens the clinic's archive.
    Supervisor,
    /// Administers the clinic at the relay: suspends devices, publishes revocation lists,
    /// orders wipes.
    Admin,
}

impl Role {
    /// Every role, in bit order.
    pub const ALL: [Role; 3] = [Role::Agent, Role::Supervisor, Role::Admin];

    /// The role's bit in [`Roles`].
    pub const fn bit(self) -> u8 {
        match self {
            Role::Agent => 0x01,
            Role::Supervisor => 0x02,
            Role::Admin => 0x04,
        }
    }

    /// The role's name as the CLI and `docs/clinic.md` spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A non-empty set of [`Role`]s, encoded as one byte of flags (agent `0x01`, supervisor `0x02`,
/// admin `0x04`; other bits refused).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Roles(u8);

impl Roles {
    const MASK: u8 = 0x07;

    /// The set of the given roles; `None` if it is empty.
    pub fn of(roles: &[Role]) -> Option<Self> {
        let bits = roles.iter().fold(0, |acc, r| acc | r.bit());
        Self::from_bits(bits).ok()
    }

    /// From the flag byte, refusing unknown bits and the empty set.
    pub fn from_bits(bits: u8) -> Result<Self, DecodeError> {
        if bits == 0 || bits & !Self::MASK != 0 {
            return Err(DecodeError::InvalidValue { field: "roles" });
        }
        Ok(Self(bits))
    }

    /// The flag byte.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether the set holds `role`.
    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// The roles in the set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

impl fmt::Display for Roles {
    /// `agent, supervisor`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, role) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(role.name())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Roles({self})")
    }
}

impl FromStr for Roles {
    type Err = String;

    /// A comma-separated list: `agent`, `agent,supervisor`, `admin`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut roles = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let role = Role::ALL
                .into_iter()
                .find(|r| r.name().eq_ignore_ascii_case(part))
                .ok_or_else(|| {
                    format!("unknown role {part:?}: the roles are agent, supervisor and admin")
                })?;
            roles.push(role);
        }
        Roles::of(&roles).ok_or_else(|| "give at least one role: agent, supervisor or admin".into())
    }
}

/// Why a certificate was not accepted. Each names a reason a person can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateError {
    /// The certificate was issued by another organization key than the clinic's.
    WrongClinic,
    /// The organization's signature does not verify.
    BadSignature,
    /// The validity period has not started (Unix seconds).
    NotYetValid {
        /// When it starts.
        not_before: u64,
    },
    /// The validity period is over (Unix seconds).
    Expired {
        /// When it ended.
        not_after: u64,
    },
    /// The clinic revoked the certificate.
    Revoked {
        /// Its serial number.
        serial: u64,
    },
    /// The certificate does not grant the role the action needs.
    MissingRole(Role),
    /// The subject is not the identity that presented the certificate.
    WrongSubject,
    /// The revocation list offered for the check belongs to another clinic.
    ForeignRevocationList,
}

impl fmt::Display for CertificateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongClinic => f.write_str("the certificate was issued by another clinic"),
            Self::BadSignature => {
                f.write_str("the clinic's signature on the certificate is forged")
            }
            Self::NotYetValid { not_before } => {
                write!(
                    f,
                    "the certificate is not valid before {not_before} (Unix time)"
                )
            }
            Self::Expired { not_after } => {
                write!(f, "the certificate expired at {not_after} (Unix time)")
            }
            Self::Revoked { serial } => write!(f, "the clinic revoked certificate #{serial}"),
            Self::MissingRole(role) => write!(f, "the certificate does not grant the {role} role"),
            Self::WrongSubject => {
                f.write_str("the certificate names another identity than the one presenting it")
            }
            Self::ForeignRevocationList => {
                f.write_str("the revocation list belongs to another clinic")
            }
        }
    }
}

impl std::error::Error for CertificateError {}

/// An agent certificate (`docs/clinic.md` §3):
///
/// `version[1]=1 ‖ type[1]=0x20 ‖ org_key[32] ‖ serial[8] ‖ subject[128] ‖ name_len[1] ‖
/// name[≤64] ‖ roles[1] ‖ not_before[8] ‖ not_after[8] ‖ signature[64]`, where the signature is
/// the organization key's over `SIG_AGENT_CERTIFICATE ‖` every byte before it. 252 to 316
/// bytes.
///
/// Decoding checks the form (a valid identity, a well-formed name, known roles, a non-empty
/// period); [`AgentCertificate::verify`] checks the clinic, the signature, the time and the
/// revocation list.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentCertificate {
    org: OrgKey,
    serial: u64,
    subject: IdentityKey,
    name: String,
    roles: Roles,
    not_before: u64,
    not_after: u64,
    signature: [u8; SIGNATURE_LEN],
}

impl AgentCertificate {
    /// Issues a certificate signed by `org_signer` (the organization's private key).
    ///
    /// # Errors
    /// `InvalidValue` for a name that breaks [`super::check_name`] or a period whose end is not
    /// after its start.
    #[allow(clippy::too_many_arguments)]
    pub fn issue<S: Signer + ?Sized>(
        org_signer: &S,
        serial: u64,
        subject: IdentityKey,
        name: &str,
        roles: Roles,
        not_before: u64,
        not_after: u64,
    ) -> Result<Self, DecodeError> {
        check_name(name)?;
        check_period(not_before, not_after)?;
        let org = OrgKey::new(org_signer.verifying_key())?;
        let mut cert = Self {
            org,
            serial,
            subject,
            name: name.to_owned(),
            roles,
            not_before,
            not_after,
            signature: [0; SIGNATURE_LEN],
        };
        cert.signature = org_signer.sign(labels::SIG_AGENT_CERTIFICATE, &cert.signed_part());
        Ok(cert)
    }

    /// Checks the certificate for the clinic whose key is `org` at time `now` (Unix seconds),
    /// against `revocations` if the client or relay holds a (verified) list.
    ///
    /// # Errors
    /// [`CertificateError`]: the first check that fails, in the order clinic, signature,
    /// period, revocation.
    pub fn verify(
        &self,
        org: &OrgKey,
        now: u64,
        revocations: Option<&RevocationList>,
    ) -> Result<(), CertificateError> {
        if self.org != *org {
            return Err(CertificateError::WrongClinic);
        }
        if !org.verify(
            labels::SIG_AGENT_CERTIFICATE,
            &self.signed_part(),
            &self.signature,
        ) {
            return Err(CertificateError::BadSignature);
        }
        if now < self.not_before {
            return Err(CertificateError::NotYetValid {
                not_before: self.not_before,
            });
        }
        if now >= self.not_after {
            return Err(CertificateError::Expired {
                not_after: self.not_after,
            });
        }
        if let Some(list) = revocations {
            if list.org() != org {
                return Err(CertificateError::ForeignRevocationList);
            }
            if list.is_revoked(self.serial) {
                return Err(CertificateError::Revoked {
                    serial: self.serial,
                });
            }
        }
        Ok(())
    }

    /// [`AgentCertificate::verify`], then checks that it grants `role`.
    pub fn verify_role(
        &self,
        org: &OrgKey,
        now: u64,
        revocations: Option<&RevocationList>,
        role: Role,
    ) -> Result<(), CertificateError> {
        self.verify(org, now, revocations)?;
        if self.roles.contains(role) {
            Ok(())
        } else {
            Err(CertificateError::MissingRole(role))
        }
    }

    /// The organization key that signed it (not yet checked against any clinic).
    pub fn org(&self) -> &OrgKey {
        &self.org
    }

    /// The clinic's serial number for it (what a revocation list names).
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// The certified identity (every device of the agent shares it, `clinic.md` §5).
    pub fn subject(&self) -> &IdentityKey {
        &self.subject
    }

    /// The agent's display name, as certified (checked by [`super::check_name`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The granted roles.
    pub fn roles(&self) -> Roles {
        self.roles
    }

    /// Start of validity (Unix seconds, inclusive).
    pub fn not_before(&self) -> u64 {
        self.not_before
    }

    /// End of validity (Unix seconds, exclusive).
    pub fn not_after(&self) -> u64 {
        self.not_after
    }

    fn signed_part(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_signed_part(&mut out);
        out
    }

    fn encode_signed_part(&self, out: &mut Vec<u8>) {
        out.push(CLINIC_VERSION);
        out.push(CERTIFICATE_TYPE);
        out.extend_from_slice(&self.org.to_bytes());
        out.extend_from_slice(&self.serial.to_be_bytes());
        self.subject.encode(out);
        put_name(out, &self.name);
        out.push(self.roles.bits());
        out.extend_from_slice(&self.not_before.to_be_bytes());
        out.extend_from_slice(&self.not_after.to_be_bytes());
    }
}

fn check_period(not_before: u64, not_after: u64) -> Result<(), DecodeError> {
    if not_after > not_before {
        Ok(())
    } else {
        Err(DecodeError::InvalidValue {
            field: "validity period",
        })
    }
}

impl Codec for AgentCertificate {
    const NAME: &'static str = "agent certificate";

    fn encode(&self, out: &mut Vec<u8>) {
        self.encode_signed_part(out);
        out.extend_from_slice(&self.signature);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        read_clinic_header(r, CERTIFICATE_TYPE, Self::NAME)?;
        let org = OrgKey::read(r)?;
        let serial = r.u64("serial")?;
        let subject = IdentityKey::read(r)?;
        let name = read_name(r, "agent name")?;
        let roles = Roles::from_bits(r.u8("roles")?)?;
        let not_before = r.u64("not before")?;
        let not_after = r.u64("not after")?;
        check_period(not_before, not_after)?;
        Ok(Self {
            org,
            serial,
            subject,
            name,
            roles,
            not_before,
            not_after,
            signature: r.array("certificate signature")?,
        })
    }
}

impl fmt::Debug for AgentCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentCertificate")
            .field("org", &self.org)
            .field("serial", &self.serial)
            .field("subject", &self.subject)
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}
