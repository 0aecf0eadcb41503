//! Starting and stopping a relay instance: used by `main` and by anything that embeds the relay
//! (tests, examples).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit_log::{AuditIdentity, AuditLog};
use crate::config::Config;
use crate::storage::Store;
use crate::tls::TlsListener;
use crate::{Relay, listen_for_mail};

/// The peer's address, whatever the transport.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// Turns Nagle's algorithm off on an accepted connection. A relay writes small frames (a
/// receipt, a delivery) that must leave at once: with Nagle on, a frame written while the
/// previous one is unacknowledged waits for the peer's delayed ACK, up to 40 ms on Linux.
pub(crate) fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {e}");
    }
}

/// How long shutdown waits for HTTP connections that have not upgraded to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// File descriptors kept free beyond connections: the database, logs, listeners, TLS files.
const SPARE_FILES: u64 = 256;

/// Raises the open-file soft limit to the hard limit, and lowers `max_connections` (with a
/// warning) if even then the limit cannot hold every connection and every pending one plus
/// spare descriptors: running out of descriptors fails accepts and `/healthz` alike, and
/// used to do so silently (`docs/relay-protocol.md` §6).
fn fit_open_file_limit(config: &mut Config) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!("cannot read or raise the open-file limit: {e}");
            return;
        }
    };
    let wanted = (config.max_connections as u64)
        .saturating_add(config.max_pending as u64)
        .saturating_add(SPARE_FILES);
    if limit < wanted {
        let fits = usize::try_from(limit.saturating_sub(config.max_pending as u64 + SPARE_FILES))
            .unwrap_or(0)
            .max(1);
        tracing::warn!(
            open_file_limit = limit,
            max_connections = config.max_connections,
            max_pending = config.max_pending,
            "the open-file limit cannot hold every connection: lowering max_connections to {fits}"
        );
        config.max_connections = fits;
    } else {
        tracing::info!(open_file_limit = limit, "open-file limit");
    }
}

/// Accepts connections until shutdown: each address may hold only `max_pending_per_address`
/// connections that have not authenticated (more are closed at once, counted and logged), and
/// each connection must send its request headers within `header_read_timeout_secs`.
async fn serve<L, S>(
    mut listener: L,
    relay: Arc<Relay<S>>,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Store,
{
    // Each connection task holds a sender; when all are dropped, every connection is done.
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let header_timeout = Duration::from_secs(relay.config.header_read_timeout_secs);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = async { drop(shutdown.wait_for(|stop| *stop).await) } => break,
        };
        let place = match relay.pending.admit(peer.ip()) {
            Ok(place) => place,
            Err(refusal) => {
                relay.refused(refusal.reason(), peer.ip());
                drop(io);
                continue;
            }
        };
        let service = {
            let router = router.clone();
            let place = place.clone();
            hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(PeerAddr(peer)));
                request.extensions_mut().insert(place.clone());
                let mut router = router.clone();
                tower_service::Service::call(&mut router, request)
            })
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout);
        let connection = builder
            .serve_connection(hyper_util::rt::TokioIo::new(io), service)
            .with_upgrades();
        let alive = alive.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            // Ends at the upgrade (the WebSocket then holds `place` until it authenticates),
            // at the header-read timeout, or when the peer closes.
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = async { drop(stop.wait_for(|stop| *stop).await) } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(place);
            drop(alive);
        });
    }
    drop(alive);
    if tokio::time::timeout(SHUTDOWN_GRACE, all_done.recv())
        .await
        .is_err()
    {
        tracing::warn!("some HTTP connections did not finish within the shutdown grace period");
    }
    Ok(())
}

/// A running relay instance.
pub struct Running {
    /// Where it listens.
    pub address: SocketAddr,
    /// `wss` with TLS, else `ws`.
    pub scheme: &'static str,
    /// Where `/metrics` is served when it has an address of its own (`--metrics-listen`).
    pub metrics_address: Option<SocketAddr>,
    /// The configuration in force: as given, except `max_connections` lowered to what the
    /// open-file limit holds.
    pub config: Config,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), String>>,
    audit_writer: JoinHandle<()>,
}

impl Running {
    /// The WebSocket URL clients connect to.
    pub fn url(&self) -> String {
        format!("{}://{}/v1/websocket", self.scheme, self.address)
    }

    /// Graceful stop: no new connections, open ones closed, writes in progress committed, the
    /// audit chain flushed and checkpointed.
    pub async fn stop(self) -> Result<(), String> {
        let _ = self.stop.send(true);
        let served = self
            .server
            .await
            .map_err(|e| format!("server task failed: {e}"))?;
        let _ = self.audit_writer.await;
        served
    }
}

/// Binds, resumes the audit chain, and serves until [`Running::stop`].
pub async fn start<S: Store + Clone>(
    store: S,
    config: Config,
    listen_pool: Option<sqlx::PgPool>,
) -> Result<Running, String> {
    config.check()?;
    for warning in &config.warnings {
        tracing::warn!("setting: {warning}");
    }
    if config.registration == crate::storage::RegistrationPolicy::Open
        && !config.listen.ip().is_loopback()
    {
        tracing::warn!(
            listen = %config.listen,
            "registration is open on a non-loopback address: anyone who reaches it can create \
             devices; a clinic deployment should use --registration invite"
        );
    }
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
        _ => None,
    };
    let key_path = config.relay_key_path();
    // Several instances on one PostgreSQL database must present one key: an instance never
    // makes its own there (relay_key.rs). Alone on SQLite, the first start creates it.
    let relay_key = if config.database_url.is_some() {
        crate::relay_key::load(&key_path)?
    } else {
        let (key, created) = crate::relay_key::load_or_create(&key_path)?;
        if created {
            tracing::info!(path = %key_path.display(), "created the relay key");
        }
        key
    };
    tracing::info!(
        fingerprint = %crate::relay_key::public(&relay_key).fingerprint(),
        "relay key (clients pin it; every instance of this deployment must show the same)"
    );
    match config.clinic()? {
        Some(clinic) => tracing::info!(
            clinic = clinic.name(),
            org_key = %clinic.org().fingerprint(),
            "serving a clinic: agent certificates and admin frames are checked against its \
             organization key"
        ),
        None => tracing::info!(
            "no clinic configured (--clinic-link): certificates and admin frames are refused"
        ),
    }
    let (stop, shutdown) = watch::channel(false);
    let identity = AuditIdentity::load_or_create(&config.data_dir)?;
    let (audit, audit_writer) = AuditLog::start(store.clone(), identity, shutdown.clone())
        .await
        .map_err(|e| format!("cannot resume the audit chain: {e}"))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let mut config = config;
    fit_open_file_limit(&mut config);
    let relay = Relay::new(store, config, relay_key, audit, shutdown.clone());
    tokio::spawn(relay.clone().run_expiry());
    if let Some(pool) = listen_pool {
        tokio::spawn(listen_for_mail(relay.clone(), pool));
    }
    let router = relay.router();
    let metrics_address = match relay.config.metrics_listen {
        Some(at) => {
            let listener = TcpListener::bind(at)
                .await
                .map_err(|e| format!("cannot listen for metrics on {at}: {e}"))?;
            let bound = listener.local_addr().map_err(|e| e.to_string())?;
            let mut stop = shutdown.clone();
            let serve =
                axum::serve(listener, relay.metrics_router()).with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                });
            tokio::spawn(async move {
                if let Err(e) = serve.await {
                    tracing::error!("metrics server failed: {e}");
                }
            });
            Some(bound)
        }
        None => None,
    };
    let (scheme, server) = match tls {
        Some(config) => {
            let listener = TlsListener::new(listener, config).map_err(|e| e.to_string())?;
            (
                "wss",
                tokio::spawn(serve(listener, relay.clone(), router, shutdown.clone())),
            )
        }
        None => (
            "ws",
            tokio::spawn(serve(
                axum::serve::ListenerExt::tap_io(listener, no_delay),
                relay.clone(),
                router,
                shutdown.clone(),
            )),
        ),
    };
    Ok(Running {
        address,
        metrics_address,
        config: relay.config.clone(),
        scheme,
        stop,
        server,
        audit_writer,
    })
}
