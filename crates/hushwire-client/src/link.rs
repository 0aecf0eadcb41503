//! One WebSocket connection to the relay: dialling (TLS with rustls for `wss://`), the challenge
//! handshake, and request/answer matching by request id (`docs/relay-protocol.md`).
//!
//! The link's reader hands unsolicited frames (deliveries, prekey counts) to its caller in the
//! order they arrive, and routes answers to whoever awaits them. Because the relay handles a
//! connection's frames in order, the answer to a request sent after authentication arrives only
//! after every envelope that was pending at authentication: [`Link::call`] with an empty `Ack`
//! is a barrier.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use hushwire::Account;
use hushwire::proto::codec::Codec as _;
use hushwire::proto::relay::{Credentials, Frame, FrameBody, RelayKey};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::error::{ClientError, Result};

/// Any byte stream a WebSocket can run over (plain TCP or TLS).
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

type Socket = WebSocketStream<Box<dyn Transport>>;

/// Largest frame accepted from the relay.
const MAX_INCOMING_FRAME: usize = hushwire::proto::relay::MAX_FRAME_LEN;

/// A relay URL, checked: `wss://` anywhere, `ws://` on loopback only.
#[derive(Clone, Debug)]
pub(crate) struct RelayUrl {
    url: String,
    host: String,
    port: u16,
    tls: bool,
}

impl RelayUrl {
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let bad = || ClientError::BadRelayUrl(text.chars().take(200).collect());
        let (tls, rest) = if let Some(rest) = text.strip_prefix("wss://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("ws://") {
            (false, rest)
        } else {
            return Err(bad());
        };
        let authority = rest.split('/').next().unwrap_or_default();
        // `user:pass@host`: credentials have no place in a URL that is shown and shared.
        if authority.contains('@') {
            return Err(bad());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h.to_owned(), p.parse::<u16>().map_err(|_| bad())?)
            }
            _ => (authority.to_owned(), if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(bad());
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = bare == "localhost"
            || bare
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !tls && !loopback {
            return Err(bad());
        }
        let mut url = text.to_owned();
        if !rest.contains('/') {
            url.push_str("/v1/websocket");
        }
        Ok(Self {
            url,
            host: bare.to_owned(),
            port,
            tls,
        })
    }

    /// The URL as given (with the default path added).
    pub(crate) fn as_str(&self) -> &str {
        &self.url
    }
}

/// Checks a relay URL by the rule the client dials by: `wss://host[:port][/path]` anywhere,
/// `ws://` only on loopback (`localhost`, `127.0.0.0/8`, `[::1]`), no `user:pass@`, a numeric
/// port. `Err(BadRelayUrl)` otherwise. Tools that put a URL into something others will dial
/// (a clinic link) check it with this first.
///
/// # Errors
/// [`ClientError::BadRelayUrl`] for a URL the client would refuse to dial.
pub fn check_relay_url(url: &str) -> Result<()> {
    hushwire::proto::clinic::check_relay_url(url)
        .map_err(|_| ClientError::BadRelayUrl(url.chars().take(200).collect()))?;
    RelayUrl::parse(url).map(|_| ())
}

/// TLS settings for dialling.
#[derive(Clone, Debug, Default)]
pub struct TlsRoots {
    /// Extra trusted CA certificates (a clinic's private CA), beside the public web roots.
    pub extra: Vec<CertificateDer<'static>>,
}

async fn dial(url: &RelayUrl, roots: &TlsRoots) -> Result<Socket> {
    let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| {
            ClientError::Connection(format!("cannot reach {}:{}: {e}", url.host, url.port))
        })?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Transport> = if url.tls {
        let mut store = rustls::RootCertStore::empty();
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in &roots.extra {
            store
                .add(cert.clone())
                .map_err(|e| ClientError::Connection(format!("bad CA certificate: {e}")))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Connection(format!("TLS setup: {e}")))?
        .with_root_certificates(store)
        .with_no_client_auth();
        let name = ServerName::try_from(url.host.clone())
            .map_err(|_| ClientError::BadRelayUrl(url.url.clone()))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| {
                ClientError::Connection(format!("TLS handshake with {}: {e}", url.host))
            })?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_INCOMING_FRAME))
        .max_frame_size(Some(MAX_INCOMING_FRAME));
    let (socket, _) =
        tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config))
            .await
            .map_err(|e| ClientError::Connection(format!("WebSocket upgrade: {e}")))?;
    Ok(socket)
}

/// The relay's close code when a newer connection of the same device replaced this one
/// (`relay-protocol.md` §1).
const CLOSE_CONNECTED_ELSEWHERE: u16 = 4001;

async fn read_frame<S>(stream: &mut S) -> Result<Option<Frame>>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await {
            Some(Ok(Message::Binary(bytes))) => {
                return Frame::from_bytes(&bytes)
                    .map(Some)
                    .map_err(ClientError::RelayProtocol);
            }
            Some(Ok(Message::Close(Some(frame))))
                if u16::from(frame.code) == CLOSE_CONNECTED_ELSEWHERE =>
            {
                return Err(ClientError::ConnectedElsewhere);
            }
            Some(Ok(Message::Close(_))) | None => return Ok(None),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ClientError::Connection(e.to_string())),
        }
    }
}

/// How to present this device to the relay.
pub(crate) enum Greeting<'a> {
    /// Register a new device, with an invite token where the relay needs one, and the agent
    /// certificate of a clinic's staff.
    Register(
        Option<&'a [u8]>,
        Option<&'a hushwire::proto::clinic::AgentCertificate>,
    ),
    /// Authenticate a registered device.
    Authenticate,
}

/// Which relay key the challenge must carry (`client.md` §5.16).
#[derive(Clone, Debug)]
pub(crate) enum Pin {
    /// The pinned key: any other is [`ClientError::RelayKeyChanged`], before anything is
    /// answered.
    Expect(RelayKey),
    /// No pin to check (a first registration, or a store from before pinning): whatever key
    /// the relay proves it holds; the caller pins it once the relay has said `Ok`.
    Any,
    /// Registering again to replace a pin: only the key with this fingerprint (64 hex digits,
    /// as the relay's operator reads it out), which the user accepted after checking it.
    Accept(String),
}

/// The sending half of an authenticated connection, shared by the tasks that make requests.
pub(crate) struct Link {
    sink: tokio::sync::Mutex<SplitSink<Socket, Message>>,
    pending: Mutex<HashMap<u32, oneshot::Sender<FrameBody>>>,
    next_id: AtomicU32,
    timeout: Duration,
}

/// The receiving half: yields unsolicited frames, routing answers on the way.
pub(crate) struct Incoming {
    stream: SplitStream<Socket>,
    link: Arc<Link>,
}

/// Dials the relay and reads the challenge it opens every connection with.
async fn dial_for_challenge(
    url: &RelayUrl,
    roots: &TlsRoots,
    timeout: Duration,
) -> Result<(Socket, hushwire::proto::relay::Challenge)> {
    let mut socket = tokio::time::timeout(timeout, dial(url, roots))
        .await
        .map_err(|_| ClientError::Timeout)??;
    match tokio::time::timeout(timeout, read_frame(&mut socket))
        .await
        .map_err(|_| ClientError::Timeout)??
    {
        Some(Frame {
            body: FrameBody::Challenge(c),
            ..
        }) => Ok((socket, c)),
        _ => Err(ClientError::Connection(
            "the relay sent no challenge".into(),
        )),
    }
}

/// Dials the relay and answers its challenge as `account`, if the challenge is signed by the
/// key it carries and that key is the one `pin` expects. Returns once the relay said `Ok`, with
/// the relay's key.
pub(crate) async fn connect(
    url: &RelayUrl,
    roots: &TlsRoots,
    account: &Account,
    greeting: Greeting<'_>,
    pin: Pin,
    timeout: Duration,
) -> Result<(Arc<Link>, Incoming, RelayKey)> {
    let (mut socket, challenge) = dial_for_challenge(url, roots, timeout).await?;
    // The key first: a relay showing another key gets no answer at all, so an impostor
    // forwarding another deployment's challenge learns nothing it could use there.
    if let Pin::Expect(pinned) = &pin
        && *pinned != challenge.relay_key
    {
        return Err(ClientError::RelayKeyChanged {
            pinned: pinned.fingerprint().to_string(),
            presented: challenge.relay_key.fingerprint().to_string(),
        });
    }
    if let Pin::Accept(accepted) = &pin {
        let presented = challenge.relay_key.fingerprint().to_string();
        if !presented.eq_ignore_ascii_case(accepted.trim()) {
            return Err(ClientError::Connection(format!(
                "the relay presents key {presented}, not the key {} you accepted: nothing was \
                 answered and the pin is unchanged",
                accepted.trim()
            )));
        }
    }
    if !challenge.verify_relay_signature() {
        return Err(ClientError::Connection(
            "the relay's challenge is not signed by the relay key it presents".into(),
        ));
    }
    let credentials = Credentials::answer(
        account.identity_key().clone(),
        account.device_id(),
        &challenge,
        account.identity(),
    );
    let body = match greeting {
        Greeting::Register(invite, certificate) => FrameBody::Register {
            credentials,
            invite: invite.map(<[u8]>::to_vec),
            certificate: certificate.map(|c| Box::new(c.clone())),
        },
        Greeting::Authenticate => FrameBody::Authenticate(credentials),
    };
    socket
        .send(Message::Binary(
            Frame {
                request_id: 1,
                body,
            }
            .to_bytes()
            .into(),
        ))
        .await
        .map_err(|e| ClientError::Connection(e.to_string()))?;
    let (sink, mut stream) = socket.split();
    let answer = tokio::time::timeout(timeout, read_frame(&mut stream))
        .await
        .map_err(|_| ClientError::Timeout)??;
    match answer.map(|f| f.body) {
        Some(FrameBody::Ok) => {}
        Some(FrameBody::Error { code, .. }) => return Err(ClientError::Relay(code)),
        // A clinic's administrator ordered this device wiped: the caller checks the order.
        Some(FrameBody::Wiped(command)) => return Err(ClientError::WipeOrdered(command)),
        _ => {
            return Err(ClientError::Connection(
                "the relay did not answer the greeting".into(),
            ));
        }
    }
    let link = Arc::new(Link {
        sink: tokio::sync::Mutex::new(sink),
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU32::new(2),
        timeout,
    });
    let incoming = Incoming {
        stream,
        link: link.clone(),
    };
    Ok((link, incoming, challenge.relay_key))
}

/// Takes the provisioning message filed under `slot` (`relay-protocol.md` §3.5), before any
/// login: the new device of a person has no identity at the relay yet. Returns the message (if
/// the relay held one) and the relay key the challenge proved, which the caller compares with
/// the one the message names once it has opened it.
pub(crate) async fn take_provisioning(
    url: &RelayUrl,
    roots: &TlsRoots,
    slot: [u8; 32],
    timeout: Duration,
) -> Result<(Option<Vec<u8>>, RelayKey)> {
    let (mut socket, challenge) = dial_for_challenge(url, roots, timeout).await?;
    if !challenge.verify_relay_signature() {
        return Err(ClientError::Connection(
            "the relay's challenge is not signed by the relay key it presents".into(),
        ));
    }
    socket
        .send(Message::Binary(
            Frame {
                request_id: 1,
                body: FrameBody::TakeProvisioning(slot),
            }
            .to_bytes()
            .into(),
        ))
        .await
        .map_err(|e| ClientError::Connection(e.to_string()))?;
    let answer = tokio::time::timeout(timeout, read_frame(&mut socket))
        .await
        .map_err(|_| ClientError::Timeout)??;
    let _ = socket.close(None).await;
    match answer.map(|f| f.body) {
        Some(FrameBody::Provisioning(sealed)) => Ok((sealed, challenge.relay_key)),
        Some(FrameBody::Error { code, .. }) => Err(ClientError::Relay(code)),
        _ => Err(ClientError::Connection(
            "the relay did not answer the linking request".into(),
        )),
    }
}

impl Link {
    fn id(&self) -> u32 {
        // Request id 0 is reserved for unsolicited frames; skip it on wrap.
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    async fn write(&self, frame: Frame) -> Result<()> {
        self.sink
            .lock()
            .await
            .send(Message::Binary(frame.to_bytes().into()))
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))
    }

    /// Sends a request and waits for its answer; a relay `Error` becomes `ClientError::Relay`.
    pub(crate) async fn call(&self, body: FrameBody) -> Result<FrameBody> {
        let id = self.id();
        let (tx, rx) = oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id, tx);
        }
        if let Err(e) = self
            .write(Frame {
                request_id: id,
                body,
            })
            .await
        {
            if let Ok(mut pending) = self.pending.lock() {
                pending.remove(&id);
            }
            return Err(e);
        }
        let answer = tokio::time::timeout(self.timeout, rx).await;
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&id);
        }
        match answer {
            Err(_) => Err(ClientError::Timeout),
            Ok(Err(_)) => Err(ClientError::Connection("the connection closed".into())),
            Ok(Ok(FrameBody::Error { code, .. })) => Err(ClientError::Relay(code)),
            Ok(Ok(body)) => Ok(body),
        }
    }

    /// Sends a request whose answer nobody waits for (acknowledgements).
    pub(crate) async fn post(&self, body: FrameBody) -> Result<()> {
        let id = self.id();
        self.write(Frame {
            request_id: id,
            body,
        })
        .await
    }

    /// Closes the connection politely.
    pub(crate) async fn close(&self) {
        let _ = self.sink.lock().await.close().await;
    }
}

impl Incoming {
    /// The next unsolicited frame body; `None` when the relay closed the connection. Answers to
    /// requests are routed to their callers on the way.
    pub(crate) async fn next(&mut self) -> Result<Option<FrameBody>> {
        loop {
            let Some(frame) = read_frame(&mut self.stream).await? else {
                return Ok(None);
            };
            if frame.request_id == 0 {
                return Ok(Some(frame.body));
            }
            let waiter = self
                .link
                .pending
                .lock()
                .ok()
                .and_then(|mut p| p.remove(&frame.request_id));
            if let Some(waiter) = waiter {
                let _ = waiter.send(frame.body);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls_are_checked() {
        assert!(RelayUrl::parse("ws://127.0.0.1:7700").is_ok());
        assert!(RelayUrl::parse("ws://localhost:7700/v1/websocket").is_ok());
        assert!(RelayUrl::parse("ws://[::1]:7700").is_ok());
        assert!(RelayUrl::parse("wss://relay.clinic.example").is_ok());
        assert!(
            RelayUrl::parse("ws://relay.clinic.example:7700").is_err(),
            "plain text off loopback"
        );
        assert!(RelayUrl::parse("http://127.0.0.1:7700").is_err());
        assert!(RelayUrl::parse("wss://user:pass@relay.example/").is_err());
        assert!(RelayUrl::parse("wss://user@relay.example/").is_err());
        assert!(check_relay_url("ws://10.0.0.5:7700/v1/websocket").is_err());
        assert!(check_relay_url("wss://relay.example/v1/websocket").is_ok());
        assert!(check_relay_url("wss://relay .example").is_err());
        assert!(RelayUrl::parse("ws://127.0.0.1:notaport").is_err());
        assert_eq!(
            RelayUrl::parse("ws://127.0.0.1:7700")
                .map(|u| u.as_str().to_owned())
                .ok()
                .as_deref(),
            Some("ws://127.0.0.1:7700/v1/websocket")
        );
    }
}
