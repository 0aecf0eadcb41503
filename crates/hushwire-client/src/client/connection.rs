//! The relay connection: registration, the supervisor that reconnects with backoff, and the
//! connection loop that runs the reader, the upkeep and the sender side by side
//! (`docs/client.md` §5).

use std::sync::Arc;
use std::time::Duration;

use hushwire::proto::clinic::AgentCertificate;
use hushwire::proto::relay::{ErrorCode, FrameBody};

use crate::error::{ClientError, Result};
use crate::event::{ConnectionState, Event};
use crate::link::{self, Greeting, Incoming, Link, Pin, RelayUrl};
use crate::os::rng;

use super::{Client, Halt};

/// Name of the fault-injection variable for crash tests (see `docs/client.md` §6).
pub(super) const FAULT_VAR: &str = "HUSHWIRE_CLIENT_FAULT";

impl Client {
    // ----- connection -----------------------------------------------------------------------

    pub(super) fn current_link(&self) -> Option<Arc<Link>> {
        self.inner.link.lock().ok().and_then(|l| l.clone())
    }

    pub(super) async fn relay(&self) -> Result<RelayUrl> {
        let url = self
            .inner
            .state
            .lock()
            .await
            .profile
            .relay_url
            .clone()
            .ok_or(ClientError::NotRegistered)?;
        RelayUrl::parse(&url)
    }

    /// Registers this device with the relay at `relay_url` (with an invite token where the relay
    /// requires one) and publishes its prekeys. Remembers the relay for [`Client::connect`] and
    /// pins the relay key it presented (`docs/client.md` §5.16): registering is the one way the
    /// pin is set or changed.
    ///
    /// A device that already pinned a relay key registers only with a relay presenting that key
    /// (else [`ClientError::RelayKeyChanged`], nothing answered): replacing a pin needs
    /// [`Client::register_accepting_relay_key`] with the new key's fingerprint.
    pub async fn register(&self, relay_url: &str, invite: Option<&str>) -> Result<()> {
        let pin = {
            let state = self.inner.state.lock().await;
            state
                .relay_pin
                .as_ref()
                .map_or(Pin::Any, |p| Pin::Expect(p.key()))
        };
        let certificate = self.registration_certificate().await;
        self.register_with(relay_url, invite, pin, certificate.as_ref())
            .await
    }

    /// [`Client::register`] with a relay whose key differs from the pinned one: only a relay
    /// presenting the key whose fingerprint is `fingerprint` (64 hex digits, checked with the
    /// relay's operator) is answered, and its key replaces the pin (`docs/client.md` §5.16).
    pub async fn register_accepting_relay_key(
        &self,
        relay_url: &str,
        invite: Option<&str>,
        fingerprint: &str,
    ) -> Result<()> {
        let certificate = self.registration_certificate().await;
        self.register_with(
            relay_url,
            invite,
            Pin::Accept(fingerprint.to_owned()),
            certificate.as_ref(),
        )
        .await
    }

    pub(super) async fn register_with(
        &self,
        relay_url: &str,
        invite: Option<&str>,
        pin: Pin,
        certificate: Option<&AgentCertificate>,
    ) -> Result<()> {
        let url = RelayUrl::parse(relay_url)?;
        let account = self.inner.state.lock().await.account.clone();
        let connected = link::connect(
            &url,
            &self.inner.options.tls,
            &account,
            Greeting::Register(invite.map(str::as_bytes), certificate),
            pin,
            self.inner.options.request_timeout,
        )
        .await;
        let (link, incoming, relay_key) = match connected {
            Err(ClientError::WipeOrdered(command)) => return Err(self.handle_wipe(&command).await),
            other => other?,
        };
        // Route answers while we upload.
        let reader = tokio::spawn(drain(incoming));
        let result = async {
            self.publish_signed_prekeys(&link).await?;
            self.replenish(&link, 0, 0).await
        }
        .await;
        link.close().await;
        reader.abort();
        result?;
        // A new registration (another relay, or the same one after the user checked a new key)
        // may replace the pin; a relay key refused earlier no longer stops `connect`.
        if let Ok(mut refused) = self.inner.relay_key_refused.lock() {
            *refused = None;
        }
        self.pin_relay_key(relay_key, Some(url.as_str()), false)
            .await
    }

    /// Why the client stopped connecting for good, if it did: the relay's key changed
    /// ([`ClientError::RelayKeyChanged`]), a clinic administrator wiped this device
    /// ([`ClientError::Wiped`]), the relay handed over a wipe order that does not verify
    /// ([`ClientError::WipeRefused`]), or the relay refuses this device on the clinic's behalf
    /// ([`ClientError::RefusedByClinic`]; an explicit [`Client::connect`] asks again).
    pub fn stop_error(&self) -> Option<ClientError> {
        self.relay_key_refused()
    }

    /// The error that stopped the connection for good because the relay's key changed (or a
    /// wipe order came).
    fn relay_key_refused(&self) -> Option<ClientError> {
        if let Some(halt) = self.inner.halted.lock().ok().and_then(|h| h.clone()) {
            return Some(halt.error());
        }
        self.inner
            .relay_key_refused
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .map(|(pinned, presented)| ClientError::RelayKeyChanged { pinned, presented })
    }
    /// Starts keeping a connection to the relay in the background: reconnects with exponential
    /// backoff, sends the outbox, receives and stores messages. Idempotent.
    pub async fn connect(&self) -> Result<()> {
        self.relay().await?;
        let mut supervisor = self
            .inner
            .supervisor
            .lock()
            .map_err(|_| ClientError::Connection("poisoned".into()))?;
        if supervisor.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        // An explicit connect checks the relay's key afresh (it is refused again if it is
        // still not the pinned one).
        if let Ok(mut refused) = self.inner.relay_key_refused.lock() {
            *refused = None;
        }
        // And asks again whether the clinic still refuses this device (an administrator may
        // have acted); a wipe stays final.
        if let Ok(mut halted) = self.inner.halted.lock()
            && matches!(*halted, Some(Halt::RefusedByClinic(_)))
        {
            *halted = None;
        }
        let client = self.clone();
        *supervisor = Some(tokio::spawn(async move { client.supervise().await }));
        Ok(())
    }

    /// Stops the background connection.
    pub async fn disconnect(&self) {
        // The relay delivers a queue push once (`relay-protocol.md` §3.6): one received and not
        // yet acted on would be lost with this connection (a hand-off a short command such as
        // `queue` received would never be learned). Act on it first, for at most 5 s.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        // Pushes only: a stored payload waiting for an epoch may wait for good, and is acted
        // on at the next connection anyway.
        while *self.inner.connection.borrow() == ConnectionState::Connected
            && self.pushes_pending()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let handle = self.inner.supervisor.lock().ok().and_then(|mut s| s.take());
        if let Some(handle) = handle {
            handle.abort();
            let _ = handle.await;
        }
        if let Some(link) = self.inner.link.lock().ok().and_then(|mut l| l.take()) {
            link.close().await;
        }
        self.inner.connection.send_replace(ConnectionState::Stopped);
    }

    pub(super) async fn supervise(self) {
        let mut backoff = Duration::from_millis(250);
        loop {
            self.set_state(ConnectionState::Connecting);
            let started = std::time::Instant::now();
            let reason = match self.run_connection().await {
                Ok(()) => "the relay closed the connection".to_owned(),
                Err(ClientError::RelayKeyChanged { pinned, presented }) => {
                    // Never retried: the next attempt would meet the same key, and answering
                    // it is what the pin exists to prevent (docs/client.md §5.16).
                    if let Ok(mut l) = self.inner.link.lock() {
                        *l = None;
                    }
                    tracing::error!(%pinned, %presented, "the relay's key changed: not connecting");
                    let e = ClientError::RelayKeyChanged {
                        pinned: pinned.clone(),
                        presented: presented.clone(),
                    };
                    if let Ok(mut refused) = self.inner.relay_key_refused.lock() {
                        *refused = Some((pinned, presented));
                    }
                    self.set_state(ConnectionState::Disconnected {
                        reason: e.to_string(),
                        retry_in_ms: 0,
                    });
                    return;
                }
                Err(e @ (ClientError::Wiped { .. } | ClientError::WipeRefused(_))) => {
                    // Never retried: the relay refuses this device from now on, and a wiped
                    // store is gone (docs/client.md §8.5).
                    if let Ok(mut l) = self.inner.link.lock() {
                        *l = None;
                    }
                    self.set_state(ConnectionState::Disconnected {
                        reason: e.to_string(),
                        retry_in_ms: 0,
                    });
                    return;
                }
                Err(ClientError::Relay(
                    code @ (ErrorCode::Suspended | ErrorCode::CertificateRefused),
                )) => {
                    let e = ClientError::RefusedByClinic(code);
                    // The clinic refuses this device (suspended, removed from its device list,
                    // or its certificate revoked): retrying cannot help until an administrator
                    // acts, and hammering the relay would only fill its log (client.md §8.3).
                    if let Ok(mut l) = self.inner.link.lock() {
                        *l = None;
                    }
                    tracing::warn!(reason = %e, "the relay refuses this device: not reconnecting");
                    if let Ok(mut halted) = self.inner.halted.lock() {
                        *halted = Some(Halt::RefusedByClinic(code));
                    }
                    self.set_state(ConnectionState::Disconnected {
                        reason: e.to_string(),
                        retry_in_ms: 0,
                    });
                    return;
                }
                Err(e @ ClientError::ConnectedElsewhere) => {
                    // Another copy of this device is online: reconnecting would only knock it
                    // off in turn. The app decides (docs/client.md §5.11).
                    if let Ok(mut l) = self.inner.link.lock() {
                        *l = None;
                    }
                    tracing::warn!("connected elsewhere: not reconnecting");
                    self.set_state(ConnectionState::Disconnected {
                        reason: e.to_string(),
                        retry_in_ms: 0,
                    });
                    return;
                }
                Err(e) => e.to_string(),
            };
            if let Ok(mut l) = self.inner.link.lock() {
                *l = None;
            }
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(250);
            }
            // "Equal jitter" (a wait between half the backoff and all of it) keeps a clinic's
            // clients from reconnecting in lockstep after an outage.
            let jitter = rand_core::Rng::next_u64(&mut rng()) % (backoff.as_millis() as u64 + 1);
            let wait = Duration::from_millis(backoff.as_millis() as u64 / 2 + jitter / 2);
            tracing::info!(%reason, retry_in_ms = wait.as_millis() as u64, "relay connection lost");
            self.set_state(ConnectionState::Disconnected {
                reason,
                retry_in_ms: wait.as_millis() as u64,
            });
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(self.inner.options.max_backoff);
        }
    }

    pub(super) fn set_state(&self, state: ConnectionState) {
        self.inner.connection.send_replace(state.clone());
        self.emit(Event::Connection(state));
    }

    pub(super) async fn run_connection(&self) -> Result<()> {
        let url = self.relay().await?;
        let (account, pin) = {
            let state = self.inner.state.lock().await;
            let pin = state
                .relay_pin
                .as_ref()
                .map_or(Pin::Any, |p| Pin::Expect(p.key()));
            (state.account.clone(), pin)
        };
        let certificate = self.registration_certificate().await;
        let connect = |greeting| {
            link::connect(
                &url,
                &self.inner.options.tls,
                &account,
                greeting,
                pin.clone(),
                self.inner.options.request_timeout,
            )
        };
        let (link, mut incoming, relay_key, registered_again) = match connect(
            Greeting::Authenticate,
        )
        .await
        {
            Ok((link, incoming, key)) => (link, incoming, key, false),
            // The relay lost this device (its data was restored or wiped): register the same
            // identity again, once, where the relay's policy allows it; its prekeys are
            // published below and its mailbox starts empty (what it held is lost, and senders
            // learn it from their missing receipts, §5.13).
            Err(ClientError::Relay(ErrorCode::UnknownDevice)) => {
                match connect(Greeting::Register(None, certificate.as_ref())).await {
                    Ok((link, incoming, key)) => (link, incoming, key, true),
                    // Passed on as it is, so the supervisor stops rather than retries.
                    Err(e @ ClientError::RelayKeyChanged { .. }) => return Err(e),
                    Err(e) => {
                        return Err(ClientError::Connection(format!(
                            "the relay does not know this device and would not register it again ({e}): run `hushwire register` (with an invite if the relay needs one)"
                        )));
                    }
                }
            }
            Err(ClientError::WipeOrdered(command)) => return Err(self.handle_wipe(&command).await),
            Err(e) => return Err(e),
        };
        drop(account);
        if matches!(pin, Pin::Any) {
            // A store from before pinning: trust on this first successful login
            // (docs/client.md §5.16).
            self.pin_relay_key(relay_key, None, true).await?;
            tracing::info!(
                fingerprint = %relay_key.fingerprint(),
                "pinned the relay key at the first login of a store that had none"
            );
        }
        if registered_again {
            tracing::warn!("the relay had lost this device: registered it again");
            let reader = tokio::spawn(drain(incoming));
            let published = async {
                self.publish_signed_prekeys(&link).await?;
                self.replenish(&link, 0, 0).await
            }
            .await;
            link.close().await;
            let _ = reader.await;
            published?;
            self.emit(Event::RegisteredAgain);
            // Connect again normally, so every step below runs as on any connection.
            return Err(ClientError::Connection(
                "registered again with a relay that had lost this device; reconnecting".into(),
            ));
        }
        if let Ok(mut l) = self.inner.link.lock() {
            *l = Some(link.clone());
        }
        // The clinic checks below are pending from before anyone can see this connection as
        // connected: `sync` (on another thread) must never find `Connected` with the checks
        // not yet begun and return before the revocation list was fetched.
        self.inner
            .clinic_pending
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.set_state(ConnectionState::Connected);
        let (counts_tx, counts_rx) = tokio::sync::mpsc::channel::<(u32, u32)>(4);
        let reader = async {
            while let Some(body) = incoming.next().await? {
                match body {
                    FrameBody::Deliver(delivery) => {
                        let server_id = delivery.server_id;
                        self.receive(delivery).await?;
                        fault_point("before-ack");
                        link.post(FrameBody::Ack(vec![server_id])).await?;
                        // Conversation payloads whose membership is verified here are acted on
                        // at once; the others wait for the worker, which may fetch (a fetch's
                        // answer comes through this reader, so the reader never waits on one).
                        self.process_conversation_inbound(None).await?;
                    }
                    FrameBody::Queue(push) => {
                        if let Ok(mut pushes) = self.inner.pushes.lock() {
                            pushes.push(*push);
                        }
                        self.inner.conversation_work.notify_one();
                    }
                    FrameBody::PreKeyCount {
                        one_time,
                        kem_one_time,
                    } => {
                        let _ = counts_tx.try_send((one_time, kem_one_time));
                    }
                    FrameBody::Error { code, .. } => return Err(ClientError::Relay(code)),
                    _ => {}
                }
            }
            Ok::<(), ClientError>(())
        };
        let upkeep = async {
            let mut counts_rx = counts_rx;
            // The clinic's revocation list and contacts' certificates, at every connection
            // (docs/client.md §8.3); `sync` waits for it (pending since before `Connected`).
            self.clinic_upkeep(&link, true).await?;
            // Whose devices messages go to (docs/client.md §8.6): at every connection, when a
            // stranger writes, and every five minutes.
            self.device_upkeep(&link).await?;
            self.inner
                .clinic_pending
                .store(false, std::sync::atomic::Ordering::SeqCst);
            // Conversation payloads that waited for a connection to fetch a history.
            self.conversation_upkeep(&link).await?;
            // Rotation is checked at every connection and hourly while connected.
            let mut hourly = tokio::time::interval(Duration::from_secs(3600));
            // Receipts are checked often enough that "not confirmed" shows within seconds of
            // the timeout (§5.13).
            let receipt_check = (self.inner.options.receipt_timeout / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(15));
            let mut receipts = tokio::time::interval(receipt_check);
            let mut device_lists = tokio::time::interval(Duration::from_secs(300));
            device_lists.tick().await;
            loop {
                tokio::select! {
                    _ = hourly.tick() => {
                        self.rotate_if_due(&link).await?;
                        self.archive_if_due().await?;
                        self.retention_if_due().await;
                    }
                    _ = receipts.tick() => {
                        self.check_receipts().await?;
                    }
                    _ = device_lists.tick() => {
                        self.device_upkeep(&link).await?;
                    }
                    () = self.inner.conversation_work.notified() => {
                        self.conversation_upkeep(&link).await?;
                    }
                    () = self.inner.clinic_check.notified() => {
                        self.clinic_upkeep(&link, false).await?;
                        self.device_upkeep(&link).await?;
                        self.inner
                            .clinic_pending
                            .store(false, std::sync::atomic::Ordering::SeqCst);
                    }
                    counts = counts_rx.recv() => match counts {
                        Some((one_time, kem)) => self.replenish(&link, one_time, kem).await?,
                        None => return Ok(()),
                    },
                }
            }
        };
        // Nothing is encrypted on this connection before the relay has confirmed that this
        // store is not an older copy (§5.14): the sender's first pass asks.
        self.inner
            .epoch_unreported
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let sender = self.flush_outbox(&link);
        let result = tokio::select! {
            r = reader => r,
            r = upkeep => r,
            r = sender => r,
        };
        link.close().await;
        result
    }
    /// Waits until the connection is up, every envelope the relay held at that point is stored,
    /// and the outbox is empty (or only holds messages for blocked contacts), or `timeout` passes.
    pub async fn sync(&self, timeout: Duration) -> Result<()> {
        tokio::time::timeout(timeout, async {
            let mut state = self.connection_state();
            loop {
                if let Some(e) = self.relay_key_refused() {
                    return Err(e);
                }
                if *state.borrow_and_update() == ConnectionState::Connected
                    && let Some(link) = self.current_link()
                {
                    // The relay answers in order: this Ok comes after every pending delivery,
                    // and the reader stores each delivery and posts its Ack before reading the
                    // next frame. A second barrier then comes back only after the relay has
                    // handled every one of those Acks, so the mailbox really is empty when
                    // sync returns (and a command that exits now leaves nothing behind).
                    if link.call(FrameBody::Ack(Vec::new())).await.is_ok()
                        && link.call(FrameBody::Ack(Vec::new())).await.is_ok()
                    {
                        break;
                    }
                }
                if state.changed().await.is_err() {
                    return Err(ClientError::Connection("the client stopped".into()));
                }
            }
            loop {
                let changed = self.inner.outbox_changed.notified();
                if self.pending_sendable().await? == 0
                    && !self.conversation_work_pending().await?
                    && !self
                        .inner
                        .clinic_pending
                        .load(std::sync::atomic::Ordering::SeqCst)
                {
                    return Ok(());
                }
                let _ = tokio::time::timeout(Duration::from_millis(100), changed).await;
            }
        })
        .await
        .map_err(|_| ClientError::Timeout)?
    }
    /// Waits until the relay connection is up (after [`Client::connect`]).
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let mut state = self.connection_state();
        tokio::time::timeout(timeout, async {
            while *state.borrow_and_update() != ConnectionState::Connected {
                if let Some(e) = self.relay_key_refused() {
                    return Err(e);
                }
                if state.changed().await.is_err() {
                    return Err(ClientError::Connection("the client stopped".into()));
                }
            }
            Ok(())
        })
        .await
        .map_err(|_| ClientError::Timeout)?
    }
}

/// Reads a connection until it ends, only so that answers reach their callers.
pub(super) async fn drain(mut incoming: Incoming) {
    while let Ok(Some(_)) = incoming.next().await {}
}

/// Crash-test hook: if `HUSHWIRE_CLIENT_FAULT` names this point, the process aborts here, as a
/// power cut would stop it. Documented in `docs/client.md` §6; unset in normal use.
pub(super) fn fault_point(name: &str) {
    if std::env::var(FAULT_VAR).is_ok_and(|v| v == name) {
        tracing::error!(point = name, "fault injection: aborting");
        std::process::abort();
    }
}
