//! What crosses the network in the clear: session messages, prekey bundles and relay frames
//! (`docs/wire-format.md`, `docs/relay-protocol.md`).

use hushwire::proto::relay::{Frame, FrameBody};
use hushwire::proto::{Codec, PreKeyBundle};
use hushwire::wire::Message;

use crate::fixtures::relay_challenge;

/// A session message (ratchet or prekey): decoding never panics, and whatever decodes
/// re-encodes to the same bytes.
pub fn decode_message(data: &[u8]) {
    if let Ok(message) = Message::from_bytes(data) {
        assert_eq!(message.to_bytes(), data, "non-canonical message accepted");
    }
}

/// A prekey bundle: decoding and checking its three signatures never panic, and whatever
/// decodes re-encodes to the same bytes (the signatures cover encodings, so a second encoding
/// of one bundle would be a malleability).
pub fn decode_bundle(data: &[u8]) {
    if let Ok(bundle) = PreKeyBundle::from_bytes(data) {
        let _ = bundle.verify();
        assert_eq!(bundle.to_bytes(), data, "non-canonical bundle accepted");
    }
}

/// A relay frame, from either side: decoding never panics, whatever decodes re-encodes to the
/// same bytes, and the signature checks run on a decoded frame never panic: the relay's on a
/// device's answer and uploads, the client's on a challenge (the relay's signature under the
/// key it presents) and a bundle.
pub fn relay_frame(data: &[u8]) {
    let Ok(frame) = Frame::from_bytes(data) else {
        return;
    };
    assert_eq!(frame.to_bytes(), data, "non-canonical relay frame accepted");
    match &frame.body {
        FrameBody::Register { credentials, .. } | FrameBody::Authenticate(credentials) => {
            let _ = credentials.verify(relay_challenge());
            let _ = credentials.address();
        }
        FrameBody::Challenge(challenge) => {
            let _ = challenge.verify_relay_signature();
            let _ = challenge.relay_key.fingerprint();
            let _ = challenge.signed_message(0);
        }
        FrameBody::UploadPreKeys {
            signed_prekey,
            last_resort_kem_prekey,
            one_time_kem_prekeys,
            ..
        } => {
            // The relay checks uploads against the device's registered identity. Any fixed
            // identity runs the same code; fuzzed prekeys just never verify under it.
            let identity = crate::fixtures::audit_signer().public();
            if let Some(k) = signed_prekey {
                let _ = k.verify(identity, 1);
            }
            for k in last_resort_kem_prekey.iter().chain(one_time_kem_prekeys) {
                let _ = k.verify(identity, 1);
            }
        }
        FrameBody::Bundle(bundle) => {
            let _ = bundle.verify();
        }
        _ => {}
    }
}
