//! # hushwire-relay
//!
//! The store-and-forward relay: devices authenticate by signing a fresh challenge with their
//! identity key, publish prekeys, fetch each other's bundles, and exchange envelopes that the
//! relay keeps durably until the recipient acknowledges them. It depends on `hushwire-proto`
//! only: the relay cannot decrypt what it carries. Protocol: `docs/relay-protocol.md`.

#![forbid(unsafe_code)]

pub mod audit_log;
pub mod config;
mod connection;
pub mod device_lists;
mod live;
pub mod membership_cache;
pub mod metrics;
pub mod pending;
pub mod rate_limit;
pub mod relay_key;
pub mod server;
pub mod storage;
pub mod tls;
mod web;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ed25519_dalek::SigningKey;
use hushwire_proto::clinic::ClinicLink;
use hushwire_proto::relay::DeviceAddress;
use tokio::sync::{Semaphore, watch};

use crate::config::Config;
use crate::live::Connected;
pub(crate) use crate::live::Wakers;
use crate::metrics::Metrics;
use crate::rate_limit::{PairLimiter, RateLimiter};
use crate::storage::Store;

/// 16 random bytes from the operating system (server ids, nonces).
pub(crate) fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    fill_random(&mut id);
    id
}

/// Fills `buf` from the operating system's generator. If the OS cannot supply randomness the
/// relay must not continue (ids and challenges would repeat): this is the one deliberate abort.
pub(crate) fn fill_random(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        tracing::error!("operating system RNG failed: {e}; aborting");
        std::process::abort();
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// WebSocket close code of a connection that another connection of the same device replaced
/// (`docs/relay-protocol.md` §1): only the newest connection receives live deliveries, so the
/// older one is closed rather than left open and silent.
pub const CLOSE_CONNECTED_ELSEWHERE: u16 = 4001;
/// WebSocket close code of a message over `MAX_FRAME_LEN` (RFC 6455 "message too big";
/// `docs/relay-protocol.md` §1).
pub const CLOSE_TOO_BIG: u16 = 1009;
/// WebSocket close code of a connection whose device the clinic's administrator suspended or
/// ordered wiped (reason `suspended by the clinic`; `docs/relay-protocol.md` §1).
pub const CLOSE_SUSPENDED: u16 = 4003;
/// WebSocket close code of a connection whose device's agent certificate the clinic revoked
/// (reason `certificate revoked`; `docs/relay-protocol.md` §1).
pub const CLOSE_REVOKED: u16 = 4004;
/// PostgreSQL `NOTIFY` channel on which one instance tells the others that the clinic changed
/// a device's standing: payload `hex(fingerprint):device_id` (suspended or ordered wiped),
/// `revoked` (a new revocation list was stored) or `list:hex(fingerprint)` (the identity
/// published a new device list: its devices no longer on it are closed).
pub const STANDING_CHANNEL: &str = "hushwire_standing";

/// Shared state of one relay instance.
pub struct Relay<S> {
    pub(crate) store: S,
    pub(crate) config: Config,
    /// The deployment's relay identity key: signs every challenge; logins are bound to its
    /// public half (`relay_key.rs`).
    pub(crate) relay_key: SigningKey,
    pub(crate) metrics: Metrics,
    /// Verified conversation memberships at their stored heads (`docs/relay-protocol.md` §3.6).
    pub(crate) memberships: membership_cache::MembershipCache,
    /// Published device lists, for the send path's check (`device_lists.rs`).
    pub(crate) device_lists: device_lists::DeviceListCache,
    pub(crate) device_limits: RateLimiter<DeviceAddress>,
    pub(crate) address_limits: RateLimiter<IpAddr>,
    /// Envelopes and bytes per (sender, recipient).
    pub(crate) send_limits: PairLimiter<(DeviceAddress, DeviceAddress)>,
    /// Bundle fetches per requesting device.
    pub(crate) fetch_limits: RateLimiter<DeviceAddress>,
    /// One-time prekeys handed out per target device.
    pub(crate) target_prekey_limits: RateLimiter<DeviceAddress>,
    /// Registration attempts per IP address.
    pub(crate) registration_limits: RateLimiter<IpAddr>,
    /// Provisioning takes per IP address (allowed before login).
    pub(crate) provisioning_limits: RateLimiter<IpAddr>,
    /// `PutArchive` per filing device: the archive has no quota, so its growth is bounded by
    /// this rate (`docs/relay-protocol.md` §3.6).
    pub(crate) archive_limits: RateLimiter<hushwire_proto::relay::DeviceAddress>,
    /// Devices connected to this instance, woken when mail arrives for them.
    pub(crate) connected: Arc<Connected>,
    /// Mailbox positions are consecutive: a live envelope that is not the next one after the
    /// last delivered makes the connection read its mailbox (PostgreSQL).
    pub(crate) consecutive_positions: bool,
    /// The store tells of every commit (SQLite): each stored envelope's audit record is
    /// written there, before any delivery of it, not by the sender's connection.
    pub(crate) commits_audited: bool,
    pub(crate) connection_slots: Arc<Semaphore>,
    /// Connections accepted but not yet authenticated.
    pub(crate) pending: Arc<pending::PendingConnections>,
    pub(crate) audit: Arc<audit_log::AuditLog>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The clinic this relay serves (`--clinic-link`), if any: its organization key checks
    /// agent certificates, revocation lists and wipe orders.
    pub(crate) clinic: Option<ClinicLink>,
    /// Web origins allowed to open a WebSocket (`--allow-origin`), serialized.
    pub(crate) allowed_origins: Vec<String>,
}

impl<S: Store> Relay<S> {
    /// Builds the shared state.
    pub fn new(
        store: S,
        config: Config,
        relay_key: SigningKey,
        audit: audit_log::AuditLog,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        // `Config::check` (run by `server::start`) refuses a link that does not parse.
        let clinic = config.clinic().ok().flatten();
        // Likewise a malformed origin (refused, it would never match anyway).
        let allowed_origins = config.allowed_origins().unwrap_or_default();
        let connected = Arc::new(Connected::default());
        let audit = Arc::new(audit);
        let consecutive_positions = store.mailbox_positions_consecutive();
        let commits_audited = store.listen_for_commits(Arc::new(live::CommitSink {
            connected: connected.clone(),
            audit: audit.clone(),
        }));
        Arc::new(Self {
            clinic,
            allowed_origins,
            audit,
            relay_key,
            device_limits: RateLimiter::new(config.device_rate),
            address_limits: RateLimiter::new(config.address_rate),
            send_limits: PairLimiter::new(config.sender_rate, config.sender_byte_rate),
            fetch_limits: RateLimiter::per_minute(config.fetch_rate),
            target_prekey_limits: RateLimiter::per_minute(config.target_prekey_rate),
            registration_limits: RateLimiter::per_minute(config.registration_rate),
            provisioning_limits: RateLimiter::per_minute(config.provisioning_rate),
            archive_limits: RateLimiter::per_minute(ARCHIVE_PER_MINUTE),
            connection_slots: Arc::new(Semaphore::new(config.max_connections)),
            pending: pending::PendingConnections::new(
                config.max_pending_per_address,
                config.max_pending,
            ),
            metrics: Metrics::new(),
            memberships: membership_cache::MembershipCache::default(),
            device_lists: device_lists::DeviceListCache::default(),
            connected,
            consecutive_positions,
            commits_audited,
            store,
            config,
            shutdown,
        })
    }

    /// Whether envelopes reach [`Relay::connected`] right after their commit (`live.rs`): from
    /// the SQLite writer, or in PostgreSQL's mailbox notifications. A connection then reads its
    /// mailbox only at login, after its live queue overflowed, and when told to.
    pub(crate) fn live_delivery(&self) -> bool {
        self.commits_audited || self.consecutive_positions
    }

    /// How long one write to a connection may take before its peer counts as not reading.
    pub(crate) fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.config.write_timeout_secs)
    }

    /// The limits of one device's mailbox, from the configuration.
    pub(crate) fn mailbox_limits(&self) -> storage::MailboxLimits {
        storage::MailboxLimits {
            envelopes: self.config.mailbox_quota,
            bytes: self.config.mailbox_bytes,
            sender_envelopes: self.config.sender_quota,
            sender_bytes: self.config.sender_quota_bytes,
        }
    }

    /// Counts a refusal under `reason` (a fixed name: `docs/relay-protocol.md` §6) and logs it
    /// at INFO with the peer's address: metadata only, never a key or a payload.
    /// Deletes archive envelopes older than the clinic's archive policy's retention, counted
    /// from each conversation's last activity (`docs/conversations.md` §7.4).
    async fn expire_archive(&self) {
        let Some(org) = self.clinic.as_ref().map(|c| *c.org()) else {
            return;
        };
        let policy = match self.store.archive_policy(org.to_bytes()).await {
            Ok(Some(bytes)) => {
                <hushwire_proto::conversation::ArchivePolicy as hushwire_proto::codec::Codec>::from_bytes(&bytes)
                    .ok()
                    .filter(|p| p.verify(&org))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("archive expiry: cannot read the policy: {e}");
                None
            }
        };
        let Some(policy) = policy else {
            return;
        };
        let keep_ms = u64::from(policy.retention_days()).saturating_mul(86_400_000);
        match self
            .store
            .expire_archive(now_ms().saturating_sub(keep_ms))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "expired archive envelopes past retention"),
            Err(e) => tracing::warn!("archive expiry sweep failed: {e}"),
        }
    }

    pub(crate) fn refused(&self, reason: &'static str, peer: IpAddr) {
        self.metrics.refused(reason);
        tracing::info!(reason, %peer, "refused");
    }

    /// Wakes the connection of `device` on this instance, if any, to read its mailbox and
    /// deliver what it has not sent yet.
    pub fn wake(&self, device: &DeviceAddress) {
        if let Ok(map) = self.connected.lock()
            && let Some(w) = map.get(device)
        {
            w.read_mailbox();
        }
    }

    /// Wakes the connection of `device` on this instance, if any, to deliver conversation
    /// pushes just stored for it (and any new envelopes).
    pub(crate) fn wake_pushes(&self, device: &DeviceAddress) {
        if let Ok(map) = self.connected.lock()
            && let Some(w) = map.get(device)
        {
            w.pushes.store(true, std::sync::atomic::Ordering::SeqCst);
            w.mail.notify_one();
        }
    }

    /// Tells the connection of `device` on this instance, if any, that the clinic changed its
    /// standing (suspended, ordered wiped): it checks again and closes.
    pub(crate) fn recheck_standing(&self, device: &DeviceAddress) {
        if let Ok(map) = self.connected.lock()
            && let Some(w) = map.get(device)
        {
            w.standing.notify_one();
        }
    }

    /// Tells every connection on this instance of a device of `identity` (a fingerprint) that
    /// the identity published a new device list: each checks again whether it is still on it.
    pub(crate) fn recheck_identity(&self, identity: &[u8; 32]) {
        self.device_lists.invalidate(identity);
        if let Ok(map) = self.connected.lock() {
            for (address, w) in map.iter() {
                if address.fingerprint == *identity {
                    w.standing.notify_one();
                }
            }
        }
    }

    /// Tells every connection on this instance whose device holds a certificate that a new
    /// revocation list was stored: each checks again whether its certificate is revoked.
    pub(crate) fn recheck_certified(&self) {
        if let Ok(map) = self.connected.lock() {
            for w in map.values() {
                if w.serial.lock().is_ok_and(|s| s.is_some()) {
                    w.standing.notify_one();
                }
            }
        }
    }

    /// Tells the connection of `device` on this instance, if any, to report its prekey count.
    pub(crate) fn wake_prekeys_low(&self, device: &DeviceAddress) {
        if let Ok(map) = self.connected.lock()
            && let Some(w) = map.get(device)
        {
            w.prekeys_low.notify_one();
        }
    }

    /// The HTTP routes: `/v1/websocket`, `/healthz`, and `/metrics` unless metrics have an
    /// address of their own (`--metrics-listen`).
    pub fn router(self: &Arc<Self>) -> Router {
        let router = Router::new()
            .route("/v1/websocket", get(websocket::<S>))
            .route("/healthz", get(|| async { "ok\n" }));
        let router = if self.config.metrics_listen.is_none() {
            router.route("/metrics", get(metrics::<S>))
        } else {
            router
        };
        let router = match &self.config.web_dir {
            Some(dir) => {
                let files = web::WebFiles::new(dir.clone(), &self.allowed_origins);
                router.fallback(
                    move |method: axum::http::Method,
                          uri: axum::http::Uri,
                          headers: axum::http::HeaderMap| {
                        let files = files.clone();
                        async move { files.serve(method, uri, &headers).await }
                    },
                )
            }
            None => router,
        };
        router.with_state(self.clone())
    }

    /// The routes of the separate metrics address: `/metrics` and `/healthz`.
    pub fn metrics_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/metrics", get(metrics::<S>))
            .route("/healthz", get(|| async { "ok\n" }))
            .with_state(self.clone())
    }

    /// Deletes envelopes past retention every `expiry_interval_secs`, until shutdown.
    pub async fn run_expiry(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        let retention_ms = self.config.retention_days.saturating_mul(86_400_000);
        loop {
            match self
                .store
                .expire(now_ms().saturating_sub(retention_ms))
                .await
            {
                Ok(expired) => {
                    let total: u64 = expired.iter().map(|(_, n)| n).sum();
                    if total > 0 {
                        tracing::info!(
                            expired = total,
                            "expired undelivered envelopes past retention"
                        );
                        self.metrics.envelopes_expired.inc_by(total);
                    }
                    for (recipient, count) in expired {
                        self.audit.record(
                            now_ms(),
                            hushwire_proto::audit::AuditEvent::EnvelopesExpired {
                                recipient: audit_log::device_ref(&recipient),
                                count: u32::try_from(count).unwrap_or(u32::MAX),
                            },
                        );
                    }
                }
                Err(e) => tracing::warn!("expiry sweep failed: {e}"),
            }
            self.expire_archive().await;
            if let Ok(depth) = self.store.queue_depth().await {
                self.metrics
                    .queue_depth
                    .set(i64::try_from(depth).unwrap_or(i64::MAX));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(self.config.expiry_interval_secs)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

async fn websocket<S: Store>(
    State(relay): State<Arc<Relay<S>>>,
    ConnectInfo(server::PeerAddr(peer)): ConnectInfo<server::PeerAddr>,
    place: Option<axum::Extension<Arc<pending::PendingPlace>>>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // Before anything else: a page on another site must not use a visitor's browser to
    // connect (cross-site WebSocket hijacking), nor spend this relay's connection budget.
    if web::check_origin(&headers, &relay.allowed_origins) == web::OriginCheck::Refused {
        relay.metrics.refused("origin");
        let origin = headers
            .get(axum::http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(not text)");
        let origin: String = origin.chars().take(100).collect();
        tracing::info!(reason = "origin", peer = %peer.ip(), origin = %origin.escape_debug(), "refused");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    if let Err(wait) = relay
        .address_limits
        .check(&peer.ip(), std::time::Instant::now())
    {
        relay.refused("address_rate", peer.ip());
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", (wait / 1000 + 1).to_string())],
        )
            .into_response();
    }
    let Ok(slot) = relay.connection_slots.clone().try_acquire_owned() else {
        relay.refused("max_connections", peer.ip());
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "connection limit reached\n",
        )
            .into_response();
    };
    upgrade
        // Small buffers: the default 128 KiB read buffer is zero-filled on every read and cost
        // 135 KiB of RSS per idle connection here.
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(hushwire_proto::relay::MAX_FRAME_LEN)
        .max_frame_size(hushwire_proto::relay::MAX_FRAME_LEN)
        .on_upgrade(move |socket| async move {
            // The pending place is held until the device authenticates.
            connection::serve(relay, socket, peer, place.map(|p| p.0)).await;
            drop(slot);
        })
}

async fn metrics<S: Store>(State(relay): State<Arc<Relay<S>>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        relay.metrics.render(),
    )
}

/// Listens for PostgreSQL `NOTIFY`s of stored envelopes (from any instance) and wakes the
/// recipient's connection if it is on this instance; and for changes of a device's standing
/// with the clinic ([`STANDING_CHANNEL`]), which make the connections concerned check again.
/// Reconnects after a failure.
pub async fn listen_for_mail<S: Store>(relay: Arc<Relay<S>>, pool: sqlx::PgPool) {
    let mut shutdown = relay.shutdown.clone();
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot LISTEN for mail: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mailbox = match storage::mailbox_channel(&pool).await {
            Ok(channel) => channel,
            Err(e) => {
                tracing::warn!("cannot name the mailbox channel: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener
            .listen_all([mailbox.as_str(), STANDING_CHANNEL])
            .await
        {
            tracing::warn!("cannot LISTEN for mail: {e}; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Lists published while no notification could arrive are not in the cache any more,
        // and every connection reads its mailbox for envelopes whose notification was missed.
        relay.device_lists.clear();
        relay.connected.read_all_mailboxes();
        loop {
            tokio::select! {
                n = listener.recv() => match n {
                    Ok(n) if n.channel() == STANDING_CHANNEL => {
                        if n.payload() == "revoked" {
                            relay.recheck_certified();
                        } else if let Some(identity) = n
                            .payload()
                            .strip_prefix("list:")
                            .and_then(|h| hex::decode(h).ok())
                            .and_then(|b| <[u8; 32]>::try_from(b).ok())
                        {
                            relay.recheck_identity(&identity);
                        } else if let Some(device) = parse_notification(n.payload()) {
                            relay.recheck_standing(&device);
                        }
                    }
                    Ok(n) => {
                        if let Some(committed) = storage::parse_delivery_notice(n.payload()) {
                            storage::CommitListener::committed(&*relay.connected, vec![committed]);
                        } else if let Some(device) = n.payload().strip_prefix("push:").and_then(parse_notification) {
                            relay.wake_pushes(&device);
                        } else if let Some(device) = parse_notification(n.payload()) {
                            relay.wake(&device);
                        }
                    }
                    Err(e) => {
                        tracing::warn!("mail LISTEN connection lost: {e}; reconnecting");
                        break;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// `hex(fingerprint):device_id` back to an address.
fn parse_notification(payload: &str) -> Option<DeviceAddress> {
    let (fingerprint, device) = payload.split_once(':')?;
    let fingerprint: [u8; 32] = hex::decode(fingerprint).ok()?.try_into().ok()?;
    Some(DeviceAddress {
        fingerprint,
        device_id: device.parse().ok()?,
    })
}

/// Archive envelopes one device may file per minute (bursts of as many): one per message
/// written, at a human pace.
pub(crate) const ARCHIVE_PER_MINUTE: u32 = 120;
