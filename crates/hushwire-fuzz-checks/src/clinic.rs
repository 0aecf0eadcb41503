//! Clinic structures (`docs/clinic.md`): certificates, revocation lists, clinic links (bytes and
//! text), device lists and wipe commands, as the relay and clients receive them from anyone.

use hushwire::proto::Codec;
use hushwire::proto::clinic::{
    AgentCertificate, ClinicLink, DeviceList, OrgKey, RevocationList, Role, WipeCommand,
};
use hushwire::proto::relay::DeviceAddress;

use crate::fixtures::audit_signer;

/// Any clinic structure: whatever decodes re-encodes to the same bytes, and every check a relay
/// or client runs on a decoded value (against the clinic key the value names and against a
/// fixed identity) never panics. The same bytes are also tried as a clinic link's text form.
pub fn clinic_structures(data: &[u8]) {
    fn canonical<T: Codec>(data: &[u8]) -> Option<T> {
        let value = T::from_bytes(data).ok()?;
        assert_eq!(value.to_bytes(), data, "non-canonical {} accepted", T::NAME);
        Some(value)
    }
    let identity = audit_signer().public();
    let now = 1_710_000_000;
    if let Some(cert) = canonical::<AgentCertificate>(data) {
        let org = *cert.org();
        let _ = cert.verify_role(&org, now, None, Role::Admin);
        let _ = cert.name().len() + usize::from(cert.roles().bits());
    }
    if let Some(list) = canonical::<RevocationList>(data) {
        let org: OrgKey = *list.org();
        let _ = list.verify(&org) && list.is_revoked(1);
    }
    if let Some(link) = canonical::<ClinicLink>(data) {
        assert_eq!(link.to_string().parse::<ClinicLink>().ok(), Some(link));
    }
    if let Some(list) = canonical::<DeviceList>(data) {
        let _ = list.verify(identity);
    }
    if let Some(wipe) = canonical::<WipeCommand>(data) {
        let org = *wipe.issuer().org();
        let device = DeviceAddress {
            fingerprint: identity.fingerprint().0,
            device_id: 1,
        };
        let _ = wipe.verify_for(device, &org, now, None);
    }
    if let Ok(text) = core::str::from_utf8(data) {
        let _ = text.parse::<ClinicLink>();
    }
}
