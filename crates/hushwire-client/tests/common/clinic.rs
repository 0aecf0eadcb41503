//! A clinic's organization key: certificates for its staff, revocation lists, and staff devices
//! registered with their certificate and the clinic pinned.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use hushwire_client::Client;
use hushwire_proto::clinic::{AgentCertificate, ClinicLink, RevocationList, Role, Roles};

/// A clinic's organization key and its link (the relay URL in it is not used by the tests:
/// devices register with the relay's real URL).
pub struct Org {
    pub key: SigningKey,
    pub link: ClinicLink,
}

impl Org {
    /// The clinic `name` whose organization key is made from `seed`.
    pub fn new(seed: u8, name: &str) -> Self {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let link = ClinicLink::issue(&key, name, "ws://127.0.0.1:7700").unwrap();
        Self { key, link }
    }

    /// A certificate for `device`'s identity, valid from a minute ago for an hour.
    pub async fn certify(
        &self,
        serial: u64,
        device: &Client,
        name: &str,
        roles: &[Role],
    ) -> AgentCertificate {
        let now = now();
        AgentCertificate::issue(
            &self.key,
            serial,
            device.identity_key().await,
            name,
            Roles::of(roles).unwrap(),
            now - 60,
            now + 3600,
        )
        .unwrap()
    }

    pub fn revoke(&self, sequence: u64, serials: &[u64]) -> RevocationList {
        RevocationList::issue(&self.key, sequence, now(), serials).unwrap()
    }
}

/// Waits until the clock is in a later second than when called (certificate and list times
/// are in whole seconds).
pub async fn next_second() {
    let start = now();
    while now() <= start {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A clinic's staff device, registered at `url` with its certificate and the clinic pinned,
/// and the path of its store.
pub async fn staff(
    dir: &Path,
    url: &str,
    org: &Org,
    name: &str,
    serial: u64,
    roles: &[Role],
) -> (Client, PathBuf) {
    let (client, path) = super::device(dir, &name.replace(' ', "-")).await;
    let cert = org.certify(serial, &client, name, roles).await;
    client
        .register_agent(url, None, &cert, Some(&org.link))
        .await
        .unwrap();
    (client, path)
}
