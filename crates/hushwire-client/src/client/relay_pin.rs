//! The relay key this device pinned (`docs/client.md` §5.16): taken at registration (or, for a
//! store from before pinning, at its first successful login), checked on every connection, and
//! changed only by registering again.

use hushwire::proto::relay::RelayKey;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::os::{now_ms, rng};
use crate::store;

use super::Client;

/// The sealed value of the `relay_pin` row (purpose `relay pin`, empty context).
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct PinRecord {
    /// The relay's Ed25519 public key.
    pub(super) relay_key: [u8; 32],
    /// When it was pinned (Unix ms).
    pub(super) pinned_at_ms: u64,
    /// Pinned at the first login of a store that predates pinning, not at registration.
    pub(super) on_first_login: bool,
}

/// What this device pinned, as [`Client::relay_key_pin`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayKeyPin {
    /// The relay key's fingerprint (64 hex digits, `relay-protocol.md` §3): compare it with
    /// the one the relay's operator publishes (`hushwire-relay relay-key` prints it).
    pub fingerprint: String,
    /// When it was pinned (Unix ms).
    pub pinned_at_ms: u64,
    /// `true` if it was pinned at the first login of a store created before pinning existed
    /// (trust on that first login), `false` if at registration.
    pub on_first_login: bool,
}

impl PinRecord {
    pub(super) fn key(&self) -> RelayKey {
        RelayKey(self.relay_key)
    }
}

impl Client {
    /// The relay key this device pinned, if any (none before registration; none for a store
    /// from before pinning until its first successful login).
    pub async fn relay_key_pin(&self) -> Option<RelayKeyPin> {
        let state = self.inner.state.lock().await;
        state.relay_pin.as_ref().map(|p| RelayKeyPin {
            fingerprint: p.key().fingerprint().to_string(),
            pinned_at_ms: p.pinned_at_ms,
            on_first_login: p.on_first_login,
        })
    }

    /// Stores `key` as the pinned relay key, with `url` as the relay (registration) or
    /// without changing the relay (first login), in one transaction.
    pub(super) async fn pin_relay_key(
        &self,
        key: RelayKey,
        url: Option<&str>,
        on_first_login: bool,
    ) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        let record = PinRecord {
            relay_key: *key.as_bytes(),
            pinned_at_ms: now_ms(),
            on_first_login,
        };
        let mut profile = state.profile.clone();
        if let Some(url) = url {
            profile.relay_url = Some(url.to_owned());
        }
        let mut rng = rng();
        let sealed_pin = self
            .inner
            .vault
            .seal_value("relay pin", b"", &record, &mut rng);
        let sealed_profile = self
            .inner
            .vault
            .seal_value("profile", b"", &profile, &mut rng);
        let mut tx = store::begin(&self.inner.db).await?;
        store::put_relay_pin(&mut tx, &sealed_pin).await?;
        store::put_meta(&mut tx, "profile", &sealed_profile).await?;
        tx.commit().await?;
        if let Some(old) = state.relay_pin.as_ref().filter(|old| old.key() != key) {
            tracing::warn!(
                old = %old.key().fingerprint(),
                new = %key.fingerprint(),
                "registered again: the pinned relay key is replaced"
            );
        }
        state.relay_pin = Some(record);
        state.profile = profile;
        Ok(())
    }
}
