//! Starting and stopping a relay instance: used by `main` and by anything that embeds the relay
//! (tests, examples).

use std::net::SocketAddr;

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

/// A running relay instance.
pub struct Running {
    /// Where it listens.
    pub address: SocketAddr,
    /// `wss` with TLS, else `ws`.
    pub scheme: &'static str,
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
    let (stop, shutdown) = watch::channel(false);
    let identity = AuditIdentity::load_or_create(&config.data_dir)?;
    let (audit, audit_writer) = AuditLog::start(store.clone(), identity, shutdown.clone())
        .await
        .map_err(|e| format!("cannot resume the audit chain: {e}"))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let relay = Relay::new(store, config, audit, shutdown.clone());
    tokio::spawn(relay.clone().run_expiry());
    if let Some(pool) = listen_pool {
        tokio::spawn(listen_for_mail(relay.clone(), pool));
    }
    let router = relay.router();
    let mut graceful = shutdown.clone();
    let until_stopped = async move {
        let _ = graceful.wait_for(|stop| *stop).await;
    };
    let (scheme, server) = match tls {
        Some(config) => {
            let listener = TlsListener::new(listener, config).map_err(|e| e.to_string())?;
            let app = router.into_make_service_with_connect_info::<PeerAddr>();
            let serve = axum::serve(listener, app).with_graceful_shutdown(until_stopped);
            (
                "wss",
                tokio::spawn(async move { serve.await.map_err(|e| format!("server failed: {e}")) }),
            )
        }
        None => {
            let app = router.into_make_service_with_connect_info::<PeerAddr>();
            let serve = axum::serve(listener, app).with_graceful_shutdown(until_stopped);
            (
                "ws",
                tokio::spawn(async move { serve.await.map_err(|e| format!("server failed: {e}")) }),
            )
        }
    };
    Ok(Running {
        address,
        scheme,
        stop,
        server,
        audit_writer,
    })
}
