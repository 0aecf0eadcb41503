//! Clinic structures (`docs/clinic.md`): every check refuses what it should with its own reason,
//! and every decoder is total and canonical under arbitrary mutation.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use ed25519_dalek::SigningKey;
use hushwire_proto::clinic::{
    AgentCertificate, CertificateError, ClinicLink, DeviceList, DeviceListError, OrgKey,
    RevocationList, Role, Roles, WipeCommand, WipeError, is_newer,
};
use hushwire_proto::keys::{X25519PublicKey, identity_binding_message};
use hushwire_proto::relay::DeviceAddress;
use hushwire_proto::signer::Signer as _;
use hushwire_proto::{Codec, IdentityKey, labels};
use proptest::prelude::*;

const NOW: u64 = 1_710_000_000;

fn identity(seed: u8) -> (SigningKey, IdentityKey) {
    let signing = SigningKey::from_bytes(&[seed; 32]);
    let mut nine = [0u8; 32];
    nine[0] = 9;
    let dh = X25519PublicKey::from_array(nine, "k").unwrap();
    let binding = signing.sign(
        labels::SIG_IDENTITY_BINDING,
        &identity_binding_message(signing.verifying_key().as_bytes(), &nine),
    );
    let id = IdentityKey::new(signing.verifying_key().to_bytes(), dh, binding).unwrap();
    (signing, id)
}

fn org() -> (SigningKey, OrgKey) {
    let signer = SigningKey::from_bytes(&[0x4f; 32]);
    let key = OrgKey::new(signer.verifying_key()).unwrap();
    (signer, key)
}

fn cert(org: &SigningKey, serial: u64, subject: &IdentityKey, roles: &[Role]) -> AgentCertificate {
    AgentCertificate::issue(
        org,
        serial,
        subject.clone(),
        "Dr. Ada Okafor",
        Roles::of(roles).unwrap(),
        NOW - 1_000,
        NOW + 1_000,
    )
    .unwrap()
}

#[test]
fn a_certificate_is_refused_for_each_reason_in_order() {
    let (org_signer, org_key) = org();
    let (_, ada) = identity(1);
    let good = cert(&org_signer, 5, &ada, &[Role::Agent]);
    assert_eq!(good.verify(&org_key, NOW, None), Ok(()));
    assert_eq!(good.name(), "Dr. Ada Okafor");

    let other = SigningKey::from_bytes(&[0x50; 32]);
    let foreign = cert(&other, 5, &ada, &[Role::Agent]);
    assert_eq!(
        foreign.verify(&org_key, NOW, None),
        Err(CertificateError::WrongClinic)
    );

    // A forgery: the clinic's key in the certificate, another key's signature.
    let mut bytes = foreign.to_bytes();
    bytes[2..34].copy_from_slice(&org_key.to_bytes());
    let forged = AgentCertificate::from_bytes(&bytes).unwrap();
    assert_eq!(
        forged.verify(&org_key, NOW, None),
        Err(CertificateError::BadSignature)
    );

    assert_eq!(
        good.verify(&org_key, NOW - 1_001, None),
        Err(CertificateError::NotYetValid {
            not_before: NOW - 1_000
        })
    );
    assert_eq!(
        good.verify(&org_key, NOW + 1_000, None),
        Err(CertificateError::Expired {
            not_after: NOW + 1_000
        })
    );
    let list = RevocationList::issue(&org_signer, 1, NOW, &[5]).unwrap();
    assert_eq!(
        good.verify(&org_key, NOW, Some(&list)),
        Err(CertificateError::Revoked { serial: 5 })
    );
    let foreign_list = RevocationList::issue(&other, 1, NOW, &[]).unwrap();
    assert_eq!(
        good.verify(&org_key, NOW, Some(&foreign_list)),
        Err(CertificateError::ForeignRevocationList)
    );
    assert_eq!(
        good.verify_role(&org_key, NOW, None, Role::Admin),
        Err(CertificateError::MissingRole(Role::Admin))
    );
}

#[test]
fn names_and_periods_are_checked_when_issuing() {
    let (org_signer, _) = org();
    let (_, ada) = identity(1);
    let roles = Roles::of(&[Role::Agent]).unwrap();
    assert!(
        AgentCertificate::issue(&org_signer, 1, ada.clone(), "Ada\u{202e}", roles, 0, 1).is_err()
    );
    assert!(AgentCertificate::issue(&org_signer, 1, ada, "Ada", roles, 5, 5).is_err());
    assert!(Roles::of(&[]).is_none());
    assert_eq!(
        "agent, Admin".parse::<Roles>().unwrap().to_string(),
        "agent, admin"
    );
    assert!("root".parse::<Roles>().is_err());
    assert!("".parse::<Roles>().is_err());
}

#[test]
fn a_revocation_list_only_verifies_under_its_clinic_and_is_canonical() {
    let (org_signer, org_key) = org();
    let list = RevocationList::issue(&org_signer, 7, NOW, &[9, 3, 3, 1]).unwrap();
    assert_eq!(list.serials(), &[1, 3, 9]);
    assert!(list.verify(&org_key));
    let other = OrgKey::new(SigningKey::from_bytes(&[2; 32]).verifying_key()).unwrap();
    assert!(!list.verify(&other));
    let mut bytes = list.to_bytes();
    let at = bytes.len() - 65; // the last serial's low byte
    bytes[at] ^= 1;
    let altered = RevocationList::from_bytes(&bytes).unwrap();
    assert!(!altered.verify(&org_key));
    assert!(is_newer(Some(list.sequence()), 8));
    assert!(!is_newer(Some(list.sequence()), 7));
}

#[test]
fn a_clinic_link_survives_its_text_form_and_refuses_alteration() {
    let (org_signer, org_key) = org();
    let link = ClinicLink::issue(&org_signer, "Riverside Clinic", "wss://chat.example").unwrap();
    let text = link.to_string();
    assert!(text.starts_with("hushwire-clinic:"));
    let parsed: ClinicLink = format!("  {text}\n").parse().unwrap();
    assert_eq!(parsed.org(), &org_key);
    assert_eq!(parsed.name(), "Riverside Clinic");
    assert_eq!(parsed.relay_url(), "wss://chat.example");

    let mut bytes = link.to_bytes();
    bytes[36] ^= 0x20;
    assert!(ClinicLink::from_bytes(&bytes).is_err(), "altered name");
    for bad in [
        "",
        "hushwire-clinic:",
        "hushwire-clinic:!!!",
        "https://example.com",
        &text[..text.len() - 4],
    ] {
        assert!(bad.parse::<ClinicLink>().is_err(), "{bad:?}");
    }
    for url in ["http://x", "wss://", "wss:///path", "wss://a b", ""] {
        assert!(ClinicLink::issue(&org_signer, "C", url).is_err(), "{url}");
    }
}

#[test]
fn a_device_list_must_be_signed_by_its_person() {
    let (ada_signer, ada) = identity(1);
    let (mallory_signer, mallory) = identity(2);
    let list = DeviceList::issue(&ada_signer, &ada, 3, &[2, 1, 2]).unwrap();
    assert_eq!(list.devices(), &[1, 2]);
    assert!(list.contains(2) && !list.contains(3));
    assert_eq!(list.verify(&ada), Ok(()));
    assert_eq!(list.verify(&mallory), Err(DeviceListError::WrongIdentity));
    // Mallory signs a list that claims to be Ada's.
    let forged = DeviceList::issue(&mallory_signer, &ada, 4, &[1, 2, 3]).unwrap();
    assert_eq!(forged.verify(&ada), Err(DeviceListError::BadSignature));
    assert!(DeviceList::issue(&ada_signer, &ada, 1, &[]).is_err());
    assert!(DeviceList::issue(&ada_signer, &ada, 1, &(1..=17).collect::<Vec<_>>()).is_err());
}

#[test]
fn only_an_admin_of_the_clinic_can_order_a_wipe() {
    let (org_signer, org_key) = org();
    let (admin_signer, admin) = identity(1);
    let (agent_signer, agent) = identity(2);
    let admin_cert = cert(&org_signer, 1, &admin, &[Role::Admin]);
    let agent_cert = cert(&org_signer, 2, &agent, &[Role::Agent]);
    let target = DeviceAddress {
        fingerprint: agent.fingerprint().0,
        device_id: 2,
    };
    let wipe = WipeCommand::issue(&admin_signer, admin_cert.clone(), target, NOW, [1; 16]);
    assert_eq!(wipe.verify_for(target, &org_key, NOW, None), Ok(()));
    // Still valid long after the admin's certificate expired: it was valid when issued.
    assert_eq!(
        wipe.verify_for(target, &org_key, NOW + 1_000_000, None),
        Ok(())
    );
    let other_device = DeviceAddress {
        device_id: 1,
        ..target
    };
    assert_eq!(
        wipe.verify_for(other_device, &org_key, NOW, None),
        Err(WipeError::WrongTarget)
    );
    let revoked = RevocationList::issue(&org_signer, 1, NOW, &[1]).unwrap();
    assert_eq!(
        wipe.verify(&org_key, NOW, Some(&revoked)),
        Err(WipeError::Certificate(CertificateError::Revoked {
            serial: 1
        }))
    );
    let by_agent = WipeCommand::issue(&agent_signer, agent_cert, target, NOW, [1; 16]);
    assert_eq!(
        by_agent.verify(&org_key, NOW, None),
        Err(WipeError::Certificate(CertificateError::MissingRole(
            Role::Admin
        )))
    );
    // Someone holding the admin's certificate but not the admin's key.
    let stolen = WipeCommand::issue(&agent_signer, admin_cert.clone(), target, NOW, [1; 16]);
    assert_eq!(
        stolen.verify(&org_key, NOW, None),
        Err(WipeError::BadSignature)
    );
    let future = WipeCommand::issue(&admin_signer, admin_cert, target, NOW + 301, [1; 16]);
    assert_eq!(
        future.verify(&org_key, NOW, None),
        Err(WipeError::FromTheFuture)
    );
}

fn samples() -> Vec<Vec<u8>> {
    let (org_signer, _) = org();
    let (admin_signer, admin) = identity(1);
    let admin_cert = cert(&org_signer, 1, &admin, &[Role::Admin, Role::Supervisor]);
    let target = DeviceAddress {
        fingerprint: [3; 32],
        device_id: 2,
    };
    vec![
        admin_cert.to_bytes(),
        RevocationList::issue(&org_signer, 2, NOW, &[1, 2, 3])
            .unwrap()
            .to_bytes(),
        ClinicLink::issue(&org_signer, "Zoë's Clinic", "wss://relay.example:8443/x")
            .unwrap()
            .to_bytes(),
        DeviceList::issue(&admin_signer, &admin, 1, &[1, 5])
            .unwrap()
            .to_bytes(),
        WipeCommand::issue(&admin_signer, admin_cert, target, NOW, [9; 16]).to_bytes(),
    ]
}

fn decode_any(which: usize, bytes: &[u8]) -> Option<Vec<u8>> {
    match which {
        0 => AgentCertificate::from_bytes(bytes)
            .ok()
            .map(|v| v.to_bytes()),
        1 => RevocationList::from_bytes(bytes).ok().map(|v| v.to_bytes()),
        2 => ClinicLink::from_bytes(bytes).ok().map(|v| v.to_bytes()),
        3 => DeviceList::from_bytes(bytes).ok().map(|v| v.to_bytes()),
        _ => WipeCommand::from_bytes(bytes).ok().map(|v| v.to_bytes()),
    }
}

#[test]
fn every_sample_round_trips() {
    for (which, bytes) in samples().into_iter().enumerate() {
        assert_eq!(decode_any(which, &bytes), Some(bytes), "structure {which}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any mutation either fails to decode or decodes to a value that re-encodes to exactly the
    /// mutated bytes (one encoding per value), and nothing panics.
    #[test]
    fn decoding_is_total_and_canonical(which in 0usize..5, at in any::<usize>(), value in any::<u8>(), cut in any::<usize>()) {
        let mut bytes = samples().swap_remove(which);
        let i = at % bytes.len();
        bytes[i] = value;
        bytes.truncate(cut % (bytes.len() + 1) + bytes.len() / 2);
        if let Some(again) = decode_any(which, &bytes) {
            prop_assert_eq!(again, bytes);
        }
    }
}
