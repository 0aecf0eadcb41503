//! `linking.json`: a linking code and the provisioning message sealed under it
//! (`docs/clinic.md` §5.1). The RNG is a ChaCha20 RNG seeded with `LINKING_SEED`; its draws are
//! the code's secret (16) and then the message's nonce (24). The identity handed over is Alice's
//! of `keys.json`.

use hushwire::Account;
use hushwire::linking::{LinkingCode, Provisioning};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::{Error, RecordingRng};

const LINKING_SEED: [u8; 32] = [0x4c; 32];
const RELAY_URL: &str = "wss://chat.harbour.example";
const NEW_DEVICE_ID: u32 = 2;
const RELAY_KEY: [u8; 32] = [0x52; 32];
const EXTRA: &[u8] = b"the client's clinic pin and certificate";

/// The whole file, for keys.json's Alice.
pub fn linking(alice: &Account) -> Result<Value, Error> {
    let mut rng = RecordingRng::new(LINKING_SEED);
    let code = LinkingCode::generate(RELAY_URL, &mut rng)?;
    let code_draws = rng.take();
    let provisioning = Provisioning {
        identity: alice.identity().clone(),
        device_id: NEW_DEVICE_ID,
        relay_key: RELAY_KEY,
        extra: Zeroizing::new(EXTRA.to_vec()),
    };
    let sealed = provisioning.seal(&code, &mut rng)?;
    let seal_draws = rng.take();
    let text = code.to_text();
    let parsed: LinkingCode = text.parse()?;
    let opened = Provisioning::open(&sealed, &parsed)?;
    if opened.identity.public() != alice.identity_key() || opened.device_id != NEW_DEVICE_ID {
        return Err("the provisioning message does not open to what was sealed".into());
    }
    Ok(json!({
        "description": "Linking a new device (docs/clinic.md §5.1). The RNG is ChaCha20 seeded with `seed`; `code_draws` is the code's 16-byte secret, `seal_draws` the 24-byte XChaCha20-Poly1305 nonce. `code_text` = \"hushwire-link:\" || base64url without padding of (secret || relay_url). slot = SHA-256(LINK_SLOT || secret); key = HKDF-SHA256(salt = 0^32, ikm = secret, info = KDF_LINK_KEY, L = 32); `sealed` = 0x01 || nonce || XChaCha20-Poly1305(key, nonce, AD = 0x01 || slot, plaintext) with plaintext = Alice's identity signing seed (keys.json alice.draws[0]) || her X25519 identity secret (keys.json alice.draws[1]) || device_id (u32 big-endian) || relay_key || len(extra) (u32 big-endian) || extra.",
        "seed": hex::encode(LINKING_SEED),
        "code_draws": code_draws,
        "relay_url": RELAY_URL,
        "code_text": text.as_str(),
        "slot": hex::encode(code.slot()),
        "device_id": NEW_DEVICE_ID,
        "relay_key": hex::encode(RELAY_KEY),
        "extra": hex::encode(EXTRA),
        "seal_draws": seal_draws,
        "sealed": hex::encode(&sealed),
    }))
}
