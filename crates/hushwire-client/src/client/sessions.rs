//! Sessions with contacts: starting one from a fetched bundle, loading and saving them sealed
//! (`docs/client.md` §5.6).

use hushwire::UnsealError;
use hushwire::proto::PreKeyBundle;
use hushwire::proto::audit::{self, AuditEvent};
use hushwire::proto::codec::Codec as _;
use hushwire::proto::relay::FrameBody;
use hushwire::{Account, Session};
use sqlx::SqliteConnection;

use crate::address::Address;
use crate::address::{device_ref, own_ref};
use crate::error::{ClientError, Result};
use crate::link::Link;
use crate::os::{now_ms, rng};
use crate::store;

use super::{Client, session_error};

/// Sessions kept per contact (the active one and recent others, for messages still in flight).
pub(super) const SESSIONS_PER_CONTACT: i64 = 4;

impl Client {
    // ----- sessions -------------------------------------------------------------------------

    /// Loads a contact's sessions, the active one first.
    pub(super) async fn load_sessions(
        &self,
        c: &mut SqliteConnection,
        contact_id: i64,
    ) -> Result<Vec<StoredSession>> {
        let mut out = Vec::new();
        for row in store::sessions(c, contact_id).await? {
            let session = match Session::unseal(&row.sealed, &self.inner.storage_key) {
                Ok(session) => session,
                // A session made by protocol version 1 cannot continue (`protocol.md` §7.5):
                // left out, it is as if lost, and the contact heals with a new session
                // (`client.md` §5.13). Pruning removes its row later.
                Err(UnsealError::SessionVersion1) => {
                    tracing::info!("a protocol-version-1 session was set aside");
                    continue;
                }
                Err(_) => return Err(ClientError::CorruptStore("session")),
            };
            out.push(StoredSession {
                active: row.active,
                last_used_ms: row.last_used_ms,
                session,
            });
        }
        Ok(out)
    }

    pub(super) async fn save_session(
        &self,
        c: &mut SqliteConnection,
        contact_id: i64,
        session: &Session,
    ) -> Result<()> {
        let sealed = session.seal(&self.inner.storage_key, &mut rng());
        store::put_session(
            c,
            contact_id,
            session.base_key().as_bytes(),
            now_ms(),
            &sealed,
        )
        .await
    }

    /// Makes sure the contact has a session, fetching their bundle if needed. Never holds the
    /// state lock while waiting for the relay.
    pub(super) async fn ensure_session(&self, link: &Link, contact_id: i64) -> Result<()> {
        {
            let mut c = self.inner.db.acquire().await?;
            // Only an active session sends; after a reset (§5.13) all are retired.
            if store::sessions(&mut c, contact_id)
                .await?
                .iter()
                .any(|s| s.active)
            {
                return Ok(());
            }
        }
        let record = {
            let mut c = self.inner.db.acquire().await?;
            self.load_contact(&mut c, contact_id).await?
        };
        let bundle = match link
            .call(FrameBody::FetchBundle(record.address().to_device_address()))
            .await?
        {
            FrameBody::Bundle(b) => b,
            _ => {
                return Err(ClientError::Connection(
                    "unexpected answer to a bundle fetch".into(),
                ));
            }
        };
        self.start_session(contact_id, &bundle).await
    }

    pub(super) async fn start_session(&self, contact_id: i64, bundle: &PreKeyBundle) -> Result<()> {
        let state = self.inner.state.lock().await;
        let mut tx = store::begin(&self.inner.db).await?;
        let mut record = self.load_contact(&mut tx, contact_id).await?;
        // The relay is not trusted: the bundle must belong to the identity the address pins.
        if bundle.identity.fingerprint().0 != record.fingerprint {
            return Err(ClientError::RelayIdentityMismatch(record.name));
        }
        if store::sessions(&mut tx, contact_id)
            .await?
            .iter()
            .any(|s| s.active)
        {
            // A session appeared meanwhile (the contact wrote first): use it.
            return Ok(());
        }
        let session = Session::initiate(state.account.identity(), bundle, &mut rng())
            .map_err(session_error)?;
        if record.identity.is_none() {
            record.identity = Some(bundle.identity.to_bytes());
            self.save_contact(&mut tx, contact_id, &record).await?;
        }
        self.save_session(&mut tx, contact_id, &session).await?;
        store::activate_session(
            &mut tx,
            contact_id,
            session.base_key().as_bytes(),
            SESSIONS_PER_CONTACT,
        )
        .await?;
        store::remember_base_key(&mut tx, contact_id, session.base_key().as_bytes()).await?;
        let event = session_started(&state.account, record.address(), &session);
        self.audit(&mut tx, &state.account, event).await?;
        tx.commit().await?;
        Ok(())
    }
}

pub(super) fn session_started(account: &Account, peer: Address, session: &Session) -> AuditEvent {
    let mut conversation = [0u8; 16];
    conversation.copy_from_slice(session.base_key().as_bytes().get(..16).unwrap_or(&[0; 16]));
    AuditEvent::SessionStarted {
        device: own_ref(account),
        peer: device_ref(peer),
        conversation: audit::ConversationId(conversation),
    }
}

pub(super) fn missing_count(session: &Session) -> usize {
    session
        .missing_messages()
        .iter()
        .map(|g| g.missing.len())
        .sum()
}

/// A session as stored for a contact.
pub(super) struct StoredSession {
    pub(super) active: bool,
    pub(super) last_used_ms: u64,
    pub(super) session: Session,
}
