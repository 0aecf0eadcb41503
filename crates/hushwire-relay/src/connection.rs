//! One client connection: challenge, authentication, then requests and live delivery.
//!
//! ```text
//! relay ─ Challenge ─▶ client ─ Register|Authenticate ─▶ relay ─ Ok, PreKeyCount, Deliver* ─▶
//! then any order: UploadPreKeys, FetchBundle, Send, Ack  ◀─▶  Ok | Bundle | Sent | Error
//! ```
//!
//! A malformed, oversized, unauthenticated or out-of-order frame gets an `Error` frame and the
//! connection is closed; other connections are unaffected.
//!
//! With a clinic (`--clinic-link`) the connection also enforces roles (`docs/relay-protocol.md`
//! §3.4): certificates at registration, the device's standing at login and whenever the clinic
//! changes it (`Wakers::standing`), and admin-only frames, whose refusal (`Forbidden`) keeps the
//! connection open.

mod conversations;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt as _, StreamExt as _};
use hushwire_proto::codec::Codec;
use hushwire_proto::relay::{
    Challenge, Credentials, Delivery, DeviceAddress, ErrorCode, Frame, FrameBody,
    MAX_PREKEYS_PER_UPLOAD, OutgoingEnvelope,
};
use hushwire_proto::{IdentityKey, KemPreKeyKind, PreKeyBundle};
use sha2::Digest as _;

use hushwire_proto::audit::{AuditEvent, AuthFailure, EnvelopeId};
use hushwire_proto::clinic::{
    AgentCertificate, CertificateError, DeviceList, OrgKey, RevocationList, WipeCommand, WipeError,
};

use crate::audit_log::device_ref;
use crate::storage::{
    ClaimedBundle, Enqueued, PreKeyUpload, Provisioned, Provisioning, Registration,
    RegistrationPolicy, Store,
};
use crate::{CLOSE_REVOKED, CLOSE_SUSPENDED, Relay, Wakers, fill_random, now_ms};

/// How long a challenge may be answered.
const CHALLENGE_LIFETIME_MS: u64 = 60_000;
/// Envelopes fetched from storage per delivery round.
const DELIVERY_BATCH: u32 = 64;
/// Most `Send` and `Ack` frames of one connection waiting for their batch's commit; beyond it
/// the connection reads no further frame until the oldest is answered.
const MAX_ANSWERS_IN_FLIGHT: usize = 64;
/// Most payload bytes (2 MiB) of one connection's unanswered `Send` frames: beyond it the
/// connection reads no further frame until answers free room, so pipelining holds about as
/// much memory per connection as one largest frame did without it (one frame always goes).
const MAX_ANSWER_BYTES: usize = 2 * 1024 * 1024;
/// Most payload bytes one connection holds to write at a time (its outbound queue); always at
/// least one envelope. With the write timeout this bounds what a slow reader costs.
const DELIVERY_BYTES: usize = 1024 * 1024;
/// Below this many one-time prekeys the relay tells the device to upload more.
const LOW_PREKEYS: u32 = 10;
/// Most one-time prekeys of each kind the relay keeps per device.
const MAX_ONE_TIME_PREKEYS: u32 = 1000;
/// Most provisioning messages (device linking) one device may have filed and not yet taken
/// (`docs/relay-protocol.md` §3.5).
const MAX_LIVE_PROVISIONING: u32 = 4;

/// How a registration stands with the identity's other devices (`docs/clinic.md` §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Linking {
    /// The identity's first device, or a device already registered: the usual rules apply.
    Usual,
    /// A further device of an identity that has devices, named by its current device list: it
    /// registers without the invite policy (it is the same person's device).
    Linked,
    /// A further device that the identity's device list does not name (or there is no list).
    Refused,
}

/// Why the connection ends.
enum Close {
    /// Send this error, then close.
    Error(u32, ErrorCode, u32),
    /// The peer went away or the socket failed.
    Gone,
    /// The relay is shutting down: answers of frames already committed are sent, then the
    /// connection closes.
    Shutdown,
    /// A newer connection of the same device took over: close with code 4001.
    Replaced,
    /// A write did not complete within the write timeout: the peer does not read.
    SlowReader,
    /// A message over `MAX_FRAME_LEN`: close with code 1009.
    TooBig,
    /// The clinic refuses the device (suspended, wiped, certificate revoked): send `frame`,
    /// then close with `code` and `reason` (`docs/relay-protocol.md` §1).
    Clinic {
        /// The last frame: an `Error` or, at login, `Wiped`.
        frame: Box<Frame>,
        /// The WebSocket close code.
        code: u16,
        /// The close reason.
        reason: &'static str,
    },
}

/// The clinic refuses the device: `code` answering `request_id` (0 while connected), then the
/// WebSocket close `close` with `reason` (`docs/relay-protocol.md` §1).
fn clinic_refusal(request_id: u32, code: ErrorCode, close: u16, reason: &'static str) -> Close {
    Close::Clinic {
        frame: Box::new(Frame {
            request_id,
            body: FrameBody::Error {
                code,
                retry_after_ms: 0,
            },
        }),
        code: close,
        reason,
    }
}

/// The device is suspended (or ordered wiped, once the order was handed over): `Suspended`,
/// then close 4003.
fn suspended(request_id: u32) -> Close {
    clinic_refusal(
        request_id,
        ErrorCode::Suspended,
        CLOSE_SUSPENDED,
        "suspended by the clinic",
    )
}

/// The device's person removed it from their device list: `Suspended`, then close 4003 with
/// reason `removed from its device list`.
fn removed(request_id: u32) -> Close {
    clinic_refusal(
        request_id,
        ErrorCode::Suspended,
        CLOSE_SUSPENDED,
        "removed from its device list",
    )
}

/// The device's certificate is revoked: `CertificateRefused`, then close 4004.
fn revoked(request_id: u32) -> Close {
    clinic_refusal(
        request_id,
        ErrorCode::CertificateRefused,
        CLOSE_REVOKED,
        "certificate revoked",
    )
}

/// The relay's clock in Unix seconds, as certificates count time.
fn now_secs() -> u64 {
    now_ms() / 1000
}

/// Decodes something the relay stored after checking it; a damaged row is logged and treated
/// as absent rather than served.
fn decode_stored<T: Codec>(bytes: &[u8]) -> Option<T> {
    match T::from_bytes(bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!("a stored {} does not decode: {e}", T::NAME);
            None
        }
    }
}

/// Whether a read failed because the message was over the size limit.
fn too_big(e: axum::Error) -> bool {
    e.into_inner()
        .downcast::<tungstenite::Error>()
        .is_ok_and(|e| matches!(*e, tungstenite::Error::Capacity(_)))
}

fn error(request_id: u32, code: ErrorCode) -> Close {
    Close::Error(request_id, code, 0)
}

struct Connection<S> {
    relay: Arc<Relay<S>>,
    socket: WebSocket,
    peer: SocketAddr,
    challenge: Challenge,
    challenge_used: bool,
    device: Option<(DeviceAddress, IdentityKey)>,
    wakers: Arc<Wakers>,
    /// Position of the last envelope delivered on this connection.
    cursor: i64,
    /// The mailbox was read since login and since the live queue last overflowed: the live
    /// queue holds everything committed since (`live.rs`).
    caught_up: bool,
    /// Answers to `Send` and `Ack` frames whose batch is still committing, in frame order
    /// (at most [`MAX_ANSWERS_IN_FLIGHT`]): the connection reads and delivers meanwhile.
    answers: FuturesOrdered<BoxFuture<'static, Result<Frame, Close>>>,
    /// The payload bytes of each answer in `answers`, in the same order, and their sum: with
    /// [`MAX_ANSWER_BYTES`] they bound what one connection has waiting in storage's queue.
    answer_bytes: VecDeque<usize>,
    answer_bytes_total: usize,
    /// This connection's place among pending connections, given back at authentication.
    pending: Option<Arc<crate::pending::PendingPlace>>,
}

/// Serves one upgraded WebSocket until it closes.
pub(crate) async fn serve<S: Store>(
    relay: Arc<Relay<S>>,
    socket: WebSocket,
    peer: SocketAddr,
    pending: Option<Arc<crate::pending::PendingPlace>>,
) {
    relay.metrics.connections.inc();
    relay.metrics.open_connections.inc();
    let mut nonce = [0u8; 32];
    fill_random(&mut nonce);
    // Signed with the deployment's relay key: the device checks the signature, compares the
    // key with the one it pinned, and binds its answer to it (relay-protocol.md §3).
    let challenge = Challenge::new(nonce, now_ms() + CHALLENGE_LIFETIME_MS, &relay.relay_key);
    let mut conn = Connection {
        relay: relay.clone(),
        socket,
        peer,
        challenge,
        challenge_used: false,
        device: None,
        wakers: Arc::new(Wakers::default()),
        cursor: 0,
        caught_up: false,
        answers: FuturesOrdered::new(),
        answer_bytes: VecDeque::new(),
        answer_bytes_total: 0,
        pending,
    };
    let outcome = conn.run().await;
    if !matches!(outcome, Close::Gone | Close::SlowReader) {
        // Frames taken before the one that ended the connection were handed to storage: their
        // answers (`Sent`, `Ok`) go out first, so a client never resends what is stored.
        conn.finish_answers().await;
    }
    match &outcome {
        Close::Error(_, ErrorCode::Malformed, _) => relay.refused("malformed", conn.peer.ip()),
        Close::Error(_, ErrorCode::Unauthenticated, _) => {
            relay.refused("unauthenticated", conn.peer.ip());
        }
        _ => {}
    }
    let close_frame = match outcome {
        Close::Error(request_id, code, retry_after_ms) => {
            tracing::debug!(peer = %conn.peer, ?code, "closing connection after error");
            let _ = conn
                .send(&Frame {
                    request_id,
                    body: FrameBody::Error {
                        code,
                        retry_after_ms,
                    },
                })
                .await;
            Some(None)
        }
        Close::Gone | Close::Shutdown => Some(None),
        Close::Replaced => {
            tracing::info!(peer = %conn.peer, "connection replaced by a newer one of its device");
            Some(Some(CloseFrame {
                code: crate::CLOSE_CONNECTED_ELSEWHERE,
                reason: "connected elsewhere".into(),
            }))
        }
        Close::TooBig => {
            relay.refused("too_big", conn.peer.ip());
            Some(Some(CloseFrame {
                code: crate::CLOSE_TOO_BIG,
                reason: "message too big".into(),
            }))
        }
        Close::Clinic {
            frame,
            code,
            reason,
        } => {
            tracing::info!(peer = %conn.peer, code, reason, "closing: refused by the clinic");
            let _ = conn.send(&frame).await;
            Some(Some(CloseFrame {
                code,
                reason: reason.into(),
            }))
        }
        Close::SlowReader => {
            relay.refused("slow_reader", conn.peer.ip());
            // Its writes do not drain: a close frame would wait as well. Dropping the socket
            // closes the TCP connection; undelivered envelopes stay in the mailbox.
            None
        }
    };
    if let Some(frame) = close_frame {
        let _ = tokio::time::timeout(
            relay.write_timeout(),
            conn.socket.send(Message::Close(frame)),
        )
        .await;
    }
    if let Some((address, _)) = &conn.device
        && let Ok(mut map) = relay.connected.lock()
        && map
            .get(address)
            .is_some_and(|w| Arc::ptr_eq(w, &conn.wakers))
    {
        map.remove(address);
    }
    relay.metrics.open_connections.dec();
}

impl<S: Store> Connection<S> {
    /// Queues the answer to a `Send` or `Ack` of `bytes` payload bytes, sent in turn once its
    /// batch has committed.
    fn push_answer(&mut self, bytes: usize, answer: BoxFuture<'static, Result<Frame, Close>>) {
        self.answers.push_back(answer);
        self.answer_bytes.push_back(bytes);
        self.answer_bytes_total += bytes;
    }

    /// Sends the oldest answer, now ready.
    async fn answered(&mut self, answer: Result<Frame, Close>) -> Result<(), Close> {
        let bytes = self.answer_bytes.pop_front().unwrap_or(0);
        self.answer_bytes_total = self.answer_bytes_total.saturating_sub(bytes);
        self.send(&answer?).await
    }

    /// Waits for every answer still in flight and sends it (each commit takes milliseconds; the
    /// whole wait is bounded by the write timeout), before the connection closes.
    async fn finish_answers(&mut self) {
        let deadline = Instant::now() + self.relay.write_timeout();
        while let Ok(Some(answer)) =
            tokio::time::timeout_at(deadline.into(), self.answers.next()).await
        {
            if self.answered(answer).await.is_err() {
                return;
            }
        }
    }

    /// Answers request `request_id`.
    async fn reply(&mut self, request_id: u32, body: FrameBody) -> Result<(), Close> {
        self.send(&Frame { request_id, body }).await
    }

    /// Answers request `request_id` with an error that keeps the connection open.
    async fn refuse(
        &mut self,
        request_id: u32,
        code: ErrorCode,
        retry_after_ms: u32,
    ) -> Result<(), Close> {
        self.reply(
            request_id,
            FrameBody::Error {
                code,
                retry_after_ms,
            },
        )
        .await
    }

    async fn send(&mut self, frame: &Frame) -> Result<(), Close> {
        self.relay.metrics.frames_out.inc();
        self.write(Message::Binary(frame.to_bytes().into())).await
    }

    /// Writes and flushes one message, within the write timeout: a peer that does not read
    /// is closed instead of holding the relay's memory and this task for ever.
    async fn write(&mut self, message: Message) -> Result<(), Close> {
        self.write_all([message]).await
    }

    /// Writes `messages` and flushes once (one system call for a delivery round, not one per
    /// envelope), all within the write timeout.
    async fn write_all(
        &mut self,
        messages: impl IntoIterator<Item = Message>,
    ) -> Result<(), Close> {
        let socket = &mut self.socket;
        let written = async move {
            for message in messages {
                socket.feed(message).await?;
            }
            socket.flush().await
        };
        match tokio::time::timeout(self.relay.write_timeout(), written).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Close::Gone),
            Err(_) => Err(Close::SlowReader),
        }
    }

    async fn run(&mut self) -> Close {
        let challenge = Frame {
            request_id: 0,
            body: FrameBody::Challenge(self.challenge),
        };
        if let Err(close) = self.send(&challenge).await {
            return close;
        }
        let idle = Duration::from_secs(self.relay.config.idle_timeout_secs);
        let mut shutdown = self.relay.shutdown.clone();
        let mut last_seen = Instant::now();
        let mut pinged = false;
        // A connection that has not authenticated when its challenge expires is closed, whatever
        // else it sends: otherwise pings alone could hold a connection slot for ever.
        let unauthenticated_until = Instant::now() + Duration::from_millis(CHALLENGE_LIFETIME_MS);
        loop {
            let wakers = self.wakers.clone();
            tokio::select! {
                () = tokio::time::sleep_until(unauthenticated_until.into()), if self.device.is_none() => {
                    return error(0, ErrorCode::ChallengeExpired);
                }
                Some(answer) = self.answers.next(), if !self.answers.is_empty() => {
                    if let Err(close) = self.answered(answer).await {
                        return close;
                    }
                }
                message = self.socket.next(), if self.answers.len() < MAX_ANSWERS_IN_FLIGHT
                    && self.answer_bytes_total < MAX_ANSWER_BYTES => {
                    last_seen = Instant::now();
                    pinged = false;
                    let bytes = match message {
                        Some(Ok(Message::Binary(b))) => b,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Text(_))) => return error(0, ErrorCode::Malformed),
                        Some(Err(e)) => return if too_big(e) { Close::TooBig } else { Close::Gone },
                        Some(Ok(Message::Close(_))) | None => return Close::Gone,
                    };
                    self.relay.metrics.frames_in.inc();
                    // Boxed: the handlers' state lives on the heap only while a frame is
                    // handled, not in every idle connection's task (issue 12: ≤ 20 KiB each).
                    if let Err(close) = Box::pin(self.handle(&bytes)).await {
                        return close;
                    }
                }
                () = wakers.mail.notified(), if self.device.is_some() => {
                    if let Err(close) = Box::pin(self.deliver_pending()).await {
                        return close;
                    }
                }
                () = wakers.replaced.notified(), if self.device.is_some() => {
                    return Close::Replaced;
                }
                () = wakers.standing.notified(), if self.device.is_some() => {
                    if let Err(close) = Box::pin(self.recheck_standing()).await {
                        return close;
                    }
                }
                () = wakers.prekeys_low.notified(), if self.device.is_some() => {
                    if let Err(close) = self.send_prekey_count().await {
                        return close;
                    }
                }
                () = tokio::time::sleep(idle.saturating_sub(last_seen.elapsed())) => {
                    if pinged {
                        return Close::Gone;
                    }
                    pinged = true;
                    last_seen = Instant::now();
                    if let Err(close) = self.write(Message::Ping(Vec::new().into())).await {
                        return close;
                    }
                }
                _ = shutdown.changed() => return Close::Shutdown,
            }
        }
    }

    async fn handle(&mut self, bytes: &[u8]) -> Result<(), Close> {
        let frame = Frame::from_bytes(bytes)
            .map_err(|_| error(Frame::request_id_of(bytes), ErrorCode::Malformed))?;
        let id = frame.request_id;
        let Some((device, identity)) = self.device.clone() else {
            return match frame.body {
                FrameBody::Register {
                    credentials,
                    invite,
                    certificate,
                } => self.register(id, credentials, invite, certificate).await,
                FrameBody::Authenticate(credentials) => self.authenticate(id, credentials).await,
                // A device being linked has no identity at the relay yet (clinic.md §5.1).
                FrameBody::TakeProvisioning(slot) => self.take_provisioning(id, slot).await,
                _ => Err(error(id, ErrorCode::Unauthenticated)),
            };
        };
        if let Err(wait) = self.relay.device_limits.check(&device, Instant::now()) {
            // Rate limiting answers but keeps the connection: the client just slows down.
            self.relay.audit.record(
                now_ms(),
                AuditEvent::RateLimited {
                    device: device_ref(&device),
                },
            );
            self.relay.refused("device_rate", self.peer.ip());
            return self.refuse(id, ErrorCode::RateLimited, wait).await;
        }
        match frame.body {
            FrameBody::UploadPreKeys {
                signed_prekey,
                last_resort_kem_prekey,
                one_time_prekeys,
                one_time_kem_prekeys,
            } => {
                let signatures_ok = signed_prekey
                    .as_ref()
                    .is_none_or(|k| k.verify(&identity, device.device_id).is_ok())
                    && last_resort_kem_prekey.as_ref().is_none_or(|k| {
                        k.kind == KemPreKeyKind::LastResort
                            && k.verify(&identity, device.device_id).is_ok()
                    })
                    && one_time_kem_prekeys.iter().all(|k| {
                        k.kind == KemPreKeyKind::OneTime
                            && k.verify(&identity, device.device_id).is_ok()
                    });
                if !signatures_ok || one_time_prekeys.len() > MAX_PREKEYS_PER_UPLOAD {
                    return Err(error(id, ErrorCode::BadPreKey));
                }
                let uploaded = AuditEvent::PreKeysUploaded {
                    device: device_ref(&device),
                    one_time: one_time_prekeys.len() as u32,
                    kem_one_time: one_time_kem_prekeys.len() as u32,
                };
                let upload = PreKeyUpload {
                    signed_prekey: signed_prekey.map(|k| k.to_bytes()),
                    last_resort_kem_prekey: last_resort_kem_prekey.map(|k| k.to_bytes()),
                    one_time: one_time_prekeys
                        .iter()
                        .map(|k| (k.id, k.to_bytes()))
                        .collect(),
                    kem_one_time: one_time_kem_prekeys
                        .iter()
                        .map(|k| (k.id, k.to_bytes()))
                        .collect(),
                };
                self.relay
                    .store
                    .upload_prekeys(device, upload, MAX_ONE_TIME_PREKEYS)
                    .await
                    .map_err(|e| internal(id, &e))?;
                self.relay.audit.record(now_ms(), uploaded);
                self.reply(id, FrameBody::Ok).await
            }
            FrameBody::FetchBundle(target) => {
                // One requester may not fetch faster than `fetch_rate`; and however many
                // requesters there are, a target hands out at most `target_prekey_rate`
                // one-time keys: beyond that, bundles come without them (the last-resort
                // ML-KEM key stands in), so nobody can drain a device's one-time keys.
                if let Err(wait) = self.relay.fetch_limits.check(&device, Instant::now()) {
                    self.relay.refused("fetch_rate", self.peer.ip());
                    return self.refuse(id, ErrorCode::RateLimited, wait).await;
                }
                // A device its person removed is not handed out: nobody starts a session with it.
                if !self.on_device_lists(id, &[target]).await? {
                    return self.refuse(id, ErrorCode::UnknownDevice, 0).await;
                }
                let one_time = self
                    .relay
                    .target_prekey_limits
                    .check(&target, Instant::now())
                    .is_ok();
                if !one_time {
                    self.relay.refused("target_prekey_rate", self.peer.ip());
                }
                let claimed = self
                    .relay
                    .store
                    .claim_bundle(target, one_time)
                    .await
                    .map_err(|e| internal(id, &e))?;
                let Some(bundle) = claimed.and_then(|c| assemble(target, c)) else {
                    return self
                        .send(&Frame {
                            request_id: id,
                            body: FrameBody::Error {
                                code: ErrorCode::NoPreKeys,
                                retry_after_ms: 0,
                            },
                        })
                        .await;
                };
                self.reply(id, FrameBody::Bundle(bundle)).await?;
                let one_time_left = warn_if_low(&self.relay.clone(), target).await;
                self.relay.audit.record(
                    now_ms(),
                    AuditEvent::BundleFetched {
                        requester: device_ref(&device),
                        target: device_ref(&target),
                        one_time_left,
                    },
                );
                Ok(())
            }
            FrameBody::Send(envelopes) => self.send_envelopes(id, device, envelopes).await,
            FrameBody::Queue(frame) => self.queue_frame(id, device, &identity, *frame).await,
            FrameBody::Ack(ids) => {
                // Answered in turn (see `send_envelopes`): deliveries go on meanwhile.
                let submitted = self
                    .relay
                    .store
                    .submit_ack(device, ids)
                    .await
                    .map_err(|e| internal(id, &e))?;
                let relay = self.relay.clone();
                self.push_answer(
                    0,
                    Box::pin(async move {
                        let deleted = submitted.wait().await.map_err(|e| internal(id, &e))?;
                        // Only what was really this device's and really deleted enters the chain.
                        for server_id in deleted {
                            relay.audit.record(
                                now_ms(),
                                AuditEvent::EnvelopeAcknowledged {
                                    recipient: device_ref(&device),
                                    envelope: EnvelopeId(server_id),
                                },
                            );
                        }
                        Ok(Frame {
                            request_id: id,
                            body: FrameBody::Ok,
                        })
                    }),
                );
                Ok(())
            }
            FrameBody::StoreEpoch(epoch) => {
                let before = self
                    .relay
                    .store
                    .record_store_epoch(device, epoch)
                    .await
                    .map_err(|e| internal(id, &e))?;
                self.reply(id, FrameBody::StoreEpochSeen(before)).await
            }
            FrameBody::FetchCertificate(fingerprint) => {
                let stored = self
                    .relay
                    .store
                    .certificate(fingerprint)
                    .await
                    .map_err(|e| internal(id, &e))?;
                let certificate = stored
                    .and_then(|b| decode_stored::<AgentCertificate>(&b))
                    .map(Box::new);
                self.reply(id, FrameBody::Certificate(certificate)).await
            }
            FrameBody::FetchRevocationList => {
                let list = self.revocations(id).await?;
                self.reply(id, FrameBody::RevocationList(list)).await
            }
            FrameBody::FetchDeviceList(fingerprint) => {
                let stored = self
                    .relay
                    .store
                    .device_list(fingerprint)
                    .await
                    .map_err(|e| internal(id, &e))?;
                let list = stored.and_then(|b| decode_stored(&b));
                self.reply(id, FrameBody::DeviceList(list)).await
            }
            FrameBody::PublishDeviceList(list) => {
                // Only the identity itself signs its list; the relay keeps the newest.
                if list.verify(&identity).is_err() {
                    return self.list_refused(id).await;
                }
                // A device once removed stays out (clinic.md §5): a list adding it again is
                // refused, so a lost phone cannot come back under its old number.
                let fingerprint = list.identity().0;
                let previous = self
                    .relay
                    .store
                    .device_list(fingerprint)
                    .await
                    .map_err(|e| internal(id, &e))?
                    .and_then(|b| DeviceList::from_bytes(&b).ok());
                let added = list
                    .devices()
                    .iter()
                    .filter(|d| !previous.as_ref().is_some_and(|p| p.contains(**d)));
                for &device_id in added {
                    let standing = self
                        .relay
                        .store
                        .standing(DeviceAddress {
                            fingerprint,
                            device_id,
                        })
                        .await
                        .map_err(|e| internal(id, &e))?;
                    if standing.suspended {
                        return self.list_refused(id).await;
                    }
                }
                let stored = self
                    .relay
                    .store
                    .publish_device_list(fingerprint, list.sequence(), list.to_bytes())
                    .await
                    .map_err(|e| internal(id, &e))?;
                if !stored {
                    return self.list_refused(id).await;
                }
                // Sends checked from now on see the new list (`device_lists.rs`).
                self.relay.device_lists.invalidate(&fingerprint);
                // Each device the new list drops is suspended for good, on every instance.
                for &device_id in previous.as_ref().map_or(&[][..], DeviceList::devices) {
                    if !list.contains(device_id) {
                        self.relay
                            .store
                            .suspend(
                                DeviceAddress {
                                    fingerprint,
                                    device_id,
                                },
                                now_ms(),
                            )
                            .await
                            .map_err(|e| internal(id, &e))?;
                    }
                }
                self.relay.audit.record(
                    now_ms(),
                    AuditEvent::DeviceListPublished {
                        identity: list.identity(),
                        sequence: list.sequence(),
                    },
                );
                // Devices no longer on the list close (here; other instances by NOTIFY).
                self.relay.recheck_identity(&list.identity().0);
                self.reply(id, FrameBody::Ok).await
            }
            FrameBody::PutProvisioning { slot, sealed } => {
                self.put_provisioning(id, device, slot, sealed).await
            }
            FrameBody::TakeProvisioning(slot) => self.take_provisioning(id, slot).await,
            FrameBody::UpdateCertificate(certificate) => {
                self.update_certificate(id, device, &identity, *certificate)
                    .await
            }
            FrameBody::PublishRevocationList(list) => {
                let Some((org, _, _)) = self.admin(id, &identity).await? else {
                    return self.forbidden(id).await;
                };
                if !list.verify(&org) {
                    return self.list_refused(id).await;
                }
                let stored = self
                    .relay
                    .store
                    .publish_revocation_list(org.to_bytes(), list.sequence(), list.to_bytes())
                    .await
                    .map_err(|e| internal(id, &e))?;
                if !stored {
                    return self.list_refused(id).await;
                }
                self.relay.audit.record(
                    now_ms(),
                    AuditEvent::RevocationListPublished {
                        sequence: list.sequence(),
                        by: device_ref(&device),
                    },
                );
                tracing::info!(
                    sequence = list.sequence(),
                    revoked = list.serials().len(),
                    "the clinic published a revocation list"
                );
                // Connections of revoked certificates (here; other instances by NOTIFY) close.
                self.relay.recheck_certified();
                // Conversations whose every agent is now revoked wait in the queue again
                // (`conversations.md` §4.3 rule 9, §5.4).
                self.requeue_revoked(id, &list).await?;
                self.reply(id, FrameBody::Ok).await
            }
            FrameBody::SuspendDevice(target) => {
                if self.admin(id, &identity).await?.is_none() {
                    return self.forbidden(id).await;
                }
                self.relay
                    .store
                    .suspend(target, now_ms())
                    .await
                    .map_err(|e| internal(id, &e))?;
                self.relay.audit.record(
                    now_ms(),
                    AuditEvent::DeviceSuspended {
                        device: device_ref(&target),
                        by: device_ref(&device),
                    },
                );
                tracing::info!(device = target.device_id, "the clinic suspended a device");
                self.relay.recheck_standing(&target);
                self.reply(id, FrameBody::Ok).await
            }
            FrameBody::Wipe(command) => self.wipe(id, device, &identity, *command).await,
            FrameBody::Register { .. } | FrameBody::Authenticate(_) => {
                Err(error(id, ErrorCode::OutOfOrder))
            }
            // Frames only the relay sends.
            _ => Err(error(id, ErrorCode::Malformed)),
        }
    }

    /// `Send`'s work (and `ConversationSend`'s once its conversation checks passed): device
    /// lists, rates, quotas, storage, receipts, audit and wake-ups. Answered in turn with the
    /// connection's other answers in flight, so the next frame is taken while this one's batch
    /// commits.
    async fn send_envelopes(
        &mut self,
        id: u32,
        device: DeviceAddress,
        envelopes: Vec<OutgoingEnvelope>,
    ) -> Result<(), Close> {
        let bytes = envelopes.iter().map(|e| e.payload.len()).sum();
        let answer = self.submit_envelopes(id, device, envelopes).await?;
        self.push_answer(
            bytes,
            Box::pin(async move {
                Ok(Frame {
                    request_id: id,
                    body: answer.await?,
                })
            }),
        );
        Ok(())
    }

    /// What `send_envelopes` answers (`Sent` or an error), without answering.
    async fn store_envelopes(
        &mut self,
        id: u32,
        device: DeviceAddress,
        envelopes: Vec<OutgoingEnvelope>,
    ) -> Result<FrameBody, Close> {
        self.submit_envelopes(id, device, envelopes).await?.await
    }

    /// Checks a send (device lists, rates) and hands it to the store; the future answers
    /// (`Sent` or an error) once it is stored, and records its audit events and metrics.
    async fn submit_envelopes(
        &mut self,
        id: u32,
        device: DeviceAddress,
        envelopes: Vec<OutgoingEnvelope>,
    ) -> Result<BoxFuture<'static, Result<FrameBody, Close>>, Close> {
        let refused = |code, retry_after_ms| -> BoxFuture<'static, Result<FrameBody, Close>> {
            Box::pin(std::future::ready(Ok(FrameBody::Error {
                code,
                retry_after_ms,
            })))
        };
        let recipients: Vec<DeviceAddress> = envelopes.iter().map(|e| e.recipient).collect();
        if !self.on_device_lists(id, &recipients).await? {
            return Ok(refused(ErrorCode::UnknownDevice, 0));
        }
        let recipients: Vec<(DeviceAddress, u32)> = envelopes
            .iter()
            .map(|e| (e.recipient, e.payload.len() as u32))
            .collect();
        // The per-(sender, recipient) rate, in envelopes and bytes: one sender cannot
        // flood one mailbox faster than the recipient can plausibly read it.
        for (recipient, adding) in crate::storage::frame_usage(&envelopes) {
            let taken = self.relay.send_limits.take(
                &(device, recipient),
                u32::try_from(adding.envelopes).unwrap_or(u32::MAX),
                u64::try_from(adding.bytes).unwrap_or(u64::MAX),
                Instant::now(),
            );
            if let Err(wait) = taken {
                self.relay.refused("sender_rate", self.peer.ip());
                return Ok(refused(ErrorCode::RateLimited, wait));
            }
        }
        let started = Instant::now();
        let count = envelopes.len() as u64;
        let submitted = self
            .relay
            .store
            .submit_enqueue(device, envelopes, now_ms(), self.relay.mailbox_limits())
            .await
            .map_err(|e| internal(id, &e))?;
        let relay = self.relay.clone();
        let peer = self.peer.ip();
        Ok(Box::pin(async move {
            let outcome = submitted.wait().await.map_err(|e| internal(id, &e))?;
            relay
                .metrics
                .store_latency
                .observe(started.elapsed().as_secs_f64());
            let body = match outcome {
                Enqueued::Stored(receipts) => {
                    relay.metrics.envelopes_stored.inc_by(count);
                    for ((recipient, size), receipt) in recipients.iter().zip(&receipts) {
                        // Recorded at the commit when the store tells of it (`live.rs`).
                        if !relay.commits_audited {
                            relay.audit.record(
                                receipt.server_time_ms,
                                AuditEvent::EnvelopeStored {
                                    sender: device_ref(&device),
                                    recipient: device_ref(recipient),
                                    envelope: EnvelopeId(receipt.server_id),
                                    size: *size,
                                },
                            );
                        }
                        if !relay.live_delivery() {
                            relay.wake(recipient);
                        }
                    }
                    FrameBody::Sent(receipts)
                }
                Enqueued::UnknownRecipient(_) => FrameBody::Error {
                    code: ErrorCode::UnknownDevice,
                    retry_after_ms: 0,
                },
                Enqueued::MailboxFull(_) => {
                    relay.refused("mailbox_full", peer);
                    FrameBody::Error {
                        code: ErrorCode::MailboxFull,
                        retry_after_ms: 0,
                    }
                }
                Enqueued::SenderQuota(_) => {
                    relay.refused("sender_quota", peer);
                    FrameBody::Error {
                        code: ErrorCode::SenderQuota,
                        retry_after_ms: 0,
                    }
                }
            };
            Ok(body)
        }))
    }

    /// Checks the challenge answer; on success the connection belongs to that device.
    fn check_challenge(&mut self, id: u32, credentials: &Credentials) -> Result<(), Close> {
        let failure = if self.challenge_used {
            Some((AuthFailure::ReplayedChallenge, ErrorCode::ChallengeReplayed))
        } else if now_ms() > self.challenge.expires_at_ms {
            Some((AuthFailure::ExpiredChallenge, ErrorCode::ChallengeExpired))
        } else if !credentials.verify(&self.challenge) {
            Some((AuthFailure::BadSignature, ErrorCode::BadSignature))
        } else {
            None
        };
        self.challenge_used = true;
        match failure {
            Some((reason, code)) => Err(self.auth_failed(id, reason, code)),
            None => Ok(()),
        }
    }

    fn auth_failed(&self, id: u32, reason: AuthFailure, code: ErrorCode) -> Close {
        let name = match reason {
            AuthFailure::ReplayedChallenge => "replayed_challenge",
            AuthFailure::ExpiredChallenge => "expired_challenge",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::UnknownDevice => "unknown_device",
            AuthFailure::RegistrationRefused => "registration_refused",
        };
        self.relay.metrics.auth_failed(name);
        tracing::info!(reason = name, peer = %self.peer.ip(), "authentication failed");
        self.relay
            .audit
            .record(now_ms(), AuditEvent::AuthenticationFailed { reason });
        error(id, code)
    }

    async fn register(
        &mut self,
        id: u32,
        credentials: Credentials,
        invite: Option<Vec<u8>>,
        certificate: Option<Box<AgentCertificate>>,
    ) -> Result<(), Close> {
        // Before the challenge is used: a refused attempt may be retried on this connection
        // while its challenge lasts.
        if let Err(wait) = self
            .relay
            .registration_limits
            .check(&self.peer.ip(), Instant::now())
        {
            self.relay.refused("registration_rate", self.peer.ip());
            return self.refuse(id, ErrorCode::RateLimited, wait).await;
        }
        self.check_challenge(id, &credentials)?;
        if let Some(certificate) = certificate {
            return self.register_certified(id, credentials, *certificate).await;
        }
        let linking = self.linking(id, &credentials).await?;
        if linking == Linking::Refused {
            return Err(self.auth_failed(
                id,
                AuthFailure::RegistrationRefused,
                ErrorCode::RegistrationRefused,
            ));
        }
        // A device its person's list names is theirs: no invite (clinic.md §5.1).
        let policy = if linking == Linking::Linked {
            RegistrationPolicy::Open
        } else {
            self.relay.config.registration
        };
        let address = credentials.address();
        let invite_hash = invite.map(|t| <[u8; 32]>::from(sha2::Sha256::digest(&t)));
        let outcome = self
            .relay
            .store
            .register(
                address,
                credentials.identity.to_bytes(),
                invite_hash,
                policy,
                now_ms(),
            )
            .await
            .map_err(|e| internal(id, &e))?;
        if outcome == Registration::Refused {
            return Err(self.auth_failed(
                id,
                AuthFailure::RegistrationRefused,
                ErrorCode::RegistrationRefused,
            ));
        }
        if outcome == Registration::Registered {
            self.relay.metrics.registrations.inc();
            self.relay.audit.record(
                now_ms(),
                AuditEvent::DeviceRegistered {
                    device: device_ref(&address),
                },
            );
        }
        tracing::info!(device = address.device_id, "device registered");
        self.authenticated(id, address, credentials.identity).await
    }

    async fn authenticate(&mut self, id: u32, credentials: Credentials) -> Result<(), Close> {
        self.check_challenge(id, &credentials)?;
        let address = credentials.address();
        let registered = self
            .relay
            .store
            .identity(address)
            .await
            .map_err(|e| internal(id, &e))?;
        if registered.as_deref() != Some(credentials.identity.to_bytes().as_slice()) {
            return Err(self.auth_failed(id, AuthFailure::UnknownDevice, ErrorCode::UnknownDevice));
        }
        self.authenticated(id, address, credentials.identity).await
    }

    async fn authenticated(
        &mut self,
        id: u32,
        address: DeviceAddress,
        identity: IdentityKey,
    ) -> Result<(), Close> {
        self.device = Some((address, identity));
        self.pending = None;
        if let Ok(mut map) = self.relay.connected.lock()
            && let Some(older) = map.insert(address, self.wakers.clone())
        {
            // A newer connection of the same device takes over live delivery; the older one
            // (on this instance) is closed, never left open and silent.
            older.replaced.notify_one();
        }
        // Only now that the connection is in the map: a suspension or revocation committed
        // after this read wakes it (`standing`), one committed before is seen here. A refusal
        // closes the connection, and `serve` takes it out of the map again.
        let serial = self.check_standing(id, address, true).await?;
        if let Ok(mut held) = self.wakers.serial.lock() {
            *held = serial;
        }
        self.relay.audit.record(
            now_ms(),
            AuditEvent::DeviceAuthenticated {
                device: device_ref(&address),
            },
        );
        self.reply(id, FrameBody::Ok).await?;
        self.send_prekey_count().await?;
        self.deliver_pending().await
    }

    /// Registers a device that presents an agent certificate (`docs/relay-protocol.md` §3.4):
    /// the relay must serve a clinic, the certificate must be that clinic's, verify now, not be
    /// revoked, and certify this identity; no invite is needed. Any failure is
    /// `CertificateRefused` and stores nothing.
    async fn register_certified(
        &mut self,
        id: u32,
        credentials: Credentials,
        certificate: AgentCertificate,
    ) -> Result<(), Close> {
        let refuse = |this: &Self, why: &str| {
            tracing::info!(reason = why, "certificate refused at registration");
            Err(this.auth_failed(
                id,
                AuthFailure::RegistrationRefused,
                ErrorCode::CertificateRefused,
            ))
        };
        let Some(org) = self.org() else {
            return refuse(self, "this relay serves no clinic");
        };
        if certificate.subject() != &credentials.identity {
            return refuse(self, &CertificateError::WrongSubject.to_string());
        }
        let revocations = self.revocations(id).await?;
        if let Err(e) = certificate.verify(&org, now_secs(), revocations.as_ref()) {
            return refuse(self, &e.to_string());
        }
        // A further device of the identity needs its person's device list, as any other.
        if self.linking(id, &credentials).await? == Linking::Refused {
            return Err(self.auth_failed(
                id,
                AuthFailure::RegistrationRefused,
                ErrorCode::RegistrationRefused,
            ));
        }
        let address = credentials.address();
        let outcome = self
            .relay
            .store
            .register_certified(
                address,
                credentials.identity.to_bytes(),
                certificate.to_bytes(),
                now_ms(),
            )
            .await
            .map_err(|e| internal(id, &e))?;
        match outcome {
            Registration::Refused => {
                return Err(self.auth_failed(
                    id,
                    AuthFailure::RegistrationRefused,
                    ErrorCode::RegistrationRefused,
                ));
            }
            Registration::PatientIdentity => {
                return refuse(self, "the identity registered as a patient");
            }
            Registration::Registered => {
                self.relay.metrics.registrations.inc();
                self.relay.audit.record(
                    now_ms(),
                    AuditEvent::DeviceRegistered {
                        device: device_ref(&address),
                    },
                );
            }
            Registration::AlreadyRegistered => {}
        }
        self.relay.audit.record(
            now_ms(),
            AuditEvent::CertificateAccepted {
                device: device_ref(&address),
                serial: certificate.serial(),
                roles: certificate.roles().bits(),
            },
        );
        tracing::info!(
            device = address.device_id,
            roles = %certificate.roles(),
            "clinic staff device registered"
        );
        self.authenticated(id, address, credentials.identity).await
    }

    /// `UpdateCertificate`: a renewal. The identity must already hold a certificate (a
    /// patient's never acquires one), and the new one must be the clinic's, for this identity,
    /// and verify now; else `CertificateRefused` (the connection stays open).
    async fn update_certificate(
        &mut self,
        id: u32,
        device: DeviceAddress,
        identity: &IdentityKey,
        certificate: AgentCertificate,
    ) -> Result<(), Close> {
        let revocations = self.revocations(id).await?;
        let valid = self.org().is_some_and(|org| {
            certificate.subject() == identity
                && certificate
                    .verify(&org, now_secs(), revocations.as_ref())
                    .is_ok()
        });
        let replaced = valid
            && self
                .relay
                .store
                .replace_certificate(device.fingerprint, certificate.to_bytes())
                .await
                .map_err(|e| internal(id, &e))?;
        if !replaced {
            self.relay.refused("certificate_refused", self.peer.ip());
            return self.refuse(id, ErrorCode::CertificateRefused, 0).await;
        }
        if let Ok(mut held) = self.wakers.serial.lock() {
            *held = Some(certificate.serial());
        }
        self.relay.audit.record(
            now_ms(),
            AuditEvent::CertificateAccepted {
                device: device_ref(&device),
                serial: certificate.serial(),
                roles: certificate.roles().bits(),
            },
        );
        self.reply(id, FrameBody::Ok).await
    }

    /// `Wipe`: only an admin, and only with an order it signed itself (the issuer's subject is
    /// the requesting identity; else `Forbidden`), that verifies for the clinic now (a
    /// certificate failure is `CertificateRefused`, a bad signature or a time in the future
    /// `Forbidden`). The order is kept for the target, which is suspended and closed.
    async fn wipe(
        &mut self,
        id: u32,
        device: DeviceAddress,
        identity: &IdentityKey,
        command: WipeCommand,
    ) -> Result<(), Close> {
        let Some((org, _, revocations)) = self.admin(id, identity).await? else {
            return self.forbidden(id).await;
        };
        if command.issuer().subject() != identity {
            return self.forbidden(id).await;
        }
        match command.verify(&org, now_secs(), revocations.as_ref()) {
            Ok(()) => {}
            Err(WipeError::Certificate(_)) => {
                self.relay.refused("certificate_refused", self.peer.ip());
                return self.refuse(id, ErrorCode::CertificateRefused, 0).await;
            }
            Err(_) => return self.forbidden(id).await,
        }
        let target = command.target();
        // Only the clinic's own staff devices can be wiped (clinic.md §6): a registered device
        // whose identity holds a certificate of this clinic, and not the ordering device itself
        // (which would lock the clinic out of an admin device by mistake). A patient's device is
        // the patient's; the clinic may suspend it at the relay, never erase it.
        if target == device {
            return self.forbidden(id).await;
        }
        if self
            .relay
            .store
            .identity(target)
            .await
            .map_err(|e| internal(id, &e))?
            .is_none()
        {
            self.relay.refused("unknown_device", self.peer.ip());
            return self.refuse(id, ErrorCode::UnknownDevice, 0).await;
        }
        let staff = self
            .relay
            .store
            .standing(target)
            .await
            .map_err(|e| internal(id, &e))?
            .certificate
            .and_then(|b| decode_stored::<AgentCertificate>(&b))
            .is_some_and(|c| c.org() == &org);
        if !staff {
            return self.forbidden(id).await;
        }
        self.relay
            .store
            .order_wipe(target, command.to_bytes(), now_ms())
            .await
            .map_err(|e| internal(id, &e))?;
        self.relay.audit.record(
            now_ms(),
            AuditEvent::WipeOrdered {
                device: device_ref(&target),
                by: device_ref(&device),
            },
        );
        tracing::info!(
            device = target.device_id,
            "the clinic ordered a device wiped"
        );
        self.relay.recheck_standing(&target);
        self.reply(id, FrameBody::Ok).await
    }

    /// Where a registration of `credentials` stands with the identity's other devices
    /// (`docs/clinic.md` §5.1): an identity's first device, or a device already registered,
    /// follows the usual rules; a further device must be named by the identity's stored device
    /// list, which must decode and verify under the identity. (A list published between this
    /// check and the registration's commit is caught at login, [`Self::check_standing`].)
    async fn linking(&mut self, id: u32, credentials: &Credentials) -> Result<Linking, Close> {
        let address = credentials.address();
        let store = &self.relay.store;
        let known = store
            .identity(address)
            .await
            .map_err(|e| internal(id, &e))?;
        if known.is_some() {
            return Ok(Linking::Usual);
        }
        let devices = store
            .identity_devices(address.fingerprint)
            .await
            .map_err(|e| internal(id, &e))?;
        if devices == 0 {
            return Ok(Linking::Usual);
        }
        let list = store
            .device_list(address.fingerprint)
            .await
            .map_err(|e| internal(id, &e))?
            .and_then(|b| decode_stored::<DeviceList>(&b));
        let named = list.is_some_and(|l| {
            l.verify(&credentials.identity).is_ok() && l.contains(address.device_id)
        });
        if named {
            Ok(Linking::Linked)
        } else {
            tracing::info!(
                device = address.device_id,
                "a further device of an identity is not on its device list"
            );
            Ok(Linking::Refused)
        }
    }

    /// Whether every one of `devices` (a `Send`'s recipients, a `FetchBundle`'s target) is on
    /// its identity's device list, for the identities that published one (others are not
    /// concerned): one indexed lookup per distinct identity. The stored lists were verified
    /// when published.
    async fn on_device_lists(&mut self, id: u32, devices: &[DeviceAddress]) -> Result<bool, Close> {
        let mut identities: Vec<[u8; 32]> = Vec::new();
        for d in devices {
            if !identities.contains(&d.fingerprint) {
                identities.push(d.fingerprint);
            }
        }
        for identity in identities {
            let list = match self.relay.device_lists.get(&identity) {
                (Some(cached), _) => cached,
                (None, generation) => {
                    let read = self
                        .relay
                        .store
                        .device_list(identity)
                        .await
                        .map_err(|e| internal(id, &e))?
                        .and_then(|b| decode_stored::<DeviceList>(&b))
                        .map(Arc::new);
                    self.relay
                        .device_lists
                        .fill(identity, read.clone(), generation);
                    read
                }
            };
            let Some(list) = list else {
                continue;
            };
            let removed = devices
                .iter()
                .any(|d| d.fingerprint == identity && !list.contains(d.device_id));
            if removed {
                self.relay.refused("removed_device", self.peer.ip());
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `PutProvisioning` (`docs/relay-protocol.md` §3.5): files the sealed message under
    /// `slot` for the relay's provisioning lifetime. A slot already filed is `Forbidden`; a
    /// device with [`MAX_LIVE_PROVISIONING`] messages filed is `RateLimited` (retry once one
    /// is taken or expires). The connection stays open either way. Neither the slot nor the
    /// bytes are logged.
    async fn put_provisioning(
        &mut self,
        id: u32,
        device: DeviceAddress,
        slot: [u8; 32],
        sealed: Vec<u8>,
    ) -> Result<(), Close> {
        let ttl_ms = self.relay.config.provisioning_ttl_secs.saturating_mul(1000);
        let now = now_ms();
        let outcome = self
            .relay
            .store
            .put_provisioning(
                Provisioning {
                    slot,
                    sealed,
                    owner: device,
                    expires_at_ms: now.saturating_add(ttl_ms),
                },
                now,
                MAX_LIVE_PROVISIONING,
            )
            .await
            .map_err(|e| internal(id, &e))?;
        match outcome {
            Provisioned::Stored => {
                self.relay.metrics.provisioning_puts.inc();
                self.reply(id, FrameBody::Ok).await
            }
            Provisioned::SlotTaken => self.forbidden(id).await,
            Provisioned::TooMany => {
                self.relay.refused("provisioning_slots", self.peer.ip());
                let wait = u32::try_from(ttl_ms).unwrap_or(u32::MAX);
                self.refuse(id, ErrorCode::RateLimited, wait).await
            }
        }
    }

    /// `TakeProvisioning` (before or after authentication): at most `--provisioning-rate` per
    /// minute per IP address (`RateLimited`, the connection stays open); hands the message
    /// filed under `slot` out once, if it has not expired, else `Provisioning(None)`.
    async fn take_provisioning(&mut self, id: u32, slot: [u8; 32]) -> Result<(), Close> {
        if let Err(wait) = self
            .relay
            .provisioning_limits
            .check(&self.peer.ip(), Instant::now())
        {
            self.relay.refused("provisioning_rate", self.peer.ip());
            return self.refuse(id, ErrorCode::RateLimited, wait).await;
        }
        let sealed = self
            .relay
            .store
            .take_provisioning(slot, now_ms())
            .await
            .map_err(|e| internal(id, &e))?;
        if sealed.is_some() {
            self.relay.metrics.provisioning_takes.inc();
        }
        self.reply(id, FrameBody::Provisioning(sealed)).await
    }

    /// The clinic's organization key, if the relay serves a clinic.
    fn org(&self) -> Option<OrgKey> {
        self.relay.clinic.as_ref().map(|c| *c.org())
    }

    /// The clinic's current revocation list, if the relay serves a clinic and holds one that
    /// verifies.
    async fn revocations(&mut self, id: u32) -> Result<Option<RevocationList>, Close> {
        let Some(org) = self.org() else {
            return Ok(None);
        };
        let stored = self
            .relay
            .store
            .revocation_list(org.to_bytes())
            .await
            .map_err(|e| internal(id, &e))?;
        Ok(stored
            .and_then(|b| decode_stored::<RevocationList>(&b))
            .filter(|list| list.verify(&org)))
    }

    /// The clinic's key, the identity's certificate and the current revocation list, if the
    /// certificate verifies now (not expired, not revoked) and grants `admin`; `None` if not
    /// (or if the relay serves no clinic): the request is `Forbidden`.
    async fn admin(
        &mut self,
        id: u32,
        identity: &IdentityKey,
    ) -> Result<Option<(OrgKey, AgentCertificate, Option<RevocationList>)>, Close> {
        self.certified(id, identity, hushwire_proto::clinic::Role::Admin)
            .await
    }

    /// The clinic's key, the identity's certificate and the current revocation list, if the
    /// identity's stored certificate names it, verifies now (not expired, not revoked) and grants
    /// `role`; `None` if not, or if the relay serves no clinic.
    async fn certified(
        &mut self,
        id: u32,
        identity: &IdentityKey,
        role: hushwire_proto::clinic::Role,
    ) -> Result<Option<(OrgKey, AgentCertificate, Option<RevocationList>)>, Close> {
        let Some(org) = self.org() else {
            return Ok(None);
        };
        let Some(certificate) = self
            .relay
            .store
            .certificate(identity.fingerprint().0)
            .await
            .map_err(|e| internal(id, &e))?
            .and_then(|b| decode_stored::<AgentCertificate>(&b))
        else {
            return Ok(None);
        };
        let revocations = self.revocations(id).await?;
        let granted = certificate.subject() == identity
            && certificate
                .verify_role(&org, now_secs(), revocations.as_ref(), role)
                .is_ok();
        Ok(granted.then_some((org, certificate, revocations)))
    }

    /// Answers `Forbidden`; the connection stays open.
    async fn forbidden(&mut self, id: u32) -> Result<(), Close> {
        self.relay.refused("forbidden", self.peer.ip());
        self.refuse(id, ErrorCode::Forbidden, 0).await
    }

    /// Answers `ListRefused` (a signed list that does not verify, or is not newer than the
    /// stored one); the connection stays open.
    async fn list_refused(&mut self, id: u32) -> Result<(), Close> {
        self.relay.refused("list_refused", self.peer.ip());
        self.refuse(id, ErrorCode::ListRefused, 0).await
    }

    /// The device's standing with the clinic (`docs/relay-protocol.md` §3.4): `Err` closes the
    /// connection. At login (`at_login`) a pending wipe order is handed over as `Wiped`
    /// answering `id`; while connected (`id` 0) a suspended or wiped device gets `Suspended`.
    /// A revoked certificate gets `CertificateRefused`; an expired one is no refusal (the
    /// device holds no role until it renews). Returns the serial of the identity's
    /// certificate, if any.
    async fn check_standing(
        &mut self,
        id: u32,
        address: DeviceAddress,
        at_login: bool,
    ) -> Result<Option<u64>, Close> {
        let standing = self
            .relay
            .store
            .standing(address)
            .await
            .map_err(|e| internal(id, &e))?;
        if let Some(bytes) = standing.wipe {
            self.relay.refused("wiped", self.peer.ip());
            if at_login && let Some(command) = decode_stored::<WipeCommand>(&bytes) {
                return Err(Close::Clinic {
                    frame: Box::new(Frame {
                        request_id: id,
                        body: FrameBody::Wiped(Box::new(command)),
                    }),
                    code: CLOSE_SUSPENDED,
                    reason: "suspended by the clinic",
                });
            }
            return Err(suspended(id));
        }
        // Said first: a removed device is also suspended for good (so that it never comes
        // back), but its person removed it, and the reason says so.
        // A list of the identity's that verifies and no longer names the device: its person
        // removed it (clinic.md §5). Identities without a list are not concerned.
        if let Some((_, identity)) = &self.device
            && let Some(list) = standing
                .device_list
                .and_then(|b| decode_stored::<DeviceList>(&b))
            && list.verify(identity).is_ok()
            && !list.contains(address.device_id)
        {
            self.relay.refused("removed_device", self.peer.ip());
            return Err(removed(id));
        }
        if standing.suspended {
            self.relay.refused("suspended", self.peer.ip());
            return Err(suspended(id));
        }
        let Some(certificate) = standing
            .certificate
            .and_then(|b| decode_stored::<AgentCertificate>(&b))
        else {
            return Ok(None);
        };
        if let Some(org) = self.org() {
            let revocations = self.revocations(id).await?;
            if let Err(CertificateError::Revoked { .. }) =
                certificate.verify(&org, now_secs(), revocations.as_ref())
            {
                self.relay.refused("certificate_revoked", self.peer.ip());
                return Err(revoked(id));
            }
        }
        Ok(Some(certificate.serial()))
    }

    /// The clinic changed something about this device (or revoked certificates): check again,
    /// closing the connection if it is refused now.
    async fn recheck_standing(&mut self) -> Result<(), Close> {
        let Some((address, _)) = self.device else {
            return Ok(());
        };
        let serial = self.check_standing(0, address, false).await?;
        if let Ok(mut held) = self.wakers.serial.lock() {
            *held = serial;
        }
        Ok(())
    }

    async fn send_prekey_count(&mut self) -> Result<(), Close> {
        let Some((device, _)) = self.device else {
            return Ok(());
        };
        let (one_time, kem_one_time) = self
            .relay
            .store
            .prekey_counts(device)
            .await
            .map_err(|e| internal(0, &e))?;
        self.send(&Frame {
            request_id: 0,
            body: FrameBody::PreKeyCount {
                one_time,
                kem_one_time,
            },
        })
        .await
    }

    /// Sends every stored envelope not yet sent on this connection, and any conversation
    /// pushes waiting for it. With live delivery (`live.rs`) the envelopes come from the
    /// connection's live queue, and the mailbox is read only at login and after the queue
    /// overflowed; otherwise it is read on every wake-up.
    async fn deliver_pending(&mut self) -> Result<(), Close> {
        let Some((device, _)) = self.device else {
            return Ok(());
        };
        // Conversation pushes first (MembershipChanged, QueueChanged), already encoded frames.
        if self.wakers.pushes.swap(false, Ordering::SeqCst) {
            self.deliver_pushes(device).await?;
        }
        // Taken before the mailbox is read: whatever the queue dropped was committed before
        // its overflow flag was set, so before this take, so the read below returns it.
        let (live, overflowed) = if self.relay.live_delivery() {
            self.wakers
                .live
                .lock()
                .map_or_else(|_| (VecDeque::new(), true), |mut q| q.take())
        } else {
            (VecDeque::new(), true)
        };
        if overflowed && self.relay.live_delivery() {
            self.relay.metrics.live_overflows.inc();
        }
        if overflowed || !self.caught_up {
            self.read_mailbox(device).await?;
            self.caught_up = self.relay.live_delivery();
        }
        let mut fresh: Vec<(i64, Delivery)> = Vec::with_capacity(live.len());
        for (position, delivery) in live {
            let last = fresh.last().map_or(self.cursor, |(p, _)| *p);
            if position <= last {
                continue; // a read sent it already
            }
            if self.relay.consecutive_positions && position != last + 1 {
                // One was missed (a notification lost while the listener reconnected): what
                // came before it, then the mailbox from there, which holds this one (it was
                // committed before its notification was sent).
                self.deliver(device, std::mem::take(&mut fresh)).await?;
                self.read_mailbox(device).await?;
                continue;
            }
            fresh.push((position, delivery));
        }
        self.deliver(device, fresh).await
    }

    /// Sends the conversation pushes waiting in storage, oldest first.
    async fn deliver_pushes(&mut self, device: DeviceAddress) -> Result<(), Close> {
        loop {
            let pushes = self
                .relay
                .store
                .take_pushes(device, DELIVERY_BATCH)
                .await
                .map_err(|e| internal(0, &e))?;
            let full = pushes.len() == DELIVERY_BATCH as usize;
            self.relay.metrics.frames_out.inc_by(pushes.len() as u64);
            self.write_all(pushes.into_iter().map(|f| Message::Binary(f.into())))
                .await?;
            if !full {
                return Ok(());
            }
        }
    }

    /// Reads the mailbox after this connection's cursor and sends all of it, a bounded batch
    /// at a time.
    async fn read_mailbox(&mut self, device: DeviceAddress) -> Result<(), Close> {
        loop {
            let mut batch = self
                .relay
                .store
                .pending(device, self.cursor, DELIVERY_BATCH)
                .await
                .map_err(|e| internal(0, &e))?;
            let mut full = batch.len() == DELIVERY_BATCH as usize;
            // Bound what this connection holds while it writes: the rest is fetched again.
            let mut bytes = 0;
            let keep = batch
                .iter()
                .take_while(|(_, d)| {
                    let fits = bytes == 0 || bytes + d.payload.len() <= DELIVERY_BYTES;
                    bytes += d.payload.len();
                    fits
                })
                .count();
            if keep < batch.len() {
                batch.truncate(keep);
                full = true;
            }
            self.deliver(device, batch).await?;
            if !full {
                return Ok(());
            }
        }
    }

    /// Sends `batch` (in position order) as `Deliver` frames, flushed once, and moves the
    /// cursor past it.
    async fn deliver(
        &mut self,
        device: DeviceAddress,
        batch: impl IntoIterator<Item = (i64, Delivery)>,
    ) -> Result<(), Close> {
        let now = now_ms();
        let mut frames = Vec::new();
        for (position, delivery) in batch {
            self.cursor = position;
            self.relay.audit.record(
                now,
                AuditEvent::EnvelopeDelivered {
                    recipient: device_ref(&device),
                    envelope: EnvelopeId(delivery.server_id),
                },
            );
            let frame = Frame {
                request_id: 0,
                body: FrameBody::Deliver(delivery),
            };
            frames.push(Message::Binary(frame.to_bytes().into()));
        }
        let count = frames.len() as u64;
        self.relay.metrics.frames_out.inc_by(count);
        self.write_all(frames).await?;
        self.relay.metrics.envelopes_delivered.inc_by(count);
        Ok(())
    }
}

/// Tells a connected device (on this instance) that its one-time prekeys run low; returns how
/// many X25519 one-time prekeys it has left.
async fn warn_if_low<S: Store>(relay: &Relay<S>, target: DeviceAddress) -> u32 {
    let Ok((one_time, kem)) = relay.store.prekey_counts(target).await else {
        return 0;
    };
    if one_time < LOW_PREKEYS || kem < LOW_PREKEYS {
        relay.wake_prekeys_low(&target);
    }
    one_time
}

/// Rebuilds a bundle from stored parts. Stored parts were checked on upload; a part that no
/// longer decodes (a damaged database) yields no bundle rather than a wrong one.
fn assemble(target: DeviceAddress, c: ClaimedBundle) -> Option<PreKeyBundle> {
    let identity = IdentityKey::from_bytes(&c.identity).ok()?;
    Some(PreKeyBundle {
        device_id: target.device_id,
        identity,
        signed_prekey: hushwire_proto::SignedPreKey::from_bytes(&c.signed_prekey).ok()?,
        one_time_prekey: match c.one_time {
            Some(b) => Some(hushwire_proto::OneTimePreKey::from_bytes(&b).ok()?),
            None => None,
        },
        kem_prekey: hushwire_proto::KemPreKey::from_bytes(&c.kem).ok()?,
    })
}

fn internal(request_id: u32, e: &crate::storage::StoreError) -> Close {
    tracing::error!("storage failed: {e}");
    error(request_id, ErrorCode::Internal)
}
