//! `clinic.json`: a clinic's organization key, link, agent certificates, revocation list, a
//! device list and a wipe command (`docs/clinic.md`), with the checks' outcomes and encodings
//! that must be refused. No randomness: the organization key's seed, times, serials and the
//! wipe's nonce are fixed here; Alice and Bob are those of `keys.json`; Ed25519 signing is
//! deterministic.

use ed25519_dalek::SigningKey;
use hushwire::Account;
use hushwire::proto::Codec;
use hushwire::proto::clinic::{
    AgentCertificate, CertificateError, ClinicLink, DeviceList, OrgKey, RevocationList, Role,
    Roles, WipeCommand, WipeError,
};
use hushwire::proto::relay::DeviceAddress;
use serde_json::{Value, json};

use crate::Error;

/// The organization key's secret (RFC 8032 seed): `0x4f` ("O") × 32.
const ORG_SECRET: [u8; 32] = [0x4f; 32];
/// Another clinic's key, for the foreign-certificate case: `0x50` × 32.
const OTHER_ORG_SECRET: [u8; 32] = [0x50; 32];
const CLINIC_NAME: &str = "Riverside Clinic";
const RELAY_URL: &str = "wss://chat.riverside.example";
const NOT_BEFORE: u64 = 1_700_000_000;
const NOT_AFTER: u64 = 1_731_536_000;
/// The time at which the checks are made (Unix seconds).
const NOW: u64 = 1_710_000_000;
const WIPE_NONCE: [u8; 16] = [0x77; 16];

fn hex_of<T: Codec>(value: &T) -> String {
    hex::encode(value.to_bytes())
}

/// Decodes and re-encodes, so the published bytes are the codec's canonical encoding.
fn round_trip<T: Codec + PartialEq>(value: &T) -> Result<(), Error> {
    if T::from_bytes(&value.to_bytes()).ok().as_ref() != Some(value) {
        return Err(format!("a {} does not round-trip", T::NAME).into());
    }
    Ok(())
}

fn verdict(result: Result<(), impl core::fmt::Debug>) -> String {
    match result {
        Ok(()) => "accepted".into(),
        Err(e) => format!("{e:?}"),
    }
}

/// The whole file, for keys.json's Alice (the agent, two devices) and Bob (the admin).
pub fn clinic(alice: &Account, bob: &Account) -> Result<Value, Error> {
    let org_signer = SigningKey::from_bytes(&ORG_SECRET);
    let org = OrgKey::new(org_signer.verifying_key())?;
    let link = ClinicLink::issue(&org_signer, CLINIC_NAME, RELAY_URL)?;
    round_trip(&link)?;
    if link.to_string().parse::<ClinicLink>().ok().as_ref() != Some(&link) {
        return Err("the clinic link's text form does not round-trip".into());
    }

    let agent_roles = Roles::of(&[Role::Agent, Role::Supervisor]).ok_or("roles")?;
    let agent = AgentCertificate::issue(
        &org_signer,
        1,
        alice.identity_key().clone(),
        "Dr. Ada Okafor",
        agent_roles,
        NOT_BEFORE,
        NOT_AFTER,
    )?;
    round_trip(&agent)?;
    let admin_roles = Roles::of(&[Role::Admin]).ok_or("roles")?;
    let admin = AgentCertificate::issue(
        &org_signer,
        2,
        bob.identity_key().clone(),
        "Front Desk Admin",
        admin_roles,
        NOT_BEFORE,
        NOT_AFTER,
    )?;
    round_trip(&admin)?;
    let other_signer = SigningKey::from_bytes(&OTHER_ORG_SECRET);
    let foreign = AgentCertificate::issue(
        &other_signer,
        1,
        alice.identity_key().clone(),
        "Dr. Ada Okafor",
        agent_roles,
        NOT_BEFORE,
        NOT_AFTER,
    )?;

    let revocations = RevocationList::issue(&org_signer, 3, NOW - 60, &[42, 1, 7])?;
    round_trip(&revocations)?;
    if !revocations.verify(&org) {
        return Err("the revocation list does not verify".into());
    }

    let devices = DeviceList::issue(alice.identity(), alice.identity_key(), 2, &[2, 1])?;
    round_trip(&devices)?;

    let target = DeviceAddress {
        fingerprint: alice.identity_key().fingerprint().0,
        device_id: 2,
    };
    let wipe = WipeCommand::issue(bob.identity(), admin.clone(), target, NOW - 30, WIPE_NONCE);
    round_trip(&wipe)?;
    let agent_wipe = WipeCommand::issue(alice.identity(), agent.clone(), target, NOW, WIPE_NONCE);

    let checks = json!({
        "now": NOW,
        "agent_certificate": verdict(agent.verify(&org, NOW, None)),
        "agent_certificate_with_revocation_list": verdict(agent.verify(&org, NOW, Some(&revocations))),
        "agent_certificate_expired": verdict(agent.verify(&org, NOT_AFTER, None)),
        "agent_certificate_not_yet_valid": verdict(agent.verify(&org, NOT_BEFORE - 1, None)),
        "agent_certificate_as_admin": verdict(agent.verify_role(&org, NOW, None, Role::Admin)),
        "admin_certificate_as_admin": verdict(admin.verify_role(&org, NOW, Some(&revocations), Role::Admin)),
        "foreign_certificate": verdict(foreign.verify(&org, NOW, None)),
        "device_list_for_alice": verdict(devices.verify(alice.identity_key())),
        "device_list_for_bob": verdict(devices.verify(bob.identity_key())),
        "wipe_for_target": verdict(wipe.verify_for(target, &org, NOW, Some(&revocations))),
        "wipe_for_another_device": verdict(wipe.verify_for(DeviceAddress { device_id: 1, ..target }, &org, NOW, Some(&revocations))),
        "wipe_signed_by_an_agent": verdict(agent_wipe.verify_for(target, &org, NOW, None)),
    });
    // The generator and the spec agree on the outcomes the file publishes.
    let expected = [
        (agent.verify(&org, NOW, None), Ok(())),
        (
            agent.verify(&org, NOW, Some(&revocations)),
            Err(CertificateError::Revoked { serial: 1 }),
        ),
        (
            foreign.verify(&org, NOW, None),
            Err(CertificateError::WrongClinic),
        ),
    ];
    if expected.iter().any(|(got, want)| got != want) {
        return Err("a certificate check disagrees with docs/clinic.md §3".into());
    }
    if agent_wipe.verify_for(target, &org, NOW, None)
        != Err(WipeError::Certificate(CertificateError::MissingRole(
            Role::Admin,
        )))
    {
        return Err("an agent's wipe is not refused for its missing role".into());
    }

    Ok(json!({
        "description": "A clinic's signed structures (docs/clinic.md), no randomness. The organization key is the Ed25519 key whose RFC 8032 seed is `org_secret_key`; `org_key_fingerprint` = SHA-256(ORG_KEY_FINGERPRINT || org_key). Every structure is version 0x01 || type || fields || an Ed25519 signature over the structure's context label || every byte before the signature (§1). `link_text` is \"hushwire-clinic:\" || base64url without padding of `link`. `agent_certificate` certifies keys.json's Alice (identity_key; roles agent+supervisor = 0x03, serial 1); `admin_certificate` certifies keys.json's Bob (roles admin = 0x04, serial 2); `foreign_certificate` is Alice's certificate signed by `other_org_secret_key`. `revocation_list` (sequence 3) revokes serials 1, 7 and 42. `device_list` is signed by Alice's identity (Ed25519 seed = keys.json alice.draws[0]): sequence 2, devices 1 and 2. `wipe_command` is Bob's (seed = keys.json bob.account.draws[0]) order to wipe Alice's device 2, embedding `admin_certificate`; `agent_wipe_command` is the same order made by Alice with her agent certificate. `checks` gives each check's outcome at `checks.now` (\"accepted\" or the refusal). `invalid` lists encodings that must not decode, each a one-field change of a valid one, with the field the decoder names.",
        "org_secret_key": hex::encode(ORG_SECRET),
        "org_key": hex::encode(org.to_bytes()),
        "org_key_fingerprint": org.fingerprint().to_string(),
        "other_org_secret_key": hex::encode(OTHER_ORG_SECRET),
        "clinic_name": CLINIC_NAME,
        "relay_url": RELAY_URL,
        "link": hex_of(&link),
        "link_text": link.to_string(),
        "not_before": NOT_BEFORE,
        "not_after": NOT_AFTER,
        "agent_certificate": hex_of(&agent),
        "admin_certificate": hex_of(&admin),
        "foreign_certificate": hex_of(&foreign),
        "revocation_list": {
            "sequence": revocations.sequence(),
            "issued_at": revocations.issued_at(),
            "serials": revocations.serials(),
            "bytes": hex_of(&revocations),
        },
        "device_list": {
            "sequence": devices.sequence(),
            "devices": devices.devices(),
            "bytes": hex_of(&devices),
        },
        "wipe_command": {
            "target_device_id": target.device_id,
            "issued_at": wipe.issued_at(),
            "nonce": hex::encode(WIPE_NONCE),
            "bytes": hex_of(&wipe),
        },
        "agent_wipe_command": hex_of(&agent_wipe),
        "checks": checks,
        "invalid": invalid_cases(&link, &agent, &revocations, &devices)?,
    }))
}

/// `bytes` with `replacement` written over it at `at`; an error, not a silent no-op, if the
/// range falls outside `bytes`.
fn replaced(bytes: &[u8], at: usize, replacement: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = bytes.to_vec();
    out.get_mut(at..at + replacement.len())
        .ok_or("an invalid case's change falls outside its encoding")?
        .copy_from_slice(replacement);
    Ok(out)
}

/// One-field changes of valid encodings, each refused by the decoder, with the field it names.
fn invalid_cases(
    link: &ClinicLink,
    agent: &AgentCertificate,
    revocations: &RevocationList,
    devices: &DeviceList,
) -> Result<Value, Error> {
    let cert = agent.to_bytes();
    // Offsets in the certificate: header 2, org key 32, serial 8, subject 128, then the name.
    let name_at = 2 + 32 + 8 + 128;
    let name_len = agent.name().len();
    let roles_at = name_at + 1 + name_len;
    let not_after_at = roles_at + 1 + 8;

    let mut cases = Vec::new();
    let mut case = |name: &str, structure: &str, bytes: Vec<u8>, field: &str| {
        cases.push(json!({ "name": name, "structure": structure, "bytes": hex::encode(bytes), "field": field }));
    };

    let link_name_at = 2 + 32 + 1;
    // "Riverside" → "riverside": the signature no longer covers the name.
    case(
        "link with an altered name",
        "clinic link",
        replaced(&link.to_bytes(), link_name_at, b"r")?,
        "clinic link signature",
    );
    case(
        "certificate with an unknown role bit",
        "agent certificate",
        replaced(&cert, roles_at, &[0x08])?,
        "roles",
    );
    case(
        "certificate with no role",
        "agent certificate",
        replaced(&cert, roles_at, &[0x00])?,
        "roles",
    );
    // An escape character in the name.
    case(
        "certificate whose name holds a control character",
        "agent certificate",
        replaced(&cert, name_at + 1, &[0x1b])?,
        "agent name",
    );
    // "Dr. Ada Okafor" → "Dr. \u{200b} Okafor": a zero-width space in place of "Ada" (3 bytes
    // each), so the name displays as if it held nothing there.
    case(
        "certificate whose name holds a zero-width space",
        "agent certificate",
        replaced(&cert, name_at + 1 + 4, "\u{200b}".as_bytes())?,
        "agent name",
    );
    case(
        "certificate whose period is empty",
        "agent certificate",
        replaced(&cert, not_after_at, &agent.not_before().to_be_bytes())?,
        "validity period",
    );
    case(
        "certificate with version 2",
        "agent certificate",
        replaced(&cert, 0, &[0x02])?,
        "version",
    );

    // Revocation list: header 2, org 32, sequence 8, issued_at 8, count 2, then the serials;
    // the first two swapped.
    let list = revocations.to_bytes();
    let first = 2 + 32 + 8 + 8 + 2;
    let serials = list.get(first..first + 16).ok_or("short list")?;
    let (x, y) = serials.split_at(8);
    case(
        "revocation list with serials out of order",
        "revocation list",
        replaced(&list, first, &[y, x].concat())?,
        "revoked serials (must be strictly increasing)",
    );

    // Device list: header 2, identity 32, sequence 8, count 1.
    let count_at = 2 + 32 + 8;
    case(
        "device list with no device",
        "device list",
        replaced(&devices.to_bytes(), count_at, &[0])?,
        "device list (empty)",
    );
    case(
        "device list with 17 devices",
        "device list",
        replaced(&devices.to_bytes(), count_at, &[17])?,
        "device list",
    );
    Ok(Value::Array(cases))
}
