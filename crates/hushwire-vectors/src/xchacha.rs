//! HChaCha20 intermediates for every XChaCha20-Poly1305 use in the vectors (docs/protocol.md
//! §8.2), so an implementer can check the subkey step on its own: XChaCha20-Poly1305(key,
//! nonce[24]) is ChaCha20-Poly1305 (RFC 8439) under `subkey = HChaCha20(key, nonce[0..16])`
//! with the 12-byte nonce `0^4 ‖ nonce[16..24]` (draft-irtf-cfrg-xchacha-03 §2.3).

use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use hushwire::proto::labels;
use serde_json::{Value, json};

use crate::{Error, hkdf32};

// Indices below are constants under 16 on a `[u32; 16]`, and 0..4 on a 4-byte chunk.
#[allow(clippy::indexing_slicing)]
fn quarter(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(12);
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(7);
}

#[allow(clippy::indexing_slicing)]
fn words(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
}

/// HChaCha20 (draft-irtf-cfrg-xchacha-03 §2.2): ChaCha20's 20 rounds over the constants, the
/// key and the 16-byte input, without the final addition; output words 0..4 and 12..16.
#[allow(clippy::indexing_slicing)]
pub(crate) fn hchacha20(key: &[u8; 32], input: &[u8; 16]) -> [u8; 32] {
    let mut s = [0u32; 16];
    let constants = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];
    for (slot, w) in s
        .iter_mut()
        .zip(constants.into_iter().chain(words(key)).chain(words(input)))
    {
        *slot = w;
    }
    for _ in 0..10 {
        quarter(&mut s, 0, 4, 8, 12);
        quarter(&mut s, 1, 5, 9, 13);
        quarter(&mut s, 2, 6, 10, 14);
        quarter(&mut s, 3, 7, 11, 15);
        quarter(&mut s, 0, 5, 10, 15);
        quarter(&mut s, 1, 6, 11, 12);
        quarter(&mut s, 2, 7, 8, 13);
        quarter(&mut s, 3, 4, 9, 14);
    }
    let mut out = [0u8; 32];
    for (chunk, w) in out.chunks_exact_mut(4).zip(s[..4].iter().chain(&s[12..])) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// The steps of one XChaCha20-Poly1305 use: the HChaCha20 input, the subkey and the
/// ChaCha20-Poly1305 nonce.
fn steps(key: &[u8; 32], nonce: &[u8]) -> Result<([u8; 32], [u8; 12]), Error> {
    let (head, tail) = nonce
        .split_at_checked(16)
        .ok_or("nonce shorter than 16 bytes")?;
    let input: [u8; 16] = head.try_into()?;
    if tail.len() != 8 {
        return Err("an XChaCha20-Poly1305 nonce is 24 bytes".into());
    }
    let mut short = [0u8; 12];
    short[4..].copy_from_slice(tail);
    Ok((hchacha20(key, &input), short))
}

fn steps_json(key: &[u8; 32], nonce: &[u8]) -> Result<Value, Error> {
    let (subkey, short) = steps(key, nonce)?;
    Ok(json!({
        "hchacha20_input": hex::encode(nonce.get(..16).ok_or("short nonce")?),
        "subkey": hex::encode(subkey),
        "chacha20poly1305_nonce": hex::encode(short),
    }))
}

/// Adds `enc_key` and `xchacha20` (the HChaCha20 steps of the envelope) to `sealed_session.json`,
/// after checking that ChaCha20-Poly1305 under the published subkey opens the envelope.
pub(crate) fn add_to_sealed_session(
    sealed_session: &mut Value,
    storage_key: &[u8; 32],
    sealed: &[u8],
) -> Result<(), Error> {
    let enc_key = hkdf32(&[0; 32], storage_key, labels::KDF_SEAL_KEY)?;
    let (header, ciphertext) = sealed
        .split_at_checked(42)
        .ok_or("sealed session too short")?;
    let nonce = header.get(18..42).ok_or("sealed session too short")?;
    let (subkey, short) = steps(&enc_key, nonce)?;
    ChaCha20Poly1305::new(&subkey.into())
        .decrypt(
            &short.into(),
            Payload {
                msg: ciphertext,
                aad: header,
            },
        )
        .map_err(|_| "the published subkey does not open the sealed session")?;
    let object = sealed_session
        .as_object_mut()
        .ok_or("sealed_session.json is not an object")?;
    object.insert("enc_key".into(), json!(hex::encode(enc_key)));
    object.insert("xchacha20".into(), steps_json(&enc_key, nonce)?);
    Ok(())
}

/// Adds `xchacha20` (the HChaCha20 steps of its encryption under `record_key`) to each record
/// of `transcript.json`, read from the record's published `nonce`.
pub(crate) fn add_to_transcript(transcript: &mut Value) -> Result<(), Error> {
    let key: [u8; 32] = hex::decode(
        transcript["record_key"]
            .as_str()
            .ok_or("transcript.json has no record_key")?,
    )?
    .try_into()
    .map_err(|_| "record_key is not 32 bytes")?;
    let records = transcript["records"]
        .as_array_mut()
        .ok_or("transcript.json has no records")?;
    for record in records {
        let nonce = hex::decode(record["nonce"].as_str().ok_or("record without a nonce")?)?;
        let steps = steps_json(&key, &nonce)?;
        record
            .as_object_mut()
            .ok_or("a record is not an object")?
            .insert("xchacha20".into(), steps);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    /// draft-irtf-cfrg-xchacha-03 §2.2.1.
    #[test]
    fn hchacha20_matches_the_draft() {
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let input = hex::decode("000000090000004a0000000031415927").unwrap();
        assert_eq!(
            hex::encode(super::hchacha20(&key, &input.try_into().unwrap())),
            "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"
        );
    }
}
