//! `relay_login.json`: the relay's signed challenge and a device's login answer
//! (`docs/relay-protocol.md` §3). No randomness: the relay keys, nonce and expiry are fixed here,
//! the device is Alice of `keys.json`, and Ed25519 signing is deterministic.

use ed25519_dalek::SigningKey;
use hushwire::Account;
use hushwire::proto::Codec;
use hushwire::proto::relay::{Challenge, Credentials, Frame, FrameBody};
use serde_json::{Value, json};

use crate::Error;

/// The relay key's secret (RFC 8032 seed): `0x52` ("R") × 32.
const RELAY_SECRET: [u8; 32] = [0x52; 32];
/// Another deployment's relay key secret, for the negative case: `0x53` × 32.
const OTHER_RELAY_SECRET: [u8; 32] = [0x53; 32];
/// The challenge's nonce: the bytes 0x20 to 0x3f.
const NONCE: [u8; 32] = [
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f,
];
/// The challenge's expiry, Unix milliseconds.
const EXPIRES_AT_MS: u64 = 1_700_000_060_000;

/// A frame's body: the frame without its 6-byte header (version, type, request id).
fn body(frame_body: FrameBody) -> Result<Vec<u8>, Error> {
    let bytes = Frame {
        request_id: 0,
        body: frame_body.clone(),
    }
    .to_bytes();
    if Frame::from_bytes(&bytes).ok().map(|f| f.body) != Some(frame_body) {
        return Err("a relay login frame does not round-trip".into());
    }
    Ok(bytes.get(6..).ok_or("short frame")?.to_vec())
}

/// The whole file, for `alice` (keys.json's Alice).
pub fn relay_login(alice: &Account) -> Result<Value, Error> {
    let relay = SigningKey::from_bytes(&RELAY_SECRET);
    let challenge = Challenge::new(NONCE, EXPIRES_AT_MS, &relay);
    if !challenge.verify_relay_signature() {
        return Err("the relay's challenge signature does not verify".into());
    }
    let device_id = alice.device_id();
    let answer = Credentials::answer(
        alice.identity_key().clone(),
        device_id,
        &challenge,
        alice.identity(),
    );
    if !answer.verify(&challenge) {
        return Err("the login answer does not verify".into());
    }
    let other = SigningKey::from_bytes(&OTHER_RELAY_SECRET);
    let other_challenge = Challenge::new(NONCE, EXPIRES_AT_MS, &other);
    if answer.verify(&other_challenge) {
        return Err("the login answer verifies under another relay key".into());
    }

    Ok(json!({
        "description": "A relay's login challenge and a device's answer (docs/relay-protocol.md §3.2), no randomness. The relay key is the Ed25519 key whose RFC 8032 seed is `relay_secret_key`; `relay_key_fingerprint` = SHA-256(RELAY_KEY_FINGERPRINT || relay_key). `challenge_signed_message` is the 72 bytes relay_key || nonce || expires_at_ms (u64 big-endian) after the label SIG_RELAY_CHALLENGE; `relay_signature` is Ed25519 over SIG_RELAY_CHALLENGE || those bytes; `challenge` is the Challenge frame's body (136 bytes, after the 6-byte frame header): nonce || relay_key || expires_at_ms || relay_signature. The device is Alice of keys.json (identity signing key: Ed25519 seed = keys.json alice.draws[0]); `login_signed_message` is the 76 bytes relay_key || nonce || expires_at_ms || device_id (u32 big-endian) after SIG_RELAY_LOGIN; `login_signature` is Ed25519 over SIG_RELAY_LOGIN || those bytes; `credentials` is the Authenticate frame's body: identity_key (128) || device_id || login_signature. `other_relay`: another deployment's key and its challenge with the same nonce and expiry; the same answer checked against it fails (`answer_verifies` false).",
        "relay_secret_key": hex::encode(RELAY_SECRET),
        "relay_key": hex::encode(challenge.relay_key.as_bytes()),
        "relay_key_fingerprint": challenge.relay_key.fingerprint().to_string(),
        "nonce": hex::encode(NONCE),
        "expires_at_ms": EXPIRES_AT_MS,
        "challenge_signed_message": hex::encode(challenge.relay_signed_message()),
        "relay_signature": hex::encode(challenge.relay_signature),
        "challenge": hex::encode(body(FrameBody::Challenge(challenge))?),
        "identity_key": hex::encode(alice.identity_key().to_bytes()),
        "device_id": device_id,
        "login_signed_message": hex::encode(challenge.signed_message(device_id)),
        "login_signature": hex::encode(answer.signature),
        "credentials": hex::encode(body(FrameBody::Authenticate(answer))?),
        "other_relay": {
            "relay_secret_key": hex::encode(OTHER_RELAY_SECRET),
            "relay_key": hex::encode(other_challenge.relay_key.as_bytes()),
            "challenge": hex::encode(body(FrameBody::Challenge(other_challenge))?),
            "answer_verifies": false,
        },
    }))
}
